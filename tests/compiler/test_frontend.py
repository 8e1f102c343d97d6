"""Frontend: loading, checking and shape fixing reject bad models with one clear error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import frontend
from edgec.errors import ModelError, UnsupportedOpsError


def test_load_and_inputs(mlp_model: Path) -> None:
    loaded = frontend.load_model(mlp_model)
    assert len(loaded.sha256) == 64
    [x] = frontend.graph_inputs(loaded.proto)
    assert (x.name, x.shape, x.dtype) == ("x", (2, 8), "float32")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "empty file"),
        (b"this is not a model at all\n", "not a valid ONNX model"),
    ],
)
def test_not_onnx(tmp_path: Path, content: bytes, needle: str) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError, match=needle):
        frontend.load_model(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        frontend.load_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated(mlp_model: Path, tmp_path: Path, fraction: float) -> None:
    data = mlp_model.read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError):
        frontend.load_model(p)


def test_bit_flips_never_crash(mlp_model: Path, tmp_path: Path) -> None:
    """Random corruption either still loads or raises ModelError; nothing else."""
    data = bytearray(mlp_model.read_bytes())
    rng = np.random.default_rng(0)
    p = tmp_path / "flip.onnx"
    for _ in range(200):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), size=3):
            bad[i] ^= 1 << int(rng.integers(0, 8))
        p.write_bytes(bytes(bad))
        try:
            frontend.load_model(p)
        except ModelError:
            pass


def _external_model(tmp_path: Path, location: str) -> Path:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for k, v in (("location", location), ("offset", "0"), ("length", "64")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    path = d / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    loaded = frontend.load_model(path)
    w = numpy_helper.to_array(loaded.proto.graph.initializer[0])
    np.testing.assert_array_equal(w, np.ones((4, 4), np.float32))


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_external_data_outside_folder_refused(tmp_path: Path, where: str) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    location = {"absolute": str(secret), "dotdot": "../secret.bin", "symlink": "link.bin"}[where]
    path = _external_model(tmp_path, location)
    if where == "symlink":
        os.symlink(secret, path.parent / "link.bin")
    with pytest.raises(ModelError, match="outside the model folder|must be relative"):
        frontend.load_model(path)


def test_external_data_range_beyond_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelError, match="exceeds"):
        frontend.load_model(path)


def test_initializer_larger_than_data(mlp_model: Path, tmp_path: Path) -> None:
    model = onnx.load(mlp_model)
    model.graph.initializer[0].dims[0] = 1000  # claims 1000x16 floats, holds 8x16
    p = tmp_path / "big.onnx"
    p.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="needs .* bytes but holds"):
        frontend.load_model(p)


def test_cyclic_graph_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
            helper.make_node("Relu", ["a"], ["b"], name="n2"),
        ],
        "cyc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )
    p = tmp_path / "cyc.onnx"
    p.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelError, match="checker"):
        frontend.load_model(p)


def test_dynamic_dims_named(dynamic_mlp_model: Path) -> None:
    proto = frontend.load_model(dynamic_mlp_model).proto
    with pytest.raises(ModelError, match=r"x\[0\] \(N\).*--input-shape x=\?x8"):
        frontend.fix_input_shapes(proto, {})
    fixed = frontend.fix_input_shapes(proto, {"x": (3, 8)})
    assert frontend.graph_inputs(fixed)[0].shape == (3, 8)


@pytest.mark.parametrize(
    "shapes, needle",
    [
        ({"nope": (1, 8)}, "model's inputs are 'x'"),
        ({"x": (1, 8, 1)}, "has rank 3"),
        ({"x": (2, 9)}, "fixed to 8"),
    ],
)
def test_bad_input_shapes(dynamic_mlp_model: Path, shapes: dict, needle: str) -> None:
    proto = frontend.load_model(dynamic_mlp_model).proto
    with pytest.raises(ModelError, match=needle):
        frontend.fix_input_shapes(proto, shapes)


def test_unsupported_ops_listed_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="ok"),
            helper.make_node("Foo", ["a"], ["b"], name="foo1", domain="com.example"),
            helper.make_node("Foo", ["b"], ["c"], name="foo2", domain="com.example"),
            helper.make_node("StringNormalizer", ["c"], ["y"], name="sn"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(UnsupportedOpsError) as info:
        frontend.check_supported(model)
    msg = str(info.value)
    assert "com.example.Foo x2 (foo1, foo2)" in msg and "StringNormalizer x1 (sn)" in msg


def test_simplify_folds_shape_chains(tmp_path: Path) -> None:
    """Reshape whose target comes from Shape/Gather/Concat imports after simplify."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "i0"], ["d0"], axis=0),
            helper.make_node("Concat", ["d0", "m1"], ["shape"], axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0], np.int64), "i0"),
         numpy_helper.from_array(np.array([-1], np.int64), "m1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fixed = frontend.fix_input_shapes(model, {"x": (2, 3, 4)})
    simple = frontend.simplify(fixed)
    assert "Shape" not in {n.op_type for n in simple.graph.node}
    mod = frontend.to_relax(simple)
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
