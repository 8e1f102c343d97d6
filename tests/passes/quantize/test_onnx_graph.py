"""onnx_graph.npu_tensors: which activations the npu QDQ style quantizes besides the
conv / matmul layers' own. Element-wise ops count only when they reach such a layer
through ops the NPU runs: an attention's mask add sits between an activation x
activation MatMul and Softmax (both CPU ops), and one int8 scale over a -1e4 mask
would wipe out the logits. An output only CPU ops read stays float too: a
transformer's residual sum before layer norm has outlier channels one int8 scale
cannot hold."""

from __future__ import annotations

import numpy as np
import onnx
from edgec.passes.quantize.onnx_graph import find_anchors, npu_tensors, prepare
from edgec.passes.quantize.ptq import quantize_onnx
from onnx import TensorProto, helper, numpy_helper


def _attention_model() -> onnx.ModelProto:
    """One attention head with a padding mask and a residual add:
    q, k, v = x W; p = softmax(q k^T + mask); y = layer_norm((p v) Wo + x)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32),
                                     w) for w in ("wq", "wk", "wv", "wo")]
    mask = np.zeros((1, 6, 6), np.float32)
    mask[..., 4:] = -10000.0  # the last two tokens are padding, as BERT exports it
    inits.append(numpy_helper.from_array(mask, "mask"))
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
             helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
             helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
             helper.make_node("Add", ["scores", "mask"], ["masked"], name="mask_add"),
             helper.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["ctx"], name="pv"),
             helper.make_node("MatMul", ["ctx", "wo"], ["o"], name="o"),
             helper.make_node("Add", ["o", "x"], ["s"], name="residual"),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], name="ln",
                              axis=-1)]
    inits += [numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
              numpy_helper.from_array(np.zeros(16, np.float32), "beta")]
    g = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 16])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_element_wise_ops_count_only_next_to_npu_layers() -> None:
    prepared = prepare(_attention_model(), conv_add=True)
    anchors = find_anchors(prepared, transposed=True)
    assert sorted(a.name for a in anchors) == ["k", "o", "q", "v"]
    extra = npu_tensors(prepared, anchors)
    # the mask add reads and feeds only CPU ops; only layer norm reads the residual sum
    assert "masked" not in extra and "scores" not in extra and "s" not in extra


def test_an_element_wise_op_between_npu_layers_is_quantized() -> None:
    """x W1 + x -> Relu -> W2: the add's output feeds the NPU (Relu, then a matmul), so
    it is int8 and the add runs on the NPU between the two layers."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"], name="mm1"),
             helper.make_node("Add", ["m", "x"], ["a"], name="residual"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    g = helper.make_graph(
        nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8])],
        [numpy_helper.from_array(rng.standard_normal((16, n)).astype(np.float32), w)
         for w, n in (("w1", 16), ("w2", 8))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    prepared = prepare(m, conv_add=True)
    anchors = find_anchors(prepared, transposed=True)
    extra = npu_tensors(prepared, anchors)
    assert "a" in extra


def test_npu_style_keeps_the_attention_logits_in_float() -> None:
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 6, 16)).astype(np.float32)} for _ in range(12)]
    anchors = quantize_onnx(_attention_model(), feeds[:8], feeds[8:], "minmax")
    npu = quantize_onnx(_attention_model(), feeds[:8], feeds[8:], "minmax", style="npu")
    quantized = {n.input[0] for n in npu.model.graph.node if n.op_type == "QuantizeLinear"}
    assert "masked" not in quantized and "s" not in quantized
    # int8 on the masked logits (one scale for -1e4 and the rest) would lose the
    # attention; the npu style costs little over the anchors style here
    cos_a = anchors.report["accuracy"]["y"]["cosine"]
    cos_n = npu.report["accuracy"]["y"]["cosine"]
    assert cos_n > 0.99 and cos_n > cos_a - 0.005
