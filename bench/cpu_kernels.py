"""Per-kernel time of one real model on the host CPU, with the rule that scheduled it.

Builds the model with the CPU pipeline (default schedules, plus ``--tuning-db``),
runs it under the Relax VM profiler and prints the kernels that take the most time,
summed over calls, next to ONNX Runtime's whole-model time in the same run.

With ``--cpu-time`` kernels are timed in CPU seconds of this process instead of
wall time: on a shared, loaded machine that does not count the time other processes
hold the cores (run with ``TVM_NUM_THREADS=1`` to compare schedules, not scaling).

Usage: python bench/cpu_kernels.py [--model ppocr-det] [--top 15] [--json out.json] [--cpu-time]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def kernel_rules(mod: Any) -> dict[str, str]:
    """PrimFunc name -> the default rule that scheduled it ("tuned" / "none")."""
    import tvm
    from edgec.targets.cpu.apply import RULES, schedule_func

    rules = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if func.attrs is not None and func.attrs.get("tirx.is_scheduled", False):
            rules[gv.name_hint] = "tuned"
            continue
        _, rule = schedule_func(func, tvm.target.Target.current(allow_none=False), RULES)
        rules[gv.name_hint] = rule or "none"
    return rules


def profile(name: str, tuning_db: Path | None, runs: int, cpu_time: bool = False) -> dict[str, Any]:
    """Per-kernel mean ms over ``runs`` profiled calls, and whole-model ms."""
    import time

    import tvm
    from edgec.bench_ort import time_onnxruntime
    from edgec.driver import import_model
    from edgec.examples.data import example_inputs
    from edgec.examples.models import model_path, real_model
    from edgec.targets import get_target
    from edgec.targets.cpu import cpu_pipeline
    from edgec.targets.cpu.pipeline import kernel_passes
    from tvm import relax

    desc = get_target("host")
    path = model_path(name)
    feeds = example_inputs(name)[0]
    mod = import_model(path, desc, input_shapes=real_model(name).input_shapes).mod
    target = desc.tvm_target()
    with target:
        legal = tvm.transform.Sequential(kernel_passes(target))(mod)
        rules = kernel_rules(legal)
    ex = tvm.compile(mod, target, relax_pipeline=cpu_pipeline(desc, tuning_db))
    args = [tvm.runtime.tensor(np.ascontiguousarray(v)) for v in feeds.values()]

    vm = relax.VirtualMachine(ex, tvm.cpu())
    vm["main"](*args)  # warm up
    t = []
    for _ in range(max(3, runs)):
        t0 = time.perf_counter()
        vm["main"](*args)
        t.append(1e3 * (time.perf_counter() - t0))
    whole_ms = float(np.median(t))

    per: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    for _ in range(runs):
        for fn, (ms, n) in timed_calls(vm, args, cpu_time).items():
            per[fn].append(ms)
            calls[fn] += n
    kernels = [
        {"kernel": fn, "rule": _rule_of(fn, rules), "calls": calls[fn] // runs,
         "ms": float(np.median(v))}
        for fn, v in per.items()
    ]
    kernels.sort(key=lambda k: -k["ms"])
    ort_ms = time_onnxruntime(path, feeds, repeat=max(5, runs))["median_ms"]
    return {"model": name, "edgec_ms": whole_ms, "ort_ms": ort_ms, "kernels": kernels}


def _rule_of(symbol: str, rules: dict[str, str]) -> str:
    # SplitLayoutRewritePreproc (after the default schedules) renames every kernel
    # it rebuilds with a "1" suffix: conv2d38 runs as conv2d381.
    return rules.get(symbol) or rules.get(symbol[:-1], "-") if symbol.endswith("1") else rules.get(symbol, "-")


def timed_calls(vm: Any, args: list[Any], cpu_time: bool = False) -> dict[str, tuple[float, int]]:
    """One run of ``main`` with every VM call timed: symbol -> (total ms, calls)."""
    import time

    clock = time.process_time if cpu_time else time.perf_counter

    import tvm
    from tvm.relax import VMInstrumentReturnKind

    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    start: list[float] = []

    # TVM 0.27's VM has no profiler; its instrument hook runs before and after each
    # call instruction, and kernels run one at a time, so wall time between is theirs.
    def instrument(func: Any, symbol: str, before: bool, ret: Any, *fargs: Any) -> int:
        if before:
            start.append(clock())
        else:
            rec = out[symbol]
            rec[0] += 1e3 * (clock() - start.pop())
            rec[1] += 1
        return int(VMInstrumentReturnKind.NO_OP)

    vm.set_instrument(tvm.runtime.convert(instrument))
    try:
        vm["main"](*args)
    finally:
        vm.set_instrument(None)
    return {k: (v[0], int(v[1])) for k, v in out.items() if not k.startswith("vm.builtin")}


def by_rule(kernels: list[dict[str, Any]]) -> dict[str, float]:
    """Total kernel ms per scheduling rule."""
    out: dict[str, float] = defaultdict(float)
    for k in kernels:
        out[k["rule"]] += k["ms"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ppocr-det")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tuning-db", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cpu-time", action="store_true", help="time kernels in process CPU time")
    args = ap.parse_args()
    res = profile(args.model, args.tuning_db, args.runs, args.cpu_time)
    total = sum(k["ms"] for k in res["kernels"])
    print(f"{res['model']}: edgec {res['edgec_ms']:.1f} ms, ONNX Runtime {res['ort_ms']:.1f} ms "
          f"({res['edgec_ms'] / res['ort_ms']:.2f}x); kernels sum {total:.1f} ms")
    print("| kernel | rule | calls | ms | share |\n| --- | --- | ---: | ---: | ---: |")
    for k in res["kernels"][: args.top]:
        print(f"| {k['kernel']} | {k['rule']} | {k['calls']} | {k['ms']:.2f} | "
              f"{100 * k['ms'] / total:.1f}% |")
    print("by rule:", {r: round(ms, 1) for r, ms in by_rule(res["kernels"]).items()})
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
