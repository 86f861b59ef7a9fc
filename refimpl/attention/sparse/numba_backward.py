r"""The block-sparse attention backward pass as a Numba CPU kernel: the ``("block_sparse", "numba")`` pair of
:func:`refimpl.attention.sparse.sparse_attention_vjp`.

Computes what :func:`refimpl.attention.sparse.backward.block_sparse_vjp` (the literal NumPy adjoints) computes, from
the pattern's block layout only (the CSR arrays of :class:`refimpl.attention.sparse.reference.BlockLayout`, and
their transpose: for each key block the query blocks whose tile with it holds a kept pair).  Three parallel passes,
as :mod:`refimpl.attention.softmax.numba_backward`:

1. **forward** (per batch, head, query block): the online softmax over the block's kept tiles, saving ``O``, the
   row log-sum-exp ``L`` (0 stored for a row with no kept key, whose entries are all ``-inf``) and
   ``D = rowsum(dO o O)``;
2. **dQ** (per query block, over its tiles): ``S = scale Q_u K_w^T`` (``-inf`` outside the in-block mask),
   ``P = exp(S - L_u)``, ``dP = dO_u V_w^T``, ``dS = P o (dP - D_u)``, ``dQ_u += scale dS K_w``;
3. **dK, dV** (per key block, over the query blocks of the transposed layout): the same ``P`` and ``dS``,
   ``dV_w += P^T dO_u``, ``dK_w += scale dS^T Q_u``.

Products through :func:`refimpl._blas.gemm`; float32 exponentials by the polynomial ``exp`` of
:mod:`refimpl._fastmath`, float64 by libm.  Shapes: ``q, k (b l h n)``, ``v, do (b l h p)`` -> ``{"q", "k", "v"}``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import result_dtype
from refimpl.attention.softmax.numba_backward import _dscores, _exp_shifted
from refimpl.attention.sparse.backward import _cotangent_o
from refimpl.attention.sparse.reference import _block, sliding_window_pattern, validate

__all__ = ["block_sparse_attention_vjp"]


@nb.njit(cache=True)
def _tile(Qu, Kw, scale, masks, mi, S):
    # S = scale Q_u K_w^T; entries outside the tile's in-block mask (mi >= 0) -inf
    gemm(Qu, False, Kw, True, S, 0.0)
    T, nk = S.shape
    for x in range(T):
        for y in range(nk):
            S[x, y] *= scale
    if mi >= 0:
        for x in range(T):
            for y in range(nk):
                if not masks[mi, x, y]:
                    S[x, y] = -np.inf


@nb.njit(parallel=True, cache=True)
def _forward(Q, K, V, dO, scale, B, hp, indptr, indices, mask_index, masks, f32, O, Lsh, D):
    b, h, l, n = Q.shape
    p = V.shape[3]
    dt = Q.dtype
    nb_ = (l + B - 1) // B
    for idx in nb.prange(b * h * nb_):
        bh = idx // nb_
        u = idx % nb_
        bi = bh // h
        hi = bh % h
        hh = hi if hp == h else 0
        q0 = u * B
        q1 = min(q0 + B, l)
        T = q1 - q0
        m = np.full(T, -np.inf, dtype=dt)
        lsum = np.zeros(T, dtype=dt)
        acc = np.zeros((T, p), dtype=dt)
        shift = np.zeros(T, dtype=dt)
        for t in range(indptr[hh * nb_ + u], indptr[hh * nb_ + u + 1]):
            k0 = indices[t] * B
            k1 = min(k0 + B, l)
            S = np.empty((T, k1 - k0), dtype=dt)
            _tile(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, masks, mask_index[t], S)
            for x in range(T):
                # m' = max(m, rowmax S);  l, O rescaled by exp(m - m') (0 while nothing was kept)
                mx = m[x]
                for y in range(k1 - k0):
                    mx = S[x, y] if S[x, y] > mx else mx
                shift[x] = mx if mx != -np.inf else 0.0
                if mx != m[x]:
                    c = math.exp(m[x] - mx) if m[x] != -np.inf else 0.0
                    lsum[x] *= c
                    for r in range(p):
                        acc[x, r] *= c
                    m[x] = mx
            _exp_shifted(S, shift, f32)
            for x in range(T):
                for y in range(k1 - k0):
                    lsum[x] += S[x, y]
            gemm(S, False, V[bi, hi, k0:k1], False, acc, 1.0)
        for x in range(T):
            # O = diag(l)^{-1} O;  L = m + log l (no kept key: O = 0, L stored as 0);  D = rowsum(dO o O)
            inv = 1.0 / lsum[x] if lsum[x] > 0 else 0.0
            dsum = 0.0
            for r in range(p):
                o = acc[x, r] * inv
                O[bi, hi, q0 + x, r] = o
                dsum += dO[bi, hi, q0 + x, r] * o
            Lsh[bi, hi, q0 + x] = m[x] + math.log(lsum[x]) if lsum[x] > 0 else 0.0
            D[bi, hi, q0 + x] = dsum


@nb.njit(parallel=True, cache=True)
def _dq(Q, K, V, dO, Lsh, D, scale, B, hp, indptr, indices, mask_index, masks, f32, dQ):
    b, h, l, n = Q.shape
    dt = Q.dtype
    nb_ = (l + B - 1) // B
    for idx in nb.prange(b * h * nb_):
        bh = idx // nb_
        u = idx % nb_
        bi = bh // h
        hi = bh % h
        hh = hi if hp == h else 0
        q0 = u * B
        q1 = min(q0 + B, l)
        T = q1 - q0
        for t in range(indptr[hh * nb_ + u], indptr[hh * nb_ + u + 1]):
            k0 = indices[t] * B
            k1 = min(k0 + B, l)
            P = np.empty((T, k1 - k0), dtype=dt)
            dP = np.empty((T, k1 - k0), dtype=dt)
            # P = exp(S - L_u);  dP = dO_u V_w^T;  scale dS = scale P o (dP - D_u);  dQ_u += scale dS K_w
            _tile(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, masks, mask_index[t], P)
            _exp_shifted(P, Lsh[bi, hi, q0:q1], f32)
            gemm(dO[bi, hi, q0:q1], False, V[bi, hi, k0:k1], True, dP, 0.0)
            _dscores(P, dP, D[bi, hi, q0:q1], scale)
            gemm(dP, False, K[bi, hi, k0:k1], False, dQ[bi, hi, q0:q1], 1.0)


@nb.njit(parallel=True, cache=True)
def _dkdv(Q, K, V, dO, Lsh, D, scale, B, hp, tindptr, tindices, tmask_index, masks, f32, dK, dV):
    b, h, l, n = Q.shape
    dt = Q.dtype
    nb_ = (l + B - 1) // B
    for idx in nb.prange(b * h * nb_):
        bh = idx // nb_
        w = idx % nb_
        bi = bh // h
        hi = bh % h
        hh = hi if hp == h else 0
        k0 = w * B
        k1 = min(k0 + B, l)
        for t in range(tindptr[hh * nb_ + w], tindptr[hh * nb_ + w + 1]):
            q0 = tindices[t] * B
            q1 = min(q0 + B, l)
            T = q1 - q0
            P = np.empty((T, k1 - k0), dtype=dt)
            dP = np.empty((T, k1 - k0), dtype=dt)
            _tile(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, masks, tmask_index[t], P)
            _exp_shifted(P, Lsh[bi, hi, q0:q1], f32)
            # dV_w += P^T dO_u
            gemm(P, True, dO[bi, hi, q0:q1], False, dV[bi, hi, k0:k1], 1.0)
            gemm(dO[bi, hi, q0:q1], False, V[bi, hi, k0:k1], True, dP, 0.0)
            _dscores(P, dP, D[bi, hi, q0:q1], scale)
            # dK_w += scale dS^T Q_u
            gemm(dP, True, Q[bi, hi, q0:q1], False, dK[bi, hi, k0:k1], 1.0)


def _transpose(layout):
    """The layout's tiles grouped by key block: ``(tindptr, tindices, tmask_index)`` with, for pattern head ``hh``
    and key block ``w``, the query blocks ``u`` (increasing) whose tile ``(u, w)`` is kept and its mask index."""
    nb_, hp = layout.n_blocks, layout.h
    cols = [[] for _ in range(hp * nb_)]
    for hh in range(hp):
        for u in range(nb_):
            for t in range(layout.indptr[hh * nb_ + u], layout.indptr[hh * nb_ + u + 1]):
                cols[hh * nb_ + int(layout.indices[t])].append((u, int(layout.mask_index[t])))
    tindptr = np.zeros(hp * nb_ + 1, dtype=np.int64)
    tindptr[1:] = np.cumsum([len(c) for c in cols])
    flat = [x for c in cols for x in c]
    tind = np.asarray([u for u, _ in flat], dtype=np.int64)
    tmask = np.asarray([mi for _, mi in flat], dtype=np.int64)
    return tindptr, tind, tmask


def block_sparse_attention_vjp(q, k, v, pattern, *, do, scale: Optional[float] = None,
                               block: Optional[int] = None) -> dict:
    r"""The VJP of :func:`refimpl.attention.sparse.numba.block_sparse_attention` (the three passes of the module
    docstring).  ``q, k (b l h n)``, ``v (b l h p)``, ``pattern``, ``do (b l h p)`` (the cotangent of ``o``),
    ``scale``, ``block`` as the forward; returns ``{"q": dq, "k": dk, "v": dv}``."""
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    B = _block(block, pattern)
    do = _cotangent_o(do, b, l, h, p)
    dtype = result_dtype(q, k, v, do)
    heads = lambda x: np.ascontiguousarray(np.moveaxis(x.astype(dtype, copy=False), 2, 1))  # noqa: E731
    Q, K, V, dO = heads(q), heads(k), heads(v), heads(do)
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    if b * h * l:
        layout = pattern.block_layout(B)
        masks = layout.masks if layout.masks.shape[0] else np.zeros((1, B, B), dtype=bool)
        tindptr, tind, tmask = _transpose(layout)
        O = np.empty((b, h, l, p), dtype=dtype)
        Lsh = np.empty((b, h, l), dtype=dtype)
        D = np.empty((b, h, l), dtype=dtype)
        f32 = bool(dtype == np.float32)
        sc = dtype.type(scale)
        _forward(Q, K, V, dO, sc, B, layout.h, layout.indptr, layout.indices, layout.mask_index, masks, f32, O, Lsh,
                 D)
        _dq(Q, K, V, dO, Lsh, D, sc, B, layout.h, layout.indptr, layout.indices, layout.mask_index, masks, f32, dQ)
        _dkdv(Q, K, V, dO, Lsh, D, sc, B, layout.h, tindptr, tind, tmask, masks, f32, dK, dV)
    seq = lambda x: np.ascontiguousarray(np.moveaxis(x, 1, 2))  # noqa: E731
    return {"q": seq(dQ), "k": seq(dK), "v": seq(dV)}


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.ones((1, 5, 1, 2), dtype=dt)
        block_sparse_attention_vjp(x, x, x, sliding_window_pattern(5, (1, 0), causal=True), do=x, block=2)
