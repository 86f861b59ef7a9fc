r"""Op spec ``attention.mega``: one Mega layer (Ma et al. 2022/2023, "Mega: Moving Average Equipped Gated Attention").

Canonical (sequence-first; the paper's symbols; ``W`` matrices multiply from the right, ``X W``)::

    fn(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma,
       W_phi, b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None,
       eta_bwd=None) -> y
    x, y (b l d); alpha, delta, beta, eta (d e); W_z (d n); b_z, kappa_*, mu_* (n); W_v, W_gamma (d p);
    b_v, b_gamma (p); W_phi, W_h (d d); U_h (p d); b_phi, b_h (d); rel_bias (2m - 1)

    X' = EMA(X) [+ rev(EMA_bwd(rev X))];  Z = SiLU(X' W_z + b_z);  Q = kappa_q Z + mu_q;  K = kappa_k Z + mu_k
    V = SiLU(X W_v + b_v);  O = f(scale Q K^T + b_rel) V within chunks;  gamma = SiLU(X' W_gamma + b_gamma)
    phi = sigmoid(X' W_phi + b_phi);  H = SiLU(X' W_h + (gamma O) U_h + b_h);  y = phi H + (1 - phi) X

Conventions: ``causal`` (keys ``j <= i``), ``chunk`` (0: one chunk, the whole sequence; ``c >= 1``: query ``i``
sees keys ``j`` with ``j // c == i // c``, the last chunk short), ``attention`` (``softmax`` | ``laplace`` |
``relu2``), ``scale`` (None: the paper's -- ``n^{-1/2}`` for softmax, ``1/len_i`` Mega's length normalization
for laplace/relu2; a number multiplies ``Q . K``), ``use_rel_bias`` (Mega's simple relative positional bias
``b_rel[i, j] = rel_bias[m - 1 + j - i]``), ``bidirectional`` (the backward EMA of Mega's encoder; refused with
``causal``).  Mega's own code also adds a residual and a SiLU inside its EMA module (``silu(EMA(x) + omega x)``)
and a normalization after the layer: neither is the paper's equation, neither is in this op.

Oracle: :func:`oracles.mega.mega_layer_mpmath` (mpmath, small cases) or :func:`oracles.mega.mega_layer_dense`
(vectorized float64), the EMA by its closed form and the keep sets as Python sets.  Bound:
:func:`oracles.mega.mega_layer_bound` (first-order, stage by stage; plus the float64 oracle's share).
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.mega import mega_layer_bound, mega_layer_dense, mega_layer_mpmath
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, feature_convention,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "attention.mega"

PARAMS = ("alpha", "delta", "beta", "eta", "W_z", "b_z", "kappa_q", "mu_q", "kappa_k", "mu_k", "W_v", "b_v",
          "W_gamma", "b_gamma", "W_phi", "b_phi", "W_h", "U_h", "b_h")
BWD = ("alpha_bwd", "delta_bwd", "beta_bwd", "eta_bwd")
_SHAPES = {"alpha": "d e", "delta": "d e", "beta": "d e", "eta": "d e", "W_z": "d n", "b_z": "n", "kappa_q": "n",
           "mu_q": "n", "kappa_k": "n", "mu_k": "n", "W_v": "d p", "b_v": "p", "W_gamma": "d p", "b_gamma": "p",
           "W_phi": "d d", "b_phi": "d", "W_h": "d d", "U_h": "p d", "b_h": "d"}
#: the mpmath oracle for cases up to this many scalar operations (a few ms), the vectorized float64 dense oracle
#: beyond (the diagnosis of a failing case calls the oracle hundreds of times)
MPMATH_WORK = 400


def _claimed(inp, conv):
    x = dict(inp)
    if not conv["use_rel_bias"]:
        x["rel_bias"] = None
    if not conv["bidirectional"]:
        for k in BWD:
            x[k] = None
    return x


def _options(conv):
    return dict(chunk=conv["chunk"] or None, causal=bool(conv["causal"]), attention=conv["attention"],
                scale=conv["scale"])


def _params(inp):
    return {k: inp.get(k) for k in PARAMS + ("rel_bias",) + BWD}


def _work(inp):
    b, L, d = np.shape(inp["x"])
    e, n, p = np.shape(inp["alpha"])[1], np.shape(inp["W_z"])[1], np.shape(inp["W_v"])[1]
    return b * (L * L * (d * e + n + p) + L * d * (n + 2 * p + 2 * d))


def oracle(inp, conv):
    if conv["bidirectional"] and conv["causal"]:
        raise ValueError("bidirectional: the backward EMA reads later positions; refused with causal=True")
    x = _claimed(inp, conv)
    fn = mega_layer_mpmath if _work(x) <= MPMATH_WORK else mega_layer_dense
    return {"y": fn(x["x"], _params(x), **_options(conv))}


def bounds(inp, out, conv, dtype):
    x = _claimed(inp, conv)
    od = None if _work(x) <= MPMATH_WORK else np.float64
    return {"y": mega_layer_bound(x["x"], _params(x), dtype=dtype, oracle_dtype=od, **_options(conv))}


def reference(inp, conv):
    from refimpl.attention.mega import mega_layer

    x = _claimed(inp, conv)
    return {"y": mega_layer(x["x"], **_params(x), **_options(conv))}


def sample(rng, conv, *, l=None, b=None, d=None, e=None, n=None, p=None):
    b, d, e, n, p = draw_sizes(rng, b=(b, 1, 3), d=(d, 1, 4), e=(e, 1, 3), n=(n, 1, 4), p=(p, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 5, 8])) if l is None else l
    inp = {
        "x": rng.standard_normal((b, l, d)),
        "alpha": rng.uniform(0.05, 0.95, (d, e)), "delta": rng.uniform(0.05, 0.95, (d, e)),
        "beta": rng.standard_normal((d, e)), "eta": rng.standard_normal((d, e)) / np.sqrt(e),
        "W_z": rng.standard_normal((d, n)) / np.sqrt(d), "b_z": 0.2 * rng.standard_normal(n),
        "kappa_q": 1.0 + 0.5 * rng.standard_normal(n), "mu_q": 0.5 * rng.standard_normal(n),
        "kappa_k": 1.0 + 0.5 * rng.standard_normal(n), "mu_k": 0.5 * rng.standard_normal(n),
        "W_v": rng.standard_normal((d, p)) / np.sqrt(d), "b_v": 0.2 * rng.standard_normal(p),
        "W_gamma": rng.standard_normal((d, p)) / np.sqrt(d), "b_gamma": 0.2 * rng.standard_normal(p),
        "W_phi": rng.standard_normal((d, d)) / np.sqrt(d), "b_phi": 0.2 * rng.standard_normal(d),
        "W_h": rng.standard_normal((d, d)) / np.sqrt(d), "U_h": rng.standard_normal((p, d)) / np.sqrt(p),
        "b_h": 0.2 * rng.standard_normal(d),
        # Mega's bias spans the attention span exactly: m = min(chunk, L) (its code sizes it by the chunk)
        "rel_bias": rng.standard_normal(2 * max(min(conv.get("chunk") or l, l), 1) - 1),
    }
    for k in BWD:
        inp[k] = None
    if conv["bidirectional"]:
        inp["alpha_bwd"] = rng.uniform(0.05, 0.95, (d, e))
        inp["delta_bwd"] = rng.uniform(0.05, 0.95, (d, e))
        inp["beta_bwd"] = rng.standard_normal((d, e))
        inp["eta_bwd"] = rng.standard_normal((d, e)) / np.sqrt(e)
    if not conv["use_rel_bias"]:
        inp["rel_bias"] = None
    return inp


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 83, conv)
    c = conv["chunk"]
    add("golden-small", "golden", "b=1, l=5, d=3, e=2, n=3, p=2", 1, l=5, b=1, d=3, e=2, n=3, p=2)
    add("edge-L0", "edge", "L = 0", 2, l=0)
    add("edge-L1", "edge", "L = 1: one key, softmax weight 1", 3, l=1)
    add("edge-odd", "edge", "L = 7, odd", 4, l=7, b=1)
    if c:
        add("edge-chunk-minus-1", "edge", "L = chunk - 1: one short chunk", 5, l=max(c - 1, 0), b=1)
        add("edge-chunk-plus-1", "edge", "L = chunk + 1: a last chunk of one", 6, l=c + 1, b=1)
        add("edge-chunks-2.5", "edge", "L = 2.5 chunks", 7, l=(5 * c) // 2, b=1)
    add("edge-long", "edge", "L = 24 (the float64 dense oracle)", 8, l=24, b=1, d=3, e=2, n=3, p=3)
    return add.cases


register_op(OpSpec(
    name=OP,
    summary="one Mega layer: damped EMA, shared-Z single-head gated attention within chunks, reset and update gates",
    inputs=(Arg("x", "b l d"), *(Arg(k, _SHAPES[k]) for k in PARAMS),
            Arg("rel_bias", "r", "Mega's simple relative positional bias, b_rel[i, j] = rel_bias[m - 1 + j - i]",
                optional=True),
            *(Arg(k, "d e", "backward EMA (bidirectional)", optional=True) for k in BWD)),
    outputs=(Arg("y", "b l d"),),
    conventions=(
        Convention("causal", False, "query i sees keys j <= i only", (False, True)),
        Convention("chunk", 0, "0: one chunk (the whole sequence); c >= 1: attention within chunks of c "
                   "(j // c == i // c; the last chunk short); the EMA always over the whole sequence"),
        Convention("attention", "softmax", "the attention function f: softmax, laplace "
                   "(0.5 (1 + erf((x - sqrt(1/2)) / (sigma sqrt 2))), sigma = sqrt(1/(4 pi))), relu2 (relu(x)^2)",
                   ("softmax", "laplace", "relu2")),
        Convention("scale", None, "multiplies Q.K; None: n^{-1/2} (softmax), 1/len_i (laplace, relu2: Mega's "
                   "length normalization by the number of keys query i sees)"),
        feature_convention("use_rel_bias", "Mega's simple relative positional bias rel_bias (2m - 1)"),
        Convention("bidirectional", False, "X' = EMA(X) + rev(EMA_bwd(rev X)) (Mega's encoder); refused with causal",
                   (False, True)),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x": "l"}, {"y": "l"}, applies=lambda conv: bool(conv["causal"]),
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),
            argument_paths_probe(alternatives={"chunk": (3,), "scale": (0.7,)},
                                 optional={"use_rel_bias": ("rel_bias",)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=7, b=1))),
    domain=op_domain(length=("l", "l"), key_dim=("n", "n", "the shared dimension n of Z, Q, K"),
                     value_dim=("p", "p", "the value dimension p")),
    module=__name__,
    notes="oracle: oracles.mega (mpmath / fsum, the EMA by its closed form); bound: oracles.mega.mega_layer_bound",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.mega.mega_layer(x, alpha, ..., b_h, rel_bias, alpha_bwd, ..., eta_bwd, chunk=None|c, "
        "causal=, attention=, scale=) -> y (the canonical inputs in order; the conventions as keywords)",
    kwargs={"chunk": Conv(lambda c: c["chunk"] or None), "causal": Conv(lambda c: bool(c["causal"])),
            "attention": Conv(lambda c: c["attention"]), "scale": Conv(lambda c: c["scale"])},
))

register_adapter(Adapter(
    name="mega.time_major",
    op=OP,
    doc="Mega's code's spelling (fairseq / the Hugging Face port), for a wrapper of its MovingAverageGatedAttention "
        "that exposes the paper's arrays: x and y time-major (L, B, D); chunk_size=-1 for one chunk, else c; "
        "attention_activation='softmax'|'laplace'|'relu2'; causal as a bool; scale None for the paper's (the "
        "wrapper must set the EMA's omega to 0 and drop the norm: they are not the paper's equations)",
    args=(In("x", "b l d -> l b d"), *(In(k) for k in PARAMS), In("rel_bias"), *(In(k) for k in BWD)),
    kwargs={"chunk_size": Conv(lambda c: int(c["chunk"]) if c["chunk"] else -1),
            "causal": Conv(lambda c: bool(c["causal"])),
            "attention_activation": Conv(lambda c: c["attention"]), "scale": Conv(lambda c: c["scale"])},
    outputs=(Out("y", None, "l b d -> b l d"),),
))
