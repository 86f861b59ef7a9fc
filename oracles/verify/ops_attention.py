r"""Op specs ``attention.softmax`` and ``attention.linear`` and their adapters.

attention.softmax
-----------------
Canonical (sequence-first ``[B, T, H, D]``, refimpl's layout: q (b l h n), k (b s h n), v (b s h p))::

    fn(q, k, v) -> o        q (b lq h d), k (b lk h d), v (b lk h e), o (b lq h e)

Conventions: ``scale`` (``None`` = ``1/sqrt(d)``, multiplies ``q.k``), ``causal`` (``None``,
``"top_left"`` = PyTorch's ``is_causal``, keep ``j <= i``; ``"bottom_right"`` = FlashAttention,
keep ``j <= i + lk - lq``), and a sliding window ``(window_left, window_right)`` in
FlashAttention's sense (bottom-right aligned, ``-1`` = unbounded): keep
``i + lk - lq - left <= j <= i + lk - lq + right``.  A query row with no key kept gives zeros.
Oracle: :func:`oracles.attention.sdpa_mpmath` on small cases, :func:`oracles.attention.sdpa_float64`
on larger ones; bound :func:`oracles.attention.softmax_attention_bound`.  Probe: causality (when causal).

attention.linear
----------------
Canonical (sequence-first, refimpl's layout; refimpl passes the state as one argument, see the adapter)::

    fn(phi_q, phi_k, v, S0=None, u0=None) -> (o, S_last, u_last)

``phi_q``, ``phi_k`` (b l h n) feature-mapped queries/keys, ``v`` (b l h e); the state in the
canonical arrays is **V x K**: ``S0``/``S_last`` (b h e n), ``u0``/``u_last`` (b h n).
Conventions: ``causal``, ``normalize``, ``eps`` and ``eps_mode`` (``add``: ``/(den + eps)``,
``clamp``: ``/max(den, eps)``; in the denominator only), ``state_layout`` (the candidate's
orientation: ``vk``, or ``kv`` = ``(b h n e)``, the layout of most GPU kernels; adapters transpose),
``scale`` (multiplies ``phi_q``: the "scale on q" of linear-attention kernel libraries),
``use_state``.  Oracle: :func:`oracles.attention.linear_attention_mpmath` (small) or
:func:`oracles.attention.linear_attention_fsum` (large, stateless); bound
:func:`oracles.attention.linear_attention_bound`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from oracles.attention import (keep_mask, linear_attention_bound, linear_attention_fsum, linear_attention_magnitude,
                               linear_attention_mpmath, sdpa_float64, sdpa_mpmath, softmax_attention_bound)
from oracles.tolerance import Bound, componentwise_bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import Arg, Case, Convention, OpSpec, register_op

OP_SOFTMAX = "attention.softmax"
OP_LINEAR = "attention.linear"
MPMATH_WORK = 6000  # multiply-adds up to which the mpmath oracle is used


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


def softmax_oracle(inp, conv):
    q, k, v = inp["q"], inp["k"], inp["v"]
    b, lq, h, d = q.shape
    lk, e = k.shape[1], v.shape[3]
    keep = window_keep(lq, lk, conv["causal"], int(conv["window_left"]), int(conv["window_right"]))[None, None]
    sc = _scale(conv, d)
    if b * h * lq * lk * (d + e) <= MPMATH_WORK:
        return {"o": sdpa_mpmath(q, k, v, sc, keep)}
    return {"o": sdpa_float64(q, k, v, sc, keep)[0]}


def softmax_bounds(inp, out, conv, dtype):
    q, k, v = inp["q"], inp["k"], inp["v"]
    b, lq, h, d = q.shape
    lk, e = k.shape[1], v.shape[3]
    keep = window_keep(lq, lk, conv["causal"], int(conv["window_left"]), int(conv["window_right"]))[None, None]
    exact = b * h * lq * lk * (d + e) <= MPMATH_WORK
    return {"o": softmax_attention_bound(q, k, v, _scale(conv, d), keep, dtype,
                                         oracle_dtype=None if exact else np.float64)}


def _refimpl_causal(conv) -> bool:
    """refimpl's ``causal`` (a bool) from the op's ``causal`` convention (None or the alignment's name)."""
    return conv["causal"] is not None


def softmax_reference(inp, conv):
    from refimpl.attention.softmax import scaled_dot_product_attention

    q = inp["q"]
    lq, lk = q.shape[1], inp["k"].shape[1]
    mask = None
    if int(conv["window_left"]) >= 0 or int(conv["window_right"]) >= 0:
        mask = window_keep(lq, lk, None, int(conv["window_left"]), int(conv["window_right"]))
    return {"o": scaled_dot_product_attention(q, inp["k"], inp["v"], scale=conv["scale"],
                                              causal=_refimpl_causal(conv), alignment=conv["causal"], mask=mask)}


def softmax_sample(rng, conv, *, lq=None, lk=None, b=None, h=None, d=None, e=None):
    b = int(rng.integers(1, 3)) if b is None else b
    h = int(rng.integers(1, 3)) if h is None else h
    d = int(rng.integers(1, 5)) if d is None else d
    e = int(rng.integers(1, 4)) if e is None else e
    lq = int(rng.choice([1, 2, 3, 5, 8])) if lq is None else lq
    lk = (lq if rng.random() < 0.6 else int(rng.choice([1, 2, 4, 7]))) if lk is None else lk
    return {"q": rng.standard_normal((b, lq, h, d)), "k": rng.standard_normal((b, lk, h, d)),
            "v": rng.standard_normal((b, lk, h, e))}


def softmax_strategy(conv):
    from hypothesis import strategies as st

    try:  # the family's strategy (lq, lk from 0: empty and fully masked rows); its own mask/scale are ignored
        from oracles.strategies.attention import softmax_cases

        return softmax_cases().map(lambda c: {"q": c.q, "k": c.k, "v": c.v})
    except ImportError:
        return st.integers(0, 2**32 - 1).map(lambda s: softmax_sample(np.random.default_rng(s), conv))


def softmax_cases(conv) -> List[Case]:
    out = []

    def add(cid, kind, note, seed, **kw):
        out.append(Case(OP_SOFTMAX, cid, kind, softmax_sample(np.random.default_rng([41, seed]), conv, **kw),
                        dict(conv), seed=seed, note=note))

    add("golden-square", "golden", "lq = lk = 4, two heads", 1, lq=4, lk=4, b=1, h=2, d=3, e=2)
    add("edge-lq-gt-lk", "edge", "lq = 5 > lk = 3: bottom-right causal leaves the first rows empty (zeros)", 2,
        lq=5, lk=3)
    add("edge-lq-lt-lk", "edge", "lq = 2 < lk = 6 (decoding with a KV cache): the alignments differ", 3, lq=2, lk=6)
    add("edge-L1", "edge", "a single query and key", 4, lq=1, lk=1)
    add("edge-large-scores", "edge", "scores of size ~40: needs max subtraction", 5, lq=4, lk=4, d=2)
    out[-1].inputs["q"] = out[-1].inputs["q"] * 6.0
    out[-1].inputs["k"] = out[-1].inputs["k"] * 6.0
    add("edge-long", "edge", "lq = lk = 128", 6, lq=128, lk=128, b=1, h=1, d=8, e=4)
    return out


def _causal_only(conv):
    return conv["causal"] is not None


register_op(OpSpec(
    name=OP_SOFTMAX,
    summary="scaled dot-product (softmax) attention with named scale, causal alignment and window",
    inputs=(Arg("q", "b lq h d"), Arg("k", "b lk h d"), Arg("v", "b lk h e")),
    outputs=(Arg("o", "b lq h e", "a query row with no kept key is zero"),),
    conventions=(
        Convention("scale", None, "multiplies q.k before the softmax; None = 1/sqrt(d)"),
        Convention("causal", None, "None; 'top_left' (PyTorch is_causal: j <= i); 'bottom_right' "
                   "(FlashAttention: j <= i + lk - lq)", (None, "top_left", "bottom_right")),
        Convention("window_left", -1, "sliding window, keys at most this far left of the bottom-right diagonal "
                   "(-1: unbounded)"),
        Convention("window_right", -1, "keys at most this far right of the bottom-right diagonal (-1: unbounded)"),
    ),
    oracle=softmax_oracle,
    bounds=softmax_bounds,
    cases=softmax_cases,
    sample=softmax_sample,
    strategy=softmax_strategy,
    reference=softmax_reference,
    probes=(causality_probe({"q": "lq", "k": "lk", "v": "lk"}, {"o": "lq"}, applies=_causal_only,
                            sampler=lambda rng, conv: softmax_sample(rng, conv, lq=8, lk=8)),),
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


register_adapter(Adapter(
    name="flash_attn.flash_attn_func",
    op=OP_SOFTMAX,
    doc="FlashAttention's flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, "
        "window_size=(-1, -1)): (B, S, H, D) layout, causal bottom-right aligned, (left, right) windows",
    args=(In("q"), In("k"), In("v")),
    kwargs={"dropout_p": Const(0.0), "softmax_scale": Conv(lambda c: c["scale"]), "causal": Conv(_flash_causal),
            "window_size": Conv(lambda c: (int(c["window_left"]), int(c["window_right"])))},
    outputs=(Out("o", None),),
))

register_adapter(Adapter(
    name="torch.sdpa",
    op=OP_SOFTMAX,
    doc="torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=..., scale=...): "
        "head-first (B, H, L, D) layout, is_causal top-left aligned, no window",
    args=(In("q", "b l h d -> b h l d"), In("k", "b l h d -> b h l d"), In("v", "b l h e -> b h l e")),
    kwargs={"is_causal": Conv(_torch_causal), "scale": Conv(lambda c: c["scale"])},
    outputs=(Out("o", None, "b h l e -> b l h e"),),
    implies={"window_left": -1, "window_right": -1},
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_SOFTMAX,
    doc="refimpl.attention.scaled_dot_product_attention(q, k, v, scale=, causal=, alignment=): causal a bool, "
        "alignment 'top_left'/'bottom_right' passed whenever causal (the tiled Numba view "
        "refimpl.attention.softmax.numba:flash_attention takes the same arguments)",
    args=(In("q"), In("k"), In("v")),
    kwargs={"scale": Conv(lambda c: c["scale"]), "causal": Conv(_refimpl_causal),
            "alignment": Conv(lambda c: c["causal"])},
    outputs=(Out("o", None),),
    implies={"window_left": -1, "window_right": -1},
))


# ----------------------------------------------------------------------------------------------------------
# attention.linear
# ----------------------------------------------------------------------------------------------------------

def _lin_inputs(inp, conv):
    pq = np.asarray(inp["phi_q"], dtype=np.float64) * float(conv["scale"])  # the scale on q
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
              layout="vk")
    b, l, h, n = pq.shape
    bo = linear_attention_bound(pq, pk, v, out["o"], dtype=dtype, oracle_dtype=np.float64, oracle_depth=4, **kw)
    if float(conv["scale"]) != 1.0:
        # phi_q * scale: one more rounding per feature -> relative error u in every product phi_q.phi_k
        mag = linear_attention_magnitude(pq, pk, v, out["o"], **kw)
        bo = bo + Bound(2.0 * gamma(1, dtype) * mag, "scale on q: one rounding per feature (2x the sensitivity)")
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
    from refimpl.attention.linear import linear_attention

    pq, pk, v = (np.asarray(inp[k]) for k in ("phi_q", "phi_k", "v"))
    pq = pq * pq.dtype.type(conv["scale"])
    S0 = inp.get("S0") if conv["use_state"] else None
    u0 = inp.get("u0") if conv["use_state"] else None
    normalize = bool(conv["normalize"])
    o, state = linear_attention(pq, pk, v, causal=bool(conv["causal"]), view="recurrent" if conv["causal"] else "quadratic",
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
    b = int(rng.integers(1, 3)) if b is None else b
    h = int(rng.integers(1, 3)) if h is None else h
    n = int(rng.integers(1, 5)) if n is None else n
    e = int(rng.integers(1, 4)) if e is None else e
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
    from hypothesis import strategies as st

    try:  # the family's strategy (positive features, optional state)
        from oracles.strategies.attention import linear_cases

        return linear_cases(with_state=bool(conv["use_state"])).map(
            lambda c: {"phi_q": c.phi_q, "phi_k": c.phi_k, "v": c.v, "S0": c.S0, "u0": c.z0})
    except ImportError:
        return st.integers(0, 2**32 - 1).map(lambda s: linear_sample(np.random.default_rng(s), conv))


def linear_cases(conv) -> List[Case]:
    out = []

    def add(cid, kind, note, seed, **kw):
        out.append(Case(OP_LINEAR, cid, kind, linear_sample(np.random.default_rng([43, seed]), conv, **kw),
                        dict(conv), seed=seed, note=note))

    add("golden-small", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("edge-L0", "edge", "L = 0: empty output; the final state is the initial one", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    add("edge-chunk+1", "edge", "L = 65 (a chunk of 64 plus one)", 4, l=65, b=1, h=1, n=2, e=2)
    return out


def _state_pattern(conv):
    return "b h e n -> b h n e" if conv["state_layout"] == "kv" else None


def _state_back(conv):
    return "b h n e -> b h e n" if conv["state_layout"] == "kv" else None


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
        Convention("eps", 0.0, "epsilon in the denominator"),
        Convention("eps_mode", "add", "'add': /(den + eps); 'clamp': /max(den, eps)", ("add", "clamp")),
        Convention("state_layout", "vk", "the candidate's state orientation: 'vk' S (b h e n), 'kv' S (b h n e)",
                   ("vk", "kv"), layout=True),
        Convention("scale", 1.0, "multiplies phi_q (kernel libraries' scale on q)"),
        Convention("use_state", True, "initial state S0, u0 supported", (True, False)),
    ),
    oracle=linear_oracle,
    bounds=linear_bounds,
    cases=linear_cases,
    sample=linear_sample,
    strategy=linear_strategy,
    reference=linear_reference,
    probes=(causality_probe({"phi_q": "l", "phi_k": "l", "v": "l"}, {"o": "l"}, applies=lambda c: bool(c["causal"])),),
    module=__name__,
    notes="oracle: mpmath dense materialization / float64 fsum (oracles.attention); bound: linear_attention_bound",
))

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
            "eps_mode": Conv(lambda c: c["eps_mode"]), "S0": In("S0", _state_pattern), "u0": In("u0"),
            "state_layout": Conv(lambda c: c["state_layout"]), "return_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, _state_back), Out("u_last", 2)),
    implies={"scale": 1.0},
))

register_adapter(Adapter(
    name="fla.linear_attn",
    op=OP_LINEAR,
    doc="linear-attention kernel libraries (flash-linear-attention style fused_recurrent/chunk_linear_attn): "
        "q, k, v [B, T, H, K] sequence-first, scale applied to q, state K x V [B, H, K, V] as initial_state, "
        "output_final_state=True -> (o, final_state); unnormalized, causal, no normalizer state",
    args=(In("phi_q"), In("phi_k"), In("v")),
    kwargs={"scale": Conv(lambda c: float(c["scale"])), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "normalize": False, "causal": True},
))

register_adapter(Adapter(
    name="fla.linear_attn.head_first",
    op=OP_LINEAR,
    doc="the same kernels in the head-first layout: q, k, v [B, H, T, K], state [B, H, K, V]",
    args=(In("phi_q", "b l h n -> b h l n"), In("phi_k", "b l h n -> b h l n"), In("v", "b l h e -> b h l e")),
    kwargs={"scale": Conv(lambda c: float(c["scale"])), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0, "b h l e -> b l h e"), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "normalize": False, "causal": True},
))
