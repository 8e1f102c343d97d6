"""The CLI end to end, as subprocesses, on a small model; and its error contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import make_mlp

    d = tmp_path_factory.mktemp("cli")
    model = make_mlp(d / "mlp.onnx")
    pkg = d / "mlp.edgec"
    proc = run_cli("build", str(model), "--target", "host", "-o", str(pkg))
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and pkg.exists()
    return model, pkg


def test_build_run_matches_onnxruntime(built: tuple[Path, Path], tmp_path: Path) -> None:
    model, pkg = built
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    proc = run_cli("run", str(pkg), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out),
                   "--json", "--compare-onnxruntime", str(model))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["outputs"][0]["name"] == "y"
    assert summary["outputs"][0]["max_abs_err_vs_onnxruntime"] < 1e-5
    got = np.load(out / "y.npy")
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_inspect_model_and_package(built: tuple[Path, Path]) -> None:
    model, pkg = built
    proc = run_cli("inspect", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["stats"]["macs"] == 2 * 8 * 16 + 2 * 16 * 4
    assert data["unsupported_ops"] == {}
    proc = run_cli("inspect", str(pkg))
    assert proc.returncode == 0 and "target host" in proc.stdout


def test_bench_compares_with_onnxruntime(built: tuple[Path, Path]) -> None:
    model, pkg = built
    proc = run_cli("bench", str(pkg), "--compare-onnxruntime", str(model), "--repeat", "3",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["edgec"]["runs"] == 3 and data["onnxruntime"]["runs"] == 3
    assert data["ratio_edgec_over_ort"] > 0


def test_manifest_contents(built: tuple[Path, Path]) -> None:
    import edgec

    model, pkg = built
    p = edgec.load(pkg)
    m = p.manifest
    assert m["edgec_version"] == edgec.__version__
    assert m["inputs"] == [{"name": "x", "shape": [2, 8], "dtype": "float32"}]
    assert m["target"]["tvm"]["mcpu"]
    import hashlib

    assert m["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert set(p.report["time_s"]) >= {"load", "simplify", "import", "compile", "package"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["build", "{missing}"], "no such file"),
        (["build", "{notonnx}"], "not a valid ONNX model"),
        (["build", "{model}", "--target", "gpu"], "unknown target 'gpu'"),
        (["build", "{model}", "--target", "arm-cpu:cortex-x9"], "unknown arm-cpu preset"),
        (["build", "{model}", "--input-shape", "x=1xAx3"], "malformed --input-shape"),
        (["build", "{model}", "--input-shape", "y=2x8"], "model's inputs are 'x'"),
        (["build", "{dynamic}"], "dynamic input dimensions: x[0] (N)"),
        (["build", "{unsupported}"], "unsupported operators: com.example.Foo x2 (foo1, foo2)"),
        (["build", "{escape}"], "outside the model folder"),
        (["build", "{model}", "--pass", "no-such-pass"], "unknown pass 'no-such-pass'"),
        (["build", "{model}", "--tuning-db", "{emptydir}"], "not an edgec tuning database"),
        (["build", "{future}"], "ONNX opset 99 is newer than this edgec reads"),
        (["build", "{badshape}"], "Incompatible dimensions for matrix multiplication"),
        (["run", "{pkg}", "--input", "z={x}"], "unknown input 'z'"),
        (["run", "{pkg}", "--input", "x={x64}"], "dtype float64"),
        (["run", "{pkg}", "--input", "x={xbad}"], "has shape 3x8"),
        (["run", "{pkg}"], "no inputs given"),
        (["run", "{pkg}", "--input", "x={missing}"], "no such file"),
        (["run", "{notonnx}", "--random-inputs"], "not an edgec package"),
        (["bench", "{pkg}", "--repeat", "0"], "--repeat must be"),
        (["run", "{pkg}", "--input", "x={x}", "--output-dir", "{x}/sub"], "cannot write"),
    ],
)
def test_errors_are_one_line(
    built: tuple[Path, Path], tmp_path: Path, args: list[str], needle: str
) -> None:
    model, pkg = built
    from tests.conftest import make_mlp

    notonnx = tmp_path / "junk.onnx"
    notonnx.write_text("hello")
    np.save(tmp_path / "x64.npy", np.zeros((2, 8)))
    np.save(tmp_path / "xbad.npy", np.zeros((3, 8), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float32))
    names = {
        "missing": str(tmp_path / "missing.onnx"), "notonnx": str(notonnx), "model": str(model),
        "pkg": str(pkg), "x": str(tmp_path / "x.npy"), "x64": str(tmp_path / "x64.npy"),
        "xbad": str(tmp_path / "xbad.npy"),
        "dynamic": str(make_mlp(tmp_path / "dyn.onnx", dynamic_batch=True)),
        "emptydir": str(tmp_path / "notadb"),
    }
    (tmp_path / "notadb").mkdir()
    names["unsupported"] = str(_unsupported_model(tmp_path / "unsupported.onnx"))
    names["future"] = str(_matmul_model(tmp_path / "future.onnx", k=8, opset=99))
    names["badshape"] = str(_matmul_model(tmp_path / "badshape.onnx", k=5))
    names["escape"] = str(_escaping_model(tmp_path))
    out = tmp_path / "out.edgec"
    argv = [a.format(**names) for a in args]
    if argv[0] == "build":
        argv += ["-o", str(out)]
    proc = run_cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, needle)
    # nothing else from TVM's importer: no IR dump, no C++ warning at exit
    assert "Error converting" not in proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    assert not out.exists(), "a failed build must not leave an output file"
    assert not list(tmp_path.glob(".out.edgec*")), "no temporary files left behind"


def test_unwritable_build_output_fails_before_compiling(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = built
    (tmp_path / "file").write_bytes(b"")
    proc = run_cli("build", str(model), "-o", str(tmp_path / "file" / "m.edgec"))
    assert_one_line_error(proc, "is not a directory")
    assert "compile" not in proc.stderr, "the check runs before any work"


def _matmul_model(path: Path, k: int, opset: int = 17) -> Path:
    """x[2, k] @ w[8, 4]: a shape error unless k == 8."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((8, 4), np.float32), "w")],
    )
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString())
    return path


def _unsupported_model(path: Path) -> Path:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["a"], name="foo1", domain="com.example"),
         helper.make_node("Foo", ["a"], ["y"], name="foo2", domain="com.example")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                 helper.make_opsetid("com.example", 1)]), path)
    return path


def _escaping_model(tmp_path: Path) -> Path:
    """A model whose external weights point at ../secret.bin, outside its folder."""
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w],
    )
    (tmp_path / "m").mkdir(exist_ok=True)
    path = tmp_path / "m" / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_help_has_examples() -> None:
    for cmd in ("build", "run", "bench", "inspect"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "examples:" in proc.stdout


def test_targets_and_passes_listed() -> None:
    proc = run_cli("targets", "--json")
    names = [t["name"] for t in json.loads(proc.stdout)]
    assert names == ["host", "arm-cpu:cortex-a53", "arm-cpu:cortex-a55", "arm-cpu:cortex-a72",
                     "arm-cpu:cortex-a76", "edge-npu", "edge-npu:edge-npu-s",
                     "edge-npu:edge-npu-soc"]
    assert run_cli("passes").returncode == 0
