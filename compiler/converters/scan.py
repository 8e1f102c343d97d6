"""Scan (opset 9+), which TVM's importer lacks, unrolled in the ONNX graph.

edgec compiles static shapes, so a Scan's iteration count (the scan inputs' length
along their scan axis) is known before import. The node is replaced by that many
copies of its body, chained through the state variables:

    Scan(s0, x; body)  with x of length L along axis a
      -> for t in 0..L-1:  x_t = Gather(x, t, axis=a)            (L-1-t if reversed)
                           s_{t+1}, y_t = body(s_t, x_t)          (tensors renamed per t)
         outputs: s_L, Concat(Unsqueeze(y_t, out_axis) for t)    (reversed order if reversed)

Body tensors are renamed per iteration; names the body reads from the enclosing graph
keep theirs. Left unchanged (and so reported unsupported): opset-8 Scan (batch axis and
sequence_lens), unknown or zero lengths, more than ``MAX_STEPS`` iterations, and bodies
that themselves hold subgraphs.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_STEPS = 512


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _ints(node: onnx.NodeProto, name: str, n: int) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return [0] * n


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001  no shapes: every Scan stays as it is (reported unsupported)
        return {}
    g = inferred.graph
    out: dict[str, list[int | None]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in g.initializer:
        out[t.name] = list(t.dims)
    return out


def unroll_scans(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` with every top-level Scan it can unroll unrolled (a copy if any)."""
    g = model.graph
    if not any(n.op_type == "Scan" and n.domain in ("", "ai.onnx") for n in g.node):
        return model
    opset = _opset(model)
    if opset < 9:
        return model
    shapes = _shapes(model)
    taken = {v for n in g.node for v in [*n.input, *n.output]}
    taken |= {v.name for v in [*g.input, *g.output]} | {t.name for t in g.initializer}
    counter = itertools.count()

    def fresh(hint: str) -> str:
        while True:
            name = f"{hint}__u{next(counter)}"
            if name not in taken:
                taken.add(name)
                return name

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    changed = False
    for node in g.node:
        steps = _unrolled(node, shapes, opset, fresh) if node.op_type == "Scan" else None
        if steps is None:
            nodes.append(node)
            continue
        new_nodes, new_inits = steps
        nodes.extend(new_nodes)
        inits.extend(new_inits)
        changed = True
    if not changed:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    return out


def _unrolled(node: onnx.NodeProto, shapes: dict[str, list[int | None]], opset: int,
              fresh) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The nodes replacing one Scan, or None if it cannot be unrolled."""
    if node.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: a for a in node.attribute}
    body = attrs["body"].g
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in body.node for a in n.attribute):
        return None
    m = attrs["num_scan_inputs"].i
    n_state = len(node.input) - m
    k = len(body.output) - n_state
    in_axes, in_dirs = _ints(node, "scan_input_axes", m), _ints(node, "scan_input_directions", m)
    out_axes = _ints(node, "scan_output_axes", k)
    out_dirs = _ints(node, "scan_output_directions", k)
    lengths = set()
    for j in range(m):
        shape = shapes.get(node.input[n_state + j])
        if not shape:
            return None
        lengths.add(shape[in_axes[j] % len(shape)])
    if len(lengths) != 1:
        return None
    length = lengths.pop()
    if not length or length > MAX_STEPS:
        return None

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(value: np.ndarray, hint: str) -> str:
        name = fresh(hint)
        inits.append(numpy_helper.from_array(value, name))
        return name

    # Body initializers are the same every step: lift them once.
    shared = {t.name: const(numpy_helper.to_array(t), t.name) for t in body.initializer}
    states = list(node.input[:n_state])
    per_step: list[list[str]] = [[] for _ in range(k)]
    for t in range(length):
        names = dict(shared)
        for i, v in enumerate(body.input[:n_state]):
            names[v.name] = states[i]
        for j, v in enumerate(body.input[n_state:]):
            index = t if in_dirs[j] == 0 else length - 1 - t
            sliced = fresh(f"{v.name}_t{t}")
            nodes.append(helper.make_node(
                "Gather", [node.input[n_state + j], const(np.array(index, np.int64), "step")],
                [sliced], axis=in_axes[j]))
            names[v.name] = sliced
        for bnode in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(bnode)
            copy.name = f"{bnode.name}_t{t}" if bnode.name else ""
            del copy.input[:]
            copy.input.extend(names.get(i, i) if i else "" for i in bnode.input)
            del copy.output[:]
            for o in bnode.output:
                if o:
                    names[o] = fresh(f"{o}_t{t}")
                copy.output.append(names[o] if o else "")
            nodes.append(copy)
        results = [names.get(v.name, v.name) for v in body.output]
        states = results[:n_state]
        for i in range(k):
            per_step[i].append(results[n_state + i])

    for i, out in enumerate(node.output[:n_state]):
        if out:
            nodes.append(helper.make_node("Identity", [states[i]], [out]))
    for i, out in enumerate(node.output[n_state:]):
        if not out:
            continue
        steps = per_step[i] if out_dirs[i] == 0 else per_step[i][::-1]
        axis = out_axes[i]
        parts = []
        for s in steps:
            part = fresh(f"{out}_part")
            if opset >= 13:
                nodes.append(helper.make_node(
                    "Unsqueeze", [s, const(np.array([axis], np.int64), "axes")], [part]))
            else:
                nodes.append(helper.make_node("Unsqueeze", [s], [part], axes=[axis]))
            parts.append(part)
        # Concat's axis is in the output's rank; Unsqueeze took the same (possibly negative) axis.
        nodes.append(helper.make_node("Concat", parts, [out], axis=axis))
    return nodes, inits
