"""What an NPU layer is, read from the Relax IR of a QDQ model.

In a QDQ model every int8 layer reads ``dequantize(a)`` and ends in ``quantize``:

    q_out = quantize(op(dequantize(a, s_in, zp_in), dequantize(W_int8, s_w, 0)) + b, s_out, zp_out)

``describe`` turns such an expression (matched by ``patterns.py``) into a ``Layer``: the
integer parameters the NPU and the integer reference both use, or a *reason* string
when the expression is outside what the NPU runs. Integer algebra (TFLite conventions):

- conv / gemm: ``acc = sum_k q_x * q_w`` with padding filled with ``zp_in``, so the
  input zero point folds into the bias: ``bias' = q_b - zp_in * sum_k q_w``; the real
  multiplier ``float32(float32(s_in * s_w[c]) / s_out)`` (formed as ONNX Runtime forms
  it) becomes a per-channel fixed-point (mult, shift) for the layer's rounding
  (``attrs["rounding"]``, ``rounding.py``: ``binary32`` by default, bit-exact with
  edgec's CPU int8 path; ``gemmlowp`` on request); ReLU and clip become the clamp bounds
  ``round(lo / s_out) + zp_out``.
- a chain of element-wise ops on one int8 tensor is a 256-entry table: the chain is
  evaluated in float32 on the 256 dequantized inputs and quantized as ONNX does
  (round half to even, saturate), so the table is exact for the QDQ graph.
- global average pool: ``sum_p q_x`` (a GEMM with a ones row) then requant with
  ``s_in / (P * s_out)`` and bias ``-zp_in * P``: one rounding, like the float graph.

Tensors are in the NPU's HWC layout: NCHW ``(1, C, H, W)`` -> ``(H, W, C)``, a 2-D
``(M, N)`` -> ``(M, 1, N)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import rounding
from .isa import Rounding
from .programs import Conv
from .tvm_compat import constant_array, constant_type, dtype_of, shape_of

Lookup = Callable[[Any], Any]  # Var -> bound value (or None at the match boundary)


@dataclass(frozen=True)
class QTensor:
    """An int8 tensor in HWC with its per-tensor quantization."""

    shape: tuple[int, int, int]
    scale: float
    zp: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Layer:
    """One NPU layer: kind, int8 inputs/output and integer parameters."""

    kind: str  # conv | lut | add | mul | maxpool | gap | alias | resize | concat
    inputs: list[QTensor]
    out: QTensor
    attrs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)  # Relax ops it covers (for the report)

    @property
    def macs(self) -> int:
        conv = self.attrs.get("conv")
        return conv.macs if isinstance(conv, Conv) else 0


# -- reading Relax expressions -----------------------------------------------------------
def _val(e: Any, lookup: Lookup) -> Any:
    from tvm import relax

    while isinstance(e, relax.Var):
        v = lookup(e)
        if v is None:
            return e
        e = v
    return e


def _call(e: Any, lookup: Lookup, op: str | None = None) -> Any:
    from tvm import relax

    e = _val(e, lookup)
    if isinstance(e, relax.Call) and hasattr(e.op, "name") and (op is None or e.op.name == op):
        return e
    return None


def _const(e: Any, lookup: Lookup) -> np.ndarray | None:
    e = _val(e, lookup)
    return constant_array(e) if isinstance(e, constant_type()) else None


def _shape(e: Any) -> tuple[int, ...]:
    return shape_of(e)


def _dq_const(e: Any, lookup: Lookup) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """``dequantize(constant)`` -> (q, scale, zp, axis)."""
    d = _call(e, lookup, "relax.dequantize")
    if d is None:
        return None
    q, s, z = (_const(a, lookup) for a in d.args)
    if q is None or s is None or z is None:
        return None
    return q, s.astype(np.float32), z.astype(np.int64), int(d.attrs.axis)


def const_value(e: Any, lookup: Lookup) -> np.ndarray | None:
    """A float constant, or a dequantized constant, as float32."""
    c = _const(e, lookup)
    if c is not None:
        return c.astype(np.float32)
    dq = _dq_const(e, lookup)
    if dq is None:
        return None
    q, s, z, axis = dq
    if s.ndim and q.ndim:
        bshape = [1] * q.ndim
        bshape[axis] = -1
        s, z = s.reshape(bshape), z.reshape(bshape)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def _scalar_qparams(call: Any, lookup: Lookup) -> tuple[float, int] | None:
    s, z = _const(call.args[1], lookup), _const(call.args[2], lookup)
    if s is None or z is None or s.size != 1 or z.size != 1:
        return None
    return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])


def act_input(e: Any, lookup: Lookup) -> tuple[Any, float, int] | str:
    """``dequantize(a)`` of an int8 activation -> (a, scale, zp), or a reason."""
    d = _call(e, lookup, "relax.dequantize")
    if d is None:
        return "input is not a dequantized int8 tensor"
    if _const(d.args[0], lookup) is not None:
        return "input is a constant"
    if dtype_of(d.args[0]) != "int8":
        return f"input is {dtype_of(d.args[0])}, the NPU reads int8"
    qp = _scalar_qparams(d, lookup)
    if qp is None:
        return "input is quantized per channel; the NPU needs one scale per activation tensor"
    return d.args[0], qp[0], qp[1]


def hwc(shape: tuple[int, ...]) -> tuple[int, int, int] | str:
    """NCHW / 2-D shape -> HWC, or a reason."""
    if len(shape) == 4:
        if shape[0] != 1:
            return f"batch {shape[0]}: the NPU program is built for batch 1"
        return (shape[2], shape[3], shape[1])
    if len(shape) == 2:
        return (shape[0], 1, shape[1])
    if len(shape) == 3 and shape[0] == 1:  # one sequence of tokens: M x N
        return (shape[1], 1, shape[2])
    if len(shape) == 3:
        return f"batch {shape[0]}: the NPU program is built for batch 1"
    return f"rank-{len(shape)} tensor: the NPU takes NCHW, 1 x M x N or 2-D tensors"


def hwc_input(e: Any, lookup: Lookup) -> tuple[Any, QTensor] | str:
    """``dequantize(a)`` of an int8 activation in NCHW / 2-D -> (a, its HWC ``QTensor``),
    or a reason."""
    a = act_input(e, lookup)
    if isinstance(a, str):
        return a
    x, s_in, zp_in = a
    shape = hwc(_shape(x))
    if isinstance(shape, str):
        return shape
    return x, QTensor(shape, s_in, zp_in)


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.rint(x)


# -- element-wise chains -> LUT -------------------------------------------------------------
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x.astype(np.float64))


# Unary functions of the LUT chain (float32, as ONNX Runtime evaluates the QDQ graph).
UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relax.nn.relu": lambda x: np.maximum(x, 0),
    "relax.sigmoid": lambda x: 1 / (1 + np.exp(-x.astype(np.float64))),
    "relax.tanh": lambda x: np.tanh(x.astype(np.float64)),
    "relax.nn.gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "relax.nn.gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                           * (x + 0.044715 * x.astype(np.float64) ** 3))),
    "relax.nn.silu": lambda x: x / (1 + np.exp(-x.astype(np.float64))),
    "relax.exp": lambda x: np.exp(x.astype(np.float64)),
    "relax.negative": lambda x: -x,
    "relax.abs": np.abs,
    "relax.erf": _erf,
}
# f(a, b) for a binary op; _with_const decides which side the constant is on.
BINARY_CONST = {
    "relax.add": lambda a, b: a + b,
    "relax.subtract": lambda a, b: a - b,
    "relax.multiply": lambda a, b: a * b,
    "relax.divide": lambda a, b: a / b,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}


def _clip(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        return np.clip(x, lo, hi)

    return apply


def _with_const(f: Callable, k: np.ndarray, const_first: bool) -> Callable:
    """``x -> f(x, k)`` (or ``f(k, x)``) with a float32 scalar constant."""
    c = np.float32(k.reshape(-1)[0])

    def apply(x: np.ndarray) -> np.ndarray:
        return f(c, x) if const_first else f(x, c)

    return apply


def unary_chain(e: Any, lookup: Lookup) -> tuple[Any, list[Callable], list[str]] | str:
    """Walk element-wise ops down to ``dequantize(a)``: (dq expr, fns bottom-up, op names)."""
    fns: list[Callable[[np.ndarray], np.ndarray]] = []
    names: list[str] = []
    cur = e
    for _ in range(16):
        if _call(cur, lookup, "relax.dequantize") is not None:
            return cur, fns[::-1], names[::-1]
        c = _call(cur, lookup)
        if c is None:
            return "chain does not start at a dequantized tensor"
        name = c.op.name
        if name in UNARY:
            fns.append(UNARY[name])
            cur = c.args[0]
        elif name == "relax.clip":
            lo, hi = float(c.args[1].value), float(c.args[2].value)
            fns.append(_clip(lo, hi))
            cur = c.args[0]
        elif name in BINARY_CONST:
            k1, k0 = const_value(c.args[1], lookup), const_value(c.args[0], lookup)
            if k1 is not None and k1.size == 1:
                fns.append(_with_const(BINARY_CONST[name], k1, const_first=False))
                cur = c.args[0]
            elif k0 is not None and k0.size == 1:
                fns.append(_with_const(BINARY_CONST[name], k0, const_first=True))
                cur = c.args[1]
            else:
                return f"{name} of two tensors inside an element-wise chain"
        else:
            return f"{name} is not an element-wise op the LUT can hold"
        names.append(name)
    return "element-wise chain longer than 16 ops"


def build_table(fns: list[Callable], s_in: float, zp_in: int, s_out: float,
                zp_out: int) -> np.ndarray:
    """The 256-entry int8 table of ``quantize(chain(dequantize(q)))`` (index q + 128)."""
    q = np.arange(-128, 128, dtype=np.int64)
    x = ((q - zp_in).astype(np.float32) * np.float32(s_in)).astype(np.float32)
    for f in fns:
        x = np.asarray(f(x)).astype(np.float32)
    y = _round_half_even(x / np.float32(s_out)) + zp_out
    return np.clip(y, -128, 127).astype(np.int8)


# -- describe --------------------------------------------------------------------------------
def describe(root: Any, lookup: Lookup, rnd: Rounding = rounding.DEFAULT
             ) -> tuple[Layer, list[Any]] | str:
    """A matched ``quantize(...)`` expression -> (layer, its int8 input exprs) or a reason;
    requantizing layers get ``rnd``'s multipliers (``attrs["rounding"]``)."""
    q = _call(root, lookup, "relax.quantize")
    if q is None:
        return "does not end in quantize"
    if str(q.attrs.out_dtype) != "int8":
        return f"output is {q.attrs.out_dtype}; the NPU writes int8"
    qp = _scalar_qparams(q, lookup)
    if qp is None:
        return "output is quantized per channel; the NPU writes one scale per tensor"
    out_shape = hwc(_shape(q))
    if isinstance(out_shape, str):
        return out_shape
    out = QTensor(out_shape, *qp)
    y = q.args[0]
    core, lo, hi, clamp_ops = _peel_clamp(y, lookup)
    c = _call(core, lookup)
    name = c.op.name if c is not None else ""
    bias = None
    if name == "relax.add":
        for i in (0, 1):
            inner = _call(c.args[i], lookup)
            if inner is not None and inner.op.name in ("relax.nn.conv2d", "relax.matmul",
                                                       "relax.nn.conv2d_transpose"):
                bias, c, name = c.args[1 - i], inner, inner.op.name
                break
    if name == "relax.nn.conv2d":
        return _conv(c, bias, lo, hi, out, lookup, clamp_ops, rnd)
    if name == "relax.nn.conv2d_transpose":
        return _conv_transpose(c, bias, lo, hi, out, lookup, clamp_ops, rnd)
    if name == "relax.matmul":
        return _gemm(c, bias, lo, hi, out, lookup, clamp_ops, rnd)
    c = _call(y, lookup)
    name = c.op.name if c is not None else ""
    if name in ("relax.add", "relax.multiply"):
        a, b = act_input(c.args[0], lookup), act_input(c.args[1], lookup)
        if not isinstance(a, str) and not isinstance(b, str):
            return _binary(c, a, b, out, rnd)
    if name == "relax.nn.max_pool2d":
        return _maxpool(c, out, lookup)
    if name == "relax.mean":
        return _gap(c, out, lookup, rnd)
    if name == "relax.reshape":
        return _reshape(c, out, lookup)
    if name == "relax.image.resize2d":
        return _resize(c, out, lookup)
    if name == "relax.concat":
        return _concat(c, out, lookup)
    return _lut(y, out, lookup)


def _peel_clamp(y: Any, lookup: Lookup) -> tuple[Any, float, float, list[str]]:
    """relu / clip on top of conv or matmul -> (core, lo, hi, ops)."""
    lo, hi, ops = -math.inf, math.inf, []
    for _ in range(2):
        c = _call(y, lookup)
        if c is None:
            break
        if c.op.name == "relax.nn.relu":
            lo, y = max(lo, 0.0), c.args[0]
        elif c.op.name == "relax.clip":
            lo, hi, y = max(lo, float(c.args[1].value)), min(hi, float(c.args[2].value)), c.args[0]
        else:
            break
        ops.append(c.op.name)
    return y, lo, hi, ops


def _clamp_bounds(lo: float, hi: float, out: QTensor) -> tuple[int, int]:
    qmin = -128 if lo == -math.inf else max(-128, int(np.rint(lo / out.scale)) + out.zp)
    qmax = 127 if hi == math.inf else min(127, int(np.rint(hi / out.scale)) + out.zp)
    return qmin, qmax


def _weights(e: Any, lookup: Lookup, axis: int) -> tuple[np.ndarray, np.ndarray] | str:
    dq = _dq_const(e, lookup)
    if dq is None:
        return "weights are not a dequantized constant"
    q, s, z, ax = dq
    if q.dtype != np.int8:
        return f"weights are {q.dtype}; the NPU multiplies int8"
    if np.any(z != 0):
        return "weights have a non-zero zero point; the NPU needs symmetric weights"
    if s.size > 1 and ax != axis:
        return "weights are quantized along an axis other than the output channels"
    return q, s.reshape(-1)


def _bias(bias: Any, lookup: Lookup, n: int, s_acc: np.ndarray) -> np.ndarray | str:
    """Integer bias at the accumulator scale ``s_in * s_w``."""
    if bias is None:
        return np.zeros(n, dtype=np.int64)
    r = _call(bias, lookup, "relax.reshape")
    b = const_value(r.args[0] if r is not None else bias, lookup)
    if b is None or b.size != n:
        return "bias is not a per-channel constant"
    return np.round(b.reshape(-1).astype(np.float64) / s_acc).astype(np.int64)


def _requant(s_in: float, s_w: np.ndarray, out: QTensor, n: int,
             rnd: Rounding) -> tuple[np.ndarray, np.ndarray]:
    real = rounding.f32_ratio(np.float32(s_in) * s_w.astype(np.float32), out.scale)
    return rounding.multipliers(np.broadcast_to(real, (n,)), rnd)


ConvOperands = tuple[Any, float, int, np.ndarray, np.ndarray, tuple[int, int, int]]


def _conv_operands(c: Any, lookup: Lookup, kernel_layout: str,
                   axis: int) -> ConvOperands | str:
    """A conv2d / conv2d_transpose call's int8 input (expr, scale, zero point), int8
    weights and their scales (output channels on ``axis``) and its HWC input shape."""
    a = act_input(c.args[0], lookup)
    if isinstance(a, str):
        return a
    x, s_in, zp_in = a
    at, op = c.attrs, c.op.name.removeprefix("relax.nn.")
    if str(at.data_layout) != "NCHW" or str(at.kernel_layout) != kernel_layout:
        return (f"{op} layout {at.data_layout}/{at.kernel_layout}; the importer gives "
                f"NCHW/{kernel_layout}")
    w = _weights(c.args[1], lookup, axis=axis)
    if isinstance(w, str):
        return w
    in_shape = hwc(_shape(x))
    if isinstance(in_shape, str):
        return in_shape
    return x, s_in, zp_in, *w, in_shape


def _conv(c: Any, bias: Any, lo: float, hi: float, out: QTensor, lookup: Lookup,
          clamp_ops: list[str], rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    got = _conv_operands(c, lookup, "OIHW", axis=0)
    if isinstance(got, str):
        return got
    x, s_in, zp_in, wq, ws, in_shape = got
    at = c.attrs
    if any(int(d) != 1 for d in at.dilation):
        return "dilated conv2d: the NPU's im2col has no dilation"
    h, wd, cin = in_shape
    cout, _, kh, kw = wq.shape
    groups = int(at.groups)
    depthwise = groups > 1
    if depthwise and not (groups == cin == cout and wq.shape[1] == 1):
        return f"grouped conv2d (groups={groups}) that is not depthwise"
    sh, sw = (int(s) for s in at.strides)
    if kh > 15 or kw > 15:
        return f"kernel {kh}x{kw} exceeds the 15x15 window of CFG"
    if sw > 7 or sh > 7 or (sh != sw and sw != 1):
        return f"stride {sh}x{sw}: the NPU takes equal strides <= 7, or (s, 1)"
    pad = tuple(int(p) for p in at.padding)
    if max(pad) > 7:
        return f"padding {pad} exceeds the 3-bit DMA padding fields"
    conv = Conv(h, wd, cin, cout, kh, kw, sw, pad, depthwise, stride_h=sh)  # type: ignore[arg-type]
    if conv.out_shape != out.shape:
        return f"conv2d output {out.shape} does not match its geometry"
    packed = (wq[:, 0] if depthwise else wq.transpose(0, 2, 3, 1)).astype(np.int8)
    b = _bias(bias, lookup, cout, _acc_scale(s_in, ws, cout))
    if isinstance(b, str):
        return b
    return _conv_layer(conv, x, QTensor(in_shape, s_in, zp_in), wq, packed, ws, b, lo, hi,
                       out, ["relax.nn.conv2d"] + (["relax.add"] if bias is not None else [])
                       + clamp_ops, rnd)


def _acc_scale(s_in: float, ws: np.ndarray, n: int) -> np.ndarray:
    """The accumulator's scale ``s_in * s_w`` per output channel, float64."""
    s_acc = np.float32(s_in) * ws.astype(np.float32)
    return np.broadcast_to(s_acc, (n,)).astype(np.float64)


def _conv_layer(conv: Conv, x: Any, inp: QTensor, wq: np.ndarray, packed: np.ndarray,
                ws: np.ndarray, b: np.ndarray, lo: float, hi: float, out: QTensor,
                ops: list[str], rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    """The conv layer for ``conv``: int8 weights ``wq`` (output channel first; ``packed``
    is how the program reads them), weight scales ``ws`` and integer bias ``b`` per
    output channel of ``conv`` (or one scale)."""
    n = conv.cout
    wsum = wq.astype(np.int64).reshape(n, -1).sum(axis=1)
    bias_folded = b - inp.zp * wsum
    if np.abs(bias_folded).max(initial=0) >= 2**31:
        return "folded bias overflows int32"
    mult, shift = _requant(inp.scale, ws, out, n, rnd)
    qmin, qmax = _clamp_bounds(lo, hi, out)
    layer = Layer("conv", [inp], out,
                  {"conv": conv, "zp_out": out.zp, "qmin": qmin, "qmax": qmax,
                   "rounding": rnd.name.lower()},
                  {"weights": packed, "bias": bias_folded, "mult": mult, "shift": shift}, ops)
    return layer, [x]


def _conv_transpose(c: Any, bias: Any, lo: float, hi: float, out: QTensor, lookup: Lookup,
                    clamp_ops: list[str], rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    """A transposed conv whose kernel equals its stride (no overlap, no padding): one
    1x1 conv computing every output phase (``Conv.phases``)."""
    at = c.attrs
    if int(at.groups) != 1:
        return f"grouped conv2d_transpose (groups={int(at.groups)})"
    got = _conv_operands(c, lookup, "IOHW", axis=1)
    if isinstance(got, str):
        return got
    x, s_in, zp_in, wq, ws, in_shape = got
    h, wd, cin = in_shape
    _, ch, kh, kw = wq.shape
    strides = tuple(int(v) for v in at.strides)
    if (strides != (kh, kw) or kh != kw or any(int(d) != 1 for d in at.dilation)
            or any(int(v) for v in at.padding) or any(int(v) for v in at.output_padding)):
        return (f"conv2d_transpose with kernel {kh}x{kw} and stride {strides[0]}x{strides[1]}"
                " (padding, dilation): the NPU runs kernel == stride, unpadded, as a 1x1 "
                "conv per output phase")
    p = kh
    conv = Conv(h, wd, cin, p * p * ch, phases=p)
    if conv.out_shape != out.shape:
        return f"conv2d_transpose output {out.shape} does not match its geometry"
    b = _bias(bias, lookup, ch, _acc_scale(s_in, ws, ch))
    if isinstance(b, str):
        return b
    # IOHW (cin, ch, i, j) -> output channel n = (i, j, c) of a 1x1 OHWI weight
    w1 = np.ascontiguousarray(wq.transpose(2, 3, 1, 0)).reshape(p * p * ch, 1, 1, cin)
    ws_n = np.tile(np.broadcast_to(ws, (ch,)), p * p)
    return _conv_layer(conv, x, QTensor(in_shape, s_in, zp_in), w1, w1.astype(np.int8),
                       ws_n, np.tile(b, p * p), lo, hi, out,
                       ["relax.nn.conv2d_transpose"]
                       + (["relax.add"] if bias is not None else []) + clamp_ops, rnd)


def _gemm(c: Any, bias: Any, lo: float, hi: float, out: QTensor, lookup: Lookup,
          clamp_ops: list[str], rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    a = act_input(c.args[0], lookup)
    if isinstance(a, str):
        return a
    x, s_in, zp_in = a
    xs = _shape(x)
    if len(xs) == 3 and xs[0] == 1:  # one sequence of tokens
        xs = xs[1:]
    if len(xs) != 2:
        return f"matmul of a rank-{len(xs)} tensor; the NPU's GEMM takes M x K"
    w = _weights(c.args[1], lookup, axis=1)
    if isinstance(w, str):
        return w
    wq, ws = w
    if wq.ndim != 2:
        return "matmul weights are not a K x N matrix"
    m, k = xs
    n = wq.shape[1]
    conv = Conv(m, 1, k, n)
    s_acc = np.broadcast_to(np.float32(s_in) * ws.astype(np.float32), (n,)).astype(np.float64)
    b = _bias(bias, lookup, n, s_acc)
    if isinstance(b, str):
        return b
    bias_folded = b - zp_in * wq.astype(np.int64).sum(axis=0)
    mult, shift = _requant(s_in, ws, out, n, rnd)
    qmin, qmax = _clamp_bounds(lo, hi, out)
    packed = np.ascontiguousarray(wq.T).reshape(n, 1, 1, k).astype(np.int8)
    layer = Layer("conv", [QTensor((m, 1, k), s_in, zp_in)], out,
                  {"conv": conv, "zp_out": out.zp, "qmin": qmin, "qmax": qmax,
                   "rounding": rnd.name.lower()},
                  {"weights": packed, "bias": bias_folded, "mult": mult, "shift": shift},
                  ["relax.matmul"] + (["relax.add"] if bias is not None else []) + clamp_ops)
    return layer, [x]


def _binary(c: Any, a: tuple[Any, float, int], b: tuple[Any, float, int],
            out: QTensor, rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    sa, sb = hwc(_shape(a[0])), hwc(_shape(b[0]))
    if isinstance(sa, str) or isinstance(sb, str):
        return sa if isinstance(sa, str) else str(sb)
    if sa != out.shape:  # put the full-size operand first (both ops commute)
        a, b, sa, sb = b, a, sb, sa
    if sa != out.shape:
        return f"{c.op.name} broadcasts its first operand"
    bcast = sb != sa
    if bcast and sb != (1, 1, sa[2]):
        return f"{c.op.name} broadcast {sb} -> {sa}: only a per-channel vector is supported"
    ta, tb = QTensor(sa, a[1], a[2]), QTensor(sb, b[1], b[2])  # type: ignore[arg-type]
    attrs: dict[str, Any] = {"broadcast": bcast, "zp1": ta.zp, "zp2": tb.zp,
                             "zp_out": out.zp, "qmin": -128, "qmax": 127, "rounding": rnd.name.lower()}
    if c.op.name == "relax.add":
        attrs.update(rounding.add_params(ta.scale, tb.scale, out.scale, rnd))
        kind = "add"
    else:
        mult, shift = rounding.mul_params(ta.scale, tb.scale, out.scale, rnd)
        attrs.update(mult=mult, shift=shift)
        kind = "mul"
    return Layer(kind, [ta, tb], out, attrs, {}, [c.op.name]), [a[0], b[0]]


def _chain_input(
    y: Any, lookup: Lookup
) -> tuple[Any, float, int, Any, list[Callable], list[str]] | str:
    """The int8 input under an element-wise chain: (x, scale, zp, HWC shape, fns, names)."""
    ch = unary_chain(y, lookup)
    if isinstance(ch, str):
        return ch
    dq, fns, names = ch
    found = hwc_input(dq, lookup)
    if isinstance(found, str):
        return found
    x, t = found
    return x, t.scale, t.zp, t.shape, fns, names


def _lut(y: Any, out: QTensor, lookup: Lookup) -> tuple[Layer, list[Any]] | str:
    found = _chain_input(y, lookup)
    if isinstance(found, str):
        return found
    x, s_in, zp_in, shape, fns, names = found
    if shape != out.shape:
        return "element-wise chain changes the shape"
    table = build_table(fns, s_in, zp_in, out.scale, out.zp)
    return Layer("lut", [QTensor(shape, s_in, zp_in)], out, {}, {"table": table}, names), [x]


def _maxpool(c: Any, out: QTensor, lookup: Lookup) -> tuple[Layer, list[Any]] | str:
    at = c.attrs
    found = _chain_input(c.args[0], lookup)
    if isinstance(found, str):
        return found
    x, s_in, zp_in, shape, fns, names = found
    k = [int(v) for v in at.pool_size]
    s = [int(v) for v in at.strides]
    pad = tuple(int(p) for p in at.padding)
    if k[0] != k[1] or s[0] != s[1] or any(int(d) != 1 for d in at.dilation) or bool(at.ceil_mode):
        return "max_pool2d with a non-square window, dilation or ceil mode"
    if str(at.layout) != "NCHW":
        return f"max_pool2d layout {at.layout}"
    table = build_table(fns, s_in, zp_in, out.scale, out.zp)
    if np.any(np.diff(table.astype(np.int64)) < 0):
        return "element-wise chain before max_pool2d is not monotone (max does not commute)"
    identity = bool(np.array_equal(table, np.arange(-128, 128)))
    attrs = {"k": k[0], "stride": s[0], "pad": pad}
    arrays = {} if identity else {"table": table}
    return (Layer("maxpool", [QTensor(shape, s_in, zp_in)], out, attrs, arrays,
                  names + ["relax.nn.max_pool2d"]), [x])


def _gap(c: Any, out: QTensor, lookup: Lookup, rnd: Rounding) -> tuple[Layer, list[Any]] | str:
    a = act_input(c.args[0], lookup)
    if isinstance(a, str):
        return a
    x, s_in, zp_in = a
    xs = _shape(x)
    axes = sorted(int(v) % len(xs) for v in c.attrs.axis)
    if len(xs) != 4 or axes != [2, 3]:
        return "mean over axes other than H, W"
    shape = hwc(xs)
    if isinstance(shape, str):
        return shape
    h, w, ch = shape
    p = h * w
    # ONNX Runtime's QLinearGlobalAveragePool: ScaleInput / (ScaleOutput * P) in float32
    m, t = rounding.multipliers(rounding.f32_ratio(s_in, np.float32(out.scale) * np.float32(p)),
                                rnd)
    mult, shift = int(m), int(t)
    conv = Conv(1, 1, p, ch)  # ones(1 x P) @ X(P x C), X read in place as weights
    attrs = {"conv": conv, "zp_out": out.zp, "qmin": -128, "qmax": 127,
             "rounding": rnd.name.lower()}
    arrays = {"bias": np.full(ch, -zp_in * p, dtype=np.int64),
              "mult": np.full(ch, mult, dtype=np.int64), "shift": np.full(ch, shift, dtype=np.int64)}
    return Layer("gap", [QTensor(shape, s_in, zp_in)], out, attrs, arrays, ["relax.mean"]), [x]


def _reshape(c: Any, out: QTensor, lookup: Lookup) -> tuple[Layer, list[Any]] | str:
    found = hwc_input(c.args[0], lookup)
    if isinstance(found, str):
        return found
    x, inp = found
    shape = inp.shape
    if shape[0] * shape[1] != 1 and shape != out.shape:
        return "reshape moves bytes in HWC"
    if out.shape[0] * out.shape[1] != 1 and shape != out.shape:
        return "reshape moves bytes in HWC"
    table = build_table([], inp.scale, inp.zp, out.scale, out.zp)
    if np.array_equal(table, np.arange(-128, 128)):
        return Layer("alias", [inp], out, {}, {}, ["relax.reshape"]), [x]
    return Layer("lut", [inp], out, {}, {"table": table}, ["relax.reshape"]), [x]


def _resize(c: Any, out: QTensor, lookup: Lookup) -> tuple[Layer, list[Any]] | str:
    """Nearest upsampling by an integer factor (ONNX Resize, asymmetric / floor): the
    DMA repeats pixels; a LUT maps the values when the output's scale differs."""
    at = c.attrs
    if str(at.method) != "nearest_neighbor":
        return f"resize by {at.method}: the NPU repeats pixels (nearest only)"
    if (str(at.coordinate_transformation_mode), str(at.rounding_method)) != ("asymmetric",
                                                                            "floor"):
        return (f"nearest resize with {at.coordinate_transformation_mode} / "
                f"{at.rounding_method} coordinates (the NPU repeats pixels: asymmetric, floor)")
    found = hwc_input(c.args[0], lookup)
    if isinstance(found, str):
        return found
    x, t = found
    (h, w, ch), (oh, ow, oc) = t.shape, out.shape
    if oc != ch or oh % h or ow % w or oh // h != ow // w:
        return f"resize {h}x{w} -> {oh}x{ow}: not one integer factor for both axes"
    table = build_table([], t.scale, t.zp, out.scale, out.zp)
    arrays = {} if np.array_equal(table, np.arange(-128, 128)) else {"table": table}
    return (Layer("resize", [t], out, {"factor": oh // h}, arrays,
                  ["relax.image.resize2d"]), [x])


def _concat(c: Any, out: QTensor, lookup: Lookup) -> tuple[Layer, list[Any]] | str:
    """Concatenation along channels (NCHW axis 1): each input is stored at its channel
    offset, through a LUT to the output's scale (the QDQ graph's dequantize / quantize)."""
    tup = _val(c.args[0], lookup)
    fields = getattr(tup, "fields", None)
    if fields is None:
        return "concat of a tuple the pattern cannot see"
    rank = len(_shape(c))
    if c.attrs.axis is None or rank != 4 or int(c.attrs.axis) % rank != 1:
        return "concat along an axis other than channels"
    ins, xs, tables = [], [], {}
    for i, f in enumerate(fields):
        found = hwc_input(f, lookup)
        if isinstance(found, str):
            return found
        x, t = found
        ins.append(t)
        xs.append(x)
        tables[f"table{i}"] = build_table([], t.scale, t.zp, out.scale, out.zp)
    if any(t.shape[:2] != out.shape[:2] for t in ins):
        return "concat of tensors with different heights or widths"
    return Layer("concat", ins, out, {}, tables, ["relax.concat"]), xs
