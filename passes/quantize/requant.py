"""Numpy reference of the integer layer edgec's ``quantize-int8`` pass emits.

Three requantization roundings, all a fixed-point multiplier and a shift:

- ``binary32`` (the default on CPU): ``M`` is the float32 value ONNX Runtime uses,
  ``float32(float32(s_x * s_w) / s_y)``, written exactly as ``m * 2**-t`` with a 24-bit
  ``m`` (its mantissa). ``R(acc)`` is the exact product ``acc * m`` rounded the way an
  IEEE binary32 multiply and a round-half-to-even conversion round it: first to 24
  significant bits (half to even), then to an integer (half to even). That is what
  ONNX Runtime's QLinearConv / QLinearMatMul (MLAS ``MlasRequantizeOutput``:
  ``round_half_even(float(acc) * M)``) computes, so edgec is bit-exact with ONNX
  Runtime's fused QDQ kernels (measured on PP-OCR cls, each conv fed ONNX Runtime's
  own int8 input: 0 of 7.6M outputs differ over 52 layers and 8 images, against 9 for
  ``single``; those rare seeds grew through the network to 1.6% of the logits off by
  more than one step). Exact while
  ``|acc| < 2**24`` (float32 holds it exactly), which covers every layer whose result
  is not saturated whenever ``M >= 2**-15`` (``|acc| >= 2**24`` then means ``|y| >= 512``).
  Integer-only: two roundings at bit positions found from the result's magnitude
  (``binary32_round``), no float arithmetic.

- ``gemmlowp``: ``intmath.requantize`` (SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT; two roundings, each half away from zero). TFLite's reference.
- ``single``: TFLite's single-rounding variant, ``(acc * mult + 2**(t-1)) >> t`` with
  ``t = 31 - shift``: the exact product ``acc * M`` rounded once, half up. Measured on
  PP-OCR cls, the double rounding of ``gemmlowp`` disagrees with the exactly rounded
  result on ~0.1% of a layer's outputs; ``single`` rounds the exact product, which
  differs from ONNX Runtime's float32 product only near ties (see ``binary32``).
"""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu.intmath import requantize as requantize_gemmlowp

__all__ = ["binary32_multiplier", "binary32_round", "conv2d_int", "matmul_int", "requantize",
           "requantize_binary32", "requantize_gemmlowp", "requantize_single"]

SATURATE_BITS = 10  # |R(acc)| >= 2**10 saturates int8 for any zero point: clamp there


# |int32| * M < 2**31 * 2**-32 = 1/2 for any multiplier M below this: the result is 0.
NEGLIGIBLE = 2.0**-32
MAX_SHIFT = 55  # t of the smallest multiplier kept, 2**-32 (24 - exponent -31)


def binary32_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(m, t)`` int64 with ``float32(real) == m * 2**-t`` exactly, ``m`` < 2**24.

    ``real`` is rounded to float32 first (it is the multiplier ONNX Runtime computes in
    float32); ``m`` is its 24-bit mantissa. Zero gives ``(0, 24)``, and so does any
    multiplier below ``2**-32`` (a dead output channel, all weights ~0): any int32
    accumulator times it is below one half, which rounds to 0, exactly as zero does."""
    r = np.asarray(real, np.float32).astype(np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization multipliers must be finite and non-negative")
    r = np.where(r < NEGLIGIBLE, 0.0, r)
    frac, exp = np.frexp(r)  # r = frac * 2**exp, frac in [0.5, 1): 24 bits for a float32
    m = np.rint(np.ldexp(frac, 24)).astype(np.int64)
    t = np.where(m > 0, 24 - exp, 24).astype(np.int64)
    if np.any(t < 2) or np.any(t > MAX_SHIFT):
        raise ValueError(f"requantization multiplier out of range: {r.min()}..{r.max()}")
    return m, t


def binary32_round(acc: np.ndarray, m: np.ndarray | int, t: np.ndarray | int) -> np.ndarray:
    """``round_half_even(float32(acc) * float32(M))`` in integers, ``M = m * 2**-t``.

    With ``u = |acc| * m`` (exact) and ``j = u >> t``, the value lies between ``j`` and
    ``j + 1`` and the only threshold that matters is the midpoint ``h = (j + 1/2) 2**t``.
    A float32 multiply rounds ``u`` to 24 significant bits; that lands exactly on ``h``
    (which is representable) when ``|u - h|`` is at most half a float32 ulp at ``h``'s
    magnitude, ``2**(t - 24) * 2**floor(log2(j + 1/2))`` (a tie at exactly half an ulp
    goes to ``h``, whose mantissa is even). Landing on ``h`` is a tie: half to even, so
    ``j + (j & 1)``. Otherwise the side of ``h`` decides: ``j + (u > h)``. Rounding is
    symmetric, so the sign is applied last. Results with ``|R| >= 2**10`` are clamped
    there (they saturate int8 for any zero point)."""
    a = np.asarray(acc, np.int64)
    m = np.asarray(m, np.int64)
    t = np.asarray(t, np.int64)
    # |acc| * m < 2**55, so the saturation cap only matters (and only fits) below 2**62
    u = np.minimum(np.abs(a) * m, np.int64(1) << np.minimum(t + SATURATE_BITS, 62))
    j = u >> t
    h = (j << t) + (np.int64(1) << (t - 1))
    # 2**(k + 1) with 2**k the float32 binade of j + 1/2 (2**-1 for j = 0)
    sm = j
    for s in (1, 2, 4, 8):
        sm = sm | (sm >> s)
    two_k1 = np.where(j > 0, 2 * (sm - (sm >> 1)), 1)
    half_ulp = (two_k1 << np.maximum(t - 25, 0)) >> np.maximum(25 - t, 0)
    q = np.where(np.abs(u - h) <= half_ulp, j + (j & 1), j + (u > h))
    return np.where(a < 0, -q, q)


def requantize_binary32(acc: np.ndarray, m: np.ndarray | int, t: np.ndarray | int, zp: int,
                        qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """int32 accumulator -> int8 with ``binary32_round``; per-channel on the last axis."""
    return np.clip(binary32_round(acc, m, t) + zp, qmin, qmax).astype(np.int8)


def requantize_single(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int,
                      zp: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """int32 accumulator -> int8, one rounding (half up); per-channel on the last axis."""
    total = 31 - np.asarray(shift, np.int64)
    prod = np.asarray(acc, np.int64) * np.asarray(mult, np.int64)
    r = (prod + (np.int64(1) << (total - 1))) >> total
    return np.clip(r + zp, qmin, qmax).astype(np.int8)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp: int,
               qmin: int, qmax: int, rounding: str = "binary32") -> np.ndarray:
    """Requantize with ``rounding``; ``(mult, shift)`` are ``binary32_multiplier``'s
    ``(m, t)`` for ``binary32`` and ``intmath.quantize_multiplier``'s otherwise."""
    fn = {"binary32": requantize_binary32, "single": requantize_single,
          "gemmlowp": requantize_gemmlowp}[rounding]
    return fn(acc, mult, shift, zp, qmin, qmax)


def conv2d_int(xq: np.ndarray, zp_x: int, w_q: np.ndarray, b_q: np.ndarray | None,
               strides: tuple[int, int], pads: tuple[int, int, int, int],
               groups: int) -> np.ndarray:
    """int32 ``sum (xq - zp_x) * w_q + b_q`` of an NCHW/OIHW conv (real-zero padding)."""
    x = xq.astype(np.int64) - zp_x
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    _, _, h, w = x.shape
    o, cg, kh, kw = w_q.shape
    sh, sw = strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    og = o // groups
    out = np.zeros((x.shape[0], o, oh, ow), np.int64)
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w_q[g * og:(g + 1) * og].astype(np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]  # n, cg, oh, ow
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b_q is not None:
        out += b_q.astype(np.int64).reshape(1, -1, 1, 1)
    return out


def matmul_int(xq: np.ndarray, zp_x: int, w_q: np.ndarray, b_q: np.ndarray | None) -> np.ndarray:
    """int64 ``(xq - zp_x) @ w_q + b_q``."""
    out = (xq.astype(np.int64) - zp_x) @ w_q.astype(np.int64)
    return out if b_q is None else out + b_q.astype(np.int64)
