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
    ``c_h - c = K h^p + O(h^{p+1})`` is ``(c_h - c_{h/2}) 2^p/(2^p - 1)`` (Richardson); twice it covers the
    ``O(h^{p+1})`` remainder while it is at most as large as the leading term (the asymptotic regime,
    checked separately by the measured order).  ``rounding`` adds a rounding bound."""
    from oracles.tolerance import Bound

    est = np.abs(np.asarray(c_h) - np.asarray(c_h2)) * (2 ** order) / (2 ** order - 1)
    return Bound(2 * est + rounding, f"2 x Richardson estimate |c_h - c_(h/2)| 2^p/(2^p-1), p={order}")
