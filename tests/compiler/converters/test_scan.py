"""Scan, unrolled by edgec over its static length, against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edgec import onnx_backend
from edgec.converters.scan import unroll_scans
from onnx import TensorProto as P
from onnx import helper


def scan_model(opset: int, in_axis: int, in_dir: int, out_axis: int, out_dir: int) -> onnx.ModelProto:
    """State s (running sum, [2]) and product p ([2]) over x's steps; emits s*w and p."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["p_in", "x_t"], ["p_out"]),
         helper.make_node("Mul", ["s_out", "w"], ["y_t"])],  # w comes from the outer graph
        "body",
        [helper.make_tensor_value_info(n, P.FLOAT, [2]) for n in ("s_in", "p_in", "x_t")],
        [helper.make_tensor_value_info(n, P.FLOAT, [2]) for n in ("s_out", "p_out", "y_t")],
    )
    node = helper.make_node(
        "Scan", ["s0", "p0", "x"], ["s", "p", "y"], body=body, num_scan_inputs=1,
        scan_input_axes=[in_axis], scan_input_directions=[in_dir],
        scan_output_axes=[out_axis], scan_output_directions=[out_dir],
    )
    x_shape = [4, 2] if in_axis == 0 else [2, 4]
    graph = helper.make_graph(
        [node], "scan",
        [helper.make_tensor_value_info("s0", P.FLOAT, [2]),
         helper.make_tensor_value_info("p0", P.FLOAT, [2]),
         helper.make_tensor_value_info("x", P.FLOAT, x_shape)],
        [helper.make_tensor_value_info("s", P.FLOAT, [2]),
         helper.make_tensor_value_info("p", P.FLOAT, [2]),
         helper.make_tensor_value_info("y", P.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([0.5, -2.0], np.float32), "w")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m.graph.output[2].type.tensor_type.shape.SetInParent()
    return m


@pytest.mark.parametrize("opset,in_axis,in_dir,out_axis,out_dir", [
    (9, 0, 0, 0, 0), (16, 1, 1, 0, 0), (16, 0, 0, 1, 1), (11, 1, 0, -1, 0),
])
def test_scan_matches_onnxruntime(opset: int, in_axis: int, in_dir: int, out_axis: int,
                                  out_dir: int) -> None:
    m = scan_model(opset, in_axis, in_dir, out_axis, out_dir)
    rng = np.random.default_rng(opset)
    x = rng.standard_normal([4, 2] if in_axis == 0 else [2, 4]).astype(np.float32)
    feeds = {"s0": np.array([1.0, 2.0], np.float32), "p0": np.ones(2, np.float32), "x": x}
    got = onnx_backend.prepare(m).run(feeds)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for g, w in zip(got, sess.run(None, feeds)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_unknown_length_is_left_alone() -> None:
    m = scan_model(16, 0, 0, 0, 0)
    m.graph.input[2].type.tensor_type.shape.dim[0].dim_param = "n"
    assert unroll_scans(m) is m
