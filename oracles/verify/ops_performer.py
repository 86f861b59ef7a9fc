r"""Op spec ``attention.performer``: Performer (FAVOR) attention end to end, the projection ``W`` given.

Canonical (sequence-first)::

    fn(q, k, v, W) -> o        q (b l h d), k (b s h d), v (b s h e), W (m d), o (b l h e)

    r = sqrt(scale)  (scale None: d^-1/2, so r = d^-1/4 on queries and keys, exp(q'.k') = exp(q.k / sqrt(d)))
    phi_q = features(r q; W, query stabilizer),  phi_k = features(r k; W, key stabilizer)  (features.performer)
    o = linear attention(phi_q, phi_k, v; causal, normalize, eps, eps_mode)                (attention.linear)

With ``W`` an input the map is deterministic: the op checks the kernel's arithmetic, not the estimator's
statistics (those are the Performer property tests').  Conventions: ``kind`` (positive, trig, hyperbolic),
``causal`` (``s = l``), ``scale``, ``feature_eps`` (added to the exponential inside the features, before the
``1/sqrt(m)``: performer-pytorch's ``eps=1e-4``), ``query_stabilizer`` (none, ``row_max`` of the exponent,
``row_max_wx`` of ``W x``: performer-pytorch's queries), ``key_stabilizer`` (none, ``row_max``, ``global_max``
over every key passed, ``head_max_wx`` over every key and feature of a batch entry and head:
performer-pytorch's keys), ``normalize``, ``eps``, ``eps_mode`` (as ``attention.linear``; performer-pytorch's
causal attention adds ``1e-6`` to the running key sum, ``key_sum``).  With ``feature_eps = 0`` and
``normalize`` the offsets cancel exactly; with ``feature_eps > 0`` they do not, and a key offset taken over
several positions makes a causal output depend on future keys -- the causality probe measures it.

Oracle: the features oracle of ``features.performer`` (mpmath definitions times ``exp(-offset)``, offsets in
float64) composed with :func:`oracles.attention.linear_attention_mpmath`.  Bound (first order): the linear
stage's :func:`oracles.attention.linear_attention_bound` on the exact features, plus the features' own
errors propagated -- each feature ``phi`` within ``B_phi`` (:func:`oracles.verify.ops_features.
scaled_feature_bound`, plus the oracle's rounding of the exact features to float64, ``u |phi|``) moves
``num_i`` by ``sum_j sum_c (B_q,ic |phi_k,jc| + |phi_q,ic| B_k,jc) |v_j|`` and ``den_i`` by the same sum without
``|v_j|``, hence ``o_i`` by ``(dnum_i + |o_i| dden_i) / |den_i|`` (``dnum_i`` unnormalized).
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from oracles.attention import linear_attention_bound, linear_attention_mpmath
from oracles.tolerance import Bound, unit_roundoff
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.ops_features import oracle as features_oracle
from oracles.verify.ops_features import scaled_feature_bound
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.performer"
KINDS = ("positive", "trig", "hyperbolic")
QUERY_STABILIZERS = ("none", "row_max", "row_max_wx")
KEY_STABILIZERS = ("none", "row_max", "global_max", "head_max_wx")


def _r(conv, d: int) -> float:
    scale = (1.0 / math.sqrt(d) if d else 1.0) if conv["scale"] is None else float(conv["scale"])
    if not scale > 0:
        raise ValueError(f"scale: Performer splits the scale as sqrt(scale) on q and k; expected > 0, got {scale!r}")
    return math.sqrt(scale)


def _fconv(conv, stabilizer):
    return {"kind": conv["kind"], "data_scale": "none", "eps": float(conv["feature_eps"]), "stabilizer": stabilizer}


def _features(inp, conv):
    q, k = (np.asarray(inp[n], dtype=np.float64) for n in ("q", "k"))
    W = np.asarray(inp["W"], dtype=np.float64)
    r = _r(conv, q.shape[-1])
    qs, ks = q * r, k * r
    fq, fk = _fconv(conv, conv["query_stabilizer"]), _fconv(conv, conv["key_stabilizer"])
    pq = features_oracle({"x": qs, "W": W}, fq)["phi"]
    pk = features_oracle({"x": ks, "W": W}, fk)["phi"]
    return qs, ks, W, fq, fk, pq, pk


def _lin_kw(conv):
    return dict(causal=bool(conv["causal"]), normalize=bool(conv["normalize"]), eps=float(conv["eps"]),
                eps_mode=conv["eps_mode"])


def oracle(inp, conv):
    _, _, _, _, _, pq, pk = _features(inp, conv)
    return {"o": linear_attention_mpmath(pq, pk, inp["v"], **_lin_kw(conv))}


def feature_error_propagation(pq, pk, v, o, Bq, Bk, *, causal, normalize, eps, eps_mode) -> np.ndarray:
    """First-order output change for features within ``Bq``, ``Bk`` (module docstring), ``(b l h e)``."""
    pq, pk, v, o = (np.asarray(a, dtype=np.float64) for a in (pq, pk, v, o))
    A = np.einsum("bihn,bjhn->bhij", Bq, np.abs(pk)) + np.einsum("bihn,bjhn->bhij", np.abs(pq), Bk)
    As = np.einsum("bihn,bjhn->bhij", pq, pk)
    if causal:
        tri = np.tril(np.ones(As.shape[-2:]))
        A, As = A * tri, As * tri
    dN = np.einsum("bhij,bjhe->bihe", A, np.abs(v))
    if not normalize:
        return dN
    dD = np.einsum("bhij->bih", A)
    den = np.einsum("bhij->bih", As)
    if eps_mode == "key_sum":
        den = den + eps * np.sum(pq, axis=-1)
        dD = dD + abs(eps) * np.sum(Bq, axis=-1)
    elif eps_mode == "clamp":
        den = np.maximum(den, eps)
    else:
        den = den + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        return (dN + np.abs(o) * dD[..., None]) / np.abs(den)[..., None]


def bounds(inp, out, conv, dtype):
    qs, ks, W, fq, fk, pq, pk = _features(inp, conv)
    u64 = unit_roundoff(np.float64)
    Bq = np.asarray(scaled_feature_bound(qs, W, fq, pq, dtype, scaled=True).values) + u64 * np.abs(pq)
    Bk = np.asarray(scaled_feature_bound(ks, W, fk, pk, dtype, scaled=True).values) + u64 * np.abs(pk)
    kw = _lin_kw(conv)
    lin = linear_attention_bound(pq, pk, inp["v"], out["o"], dtype=dtype, oracle_dtype=None, **kw)
    prop = feature_error_propagation(pq, pk, inp["v"], out["o"], Bq, Bk, **kw)
    return {"o": lin + Bound(prop, "the features' errors (features.performer bound + their float64 rounding) "
                                   "propagated through the linear stage (first order)")}


def reference(inp, conv):
    from refimpl.attention.linear import performer_attention

    return {"o": performer_attention(inp["q"], inp["k"], inp["v"], inp["W"], kind=conv["kind"],
                                     causal=bool(conv["causal"]), normalize=bool(conv["normalize"]),
                                     eps=float(conv["eps"]), scale=conv["scale"], stabilizer=_refimpl_stabilizer(conv))}


def sample(rng, conv, *, l=None, s=None, b=None, h=None, d=None, e=None, m=None):
    b, h, d, e, m = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), d=(d, 1, 5), e=(e, 1, 4), m=(m, 1, 9))
    l = int(rng.choice([1, 2, 3, 5, 8])) if l is None else l
    if conv["causal"]:
        s = l
    elif s is None:
        s = l if rng.random() < 0.6 else int(rng.choice([1, 2, 4, 7]))
    return {"q": 0.7 * rng.standard_normal((b, l, h, d)), "k": 0.7 * rng.standard_normal((b, s, h, d)),
            "v": rng.standard_normal((b, s, h, e)), "W": rng.standard_normal((m, d))}


def _late_large_key(inp):
    """The causality probe's inputs: the last key three times larger, so that a max over every key (an offset
    taken over all positions) sits among the later positions the probe changes."""
    inp = dict(inp)
    k = np.array(inp["k"], dtype=np.float64)
    if k.shape[1]:
        k[:, -1] *= 3.0
    inp["k"] = k
    return inp


def strategy(conv):
    return seeded_strategy(sample, conv)


def _scaled(inp, scale=None):
    """A case with ``q`` and ``k`` scaled (large scores)."""
    if scale is not None:
        inp["q"], inp["k"] = inp["q"] * scale, inp["k"] * scale
    return inp


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 79, conv, prepare=_scaled)
    out = add.cases

    add("golden-small", "golden", "b=1, l=4, h=2, d=3, e=2, m=6", 1, l=4, b=1, h=2, d=3, e=2, m=6)
    add("edge-L1", "edge", "a single query and key", 2, l=1)
    if not conv["causal"]:
        add("edge-lq-ne-lk", "edge", "l = 3 queries, s = 6 keys", 3, l=3, s=6)
    add("edge-large-x", "edge", "|x| ~ 3: large exponents (the stabilizers matter)", 4, scale=4.0, l=6, d=4, m=8)
    add("edge-one-feature", "edge", "m = 1 random feature", 5, m=1, l=5)
    return out


register_op(OpSpec(
    name=OP,
    summary="Performer attention: random-feature maps of scaled q and k with a given projection W, then linear "
            "attention",
    inputs=(Arg("q", "b l h d"), Arg("k", "b s h d"), Arg("v", "b s h e"), Arg("W", "m d", "projection rows w_i")),
    outputs=(Arg("o", "b l h e"),),
    conventions=(
        Convention("kind", "positive", "the random features (features.performer)", KINDS),
        Convention("causal", False, "o_t uses keys j <= t (s = l)", (False, True)),
        Convention("scale", None, "q.k scale, applied as sqrt(scale) on q and on k; None = d^-1/2"),
        Convention("feature_eps", 0.0, "added to each exponential before the 1/sqrt(m) (performer-pytorch: 1e-4)"),
        Convention("query_stabilizer", "none", "offset subtracted in the query exponents: none, row_max (of the "
                   "exponent), row_max_wx (of W x, performer-pytorch)", QUERY_STABILIZERS),
        Convention("key_stabilizer", "none", "offset in the key exponents: none, row_max, global_max (every key), "
                   "head_max_wx (every key and feature of a head, performer-pytorch)", KEY_STABILIZERS),
        Convention("normalize", True, "divide by the kernel sum (softmax-like) or not", (True, False)),
        Convention("eps", 0.0, "epsilon of the denominator (see eps_mode)"),
        Convention("eps_mode", "add", "'add', 'clamp' or 'key_sum' as in attention.linear", ("add", "clamp", "key_sum")),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"q": "l", "k": "s", "v": "s"}, {"o": "l"}, applies=lambda c: bool(c["causal"]),
                            why="a key stabilizer taken over several positions with feature_eps > 0 (the offsets no "
                                "longer cancel) couples every position",
                            sampler=lambda rng, conv: _late_large_key(sample(rng, conv, l=8))),
            argument_paths_probe(alternatives={"scale": (0.37,), "eps": (0.25,), "feature_eps": (1e-3,)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=4, b=1))),
    domain=op_domain(length=(("l", "l"), ("s", "s")), query_dim=("d", "d"), value_dim=("e", "e"),
                     num_features=("m", "m")),
    module=__name__,
    notes="oracle: features.performer's oracle composed with oracles.attention.linear_attention_mpmath; bound: "
          "linear_attention_bound + the features' errors propagated",
))


def _refimpl_stabilizer(c):
    """refimpl's one ``stabilizer=``: none, query_max (row_max on queries), key_global_max (global_max on keys)."""
    pair = (c["query_stabilizer"], c["key_stabilizer"])
    table = {("none", "none"): "none", ("row_max", "none"): "query_max", ("none", "global_max"): "key_global_max"}
    if pair not in table:
        raise ValueError(f"refimpl's performer_attention has the stabilizers {sorted(table.values())}; it cannot "
                         f"express query_stabilizer={pair[0]!r} with key_stabilizer={pair[1]!r}")
    return table[pair]


register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.linear.performer_attention(q, k, v, W, kind=, causal=, normalize=, eps=, scale=, "
        "stabilizer=): stabilizer 'none', 'query_max' (row_max on queries) or 'key_global_max' (global_max on keys); "
        "no feature eps",
    args=(In("q"), In("k"), In("v"), In("W")),
    kwargs={"kind": Conv(lambda c: c["kind"]), "causal": Conv(lambda c: bool(c["causal"])),
            "normalize": Conv(lambda c: bool(c["normalize"])), "eps": Conv(lambda c: float(c["eps"])),
            "scale": Conv(lambda c: c["scale"]), "stabilizer": Conv(_refimpl_stabilizer)},
    outputs=(Out("o", None),),
    implies={"feature_eps": 0.0, "eps_mode": "add"},
))

_PP = {"kind": "positive", "scale": None, "feature_eps": 1e-4, "query_stabilizer": "row_max_wx",
       "key_stabilizer": "head_max_wx", "normalize": True}
_HF = dict(args=(In("q", "b l h d -> b h l d"), In("k", "b s h d -> b h s d"), In("v", "b s h e -> b h s e"), In("W")),
           outputs=(Out("o", None, "b h l e -> b l h e"),))

register_adapter(Adapter(
    name="performer_pytorch.fast_attention",
    op=OP,
    doc="performer-pytorch's FastAttention(dim_heads=d, nb_features=m, causal=False) forward(q, k, v) with its "
        "projection_matrix set to W: the adapted callable is fn(q, k, v, W), head-first (b h n d); softmax_kernel "
        "features (x d^-1/4, eps 1e-4 inside, queries minus the row max of W x, keys minus the head max of W x), "
        "then linear_attention (no eps)",
    implies={**_PP, "causal": False, "eps": 0.0},
    **_HF,
))

register_adapter(Adapter(
    name="performer_pytorch.fast_attention.causal",
    op=OP,
    doc="the same with FastAttention(..., causal=True): causal_linear_attention_noncuda on CPU (eps 1e-6 on the "
        "running key sum)",
    implies={**_PP, "causal": True, "eps": 1e-6, "eps_mode": "key_sum"},
    **_HF,
))
