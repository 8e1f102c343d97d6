"""int8 matmuls with constant weights, rewritten for ``vpdpbusd`` (unsigned x signed bytes).

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
"""

from __future__ import annotations

import numpy as np
import tvm
from edgec.passes._rules import const_value
from edgec.targets.cpu.common import rewrite_relax_functions
from edgec.targets.cpu.conv_transpose import out_dtype_of, static_shape
from edgec.targets.cpu.vnni import GROUP, LANES, has_vnni
from tvm import relax
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

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        w = _weights(call)
        if w is None:
            return call
        x = call.args[0]
        xu = self.shifted.get(x)
        if xu is None:
            xu = self.builder_.emit(R.astype(
                R.add(R.astype(x, "int32"), relax.const(SHIFT, "int32")), "uint8"))
            self.shifted[x] = xu
        acc = self.builder_.emit(R.matmul(xu, call.args[1], out_dtype="int32"))
        comp = (-SHIFT * w.astype(np.int64).sum(axis=0)).astype(np.int32)
        self.fired += 1
        return R.add(acc, relax.const(comp))


@tvm.transform.module_pass(opt_level=0, name="edgec.UnsignedInt8Matmul")
class UnsignedInt8Matmul:
    """Give int8 matmuls with constant weights a uint8 activation (see module).

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
        out = rewrite_relax_functions(mod, rewriter)
        self.fired = rewriter.fired
        return out
