"""Observers on known distributions; the int8 scheme's parameter math."""

from __future__ import annotations

import numpy as np
import pytest
from edgec.passes.quantize import observers as ob
from edgec.passes.quantize import scheme as sc


def test_minmax_uniform_range_and_params() -> None:
    o = ob.MinMaxObserver()
    o.observe(np.array([-1.0, 0.5, 3.0], np.float32))
    o.observe(np.array([2.0], np.float32))
    assert o.range() == (-1.0, 3.0)
    p = o.qparams()
    assert p.scale == pytest.approx(4 / 255, rel=1e-6)
    assert p.zero_point == round(-128 + 1 / p.scale)  # -64: real 0 is exactly on the grid
    lo, hi = p.real_range
    assert lo == pytest.approx(-1.0, abs=p.scale) and hi == pytest.approx(3.0, abs=p.scale)


def test_range_always_holds_zero() -> None:
    o = ob.MinMaxObserver()
    o.observe(np.array([2.0, 5.0], np.float32))
    p = o.qparams()
    assert p.zero_point == -128  # a post-ReLU tensor uses the whole grid for [0, 5]
    assert sc.act_params(0.0, 0.0) == sc.ActParams(1.0, 0)


def test_percentile_gaussian_matches_normal_quantile() -> None:
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    o = ob.PercentileObserver(99.9)
    for part in np.split(x, 10):
        o.observe(part)
    lo, hi = o.range()
    # two tails of 0.1% each: the 0.999 quantile of N(0, 1) is 3.090
    assert hi == pytest.approx(3.090, abs=0.03) and lo == pytest.approx(-3.090, abs=0.03)


def test_histogram_growth_is_exact() -> None:
    """Doubling the range merges bins exactly: totals and quantiles are kept."""
    rng = np.random.default_rng(1)
    small, big = rng.standard_normal(10_000), rng.standard_normal(10_000) * 20
    grown = ob.PercentileObserver(99.0)
    grown.observe(small)
    grown.observe(big)
    assert grown.hist.sum() == 20_000
    assert grown.amax >= np.abs(big).max()
    ref = np.percentile(np.concatenate([small, big]), 99.0)
    assert grown.range()[1] == pytest.approx(ref, abs=2 * grown.width)


def test_entropy_ignores_an_outlier_minmax_does_not() -> None:
    x = np.random.default_rng(2).standard_normal(200_000).astype(np.float32)
    x[0] = 1000.0
    ent, mm = ob.EntropyObserver(), ob.MinMaxObserver()
    ent.observe(x)
    mm.observe(x)
    assert mm.range()[1] == 1000.0
    lo, hi = ent.range()
    # the smallest cut KL may choose is 128 of 2048 bins, i.e. 1000 * 128 / 2048 = 62.5
    assert 2.0 < hi <= 62.5 and -62.5 <= lo < -2.0


def test_entropy_gaussian_threshold_is_a_few_sigma() -> None:
    x = np.random.default_rng(3).standard_normal(500_000).astype(np.float32)
    o = ob.EntropyObserver()
    o.observe(x)
    lo, hi = o.range()
    assert 2.0 < hi < 4.8  # TensorRT-style KL picks ~2.5-4 sigma for a Gaussian
    assert lo == pytest.approx(-hi)


def test_entropy_nonnegative_uses_full_grid() -> None:
    x = np.abs(np.random.default_rng(4).standard_normal(100_000)).astype(np.float32)
    o = ob.EntropyObserver()
    o.observe(x)
    assert o.range()[0] == pytest.approx(float(x.min()))
    assert o.qparams().zero_point == -128


def test_qparams_is_pure() -> None:
    o = ob.EntropyObserver()
    o.observe(np.random.default_rng(5).standard_normal(10_000))
    before = (o.hist.copy(), o.amax, o.lo, o.hi)
    assert o.qparams() == o.qparams()
    assert np.array_equal(before[0], o.hist) and before[1:] == (o.amax, o.lo, o.hi)


def test_errors() -> None:
    with pytest.raises(ValueError, match="saw no data"):
        ob.MinMaxObserver().qparams()
    with pytest.raises(ValueError, match="NaN"):
        ob.MinMaxObserver().observe(np.array([np.nan]))
    with pytest.raises(ValueError, match="unknown calibration method"):
        ob.make_observer("kl")


def test_weight_per_channel_symmetric() -> None:
    w = np.random.default_rng(6).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[2] *= 100
    w[3] = 0
    q, s = sc.quantize_weight(w, axis=0)
    assert q.dtype == np.int8 and s.shape == (4,)
    assert list(np.abs(q).reshape(4, -1).max(axis=1)) == [127, 127, 127, 0]
    assert s[3] == 1.0
    err = np.abs(q * s.reshape(-1, 1, 1, 1) - w)
    assert np.all(err <= s.reshape(-1, 1, 1, 1) / 2 + 1e-6)


def test_bias_int32_scale() -> None:
    s_x, s_w = 0.02, np.array([0.01, 0.5], np.float32)
    b = np.array([0.003, -1.0], np.float32)
    q = sc.quantize_bias(b, s_x, s_w)
    assert q.dtype == np.int32
    assert list(q) == [round(0.003 / (0.02 * 0.01)), round(-1.0 / (0.02 * 0.5))]


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    q = sc.quantize(np.array([0.5, 1.5, 2.5, 1e6, -1e6], np.float32), 1.0, 0)
    assert list(q) == [0, 2, 2, 127, -128]
