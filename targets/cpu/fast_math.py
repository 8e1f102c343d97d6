"""Vectorizable exp, erf, tanh, sigmoid, GELU and softmax for float32 (a Relax pass, before legalize).

Matches ``R.exp``, ``R.erf``, ``R.tanh``, ``R.sigmoid``, ``R.nn.gelu`` and ``R.nn.softmax``
on float32 tensors and emits TOPI's polynomial forms instead (``topi.fast_exp``,
``fast_erf``, ``fast_tanh``; sigmoid as ``1 / (1 + fast_exp(-x))``; erf-GELU as
``x * (0.5 + 0.5 * fast_erf(x / sqrt 2))``; ``topi.nn.fast_softmax``):

    before:  lv = R.erf(x)                     # legalizes to T.erf -> a scalar erff()
    after:   lv = R.call_tir(fast_erf, (x,))   # T.exp/T.erf gone: adds, muls, FMAs

Why: LLVM lowers ``T.exp`` / ``T.erf`` to libm calls one lane at a time, so a
"vectorized" loop still makes one call per element: erf-GELU made MiniLM's
1536-wide dense 2.8x slower than the same dense without it, and softmax spent
1 ms per 12x128x128 call in ``expf``. The polynomials are range reduction plus
a rational / Horner polynomial: at most 3.3e-7 relative error over float32
(tests/targets/cpu/test_fast_math.py measures it), the same kind of approximation
ONNX Runtime's MLAS kernels use. Other dtypes keep the exact ops.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi
from tvm.relax import Call, Expr, PyExprMutator, expr_functor


def _gelu(x: te.Tensor) -> te.Tensor:
    # The same expression as TVM's legalization of R.nn.gelu, with fast_erf.
    half = tvm.tirx.const(0.5, x.dtype)
    erf = topi.fast_erf(topi.multiply(x, tvm.tirx.const(0.5**0.5, x.dtype)))
    return topi.multiply(x, topi.add(half, topi.multiply(erf, half)))


def _sigmoid(x: te.Tensor) -> te.Tensor:
    one = tvm.tirx.const(1.0, x.dtype)
    return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))


# Relax op name -> TE function computing its approximation.
_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.erf": topi.fast_erf,
    "relax.tanh": topi.fast_tanh,
    "relax.sigmoid": _sigmoid,
    "relax.nn.gelu": _gelu,
}


def _float32(expr: Expr) -> bool:
    ty = expr.ty if hasattr(expr, "ty") else expr.struct_info
    return isinstance(ty, relax.TensorType) and ty.dtype == "float32"


@expr_functor.mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call: Call) -> Expr:
        call = super().visit_call_(call)
        op = getattr(call.op, "name", None)
        if not isinstance(call, Call) or op is None or not call.args or not _float32(call.args[0]):
            return call
        if op in _FAST:
            return self.builder_.call_te(_FAST[op], call.args[0], primfunc_name_hint=op.rsplit(".", 1)[-1])
        if op == "relax.nn.softmax":
            return self.builder_.call_te(
                topi.nn.fast_softmax, call.args[0], int(call.attrs.axis), primfunc_name_hint="softmax"
            )
        return call


@tvm.transform.module_pass(opt_level=0, name="edgec.CPUFastMath")
class FastMath:
    """Replace float32 exp/erf/tanh/sigmoid/gelu/softmax with their polynomial forms."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()
