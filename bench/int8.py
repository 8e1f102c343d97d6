"""int8 edgec vs float edgec vs ONNX Runtime (float and ``quantize_static`` QDQ), one run.

For each real model: calibrate on seeded realistic samples (rendered text, real
sentences), build edgec for the host in float and with ``--quantize int8``, quantize
the same simplified model with ONNX Runtime's ``quantize_static`` (QDQ, int8
activations and per-channel int8 weights, the same calibration samples), and time all
four on one held-out input in this one run, taking turns over ``--rounds`` rounds
(each keeps its fastest round's median). Also reports each int8 model's cosine to
ONNX Runtime's float output on that input. Medians of ``--repeat`` runs; the machine
may be shared, so read the ratios (measured in the same run), not absolute times.
Writes int8.json and int8.md to ``--out``.

Usage: python bench/int8.py [--models ppocr-cls,ppocr-det,minilm,minilm:all-int8] [--repeat 20]
       [--calib 16] [--rounds 3] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from edgec import driver, frontend
from edgec.bench_ort import run_onnxruntime, time_onnxruntime
from edgec.calibration import save_npz
from edgec.examples.data import example_inputs
from edgec.examples.models import model_path, real_model

MODELS = ("ppocr-cls", "ppocr-det", "minilm", "minilm:all-int8")
Feed = dict[str, np.ndarray]
# The int8 build of each entry: the settings whose accuracy tests/passes/quantize holds.
# MiniLM needs minmax and a budget (six FFN2 matmuls kept float) for its cosine goal;
# "minilm:all-int8" is the same model with every matmul in int8, for the kernels' speed.
SETTINGS: dict[str, dict[str, str]] = {
    "ppocr-cls": {"calib_method": "minmax"},
    "ppocr-det": {"calib_method": "percentile"},
    "minilm": {"calib_method": "minmax", "accuracy_budget": "cosine=0.98"},
    "minilm:all-int8": {"calib_method": "minmax"},
}
# At least this many calibration samples (one in five held out): the MiniLM test's 32.
MIN_CALIB = {"minilm": 32}


def _cosine(a: dict[str, np.ndarray] | list[np.ndarray], b: dict[str, np.ndarray]) -> float:
    xs = list(a.values()) if isinstance(a, dict) else list(a)
    x = np.concatenate([np.ravel(v).astype(np.float64) for v in xs])
    y = np.concatenate([np.ravel(v).astype(np.float64) for v in b.values()])
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30))


def ort_quantize_static(simple: onnx.ModelProto, calib: list[Feed], work: Path) -> Path:
    """ONNX Runtime's own QDQ int8 model of ``simple`` (per-channel weights, minmax).

    It gets the graph edgec quantizes (``onnx_graph.prepare``: opset 13, which per-channel
    QDQ needs, and BatchNormalization folded, which ONNX Runtime would fold anyway)."""
    import logging

    from edgec.passes.quantize.onnx_graph import prepare
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> Feed | None:
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": it crashes here
    src, dst = work / "float_simple.onnx", work / "ort_int8.onnx"
    onnx.save(prepare(simple), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return dst


def bench_model(entry: str, repeat: int, n_calib: int, work: Path, rounds: int = 3) -> dict[str, Any]:
    name = entry.split(":")[0]
    path = model_path(name)
    shapes = real_model(name).input_shapes
    n_calib = max(n_calib, MIN_CALIB.get(name, 0))
    calib = example_inputs(name, n_calib, seed=0)
    feeds = example_inputs(name, 1, seed=7)[0]
    npz = save_npz(work / f"{name}_calib.npz", calib)
    settings = SETTINGS.get(entry, {})
    row: dict[str, Any] = {"model": entry, "calib_samples": n_calib, "rounds": rounds,
                           "int8_settings": settings}
    ref = run_onnxruntime(path, feeds)
    _, simple = frontend.prepare(frontend.load_model(path).proto, shapes)
    t0 = time.perf_counter()
    ort_q = ort_quantize_static(simple, calib, work)
    row["ort_quantize_s"] = round(time.perf_counter() - t0, 1)
    row["ort_int8_cosine"] = _cosine(run_onnxruntime(ort_q, feeds), ref)
    pkgs = {}
    for label, kw in (("float", {}), ("int8", {"quantize": "int8", "calib": npz, **settings})):
        t0 = time.perf_counter()
        pkgs[label] = pkg = driver.build(path, "host", input_shapes=shapes, **kw)
        row[f"edgec_{label}_build_s"] = round(time.perf_counter() - t0, 1)
        row[f"edgec_{label}_cosine"] = _cosine(pkg.run(feeds), ref)
        if label == "int8":
            q = pkg.report.get("quantization", {})
            row["int8_layers"] = q.get("layers")
            row["lowered"] = pkg.report.get("passes", {}).get("quantize-int8", {}).get("lowered")
    # The four timings take turns, and each keeps its fastest round: on a shared VM a
    # slow spell then hits all four instead of whichever ran during it.
    timers = {
        "ort_float_ms": lambda: time_onnxruntime(path, feeds, repeat=repeat)["median_ms"],
        "ort_int8_ms": lambda: time_onnxruntime(ort_q, feeds, repeat=repeat)["median_ms"],
        **{f"edgec_{label}_ms": (lambda p=p: p.benchmark(feeds, repeat=repeat, warmup=2)["median_ms"])
           for label, p in pkgs.items()},
    }
    for key in timers:
        row[key] = float("inf")
    for _ in range(rounds):
        for key, timer in timers.items():
            row[key] = min(row[key], timer())
    row["int8_over_float"] = row["edgec_int8_ms"] / row["edgec_float_ms"]
    row["int8_over_ort_int8"] = row["edgec_int8_ms"] / row["ort_int8_ms"]
    row["int8_over_ort_float"] = row["edgec_int8_ms"] / row["ort_float_ms"]
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """ms per inference; ratios are edgec int8 over the column named."""
    head = ["model", "ORT float ms", "ORT int8 (QDQ) ms", "edgec float ms", "edgec int8 ms",
            "int8 / edgec float", "int8 / ORT int8", "cosine edgec int8", "cosine ORT int8"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |")
            continue
        lines.append("| " + " | ".join([
            r["model"], f"{r['ort_float_ms']:.2f}", f"{r['ort_int8_ms']:.2f}",
            f"{r['edgec_float_ms']:.2f}", f"{r['edgec_int8_ms']:.2f}",
            f"{r['int8_over_float']:.2f}x", f"{r['int8_over_ort_int8']:.2f}x",
            f"{r['edgec_int8_cosine']:.4f}", f"{r['ort_int8_cosine']:.4f}"]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--calib", type=int, default=16, help="calibration samples per model")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds (fastest kept)")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            try:
                rows.append(bench_model(name, args.repeat, args.calib, Path(tmp), args.rounds))
            except Exception as exc:  # noqa: BLE001 - one model failing should not lose the others' numbers
                print(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
                rows.append({"model": name, "error": str(exc).splitlines()[0]})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "int8.md").write_text(table)
    print(table)
    print(f"wrote {args.out / 'int8.json'} and {args.out / 'int8.md'}")


if __name__ == "__main__":
    main()
