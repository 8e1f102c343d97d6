"""Resource limits on what edgec accepts: model size and compile time.

- ``EDGEC_MAX_MODEL_BYTES`` (default 2 GiB): the largest model edgec loads, counting
  the .onnx file and the external data files next to it (``--max-model-bytes``
  overrides it). Checked on file sizes before anything is read into memory.
- ``EDGEC_COMPILE_TIMEOUT`` (seconds, default 0 = none): the longest a compile may
  take (``--compile-timeout`` overrides it).

Sizes accept a plain byte count or a suffix: ``512M``, ``2G``, ``1.5GiB``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from edgec.errors import EdgecError, ModelError

DEFAULT_MAX_MODEL_BYTES = 2 << 30
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class CompileTimeoutError(EdgecError):
    """Compilation took longer than the configured limit."""


def parse_bytes(text: str, what: str = "EDGEC_MAX_MODEL_BYTES") -> int:
    """``"2G"``, ``"512MiB"``, ``"1000"`` -> bytes; a bad value is a one-line error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise EdgecError(f"{what}={text!r} is not a size (e.g. 2G, 512M, 1000000)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def max_model_bytes(override: int | str | None = None) -> int:
    """The model size limit: ``override``, else the environment, else 2 GiB."""
    if override is not None:
        return parse_bytes(str(override), "--max-model-bytes")
    env = os.environ.get("EDGEC_MAX_MODEL_BYTES")
    return parse_bytes(env) if env else DEFAULT_MAX_MODEL_BYTES


def compile_timeout(override: float | str | None = None) -> float:
    """Seconds a compile may take (0: unlimited): ``override``, else the environment."""
    text = str(override) if override is not None else os.environ.get("EDGEC_COMPILE_TIMEOUT", "0")
    what = "--compile-timeout" if override is not None else "EDGEC_COMPILE_TIMEOUT"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or math.isnan(value):
        raise EdgecError(f"{what}={text!r} is not a number of seconds (0 = no limit)")
    return value


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_model_size(path: str | os.PathLike[str], limit: int | None = None) -> int:
    """Raise ``ModelError`` if the model file plus its folder's data files exceed the limit.

    External data may only live in the model's folder (the frontend refuses anything
    else), so the file and its sibling data files bound what loading can read.
    Returns the counted size.
    """
    limit = max_model_bytes() if limit is None else limit
    path = Path(path)
    if not path.is_file():
        return 0  # the loader reports missing files
    size = path.stat().st_size
    if size <= limit:
        size += _external_bytes(path)
    if size > limit:
        raise ModelError(
            f"{path}: model is {_human(size)}, above the limit of {_human(limit)} "
            "(raise it with --max-model-bytes or EDGEC_MAX_MODEL_BYTES)"
        )
    return size


def _external_bytes(path: Path) -> int:
    """Bytes of the external data files the model names (read cheaply, no tensors)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return 0  # the loader reports unreadable models
    base = path.parent.resolve()
    seen: set[Path] = set()
    total = 0
    tensors = list(proto.graph.initializer) + [
        a.t for n in proto.graph.node for a in n.attribute if a.HasField("t")
    ]
    for t in tensors:
        for entry in t.external_data:
            if entry.key != "location":
                continue
            file = (base / entry.value).resolve()
            if file in seen or base not in file.parents or not file.is_file():
                continue  # outside the folder or missing: the loader refuses it
            seen.add(file)
            total += file.stat().st_size
    return total


@contextlib.contextmanager
def compile_deadline(seconds: float, what: str = "compile", hard: bool = False) -> Iterator[None]:
    """Raise ``CompileTimeoutError`` in the block after ``seconds`` (0: no limit).

    The alarm fires when control returns to Python; TVM calls back into Python
    between passes, but one long native call (LLVM codegen) may hold it off. With
    ``hard`` (for the CLI), a watchdog also prints the error and exits with code 2
    if the block is still running 10 s after the deadline. The alarm needs the main
    thread; elsewhere only the watchdog (when ``hard``) applies.
    """
    if seconds <= 0:
        yield
        return
    message = (
        f"{what} exceeded the time limit of {seconds:g} s "
        "(raise it with --compile-timeout or EDGEC_COMPILE_TIMEOUT)"
    )

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise CompileTimeoutError(message)

    use_alarm = threading.current_thread() is threading.main_thread()
    previous = None
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    done = threading.Event()
    if hard:
        def watchdog() -> None:
            if not done.wait(seconds + 10):
                sys.stderr.write(f"edgec: error: {message}\n")
                sys.stderr.flush()
                os._exit(CompileTimeoutError.exit_code)

        threading.Thread(target=watchdog, daemon=True, name="edgec-deadline").start()
    try:
        yield
    finally:
        done.set()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
