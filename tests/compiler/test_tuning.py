"""Tuning: a few trials on a small matmul land in the JSON database, survive a torn
write, resume, and are applied at build (numerics still exact)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from edgec.targets import get_target
from edgec.targets.cpu import cpu_pipeline
from edgec.targets.cpu.apply import ApplyCPUSchedules
from edgec.tuning import (
    RECORDS,
    TuneResult,
    read_summary,
    repair_database,
    tune,
    tune_module,
    write_summary,
)
from tvm import relax
from tvm.relax import op as R
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

HOST = get_target("host")
W = np.random.default_rng(0).standard_normal((64, 48)).astype("float32")


def _matmul() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((32, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(R.matmul(x, relax.const(W)))
        bb.emit_func_output(out)
    return bb.get()


def _legalized(mod: tvm.IRModule) -> tvm.IRModule:
    target = HOST.tvm_target()
    with target:
        seq = cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
        return tvm.transform.Sequential(seq)(mod)


@pytest.mark.slow
def test_tune_resume_and_apply(tmp_path: Path) -> None:
    db = tmp_path / "db"
    first = tune_module(_legalized(_matmul()), HOST, trials=2, time_budget=None, db_dir=db,
                        progress=False, batch=2)
    assert first.tasks == 1 and first.trials == 2
    (row,) = first.report
    # The report re-measures the default schedule and the best of the 2 trials, and
    # commits both with those latencies (records, not trials).
    assert row.kernel == "matmul" and row.trials == 2 and row.default_rule == "Matmul"
    assert row.before_ms > 0 and row.tuned_ms > 0
    assert row.after_ms == min(row.before_ms, row.tuned_ms)
    assert row.build_uses == ("tuned" if row.tuned_ms <= row.before_ms else "default")
    records = (db / RECORDS).read_text().splitlines()
    assert len(records) == 2 + 2
    summary = read_summary(db)
    assert summary is not None and summary["trials"] == 2
    assert summary["report"]["kernels"][0]["tuned_ms"] == row.tuned_ms
    # A kill -9 mid-write leaves a torn line: the next run drops it and resumes.
    with (db / RECORDS).open("a") as f:
        f.write(records[0][: len(records[0]) // 2])
    again = tune_module(_legalized(_matmul()), HOST, trials=3, time_budget=None, db_dir=db,
                        progress=False, batch=2)
    assert again.resumed_trials >= 1 and again.trials >= 1
    summary = read_summary(db)
    assert summary is not None and len(summary["runs"]) == 2
    lines = len((db / RECORDS).read_text().splitlines())
    assert summary["trials"] == lines - sum(summary["report_records"].values())
    assert summary["report"]["kernels"][0]["trials"] == summary["trials"]

    defaults = ApplyCPUSchedules()
    ex = tvm.compile(_matmul(), HOST.tvm_target(),
                     relax_pipeline=cpu_pipeline(HOST, db, defaults=defaults))
    assert defaults.fired.get("Matmul", 0) == 0  # the tuned record was used instead
    x = np.random.default_rng(1).standard_normal((32, 64)).astype("float32")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, x @ W, rtol=1e-4, atol=1e-4)


def test_summary_totals_every_run(tmp_path: Path) -> None:
    (tmp_path / RECORDS).write_text("[0, 1]\n[0, 2]\n[0, 3]\n")
    write_summary(tmp_path, HOST, TuneResult(tmp_path, tasks=1, trials=2, seconds=10.0), None)
    write_summary(tmp_path, HOST, TuneResult(tmp_path, tasks=1, trials=1, seconds=5.0), None)
    summary = read_summary(tmp_path)
    assert summary is not None
    # Trials are the records in the database (a kill -9'd run leaves records but no entry).
    assert summary["trials"] == 3 and summary["seconds"] == 15.0
    assert [r["trials"] for r in summary["runs"]] == [2, 1]
    assert read_summary(tmp_path / "missing") is None


def test_repair_drops_torn_lines(tmp_path: Path) -> None:
    (tmp_path / RECORDS).write_text('[0, {"a": 1}]\n[1, {"b"')
    assert repair_database(tmp_path) == 1
    assert (tmp_path / RECORDS).read_text() == '[0, {"a": 1}]\n'


def test_arm_without_board_falls_back(tmp_path: Path) -> None:
    result = tune("unused.onnx", "arm-cpu:cortex-a72", trials=4, db_dir=tmp_path)
    assert result.trials == 0 and "needs the board" in result.message and result.cannot_measure


def test_needs_a_budget(tmp_path: Path) -> None:
    from edgec.errors import EdgecError

    with pytest.raises(EdgecError, match="--trials"):
        tune("unused.onnx", "host", db_dir=tmp_path)




def _two_kernels() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((32, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(R.matmul(x, relax.const(W)))
            z = bb.emit(R.matmul(relax.const(W.T.copy()), R.permute_dims(x)))
            out = bb.emit_output((y, z))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.slow
def test_time_budget_is_checked_after_every_batch(tmp_path: Path) -> None:
    # A spent budget stops the search after the first batch, which is already in the
    # database: the heaviest task's, with the others never started. (A single
    # MetaSchedule call sends every task's first batch before committing any.)
    db = tmp_path / "db"
    result = tune_module(_legalized(_two_kernels()), HOST, trials=None, time_budget=0.01,
                         db_dir=db, progress=False, batch=2, report=False)
    assert result.tasks >= 2 and result.trials == 2, result
    assert len(result.best_ms) == 1, result.best_ms
    assert len((db / RECORDS).read_text().splitlines()) == 2
    summary = read_summary(db)
    assert summary is not None and summary["trials"] == 2


def test_only_cpu_tensor_intrinsics_are_registered() -> None:
    """MetaSchedule's contexts import every target's intrinsics (34 s, mostly CUDA's); a
    tuning process registers the x86 and Arm ones, which the CPU rules use, and no other."""
    code = (
        "import sys\n"
        "from edgec.tuning import cpu_tensor_intrinsics\n"
        "cpu_tensor_intrinsics()\n"
        "import tvm.s_tir.tensor_intrin\n"  # what every TuneContext runs
        "from tvm.s_tir import TensorIntrin\n"
        "assert TensorIntrin.get('dot_16x4_vnni') is not None\n"
        "print(sorted(m for m in sys.modules if m.startswith('tvm.s_tir.tensor_intrin.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    assert "cuda" not in loaded and "rocm" not in loaded and "hexagon" not in loaded, loaded
    assert "tensor_intrin.x86" in loaded and "tensor_intrin.arm_cpu" in loaded, loaded
