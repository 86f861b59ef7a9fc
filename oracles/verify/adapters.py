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

from oracles.verify.layout import deinterleave_complex, interleave_complex, rearrange

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
    def _value(self, item, inputs, conv, dims, convert):
        if isinstance(item, In):
            v = inputs.get(item.name)
            if v is None:
                return None
            v = np.asarray(v)
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
            return convert(v)
        if isinstance(item, Conv):
            return item.fn(conv)
        if isinstance(item, Const):
            return item.value
        if isinstance(item, Group):
            return tuple(self._value(i, inputs, conv, dims, convert) for i in item.items)
        raise TypeError(f"adapter {self.name}: unknown argument item {item!r}")

    def build_call(self, spec, inputs: Mapping[str, Any], conv: Mapping[str, Any], dims: Mapping[str, int],
                   convert: Callable[[Any], Any] = lambda a: a) -> Tuple[list, dict]:
        """The positional and keyword arguments for one call (arrays passed through ``convert``)."""
        if self.args is None:
            args = [int(inputs[a.name]) if (a.kind == "int" and a.shape == "" and inputs.get(a.name) is not None)
                    else convert(inputs.get(a.name)) for a in spec.inputs]
            while args and args[-1] is None and spec.inputs[len(args) - 1].optional:
                args.pop()
        else:
            args = [self._value(i, inputs, conv, dims, convert) for i in self.args]
        kwargs = {}
        for k, item in self.kwargs.items():
            v = self._value(item, inputs, conv, dims, convert)
            if v is not None:
                kwargs[k] = v
        return args, kwargs

    def read_outputs(self, spec, ret: Any, dims: Mapping[str, int], to_numpy: Callable[[Any], Any],
                     conv: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Canonical outputs (NumPy, candidate dtype) from the candidate's return value."""
        outs = self.outputs
        if outs is None:
            rets = getattr(spec, "returns", None) or spec.outputs
            outs = tuple(Out(a.name, i if len(rets) > 1 else None) for i, a in enumerate(rets))
        result: Dict[str, Any] = {}
        none = set()
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
