"""Nearest resize and channel concat on the NPU, against ONNX Runtime on the same QDQ
model (ORT's ``quantize_static``): an FPN-like block, two conv branches, one upsampled
x2, concatenated and mixed by a 1x1 conv, as PP-OCR det's neck does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edgec import frontend
from edgec.targets.edge_npu.offload import offload
from onnx import TensorProto, helper, numpy_helper

from .ort_oracle import ort_qdq, segment_diffs


def _float_model(rng: np.random.Generator) -> onnx.ModelProto:
    def w(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "bias1"], ["a0"], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["x", "w2", "bias2"], ["b"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["b", "", "scales"], ["b2"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Concat", ["a", "b2"], ["c"], axis=1),
        helper.make_node("Conv", ["c", "w3", "bias3"], ["y"]),
    ]
    inits = [w("w1", 16, 8, 1, 1), w("bias1", 16), w("w2", 8, 8, 3, 3), w("bias2", 8),
             w("w3", 4, 24, 1, 1), w("bias3", 4),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(nodes, "fpn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 12, 12])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    return ort_qdq(_float_model(np.random.default_rng(0)), (1, 8, 12, 12),
                   tmp_path_factory.mktemp("fpn"))


def test_resize_and_concat_run_on_the_npu(qdq):
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    kinds = [sl.layer.kind for seg in off.partition.segments for sl in seg.layers]
    assert len(off.partition.segments) == 1
    assert "resize" in kinds and "concat" in kinds
    cpu = {c["op"] for c in off.report["ops"]["cpu"]}
    assert not cpu & {"relax.image.resize2d", "relax.concat"}


def test_within_one_step_of_ort_and_bit_exact(qdq):
    """The segment on ORT's quantized input: bit-exact with the integer reference, and
    its int8 output within one step of ORT's last QuantizeLinear (graph optimizations
    off: the QDQ graph's own float semantics) for every element."""
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    d = segment_diffs(qdq, off, (1, 8, 12, 12))
    assert d.max() <= 1 and (d == 0).mean() >= 0.99
