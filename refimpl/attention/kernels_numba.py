r"""Numba kernels for linear attention, the chunked delta rule and the feature maps.

Each public function validates exactly like its NumPy reference (same arguments, same errors) and
returns the same result up to rounding (property-tested against the reference for L = 0, 1, odd,
not a multiple of the chunk, long).  The output dtype is the reference's (float32 only when every input is
float32); the scalar accumulators of the dot products and the normalizer are float64 in every case (Numba
types a ``0.0`` accumulator as float64), so a float32 run is at least as accurate as the float32 reference
and is checked against the same float32 bound.

* :func:`causal_recurrent` -- ``refimpl.attention.linear.causal_recurrent``.
* :func:`causal_chunked` -- ``refimpl.attention.linear.causal_chunked``.
* :func:`delta_chunked` -- ``refimpl.attention.delta.delta_chunked`` (gated or not; WY form with an
  explicit forward substitution per chunk).
* :func:`elu_plus_one`, :func:`dpfp`, :func:`trig_features`, :func:`positive_features`,
  :func:`hyperbolic_features` -- ``refimpl.attention.features`` (no stabilizer).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.attention import delta as _delta
from refimpl.attention import features as _features
from refimpl.attention import linear as _linear

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
    b, l, h, n = phi_k.shape
    e = v.shape[3]
    o = np.zeros((b, l, h, e), dtype=phi_q.dtype)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        A = np.zeros((chunk, chunk), dtype=phi_q.dtype)
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            # A_ij = phi(q_i).phi(k_j), j <= i
            for i in range(T):
                for j in range(i + 1):
                    acc = 0.0
                    for c in range(n):
                        acc += phi_q[bi, s + i, hi, c] * phi_k[bi, s + j, hi, c]
                    A[i, j] = acc
            for i in range(T):
                den = 0.0
                if normalize:
                    # den_i = u_s . phi(q_i) + sum_j A_ij
                    for c in range(n):
                        den += u[bi, hi, c] * phi_q[bi, s + i, hi, c]
                    for j in range(i + 1):
                        den += A[i, j]
                    if eps_add:
                        den += eps
                    else:
                        den = max(den, eps)
                for p in range(e):
                    # num_i = S_s phi(q_i) + sum_j A_ij v_j
                    acc = 0.0
                    for c in range(n):
                        acc += S[bi, hi, p, c] * phi_q[bi, s + i, hi, c]
                    for j in range(i + 1):
                        acc += A[i, j] * v[bi, s + j, hi, p]
                    o[bi, s + i, hi, p] = acc / den if normalize else acc
            # S_{s+T} = S_s + sum_j v_j phi(k_j)^T ; u_{s+T} = u_s + sum_j phi(k_j)
            for j in range(T):
                for p in range(e):
                    for c in range(n):
                        S[bi, hi, p, c] += v[bi, s + j, hi, p] * phi_k[bi, s + j, hi, c]
                for c in range(n):
                    u[bi, hi, c] += phi_k[bi, s + j, hi, c]
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
    """Numba version of :func:`refimpl.attention.linear.causal_recurrent` (same signature)."""
    pq, pk, vv, S, u, eps, add = _lin_args(phi_q, phi_k, v, S0, u0, layout, eps, eps_mode)
    o = _lin_recurrent(pq, pk, vv, S, u, bool(normalize), eps, add)
    return _state(o, S, u, layout, return_state)


def causal_chunked(phi_q, phi_k, v, *, chunk: int = 64, normalize: bool = True, eps: float = 0.0,
                   eps_mode: str = "add", S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    """Numba version of :func:`refimpl.attention.linear.causal_chunked` (same signature)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    pq, pk, vv, S, u, eps, add = _lin_args(phi_q, phi_k, v, S0, u0, layout, eps, eps_mode)
    o = _lin_chunked(pq, pk, vv, S, u, chunk, bool(normalize), eps, add)
    return _state(o, S, u, layout, return_state)


@numba.njit(cache=True, parallel=True)
def _delta_chunked(q, k, v, beta, log_alpha, S, chunk):
    b, l, h, n = k.shape
    e = v.shape[3]
    o = np.zeros((b, l, h, e), dtype=q.dtype)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        W = np.zeros((chunk, n), dtype=q.dtype)
        U = np.zeros((chunk, e), dtype=q.dtype)
        KK = np.zeros((chunk, chunk), dtype=q.dtype)
        g = np.zeros(chunk, dtype=q.dtype)
        SW = np.zeros((chunk, e), dtype=q.dtype)
        Gm = np.zeros((chunk, chunk), dtype=q.dtype)
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            # g_t = sum_{i<=t} log alpha_i
            acc = 0.0
            for t in range(T):
                acc += log_alpha[bi, s + t, hi]
                g[t] = acc
            # Gamma_ti = exp(g_t - g_i), i <= t (<= 1 for decays in (0, 1])
            for t in range(T):
                for i in range(t + 1):
                    Gm[t, i] = np.exp(g[t] - g[i])
            for t in range(T):
                for i in range(t):
                    dot = 0.0
                    for c in range(n):
                        dot += k[bi, s + i, hi, c] * k[bi, s + t, hi, c]
                    KK[t, i] = dot
            # forward substitution: w_t = beta_t (k_t - sum_{i<t} (k_i.k_t) w_i)
            #                       u_t = beta_t (v_t - sum_{i<t} exp(g_t - g_i) (k_i.k_t) u_i)
            for t in range(T):
                bt = beta[bi, s + t, hi]
                for c in range(n):
                    acc = k[bi, s + t, hi, c]
                    for i in range(t):
                        acc -= KK[t, i] * W[i, c]
                    W[t, c] = bt * acc
                for p in range(e):
                    acc = v[bi, s + t, hi, p]
                    for i in range(t):
                        acc -= Gm[t, i] * KK[t, i] * U[i, p]
                    U[t, p] = bt * acc
            # SW_i = S_0 w_i
            for i in range(T):
                for p in range(e):
                    acc = 0.0
                    for c in range(n):
                        acc += S[bi, hi, p, c] * W[i, c]
                    SW[i, p] = acc
            # o_t = gamma_t (S_0 q_t - sum_{i<=t} (k_i.q_t) S_0 w_i) + sum_{i<=t} exp(g_t - g_i) (k_i.q_t) u_i
            for t in range(T):
                gt = np.exp(g[t])
                for p in range(e):
                    acc0 = 0.0
                    for c in range(n):
                        acc0 += S[bi, hi, p, c] * q[bi, s + t, hi, c]
                    o[bi, s + t, hi, p] = gt * acc0
                for i in range(t + 1):
                    kq = 0.0
                    for c in range(n):
                        kq += k[bi, s + i, hi, c] * q[bi, s + t, hi, c]
                    r = Gm[t, i]
                    for p in range(e):
                        o[bi, s + t, hi, p] += r * kq * U[i, p] - gt * kq * SW[i, p]
            # S_T = gamma_{T-1} (S_0 - sum_i (S_0 w_i) k_i^T) + sum_i exp(g_{T-1} - g_i) u_i k_i^T
            gT = np.exp(g[T - 1])
            for p in range(e):
                for c in range(n):
                    acc = S[bi, hi, p, c]
                    acc2 = 0.0
                    for i in range(T):
                        acc -= SW[i, p] * k[bi, s + i, hi, c]
                        acc2 += Gm[T - 1, i] * U[i, p] * k[bi, s + i, hi, c]
                    S[bi, hi, p, c] = gT * acc + acc2
    return o


def delta_chunked(q, k, v, beta, *, alpha=None, S0=None, chunk: int = 64, key_norm=None, query_norm=None,
                  return_state: bool = False):
    """Numba version of :func:`refimpl.attention.delta.delta_chunked` (same signature)."""
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
    """Numba version of :func:`refimpl.attention.features.elu_plus_one`."""
    x = _features._x(x)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (... d), got shape {x.shape}")
    return _elu1(_rows(x)).reshape(x.shape)


def dpfp(x, nu: int = 1):
    """Numba version of :func:`refimpl.attention.features.dpfp`."""
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
    """Numba version of :func:`refimpl.attention.features.trig_features`."""
    return _rf(x, W, 0)


def positive_features(x, W):
    """Numba version of :func:`refimpl.attention.features.positive_features` (no stabilizer)."""
    return _rf(x, W, 1)


def hyperbolic_features(x, W):
    """Numba version of :func:`refimpl.attention.features.hyperbolic_features` (no stabilizer)."""
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
