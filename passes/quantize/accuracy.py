"""Accuracy of a quantized model against its float original, and accuracy budgets.

Per output, over all held-out samples flattened together (``r`` float, ``q`` quantized):

- cosine ``= <r, q> / (|r| |q|)``
- SNR (dB) ``= 10 log10(sum r^2 / sum (r - q)^2)`` (inf when equal)
- max abs error ``= max |r - q|``

A budget such as ``cosine=0.995`` or ``snr=30`` holds when every output meets it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from edgec.errors import InputError

BUDGET_METRICS = {"cosine": "cosine", "snr": "snr_db"}


@dataclass(frozen=True)
class Budget:
    metric: str  # "cosine" or "snr"
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}={self.threshold:g}"

    def met(self, metrics: Mapping[str, Mapping[str, float]]) -> bool:
        key = BUDGET_METRICS[self.metric]
        return all(m[key] >= self.threshold for m in metrics.values())

    def worst(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        key = BUDGET_METRICS[self.metric]
        return min(m[key] for m in metrics.values())


def parse_budget(text: str) -> Budget:
    """``"cosine=0.995"`` or ``"snr=30"`` (dB)."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in BUDGET_METRICS:
        raise InputError(
            f"accuracy budget {text!r}: expected METRIC=VALUE with METRIC one of "
            + ", ".join(BUDGET_METRICS)
        )
    try:
        threshold = float(value)
    except ValueError:
        raise InputError(f"accuracy budget {text!r}: {value!r} is not a number") from None
    if name == "cosine" and not 0.0 < threshold <= 1.0:
        raise InputError(f"accuracy budget {text!r}: cosine must be in (0, 1]")
    return Budget(name, threshold)


def compare(ref: Sequence[Mapping[str, np.ndarray]],
            got: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Cosine, SNR and max abs error per output name."""
    out: dict[str, dict[str, float]] = {}
    for name in ref[0]:
        r = np.concatenate([np.asarray(f[name], np.float64).ravel() for f in ref])
        q = np.concatenate([np.asarray(f[name], np.float64).ravel() for f in got])
        err = float(np.sum((r - q) ** 2))
        nr, nq = float(np.linalg.norm(r)), float(np.linalg.norm(q))
        cos = float(r @ q / (nr * nq)) if nr > 0 and nq > 0 else float(nr == nq)
        snr = math.inf if err == 0 else 10 * math.log10(max(float(np.sum(r**2)), 1e-300) / err)
        out[name] = {"cosine": cos, "snr_db": snr, "max_abs": float(np.max(np.abs(r - q)))}
    return out


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.5f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
