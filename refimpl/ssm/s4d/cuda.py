r"""numba.cuda Vandermonde kernel for S4D (the GPU twin of :func:`refimpl.ssm.s4d.reference.vandermonde`).

* :func:`vandermonde` -- ``K[c, k] = sum_n v[c, n] z[c, n]^k`` (``k < L``), ``v, z (d n)`` -> ``(d l)`` complex.
  **Thread mapping**: one thread per ``(channel c, lag k)``; the thread loops over ``n`` and forms ``z_n^k`` by
  binary powering (``<= 2 floor(log2 k)`` products, at most the reference's ``k`` repeated products, so the
  reference's Vandermonde bound ``2 gamma^c_{n+k+1} sum_n |v||z|^k`` covers it) and accumulates ``v_n z_n^k`` in
  a register.  No shared memory, no synchronisation (each output is one thread's).
* :func:`kernel` -- :func:`refimpl.ssm.s4d.s4d_kernel` with ``backend="cuda"``: the reference's validation and
  discretization (NumPy parameters, small), then this Vandermonde product on the GPU.

NumPy in -> the reference's validation, NumPy out; CuPy in (``vandermonde`` only) -> shapes/dtype/finiteness
checked on the device, CuPy out.  complex64 only when both inputs are float32/complex64 (no silent downcast).
Under the CUDA simulator (CI) small shapes only.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_int
from refimpl.ssm.s4d import reference

__all__ = ["vandermonde", "kernel", "DEFAULT_THREADS"]

DEFAULT_THREADS = 128


def _make_vandermonde(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _vandermonde(v, z, out):
        # thread -> (channel c, lag k): out[c, k] = sum_n v[c, n] z[c, n]^k
        d, L = out.shape
        N = v.shape[1]
        tid = cuda.grid(1)
        if tid >= d * L:
            return
        c = tid // L
        k = tid % L
        acc = nbt(0)
        for n in range(N):
            # z_n^k by binary powering (registers: pw, base)
            base = z[c, n]
            pw = nbt(1)
            e = k
            while e > 0:
                if e & 1:
                    pw = pw * base
                e >>= 1
                if e > 0:
                    base = base * base
            # K_k += v_n z_n^k
            acc += v[c, n] * pw
        out[c, k] = acc

    return _vandermonde


_VANDERMONDE = _cuda.lazy_kernel(_make_vandermonde)


def vandermonde(v, z, L: int, *, threads_per_block: int = DEFAULT_THREADS):
    """``K[c, k] = sum_n v[c, n] z[c, n]^k``, ``k < L``; ``v, z (d n)`` -> ``(d l)`` (one thread per (channel, k))."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(v=v, z=z)
    if device:
        xp = _cuda.array_module(True)
        L = check_int(L, "L", minimum=0)
        _cuda.check_device_array(v, "v", (None, None))
        _cuda.check_device_array(z, "z", tuple(v.shape))
        cdt = np.result_type(_cuda.working_dtype(v, z), np.complex64)
        _cuda.check_device_finite(v, "v")
        _cuda.check_device_finite(z, "z")
        v, z = _cuda.prepare(xp, v, cdt), _cuda.prepare(xp, z, cdt)
    else:
        v, z, L = reference._vandermonde_args(v, z, L)
        cdt = v.dtype
    d = v.shape[0]
    out = _cuda.zeros((d, L), cdt, device)
    if d * L:
        _VANDERMONDE(np.dtype(cdt).name)[_cuda.grid_1d(d * L, tpb)](_cuda.to_device(v), _cuda.to_device(z), out)
    return _cuda.from_device(out, device)


def kernel(Lambda, B, C, dt, L: int, *, method: str = "zoh", output: str, threads_per_block: int = DEFAULT_THREADS):
    """:func:`refimpl.ssm.s4d.reference.kernel` with the CUDA :func:`vandermonde`; ``K (d l)`` (NumPy parameters)."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    for name, a in (("Lambda", Lambda), ("B", B), ("C", C), ("dt", dt)):
        if _cuda.on_device(a):
            raise TypeError(f"{name}: the cuda s4d_kernel takes NumPy parameters (the Vandermonde product runs on the "
                            f"GPU), got a device array {type(a).__name__}; call refimpl.ssm.s4d.cuda.vandermonde for "
                            "CuPy data")
    return reference._kernel(Lambda, B, C, dt, L, method, output,
                             lambda v, z, L: vandermonde(v, z, L, threads_per_block=tpb))
