"""ONNX frontend: load, check, fix input shapes, simplify, import into Relax.

The order matters. Everything that can reject a model (unreadable file, external
data outside the model folder, dynamic dimensions, unsupported operators) runs
before TVM sees it, so a user gets one clear line instead of an importer traceback.
TVM's importer chokes on Reshape targets computed by Shape/Gather/Concat chains, so
shapes are fixed in the graph and a well-kept ONNX optimizer (onnxscript) folds those
chains to constants first.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from edgec import converters
from edgec.errors import ModelError, UnsupportedOpsError
from edgec.shapes import format_shape
from onnx import TensorProto, helper

# Protobuf cannot hold more than 2 GiB in one message; bigger tensors must be external.
_MAX_PROTO_BYTES = 2**31 - 1


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for symbolic dims) and numpy dtype of a tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(data["shape"]), str(data["dtype"]))


@dataclass
class LoadedModel:
    """An ONNX model read from disk with its external data resolved and checked."""

    path: Path
    proto: onnx.ModelProto
    sha256: str
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- load


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Read and check an ONNX file; external data only from inside its folder."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    data = path.read_bytes()
    if len(data) == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes RuntimeWarning-ish
        raise ModelError(f"{path}: not a valid ONNX model (truncated or corrupt: {exc})") from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise ModelError(f"{path}: not a valid ONNX model (no graph or no nodes)")
    digest = hashlib.sha256(data)
    _load_external_data(proto, path, digest)
    _check_initializer_sizes(proto, path)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"{path}: ONNX checker rejected the model: {_first_line(exc)}") from None
    _check_opset(proto, path)
    return LoadedModel(path=path, proto=proto, sha256=digest.hexdigest())


def _check_opset(proto: onnx.ModelProto, path: Path) -> None:
    """An ONNX opset newer than the installed onnx knows has semantics nobody here can check."""
    newest = onnx.defs.onnx_opset_version()
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > newest:
            raise ModelError(f"{path}: ONNX opset {imp.version} is newer than this edgec reads "
                             f"(up to {newest})")


def _load_external_data(proto: onnx.ModelProto, path: Path, digest: Any) -> None:
    """Inline external tensors, refusing any location outside the model's folder."""
    base = path.parent.resolve()
    for tensor in _all_tensors(proto):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: initializer {tensor.name!r}"
        if not location or os.path.isabs(location):
            raise ModelError(f"{where}: external data path {location!r} must be relative")
        file = (base / location).resolve()
        if base not in file.parents:
            raise ModelError(
                f"{where}: external data {location!r} lies outside the model folder {base}"
            )
        if not file.is_file():
            raise ModelError(f"{where}: external data file {location!r} not found")
        offset = int(info.get("offset", 0) or 0)
        size = file.stat().st_size
        length = int(info["length"]) if info.get("length") else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(
                f"{where}: external data range {offset}+{length} exceeds {location!r} "
                f"({size} bytes)"
            )
        with open(file, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        digest.update(raw)
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _all_tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
    return tensors


def _check_initializer_sizes(proto: onnx.ModelProto, path: Path) -> None:
    """Initializers must hold exactly as many bytes as their dims promise."""
    for tensor in _all_tensors(proto):
        if any(d < 0 for d in tensor.dims):
            raise ModelError(f"{path}: initializer {tensor.name!r} has negative dims")
        if not tensor.HasField("raw_data"):
            continue
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except Exception:
            raise ModelError(
                f"{path}: initializer {tensor.name!r} has unknown data type {tensor.data_type}"
            ) from None
        expected = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if tensor.data_type == TensorProto.STRING or expected == len(tensor.raw_data):
            continue
        raise ModelError(
            f"{path}: initializer {tensor.name!r} of shape {format_shape(list(tensor.dims))} "
            f"needs {expected} bytes but holds {len(tensor.raw_data)}"
        )


# ---------------------------------------------------------------------------- inspect


def _onnx_dtype(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except Exception:
        return f"onnx-type-{elem_type}"


def _value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    ttype = value.type.tensor_type
    dims: list[int | str] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return TensorSpec(value.name, tuple(dims), _onnx_dtype(ttype.elem_type))


def graph_inputs(proto: onnx.ModelProto) -> list[TensorSpec]:
    """The model's real inputs (graph inputs that are not initializers)."""
    inits = {t.name for t in proto.graph.initializer}
    return [_value_spec(v) for v in proto.graph.input if v.name not in inits]


def graph_outputs(proto: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_spec(v) for v in proto.graph.output]


def unsupported_ops(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Map each operator edgec cannot convert to the names of the nodes using it."""
    supported = converters.supported_ops()
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if op not in supported:
            missing.setdefault(op, []).append(node.name or f"#{i}")
    return missing


def check_supported(proto: onnx.ModelProto) -> None:
    """Raise one error listing every unsupported operator, its count and nodes."""
    missing = unsupported_ops(proto)
    if not missing:
        return
    parts = []
    for op, nodes in sorted(missing.items()):
        shown = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
        parts.append(f"{op} x{len(nodes)} ({shown})")
    raise UnsupportedOpsError("unsupported operators: " + "; ".join(parts))


# ---------------------------------------------------------------------------- shapes


def fix_input_shapes(
    proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """Return a copy with every graph input static, from ``shapes`` or the model.

    Raises one error naming every dimension that stays dynamic, and for names or
    ranks that do not match the model.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inputs = {s.name: s for s in graph_inputs(model)}
    for name in shapes:
        if name not in inputs:
            raise ModelError(
                f"--input-shape names {name!r}, but the model's inputs are "
                + ", ".join(repr(n) for n in inputs)
            )
    dynamic: list[str] = []
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in inits:
            continue
        spec = inputs[value.name]
        dims = value.type.tensor_type.shape.dim
        given = shapes.get(value.name)
        if given is not None:
            if len(given) != len(dims):
                raise ModelError(
                    f"--input-shape {value.name}={format_shape(given)} has rank {len(given)}, "
                    f"the model's input has rank {len(dims)} ({format_shape(spec.shape)})"
                )
            for i, (dim, size) in enumerate(zip(dims, given)):
                if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                    raise ModelError(
                        f"--input-shape {value.name}={format_shape(given)}: dimension {i} is "
                        f"fixed to {dim.dim_value} in the model"
                    )
                dim.Clear()
                dim.dim_value = size
        else:
            for i, d in enumerate(spec.shape):
                if not isinstance(d, int):
                    dynamic.append(f"{value.name}[{i}]" + (f" ({d})" if d != "?" else ""))
    if dynamic:
        example = " ".join(
            f"--input-shape {s.name}=" + "x".join(str(d) if isinstance(d, int) else "?" for d in s.shape)
            for s in inputs.values()
            if not s.is_static and s.name not in shapes
        )
        raise ModelError(
            "dynamic input dimensions: " + ", ".join(dynamic)
            + f"; fix them with {example} (each ? replaced by a size)"
        )
    # Stale intermediate shapes would contradict the new input shapes.
    del model.graph.value_info[:]
    return model


# ---------------------------------------------------------------------------- simplify


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Infer shapes and fold constant subgraphs (Shape/Gather/Concat -> Reshape).

    Uses onnxscript's optimizer: it folds what TVM's importer cannot take. If the
    optimizer itself fails, the shape-inferred model is used as is.
    """
    try:
        model = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed: {_first_line(exc)}") from None
    if proto.ByteSize() > _MAX_PROTO_BYTES:
        return model
    try:
        import onnx_ir as ir
        from onnxscript.optimizer import optimize_ir

        graph = ir.serde.deserialize_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # ConstantOfShape is kept by default; Silero VAD's Pad pads come from one,
            # and TVM refuses dynamic pads.
            optimize_ir(graph, should_fold=_fold_constant_of_shape)
        optimized = ir.serde.serialize_model(graph)
        return onnx.shape_inference.infer_shapes(optimized, strict_mode=False, data_prop=True)
    except Exception:
        return model


def _fold_constant_of_shape(node: Any) -> bool | None:
    if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
        return True
    return None  # the optimizer's own decision


def prepare(
    proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Fix input shapes, expand function ops TVM lacks, simplify, check operators.

    Returns ``(fixed, simple)``: the model with static inputs, and the one to import.
    """
    from edgec.expand_functions import expand_functions

    fixed = fix_input_shapes(proto, shapes or {})
    simple = simplify(expand_functions(fixed, converters.supported_ops()))
    check_supported(simple)
    return fixed, simple


# ---------------------------------------------------------------------------- import


def to_relax(proto: onnx.ModelProto) -> Any:
    """Import a simplified, static-shaped model into a Relax IRModule."""
    from tvm.relax.frontend.onnx import from_onnx

    inputs = graph_inputs(proto)
    shape_dict = {s.name: list(s.shape) for s in inputs}
    dtype_dict = {s.name: s.dtype for s in inputs}
    try:
        # TVM's importer prints the failing node's inputs (whole IR dumps) before raising
        with converters.installed(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return from_onnx(proto, shape_dict=shape_dict, dtype_dict=dtype_dict)
    except UnsupportedOpsError:
        raise
    except Exception as exc:
        message = _import_failure(proto, exc)
        # The failed importer leaves a half-built BlockBuilder, referenced from the
        # traceback's frames, that warns on stderr when freed: free it here, quietly.
        with _quiet_stderr():
            exc.__traceback__ = None
            gc.collect()
    raise ModelError(f"import into Relax failed: {message}")


def _import_failure(proto: onnx.ModelProto, exc: BaseException) -> str:
    """What went wrong, in ONNX's words when its strict shape inference sees it too."""
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as strict:  # noqa: BLE001 - a shape or type complaint is the better message
        said = _first_line(strict)
        if "No Op registered" not in said:  # ops ONNX does not know (contrib) say nothing here
            return said
    return _first_line(exc)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (where TVM's C++ logging writes) to /dev/null for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(exc: BaseException) -> str:
    """The most informative single line of an exception message."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith("# Metadata omitted")]
    # TVM errors end with the real message after a traceback block.
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else type(exc).__name__
