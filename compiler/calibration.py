"""Calibration data: load sample feeds from disk and split them into calibration and
held-out parts.

Accepted layouts (``NAME`` is a model input name; arrays are never unpickled):

- ``calib.npz`` holding ``NAME`` arrays whose first axis indexes samples: sample ``i``
  is ``arr[i:i+1]`` for every input (so each array has shape ``(n, *input_shape[1:])``
  when the model's batch is 1; for batch ``b`` the first axis holds ``n * b`` rows).
- a folder of ``NAME.npy`` files, one per input, laid out as in the .npz.
- a folder of ``*.npz`` files, one sample (a full feed) each, taken in sorted order.

``split`` keeps every ``k``-th sample out for accuracy measurement (deterministic,
spread over the whole set rather than its tail, which may be ordered).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgec.atomic import atomic_path
from edgec.errors import InputError
from edgec.frontend import TensorSpec
from edgec.shapes import format_shape

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class CalibrationSet:
    """Feeds used to choose ranges (``calib``) and feeds kept out to measure (``held_out``)."""

    calib: list[Feed]
    held_out: list[Feed]
    source: str

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "calib": len(self.calib), "held_out": len(self.held_out)}


def load_samples(path: str | os.PathLike[str], inputs: Sequence[TensorSpec]) -> list[Feed]:
    """Every sample under ``path`` as a feed checked against the model's ``inputs``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"calibration data {p}: no such file or folder")
    if p.is_file():
        if p.suffix != ".npz":
            raise InputError(f"calibration data {p}: expected a .npz file or a folder")
        arrays = _read_npz(p)
        feeds = _stacked_to_feeds(arrays, inputs, str(p))
    else:
        npys = sorted(p.glob("*.npy"))
        npzs = sorted(p.glob("*.npz"))
        if npys and npzs:
            raise InputError(f"calibration folder {p} mixes .npy and .npz files; use one layout")
        if npys:
            arrays = {f.stem: _read_npy(f) for f in npys}
            feeds = _stacked_to_feeds(arrays, inputs, str(p))
        elif npzs:
            feeds = [_check_feed(_read_npz(f), inputs, str(f)) for f in npzs]
        else:
            raise InputError(f"calibration folder {p} holds no .npy or .npz files")
    if not feeds:
        raise InputError(f"calibration data {p} holds no samples")
    return feeds


def split(feeds: list[Feed], held_out_every: int = 5, source: str = "") -> CalibrationSet:
    """Keep every ``held_out_every``-th sample out (at least one if there are two or more)."""
    if held_out_every < 2:
        raise InputError(f"held_out_every must be at least 2, got {held_out_every}")
    if len(feeds) < 2:
        raise InputError(
            f"calibration data {source}: {len(feeds)} sample; need at least 2 "
            "(some to calibrate, some to measure accuracy on)"
        )
    held = [f for i, f in enumerate(feeds) if i % held_out_every == held_out_every - 1]
    if not held:
        held = feeds[-1:]
    calib = [f for f in feeds if not any(f is h for h in held)]
    return CalibrationSet(calib, held, source)


def load(path: str | os.PathLike[str], inputs: Sequence[TensorSpec],
         held_out_every: int = 5) -> CalibrationSet:
    """``load_samples`` then ``split``."""
    return split(load_samples(path, inputs), held_out_every, str(path))


def save_npz(path: str | os.PathLike[str], feeds: Sequence[Feed]) -> Path:
    """Write feeds as one stacked .npz (the first layout above)."""
    if not feeds:
        raise InputError("no feeds to save")
    names = list(feeds[0])
    stacked = {n: np.concatenate([f[n] for f in feeds]) for n in names}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **stacked)  # type: ignore[arg-type]
    return Path(path)


# ---------------------------------------------------------------------------- helpers


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise InputError(f"{path}: holds object arrays (pickles are refused): {exc}") from None
    except Exception as exc:  # noqa: BLE001  (zipfile, OSError, EOFError: all "unreadable")
        raise InputError(f"{path}: not a readable .npz ({exc})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: holds an object array (pickles are refused): {exc}") from None
    except Exception as exc:  # noqa: BLE001  (OSError, EOFError, bad header: all "unreadable")
        raise InputError(f"{path}: not a readable .npy ({exc})") from None


def _static_shape(spec: TensorSpec) -> tuple[int, ...]:
    if not spec.is_static:
        raise InputError(
            f"input {spec.name!r} has dynamic shape {format_shape(spec.shape)}; "
            "fix it with --input-shape before calibrating"
        )
    return tuple(int(d) for d in spec.shape)


def _check_names(arrays: dict[str, np.ndarray], inputs: Sequence[TensorSpec], where: str) -> None:
    names = [s.name for s in inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{where}: no array for input {missing[0]!r}; it holds "
            + (", ".join(repr(k) for k in arrays) or "nothing")
            + "; the model's inputs are " + ", ".join(repr(n) for n in names)
        )
    extra = [k for k in arrays if k not in names]
    if extra:
        raise InputError(
            f"{where}: array {extra[0]!r} is not a model input; the inputs are "
            + ", ".join(repr(n) for n in names)
        )


def _cast(arr: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if arr.dtype == want:
        return arr
    # float64 -> float32 and int32 -> int64 are what numpy users write by accident
    if arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iu"):
        return arr.astype(want)
    raise InputError(f"{where}: input {spec.name!r} has dtype {arr.dtype}, the model takes {want}")


def _stacked_to_feeds(arrays: dict[str, np.ndarray], inputs: Sequence[TensorSpec],
                      where: str) -> list[Feed]:
    _check_names(arrays, inputs, where)
    counts = {}
    for spec in inputs:
        shape = _static_shape(spec)
        arr = arrays[spec.name]
        if arr.ndim != len(shape) or tuple(arr.shape[1:]) != shape[1:]:
            raise InputError(
                f"{where}: input {spec.name!r} has shape {format_shape(arr.shape)}; expected "
                f"(samples*{shape[0]}, {', '.join(map(str, shape[1:]))}) for model shape "
                f"{format_shape(shape)}"
            )
        if arr.shape[0] % shape[0]:
            raise InputError(
                f"{where}: input {spec.name!r} has {arr.shape[0]} rows, not a multiple of "
                f"the model's batch {shape[0]}"
            )
        counts[spec.name] = arr.shape[0] // shape[0]
    if len(set(counts.values())) > 1:
        raise InputError(f"{where}: inputs hold different sample counts: {counts}")
    n = next(iter(counts.values()))
    feeds = []
    for i in range(n):
        feed = {}
        for spec in inputs:
            b = int(spec.shape[0])
            feed[spec.name] = _cast(arrays[spec.name][i * b:(i + 1) * b], spec, where)
        feeds.append(feed)
    return feeds


def _check_feed(arrays: dict[str, np.ndarray], inputs: Sequence[TensorSpec], where: str) -> Feed:
    _check_names(arrays, inputs, where)
    feed = {}
    for spec in inputs:
        shape = _static_shape(spec)
        arr = arrays[spec.name]
        if tuple(arr.shape) != shape:
            raise InputError(
                f"{where}: input {spec.name!r} has shape {format_shape(arr.shape)}, "
                f"the model takes {format_shape(shape)}"
            )
        feed[spec.name] = _cast(arr, spec, where)
    return feed
