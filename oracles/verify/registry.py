"""The op-spec registry: what an operation computes, its canonical layout, and its conventions.

An :class:`OpSpec` declares, for one operation (``ssm.discretize``,
``ssm.selective_scan``, ``attention.softmax``, ...):

* its **signature** in the canonical layout: the inputs and outputs, each an
  :class:`Arg` with an einops-style shape (``"b l h m"``);
* every **convention** as a named parameter (:class:`Convention`): the
  discretization of ``B``, the real-output convention, the causal alignment,
  where the scale and epsilon go, the state orientation, ...  A candidate is
  always verified *under named conventions*; nothing is implicit;
* the **oracle** (independent of the code it checks; lives in ``oracles/``),
  computing float64 outputs from the inputs;
* the **bounds** (from :mod:`oracles.tolerance`) for float64/float32 candidates;
* our **reference** (``refimpl``), used *only* for the low-precision baseline
  rule, never as ground truth;
* the **cases**: golden and edge cases, a seeded NumPy sampler and, when
  Hypothesis is installed, a Hypothesis strategy;
* optional **probes** (structural properties such as causality) that catch
  deviations a single comparison cannot explain.

Op specs live in ``oracles/verify/ops_<family>.py`` and register themselves
with :func:`register_op`; :func:`get_op` imports every such module on first use.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Arg", "Convention", "Case", "Probe", "ProbeDtype", "OpSpec", "register_op", "get_op", "list_ops", "infer_dims"]


@dataclasses.dataclass(frozen=True)
class Arg:
    """One input or output of an op in its canonical layout.

    ``shape`` is einops-style (``"b l h m"``; ``""`` for a scalar).  Alternatives
    separated by ``|`` (``"h n n | h n"``) are tried in order by number of axes.
    ``kind``: ``"float"`` (real or complex floating data, cast to the candidate's
    dtype), ``"int"`` (index data such as ``seq_idx``, never cast), or
    ``"bool"`` (masks).
    """

    name: str
    shape: str
    doc: str = ""
    optional: bool = False
    kind: str = "float"

    def alternatives(self) -> List[List[str]]:
        return [alt.split() for alt in self.shape.split("|")]

    def pattern_for(self, ndim: int) -> Optional[List[str]]:
        for alt in self.alternatives():
            if len(alt) == ndim:
                return alt
        return None


@dataclasses.dataclass(frozen=True)
class Convention:
    """A named convention with its allowed values (``choices=None``: any value of ``default``'s type)."""

    name: str
    default: Any
    doc: str
    choices: Optional[Tuple[Any, ...]] = None
    layout: bool = False  # True: it only changes how arrays are laid out for the candidate (e.g. a state's
    #                       orientation), never what the candidate is asked to compute

    def check(self, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"convention {self.name}: expected one of {list(self.choices)}, got {value!r}")
        return value


@dataclasses.dataclass
class Case:
    """One verification case: canonical float64 inputs (or int/bool), the conventions, and where it came from."""

    op: str
    case_id: str
    kind: str  # "golden" | "edge" | "random" | "hypothesis"
    inputs: Dict[str, Any]
    conventions: Dict[str, Any]
    seed: Optional[int] = None
    note: str = ""
    flags: Tuple[str, ...] = ()

    def shapes(self) -> Dict[str, list]:
        return {k: list(np.shape(v)) for k, v in self.inputs.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class ProbeDtype:
    """What a probe needs to run the candidate in one requested dtype (the harness builds it).

    ``cast(inputs)``: canonical float64 inputs -> the candidate's dtype (as the cases are cast);
    ``upcast(inputs)``: those cast inputs back to float64, losslessly (what the oracle sees);
    ``bounds(inputs_up, oracle_out)``: each output's derived bound in this dtype (for float16/bfloat16
    the same-dtype baseline rule), as :func:`oracles.verify.verify` applies it to the cases.
    """

    name: str
    cast: Callable[[Mapping[str, Any]], Dict[str, Any]]
    upcast: Callable[[Mapping[str, Any]], Dict[str, Any]]
    bounds: Callable[[Mapping[str, Any], Mapping[str, Any]], Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Probe:
    """A structural check run on the candidate beside the value comparison.

    ``run(call, spec, conv, rng) -> (ok, message)`` where ``call(inputs) -> outputs``
    runs the candidate (through its adapter and framework) on canonical inputs.
    With ``per_dtype=True`` the probe runs once per requested dtype and is called as
    ``run(call, spec, conv, rng, dtype=ProbeDtype)``: it casts its inputs with ``dtype.cast`` and
    judges with ``dtype.bounds`` (a float32-only kernel is probed in float32, under float32's bound).
    Example: causality -- perturbing inputs at later positions must not change
    earlier outputs.
    """

    name: str
    doc: str
    run: Callable[..., Tuple[bool, str]]
    applies: Callable[[Mapping[str, Any]], bool] = lambda conv: True
    per_dtype: bool = False


@dataclasses.dataclass
class OpSpec:
    name: str
    summary: str
    inputs: Tuple[Arg, ...]
    outputs: Tuple[Arg, ...]
    conventions: Tuple[Convention, ...]
    oracle: Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, np.ndarray]]
    bounds: Callable[..., Dict[str, Any]]  # (inputs, oracle_out, conventions, dtype) -> {output: Bound}
    cases: Callable[[Dict[str, Any]], List[Case]]  # golden + edge cases for these conventions
    sample: Callable[[np.random.Generator, Dict[str, Any]], Dict[str, Any]]  # one seeded random input set
    reference: Optional[Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, np.ndarray]]] = None
    strategy: Optional[Callable[[Dict[str, Any]], Any]] = None  # conventions -> hypothesis strategy of input dicts
    probes: Tuple[Probe, ...] = ()
    lowp: bool = True  # whether float16/bfloat16 candidates are meaningful
    complex_inputs: Tuple[str, ...] = ()  # inputs that may be complex (kept complex, never cast to a real lowp dtype)
    notes: str = ""
    module: str = ""
    returns: Optional[Tuple[Arg, ...]] = None  # what the candidate returns, when it differs from ``outputs``
    derive: Optional[Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = None  # returns -> outputs

    def convention(self, name: str) -> Convention:
        for c in self.conventions:
            if c.name == name:
                return c
        raise KeyError(f"op {self.name} has no convention {name!r}; it has {[c.name for c in self.conventions]}")

    def resolve_conventions(self, given: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Defaults overridden by ``given``; unknown names or values raise ``ValueError``."""
        given = dict(given or {})
        known = {c.name for c in self.conventions}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"op {self.name}: unknown convention(s) {unknown}; known: {sorted(known)}")
        out = {}
        for c in self.conventions:
            out[c.name] = c.check(given.get(c.name, c.default))
        return out

    def signature(self) -> str:
        ins = ", ".join(f"{a.name}{'?' if a.optional else ''}: ({a.shape})" for a in self.inputs)
        outs = ", ".join(f"{a.name}{'?' if a.optional else ''}: ({a.shape})" for a in self.outputs)
        return f"{self.name}({ins}) -> ({outs})"

    def describe(self) -> str:
        from oracles.verify.adapters import adapters_for

        lines = [f"{self.name}: {self.summary}", f"  signature: {self.signature()}"]
        if self.returns:
            lines.append("  the candidate returns: " + ", ".join(f"{a.name} ({a.shape})" for a in self.returns)
                         + " (the harness derives the compared outputs)")
        for c in self.conventions:
            ch = f" in {list(c.choices)}" if c.choices is not None else ""
            lines.append(f"  convention {c.name} = {c.default!r}{ch}: {c.doc}")
        for p in self.probes:
            lines.append(f"  probe {p.name}: {p.doc}")
        lines.append("  adapter canonical: the signature above, inputs positionally in order, outputs as a tuple")
        for a in adapters_for(self.name):
            lines.append(f"  adapter {a.name}: {a.doc}")
        if self.notes:
            lines.append(f"  notes: {self.notes}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        from oracles.verify.adapters import adapters_for

        return {
            "op": self.name,
            "summary": self.summary,
            "inputs": [dataclasses.asdict(a) for a in self.inputs],
            "outputs": [dataclasses.asdict(a) for a in self.outputs],
            "conventions": [
                {"name": c.name, "default": c.default, "choices": None if c.choices is None else list(c.choices),
                 "doc": c.doc}
                for c in self.conventions
            ],
            "probes": [{"name": p.name, "doc": p.doc} for p in self.probes],
            "adapters": [a.name for a in adapters_for(self.name)],
            "low_precision": self.lowp,
        }


_OPS: Dict[str, OpSpec] = {}
_LOADED = False


def register_op(spec: OpSpec) -> OpSpec:
    if spec.name in _OPS and _OPS[spec.name] is not spec:
        raise ValueError(f"op {spec.name} is registered twice ({_OPS[spec.name].module} and {spec.module})")
    _OPS[spec.name] = spec
    return spec


def _load_all() -> None:
    """Import every ``oracles/verify/ops_*.py`` (an op module that fails to import is reported, not hidden)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import oracles.verify as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("ops_"):
            try:
                importlib.import_module(f"oracles.verify.{mod.name}")
            except ImportError as exc:  # a family module not yet present: its ops are unavailable
                _IMPORT_ERRORS[mod.name] = f"{type(exc).__name__}: {exc}"


_IMPORT_ERRORS: Dict[str, str] = {}


def import_errors() -> Dict[str, str]:
    _load_all()
    return dict(_IMPORT_ERRORS)


def get_op(name: str) -> OpSpec:
    _load_all()
    if name not in _OPS:
        extra = f" (op modules that failed to import: {_IMPORT_ERRORS})" if _IMPORT_ERRORS else ""
        raise ValueError(f"op: expected one of {sorted(_OPS)}, got {name!r}{extra}")
    return _OPS[name]


def list_ops() -> List[OpSpec]:
    _load_all()
    return [_OPS[k] for k in sorted(_OPS)]


def infer_dims(args: Sequence[Arg], values: Mapping[str, Any]) -> Dict[str, int]:
    """Sizes of the named axes from the canonical inputs (``ValueError`` on a contradiction)."""
    dims: Dict[str, int] = {}
    for a in args:
        v = values.get(a.name)
        if v is None:
            continue
        shape = np.shape(v)
        pat = a.pattern_for(len(shape))
        if pat is None:
            raise ValueError(f"{a.name}: expected shape ({a.shape}), got {shape}")
        for ax, s in zip(pat, shape):
            if ax.isdigit():
                if int(ax) != s:
                    raise ValueError(f"{a.name}: expected axis of size {ax}, got {shape}")
                continue
            if ax in dims and dims[ax] != s:
                raise ValueError(f"{a.name}: axis {ax} has size {s}, but another input says {dims[ax]}")
            dims[ax] = int(s)
    return dims
