"""fuse-layernorm: structure (Before/Expected) and numerics against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from edgec.passes.fuse_layernorm import fuse_layernorm
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from ._harness import apply_and_compare, build_main, c, count_ops, import_onnx, onnx_model, tensor

RNG = np.random.default_rng(1)
GAMMA = RNG.standard_normal(8).astype(np.float32)
BETA = RNG.standard_normal(8).astype(np.float32)
EPS = 1e-5


def _decomposed(bb: relax.BlockBuilder, x: relax.Var, affine: bool, square: str) -> relax.Expr:
    m = bb.emit(relax.op.mean(x, axis=[-1], keepdims=True))
    d = bb.emit(relax.op.subtract(x, m))
    sq = bb.emit(relax.op.multiply(d, d) if square == "mul" else relax.op.power(d, c(2.0)))
    v = bb.emit(relax.op.mean(sq, axis=[-1], keepdims=True))
    s = bb.emit(relax.op.sqrt(bb.emit(relax.op.add(v, c(EPS)))))
    n = bb.emit(relax.op.divide(d, s))
    if not affine:
        return n
    return bb.emit(relax.op.add(bb.emit(relax.op.multiply(n, c(GAMMA))), c(BETA)))


def _expected(affine: bool) -> tvm.IRModule:
    gamma, beta = (GAMMA, BETA) if affine else (np.ones(8), np.zeros(8))
    return build_main(
        {"x": tensor((2, 4, 8))},
        # eps is read back from a float32 constant
        lambda bb, x: relax.op.nn.layer_norm(x, c(gamma), c(beta), axes=[2],
                                             epsilon=float(np.float32(EPS))),
    )


def test_affine_layernorm_power_form() -> None:
    ctx = PassContext(target=None)
    before = build_main({"x": tensor((2, 4, 8))}, lambda bb, x: _decomposed(bb, x, True, "pow"))
    tvm.ir.assert_structural_equal(fuse_layernorm(before, ctx), _expected(affine=True))
    assert ctx.report["fuse-layernorm"]["fired"] == {
        "decomposed layernorm with affine -> layer_norm": 1}


def test_plain_layernorm_multiply_form() -> None:
    ctx = PassContext(target=None)
    before = build_main({"x": tensor((2, 4, 8))}, lambda bb, x: _decomposed(bb, x, False, "mul"))
    tvm.ir.assert_structural_equal(fuse_layernorm(before, ctx), _expected(affine=False))
    assert ctx.report["fuse-layernorm"]["fired"] == {"decomposed layernorm -> layer_norm": 1}


def test_non_trailing_axis_is_left_alone() -> None:
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        m = bb.emit(relax.op.mean(x, axis=[1], keepdims=True))
        d = bb.emit(relax.op.subtract(x, m))
        v = bb.emit(relax.op.mean(bb.emit(relax.op.multiply(d, d)), axis=[1], keepdims=True))
        return bb.emit(relax.op.divide(d, bb.emit(relax.op.sqrt(bb.emit(relax.op.add(v, c(EPS)))))))

    ctx = PassContext(target=None)
    before = build_main({"x": tensor((2, 4, 8))}, body)
    tvm.ir.assert_structural_equal(fuse_layernorm(before, ctx), before)
    assert any("trailing" in k for k in ctx.report["fuse-layernorm"]["skipped"])


def _onnx_decomposed_ln() -> onnx.ModelProto:
    # what torch.onnx (opset < 17) emits for nn.LayerNorm
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("two", np.array(2.0, np.float32)), ("eps", np.array(EPS, np.float32)),
        ("g", GAMMA), ("b", BETA))]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "b"], ["y"]),
    ]
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8])], inits)


def test_matches_onnxruntime() -> None:
    x = (RNG.standard_normal((2, 4, 8)) * 3 + 1).astype(np.float32)
    fired = apply_and_compare(_onnx_decomposed_ln(), {"x": x}, fuse_layernorm, "fuse-layernorm")
    assert sum(fired.values()) == 1
    assert count_ops(fuse_layernorm(import_onnx(_onnx_decomposed_ln())), "relax.nn.layer_norm") == 1
