r"""Tiled online-softmax attention (FlashAttention's algorithm) as a Numba CPU kernel.

Computes the same as :func:`refimpl.attention.softmax.scaled_dot_product_attention` with
``mask=None, bias=None`` (``scale``, ``causal`` alignment ``top_left``/``bottom_right``, and
fully masked rows -> zeros), without materializing the ``(lq lk)`` score matrix.

For each block of queries ``Q_b`` (``block_q`` rows) and each block of keys ``K_c``
(``block_k`` rows) up to the causal limit, with running row max ``m``, row sum ``l``
and unnormalized output ``O``:

* ``S = scale Q_b K_c^T``  (masked entries ``-inf`` on the diagonal block)
* ``m' = max(m, rowmax S)``,  ``P = exp(S - m')``,  ``c = exp(m - m')``
* ``l' = c l + rowsum P``,  ``O' = c O + P V_c``
* at the end ``out = O / l`` (``l = 0``: a fully masked row, output 0).

The two products run through BLAS (``np.dot`` on contiguous blocks); the exponentials
and the rescaling are plain loops.  Parallel over ``batch x heads x query blocks``.
Shapes: ``q`` ``(b lq h d)``, ``k`` ``(b lk h d)``, ``v`` ``(b lk h e)`` -> ``(b lq h e)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._numba import warmup
from refimpl._validate import as_float_array, check_choice, check_int, check_shape, result_dtype

__all__ = ["flash_attention"]


@nb.njit(parallel=True, cache=True)
def _flash(Q, K, V, scale, causal, offset, block_q, block_k, O):
    # Q (b h lq d), K (b h lk d), V (b h lk e) contiguous; O (b h lq e)
    b, h, lq, d = Q.shape
    lk = K.shape[2]
    e = V.shape[3]
    nqb = (lq + block_q - 1) // block_q
    for idx in nb.prange(b * h * nqb):
        bh = idx // nqb
        qb = idx % nqb
        bi = bh // h
        hi = bh % h
        q0 = qb * block_q
        q1 = min(q0 + block_q, lq)
        T = q1 - q0
        Qb = np.empty((T, d), dtype=Q.dtype)
        for i in range(T):
            for j in range(d):
                Qb[i, j] = Q[bi, hi, q0 + i, j] * scale
        m = np.full(T, -np.inf, dtype=Q.dtype)
        lsum = np.zeros(T, dtype=Q.dtype)
        acc = np.zeros((T, e), dtype=Q.dtype)
        # keys j <= i + offset are visible (causal); the last query of the block sees the most
        kend = lk
        if causal:
            kend = min(lk, q1 - 1 + offset + 1)
        for k0 in range(0, max(kend, 0), block_k):
            k1 = min(k0 + block_k, kend)
            # S = scale Q_b K_c^T
            S = np.dot(Qb, K[bi, hi, k0:k1].T)
            if causal and k1 - 1 > q0 + offset:
                for i in range(T):
                    for j in range(k1 - k0):
                        if k0 + j > q0 + i + offset:
                            S[i, j] = -np.inf
            for i in range(T):
                # m' = max(m, rowmax S)
                mx = m[i]
                for j in range(k1 - k0):
                    if S[i, j] > mx:
                        mx = S[i, j]
                if mx == -np.inf:
                    # nothing visible yet in this row: P = 0, nothing to rescale
                    for j in range(k1 - k0):
                        S[i, j] = 0.0
                    continue
                # c = exp(m - m'); P = exp(S - m')
                c = math.exp(m[i] - mx)
                rs = 0.0
                for j in range(k1 - k0):
                    pij = math.exp(S[i, j] - mx)
                    S[i, j] = pij
                    rs += pij
                # l' = c l + rowsum P ; O <- c O
                lsum[i] = c * lsum[i] + rs
                for j in range(e):
                    acc[i, j] *= c
                m[i] = mx
            # O' = c O + P V_c
            acc += np.dot(S, V[bi, hi, k0:k1])
        for i in range(T):
            inv = 1.0 / lsum[i] if lsum[i] > 0 else 0.0
            for j in range(e):
                O[bi, hi, q0 + i, j] = acc[i, j] * inv


def flash_attention(q, k, v, *, scale: Optional[float] = None, causal: Optional[str] = None,
                    block_q: int = 64, block_k: int = 64) -> np.ndarray:
    """Tiled online-softmax attention; the result of ``scaled_dot_product_attention(q, k, v, scale, causal)``."""
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    b, lq, h, d = q.shape
    lk = k.shape[1]
    check_shape(k, "k", (b, None, h, d), "(b, lk, h, d)")
    check_shape(v, "v", (b, lk, h, None), "(b, lk, h, e)")
    if causal is not None:
        if isinstance(causal, bool):
            raise TypeError("causal: expected None, 'top_left' or 'bottom_right', got a bool (name the alignment)")
        check_choice(causal, "causal", ("top_left", "bottom_right"))
    block_q = check_int(block_q, "block_q", minimum=1)
    block_k = check_int(block_k, "block_k", minimum=1)
    if scale is None:
        scale = 1.0 / math.sqrt(d) if d else 1.0
    if not isinstance(scale, (int, float, np.floating)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number, got {scale!r}")
    dtype = result_dtype(q, k, v)
    Q = np.ascontiguousarray(np.transpose(q, (0, 2, 1, 3)), dtype=dtype)
    K = np.ascontiguousarray(np.transpose(k, (0, 2, 1, 3)), dtype=dtype)
    V = np.ascontiguousarray(np.transpose(v, (0, 2, 1, 3)), dtype=dtype)
    O = np.zeros((b, h, lq, v.shape[3]), dtype=dtype)
    offset = (lk - lq) if causal == "bottom_right" else 0
    if O.size and lk and d:
        _flash(Q, K, V, dtype.type(scale), causal is not None, offset, block_q, block_k, O)
    elif O.size and lk and not d:
        # d = 0: every score is 0, the softmax is uniform over the visible keys
        from refimpl.attention.softmax import scaled_dot_product_attention

        return scaled_dot_product_attention(q, k, v, scale=scale, causal=causal)
    return np.transpose(O, (0, 2, 1, 3))


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        flash_attention(x, x, x, causal="top_left", block_q=2, block_k=2)
        flash_attention(x, x, x, block_q=2, block_k=2)
