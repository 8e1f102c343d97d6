"""Static statistics of an ONNX model: operator counts, MACs, parameters.

MACs are counted from shapes after ONNX shape inference, for the operators that
dominate inference cost (convolutions, matrix products, recurrent cells):

    Conv           out_elems * (Cin / group) * prod(kernel)
    ConvTranspose  in_elems  * (Cout / group) * prod(kernel)
    MatMul         prod(out_shape) * K
    Gemm           M * N * K
    LSTM / GRU     seq * batch * dirs * gates * hidden * (input + hidden)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx


def _shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    values = list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output)
    for v in values:
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    for t in proto.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    def shape(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Conv":
        w, y = shape(1), shape(0, outputs=True)
        if w and y:
            return int(np.prod(y)) * int(np.prod(w[1:]))
    elif op == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x and w:
            return int(np.prod(x)) * int(np.prod(w[1:]))
    elif op == "MatMul":
        a, y = shape(0), shape(0, outputs=True)
        if a and y:
            return int(np.prod(y)) * a[-1]
    elif op == "Gemm":
        a, y = shape(0), shape(0, outputs=True)
        if a and y:
            k = a[0] if attrs.get("transA", 0) else a[-1]
            return int(np.prod(y)) * k
    elif op in ("LSTM", "GRU", "RNN"):
        x, w = shape(0), shape(1)
        if x and w:
            hidden = int(attrs.get("hidden_size", w[1] // {"LSTM": 4, "GRU": 3}.get(op, 1)))
            gates = w[1]  # dirs x (gates * hidden) rows
            return x[0] * x[1] * w[0] * gates * (x[2] + hidden)
    return 0


def model_stats(proto: onnx.ModelProto) -> dict[str, Any]:
    """Operator counts, total MACs and parameter count/bytes of a shape-inferred model."""
    shapes = _shapes(proto)
    ops = Counter(n.op_type for n in proto.graph.node)
    macs = sum(_node_macs(n, shapes) for n in proto.graph.node)
    params = 0
    param_bytes = 0
    # Some exporters (PaddlePaddle) keep weights in Constant nodes, not initializers.
    constants = [
        a.t for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    ]
    for t in list(proto.graph.initializer) + constants:
        n = int(np.prod(t.dims, dtype=np.int64))
        params += n
        try:
            param_bytes += n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except Exception:
            pass
    return {
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "macs": int(macs),
        "params": int(params),
        "param_bytes": int(param_bytes),
    }
