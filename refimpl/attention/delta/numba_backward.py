r"""Numba kernel for the backward pass of the chunked (gated) delta rule: the ``("chunked", "numba")`` pair of
:func:`refimpl.attention.delta.delta_rule_vjp`.

:func:`delta_chunked_vjp` validates exactly like :func:`refimpl.attention.delta.backward.chunked_vjp` (the same
helpers, :func:`~refimpl.attention.delta.backward.prepare_vjp` and
:func:`~refimpl.attention.delta.backward.finish_vjp`, hence the same errors and the same gradients of the
normalizations) and runs the same adjoint of the WY form chunk by chunk (the equations in
:func:`refimpl.attention.delta.backward.chunk_vjp`'s docstring), one ``(batch, head)`` at a time (serial: no
``prange``, whose compilation cost minutes): a forward
pass over the chunks keeps each chunk's entering state, then **the reverse state-gradient scan over the chunks**
(the adjoint of the chunk recurrence is a reverse scan) carries ``dS`` backwards.  The two unit-lower-triangular
solves of the forward and the two transposed (upper) solves of the backward are explicit substitutions; the matrix
products go through BLAS (:func:`refimpl._blas.gemm`), so they accumulate in the working dtype in BLAS's order.
float32 and float64.
"""
from __future__ import annotations

import numba
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.attention.delta.backward import finish_vjp, prepare_vjp

__all__ = ["delta_chunked_vjp"]


@numba.njit(cache=True)
def _mm(A, ta, B, tb):
    # op(A) @ op(B) into a new C-contiguous array (BLAS through refimpl._blas.gemm)
    m = A.shape[1] if ta else A.shape[0]
    c = B.shape[0] if tb else B.shape[1]
    C = np.zeros((m, c), dtype=A.dtype)
    gemm(A, ta, B, tb, C, 0.0)
    return C


@numba.njit(cache=True)
def _rows(x, r):
    # diag(r) x
    y = np.empty(x.shape, dtype=x.dtype)
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            y[t, j] = r[t] * x[t, j]
    return y


@numba.njit(cache=True)
def _wy(K, V, bet, g):
    # KK = K K^T; Gamma_ti = exp(g_t - g_i) (i <= t, else 0);
    # forward substitution: w_t = beta_t (k_t - sum_{i<t} KK_ti w_i), u_t = beta_t (v_t - sum_{i<t} Gamma_ti KK_ti u_i)
    T, n = K.shape
    p = V.shape[1]
    KK = _mm(K, False, K, True)
    Gamma = np.zeros((T, T), dtype=K.dtype)
    for t in range(T):
        for i in range(t + 1):
            Gamma[t, i] = np.exp(g[t] - g[i])
    W = np.empty((T, n), dtype=K.dtype)
    U = np.empty((T, p), dtype=K.dtype)
    for t in range(T):
        for c in range(n):
            W[t, c] = K[t, c]
        for c in range(p):
            U[t, c] = V[t, c]
        for i in range(t):
            a = KK[t, i]
            r = Gamma[t, i] * a
            for c in range(n):
                W[t, c] -= a * W[i, c]
            for c in range(p):
                U[t, c] -= r * U[i, c]
        for c in range(n):
            W[t, c] *= bet[t]
        for c in range(p):
            U[t, c] *= bet[t]
    return KK, Gamma, W, U


@numba.njit(cache=True)
def _chunk_state(K, V, bet, g, S0):
    # S_T = gamma_{T-1} (S_0 - (W S_0^T)^T K) + (diag(rho) U)^T K,  rho_i = exp(g_{T-1} - g_i)
    T = K.shape[0]
    KK, Gamma, W, U = _wy(K, V, bet, g)
    X = _mm(W, False, S0, True)
    rho = np.exp(g[T - 1] - g)
    return np.exp(g[T - 1]) * (S0 - _mm(X, True, K, False)) + _mm(_rows(U, rho), True, K, False)


@numba.njit(cache=True)
def _upper_solve(A, R):
    # A^T dB = R with A unit lower triangular: dB_t = R_t - sum_{i>t} A_it dB_i, t = T-1 .. 0
    T, m = R.shape
    dB = np.empty((T, m), dtype=R.dtype)
    for t in range(T - 1, -1, -1):
        for c in range(m):
            dB[t, c] = R[t, c]
        for i in range(t + 1, T):
            a = A[i, t]
            for c in range(m):
                dB[t, c] -= a * dB[i, c]
    return dB


@numba.njit(cache=True)
def _chunk_vjp(Q, K, V, bet, g, S0, dO, dS_T):
    # the adjoint of one chunk of the WY form: refimpl.attention.delta.backward.chunk_vjp, line for line
    T = K.shape[0]
    dt = K.dtype
    KK, Gamma, W, U = _wy(K, V, bet, g)
    lower = np.zeros((T, T), dtype=dt)
    strict = np.zeros((T, T), dtype=dt)
    for t in range(T):
        for i in range(t + 1):
            lower[t, i] = 1.0
            if i < t:
                strict[t, i] = 1.0
    gamma = np.exp(g)
    rho = np.exp(g[T - 1] - g)
    X = _mm(W, False, S0, True)
    QK = _mm(Q, False, K, True) * lower
    Y = _mm(Q, False, S0, True) - _mm(QK, False, X, False)
    # O = diag(gamma) (Q S_0^T - QK X) + (Gamma o QK) U
    gdO = _rows(dO, gamma)
    dgamma = np.sum(dO * Y, axis=1)
    dQ = _mm(gdO, False, S0, False)
    dS0 = _mm(gdO, True, Q, False)
    dX = -_mm(QK, True, gdO, False)
    dOU = _mm(dO, False, U, True) * lower
    dQK = -_mm(gdO, False, X, True) * lower + Gamma * dOU
    dGamma = QK * dOU
    dU = _mm(Gamma * QK, True, dO, False)
    # S_T = gamma_{T-1} (S_0 - X^T K) + (diag(rho) U)^T K
    dgamma[T - 1] += np.sum(dS_T * (S0 - _mm(X, True, K, False)))
    dS0 += gamma[T - 1] * dS_T
    dX -= gamma[T - 1] * _mm(K, False, dS_T, True)
    dK = -gamma[T - 1] * _mm(X, False, dS_T, False) + _mm(_rows(U, rho), False, dS_T, False)
    dUr = _mm(K, False, dS_T, True)
    dU += _rows(dUr, rho)
    drho = np.sum(dUr * U, axis=1)
    # X = W S_0^T
    dW = _mm(dX, False, S0, False)
    dS0 += _mm(dX, True, W, False)
    # QK = tril(Q K^T)
    dQ += _mm(dQK, False, K, False)
    dK += _mm(dQK, True, Q, False)
    # U = A_u^{-1} diag(beta) V:  dB_u = A_u^{-T} dU,  dA_u = -tril(dB_u U^T, -1); A_u strict = beta_t Gamma_ti KK_ti
    A_u = np.eye(T, dtype=dt) + _rows(Gamma * KK * strict, bet)
    dB_u = _upper_solve(A_u, dU)
    dA_u = -_mm(dB_u, False, U, True) * strict
    dbeta = np.sum(dB_u * V, axis=1) + np.sum(dA_u * Gamma * KK, axis=1)
    dV = _rows(dB_u, bet)
    dGamma += _rows(dA_u * KK, bet)
    dKK = _rows(dA_u * Gamma, bet)
    # W = A_w^{-1} diag(beta) K:  dB_w = A_w^{-T} dW,  dA_w = -tril(dB_w W^T, -1); A_w strict = beta_t KK_ti
    A_w = np.eye(T, dtype=dt) + _rows(KK * strict, bet)
    dB_w = _upper_solve(A_w, dW)
    dA_w = -_mm(dB_w, False, W, True) * strict
    dbeta += np.sum(dB_w * K, axis=1) + np.sum(dA_w * KK, axis=1)
    dK += _rows(dB_w, bet)
    dKK += _rows(dA_w, bet)
    # KK = K K^T
    dK += _mm(dKK + dKK.T, False, K, False)
    # Gamma_ti = exp(g_t - g_i), gamma_t = exp(g_t), rho_i = exp(g_{T-1} - g_i)
    dGG = dGamma * Gamma
    dg = np.sum(dGG, axis=1) - np.sum(dGG, axis=0) + dgamma * gamma - drho * rho
    dg[T - 1] += np.sum(drho * rho)
    return dQ, dK, dV, dbeta, dg, dS0


@numba.njit(cache=True)
def c_(x):
    # a C-contiguous copy of a chunk view
    return np.ascontiguousarray(x)


@numba.njit(cache=True)
def _head_vjp(q, k, v, beta, log_decay, S0, do, dSL, chunk, bi, hi, dq, dk, dv, dbeta, dlog, dS0):
    # one (batch, head): writes its rows of the gradients
    l = k.shape[1]
    nc = (l + chunk - 1) // chunk
    # forward over the chunks: S_enter[c] = the state entering chunk c
    S_enter = np.empty((max(nc, 1), S0.shape[2], S0.shape[3]), dtype=q.dtype)
    S = S0[bi, hi].copy()
    for c in range(nc):
        s = c * chunk
        T = min(chunk, l - s)
        S_enter[c] = S
        g = np.cumsum(log_decay[bi, s:s + T, hi])
        S = _chunk_state(c_(k[bi, s:s + T, hi, :]), c_(v[bi, s:s + T, hi, :]), c_(beta[bi, s:s + T, hi]), g, S)
    # the reverse state-gradient scan over the chunks
    dS = dSL[bi, hi].copy()
    for c in range(nc - 1, -1, -1):
        s = c * chunk
        T = min(chunk, l - s)
        g = np.cumsum(log_decay[bi, s:s + T, hi])
        # every operand C-contiguous (one compiled specialization of the helpers per dtype)
        dQ, dK, dV, db, dg, dS = _chunk_vjp(c_(q[bi, s:s + T, hi, :]), c_(k[bi, s:s + T, hi, :]),
                                            c_(v[bi, s:s + T, hi, :]), c_(beta[bi, s:s + T, hi]), g,
                                            S_enter[c].copy(), c_(do[bi, s:s + T, hi, :]), dS)
        dq[bi, s:s + T, hi, :] = dQ
        dk[bi, s:s + T, hi, :] = dK
        dv[bi, s:s + T, hi, :] = dV
        # dlog alpha_i = sum_{t>=i} dg_t (g_t = sum_{i<=t} log alpha_i)
        acc = 0.0
        for t in range(T - 1, -1, -1):
            dbeta[bi, s + t, hi] = db[t]
            acc += dg[t]
            dlog[bi, s + t, hi] = acc
    dS0[bi, hi] = dS


@numba.njit(cache=True)
def _delta_chunked_vjp(q, k, v, beta, log_decay, S0, do, dSL, chunk):
    # (batch, head) by (batch, head), serially: a prange region over this body took minutes to compile
    # (Numba's parfor passes), for a backward whose (b h) lanes are few in the tests
    b, h = k.shape[0], k.shape[2]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    dbeta, dlog = np.zeros_like(beta), np.zeros_like(beta)
    dS0 = np.empty_like(S0)
    for bh in range(b * h):
        _head_vjp(q, k, v, beta, log_decay, S0, do, dSL, chunk, bh // h, bh % h, dq, dk, dv, dbeta, dlog, dS0)
    return dq, dk, dv, dbeta, dlog, dS0


def delta_chunked_vjp(q, k, v, beta, *, do, d_final_state=None, decay=None, initial_state=None, key_norm=None,
                      query_norm=None, scale: float = 1.0, chunk: int = 64):
    """Numba version of :func:`refimpl.attention.delta.backward.chunked_vjp` (same signature, same result up to
    rounding)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    prep, (q, k, v, beta, decay, S0, do, dSL) = prepare_vjp(
        q, k, v, beta, do, d_final_state, decay, initial_state, key_norm, query_norm, scale)
    # g_t accumulates log alpha_t (0 for the plain rule)
    log_decay = np.zeros(beta.shape, dtype=q.dtype) if decay is None else np.log(decay)
    c = np.ascontiguousarray
    dq, dk, dv, dbeta, dlog, dS0 = _delta_chunked_vjp(c(q), c(k), c(v), c(beta), c(log_decay), c(S0), c(do), c(dSL),
                                                      chunk)
    # log alpha = log(decay): ddecay = dlog alpha / decay
    ddecay = None if decay is None else dlog / decay
    return finish_vjp(prep, dq, dk, dv, dbeta, ddecay, dS0)


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        z = np.full((1, 2, 1, 2), 0.5, dtype=dt)
        bz = np.full((1, 2, 1), 0.5, dtype=dt)
        delta_chunked_vjp(z, z, z, bz, do=z, decay=bz, chunk=1)
