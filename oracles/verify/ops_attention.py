r"""Op specs ``attention.softmax`` and ``attention.linear``, their adapters, and the argument-path probe.

attention.softmax
-----------------
Canonical (sequence-first ``[B, T, H, D]``, refimpl's layout; ``k``, ``v`` carry ``g`` key/value heads)::

    fn(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None) -> o
    q (b lq h d), k (b lk g d), v (b lk g e), o (b lq h e); bias (b h lq lk); alibi_slopes (h) or (b h);
    key_padding_mask (b lk) bool, True = a real key, False = padding

The score of query ``i`` and key ``j`` (query head ``x`` reads key/value head ``x // (h / g)``, FlashAttention's
and ``torch``'s ``enable_gqa`` grouping) is::

    t_ij = scale q_i . k_j;   s_ij = softcap tanh(t_ij / softcap) (softcap > 0) or t_ij;
    s_ij += bias_ij - slope_x |i + lk - lq - j|   (ALiBi, FlashAttention's bottom-right aligned distance)

then the softmax over the kept keys (causal diagonal, window, key padding mask) times ``v``.  A query row with
no kept key is zero.  Conventions: ``scale`` (``None`` = ``1/sqrt(d)``), ``causal`` (``None``, ``"top_left"`` =
PyTorch's ``is_causal``, keep ``j <= i``; ``"bottom_right"`` = FlashAttention, keep ``j <= i + lk - lq``), a
sliding window ``(window_left, window_right)`` in FlashAttention's sense (bottom-right aligned, ``-1`` =
unbounded: keep ``i + lk - lq - left <= j <= i + lk - lq + right``), ``softcap`` (0 = off), ``grouped_kv``
(``g`` may be smaller than ``h``), ``use_bias``, ``use_alibi``, ``use_key_padding_mask`` (the optional inputs
the candidate takes; a claimed feature is present in every case).  Oracle: :func:`oracles.attention.sdpa_mpmath`
on small cases, :func:`oracles.attention.sdpa_float64` on larger ones; bound
:func:`oracles.attention.softmax_attention_bound`.  Probes: causality (when causal), argument paths.

attention.linear
----------------
Canonical (sequence-first, refimpl's layout; refimpl passes the state as one argument, see the adapter)::

    fn(phi_q, phi_k, v, S0=None, u0=None) -> (o, S_last, u_last)

``phi_q``, ``phi_k`` (b l h n) feature-mapped queries/keys, ``v`` (b l h e); the state in the
canonical arrays is **V x K**: ``S0``/``S_last`` (b h e n), ``u0``/``u_last`` (b h n); a candidate claiming
``state_layout="kv"`` gets and returns ``(b h n e)`` through every adapter, the canonical one included.
Conventions: ``causal``, ``normalize``, ``eps`` and ``eps_mode`` (``add``: ``/(den + eps)``, ``clamp``:
``/max(den, eps)``, ``key_sum``: ``/(phi_q . (u0 + sum_j phi_k_j + eps))``, eps added to every entry of the
running key sum as performer-pytorch's causal linear attention does), ``state_layout``, ``scale``
(multiplies ``phi_q``: the "scale on q" of linear-attention kernel libraries; ``None`` = ``n^{-1/2}``, FLA's
default), ``use_state``.  Oracle: :func:`oracles.attention.linear_attention_mpmath` (small) or
:func:`oracles.attention.linear_attention_fsum` (large, stateless); bound
:func:`oracles.attention.linear_attention_bound`.

Argument paths (issue 11)
-------------------------
A default verification runs the candidate under one set of conventions, but an adapter passes some of them
as arguments (``causal=``, ``scale=``, ``eps=``, ``window_size=`` ...).  :func:`argument_paths_probe` runs the
candidate once more for every other value of each convention the adapter *tells* the candidate (a choice's
other values; a scale other than 1 and other than the default), without each optional input the candidate
claims (an initial state given and not, gated and not), and with each output-selecting flag
(``return_final_state``, ``output_final_state``) flipped, and compares with the oracle under those
conventions and their derived bounds.  A candidate that refuses a value with an error naming the argument
(``TypeError: unexpected keyword softcap``, ``ValueError: causal: the chunked view is causal``) does not support
it: the path is reported as not exercised, never as a failure; any other error, and any wrong value, fails.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from oracles.attention import (keep_mask, linear_attention_bound, linear_attention_fsum, linear_attention_magnitude,
                               linear_attention_mpmath, sdpa_float64, sdpa_mpmath, softmax_attention_bound)
from oracles.tolerance import Bound, compare, componentwise_bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, Probe, case_builder, draw_sizes,
                                     feature_convention, op_domain, op_functions, register_op, seeded_strategy)

OP_SOFTMAX = "attention.softmax"
OP_LINEAR = "attention.linear"
MPMATH_WORK = 6000  # multiply-adds up to which the mpmath oracle is used
LOWP = ("float16", "bfloat16")

# ----------------------------------------------------------------------------------------------------------
# argument paths: every argument an adapter passes, exercised by default
# ----------------------------------------------------------------------------------------------------------

OUTPUT_FLAGS = ("return_final_state", "output_final_state",  # flags that only select what is returned
                "return_last_state", "return_final_states")  # (Mamba's selective_scan_fn, Mamba-2's chunk scan)


def _scalars(v):
    """The non-array part of a call's arguments (arrays become a token): what the conventions told the candidate."""
    if isinstance(v, np.ndarray) or hasattr(v, "__dlpack__"):
        return "<array>"
    if isinstance(v, (list, tuple)):
        return tuple(_scalars(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _scalars(x)) for k, x in v.items()))
    return v


def _told(ad: Adapter, spec: OpSpec, x: Mapping[str, Any], conv: Mapping[str, Any]):
    """``(text, {keyword: value})``: the non-array part of the call the adapter builds under ``conv``."""
    from oracles.verify.registry import infer_dims

    args, kwargs = ad.build_call(spec, x, conv, infer_dims(spec.inputs, x))
    kw = {k: _scalars(v) for k, v in kwargs.items()}
    return repr((_scalars(args), sorted(kw.items()))), kw


def _paths(call, spec: OpSpec, conv: Dict[str, Any], rng, alternatives, optional, sampler):
    """``[(label, conv2, inputs, adapter2, outputs_optional, names)]`` for the probe to run; ``names``: the
    convention and the keyword arguments that differ from the run's call (a refusal that names one of them is
    the candidate saying it does not support that value, not a wrong answer)."""
    ad = call.adapter
    out = []
    draw = lambda r, c: spec.fit_domain((sampler or spec.sample)(r, c), r, c)  # noqa: E731  (inside a --domain)
    for c in spec.conventions:
        if c.name in ad.implies or c.name in optional:
            continue
        alts = list(c.choices) if c.choices else list(alternatives.get(c.name, ()))
        for alt in alts:
            if alt == conv[c.name]:
                continue
            conv2 = dict(conv, **{c.name: alt})
            try:
                spec.resolve_conventions(conv2)
                x = draw(rng, conv2)
                base, kw1 = _told(ad, spec, x, conv)
                told, kw2 = _told(ad, spec, x, conv2)
            except Exception:  # the adapter (or the sampler) cannot express this value: not a path of this call
                continue
            if told != base:
                changed = {k for k in set(kw1) | set(kw2) if kw1.get(k, "<absent>") != kw2.get(k, "<absent>")}
                out.append((f"{c.name}={alt!r}", conv2, x, ad, False, {c.name} | changed))
    for flag, names in optional.items():
        if conv.get(flag) is True and flag not in ad.implies:
            x = dict(draw(rng, conv))
            for nm in names:
                x[nm] = None
            out.append((f"without {', '.join(names)}", dict(conv), x, ad, False, set()))
    for k, item in ad.kwargs.items():
        if k in OUTPUT_FLAGS and isinstance(item, Const) and isinstance(item.value, bool):
            ad2 = dataclasses.replace(ad, kwargs={**ad.kwargs, k: Const(not item.value)})
            out.append((f"{k}={not item.value}", dict(conv), dict(draw(rng, conv)), ad2, True, set()))
    return out


def argument_paths_probe(alternatives: Optional[Mapping[str, Sequence[Any]]] = None,
                         optional: Optional[Mapping[str, Sequence[str]]] = None, sampler=None) -> Probe:
    """The probe of the module docstring.

    ``alternatives``: values to try for conventions without choices (a ``scale`` other than 1, an ``eps``, a
    window); conventions with choices try every other choice.  ``optional``: ``{use_flag: (input names)}`` --
    when the candidate claims ``use_flag`` (and the adapter does not imply it), one run without those inputs.
    ``sampler(rng, conv)``: the inputs (default: the op's sampler).
    """
    alternatives = dict(alternatives or {})
    optional = dict(optional or {})

    def run(call, spec, conv, rng, dtype=None):
        name = dtype.name if dtype is not None else "float64"
        if name in LOWP:
            return True, f"not applicable in {name} (the argument paths are checked in float64/float32)"
        cast = dtype.cast if dtype is not None else (lambda x: dict(x))
        upcast = dtype.upcast if dtype is not None else (lambda x: dict(x))
        ran, skipped, fails = [], [], []
        for label, conv2, x, ad2, outputs_optional, names in _paths(call, spec, conv, rng, alternatives, optional,
                                                                   sampler):
            xc = cast(x)
            x_up = upcast(xc)
            try:  # a combination outside the op's domain (e.g. a stabilizer on trig features) is no path
                o = spec.oracle(dict(x_up), conv2)
            except Exception:
                continue
            try:
                y = dataclasses.replace(call, conv=conv2, adapter=ad2)(xc)
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"
                if any(nm in str(exc) for nm in names):  # an explicit refusal naming the argument: unsupported
                    skipped.append(f"{label} (refused: {text})")
                else:
                    fails.append(f"under {label} the candidate raised {text}")
                continue
            bnd = spec.bounds(dict(x_up), dict(o), conv2, np.dtype(name))
            worst = None
            for a in spec.outputs:
                if a.name not in o or a.name not in bnd:
                    continue
                if a.name not in y:
                    if not (outputs_optional or a.optional):
                        worst = (math.inf, a.name, "not returned")
                    continue
                c = np.asarray(y[a.name])
                cmp = compare(c.astype(np.float64) if c.dtype.kind == "V" else c, o[a.name], bnd[a.name],
                              dtype=np.dtype(name))
                if not cmp.passed and (worst is None or cmp.worst_ratio > worst[0]):
                    worst = (cmp.worst_ratio, a.name, cmp.message or
                             f"max abs error {cmp.max_abs_err:.3e}, {cmp.worst_ratio:.3g}x its {name} bound at "
                             f"{cmp.worst_index}")
            if worst is None:
                ran.append(label)
            else:
                fails.append(f"under {label} (an argument the adapter passes), output {worst[1]}: {worst[2]}")
        note = f"; not exercised: {'; '.join(skipped)}" if skipped else ""
        if fails:
            return False, "argument paths deviate: " + " | ".join(fails) + note
        if not ran:
            return True, "no other argument path: the adapter passes no convention and no output flag" + note
        return True, f"{len(ran)} other argument path(s) conform: {', '.join(ran)}" + note

    return Probe("argument_paths", "every other value of each convention the adapter passes as an argument, each "
                 "claimed optional input left out, each output flag flipped: all conform", run, per_dtype=True)


@dataclasses.dataclass(frozen=True)
class StateLayoutCanonical(Adapter):
    """The canonical signature (inputs positionally in declared order, trailing absent ones left out) that
    honours a ``state_layout`` convention: with ``"kv"`` the state input ``state`` reaches the candidate with
    its last two axes swapped (``(b h n e)``) and the returned ``state_out`` is swapped back."""

    state: str = "S0"
    state_out: str = "S_last"

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        if conv.get("state_layout") == "kv" and inputs.get(self.state) is not None:
            inputs = dict(inputs)
            inputs[self.state] = np.swapaxes(np.asarray(inputs[self.state]), -1, -2)
        return super().build_call(spec, inputs, conv, dims, convert)

    def read_outputs(self, spec, ret, dims, to_numpy, conv=None):
        out = super().read_outputs(spec, ret, dims, to_numpy, conv)
        if (conv or {}).get("state_layout") == "kv" and self.state_out in out:
            out[self.state_out] = np.swapaxes(np.asarray(out[self.state_out]), -1, -2)
        return out


def canonical_with_state(op: str, state: str = "S0", state_out: str = "S_last") -> StateLayoutCanonical:
    return register_adapter(StateLayoutCanonical(
        name="canonical", op=op, state=state, state_out=state_out,
        doc=f"the op's canonical signature; with state_layout='kv' the state {state} is passed and {state_out} read "
            "with the last two axes swapped (b h n e)"))


# ----------------------------------------------------------------------------------------------------------
# attention.softmax
# ----------------------------------------------------------------------------------------------------------

def window_keep(lq: int, lk: int, causal, left: int, right: int) -> np.ndarray:
    """The keep-mask ``(lq, lk)``: the causal alignment (oracles.attention.keep_mask) and the window."""
    keep = keep_mask(lq, lk, causal)
    if left >= 0 or right >= 0:
        off = lk - lq  # FlashAttention's windows are bottom-right aligned
        for i in range(lq):
            for j in range(lk):
                if left >= 0 and j < i + off - left:
                    keep[i, j] = False
                if right >= 0 and j > i + off + right:
                    keep[i, j] = False
    return keep


def _scale(conv, d):
    return (1.0 / math.sqrt(d) if d > 0 else 1.0) if conv["scale"] is None else float(conv["scale"])


def expand_kv_heads(x: np.ndarray, h: int) -> np.ndarray:
    """``(b s g e) -> (b s h e)``: query head ``i`` reads key/value head ``i // (h / g)`` (FlashAttention's GQA)."""
    x = np.asarray(x)
    g = x.shape[2]
    if g == 0 or h % g:
        raise ValueError(f"k: expected a number of key/value heads g dividing h = {h}, got g = {g}")
    return np.repeat(x, h // g, axis=2)


def alibi_bias(slopes, b: int, h: int, lq: int, lk: int) -> np.ndarray:
    """``-slope_x |i + lk - lq - j|`` ``(b|1, h, lq, lk)``: FlashAttention's ALiBi, distances bottom-right aligned."""
    sl = np.asarray(slopes, dtype=np.float64)
    sl = sl[None] if sl.ndim == 1 else sl  # (1|b, h)
    dist = np.abs(np.arange(lq)[:, None] + (lk - lq) - np.arange(lk)[None, :]).astype(np.float64)
    return -sl[:, :, None, None] * dist[None, None]


def _softmax_parts(inp, conv):
    """``(q, k, v, scale, keep (b|1 h|1 lq lk), bias or None, bias_roundings)`` with k, v expanded to h heads."""
    q = np.asarray(inp["q"], dtype=np.float64)
    b, lq, h, d = q.shape
    k = expand_kv_heads(np.asarray(inp["k"], dtype=np.float64), h)
    v = expand_kv_heads(np.asarray(inp["v"], dtype=np.float64), h)
    lk = k.shape[1]
    keep = window_keep(lq, lk, conv["causal"], int(conv["window_left"]), int(conv["window_right"]))[None, None]
    kpm = inp.get("key_padding_mask") if conv["use_key_padding_mask"] else None
    if kpm is not None:
        keep = keep & np.asarray(kpm, dtype=bool)[:, None, None, :]
    bias, roundings = None, 0
    if conv["use_bias"] and inp.get("bias") is not None:
        bias, roundings = np.asarray(inp["bias"], dtype=np.float64), 1  # + bias
    if conv["use_alibi"] and inp.get("alibi_slopes") is not None:
        # the kernel forms slope * distance (possibly slope / scale, times the scale later) and adds it: <= 4
        # roundings; the oracle rounds slope * distance once in float64: 5 in all
        ab = alibi_bias(inp["alibi_slopes"], b, h, lq, lk)
        bias = ab if bias is None else bias + ab
        roundings += 5
    return q, k, v, _scale(conv, d), keep, bias, roundings


def _exact_softmax(q, k, v) -> bool:
    b, lq, h, d = q.shape
    return b * h * lq * k.shape[1] * (d + v.shape[3]) <= MPMATH_WORK


def softmax_oracle(inp, conv):
    q, k, v, sc, keep, bias, _ = _softmax_parts(inp, conv)
    cap = float(conv["softcap"])
    if _exact_softmax(q, k, v):
        return {"o": sdpa_mpmath(q, k, v, sc, keep, bias, softcap=cap)}
    return {"o": sdpa_float64(q, k, v, sc, keep, bias, softcap=cap)[0]}


def softmax_bounds(inp, out, conv, dtype):
    q, k, v, sc, keep, bias, roundings = _softmax_parts(inp, conv)
    return {"o": softmax_attention_bound(q, k, v, sc, keep, dtype,
                                         oracle_dtype=None if _exact_softmax(q, k, v) else np.float64, bias=bias,
                                         softcap=float(conv["softcap"]), bias_roundings=roundings)}


def _refimpl_causal(conv) -> bool:
    """refimpl's ``causal`` (a bool) from the op's ``causal`` convention (None or the alignment's name)."""
    return conv["causal"] is not None


def softmax_reference(inp, conv):
    """The low-precision baseline: the literal computation in the inputs' dtype with refimpl's softmax."""
    from refimpl.attention.softmax import softmax

    q = np.asarray(inp["q"])
    dt = q.dtype
    b, lq, h, d = q.shape
    k = expand_kv_heads(np.asarray(inp["k"]), h).astype(dt)
    v = expand_kv_heads(np.asarray(inp["v"]), h).astype(dt)
    _, _, _, sc, keep, bias, _ = _softmax_parts(inp, conv)
    s = dt.type(sc) * np.einsum("bihd,bjhd->bhij", q, k)
    if float(conv["softcap"]):
        cap = dt.type(conv["softcap"])
        s = cap * np.tanh(s / cap)
    if bias is not None:
        s = s + bias.astype(dt)
    s = np.where(np.broadcast_to(keep, s.shape), s, dt.type(-np.inf))
    return {"o": np.einsum("bhij,bjhe->bihe", softmax(s, axis=-1), v)}


def _divisors_below(h: int) -> List[int]:
    return [g for g in range(1, h) if h % g == 0]


def softmax_sample(rng, conv, *, lq=None, lk=None, b=None, h=None, g=None, d=None, e=None):
    b = int(rng.integers(1, 3)) if b is None else b
    if h is None:
        h = int(rng.choice([2, 3, 4, 6])) if conv["grouped_kv"] else int(rng.integers(1, 3))
    elif conv["grouped_kv"] and h == 1 and g is None:
        h = 2  # a claimed grouping needs two query heads at least
    if g is None:  # grouped: always fewer key/value heads than query heads (the claimed feature is exercised)
        g = int(rng.choice(_divisors_below(h))) if conv["grouped_kv"] and h > 1 else h
    d, e = draw_sizes(rng, d=(d, 1, 5), e=(e, 1, 4))
    lq = int(rng.choice([1, 2, 3, 5, 8])) if lq is None else lq
    lk = (lq if rng.random() < 0.6 else int(rng.choice([1, 2, 4, 7]))) if lk is None else lk
    inp = {"q": rng.standard_normal((b, lq, h, d)), "k": rng.standard_normal((b, lk, g, d)),
           "v": rng.standard_normal((b, lk, g, e))}
    return _with_softmax_options(inp, conv, rng)


def _with_softmax_options(inp, conv, rng):
    """The optional inputs the candidate claims, drawn for ``q, k, v``: bias ~ N(0, 1), ALiBi slopes in
    (0.05, 1) as ``(h)`` or ``(b h)``, a key padding mask keeping about 70% of the keys (a batch entry with every
    key padded now and then: its rows are zero)."""
    b, lq, h, _ = np.shape(inp["q"])
    lk = np.shape(inp["k"])[1]
    inp = dict(inp, bias=None, alibi_slopes=None, key_padding_mask=None)
    if conv["use_bias"]:
        inp["bias"] = rng.standard_normal((b, h, lq, lk))
    if conv["use_alibi"]:
        inp["alibi_slopes"] = rng.uniform(0.05, 1.0, size=(h,) if rng.random() < 0.5 else (b, h))
    if conv["use_key_padding_mask"]:
        m = rng.random((b, lk)) < 0.7
        if b > 1 and rng.random() < 0.3:
            m[int(rng.integers(0, b))] = False
        inp["key_padding_mask"] = m
    return inp


def softmax_strategy(conv):
    if not conv["grouped_kv"]:
        try:  # the family's strategy (lq, lk from 0: empty and fully masked rows); its own mask/scale are ignored
            from oracles.strategies.attention import softmax_cases as family

            return family().map(lambda c: _with_softmax_options({"q": c.q, "k": c.k, "v": c.v}, conv,
                                                                np.random.default_rng([c.seed, 5])))
        except ImportError:
            pass
    return seeded_strategy(softmax_sample, conv)


def softmax_cases(conv) -> List[Case]:
    add = case_builder(OP_SOFTMAX, softmax_sample, 41, conv)
    out = add.cases

    add("golden-square", "golden", "lq = lk = 4, two heads", 1, lq=4, lk=4, b=1, h=2, d=3, e=2)
    if conv["grouped_kv"]:
        add("golden-gqa", "golden", "h = 4 query heads on g = 2 key/value heads (heads 0, 1 read kv head 0)", 7,
            lq=3, lk=4, b=1, h=4, g=2, d=2, e=2)
        add("golden-gqa-equal", "golden", "g = h: every query head has its own key/value head", 8, lq=3, lk=3,
            b=1, h=2, g=2, d=2, e=2)
    add("edge-lq-gt-lk", "edge", "lq = 5 > lk = 3: bottom-right causal leaves the first rows empty (zeros)", 2,
        lq=5, lk=3)
    add("edge-lq-lt-lk", "edge", "lq = 2 < lk = 6 (decoding with a KV cache): the alignments differ", 3, lq=2, lk=6)
    add("edge-L1", "edge", "a single query and key", 4, lq=1, lk=1)
    add("edge-large-scores", "edge", "scores of size ~40: needs max subtraction", 5, lq=4, lk=4, d=2)
    out[-1].inputs["q"] = out[-1].inputs["q"] * 6.0
    out[-1].inputs["k"] = out[-1].inputs["k"] * 6.0
    if conv["causal"] is not None:
        # a masked (future) key with a score ~1100 above the kept ones: a max taken over all keys, masked ones
        # included, makes exp(s - max) underflow to 0 on every earlier row (0/0); the mask must come first
        add("edge-masked-future-large", "edge", "the last key scores ~1100 for every query: only the last row may "
            "see it; a softmax max over masked keys underflows the other rows", 9, lq=6, lk=6, b=1, d=2, e=2)
        c = out[-1]
        c.inputs["q"] = np.abs(c.inputs["q"]) + 1.0
        k = np.abs(c.inputs["k"]) * 0.5
        k[:, -1] = 800.0
        c.inputs["k"] = k
    add("edge-block+1", "edge", "lq = lk = 65: one past a 64-wide tile", 10, lq=65, lk=65, b=1, h=1, d=4, e=2)
    add("edge-long", "edge", "lq = lk = 128", 6, lq=128, lk=128, b=1, h=1, d=8, e=4)
    return out


def _causal_only(conv):
    return conv["causal"] is not None


SOFTMAX_PATHS = argument_paths_probe(
    alternatives={"scale": (0.37,), "window_left": (2,), "window_right": (1,), "softcap": (1.5,)},
    optional={"use_bias": ("bias",), "use_alibi": ("alibi_slopes",), "use_key_padding_mask": ("key_padding_mask",)},
    sampler=lambda rng, conv: softmax_sample(rng, conv, lq=5, lk=5, b=1))

register_op(OpSpec(
    name=OP_SOFTMAX,
    summary="scaled dot-product (softmax) attention with named scale, causal alignment, window, softcap, bias, "
            "ALiBi, key padding and grouped key/value heads",
    inputs=(Arg("q", "b lq h d"), Arg("k", "b lk g d", "g key/value heads (g = h unless grouped_kv)"),
            Arg("v", "b lk g e"),
            Arg("bias", "b h lq lk", "additive score bias (use_bias)", optional=True),
            Arg("alibi_slopes", "h | b h", "ALiBi slopes: bias -slope |i + lk - lq - j| (use_alibi)", optional=True),
            Arg("key_padding_mask", "b lk", "True = a real key, False = padding (use_key_padding_mask)",
                optional=True, kind="bool")),
    outputs=(Arg("o", "b lq h e", "a query row with no kept key is zero"),),
    conventions=(
        Convention("scale", None, "multiplies q.k before the softmax; None = 1/sqrt(d)"),
        Convention("causal", None, "None; 'top_left' (PyTorch is_causal: j <= i); 'bottom_right' "
                   "(FlashAttention: j <= i + lk - lq)", (None, "top_left", "bottom_right")),
        Convention("window_left", -1, "sliding window, keys at most this far left of the bottom-right diagonal "
                   "(-1: unbounded)"),
        Convention("window_right", -1, "keys at most this far right of the bottom-right diagonal (-1: unbounded)"),
        Convention("softcap", 0.0, "score s -> softcap tanh(s / softcap) after the scale, before bias and mask "
                   "(Gemma 2, FlashAttention softcap); 0 = off"),
        Convention("grouped_kv", False, "k, v have g < h heads; query head i reads key/value head i // (h/g) "
                   "(grouped-query / multi-query attention)", (False, True)),
        Convention("use_bias", False, "the candidate takes an additive bias (b h lq lk)", (False, True)),
        Convention("use_alibi", False, "the candidate takes ALiBi slopes (h) or (b h) (FlashAttention alibi_slopes)",
                   (False, True)),
        Convention("use_key_padding_mask", False, "the candidate takes a key padding mask (b lk), True = keep",
                   (False, True)),
    ),
    **op_functions(globals(), "softmax_"),
    probes=(causality_probe({"q": "lq", "k": "lk", "v": "lk"}, {"o": "lq"}, applies=_causal_only,
                            sampler=lambda rng, conv: softmax_sample(rng, conv, lq=8, lk=8)),
            SOFTMAX_PATHS),
    domain=op_domain(length=(("lq", "lq"), ("lk", "lk")), query_length=("lq", "lq"), key_length=("lk", "lk"),
                     query_dim=("d", "d"), value_dim=("e", "e", "the value dimension e (value_dim=query_dim: e = d)"),
                     heads=("h", "h"), kv_heads=("g", "g", "the key/value heads g (kv_heads=heads: no grouped-query)")),
    module=__name__,
    notes="oracle: mpmath (small) / float64 logsumexp (large), oracles.attention; bound: softmax_attention_bound",
))


def _flash_causal(conv):
    if conv["causal"] == "top_left":
        raise ValueError("flash_attn's causal=True is bottom-right aligned: verify it with causal='bottom_right'")
    return conv["causal"] == "bottom_right"


def _torch_causal(conv):
    if conv["causal"] == "bottom_right":
        raise ValueError("torch's is_causal=True is top-left aligned: verify it with causal='top_left'")
    return conv["causal"] == "top_left"


def _fp32_if_lowp(a: np.ndarray) -> np.ndarray:
    """FlashAttention takes alibi_slopes in float32 whatever q's dtype (a lossless upcast of a low-precision input)."""
    return a.astype(np.float32) if (a.dtype.kind == "V" or a.dtype.itemsize < 4) else a


register_adapter(Adapter(
    name="flash_attn.flash_attn_func",
    op=OP_SOFTMAX,
    doc="FlashAttention's flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, "
        "window_size=(-1, -1), softcap=0.0, alibi_slopes=None): (B, S, H, D) layout, k/v with H_k heads dividing "
        "H (GQA), causal bottom-right aligned, (left, right) windows, softcap passed only when on (older versions "
        "have none), ALiBi slopes (H) or (B, H) in float32",
    args=(In("q"), In("k"), In("v")),
    kwargs={"dropout_p": Const(0.0), "softmax_scale": Conv(lambda c: c["scale"]), "causal": Conv(_flash_causal),
            "window_size": Conv(lambda c: (int(c["window_left"]), int(c["window_right"]))),
            "softcap": Conv(lambda c: float(c["softcap"]) if c["softcap"] else None),
            "alibi_slopes": In("alibi_slopes", transform=_fp32_if_lowp)},
    outputs=(Out("o", None),),
    implies={"use_bias": False, "use_key_padding_mask": False},
))


class _TorchSDPAAdapter(Adapter):
    """torch's attn_mask is one argument: an additive float mask (the bias, -inf where a key is padded) or a
    boolean keep-mask (the key padding mask alone); torch refuses attn_mask together with is_causal."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        bias = inputs.get("bias") if conv["use_bias"] else None
        kpm = inputs.get("key_padding_mask") if conv["use_key_padding_mask"] else None
        if bias is None and kpm is None:
            return args, kwargs
        if conv["causal"] is not None:
            raise ValueError("torch's scaled_dot_product_attention refuses attn_mask with is_causal=True: verify a "
                             "causal candidate without bias or key padding mask")
        if bias is None:
            mask = np.asarray(kpm, dtype=bool)[:, None, None, :]  # (b 1 1 lk), True = take part
        else:
            bias = np.asarray(bias)
            mask = bias if kpm is None else np.where(np.asarray(kpm, dtype=bool)[:, None, None, :], bias,
                                                     bias.dtype.type(-np.inf))
        kwargs["attn_mask"] = convert(np.ascontiguousarray(mask))
        return args, kwargs


register_adapter(_TorchSDPAAdapter(
    name="torch.sdpa",
    op=OP_SOFTMAX,
    doc="torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=..., "
        "scale=..., enable_gqa=...): head-first (B, H, L, D) layout, is_causal top-left aligned, no window, "
        "no softcap or ALiBi; bias and key padding mask travel as attn_mask (additive, -inf on padded keys)",
    args=(In("q", "b l h d -> b h l d"), In("k", "b l g d -> b g l d"), In("v", "b l g e -> b g l e")),
    kwargs={"is_causal": Conv(_torch_causal), "scale": Conv(lambda c: c["scale"]),
            "enable_gqa": Conv(lambda c: True if c["grouped_kv"] else None)},
    outputs=(Out("o", None, "b h l e -> b l h e"),),
    implies={"window_left": -1, "window_right": -1, "softcap": 0.0, "use_alibi": False},
))


class _RefimplSoftmaxAdapter(Adapter):
    """refimpl takes a boolean keep-mask ``(b l s)``: the key padding mask ``(b s)`` repeated over the queries."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        kpm = inputs.get("key_padding_mask") if conv["use_key_padding_mask"] else None
        if kpm is not None:
            lq = np.shape(inputs["q"])[1]
            kpm = np.asarray(kpm, dtype=bool)
            kwargs["mask"] = convert(np.ascontiguousarray(np.broadcast_to(kpm[:, None, :], (kpm.shape[0], lq,
                                                                                              kpm.shape[1]))))
        return args, kwargs


register_adapter(_RefimplSoftmaxAdapter(
    name="refimpl",
    op=OP_SOFTMAX,
    doc="refimpl.attention.scaled_dot_product_attention(q, k, v, scale=, causal=, alignment=, mask=, bias=): "
        "causal a bool, alignment 'top_left'/'bottom_right' passed whenever causal, the key padding mask as a keep-mask "
        "(b l s), the bias (b h l s) (the tiled Numba view refimpl.attention.softmax.numba:flash_attention takes "
        "q, k, v, scale, causal, alignment)",
    args=(In("q"), In("k"), In("v")),
    kwargs={"scale": Conv(lambda c: c["scale"]), "causal": Conv(_refimpl_causal),
            "alignment": Conv(lambda c: c["causal"]), "bias": In("bias")},
    outputs=(Out("o", None),),
    implies={"window_left": -1, "window_right": -1, "softcap": 0.0, "grouped_kv": False, "use_alibi": False},
))


# ----------------------------------------------------------------------------------------------------------
# attention.linear
# ----------------------------------------------------------------------------------------------------------

def linear_scale(conv, n: int) -> Tuple[float, int]:
    """``(scale, roundings)``: the factor on ``phi_q`` and how many roundings the candidate spends forming and
    applying it (an explicit scale: the product, 1; ``None`` = ``n^{-1/2}``: sqrt and reciprocal as well, 3)."""
    if conv["scale"] is None:
        return (1.0 / math.sqrt(n) if n > 0 else 1.0), 3
    return float(conv["scale"]), 1


def _lin_inputs(inp, conv):
    pq = np.asarray(inp["phi_q"], dtype=np.float64)
    sc, _ = linear_scale(conv, pq.shape[-1])
    pq = pq * sc  # the scale on q
    S0 = inp.get("S0") if conv["use_state"] else None
    u0 = inp.get("u0") if conv["use_state"] else None
    return pq, np.asarray(inp["phi_k"], dtype=np.float64), np.asarray(inp["v"], dtype=np.float64), S0, u0


def linear_oracle(inp, conv):
    pq, pk, v, S0, u0 = _lin_inputs(inp, conv)
    b, l, h, n = pq.shape
    e = v.shape[3]
    work = b * h * l * l * (n + e)
    if work <= 4 * MPMATH_WORK or S0 is not None or u0 is not None or conv["eps_mode"] != "add":
        o = linear_attention_mpmath(pq, pk, v, causal=bool(conv["causal"]), normalize=bool(conv["normalize"]),
                                    eps=float(conv["eps"]), eps_mode=conv["eps_mode"], S0=S0, u0=u0, layout="vk")
    else:
        o = linear_attention_fsum(pq, pk, v, causal=bool(conv["causal"]), normalize=bool(conv["normalize"]),
                                  eps=float(conv["eps"]))
    # final state: S_L = S0 + sum_j v_j phi(k_j)^T (b h e n),  u_L = u0 + sum_j phi(k_j)
    S_L = np.einsum("blhe,blhn->bhen", v, pk) + (0.0 if S0 is None else np.asarray(S0, dtype=np.float64))
    u_L = np.sum(pk, axis=1) + (0.0 if u0 is None else np.asarray(u0, dtype=np.float64))
    return {"o": o, "S_last": S_L, "u_last": u_L}


def linear_bounds(inp, out, conv, dtype):
    pq, pk, v, S0, u0 = _lin_inputs(inp, conv)
    kw = dict(causal=bool(conv["causal"]), normalize=bool(conv["normalize"]), eps=float(conv["eps"]), S0=S0, u0=u0,
              layout="vk", eps_mode=conv["eps_mode"])
    b, l, h, n = pq.shape
    bo = linear_attention_bound(pq, pk, v, out["o"], dtype=dtype, oracle_dtype=np.float64, oracle_depth=4, **kw)
    sc, roundings = linear_scale(conv, n)
    if sc != 1.0 or conv["scale"] is None:
        # phi_q * scale: `roundings` roundings per feature (relative u each) -> every product phi_q.phi_k moves by
        # gamma_roundings relative; the output by at most 2 gamma_roundings times the magnitude (first order)
        mag = linear_attention_magnitude(pq, pk, v, out["o"], **kw)
        bo = bo + Bound(2.0 * gamma(roundings, dtype) * mag,
                        f"scale on q: {roundings} rounding(s) per feature (2x the sensitivity)")
    # states: sums of L (+1) products, depth L + 2, both sides float64/candidate
    MS = np.einsum("blhe,blhn->bhen", np.abs(v), np.abs(pk)) + (0.0 if S0 is None else np.abs(S0))
    Mu = np.sum(np.abs(pk), axis=1) + (0.0 if u0 is None else np.abs(u0))
    bS = componentwise_bound(MS, l + 2, dtype, what="S_L: sum of L outer products (+ S0)")
    bu = componentwise_bound(Mu, l + 2, dtype, what="u_L: sum of L features (+ u0)")
    return {"o": bo, "S_last": bS, "u_last": bu}


def _initial_state(S0, u0, normalize):
    """refimpl's ``initial_state``: the pair ``(S, z)`` (normalized; z = the op's u0, zero if absent), or ``S``."""
    if S0 is None and u0 is None:
        return None
    if not normalize:
        return S0
    if S0 is None or u0 is None:
        raise ValueError("initial_state: refimpl takes the normalized state as the pair (S, z); "
                         "the case gives only one of S0, u0")
    return (S0, u0)


def linear_reference(inp, conv):
    """The low-precision baseline: refimpl's linear attention (the key_sum eps: numerator and denominator as two
    unnormalized runs, the denominator's with v = 1)."""
    from refimpl.attention.linear import linear_attention

    pq, pk, v = (np.asarray(inp[k]) for k in ("phi_q", "phi_k", "v"))
    sc, _ = linear_scale(conv, pq.shape[-1])
    pq = pq * pq.dtype.type(sc)
    S0 = inp.get("S0") if conv["use_state"] else None
    u0 = inp.get("u0") if conv["use_state"] else None
    normalize = bool(conv["normalize"])
    view = "recurrent" if conv["causal"] else "quadratic"
    if normalize and conv["eps_mode"] == "key_sum":
        num, S = linear_attention(pq, pk, v, causal=bool(conv["causal"]), view=view, normalize=False,
                                  initial_state=S0, return_final_state=True)
        ones = np.ones(pk.shape[:3] + (1,), dtype=pk.dtype)
        z0 = None if u0 is None else np.asarray(u0)[:, :, None, :]
        den, z = linear_attention(pq, pk, ones, causal=bool(conv["causal"]), view=view, normalize=False,
                                  initial_state=z0, return_final_state=True)
        den = den + pq.dtype.type(conv["eps"]) * np.sum(pq, axis=-1, keepdims=True)
        return {"o": num / den, "S_last": S, "u_last": z[:, :, 0, :]}
    o, state = linear_attention(pq, pk, v, causal=bool(conv["causal"]), view=view,
                                normalize=normalize, eps=float(conv["eps"]) if normalize else 0.0,
                                eps_mode=conv["eps_mode"], initial_state=_initial_state(S0, u0, normalize),
                                state_layout="vk", return_final_state=True)
    if normalize:
        S, z = state
        return {"o": o, "S_last": S, "u_last": z}
    # unnormalized: refimpl carries no normalizer; the op's u_last is the plain sum u0 + sum_j phi(k_j)
    u_last = np.sum(pk, axis=1) + (0.0 if u0 is None else np.asarray(u0))
    return {"o": o, "S_last": state, "u_last": u_last.astype(o.dtype, copy=False)}


def linear_sample(rng, conv, *, l=None, b=None, h=None, n=None, e=None):
    b, h, n, e = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5), e=(e, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 7, 16, 17])) if l is None else l
    # positive features (as after elu+1 or positive random features) keep the denominator away from 0
    pos = lambda *s: rng.uniform(0.1, 1.5, size=s)  # noqa: E731
    inp = {"phi_q": pos(b, l, h, n), "phi_k": pos(b, l, h, n), "v": rng.standard_normal((b, l, h, e)),
           "S0": None, "u0": None}
    if conv["use_state"]:
        inp["S0"] = rng.standard_normal((b, h, e, n))
        inp["u0"] = pos(b, h, n)
    return inp


def linear_strategy(conv):
    try:  # the family's strategy (positive features; the claimed state always given)
        from oracles.strategies.attention import linear_cases as family

        return family(with_state=bool(conv["use_state"])).map(
            lambda c: {"phi_q": c.phi_q, "phi_k": c.phi_k, "v": c.v, "S0": c.S0, "u0": c.z0})
    except ImportError:
        return seeded_strategy(linear_sample, conv)


CHUNK = 64  # the usual chunk length of chunked kernels (refimpl's default): the edge cases straddle it


def linear_cases(conv) -> List[Case]:
    add = case_builder(OP_LINEAR, linear_sample, 43, conv)
    out = add.cases

    add("golden-small", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("edge-L0", "edge", "L = 0: empty output; the final state is the initial one", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    add("edge-chunk-1", "edge", f"L = {CHUNK - 1} (a chunk of {CHUNK} minus one)", 5, l=CHUNK - 1, b=1, h=2, n=2, e=2)
    add("edge-chunk+1", "edge", f"L = {CHUNK + 1} (a chunk of {CHUNK} plus one)", 4, l=CHUNK + 1, b=1, h=1, n=2, e=2)
    return out


def _state_pattern(conv):
    return "b h e n -> b h n e" if conv["state_layout"] == "kv" else None


def _state_back(conv):
    return "b h n e -> b h e n" if conv["state_layout"] == "kv" else None


LINEAR_PATHS = argument_paths_probe(alternatives={"scale": (0.37,), "eps": (0.25,)},
                                    optional={"use_state": ("S0", "u0")},
                                    sampler=lambda rng, conv: linear_sample(rng, conv, l=7, b=1, h=2))

register_op(OpSpec(
    name=OP_LINEAR,
    summary="kernelized (linear) attention on feature-mapped queries and keys, causal or not, with state",
    inputs=(Arg("phi_q", "b l h n"), Arg("phi_k", "b l h n"), Arg("v", "b l h e"),
            Arg("S0", "b h e n", "initial state (V x K in canonical arrays)", optional=True),
            Arg("u0", "b h n", "initial normalizer state", optional=True)),
    outputs=(Arg("o", "b l h e"), Arg("S_last", "b h e n", optional=True), Arg("u_last", "b h n", optional=True)),
    conventions=(
        Convention("causal", True, "o_t uses keys j <= t (True) or all keys (False)", (True, False)),
        Convention("normalize", True, "o = S phi(q) / (u.phi(q) + eps) (True) or S phi(q) (False)", (True, False)),
        Convention("eps", 0.0, "epsilon of the denominator (see eps_mode)"),
        Convention("eps_mode", "add", "'add': /(den + eps); 'clamp': /max(den, eps); 'key_sum': "
                   "/(phi_q . (u0 + sum_j phi_k_j + eps)), eps on every entry of the key sum (performer-pytorch)",
                   ("add", "clamp", "key_sum")),
        Convention("state_layout", "vk", "the candidate's state orientation: 'vk' S (b h e n), 'kv' S (b h n e)",
                   ("vk", "kv"), layout=True),
        Convention("scale", 1.0, "multiplies phi_q (kernel libraries' scale on q); None = n^-1/2 (FLA's default)"),
        feature_convention("use_state", "initial state S0, u0 supported"),
    ),
    **op_functions(globals(), "linear_"),
    probes=(causality_probe({"phi_q": "l", "phi_k": "l", "v": "l"}, {"o": "l"}, applies=lambda c: bool(c["causal"])),
            LINEAR_PATHS),
    domain=op_domain(length=("l", "l"), query_dim=("n", "n", "the query/key dimension n"),
                     value_dim=("e", "e", "the value dimension e (value_dim=query_dim: the candidate needs e = n)")),
    module=__name__,
    notes="oracle: mpmath dense materialization / float64 fsum (oracles.attention); bound: linear_attention_bound; "
          "the canonical adapter passes S0 and reads S_last as (b h n e) under state_layout='kv'",
))

canonical_with_state(OP_LINEAR)


class _RefimplLinearAdapter(Adapter):
    """refimpl's linear attention: the state travels as one argument, ``initial_state=(S, z)`` (normalized) or
    ``S`` (unnormalized), and comes back as ``(o, (S, z))`` or ``(o, S)``; the declarative fields cover the rest."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        S0, z0 = kwargs.pop("S0", None), kwargs.pop("u0", None)
        if not conv["use_state"]:
            S0 = z0 = None
        state = _initial_state(S0, z0, bool(conv["normalize"]))
        if state is not None:
            kwargs["initial_state"] = state
        return args, kwargs

    def read_outputs(self, spec, ret, dims, to_numpy, conv=None):
        if isinstance(ret, (tuple, list)) and len(ret) == 2 and isinstance(ret[1], (tuple, list)):
            ret = (ret[0], *ret[1])  # (o, (S, z)) -> (o, S, z)
        return super().read_outputs(spec, ret, dims, to_numpy, conv)


def _refimpl_eps_mode(c):
    if c["eps_mode"] not in ("add", "clamp"):
        raise ValueError(f"refimpl's linear attention has eps_mode 'add' and 'clamp', not {c['eps_mode']!r}")
    return c["eps_mode"]


register_adapter(_RefimplLinearAdapter(
    name="refimpl",
    op=OP_LINEAR,
    doc="refimpl.attention.linear_attention(phi_q, phi_k, v, causal=, normalize=, eps=, eps_mode=, state_layout=, "
        "initial_state=(S, z) or S, return_final_state=True) -> (o, (S, z)) or (o, S); the views "
        "refimpl.attention.linear.reference:quadratic/recurrent/chunked and the Numba kernels "
        "refimpl.attention.linear.numba:causal_recurrent/causal_chunked take the same arguments",
    args=(In("phi_q"), In("phi_k"), In("v")),
    kwargs={"causal": Conv(lambda c: bool(c["causal"])), "normalize": Conv(lambda c: bool(c["normalize"])),
            "eps": Conv(lambda c: float(c["eps"]) if c["normalize"] else 0.0),
            "eps_mode": Conv(_refimpl_eps_mode), "S0": In("S0", _state_pattern), "u0": In("u0"),
            "state_layout": Conv(lambda c: c["state_layout"]), "return_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, _state_back), Out("u_last", 2)),
    implies={"scale": 1.0},
))


def _scale_arg(c):
    """A kernel library's ``scale=``: the float, or not passed when None (their default is n^-1/2, as ours)."""
    return None if c["scale"] is None else float(c["scale"])


register_adapter(Adapter(
    name="fla.linear_attn",
    op=OP_LINEAR,
    doc="linear-attention kernel libraries (flash-linear-attention style fused_recurrent/chunk_linear_attn): "
        "q, k, v [B, T, H, K] sequence-first, scale applied to q (None: K^-1/2), state K x V [B, H, K, V] as "
        "initial_state, output_final_state=True -> (o, final_state); unnormalized, causal, no normalizer state",
    args=(In("phi_q"), In("phi_k"), In("v")),
    kwargs={"scale": Conv(_scale_arg), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "normalize": False, "causal": True},
))

register_adapter(Adapter(
    name="fla.linear_attn.head_first",
    op=OP_LINEAR,
    doc="the same kernels in the head-first layout: q, k, v [B, H, T, K], state [B, H, K, V]",
    args=(In("phi_q", "b l h n -> b h l n"), In("phi_k", "b l h n -> b h l n"), In("v", "b l h e -> b h l e")),
    kwargs={"scale": Conv(_scale_arg), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0, "b h l e -> b l h e"), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "normalize": False, "causal": True},
))

register_adapter(Adapter(
    name="performer_pytorch.linear_attention",
    op=OP_LINEAR,
    doc="performer-pytorch's linear_attention(q, k, v): non-causal, normalized, head-first (b h n d) feature-mapped "
        "q, k; D_inv = 1 / (q . sum_j k_j) with no epsilon and no state",
    args=(In("phi_q", "b l h n -> b h l n"), In("phi_k", "b l h n -> b h l n"), In("v", "b l h e -> b h l e")),
    outputs=(Out("o", None, "b h l e -> b l h e"),),
    implies={"causal": False, "normalize": True, "eps": 0.0, "use_state": False, "scale": 1.0},
))

register_adapter(Adapter(
    name="performer_pytorch.causal_linear_attention_noncuda",
    op=OP_LINEAR,
    doc="performer-pytorch's causal_linear_attention_noncuda(q, k, v, chunk_size=128, eps=1e-6): causal, normalized, "
        "head-first; D_inv = 1 / (q . (cumsum_j k_j + eps)) -- eps on every entry of the running key sum "
        "(eps_mode='key_sum'); the sequence is cut with torch.chunk into chunk_size *pieces* (not pieces of length "
        "chunk_size); eps passed from the convention (its default is 1e-6: claim eps=1e-6 to verify that)",
    args=(In("phi_q", "b l h n -> b h l n"), In("phi_k", "b l h n -> b h l n"), In("v", "b l h e -> b h l e")),
    kwargs={"eps": Conv(lambda c: float(c["eps"]))},
    outputs=(Out("o", None, "b h l e -> b l h e"),),
    implies={"causal": True, "normalize": True, "eps_mode": "key_sum", "use_state": False, "scale": 1.0},
))
