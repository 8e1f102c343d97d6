"""Write a standard QDQ ONNX model from a prepared float model and its int8 parameters.

Each quantized activation ``t`` becomes ``DequantizeLinear(QuantizeLinear(t))`` for
all its readers (a graph output keeps its float value). Each quantized layer's weight
becomes ``DequantizeLinear(W_q int8, s_w[C], 0, axis)`` and its bias
``DequantizeLinear(b_q int32, s_x * s_w[C], 0)``. This is the layout ONNX Runtime's
own ``quantize_static`` writes (QOperator fusion turns DQ->Conv->Q into QLinearConv),
and the layout edgec's ``quantize-int8`` pass lowers to integer kernels, so one file
carries the quantization to both.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence

import numpy as np
import onnx
from edgec.passes.quantize.onnx_graph import Anchor, Graph
from edgec.passes.quantize.scheme import (
    ActParams,
    bias_min_weight_scales,
    bias_scale,
    quantize_bias,
    quantize_weight,
)
from onnx import helper, numpy_helper


def selected(anchors: Sequence[Anchor], include: Container[str] | None) -> list[Anchor]:
    return [a for a in anchors if include is None or a.name in include]


def to_qdq(model: onnx.ModelProto, anchors: Sequence[Anchor],
           params: Mapping[str, ActParams], include: Container[str] | None = None,
           extra: Sequence[str] = ()) -> onnx.ModelProto:
    """A QDQ copy of prepared ``model``: the anchors in ``include`` (all if None) in int8,
    and the ``extra`` activations (``onnx_graph.npu_tensors``) quantized as well."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = Graph(out)
    chosen = selected(anchors, include)
    new_nodes: list[tuple[str | None, onnx.NodeProto]] = []  # (insert after tensor, node)
    inits: list[onnx.TensorProto] = []

    # Weights and biases: replace the float initializers by int8 / int32 + DQ.
    for a in chosen:
        w = g.const(a.weight)
        assert w is not None
        s_x = params[a.x].scale
        b = g.const(a.bias) if a.bias is not None else None
        floor = bias_min_weight_scales(b, s_x) if b is not None else None
        wq, sw = quantize_weight(w, a.weight_axis, floor)
        qname = a.weight + "_quantized"
        inits += [
            numpy_helper.from_array(wq, qname),
            numpy_helper.from_array(sw, qname + "_scale"),
            numpy_helper.from_array(np.zeros(sw.shape, np.int8), qname + "_zero_point"),
        ]
        new_nodes.append((None, helper.make_node(
            "DequantizeLinear", [qname, qname + "_scale", qname + "_zero_point"],
            [a.weight + "_dequantized"], name=a.name + ".weight_dq", axis=a.weight_axis)))
        _rename_input(out, a.weight, a.weight + "_dequantized")
        if a.bias is not None:
            assert b is not None
            bname = a.bias + "_quantized"
            inits += [
                numpy_helper.from_array(quantize_bias(b, s_x, sw), bname),
                numpy_helper.from_array(bias_scale(s_x, sw), bname + "_scale"),
                numpy_helper.from_array(np.zeros(sw.shape, np.int32), bname + "_zero_point"),
            ]
            new_nodes.append((None, helper.make_node(
                "DequantizeLinear", [bname, bname + "_scale", bname + "_zero_point"],
                [a.bias + "_dequantized"], name=a.name + ".bias_dq", axis=0)))
            _rename_input(out, a.bias, a.bias + "_dequantized")

    # Activations: one Q/DQ pair per tensor, shared by all readers.
    tensors: dict[str, None] = {}
    for a in chosen:
        tensors.setdefault(a.x)
        tensors.setdefault(a.y)
    for t in extra:
        tensors.setdefault(t)
    for t in tensors:
        p = params[t]
        base = _safe(t)
        inits += [
            numpy_helper.from_array(np.array(p.scale, np.float32), base + "_scale"),
            numpy_helper.from_array(np.array(p.zero_point, np.int8), base + "_zero_point"),
        ]
        _rename_input(out, t, t + "_dequantized")
        new_nodes.append((t, helper.make_node(
            "QuantizeLinear", [t, base + "_scale", base + "_zero_point"], [t + "_quantized"],
            name=base + "_Q")))
        new_nodes.append((t, helper.make_node(
            "DequantizeLinear", [t + "_quantized", base + "_scale", base + "_zero_point"],
            [t + "_dequantized"], name=base + "_DQ")))

    for t in list(out.graph.initializer):
        if any(t.name == a.weight or t.name == a.bias for a in chosen):
            out.graph.initializer.remove(t)
    out.graph.initializer.extend(inits)
    _insert(out, new_nodes)
    onnx.checker.check_model(out)
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    """Make every node reading ``old`` read ``new`` instead (graph outputs unchanged)."""
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def _insert(model: onnx.ModelProto, new: list[tuple[str | None, onnx.NodeProto]]) -> None:
    """Put each new node right after the producer of its tensor (first if none),
    keeping the node list topologically sorted, as ONNX requires."""
    nodes = list(model.graph.node)
    after: dict[str | None, list[onnx.NodeProto]] = {}
    for t, n in new:
        after.setdefault(t, []).append(n)
    ordered = list(after.get(None, []))
    graph_inputs = {i.name for i in model.graph.input}
    for t in list(after):
        if t in graph_inputs:
            ordered += after.pop(t)
    for n in nodes:
        ordered.append(n)
        for o in n.output:
            ordered += after.get(o, [])
    del model.graph.node[:]
    model.graph.node.extend(ordered)
