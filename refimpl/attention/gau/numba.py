r"""The chunked GAU / FLASH kernel (Numba, CPU): tiles of relu^2 attention plus the carried linear state.

Computes what :func:`refimpl.attention.gau.reference.chunked` (FLASH) and
:func:`refimpl.attention.gau.reference.quadratic` (GAU: one chunk of length ``L``, no linear part) compute,
without forming an ``(l l)`` or even a ``(c c)`` matrix:

* the projections ``x [W_u W_v W_z]`` (one product) and ``(U * AV) W_o`` are one large GEMM each through NumPy's
  BLAS (with its own threads: the same products per 64-row block inside a parallel loop were large enough for
  OpenBLAS to start threads of its own, and ran 3x slower than the NumPy reference); ``silu``, the scale/offset
  rows and the gate are one parallel pass each;
* the linear state of chunk ``g``, ``S_g = Kl_g^T V_g (n p)``, is one GEMM per chunk (parallel over
  batch x chunks); its exclusive prefix sum over chunks (causal, times ``1/c``) or its total (non-causal,
  times ``1/L``) is ``G n p`` additions;
* then, parallel over batch x chunks x query tiles: ``acc = Ql_t S_prev`` (GEMM), and for every key tile of
  the chunk up to the causal limit ``T = Qq_t Kq_k^T`` (GEMM), ``T <- relu(T / c + b)^2`` (masked ``j > i``),
  ``acc += T V_k`` (GEMM).

The GEMMs run through :func:`refimpl._blas.gemm` on row slices in place (one thread per call inside the
parallel loop).  float32 stays float32, float64 float64.
Shapes: ``x (b l d)``, ``W_u, W_v (d p)``, ``W_z (d n)``, ``gamma, beta (4 n)`` (FLASH) or ``(2 n)`` (GAU),
``W_o (p d)`` -> ``o (b l d)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_bool
from refimpl.attention.gau.reference import _flash_inputs, chunked, flash_scales, gau_scale, quadratic, validate_gau

__all__ = ["gau_numba", "mixed_chunk_numba"]

TILE = 128  # query and key tile (rows) of the quadratic part


@nb.njit(parallel=True, cache=True)
def _chunk_states(Kl, V, c, S):
    # S[b, g] = Kl_g^T V_g  (n p) for every chunk g
    b, l, n = Kl.shape
    G = S.shape[1]
    for idx in nb.prange(b * G):
        bi = idx // G
        g = idx % G
        g0 = g * c
        g1 = min(g0 + c, l)
        gemm(Kl[bi, g0:g1], True, V[bi, g0:g1], False, S[bi, g], 0.0)


@nb.njit(parallel=True, cache=True)
def _mixed_chunk(Qq, Kq, Ql, V, S_prev, per_chunk_state, has_lin, c, tile, causal, sq, bias, has_bias, U, AV):
    # AV[b, t] = U[b, t] * (sum_{j in chunk(t), (j <= t)} relu(sq qq_t . kq_j + b_{j-t})^2 v_j  +  ql_t S_prev[b, g(t)])
    b, l, n = Qq.shape
    p = V.shape[2]
    dt = Qq.dtype
    G = (l + c - 1) // c
    nt = (c + tile - 1) // tile
    for idx in nb.prange(b * G * nt):
        bi = idx // (G * nt)
        rest = idx % (G * nt)
        g = rest // nt
        ti = rest % nt
        g0 = g * c
        g1 = min(g0 + c, l)
        q0 = g0 + ti * tile
        if q0 >= g1:
            continue
        q1 = min(q0 + tile, g1)
        T = q1 - q0
        acc = AV[bi, q0:q1]
        # the linear part: acc = Ql_t S_prev (already scaled)
        if has_lin:
            gs = g if per_chunk_state else 0
            gemm(Ql[bi, q0:q1], False, S_prev[bi, gs], False, acc, 0.0)
        else:
            acc[:, :] = 0.0
        kend = min(g1, q1) if causal else g1
        buf = np.empty((T, tile), dtype=dt)
        for k0 in range(g0, kend, tile):
            k1 = min(k0 + tile, kend)
            nk = k1 - k0
            A = buf[:, :nk]
            # S = Qq_t Kq_k^T
            gemm(Qq[bi, q0:q1], False, Kq[bi, k0:k1], True, A, 0.0)
            # A = relu(S / c + b_{j-i})^2, causal: 0 for j > i
            for ii in range(T):
                i = q0 + ii
                for jj in range(nk):
                    j = k0 + jj
                    s = A[ii, jj] * sq
                    if has_bias:
                        s = s + bias[j - i + c - 1]
                    if (causal and j > i) or s <= 0:
                        A[ii, jj] = 0.0
                    else:
                        A[ii, jj] = s * s
            # acc += A V_k
            gemm(A, False, V[bi, k0:k1], False, acc, 1.0)
        # AV_t <- U_t * AV_t (the gate); O = AV W_o is one large GEMM after the loop (_core)
        for ii in range(T):
            for a in range(p):
                acc[ii, a] *= U[bi, q0 + ii, a]


@nb.njit(parallel=True, cache=True)
def _project(Y, p, gamma, beta, block, U, V, R):
    # Y = X [W_u W_v W_z] (one GEMM, computed before the call); per block of rows: U = phi(Y[:, :p]), V = phi(Y[:, p:2p]),
    # Z = phi(Y[:, 2p:]), R[r] = gamma_r * Z + beta_r;  phi(y) = y sigmoid(y): y / (1 + e^{-y}) for y >= 0,
    # y e^{y} / (1 + e^{y}) for y < 0.  X (m d), Y (m w), U, V (m p), R (r m n): 2-D row-major views
    m = Y.shape[0]
    w = Y.shape[1]
    rows = gamma.shape[0]
    nblocks = (m + block - 1) // block
    for ib in nb.prange(nblocks):
        r0 = ib * block
        r1 = min(r0 + block, m)
        for t in range(r0, r1):
            for a in range(w):
                y = Y[t, a]
                if y >= 0:
                    f = y / (1.0 + math.exp(-y))
                else:
                    e = math.exp(y)
                    f = y * (e / (1.0 + e))
                if a < p:
                    U[t, a] = f
                elif a < 2 * p:
                    V[t, a - p] = f
                else:
                    c = a - 2 * p
                    for r in range(rows):
                        R[r, t, c] = gamma[r, c] * f + beta[r, c]


def _projections(x, W_u, W_v, W_z, gamma, beta):
    # U, V (b l p) and the scale/offset rows R (r b l n) of Z, from x (b l d): one parallel pass
    b, l, d = x.shape
    p, n = W_u.shape[1], W_z.shape[1]
    dt = x.dtype
    m = b * l
    Wc = np.ascontiguousarray(np.concatenate([W_u, W_v, W_z], axis=1))
    U, V = np.empty((b, l, p), dtype=dt), np.empty((b, l, p), dtype=dt)
    R = np.empty((gamma.shape[0], b, l, n), dtype=dt)
    if m:
        # Y = X [W_u W_v W_z]: one GEMM through NumPy's BLAS (its own threads), then one parallel pass
        Y = np.ascontiguousarray(x).reshape(m, d) @ Wc
        _project(Y, p, np.ascontiguousarray(gamma), np.ascontiguousarray(beta), 64, U.reshape(m, p), V.reshape(m, p),
                 R.reshape(R.shape[0], m, n))
    return U, V, R


def _core(U, V, Qq, Kq, Ql, Kl, W_o, c, causal, sq, sl, bias, dt):
    b, l, p = V.shape
    n = Qq.shape[2]
    d = W_o.shape[1]
    AV = np.empty((b, l, p), dtype=dt)
    O = np.zeros((b, l, d), dtype=dt)
    if b * l * p == 0 or d == 0:
        return O
    c_ = max(min(c, l), 1) if Ql is None else c
    has_lin = Ql is not None
    G = (l + c_ - 1) // c_
    if has_lin:
        S = np.empty((b, G, n, p), dtype=dt)
        _chunk_states(np.ascontiguousarray(Kl), V, c_, S)
        if causal:
            # S_prev[g] = (1/c) sum_{h<g} S_h  (exclusive prefix over chunks)
            S_prev = np.zeros_like(S)
            np.cumsum(S[:, :-1], axis=1, out=S_prev[:, 1:])
            S_prev *= dt.type(sl)
        else:
            # S_all = (1/L) sum_h S_h, the same for every chunk
            S_prev = (S.sum(axis=1, keepdims=True) * dt.type(sl)).astype(dt, copy=False)
        Qlc = np.ascontiguousarray(Ql)
    else:
        S_prev = np.zeros((b, 1, n, p), dtype=dt)
        Qlc = np.zeros((1, 1, 1), dtype=dt)  # not read without the linear part
    has_bias = bias is not None
    bias_arr = bias if has_bias else np.zeros(1, dtype=dt)
    # GAU (no linear part): the bias is indexed by j - i + L - 1, the kernel's j - i + c - 1 with c = L
    _mixed_chunk(np.ascontiguousarray(Qq), np.ascontiguousarray(Kq), Qlc, V, np.ascontiguousarray(S_prev),
                 bool(causal and has_lin), has_lin, c_, TILE, bool(causal), dt.type(sq),
                 np.ascontiguousarray(bias_arr, dtype=dt), has_bias, U, AV)
    # O = (U * AV) W_o: one (b l, p) x (p, d) product through NumPy's BLAS, with its own threads (a GEMM per row
    # tile inside the parallel loop made each call large enough for OpenBLAS to start threads of its own)
    np.matmul(AV.reshape(b * l, p), np.ascontiguousarray(W_o), out=O.reshape(b * l, d))
    return O


def mixed_chunk_numba(x, W_u, W_v, W_z, gamma, beta, W_o, *, chunk: int, causal: bool = False,
                      bias=None) -> np.ndarray:
    """FLASH's mixed-chunk attention (the ``"chunked"`` view) as the Numba kernel; arguments as
    :func:`refimpl.attention.gau.reference.chunked`."""
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt, c, causal = _flash_inputs(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias)
    if n == 0 or d == 0:
        # no query/key dimension: every dot product is 0 (the scores are the bias alone); no model width: an
        # empty output.  No GEMM of width 0
        return chunked(x, W_u, W_v, W_z, gamma, beta, W_o, chunk=c, causal=causal, bias=bias)
    sq, sl = flash_scales(l, c, causal)
    U, V, (Qq, Kq, Ql, Kl) = _projections(x, W_u, W_v, W_z, gamma, beta)
    return _core(U, V, Qq, Kq, Ql, Kl, W_o, c, causal, sq, sl, bias, dt)


def gau_numba(x, W_u, W_v, W_z, gamma, beta, W_o, *, causal: bool = False, scale: Optional[float] = None,
              bias=None) -> np.ndarray:
    """The gated attention unit (the ``"quadratic"`` view) as the Numba kernel (one chunk of length ``L``, tiled);
    arguments as :func:`refimpl.attention.gau.reference.quadratic`."""
    causal = check_bool(causal, "causal")
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt = validate_gau(
        x, W_u, W_v, W_z, gamma, beta, W_o, bias, rows=2, bias_len=lambda l: max(2 * l - 1, 0),
        bias_src="w = l, the length of x")
    if n == 0 or d == 0:
        # no query/key dimension: every dot product is 0 (the scores are the bias alone); no width: empty
        return quadratic(x, W_u, W_v, W_z, gamma, beta, W_o, causal=causal, scale=scale, bias=bias)
    sigma = gau_scale(scale, l)
    U, V, (Q, K) = _projections(x, W_u, W_v, W_z, gamma, beta)
    return _core(U, V, Q, K, None, None, W_o, l, causal, sigma, 0.0, bias, dt)


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((1, 3, 2)).astype(dt)
        W, Wo = rng.standard_normal((2, 2)).astype(dt), rng.standard_normal((2, 2)).astype(dt)
        g4, g2 = np.ones((4, 2), dtype=dt), np.ones((2, 2), dtype=dt)
        for causal in (True, False):
            mixed_chunk_numba(x, W, W, W, g4, g4, Wo, chunk=2, causal=causal, bias=np.ones(3, dtype=dt))
            mixed_chunk_numba(x, W, W, W, g4, g4, Wo, chunk=2, causal=causal)
            gau_numba(x, W, W, W, g2, g2, Wo, causal=causal)
