r"""``verify(op, candidate, ...) -> Report`` and ``assert_conforms(...)``.

For every case (golden, edge, and random: drawn from the op's Hypothesis
strategy when Hypothesis is installed, else from its seeded NumPy sampler) and
every requested dtype:

1. the canonical float64 inputs are cast to the candidate's dtype (complex data
   to complex64/complex128; index data untouched);
2. the oracle runs on those inputs cast back up *losslessly* (so input rounding
   is never part of the budget -- :mod:`oracles.tolerance`'s convention);
3. the candidate runs through its adapter, in its framework (arrays converted
   through DLPack; a framework is imported only when asked for);
4. each output is compared with :func:`oracles.tolerance.compare` under the op's
   derived bound (float64/float32), or, for float16/bfloat16, the same-dtype
   baseline rule :func:`oracles.tolerance.baseline_bound` with our reference as
   the baseline and the op's componentwise float32 bound as the magnitude each
   entry's error scales with; the candidate's error is also reported as a
   multiple of the baseline's (``max |err_i| / M_i``, the rule's own metric).
   Our reference must first pass its own float32 bound on the same case (else
   the case is skipped, saying so: no baseline), and where the float32 bound
   cannot serve as a magnitude (one number, zeros, or it failed) the normwise
   fallback is named in the output's result;
5. a failing case is *diagnosed*: the harness re-runs the oracle under each
   alternative value of each convention and says under which one the
   candidate would conform (the usual cause of a mismatch is a convention, not
   a bug) and, with ``save_failures``, writes the inputs and outputs to an
   ``.npz`` with a script that reruns the case.

Probes declared by the op (causality, row locality, ...) run once per
requested dtype, on inputs cast to that dtype and under that dtype's bounds
(a probe that is not dtype-aware runs once, on float64 inputs).

What the report says about each run: the dtype each output came back in (an
output in lower precision than asked for is named as such; a JAX candidate asked
for float64 runs with ``jax_enable_x64`` on, and the report says so); the warnings
raised while a case ran (attached to that case, never printed bare); an optional
output whose place in the return value held ``None`` (asked for, not computed)
fails the case.  Every call of the candidate runs under a time limit
(``timeout``, 60 s by default): a call that does not return is reported with its
case and abandoned (a Python thread cannot be killed: it may still be running
when the verification ends), and the run goes on.  Hypothesis' files go to
:func:`cache_dir` (``$XDG_CACHE_HOME/refimpl/hypothesis``), never ``.hypothesis/``
in the caller's folder.

The low-precision baseline: our reference cannot run its arithmetic in
float16/bfloat16 (NumPy has no bfloat16 einsum/solve), so "our reference in
the candidate's dtype" is our reference run in float32 arithmetic on the
dtype's (exactly representable) inputs with its outputs rounded to the dtype --
the arithmetic of a kernel that stores in low precision and accumulates in
float32, which is what float16/bfloat16 kernels do.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import threading
import traceback
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from oracles.tolerance import Comparison, baseline_bound, compare
from oracles.verify.adapters import Adapter, Outputs, get_adapter
from oracles.verify.frameworks import (lowp_dtype, parse_framework, precision_note, precision_scope, to_framework,
                                       to_numpy)
from oracles.verify.registry import (Case, DeclaredDomain, OpSpec, ProbeDtype, case_key, case_sizes, get_op,
                                     infer_dims, seeded_strategy)
from oracles.verify.report import CaseResult, OutputResult, ProbeResult, Report, load_case, save_case

__all__ = ["verify", "assert_conforms", "generate_cases", "split_domain", "strategy_for", "resolve_candidate",
           "rerun_case", "PROFILES",
           "DTYPES", "CandidateCall", "CandidateTimeout", "DEFAULT_TIMEOUT", "cache_dir"]

PROFILES = {"ci": 10, "thorough": 200}
DTYPES = ("float64", "float32", "float16", "bfloat16")
LOWP = ("float16", "bfloat16")
DEFAULT_TIMEOUT = 60.0  # seconds per call of the candidate


class _Skip(Exception):
    pass


class CandidateTimeout(Exception):
    """A call of the candidate did not return within the time limit (it was abandoned, not stopped)."""


def cache_dir() -> str:
    """Where the harness keeps files: ``$REFIMPL_CACHE_DIR``, else ``$XDG_CACHE_HOME/refimpl``, else ``~/.cache/refimpl``."""
    explicit = os.environ.get("REFIMPL_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "refimpl")


@contextlib.contextmanager
def _hypothesis_home() -> Iterator[None]:
    """Hypothesis writes its files (the constants cache, the example database) under ``cache_dir()/hypothesis``
    while the harness draws, then the caller's setting is restored.  ``HYPOTHESIS_STORAGE_DIRECTORY``, when set,
    is the user's choice and is kept."""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    import hypothesis.configuration as hconf

    key = "__hypothesis_home_directory"  # module-level: no name mangling
    before = hconf.__dict__.get(key)
    hconf.set_hypothesis_home_dir(os.path.join(cache_dir(), "hypothesis"))
    try:
        yield
    finally:
        hconf.__dict__[key] = before


def _call_with_time_limit(fn: Callable[[], Any], timeout: Optional[float]) -> Any:
    """``fn()`` in a worker thread, waiting at most ``timeout`` seconds (``None``/``0``: inline, no limit)."""
    if not timeout:
        return fn()
    box: Dict[str, Any] = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=work, name="refimpl-verify-candidate", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CandidateTimeout(f"the candidate did not return within {timeout:g} s; the call was abandoned "
                               "(a Python thread cannot be killed: it may still be running)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _format_warning(w: warnings.WarningMessage) -> str:
    return f"{w.category.__name__}: {w.message} (at {w.filename}:{w.lineno})"


@contextlib.contextmanager
def _collect_warnings(into: List[str]) -> Iterator[None]:
    """Record every warning raised inside (the candidate's worker thread included) into ``into``, counted."""
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            counts: Dict[str, int] = {}
            for w in log:
                text = _format_warning(w)
                counts[text] = counts.get(text, 0) + 1
            into.extend(t if n == 1 else f"{t} [x{n}]" for t, n in counts.items())


def resolve_candidate(spec: str) -> Callable:
    """``"package.module:function"`` (or ``module:Class.method``) -> the callable."""
    if ":" not in spec:
        raise ValueError(f"candidate: expected MODULE:FUNCTION, got {spec!r}")
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and mod_name.split(".")[0] == exc.name.split(".")[0]:
            raise ModuleNotFoundError(f"candidate: no module named {exc.name!r} (searched the current directory "
                                      f"{os.getcwd()} and sys.path)", name=exc.name) from None
        raise
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"candidate: {spec} is not callable ({type(obj).__name__})")
    return obj


def _candidate_name(candidate: Callable) -> str:
    mod = getattr(candidate, "__module__", None) or type(candidate).__module__
    qn = getattr(candidate, "__qualname__", None) or getattr(candidate, "__name__", None) or type(candidate).__name__
    return f"{mod}:{qn}"


# -- cases ------------------------------------------------------------------------------------------------

def _hypothesis_inputs(spec: OpSpec, conv: Dict[str, Any], n: int, seed: int) -> Optional[List[Dict[str, Any]]]:
    """``n`` input dicts drawn from the op's Hypothesis strategy (None if Hypothesis or a strategy is missing)."""
    if spec.strategy is None:
        return None
    try:
        import hypothesis
        from hypothesis import HealthCheck, Phase, given, settings
    except ImportError:
        return None
    strategy = spec.strategy(conv)
    if strategy is None:
        return None
    drawn: List[Dict[str, Any]] = []

    @hypothesis.seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(inp):
        if len(drawn) < n:
            drawn.append(inp)

    with _hypothesis_home():
        collect()
    return drawn


def strategy_for(op: Union[str, OpSpec], conventions: Optional[Mapping[str, Any]] = None):
    """The Hypothesis strategy of canonical input dicts for ``op`` under ``conventions``, for users' own suites.

    >>> @given(strategy_for("ssm.selective_scan", {"delta_softplus": True}))
    ... def test_my_kernel(inputs): ...
    """
    spec = op if isinstance(op, OpSpec) else get_op(op)
    conv = spec.resolve_conventions(conventions)
    if spec.strategy is not None:
        st = spec.strategy(conv)
        if st is not None:
            return st
    return seeded_strategy(spec.sample, conv)


MAX_EMPTY_FRACTION = 10  # at most one random case in ten has a sequence of length 0
_REDRAWS = 8  # attempts at a random case that is not a duplicate


def _as_domain(spec: OpSpec, domain: Union[None, Mapping[str, Any], DeclaredDomain]) -> DeclaredDomain:
    return domain if isinstance(domain, DeclaredDomain) else spec.resolve_domain(domain)


def split_domain(cases: Iterable[Case], domain: DeclaredDomain) -> Tuple[List[Case], List[Tuple[Case, str]]]:
    """The cases inside the declared domain, and those outside with the reason."""
    inside, outside = [], []
    for c in cases:
        try:
            why = domain.violation(c.inputs)
        except ValueError:  # shapes that contradict the signature: run, and the candidate call reports them
            why = None
        if why is None:
            inside.append(c)
        else:
            outside.append((c, why))
    return inside, outside


def _own_case(spec: OpSpec, inputs: Mapping[str, Any], case_id: str) -> None:
    """A drawn case must fit the op's own signature: else the op spec (its sampler or strategy) is at fault."""
    try:
        case_sizes(spec, inputs)
    except ValueError as exc:
        raise RuntimeError(f"op {spec.name}: the harness drew {case_id}, which does not fit the op's own signature "
                           f"({exc}): a bug of the op spec's sampler or strategy, not of the candidate") from None


def _random_cases(spec: OpSpec, conv: Dict[str, Any], n: int, seed: int, dom: DeclaredDomain,
                  seen: set) -> List[Case]:
    """``n`` random cases inside the declared domain, none a duplicate of another case (``seen``: content keys),
    at most ``n // 10`` of them with an empty sequence.  Drawn from the op's Hypothesis strategy when there is
    one, else from its seeded sampler; a draw outside the domain, with an empty sequence past the quota, or
    already seen is redrawn by the sampler (seeded ``[seed, i, attempt]``), never dropped."""
    drawn = _hypothesis_inputs(spec, conv, n, seed)
    empty_left = n // MAX_EMPTY_FRACTION
    out: List[Case] = []
    for i in range(n):
        if drawn is not None and i < len(drawn):
            inp, kind, cid = drawn[i], "hypothesis", f"hypothesis-{i}"
            note = f"Hypothesis example {i} with @seed({seed})"
        else:
            inp = spec.sample(np.random.default_rng([seed, i]), conv)
            kind, cid, note = "random", f"random-{i}", f"np.random.default_rng([{seed}, {i}])"
        for attempt in range(1, _REDRAWS + 1):
            _own_case(spec, inp, cid)
            inp, how = dom.fit(inp, np.random.default_rng([seed, i, attempt]), conv,
                               min_length=0 if empty_left > 0 else 1)
            if how:
                note += f"; {how} (np.random.default_rng([{seed}, {i}, {attempt}]))"
            key = case_key(inp)
            if key not in seen:
                break
            note += f"; a duplicate of an earlier case, redrawn by np.random.default_rng([{seed}, {i}, {attempt}, 0])"
            inp = spec.sample(np.random.default_rng([seed, i, attempt, 0]), conv)
        else:
            continue  # every redraw repeated an earlier case: the op's space of inputs is smaller than n
        seen.add(key)
        if dom.length(case_sizes(spec, inp)) == 0:
            empty_left -= 1
        out.append(Case(spec.name, cid, kind, inp, dict(conv), seed=seed, note=note))
    return out


def generate_cases(spec: OpSpec, conv: Dict[str, Any], *, profile: str = "ci", max_examples: Optional[int] = None,
                   seed: int = 0, kinds: Iterable[str] = ("golden", "edge", "random"),
                   domain: Union[None, Mapping[str, Any], DeclaredDomain] = None,
                   outside: Optional[List[Tuple[Case, str]]] = None) -> List[Case]:
    """The op's golden and edge cases for ``conv`` plus ``max_examples`` random ones (``profile``'s count by default).

    ``domain``: what the candidate declared it refuses (``{"min_length": 1}``, see ``refimpl ops OP``).  Golden
    and edge cases outside it are dropped (appended to ``outside`` as ``(case, reason)`` when a list is given);
    random cases are drawn inside it.  Random cases never repeat a case, and at most one in ten has an empty
    sequence.
    """
    kinds = tuple(kinds)
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {profile!r}")
    dom = _as_domain(spec, domain)
    cases, dropped = split_domain([c for c in spec.cases(conv) if c.kind in kinds], dom)
    if outside is not None:
        outside.extend(dropped)
    n = PROFILES[profile] if max_examples is None else int(max_examples)
    if "random" in kinds and n > 0:
        cases += _random_cases(spec, conv, n, seed, dom, {case_key(c.inputs) for c in cases})
    return cases


# -- running the candidate --------------------------------------------------------------------------------

@dataclasses.dataclass
class CandidateCall:
    """Runs a candidate on canonical NumPy inputs; returns canonical NumPy outputs (candidate dtype)."""

    spec: OpSpec
    candidate: Callable
    adapter: Adapter
    conv: Dict[str, Any]
    framework: str = "numpy"
    device: Optional[str] = None
    timeout: Optional[float] = None  # seconds per call (None: no limit); see _call_with_time_limit
    rewrite: Optional[Callable[[list, dict], Any]] = None  # (args, kwargs) -> (args, kwargs): the diagnosis edits a call

    def __call__(self, inputs: Mapping[str, Any]) -> Dict[str, Any]:
        dims = infer_dims(self.spec.inputs, inputs)
        convert = lambda a: to_framework(a, self.framework, self.device)  # noqa: E731
        out = _call_with_time_limit(lambda: self._call(inputs, dims, convert), self.timeout)
        if self.spec.derive is not None:
            none = getattr(out, "returned_none", ())
            out = Outputs(self.spec.derive(out, dict(inputs)), returned_none=none)
        return out

    def _call(self, inputs, dims, convert) -> Dict[str, Any]:
        ax = self.adapter.vectorize
        if ax is None:
            args, kwargs = self.adapter.build_call(self.spec, inputs, self.conv, dims, convert)
            if self.rewrite is not None:
                args, kwargs = self.rewrite(args, kwargs)
            return self.adapter.read_outputs(self.spec, self.candidate(*args, **kwargs), dims, to_numpy, self.conv)
        size = dims.get(ax)
        if size is None:
            raise ValueError(f"adapter {self.adapter.name}: vectorized axis {ax!r} is not an axis of the inputs")
        per: List[Dict[str, Any]] = []
        none: set = set()
        for i in range(size):
            sl = {}
            for a in self.spec.inputs:
                v = inputs.get(a.name)
                if v is None:
                    sl[a.name] = None
                    continue
                pat = a.pattern_for(np.ndim(v))
                sl[a.name] = np.take(v, i, axis=pat.index(ax)) if pat and ax in pat else v
            args, kwargs = self.adapter.build_call(self.spec, sl, self.conv, dims, convert)
            if self.rewrite is not None:
                args, kwargs = self.rewrite(args, kwargs)
            per.append(self.adapter.read_outputs(self.spec, self.candidate(*args, **kwargs), dims, to_numpy, self.conv))
            none |= getattr(per[-1], "returned_none", set())
        out = Outputs(returned_none=none)
        for o in self.spec.outputs:
            if not per or any(o.name not in p for p in per):
                continue
            first = np.asarray(per[0][o.name])
            pat = next((alt for alt in o.alternatives() if len(alt) == first.ndim + 1 and ax in alt), None)
            if pat is None:
                raise ValueError(f"output {o.name}: cannot place the vectorized axis {ax!r} in ({o.shape})")
            out[o.name] = np.stack([np.asarray(p[o.name]) for p in per], axis=pat.index(ax))
        return out


def _cast_inputs(spec: OpSpec, inputs: Mapping[str, Any], dtype: str) -> Dict[str, Any]:
    dt = lowp_dtype(dtype)
    out: Dict[str, Any] = {}
    for a in spec.inputs:
        v = inputs.get(a.name)
        if v is None or a.kind != "float":
            out[a.name] = None if v is None else np.asarray(v)
            continue
        v = np.asarray(v)
        if np.iscomplexobj(v):
            if dtype in LOWP:
                raise _Skip(f"input {a.name} is complex: float16/bfloat16 have no complex form")
            out[a.name] = v.astype(np.complex64 if dtype == "float32" else np.complex128)
        else:
            out[a.name] = v.astype(np.float64).astype(dt)
    return out


def _upcast(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in inputs.items():
        if v is None:
            out[k] = None
            continue
        v = np.asarray(v)
        if np.iscomplexobj(v):
            out[k] = v.astype(np.complex128)
        elif v.dtype.kind in "fV" or v.dtype.name in LOWP:
            out[k] = v.astype(np.float64)
        else:
            out[k] = v
    return out


def _scaled_max_err(x, oracle, M) -> float:
    """``max_i |x_i - oracle_i| / M_i`` (``M`` None: ``max |x - oracle| / max |oracle|``), over finite entries."""
    o = np.asarray(oracle)
    if o.size == 0:
        return 0.0
    err = np.abs(np.asarray(x).astype(o.dtype if o.dtype.kind == "c" else np.float64) - o)
    if M is None:
        scale = float(np.max(np.abs(o[np.isfinite(o)]))) if np.isfinite(o).any() else 1.0
        M = np.full(o.shape, scale if scale > 0 else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(M > 0, err / M, np.where(err > 0, np.inf, 0.0))
    return float(np.max(r)) if r.size else 0.0


def _lowp_reference_inputs(inputs_up: Mapping[str, Any]) -> Dict[str, Any]:
    """The low-precision baseline's inputs: the dtype's (exactly representable) values in float32."""
    return {k: (None if v is None else (v.astype(np.float32) if v.dtype.kind == "f" else v))
            for k, v in inputs_up.items()}


def _output_bounds(spec: OpSpec, inputs_up: Mapping[str, Any], oracle_out: Mapping[str, Any], conv: Dict[str, Any],
                   dtype: str, ref_inputs: Optional[Mapping[str, Any]] = None):
    """Each output's bound in ``dtype``: ``(bounds, magnitudes, baseline errors)``.

    float64/float32: the op's derived bound.  float16/bfloat16: the same-dtype baseline rule, with our
    reference (float32 arithmetic on ``ref_inputs``, outputs rounded to the dtype) as the baseline and the op's
    componentwise float32 bound as the magnitude each entry's error scales with; the baseline's own errors
    (in the rule's metric and absolute) come back for the report.  A reference that takes ``lowp=`` (``OpSpec.
    reference(inputs, conv, lowp=)``) is run with ``lowp=dtype`` for the baseline: our reference *storing its
    intermediates in the dtype* (a scan: its state after every step), float32 arithmetic; its storing path is
    first checked at ``lowp="float32"`` (no rounding) against the float32 bound, as the plain run is.
    """
    if dtype not in LOWP:
        return spec.bounds(dict(inputs_up), dict(oracle_out), conv, np.dtype(dtype)), {}, {}
    if spec.reference is None:
        raise _Skip(f"op {spec.name} has no reference for the low-precision baseline")
    # a reference that takes ``lowp=`` stores its intermediates in the dtype (the scans: the state every step) when
    # asked: that storing run is the baseline; at lowp="float32" (no rounding) it is checked like the plain run
    import inspect

    try:
        storing = "lowp" in inspect.signature(spec.reference).parameters
    except (TypeError, ValueError):
        storing = False
    ref_path = ref_low = None
    try:
        ref_in = dict(ref_inputs if ref_inputs is not None else _lowp_reference_inputs(inputs_up))
        ref = spec.reference(dict(ref_in), conv)
        if storing:
            ref_path = spec.reference(dict(ref_in), conv, lowp="float32")
            ref_low = spec.reference(dict(ref_in), conv, lowp=dtype)
    except Exception as exc:  # no baseline for this case: say so, never guess a bound
        raise _Skip(f"our reference cannot run this case for the low-precision baseline "
                    f"({type(exc).__name__}: {exc})") from None
    bounds, base_err = {}, {}
    dt = lowp_dtype(dtype)
    # the magnitude each entry's error scales with: the op's componentwise float32 bound (proportional to
    # the computation on absolute values; the constant cancels in the baseline rule)
    try:
        b32, b32_error = spec.bounds(dict(inputs_up), dict(oracle_out), conv, np.dtype(np.float32)), ""
    except Exception as exc:
        b32, b32_error = {}, f"{type(exc).__name__}: {exc}"
    mags = {k: np.asarray(b.values, dtype=np.float64) for k, b in b32.items()}
    for name, o in oracle_out.items():
        if name not in ref:
            continue
        r = np.asarray(ref[name])
        if name in b32:
            # first, our reference (float32 arithmetic) against its own float32 bound on this very case: a
            # baseline that breaks its own bound is no baseline
            own = compare(r, o, b32[name], dtype=np.float32)
            if not own.passed:
                raise _Skip(f"our reference exceeds its own float32 bound on this case, so it cannot be the "
                            f"low-precision baseline ({name}: {own.summary()})")
            if ref_path is not None and name in ref_path:
                own = compare(np.asarray(ref_path[name]), o, b32[name], dtype=np.float32)
                if not own.passed:
                    raise _Skip(f"the storing path of our reference (lowp='float32', no rounding) exceeds its "
                                f"float32 bound on this case ({name}: {own.summary()})")
        if ref_low is not None and name in ref_low:
            r = np.asarray(ref_low[name])  # the baseline: our reference storing its intermediates in the dtype
        r_lowp = r.astype(dt) if not np.iscomplexobj(r) else r
        M, fallback = mags.get(name), ""
        if M is None:
            fallback = (f"the op's float32 bound failed ({b32_error}); our reference was not checked against it"
                        if b32_error else f"the op's float32 bound has no entry for {name}")
        elif M.ndim == 0:
            fallback = "the op's float32 bound is one number (normwise)"
        elif not np.all(M > 0):
            fallback = f"the op's float32 bound is 0 at {int(np.sum(~(M > 0)))} of {M.size} entries"
        if fallback:
            M = None  # the normwise rule: factor x our reference's max error, the same for every entry
            fallback = "low-precision rule fell back to the normwise baseline: " + fallback
        bounds[name] = baseline_bound(r_lowp, o, dt, magnitude=M)
        mags[name] = M
        base_err[name] = (_scaled_max_err(r_lowp, o, M),
                          float(np.max(np.abs(np.asarray(r_lowp).astype(np.float64) - o))) if np.size(o) else 0.0,
                          fallback)
    return bounds, mags, base_err


def _missing_output(name: str, shape, dtype: str, why: str) -> OutputResult:
    """A failing record for an output the candidate did not deliver."""
    cmp = Comparison(False, tuple(shape), dtype, float("inf"), None, float("inf"), None, float("inf"),
                     float("inf"), float("inf"), 0.0, 0.0, float("inf"), None, 0, "-", message=why)
    return OutputResult(name, cmp)


def _compare_outputs(spec: OpSpec, cand: Mapping[str, Any], inputs_up: Mapping[str, Any], conv: Dict[str, Any],
                     dtype: str, oracle_out: Mapping[str, Any], ref_inputs: Optional[Mapping[str, Any]] = None
                     ) -> List[OutputResult]:
    """Compare every output the op declares (a missing required output, or any output returned as None: failing)."""
    results: List[OutputResult] = []
    bounds, mags, base_err = _output_bounds(spec, inputs_up, oracle_out, conv, dtype, ref_inputs)
    returned_none = getattr(cand, "returned_none", set())
    for a in spec.outputs:
        if a.name not in oracle_out or a.name not in bounds:
            continue
        o = oracle_out[a.name]
        if a.name not in cand:
            if a.name in returned_none:
                results.append(_missing_output(a.name, np.shape(o), dtype, f"output {a.name} was asked for and came "
                                               "back None (its place in the return value held None)"))
            elif not a.optional:
                results.append(_missing_output(a.name, np.shape(o), dtype,
                                               f"the candidate did not return output {a.name}"))
            continue
        c = np.asarray(cand[a.name])
        if c.dtype.name in LOWP or c.dtype.kind == "V":
            c_cmp = c.astype(np.float64)
        else:
            c_cmp = c
        cmp = compare(c_cmp, o, bounds[a.name], dtype=lowp_dtype(dtype))
        cmp.dtype = dtype
        br = OutputResult(a.name, cmp, returned_dtype=c.dtype.name, precision=precision_note(c.dtype, dtype))
        if a.name in base_err:
            # both errors in the baseline rule's own metric: max_i |x_i - oracle_i| / M_i
            ce = _scaled_max_err(c_cmp, o, mags.get(a.name))
            scaled, absolute, fallback = base_err[a.name]
            if fallback:  # said in the case's result, never silent
                cmp.message = f"{cmp.message}; {fallback}" if cmp.message else fallback
            br.baseline_err = absolute  # our reference's max abs error in this dtype (for the reader)
            br.baseline_multiple = (ce / scaled) if scaled > 0 else (0.0 if ce == 0 else float("inf"))
        results.append(br)
    return results


def _diagnose(res: CaseResult, spec: OpSpec, call: "CandidateCall", x, cand: Optional[Mapping[str, Any]], inputs_up,
              conv, dtype, ref_inputs, oracle_out: Mapping[str, Any]) -> None:
    """Say why a case fails (``res.diagnosis``, one sentence naming the cause) and map where (``res.error_maps``).

    :mod:`oracles.verify.diagnosis` tries the usual causes in order -- lower precision, two inputs swapped, a
    shift by one step, a pattern along time, one group/head/channel block, the state, NaN/Inf, one
    convention flip -- each with a few oracle calls (the candidate is re-run only to swap its own arguments
    or under a layout convention).
    """
    from oracles.verify import diagnosis

    def bounds(inp, out, cv):
        return _output_bounds(spec, inp, out, cv, dtype, ref_inputs if inp is inputs_up else None)[0]

    def compare_with(c, inp, cv, out):
        return _compare_outputs(spec, c, inp, cv, dtype, out, ref_inputs if inp is inputs_up else None)

    def rerun(conv=None, rewrite=None):
        return dataclasses.replace(call, conv=dict(call.conv if conv is None else conv), rewrite=rewrite)(x)

    ctx = diagnosis.Context(spec=spec, conv=conv, dtype=dtype, inputs=inputs_up, cast_inputs=x, cand=cand,
                            results=list(res.outputs), oracle_out=oracle_out, oracle=spec.oracle, bounds=bounds,
                            compare=compare_with, rerun=rerun, adapter=call.adapter)
    found = diagnosis.diagnose(ctx)
    res.diagnosis = found.text
    res.error_maps = found.maps


def _run_case(spec: OpSpec, call: CandidateCall, case: Case, dtype: str, conv: Dict[str, Any], meta: dict,
              save_failures: Optional[str], diagnose: bool) -> CaseResult:
    """One case in one dtype; the warnings raised while it runs are attached to its result."""
    res = CaseResult(case.case_id, case.kind, dtype, dict(conv), case.shapes(), case.seed, note=case.note)
    try:
        res.sizes = case_sizes(spec, case.inputs)
    except ValueError:  # a case whose shapes contradict the signature: the candidate call reports it
        pass
    with _collect_warnings(res.warnings):
        _run_case_body(res, spec, call, case, dtype, conv, meta, save_failures, diagnose)
    return res


def _error_text(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``: the innermost frame where the candidate failed."""
    if isinstance(exc, CandidateTimeout):
        return f"timed out: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _raised_where(exc: BaseException) -> str:
    """``IndexError (at kernel.py:12 in scan)``: the exception type and the innermost frame, for grouping."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
    return f"{type(exc).__name__}{where}"


def _run_case_body(res: CaseResult, spec: OpSpec, call: CandidateCall, case: Case, dtype: str, conv: Dict[str, Any],
                   meta: dict, save_failures: Optional[str], diagnose: bool) -> None:
    try:
        x = _cast_inputs(spec, case.inputs, dtype)
    except _Skip as s:
        res.skipped = str(s)
        return
    x_up = _upcast(x)
    ref_inputs = _lowp_reference_inputs(x_up) if dtype in LOWP else None
    try:
        oracle_out = spec.oracle(dict(x_up), conv)
    except Exception as exc:  # inputs outside the oracle's domain (e.g. a singular transform): say so, never guess
        res.skipped = f"the oracle cannot evaluate this case under these conventions ({type(exc).__name__}: {exc})"
        return
    cand: Dict[str, Any] = {}
    timed_out = False
    try:
        cand = call(x)
    except Exception as exc:  # the candidate failed on this case: an error row with where it happened
        res.error = _error_text(exc)
        timed_out = isinstance(exc, CandidateTimeout)
        if not timed_out:
            res.raised = _raised_where(exc)
    if res.error is None:
        try:
            res.outputs = _compare_outputs(spec, cand, x_up, conv, dtype, oracle_out, ref_inputs)
        except _Skip as s:
            res.skipped = str(s)
            return
        if not res.outputs:
            res.error = "the candidate returned none of the op's outputs " + str([a.name for a in spec.outputs])
        elif not res.passed and diagnose:
            _diagnose(res, spec, call, x, cand, x_up, conv, dtype, ref_inputs, oracle_out)
    elif diagnose and not timed_out:  # (re-running a hung candidate under other conventions would hang again)
        _diagnose(res, spec, call, x, None, x_up, conv, dtype, ref_inputs, oracle_out)
    if not res.passed and save_failures:
        res.repro = save_case(save_failures, meta, case.case_id, dtype, x, conv, oracle_out, cand)


def _probe_dtype(spec: OpSpec, conv: Dict[str, Any], dtype: str) -> ProbeDtype:
    """How a dtype-aware probe casts its inputs and bounds its outputs in ``dtype`` (as the cases are)."""
    return ProbeDtype(dtype, lambda x: _cast_inputs(spec, x, dtype), _upcast,
                      lambda x_up, out: _output_bounds(spec, x_up, out, conv, dtype)[0])


def _run_probe(p, call: CandidateCall, spec: OpSpec, conv: Dict[str, Any], seed: int,
               dtype: Optional[str]) -> ProbeResult:
    """One probe (in one dtype, when it is dtype-aware); warnings raised meanwhile are attached to it."""
    res = ProbeResult(p.name, False, "", p.doc, dtype=dtype)
    with _collect_warnings(res.warnings):
        rng = np.random.default_rng([seed, 7919])  # the same draw in every dtype
        try:
            if dtype is None:
                ok, msg = p.run(call, spec, conv, rng)
            else:
                ok, msg = p.run(call, spec, conv, rng, dtype=_probe_dtype(spec, conv, dtype))
        except _Skip as sk:
            ok, msg = True, f"not applicable in {dtype}: {sk}"
            res.skipped = str(sk)
        except Exception as exc:
            ok, msg = False, f"the probe could not run the candidate: {_error_text(exc)}"
    res.passed, res.message = bool(ok), msg
    return res


def _merge_conventions(spec: OpSpec, adapter: Adapter, conventions: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    given = dict(conventions or {})
    for k, v in adapter.implies.items():
        if k in given and given[k] != v:
            raise ValueError(f"conventions: adapter {adapter.name} implies {k}={v!r}, but {k}={given[k]!r} was asked for")
        given[k] = v
    return spec.resolve_conventions(given)


def verify(op: Union[str, OpSpec], candidate: Callable, *, adapter: Optional[str] = None,
           conventions: Optional[Mapping[str, Any]] = None, dtype: Union[str, Sequence[str]] = "float64",
           framework: Optional[str] = None, profile: str = "ci", max_examples: Optional[int] = None, seed: int = 0,
           kinds: Iterable[str] = ("golden", "edge", "random"), cases: Optional[Sequence[Case]] = None,
           save_failures: Optional[str] = None, probes: bool = True, diagnose: bool = True,
           candidate_name: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
           plots: Optional[str] = None, domain: Optional[Mapping[str, Any]] = None, grad: bool = False,
           grad_fn: Optional[Callable] = None, forward: bool = True) -> Report:
    """Verify ``candidate`` against the oracle of ``op`` under named ``conventions``.

    Parameters
    ----------
    op : name of an op spec (``refimpl ops`` lists them) or an :class:`OpSpec`.
    candidate : the function under test.  Called through ``adapter`` (default:
        the op's canonical signature) with arrays of ``framework``
        (``"numpy"``, ``"torch"``, ``"torch:cuda"``, ``"jax"``, ``"cupy"``).
    conventions : the conventions the candidate claims to implement (defaults: the op's).
    dtype : one name or a list of ``float64``, ``float32``, ``float16``, ``bfloat16``.
    profile, max_examples, seed : how many random cases, and their seed.
    kinds : which cases: ``golden``, ``edge``, ``random``.  ``cases`` replaces them.
    save_failures : a directory for failing cases' ``.npz`` and rerun scripts.
    timeout : seconds each call of the candidate may take (``None``: no limit).  A call that does not
        return is reported with its case and abandoned; the verification goes on.
    plots : a directory for one PNG heatmap of err/bound over (channel, time) per failing case (needs
        matplotlib: ``pip install 'refimpl[plot]'``); the text report names each file.
    domain : the inputs the candidate declares it refuses, by the op's domain entries (``refimpl ops OP``):
        ``{"min_length": 1}`` (no empty sequences), ``{"length_multiple": 8}``, ``{"value_dim": "query_dim"}``.
        Cases outside are not run (golden/edge ones are counted in the report as outside the declared
        domain; random ones are drawn inside); a candidate that raises inside it does not conform.
    grad : also check the backward pass (:mod:`oracles.verify.grad_harness`): the op's gradient cases, each
        input's gradient of ``<outputs, cotangents>`` against finite differences of an independent forward, the
        verdict reported beside the forward's, per input.  The gradient comes from torch's autograd / ``jax.grad``
        (``framework``), or from ``grad_fn``.
    grad_fn : an explicit backward ``grad_fn(*canonical inputs, *cotangents in output order) -> {input: grad}``
        (or a tuple in the op's ``wrt`` order); implies ``grad=True``.
    forward : ``False`` skips the forward cases and probes (only the gradient is judged; needs ``grad``).
    """
    if grad_fn is not None:
        grad = True
    if not forward and not grad:
        raise ValueError("forward: False needs grad=True (there would be nothing to verify)")
    if plots is not None:
        _require_matplotlib()
    spec = op if isinstance(op, OpSpec) else get_op(op)
    ad = get_adapter(spec.name, adapter)
    conv = _merge_conventions(spec, ad, conventions)
    dtypes = [dtype] if isinstance(dtype, str) else list(dtype)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {d!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or
                                not timeout > 0 or not np.isfinite(timeout)):
        raise ValueError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
    fw, device = parse_framework(framework)
    name = candidate_name or _candidate_name(candidate)
    call = CandidateCall(spec, candidate, ad, conv, fw, device, timeout=timeout)
    dom = spec.resolve_domain(domain)
    gspec = None
    if grad:
        from oracles.verify.registry import get_grad

        gspec = get_grad(spec.name)
        if gspec is None:
            raise ValueError(f"grad: op {spec.name} has no gradient oracle (refimpl ops lists the ops that have one)")
        if spec.derive is not None:
            raise ValueError(f"grad: op {spec.name} derives its compared outputs from what the candidate returns; "
                             "its gradient cannot be checked")
        if grad_fn is None and fw not in ("torch", "jax"):
            raise ValueError(f"grad: framework {fw} has no autograd; pass an explicit backward (--grad-fn "
                             "MODULE:FUNCTION) or verify the candidate with --framework torch or jax")
    report = Report(spec.name, name, ad.name, framework or "numpy", conv, dtypes, seed=seed, profile=profile)
    report.forward_checked = bool(forward)
    report.domain, report.domain_entries = dict(dom.declared), tuple(spec.domain)
    meta = {"op": spec.name, "candidate": name, "adapter": ad.name, "framework": framework or "numpy", "seed": seed}
    outside: List[Tuple[Case, str]] = []
    if cases is not None:
        todo, outside = split_domain(cases, dom)
    else:
        todo = generate_cases(spec, conv, profile=profile, max_examples=max_examples, seed=seed, kinds=kinds,
                              domain=dom, outside=outside)
    report.outside_domain = [{"case_id": c.case_id, "kind": c.kind, "reason": why} for c, why in outside]
    if todo:  # an adapter that cannot express the requested conventions is a usage error, raised now
        first = todo[0].inputs
        ad.build_call(spec, first, conv, infer_dims(spec.inputs, first))
    runnable = [d for d in dtypes if not (d in LOWP and not spec.lowp)]
    if not forward:
        todo = []
        probes = False
    for d in dtypes:
        if d not in runnable:
            for c in todo:
                report.cases.append(CaseResult(c.case_id, c.kind, d, conv, c.shapes(), c.seed,
                                               skipped=f"op {spec.name} has no low-precision rule"))
            continue
        with precision_scope(fw, d) as notes:
            for c in todo:
                report.cases.append(_run_case(spec, call, c, d, conv, meta, save_failures, diagnose))
        report.add_notes(notes)
    if probes:
        probe_spec = spec if dom.is_default else dataclasses.replace(spec, active_domain=dom)  # draws inside it
        for p in spec.probes:
            if not p.applies(conv):
                continue
            for d in (runnable if p.per_dtype else [None]):
                with precision_scope(fw, d or "float64") as notes:
                    report.probes.append(_run_probe(p, call, probe_spec, conv, seed, d))
                report.add_notes(notes)
    if gspec is not None:
        _run_grad(report, spec, gspec, call, conv, dtypes, runnable, seed, grad_fn, meta, save_failures, diagnose,
                  dom, kinds if cases is None else None, cases)
    if plots is not None:
        _write_plots(report, plots)
    hung = sum(c.error is not None and c.error.startswith("timed out") for c in report.cases)
    hung += sum("timed out:" in p.message for p in report.probes)
    if hung:
        report.add_notes([f"{hung} call(s) of the candidate did not return within {timeout:g} s (--timeout) and were "
                          "abandoned: a Python thread cannot be killed, so they may still be running"])
    return report


def _run_grad(report: Report, spec: OpSpec, gspec, call: CandidateCall, conv, dtypes, runnable, seed, grad_fn,
              meta, save_failures, diagnose, dom, kinds, cases) -> None:
    """The gradient cases (``GradSpec.cases`` + seeded random small ones) in every requested dtype."""
    from oracles.verify import grad_harness

    report.grad = True
    report.grad_wrt = tuple(gspec.wrt)
    report.grad_route = ("explicit backward " + _candidate_name(grad_fn) if grad_fn is not None else
                         {"torch": "torch.autograd.grad", "jax": "jax.grad"}.get(call.framework, call.framework))
    if cases is not None:
        todo, _ = split_domain(cases, dom)
    else:
        todo = grad_harness.grad_cases(spec, gspec, conv, seed,
                                       n_random=grad_harness.N_RANDOM_GRAD if "random" in kinds else 0)
        todo = [c for c in todo if c.kind in kinds or (c.kind == "golden" and "golden" in kinds)]
        todo, _ = split_domain(todo, dom)
    gmeta = dict(meta, grad=True, grad_fn=None if grad_fn is None else _candidate_name(grad_fn))
    for d in dtypes:
        if d not in runnable:
            for c in todo:
                report.grad_cases.append(CaseResult(c.case_id, c.kind, d, conv, c.shapes(), c.seed,
                                                    skipped=f"op {spec.name} has no low-precision rule"))
            continue
        with precision_scope(call.framework, d) as notes:
            for c in todo:
                res = None
                warn: List[str] = []
                with _collect_warnings(warn):
                    res = grad_harness.run_grad_case(spec, gspec, call, c, d, conv, seed, grad_fn, _cast_inputs,
                                                     _upcast, _error_text, _raised_where, diagnose=diagnose,
                                                     save_failures=save_failures, meta=gmeta)
                res.warnings.extend(warn)
                report.grad_cases.append(res)
        report.add_notes(notes)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("plots: matplotlib is not installed (pip install 'refimpl[plot]' or pip install matplotlib)"
                          ) from None


def _write_plots(report: Report, directory: str) -> None:
    """One heatmap per failing case with an error map (``<op>-<case>-<dtype>.png``)."""
    from oracles.verify.diagnosis import write_heatmap

    for c in report.cases:
        if not c.passed and c.error_maps:
            c.plot = write_heatmap(directory, f"{report.op}-{c.case_id}-{c.dtype}",
                                   f"{report.op} <- {report.candidate}: {c.name}", c.error_maps)


def assert_conforms(op, candidate, **kwargs) -> Report:
    """:func:`verify`, raising ``AssertionError`` with the text report unless every case and probe passes."""
    report = verify(op, candidate, **kwargs)
    if not report.passed:
        raise AssertionError(report.to_text())
    return report


def rerun_case(case: Mapping[str, Any], candidate: Optional[Callable] = None) -> Report:
    """Rerun a case loaded with :func:`oracles.verify.load_case` (candidate imported by name unless given)."""
    meta = case["meta"]
    cand = candidate or resolve_candidate(meta["candidate"])
    spec = get_op(meta["op"])
    up = _upcast(case["inputs"])
    if meta.get("grad"):  # a saved gradient case: rerun the gradient only (its cotangents are redrawn from the id)
        case_id = meta["case_id"][: -len("-grad")] if meta["case_id"].endswith("-grad") else meta["case_id"]
        c = Case(spec.name, case_id, "saved", up, dict(meta["conventions"]), seed=meta.get("seed"))
        gfn = resolve_candidate(meta["grad_fn"]) if meta.get("grad_fn") else None
        return verify(spec, cand, adapter=meta.get("adapter"), conventions=meta["conventions"], dtype=meta["dtype"],
                      framework=None if meta.get("framework") in (None, "numpy") else meta["framework"], cases=[c],
                      probes=False, candidate_name=meta["candidate"], grad=True, grad_fn=gfn, forward=False,
                      seed=meta.get("seed") or 0)
    c = Case(spec.name, meta["case_id"], "saved", up, dict(meta["conventions"]), seed=meta.get("seed"))
    return verify(spec, cand, adapter=meta.get("adapter"), conventions=meta["conventions"], dtype=meta["dtype"],
                  framework=None if meta.get("framework") in (None, "numpy") else meta["framework"], cases=[c],
                  probes=False, candidate_name=meta["candidate"])


__all__ += ["load_case"]
