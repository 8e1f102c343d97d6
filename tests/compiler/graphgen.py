"""Random small ONNX graphs from a seed, for differential fuzzing against ONNX Runtime.

``random_model(seed)`` builds a chain of 1-5 ops over one or two float32 inputs:
elementwise (unary and broadcasting binary), MatMul, Conv, pooling, Reshape,
Transpose, Concat, Softmax and reductions. Every step asks ONNX shape inference for
the new tensor's shape, so each op is built for the shape it really gets. The same
seed always gives the same model and inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18

_UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Erf", "Softsign"]
_UNARY_ATTR = {"LeakyRelu": {"alpha": 0.1}, "Elu": {"alpha": 0.7}, "HardSigmoid": {}}
_BINARY = ["Add", "Sub", "Mul", "Max", "Min"]
_REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"]


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.feeds: dict[str, np.ndarray] = {}
        self.ops: list[str] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def input(self, shape: tuple[int, ...]) -> str:
        name = self.name("x")
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.feeds[name] = self.rng.uniform(-2, 2, shape).astype(np.float32)
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self._n}", **attrs))
        self.ops.append(op)
        return out

    def model(self, outputs: list[str], shape: tuple[int, ...] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "fuzz", self.inputs,
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model

    def shape(self, tensor: str, outputs: list[str]) -> tuple[int, ...]:
        inferred = onnx.shape_inference.infer_shapes(self.model(outputs), strict_mode=True)
        for v in list(inferred.graph.value_info) + list(inferred.graph.output):
            if v.name == tensor:
                return tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        for v in self.inputs:
            if v.name == tensor:
                return tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        raise AssertionError(f"no shape for {tensor}")


Step = Callable[[_Builder, str, tuple[int, ...]], str]


def _unary(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    ops = _UNARY + list(_UNARY_ATTR)
    op = ops[b.rng.integers(len(ops))]
    return b.node(op, [x], **_UNARY_ATTR.get(op, {}))


def _binary(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    op = _BINARY[b.rng.integers(len(_BINARY))]
    # A broadcastable shape: a suffix of s with some dims set to 1.
    k = int(b.rng.integers(0, len(s) + 1))
    shape = tuple(d if b.rng.random() < 0.6 else 1 for d in s[len(s) - k:])
    other = b.input(shape) if b.rng.random() < 0.5 else b.const(
        b.rng.uniform(-2, 2, shape).astype(np.float32))
    return b.node(op, [x, other] if b.rng.random() < 0.7 else [other, x])


def _div(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    # Divisor bounded away from zero, so both sides compute finite values.
    d = b.rng.uniform(0.5, 2, s[-1:]).astype(np.float32) * b.rng.choice([-1, 1])
    return b.node("Div", [x, b.const(d.astype(np.float32))])


def _matmul(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    m = int(b.rng.integers(1, 9))
    w = b.rng.uniform(-1, 1, (s[-1], m)).astype(np.float32)
    return b.node("MatMul", [x, b.const(w)])


def _conv(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    if len(s) != 4:
        return _unary(b, x, s)
    _, c, h, w = s
    group = int(b.rng.choice([g for g in (1, 2, c) if c % g == 0]))
    cout = group * int(b.rng.integers(1, 4))
    k = (int(b.rng.integers(1, min(h, 3) + 1)), int(b.rng.integers(1, min(w, 3) + 1)))
    pads = [int(p) for p in b.rng.integers(0, 2, 4)]
    strides = [int(v) for v in b.rng.integers(1, 3, 2)]
    weight = b.rng.uniform(-1, 1, (cout, c // group, *k)).astype(np.float32)
    inputs = [x, b.const(weight)]
    if b.rng.random() < 0.5:
        inputs.append(b.const(b.rng.uniform(-1, 1, cout).astype(np.float32)))
    return b.node("Conv", inputs, kernel_shape=list(k), pads=pads, strides=strides, group=group)


def _pool(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    if len(s) != 4:
        return _unary(b, x, s)
    r = b.rng.random()
    if r < 0.2:
        return b.node("GlobalAveragePool", [x])
    if r < 0.3:
        return b.node("GlobalMaxPool", [x])
    k = [int(b.rng.integers(1, min(s[2], 3) + 1)), int(b.rng.integers(1, min(s[3], 3) + 1))]
    strides = [int(v) for v in b.rng.integers(1, 3, 2)]
    op = "MaxPool" if b.rng.random() < 0.5 else "AveragePool"
    # Pads smaller than the kernel, as ONNX requires.
    pads = [int(b.rng.integers(0, k[i % 2])) if k[i % 2] > 1 else 0 for i in range(4)]
    attrs: dict[str, object] = {"kernel_shape": k, "strides": strides, "pads": pads}
    if op == "AveragePool":
        attrs["count_include_pad"] = int(b.rng.integers(0, 2))
    return b.node(op, [x], **attrs)


def _reshape(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    total = int(np.prod(s))
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    first = int(b.rng.choice(divisors))
    target = [first, -1] if b.rng.random() < 0.5 else [first, total // first]
    if b.rng.random() < 0.3:
        target = [1, *target]
    return b.node("Reshape", [x, b.const(np.array(target, np.int64))])


def _transpose(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    return b.node("Transpose", [x], perm=[int(p) for p in b.rng.permutation(len(s))])


def _concat(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    axis = int(b.rng.integers(-len(s), len(s)))
    shape = list(s)
    shape[axis] = int(b.rng.integers(1, 4))
    other = b.input(tuple(shape)) if b.rng.random() < 0.5 else b.const(
        b.rng.uniform(-2, 2, shape).astype(np.float32))
    return b.node("Concat", [x, other] if b.rng.random() < 0.5 else [other, x], axis=axis)


def _softmax(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    op = "Softmax" if b.rng.random() < 0.7 else "LogSoftmax"
    return b.node(op, [x], axis=int(b.rng.integers(-len(s), len(s))))


def _reduce(b: _Builder, x: str, s: tuple[int, ...]) -> str:
    op = _REDUCE[b.rng.integers(len(_REDUCE))]
    n = int(b.rng.integers(1, len(s) + 1))
    axes = sorted(int(a) for a in b.rng.choice(len(s), n, replace=False))
    keep = int(b.rng.integers(0, 2))
    if not keep and n == len(s):
        keep = 1  # keep at least rank 1, so later steps have an axis to work on
    return b.node(op, [x, b.const(np.array(axes, np.int64))], keepdims=keep)


STEPS: list[Step] = [
    _unary, _binary, _div, _matmul, _conv, _pool, _reshape, _transpose, _concat, _softmax,
    _reduce,
]


def random_model(seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]:
    """(model, feeds, op types used) for ``seed``; checked by ONNX's checker."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    rank = int(rng.choice([2, 3, 4, 4, 4]))
    shape = tuple(int(d) for d in rng.integers(1, 7, rank))
    if rank == 4:
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 5)), *[int(d) for d in rng.integers(2, 9, 2)])
    x = b.input(shape)
    s = shape
    for _ in range(int(rng.integers(1, 6))):
        step = STEPS[int(rng.integers(len(STEPS)))]
        x = step(b, x, s)
        s = b.shape(x, [x])
    model = b.model([x], s)
    onnx.checker.check_model(model, full_check=True)
    return model, b.feeds, b.ops


RTOL, ATOL = 1e-3, 1e-4


def compare(where: str, got: list[np.ndarray], expected: list[np.ndarray],
            rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None if ``got`` matches ONNX Runtime's ``expected``, else a one-line description.

    An element passes when ``|got - expected| <= atol * scale + rtol * |expected|``,
    with ``scale = max(1, max |expected|)``; infinities and NaNs must sit in the same places.
    """
    if len(got) != len(expected):
        return f"{where}: {len(got)} outputs, ONNX Runtime gives {len(expected)}"
    for g, e in zip(got, expected):
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"{where}: output {g.dtype}{list(g.shape)}, ONNX Runtime {e.dtype}{list(e.shape)}"
        scale = max(1.0, float(np.abs(e).max(initial=0.0)))
        err = np.abs(g.astype(np.float64) - e) - (atol * scale + rtol * np.abs(e))
        if not np.all(np.isfinite(g) == np.isfinite(e)) or np.nanmax(err, initial=-1.0) > 0:
            worst = float(np.nanmax(np.abs(g.astype(np.float64) - e), initial=0.0))
            return f"{where}: max abs error {worst:.3g} (output scale {scale:.3g})"
    return None


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _describe(seed: int, ops: list[str]) -> str:
    return f"seed {seed} ({' -> '.join(ops)})"


def _raised(where: str, exc: Exception) -> str:
    return f"{where}: edgec raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def differential(seed: int, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """Compile ``random_model(seed)`` alone with edgec and compare with ONNX Runtime.

    Returns None when they agree, else a one-line description (with the seed). An
    exception from edgec other than a clean refusal is reported, not raised.
    """
    from edgec.inprocess import compile_proto

    model, feeds, ops = random_model(seed)
    where = _describe(seed, ops)
    expected = _reference(model, feeds)
    try:
        compiled = compile_proto(model)
        got = compiled.run([feeds[s.name] for s in compiled.inputs])
    except Exception as exc:  # noqa: BLE001 - the fuzzer reports any failure, it never raises
        return _raised(where, exc)
    return compare(where, got, expected, rtol, atol)


def batched_model(
    seeds: list[int],
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], dict[int, list[str]]]:
    """One ONNX model holding ``random_model(s)`` for every seed as disjoint subgraphs.

    Every name of case ``s`` (inputs, initializers, intermediate tensors, outputs,
    nodes) gets the prefix ``s{s}_``, so no two cases share a tensor: no path of
    data flows between cases, and each keeps its own inputs and outputs. Returns
    (model, feeds by prefixed name, prefixed output names per seed).
    """
    from onnx import compose

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    feeds: dict[str, np.ndarray] = {}
    outs: dict[int, list[str]] = {}
    for seed in seeds:
        model, case_feeds, _ = random_model(seed)
        prefix = f"s{seed}_"
        graph = compose.add_prefix(model, prefix).graph
        nodes += graph.node
        inits += graph.initializer
        inputs += graph.input
        outputs += graph.output
        feeds.update({prefix + k: v for k, v in case_feeds.items()})
        outs[seed] = [o.name for o in graph.output]
    graph = helper.make_graph(nodes, "fuzz_batch", inputs, outputs, inits)
    merged = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    merged.ir_version = 8
    names = [n for node in nodes for n in node.output] + [i.name for i in inputs + inits]
    assert len(names) == len(set(names)), "cases of a batch share a tensor name"
    onnx.checker.check_model(merged, full_check=True)
    return merged, feeds, outs


def differential_batch(
    seeds: list[int], rtol: float = RTOL, atol: float = ATOL
) -> dict[int, str | None]:
    """``differential`` for many seeds with one edgec compile: seed -> problem or None.

    The cases are compiled together as disjoint subgraphs of one model
    (``batched_model``) and each case's outputs are compared separately with ONNX
    Runtime running that case's own model alone. Why this tests each case as a
    compile of its own would: the cases share no tensor, so nothing that follows
    data edges can mix them. ONNX shape inference and constant folding are per
    node; onnxscript's CSE can only merge nodes with the same inputs (never true
    across cases, whose inputs differ) and its initializer de-duplication can only
    share a constant's value; TVM's FuseOps groups operators along data edges, so
    every fused kernel and its schedule (targets/cpu) comes from one case; legalize
    and the default schedules work one operator or one PrimFunc at a time. What
    differs is the Relax VM's memory plan, which may reuse storage across cases;
    a failure there shows as a batch failure that does not repeat alone (the
    campaign re-runs every failing seed alone and reports that kind separately),
    and the CI test runs its cases alone as well.

    If the batch as a whole fails to compile or run, every seed gets that same
    error line; the caller re-runs them alone to find which one is at fault.
    """
    from edgec.inprocess import compile_proto

    model, feeds, outs = batched_model(seeds)
    try:
        compiled = compile_proto(model)
        got = compiled.run([feeds[s.name] for s in compiled.inputs])
    except Exception as exc:  # noqa: BLE001 - the fuzzer reports any failure, it never raises
        whole = _raised(f"batch of {len(seeds)} seeds {seeds[0]}..{seeds[-1]}", exc)
        return dict.fromkeys(seeds, whole)
    by_name = dict(zip((o.name for o in compiled.outputs), got))
    results: dict[int, str | None] = {}
    for seed in seeds:
        case, case_feeds, ops = random_model(seed)
        mine = [by_name[name] for name in outs[seed]]
        results[seed] = compare(_describe(seed, ops), mine, _reference(case, case_feeds), rtol, atol)
    return results


def ops_of(seed: int) -> list[str]:
    """The op types ``random_model(seed)`` uses, in order."""
    return random_model(seed)[2]
