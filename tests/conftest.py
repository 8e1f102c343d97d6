"""Shared fixtures: small ONNX models built in-process, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]


def make_mlp(path: Path, dynamic_batch: bool = False, seed: int = 0) -> Path:
    """x[N,8] -> MatMul -> Add -> Relu -> MatMul -> Softmax: small, fast to compile."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    batch: int | str = "N" if dynamic_batch else 2
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
            helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
            helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
            helper.make_node("Softmax", ["h3"], ["y"], name="softmax", axis=-1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def mlp_model(tmp_path: Path) -> Path:
    return make_mlp(tmp_path / "mlp.onnx")


@pytest.fixture
def dynamic_mlp_model(tmp_path: Path) -> Path:
    return make_mlp(tmp_path / "mlp_dyn.onnx", dynamic_batch=True)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``edgec`` as a user would: a subprocess, capturing both streams."""
    env = dict(os.environ)
    env.pop("EDGEC_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "edgec.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 2, one stderr line starting 'edgec: error:', no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgec: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], (needle, lines[0])
