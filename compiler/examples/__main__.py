"""Write realistic example inputs for a real model: ``python -m edgec.examples ppocr-cls --out x.npz``.

``--count N`` writes N different samples stacked on the first axis, the layout
``--calib`` reads: ``python -m edgec.examples ppocr-cls --count 24 --out calib.npz``."""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from edgec.atomic import atomic_write_bytes
from edgec.errors import EdgecError, InputError
from edgec.shapes import parse_input_shapes


def main(argv: list[str] | None = None) -> int:
    from edgec.examples.data import example_inputs
    from edgec.examples.models import REAL_MODELS, model_path

    p = argparse.ArgumentParser(prog="python -m edgec.examples", description=__doc__)
    p.add_argument("model", choices=sorted(REAL_MODELS))
    p.add_argument("--out", help="write the feed as .npz here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1,
                   help="samples to write, stacked on the first axis (a --calib set)")
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...")
    p.add_argument("--print-path", action="store_true", help="print the model file's path")
    args = p.parse_args(argv)
    try:
        if args.print_path:
            print(model_path(args.model))
        if args.count < 1:
            raise InputError(f"--count {args.count}: expected at least 1")
        if args.count > 1 and args.model == "silero-vad":
            # its first axis is the audio's frames, not a batch: one clip per file
            raise InputError("--count: silero-vad samples are whole clips; write one per "
                             "file (--seed) into a folder of .npz files")
        if args.out:
            shapes = parse_input_shapes(args.input_shape) or None
            feeds = example_inputs(args.model, args.count, seed=args.seed, shapes=shapes)
            feed = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
            buf = io.BytesIO()
            np.savez(buf, **feed)
            atomic_write_bytes(args.out, buf.getvalue())
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in feed.items()))
    except EdgecError as exc:
        print(f"edgec: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
