r"""Numba backward kernel of the selective scan (S6): the reverse scan of :mod:`refimpl.ssm.selective.backward`,
one ``(batch, channel)`` lane per parallel iteration, never materializing ``(b l d n)`` per-step arrays.

Per lane the forward states are recomputed from checkpoints: a forward pass keeps the state entering each
chunk of ``chunk`` steps; the backward then walks the chunks in reverse, recomputes the chunk's states from its
checkpoint (``h_t = A_bar_t h_{t-1} + B_bar_t u_t``, the forward's arithmetic) and runs the reverse scan
through it, carrying ``conj(A_bar_t) dh_t`` across the chunk boundary::

    dh_t  = carry + c conj(C_t) dy_t                    carry <- conj(A_bar_t) dh_t   (carry starts at d_final_state)
    dC_t += c conj(h_t) dy_t                             dw_t  = conj(A_bar_t h_{t-1}) dh_t
    du_t += Re sum_n conj(B_bar_t) dh_t                  dB_t += conj(Delta_t [phi1(w_t)]) u_t dh_t
    dDelta_t = Re sum_n (conj(A) dw_t + conj([phi1(w_t)] B_t) u_t dh_t)   (zoh: dw_t += conj(Delta_t phi1'(w_t) B_t) u_t dh_t)
    dA   += Delta_t dw_t                                 d initial_state = the final carry

View ``"recurrent"`` is one chunk of length ``l`` (every state kept per lane); view ``"chunked"`` keeps
``ceil(l / chunk)`` checkpoints per lane and recomputes each chunk once (memory ``chunk n`` per lane instead of
``l n``).  The output adjoint (``silu(z)`` gate, ``D``), the chain rule through ``softplus(delta + delta_bias)``
and the reductions of the per-channel ``B``/``C`` gradients to their layouts are elementwise NumPy around the
kernel (as :mod:`refimpl.ssm.selective.backward`'s).  float32 and float64, real and complex ``A``, every
``B``/``C`` layout, both discretizations.  Arguments and results: :func:`refimpl.ssm.selective.backward.recurrent_vjp`.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.ssm.selective.backward import _DPHI1_COEF, _as_input, _reduce_bc, prepare_vjp, silu_grad, softplus_grad
from refimpl.ssm.selective.numba import _phi1, _as_bl_gn, selective_scan_numba

__all__ = ["selective_scan_vjp_numba", "selective_scan_vjp_numba_chunked"]

_C = _DPHI1_COEF  # phi1'(w) = sum_k (k+1) w^k / (k+2)!, k = 0..17 (|w| < 1)


def _dphi1(w):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(_dphi1, inline="always")
def _dphi1_ov(w):
    c = _C

    def impl(w):
        if abs(w) < 1.0:
            # phi1'(w) = sum_k (k+1) w^k / (k+2)!  (Horner, degree 17)
            acc = w * 0 + c[17]
            for i in range(16, -1, -1):
                acc = acc * w + c[i]
            return acc
        # phi1'(w) = (w e^w - (e^w - 1)) / w^2  (|w| >= 1: e^w - 1 does not cancel)
        e = np.exp(w)
        return (w * e - (e - 1)) / (w * w)
    return impl


@numba.njit(parallel=True, cache=True)
def _s6_vjp_kernel(u, Delta, A, Bk, Ck, h0, dy, dhL, zoh, cc, chunk, du, dDelta, dA, gB, gC, dh0):
    # u, Delta, dy, du, dDelta: (b l d); A (d n); Bk, Ck: (b|1, l|1, g, n); h0, dhL, dh0, dA: (b d n)
    # gB, gC: per-channel gradients (b, l|1, d, n) (l|1: a fixed matrix accumulates over t)
    b, l, d = u.shape
    n = A.shape[1]
    perB = d // Bk.shape[2]
    perC = d // Ck.shape[2]
    nck = (l + chunk - 1) // chunk
    for idx in prange(b * d):
        bi = idx // d
        di = idx - bi * d
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        g_b = di // perB
        g_c = di // perC
        # forward: the state entering each chunk (the checkpoints)
        cps = np.empty((nck + 1, n), dtype=h0.dtype)
        h = h0[bi, di].copy()
        for t in range(l):
            if t % chunk == 0:
                cps[t // chunk] = h
            tb = t if Bk.shape[1] > 1 else 0
            x = Delta[bi, t, di]
            ut = u[bi, t, di]
            for k in range(n):
                w = x * A[di, k]
                # h_t = A_bar_t h_{t-1} + B_bar_t u_t
                if zoh:
                    h[k] = np.exp(w) * h[k] + (x * ut) * _phi1(w) * Bk[bB, tb, g_b, k]
                else:
                    h[k] = np.exp(w) * h[k] + (x * ut) * Bk[bB, tb, g_b, k]
        carry = dhL[bi, di].copy()  # conj(A_bar_{t+1}) dh_{t+1}; at t = l-1 the final state's cotangent
        hs = np.empty((min(chunk, max(l, 1)) + 1, n), dtype=h0.dtype)
        for ci in range(nck - 1, -1, -1):
            s = ci * chunk
            T = min(chunk, l - s)
            # recompute the chunk's states from its checkpoint: hs[j] = h_{s+j-1}
            hs[0] = cps[ci]
            for j in range(T):
                t = s + j
                tb = t if Bk.shape[1] > 1 else 0
                x = Delta[bi, t, di]
                ut = u[bi, t, di]
                for k in range(n):
                    w = x * A[di, k]
                    if zoh:
                        hs[j + 1, k] = np.exp(w) * hs[j, k] + (x * ut) * _phi1(w) * Bk[bB, tb, g_b, k]
                    else:
                        hs[j + 1, k] = np.exp(w) * hs[j, k] + (x * ut) * Bk[bB, tb, g_b, k]
            # the reverse scan through the chunk
            for j in range(T - 1, -1, -1):
                t = s + j
                tb = t if Bk.shape[1] > 1 else 0
                tc = t if Ck.shape[1] > 1 else 0
                tgB = t if gB.shape[1] > 1 else 0
                tgC = t if gC.shape[1] > 1 else 0
                x = Delta[bi, t, di]
                ut = u[bi, t, di]
                dyt = dy[bi, t, di]
                acc_u = dyt * 0
                acc_D = dyt * 0
                for k in range(n):
                    w = x * A[di, k]
                    a_bar = np.exp(w)
                    Bv = Bk[bB, tb, g_b, k]
                    # dh_t = conj(A_bar_{t+1}) dh_{t+1} + c conj(C_t) dy_t
                    dh = carry[k] + cc * np.conj(Ck[bC, tc, g_c, k]) * dyt
                    # dC_t = c conj(h_t) dy_t
                    gC[bi, tgC, di, k] += cc * np.conj(hs[j + 1, k]) * dyt
                    # dw_t = conj(A_bar_t h_{t-1}) dh_t ;  dB_bar_t = u_t dh_t
                    dw = np.conj(a_bar * hs[j, k]) * dh
                    dBb = ut * dh
                    if zoh:
                        ph = _phi1(w)
                        Bbar = x * ph * Bv
                        # dB_t = conj(Delta_t phi1(w_t)) dB_bar_t ;  dDelta_t += Re conj(phi1(w_t) B_t) dB_bar_t
                        gB[bi, tgB, di, k] += x * np.conj(ph) * dBb
                        acc_D += (np.conj(ph * Bv) * dBb).real
                        # dw_t += conj(Delta_t phi1'(w_t) B_t) dB_bar_t
                        dw = dw + np.conj(x * _dphi1(w) * Bv) * dBb
                    else:
                        Bbar = x * Bv
                        # dB_t = Delta_t dB_bar_t ;  dDelta_t += Re conj(B_t) dB_bar_t
                        gB[bi, tgB, di, k] += x * dBb
                        acc_D += (np.conj(Bv) * dBb).real
                    # du_t += Re conj(B_bar_t) dh_t
                    acc_u += (np.conj(Bbar) * dh).real
                    # dDelta_t += Re conj(A) dw_t ;  dA += Delta_t dw_t
                    acc_D += (np.conj(A[di, k]) * dw).real
                    dA[bi, di, k] += x * dw
                    carry[k] = np.conj(a_bar) * dh
                du[bi, t, di] = acc_u
                dDelta[bi, t, di] = acc_D
        for k in range(n):
            # d initial_state = conj(A_bar_0) dh_0
            dh0[bi, di, k] = carry[k]


def _vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias, delta_softplus, discretization, initial_state,
         allow_unstable, chunk):
    args = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)
    p, x, dout, dhL = prepare_vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, initial_state=initial_state,
                                  discretization=discretization, allow_unstable=allow_unstable)
    b, l, d, n = p.b, p.l, p.d, p.n
    cplx = np.iscomplexobj(p.A)
    sdt, rdt = p.dtype, p.out_dtype
    # the output adjoint: dpre = dout silu(z), dz = dout pre silu'(z) (pre = y + D u, from the forward kernel)
    dpre, dz = dout, None
    if p.z is not None:
        pre = (selective_scan_numba(p.u, p.Delta, p.A, p.B, p.C, p.D, None, initial_state=p.initial_state,
                                    discretization=discretization, allow_unstable=True)
               if b * d else np.zeros((b, l, d), dtype=rdt))
        dpre = dout * (p.z * (1 / (1 + np.exp(-p.z))))
        dz = dout * pre * silu_grad(p.z)
    Bk = _as_bl_gn(p.B, p.B_mode, sdt if cplx else rdt)
    Ck = _as_bl_gn(p.C, p.C_mode, sdt if cplx else rdt)
    h0 = np.zeros((b, d, n), dtype=sdt) if p.initial_state is None else np.ascontiguousarray(p.initial_state, sdt)
    dhl = np.zeros((b, d, n), dtype=sdt) if dhL is None else np.ascontiguousarray(dhL, sdt)
    du = np.zeros((b, l, d), dtype=rdt)
    dDelta = np.zeros((b, l, d), dtype=rdt)
    dA = np.zeros((b, d, n), dtype=sdt)
    gB = np.zeros((b, 1 if p.B_mode == "fixed" else l, d, n), dtype=sdt)
    gC = np.zeros((b, 1 if p.C_mode == "fixed" else l, d, n), dtype=sdt)
    dh0 = np.zeros((b, d, n), dtype=sdt)
    if b * d:  # (an empty batch or channel axis: every gradient is empty or zero)
        _s6_vjp_kernel(np.ascontiguousarray(p.u), np.ascontiguousarray(p.Delta, dtype=rdt),
                       np.ascontiguousarray(p.A, dtype=sdt), Bk, Ck, h0, np.ascontiguousarray(dpre, dtype=rdt),
                       dhl, discretization == "zoh", rdt.type(2 if cplx else 1),
                       max(1, min(chunk, l)) if chunk else max(l, 1), du, dDelta, dA, gB, gC, dh0)
    if p.D is not None:
        du = du + p.D * dpre  # du = D dpre + Re sum_n conj(B_bar) dh
    dx = dDelta * softplus_grad(x) if delta_softplus else dDelta
    grads = {"u": du, "delta": dx, "A": dA.sum(axis=0), "B": _reduce_bc(gB, p.B_mode, p.B),
             "C": _reduce_bc(gC, p.C_mode, p.C)}
    if p.D is not None:
        grads["D"] = np.sum(dpre * p.u, axis=(0, 1))
    if p.z is not None:
        grads["z"] = dz
    if delta_bias is not None:
        grads["delta_bias"] = dx.sum(axis=(0, 1))
    if p.initial_state is not None:
        grads["initial_state"] = dh0
    return {k: _as_input(v, args[k]) for k, v in grads.items()}


def selective_scan_vjp_numba(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                             delta_softplus: bool = False, discretization: str = "mamba", initial_state=None,
                             allow_unstable: bool = False):
    """The kernel, view ``"recurrent"``: every state of a lane kept (one chunk of length ``l``)."""
    return _vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias, delta_softplus, discretization,
                initial_state, allow_unstable, 0)


def selective_scan_vjp_numba_chunked(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                                     delta_softplus: bool = False, discretization: str = "mamba",
                                     initial_state=None, chunk: int = 64, allow_unstable: bool = False):
    """The kernel, view ``"chunked"``: a checkpoint per chunk of ``chunk`` steps, each chunk recomputed once."""
    chunk = check_int(chunk, "chunk", minimum=1)
    return _vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias, delta_softplus, discretization,
                initial_state, allow_unstable, chunk)


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for rdt, cdt in ((np.float64, np.complex128), (np.float32, np.complex64)):
        u = rng.standard_normal((1, 3, 2)).astype(rdt)  # (b l d)
        Ar = -np.ones((2, 2), dtype=rdt)
        for A in (Ar, (Ar + 1j * Ar).astype(cdt)):
            for Bm in (np.ones((2, 2), dtype=rdt), np.ones((1, 3, 2), dtype=rdt), np.ones((1, 3, 1, 2), dtype=rdt)):
                for disc in ("mamba", "zoh"):
                    selective_scan_vjp_numba(u, np.abs(u), A, Bm, Bm, dy=u, discretization=disc)
