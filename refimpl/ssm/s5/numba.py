r"""Numba diagonal complex scan for S5 and LRU (split from the former ``structured_numba``).

* :func:`diag_scan` -- ``s_t = a_t * s_{t-1} + b_t`` elementwise over ``n`` (complex), ``s_{-1}`` =
  ``initial_state``: ``a (l n)`` or ``(n)``, ``b (b l n)``, ``initial_state (b n)`` -> all states ``(b l n)``;
  parallel over ``(b, n)``.  The same arguments, validation and working dtype as the reference
  :func:`refimpl.ssm.s5.reference.diag_scan` (the literal loop), which it matches by property test.
* :func:`recurrent` -- the ``recurrent`` view of :func:`refimpl.ssm.s5.s5_ssm` with this kernel (backend ``numba``).

Signatures: complex128 and complex64 (the working dtype of the caller; no casting beyond it).
"""
from __future__ import annotations

import numba
import numpy as np

from refimpl._numba import warmup
from refimpl.ssm.s5 import reference

__all__ = ["diag_scan", "recurrent"]


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


def diag_scan(a, b, initial_state=None) -> np.ndarray:
    """All states of ``s_t = a_t * s_{t-1} + b_t``: ``a (l n)`` or ``(n)``, ``b (b l n)``, ``initial_state (b n)`` -> ``(b l n)``."""
    a, b, s0 = reference._diag_scan_args(a, b, initial_state)
    out = np.empty(b.shape, dtype=b.dtype)
    _diag_scan(np.ascontiguousarray(a), np.ascontiguousarray(b), np.ascontiguousarray(s0), out)
    return out


def recurrent(Lambda, B_tilde, C_tilde, D, dt, u, *, method: str = "zoh", output: str, C_back=None,
              initial_state=None, return_final_state: bool = False):
    """:func:`refimpl.ssm.s5.reference.recurrent` with the states from the Numba :func:`diag_scan`."""
    return reference._s5(diag_scan, Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back, initial_state,
                         return_final_state)


@warmup
def _warm():
    for dt in (np.complex128, np.complex64):
        diag_scan(np.full((3, 2), 0.5, dtype=dt), np.ones((1, 3, 2), dtype=dt))
