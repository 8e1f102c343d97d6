"""Build one-node recurrent ONNX models, run them with ONNX Runtime (the oracle) and with
edgec's converters through TVM, and compare."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from edgec.converters import installed
from onnx import TensorProto, helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

TARGET = tvm.target.Target({"kind": "llvm"})
INPUT_NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def one_node_model(
    op: str,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    outputs: list[str],
    *,
    as_initializers: set[str],
    opset: int,
) -> onnx.ModelProto:
    """A model with a single ``op`` node. ``arrays`` names its inputs (missing ones are
    left empty); ``outputs`` lists the node's outputs, "" for an unused one."""
    names = INPUT_NAMES if op == "LSTM" else INPUT_NAMES[:6]
    node_inputs = [n if n in arrays else "" for n in names]
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    node = helper.make_node(op, node_inputs, outputs, **attrs)

    def info(name: str, a: np.ndarray) -> onnx.ValueInfoProto:
        elem = TensorProto.INT32 if a.dtype == np.int32 else TensorProto.FLOAT
        return helper.make_tensor_value_info(name, elem, a.shape)

    graph_inputs = [info(n, a) for n, a in arrays.items() if n not in as_initializers]
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in arrays.items() if n in as_initializers]
    # Y is rank 4, Y_h / Y_c rank 3; dims left unknown (ONNX Runtime infers them).
    graph_outputs = [
        helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (4 if k == 0 else 3))
        for k, o in enumerate(outputs)
        if o
    ]
    graph = helper.make_graph([node], f"one_{op}", graph_inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_tvm(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with installed():
        mod = from_onnx(model, keep_params_in_input=False)
    ex = tvm.compile(mod, TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.graph.input]
    out = vm["main"](*args)
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def batch_major_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's answer for a ``layout=1`` node, which it refuses to run: the same
    node with ``layout=0`` on time-major inputs, outputs transposed back to batch-major."""
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    node = ref.graph.node[0]
    kept = [a for a in node.attribute if a.name != "layout"]
    del node.attribute[:]
    node.attribute.extend(kept)
    swap = {"X": (1, 0, 2), "initial_h": (1, 0, 2), "initial_c": (1, 0, 2)}
    ref_feeds = {k: v.transpose(swap[k]) if k in swap else v for k, v in feeds.items()}
    for inp in ref.graph.input:
        if inp.name in swap:
            dims = inp.type.tensor_type.shape.dim
            values = [d.dim_value for d in dims]
            for d, v in zip(dims, (values[1], values[0], values[2])):
                d.dim_value = v
    out = run_ort(ref, ref_feeds)
    names = [o for o in node.output if o]
    return [
        o.transpose(2, 0, 1, 3) if name == node.output[0] else o.transpose(1, 0, 2)
        for name, o in zip(names, out)
    ]


def compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tol: float = 1e-5) -> float:
    """Assert TVM matches ONNX Runtime on every output; return the max abs error."""
    layout = [a.i for a in model.graph.node[0].attribute if a.name == "layout"]
    if layout and layout[0] == 1:
        expected = batch_major_reference(model, feeds)
    else:
        expected = run_ort(model, feeds)
    got = run_tvm(model, feeds)
    assert len(got) == len(expected)
    worst = 0.0
    for e, g in zip(expected, got):
        assert e.shape == g.shape, (e.shape, g.shape)
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)
        worst = max(worst, float(np.max(np.abs(g - e))) if e.size else 0.0)
    return worst
