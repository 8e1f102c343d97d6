"""The per-kernel tuning report: default schedules replay from their traces, the
build takes the faster of default and tuned, and the table/JSON agree."""

from __future__ import annotations

import tvm_ffi
from edgec.targets import get_target
from edgec.targets.cpu.apply import schedule_func
from edgec.tuning_report import KernelReport, as_json, default_schedule, format_table, totals
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from tests.compiler.test_tuning import _legalized, _matmul

HOST = get_target("host")


def test_default_schedule_replays_from_its_trace() -> None:
    target = HOST.tvm_target()
    (task,) = ms.relax_integration.extract_tasks(_legalized(_matmul()), target)
    workload = task.dispatched[0]
    func, rule, trace = default_schedule(workload, target)
    assert rule == "Matmul" and trace is not None
    # What a database record holds (the trace) rebuilds what build's default pass makes.
    replay = s_tir.Schedule(workload)
    trace.apply_to_schedule(replay, remove_postproc=False)
    built, _ = schedule_func(workload["main"], target)
    assert tvm_ffi.structural_equal(replay.mod["main"], built.without_attr("tirx.is_scheduled"))
    assert tvm_ffi.structural_equal(func, built)


def test_build_uses_the_faster_and_totals_weigh_calls() -> None:
    rows = [
        KernelReport("conv", calls=2, trials=10, default_rule="Conv", before_ms=1.0, tuned_ms=0.5),
        KernelReport("mean", calls=1, trials=3, default_rule="Norm", before_ms=0.3, tuned_ms=0.6),
        KernelReport("copy", calls=1, trials=0, default_rule="", before_ms=0.2, tuned_ms=None),
    ]
    assert [r.after_ms for r in rows] == [0.5, 0.3, 0.2]
    assert [r.speedup for r in rows] == [2.0, 1.0, 1.0]
    t = totals(rows)
    assert t["before_ms"] == 2 * 1.0 + 0.3 + 0.2 and t["after_ms"] == 2 * 0.5 + 0.3 + 0.2
    data = as_json(rows)
    assert data["total"] == t and data["kernels"][0]["after_ms"] == 0.5
    table = format_table(rows).splitlines()
    # Most time first; plain loops named; the total row sums the trials.
    assert table[2].startswith("conv") and "plain loops" in table[4]
    assert table[-1].startswith("total (x calls)") and " 13 " in table[-1]


def test_kernel_without_numbers() -> None:
    row = KernelReport("k", calls=1, trials=0, default_rule="", before_ms=None, tuned_ms=None)
    assert row.after_ms is None and row.speedup is None
    assert totals([row])["speedup"] is None
    assert " - " in format_table([row]).splitlines()[2]
