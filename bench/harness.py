"""Timing, result checks and machine description shared by every workload."""
from __future__ import annotations

import dataclasses
import gc
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from oracles.tolerance import baseline_bound, compare


@dataclasses.dataclass
class Timing:
    impl: str
    median_s: float
    runs: List[float]
    checked: str  # how the result was checked before timing counted
    passed: bool
    max_abs_err: float = float("nan")


def interleaved_medians(cands: Dict[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1,
                        budget_s: float = 60.0) -> Dict[str, List[float]]:
    """Run every candidate ``warmup`` times, then ``repeats`` rounds in rotating order; return all times.

    Interleaving spreads machine noise (frequency scaling, other processes) over every candidate alike.
    A round stops early once ``budget_s`` is spent (at least 3 rounds are always run).
    Each timed call starts after a full ``gc.collect()`` and runs with the collector off (as ``timeit`` does):
    otherwise the garbage one candidate leaves (JAX's jit leaves many Python objects) is collected inside the
    next candidate's timing -- measured: the first Numba call after a JAX call took 97 ms instead of 24 ms.
    """
    for _ in range(warmup):
        for fn in cands.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in cands}
    names = list(cands)
    t_start = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                cands[k]()
                times[k].append(time.perf_counter() - t0)
            finally:
                gc.enable()
        if r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return times


def check_against(name: str, out, oracle64, ref_lowp, dtype) -> tuple:
    """The same-dtype baseline rule: error <= 2 x |our reference in ``dtype`` - float64 oracle| + u |oracle|."""
    out = np.asarray(out.detach().numpy() if hasattr(out, "detach") else out)
    cmp = compare(out.astype(np.float64) if out.dtype.kind == "f" else out, oracle64,
                  baseline_bound(ref_lowp, oracle64, dtype))
    return cmp.passed, cmp.max_abs_err, f"baseline: <= 2x our NumPy reference's {np.dtype(dtype).name} error + u|y|"


def machine_info() -> dict:
    import numba
    import scipy

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("torch", "jax", "mambapy"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except Exception:
            info[mod] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return info


def median(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def optional(modname: str):
    """The module if importable, else None (alternatives are only benchmarked when installed)."""
    try:
        return __import__(modname)
    except Exception:
        return None
