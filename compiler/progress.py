"""Phase progress on stderr: ``[2/6] simplify ... 0.41 s``, and timings for the report."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Phases:
    """Times named phases; prints one line per phase unless quiet."""

    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.timings: dict[str, float] = {}
        self._index = 0

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        self._index += 1
        label = f"[{self._index}/{self.total}] {name}" + (f" ({detail})" if detail else "")
        tty = self.stream.isatty()
        if not self.quiet and tty:
            self.stream.write(label + " ...")
            self.stream.flush()
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            if not self.quiet and tty:
                self.stream.write("\n")  # the error line must start on a fresh line
            raise
        took = time.perf_counter() - start
        self.timings[name] = round(self.timings.get(name, 0.0) + took, 4)
        if not self.quiet:
            prefix = "\r" if tty else ""
            self.stream.write(f"{prefix}{label} {took:.2f} s\n")
            self.stream.flush()
