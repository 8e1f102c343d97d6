"""cancel-transpose: remove transpose/reshape pairs that undo or repeat each other.

Layout conversions in exported graphs (NCHW<->NHWC around an op, head split/merge
in attention) leave back-to-back ``permute_dims``/``reshape`` chains; each one is a
copy kernel on CPU.

Rules (``p2 . p1`` is the composed permutation, ``c[i] = p1[p2[i]]``)::

    permute_dims(permute_dims(x, p1), p2)  ->  x                      if p2 . p1 = id
    permute_dims(permute_dims(x, p1), p2)  ->  permute_dims(x, p2 . p1)
    permute_dims(x, id)                    ->  x
    reshape(reshape(x, s1), s2)            ->  reshape(x, s2)          (x if x.shape == s2)
    reshape(x, x.shape)                    ->  x
"""

from __future__ import annotations

from typing import Any

import tvm
from edgec.passes._rules import Matches, Rule, apply_rules, report, shape_of
from edgec.passes.registry import register_pass
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

_x = wildcard()
_inner_t = is_op("relax.permute_dims")(_x)
_outer_t = is_op("relax.permute_dims")(_inner_t)
_any_t = is_op("relax.permute_dims")(_x)
_inner_r = is_op("relax.reshape")(_x, wildcard())
_outer_r = is_op("relax.reshape")(_inner_r, wildcard())
_any_r = is_op("relax.reshape")(_x, wildcard())


def _perm(call: relax.Call, rank: int) -> list[int]:
    axes = call.attrs.axes
    # axes=None means "reverse the dimensions", as in numpy.transpose
    return list(range(rank))[::-1] if axes is None else [int(a) % rank for a in axes]


def _rank(expr: relax.Expr) -> int:
    return int(expr.ty.ndim)


def _compose_transposes(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    rank = _rank(m[_x])
    if rank < 0:
        return "rank unknown"
    p1, p2 = _perm(m[_inner_t], rank), _perm(m[_outer_t], rank)
    composed = [p1[i] for i in p2]
    if composed == list(range(rank)):
        return m[_x]
    return relax.op.permute_dims(m[_x], composed)


def _drop_identity_transpose(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    # ``expr`` can be the variable bound to the call (rewrite_call revisits bindings);
    # the call itself, with its axes, is the root pattern's match.
    call, rank = m[_any_t], _rank(m[_x])
    if not isinstance(call, relax.Call):
        return "the permute_dims call is not visible here"
    if rank < 0 or _perm(call, rank) != list(range(rank)):
        return "not the identity permutation"
    return m[_x]


def _merge_reshapes(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    out_shape = shape_of(expr)
    if out_shape is None:
        return "output shape is not static"
    if shape_of(m[_x]) == out_shape:
        return m[_x]
    return relax.op.reshape(m[_x], out_shape)


def _drop_identity_reshape(expr: relax.Expr, m: Matches) -> relax.Expr | str:
    shape = shape_of(expr)
    if shape is None or shape != shape_of(m[_x]):
        return "shape changes"
    return m[_x]


RULES = [
    # permute(permute(x, p1), p2) -> x or permute(x, p2 . p1)
    Rule("permute(permute(x)) -> composed permute", _outer_t, _compose_transposes),
    # permute(x, id) -> x
    Rule("permute(x, id) -> x", _any_t, _drop_identity_transpose),
    # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    Rule("reshape(reshape(x)) -> reshape(x)", _outer_r, _merge_reshapes),
    # reshape(x, x.shape) -> x
    Rule("reshape(x, x.shape) -> x", _any_r, _drop_identity_reshape),
]


@register_pass("cancel-transpose", "optimize", origin="built-in", default=True)
def cancel_transpose(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Cancel or merge back-to-back permute_dims and reshape ops; drop identity ones."""
    out, stats = apply_rules(mod, RULES)
    report(ctx, "cancel-transpose", stats)
    return out
