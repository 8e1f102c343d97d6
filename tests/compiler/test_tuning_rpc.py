"""Tuning through a device farm: a TVM RPC tracker and two RPC servers on loopback.

The CLI (`edgec tune --rpc-tracker --rpc-key`) measures a small MatMul on the two
"boards", the records land in the database with a summary beside them, and
`edgec build --tuning-db` applies them and still matches ONNX Runtime. Every
process the farm starts runs in its own session and is killed in teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_cli

KEY = "host"
BOARDS = 2
START_TIMEOUT_S = 90  # a server's first registration imports TVM; slow on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # Own session: TVM's tracker and servers fork workers; teardown kills the group.
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _registered(port: int) -> int:
    """Boards registered under KEY, as `python -m tvm.exec.query_rpc_tracker` lists them."""
    proc = subprocess.run(
        [sys.executable, "-m", "tvm.exec.query_rpc_tracker", "--host", "127.0.0.1",
         "--port", str(port)], check=False, capture_output=True, text=True, timeout=60)
    # Queue Status rows: "host   2      2     0" (key, total, free, pending).
    for line in proc.stdout.splitlines():
        cols = line.split()
        if len(cols) == 4 and cols[0] == KEY and cols[2].isdigit():
            return int(cols[2])
    return 0


@pytest.fixture
def rpc_farm(tmp_path: Path) -> Iterator[int]:
    """A tracker and BOARDS servers on 127.0.0.1; yields the tracker port."""
    port = _free_port()
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                     "--port-end", str(port + 1)], tmp_path / "tracker.log")]
    try:
        for i in range(BOARDS):
            sp = _free_port()
            procs.append(_start(
                ["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", KEY,
                 "--host", "127.0.0.1", "--port", str(sp), "--port-end", str(sp + 1)],
                tmp_path / f"server{i}.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while _registered(port) < BOARDS:
            dead = [p.args for p in procs if p.poll() is not None]
            assert not dead, f"RPC process exited: {dead}"
            assert time.monotonic() < deadline, "RPC servers did not register in time"
            time.sleep(2)
        yield port
    finally:
        for p in procs:
            _stop(p)


def _matmul_onnx(path: Path) -> np.ndarray:
    w = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 48])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return w


@pytest.mark.slow
def test_tune_on_rpc_farm_then_build(rpc_farm: int, tmp_path: Path) -> None:
    import onnxruntime as ort
    from edgec.runtime import load
    from edgec.targets import get_target
    from edgec.targets.cpu.apply import ApplyCPUSchedules
    from edgec.tuning import RECORDS, SUMMARY

    model, db = tmp_path / "mm.onnx", tmp_path / "db"
    _matmul_onnx(model)
    tuned = run_cli("tune", str(model), "--rpc-tracker", f"127.0.0.1:{rpc_farm}",
                    "--rpc-key", KEY, "--trials", "2", "--batch", "2", "--db", str(db),
                    "--quiet", timeout=600)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    records = (db / RECORDS).read_text().splitlines()
    summary = json.loads((db / SUMMARY).read_text())
    # Two trials, plus the default and best schedules the per-kernel report re-measured.
    assert len(records) == 2 + sum(summary["report_records"].values()), records
    # Measured on the boards: every record has a latency, none is a failure (1e10 s).
    assert all(0 < min(json.loads(r)[1][1]) < 1 for r in records), records
    # One batch of two candidates, measured side by side: one on each board.
    for i in range(BOARDS):
        log = (tmp_path / f"server{i}.log").read_text()
        assert "load_module" in log, log
    assert summary["trials"] == 2 and summary["seconds"] > 0
    assert summary["runs"][-1]["rpc"] == f"127.0.0.1:{rpc_farm}:{KEY}"

    pkg_path = tmp_path / "mm.edgec"
    built = run_cli("build", str(model), "--tuning-db", str(db), "-o", str(pkg_path))
    assert built.returncode == 0, built.stderr[-3000:]
    x = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    got = load(pkg_path).run({"x": x})
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-4)

    # The build used the tuned record, not the default Matmul schedule.
    import tvm
    from edgec.driver import import_model
    from edgec.targets.cpu import cpu_pipeline

    host = get_target("host")
    defaults = ApplyCPUSchedules()
    tvm.compile(import_model(model, host).mod, host.tvm_target(),
                relax_pipeline=cpu_pipeline(host, db, defaults=defaults))
    assert defaults.fired.get("Matmul", 0) == 0, dict(defaults.fired)


def test_unreachable_tracker_is_one_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "mm.onnx"
    _matmul_onnx(model)
    proc = run_cli("tune", str(model), "--rpc-tracker", f"127.0.0.1:{_free_port()}",
                   "--rpc-key", KEY, "--trials", "2", "--db", str(tmp_path / "db"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "does not answer" in proc.stderr and "Traceback" not in proc.stderr
