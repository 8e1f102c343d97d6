"""Softmax vs linear attention: latency and peak memory, one block and one encoder layer.

Usage: python bench/attention.py [--ns 128,512,1024,2048,4096] [--no-encoder] [--no-minilm]
                                 [--json out.json]

Every configuration runs in its own child process (same machine, same run), which
loads the compiled library, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs once and reports ``VmHWM - VmRSS``: the memory the
run itself needed (activations, workspace), inputs excluded. Latency is the median of
the timed runs after that first one.

- block:   B=1, 1 head, d = dv = 64, 10% padding keys (key-padding mask), N queries.
- encoder: one BERT layer, hidden 128 = 2 heads x 64, FFN 512, LayerNorm, GELU,
           padding mask; linear variants are applied by the pass itself
           (detection + rewrite), not hand-written.
- ort:     the softmax block in ONNX Runtime (MLAS kernels), the outside baseline.
Every edgec configuration is compiled as `edgec build` compiles it (default CPU schedules).
- MiniLM:  all-MiniLM-L6-v2 at N = 128 end to end, per mode, with the pass report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("softmax", "favor:m=128", "nystrom:l=64", "elu")
D = 64


# ------------------------------------------------------------------------ child side


def _mem() -> tuple[int, int]:
    s = Path("/proc/self/status").read_text()
    return (int(re.search(r"VmHWM:\s+(\d+)", s).group(1)) * 1024,
            int(re.search(r"VmRSS:\s+(\d+)", s).group(1)) * 1024)


def child(kind: str, path: str, inputs: str) -> None:
    """Run one compiled configuration; print {"ms", "peak_mb"} as JSON."""
    feeds = dict(np.load(inputs))
    if kind == "tvm":
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
        args = [tvm.runtime.tensor(v) for v in feeds.values()]

        def call() -> None:
            vm["main"](*args)
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.enable_cpu_mem_arena = False  # an arena would keep freed memory in RSS anyway
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def call() -> None:
            sess.run(None, feeds)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    _, before = _mem()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    peak, _ = _mem()
    times = []
    for _ in range(5 if first < 0.3 else 2 if first < 3 else 1):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"ms": float(np.median(times)) * 1e3, "peak_mb": (peak - before) / 1e6}))


# ----------------------------------------------------------------------- parent side


def _choice(variant: str) -> Any:
    from edgec.passes import linear_attention as la

    if variant == "softmax":
        return None
    name, _, size = variant.partition(":")
    return la.Choice(name, int(size.split("=")[1]) if size else 0)


def _measure(mod: Any, feeds: dict[str, np.ndarray], tmp: Path, tag: str) -> dict[str, float]:
    from edgec.driver import compile_relax
    from edgec.targets import get_target

    lib = tmp / f"{tag}.so"
    compile_relax(mod, get_target("host")).export_library(str(lib))
    return _spawn("tvm", lib, feeds, tmp, tag)


def _spawn(kind: str, path: Path, feeds: dict[str, np.ndarray], tmp: Path, tag: str
           ) -> dict[str, float]:
    npz = tmp / f"{tag}.npz"
    np.savez(npz, **feeds)
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(npz)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        return {"ms": float("nan"), "peak_mb": float("nan"), "error": proc.stderr[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pad_bias(n: int, batch: tuple[int, ...]) -> np.ndarray:
    kb = np.zeros((*batch, n), np.float32)
    kb[..., n - n // 10:] = np.finfo(np.float32).min
    return kb


def bench_block(n: int, tmp: Path) -> dict[str, dict[str, float]]:
    from edgec.passes import attention_cost as cost

    shape = cost.Shape((1, 1), n, n, D, D, True)
    q, k, v, kb = cost.random_inputs(shape, seed=0, pad=n // 10)
    feeds = {"q": q, "k": k, "v": v, "kb": kb}
    out = {}
    for variant in VARIANTS:
        out[variant] = _measure(cost.standalone(shape, _choice(variant)), feeds, tmp,
                                f"block-{n}-{variant}")
    onnx_path = tmp / f"block-{n}.onnx"
    import onnx

    onnx.save(_softmax_block_onnx(n), onnx_path)
    out["ort softmax"] = _spawn("ort", onnx_path, feeds, tmp, f"ort-{n}")
    return out


def _softmax_block_onnx(n: int) -> Any:
    from onnx import TensorProto, helper

    t = TensorProto.FLOAT
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Add", ["s", "kb"], ["sb"]),
             helper.make_node("Softmax", ["sb"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"])]
    g = helper.make_graph(nodes, "attn", [
        helper.make_tensor_value_info("q", t, [1, 1, n, D]),
        helper.make_tensor_value_info("k", t, [1, 1, n, D]),
        helper.make_tensor_value_info("v", t, [1, 1, n, D]),
        helper.make_tensor_value_info("kb", t, [1, 1, 1, n])],
        [helper.make_tensor_value_info("o", t, [1, 1, n, D])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def encoder_module(n: int, heads: int = 2, ffn: int = 512, seed: int = 0) -> Any:
    """One post-LN BERT layer in Relax, attention written as exporters write it."""
    from tvm import relax

    R = relax.op
    hid = heads * D
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> Any:
        return relax.const((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def c(val: Any) -> Any:
        return relax.const(np.asarray(val, np.float32))

    x = relax.Var("x", relax.TensorType([1, n, hid], "float32"))
    kb = relax.Var("kb", relax.TensorType([1, 1, 1, n], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, kb]):
        with bb.dataflow():
            def heads_of(t: Any, perm: list[int]) -> Any:
                return bb.emit(R.permute_dims(bb.emit(R.reshape(t, (1, n, heads, D))), perm))

            q = heads_of(bb.emit(R.add(R.matmul(x, w(hid, hid)), w(hid))), [0, 2, 1, 3])
            kt = heads_of(bb.emit(R.add(R.matmul(x, w(hid, hid)), w(hid))), [0, 2, 3, 1])
            v = heads_of(bb.emit(R.add(R.matmul(x, w(hid, hid)), w(hid))), [0, 2, 1, 3])
            s = bb.emit(R.add(R.multiply(R.matmul(q, kt), c(D ** -0.5)), kb))
            o = bb.emit(R.matmul(bb.emit(R.nn.softmax(s, -1)), v))
            o = bb.emit(R.reshape(R.permute_dims(o, [0, 2, 1, 3]), (1, n, hid)))
            h = bb.emit(R.nn.layer_norm(R.add(x, R.matmul(o, w(hid, hid))), c(np.ones(hid)),
                                        c(np.zeros(hid)), [-1]))
            f = bb.emit(R.nn.gelu(R.matmul(h, w(hid, ffn))))
            y = bb.emit_output(R.nn.layer_norm(R.add(h, R.matmul(f, w(ffn, hid))),
                                               c(np.ones(hid)), c(np.zeros(hid)), [-1]))
        bb.emit_func_output(y)
    return bb.get()


def bench_encoder(n: int, tmp: Path) -> dict[str, dict[str, float]]:
    from edgec.passes import linear_attention as la

    base = encoder_module(n)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, n, 2 * D)).astype(np.float32),
             "kb": _pad_bias(n, (1, 1, 1))}
    out = {}
    for variant in VARIANTS:
        choice = _choice(variant)
        mod = base if choice is None else la.apply_plan(base, {0: choice})
        out[variant] = _measure(mod, feeds, tmp, f"enc-{n}-{variant}")
    return out


def bench_minilm() -> dict[str, Any]:
    """MiniLM end to end at N = 128: latency and output error per mode."""
    import tvm
    from edgec import frontend
    from edgec.bench_ort import time_onnxruntime
    from edgec.driver import compile_relax
    from edgec.examples.data import minilm_inputs
    from edgec.examples.models import model_path
    from edgec.passes import linear_attention as la
    from edgec.passes.registry import PassContext
    from edgec.targets import get_target
    from tvm import relax

    path = model_path("minilm")
    mod = frontend.to_relax(frontend.simplify(frontend.fix_input_shapes(
        frontend.load_model(path).proto, {})))
    calib = minilm_inputs(2, 128, seed=0)
    target = get_target("host")
    res: dict[str, Any] = {"ort_ms": time_onnxruntime(path, calib[0], repeat=10)["median_ms"]}
    for mode in ("off", "auto", "force:favor:m=128", "force:nystrom:l=32", "force:elu"):
        ctx = PassContext(target=target, calib=calib, options={"linear_attention": mode})
        new = la.linear_attention(mod, ctx)
        rep = ctx.report["linear-attention"]
        vm = relax.VirtualMachine(compile_relax(new, target), tvm.cpu())
        args = [tvm.runtime.tensor(calib[0][p.name]) for p in new["main"].params]
        vm["main"](*args)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            vm["main"](*args)
            times.append(time.perf_counter() - t0)
        res[mode] = {"ms": float(np.median(times)) * 1e3, "changed": rep.get("changed"),
                     "output_rel_error": rep.get("model_output_rel_error", 0.0)}
        if mode == "auto":
            res[mode]["why"] = [b.get("why") for b in rep["blocks"]]
            res[mode]["errors"] = [b.get("errors") for b in rep["blocks"]]
            res[mode]["latency_ms"] = rep["blocks"][0].get("latency_ms")
    return res


def _table(title: str, rows: dict[int, dict[str, dict[str, float]]]) -> str:
    cols = list(next(iter(rows.values())))
    lines = [f"### {title}", "",
             "| N | " + " | ".join(f"{c} ms (MB)" for c in cols) + " | "
             + " | ".join(f"softmax/{c}" for c in cols if c not in ("softmax", "ort softmax"))
             + " |",
             "|" + "---|" * (1 + len(cols) + len([c for c in cols if c not in
                                                   ("softmax", "ort softmax")]))]
    for n, r in rows.items():
        cells = [f"{r[c]['ms']:.2f} ({r[c]['peak_mb']:.1f})" for c in cols]
        ratios = [f"{r['softmax']['ms'] / r[c]['ms']:.1f}x" for c in cols
                  if c not in ("softmax", "ort softmax")]
        lines.append(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines.append("")
    for c in cols:
        if c in ("softmax", "ort softmax"):
            continue
        for base in ("softmax", "ort softmax"):
            if base not in cols:
                continue
            won = [n for n, r in rows.items() if r[c]["ms"] < r[base]["ms"]]
            lines.append(f"- crossover {c} vs {base}: "
                         + (f"faster from N = {min(won)}" if won else "never faster in range"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="128,512,1024,2048,4096")
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--json", help="write all numbers here")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",") if x]  # --ns "" skips block and encoder
    results: dict[str, Any] = {"cpu": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="edgec-attn-bench-") as d:
        tmp = Path(d)
        if not ns:
            args.no_encoder = True
        results["block"] = {n: bench_block(n, tmp) for n in ns}
        if ns:
            print(_table("one attention block (1 head, d=64, 10% padding)",
                         results["block"]), flush=True)
        if not args.no_encoder:
            results["encoder"] = {n: bench_encoder(n, tmp) for n in ns}
            print(_table("one encoder layer (2 heads x 64, FFN 512)", results["encoder"]),
                  flush=True)
    if not args.no_minilm:
        results["minilm"] = bench_minilm()
        print("### MiniLM end to end (N=128)")
        print(json.dumps(results["minilm"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
