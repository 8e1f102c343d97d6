"""Numpy definitions of softmax attention and its linear replacements (fp32).

These are the living definitions: the Relax lowerings in ``linear_attention.py`` are
tested against them, and ``auto`` mode evaluates candidate variants with them on
tensors tapped from calibration runs (no recompile per candidate).

Shapes: ``q`` (..., Nq, d) with every scale already applied, so scores are
``q @ k^T``; ``k`` (..., N, d); ``v`` (..., N, dv); ``kb`` (..., 1, N) or None, the
key-only additive bias (0 keep, -3.4e38 padding). Softmax attention is

    o_i = sum_j exp(q_i.k_j + kb_j) v_j / sum_j exp(q_i.k_j + kb_j)

Every linear variant replaces ``exp(q_i.k_j)`` by a factorized ``phi(q_i).psi(k_j)``,
so ``o = phi(Q) (psi(K)^T V) / phi(Q) (psi(K)^T 1)`` costs O(N) instead of O(N^2).
The key weight ``exp(kb_j)`` multiplies ``psi(k_j)``: a padding key contributes exactly
zero features, which is why K itself is never masked before the feature map.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
TINY = np.float32(1e-30)  # guards 0/0 when every key is masked (the NaN guard yields 0)
NEG = np.float32(-1e30)  # column bias of an all-padding Nystrom landmark


def softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                      kb: np.ndarray | None = None) -> np.ndarray:
    """Exact ``softmax(q k^T + kb) v``."""
    s = q.astype(F32) @ np.swapaxes(k, -1, -2).astype(F32)
    if kb is not None:
        s = s + kb
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p = p / p.sum(-1, keepdims=True)
    return (p @ v).astype(F32)


def key_weights(kb: np.ndarray) -> np.ndarray:
    """``exp(kb - max kb)`` (..., 1, N): the max cancels between numerator and denominator."""
    return np.exp(kb - kb.max(-1, keepdims=True)).astype(F32)


# ----------------------------------------------------------------------------- FAVOR+


def orthogonal_features(m: int, d: int, seed: int) -> np.ndarray:
    """Performer's positive orthogonal random features W (m, d).

    Rows come in blocks of d mutually orthogonal directions (QR of a Gaussian), each
    row rescaled by the norm of an independent Gaussian d-vector, so every row is
    marginally N(0, I_d) while rows within a block are exactly orthogonal (lower
    variance than i.i.d. features).
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-m // d)):
        g = rng.standard_normal((d, d))
        qmat, _ = np.linalg.qr(g)
        blocks.append(qmat.T)
    w = np.concatenate(blocks, 0)[:m]
    norms = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    return (w * norms[:, None]).astype(F32)


def favor(q: np.ndarray, k: np.ndarray, v: np.ndarray, kb: np.ndarray | None,
          w: np.ndarray) -> np.ndarray:
    """FAVOR+ with features ``w`` (m, d).

    ``exp(q.k) = E_w[exp(w.q - |q|^2/2) exp(w.k - |k|^2/2)]`` for ``w ~ N(0, I)``;
    the estimate uses m features. Stabilizers: subtract the per-query max of the
    query exponents and the per-head max of the key exponents (plus key bias); both
    are constants of the ratio, so they cancel exactly and only prevent overflow.
    The common ``1/sqrt(m)`` factor cancels too and is omitted.
    """
    q, k, v = q.astype(F32), k.astype(F32), v.astype(F32)
    lq = q @ w.T - F32(0.5) * (q * q).sum(-1, keepdims=True)
    fq = np.exp(lq - lq.max(-1, keepdims=True))
    lk = k @ w.T - F32(0.5) * (k * k).sum(-1, keepdims=True)
    if kb is not None:
        lk = lk + np.swapaxes(kb, -1, -2)
    fk = np.exp(lk - lk.max((-2, -1), keepdims=True))
    kv = np.swapaxes(fk, -1, -2) @ v
    z = fk.sum(-2, keepdims=True)
    den = (fq * z).sum(-1, keepdims=True)
    return ((fq @ kv) / np.maximum(den, TINY)).astype(F32)


# ---------------------------------------------------------------------------- Nystrom


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def newton_schulz_pinv(a: np.ndarray, iters: int = 6) -> np.ndarray:
    """Moore-Penrose pseudo-inverse by the iteration of Nystromformer (Xiong et al. 2021).

    ``Z0 = A^T / (max_col_sum(A) * max_row_sum(A))``,
    ``Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4``.
    """
    eye = np.eye(a.shape[-1], dtype=F32)
    z = np.swapaxes(a, -1, -2) / (
        a.sum(-2, keepdims=True).max(-1, keepdims=True)
        * a.sum(-1, keepdims=True).max(-2, keepdims=True))
    for _ in range(iters):
        az = a @ z
        z = F32(0.25) * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z.astype(F32)


def nystrom(q: np.ndarray, k: np.ndarray, v: np.ndarray, kb: np.ndarray | None,
            landmarks: int, iters: int = 6) -> np.ndarray:
    """Nystrom attention with ``l`` segment-mean landmarks (training-free).

    ``o = softmax(Q Kl^T) pinv(softmax(Ql Kl^T)) softmax(Ql K^T + kb) V`` where
    ``Ql``/``Kl`` are means of N/l consecutive queries/keys. Key landmarks average
    only kept keys (weights exp(kb)); a landmark whose segment is all padding gets a
    -1e30 column bias so it takes no weight.
    """
    q, k, v = q.astype(F32), k.astype(F32), v.astype(F32)
    n, d, l = k.shape[-2], k.shape[-1], landmarks
    seg = n // l
    ql = q.reshape(*q.shape[:-2], l, seg, d).mean(-2)
    lb = None
    if kb is None:
        kl = k.reshape(*k.shape[:-2], l, seg, d).mean(-2)
    else:
        w = key_weights(kb)  # (..., 1, N)
        kw = k * np.swapaxes(w, -1, -2)
        ksum = kw.reshape(*kw.shape[:-2], l, seg, d).sum(-2)
        cnt = w.reshape(*w.shape[:-1], l, seg).sum(-1)  # (..., 1, l)
        kl = ksum / np.maximum(np.swapaxes(cnt, -1, -2), TINY)
        lb = np.where(cnt > 0, F32(0), NEG).astype(F32)
    klt = np.swapaxes(kl, -1, -2)
    f = q @ klt
    a = ql @ klt
    b = ql @ np.swapaxes(k, -1, -2)
    if lb is not None:
        f, a, b = f + lb, a + lb, b + kb
    z = newton_schulz_pinv(_softmax(a).astype(F32), iters)
    return (_softmax(f) @ (z @ (_softmax(b) @ v))).astype(F32)


# -------------------------------------------------------------------------------- ELU


def elu_feature(x: np.ndarray) -> np.ndarray:
    """``elu(x) + 1``: x + 1 for x > 0, exp(x) otherwise (positive, never zero)."""
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))).astype(F32)


def elu(q: np.ndarray, k: np.ndarray, v: np.ndarray, kb: np.ndarray | None) -> np.ndarray:
    """Linear attention of Katharopoulos et al. 2020, ``phi = elu + 1``.

    Not an approximation of softmax: a different kernel that models must be trained
    (or fine-tuned) for. Offered only on explicit request.
    """
    q, k, v = q.astype(F32), k.astype(F32), v.astype(F32)
    fq, fk = elu_feature(q), elu_feature(k)
    if kb is not None:
        fk = fk * np.swapaxes(key_weights(kb), -1, -2)
    kv = np.swapaxes(fk, -1, -2) @ v
    z = fk.sum(-2, keepdims=True)
    den = (fq * z).sum(-1, keepdims=True)
    return ((fq @ kv) / np.maximum(den, TINY)).astype(F32)
