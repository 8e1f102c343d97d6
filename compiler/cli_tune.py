"""``edgec tune MODEL``: the CLI face of ``edgec.tuning.tune``.

"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from edgec.errors import EdgecError, TargetError


def add_tune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tune`` on the CLI's subparsers."""
    t = subparsers.add_parser(
        "tune",
        help="search faster kernels for a model (MetaSchedule) into a tuning database",
        description="Measure candidate schedules for each kernel of MODEL and keep the best "
        "in DB_DIR (JSON; safe to interrupt, resumes). Build with the database to use them.",
    )
    t.add_argument("model", help="ONNX model")
    t.add_argument("--target", default="host", help="host or arm-cpu[:preset]")
    t.add_argument("--trials", type=count(0), default=None,
                   help="total measurements, counting those already in the database "
                   "(--trials 0: only the per-kernel report)")
    t.add_argument("--time-budget", type=parse_duration, default=None, metavar="DURATION",
                   help="stop after this long, e.g. 90s, 10m, 1h (the batch in flight finishes)")
    t.add_argument("--db", default="edgec-tuning", metavar="DIR", help="tuning database folder")
    t.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT",
                   help="measure on boards through a TVM RPC tracker (required for arm-cpu)")
    t.add_argument("--rpc-key", default=None, metavar="KEY",
                   help="device key the boards registered with at the tracker")
    t.add_argument("--batch", type=count(1), default=32, help="candidates measured per batch")
    t.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="fix an input shape, e.g. x=1x3x224x224 (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--no-report", action="store_true",
                   help="skip measuring each kernel's default schedule against its best record")
    # edge-npu tunes layer mappings of the int8 model, as `build --quantize` makes it
    t.add_argument("--quantize", choices=("int8",), help="edge-npu: quantize first (needs --calib)")
    t.add_argument("--calib", metavar="PATH", help="edge-npu: calibration samples for --quantize")
    return t


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m`` or ``1h`` as seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    num, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 90s, 10m, 1h") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the time budget must be positive")
    return value


def cmd_tune(args: argparse.Namespace) -> int:
    from edgec.atomic import check_output_dir
    from edgec.shapes import parse_input_shapes
    from edgec.targets import get_target
    from edgec.tuning import tune
    from edgec.tuning_report import format_table

    check_output_dir(args.db)
    if get_target(args.target).family == "edge-npu":
        from edgec.targets.edge_npu.tuner import cmd_tune_npu

        return cmd_tune_npu(args)

    if args.trials is None and args.time_budget is None:
        raise EdgecError("tune needs --trials N or --time-budget DURATION (e.g. 10m)")
    if bool(args.rpc_tracker) != bool(args.rpc_key):
        raise EdgecError("--rpc-tracker and --rpc-key go together")
    rpc = f"{args.rpc_tracker}:{args.rpc_key}" if args.rpc_tracker else None
    result = tune(
        args.model,
        args.target,
        trials=args.trials,
        time_budget=args.time_budget,
        db_dir=args.db,
        rpc=rpc,
        progress=not (args.quiet or args.json),
        input_shapes=parse_input_shapes(args.input_shape),
        batch=args.batch,
        report=not args.no_report,
    )
    if result.cannot_measure:
        raise TargetError(result.message)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
        return 0
    if result.message:
        print(f"edgec tune: {result.message}", file=sys.stderr)
    if result.report:
        print(format_table(result.report))
    if result.trials:
        print(f"{result.trials} trials on {result.tasks} kernels in {result.seconds:.0f} s "
              f"({result.resumed_trials} already in {result.db_dir}); "
              f"build with the database to use them")
    return 0
