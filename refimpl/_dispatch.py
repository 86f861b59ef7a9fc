"""One entry point per algorithm: ``fn(..., view=..., backend=...)``.

Every family's entry point (``refimpl.ssm.selective_scan``, ``refimpl.attention.linear_attention``, ...)
looks its implementation up in an :class:`Implementations` table keyed by ``(view, backend)``.
Implementations are named lazily as ``"module:function"`` strings, so ``import refimpl`` never
imports Numba kernels or numba.cuda until they are used.  An unsupported pair is a ``ValueError``
that lists every pair that exists.

The vocabulary (see ``docs/glossary.md``): ``view`` names the formulation (``recurrent``, ``scan``,
``chunked``, ``quadratic``, ``convolution``, ``fft``, ...); ``backend`` names the implementation:
``"numpy"`` (the literal reference), ``"numba"`` (the CPU kernel) or ``"cuda"`` (the numba.cuda kernel).
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

BACKENDS = ("numpy", "numba", "cuda")

Impl = Union[str, Callable]


class Implementations:
    """The ``(view, backend) -> implementation`` table of one algorithm.

    ``algorithm`` is the public name (``"refimpl.ssm.selective_scan"``), used in error messages.
    ``table`` maps ``(view, backend)`` to a callable or a lazy ``"package.module:function"`` string.
    """

    def __init__(self, algorithm: str, table: Dict[Tuple[str, str], Impl]):
        for (view, backend) in table:
            if backend not in BACKENDS:
                raise ValueError(f"{algorithm}: backend {backend!r} is not one of {BACKENDS}")
        self.algorithm = algorithm
        self._table = dict(table)
        self._cache: Dict[Tuple[str, str], Callable] = {}

    @property
    def views(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(v for v, _ in self._table))

    @property
    def backends(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(b for _, b in self._table))

    def pairs(self) -> Tuple[Tuple[str, str], ...]:
        return tuple(self._table)

    def backends_for(self, view: str) -> Tuple[str, ...]:
        return tuple(b for v, b in self._table if v == view)

    def describe(self) -> str:
        return ", ".join(f"{v}/{b}" for v, b in self._table)

    def get(self, view: str, backend: str) -> Callable:
        """The implementation of ``(view, backend)``, or a ``ValueError`` listing what exists."""
        for value, name in ((view, "view"), (backend, "backend")):
            if not isinstance(value, str):
                raise TypeError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        if view not in self.views:
            raise ValueError(f"view: {self.algorithm} has views {', '.join(map(repr, self.views))}; "
                             f"got {view!r} (view/backend pairs: {self.describe()})")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        key = (view, backend)
        if key not in self._table:
            raise ValueError(f"backend: {self.algorithm} has no {backend!r} backend for view {view!r} "
                             f"(backends for {view!r}: {', '.join(map(repr, self.backends_for(view)))}; "
                             f"all view/backend pairs: {self.describe()})")
        if key not in self._cache:
            impl = self._table[key]
            if isinstance(impl, str):
                mod, _, attr = impl.partition(":")
                impl = getattr(importlib.import_module(mod), attr)
            self._cache[key] = impl
        return self._cache[key]


_REGISTRY: Dict[str, Implementations] = {}


def register(algorithm: str, table: Dict[Tuple[str, str], Impl]) -> Implementations:
    """Create and record the table of one algorithm (``refimpl.entry_points()`` lists them)."""
    impls = Implementations(algorithm, table)
    _REGISTRY[algorithm] = impls
    return impls


def registered() -> Dict[str, Implementations]:
    return dict(_REGISTRY)
