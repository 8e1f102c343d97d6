"""Numpy reference of the integer layer edgec's ``quantize-int8`` pass emits.

Two requantization roundings (NPU.md "int8 conventions"):

- ``gemmlowp``: ``intmath.requantize`` (SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT; two roundings, each half away from zero). TFLite's reference.
- ``single``: TFLite's single-rounding variant, ``(acc * mult + 2**(t-1)) >> t`` with
  ``t = 31 - shift``: the exact product ``acc * M`` rounded once, half up. Measured on
  PP-OCR cls, the double rounding of ``gemmlowp`` disagrees with the exactly rounded
  result (what ONNX Runtime computes in float) on ~0.1% of a layer's outputs, and
  those 1-step seeds grow through 54 layers; ``single`` is the default on CPU.
"""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu.intmath import requantize as requantize_gemmlowp

__all__ = ["conv2d_int", "matmul_int", "requantize", "requantize_gemmlowp", "requantize_single"]


def requantize_single(acc: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int,
                      zp: int, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """int32 accumulator -> int8, one rounding (half up); per-channel on the last axis."""
    total = 31 - np.asarray(shift, np.int64)
    prod = np.asarray(acc, np.int64) * np.asarray(mult, np.int64)
    r = (prod + (np.int64(1) << (total - 1))) >> total
    return np.clip(r + zp, qmin, qmax).astype(np.int8)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp: int,
               qmin: int, qmax: int, rounding: str = "single") -> np.ndarray:
    fn = requantize_single if rounding == "single" else requantize_gemmlowp
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
