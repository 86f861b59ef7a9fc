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
