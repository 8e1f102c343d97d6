"""The ``edgec`` command line: inspect, build, run, bench, passes, targets.

Every user error ends as one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from edgec.errors import EdgecError, InputError

EPILOG_BUILD = """examples:
  edgec build model.onnx --target host -o model.edgec
  edgec build cls.onnx --target arm-cpu:cortex-a72 --input-shape x=1x3x48x192 -o cls.edgec
  edgec build m.onnx --pass my-pass --disable-pass some-pass --json
  edgec build m.onnx --dump-ir ir/ --verify --pass-timings
"""
EPILOG_RUN = """examples:
  edgec run cls.edgec --input x=img.npy --output-dir out/
  edgec run cls.edgec --inputs feeds.npz --json
  edgec run cls.edgec --random-inputs
  edgec run cls.edgec --inputs feeds.npz --compare-onnxruntime cls.onnx
"""
EPILOG_BENCH = """examples:
  edgec bench cls.edgec --compare-onnxruntime cls.onnx
  edgec bench cls.edgec --repeat 50 --json
"""
EPILOG_INSPECT = """examples:
  edgec inspect model.onnx
  edgec inspect model.onnx --input-shape x=1x3x48x192 --json
  edgec inspect cls.edgec
"""


def _parser() -> argparse.ArgumentParser:
    from edgec import __version__

    p = argparse.ArgumentParser(
        prog="edgec",
        description="Compile trained ONNX models for edge hardware (host, arm-cpu, edge-npu).",
    )
    p.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    ins = sub.add_parser("inspect", help="show a model's or package's inputs, ops and cost",
                         epilog=EPILOG_INSPECT, formatter_class=fmt)
    ins.add_argument("model", help="an .onnx model or an .edgec package")
    ins.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                     help="fix a dynamic input shape (repeatable)")
    ins.add_argument("--attention", action="store_true",
                     help="list attention blocks (imports the model into Relax)")
    ins.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser("build", help="compile a model into a .edgec package",
                       epilog=EPILOG_BUILD, formatter_class=fmt)
    b.add_argument("model", help="the .onnx model")
    b.add_argument("--target", default="host",
                   help="host, arm-cpu[:<preset>] or edge-npu[:<config>] (see `edgec targets`); "
                        "default host")
    b.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="fix an input shape, e.g. x=1x3x224x224 (repeatable)")
    b.add_argument("-o", "--output", help="package path (default: <model>.edgec here)")
    b.add_argument("--pass", dest="passes", action="append", metavar="NAME",
                   help="also run this registered pass (repeatable)")
    b.add_argument("--disable-pass", action="append", metavar="NAME",
                   help="skip this pass (repeatable)")
    b.add_argument("--dump-ir", metavar="DIR",
                   help="write TVMScript after import and each pass (00-import.py, 01-<pass>.py, ...)")
    b.add_argument("--verify", action="store_true",
                   help="check Relax well-formedness after every pass; a failure names the pass")
    b.add_argument("--pass-timings", action="store_true", help="print how long each pass took")
    b.add_argument("--linear-attention", metavar="MODE",
                   help="auto | off | force:favor[:m=N] | force:nystrom[:l=N] | force:elu; auto "
                        "rewrites a block only if it meets --attention-error on the --calib "
                        "inputs and is measured faster")
    b.add_argument("--attention-error", type=float, default=0.02, metavar="X",
                   help="linear-attention error budget: relative error of each rewritten "
                        "block (after its output projection) and of the model output, worst "
                        "--calib sample; auto plans at half of it (default 0.02)")
    b.add_argument("--max-model-bytes", metavar="SIZE",
                   help="refuse larger models, e.g. 512M, 2G (default $EDGEC_MAX_MODEL_BYTES "
                        "or 2G)")
    b.add_argument("--compile-timeout", metavar="SECONDS",
                   help="give up compiling after this long (default $EDGEC_COMPILE_TIMEOUT "
                        "or no limit)")
    b.add_argument("--json", action="store_true", help="print the build report as JSON")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    r = sub.add_parser("run", help="run a package on its target",
                       epilog=EPILOG_RUN, formatter_class=fmt)
    r.add_argument("package")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input array (repeatable)")
    r.add_argument("--inputs", metavar="FILE.npz", help="all inputs by name from one .npz")
    r.add_argument("--random-inputs", action="store_true", help="run on seeded random inputs")
    r.add_argument("--output-dir", help="write each output as <name>.npy here")
    r.add_argument("--compare-onnxruntime", metavar="MODEL.onnx",
                   help="also run this model in ONNX Runtime and print the max abs error")
    r.add_argument("--json", action="store_true", help="print output summaries as JSON")

    from edgec import cli_quantize, cli_tune

    cli_quantize.add_build_flags(b)
    cli_quantize.add_parsers(sub)
    b.add_argument("--tuning-db", metavar="DIR",
                   help="use tuned kernels from this database (made by `edgec tune`)")
    cli_tune.add_tune_parser(sub)

    be = sub.add_parser("bench", help="time a package, optionally against ONNX Runtime",
                        epilog=EPILOG_BENCH, formatter_class=fmt)
    be.add_argument("package")
    be.add_argument("--compare-onnxruntime", metavar="MODEL.onnx",
                    help="time this model in ONNX Runtime on the same inputs")
    be.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    be.add_argument("--inputs", metavar="FILE.npz")
    be.add_argument("--repeat", type=int, default=20, help="timed runs (default 20)")
    be.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    be.add_argument("--json", action="store_true")

    pa = sub.add_parser("passes", help="list registered passes (built-in and plugins)")
    pa.add_argument("--json", action="store_true")
    ta = sub.add_parser("targets", help="list targets and presets")
    ta.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        handler = {
            "inspect": cmd_inspect,
            "build": cmd_build,
            "run": cmd_run,
            "bench": cmd_bench,
            "passes": cmd_passes,
            "targets": cmd_targets,
            "quantize": _cmd_quantize,
            "tune": _cmd_tune,
        }[args.command]
        return handler(args)
    except EdgecError as exc:
        print(f"edgec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in edgec: still one line, but say so
        if os.environ.get("EDGEC_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()
        print(
            f"edgec: internal error: {type(exc).__name__}: {msg[-1] if msg else ''} "
            "(set EDGEC_DEBUG=1 for a traceback; please report it)",
            file=sys.stderr,
        )
        return 1


# ---------------------------------------------------------------------- commands


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec import frontend
    from edgec.model_stats import model_stats
    from edgec.shapes import format_shape, parse_input_shapes

    path = Path(args.model)
    if path.suffix == ".edgec":
        from edgec.runtime import load

        pkg = load(path)
        data = {"manifest": pkg.manifest, "report": pkg.report}
        if args.json:
            _print_json(data)
        else:
            print(f"package {path}  target {pkg.target}  edgec {pkg.manifest.get('edgec_version')}")
            for s in pkg.inputs:
                print(f"  input  {s.name}: {format_shape(s.shape)} {s.dtype}")
            for s in pkg.outputs:
                print(f"  output {s.name}: {format_shape(s.shape)} {s.dtype}")
            _print_stats(pkg.report.get("model", {}))
            print(f"  passes: {', '.join(pkg.manifest.get('passes', [])) or 'none'}")
        return 0

    shapes = parse_input_shapes(args.input_shape)
    loaded = frontend.load_model(path)
    proto = loaded.proto
    inputs = frontend.graph_inputs(proto)
    static = all(s.is_static or s.name in shapes for s in inputs)
    if static:
        proto = frontend.simplify(frontend.fix_input_shapes(proto, shapes))
    stats = model_stats(proto)
    missing = frontend.unsupported_ops(proto)
    blocks = None
    if args.attention:
        if not static:
            raise EdgecError("--attention needs static input shapes: pass --input-shape")
        from edgec.passes.attention_match import find_attention_blocks

        blocks = [b.summary() for b in find_attention_blocks(frontend.to_relax(proto))]
    data = {
        "model": str(path),
        "sha256": loaded.sha256,
        "opset": {o.domain or "ai.onnx": o.version for o in loaded.proto.opset_import},
        "producer": f"{loaded.proto.producer_name} {loaded.proto.producer_version}".strip(),
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in frontend.graph_outputs(proto)],
        "shapes_fixed": static,
        "stats": stats,
        "unsupported_ops": missing,
    }
    if blocks is not None:
        data["attention_blocks"] = blocks
    if args.json:
        _print_json(data)
        return 0
    print(f"model {path}  ({data['producer'] or 'unknown producer'}, opset "
          + ", ".join(f"{k} {v}" for k, v in data["opset"].items()) + ")")
    for s in inputs:
        dyn = "" if s.is_static else "  (dynamic: pass --input-shape)"
        print(f"  input  {s.name}: {format_shape(s.shape)} {s.dtype}{dyn}")
    for s in frontend.graph_outputs(proto):
        print(f"  output {s.name}: {format_shape(s.shape)} {s.dtype}")
    _print_stats(stats, macs_known=static)
    for blk in blocks or []:
        print(f"  attention {blk['block']}: N={blk['N']} heads={blk['heads']} "
              f"head_dim={blk['head_dim']} mask={blk['mask']} scale={blk['scale']}"
              + ("" if blk["linearizable"] else f"  (left as softmax: {blk['reason']})"))
    if missing:
        print("  unsupported: " + "; ".join(f"{op} x{len(n)}" for op, n in missing.items()))
    else:
        print("  all operators supported")
    return 0


def _print_stats(stats: dict[str, Any], macs_known: bool = True) -> None:
    if not stats:
        return
    ops = ", ".join(f"{k} {v}" for k, v in list(stats.get("ops", {}).items())[:12])
    print(f"  nodes {stats.get('nodes')}: {ops}")
    macs = f"{stats.get('macs', 0) / 1e6:.1f} M" if macs_known else "unknown (dynamic shapes)"
    print(f"  MACs {macs}, params {stats.get('params', 0) / 1e6:.3f} M "
          f"({stats.get('param_bytes', 0) / 1e6:.2f} MB)")


def cmd_build(args: argparse.Namespace) -> int:
    from edgec.atomic import check_output
    from edgec.driver import build
    from edgec.shapes import parse_input_shapes

    shapes = parse_input_shapes(args.input_shape)
    output = Path(args.output) if args.output else Path(Path(args.model).stem + ".edgec")
    passes = list(args.passes or [])
    options: dict[str, Any] = {}
    if args.linear_attention and args.linear_attention != "off":
        options["linear_attention"] = args.linear_attention
        options["attention_error"] = args.attention_error
        if "linear-attention" not in passes:
            passes.append("linear-attention")
    check_output(output)
    pkg = build(
        args.model,
        args.target,
        input_shapes=shapes,
        output=output,
        passes=passes,
        disable_passes=args.disable_pass,
        options=options,
        dump_ir=args.dump_ir,
        verify=args.verify,
        quantize=args.quantize,
        calib=args.calib,
        calib_method=args.calib_method,
        accuracy_budget=args.accuracy_budget,
        tuning_db=args.tuning_db,
        max_model_bytes=args.max_model_bytes,
        compile_timeout=args.compile_timeout,
        hard_deadline=True,
        quiet=args.quiet or args.json,
    )
    if args.json:
        _print_json({"package": str(output), "manifest": pkg.manifest, "report": pkg.report})
    else:
        stats = pkg.report["model"]
        print(
            f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB) for {pkg.target}: "
            f"{stats['nodes']} ONNX nodes, {stats['macs'] / 1e6:.1f} M MACs, "
            f"built in {pkg.report['time_s']['total']:.1f} s"
        )
        if "quantization" in pkg.report:
            from edgec.cli_quantize import build_summary

            for line in build_summary(pkg.report["quantization"]):
                print(line)
        if "npu" in pkg.report:
            from edgec.targets.edge_npu.report import to_text

            print(to_text(pkg.report["npu"]))
        if args.pass_timings:
            for name, sec in pkg.report.get("pass_time_s", {}).items():
                print(f"  pass {name:<24} {sec * 1e3:8.1f} ms")
    return 0


def _read_inputs(args: argparse.Namespace, pkg: Any) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    if getattr(args, "inputs", None):
        feeds.update(_load_npz(Path(args.inputs)))
    for spec in getattr(args, "input", None) or []:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise InputError(f"malformed --input {spec!r}: expected NAME=FILE.npy")
        feeds[name] = _load_npy(Path(file))
    if getattr(args, "random_inputs", False):
        if feeds:
            raise InputError("--random-inputs cannot be combined with --input/--inputs")
        return pkg.random_inputs()
    if not feeds and getattr(args, "command", "") == "bench":
        return pkg.random_inputs()
    if not feeds:
        names = ", ".join(s.name for s in pkg.inputs)
        raise InputError(f"no inputs given: pass --input NAME=FILE.npy for {names} "
                         "(or --random-inputs)")
    return feeds


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise InputError(f"{path}: expected an .npz archive of named arrays")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output"


def cmd_run(args: argparse.Namespace) -> int:
    from edgec.atomic import atomic_path
    from edgec.runtime import load

    pkg = load(args.package)
    feeds = _read_inputs(args, pkg)
    outputs = pkg.run(feeds)
    summary = []
    for name, arr in outputs.items():
        entry: dict[str, Any] = {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        if arr.size and np.issubdtype(arr.dtype, np.number):
            entry.update(min=float(arr.min()), max=float(arr.max()), mean=float(arr.mean()))
        summary.append(entry)
    if args.compare_onnxruntime:
        from edgec.bench_ort import run_onnxruntime

        ref = run_onnxruntime(Path(args.compare_onnxruntime), feeds)
        for entry, (name, arr) in zip(summary, outputs.items()):
            if name in ref and ref[name].shape == arr.shape:
                diff = np.abs(arr.astype(np.float64) - ref[name].astype(np.float64))
                entry["max_abs_err_vs_onnxruntime"] = float(diff.max()) if diff.size else 0.0
    if args.output_dir:
        out_dir = Path(args.output_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise EdgecError(f"--output-dir {out_dir} is not a directory")
        for entry, (name, arr) in zip(summary, outputs.items()):
            file = out_dir / f"{_safe_name(name)}.npy"
            with atomic_path(file) as tmp, open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            entry["file"] = str(file)
    if args.json:
        _print_json({"package": str(args.package), "target": pkg.target, "outputs": summary})
        return 0
    for e in summary:
        stats = (f"  min {e['min']:.4g} max {e['max']:.4g} mean {e['mean']:.4g}"
                 if "min" in e else "")
        where = f"  -> {e['file']}" if "file" in e else ""
        if "max_abs_err_vs_onnxruntime" in e:
            where += f"  (max abs error vs ONNX Runtime {e['max_abs_err_vs_onnxruntime']:.3g})"
        print(f"{e['name']}: {'x'.join(map(str, e['shape'])) or 'scalar'} {e['dtype']}{stats}{where}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgec.bench_ort import time_onnxruntime
    from edgec.runtime import load

    if args.repeat < 1 or args.warmup < 0:
        raise EdgecError("--repeat must be >= 1 and --warmup >= 0")
    pkg = load(args.package)
    feeds = _read_inputs(args, pkg)
    result: dict[str, Any] = {"package": str(args.package), "target": pkg.target}
    result["edgec"] = pkg.benchmark(feeds, repeat=args.repeat, warmup=args.warmup)
    if args.compare_onnxruntime:
        ort = time_onnxruntime(Path(args.compare_onnxruntime), feeds, args.repeat, args.warmup)
        result["onnxruntime"] = ort
        # edge-npu: the simulated device latency, not the simulator's wall time
        ms = result["edgec"].get("npu_ms", result["edgec"]["median_ms"])
        result["ratio_edgec_over_ort"] = ms / ort["median_ms"]
    if args.json:
        _print_json(result)
        return 0
    e = result["edgec"]
    note = "  (emulated under qemu: not a board's speed)" if e.get("emulated") else ""
    if "npu_cycles" in e:  # edge-npu: the simulator's figures are the device's
        print(f"edgec ({pkg.target}, simulated {e['npu_config']}, {e['npu_link']} link): "
              f"{e['npu_ms']:.3f} ms per inference ({e['npu_cycles']:,} cycles, "
              f"{e['npu_calls']} NPU call(s) incl. host invokes), {e['npu_energy_mj']:.3f} mJ, "
              f"MAC utilization {e['npu_utilization']:.1%}")
        print(f"  simulator wall time on this host: median {e['median_ms']:.1f} ms over "
              f"{int(e['runs'])} runs (not the chip's speed)")
    else:
        print(f"edgec ({pkg.target}): median {e['median_ms']:.3f} ms, "
              f"min {e['min_ms']:.3f} ms over {int(e['runs'])} runs{note}")
    if "onnxruntime" in result:
        o = result["onnxruntime"]
        print(f"onnxruntime (host):  median {o['median_ms']:.3f} ms, min {o['min_ms']:.3f} ms")
        print(f"ratio edgec / onnxruntime: {result['ratio_edgec_over_ort']:.2f}x")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from edgec.cli_quantize import cmd_quantize

    return cmd_quantize(args)


def _cmd_tune(args: argparse.Namespace) -> int:
    from edgec.cli_tune import cmd_tune

    return cmd_tune(args)


def cmd_passes(args: argparse.Namespace) -> int:
    from edgec.passes.registry import all_passes

    passes = all_passes()
    rows = [{"name": p.name, "phase": p.phase, "origin": p.origin, "default": p.default,
             "doc": p.doc} for p in passes.values()]
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no passes registered")
    else:
        for r in rows:
            on = "on " if r["default"] else "off"
            print(f"{r['name']:<20} {r['phase']:<10} {on} {r['origin']:<28} {r['doc']}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgec.targets import get_target, list_targets

    rows = []
    for name in list_targets():
        t = get_target(name)
        rows.append({"name": name, "description": t.description, "tvm": t.tvm})
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['name']:<22} {r['description']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
