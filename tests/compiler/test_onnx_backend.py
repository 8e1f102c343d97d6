"""edgec.onnx_backend: the ONNX backend API, and a regression sample of ONNX's node tests.

``data/onnx_node_passing.txt`` lists every node test that passed when it was last
regenerated (``python scripts/onnx_node_tests.py OUT --passing-list
tests/compiler/data/onnx_node_passing.txt``). The suite runs a deterministic sample
of it in this process; any listed case that no longer passes fails the test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgec import onnx_backend
from edgec.conformance import collect, op_names, run_case
from onnx import TensorProto, helper

PASSING = Path(__file__).parent / "data" / "onnx_node_passing.txt"
SAMPLE = 150


def _sample(names: list[str], k: int) -> list[str]:
    """The same ``k`` names on every run and machine (ordered by a hash of the name)."""
    return sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:k]


def test_reshape_shape_input_is_folded() -> None:
    """A shape passed as an input is specialised on its value, the data is computed."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rep = onnx_backend.prepare(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    (y,) = rep.run([x, np.array([3, 4], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(3, 4))
    (y,) = rep.run([x, np.array([4, 3], np.int64)])  # another value: another compile
    np.testing.assert_array_equal(y, x.reshape(4, 3))
    assert rep.last is not None and [s.name for s in rep.last.inputs] == ["x"]
    assert onnx_backend.supports_device("CPU") and not onnx_backend.supports_device("CUDA")


def test_backend_refuses_invalid_model() -> None:
    from edgec.errors import ModelError

    model = onnx.ModelProto()
    with pytest.raises(ModelError):
        onnx_backend.prepare(model)


@pytest.fixture(scope="module")
def cases() -> dict[str, object]:
    return {c.name: c for c in collect()}


def test_passing_list_names_exist(cases: dict[str, object]) -> None:
    names = PASSING.read_text().split()
    assert len(names) > 100
    unknown = [n for n in names if n not in cases]
    assert not unknown, f"not ONNX node tests (onnx upgraded?): {unknown[:5]}"


def test_node_test_sample_still_passes(cases: dict[str, object]) -> None:
    names = [n for n in _sample(PASSING.read_text().split(), SAMPLE) if n in cases]
    ops = op_names(list(cases.values()))
    failed = []
    for name in names:
        res = run_case(cases[name], ops[name])
        if res.status != "pass":
            failed.append(f"{name}: {res.status}: {res.detail[:150]}")
    assert not failed, f"{len(failed)}/{len(names)} regressed:\n" + "\n".join(failed)


def test_castlike_with_zero_size_like_input() -> None:
    """CastLike reads only its ``like`` input's type: a zero-size ``like`` is dropped."""
    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "like"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("like", TensorProto.FLOAT16, [0])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = np.array([0.1, 2.5, -7.0], np.float32)
    (y,) = onnx_backend.prepare(model).run([x, np.zeros(0, np.float16)])
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, x.astype(np.float16))


def test_float8_case_runs_through_conformance(cases: dict[str, object]) -> None:
    """ONNX hands float8 data as TensorProtos; run_case compares it as ml_dtypes arrays."""
    name = "test_cast_FLOAT_to_FLOAT8E4M3FN"
    res = run_case(cases[name], "Cast")
    assert res.status == "pass", res.detail


def test_script_merges_an_earlier_report(tmp_path: Path) -> None:
    """--merge reruns the filtered cases and carries the others over, saying so."""
    import json
    import subprocess
    import sys

    old = {"cases": [
        {"name": "test_abs", "op": "Abs", "status": "mismatch", "detail": "old", "seconds": 0.1,
         "folded": False},
        {"name": "test_not_rerun", "op": "X", "status": "unsupported", "detail": "kept",
         "seconds": 0.1, "folded": False},
    ]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    script = Path(__file__).parents[2] / "scripts" / "onnx_node_tests.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "--jobs", "1",
                    "--filter", "^test_abs$", "--merge", str(tmp_path / "old.json")],
                   check=True, capture_output=True, timeout=300)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    status = {c["name"]: c["status"] for c in report["cases"]}
    assert status == {"test_abs": "pass", "test_not_rerun": "unsupported"}
    assert report["summary"]["carried_over"]["cases"] == 1
    assert "1 results carried over" in (tmp_path / "out" / "report.md").read_text()
