r"""The gradient checks of the composite ops ``attention.multi_head``, ``attention.performer`` and
``ssm.hippo_projection`` (``refimpl verify <op> CANDIDATE --grad``).

attention.multi_head
--------------------
Differentiable canonical inputs: every one (``x_q``, ``x_kv``, ``W_Q``, ``W_K``, ``W_V``, ``W_O``).

* forward: :func:`oracles.composite_grad_forward.multi_head_forward` (float64 projections and
  :func:`oracles.attention.sdpa_float64`), the causal keep mask of the convention (``window_keep``).
* bounds: :func:`oracles.composite_grad_forward.multi_head_vjp_bound` (``|J|^T |w|`` times ``gamma`` of the
  counted depth times the score amplification; derived in that module's docstring).
* cases: L = 1, odd L, l != s both ways (bottom-right causal leaves rows empty), the square shapes of
  ``torch.nn.MultiheadAttention`` under ``proj_shape="square"``; each under ~1500 input elements.
* reference_vjp: :func:`refimpl.attention.softmax.multi_head_attention_vjp` (materialized view).

attention.performer
-------------------
Differentiable canonical inputs ``q``, ``k``, ``v``, ``W``.  **The stabilizers' offsets are differentiated through
the max** (the features op's default, ``offset_grad="through"``: the derivative of the features as the op defines
them, what central differences of the forward see).  With ``feature_eps = 0`` and ``normalize`` the offsets cancel
in ``o`` and the ``"stop"`` convention (FAVOR+'s and performer-pytorch's ``.detach()``) gives the same gradient;
with ``feature_eps > 0`` (performer-pytorch's ``1e-4``) the two differ by ``feature_eps``-sized terms.

* forward: :func:`oracles.composite_grad_forward.performer_forward` (the features oracle of ``features.performer``
  composed with the dense float64 linear attention of ``attention.linear``'s gradient check).
* bounds: :func:`oracles.composite_grad_forward.performer_vjp_bound`.
* cases: L = 0, 1, odd, a chunk of 64 minus / plus one when causal (refimpl's default chunk), l != s, large
  exponents, one feature.
* reference_vjp: :func:`refimpl.attention.linear.performer_attention_vjp` (``quadratic`` when non-causal,
  ``chunked`` with chunk 64 when causal); the stabilizers ``none``/``row_max`` on queries and ``none``/``global_max``
  on keys only, ``feature_eps = 0``, ``eps_mode="add"`` (refimpl's Performer).

ssm.hippo_projection
--------------------
Differentiable canonical inputs ``f``, ``dt`` (a positive scalar: for LegS on ``t_k = (k + 1) dt`` it drops out,
its gradient is 0) and ``c0``; ``N`` is an int (no gradient).

* forward: :func:`oracles.composite_grad_forward.hippo_forward` (float64 loops, the matrices from the closed forms,
  both ``step`` conventions).
* bounds: :func:`oracles.composite_grad_forward.hippo_vjp_bound` (the trapezoid step's reverse scan; ``held``: the
  same count, stated as a stand-in, on ``|J|^T |w|``).
* cases: L = 0, 1, odd with and without ``c0``, N = 1, a longer L.
* reference_vjp: :func:`refimpl.ssm.hippo.hippo_projection_vjp` (``step="trapezoid"`` only).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping

import numpy as np

from oracles.composite_grad_forward import (hippo_forward, hippo_vjp_bound, multi_head_forward, multi_head_vjp_bound,
                                            performer_forward, performer_vjp_bound)
from oracles.tolerance import componentwise_bound
from oracles.verify import ops_hippo, ops_multi_head, ops_performer
from oracles.verify.ops_attention import window_keep
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

MH_WRT = ("x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O")
PERF_WRT = ("q", "k", "v", "W")
HIPPO_WRT = ("f", "dt", "c0")
CHUNK = 64


# ------------------------------------------------------------------ attention.multi_head

def _mh_scale(inp, conv) -> float:
    n = np.shape(inp["W_Q"])[2]
    return (1.0 / math.sqrt(n) if n else 1.0) if conv["scale"] is None else float(conv["scale"])


def mh_grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"out": out}`` in float64 (the ground truth :mod:`oracles.gradients` differentiates)."""
    l, s = np.shape(inp["x_q"])[1], np.shape(inp["x_kv"])[1]
    keep = window_keep(l, s, conv["causal"], -1, -1)[None, None]
    return {"out": multi_head_forward(inp["x_q"], inp["x_kv"], inp["W_Q"], inp["W_K"], inp["W_V"], inp["W_O"],
                                      _mh_scale(inp, conv), keep)}


def mh_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None):
    """Each gradient's derived bound in ``dtype`` (:func:`oracles.composite_grad_forward.multi_head_vjp_bound`,
    the backward on absolute values; needs the cotangent: without it ``|J|^T|w|`` stands in, stated)."""
    if cotangents is None or cotangents.get("out") is None:
        return {nm: componentwise_bound(magnitudes[nm], 64, dtype, oracle_dtype=None,
                                        what="|J|^T|w| stand-in: the harness passed no cotangent") for nm in magnitudes}
    l, s = np.shape(inp["x_q"])[1], np.shape(inp["x_kv"])[1]
    keep = window_keep(l, s, conv["causal"], -1, -1)[None, None]
    return multi_head_vjp_bound(inp, cotangents["out"], _mh_scale(inp, conv), dtype, keep)


def mh_grad_cases(conv) -> List[Case]:
    add = case_builder(ops_multi_head.OP, ops_multi_head.sample, 1441, conv)
    if conv["proj_shape"] == "square":
        add("golden-small", "golden", "b=1, l=s=4, h=2 heads of width 2 (d = 4)", 1, l=4, s=4, b=1, h=2, n=2)
        add("edge-L1", "edge", "a single query and key", 2, l=1, s=1, b=1, h=2, n=2)
        add("edge-odd", "edge", "l = s = 5 (odd), one head", 3, l=5, s=5, b=2, h=1, n=3)
        add("edge-lq-gt-lk", "edge", "l = 5 > s = 3: bottom-right causal leaves rows empty", 4, l=5, s=3, b=1, h=2,
            n=1)
        add("edge-lq-lt-lk", "edge", "l = 2 < s = 6", 5, l=2, s=6, b=1, h=3, n=1)
        return add.cases
    add("golden-small", "golden", "b=1, l=s=4, h=2, d=5, n=3, p=2, dout=3", 1, l=4, s=4, b=1, h=2, d=5, n=3, p=2,
        dout=3)
    add("edge-L1", "edge", "a single query and key", 2, l=1, s=1, b=1, h=2, d=3, n=2, p=2, dout=2)
    add("edge-odd", "edge", "l = s = 5 (odd), b = 2", 3, l=5, s=5, b=2, h=1, d=3, n=2, p=2, dout=2)
    add("edge-lq-gt-lk", "edge", "l = 5 > s = 3: bottom-right causal leaves rows empty", 4, l=5, s=3, b=1, h=2, d=3,
        n=2, p=1, dout=2)
    add("edge-lq-lt-lk", "edge", "l = 2 < s = 6 (a KV cache)", 5, l=2, s=6, b=1, h=2, d=3, n=2, p=2, dout=3)
    return add.cases


def mh_reference_vjp(inp, conv, cotangents) -> Dict[str, np.ndarray]:
    """refimpl's VJP (materialized view) in the op's canonical layout (the same names)."""
    from refimpl.attention.softmax import multi_head_attention_vjp

    return multi_head_attention_vjp(*(inp[k] for k in MH_WRT), dout=cotangents["out"], scale=conv["scale"],
                                    causal=conv["causal"] is not None, alignment=conv["causal"])


register_grad(GradSpec(
    op=ops_multi_head.OP,
    wrt=MH_WRT,
    forward=mh_grad_forward,
    bounds=mh_grad_bounds,
    cases=mh_grad_cases,
    reference_vjp=mh_reference_vjp,
    outputs=("out",),
    notes="forward: oracles.composite_grad_forward.multi_head_forward (float64 projections + logsumexp softmax); "
          "bounds: |J|^T|w| x gamma of the counted depth x the score amplification 1 + 2 Smax",
    module=__name__,
))


# ------------------------------------------------------------------ attention.performer

def _r(inp, conv) -> float:
    return ops_performer._r(conv, np.shape(inp["q"])[-1])


def perf_grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"o": o}`` in float64, the stabilizers' offsets differentiated through the max (module docstring)."""
    return {"o": performer_forward(inp["q"], inp["k"], inp["v"], inp["W"], kind=conv["kind"], r=_r(inp, conv),
                                   feature_eps=float(conv["feature_eps"]),
                                   query_stabilizer=conv["query_stabilizer"], key_stabilizer=conv["key_stabilizer"],
                                   causal=bool(conv["causal"]), normalize=bool(conv["normalize"]),
                                   eps=float(conv["eps"]), eps_mode=conv["eps_mode"])}


def perf_conv_kw(inp, conv) -> Dict[str, Any]:
    """The keywords of :func:`oracles.composite_grad_forward.performer_vjp_magnitude` for the op's conventions."""
    return dict(kind=conv["kind"], r=_r(inp, conv), feature_eps=float(conv["feature_eps"]),
                query_stabilizer=conv["query_stabilizer"], key_stabilizer=conv["key_stabilizer"],
                causal=bool(conv["causal"]), normalize=bool(conv["normalize"]), eps=float(conv["eps"]))


def perf_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None):
    """Each gradient's derived bound (:func:`oracles.composite_grad_forward.performer_vjp_bound`, the backward on
    absolute values; ``eps_mode`` other than ``add`` and a missing cotangent: ``|J|^T|w|`` stands in, stated)."""
    if cotangents is None or cotangents.get("o") is None or conv["eps_mode"] != "add":
        return {nm: componentwise_bound(magnitudes[nm], 128, dtype, oracle_dtype=None,
                                        what="|J|^T|w| stand-in (no cotangent, or eps_mode not 'add')")
                for nm in magnitudes}
    return performer_vjp_bound(inp, cotangents["o"], perf_conv_kw(inp, conv), dtype)


def perf_grad_cases(conv) -> List[Case]:
    add = case_builder(ops_performer.OP, ops_performer.sample, 1443, conv)
    add("golden-small", "golden", "b=1, l=4, h=2, d=3, e=2, m=4", 1, l=4, b=1, h=2, d=3, e=2, m=4)
    add("edge-L0", "edge", "L = 0: empty gradients (dW = 0)", 2, l=0, b=1, h=1, d=2, e=2, m=3)
    add("edge-L1", "edge", "a single query and key", 3, l=1, b=1, h=2, d=3, e=2, m=3)
    add("edge-odd", "edge", "L = 7 (odd), b = 2", 4, l=7, b=2, h=1, d=2, e=2, m=3)
    if conv["causal"]:
        add("edge-chunk-1", "edge", f"L = {CHUNK - 1}: a chunk of {CHUNK} minus one", 5, l=CHUNK - 1, b=1, h=1, d=2,
            e=1, m=2)
        add("edge-chunk+1", "edge", f"L = {CHUNK + 1}: a chunk of {CHUNK} plus one", 6, l=CHUNK + 1, b=1, h=1, d=2,
            e=1, m=2)
    else:
        add("edge-lq-ne-lk", "edge", "l = 3 queries, s = 6 keys", 7, l=3, s=6, b=1, h=1, d=3, e=2, m=4)
    c = add("edge-large-x", "edge", "|x| ~ 2: large exponents (the stabilizers matter)", 8, l=5, b=1, h=1, d=3, e=2,
            m=4)
    c.inputs["q"], c.inputs["k"] = c.inputs["q"] * 3.0, c.inputs["k"] * 3.0
    add("edge-one-feature", "edge", "m = 1 random feature", 9, l=5, b=1, h=1, d=2, e=2, m=1)
    return add.cases


def perf_reference_vjp(inp, conv, cotangents) -> Dict[str, np.ndarray]:
    """refimpl's VJP in the op's canonical layout (module docstring)."""
    from refimpl.attention.linear import performer_attention_vjp

    if float(conv["feature_eps"]):
        raise ValueError("feature_eps: refimpl's performer_attention has no feature eps; verify with feature_eps=0")
    if conv["eps_mode"] != "add":
        raise ValueError(f"eps_mode: refimpl's performer_attention adds eps, got {conv['eps_mode']!r}")
    causal = bool(conv["causal"])
    view = dict(view="chunked", chunk=CHUNK) if causal else dict(view="quadratic")
    return performer_attention_vjp(inp["q"], inp["k"], inp["v"], inp["W"], do=cotangents["o"], kind=conv["kind"],
                                   causal=causal, normalize=bool(conv["normalize"]), eps=float(conv["eps"]),
                                   scale=conv["scale"], stabilizer=ops_performer._refimpl_stabilizer(conv), **view)


register_grad(GradSpec(
    op=ops_performer.OP,
    wrt=PERF_WRT,
    forward=perf_grad_forward,
    bounds=perf_grad_bounds,
    cases=perf_grad_cases,
    reference_vjp=perf_reference_vjp,
    outputs=("o",),
    notes="forward: oracles.composite_grad_forward.performer_forward (features oracle + dense float64 linear "
          "attention); the stabilizers' max differentiated through (the features op's default); bounds: |J|^T|w| x "
          "gamma of the counted depth x the exponent amplification",
    module=__name__,
))


# ------------------------------------------------------------------ ssm.hippo_projection

def _hippo_args(inp, conv):
    c0 = inp.get("c0") if conv["use_c0"] else None
    return int(np.asarray(inp["N"])), c0, ops_hippo._alpha(conv)


def hippo_grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"c": c}`` in float64 (both step conventions)."""
    N, c0, alpha = _hippo_args(inp, conv)
    return {"c": hippo_forward(inp["f"], conv["measure"], N, inp["dt"], alpha=alpha, theta=float(conv["theta"]),
                               step=conv["step"], c0=c0)}


def hippo_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None):
    """Each gradient's derived bound (:func:`oracles.composite_grad_forward.hippo_vjp_bound`)."""
    N, c0, alpha = _hippo_args(inp, conv)
    L = np.shape(inp["f"])[0]
    if conv["step"] != "trapezoid" or cotangents is None or cotangents.get("c") is None:
        return {nm: componentwise_bound(magnitudes[nm], L * (3 * N + 6) + 10, dtype, oracle_dtype=None,
                                        what="|J|^T|w| x gamma_(L(3N+6)+10) stand-in (held step, or no cotangent)")
                for nm in magnitudes}
    out = hippo_vjp_bound(inp["f"], conv["measure"], N, inp["dt"], cotangents["c"], alpha=alpha,
                          theta=float(conv["theta"]), c0=c0, dtype=dtype)
    return {nm: b for nm, b in out.items() if nm in oracle_grads or nm in magnitudes}


def hippo_grad_cases(conv) -> List[Case]:
    rows = [("golden-smooth", "golden", dict(L=16, N=4, smooth=True), "a smooth signal, N = 4, L = 16"),
            ("edge-L0", "edge", dict(L=0, N=3), "L = 0: no coefficients"),
            ("edge-L1", "edge", dict(L=1, N=3), "L = 1: the first row only"),
            ("edge-odd", "edge", dict(L=9, N=5 if conv["measure"] == "fout" else 4), "L = 9 (odd)"),
            ("edge-N1", "edge", dict(L=7, N=1), "N = 1"),
            ("edge-long", "edge", dict(L=65, N=3), "L = 65 (LegS: 1/t down to 1/65)")]
    if conv["use_c0"]:
        rows = [(cid, kind, dict(kw, c0=True), note + ", with c0") for cid, kind, kw, note in rows]
        rows.append(("edge-no-c0", "edge", dict(L=9, N=3, c0=False), "L = 9 without c0 (the default start)"))
    add = case_builder(ops_hippo.OP, ops_hippo.sample, 1447, conv)
    return add.rows([(cid, kind, {"c0": False, **kw}, note) for cid, kind, kw, note in rows])


def hippo_reference_vjp(inp, conv, cotangents) -> Dict[str, np.ndarray]:
    """refimpl's VJP (``step="trapezoid"``) in the op's canonical names (``initial_state`` -> ``c0``)."""
    from refimpl.ssm.hippo import hippo_projection_vjp

    if conv["step"] != "trapezoid":
        raise NotImplementedError(f"refimpl's hippo_projection takes the trapezoid step, not step={conv['step']!r}")
    N, c0, alpha = _hippo_args(inp, conv)
    g = hippo_projection_vjp(inp["f"], conv["measure"], N, float(np.asarray(inp["dt"])), dc=cotangents["c"],
                             method=conv["method"], alpha=alpha if conv["method"] == "gbt" else None,
                             theta=float(conv["theta"]), initial_state=c0)
    out = {"f": g["f"], "dt": g["dt"]}
    if c0 is not None:
        out["c0"] = g["initial_state"]
    return out


register_grad(GradSpec(
    op=ops_hippo.OP,
    wrt=HIPPO_WRT,
    forward=hippo_grad_forward,
    bounds=hippo_grad_bounds,
    cases=hippo_grad_cases,
    reference_vjp=hippo_reference_vjp,
    outputs=("c",),
    notes="forward: oracles.composite_grad_forward.hippo_forward (float64 loops, closed-form matrices); N an int (no "
          "gradient), dt differentiable (0 for LegS); bounds: the reverse scan's errors carried by the adjoint "
          "propagator (hippo_vjp_bound)",
    module=__name__,
))


# ------------------------------------------------------------------ refimpl's VJPs as explicit canonical backwards

def mh_grad_fn(x_q, x_kv, W_Q, W_K, W_V, W_O, dout=None):
    """refimpl's multi-head VJP in the canonical protocol (``--grad-fn``), the conventions at their defaults."""
    conv = {"scale": None, "causal": None}
    return mh_reference_vjp(dict(zip(MH_WRT, (x_q, x_kv, W_Q, W_K, W_V, W_O))), conv, {"out": dout})


def perf_grad_fn(q, k, v, W, do=None):
    """refimpl's Performer VJP in the canonical protocol (``--grad-fn``), the conventions at their defaults."""
    conv = {"kind": "positive", "causal": False, "scale": None, "feature_eps": 0.0, "query_stabilizer": "none",
            "key_stabilizer": "none", "normalize": True, "eps": 0.0, "eps_mode": "add"}
    return perf_reference_vjp({"q": q, "k": k, "v": v, "W": W}, conv, {"o": do})


def hippo_grad_fn(f, N, dt, c0=None, c=None):
    """refimpl's HiPPO VJP in the canonical protocol (``--grad-fn``), the conventions at their defaults (legs,
    bilinear, trapezoid)."""
    conv = {"measure": "legs", "method": "bilinear", "alpha": 0.5, "theta": 1.0, "step": "trapezoid", "use_c0": True}
    return hippo_reference_vjp({"f": f, "N": N, "dt": dt, "c0": c0}, conv, {"c": c})
