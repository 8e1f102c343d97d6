"""fuse-bias-act: group conv/matmul + bias + activation into named composite functions.

For targets that offload whole groups (edge-npu), a ``conv2d + add + relu`` must be
one unit with a name the target can look up. This pass wraps each match in a Relax
function with ``Composite = "edgec.<op>_bias_<act>"`` (``relax.transform.FuseOpsByPattern``).

Before::

    c = R.nn.conv2d(x, W); b = R.add(c, B); y = R.nn.relu(b)

After::

    @R.function(private=True)  # Composite: "edgec.conv2d_bias_relu", Primitive
    def fused(x, W, B): ... the same three ops ...
    y = fused(x, W, B)

Activations: relu, relu6 (clip 0..6), clip, hardsigmoid (``clip(a*x + b, 0, 1)``),
hardswish (``x * hardsigmoid(x)``), gelu (erf and tanh forms), sigmoid, silu
(``R.nn.silu`` or ``x * sigmoid(x)``). Longest pattern first.

Off by default: on CPU, TVM's own FuseOps already puts conv/matmul + bias + any of
these activations in one kernel once fold-batchnorm has run, and a composite
function is opaque to FuseOps (it stops residual adds fusing in). Measured on PP-OCR
cls: 69 kernels with fold-batchnorm alone, 103 with this pass added.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import tvm
from edgec.passes.registry import register_pass
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard

_BASES = {"conv1d": "relax.nn.conv1d", "conv2d": "relax.nn.conv2d", "matmul": "relax.matmul"}


def _activations(y: DFPattern) -> dict[str, DFPattern]:
    """Each activation applied to ``y``, by name (a pattern per spelling)."""
    c = is_const

    def clip(v: DFPattern) -> DFPattern:  # R.clip(x, min, max): bounds are PrimValue args
        return is_op("relax.clip")(v, wildcard(), wildcard())

    hsig = clip(
        is_op("relax.add")(is_op("relax.multiply")(y, c()) | is_op("relax.multiply")(c(), y), c())
    )
    sig = is_op("relax.sigmoid")(y)
    return {
        "hardswish": is_op("relax.multiply")(y, hsig) | is_op("relax.multiply")(hsig, y),
        "silu": is_op("relax.nn.silu")(y) | is_op("relax.multiply")(y, sig),
        "hardsigmoid": hsig,
        "relu": is_op("relax.nn.relu")(y),
        "clip": clip(y),  # relu6 is clip(x, 0, 6)
        "gelu": is_op("relax.nn.gelu")(y) | is_op("relax.nn.gelu_tanh")(y),
        "sigmoid": sig,
    }


def patterns() -> list[tuple[str, DFPattern]]:
    """``(composite name, pattern)`` pairs, longest first, as FuseOpsByPattern takes them."""
    out: list[tuple[str, DFPattern]] = []
    for base, op in _BASES.items():
        core = is_op(op)(wildcard(), wildcard())
        # TVM's ONNX importer writes a conv bias as reshape(const, [1, C, 1, 1]).
        bias = is_const() | is_op("relax.reshape")(is_const(), wildcard())
        biased = is_op("relax.add")(core, bias)
        for act, pat in _activations(biased).items():
            out.append((f"edgec.{base}_bias_{act}", pat))
        for act, pat in _activations(core).items():
            out.append((f"edgec.{base}_{act}", pat))
        out.append((f"edgec.{base}_bias", biased))
    return out


@register_pass("fuse-bias-act", "partition", origin="built-in", default=False)
def fuse_bias_act(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Group conv/matmul + bias + activation into named composite functions (offload)."""
    out = relax.transform.FuseOpsByPattern(
        patterns(), bind_constants=False, annotate_codegen=False
    )(mod)
    if ctx is not None:
        counts = Counter(
            str(f.attrs["Composite"])
            for f in out.functions.values()
            if isinstance(f, relax.Function) and f.attrs and "Composite" in f.attrs
        )
        ctx.report["fuse-bias-act"] = {"fired": dict(counts), "skipped": {}}
    return out
