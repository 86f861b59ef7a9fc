"""The mutant corpus: plausible kernel bugs, each written in an op's canonical signature.

A verdict is only worth what it can catch.  Every mutant here is a small, realistic deviation from an
op's math (a sign flip, Euler instead of exp, a dropped skip, a scale applied twice, a wrong group
order, the output read before the state update, ...) written as a candidate for ``refimpl verify``.
:func:`run_mutants` verifies each one **at default settings** (the ``ci`` profile, the op's canonical
adapter unless the mutant names one, the op's default conventions plus the conventions the mutant
claims) and counts it *killed* when the verdict is "does not conform".  ``refimpl mutants`` prints the
kill rate per op and exits 1 if any mutant survives.

Modules ``oracles/mutants/<family>.py`` register mutants with :func:`mutant`::

    @mutant("ssm.selective_scan", "softplus-before-bias", conventions={"delta_softplus": True},
            doc="Delta = softplus(delta) + bias instead of softplus(delta + bias)")
    def _softplus_before_bias(u, delta, A, B, C, D=None, z=None, delta_bias=None, ...):
        ...

A mutant imports the reference code it perturbs only from ``refimpl`` (this package is part of the
conformance layer); the oracle that judges it never does.

**Backward mutants** (modules ``oracles/mutants/grad_<family>.py``) register an explicit backward with
:func:`grad_mutant`::

    @grad_mutant("attention.fast_weights", "reverse-scan-one-step-late", doc="dW_i misses dy_i x_i^T")
    def _late(a, b_vec, x_read, W0, dy, dW_last):       # canonical inputs in op order, then cotangents
        ...
        return {"a": da, "b_vec": db, "x_read": dx, "W0": dW0}   # or a tuple in the GradSpec's wrt order

Its forward is the op's correct reference; :func:`run_mutants` verifies it with ``grad=True, grad_fn=<the
mutant>, forward=False`` and counts it killed when the **gradient** verdict fails.  ``refimpl mutants`` counts
the two kinds apart ("forward 191/191, backward 12/12").
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["Mutant", "MutantResult", "mutant", "grad_mutant", "all_mutants", "run_mutants", "import_errors",
           "reference_candidate"]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One plausible bug: ``fn`` is a candidate for ``op`` in the op's canonical signature (or ``adapter``'s)."""

    op: str
    name: str
    fn: Callable
    doc: str
    conventions: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    adapter: Optional[str] = None
    dtype: Sequence[str] = ("float64",)
    kind: str = "forward"  # "forward": a candidate forward; "backward": an explicit backward (grad_mutant)

    @property
    def key(self) -> str:
        return f"{self.op}:{self.name}"


@dataclasses.dataclass
class MutantResult:
    mutant: Mutant
    killed: bool
    verdict: str  # the report's first deviation, or why it survived
    time_s: float
    error: Optional[str] = None  # the harness itself failed (counts as a survivor: a verdict must exist)

    def to_dict(self) -> dict:
        return {"op": self.mutant.op, "mutant": self.mutant.name, "kind": self.mutant.kind, "doc": self.mutant.doc,
                "killed": self.killed,
                "verdict": self.verdict, "time_s": self.time_s, "error": self.error,
                "conventions": dict(self.mutant.conventions), "adapter": self.mutant.adapter}


_MUTANTS: Dict[str, Mutant] = {}
_IMPORT_ERRORS: Dict[str, str] = {}
_LOADED = False


def mutant(op: str, name: str, *, doc: str, conventions: Optional[Mapping[str, Any]] = None,
           adapter: Optional[str] = None, dtype: Sequence[str] = ("float64",)):
    """Register the decorated function as a mutant of ``op`` (``name`` unique within the op)."""

    def deco(fn: Callable) -> Callable:
        m = Mutant(op, name, fn, doc, dict(conventions or {}), adapter, tuple(dtype))
        if m.key in _MUTANTS and _MUTANTS[m.key].fn is not fn:
            raise ValueError(f"mutant {m.key} is registered twice")
        _MUTANTS[m.key] = m
        return fn

    return deco


def grad_mutant(op: str, name: str, *, doc: str, conventions: Optional[Mapping[str, Any]] = None,
                adapter: Optional[str] = None, dtype: Sequence[str] = ("float64",)):
    """Register the decorated function as a backward mutant of ``op``: an explicit backward in the canonical
    protocol ``fn(*canonical inputs in op order, *cotangents in output order) -> {input: grad}`` (or a tuple in
    the ``GradSpec``'s ``wrt`` order).  Killed when ``verify(..., grad_fn=fn)`` judges its gradient wrong."""

    def deco(fn: Callable) -> Callable:
        m = Mutant(op, name, fn, doc, dict(conventions or {}), adapter, tuple(dtype), kind="backward")
        if m.key in _MUTANTS and _MUTANTS[m.key].fn is not fn:
            raise ValueError(f"mutant {m.key} is registered twice")
        _MUTANTS[m.key] = m
        return fn

    return deco


def reference_candidate(op: str) -> Callable:
    """The op's correct reference as a candidate in the canonical signature (the forward of a backward mutant)."""
    from oracles.verify import get_op

    spec = get_op(op)
    if spec.reference is None:
        raise ValueError(f"op {op} has no reference: its backward mutants have no forward")
    names = [a.name for a in spec.inputs]
    outs = [a.name for a in (spec.returns or spec.outputs)]

    def forward(*args, **conv_kw):
        inp = dict(zip(names, args))
        for k in names[len(args):]:
            inp.setdefault(k, None)
        out = spec.reference(inp, forward.conventions)
        vals = tuple(out.get(k) for k in outs)
        return vals if len(vals) > 1 else vals[0]

    forward.conventions = spec.resolve_conventions({})
    forward.__name__ = f"reference_{op.replace('.', '_')}"
    return forward


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{mod.name}")
        except Exception as exc:  # a broken module is a reported gap, never a silent one
            _IMPORT_ERRORS[mod.name] = f"{type(exc).__name__}: {exc}"


def import_errors() -> Dict[str, str]:
    _load()
    return dict(_IMPORT_ERRORS)


def all_mutants(op: Optional[str] = None, *, kind: Optional[str] = None) -> List[Mutant]:
    """Every registered mutant (of ``op``, or of every op whose name starts with ``op + '.'``); ``kind``:
    ``"forward"`` (candidates for the forward verdict) or ``"backward"`` (explicit backwards, judged by ``--grad``)
    only, ``None`` both."""
    _load()
    if kind not in (None, "forward", "backward"):
        raise ValueError(f"kind: expected None, 'forward' or 'backward', got {kind!r}")
    ms = sorted(_MUTANTS.values(), key=lambda m: (m.op, m.name))
    if kind is not None:
        ms = [m for m in ms if m.kind == kind]
    if op is None:
        return ms
    return [m for m in ms if m.op == op or m.op.startswith(op + ".")]


def run_mutants(op: Optional[str] = None, *, names: Optional[Sequence[str]] = None,
                profile: str = "ci", seed: int = 0, kinds: Sequence[str] = ("forward", "backward")
                ) -> List[MutantResult]:
    """Verify every mutant (of ``op``; only ``names`` if given; of the ``kinds`` asked) at default settings;
    killed = does not conform (a backward mutant: its gradient verdict fails)."""
    from oracles.verify import verify

    results = []
    for m in all_mutants(op):
        if names is not None and m.name not in names and m.key not in names:
            continue
        if m.kind not in kinds:
            continue
        t0 = time.perf_counter()
        try:
            if m.kind == "backward":
                fwd = reference_candidate(m.op)
                rep = verify(m.op, fwd, adapter=m.adapter, conventions=dict(m.conventions), dtype=list(m.dtype),
                             profile=profile, seed=seed, candidate_name=m.key, grad=True, grad_fn=m.fn,
                             forward=False, probes=False)
            else:
                rep = verify(m.op, m.fn, adapter=m.adapter, conventions=dict(m.conventions), dtype=list(m.dtype),
                             profile=profile, seed=seed, candidate_name=m.key)
        except Exception as exc:
            results.append(MutantResult(m, False, "the harness raised", time.perf_counter() - t0,
                                        error="".join(traceback.format_exception_only(type(exc), exc)).strip()))
            continue
        if rep.passed:
            verdict = "SURVIVED: reported as conforming"
        else:
            devs = rep.deviations()
            verdict = devs[0] if devs else "does not conform"
        results.append(MutantResult(m, not rep.passed, verdict, time.perf_counter() - t0))
    return results


def kill_table(results: Sequence[MutantResult]) -> List[Dict[str, Any]]:
    """Per op: mutants, killed, rate."""
    ops: Dict[str, List[MutantResult]] = {}
    for r in results:
        ops.setdefault(r.mutant.op, []).append(r)
    return [{"op": o, "mutants": len(rs), "killed": sum(r.killed for r in rs),
             "rate": sum(r.killed for r in rs) / len(rs),
             "forward": sum(r.mutant.kind == "forward" for r in rs),
             "forward_killed": sum(r.killed for r in rs if r.mutant.kind == "forward"),
             "backward": sum(r.mutant.kind == "backward" for r in rs),
             "backward_killed": sum(r.killed for r in rs if r.mutant.kind == "backward")}
            for o, rs in sorted(ops.items())]
