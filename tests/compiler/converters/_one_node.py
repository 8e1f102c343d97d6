"""One-node ONNX models run through edgec's ONNX backend and ONNX Runtime (the oracle)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from edgec import onnx_backend
from onnx import helper, numpy_helper


def model(op: str, feeds: dict[str, np.ndarray], out_type: int, opset: int,
          consts: dict[str, np.ndarray] | None = None, **attrs: Any) -> onnx.ModelProto:
    """``op(*feeds, *consts)`` with feeds as graph inputs and consts as initializers."""
    consts = consts or {}
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in feeds.items()]
    node = helper.make_node(op, [*feeds, *consts], ["y"], **attrs)
    graph = helper.make_graph([node], op, inputs, [helper.make_tensor_value_info("y", out_type, None)],
                              [numpy_helper.from_array(a, n) for n, a in consts.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    # The checker wants an output shape: take the one ONNX's shape inference gives.
    inferred = onnx.shape_inference.infer_shapes(m).graph.output[0]
    m.graph.output[0].CopyFrom(inferred)
    if not m.graph.output[0].type.tensor_type.HasField("shape"):
        m.graph.output[0].type.tensor_type.shape.SetInParent()
    return m


def edgec(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return onnx_backend.prepare(m).run(feeds)[0]


def ort_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def compare(m: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5,
            atol: float = 1e-6) -> None:
    """edgec and ONNX Runtime agree on dtype, shape and values."""
    got, want = edgec(m, feeds), ort_run(m, feeds)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
