"""The ONNX side of quantization: normalise the float graph, then find the layers to
quantize ("anchors").

``prepare`` (on a model already through ``frontend.simplify``):

- opset >= 13 (per-axis QuantizeLinear/DequantizeLinear need it);
- BatchNormalization after a Conv is folded into it: with ``s = gamma / sqrt(var+eps)``,
  ``W' = W * s[c]`` and ``b' = (b - mean) * s + beta`` (the int8 weights must be the
  folded ones, or the layer's true scale is unknown);
- Gemm with a constant B becomes ``MatMul(A, alpha * B^T?) + beta * C``;
- (``conv_add``, the "npu" style) a Conv or ConvTranspose without bias followed by an
  ``Add`` of a constant per-channel vector (shape ``[C]``, ``[C,1,1]`` or ``[1,C,1,1]``;
  PaddlePaddle writes SE-block convs and DB heads this way) takes the vector as its
  bias (so it is quantized to int32 with the conv), and a BatchNormalization after such
  a ConvTranspose is folded into it as well (scaling the weights' output axis, 1).

An anchor is a 2-D Conv or a MatMul whose weight is a constant (in the npu style also a
2-D ConvTranspose with one group), with its bias (a Conv's third input, or an ``Add`` of
a constant vector after a MatMul) and a following Relu or Clip (fused as clamp bounds)
when the intermediate tensors have no other reader. Its input ``x`` and final output
``y`` are the activations to calibrate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_OPSET = 13


@dataclass(frozen=True)
class Anchor:
    """One quantizable layer of the prepared float graph."""

    name: str  # the Conv/MatMul node's name (unique after prepare)
    kind: str  # "conv", "conv_transpose" or "matmul"
    x: str  # activation input tensor
    weight: str  # initializer name
    bias: str | None  # initializer name
    bias_node: str | None  # the Add node of a MatMul's bias
    act: str | None  # "relu" or "clip"
    act_node: str | None
    clip: tuple[float, float] | None  # the Clip's bounds
    y: str  # the tensor after bias and activation

    @property
    def weight_axis(self) -> int:
        """The output-channel axis of the weight: O of OIHW, O of a ConvTranspose's IOHW,
        N of a [K, N] MatMul."""
        return 0 if self.kind == "conv" else 1


class Graph:
    """Index of an ONNX graph: producers, consumers, constant values."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in g.output}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def sole_reader(self, tensor: str) -> onnx.NodeProto | None:
        """The only node reading ``tensor``, if it is not also a graph output."""
        readers = self.consumers.get(tensor, [])
        if len(readers) != 1 or tensor in self.outputs:
            return None
        return readers[0]


# ---------------------------------------------------------------------------- prepare


def prepare(model: onnx.ModelProto, conv_add: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` with opset >= 13, BN folded into convs and Gemm as MatMul
    (and, if ``conv_add``, per-channel Adds after bias-less convs and transposed convs
    folded into them, then BN after a transposed conv)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if _opset(out) < MIN_OPSET:
        out = onnx.version_converter.convert_version(out, MIN_OPSET)
    _name_nodes(out)
    _fold_batchnorm(out)
    if conv_add:
        _fold_conv_add(out)
        _fold_batchnorm(out, transposed=True)  # ConvTranspose -> Add(bias) -> BN
    _gemm_to_matmul(out)
    _drop_unused_initializers(out)
    return out


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _name_nodes(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def _replace_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value, name))
            return
    model.graph.initializer.append(numpy_helper.from_array(value, name))


def _group(n: onnx.NodeProto) -> int:
    return next((a.i for a in n.attribute if a.name == "group"), 1)


def _out_axis(conv: onnx.NodeProto) -> int | None:
    """The weight's output-channel axis: 0 for a Conv, 1 for a one-group ConvTranspose
    (IOHW), None for anything else."""
    if conv.op_type == "Conv":
        return 0
    if conv.op_type == "ConvTranspose" and _group(conv) == 1:
        return 1
    return None


def _fold_batchnorm(model: onnx.ModelProto, transposed: bool = False) -> None:
    """BN after a Conv (with ``transposed``, after a one-group ConvTranspose instead)
    folded into its weights and bias."""
    g = Graph(model)
    drop = []
    for bn in list(model.graph.node):
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = g.producer.get(bn.input[0])
        if conv is None or conv.op_type != ("ConvTranspose" if transposed else "Conv") or \
                _out_axis(conv) is None or g.sole_reader(conv.output[0]) is not bn:
            continue
        w = g.const(conv.input[1])
        params = [g.const(n) for n in bn.input[1:5]]
        if w is None or any(p is None for p in params) or len(g.consumers[conv.input[1]]) != 1:
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)  # type: ignore[arg-type]
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        b = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        s = gamma / np.sqrt(var + eps)
        shape = [1] * w.ndim
        shape[_out_axis(conv)] = -1  # type: ignore[index]
        w_f = (w.astype(np.float64) * s.reshape(shape)).astype(np.float32)
        b0 = np.zeros_like(s) if b is None else b.astype(np.float64)
        b_f = ((b0 - mean) * s + beta).astype(np.float32)
        _replace_init(model, conv.input[1], w_f)
        bias_name = conv.name + ".bias_folded"
        _replace_init(model, bias_name, b_f)
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        drop.append(bn)
    for n in drop:
        model.graph.node.remove(n)


def _fold_conv_add(model: onnx.ModelProto) -> None:
    """``Add(Conv(x, W), b)`` with a constant per-channel ``b`` -> ``Conv(x, W, b)`` (and
    the same for a one-group ConvTranspose)."""
    g = Graph(model)
    drop = []
    for add in list(model.graph.node):
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for i in (0, 1):
            conv = g.producer.get(add.input[i])
            other = add.input[1 - i]
            if conv is not None and _out_axis(conv) is not None and other in g.inits:
                break
        else:
            continue
        if (len(conv.input) > 2 and conv.input[2]) or g.sole_reader(conv.output[0]) is not add:
            continue
        w, b = g.const(conv.input[1]), g.const(other)
        if w is None or b is None or w.ndim != 4:
            continue
        n_out = w.shape[_out_axis(conv)]  # type: ignore[index]
        if b.size != n_out or b.ndim > 4 or (b.ndim >= 3 and b.shape[-2:] != (1, 1)) or \
                (b.ndim == 4 and b.shape[0] != 1) or (b.ndim == 1 and b.shape[0] != n_out):
            continue
        bias_name = conv.name + ".bias_added"
        _replace_init(model, bias_name, b.reshape(-1).astype(np.float32))
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = add.output[0]
        drop.append(add)
    for n in drop:
        model.graph.node.remove(n)


def _gemm_to_matmul(model: onnx.ModelProto) -> None:
    g = Graph(model)
    nodes = list(model.graph.node)
    for idx, n in enumerate(nodes):
        if n.op_type != "Gemm":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        b = g.const(n.input[1])
        if b is None or a.get("transA", 0) or len(g.consumers[n.input[1]]) != 1:
            continue
        w = b.T if a.get("transB", 0) else b
        w = (w * a.get("alpha", 1.0)).astype(np.float32)
        _replace_init(model, n.input[1], w)
        has_c = len(n.input) > 2 and n.input[2]
        mm_out = n.output[0] + ".matmul" if has_c else n.output[0]
        new = [helper.make_node("MatMul", [n.input[0], n.input[1]], [mm_out], name=n.name)]
        if has_c:
            c = g.const(n.input[2])
            if c is None:
                continue
            cname = n.name + ".bias"
            _replace_init(model, cname, (c * a.get("beta", 1.0)).astype(np.float32))
            new.append(helper.make_node("Add", [mm_out, cname], [n.output[0]],
                                        name=n.name + ".bias_add"))
        pos = list(model.graph.node).index(n)
        model.graph.node.remove(n)
        for k, m in enumerate(new):
            model.graph.node.insert(pos + k, m)


# ---------------------------------------------------------------------------- anchors


def find_anchors(model: onnx.ModelProto, transposed: bool = False) -> list[Anchor]:
    """The quantizable layers of a prepared model, in graph order (with ``transposed``,
    one-group 2-D ConvTranspose layers too: the npu style, whose accelerator runs them;
    edgec's CPU int8 kernels do not, so there they stay float)."""
    g = Graph(model)
    anchors = []
    for n in model.graph.node:
        a = _anchor(g, n, transposed)
        if a is not None:
            anchors.append(a)
    return anchors


def _anchor(g: Graph, n: onnx.NodeProto, transposed: bool = False) -> Anchor | None:
    if n.op_type == "Conv" or (transposed and n.op_type == "ConvTranspose" and _group(n) == 1):
        w = g.const(n.input[1])
        if w is None or w.ndim != 4 or n.input[1] not in g.inits:
            return None
        bias = n.input[2] if len(n.input) > 2 and n.input[2] in g.inits else None
        if len(n.input) > 2 and n.input[2] and bias is None:
            return None  # a computed bias: leave the layer in float
        kind = "conv" if n.op_type == "Conv" else "conv_transpose"
        bias_node, out = None, n.output[0]
    elif n.op_type == "MatMul":
        w = g.const(n.input[1])
        if w is None or w.ndim != 2 or n.input[1] not in g.inits:
            return None
        kind, bias, bias_node, out = "matmul", None, None, n.output[0]
        add = g.sole_reader(out)
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == out else add.input[0]
            c = g.const(other)
            if other in g.inits and c is not None and c.shape == (w.shape[1],):
                bias, bias_node, out = other, add.name, add.output[0]
    else:
        return None
    if len(g.consumers[n.input[1]]) != 1 or (bias is not None and len(g.consumers[bias]) != 1):
        return None  # shared weights: quantizing them in place would change another layer
    act, act_node, clip = None, None, None
    nxt = g.sole_reader(out)
    if nxt is not None and nxt.op_type == "Relu":
        act, act_node, out = "relu", nxt.name, nxt.output[0]
    elif nxt is not None and nxt.op_type == "Clip":
        lo = g.const(nxt.input[1]) if len(nxt.input) > 1 and nxt.input[1] else None
        hi = g.const(nxt.input[2]) if len(nxt.input) > 2 and nxt.input[2] else None
        if lo is not None and hi is not None:
            act, act_node, out = "clip", nxt.name, nxt.output[0]
            clip = (float(lo), float(hi))
    return Anchor(n.name, kind, n.input[0], n.input[1], bias, bias_node, act, act_node, clip, out)


# ---------------------------------------------------------------------- npu style

# Ops an int8 accelerator runs between int8 tensors (edge-npu: LUT chains, element-wise
# add/mul, pools, reshape). With ``style="npu"`` the inputs and outputs of these are
# quantized too (as ONNX Runtime's quantize_static and TFLite do), so every such op
# reads and writes int8; only tensors inside a chain of element-wise ops on one tensor
# stay float (the chain becomes one 256-entry table).
CHAIN_UNARY = {"Relu": 1, "Clip": 2, "Sigmoid": 1, "Tanh": 1, "HardSigmoid": 3, "Erf": 1,
               "Exp": 1, "Neg": 1, "Abs": 1, "LeakyRelu": 2, "Softplus": 3, "Elu": 3}
CHAIN_SCALAR = {"Add", "Sub", "Mul", "Div", "Max", "Min"}
NPU_OTHER = {"Add", "Mul", "MaxPool", "GlobalAveragePool", "Reshape", "Flatten",
             "HardSwish", "AveragePool", "Resize", "Concat"}
DATA_ONLY = {"Resize"}  # ops whose other inputs (roi, scales, sizes) are not activations
MAX_CHAIN = 4  # element-wise ops per table (edge_npu.patterns.MAX_CHAIN, in Relax ops)


def _chain_weight(g: Graph, n: onnx.NodeProto) -> int:
    """Relax ops of ``n`` if it is an element-wise op on one tensor (0 if it is not)."""
    if n.op_type in CHAIN_UNARY:
        return CHAIN_UNARY[n.op_type]
    if n.op_type in CHAIN_SCALAR and len(n.input) == 2:
        consts = [g.const(i) for i in n.input]
        if sum(c is not None for c in consts) == 1 and all(c.size == 1 for c in consts
                                                           if c is not None):
            return 1
    return 0


def npu_tensors(model: onnx.ModelProto, anchors: list[Anchor]) -> list[str]:
    """Float activations to quantize besides the anchors' (``style="npu"``), in order."""
    g = Graph(model)
    covered = {n for a in anchors for n in (a.name, a.bias_node, a.act_node) if n}
    anchor_tensors = {t for a in anchors for t in (a.x, a.y)}
    chain_len: dict[str, int] = {}  # tensor -> ops of the float chain that produced it
    internal: set[str] = set()
    out: dict[str, None] = {}
    npu_nodes: set[str] = set()  # the ops besides the anchors that the NPU runs

    def activation(t: str) -> bool:
        return bool(t) and g.const(t) is None

    for n in model.graph.node:
        if n.name in covered:
            continue
        weight = _chain_weight(g, n)
        if not weight and n.op_type not in NPU_OTHER:
            continue
        npu_nodes.add(n.name)
        ins = [t for t in (n.input[:1] if n.op_type in DATA_ONLY else n.input)
               if activation(t)]
        length = weight
        for t in ins:
            producer = g.producer.get(t)
            pw = _chain_weight(g, producer) if producer is not None and \
                producer.name not in covered else 0
            inside = (weight and pw and t not in anchor_tensors and len(ins) == 1 and
                      g.sole_reader(t) is n and chain_len.get(t, pw) + weight <= MAX_CHAIN)
            if inside:
                internal.add(t)
                out.pop(t, None)
                length = chain_len.get(t, pw) + weight
            else:
                out.setdefault(t)
        for t in n.output:
            if t and t not in g.outputs:
                chain_len[t] = length
                out.setdefault(t)
    kept = _anchored(g, model, covered, npu_nodes)
    on_npu = covered | npu_nodes
    # an op's output that only CPU ops read stays float: int8 there would only move the
    # op (no MACs) onto the NPU, at the cost of one more rounding of a tensor the CPU
    # reads in float anyway (a transformer's residual stream before layer norm, whose
    # outlier channels one int8 scale cannot hold)
    to_cpu = {t for t in out if g.consumers.get(t) and t in g.producer
              and all(r.name not in on_npu for r in g.consumers[t])}
    return [t for t in out if t not in internal and t not in anchor_tensors and t in kept
            and t not in to_cpu]


def _anchored(g: Graph, model: onnx.ModelProto, anchor_nodes: set[str],
              npu_nodes: set[str]) -> set[str]:
    """Tensors touching an NPU op that reaches an anchor through NPU ops.

    An element-wise op whose int8 neighbours are all CPU ops (a transformer's attention
    mask add between an activation x activation MatMul and Softmax, the embedding sums
    after Gather) would be an NPU segment without MACs; quantizing it costs accuracy (a
    -1e4 mask in one int8 scale wipes out the logits) and gains nothing."""
    parent = {n: n for n in anchor_nodes | npu_nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in model.graph.node:
        if n.name not in parent:
            continue
        for t in n.input:
            producer = g.producer.get(t)
            if producer is not None and producer.name in parent:
                parent[find(producer.name)] = find(n.name)
    roots = {find(n) for n in anchor_nodes}
    kept: set[str] = set()
    for n in model.graph.node:
        if n.name in parent and find(n.name) in roots:
            kept.update(t for t in (*n.input, *n.output) if t)
    return kept
