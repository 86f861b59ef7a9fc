r"""Numba kernels for linear attention, the chunked delta rule and the feature maps.

Each public function validates exactly like its NumPy reference (same arguments, same errors) and
returns the same result up to rounding (property-tested against the reference for L = 0, 1, odd,
not a multiple of the chunk, long).  The output dtype is the reference's (float32 only when every input is
float32).  The recurrent kernel's scalar accumulators are float64 (Numba types a ``0.0`` accumulator as
float64).  The chunked kernels do their matrix products through BLAS (:func:`refimpl._blas.gemm`, on the
strided rows of one head in place, one thread per call) and so accumulate in the working dtype, in
BLAS's order; the derived componentwise bounds of the tests count the longest chain of roundings
(``n + L + 3`` for linear attention, ``n + T + 4`` per chunk for the delta rule), which holds for any
summation order, so they apply unchanged; the normalizer is still a float64 scalar.

* :func:`causal_recurrent` -- ``refimpl.attention.linear.reference.causal_recurrent``.
* :func:`causal_chunked` -- ``refimpl.attention.linear.reference.causal_chunked``.
* :func:`delta_chunked` -- ``refimpl.attention.delta.reference.delta_chunked`` (gated or not; WY form with an
  explicit forward substitution per chunk).
* :func:`elu_plus_one`, :func:`dpfp`, :func:`trig_features`, :func:`positive_features`,
  :func:`hyperbolic_features` -- ``refimpl.attention.features.reference`` (no stabilizer).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.attention.delta import reference as _delta
from refimpl.attention.features import reference as _features
from refimpl.attention.linear import reference as _linear

__all__ = ["causal_recurrent", "causal_chunked", "delta_chunked", "elu_plus_one", "dpfp", "trig_features",
           "positive_features", "hyperbolic_features"]


@numba.njit(cache=True, parallel=True)
def _lin_recurrent(phi_q, phi_k, v, S, u, normalize, eps, eps_add):
    b, l, h, n = phi_k.shape
    e = v.shape[3]
    o = np.zeros((b, l, h, e), dtype=phi_q.dtype)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        for t in range(l):
            # S_t = S_{t-1} + v_t phi(k_t)^T ; u_t = u_{t-1} + phi(k_t)
            for i in range(e):
                for j in range(n):
                    S[bi, hi, i, j] += v[bi, t, hi, i] * phi_k[bi, t, hi, j]
            for j in range(n):
                u[bi, hi, j] += phi_k[bi, t, hi, j]
            den = 0.0
            if normalize:
                for j in range(n):
                    den += u[bi, hi, j] * phi_q[bi, t, hi, j]
                if eps_add:
                    den += eps
                else:
                    den = max(den, eps)
            # o_t = S_t phi(q_t) [/ den]
            for i in range(e):
                acc = 0.0
                for j in range(n):
                    acc += S[bi, hi, i, j] * phi_q[bi, t, hi, j]
                o[bi, t, hi, i] = acc / den if normalize else acc
    return o


@numba.njit(cache=True, parallel=True)
def _lin_chunked(phi_q, phi_k, v, S, u, chunk, normalize, eps, eps_add):
    # Per (batch, head), chunk by chunk: the chunk's rows of one head, Q = phi_q[bi, s:s+T, hi, :] (T n) etc.,
    # copied to contiguous blocks, every product one BLAS GEMM (refimpl._blas.gemm); the state is kept
    # transposed, St = S^T (n e). Accumulation is in the working dtype (BLAS);
    # the componentwise bound of the tests (depth n + L + 3) holds for any summation order.
    b, l, h, n = phi_k.shape
    e = v.shape[3]
    dt = phi_q.dtype
    o = np.empty((b, l, h, e), dtype=dt)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        Af = np.empty(chunk * chunk, dtype=dt)
        # contiguous copies of the chunk's rows (rows of one head are h*n apart: multiplied in place they
        # thrash the L1 cache's sets)
        Qf, Kf, Vf, Of = (np.empty(chunk * n, dtype=dt), np.empty(chunk * n, dtype=dt), np.empty(chunk * e, dtype=dt),
                          np.empty(chunk * e, dtype=dt))
        St = np.ascontiguousarray(S[bi, hi].T)
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            Q, K = Qf[:T * n].reshape((T, n)), Kf[:T * n].reshape((T, n))
            V, O = Vf[:T * e].reshape((T, e)), Of[:T * e].reshape((T, e))
            for i in range(T):
                Q[i, :] = phi_q[bi, s + i, hi, :]
                K[i, :] = phi_k[bi, s + i, hi, :]
                V[i, :] = v[bi, s + i, hi, :]
            A = Af[:T * T].reshape((T, T))
            # A = Q K^T, then the causal mask: A_ij = phi(q_i).phi(k_j) for j <= i, 0 above the diagonal
            gemm(Q, False, K, True, A, 0.0)
            for i in range(T):
                for j in range(i + 1, T):
                    A[i, j] = 0.0
            # num = Q S_s^T + A V   (num_i = S_s phi(q_i) + sum_{j<=i} A_ij v_j), written into o
            gemm(Q, False, St, False, O, 0.0)
            gemm(A, False, V, False, O, 1.0)
            if normalize:
                for i in range(T):
                    # den_i = u_s . phi(q_i) + sum_{j<=i} A_ij  (+ eps, or max(., eps)); a float64 scalar
                    den = 0.0
                    for c in range(n):
                        den += u[bi, hi, c] * Q[i, c]
                    for j in range(i + 1):
                        den += A[i, j]
                    if eps_add:
                        den += eps
                    else:
                        den = max(den, eps)
                    for p in range(e):
                        O[i, p] = O[i, p] / den
            for i in range(T):
                o[bi, s + i, hi, :] = O[i, :]
            # S_{s+T} = S_s + V^T K (as St += K^T V) ; u_{s+T} = u_s + sum_j phi(k_j)
            gemm(K, True, V, False, St, 1.0)
            for i in range(T):
                for c in range(n):
                    u[bi, hi, c] += K[i, c]
        S[bi, hi] = St.T
    return o


def _lin_args(phi_q, phi_k, v, S0, u0, layout, eps, eps_mode):
    phi_q, phi_k, v, S0, u0, eps, d = _linear.validate_linear(phi_q, phi_k, v, S0, u0, layout=layout, eps=eps,
                                                             eps_mode=eps_mode)
    dt = phi_q.dtype
    S = np.zeros((d["b"], d["h"], d["e"], d["n"]), dtype=dt) if S0 is None else np.ascontiguousarray(S0).copy()
    u = np.zeros((d["b"], d["h"], d["n"]), dtype=dt) if u0 is None else u0.copy()
    c = np.ascontiguousarray
    return c(phi_q), c(phi_k), c(v), S, u, dt.type(eps), eps_mode == "add"


def _state(o, S, u, layout, return_state):
    if not return_state:
        return o
    return o, (S if layout == "vk" else np.swapaxes(S, -1, -2).copy()), u


def causal_recurrent(phi_q, phi_k, v, *, normalize: bool = True, eps: float = 0.0, eps_mode: str = "add",
                     S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    """Numba version of :func:`refimpl.attention.linear.reference.causal_recurrent` (same signature)."""
    pq, pk, vv, S, u, eps, add = _lin_args(phi_q, phi_k, v, S0, u0, layout, eps, eps_mode)
    o = _lin_recurrent(pq, pk, vv, S, u, bool(normalize), eps, add)
    return _state(o, S, u, layout, return_state)


def causal_chunked(phi_q, phi_k, v, *, chunk: int = 64, normalize: bool = True, eps: float = 0.0,
                   eps_mode: str = "add", S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    """Numba version of :func:`refimpl.attention.linear.reference.causal_chunked` (same signature)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    pq, pk, vv, S, u, eps, add = _lin_args(phi_q, phi_k, v, S0, u0, layout, eps, eps_mode)
    o = _lin_chunked(pq, pk, vv, S, u, chunk, bool(normalize), eps, add)
    return _state(o, S, u, layout, return_state)


@numba.njit(cache=True, parallel=True)
def _delta_chunked(q, k, v, beta, log_alpha, S, chunk):
    # Per (batch, head), chunk by chunk, in the WY form of refimpl.attention.delta.reference (module docstring).
    # Chunk rows Q, K (T n), V (T e) and the output rows are strided views that BLAS reads/writes in place
    # (refimpl._blas.gemm); the state is kept transposed, St = S^T (n e).
    b, l, h, n = k.shape
    e = v.shape[3]
    dt = q.dtype
    o = np.empty((b, l, h, e), dtype=dt)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        St = np.ascontiguousarray(S[bi, hi].T)
        Wf, Uf, SWf = np.empty(chunk * n, dtype=dt), np.empty(chunk * e, dtype=dt), np.empty(chunk * e, dtype=dt)
        KKf, QKf, Mf = np.empty(chunk * chunk, dtype=dt), np.empty(chunk * chunk, dtype=dt), np.empty(chunk * chunk, dtype=dt)
        g = np.empty(chunk, dtype=dt)
        gam = np.empty(chunk, dtype=dt)
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            Q, K, V, O = q[bi, s:s + T, hi, :], k[bi, s:s + T, hi, :], v[bi, s:s + T, hi, :], o[bi, s:s + T, hi, :]
            W, U, SW = Wf[:T * n].reshape((T, n)), Uf[:T * e].reshape((T, e)), SWf[:T * e].reshape((T, e))
            KK, QK, M = KKf[:T * T].reshape((T, T)), QKf[:T * T].reshape((T, T)), Mf[:T * T].reshape((T, T))
            # g_t = sum_{i<=t} log alpha_i ; gamma_t = exp(g_t)
            acc = 0.0
            for t in range(T):
                acc += log_alpha[bi, s + t, hi]
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
                for p in range(e):
                    U[t, p] = V[t, p]
                for i in range(t):
                    a = KK[t, i]
                    r = np.exp(g[t] - g[i]) * a
                    for c in range(n):
                        W[t, c] -= a * W[i, c]
                    for p in range(e):
                        U[t, p] -= r * U[i, p]
                for c in range(n):
                    W[t, c] *= bt
                for p in range(e):
                    U[t, p] *= bt
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
                for p in range(e):
                    O[t, p] *= gam[t]
            gemm(M, False, U, False, O, 1.0)
            # S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(gamma_{T-1}/gamma) K, transposed:
            # St <- gamma_{T-1} (St - K^T SW) + K^T diag(exp(g_{T-1} - g_i)) U
            for i in range(T):
                r = np.exp(g[T - 1] - g[i])
                for p in range(e):
                    U[i, p] *= r
            gemm(K, True, SW, False, St, -1.0)
            for c in range(n):
                for p in range(e):
                    St[c, p] = -gam[T - 1] * St[c, p]
            gemm(K, True, U, False, St, 1.0)
        S[bi, hi] = St.T
    return o


def delta_chunked(q, k, v, beta, *, alpha=None, S0=None, chunk: int = 64, key_norm=None, query_norm=None,
                  return_state: bool = False):
    """Numba version of :func:`refimpl.attention.delta.reference.delta_chunked` (same signature)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    q, k, v, beta, alpha, S0, d = _delta.validate_delta(q, k, v, beta, alpha, S0, key_norm=key_norm,
                                                        query_norm=query_norm)
    dt = q.dtype
    S = np.zeros((d["b"], d["h"], d["e"], d["n"]), dtype=dt) if S0 is None else np.ascontiguousarray(S0).copy()
    log_alpha = np.zeros(beta.shape, dtype=dt) if alpha is None else np.log(alpha)
    c = np.ascontiguousarray
    o = _delta_chunked(c(q), c(k), c(v), c(beta), c(log_alpha), S, chunk)
    return (o, S) if return_state else o


@numba.njit(cache=True, parallel=True)
def _elu1(x):
    out = np.empty_like(x)
    for r in prange(x.shape[0]):
        for c in range(x.shape[1]):
            a = x[r, c]
            out[r, c] = a + 1.0 if a >= 0 else np.exp(a)
    return out


@numba.njit(cache=True, parallel=True)
def _dpfp(x, nu):
    rows, d = x.shape
    out = np.empty((rows, 2 * d * nu), dtype=x.dtype)
    for r in prange(rows):
        rr = np.empty(2 * d, dtype=x.dtype)
        for c in range(d):
            rr[c] = max(x[r, c], 0.0)
            rr[d + c] = max(-x[r, c], 0.0)
        for j in range(1, nu + 1):
            for i in range(2 * d):
                # phi_{(j-1)2d + i} = r_i r_{(i-j) mod 2d}
                out[r, (j - 1) * 2 * d + i] = rr[i] * rr[(i - j) % (2 * d)]
    return out


@numba.njit(cache=True, parallel=True)
def _random_feats(x, W, kind):
    # kind 0: trig, 1: positive, 2: hyperbolic
    rows, d = x.shape
    m = W.shape[0]
    width = m if kind == 1 else 2 * m
    out = np.empty((rows, width), dtype=x.dtype)
    for r in prange(rows):
        sq = 0.0
        for c in range(d):
            sq += x[r, c] * x[r, c]
        for i in range(m):
            wx = 0.0
            for c in range(d):
                wx += W[i, c] * x[r, c]
            if kind == 0:
                hh = np.exp(0.5 * sq) / np.sqrt(m)
                out[r, i] = hh * np.sin(wx)
                out[r, m + i] = hh * np.cos(wx)
            elif kind == 1:
                out[r, i] = np.exp(wx - 0.5 * sq) / np.sqrt(m)
            else:
                out[r, i] = np.exp(wx - 0.5 * sq) / np.sqrt(2.0 * m)
                out[r, m + i] = np.exp(-wx - 0.5 * sq) / np.sqrt(2.0 * m)
    return out


def _rows(x):
    x = np.ascontiguousarray(x)
    return x.reshape(-1, x.shape[-1]) if x.shape[-1] > 0 else x.reshape(-1, 0)


def elu_plus_one(x):
    """Numba version of :func:`refimpl.attention.features.reference.elu_plus_one`."""
    x = _features._x(x)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (... d), got shape {x.shape}")
    return _elu1(_rows(x)).reshape(x.shape)


def dpfp(x, nu: int = 1):
    """Numba version of :func:`refimpl.attention.features.reference.dpfp`."""
    x = _features._x(x)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x: expected shape (..., d) with d >= 1, got {x.shape}")
    d = x.shape[-1]
    nu = check_int(nu, "nu", minimum=1)
    if nu > 2 * d - 1:
        raise ValueError(f"nu: expected 1 <= nu <= 2d - 1 = {2 * d - 1} for d = {d}, got {nu}")
    return _dpfp(_rows(x), nu).reshape(x.shape[:-1] + (2 * d * nu,))


def _rf(x, W, kind):
    x, W = _features._check_W(x, W)
    out = _random_feats(_rows(x), np.ascontiguousarray(W), kind)
    return out.reshape(x.shape[:-1] + (out.shape[1],))


def trig_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.trig_features`."""
    return _rf(x, W, 0)


def positive_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.positive_features` (no stabilizer)."""
    return _rf(x, W, 1)


def hyperbolic_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.hyperbolic_features` (no stabilizer)."""
    return _rf(x, W, 2)


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        z = np.zeros((1, 2, 1, 2), dtype=dt)
        for norm in (True, False):
            for mode in ("add", "clamp"):
                causal_recurrent(z, z, z, normalize=norm, eps=1.0, eps_mode=mode)
                causal_chunked(z, z, z, chunk=1, normalize=norm, eps=1.0, eps_mode=mode)
        delta_chunked(z, z, z, np.zeros((1, 2, 1), dtype=dt), chunk=1)
        x = np.zeros((2, 2), dtype=dt)
        elu_plus_one(x)
        dpfp(x, 1)
        W = np.zeros((2, 2), dtype=dt)
        trig_features(x, W)
        positive_features(x, W)
        hyperbolic_features(x, W)
