r"""Numba kernel for the chunked (gated) delta rule: the ``"numba"`` backend of
:func:`refimpl.attention.delta.delta_rule` (view ``chunked``).

:func:`delta_chunked` validates exactly like :func:`refimpl.attention.delta.reference.chunked` (the same helper,
the same errors) and returns the same result up to rounding (property-tested against the reference and the mpmath
oracle).  It runs the WY form of the reference's module docstring with an explicit forward substitution per chunk;
the matrix products go through BLAS (:func:`refimpl._blas.gemm`, on the strided rows of one head in place, one
thread per call) and so accumulate in the working dtype, in BLAS's order; the derived bounds of the tests count
the longest chain of roundings (``n + c + 4`` per chunk), which holds for any summation order.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.attention.delta.reference import validate_delta

__all__ = ["delta_chunked"]


@numba.njit(cache=True, parallel=True)
def _delta_chunked(q, k, v, beta, log_decay, S, chunk):
    # Per (batch, head), chunk by chunk, in the WY form of refimpl.attention.delta.reference (module docstring).
    # Chunk rows Q, K (T n), V (T p) and the output rows are strided views that BLAS reads/writes in place
    # (refimpl._blas.gemm); the state is kept transposed, St = S^T (n p).
    b, l, h, n = k.shape
    p = v.shape[3]
    dt = q.dtype
    o = np.empty((b, l, h, p), dtype=dt)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        St = np.ascontiguousarray(S[bi, hi].T)
        Wf, Uf, SWf = np.empty(chunk * n, dtype=dt), np.empty(chunk * p, dtype=dt), np.empty(chunk * p, dtype=dt)
        KKf, QKf, Mf = np.empty(chunk * chunk, dtype=dt), np.empty(chunk * chunk, dtype=dt), np.empty(chunk * chunk, dtype=dt)
        g = np.empty(chunk, dtype=dt)
        gam = np.empty(chunk, dtype=dt)
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            Q, K, V, O = q[bi, s:s + T, hi, :], k[bi, s:s + T, hi, :], v[bi, s:s + T, hi, :], o[bi, s:s + T, hi, :]
            W, U, SW = Wf[:T * n].reshape((T, n)), Uf[:T * p].reshape((T, p)), SWf[:T * p].reshape((T, p))
            KK, QK, M = KKf[:T * T].reshape((T, T)), QKf[:T * T].reshape((T, T)), Mf[:T * T].reshape((T, T))
            # g_t = sum_{i<=t} log decay_i ; gamma_t = exp(g_t)
            acc = 0.0
            for t in range(T):
                acc += log_decay[bi, s + t, hi]
                g[t] = acc
                gam[t] = np.exp(g[t])
            # KK = K K^T
            gemm(K, False, K, True, KK, 0.0)
            # forward substitution (one unit-lower-triangular solve each, row by row):
            #   w_t = beta_t (k_t - sum_{i<t} (k_i.k_t) w_i)
            #   u_t = beta_t (v_t - sum_{i<t} exp(g_t - g_i) (k_i.k_t) u_i)
            for t in range(T):
                bt = beta[bi, s + t, hi]
                for c in range(n):
                    W[t, c] = K[t, c]
                for col in range(p):
                    U[t, col] = V[t, col]
                for i in range(t):
                    a = KK[t, i]
                    r = np.exp(g[t] - g[i]) * a
                    for c in range(n):
                        W[t, c] -= a * W[i, c]
                    for col in range(p):
                        U[t, col] -= r * U[i, col]
                for c in range(n):
                    W[t, c] *= bt
                for col in range(p):
                    U[t, col] *= bt
            # SW = W S_0^T
            gemm(W, False, St, False, SW, 0.0)
            # QK = tril(Q K^T); M = Gamma o QK (Gamma_ti = exp(g_t - g_i), i <= t)
            gemm(Q, False, K, True, QK, 0.0)
            for t in range(T):
                for i in range(t + 1):
                    M[t, i] = np.exp(g[t] - g[i]) * QK[t, i]
                for i in range(t + 1, T):
                    QK[t, i] = 0.0
                    M[t, i] = 0.0
            # O = diag(gamma) (Q S_0^T - QK SW) + M U
            gemm(Q, False, St, False, O, 0.0)
            for t in range(T):
                for i in range(T):
                    QK[t, i] = -QK[t, i]
            gemm(QK, False, SW, False, O, 1.0)
            for t in range(T):
                for col in range(p):
                    O[t, col] *= gam[t]
            gemm(M, False, U, False, O, 1.0)
            # S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(gamma_{T-1}/gamma) K, transposed:
            # St <- gamma_{T-1} (St - K^T SW) + K^T diag(exp(g_{T-1} - g_i)) U
            for i in range(T):
                r = np.exp(g[T - 1] - g[i])
                for col in range(p):
                    U[i, col] *= r
            gemm(K, True, SW, False, St, -1.0)
            for c in range(n):
                for col in range(p):
                    St[c, col] = -gam[T - 1] * St[c, col]
            gemm(K, True, U, False, St, 1.0)
        S[bi, hi] = St.T
    return o


def delta_chunked(q, k, v, beta, *, decay=None, initial_state=None, key_norm=None, query_norm=None,
                  scale: float = 1.0, return_final_state: bool = False, chunk: int = 64):
    """Numba version of :func:`refimpl.attention.delta.reference.chunked` (same signature)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    q, k, v, beta, decay, S, return_final_state, _ = validate_delta(
        q, k, v, beta, decay=decay, initial_state=initial_state, key_norm=key_norm, query_norm=query_norm,
        scale=scale, return_final_state=return_final_state)
    # g_t accumulates log alpha_t (0 for the plain rule)
    log_decay = np.zeros(beta.shape, dtype=q.dtype) if decay is None else np.log(decay)
    c = np.ascontiguousarray
    S = c(S)
    o = _delta_chunked(c(q), c(k), c(v), c(beta), c(log_decay), S, chunk)
    return (o, S) if return_final_state else o


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        z = np.zeros((1, 2, 1, 2), dtype=dt)
        delta_chunked(z, z, z, np.zeros((1, 2, 1), dtype=dt), chunk=1)
