#!/usr/bin/env python
"""Long differential fuzz run: random graphs, edgec host vs ONNX Runtime.

    python scripts/fuzz_differential.py --cases 10000 --start 0 --out /tmp/fuzz.jsonl \\
        --summary bench/out/fuzz_summary.json
    python scripts/fuzz_differential.py --seed 1234      # one seed alone, as a repro

Seeds ``start .. start+cases-1`` are run in batches: ``graphgen.differential_batch``
compiles a batch as disjoint subgraphs of one model (one TVM compile per batch; its
docstring says why that tests each case as its own compile would) and compares every
case with ONNX Runtime separately. Every seed that fails in a batch, and every seed of
a batch that crashed, hung or failed to compile as a whole, is re-run alone
(``graphgen.differential``), so each failure is named by its seed with a one-line
repro. A failure that does not repeat alone is reported as ``batch-only``.

Cases run in one long-lived worker process (TVM imported once); a crash or hang kills
only the worker, which is restarted. The summary JSON (counts, time, ops covered,
tolerance, git commit) is rewritten after every batch, so an interrupted run still
leaves its numbers.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.compiler.graphgen

REPRO = "{python} scripts/fuzz_differential.py --seed {seed}"


def _worker(conn: Any) -> None:
    """Answer ("batch", seeds) and ("one", seed) requests until the pipe closes."""
    os.environ["TVM_NUM_THREADS"] = "1"  # one core per worker, as the campaign is budgeted
    import edgec.inprocess  # import TVM before saying ready

    from tests.compiler.graphgen import differential, differential_batch

    conn.send(("ready", edgec.inprocess.__file__))
    while True:
        try:
            kind, arg = conn.recv()
        except EOFError:
            return
        if kind == "batch":
            conn.send(differential_batch(arg))
        else:
            conn.send(differential(arg))


class WorkerGone(Exception):
    """The worker crashed or exceeded its time; ``kind`` is "crash" or "timeout"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class Worker:
    """One worker process; restarted after a crash or a timeout."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # no fork of a process holding TVM's threads
        self._proc: Any = None
        self._conn: Any = None
        self.edgec_file = ""
        self.restarts = 0
        self._cpu_done = 0.0  # CPU seconds of workers that have ended

    def cpu_seconds(self) -> float:
        """CPU time used by this worker's processes so far."""
        return self._cpu_done + self._cpu_live()

    def _cpu_live(self) -> float:
        import psutil

        try:
            t = psutil.Process(self._proc.pid).cpu_times() if self._proc is not None else None
        except psutil.Error:
            return 0.0
        return (t.user + t.system) if t is not None else 0.0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        _, self.edgec_file = self._wait(600.0)  # importing TVM on a loaded machine

    def _wait(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self.stop()
                self.restarts += 1
                raise WorkerGone("crash", f"worker died (exit code {code})")
            if time.monotonic() >= deadline:
                self.stop()
                self.restarts += 1
                raise WorkerGone("timeout", f"no answer within {timeout:g} s")
        try:
            return self._conn.recv()
        except EOFError:
            code = self._proc.exitcode
            self.stop()
            self.restarts += 1
            raise WorkerGone("crash", f"worker died (exit code {code})") from None

    def ask(self, request: tuple[str, Any], timeout: float) -> Any:
        if self._proc is None:
            self._start()
        self._conn.send(request)
        return self._wait(timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._cpu_done += self._cpu_live()
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
            self._conn.close()
        self._proc = None


def _kind(problem: str) -> str:
    return "raised" if "edgec raised" in problem else "mismatch"


def run_batch(
    worker: Worker, seeds: list[int], timeout: float, batch_timeout: float
) -> list[dict[str, Any]]:
    """One record per seed: {"seed", "kind", "problem", "batch"} (kind "ok" if it passed)."""
    try:
        batch: dict[int, str | None] = worker.ask(("batch", seeds), batch_timeout)
        whole = None
    except WorkerGone as gone:
        whole = f"{gone.kind}: batch {seeds[0]}..{seeds[-1]}: {gone}"
        batch = dict.fromkeys(seeds, whole)
    first = batch[seeds[0]]
    if whole is None and first is not None and first.startswith("batch of"):
        whole = first  # the batch compile itself raised: no seed named yet
    records = []
    for seed in seeds:
        if batch[seed] is None:
            records.append({"seed": seed, "kind": "ok", "problem": None, "batch": None})
            continue
        try:
            alone = worker.ask(("one", seed), timeout)
            kind = "ok" if alone is None else _kind(alone)
        except WorkerGone as gone:
            alone, kind = f"{gone.kind}: seed {seed}: {gone}", gone.kind
        if alone is None and whole is None:
            kind, alone = "batch-only", f"seed {seed}: fails in its batch only: {batch[seed]}"
        records.append({"seed": seed, "kind": kind, "problem": alone,
                        "batch": batch[seed] if whole is None else whole})
    if whole is not None and all(r["kind"] == "ok" for r in records):
        # The batch failed as a whole but every seed passes alone: report it, on the batch.
        records[0].update(kind="batch-only", problem=f"batch {seeds[0]}..{seeds[-1]}: {whole}")
    return records


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "compiler", "passes",
                                "targets"], cwd=ROOT, capture_output=True, text=True,
                               check=False).stdout
        return out.stdout.strip() + ("+uncommitted-changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _snapshot(dest: Path) -> str:
    """Lay out HEAD's compiler/, passes/ and targets/ as package ``edgec`` under ``dest``.

    Workers import edgec from there (it comes first on sys.path, before the editable
    install), so a long run tests one commit even while others edit the working tree.
    """
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    src = dest / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit, "compiler", "passes", "targets"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    (src / "compiler").rename(dest / "edgec")
    (src / "passes").rename(dest / "edgec" / "passes")
    (src / "targets").rename(dest / "edgec" / "targets")
    return commit


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--batch", type=int, default=50, help="cases per compile")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per seed run alone")
    ap.add_argument("--batch-timeout", type=float, default=None,
                    help="seconds per batch (default: --timeout + 3 s per case)")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines, one per failing seed")
    ap.add_argument("--summary", type=Path, default=None, help="summary JSON")
    ap.add_argument("--seed", type=int, default=None, help="run this one seed alone and exit")
    ap.add_argument("--snapshot", type=Path, default=None,
                    help="test HEAD's committed edgec, copied into this new folder, not the working tree")
    args = ap.parse_args(argv)

    if args.seed is not None:
        from tests.compiler.graphgen import differential

        os.environ.setdefault("TVM_NUM_THREADS", "1")
        problem = differential(args.seed)
        print(problem or f"seed {args.seed}: ok")
        return 1 if problem else 0
    return _campaign(args)


def _campaign(args: argparse.Namespace) -> int:
    from tests.compiler.graphgen import ATOL, RTOL, ops_of

    seeds = list(range(args.start, args.start + args.cases))
    batches = [seeds[i:i + args.batch] for i in range(0, len(seeds), args.batch)]
    batch_timeout = args.batch_timeout or args.timeout + 3.0 * args.batch
    counts: collections.Counter[str] = collections.Counter()
    op_counts: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, Any]] = []
    started = time.time()
    load_start = os.getloadavg()
    if args.snapshot:
        commit = _snapshot(args.snapshot)
        sys.path.insert(0, str(args.snapshot))  # spawned workers inherit sys.path
    else:
        commit = _git_commit()
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable

    def summary(done: bool) -> dict[str, Any]:
        import numpy
        import onnx
        import onnxruntime

        return {
            "complete": done,
            "cases_planned": args.cases, "seeds": [args.start, args.start + args.cases - 1],
            "cases_run": sum(counts.values()), "counts": dict(counts),
            "failures": failures,
            "wall_seconds": round(time.time() - started),
            "cpu_seconds_workers": round(sum(w.cpu_seconds() for w in workers), 1),
            "batch_size": args.batch, "jobs": args.jobs, "worker_restarts": restarts(),
            "tolerance": {"rtol": RTOL, "atol": ATOL,
                          "rule": "|edgec - ort| <= atol * max(1, max|ort|) + rtol * |ort|"},
            "ops_covered": dict(sorted(op_counts.items())),
            "git_commit": commit, "edgec_imported_from": workers[0].edgec_file, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "machine": f"{platform.machine()} {os.cpu_count()} cores, shared with other jobs",
            "versions": {"python": platform.python_version(), "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                         "tvm": _tvm_version()},
            "oracle": "ONNX Runtime CPUExecutionProvider on each case's own model",
        }

    workers = [Worker() for _ in range(max(1, args.jobs))]

    def restarts() -> int:
        return sum(w.restarts for w in workers)

    if args.out:
        args.out.write_text("")
    pending = collections.deque(batches)
    from concurrent.futures import ThreadPoolExecutor

    # Threads only wait on pipes; each drives its own worker process.
    with ThreadPoolExecutor(len(workers)) as pool:
        free = collections.deque(workers)
        running: dict[Any, Worker] = {}
        while pending or running:
            while pending and free:
                w = free.popleft()
                running[pool.submit(run_batch, w, pending.popleft(), args.timeout,
                                    batch_timeout)] = w
            from concurrent.futures import FIRST_COMPLETED, wait

            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                free.append(running.pop(fut))
                for rec in fut.result():
                    counts[rec["kind"]] += 1
                    op_counts.update(ops_of(rec["seed"]))
                    if rec["kind"] != "ok":
                        rec["repro"] = REPRO.format(python=python, seed=rec["seed"])
                        failures.append(rec)
                        print(f"{rec['kind']}: {rec['problem']}\n  repro: {rec['repro']}", flush=True)
                        if args.out:
                            with args.out.open("a") as fh:
                                fh.write(json.dumps(rec) + "\n")
            print(f"[{sum(counts.values())}/{args.cases}] {dict(counts)} "
                  f"{time.time() - started:.0f} s", flush=True)
            if args.summary:
                _write_json(args.summary, summary(False))
    for w in workers:
        w.stop()
    final = summary(True)
    if args.summary:
        _write_json(args.summary, final)
    print(json.dumps({k: final[k] for k in ("cases_run", "counts", "wall_seconds",
                                            "cpu_seconds_workers")}))
    return 1 if failures else 0


def _tvm_version() -> str:
    try:
        from importlib.metadata import version

        return version("apache-tvm")
    except Exception:  # noqa: BLE001
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
