"""The engine of the bad-input corpus (``tests/test_bad_input_corpus.py``).

A *contract* declares, for one or more public functions of ``refimpl`` that share a signature, one valid
call: every argument with its declared kind (an array built from shape letters, an integer, a real number,
a bool option, an option string, ...) and what the function's documented contract allows (which axes may be
empty, which arrays may be complex, which non-finite values are meaningful, which alternative shapes are
accepted).  The corpus is *derived* from that declaration, never written case by case:

* bad calls -- wrong rank (a leading axis of 1, an axis dropped), a size off by one (+1 and -1) on every axis
  whose letter is shared with another argument, integer/bool/complex/float16 data, NaN/+Inf/-Inf, an
  empty axis (letter size 0 everywhere), a ragged list, a string, ``None`` for a required array,
  non-positive steps, non-integers/strings/bools/``None`` for integers, NaN/Inf/strings for reals,
  unknown or non-string option values (``view``/``backend``/``method``/``kind``/...), every view/backend pair
  that the dispatch table does not hold, ``"False"``/``0``/``1``/``None`` for bool options;
* valid calls -- the array as a nested list and as a non-contiguous view (both must give the same answer
  bit for bit), ``np.bool_`` for a bool option, ``np.int64`` for an integer, float32 data, complex data
  where complex is declared, an empty axis where the contract declares it, ``None`` for an optional array.

A bad call must raise ``TypeError`` or ``ValueError`` whose message names the argument it is about (the
name appears in the message as a word); returning anything is a *silent* finding, another exception type
an *other* finding, an unnamed argument a *misnamed* finding.  A valid call must run (and where it must give
the baseline's answer, give it).  ``python tests/_bad_inputs.py`` prints every finding.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import importlib
import math
import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# ----------------------------------------------------------------------------------------------- arguments


@dataclasses.dataclass
class Arr:
    """An array argument of shape ``shape`` (letters separated by spaces; digits are fixed sizes).

    ``dtype``: ``"real"`` (complex data is bad), ``"complex"`` (complex data is valid), ``"bool"`` (a
    boolean mask: float data is bad), ``"int"`` (integer indices: float data is bad).
    ``gen``: how the baseline values are drawn: ``"normal"``, ``"pos"`` (in [0.5, 1.5]), ``"neg"``
    ([-1.5, -0.5]), ``"unit"`` ([0.2, 0.8]), ``"cdecay"`` (complex, modulus in [0.3, 0.8]), ``"cneg"``
    (complex, real part in [-1.5, -0.5]), ``"cnormal"`` or a callable ``(rng, shape) -> array``.
    ``nonfinite``: ``"error"`` (NaN/Inf must be refused) or ``"propagate"`` (refused, or NaN/Inf in the
    output: never a finite answer); ``allow`` lists the non-finite values that are meaningful (``"-inf"``).
    ``positive``: zero and negative entries must be refused (steps).  ``alt``: other accepted shapes.
    ``optional``: ``None`` is accepted.  ``free``: letters whose size this argument alone sets (an axis
    off by one is then valid, not bad) even though another argument uses the letter (rare).
    ``listable``: a nested list is the same array (False where a list means a tuple of arrays).
    """

    shape: str
    dtype: str = "real"
    gen: Any = "normal"
    nonfinite: str = "error"
    allow: Tuple[str, ...] = ()
    positive: bool = False
    alt: Tuple[str, ...] = ()
    optional: bool = False
    free: Tuple[str, ...] = ()
    scale: float = 1.0
    listable: bool = True


@dataclasses.dataclass
class Int:
    """An integer argument; ``minimum``/``maximum`` the documented range; ``letter`` ties it to a size."""

    value: int
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    letter: Optional[str] = None
    none_ok: bool = False


@dataclasses.dataclass
class Real:
    """A real scalar; ``positive`` (> 0), ``nonneg`` (>= 0), ``lo``/``hi`` a documented closed range."""

    value: Any
    positive: bool = False
    nonneg: bool = False
    lo: Optional[float] = None
    hi: Optional[float] = None
    none_ok: bool = False
    nonfinite_ok: Tuple[float, ...] = ()


@dataclasses.dataclass
class Flag:
    """A bool option: ``True``/``False`` (``np.bool_`` too) only."""

    value: bool = False


@dataclasses.dataclass
class Opt:
    """An option string from ``choices``; ``none_ok`` where ``None`` is a documented value."""

    value: Optional[str]
    choices: Tuple[str, ...] = ()
    none_ok: bool = False


@dataclasses.dataclass
class Pair:
    """A pair of reals ``(lo, hi)`` with ``lo <= hi`` (``nonneg``: ``0 <= lo``)."""

    value: Tuple[float, float]
    nonneg: bool = True


@dataclasses.dataclass
class Seq:
    """A tuple of arrays (an element ``(a, b)`` of an associative scan): ``items`` are :class:`Arr` specs."""

    items: Tuple[Any, ...]
    optional: bool = False


@dataclasses.dataclass
class Fn:
    """A callable argument (``sigma``, ``op``); ``none_ok`` where ``None`` means the identity."""

    value: Any
    none_ok: bool = False


@dataclasses.dataclass
class DType:
    """A dtype argument (float32/float64)."""

    value: Any = np.float64


@dataclasses.dataclass
class Fixed:
    """Passed as is, never mutated (a seed, a generator, an internal options dict)."""

    value: Any


@dataclasses.dataclass
class Contract:
    """One valid call shared by ``targets``.

    ``targets``: ``"module:function"`` names, or ``("module:function", {name: spec})`` with extra
    arguments (an entry point's ``view``/``backend``, a per-view option).  ``args``: ``{name: spec}`` in
    call order; ``positional``: how many of them are passed positionally (the rest by keyword).
    ``sizes``: the shape letters.  ``empty``: letters that may be 0 (the function is defined there).
    ``compare``: the list/non-contiguous variants must give the baseline's answer (False for functions
    that return fresh random draws).  ``view_arg``: the argument that names the row of the target's dispatch
    table (``view``; ``method`` for ``discretize``, ``kind`` for ``feature_map``): every backend missing
    from that row is a bad call.
    """

    targets: Sequence[Any]
    args: Dict[str, Any]
    sizes: Dict[str, int] = dataclasses.field(default_factory=dict)
    positional: int = 0
    empty: Tuple[str, ...] = ()
    compare: bool = True
    seed: int = 0
    view_arg: str = "view"


@dataclasses.dataclass
class Call:
    target: str
    label: str
    # "bad" | "valid" | "same" (valid, the baseline's answer) | "finite" (raise, or non-finite out) | "wide" (valid,
    # no float32 answer: one float32 input among float64 ones)
    kind: str
    names: Tuple[str, ...]  # a bad call's error must name one of these
    build: Callable[[], Tuple[tuple, dict]]


# ----------------------------------------------------------------------------------------------- values

def _draw(rng, gen, shape, scale=1.0):
    if callable(gen):
        return np.asarray(gen(rng, shape))
    u = lambda lo, hi: rng.uniform(lo, hi, shape)  # noqa: E731
    if gen == "normal":
        return scale * rng.standard_normal(shape)
    if gen == "pos":
        return scale * u(0.5, 1.5)
    if gen == "neg":
        return -scale * u(0.5, 1.5)
    if gen == "unit":
        return u(0.2, 0.8)
    if gen == "cnormal":
        return scale * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    if gen == "cneg":
        return -u(0.5, 1.5) + 1j * u(-3.0, 3.0)
    if gen == "cdecay":
        return u(0.3, 0.8) * np.exp(1j * u(-3.0, 3.0))
    raise ValueError(f"unknown generator {gen!r}")


def _dims(shape: str) -> List[str]:
    return shape.split() if shape.strip() else []


def _size(tok: str, sizes: Dict[str, int]) -> int:
    """A token's size: a digit string, a letter, or a product ``h*p``."""
    if "*" in tok:
        return int(np.prod([_size(t, sizes) for t in tok.split("*")]))
    return int(tok) if tok.isdigit() else sizes[tok]


def _tok_letters(tok: str) -> List[str]:
    return [t for t in tok.split("*") if not t.isdigit() and t != "..."]


def _concrete(shape: str, sizes: Dict[str, int]) -> Tuple[int, ...]:
    return tuple(_size(t, sizes) for t in _dims(shape) if t != "...")


def _matches(shape: Tuple[int, ...], pattern: str, sizes: Dict[str, int], free=()) -> bool:
    """``shape`` is one that ``pattern`` accepts (a letter in ``free`` matches any size >= 1)."""
    toks = _dims(pattern)
    if toks and toks[0] == "...":
        toks = toks[1:]
        if len(shape) < len(toks):
            return False
        shape = shape[len(shape) - len(toks):]
    if len(shape) != len(toks):
        return False
    return all((t in free and s >= 1) or (t not in free and s == _size(t, sizes)) for s, t in zip(shape, toks))


def _noncontig(a: np.ndarray) -> Optional[np.ndarray]:
    """The same values as a non-contiguous view (None where every layout is contiguous)."""
    if a.ndim == 0 or a.size < 2:
        return None
    big = np.repeat(a, 2, axis=-1)
    v = big[..., ::2]
    if v.flags.c_contiguous:
        v = np.asfortranarray(a)
    if v.flags.c_contiguous:
        return None
    assert np.array_equal(v, a)
    return v


def _int_version(a: np.ndarray) -> np.ndarray:
    return np.round(a.real * 3).astype(np.int64) + 1


# ----------------------------------------------------------------------------------------------- the corpus

def _resolve(target: str) -> Callable:
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _letters(contract_args: Dict[str, Any]) -> Dict[str, List[str]]:
    """letter -> the argument names whose shapes (or integer values) use it."""
    out: Dict[str, List[str]] = {}
    for name, spec in contract_args.items():
        items = spec.items if isinstance(spec, Seq) else (spec,)
        for it in items:
            if isinstance(it, Arr):
                for tok in _dims(it.shape):
                    for t in _tok_letters(tok):
                        if name not in out.get(t, []):
                            out.setdefault(t, []).append(name)
        if isinstance(spec, Int) and spec.letter:
            out.setdefault(spec.letter, []).append(name)
    return out


def _entry_table(target: str):
    """The dispatch table registered under the public name of an entry point, if any."""
    from refimpl._dispatch import registered

    fn = _resolve(target)
    for pub, impls in registered().items():
        pmod, _, pattr = pub.rpartition(".")
        try:
            if getattr(importlib.import_module(pmod), pattr) is fn:
                return impls
        except (ImportError, AttributeError):
            continue
    return None


# valid variants that only re-test the conversion of array-likes and Python/NumPy scalars (the shared validation in
# refimpl._validate, covered on every numpy target): a CUDA target under the simulator runs each valid call as kernel
# launches (one Python thread per GPU thread), so there they are left out; every bad call, the baseline and the
# semantic valid variants (None for an optional input, complex or float32 data, an empty axis) still run.
_CONVERSION_VARIANTS = (": as a nested list", ": a non-contiguous view", ": np.int64", ": np.float64", ": np.bool_",
                        ": a list", ": as a list")


def _on_cuda(name: str, extra: Dict[str, Any]) -> bool:
    backend = extra.get("backend")
    return name.split(":")[0].endswith(".cuda") or getattr(backend, "value", backend) == "cuda"


def calls_for(contract: Contract) -> List[Call]:
    """Every call (the baseline first) that the contract's declaration implies, for every target."""
    out: List[Call] = []
    for tgt in contract.targets:
        name, extra = (tgt, {}) if isinstance(tgt, str) else tgt
        args = dict(contract.args)
        args.update(extra)
        calls = _calls(contract, name, args)
        if _on_cuda(name, extra):
            calls = [c for c in calls if c.kind == "bad" or not c.label.endswith(_CONVERSION_VARIANTS)]
        out.extend(calls)
    return out


def _calls(contract: Contract, target: str, args: Dict[str, Any]) -> List[Call]:
    sizes = dict(contract.sizes)
    letters = _letters(args)
    names = list(args)
    npos = contract.positional

    def values(sz: Dict[str, int], seed: int = contract.seed) -> Dict[str, Any]:
        rng = np.random.default_rng(seed)
        vals = {}
        for nm, spec in args.items():
            if isinstance(spec, Arr):
                shp = _concrete(spec.shape, sz)
                a = _draw(rng, spec.gen, shp, spec.scale)
                if spec.dtype == "bool":
                    a = a.astype(bool) if a.dtype == bool else (a > -0.5)
                elif spec.dtype == "int":
                    a = a.astype(np.int64)
                vals[nm] = a
            elif isinstance(spec, Int):
                vals[nm] = sz[spec.letter] if spec.letter else spec.value
            elif isinstance(spec, Seq):
                vals[nm] = tuple(_draw(rng, it.gen, _concrete(it.shape, sz), it.scale) for it in spec.items)
            elif isinstance(spec, (Real, Flag, Opt, Pair, Fn, DType, Fixed)):
                vals[nm] = spec.value
            else:
                raise TypeError(f"{target}: unknown spec {spec!r} for {nm}")
        return vals

    def call(vals: Dict[str, Any]):
        pos = tuple(vals[n] for n in names[:npos])
        kw = {n: vals[n] for n in names[npos:]}
        return pos, kw

    def mk_fn(label, kind, about, fn_of_vals, _sizes=None):
        sz = dict(sizes)
        sz.update(_sizes or {})

        def build():
            vals = values(sz)
            fn_of_vals(vals)
            return call(vals)

        return Call(target, label, kind, tuple(about), build)

    calls = [mk_fn("baseline", "valid", (), lambda v: None)]

    def setv(name, fn):
        def f(v):
            v[name] = fn(v[name])
        return f

    def const(name, value):
        def f(v):
            v[name] = value
        return f

    for nm, spec in args.items():
        if isinstance(spec, Arr):
            toks = _dims(spec.shape)
            lead_free = toks[:1] == ["..."]
            named = [t for t in toks if t != "..."]
            base_shape = _concrete(spec.shape, sizes)
            accepted = (spec.shape,) + tuple(spec.alt)
            # letters of an accepted shape that no other argument uses: any size is valid there
            free = {t for pat in accepted for t in _dims(pat)
                    if not t.isdigit() and t != "..." and "*" not in t
                    and (set(letters.get(t, [])) <= {nm} or t in spec.free)}

            def reshaped(new_shape, nm=nm, spec=spec):
                def f(v):
                    rng = np.random.default_rng(99)
                    a = _draw(rng, spec.gen, new_shape, spec.scale)
                    if spec.dtype == "bool":
                        a = a > -0.5
                    elif spec.dtype == "int":
                        a = a.astype(np.int64)
                    v[nm] = a
                return f

            # wrong rank
            rank_shapes = []
            if not lead_free:
                rank_shapes.append(("rank+1 (leading axis of 1)", (1,) + base_shape))
                if base_shape:
                    rank_shapes.append(("rank 0 (a scalar)", ()))
                    if len(base_shape) > 1:
                        rank_shapes.append(("rank-1 (first axis dropped)", base_shape[1:]))
                        rank_shapes.append(("rank-1 (last axis dropped)", base_shape[:-1]))
            elif named:
                rank_shapes.append(("rank 0 (named axes missing)", ()))
            for label, shp in rank_shapes:
                if any(_matches(shp, pat, sizes, free) for pat in accepted):
                    continue
                calls.append(mk_fn(f"{nm}: {label} {shp}", "bad", (nm,), reshaped(shp)))
            # a size off by one on an axis whose letter another argument shares
            offset = len(toks) - len(named)
            for i, t in enumerate(named):
                if t.isdigit():
                    shared = True
                else:
                    shared = any(len(letters.get(x, [])) > 1 and x not in spec.free for x in _tok_letters(t))
                if not shared:
                    continue
                # +1 and -1; and 1 itself, the size that NumPy would broadcast against the others
                for delta in sorted({+1, -1, 1 - base_shape[i]}, reverse=True):
                    shp = list(base_shape)
                    shp[i] += delta
                    if shp[i] < 1 or delta == 0:
                        continue
                    shp = tuple(shp)
                    if any(_matches(shp, pat, sizes, free) for pat in accepted):
                        continue
                    lab = f"off by {delta:+d}" if abs(delta) == 1 else "of size 1 (broadcastable)"
                    calls.append(mk_fn(f"{nm}: axis {t} {lab} {shp}", "bad", (nm,), reshaped(shp)))
            # dtypes
            if spec.dtype in ("real", "complex"):
                calls.append(mk_fn(f"{nm}: int64 data", "bad", (nm,), setv(nm, _int_version)))
                calls.append(mk_fn(f"{nm}: bool data", "bad", (nm,), setv(nm, lambda a: a.real > 0)))
                calls.append(mk_fn(f"{nm}: float16 data", "bad", (nm,), setv(nm, lambda a: a.real.astype(np.float16))))
                if spec.dtype == "real":
                    calls.append(mk_fn(f"{nm}: complex data", "bad", (nm,), setv(nm, lambda a: a + 0.5j)))
                else:
                    calls.append(mk_fn(f"{nm}: complex data", "valid", (), setv(nm, lambda a: a + 0.25j)))
                # float32 among float64 arrays: valid, and never a silent downcast of the answer
                others = any(isinstance(o, Arr) and o.dtype in ("real", "complex") and k != nm
                             for k, o in args.items())
                calls.append(mk_fn(f"{nm}: float32 data", "wide" if others else "valid", (),
                                   setv(nm, lambda a: a.astype(np.complex64 if np.iscomplexobj(a) else np.float32))))
                # non-finite
                for lab, val in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
                    def put(a, val=val):
                        a = np.array(a, dtype=np.result_type(a.dtype, np.float64), copy=True)
                        if a.size == 0:
                            return a
                        a.flat[a.size // 2] = val
                        return a
                    if int(np.prod(base_shape)) == 0:
                        continue
                    if lab in spec.allow:
                        kind = "valid"
                    elif spec.nonfinite == "propagate":
                        kind = "finite"
                    else:
                        kind = "bad"
                    calls.append(mk_fn(f"{nm}: {lab} entry", kind, (nm,), setv(nm, put)))
                if spec.positive:
                    calls.append(mk_fn(f"{nm}: a zero entry", "bad", (nm,), setv(nm, lambda a: _put(a, 0.0))))
                    calls.append(mk_fn(f"{nm}: a negative entry", "bad", (nm,), setv(nm, lambda a: _put(a, -0.5))))
            elif spec.dtype == "bool":
                for lab, dt in (("float data for a bool mask", np.float64), ("int data for a bool mask", np.int64)):
                    calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), setv(nm, lambda a, dt=dt: a.astype(dt))))
            elif spec.dtype == "int":
                calls.append(mk_fn(f"{nm}: float data for integers", "bad", (nm,),
                                   setv(nm, lambda a: a.astype(np.float64))))
                calls.append(mk_fn(f"{nm}: bool data for integers", "bad", (nm,), setv(nm, lambda a: a > 0)))
            # kinds of object
            calls.append(mk_fn(f"{nm}: a string", "bad", (nm,), const(nm, "abc")))
            if len(base_shape) >= 1 and base_shape[0] >= 2 and spec.dtype in ("real", "complex"):
                def ragged(a):
                    rows = a.tolist()
                    rows[-1] = rows[-1][:-1]
                    return rows
                if len(base_shape) >= 2:
                    calls.append(mk_fn(f"{nm}: a ragged list", "bad", (nm,), setv(nm, ragged)))
            if spec.optional:
                calls.append(mk_fn(f"{nm}: None (optional)", "valid", (), const(nm, None)))
            else:
                calls.append(mk_fn(f"{nm}: None", "bad", (nm,), const(nm, None)))
            # valid variants that must give the same answer
            if spec.listable:
                calls.append(mk_fn(f"{nm}: as a nested list", "same" if contract.compare else "valid", (),
                                   setv(nm, lambda a: a.tolist())))
            else:  # a list means something else here (a tuple of arrays): refused, by name
                calls.append(mk_fn(f"{nm}: as a nested list", "bad", (nm,), setv(nm, lambda a: a.tolist())))
            if _noncontig(np.zeros(base_shape)) is not None:
                calls.append(mk_fn(f"{nm}: a non-contiguous view", "same" if contract.compare else "valid", (),
                                   setv(nm, lambda a: _noncontig(a))))
        elif isinstance(spec, Int):
            if spec.letter:
                continue  # mutated through the sizes (empty) and the arrays (off by one)
            bad = [("2.5", 2.5), ("a string", str(spec.value)), ("True", True)]
            if not spec.none_ok:
                bad.append(("None", None))
            if spec.minimum is not None:
                bad.append((f"below the minimum ({spec.minimum - 1})", spec.minimum - 1))
            if spec.maximum is not None:
                bad.append((f"above the maximum ({spec.maximum + 1})", spec.maximum + 1))
            for lab, val in bad:
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
            if spec.value is not None:
                calls.append(mk_fn(f"{nm}: np.int64", "same" if contract.compare else "valid", (),
                                   setv(nm, lambda x: np.int64(x))))
        elif isinstance(spec, Real):
            bad = [("a string", "1.0"), ("True", True), ("complex", 1.0 + 1.0j), ("an array of shape (2,)", np.ones(2))]
            for lab, val in (("nan", math.nan), ("+inf", math.inf), ("-inf", -math.inf)):
                if val not in spec.nonfinite_ok:
                    bad.append((lab, val))
            if not spec.none_ok:
                bad.append(("None", None))
            if spec.positive:
                bad += [("0", 0.0), ("negative", -0.5)]
            elif spec.nonneg:
                bad += [("negative", -0.5)]
            if spec.lo is not None:
                bad.append((f"below {spec.lo}", spec.lo - 0.25))
            if spec.hi is not None:
                bad.append((f"above {spec.hi}", spec.hi + 0.25))
            for lab, val in bad:
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
            if spec.value is not None:
                calls.append(mk_fn(f"{nm}: np.float64", "same" if contract.compare else "valid", (),
                                   setv(nm, lambda x: np.float64(x))))
        elif isinstance(spec, Flag):
            for lab, val in (("'False'", "False"), ("'True'", "True"), ("0", 0), ("1", 1), ("None", None)):
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
            calls.append(mk_fn(f"{nm}: np.bool_", "same" if contract.compare else "valid", (),
                               setv(nm, lambda x: np.bool_(x))))
        elif isinstance(spec, Opt):
            bad = [("'bogus'", "bogus"), ("1", 1)]
            if spec.value is not None and spec.value.upper() != spec.value:
                bad.append(("upper case", spec.value.upper()))
            if not spec.none_ok:
                bad.append(("None", None))
            for lab, val in bad:
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
        elif isinstance(spec, Pair):
            lo, hi = spec.value
            bad = [("reversed (hi < lo)", (1.0, 0.5)), ("one number", 0.5), ("a 1-tuple", (0.0,)),
                   ("three numbers", (0.0, 1.0, 2.0)), ("nan", (math.nan, 1.0)), ("strings", ("0", "1")),
                   ("None", None)]
            if spec.nonneg:
                bad.append(("negative lo", (-1.0, 1.0)))
            for lab, val in bad:
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
            calls.append(mk_fn(f"{nm}: a list", "same" if contract.compare else "valid", (), const(nm,
                                                                                                   list(spec.value))))
        elif isinstance(spec, Seq):
            seq_bad = [("a string", lambda t: "ab"), ("one item", lambda t: t[:1]), ("one item too many",
                                                                                     lambda t: t + t[:1])]
            if not spec.optional:
                seq_bad.append(("None", lambda t: None))
            for lab, fn in seq_bad:
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), setv(nm, fn)))
            calls.append(mk_fn(f"{nm}: as a list", "same" if contract.compare else "valid", (), setv(nm, list)))
            if spec.optional:
                calls.append(mk_fn(f"{nm}: None (optional)", "valid", (), const(nm, None)))
            for i, it in enumerate(spec.items):
                shp = _concrete(it.shape, sizes)

                def item(fn, i=i):
                    return lambda t: tuple(fn(x) if j == i else x for j, x in enumerate(t))

                muts = [("int64 data", _int_version),
                        ("nan entry", lambda a: _put(a.astype(np.result_type(a, float)), np.nan)),
                        ("a leading axis of 1", lambda a: a[None])]
                if it.dtype == "real":
                    muts.append(("complex data", lambda a: a + 0.5j))
                for j, tok in enumerate(_dims(it.shape)):
                    if any(len(letters.get(x, [])) > 1 or len(spec.items) > 1 for x in _tok_letters(tok)):
                        muts.append((f"axis {tok} off by +1",
                                     lambda a, j=j: np.concatenate([a, a.take([0], axis=j)], axis=j)))
                for lab, fn in muts:
                    calls.append(mk_fn(f"{nm}[{i}]: {lab}", "bad", (nm,), setv(nm, item(fn))))
        elif isinstance(spec, Fn):
            for lab, val in (("a string", "relu"), ("1", 1)):
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
            if not spec.none_ok:
                calls.append(mk_fn(f"{nm}: None", "bad", (nm,), const(nm, None)))
        elif isinstance(spec, DType):
            for lab, val in (("int64", np.int64), ("'bogus'", "bogus"), ("float16", np.float16)):
                calls.append(mk_fn(f"{nm}: {lab}", "bad", (nm,), const(nm, val)))
    # view/backend pairs that the dispatch table does not hold
    if contract.view_arg in args or "backend" in args:
        table = _entry_table(target)
        if table is not None:
            from refimpl._dispatch import BACKENDS

            view = args[contract.view_arg].value if contract.view_arg in args else table.views[0]
            for be in BACKENDS:
                if view is not None and (view, be) not in table.pairs():
                    calls.append(mk_fn(f"backend: {be!r} (no such pair for view {view!r})", "bad", ("backend",),
                                       const("backend", be)))
    # an empty axis: the letter's size 0 in every argument
    for t, owners in letters.items():
        if sizes.get(t, 0) == 0:
            continue
        kind = "valid" if t in contract.empty else "bad"
        calls.append(mk_fn(f"empty axis {t} (size 0)", kind, tuple(owners), lambda v: None, _sizes={t: 0}))
    return calls


def _put(a, val):
    a = np.array(a, copy=True)
    a.flat[a.size // 2] = val
    return a


# ----------------------------------------------------------------------------------------------- running

def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and _same(dataclasses.asdict(a), dataclasses.asdict(b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _nonfinite(out) -> bool:
    if isinstance(out, (tuple, list)):
        return any(_nonfinite(o) for o in out)
    if isinstance(out, dict):
        return any(_nonfinite(o) for o in out.values())
    try:
        a = np.asarray(out)
    except Exception:  # noqa: BLE001
        return False
    return a.dtype.kind in "fc" and not np.all(np.isfinite(a))


def _narrow(out) -> bool:
    """Some floating array of the answer is float32/complex64 (or narrower)."""
    if isinstance(out, (tuple, list)):
        return any(_narrow(o) for o in out)
    if isinstance(out, dict):
        return any(_narrow(o) for o in out.values())
    return isinstance(out, np.ndarray) and out.dtype.kind in "fc" and out.dtype.itemsize < (8 if out.dtype.kind == "f"
                                                                                           else 16)


def _names(msg: str, names: Sequence[str]) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", msg) for n in names)


@dataclasses.dataclass
class Finding:
    target: str
    label: str
    what: str  # "silent" | "misnamed" | "other" | "refused" (a valid call raised) | "differs" | "baseline"
    detail: str

    def __str__(self):
        return f"{self.target} [{self.label}] {self.what}: {self.detail}"


def run_calls(calls: Sequence[Call], timeout: float = 60.0) -> Tuple[List[Finding], int]:
    """Run ``calls`` (the first of each target is its baseline); returns the findings and how many ran."""
    findings: List[Finding] = []
    baseline: Dict[str, Any] = {}
    ran = 0
    for c in calls:
        fn = _resolve(c.target)
        try:
            pos, kw = c.build()
        except Exception as exc:  # noqa: BLE001 - a corpus bug, reported as such
            findings.append(Finding(c.target, c.label, "corpus", f"could not build the call: {exc!r}"))
            continue
        faulthandler.dump_traceback_later(timeout, exit=True)
        ran += 1
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out = fn(*pos, **kw)
        except (TypeError, ValueError) as exc:
            if c.kind == "bad" or c.kind == "finite":
                if not _names(str(exc), c.names):
                    findings.append(Finding(c.target, c.label, "misnamed",
                                            f"{type(exc).__name__}({str(exc)[:200]!r}) names none of {c.names}"))
            elif c.label == "baseline":
                findings.append(Finding(c.target, c.label, "baseline", f"{type(exc).__name__}: {exc}"))
            else:
                findings.append(Finding(c.target, c.label, "refused", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        except Exception as exc:  # noqa: BLE001
            findings.append(Finding(c.target, c.label, "other", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        finally:
            faulthandler.cancel_dump_traceback_later()
        if c.label == "baseline":
            baseline[c.target] = out
        elif c.kind == "bad":
            findings.append(Finding(c.target, c.label, "silent", "returned an answer"))
        elif c.kind == "finite":
            if not _nonfinite(out):
                findings.append(Finding(c.target, c.label, "silent", "a non-finite input gave a finite answer"))
        elif c.kind == "same" and c.target in baseline and not _same(out, baseline[c.target]):
            findings.append(Finding(c.target, c.label, "differs", "not the baseline's answer"))
        elif c.kind == "wide" and _narrow(out):
            findings.append(Finding(c.target, c.label, "downcast", "one float32 input among float64 ones gave a "
                                    "float32/complex64 answer"))
    return findings, ran
