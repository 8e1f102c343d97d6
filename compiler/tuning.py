"""``edgec tune``: MetaSchedule search for a model's kernels, into a JSON database.

    model -> same Relax IR as ``build`` -> legalize + fuse -> one task per kernel
          -> MetaSchedule (evolutionary search, XGBoost cost model), measured here
             or on a board through an RPC tracker -> db_dir/*.json

The database is MetaSchedule's JSON database: workloads and records are appended
one line per record after each measured batch, so ``kill -9`` loses at most the
batch in flight (a torn last line is dropped on the next open) and running
``tune`` again resumes. ``build`` applies it through ``cpu_pipeline(desc, db_dir)``;
kernels without a record keep the default schedules. Nothing here is pickled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.targets import TargetDesc, get_target
from edgec.tuning_report import KernelReport, measure_report
from edgec.tuning_report import as_json as report_json

WORKLOADS = "database_workload.json"
# MetaSchedule's 30 s default is shorter than a fresh build or run worker's start
# (it imports TVM) on a loaded 2-core machine: every trial then fails.
_BUILD_TIMEOUT_S = 180.0
RECORDS = "database_tuning_record.json"
# What `tune` did, for reports (bench/cpu.py): total trials and seconds over all runs.
SUMMARY = "edgec_tuning.json"
# A tracker that does not answer within this many seconds is reported, not waited on
# (TVM's own client retries for 60 s per connection).
_TRACKER_TIMEOUT_S = 10.0

NEEDS_BOARD = (
    "tuning for {target} needs the board: measuring aarch64 kernels under qemu would "
    "rank them by emulation speed. Start `python -m tvm.exec.rpc_tracker --port 9190` "
    "somewhere, `python -m tvm.exec.rpc_server --tracker HOST:9190 --key KEY` on the "
    "board, and pass --rpc-tracker HOST:9190 --rpc-key KEY. Builds use the default schedules meanwhile."
)


@dataclass
class TuneResult:
    """What a ``tune`` call did; ``message`` is set when it did not tune."""

    db_dir: Path
    tasks: int = 0
    trials: int = 0  # measured in this call
    resumed_trials: int = 0  # already in the database before this call
    seconds: float = 0.0
    best_ms: dict[str, float] = field(default_factory=dict)  # task name -> best latency
    message: str = ""
    cannot_measure: bool = False  # the target needs what this machine lacks (a board)
    report: list[KernelReport] = field(default_factory=list)  # default vs tuned, per kernel
    # Records the reports added (re-measured default and best schedules), per workload.
    report_records: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """What ``tune --json`` prints."""
        out = {k: v for k, v in vars(self).items() if k not in ("report", "report_records")}
        return {**out, "db_dir": str(self.db_dir), "report": report_json(self.report)}


@dataclass(frozen=True)
class RPC:
    """A tracker address and device key, parsed from ``host:port:key``."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(spec: str) -> RPC:
        host, _, rest = spec.partition(":")
        port, _, key = rest.partition(":")
        if not (host and port.isdigit() and key):
            raise EdgecError(f"--rpc-tracker/--rpc-key {spec!r}: expected HOST:PORT and a device key")
        return RPC(host, int(port), key)


def tune(
    model_path: str | os.PathLike[str],
    target: str | TargetDesc = "host",
    *,
    trials: int | None = None,
    time_budget: float | None = None,
    db_dir: str | os.PathLike[str] = "edgec-tuning",
    rpc: str | RPC | None = None,
    progress: bool = True,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    batch: int = 32,
    report: bool = True,
) -> TuneResult:
    """Tune ``model_path`` for ``target`` until ``trials`` measurements or ``time_budget`` s.

    With ``report``, each kernel's default schedule and best record are measured
    afterwards (also when the database already held all the trials asked for).
    """
    desc = get_target(target) if isinstance(target, str) else target
    db = Path(db_dir)
    if trials is None and time_budget is None:
        raise EdgecError("tune needs --trials or --time-budget (or both)")
    if desc.family not in ("host", "arm-cpu"):
        raise EdgecError(f"tuning is for CPU targets; {desc.name} has no tunable kernels")
    if isinstance(rpc, str):
        rpc = RPC.parse(rpc)
    if desc.family == "arm-cpu" and rpc is None:
        return TuneResult(db_dir=db, message=NEEDS_BOARD.format(target=desc.name),
                          cannot_measure=True)
    if rpc is not None:
        check_tracker(rpc)  # before the model import, which can take a minute

    mod = relax_kernels(model_path, desc, input_shapes)
    return tune_module(mod, desc, trials=trials, time_budget=time_budget, db_dir=db,
                       rpc=rpc, progress=progress, batch=batch, report=report)


def relax_kernels(
    model_path: str | os.PathLike[str], desc: TargetDesc, input_shapes: dict | None
) -> Any:
    """The model as ``build`` compiles it, legalized and fused into TIR kernels."""
    import tvm
    from edgec.driver import import_model
    from edgec.targets.cpu.pipeline import kernel_passes

    # The same front half as build(), so the kernels tuned here are the ones build()
    # looks up in the database (records match by structure).
    mod = import_model(model_path, desc, input_shapes=input_shapes).mod
    target = desc.tvm_target()
    with target:
        return tvm.transform.Sequential(kernel_passes(target))(mod)


def tune_module(
    mod: Any,
    desc: TargetDesc,
    *,
    trials: int | None,
    time_budget: float | None,
    db_dir: Path,
    rpc: RPC | None = None,
    progress: bool = True,
    batch: int = 32,
    report: bool = True,
) -> TuneResult:
    """Tune the TIR kernels of a legalized, fused Relax module (see ``relax_kernels``)."""
    from tvm.s_tir import meta_schedule as ms

    db_dir.mkdir(parents=True, exist_ok=True)
    repair_database(db_dir)
    target = desc.tvm_target()
    # Heaviest first (FLOPs x calls): a short budget may end within the first round.
    ranked = sorted(((t, _work(t)) for t in ms.relax_integration.extract_tasks(mod, target)
                     if not t.mod.attrs.get("tirx.is_scheduled", False)),
                    key=lambda tw: tw[1], reverse=True)
    extracted = [t for t, _ in ranked]
    result = TuneResult(db_dir=db_dir, tasks=len(extracted))
    if not extracted:
        result.message = "no kernels to tune"
        return result
    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    reported = sum((read_summary(db_dir) or {}).get("report_records", {}).values())
    done = max(0, sum(
        len(database.get_top_k(database.commit_workload(t.dispatched[0]), 1 << 30))
        for t in extracted
    ) - reported)
    result.resumed_trials = done
    budget = (trials - done) if trials is not None else 1 << 30
    boards = check_tracker(rpc) if rpc is not None else 0
    if budget <= 0:
        result.message = f"already {done} trials in {db_dir}; nothing left of --trials {trials}"
        if report:
            _report(result, extracted, database, desc, rpc, boards, progress)
            write_summary(db_dir, desc, result, rpc, new_run=False)
        return result

    _drop_unnamed_handlers()
    cpu_tensor_intrinsics()
    _console_warnings_only()
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted, work_dir=str(db_dir / "logs"), num_threads=os.cpu_count() or 1
    )
    bar = _Progress([t.task_name for t in extracted], budget, time_budget, progress)
    start = time.perf_counter()
    try:
        _search(contexts, weights, [w for _, w in ranked], budget, batch, bar, database,
                desc, rpc, boards, db_dir)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start
        result.trials = bar.trials
        result.best_ms = dict(bar.best_ms)
        # Also after Ctrl-C: the trials measured so far are in the database.
        write_summary(db_dir, desc, result, rpc)
    if report:
        _report(result, extracted, database, desc, rpc, boards, progress)
        write_summary(db_dir, desc, result, rpc, new_run=False)
    return result


def _drop_unnamed_handlers() -> None:
    """Remove handlers without a name from MetaSchedule's logger.

    MetaSchedule rebuilds its logging config from the names of that logger's handlers
    and fails on an unnamed one ("'NoneType' object has no attribute 'format'"); one
    appears there after an earlier search in the same process under pytest.
    """
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            logger.removeHandler(handler)


def _console_warnings_only() -> None:
    """Keep MetaSchedule's log off the console below warnings (its files keep all of it).

    Each call that sets up MetaSchedule's logging (task contexts, ``tune_tasks``) adds a
    stdout handler at the level of its logger, which the previous one left at DEBUG:
    every task table and XGBoost iteration went to stdout, into the middle of ``edgec
    tune --json``'s output. Call before each.
    """
    import logging

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


# After the first round (every task one batch), only tasks with at least this share
# of the model's work get more: the long tail of reshapes and casts is not worth a batch.
_FOLLOW_UP_SHARE = 0.02


def _search(contexts: list[Any], weights: list[float], work: list[float], budget: int, batch: int,
            bar: _Progress, database: Any, desc: TargetDesc, rpc: RPC | None, boards: int,
            db_dir: Path) -> None:
    """Measure one batch per call of MetaSchedule, heaviest task first, round after round.

    One task and one batch per ``tune_tasks`` call, with the builder, runner, database
    and XGBoost model shared across calls: each batch is committed as soon as it is
    measured, and the time budget is checked after each batch (so at least one runs).
    A single call over all tasks sends every task's first batch before it commits any:
    on PP-OCR cls (54 tasks) that first round alone outlasted a 10-minute budget, and a
    stop inside it kept nothing.
    """
    from tvm.s_tir import meta_schedule as ms

    builder, runner = _builder(desc), _runner(rpc, boards)
    cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=os.cpu_count() or 1)
    # Records reach the database first; the progress bar only reads them.
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"), bar.callback()]
    total = sum(work) or 1.0
    left, first = budget, True
    while left > 0:
        measured = 0
        for i, (ctx, weight) in enumerate(zip(contexts, weights)):
            if left <= 0:
                break
            if not first and work[i] < _FOLLOW_UP_SHARE * total:
                continue
            n = min(batch, left)
            bar.task = i
            before = bar.trials
            _console_warnings_only()
            ms.tune.tune_tasks(
                tasks=[ctx], task_weights=[weight], work_dir=str(db_dir),
                max_trials_global=n, max_trials_per_task=n, num_trials_per_iter=n,
                builder=builder, runner=runner, database=database, cost_model=cost_model,
                measure_callbacks=callbacks,
            )
            measured += bar.trials - before
            left -= n
            if bar.out_of_time():
                return
        if measured == 0:
            return  # every search space is exhausted
        first = False


def _work(task: Any) -> float:
    """FLOPs x calls of an extracted task (0 if TVM cannot estimate them)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0])) * int(task.weight)
    except Exception:  # noqa: BLE001 - TVM raises plain errors; unknown work sorts last
        return 0.0


def _report(result: TuneResult, tasks: list[Any], database: Any, desc: TargetDesc,
            rpc: RPC | None, boards: int, progress: bool) -> None:
    import sys

    if progress:
        print(f"measuring {len(tasks)} kernels: default schedule vs best record", file=sys.stderr)
    _console_warnings_only()
    extra = dict((read_summary(result.db_dir) or {}).get("report_records", {}))
    result.report = measure_report(tasks, database, desc.tvm_target(), _builder(desc),
                                   _runner(rpc, boards), extra)
    result.report_records = extra


def read_summary(db_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The summary ``tune`` keeps in ``db_dir`` (trials, seconds, runs), or None."""
    path = Path(db_dir) / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_summary(
    db_dir: Path, desc: TargetDesc, result: TuneResult, rpc: RPC | None, new_run: bool = True
) -> None:
    """Add this run to ``db_dir/edgec_tuning.json``; totals count every run so far.

    ``new_run=False`` only updates the per-kernel report (kept from the last run
    that made one).
    """
    from edgec.atomic import atomic_write_text

    old = read_summary(db_dir) or {}
    extra = result.report_records or old.get("report_records", {})
    runs = list(old.get("runs", []))
    if new_run:
        runs.append({
            "trials": result.trials,
            "seconds": round(result.seconds, 1),
            "tasks": result.tasks,
            "rpc": f"{rpc.host}:{rpc.port}:{rpc.key}" if rpc else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    summary = {
        "target": desc.name,
        # Records in the database (a run cut by kill -9 never wrote its run entry,
        # but its records count), less those the reports added.
        "trials": _count_records(db_dir) - sum(extra.values()),
        "seconds": round(sum(r["seconds"] for r in runs), 1),
        "tasks": result.tasks,
        "runs": runs,
        "report": report_json(result.report) if result.report else old.get("report"),
        "report_records": extra,
    }
    atomic_write_text(db_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


def _count_records(db_dir: Path) -> int:
    path = db_dir / RECORDS
    return sum(1 for line in path.read_bytes().splitlines() if line.strip()) if path.exists() else 0


def check_tracker(rpc: RPC, timeout: float = _TRACKER_TIMEOUT_S) -> int:
    """How many boards are registered under ``rpc.key``; an EdgecError if none answer."""
    import socket

    from tvm import rpc as tvm_rpc

    where = f"RPC tracker {rpc.host}:{rpc.port}"
    try:
        # Fail fast: TVM's client retries a dead address for a minute.
        socket.create_connection((rpc.host, rpc.port), timeout=timeout).close()
        summary = tvm_rpc.connect_tracker(rpc.host, rpc.port).summary()
    except (OSError, RuntimeError) as exc:
        raise EdgecError(f"{where} does not answer ({exc}); is `python -m "
                         "tvm.exec.rpc_tracker` running there?") from None
    queue = summary.get("queue_info", {}).get(rpc.key)
    total = sum(1 for s in summary.get("server_info", []) if s.get("key") == f"server:{rpc.key}")
    if not queue and not total:
        keys = sorted(summary.get("queue_info", {})) or ["none"]
        raise EdgecError(f"{where} has no boards with key {rpc.key!r} (keys there: "
                         f"{', '.join(keys)}); start `python -m tvm.exec.rpc_server --tracker "
                         f"{rpc.host}:{rpc.port} --key {rpc.key}` on each board")
    return max(1, total)


def repair_database(db_dir: Path) -> int:
    """Drop torn lines (a write cut by ``kill -9``) from the database files; count them."""
    dropped = 0
    for name in (WORKLOADS, RECORDS):
        path = db_dir / name
        if not path.exists():
            continue
        raw = path.read_bytes()
        good = []
        for line in raw.splitlines():
            try:
                json.loads(line)
                good.append(line)
            except ValueError:
                dropped += 1
        fixed = b"".join(line + b"\n" for line in good)
        if fixed != raw:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(fixed)
            os.replace(tmp, path)
    return dropped


def _builder(desc: TargetDesc) -> Any:
    from tvm.s_tir import meta_schedule as ms

    if desc.family == "arm-cpu":
        # Workers import edgec and export with the aarch64 cross compiler.
        return ms.builder.LocalBuilder(f_build=_build, f_export=_export_aarch64,
                                       max_workers=1, timeout_sec=_BUILD_TIMEOUT_S)
    return ms.builder.LocalBuilder(f_build=_build, max_workers=1, timeout_sec=_BUILD_TIMEOUT_S)


def cpu_tensor_intrinsics() -> None:
    """Register TVM's x86 and Arm tensor intrinsics, and only those, for MetaSchedule.

    Every ``TuneContext`` runs ``import tvm.s_tir.tensor_intrin``, whose package
    initializer also registers the CUDA, ROCm and Hexagon intrinsics: 34 s here, 22 s
    of it CUDA's, in every process that tunes. The CPU schedule rules need only the two
    CPU modules; with the package entered as already imported, the context's own import
    is a no-op.
    """
    import importlib
    import importlib.util
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return
        sys.modules[name] = importlib.util.module_from_spec(spec)  # initializer not run
    for sub in ("x86", "arm_cpu"):
        importlib.import_module(f"{name}.{sub}")


def _build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's ``default_build`` without its ``import tvm.s_tir.tensor_intrin``.

    That import registers every target's tensor intrinsics and takes about 30 s, and
    ``LocalBuilder`` starts a fresh worker for every batch: a 2-trial tune of a small
    matmul spent 39 of its 46 s there. A scheduled kernel arrives already tensorized,
    so building it needs none of the registry.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _export_aarch64(mod: Any) -> str:
    import tempfile

    from edgec.targets.arm_cpu import toolchain
    from tvm.support.cc import cross_compiler

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=cross_compiler(toolchain.find_cxx()))
    return path


def _runner(rpc: RPC | None, boards: int = 1) -> Any:
    from tvm.s_tir import meta_schedule as ms

    # number x repeat chosen so one trial costs ~0.1 s on small kernels.
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40)
    if rpc is None:
        # The same worker start as the builder's: 30 s is too short on a loaded machine.
        return ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=_BUILD_TIMEOUT_S)
    config = ms.runner.RPCConfig(
        tracker_host=rpc.host, tracker_port=rpc.port, tracker_key=rpc.key,
        session_timeout_sec=120,
    )
    # One measurement in flight per board: a farm of N boards measures N at a time.
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator,
                               max_workers=max(1, boards))


class _Progress:
    """A tqdm bar over trials, showing tasks touched and the best latency so far."""

    def __init__(
        self, names: list[str], total: int, time_budget: float | None, enabled: bool
    ) -> None:
        from tqdm import tqdm

        self.names = names
        self.task = 0  # index into names of the task being measured
        self.trials = 0
        self.best_ms: dict[str, float] = {}
        self.deadline = None if time_budget is None else time.monotonic() + time_budget
        self.bar = tqdm(total=None if total >= 1 << 30 else total, unit="trial",
                        desc="tuning", disable=not enabled, dynamic_ncols=True)

    def callback(self) -> Any:
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        progress = self

        @derived_object
        class _Callback(PyMeasureCallback):
            def apply(self, task_scheduler: Any, task_id: int, candidates: Any,
                      builder_results: Any, runner_results: Any) -> None:
                progress.update(task_scheduler, task_id, runner_results)

        return _Callback()

    def update(self, scheduler: Any, task_id: int, runner_results: Any) -> None:
        # One task per tune_tasks call (``_search``): TVM's task_id is always 0.
        name = self.names[self.task]
        for r in runner_results:
            if r.error_msg is None and r.run_secs:
                ms = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                self.best_ms[name] = min(ms, self.best_ms.get(name, float("inf")))
        self.trials += len(runner_results)
        self.bar.update(len(runner_results))
        self.bar.set_postfix_str(
            f"tasks {len(self.best_ms)}/{len(self.names)}, {name[:28]} best "
            f"{self.best_ms.get(name, float('nan')):.4f} ms"
        )

    def out_of_time(self) -> bool:
        """True once the time budget is spent (checked between batches)."""
        return self.deadline is not None and time.monotonic() > self.deadline

    def close(self) -> None:
        self.bar.close()
