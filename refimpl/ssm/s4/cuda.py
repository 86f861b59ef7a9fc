r"""numba.cuda Cauchy kernel for S4's generating function (the GPU twin of :func:`refimpl.ssm.s4.reference.cauchy`).

* :func:`cauchy` -- ``k[c, j] = sum_n v[c, n] / (g[c, j] - lam[c, n])``: ``v, lam (d n)``, ``g (d l)`` -> ``(d l)``
  complex.  **Thread mapping**: one thread per ``(channel c, node j)``; it keeps ``g_j`` and the running sum in
  registers and loops over ``n`` (each term one complex subtraction, one division, one addition: the
  reference's Cauchy bound ``2 gamma^c_{n+2} sum |v|/|g - l|`` covers any summation order).  No shared memory,
  no synchronisation.
* :func:`kernel` -- :func:`refimpl.ssm.s4.s4_kernel` view ``generating_function`` with ``backend="cuda"``: the
  reference's validation, discretization, Woodbury algebra and inverse FFT (NumPy, ``O(d l r^2)``), with the
  ``O(d l n)`` Cauchy products on the GPU.

NumPy in -> the reference's validation, NumPy out; CuPy in (``cauchy`` only) -> shapes/dtype/finiteness checked
on the device, CuPy out.  complex64 only when every input is float32/complex64.  Simulator in CI: small shapes.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl.ssm.s4 import reference

__all__ = ["cauchy", "kernel", "DEFAULT_THREADS"]

DEFAULT_THREADS = 128


def _make_cauchy(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _cauchy(v, g, lam, out):
        # thread -> (channel c, node j): out[c, j] = sum_n v[c, n] / (g[c, j] - lam[c, n])
        d, Lg = g.shape
        N = v.shape[1]
        tid = cuda.grid(1)
        if tid >= d * Lg:
            return
        c = tid // Lg
        j = tid % Lg
        gj = g[c, j]
        acc = nbt(0)
        for n in range(N):
            # k_j += v_n / (g_j - lambda_n)
            acc += v[c, n] / (gj - lam[c, n])
        out[c, j] = acc

    return _cauchy


_CAUCHY = _cuda.lazy_kernel(_make_cauchy)


def cauchy(v, g, lam, *, threads_per_block: int = DEFAULT_THREADS):
    """``k[c, j] = sum_n v[c, n] / (g[c, j] - lam[c, n])``; ``v, lam (d n)``, ``g (d l)`` -> ``(d l)``."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(v=v, g=g, lam=lam)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(v, "v", (None, None))
        d, n = v.shape
        _cuda.check_device_array(lam, "lam", (d, n))
        _cuda.check_device_array(g, "g", (d, None))
        cdt = np.result_type(_cuda.working_dtype(v, g, lam), np.complex64)
        for name, a in (("v", v), ("g", g), ("lam", lam)):
            _cuda.check_device_finite(a, name)
        v, g, lam = (_cuda.prepare(xp, a, cdt) for a in (v, g, lam))
    else:
        v, g, lam = reference._cauchy_args(v, g, lam)
        cdt = v.dtype
    d, Lg = g.shape
    out = _cuda.zeros((d, Lg), cdt, device)
    if d * Lg:
        dev = _cuda.to_device
        _CAUCHY(np.dtype(cdt).name)[_cuda.grid_1d(d * Lg, tpb)](dev(v), dev(g), dev(lam), out)
    return _cuda.from_device(out, device)


def kernel(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex", method: str = "bilinear",
           threads_per_block: int = DEFAULT_THREADS):
    """:func:`refimpl.ssm.s4.reference.kernel` with the CUDA :func:`cauchy`; ``K (d l)`` (NumPy parameters)."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    for name, a in (("Lambda", Lambda), ("P", P), ("Q", Q), ("B", B), ("C", C), ("dt", dt)):
        if _cuda.on_device(a):
            raise TypeError(f"{name}: the cuda s4_kernel takes NumPy parameters (the Cauchy products run on the GPU), "
                            f"got a device array {type(a).__name__}; call refimpl.ssm.s4.cuda.cauchy for CuPy data")
    return reference._kernel(Lambda, P, Q, B, C, dt, L, output, method,
                             lambda v, g, lam: cauchy(v, g, lam, threads_per_block=tpb))
