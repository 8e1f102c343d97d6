"""quantize-int8: lower QDQ (fake-quantized) conv2d/matmul to integer kernels.

TVM imports a QDQ ONNX model as float ops between ``R.dequantize``/``R.quantize``.
This pass rewrites each quantized layer into int8 arithmetic.

Before (``xq`` int8; W_q, b_q constants)::

    x = R.dequantize(xq, s_x, zp_x)
    w = R.dequantize(W_q, s_w[C], 0, axis=0)          # axis 1 for a [K, N] matmul
    c = R.nn.conv2d(x, w, padding=p)                  # or R.matmul(x, w)
    u = R.add(c, R.reshape(R.dequantize(b_q, s_x*s_w, 0), [1, C, 1, 1]))   # optional
    v = R.nn.relu(u)                                  # optional; or R.clip(u, lo, hi)
    yq = R.quantize(v, s_y, zp_y)

After::

    xp  = R.nn.pad(xq, p, pad_value=zp_x)             # real 0 is zp_x, not 0
    acc = R.nn.conv2d(xp, W_q, padding=0, out_dtype="int32") + B'
    yq  = requantize(acc, mult[C], shift[C], zp_y) clamped to [lo_q, hi_q]

The math: ``y = s_x s_w sum (xq - zp_x) W_q + s_x s_w b_q``, so with
``B'[c] = b_q[c] - zp_x * sum W_q[c]`` the int32 accumulator is
``sum xq W_q + B'`` and ``yq = round(acc * s_x s_w[c] / s_y) + zp_y``. The real
multiplier ``M`` is the float32 ``float32(s_x s_w[c]) / s_y`` (as ONNX Runtime
computes it), written exactly as ``m * 2**-t`` with a 24-bit ``m``; the default
rounding ``binary32`` rounds the exact int64 product ``acc * m`` as a float32
multiply and a half-to-even conversion would (``requant.binary32_round``), so the
integer kernels are bit-exact with ONNX Runtime's QLinearConv / QLinearMatMul on the
same QDQ model. ``single`` and ``gemmlowp`` (TFLite's two conventions, with a Q0.31
``mult`` and ``shift`` from ``intmath.quantize_multiplier``) remain selectable with
the ``requant_rounding`` option; every rounding is bit-exact against ``requant``.
ReLU / Clip become the clamp bounds ``[max(-128, q(lo)), min(127, q(hi))]``.

Anything else (other activations, a layer whose intermediate value has a second
reader, asymmetric weights, uint8) stays float between dequantize/quantize, and
the report says why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from edgec.passes._rules import const_value
from edgec.passes.quantize.requant import SATURATE_BITS, binary32_multiplier
from edgec.passes.registry import register_pass
from edgec.targets.edge_npu.intmath import quantize_multiplier
from tvm import relax, te, tirx

QMIN, QMAX = -128, 127
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class IntLayer:
    """Everything the integer kernel needs, read off one matched QDQ layer."""

    kind: str  # "conv2d" or "matmul"
    xq: relax.Expr
    zp_x: int
    s_x: float
    w_q: np.ndarray  # int8, OIHW or [K, N]
    s_w: np.ndarray  # float32 [C]
    b_q: np.ndarray | None  # int32 [C]
    conv_attrs: Any
    s_y: float
    zp_y: int
    lo: int
    hi: int


# ------------------------------------------------------------------------- matching


def _call(expr: relax.Expr | None, op: str) -> relax.Call | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op:
        return expr
    return None


def _scalar(expr: relax.Expr) -> float | None:
    v = const_value(expr)
    if v is None or v.size != 1:
        return None
    return v.reshape(()).item()


class _Matcher:
    """Walks a quantize call back to its layer; returns an IntLayer or a reason."""

    def __init__(self, values: dict[relax.Var, relax.Expr], uses: Counter[relax.Var]) -> None:
        self.values = values
        self.uses = uses

    def producer(self, expr: relax.Expr, single_use: bool = True) -> relax.Expr | None:
        if isinstance(expr, relax.Var) and expr in self.values:
            if single_use and self.uses[expr] != 1:
                return None
            return self.values[expr]
        return expr if not isinstance(expr, relax.Var) else None

    def match(self, q: relax.Call) -> IntLayer | str | None:
        if str(q.attrs.out_dtype) != "int8":
            return f"output dtype {q.attrs.out_dtype} is not int8"
        s_y, zp_y = _scalar(q.args[1]), _scalar(q.args[2])
        if s_y is None or zp_y is None:
            return None  # per-channel output quantization: not a layer output
        v = self.producer(q.args[0])
        lo_r, hi_r = -np.inf, np.inf
        if (c := _call(v, "relax.nn.relu")) is not None:
            lo_r, v = 0.0, self.producer(c.args[0])
        elif (c := _call(v, "relax.clip")) is not None:
            lo_r, hi_r = float(c.args[1].value), float(c.args[2].value)
            v = self.producer(c.args[0])
        b_q = None
        if (add := _call(v, "relax.add")) is not None:
            for core, bias in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
                b = self.producer(bias, single_use=False)
                if (r := _call(b, "relax.reshape")) is not None:
                    b = self.producer(r.args[0], single_use=False)
                if (dq := _call(b, "relax.dequantize")) is not None:
                    b_q = const_value(dq.args[0])
                    if b_q is not None and str(b_q.dtype) == "int32":
                        v = self.producer(core)
                        break
                    b_q = None
            else:
                return None  # an add that is not a quantized bias: not ours
        conv, mm = _call(v, "relax.nn.conv2d"), _call(v, "relax.matmul")
        layer = conv if conv is not None else mm
        if layer is None:
            return None
        kind = "conv2d" if conv is not None else "matmul"
        if conv is not None and (str(conv.attrs.data_layout), str(conv.attrs.kernel_layout),
                                 str(conv.attrs.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return f"conv2d layout {conv.attrs.data_layout}/{conv.attrs.kernel_layout}"
        xdq = _call(self.producer(layer.args[0], single_use=False), "relax.dequantize")
        wdq = _call(self.producer(layer.args[1], single_use=False), "relax.dequantize")
        if xdq is None or wdq is None:
            return f"{kind} input or weight is not dequantized"
        if str(xdq.args[0].ty.dtype) != "int8":
            return f"{kind} input is {xdq.args[0].ty.dtype}, not int8"
        s_x, zp_x = _scalar(xdq.args[1]), _scalar(xdq.args[2])
        if s_x is None or zp_x is None:
            return f"{kind} input is not quantized per tensor"
        w_q = const_value(wdq.args[0])
        s_w, zp_w = const_value(wdq.args[1]), const_value(wdq.args[2])
        if w_q is None or s_w is None or zp_w is None or str(w_q.dtype) != "int8":
            return f"{kind} weight is not a constant int8 tensor"
        if np.any(zp_w != 0):
            return f"{kind} weight zero point is not 0 (asymmetric weights)"
        axis = 0 if kind == "conv2d" else 1
        if w_q.ndim != (4 if kind == "conv2d" else 2):
            return f"{kind} weight has rank {w_q.ndim}"
        n_out = w_q.shape[axis]
        if s_w.size not in (1, n_out) or (s_w.size > 1 and int(wdq.attrs.axis) % w_q.ndim != axis):
            return f"{kind} weight is not quantized per output channel"
        s_w = np.broadcast_to(s_w.reshape(-1), (n_out,)).astype(np.float32)
        if b_q is not None:
            if b_q.size != n_out:
                return f"{kind} bias has {b_q.size} values for {n_out} channels"
            b_q = b_q.reshape(-1)
        s_y, zp_y = float(np.float32(s_y)), int(zp_y)
        lo = QMIN if lo_r == -np.inf else int(np.clip(np.rint(lo_r / s_y) + zp_y, QMIN, QMAX))
        hi = QMAX if hi_r == np.inf else int(np.clip(np.rint(hi_r / s_y) + zp_y, QMIN, QMAX))
        return IntLayer(kind, xdq.args[0], int(zp_x), float(np.float32(s_x)), w_q, s_w, b_q,
                        layer.attrs if conv is not None else None, s_y, zp_y, lo, hi)


# ------------------------------------------------------------------------- building


def real_multipliers(layer: IntLayer) -> np.ndarray:
    """Per-channel float32 ``float32(s_x * s_w[c]) / s_y``, as ONNX Runtime computes it."""
    return (np.float32(layer.s_x) * layer.s_w).astype(np.float32) / np.float32(layer.s_y)


def requant_params(layer: IntLayer, rounding: str = "binary32") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel fixed-point multipliers: ``(m, t)`` with ``M = m * 2**-t`` exactly for
    ``binary32``, else TFLite's Q0.31 ``(mult, shift)`` of ``s_x * s_w[c] / s_y``."""
    if rounding == "binary32":
        return binary32_multiplier(real_multipliers(layer))
    real = (np.float32(layer.s_x) * layer.s_w).astype(np.float64) / np.float64(layer.s_y)
    pairs = [quantize_multiplier(float(r)) for r in real]
    return (np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64))


def effective_bias(layer: IntLayer) -> np.ndarray:
    """``B'[c] = b_q[c] - zp_x * sum W_q[c]`` as int32 (checked to fit)."""
    axis = 0 if layer.kind == "conv2d" else 1
    reduce = tuple(i for i in range(layer.w_q.ndim) if i != axis)
    wsum = layer.w_q.astype(np.int64).sum(axis=reduce)
    b = np.zeros_like(wsum) if layer.b_q is None else layer.b_q.astype(np.int64)
    eff = b - layer.zp_x * wsum
    if eff.min() < I32_MIN or eff.max() > I32_MAX:
        raise ValueError("effective bias overflows int32")
    return eff.astype(np.int32)


def _c(value: np.ndarray | int, dtype: str) -> relax.Expr:
    return relax.const(np.asarray(value).astype(dtype), dtype)


ROUNDINGS = ("binary32", "single", "gemmlowp", "float")
DEFAULT_ROUNDING = "binary32"


def requantize_expr(acc: relax.Expr, mult: np.ndarray, shift: np.ndarray, zp: int,
                    lo: int, hi: int, shape: tuple[int, ...],
                    rounding: str = DEFAULT_ROUNDING,
                    real: np.ndarray | None = None) -> relax.Expr:
    """int32 ``acc`` -> int8 in Relax ops (int64 arithmetic), ``clip(R(acc) + zp, lo, hi)``.

    (``binary32``, the default, is one TE kernel: ``binary32_te``.)
    ``rounding="single"`` (TFLite's single-rounding variant, ``requant.requantize_single``):
    ``R(acc) = (acc * mult + 2**(t-1)) >> t`` with ``t = 31 - shift``: one rounding,
    half up. ``rounding="gemmlowp"`` (``intmath.requantize``): SaturatingRounding-
    DoublingHighMul then RoundingDivideByPOT, two roundings, each half away from zero.
    ``rounding="float"`` is ONNX Runtime's (MLAS) requantization, kept to check edgec
    against it element for element: ``round_half_even(float32(acc) * float32(M))``
    with ``M = float32(s_x * s_w) / s_y`` (``real``); not a fixed-point kernel.
    ``shape`` broadcasts the per-channel ``mult``/``shift`` against ``acc``.
    """
    op = relax.op
    if rounding == "float":
        assert real is not None
        r = op.astype(op.round(op.multiply(op.astype(acc, "float32"),
                                           _c(real.reshape(shape), "float32"))), "int64")
        out = op.clip(op.add(r, _c(zp, "int64")), lo, hi)
        return op.astype(out, "int8")
    x = op.astype(acc, "int64")
    if rounding == "single":
        total = 31 - shift
        if np.any(total < 1) or np.any(total > 62):
            raise ValueError(f"requantization shift out of range: {shift.min()}..{shift.max()}")
        prod = op.multiply(x, _c(mult.reshape(shape), "int64"))
        r = op.right_shift(op.add(prod, _c((np.int64(1) << (total - 1)).reshape(shape), "int64")),
                           _c(total.reshape(shape), "int64"))
    elif rounding == "gemmlowp":
        r = _gemmlowp_expr(x, mult, shift, shape)
    else:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
    out = op.clip(op.add(r, _c(zp, "int64")), lo, hi)
    return op.astype(out, "int8")


def binary32_te(acc: te.Tensor, m: te.Tensor, t: te.Tensor, zp: int, lo: int, hi: int,
                axis: int) -> te.Tensor:
    """``clip(requant.binary32_round(acc) + zp, lo, hi)`` as one TE kernel; ``m``, ``t``
    are per-channel along ``axis``.

    One TIR expression with ``let`` bindings rather than Relax ops: the CPU schedules
    inline the chain into the conv / matmul write-back, and every extra reader of a
    Relax intermediate would copy its operand tree there (compiles took minutes).
    ``u - h`` is ``r - 2**(t-1)`` with ``r = u mod 2**t``, and the binade term is
    ``2**(k+1) = 1 + sum_i [j >= 2**i] 2**i`` for ``i < SATURATE_BITS`` (``u >= 2**(t+i)``
    exactly when ``j >= 2**i``). Comparing ``j`` with constants and shifting the sum
    once (``<< max(t-25, 0) >> max(25-t, 0)``, ``requant``'s form) keeps the expression
    small: comparing ``u`` with ``1 << (t+i)`` and selecting between two shifted copies
    of the sum made PP-OCR cls int8 ~2x slower and ~2x longer to compile (each
    measured against float edgec in the same run). (A bit smear of
    ``j``, as ``requant`` does, trips TVM's bound analysis: "conflicts with
    memorization".)"""
    def i64(v: int) -> tirx.PrimExpr:
        return tirx.const(int(v), "int64")

    def f(*idx: tirx.PrimExpr) -> tirx.PrimExpr:
        c = idx[axis]
        tc = t[c]
        x = acc(*idx).astype("int64")
        u, j, d = (tirx.Var(n, "int64") for n in ("u", "j", "d"))
        two_k1 = i64(1)
        for i in range(SATURATE_BITS):  # u >= 2**(t+i) is j >= 2**i: constant compares
            two_k1 = two_k1 + tirx.Select(j >= i64(1 << i), i64(1 << i), i64(0))
        # one shift pair instead of a select of two shifted copies of the sum
        half_ulp = (two_k1 << tirx.max(tc - i64(25), i64(0))) >> tirx.max(i64(25) - tc, i64(0))
        ad = tirx.Select(d < i64(0), -d, d)
        # a tie after the float32 product: half to even; else the side of the midpoint
        step = tirx.Select(ad <= half_ulp, j & i64(1), tirx.Select(d > i64(0), i64(1), i64(0)))
        q = tirx.Select(x < i64(0), -(j + step), j + step) + i64(zp)
        out = tirx.max(tirx.min(q, i64(hi)), i64(lo)).astype("int8")
        body = tirx.Let(d, (u & ((i64(1) << tc) - i64(1))) - (i64(1) << (tc - i64(1))), out)
        body = tirx.Let(j, u >> tc, body)
        ax = tirx.Select(x < i64(0), -x, x)
        cap = i64(1) << tirx.min(tc + i64(SATURATE_BITS), i64(62))  # requant's cap
        return tirx.Let(u, tirx.min(ax * m[c], cap), body)

    return te.compute(acc.shape, f, name="requantize_binary32")


FLOAT_EXACT = 1 << 24  # float32 holds every integer below this exactly


def accumulator_bound(layer: IntLayer, bias: np.ndarray) -> int:
    """The largest ``|acc|`` any int8 input can produce: ``128 sum |W_q[c]| + |B'[c]|``,
    with ``bias`` the layer's ``effective_bias``."""
    axis = 0 if layer.kind == "conv2d" else 1
    reduce = tuple(i for i in range(layer.w_q.ndim) if i != axis)
    wabs = np.abs(layer.w_q.astype(np.int64)).sum(axis=reduce)
    return int((128 * wabs + np.abs(bias.astype(np.int64))).max())


def binary32_float_te(acc: te.Tensor, mult: te.Tensor, zp: int, lo: int, hi: int,
                      axis: int) -> te.Tensor:
    """``binary32_te``'s integers in float32 arithmetic, for accumulators below 2**24.

    ``mult[c]`` is ``m * 2**-t`` as a float32 (exact: ``m`` has 24 bits). Below 2**24
    ``float32(acc)`` is exact, so the float32 product is the exact ``acc * m``
    rounded once to 24 bits, and ``nearbyint`` then rounds it half to even: the two
    roundings ``binary32_round`` defines. The caller checks the bound
    (``accumulator_bound``). Vector float ops instead of int64 compares and selects:
    the epilogue of PP-OCRv4 det's int8 layers dominated their time."""
    def f(*idx: tirx.PrimExpr) -> tirx.PrimExpr:
        r = tirx.nearbyint(acc(*idx).astype("float32") * mult[idx[axis]])
        q = r + tirx.const(float(zp), "float32")
        clipped = tirx.max(tirx.min(q, tirx.const(float(hi), "float32")),
                           tirx.const(float(lo), "float32"))
        return clipped.astype("int8")

    return te.compute(acc.shape, f, name="requantize_binary32")


def _gemmlowp_expr(x: relax.Expr, mult: np.ndarray, shift: np.ndarray,
                   shape: tuple[int, ...]) -> relax.Expr:
    op = relax.op
    left = np.maximum(shift, 0).reshape(shape)
    right = np.maximum(-shift, 0).reshape(shape)
    if np.any(left > 0):  # multiplier > 1: widen first, saturating to int32 as TFLite
        x = op.clip(op.left_shift(x, _c(left, "int64")), I32_MIN, I32_MAX)
    # SaturatingRoundingDoublingHighMul(x, mult): (x*mult + nudge) / 2**31, C division
    ab = op.multiply(x, _c(mult.reshape(shape), "int64"))
    nonneg = op.greater_equal(ab, _c(0, "int64"))
    q = op.add(ab, op.where(nonneg, _c(1 << 30, "int64"), _c(1 - (1 << 30), "int64")))
    pos = op.right_shift(q, _c(31, "int64"))
    neg = op.negative(op.right_shift(op.negative(q), _c(31, "int64")))
    h = op.where(op.greater_equal(q, _c(0, "int64")), pos, neg)
    # RoundingDivideByPOT(h, right): round half away from zero
    mask = (np.int64(1) << right) - 1
    rem = op.bitwise_and(h, _c(mask, "int64"))
    thr = op.add(_c(mask >> 1, "int64"), op.astype(op.less(h, _c(0, "int64")), "int64"))
    return op.add(op.right_shift(h, _c(right, "int64")), op.astype(op.greater(rem, thr), "int64"))


def int_kernel(layer: IntLayer, xq: relax.Expr, rounding: str = DEFAULT_ROUNDING,
               bb: relax.BlockBuilder | None = None) -> relax.Expr:
    """The integer replacement of ``layer`` reading the int8 tensor ``xq`` (``binary32``
    emits the accumulator into ``bb`` and returns a ``call_tir`` of ``binary32_te``)."""
    op = relax.op
    mult, shift = requant_params(layer, rounding)
    bias = effective_bias(layer)
    if layer.kind == "conv2d":
        a = layer.conv_attrs
        top, left, bottom, right = (int(p) for p in a.padding)
        x = xq
        if top or left or bottom or right:
            x = op.nn.pad(xq, [0, 0, 0, 0, top, bottom, left, right], "constant",
                          float(layer.zp_x))
        acc = op.nn.conv2d(x, _c(layer.w_q, "int8"), strides=[int(s) for s in a.strides],
                           padding=[0, 0, 0, 0], dilation=[int(d) for d in a.dilation],
                           groups=int(a.groups), out_dtype="int32")
        shape: tuple[int, ...] = (1, -1, 1, 1)
    else:
        acc = op.matmul(xq, _c(layer.w_q, "int8"), out_dtype="int32")
        shape = (-1,)
    acc = op.add(acc, _c(bias.reshape(shape), "int32"))
    if rounding == "binary32":
        if bb is None:
            raise ValueError("binary32 requantization needs the block builder")
        acc = bb.emit(acc)
        axis = 1 if layer.kind == "conv2d" else len(acc.ty.shape) - 1
        if accumulator_bound(layer, bias) < FLOAT_EXACT:
            exact = mult.astype(np.float64) * np.exp2(-shift.astype(np.float64))
            exact = exact.astype(np.float32)  # m has 24 bits: exact in float32
            return bb.call_te(binary32_float_te, acc, _c(exact, "float32"), layer.zp_y,
                              layer.lo, layer.hi, axis, primfunc_name_hint="requantize_binary32")
        return bb.call_te(binary32_te, acc, _c(mult, "int64"), _c(shift, "int64"),
                          layer.zp_y, layer.lo, layer.hi, axis,
                          primfunc_name_hint="requantize_binary32")
    return requantize_expr(acc, mult, shift, layer.zp_y, layer.lo, layer.hi, shape, rounding,
                           real_multipliers(layer))


# ------------------------------------------------------------------------- the pass


@relax.expr_functor.mutator
class _Lower(relax.PyExprMutator):  # type: ignore[misc]
    def __init__(self, mod: tvm.IRModule, matcher: _Matcher, rounding: str) -> None:
        super().__init__(mod)
        self.matcher = matcher
        self.rounding = rounding
        self.fired: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        q = _call(binding.value, "relax.quantize")
        if q is not None and isinstance(binding.var, relax.DataflowVar):
            m = self.matcher.match(q)
            if isinstance(m, IntLayer):
                new = self.builder_.emit(int_kernel(m, self.visit_expr(m.xq), self.rounding,
                                                    self.builder_))
                self.set_var_remap(binding.var, new)
                self.fired[m.kind] += 1
                return
            if isinstance(m, str):
                self.skipped[m] += 1
        super().visit_var_binding_(binding)


def _index(func: relax.Function) -> tuple[dict[relax.Var, relax.Expr], Counter[relax.Var]]:
    values: dict[relax.Var, relax.Expr] = {}
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.VarBinding):
                values[b.var] = b.value
    # a var's readers: the bindings (and the return value) whose expression mentions it
    uses: Counter[relax.Var] = Counter()
    for e in [*values.values(), func.body.body]:
        for v in relax.analysis.free_vars(e):
            uses[v] += 1
    return values, uses


@register_pass("quantize-int8", "quantize", origin="built-in", default=False)
def quantize_int8(mod: tvm.IRModule, ctx: Any = None) -> tvm.IRModule:
    """Lower QDQ conv2d/matmul to int8 kernels with int32 accumulation and requantization."""
    rounding = str((ctx.options if ctx is not None else {}).get("requant_rounding",
                                                                DEFAULT_ROUNDING))
    if rounding not in ROUNDINGS:
        raise ValueError(f"requant_rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
    out = mod.clone()
    fired: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        lower = _Lower(mod, _Matcher(*_index(func)), rounding)
        new = lower.visit_expr(func)
        fired += lower.fired
        skipped += lower.skipped
        if lower.fired:
            out[gv] = relax.analysis.remove_all_unused(new)
            # the binary32 kernels the builder added as PrimFuncs
            for kgv, kernel in lower.builder_.get().functions_items():
                if isinstance(kernel, tirx.PrimFunc) and kgv.name_hint not in \
                        {g.name_hint for g in out.get_global_vars()}:
                    out[kgv] = kernel
    if ctx is not None:
        ctx.report["quantize-int8"] = {"lowered": dict(fired), "left_float": dict(skipped)}
    return out
