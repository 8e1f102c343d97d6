"""The per-kernel report of ``edgec tune``: default schedule vs best tuned record.

For every tuned kernel, "before" (default ms) is the kernel as ``build`` schedules
it without a database (``ApplyCPUSchedules``; plain loops where no rule fires),
"tuned" the best record the search found, and "after" the faster of the two, which
``build --tuning-db`` then uses (both are committed with these latencies). Both are
built and measured again here, in one batch and with the search's builder and
runner, so they are taken under the same machine load.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class KernelReport:
    """One kernel: how often the model calls it, trials spent, and its latencies."""

    kernel: str
    calls: int
    trials: int
    default_rule: str  # the default rule that scheduled it, "" for plain loops
    before_ms: float | None  # the default schedule; None: did not build or run
    tuned_ms: float | None  # the best searched record; None: none that runs
    build_uses: str = "-"  # "tuned" or "default": whichever measured faster here

    @property
    def after_ms(self) -> float | None:
        """What ``build --tuning-db`` gets: the faster of the two."""
        known = [v for v in (self.before_ms, self.tuned_ms) if v is not None]
        return min(known) if known else None

    @property
    def speedup(self) -> float | None:
        after = self.after_ms
        if self.before_ms is None or after is None or after <= 0:
            return None
        return self.before_ms / after


def measure_report(
    tasks: list[Any], database: Any, target: Any, builder: Any, runner: Any,
    extra: dict[str, int] | None = None,
) -> list[KernelReport]:
    """Build and time each task's default schedule and its best searched record.

    Both are then committed to ``database`` with the latencies measured here, so
    that ``build`` (which takes each kernel's fastest record) never picks a searched
    schedule slower than the default: a short search often finds none faster.
    ``extra`` counts the records committed this way per workload (they are not
    trials); it is read to leave earlier ones out of the trial counts and updated.
    """
    from tvm.s_tir.meta_schedule.database import TuningRecord

    extra = {} if extra is None else extra
    counts = _record_counts(database)
    rows: list[KernelReport] = []
    mods: list[Any] = []  # default, searched per task (None: nothing to measure)
    plans: list[tuple[Any, Any, Any]] = []  # workload, default trace, searched record
    for task in tasks:
        wl_mod = task.dispatched[0]
        workload = database.commit_workload(wl_mod)
        default, rule, trace = default_schedule(wl_mod, target)
        searched = _best_searched(database, workload, trace)
        mods += [_as_module(default), _apply(searched, wl_mod)]
        plans.append((workload, trace, searched))
        key = str(_key(wl_mod))
        rows.append(KernelReport(task.task_name, int(task.weight),
                                 counts.get(int(key), 0) - extra.get(key, 0), rule, None, None))
    latencies = _measure(mods, target, builder, runner)
    for i, (row, (workload, trace, searched)) in enumerate(zip(rows, plans)):
        row.before_ms, row.tuned_ms = latencies[2 * i], latencies[2 * i + 1]
        if row.after_ms is not None:
            row.build_uses = "tuned" if row.after_ms == row.tuned_ms else "default"
        args = ms_args(workload.mod)
        key = str(_key(workload.mod))
        for tr, lat in ((trace, row.before_ms), (searched.trace if searched else None, row.tuned_ms)):
            if tr is not None and lat is not None:
                database.commit_tuning_record(TuningRecord(tr, workload, [lat / 1e3], target, args))
                extra[key] = extra.get(key, 0) + 1
    return rows


def default_schedule(wl_mod: Any, target: Any) -> tuple[Any, str, Any]:
    """The kernel as ``ApplyCPUSchedules`` schedules it, the rule's name, and a trace.

    The trace is None unless replaying it on the workload gives exactly that
    kernel (a database record holds only the trace).
    """
    import tvm_ffi
    from edgec.targets.cpu.apply import RULES, schedule_func
    from tvm import s_tir

    func, rule = schedule_func(wl_mod["main"], target)
    if not rule:
        return func, rule, s_tir.Schedule(wl_mod).trace  # plain loops: the empty trace
    try:
        sch = next(r for r in RULES if type(r).__name__ == rule).schedule(wl_mod["main"], target)
        replay = s_tir.Schedule(wl_mod)
        sch.trace.apply_to_schedule(replay, remove_postproc=False)
        same = tvm_ffi.structural_equal(replay.mod["main"], sch.mod["main"])
    except Exception:  # noqa: BLE001 - TVM raises plain errors; no record then
        return func, rule, None
    return func, rule, sch.trace if same else None


def ms_args(wl_mod: Any) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.arg_info.ArgInfo.from_prim_func(wl_mod["main"])


def _best_searched(database: Any, workload: Any, default_trace: Any) -> Any:
    """The fastest record that is not the default schedule (None if there is none)."""
    default = None if default_trace is None else str(default_trace)
    for rec in database.get_top_k(workload, 1 << 30):
        if default is None or str(rec.trace) != default:
            return rec
    return None


def _apply(record: Any, wl_mod: Any) -> Any:
    from tvm import s_tir

    if record is None:
        return None
    try:
        sch = s_tir.Schedule(wl_mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        return sch.mod
    except Exception:  # noqa: BLE001 - TVM raises plain errors; not measurable then
        return None


def _as_module(func: Any) -> Any:
    import tvm

    return tvm.IRModule({"main": func})


def _key(mod: Any) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


def _record_counts(database: Any) -> dict[int, int]:
    """Records (failed measurements included) per workload, keyed by structural hash."""
    counts: dict[int, int] = {}
    for rec in database.get_all_tuning_records():
        key = _key(rec.workload.mod)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _measure(mods: list[Any], target: Any, builder: Any, runner: Any) -> list[float | None]:
    """Mean latency in ms of each module's ``main`` (None if missing, failed or not built)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import remove_build_dir

    todo = [i for i, m in enumerate(mods) if m is not None]
    out: list[float | None] = [None] * len(mods)
    if not todo:
        return out
    built = builder.build([ms.builder.BuilderInput(mods[i], target) for i in todo])
    inputs, where = [], []
    for i, res in zip(todo, built):
        if res.error_msg is None and res.artifact_path:
            inputs.append(ms.runner.RunnerInput(
                # The runner names devices as TVM does ("cpu"), not by target kind ("llvm").
                res.artifact_path, "cpu" if target.kind.name in ("llvm", "c") else target.kind.name,
                ms.arg_info.ArgInfo.from_prim_func(mods[i]["main"])))
            where.append(i)
    for i, future, inp in zip(where, runner.run(inputs), inputs):
        res = future.result()
        secs = [float(s) for s in (res.run_secs or [])]
        # MetaSchedule marks a failed run with 1e10 s.
        if res.error_msg is None and secs and max(secs) < 1e9:
            out[i] = 1e3 * sum(secs) / len(secs)
        remove_build_dir(inp.artifact_path)
    return out


def totals(rows: list[KernelReport]) -> dict[str, float | None]:
    """Latency summed over kernels, each times its calls; over kernels with both numbers."""
    both = [r for r in rows if r.before_ms is not None and r.after_ms is not None]
    before = sum(r.calls * r.before_ms for r in both)  # type: ignore[operator]
    after = sum(r.calls * r.after_ms for r in both)  # type: ignore[operator]
    return {"kernels": len(both), "before_ms": before, "after_ms": after,
            "speedup": before / after if after > 0 else None}


def as_json(rows: list[KernelReport]) -> dict[str, Any]:
    """The report as stored in the database summary and printed by ``tune --json``."""
    return {"kernels": [{**asdict(r), "after_ms": r.after_ms, "speedup": r.speedup} for r in rows],
            "total": totals(rows)}


def format_table(rows: list[KernelReport]) -> str:
    """The report as a plain-text table, most time (calls x default ms) first."""
    def ms(v: float | None) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.4f}"

    order = sorted(rows, key=lambda r: -(r.calls * (r.before_ms or 0.0)))
    width = max([len("total (x calls)"), *(len(r.kernel) for r in rows)])
    head = (f"{'kernel':<{width}}  calls  trials  {'default ms':>10}  {'tuned ms':>10}  "
            f"{'build uses':>10}  speedup  default rule")
    lines = [head, "-" * len(head)]
    for r in order:
        speed = "-" if r.speedup is None else f"{r.speedup:.2f}x"
        lines.append(f"{r.kernel:<{width}}  {r.calls:>5}  {r.trials:>6}  {ms(r.before_ms):>10}  "
                     f"{ms(r.tuned_ms):>10}  {r.build_uses:>10}  {speed:>7}  "
                     f"{r.default_rule or 'plain loops'}")
    t = totals(rows)
    speed = "-" if t["speedup"] is None else f"{t['speedup']:.2f}x"
    lines.append("-" * len(head))
    lines.append(f"{'total (x calls)':<{width}}  {'':>5}  {sum(r.trials for r in rows):>6}  "
                 f"{ms(t['before_ms']):>10}  {ms(t['after_ms']):>10}  {'':>10}  {speed:>7}")
    return "\n".join(lines)
