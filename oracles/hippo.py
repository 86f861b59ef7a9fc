r"""Independent HiPPO oracle: optimal projection coefficients by Gauss quadrature.

The coefficient of the history ``f_{<=t}`` on the ``n``-th orthonormal function of
the measure ``mu_t`` is an integral, computed here directly (no ODE, no
``refimpl`` code) with high-order Gauss rules and ``scipy.special`` polynomials:

* legs: ``c_n(t) = (1/t) int_0^t f(x) sqrt(2n+1) P_n(2x/t - 1) dx`` -- Gauss--Legendre on [0, t].
* legt: ``c_n(t) = (1/theta) int_{t-theta}^t f(x) sqrt(2n+1) P_n(2(x-t)/theta + 1) dx`` -- Gauss--Legendre.
* lmu:  ``m_n(t) = ((2n+1)/theta) int_{t-theta}^t f(x) P_n(2(t-x)/theta - 1) dx`` -- Gauss--Legendre.
* lagt: ``c_n(t) = int_0^inf f(t - s) L_n(s) e^{-s} ds`` -- Gauss--Laguerre (weight ``e^{-s}`` built in);
  ``f`` must be smooth on all of ``(-inf, t]``.  ``lagt_finite`` treats ``f = 0`` before 0:
  ``int_0^t f(x) L_n(t - x) e^{-(t-x)} dx`` by Gauss--Legendre on [0, t].
* fout: ``c_n(t) = (1/theta) int_{t-theta}^t f(x) p_n(u) dx`` with the Fourier basis
  ``[1, sqrt2 cos 2 pi k u, sqrt2 sin 2 pi k u]``, ``u = (x - t + theta)/theta`` -- Gauss--Legendre.

An ``n_quad``-point Gauss--Legendre rule is exact for polynomial integrands of degree
``<= 2 n_quad - 1``; for smooth ``f`` the error decays geometrically in ``n_quad``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.special

__all__ = ["coefficients", "gauss_legendre"]


def gauss_legendre(a: float, b: float, n_quad: int):
    """Nodes and weights of the ``n_quad``-point Gauss--Legendre rule on ``[a, b]``."""
    z, w = scipy.special.roots_legendre(n_quad)
    x = 0.5 * (b - a) * z + 0.5 * (a + b)
    return x, 0.5 * (b - a) * w


def coefficients(f: Callable, measure: str, N: int, t: float, *, theta: float = 1.0, n_quad: int = 200) -> np.ndarray:
    """The optimal HiPPO coefficients ``c_0..c_{N-1}`` of ``f_{<=t}`` (float64, shape ``(N,)``).

    ``f`` is a vectorized callable.  ``measure`` in legs, legt, lmu, lagt, lagt_finite, fout.
    """
    n = np.arange(N)
    if measure == "legs":
        x, w = gauss_legendre(0.0, t, n_quad)
        P = np.sqrt(2 * n + 1.0)[None, :] * scipy.special.eval_legendre(n[None, :], (2 * x / t - 1)[:, None])
        return (w * f(x)) @ P / t
    if measure == "legt":
        x, w = gauss_legendre(t - theta, t, n_quad)
        P = np.sqrt(2 * n + 1.0)[None, :] * scipy.special.eval_legendre(n[None, :], (2 * (x - t) / theta + 1)[:, None])
        return (w * f(x)) @ P / theta
    if measure == "lmu":
        x, w = gauss_legendre(t - theta, t, n_quad)
        P = scipy.special.eval_legendre(n[None, :], (2 * (t - x) / theta - 1)[:, None])
        return (2 * n + 1.0) * ((w * f(x)) @ P) / theta
    if measure == "lagt":
        s, w = scipy.special.roots_laguerre(n_quad)
        Lg = scipy.special.eval_laguerre(n[None, :], s[:, None])
        return (w * f(t - s)) @ Lg
    if measure == "lagt_finite":
        x, w = gauss_legendre(0.0, t, n_quad)
        Lg = scipy.special.eval_laguerre(n[None, :], (t - x)[:, None])
        return (w * np.exp(-(t - x)) * f(x)) @ Lg
    if measure == "fout":
        x, w = gauss_legendre(t - theta, t, n_quad)
        u = (x - t + theta) / theta
        G = np.zeros((x.shape[0], N))
        G[:, 0] = 1.0
        for idx in range(1, N):
            k = (idx + 1) // 2
            G[:, idx] = math.sqrt(2.0) * (np.cos if idx % 2 == 1 else np.sin)(2 * math.pi * k * u)
        return (w * f(x)) @ G / theta
    raise ValueError(f"measure: expected one of legs, legt, lmu, lagt, lagt_finite, fout, got {measure!r}")


# ---------------------------------------------------------------- bounds

def _basis_magnitude(measure: str, N: int, x: np.ndarray, t: float, theta: float) -> np.ndarray:
    r"""``|g_n|_abs`` at ``x``: the basis evaluated on absolute values (its rounding magnitude), ``(m N)``.

    Legendre: ``|P_n| <= 1`` on [-1, 1], so ``sqrt(2n+1)`` (legs/legt) or 1 (lmu); Laguerre
    ``L_n(s) = sum_k (-1)^k C(n,k) s^k/k!`` has absolute-value sum ``L_n(-s)``; Fourier: ``sqrt 2``.
    """
    n = np.arange(N)
    x = np.asarray(x, dtype=np.float64)
    if measure in ("legs", "legt"):
        return np.broadcast_to(np.sqrt(2 * n + 1.0), (x.shape[0], N))
    if measure == "lmu":
        return np.ones((x.shape[0], N))
    if measure in ("lagt", "lagt_finite"):
        return scipy.special.eval_laguerre(n[None, :], -np.abs(t - x)[:, None])
    return np.full((x.shape[0], N), math.sqrt(2.0))


def _basis_depth(measure: str, N: int, x: np.ndarray, t: float, theta: float) -> np.ndarray:
    r"""Roundings in evaluating ``g_n(x)``, ``(m N)``: the three-term recurrence (4 per degree) plus the
    rounding of the argument ``z`` (absolute ``~ 2 u |z|_abs``) times the basis' derivative bound
    relative to its magnitude (Markov: ``|P_n'| <= n^2``; Laguerre ``|L_n'|_abs <= n L_n(-s)``;
    Fourier ``2 pi k``)."""
    n = np.arange(N)[None, :]
    x = np.abs(np.asarray(x, dtype=np.float64))[:, None]
    if measure == "legs":
        zmag = 2 * x / abs(t) + 1
        return 4.0 * n + 6 + 2 * zmag * n ** 2
    if measure in ("legt", "lmu"):
        zmag = 2 * (x + abs(t)) / theta + 1
        return 4.0 * n + 6 + 2 * zmag * n ** 2
    if measure in ("lagt", "lagt_finite"):
        return 4.0 * n + 6 + 2 * n * (x + abs(t))
    # fout: argument 2 pi k u with u = (x - t + theta)/theta
    return 6 + 2 * math.pi * ((n + 1) // 2) * (2 * (x + abs(t) + theta) / theta + 1)


def coefficients_magnitude(f_abs: Callable, measure: str, N: int, t: float, *, theta: float = 1.0,
                           n_quad: int = 200, f_depth: float = 0.0) -> np.ndarray:
    r"""Rounding bound of :func:`coefficients` (float64): the same quadrature on absolute values, each term
    weighted by its rounding depth ``gamma_{n_quad + d_g(x_q) + f_depth + 4}`` (sum, basis, ``f``, node and product)."""
    from oracles.tolerance import gamma

    u = np.finfo(np.float64).eps / 2
    n = np.arange(N)
    if measure == "legs":
        x, w = gauss_legendre(0.0, t, n_quad)
        sc = 1.0 / t
    elif measure in ("legt", "lmu", "fout"):
        x, w = gauss_legendre(t - theta, t, n_quad)
        sc = 1.0 / theta
    elif measure == "lagt":
        s, w = scipy.special.roots_laguerre(n_quad)
        x, sc = t - s, 1.0
    else:
        x, w = gauss_legendre(0.0, t, n_quad)
        w = w * np.exp(-(t - x))
        sc = 1.0
    depth = n_quad + _basis_depth(measure, N, x, t, theta) + f_depth + 4
    gam = depth * u / (1 - depth * u)
    mag = (w * f_abs(x)) @ (gam * _basis_magnitude(measure, N, x, t, theta)) * sc
    _ = gamma  # the same gamma_n as oracles.tolerance.gamma, vectorized over the depth matrix
    return mag * (2 * n + 1.0) if measure == "lmu" else mag


def reconstruction_bound(c, c_err, measure: str, x, t: float, *, theta: float = 1.0, f_mag=None,
                         f_depth: float = 0.0):
    r"""Bound on ``|sum_n c_n g_n(x) - f(x)|`` when ``c`` are the quadrature coefficients of a signal in the span.

    * coefficient rounding ``c_err`` (from :func:`coefficients_magnitude`; the Gauss rule is exact in exact
      arithmetic for a polynomial of degree ``d`` when ``d + N - 1 <= 2 n_quad - 1``), propagated through
      ``|g_n|_abs(x)``;
    * the reconstruction sum: ``gamma_{N + d_g(x)} sum_n |c_n| |g_n|_abs(x)``;
    * the evaluation of ``f(x)`` itself: ``gamma_{f_depth} f_mag(x)``.
    """
    from oracles.tolerance import Bound, gamma

    u = np.finfo(np.float64).eps / 2
    N = len(c)
    x = np.asarray(x, dtype=np.float64)
    G = _basis_magnitude(measure, N, x, t, theta)
    depth = N + _basis_depth(measure, N, x, t, theta)
    g_rec = depth * u / (1 - depth * u)
    vals = G @ np.asarray(c_err) + np.sum(g_rec * G * np.abs(c)[None, :], axis=1)
    if f_mag is not None:
        vals = vals + gamma(max(f_depth, 1), np.float64) * f_mag
    return Bound(vals, f"HiPPO reconstruction from quadrature coefficients ({measure}, N={N}): coefficient + sum + f rounding")


def richardson_bound(c_h, c_h2, order: int, *, rounding=0.0):
    r"""Discretization-error bound for ``c_h`` (step ``h``) from ``c_{h/2}``: the leading term of
    ``c_h - c = K h^p + O(h^{p+1})`` is ``(c_h - c_{h/2}) 2^p/(2^p - 1)`` (Richardson); twice it
    (:data:`oracles.tolerance.RICHARDSON_SAFETY`) bounds the error while the remainder is at most a fraction
    ``(2^p - 1)/(2^p + 3)`` of the leading term (the asymptotic regime, derived there and checked separately by
    the measured order).  ``rounding`` adds a rounding bound."""
    from oracles.tolerance import RICHARDSON_SAFETY, Bound

    est = np.abs(np.asarray(c_h) - np.asarray(c_h2)) * (2 ** order) / (2 ** order - 1)
    return Bound(RICHARDSON_SAFETY * est + rounding,
                 f"{RICHARDSON_SAFETY:g} x Richardson estimate |c_h - c_(h/2)| 2^p/(2^p-1), p={order}")


# ---------------------------------------------------------------- the discrete online projection (verify op)

def transition_mp(measure: str, N: int, theta: float = 1.0):
    r"""``(s A, s B)`` of ``c'(t) = s(t) A c(t) + s(t) B f(t)`` (S4's sign: ``A`` stable) as mpmath matrices at the
    current precision, from the closed forms (never from ``refimpl``); ``s = 1/theta`` for legt/lmu/fout, 1 for
    lagt, and for legs the caller applies ``s(t) = 1/t`` (returned unscaled).

    * legs: ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n > k), ``-(n+1)`` (n = k), 0 (n < k); ``B_n = sqrt(2n+1)``.
    * legt: ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n >= k), ``-(-1)^{n-k} sqrt(2n+1) sqrt(2k+1)`` (n < k);
      ``B_n = sqrt(2n+1)``.
    * lmu (Voelker's coordinates): ``A_nk = -(2n+1)`` (n < k), ``(-1)^{n-k+1} (2n+1)`` (n >= k); ``B_n = (-1)^n (2n+1)``.
    * lagt: ``A_nk = -1`` (n >= k); ``B_n = 1`` (``c_n = int f(x) L_n(t - x) e^{-(t-x)} dx`` differentiated:
      ``L_n(0) = 1``, ``L_n' = -sum_{k<n} L_k``; S4's code keeps an older ``-1/2`` diagonal).
    * fout (basis ``[1, sqrt2 cos 2 pi k u, sqrt2 sin 2 pi k u, ...]``): differentiating
      ``c_n = (1/theta) int_{t-theta}^t f g_n(u) dx`` and closing ``f(t - theta)`` by the reconstruction gives
      ``A = -e e^T + Omega``, ``B = e`` with ``e = g(0) = g(1) = [1, sqrt2, 0, sqrt2, 0, ...]`` and
      ``Omega_{cos_k, sin_k} = 2 pi k = -Omega_{sin_k, cos_k}``.
    """
    import mpmath as mp

    A = mp.matrix(N, N)
    B = mp.matrix(N, 1)
    if measure in ("legs", "legt"):
        for n in range(N):
            B[n] = mp.sqrt(2 * n + 1)
            for k in range(N):
                r = mp.sqrt(2 * n + 1) * mp.sqrt(2 * k + 1)
                if measure == "legs":
                    A[n, k] = -r if n > k else (-(n + 1) if n == k else 0)
                else:
                    A[n, k] = -r if n >= k else -((-1) ** (n - k)) * r
    elif measure == "lmu":
        for n in range(N):
            B[n] = (-1) ** n * (2 * n + 1)
            for k in range(N):
                A[n, k] = -(2 * n + 1) if n < k else (-1) ** (n - k + 1) * (2 * n + 1)
    elif measure == "lagt":
        for n in range(N):
            B[n] = 1
            for k in range(n + 1):
                A[n, k] = -1
    elif measure == "fout":
        e = [mp.mpf(1)] + [mp.sqrt(2) if i % 2 == 1 else mp.mpf(0) for i in range(1, N)]
        for n in range(N):
            B[n] = e[n]
            for k in range(N):
                A[n, k] = -e[n] * e[k]
        for i in range(1, N, 2):  # cos_k at 2k - 1, sin_k at 2k
            if i + 1 < N:
                w = 2 * mp.pi * ((i + 1) // 2)
                A[i, i + 1] += w
                A[i + 1, i] -= w
    else:
        raise ValueError(f"measure: expected one of legs, legt, lmu, lagt, fout, got {measure!r}")
    if measure != "legs":
        s = 1 if measure == "lagt" else 1 / mp.mpf(float(theta))
        A, B = s * A, s * B
    return A, B


def online_mpmath(f, measure: str, N: int, dt: float, *, alpha: float, theta: float = 1.0, step: str = "trapezoid",
                  c0=None, dps: int = 40) -> np.ndarray:
    r"""The discrete online HiPPO projection of the samples ``f (l,)``, evaluated in mpmath: ``c (l n)`` float64.

    The time-varying ODE ``c' = M(t) c + N(t) f`` (``M = s A``, ``N = s B`` of :func:`transition_mp`; LegS:
    ``s = 1/t`` on the grid ``t_k = (k + 1) dt``) stepped by the generalized bilinear transform with weight
    ``alpha`` (forward Euler 0, bilinear 1/2, backward Euler 1):

    * ``step="trapezoid"``: both ends of the step weighted, ``c[0] = c0`` (default zero; LegS ``f_0 e_0``, the
      limit of the exact coefficients as ``t -> 0``) and
      ``(I - alpha dt M_{k+1}) c_{k+1} = (I + (1 - alpha) dt M_k) c_k + dt (alpha N_{k+1} f_{k+1} + (1 - alpha) N_k f_k)``;
    * ``step="held"``: the system frozen at the new sample, ``c_{-1} = c0`` (default zero) and
      ``(I - alpha dt M_k) c_k = (I + (1 - alpha) dt M_k) c_{k-1} + dt N_k f_k`` (the official S4 code's
      ``HiPPO_LegS``/``HiPPO_LegT``; for an LTI measure scipy's ``cont2discrete`` of ``(M, N)``).

    Every quantity is formed in mpmath from the float64 inputs (exact) at ``dps`` digits.
    """
    import mpmath as mp

    f = np.asarray(f, dtype=np.float64)
    L = f.shape[0]
    out = np.zeros((L, N))
    if L == 0:
        return out
    with mp.workdps(dps):
        A, B = transition_mp(measure, N, theta)
        h = mp.mpf(float(dt))
        a = mp.mpf(float(alpha))
        I = mp.eye(N)
        fm = [mp.mpf(float(v)) for v in f]

        def scale(k):  # dt s(t_k): LegS 1/(k+1) on t_k = (k+1) dt; else dt (M, N already scaled)
            return 1 / mp.mpf(k + 1) if measure == "legs" else h

        lti = measure != "legs"
        if lti:
            Mi_inv = mp.inverse(I - a * h * A)
            Ab = Mi_inv * (I + (1 - a) * h * A)
            Bb = Mi_inv * (h * B)
        if c0 is not None:
            c = mp.matrix([mp.mpf(float(v)) for v in np.asarray(c0, dtype=np.float64)])
        else:
            c = mp.matrix(N, 1)
            if step == "trapezoid" and measure == "legs":
                c[0] = fm[0]
        if step == "trapezoid":
            out[0] = [float(c[i]) for i in range(N)]
            for k in range(L - 1):
                if lti:
                    c = Ab * c + Bb * (a * fm[k + 1] + (1 - a) * fm[k])
                else:
                    s0, s1 = scale(k), scale(k + 1)
                    rhs = (I + (1 - a) * s0 * A) * c + B * (a * s1 * fm[k + 1] + (1 - a) * s0 * fm[k])
                    c = mp.lu_solve(I - a * s1 * A, rhs)
                out[k + 1] = [float(c[i]) for i in range(N)]
        else:
            for k in range(L):
                if lti:
                    c = Ab * c + Bb * fm[k]
                else:
                    s1 = scale(k)
                    c = mp.lu_solve(I - a * s1 * A, (I + (1 - a) * s1 * A) * c + s1 * B * fm[k])
                out[k] = [float(c[i]) for i in range(N)]
    return out


def online_bound(f, measure: str, N: int, dt: float, *, alpha: float, theta: float = 1.0, step: str = "trapezoid",
                 c_exact, c0=None, dtype=np.float64) -> np.ndarray:
    r"""Bound on ``|c_k - c_k^oracle|`` (every entry of row ``k``) for a candidate of :func:`online_mpmath` in ``dtype``.

    Each step solves (or applies a precomputed inverse of) ``M_i = I - alpha dt M`` against ``R = I + (1 - alpha)
    dt M`` and the input ``v = dt N`` (weighted samples ``phi_k``).  A backward stable evaluation (LU or a
    triangular solve, Higham Thm 9.4 and 8.5; or ``A_bar = M_i^{-1} R`` formed once and applied) perturbs
    ``M_i``, ``R`` and ``v`` by ``gamma_{3N+6}`` relative (forming them from rounded ``sqrt`` and ``1/t``
    included), so the new error of step ``k`` is at most
    ``delta_k = gamma_{3N+6} ||M_i^{-1}||_2 (||M_i||_F (||c_k|| + ||A_bar||_F ||c_{k-1}||) + ||R||_F ||c_{k-1}||
    + (1 + ||M_i||_F ||M_i^{-1}||_2) ||v|| phi_k)``, and it is carried by the exact propagator:
    ``E_k = sum_{j <= k} ||Phi(k, j)||_F delta_j`` with ``Phi(k, j) = A_bar_k ... A_bar_{j+1}``.  Norms are
    evaluated in float64 on the exact coefficients ``c_exact`` (a magnitude).  The mpmath oracle adds its final
    rounding (``gamma_1(float64) |c|``, added by the caller).
    """
    from oracles.tolerance import gamma

    f = np.abs(np.asarray(f, dtype=np.float64))
    L = f.shape[0]
    if L == 0:
        return np.zeros((0, N))
    import mpmath as mp

    with mp.workdps(20):
        A_mp, B_mp = transition_mp(measure, N, theta)
        A = np.array(A_mp.tolist(), dtype=np.float64)
        Bv = np.array(B_mp.tolist(), dtype=np.float64)[:, 0]
    g = gamma(3 * N + 6, dtype)
    I = np.eye(N)
    cn = np.linalg.norm(np.asarray(c_exact, dtype=np.float64), axis=1)
    c0n = 0.0 if c0 is None else float(np.linalg.norm(np.asarray(c0, dtype=np.float64)))
    nB = float(np.linalg.norm(Bv))
    sc = lambda k: (1.0 / (k + 1)) if measure == "legs" else float(dt)  # noqa: E731  dt s(t_k)
    steps = []  # (output row k, A_bar of the step into row k, delta_k)
    for k in range(0 if step == "held" else 1, L):
        s_new = sc(k)
        s_old = s_new if step == "held" else sc(k - 1)
        Mi = I - alpha * s_new * A
        R = I + (1 - alpha) * s_old * A
        Mi_inv = np.linalg.inv(Mi)
        Ab = Mi_inv @ R
        c_prev = (cn[k - 1] if k else c0n)
        vf = nB * (s_new * f[k] if step == "held" else alpha * s_new * f[k] + (1 - alpha) * s_old * f[k - 1])
        nMi, nMinv, nR, nAb = np.linalg.norm(Mi), np.linalg.norm(Mi_inv, 2), np.linalg.norm(R), np.linalg.norm(Ab)
        delta = g * nMinv * (nMi * (cn[k] + nAb * c_prev) + nR * c_prev + (1 + nMi * nMinv) * vf)
        steps.append((k, Ab, delta))
    E = np.zeros(L)
    # E_k = sum_{j<=k} ||Phi(k, j)||_F delta_j, Phi built left to right from each j
    for idx, (j, _, dj) in enumerate(steps):
        P = np.eye(N)
        E[j] += dj
        for (k, Ab, _) in steps[idx + 1:]:
            P = Ab @ P
            E[k] += np.linalg.norm(P) * dj
    return np.repeat(E[:, None], N, axis=1)
