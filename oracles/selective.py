r"""Independent oracles for Mamba's selective scan (S6) and Mamba-2's SSD.

Nothing here imports :mod:`refimpl.ssm` (only the validation helpers are shared).  Every
function re-derives the option handling (bias, softplus with threshold 20, dt_limit, grouped
B/C, 2 Re, D, z gate, seq_idx) on its own, in float64 / complex128:

* :func:`s6_loop` / :func:`ssd_loop` -- the literal recurrence, one step at a time.
* :func:`s6_mpmath` / :func:`ssd_mpmath` -- the same loop in mpmath (50 digits), for tiny cases:
  the independent check of the float64 loops themselves.
* :func:`s6_dense` / :func:`ssd_dense` -- the time-varying operator materialized,
  ``y = M u + S h0`` with ``M[t, s] = sum_n C_t[n] Phi_n(t, s) B_bar_s[n]`` and the transition
  products ``Phi_n(t, s) = A_bar_{s+1} ... A_bar_t`` multiplied out factor by factor (no log
  space, no segment sums, no scan, no chunks).
* :func:`decayed_linear_attention` -- causal linear attention with a scalar decay per step,
  ``o_i = sum_{j<=i} (prod_{k=j+1}^{i} a_k) (q_i . k_j) v_j``, as one masked attention matrix:
  the other side of the SSD duality.
* :func:`s6_bound` / :func:`ssd_bound` -- the derived error bound of a candidate view in a given
  dtype (see :func:`s6_bound`).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from oracles.tolerance import Bound, componentwise_bound, unit_roundoff

__all__ = [
    "SOFTPLUS_THRESHOLD",
    "TRANSCENDENTAL_U",
    "effective_step",
    "s6_loop",
    "s6_mpmath",
    "s6_dense",
    "s6_bound",
    "s6_bounds",
    "ssd_effective_dt",
    "ssd_loop",
    "ssd_mpmath",
    "ssd_dense",
    "ssd_bound",
    "ssd_bounds",
    "ssd_as_s6",
    "decayed_linear_attention",
]

SOFTPLUS_THRESHOLD = 20.0
# Error of one libm / NumPy-SIMD transcendental (exp, expm1, log1p) in units of u: we assume
# at most 4 ulp = 8 u (NumPy's float32 SIMD exp/log are documented within a few ulp; libm
# within 1 ulp).
TRANSCENDENTAL_U = 8.0


# ---------------------------------------------------------------------------------------------
# shared scalar pieces, float64
# ---------------------------------------------------------------------------------------------
def _softplus64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    small = x <= SOFTPLUS_THRESHOLD
    out[small] = np.log1p(np.exp(x[small]))
    return out


def _silu64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        return z / (1.0 + np.exp(-z))


def effective_step(delta, bias=None, softplus: bool = False) -> np.ndarray:
    """``softplus(delta + bias)`` in float64; ``delta`` ``(b d l)``, ``bias`` ``(d,)``."""
    x = np.asarray(delta, dtype=np.float64)
    if bias is not None:
        x = x + np.asarray(bias, dtype=np.float64)[:, None]
    return _softplus64(x) if softplus else x


def _c(a):
    return None if a is None else np.asarray(a).astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _channel_matrix(X: np.ndarray, b: int, d: int, l: int) -> np.ndarray:
    """B or C as ``(b, d, l, n)`` whatever its layout (fixed, variable, grouped)."""
    X = _c(X)
    if X.ndim == 2:  # fixed (d n)
        return np.broadcast_to(X[None, :, None, :], (b, d, l, X.shape[1]))
    if X.ndim == 3:  # variable (b n l)
        return np.broadcast_to(np.transpose(X, (0, 2, 1))[:, None], (b, d, l, X.shape[1]))
    g = X.shape[1]
    per = d // g
    group_of = np.arange(d) // per  # channel c -> group c // (d / g)
    return np.transpose(X[:, group_of], (0, 1, 3, 2))  # (b d l n)


def _phi1_64(w: np.ndarray) -> np.ndarray:
    """(e^w - 1)/w; the series 1 + w/2 + w^2/6 + w^3/24 below |w| = 1e-4 (no division by tiny w)."""
    w = np.asarray(w)
    out = np.ones_like(w)
    big = np.abs(w) >= 1e-4
    out[big] = np.expm1(w[big]) / w[big]
    s = w[~big]
    out[~big] = 1 + s * (0.5 + s * (1.0 / 6.0 + s / 24.0))
    return out


# ---------------------------------------------------------------------------------------------
# S6
# ---------------------------------------------------------------------------------------------
def s6_loop(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, h0=None,
            discretization="mamba", reset=None):
    r"""The literal loop in float64/complex128.  Returns ``(out (b d l), h_last (b d n))``.

    ``reset`` (optional, bool ``(b l)``): the state is zeroed *before* step ``t`` where true
    (used for SSD's ``seq_idx``).
    """
    u = np.asarray(u, dtype=np.float64)
    b, d, l = u.shape
    A = _c(A)
    n = A.shape[1]
    Dt = effective_step(delta, delta_bias, delta_softplus)
    Bm, Cm = _channel_matrix(B, b, d, l), _channel_matrix(C, b, d, l)
    cplx = np.iscomplexobj(A) or np.iscomplexobj(Bm) or np.iscomplexobj(Cm) or np.iscomplexobj(h0)
    h = np.zeros((b, d, n), dtype=np.complex128 if cplx else np.float64)
    if h0 is not None:
        h = h + _c(h0)
    y = np.zeros((b, d, l))
    for t in range(l):
        if reset is not None:
            h = np.where(np.asarray(reset)[:, t, None, None], 0.0, h)
        w = Dt[:, :, t, None] * A[None]
        Ab = np.exp(w)
        if discretization == "zoh":
            Bb = Dt[:, :, t, None] * _phi1_64(w) * Bm[:, :, t]
        else:
            Bb = Dt[:, :, t, None] * Bm[:, :, t]
        h = Ab * h + Bb * u[:, :, t, None]
        yt = np.sum(h * Cm[:, :, t], axis=-1)
        y[:, :, t] = 2.0 * yt.real if np.iscomplexobj(A) else yt.real
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64)[:, None] * u
    if z is not None:
        y = y * _silu64(z)
    return y, h


def s6_mpmath(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, h0=None,
              discretization="mamba", dps: int = 50):
    """The loop in mpmath at ``dps`` digits, scalar by scalar (tiny cases only).  Returns float64/complex128."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = dps
    try:
        u = np.asarray(u, dtype=np.float64)
        b, d, l = u.shape
        A = _c(A)
        n = A.shape[1]
        Bm, Cm = _channel_matrix(B, b, d, l), _channel_matrix(C, b, d, l)
        cplx_A = np.iscomplexobj(A)
        mc = lambda v: mpmath.mpc(complex(v)) if np.iscomplexobj(v) else mpmath.mpf(float(v))  # noqa: E731
        out = np.zeros((b, d, l))
        last = np.zeros((b, d, n), dtype=np.complex128)
        for bi in range(b):
            for di in range(d):
                h = [mpmath.mpf(0)] * n
                if h0 is not None:
                    h = [mc(np.asarray(h0)[bi, di, k]) for k in range(n)]
                for t in range(l):
                    x = mpmath.mpf(float(np.asarray(delta)[bi, di, t]))
                    if delta_bias is not None:
                        x = x + mpmath.mpf(float(np.asarray(delta_bias)[di]))
                    if delta_softplus and x <= SOFTPLUS_THRESHOLD:
                        x = mpmath.log(1 + mpmath.exp(x))
                    ut = mpmath.mpf(float(u[bi, di, t]))
                    acc = mpmath.mpf(0)
                    for k in range(n):
                        Ak = mc(A[di, k])
                        w = x * Ak
                        if discretization == "zoh":
                            ph = (mpmath.exp(w) - 1) / w if w != 0 else mpmath.mpf(1)
                            Bb = x * ph * mc(Bm[bi, di, t, k])
                        else:
                            Bb = x * mc(Bm[bi, di, t, k])
                        h[k] = mpmath.exp(w) * h[k] + Bb * ut
                        acc += h[k] * mc(Cm[bi, di, t, k])
                    yt = 2 * mpmath.re(acc) if cplx_A else mpmath.re(acc)
                    if D is not None:
                        yt += mpmath.mpf(float(np.asarray(D)[di])) * ut
                    if z is not None:
                        zz = mpmath.mpf(float(np.asarray(z)[bi, di, t]))
                        yt *= zz / (1 + mpmath.exp(-zz))
                    out[bi, di, t] = float(yt)
                for k in range(n):
                    last[bi, di, k] = complex(h[k])
    finally:
        mpmath.mp.dps = old
    if not (np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C) or np.iscomplexobj(h0)):
        last = last.real.copy()
    return out, last


def s6_dense(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, h0=None,
             discretization="mamba", reset=None, return_operator=False):
    r"""The materialized operator: ``y[b,d,t] = sum_s M[b,d,t,s] u[b,d,s] + sum_n S[b,d,t,n] h0[b,d,n]``.

    ``Phi_n(t, s) = prod_{k=s+1}^{t} A_bar_k[n]`` is filled row by row as a running product
    (``Phi(t, s) = Phi(t, s+1) A_bar_{s+1}``, ``Phi(t, t) = 1``) and ``Psi_n(t) = prod_{k=0}^{t} A_bar_k[n]``
    for the initial state; with ``reset`` the products across a reset are zero.  Then
    ``M[t, s] = sum_n C_t[n] Phi_n(t, s) B_bar_s[n]`` (times 2 Re for complex A) and the final state
    ``h_{L-1} = sum_s Phi(L-1, s) B_bar_s u_s + Psi(L-1) h0``.  O(L^2 N) per channel: small L only.
    Returns ``(out, h_last)`` or with ``return_operator`` ``(out, h_last, M)``.
    """
    u = np.asarray(u, dtype=np.float64)
    b, d, l = u.shape
    A = _c(A)
    n = A.shape[1]
    Dt = effective_step(delta, delta_bias, delta_softplus)
    Bm, Cm = _channel_matrix(B, b, d, l), _channel_matrix(C, b, d, l)
    w = Dt[..., None] * A[None, :, None, :]  # (b d l n)
    Ab = np.exp(w)
    Bb = Dt[..., None] * (_phi1_64(w) if discretization == "zoh" else 1.0) * Bm
    keep = np.ones((b, l), dtype=bool) if reset is None else ~np.asarray(reset, dtype=bool)
    dtp = np.result_type(Ab, Bb, Cm, np.float64)
    Phi = np.zeros((b, d, l, l, n), dtype=dtp)
    Psi = np.zeros((b, d, l, n), dtype=dtp)
    for t in range(l):
        Phi[:, :, t, t] = 1.0
        for s in range(t - 1, -1, -1):
            # Phi(t, s) = Phi(t, s+1) A_bar_{s+1}, zero across a reset at s+1
            Phi[:, :, t, s] = Phi[:, :, t, s + 1] * Ab[:, :, s + 1] * keep[:, None, s + 1, None]
        # Psi(t) = Phi(t, 0) A_bar_0, zero if a reset happens at 0 (then h0 never enters)
        Psi[:, :, t] = Phi[:, :, t, 0] * Ab[:, :, 0] * keep[:, None, 0, None]
    M = np.einsum("bdtn,bdtsn,bdsn->bdts", Cm, Phi, Bb)
    S = Cm * Psi
    if np.iscomplexobj(A):
        M, S = 2.0 * M.real, 2.0 * S.real
        cplx_scale = True
    else:
        cplx_scale = False
    y = np.einsum("bdts,bds->bdt", M, u)
    if h0 is not None:
        ys = np.einsum("bdtn,bdn->bdt", S if not cplx_scale else Cm * Psi, _c(h0))
        y = y + (2.0 * ys.real if cplx_scale else ys.real)
    y = np.real(y)
    if l:
        h_last = np.einsum("bdsn,bdsn,bds->bdn", Phi[:, :, l - 1], Bb, u)
        if h0 is not None:
            h_last = h_last + Psi[:, :, l - 1] * _c(h0)
    else:
        h_last = np.zeros((b, d, n), dtype=dtp) + (0 if h0 is None else _c(h0))
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64)[:, None] * u
    if z is not None:
        y = y * _silu64(z)
    return (y, h_last, M) if return_operator else (y, h_last)


# Per-view constants of the error bound (see s6_bound): (K_fix, chain_S, K_out) as functions of
# (L, chunk, N, k_fn).  Counted from the algorithms in refimpl/ssm/selective.py, ssd.py and the
# Numba kernels:
# * recurrent / numba recurrent: per step exp(Delta A) and one multiply-add; nothing else.
# * scan (Hillis-Steele, R = ceil(log2 L) rounds): each term passes <= R combinations, each an exp of
#   a partial log sum (k_fn), one multiply and one add; the log sums are sums of <= R roundings.
# * chunked (S6 and SSD): exponents from segment sums of <= T+1 terms, one exp, sums over <= T terms
#   inside the chunk, chunk states of <= T terms, the state across chunks one multiply-add; SSD's
#   intra-chunk C.B dot adds N.
# * quadratic: segment sums of <= L terms, one exp, C.B dot (N), three products, a sum over <= L terms.
def _view_constants(view: str, L: int, chunk: Optional[int], N: int, k_fn: float) -> Tuple[float, float, float]:
    R = max(1, math.ceil(math.log2(max(L, 2))))
    T = min(chunk or L, max(L, 1))
    if view in ("recurrent", "numba"):
        return 0.0, 1.0, 0.0
    if view == "scan":
        return (k_fn + 2.0) * R + k_fn + 2.0, float(R), 0.0
    if view in ("chunked", "numba_chunked"):
        return 2.0 * k_fn + 6.0 + 2.0 * T + N, float(T + 1), float(T + N + 4)
    if view == "quadratic":
        return k_fn + 4.0 + L + N, float(L), float(L + N + 4)
    raise ValueError(f"view: unknown view {view!r} for the error bound")


def s6_bounds(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, h0=None,
              discretization="mamba", dtype=np.float32, views=("recurrent",), chunk=None, reset=None,
              oracle_dtype=np.float64, delta_override=None) -> dict:
    r"""Derived componentwise bounds ``{view: (on out (b d l), on h_last (b d n))}`` for candidates in ``dtype``.

    One pass over the sequence evaluates the bound of every view in ``views`` (they differ only
    in the per-view constants); :func:`s6_bound` is the one-view form.

    A running-error analysis of the recurrence (Higham ch. 3 applied step by step), first order in
    ``u`` then lifted to ``gamma``.  In units of ``u`` (``4u`` for complex data, ``complex_ops``):

    * ``k_Delta``: error of the computed step: 1 for the bias add; softplus adds ``2 k_fn`` (exp,
      log1p; ``k_fn`` = :data:`TRANSCENDENTAL_U`) and carries the add's error times its condition
      number ``|x| sigmoid(x) / softplus(x)``.
    * ``A_bar = exp(w)``, ``w = Delta A``: relative error ``k_a = k_fn + |w| (k_Delta + 1 + chain_S)``
      (an absolute error ``e`` in the exponent is a relative error ``e`` in the exponential;
      ``chain_S`` counts roundings in a view's sums of exponents).
    * ``B_bar u``: ``k_b = k_Delta + 2`` (Euler); ZOH adds ``phi1``: expm1, a division and its
      argument's error, ``|phi1'(w)| <= phi1(Re w)`` -> ``k_fn + 1 + |w| (k_Delta + 1)``.
    * magnitudes: ``H_t = |A_bar_t| H_{t-1} + |B_bar_t u_t|`` (``|phi1(w)| <= phi1(Re w)``), and the
      running error ``E_t = |A_bar_t| (E_{t-1} + (2 + k_a) H_{t-1}) + (k_b + K_fix) |B_bar_t u_t|``:
      each step's multiply-add and its factor's error, decayed with the state afterwards.
    * output: ``sum_n |C| E + (N + K_out) sum_n |C| H`` (x2 for 2 Re), the ``D u`` add (2 roundings),
      the gate ``silu(z)`` (``k_fn + 3``) and its multiply.
    * ``delta_override = (Delta, clamped)``: where ``clamped`` the step is the clamp limit
      ``Delta`` (one rounding of the limit, ``k_Delta = 1``); elsewhere the weights above.
    * the total is scaled by ``1/(1 - u k_max)`` with ``k_max`` the largest weight of any chain (the
      ``gamma`` form of the first-order sum) and the oracle's share (same weights in ``oracle_dtype``)
      is added by :func:`~oracles.tolerance.componentwise_bound`.
    """
    u_ = np.asarray(u, dtype=np.float64)
    b, d, l = u_.shape
    A = _c(A)
    n = A.shape[1]
    cplx = bool(np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C) or np.iscomplexobj(h0))
    k_fn = TRANSCENDENTAL_U
    consts = np.array([_view_constants(v, l, chunk, n, k_fn) for v in views], dtype=np.float64)  # (V 3)
    V = len(views)
    K_fix = consts[:, 0].reshape(V, 1, 1, 1)
    chain_S = consts[:, 1].reshape(V, 1, 1, 1, 1)
    K_out = consts[:, 2].reshape(V, 1, 1)
    # the step and its relative error weight
    x = np.asarray(delta, dtype=np.float64)
    k_x = np.zeros_like(x)
    if delta_bias is not None:
        x = x + np.asarray(delta_bias, dtype=np.float64)[:, None]
        k_x = k_x + 1.0
    if delta_softplus:
        Dt = _softplus64(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            sig = 1.0 / (1.0 + np.exp(-x))
            cond = np.where(Dt > 0, np.abs(x) * sig / np.where(Dt > 0, Dt, 1.0), 0.0)
        k_D = np.where(x <= SOFTPLUS_THRESHOLD, 2.0 * k_fn + cond * k_x, k_x)
    else:
        Dt, k_D = x, k_x
    if delta_override is not None:
        Dt_o, clamped = (np.asarray(t) for t in delta_override)
        Dt = np.where(clamped, Dt_o, Dt)
        k_D = np.where(clamped, 1.0, k_D)
    Bm, Cm = np.abs(_channel_matrix(B, b, d, l)), np.abs(_channel_matrix(C, b, d, l))
    w = Dt[..., None] * A[None, :, None, :]  # (b d l n)
    aw = np.abs(w)
    a_mag = np.exp(w.real)
    kD = k_D[..., None]
    k_a = k_fn + aw[None] * (kD[None] + 1.0 + chain_S)  # (V b d l n)
    if discretization == "zoh":
        b_mag = np.abs(Dt)[..., None] * _phi1_64(w.real) * Bm * np.abs(u_)[..., None]
        k_b = kD + 2.0 + 1.0 + k_fn + 1.0 + aw * (kD + 1.0)
    else:
        b_mag = np.abs(Dt)[..., None] * Bm * np.abs(u_)[..., None]
        k_b = kD + 2.0
    keep = np.ones((b, l), dtype=bool) if reset is None else ~np.asarray(reset, dtype=bool)
    H = np.zeros((b, d, n)) if h0 is None else np.abs(_c(h0)).astype(np.float64)
    E = (K_fix + 1.0) * H[None]  # (V b d n)
    Y = np.zeros((b, d, l))
    Eo = np.zeros((V, b, d, l))
    chain = np.zeros((V, b, d, n)) + (K_fix + 1.0)
    for t in range(l):
        kp = keep[:, t, None, None]
        H, E, chain = H * kp, E * kp, chain * kp
        step_w = 2.0 + k_a[:, :, :, t]
        E = a_mag[:, :, t] * (E + step_w * H) + (k_b[:, :, t] + K_fix) * b_mag[:, :, t]
        H = a_mag[:, :, t] * H + b_mag[:, :, t]
        chain = np.maximum(chain + step_w, k_b[:, :, t] + K_fix)
        Y[:, :, t] = np.sum(Cm[:, :, t] * H, axis=-1)
        Eo[..., t] = np.sum(Cm[:, :, t] * E, axis=-1) + (n + K_out) * Y[:, :, t]
    if np.iscomplexobj(A):
        Y, Eo = 2.0 * Y, 2.0 * Eo
    out = {}
    for iv, view in enumerate(views):
        Kf, cS, Ko = consts[iv]
        chain_max = float(np.max(chain[iv])) if chain[iv].size else Kf + 1.0
        k_max = chain_max + n + Ko + 2.0
        Eov, Yv = Eo[iv], Y
        if D is not None:
            Du = np.abs(np.asarray(D, dtype=np.float64))[:, None] * np.abs(u_)
            Eov = Eov + Yv + 2.0 * Du
            Yv = Yv + Du
        if z is not None:
            sz = np.abs(_silu64(z))
            Eov = sz * (Eov + (k_fn + 4.0) * Yv)
            k_max += k_fn + 4.0
        uc = unit_roundoff(dtype) * (4.0 if cplx else 1.0)
        hi = 1.0 / (1.0 - uc * k_max) if uc * k_max < 1.0 else math.inf
        what = (f"running-error weights of the {view} view (K_fix={Kf:g}, chain_S={cS:g}, K_out={Ko:g}), "
                f"k_fn={k_fn:g}, higher-order factor 1/(1 - u k_max), k_max={k_max:.4g}")
        bo = componentwise_bound(Eov, 1, dtype, oracle_dtype=oracle_dtype, complex_ops=cplx, what=what)
        bs = componentwise_bound(E[iv], 1, dtype, oracle_dtype=oracle_dtype, complex_ops=cplx, what=what + " (state)")
        out[view] = (bo.scaled(hi, "higher order"), bs.scaled(hi, "higher order"))
    return out


def s6_bound(u, delta, A, B, C, D=None, z=None, *, view="recurrent", **kwargs) -> Tuple[Bound, Bound]:
    """The bounds ``(on out, on h_last)`` of one view; see :func:`s6_bounds` for the derivation."""
    return s6_bounds(u, delta, A, B, C, D, z, views=(view,), **kwargs)[view]


# ---------------------------------------------------------------------------------------------
# SSD (Mamba-2)
# ---------------------------------------------------------------------------------------------
def ssd_effective_dt(dt, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf)) -> np.ndarray:
    """``clamp(softplus(dt + dt_bias), *dt_limit)`` in float64; ``dt`` ``(b l h)``."""
    x = np.asarray(dt, dtype=np.float64)
    if dt_bias is not None:
        x = x + np.asarray(dt_bias, dtype=np.float64)
    if dt_softplus:
        x = _softplus64(x)
    lo, hi = dt_limit
    if not (lo == 0.0 and hi == math.inf):
        x = np.minimum(np.maximum(x, lo), hi)
    return x


def _ssd_reset(seq_idx, b, l):
    """Bool ``(b l)``: a new sequence starts at ``t`` (``seq_idx[t] != seq_idx[t-1]``)."""
    r = np.zeros((b, l), dtype=bool)
    if seq_idx is not None and l > 1:
        s = np.asarray(seq_idx)
        r[:, 1:] = s[:, 1:] != s[:, :-1]
    return r


def _head_group(B, h):
    B = np.asarray(B, dtype=np.float64)
    g = B.shape[2]
    return B[:, :, np.arange(h) // (h // g)]  # (b l h n)


def ssd_loop(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
             initial_states=None, seq_idx=None):
    r"""The SSD recurrence, literally, in float64.  Returns ``(y (b l h p), final_state (b h p n))``.

    ``S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T`` (state ``(p n)``: headdim x dstate),
    ``y_t = S_t C_t + D x_t``, times ``silu(z_t)``; ``S`` restarts from 0 where ``seq_idx`` changes.
    """
    x = np.asarray(x, dtype=np.float64)
    b, l, h, p = x.shape
    Dt = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)
    Bh, Ch = _head_group(B, h), _head_group(C, h)
    n = Bh.shape[-1]
    A = np.asarray(A, dtype=np.float64)
    S = np.zeros((b, h, p, n)) if initial_states is None else np.asarray(initial_states, dtype=np.float64).copy()
    reset = _ssd_reset(seq_idx, b, l)
    y = np.zeros((b, l, h, p))
    for t in range(l):
        S = np.where(reset[:, t, None, None, None], 0.0, S)
        a = np.exp(Dt[:, t] * A)  # (b h)
        S = a[..., None, None] * S + (Dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        y[:, t] = np.einsum("bhpn,bhn->bhp", S, Ch[:, t])
    if D is not None:
        Dv = np.asarray(D, dtype=np.float64)
        y = y + (Dv[:, None] if Dv.ndim == 1 else Dv) * x
    if z is not None:
        y = y * _silu64(z)
    return y, S


def ssd_mpmath(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
               initial_states=None, seq_idx=None, dps: int = 50):
    """The SSD loop in mpmath, scalar by scalar (tiny cases).  Returns float64 arrays."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = dps
    try:
        x = np.asarray(x, dtype=np.float64)
        b, l, h, p = x.shape
        Bh, Ch = _head_group(B, h), _head_group(C, h)
        n = Bh.shape[-1]
        reset = _ssd_reset(seq_idx, b, l)
        lo, hi = dt_limit
        y = np.zeros((b, l, h, p))
        fin = np.zeros((b, h, p, n))
        f = lambda v: mpmath.mpf(float(v))  # noqa: E731
        for bi in range(b):
            for hh in range(h):
                S = [[(f(initial_states[bi, hh, i, k]) if initial_states is not None else mpmath.mpf(0))
                      for k in range(n)] for i in range(p)]
                for t in range(l):
                    if reset[bi, t]:
                        S = [[mpmath.mpf(0)] * n for _ in range(p)]
                    s = f(dt[bi, t, hh])
                    if dt_bias is not None:
                        s += f(dt_bias[hh])
                    if dt_softplus and s <= SOFTPLUS_THRESHOLD:
                        s = mpmath.log(1 + mpmath.exp(s))
                    if hi != math.inf:
                        s = min(s, f(hi))
                    s = max(s, f(lo))
                    a = mpmath.exp(s * f(A[hh]))
                    for i in range(p):
                        acc = mpmath.mpf(0)
                        for k in range(n):
                            S[i][k] = a * S[i][k] + s * f(x[bi, t, hh, i]) * f(Bh[bi, t, hh, k])
                            acc += S[i][k] * f(Ch[bi, t, hh, k])
                        if D is not None:
                            Dv = np.asarray(D)
                            acc += f(Dv[hh] if Dv.ndim == 1 else Dv[hh, i]) * f(x[bi, t, hh, i])
                        if z is not None:
                            zz = f(z[bi, t, hh, i])
                            acc *= zz / (1 + mpmath.exp(-zz))
                        y[bi, t, hh, i] = float(acc)
                for i in range(p):
                    for k in range(n):
                        fin[bi, hh, i, k] = float(S[i][k])
    finally:
        mpmath.mp.dps = old
    return y, fin


def ssd_as_s6(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
              initial_states=None, seq_idx=None):
    r"""The SSD inputs as an S6 problem with channels ``d = (h p)`` (all float64).

    Returns a dict of S6 arguments (``u, delta, A, B, C, D, z, h0, reset``) with ``delta`` the
    effective step already processed (so no bias/softplus on the S6 side), ``A`` broadcast to
    ``(d n)``, ``B``/``C`` grouped ``(b g n l)`` (head ``h`` reads group ``h // (H/g)``, and channel
    ``(h p)`` reads the same group), ``h0[b, (h p), n] = initial_states[b, h, p, n]``.
    """
    x = np.asarray(x, dtype=np.float64)
    b, l, h, p = x.shape
    Bv = np.asarray(B, dtype=np.float64)
    g, n = Bv.shape[2], Bv.shape[3]
    Dt = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b l h)
    out = dict(
        u=np.transpose(x, (0, 2, 3, 1)).reshape(b, h * p, l),
        delta=np.repeat(np.transpose(Dt, (0, 2, 1)), p, axis=1),
        A=np.repeat(np.asarray(A, dtype=np.float64), p)[:, None] * np.ones((1, n)),
        B=np.transpose(Bv, (0, 2, 3, 1)),
        C=np.transpose(np.asarray(C, dtype=np.float64), (0, 2, 3, 1)),
        D=None, z=None, h0=None, reset=_ssd_reset(seq_idx, b, l),
    )
    if D is not None:
        Dv = np.asarray(D, dtype=np.float64)
        out["D"] = (np.repeat(Dv, p) if Dv.ndim == 1 else Dv.reshape(-1))
    if z is not None:
        out["z"] = np.transpose(np.asarray(z, dtype=np.float64), (0, 2, 3, 1)).reshape(b, h * p, l)
    if initial_states is not None:
        out["h0"] = np.asarray(initial_states, dtype=np.float64).reshape(b, h * p, n)
    return out


def _s6_to_ssd_y(y, b, l, h, p):
    return np.transpose(y.reshape(b, h, p, l), (0, 3, 1, 2))


def ssd_dense(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
              initial_states=None, seq_idx=None):
    """SSD through :func:`s6_dense` (the materialized operator with explicit transition products)."""
    x = np.asarray(x)
    b, l, h, p = x.shape
    a = ssd_as_s6(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                  initial_states=initial_states, seq_idx=seq_idx)
    y, hl = s6_dense(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], h0=a["h0"], reset=a["reset"])
    n = a["A"].shape[1]
    return _s6_to_ssd_y(y, b, l, h, p), hl.reshape(b, h, p, n)


def ssd_bounds(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
               initial_states=None, seq_idx=None, dtype=np.float32, views=("recurrent",), chunk=None,
               oracle_dtype=np.float64) -> dict:
    r"""Bounds ``(on y (b l h p), on final state (b h p n))``: :func:`s6_bound` on the S6 form.

    The step's own error (bias add, softplus; the clamp is exact) is counted as in the S6 bound by
    passing the raw ``dt`` and the bias through; channels ``(h p)`` are independent scalar
    recurrences with the head's ``A`` on every state entry, so the S6 analysis applies verbatim.
    """
    x = np.asarray(x)
    b, l, h, p = x.shape
    a = ssd_as_s6(x, dt, A, B, C, D, z, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                  initial_states=initial_states, seq_idx=seq_idx)
    raw = np.repeat(np.transpose(np.asarray(dt, dtype=np.float64), (0, 2, 1)), p, axis=1)
    bias = None if dt_bias is None else np.repeat(np.asarray(dt_bias, dtype=np.float64), p)
    lo, hi = dt_limit
    if not (lo == 0.0 and hi == math.inf):
        # the clamp: the bound is evaluated at the clamped step; the clamp itself is exact, and the
        # pre-clamp error can only move a step towards the limit, so the weights of the unclamped
        # step (computed below) still apply.
        eff = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)
        pre = ssd_effective_dt(dt, dt_bias, dt_softplus)
        clamped = np.repeat(np.transpose(eff != pre, (0, 2, 1)), p, axis=1)
        eff_s6 = np.repeat(np.transpose(eff, (0, 2, 1)), p, axis=1)
    else:
        clamped = None
    res = s6_bounds(a["u"], raw, a["A"], a["B"], a["C"], a["D"], a["z"], delta_bias=bias, delta_softplus=dt_softplus,
                    h0=a["h0"], dtype=dtype, views=views, chunk=chunk, reset=a["reset"], oracle_dtype=oracle_dtype,
                    delta_override=None if clamped is None else (eff_s6, clamped))
    n = a["A"].shape[1]
    out = {}
    for view, (bo, bs) in res.items():
        out[view] = (Bound(_s6_to_ssd_y(np.asarray(bo.values), b, l, h, p), bo.source),
                     Bound(np.asarray(bs.values).reshape(b, h, p, n), bs.source))
    return out


def ssd_bound(x, dt, A, B, C, D=None, z=None, *, view="recurrent", **kwargs) -> Tuple[Bound, Bound]:
    """The bounds ``(on y, on the final state)`` of one SSD view; see :func:`ssd_bounds`."""
    return ssd_bounds(x, dt, A, B, C, D, z, views=(view,), **kwargs)[view]


def decayed_linear_attention(q, k, v, a, *, S0=None):
    r"""Causal linear attention with a scalar decay per step and head, as one masked matrix.

    ``o_i = sum_{j<=i} G[i, j] (q_i . k_j) v_j + (prod_{k<=i} a_k) S0 q_i`` with
    ``G[i, j] = prod_{k=j+1}^{i} a_k`` built by cumulative products (float64; the decays are in (0, 1]).
    Shapes: ``q``, ``k`` ``(b l h n)``; ``v`` ``(b l h p)``; ``a`` ``(b l h)``; ``S0`` ``(b h p n)`` (VxK).
    Returns ``o`` ``(b l h p)``.
    """
    q, k, v, a = (np.asarray(t, dtype=np.float64) for t in (q, k, v, a))
    b, l, h, n = q.shape
    G = np.zeros((b, h, l, l))
    for i in range(l):
        G[:, :, i, i] = 1.0
        for j in range(i - 1, -1, -1):
            G[:, :, i, j] = G[:, :, i, j + 1] * a[:, j + 1]
    scores = np.einsum("bihn,bjhn->bhij", q, k) * G
    o = np.einsum("bhij,bjhp->bihp", scores, v)
    if S0 is not None:
        P = np.cumprod(a, axis=1)  # prod_{k<=i} a_k
        o = o + P[..., None] * np.einsum("bhpn,bihn->bihp", np.asarray(S0, dtype=np.float64), q)
    return o
