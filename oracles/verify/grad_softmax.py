r"""The gradient check of op ``attention.softmax`` (``refimpl verify attention.softmax CANDIDATE --grad``).

Differentiable canonical inputs: ``q``, ``k``, ``v``, ``bias`` (``use_bias``) and ``alibi_slopes`` (``use_alibi``);
``key_padding_mask`` is boolean (no gradient).  **ALiBi slopes are differentiable here**: the loss depends on them
through the bias ``-slope_x |i + lk - lq - j|``, so ``dslope_x = -sum_{i,j} |i + lk - lq - j| dS_xij`` (summed over
the batch when the slopes are ``(h)``).  FlashAttention treats the slopes as constants and returns no gradient for
them; a candidate that returns none for an input is judged by the harness's rule for missing gradients.

* forward: :func:`oracles.softmax_grad_forward.sdpa_forward` (float64, ``p = exp(s - logsumexp(s))``), with the keep
  mask of the conventions (causal alignment, FlashAttention's window, key padding) built by
  :func:`oracles.verify.ops_attention.window_keep`; grouped key/value heads expanded as FlashAttention / torch.
* bounds: :func:`oracles.softmax_grad_forward.softmax_vjp_bound` (the rounding of a backward pass in the candidate's
  dtype: P, dS = P o (dP - D), the products; derived in that module's docstring), which needs the cotangent ``do``;
  without it (a harness that passes no cotangents) ``componentwise_bound(|J|^T|w|, depth)`` stands in (stated).
* cases: L = 0, L = 1, odd L, lq != lk both ways (bottom-right causal leaves rows empty: zero gradient), large
  scores, the optional inputs present; each under ~1500 input elements.
* reference_vjp: :func:`refimpl.attention.softmax.scaled_dot_product_attention_vjp` (materialized), k/v expanded to
  h heads and their gradients summed back over each group, the window and key padding as its boolean mask, ALiBi
  folded into its bias (``dslope`` from ``dbias``); no softcap (refused).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from oracles.softmax_grad_forward import alibi, expand_heads, sdpa_forward, softmax_vjp_bound
from oracles.tolerance import componentwise_bound
from oracles.verify.ops_attention import OP_SOFTMAX, _scale, softmax_sample, window_keep
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

WRT = ("q", "k", "v", "bias", "alibi_slopes")


def keep_of(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> np.ndarray:
    """The keep mask ``(b|1, 1, lq, lk)``: causal alignment, window, key padding (when claimed)."""
    lq, lk = np.shape(inp["q"])[1], np.shape(inp["k"])[1]
    keep = window_keep(lq, lk, conv["causal"], int(conv["window_left"]), int(conv["window_right"]))[None, None]
    kpm = inp.get("key_padding_mask") if conv["use_key_padding_mask"] else None
    if kpm is not None:
        keep = keep & np.asarray(kpm, dtype=bool)[:, None, None, :]
    return keep


def _optional(inp, conv):
    bias = inp.get("bias") if conv["use_bias"] else None
    slopes = inp.get("alibi_slopes") if conv["use_alibi"] else None
    return bias, slopes


def grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"o": o}`` in float64 (the ground truth that :mod:`oracles.gradients` differentiates)."""
    bias, slopes = _optional(inp, conv)
    d = np.shape(inp["q"])[3]
    return {"o": sdpa_forward(inp["q"], inp["k"], inp["v"], _scale(conv, d), keep_of(inp, conv), bias, slopes,
                              softcap=float(conv["softcap"]))}


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents: Optional[Mapping[str, Any]] = None):
    """Each gradient's derived bound in ``dtype`` (module docstring)."""
    bias, slopes = _optional(inp, conv)
    q = np.asarray(inp["q"], dtype=np.float64)
    b, lq, h, d = q.shape
    lk, e = np.shape(inp["k"])[1], np.shape(inp["v"])[3]
    if cotangents is None or cotangents.get("o") is None:
        depth = d + e + lq + lk + 20
        return {nm: componentwise_bound(magnitudes[nm], depth, dtype, oracle_dtype=None,
                                        what="|J|^T|w| stand-in: the harness passed no cotangent")
                for nm in magnitudes}
    out = softmax_vjp_bound(q, inp["k"], inp["v"], cotangents["o"], _scale(conv, d), dtype, keep_of(inp, conv),
                            bias, slopes, softcap=float(conv["softcap"]))
    return {nm: bnd for nm, bnd in out.items() if nm in oracle_grads or nm in magnitudes}


def _sample(rng, conv, **sizes):
    return softmax_sample(rng, conv, **sizes)


def grad_cases(conv) -> List[Case]:
    add = case_builder(OP_SOFTMAX, _sample, 1041, conv)
    small = dict(b=1, h=2, d=3, e=2)
    if conv["grouped_kv"]:
        small = dict(b=1, h=4, g=2, d=2, e=2)
    add("golden-square", "golden", "lq = lk = 4", 1, lq=4, lk=4, **small)
    add("edge-L0", "edge", "lq = lk = 0: empty gradients", 2, lq=0, lk=0, **small)
    add("edge-L1", "edge", "a single query and key", 3, lq=1, lk=1, **small)
    add("edge-odd", "edge", "lq = lk = 5 (odd)", 4, lq=5, lk=5, b=2, h=1, d=2, e=2)
    add("edge-lq-gt-lk", "edge", "lq = 5 > lk = 3: bottom-right causal leaves the first rows empty (zero gradient)",
        5, lq=5, lk=3, **small)
    add("edge-lq-lt-lk", "edge", "lq = 2 < lk = 6 (decoding with a KV cache): the alignments differ", 6, lq=2, lk=6,
        **small)
    # scores of size ~15 (q, k x 2.5): large enough to need the max subtraction, small enough that every weight
    # stays above ~1e-13, so that a perturbation of its score moves the float64 outputs (a weight below the outputs'
    # resolution leaves them bit for bit alike, which the differences read as "no dependence")
    c = add("edge-large-scores", "edge", "scores of size ~15: the softmax nearly saturates", 7, lq=4, lk=4, b=1,
            h=1, d=2, e=2)
    c.inputs["q"] = c.inputs["q"] * 2.5
    c.inputs["k"] = c.inputs["k"] * 2.5
    add("edge-block+1", "edge", "lq = lk = 9: one past an 8-wide tile", 8, lq=9, lk=9, b=1, h=1, d=2, e=2)
    return add.cases


def _fold(g: np.ndarray, groups: int) -> np.ndarray:
    """``(b s h .) -> (b s g .)``: the gradients of the query heads that read one key/value head, summed."""
    b, s, h, x = g.shape
    return g.reshape(b, s, h // groups, groups, x).sum(axis=3)


def storing_sdpa_vjp(q, k, v, bias, keep, scale, do, lowp):
    r"""The materialized softmax-attention backward with the stores of a ``lowp`` kernel rounded (the baseline of
    ``verify --grad`` in float16/bfloat16; :mod:`oracles.verify._lowp_storage`).  ``(b l h .)`` layout, ``k``, ``v``
    already expanded to ``h`` heads, ``bias (b h lq lk)`` or ``None``, ``keep`` broadcastable to ``(b 1 lq lk)``.

    Float32 arithmetic; rounded to ``lowp`` where FlashAttention's backward (and torch's math path) store:

        S = scale Q K^T + bias (masked: -inf);  P = rnd(exp(S - logsumexp S))     (the recomputed P, stored)
        O = rnd(P V)                                                            (the saved output)
        dV = P^T dO;  dP = dO V^T;  D = rowsum(dO o O)                          (D from the saved O)
        dS = rnd(P o (dP - D))                                                  (stored before the two matmuls)
        dQ = scale dS K;  dK = scale dS^T Q;  dbias = dS

    Checked by the harness with ``lowp="float32"`` (no rounding) against the float32 bound before it is used.
    """
    from oracles.verify._lowp_storage import storer

    rnd = storer(lowp)
    f = np.float32
    Q = np.asarray(q, f).transpose(0, 2, 1, 3)          # (b h lq d)
    K = np.asarray(k, f).transpose(0, 2, 1, 3)          # (b h lk d)
    V = np.asarray(v, f).transpose(0, 2, 1, 3)          # (b h lk e)
    dO = np.asarray(do, f).transpose(0, 2, 1, 3)        # (b h lq e)
    S = f(scale) * (Q @ K.transpose(0, 1, 3, 2))
    if bias is not None:
        S = S + np.asarray(bias, f)
    kp = np.broadcast_to(np.asarray(keep, bool), S.shape)
    S = np.where(kp, S, -np.inf).astype(f)
    m = np.max(S, axis=-1, keepdims=True) if S.shape[-1] else np.zeros(S.shape[:-1] + (1,), f)
    m = np.where(np.isfinite(m), m, f(0))
    E = np.where(kp, np.exp(S - m), f(0)).astype(f)
    den = E.sum(axis=-1, keepdims=True)
    P = rnd(np.where(den > 0, E / np.where(den > 0, den, f(1)), f(0)).astype(f))
    O = rnd(P @ V)
    dV = P.transpose(0, 1, 3, 2) @ dO
    dP = dO @ V.transpose(0, 1, 3, 2)
    Dr = np.sum(dO * O, axis=-1, keepdims=True)
    dS = rnd(P * (dP - Dr))
    dQ = f(scale) * (dS @ K)
    dK = f(scale) * (dS.transpose(0, 1, 3, 2) @ Q)
    t = lambda a: np.ascontiguousarray(a.transpose(0, 2, 1, 3)).astype(f)  # noqa: E731
    return {"q": t(dQ), "k": t(dK), "v": t(dV), "bias": dS.astype(f)}


def reference_vjp(inp, conv, cotangents, lowp: Optional[str] = None) -> Dict[str, np.ndarray]:
    """refimpl's VJP (materialized view) in the op's canonical layout (module docstring); ``lowp`` (the harness's
    low-precision baseline): :func:`storing_sdpa_vjp` with ``P``, ``dS`` and ``O`` stored in that dtype."""
    from refimpl.attention.softmax import scaled_dot_product_attention_vjp

    if float(conv["softcap"]):
        raise ValueError("softcap: refimpl's scaled_dot_product_attention has no softcap; verify with softcap=0")
    q = np.asarray(inp["q"])
    b, lq, h, d = q.shape
    g = np.shape(inp["k"])[2]
    lk = np.shape(inp["k"])[1]
    k, v = expand_heads(inp["k"], h), expand_heads(inp["v"], h)
    bias, slopes = _optional(inp, conv)
    total = None if bias is None else np.asarray(bias)
    if slopes is not None:
        sl = np.asarray(slopes)
        ab = alibi(sl, b, h, lq, lk).astype(q.dtype)
        total = np.broadcast_to(ab, (b, h, lq, lk)) if total is None else total + ab
    keep = np.broadcast_to(keep_of(inp, conv), (b, 1, lq, lk))[:, 0]
    mask = None if keep.all() else np.ascontiguousarray(keep)
    if lowp is not None:
        r = storing_sdpa_vjp(q, k, v, None if total is None else np.broadcast_to(total, (b, h, lq, lk)),
                             keep[:, None], _scale(conv, d), cotangents["o"], lowp)
    else:
        r = scaled_dot_product_attention_vjp(q, k, v, do=cotangents["o"], scale=conv["scale"],
                                             causal=False, mask=mask,
                                             bias=None if total is None else np.ascontiguousarray(total))
    out = {"q": r["q"], "k": _fold(r["k"], h // g), "v": _fold(r["v"], h // g)}
    if bias is not None:
        out["bias"] = r["bias"]
    if slopes is not None:
        dist = np.abs(np.arange(lq)[:, None] + (lk - lq) - np.arange(lk)[None, :]).astype(r["bias"].dtype)
        ds = -(r["bias"] * dist).sum(axis=(2, 3))          # (b h)
        out["alibi_slopes"] = ds.sum(axis=0) if np.ndim(slopes) == 1 else ds
    return out


GRAD = register_grad(GradSpec(
    op=OP_SOFTMAX,
    wrt=WRT,
    forward=grad_forward,
    bounds=grad_bounds,
    cases=grad_cases,
    reference_vjp=reference_vjp,
    outputs=("o",),
    notes="forward: oracles.softmax_grad_forward.sdpa_forward (float64 logsumexp); bounds: softmax_vjp_bound "
          "(P, dS = P o (dP - D), the products); ALiBi slopes differentiable (dslope = -sum dist dS); "
          "key_padding_mask boolean (no gradient); a fully masked row contributes nothing",
    module=__name__,
))


def _canonical_grad_fn(causal):
    conv = {"scale": None, "causal": causal, "window_left": -1, "window_right": -1, "softcap": 0.0,
            "use_bias": True, "use_alibi": True, "use_key_padding_mask": True}

    def grad_fn(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None, do=None):
        return reference_vjp({"q": q, "k": k, "v": v, "bias": bias, "alibi_slopes": alibi_slopes,
                              "key_padding_mask": key_padding_mask}, conv, {"o": do})

    grad_fn.__doc__ = (f"refimpl's VJP as an explicit backward in the canonical protocol (--grad-fn), causal={causal!r}"
                       ", the other conventions at their defaults; the optional inputs used when given")
    return grad_fn


#: ``refimpl verify attention.softmax ... --grad --grad-fn oracles.verify.grad_softmax:refimpl_grad_fn``
refimpl_grad_fn = _canonical_grad_fn(None)
refimpl_grad_fn_top_left = _canonical_grad_fn("top_left")
refimpl_grad_fn_bottom_right = _canonical_grad_fn("bottom_right")
