"""fold-batchnorm: structure (Before/Expected) and numerics against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from edgec.passes.fold_batchnorm import fold_batchnorm
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from ._harness import apply_and_compare, build_main, c, count_ops, onnx_model, tensor

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
GAMMA, BETA, MEAN = (RNG.standard_normal(3).astype(np.float32) for _ in range(3))
VAR = (RNG.random(3) + 0.5).astype(np.float32)
EPS = 1e-5


def _before(with_bias: bool, training: bool = False) -> tvm.IRModule:
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.nn.conv2d(x, c(W), padding=1))
        if with_bias:
            y = bb.emit(relax.op.add(y, c(B.reshape(1, 3, 1, 1))))
        t = bb.emit(relax.op.nn.batch_norm(y, c(GAMMA), c(BETA), c(MEAN), c(VAR), axis=1,
                                           epsilon=EPS, training=training))
        return bb.emit(relax.TupleGetItem(t, 0))

    return build_main({"x": tensor((1, 2, 5, 5))}, body)


def _expected(with_bias: bool) -> tvm.IRModule:
    # the algebra from the module docstring, computed independently here
    s = GAMMA.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + EPS)
    w_f = W * s.reshape(3, 1, 1, 1)
    b_f = ((B if with_bias else 0.0) - MEAN) * s + BETA

    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.nn.conv2d(x, c(w_f), padding=1))
        return relax.op.add(y, c(b_f.reshape(1, 3, 1, 1)))

    return build_main({"x": tensor((1, 2, 5, 5))}, body)


def test_folds_conv_bn() -> None:
    ctx = PassContext(target=None)
    after = fold_batchnorm(_before(with_bias=False), ctx)
    tvm.ir.assert_structural_equal(after, _expected(with_bias=False))
    assert ctx.report["fold-batchnorm"]["fired"] == {"bn(conv(x, W)) -> conv(x, W_f) + b_f": 1}


def test_folds_conv_bias_bn() -> None:
    ctx = PassContext(target=None)
    after = fold_batchnorm(_before(with_bias=True), ctx)
    tvm.ir.assert_structural_equal(after, _expected(with_bias=True))
    assert sum(ctx.report["fold-batchnorm"]["fired"].values()) == 1


def test_training_mode_is_left_alone_with_a_reason() -> None:
    ctx = PassContext(target=None)
    before = _before(with_bias=False, training=True)
    tvm.ir.assert_structural_equal(fold_batchnorm(before, ctx), before)
    assert ctx.report["fold-batchnorm"]["fired"] == {}
    assert any("training" in k for k in ctx.report["fold-batchnorm"]["skipped"])


def _conv_bn_onnx() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("W", W), ("B", B), ("g", GAMMA), ("b", BETA), ("m", MEAN), ("v", VAR))]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], epsilon=EPS),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])], inits)


def test_matches_onnxruntime() -> None:
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    fired = apply_and_compare(_conv_bn_onnx(), {"x": x}, fold_batchnorm, "fold-batchnorm")
    assert sum(fired.values()) == 1


def test_no_batch_norm_left_on_import() -> None:
    from ._harness import import_onnx

    mod = fold_batchnorm(import_onnx(_conv_bn_onnx()))
    assert count_ops(mod, "relax.nn.batch_norm") == 0
