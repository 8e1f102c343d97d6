"""Expand ONNX function ops that TVM cannot import into their defining subgraphs.

Many newer ONNX operators (Attention, SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss,
RotaryEmbedding, CenterCropPad, ...) are defined by the standard as a *function*: a
subgraph of simpler operators. When TVM has no converter for such an op, or has a
wrong one (``Attention``: TVM maps it to com.microsoft's Attention), the node is
replaced by the standard's body:

    Attention(Q, K, V)  ->  MatMul(Q, Transpose(K)) -> Mul(scale) -> Softmax -> MatMul(V)

How: the schema's body (context-dependent ones are instantiated for the node's
attributes and input types) becomes a model-local function, the node calls it, and
ONNX's own inliner splices it in, renaming its tensors. Bodies may use function ops
themselves, so this repeats a few rounds.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import FunctionProto, helper


def _outputs_used(node: onnx.NodeProto) -> int:
    return sum(1 for o in node.output if o)


# TVM converters that exist but are wrong for some nodes: op -> "expand this node?".
WRONG_IN_TVM: dict[str, Callable[[onnx.NodeProto], bool]] = {
    # TVM maps the name to com.microsoft's Attention, not ONNX's (opset 23).
    "Attention": lambda node: True,
    # TVM returns only Y, not the optional Mean and InvStdDev outputs.
    "LayerNormalization": lambda node: _outputs_used(node) > 1,
}
_DOMAIN = "edgec.expand"
_ROUNDS = 4


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def _types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type for v in list(g.input) + list(g.value_info) + list(g.output)}
    for t in g.initializer:
        types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
    return types


def _body(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]) -> FunctionProto | None:
    """The standard's body for ``node`` at ``opset``, or None if it has none we can use."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:
        return None
    # Defaults the body may reference, as ONNX's own test expansion does.
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value.name:
            node.attribute.append(attr.default_value)
    fn = FunctionProto()
    plain = [v for v in schema.function_opset_versions if v <= opset]
    context = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if plain:
        fn.ParseFromString(schema.get_function_with_opset_version(max(plain)))
    elif context:
        if any(i and i not in types for i in node.input):
            return None
        input_types = [
            (types[i] if i else onnx.TypeProto()).SerializeToString() for i in node.input
        ]
        fn.ParseFromString(
            schema.get_context_dependent_function_with_opset_version(
                max(context), node.SerializeToString(), input_types
            )
        )
    else:
        return None
    return fn if fn.node else None


def _never(node: onnx.NodeProto) -> bool:
    return False


def expand_functions(model: onnx.ModelProto, supported: set[str]) -> onnx.ModelProto:
    """Return ``model`` with every op outside ``supported`` (or wrong in TVM) expanded."""
    opset = _opset(model)
    out = model
    for _ in range(_ROUNDS):
        targets = [
            i for i, n in enumerate(out.graph.node)
            if n.domain in ("", "ai.onnx")
            and (n.op_type not in supported or WRONG_IN_TVM.get(n.op_type, _never)(n))
        ]
        if not targets:
            break
        work = onnx.ModelProto()
        work.CopyFrom(out)
        types = _types(work)
        changed = False
        for k in targets:
            wnode = work.graph.node[k]
            fn = _body(wnode, opset, types)
            if fn is None:
                continue
            fn.domain, fn.name = _DOMAIN, f"{wnode.op_type}_{k}"
            # The body's attribute references resolve against the calling node.
            del fn.attribute[:]
            fn.attribute.extend(a.name for a in wnode.attribute)
            work.functions.append(fn)
            wnode.domain, wnode.op_type = _DOMAIN, fn.name
            changed = True
        if not changed:
            break
        if not any(o.domain == _DOMAIN for o in work.opset_import):
            work.opset_import.append(helper.make_opsetid(_DOMAIN, 1))
        try:
            from onnx import inliner

            work = inliner.inline_local_functions(work)
        except Exception:
            break
        del work.opset_import[:]
        work.opset_import.extend(o for o in out.opset_import if o.domain != _DOMAIN)
        out = work
    return out
