r"""Gradient checks (``refimpl verify --grad``) of the efficient-attention ops: ``attention.linformer``,
``attention.aft``, ``attention.gau`` (GAU and FLASH) and ``attention.lsh`` (buckets fixed).

Ground truth: the dense float64 forwards of :mod:`oracles.efficient_grad_forward` (written from the papers,
never refimpl), differentiated elementwise by :func:`oracles.gradients.fd_vjp`.

The bounds (:func:`_bound`): a backward computed in ``dtype`` is within ``gamma_D(dtype) M`` of the exact gradient
(first order), ``M`` the adjoint on absolute values (``*_adjoint_magnitude`` in :mod:`oracles.efficient_grad_forward`;
the ``|J|^T |w|`` of the differences is smaller where the adjoint cancels), and the depth

    D = D_fwd (2 spread + 3) + D_bwd

counted from the adjoint equations: ``D_fwd`` the roundings of the recomputed forward quantities each gradient
term multiplies (the projections, scores, the ``exp`` at :data:`oracles.tolerance.TRANSCENDENTAL_U` ulps, the
softmax's sums), amplified as in :func:`oracles.linformer.linformer_bound` by ``2 spread + 3`` where an ``exp``
of a score takes the score's absolute error as a relative error (``spread`` = the largest kept ``|score|``;
GAU has no exp of a score: its ``relu^2`` doubles the relative error, factor 2); ``D_bwd`` the longest chain of
roundings of the adjoint sums (each length-``m`` sum ``gamma_m``, each product ``u``).  The harness adds the
differences' own error (:class:`oracles.gradients.FDGrad` ``error``).

LSH: hashing is piecewise constant, its derivative zero almost everywhere; the check differentiates with the
buckets fixed (an input).  A zero ``qk`` vector is not differentiable through its normalization (``x / ||x||`` has
no limit at 0): no case has one.  AFT's large-key case (``|K| ~ 1000``) is a forward check only: a difference step
relative to ``|K|`` moves the softmax by ``e^{~1}``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from oracles.efficient_grad_forward import (aft_adjoint_magnitude, aft_dense, gau_adjoint_magnitude, gau_dense,
                                            linformer_adjoint_magnitude, linformer_dense, lsh_adjoint_magnitude,
                                            lsh_dense, lsh_keep)
from oracles.tolerance import TRANSCENDENTAL_U, Bound, componentwise_bound
from oracles.verify import ops_aft, ops_gau, ops_linformer, ops_lsh
from oracles.verify.registry import GradSpec, case_builder, get_op, register_grad

__all__ = ["linformer_depth", "aft_depth", "gau_depth", "lsh_depth", "mega_depth"]


def _bound(magnitude: np.ndarray, depth: float, dtype, what: str) -> Bound:
    return componentwise_bound(magnitude, depth, dtype, oracle_dtype=None, what=what)


def _bounds_of(M_abs, magnitudes, D, dtype, what):
    """``{input: gamma_D M}`` with ``M`` the absolute-value adjoint (cotangents given) or, when the harness passes
    no cotangents, the differences' ``|J|^T |w|`` (smaller where the adjoint cancels: the weaker fallback)."""
    out = {}
    for x, M in M_abs.items():
        if M is None:
            M = magnitudes[x]
        out[x] = _bound(M, D, dtype, f"{what}: gamma_D |adjoint| with D = {D:.4g} (oracles/verify/grad_efficient.py)"
                        + ("" if M_abs[x] is not None else "; |J|^T|w| in place of the absolute adjoint (no cotangents)"))
    return out


def _no_cotangent(names):
    return {x: None for x in names}


# ------------------------------------------------------------------------------------------ Linformer

def linformer_depth(b, l, s, h, n, p, r, spread, shared) -> float:
    r"""``D_fwd = s + n + r + 5 + TRANSCENDENTAL_U`` (the projection, the score, the softmax's sum and division,
    the exp); ``D_bwd``: ``dP`` (``p``), ``D`` (``r``), ``dS`` (2), ``dq`` (``r``), ``dK_bar`` (``l``), ``dk`` (``r``),
    ``dE`` (``b n``, times ``h`` when shared), the values alike (``p``), plus 4 scalings."""
    fwd = s + n + r + 5 + TRANSCENDENTAL_U
    bwd = p + 3 * r + l + 2 + b * max(n, p) * (h if shared else 1) + 4
    return fwd * (2.0 * spread + 3.0) + bwd


def _lin_scale(conv, n):
    return ops_linformer._scale(conv, n)


def _lin_forward(inp, conv):
    q = np.asarray(inp["q"], dtype=np.float64)
    return {"o": linformer_dense(q, inp["k"], inp["v"], inp["E"], inp["F"], _lin_scale(conv, q.shape[3]))}


def _lin_bounds(inp, oracle_grads, conv, dtype, magnitudes=None, cotangents=None):
    q = np.asarray(inp["q"], dtype=np.float64)
    b, l, h, n = q.shape
    s, p = np.shape(inp["k"])[1], np.shape(inp["v"])[3]
    r = np.shape(inp["E"])[-2]
    do = cotangents["o"] if cotangents is not None else np.zeros((b, l, h, p))
    M, spread = linformer_adjoint_magnitude(q, inp["k"], inp["v"], inp["E"], inp["F"], _lin_scale(conv, n), do)
    D = linformer_depth(b, l, s, h, n, p, r, spread, np.ndim(inp["E"]) == 2)
    return _bounds_of(M if cotangents is not None else _no_cotangent(M), magnitudes, D, dtype, "Linformer backward")


def _lin_vjp(inp, conv, cot):
    from refimpl.attention.linformer import linformer_attention_vjp

    return linformer_attention_vjp(inp["q"], inp["k"], inp["v"], inp["E"], inp["F"], do=cot["o"],
                                   scale=conv["scale"])


def _lin_cases(conv) -> List:
    add = case_builder(ops_linformer.OP, ops_linformer.sample, 1401, conv)
    add("golden-small", "golden", "b=1, l=s=5, h=2, n=3, p=2, r=3", 1, l=5, s=5, r=3, b=1, h=2, n=3, p=2)
    add("edge-L1", "edge", "one query, one key, r = 1", 2, l=1, s=1, r=1)
    add("edge-L0", "edge", "l = s = 0: empty gradients of q, k, v; dE = dF = 0 (r 0)", 3, l=0, s=0, r=2)
    add("edge-r0", "edge", "r = 0: o = 0, every gradient 0", 4, l=4, s=4, r=0, b=1)
    add("edge-l-ne-s", "edge", "l = 4 queries, s = 7 keys, r = 3", 5, l=4, s=7, r=3, b=1, h=1)
    add("edge-r-gt-l", "edge", "r = 6 > l = s = 3", 6, l=3, s=3, r=6, b=1, h=1, n=2, p=2)
    c = add("edge-large-scores", "edge", "scores of size ~20: the softmax nearly one-hot", 7, l=4, s=4, r=3, b=1, h=1,
            n=2, p=2)
    c.inputs["q"] = c.inputs["q"] * 4.0
    return add.cases


register_grad(GradSpec(
    op=ops_linformer.OP,
    wrt=("q", "k", "v", "E", "F"),
    forward=_lin_forward,
    bounds=_lin_bounds,
    cases=_lin_cases,
    reference_vjp=_lin_vjp,
    outputs=("o",),
    module=__name__,
    notes="oracle: dense float64 Linformer (oracles.efficient_grad_forward) by fd_vjp; bound gamma_D |adjoint| "
          "(D counted from the adjoint equations, amplified by the score spread)",
))


# ------------------------------------------------------------------------------------------ AFT

def aft_depth(b, l, d, spread) -> float:
    r"""``D_fwd = l + 4 + TRANSCENDENTAL_U`` (the logit, the shift, the exp, the softmax's sum and division);
    ``D_bwd``: the sigmoid (11), ``dA`` (1), ``dQ`` (3), ``dV`` (``l``), ``dS`` (3), ``dK`` (``l``), ``dw`` (``b d``)."""
    fwd = l + 4 + TRANSCENDENTAL_U
    bwd = 11 + 1 + 3 + 2 * l + 3 + b * d
    return fwd * (2.0 * spread + 3.0) + bwd


def _aft_args(inp, conv):
    window = ops_aft._window(conv)
    if window is not None and conv["causal"]:
        window = (window[0], 0)
    return dict(variant=conv["variant"], causal=bool(conv["causal"]), window=window)


def _aft_forward(inp, conv):
    return {"y": aft_dense(inp["q"], inp["k"], inp["v"], ops_aft._w(inp, conv), **_aft_args(inp, conv))}


def _aft_bounds(inp, oracle_grads, conv, dtype, magnitudes=None, cotangents=None):
    b, l, d = np.shape(inp["q"])
    dy = cotangents["y"] if cotangents is not None else np.zeros((b, l, d))
    M, spread = aft_adjoint_magnitude(inp["q"], inp["k"], inp["v"], ops_aft._w(inp, conv), dy, **_aft_args(inp, conv))
    D = aft_depth(b, l, d, spread)
    return _bounds_of(M if cotangents is not None else _no_cotangent(M), magnitudes, D, dtype, "AFT backward")


def _aft_vjp(inp, conv, cot):
    from refimpl.attention.aft import aft_attention_vjp

    return aft_attention_vjp(inp["q"], inp["k"], inp["v"], ops_aft._w(inp, conv), dy=cot["y"],
                             **_aft_args(inp, conv))


def _aft_cases(conv) -> List:
    add = case_builder(ops_aft.OP, ops_aft.sample, 1402, conv)
    add("golden-small", "golden", "b=1, l=5, d=2", 1, l=5, b=1, d=2)
    add("edge-L0", "edge", "L = 0: empty gradients", 2, l=0)
    add("edge-L1", "edge", "L = 1: y = sigmoid(q) v (dk = 0)", 3, l=1)
    add("edge-odd", "edge", "l = 7 (odd), b = 2", 4, l=7, b=2, d=2)
    add("edge-window-edges", "edge", "l = 9: queries near both ends of the sequence and of the window", 5, l=9, b=1,
        d=2)
    c = add("edge-spread-keys", "edge", "keys of size ~6: nearly one-hot softmaxes", 6, l=6, b=1, d=2)
    c.inputs["k"] = c.inputs["k"] * 4.0
    return add.cases


register_grad(GradSpec(
    op=ops_aft.OP,
    wrt=("q", "k", "v", "w"),
    forward=_aft_forward,
    bounds=_aft_bounds,
    cases=_aft_cases,
    reference_vjp=_aft_vjp,
    outputs=("y",),
    module=__name__,
    notes="oracle: dense float64 AFT (kept/biased keys from the paper's conditions; oracles.efficient_grad_forward) "
          "by fd_vjp; w absent for AFT-simple; dw = 0 where w does not enter",
))


# ------------------------------------------------------------------------------------------ GAU / FLASH

def gau_depth(b, l, d, p, n, rows) -> float:
    r"""``D_fwd = d + 12`` (a projection and SiLU) ``+ n + 3`` (scale/offset and score, the bias) ``+ 1`` (relu^2),
    doubled by the square, ``+ l + p + 2`` (``A V``, the gate, ``W_o``); ``D_bwd``: ``dY`` (``d``), ``dW_o`` (``b l``),
    ``dA`` (``p``), ``dV`` (``l``), ``dS`` (2), ``dQ_r`` (``l``), the linear part (``l`` more), ``dZ`` (``rows``),
    ``dgamma`` (``b l``), ``dH`` (4), ``dW`` (``b l``), ``dx`` (``2 p + n``)."""
    fwd = 2.0 * (d + 12 + n + 3 + 1) + l + p + 2
    bwd = d + 3 * b * l + p + 3 * l + 2 + rows + 4 + 2 * p + n + 4
    return fwd + bwd


def _gau_kw(conv):
    c = ops_gau._chunk(conv)
    return dict(chunk=c, causal=bool(conv["causal"]), scaling=conv["scaling"], last_chunk=conv["last_chunk"])


def _gau_bias(inp, conv):
    return inp.get("bias") if conv["use_bias"] else None


_GAU_W = ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o")


def _gau_forward(inp, conv):
    return {"o": gau_dense(*(inp[k] for k in _GAU_W), bias=_gau_bias(inp, conv), **_gau_kw(conv))}


def _gau_bounds(inp, oracle_grads, conv, dtype, magnitudes=None, cotangents=None):
    b, l, d = np.shape(inp["x"])
    p, n = np.shape(inp["W_u"])[1], np.shape(inp["W_z"])[1]
    do = cotangents["o"] if cotangents is not None else np.zeros((b, l, d))
    M, _ = gau_adjoint_magnitude(*(inp[k] for k in _GAU_W), do, bias=_gau_bias(inp, conv), **_gau_kw(conv))
    D = gau_depth(b, l, d, p, n, np.shape(inp["gamma"])[0])
    return _bounds_of(M if cotangents is not None else _no_cotangent(M), magnitudes, D, dtype, "GAU/FLASH backward")


def _gau_vjp(inp, conv, cot):
    from refimpl.attention.gau import gated_attention_unit_vjp, mixed_chunk_attention_vjp

    kw = _gau_kw(conv)
    arrays = [inp[k] for k in _GAU_W]
    bias = _gau_bias(inp, conv)
    if kw["chunk"] is None:
        n = np.shape(inp["W_z"])[1]
        scale = (1.0 / math.sqrt(n) if n else 1.0) if kw["scaling"] == "rsqrt_n" else None
        return gated_attention_unit_vjp(*arrays, do=cot["o"], causal=kw["causal"], bias=bias, scale=scale)
    if kw["scaling"] != "paper" or kw["last_chunk"] != "c":
        raise ValueError("reference_vjp: refimpl's FLASH computes the paper's scalings (scaling='paper', "
                         "last_chunk='c') only")
    return mixed_chunk_attention_vjp(*arrays, do=cot["o"], chunk=kw["chunk"], causal=kw["causal"], bias=bias)


def _gau_cases(conv) -> List:
    add = case_builder(ops_gau.OP, ops_gau.sample, 1403, conv)
    c = ops_gau._chunk(conv)
    add("golden-small", "golden", "b = 1, l = 5, d = 3, p = 2, n = 2", 1, l=5, b=1, d=3, p=2, n=2)
    add("edge-L0", "edge", "L = 0: dx empty, every weight's gradient 0", 2, l=0, b=1)
    add("edge-L1", "edge", "L = 1", 3, l=1, b=1, d=2, p=2, n=2)
    if c is not None:
        add("edge-chunk-1", "edge", "L = c - 1: one short chunk", 4, l=max(c - 1, 1), b=1, d=2, p=2, n=2)
        add("edge-chunk+1", "edge", "L = c + 1: a chunk and a one-position last chunk", 5, l=c + 1, b=1, d=2, p=2,
            n=2)
        add("edge-short-last", "edge", "L = 2c + 1: the last chunk short", 6, l=2 * c + 1, b=1, d=2, p=2, n=2)
    add("edge-odd", "edge", "L = 7, b = 2", 7, l=7, b=2, d=2, p=2, n=2)
    return add.cases


register_grad(GradSpec(
    op=ops_gau.OP,
    wrt=("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o", "bias"),
    forward=_gau_forward,
    bounds=_gau_bounds,
    cases=_gau_cases,
    reference_vjp=_gau_vjp,
    outputs=("o",),
    module=__name__,
    notes="oracle: dense float64 GAU / FLASH (pairs and scales from oracles.gau; oracles.efficient_grad_forward) "
          "by fd_vjp; relu^2's derivative 2 relu(s) (a kink at s = 0: no case puts a score within a step of 0 "
          "except by chance, which the differences' error estimate shows)",
))


# ------------------------------------------------------------------------------------------ LSH

def lsh_depth(l, n, p, r, spread) -> float:
    r"""``D_fwd = 2 n + 4`` (the norm, its sqrt and the division, the score) ``+ l + 3 + TRANSCENDENTAL_U`` (the
    softmax over at most ``l`` kept keys) ``+ r`` (the rounds' combination); ``D_bwd``: ``dv`` (``r l``), ``D``
    (``p``), ``ds`` (``p + 2``, ``r`` rounds summed), ``dq`` / ``dk`` (``l``), the normalization's adjoint
    (``n + 3``)."""
    fwd = 2 * n + 4 + l + 3 + TRANSCENDENTAL_U + r
    bwd = r * l + p + p + 2 + r + l + n + 3
    return fwd * (2.0 * spread + 3.0) + bwd


def _lsh_parts(inp, conv):
    qk = np.asarray(inp["qk"], dtype=np.float64)
    keep = lsh_keep(inp["buckets"], int(conv["chunk"]), causal=bool(conv["causal"]), wrap=bool(conv["wrap"]),
                    self_rule=conv["self_rule"])
    return qk, keep, ops_lsh._scale(conv, qk.shape[3])


def _lsh_forward(inp, conv):
    qk, keep, sc = _lsh_parts(inp, conv)
    return {"o": lsh_dense(qk, inp["v"], keep, sc, conv["self_rule"])}


def _lsh_bounds(inp, oracle_grads, conv, dtype, magnitudes=None, cotangents=None):
    qk, keep, sc = _lsh_parts(inp, conv)
    b, l, h, n = qk.shape
    p, r = np.shape(inp["v"])[3], np.shape(inp["buckets"])[3]
    do = cotangents["o"] if cotangents is not None else np.zeros((b, l, h, p))
    M, spread = lsh_adjoint_magnitude(qk, inp["v"], keep, sc, do, conv["self_rule"])
    D = lsh_depth(l, n, p, r, spread)
    return _bounds_of(M if cotangents is not None else _no_cotangent(M), magnitudes, D, dtype,
                      "LSH backward (buckets fixed)")


def _lsh_vjp(inp, conv, cot):
    from refimpl.attention.lsh import lsh_attention_vjp

    if conv["self_rule"] != "exclude":
        raise ValueError("self_rule: refimpl implements 'exclude' only")
    return lsh_attention_vjp(inp["qk"], inp["v"], do=cot["o"], buckets=np.asarray(inp["buckets"]).astype(np.int64),
                             chunk=int(conv["chunk"]), causal=bool(conv["causal"]), wrap=bool(conv["wrap"]),
                             scale=conv["scale"])


def _lsh_cases(conv) -> List:
    add = case_builder(ops_lsh.OP, ops_lsh.sample, 1404, conv, prepare=ops_lsh._prepare)
    add("golden-small", "golden", "b=1, l=7, h=2, n=3, p=2, 3 buckets", 1, l=7, b=1, h=2, n=3, p=2, n_buckets=3)
    add("edge-L0", "edge", "L = 0: empty gradients", 2, l=0)
    add("edge-L1", "edge", "L = 1: o = v (nothing but self), dqk = 0", 3, l=1)
    add("edge-odd", "edge", "L = 11, the last chunk short", 4, l=11, b=1, h=1, n=3, p=2)
    add("edge-one-bucket", "edge", "every position in bucket 0: the chunks alone decide", 5, l=9, b=1, h=1, n=2, p=2,
        one_bucket=True)
    add("edge-distinct", "edge", "every position alone in its bucket: o_i = v_i, dqk = 0", 6, l=6, b=1, h=1,
        distinct=True)
    return add.cases


register_grad(GradSpec(
    op=ops_lsh.OP,
    wrt=("qk", "v"),
    forward=_lsh_forward,
    bounds=_lsh_bounds,
    cases=_lsh_cases,
    reference_vjp=_lsh_vjp,
    outputs=("o",),
    module=__name__,
    notes="buckets fixed (hashing is piecewise constant: its gradient is zero almost everywhere); oracle: dense "
          "float64 softmax over the kept keys of oracles.lsh.keep_and_counts (oracles.efficient_grad_forward) by "
          "fd_vjp, through the key normalization; no zero qk vector (not differentiable there)",
))


# ------------------------------------------------------------------------------------------ Mega

def mega_depth(b, l, d, e, n, p, spread, attention) -> float:
    r"""``D_fwd``: the EMA (``3 l + e``: three roundings a step carried over ``l`` steps, then ``eta^T h``), a
    projection and SiLU (``d + 12``, twice: ``Z`` and the gates), the score (``n + 3``), the attention function (the
    softmax's ``l + 3 + TRANSCENDENTAL_U`` / laplace's erf ``TRANSCENDENTAL_U`` / relu^2's square), ``O`` (``l``), the
    candidate (``p + d + 12``), the output (3); an exp or erf of a score amplified by ``2 spread + 3`` (relu^2: 2).
    ``D_bwd``: the EMA's reverse scan (``3 l + e``) and its parameter sums (``b l``), the weights' sums (``b l``),
    the attention's (``2 l + p + 4``), the projections' (``d + n + p + 12``)."""
    fwd_base = 3 * l + e + 2 * (d + 12) + p + d + 12 + 3
    att = n + 3 + l + (l + 3 + TRANSCENDENTAL_U if attention != "relu2" else 1)
    fwd = fwd_base + att * ((2.0 * spread + 3.0) if attention != "relu2" else 2.0)
    bwd = 3 * l + e + 2 * b * l + 2 * l + p + 4 + d + n + p + 12
    return fwd + bwd


def _mega_parts(inp, conv):
    from oracles.verify import ops_mega

    x = ops_mega._claimed(inp, conv)
    return x, ops_mega._params(x), ops_mega._options(conv)


def _mega_forward(inp, conv):
    from oracles.mega import mega_layer_dense

    x, P, opts = _mega_parts(inp, conv)
    return {"y": mega_layer_dense(x["x"], P, **opts)}


def _mega_bounds(inp, oracle_grads, conv, dtype, magnitudes=None, cotangents=None):
    from oracles.efficient_grad_forward import mega_adjoint_magnitude

    x, P, opts = _mega_parts(inp, conv)
    b, l, d = np.shape(x["x"])
    e, n, p = np.shape(P["alpha"])[1], np.shape(P["W_z"])[1], np.shape(P["W_v"])[1]
    dy = cotangents["y"] if cotangents is not None else np.zeros((b, l, d))
    M, spread = mega_adjoint_magnitude(x["x"], P, dy, **opts)
    D = mega_depth(b, l, d, e, n, p, spread, opts["attention"])
    return _bounds_of(M if cotangents is not None else _no_cotangent(M), magnitudes, D, dtype, "Mega backward")


def _mega_vjp(inp, conv, cot):
    from refimpl.attention.mega import mega_layer_vjp

    x, P, opts = _mega_parts(inp, conv)
    return mega_layer_vjp(x["x"], **P, dy=cot["y"], **opts)


def _mega_cases(conv) -> List:
    from oracles.verify import ops_mega

    add = case_builder(ops_mega.OP, ops_mega.sample, 1405, conv)
    add("golden-small", "golden", "b=1, l=5, d=3, e=2, n=2, p=2", 1, l=5, b=1, d=3, e=2, n=2, p=2)
    add("edge-L0", "edge", "L = 0: dx empty, every parameter's gradient 0", 2, l=0, b=1, d=2, e=1, n=1, p=1)
    add("edge-L1", "edge", "L = 1", 3, l=1, b=1, d=2, e=2, n=2, p=1)
    c = int(conv["chunk"] or 0)
    if c:
        add("edge-chunk+1", "edge", "L = c + 1: a chunk and a one-position last chunk", 4, l=c + 1, b=1, d=2, e=1,
            n=2, p=2)
    add("edge-odd", "edge", "L = 7 (the EMA's reverse scan over 7 steps)", 5, l=7, b=1, d=2, e=1, n=1, p=1)
    return add.cases


def _register_mega():
    from oracles.verify import ops_mega

    names = tuple(a.name for a in get_op(ops_mega.OP).inputs)
    register_grad(GradSpec(
        op=ops_mega.OP,
        wrt=names,
        forward=_mega_forward,
        bounds=_mega_bounds,
        cases=_mega_cases,
        reference_vjp=_mega_vjp,
        outputs=("y",),
        module=__name__,
        notes="oracle: oracles.mega.mega_layer_dense (float64) by fd_vjp; bound gamma_D on the adjoint on absolute "
              "values (oracles.efficient_grad_forward.mega_adjoint_magnitude); the EMA's adjoint a reverse scan",
    ))


_register_mega()
