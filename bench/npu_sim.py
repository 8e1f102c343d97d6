"""edge-npu figures: the simulator on MobileNet v1/v2 layer tables, and PP-OCR cls / det
built for the NPU (default and tuned mappings) with ONNX Runtime's CPU latency on this
host in the same run for scale.

Usage:
    python bench/npu_sim.py tables [config]
    python bench/npu_sim.py model ppocr-cls|ppocr-det [--config edge-npu] [--trials 200]
        [--size H W] [--db DIR] [--json out.json]

``model`` quantizes with edgec's PTQ (rendered calibration images), partitions, lowers
and simulates every NPU segment; prints MACs on the NPU, cycles, latency (with the host
invoke), energy, MAC utilization overall and on compute-bound layers (the report's
roofline: MACs at peak outlast the layer's loads and stores) with the timing model's
ceiling for those layers; then tunes (``--trials``) and prints tuned vs default cycles.
``--size``: the input's height and width instead of the model's default (det at 640 x 640,
as the edge-npu README's figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from edgec.targets.edge_npu import config, models
from edgec.targets.edge_npu.isa import Space
from edgec.targets.edge_npu.simulator import Simulator

SHAPES = {"ppocr-cls": (1, 3, 48, 192), "ppocr-det": (1, 3, 320, 320)}


def tables(name: str = "edge-npu") -> None:
    cfg = config.load_config(name)
    for table in ("mobilenet_v1", "mobilenet_v2"):
        mp = models.model_program(cfg, models.load_table(table))
        sim = Simulator(cfg, host_bytes=mp.host_bytes)
        for space, addr, arr in mp.images:
            sim.mem.write(space, addr, arr)
        sim.mem.write(Space.HOST, mp.input_addr, np.random.default_rng(0).integers(
            -128, 128, 224 * 224 * 3, dtype=np.int8))
        t0 = time.perf_counter()
        rep = sim.run(mp.instrs, mp.cached_weights)
        dt = time.perf_counter() - t0
        print(f"{table}: {len(mp.instrs)} instructions, {mp.macs / 1e6:.0f} M MACs, "
              f"simulated in {dt:.2f} s wall\n  {rep.summary()}")


def _summary(rep: dict[str, Any]) -> dict[str, Any]:
    inf = rep["per_inference"]
    return {"segments": len(rep["segments"]), "layers": rep["ops"]["npu_layers"],
            "npu_fraction": rep["macs"]["npu_fraction"], "cycles": inf["cycles"],
            "ms": inf["ms"], "energy_mj": inf["energy_mj"], "utilization": inf["utilization"],
            "compute_layers": inf["compute_layers"],
            "compute_layer_utilization": inf["compute_layer_utilization"],
            "compute_layer_ceiling": inf["compute_layer_ceiling"]}


def _ort_ms(model: Path, shape: tuple[int, ...], repeat: int = 20) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def model(name: str, cfg_name: str, trials: int, db: str | None,
          size: tuple[int, int] | None = None) -> dict[str, Any]:
    from edgec.driver import import_model
    from edgec.examples.images import text_line_images, text_page_images
    from edgec.examples.models import model_path
    from edgec.targets.edge_npu.offload import offload
    from edgec.targets.edge_npu.target import npu_target
    from edgec.targets.edge_npu.tuner import load_mappings, tune_offload

    shape = SHAPES[name] if size is None else (*SHAPES[name][:2], *size)
    tmp = Path(tempfile.mkdtemp(prefix="npu_bench"))
    calib = (text_line_images(8, shape[2], shape[3], seed=3)[0] if name == "ppocr-cls"
             else text_page_images(4, shape[2], shape[3], seed=3)[0])
    np.savez(tmp / "calib.npz", x=calib)
    t0 = time.perf_counter()
    imp = import_model(model_path(name), npu_target(cfg_name), input_shapes={"x": shape},
                       quantize="int8", calib=str(tmp / "calib.npz"))
    default = offload(imp.mod, cfg_name)
    out: dict[str, Any] = {"model": name, "shape": shape, "config": cfg_name,
                           "default": _summary(default.report),
                           "build_s": time.perf_counter() - t0}
    if trials:
        dbdir = db or str(tmp / "npu_db")
        res = tune_offload(imp.mod, cfg_name, dbdir, trials)
        tuned = offload(imp.mod, cfg_name, mappings=load_mappings(dbdir, cfg_name))
        out["tuned"] = _summary(tuned.report)
        out["tuning"] = {"trials": res.trials + res.resumed_trials, "tasks": res.tasks,
                         "seconds": res.seconds,
                         "speedup": out["default"]["cycles"] / out["tuned"]["cycles"]}
    out["ort_cpu_ms"] = _ort_ms(model_path(name), shape)
    return out


def _print(r: dict[str, Any]) -> None:
    print(f"{r['model']} {'x'.join(map(str, r['shape']))} on {r['config']}")
    for which in ("default", "tuned"):
        if which not in r:
            continue
        s = r[which]
        print(f"  {which:<7} {s['segments']} segments, {s['layers']} layers, MACs on NPU "
              f"{s['npu_fraction']:.1%}; {s['cycles']:,} cycles, {s['ms']:.3f} ms, "
              f"{s['energy_mj']:.3f} mJ; MAC util {s['utilization']:.2%}; compute-bound "
              f"layers {s['compute_layers']}: {s['compute_layer_utilization']:.1%} "
              f"(ceiling {s['compute_layer_ceiling']:.1%})")
    if "tuning" in r:
        t = r["tuning"]
        print(f"  tuning: {t['trials']} trials on {t['tasks']} workloads, {t['seconds']:.0f} s; "
              f"tuned/default cycles {1 / t['speedup']:.3f} ({t['speedup']:.3f}x fewer)")
    npu_ms = r.get("tuned", r["default"])["ms"]
    print(f"  ONNX Runtime float, 1 thread, this host: {r['ort_cpu_ms']:.2f} ms "
          f"(simulated NPU / ORT CPU = {npu_ms / r['ort_cpu_ms']:.2f})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables")
    t.add_argument("config", nargs="?", default="edge-npu")
    m = sub.add_parser("model")
    m.add_argument("name", choices=sorted(SHAPES))
    m.add_argument("--config", default="edge-npu")
    m.add_argument("--trials", type=int, default=200)
    m.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input height and width (default: the model's own)")
    m.add_argument("--db", default=None)
    m.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.size and min(args.size) < 32:
        ap.error(f"--size {args.size[0]} {args.size[1]}: height and width must be >= 32")
    if args.cmd == "tables":
        tables(args.config)
        return
    r = model(args.name, args.config, args.trials, args.db,
              tuple(args.size) if args.size else None)
    _print(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
