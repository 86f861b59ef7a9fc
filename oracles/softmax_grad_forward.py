r"""Ground truth for the gradients of softmax attention: the float64 forwards to differentiate and the derived
rounding bound of a backward pass computed in float64 / float32.

Imports numpy, scipy and other ground-truth modules only (never refimpl, never the conformance layer).

Forwards (independent of every backward pass; :mod:`oracles.gradients` differentiates them)
------------------------------------------------------------------------------------------
* :func:`sdpa_forward` -- ``o`` of ``q, k (g heads), v, bias, ALiBi slopes`` with a keep mask and a softcap, in
  float64 (:func:`oracles.attention.sdpa_float64`: ``p = exp(s - logsumexp(s))``), grouped key/value heads
  expanded as FlashAttention and ``torch`` (query head ``x`` reads key/value head ``x // (h / g)``).
* :func:`sdpa_forward_mp` -- the same in mpmath on object arrays (for :func:`oracles.gradients.mp_vjp`).

The rounding bound of a backward pass (:func:`softmax_vjp_bound`)
-----------------------------------------------------------------
A backward pass computes (per batch and head, ``P`` the weights, ``O = P V``): ``dV = P^T dO``, ``dP = dO V^T``,
``D = rowsum(dO o O)``, ``dS = P o (dP - D)`` (times ``1 - tanh^2(t / c)`` under a softcap ``c``),
``dQ = scale dS K``, ``dK = scale dS^T Q``, ``dbias = dS`` (summed over broadcast axes), ``dslope_x =
-sum dist_ij dS_ij`` (ALiBi).  With ``u`` the unit roundoff of the working dtype and ``gamma_m = m u / (1 - m u)``:

* the weights: ``P_ij`` carries a relative error ``<= gamma_D F_i`` with ``F_i = 2 (2 Smax_i + spread_i + 2)``
  (:func:`oracles.attention.softmax_attention_bound`'s factor: the score's absolute error ``gamma_{d+1} S_ij``,
  ``S_ij = |scale| |q_i|.|k_j| + |bias_ij|`` (+ ``|s_ij|`` under a softcap), enters ``exp`` and the log-sum-exp /
  the normalizer; ``spread_i`` the largest ``|s_ij - max_j s_ij|`` over the kept keys) and
  ``D = d + lk + 5 (+ 4 softcap, + the bias's roundings)`` (the ``d``-term dot, the scale, the bias, the max,
  ``exp`` counted as 4 ulps (a libm exp, or the kernels' polynomial exp of relative error ``gamma_4``), the
  ``lk``-term sum and the division);
* ``dP - D``: ``dP_ij`` is an ``e``-term dot, ``D_i`` an ``e``-term dot of ``dO_i`` with ``O_i`` (whose own error is
  ``<= gamma_{D} F_i (P |V|)_i``): both within ``gamma_{D + e + 3} (F_i + 1)`` of
  ``|dO_i|.(|v_j| + (P |V|)_i)``; so ``|error(dS_ij)| <= gamma_{D + e + 6} (F_i + 1) M_ij`` with
  ``M_ij = P_ij |dO_i|.(|v_j| + (P|V|)_i)`` (the subtraction, the product with ``P``, the softcap's factor:
  3 more roundings);
* ``dQ_i = scale sum_j dS_ij k_j``: ``gamma_{D + e + 6 + lk + 1} |scale| sum_j (F_i + 1) M_ij |k_j|``;
  ``dK_j``: the same with ``lq`` and ``|q_i|``; ``dV_j = sum_i P_ij dO_i``: ``gamma_{D + lq} sum_i (F_i + 1) P_ij
  |dO_i|``; ``dbias``: the ``dS`` bound summed over the broadcast axes (``+ b h`` roundings);
  ``dslope``: ``sum dist (dS bound)`` (``+ b lq lk`` roundings);
* grouped key/value heads: ``dK``, ``dV`` of a key/value head sum ``h / g`` query heads' terms (``+ h / g``);
* a tiled forward (the saved log-sum-exp of an online softmax over ``T_c`` key tiles): ``+ 5 T_c`` to ``D``.

Every sum may be taken in any order (tiles, BLAS blocking): ``gamma_{m}`` bounds any ``m``-term summation.
Plus an underflow floor ``underflow_floor(depth)``.  The bound is what the *backward* in ``dtype`` may deviate
from the exact gradient; the comparison against finite differences adds the differences' own error.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from oracles.attention import sdpa_float64
from oracles.tolerance import Bound, gamma, underflow_floor

__all__ = ["expand_heads", "sdpa_forward", "sdpa_forward_mp", "softmax_vjp_bound"]


def expand_heads(x: np.ndarray, h: int) -> np.ndarray:
    """``(b s g e) -> (b s h e)``: query head ``x`` reads key/value head ``x // (h / g)``."""
    x = np.asarray(x)
    g = x.shape[2]
    if g == 0 or h % g:
        raise ValueError(f"k: expected a number of key/value heads g dividing h = {h}, got g = {g}")
    return np.repeat(x, h // g, axis=2)


def alibi(slopes, b: int, h: int, lq: int, lk: int) -> np.ndarray:
    """``-slope_x |i + lk - lq - j|`` as ``(b|1, h, lq, lk)`` (FlashAttention's ALiBi, bottom-right distances)."""
    sl = np.asarray(slopes)
    sl = sl[None] if sl.ndim == 1 else sl
    dist = np.abs(np.arange(lq)[:, None] + (lk - lq) - np.arange(lk)[None, :]).astype(np.float64)
    return -sl[:, :, None, None] * dist[None, None]


def sdpa_forward(q, k, v, scale: float, keep=None, bias=None, slopes=None, softcap: float = 0.0) -> np.ndarray:
    r"""``o (b lq h e)`` in float64: ``softmax_j(cap(scale q_i . k_j) + bias_ij - slope |i + lk - lq - j|)`` over the
    kept keys (``keep`` broadcastable to ``(b h lq lk)``), times ``v``; ``k (b lk g d)``, ``v (b lk g e)`` with ``g``
    dividing ``h``; a row with no kept key is zero."""
    q = np.asarray(q, dtype=np.float64)
    b, lq, h, _ = q.shape
    k = expand_heads(np.asarray(k, dtype=np.float64), h)
    v = expand_heads(np.asarray(v, dtype=np.float64), h)
    lk = k.shape[1]
    total = None if bias is None else np.asarray(bias, dtype=np.float64)
    if slopes is not None:
        ab = alibi(np.asarray(slopes, dtype=np.float64), b, h, lq, lk)
        total = ab if total is None else total + ab
    return sdpa_float64(q, k, v, scale, keep, total, softcap=softcap)[0]


def sdpa_forward_mp(q, k, v, scale, keep=None):
    r"""The same (no bias, no softcap, ``g = h``) on numpy object arrays of mpmath numbers (exact to the working
    precision): ``s_ij = scale q_i . k_j``, ``p_ij = exp(s_ij - max) / sum``, ``o_i = sum_j p_ij v_j``."""
    import mpmath

    b, lq, h, d = q.shape
    lk, e = k.shape[1], v.shape[3]
    keep = np.broadcast_to(np.ones((1, 1, lq, lk), bool) if keep is None else np.asarray(keep), (b, h, lq, lk))
    out = np.empty((b, lq, h, e), dtype=object)
    out[...] = mpmath.mpf(0)
    sc = mpmath.mpf(scale)
    for bi in range(b):
        for hi in range(h):
            for i in range(lq):
                s = {j: sc * mpmath.fsum(q[bi, i, hi, c] * k[bi, j, hi, c] for c in range(d))
                     for j in range(lk) if keep[bi, hi, i, j]}
                if not s:
                    continue
                mx = max(s.values())
                w = {j: mpmath.exp(x - mx) for j, x in s.items()}
                Z = mpmath.fsum(w.values())
                for c in range(e):
                    out[bi, i, hi, c] = mpmath.fsum(w[j] * v[bi, j, hi, c] for j in w) / Z
    return out


def softmax_vjp_bound(q, k, v, do, scale: float, dtype, keep=None, bias=None, slopes=None, softcap: float = 0.0,
                      bias_roundings: int = 1, key_tiles: int = 0) -> Dict[str, Bound]:
    r"""The derived rounding bound (module docstring) of a backward pass in ``dtype``: ``{"q", "k", "v"}`` and
    ``"bias"`` (the bias's shape) / ``"alibi_slopes"`` when given.

    ``q (b lq h d)``, ``k (b lk g d)``, ``v (b lk g e)``, ``do (b lq h e)``; ``keep`` broadcastable to
    ``(b h lq lk)``; ``bias`` ``(lq lk)``, ``(b lq lk)`` or ``(b h lq lk)`` (refimpl's shapes; ``-inf`` entries
    mask); ``slopes`` ``(h)`` or ``(b h)``.
    ``key_tiles``: the number of key tiles of a tiled forward whose online softmax saved ``L`` (each rescaling of
    the running sum by ``exp(m - m')`` adds an ``exp`` (4 ulps) and a product: ``+ 5`` to the weights' depth per
    tile); 0 for a backward that forms ``P`` in one pass."""
    q, do = (np.asarray(a, dtype=np.float64) for a in (q, do))
    b, lq, h, d = q.shape
    g = np.shape(k)[2]
    kk = expand_heads(np.asarray(k, dtype=np.float64), h)
    vv = expand_heads(np.asarray(v, dtype=np.float64), h)
    lk, e = kk.shape[1], vv.shape[3]
    group = h // g if g else 1
    t = scale * np.einsum("bihd,bjhd->bhij", q, kk)
    s = softcap * np.tanh(t / softcap) if softcap else t
    S = abs(scale) * np.einsum("bihd,bjhd->bhij", np.abs(q), np.abs(kk))
    depth = d + lk + 5 + 5 * int(key_tiles)
    if softcap:
        S = S + np.abs(s)
        depth += 4
    bias4 = None
    if bias is not None:  # (lq lk) / (b lq lk) / (b h lq lk) as (b|1, h|1, lq, lk) (refimpl's bias shapes)
        bias = np.asarray(bias, dtype=np.float64)
        bias4 = bias[None, None] if bias.ndim == 2 else (bias[:, None] if bias.ndim == 3 else bias)
    total = None if bias4 is None else np.broadcast_to(bias4, s.shape)
    if slopes is not None:
        ab = np.broadcast_to(alibi(np.asarray(slopes, dtype=np.float64), b, h, lq, lk), s.shape)
        total = ab if total is None else total + ab
        bias_roundings += 5  # the kernel forms slope * distance and adds it (ops_attention's count)
    kp = np.broadcast_to(np.ones((1, 1, lq, lk), bool) if keep is None else np.asarray(keep, dtype=bool), s.shape)
    if total is not None:
        depth += int(bias_roundings)
        fin = np.isfinite(total)
        s = s + np.where(fin, total, 0.0)
        S = S + np.where(fin, np.abs(total), 0.0)
        kp = kp & fin
    sm = np.where(kp, s, -np.inf)
    m = np.max(sm, axis=-1, keepdims=True) if lk else np.zeros(s.shape[:-1] + (1,))
    m = np.where(np.isfinite(m), m, 0.0)
    spread = np.where(kp, np.abs(sm - m), 0.0)
    Smax = np.max(np.where(kp, S, 0.0), axis=-1) if lk else np.zeros(s.shape[:-1])
    spread_max = np.max(spread, axis=-1) if lk else np.zeros(s.shape[:-1])
    with np.errstate(invalid="ignore", over="ignore"):
        w = np.where(kp, np.exp(sm - m), 0.0)
    Z = np.sum(w, axis=-1, keepdims=True)
    P = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)                     # (b h lq lk)
    F1 = 2.0 * (2.0 * Smax + spread_max + 2.0) + 1.0                            # F_i + 1, (b h lq)
    adO = np.abs(do)
    PV = np.einsum("bhij,bjhe->bihe", P, np.abs(vv))                            # (P |V|)_i
    # M_ij = P_ij |dO_i|.(|v_j| + (P|V|)_i)
    M = P * (np.einsum("bihe,bjhe->bhij", adO, np.abs(vv)) + np.einsum("bihe,bihe->bhi", adO, PV)[..., None])
    FM = F1[..., None] * M
    d_dS = depth + e + 6
    floor = underflow_floor(d_dS + lq + lk + 8, dtype)
    dS_b = gamma(d_dS, dtype) * FM

    def fold(x):  # (b lk h .) -> (b lk g .): the h / g query heads of a key/value head summed
        return x.reshape(x.shape[0], x.shape[1], g, group, x.shape[3]).sum(axis=3) if g else x

    src = (f"the rounding of a softmax-attention backward in {np.dtype(dtype).name} (oracles.softmax_grad_forward): "
           f"P within gamma_{depth} (F+1), dS within gamma_{d_dS} (F+1) P |dO|.(|v| + P|V|), then the products")
    out = {
        "q": Bound(gamma(d_dS + lk + 1, dtype) * abs(scale) * np.einsum("bhij,bjhn->bihn", FM, np.abs(kk)) + floor,
                   src + f"; dQ: gamma_{d_dS + lk + 1} |scale| sum_j (F+1) M |k|"),
        "k": Bound(fold(gamma(d_dS + lq + 1 + group, dtype) * abs(scale)
                        * np.einsum("bhij,bihn->bjhn", FM, np.abs(q))) + floor,
                   src + f"; dK: gamma_{d_dS + lq + 1 + group} |scale| sum_i (F+1) M |q|"),
        "v": Bound(fold(gamma(depth + lq + group, dtype) * np.einsum("bhij,bihe->bjhe", F1[..., None] * P, adO))
                   + floor, src + f"; dV: gamma_{depth + lq + group} sum_i (F+1) P |dO|"),
    }
    if bias is not None:
        extra = int(np.prod((b, h, lq, lk)) // max(int(np.prod(bias4.shape)), 1))
        red = gamma(d_dS + extra, dtype) * FM
        for ax in range(4):  # the axes the bias was broadcast on
            if bias4.shape[ax] == 1 and red.shape[ax] != 1:
                red = red.sum(axis=ax, keepdims=True)
        out["bias"] = Bound(red.reshape(bias.shape) + floor,
                            src + f"; dbias: dS summed over the broadcast axes (gamma_{d_dS + extra})")
    if slopes is not None:
        dist = np.abs(np.arange(lq)[:, None] + (lk - lq) - np.arange(lk)[None, :]).astype(np.float64)
        dd = gamma(d_dS + b * lq * lk, dtype) * FM * dist
        sl = np.asarray(slopes)
        red = dd.sum(axis=(0, 2, 3)) if sl.ndim == 1 else dd.sum(axis=(2, 3))
        out["alibi_slopes"] = Bound(red + floor, src + f"; dslope: sum |dist| (dS bound), gamma_{d_dS + b * lq * lk}")
    return out
