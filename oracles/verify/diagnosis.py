r"""The diagnosis of a failing case: one short sentence naming the likely cause, and an error map.

A failing verdict is most useful when it says *why*.  The usual causes of a mismatch are few and each
leaves a fingerprint that a handful of oracle calls can recognise.  :func:`diagnose` tries them in this
order and names the first that explains the failure:

1. **lower precision** -- every entry of the failing outputs is exactly a float32 / float16 / bfloat16
   value while the oracle's are not (the kernel computes or stores in that dtype and widens); or, tried
   after every other exact cause (an ``A -> 0`` case can make a real convention difference as small as
   float32 rounding), the candidate's error matches our reference run in that dtype on the same inputs,
   normwise and at the median entry, within a factor of :data:`PRECISION_FACTOR`, while that reference
   itself fails the asked dtype's bound;
2. **two arguments swapped** -- the candidate conforms to the oracle run with two same-shape inputs
   exchanged (``beta`` read as the decay); where the adapter transforms an input on its way to the
   candidate (FLA's log-decay ``g = log(alpha)``), the candidate is re-run with the two arguments of
   its own call exchanged;
3. **a shift by one step** -- an integer convention off by one (a window edge); the output one step
   late or early (``out[t]`` equals the oracle's ``out[t -+ 1]``); the output read before the state
   update (``out[t]`` reads the state after step ``t - 1``: the oracle run with the inputs that drive
   the state delayed by one step against the inputs that read it, plus the skip term ``D`` of the
   current step);
4. **a pattern along time** -- errors only in the last, partial chunk; errors that begin at a chunk
   boundary (clean before it); errors that repeat with a period (name the period);
5. **one group / head / channel block** -- grouped inputs expanded in ``(h g)`` order instead of
   ``(g h)`` (the candidate conforms to the oracle with the groups so repeated); otherwise the error is
   confined to a subset of an axis with a clear gap (a block, a residue class, the heads of one group),
   with the input whose magnitude alone separates the failing entries, if one does;
6. **the state** -- the initial state ignored (the candidate equals the oracle with a zero initial
   state); the final state not returned, one step early (the oracle's state after ``l - 1`` steps), or
   equal to the initial state;
7. **NaN/Inf where the oracle is finite**, with the inputs' regime there (``|A| -> 0`` where
   ``(e^x - 1)/x`` cancels; magnitudes that overflow; a growth along the sequence);
8. **one convention flip** -- the oracle recomputed under each other value of each convention; a
   layout convention re-runs the candidate.

The axes come from the op spec's declared shapes (``"b l h p"``): ``b`` is batch, ``l`` (``lq``,
``lk``, ``s``) is time, the rest are channels, heads, groups.  Which inputs drive the state and which
read it is found by the oracle itself (a change at one step that moves later outputs drives the
state; one that moves only its own step reads it), once per op and conventions.

Most of these are *exact*: the candidate conforms to the oracle under the named alternative (or the fact is
plain: an output missing, NaN/Inf, lower-precision values).  The statistical match of 1 comes after all exact
causes; the patterns (4, and 5's block) only *locate* the error, so they come last, named when no exact cause
holds (a true alternative says more than where the error lies: an ignored initial
state also fails only in the channels whose state decays slowly), and only with a gap: the failing part's
smallest error/bound must be at least :data:`GAP` times the passing part's largest, so a smooth error that
crosses the bound somewhere is never named a boundary.  A period is claimed over three periods or more (two
when it is the declared chunk).  When nothing holds, the sentence says where the failure is confined.  The
diagnosis runs only on failing cases; each strategy costs a few oracle calls (the roles of the inputs are
found once per op and conventions).

The **error map** (:class:`ErrorMap`) is the largest err/bound of each failing output along each of its
axes, shown in the text report in coarse bins (at most 16); with matplotlib, :func:`write_heatmap` draws
err/bound over (channel, time) per failing case (``verify(..., plots=DIR)``, ``refimpl verify --plots DIR``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from oracles.tolerance import Bound, compare
from oracles.verify.registry import infer_dims

__all__ = ["Context", "Diagnosis", "ErrorMap", "diagnose", "error_maps", "write_heatmap", "reference_in_dtype",
           "TIME_AXES", "GAP", "PRECISION_FACTOR"]

TIME_AXES = ("l", "lq", "lk", "s", "L")
BATCH_AXES = ("b",)
GAP = 100.0  # a pattern's failing part is at least this many times worse than its passing part
PRECISION_FACTOR = 8.0  # the candidate's error within this factor of our reference's in a lower dtype
MAX_BINS = 16

_WORDS = {"b": "batch", "l": "time", "lq": "query time", "lk": "key time", "s": "key time", "L": "time",
          "h": "heads", "d": "channels", "g": "groups", "n": "state", "p": "head dim", "e": "value dim",
          "m": "features", "M": "features", "blocks": "blocks"}
_SINGULAR = {"heads": "head", "channels": "channel", "groups": "group", "batch": "batch entry"}


# -- what the harness hands over --------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
    """One failing case, and what the diagnosis may call.

    ``inputs``: the float64 inputs the oracle saw; ``cast_inputs``: the same in the candidate's dtype;
    ``cand``: the candidate's canonical outputs (None if it raised); ``results``: the comparison records;
    ``oracle(inputs, conv)``; ``bounds(inputs, oracle_out, conv) -> {output: Bound}`` in the case's dtype;
    ``compare(cand, inputs, conv, oracle_out) -> [OutputResult]``; ``rerun(conv=None, rewrite=None)``
    runs the candidate again on ``cast_inputs`` (``rewrite(args, kwargs) -> (args, kwargs)`` edits its
    call); ``adapter``: the candidate's adapter (its ``implies`` are never flipped).
    """

    spec: Any
    conv: Dict[str, Any]
    dtype: str
    inputs: Dict[str, Any]
    cast_inputs: Dict[str, Any]
    cand: Optional[Mapping[str, Any]]
    results: List[Any]
    oracle_out: Mapping[str, Any]
    oracle: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]
    bounds: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Dict[str, Bound]]
    compare: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], List[Any]]
    rerun: Optional[Callable[..., Mapping[str, Any]]] = None
    adapter: Any = None
    maps: List["ErrorMap"] = dataclasses.field(default_factory=list)
    _bounds0: Optional[Dict[str, Bound]] = None
    _rerun_failed: bool = False

    @property
    def implied(self) -> Tuple[str, ...]:
        return tuple(getattr(self.adapter, "implies", {}) or {})

    def base_bounds(self) -> Dict[str, Bound]:
        if self._bounds0 is None:
            self._bounds0 = self.bounds(self.inputs, self.oracle_out, self.conv)
        return self._bounds0

    def passes(self, cand: Mapping[str, Any], inputs: Mapping[str, Any], conv: Mapping[str, Any],
               oracle_out: Mapping[str, Any]) -> bool:
        r = self.compare(cand, inputs, conv, oracle_out)
        return bool(r) and all(x.passed for x in r)

    def candidate_again(self, conv=None, rewrite=None) -> Optional[Mapping[str, Any]]:
        """The candidate re-run (None once a re-run failed to return: a hung candidate is not called again)."""
        if self.rerun is None or self._rerun_failed:
            return None
        try:
            return self.rerun(conv=conv, rewrite=rewrite)
        except Exception as exc:
            if "did not return" in str(exc):
                self._rerun_failed = True
            raise


@dataclasses.dataclass
class Diagnosis:
    text: str
    maps: List["ErrorMap"]


# -- axes ---------------------------------------------------------------------------------------------------

def _arg(spec, name, kind="inputs"):
    for a in getattr(spec, kind):
        if a.name == name:
            return a
    return None


def _pattern(spec, name, value, kind="inputs") -> Optional[List[str]]:
    a = _arg(spec, name, kind)
    if a is None or value is None:
        return None
    return a.pattern_for(np.ndim(value))


def _time_index(pat: Optional[Sequence[str]]) -> Optional[int]:
    if not pat:
        return None
    for i, ax in enumerate(pat):
        if ax in TIME_AXES:
            return i
    return None


def _word(letter: str) -> str:
    return _WORDS.get(letter, "axis " + letter)


def _labels(pat: Sequence[str]) -> List[str]:
    """Axis labels, repeated letters numbered (``h n n`` -> ``h, n1, n2``)."""
    out = []
    for i, ax in enumerate(pat):
        out.append(f"{ax}{sum(1 for a in pat[:i + 1] if a == ax)}" if pat.count(ax) > 1 else ax)
    return out


# -- the error map ------------------------------------------------------------------------------------------

def _as_cmp(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "c":
        return a.astype(np.complex128)
    if a.dtype.kind in "fiub":
        return a.astype(np.float64)
    return a.astype(np.float64)  # bfloat16 and other extension types


def ratio_array(cand, oracle, bound_values) -> Optional[np.ndarray]:
    """err/bound elementwise (``inf`` where the candidate is NaN/Inf and the oracle finite); None on a shape mismatch."""
    c, o = _as_cmp(cand), _as_cmp(oracle)
    if c.shape != o.shape:
        return None
    b = np.broadcast_to(np.asarray(bound_values, dtype=np.float64), o.shape)
    ofin, cfin = np.isfinite(o), np.isfinite(c)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same_nf = (c == o) | (np.isnan(c) & np.isnan(o))
        err = np.where(ofin & cfin, np.abs(c - o), np.where(ofin | ~same_nf, np.inf, 0.0))
        return np.where(b > 0, err / b, np.where(err > 0, np.inf, 0.0))


@dataclasses.dataclass
class ErrorMap:
    """The largest err/bound of one output along each of its axes (and over (channel, time) for a heatmap)."""

    output: str
    axes: Tuple[str, ...]  # the output's declared axis letters
    shape: Tuple[int, ...]
    profiles: Dict[str, np.ndarray]  # label -> max err/bound at each index of that axis
    heat: Optional[np.ndarray] = None  # (rows, cols): channels (flattened) x time, max over batch
    heat_axes: Tuple[str, str] = ("", "")
    nonfinite: int = 0
    ratio: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)  # err/bound itself (not serialized)

    @classmethod
    def build(cls, output: str, pat: Sequence[str], ratio: np.ndarray) -> "ErrorMap":
        pat = list(pat)
        labels = _labels(pat)
        profiles = {}
        for i, lab in enumerate(labels):
            others = tuple(j for j in range(ratio.ndim) if j != i)
            profiles[lab] = np.max(ratio, axis=others) if ratio.size else np.zeros(ratio.shape[i])
        heat, heat_axes = None, ("", "")
        if ratio.size and ratio.ndim:
            ti = _time_index(pat)
            keep = [i for i, ax in enumerate(pat) if ax not in BATCH_AXES]
            r = np.max(ratio, axis=tuple(i for i, ax in enumerate(pat) if ax in BATCH_AXES)) if len(keep) < ratio.ndim \
                else ratio
            kpat = [labels[i] for i in keep]
            if kpat:
                col = kpat.index(labels[ti]) if ti is not None else 0
                rows = [i for i in range(len(kpat)) if i != col]
                r = np.moveaxis(r, col, -1)
                heat = r.reshape(-1, r.shape[-1]) if rows else r.reshape(1, -1)
                heat_axes = ("(" + " ".join(kpat[i] for i in rows) + ")" if len(rows) > 1 else
                             (kpat[rows[0]] if rows else ""), kpat[col])
        return cls(output, tuple(pat), tuple(int(s) for s in ratio.shape), profiles, heat, heat_axes,
                   int(np.sum(np.isinf(ratio))), ratio)

    def axis_profile(self, letter: str) -> Optional[np.ndarray]:
        return self.profiles.get(letter)

    def lines(self) -> List[str]:
        out = [f"{self.output} ({' '.join(self.axes)}):"]
        width = max(len(self._axis_head(lab)) for lab in self.profiles) if self.profiles else 0
        for lab, prof in self.profiles.items():
            if prof.size == 0:
                continue
            out.append(f"  {self._axis_head(lab):<{width}}  {sparkline(prof)}  {_peak(lab, prof)}")
        return out

    def _axis_head(self, lab: str) -> str:
        size = self.profiles[lab].size
        letter = re.sub(r"\d+$", "", lab)
        w, nb = _bin_width(size)
        bins = f"{size}" if w == 1 else f"{size} in {nb} bins of {w}"
        return f"{lab} ({_word(letter)}, {bins})"

    def to_dict(self) -> dict:
        def enc(v):
            return [x if math.isfinite(x) else repr(x) for x in (float(y) for y in v)]

        return {"output": self.output, "axes": list(self.axes), "shape": list(self.shape),
                "profiles": {k: enc(v) for k, v in self.profiles.items()}, "nonfinite": self.nonfinite}


LEGEND = "max err/bound per bin: '.' <= 1, digit k <= 10^k (9: more), '!' NaN/Inf"


def _bin_width(size: int) -> Tuple[int, int]:
    w = max(1, -(-size // MAX_BINS))
    return w, -(-size // w)


def _char(r: float) -> str:
    if not math.isfinite(r):
        return "!"
    if r <= 1.0:
        return "."
    return str(min(9, max(1, math.ceil(math.log10(r)))))


def sparkline(profile: np.ndarray) -> str:
    """One character per bin (at most :data:`MAX_BINS` bins of consecutive indices, the max in each)."""
    p = np.asarray(profile, dtype=np.float64)
    w, nb = _bin_width(p.size)
    return "".join(_char(float(np.max(p[i * w:(i + 1) * w]))) for i in range(nb))


def _peak(lab: str, prof: np.ndarray) -> str:
    i = int(np.argmax(prof))
    return f"max {prof[i]:.3g} at {lab}={i}"


def error_maps(ctx: Context) -> List[ErrorMap]:
    """An :class:`ErrorMap` per failing output (whose shape matches the oracle's)."""
    if ctx.cand is None:
        return []
    try:
        bounds = ctx.base_bounds()
    except Exception:
        return []
    maps = []
    for r in ctx.results:
        if r.passed or r.output not in ctx.cand or r.output not in bounds or r.output not in ctx.oracle_out:
            continue
        o = ctx.oracle_out[r.output]
        ratio = ratio_array(ctx.cand[r.output], o, bounds[r.output].values)
        pat = _pattern(ctx.spec, r.output, o, "outputs")
        if ratio is None or pat is None or len(pat) != ratio.ndim:
            continue
        maps.append(ErrorMap.build(r.output, pat, ratio))
    return maps


def write_heatmap(directory: str, stem: str, title: str, maps: Sequence[ErrorMap]) -> Optional[str]:
    """One PNG: a heatmap of log10(err/bound) over (channels, time) for each map; returns its path."""
    maps = [m for m in maps if m.heat is not None and m.heat.size]
    if not maps:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    fig, axes = plt.subplots(len(maps), 1, figsize=(8, 1.2 + 2.2 * len(maps)), squeeze=False)
    for ax, m in zip(axes[:, 0], maps):
        h = np.asarray(m.heat, dtype=np.float64)
        finite = h[np.isfinite(h)]
        top = float(np.log10(np.max(finite))) if finite.size and np.max(finite) > 0 else 1.0
        with np.errstate(divide="ignore"):
            img = np.log10(np.where(np.isfinite(h), np.maximum(h, 1e-300), 10.0 ** (top + 1)))
        im = ax.imshow(np.clip(img, -3, None), aspect="auto", interpolation="nearest", cmap="magma",
                       vmin=-3, vmax=max(top + 1, 1.0))
        ax.set_title(f"{m.output}: log10(err/bound)  (> 0 fails; NaN/Inf drawn at the top of the scale)", fontsize=9)
        ax.set_xlabel(m.heat_axes[1])
        ax.set_ylabel(m.heat_axes[0] or "-")
        fig.colorbar(im, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = os.path.join(directory, re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) + ".png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- helpers ------------------------------------------------------------------------------------------------

def _failing(ctx: Context) -> List[Any]:
    return [r for r in ctx.results if not r.passed]


def _finite_failure(ctx: Context) -> bool:
    """Every failing output came back with the oracle's shape and finite where the oracle is."""
    bad = _failing(ctx)
    return bool(bad) and ctx.cand is not None and all(
        r.output in ctx.cand and not r.comparison.nonfinite and "shape mismatch" not in (r.comparison.message or "")
        and math.isfinite(r.comparison.worst_ratio) for r in bad)


def _float_inputs(ctx: Context) -> List[str]:
    return [a.name for a in ctx.spec.inputs if a.kind == "float" and ctx.inputs.get(a.name) is not None]


def _describe_set(idx: Sequence[int], size: int, letter: str, group: Optional[Tuple[str, int]] = None) -> str:
    """``h = 1..2``, ``h = 1, 3``, ``h = 1 (mod 2)``, ``the heads of group 1`` -- the shortest true name."""
    idx = sorted(int(i) for i in idx)
    s = set(idx)
    word = _word(letter)
    if group is not None:
        g_letter, g = group
        per = size // g
        blocks = sorted({i // per for i in idx})
        if per > 1 and s == {i for i in range(size) if i // per in blocks} and len(blocks) < g:
            return (f"the {word} of {g_letter} = {', '.join(map(str, blocks))} ({per} {word} per group, "
                    f"{g} groups)")
    if len(idx) == 1:
        return f"{letter} = {idx[0]} of {size}"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return f"{letter} = {idx[0]}..{idx[-1]} of {size}"
    for P in range(2, size // 2 + 1):
        res = {i % P for i in idx}
        if len(res) == 1 and s == {i for i in range(size) if i % P in res}:
            r = next(iter(res))
            return f"{letter} = {r} (mod {P}) of {size}"
    shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
    return f"{letter} in {{{shown}}} of {size}"


def _gap_split(profile: np.ndarray) -> Optional[np.ndarray]:
    """The failing indices if they are separated from the passing ones by :data:`GAP`; else None."""
    p = np.asarray(profile, dtype=np.float64)
    fail = p > 1.0
    if not fail.any() or fail.all():
        return None
    lo = float(np.min(p[fail]))
    hi = float(np.max(p[~fail]))
    if lo >= GAP * hi or (hi == 0.0 and lo > 1.0):
        return np.flatnonzero(fail)
    return None


def _time_outputs(ctx: Context) -> List[Tuple[str, int]]:
    out = []
    for a in ctx.spec.outputs:
        o = ctx.oracle_out.get(a.name)
        if o is None:
            continue
        ti = _time_index(a.pattern_for(np.ndim(o)))
        if ti is not None:
            out.append((a.name, ti))
    return out


def _state_pairs(ctx: Context) -> List[Tuple[str, str]]:
    """(initial-state input, final-state output): an optional input and an output with the same axes and no time."""
    pairs = []
    for a in ctx.spec.inputs:
        if not a.optional or a.kind != "float":
            continue
        for o in ctx.spec.outputs:
            if o.shape.replace(" ", "") == a.shape.replace(" ", "") and not any(
                    ax in TIME_AXES for alt in o.alternatives() for ax in alt):
                pairs.append((a.name, o.name))
    return pairs


# -- 1. lower precision ---------------------------------------------------------------------------------------

def _round_bfloat16(a32: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even), kept in float32 (NaN/Inf kept)."""
    a32 = np.ascontiguousarray(a32, dtype=np.float32)
    u = a32.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32).reshape(a32.shape)
    return np.where(np.isfinite(a32), out, a32)


def _to_lowp(a, dtype: str) -> np.ndarray:
    """Values rounded to ``dtype`` (float32, float16, bfloat16), held in float32/complex64."""
    a = np.asarray(a)
    if np.iscomplexobj(a):
        return a.astype(np.complex64)
    x = a.astype(np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return _round_bfloat16(x)
    return x


def reference_in_dtype(spec, inputs: Mapping[str, Any], conv: Mapping[str, Any], dtype: str) -> Dict[str, Any]:
    """Our reference on ``inputs`` rounded to ``dtype``, in float32 arithmetic (float32 itself for float32),
    outputs rounded to ``dtype`` and returned in float64/complex128."""
    x = {}
    for a in spec.inputs:
        v = inputs.get(a.name)
        x[a.name] = None if v is None else (_to_lowp(v, dtype) if a.kind == "float" else np.asarray(v))
    out = spec.reference(x, dict(conv))
    res = {}
    for k, v in out.items():
        v = np.asarray(v)
        if np.iscomplexobj(v):
            res[k] = v.astype(np.complex64).astype(np.complex128)
        else:
            res[k] = _to_lowp(v, dtype).astype(np.float64)
    return res


def _error_stats(c, o) -> Optional[Tuple[float, float]]:
    """(normwise relative error, median absolute error): a rounding error is spread over every entry, so
    both statistics match a lower dtype's; a bug confined to some entries matches at most the first."""
    c, o = _as_cmp(c), _as_cmp(o)
    if c.shape != o.shape or not np.all(np.isfinite(c)) or not np.all(np.isfinite(o)):
        return None
    on = float(np.linalg.norm(o))
    if on == 0.0:
        return None
    e = np.abs(c - o)
    return float(np.linalg.norm(e)) / on, float(np.median(e))


def _stat_ratio(a: float, b: float) -> float:
    if a == 0.0 and b == 0.0:
        return 1.0
    if a == 0.0 or b == 0.0:
        return math.inf
    return a / b


_LOWER = {"float64": ("float32", "float16", "bfloat16"), "float32": ("float16", "bfloat16")}


def _representable(a: np.ndarray, dtype: str) -> np.ndarray:
    """Which entries of ``a`` (float64 or complex128) are exactly values of ``dtype``."""
    a = np.asarray(a)
    if np.iscomplexobj(a):
        return _representable(a.real, dtype) & _representable(a.imag, dtype)
    a = a.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        a32 = a.astype(np.float32)
        back = _to_lowp(a32, dtype).astype(np.float64) if dtype != "float32" else a32.astype(np.float64)
    return back == a


def _lowp_values(ctx: Context) -> Optional[str]:
    """Every entry of the failing outputs is a value of a lower dtype (while the oracle's are not): the
    candidate computed, or stored, its outputs in that dtype and returned them widened.  A float64 value
    that is not a float32 value lands on one by chance with probability about 2^-29, so two such entries
    are proof."""
    if ctx.dtype not in _LOWER or not _finite_failure(ctx):
        return None
    bad = [r for r in _failing(ctx) if not getattr(r, "precision", None)]  # (a lower returned dtype is said already)
    if not bad or len(bad) != len(_failing(ctx)):
        return None
    for lp in ("bfloat16", "float16", "float32"):
        if lp not in _LOWER[ctx.dtype]:
            continue
        ok = True
        for r in bad:
            c, o = _as_cmp(ctx.cand[r.output]), _as_cmp(ctx.oracle_out[r.output])
            if not _representable(c, lp).all():
                ok = False
                break
            # the proof needs entries that are not values of every dtype anyway (0, integers) and that are the
            # right answer rounded (within 10%), not something else that happens to be short
            cr = np.concatenate([c.real.ravel(), c.imag.ravel()]) if np.iscomplexobj(c) else c.ravel()
            orr = np.concatenate([o.real.ravel(), o.imag.ravel()]) if np.iscomplexobj(o) else o.ravel()
            with np.errstate(invalid="ignore", divide="ignore"):
                close = np.abs(cr - orr) <= 0.1 * np.abs(orr)
            informative = (cr != np.round(cr)) & ~_representable(orr, lp) & close
            if int(informative.sum()) < 2 or not close[orr != 0].mean() >= 0.5:
                ok = False
                break
        if ok:
            text = (f"computed in lower precision: every entry of {', '.join(r.output for r in bad)} is exactly a "
                    f"{lp} value (the oracle's are not): the candidate computes or stores its outputs in {lp} "
                    f"and returns them widened to {ctx.dtype}")
            narrower = [d for d in ("float16", "bfloat16") if d != lp] if lp == "float32" else []
            finer = _precision_match(ctx, narrower) if narrower else None
            if finer is not None:
                text += f"; its error is that of our reference run in {finer} (inputs rounded to {finer}?)"
            return text
    return None


def _noise_like(ctx: Context, outputs: Sequence[str]) -> bool:
    """Rounding errors have no sign of their own: ``Re((c - o) conj(o))`` is as often positive as negative.  A
    systematic error (a decay too fast: Euler instead of exp; a term dropped) keeps one sign over most entries.
    At least 16 differing entries are needed to tell; at most 3 in 4 may share a sign."""
    s = []
    for k in outputs:
        c, o = _as_cmp(ctx.cand[k]).ravel(), _as_cmp(ctx.oracle_out[k]).ravel()
        d = np.real((c - o) * np.conj(o))
        s.append(np.sign(d[(d != 0) & np.isfinite(d)]))
    s = np.concatenate(s) if s else np.zeros(0)
    return s.size >= 16 and abs(float(np.mean(s))) <= 0.5


def _precision_match(ctx: Context, dtypes: Sequence[str]) -> Optional[str]:
    """The dtype among ``dtypes`` whose reference run's error the candidate's matches (normwise and at the median
    entry, within :data:`PRECISION_FACTOR`; the closest), provided that reference itself fails here."""
    if ctx.spec.reference is None or not _finite_failure(ctx):
        return None
    bad = [r.output for r in _failing(ctx)]
    errs = {k: _error_stats(ctx.cand[k], ctx.oracle_out[k]) for k in bad}
    if any(e is None or e[0] == 0.0 for e in errs.values()) or not _noise_like(ctx, bad):
        return None
    best = None
    for lp in dtypes:
        try:
            ref = reference_in_dtype(ctx.spec, ctx.inputs, ctx.conv, lp)
        except Exception:
            continue
        ratios = []
        for k in bad:
            e_ref = _error_stats(ref[k], ctx.oracle_out[k]) if k in ref else None
            if e_ref is None or e_ref[0] == 0.0:
                break
            ratios += [_stat_ratio(errs[k][0], e_ref[0]), _stat_ratio(errs[k][1], e_ref[1])]
        else:
            score = max(abs(math.log(r)) if 0 < r < math.inf else math.inf for r in ratios)
            if score <= math.log(PRECISION_FACTOR) and (best is None or score < best[0]):
                best = (score, lp, ref)
    if best is None:
        return None
    try:  # the reference in that dtype must itself fail here: the error is of that dtype's size, not of ours
        if ctx.passes(best[2], ctx.inputs, ctx.conv, ctx.oracle_out):
            return None
    except Exception:
        return None
    return best[1]


def _lower_precision(ctx: Context) -> Optional[str]:
    if ctx.dtype not in _LOWER:
        return None
    lp = _precision_match(ctx, _LOWER[ctx.dtype])
    if lp is None:
        return None
    bad = [r.output for r in _failing(ctx)]
    return (f"computed in lower precision: the error of {', '.join(bad)} matches our reference run in {lp} on the same "
            f"inputs (normwise and at the median entry, within a factor of {PRECISION_FACTOR:g}) and is far above the "
            f"{ctx.dtype} bound (inputs or accumulation rounded to {lp}?)")


# -- 2. two arguments swapped -----------------------------------------------------------------------------------

def _swapped_inputs(ctx: Context) -> Optional[str]:
    if ctx.cand is None:
        return None
    names = _float_inputs(ctx)
    for a, b in itertools.combinations(names, 2):
        va, vb = np.asarray(ctx.inputs[a]), np.asarray(ctx.inputs[b])
        if va.shape != vb.shape or va.size == 0 or np.array_equal(va, vb):
            continue
        swapped = dict(ctx.inputs, **{a: vb, b: va})
        try:
            o2 = ctx.oracle(dict(swapped), ctx.conv)
            if ctx.passes(ctx.cand, swapped, ctx.conv, o2):
                return (f"arguments swapped: the candidate conforms to the oracle run with {a} and {b} exchanged "
                        f"(it reads {a} as {b} and {b} as {a})")
        except Exception:
            continue
    return None


def _call_slots(adapter) -> List[Tuple[Any, Any]]:
    """``[(slot, In)]`` for the adapter's array arguments: slot an int (position) or a str (keyword)."""
    from oracles.verify.adapters import In

    slots = []
    if adapter is None or adapter.args is None:
        return slots
    for i, item in enumerate(adapter.args):
        if isinstance(item, In):
            slots.append((i, item))
    for k, item in adapter.kwargs.items():
        if isinstance(item, In):
            slots.append((k, item))
    return slots


def _slot_text(slot, item) -> str:
    where = f"argument {slot + 1}" if isinstance(slot, int) else f"argument {slot}="
    if item.transform is not None:
        fn = getattr(item.transform, "__name__", "f")
        return f"{where} ({fn}({item.name}))"
    return f"{where} ({item.name})"


def _swapped_call_arguments(ctx: Context) -> Optional[str]:
    """Re-run the candidate with two same-shape arguments of its own call exchanged, where one of them is a
    transformed input (a swap in canonical terms cannot express it)."""
    if ctx.rerun is None or ctx.adapter is None:  # (also when the candidate raised: the swap may be why)
        return None
    slots = _call_slots(ctx.adapter)
    if not any(item.transform is not None for _, item in slots):
        return None
    try:
        dims = infer_dims(ctx.spec.inputs, ctx.cast_inputs)
        args, kwargs = ctx.adapter.build_call(ctx.spec, ctx.cast_inputs, ctx.conv, dims)
    except Exception:
        return None

    def value(slot):
        if isinstance(slot, int):
            return args[slot] if slot < len(args) else None
        return kwargs.get(slot)

    for (sa, ia), (sb, ib) in itertools.combinations(slots, 2):
        if ia.transform is ib.transform and ia.pattern == ib.pattern:
            continue  # both reach the candidate the same way: the swap of canonical inputs already said it
        va, vb = value(sa), value(sb)
        if va is None or vb is None or np.shape(va) != np.shape(vb):
            continue

        def rewrite(args, kwargs, sa=sa, sb=sb):
            args, kwargs = list(args), dict(kwargs)
            get = lambda s: args[s] if isinstance(s, int) else kwargs[s]  # noqa: E731
            a, b = get(sa), get(sb)
            for s, v in ((sa, b), (sb, a)):
                if isinstance(s, int):
                    args[s] = v
                else:
                    kwargs[s] = v
            return args, kwargs

        try:
            cand2 = ctx.candidate_again(rewrite=rewrite)
            if cand2 is not None and ctx.passes(cand2, ctx.inputs, ctx.conv, ctx.oracle_out):
                return (f"arguments swapped: the candidate conforms when its {_slot_text(sa, ia)} and "
                        f"{_slot_text(sb, ib)} are exchanged (it reads each as the other)")
        except Exception:
            continue
    return None


# -- 3. a shift by one step -------------------------------------------------------------------------------------

_INERT: set = set()  # (op, convention, value, alternative) whose change left a long case's oracle unchanged


def _int_conventions_off_by_one(ctx: Context) -> Optional[str]:
    """An integer convention (a window edge, a width) one off: the candidate conforms under ``value -+ 1``."""
    if ctx.cand is None:
        return None
    seq = _seq_inputs(ctx, ctx.inputs)
    long_case = bool(seq) and min(np.shape(ctx.inputs[n])[ti] for n, (_, ti) in seq.items()) >= 4
    for c in ctx.spec.conventions:
        v = ctx.conv.get(c.name)
        if c.choices is not None or c.name in ctx.implied or isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            continue
        for alt in (int(v) - 1, int(v) + 1):
            key = (ctx.spec.name, c.name, int(v), alt)
            if key in _INERT:
                continue
            conv2 = dict(ctx.conv, **{c.name: alt})
            try:
                o2 = ctx.oracle(dict(ctx.inputs), conv2)
                if all(np.array_equal(np.asarray(o2[k]), np.asarray(ctx.oracle_out[k]), equal_nan=True)
                       for k in ctx.oracle_out if k in o2):
                    if long_case:  # the convention does not change what is computed (a bound's parameter)
                        _INERT.add(key)
                    continue
                if ctx.passes(ctx.cand, ctx.inputs, conv2, o2):
                    return (f"off by one: the candidate conforms under {c.name}={alt} instead of {v} ({c.doc})")
            except Exception:
                continue
    return None


def _output_shift(ctx: Context) -> Optional[str]:
    """``out[t]`` equals the oracle's ``out[t - s]`` (s = +1: one step late; -1: one step early)."""
    if not _finite_failure(ctx):
        return None
    bounds = ctx.base_bounds()
    touts = dict(_time_outputs(ctx))
    bad = [r.output for r in _failing(ctx)]
    if not bad or any(k not in touts for k in bad):
        return None  # an output without a time axis fails too: not a shift
    for s in (1, -1):
        ok = True
        for k in bad:
            ti = touts[k]
            c, o = _as_cmp(ctx.cand[k]), _as_cmp(ctx.oracle_out[k])
            L = o.shape[ti]
            if L < 2:
                ok = False
                break
            b = np.broadcast_to(np.asarray(bounds[k].values, dtype=np.float64), o.shape)
            cs = slice(1, L) if s == 1 else slice(0, L - 1)
            os_ = slice(0, L - 1) if s == 1 else slice(1, L)
            take = lambda a, sl: a[(slice(None),) * ti + (sl,)]  # noqa: E731
            if not compare(take(c, cs), take(o, os_), Bound(take(b, os_), "shifted by one step")).passed:
                ok = False
                break
        if ok:
            t_name = ctx.spec.outputs[[a.name for a in ctx.spec.outputs].index(bad[0])].pattern_for(
                np.ndim(ctx.oracle_out[bad[0]]))[touts[bad[0]]]
            outs = ", ".join(bad)
            if s == 1:
                return (f"shifted by one step: {outs}[{t_name}] equals the oracle's {outs}[{t_name} - 1] (one step "
                        "late: the output written before the state update, or at the wrong index)")
            return (f"shifted by one step: {outs}[{t_name}] equals the oracle's {outs}[{t_name} + 1] (one step early: "
                    "the output reads the next step's state or input)")
    return None


_ROLE_CACHE: Dict[Any, Dict[str, str]] = {}


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return repr(v)


def _seq_inputs(ctx: Context, inputs: Mapping[str, Any]) -> Dict[str, Tuple[str, int]]:
    """Inputs with a time axis: name -> (letter, axis index)."""
    out = {}
    for a in ctx.spec.inputs:
        v = inputs.get(a.name)
        if v is None:
            continue
        pat = a.pattern_for(np.ndim(v))
        ti = _time_index(pat)
        if ti is not None:
            out[a.name] = (pat[ti], ti)
    return out


def input_roles(ctx: Context, inputs: Mapping[str, Any]) -> Dict[str, str]:
    """Which time inputs drive the state (``update``) and which only read it (``readout``), by the oracle:
    a change at step ``t0`` that moves outputs after ``t0`` (or a time-less output) drives the state.

    Found on a case at least 3 steps long and remembered per op and conventions (an input's role does not
    depend on the case), so a short case reuses what a longer one found."""
    seq = _seq_inputs(ctx, inputs)
    known = _ROLE_CACHE.setdefault((ctx.spec.name, _freeze(ctx.conv)), {})
    missing = [n for n in seq if n not in known]
    if missing and min(np.shape(inputs[n])[ti] for n, (_, ti) in seq.items()) >= 3:
        base = ctx.oracle(dict(inputs), ctx.conv)
        for name in missing:
            ti = seq[name][1]
            v = np.asarray(inputs[name])
            if v.dtype.kind not in "fc":
                known[name] = "update"  # index data (segment ids): the state's business
                continue
            t0 = v.shape[ti] // 2
            w = v.copy()
            idx = (slice(None),) * ti + (t0,)
            w[idx] = 0.9 * w[idx] + 0.05  # stays in the domain of steps, decays, gates, keys
            o2 = ctx.oracle(dict(inputs, **{name: w}), ctx.conv)
            later, here = False, False
            for k, o in base.items():
                a, b = _as_cmp(o), _as_cmp(o2[k])
                if a.size == 0:
                    continue
                scale = float(np.max(np.abs(a))) or 1.0
                d = np.abs(a - b) > 1e-9 * scale
                oti = _time_index(_pattern(ctx.spec, k, o, "outputs"))
                if oti is None:
                    later |= bool(d.any())
                else:
                    d = np.moveaxis(d, oti, 0)
                    here |= bool(d[t0].any())
                    later |= bool(d[t0 + 1:].any())
            known[name] = "update" if later else ("readout" if here else "none")
    return {n: known[n] for n in seq if n in known}


def _read_before_update(ctx: Context) -> Optional[str]:
    """``out[t]`` reads the state after step ``t - 1``: the oracle run with the readout inputs one step ahead of the
    inputs that drive the state, plus the current step's skip term ``D`` (which reads no state)."""
    if not _finite_failure(ctx):
        return None
    touts = dict(_time_outputs(ctx))
    bad = [r.output for r in _failing(ctx)]
    if not touts or any(k not in touts for k in bad):
        return None
    seq = _seq_inputs(ctx, ctx.inputs)
    letters = {lt for lt, _ in seq.values()}
    if len(letters) != 1:
        return None  # one recurrence axis only (attention's lq/lk have no state to read early)
    L = next(np.shape(ctx.inputs[n])[ti] for n, (_, ti) in seq.items())
    if L < 2:
        return None
    skip = "D" if ctx.inputs.get("D") is not None and _arg(ctx.spec, "D") is not None and _arg(
        ctx.spec, "D").optional and "D" not in seq else None
    base_in = dict(ctx.inputs, **({skip: None} if skip else {}))
    try:
        roles = input_roles(ctx, base_in)
    except Exception:
        return None
    readout = [n for n, r in roles.items() if r == "readout"]
    update = [n for n, r in roles.items() if r == "update"]
    if not readout or not update or set(roles) != set(seq):
        return None
    shifted = dict(base_in)
    for n, (_, ti) in seq.items():
        v = np.asarray(base_in[n])
        sl = slice(1, L) if n in readout else slice(0, L - 1)
        shifted[n] = v[(slice(None),) * ti + (sl,)]
    try:
        o_sh = ctx.oracle(dict(shifted), ctx.conv)
        b_sh = ctx.bounds(dict(shifted), o_sh, ctx.conv)
        bounds = ctx.base_bounds()
        o_noskip = ctx.oracle(dict(base_in), ctx.conv) if skip else None
    except Exception:
        return None
    for k in bad:
        ti = touts[k]
        take = lambda a, sl: np.asarray(a)[(slice(None),) * ti + (sl,)]  # noqa: E731
        expect = _as_cmp(o_sh[k])
        bnd = np.broadcast_to(np.asarray(b_sh[k].values, dtype=np.float64), expect.shape)
        if skip:  # the skip term of step t reads the input of step t, not the state
            full = _as_cmp(ctx.oracle_out[k])
            expect = expect + take(full - _as_cmp(o_noskip[k]), slice(1, L))
            bnd = bnd + take(np.broadcast_to(np.asarray(bounds[k].values, dtype=np.float64), full.shape), slice(1, L))
        if not compare(take(_as_cmp(ctx.cand[k]), slice(1, L)), expect, Bound(bnd, "read before update")).passed:
            return None
    return (f"the output is read before the state update: {', '.join(bad)} at step t reads the state after step t - 1 "
            f"(the candidate conforms to the oracle with {', '.join(readout)} one step ahead of "
            f"{', '.join(update)}" + (f"; the skip term {skip} at step t" if skip else "") + ")")


# -- 4. a pattern along time ------------------------------------------------------------------------------------

def _time_profile(ctx: Context) -> Optional[Tuple[str, np.ndarray, str]]:
    touts = dict(_time_outputs(ctx))
    for m in ctx.maps:
        if m.output in touts:
            lab = _labels(m.axes)[touts[m.output]]
            return m.output, m.profiles[lab], m.axes[touts[m.output]]
    return None


def _time_pattern(ctx: Context) -> Optional[str]:
    if not _finite_failure(ctx):
        return None
    tp = _time_profile(ctx)
    if tp is None:
        return None
    out, p, t = tp
    L = p.size
    if L < 2:
        return None
    fail = np.flatnonzero(p > 1.0)
    if fail.size == 0 or fail.size == L:
        return None
    c = ctx.conv.get("chunk")
    c = int(c) if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and int(c) > 0 else None

    def gap(f_idx, rest_idx) -> bool:
        if len(rest_idx) == 0:
            return False
        lo, hi = float(np.min(p[f_idx])), float(np.max(p[rest_idx]))
        return lo > 1.0 and (lo >= GAP * hi)

    rest = np.setdiff1d(np.arange(L), fail)
    # only in the last, partial chunk
    if c is not None and L > c and L % c:
        start = L - L % c
        if fail.min() >= start and gap(fail, np.arange(start)):
            also = (f"; {start} is also the first chunk boundary: the state carried into it, or the partial chunk's "
                    "own handling" if start == c and fail.min() == start else "")
            return (f"errors only in the last, partial chunk: {out} fails at {t} = {start}..{L - 1} (chunk = {c}, "
                    f"{t} = {L}); the full chunks conform{also}")
    # errors that begin at a chunk boundary: clean before t0, failing from t0 on
    t0 = int(fail.min())
    before = np.arange(t0)
    if t0 > 0 and gap(np.array([t0]), before) and (p[t0:] > 1.0).mean() >= 0.5:
        where = None
        if c is not None and t0 % c == 0:
            where = f"the chunk boundary {t0} = {t0 // c} x chunk ({c})"
        elif t0 & (t0 - 1) == 0 and t0 >= 2:
            where = f"{t0}, a power of two (a chunk boundary of the candidate's own chunk length {t0}?)"
        if where is not None:
            return (f"errors begin at a chunk boundary: {out} conforms at {t} < {t0} and fails from {t} = {where} on "
                    f"(the state carried across the boundary is wrong)")
    # a period: the failing steps are whole residue classes mod P, at least two periods long
    for P in range(2, L):
        res = sorted({int(i) % P for i in fail})
        if len(res) * 2 > P:
            continue
        cls = np.array([i for i in range(L) if i % P in res])
        periods = int(fail.max() // P - fail.min() // P) + 1  # how many periods the failures span
        if set(fail.tolist()) <= set(cls.tolist()) and fail.size >= 0.75 * cls.size and \
                (periods >= 3 or (periods == 2 and P == c)) and gap(fail, rest):
            which = ", ".join(map(str, res))
            chunk = f" (chunk = {c})" if c == P else ""
            first = " (the first step of every chunk of that length?)" if res == [0] else ""
            return (f"errors repeat with period {P}{chunk}: {out} fails at {t} = {which} (mod {P}){first}; "
                    "the other steps conform")
    return None


# -- 5. one group / head / channel block --------------------------------------------------------------------------

def _member_axis(ctx: Context, g: int) -> Optional[Tuple[str, int]]:
    """The axis the groups divide (heads ``h``, else channels ``d``) and its size."""
    try:
        dims = infer_dims(ctx.spec.inputs, ctx.inputs)
    except Exception:
        return None
    for ax in ("h", "d"):
        if ax in dims and dims[ax] % g == 0 and dims[ax] > g:
            return ax, dims[ax]
    return None


def _group_order(ctx: Context) -> Optional[str]:
    if not _finite_failure(ctx):
        return None
    grouped = {}
    for a in ctx.spec.inputs:
        v = ctx.inputs.get(a.name)
        pat = _pattern(ctx.spec, a.name, v)
        if pat and "g" in pat:
            grouped[a.name] = pat.index("g")
    if not grouped:
        return None
    g = int(np.shape(ctx.inputs[next(iter(grouped))])[next(iter(grouped.values()))])
    mem = _member_axis(ctx, g) if g > 1 else None
    if mem is None:
        return None
    ax, H = mem
    per = H // g
    wrong = np.arange(H) % g  # '(h g)': member i reads group i mod g (instead of i // (H/g))
    names = list(grouped)
    for subset in [names] + ([[n] for n in names] if len(names) > 1 else []):
        x2 = dict(ctx.inputs)
        for n in subset:
            x2[n] = np.take(np.asarray(ctx.inputs[n]), wrong, axis=grouped[n])
        try:
            o2 = ctx.oracle(dict(x2), ctx.conv)
            if ctx.passes(ctx.cand, x2, ctx.conv, o2):
                word = _SINGULAR.get(_word(ax), _word(ax))
                return (f"groups expanded in the wrong order: {', '.join(subset)} repeated as '({ax} g)' ({word} i "
                        f"reads group i mod g) instead of '(g {ax})' (group i // {per}); the candidate conforms with "
                        f"the groups so repeated (g = {g}, {ax} = {H})")
        except Exception:
            continue
    return None


def _channel_pattern(ctx: Context) -> Optional[str]:
    if not _finite_failure(ctx):
        return None
    order = ["h", "g", "d", "p", "e", "n", "m", "b"]
    g = None
    for a in ctx.spec.inputs:
        pat = _pattern(ctx.spec, a.name, ctx.inputs.get(a.name))
        if pat and "g" in pat:
            g = int(np.shape(ctx.inputs[a.name])[pat.index("g")])
            break
    for m in ctx.maps:
        labels = _labels(m.axes)
        cands = [(order.index(re.sub(r"\d+$", "", lab)) if re.sub(r"\d+$", "", lab) in order else len(order), lab)
                 for lab in labels if re.sub(r"\d+$", "", lab) not in TIME_AXES]
        for _, lab in sorted(cands):
            prof = m.profiles[lab]
            if prof.size < 2:
                continue
            idx = _gap_split(prof)
            if idx is None:
                continue
            letter = re.sub(r"\d+$", "", lab)
            group = ("g", g) if g and letter in ("h", "d") and prof.size % g == 0 and g > 1 else None
            what = _describe_set(idx, prof.size, lab, group)
            extra = ""
            if group is not None:
                per = prof.size // g
                mism = {i for i in range(prof.size) if i // per != i % g}
                if set(idx.tolist()) == mism:
                    extra = (f" -- exactly the {_word(letter)} whose group differs between '(g {letter})' and "
                             f"'({letter} g)' order: grouped inputs expanded in the wrong order?")
            regime = _separating_input(ctx, m.ratio > 1.0, m.axes) if m.ratio is not None else ""
            return (f"one block wrong: {m.output} fails only at {what}{extra}{regime}; the other "
                    f"{_word(letter) if letter != 'b' else 'batch entries'} conform")
    return None


def _separating_input(ctx: Context, mask: np.ndarray, out_pat: Sequence[str]) -> str:
    """`` -- exactly where |A| <= 0.04 (elsewhere >= 0.3)``: an input whose magnitude alone separates the failing
    entries from the passing ones (on the axes it shares with the output; at least 6 cells, 2 of each kind,
    a factor 2 apart), or ``""``."""
    best = None
    for a in ctx.spec.inputs:
        v = ctx.inputs.get(a.name)
        if v is None or a.kind != "float":
            continue
        v = np.abs(_as_cmp(v))
        pat = a.pattern_for(v.ndim)
        if not pat or v.size == 0:
            continue
        shared = [ax for ax in pat if ax not in BATCH_AXES and pat.count(ax) == 1 and list(out_pat).count(ax) == 1]
        if not shared:
            continue
        m = np.any(mask, axis=tuple(i for i, ax in enumerate(out_pat) if ax not in shared))
        kept = [ax for ax in out_pat if ax in shared]
        m = np.transpose(m, [kept.index(ax) for ax in shared])
        lo = np.min(v, axis=tuple(i for i, ax in enumerate(pat) if ax not in shared)) if len(shared) < v.ndim else v
        hi = np.max(v, axis=tuple(i for i, ax in enumerate(pat) if ax not in shared)) if len(shared) < v.ndim else v
        nf, npass = int(m.sum()), int((~m).sum())
        if m.size < 6 or nf < 2 or npass < 2:
            continue
        if float(np.max(hi[m])) * 2 <= float(np.min(lo[~m])):
            sep = (float(np.min(lo[~m])) / max(float(np.max(hi[m])), 1e-300),
                   f" -- exactly where |{a.name}| <= {float(np.max(hi[m])):.2g} (elsewhere >= "
                   f"{float(np.min(lo[~m])):.2g}): the regime of small {a.name}")
        elif float(np.min(lo[m])) >= 2 * float(np.max(hi[~m])):
            sep = (float(np.min(lo[m])) / max(float(np.max(hi[~m])), 1e-300),
                   f" -- exactly where |{a.name}| >= {float(np.min(lo[m])):.2g} (elsewhere <= "
                   f"{float(np.max(hi[~m])):.2g}): the regime of large {a.name}")
        else:
            continue
        if best is None or sep[0] > best[0]:
            best = sep
    return best[1] if best else ""


# -- 6. the state -------------------------------------------------------------------------------------------------

def _state(ctx: Context) -> Optional[str]:
    pairs = _state_pairs(ctx)
    if not pairs:
        return None
    bad = {r.output: r for r in _failing(ctx)}
    for s_in, s_out in pairs:
        r = bad.get(s_out)
        msg = (r.comparison.message or "") if r is not None else ""
        if r is not None and ("did not return" in msg or "came back None" in msg):
            return f"the final state {s_out} was not returned ({msg})"
    if ctx.cand is None:
        return None
    for s_in, s_out in pairs:
        v = ctx.inputs.get(s_in)
        if v is None or not np.any(np.asarray(v)):
            continue
        x2 = dict(ctx.inputs, **{s_in: np.zeros_like(np.asarray(v))})
        try:
            o2 = ctx.oracle(dict(x2), ctx.conv)
            if ctx.passes(ctx.cand, x2, ctx.conv, o2):
                return (f"the initial state {s_in} is ignored: the candidate equals the oracle with {s_in} = 0")
        except Exception:
            pass
    seq = _seq_inputs(ctx, ctx.inputs)
    L = min((np.shape(ctx.inputs[n])[ti] for n, (_, ti) in seq.items()), default=0)
    if L >= 2 and bad and set(bad) <= {o for _, o in pairs}:
        # only the final state fails: is it the state one step early (the last update not written back)?
        short = dict(ctx.inputs)
        for n, (_, ti) in seq.items():
            short[n] = np.asarray(ctx.inputs[n])[(slice(None),) * ti + (slice(0, L - 1),)]
        try:
            o2 = ctx.oracle(dict(short), ctx.conv)
            b2 = ctx.bounds(dict(short), o2, ctx.conv)
            early = [k for k in bad if k in ctx.cand and k in o2 and
                     compare(ctx.cand[k], o2[k], b2[k]).passed]
            if early and len(early) == len(bad):
                return (f"the final state {', '.join(early)} is one step early: it equals the state after step "
                        f"l - 2 (the last step's update is not written back)")
        except Exception:
            pass
    for s_in, s_out in pairs:
        r = bad.get(s_out)
        if r is None or s_out not in ctx.cand:
            continue
        c = _as_cmp(ctx.cand[s_out])
        v = ctx.inputs.get(s_in)
        ref = _as_cmp(v) if v is not None else np.zeros_like(c)
        if c.shape == ref.shape and c.size and np.array_equal(c, ref.astype(c.dtype)):
            return (f"the final state {s_out} equals the initial state {s_in}" if v is not None else
                    f"the final state {s_out} is zero") + " (the state is never written back)"
    return None


# -- 7. NaN/Inf ---------------------------------------------------------------------------------------------------

def _nonfinite(ctx: Context) -> Optional[str]:
    nf = [r for r in ctx.results if r.comparison.nonfinite]
    if not nf:
        return None
    parts = []
    regime = []
    for r in nf:
        c = _as_cmp(ctx.cand[r.output]) if ctx.cand is not None and r.output in ctx.cand else None
        o = ctx.oracle_out.get(r.output)
        if c is None or o is None or c.shape != np.shape(o):
            parts.append(r.output)
            continue
        o = _as_cmp(o)
        mask = np.isfinite(o) & ~np.isfinite(c)
        pat = _pattern(ctx.spec, r.output, o, "outputs") or []
        where = []
        for i, ax in enumerate(pat):
            if ax in BATCH_AXES:
                continue
            hit = np.flatnonzero(np.any(np.moveaxis(mask, i, 0).reshape(mask.shape[i], -1), axis=1))
            if 0 < hit.size < mask.shape[i]:
                where.append(_describe_set(hit, mask.shape[i], ax))
        parts.append(f"{r.output} ({int(mask.sum())} of {mask.size} entries" + (f"; {', '.join(where)}" if where else "")
                     + ")")
        ti = _time_index(pat)
        if ti is not None and mask.shape[ti] > 1:
            steps = np.flatnonzero(np.any(np.moveaxis(mask, ti, 0).reshape(mask.shape[ti], -1), axis=1))
            if steps.size and steps[0] > 0 and steps.tolist() == list(range(steps[0], mask.shape[ti])):
                regime.append(f"from step {pat[ti]} = {steps[0]} to the end: a quantity growing along the sequence "
                              "overflows (an unstable recurrence, |A_bar| > 1?)")
        regime.extend(_regime(ctx, mask, pat))
    text = f"NaN/Inf in {', '.join(parts)} where the oracle is finite"
    seen, uniq = set(), []
    ordinary = [s for s in regime if s.startswith("the inputs are of ordinary magnitude")]
    regime = [s for s in regime if not s.startswith("the inputs are of ordinary magnitude")]
    if not regime and ordinary:
        regime = ordinary[:1]
    for s in regime:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    if uniq:
        text += "; there " + "; ".join(uniq[:3])
    return text


def _regime(ctx: Context, mask: np.ndarray, out_pat: Sequence[str]) -> List[str]:
    """The inputs' magnitudes at the entries linked to the non-finite outputs (shared axes), against elsewhere."""
    notes = []
    typical = []
    for a in ctx.spec.inputs:
        v = ctx.inputs.get(a.name)
        if v is None or a.kind != "float":
            continue
        v = np.abs(_as_cmp(v))
        pat = a.pattern_for(v.ndim)
        if not pat or v.size == 0:
            continue
        shared = [ax for ax in dict.fromkeys(pat) if ax in out_pat and pat.count(ax) == 1 and out_pat.count(ax) == 1]
        # the input entries linked to a non-finite output: project the mask onto the shared axes
        m = mask
        drop = tuple(i for i, ax in enumerate(out_pat) if ax not in shared)
        m = np.any(m, axis=drop) if drop else m
        kept = [ax for ax in out_pat if ax in shared]
        sel = np.ones(v.shape, dtype=bool)
        if kept:
            perm = [kept.index(ax) for ax in pat if ax in shared]
            mm = np.transpose(m, perm) if perm else m
            shape = [v.shape[i] if ax in shared else 1 for i, ax in enumerate(pat)]
            sel = np.broadcast_to(mm.reshape(shape), v.shape)
        at = v[sel]
        rest = v[~sel]
        if at.size == 0:
            continue
        lo, hi = float(np.min(at)), float(np.max(at))
        med = float(np.median(v)) if np.median(v) > 0 else float(np.max(v))
        typical.append((hi, a.name))
        if med > 0 and lo <= 1e-6 * med and (rest.size == 0 or lo < float(np.min(rest)) or lo == 0.0):
            rest_s = f" (elsewhere |{a.name}| >= {float(np.min(rest)):.2g})" if rest.size else ""
            notes.append(f"|{a.name}| reaches {lo:.2g}{rest_s}: the regime {a.name} -> 0, where a quotient such as "
                         f"(e^x - 1)/x cancels (evaluate it as expm1(x)/x or phi1 with a series near 0)")
        elif hi >= 1e30 or (med > 0 and hi >= 1e8 * med):
            notes.append(f"|{a.name}| reaches {hi:.2g} (typical {med:.2g}): an overflow regime (exp of a large "
                         "argument, a product of large values)")
    if not notes and typical:
        hi, nm = max(typical)
        notes.append(f"the inputs are of ordinary magnitude (largest |{nm}| = {hi:.3g})")
    return notes


# -- 8. one convention flip ----------------------------------------------------------------------------------------

def _convention_flips(ctx: Context) -> Optional[str]:
    """The oracle recomputed under each alternative value of each convention and compared with the candidate's
    outputs; if none explains the failure, the candidate is re-run under each alternative of a *layout*
    convention (one that changes only how arrays are laid out for the candidate, never what it computes)."""
    spec, conv = ctx.spec, ctx.conv
    alts = [(c, alt) for c in spec.conventions if c.choices and len(c.choices) > 1
            for alt in c.choices if alt != conv[c.name] and c.name not in ctx.implied]
    for recall in (False, True):
        explained = []
        for c, alt in alts:
            conv2 = dict(conv, **{c.name: alt})
            if recall and not c.layout:
                continue
            try:
                o2 = ctx.oracle(dict(ctx.inputs), conv2)
                if recall:
                    cand2 = ctx.candidate_again(conv=conv2)
                    if cand2 is None:
                        continue
                elif ctx.cand is None:
                    continue
                else:
                    cand2 = ctx.cand
                if ctx.passes(cand2, ctx.inputs, conv2, o2):
                    explained.append(f"the candidate conforms under convention {c.name}={alt!r} instead of "
                                     f"{conv[c.name]!r} ({c.doc})")
            except Exception:  # the alternative does not apply to these inputs (or the candidate refuses it)
                continue
        if explained:
            return "; ".join(explained)
    return None


# -- the whole diagnosis -------------------------------------------------------------------------------------------

# (name, strategy, tier): tier 0 names an alternative under which the candidate conforms (or a plain fact: an
# output missing, NaN/Inf, lower-precision values); tier 1 is the statistical match of a lower precision's error;
# tier 2 says where the error lies.  Tiers are tried in turn, each in this order: a true alternative says more
# than an error's size, and an error's size more than where it lies.
STRATEGIES: Tuple[Tuple[str, Callable[[Context], Optional[str]], int], ...] = (
    ("lower-precision values", _lowp_values, 0),
    ("swapped inputs", _swapped_inputs, 0),
    ("swapped call arguments", _swapped_call_arguments, 0),
    ("off-by-one convention", _int_conventions_off_by_one, 0),
    ("output shift", _output_shift, 0),
    ("read before update", _read_before_update, 0),
    ("time pattern", _time_pattern, 2),
    ("group order", _group_order, 0),
    ("channel block", _channel_pattern, 2),
    ("state", _state, 0),
    ("non-finite", _nonfinite, 0),
    ("convention flip", _convention_flips, 0),
    ("lower-precision error", _lower_precision, 1),
)


def _structural(ctx: Context) -> List[str]:
    """Facts that need no search: outputs in lower precision than asked for, layouts that do not match."""
    reasons = []
    lowp = [f"{r.output} {r.precision}" for r in ctx.results if getattr(r, "precision", None)]
    if lowp:
        reasons.append("; ".join(lowp) + " (a framework computing in lower precision, e.g. JAX without x64?)")
    shape_bad = [r.comparison.message for r in ctx.results if "shape mismatch" in (r.comparison.message or "")]
    if shape_bad:
        reasons.append("; ".join(f"layout: {m} (wrong adapter or axis order?)" for m in shape_bad))
    return reasons


def _where(ctx: Context, output: str) -> str:
    """`` (failing only at l = 0 of 3, h = 1 of 2)``: the axes along which the failure is confined (no gap needed)."""
    m = next((m for m in ctx.maps if m.output == output), None)
    if m is None:
        return ""
    parts = []
    for lab, prof in m.profiles.items():
        letter = re.sub(r"\d+$", "", lab)
        fail = np.flatnonzero(prof > 1.0)
        if letter not in BATCH_AXES and prof.size > 1 and 0 < fail.size < prof.size:
            parts.append(_describe_set(fail, prof.size, lab))
    return f" (failing only at {', '.join(parts)})" if parts else ""


def diagnose(ctx: Context) -> Diagnosis:
    """Name the first cause that explains the failing case (see the module docstring for the order)."""
    ctx.maps = error_maps(ctx)
    reasons = _structural(ctx)
    ordered = sorted(STRATEGIES, key=lambda st: st[2])  # (a stable sort: the order within each tier is kept)
    for _, strategy, _ in ordered:
        try:
            why = strategy(ctx)
        except Exception:  # a strategy that cannot run on this case explains nothing
            why = None
        if why:
            reasons.append(why)
            break
    else:
        bad = _failing(ctx)
        if bad and not reasons:
            r = bad[0]
            where = _where(ctx, r.output)
            reasons.append(f"{r.output} exceeds its bound {r.comparison.worst_ratio:.3g}x at "
                           f"{r.comparison.worst_index}{where}; no single other convention explains it")
    return Diagnosis("; ".join(reasons), ctx.maps)
