"""``edgec quantize`` and the ``--quantize int8`` build flags.

    edgec quantize model.onnx --calib calib/ -o model.int8.onnx
    edgec build model.onnx --quantize int8 --calib calib/ --calib-method entropy \\
        --accuracy-budget cosine=0.995

``quantize`` writes a standard QDQ ONNX model (ONNX Runtime runs it) and prints the
accuracy report; ``build --quantize int8`` quantizes the same way, then the
``quantize-int8`` pass lowers the QDQ layers to integer kernels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx
from edgec.quantization import DEFAULT_METHOD, METHODS, quantize_for_build, quantize_proto

__all__ = ["add_build_flags", "add_parsers", "cmd_quantize", "quantize_for_build"]

EPILOG_QUANTIZE = """examples:
  edgec quantize model.onnx --calib calib/ -o model.int8.onnx
  edgec quantize cls.onnx --calib feeds.npz --input-shape x=1x3x48x192 --calib-method entropy
  edgec quantize m.onnx --calib calib/ --accuracy-budget cosine=0.995 --report q.json

calibration data: a .npz of stacked inputs, a folder of NAME.npy (one per input,
samples along the first axis), or a folder of .npz files (one sample each).
Every 5th sample is held out to measure accuracy (--held-out-every).
"""



def add_calib_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--calib", required=required, metavar="PATH",
                   help="calibration samples: .npz, folder of NAME.npy, or folder of .npz")
    p.add_argument("--calib-method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"how activation ranges are chosen (default {DEFAULT_METHOD}; "
                        "auto: percentile or minmax, whichever is more accurate on the "
                        "held-out samples)")
    p.add_argument("--accuracy-budget", metavar="METRIC=VALUE",
                   help="keep the most sensitive layers in float until every output meets "
                        "it, e.g. cosine=0.995 or snr=30")
    p.add_argument("--held-out-every", type=int, default=5, metavar="K",
                   help="hold every K-th sample out for accuracy (default 5)")


def add_build_flags(build: argparse.ArgumentParser) -> None:
    """The quantization flags of ``edgec build``."""
    build.add_argument("--quantize", choices=("int8",),
                       help="post-training quantization (needs --calib)")
    add_calib_flags(build, required=False)


def add_parsers(sub: Any) -> None:
    """Register ``edgec quantize`` on the CLI's subparsers."""
    q = sub.add_parser("quantize", help="int8 post-training quantization to a QDQ ONNX model",
                       epilog=EPILOG_QUANTIZE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("model", help="the float .onnx model")
    q.add_argument("-o", "--output", help="QDQ model path (default: <model>.int8.onnx here)")
    q.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="fix a dynamic input shape (repeatable)")
    add_calib_flags(q, required=True)
    q.add_argument("--report", metavar="FILE.json", help="also write the full report as JSON")
    q.add_argument("--json", action="store_true", help="print the report as JSON")


def load_static(model: str, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The model as the build imports it (``frontend.prepare``), ready to quantize."""
    from edgec import frontend

    return frontend.prepare(frontend.load_model(model).proto, shapes)[1]


# ---------------------------------------------------------------------------- summary

# Below this held-out cosine (worst output) the build points at the remedies: the
# quantized model's outputs are no longer close to the float model's.
LOW_COSINE = 0.99


def layers_line(r: dict[str, Any]) -> str:
    """How many layers went int8, with what calibration (a quantization report)."""
    method = r["method"]
    if r.get("auto"):
        method += " chosen by held-out cosine (" + ", ".join(
            f"{m} {c:.4f}" for m, c in r["auto"]["held_out_cosine"].items()) + ")"
    return (f"{r['layers']['int8']} of {r['layers']['total']} layers in int8 "
            f"({method}, {r['samples']['calib']} calibration + "
            f"{r['samples']['held_out']} held-out samples)")


def kept_lines(r: dict[str, Any]) -> list[str]:
    """What an accuracy budget kept in float."""
    out = []
    if r["kept_float"]:
        out.append(f"kept in float for {r['budget']}: {', '.join(r['kept_float'])}")
    if r.get("element_wise_float"):
        out.append(f"kept in float for {r['budget']}: the {r['element_wise_float']} "
                   "activations between the layers that the npu style would make int8")
    return out


def build_summary(r: dict[str, Any]) -> list[str]:
    """The lines ``edgec build --quantize int8`` prints: layers, held-out accuracy, and a
    hint when that accuracy is low and no budget was set."""
    worst = min(r["accuracy"].items(), key=lambda kv: kv[1]["cosine"])
    name, m = worst
    head = (f"int8: {layers_line(r)}; held-out accuracy vs float ({name}): cosine "
            f"{m['cosine']:.4f}, SNR {m['snr_db']:.1f} dB")
    out = [head, *kept_lines(r)]
    if r["budget"] is None and m["cosine"] < LOW_COSINE:
        out.append(f"note: held-out cosine {m['cosine']:.4f} is low: --accuracy-budget "
                   f"cosine={LOW_COSINE} keeps the most sensitive layers in float"
                   + ("" if r.get("auto") else ", --calib-method auto also tries minmax")
                   + " (`edgec quantize` prints the sensitivity per layer)")
    return out


# ---------------------------------------------------------------------------- command


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgec.atomic import atomic_path, atomic_write_text, check_output
    from edgec.passes.quantize.accuracy import format_table
    from edgec.shapes import parse_input_shapes

    output = Path(args.output) if args.output else Path(Path(args.model).stem + ".int8.onnx")
    check_output(output)
    if args.report:
        check_output(args.report)
    simple = load_static(args.model, parse_input_shapes(args.input_shape))
    result = quantize_proto(simple, args.calib, args.calib_method, args.accuracy_budget,
                            args.held_out_every)
    with atomic_path(output) as tmp:
        onnx.save(result.model, str(tmp))
    report = {"output": str(output), **result.report}
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=2, default=str))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
        return 0
    r = result.report
    print(f"wrote {output}: {layers_line(r)}")
    rows = [{"output": k, **v} for k, v in r["accuracy"].items()]
    print(format_table(rows, ["output", "cosine", "snr_db", "max_abs"]))
    for line in kept_lines(r):
        print(line)
    if r["sensitivity"]:
        print("most sensitive layers (one layer in int8 at a time):")
        print(format_table(r["sensitivity"][:10], ["layer", "kind", "cosine", "snr_db",
                                                   "max_abs"]))
    return 0
