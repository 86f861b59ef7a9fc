r"""Tiled online-softmax attention (FlashAttention's algorithm) as a Numba CPU kernel.

The ``"tiled"`` view of :func:`refimpl.attention.softmax.scaled_dot_product_attention`: computes the same as
:func:`refimpl.attention.softmax.reference.materialized` with ``mask=None, bias=None`` (``scale``, ``causal``
with ``alignment`` ``top_left``/``bottom_right``, and fully masked rows -> zeros), without materializing the
``(l s)`` score matrix.

For each block of queries ``Q_b`` (``block_q`` rows) and each block of keys ``K_c``
(``block_k`` rows) up to the causal limit, with running row max ``m``, row sum ``l``
and unnormalized output ``O``:

* ``S = scale Q_b K_c^T``  (masked entries ``-inf`` on the diagonal block)
* ``m' = max(m, rowmax S)``,  ``P = exp(S - m')``,  ``c = exp(m - m')``
* ``l' = c l + rowsum P``,  ``O' = c O + P V_c``
* at the end ``out = O / l`` (``l = 0``: a fully masked row, output 0).

The two products run through BLAS (:func:`refimpl._blas.gemm`, on the strided rows of one head of
``q``, ``k``, ``v`` in place, one thread per call); the exponentials of a float32 run use the
vectorizable polynomial ``exp`` of :mod:`refimpl._fastmath` (relative error <= ``EXP_REL_ERR``,
about 1.8e-6 proven, ~1e-7 observed), its power of two ``2^n`` applied in the same loop by a bitcast
(:func:`_bits_as_f32`: the same arithmetic as :func:`refimpl._fastmath.exp_f32`, one pass over the block
instead of two), float64 runs use libm's ``exp``.  The running max is a branch-free select (vectorized over
the block's queries), and a row whose max did not move skips its rescaling (``c = exp(0) = 1`` exactly).
Parallel over ``batch x heads x query blocks``.
Shapes: ``q`` ``(b l h n)``, ``k`` ``(b s h n)``, ``v`` ``(b s h p)`` -> ``(b l h p)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._fastmath import f32_from_bits, exp_parts
from refimpl._numba import warmup
from refimpl._validate import check_int, result_dtype
from refimpl.attention.softmax.reference import attention_scale, causal_alignment, materialized, validate_qkv

__all__ = ["flash_attention"]


_bits_as_f32 = f32_from_bits  # refimpl._fastmath: the int32 bit pattern as a float32 (a bitcast)


@nb.njit(cache=True)
def _exp_rowsum(X, m, lsum):
    # X_ji <- exp(X_ji - m_i) for a (nk T) block and lsum_i += sum_j X_ji; the float32 polynomial exp
    # (p * 2^n, the power of two by a bitcast, in the same loop: vectorized over the queries i) or libm's exp
    # (float64). Not fastmath: the polynomial's rounding steps must stay as written (the sums over j run in order).
    nk, T = X.shape
    if X.itemsize == 4:
        for j in range(nk):
            for i in range(T):
                p, bb = exp_parts(X[j, i] - m[i])
                X[j, i] = p * _bits_as_f32(bb)
                lsum[i] += X[j, i]
    else:
        for j in range(nk):
            for i in range(T):
                X[j, i] = math.exp(X[j, i] - m[i])
                lsum[i] += X[j, i]


@nb.njit(cache=True)
def _exp_block_rowsum(X, m, bits, lsum):
    # the former two-pass form's signature (the block-sparse kernel calls it): ``bits`` (an int32 scratch block)
    # is no longer needed, the power of two is applied in the same pass; the same results bit for bit
    _exp_rowsum(X, m, lsum)


@nb.njit(cache=True)
def _to_heads(x, out):
    # out[b, h, t, :] = x[b, t, h, :]: (b l h n) -> (b h l n), each head's rows contiguous.  Serial: a copy
    # gains little from threads, and each parallel region costs a wake-up of the worker threads (measured
    # 10+ ms per region on a loaded 2-core machine, more than the copy)
    b, l, h, n = x.shape
    for bh in range(b * h):
        bi = bh // h
        hi = bh % h
        for t in range(l):
            out[bi, hi, t, :] = x[bi, t, hi, :]


@nb.njit(parallel=True, cache=True)
def _flash(Q, Kh, Vh, scale, causal, offset, block_q, block_k, O):
    # Q (b l h n); Kh (b h s n), Vh (b h s p) contiguous per head; O (b l h p).
    # Scores are kept transposed, S^T (keys x queries), so that the softmax statistics of the T queries are
    # updated together (loops over the contiguous query axis vectorize), and both products are plain GEMMs:
    # S^T = K_c (scale Q_b)^T and O += P^T^T V_c.
    b, l, h, n = Q.shape
    s = Kh.shape[2]
    p = Vh.shape[3]
    dt = Q.dtype
    nqb = (l + block_q - 1) // block_q
    for idx in nb.prange(b * h * nqb):
        bh = idx // nqb
        qb = idx % nqb
        bi = bh // h
        hi = bh % h
        q0 = qb * block_q
        q1 = min(q0 + block_q, l)
        T = q1 - q0
        # scale Q_b^T (n T)
        QT = np.empty((n, T), dtype=dt)
        for i in range(T):
            for c in range(n):
                QT[c, i] = Q[bi, q0 + i, hi, c] * scale
        m = np.full(T, -np.inf, dtype=dt)
        m_new = np.empty(T, dtype=dt)
        lsum = np.zeros(T, dtype=dt)
        acc = np.zeros((T, p), dtype=dt)
        Sf = np.empty(block_k * T, dtype=dt)
        # keys j <= i + offset are visible (causal); the last query of the block sees the most
        kend = s
        if causal:
            kend = min(s, q1 - 1 + offset + 1)
        for k0 in range(0, max(kend, 0), block_k):
            k1 = min(k0 + block_k, kend)
            nk = k1 - k0
            ST = Sf[:nk * T].reshape((nk, T))
            # S^T = K_c (scale Q_b)^T:  s_ij = scale q_i . k_j
            gemm(Kh[bi, hi, k0:k1], False, QT, False, ST, 0.0)
            if causal and k1 - 1 > q0 + offset:
                # masked: key j > i + offset
                for j in range(nk):
                    for i in range(min(max(k0 + j - offset - q0, 0), T)):
                        ST[j, i] = -np.inf
            # m' = max(m, rowmax s) for every query i (vectorized over i: a select, no branch)
            for i in range(T):
                m_new[i] = m[i]
            for j in range(nk):
                for i in range(T):
                    x = ST[j, i]
                    m_new[i] = x if x > m_new[i] else m_new[i]
            for i in range(T):
                # nothing visible yet in row i (m' = -inf): shift by 0, P = exp(-inf) = 0
                if m_new[i] == -np.inf:
                    m_new[i] = 0.0
            # l <- c l, O <- c O with c = exp(m - m') (0 while nothing was visible)
            for i in range(T):
                if m_new[i] != m[i]:
                    c = math.exp(m[i] - m_new[i]) if m[i] != -np.inf else 0.0
                    lsum[i] = c * lsum[i]
                    for r in range(p):
                        acc[i, r] *= c
                    m[i] = m_new[i]
            # P^T = exp(S^T - m');  l' = c l + rowsum P
            _exp_rowsum(ST, m_new, lsum)
            # O' = c O + P V_c
            gemm(ST, True, Vh[bi, hi, k0:k1], False, acc, 1.0)
        # out = O / l  (l = 0: a fully masked row, output 0)
        for i in range(T):
            inv = 1.0 / lsum[i] if lsum[i] > 0 else 0.0
            for r in range(p):
                O[bi, q0 + i, hi, r] = acc[i, r] * inv


def flash_attention(q, k, v, *, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
                    block_q: int = 64, block_k: int = 64) -> np.ndarray:
    """Tiled online-softmax attention: ``materialized(q, k, v, scale=, causal=, alignment=)`` without the scores.

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)`` -> ``(b l h p)``; ``block_q`` queries by ``block_k`` keys per tile.
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    block_q = check_int(block_q, "block_q", minimum=1)
    block_k = check_int(block_k, "block_k", minimum=1)
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v)
    # the causal diagonal keeps j <= i + offset
    offset = (s - l) if alignment == "bottom_right" else 0
    if b * l * h * p and s and n:
        # keys and values per head, (b s h n) -> (b h s n): each head's rows contiguous (strided head rows
        # thrash the L1 cache in the GEMMs; they are re-read by every query block)
        K, V = np.empty((b, h, s, n), dtype=dtype), np.empty((b, h, s, p), dtype=dtype)
        _to_heads(np.ascontiguousarray(k, dtype=dtype), K)
        _to_heads(np.ascontiguousarray(v, dtype=dtype), V)
        O = np.empty((b, l, h, p), dtype=dtype)  # every row is written
        _flash(np.ascontiguousarray(q, dtype=dtype), K, V, dtype.type(scale), alignment is not None, offset, block_q,
               block_k, O)
        return O
    if b * l * h * p and s and not n:
        # n = 0: every score is 0, the softmax is uniform over the kept keys
        return materialized(q, k, v, scale=scale, causal=alignment is not None, alignment=alignment)
    return np.zeros((b, l, h, p), dtype=dtype)


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        flash_attention(x, x, x, causal=True, block_q=2, block_k=2)
        flash_attention(x, x, x, block_q=2, block_k=2)
