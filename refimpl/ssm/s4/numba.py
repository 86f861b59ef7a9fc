r"""Numba Cauchy kernel for S4's generating function (split from the former ``structured_numba``).

* :func:`cauchy` -- ``k[c, j] = sum_n v[c, n] / (g[c, j] - lam[c, n])``, parallel over ``(c, j)``; the same
  arguments, validation and working dtype as the reference :func:`refimpl.ssm.s4.reference.cauchy`
  (``v, lam (d n)``, ``g (d l)``, exact shapes, floating and finite).  It matches the reference by property
  test for every size, including ``n = 0`` and ``l = 0``.
* :func:`kernel` -- the ``generating_function`` view of :func:`refimpl.ssm.s4.s4_kernel` with this Cauchy kernel
  (the Woodbury algebra, node handling and validation are the reference's).

Signatures: complex128 and complex64 (the working dtype of the caller; no casting beyond it).
"""
from __future__ import annotations

import numba
import numpy as np

from refimpl._numba import warmup
from refimpl.ssm.s4 import reference

__all__ = ["cauchy", "kernel"]


@numba.njit(cache=True, parallel=True)
def _cauchy(v, g, lam, out):
    H, N = v.shape
    Lg = g.shape[1]
    for idx in numba.prange(H * Lg):
        h = idx // Lg
        j = idx % Lg
        acc = out.dtype.type(0)
        gj = g[h, j]
        for n in range(N):
            # k_j += v_n / (g_j - lambda_n)
            acc += v[h, n] / (gj - lam[h, n])
        out[h, j] = acc


def cauchy(v, g, lam) -> np.ndarray:
    """``k[c, j] = sum_n v[c, n] / (g[c, j] - lam[c, n])``; ``v, lam (d n)``, ``g (d l)`` -> ``(d l)``."""
    v, g, lam = reference._cauchy_args(v, g, lam)
    out = np.empty(g.shape, dtype=v.dtype)
    _cauchy(np.ascontiguousarray(v), np.ascontiguousarray(g), np.ascontiguousarray(lam), out)
    return out


def kernel(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex", method: str = "bilinear") -> np.ndarray:
    """:func:`refimpl.ssm.s4.reference.kernel` with the Numba :func:`cauchy`; ``K (d l)``."""
    return reference._kernel(Lambda, P, Q, B, C, dt, L, output, method, cauchy)


@warmup
def _warm():
    for dt in (np.complex128, np.complex64):
        v = np.ones((1, 2), dtype=dt)
        cauchy(v, np.full((1, 3), 2j, dtype=dt), v * 0.5)
