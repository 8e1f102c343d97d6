"""Transposed convs (kernel == stride) on the NPU, end to end from a float ONNX model: a
DB-style head (ConvTranspose without bias, Add of a per-channel bias, BatchNormalization,
Relu, a second ConvTranspose to one channel, Sigmoid) through edgec's npu-style PTQ,
offload and the simulator. Oracles: the integer reference (bit-exact) and ONNX Runtime
on the same QDQ model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edgec import frontend
from edgec.passes.quantize.ptq import quantize_onnx
from edgec.targets.edge_npu.offload import offload
from onnx import TensorProto, helper, numpy_helper

from .ort_oracle import segment_diffs

SHAPE = (1, 8, 10, 12)


def _float_model(rng: np.random.Generator) -> onnx.ModelProto:
    def t(name, *shape, scale=0.3, shift=0.0):
        return numpy_helper.from_array(
            (rng.normal(0, scale, shape) + shift).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("ConvTranspose", ["a", "w1"], ["u0"], strides=[2, 2],
                         kernel_shape=[2, 2]),
        helper.make_node("Add", ["u0", "b1"], ["u1"]),
        helper.make_node("BatchNormalization", ["u1", "g", "beta", "mean", "var"], ["u2"]),
        helper.make_node("Relu", ["u2"], ["u"]),
        helper.make_node("ConvTranspose", ["u", "w2", "b2"], ["v"], strides=[2, 2],
                         kernel_shape=[2, 2]),
        helper.make_node("Sigmoid", ["v"], ["y"]),
    ]
    inits = [t("w0", 16, 8, 3, 3), t("b0", 16), t("w1", 16, 8, 2, 2), t("b1", 8, 1, 1),
             t("g", 8, scale=0.2, shift=1.0), t("beta", 8), t("mean", 8),
             numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "var"),
             t("w2", 8, 1, 2, 2), t("b2", 1)]
    n, _, h, w = SHAPE
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(SHAPE))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [n, 1, 4 * h, 4 * w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def qdq():
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(0, 1, SHAPE).astype(np.float32)} for _ in range(10)]
    return quantize_onnx(_float_model(rng), feeds[:8], feeds[8:], "minmax",
                         with_sensitivity=False, style="npu").model


def test_ptq_folds_the_bias_add_and_batchnorm_into_the_transposed_conv(qdq):
    ops = [n.op_type for n in qdq.graph.node]
    assert "BatchNormalization" not in ops and "Add" not in ops
    convt = [n for n in qdq.graph.node if n.op_type == "ConvTranspose"]
    assert len(convt) == 2 and all(len(n.input) == 3 for n in convt)  # weight and bias DQ'd
    producers = {o: n for n in qdq.graph.node for o in n.output}
    for n in convt:
        assert producers[n.input[1]].op_type == "DequantizeLinear"


def test_both_transposed_convs_run_on_the_npu(qdq):
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    assert len(off.partition.segments) == 1
    convs = [sl.layer.attrs["conv"] for sl in off.partition.segments[0].layers
             if sl.layer.kind == "conv"]
    assert [c.phases for c in convs] == [1, 2, 2]
    assert "relax.nn.conv2d_transpose" not in {c["op"] for c in off.report["ops"]["cpu"]}
    assert off.report["macs"]["npu_fraction"] == 1.0


def test_bit_exact_and_within_one_step_of_ort(qdq):
    """The segment on ORT's quantized input: bit-exact with the integer reference, and its
    int8 output (before the float Sigmoid) within one step of ORT's (graph optimizations
    off: the QDQ graph's own float semantics) for every element."""
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    d = segment_diffs(qdq, off, SHAPE)
    print(f"max {d.max()}, equal {(d == 0).mean():.5f}")
    assert d.max() <= 1 and (d == 0).mean() >= 0.99


def test_overlapping_transposed_conv_stays_on_the_cpu_with_its_reason():
    """Kernel 3, stride 2 (outputs overlap): not a 1x1 conv per phase; the placement
    report says so, and the conv before it runs on the NPU (the last conv writes the
    float model output, so it stays on the CPU as well)."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["a", "w1", "b1"], ["u"], strides=[2, 2],
                              pads=[1, 1, 1, 1], output_padding=[1, 1]),
             helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in (("w0", (8, 8, 3, 3)), ("b0", (8,)), ("w1", (8, 4, 3, 3)),
                          ("b1", (4,)), ("w2", (4, 4, 1, 1)), ("b2", (4,)))]
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 6, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4, 12, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feeds = [{"x": rng.normal(0, 1, (1, 8, 6, 6)).astype(np.float32)} for _ in range(6)]
    qdq = quantize_onnx(model, feeds[:4], feeds[4:], "minmax", with_sensitivity=False,
                        style="npu").model
    off = offload(frontend.to_relax(qdq), "edge-npu-s")
    cpu = {c["op"]: c["reason"] for c in off.report["ops"]["cpu"]}
    assert "kernel == stride" in cpu["relax.nn.conv2d_transpose"]
    assert len(off.partition.segments) == 1
