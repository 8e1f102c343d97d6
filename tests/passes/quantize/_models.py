"""Tiny float ONNX models and their quantization, shared by the quantize tests."""

from __future__ import annotations

import numpy as np
import onnx
from edgec.passes.quantize import calibrate, onnx_graph, qdq
from onnx import TensorProto, helper, numpy_helper


def conv_model(groups: int = 1, stride: int = 1, act: str | None = "relu",
               seed: int = 0) -> onnx.ModelProto:
    """x[1,8,10,12] -> Conv(3x3, pad 1) + bias -> act -> y."""
    rng = np.random.default_rng(seed)
    c, o = 8, (8 if groups > 1 else 16)
    w = (rng.standard_normal((o, c // groups, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], name="conv", pads=[1, 1, 1, 1],
                              strides=[stride, stride], group=groups)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    elif act == "clip":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(2, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip"))
    h = 10 // stride
    w_out = 12 // stride
    g = helper.make_graph(nodes, "conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, o, h, w_out])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def matmul_model(seed: int = 0) -> onnx.ModelProto:
    """x[2,5,24] -> MatMul(W[24,12]) + b -> Relu -> y."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((24, 12)) * 0.3).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
         helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
         helper.make_node("Relu", ["a"], ["y"], name="relu")],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 12])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def feeds(model: onnx.ModelProto, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    i = model.graph.input[0]
    shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
    return [{i.name: (rng.standard_normal(shape) + 0.3).astype(np.float32)} for _ in range(n)]


def quantized(model: onnx.ModelProto, n: int = 8, method: str = "minmax"):
    """(prepared, anchors, params, qdq model whose output is the int8 layer's DQ)."""
    prepared = onnx_graph.prepare(model)
    anchors = onnx_graph.find_anchors(prepared)
    params = calibrate.calibrate(prepared, anchors, feeds(model, n), method)
    q = qdq.to_qdq(prepared, anchors, params)
    # Return the dequantized int8 output, so the layer's own output is quantized
    # (a float graph output keeps its float value, which stops the lowering).
    q.graph.output[0].name = q.graph.output[0].name + "_dequantized"
    return prepared, anchors, params, q
