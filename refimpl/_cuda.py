"""Shared plumbing for the numba.cuda kernels (``refimpl/<family>/<algo>/cuda.py``).

Nothing here imports ``numba.cuda`` or CuPy at module import time (``refimpl._numba.warm_all``
imports every ``refimpl`` module, and the CPU paths must not pay for CUDA).  The helpers:

* where the arrays live -- :func:`on_device` (one array), :func:`placement` (all of a call's
  arrays: all NumPy, or all device arrays; a mix is a ``TypeError`` naming the argument),
  :func:`array_module` (``numpy`` or ``cupy``);
* checks of device arrays that mirror the reference's NumPy checks -- :func:`check_device_array`
  (shape, dtype kind, no silent downcast), :func:`check_device_finite`;
* dtype and copies -- :func:`working_dtype`, :func:`prepare` (contiguous, in the working dtype;
  NumPy arrays are copied to the device by numba at launch, device arrays stay where they are);
* launch sizes -- :func:`check_threads_per_block`, :func:`blocks_for`, :func:`next_pow2`;
* the kernel cache -- :func:`lazy_kernel` (compile a ``@cuda.jit`` factory once, on first use);
* :func:`simulator` -- is numba running the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

MAX_THREADS_PER_BLOCK = 1024


# ----------------------------------------------------------------------------- placement
def on_device(a) -> bool:
    """True for an array that lives on a GPU (exposes ``__cuda_array_interface__``, is not NumPy)."""
    return a is not None and hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray)


def placement(**arrays) -> bool:
    """``True`` when the call's arrays are device arrays, ``False`` when they are host arrays.

    ``None`` entries are ignored.  A mix of host and device arrays is a ``TypeError`` naming the
    first argument whose placement differs from the first non-None argument's.
    """
    first_name, first = None, None
    for name, a in arrays.items():
        if a is None:
            continue
        if first_name is None:
            first_name, first = name, on_device(a)
            continue
        if on_device(a) != first:
            where = lambda d: "a device (CuPy) array" if d else "a host (NumPy) array"  # noqa: E731
            raise TypeError(f"{name}: expected {where(first)} like {first_name}, got {where(not first)}")
    return bool(first)


def array_module(device: bool):
    """``cupy`` for device calls (imported only then), ``numpy`` otherwise."""
    if device:
        import cupy

        return cupy
    return np


# ----------------------------------------------------------------------------- checks
def working_dtype(*arrays, allow_complex: bool = True) -> np.dtype:
    """The common floating dtype of ``arrays`` (``None`` ignored): float32/float64 (complex64/128).

    Integers and booleans promote to float64 (as the NumPy reference does); float16/bfloat16 are
    refused (the kernels compute in float32 or float64 only, and a silent upcast would change the
    result's dtype).
    """
    dts = [np.dtype(a.dtype) for a in arrays if a is not None]
    dt = np.result_type(*dts) if dts else np.dtype(np.float64)
    if dt.kind in "biu":
        dt = np.dtype(np.float64)
    if dt.kind == "c" and not allow_complex:
        raise TypeError(f"dtype: expected a real floating dtype, got {dt}")
    if dt not in (np.float32, np.float64, np.complex64, np.complex128):
        raise TypeError(f"dtype: expected float32, float64, complex64 or complex128, got {dt}")
    return dt


def check_device_array(a, name: str, shape: Optional[Sequence[Optional[int]]] = None, *,
                       allow_complex: bool = True) -> None:
    """Shape (``None`` entries free) and dtype kind of a device array, with the reference's wording."""
    if shape is not None:
        got = tuple(a.shape)
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            exp = tuple("*" if e is None else e for e in shape)
            raise ValueError(f"{name}: expected shape {exp}, got {got}")
    kind = np.dtype(a.dtype).kind
    ok = "fc" if allow_complex else "f"
    if kind not in ok and kind not in "biu":
        raise TypeError(f"{name}: expected a {'floating or complex' if allow_complex else 'real floating'} dtype, "
                        f"got {a.dtype}")
    if np.dtype(a.dtype) == np.float16:
        raise TypeError(f"{name}: expected float32 or float64 (the CUDA kernels do not take float16), got float16")


def check_device_finite(a, name: str) -> None:
    """``ValueError`` when a device array holds NaN or Inf (one reduction on the device)."""
    xp = array_module(True)
    if a.size and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf")


def prepare(xp, a, dtype):
    """``a`` as a C-contiguous array of ``dtype`` in module ``xp`` (no copy when it already is)."""
    return xp.ascontiguousarray(xp.asarray(a).astype(dtype, copy=False))


# ----------------------------------------------------------------------------- launch sizes
def check_threads_per_block(value, name: str = "threads_per_block", *, power_of_two: bool = False,
                            maximum: int = MAX_THREADS_PER_BLOCK) -> int:
    """A positive int <= ``maximum`` (and a power of two when the kernel's tree scan needs it)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = int(value)
    if value < 1 or value > maximum:
        raise ValueError(f"{name}: expected 1 <= {name} <= {maximum}, got {value}")
    if power_of_two and value & (value - 1):
        raise ValueError(f"{name}: expected a power of two, got {value}")
    return value


def blocks_for(n: int, threads_per_block: int) -> int:
    """Blocks of ``threads_per_block`` threads that cover ``n`` work items (at least 1)."""
    return max(1, math.ceil(n / threads_per_block))


def next_pow2(n: int) -> int:
    """The smallest power of two >= max(n, 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


# ----------------------------------------------------------------------------- kernels
def simulator() -> bool:
    """True when numba runs the CUDA simulator (decided when numba was first imported)."""
    try:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover - numba missing
        return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def lazy_kernel(factory: Callable[..., Callable]) -> Callable[..., Callable]:
    """Cache ``factory(*key)`` (a function that builds and returns a ``@cuda.jit`` kernel).

    Usage: ``_scan = lazy_kernel(_make_scan)`` then ``_scan(tpb)[blocks, tpb](...)``; the kernel is
    built on first use (importing the module compiles nothing), once per distinct key (e.g. a
    compile-time shared-memory size).
    """
    cache: Dict[Tuple, Callable] = {}

    def get(*key):
        if key not in cache:
            cache[key] = factory(*key)
        return cache[key]

    get.__name__ = getattr(factory, "__name__", "kernel")
    get.__doc__ = factory.__doc__
    return get


def to_host(a):
    """A NumPy copy of a device array (identity for NumPy arrays)."""
    if on_device(a):
        return a.get() if hasattr(a, "get") else np.asarray(a.copy_to_host())
    return np.asarray(a)


# ----------------------------------------------------------------------------- transfers
def to_device(a):
    """A device copy of a NumPy array (``numba.cuda.to_device``; contiguous); device arrays pass through.

    Launching a kernel on NumPy arguments directly would copy *every* argument back to the host
    afterwards (and fail on read-only views); the kernels copy inputs in once with this and the
    outputs out once with :func:`from_device`.
    """
    if on_device(a):
        return a
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def zeros(shape, dtype, device: bool):
    """A zero-filled output array: CuPy for device calls, else a numba device array (zeroed on the host)."""
    if device:
        return array_module(True).zeros(shape, dtype=dtype)
    from numba import cuda

    return cuda.to_device(np.zeros(shape, dtype=dtype))


def from_device(d, device: bool):
    """The result: the CuPy array itself for device calls, else a NumPy copy of the numba device array."""
    if device:
        return d
    return d.copy_to_host()


def grid_1d(n: int, threads_per_block: int) -> Tuple[int, int]:
    """``(blocks, threads)`` covering ``n`` work items with blocks of at most ``threads_per_block`` threads, no
    larger than ``next_pow2(n)`` (a tiny problem gets a small block: no idle threads -- and, under the simulator,
    no idle Python threads).  Use as ``kernel[grid_1d(n, tpb)](...)``."""
    threads = max(1, min(threads_per_block, next_pow2(n)))
    return blocks_for(n, threads), threads
