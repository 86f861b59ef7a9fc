r"""Why a gradient does not conform: which input's gradient is wrong, and where.

For each failing ``grad X`` (in order; the first that fits is said):

* NaN/Inf where the oracle is finite; a shape mismatch; no gradient flowing (compared as zeros);
* **the sign** (``cand = -oracle`` within the bound), **the conjugate** (complex: ``cand = conj(oracle)``, e.g.
  JAX's convention left unconverted), **a constant factor** (``cand / oracle`` the same ratio ``k`` wherever the
  oracle is well above its bound, and ``cand = k oracle`` within ``|k|`` times the bound: "scaled by 0.5");
* **the initial state** (an input with no ``l`` axis whose name says it is a state: ``initial_state``, ``h0``,
  ``W0``, ``S0``, ...): "the gradient of the initial state X is wrong";
* **along the sequence** (``X`` has an ``l`` axis): the positions where ``max err/bound > 1`` -- only the first or
  only the last (a reverse scan started one step late, or its last step dropped), everything from a position
  ``p > 0`` on, or up to it (said with whether ``p`` is a multiple of the op's chunk convention or of a power
  of two: an error at the chunk boundary), or every position ("wrong everywhere");
* otherwise: "wrong everywhere" (more than half the entries out of bound) or "wrong at k of n entries (first at
  index i)".
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

__all__ = ["diagnose", "describe_input"]

_STATE_WORDS = ("state", "h0", "W0", "S0", "x0", "initial", "h_0", "s0")


def _pattern(spec, name: str, ndim: int) -> Optional[List[str]]:
    for a in spec.inputs:
        if a.name == name:
            return a.pattern_for(ndim)
    return None


def _chunk(conv: Mapping[str, Any]) -> Optional[int]:
    for k, v in conv.items():
        if "chunk" in k and isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
            return int(v)
    return None


def _boundary(p: int, conv) -> str:
    c = _chunk(conv)
    parts = []
    if c and p % c == 0:
        parts.append(f"a multiple of the chunk size {c}: the error starts at a chunk boundary")
    elif p > 0 and (p & (p - 1)) == 0:
        parts.append(f"a power of two ({p}): a block or chunk boundary?")
    elif p > 0:
        k = p & -p
        if k >= 2:
            parts.append(f"a multiple of {k}")
    return f" ({'; '.join(parts)})" if parts else ""


def _close(a: np.ndarray, b: np.ndarray, bound: np.ndarray) -> bool:
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(a - b) <= bound))


def describe_input(spec, conv, name: str, cand: Optional[np.ndarray], oracle: np.ndarray, bound: np.ndarray) -> str:
    """One sentence on what is wrong with ``grad name``."""
    o = np.asarray(oracle)
    if cand is None:
        return f"no gradient flows to {name} (the candidate treats it as a constant)"
    c = np.asarray(cand)
    if c.dtype.kind == "V" or c.dtype.name in ("bfloat16", "float16"):
        c = c.astype(np.float64)
    if c.shape != o.shape:
        return f"grad {name} has shape {c.shape}, expected {o.shape} (the input's)"
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), o.shape)
    if o.size == 0:
        return f"grad {name} is wrong"
    bad_nf = np.isfinite(o) & ~np.isfinite(c)
    if bad_nf.any():
        i = tuple(int(j) for j in np.argwhere(bad_nf)[0])
        return f"grad {name} has {int(bad_nf.sum())} NaN/Inf where the oracle is finite (first at {i})"
    if np.all(c == 0) and np.any(np.abs(o) > b):
        return f"grad {name} is zero everywhere (no gradient reaches {name})"
    if _close(c, -o, b):
        return f"grad {name} has the wrong sign (= -oracle everywhere)"
    if np.iscomplexobj(c) or np.iscomplexobj(o):
        if _close(c, np.conj(o), b):
            return (f"grad {name} is the complex conjugate of the oracle's (dL/da - i dL/db; the convention here is "
                    "dL/da + i dL/db, PyTorch's)")
    big = np.abs(o) > 10 * b
    if big.sum() >= 2:
        ratio = c[big] / o[big]
        k = complex(np.median(ratio.real) + 1j * np.median(ratio.imag)) if np.iscomplexobj(ratio) else \
            float(np.median(ratio))
        if abs(k) > 0 and abs(k - 1) > 1e-6 and _close(c, k * o, b * max(1.0, abs(k))):
            kk = k.real if isinstance(k, complex) and abs(k.imag) < 1e-12 else k
            return f"grad {name} is scaled by {kk:.6g} (cand = {kk:.6g} x oracle everywhere)"
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_eb = np.where(b > 0, np.abs(c - o) / b, np.where(np.abs(c - o) > 0, np.inf, 0.0))
    fail = ratio_eb > 1
    pat = _pattern(spec, name, o.ndim)
    if pat is None or "l" not in pat:
        if any(w.lower() in name.lower() for w in _STATE_WORDS):
            return f"the gradient of the initial state {name} is wrong ({int(fail.sum())} of {fail.size} entries)"
        if fail.mean() > 0.5:
            return f"grad {name} is wrong everywhere ({int(fail.sum())} of {fail.size} entries out of bound)"
        i = tuple(int(j) for j in np.argwhere(fail)[0])
        return f"grad {name} is wrong at {int(fail.sum())} of {fail.size} entries (first at index {i})"
    ax = pat.index("l")
    L = o.shape[ax]
    per = np.moveaxis(fail, ax, 0).reshape(L, -1).any(axis=1)
    pos = np.flatnonzero(per)
    if len(pos) == L and L > 1:
        return f"grad {name} is wrong everywhere (at all {L} positions along l)"
    if len(pos) == 1 and pos[0] == L - 1 and L > 1:
        return (f"grad {name} is wrong only at the last position l = {L - 1} (the reverse scan's first step: "
                "started one step late, or a cotangent of the last step dropped)")
    if len(pos) == 1 and pos[0] == 0 and L > 1:
        return (f"grad {name} is wrong only at the first position l = 0 (the reverse scan's last step, or the "
                "initial state's contribution)")
    p0 = int(pos[0])
    if p0 > 0 and np.all(per[p0:]):
        return f"grad {name} is wrong from position l = {p0} on (of {L}){_boundary(p0, conv)}"
    p1 = int(pos[-1]) + 1
    if p1 < L and np.all(per[:p1]):
        return f"grad {name} is wrong up to position l = {p1 - 1} (right from l = {p1} of {L} on){_boundary(p1, conv)}"
    return (f"grad {name} is wrong at {len(pos)} of {L} positions along l (first at l = {p0}"
            f"{_boundary(p0, conv) if p0 else ''})")


def diagnose(spec, gspec, conv, x_up, fd, cand: Mapping[str, Any], bounds: Mapping[str, Any],
             results: List[Any]) -> str:
    """The failing gradients' sentences, joined (``grad D is wrong everywhere; grad u is fine`` style)."""
    parts = []
    for r in results:
        if r.passed:
            continue
        name = r.output[len("grad "):]
        try:
            parts.append(describe_input(spec, conv, name, cand.get(name), fd.grad[name], bounds[name].values))
        except Exception as exc:  # a diagnosis must never hide the verdict
            parts.append(f"grad {name} is wrong (the diagnosis failed: {type(exc).__name__}: {exc})")
    ok = [r.output for r in results if r.passed]
    if parts and ok:
        parts.append(f"{', '.join(ok)} conform{'s' if len(ok) == 1 else ''}")
    return "; ".join(parts)
