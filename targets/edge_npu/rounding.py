"""The vector unit's two requantization roundings (the VEC ``rnd`` field), in numpy.

- ``binary32`` (what lowering emits): a multiplier ``M = m * 2**-t`` (``m`` the 24-bit
  mantissa of the float32 ONNX Runtime computes) and ``R(x) = requant.binary32_round(x,
  m, t)``: the exact product ``x * m`` rounded to 24 significant bits, then to an
  integer, both half to even -- ``round_half_even(float32(x) * M)`` in integers, as
  edgec's CPU int8 path and ONNX Runtime's QLinearConv / QLinearMul compute it.
- ``gemmlowp``: TFLite's Q0.31 multiplier and shift (``intmath``).

The same parameter blocks carry either kind of ``(mult, shift)``; the instruction says
which. ADD in ``binary32``: ``mult1/shift1`` and ``mult2/shift2`` are the float32 ratios
``s1 / s_out`` and ``s2 / s_out``; both terms are aligned to ``2**-shift_out`` (the finer
of the two) and their exact sum is rounded once with ``mult_out = 1``, the result
ONNX Runtime's QLinearAdd (float ``r1 * a + r2 * b``, nearest even) approximates.
"""

from __future__ import annotations

import numpy as np
from edgec.passes.quantize.requant import binary32_multiplier, binary32_round

from . import intmath
from .isa import Rounding

DEFAULT = Rounding.BINARY32
Real = np.ndarray | float | np.floating


def rounding_of(name: str | int | Rounding) -> Rounding:
    """``"binary32"`` / ``"gemmlowp"`` (or the field value) -> ``Rounding``."""
    if isinstance(name, str):
        try:
            return Rounding[name.upper()]
        except KeyError:
            raise ValueError(f"unknown rounding {name!r}; choose binary32 or gemmlowp") from None
    return Rounding(int(name))


def of_attrs(attrs: dict) -> Rounding:
    """A layer's rounding: ``attrs["rounding"]``; layers built without it (hand-made
    tables of ``intmath.quantize_multiplier`` pairs) are gemmlowp."""
    return rounding_of(attrs.get("rounding", "gemmlowp"))


def f32_ratio(num: Real, den: Real) -> np.ndarray:
    """``float32(num) / float32(den)`` in float32, as ONNX Runtime forms a multiplier."""
    return (np.asarray(num, np.float32) / np.float32(den)).astype(np.float32)


def multipliers(real32: Real, rounding: Rounding) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``(mult, shift)`` arrays (same shape as ``real32``) for ``rounding``."""
    real32 = np.asarray(real32, np.float32)
    if rounding == Rounding.BINARY32:
        return binary32_multiplier(real32)
    pairs = [intmath.quantize_multiplier(float(r)) for r in real32.reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int64).reshape(real32.shape),
            np.array([p[1] for p in pairs], np.int64).reshape(real32.shape))


def requantize(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int, zp: int,
               qmin: int, qmax: int, rounding: Rounding) -> np.ndarray:
    """int32 accumulator -> int8 (per-channel mult/shift on the last axis)."""
    if rounding == Rounding.BINARY32:
        r = binary32_round(acc, mult, shift)
        return np.clip(r + zp, qmin, qmax).astype(np.int8)
    return intmath.requantize(acc, mult, shift, zp, qmin, qmax)


def add_params(s1: float, s2: float, s_out: float, rounding: Rounding) -> dict[str, int]:
    """The ADD block's multipliers for input scales s1, s2 and output scale s_out."""
    if rounding == Rounding.GEMMLOWP:
        return intmath.add_params(s1, s2, s_out)
    (m1, t1), (m2, t2) = (binary32_multiplier(f32_ratio(s, s_out)) for s in (s1, s2))
    return {"mult1": int(m1), "shift1": int(t1), "mult2": int(m2), "shift2": int(t2),
            "mult_out": 1, "shift_out": int(max(t1, t2))}


def add_int8(x1: np.ndarray, zp1: int, x2: np.ndarray, zp2: int, p: dict[str, int],
             zp_out: int, qmin: int, qmax: int, rounding: Rounding) -> np.ndarray:
    """int8 ADD with rescale (``p`` from ``add_params`` with the same rounding)."""
    if rounding == Rounding.GEMMLOWP:
        return intmath.add_int8(x1, zp1, x2, zp2, p, zp_out, qmin, qmax)
    t = p["shift_out"]
    a = (x1.astype(np.int64) - zp1) * p["mult1"] << (t - p["shift1"])
    b = (x2.astype(np.int64) - zp2) * p["mult2"] << (t - p["shift2"])
    return requantize(a + b, p["mult_out"], t, zp_out, qmin, qmax, rounding)


def mul_params(s1: float, s2: float, s_out: float, rounding: Rounding) -> tuple[int, int]:
    """MUL multiplier of ``s1 * s2 / s_out`` (float32, in ONNX Runtime's order)."""
    if rounding == Rounding.GEMMLOWP:  # TFLite forms it in double
        return intmath.quantize_multiplier(s1 * s2 / s_out)
    m, t = binary32_multiplier(f32_ratio(np.float32(s1) * np.float32(s2), s_out))
    return int(m), int(t)


def mul_int8(x1: np.ndarray, zp1: int, x2: np.ndarray, zp2: int, mult: int, shift: int,
             zp_out: int, qmin: int, qmax: int, rounding: Rounding) -> np.ndarray:
    """int8 MUL: requantize((x1 - zp1) * (x2 - zp2))."""
    prod = (x1.astype(np.int64) - zp1) * (x2.astype(np.int64) - zp2)
    return requantize(prod, mult, shift, zp_out, qmin, qmax, rounding)
