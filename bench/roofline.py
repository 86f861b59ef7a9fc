"""The machine's own limits, measured in the same run as the workloads.

* fp32 matmul GFLOP/s: ``np.dot`` of two 1024 x 1024 float32 matrices (BLAS, all threads).
* vectorized ``exp`` throughput (float32 elements per second): the best of NumPy's ``np.exp`` on a
  large array and a Numba ``prange`` loop over ``math.exp``.
* memory bandwidth (bytes/s): a large ``np.copyto`` (read + write counted).
"""
from __future__ import annotations

import math
import time

import numba as nb
import numpy as np


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
    exp_rate = m / min(t_np, t_nb)
    big = np.ones(1 << 26, dtype=np.float32)
    dst = np.empty_like(big)
    t_bw = _best(lambda: np.copyto(dst, big))
    bandwidth = 2 * big.nbytes / t_bw
    return {
        "matmul_gflops_fp32": gflops,
        "exp_per_s_fp32": exp_rate,
        "exp_per_s_numpy": m / t_np,
        "exp_per_s_numba": m / t_nb,
        "bandwidth_GBps": bandwidth / 1e9,
    }
