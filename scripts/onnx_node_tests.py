#!/usr/bin/env python
"""Run ONNX's node test cases through edgec's host backend; write a JSON + markdown report.

    python scripts/onnx_node_tests.py reports/onnx-node --jobs 2 --timeout 60
    python scripts/onnx_node_tests.py out --filter 'test_(conv|gemm)' --passing-list list.txt
    python scripts/onnx_node_tests.py out2 --filter 'test_scan' --merge out/report.json

Each case runs in a worker process. A worker that dies (segfault in TVM) marks its case
``crash``, one that exceeds ``--timeout`` is killed and marks it ``timeout``; either way
a fresh worker takes its place and the run goes on. Workers are forked from this
process after the cases are collected (it never imports TVM), so they share the cases
without serialising models; they are recycled every ``--recycle`` cases to bound memory.

``--merge OLD/report.json`` reruns only the filtered cases and takes every other case's
result from the old report (for a change that touches a few ops); the report counts
the carried-over results and names the report they came from.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from edgec.conformance import STATUSES, CaseResult, collect, op_names, run_case

_CASES: list[Any] = []
_OPS: dict[str, str] = {}


def _worker(conn: Connection) -> None:
    """Run case indices received on ``conn``; send back each result as a dict."""
    import os

    os.environ.setdefault("TVM_NUM_THREADS", "1")
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        case = _CASES[index]
        conn.send(run_case(case, _OPS[case.name]).to_json())


class _Slot:
    """One worker process and the case it is running."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.proc: Any = None
        self.conn: Connection | None = None
        self.index: int | None = None
        self.started = 0.0
        self.done = 0

    def ensure(self) -> None:
        if self.proc is None or not self.proc.is_alive():
            parent, child = self.ctx.Pipe()
            self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
            self.proc.start()
            child.close()
            self.conn, self.done = parent, 0

    def submit(self, index: int) -> None:
        self.ensure()
        assert self.conn is not None
        self.conn.send(index)
        self.index, self.started = index, time.monotonic()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc, self.conn = None, None


def run_all(indices: list[int], jobs: int, timeout: float, recycle: int) -> list[CaseResult]:
    ctx = mp.get_context("fork")  # share _CASES; the parent has not imported TVM
    slots = [_Slot(ctx) for _ in range(max(1, jobs))]
    todo = collections.deque(indices)
    results: list[CaseResult] = []
    total = len(indices)

    def finish(slot: _Slot, res: CaseResult) -> None:
        results.append(res)
        slot.index = None
        slot.done += 1
        if slot.done >= recycle:
            assert slot.conn is not None
            slot.conn.send(None)
            slot.proc.join(5)
            slot.kill()
        n = len(results)
        if n % 50 == 0 or n == total:
            counts = collections.Counter(r.status for r in results)
            print(f"[{n}/{total}] " + " ".join(f"{k}={counts[k]}" for k in STATUSES), flush=True)

    while todo or any(s.index is not None for s in slots):
        for slot in slots:
            if slot.index is None and todo:
                slot.submit(todo.popleft())
        busy = [s for s in slots if s.index is not None]
        ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=1.0)
        now = time.monotonic()
        for slot in busy:
            case = _CASES[slot.index]  # type: ignore[index]
            op = _OPS[case.name]
            if slot.conn in ready or slot.conn.poll():  # type: ignore[union-attr]
                try:
                    data = slot.conn.recv()  # type: ignore[union-attr]
                    finish(slot, CaseResult(**data))
                    continue
                except (EOFError, OSError):
                    pass  # died while sending: a crash
            if not slot.proc.is_alive():
                code = slot.proc.exitcode
                slot.kill()
                finish(slot, CaseResult(case.name, op, "crash", f"worker exit code {code}",
                                        now - slot.started))
            elif now - slot.started > timeout:
                slot.kill()
                finish(slot, CaseResult(case.name, op, "timeout", f"> {timeout:g} s",
                                        now - slot.started))
    for slot in slots:
        slot.kill()
    return sorted(results, key=lambda r: r.name)


def write_report(results: list[CaseResult], out: Path, seconds: float,
                 carried: tuple[int, str] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    counts = collections.Counter(r.status for r in results)
    folded = sum(1 for r in results if r.status == "pass" and r.folded)
    per_op: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        per_op[r.op][r.status] += 1
    summary = {
        "total": len(results),
        "counts": {k: counts[k] for k in STATUSES},
        "pass_rate": round(counts["pass"] / max(1, len(results)), 4),
        "passes_folded_to_constants": folded,
        "seconds": round(seconds, 1),
    }
    if carried:
        summary["carried_over"] = {"cases": carried[0], "from": carried[1]}
    report = {
        "summary": summary,
        "per_op": {op: dict(c) for op, c in sorted(per_op.items())},
        "cases": [r.to_json() for r in results],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# ONNX node tests on edgec (host)",
        "",
        f"{counts['pass']}/{len(results)} pass ({100 * summary['pass_rate']:.1f}%), "
        f"of which {folded} folded to constants by the optimizer; "
        + ", ".join(f"{k} {counts[k]}" for k in STATUSES[1:])
        + f". {seconds:.0f} s."
        + (f" {carried[0]} results carried over from {carried[1]}." if carried else ""),
        "",
        "## Failure causes (most common first)",
        "",
        "| cases | status | cause |",
        "| ---: | --- | --- |",
    ]
    causes = collections.Counter(
        (r.status, _cause(r.detail)) for r in results if r.status != "pass"
    )
    for (status, cause), n in causes.most_common(40):
        lines.append(f"| {n} | {status} | {cause.replace('|', '/')} |")
    lines += ["", "## Per operator", "", "| op | " + " | ".join(STATUSES) + " |",
              "| --- |" + " ---: |" * len(STATUSES)]
    for op, c in sorted(per_op.items()):
        lines.append(f"| {op} | " + " | ".join(str(c[k] or "") for k in STATUSES) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def _cause(detail: str) -> str:
    """A failure message with its case-specific numbers cut, for grouping."""
    import re

    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", detail)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    return text[:120]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for report.json and report.md")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--filter", default=None, help="regex on the test name")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    ap.add_argument("--recycle", type=int, default=100, help="cases per worker before restart")
    ap.add_argument("--merge", type=Path, default=None,
                    help="take results of cases not rerun from this earlier report.json")
    ap.add_argument("--passing-list", type=Path, default=None,
                    help="also write the names of passing cases to this file")
    args = ap.parse_args(argv)

    start = time.monotonic()
    _CASES.extend(collect(args.filter))
    _OPS.update(op_names(_CASES))
    print(f"{len(_CASES)} cases", flush=True)
    results = run_all(list(range(len(_CASES))), args.jobs, args.timeout, args.recycle)
    carried = None
    if args.merge is not None:
        rerun = {r.name for r in results}
        old = json.loads(args.merge.read_text())["cases"]
        kept = [CaseResult(**c) for c in old if c["name"] not in rerun]
        results = sorted(results + kept, key=lambda r: r.name)
        carried = (len(kept), str(args.merge))
    summary = write_report(results, args.out, time.monotonic() - start, carried)
    if args.passing_list is not None:
        names = [r.name for r in results if r.status == "pass"]
        args.passing_list.write_text("\n".join(names) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
