"""Loader fuzzing: hostile ONNX files and packages may only raise ``EdgecError``.

test_frontend.py and test_package.py already cover random bit flips and truncation;
these tests let hypothesis drive structured damage instead: protobuf fields set to
hostile values (dims, data types, raw data, external data paths, opsets, node wiring)
and packages whose checksums are valid but whose manifest is not. (A library that its
checksum vouches for is trusted: it is native code, so no loader can make a hostile one safe.)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgec import frontend, runtime
from edgec.errors import EdgecError
from edgec.package import read_package, write_package
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_mlp

_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def mlp_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx").read_bytes()


def _load_and_check(path: Path) -> None:
    """The frontend steps before TVM: each may refuse, none may crash."""
    loaded = frontend.load_model(path)
    fixed = frontend.fix_input_shapes(loaded.proto, {})
    simple = frontend.simplify(fixed)
    frontend.check_supported(simple)


_ints = st.integers(-(2**62), 2**62) | st.sampled_from([-1, 0, 1, 2**31, 2**63 - 1])
_names = st.text(min_size=0, max_size=12) | st.sampled_from(
    ["", "x", "y", "w1", "../w1", "/etc/passwd", "h0", "\x00"]
)

# Each mutation edits one field of a parsed model, then the model is re-serialised.
_MUTATIONS = st.one_of(
    st.tuples(st.just("dims"), st.integers(0, 2), st.lists(_ints, max_size=4)),
    st.tuples(st.just("data_type"), st.integers(0, 2), st.integers(-5, 40)),
    st.tuples(st.just("raw_data"), st.integers(0, 2), st.binary(max_size=700)),
    st.tuples(st.just("external"), st.integers(0, 2), st.tuples(_names, _ints, _ints)),
    st.tuples(st.just("node_input"), st.integers(0, 4), _names),
    st.tuples(st.just("node_op"), st.integers(0, 4), st.sampled_from(
        ["Conv", "Reshape", "Loop", "If", "Foo", "", "LSTM", "Scan"])),
    st.tuples(st.just("opset"), st.just(0), st.integers(-3, 10**6)),
    st.tuples(st.just("input_dim"), st.integers(0, 1), _ints),
    st.tuples(st.just("ir_version"), st.just(0), st.integers(-3, 10**6)),
    st.tuples(st.just("attribute"), st.integers(0, 4), st.tuples(_names, _ints)),
)


def _mutate(model: onnx.ModelProto, kind: str, index: int, value: Any) -> None:
    g = model.graph
    if kind in ("dims", "data_type", "raw_data", "external"):
        t = g.initializer[index % len(g.initializer)]
        if kind == "dims":
            del t.dims[:]
            t.dims.extend(value)
        elif kind == "data_type":
            t.data_type = value
        elif kind == "raw_data":
            t.raw_data = value
        else:
            location, offset, length = value
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
                e = t.external_data.add()
                e.key, e.value = key, v
    elif kind == "node_input":
        node = g.node[index % len(g.node)]
        node.input[0] = value
    elif kind == "node_op":
        g.node[index % len(g.node)].op_type = value
    elif kind == "opset":
        model.opset_import[0].version = value
    elif kind == "input_dim":
        dim = g.input[0].type.tensor_type.shape.dim[index]
        dim.Clear()
        dim.dim_value = value
    elif kind == "ir_version":
        model.ir_version = value
    elif kind == "attribute":
        name, v = value
        g.node[index % len(g.node)].attribute.append(onnx.helper.make_attribute(name or "a", v))


@_SETTINGS
@given(mutations=st.lists(_MUTATIONS, min_size=1, max_size=3))
def test_mutated_onnx_fields(mlp_bytes: bytes, tmp_path: Path, mutations: list) -> None:
    model = onnx.ModelProto.FromString(mlp_bytes)
    try:
        for kind, index, value in mutations:
            _mutate(model, kind, index, value)
        data = model.SerializeToString()
    except (ValueError, TypeError, IndexError):
        return  # protobuf itself refused the value; nothing reaches edgec
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    try:
        _load_and_check(path)
    except EdgecError:
        pass


@_SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.sampled_from(["cut", "insert", "overwrite", "delete"]),
                  st.binary(min_size=1, max_size=16)),
        min_size=1, max_size=4,
    )
)
def test_spliced_onnx_bytes(mlp_bytes: bytes, tmp_path: Path, edits: list) -> None:
    data = bytearray(mlp_bytes)
    for where, op, chunk in edits:
        i = int(where * len(data))
        if op == "cut":
            data = data[:i]
        elif op == "insert":
            data[i:i] = chunk
        elif op == "overwrite":
            data[i:i + len(chunk)] = chunk
        else:
            del data[i:i + len(chunk)]
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(data))
    try:
        _load_and_check(path)
    except EdgecError:
        pass


# ---------------------------------------------------------------------------- packages

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_MANIFEST_KEYS = ["inputs", "outputs", "target", "format_version", "edgec_version", "model", "passes"]


class _Parts(tuple):
    """(manifest, files, report) of a valid package; short repr for failure reports."""

    def __repr__(self) -> str:
        return "<valid mlp package>"


@pytest.fixture(scope="module")
def good_package(tmp_path_factory: pytest.TempPathFactory) -> _Parts:
    from edgec.driver import build

    folder = tmp_path_factory.mktemp("pkg")
    path = folder / "m.edgec"
    build(make_mlp(folder / "m.onnx"), "host", output=path, quiet=True)
    contents = read_package(path)
    manifest = {k: v for k, v in contents.manifest.items() if k not in ("files",)}
    files = {k: v for k, v in contents.files.items() if k != "report.json"}
    return _Parts((manifest, files, contents.report))


def _load(path: Path) -> runtime.Package:
    """Load the package, then its library."""
    pkg = runtime.load(path)
    pkg.executor()
    return pkg


def _load_and_run(path: Path) -> None:
    """Load, and run when the manifest's inputs still describe arrays."""
    pkg = _load(path)
    try:
        feeds = {s.name: np.zeros([int(d) for d in s.shape], s.dtype) for s in pkg.inputs}
    except (TypeError, ValueError):
        return  # the manifest's specs are not arrays this test can make
    if any(f.size > 1 << 16 for f in feeds.values()):
        return
    pkg.run(feeds)


_MANIFEST_EDIT = {
    "key": st.sampled_from(_MANIFEST_KEYS),
    "path": st.lists(
        st.integers(0, 3) | st.sampled_from(["name", "shape", "dtype", "family"]), max_size=3
    ),
    "value": _json,
}


def _hostile_manifest(parts: tuple, folder: Path, key: str, path: list, value: Any) -> Path:
    """A package rewritten with write_package (checksums match) around an edited manifest."""
    manifest, files, report = parts
    manifest = json.loads(json.dumps(manifest))
    node: Any = manifest
    trail = [key, *path]
    for step in trail[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
    else:
        if isinstance(node, dict) and not isinstance(trail[-1], str):
            manifest[key] = value  # JSON objects only have string keys
        else:
            try:
                node[trail[-1]] = value
            except (IndexError, TypeError):
                manifest[key] = value
    out = folder / "p.edgec"
    write_package(out, manifest, files, report)
    return out


@_SETTINGS
@given(**_MANIFEST_EDIT)
def test_hostile_manifest_load(
    good_package: tuple, tmp_path: Path, key: str, path: list, value: Any
) -> None:
    try:
        _load(_hostile_manifest(good_package, tmp_path, key, path, value))
    except EdgecError:
        pass


@_SETTINGS
@given(**_MANIFEST_EDIT)
def test_hostile_manifest_run(
    good_package: tuple, tmp_path: Path, key: str, path: list, value: Any
) -> None:
    try:
        _load_and_run(_hostile_manifest(good_package, tmp_path, key, path, value))
    except EdgecError:
        pass


@_SETTINGS
@given(
    member=st.sampled_from(["manifest.json", "report.json", "model.so"]),
    where=st.floats(0, 1),
    chunk=st.binary(min_size=1, max_size=32),
)
def test_zip_members_overwritten(
    good_package: tuple, tmp_path: Path, member: str, where: float, chunk: bytes
) -> None:
    """Damage inside one member, zip structure intact (stored with fresh CRCs)."""
    manifest, files, report = good_package
    good = tmp_path / "good.edgec"
    write_package(good, manifest, files, report)
    with zipfile.ZipFile(good) as zf:
        members = {n: bytearray(zf.read(n)) for n in zf.namelist()}
    data = members[member]
    i = int(where * len(data))
    data[i:i + len(chunk)] = chunk
    out = tmp_path / "bad.edgec"
    with zipfile.ZipFile(out, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, bytes(d))
    try:
        _load_and_run(out)
    except EdgecError:
        pass
