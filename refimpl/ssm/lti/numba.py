r"""Numba kernels for the LTI SSM core: the recurrence and the convolution kernel / causal convolution.

Same shapes, conventions and results as :mod:`refimpl.ssm.lti.reference` (the spec); the
property tests check them against the dense operator for l = 0, 1, odd, long, and for
time-varying systems (the recurrence).  Each public
function validates with the reference's :func:`~refimpl.ssm.lti.reference.validate_system`,
then calls a compiled loop.  Parallel over ``batch x channel`` with ``prange``.

Time-varying systems are passed to the compiled loop with a leading time axis
of length ``lt`` (1 for time-invariant, ``l`` for time-varying): step ``t`` reads index
``t`` when ``lt > 1`` and ``0`` otherwise.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from refimpl._numba import warmup
from refimpl._validate import check_bool
from refimpl.ssm.lti.reference import validate_conv, validate_kernel_args, validate_system

__all__ = ["recurrent", "kernel", "causal_conv", "convolution"]


@nb.njit(parallel=True, cache=True)
def _recurrent_diag(A_bar, B_bar, C, D, x, s0, y, hL):
    # A_bar (lt d n), B_bar (lt d n m), C (d p n), D (d p m), x (b l d m), s0 (b d n)
    b, l, d, m = x.shape
    n = A_bar.shape[2]
    p = C.shape[1]
    lt = A_bar.shape[0]
    ltb = B_bar.shape[0]
    for bd in nb.prange(b * d):
        bi = bd // d
        c = bd % d
        s = s0[bi, c].copy()
        for t in range(l):
            ta = t if lt > 1 else 0
            tb = t if ltb > 1 else 0
            # h_t = A_bar h_{t-1} + B_bar x_t   (diagonal A_bar: elementwise)
            for i in range(n):
                acc = A_bar[ta, c, i] * s[i]
                for j in range(m):
                    acc += B_bar[tb, c, i, j] * x[bi, t, c, j]
                s[i] = acc
            # y_t = C h_t + D x_t
            for q in range(p):
                acc = y[bi, t, c, q] * 0
                for i in range(n):
                    acc += C[c, q, i] * s[i]
                for j in range(m):
                    acc += D[c, q, j] * x[bi, t, c, j]
                y[bi, t, c, q] = acc
        for i in range(n):
            hL[bi, c, i] = s[i]


_VFLAGS = {"nnan", "ninf", "nsz", "reassoc", "contract"}


@nb.njit(cache=True, fastmath=_VFLAGS)
def _recurrent_diag_cplx_channel(ar, ai, Br, Bi, Cr, Ci, D, x, s0, y, hL):
    # one channel of a time-invariant complex diagonal system, real and imaginary parts in separate
    # (n) arrays so that the loops over the states vectorize (the sums over n reassociated: the bounds
    # count n sums in any order).  ar, ai (n); Br, Bi (m n); Cr, Ci (p n); D (p m); x (l m); s0 (n);
    # y (l p); hL (n)
    n = ar.shape[0]
    m = Br.shape[0]
    p = Cr.shape[0]
    l = x.shape[0]
    sr = np.empty(n, dtype=ar.dtype)
    si = np.empty(n, dtype=ar.dtype)
    for i in range(n):
        sr[i], si[i] = s0[i].real, s0[i].imag
    if m == 1 and p == 1:
        # single input and output (S4D, DSS): one fused pass over the states per step
        br, bi, cr, ci = Br[0], Bi[0], Cr[0], Ci[0]
        for t in range(l):
            xr, xi = x[t, 0].real, x[t, 0].imag
            accr = ar[0] * 0
            acci = ar[0] * 0
            for i in range(n):
                # h_t = A_bar h_{t-1} + B_bar x_t
                tr = ar[i] * sr[i] - ai[i] * si[i] + (br[i] * xr - bi[i] * xi)
                ti = ar[i] * si[i] + ai[i] * sr[i] + (br[i] * xi + bi[i] * xr)
                sr[i] = tr
                si[i] = ti
                # y_t = C h_t (summed over the states)
                accr += cr[i] * tr - ci[i] * ti
                acci += cr[i] * ti + ci[i] * tr
            # + D x_t
            y[t, 0] = accr + 1j * acci + D[0, 0] * x[t, 0]
        for i in range(n):
            hL[i] = sr[i] + 1j * si[i]
        return
    for t in range(l):
        # h_t = A_bar h_{t-1} + B_bar x_t   (diagonal A_bar: elementwise)
        for i in range(n):
            tr = ar[i] * sr[i] - ai[i] * si[i]
            si[i] = ar[i] * si[i] + ai[i] * sr[i]
            sr[i] = tr
        for j in range(m):
            xr, xi = x[t, j].real, x[t, j].imag
            for i in range(n):
                sr[i] += Br[j, i] * xr - Bi[j, i] * xi
                si[i] += Br[j, i] * xi + Bi[j, i] * xr
        # y_t = C h_t + D x_t
        for q in range(p):
            accr = ar[0] * 0
            acci = ar[0] * 0
            for i in range(n):
                accr += Cr[q, i] * sr[i] - Ci[q, i] * si[i]
                acci += Cr[q, i] * si[i] + Ci[q, i] * sr[i]
            acc = accr + 1j * acci
            for j in range(m):
                acc += D[q, j] * x[t, j]
            y[t, q] = acc
    for i in range(n):
        hL[i] = sr[i] + 1j * si[i]


@nb.njit(parallel=True, cache=True)
def _recurrent_diag_cplx(A_bar, B_bar, C, D, x, s0, y, hL):
    # time-invariant complex diagonal systems: A_bar (1 d n), B_bar (1 d n m), C (d p n), D (d p m),
    # x (b l d m), s0 (b d n); one channel per prange iteration
    b, l, d, m = x.shape
    for bd in nb.prange(b * d):
        bi = bd // d
        c = bd % d
        ar, ai = np.ascontiguousarray(A_bar[0, c].real), np.ascontiguousarray(A_bar[0, c].imag)
        Bt = np.ascontiguousarray(B_bar[0, c].T)  # (m n)
        Br, Bi = np.ascontiguousarray(Bt.real), np.ascontiguousarray(Bt.imag)
        Cr, Ci = np.ascontiguousarray(C[c].real), np.ascontiguousarray(C[c].imag)
        xc = np.ascontiguousarray(x[bi, :, c, :])
        yc = np.empty((l, C.shape[1]), dtype=y.dtype)
        hc = np.empty(A_bar.shape[2], dtype=hL.dtype)
        _recurrent_diag_cplx_channel(ar, ai, Br, Bi, Cr, Ci, D[c], xc, s0[bi, c], yc, hc)
        y[bi, :, c, :] = yc
        hL[bi, c, :] = hc


@nb.njit(parallel=True, cache=True)
def _recurrent_dense(A_bar, B_bar, C, D, x, s0, y, hL):
    # A_bar (lt d n n), B_bar (lt d n m), C (d p n), D (d p m), x (b l d m), s0 (b d n)
    b, l, d, m = x.shape
    n = A_bar.shape[2]
    p = C.shape[1]
    lt = A_bar.shape[0]
    ltb = B_bar.shape[0]
    for bd in nb.prange(b * d):
        bi = bd // d
        c = bd % d
        s = s0[bi, c].copy()
        s_new = np.zeros_like(s)
        for t in range(l):
            ta = t if lt > 1 else 0
            tb = t if ltb > 1 else 0
            # h_t = A_bar h_{t-1} + B_bar x_t
            for i in range(n):
                acc = s_new[i] * 0
                for k in range(n):
                    acc += A_bar[ta, c, i, k] * s[k]
                for j in range(m):
                    acc += B_bar[tb, c, i, j] * x[bi, t, c, j]
                s_new[i] = acc
            s[:] = s_new
            # y_t = C h_t + D x_t
            for q in range(p):
                acc = y[bi, t, c, q] * 0
                for i in range(n):
                    acc += C[c, q, i] * s[i]
                for j in range(m):
                    acc += D[c, q, j] * x[bi, t, c, j]
                y[bi, t, c, q] = acc
        for i in range(n):
            hL[bi, c, i] = s[i]


def _prep(A_bar, B_bar, C, D, x, initial_state, diagonal):
    """Validate (the reference's checks); return contiguous ``A_bar (lt d ...)``, ``B_bar (lt d n m)``, ``C``,
    ``D`` (zeros when None), ``x``, the start state (zeros when None) and the dims."""
    A_bar, B_bar, C, D, x, s0, d = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal)
    dt = x.dtype
    A_t = A_bar if d["tv"] else A_bar[None]
    B_t = B_bar if B_bar.ndim == 4 else B_bar[None]
    D_ = np.zeros((d["d"], d["p"], d["m"]), dtype=dt) if D is None else D
    s0_ = np.zeros((d["b"], d["d"], d["n"]), dtype=dt) if s0 is None else s0
    c = np.ascontiguousarray
    return c(A_t), c(B_t), c(C), c(D_), c(x), c(s0_), d


def recurrent(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False,
              return_final_state: bool = False):
    """Numba recurrence; same signature and result as :func:`refimpl.ssm.lti.reference.recurrent`
    (time-varying ``A_bar``/``B_bar`` allowed)."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_t, B_t, C_, D_, x_, s0_, d = _prep(A_bar, B_bar, C, D, x, initial_state, diagonal)
    y = np.zeros((d["b"], d["l"], d["d"], d["p"]), dtype=x_.dtype)
    hL = np.zeros((d["b"], d["d"], d["n"]), dtype=x_.dtype)
    if x_.size or s0_.size:
        if diagonal and np.iscomplexobj(x_) and A_t.shape[0] == 1 and B_t.shape[0] == 1:
            # the vectorized path for time-invariant complex diagonal systems (S4D, DSS, S5, LRU)
            _recurrent_diag_cplx(A_t, B_t, C_, D_, x_, s0_, y, hL)
        else:
            (_recurrent_diag if diagonal else _recurrent_dense)(A_t, B_t, C_, D_, x_, s0_, y, hL)
    return (y, hL) if return_final_state else y


@nb.njit(parallel=True, cache=True)
def _kernel_diag(A_bar, B_bar, C, K):
    # K_k = C A_bar^k B_bar, with A_bar^k B_bar kept as P (n m) per channel
    L, d, p, m = K.shape
    n = A_bar.shape[1]
    for c in nb.prange(d):
        P = B_bar[c].copy()
        for k in range(L):
            for q in range(p):
                for j in range(m):
                    acc = K[k, c, q, j] * 0
                    for i in range(n):
                        acc += C[c, q, i] * P[i, j]
                    K[k, c, q, j] = acc
            # P <- A_bar P
            for i in range(n):
                for j in range(m):
                    P[i, j] = A_bar[c, i] * P[i, j]


@nb.njit(parallel=True, cache=True)
def _kernel_dense(A_bar, B_bar, C, K):
    L, d, p, m = K.shape
    n = A_bar.shape[1]
    for c in nb.prange(d):
        P = B_bar[c].copy()
        Pn = np.zeros_like(P)
        for k in range(L):
            for q in range(p):
                for j in range(m):
                    acc = K[k, c, q, j] * 0
                    for i in range(n):
                        acc += C[c, q, i] * P[i, j]
                    K[k, c, q, j] = acc
            # P <- A_bar P
            for i in range(n):
                for j in range(m):
                    acc = Pn[i, j] * 0
                    for r in range(n):
                        acc += A_bar[c, i, r] * P[r, j]
                    Pn[i, j] = acc
            P[:, :] = Pn


def kernel(A_bar, B_bar, C, L: int, *, diagonal: bool = False) -> np.ndarray:
    """Numba ``K_k = C A_bar^k B_bar``; same as :func:`refimpl.ssm.lti.reference.kernel`."""
    A_bar, B_bar, C, L, d = validate_kernel_args(A_bar, B_bar, C, L, diagonal)
    dtype = np.result_type(A_bar, B_bar, C)
    K = np.zeros((L, d["d"], d["p"], d["m"]), dtype=dtype)
    if L and K.size:
        c = np.ascontiguousarray
        (_kernel_diag if diagonal else _kernel_dense)(c(A_bar.astype(dtype)), c(B_bar.astype(dtype)),
                                                      c(C.astype(dtype)), K)
    return K


@nb.njit(parallel=True, cache=True)
def _causal_conv(K, x, D, y):
    # y_t = sum_{k<=t} K_k x_{t-k} + D x_t
    b, l, d, m = x.shape
    p = K.shape[2]
    for bd in nb.prange(b * d):
        bi = bd // d
        c = bd % d
        for t in range(l):
            for q in range(p):
                acc = y[bi, t, c, q] * 0
                for k in range(t + 1):
                    for j in range(m):
                        acc += K[k, c, q, j] * x[bi, t - k, c, j]
                for j in range(m):
                    acc += D[c, q, j] * x[bi, t, c, j]
                y[bi, t, c, q] = acc


def causal_conv(K, x, D=None) -> np.ndarray:
    """Numba direct causal convolution; same as :func:`refimpl.ssm.lti.reference.causal_conv`."""
    K, x, D, dtype = validate_conv(K, x, D)
    b, l, d, m = x.shape
    p = K.shape[2]
    D_ = np.zeros((d, p, m), dtype=dtype) if D is None else D.astype(dtype)
    y = np.zeros((b, l, d, p), dtype=dtype)
    if y.size:
        c = np.ascontiguousarray
        _causal_conv(c(K.astype(dtype)), c(x.astype(dtype)), c(D_), y)
    return y


def _apply_A(A_bar, s, diagonal):
    """``A_bar s`` for states ``s`` ``(b d n)``."""
    return A_bar[None] * s if diagonal else np.einsum("dij,bdj->bdi", A_bar, s)


def convolution(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False,
                return_final_state: bool = False):
    r"""Numba convolution view: :func:`kernel` then :func:`causal_conv`; same as
    :func:`refimpl.ssm.lti.reference.convolution` (time-invariant systems).

    The initial state and the final state are convolution kernels too, computed by the same
    compiled :func:`kernel` (the batch of states in place of the inputs ``m``):

    * ``C A_bar^{t+1} s = C A_bar^t (A_bar s)``: the kernel of ``(A_bar, A_bar s, C)``, ``t = 0..l-1``;
    * ``h_{l-1} = sum_k (A_bar^k B_bar) x_{l-1-k} + A_bar^l s``, with ``A_bar^k B_bar`` the kernel of
      ``(A_bar, B_bar, I)`` and ``A_bar^l s`` the last entry of the kernel of ``(A_bar, A_bar s, I)``.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                      time_varying_ok=False, view="convolution")
    l = dims["l"]
    # y_t = sum_{k<=t} K_k x_{t-k} + D x_t,  K_k = C A_bar^k B_bar
    y = causal_conv(kernel(A_bar, B_bar, C, l, diagonal=diagonal), x, D).astype(x.dtype, copy=False)
    As0 = None if s0 is None else np.transpose(_apply_A(A_bar, s0, diagonal), (1, 2, 0))  # (d n b)
    if As0 is not None:
        # + C A_bar^{t+1} s:  the kernel of (A_bar, A_bar s, C), (l d p b) -> (b l d p)
        y = y + np.transpose(kernel(A_bar, As0, C, l, diagonal=diagonal), (3, 0, 1, 2))
    if not return_final_state:
        return y
    eye = np.broadcast_to(np.eye(dims["n"], dtype=x.dtype), (dims["d"], dims["n"], dims["n"]))
    # h_{l-1} = sum_k A_bar^k B_bar x_{l-1-k}
    P = kernel(A_bar, B_bar, eye, l, diagonal=diagonal)  # A_bar^k B_bar, (l d n m)
    h = np.einsum("kdnm,bkdm->bdn", P, x[:, ::-1]).astype(x.dtype, copy=False)
    if As0 is not None:
        # + A_bar^l s
        h = h + (np.transpose(kernel(A_bar, As0, eye, l, diagonal=diagonal)[l - 1], (2, 0, 1)) if l else s0)
    return y, h


@warmup
def _warm():
    for dt in (np.float64, np.float32, np.complex128):
        x = np.ones((1, 2, 1, 1), dtype=dt)
        for diag in (True, False):
            A = np.full((1, 2) if diag else (1, 2, 2), 0.5, dtype=dt)
            B = np.ones((1, 2, 1), dtype=dt)
            C = np.ones((1, 1, 2), dtype=dt)
            recurrent(A, B, C, None, x, diagonal=diag)
            convolution(A, B, C, None, x, diagonal=diag)
