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

* the **domain** a candidate may declare (:class:`Domain`, built by :func:`op_domain`): the inputs
  a legitimate implementation may refuse -- ``L = 0`` (``min_length``), ``L`` not a multiple of its
  chunk (``length_multiple``), sizes that must be equal or fixed (``value_dim=query_dim``,
  ``state_dim=16``).  :class:`DeclaredDomain` says whether a case lies inside a declared domain and
  redraws random cases inside it.

Op specs live in ``oracles/verify/ops_<family>.py`` and register themselves
with :func:`register_op`; :func:`get_op` imports every such module on first use.  The declarative
helpers :func:`op_functions`, :func:`case_builder`, :func:`feature_convention`, :func:`seeded_strategy`
and :func:`draw_sizes` spell the parts every op spec shares.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import math
import pkgutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Arg", "Convention", "Case", "Probe", "ProbeDtype", "OpSpec", "register_op", "get_op", "list_ops",
           "infer_dims",
           "Size", "Domain", "DeclaredDomain", "op_domain", "case_sizes", "case_key", "domain_hint", "op_functions",
           "case_builder", "CaseBuilder", "feature_convention", "seeded_strategy", "draw_sizes", "claimed_inputs",
           "GradSpec", "register_grad", "get_grad", "list_grads"]


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


# -- the domain a candidate may declare -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Size:
    """A size of an op's cases: an axis letter of its inputs (``"l"``) or the name of a scalar integer input
    (``"L"``, the kernel length of ``ssm.s4d_kernel``), and the keyword with which the op's sampler draws it
    (``sample(rng, conv, L=8)``), so that random cases can be drawn inside a declared domain."""

    axis: str
    sample_kw: str


DOMAIN_KINDS = ("min_length", "length_multiple", "size")


@dataclasses.dataclass(frozen=True)
class Domain:
    """One restriction a candidate may declare on the inputs it accepts (``--domain NAME=VALUE``).

    ``kind``:

    * ``"min_length"`` (default 0): a case with a sequence axis (any of ``sizes``) shorter than the value
      lies outside the domain;
    * ``"length_multiple"`` (default 1): a case with a sequence length that is not a multiple of the value
      lies outside;
    * ``"size"`` (default ``None``: free): the size of ``sizes[0]`` must be the value -- a number, or the
      name of another ``size`` entry of the op (``value_dim=query_dim``: the two sizes are equal).

    Declaring a domain never changes what the candidate is asked to compute; it only removes the cases a
    legitimate implementation refuses.  Build an op's entries with :func:`op_domain`.
    """

    name: str
    kind: str
    default: Any
    doc: str
    sizes: Tuple[Size, ...]

    def __post_init__(self):
        if self.kind not in DOMAIN_KINDS:
            raise ValueError(f"domain {self.name}: kind expected one of {DOMAIN_KINDS}, got {self.kind!r}")

    def check(self, value: Any, size_names: Sequence[str]) -> Any:
        """``value`` if it is one this entry takes (``ValueError`` naming the entry otherwise)."""
        if self.kind == "size":
            if value is None:
                return None
            if isinstance(value, str):
                others = [n for n in size_names if n != self.name]
                if value not in others:
                    raise ValueError(f"domain {self.name}: expected a size (an integer >= 0) or the name of another "
                                     f"size of the op ({', '.join(others) or 'none'}), got {value!r}")
                return value
        lo = 1 if self.kind == "length_multiple" else 0
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"domain {self.name}: expected an integer >= {lo}, got {value!r}")
        return int(value)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "default": self.default, "doc": self.doc,
                "axes": [s.axis for s in self.sizes]}


def _pair(spec: Any) -> Tuple[str, str, str]:
    """``"l"`` / ``("l", "L")`` / ``("e", "e", doc)`` -> ``(axis, sampler keyword, doc)``."""
    if isinstance(spec, str):
        return spec, spec, ""
    spec = tuple(spec)
    if len(spec) == 2:
        return spec[0], spec[1], ""
    if len(spec) == 3:
        return spec[0], spec[1], spec[2]
    raise ValueError(f"op_domain: expected an axis, (axis, sampler keyword) or (axis, keyword, doc), got {spec!r}")


def op_domain(length: Any = None, **sizes: Any) -> Tuple[Domain, ...]:
    """An op's declarable domain.

    ``length``: the sequence axis and the sampler keyword that draws its size, ``("l", "L")`` (or a tuple of
    such pairs, e.g. softmax attention's ``(("lq", "lq"), ("lk", "lk"))``); it gives the entries
    ``min_length`` (default 0) and ``length_multiple`` (default 1).  Every further ``name=(axis, keyword[, doc])``
    is a ``size`` entry (default free) that a candidate may fix (``state_dim=16``) or tie to another one
    (``value_dim=query_dim``).
    """
    out: List[Domain] = []
    if length is not None:
        pairs = [length] if isinstance(length, str) or isinstance(length[0], str) else list(length)
        seq = tuple(Size(*_pair(p)[:2]) for p in pairs)
        axes = ", ".join(s.axis for s in seq)
        out.append(Domain("min_length", "min_length", 0, f"the shortest sequence ({axes}) the candidate accepts "
                          "(min_length=1: it refuses empty sequences)", seq))
        out.append(Domain("length_multiple", "length_multiple", 1, f"the sequence length ({axes}) must be a multiple "
                          "of this (a kernel that needs whole chunks)", seq))
    for name, spec in sizes.items():
        axis, kw, doc = _pair(spec)
        out.append(Domain(name, "size", None, doc or f"the size of axis {axis}: a number fixes it; the name of another "
                          "size ties the two (free by default)", (Size(axis, kw),)))
    return tuple(out)


def case_sizes(spec: "OpSpec", inputs: Mapping[str, Any]) -> Dict[str, int]:
    """The sizes of a case: its named axes (:func:`infer_dims`) and its scalar integer inputs by name."""
    sizes = infer_dims(spec.inputs, inputs)
    for a in spec.inputs:
        v = inputs.get(a.name)
        if v is not None and a.kind == "int" and not a.shape.strip() and np.ndim(v) == 0:
            sizes[a.name] = int(np.asarray(v))
    return sizes


def case_key(inputs: Mapping[str, Any]) -> str:
    """A content hash of a case's inputs (names, dtypes, shapes and bytes): equal keys are the same case."""
    h = hashlib.sha1()
    for k in sorted(inputs):
        v = inputs[k]
        h.update(k.encode() + b"\0")
        if v is None:
            h.update(b"None\0")
            continue
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{a.dtype.str}{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _length_label(seq: Sequence[Size]) -> str:
    """How the sequence length is named in sentences: ``L`` for one axis ``l``, else the axes themselves."""
    if len(seq) == 1:
        return "L" if seq[0].axis == "l" else seq[0].axis
    return " or ".join(s.axis for s in seq)


class DeclaredDomain:
    """An op's domain under the values a candidate declared (the defaults: the op's whole domain).

    :meth:`violation` says why a case lies outside (``None`` inside); :meth:`fit` returns a case inside:
    the case itself when it is, else one redrawn by the op's sampler with its sizes moved into the
    domain (a length rounded up to the smallest allowed one, a tied size set to the size it is tied to).
    """

    def __init__(self, spec: "OpSpec", given: Optional[Mapping[str, Any]] = None):
        self.spec = spec
        self.entries: Dict[str, Domain] = {d.name: d for d in spec.domain}
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.entries))
        if unknown:
            raise ValueError(f"domain: op {spec.name} has no domain entry {', '.join(map(repr, unknown))}; it has "
                             f"{', '.join(self.entries) or 'none'} (refimpl ops {spec.name} lists them)")
        size_names = [d.name for d in spec.domain if d.kind == "size"]
        self.values = {n: d.check(given.get(n, d.default), size_names) for n, d in self.entries.items()}
        self.declared = {n: v for n, v in self.values.items() if v != self.entries[n].default}
        self._groups = self._tie_groups(size_names)

    def _tie_groups(self, size_names: Sequence[str]) -> List[Tuple[List[str], Optional[int]]]:
        """The ``size`` entries grouped by declared equalities, each with its fixed size (if one is declared)."""
        parent = {n: n for n in size_names}

        def root(n):
            while parent[n] != n:
                n = parent[n]
            return n

        for n in size_names:
            v = self.values[n]
            if isinstance(v, str):
                parent[root(n)] = root(v)
        groups: Dict[str, List[str]] = {}
        for n in size_names:
            groups.setdefault(root(n), []).append(n)
        out = []
        for members in groups.values():
            fixed = sorted({self.values[m] for m in members if isinstance(self.values[m], int)})
            if len(fixed) > 1:
                raise ValueError(f"domain: {', '.join(members)} are tied but fixed to different sizes {fixed}")
            if len(members) > 1 or fixed:
                out.append((members, fixed[0] if fixed else None))
        return out

    @property
    def is_default(self) -> bool:
        return not self.declared

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.declared.items()) or "the op's whole domain"

    @property
    def sequence(self) -> Tuple[Size, ...]:
        d = self.entries.get("min_length")
        return d.sizes if d is not None else ()

    def length(self, sizes: Mapping[str, int]) -> Optional[int]:
        """The shortest sequence axis of a case (``None``: the op or the case has none)."""
        ls = [sizes[s.axis] for s in self.sequence if s.axis in sizes]
        return min(ls) if ls else None

    def violation(self, inputs: Optional[Mapping[str, Any]] = None, *, sizes: Optional[Mapping[str, int]] = None,
                  min_length: int = 0) -> Optional[str]:
        """Why a case lies outside the domain (``None``: inside).  ``min_length`` raises the declared one."""
        sizes = case_sizes(self.spec, inputs) if sizes is None else sizes
        m = max(int(self.values.get("min_length", 0)), min_length)
        k = int(self.values.get("length_multiple", 1))
        label = _length_label(self.sequence)
        for s in self.sequence:
            if s.axis not in sizes:
                continue
            L = sizes[s.axis]
            name = s.axis if len(self.sequence) > 1 else label
            if L < m:
                return f"{name} = {L} < min_length {m}"
            if L % k:
                return f"{name} = {L} is not a multiple of length_multiple {k}"
        for members, fixed in self._groups:
            present = [(n, self.entries[n].sizes[0].axis) for n in members if self.entries[n].sizes[0].axis in sizes]
            if fixed is not None:
                for n, ax in present:
                    if sizes[ax] != fixed:
                        return f"{n} ({ax} = {sizes[ax]}) != {fixed}"
            for (n0, a0), (n1, a1) in zip(present, present[1:]):
                if sizes[a0] != sizes[a1]:
                    return f"{n1} ({a1} = {sizes[a1]}) != {n0} ({a0} = {sizes[a0]})"
        return None

    def target_sizes(self, sizes: Mapping[str, int], min_length: int = 0) -> Dict[str, int]:
        """The sizes moved into the domain: lengths rounded up to the smallest allowed, tied sizes equalized."""
        t = dict(sizes)
        m = max(int(self.values.get("min_length", 0)), min_length)
        k = int(self.values.get("length_multiple", 1))
        for s in self.sequence:
            if s.axis in t:
                t[s.axis] = k * math.ceil(max(t[s.axis], m) / k)
        for members, fixed in self._groups:
            axes = [self.entries[n].sizes[0].axis for n in members if self.entries[n].sizes[0].axis in t]
            if axes:
                v = fixed if fixed is not None else t[axes[0]]
                for ax in axes:
                    t[ax] = v
        return t

    def fit(self, inputs: Mapping[str, Any], rng: np.random.Generator, conv: Mapping[str, Any], *,
            min_length: int = 0) -> Tuple[Dict[str, Any], Optional[str]]:
        """``(inputs, None)`` when the case lies inside; else a case redrawn inside and a note saying how."""
        sizes = case_sizes(self.spec, inputs)
        why = self.violation(sizes=sizes, min_length=min_length)
        if why is None:
            return dict(inputs), None
        t = self.target_sizes(sizes, min_length)
        kw = {s.sample_kw: t[s.axis] for d in self.spec.domain for s in d.sizes if s.axis in t}
        x = self.spec.sample(rng, dict(conv), **kw)
        still = self.violation(x, min_length=min_length)
        if still is not None:
            raise ValueError(f"domain: no case of op {self.spec.name} lies inside {self.describe()}"
                             f"{' with min_length ' + str(min_length) if min_length else ''}: its sampler, asked for "
                             f"{kw}, drew one with {still}")
        return x, f"{why}: redrawn inside the domain with {', '.join(f'{k}={v}' for k, v in kw.items())}"


def domain_hint(domain: Sequence[Domain], raising: Sequence[Mapping[str, int]],
                others: Sequence[Mapping[str, int]]) -> Optional[Tuple[str, str]]:
    """What the cases that raised share and the cases that did not lack, as ``(property, advice)``.

    Tried in order: a short sequence (``L = 0``, ``L < m``), a length that is not a multiple of ``k``
    (the ``k >= 2`` that divide every other case's lengths and no raising case's: the smallest is named, and
    every one that fits is listed), two sizes that differ (``value_dim != query_dim``).  ``None`` when no such
    property separates them.
    """
    if not raising:
        return None
    entries = {d.name: d for d in domain}
    seq = entries["min_length"].sizes if "min_length" in entries else ()
    lens = lambda s: [s[z.axis] for z in seq if z.axis in s]  # noqa: E731
    label = _length_label(seq)
    if seq and all(lens(s) for s in raising):
        short = max(min(lens(s)) for s in raising) + 1
        other_min = [min(lens(s)) for s in others if lens(s)]
        if (short == 1 and not other_min) or (other_min and short <= min(other_min)):
            prop = f"{label} = 0" if short == 1 else f"{label} < {short}"
            return f"all with {prop}", f"declare --domain min_length={short} if {prop} is unsupported"
        nonzero = [L for s in others for L in lens(s) if L]
        if nonzero:
            g = 0
            for L in nonzero:
                g = math.gcd(g, L)
            # every k that divides all the other lengths and none of the raising ones fits the evidence
            ks = [k for k in range(2, g + 1) if g % k == 0 and all(any(L % k for L in lens(s)) for s in raising)]
            if len(ks) == 1:
                return (f"all with {label} not a multiple of {ks[0]}",
                        f"declare --domain length_multiple={ks[0]} if other lengths are unsupported")
            if ks:
                fit = ", ".join(map(str, ks[:-1])) + f" or {ks[-1]}"
                return (f"all with {label} not a multiple of {ks[0]}",
                        f"declare --domain length_multiple=K, K the kernel's chunk, if other lengths are unsupported "
                        f"(K = {fit} fit these cases)")
    sized = [d for d in domain if d.kind == "size"]
    for i, a in enumerate(sized):
        for b in sized[i + 1:]:
            ax, bx = a.sizes[0].axis, b.sizes[0].axis
            both = [s for s in others if ax in s and bx in s]
            if both and all(ax in s and bx in s and s[ax] != s[bx] for s in raising) \
                    and all(s[ax] == s[bx] for s in both):
                return (f"all with {b.name} ({bx}) != {a.name} ({ax})",
                        f"declare --domain {b.name}={a.name} if unequal sizes are unsupported")
    return None


# -- declarative helpers for op specs -------------------------------------------------------------------------

_OP_FUNCTIONS = ("oracle", "bounds", "cases", "sample", "strategy", "reference")


def op_functions(namespace: Mapping[str, Any], prefix: str = "") -> Dict[str, Callable]:
    """An op's functions by the names every ``ops_<family>.py`` gives them, as :class:`OpSpec` keywords.

    ``{prefix}oracle``, ``{prefix}bounds``, ``{prefix}cases``, ``{prefix}sample``, ``{prefix}strategy`` and
    ``{prefix}reference`` -- those of them ``namespace`` defines (a module's ``globals()``)::

        register_op(OpSpec(name=OP, ..., **op_functions(globals()), probes=...))
        register_op(OpSpec(name=OP_LINEAR, ..., **op_functions(globals(), "linear_")))
    """
    return {f: namespace[prefix + f] for f in _OP_FUNCTIONS if callable(namespace.get(prefix + f))}


class CaseBuilder:
    """Golden and edge cases drawn from an op's sampler at fixed sizes.

    ``add(case_id, kind, note, seed, **sizes)`` draws ``sample(np.random.default_rng([seed_base, seed]), conv,
    **sizes)``, appends the :class:`Case` to ``add.cases`` and returns it.  ``prepare(inputs, **options)``, when
    given, edits every drawn case; the keywords of ``add`` that ``prepare`` takes go to it (``add(..., scale=6.0)``:
    a scaled input), the others to the sampler.  ``add.rows([(case_id, kind, sizes, note), ...])`` adds a table,
    each row seeded by its position in ``add.cases``.
    """

    def __init__(self, op: str, sample: Callable[..., Dict[str, Any]], seed_base: int, conv: Mapping[str, Any],
                 prepare: Optional[Callable[..., Dict[str, Any]]] = None):
        self.op, self.sample, self.seed_base, self.conv = op, sample, int(seed_base), dict(conv)
        self.prepare = prepare
        self._options = set(list(inspect.signature(prepare).parameters)[1:]) if prepare is not None else set()
        self.cases: List[Case] = []

    def __call__(self, case_id: str, kind: str, note: str, seed: int, **sizes: Any) -> Case:
        options = {k: sizes.pop(k) for k in list(sizes) if k in self._options}
        inputs = self.sample(np.random.default_rng([self.seed_base, seed]), self.conv, **sizes)
        if self.prepare is not None:
            inputs = self.prepare(inputs, **options)
        case = Case(self.op, case_id, kind, inputs, dict(self.conv), seed=seed, note=note)
        self.cases.append(case)
        return case

    def rows(self, rows: Sequence[Tuple[str, str, Mapping[str, Any], str]]) -> List[Case]:
        """``(case_id, kind, sizes, note)`` rows, the seed of each its position in :attr:`cases`."""
        return [self(cid, kind, note, len(self.cases), **dict(sizes)) for cid, kind, sizes, note in rows]


def case_builder(op: str, sample: Callable[..., Dict[str, Any]], seed_base: int, conv: Mapping[str, Any],
                 prepare: Optional[Callable[..., Dict[str, Any]]] = None) -> CaseBuilder:
    """``add = case_builder(OP, sample, 31, conv); add("edge-L0", "edge", "L = 0", 2, L=0); return add.cases``."""
    return CaseBuilder(op, sample, seed_base, conv, prepare)


def draw_sizes(rng: np.random.Generator, **sizes: Tuple[Optional[int], int, int]) -> Tuple[int, ...]:
    """A sampler's sizes: ``name=(given, lo, hi)`` keeps ``given`` unless it is ``None``, else draws
    ``int(rng.integers(lo, hi))``, in the order written (so a seeded sampler draws what it always drew)::

        b, h, n = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5))
    """
    return tuple(int(rng.integers(lo, hi)) if given is None else given for given, lo, hi in sizes.values())


def claimed_inputs(inputs: Mapping[str, Any], conv: Mapping[str, Any], **features: str) -> Dict[str, Any]:
    """The inputs a candidate claims to use: ``use_D="D"`` -- under ``use_D=False`` the case's ``D`` is absent
    (``None``), as the candidate never receives it::

        x = claimed_inputs(inp, conv, use_D="D", use_z="z", use_h0="h0")
    """
    x = dict(inputs)
    for flag, name in features.items():
        if not conv[flag]:
            x[name] = None
    return x


def feature_convention(name: str, doc: str) -> Convention:
    """A ``use_<feature>`` convention: the candidate supports the feature (default ``True``: every case
    exercises it) or not (``False``: no case does)."""
    return Convention(name, True, doc, (True, False))


def seeded_strategy(sample: Callable[..., Dict[str, Any]], conv: Mapping[str, Any]):
    """A Hypothesis strategy of the op's sampler: Hypothesis draws a seed, ``sample(default_rng(seed), conv)``
    the inputs (for ops without a family strategy)."""
    from hypothesis import strategies as st

    return st.integers(0, 2**32 - 1).map(lambda s: sample(np.random.default_rng(s), conv))


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
    domain: Tuple[Domain, ...] = ()  # what a candidate may declare it refuses (op_domain); defaults: everything
    active_domain: Optional[DeclaredDomain] = None  # set by the harness while a run's probes draw (fit_domain)

    def resolve_domain(self, given: Optional[Mapping[str, Any]] = None) -> DeclaredDomain:
        """The op's domain under the declared values (unknown names or bad values raise ``ValueError``)."""
        return DeclaredDomain(self, given)

    def fit_domain(self, inputs: Mapping[str, Any], rng: np.random.Generator,
                   conv: Mapping[str, Any]) -> Dict[str, Any]:
        """``inputs``, or a case redrawn inside the run's declared domain when they lie outside it (probes)."""
        if self.active_domain is None:
            return dict(inputs)
        return self.active_domain.fit(inputs, rng, conv)[0]

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
        for d in self.domain:
            lines.append(f"  domain {d.name} = {d.default!r} (axes {', '.join(s.axis for s in d.sizes)}): {d.doc}")
        if self.domain:
            lines.append("  (declare what a candidate refuses with --domain NAME=VALUE, e.g. --domain min_length=1; "
                         "cases outside are not run)")
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
            "domain": [d.to_dict() for d in self.domain],
            "probes": [{"name": p.name, "doc": p.doc} for p in self.probes],
            "adapters": [a.name for a in adapters_for(self.name)],
            "low_precision": self.lowp,
        }


@dataclasses.dataclass(frozen=True)
class GradSpec:
    """How ``refimpl verify --grad`` checks an op's backward pass (one per op; :func:`register_grad`).

    The ground truth is never our backward code: ``forward`` is a float64 forward from ``oracles/`` (a
    ground-truth module, never refimpl) that :mod:`oracles.gradients` differentiates by central differences
    with Richardson extrapolation (its truncation and rounding error folded into the bound).  A real loss
    ``<outputs, cotangents>`` (``Re sum conj(w) y`` for a complex output) is differentiated with respect to
    each input named in ``wrt``.

    Complex inputs: the gradient of a real loss with respect to ``z = a + i b`` is ``dL/da + i dL/db``
    (PyTorch's convention, and Mamba's for a complex ``A``); JAX returns its conjugate (the adapters convert).

    * ``wrt``: the differentiable canonical inputs, in the order an explicit backward (``--grad-fn``) returns them.
    * ``forward(inputs, conv) -> {output: array}``: float64 ground truth (from ``oracles/``; fast enough to be
      called a few times per input element on the small ``cases``).
    * ``bounds(inputs, oracle_grads, conv, dtype, magnitudes) -> {input: Bound}``: the derived float64/float32
      bound of each gradient (``magnitudes[name]`` = ``|J|^T |w|`` of that input, from the same differences);
      the harness adds the difference quotient's own error bound.
    * ``cases(conv) -> [Case]``: small golden/edge cases (L = 0, 1, odd, chunk +- 1, ...) where elementwise
      differences are affordable.
    * ``reference_vjp(inputs, conv, cotangents, lowp=None) -> {input: grad}``: our VJP (refimpl), used only for
      the low-precision baseline rule and the report rows, never as ground truth.  The float16/bfloat16 baseline
      is **our backward run in that dtype**: when the callable takes the keyword ``lowp``, the harness calls it
      with ``lowp="float16"``/``"bfloat16"`` (float32 inputs and cotangents holding the dtype's values) and the
      adapter runs our backward in float32 arithmetic with every stored intermediate rounded to that dtype (the
      forward baseline's "kernel that stores in low precision and accumulates in float32": softmax attention's
      recomputed ``P``, ``dS`` and saved ``O``; a scan's forward state and adjoint state at every step, each step
      refimpl's own VJP on a one-step sequence; :mod:`oracles.verify._lowp_storage`); the adapter's docstring says
      what it rounds where.  ``lowp="float32"`` runs the same storing path with no rounding: the harness checks
      that it passes the float32 bound on the case before using the path (else the case is skipped).  Without
      the keyword the baseline is the plain float32 run with only its gradients rounded.
    * ``outputs``: the outputs that carry a cotangent (default: every output the case produces).
    * ``sample(rng, conv, **sizes)``: small random cases (default: the op's sampler).
    * ``forward_error(inputs, conv) -> {output: array}``: the float64 forward's absolute error bound per output
      (the rounding of the difference quotient is ``forward_error / h``); default: :mod:`oracles.gradients`'
      stated assumption (32 ulps of the output's scale).

    ``bounds`` is also given the case's cotangents as ``cotangents={output: w}`` when it takes that keyword (a
    bound on the adjoint equations run on absolute values needs them).
    """

    op: str
    wrt: Tuple[str, ...]
    forward: Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]
    bounds: Optional[Callable[..., Dict[str, Any]]] = None
    cases: Optional[Callable[[Dict[str, Any]], List[Case]]] = None
    reference_vjp: Optional[Callable[[Dict[str, Any], Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = None
    outputs: Optional[Tuple[str, ...]] = None
    sample: Optional[Callable[..., Dict[str, Any]]] = None
    notes: str = ""
    module: str = ""
    forward_error: Optional[Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = None


_OPS: Dict[str, OpSpec] = {}
_GRADS: Dict[str, GradSpec] = {}
_LOADED = False


def register_grad(spec: GradSpec) -> GradSpec:
    """Attach the gradient check of op ``spec.op`` (modules ``oracles/verify/grad_<family>.py``)."""
    if spec.op in _GRADS and _GRADS[spec.op] is not spec:
        raise ValueError(f"the gradient of op {spec.op} is registered twice ({_GRADS[spec.op].module} and {spec.module})")
    _GRADS[spec.op] = spec
    return spec


def get_grad(name: str) -> Optional[GradSpec]:
    """The op's :class:`GradSpec`, or ``None`` when the op has no gradient oracle."""
    _load_all()
    return _GRADS.get(name)


def list_grads() -> List[GradSpec]:
    _load_all()
    return [_GRADS[k] for k in sorted(_GRADS)]


def _check_domain_keywords(spec: OpSpec) -> None:
    """Every size of the op's domain must be a keyword of its sampler (random cases are redrawn with it)."""
    params = inspect.signature(spec.sample).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = sorted({s.sample_kw for d in spec.domain for s in d.sizes} - set(params))
    if missing:
        raise ValueError(f"op {spec.name}: its domain draws sizes with sampler keywords {missing} that "
                         f"{getattr(spec.sample, '__qualname__', spec.sample)} does not take")


def register_op(spec: OpSpec) -> OpSpec:
    _check_domain_keywords(spec)
    if spec.name in _OPS and _OPS[spec.name] is not spec:
        raise ValueError(f"op {spec.name} is registered twice ({_OPS[spec.name].module} and {spec.module})")
    _OPS[spec.name] = spec
    return spec


def _load_all() -> None:
    """Import every ``oracles/verify/ops_*.py`` and ``grad_*.py`` (an op module that fails to import is reported, not hidden)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import oracles.verify as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith(("ops_", "grad_")):
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
