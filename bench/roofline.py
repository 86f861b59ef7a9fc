"""The machine's own limits, measured in the same run as the workloads.

* fp32 matmul GFLOP/s: ``np.dot`` of two 1024 x 1024 float32 matrices (BLAS, all threads).
* vectorized ``exp`` throughput (float32 elements per second): the best of NumPy's ``np.exp`` on a
  large array, a Numba ``prange`` loop over ``math.exp`` and a ``prange`` loop over our polynomial
  ``exp`` (:mod:`refimpl._fastmath`, the one the kernels use), each on the same array.
* memory bandwidth (bytes/s): a large ``np.copyto`` (read + write counted).
"""
from __future__ import annotations

import math
import time

import numba as nb
import numpy as np

from refimpl._fastmath import exp_f32


def _best(fn, reps=5):
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@nb.njit(parallel=True, fastmath=True, cache=True)
def _exp_loop(x, out):
    for i in nb.prange(x.size):
        out[i] = math.exp(x[i])


@nb.njit(parallel=True, cache=True)
def _exp_ours(x, out):
    # refimpl._fastmath's float32 exp, in blocks of 4096 (the int32 exponent buffer stays in L1)
    nblk = (x.size + 4095) // 4096
    for bk in nb.prange(nblk):
        i0 = bk * 4096
        i1 = min(i0 + 4096, x.size)
        exp_f32(x[i0:i1], out[i0:i1], np.empty(i1 - i0, dtype=np.int32))


def measure() -> dict:
    rng = np.random.default_rng(0)
    n = 1024
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t = _best(lambda: np.dot(a, b))
    gflops = 2 * n ** 3 / t / 1e9
    m = 1 << 24
    x = rng.uniform(-10, 0, m).astype(np.float32)
    out = np.empty_like(x)
    t_np = _best(lambda: np.exp(x, out=out))
    t_nb = _best(lambda: _exp_loop(x, out))
    t_ours = _best(lambda: _exp_ours(x, out))
    exp_rate = m / min(t_np, t_nb, t_ours)
    big = np.ones(1 << 26, dtype=np.float32)
    dst = np.empty_like(big)
    t_bw = _best(lambda: np.copyto(dst, big))
    bandwidth = 2 * big.nbytes / t_bw
    return {
        "matmul_gflops_fp32": gflops,
        "exp_per_s_fp32": exp_rate,
        "exp_per_s_numpy": m / t_np,
        "exp_per_s_numba": m / t_nb,
        "exp_per_s_ours": m / t_ours,
        "bandwidth_GBps": bandwidth / 1e9,
    }


def canary(n: int = 512, reps: int = 7) -> float:
    """float32 sgemm GFLOP/s of one ``n^3`` product (best of ``reps``): printed before and after each workload."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    return 2.0 * n ** 3 / _best(lambda: a @ b, reps) / 1e9
