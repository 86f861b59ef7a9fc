r"""Fused Numba kernel for Mamba's selective scan (S6).

One pass per ``(batch, channel)`` pair, parallel over ``batch x channels`` (``prange``): for each
step it computes ``Delta_t = softplus(delta_t + delta_bias)`` (threshold 20), ``A_bar = exp(Delta_t A)``
and ``B_bar u`` on the fly for each of the ``N`` state entries, updates the ``N``-vector state in
registers/a small local array, and reduces ``y_t = sum_n C_t h_t`` (``2 Re`` for complex ``A``),
then ``(y_t + D u_t) * silu(z_t)``.  Nothing of size ``(b d l n)`` is ever materialized; ``B``/``C``
are read in a ``(b g l n)`` layout (a copy of the input, transposed so the ``n`` loop is contiguous).

Same arguments, conventions, validation and results as :func:`refimpl.ssm.selective.reference.recurrent`.
Arithmetic runs in the working dtype (float32 inputs -> float32 arithmetic, as in the CUDA kernels).

Fast path (real ``A``, Euler ``B``, the ``"mamba"`` discretization; :func:`_s6_real_kernel`): the step
``Delta`` comes from :func:`refimpl.ssm.selective.reference.prepare` (which computes and validates it anyway);
per channel, time runs in chunks of ``_TCHUNK`` steps: the chunk's ``T x N`` exponentials
``exp(Delta_t A)`` in one vectorizable pass (float32: the polynomial ``exp`` of :mod:`refimpl._fastmath`,
relative error <= ``gamma_4`` = 2 ulp, within the 4-ulp ``TRANSCENDENTAL_U`` that the bound
allows an ``exp``; float64: libm), then the recurrence vectorized over the states, then
``y_t = sum_n C_tn h_tn`` (reassociated: the bound counts depth ``N``, any order).
Complex ``A`` and ZOH use the general kernel :func:`_s6_kernel`.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from refimpl._fastmath import exp_parts
from refimpl._numba import warmup
from refimpl.ssm.selective.reference import prepare

__all__ = ["selective_scan_numba"]

_TCHUNK = 64  # time steps per chunk of the real-A kernel (its T x N exponentials stay in L1)


def _phi1(w):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_phi1)
def _phi1_ov(w):
    # phi1(w) = (e^w - 1)/w; phi1(0) = 1
    if isinstance(w, types.Complex):
        def impl(w):
            if abs(w) < 1e-5:
                # 1 + w/2 + w^2/6: truncation |w|^3/24 below float64's u; no division by a tiny w
                return 1 + w * 0.5 + w * w / 6
            # expm1(a + ib) = expm1(a) cos b - 2 sin^2(b/2) + i e^a sin b  (no cancellation near 0)
            a, b = w.real, w.imag
            s = math.sin(b * 0.5)
            em1 = complex(math.expm1(a) * math.cos(b) - 2.0 * s * s, math.exp(a) * math.sin(b))
            return (em1 / w) * (w * 0 + 1)
        return impl

    def impl_r(w):
        if abs(w) < 1e-5:
            # 1 + w/2 + w^2/6: truncation |w|^3/24 below float64's u; no division by a tiny w
            return 1 + w * 0.5 + w * w / 6
        return math.expm1(w) / w
    return impl_r


@numba.njit(parallel=True, cache=True)
def _s6_kernel(u, delta, bias, A, Bk, Ck, D, z, h0, softplus, zoh, has_z, is_cplx, one, thr, out, last):
    b, d, l = u.shape
    n = A.shape[1]
    gB = Bk.shape[1]
    gC = Ck.shape[1]
    perB = d // gB
    perC = d // gC
    for idx in prange(b * d):
        bi = idx // d
        di = idx - bi * d
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        g_b = di // perB
        g_c = di // perC
        h = h0[bi, di].copy()
        for t in range(l):
            tb = t if Bk.shape[2] > 1 else 0
            tc = t if Ck.shape[2] > 1 else 0
            # Delta_t = softplus(delta_t + delta_bias)   (threshold 20)
            x = delta[bi, di, t] + bias[di]
            if softplus and x <= thr:
                x = math.log1p(math.exp(x))
            ut = u[bi, di, t]
            y = h[0] * 0
            for k in range(n):
                w = x * A[di, k]
                # A_bar = exp(Delta A)
                a_bar = np.exp(w)
                # B_bar u = Delta B u (mamba) or Delta phi1(Delta A) B u (zoh)
                if zoh:
                    bu = (x * ut) * _phi1(w) * Bk[bB, g_b, tb, k]
                else:
                    bu = (x * ut) * Bk[bB, g_b, tb, k]
                # h = A_bar h + B_bar u
                h[k] = a_bar * h[k] + bu
                # y = sum_n C h
                y += h[k] * Ck[bC, g_c, tc, k]
            if is_cplx:
                yr = (one + one) * y.real
            else:
                yr = y.real
            # out = (y + D u) * silu(z)
            o = yr + D[di] * ut
            if has_z:
                zz = z[bi, di, t]
                o = o * (zz / (one + math.exp(-zz)))
            out[bi, di, t] = o
        for k in range(n):
            last[bi, di, k] = h[k]


_REDUCE = {"nnan", "ninf", "nsz", "reassoc", "contract"}


@numba.njit(cache=True, fastmath=_REDUCE)
def _row_dots(H, C, y):
    # y_t = sum_n C_tn h_tn for the rows of a chunk (reassociated to vectorize: the bound counts depth N,
    # which holds for any summation order)
    for t in range(H.shape[0]):
        acc = H[t, 0] * 0
        for k in range(H.shape[1]):
            acc += H[t, k] * C[t, k]
        y[t] = acc


@numba.njit(cache=True)
def _exp_outer(x, a, E, bits):
    # E_tk = exp(x_t a_k) for a (T N) chunk (E, bits: flat T*N buffers): the float32 polynomial exp of
    # refimpl._fastmath (vectorized; relative error <= gamma_4, within the 4-ulp allowance of the bound),
    # libm's exp for float64. Not fastmath: the polynomial's rounding steps must stay as written.
    T = x.shape[0]
    n = a.shape[0]
    if E.itemsize == 4:
        for t in range(T):
            xt = x[t]
            for k in range(n):
                p, bb = exp_parts(xt * a[k])
                E[t * n + k] = p
                bits[t * n + k] = bb
        pow2 = bits.view(np.float32)
        for i in range(T * n):
            E[i] *= pow2[i]
    else:
        for t in range(T):
            for k in range(n):
                E[t * n + k] = np.exp(x[t] * a[k])


@numba.njit(parallel=True, cache=True)
def _s6_real_kernel(u, Delta, A, Bk, Ck, D, z, h0, has_z, one, tchunk, out, last):
    # Real A, Euler-B ("mamba") discretization. Per (batch, channel), time in chunks of `tchunk` steps:
    # the exponentials of the whole chunk first (one vectorizable loop over T x N), then the recurrence
    # (vectorized over the N states), then the outputs of the chunk.
    b, d, l = u.shape
    n = A.shape[1]
    gB = Bk.shape[1]
    gC = Ck.shape[1]
    perB = d // gB
    perC = d // gC
    dt = u.dtype
    for idx in prange(b * d):
        bi = idx // d
        di = idx - bi * d
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        g_b = di // perB
        g_c = di // perC
        h = h0[bi, di].copy()
        Abf = np.empty(tchunk * n, dtype=dt)
        bitsf = np.empty(tchunk * n, dtype=np.int32)
        H = np.empty((tchunk, n), dtype=dt)
        y = np.empty(tchunk, dtype=dt)
        Bfix = Bk.shape[2] == 1
        Cfix = Ck.shape[2] == 1
        Cbuf = np.empty((tchunk, n), dtype=dt)
        for s in range(0, l, tchunk):
            T = min(tchunk, l - s)
            Ab = Abf[:T * n].reshape((T, n))
            # A_bar_tk = exp(Delta_t A_k), one vectorizable pass over the T x N block
            _exp_outer(Delta[bi, di, s:s + T], A[di], Abf[:T * n], bitsf[:T * n])
            # h_t = A_bar_t h_{t-1} + (Delta_t u_t) B_t ;  H_t = h_t
            for t in range(T):
                xu = Delta[bi, di, s + t] * u[bi, di, s + t]
                tb = 0 if Bfix else s + t
                for k in range(n):
                    h[k] = Ab[t, k] * h[k] + xu * Bk[bB, g_b, tb, k]
                    H[t, k] = h[k]
            # y_t = sum_n C_t h_t
            if Cfix:
                for t in range(T):
                    for k in range(n):
                        Cbuf[t, k] = Ck[bC, g_c, 0, k]
                _row_dots(H[:T], Cbuf[:T], y)
            else:
                _row_dots(H[:T], Ck[bC, g_c, s:s + T], y)
            # out = y + D u, times silu(z) when gated
            Dd = D[di]
            for t in range(T):
                out[bi, di, s + t] = y[t] + Dd * u[bi, di, s + t]
            if has_z:
                for t in range(T):
                    zz = z[bi, di, s + t]
                    out[bi, di, s + t] = out[bi, di, s + t] * (zz / (one + math.exp(-zz)))
        for k in range(n):
            last[bi, di, k] = h[k]


def _canonical_bc(X: np.ndarray, mode: str, dtype) -> np.ndarray:
    """``(b g l n)`` contiguous: fixed ``(d n)`` -> ``(1 d 1 n)``, variable ``(b n l)`` -> ``(b 1 l n)``."""
    if mode == "fixed":
        Y = X[None, :, None, :]
    elif mode == "variable":
        Y = np.transpose(X, (0, 2, 1))[:, None]
    else:
        Y = np.transpose(X, (0, 1, 3, 2))
    return np.ascontiguousarray(Y, dtype=dtype)


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False,
                         h0=None, return_last_state: bool = False, discretization: str = "mamba",
                         allow_unstable: bool = False):
    """The fused kernel; arguments and results as :func:`refimpl.ssm.selective.reference.recurrent`."""
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus, h0=h0,
                discretization=discretization, allow_unstable=allow_unstable)
    rdt, sdt = p.out_dtype, p.dtype
    # the state has A's kind: complex for complex A; B/C are promoted to it
    cplx = np.iscomplexobj(p.A)
    Bk = _canonical_bc(p.B, p.B_mode, sdt if cplx else rdt)
    Ck = _canonical_bc(p.C, p.C_mode, sdt if cplx else rdt)
    bias = np.zeros(p.d, dtype=rdt) if p.delta_bias is None else np.ascontiguousarray(p.delta_bias)
    Dv = np.zeros(p.d, dtype=rdt) if p.D is None else np.ascontiguousarray(p.D)
    zz = np.zeros((1, 1, 1), dtype=rdt) if p.z is None else np.ascontiguousarray(p.z)
    hh = np.zeros((p.b, p.d, p.n), dtype=sdt) if p.h0 is None else np.ascontiguousarray(p.h0, dtype=sdt)
    out = np.empty((p.b, p.d, p.l), dtype=rdt)
    last = np.empty((p.b, p.d, p.n), dtype=sdt)
    if not cplx and discretization == "mamba":
        # the fast path: real A, Euler B; Delta as computed (and validated) by prepare
        _s6_real_kernel(np.ascontiguousarray(p.u), np.ascontiguousarray(p.Delta, dtype=rdt),
                        np.ascontiguousarray(p.A, dtype=rdt), Bk, Ck, Dv, zz, hh, p.z is not None, rdt.type(1),
                        _TCHUNK, out, last)
        return (out, last) if return_last_state else out
    _s6_kernel(np.ascontiguousarray(p.u), np.ascontiguousarray(p.delta), bias, np.ascontiguousarray(p.A, dtype=sdt),
               Bk, Ck, Dv, zz, hh, bool(delta_softplus), discretization == "zoh", p.z is not None, bool(cplx),
               rdt.type(1), rdt.type(20.0), out, last)
    return (out, last) if return_last_state else out


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for rdt, cdt in ((np.float64, np.complex128), (np.float32, np.complex64)):
        u = rng.standard_normal((1, 2, 3)).astype(rdt)
        Ar = -np.ones((2, 2), dtype=rdt)
        for A in (Ar, (Ar + 1j * Ar).astype(cdt)):
            for Bm in (np.ones((2, 2), dtype=rdt), np.ones((1, 2, 3), dtype=rdt), np.ones((1, 1, 2, 3), dtype=rdt)):
                for disc in ("mamba", "zoh"):
                    selective_scan_numba(u, u, A, Bm, Bm, z=u, discretization=disc, delta_softplus=True)
