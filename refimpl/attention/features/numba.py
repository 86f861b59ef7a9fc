r"""Numba kernels for the feature maps of :mod:`refimpl.attention.features.reference` (no stabilizer).

The ``"numba"`` backend of :func:`refimpl.attention.features.feature_map`.  Each public function validates exactly
like its NumPy reference (the same helpers, the same errors) and returns the same result up to rounding
(property-tested against the reference and the mpmath oracle); the output dtype is the reference's.  The kernels
work on the rows of ``x (... n)`` flattened to ``(rows, n)``, parallel over rows; an empty input gives an empty
output, as in the reference.

* :func:`elu_plus_one`, :func:`dpfp` -- elementwise / per row.
* :func:`trig_features`, :func:`positive_features`, :func:`hyperbolic_features` -- Performer's random features
  ``phi(x)`` for a projection ``W (f n)``, without a stabilizer (the stabilized forms are NumPy only).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from refimpl._numba import warmup
from refimpl.attention.features import reference as _features

__all__ = ["elu_plus_one", "dpfp", "trig_features", "positive_features", "hyperbolic_features"]


@numba.njit(cache=True, parallel=True)
def _elu1(x):
    out = np.empty_like(x)
    for r in prange(x.shape[0]):
        for c in range(x.shape[1]):
            a = x[r, c]
            out[r, c] = a + 1.0 if a >= 0 else np.exp(a)
    return out


@numba.njit(cache=True, parallel=True)
def _dpfp(x, nu):
    rows, n = x.shape
    out = np.empty((rows, 2 * n * nu), dtype=x.dtype)
    for r in prange(rows):
        rr = np.empty(2 * n, dtype=x.dtype)
        for c in range(n):
            rr[c] = max(x[r, c], 0.0)
            rr[n + c] = max(-x[r, c], 0.0)
        for j in range(1, nu + 1):
            for i in range(2 * n):
                # phi_{(j-1)2n + i} = r_i r_{(i-j) mod 2n}
                out[r, (j - 1) * 2 * n + i] = rr[i] * rr[(i - j) % (2 * n)]
    return out


@numba.njit(cache=True, parallel=True)
def _random_feats(x, W, kind):
    # kind 0: trig, 1: positive, 2: hyperbolic
    rows, n = x.shape
    f = W.shape[0]
    width = f if kind == 1 else 2 * f
    out = np.empty((rows, width), dtype=x.dtype)
    for r in prange(rows):
        sq = 0.0
        for c in range(n):
            sq += x[r, c] * x[r, c]
        for i in range(f):
            wx = 0.0
            for c in range(n):
                wx += W[i, c] * x[r, c]
            if kind == 0:
                hh = np.exp(0.5 * sq) / np.sqrt(f)
                out[r, i] = hh * np.sin(wx)
                out[r, f + i] = hh * np.cos(wx)
            elif kind == 1:
                out[r, i] = np.exp(wx - 0.5 * sq) / np.sqrt(f)
            else:
                out[r, i] = np.exp(wx - 0.5 * sq) / np.sqrt(2.0 * f)
                out[r, f + i] = np.exp(-wx - 0.5 * sq) / np.sqrt(2.0 * f)
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    """``x (... n)`` as contiguous rows ``(prod(...), n)``; empty inputs (any axis 0) stay empty."""
    return np.ascontiguousarray(x).reshape(math.prod(x.shape[:-1]), x.shape[-1])


def elu_plus_one(x):
    """Numba version of :func:`refimpl.attention.features.reference.elu_plus_one`."""
    x = _features.check_x(x)
    return _elu1(_rows(x)).reshape(x.shape)


def dpfp(x, nu: int = 1):
    """Numba version of :func:`refimpl.attention.features.reference.dpfp`."""
    x, nu = _features.check_dpfp(x, nu)
    n = x.shape[-1]
    return _dpfp(_rows(x), nu).reshape(x.shape[:-1] + (2 * n * nu,))


def _rf(x, W, kind):
    x, W = _features.check_W(x, W)
    out = _random_feats(_rows(x), np.ascontiguousarray(W), kind)
    return out.reshape(x.shape[:-1] + (out.shape[1],))


def trig_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.trig_features`."""
    return _rf(x, W, 0)


def positive_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.positive_features` (no stabilizer)."""
    return _rf(x, W, 1)


def hyperbolic_features(x, W):
    """Numba version of :func:`refimpl.attention.features.reference.hyperbolic_features` (no stabilizer)."""
    return _rf(x, W, 2)


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        x = np.zeros((2, 2), dtype=dt)
        elu_plus_one(x)
        dpfp(x, 1)
        W = np.zeros((2, 2), dtype=dt)
        trig_features(x, W)
        positive_features(x, W)
        hyperbolic_features(x, W)
