r"""Op spec ``attention.lsh``: Reformer LSH attention (Kitaev et al. 2020) with the buckets as an input.

Canonical (sequence-first)::

    fn(qk, v, buckets) -> o
    qk (b l h n), v (b l h p), buckets (b l h z) integers >= 0 (z hash rounds), o (b l h p)

Shared QK: queries ``qk``, keys ``qk_j / ||qk_j||``; scores ``scale q_i . k_j``.  Round ``r``: positions sorted by
``(bucket, position)``, chunks of ``chunk`` sorted positions, each attending to itself and the previous chunk, only
to the query's bucket, ``j <= i`` when causal; the union over the rounds counts each key once (de-duplication by
counting, ``-log N_ij``, with the rounds combined by their log-sum-exp, is exactly that).

Conventions: ``chunk`` (the chunk length), ``n_rounds`` (the rounds the sampler draws), ``causal``, ``self_rule``
(``"exclude"``: ``i`` only when nothing else is in its union -- the paper's intent, refimpl; ``"penalty"``: ``i`` kept
with its score lowered by ``1e5`` -- the paper's ``m_ii = 10^5``, trax/Hugging Face), ``wrap`` (``False``: the
paper's ``P~_i``, chunk 0 has no previous chunk; ``True``: trax's roll of the chunk axis, chunk 0 also attends to
the last chunk), ``scale`` (``None``: ``n^{-1/2}``, the paper; trax/Hugging Face use 1).

Oracle: :func:`oracles.lsh.lsh_mpmath` (allowed keys as Python sets from the definition, dense softmax in mpmath)
on small cases, :func:`oracles.lsh.lsh_fsum` on larger ones.  Bound: :func:`oracles.lsh.lsh_attention_bound` with
``K = r l`` keys per softmax (covers the sorted chunks, ``2c <= r l`` unless ``l < 2c / r``, and the materialized
view's one softmax over every round's entries -- the larger of the two is taken).
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from oracles.lsh import lsh_attention_bound, lsh_fsum, lsh_mpmath
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.lsh"
MPMATH_WORK = 6000  # b h l l (n + p) up to which the mpmath oracle is used (as attention.softmax)


def _scale(conv, n):
    return (1.0 / math.sqrt(n) if n > 0 else 1.0) if conv["scale"] is None else float(conv["scale"])


def _parts(inp, conv):
    qk = np.asarray(inp["qk"], dtype=np.float64)
    v = np.asarray(inp["v"], dtype=np.float64)
    bk = np.asarray(inp["buckets"]).astype(np.int64)
    return qk, v, bk, _scale(conv, qk.shape[3])


def _exact(qk, v) -> bool:
    b, l, h, n = qk.shape
    return b * h * l * l * (n + v.shape[3]) <= MPMATH_WORK


def oracle(inp, conv):
    qk, v, bk, sc = _parts(inp, conv)
    f = lsh_mpmath if _exact(qk, v) else lsh_fsum
    return {"o": f(qk, v, bk, int(conv["chunk"]), sc, causal=bool(conv["causal"]), wrap=bool(conv["wrap"]),
                   self_rule=conv["self_rule"])}


def bounds(inp, out, conv, dtype):
    qk, v, bk, sc = _parts(inp, conv)
    l, r = qk.shape[1], bk.shape[3]
    K = max(2 * int(conv["chunk"]), r * l)
    return {"o": lsh_attention_bound(qk, v, bk, int(conv["chunk"]), sc, dtype, causal=bool(conv["causal"]),
                                     wrap=bool(conv["wrap"]), keys_per_softmax=K,
                                     oracle_dtype=None if _exact(qk, v) else np.float64)}


def reference(inp, conv):
    from refimpl.attention.lsh import lsh_attention

    if conv["self_rule"] != "exclude":
        raise ValueError("self_rule: refimpl implements 'exclude' only")
    return {"o": lsh_attention(inp["qk"], inp["v"], buckets=np.asarray(inp["buckets"]).astype(np.int64),
                               chunk=int(conv["chunk"]), causal=bool(conv["causal"]), wrap=bool(conv["wrap"]),
                               scale=conv["scale"])}


def sample(rng, conv, *, l=None, b=None, h=None, n=None, p=None, n_buckets=None):
    b, h, n, p = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5), p=(p, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 5, 7, 9, 12])) if l is None else l
    nb = int(rng.integers(1, 5)) if n_buckets is None else n_buckets
    r = int(conv["n_rounds"])
    return {"qk": rng.standard_normal((b, l, h, n)), "v": rng.standard_normal((b, l, h, p)),
            "buckets": rng.integers(0, nb, (b, l, h, r)).astype(np.int64)}


def strategy(conv):
    return seeded_strategy(sample, conv)


def _prepare(inp, *, one_bucket=False, distinct=False, zero_key=False):
    inp = dict(inp)
    bk = np.asarray(inp["buckets"]).copy()
    if one_bucket:
        bk[...] = 0
    if distinct:  # every position alone in its bucket: the self rule gives o_i = v_i
        bk[...] = np.arange(bk.shape[1])[None, :, None, None]
    inp["buckets"] = bk
    if zero_key and inp["qk"].shape[1] > 1:
        qk = np.array(inp["qk"], copy=True)
        qk[:, 1] = 0.0
        inp["qk"] = qk
    return inp


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 71, conv, prepare=_prepare)
    out = add.cases
    add("golden-small", "golden", "b=1, l=7, h=2, n=3, p=2, 3 buckets", 1, l=7, b=1, h=2, n=3, p=2, n_buckets=3)
    add("edge-L0", "edge", "L = 0", 2, l=0)
    add("edge-L1", "edge", "L = 1: nothing but self, o = v", 3, l=1)
    add("edge-odd", "edge", "L = 11, not a multiple of the chunk (last chunk short)", 4, l=11, b=1, h=1, n=3, p=2)
    add("edge-one-bucket", "edge", "every position in bucket 0: chunks alone decide", 5, l=9, b=1, h=1, one_bucket=True)
    add("edge-distinct", "edge", "every position alone in its bucket: o_i = v_i by the self rule", 6, l=6, b=1,
        distinct=True)
    add("edge-zero-key", "edge", "a zero qk vector (its normalized key is 0)", 7, l=6, b=1, h=1, zero_key=True)
    add("edge-long", "edge", "L = 40, 4 buckets (float64 fsum oracle)", 8, l=40, b=1, h=2, n=4, p=3, n_buckets=4)
    return out


register_op(OpSpec(
    name=OP,
    summary="Reformer LSH attention (shared QK, normalized keys) given the hash buckets: sorted chunks attending to "
            "themselves and the previous chunk within a bucket, the self rule, rounds de-duplicated by counting",
    inputs=(Arg("qk", "b l h n", "the shared query/key projection"), Arg("v", "b l h p"),
            Arg("buckets", "b l h z", "the bucket of each position in each of the z hash rounds (integers >= 0)",
                kind="int")),
    outputs=(Arg("o", "b l h p"),),
    conventions=(
        Convention("chunk", 2, "the chunk length c: sorted positions per chunk (the last chunk may be short)",
                   (1, 2, 3, 4, 8)),
        Convention("n_rounds", 2, "hash rounds z (the last axis of buckets)", (1, 2, 3, 4)),
        Convention("causal", False, "queries attend to keys j <= i only", (False, True)),
        Convention("self_rule", "exclude", "'exclude': i attends to itself only when nothing else is in its union "
                   "(refimpl); 'penalty': self kept with its score lowered by 1e5 (the paper's m_ii, trax)",
                   ("exclude", "penalty")),
        Convention("wrap", False, "False: chunk 0 has no previous chunk (the paper); True: it attends to the last "
                   "chunk too (trax/Hugging Face roll the chunk axis)", (False, True)),
        Convention("scale", None, "multiplies q . k; None = n^-1/2 (the paper); trax/Hugging Face: 1"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"qk": "l", "v": "l"}, {"o": "l"}, applies=lambda conv: bool(conv["causal"]),
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),
            argument_paths_probe(alternatives={"scale": (0.7,)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=7, b=1, h=2))),
    lowp=False,
    domain=op_domain(length=("l", "l"), key_dim=("n", "n"), value_dim=("p", "p")),
    module=__name__,
    notes="oracle: oracles.lsh (allowed keys as Python sets; mpmath small / fsum large); bound: "
          "oracles.lsh.lsh_attention_bound with K = max(2c, r l) keys per softmax",
))


register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.lsh.lsh_attention(qk, v, buckets=, chunk=, causal=, wrap=, scale=) -> o "
        "(self_rule='exclude')",
    args=(In("qk"), In("v")),
    kwargs={"buckets": In("buckets"), "chunk": Conv(lambda c: int(c["chunk"])),
            "causal": Conv(lambda c: bool(c["causal"])), "wrap": Conv(lambda c: bool(c["wrap"])),
            "scale": Conv(lambda c: c["scale"])},
    outputs=(Out("o", None),),
    implies={"self_rule": "exclude"},
))

# trax / Hugging Face spelling: head-first activations, buckets (b h z l), chunk_len / n_hashes / causal,
# keys normalized to length sqrt(n) and scores divided by sqrt(n) (scale 1), self penalized by -1e5, a roll of the
# chunk axis (wrap)
register_adapter(Adapter(
    name="trax",
    op=OP,
    doc="fn(qk (b h l n), v (b h l p), buckets=(b h z l), chunk_len=, n_hashes=, causal=) -> o (b h l p): trax's "
        "LSHSelfAttention spelling (scale 1, self penalty -1e5, wrap-around chunks)",
    args=(In("qk", "b l h n -> b h l n"), In("v", "b l h p -> b h l p")),
    kwargs={"buckets": In("buckets", "b l h z -> b h z l"), "chunk_len": Conv(lambda c: int(c["chunk"])),
            "n_hashes": Conv(lambda c: int(c["n_rounds"])), "causal": Conv(lambda c: bool(c["causal"]))},
    outputs=(Out("o", None, "b h l p -> b l h p"),),
    implies={"self_rule": "penalty", "wrap": True, "scale": 1.0},
))
