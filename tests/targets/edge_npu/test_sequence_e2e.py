"""Token sequences (1 x M x N tensors, as transformers export them) on the NPU, against
ONNX Runtime on the same QDQ model (ORT's ``quantize_static``): a feed-forward block,
MatMul, ReLU, MatMul and the residual add, as a BERT layer's FFN does (without the
biases: ORT's QDQ export quantizes a MatMul's bias add as an add of a constant vector,
which the NPU does not take; edgec's own PTQ folds it into the MatMul)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edgec import frontend
from edgec.targets.edge_npu.offload import offload
from onnx import TensorProto, helper, numpy_helper

from .ort_oracle import ort_qdq, segment_diffs

SHAPE = (1, 12, 16)


def _float_model(rng: np.random.Generator) -> onnx.ModelProto:
    def w(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["f"]),
        helper.make_node("Add", ["f", "x"], ["y"]),
    ]
    inits = [w("w1", 16, 40), w("w2", 40, 16)]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(SHAPE))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, list(SHAPE))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    return ort_qdq(_float_model(np.random.default_rng(0)), SHAPE,
                   tmp_path_factory.mktemp("ffn"))


def test_feed_forward_block_runs_on_the_npu(qdq):
    """Both MatMuls, the ReLU and the residual add run on the NPU, in one segment; the
    second MatMul takes the residual add into its program."""
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    assert len(off.partition.segments) == 1
    assert off.report["macs"]["npu_fraction"] == 1.0
    cpu = {c["op"] for c in off.report["ops"]["cpu"]}
    assert not cpu & {"relax.matmul", "relax.add"}
    assert any(ly["fused_residual"] for ly in off.report["layers"])


def test_within_one_step_of_ort_and_bit_exact(qdq):
    """The segment on ORT's quantized input: bit-exact with the integer reference, and
    its int8 output within one step of ORT's last QuantizeLinear (graph optimizations
    off) for every element."""
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    d = segment_diffs(qdq, off, SHAPE)
    assert d.max() <= 1 and (d == 0).mean() >= 0.99
