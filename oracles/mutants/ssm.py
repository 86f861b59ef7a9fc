"""Mutants of the SSM core ops (``ssm.discretize``, ``ssm.lti``) and of ``ssm.s4d_kernel``, ``ssm.lru``.

Each is a plausible kernel bug written in the op's canonical signature (see ``refimpl ops OP``): the right
math with one deviation.  The correct parts are plain NumPy (or the reference from ``refimpl``), so a
mutant that survives points at a gap in the op's default cases, never at a second bug.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from oracles.mutants import mutant
from oracles.verify.ops_ssm import _dense  # the op spec's own diagonal -> dense helper

# ---------------------------------------------------------------------------------------------- helpers


def _zoh_B(A, B, dt, diagonal):
    """The correct ZOH ``B_bar = dt phi1(dt A) B`` per channel, by the Van Loan block (scipy's expm)."""
    A, B = np.asarray(A), np.asarray(B)
    h, n, m = B.shape
    out = np.zeros(B.shape, dtype=np.result_type(A, B, np.float64))
    for c in range(h):
        M = np.zeros((n + m, n + m), dtype=out.dtype)
        M[:n, :n] = _dense(A[c], diagonal)
        M[:n, n:] = B[c]
        out[c] = scipy.linalg.expm(float(dt) * M)[:n, n:]
    return out


def _expm_A(A, dt, diagonal):
    A = np.asarray(A)
    if diagonal:
        return np.exp(float(dt) * A)
    return np.stack([scipy.linalg.expm(float(dt) * A[c]) for c in range(A.shape[0])])


def _lti_run(A_bar, B_bar, C, D, x, h0, *, diagonal=None, skip_D=False, ignore_h0=False):
    """``h_t = A_bar_t h_{t-1} + B_bar_t x_t``, ``y_t = C h_t + D x_t`` step by step; returns ``(y, states)``
    with ``states (b l+1 h n)`` (``states[:, 0]`` = the state before step 0)."""
    A_bar, B_bar, C, x = (np.asarray(a) for a in (A_bar, B_bar, C, x))
    b, L, h, m = x.shape
    n = A_bar.shape[-1]
    if diagonal is None:
        diagonal = A_bar.ndim == 2
    tvA = A_bar.ndim == (2 if diagonal else 3) + 1
    tvB = B_bar.ndim == 4
    dtype = np.result_type(A_bar, B_bar, C, x, np.float64, *([] if h0 is None else [np.asarray(h0)]))
    s = np.zeros((b, h, n), dtype=dtype) if (h0 is None or ignore_h0) else np.asarray(h0).astype(dtype)
    states = [s]
    y = np.zeros((b, L, h, C.shape[1]), dtype=dtype)
    for t in range(L):
        a = A_bar[t] if tvA else A_bar
        bb = B_bar[t] if tvB else B_bar
        s = (a[None] * s if diagonal else np.einsum("hij,bhj->bhi", a, s)) + np.einsum("hnm,bhm->bhn", bb, x[:, t])
        states.append(s)
        y[:, t] = np.einsum("hpn,bhn->bhp", C, s)
        if D is not None and not skip_D:
            y[:, t] += np.einsum("hpm,bhm->bhp", np.asarray(D), x[:, t])
    return y, np.stack(states, axis=1)


# ---------------------------------------------------------------------------------------------- ssm.discretize

@mutant("ssm.discretize", "euler-instead-of-exp", doc="A_bar = I + dt A (forward Euler) where ZOH needs e^{dt A}")
def _euler_for_exp(A, B, dt, C=None, D=None):
    A = np.asarray(A)
    return np.eye(A.shape[-1]) + float(dt) * A, _zoh_B(A, B, dt, False)


@mutant("ssm.discretize", "sign-flip-A", doc="A_bar = e^{-dt A}: the sign of A flipped (S4's stored -A read as A)")
def _sign_flip_A(A, B, dt, C=None, D=None):
    return _expm_A(-np.asarray(A), dt, False), _zoh_B(A, B, dt, False)


@mutant("ssm.discretize", "phi1-series-x2-over-3", conventions={"diagonal": True},
        doc="phi1(x) by its series below |x| < 0.5 with x^2/3 where the coefficient is 1/6 (1/3!)")
def _phi1_series_wrong(A, B, dt, C=None, D=None):
    A = np.asarray(A)
    x = float(dt) * A
    exact = np.where(x == 0, 1.0, np.expm1(x) / np.where(x == 0, 1.0, x))
    series = 1 + x / 2 + x**2 / 3 + x**3 / 24 + x**4 / 120  # x^2/3: should be x^2/6
    phi1 = np.where(np.abs(x) < 0.5, series, exact)
    return np.exp(x), float(dt) * phi1[..., None] * np.asarray(B)


@mutant("ssm.discretize", "bilinear-swapped", conventions={"method": "bilinear"},
        doc="A_bar = (I + dt/2 A)^{-1}(I - dt/2 A): the two factors of the bilinear transform swapped")
def _bilinear_swapped(A, B, dt, C=None, D=None):
    A, B = np.asarray(A), np.asarray(B)
    I = np.eye(A.shape[-1])
    P, M = I + 0.5 * float(dt) * A, I - 0.5 * float(dt) * A
    return np.linalg.solve(P, M), np.linalg.solve(M, float(dt) * B)


@mutant("ssm.discretize", "B_bar-missing-dt", doc="ZOH B_bar = phi1(dt A) B: the factor dt dropped")
def _B_missing_dt(A, B, dt, C=None, D=None):
    return _expm_A(A, dt, False), _zoh_B(A, B, dt, False) / float(dt)


@mutant("ssm.discretize", "mamba-B-by-zoh", conventions={"method": "mamba", "diagonal": True},
        doc="Mamba's mix asked for (B_bar = dt B) but B discretized by exact ZOH")
def _mamba_B_zoh(A, B, dt, C=None, D=None):
    return _expm_A(A, dt, True), _zoh_B(A, B, dt, True)


@mutant("ssm.discretize", "gbt-alpha-complement", conventions={"method": "gbt", "alpha": 0.3},
        doc="gbt with 1 - alpha in the implicit factor: (I - (1-alpha) dt A)^{-1}(I + alpha dt A)")
def _gbt_complement(A, B, dt, C=None, D=None):
    A, B = np.asarray(A), np.asarray(B)
    a, h = 0.3, float(dt)
    I = np.eye(A.shape[-1])
    M = I - (1 - a) * h * A
    return np.linalg.solve(M, I + a * h * A), np.linalg.solve(M, h * B)


# ---------------------------------------------------------------------------------------------- ssm.lti

@mutant("ssm.lti", "initial-state-ignored", doc="h0 accepted and ignored: the recurrence starts from zero")
def _h0_ignored(A_bar, B_bar, C, D, x, h0=None):
    y, st = _lti_run(A_bar, B_bar, C, D, x, h0, ignore_h0=True)
    return y, st[:, -1]


@mutant("ssm.lti", "final-state-off-by-one", doc="h_last is the state before the last step (h_{L-2}), not after it")
def _final_off_by_one(A_bar, B_bar, C, D, x, h0=None):
    y, st = _lti_run(A_bar, B_bar, C, D, x, h0)
    return y, st[:, max(st.shape[1] - 2, 0)]


@mutant("ssm.lti", "dropped-D", doc="the skip term D x_t left out of y_t")
def _dropped_D(A_bar, B_bar, C, D, x, h0=None):
    y, st = _lti_run(A_bar, B_bar, C, D, x, h0, skip_D=True)
    return y, st[:, -1]


@mutant("ssm.lti", "time-varying-wrong-order", conventions={"time_varying": True},
        doc="a parallel (Hillis-Steele) scan whose combine multiplies the transitions as A_i A_j instead of A_j A_i")
def _tv_wrong_order(A_bar, B_bar, C, D, x, h0=None):
    A_bar, B_bar, C, x = (np.asarray(a) for a in (A_bar, B_bar, C, x))
    b, L, h, m = x.shape
    n = A_bar.shape[-1]
    dtype = np.result_type(A_bar, B_bar, C, x, np.float64, *([] if h0 is None else [np.asarray(h0)]))
    tvA, tvB = A_bar.ndim == 4, B_bar.ndim == 4
    a = np.array([A_bar[t] if tvA else A_bar for t in range(L)], dtype=dtype).reshape(L, h, n, n)
    e = np.einsum("lhnm,blhm->blhn", B_bar if tvB else np.broadcast_to(B_bar, (L,) + B_bar.shape), x).astype(dtype)
    if h0 is not None and L:
        e[:, 0] += np.einsum("hij,bhj->bhi", a[0], np.asarray(h0))
    d = 1
    while d < L:
        a_new, e_new = a.copy(), e.copy()
        # element t combines (earlier t-d, later t): b = A_t b_{t-d} + b_t (right); A = A_{t-d} A_t (wrong order)
        e_new[:, d:] = np.einsum("lhij,blhj->blhi", a[d:], e[:, :-d]) + e[:, d:]
        a_new[d:] = np.einsum("lhij,lhjk->lhik", a[:-d], a[d:])
        a, e = a_new, e_new
        d *= 2
    y = np.einsum("hpn,blhn->blhp", C, e)
    if D is not None:
        y = y + np.einsum("hpm,blhm->blhp", np.asarray(D), x)
    last = e[:, -1] if L else (np.zeros((b, h, n), dtype) if h0 is None else np.asarray(h0).astype(dtype))
    return y, last


@mutant("ssm.lti", "re-instead-of-2re", conventions={"real_output": "2re"},
        doc="2 Re(C h) + D x asked for (one eigenvalue per conjugate pair) but Re(C h) + D x returned")
def _re_for_2re(A_bar, B_bar, C, D, x, h0=None):
    y, st = _lti_run(A_bar, B_bar, C, D, x, h0)
    return y.real, st[:, -1]


@mutant("ssm.lti", "conjugate-C", doc="y = conj(C) h + D x: C conjugated (a complex-layout mix-up)")
def _conj_C(A_bar, B_bar, C, D, x, h0=None):
    y, st = _lti_run(A_bar, B_bar, np.conj(np.asarray(C)), D, x, h0)
    return y, st[:, -1]


def _kernel(A_bar, B_bar, C, L, diagonal, shift=0):
    """``K_k = C A_bar^(k + shift) B_bar`` (l h p m) by repeated products."""
    A_bar, B_bar, C = (np.asarray(a) for a in (A_bar, B_bar, C))
    P = B_bar.astype(np.result_type(A_bar, B_bar, C, np.float64))
    for _ in range(shift):
        P = A_bar[..., None] * P if diagonal else np.einsum("hij,hjm->him", A_bar, P)
    K = []
    for _ in range(L):
        K.append(np.einsum("hpn,hnm->hpm", C, P))
        P = A_bar[..., None] * P if diagonal else np.einsum("hij,hjm->him", A_bar, P)
    return np.stack(K) if L else np.zeros((0,) + (C.shape[0], C.shape[1], B_bar.shape[-1]), P.dtype)


def _final_state(A_bar, B_bar, x, diagonal):
    _, st = _lti_run(A_bar, B_bar, np.zeros((np.shape(B_bar)[0], 1, np.shape(A_bar)[-1])), None, x, None,
                     diagonal=diagonal)
    return st[:, -1]


@mutant("ssm.lti", "fft-circular", conventions={"use_h0": False, "algorithm": "fft"},
        doc="the convolution y = K * x by an FFT of length L without zero padding (circular: the tail wraps around)")
def _fft_circular(A_bar, B_bar, C, D, x, h0=None):
    diagonal = np.ndim(A_bar) == 2
    x = np.asarray(x)
    L = x.shape[1]
    K = _kernel(A_bar, B_bar, C, L, diagonal)
    if L:
        Kf = np.fft.fft(K, n=L, axis=0)
        xf = np.fft.fft(x, n=L, axis=1)
        y = np.fft.ifft(np.einsum("lhpm,blhm->blhp", Kf, xf), n=L, axis=1)
    else:
        y = np.zeros(x.shape[:3] + (np.shape(C)[1],), complex)
    if not any(np.iscomplexobj(a) for a in (A_bar, B_bar, C)):
        y = y.real
    if D is not None:
        y = y + np.einsum("hpm,blhm->blhp", np.asarray(D), x)
    return y, _final_state(A_bar, B_bar, x, diagonal)


@mutant("ssm.lti", "kernel-off-by-one", conventions={"use_h0": False},
        doc="a convolution view with K_k = C A_bar^(k+1) B_bar (the kernel shifted by one power)")
def _kernel_off_by_one(A_bar, B_bar, C, D, x, h0=None):
    diagonal = np.ndim(A_bar) == 2
    x = np.asarray(x)
    L = x.shape[1]
    K = _kernel(A_bar, B_bar, C, L, diagonal, shift=1)
    y = np.zeros(x.shape[:3] + (np.shape(C)[1],), dtype=np.result_type(K, x, np.float64))
    for t in range(L):
        y[:, t] = np.einsum("shpm,bshm->bhp", K[t::-1], x[:, : t + 1])
    if D is not None:
        y = y + np.einsum("hpm,blhm->blhp", np.asarray(D), x)
    return y, _final_state(A_bar, B_bar, x, diagonal)


# ---------------------------------------------------------------------------------------------- ssm.s4d_kernel

def _s4d_disc(Lambda, B, dt, method):
    lam = np.asarray(Lambda, dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape[:1])[:, None]
    if method == "zoh":
        return np.exp(dt * lam), np.expm1(dt * lam) / lam * np.asarray(B)
    den = 1 - dt / 2 * lam
    return (1 + dt / 2 * lam) / den, dt * np.asarray(B) / den


def _vander(v, z, L, shift=0):
    k = np.arange(L) + shift
    return np.einsum("hn,hnl->hl", v, z[..., None] ** k) if L else np.zeros((v.shape[0], 0), complex)


@mutant("ssm.s4d_kernel", "re-instead-of-2re", doc="K = Re(...) where one eigenvalue per conjugate pair needs 2 Re "
        "(the conjugate half of the spectrum missing)")
def _s4d_re(Lambda, B, C, dt, L):
    Ab, Bb = _s4d_disc(Lambda, B, dt, "zoh")
    return _vander(np.asarray(C) * Bb, Ab, int(L)).real


@mutant("ssm.s4d_kernel", "kernel-off-by-one", doc="K_k = sum C B_bar A_bar^(k+1): the Vandermonde powers start at 1")
def _s4d_off_by_one(Lambda, B, C, dt, L):
    Ab, Bb = _s4d_disc(Lambda, B, dt, "zoh")
    return 2 * _vander(np.asarray(C) * Bb, Ab, int(L), shift=1).real


@mutant("ssm.s4d_kernel", "zoh-B-extra-dt", doc="ZOH B_bar = dt (e^{dt l} - 1)/l B: dt applied twice")
def _s4d_extra_dt(Lambda, B, C, dt, L):
    Ab, Bb = _s4d_disc(Lambda, B, dt, "zoh")
    dtc = np.broadcast_to(np.asarray(dt, dtype=np.float64), Ab.shape[:1])[:, None]
    return 2 * _vander(np.asarray(C) * Bb * dtc, Ab, int(L)).real


@mutant("ssm.s4d_kernel", "bilinear-B-euler", conventions={"method": "bilinear"},
        doc="bilinear A_bar with B_bar = dt B (Euler) instead of dt B/(1 - dt/2 l)")
def _s4d_bilinear_euler(Lambda, B, C, dt, L):
    Ab, _ = _s4d_disc(Lambda, B, dt, "bilinear")
    dtc = np.broadcast_to(np.asarray(dt, dtype=np.float64), Ab.shape[:1])[:, None]
    return 2 * _vander(np.asarray(C) * dtc * np.asarray(B), Ab, int(L)).real


# ---------------------------------------------------------------------------------------------- ssm.lru

def _lru(nu_log, theta_log, gamma_log, B, C, D, u, *, lam=None, gamma=True, factor=1.0):
    nu, th, gl = (np.asarray(a, dtype=np.float64) for a in (nu_log, theta_log, gamma_log))
    if lam is None:
        lam = np.exp(-np.exp(nu) + 1j * np.exp(th))
    Bn = (np.exp(gl)[:, None] if gamma else 1.0) * np.asarray(B)
    u = np.asarray(u, dtype=np.float64)
    b, L, h = u.shape
    s = np.zeros((b, lam.shape[0]), complex)
    y = np.zeros((b, L, h))
    for t in range(L):
        s = lam * s + u[:, t] @ Bn.T
        y[:, t] = factor * (s @ np.asarray(C).T).real + np.asarray(D) * u[:, t]
    return y


@mutant("ssm.lru", "gamma-normalization-missing", doc="x_t = lambda x_{t-1} + B u_t: the gamma = exp(gamma_log) "
        "normalization left out")
def _lru_no_gamma(nu_log, theta_log, gamma_log, B, C, D, u):
    return _lru(nu_log, theta_log, gamma_log, B, C, D, u, gamma=False)


@mutant("ssm.lru", "nu-not-exponentiated", doc="lambda = exp(-nu_log + i exp(theta_log)): the modulus parameter "
        "used without its exp")
def _lru_nu(nu_log, theta_log, gamma_log, B, C, D, u):
    lam = np.exp(-np.asarray(nu_log) + 1j * np.exp(np.asarray(theta_log)))
    return _lru(nu_log, theta_log, gamma_log, B, C, D, u, lam=lam)


@mutant("ssm.lru", "2re-instead-of-re", doc="y = 2 Re(C x) + D u: the conjugate-pair factor on LRU's full complex state")
def _lru_2re(nu_log, theta_log, gamma_log, B, C, D, u):
    return _lru(nu_log, theta_log, gamma_log, B, C, D, u, factor=2.0)


@mutant("ssm.lru", "phase-sign", doc="lambda = exp(-exp(nu_log) - i exp(theta_log)): the conjugate eigenvalue")
def _lru_phase(nu_log, theta_log, gamma_log, B, C, D, u):
    lam = np.exp(-np.exp(np.asarray(nu_log)) - 1j * np.exp(np.asarray(theta_log)))
    return _lru(nu_log, theta_log, gamma_log, B, C, D, u, lam=lam)
