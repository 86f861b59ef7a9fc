r"""Independent oracles for the structured SSMs (S4, S4D/DSS, S5, LRU, MEGA EMA) and their error bounds.

Nothing here imports ``refimpl.ssm`` (only the tolerance model).  The ground truths are

* **direct powers** ``K_k = C A_bar^k B_bar`` in complex128, with ``A_bar, B_bar`` from this module's
  own discretizations: dense bilinear by ``numpy.linalg.solve``; ZOH by Van Loan's block
  exponential ``expm([[dt A, dt B], [0, 0]]) = [[A_bar, B_bar], [0, I]]`` (``scipy.linalg.expm``),
  never the Cauchy / Vandermonde / ``expm1`` code under test;
* **mpmath** at 40 digits for small ``N, L`` (dense DPLR bilinear or diagonal ZOH/bilinear);
* **dense operator materialization** for S5, LRU and EMA: the lower-triangular Toeplitz
  operator ``y_t = sum_{s<=t} T_{t-s} u_s`` with closed-form powers ``lambda^j = exp(j log lambda)``
  (or Python's ``float.__pow__`` for EMA), not the recurrence or scan under test.

Bounds follow ``oracles/tolerance.py``: magnitudes are the same computation on absolute values;
where the rounding depth differs per term (a power ``z^k`` carries ``k`` multiplications) the
per-term depth ``d`` is folded into the magnitude (``gamma_n`` is linear in ``n`` to first
order, ``gamma_{d} M ~ d u M``), with unit depth -- each such place says so.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from oracles.tolerance import Bound, gamma, unit_roundoff

__all__ = [
    "bilinear_dense", "zoh_diag_vanloan", "bilinear_diag", "kernel_powers", "dplr_dense",
    "dplr_kernel_mpmath", "diag_kernel_mpmath", "s4_gf_bound", "diag_kernel_bound", "cauchy_bound",
    "vandermonde_bound", "diag_scan_bound", "diag_ssm_dense", "ema_dense",
]


# ---------------------------------------------------------------- discretizations (own code)

def bilinear_dense(A: np.ndarray, B: np.ndarray, dt: float):
    """``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``, ``B_bar = (I - dt/2 A)^{-1} dt B`` by LU solve; ``A (n n)``, ``B (n)``."""
    n = A.shape[0]
    M = np.eye(n) - 0.5 * dt * A
    return np.linalg.solve(M, np.eye(n) + 0.5 * dt * A), np.linalg.solve(M, dt * B)


def zoh_diag_vanloan(lam: np.ndarray, B: np.ndarray, dt):
    """Diagonal ZOH by Van Loan: ``expm([[dt l, dt], [0, 0]]) = [[e^{dt l}, dt phi1(dt l)], [0, 1]]``; any shape, broadcast."""
    lam = np.asarray(lam, dtype=np.complex128)
    dtb = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape)
    blk = np.zeros(lam.shape + (2, 2), dtype=np.complex128)
    blk[..., 0, 0] = dtb * lam
    blk[..., 0, 1] = dtb
    E = scipy.linalg.expm(blk.reshape(-1, 2, 2)).reshape(blk.shape) if lam.size else blk
    return E[..., 0, 0], E[..., 0, 1] * B


def bilinear_diag(lam, B, dt):
    """Diagonal bilinear: ``(1 + dt/2 l)/(1 - dt/2 l)``, ``dt B/(1 - dt/2 l)``."""
    lam = np.asarray(lam, dtype=np.complex128)
    den = 1.0 - 0.5 * dt * lam
    return (1.0 + 0.5 * dt * lam) / den, dt * B / den


def kernel_powers(A_bar: np.ndarray, B_bar: np.ndarray, C: np.ndarray, L: int) -> np.ndarray:
    """``K_k = C A_bar^k B_bar`` by successive products (dense ``A_bar (n n)`` or diagonal ``(n)``); ``(l,)``."""
    diag = A_bar.ndim == 1
    K = np.zeros(L, dtype=np.result_type(A_bar, B_bar, C))
    P = B_bar.copy()
    for k in range(L):
        K[k] = C @ P
        P = A_bar * P if diag else A_bar @ P
    return K


def dplr_dense(Lambda, P, Q) -> np.ndarray:
    """``A = diag(Lambda) - P Q^*`` for one channel: ``Lambda (n)``, ``P, Q (n r)``."""
    return np.diag(Lambda) - P @ Q.conj().T


# ---------------------------------------------------------------- mpmath oracles

def dplr_kernel_mpmath(Lambda, P, Q, B, C, dt, L: int, dps: int = 40) -> np.ndarray:
    """Bilinear DPLR kernel ``C A_bar^k B_bar`` at ``dps`` digits (one channel), as complex128."""
    import mpmath as mp

    with mp.workdps(dps):
        n = len(Lambda)
        r = P.shape[1]
        A = mp.matrix(n, n)
        for i in range(n):
            for j in range(n):
                s = mp.mpc(complex(Lambda[i])) if i == j else mp.mpc(0)
                for q in range(r):
                    s -= mp.mpc(complex(P[i, q])) * mp.conj(mp.mpc(complex(Q[j, q])))
                A[i, j] = s
        h = mp.mpf(float(dt)) / 2
        I = mp.eye(n)
        M = I - h * A
        Minv = mp.inverse(M)
        Ab = Minv * (I + h * A)
        Bv = mp.matrix([mp.mpc(complex(b)) for b in B])
        Bb = Minv * (2 * h * Bv)
        Cv = mp.matrix([[mp.mpc(complex(c)) for c in C]])
        out = np.zeros(L, dtype=np.complex128)
        Pk = Bb
        for k in range(L):
            out[k] = complex((Cv * Pk)[0, 0])
            Pk = Ab * Pk
        return out


def diag_kernel_mpmath(lam, B, C, dt, L: int, method: str, dps: int = 40) -> np.ndarray:
    """Diagonal kernel ``sum_n C_n B_bar_n A_bar_n^k`` at ``dps`` digits (one channel), as complex128."""
    import mpmath as mp

    with mp.workdps(dps):
        d = mp.mpf(float(dt))
        out = [mp.mpc(0)] * L
        for ln, bn, cn in zip(lam, B, C):
            l_ = mp.mpc(complex(ln))
            if method == "zoh":
                ab = mp.exp(d * l_)
                bb = (ab - 1) / l_ * mp.mpc(complex(bn)) if l_ != 0 else d * mp.mpc(complex(bn))
            else:
                ab = (1 + d / 2 * l_) / (1 - d / 2 * l_)
                bb = d * mp.mpc(complex(bn)) / (1 - d / 2 * l_)
            v = mp.mpc(complex(cn)) * bb
            for k in range(L):
                out[k] += v * ab ** k
        return np.array([complex(x) for x in out], dtype=np.complex128)


# ---------------------------------------------------------------- bounds

def s4_gf_bound(Lambda, P, Q, B, C, dt, L: int, *, oracle: str = "float64") -> Bound:
    r"""First-order normwise bound on ``|K_k - oracle_k|`` for the S4 generating-function kernel (one channel).

    Stages of the algorithm (``n`` states, rank ``r``; ``u`` unit roundoff, ``g^c_m`` = complex gamma):

    1. ``A_bar`` by LU solve: ``||dA_bar|| <= d_A = kappa(I - dt/2 A) g_{3n} ||A_bar||`` (forward <= cond x backward).
    2. ``A_bar^L`` by binary powering (<= ``2 ceil(log2 L)`` products, each ``g^c_n sqrt(n) ||X|| ||Y||``):
       ``||d A_bar^L|| <= L M^2 d_A + 2 ceil(log2 L) sqrt(n) g^c_n M^3``, ``M = max_{k<=L} ||A_bar^k||_F`` (>= the 2-norm).
    3. ``C_t = C (I - A_bar^L)``: ``||dC_t|| <= ||C|| ||d A_bar^L|| + g^c_{n+1} sqrt(n) ||C|| (1 + M)``.
       Nodes the reference solves densely (``g_j`` on an eigenvalue): ``kappa(g - A) g^c_{3n} ||C_t|| ||x|| + ||dC_t|| ||x||``.
    4. Cauchy sums ``k_ab(g) = sum a_n b_n/(g - l_n)``: ``g^c_{n+6} sum |a b| (1 + |g|/|g - l|)/|g - l|`` (the sum,
       the division and the rounding of ``g = (2/dt) i tan(pi j/L)``), plus ``||dC_t|| sum |b|/|g - l|`` where ``C_t`` enters.
    5. Woodbury ``t = k01 (I + k11)^{-1} k10`` (``W = (I + k11)^{-1}``, 2-norms in the rank dimension):
       ``|dt| <= |dk01| ||W|| |k10| + |k01| ||W|| |dk10| + |k01| ||W||^2 (|dk11| + g_{3r} ||I + k11||) |k10|``.
    6. ``K^_j = pref_j (k00 - t)``: ``|pref| (|dk00| + |dt|) + g^c_4 |pref| (|k00| + |t|)``; Nyquist:
       ``dt/2 (||dC_t|| ||B|| + g^c_n sum |C_t B|)``.
    7. ``K = ifft(K^)``: ``|dK_k| <= (1/L) sum_j |dK^_j| + 5 log2(L) u ||K^||_2 / sqrt(L)`` (Higham Thm 24.2).
    8. Oracle share (``oracle="float64"``, direct powers): ``(k L^0) (k M^2 d_A + d_A M + (k+1) sqrt(n) g^c_n M) ||C|| ||B_bar||``;
       ``oracle="mpmath"``: none (40 digits).
    """
    Lambda = np.asarray(Lambda, dtype=np.complex128)
    P = np.asarray(P, dtype=np.complex128)
    Q = np.asarray(Q, dtype=np.complex128)
    B = np.asarray(B, dtype=np.complex128)
    C = np.asarray(C, dtype=np.complex128)
    n, r = P.shape
    u = unit_roundoff(np.float64)
    gc = lambda m: gamma(m, np.float64, complex_ops=True)  # noqa: E731
    A = dplr_dense(Lambda, P, Q)
    Mmat = np.eye(n) - 0.5 * dt * A
    kappa = float(np.linalg.cond(Mmat))
    A_bar, B_bar = bilinear_dense(A, B, dt)
    # M = max_k ||A_bar^k||_F >= max_k ||A_bar^k||_2, k <= L  (Frobenius: an upper bound, no SVD per power)
    Pk = np.eye(n, dtype=np.complex128)
    Mpow = 1.0
    for _ in range(L):
        Pk = A_bar @ Pk
        Mpow = max(Mpow, float(np.linalg.norm(Pk)))
    A_bar_L = Pk
    dA = kappa * gamma(3 * n, np.float64) * float(np.linalg.norm(A_bar, 2))
    nC = float(np.linalg.norm(C))
    dAL = L * Mpow ** 2 * dA + 2 * max(1, math.ceil(math.log2(max(L, 2)))) * math.sqrt(n) * gc(n) * Mpow ** 3
    dCt = nC * dAL + gc(n + 1) * math.sqrt(n) * nC * (1 + Mpow)
    C_t = C - C @ A_bar_L
    j = np.arange(L)
    cos_h = np.cos(np.pi * j / L)
    sin_h = np.sin(np.pi * j / L)
    nyq = (2 * j == L)
    dK_hat = np.zeros(L)
    K_hat_abs = np.zeros(L)
    for jj in range(L):
        if nyq[jj]:
            dK_hat[jj] = 0.5 * dt * (dCt * float(np.linalg.norm(B)) + gc(n) * float(np.sum(np.abs(C_t * B))))
            K_hat_abs[jj] = 0.5 * dt * abs(np.sum(C_t * B))
            continue
        g = (2.0 / dt) * 1j * sin_h[jj] / cos_h[jj]
        pref = abs(1.0 / cos_h[jj])
        if np.min(np.abs(g - Lambda)) <= math.sqrt(np.finfo(np.float64).eps) * (1 + abs(g) + float(np.max(np.abs(Lambda)))):
            # the reference solves this node densely: forward error <= kappa(gI - A) g_{3n} |K^_j| + C_t's share
            Gm = g * np.eye(n) - A
            x = np.linalg.solve(Gm, B)
            val = abs(C_t @ x)
            dK_hat[jj] = pref * (float(np.linalg.cond(Gm)) * gamma(3 * n, np.float64, complex_ops=True)
                                 * float(np.linalg.norm(C_t)) * float(np.linalg.norm(x)) + dCt * float(np.linalg.norm(x)))
            K_hat_abs[jj] = pref * val
            continue
        inv = 1.0 / np.abs(g - Lambda)
        rel = gc(n + 6) * (1.0 + abs(g) * inv)

        def kab(a, b, with_ct=False):
            val = np.sum(a * b / (g - Lambda))
            err = np.sum(np.abs(a * b) * inv * rel)
            if with_ct:
                err += dCt * np.sqrt(np.sum((np.abs(b) * inv) ** 2))
            return val, err

        k00, e00 = kab(C_t, B, True)
        k01 = np.zeros(r, complex); e01 = np.zeros(r)
        k10 = np.zeros(r, complex); e10 = np.zeros(r)
        k11 = np.zeros((r, r), complex); e11 = np.zeros((r, r))
        for a in range(r):
            k01[a], e01[a] = kab(C_t, P[:, a], True)
            k10[a], e10[a] = kab(Q[:, a].conj(), B)
            for b in range(r):
                k11[a, b], e11[a, b] = kab(Q[:, a].conj(), P[:, b])
        IK = np.eye(r) + k11
        W = np.linalg.inv(IK)
        nW = float(np.linalg.norm(W, 2))
        n01, n10 = float(np.linalg.norm(k01)), float(np.linalg.norm(k10))
        t = k01 @ W @ k10
        dt_w = (float(np.linalg.norm(e01)) * nW * n10 + n01 * nW * float(np.linalg.norm(e10))
                + n01 * nW ** 2 * (float(np.linalg.norm(e11)) + gamma(3 * r, np.float64) * float(np.linalg.norm(IK, 2))) * n10)
        dK_hat[jj] = pref * (e00 + dt_w) + gc(4) * pref * (abs(k00) + abs(t))
        K_hat_abs[jj] = pref * abs(k00 - t)
    ifft_err = 5 * math.log2(max(L, 2)) * u * float(np.linalg.norm(K_hat_abs)) / math.sqrt(max(L, 1))
    vals = np.full(L, float(np.sum(dK_hat)) / max(L, 1) + ifft_err)
    src = "S4 generating-function bound (oracles.structured.s4_gf_bound: solve, powering, Cauchy, Woodbury, ifft)"
    if oracle == "float64":
        k = np.arange(L)
        nBb = float(np.linalg.norm(B_bar))
        vals = vals + (k * Mpow ** 2 * dA + dA * Mpow + (k + 1) * math.sqrt(n) * gc(n) * Mpow) * nC * nBb
        src += " + direct-powers oracle share"
    return Bound(vals, src)


def zoh_gf_bound(lam, B, C, dt, L: int) -> Bound:
    r"""Bound for the diagonal ZOH generating-function kernel (one channel) vs :func:`diag_kernel_bound`'s oracle.

    ``A_bar``, ``B_bar``: relative ``e_A = g_4 + u|dt l|``, ``g_8``; ``C_t = -C expm1(L dt l)``: relative
    ``g_4 + u L |dt l|``; ``w_j`` from an exactly reduced angle: absolute ``g_3 pi/4 + 2u``.  Cauchy term
    ``v/(w - a)``: relative ``g^c_{n+4} + (|dw| + e_A |a|)/|w - a|``; times ``|w| = 1``.  Then
    ``|dK_k| <= (1/L) sum_j |dK^_j| + 5 log2(L) u ||K^||_2/sqrt(L)``, plus the direct-powers oracle's share
    (:func:`diag_kernel_bound` with ``oracle="mpmath"``, i.e. one side).
    """
    lam = np.asarray(lam, dtype=np.complex128)
    Ab, Bb = zoh_diag_vanloan(lam, B, dt)
    u = unit_roundoff(np.float64)
    n = lam.shape[0]
    eA = gamma(4, np.float64) + u * np.abs(dt * lam)
    Ct = -C * np.expm1(L * dt * lam)
    v = Ct * Bb
    ev = np.abs(v) * (gamma(12, np.float64) + u * L * np.abs(dt * lam))
    j = np.arange(L)
    w = np.exp(2j * np.pi * j / L)
    dw = gamma(3, np.float64) * np.pi / 4 + 2 * u
    den = np.abs(w[:, None] - Ab[None, :])
    rel = gamma(n + 4, np.float64, complex_ops=True) + (dw + eA[None, :] * np.abs(Ab)[None, :]) / den
    dKhat = np.sum((np.abs(v)[None, :] * rel + ev[None, :]) / den, axis=1)
    Khat_abs = np.abs(np.sum(v[None, :] / den, axis=1))
    vals = np.full(L, float(np.sum(dKhat)) / max(L, 1)
                   + 5 * math.log2(max(L, 2)) * u * float(np.linalg.norm(Khat_abs)) / math.sqrt(max(L, 1)))
    own = diag_kernel_bound(lam, B, C, dt, L, "zoh", oracle="mpmath", discretized=(Ab, Bb))
    return Bound(vals + own.values, "diagonal ZOH generating function (oracles.structured.zoh_gf_bound) + direct-powers oracle share")


def diag_kernel_bound(lam, B, C, dt, L: int, method: str, *, oracle: str = "float64", factor: float = 1.0,
                      discretized=None) -> Bound:
    r"""Componentwise bound for ``K_k = sum_n C_n B_bar_n A_bar_n^k`` (diagonal, one channel), either side.

    Per term: ``A_bar`` carries relative error ``e_A = g_4 + u |dt l|`` (``exp`` plus the rounding of its
    argument ``dt l``; for bilinear ``g_6``), ``B_bar`` ``g_8``, the power ``A_bar^k`` by ``k`` products
    ``k (g^c_1 + e_A)``, the sum over ``n`` ``g^c_{n+1}``.  Per-term depths are folded into the magnitude
    (first-order linearity of ``gamma``): ``bound_k = sum_n |C B_bar| |A_bar|^k (g^c_{n+9} + k (g^c_1 + e_A))``.
    The oracle (Van Loan + direct powers) has the same structure: ``oracle="float64"`` doubles it,
    ``"mpmath"`` adds nothing.  ``factor`` multiplies for a ``2 Re`` output (exact doubling).
    ``discretized``: the oracle's own ``(A_bar, B_bar)`` if already computed (saves a Van Loan call).
    """
    lam = np.asarray(lam, dtype=np.complex128)
    if method == "zoh":
        Ab, Bb = zoh_diag_vanloan(lam, B, dt) if discretized is None else discretized
        eA = gamma(4, np.float64) + unit_roundoff(np.float64) * np.abs(dt * lam)
    else:
        Ab, Bb = bilinear_diag(lam, B, dt) if discretized is None else discretized
        eA = np.full(lam.shape, gamma(6, np.float64))
    n = lam.shape[0]
    k = np.arange(L)[:, None]
    mag = np.abs(C * Bb)[None, :] * np.abs(Ab)[None, :] ** k
    per = gamma(n + 9, np.float64, complex_ops=True) + k * (gamma(1, np.float64, complex_ops=True) + eA[None, :])
    vals = np.sum(mag * per, axis=1) * factor
    if oracle == "float64":
        vals = 2 * vals
    return Bound(vals + 1e-300, f"diagonal Vandermonde: sum_n |C B_bar||A_bar|^k (g^c_(n+9) + k(g^c_1 + e_A)) x {factor}"
                 + (" x 2 (float64 oracle share)" if oracle == "float64" else " (mpmath oracle)"))


def cauchy_bound(v, g, lam, dtype=np.complex128) -> Bound:
    r"""Two implementations of ``sum_n v_n/(g_j - l_n)`` (any summation order): ``2 g^c_{n+2} sum |v|/|g - l|``."""
    n = np.shape(v)[-1]
    mag = np.sum(np.abs(v)[..., None, :] / np.abs(np.asarray(g)[..., :, None] - np.asarray(lam)[..., None, :]), axis=-1)
    return Bound(2 * gamma(n + 2, dtype, complex_ops=True) * mag,
                 f"Cauchy: 2 x gamma^c_(n+2)({np.dtype(dtype).name}) x sum|v|/|g - l| (two summation orders)")


def vandermonde_bound(v, z, L: int, dtype=np.complex128) -> Bound:
    r"""Two implementations of ``sum_n v_n z_n^k`` (repeated products, any sum order):
    ``2 g^c_{n+k+1} sum_n |v||z|^k`` (``k`` products + ``n`` sums)."""
    v = np.abs(np.asarray(v))
    z = np.abs(np.asarray(z))
    n = v.shape[-1]
    k = np.arange(L)
    mag = np.einsum("hn,hnk->hk", v, z[..., None] ** k)
    depth = n + k + 1
    u4 = 4 * unit_roundoff(dtype)
    g = depth * u4 / (1 - depth * u4)
    return Bound(2 * g[None, :] * mag, f"Vandermonde: 2 x gamma^c_(n+k+1)({np.dtype(dtype).name}) x sum|v||z|^k")


def diag_scan_bound(a, b, s0, dtype=np.complex128) -> Bound:
    r"""Two evaluations of ``s_t = a_t s_{t-1} + b_t``: ``2 g^c_{2(t+1)} S_t`` with ``S`` the recurrence on ``|a|, |b|, |s0|``."""
    a = np.abs(np.asarray(a))
    b = np.abs(np.asarray(b))
    S = np.zeros(b.shape)
    s = np.abs(np.asarray(s0)) if s0 is not None else np.zeros((b.shape[0], b.shape[2]))
    for t in range(b.shape[1]):
        s = a[t] * s + b[:, t]
        S[:, t] = s
    depth = 2 * (np.arange(b.shape[1]) + 1)
    u4 = 4 * unit_roundoff(dtype)
    g = depth * u4 / (1 - depth * u4)
    return Bound(2 * g[None, :, None] * S, f"diagonal scan: 2 x gamma^c_(2(t+1))({np.dtype(dtype).name}) x recurrence on |a|,|b|")


# ---------------------------------------------------------------- dense operators (S5, LRU, EMA)

def diag_ssm_dense(lam_bar, B_bar, C, D, u, *, factor: float = 1.0, absolute: bool = False) -> np.ndarray:
    r"""``y_t = factor Re sum_{s<=t} C diag(lam_bar^{t-s}) B_bar u_s + D u_t`` by the dense Toeplitz operator.

    ``lam_bar (p)``, ``B_bar (p h)``, ``C (h p)``, ``D (h)`` or None, ``u (b l h)``; powers in closed form
    ``lam^j = exp(j log lam)``.  ``absolute=True`` runs the same computation on absolute values
    (no real part; the magnitude for a bound).
    """
    lam_bar = np.asarray(lam_bar, dtype=np.complex128)
    L = u.shape[1]
    j = np.arange(L)
    if absolute:
        powj = np.abs(lam_bar)[None, :] ** j[:, None]
        T = np.einsum("hp,jp,pm->jhm", np.abs(C), powj, np.abs(B_bar))
    else:
        # lam^j = exp(j log lam)
        powj = np.exp(j[:, None] * np.log(lam_bar)[None, :]) if lam_bar.size else np.zeros((L, 0), complex)
        T = np.einsum("hp,jp,pm->jhm", C, powj, B_bar)
    y = np.zeros(u.shape[:2] + (T.shape[1],), dtype=np.complex128)
    uu = np.abs(u) if absolute else u
    for t in range(L):
        y[:, t] = np.einsum("shm,bsm->bh", T[t::-1][: t + 1], uu[:, : t + 1])
    y = factor * (np.abs(y) if absolute else y.real)
    if D is not None:
        y = y + (np.abs(D) * np.abs(u) if absolute else D * u)
    return y.real


def ema_dense(x, alpha, delta, beta, eta, *, absolute: bool = False) -> np.ndarray:
    r"""MEGA EMA by the dense operator: ``y_{t,j} = sum_{s<=t} sum_i eta alpha beta (1 - alpha delta)^{t-s} x_{s,j}``.

    Powers by Python ``float.__pow__`` (closed form).  ``absolute=True``: the same on absolute values.
    """
    b, L, d = x.shape
    e = alpha.shape[1]
    T = np.zeros((L, d))
    for jd in range(d):
        for i in range(e):
            q = 1.0 - float(alpha[jd, i]) * float(delta[jd, i])
            w = float(eta[jd, i]) * float(alpha[jd, i]) * float(beta[jd, i])
            for k in range(L):
                T[k, jd] += (abs(w) if absolute else w) * q ** k
    xx = np.abs(x) if absolute else x
    y = np.zeros_like(x, dtype=np.float64)
    for t in range(L):
        y[:, t] = np.sum(T[t::-1][: t + 1][None] * xx[:, : t + 1], axis=1)
    return y


def diag_ssm_bound(lam_bar, B_bar, C, D, u, *, factor: float = 1.0, extra_rel_per_step: float = 0.0) -> Bound:
    r"""Bound between a recurrence/scan evaluation and :func:`diag_ssm_dense` (both sides, complex ops).

    Reference: ``2`` roundings per step over ``L`` steps, ``h + 1`` for ``B_bar u``, ``p + 1`` for the readout,
    1 for ``D u``.  Oracle: ``lam^j = exp(j log lam)`` (relative ``u (2 + j |log lam|)``), ``p + 1`` for the
    Toeplitz taps, ``L + h`` for the convolution sum.  A relative error ``e`` per step in ``lam_bar``
    (the discretization / parameterization mismatch between the two sides) grows to ``j e`` in
    ``lam^j``: pass ``extra_rel_per_step = e/u``.  Total depth
    ``D = 3L + 2(h + p) + 8 + L (max|log lam| + extra_rel_per_step)``, magnitude = the dense operator on
    absolute values (:func:`diag_ssm_dense` with ``absolute=True``); ``gamma^c_D``.
    """
    lam_bar = np.asarray(lam_bar)
    L = u.shape[1]
    p = lam_bar.shape[0]
    h = u.shape[2]
    logmax = float(np.max(np.abs(np.log(lam_bar)))) if p else 0.0
    depth = 3 * L + 2 * (h + p) + 8 + L * (logmax + extra_rel_per_step)
    mag = diag_ssm_dense(lam_bar, B_bar, C, D, u, factor=factor, absolute=True)
    return Bound(gamma(depth, np.float64, complex_ops=True) * mag + 1e-300,
                 f"diagonal SSM vs dense operator: gamma^c_{depth:.0f} x dense operator on |inputs|")


def ema_bound(x, alpha, delta, beta, eta, *, fft: bool = False) -> Bound:
    r"""Bound between a MEGA-EMA evaluation (recurrence or closed-form kernel) and :func:`ema_dense`.

    Per step the recurrence rounds ``beta x``, ``alpha u``, ``1 - alpha delta`` (two), the product and the
    sum: 6; the projection sums ``e`` terms.  ``q = 1 - alpha delta`` carries relative error
    ``u (1 + alpha delta / q)`` (twice: both sides form it), so ``q^k`` carries ``k`` times that; the kernel
    route's ``exp(k log1p(-alpha delta))`` carries ``u (k |log q| + 4)``.  Depth
    ``D = 6L + e + 10 + L (2 + 2 max(alpha delta/q) + max|log q|)``, both sides: ``2 gamma_D`` times the
    dense operator on absolute values.  ``fft=True`` adds :func:`oracles.tolerance.fft_convolution_bound`
    for the kernel ``K`` and ``x`` per feature.
    """
    from oracles.tolerance import fft_convolution_bound

    L = x.shape[1]
    e = alpha.shape[1]
    q = 1.0 - alpha * delta
    depth = 6 * L + e + 10 + L * (2 + 2 * float(np.max(alpha * delta / q)) + float(np.max(np.abs(np.log(q)))))
    mag = ema_dense(x, alpha, delta, beta, eta, absolute=True)
    vals = 2 * gamma(depth, np.float64) * mag
    src = f"EMA vs dense operator: 2 gamma_{depth:.0f} x dense operator on |inputs|"
    if fft and L:
        k = np.arange(L)
        K = np.sum((eta * alpha * beta)[None] * q[None] ** k[:, None, None], axis=-1)  # (l d)
        n_fft = 1 << max(1, int(2 * L - 1).bit_length())
        fb = fft_convolution_bound(K.T[None], np.moveaxis(x, 1, 2), n_fft, np.float64, axis=-1)  # (b d 1)
        vals = vals + np.moveaxis(np.broadcast_to(fb.values, (x.shape[0], x.shape[2], 1)), 1, 2)
        src += " + " + fb.source
    return Bound(vals + 1e-300, src)


def dss_softmax_mpmath(lam, w, dt, L: int, dps: int = 40) -> np.ndarray:
    """DSS-softmax kernel ``Re sum_n w_n/l_n e^{k dt l_n} / sum_{r<L} e^{r dt l_n}`` at ``dps`` digits (one channel)."""
    import mpmath as mp

    with mp.workdps(dps):
        d = mp.mpf(float(dt))
        out = [mp.mpf(0)] * L
        for ln, wn in zip(lam, w):
            l_ = mp.mpc(complex(ln))
            S = mp.fsum(mp.exp(r * d * l_) for r in range(L))
            for k in range(L):
                out[k] += mp.re(mp.mpc(complex(wn)) / l_ * mp.exp(k * d * l_) / S)
        return np.array([float(v) for v in out])


def dss_softmax_bound(lam, w, dt, L: int) -> Bound:
    r"""DSS-softmax (max-subtracted, one channel) vs mpmath: per term relative error
    ``g^c_{L+6} sum_r |e^{p_r}|/|S| + u (2 k |dt l| + 6)`` (normalizer sum of ``L`` terms, the exponent
    ``k dt l`` and its max-shift, the division), times ``|w/l| |e^{p_k}/S|``, summed over ``n`` with ``g^c_n``."""
    lam = np.asarray(lam, dtype=np.complex128)
    k = np.arange(L)[:, None]
    p = k * dt * lam[None, :]
    p = p - np.max(p.real, axis=0, keepdims=True)
    E = np.exp(p)
    S = np.sum(E, axis=0, keepdims=True)
    u = unit_roundoff(np.float64)
    rel = gamma(L + 6, np.float64, complex_ops=True) * np.sum(np.abs(E), axis=0, keepdims=True) / np.abs(S) \
        + u * (2 * k * np.abs(dt * lam)[None, :] + 6) + gamma(lam.shape[0] + 2, np.float64, complex_ops=True)
    vals = np.sum(np.abs(w / lam)[None, :] * np.abs(E / S) * rel, axis=1)
    return Bound(vals + 1e-300, "DSS softmax: normalizer, exponent and sum roundings (oracles.structured.dss_softmax_bound)")


def cauchy_mpmath(v, g, lam, dps: int = 40) -> np.ndarray:
    """``sum_n v_n/(g_j - l_n)`` at ``dps`` digits for ``v, lam (h n)``, ``g (h l)``; complex128 ``(h l)``."""
    import mpmath as mp

    v = np.asarray(v)
    g = np.asarray(g)
    lam = np.asarray(lam)
    out = np.zeros(g.shape, dtype=np.complex128)
    with mp.workdps(dps):
        for i in range(g.shape[0]):
            vv = [mp.mpc(complex(a)) for a in v[i]]
            ll = [mp.mpc(complex(a)) for a in lam[i]]
            for j in range(g.shape[1]):
                gj = mp.mpc(complex(g[i, j]))
                out[i, j] = complex(mp.fsum(a / (gj - b) for a, b in zip(vv, ll)))
    return out
