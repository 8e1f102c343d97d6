"""Kernel count and latency after each default pass, on the real models.

    python bench/passes.py [--models ppocr-cls minilm] [--repeat 10]

A "kernel" is one ``call_tir`` left in ``main`` after TVM's CPU legalize/fuse passes
(LegalizeOps, FoldConstant, FuseOps, FuseTIR): what the VM launches per inference.
Latency is the median of ``--repeat`` runs on the host CPU, compiled as ``edgec build``
compiles (default schedules, no tuning records); rows
where the pass changed nothing reuse the previous row's build.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from edgec import frontend
from edgec.examples.data import example_inputs
from edgec.examples.models import PPOCR_DET_SMALL_SHAPE, model_path, real_model
from edgec.passes.registry import PassContext, resolve
from tvm import relax

MODELS = ("ppocr-cls", "ppocr-det", "silero-vad", "minilm")


def host_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def kernel_count(mod: tvm.IRModule, target: tvm.target.Target) -> int:
    with target:
        fused = tvm.transform.Sequential(relax.backend.cpu_generic.legalize_passes(target))(mod)
    return sum(
        1
        for block in fused["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call)
        and isinstance(b.value.op, tvm.ir.Op)
        and b.value.op.name == "relax.call_tir"
    )


def latency_ms(mod: tvm.IRModule, feeds: dict[str, np.ndarray], repeat: int
               ) -> tuple[float, np.ndarray]:
    """Median ms on the host, compiled as `edgec build` compiles (default CPU schedules)."""
    from edgec.driver import compile_relax
    from edgec.targets import get_target

    vm = relax.VirtualMachine(compile_relax(mod, get_target("host")), tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in feeds.values()]
    out = vm["main"](*args)
    first = out if hasattr(out, "numpy") else out[0]  # a tuple for multi-output models
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=0)
    return timer(*args).median * 1e3, first.numpy()


def load(name: str) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    shapes = dict(real_model(name).input_shapes)
    if name == "ppocr-det":
        shapes["x"] = PPOCR_DET_SMALL_SHAPE  # 640x640 untuned takes ~2 s per run
    proto = frontend.fix_input_shapes(frontend.load_model(model_path(name)).proto, shapes)
    feeds = example_inputs(name, shapes=shapes)[0]
    return frontend.to_relax(frontend.simplify(proto)), feeds


def bench_model(name: str, repeat: int) -> list[dict[str, Any]]:
    target = host_target()
    mod, feeds = load(name)
    ctx = PassContext(target=None)
    ms, ref = latency_ms(mod, feeds, repeat)
    rows = [{"model": name, "after": "import", "fired": "", "kernels": kernel_count(mod, target),
             "ms": ms, "max_err": 0.0}]
    for p in resolve():
        new = p.apply(mod, ctx)
        fired = sum(ctx.report.get(p.name, {}).get("fired", {}).values())
        row = dict(rows[-1], after=p.name, fired=fired)
        if not tvm_ffi.structural_equal(new, mod):
            mod = new
            row["kernels"] = kernel_count(mod, target)
            row["ms"], out = latency_ms(mod, feeds, repeat)
            row["max_err"] = float(np.max(np.abs(out - ref)))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    print(f"{'model':<11} {'after pass':<17} {'fired':>5} {'kernels':>7} {'ms':>9} {'max err':>9}")
    for name in args.models:
        start = time.perf_counter()
        for r in bench_model(name, args.repeat):
            print(f"{r['model']:<11} {r['after']:<17} {r['fired']!s:>5} {r['kernels']:>7} "
                  f"{r['ms']:>9.2f} {r['max_err']:>9.1e}", flush=True)
        print(f"# {name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
