r"""Numba Vandermonde kernel for the S4D kernel (split from the former ``structured_numba``).

* :func:`vandermonde` -- ``K[c, k] = sum_n v[c, n] z[c, n]^k``, powers by repeated multiplication (the
  reference :func:`refimpl.ssm.s4d.reference.vandermonde`, same arguments, validation and working dtype:
  ``v, z (d n)`` exact shapes, floating, finite), parallel over channels; per ``k`` the powers and the sum are
  vectorized over ``n`` (real and imaginary parts in separate arrays; the sum reassociated).  From ``L >= 128``
  a blocked form: powers as chains of repeated products, the sums as four real GEMMs.  A power ``z^k``
  whose magnitude falls below the smallest normal number ``tiny`` (2^-126 for complex64) is flushed to
  zero: subnormal arithmetic is ~100x slower (a decaying S4D kernel spends whole stretches of ``k`` there).
  For ``|z| <= 1`` the dropped powers are all below ``tiny / (1 - gamma) <= 2 tiny``, so ``K_k`` moves by at
  most ``2 tiny sum_n |v_n|`` (the floor the tests add to the Vandermonde bound; growing powers, ``|z| > 1``,
  never reach it).
* :func:`kernel` -- the S4D kernel (:func:`refimpl.ssm.s4d.s4d_kernel`, backend ``numba``): the reference's
  validation and discretization, then this Vandermonde product.

Signatures: complex128 and complex64 (the working dtype of the caller; no casting beyond it).
"""
from __future__ import annotations

import numba
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl.ssm.s4d import reference

__all__ = ["vandermonde", "kernel"]


# The Vandermonde sums may be reassociated (vectorized over n; the bound counts n sums in any order) and
# contracted to FMAs (fewer roundings); the powers stay repeated products z^{k+1} = z z^k, as in the reference.
_VBLOCK = 64  # powers per block of the blocked (GEMM) Vandermonde
_VFLAGS = {"nnan", "ninf", "nsz", "reassoc", "contract"}


@numba.njit(cache=True, fastmath=_VFLAGS)
def _vandermonde_row(v, z, out, tiny):
    # one channel: v, z (n), out (L). Real and imaginary parts in separate arrays, so the loops over n vectorize
    N = v.shape[0]
    L = out.shape[0]
    rdt = v.real.dtype
    vr, vi = np.empty(N, dtype=rdt), np.empty(N, dtype=rdt)
    zr, zi = np.empty(N, dtype=rdt), np.empty(N, dtype=rdt)
    pr, pi = np.ones(N, dtype=rdt), np.zeros(N, dtype=rdt)  # z^k, from k = 0
    for n in range(N):
        vr[n], vi[n] = v[n].real, v[n].imag
        zr[n], zi[n] = z[n].real, z[n].imag
    for k in range(L):
        # K_k = sum_n v_n z_n^k
        sr = rdt.type(0.0)
        si = rdt.type(0.0)
        for n in range(N):
            sr += vr[n] * pr[n] - vi[n] * pi[n]
            si += vr[n] * pi[n] + vi[n] * pr[n]
        out[k] = sr + 1j * si
        # z^{k+1} = z z^k; a power below the smallest normal number is flushed to zero (and stays zero):
        # arithmetic on subnormals is ~100x slower, and such a term changes K_k by < 2 tiny |v_n| (module doc)
        for n in range(N):
            t = pr[n] * zr[n] - pi[n] * zi[n]
            ti = pr[n] * zi[n] + pi[n] * zr[n]
            small = abs(t) + abs(ti) < tiny
            pr[n] = 0.0 if small else t
            pi[n] = 0.0 if small else ti


@numba.njit(cache=True)
def _vandermonde_blocked(v, z, out, tiny, B):
    # one channel, k = m B + j:  K_{mB+j} = sum_n (v_n z_n^{mB}) z_n^j = (W Z)_{mj} with
    # W_mn = v_n z_n^{mB} (W_m = W_{m-1} z^B) and Z_nj = z_n^j (Z_{:,j} = Z_{:,j-1} z): every power is a chain
    # of at most k repeated products (the reference's depth); the sums over n are four real GEMMs:
    # Re K = Wr Zr - Wi Zi, Im K = Wr Zi + Wi Zr.
    # The chains run in float64 (for complex64 data: the powers are then rounded once to float32, where
    # float32 chains W_m = W_{m-1} z^B would repeat z^B's rounding error coherently m times); entries below
    # the working dtype's tiny are flushed to zero (module doc).
    N = v.shape[0]
    L = out.shape[0]
    M = (L + B - 1) // B
    rdt = v.real.dtype
    zr = z.real.astype(np.float64)
    zi = z.imag.astype(np.float64)
    # Z (n B): z^j; z^B for the chains of W
    Zr, Zi = np.empty((N, B), dtype=rdt), np.empty((N, B), dtype=rdt)
    zBr, zBi = np.empty(N), np.empty(N)
    for n in range(N):
        pr, pi = 1.0, 0.0
        for j in range(B):
            small = abs(pr) + abs(pi) < tiny
            Zr[n, j] = 0.0 if small else pr
            Zi[n, j] = 0.0 if small else pi
            pr, pi = pr * zr[n] - pi * zi[n], pr * zi[n] + pi * zr[n]
        zBr[n], zBi[n] = pr, pi
    # W (M n): v z^{mB}, the negated imaginary part Wn for Re K
    Wr, Wi, Wn = np.empty((M, N), dtype=rdt), np.empty((M, N), dtype=rdt), np.empty((M, N), dtype=rdt)
    for n in range(N):
        pr, pi = np.float64(v[n].real), np.float64(v[n].imag)
        for m in range(M):
            small = abs(pr) + abs(pi) < tiny
            Wr[m, n] = 0.0 if small else pr
            Wi[m, n] = 0.0 if small else pi
            Wn[m, n] = -Wi[m, n]
            pr, pi = pr * zBr[n] - pi * zBi[n], pr * zBi[n] + pi * zBr[n]
    Kr, Ki = np.empty((M, B), dtype=rdt), np.empty((M, B), dtype=rdt)
    gemm(Wr, False, Zr, False, Kr, 0.0)
    gemm(Wn, False, Zi, False, Kr, 1.0)
    gemm(Wr, False, Zi, False, Ki, 0.0)
    gemm(Wi, False, Zr, False, Ki, 1.0)
    for m in range(M):
        for j in range(min(B, L - m * B)):
            out[m * B + j] = Kr[m, j] + 1j * Ki[m, j]


@numba.njit(cache=True, parallel=True)
def _vandermonde(v, z, out, tiny):
    L = out.shape[1]
    for h in numba.prange(v.shape[0]):
        if L >= 2 * _VBLOCK:
            _vandermonde_blocked(v[h], z[h], out[h], tiny, _VBLOCK)
        else:
            _vandermonde_row(v[h], z[h], out[h], tiny)


def vandermonde(v, z, L: int) -> np.ndarray:
    """``K[c, k] = sum_n v[c, n] z[c, n]^k``, ``k < L``; ``v, z (d n)`` -> ``(d l)``."""
    v, z, L = reference._vandermonde_args(v, z, L)
    out = np.empty((v.shape[0], L), dtype=v.dtype)
    rdt = np.finfo(v.dtype).dtype
    _vandermonde(np.ascontiguousarray(v), np.ascontiguousarray(z), out, rdt.type(np.finfo(rdt).tiny))
    return out


def kernel(Lambda, B, C, dt, L: int, *, method: str = "zoh", output: str) -> np.ndarray:
    """:func:`refimpl.ssm.s4d.reference.kernel` with the Numba :func:`vandermonde`; ``K (d l)``."""
    return reference._kernel(Lambda, B, C, dt, L, method, output, vandermonde)


@warmup
def _warm():
    for dt in (np.complex128, np.complex64):
        v = np.ones((1, 2), dtype=dt)
        vandermonde(v, v * 0.5, 3)
        vandermonde(v, v * 0.5, 130)
