"""intmath against a scalar, line-by-line port of gemmlowp / TFLite (Python ints)."""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu import intmath
from hypothesis import given
from hypothesis import strategies as st

I32 = st.integers(-(2**31), 2**31 - 1)


def srdhm_scalar(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = ab + nudge
    return abs(q) // (1 << 31) * (1 if q >= 0 else -1)  # C truncation


def rdbpot_scalar(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


@given(I32, I32)
def test_srdhm(a, b):
    assert int(intmath.srdhm(np.array([a]), b)[0]) == srdhm_scalar(a, b)


@given(I32, st.integers(0, 31))
def test_rounding_divide_by_pot(x, e):
    assert int(intmath.rounding_divide_by_pot(np.array([x]), e)[0]) == rdbpot_scalar(x, e)


@given(st.floats(1e-6, 0.99))
def test_quantize_multiplier_represents_real(real):
    m, s = intmath.quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30


@given(st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=50),
       st.floats(1e-5, 0.5), st.integers(-20, 20))
def test_requantize_close_to_real(acc, real, zp):
    m, s = intmath.quantize_multiplier(real)
    got = intmath.requantize(np.array(acc), m, s, zp)
    want = np.clip(np.round(np.array(acc) * real) + zp, -128, 127)
    assert np.abs(got.astype(np.int64) - want).max() <= 1
