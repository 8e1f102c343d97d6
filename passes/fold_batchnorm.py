"""fold-batchnorm: fold an inference BatchNorm into the convolution before it.

TVM's ONNX importer keeps ``BatchNormalization`` as ``R.nn.batch_norm`` (it does not
decompose it), and TVM's FuseOps does not fuse a conv2d with the batch_norm kernel,
so every Conv+BN pair costs two kernels and a second pass over the activation.

Before::

    c = R.nn.conv2d(x, W)                       # optionally: c = R.add(c, b)
    t = R.nn.batch_norm(c, gamma, beta, mean, var, axis=1, epsilon=eps)
    y = t[0]

After (W, b, gamma, beta, mean, var constants; folded at compile time)::

    y = R.add(R.nn.conv2d(x, W_f), b_f)

with ``s = gamma / sqrt(var + eps)``, ``W_f = W * s`` (per output channel) and
``b_f = (b - mean) * s + beta`` (``b = 0`` without a bias). Works for conv1d and
conv2d in NC... layout with an O... kernel layout, any ``groups``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from edgec.passes._rules import Matches, Rule, apply_rules, const, const_value, dtype_of, report
from edgec.passes.registry import register_pass
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, wildcard

_CONVS = ("relax.nn.conv1d", "relax.nn.conv2d")

_x, _w, _b_value = wildcard(), is_const(), is_const()
# ONNX Conv's bias imports as a constant, or as reshape(constant) when not pre-folded
_b = _b_value | is_op("relax.reshape")(_b_value, wildcard())
_gamma, _beta, _mean, _var = is_const(), is_const(), is_const(), is_const()
_conv = is_op(_CONVS[0])(_x, _w) | is_op(_CONVS[1])(_x, _w)
_conv_bias = is_op("relax.add")(_conv, _b)


_bn_plain = is_op("relax.nn.batch_norm")(_conv, _gamma, _beta, _mean, _var)
_bn_bias = is_op("relax.nn.batch_norm")(_conv_bias, _gamma, _beta, _mean, _var)


def _fold(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    bn = m[_bn_bias] if _bn_bias in m else m[_bn_plain]
    conv = m[_conv]
    a = bn.attrs
    if bool(a.training):
        return "batch_norm is in training mode"
    if int(a.axis) != 1:
        return f"batch_norm axis {int(a.axis)} is not the channel axis 1"
    if not str(conv.attrs.data_layout).startswith("NC") or not str(
        conv.attrs.kernel_layout
    ).startswith("O"):
        return f"conv layout {conv.attrs.data_layout}/{conv.attrs.kernel_layout} is not NC../O.."
    w = const_value(m[_w])
    gamma, beta = const_value(m[_gamma]), const_value(m[_beta])
    mean, var = const_value(m[_mean]), const_value(m[_var])
    assert w is not None and gamma is not None and beta is not None
    assert mean is not None and var is not None
    channels = w.shape[0]
    bias = np.zeros(channels) if _b_value not in m else const_value(m[_b_value])
    if bias is None or bias.size != channels:
        return f"bias of {None if bias is None else bias.size} values for {channels} channels"
    bias = bias.reshape(channels)
    if not bool(a.scale):
        gamma = np.ones(channels)
    if not bool(a.center):
        beta = np.zeros(channels)
    # fold in float64, cast back once: avoids compounding float32 rounding
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(a.epsilon))
    w_f = w.astype(np.float64) * s.reshape((channels,) + (1,) * (w.ndim - 1))
    b_f = (bias - mean) * s + beta
    rank = len(expr.ty.shape.values)
    new_conv = relax.Call(conv.op, [m[_x], const(w_f, dtype_of(m[_w]))], conv.attrs)
    return relax.op.add(new_conv, const(b_f.reshape((1, channels) + (1,) * (rank - 2)),
                                        dtype_of(expr)))


RULES = [
    # bn(conv(x, W) + b) -> conv(x, W*s) + ((b - mean)*s + beta)
    Rule("bn(conv(x, W) + b) -> conv(x, W_f) + b_f", is_tuple_get_item(_bn_bias, 0), _fold),
    # bn(conv(x, W)) -> conv(x, W*s) + (beta - mean*s)
    Rule("bn(conv(x, W)) -> conv(x, W_f) + b_f", is_tuple_get_item(_bn_plain, 0), _fold),
]


@register_pass("fold-batchnorm", "optimize", origin="built-in", default=True)
def fold_batchnorm(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Fold inference BatchNorm into the conv1d/conv2d before it (weights and bias)."""
    out, stats = apply_rules(mod, RULES)
    report(ctx, "fold-batchnorm", stats)
    return out
