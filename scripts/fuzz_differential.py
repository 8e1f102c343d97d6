#!/usr/bin/env python
"""Long differential fuzz run: random graphs, edgec host vs ONNX Runtime.

    python scripts/fuzz_differential.py --cases 10000 --start 0 --out fuzz.jsonl

Seeds ``start .. start+cases-1``; each seed runs in a worker process with a timeout, so
a crash or hang in TVM is recorded against its seed and the run goes on. Prints a
summary; with ``--out`` writes one JSON line per failing seed.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.compiler.graphgen


def _check(seed: int) -> tuple[int, str | None]:
    import os

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    from tests.compiler.graphgen import differential

    return seed, differential(seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per seed")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    counts: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, object]] = []
    seeds = collections.deque(range(args.start, args.start + args.cases))
    start = time.monotonic()
    while seeds:
        # A pool per batch: a crashed worker breaks only its batch, which is retried
        # one seed per process to find the seed that crashed.
        batch = [seeds.popleft() for _ in range(min(len(seeds), 50))]
        for seed, problem in _run_batch(batch, args.jobs, args.timeout):
            kind = "ok" if problem is None else ("crash" if problem.startswith("crash") else
                   "timeout" if problem.startswith("timeout") else
                   "raised" if "edgec raised" in problem else "mismatch")
            counts[kind] += 1
            if problem is not None:
                failures.append({"seed": seed, "kind": kind, "problem": problem})
                print(problem, flush=True)
        done = sum(counts.values())
        print(f"[{done}/{args.cases}] {dict(counts)} {time.monotonic() - start:.0f} s", flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(f) + "\n" for f in failures))
    print(json.dumps({"cases": args.cases, "counts": dict(counts),
                      "seconds": round(time.monotonic() - start)}))
    return 1 if failures else 0


def _run_batch(batch: list[int], jobs: int, timeout: float) -> list[tuple[int, str | None]]:
    results = _in_pool(batch, jobs, timeout)
    if results is not None:
        return results
    # Something crashed or hung: one process per seed, so the culprit is named.
    out: list[tuple[int, str | None]] = []
    for seed in batch:
        one = _in_pool([seed], 1, timeout)
        out.extend(one if one is not None else [(seed, _LAST_FAILURE[0] + f" seed {seed}")])
    return out


_LAST_FAILURE = ["crash:"]


def _in_pool(seeds: list[int], jobs: int, timeout: float) -> list[tuple[int, str | None]] | None:
    """Results for ``seeds``, or None if a worker died or a seed exceeded ``timeout``."""
    pool = ProcessPoolExecutor(jobs, max_tasks_per_child=25)
    try:
        futures = [pool.submit(_check, s) for s in seeds]
        results = [f.result(timeout=timeout) for f in futures]
        pool.shutdown()
        return results
    except (BrokenProcessPool, FutureTimeout) as exc:
        crashed = isinstance(exc, BrokenProcessPool)
        _LAST_FAILURE[0] = "crash: worker died:" if crashed else f"timeout: > {timeout:g} s:"
        # Kill this pool's workers only: a hung one ignores shutdown.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        return None


if __name__ == "__main__":
    sys.exit(main())
