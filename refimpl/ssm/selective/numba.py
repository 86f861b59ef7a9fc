r"""Fused Numba kernels for Mamba's selective scan (S6).

Same arguments, conventions, validation and results as :func:`refimpl.ssm.selective.reference.recurrent`
(this is ``selective_scan(..., view="recurrent", backend="numba")``).  Arithmetic runs in the working dtype
(float32 inputs -> float32 arithmetic, as in the CUDA kernels).  Nothing of size ``(b l d n)`` is ever
materialized; the inputs are read in place in the sequence-first layout (``u``, ``delta``, ``z`` ``(b l d)``;
``B``/``C`` as ``(b|1, l|1, g, n)``: fixed ``(d n)`` seen as ``(1 1 d n)``, variable ``(b l n)`` as
``(b l 1 n)``, no copy).

Fast path (real ``A``, the ``"mamba"`` discretization: Euler ``B``; :func:`_s6_fused`)
-------------------------------------------------------------------------------------
Parallel (``prange``) over blocks of ``cb`` adjacent channels (``cb = min(64, d)``; the block's channels are
adjacent in every ``(b l d)`` row).  The inner loops run over the block's channels, so every load and store is
unit-stride, no reduction crosses SIMD lanes, and the block's state ``h`` ``(n, cb)`` stays in L1.  Per time
chunk of ``tc = 16`` steps the block's rows of ``delta`` and ``u`` are staged; per step:

* ``Delta_t = softplus(delta_t + delta_bias)`` computed in the kernel (:func:`_softplus`, below), with the
  reference's checks (finite; ``>= 0`` unless ``allow_unstable``) kept as per-lane flags;
* for each state ``k``: ``h_k <- exp(Delta_t A_k) h_k + (Delta_t u_t) B_tk`` and ``y_t += C_tk h_k``, the
  exponential by :func:`_exp` (float32: the polynomial of :mod:`refimpl._fastmath`, vectorized);
* ``out_t = (y_t + D u_t) silu(z_t)``.

When the block's channels share ``B_t``/``C_t`` (variable layout, or groups of a multiple of ``cb`` channels)
the step reads them as scalars; otherwise (fixed ``(d n)``, small groups) the per-channel rows are gathered
into ``(n, cb)`` buffers first (:func:`_step_lanes`).  The block width ``cb = 64`` matters: LLVM vectorizes the
channel loop 16 lanes x 4 (float32 AVX-512), so a 16-channel loop would never enter the vector body.

Floating-point contraction (``fastmath={"contract"}``: ``a*b + c`` may become one FMA) is the only relaxation.
An FMA rounds once where the separate multiply and add round twice, so every error bound of a sum of rounded
operations here still holds (the running-error weights only lose terms): the recurrence (2 roundings per step
in ``oracles.selective.s6_bounds``), the readout, and the float32 ``exp`` (whose range reduction stays exact:
``n`` is still an integer with ``|x log2 e - n| <= 1/2 + tiny``, ``x - n ln2_hi`` is exact either way, and the
Horner steps lose a rounding each; :data:`refimpl._fastmath.EXP_REL_ERR` = ``gamma_4`` still bounds it).
No ``nnan``/``ninf``/``reassoc``: the validation flags and the order of every sum are as written.

The softplus in the kernel (float32; float64 uses libm ``log1p(exp(x))``, the reference's formula):
``softplus(x) = x`` for ``x > 20`` (the threshold of PyTorch/Mamba), else ``max(x, 0) + log1p(e)`` with
``e = exp(-|x|)`` (the float32 polynomial exp; for ``x < -64`` as ``exp(x + 44.375) e^{-44.375}``, the shift exact
in float32 -- ``|x| < 128`` has ulp ``2^-17`` and the sum is below 64 -- so a result down in the subnormal range
keeps its accuracy down to ``2^-148``; below, ``s = e/2`` may round to 0: an absolute error ``<= 2^-149``, the
subnormal spacing) and ``log1p(e) = 2 atanh(s) = 2 s (1 + s^2/3 + ... + s^16/17)``, ``s = e/(2 + e) <= 1/3``
(series truncation ``<= (1/9)^9/19 / (8/9) < 1e-10`` relative), all in float32.  Error, first order in ``u``:
the exp's ``gamma_4`` (4u; 6u with the shift's constant and product, where ``e < 2^-92`` and the rest is exact)
carries into ``log1p(e)`` times ``e/((1+e) log1p(e)) <= 1``; ``s`` is off by the add and the division (2u),
carried times ``s/((1 - s^2) atanh s) <= 1.082``; the Horner sum ``q in [1, 1.04]``: ``u`` for its last add plus
``0.04 (3u + 2u)`` from the terms below it (coefficients rounded included): ``1.2u``; the product ``2 s q``: ``u``;
so ``log1p(e)`` is within ``8.4u`` and the sum ``max(x,0) + log1p(e)`` (both terms non-negative) within
``9.4u``: below the ``2 k_fn = 16u`` that ``oracles.selective.s6_bounds`` allows the step.  (A float64 series was
measured 9% slower on the whole W1 kernel: its division is the costly step.)
The gate ``silu(z) = z sigmoid(z)`` with ``sigmoid = 1/(1+e)`` (``z >= 0``) or ``e/(1+e)`` (``z < 0``),
``e = exp(-|z|)``: ``<= 4u + 2u`` relative, within the ``k_fn + 3`` of the bound.

General kernel (complex ``A``, or ``discretization="zoh"``; :func:`_s6_kernel`): one pass per
``(batch, channel)`` pair, parallel over ``batch x channels``; ``Delta`` computed (and validated) in NumPy
as in the reference; per step ``A_bar = exp(Delta A)``, ``B_bar u`` (Euler or ``Delta phi1(Delta A) B u``)
for each of the ``n`` states, the state in a small local array, ``y_t = sum_n C_t h_t`` (``2 Re`` for complex
``A``), then ``(y_t + D u_t) silu(z_t)``.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from refimpl._fastmath import f32_from_bits, exp_parts
from refimpl._numba import warmup
from refimpl._validate import check_bool, check_finite
from refimpl.ssm.selective.reference import SOFTPLUS_THRESHOLD, _check_Delta, _checked_arguments, _delta_formula

__all__ = ["selective_scan_numba"]

_CB = 64  # channels per block of the fast kernel (LLVM's float32 vector body: 16 lanes x 4)
_TC = 16  # time steps per staged chunk of the fast kernel
_FMA = {"contract"}  # the only fastmath flag (module docstring: FMAs keep every bound)


# -------------------------------------------------------------------------------- scalar pieces (inlined)

_f32_from_bits = f32_from_bits  # refimpl._fastmath: the int32 bit pattern as a float32 (a bitcast)


def _exp(w):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_exp, inline="always")
def _exp_ov(w):
    if w == types.float32:
        def impl(w):
            # exp(w) = p 2^n: refimpl._fastmath's polynomial and exponent bits (relative error <= gamma_4)
            p, bits = exp_parts(w)
            return p * _f32_from_bits(bits)
        return impl

    def impl64(w):
        return math.exp(w)
    return impl64


_E_SHIFT = np.float32(44.375)  # exact in float32: x + 44.375 is exact for -128 < x < -64
_E_SCALE = np.float32(math.exp(-44.375))  # a normal float32, rounded once


def _softplus(x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_softplus, inline="always")
def _softplus_ov(x):
    thr32 = np.float32(SOFTPLUS_THRESHOLD)
    if x == types.float32:
        def impl(x):
            # e = exp(-|x|) (float32 polynomial; for x < -64 as exp(x + 44.375) e^-44.375, the shift exact)
            shifted = x < np.float32(-64.0)
            e = _exp(x + _E_SHIFT if shifted else -abs(x)) * (_E_SCALE if shifted else np.float32(1.0))
            # log1p(e) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ... + s^16/17),  s = e/(2 + e) <= 1/3
            s = e / (np.float32(2.0) + e)
            s2 = s * s
            q = np.float32(1.0 / 17.0)
            q = np.float32(1.0 / 15.0) + s2 * q
            q = np.float32(1.0 / 13.0) + s2 * q
            q = np.float32(1.0 / 11.0) + s2 * q
            q = np.float32(1.0 / 9.0) + s2 * q
            q = np.float32(1.0 / 7.0) + s2 * q
            q = np.float32(1.0 / 5.0) + s2 * q
            q = np.float32(1.0 / 3.0) + s2 * q
            q = np.float32(1.0) + s2 * q
            # softplus(x) = max(x, 0) + log1p(exp(-|x|)) for x <= 20, x above
            r = max(x, np.float32(0.0)) + np.float32(2.0) * s * q
            return x if x > thr32 else r
        return impl

    def impl64(x):
        # softplus(x) = log1p(exp(x)) for x <= 20, x above (the reference's formula, libm)
        return x if x > SOFTPLUS_THRESHOLD else math.log1p(math.exp(x))
    return impl64


def _silu(z):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_silu, inline="always")
def _silu_ov(z):
    one = np.float32(1) if z == types.float32 else 1.0

    def impl(z):
        # silu(z) = z sigmoid(z),  sigmoid(z) = 1/(1 + e) for z >= 0, e/(1 + e) for z < 0,  e = exp(-|z|)
        e = _exp(-abs(z))
        return z * ((one if z >= 0 else e) / (one + e))
    return impl


# -------------------------------------------------------------------------------- the fast path

@numba.njit(cache=True, error_model="numpy", fastmath=_FMA)
def _stage(delta, u, z, s, T, bias, softplus, has_z, Dt, XU, us, zs, ckv, mnv):
    # the chunk's rows [s, s + T) of the block's channels (delta, u, z: the block's (l K) column views), copied
    # into (tc, cb) buffers (lanes c >= K stay 0), then Delta and Delta u
    K = delta.shape[1]
    for t in range(T):
        for c in range(K):
            Dt[t, c] = delta[s + t, c]
            us[t, c] = u[s + t, c]
    if has_z:
        for t in range(T):
            for c in range(K):
                zs[t, c] = z[s + t, c]
    for t in range(T):
        for c in range(K):
            # Delta = softplus(delta + delta_bias) (each part optional)
            x = Dt[t, c] + bias[c]
            Dv = _softplus(x) if softplus else x
            # the reference's checks, per lane: NaN here for a non-finite u, delta or Delta; the smallest Delta
            ckv[c] += (Dv - Dv) + (x - x) + (us[t, c] - us[t, c])
            mnv[c] = Dv if Dv < mnv[c] else mnv[c]
            Dt[t, c] = Dv
            # B_bar u = Delta B u, as (Delta u) B
            XU[t, c] = Dv * us[t, c]


@numba.njit(cache=True, error_model="numpy", fastmath=_FMA)
def _steps_shared(T, s, Dt, XU, AT, hs, Y, Bk, bB, gb, Ck, bC, gc):
    # T steps of a block whose channels share B_t and C_t: rows t of Dt, XU, Y (tc, cb); AT, hs: (n, cb)
    n, cb = hs.shape
    for t in range(T):
        tb = 0 if Bk.shape[1] == 1 else s + t
        tcc = 0 if Ck.shape[1] == 1 else s + t
        for c in range(cb):
            Y[t, c] = 0
        for k in range(n):
            bk = Bk[bB, tb, gb, k]
            ck = Ck[bC, tcc, gc, k]
            for c in range(cb):
                # h = exp(Delta A) h + (Delta u) B
                h = _exp(Dt[t, c] * AT[k, c]) * hs[k, c] + XU[t, c] * bk
                hs[k, c] = h
                # y = sum_n C h
                Y[t, c] += h * ck


@numba.njit(cache=True, error_model="numpy")
def _gather_rows(X, bX, tX, c0, K, per, Xs):
    # Xs[k, c] = X[bX, tX, (c0 + c) // per, k] for the block's K channels (the rest stay 0)
    for c in range(K):
        g = (c0 + c) // per
        for k in range(Xs.shape[0]):
            Xs[k, c] = X[bX, tX, g, k]


@numba.njit(cache=True, error_model="numpy", fastmath=_FMA)
def _steps_lanes(T, s, c0, K, Dt, XU, AT, hs, Y, Bk, bB, perB, Ck, bC, perC, Bs, Cs):
    # T steps with per-channel B_t, C_t rows gathered into Bs, Cs (n, cb) (once for a fixed matrix)
    n, cb = hs.shape
    for t in range(T):
        if Bk.shape[1] > 1 or s + t == 0:
            _gather_rows(Bk, bB, 0 if Bk.shape[1] == 1 else s + t, c0, K, perB, Bs)
        if Ck.shape[1] > 1 or s + t == 0:
            _gather_rows(Ck, bC, 0 if Ck.shape[1] == 1 else s + t, c0, K, perC, Cs)
        for k in range(n):
            for c in range(cb):
                # h = exp(Delta A) h + (Delta u) B
                hs[k, c] = _exp(Dt[t, c] * AT[k, c]) * hs[k, c] + XU[t, c] * Bs[k, c]
        for c in range(cb):
            Y[t, c] = 0
        for k in range(n):
            for c in range(cb):
                # y = sum_n C h
                Y[t, c] += hs[k, c] * Cs[k, c]


@numba.njit(cache=True, error_model="numpy", fastmath=_FMA)
def _finish(Y, us, zs, Dd, has_z, s, T, out):
    # out: the block's (l K) column view
    K = out.shape[1]
    for t in range(T):
        for c in range(K):
            # out = y + D u
            Y[t, c] = Y[t, c] + Dd[c] * us[t, c]
    if has_z:
        for t in range(T):
            for c in range(K):
                # out = out * silu(z)
                Y[t, c] = Y[t, c] * _silu(zs[t, c])
    for t in range(T):
        for c in range(K):
            out[s + t, c] = Y[t, c]


@numba.njit(parallel=True, cache=True, error_model="numpy", fastmath=_FMA)
def _s6_fused(u, delta, bias, A, Bk, Ck, D, z, h0, softplus, has_z, cb, tc, out, last, chk, mn):
    # u, delta, z, out: (b l d); bias, D: (d,); A: (d n); Bk, Ck: (b|1, l|1, g, n); h0, last: (b d n);
    # chk, mn: one per block (NaN in chk: a non-finite u, delta or Delta; mn: the smallest Delta)
    b, l, d = u.shape
    n = A.shape[1]
    dt = u.dtype
    nblk = (d + cb - 1) // cb
    perB = d // Bk.shape[2]
    perC = d // Ck.shape[2]
    # the block's channels share B_t (C_t): one group for all, or groups of a multiple of cb channels
    shared = (Bk.shape[2] == 1 or perB % cb == 0) and (Ck.shape[2] == 1 or perC % cb == 0)
    for idx in prange(b * nblk):
        bi = idx // nblk
        c0 = (idx - bi * nblk) * cb
        K = min(cb, d - c0)
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        # the block's A and state (n, cb); lanes c >= K stay 0 (A = 0, Delta u = 0: h stays 0, never stored)
        AT = np.zeros((n, cb), dt)
        hs = np.zeros((n, cb), dt)
        bb = np.zeros(cb, dt)
        Dd = np.zeros(cb, dt)
        for c in range(K):
            bb[c] = bias[c0 + c]
            Dd[c] = D[c0 + c]
            for k in range(n):
                AT[k, c] = A[c0 + c, k]
                hs[k, c] = h0[bi, c0 + c, k]
        us = np.zeros((tc, cb), dt)
        zs = np.zeros((tc, cb), dt)
        Dt = np.zeros((tc, cb), dt)
        XU = np.zeros((tc, cb), dt)
        Y = np.zeros((tc, cb), dt)
        Bs = np.zeros((n, cb), dt)
        Cs = np.zeros((n, cb), dt)
        ckv = np.zeros(cb, dt)
        mnv = np.full(cb, np.inf, dt)
        # the block's columns of the (b l d) arrays: (l K) views, rows d apart, unit-stride along the channels
        dblk = delta[bi, :, c0:c0 + K]
        ublk = u[bi, :, c0:c0 + K]
        zblk = z[bi, :, c0:c0 + K] if has_z else z[0, :0, :0]
        oblk = out[bi, :, c0:c0 + K]
        for s in range(0, l, tc):
            T = min(tc, l - s)
            _stage(dblk, ublk, zblk, s, T, bb, softplus, has_z, Dt, XU, us, zs, ckv, mnv)
            if shared:
                _steps_shared(T, s, Dt, XU, AT, hs, Y, Bk, bB, c0 // perB, Ck, bC, c0 // perC)
            else:
                _steps_lanes(T, s, c0, K, Dt, XU, AT, hs, Y, Bk, bB, perB, Ck, bC, perC, Bs, Cs)
            _finish(Y, us, zs, Dd, has_z, s, T, oblk)
        ck = ckv[0]
        m = mnv[0]
        for c in range(cb):
            ck += ckv[c]
            m = min(m, mnv[c])
        chk[idx] = ck
        mn[idx] = m
        for c in range(K):
            for k in range(n):
                last[bi, c0 + c, k] = hs[k, c]


# -------------------------------------------------------------------------------- the general kernel

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
            x = Delta[bi, t, di]  # Delta_t = softplus(delta_t + delta_bias), computed in NumPy
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


# -------------------------------------------------------------------------------- the entry point

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


def _validated(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
               allow_unstable) -> dict:
    """The checks and casts of :func:`refimpl.ssm.selective.reference.prepare`, in its order and with its
    messages (its own helpers), except the finiteness of ``u`` and ``delta`` and everything about ``Delta``: the
    fast kernel checks those itself (one pass fewer over the two largest inputs) and, where a check fails,
    :func:`_raise_bad_u_delta_Delta` raises the reference's error.  (With several bad arguments at once, a
    non-finite ``u``/``delta`` is therefore reported after the others' errors.)

    The reference's own checks (:func:`refimpl.ssm.selective.reference._checked_arguments`)."""
    return _checked_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
                              allow_unstable, finite_u_delta=False)


def _raise_bad_u_delta_Delta(p: dict) -> None:
    """The reference's error for a non-finite ``u`` or ``delta``, or a non-finite (or, unless allowed,
    negative) ``Delta``."""
    check_finite(p["u"], "u")
    check_finite(p["delta"], "delta")
    Delta = _delta_formula(p["delta"], p["delta_bias"], p["delta_softplus"])
    _check_Delta(Delta, p["delta_softplus"], p["allow_unstable"])


def selective_scan_numba(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False,
                         initial_state=None, return_final_state: bool = False, discretization: str = "mamba",
                         allow_unstable: bool = False):
    """The fused kernels; arguments and results as :func:`refimpl.ssm.selective.reference.recurrent`."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = _validated(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
                   allow_unstable)
    rdt, sdt = p["rdt"], p["dtype"]
    b, l, d, n = p["b"], p["l"], p["d"], p["n"]
    # the state has A's kind: complex for complex A; B/C are promoted to it
    cplx = np.iscomplexobj(p["A"])
    Bk = _as_bl_gn(p["B"], p["B_mode"], sdt if cplx else rdt)
    Ck = _as_bl_gn(p["C"], p["C_mode"], sdt if cplx else rdt)
    Dv = np.zeros(d, dtype=rdt) if p["D"] is None else np.ascontiguousarray(p["D"])
    zz = np.zeros((1, 1, 1), dtype=rdt) if p["z"] is None else np.ascontiguousarray(p["z"])
    hh = (np.zeros((b, d, n), dtype=sdt) if p["initial_state"] is None
          else np.ascontiguousarray(p["initial_state"], dtype=sdt))
    out = np.empty((b, l, d), dtype=rdt)
    last = np.empty((b, d, n), dtype=sdt)
    if not cplx and discretization == "mamba":
        # the fast path: Delta computed and checked in the kernel
        cb = max(1, min(_CB, d))
        nblk = b * ((d + cb - 1) // cb)
        chk = np.zeros(nblk, dtype=rdt)
        mn = np.zeros(nblk, dtype=rdt)
        bias = np.zeros(d, dtype=rdt) if p["delta_bias"] is None else np.ascontiguousarray(p["delta_bias"])
        _s6_fused(np.ascontiguousarray(p["u"]), np.ascontiguousarray(p["delta"]), bias,
                  np.ascontiguousarray(p["A"], dtype=rdt), Bk, Ck, Dv, zz, hh, p["delta_softplus"],
                  p["z"] is not None, cb, _TC, out, last, chk, mn)
        if nblk and (not np.all(np.isfinite(chk)) or (not p["allow_unstable"] and mn.min() < 0)):
            _raise_bad_u_delta_Delta(p)
        return (out, last) if return_final_state else out
    # the general kernel (complex A, or ZOH): Delta = softplus(delta + delta_bias) in NumPy, checked
    check_finite(p["u"], "u")
    check_finite(p["delta"], "delta")
    Delta = _delta_formula(p["delta"], p["delta_bias"], p["delta_softplus"])
    _check_Delta(Delta, p["delta_softplus"], p["allow_unstable"])
    _s6_kernel(np.ascontiguousarray(p["u"]), np.ascontiguousarray(Delta, dtype=rdt),
               np.ascontiguousarray(p["A"], dtype=sdt), Bk, Ck, Dv, zz, hh, discretization == "zoh",
               p["z"] is not None, bool(cplx), rdt.type(1), out, last)
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
                    for sp in (True, False):
                        selective_scan_numba(u, u if sp else np.abs(u), A, Bm, Bm, z=u, discretization=disc,
                                             delta_softplus=sp)
