"""``edgec tune --target edge-npu`` and ``edgec build --tuning-db`` as a user runs them,
on a small float conv net quantized by edgec (fast)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import assert_one_line_error, run_cli


def _net(path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 8, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((64, 32, 1, 1)).astype(np.float32) * 0.2
    w3 = rng.standard_normal((64, 64, 1, 1)).astype(np.float32) * 0.1
    # the last conv's float output stays on the CPU (edgec's "npu" QDQ style)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"]),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("Conv", ["d", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 24, 24])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 64, 24, 24])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune_cli")
    _net(tmp / "net.onnx")
    np.savez(tmp / "calib.npz",
             x=np.random.default_rng(1).standard_normal((4, 8, 24, 24)).astype(np.float32))
    return tmp


def test_tune_then_build_with_db(net):
    db = net / "npu_db"
    args = ["--target", "edge-npu", "--quantize", "int8", "--calib", str(net / "calib.npz")]
    proc = run_cli("tune", str(net / "net.onnx"), *args, "--trials", "12", "--db", str(db),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["tasks"] == 2 and res["trials"] == 12 and res["resumed_trials"] == 0
    assert res["tuned_cycles"] <= res["default_cycles"]
    again = json.loads(run_cli("tune", str(net / "net.onnx"), *args, "--trials", "16",
                               "--db", str(db), "--json").stdout)
    assert (again["resumed_trials"], again["trials"]) == (12, 4)
    out = run_cli("build", str(net / "net.onnx"), *args, "--tuning-db", str(db), "-o",
                  str(net / "net.edgec"), "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)["report"]["npu"]
    assert rep["per_inference"]["cycles"] == again["tuned_cycles"]


def test_tune_needs_trials(net):
    proc = run_cli("tune", str(net / "net.onnx"), "--target", "edge-npu", "--db",
                   str(net / "d2"))
    assert_one_line_error(proc, "--trials")
