r"""Op spec ``attention.delta_rule`` (the delta rule and the gated delta rule) and its adapters.

Canonical (sequence-first, refimpl's layout; refimpl names ``alpha`` ``decay`` and ``S0`` ``initial_state``)::

    fn(q, k, v, beta, alpha=None, S0=None) -> (o, S_last)

``q``, ``k`` (b l h n); ``v`` (b l h e); ``beta``, ``alpha`` (b l h); the state in canonical arrays
is **V x K**, ``S0``/``S_last`` (b h e n); a candidate claiming ``state_layout="kv"`` gets and returns
``(b h n e)`` through every adapter, the canonical one included::

    k <- norm(k), q <- scale norm(q)
    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,    o_t = S_t q_t

Conventions: ``key_norm``/``query_norm`` (none, ``sum``: x / sum(x), ``l2``: x / |x|; FLA's
``use_qk_l2norm_in_kernel=True`` is both ``l2``), ``state_layout`` (the candidate's orientation; ``kv`` =
(b h n e), the layout of GPU kernels), ``scale`` (on the normalized q; ``None`` = ``n^{-1/2}``, FLA's default),
``use_alpha`` (the gated rule), ``use_state``, ``algorithm``/``chunk`` (the bound's view and the chunk the edge
cases straddle).  Oracle: :func:`oracles.attention.delta_rule_mpmath` (the transition-matrix form in mpmath,
normalizations and scale included); bound: :func:`oracles.attention.delta_rule_bound` (needs
``0 <= beta |k|^2 <= 2``, ``0 < alpha <= 1``: the cases respect it) plus the roundings of the key and query
normalizations and of the scale.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from oracles.attention import delta_rule_bound, delta_rule_mpmath
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe, canonical_with_state
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, feature_convention,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "attention.delta_rule"
NORMS = ("none", "sum", "l2")


def delta_scale(conv, n: int):
    """``(scale, roundings)``: the factor on the normalized query and the roundings spent forming and applying it."""
    if conv["scale"] is None:
        return (1.0 / math.sqrt(n) if n > 0 else 1.0), 3
    return float(conv["scale"]), 1


def _norm_name(x):
    return None if x == "none" else x


def _normed(x, mode):
    x = np.asarray(x, dtype=np.float64)
    if mode == "sum":
        return x / np.sum(x, axis=-1, keepdims=True)
    if mode == "l2":
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _eff(inp, conv):
    alpha = inp.get("alpha") if conv["use_alpha"] else None
    S0 = inp.get("S0") if conv["use_state"] else None
    return alpha, S0


def oracle(inp, conv):
    alpha, S0 = _eff(inp, conv)
    n = np.shape(inp["k"])[-1]
    o, S = delta_rule_mpmath(inp["q"], inp["k"], inp["v"], inp["beta"], alpha, S0, _norm_name(conv["key_norm"]),
                             query_norm=_norm_name(conv["query_norm"]), scale=delta_scale(conv, n)[0])
    return {"o": o, "S_last": S}


def _norm_roundings(mode, n: int) -> int:
    """Relative roundings of a normalized vector's entries: l2 (n products and sums, sqrt, divide), sum (n + 1)."""
    return {"none": 0, "sum": n + 1, "l2": n + 2}[mode]


def bounds(inp, out, conv, dtype):
    alpha, S0 = _eff(inp, conv)
    k = np.asarray(inp["k"], dtype=np.float64)
    b, l, h, n = k.shape
    sc, sc_r = delta_scale(conv, n)
    q = _normed(inp["q"], conv["query_norm"]) * sc  # the effective query (a magnitude, float64)
    key_norm = _norm_name(conv["key_norm"])
    extra_local = 2 * _norm_roundings(conv["key_norm"], n)
    kw = dict(view=conv["algorithm"], chunk=int(conv["chunk"]), key_norm=key_norm, dtype=dtype,
              extra_local=extra_local)
    bo = delta_rule_bound(q, k, inp["v"], inp["beta"], alpha, S0, **kw)
    q_r = (sc_r if (sc != 1.0 or conv["scale"] is None) else 0) + _norm_roundings(conv["query_norm"], n)
    if q_r:
        # the query's entries carry relative error gamma_{q_r} (normalization, scale): at most gamma_{q_r} |S_t| |q_t|
        # on each output, with S_t the exact state trajectory (float64 loop; a magnitude, not a compared value)
        kk = _normed(k, conv["key_norm"])
        v = np.asarray(inp["v"], dtype=np.float64)
        beta = np.asarray(inp["beta"], dtype=np.float64)
        S = np.zeros((b, h, v.shape[-1], n)) if S0 is None else np.asarray(S0, dtype=np.float64).copy()
        mag = np.zeros(np.shape(out["o"]))
        for t in range(l):
            a = 1.0 if alpha is None else np.asarray(alpha, dtype=np.float64)[:, t, :, None, None]
            S = a * S
            S = S + (beta[:, t, :, None] * (v[:, t] - np.einsum("bhen,bhn->bhe", S, kk[:, t])))[..., None] \
                * kk[:, t, :, None, :]
            mag[:, t] = np.einsum("bhen,bhn->bhe", np.abs(S), np.abs(q[:, t]))
        bo = bo + Bound(gamma(q_r, dtype) * mag, f"the query's normalization and scale: {q_r} roundings, "
                                                 "gamma |S_t| |q_t|")
    # the final state: S_L's error is bounded by the accumulated state error of the bound's derivation;
    # we use the same normwise propagation on the state with |q| = 1 (each entry <= the Frobenius norm)
    e = np.shape(out["S_last"])[-2]
    bs = delta_rule_bound(np.ones(k.shape), k, inp["v"], inp["beta"], alpha, S0, **kw)
    if l:
        # ||E_L||_F |1| + gamma_n |S_L| |1| bounds every entry of the final state's error
        per = np.max(np.asarray(bs.values)[:, -1], axis=-1)  # (b h)
        vals = np.broadcast_to(per[:, :, None, None], (b, h, e, n)).copy()
    else:
        vals = np.zeros((b, h, e, n))
    return {"o": bo, "S_last": Bound(vals, "final state: " + bs.source + " (probed with q = 1)")}


def reference(inp, conv):
    from refimpl.attention.delta import delta_rule

    alpha, S0 = _eff(inp, conv)
    n = np.shape(inp["k"])[-1]
    o, S = delta_rule(inp["q"], inp["k"], inp["v"], inp["beta"], decay=alpha, initial_state=S0,
                      key_norm=_norm_name(conv["key_norm"]), query_norm=_norm_name(conv["query_norm"]),
                      scale=delta_scale(conv, n)[0], view="recurrent", return_final_state=True)
    return {"o": o, "S_last": S}


def sample(rng, conv, *, l=None, b=None, h=None, n=None, e=None):
    b, h, n, e = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5), e=(e, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 7, 16, 17])) if l is None else l
    if conv["key_norm"] == "sum":
        k = rng.uniform(0.1, 1.0, size=(b, l, h, n))  # positive features; sum-normalised |k|_2 <= 1
    else:
        k = rng.standard_normal((b, l, h, n))
        if conv["key_norm"] == "none":  # |k| <= 1 so that beta |k|^2 <= 1: a contraction
            k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.0, size=(b, l, h, 1))
    q = rng.uniform(0.1, 1.0, size=(b, l, h, n)) if conv["query_norm"] == "sum" else rng.standard_normal((b, l, h, n))
    inp = {"q": q, "k": k, "v": rng.standard_normal((b, l, h, e)),
           "beta": rng.uniform(0.05, 0.95, size=(b, l, h)), "alpha": None, "S0": None}
    if conv["use_alpha"]:
        inp["alpha"] = rng.uniform(0.5, 1.0, size=(b, l, h))
    if conv["use_state"]:
        inp["S0"] = rng.standard_normal((b, h, e, n))
    return inp


def strategy(conv):
    if conv["key_norm"] != "sum" and conv["query_norm"] != "sum":  # the family's keys are unit-norm, not positive
        try:
            from oracles.strategies.attention import delta_cases

            def fill(c):
                S0 = c.S0
                if conv["use_state"] and S0 is None:  # a claimed feature is always exercised
                    b, l, h, n = c.k.shape
                    S0 = np.random.default_rng(c.seed).standard_normal((b, h, c.v.shape[-1], n))
                return {"q": c.q, "k": c.k, "v": c.v, "beta": c.beta, "alpha": c.decay,
                        "S0": S0 if conv["use_state"] else None}

            return delta_cases(gated=bool(conv["use_alpha"])).map(fill)
        except ImportError:
            pass
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    T = int(conv["chunk"])
    add = case_builder(OP, sample, 59, conv)
    out = add.cases

    add("golden-small", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("edge-L0", "edge", "L = 0: the final state is S0", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    add("edge-chunk-1", "edge", f"L = chunk - 1 = {T - 1}", 5, l=max(T - 1, 0), b=1, h=2, n=3, e=2)
    add("edge-chunk+1", "edge", f"L = chunk + 1 = {T + 1}", 4, l=T + 1, b=1, h=1, n=3, e=2)
    return out


register_op(OpSpec(
    name=OP,
    summary="the delta rule S_t = alpha_t S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t "
            "(gated when alpha is given)",
    inputs=(Arg("q", "b l h n"), Arg("k", "b l h n"), Arg("v", "b l h e"), Arg("beta", "b l h"),
            Arg("alpha", "b l h", "decay in (0, 1] (gated delta rule)", optional=True),
            Arg("S0", "b h e n", "initial state (V x K in canonical arrays)", optional=True)),
    outputs=(Arg("o", "b l h e"), Arg("S_last", "b h e n", optional=True)),
    conventions=(
        Convention("key_norm", "none", "keys normalised first: none, sum (k / sum k), l2 (k / |k|)", NORMS),
        Convention("query_norm", "none", "queries normalised first (before the scale): none, sum, l2", NORMS),
        Convention("state_layout", "vk", "the candidate's state orientation: vk (b h e n) or kv (b h n e)",
                   ("vk", "kv"), layout=True),
        Convention("scale", 1.0, "multiplies the (normalized) q; None = n^-1/2 (FLA's default)"),
        feature_convention("use_alpha", "the gated rule (a decay alpha_t)"),
        feature_convention("use_state", "an initial state S0"),
        Convention("algorithm", "recurrent", "evaluation order for the bound: recurrent or chunked (WY)",
                   ("recurrent", "chunked")),
        Convention("chunk", 64, "chunk length (algorithm='chunked'; the L = chunk - 1, chunk + 1 edge cases)"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"q": "l", "k": "l", "v": "l", "beta": "l", "alpha": "l"}, {"o": "l"},
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),
            argument_paths_probe(alternatives={"scale": (0.37,)},
                                 optional={"use_alpha": ("alpha",), "use_state": ("S0",)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=7, b=1, h=2))),
    domain=op_domain(length=("l", "l"), query_dim=("n", "n", "the query/key dimension n"),
                     value_dim=("e", "e", "the value dimension e (value_dim=query_dim: the candidate needs e = n)")),
    module=__name__,
    notes="oracle: oracles.attention.delta_rule_mpmath; bound: oracles.attention.delta_rule_bound; the canonical "
          "adapter passes S0 and reads S_last as (b h n e) under state_layout='kv'",
))

canonical_with_state(OP)


class _RefimplDeltaAdapter(Adapter):
    """refimpl's ``scale=`` is a number: ``None`` (n^-1/2) is passed as that number."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        kwargs["scale"] = delta_scale(conv, int(dims.get("n", 0)))[0]
        return args, kwargs


register_adapter(_RefimplDeltaAdapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.delta_rule(q, k, v, beta, decay=, initial_state=, key_norm=, query_norm=, scale=, "
        "return_final_state=True) -> (o, S); the views refimpl.attention.delta.reference:recurrent/chunked and the "
        "Numba kernel refimpl.attention.delta.numba:delta_chunked take the same arguments",
    args=(In("q"), In("k"), In("v"), In("beta")),
    kwargs={"decay": In("alpha"), "initial_state": In("S0"),
            "key_norm": Conv(lambda c: _norm_name(c["key_norm"])),
            "query_norm": Conv(lambda c: _norm_name(c["query_norm"])), "return_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1)),
    implies={"state_layout": "vk"},
))


def _fla_scale(c):
    return None if c["scale"] is None else float(c["scale"])


def _fla_qk_l2norm(c):
    """FLA's ``use_qk_l2norm_in_kernel``: True for l2-normalized q and k, not passed for neither."""
    pair = (c["key_norm"], c["query_norm"])
    if pair == ("l2", "l2"):
        return True
    if pair == ("none", "none"):
        return None
    raise ValueError(f"FLA normalizes q and k together (use_qk_l2norm_in_kernel): verify key_norm = query_norm = "
                     f"'l2' or 'none', not key_norm={c['key_norm']!r}, query_norm={c['query_norm']!r}")


_FLA_KW = {"scale": Conv(_fla_scale), "initial_state": In("S0", "b h e n -> b h n e"),
           "output_final_state": Const(True), "use_qk_l2norm_in_kernel": Conv(_fla_qk_l2norm)}

register_adapter(Adapter(
    name="fla.delta_rule",
    op=OP,
    doc="flash-linear-attention's chunk_delta_rule / fused_recurrent_delta_rule(q, k, v, beta, scale=None, "
        "initial_state=None, output_final_state=True, use_qk_l2norm_in_kernel=...): [B, T, H, K] sequence-first, "
        "scale on q (None: K^-1/2), state K x V [B, H, K, V]; use_qk_l2norm_in_kernel passed only when claimed",
    args=(In("q"), In("k"), In("v"), In("beta")),
    kwargs=_FLA_KW,
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "use_alpha": False},
))

_HF = "b l h n -> b h l n"
register_adapter(Adapter(
    name="fla.delta_rule.head_first",
    op=OP,
    doc="the same kernels head-first (FLA before head_first was deprecated; chunk_delta_rule(..., head_first=True)): "
        "q, k [B, H, T, K], v [B, H, T, V], beta [B, H, T], scale=, initial_state [B, H, K, V], "
        "output_final_state=True -> (o [B, H, T, V], final_state)",
    args=(In("q", _HF), In("k", _HF), In("v", "b l h e -> b h l e"), In("beta", "b l h -> b h l")),
    kwargs=_FLA_KW,
    outputs=(Out("o", 0, "b h l e -> b l h e"), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "use_alpha": False},
))

register_adapter(Adapter(
    name="fla.delta_rule.naive",
    op=OP,
    doc="FLA's reference fla/ops/delta_rule/naive.py delta_rule_recurrence(q, k, v, beta, initial_state=None, "
        "output_final_state=True) -> (o, S): head-first [B, H, T, K], q scaled by K^-1/2 inside (no scale "
        "argument), no normalization, state K x V",
    args=(In("q", _HF), In("k", _HF), In("v", "b l h e -> b h l e"), In("beta", "b l h -> b h l")),
    kwargs={"initial_state": In("S0", "b h e n -> b h n e"), "output_final_state": Const(True)},
    outputs=(Out("o", 0, "b h l e -> b l h e"), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "use_alpha": False, "scale": None, "key_norm": "none", "query_norm": "none"},
))


class _GatedAdapter(Adapter):
    """The gated kernels take the decay ``g = log(alpha)`` as a required argument: an absent alpha (the plain rule,
    alpha = 1) is passed as ``g = 0``."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        if inputs.get("alpha") is None and inputs.get("beta") is not None:
            inputs = dict(inputs, alpha=np.ones(np.shape(inputs["beta"]), dtype=np.asarray(inputs["beta"]).dtype))
        return super().build_call(spec, inputs, conv, dims, convert)


register_adapter(_GatedAdapter(
    name="fla.gated_delta_rule",
    op=OP,
    doc="gated delta rule kernels chunk_gated_delta_rule(q, k, v, g, beta, scale=, initial_state=, "
        "output_final_state=True, use_qk_l2norm_in_kernel=...) with the decay passed in log space, g = log(alpha) "
        "(an absent alpha as g = 0); [B, T, H, K], state K x V",
    args=(In("q"), In("k"), In("v"), In("alpha", transform=np.log), In("beta")),
    kwargs=_FLA_KW,
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv"},
))
