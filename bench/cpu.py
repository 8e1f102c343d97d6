"""edgec on the host CPU vs ONNX Runtime, for every real model, in one run.

For each model: ONNX Runtime ms, edgec with TVM's plain loops ("before": the
default schedules switched off), edgec untuned, with the default schedules
("after"), and, for each model with a database ``--tuning-db-root/<model>``,
edgec built with it ("tuned", with the trials and tuning seconds ``edgec tune``
recorded in that database's summary), and the ratios to ONNX Runtime. Medians
of ``--repeat`` runs; the variants take turns over ``--rounds`` rounds and each keeps
its fastest round. The machine may be shared, so treat small differences as noise
(the load average before and after each model is recorded). Writes
cpu.json, cpu.md (the table the README shows) and cpu.png to ``--out``.

Tune first, outside the repository (databases are not committed), e.g.
``edgec tune $(python -m edgec.examples minilm --print-path) --input-shape ...
--time-budget 15m --db ~/.cache/edgec/tuning/minilm``.

Usage: python bench/cpu.py [--models ppocr-cls,minilm] [--no-before]
       [--tuning-db-root ~/.cache/edgec/tuning] [--rounds 3] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from edgec import driver
from edgec.bench_ort import run_onnxruntime, time_onnxruntime
from edgec.examples.data import example_inputs
from edgec.examples.models import REAL_MODELS, model_path, real_model
from edgec.targets.cpu import pipeline as cpu_pipeline_mod
from edgec.tuning import read_summary


def _build(name: str, path: Path, scheduled: bool, tuning_db: Path | None = None) -> Any:
    # "before" = the same build with the default-schedule phase emptied.
    off = mock.patch.object(cpu_pipeline_mod, "schedule_passes", lambda db, defaults=None: [])
    with nullcontext() if scheduled else off:
        t0 = time.perf_counter()
        pkg = driver.build(path, "host", input_shapes=real_model(name).input_shapes,
                           tuning_db=tuning_db)
        return pkg, time.perf_counter() - t0


def _max_err(pkg: Any, feeds: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    outs = pkg.run(feeds)
    outs = list(outs.values()) if isinstance(outs, dict) else list(outs)
    return max(
        float(np.max(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64))))
        for o, r in zip(outs, ref.values())
    )


def tuning_db_for(root: Path | None, name: str) -> Path | None:
    """``root/name`` if it holds a tuning database with a summary, else None."""
    if root is None:
        return None
    db = root.expanduser() / name
    return db if read_summary(db) is not None else None


def bench_model(name: str, repeat: int, before: bool, tuning_db: Path | None = None,
                rounds: int = 3) -> dict[str, Any]:
    path = model_path(name)
    feeds = example_inputs(name)[0]
    row: dict[str, Any] = {"model": name, "load_before": os.getloadavg()[0], "rounds": rounds}
    ref = run_onnxruntime(path, feeds)
    variants = [("after", True, None)] + ([("tuned", True, tuning_db)] if tuning_db else [])
    variants += [("before", False, None)] if before else []
    timers = {"ort_ms": lambda: time_onnxruntime(path, feeds, repeat=repeat)["median_ms"]}
    for label, scheduled, db in variants:
        pkg, build_s = _build(name, path, scheduled, db)
        row[f"edgec_{label}_build_s"] = round(build_s, 1)
        row[f"edgec_{label}_max_abs_err"] = _max_err(pkg, feeds, ref)
        # Plain loops take seconds per run on the big models: fewer repeats there.
        reps = repeat if scheduled else max(2, repeat // 5)
        timers[f"edgec_{label}_ms"] = (
            lambda pkg=pkg, reps=reps: pkg.benchmark(feeds, repeat=reps, warmup=1)["median_ms"])
    # The timings take turns, and each keeps its fastest round: on a shared VM a slow
    # spell then hits every variant instead of whichever ran during it.
    for key in timers:
        row[key] = float("inf")
    for _ in range(rounds):
        for key, timer in timers.items():
            row[key] = min(row[key], timer())
    for label, _, _ in variants:
        row[f"{label}_over_ort"] = row[f"edgec_{label}_ms"] / row["ort_ms"]
    if tuning_db is not None:
        summary = read_summary(tuning_db) or {}
        row["tuning_db"] = str(tuning_db)
        row["tuning_trials"] = summary.get("trials")
        row["tuning_s"] = summary.get("seconds")
        row["tuning_tasks"] = summary.get("tasks")
    row["load_after"] = os.getloadavg()[0]
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (ms, and x ONNX Runtime in parentheses)."""
    cols = [("edgec_before_ms", "before_over_ort", "edgec plain loops"),
            ("edgec_after_ms", "after_over_ort", "edgec default schedules"),
            ("edgec_tuned_ms", "tuned_over_ort", "edgec tuned")]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    tuned = any("tuning_trials" in r for r in rows)
    head = ["model", "ONNX Runtime ms", *[c[2] for c in cols]]
    head += ["tuning (trials, min)"] if tuned else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |")
            continue
        cells = [r["model"], f"{r['ort_ms']:.2f}"]
        cells += [f"{r[ms]:.2f} ({r[ratio]:.2f}x)" if ms in r else "-" for ms, ratio, _ in cols]
        if tuned:
            has = "tuning_trials" in r
            cells.append(f"{r['tuning_trials']}, {r['tuning_s'] / 60:.1f}" if has else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("ort_ms", "ONNX Runtime"), ("edgec_before_ms", "edgec plain loops"),
            ("edgec_after_ms", "edgec default schedules"), ("edgec_tuned_ms", "edgec tuned")]
    keys = [k for k in keys if any(k[0] in r for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(2 + 2 * len(rows), 4))
    for i, (key, label) in enumerate(keys):
        # A model without that variant (no tuning database) gets no bar.
        ax.bar(x + i * width, [r.get(key, np.nan) for r in rows], width, label=label)
    ax.set_xticks(x + width * (len(keys) - 1) / 2, [r["model"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per inference (log scale)")
    ax.set_title("host CPU: edgec vs ONNX Runtime")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(REAL_MODELS))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-before", action="store_true", help="skip the plain-loop builds")
    ap.add_argument("--tuning-db-root", type=Path, default=None, metavar="DIR",
                    help="DIR/<model> is the tuning database of each model (edgec tune --db)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (fastest kept)")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        try:
            db = tuning_db_for(args.tuning_db_root, name)
            rows.append(bench_model(name, args.repeat, not args.no_before, db, args.rounds))
        except Exception as exc:  # noqa: BLE001 - TVM raises plain errors; one model failing should not lose the others' numbers
            print(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
            rows.append({"model": name, "error": str(exc).splitlines()[0]})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "cpu.md").write_text(table)
    print(table)
    ok = [r for r in rows if "error" not in r]
    if ok:
        plot(ok, args.out / "cpu.png")
    print(f"wrote {args.out / 'cpu.json'}, {args.out / 'cpu.md'} and {args.out / 'cpu.png'}")


if __name__ == "__main__":
    main()
