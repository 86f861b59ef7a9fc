r"""Numba kernels for the structured SSMs: Cauchy kernel, Vandermonde kernel, diagonal complex scan.

Each matches its NumPy reference (by property test, every size including ``L = 0, 1``):

* :func:`cauchy` -- ``k[h, j] = sum_n v[h, n] / (g[h, j] - lam[h, n])``
  (reference :func:`refimpl.ssm.s4.reference.cauchy`), parallel over ``(h, j)``.
* :func:`vandermonde` -- ``K[h, k] = sum_n v[h, n] z[h, n]^k``, powers by repeated multiplication
  (reference :func:`refimpl.ssm.s4d.reference.vandermonde`), parallel over ``h``; per ``k`` the powers and the sum
  are vectorized over ``n`` (real and imaginary parts in separate arrays; the sum reassociated).  A power
  ``z^k`` whose magnitude falls below the smallest normal number ``tiny`` (2^-126 for complex64) is
  flushed to zero: subnormal arithmetic is ~100x slower (a decaying S4D kernel spends whole stretches of
  ``k`` there).  For ``|z| <= 1`` the dropped powers are all below ``tiny / (1 - gamma) <= 2 tiny``, so
  ``K_k`` moves by at most ``2 tiny sum_n |v_n|`` (the floor the tests add to the Vandermonde bound;
  growing powers, ``|z| > 1``, never reach it).
* :func:`diag_scan` -- ``s_t = a_t * s_{t-1} + b_t`` elementwise over ``n`` (complex), with initial
  state ``s0``: ``a (l n)``, ``b (b l n)``, ``s0 (b n)`` -> all states ``(b l n)``
  (reference: the literal recurrences of :mod:`refimpl.ssm.s5.reference` / :mod:`refimpl.ssm.lru.reference`),
  parallel over ``(b, n)``.

Signatures: complex128 and complex64 (the working dtype of the caller; no casting here).
"""
from __future__ import annotations

import numba
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_int

__all__ = ["cauchy", "vandermonde", "diag_scan"]


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


@numba.njit(cache=True, parallel=True)
def _diag_scan(a, b, s0, out):
    Bsz, L, N = b.shape
    for idx in numba.prange(Bsz * N):
        i = idx // N
        n = idx % N
        s = s0[i, n]
        for t in range(L):
            # s_t = a_t s_{t-1} + b_t
            s = a[t, n] * s + b[i, t, n]
            out[i, t, n] = s


def _complex(x, name, ndim):
    x = np.asarray(x)
    if x.dtype not in (np.complex64, np.complex128):
        raise TypeError(f"{name}: expected complex64 or complex128, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {x.shape}")
    return np.ascontiguousarray(x)


def cauchy(v, g, lam) -> np.ndarray:
    """``k[h, j] = sum_n v[h, n] / (g[h, j] - lam[h, n])``; ``v, lam (h n)``, ``g (h l)`` -> ``(h l)``."""
    v, g, lam = _complex(v, "v", 2), _complex(g, "g", 2), _complex(lam, "lam", 2)
    if lam.shape != v.shape or g.shape[0] != v.shape[0]:
        raise ValueError(f"shapes: expected v, lam (h, n) and g (h, l); got v {v.shape}, lam {lam.shape}, g {g.shape}")
    dt = np.result_type(v, g, lam)
    out = np.empty(g.shape, dtype=dt)
    _cauchy(v.astype(dt, copy=False), g.astype(dt, copy=False), lam.astype(dt, copy=False), out)
    return out


def vandermonde(v, z, L: int) -> np.ndarray:
    """``K[h, k] = sum_n v[h, n] z[h, n]^k``, ``k < L``; ``v, z (h n)`` -> ``(h l)``."""
    L = check_int(L, "L", minimum=0)
    v, z = _complex(v, "v", 2), _complex(z, "z", 2)
    if z.shape != v.shape:
        raise ValueError(f"z: expected shape {v.shape} (same as v), got {z.shape}")
    dt = np.result_type(v, z)
    out = np.empty((v.shape[0], L), dtype=dt)
    rdt = np.finfo(dt).dtype
    _vandermonde(v.astype(dt, copy=False), z.astype(dt, copy=False), out, rdt.type(np.finfo(rdt).tiny))
    return out


def diag_scan(a, b, s0=None) -> np.ndarray:
    """All states of ``s_t = a_t * s_{t-1} + b_t``: ``a (l n)`` or ``(n)``, ``b (b l n)``, ``s0 (b n)`` -> ``(b l n)``."""
    b = _complex(b, "b", 3)
    a = np.asarray(a)
    if a.ndim == 1:
        a = np.broadcast_to(a, b.shape[1:])
    a = _complex(a, "a", 2)
    if a.shape != b.shape[1:]:
        raise ValueError(f"a: expected shape {b.shape[1:]} (or ({b.shape[2]},)), got {a.shape}")
    dt = np.result_type(a, b)
    if s0 is None:
        s0 = np.zeros((b.shape[0], b.shape[2]), dtype=dt)
    s0 = _complex(s0, "s0", 2)
    if s0.shape != (b.shape[0], b.shape[2]):
        raise ValueError(f"s0: expected shape {(b.shape[0], b.shape[2])}, got {s0.shape}")
    dt = np.result_type(dt, s0)
    out = np.empty(b.shape, dtype=dt)
    _diag_scan(a.astype(dt, copy=False), b.astype(dt, copy=False), s0.astype(dt, copy=False), out)
    return out


@warmup
def _warm():
    for dt in (np.complex128, np.complex64):
        v = np.ones((1, 2), dtype=dt)
        cauchy(v, np.full((1, 3), 2j, dtype=dt), v * 0.5)
        vandermonde(v, v * 0.5, 3)
        vandermonde(v, v * 0.5, 130)
        diag_scan(np.full((3, 2), 0.5, dtype=dt), np.ones((1, 3, 2), dtype=dt))
