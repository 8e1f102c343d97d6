"""Reference int8 arithmetic (TFLite / gemmlowp conventions), vectorised with numpy.

Shared by the edge-npu simulator and, later, the CPU path, so both round alike.

- ``real = (q - zp) * scale``; a real multiplier M is ``mult * 2**(shift - 31)`` with
  ``mult`` in Q0.31 (``[2**30, 2**31)``) and ``shift`` > 0 meaning a left shift.
- requantize(acc) = clamp(RDBPOT(SRDHM(acc << max(shift,0), mult), max(-shift,0)) + zp)
  where SRDHM is gemmlowp's SaturatingRoundingDoublingHighMul (round half away from
  zero of ``a*b / 2**31``) and RDBPOT its RoundingDivideByPOT (round half away from zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ADD_LEFT_SHIFT = 20  # TFLite int8 ADD: inputs are widened by 2**20 before rescaling


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split a positive real multiplier into (Q0.31 mult, shift), as TFLite does."""
    if real < 0:
        raise ValueError(f"multiplier must be non-negative, got {real}")
    if real == 0:
        return 0, 0
    frac, shift = math.frexp(real)  # real = frac * 2**shift, frac in [0.5, 1)
    mult = round(frac * (1 << 31))
    if mult == 1 << 31:  # rounding frac up to 1.0
        mult //= 2
        shift += 1
    if shift < -31:  # too small to represent: flush to zero, as TFLite does
        return 0, 0
    return mult, shift


def srdhm(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values (returns int64)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = ab + nudge
    # C integer division truncates toward zero; >> on int64 floors
    res = np.where(q >= 0, q >> 31, -((-q) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, res)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, mult: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier; the left shift saturates to int32."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    widened = np.clip(np.asarray(x, dtype=np.int64) << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(srdhm(widened, mult), right)


def requantize(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int,
               zp: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """int32 accumulator -> int8 with per-tensor or per-channel (last axis) mult/shift."""
    out = multiply_by_quantized_multiplier(acc, mult, shift) + zp
    return np.clip(out, qmin, qmax).astype(np.int8)


def add_params(s1: float, s2: float, s_out: float) -> dict[str, int]:
    """Multipliers of TFLite's int8 ADD for input scales s1, s2 and output scale s_out."""
    twice_max = 2 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    return {"mult1": m1, "shift1": sh1, "mult2": m2, "shift2": sh2,
            "mult_out": mo, "shift_out": sho}


def add_int8(x1: np.ndarray, zp1: int, x2: np.ndarray, zp2: int, p: dict[str, int],
             zp_out: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """TFLite reference int8 ADD with rescale (``p`` from ``add_params``)."""
    a = (x1.astype(np.int64) - zp1) << ADD_LEFT_SHIFT
    b = (x2.astype(np.int64) - zp2) << ADD_LEFT_SHIFT
    a = multiply_by_quantized_multiplier(a, p["mult1"], p["shift1"])
    b = multiply_by_quantized_multiplier(b, p["mult2"], p["shift2"])
    out = multiply_by_quantized_multiplier(a + b, p["mult_out"], p["shift_out"]) + zp_out
    return np.clip(out, qmin, qmax).astype(np.int8)


def mul_int8(x1: np.ndarray, zp1: int, x2: np.ndarray, zp2: int, mult: int, shift: int,
             zp_out: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """TFLite reference int8 MUL: requantize((x1-zp1)*(x2-zp2)) with s1*s2/s_out."""
    prod = (x1.astype(np.int64) - zp1) * (x2.astype(np.int64) - zp2)
    return requantize(prod, mult, shift, zp_out, qmin, qmax)


def avg_pool_round(total: np.ndarray, count: int) -> np.ndarray:
    """TFLite int8 average: (sum +- count/2) / count, C division (rounds half away)."""
    total = np.asarray(total, dtype=np.int64)
    num = total + np.where(total > 0, count // 2, -(count // 2))
    return np.where(num >= 0, num // count, -((-num) // count))


def build_lut(fn: Callable[[np.ndarray], np.ndarray], s_in: float, zp_in: int,
              s_out: float, zp_out: int) -> np.ndarray:
    """256-entry int8 table for ``fn`` indexed by ``q_in + 128`` (round half to even)."""
    q = np.arange(-128, 128, dtype=np.int64)
    real = fn((q - zp_in) * s_in)
    return np.clip(np.rint(real / s_out) + zp_out, -128, 127).astype(np.int8)
