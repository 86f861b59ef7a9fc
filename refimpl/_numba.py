"""Numba plumbing: a warm-up registry so JIT compilation happens once, up front.

Kernel modules decorate a tiny function with :func:`warmup`; it calls each
kernel on the smallest inputs of every signature the kernel is used with.
The test suite calls :func:`warm_all` once per session (a fixture), so JIT
time never counts against a Hypothesis deadline, and ``bench`` calls it
before timing.

Every kernel is compiled with ``cache=True``, so a compiled signature is written to the on-disk cache
(``__pycache__``) and loaded, not recompiled, by the next process.  On a cold cache (a fresh clone: CI)
compiling everything takes minutes on one core; ``warm_all(processes=k)`` first compiles in ``k``
subprocesses, each running every ``k``-th warm-up into the cache (Numba writes its cache files
atomically), then runs every warm-up in this process, which now loads them.  A child that fails changes
nothing: whatever it did not compile is compiled here.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from typing import Callable, List, Optional

_WARMUPS: List[Callable[[], None]] = []


def warmup(fn: Callable[[], None]) -> Callable[[], None]:
    _WARMUPS.append(fn)
    return fn


def _import_all() -> None:
    import refimpl

    for mod in pkgutil.walk_packages(refimpl.__path__, prefix="refimpl."):
        if mod.name.rsplit(".", 1)[-1] == "cuda":  # numba.cuda kernels: imported only when backend="cuda" is asked
            continue
        importlib.import_module(mod.name)


def _warm_slice(k: int, processes: int) -> None:
    """Run the warm-ups ``k, k + processes, ...`` (a child of :func:`warm_all`)."""
    _import_all()
    for i, fn in enumerate(_WARMUPS):
        if i % processes == k:
            fn()


def _default_processes() -> int:
    given = os.environ.get("REFIMPL_WARM_PROCESSES")
    if given:
        return max(1, int(given))
    return max(1, min(4, os.cpu_count() or 1))


def warm_all(processes: Optional[int] = None) -> int:
    """Import every ``refimpl`` module and run every registered warm-up; return how many ran.

    ``processes`` (default ``$REFIMPL_WARM_PROCESSES``, else the CPU count up to 4): with more than one, the
    warm-ups are first compiled into the on-disk cache by that many subprocesses in parallel.
    """
    processes = _default_processes() if processes is None else max(1, int(processes))
    if processes > 1:
        env = dict(os.environ, REFIMPL_WARM_PROCESSES="1")
        children = [subprocess.Popen([sys.executable, "-c",
                                      f"from refimpl._numba import _warm_slice; _warm_slice({k}, {processes})"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for k in range(processes)]
        for child in children:
            child.wait()
    _import_all()
    for fn in _WARMUPS:
        fn()
    return len(_WARMUPS)
