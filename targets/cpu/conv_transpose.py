"""Upsampling transposed convs (stride == kernel) as a 1x1 conv plus depth-to-space.

Matches ``R.nn.conv2d_transpose`` in NCHW / IOHW with ``stride == kernel == (s, t)``,
no padding, no output padding, dilation 1 and one group (PP-OCR det's FPN head).
There each output pixel gets exactly one kernel tap,

    out[n, f, y*s + i, x*t + j] = sum_c in[n, c, y, x] * W[c, f, i, j]

so the op is a 1x1 conv with ``F*s*t`` output channels followed by a pixel shuffle:

    W2 = reshape(permute_dims(W, [1, 2, 3, 0]), (F*s*t, C, 1, 1))   # folded if W is constant
    z = conv2d(in, W2)                                               # (N, F*s*t, H, W)
    out = reshape(permute_dims(reshape(z, (N, F, s, t, H, W)), [0, 1, 4, 2, 5, 3]),
                  (N, F, H*s, W*t))

TVM's legalization instead dilates the input with zeros and runs an ``s x t`` conv
over it: ``s*t`` times the multiply-adds (all but one per output hit a zero) plus two
passes over a buffer the size of the output. Same products, same summation order over
``c``, so the result is bit-identical up to FMA contraction.
"""

from __future__ import annotations

import tvm
from edgec.targets.cpu.common import rewrite_relax_functions
from tvm import relax
from tvm.relax import op as R


def _ints(values: object) -> list[int]:
    return [int(v) for v in values]  # type: ignore[attr-defined]


def static_shape(expr: relax.Expr) -> list[int] | None:
    """Static shape of a tensor expression (None if unknown or symbolic)."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except (TypeError, AttributeError):
        return None


def out_dtype_of(call: relax.Call) -> str | None:
    """The op's explicit ``out_dtype``, or None when it follows the inputs."""
    dtype = str(call.attrs.out_dtype)
    return None if dtype in ("", "void", "None") else dtype


def _why_not(call: relax.Call) -> str:
    """Why ``call`` is not an upsampling transposed conv ("" if it is)."""
    a = call.attrs
    w_shape, x_shape = static_shape(call.args[1]), static_shape(call.args[0])
    if w_shape is None or x_shape is None:
        return "dynamic shape"
    if len(w_shape) != 4 or len(x_shape) != 4:
        return "not 2-d"
    if a.data_layout != "NCHW" or a.kernel_layout != "IOHW" or (a.out_layout or "NCHW") != "NCHW":
        return "layout is not NCHW/IOHW"
    if int(a.groups) != 1:
        return "grouped"
    if _ints(a.strides) != w_shape[2:]:
        return "stride differs from kernel size"
    if any(_ints(a.padding)) or any(_ints(a.output_padding)) or _ints(a.dilation) != [1, 1]:
        return "padded or dilated"
    return ""


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.fired = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d_transpose":
            return call
        if _why_not(call):
            return call
        x, w = call.args
        n, _c, h, wd = static_shape(x)  # type: ignore[misc]
        c, f, s, t = static_shape(w)  # type: ignore[misc]
        w2 = R.reshape(R.permute_dims(w, [1, 2, 3, 0]), (f * s * t, c, 1, 1))
        out_dtype = out_dtype_of(call)
        z = self.builder_.emit(R.nn.conv2d(x, self.builder_.emit(w2), out_dtype=out_dtype))
        z = self.builder_.emit(R.reshape(z, (n, f, s, t, h, wd)))
        z = self.builder_.emit(R.permute_dims(z, [0, 1, 4, 2, 5, 3]))
        self.fired += 1
        return R.reshape(z, (n, f, h * s, wd * t))


@tvm.transform.module_pass(opt_level=0, name="edgec.UpsampleConvTranspose")
class UpsampleConvTranspose:
    """Rewrite stride == kernel ``conv2d_transpose`` as 1x1 conv + depth-to-space (see module)."""

    def __init__(self) -> None:
        self.fired = 0  # transposed convs rewritten in the last run

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        out = rewrite_relax_functions(mod, rewriter)
        self.fired = rewriter.fired
        return out
