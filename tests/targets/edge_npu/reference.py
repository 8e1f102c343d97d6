"""Independent numpy integer reference for edge-npu layers (direct loops over the window).

Convolution here is a direct sum over kernel offsets on a padded NHWC tensor, not the
simulator's im2col GEMM, so a wrong index in either shows up as a mismatch. Rounding
uses edgec.targets.edge_npu.intmath, itself checked against a scalar gemmlowp port in
test_intmath.py.
"""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu import intmath


def conv_acc(x: np.ndarray, w: np.ndarray, stride: int, pad: tuple[int, int, int, int],
             zp_in: int, depthwise: bool) -> np.ndarray:
    """int32 accumulators of a conv: x HWC int8, w OHWI (depthwise: C x kh x kw)."""
    pt, pl, pb, pr = pad
    xp = np.pad(x.astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=zp_in)
    kh, kw = w.shape[1], w.shape[2]
    oh = (xp.shape[0] - kh) // stride + 1
    ow = (xp.shape[1] - kw) // stride + 1
    cout = w.shape[0]
    acc = np.zeros((oh, ow, cout), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            win = xp[i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
            if depthwise:
                acc += win * w[:, i, j].astype(np.int64)
            else:
                acc += np.einsum("hwc,oc->hwo", win, w[:, i, j, :].astype(np.int64))
    return acc


def conv_requant(x, w, bias, mult, shift, zp_out, qmin, qmax, stride=1, pad=(0, 0, 0, 0),
                 zp_in=0, depthwise=False):
    acc = conv_acc(x, w, stride, pad, zp_in, depthwise) + bias
    return intmath.requantize(acc, mult, shift, zp_out, qmin, qmax)
