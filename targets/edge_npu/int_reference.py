"""The integer CPU path: NPU layers run directly in numpy with ``rounding`` (the layer's
requantization rounding, binary32 or gemmlowp, as the vector unit applies it).

Same integer algebra as the NPU (so an NPU segment must match it bit for bit) but none
of its machinery: no tiling, bands, DMA, placement or instruction encoding. Tensors are
HWC int8. A mismatch therefore points at the lowering or the program generators.
"""

from __future__ import annotations

import numpy as np

from . import rounding
from .layers import Layer
from .lower import Segment


def _conv_acc(x: np.ndarray, layer: Layer) -> np.ndarray:
    """int64 accumulators (OH, OW, N) of a conv with zero-point padding."""
    conv = layer.attrs["conv"]
    zp = layer.inputs[0].zp
    pt, pl, pb, pr = conv.pad
    xp = np.pad(x.astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=zp)
    oh, ow = conv.out_h, conv.out_w
    w = layer.arrays["weights"].astype(np.int64)
    acc = np.zeros((oh, ow, conv.cout), dtype=np.int64)
    for i in range(conv.kh):
        for j in range(conv.kw):
            patch = xp[i:i + (oh - 1) * conv.sh + 1:conv.sh, j:j + (ow - 1) * conv.stride + 1:
                       conv.stride]
            if conv.depthwise:
                acc += patch * w[:, i, j]
            else:
                acc += patch @ w[:, i, j, :].T
    return acc


def depth_to_space(y: np.ndarray, p: int) -> np.ndarray:
    """A transposed conv's (H, W, p*p*C) phase outputs, (i, j, c) order -> (p*H, p*W, C)."""
    if p == 1:
        return y
    h, w, n = y.shape
    c = n // (p * p)
    return np.ascontiguousarray(y.reshape(h, w, p, p, c).transpose(0, 2, 1, 3, 4)
                                ).reshape(h * p, w * p, c)


def run_layer(layer: Layer, xs: list[np.ndarray]) -> np.ndarray:
    """One layer on HWC int8 inputs -> HWC int8 output."""
    a, at = layer.arrays, layer.attrs
    rnd = rounding.of_attrs(at)
    if layer.kind == "conv":
        acc = _conv_acc(xs[0], layer) + a["bias"]
        y = rounding.requantize(acc, a["mult"], a["shift"], at["zp_out"], at["qmin"],
                                at["qmax"], rnd)
        return depth_to_space(y, at["conv"].phases)
    if layer.kind == "gap":
        acc = xs[0].astype(np.int64).sum(axis=(0, 1)) + a["bias"]
        return rounding.requantize(acc, a["mult"], a["shift"], at["zp_out"], at["qmin"],
                                   at["qmax"], rnd).reshape(1, 1, -1)
    if layer.kind == "lut":
        return a["table"][xs[0].astype(np.int64) + 128]
    if layer.kind == "resize":
        y = a["table"][xs[0].astype(np.int64) + 128] if "table" in a else xs[0]
        f = at["factor"]
        return np.repeat(np.repeat(y, f, axis=0), f, axis=1)
    if layer.kind == "concat":
        return np.concatenate([a[f"table{i}"][x.astype(np.int64) + 128].astype(np.int8)
                               for i, x in enumerate(xs)], axis=2)
    if layer.kind in ("alias", "copy"):
        return xs[0].reshape(layer.out.shape)
    if layer.kind == "add":
        return rounding.add_int8(xs[0], at["zp1"], np.broadcast_to(xs[1], xs[0].shape),
                                 at["zp2"], at, at["zp_out"], at["qmin"], at["qmax"], rnd)
    if layer.kind == "mul":
        return rounding.mul_int8(xs[0], at["zp1"], np.broadcast_to(xs[1], xs[0].shape),
                                 at["zp2"], at["mult"], at["shift"], at["zp_out"], at["qmin"],
                                 at["qmax"], rnd)
    if layer.kind == "maxpool":
        k, s = at["k"], at["stride"]
        pt, pl, pb, pr = at["pad"]
        xp = np.pad(xs[0], ((pt, pb), (pl, pr), (0, 0)), constant_values=-128)
        oh, ow = (xp.shape[0] - k) // s + 1, (xp.shape[1] - k) // s + 1
        out = np.max([xp[i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s]
                      for i in range(k) for j in range(k)], axis=0).astype(np.int8)
        return a["table"][out.astype(np.int64) + 128] if "table" in a else out
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def run_segment(seg: Segment, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """A segment on int8 inputs in Relax layout (NCHW / 2-D) -> outputs in Relax layout."""
    values = {v: to_hwc(x) for v, x in zip(seg.inputs, inputs)}
    for sl in seg.layers:
        values[sl.output] = run_layer(sl.layer, [values[v] for v in sl.inputs])
    return [from_hwc(values[v], seg.shapes[v]) for v in seg.outputs]


def to_hwc(x: np.ndarray) -> np.ndarray:
    """NCHW (batch 1), 1 x M x N or 2-D int8 -> HWC."""
    if x.ndim == 4:
        return np.ascontiguousarray(x[0].transpose(1, 2, 0))
    return x.reshape(x.shape[-2], 1, x.shape[-1])


def from_hwc(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) == 4:
        return np.ascontiguousarray(x.transpose(2, 0, 1))[None].reshape(shape)
    return x.reshape(shape)
