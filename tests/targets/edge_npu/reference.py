"""Independent numpy integer reference for edge-npu layers (direct loops over the window).

Convolution here is a direct sum over kernel offsets on a padded NHWC tensor, not the
simulator's im2col GEMM, so a wrong index in either shows up as a mismatch. Rounding
uses edgec.targets.edge_npu.intmath, itself checked against a scalar gemmlowp port in
test_intmath.py.
"""

from __future__ import annotations

import numpy as np
from edgec.targets.edge_npu import intmath


def conv_acc(x: np.ndarray, w: np.ndarray, stride: int | tuple[int, int],
             pad: tuple[int, int, int, int], zp_in: int, depthwise: bool) -> np.ndarray:
    """int32 accumulators of a conv: x HWC int8, w OHWI (depthwise: C x kh x kw);
    ``stride`` one int or (y, x)."""
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    pt, pl, pb, pr = pad
    xp = np.pad(x.astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=zp_in)
    kh, kw = w.shape[1], w.shape[2]
    oh = (xp.shape[0] - kh) // sh + 1
    ow = (xp.shape[1] - kw) // sw + 1
    cout = w.shape[0]
    acc = np.zeros((oh, ow, cout), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            win = xp[i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            if depthwise:
                acc += win * w[:, i, j].astype(np.int64)
            else:
                acc += np.einsum("hwc,oc->hwo", win, w[:, i, j, :].astype(np.int64))
    return acc


def conv_requant(x, w, bias, mult, shift, zp_out, qmin, qmax, stride=1, pad=(0, 0, 0, 0),
                 zp_in=0, depthwise=False):
    acc = conv_acc(x, w, stride, pad, zp_in, depthwise) + bias
    return intmath.requantize(acc, mult, shift, zp_out, qmin, qmax)


def conv_transpose_requant(x, w, bias, mult, shift, zp_out, qmin, qmax):
    """A transposed conv with kernel == stride p (w: Cin x C x p x p, as ONNX has it),
    scattered the textbook way: input pixel (y, x) times tap (i, j) lands on output pixel
    (p*y + i, p*x + j). As in ``conv_acc``, x is not offset by its zero point (the layer
    folds that into the bias); with no padding the zero point plays no part here."""
    _, c, p, _ = w.shape
    h, wd, _ = x.shape
    xs = x.astype(np.int64)
    acc = np.zeros((p * h, p * wd, c), dtype=np.int64)
    for y in range(h):
        for xx in range(wd):
            for i in range(p):
                for j in range(p):
                    acc[p * y + i, p * xx + j] += xs[y, xx] @ w[:, :, i, j].astype(np.int64)
    return intmath.requantize(acc + bias, mult, shift, zp_out, qmin, qmax)
