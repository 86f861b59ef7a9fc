"""Layout adapters: how a third-party function's call maps to an op's canonical signature.

An :class:`Adapter` is a declaration: which canonical input goes to which
positional/keyword argument, rearranged by an einops-style pattern
(:mod:`oracles.verify.layout`); which conventions become which arguments; which
conventions the adapted function *implies* (Mamba's kernel discretizes B by
Euler; FlashAttention aligns a causal mask bottom-right); where each output is
in the return value and how it is laid out; and which canonical axis to loop
over when the function is unbatched.  The harness does everything else.

Building blocks for ``args``/``kwargs``:

* ``In(name, pattern=None, complex=None, scalar=False, min_ndim=0)`` -- a canonical input.
  ``pattern`` maps canonical -> candidate layout (a string, or a function of the conventions
  returning one or None, e.g. a state transposed only for ``state_layout="kv"``).  ``complex="interleave"``
  passes complex data as real with (re, im) interleaved along the last axis
  (Mamba's complex variable B/C: ``min_ndim=3``; ``complex_with="A"``: whenever ``A`` is complex,
  a real variable B/C is passed as complex with zero imaginary part, since the interface has no
  real-B-with-complex-A form).  ``scalar=True`` passes a Python float.
* ``Conv(fn)`` -- a value computed from the conventions (``fn(conv)``).
* ``Const(value)``.
* ``Group(item, ...)`` -- a tuple of items (scipy's ``(A, B, C, D)`` system).

Outputs: ``Out(name, index, pattern=None, complex=None)`` -- ``index`` is a
position in a returned tuple, a key of a returned dict, or ``None`` for a
single returned array; ``pattern`` maps candidate -> canonical layout.  A
candidate may also return a dict keyed by the canonical output names.  An output
whose place in the return value holds ``None`` was asked for and not computed:
:class:`Outputs` names it (``returned_none``) and the harness fails the case; an
output with no place at all (a shorter tuple, a missing key) was not returned.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from oracles.verify.layout import deinterleave_complex, interleave_complex, inverse, rearrange

__all__ = ["In", "Conv", "Const", "Group", "Out", "Adapter", "Outputs", "register_adapter", "get_adapter",
           "adapters_for", "CANONICAL"]


class Outputs(dict):
    """Canonical outputs read from a candidate's return value (``{name: array}``).

    ``returned_none``: the outputs whose place in the return value held ``None``.
    """

    def __init__(self, *args, returned_none=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.returned_none = set(returned_none)


@dataclasses.dataclass(frozen=True)
class In:
    name: str
    pattern: Optional[str] = None
    complex: Optional[str] = None
    scalar: bool = False
    min_ndim: int = 0  # apply ``complex`` only to arrays with at least this many axes (Mamba: variable B/C)
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None  # elementwise map (e.g. np.log: decay -> log decay)
    complex_with: Optional[str] = None  # with complex="interleave": interleave (as complex) whenever this input is complex


@dataclasses.dataclass(frozen=True)
class Conv:
    fn: Callable[[Mapping[str, Any]], Any]
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Const:
    value: Any


@dataclasses.dataclass(frozen=True)
class Group:
    items: Tuple[Any, ...]

    def __init__(self, *items):
        object.__setattr__(self, "items", tuple(items))


@dataclasses.dataclass(frozen=True)
class Out:
    name: str
    index: Any = None
    pattern: Optional[str] = None
    complex: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A declarative mapping from an op's canonical signature to a third-party call.

    ``args``/``kwargs``: the call (``None`` as a value of ``args``: the canonical
    inputs in their declared order).  ``kwargs`` entries whose value resolves to
    ``None`` are not passed (the function's own default applies).
    ``outputs``: ``None`` means the canonical outputs in declared order.
    ``implies``: conventions the adapted function fixes; ``verify`` refuses a
    contradicting request.  ``vectorize``: a canonical axis to loop over.
    ``sizes``: fixed axis sizes used in patterns (``{"two": 2}``).
    """

    name: str
    op: str
    doc: str
    args: Optional[Tuple[Any, ...]] = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    outputs: Optional[Tuple[Out, ...]] = None
    implies: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    vectorize: Optional[str] = None
    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)

    # -- the mapping, in NumPy ------------------------------------------------
    def _value(self, item, inputs, conv, dims, convert, leaf=None):
        if isinstance(item, In):
            v = inputs.get(item.name)
            if v is None:
                return None
            v = np.asarray(v)
            v0 = v
            if item.transform is not None:
                v = np.asarray(item.transform(v))
            pat = item.pattern(conv) if callable(item.pattern) else item.pattern
            if pat:
                v = rearrange(v, pat, **{**dims, **self.sizes})
            if (item.complex == "interleave" and item.complex_with is not None and v.ndim >= item.min_ndim
                    and np.iscomplexobj(inputs.get(item.complex_with))):
                v = v.astype(np.result_type(v.dtype, np.complex64))  # real data in a complex slot: imaginary part 0
            if item.complex == "interleave" and np.iscomplexobj(v) and v.ndim >= item.min_ndim:
                v = interleave_complex(v)
            if item.scalar:
                return int(v) if v.dtype.kind in "iu" else v.item()
            return convert(v) if leaf is None else leaf(item, v0, v)
        if isinstance(item, Conv):
            return item.fn(conv)
        if isinstance(item, Const):
            return item.value
        if isinstance(item, Group):
            return tuple(self._value(i, inputs, conv, dims, convert, leaf) for i in item.items)
        raise TypeError(f"adapter {self.name}: unknown argument item {item!r}")

    def build_call(self, spec, inputs: Mapping[str, Any], conv: Mapping[str, Any], dims: Mapping[str, int],
                   convert: Callable[[Any], Any] = lambda a: a, leaf: Optional[Callable[..., Any]] = None
                   ) -> Tuple[list, dict]:
        """The positional and keyword arguments for one call (arrays passed through ``convert``).

        ``leaf(item, canonical value, value in the candidate's layout) -> framework array``, when given, converts
        every array that comes from a canonical input instead of ``convert`` (the gradient harness makes
        differentiable leaves there and pulls their gradients back with :meth:`pull_back`).
        """
        if self.args is None:
            def one(a):
                v = inputs.get(a.name)
                if a.kind == "int" and a.shape == "" and v is not None:
                    return int(v)
                if leaf is None or v is None:
                    return convert(v)
                return leaf(In(a.name), np.asarray(v), np.asarray(v))

            args = [one(a) for a in spec.inputs]
            while args and args[-1] is None and spec.inputs[len(args) - 1].optional:
                args.pop()
        else:
            args = [self._value(i, inputs, conv, dims, convert, leaf) for i in self.args]
        kwargs = {}
        for k, item in self.kwargs.items():
            v = self._value(item, inputs, conv, dims, convert, leaf)
            if v is not None:
                kwargs[k] = v
        return args, kwargs

    def select_outputs(self, spec, ret: Any) -> List[Tuple[Out, Any]]:
        """``[(Out, raw value in the candidate's framework and layout)]`` for each output found in ``ret``
        (``None`` as the value: its place held ``None``)."""
        outs = self.outputs
        if outs is None:
            rets = getattr(spec, "returns", None) or spec.outputs
            outs = tuple(Out(a.name, i if len(rets) > 1 else None) for i, a in enumerate(rets))
        found: List[Tuple[Out, Any]] = []
        for o in outs:
            if isinstance(ret, dict) and (o.index is None or isinstance(o.index, int)):
                if o.name not in ret:  # a candidate returning a dict keyed by the canonical output names
                    continue
                v = ret[o.name]
            elif o.index is None:
                v = ret[0] if isinstance(ret, (tuple, list)) else ret
            elif isinstance(ret, dict):
                if o.index not in ret:
                    continue
                v = ret[o.index]
            elif isinstance(ret, (tuple, list)):
                if isinstance(o.index, int) and o.index >= len(ret):
                    continue  # an optional output the candidate did not return
                v = ret[o.index]
            else:
                if o.index != 0:
                    continue
                v = ret
            found.append((o, v))
        return found

    def read_outputs(self, spec, ret: Any, dims: Mapping[str, int], to_numpy: Callable[[Any], Any],
                     conv: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Canonical outputs (NumPy, candidate dtype) from the candidate's return value."""
        result: Dict[str, Any] = {}
        none = set()
        for o, v in self.select_outputs(spec, ret):
            if v is None:
                none.add(o.name)  # its place held None: asked for, not computed
                continue
            v = to_numpy(v)
            if o.complex == "interleave" and not np.iscomplexobj(v):
                v = deinterleave_complex(v)
            pat = o.pattern(conv or {}) if callable(o.pattern) else o.pattern
            if pat:
                v = rearrange(v, pat, **{**dims, **self.sizes})
            result[o.name] = v
        return Outputs(result, returned_none=none)

    # -- the gradient's route through the layout (oracles.verify.grad_harness) --------------------------------
    def cotangent_to_candidate(self, o: Out, w: np.ndarray, raw_is_complex: bool, conv: Mapping[str, Any],
                               dims: Mapping[str, int]) -> np.ndarray:
        """A canonical output's cotangent in the candidate's layout of that output (the inverse of
        :meth:`read_outputs`' map, which is a permutation: ``<w, y>`` is the same number in both layouts; an
        interleaved complex output pairs ``(w.re, w.im)`` with ``(y.re, y.im)``, i.e. ``Re conj(w) y``)."""
        w = np.asarray(w)
        pat = o.pattern(conv or {}) if callable(o.pattern) else o.pattern
        if pat:
            w = rearrange(w, inverse(pat), **{**dims, **self.sizes})
        if o.complex == "interleave" and not raw_is_complex and np.iscomplexobj(w):
            w = interleave_complex(w)
        return w

    def pull_back(self, item: In, v0: np.ndarray, G: np.ndarray, conv: Mapping[str, Any],
                  dims: Mapping[str, int], inputs: Optional[Mapping[str, Any]] = None) -> np.ndarray:
        """The gradient with respect to the canonical input ``v0`` from ``G``, the gradient with respect to the
        array the candidate received (its layout): each step of :meth:`_value` undone in reverse --
        interleaved (re, im) back to complex (``dL/da + i dL/db``), a real input passed in a complex slot gets
        the real part, the pattern's inverse permutation, and the ``transform``'s pullback (a layout map: by the
        index trick, ``np.add.at``; an elementwise analytic map: by its complex-step derivative)."""
        G = np.asarray(G)
        v0 = np.asarray(v0)
        v1 = np.asarray(item.transform(v0)) if item.transform is not None else v0
        pat = item.pattern(conv) if callable(item.pattern) else item.pattern
        v2 = rearrange(v1, pat, **{**dims, **self.sizes}) if pat else v1
        upcast = (item.complex == "interleave" and item.complex_with is not None and v2.ndim >= item.min_ndim
                  and inputs is not None and np.iscomplexobj(inputs.get(item.complex_with)))
        v3_complex = np.iscomplexobj(v2) or upcast
        if item.complex == "interleave" and v3_complex and v2.ndim >= item.min_ndim and not np.iscomplexobj(G):
            G = deinterleave_complex(G)
        if not np.iscomplexobj(v2) and np.iscomplexobj(G):
            G = G.real
        if pat:
            G = rearrange(G, inverse(pat), **{**dims, **self.sizes})
        if item.transform is not None:
            G = _transform_pullback(item.transform, v0, G)
        return G


def _transform_pullback(T: Callable[[np.ndarray], np.ndarray], v0: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``J_T(v0)^T G`` for an adapter's ``transform``: a layout map (every output entry a copy of one input entry:
    found by mapping an array of indices) or an elementwise real-analytic map (``T'(v0)`` by the complex step
    ``Im T(v0 + i t) / t``, exact to rounding)."""
    n = v0.size
    # entries -1, -2, ..., -n: a layout map keeps them (each output entry names its source), while an
    # elementwise map (abs, exp, log, square, negation) moves them off that set
    idx = -(np.arange(n, dtype=np.float64) + 1.0).reshape(v0.shape)
    with np.errstate(all="ignore"):
        try:
            mapped = np.asarray(T(idx))
        except Exception:
            mapped = None
    if (mapped is not None and mapped.dtype.kind in "fiu" and mapped.shape == G.shape and np.all(np.isfinite(mapped))
            and np.all(mapped == np.round(mapped)) and np.all((mapped <= -1) & (mapped >= -n))):
        out = np.zeros(n, dtype=np.result_type(G.dtype, np.float64))
        np.add.at(out, (-mapped - 1).astype(np.int64).ravel(), G.ravel())
        return out.reshape(v0.shape)
    if np.iscomplexobj(v0):
        raise ValueError("adapter transform: cannot pull a gradient back through a transform of a complex input")
    t = 1e-30
    with np.errstate(all="ignore"):
        d = np.imag(np.asarray(T(v0.astype(np.complex128) + 1j * t))) / t
    if d.shape != v0.shape or not np.all(np.isfinite(d)):
        raise ValueError("adapter transform: neither a layout map nor an elementwise analytic map; "
                         "its gradient cannot be pulled back")
    return G * d


def canonical_adapter(op: str) -> Adapter:
    return Adapter(name="canonical", op=op, doc="the op's canonical signature: inputs positionally in declared order, "
                   "outputs as a tuple in declared order (or one array)")


CANONICAL = "canonical"
_ADAPTERS: Dict[Tuple[str, str], Adapter] = {}


def register_adapter(ad: Adapter) -> Adapter:
    _ADAPTERS[(ad.op, ad.name)] = ad
    return ad


def adapters_for(op: str) -> List[Adapter]:
    # (an op's own "canonical" adapter, when it registers one, is the canonical signature: not listed as an extra)
    return [a for (o, n), a in sorted(_ADAPTERS.items()) if o == op and n != CANONICAL]


def get_adapter(op: str, name: Optional[str]) -> Adapter:
    from oracles.verify.registry import _load_all

    _load_all()
    if name is None or name == CANONICAL:
        # an op may register its own canonical adapter (e.g. one that honours a state_layout convention)
        return _ADAPTERS.get((op, CANONICAL)) or canonical_adapter(op)
    if (op, name) not in _ADAPTERS:
        have = [a.name for a in adapters_for(op)]
        raise ValueError(f"adapter: expected one of {[CANONICAL] + have} for op {op}, got {name!r}")
    return _ADAPTERS[(op, name)]
