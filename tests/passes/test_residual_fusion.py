"""Residual add fuses into its producer's kernel once fold-batchnorm has run.

edgec has no pass of its own for this: TVM's FuseOps (in the CPU legalize phase) puts
conv + bias + activation + residual add in one kernel, provided BatchNorm is gone
first. This test pins that behaviour, since it is what the fusion story relies on.
"""

from __future__ import annotations

import numpy as np
import tvm
from edgec.passes.fold_batchnorm import fold_batchnorm
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from ._harness import import_onnx, onnx_model, run_ort, run_relax

RNG = np.random.default_rng(5)


def _residual_block():  # type: ignore[no-untyped-def]
    """y = relu(BN(conv(x))) + x: a MobileNet/ResNet-style residual."""
    c = 4
    inits = [
        numpy_helper.from_array(RNG.standard_normal((c, c, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), "g"),
        numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.standard_normal(c).astype(np.float32), "m"),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, c).astype(np.float32), "v"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["y"]),
    ]
    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])]
    return onnx_model(nodes, io, out, inits)


def _kernels(mod: tvm.IRModule) -> int:
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        fused = tvm.transform.Sequential(relax.backend.cpu_generic.legalize_passes(target))(mod)
    return sum(
        1 for block in fused["main"].body.blocks for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
        and b.value.op.name == "relax.call_tir"
    )


def test_residual_add_joins_the_conv_kernel_after_fold_batchnorm() -> None:
    proto = _residual_block()
    before = import_onnx(proto)
    after = fold_batchnorm(before, PassContext(target=None))
    # conv + folded bias + relu + residual add: one kernel (fused_conv2d_add_relu_add)
    assert _kernels(after) == 1, _kernels(after)
    assert _kernels(before) > _kernels(after)
    x = {"x": RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run_relax(after, x), run_ort(proto, x), atol=1e-4, rtol=1e-4)
