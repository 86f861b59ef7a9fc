"""Mutants of the structured SSM ops: ``ssm.s4_kernel``, ``ssm.dss_kernel``, ``ssm.s5``, ``ssm.ema`` and
``ssm.hippo_projection``.

Each is the op's math in plain NumPy, in its canonical signature, with one plausible deviation (a wrong Cauchy
node, a Woodbury sign, a missing truncation, a softmax over the wrong range, a backward scan run forwards, a
missing damping, a wrongly scaled HiPPO ``B``, an off-by-one time index, ...).
"""
from __future__ import annotations

import numpy as np

from oracles.mutants import mutant

# ---------------------------------------------------------------------------------------------- ssm.s4_kernel


def _s4_gf(Lambda, P, Q, B, C, dt, L, *, node_scale=2.0, woodbury_sign=1.0, truncate=True, factor=2.0):
    """S4's generating-function kernel (bilinear) per channel: nodes ``g_j = (node_scale/dt)(1 - z_j)/(1 + z_j)`` at
    ``z_j = exp(-2 pi i j/L)``, the resolvent of ``diag(Lambda) - P Q^*`` by Woodbury with ``(I + woodbury_sign
    Q^* R P)^{-1}``, ``C_t = C (I - A_bar^L)`` (``truncate``), the Nyquist node by its limit, then ``ifft``;
    output ``factor Re K`` (2: one eigenvalue per pair)."""
    lam, P, Q, B, C = (np.asarray(a, dtype=np.complex128) for a in (Lambda, P, Q, B, C))
    L = int(L)
    h, n = lam.shape
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), (h,))
    K = np.zeros((h, L))
    if L == 0:
        return K
    j = np.arange(L)
    z = np.exp(-2j * np.pi * j / L)
    for c in range(h):
        A = np.diag(lam[c]) - P[c] @ Q[c].conj().T
        I = np.eye(n)
        M = I - dt[c] / 2 * A
        Ab = np.linalg.solve(M, I + dt[c] / 2 * A)
        Bb = np.linalg.solve(M, dt[c] * B[c])
        Ct = C[c] @ (I - np.linalg.matrix_power(Ab, L)) if truncate else C[c]
        Kh = np.zeros(L, complex)
        for jj in range(L):
            if abs(1 + z[jj]) < 1e-12:  # z = -1: the limit C_t (I + A_bar)^{-1} B_bar
                Kh[jj] = Ct @ np.linalg.solve(I + Ab, Bb)
                continue
            g = node_scale / dt[c] * (1 - z[jj]) / (1 + z[jj])
            Rd = 1.0 / (g - lam[c])  # the diagonal resolvent: the Cauchy kernel's terms
            RP = Rd[:, None] * P[c]
            W = np.linalg.inv(np.eye(P.shape[-1]) + woodbury_sign * Q[c].conj().T @ RP)
            x = Rd * B[c] - RP @ (W @ (Q[c].conj().T @ (Rd * B[c])))
            Kh[jj] = 2.0 / (1 + z[jj]) * (Ct @ x)
        K[c] = factor * np.fft.ifft(Kh).real
    return K


@mutant("ssm.s4_kernel", "cauchy-node-wrong", doc="the Cauchy nodes g = (1/dt)(1 - z)/(1 + z): the bilinear map's "
        "factor 2/dt taken as 1/dt")
def _s4_node(Lambda, P, Q, B, C, dt, L):
    return _s4_gf(Lambda, P, Q, B, C, dt, L, node_scale=1.0)


@mutant("ssm.s4_kernel", "woodbury-sign", doc="Woodbury with (I - Q^* R P)^{-1} where A = Lambda - P Q^* needs "
        "(I + Q^* R P)^{-1}")
def _s4_woodbury(Lambda, P, Q, B, C, dt, L):
    return _s4_gf(Lambda, P, Q, B, C, dt, L, woodbury_sign=-1.0)


@mutant("ssm.s4_kernel", "truncation-missing", doc="C_t = C instead of C (I - A_bar^L): the generating function "
        "of the infinite kernel sampled at L roots of unity (the tail aliases onto K)")
def _s4_no_truncation(Lambda, P, Q, B, C, dt, L):
    return _s4_gf(Lambda, P, Q, B, C, dt, L, truncate=False)


@mutant("ssm.s4_kernel", "re-instead-of-2re", doc="K = Re(...) where one eigenvalue per conjugate pair needs 2 Re")
def _s4_re(Lambda, P, Q, B, C, dt, L):
    return _s4_gf(Lambda, P, Q, B, C, dt, L, factor=1.0)


# ---------------------------------------------------------------------------------------------- ssm.dss_kernel

def _dss(Lambda, W, dt, L, *, variant, extra=0, divide=True):
    lam, W = np.asarray(Lambda, dtype=np.complex128), np.asarray(W, dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape[:1])[:, None]
    L = int(L)
    k = np.arange(L)
    p = dt[..., None] * lam[..., None] * k  # (h n l)
    w = W / lam if divide else W
    if variant == "exp":
        return np.einsum("hn,hnl->hl", w * np.expm1(dt * lam), np.exp(p)).real
    r = np.arange(L + extra)
    S = np.sum(np.exp(dt[..., None] * lam[..., None] * r), axis=-1)  # the normalizer over r < L + extra
    return np.einsum("hn,hnl->hl", w / S, np.exp(p)).real


@mutant("ssm.dss_kernel", "softmax-normalizer-range", doc="DSS-softmax normalized by sum_{r <= L} e^{r dt l} "
        "(one term too many) instead of sum_{r < L}")
def _dss_range(Lambda, W, dt, L):
    return _dss(Lambda, W, dt, L, variant="softmax", extra=1)


@mutant("ssm.dss_kernel", "softmax-without-1/lambda", doc="DSS-softmax without the 1/lambda factor: Re sum w softmax")
def _dss_no_div(Lambda, W, dt, L):
    return _dss(Lambda, W, dt, L, variant="softmax", divide=False)


@mutant("ssm.dss_kernel", "exp-without-1/lambda", conventions={"variant": "exp"},
        doc="DSS-exp with w (e^{dt l} - 1) e^{k dt l}: the 1/lambda of the ZOH integral dropped")
def _dss_exp_no_div(Lambda, W, dt, L):
    return _dss(Lambda, W, dt, L, variant="exp", divide=False)


# ---------------------------------------------------------------------------------------------- ssm.s5

def _s5(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None, *, method="zoh", factor=2.0, reverse_back=True,
        bilinear_B_denominator=True, shared_dt=False):
    lam = np.asarray(Lambda, dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape)
    if shared_dt:
        dt = np.full(lam.shape, dt[0])
    Bt = np.asarray(B_tilde, dtype=np.complex128)
    if method == "zoh":
        Ab = np.exp(dt * lam)
        Bb = (np.expm1(dt * lam) / lam)[:, None] * Bt
    else:
        den = 1 - dt / 2 * lam
        Ab = (1 + dt / 2 * lam) / den
        Bb = ((dt / den) if bilinear_B_denominator else dt)[:, None] * Bt
    u = np.asarray(u, dtype=np.float64)
    b, L, h = u.shape
    Bu = np.einsum("nh,blh->bln", Bb, u)

    def scan(seq, x):
        xs = np.zeros(seq.shape, complex)
        for t in range(seq.shape[1]):
            x = Ab * x + seq[:, t]
            xs[:, t] = x
        return xs, x

    x0 = np.zeros((b, lam.shape[0]), complex) if h0 is None else np.asarray(h0, dtype=np.complex128)
    xs, last = scan(Bu, x0)
    y = factor * np.einsum("hn,bln->blh", np.asarray(C_tilde), xs).real
    if C_back is not None:
        if reverse_back:
            xb = scan(Bu[:, ::-1], np.zeros_like(x0))[0][:, ::-1]
        else:
            xb = scan(Bu, np.zeros_like(x0))[0]
        y = y + factor * np.einsum("hn,bln->blh", np.asarray(C_back), xb).real
    if D is not None:
        y = y + np.asarray(D) * u
    return y, last


@mutant("ssm.s5", "backward-scan-not-reversed", conventions={"bidirectional": True},
        doc="bidirectional S5 whose backward state is a second forward scan (the sequence never reversed)")
def _s5_not_reversed(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None):
    return _s5(Lambda, B_tilde, C_tilde, D, dt, u, C_back, None, reverse_back=False)[0]


@mutant("ssm.s5", "bilinear-B-missing-denominator", conventions={"method": "bilinear"},
        doc="bilinear Lambda_bar with B_bar = dt B~ instead of dt B~/(1 - dt/2 Lambda)")
def _s5_bilinear_B(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None):
    return _s5(Lambda, B_tilde, C_tilde, D, dt, u, None, h0, method="bilinear", bilinear_B_denominator=False)


@mutant("ssm.s5", "one-step-for-all-states", doc="the step of the first state, dt[0], used for every state "
        "(S5 has one step per state)")
def _s5_shared_dt(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None):
    return _s5(Lambda, B_tilde, C_tilde, D, dt, u, None, h0, shared_dt=True)


@mutant("ssm.s5", "re-instead-of-2re", doc="Re(C x) + D u where conj_sym (one eigenvalue per conjugate pair) needs "
        "2 Re(C x): the conjugate half missing")
def _s5_re(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None):
    return _s5(Lambda, B_tilde, C_tilde, D, dt, u, None, h0, factor=1.0)


# ---------------------------------------------------------------------------------------------- ssm.ema

def _ema(x, alpha, delta, beta, eta, h0=None, *, damping=True, use_beta=True, use_h0=True):
    x = np.asarray(x, dtype=np.float64)
    a, dl, be, et = (np.asarray(v, dtype=np.float64) for v in (alpha, delta, beta, eta))
    q = 1 - a * dl if damping else 1 - a
    b, L, d = x.shape
    h = np.zeros((b,) + a.shape) if (h0 is None or not use_h0) else np.asarray(h0, dtype=np.float64).copy()
    y = np.zeros_like(x)
    for t in range(L):
        h = a * ((be if use_beta else 1.0) * x[:, t][..., None]) + q * h
        y[:, t] = np.sum(et * h, axis=-1)
    return y, h


@mutant("ssm.ema", "damping-missing", doc="h_t = alpha u_t + (1 - alpha) h_{t-1}: the damping delta left out")
def _ema_no_damping(x, alpha, delta, beta, eta, h0=None):
    return _ema(x, alpha, delta, beta, eta, h0, damping=False)


@mutant("ssm.ema", "input-expansion-missing", doc="u_t = x_t: the expansion beta left out of the EMA's input")
def _ema_no_beta(x, alpha, delta, beta, eta, h0=None):
    return _ema(x, alpha, delta, beta, eta, h0, use_beta=False)


@mutant("ssm.ema", "initial-state-ignored", doc="h0 accepted and ignored: the EMA starts from zero")
def _ema_h0(x, alpha, delta, beta, eta, h0=None):
    return _ema(x, alpha, delta, beta, eta, h0, use_h0=False)


# ---------------------------------------------------------------------------------------------- ssm.hippo_projection

def _legs(N, b_power=0.5):
    q = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    A = -(np.tril(np.outer(r, r), -1) + np.diag(q + 1))
    return A, (2 * q + 1) ** b_power


def _legs_trapezoid(f, N, c0, *, alpha=0.5, b_power=0.5, t_offset=1):
    """LegS stepped by the gbt on ``t_k = (k + t_offset) dt`` (``dt`` drops out), both ends weighted; ``c[0] = c0``
    (default ``f_0 e_0``)."""
    f = np.asarray(f, dtype=np.float64)
    N = int(N)
    A, B = _legs(N, b_power)
    L = f.shape[0]
    c = np.zeros((L, N))
    if L == 0:
        return c
    ck = np.zeros(N) if c0 is None else np.asarray(c0, dtype=np.float64).copy()
    if c0 is None:
        ck[0] = f[0]
    c[0] = ck
    I = np.eye(N)
    for k in range(L - 1):
        h0, h1 = 1.0 / (k + t_offset), 1.0 / (k + 1 + t_offset)
        rhs = (I + (1 - alpha) * h0 * A) @ ck + B * (alpha * h1 * f[k + 1] + (1 - alpha) * h0 * f[k])
        ck = np.linalg.solve(I - alpha * h1 * A, rhs)
        c[k + 1] = ck
    return c


@mutant("ssm.hippo_projection", "B-scaled-wrongly", doc="LegS with B_n = 2n + 1 instead of sqrt(2n + 1)")
def _hippo_B(f, N, dt, c0=None):
    return _legs_trapezoid(f, N, c0, b_power=1.0)


@mutant("ssm.hippo_projection", "legs-time-off-by-one", doc="LegS's scale 1/t taken at t = (k + 2) dt instead of "
        "(k + 1) dt (the first sample at 2 dt)")
def _hippo_time(f, N, dt, c0=None):
    return _legs_trapezoid(f, N, c0, t_offset=2)


@mutant("ssm.hippo_projection", "forward-euler-for-bilinear", doc="bilinear asked for, forward Euler (alpha = 0) "
        "computed")
def _hippo_euler(f, N, dt, c0=None):
    return _legs_trapezoid(f, N, c0, alpha=0.0)
