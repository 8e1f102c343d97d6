"""Explicit constant pads in front of a conv2d, folded back into the conv's kernel.

The int8 lowering pads a quantized input with its zero point, not 0
(``R.nn.pad(xq, zp)`` then ``R.nn.conv2d(..., padding=0)``), and an ONNX Pad in
front of a Conv imports the same way. FuseOps never fuses a producer into a conv,
so the pad runs as a kernel of its own: one more pass over the input and one
more launch (PP-OCR cls in int8: seven pads, about a tenth of the model's time).

Matches ``conv2d(pad(x, [0, 0, 0, 0, t, b, l, r], "constant", v), W)`` with NCHW
data, OIHW weights and no padding left in the conv, and emits one TE kernel

    pad_temp[n, c, y, x] = x[n, c, y - t, x - l] inside, v outside
    out = conv2d(pad_temp, W)          # any groups, strides and dilation

which is the shape of TVM's own legalized conv2d (a padding block and the
reduction) with ``v`` as the padding value: the conv schedules (depthwise bands,
register tiles) compute the padded input where they use it, as they do for a
float conv. The int8 convs that ``UnsignedInt8Matmul`` rewrites for VNNI pad in the
packing stage of their own kernel and are not matched here (their pad is gone by then).
"""

from __future__ import annotations

import tvm
from edgec.targets.cpu.common import rewrite_relax_functions
from edgec.targets.cpu.conv_transpose import out_dtype_of, static_shape
from tvm import relax, te, topi


def spatial_pad(x: relax.Expr, lookup: relax.PyExprMutator) -> relax.Call | None:
    """The ``R.nn.pad`` binding of ``x`` if it pads an NCHW tensor's H and W with a
    constant (what a conv's own padding does), else None."""
    if not isinstance(x, relax.Var):
        return None
    pad = lookup.lookup_binding(x)
    if not isinstance(pad, relax.Call) or not isinstance(pad.op, tvm.ir.Op):
        return None
    if pad.op.name != "relax.nn.pad" or pad.attrs.pad_mode != "constant":
        return None
    widths = [int(w) for w in pad.attrs.pad_width]
    if len(widths) != 8 or any(widths[:4]) or static_shape(pad.args[0]) is None:
        return None
    return pad


def _pad_of(call: relax.Call, lookup: relax.PyExprMutator) -> relax.Call | None:
    """The constant spatial pad feeding ``call`` (a conv2d worth folding), else None."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return None
    a = call.attrs
    if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or (a.out_layout or "NCHW") != "NCHW":
        return None
    if any(int(p) for p in a.padding):
        return None
    return spatial_pad(call.args[0], lookup)


def padded_conv2d(x: te.Tensor, w: te.Tensor, pad: tuple[int, int, int, int], value: float,
                  strides: tuple[int, int], dilation: tuple[int, int], groups: int,
                  out_dtype: str | None) -> te.Tensor:
    """NCHW/OIHW ``conv2d(pad(x, (top, bottom, left, right), value), w)`` as TE, in
    ``out_dtype`` (None: ``x``'s)."""
    top, bottom, left, right = pad
    out_dtype = out_dtype or str(x.dtype)
    xp = topi.nn.pad(x, [0, 0, top, left], [0, 0, bottom, right],
                     pad_value=tvm.tirx.const(value, x.dtype), name="pad_temp")
    n, _, h, wd = (int(d) for d in xp.shape)
    f, cg, kh, kw = (int(d) for d in w.shape)
    (sh, sw), (dh, dw) = strides, dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (wd - dw * (kw - 1) - 1) // sw + 1
    per_group = f // groups
    rc = te.reduce_axis((0, cg), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")

    def body(b, o, y, x_):
        ch = rc if groups == 1 else o // per_group * cg + rc
        return te.sum(xp[b, ch, y * sh + ry * dh, x_ * sw + rx * dw].astype(out_dtype)
                      * w[o, rc, ry, rx].astype(out_dtype), axis=[rc, ry, rx])

    name = "conv2d_nchw" if groups == 1 else "group_conv2d_nchw"
    return te.compute((n, f, oh, ow), body, name=name)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.fired = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        pad = _pad_of(call, self)
        if pad is None:
            return call
        a = call.attrs
        widths = [int(w) for w in pad.attrs.pad_width]
        self.fired += 1
        return self.builder_.call_te(
            padded_conv2d, pad.args[0], call.args[1], tuple(widths[4:]),
            float(pad.attrs.pad_value), tuple(int(s) for s in a.strides),
            tuple(int(d) for d in a.dilation), int(a.groups),
            out_dtype_of(call), primfunc_name_hint="conv2d")


@tvm.transform.module_pass(opt_level=0, name="edgec.FoldPadIntoConv")
class FoldPadIntoConv:
    """Fold constant spatial pads into the conv2d they feed (see module).

    The pad's binding stays for any other reader; one left with none is removed.
    """

    def __init__(self) -> None:
        self.fired = 0  # convs folded in the last run

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        out = rewrite_relax_functions(mod, rewriter, drop_dead=True)
        self.fired = rewriter.fired
        return out
