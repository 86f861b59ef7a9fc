"""Numba plumbing: a warm-up registry so JIT compilation happens once, up front.

Kernel modules decorate a tiny function with :func:`warmup`; it calls each
kernel on the smallest inputs of every signature the kernel is used with.
The test suite calls :func:`warm_all` once per session (a fixture), so JIT
time never counts against a Hypothesis deadline, and ``bench`` calls it
before timing.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, List

_WARMUPS: List[Callable[[], None]] = []


def warmup(fn: Callable[[], None]) -> Callable[[], None]:
    _WARMUPS.append(fn)
    return fn


def warm_all() -> int:
    """Import every ``refimpl`` module and run every registered warm-up; return how many ran."""
    import refimpl

    for mod in pkgutil.walk_packages(refimpl.__path__, prefix="refimpl."):
        if mod.name.rsplit(".", 1)[-1] == "cuda":  # numba.cuda kernels: imported only when backend="cuda" is asked
            continue
        importlib.import_module(mod.name)
    for fn in _WARMUPS:
        fn()
    return len(_WARMUPS)
