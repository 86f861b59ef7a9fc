r"""The gradient checks of ops ``attention.linear``, ``features.elu_plus_one``, ``features.dpfp`` and
``features.performer`` (``refimpl verify <op> CANDIDATE --grad``).

attention.linear
----------------
Differentiable canonical inputs ``phi_q``, ``phi_k``, ``v``, ``S0``, ``u0`` (the state when ``use_state``).  The
outputs that carry cotangents: ``o``; ``S_last`` when ``use_state``; ``u_last`` when ``use_state`` and normalized
(a stateless candidate returns ``o`` alone, an unnormalized one no normalizer; the final state's adjoint paths are
checked wherever the candidate claims the state).  ``eps`` is a constant.  ``eps_mode="clamp"``: the derivative of
``max(a, eps)`` is ``1{a >= eps}`` (finite differences see either side away from the tie; the cases keep ``a`` away
from ``eps``).

* forward: :func:`oracles.linear_grad_forward.linear_forward` (dense float64 materialization, the op's ``scale``
  on ``phi_q`` and its three ``eps_mode``\ s, ``key_sum`` included).
* bounds: :func:`oracles.linear_grad_forward.linear_vjp_bound` -- the adjoint's sums on absolute values times
  ``gamma_D``, ``D = 2 (n + l + p) + 10`` (derived there); needs the cotangents; without them
  ``componentwise_bound(|J|^T|w|, D)`` stands in (stated).
* cases: L = 0 (the state's gradient is the final state's cotangent), L = 1, odd L = 7, L = 63 and 65 (a chunk of
  64 minus and plus one: refimpl's and most kernels' default chunk), b, h > 1; each under ~1500 input elements.
* reference_vjp: :func:`refimpl.attention.linear.linear_attention_vjp` (view ``chunked``, chunk 64, when causal;
  ``quadratic`` when not); ``key_sum`` composed from two unnormalized VJPs (the numerator's with ``v``, the
  denominator's with ``v = 1``) as the op's forward reference composes the forward; the scale's chain rule on
  ``phi_q``; ``u_last``'s cotangent added to ``dphi_k`` and ``du0`` when refimpl carries no normalizer.

features.elu_plus_one, features.dpfp, features.performer
--------------------------------------------------------
Differentiable inputs ``x`` (and ``W`` for the random features).  **The stabilizer's offset** is differentiated
*through* (the derivative of the features as the op defines them -- what central differences of the forward see):
performer-pytorch and FAVOR+ subtract the max under stop-gradient (``.detach()``), which is the exact gradient of
normalized attention when the offset cancels, but not of the features; a candidate with that convention
deviates here by ``-(sum_i dphi_i phi_i) d c/dx`` (the harness reports it per input; see
``tests/integration/test_verify_grad_performer.py``).  Kinks (``relu`` and ``elu`` at 0, ties of the max) are kept
farther from every case's entries than the difference step (the cases push ``|x|`` above 0.1).

* forward: :func:`oracles.linear_grad_forward.feature_forward`; bounds:
  :func:`oracles.linear_grad_forward.feature_vjp_bound`; reference_vjp:
  :func:`refimpl.attention.features.feature_map_vjp` (the op's ``data_scale`` by the chain rule, performer-pytorch's
  ``row_max_wx``/``head_max_wx`` offsets as the unstabilized VJP of ``dphi exp(-c)`` plus the offset's adjoint).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from oracles.linear_grad_forward import feature_forward, feature_vjp_bound, linear_depth, linear_vjp_bound, \
    linear_forward, performer_offset
from oracles.tolerance import componentwise_bound
from oracles.verify.ops_attention import OP_LINEAR, linear_sample
from oracles.verify.ops_features import OP as OP_PERFORMER, OP_DPFP, OP_ELU, map_sample, sample as performer_sample
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

LINEAR_WRT = ("phi_q", "phi_k", "v", "S0", "u0")
CHUNK = 64


# ------------------------------------------------------------------ attention.linear

def _state(inp, conv):
    if not conv["use_state"]:
        return None, None
    return inp.get("S0"), inp.get("u0")


def linear_grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """The outputs that carry a cotangent, in float64 (the ground truth :mod:`oracles.gradients` differentiates):
    ``o``; the final state ``S_last`` when the candidate claims a state (``use_state``), and ``u_last`` when it is
    also normalized (a stateless candidate -- performer-pytorch's -- returns ``o`` alone; an unnormalized one,
    FLA's, returns no normalizer)."""
    S0, u0 = _state(inp, conv)
    out = linear_forward(inp["phi_q"], inp["phi_k"], inp["v"], S0, u0, causal=bool(conv["causal"]),
                         normalize=bool(conv["normalize"]), eps=float(conv["eps"]), eps_mode=conv["eps_mode"],
                         scale=conv["scale"])
    keep = ("o",) + (("S_last",) if conv["use_state"] else ()) + (
        ("u_last",) if conv["use_state"] and conv["normalize"] else ())
    return {k: out[k] for k in keep}


def linear_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents: Optional[Mapping[str, Any]] = None):
    """Each gradient's derived bound in ``dtype`` (:func:`oracles.linear_grad_forward.linear_vjp_bound`)."""
    S0, u0 = _state(inp, conv)
    b, l, h, n = np.shape(inp["phi_q"])
    p = np.shape(inp["v"])[3]
    if cotangents is None:
        D = linear_depth(n, l, p, 3)
        return {nm: componentwise_bound(magnitudes[nm], D, dtype, oracle_dtype=None,
                                        what="|J|^T|w| stand-in: the harness passed no cotangent")
                for nm in magnitudes}
    normalize = bool(conv["normalize"])
    out = linear_vjp_bound(inp["phi_q"], inp["phi_k"], inp["v"], S0, u0, cotangents.get("o"),
                           cotangents.get("S_last"), cotangents.get("u_last") if normalize else None,
                           causal=bool(conv["causal"]), normalize=normalize, eps=float(conv["eps"]),
                           eps_mode=conv["eps_mode"], dtype=dtype, scale=conv["scale"])
    if not normalize and cotangents.get("u_last") is not None:
        # u_last = u0 + sum_j phi_k_j: one sum of l terms
        from oracles.tolerance import Bound, gamma

        du = np.abs(np.asarray(cotangents["u_last"], dtype=np.float64))
        out["phi_k"] = out["phi_k"] + Bound(gamma(2, dtype) * du[:, None], "+ du_L (one addition)")
        out["u0"] = out["u0"] + Bound(gamma(1, dtype) * du, "du0 = du_L")
    return {nm: bnd for nm, bnd in out.items() if nm in oracle_grads or nm in magnitudes}


def linear_grad_cases(conv) -> List[Case]:
    add = case_builder(OP_LINEAR, linear_sample, 2141, conv)
    add("golden-small", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("edge-L0", "edge", "L = 0: the initial state's gradient is the final state's cotangent", 2, l=0, b=1, h=2,
        n=2, e=2)
    add("edge-L1", "edge", "L = 1", 3, l=1, b=2, h=1, n=3, e=2)
    add("edge-odd", "edge", "L = 7 (odd), b = 2", 4, l=7, b=2, h=2, n=2, e=3)
    add("edge-chunk-1", "edge", f"L = {CHUNK - 1} (a chunk of {CHUNK} minus one)", 5, l=CHUNK - 1, b=1, h=1, n=2, e=2)
    add("edge-chunk+1", "edge", f"L = {CHUNK + 1} (a chunk of {CHUNK} plus one: the last chunk has one row)", 6,
        l=CHUNK + 1, b=1, h=1, n=2, e=2)
    return add.cases


def _scale(conv, n):
    if conv["scale"] is None:
        return 1.0 / math.sqrt(n) if n > 0 else 1.0
    return float(conv["scale"])


def linear_reference_vjp(inp, conv, cotangents) -> Dict[str, np.ndarray]:
    """refimpl's VJP in the op's canonical layout (module docstring)."""
    from refimpl.attention.linear import linear_attention, linear_attention_vjp

    pq0, pk, v = (np.asarray(inp[k]) for k in ("phi_q", "phi_k", "v"))
    dt = np.result_type(pq0, pk, v)
    sc = _scale(conv, pq0.shape[-1])
    pq = pq0 * dt.type(sc)
    S0, u0 = _state(inp, conv)
    causal, normalize = bool(conv["causal"]), bool(conv["normalize"])
    view = dict(view="chunked", chunk=CHUNK) if causal else dict(view="quadratic")
    do = cotangents.get("o")
    do = np.zeros(pq.shape[:3] + (v.shape[3],), dtype=dt) if do is None else np.asarray(do)
    dS = cotangents.get("S_last")
    du = cotangents.get("u_last")
    out: Dict[str, Any] = {}
    if normalize and conv["eps_mode"] == "key_sum":
        # o = num / den, num = unnormalized(phi_q, phi_k, v; S0), den = unnormalized(phi_q, phi_k, 1; u0) + eps sum phi_q
        eps = float(conv["eps"])
        num, _ = linear_attention(pq, pk, v, causal=causal, normalize=False, initial_state=S0,
                                  return_final_state=True, view="quadratic")
        ones = np.ones(pk.shape[:3] + (1,), dtype=dt)
        z0 = None if u0 is None else np.asarray(u0)[:, :, None, :]
        den, _ = linear_attention(pq, pk, ones, causal=causal, normalize=False, initial_state=z0,
                                  return_final_state=True, view="quadratic")
        den = den + dt.type(eps) * np.sum(pq, axis=-1, keepdims=True)
        o = num / den
        # dnum = do / den ;  dden = -(do . o) / den
        dnum = do / den
        dden = -np.sum(do * o, axis=-1, keepdims=True) / den
        gn = linear_attention_vjp(pq, pk, v, do=dnum, d_final_state=None if dS is None else np.asarray(dS),
                                  causal=causal, normalize=False, initial_state=S0, **view)
        gd = linear_attention_vjp(pq, pk, ones, do=dden,
                                  d_final_state=None if du is None else np.asarray(du)[:, :, None, :],
                                  causal=causal, normalize=False, initial_state=z0, **view)
        dq = gn["phi_q"] + gd["phi_q"] + dt.type(eps) * dden
        out = {"phi_q": dq, "phi_k": gn["phi_k"] + gd["phi_k"], "v": gn["v"]}
        if S0 is not None:
            out["S0"] = gn["initial_state"]
        if u0 is not None:
            out["u0"] = gd["initial_state"][:, :, 0, :]
    else:
        state = None
        if S0 is not None or u0 is not None:
            state = (S0, u0) if normalize else S0
        dfs = None
        if dS is not None or (normalize and du is not None):
            b, l, h, n = pq.shape
            e = v.shape[3]
            dS_ = np.zeros((b, h, e, n), dtype=dt) if dS is None else np.asarray(dS)
            if normalize:
                dfs = (dS_, np.zeros((b, h, n), dtype=dt) if du is None else np.asarray(du))
            else:
                dfs = dS_
        g = linear_attention_vjp(pq, pk, v, do=do, d_final_state=dfs, causal=causal, normalize=normalize,
                                 eps=float(conv["eps"]) if normalize else 0.0, eps_mode=conv["eps_mode"],
                                 state_layout="vk", initial_state=state, **view)
        out = {"phi_q": g["phi_q"], "phi_k": g["phi_k"], "v": g["v"]}
        if state is not None:
            if normalize:
                out["S0"], out["u0"] = g["initial_state"]
            else:
                out["S0"] = g["initial_state"]
        if not normalize:
            # the op's u_last = u0 + sum_j phi_k_j (refimpl carries no normalizer when unnormalized)
            if du is not None:
                out["phi_k"] = out["phi_k"] + np.asarray(du)[:, None].astype(out["phi_k"].dtype)
            if u0 is not None:
                out["u0"] = (np.zeros_like(np.asarray(u0)) if du is None else np.asarray(du)).astype(dt)
    # the scale on phi_q: d(phi_q) = scale d(phi_q scale)
    out["phi_q"] = out["phi_q"] * out["phi_q"].dtype.type(sc)
    return out


def linear_storing_vjp(inp, conv, cotangents, lowp):
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`), causal: the recurrent view step
    by step, the state ``(S_t, u_t)`` stored in ``lowp`` after every step of the forward scan and its adjoint
    ``(dS_t, du_t)`` after every step of the reverse scan (a loop in the dtype rounds its state every step); each
    step is this module's refimpl adapters (the op's ``reference`` forward and :func:`linear_reference_vjp`) on a
    one-step sequence with ``S0, u0 = S_t, u_t`` and the cotangents ``dS_last, du_last = dS_{t+1}, du_{t+1}``, in
    float32.  Non-causal attention is no scan (every output reads the one state of all keys): there the plain
    float32 backward stands (only its gradients rounded)."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan
    from oracles.verify.registry import get_op

    f = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
    cot = {k: f(v) for k, v in cotangents.items()}
    if not conv["causal"]:
        return linear_reference_vjp(inp, conv, cot)
    rnd = storer(lowp)
    fwd_ref = get_op(OP_LINEAR).reference
    pq, pk, v = (f(inp[k]) for k in ("phi_q", "phi_k", "v"))
    b, l, h, n = pq.shape
    e = v.shape[3]
    given = bool(conv["use_state"])
    cs = dict(conv, use_state=True)
    S0 = f(inp.get("S0")) if given else None
    u0 = f(inp.get("u0")) if given else None
    h0 = {"S0": np.zeros((b, h, e, n), np.float32) if S0 is None else S0,
          "u0": np.zeros((b, h, n), np.float32) if u0 is None else u0}
    do = rnd(cot["o"])
    dl = None
    if cot.get("S_last") is not None or cot.get("u_last") is not None:
        dl = {"S0": cot["S_last"] if cot.get("S_last") is not None else np.zeros_like(h0["S0"]),
              "u0": cot["u_last"] if cot.get("u_last") is not None else np.zeros_like(h0["u0"])}
    step = lambda t, st: {"phi_q": pq[:, t:t + 1], "phi_k": pk[:, t:t + 1], "v": v[:, t:t + 1], **st}  # noqa: E731

    def fwd(t, st):
        o = fwd_ref(step(t, st), cs)
        return {"S0": f(o["S_last"]), "u0": f(o["u_last"])}

    def vjp(t, st, dst):
        g = linear_reference_vjp(step(t, st), cs, {"o": do[:, t:t + 1], "S_last": dst["S0"], "u_last": dst["u0"]})
        return g, {"S0": g["S0"], "u0": g["u0"]}

    steps, d0 = storing_reverse_scan(l, h0, dl, fwd, vjp, lowp)
    out = {nm: concat_steps(steps, nm, 1, x.shape) for nm, x in (("phi_q", pq), ("phi_k", pk), ("v", v))}
    if S0 is not None:
        out["S0"] = d0["S0"]
    if u0 is not None:
        out["u0"] = d0["u0"]
    return out


def linear_reference_vjp_lowp(inp, conv, cotangents, lowp: Optional[str] = None):
    """:func:`linear_reference_vjp`; ``lowp`` (the harness's low-precision baseline): :func:`linear_storing_vjp`."""
    if lowp is not None:
        return linear_storing_vjp(inp, conv, cotangents, lowp)
    return linear_reference_vjp(inp, conv, cotangents)


register_grad(GradSpec(
    op=OP_LINEAR,
    wrt=LINEAR_WRT,
    forward=linear_grad_forward,
    bounds=linear_grad_bounds,
    cases=linear_grad_cases,
    reference_vjp=linear_reference_vjp_lowp,
    outputs=None,
    notes="forward: oracles.linear_grad_forward.linear_forward (dense float64); bounds: linear_vjp_bound (the adjoint's "
          "sums on absolute values, gamma_(2(n+l+p)+10)); eps a constant; clamp: d max(a, eps)/da = 1{a >= eps}; "
          "cases straddle a chunk of 64",
    module=__name__,
))


# ------------------------------------------------------------------ feature maps

def _away_from_kinks(x, floor=0.1):
    """``x`` with every entry at least ``floor`` from 0 (relu/elu kinks farther than any difference step)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, np.maximum(x, floor), np.minimum(x, -floor))


def _map_grad_cases(op, salt):
    def cases(conv) -> List[Case]:
        add = case_builder(op, map_sample, salt, conv)
        add("golden-small", "golden", "b=1, l=4, h=2, d=3", 1, l=4, b=1, h=2, d=3)
        add("edge-d1", "edge", "d = 1 (DPFP: the smallest d for nu)", 2, d=1, l=3)
        add("edge-L1", "edge", "L = 1", 3, l=1, d=4)
        add("edge-L0", "edge", "L = 0: empty gradient", 4, l=0, d=3)
        c = add("edge-very-negative", "edge", "x in [-40, -10]: phi = exp(x) tiny, its derivative too", 5, l=3, d=4)
        c.inputs["x"] = -10.0 - 30.0 * np.abs(c.inputs["x"]) / (1.0 + np.abs(c.inputs["x"]))
        for cs in add.cases:
            cs.inputs["x"] = _away_from_kinks(cs.inputs["x"])
        return add.cases

    return cases


def _feature_bounds(kind):
    def bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None):
        if cotangents is None or cotangents.get("phi") is None:
            d = np.shape(inp["x"])[-1]
            return {nm: componentwise_bound(magnitudes[nm], 4 * d + 8, dtype, oracle_dtype=None,
                                            what="|J|^T|w| stand-in: the harness passed no cotangent")
                    for nm in magnitudes}
        kw = {}
        if kind == "dpfp":
            kw["nu"] = int(conv["nu"])
        if kind == "performer":
            kw = dict(W=inp["W"], data_scale=conv["data_scale"], eps=float(conv["eps"]), stabilizer=conv["stabilizer"])
        k = conv["kind"] if kind == "performer" else kind
        out = feature_vjp_bound(inp["x"], k, cotangents["phi"], dtype, **kw)
        return {nm: b for nm, b in out.items() if nm in oracle_grads or nm in magnitudes}

    return bounds


def elu_grad_forward(inp, conv):
    return {"phi": feature_forward(inp["x"], "elu_plus_one")}


def dpfp_grad_forward(inp, conv):
    return {"phi": feature_forward(inp["x"], "dpfp", nu=int(conv["nu"]))}


class _StopOffsetForward:
    r"""The features with the stabilizer's offset held constant (``offset_grad="stop"``): ``phi(x, W) =
    (exp(z(x, W) - c_0) + eps)/sqrt(m)`` with ``c_0`` the offset at the *point of linearization* ``(x_0, W_0)``.

    The point is the first one the forward is called at, and every later call that moves more than one entry of
    the inputs or changes the conventions (a new point); a call that moves at most one entry is a difference step about the current point
    (:func:`oracles.gradients.fd_vjp` perturbs one real coordinate at a time, after evaluating the point itself;
    the harness evaluates the point first too), and keeps its ``c_0``.  The values at the point are the
    stabilized features themselves; their differences are the stop-gradient derivative.
    """

    def __init__(self):
        self._point = None
        self._key = None
        self._c0 = None

    @staticmethod
    def _moved(a, b) -> int:
        return sum(int(np.count_nonzero(np.asarray(a[k]) != np.asarray(b[k]))) if np.shape(a[k]) == np.shape(b[k])
                   else 10 ** 9 for k in ("x", "W"))

    def __call__(self, inp, conv):
        x = np.asarray(inp["x"], dtype=np.float64)
        W = np.asarray(inp["W"], dtype=np.float64)
        cur = {"x": x, "W": W}
        xs = x * x.shape[-1] ** -0.25 if conv["data_scale"] == "d^-1/4" else x
        key = (conv["kind"], conv["stabilizer"], conv["data_scale"])
        if self._point is None or self._key != key or self._moved(cur, self._point) > 1:
            # a new point of linearization (or other conventions): its offset c_0 is the constant
            self._point, self._key = {"x": x.copy(), "W": W.copy()}, key
            self._c0, _ = performer_offset(xs, W, conv["kind"], conv["stabilizer"])
        # the unstabilized features (offset none) times exp(-c_0), eps after the exponential
        phi0 = feature_forward(x, conv["kind"], W=W, data_scale=conv["data_scale"], eps=0.0, stabilizer="none")
        return {"phi": phi0 * np.exp(-self._c0) + float(conv["eps"]) / math.sqrt(phi0.shape[-1])}


_STOP_FORWARD = _StopOffsetForward()


def performer_grad_forward(inp, conv):
    """The features (:func:`oracles.linear_grad_forward.feature_forward`); under ``offset_grad="stop"`` (positive
    and hyperbolic features with a stabilizer) the offset held constant at the point (:class:`_StopOffsetForward`)."""
    if conv.get("offset_grad", "through") == "stop" and conv["kind"] != "trig" and conv["stabilizer"] != "none":
        return _STOP_FORWARD(inp, conv)
    return {"phi": feature_forward(inp["x"], conv["kind"], W=inp["W"], data_scale=conv["data_scale"],
                                   eps=float(conv["eps"]), stabilizer=conv["stabilizer"])}


def elu_reference_vjp(inp, conv, cotangents):
    from refimpl.attention.features import feature_map_vjp

    return feature_map_vjp(np.asarray(inp["x"]), "elu_plus_one", dphi=cotangents["phi"])


def dpfp_reference_vjp(inp, conv, cotangents):
    from refimpl.attention.features import feature_map_vjp

    return feature_map_vjp(np.asarray(inp["x"]), "dpfp", nu=int(conv["nu"]), dphi=cotangents["phi"])


def performer_reference_vjp(inp, conv, cotangents):
    """refimpl's feature VJP under the op's conventions (module docstring)."""
    from refimpl.attention.features import feature_map, feature_map_vjp

    x = np.asarray(inp["x"])
    W = np.asarray(inp["W"]).astype(x.dtype)
    dphi = np.asarray(cotangents["phi"])
    r = x.dtype.type(x.shape[-1] ** -0.25) if conv["data_scale"] == "d^-1/4" else x.dtype.type(1.0)
    xs = x * r
    kind, st = conv["kind"], conv["stabilizer"]
    if conv.get("offset_grad", "through") == "stop" and kind != "trig" and st != "none":
        # offset_grad = stop: c is a constant -- the unstabilized VJP of dphi exp(-c), no offset adjoint
        c, _ = performer_offset(np.asarray(xs, dtype=np.float64), np.asarray(W, dtype=np.float64), kind, st)
        g = feature_map_vjp(xs, kind, W=W, dphi=dphi * np.exp(-c).astype(x.dtype))
    elif st in ("none", "row_max", "global_max"):
        g = feature_map_vjp(xs, kind, W=W, dphi=dphi, stabilizer=st)
    else:
        # phi~ = phi(x) exp(-c), c = a max of W x (row or head): the unstabilized VJP of dphi exp(-c) plus the
        # offset's adjoint dc = -sum dphi phi~ at the argmax of W x (dc/dx = w_i, dc/dW_i = x)
        wx = np.asarray(xs @ W.T, dtype=np.float64)
        m = W.shape[0]
        wxx = np.concatenate([wx, -wx], axis=-1) if kind == "hyperbolic" else wx
        c, _ = performer_offset(np.asarray(xs, dtype=np.float64), np.asarray(W, dtype=np.float64), kind, st)
        scale_c = np.exp(-c).astype(x.dtype)
        g = feature_map_vjp(xs, kind, W=W, dphi=dphi * scale_c)
        phit = feature_map(xs, kind, W=W) * scale_c
        dc = -np.sum(dphi * phit, axis=-1)  # (b l h)
        gx, gW = g["x"].copy(), g["W"].copy()
        if st == "row_max_wx":
            idx = np.argmax(wxx, axis=-1)
            for pos in np.ndindex(idx.shape):
                i = int(idx[pos])
                sign, row = (1.0, i) if i < m else (-1.0, i - m)
                gx[pos] += dc[pos] * sign * W[row]
                gW[row] += dc[pos] * sign * xs[pos]
        else:
            b, l, h, _ = wxx.shape
            for bi in range(b):
                for hi in range(h):
                    blk = wxx[bi, :, hi, :]
                    if blk.size == 0:
                        continue
                    t, i = np.unravel_index(int(np.argmax(blk)), blk.shape)
                    total = float(np.sum(dc[bi, :, hi]))
                    sign, row = (1.0, i) if i < m else (-1.0, i - m)
                    gx[bi, t, hi] += total * sign * W[row]
                    gW[row] += total * sign * xs[bi, t, hi]
        g = {"x": gx, "W": gW}
    return {"x": g["x"] * r, "W": g["W"]}


def _performer_grad_cases(conv) -> List[Case]:
    add = case_builder(OP_PERFORMER, performer_sample, 2147, conv)
    add("golden-small", "golden", "b=1, l=4, h=2, d=3, m=5", 1, l=4, b=1, h=2, d=3, m=5)
    add("edge-one-feature", "edge", "m = 1, d = 1", 2, m=1, d=1, l=3)
    add("edge-L1", "edge", "L = 1, b = 2", 3, l=1, b=2, h=1, d=4, m=6)
    c = add("edge-large-x", "edge", "|x| ~ 1.5: larger exponents (the offset matters)", 4, l=3, b=1, h=1, d=4, m=6)
    c.inputs["x"] = c.inputs["x"] * 3.0
    return add.cases


register_grad(GradSpec(
    op=OP_ELU, wrt=("x",), forward=elu_grad_forward, bounds=_feature_bounds("elu_plus_one"),
    cases=_map_grad_cases(OP_ELU, 2143), reference_vjp=elu_reference_vjp, outputs=("phi",),
    notes="forward: oracles.linear_grad_forward.feature_forward; phi' = 1 (x >= 0), exp(x) (x < 0); bound gamma_3",
    module=__name__))

register_grad(GradSpec(
    op=OP_DPFP, wrt=("x",), forward=dpfp_grad_forward, bounds=_feature_bounds("dpfp"),
    cases=_map_grad_cases(OP_DPFP, 2145), reference_vjp=dpfp_reference_vjp, outputs=("phi",),
    notes="forward: oracles.linear_grad_forward.feature_forward; relu'(0) = 0 (cases keep |x| >= 0.1); "
          "bound gamma_(2 nu + 1) on dr's products",
    module=__name__))

register_grad(GradSpec(
    op=OP_PERFORMER, wrt=("x", "W"), forward=performer_grad_forward, bounds=_feature_bounds("performer"),
    cases=_performer_grad_cases, reference_vjp=performer_reference_vjp, outputs=("phi",),
    notes="forward: oracles.linear_grad_forward.feature_forward; the stabilizer's max differentiated THROUGH (the "
          "features' derivative) by default; offset_grad='stop' holds it constant at the point (performer-pytorch's "
          ".detach(), which deviates from 'through' by -(sum dphi phi) dc/dx)",
    module=__name__))
