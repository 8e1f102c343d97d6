"""``edgec tune`` as a user runs it: the per-kernel report alone (``--trials 0``, no search)
and a build with the records it leaves still matches ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.conftest import make_mlp, run_cli


def test_report_only_then_build(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    db = tmp_path / "db"
    proc = run_cli("tune", str(model), "--trials", "0", "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    kernels = result["report"]["kernels"]
    assert result["trials"] == 0 and len(kernels) == result["tasks"] >= 2
    for k in kernels:
        # Nothing searched: each kernel is its default schedule, measured.
        assert k["trials"] == 0 and k["tuned_ms"] is None and k["build_uses"] == "default"
        assert k["before_ms"] > 0 and k["after_ms"] == k["before_ms"]
    assert {k["default_rule"] for k in kernels} >= {"Matmul"}
    summary = json.loads((db / "edgec_tuning.json").read_text())
    assert summary["report"]["kernels"] == kernels
    # The re-measured defaults are records, but not trials.
    assert summary["trials"] == 0 and sum(summary["report_records"].values()) == len(kernels)

    pkg = tmp_path / "mlp.edgec"
    proc = run_cli("build", str(model), "--tuning-db", str(db), "-o", str(pkg))
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(5).standard_normal((2, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("run", str(pkg), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir",
                   str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), want, rtol=1e-5, atol=1e-6)

    # Text mode prints the table; a second report keeps trials at 0.
    proc = run_cli("tune", str(model), "--trials", "0", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert "default ms" in proc.stdout and "total (x calls)" in proc.stdout
    summary = json.loads((db / "edgec_tuning.json").read_text())
    assert summary["trials"] == 0


def test_json_output_is_only_json_when_searching(tmp_path: Path) -> None:
    """MetaSchedule logs every task table and XGBoost step to stdout; ``--json`` must
    still print one JSON document (the log goes to the database's logs/ folder)."""
    model = make_mlp(tmp_path / "mlp.onnx")
    db = tmp_path / "db"
    proc = run_cli("tune", str(model), "--trials", "2", "--batch", "2", "--db", str(db),
                   "--json", "--no-report")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["trials"] == 2, result
    assert "[INFO]" not in proc.stdout + proc.stderr
    logs = "".join(p.read_text() for p in (db / "logs").rglob("*.log"))
    assert "Initializing Task" in logs, sorted(p.name for p in (db / "logs").rglob("*"))


def test_bad_counts_are_flag_errors(tmp_path: Path) -> None:
    """A negative trial count or an empty batch is refused before any work or output."""
    model = make_mlp(tmp_path / "mlp.onnx")
    db = tmp_path / "db"
    for flag, value in (("--trials", "-5"), ("--trials", "ten"), ("--batch", "0")):
        proc = run_cli("tune", str(model), flag, value, "--db", str(db))
        assert proc.returncode == 2, (flag, value, proc.stdout)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert f"argument {flag}" in proc.stderr, proc.stderr
    assert not db.exists()


def test_database_in_the_way_of_a_file_is_one_error(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    (tmp_path / "file").write_bytes(b"")
    for db, needle in ((tmp_path / "file", "is a file, not a folder"),
                       (tmp_path / "file" / "db", "is not a directory")):
        proc = run_cli("tune", str(model), "--trials", "0", "--db", str(db))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_arm_without_a_board_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    """Nothing can be measured (qemu would rank kernels by emulation speed): exit 2, say how."""
    model = make_mlp(tmp_path / "mlp.onnx")
    proc = run_cli("tune", str(model), "--target", "arm-cpu:cortex-a55", "--trials", "3",
                   "--db", str(tmp_path / "db"))
    assert proc.returncode == 2 and proc.stdout == "", (proc.returncode, proc.stdout)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: error: tuning for arm-cpu:cortex-a55 "
                                                   "needs the board"), proc.stderr
    assert "--rpc-tracker" in lines[0]
