r"""Backward mutants of the structured SSMs (``refimpl mutants --op ssm.s5|ssm.ema|ssm.dss_kernel|ssm.s4_kernel
--grad``): plausible slips in a hand-written VJP.

Each is an explicit backward in the op's canonical protocol, ``grad_fn(*inputs in op order, *cotangents in
output order) -> {input: gradient}``; its forward is the op's correct reference.  The correct adjoints these
perturb are those of :mod:`refimpl.ssm.s5.backward` and :mod:`refimpl.ssm.ema.backward`, written out again here
(small, loop form) so that each slip sits in one line; S5's discretization adjoint is refimpl's
:func:`refimpl.ssm.discretization.discretize_vjp` (checked on its own as ``ssm.discretize``).

* ``ssm.s5``: the reverse scan started one step late, ``dLambda_bar`` without the conjugate of the states,
  ``2 Re``'s factor 2 dropped from the state's cotangent, ``dD`` paired with the previous step's input.
* ``ssm.ema``: the reverse scan started one step late, ``dalpha`` without the damping's ``-delta dq`` term, the
  initial state's gradient ``g_0`` (the decay ``q`` missing).
* ``ssm.dss_kernel``: ``dw`` without the conjugate (softmax and exp), the softmax derivative without the
  normalizer's ``-S_k m`` term.
* ``ssm.s4_kernel`` (bilinear): the powers' reverse scan started one step late, ``dQ = -dA P`` (the conjugate
  transpose of ``dA`` dropped), ``2 Re``'s factor 2 dropped.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from oracles.mutants import grad_mutant

_S5_CONV = {"method": "zoh", "real_output": "2re", "bidirectional": False, "use_h0": True}


def _s5_backward(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last, *, method, output, late_start=False,
                 no_conj=False, drop_two=False, dD_shift=False) -> Dict[str, np.ndarray]:
    from refimpl.ssm.discretization import discretize_vjp
    from refimpl.ssm.s5 import discretize_s5

    Ab, Bb = discretize_s5(Lambda, B_tilde, dt, method)
    Ab, Bb = Ab.astype(np.complex128), Bb.astype(np.complex128)
    C = np.asarray(C_tilde, dtype=np.complex128)
    u = np.asarray(u, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    b, l, h = u.shape
    n = Ab.shape[0]
    f = 2.0 if output == "2re" else 1.0
    fg = 1.0 if drop_two else f
    xs = np.zeros((l + 1, b, n), dtype=np.complex128)
    if h0 is not None:
        xs[0] = h0
    for t in range(l):
        xs[t + 1] = Ab * xs[t] + u[:, t] @ Bb.T
    g = np.zeros((b, n), dtype=np.complex128) if dh_last is None else np.array(dh_last, dtype=np.complex128)
    gs = np.zeros((b, l, n), dtype=np.complex128)
    dAb = np.zeros(n, dtype=np.complex128)
    conj = (lambda a: a) if no_conj else np.conj
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            g = np.conj(Ab) * g
        if not (late_start and t == l - 1):
            g = g + fg * dy[:, t] @ np.conj(C)
        gs[:, t] = g
        dAb += np.sum(g * conj(xs[t]), axis=0)
    out = {"C_tilde": f * np.einsum("bld,lbn->dn", dy, np.conj(xs[1:])),
           "u": np.real(np.einsum("nd,bln->bld", np.conj(Bb), gs))}
    if D is not None:
        out["u"] = out["u"] + np.asarray(D) * dy
        us = np.concatenate([np.zeros_like(u[:, :1]), u[:, :-1]], axis=1) if dD_shift else u
        out["D"] = np.einsum("bld,bld->d", dy, us)
    if h0 is not None:
        out["h0"] = np.conj(Ab) * g if l else g
    dBb = np.einsum("bln,bld->nd", gs, u)
    lam = np.asarray(Lambda, dtype=np.complex128)
    dtn = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape).copy()
    gd = discretize_vjp(lam[:, None], np.asarray(B_tilde, dtype=np.complex128)[:, None, :], dtn,
                        dA_bar=dAb[:, None], dB_bar=dBb[:, None, :], method=method, diagonal=True)
    out.update(Lambda=gd["A"][:, 0], B_tilde=gd["B"][:, 0, :], dt=np.real(gd["dt"]))
    return out


@grad_mutant("ssm.s5", "reverse-scan-one-step-late", conventions=_S5_CONV,
             doc="the reverse scan starts at L-2: the last step's f C~^H dy_{L-1} never enters the state's cotangent")
def s5_late_start(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last):
    return _s5_backward(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last, method="zoh", output="2re",
                        late_start=True)


@grad_mutant("ssm.s5", "dLambda-bar-missing-conjugate", conventions=_S5_CONV,
             doc="dLambda_bar = sum g_t x_{t-1} without the conjugate of the states")
def s5_no_conj(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last):
    return _s5_backward(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last, method="zoh", output="2re",
                        no_conj=True)


@grad_mutant("ssm.s5", "2re-factor-dropped-in-state-cotangent", conventions=_S5_CONV,
             doc="the state's cotangent gets C~^H dy instead of 2 C~^H dy under the 2re output (dC~ keeps its 2)")
def s5_drop_two(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last):
    return _s5_backward(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last, method="zoh", output="2re",
                        drop_two=True)


@grad_mutant("ssm.s5", "dD-wrong-everywhere", conventions=_S5_CONV,
             doc="dD pairs dy_t with the previous step's input u_{t-1}")
def s5_dD_shift(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last):
    return _s5_backward(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last, method="zoh", output="2re",
                        dD_shift=True)


def _ema_backward(x, alpha, delta, beta, eta, h0, dy, dh_last, *, late_start=False, drop_delta=False,
                  dh0_no_decay=False) -> Dict[str, np.ndarray]:
    a, dl, be, et = (np.asarray(v, dtype=np.float64) for v in (alpha, delta, beta, eta))
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    b, l, d = x.shape
    q = 1.0 - a * dl
    hs = np.zeros((l + 1, b) + a.shape)
    if h0 is not None:
        hs[0] = h0
    for t in range(l):
        hs[t + 1] = a * be * x[:, t, :, None] + q * hs[t]
    g = np.zeros((b,) + a.shape) if dh_last is None else np.array(dh_last, dtype=np.float64)
    dx = np.zeros(x.shape)
    dq = np.zeros(a.shape)
    gx = np.zeros(a.shape)
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            g = q * g
        if not (late_start and t == l - 1):
            g = g + et * dy[:, t, :, None]
        dx[:, t] = np.sum(a * be * g, axis=-1)
        dq += np.sum(g * hs[t], axis=0)
        gx += np.sum(g * x[:, t, :, None], axis=0)
    out = {"x": dx, "alpha": be * gx - (0.0 if drop_delta else dl * dq), "delta": -a * dq, "beta": a * gx,
           "eta": np.einsum("bld,lbdn->dn", dy, hs[1:])}
    if h0 is not None:
        out["h0"] = g if (dh0_no_decay or not l) else q * g
    return out


@grad_mutant("ssm.ema", "reverse-scan-one-step-late", conventions={"use_h0": True},
             doc="the reverse scan starts at L-2: eta dy_{L-1} never enters the state's cotangent")
def ema_late_start(x, alpha, delta, beta, eta, h0, dy, dh_last):
    return _ema_backward(x, alpha, delta, beta, eta, h0, dy, dh_last, late_start=True)


@grad_mutant("ssm.ema", "dalpha-drops-damping-term", conventions={"use_h0": True},
             doc="dalpha = sum g_t beta x_t: the term -delta sum g_t h_{t-1} through q = 1 - alpha delta is dropped")
def ema_drop_delta(x, alpha, delta, beta, eta, h0, dy, dh_last):
    return _ema_backward(x, alpha, delta, beta, eta, h0, dy, dh_last, drop_delta=True)


@grad_mutant("ssm.ema", "dh0-missing-decay", conventions={"use_h0": True},
             doc="the initial state's gradient is g_0 instead of q g_0")
def ema_dh0_no_decay(x, alpha, delta, beta, eta, h0, dy, dh_last):
    return _ema_backward(x, alpha, delta, beta, eta, h0, dy, dh_last, dh0_no_decay=True)


def _dss_backward(Lambda, W, dt, L, dK, *, variant, no_conj=False, drop_mean=False) -> Dict[str, np.ndarray]:
    from refimpl.ssm.discretization.backward import dphi1

    lam = np.asarray(Lambda, dtype=np.complex128)
    Wc = np.asarray(W, dtype=np.complex128)
    dt0 = np.asarray(dt, dtype=np.float64)
    dtc = np.broadcast_to(dt0, lam.shape[:1])[:, None]
    L = int(np.asarray(L))
    dK = np.asarray(dK, dtype=np.float64)
    k = np.arange(L, dtype=np.float64)
    p = dtc * lam
    cj = (lambda a: a) if no_conj else np.conj
    if variant == "exp":
        E = np.exp(p[..., None] * k)
        V = np.einsum("dk,dnk->dn", dK, np.conj(E))
        Vk = np.einsum("dk,dnk->dn", dK * k, np.conj(E))
        phi = np.expm1(p) / lam
        dW = cj(phi) * V
        dLam = np.conj(Wc) * (np.conj(dtc ** 2 * dphi1(p)) * V + np.conj(phi) * dtc * Vk)
        ddt = np.real(np.sum(Wc * (np.exp(p) * np.conj(V) + phi * lam * np.conj(Vk)), axis=-1))
    elif L == 0:
        dW, dLam, ddt = np.zeros_like(Wc), np.zeros_like(lam), np.zeros(lam.shape[0])
    else:
        P = p[..., None] * k
        E = np.exp(P - np.max(P.real, axis=-1, keepdims=True))
        S = E / np.sum(E, axis=-1, keepdims=True)
        m = 0.0 if drop_mean else np.einsum("dnk,k->dn", S, k)
        U = np.einsum("dk,dnk->dn", dK, np.conj(S))
        Uk = np.einsum("dk,dnk->dn", dK * k, np.conj(S))
        dW = cj(1.0 / lam) * U
        dLam = np.conj(Wc) * (-np.conj(1.0 / lam ** 2) * U + np.conj(dtc / lam) * (Uk - np.conj(m) * U))
        ddt = np.real(np.sum(Wc * (np.conj(Uk) - m * np.conj(U)), axis=-1))
    return {"Lambda": dLam, "W": dW, "dt": np.sum(ddt) if dt0.ndim == 0 else ddt}


@grad_mutant("ssm.dss_kernel", "dW-missing-conjugate", conventions={"variant": "softmax"},
             doc="dw = (1/lambda) U without the conjugate (the complex convention's conj dropped)")
def dss_no_conj(Lambda, W, dt, L, dK):
    return _dss_backward(Lambda, W, dt, L, dK, variant="softmax", no_conj=True)


@grad_mutant("ssm.dss_kernel", "softmax-derivative-without-the-mean", conventions={"variant": "softmax"},
             doc="dS_k/dp = S_k k: the normalizer's -S_k m term of the softmax derivative dropped")
def dss_drop_mean(Lambda, W, dt, L, dK):
    return _dss_backward(Lambda, W, dt, L, dK, variant="softmax", drop_mean=True)


@grad_mutant("ssm.dss_kernel", "exp-dW-missing-conjugate", conventions={"variant": "exp"},
             doc="exp variant: dw = phi V without the conjugate of phi")
def dss_exp_no_conj(Lambda, W, dt, L, dK):
    return _dss_backward(Lambda, W, dt, L, dK, variant="exp", no_conj=True)


_S4_CONV = {"method": "bilinear", "output": "2re"}


def _s4_backward(Lambda, P, Q, B, C, dt, L, dK, *, output="2re", late_start=False, dQ_no_adjoint=False,
                 drop_two=False) -> Dict[str, np.ndarray]:
    from refimpl.ssm.discretization import discretize_vjp

    lam = np.asarray(Lambda, dtype=np.complex128)
    P, Q, B, C = (np.asarray(a, dtype=np.complex128) for a in (P, Q, B, C))
    h, n = lam.shape
    dt0 = np.asarray(dt, dtype=np.float64)
    dtv = np.broadcast_to(dt0, (h,)).copy()
    L = int(np.asarray(L))
    dKc = np.asarray(dK).astype(np.complex128) * (2.0 if output == "2re" and not drop_two else 1.0)
    A = np.stack([np.diag(lam[c]) - P[c] @ np.conj(Q[c]).T for c in range(h)]) if h else np.zeros((0, n, n), complex)
    dA_bar = np.zeros((h, n, n), dtype=np.complex128)
    dB_bar = np.zeros((h, n), dtype=np.complex128)
    dC = np.zeros((h, n), dtype=np.complex128)
    for c in range(h):
        M = np.eye(n) - 0.5 * dtv[c] * A[c]
        Ab = np.linalg.solve(M, np.eye(n) + 0.5 * dtv[c] * A[c])
        s = np.linalg.solve(M, dtv[c] * B[c])
        S = []
        for k in range(L):
            S.append(s)
            s = Ab @ s
        G = np.zeros(n, dtype=np.complex128)
        for k in range(L - 1, -1, -1):
            G = (np.conj(Ab).T @ G if k < L - 1 else G)
            if not (late_start and k == L - 1):
                G = G + np.conj(C[c]) * dKc[c, k]
            if k >= 1:
                dA_bar[c] += np.outer(G, np.conj(S[k - 1]))
            dC[c] += dKc[c, k] * np.conj(S[k])
        dB_bar[c] = G if L else 0.0
    g = discretize_vjp(A, B[..., None], dtv, dA_bar=dA_bar, dB_bar=dB_bar[..., None], method="bilinear")
    dA = g["A"]
    dQ = -np.einsum("dnm,dmr->dnr", dA, P) if dQ_no_adjoint else -np.einsum("dmn,dmr->dnr", np.conj(dA), P)
    ddt = np.real(g["dt"])
    return {"Lambda": np.diagonal(dA, axis1=-2, axis2=-1).copy(), "P": -np.einsum("dnm,dmr->dnr", dA, Q), "Q": dQ,
            "B": g["B"][..., 0], "C": dC, "dt": np.sum(ddt) if dt0.ndim == 0 else ddt}


@grad_mutant("ssm.s4_kernel", "reverse-scan-one-step-late", conventions=_S4_CONV,
             doc="the powers' reverse scan starts at L-2: conj(C) dKc_{L-1} never enters the state's cotangent")
def s4_late_start(Lambda, P, Q, B, C, dt, L, dK):
    return _s4_backward(Lambda, P, Q, B, C, dt, L, dK, late_start=True)


@grad_mutant("ssm.s4_kernel", "dQ-without-the-adjoint", conventions=_S4_CONV,
             doc="A = diag(Lambda) - P Q^*: dQ = -dA P instead of -dA^H P (the conjugate transpose dropped)")
def s4_dQ_no_adjoint(Lambda, P, Q, B, C, dt, L, dK):
    return _s4_backward(Lambda, P, Q, B, C, dt, L, dK, dQ_no_adjoint=True)


@grad_mutant("ssm.s4_kernel", "2re-factor-dropped", conventions=_S4_CONV,
             doc="K = 2 Re Kc: the cotangent of Kc taken as dK instead of 2 dK")
def s4_drop_two(Lambda, P, Q, B, C, dt, L, dK):
    return _s4_backward(Lambda, P, Q, B, C, dt, L, dK, drop_two=True)
