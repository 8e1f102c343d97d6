"""fuse-bias-act: matches become named composite functions; numerics unchanged."""

from __future__ import annotations

import numpy as np
import tvm
from edgec.passes.fuse_bias_act import fuse_bias_act
from edgec.passes.registry import PassContext
from tvm import relax

from ._harness import build_main, c, run_relax, tensor

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)


def _before(act: str):
    def body(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        y = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, c(W))), c(B)))
        if act == "hardswish":  # x * clip(x * 1/6 + 0.5, 0, 1)
            h = bb.emit(relax.op.clip(bb.emit(relax.op.add(
                bb.emit(relax.op.multiply(y, c(1 / 6))), c(0.5))), 0, 1))
            return relax.op.multiply(y, h)
        return relax.op.nn.gelu(y)

    return build_main({"x": tensor((2, 4))}, body)


def test_groups_matmul_bias_activation_into_named_composites() -> None:
    for act in ("gelu", "hardswish"):
        ctx = PassContext(target=None)
        after = fuse_bias_act(_before(act), ctx)
        assert ctx.report["fuse-bias-act"]["fired"] == {f"edgec.matmul_bias_{act}": 1}
        x = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}
        np.testing.assert_allclose(run_relax(after, x), run_relax(_before(act), x), atol=1e-6)


def _conv_bias_act_onnx(act: str):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper, numpy_helper

    from ._harness import onnx_model

    w = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1])]
    if act == "relu6":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif act == "hardsigmoid":
        nodes.append(helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.2, beta=0.5))
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])], inits)


def test_conv_bias_activation_matches_onnxruntime() -> None:
    from ._harness import apply_and_compare

    x = {"x": RNG.standard_normal((1, 2, 5, 5)).astype(np.float32) * 4}
    for act in ("relu", "relu6", "hardsigmoid"):
        fired = apply_and_compare(_conv_bias_act_onnx(act), x, fuse_bias_act, "fuse-bias-act")
        assert sum(fired.values()) == 1, (act, fired)


def test_structure_after_is_one_composite_call() -> None:
    """After: main calls one Composite function holding exactly the matched ops."""
    ctx = PassContext(target=None)
    after = fuse_bias_act(_before("gelu"), ctx)
    composites = {
        gv.name_hint: f for gv, f in after.functions.items()
        if isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs
    }
    assert len(composites) == 1
    [func] = composites.values()
    assert str(func.attrs["Composite"]) == "edgec.matmul_bias_gelu"
    ops = [b.value.op.name for blk in func.body.blocks for b in blk.bindings
           if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]
    assert ops == ["relax.matmul", "relax.add", "relax.nn.gelu"]
    main_ops = [b.value.op.name for blk in after["main"].body.blocks for b in blk.bindings
                if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]
    assert "relax.matmul" not in main_ops and "relax.nn.gelu" not in main_ops
