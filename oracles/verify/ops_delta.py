r"""Op spec ``attention.delta_rule`` (the delta rule and the gated delta rule) and its adapters.

Canonical (sequence-first, refimpl's layout; refimpl names ``alpha`` ``decay`` and ``S0`` ``initial_state``)::

    fn(q, k, v, beta, alpha=None, S0=None) -> (o, S_last)

``q``, ``k`` (b l h n); ``v`` (b l h e); ``beta``, ``alpha`` (b l h); the state in canonical arrays
is **V x K**, ``S0``/``S_last`` (b h e n)::

    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,    o_t = S_t (scale q_t)

Conventions: ``key_norm`` (none, ``sum``: k / sum(k), ``l2``: k / |k|), ``state_layout`` (the
candidate's orientation; ``kv`` = (b h n e), the layout of GPU kernels), ``scale`` (on q),
``use_alpha`` (the gated rule), ``use_state``, ``algorithm``/``chunk`` (the bound's view).
Oracle: :func:`oracles.attention.delta_rule_mpmath` (the transition-matrix form in mpmath); bound:
:func:`oracles.attention.delta_rule_bound` (needs ``0 <= beta |k|^2 <= 2``, ``0 < alpha <= 1``: the
cases respect it).
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.attention import delta_rule_bound, delta_rule_mpmath
from oracles.tolerance import Bound, componentwise_bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import Arg, Case, Convention, OpSpec, register_op

OP = "attention.delta_rule"


def _eff(inp, conv):
    q = np.asarray(inp["q"], dtype=np.float64) * float(conv["scale"])
    alpha = inp.get("alpha") if conv["use_alpha"] else None
    S0 = inp.get("S0") if conv["use_state"] else None
    key_norm = None if conv["key_norm"] == "none" else conv["key_norm"]
    return q, alpha, S0, key_norm


def oracle(inp, conv):
    q, alpha, S0, key_norm = _eff(inp, conv)
    o, S = delta_rule_mpmath(q, inp["k"], inp["v"], inp["beta"], alpha, S0, key_norm)
    return {"o": o, "S_last": S}


def bounds(inp, out, conv, dtype):
    q, alpha, S0, key_norm = _eff(inp, conv)
    bo = delta_rule_bound(q, inp["k"], inp["v"], inp["beta"], alpha, S0, view=conv["algorithm"],
                          chunk=int(conv["chunk"]), key_norm=key_norm, dtype=dtype)
    if float(conv["scale"]) != 1.0:
        # q * scale: one rounding per entry of q (relative u) -> at most gamma_1 |S_t| |scale q_t| on each output,
        # with S_t the exact state trajectory (float64 loop; a magnitude, not a compared value)
        k = np.asarray(inp["k"], dtype=np.float64)
        if key_norm == "sum":
            k = k / np.sum(k, axis=-1, keepdims=True)
        elif key_norm == "l2":
            k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        v = np.asarray(inp["v"], dtype=np.float64)
        beta = np.asarray(inp["beta"], dtype=np.float64)
        b, l, h, n = k.shape
        S = np.zeros((b, h, v.shape[-1], n)) if S0 is None else np.asarray(S0, dtype=np.float64).copy()
        mag = np.zeros(np.shape(out["o"]))
        for t in range(l):
            a = 1.0 if alpha is None else np.asarray(alpha, dtype=np.float64)[:, t, :, None, None]
            S = a * S
            S = S + (beta[:, t, :, None] * (v[:, t] - np.einsum("bhen,bhn->bhe", S, k[:, t])))[..., None] \
                * k[:, t, :, None, :]
            mag[:, t] = np.einsum("bhen,bhn->bhe", np.abs(S), np.abs(q[:, t]))
        bo = bo + Bound(gamma(1, dtype) * mag, "scale on q: one rounding of each q entry, gamma_1 |S_t| |scale q_t|")
    # the final state: S_L's error is bounded by the accumulated state error of the bound's derivation;
    # we use the same normwise propagation on the state with |q| = 1 (each entry <= the Frobenius norm)
    e, n = np.shape(out["S_last"])[-2:]
    ones_q = np.ones(np.shape(inp["k"]))
    bs = delta_rule_bound(ones_q, inp["k"], inp["v"], inp["beta"], alpha, S0, view=conv["algorithm"],
                          chunk=int(conv["chunk"]), key_norm=key_norm, dtype=dtype)
    b, l, h = np.shape(inp["beta"])
    if l:
        # ||E_L||_F |1| + gamma_n |S_L| |1| bounds every entry of the final state's error
        per = np.max(np.asarray(bs.values)[:, -1], axis=-1)  # (b h)
        vals = np.broadcast_to(per[:, :, None, None], (b, h, e, n)).copy()
    else:
        vals = np.zeros((b, h, e, n))
    return {"o": bo, "S_last": Bound(vals, "final state: " + bs.source + " (probed with q = 1)")}


def reference(inp, conv):
    from refimpl.attention.delta import delta_rule

    q = np.asarray(inp["q"])
    q = q * q.dtype.type(conv["scale"])
    _, alpha, S0, key_norm = _eff(inp, conv)
    o, S = delta_rule(q, inp["k"], inp["v"], inp["beta"], decay=alpha, initial_state=S0, key_norm=key_norm,
                      view="recurrent", return_final_state=True)
    return {"o": o, "S_last": S}


def sample(rng, conv, *, l=None, b=None, h=None, n=None, e=None):
    b = int(rng.integers(1, 3)) if b is None else b
    h = int(rng.integers(1, 3)) if h is None else h
    n = int(rng.integers(1, 5)) if n is None else n
    e = int(rng.integers(1, 4)) if e is None else e
    l = int(rng.choice([0, 1, 2, 3, 7, 16, 17])) if l is None else l
    if conv["key_norm"] == "sum":
        k = rng.uniform(0.1, 1.0, size=(b, l, h, n))  # positive features; sum-normalised |k|_2 <= 1
    else:
        k = rng.standard_normal((b, l, h, n))
        if conv["key_norm"] == "none":  # |k| <= 1 so that beta |k|^2 <= 1: a contraction
            k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.0, size=(b, l, h, 1))
    inp = {"q": rng.standard_normal((b, l, h, n)), "k": k, "v": rng.standard_normal((b, l, h, e)),
           "beta": rng.uniform(0.05, 0.95, size=(b, l, h)), "alpha": None, "S0": None}
    if conv["use_alpha"]:
        inp["alpha"] = rng.uniform(0.5, 1.0, size=(b, l, h))
    if conv["use_state"]:
        inp["S0"] = rng.standard_normal((b, h, e, n))
    return inp


def strategy(conv):
    from hypothesis import strategies as st

    if conv["key_norm"] != "sum":  # the family's keys are unit-norm, not positive
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
    return st.integers(0, 2**32 - 1).map(lambda s: sample(np.random.default_rng(s), conv))


def cases(conv) -> List[Case]:
    out = []
    T = int(conv["chunk"])

    def add(cid, kind, note, seed, **kw):
        out.append(Case(OP, cid, kind, sample(np.random.default_rng([59, seed]), conv, **kw), dict(conv), seed=seed,
                        note=note))

    add("golden-small", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("edge-L0", "edge", "L = 0: the final state is S0", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    add("edge-chunk+1", "edge", f"L = chunk + 1 = {T + 1}", 4, l=T + 1, b=1, h=1, n=3, e=2)
    return out


def _state_in(conv):
    return "b h e n -> b h n e" if conv["state_layout"] == "kv" else None


def _state_out(conv):
    return "b h n e -> b h e n" if conv["state_layout"] == "kv" else None


register_op(OpSpec(
    name=OP,
    summary="the delta rule S_t = alpha_t S_{t-1}(I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t "
            "(gated when alpha is given)",
    inputs=(Arg("q", "b l h n"), Arg("k", "b l h n"), Arg("v", "b l h e"), Arg("beta", "b l h"),
            Arg("alpha", "b l h", "decay in (0, 1] (gated delta rule)", optional=True),
            Arg("S0", "b h e n", "initial state (V x K in canonical arrays)", optional=True)),
    outputs=(Arg("o", "b l h e"), Arg("S_last", "b h e n", optional=True)),
    conventions=(
        Convention("key_norm", "none", "keys normalised first: none, sum (k / sum k), l2 (k / |k|)",
                   ("none", "sum", "l2")),
        Convention("state_layout", "vk", "the candidate's state orientation: vk (b h e n) or kv (b h n e)",
                   ("vk", "kv"), layout=True),
        Convention("scale", 1.0, "multiplies q"),
        Convention("use_alpha", True, "the gated rule (a decay alpha_t)", (True, False)),
        Convention("use_state", True, "an initial state S0", (True, False)),
        Convention("algorithm", "recurrent", "evaluation order for the bound: recurrent or chunked (WY)",
                   ("recurrent", "chunked")),
        Convention("chunk", 64, "chunk length (algorithm='chunked'; sets the chunk + 1 edge case)"),
    ),
    oracle=oracle,
    bounds=bounds,
    cases=cases,
    sample=sample,
    strategy=strategy,
    reference=reference,
    probes=(causality_probe({"q": "l", "k": "l", "v": "l", "beta": "l", "alpha": "l"}, {"o": "l"},
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),),
    module=__name__,
    notes="oracle: oracles.attention.delta_rule_mpmath; bound: oracles.attention.delta_rule_bound",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.delta_rule(q, k, v, beta, decay=, initial_state=, key_norm=, scale=, "
        "return_final_state=True) -> (o, S); the views refimpl.attention.delta.reference:recurrent/chunked and the "
        "Numba kernel refimpl.attention.delta.numba:delta_chunked take the same arguments",
    args=(In("q"), In("k"), In("v"), In("beta")),
    kwargs={"decay": In("alpha"), "initial_state": In("S0"),
            "key_norm": Conv(lambda c: None if c["key_norm"] == "none" else c["key_norm"]),
            "scale": Conv(lambda c: float(c["scale"])), "return_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1)),
    implies={"state_layout": "vk"},
))

register_adapter(Adapter(
    name="fla.delta_rule",
    op=OP,
    doc="flash-linear-attention style fused_recurrent/chunk_delta_rule(q, k, v, beta, scale=, initial_state=, "
        "output_final_state=True): [B, T, H, K] sequence-first, scale on q, state K x V [B, H, K, V]",
    args=(In("q"), In("k"), In("v"), In("beta")),
    kwargs={"scale": Conv(lambda c: float(c["scale"])), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "use_alpha": False},
))

register_adapter(Adapter(
    name="fla.gated_delta_rule",
    op=OP,
    doc="gated delta rule kernels (q, k, v, g, beta, scale=, initial_state=, output_final_state=True) with the "
        "decay passed in log space, g = log(alpha); [B, T, H, K], state K x V",
    args=(In("q"), In("k"), In("v"), In("alpha", transform=np.log), In("beta")),
    kwargs={"scale": Conv(lambda c: float(c["scale"])), "initial_state": In("S0", "b h e n -> b h n e"),
            "output_final_state": Const(True)},
    outputs=(Out("o", 0), Out("S_last", 1, "b h n e -> b h e n")),
    implies={"state_layout": "kv", "use_alpha": True},
))
