r"""Fused Numba kernel for Mamba's selective scan (S6).

General kernel (:func:`_s6_kernel`): one pass per ``(batch, channel)`` pair, parallel over
``batch x channels`` (``prange``).  The step
``Delta_t = softplus(delta_t + delta_bias)`` comes from :func:`refimpl.ssm.selective.reference.prepare`
(which computes and validates it anyway); for each step the kernel computes ``A_bar = exp(Delta_t A)``
and ``B_bar u`` on the fly for each of the ``N`` state entries, updates the ``N``-vector state in
registers/a small local array, and reduces ``y_t = sum_n C_t h_t`` (``2 Re`` for complex ``A``),
then ``(y_t + D u_t) * silu(z_t)``.  Nothing of size ``(b l d n)`` is ever materialized; the inputs are
read in place in the sequence-first layout: ``u``, ``delta``, ``z`` ``(b l d)``, and ``B``/``C`` as
``(b l g n)`` (fixed ``(d n)`` seen as ``(1 1 d n)``, variable ``(b l n)`` as ``(b l 1 n)``: no copy), so the
``n`` loop over a ``B_t``/``C_t`` row is unit-stride.

Same arguments, conventions, validation and results as :func:`refimpl.ssm.selective.reference.recurrent`
(it is ``selective_scan(..., view="recurrent", backend="numba")``).
Arithmetic runs in the working dtype (float32 inputs -> float32 arithmetic, as in the CUDA kernels).

Fast path (real ``A``, Euler ``B``, the ``"mamba"`` discretization; :func:`_s6_real_kernel`):
parallel over blocks of ``_CBLOCK`` adjacent channels, time runs in chunks of ``_TCHUNK`` steps
and a block's channels take each chunk in turn (the chunk's rows stay in cache); per channel the
``T x N`` exponentials ``exp(Delta_t A)`` in one vectorizable pass (float32: the polynomial ``exp`` of
:mod:`refimpl._fastmath`, relative error <= ``gamma_4`` = 2 ulp, within the 4-ulp ``TRANSCENDENTAL_U`` that
the bound allows an ``exp``; float64: libm), then the recurrence vectorized over the states, then
``y_t = sum_n C_tn h_tn`` (reassociated: the bound counts depth ``N``, any order).  The sequence-first layout
makes a channel's time series strided (``d`` apart): against the former channel-first kernel this path
measured about 25% slower single-threaded in float32 (``b d n l = 1 1536 16 2048``), about 5% in
float64; the general kernel got about 10% faster (``B``/``C`` are no longer transposed copies).
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
from refimpl._validate import check_bool
from refimpl.ssm.selective.reference import prepare

__all__ = ["selective_scan_numba"]

_TCHUNK = 64  # time steps per chunk of the real-A kernel (its T x N exponentials stay in L1)
_CBLOCK = 16  # channels per parallel task of the real-A kernel (one 64-byte line of a float32 (b l d) row)


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
def _s6_kernel(u, Delta, A, Bk, Ck, D, z, h0, zoh, has_z, is_cplx, one, out, last):
    # u, Delta, z, out: (b l d); Bk, Ck: (b|1, l|1, g, n); h0, last: (b d n)
    b, l, d = u.shape
    n = A.shape[1]
    gB = Bk.shape[2]
    gC = Ck.shape[2]
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
            tb = t if Bk.shape[1] > 1 else 0
            tc = t if Ck.shape[1] > 1 else 0
            x = Delta[bi, t, di]  # Delta_t = softplus(delta_t + delta_bias), computed by prepare
            ut = u[bi, t, di]
            y = h[0] * 0
            for k in range(n):
                w = x * A[di, k]
                # A_bar = exp(Delta A)
                a_bar = np.exp(w)
                # B_bar u = Delta B u (mamba) or Delta phi1(Delta A) B u (zoh)
                if zoh:
                    bu = (x * ut) * _phi1(w) * Bk[bB, tb, g_b, k]
                else:
                    bu = (x * ut) * Bk[bB, tb, g_b, k]
                # h = A_bar h + B_bar u
                h[k] = a_bar * h[k] + bu
                # y = sum_n C h
                y += h[k] * Ck[bC, tc, g_c, k]
            if is_cplx:
                yr = (one + one) * y.real
            else:
                yr = y.real
            # out = (y + D u) * silu(z)
            o = yr + D[di] * ut
            if has_z:
                zz = z[bi, t, di]
                o = o * (zz / (one + math.exp(-zz)))
            out[bi, t, di] = o
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


@numba.njit(cache=True, fastmath=_REDUCE)
def _row_dots_at(H, T, Ck, bC, s, g_c, fixed, y):
    # y_t = sum_n C_tn h_tn for the T rows of a chunk, C_t read in place from the (b|1, l|1, g, n) array (a
    # C-contiguous array indexed to its last axis: the n loop is unit-stride and vectorizes); reassociated
    # like _row_dots
    for t in range(T):
        tc = 0 if fixed else s + t
        acc = H[t, 0] * 0
        for k in range(H.shape[1]):
            acc += H[t, k] * Ck[bC, tc, g_c, k]
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
def _s6_real_kernel(u, Delta, A, Bk, Ck, D, z, h0, has_z, one, tchunk, cblock, out, last):
    # Real A, Euler-B ("mamba") discretization. Parallel over (batch, blocks of `cblock` adjacent channels);
    # time in chunks of `tchunk` steps, and within a chunk the block's channels one after another, each with
    # its state kept across chunks: the chunk's rows of u, Delta, z and out ((b l d): the block's channels
    # are adjacent in a row) and of B, C stay in L1 while the block works on them. Per channel and chunk:
    # the exponentials first (one vectorizable loop over T x N), then the recurrence (vectorized over the N
    # states), then the outputs.
    # u, Delta, z, out: (b l d); Bk, Ck: (b|1, l|1, g, n); h0, last: (b d n)
    b, l, d = u.shape
    n = A.shape[1]
    gB = Bk.shape[2]
    gC = Ck.shape[2]
    perB = d // gB
    perC = d // gC
    dt = u.dtype
    nblk = (d + cblock - 1) // cblock
    Bfix = Bk.shape[1] == 1
    Cfix = Ck.shape[1] == 1
    for idx in prange(b * nblk):
        bi = idx // nblk
        c0 = (idx - bi * nblk) * cblock
        K = min(cblock, d - c0)
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        hs = np.empty((K, n), dtype=dt)
        for c in range(K):
            for k in range(n):
                hs[c, k] = h0[bi, c0 + c, k]
        Abf = np.empty(tchunk * n, dtype=dt)
        bitsf = np.empty(tchunk * n, dtype=np.int32)
        H = np.empty((tchunk, n), dtype=dt)
        y = np.empty(tchunk, dtype=dt)
        xs = np.empty(tchunk, dtype=dt)
        for s in range(0, l, tchunk):
            T = min(tchunk, l - s)
            Ab = Abf[:T * n].reshape((T, n))
            for c in range(K):
                di = c0 + c
                g_b = di // perB
                g_c = di // perC
                h = hs[c]
                for t in range(T):
                    xs[t] = Delta[bi, s + t, di]  # the chunk's steps of channel di (d apart in memory)
                # A_bar_tk = exp(Delta_t A_k), one vectorizable pass over the T x N block
                _exp_outer(xs[:T], A[di], Abf[:T * n], bitsf[:T * n])
                # h_t = A_bar_t h_{t-1} + (Delta_t u_t) B_t ;  H_t = h_t
                for t in range(T):
                    xu = xs[t] * u[bi, s + t, di]
                    tb = 0 if Bfix else s + t
                    for k in range(n):
                        h[k] = Ab[t, k] * h[k] + xu * Bk[bB, tb, g_b, k]
                        H[t, k] = h[k]
                # y_t = sum_n C_t h_t
                _row_dots_at(H, T, Ck, bC, s, g_c, Cfix, y)
                # out = y + D u, times silu(z) when gated
                Dd = D[di]
                for t in range(T):
                    out[bi, s + t, di] = y[t] + Dd * u[bi, s + t, di]
                if has_z:
                    for t in range(T):
                        zz = z[bi, s + t, di]
                        out[bi, s + t, di] = out[bi, s + t, di] * (zz / (one + math.exp(-zz)))
        for c in range(K):
            for k in range(n):
                last[bi, c0 + c, k] = hs[c, k]


def _as_bl_gn(X: np.ndarray, mode: str, dtype) -> np.ndarray:
    """``(b|1, l|1, g, n)`` views: fixed ``(d n)`` -> ``(1 1 d n)``, variable ``(b l n)`` -> ``(b l 1 n)``,
    grouped as is.

    Inserting unit axes keeps a C-contiguous array contiguous: no copy unless the dtype changes.
    """
    if mode == "fixed":
        Y = X[None, None]
    elif mode == "variable":
        Y = X[:, :, None, :]
    else:
        Y = X
    return np.ascontiguousarray(Y, dtype=dtype)


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False,
                         initial_state=None, return_final_state: bool = False, discretization: str = "mamba",
                         allow_unstable: bool = False):
    """The fused kernel; arguments and results as :func:`refimpl.ssm.selective.reference.recurrent`."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, discretization=discretization, allow_unstable=allow_unstable)
    rdt, sdt = p.out_dtype, p.dtype
    # the state has A's kind: complex for complex A; B/C are promoted to it
    cplx = np.iscomplexobj(p.A)
    Bk = _as_bl_gn(p.B, p.B_mode, sdt if cplx else rdt)
    Ck = _as_bl_gn(p.C, p.C_mode, sdt if cplx else rdt)
    Dv = np.zeros(p.d, dtype=rdt) if p.D is None else np.ascontiguousarray(p.D)
    zz = np.zeros((1, 1, 1), dtype=rdt) if p.z is None else np.ascontiguousarray(p.z)
    hh = (np.zeros((p.b, p.d, p.n), dtype=sdt) if p.initial_state is None
          else np.ascontiguousarray(p.initial_state, dtype=sdt))
    out = np.empty((p.b, p.l, p.d), dtype=rdt)
    last = np.empty((p.b, p.d, p.n), dtype=sdt)
    if not cplx and discretization == "mamba":
        # the fast path: real A, Euler B; Delta as computed (and validated) by prepare
        _s6_real_kernel(np.ascontiguousarray(p.u), np.ascontiguousarray(p.Delta, dtype=rdt),
                        np.ascontiguousarray(p.A, dtype=rdt), Bk, Ck, Dv, zz, hh, p.z is not None, rdt.type(1),
                        _TCHUNK, _CBLOCK, out, last)
        return (out, last) if return_final_state else out
    # the general kernel (complex A, or ZOH); Delta as computed (and validated) by prepare
    _s6_kernel(np.ascontiguousarray(p.u), np.ascontiguousarray(p.Delta, dtype=rdt),
               np.ascontiguousarray(p.A, dtype=sdt), Bk, Ck, Dv, zz, hh, discretization == "zoh", p.z is not None,
               bool(cplx), rdt.type(1), out, last)
    return (out, last) if return_final_state else out


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for rdt, cdt in ((np.float64, np.complex128), (np.float32, np.complex64)):
        u = rng.standard_normal((1, 3, 2)).astype(rdt)  # (b l d)
        Ar = -np.ones((2, 2), dtype=rdt)
        for A in (Ar, (Ar + 1j * Ar).astype(cdt)):
            for Bm in (np.ones((2, 2), dtype=rdt), np.ones((1, 3, 2), dtype=rdt), np.ones((1, 3, 1, 2), dtype=rdt)):
                for disc in ("mamba", "zoh"):
                    selective_scan_numba(u, u, A, Bm, Bm, z=u, discretization=disc, delta_softplus=True)
