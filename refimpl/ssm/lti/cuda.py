r"""numba.cuda kernel for the diagonal LTI recurrence (the S4D/S5 inference path).

``h_t = A_bar h_{t-1} + B_bar x_t``, ``y_t = C h_t + D x_t`` with diagonal ``A_bar``
(``(d n)``, real or complex), time-invariant.  Each GPU thread owns one
``(batch, channel)`` pair and carries its ``n`` states through time in a local
array (a per-state thread with a ``(b l d n p)`` contribution buffer for the ``C h_t``
contraction would be large); the state fits in registers for the ``n <= 64``
used by S4D/S5.

Arrays may be NumPy (copied to the device by numba) or CuPy (stay on the
device; anything exposing ``__cuda_array_interface__``).  In CI there is no GPU:
the tests run this kernel under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
set by the root ``conftest.py``) on small shapes and compare with
:func:`refimpl.ssm.lti.reference.recurrent`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from refimpl._validate import check_bool, check_int

MAX_N = 64


def _kernel():
    @cuda.jit
    def _diag_recurrence(A_bar, B_bar, C, D, x, s0, y, hL):
        # one thread per (batch, channel); state h[n] in a local array
        b, l, nd, m = x.shape
        n = A_bar.shape[1]
        p = C.shape[1]
        tid = cuda.grid(1)
        if tid >= b * nd:
            return
        bi = tid // nd
        c = tid % nd
        s = cuda.local.array(MAX_N, dtype=y.dtype)
        for i in range(n):
            s[i] = s0[bi, c, i]
        for t in range(l):
            # h_t = A_bar h_{t-1} + B_bar x_t
            for i in range(n):
                acc = A_bar[c, i] * s[i]
                for j in range(m):
                    acc += B_bar[c, i, j] * x[bi, t, c, j]
                s[i] = acc
            # y_t = C h_t + D x_t
            for q in range(p):
                acc = 0.0 * y[bi, t, c, q]
                for i in range(n):
                    acc += C[c, q, i] * s[i]
                for j in range(m):
                    acc += D[c, q, j] * x[bi, t, c, j]
                y[bi, t, c, q] = acc
        for i in range(n):
            hL[bi, c, i] = s[i]

    return _diag_recurrence


_KERNEL = None


def recurrent_diag(A_bar, B_bar, C, D, x, *, initial_state=None, return_final_state: bool = False,
                   threads_per_block: int = 128):
    """Diagonal LTI recurrence on the GPU; same shapes and result as
    :func:`refimpl.ssm.lti.reference.recurrent` with ``diagonal=True`` (time-invariant systems).

    ``A_bar (d n)``, ``B_bar (d n m)``, ``C (d p n)``, ``D (d p m)`` or None, ``x (b l d m)``,
    ``initial_state (b d n)`` or None; returns ``y (b l d p)`` (and the final state ``(b d n)``).
    NumPy inputs are validated with the reference's checks and results come back as NumPy; CuPy
    inputs are shape-checked, kept on the device, and the outputs are CuPy arrays.
    """
    global _KERNEL
    return_final_state = check_bool(return_final_state, "return_final_state")
    threads_per_block = check_int(threads_per_block, "threads_per_block", minimum=1)
    on_device = hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)
    if on_device:
        import cupy as cp

        xp = cp
        b, l, d, m = x.shape
        n = A_bar.shape[1]
        p = C.shape[1]
        dtype = cp.result_type(*(a for a in (A_bar, B_bar, C, D, x, initial_state) if a is not None))
        for name, arr, shape in (("A_bar", A_bar, (d, n)), ("B_bar", B_bar, (d, n, m)), ("C", C, (d, p, n)),
                                 ("D", D, (d, p, m)), ("initial_state", initial_state, (b, d, n))):
            if arr is not None and tuple(arr.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(arr.shape)}")
        if cp.dtype(dtype).kind not in "fc":
            raise TypeError(f"x: expected a floating-point dtype, got {dtype}")
        if not bool(cp.isfinite(x).all()):
            raise ValueError("x: expected finite values, got NaN or Inf")
    else:
        from refimpl.ssm.lti.reference import validate_system

        A_bar, B_bar, C, D, x, initial_state, dims = validate_system(A_bar, B_bar, C, D, x, initial_state,
                                                                     diagonal=True, time_varying_ok=False,
                                                                     view="cuda recurrent")
        xp = np
        b, l, d, m, n, p = dims["b"], dims["l"], dims["d"], dims["m"], dims["n"], dims["p"]
        dtype = x.dtype
    if n > MAX_N:
        raise ValueError(f"A_bar: the CUDA kernel keeps the state in registers, expected n <= {MAX_N}, got {n}")
    cast = lambda a: xp.ascontiguousarray(a.astype(dtype))  # noqa: E731
    D_ = xp.zeros((d, p, m), dtype=dtype) if D is None else cast(D)
    s0 = xp.zeros((b, d, n), dtype=dtype) if initial_state is None else cast(initial_state)
    y = xp.zeros((b, l, d, p), dtype=dtype)
    hL = xp.zeros((b, d, n), dtype=dtype)
    if b * d:
        if _KERNEL is None:
            _KERNEL = _kernel()
        blocks = math.ceil(b * d / threads_per_block)
        _KERNEL[blocks, threads_per_block](cast(A_bar), cast(B_bar), cast(C), D_, cast(x), s0, y, hL)
    return (y, hL) if return_final_state else y
