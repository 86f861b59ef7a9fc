r"""FlashAttention's backward pass as a Numba CPU kernel: the ``("tiled", "numba")`` pair of
:func:`refimpl.attention.softmax.scaled_dot_product_attention_vjp`.

Computes what :func:`refimpl.attention.softmax.backward.tiled_vjp` (the literal NumPy adjoints) computes -- the VJP of
:func:`refimpl.attention.softmax.reference.materialized` with ``mask=None, bias=None`` (``scale``, ``causal`` with
``alignment`` ``top_left``/``bottom_right``, fully masked rows contributing nothing) -- never forming an ``(l s)``
array.  Three parallel passes over tiles, each a loop over the other axis' tiles up to the causal limit:

1. **forward** (parallel over ``batch x heads x query tiles``): the online softmax of the forward kernel, saving
   ``O`` and the row log-sum-exp ``L = m + log l`` (``-inf`` on a fully masked row), and ``D = rowsum(dO o O)``;
2. **dQ** (parallel over query tiles): per key tile ``S = scale Q_i K_j^T``, ``P = exp(S - L_i)`` (recomputed from
   ``L``), ``dP = dO_i V_j^T``, ``dS = P o (dP - D_i)``, ``dQ_i += scale dS K_j``;
3. **dK, dV** (parallel over key tiles): per query tile the same ``P`` and ``dS``, ``dV_j += P^T dO_i``,
   ``dK_j += scale dS^T Q_i``.

FlashAttention-2 (Dao 2023, Algorithm 2) runs passes 2 and 3 as one loop with an atomic add into ``dQ``; on the CPU
the two passes each own what they write (no atomics, no races) at the price of computing ``P`` and ``dS`` twice.
Every product is a GEMM through :func:`refimpl._blas.gemm` on contiguous per-head rows; the exponentials of a float32
run use the polynomial ``exp`` of :mod:`refimpl._fastmath` (relative error <= ``EXP_REL_ERR`` = ``gamma_4``),
float64 runs libm's ``exp``.  float32 inputs stay float32 (every float input float32), else float64.
Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``do (b l h p)`` -> ``{"q", "k", "v"}`` of those shapes.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._fastmath import exp_parts, f32_from_bits
from refimpl._numba import warmup
from refimpl._validate import check_int, result_dtype
from refimpl.attention.softmax.backward import _cotangent_o
from refimpl.attention.softmax.reference import attention_scale, causal_alignment, validate_qkv

__all__ = ["flash_attention_vjp"]


@nb.njit(cache=True)
def _exp_shifted(S, L, f32):
    # S_xy <- exp(S_xy - L_x) for a (T nk) tile, L already 0 on fully masked rows (whose entries are all -inf)
    T, nk = S.shape
    if f32:
        for x in range(T):
            for y in range(nk):
                p, bb = exp_parts(S[x, y] - L[x])
                S[x, y] = p * f32_from_bits(bb)
    else:
        for x in range(T):
            for y in range(nk):
                S[x, y] = math.exp(S[x, y] - L[x])


@nb.njit(cache=True)
def _scores(Qi, Kj, scale, causal, q0, k0, offset, S):
    # S = scale Q_i K_j^T, masked -inf where key k0 + y > query q0 + x + offset (causal)
    gemm(Qi, False, Kj, True, S, 0.0)
    T, nk = S.shape
    for x in range(T):
        for y in range(nk):
            S[x, y] *= scale
    if causal:
        for x in range(T):
            for y in range(max(q0 + x + offset + 1 - k0, 0), nk):
                S[x, y] = -np.inf


@nb.njit(cache=True)
def _dscores(P, dP, D, scale):
    # dP <- scale P o (dP - D):  the scaled dS of the tile
    T, nk = P.shape
    for x in range(T):
        for y in range(nk):
            dP[x, y] = scale * (P[x, y] * (dP[x, y] - D[x]))


@nb.njit(parallel=True, cache=True)
def _forward(Q, K, V, dO, scale, causal, offset, block_q, block_k, f32, O, Lsh, D):
    # pass 1: per query tile the online softmax -> O (b h l p); Lsh = L (0 on fully masked rows); D = rowsum(dO o O)
    b, h, l, n = Q.shape
    s = K.shape[2]
    p = V.shape[3]
    dt = Q.dtype
    nqb = (l + block_q - 1) // block_q
    for idx in nb.prange(b * h * nqb):
        bh = idx // nqb
        bi = bh // h
        hi = bh % h
        q0 = (idx % nqb) * block_q
        q1 = min(q0 + block_q, l)
        T = q1 - q0
        m = np.full(T, -np.inf, dtype=dt)
        lsum = np.zeros(T, dtype=dt)
        acc = np.zeros((T, p), dtype=dt)
        shift = np.zeros(T, dtype=dt)
        kend = min(s, q1 + offset) if causal else s
        for k0 in range(0, max(kend, 0), block_k):
            k1 = min(k0 + block_k, kend)
            S = np.empty((T, k1 - k0), dtype=dt)
            _scores(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, causal, q0, k0, offset, S)
            for x in range(T):
                # m' = max(m, rowmax S);  c = exp(m - m') (0 while nothing was kept; nothing kept yet: shift 0)
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
            # P~ = exp(S - m');  l <- c l + rowsum P~;  O <- c O + P~ V_j
            _exp_shifted(S, shift, f32)
            for x in range(T):
                for y in range(k1 - k0):
                    lsum[x] += S[x, y]
            gemm(S, False, V[bi, hi, k0:k1], False, acc, 1.0)
        for x in range(T):
            # O = diag(l)^{-1} O;  L = m + log l (a fully masked row: O = 0, L = -inf, stored as the shift 0)
            inv = 1.0 / lsum[x] if lsum[x] > 0 else 0.0
            dsum = 0.0
            for r in range(p):
                o = acc[x, r] * inv
                O[bi, hi, q0 + x, r] = o
                dsum += dO[bi, hi, q0 + x, r] * o
            Lsh[bi, hi, q0 + x] = m[x] + math.log(lsum[x]) if lsum[x] > 0 else 0.0
            # D = rowsum(dO o O)
            D[bi, hi, q0 + x] = dsum


@nb.njit(parallel=True, cache=True)
def _dq(Q, K, V, dO, Lsh, D, scale, causal, offset, block_q, block_k, f32, dQ):
    # pass 2: dQ_i = sum_j scale dS_ij K_j over the key tiles up to the causal limit
    b, h, l, n = Q.shape
    s = K.shape[2]
    p = V.shape[3]
    dt = Q.dtype
    nqb = (l + block_q - 1) // block_q
    for idx in nb.prange(b * h * nqb):
        bh = idx // nqb
        bi = bh // h
        hi = bh % h
        q0 = (idx % nqb) * block_q
        q1 = min(q0 + block_q, l)
        T = q1 - q0
        kend = min(s, q1 + offset) if causal else s
        acc = dQ[bi, hi, q0:q1]
        for k0 in range(0, max(kend, 0), block_k):
            k1 = min(k0 + block_k, kend)
            nk = k1 - k0
            P = np.empty((T, nk), dtype=dt)
            dP = np.empty((T, nk), dtype=dt)
            # S_ij = scale Q_i K_j^T;  P_ij = exp(S_ij - L_i)
            _scores(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, causal, q0, k0, offset, P)
            _exp_shifted(P, Lsh[bi, hi, q0:q1], f32)
            # dP_ij = dO_i V_j^T;  scale dS_ij = scale P_ij o (dP_ij - D_i)
            gemm(dO[bi, hi, q0:q1], False, V[bi, hi, k0:k1], True, dP, 0.0)
            _dscores(P, dP, D[bi, hi, q0:q1], scale)
            # dQ_i += scale dS_ij K_j
            gemm(dP, False, K[bi, hi, k0:k1], False, acc, 1.0)


@nb.njit(parallel=True, cache=True)
def _dkdv(Q, K, V, dO, Lsh, D, scale, causal, offset, block_q, block_k, f32, dK, dV):
    # pass 3: dV_j = sum_i P_ij^T dO_i, dK_j = sum_i scale dS_ij^T Q_i over the query tiles from the causal limit
    b, h, l, n = Q.shape
    s = K.shape[2]
    p = V.shape[3]
    dt = Q.dtype
    nkb = (s + block_k - 1) // block_k
    for idx in nb.prange(b * h * nkb):
        bh = idx // nkb
        bi = bh // h
        hi = bh % h
        k0 = (idx % nkb) * block_k
        k1 = min(k0 + block_k, s)
        nk = k1 - k0
        # the first query that keeps key k0: i >= k0 - offset (causal); from the start of its tile
        qs = (max(k0 - offset, 0) // block_q) * block_q if causal else 0
        for q0 in range(qs, l, block_q):
            q1 = min(q0 + block_q, l)
            T = q1 - q0
            P = np.empty((T, nk), dtype=dt)
            dP = np.empty((T, nk), dtype=dt)
            _scores(Q[bi, hi, q0:q1], K[bi, hi, k0:k1], scale, causal, q0, k0, offset, P)
            _exp_shifted(P, Lsh[bi, hi, q0:q1], f32)
            # dV_j += P_ij^T dO_i
            gemm(P, True, dO[bi, hi, q0:q1], False, dV[bi, hi, k0:k1], 1.0)
            gemm(dO[bi, hi, q0:q1], False, V[bi, hi, k0:k1], True, dP, 0.0)
            _dscores(P, dP, D[bi, hi, q0:q1], scale)
            # dK_j += scale dS_ij^T Q_i
            gemm(dP, True, Q[bi, hi, q0:q1], False, dK[bi, hi, k0:k1], 1.0)


def flash_attention_vjp(q, k, v, *, do, scale: Optional[float] = None, causal: bool = False,
                        alignment: Optional[str] = None, block_q: int = 64, block_k: int = 64) -> dict:
    r"""The VJP of :func:`refimpl.attention.softmax.numba.flash_attention` (FlashAttention's backward pass, three
    parallel tile passes: see the module docstring).

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``do (b l h p)`` (the cotangent of ``o``); ``scale``,
    ``causal``, ``alignment``, ``block_q``, ``block_k`` as the forward.  Returns ``{"q": dq, "k": dk, "v": dv}``.
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    block_q = check_int(block_q, "block_q", minimum=1)
    block_k = check_int(block_k, "block_k", minimum=1)
    do = _cotangent_o(do, b, l, h, p)
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v, do)
    # the causal diagonal keeps j <= i + offset
    offset = (s - l) if alignment == "bottom_right" else 0
    heads = lambda x: np.ascontiguousarray(np.moveaxis(x.astype(dtype, copy=False), 2, 1))  # noqa: E731 (b h . .)
    Q, K, V, dO = heads(q), heads(k), heads(v), heads(do)
    dQ = np.zeros((b, h, l, n), dtype=dtype)
    dK = np.zeros((b, h, s, n), dtype=dtype)
    dV = np.zeros((b, h, s, p), dtype=dtype)
    if b * h * l * s:
        O = np.empty((b, h, l, p), dtype=dtype)
        Lsh = np.empty((b, h, l), dtype=dtype)
        D = np.empty((b, h, l), dtype=dtype)
        f32 = bool(dtype == np.float32)
        causal_ = alignment is not None
        sc = dtype.type(scale)
        _forward(Q, K, V, dO, sc, causal_, offset, block_q, block_k, f32, O, Lsh, D)
        _dq(Q, K, V, dO, Lsh, D, sc, causal_, offset, block_q, block_k, f32, dQ)
        _dkdv(Q, K, V, dO, Lsh, D, sc, causal_, offset, block_q, block_k, f32, dK, dV)
    seq = lambda x: np.ascontiguousarray(np.moveaxis(x, 1, 2))  # noqa: E731  back to (b . h .)
    return {"q": seq(dQ), "k": seq(dK), "v": seq(dV)}


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        flash_attention_vjp(x, x, x, do=x, causal=True, block_q=2, block_k=2)
        flash_attention_vjp(x, x, x, do=x, block_q=2, block_k=2)
