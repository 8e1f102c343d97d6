"""Helpers for pass tests: build Relax modules, run them, and compare with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from edgec import frontend
from edgec.passes.registry import PassContext
from tvm import relax


def tensor(shape: Sequence[int], dtype: str = "float32") -> relax.TensorType:
    return relax.TensorType(list(shape), dtype)


def build_main(params: dict[str, relax.TensorType], body: Callable[..., relax.Expr]) -> tvm.IRModule:
    """A one-function module: ``body(bb, *param_vars)`` emits bindings and returns the output."""
    bb = relax.BlockBuilder()
    args = [relax.Var(name, ty) for name, ty in params.items()]
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *args))
        bb.emit_func_output(out)
    return bb.get()


def c(value: np.ndarray) -> relax.Expr:
    return relax.const(np.asarray(value, dtype=np.float32), "float32")


def import_onnx(proto: onnx.ModelProto) -> tvm.IRModule:
    """Import without frontend.simplify: its ONNX optimizer would already remove some
    of the patterns these tests feed the passes (e.g. Transpose pairs)."""
    return frontend.to_relax(onnx.shape_inference.infer_shapes(proto))


def run_relax(mod: tvm.IRModule, feeds: dict[str, np.ndarray]) -> np.ndarray:
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
    return out.numpy()


def run_ort(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def apply_and_compare(
    proto: onnx.ModelProto, feeds: dict[str, np.ndarray], pass_fn: Callable[..., Any],
    name: str, atol: float = 1e-4,
) -> dict[str, int]:
    """Apply one pass to the imported model, check it against ONNX Runtime, return fires."""
    ctx = PassContext(target=None)
    mod = pass_fn(import_onnx(proto), ctx)
    relax.analysis.well_formed(mod)
    np.testing.assert_allclose(run_relax(mod, feeds), run_ort(proto, feeds), atol=atol, rtol=1e-4)
    return dict(ctx.report[name]["fired"])


def onnx_model(nodes: list[Any], inputs: list[Any], outputs: list[Any],
               inits: list[Any], opset: int = 13) -> onnx.ModelProto:
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def count_ops(mod: tvm.IRModule, op_name: str) -> int:
    """How many calls to ``op_name`` (e.g. "relax.nn.batch_norm") ``main`` contains."""
    n = 0

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            nonlocal n
            if isinstance(call.op, tvm.ir.Op) and call.op.name == op_name:
                n += 1
            super().visit_call_(call)

    _Count().visit_expr(mod["main"])
    return n
