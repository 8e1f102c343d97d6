"""``edgec.onnx_backend``: an ``onnx.backend.base.Backend`` on the host target.

edgec compiles static shapes, so the backend specialises on the inputs it is given:

- **Shapes.** ``prepare`` only checks the model; each ``run`` fixes every graph input
  to the shape of the array passed for it and compiles (cached per signature).
- **Shape and axis inputs.** An input that sits in a slot listed in ``STATIC_SLOTS``
  (Reshape's shape, Slice's starts/ends/axes/steps, Pad's pads, reduction axes,
  Resize's scales/sizes, TopK's K, quantization scales, ...) is turned into an
  initializer holding the value passed at run time, so the optimizer folds it as it
  would fold the constant a real export carries there. Inputs in data slots are never
  folded: the compiled code computes them. The cache key includes folded values.
- **Narrow element types.** float8, float4, int4/uint4 and int2/uint2 tensors (numpy
  holds them through ml_dtypes) are carried as bytes; ``edgec.converters.narrow_types``
  rewrites the casts and (de)quantizations on them, and ``run`` converts the arrays
  passed and returned. A graph using them elsewhere is refused as unsupported.
- **Scan** is unrolled over its (now static) length (``edgec.converters.scan``), also
  where it appears inside an expanded function op (LinearAttention).

Usage: ``edgec.onnx_backend.run_model(model, [x, shape])`` or ``prepare(model).run(...)``,
and ``onnx.backend.test.BackendTest(edgec.onnx_backend, __name__)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from edgec.converters import narrow_types
from edgec.errors import InputError, ModelError
from edgec.frontend import _first_line as first_line
from edgec.inprocess import Compiled, compile_proto
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

_REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]

# op_type -> input positions whose values decide shapes or static parameters.
STATIC_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 2, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "ConstantOfShape": (0,),
    "TopK": (1,),
    "Split": (1,),
    "OneHot": (1, 2),
    "CumSum": (1,),
    "CumProd": (1,),
    "Range": (0, 1, 2),
    "Trilu": (1,),
    "Clip": (1, 2),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "DFT": (1, 2),
    "STFT": (1, 2, 3),
    "MaxUnpool": (2,),
    "AffineGrid": (1,),
    "NonMaxSuppression": (2, 3, 4),
    "BlackmanWindow": (0,),
    "HannWindow": (0,),
    "HammingWindow": (0,),
    "MelWeightMatrix": (0, 1, 2, 3, 4),
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
    "Dropout": (1, 2),
    **{op: (1,) for op in _REDUCE},
}


def static_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs that feed a static slot of some node."""
    names = {v.name for v in model.graph.input}
    found: set[str] = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for i in STATIC_SLOTS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in names:
                found.add(node.input[i])
    return found


def specialise(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]], list[str]]:
    """Fold static-slot inputs into initializers; return (model, shapes, runtime inputs)."""
    fold = static_inputs(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _castlike_to_cast(out.graph)
    used = _used_names(out.graph) | {v.name for v in out.graph.output}
    # An input no node reads cannot change an output (CastLike's ``like`` after the
    # rewrite above, often zero-sized): drop it rather than compile a zero-size tensor.
    keep = [v for v in out.graph.input if v.name not in fold and v.name in used]
    for name in sorted(fold):
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds[name]), name))
    del out.graph.input[:]
    out.graph.input.extend(keep)
    shapes = {v.name: tuple(int(d) for d in np.shape(feeds[v.name])) for v in keep}
    return out, shapes, [v.name for v in keep]


def _unroll_scans(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Unroll Scans over their now-static lengths, also those inside function bodies."""
    from edgec import converters
    from edgec.converters.scan import unroll_scans
    from edgec.expand_functions import expand_functions
    from edgec.frontend import fix_input_shapes

    fixed = fix_input_shapes(model, shapes)
    expanded = expand_functions(fixed, converters.supported_ops())
    if not any(n.op_type == "Scan" for n in expanded.graph.node):
        return model
    return unroll_scans(expanded)


def _castlike_to_cast(graph: onnx.GraphProto) -> None:
    """CastLike(x, like) -> Cast(x, to=type of like) where ``like`` is a graph input."""
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    for node in graph.node:
        if node.op_type != "CastLike" or node.domain not in ("", "ai.onnx"):
            continue
        to = types.get(node.input[1]) if len(node.input) > 1 else None
        if to:
            node.op_type = "Cast"
            del node.input[1:]
            node.attribute.append(onnx.helper.make_attribute("to", to))


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read by a node, including nodes of subgraphs."""
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                used |= _used_names(g)
    return used


class EdgecBackendRep(BackendRep):
    """A model prepared for the host; compiles per input signature on ``run``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in inits]
        self._static = static_inputs(model)
        self._cache: dict[tuple[Any, ...], tuple[Compiled, list[str], dict[str, Any]]] = {}
        self.last: Compiled | None = None

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) > len(self.input_names):
                raise InputError(
                    f"expected at most {len(self.input_names)} inputs, got {len(inputs)}"
                )
            feeds = {n: np.asarray(a) for n, a in zip(self.input_names, inputs)}
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input {missing[0]!r}")
        return feeds

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        feeds = self._feeds(inputs)
        key = tuple(
            (n, feeds[n].shape, str(feeds[n].dtype))
            + ((feeds[n].tobytes(),) if n in self._static else ())
            for n in self.input_names
        )
        if key not in self._cache:
            model, shapes, runtime = specialise(self.model, feeds)
            try:
                model, narrow = narrow_types.lower(model)
            except narrow_types.NotRewritable as exc:
                raise ModelError(f"narrow element type not supported here: {exc}") from None
            model = _unroll_scans(model, shapes)
            self._cache[key] = (compile_proto(model, shapes), runtime, narrow)
        compiled, runtime, narrow = self._cache[key]
        self.last = compiled
        args = [
            narrow_types.to_storage(feeds[n], narrow[n]) if n in narrow else feeds[n]
            for n in runtime
        ]
        outs = compiled.run(args)
        names = [v.name for v in self.model.graph.output]
        return tuple(
            narrow_types.from_storage(o, narrow[n]) if n in narrow else o
            for n, o in zip(names, outs)
        )


class EdgecBackend(Backend):
    """ONNX backend API over edgec's host target (CPU only)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgecBackendRep:
        if not cls.supports_device(device):
            raise InputError(f"edgec's ONNX backend runs on CPU only, not {device!r}")
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise ModelError(f"ONNX checker rejected the model: {first_line(exc)}") from None
        return EdgecBackendRep(model)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Sequence[np.ndarray],
        device: str = "CPU",
        outputs_info: Sequence[tuple[Any, Any]] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        raise NotImplementedError("edgec compiles whole models; use run_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = EdgecBackend.prepare
run_model = EdgecBackend.run_model
run_node = EdgecBackend.run_node
supports_device = EdgecBackend.supports_device
