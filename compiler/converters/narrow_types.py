"""Element types narrower than a byte, or without IEEE semantics: float8 (e4m3fn,
e4m3fnuz, e5m2, e5m2fnuz), float4 e2m1, int4/uint4, int2/uint2. TVM 0.27 cannot hold
the 4- and 2-bit ones, and its float8 casts neither round nor saturate as ONNX says
(1e6 -> e4m3fn gives -15), so these are rewritten into plain ONNX before import:

- **storage**: a narrow float is carried as its bit pattern in a uint8; a narrow integer
  as its value in an int8 (signed) or uint8.
- **decode** (narrow float -> float32): ``Gather(TABLE, bits)`` over the format's 256
  (or 16) values.
- **encode** (float32 -> narrow float): round to nearest, ties to even, by counting the
  midpoints between representable magnitudes that ``|x|`` exceeds
  (``code = sum(|x| > mid_k) + sum(|x| == mid_k and k odd)``), then the sign, overflow
  (saturate to the largest finite value, or inf/NaN as the format has it) and NaN codes.
  Integers: truncate to int32, then wrap into the type's range (``(v - lo) mod 2^bits + lo``).
- **nodes**: ``Cast``/``CastLike`` to or from these types, ``DequantizeLinear`` and
  ``QuantizeLinear`` with per-tensor scales. Any other node touching such a value makes
  the rewrite refuse (the importer then reports the type as unsupported).

Every table and special code (NaN, overflow, negative zero) is read from ml_dtypes, the
library ONNX itself uses to define these types, so edgec encodes no format by hand.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

P = TensorProto


@dataclass(frozen=True)
class Narrow:
    """One narrow ONNX element type and how edgec stores it."""

    onnx_type: int
    storage: int  # ONNX element type of the carrier tensor
    is_float: bool
    bits: int

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.onnx_type))

    @property
    def storage_np(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.storage))


NARROW: dict[int, Narrow] = {
    n.onnx_type: n
    for n in (
        Narrow(P.FLOAT8E4M3FN, P.UINT8, True, 8),
        Narrow(P.FLOAT8E4M3FNUZ, P.UINT8, True, 8),
        Narrow(P.FLOAT8E5M2, P.UINT8, True, 8),
        Narrow(P.FLOAT8E5M2FNUZ, P.UINT8, True, 8),
        Narrow(P.FLOAT4E2M1, P.UINT8, True, 4),
        Narrow(P.INT4, P.INT8, False, 4),
        Narrow(P.UINT4, P.UINT8, False, 4),
        Narrow(P.INT2, P.INT8, False, 2),
        Narrow(P.UINT2, P.UINT8, False, 2),
    )
}
_FP8 = {P.FLOAT8E4M3FN, P.FLOAT8E4M3FNUZ, P.FLOAT8E5M2, P.FLOAT8E5M2FNUZ}


class NotRewritable(Exception):
    """The graph uses a narrow type in a way this module does not lower."""


# ---------------------------------------------------------------------------- arrays


def to_storage(array: np.ndarray, fmt: Narrow) -> np.ndarray:
    """An ml_dtypes array of ``fmt`` -> its carrier array (bits or values)."""
    array = np.asarray(array)
    if fmt.is_float:
        return array.astype(fmt.np_dtype).view(np.uint8)
    return array.astype(fmt.storage_np)


def from_storage(array: np.ndarray, fmt: Narrow) -> np.ndarray:
    """A carrier array -> the ml_dtypes array it stands for."""
    array = np.asarray(array)
    if fmt.is_float:
        return array.astype(np.uint8).view(fmt.np_dtype)
    return array.astype(fmt.np_dtype)


# ---------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _FloatTable:
    values: np.ndarray  # float32 value of every code
    mids: np.ndarray  # midpoints between consecutive magnitudes, then the overflow one
    tie_up: np.ndarray  # bool per midpoint: a tie rounds up (the lower code is odd)
    top: int  # number of finite magnitudes (the code past the largest is ``top``)
    sign: int  # sign bit
    nan: int
    inf_pos: int  # code for +overflow without saturation (inf, NaN or max, per format)
    inf_neg: int
    neg_zero: int


@cache
def _float_table(onnx_type: int) -> _FloatTable:
    fmt = NARROW[onnx_type]
    dtype = fmt.np_dtype
    codes = np.arange(2**fmt.bits, dtype=np.uint8)
    values = codes.view(dtype).astype(np.float32)
    sign = 1 << (fmt.bits - 1)
    # Magnitudes grow with the code up to the largest finite value.
    mags = values[:sign]
    top = int(np.argmax(~np.isfinite(mags))) if not np.all(np.isfinite(mags)) else sign
    mags = mags[:top].astype(np.float64)
    mids = (mags[1:] + mags[:-1]) / 2
    over = mags[-1] + (mags[-1] - mags[-2]) / 2
    mids = np.append(mids, over).astype(np.float32)
    assert np.all(mids.astype(np.float64) == np.append((mags[1:] + mags[:-1]) / 2, over))

    def code(x: float) -> int:
        return int(np.array([x], np.float32).astype(dtype).view(np.uint8)[0])

    return _FloatTable(
        values=values,
        mids=mids,
        tie_up=(np.arange(top) % 2 == 1),
        top=top,
        sign=sign,
        nan=code(float("nan")),
        inf_pos=code(float("inf")),
        inf_neg=code(float("-inf")),
        neg_zero=code(-0.0),
    )


# ---------------------------------------------------------------------------- graph building


class _Builder:
    """Appends nodes and constants with fresh names."""

    def __init__(self, taken: set[str]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self._taken = taken
        self._count = itertools.count()

    def name(self, hint: str) -> str:
        while True:
            name = f"_narrow_{hint}_{next(self._count)}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value: np.ndarray | float | list[int], dtype: type | np.dtype) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _decode(b: _Builder, bits: str, fmt: Narrow) -> str:
    """Carrier -> float32 values."""
    if not fmt.is_float:
        return b.op("Cast", [bits], to=P.FLOAT)
    table = b.const(_float_table(fmt.onnx_type).values, np.float32)
    return b.op("Gather", [table, b.op("Cast", [bits], to=P.INT64)])


def _encode(b: _Builder, x: str, fmt: Narrow, saturate: bool, out: str | None = None) -> str:
    """float32 values -> carrier (round to nearest even, then the format's special codes)."""
    if not fmt.is_float:
        lo = -(1 << (fmt.bits - 1)) if fmt.storage == P.INT8 else 0
        t = b.op("Cast", [x], to=P.INT32)
        shifted = b.op("Sub", [t, b.const(lo, np.int32)])
        wrapped = b.op("Mod", [shifted, b.const(1 << fmt.bits, np.int32)], fmod=0)
        return b.op("Cast", [b.op("Add", [wrapped, b.const(lo, np.int32)])], out, to=fmt.storage)
    tab = _float_table(fmt.onnx_type)
    i32 = np.int32
    mag = b.op("Unsqueeze", [b.op("Abs", [x]), b.const([-1], np.int64)])
    mids = b.const(tab.mids, np.float32)
    above = b.op("Cast", [b.op("Greater", [mag, mids])], to=P.INT32)
    tie = b.op("And", [b.op("Equal", [mag, mids]), b.const(tab.tie_up, np.bool_)])
    steps = b.op("Add", [above, b.op("Cast", [tie], to=P.INT32)])
    idx = b.op("ReduceSum", [steps, b.const([-1], np.int64)], keepdims=0)
    zero = b.const(0.0, np.float32)
    # x < 0, or x is -0.0 (1 / -0.0 = -inf).
    neg = b.op("Or", [b.op("Less", [x, zero]),
                      b.op("Less", [b.op("Div", [b.const(1.0, np.float32), x]), zero])])
    signed = b.op("Where", [b.op("Equal", [idx, b.const(0, i32)]), b.const(tab.neg_zero, i32),
                            b.op("Add", [idx, b.const(tab.sign, i32)])])
    code = b.op("Where", [neg, signed, idx])
    top = tab.top - 1 if saturate else None
    over_pos = b.const(top if top is not None else tab.inf_pos, i32)
    over_neg = b.const(top + tab.sign if top is not None else tab.inf_neg, i32)
    over = b.op("Where", [neg, over_neg, over_pos])
    code = b.op("Where", [b.op("Equal", [idx, b.const(tab.top, i32)]), over, code])
    code = b.op("Where", [b.op("IsNaN", [x]), b.const(tab.nan, i32), code])
    return b.op("Cast", [code], out, to=P.UINT8)


# ---------------------------------------------------------------------------- rewrite


def uses_narrow(model: onnx.ModelProto) -> bool:
    """Whether any graph input, output, initializer or Cast target is a narrow type."""
    g = model.graph
    types = [v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]]
    types += [t.data_type for t in g.initializer]
    for node in g.node:
        for a in node.attribute:
            if a.name in ("to", "output_dtype") and a.type == onnx.AttributeProto.INT:
                types.append(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                types.append(a.t.data_type)
    return any(t in NARROW for t in types)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001  onnx raises several types; all mean "cannot type it"
        raise NotRewritable(f"shape inference failed: {exc}") from None
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _is_scalar(model: onnx.ModelProto, name: str) -> bool:
    for t in model.graph.initializer:
        if t.name == name:
            return int(np.prod(t.dims)) == 1
    return False


def lower(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Narrow]]:
    """Rewrite narrow types into carriers; return the model and the narrow graph I/O.

    Raises ``NotRewritable`` when a narrow value reaches a node not listed above.
    """
    if not uses_narrow(model):
        return model, {}
    if any(o.domain in ("", "ai.onnx") and o.version < 13 for o in model.opset_import):
        raise NotRewritable("needs opset 13 or newer")
    types = _types(model)
    g = model.graph
    taken = {v for n in g.node for v in [*n.input, *n.output]}
    taken |= {v.name for v in [*g.input, *g.output]} | {t.name for t in g.initializer}
    b = _Builder(taken)

    def narrow(name: str) -> Narrow | None:
        return NARROW.get(types.get(name, 0)) if name else None

    for node in g.node:
        ins = list(node.input)
        fmts = [narrow(v) for v in [*node.input, *node.output]]
        op = node.op_type
        if op == "CastLike":
            op, to = "Cast", types.get(ins[1], 0)
            ins = ins[:1]
        else:
            to = _attr(node, "to", 0)
        if not any(fmts) and not (op == "Cast" and to in NARROW):
            b.nodes.append(node)
            continue
        saturate = bool(_attr(node, "saturate", 1))
        out = node.output[0]
        if op == "Cast":
            src, dst = narrow(ins[0]), NARROW.get(to)
            x = _decode(b, ins[0], src) if src else ins[0]
            if dst is None:
                b.op("Cast", [x], out, to=to)
            else:
                if not src and types.get(x) != P.FLOAT:
                    x = b.op("Cast", [x], to=P.FLOAT)
                _encode(b, x, dst, saturate and to in _FP8, out)
        elif op == "DequantizeLinear" and narrow(ins[0]):
            fmt = narrow(ins[0])
            assert fmt is not None
            if not fmt.is_float:
                b.nodes.append(node)  # carriers hold the same integers
                continue
            if not _is_scalar(model, ins[1]):
                raise NotRewritable("float8 DequantizeLinear with a per-axis scale")
            scale_type = types.get(ins[1], P.FLOAT)
            x = b.op("Cast", [_decode(b, ins[0], fmt)], to=scale_type)
            if len(ins) > 2 and ins[2]:
                zp = b.op("Cast", [_decode(b, ins[2], fmt)], to=scale_type)
                x = b.op("Sub", [x, zp])
            b.op("Mul", [x, ins[1]], out)
        elif op == "QuantizeLinear" and narrow(out):
            fmt = narrow(out)
            assert fmt is not None
            if not fmt.is_float:
                lo, hi = (-(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1) \
                    if fmt.storage == P.INT8 else (0, (1 << fmt.bits) - 1)
                q = helper.make_node(op, ins, [b.name("q")], name=node.name)
                for a in node.attribute:
                    if a.name == "output_dtype":
                        q.attribute.append(helper.make_attribute("output_dtype", fmt.storage))
                    else:
                        q.attribute.append(a)
                b.nodes.append(q)
                # The carrier saturates at int8's range; the type's is narrower.
                np_t = fmt.storage_np
                lo_c, hi_c = b.const(lo, np_t), b.const(hi, np_t)
                b.op("Min", [b.op("Max", [q.output[0], lo_c]), hi_c], out)
                continue
            if not _is_scalar(model, ins[1]):
                raise NotRewritable("float8 QuantizeLinear with a per-axis scale")
            x = b.op("Div", [b.op("Cast", [ins[0]], to=P.FLOAT),
                             b.op("Cast", [ins[1]], to=P.FLOAT)])
            if len(ins) > 2 and ins[2]:
                x = b.op("Add", [x, _decode(b, ins[2], fmt)])
            _encode(b, x, fmt, saturate and fmt.onnx_type in _FP8, out)
        else:
            raise NotRewritable(f"{node.op_type} on a narrow type")

    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    og = out_model.graph
    del og.node[:]
    og.node.extend(b.nodes)
    del og.value_info[:]
    io: dict[str, Narrow] = {}
    for v in [*og.input, *og.output]:
        fmt = NARROW.get(v.type.tensor_type.elem_type)
        if fmt is not None:
            v.type.tensor_type.elem_type = fmt.storage
            io[v.name] = fmt
    for i, t in enumerate(og.initializer):
        fmt = NARROW.get(t.data_type)
        if fmt is not None:
            og.initializer[i].CopyFrom(
                numpy_helper.from_array(to_storage(numpy_helper.to_array(t), fmt), t.name))
    og.initializer.extend(b.inits)
    return out_model, io
