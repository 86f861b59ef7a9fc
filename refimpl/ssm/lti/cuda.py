r"""numba.cuda kernel for the diagonal LTI recurrence (the S4D/S5 inference path).

``h_t = A_bar h_{t-1} + B_bar x_t``, ``y_t = C h_t + D x_t`` with diagonal ``A_bar``
(``(h n)``, real or complex), one GPU thread per ``(batch, channel, state)``
triple carrying its state through time; the ``C h_t`` contraction over ``n``
is done by the threads of a channel with an atomic-free second pass (a
per-state contribution buffer ``(b l h n p)`` would be large, so each thread
instead owns one ``(batch, channel)`` pair and loops over its ``n`` states: the
state fits in registers for the ``n <= 64`` used by S4D/S5).

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

MAX_N = 64


def _kernel():
    @cuda.jit
    def _diag_recurrence(A_bar, B_bar, C, D, x, h0, y, hL):
        # one thread per (batch, channel); state h[n] in a local array
        b, l, H, m = x.shape
        n = A_bar.shape[1]
        p = C.shape[1]
        tid = cuda.grid(1)
        if tid >= b * H:
            return
        bi = tid // H
        c = tid % H
        s = cuda.local.array(MAX_N, dtype=y.dtype)
        for i in range(n):
            s[i] = h0[bi, c, i]
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


def recurrent_diag(A_bar, B_bar, C, D, x, *, h0=None, return_state: bool = False, threads_per_block: int = 128):
    """Diagonal LTI recurrence on the GPU; same shapes and result as ``lti.recurrent(..., diagonal=True)``.

    NumPy inputs are validated with the reference's checks and results come back as NumPy; CuPy
    inputs are shape-checked, kept on the device, and the outputs are CuPy arrays.
    """
    global _KERNEL
    on_device = hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)
    if on_device:
        import cupy as cp

        xp = cp
        b, l, h, m = x.shape
        n = A_bar.shape[1]
        p = C.shape[1]
        dtype = cp.result_type(A_bar, B_bar, C, x)
        for name, arr, shape in (("A_bar", A_bar, (h, n)), ("B_bar", B_bar, (h, n, m)), ("C", C, (h, p, n))):
            if tuple(arr.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(arr.shape)}")
        if not bool(cp.isfinite(x).all()):
            raise ValueError("x: expected finite values, got NaN or Inf")
    else:
        from refimpl.ssm.lti.reference import validate_system

        A_bar, B_bar, C, D, x, h0, d = validate_system(A_bar, B_bar, C, D, x, h0, diagonal=True,
                                                       time_varying_ok=False)
        xp = np
        b, l, h, m, n, p = d["b"], d["l"], d["h"], d["m"], d["n"], d["p"]
        dtype = x.dtype
    if n > MAX_N:
        raise ValueError(f"A_bar: the CUDA kernel keeps the state in registers, expected n <= {MAX_N}, got {n}")
    cast = lambda a: xp.ascontiguousarray(a.astype(dtype))  # noqa: E731
    D_ = xp.zeros((h, p, m), dtype=dtype) if D is None else cast(D)
    h0_ = xp.zeros((b, h, n), dtype=dtype) if h0 is None else cast(h0)
    y = xp.zeros((b, l, h, p), dtype=dtype)
    hL = xp.zeros((b, h, n), dtype=dtype)
    if b * h:
        if _KERNEL is None:
            _KERNEL = _kernel()
        blocks = math.ceil(b * h / threads_per_block)
        _KERNEL[blocks, threads_per_block](cast(A_bar), cast(B_bar), cast(C), D_, cast(x), h0_, y, hL)
    return (y, hL) if return_state else y
