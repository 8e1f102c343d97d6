"""Weight scales widen only where a channel's bias would overflow int32 (dead channels)."""

from __future__ import annotations

import numpy as np
from edgec.passes.quantize.scheme import (
    BIAS_LIMIT,
    bias_min_weight_scales,
    quantize_bias,
    quantize_weight,
    weight_scales,
)


def test_dead_channel_gets_a_bias_that_fits() -> None:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[2] = 1e-35  # all weights ~0: max|W| / 127 ~ 1e-37
    b = np.array([0.5, -1.0, 3.0, 0.1], np.float32)
    s_x = 0.02
    plain = weight_scales(w, 0)
    assert abs(float(b[2]) / (s_x * float(plain[2]))) > 2**31  # would overflow
    wq, sw = quantize_weight(w, 0, bias_min_weight_scales(b, s_x))
    np.testing.assert_array_equal(sw[[0, 1, 3]], plain[[0, 1, 3]])  # others untouched
    assert np.all(wq[2] == 0)
    bq = quantize_bias(b, s_x, sw)
    assert np.all(np.abs(bq.astype(np.int64)) <= BIAS_LIMIT)
    # The bias itself survives: dequantized within half a step of the float value.
    deq = bq.astype(np.float64) * (np.float32(s_x) * sw).astype(np.float64)
    assert np.all(np.abs(deq - b) <= 0.5 * np.float32(s_x) * sw + 1e-12)
