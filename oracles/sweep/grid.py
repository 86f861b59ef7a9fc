"""The sweep's grid file (TOML or JSON) and its expansion into one task per case.

A grid names the candidates and what to run them on::

    [sweep]
    seeds = [0, 1]                 # each seed draws its own random cases (golden/edge cases run with the first)
    dtypes = ["float64", "float32"]
    profile = "ci"                 # random cases per run of the harness's own case generation (ci 10, thorough 200)
    timeout = 60                   # seconds per call of a candidate (verify's --timeout)
    probes = true                  # the op's probes: one task per (candidate, conventions, dtype)

    [sizes.default]                # a size class without `length`: the harness's own cases (golden, edge, random)
    [sizes.long]                   # a size class with `length`: `count` cases drawn by the op's sampler with every
    length = 4096                  # sequence axis of the op at that length (moved into the candidate's declared
    count = 2                      # domain as verify moves its random cases)

    [[candidates]]
    function = "refimpl.attention.fast_weights:fast_weight_memory"
    op = "attention.fast_weights"  # or ops = [...]
    adapter = "refimpl"            # optional (default: the op's canonical signature)
    conventions = [{use_state = true}, {use_state = false}]   # one table, or a list: one run per table
    domain = {min_length = 1}      # optional: what the candidate declares it refuses (refimpl ops OP)
    # optional overrides: dtypes, seeds, sizes (names of size classes), framework, name (a label)

A JSON grid has the same structure (``{"sweep": {...}, "sizes": {...}, "candidates": [...]}``).  Convention
and domain values that are strings are read as ``refimpl verify --conv`` reads them (``"None"`` is None,
``"(4, 0)"`` a tuple; a convention's string choice stays a string); TOML/JSON arrays become tuples.

:func:`expand` turns a grid into :class:`Task`\\ s: one per (op, candidate, conventions, dtype, size class,
seed, case id), plus one probes task per (op, candidate, conventions, dtype).  The harness's cases are drawn
here with :func:`oracles.verify.generate_cases` (they travel with their task); a size class with a length
names its cases (``long-L4096-0``) and each task draws its own on the worker, so long inputs never cross
the network.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Grid", "Candidate", "SizeClass", "Task", "load_grid", "parse_grid", "expand", "library_version",
           "task_key", "key_hash", "length_case"]

DEFAULT_SIZE = "default"


@dataclasses.dataclass(frozen=True)
class SizeClass:
    """``length=None``: the harness's own cases (``kinds``, ``max_examples`` or the grid's profile); else ``count``
    cases with every sequence axis of the op at ``length``."""

    name: str
    length: Optional[int] = None
    count: int = 1
    kinds: Tuple[str, ...] = ("golden", "edge", "random")
    max_examples: Optional[int] = None


@dataclasses.dataclass
class Candidate:
    function: str
    ops: Tuple[str, ...]
    adapter: Optional[str] = None
    conventions: Tuple[Dict[str, Any], ...] = ({},)
    domain: Dict[str, Any] = dataclasses.field(default_factory=dict)
    dtypes: Optional[Tuple[str, ...]] = None
    seeds: Optional[Tuple[int, ...]] = None
    sizes: Optional[Tuple[str, ...]] = None
    framework: Optional[str] = None
    name: Optional[str] = None


@dataclasses.dataclass
class Grid:
    candidates: List[Candidate]
    sizes: Dict[str, SizeClass]
    seeds: Tuple[int, ...] = (0,)
    dtypes: Tuple[str, ...] = ("float64",)
    profile: str = "ci"
    timeout: Optional[float] = 60.0
    probes: bool = True
    path: Optional[str] = None


@dataclasses.dataclass
class Task:
    """One independent unit of work for a dask worker: one case (or the probes) in one dtype."""

    op: str
    function: str
    adapter: str  # resolved adapter name
    framework: str
    conventions: Dict[str, Any]  # resolved (the op's defaults filled in, the adapter's implied ones merged)
    domain: Dict[str, Any]
    dtype: str
    size_class: str  # "-" for the probes task
    seed: int
    case_id: str  # "probes" for the probes task
    version: str
    timeout: Optional[float] = 60.0
    label: str = ""
    case: Any = None  # an oracles.verify Case (harness size classes), shipped with the task
    length: Optional[int] = None  # length size classes: the worker draws case `index` at this length
    index: int = 0

    @property
    def is_probes(self) -> bool:
        return self.case_id == "probes"

    def key(self) -> Dict[str, Any]:
        return task_key(self.op, {"function": self.function, "adapter": self.adapter, "framework": self.framework,
                                  "domain": self.domain}, self.conventions, self.dtype,
                        f"{self.size_class}:{self.case_id}", self.seed, self.version)

    @property
    def hash(self) -> str:
        return key_hash(self.key())

    @property
    def group(self) -> Tuple[str, ...]:
        """Tasks of one group merge into one :class:`oracles.verify.Report`."""
        return (self.op, self.function, self.adapter, self.framework, _canon(self.conventions), _canon(self.domain))


def _canon(v: Any) -> str:
    from oracles.verify.report import _clean

    return json.dumps(_clean(v), sort_keys=True, default=str)


def task_key(op: str, candidate: Mapping[str, Any], conventions: Mapping[str, Any], dtype: str, case: str,
             seed: int, version: str) -> Dict[str, Any]:
    """The result key (op, candidate, conventions, dtype, case id, seed, library version), JSON-ready."""
    from oracles.verify.report import _clean

    return _clean({"op": op, "candidate": dict(candidate), "conventions": dict(conventions), "dtype": dtype,
                   "case": case, "seed": seed, "version": version})


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- reading a grid ------------------------------------------------------------------------------------------

def load_grid(path: str) -> Grid:
    """Read a ``.toml`` or ``.json`` grid file (``ValueError`` naming the entry on anything malformed)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".json"):
        data = json.loads(raw.decode())
    else:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            import tomli as tomllib
        try:
            data = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"grid {path}: not valid TOML ({exc})") from None
    g = parse_grid(data)
    g.path = path
    return g


def _tuple_of(name: str, v: Any, typ) -> Tuple[Any, ...]:
    items = v if isinstance(v, (list, tuple)) else [v]
    for x in items:
        if not isinstance(x, typ) or isinstance(x, bool) and typ is not bool:
            raise ValueError(f"grid: {name}: expected {typ.__name__} or a list of them, got {v!r}")
    return tuple(items)


def _values(op: Optional[str], table: Mapping[str, Any], what: str) -> Dict[str, Any]:
    """String values read as ``--conv`` reads them; arrays as tuples."""
    from oracles.cli.verify import parse_conventions, parse_value

    if not isinstance(table, Mapping):
        raise ValueError(f"grid: {what}: expected a table of NAME = VALUE, got {table!r}")
    out: Dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, str):
            out.update(parse_conventions([f"{k}={v}"], op) if what.endswith("conventions") else {k: parse_value(v)})
        elif isinstance(v, list):
            out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        else:
            out[k] = v
    return out


def parse_grid(data: Mapping[str, Any]) -> Grid:
    from oracles.verify.harness import DTYPES, PROFILES

    if not isinstance(data, Mapping):
        raise ValueError(f"grid: expected a table at the top, got {type(data).__name__}")
    unknown = sorted(set(data) - {"sweep", "sizes", "candidates"})
    if unknown:
        raise ValueError(f"grid: unknown top-level entries {unknown} (expected sweep, sizes, candidates)")
    top = dict(data.get("sweep", {}))
    bad = sorted(set(top) - {"seeds", "dtypes", "profile", "timeout", "probes"})
    if bad:
        raise ValueError(f"grid: [sweep]: unknown entries {bad} (expected seeds, dtypes, profile, timeout, probes)")
    g = Grid(candidates=[], sizes={})
    if "seeds" in top:
        g.seeds = _tuple_of("[sweep] seeds", top["seeds"], int)
    if "dtypes" in top:
        g.dtypes = _tuple_of("[sweep] dtypes", top["dtypes"], str)
    g.profile = top.get("profile", "ci")
    if g.profile not in PROFILES:
        raise ValueError(f"grid: [sweep] profile: expected one of {sorted(PROFILES)}, got {g.profile!r}")
    t = top.get("timeout", 60.0)
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise ValueError(f"grid: [sweep] timeout: expected a positive number of seconds, got {t!r}")
    g.timeout = None if t is None else float(t)
    g.probes = bool(top.get("probes", True))
    sizes = data.get("sizes") or {DEFAULT_SIZE: {}}
    if not isinstance(sizes, Mapping):
        raise ValueError(f"grid: [sizes]: expected a table of size classes, got {sizes!r}")
    for name, s in sizes.items():
        s = dict(s or {})
        bad = sorted(set(s) - {"length", "count", "kinds", "max_examples"})
        if bad:
            raise ValueError(f"grid: [sizes.{name}]: unknown entries {bad} (expected length, count, kinds, max_examples)")
        length = s.get("length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise ValueError(f"grid: [sizes.{name}] length: expected an integer >= 0, got {length!r}")
        count = s.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"grid: [sizes.{name}] count: expected an integer >= 1, got {count!r}")
        kinds = _tuple_of(f"[sizes.{name}] kinds", s.get("kinds", ["golden", "edge", "random"]), str)
        if set(kinds) - {"golden", "edge", "random"} or not kinds:
            raise ValueError(f"grid: [sizes.{name}] kinds: expected a subset of golden, edge, random, got {list(kinds)}")
        mx = s.get("max_examples")
        if mx is not None and (isinstance(mx, bool) or not isinstance(mx, int) or mx < 0):
            raise ValueError(f"grid: [sizes.{name}] max_examples: expected an integer >= 0, got {mx!r}")
        g.sizes[name] = SizeClass(name, length, count, kinds, mx)
    cands = data.get("candidates")
    if not cands or not isinstance(cands, list):
        raise ValueError("grid: expected at least one [[candidates]] entry")
    for i, c in enumerate(cands):
        where = f"candidates[{i}]"
        if not isinstance(c, Mapping):
            raise ValueError(f"grid: {where}: expected a table, got {c!r}")
        bad = sorted(set(c) - {"function", "op", "ops", "adapter", "conventions", "domain", "dtypes", "seeds",
                               "sizes", "framework", "name"})
        if bad:
            raise ValueError(f"grid: {where}: unknown entries {bad}")
        fn = c.get("function")
        if not isinstance(fn, str) or ":" not in fn:
            raise ValueError(f"grid: {where} function: expected MODULE:FUNCTION, got {fn!r}")
        if ("op" in c) == ("ops" in c):
            raise ValueError(f"grid: {where}: expected exactly one of op = \"OP\" or ops = [...]")
        ops = _tuple_of(f"{where} op", c.get("op", c.get("ops")), str)
        convs = c.get("conventions", [{}])
        convs = [convs] if isinstance(convs, Mapping) else list(convs)
        if not convs:
            raise ValueError(f"grid: {where} conventions: expected a table or a non-empty list of tables")
        cand = Candidate(function=fn, ops=ops, adapter=c.get("adapter"),
                         conventions=tuple(_values(ops[0] if len(ops) == 1 else None, cv, f"{where} conventions")
                                           for cv in convs),
                         domain=_values(None, c.get("domain", {}), f"{where} domain"),
                         framework=c.get("framework"), name=c.get("name"))
        for k in ("dtypes", "sizes"):
            if k in c:
                setattr(cand, k, _tuple_of(f"{where} {k}", c[k], str))
        if "seeds" in c:
            cand.seeds = _tuple_of(f"{where} seeds", c["seeds"], int)
        for s in cand.sizes or ():
            if s not in g.sizes:
                raise ValueError(f"grid: {where} sizes: no size class {s!r} (the grid has {sorted(g.sizes)})")
        g.candidates.append(cand)
    for d in set(g.dtypes).union(*[set(c.dtypes or ()) for c in g.candidates]):
        if d not in DTYPES:
            raise ValueError(f"grid: dtypes: expected each of {', '.join(DTYPES)}, got {d!r}")
    return g


# -- the version in each key ---------------------------------------------------------------------------------

def library_version(function: str) -> str:
    """``refimpl 0.1.0`` and, for a candidate from another package, that package's version (a new version of
    either reruns the case)."""
    import refimpl

    parts = [f"refimpl {getattr(refimpl, '__version__', 'unknown')}"]
    top = function.partition(":")[0].split(".")[0]
    if top not in ("refimpl", "oracles"):
        v = None
        try:
            v = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            mod = sys.modules.get(top)
            v = getattr(mod, "__version__", None) if mod is not None else None
        parts.append(f"{top} {v or 'unversioned'}")
    return "; ".join(parts)


# -- expansion -----------------------------------------------------------------------------------------------

def length_case(spec, conv: Mapping[str, Any], domain, name: str, length: int, index: int, seed: int):
    """Case ``index`` of a length size class: the op's sampler with every sequence axis at ``length``
    (``np.random.default_rng([seed, length, index])``), moved into the declared ``domain`` as verify moves its
    random cases; ``None`` when the op has no sequence axis."""
    from oracles.verify.registry import Case

    seq = next((d.sizes for d in spec.domain if d.kind == "min_length"), ())
    if not seq:
        return None
    kw = {s.sample_kw: length for s in seq}
    rng_seed = [seed, length, index]
    inp = spec.sample(np.random.default_rng(rng_seed), dict(conv), **kw)
    note = f"size class {name}: sample(np.random.default_rng({rng_seed}), {', '.join(f'{k}={v}' for k, v in kw.items())})"
    inp, how = domain.fit(inp, np.random.default_rng(rng_seed + [1]), conv, min_length=0)
    if how:
        note += f"; {how}"
    return Case(spec.name, f"{name}-L{length}-{index}", "random", inp, dict(conv), seed=seed, note=note)


def expand(grid: Grid, ops: Optional[Sequence[str]] = None) -> Tuple[List[Task], List[Dict[str, Any]]]:
    """The grid's tasks, and notes on what it does not run (golden/edge cases outside a declared domain, size
    classes that do not apply to an op).  ``ops``: run only these ops.  Usage errors raise ``ValueError``."""
    from oracles.verify.adapters import get_adapter
    from oracles.verify.harness import _merge_conventions, generate_cases
    from oracles.verify.registry import get_op, infer_dims

    tasks: List[Task] = []
    notes: List[Dict[str, Any]] = []
    for cand in grid.candidates:
        version = library_version(cand.function)
        for op in cand.ops:
            if ops and op not in ops:
                continue
            spec = get_op(op)
            ad = get_adapter(spec.name, cand.adapter)
            dom = spec.resolve_domain(cand.domain)
            label = cand.name or cand.function
            for given in cand.conventions:
                conv = _merge_conventions(spec, ad, given)
                seeds = cand.seeds or grid.seeds
                dtypes = cand.dtypes or grid.dtypes
                common = dict(op=spec.name, function=cand.function, adapter=ad.name,
                              framework=cand.framework or "numpy", conventions=conv, domain=dict(dom.declared),
                              version=version, timeout=grid.timeout, label=label)
                per_case: List[Dict[str, Any]] = []
                for sname in cand.sizes or tuple(grid.sizes):
                    sc = grid.sizes[sname]
                    for si, seed in enumerate(seeds):
                        if sc.length is None:
                            kinds = sc.kinds if si == 0 else tuple(k for k in sc.kinds if k == "random")
                            if not kinds:
                                continue
                            outside: List[Any] = []
                            cases = generate_cases(spec, conv, profile=grid.profile, max_examples=sc.max_examples,
                                                   seed=seed, kinds=kinds, domain=dom, outside=outside)
                            if cases:  # an adapter that cannot express the conventions: a usage error, now
                                ad.build_call(spec, cases[0].inputs, conv, infer_dims(spec.inputs, cases[0].inputs))
                            for c, why in outside:
                                notes.append({"op": spec.name, "candidate": label, "conventions": conv,
                                              "note": f"{sname}:{c.case_id} ({c.kind}) is outside the declared "
                                                      f"domain, not run: {why}"})
                            per_case += [dict(size_class=sname, seed=seed, case_id=c.case_id, case=c) for c in cases]
                        else:
                            if not any(d.kind == "min_length" for d in spec.domain):
                                if si == 0:
                                    notes.append({"op": spec.name, "candidate": label, "conventions": conv,
                                                  "note": f"size class {sname} (length {sc.length}) does not apply: "
                                                          f"op {spec.name} has no sequence axis"})
                                continue
                            per_case += [dict(size_class=sname, seed=seed, case_id=f"{sname}-L{sc.length}-{i}",
                                              length=sc.length, index=i) for i in range(sc.count)]
                for dtype in dtypes:
                    tasks += [Task(dtype=dtype, **common, **pc) for pc in per_case]
                    if grid.probes and spec.probes:
                        tasks.append(Task(dtype=dtype, size_class="-", seed=seeds[0], case_id="probes", **common))
    seen: Dict[str, Task] = {}
    for t in tasks:  # one task per key: a grid that lists the same run twice runs it once
        seen.setdefault(t.hash, t)
    return list(seen.values()), notes


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
