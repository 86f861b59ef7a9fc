"""The conformance checks behind ``refimpl report``.

Each module in this package registers check functions with :func:`check`.  A
check runs one algorithm (one or more views/backends) on embedded default
inputs, computes the oracle by independent means, and returns a list of
:class:`Row` built with :func:`row`.  ``refimpl report`` imports every module
here (discovery by ``pkgutil``), runs every check and prints the rows.

Adding a family = adding a module ``oracles/checks/<family>.py``; nothing
else needs editing.

Checks of the numba.cuda kernels go through :func:`oracles.checks._cuda.cuda_check`: they run on a
device when one is present, else under the CUDA simulator (in a subprocess when this process imported
numba without it), else they come back as rows with ``skipped`` set to the reason.

Row fields: ``op`` is a dotted name ``family.algorithm[.variant]`` (e.g.
``ssm.discretize.zoh``); ``impl`` is ``backend/view`` (e.g.
``reference/recurrent``, ``numba/fft``) so a reader can find the code.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
import traceback
from typing import Callable, List, Optional

from oracles.tolerance import Comparison

_REGISTRY: List[Callable[[], List["Row"]]] = []


@dataclasses.dataclass
class Row:
    op: str
    impl: str
    dtype: str
    max_abs_err: float
    max_rel_err: float
    bound: float
    passed: bool
    time_s: float
    bound_source: str = ""
    note: str = ""
    worst_ratio: float = 0.0
    skipped: str = ""  # non-empty: the row did not run, and this says why (printed SKIP; not a failure)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def row(op: str, impl: str, cmp: Comparison, time_s: float, note: str = "") -> Row:
    """A report row from a :class:`~oracles.tolerance.Comparison`."""
    return Row(
        op=op,
        impl=impl,
        dtype=cmp.dtype,
        max_abs_err=cmp.max_abs_err,
        max_rel_err=cmp.max_rel_err,
        bound=cmp.bound,
        passed=cmp.passed,
        time_s=time_s,
        bound_source=cmp.bound_source,
        note=note or cmp.message,
        worst_ratio=cmp.worst_ratio,
    )


def skipped_row(op: str, impl: str, reason: str) -> Row:
    """A row that could not run here (e.g. a ``cuda/...`` row without numba.cuda): listed with the reason,
    never silently absent; it does not fail the report."""
    nan = float("nan")
    return Row(op=op, impl=impl, dtype="-", max_abs_err=nan, max_rel_err=nan, bound=nan, passed=False,
               time_s=0.0, note=reason, skipped=reason)


def check(fn: Callable[[], List[Row]]) -> Callable[[], List[Row]]:
    """Decorator: register a check function for ``refimpl report``."""
    _REGISTRY.append(fn)
    return fn


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call (after the caller warmed any JIT)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def discover() -> List[Callable[[], List[Row]]]:
    """Import every module of this package; return the registered checks.

    A module that fails to import becomes one failing check (its rows are missing, and the
    report must say so rather than pass without them).
    """
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{mod.name}")
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {exc}"

            def failed(name=mod.name, msg=msg):
                return [Row(op=f"checks.{name}", impl="import failed", dtype="-", max_abs_err=float("nan"),
                            max_rel_err=float("nan"), bound=float("nan"), passed=False, time_s=0.0, note=msg)]

            if not any(getattr(f, "_failed_module", None) == mod.name for f in _REGISTRY):
                failed._failed_module = mod.name
                _REGISTRY.append(failed)
    return list(_REGISTRY)


def run_all(select: Optional[str] = None) -> List[Row]:
    """Run every registered check (optionally those whose rows' op starts with ``select``)."""
    rows: List[Row] = []
    for fn in discover():
        name = f"{fn.__module__}.{fn.__name__}"
        try:
            out = fn()
        except Exception as exc:  # a crashing check is a failing row, never a silent skip
            tb = traceback.format_exc(limit=3)
            out = [Row(op=name, impl="check crashed", dtype="-", max_abs_err=float("nan"), max_rel_err=float("nan"),
                       bound=float("nan"), passed=False, time_s=0.0, note=f"{type(exc).__name__}: {exc} | {tb}")]
        for r in out:
            if select is None or r.op.startswith(select):
                rows.append(r)
    return rows
