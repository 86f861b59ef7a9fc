r"""Independent oracles for Mamba's selective scan (S6) and Mamba-2's SSD.

Ground truth: nothing here imports :mod:`refimpl`, and nothing mirrors its code.  Every function
re-derives the option handling (bias, softplus with threshold 20, dt_limit, the channel -> group map
of grouped B/C, 2 Re, D, the z gate, seq_idx) on its own, in float64 / complex128.  Layouts are the
glossary's (sequence-first): S6 ``u, delta, z (b l d)``, ``A (d n)``, ``B, C`` fixed ``(d n)`` / variable
``(b l n)`` / grouped ``(b l g n)``, ``initial_state (b d n)``; SSD ``x, z (b l h p)``, ``dt (b l h)``,
``B, C (b l g n)``, ``initial_state (b h p n)``.

* :func:`s6_solve` / :func:`ssd_solve` -- **the default oracles**.  The whole sequence of states is
  the solution of one lower-bidiagonal linear system, ``(I - S_a) h = f``: ``f_t = B_bar_t u_t``
  (``+ A_bar_0 h_{-1}`` at ``t = 0``), the subdiagonal holding the transitions ``a_t = A_bar_t``
  (0 at a reset).  Every ``(batch, channel, state)`` (SSD: ``(batch, head)`` with the ``p n`` state
  entries as right-hand sides) is one diagonal block of a single banded matrix, solved by LAPACK's
  triangular banded solver (``?tbtrs``: forward substitution, unit diagonal, no factorization and no
  pivoting).  No loop over time in Python, no per-step helper shared with any view.
* :func:`s6_mpmath` / :func:`ssd_mpmath` -- scalar loops in mpmath (50 digits), for tiny cases: the
  independent check of the float64 oracles themselves.
* :func:`s6_dense` / :func:`ssd_dense` -- the time-varying operator materialized,
  ``y = M u + S h_{-1}`` with ``M[t, s] = sum_n C_t[n] Phi_n(t, s) B_bar_s[n]`` and the transition
  products ``Phi_n(t, s) = A_bar_{s+1} ... A_bar_t`` multiplied out factor by factor (no log
  space, no segment sums, no scan, no chunks).
* :func:`decayed_linear_attention` -- causal linear attention with a scalar decay per step,
  ``o_i = sum_{j<=i} (prod_{k=j+1}^{i} a_k) (q_i . k_j) v_j``, as one masked attention matrix:
  the other side of the SSD duality.
* :func:`s6_bound` / :func:`ssd_bound` -- the derived error bound of a candidate view in a given
  dtype (see :func:`s6_bounds`).

Rounding of the default oracle: forward substitution with a unit lower-bidiagonal matrix computes
``x_t = f_t - (-a_t) x_{t-1}``, one multiply and one add per step (the negation is exact) -- the
roundings the recurrent view's bound counts.  (A pivoting solver would not do: LAPACK's ``gbsv``
picks complex pivots by ``|Re| + |Im|``, which exceeds 1 for some ``|a_t| < 1``, and a row swap
changes the rounding.)
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from oracles.tolerance import TRANSCENDENTAL_U, Bound, componentwise_bound, unit_roundoff

__all__ = [
    "SOFTPLUS_THRESHOLD",
    "TRANSCENDENTAL_U",
    "effective_step",
    "s6_solve",
    "s6_mpmath",
    "s6_dense",
    "s6_bound",
    "s6_bounds",
    "ssd_effective_dt",
    "ssd_solve",
    "ssd_mpmath",
    "ssd_dense",
    "ssd_bound",
    "ssd_bounds",
    "ssd_as_s6",
    "decayed_linear_attention",
]

SOFTPLUS_THRESHOLD = 20.0
# TRANSCENDENTAL_U (imported above, re-exported): the error of one NumPy exp/expm1/log/log1p in units of u,
# 4 ULP = 8 u, the largest maximum ULP error NumPy's own accuracy tests validate for these ufuncs (derived in
# oracles.tolerance).


# ---------------------------------------------------------------------------------------------
# scalar pieces and input interpretation, float64
# ---------------------------------------------------------------------------------------------
def _f64(a):
    """float64, or complex128 for complex data (``None`` stays ``None``)."""
    if a is None:
        return None
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _softplus_oracle(x: np.ndarray) -> np.ndarray:
    """``log(1 + e^x)`` as ``logaddexp(0, x)`` for ``x <= 20``; ``x`` itself above (the convention's threshold)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.logaddexp(0.0, np.minimum(x, SOFTPLUS_THRESHOLD)))


def _silu_oracle(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        return z / (1.0 + np.exp(-z))


def _phi1_oracle(w: np.ndarray) -> np.ndarray:
    """``(e^w - 1)/w``: ``expm1(w)/w`` for ``|w| >= 1e-3``; below, the degree-4 Taylor polynomial
    ``1 + w/2 + w^2/6 + w^3/24 + w^4/120`` in Horner form (truncation ``|w|^5/720 < 1.4e-18``)."""
    w = np.asarray(w)
    out = np.ones_like(w)
    big = np.abs(w) >= 1e-3
    out[big] = np.expm1(w[big]) / w[big]
    s = w[~big]
    out[~big] = 1.0 + s * (1.0 / 2.0 + s * (1.0 / 6.0 + s * (1.0 / 24.0 + s / 120.0)))
    return out


def effective_step(delta, bias=None, softplus: bool = False) -> np.ndarray:
    """``softplus(delta + bias)`` in float64; ``delta`` ``(... d)`` (channels last), ``bias`` ``(d,)``."""
    x = np.asarray(delta, dtype=np.float64)
    if bias is not None:
        x = x + np.asarray(bias, dtype=np.float64)
    return _softplus_oracle(x) if softplus else x


def _bc_channels(X, b: int, l: int, d: int) -> np.ndarray:
    """B or C as an explicit ``(b l d n)`` array whatever its layout.

    fixed ``(d n)``: ``X[c, k]``; variable ``(b l n)``: ``X[b, t, k]``; grouped ``(b l g n)``:
    ``X[b, t, floor(c g / d), k]`` -- channel ``c`` of ``d`` reads group ``floor(c g / d)`` (for ``g``
    dividing ``d`` this is the block of ``d / g`` consecutive channels).
    """
    X = _f64(X)
    if X.ndim == 2:
        return np.broadcast_to(X, (b, l) + X.shape)
    if X.ndim == 3:
        return np.broadcast_to(X[:, :, None, :], (b, l, d, X.shape[-1]))
    g = X.shape[2]
    return X[:, :, (np.arange(d) * g) // d, :]


def _bidiagonal_solve(a: np.ndarray, f: np.ndarray) -> np.ndarray:
    r"""``x`` with ``x[..., t, :] = a[..., t] x[..., t-1, :] + f[..., t, :]`` and ``x[..., -1, :] = 0``.

    ``a``: ``(..., L)``, ``f``: ``(..., L, K)``.  Each leading index is one ``L x L`` diagonal block
    ``I - subdiag(a_1, ..., a_{L-1})`` of one banded matrix of order ``prod(...) L`` (``a_0`` couples
    nothing: a nonzero ``x_{-1}`` belongs in ``f_0``), solved at once for the ``K`` columns by LAPACK's
    ``?tbtrs`` (lower, unit diagonal: forward substitution, nothing factored, nothing pivoted).
    """
    lead, L, K = a.shape[:-1], a.shape[-1], f.shape[-1]
    dtype = np.result_type(a.dtype, f.dtype, np.float64)
    m = int(np.prod(lead, dtype=np.int64)) * L
    if m == 0:
        return np.zeros(f.shape, dtype=dtype)
    sub = np.array(a, dtype=dtype).reshape(-1, L)
    sub[:, 0] = 0.0  # block boundaries
    ab = np.zeros((2, m), dtype=dtype)  # LAPACK lower band storage: ab[i - j, j] = matrix[i, j]
    ab[0] = 1.0  # the unit diagonal (not read with diag="U")
    ab[1, :-1] = -sub.reshape(-1)[1:]  # ab[1, j] = matrix[j + 1, j] = -a_{j+1}
    rhs = np.array(np.asarray(f, dtype=dtype).reshape(m, K), order="F")
    tbtrs, = scipy.linalg.lapack.get_lapack_funcs(("tbtrs",), (ab, rhs))
    x, info = tbtrs(ab, rhs, uplo="L", trans="N", diag="U")
    if info != 0:
        raise ValueError(f"_bidiagonal_solve: LAPACK ?tbtrs returned info = {info}")
    return x.reshape(f.shape)


# ---------------------------------------------------------------------------------------------
# S6
# ---------------------------------------------------------------------------------------------
def s6_solve(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, initial_state=None,
             discretization="mamba", reset=None):
    r"""The default S6 oracle: all states from one banded linear solve.  Returns ``(out (b l d), final (b d n))``.

    ``h_t - A_bar_t h_{t-1} = B_bar_t u_t`` for ``t = 0..l-1`` (``A_bar_0 h_{-1}`` moved to the right-hand
    side) is a unit lower-bidiagonal system per ``(b, d, n)`` (see :func:`_bidiagonal_solve`).
    ``reset`` (optional, bool ``(b l)``): the state is zeroed *before* step ``t`` where true, i.e. the
    coupling ``A_bar_t`` is cut (used for SSD's ``seq_idx``).
    """
    u = np.asarray(u, dtype=np.float64)
    b, l, d = u.shape
    A = _f64(A)
    n = A.shape[1]
    Dt = effective_step(delta, delta_bias, delta_softplus)  # (b l d)
    w = Dt[..., None] * A  # Delta_t A: (b l d n)
    A_bar = np.exp(w)
    Bm, Cm = _bc_channels(B, b, l, d), _bc_channels(C, b, l, d)
    B_bar = Dt[..., None] * (_phi1_oracle(w) * Bm if discretization == "zoh" else Bm)
    cplx = bool(np.iscomplexobj(A) or np.iscomplexobj(Bm) or np.iscomplexobj(Cm) or np.iscomplexobj(initial_state))
    dtype = np.complex128 if cplx else np.float64
    f = (B_bar * u[..., None]).astype(dtype)
    a = A_bar.astype(dtype)
    if reset is not None:
        a = np.where(np.asarray(reset, dtype=bool)[:, :, None, None], 0.0, a)
    h_in = np.zeros((b, d, n), dtype=dtype) if initial_state is None else _f64(initial_state).astype(dtype)
    if l:
        f[:, 0] = a[:, 0] * h_in + f[:, 0]
    # (b l d n) -> (b d n l 1): one block per (b, d, n), one right-hand side
    H = _bidiagonal_solve(np.moveaxis(a, 1, -1), np.moveaxis(f, 1, -1)[..., None])[..., 0]
    H = np.moveaxis(H, -1, 1)  # (b l d n)
    yc = np.sum(Cm * H, axis=-1)
    y = 2.0 * yc.real if np.iscomplexobj(A) else yc.real
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64) * u
    if z is not None:
        y = y * _silu_oracle(z)
    final = H[:, -1] if l else h_in
    return y, final


def s6_mpmath(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, initial_state=None,
              discretization="mamba", dps: int = 50):
    """The S6 loop in mpmath at ``dps`` digits, scalar by scalar (tiny cases only).  Returns float64/complex128."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = dps
    try:
        u = np.asarray(u, dtype=np.float64)
        b, l, d = u.shape
        A = np.asarray(A)
        n = A.shape[1]
        Bv, Cv = np.asarray(B), np.asarray(C)
        cplx_A = np.iscomplexobj(A)
        mc = lambda v: mpmath.mpc(complex(v)) if np.iscomplexobj(v) else mpmath.mpf(float(v))  # noqa: E731

        def at(X, bi, t, c, k):  # fixed (d n), variable (b l n), grouped (b l g n): group floor(c g / d)
            if X.ndim == 2:
                return mc(X[c, k])
            if X.ndim == 3:
                return mc(X[bi, t, k])
            return mc(X[bi, t, (c * X.shape[2]) // d, k])

        out = np.zeros((b, l, d))
        last = np.zeros((b, d, n), dtype=np.complex128)
        for bi in range(b):
            for c in range(d):
                h = [mpmath.mpf(0)] * n
                if initial_state is not None:
                    h = [mc(np.asarray(initial_state)[bi, c, k]) for k in range(n)]
                for t in range(l):
                    x = mpmath.mpf(float(np.asarray(delta)[bi, t, c]))
                    if delta_bias is not None:
                        x = x + mpmath.mpf(float(np.asarray(delta_bias)[c]))
                    if delta_softplus and x <= SOFTPLUS_THRESHOLD:
                        x = mpmath.log(1 + mpmath.exp(x))
                    ut = mpmath.mpf(float(u[bi, t, c]))
                    acc = mpmath.mpf(0)
                    for k in range(n):
                        w = x * mc(A[c, k])
                        if discretization == "zoh":
                            ph = mpmath.expm1(w) / w if w != 0 else mpmath.mpf(1)
                            Bb = x * ph * at(Bv, bi, t, c, k)
                        else:
                            Bb = x * at(Bv, bi, t, c, k)
                        h[k] = mpmath.exp(w) * h[k] + Bb * ut
                        acc += h[k] * at(Cv, bi, t, c, k)
                    yt = 2 * mpmath.re(acc) if cplx_A else mpmath.re(acc)
                    if D is not None:
                        yt += mpmath.mpf(float(np.asarray(D)[c])) * ut
                    if z is not None:
                        zz = mpmath.mpf(float(np.asarray(z)[bi, t, c]))
                        yt *= zz / (1 + mpmath.exp(-zz))
                    out[bi, t, c] = float(yt)
                for k in range(n):
                    last[bi, c, k] = complex(h[k])
    finally:
        mpmath.mp.dps = old
    if not (np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C) or np.iscomplexobj(initial_state)):
        last = last.real.copy()
    return out, last


def s6_dense(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, initial_state=None,
             discretization="mamba", reset=None, return_operator=False):
    r"""The materialized operator: ``y[b,t,d] = sum_s M[b,d,t,s] u[b,s,d] + sum_n S[b,d,t,n] h_{-1}[b,d,n]``.

    ``Phi_n(t, s) = prod_{k=s+1}^{t} A_bar_k[n]`` is filled row by row as a running product
    (``Phi(t, s) = Phi(t, s+1) A_bar_{s+1}``, ``Phi(t, t) = 1``) and ``Psi_n(t) = prod_{k=0}^{t} A_bar_k[n]``
    for the initial state; with ``reset`` the products across a reset are zero.  Then
    ``M[t, s] = sum_n C_t[n] Phi_n(t, s) B_bar_s[n]`` (times 2 Re for complex A) and the final state
    ``h_{l-1} = sum_s Phi(l-1, s) B_bar_s u_s + Psi(l-1) h_{-1}``.  O(l^2 n) per channel: small l only.
    Returns ``(out (b l d), final (b d n))`` or with ``return_operator`` ``(out, final, M (b d l l))``.
    """
    u_seq = np.asarray(u, dtype=np.float64)
    b, l, d = u_seq.shape
    A = _f64(A)
    n = A.shape[1]
    Dt = np.moveaxis(effective_step(delta, delta_bias, delta_softplus), 1, -1)  # (b d l)
    uu = np.moveaxis(u_seq, 1, -1)  # (b d l)
    Bm = np.moveaxis(_bc_channels(B, b, l, d), 1, 2)  # (b d l n)
    Cm = np.moveaxis(_bc_channels(C, b, l, d), 1, 2)
    w = Dt[..., None] * A[None, :, None, :]  # (b d l n)
    Ab = np.exp(w)
    Bb = Dt[..., None] * (_phi1_oracle(w) if discretization == "zoh" else 1.0) * Bm
    keep = np.ones((b, l), dtype=bool) if reset is None else ~np.asarray(reset, dtype=bool)
    dtp = np.result_type(Ab, Bb, Cm, np.float64)
    Phi = np.zeros((b, d, l, l, n), dtype=dtp)
    Psi = np.zeros((b, d, l, n), dtype=dtp)
    for t in range(l):
        Phi[:, :, t, t] = 1.0
        for s in range(t - 1, -1, -1):
            # Phi(t, s) = Phi(t, s+1) A_bar_{s+1}, zero across a reset at s+1
            Phi[:, :, t, s] = Phi[:, :, t, s + 1] * Ab[:, :, s + 1] * keep[:, None, s + 1, None]
        # Psi(t) = Phi(t, 0) A_bar_0, zero if a reset happens at 0 (then h_{-1} never enters)
        Psi[:, :, t] = Phi[:, :, t, 0] * Ab[:, :, 0] * keep[:, None, 0, None]
    M = np.einsum("bdtn,bdtsn,bdsn->bdts", Cm, Phi, Bb)
    cplx_A = np.iscomplexobj(A)
    if cplx_A:
        M = 2.0 * M.real
    y = np.einsum("bdts,bds->bdt", M, uu)
    h0 = _f64(initial_state)
    if h0 is not None:
        ys = np.einsum("bdtn,bdn->bdt", Cm * Psi, h0)
        y = y + (2.0 * ys.real if cplx_A else ys.real)
    y = np.moveaxis(np.real(y), -1, 1)  # (b l d)
    if l:
        h_last = np.einsum("bdsn,bdsn,bds->bdn", Phi[:, :, l - 1], Bb, uu)
        if h0 is not None:
            h_last = h_last + Psi[:, :, l - 1] * h0
    else:
        h_last = np.zeros((b, d, n), dtype=dtp) + (0 if h0 is None else h0)
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64) * u_seq
    if z is not None:
        y = y * _silu_oracle(z)
    return (y, h_last, M) if return_operator else (y, h_last)


# Per-view constants of the error bound (see s6_bounds): (K_fix, chain_S, K_out) as functions of
# (L, chunk, N, k_fn).  Counted from the algorithms in refimpl/ssm/selective/, refimpl/ssm/ssd/ (the
# reference views and the Numba kernels):
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


def s6_bounds(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, initial_state=None,
              discretization="mamba", dtype=np.float32, views=("recurrent",), chunk=None, reset=None,
              oracle_dtype=np.float64, delta_override=None) -> dict:
    r"""Derived componentwise bounds ``{view: (on out (b l d), on final state (b d n))}`` for candidates in ``dtype``.

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
    * ``delta_override = (Delta, clamped)`` (both ``(b l d)``): where ``clamped`` the step is the clamp
      limit ``Delta`` (one rounding of the limit, ``k_Delta = 1``); elsewhere the weights above.
    * the total is scaled by ``1/(1 - u k_max)`` with ``k_max`` the largest weight of any chain (the
      ``gamma`` form of the first-order sum) and the oracle's share (same weights in ``oracle_dtype``)
      is added by :func:`~oracles.tolerance.componentwise_bound`.

    The analysis runs per channel along time, in a channel-major ``(b d l)`` arrangement; the bounds
    are returned in the inputs' sequence-first layout.
    """
    u_seq = np.asarray(u, dtype=np.float64)
    b, l, d = u_seq.shape
    u_ = np.moveaxis(u_seq, 1, -1)  # (b d l)
    A = _f64(A)
    n = A.shape[1]
    cplx = bool(np.iscomplexobj(A) or np.iscomplexobj(B) or np.iscomplexobj(C) or np.iscomplexobj(initial_state))
    k_fn = TRANSCENDENTAL_U
    consts = np.array([_view_constants(v, l, chunk, n, k_fn) for v in views], dtype=np.float64)  # (V 3)
    V = len(views)
    K_fix = consts[:, 0].reshape(V, 1, 1, 1)
    chain_S = consts[:, 1].reshape(V, 1, 1, 1, 1)
    K_out = consts[:, 2].reshape(V, 1, 1)
    # the step and its relative error weight, (b d l)
    x = np.moveaxis(np.asarray(delta, dtype=np.float64), 1, -1)
    k_x = np.zeros_like(x)
    if delta_bias is not None:
        x = x + np.asarray(delta_bias, dtype=np.float64)[:, None]
        k_x = k_x + 1.0
    if delta_softplus:
        Dt = _softplus_oracle(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            sig = 1.0 / (1.0 + np.exp(-x))
            cond = np.where(Dt > 0, np.abs(x) * sig / np.where(Dt > 0, Dt, 1.0), 0.0)
        k_D = np.where(x <= SOFTPLUS_THRESHOLD, 2.0 * k_fn + cond * k_x, k_x)
    else:
        Dt, k_D = x, k_x
    if delta_override is not None:
        Dt_o, clamped = (np.moveaxis(np.asarray(t_), 1, -1) for t_ in delta_override)
        Dt = np.where(clamped, Dt_o, Dt)
        k_D = np.where(clamped, 1.0, k_D)
    Bm = np.abs(np.moveaxis(_bc_channels(B, b, l, d), 1, 2))  # (b d l n)
    Cm = np.abs(np.moveaxis(_bc_channels(C, b, l, d), 1, 2))
    w = Dt[..., None] * A[None, :, None, :]  # (b d l n)
    aw = np.abs(w)
    a_mag = np.exp(w.real)
    kD = k_D[..., None]
    k_a = k_fn + aw[None] * (kD[None] + 1.0 + chain_S)  # (V b d l n)
    if discretization == "zoh":
        b_mag = np.abs(Dt)[..., None] * _phi1_oracle(w.real) * Bm * np.abs(u_)[..., None]
        k_b = kD + 2.0 + 1.0 + k_fn + 1.0 + aw * (kD + 1.0)
    else:
        b_mag = np.abs(Dt)[..., None] * Bm * np.abs(u_)[..., None]
        k_b = kD + 2.0
    keep = np.ones((b, l), dtype=bool) if reset is None else ~np.asarray(reset, dtype=bool)
    H = np.zeros((b, d, n)) if initial_state is None else np.abs(_f64(initial_state)).astype(np.float64)
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
            sz = np.abs(np.moveaxis(_silu_oracle(z), 1, -1))
            Eov = sz * (Eov + (k_fn + 4.0) * Yv)
            k_max += k_fn + 4.0
        uc = unit_roundoff(dtype) * (4.0 if cplx else 1.0)
        hi = 1.0 / (1.0 - uc * k_max) if uc * k_max < 1.0 else math.inf
        what = (f"running-error weights of the {view} view (K_fix={Kf:g}, chain_S={cS:g}, K_out={Ko:g}), "
                f"k_fn={k_fn:g}, higher-order factor 1/(1 - u k_max), k_max={k_max:.4g}")
        bo = componentwise_bound(np.moveaxis(Eov, -1, 1), 1, dtype, oracle_dtype=oracle_dtype, complex_ops=cplx,
                                 what=what)
        bs = componentwise_bound(E[iv], 1, dtype, oracle_dtype=oracle_dtype, complex_ops=cplx, what=what + " (state)")
        out[view] = (bo.scaled(hi, "higher order"), bs.scaled(hi, "higher order"))
    return out


def s6_bound(u, delta, A, B, C, D=None, z=None, *, view="recurrent", **kwargs) -> Tuple[Bound, Bound]:
    """The bounds ``(on out, on the final state)`` of one view; see :func:`s6_bounds` for the derivation."""
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
        x = _softplus_oracle(x)
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


def _per_head(X, h: int) -> np.ndarray:
    """``(b l g n)`` -> ``(b l h n)``: head ``j`` of ``h`` reads group ``floor(j g / h)``."""
    X = np.asarray(X, dtype=np.float64)
    g = X.shape[2]
    return X[:, :, (np.arange(h) * g) // h]


def ssd_solve(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
              initial_state=None, seq_idx=None):
    r"""The default SSD oracle: all states from one banded linear solve.  Returns ``(y (b l h p), final (b h p n))``.

    ``S_t - a_t S_{t-1} = dt_t x_t B_t^T`` with ``a_t = exp(dt_t A_h)`` (0 where ``seq_idx`` changes) is
    one unit lower-bidiagonal system per ``(b, h)`` whose ``p n`` state entries are right-hand sides;
    then ``y_t = S_t C_t + D x_t``, times ``silu(z_t)``.
    """
    x = np.asarray(x, dtype=np.float64)
    b, l, h, p = x.shape
    Dt = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b l h)
    Bh, Ch = _per_head(B, h), _per_head(C, h)
    n = Bh.shape[-1]
    a = np.exp(Dt * np.asarray(A, dtype=np.float64))  # (b l h)
    a = np.where(_ssd_reset(seq_idx, b, l)[:, :, None], 0.0, a)
    F = (Dt[..., None] * x)[..., None] * Bh[:, :, :, None, :]  # dt_t x_t B_t^T: (b l h p n)
    S_in = np.zeros((b, h, p, n)) if initial_state is None else np.asarray(initial_state, dtype=np.float64)
    if l:
        F[:, 0] = a[:, 0, :, None, None] * S_in + F[:, 0]
    # (b l h p n) -> (b h l (p n)): one block per (b, h), the p n entries as right-hand sides
    S = _bidiagonal_solve(np.moveaxis(a, 1, -1), np.moveaxis(F, 1, 2).reshape(b, h, l, p * n))
    S = np.moveaxis(S.reshape(b, h, l, p, n), 2, 1)  # (b l h p n)
    y = np.einsum("blhpn,blhn->blhp", S, Ch)
    if D is not None:
        Dv = np.asarray(D, dtype=np.float64)
        y = y + (Dv[:, None] if Dv.ndim == 1 else Dv) * x
    if z is not None:
        y = y * _silu_oracle(z)
    return y, (S[:, -1] if l else S_in.copy())


def ssd_mpmath(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
               initial_state=None, seq_idx=None, dps: int = 50):
    """The SSD loop in mpmath, scalar by scalar (tiny cases).  Returns float64 arrays."""
    import mpmath

    old = mpmath.mp.dps
    mpmath.mp.dps = dps
    try:
        x = np.asarray(x, dtype=np.float64)
        b, l, h, p = x.shape
        Bv, Cv = np.asarray(B), np.asarray(C)
        g, n = Bv.shape[2], Bv.shape[3]
        lo, hi = dt_limit
        y = np.zeros((b, l, h, p))
        fin = np.zeros((b, h, p, n))
        f = lambda v: mpmath.mpf(float(v))  # noqa: E731
        for bi in range(b):
            for hh in range(h):
                gi = (hh * g) // h  # the group of head hh
                S = [[(f(initial_state[bi, hh, i, k]) if initial_state is not None else mpmath.mpf(0))
                      for k in range(n)] for i in range(p)]
                for t in range(l):
                    if t > 0 and seq_idx is not None and seq_idx[bi, t] != seq_idx[bi, t - 1]:
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
                            S[i][k] = a * S[i][k] + s * f(x[bi, t, hh, i]) * f(Bv[bi, t, gi, k])
                            acc += S[i][k] * f(Cv[bi, t, gi, k])
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
              initial_state=None, seq_idx=None):
    r"""The SSD inputs as an S6 problem with channels ``d = (h p)`` (all float64, sequence-first).

    Returns a dict of S6 arguments (``u, delta, A, B, C, D, z, initial_state, reset``) with ``delta``
    the effective step already processed (so no bias/softplus on the S6 side), ``A`` broadcast to
    ``(d n)``, ``B``/``C`` grouped ``(b l g n)`` unchanged (channel ``(h p)`` reads group
    ``floor((h p) g / (H p)) = floor(h g / H)``, its head's group),
    ``initial_state[b, (h p), n] = initial_state[b, h, p, n]``.
    """
    x = np.asarray(x, dtype=np.float64)
    b, l, h, p = x.shape
    Bv = np.asarray(B, dtype=np.float64)
    n = Bv.shape[3]
    Dt = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b l h)
    out = dict(
        u=x.reshape(b, l, h * p),
        delta=np.repeat(Dt, p, axis=2),
        A=np.repeat(np.asarray(A, dtype=np.float64), p)[:, None] * np.ones((1, n)),
        B=Bv,
        C=np.asarray(C, dtype=np.float64),
        D=None, z=None, initial_state=None, reset=_ssd_reset(seq_idx, b, l),
    )
    if D is not None:
        Dv = np.asarray(D, dtype=np.float64)
        out["D"] = (np.repeat(Dv, p) if Dv.ndim == 1 else Dv.reshape(-1))
    if z is not None:
        out["z"] = np.asarray(z, dtype=np.float64).reshape(b, l, h * p)
    if initial_state is not None:
        out["initial_state"] = np.asarray(initial_state, dtype=np.float64).reshape(b, h * p, n)
    return out


def ssd_dense(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
              initial_state=None, seq_idx=None):
    """SSD through :func:`s6_dense` (the materialized operator with explicit transition products)."""
    x = np.asarray(x)
    b, l, h, p = x.shape
    a = ssd_as_s6(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                  initial_state=initial_state, seq_idx=seq_idx)
    y, hl = s6_dense(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], initial_state=a["initial_state"],
                     reset=a["reset"])
    n = a["A"].shape[1]
    return y.reshape(b, l, h, p), hl.reshape(b, h, p, n)


def ssd_bounds(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
               initial_state=None, seq_idx=None, dtype=np.float32, views=("recurrent",), chunk=None,
               oracle_dtype=np.float64) -> dict:
    r"""Bounds ``(on y (b l h p), on final state (b h p n))``: :func:`s6_bounds` on the S6 form.

    The step's own error (bias add, softplus; the clamp is exact) is counted as in the S6 bound by
    passing the raw ``dt`` and the bias through; channels ``(h p)`` are independent scalar
    recurrences with the head's ``A`` on every state entry, so the S6 analysis applies verbatim.
    """
    x = np.asarray(x)
    b, l, h, p = x.shape
    a = ssd_as_s6(x, dt, A, B, C, D, z, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                  initial_state=initial_state, seq_idx=seq_idx)
    raw = np.repeat(np.asarray(dt, dtype=np.float64), p, axis=2)  # (b l (h p))
    bias = None if dt_bias is None else np.repeat(np.asarray(dt_bias, dtype=np.float64), p)
    lo, hi = dt_limit
    if not (lo == 0.0 and hi == math.inf):
        # the clamp: the bound is evaluated at the clamped step; the clamp itself is exact, and the
        # pre-clamp error can only move a step towards the limit, so the weights of the unclamped
        # step (computed below) still apply.
        eff = ssd_effective_dt(dt, dt_bias, dt_softplus, dt_limit)
        pre = ssd_effective_dt(dt, dt_bias, dt_softplus)
        override = (np.repeat(eff, p, axis=2), np.repeat(eff != pre, p, axis=2))
    else:
        override = None
    res = s6_bounds(a["u"], raw, a["A"], a["B"], a["C"], a["D"], a["z"], delta_bias=bias, delta_softplus=dt_softplus,
                    initial_state=a["initial_state"], dtype=dtype, views=views, chunk=chunk, reset=a["reset"],
                    oracle_dtype=oracle_dtype, delta_override=override)
    n = a["A"].shape[1]
    out = {}
    for view, (bo, bs) in res.items():
        out[view] = (Bound(np.asarray(bo.values).reshape(b, l, h, p), bo.source),
                     Bound(np.asarray(bs.values).reshape(b, h, p, n), bs.source))
    return out


def ssd_bound(x, dt, A, B, C, D=None, z=None, *, view="recurrent", **kwargs) -> Tuple[Bound, Bound]:
    """The bounds ``(on y, on the final state)`` of one SSD view; see :func:`ssd_bounds`."""
    return ssd_bounds(x, dt, A, B, C, D, z, views=(view,), **kwargs)[view]


def decayed_linear_attention(q, k, v, a, *, initial_state=None):
    r"""Causal linear attention with a scalar decay per step and head, as one masked matrix.

    ``o_i = sum_{j<=i} G[i, j] (q_i . k_j) v_j + (prod_{k<=i} a_k) S_{-1} q_i`` with
    ``G[i, j] = prod_{k=j+1}^{i} a_k`` built by running products (float64; the decays are in (0, 1]).
    Shapes: ``q``, ``k`` ``(b l h n)``; ``v`` ``(b l h p)``; ``a`` ``(b l h)``; ``initial_state`` ``(b h p n)``
    (value x key).  Returns ``o`` ``(b l h p)``.
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
    if initial_state is not None:
        P = np.cumprod(a, axis=1)  # prod_{k<=i} a_k
        o = o + P[..., None] * np.einsum("bhpn,bihn->bihp", np.asarray(initial_state, dtype=np.float64), q)
    return o
