"""1x1 convs on narrow feature maps as a matmul over the flattened map.

Matches ``R.nn.conv2d`` in NCHW / OIHW with a 1x1 kernel, stride 1, no padding,
dilation 1 and one group, when the map's width is no multiple of the target's
vector (20 and 40 on AVX-512's 16 lanes) but its area gives whole vectors:

    conv2d(x, W)  ->  reshape(matmul(reshape(W, (F, C)), reshape(x, (N, C, H*W))), (N, F, H, W))

The conv's schedule vectorizes along the width, so a 20-wide map runs on quarter
vectors; the matmul vectorizes along ``H*W`` (400 = 25 whole vectors). Measured on
PP-OCR det's 384->384 conv at 20x20: 3.1 ms -> 1.1 ms (one thread). The price is
the epilogue (bias, activation): the reshape stops FuseOps from fusing it, so it
becomes one extra pass over the (small) output; on 80x80 maps, where the conv
already has whole vectors, that pass costs more than it saves, hence the test on
the width. Same products summed in the same order over ``c``.
"""

from __future__ import annotations

import tvm
from edgec.targets.cpu.common import rewrite_relax_functions, vector_lanes, vector_width
from edgec.targets.cpu.conv_transpose import out_dtype_of, static_shape
from tvm import relax
from tvm.relax import op as R
from tvm.target import Target


def _why_not(call: relax.Call, lanes: int) -> str:
    """Why ``call`` is not a 1x1 conv worth flattening ("" if it is)."""
    a = call.attrs
    x_shape, w_shape = static_shape(call.args[0]), static_shape(call.args[1])
    if x_shape is None or w_shape is None:
        return "dynamic shape"
    if len(x_shape) != 4 or w_shape[2:] != [1, 1]:
        return "not a 2-d 1x1 conv"
    if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or (a.out_layout or "NCHW") != "NCHW":
        return "layout is not NCHW/OIHW"
    if int(a.groups) != 1 or [int(s) for s in a.strides] != [1, 1]:
        return "grouped or strided"
    if any(int(p) for p in a.padding) or [int(d) for d in a.dilation] != [1, 1]:
        return "padded or dilated"
    h, w = x_shape[2:]
    if vector_width(w, lanes) >= lanes:
        return "rows already hold whole vectors"
    if vector_width(h * w, lanes) < lanes:
        return "the flattened map holds no whole vectors either"
    return ""


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes
        self.fired = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return call
        if _why_not(call, self.lanes):
            return call
        x, w = call.args
        n, c, h, wd = static_shape(x)  # type: ignore[misc]
        f = static_shape(w)[0]  # type: ignore[index]
        out_dtype = out_dtype_of(call)
        w2 = self.builder_.emit(R.reshape(w, (f, c)))
        x2 = self.builder_.emit(R.reshape(x, (n, c, h * wd)))
        y = self.builder_.emit(R.matmul(w2, x2, out_dtype=out_dtype))
        self.fired += 1
        return R.reshape(y, (n, f, h, wd))


@tvm.transform.module_pass(opt_level=0, name="edgec.FlattenPointwiseConv")
class FlattenPointwiseConv:
    """Rewrite 1x1 convs on narrow maps as a matmul over ``H*W`` (see module).

    Reads the vector width from the current target (``with target:``); without one
    it leaves the module unchanged.
    """

    def __init__(self) -> None:
        self.fired = 0  # convs rewritten in the last run

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = Target.current(allow_none=True)
        self.fired = 0
        if target is None or target.kind.name != "llvm":
            return mod
        rewriter = _Rewriter(mod, vector_lanes(target))
        out = rewrite_relax_functions(mod, rewriter)
        self.fired = rewriter.fired
        return out
