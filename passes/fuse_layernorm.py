"""fuse-layernorm: rebuild ``R.nn.layer_norm`` from its decomposed form.

Older exports (ONNX opset < 17, TF/Keras converters) spell LayerNorm as seven or
nine elementwise/reduction ops; TVM then runs it as several kernels with two extra
passes over the tensor. One ``R.nn.layer_norm`` is one kernel.

Before (``axes`` trailing, ``keepdims=True``)::

    m = R.mean(x, axes)
    d = R.subtract(x, m)
    v = R.mean(R.multiply(d, d), axes)          # or R.power(d, 2)
    n = R.divide(d, R.sqrt(R.add(v, eps)))
    y = R.add(R.multiply(n, gamma), beta)       # optional affine part

After::

    y = R.nn.layer_norm(x, gamma, beta, axes, epsilon=eps)   # gamma=1, beta=0 if absent

Math: ``layer_norm(x) = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta`` with
``Var[x] = E[(x - E[x])^2]``, exactly the decomposed graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from edgec.passes._rules import (
    Matches,
    Rule,
    apply_rules,
    const,
    const_value,
    dtype_of,
    report,
    shape_of,
)
from edgec.passes.registry import register_pass
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

_x, _eps, _two, _gamma, _beta = wildcard(), is_const(), is_const(), is_const(), is_const()
_mean = is_op("relax.mean")(_x)
_diff = is_op("relax.subtract")(_x, _mean)
_square = is_op("relax.multiply")(_diff, _diff) | is_op("relax.power")(_diff, _two)
_var = is_op("relax.mean")(_square)
_norm = is_op("relax.divide")(_diff, is_op("relax.sqrt")(is_op("relax.add")(_var, _eps)))
_scaled = is_op("relax.multiply")(_norm, _gamma) | is_op("relax.multiply")(_gamma, _norm)
_affine = is_op("relax.add")(_scaled, _beta) | is_op("relax.add")(_beta, _scaled)


def _axes(call: relax.Call, rank: int) -> tuple[int, ...] | None:
    if call.attrs.axis is None or not bool(call.attrs.keepdims):
        return None
    return tuple(sorted(int(a) % rank for a in call.attrs.axis))


def _layer_norm(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    x = m[_x]
    shape = shape_of(x)
    if shape is None:
        return "input shape is not static"
    rank = len(shape)
    axes = _axes(m[_mean], rank)
    if axes is None or axes != _axes(m[_var], rank):
        return "the two means do not reduce the same axes with keepdims"
    if axes != tuple(range(rank - len(axes), rank)):
        return f"axes {axes} are not the trailing axes"
    if _two in m and not np.allclose(const_value(m[_two]), 2.0):
        return "power exponent is not 2"
    eps = const_value(m[_eps])
    if eps is None or eps.size != 1:
        return "epsilon is not a scalar constant"
    norm_shape = tuple(shape[a] for a in axes)
    dtype = dtype_of(x)
    gamma = np.ones(norm_shape) if _gamma not in m else const_value(m[_gamma])
    beta = np.zeros(norm_shape) if _beta not in m else const_value(m[_beta])
    for label, v in (("gamma", gamma), ("beta", beta)):
        if v is None or v.size != int(np.prod(norm_shape)):
            return f"{label} does not have one value per normalized element"
    return relax.op.nn.layer_norm(
        x,
        const(np.reshape(gamma, norm_shape), dtype),
        const(np.reshape(beta, norm_shape), dtype),
        axes=list(axes),
        epsilon=float(eps.reshape(())),
    )


RULES = [
    # (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta -> layer_norm(x, gamma, beta)
    Rule("decomposed layernorm with affine -> layer_norm", _affine, _layer_norm),
    # (x - E[x]) / sqrt(Var[x] + eps) -> layer_norm(x, 1, 0)
    Rule("decomposed layernorm -> layer_norm", _norm, _layer_norm),
]


@register_pass("fuse-layernorm", "optimize", origin="built-in", default=True)
def fuse_layernorm(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Rebuild R.nn.layer_norm from mean/subtract/variance/sqrt/divide (+ affine)."""
    out, stats = apply_rules(mod, RULES)
    report(ctx, "fuse-layernorm", stats)
    return out
