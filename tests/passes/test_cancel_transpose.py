"""cancel-transpose: structure (Before/Expected) and numerics against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from edgec.passes.cancel_transpose import cancel_transpose
from edgec.passes.registry import PassContext
from onnx import TensorProto, helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from ._harness import apply_and_compare, build_main, tensor

X = {"x": tensor((1, 2, 3, 4))}


def test_inverse_transposes_cancel() -> None:
    def before(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        t = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
        t = bb.emit(relax.op.permute_dims(t, [0, 3, 1, 2]))
        return relax.op.nn.relu(t)

    ctx = PassContext(target=None)
    after = cancel_transpose(build_main(X, before), ctx)
    tvm.ir.assert_structural_equal(after, build_main(X, lambda bb, x: relax.op.nn.relu(x)))
    assert ctx.report["cancel-transpose"]["fired"] == {"permute(permute(x)) -> composed permute": 1}


def test_transposes_compose() -> None:
    def before(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        t = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
        return relax.op.permute_dims(t, [0, 2, 3, 1])

    # c[i] = p1[p2[i]] = [0, 3, 1, 2]
    expected = build_main(X, lambda bb, x: relax.op.permute_dims(x, [0, 3, 1, 2]))
    tvm.ir.assert_structural_equal(cancel_transpose(build_main(X, before)), expected)


def test_reshapes_merge_and_identity_reshape_drops() -> None:
    def before(bb: relax.BlockBuilder, x: relax.Var) -> relax.Expr:
        r = bb.emit(relax.op.reshape(x, [1, 6, 4]))
        r = bb.emit(relax.op.reshape(r, [6, 4]))
        return relax.op.reshape(r, [1, 2, 3, 4])

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 3, 4), dtype="float32")) -> R.Tensor((1, 2, 3, 4), "float32"):
            return x

    ctx = PassContext(target=None)
    after = cancel_transpose(build_main(X, before), ctx)
    tvm.ir.assert_structural_equal(after, Expected)
    assert sum(ctx.report["cancel-transpose"]["fired"].values()) >= 1


def test_unrelated_transpose_is_kept() -> None:
    before = build_main(X, lambda bb, x: relax.op.permute_dims(x, [0, 2, 3, 1]))
    tvm.ir.assert_structural_equal(cancel_transpose(before), before)


def _onnx_nhwc_roundtrip() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["u"], perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["u", "s1"], ["r"]),
        helper.make_node("Reshape", ["r", "s2"], ["y0"]),
        helper.make_node("Transpose", ["y0"], ["y1"], perm=[1, 0]),
        helper.make_node("Transpose", ["y1"], ["y2"], perm=[1, 0]),
        helper.make_node("Relu", ["y2"], ["y"]),
    ]
    inits = [onnx.numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("s1", [1, 6, 4]), ("s2", [6, 4]))]
    from ._harness import onnx_model

    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 4])], inits)


def test_matches_onnxruntime() -> None:
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    fired = apply_and_compare(_onnx_nhwc_roundtrip(), {"x": x}, cancel_transpose,
                              "cancel-transpose")
    assert fired.get("permute(permute(x)) -> composed permute", 0) == 2
    assert fired.get("reshape(reshape(x)) -> reshape(x)", 0) == 1


def test_affine_grid_node_tests_pass() -> None:
    """Regression: on AffineGrid's expansion rewrite_call hands the rule the bound
    variable instead of the permute_dims call; the rule used to crash on ``.attrs``."""
    from edgec.conformance import collect, run_case

    cases = [c for c in collect()
             if c.name.startswith("test_affine_grid_2d") and not c.name.endswith("_expanded")]
    assert cases
    results = {c.name: run_case(c) for c in cases}
    assert {n: r.status for n, r in results.items()} == {n: "pass" for n in results}, \
        {n: r.detail for n, r in results.items()}
