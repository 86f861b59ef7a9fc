r"""Backward mutants of the SSM core (``refimpl mutants --op <op> --grad``): plausible slips in a hand-written VJP.

Each is an explicit backward in the op's canonical protocol, ``grad_fn(*inputs in op order, *cotangents in
output order) -> {input: gradient}``; its forward is the op's correct reference.  The correct adjoints these
perturb are those of :mod:`refimpl.ssm.lti.backward`, :mod:`refimpl.ssm.discretization.backward` and
:mod:`refimpl.ssm.s4d.backward`, written out again here (small, loop form) so that each slip sits in one line.

* ``ssm.lti``: the reverse scan started one step late (``g_{L-1}`` never gets ``C^H dy_{L-1}``), the initial
  state's gradient dropped, ``dA_bar`` without the conjugate (``g h^T``), ``dD`` paired with the previous
  step's input (wrong everywhere), a chunked backward that drops the state cotangent at the chunk boundaries.
* ``ssm.discretize``: ZOH's ``phi1'`` replaced by Euler's (``B_bar = dt B``: ``phi1' = 0``, ``phi1 = 1``), the
  ``dt`` gradient missing the ``B_bar`` term.
* ``ssm.s4d_kernel``: the Vandermonde adjoint without the conjugate of the powers; ``2 Re``'s factor 2 dropped.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from oracles.mutants import grad_mutant


# ----------------------------------------------------------------------------------------------------------
# ssm.lti
# ----------------------------------------------------------------------------------------------------------

def _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, *, diagonal: bool, late_start=False, drop_dh0=False,
                  no_conj_dA=False, dD_shift=False) -> Dict[str, np.ndarray]:
    A, Bm, C, x = (np.asarray(a) for a in (A_bar, B_bar, C, x))
    b, l, h, m = x.shape
    n = A.shape[-1]
    dt = np.result_type(A, Bm, C, x, np.float64, *(np.asarray(a) for a in (D, h0, dy, dh_last) if a is not None))
    dy = np.asarray(dy)
    hs = np.zeros((l + 1, b, h, n), dtype=dt)
    if h0 is not None:
        hs[0] = h0
    for t in range(l):
        hs[t + 1] = (A[None] * hs[t] if diagonal else np.einsum("hij,bhj->bhi", A, hs[t])) + \
            np.einsum("hnm,bhm->bhn", Bm, x[:, t])
    g = np.zeros((b, h, n), dtype=dt) if dh_last is None else np.array(dh_last, dtype=dt)
    dA = np.zeros(A.shape, dtype=dt)
    dB = np.zeros(Bm.shape, dtype=dt)
    dC = np.zeros(C.shape, dtype=dt)
    dx = np.zeros(x.shape, dtype=dt)
    conj = (lambda a: a) if no_conj_dA else np.conj
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            g = np.conj(A)[None] * g if diagonal else np.einsum("hji,bhj->bhi", np.conj(A), g)
        if not (late_start and t == l - 1):
            g = g + np.einsum("hpn,bhp->bhn", np.conj(C), dy[:, t])
        dC += np.einsum("bhp,bhn->hpn", dy[:, t], np.conj(hs[t + 1]))
        dA += np.einsum("bhn,bhn->hn", g, conj(hs[t])) if diagonal else np.einsum("bhi,bhj->hij", g, conj(hs[t]))
        dB += np.einsum("bhn,bhm->hnm", g, np.conj(x[:, t]))
        dx[:, t] = np.einsum("hnm,bhn->bhm", np.conj(Bm), g)
    out = {"A_bar": dA, "B_bar": dB, "C": dC, "x": dx}
    if D is not None:
        xs = np.roll(x, 1, axis=1) if dD_shift else x
        out["D"] = np.einsum("blhp,blhm->hpm", dy, np.conj(xs))
        dx += np.einsum("hpm,blhp->blhm", np.conj(np.asarray(D)), dy)
    if h0 is not None:
        d0 = g if l == 0 else (np.conj(A)[None] * g if diagonal else np.einsum("hji,bhj->bhi", np.conj(A), g))
        out["h0"] = np.zeros_like(d0) if drop_dh0 else d0
    return _real_like(out, dict(A_bar=A_bar, B_bar=B_bar, C=C, D=D, x=x, h0=h0))


def _phi_dphi(z):
    """``phi1(z) = (e^z - 1)/z`` and ``phi1'(z)``: Taylor series (24 terms) for ``|z| < 1``, closed forms beyond."""
    z = np.asarray(z)
    small = np.abs(z) < 1
    zs = np.where(small, z, 0)
    phi_s = sum(zs ** k / math.factorial(k + 1) for k in range(24))
    dphi_s = sum((k + 1) * zs ** k / math.factorial(k + 2) for k in range(24))
    zb = np.where(small, 1.0, z)
    phi = np.where(small, phi_s, np.expm1(zb) / zb)
    return phi, np.where(small, dphi_s, (np.exp(zb) - phi) / zb)


def _real_like(grads, originals):
    return {k: (v if np.iscomplexobj(originals[k]) else v.real) for k, v in grads.items()}


_LTI_CONV = {"real_output": "complex", "time_varying": False}


@grad_mutant("ssm.lti", "reverse-scan-one-step-late", conventions=_LTI_CONV,
             doc="the reverse scan starts at L-2: the last step's C^H dy_{L-1} never enters the state's cotangent")
def lti_late_start(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    return _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, diagonal=np.ndim(A_bar) == 2, late_start=True)


@grad_mutant("ssm.lti", "dropped-dh0", conventions=_LTI_CONV,
             doc="the gradient of the initial state is dropped (zero)")
def lti_drop_dh0(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    return _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, diagonal=np.ndim(A_bar) == 2, drop_dh0=True)


@grad_mutant("ssm.lti", "dA-bar-missing-conjugate", conventions=_LTI_CONV,
             doc="dA_bar = sum g_t h_{t-1}^T without the conjugate (complex systems only differ)")
def lti_no_conj(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    return _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, diagonal=np.ndim(A_bar) == 2, no_conj_dA=True)


@grad_mutant("ssm.lti", "dD-wrong-everywhere", conventions=_LTI_CONV,
             doc="dD pairs dy_t with the previous step's input x_{t-1}")
def lti_dD_shift(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    return _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, diagonal=np.ndim(A_bar) == 2, dD_shift=True)


@grad_mutant("ssm.lti", "chunked-drops-inter-chunk-state-gradient", conventions=_LTI_CONV,
             doc="a chunked backward (chunks of 4) whose reverse scan over the chunks carries no state cotangent "
                 "across a boundary: right within the last chunk, wrong before it")
def lti_chunk_boundary(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    from refimpl.ssm.lti.backward import convolution_vjp

    diagonal = np.ndim(A_bar) == 2
    x = np.asarray(x)
    b, l, h, m = x.shape
    A = np.asarray(A_bar)
    starts = list(range(0, l, 4))
    hs = [np.zeros((b, h, A.shape[-1]), dtype=np.result_type(A, x, B_bar, np.float64)) if h0 is None
          else np.asarray(h0).astype(np.result_type(A, x, h0, B_bar, np.float64))]
    for s in starts[:-1]:
        st = hs[-1]
        for t in range(s, min(s + 4, l)):
            st = (A[None] * st if diagonal else np.einsum("hij,bhj->bhi", A, st)) + \
                np.einsum("hnm,bhm->bhn", np.asarray(B_bar), x[:, t])
        hs.append(st)
    tot: Dict[str, Any] = {}
    g = dh_last
    for i in range(len(starts) - 1, -1, -1):
        s = starts[i]
        gc = convolution_vjp(A_bar, B_bar, C, D, x[:, s:s + 4], dy=np.asarray(dy)[:, s:s + 4], d_final_state=g,
                             initial_state=hs[i], diagonal=diagonal)
        for k in ("A_bar", "B_bar", "C", "D"):
            if k in gc:
                tot[k] = tot.get(k, 0) + gc[k]
        tot.setdefault("x", np.zeros(x.shape, dtype=gc["x"].dtype))
        tot["x"] = tot["x"].astype(np.result_type(tot["x"], gc["x"]))
        tot["x"][:, s:s + 4] = gc["x"]
        # the slip: the state cotangent is not carried to the chunk before
        g = None
        if i == 0 and h0 is not None:
            tot["h0"] = gc["initial_state"]
    if l == 0:
        return _clean_lti(A_bar, B_bar, C, D, x, h0, dy, dh_last)
    return _real_like(tot, dict(A_bar=A_bar, B_bar=B_bar, C=C, D=D, x=x, h0=h0))


# ----------------------------------------------------------------------------------------------------------
# ssm.discretize (zoh, diagonal)
# ----------------------------------------------------------------------------------------------------------

def _zoh_diag_backward(A, B, dt, C, D, dA_bar, dB_bar, dC_d, dD_d, *, euler_phi=False, dt_no_B=False):
    A, B = np.asarray(A), np.asarray(B)
    dt = float(np.asarray(dt))
    z = dt * A
    phi, dphi = _phi_dphi(z)
    if euler_phi:
        # Euler's B_bar = dt B: phi1 = 1, phi1' = 0
        dphi = np.zeros_like(dphi)
    dA_bar = np.asarray(dA_bar)
    dB_bar = np.asarray(dB_bar)
    g = dt * phi
    dB = np.conj(g)[..., None] * dB_bar
    dg = np.sum(dB_bar * np.conj(B), axis=-1)
    dz = np.conj(np.exp(z)) * dA_bar + np.conj(dt * dphi) * dg
    ddt = np.sum(np.conj(A) * dz)
    if not dt_no_B:
        ddt = ddt + np.sum(np.conj(phi) * dg)
    out = {"A": dt * dz, "B": dB, "dt": np.asarray(np.real(ddt))}
    if C is not None:
        out["C"] = np.zeros(np.shape(C)) if dC_d is None else np.asarray(dC_d)
    if D is not None:
        out["D"] = np.zeros(np.shape(D)) if dD_d is None else np.asarray(dD_d)
    return _real_like(out, dict(A=A, B=B, dt=np.float64(0), C=C, D=D))


_ZOH = {"method": "zoh", "diagonal": True, "output": "s4"}


@grad_mutant("ssm.discretize", "zoh-phi1-derivative-euler", conventions=_ZOH,
             doc="ZOH's backward through B_bar = dt phi1(dt A) B takes Euler's phi1' = 0: no A gradient from B_bar")
def disc_euler_phi(A, B, dt, C, D, dA_bar, dB_bar, dC_d=None, dD_d=None):
    return _zoh_diag_backward(A, B, dt, C, D, dA_bar, dB_bar, dC_d, dD_d, euler_phi=True)


@grad_mutant("ssm.discretize", "dt-gradient-missing-B-bar-term", conventions=_ZOH,
             doc="the dt gradient keeps only A_bar's share (Re <A, dz>), not B_bar's direct phi1(z) dg")
def disc_dt_no_B(A, B, dt, C, D, dA_bar, dB_bar, dC_d=None, dD_d=None):
    return _zoh_diag_backward(A, B, dt, C, D, dA_bar, dB_bar, dC_d, dD_d, dt_no_B=True)


# ----------------------------------------------------------------------------------------------------------
# ssm.s4d_kernel (zoh)
# ----------------------------------------------------------------------------------------------------------

def _s4d_backward(Lambda, B, C, dt, L, dK, *, output: str, no_conj=False, drop_two=False) -> Dict[str, Any]:
    lam, Bc, Cc = (np.asarray(a, dtype=np.complex128) for a in (Lambda, B, C))
    d, n = lam.shape
    dtv = np.broadcast_to(np.asarray(dt, dtype=np.float64), (d,))[:, None]
    L = int(np.asarray(L))
    dKc = np.asarray(dK) * (2.0 if output == "2re" and not drop_two else 1.0)
    z = dtv * lam
    phi, dphi = _phi_dphi(z)
    Ab = np.exp(z)
    Bb = dtv * phi * Bc
    v = Cc * Bb
    k = np.arange(L)
    P = Ab[..., None] ** k  # (d n l)
    cj = (lambda a: a) if no_conj else np.conj
    dv = np.einsum("dnk,dk->dn", cj(P), dKc)
    kP = np.where(k > 0, k * Ab[..., None] ** np.maximum(k - 1, 0), 0)
    dAb = np.conj(v) * np.einsum("dnk,dk->dn", cj(kP), dKc)
    dC = np.conj(Bb) * dv
    dBb = np.conj(Cc) * dv
    dB = np.conj(dtv * phi) * dBb
    dg = dBb * np.conj(Bc)
    dz = np.conj(Ab) * dAb + np.conj(dtv * dphi) * dg
    ddt = np.real(np.sum(np.conj(lam) * dz + np.conj(phi) * dg, axis=-1))
    out = {"Lambda": dtv * dz, "B": dB, "C": dC, "dt": ddt if np.ndim(dt) else np.asarray(np.sum(ddt))}
    return _real_like(out, dict(Lambda=Lambda, B=B, C=C, dt=np.float64(0)))


@grad_mutant("ssm.s4d_kernel", "vandermonde-missing-conjugate", conventions={"method": "zoh", "output": "2re"},
             doc="the Vandermonde adjoint pairs dK with A_bar^k instead of conj(A_bar^k)")
def s4d_no_conj(Lambda, B, C, dt, L, dK):
    return _s4d_backward(Lambda, B, C, dt, L, dK, output="2re", no_conj=True)


@grad_mutant("ssm.s4d_kernel", "2re-factor-dropped", conventions={"method": "zoh", "output": "2re"},
             doc="K = 2 Re Kc passes dK (not 2 dK) to the complex kernel: every gradient half its size")
def s4d_drop_two(Lambda, B, C, dt, L, dK):
    return _s4d_backward(Lambda, B, C, dt, L, dK, output="2re", drop_two=True)


def _clean_s4d(Lambda, B, C, dt, L, dK):
    """The unmutated loop form (the tests check it conforms, so every mutant differs by its slip alone)."""
    return _s4d_backward(Lambda, B, C, dt, L, dK, output="2re")


def _clean_lti(A_bar, B_bar, C, D, x, h0, dy, dh_last):
    return _lti_backward(A_bar, B_bar, C, D, x, h0, dy, dh_last, diagonal=np.ndim(A_bar) == 2)


def _clean_zoh(A, B, dt, C, D, dA_bar, dB_bar, dC_d=None, dD_d=None):
    return _zoh_diag_backward(A, B, dt, C, D, dA_bar, dB_bar, dC_d, dD_d)


# ----------------------------------------------------------------------------------------------------------
# ssm.lru
# ----------------------------------------------------------------------------------------------------------

@grad_mutant("ssm.lru", "theta-gradient-from-real-part", conventions={"real_output": "re"},
             doc="dtheta_log = exp(theta_log) Re(dw) instead of Im(dw): the phase's gradient from the modulus' share")
def lru_theta_re(nu_log, theta_log, gamma_log, B, C, D, u, dy):
    from refimpl.ssm.lru import lru_ssm_vjp

    g = lru_ssm_vjp(nu_log, theta_log, gamma_log, B, C, D, u, dy=dy)
    # dnu_log = -exp(nu_log) Re dw, so Re dw = -dnu_log / exp(nu_log); the slip gives theta_log exp(theta_log) Re dw
    g["theta_log"] = np.exp(np.asarray(theta_log)) * (-g["nu_log"] / np.exp(np.asarray(nu_log)))
    return g


@grad_mutant("ssm.lru", "gamma-normalization-gradient-dropped", conventions={"real_output": "re"},
             doc="the gradient of gamma_log is dropped (gamma treated as a constant normalization)")
def lru_gamma_dropped(nu_log, theta_log, gamma_log, B, C, D, u, dy):
    from refimpl.ssm.lru import lru_ssm_vjp

    g = lru_ssm_vjp(nu_log, theta_log, gamma_log, B, C, D, u, dy=dy)
    g["gamma_log"] = np.zeros_like(g["gamma_log"])
    return g
