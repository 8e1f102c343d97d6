"""The int8 quantization scheme (TFLite / ONNX conventions, see NPU.md "int8 conventions").

- ``real = (q - zp) * scale``; ONNX QuantizeLinear rounds half to even and saturates.
- activations: int8 asymmetric per tensor. A range ``[lo, hi]`` is first widened to
  hold 0 (so zero padding and ReLU are exact), then ``scale = (hi - lo) / 255`` and
  ``zp = round(-128 - lo / scale)`` clipped to ``[-128, 127]``.
- weights: int8 symmetric per output channel, ``scale_c = max|W_c| / 127``,
  ``q = clip(round(W / scale_c), -127, 127)``; -128 is not used so ``-q`` always exists.
- bias: int32, ``scale = s_x * s_w[c]``, zero point 0.

Scales are float32 (what an ONNX file stores); every derived value (bias, the
requantization multiplier) is computed from those float32 values, so edgec's integer
kernels and an exported QDQ model start from identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127
WEIGHT_QMAX = 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class ActParams:
    """Per-tensor asymmetric int8 parameters of an activation."""

    scale: float  # a float32 value
    zero_point: int

    def to_json(self) -> dict[str, float | int]:
        return {"scale": self.scale, "zero_point": self.zero_point}

    @property
    def real_range(self) -> tuple[float, float]:
        """The real interval the int8 grid covers."""
        return ((QMIN - self.zero_point) * self.scale, (QMAX - self.zero_point) * self.scale)


def act_params(lo: float, hi: float) -> ActParams:
    """Asymmetric int8 parameters covering ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"calibration range [{lo}, {hi}] is not finite")
    if hi - lo <= 0.0:  # a tensor that is always 0: any scale is exact
        return ActParams(1.0, 0)
    scale = float(np.float32((hi - lo) / (QMAX - QMIN)))
    zp = int(np.clip(np.rint(QMIN - lo / scale), QMIN, QMAX))
    return ActParams(scale, zp)


def quantize(x: np.ndarray, scale: float | np.ndarray, zp: int | np.ndarray,
             qmin: int = QMIN, qmax: int = QMAX) -> np.ndarray:
    """ONNX QuantizeLinear: ``clip(round_half_even(x / scale) + zp)`` (float32 divide)."""
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32)) + zp
    return np.clip(q, qmin, qmax).astype(np.int8)


def dequantize(q: np.ndarray, scale: float | np.ndarray, zp: int | np.ndarray) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zp) * scale`` in float32."""
    return ((q.astype(np.int32) - zp).astype(np.float32) * np.asarray(scale, np.float32))


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel scales ``max|W_c| / 127`` (1.0 for an all-zero channel)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=reduce).astype(np.float64)
    scales = np.where(amax > 0, amax / WEIGHT_QMAX, 1.0)
    return scales.astype(np.float32)


def quantize_weight(w: np.ndarray, axis: int,
                    min_scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(w_q int8, scales float32[C])`` with ``W ~= w_q * scale_c`` along ``axis``;
    scales are raised to ``min_scales`` where given (see ``bias_min_weight_scales``)."""
    scales = weight_scales(w, axis)
    if min_scales is not None:
        scales = np.maximum(scales, np.asarray(min_scales, np.float32))
    shape = [1] * w.ndim
    shape[axis] = -1
    q = quantize(w, scales.reshape(shape), 0, -WEIGHT_QMAX, WEIGHT_QMAX)
    return q, scales


# A quantized bias stays within 2**30, so that folding the input zero point into it
# (``b_q - zp_x * sum W_q``, at most 128 * 127 * K in size) still fits int32.
BIAS_LIMIT = 2.0**30


def bias_min_weight_scales(b: np.ndarray, s_x: float) -> np.ndarray:
    """Smallest weight scales for which ``b / (s_x * s_w)`` stays within ``BIAS_LIMIT``.

    A channel whose weights are all ~0 (PP-OCRv4 det has one, max |W| ~ 1e-35) gets a
    scale so small that its bias would overflow int32; ONNX Runtime's quantizer widens
    the weight scale in that case too. The weights of such a channel quantize to 0,
    which they nearly are."""
    need = np.abs(np.asarray(b, np.float64)) / (np.float64(np.float32(s_x)) * BIAS_LIMIT)
    return need.astype(np.float32)


def bias_scale(s_x: float, s_w: np.ndarray) -> np.ndarray:
    """The int32 bias scale ``s_x * s_w[c]``, as the float32 an ONNX file stores."""
    return (np.float32(s_x) * np.asarray(s_w, np.float32)).astype(np.float32)


def quantize_bias(b: np.ndarray, s_x: float, s_w: np.ndarray) -> np.ndarray:
    """int32 bias ``round_half_even(b / (s_x * s_w[c]))``, saturated."""
    q = np.rint(np.asarray(b, np.float64) / bias_scale(s_x, s_w).astype(np.float64))
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)


def requant_multipliers(s_x: float, s_w: np.ndarray, s_y: float) -> np.ndarray:
    """The real multipliers ``s_x * s_w[c] / s_y`` that take an int32 accumulator to int8."""
    return bias_scale(s_x, s_w).astype(np.float64) / np.float64(np.float32(s_y))
