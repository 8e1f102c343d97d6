"""Find scaled-dot-product attention blocks in a Relax module, as exporters write them.

What is matched (every piece after ``matmul(q, kT)`` is optional)::

    s = R.matmul(q, kT)                 # q: (..., N, d), kT: (..., d, N)
    s = R.multiply(s, c) | R.divide(s, c)        # scale after QK^T (scalar constant)
    s = R.add(s, bias) | R.where(keep, s, fill)  # additive or Where mask
    p = R.nn.softmax(s, axis=-1)
    p = R.where(R.isnan(p), 0, p)                # torch's NaN guard for all-masked rows
    o = R.matmul(p, v)                  # v: (..., N, dv)

A scale written *before* QK^T (``q * c``, ``kT * c``; torch dynamo splits 1/sqrt(d)
into ``d**-0.25`` on each side) is part of ``q``/``kT`` already and is only reported.
Heads, head dim and whether q/k/v come from ``matmul(x, W) (+ b) -> reshape ->
permute_dims`` projections are read off the shapes and producers, for the report.

The block's *output projection* is followed forward from ``o`` (its users)::

    o = R.permute_dims(o, [0, 2, 1, 3])   # head merge: zero to three permute_dims /
    o = R.reshape(o, (B, N, heads * dv))  # reshape steps, ending with heads x dv last
    y = R.matmul(o, W)                    # W constant, (heads * dv, hidden)
    y = R.add(y, b)                       # optional constant bias

and kept as numpy steps (``project``), so the error a rewrite causes can be measured
where the block's result leaves it (``y``) rather than at softmax.V. A block with no
such chain (or whose matmul does not contract all heads' values) has
``projection is None`` and ``projection_note`` says why.

A mask can be linearized exactly only when it depends on the key alone:
``softmax(s_ij + b_j)`` weights key ``j`` by ``exp(b_j)`` whatever the query, so the
key's features are scaled by ``exp(b_j)`` (zero for a padding key). A bias that varies
with the query (causal, relative position, ALiBi) has no such factorization;
those blocks are reported with a reason and left alone. The key-only test is
structural: the bias has size 1 on the query axis, or is built by elementwise ops
from such tensors and constants that do not vary along the query axis (MiniLM's mask
is ``logical_and(all-true[1,1,128,1], pad[1,1,1,128])``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from edgec.passes._rules import const_value, shape_of
from tvm import relax

# Elementwise ops through which "does not vary along the query axis" propagates.
_ELEMENTWISE = {
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.where",
    "relax.logical_and", "relax.logical_or", "relax.logical_not", "relax.astype",
    "relax.equal", "relax.not_equal", "relax.less", "relax.greater", "relax.less_equal",
    "relax.greater_equal", "relax.negative", "relax.exp", "relax.log", "relax.minimum",
    "relax.maximum",
}
# A Where fill at or below this is a mask: exp(-50) ~ 2e-22 vanishes next to any kept key.
_MASK_FILL_MAX = -50.0


@dataclass
class AttentionBlock:
    """One matched softmax attention block (all shapes static)."""

    index: int
    out: relax.Var  # the binding of matmul(p, v)
    q: relax.Expr  # (..., Nq, d), scale-before already applied
    k_t: relax.Expr  # (..., d, N)
    v: relax.Expr  # (..., N, dv)
    batch_shape: tuple[int, ...]  # leading dims of q (batch, heads)
    n_query: int
    n_key: int
    head_dim: int
    value_dim: int
    heads: int
    scale_after: float = 1.0  # multiplies q k^T after the matmul
    scale_before: float | None = None  # product of scalar factors found on q and kT
    mask_kind: str = "none"  # "none", "additive", "where"
    mask: relax.Expr | None = None  # the additive bias, or the Where condition
    mask_keep_when: bool = True  # Where: keep the score where cond == this
    key_only: bool = True  # the mask does not vary with the query
    nan_guard: bool = False
    projections: bool = False  # q, k and v trace back to matmul(x, W) projections
    linearizable: bool = True
    reason: str = ""  # why not linearizable
    projection: Projection | None = None  # the output projection after the head merge
    projection_note: str = ""  # why there is none
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"attn{self.index}"

    def summary(self) -> dict[str, Any]:
        """JSON-able description (for ``edgec inspect`` and pass reports)."""
        return {
            "block": self.name,
            "output": self.out.name,
            "N": self.n_key,
            "n_query": self.n_query,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "value_dim": self.value_dim,
            "scale": _scale_text(self),
            "mask": self.mask_kind + ("" if self.mask_kind == "none" else
                                      " (key padding)" if self.key_only else " (query-dependent)"),
            "nan_guard": self.nan_guard,
            "projections": self.projections,
            "linearizable": self.linearizable,
            "output_projection": (self.projection.describe() if self.projection is not None
                                  else f"none ({self.projection_note})"),
            **({"reason": self.reason} if self.reason else {}),
        }


@dataclass
class Projection:
    """The head merge and output projection after a block, as numpy-replayable steps.

    ``steps``: ``("permute", axes)``, ``("reshape", shape)``, ``("matmul", W)``,
    ``("add", b)`` in program order; ``out`` is the binding of the last one.
    """

    out: relax.Var
    steps: list[tuple[str, Any]]

    def describe(self) -> str:
        names = {"permute": "transpose", "reshape": "reshape", "matmul": "matmul W",
                 "add": "+ bias"}
        return " -> ".join(names[op] for op, _ in self.steps) + f" ({self.out.name})"

    def apply(self, o: np.ndarray, lead: int = 0) -> np.ndarray:
        """Replay the steps on ``o`` (the block output, with ``lead`` extra leading axes)."""
        x = o
        for op, arg in self.steps:
            if op == "permute":
                x = np.transpose(x, list(range(lead)) + [a + lead for a in arg])
            elif op == "reshape":
                x = x.reshape(*x.shape[:lead], *arg)
            elif op == "matmul":
                x = np.matmul(x, arg)
            else:
                x = x + arg
        return x


def _scale_text(b: AttentionBlock) -> str:
    parts = []
    if b.scale_before is not None:
        parts.append(f"{b.scale_before:.6g} before QK^T")
    if b.scale_after != 1.0:
        parts.append(f"{b.scale_after:.6g} after QK^T")
    return ", ".join(parts) or "none"


# ------------------------------------------------------------------------- matching


class _Bindings:
    """var -> bound value for every dataflow binding of a function."""

    def __init__(self, func: relax.Function) -> None:
        self.value: dict[Any, relax.Expr] = {}
        self.order: list[relax.Var] = []
        self.users: dict[Any, list[relax.Var]] = {}  # var -> bindings that read it
        for block in func.body.blocks:
            for b in block.bindings:
                if isinstance(b, relax.VarBinding):
                    self.value[b.var] = b.value
                    self.order.append(b.var)
                    if isinstance(b.value, relax.Call):
                        for a in b.value.args:
                            if isinstance(a, relax.Var):
                                self.users.setdefault(a, []).append(b.var)

    def producer(self, expr: relax.Expr) -> relax.Expr:
        """The call that produced ``expr`` (itself if it is not a bound var)."""
        return self.value.get(expr, expr) if isinstance(expr, relax.Var) else expr


def _op(expr: relax.Expr) -> str:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return ""


def _scalar(expr: relax.Expr) -> float | None:
    v = const_value(expr)
    if v is None or v.size != 1:
        return None
    return float(v.reshape(()))


def find_attention_blocks(mod: tvm.IRModule, func_name: str = "main") -> list[AttentionBlock]:
    """Every ``softmax(q kT [scale] [mask]) @ v`` in ``mod[func_name]``, in program order."""
    func = mod[func_name]
    if not isinstance(func, relax.Function):
        return []
    binds = _Bindings(func)
    blocks: list[AttentionBlock] = []
    for var in binds.order:
        block = _match(var, binds, len(blocks))
        if block is not None:
            blocks.append(block)
    return blocks


def _match(out: relax.Var, binds: _Bindings, index: int) -> AttentionBlock | None:
    o = binds.value[out]
    if _op(o) != "relax.matmul":
        return None
    p, v = o.args
    p_val = binds.producer(p)
    nan_guard = False
    if _op(p_val) == "relax.where" and _op(binds.producer(p_val.args[0])) == "relax.isnan":
        # where(isnan(p), 0, p): only a guard if it selects the softmax itself
        inner = p_val.args[2]
        if _op(binds.producer(inner)) == "relax.nn.softmax" and _scalar(p_val.args[1]) == 0.0:
            p_val, nan_guard = binds.producer(inner), True
    if _op(p_val) != "relax.nn.softmax":
        return None
    s = p_val.args[0]
    s_shape = shape_of(s)
    if s_shape is None or int(p_val.attrs.axis) not in (-1, len(s_shape) - 1):
        return None
    # mask
    mask_kind, mask, keep_when = "none", None, True
    s_val = binds.producer(s)
    if _op(s_val) == "relax.add":
        a, b = s_val.args
        if _is_scores(a, binds):
            mask_kind, mask, s_val = "additive", b, binds.producer(a)
        elif _is_scores(b, binds):
            mask_kind, mask, s_val = "additive", a, binds.producer(b)
        else:
            return None
    elif _op(s_val) == "relax.where":
        cond, a, b = s_val.args
        fill_a, fill_b = _scalar(a), _scalar(b)
        if fill_b is not None and fill_b <= _MASK_FILL_MAX and _is_scores(a, binds):
            mask_kind, mask, keep_when, s_val = "where", cond, True, binds.producer(a)
        elif fill_a is not None and fill_a <= _MASK_FILL_MAX and _is_scores(b, binds):
            mask_kind, mask, keep_when, s_val = "where", cond, False, binds.producer(b)
        else:
            return None
    # scale after QK^T
    scale_after = 1.0
    if _op(s_val) in ("relax.multiply", "relax.divide"):
        a, b = s_val.args
        c_b, c_a = _scalar(b), _scalar(a)
        if c_b is not None:
            scale_after = c_b if _op(s_val) == "relax.multiply" else 1.0 / c_b
            s_val = binds.producer(a)
        elif c_a is not None and _op(s_val) == "relax.multiply":
            scale_after, s_val = c_a, binds.producer(b)
        else:
            return None
    if _op(s_val) != "relax.matmul":
        return None
    q, k_t = s_val.args
    qs, ks, vs = shape_of(q), shape_of(k_t), shape_of(v)
    if qs is None or ks is None or vs is None or min(len(qs), len(ks), len(vs)) < 2:
        return None
    n_q, d = qs[-2], qs[-1]
    if ks[-2] != d or vs[-2] != ks[-1]:
        return None
    n = ks[-1]
    batch = tuple(np.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2]))
    block = AttentionBlock(
        index=index, out=out, q=q, k_t=k_t, v=v, batch_shape=batch, n_query=n_q, n_key=n,
        head_dim=d, value_dim=vs[-1], heads=batch[-1] if len(batch) >= 2 else
        (batch[0] if batch else 1),
        scale_after=scale_after, scale_before=_scale_before(q, k_t, binds),
        mask_kind=mask_kind, mask=mask, mask_keep_when=keep_when, nan_guard=nan_guard,
        projections=all(_is_projection(x, binds) for x in (q, k_t, v)),
    )
    block.projection, block.projection_note = _output_projection(block, binds)
    if mask is not None:
        block.key_only = _key_only(mask, binds, rank=len(s_shape))
        if not block.key_only:
            block.linearizable = False
            block.reason = ("mask/bias varies with the query position (causal or "
                            "relative-position bias): only key-only biases factor into "
                            "per-key feature weights")
    return block


def _is_scores(expr: relax.Expr, binds: _Bindings) -> bool:
    """``expr`` is q kT, possibly scaled by a scalar constant."""
    e = binds.producer(expr)
    if _op(e) in ("relax.multiply", "relax.divide"):
        a, b = e.args
        if _scalar(b) is not None:
            e = binds.producer(a)
        elif _scalar(a) is not None and _op(e) == "relax.multiply":
            e = binds.producer(b)
    return _op(e) == "relax.matmul"


def _scale_before(q: relax.Expr, k_t: relax.Expr, binds: _Bindings) -> float | None:
    """Product of the scalar factors applied directly to q and kT (report only)."""
    total, found = 1.0, False
    for x in (q, k_t):
        e = binds.producer(x)
        if _op(e) in ("relax.multiply", "relax.divide"):
            c = _scalar(e.args[1]) if _scalar(e.args[1]) is not None else _scalar(e.args[0])
            if c is not None:
                total *= c if _op(e) == "relax.multiply" else 1.0 / c
                found = True
    return total if found else None


_SHAPE_OPS = {"relax.reshape", "relax.permute_dims", "relax.multiply", "relax.divide",
              "relax.add"}


def _is_projection(x: relax.Expr, binds: _Bindings, depth: int = 8) -> bool:
    """``x`` reaches ``matmul(act, W_const)`` through reshapes, transposes, bias, scale."""
    e = binds.producer(x)
    for _ in range(depth):
        op = _op(e)
        if op == "relax.matmul":
            return const_value(e.args[1]) is not None or const_value(e.args[0]) is not None
        if op not in _SHAPE_OPS:
            return False
        # follow the non-constant operand
        nxt = [a for a in e.args if isinstance(a, relax.Expr) and const_value(a) is None
               and not isinstance(a, relax.ShapeExpr)]
        if len(nxt) != 1:
            return False
        e = binds.producer(nxt[0])
    return False


def _key_only(expr: relax.Expr, binds: _Bindings, rank: int, depth: int = 12) -> bool:
    """``expr`` (broadcast against scores of rank ``rank``) is constant along the query axis."""
    shape = shape_of(expr)
    if shape is None:
        return False
    if len(shape) < 2:
        return True  # (N,) or scalar broadcasts over queries
    if shape[-2] == 1:
        return True
    value = const_value(expr)
    if value is not None:
        return bool((value == value[..., :1, :]).all())
    if depth == 0:
        return False
    e = binds.producer(expr)
    if _op(e) not in _ELEMENTWISE:
        return False
    args = [a for a in e.args if isinstance(a, relax.Expr) and not isinstance(a, relax.ShapeExpr)]
    return all(_key_only(a, binds, rank, depth - 1) for a in args)


_MERGE_OPS = {"relax.permute_dims": "permute", "relax.reshape": "reshape"}


def _output_projection(block: AttentionBlock, binds: _Bindings
                       ) -> tuple[Projection | None, str]:
    """Follow ``block.out`` through the head merge to ``matmul(., W) (+ b)``."""
    steps: list[tuple[str, Any]] = []
    cur: relax.Var = block.out
    for _ in range(4):  # up to three merge steps, then the matmul
        users = binds.users.get(cur, [])
        if not users:
            return None, ("the block output" if not steps else "the head merge") + \
                " goes straight to the function's output"
        nxt = None
        for u in users:
            val = binds.value[u]
            op = _op(val)
            if op in _MERGE_OPS and val.args[0].same_as(cur):
                shape = shape_of(u)
                if shape is None:
                    continue
                arg = ([int(a) for a in val.attrs.axes] if op == "relax.permute_dims"
                       else shape)
                steps.append((_MERGE_OPS[op], arg))
                nxt = u
                break
            if op == "relax.matmul" and val.args[0].same_as(cur):
                w = const_value(val.args[1])
                merged = shape_of(cur)
                if w is None or w.ndim != 2 or merged is None:
                    continue
                # with a merge, every head's values; without one, a per-head projection
                width = block.value_dim * (block.heads if steps else 1)
                if merged[-1] != width or w.shape[0] != width:
                    return None, (f"matmul after the block contracts {merged[-1]} values, "
                                  f"not heads x value dim = {width}")
                steps.append(("matmul", w))
                out = u
                for v in binds.users.get(u, []):  # a constant bias right after it
                    add = binds.value[v]
                    if _op(add) == "relax.add":
                        other = add.args[1] if add.args[0].same_as(u) else add.args[0]
                        b = const_value(other)
                        if b is not None:
                            steps.append(("add", b))
                            out = v
                            break
                return Projection(out, steps), ""
        if nxt is None:
            return None, ("no head merge and matmul with a constant weight follows the "
                          "block output")
        cur = nxt
    return None, "no matmul with a constant weight within three merge steps"
