r"""The block-sparse attention kernel (Numba CPU): one kernel for every pattern of :mod:`refimpl.attention.sparse`.

The ``("block_sparse", "numba")`` pair of :func:`refimpl.attention.sparse.sparse_attention`: computes what
:func:`refimpl.attention.sparse.reference.block_sparse` computes (and so what the materialized view computes), from
the pattern's block layout only: for each head and query block the sorted list of key blocks, each tile either full
or carrying its boolean in-block mask (the CSR arrays ``indptr, indices, mask_index, masks`` of
:class:`refimpl.attention.sparse.reference.BlockLayout`).

For each query block ``Q_u`` (``B`` rows) and each of its key blocks ``K_v`` with running row max ``m``, row sum
``l`` and unnormalized output ``O`` (FlashAttention's online softmax, as :mod:`refimpl.attention.softmax.numba`):

* ``S = scale Q_u K_v^T``  (entries outside the in-block mask ``-inf``)
* ``m' = max(m, rowmax S)``,  ``P = exp(S - m')``,  ``c = exp(m - m')``
* ``l' = c l + rowsum P``,  ``O' = c O + P V_v``;  at the end ``o = O / l`` (``l = 0``: no kept key, ``o = 0``).

Both products run through BLAS (:func:`refimpl._blas.gemm`, one thread per call) on the contiguous per-head rows
of ``k`` and ``v``; float32 exponentials use the polynomial ``exp`` of :mod:`refimpl._fastmath` (relative error
<= ``EXP_REL_ERR``), float64 libm's ``exp``.  Parallel over ``batch x heads x query blocks``; the work is
proportional to the number of tiles (a window of ``(left, 0)`` touches about ``left / B + 2`` key blocks per query
block).  Shapes: ``q, k (b l h n)``, ``v (b l h p)`` -> ``o (b l h p)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl.attention.softmax.numba import _exp_block_rowsum, _to_heads
from refimpl.attention.sparse.reference import BlockLayout, _block, sliding_window_pattern, validate

__all__ = ["block_sparse_attention"]


@nb.njit(parallel=True, cache=True)
def _block_sparse(Q, Kh, Vh, scale, B, hp, indptr, indices, mask_index, masks, O):
    # Q (b l h n); Kh (b h l n), Vh (b h l p) contiguous per head; O (b l h p).
    # hp: the pattern's heads (1: shared, else h). Tiles of (pattern head hh, query block u):
    # indptr[hh nqb + u] .. indptr[hh nqb + u + 1] of indices (key blocks) and mask_index (-1: full tile).
    # Scores kept transposed, S^T (keys x queries), as in the flash kernel: the statistics of the T queries are
    # updated together, and the products are plain GEMMs S^T = K_v (scale Q_u)^T, O += (S^T)^T V_v.
    b, l, h, n = Q.shape
    p = Vh.shape[3]
    dt = Q.dtype
    nqb = (l + B - 1) // B
    for idx in nb.prange(b * h * nqb):
        bh = idx // nqb
        u = idx % nqb
        bi = bh // h
        hi = bh % h
        hh = hi if hp == h else 0
        q0 = u * B
        q1 = min(q0 + B, l)
        T = q1 - q0
        out_row = (hh * nqb + u)
        t0 = indptr[out_row]
        t1 = indptr[out_row + 1]
        if t1 == t0:
            # no kept key in the whole block: o = 0
            for i in range(T):
                for r in range(p):
                    O[bi, q0 + i, hi, r] = 0.0
            continue
        # scale Q_u^T (n T)
        QT = np.empty((n, T), dtype=dt)
        for i in range(T):
            for c in range(n):
                QT[c, i] = Q[bi, q0 + i, hi, c] * scale
        m = np.full(T, -np.inf, dtype=dt)
        m_new = np.empty(T, dtype=dt)
        lsum = np.zeros(T, dtype=dt)
        acc = np.zeros((T, p), dtype=dt)
        Sf = np.empty(B * T, dtype=dt)
        bitsf = np.empty(B * T, dtype=np.int32)
        for t in range(t0, t1):
            v = indices[t]
            k0 = v * B
            k1 = min(k0 + B, l)
            nk = k1 - k0
            ST = Sf[:nk * T].reshape((nk, T))
            # S^T = K_v (scale Q_u)^T:  S_ij = scale q_i . k_j
            gemm(Kh[bi, hi, k0:k1], False, QT, False, ST, 0.0)
            mi = mask_index[t]
            if mi >= 0:
                # entries outside the in-block mask: -inf (masks[mi][i, j], i the query, j the key)
                for j in range(nk):
                    for i in range(T):
                        if not masks[mi, i, j]:
                            ST[j, i] = -np.inf
            # m' = max(m, rowmax S)
            for i in range(T):
                m_new[i] = m[i]
            for j in range(nk):
                for i in range(T):
                    m_new[i] = max(m_new[i], ST[j, i])
            for i in range(T):
                # nothing kept yet in row i (m' = -inf): shift by 0, P = exp(-inf) = 0
                if m_new[i] == -np.inf:
                    m_new[i] = 0.0
            # l <- c l, O <- c O with c = exp(m - m') (0 while nothing was kept)
            for i in range(T):
                c = math.exp(m[i] - m_new[i]) if m[i] != -np.inf else 0.0
                lsum[i] = c * lsum[i]
                if c != 1.0:
                    for r in range(p):
                        acc[i, r] *= c
                m[i] = m_new[i]
            # P^T = exp(S^T - m');  l' = c l + rowsum P
            _exp_block_rowsum(ST, m_new, bitsf[:nk * T].reshape((nk, T)), lsum)
            # O' = c O + P V_v
            gemm(ST, True, Vh[bi, hi, k0:k1], False, acc, 1.0)
        # o = O / l  (l = 0: no kept key, o = 0)
        for i in range(T):
            inv = 1.0 / lsum[i] if lsum[i] > 0 else 0.0
            for r in range(p):
                O[bi, q0 + i, hi, r] = acc[i, r] * inv


def block_sparse_attention(q, k, v, pattern, *, scale: Optional[float] = None, block: Optional[int] = None,
                           block_layout=None) -> np.ndarray:
    r"""Block-sparse online-softmax attention under ``pattern`` (the Numba kernel of the ``"block_sparse"`` view).

    ``q, k (b l h n)``, ``v (b l h p)`` -> ``o (b l h p)``; ``block``: the tile size (default: BigBird's block, else
    64); ``block_layout``: optionally ``pattern.block_layout(block)`` computed once by the caller (it must be this
    pattern's, for this block size), so a benchmark times the kernel and not the layout.
    """
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    B = _block(block, pattern)
    layout = block_layout
    if layout is None:
        layout = pattern.block_layout(B)
    elif not isinstance(layout, BlockLayout) or layout.block != B or not (layout.pattern is pattern
                                                                           or layout.pattern == pattern):
        raise ValueError(f"block_layout: expected pattern.block_layout({B}) (this pattern's, block {B}), got "
                         f"{type(layout).__name__} with block {getattr(layout, 'block', None)} of "
                         f"{getattr(layout, 'pattern', None)!r}")
    if b * l * h * p == 0:
        return np.zeros((b, l, h, p), dtype=dtype)
    K, V = np.empty((b, h, l, n), dtype=dtype), np.empty((b, h, l, p), dtype=dtype)
    _to_heads(np.ascontiguousarray(k, dtype=dtype), K)
    _to_heads(np.ascontiguousarray(v, dtype=dtype), V)
    O = np.empty((b, l, h, p), dtype=dtype)  # every row is written
    masks = layout.masks if layout.masks.shape[0] else np.zeros((1, B, B), dtype=bool)
    _block_sparse(np.ascontiguousarray(q, dtype=dtype), K, V, dtype.type(scale), B, pattern.h, layout.indptr,
                  layout.indices, layout.mask_index, masks, O)
    return O


@warmup
def _warm():
    pat = sliding_window_pattern(3, 1)
    for dt in (np.float32, np.float64):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        block_sparse_attention(x, x, x, pat, block=2)
