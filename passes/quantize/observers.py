"""Calibration observers: ``observe(x)`` accumulates, ``qparams()`` is pure.

Three ways to choose an activation's real range ``[lo, hi]``:

- ``minmax``: the smallest and largest values seen.
- ``percentile``: ``lo``/``hi`` at the ``(100 - p)``-th and ``p``-th percentiles of all
  values seen (default p = 99.99), clipping rare outliers in both tails.
- ``entropy``: TensorRT's KL calibration. On the histogram of ``|x|`` (2048 bins), for
  each candidate threshold ``T = i`` bins (i >= n_levels): ``P`` is the histogram cut
  at ``i`` with the clipped tail added to its last bin; ``Q`` merges ``P``'s bins into
  ``n_levels`` groups and spreads each group's mass evenly over its non-empty bins.
  ``T`` minimising ``KL(P || Q) = sum P log(P / Q)`` wins; the range is
  ``[max(min, -T), min(max, T)]``. ``n_levels`` is 128 for signed tensors (one side
  of the int8 grid) and 255 for non-negative ones (post-ReLU: the whole grid).

``auto`` (``ptq.quantize_onnx``) observes once with the percentile observer, which also
keeps the minimum and maximum, and keeps whichever of the percentile and minmax ranges
gives the better held-out accuracy.

The percentile and entropy observers share one signed histogram, symmetric about 0
with 2 x 2048 bins. When a later batch exceeds its range the range doubles (as often
as needed) and pairs of bins merge, which is exact, so no sample is ever re-binned
approximately.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from edgec.passes.quantize.scheme import ActParams, act_params

OBSERVERS = ("minmax", "percentile", "entropy")
METHODS = ("auto", *OBSERVERS)  # auto: ``ptq.quantize_onnx`` picks percentile or minmax
DEFAULT_METHOD = "percentile"
HALF_BINS = 2048


class Observer(ABC):
    """Accumulates statistics of one tensor over calibration batches."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        if x.size == 0:
            return
        if not np.all(np.isfinite(x)):
            raise ValueError("calibration tensor holds NaN or Inf")
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        self.count += x.size
        self._observe(x)

    def _observe(self, x: np.ndarray) -> None:
        pass

    @abstractmethod
    def range(self) -> tuple[float, float]:
        """The chosen real range ``[lo, hi]`` (pure)."""

    def qparams(self) -> ActParams:
        """Asymmetric int8 parameters for the chosen range (pure)."""
        if self.count == 0:
            raise ValueError("observer saw no data")
        return act_params(*self.range())


class MinMaxObserver(Observer):
    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


class HistogramObserver(Observer):
    """A signed histogram over ``[-amax, amax]``, ``2 * HALF_BINS`` bins."""

    def __init__(self) -> None:
        super().__init__()
        self.amax = 0.0
        self.hist = np.zeros(2 * HALF_BINS, dtype=np.int64)

    def _observe(self, x: np.ndarray) -> None:
        m = float(np.abs(x).max())
        if self.amax == 0.0:
            self.amax = m if m > 0 else 1.0
        while m > self.amax:  # double the range: bins 2k, 2k+1 merge, exactly
            h = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate(
                [np.zeros(HALF_BINS // 2, np.int64), h, np.zeros(HALF_BINS // 2, np.int64)]
            )
            self.amax *= 2.0
        h, _ = np.histogram(x, bins=2 * HALF_BINS, range=(-self.amax, self.amax))
        self.hist += h

    @property
    def width(self) -> float:
        return self.amax / HALF_BINS

    def abs_hist(self) -> np.ndarray:
        """Histogram of ``|x|`` over ``[0, amax]`` (HALF_BINS bins)."""
        return self.hist[HALF_BINS:] + self.hist[:HALF_BINS][::-1]


class PercentileObserver(HistogramObserver):
    def __init__(self, percentile: float = 99.99) -> None:
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        if self.percentile == 100.0:
            return self.lo, self.hi
        cdf = np.cumsum(self.hist) / self.hist.sum()
        tail = 1.0 - self.percentile / 100.0
        edges = -self.amax + self.width * np.arange(2 * HALF_BINS + 1)
        lo = edges[int(np.searchsorted(cdf, tail, side="left"))]  # lower edge of the bin
        hi = edges[int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1]  # upper edge
        return max(self.lo, float(lo)), min(self.hi, float(hi))


class EntropyObserver(HistogramObserver):
    def range(self) -> tuple[float, float]:
        levels = 255 if self.lo >= 0 else 128
        t = kl_threshold(self.abs_hist(), levels) * self.width
        return max(self.lo, -t), min(self.hi, t)


def kl_threshold(hist: np.ndarray, levels: int = 128) -> int:
    """TensorRT's entropy calibration: the cut (in bins) minimising KL(P || Q)."""
    hist = np.asarray(hist, np.float64)
    n = len(hist)
    nz = np.nonzero(hist)[0]
    if len(nz) == 0:
        return n
    last = int(nz[-1]) + 1
    if last <= levels:  # every value fits at full resolution
        return last
    best, best_kl = n, np.inf
    # TensorRT tries every cut; 512 evenly spaced cuts choose within 0.2% of the range
    step = max(1, (last - levels) // 512)
    for i in range(levels, last + 1, step):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # clipped outliers land in the last bin
        # Q: i bins merged into `levels` groups, each group's mass spread over its
        # non-empty bins (empty bins stay empty, as in TensorRT)
        group = (np.arange(i) * levels) // i
        ref = hist[:i]
        mass = np.bincount(group, weights=ref, minlength=levels)
        nonempty = np.bincount(group, weights=(ref > 0).astype(np.float64), minlength=levels)
        q = np.where(ref > 0, mass[group] / np.maximum(nonempty[group], 1), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-300)
        mask = ps > 0
        # a P bin with mass where Q has none (only the folded last bin can be) makes
        # KL infinite; TensorRT smooths, we give Q a tiny floor
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def make_observer(method: str, **kwargs: float) -> Observer:
    """An observer by method name (``minmax``, ``percentile``, ``entropy``)."""
    if method == "minmax":
        return MinMaxObserver()
    if method == "percentile":
        return PercentileObserver(**kwargs)
    if method == "entropy":
        return EntropyObserver()
    raise ValueError(f"unknown calibration method {method!r}; choose one of "
                     f"{', '.join(OBSERVERS)}")
