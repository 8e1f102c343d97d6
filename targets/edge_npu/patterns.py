"""Offload patterns for edge-npu, built from ``supported_ops.json``.

Each pattern is a QDQ layer, ``quantize(op(dequantize(a), ...))``, registered as
``("edge_npu.<layer>", pattern, annotations, check)`` for Relax's ``FuseOpsByPattern``:

    edge_npu.conv      q(clamp?(add?(conv2d(dq(a), dq(W)), reshape?(dq(b)))))
                       (or conv2d_transpose with kernel == stride)
    edge_npu.gemm      q(clamp?(add?(matmul(dq(a), dq(W)), dq(b))))
    edge_npu.binary    q(add|multiply(dq(a), dq(b)))
    edge_npu.maxpool   q(max_pool2d(chain*(dq(a))))
    edge_npu.gap       q(mean(dq(a)))
    edge_npu.reshape   q(reshape(dq(a)))
    edge_npu.resize    q(resize2d(dq(a)))            nearest, integer factor
    edge_npu.concat    q(concat((dq(a), dq(b), ...)))  2 to 8 inputs, along channels
    edge_npu.lut       q(chain+(dq(a)))   chain: element-wise ops of the table's "lut" row

The check runs ``layers.describe`` and ``lower.fits`` on the match, so a pattern that
matches the graph but not the machine (a layer too wide for an activation bank on a
small config, a per-channel activation scale) is refused; the reason is kept in
``Rejections`` for the placement report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import NpuConfig
from .layers import describe
from .lower import fits, signature
from .tvm_compat import var_name

TABLE: dict[str, Any] = json.loads((Path(__file__).parent / "supported_ops.json").read_text())
PREFIX = "edge_npu"
MAX_CHAIN = 4  # element-wise ops in one LUT chain (hard-swish written out is 3)
MAX_CONCAT = 8  # inputs of one concat layer


class Rejections:
    """Reasons a match was refused, keyed by the names of the Relax vars it covered."""

    def __init__(self) -> None:
        self.by_var: dict[str, str] = {}

    def add(self, names: list[str], reason: str) -> None:
        for n in names:
            self.by_var.setdefault(n, reason)


def _dq(x: Any) -> Any:
    from tvm.relax.dpl import is_const, is_op

    return is_op("relax.dequantize")(x, is_const(), is_const())


def _q(x: Any) -> Any:
    from tvm.relax.dpl import is_const, is_op

    return is_op("relax.quantize")(x, is_const(), is_const())


def _clamped(x: Any) -> Any:
    from tvm.relax.dpl import is_op, wildcard

    return is_op("relax.nn.relu")(x) | is_op("relax.clip")(x, wildcard(), wildcard()) | x


def _element_wise(x: Any) -> Any:
    """One op of a LUT chain applied to ``x`` (scalar constants on either side)."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    const = is_const() | _dq(is_const())
    alts = []
    for name in TABLE["layers"]["lut"]["ops"]:
        if name in ("relax.add", "relax.subtract", "relax.multiply", "relax.divide",
                    "relax.maximum", "relax.minimum"):
            alts += [is_op(name)(x, const), is_op(name)(const, x)]
        elif name == "relax.clip":
            alts.append(is_op(name)(x, wildcard(), wildcard()))
        else:
            alts.append(is_op(name)(x))
    pat = alts[0]
    for alt in alts[1:]:
        pat = pat | alt
    return pat


def _alternatives(pats: list[Any]) -> Any:
    pat = pats[0]
    for alt in pats[1:]:
        pat = pat | alt
    return pat


def _chains(x: Any, min_len: int) -> Any:
    """Element-wise chains of ``min_len`` .. MAX_CHAIN ops on ``x``."""
    chains, cur = [], x
    for n in range(1, MAX_CHAIN + 1):
        cur = _element_wise(cur)
        if n >= min_len:
            chains.append(cur)
    pat = x if min_len == 0 else chains.pop(0)
    for c in chains:
        pat = pat | c
    return pat


def layer_patterns() -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, pattern, annotations), highest priority first."""
    from tvm.relax.dpl import is_const, is_op, is_tuple, wildcard

    a, b = wildcard(), wildcard()
    conv = _alternatives([is_op(op)(_dq(a), _dq(is_const()))
                          for op in ("relax.nn.conv2d", "relax.nn.conv2d_transpose")])
    bias = is_op("relax.reshape")(_dq(is_const()), wildcard()) | _dq(is_const())
    conv_root = _q(_clamped(is_op("relax.add")(conv, bias) | conv))
    mm = is_op("relax.matmul")(_dq(a), _dq(is_const()))
    gemm_root = _q(_clamped(is_op("relax.add")(mm, _dq(is_const())) | mm))
    binary = _q(is_op("relax.add")(_dq(a), _dq(b)) | is_op("relax.multiply")(_dq(a), _dq(b)))
    maxpool = _q(is_op("relax.nn.max_pool2d")(_chains(_dq(a), 0)))
    gap = _q(is_op("relax.mean")(_dq(a)))
    reshape = _q(is_op("relax.reshape")(_dq(a), wildcard()))
    resize = _q(is_op("relax.image.resize2d")(_dq(a), wildcard()))
    concat = _q(_alternatives([is_op("relax.concat")(is_tuple([_dq(wildcard())
                                                                for _ in range(n)]))
                               for n in range(2, MAX_CONCAT + 1)]))
    lut = _q(_chains(_dq(a), 1))
    return [(f"{PREFIX}.conv", conv_root, {"root": conv_root}),
            (f"{PREFIX}.gemm", gemm_root, {"root": gemm_root}),
            (f"{PREFIX}.binary", binary, {"root": binary}),
            (f"{PREFIX}.maxpool", maxpool, {"root": maxpool}),
            (f"{PREFIX}.gap", gap, {"root": gap}),
            (f"{PREFIX}.reshape", reshape, {"root": reshape}),
            (f"{PREFIX}.resize", resize, {"root": resize}),
            (f"{PREFIX}.concat", concat, {"root": concat}),
            (f"{PREFIX}.lut", lut, {"root": lut})]


def make_check(cfg: NpuConfig, rejections: Rejections,
               deny: dict[Any, str] | None = None) -> Callable[[Any], bool]:
    """The FusionPattern check: the match must describe a layer that fits ``cfg`` (and is
    not in ``deny``: layer signature -> reason, layers a previous lowering could not place)."""

    def check(ctx: Any) -> bool:
        bindings = ctx.matched_bindings
        names = [var_name(v) for v in bindings.keys()]  # noqa: SIM118 (a TVM Map)
        # every value inside the match must be used only inside it (the NPU keeps no
        # float intermediates to hand back)
        inside = set(bindings.keys())
        for v in inside:
            if v.same_as(_root_var(ctx)):
                continue
            if any(u not in inside for u in ctx.var_usages.get(v, [])):
                rejections.add(names, "an intermediate float value is also used by a CPU op")
                return False
        got = describe(ctx.matched_expr, lambda v: bindings.get(v))
        if isinstance(got, str):
            rejections.add(names, got)
            return False
        reason = (deny or {}).get(signature(got[0])) or fits(cfg, got[0])
        if reason:
            rejections.add(names, reason)
            return False
        return True

    return check


def _root_var(ctx: Any) -> Any:
    for var, val in ctx.matched_bindings.items():
        if val.same_as(ctx.matched_expr):
            return var
    return None


def fusion_patterns(cfg: NpuConfig, rejections: Rejections,
                    deny: dict[Any, str] | None = None) -> list[Any]:
    from tvm.relax.transform import FusionPattern

    check = make_check(cfg, rejections, deny)
    return [FusionPattern(name, pat, ann, check) for name, pat, ann in layer_patterns()]
