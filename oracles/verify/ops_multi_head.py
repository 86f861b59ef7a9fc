r"""Op spec ``attention.multi_head``: multi-head attention with its projections W_Q, W_K, W_V, W_O.

Canonical (sequence-first)::

    fn(x_q, x_kv, W_Q, W_K, W_V, W_O) -> out
    x_q (b l d), x_kv (b s d), W_Q, W_K (h d n), W_V (h d p), W_O (hp dout) with hp = h p, out (b l dout)

    q^(x)_i = x_q_i W_Q[x],  k^(x)_j = x_kv_j W_K[x],  v^(x)_j = x_kv_j W_V[x]        (head x)
    Z^(x)_i = sum_j softmax_j(scale q^(x)_i . k^(x)_j) v^(x)_j                          (kept keys)
    out_i = concat_x(Z^(x)_i) W_O      (head-major: column x p + c of the concatenation is head x, entry c)

Conventions: ``scale`` (``None`` = ``n^{-1/2}``, the per-head query/key width), ``causal`` (None,
``top_left``, ``bottom_right`` as in ``attention.softmax``), ``proj_shape`` (``any``; ``square``:
``n = p = d / h`` and ``dout = d``, the shapes of ``torch.nn.MultiheadAttention``).

Oracle: :func:`oracles.attention.multi_head_mpmath` (projections, softmax and output projection in mpmath).
Bound (first order, derived): the projections are dot products of length ``d``: ``|dq| <= gamma_d |x_q| |W_Q|``
(likewise ``k``, ``v``).  A score error ``ds_ij`` moves the softmax output by at most
``2 max_j |ds_ij| sum_j p_ij |v_j|`` (``dp_ij = p_ij (ds_ij - sum_l p_il ds_il)``); the projection errors give
``|ds_ij| <= |scale| gamma_d (|x_q||W_Q| . |k_j| + |q_i| . |x_kv||W_K|)`` and add ``sum_j p_ij gamma_d
|x_kv||W_V|`` through ``v``; the attention itself is within :func:`oracles.attention.softmax_attention_bound`
of the exact attention of the computed ``q, k, v``; the output projection, a dot product of length ``h p``,
adds ``gamma_hp |Z| |W_O|`` and carries the attention error as ``|dZ| |W_O|``.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.attention import multi_head_mpmath, softmax_attention_bound
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.layout import rearrange
from oracles.verify.ops_attention import argument_paths_probe, window_keep
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.multi_head"


def _parts(inp, conv):
    xq, xkv, WQ, WK, WV, WO = (np.asarray(inp[k], dtype=np.float64) for k in ("x_q", "x_kv", "W_Q", "W_K", "W_V",
                                                                                "W_O"))
    l, s = xq.shape[1], xkv.shape[1]
    n = WQ.shape[2]
    scale = (1.0 / np.sqrt(n) if n else 1.0) if conv["scale"] is None else float(conv["scale"])
    keep = window_keep(l, s, conv["causal"], -1, -1)[None, None]
    return xq, xkv, WQ, WK, WV, WO, scale, keep


def oracle(inp, conv):
    xq, xkv, WQ, WK, WV, WO, scale, keep = _parts(inp, conv)
    return {"out": multi_head_mpmath(xq, xkv, WQ, WK, WV, WO, scale, keep)}


def bounds(inp, out, conv, dtype):
    xq, xkv, WQ, WK, WV, WO, scale, keep = _parts(inp, conv)
    b, l, d = xq.shape
    h, _, n = WQ.shape
    p = WV.shape[2]
    q = np.einsum("bld,hdn->blhn", xq, WQ)
    k = np.einsum("bsd,hdn->bshn", xkv, WK)
    v = np.einsum("bsd,hdp->bshp", xkv, WV)
    Qa = np.einsum("bld,hdn->blhn", np.abs(xq), np.abs(WQ))
    Ka = np.einsum("bsd,hdn->bshn", np.abs(xkv), np.abs(WK))
    Va = np.einsum("bsd,hdp->bshp", np.abs(xkv), np.abs(WV))
    gd = gamma(d, dtype)
    # the attention of the computed q, k, v: the softmax bound (mpmath oracle: no oracle share)
    bz = np.asarray(softmax_attention_bound(q, k, v, scale, keep, dtype, oracle_dtype=None).values)
    # the softmax weights of the exact projections
    sc = scale * np.einsum("bihn,bjhn->bhij", q, k)
    kp = np.broadcast_to(keep, sc.shape)
    sm = np.where(kp, sc, -np.inf)
    with np.errstate(invalid="ignore"):
        m = np.max(sm, axis=-1, keepdims=True) if sc.shape[-1] else np.zeros(sc.shape[:-1] + (1,))
        w = np.where(kp, np.exp(sm - np.where(np.isfinite(m), m, 0.0)), 0.0)
    Z = np.sum(w, axis=-1, keepdims=True)
    P = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    ds = abs(scale) * gd * (np.einsum("bihn,bjhn->bhij", Qa, np.abs(k)) + np.einsum("bihn,bjhn->bhij", np.abs(q), Ka))
    ds_max = np.max(np.where(kp, ds, 0.0), axis=-1) if sc.shape[-1] else np.zeros(sc.shape[:-1])  # (b h l)
    pv = np.einsum("bhij,bjhp->bihp", P, np.abs(v))
    dZ = bz + 2.0 * np.einsum("bhi,bihp->bihp", ds_max, pv) + gd * np.einsum("bhij,bjhp->bihp", P, Va)
    Zabs = np.abs(np.einsum("bhij,bjhp->bihp", P, v)).reshape(b, l, h * p)
    vals = dZ.reshape(b, l, h * p) @ np.abs(WO) + gamma(h * p, dtype) * (Zabs @ np.abs(WO))
    return {"out": Bound(vals, "multi-head: projections gamma_d, softmax bound, score perturbation 2 max|ds| sum p|v|, "
                               "output projection gamma_hp (module doc)")}


def reference(inp, conv):
    from refimpl.attention.softmax import multi_head_attention

    return {"out": multi_head_attention(inp["x_q"], inp["x_kv"], inp["W_Q"], inp["W_K"], inp["W_V"], inp["W_O"],
                                        scale=conv["scale"], causal=conv["causal"] is not None,
                                        alignment=conv["causal"])}


def sample(rng, conv, *, l=None, s=None, b=None, h=None, d=None, n=None, p=None, dout=None):
    b, h = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 4))
    if conv["proj_shape"] == "square":
        hd = int(rng.integers(1, 4)) if n is None else n
        n = p = hd
        d = h * hd
        dout = d
    else:
        d, n, p, dout = draw_sizes(rng, d=(d, 1, 6), n=(n, 1, 4), p=(p, 1, 4), dout=(dout, 1, 5))
    l = int(rng.choice([1, 2, 3, 5])) if l is None else l
    if s is None:  # as many keys as queries, or (cross attention, a KV cache) a different number
        s = l if rng.random() < 0.5 else int(rng.choice([1, 2, 4, 6]))
    r = 1.0 / np.sqrt(max(d, 1))
    return {"x_q": rng.standard_normal((b, l, d)), "x_kv": rng.standard_normal((b, s, d)),
            "W_Q": 1.5 * r * rng.standard_normal((h, d, n)), "W_K": 1.5 * r * rng.standard_normal((h, d, n)),
            "W_V": r * rng.standard_normal((h, d, p)), "W_O": rng.standard_normal((h * p, dout)) / np.sqrt(h * p)}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    square = conv["proj_shape"] == "square"
    add = case_builder(OP, sample, 67, conv)
    out = add.cases

    if square:
        add("golden-small", "golden", "b=1, l=s=4, h=2 heads of width 2 (d = 4)", 1, l=4, s=4, b=1, h=2, n=2)
        add("edge-one-head", "edge", "h = 1", 2, h=1, n=3)
        add("edge-lq-ne-lk", "edge", "l = 2 queries, s = 5 keys", 3, l=2, s=5, h=3, n=1)
    else:
        add("golden-small", "golden", "b=1, l=s=4, h=2, d=5, n=3, p=2, dout=3", 1, l=4, s=4, b=1, h=2, d=5, n=3, p=2,
            dout=3)
        add("edge-one-head", "edge", "h = 1, p = dout: W_O is square", 2, h=1, p=3, dout=3)
        add("edge-lq-ne-lk", "edge", "l = 2 queries, s = 5 keys", 3, l=2, s=5, h=3, d=4, n=2, p=2, dout=2)
        add("edge-hp-eq-dout", "edge", "h p = dout: omitting W_O keeps the shape", 4, h=2, p=2, dout=4, d=3, n=2)
    add("edge-L1", "edge", "a single query and key", 5, l=1, s=1)
    return out


register_op(OpSpec(
    name=OP,
    summary="multi-head attention: per-head projections W_Q, W_K, W_V, softmax attention, concatenation, W_O",
    inputs=(Arg("x_q", "b l d"), Arg("x_kv", "b s d"), Arg("W_Q", "h d n"), Arg("W_K", "h d n"), Arg("W_V", "h d p"),
            Arg("W_O", "hp dout", "rows head-major: row x p + c is head x, entry c")),
    outputs=(Arg("out", "b l dout"),),
    conventions=(
        Convention("scale", None, "multiplies q.k; None = n^-1/2 (the per-head query width)"),
        Convention("causal", None, "None; 'top_left' (j <= i); 'bottom_right' (j <= i + s - l)",
                   (None, "top_left", "bottom_right")),
        Convention("proj_shape", "any", "any shapes; square: n = p = d/h and dout = d (torch.nn.MultiheadAttention)",
                   ("any", "square")),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x_q": "l", "x_kv": "s"}, {"out": "l"}, applies=lambda c: c["causal"] is not None,
                            sampler=lambda rng, conv: sample(rng, conv, l=6, s=6)),
            argument_paths_probe(alternatives={"scale": (0.37,)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=4, s=4, b=1))),
    domain=op_domain(length=(("l", "l"), ("s", "s")), heads=("h", "h")),
    module=__name__,
    notes="oracle: oracles.attention.multi_head_mpmath; bound: projections + softmax + output projection (module doc)",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.softmax.multi_head_attention(x_q, x_kv, W_Q, W_K, W_V, W_O, scale=, causal=, alignment=)",
    args=(In("x_q"), In("x_kv"), In("W_Q"), In("W_K"), In("W_V"), In("W_O")),
    kwargs={"scale": Conv(lambda c: c["scale"]), "causal": Conv(lambda c: c["causal"] is not None),
            "alignment": Conv(lambda c: c["causal"])},
    outputs=(Out("out", None),),
))


class _TorchMHAAdapter(Adapter):
    """``torch.nn.functional.multi_head_attention_forward`` with separate projection weights: (L, N, E) layout,
    weights as ``nn.Linear`` stores them (out x in), no biases, no dropout, need_weights=False."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        c = lambda name, pat: convert(np.ascontiguousarray(rearrange(inputs[name], pat, **dims)))  # noqa: E731
        h, d = int(dims["h"]), int(dims["d"])
        xq, xkv = c("x_q", "b l d -> l b d"), c("x_kv", "b s d -> s b d")
        args = [xq, xkv, xkv, d, h, None, None, None, None, False, 0.0, c("W_O", "hp dout -> dout hp"), None]
        kwargs = {"training": False, "need_weights": False, "use_separate_proj_weight": True,
                  "q_proj_weight": c("W_Q", "h d n -> (h n) d"), "k_proj_weight": c("W_K", "h d n -> (h n) d"),
                  "v_proj_weight": c("W_V", "h d p -> (h p) d")}
        return args, kwargs


register_adapter(_TorchMHAAdapter(
    name="torch.multi_head_attention_forward",
    op=OP,
    doc="torch.nn.functional.multi_head_attention_forward(query, key, value, embed_dim, num_heads, None, None, None, "
        "None, False, 0.0, out_proj_weight, None, training=False, need_weights=False, use_separate_proj_weight=True, "
        "q_proj_weight=, k_proj_weight=, v_proj_weight=): (L, N, E) layout, weights (out, in) as nn.Linear, "
        "head-major; torch.nn.MultiheadAttention's shapes (n = p = E / h, dout = E), its scale 1/sqrt(E/h), no "
        "causal hint without a mask",
    outputs=(Out("out", 0, "l b dout -> b l dout"),),
    implies={"proj_shape": "square", "scale": None, "causal": None},
))
