"""int8 matmuls and convs with constant weights, rewritten for ``vpdpbusd`` (u8 x s8 bytes).

Matches ``R.matmul(x, W, out_dtype="int32")`` with ``x`` an int8 tensor, ``W`` a
constant int8 ``[K, N]`` matrix, ``K % 4 == 0`` and ``N % 16 == 0``, on targets with
AVX512-VNNI (``vnni.has_vnni``). Emits

    xu  = astype(astype(x, "int32") + 128, "uint8")          # once per distinct x
    acc = R.matmul(xu, W, out_dtype="int32") + c              # c[n] = -128 * sum_k W[k, n]

which is the same integer: ``sum_k (x + 128) W = sum_k x W + 128 sum_k W``, with no
rounding anywhere (int32 holds ``K * 255 * 128`` for any K below 65,000). VNNI's
instruction wants the activation unsigned; the shift costs one byte-wise pass over
``x``, shared by the Q, K and V projections that read the same ``x``. The
``MatmulVNNI`` schedule rule then tensorizes the new matmul.

int8 convolutions (NCHW, one group, constant OIHW weights) get the same shift, and
their input's channels are packed four at a time so that each pixel's four channels
are one 32-bit word. The pad in front (the quantize lowering pads with the zero
point), the shift and the packing are one stage of the conv's own kernel::

    xp[n, c/4, y, x, c%4] = uint8(pad(x, zp)[n, c, y, x] + 128)
    acc = conv2d_u8s8(xp, Wp) + c                    # Wp[f, c/4, ry, rx, c%4]; c[f] = -128 sum W[f]

``ConvVNNI`` computes ``xp`` tile by tile where the conv reads it (no pass over the
whole input, no kernel launch of its own: PP-OCR cls in int8 went from 84 kernels to 68)
and runs the conv on ``vpdpbusd`` with sixteen output pixels per instruction, which
needs ``C % 4 == 0``, a horizontal stride of 1 and an output width that is a
multiple of 16. A 1x1 stride-1 conv on a map whose width is not (PP-OCRv4 det's
40x40 and 20x20) runs over the map flattened to 1 x H*W when that area is, and its
output is reshaped back: measured on det, the generic int8 matmul took 3.3 ms for
four 192 -> 192 convs at 40x40, this 1.3 ms.
"""

from __future__ import annotations

import numpy as np
import tvm
from edgec.passes._rules import const_value
from edgec.targets.cpu.common import rewrite_relax_functions
from edgec.targets.cpu.conv_transpose import out_dtype_of, static_shape
from edgec.targets.cpu.pad_into_conv import spatial_pad
from edgec.targets.cpu.vnni import GROUP, LANES, has_vnni
from tvm import relax, te
from tvm.relax import op as R
from tvm.target import Target

SHIFT = 128  # int8 + 128 = uint8


def _weights(call: relax.Call) -> np.ndarray | None:
    """The constant int8 ``[K, N]`` weight of a matmul worth rewriting, else None."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.matmul":
        return None
    x, w = call.args
    value = const_value(w)
    if out_dtype_of(call) != "int32" or value is None or value.dtype != np.int8:
        return None
    if static_shape(x) is None or str(x.ty.dtype) != "int8":
        return None
    if value.ndim != 2 or value.shape[0] % GROUP or value.shape[1] % LANES:
        return None
    return value


def _conv_weights(call: relax.Call) -> tuple[np.ndarray, bool] | None:
    """The constant int8 OIHW weight of a conv2d worth rewriting and whether it runs
    over the flattened map (``_flattens``), else None."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return None
    a = call.attrs
    x, w = call.args
    value = const_value(w)
    if out_dtype_of(call) != "int32" or value is None or value.dtype != np.int8:
        return None
    shape = static_shape(x)
    if shape is None or str(x.ty.dtype) != "int8" or value.ndim != 4 or len(shape) != 4:
        return None
    if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or (a.out_layout or "NCHW") != "NCHW":
        return None
    if int(a.groups) != 1 or any(int(p) for p in a.padding) or int(a.strides[1]) != 1:
        return None
    out_width = shape[3] - int(a.dilation[1]) * (value.shape[3] - 1)
    flat = out_width % LANES != 0
    if shape[1] % GROUP or (flat and not _flattens(call, shape, value)):
        return None
    return value, flat


def _flattens(call: relax.Call, shape: list[int], w: np.ndarray) -> bool:
    """True for a 1x1 stride-1 conv whose map is no whole vectors wide but is in area
    (PP-OCRv4 det's 40x40 and 20x20 maps): it runs as a conv over a 1 x H*W map."""
    a = call.attrs
    plain = [int(s) for s in a.strides] == [1, 1] and [int(d) for d in a.dilation] == [1, 1]
    return plain and w.shape[2:] == (1, 1) and (shape[2] * shape[3]) % LANES == 0


def conv2d_u8s8(x: te.Tensor, w: te.Tensor, pad: tuple[int, int, int, int], pad_value: int,
                strides: tuple[int, int], dilation: tuple[int, int], flat: bool) -> te.Tensor:
    """The int8 NCHW ``x`` padded with ``pad_value`` (``pad``: top, bottom, left, right),
    shifted to uint8 and packed (``packed[n, c/4, y, x, c%4]``; ``flat``: over the map
    flattened to one row), then ``out[n, f, y, x] = sum packed[n, c4, y sh + ry dh,
    x + rx dw, ci] * w[f, c4, ry, rx, ci]`` in int32, over channel groups ``c4``, the
    kernel window, and the four channels ``ci`` of a group (innermost: one ``vpdpbusd``
    step)."""
    n, c, h, wd = (int(d) for d in x.shape)
    top, bottom, left, right = pad
    ph, pw = h + top + bottom, wd + left + right

    def pack(b, c4, y, x_, ci):
        if flat:
            y, x_ = x_ // pw, x_ % pw
        yy, xx = y - top, x_ - left
        value = x[b, c4 * GROUP + ci, yy, xx]
        if any(pad):
            inside = tvm.tirx.all(yy >= 0, yy < h, xx >= 0, xx < wd)
            value = tvm.tirx.if_then_else(inside, value, tvm.tirx.const(pad_value, "int8"))
        return (value.astype("int32") + SHIFT).astype("uint8")

    shape = (n, c // GROUP, 1, ph * pw, GROUP) if flat else (n, c // GROUP, ph, pw, GROUP)
    xp = te.compute(shape, pack, name="packed")
    _, c4, hp, wp, g = shape
    f, _, kh, kw, _ = (int(d) for d in w.shape)
    (sh, sw), (dh, dw) = strides, dilation
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    rc = te.reduce_axis((0, c4), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    ri = te.reduce_axis((0, g), "ri")
    return te.compute(
        (n, f, oh, ow),
        lambda b, o, y, x_: te.sum(
            xp[b, rc, y * sh + ry * dh, x_ * sw + rx * dw, ri].astype("int32")
            * w[o, rc, ry, rx, ri].astype("int32"),
            axis=[rc, ry, rx, ri]),
        name="conv2d_u8s8",
    )


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.shifted: dict[relax.Expr, relax.Var] = {}
        self.fired = 0

    # A shifted copy is shared within its block only: a dataflow var is not visible
    # outside the block that binds it.
    def visit_binding_block_(self, block: relax.BindingBlock) -> relax.BindingBlock:
        self.shifted = {}
        return super().visit_binding_block_(block)

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.BindingBlock:
        self.shifted = {}
        return super().visit_dataflow_block_(block)

    def _shift(self, x: relax.Expr) -> relax.Var:
        xu = self.shifted.get(x)
        if xu is None:
            xu = self.builder_.emit(R.astype(
                R.add(R.astype(x, "int32"), relax.const(SHIFT, "int32")), "uint8"))
            self.shifted[x] = xu
        return xu

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        w = _weights(call)
        if w is not None:
            acc = self.builder_.emit(R.matmul(self._shift(call.args[0]), call.args[1],
                                              out_dtype="int32"))
            comp = (-SHIFT * w.astype(np.int64).sum(axis=0)).astype(np.int32)
            self.fired += 1
            return R.add(acc, relax.const(comp))
        found = _conv_weights(call)
        if found is None:
            return call
        w, flat = found
        n, _, h, wd = static_shape(call.args[0])  # type: ignore[misc]
        pad = spatial_pad(call.args[0], self)
        x, widths, value = call.args[0], (0, 0, 0, 0), 0
        fill = float(pad.attrs.pad_value) if pad is not None else 0.0
        if pad is not None and fill.is_integer() and -128 <= fill <= 127:  # an int8 zero point
            x, widths = pad.args[0], tuple(int(v) for v in pad.attrs.pad_width)[4:]
            value = int(fill)
        f, c, kh, kw = w.shape
        wp = w.reshape(f, c // GROUP, GROUP, kh, kw).transpose(0, 1, 3, 4, 2)
        a = call.attrs
        acc = self.builder_.call_te(
            conv2d_u8s8, x, relax.const(np.ascontiguousarray(wp)), widths, value,
            tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation), flat,
            primfunc_name_hint="conv2d_u8s8")
        comp = (-SHIFT * w.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)
        self.fired += 1
        acc = R.add(acc, relax.const(comp.reshape(1, f, 1, 1)))
        return R.reshape(self.builder_.emit(acc), (n, f, h, wd)) if flat else acc


@tvm.transform.module_pass(opt_level=0, name="edgec.UnsignedInt8Matmul")
class UnsignedInt8Matmul:
    """Give int8 matmuls and convs with constant weights a uint8 activation (see module).

    Reads the current target (``with target:``); on targets without AVX512-VNNI it
    leaves the module unchanged.
    """

    def __init__(self) -> None:
        self.fired = 0  # matmuls rewritten in the last run

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = Target.current(allow_none=True)
        self.fired = 0
        if target is None or not has_vnni(target):
            return mod
        rewriter = _Rewriter(mod)
        # The convs read through their pads: a pad with no other reader is dead.
        out = rewrite_relax_functions(mod, rewriter, drop_dead=True)
        self.fired = rewriter.fired
        return out
