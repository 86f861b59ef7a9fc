r"""Ground truth for Linformer attention (Wang et al. 2020): dense materialization of
``softmax(scale q (E k)^T) (F v)`` in mpmath (small cases) and in float64 with correctly rounded projections
(``math.fsum``) and ``scipy.special.logsumexp`` (larger ones), and the derived bound.

Imports numpy, scipy, mpmath, math and :mod:`oracles.tolerance` only (never refimpl).  Written from the paper's
formula, not from refimpl's code: the projections are explicit sums over the sequence, the softmax an explicit
``exp / sum exp``.

Layouts: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``E, F (h r s)`` (per head) or ``(r s)`` (shared by every
head), output ``(b l h p)``.  ``r = 0``: every output is 0.

The bound (:func:`linformer_bound`)
----------------------------------
Per batch entry and head.  The projection ``K_bar_t = sum_j E_tj k_j`` is a length-``s`` dot product:
``|dK_bar_t| <= gamma_s (|E||k|)_t`` (Higham 3.1), and likewise ``|dV_bar_t| <= gamma_s (|F||v|)_t =: gamma_s W_t``.
A score ``s_it = scale q_i . K_bar_t`` formed from the computed ``K_bar`` then has absolute error
``<= gamma_{n+1} |scale| |q_i|.|K_bar_t| + |scale| |q_i|.|dK_bar_t| <= gamma_{n+s+1} S_it`` with
``S_it = |scale| |q_i|.(|E||k|)_t`` (``|K_bar| <= |E||k|``).  From here the softmax-attention analysis of
:func:`oracles.attention.softmax_attention_bound` applies over the ``r`` projected keys with ``S_it`` in place of
``|scale||q_i|.|k_j|``: ``exp(s_it - m_i)`` has relative error
``delta_i <= gamma_{n+s+1} (S_it + S_i,max) + u |s_it - m_i| + e`` (the subtraction's rounding; ``e`` the relative
error of one ``exp``, :data:`oracles.tolerance.TRANSCENDENTAL_U` ``u`` by default, a kernel's own ``exp`` passes
its figure), the normalizer and the weighted sum of ``r`` terms ``gamma_r`` each, the division ``u``, giving
``2 (delta_i + gamma_{r+2}) sum_t p_it |V_bar_t|``; the values' projection error adds
``gamma_s sum_t p_it W_t``; and ``|V_bar_t| <= W_t``.  Folding every ``gamma_a`` into ``gamma_D``,
``D = n + s + r + 5``::

    |o_ic - o*_ic| <= gamma_D (2 (2 S_i,max + max_t |s_it - m_i|) + 3) sum_t p_it W_tc  +  2 e sum_t p_it W_tc

(first order).  The oracle's own share is added by :func:`oracles.tolerance.componentwise_bound` (float64
oracle) or is 0 (mpmath).

A tiled evaluation (FlashAttention's online softmax over ``T_c`` key tiles) adds, per tile, the rescaling of
the running output and sum: :func:`online_softmax_term`.  With ``alpha = exp(m_old - m_new)`` and
``beta = exp(m~ - m_new)`` the final ``O_i = sum_j (prod of later alphas) beta_j P~_j V_j / l_i`` telescopes
exactly in the computed maxima (the same stored ``m`` enter numerator and denominator), so what a tile adds to
the relative error of a contribution is its own roundings: on the output path ``l alpha`` (u), ``* O`` (u),
``+`` (u), ``/ l_new`` (u); on the sum path ``alpha l`` (u), ``beta l~`` (u), ``+`` (u); each of ``alpha``,
``beta`` its ``exp`` (``e``) and its argument's subtraction (``u |m_old - m_new| <= u spread_i``), on both paths
(``3 e`` counting ``beta``'s once in the output, ``4 u spread_i``): per tile
``(7 u + 3 e + 4 u spread_i)`` times ``sum_t p_it |V_t|``, ``T_c`` tiles.
"""
from __future__ import annotations

import math
from typing import Optional

import mpmath
import numpy as np
import scipy.special

from oracles.tolerance import TRANSCENDENTAL_U, Bound, componentwise_bound, unit_roundoff

DPS = 50

__all__ = ["per_head", "linformer_mpmath", "linformer_float64", "linformer_bound", "linformer_weights",
           "online_softmax_term"]


def per_head(E, h: int) -> np.ndarray:
    """``E`` as ``(h r s)``: a shared ``(r s)`` projection repeated for every head (the paper's headwise sharing)."""
    E = np.asarray(E, dtype=np.float64)
    if E.ndim == 2:
        return np.broadcast_to(E, (h,) + E.shape)
    return E


def linformer_mpmath(q, k, v, E, F, scale) -> np.ndarray:
    r"""``o_i = sum_t softmax_t(scale q_i . (sum_j E_tj k_j)) (sum_j F_tj v_j)`` in mpmath at 50 digits."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, h, n = q.shape
    s, p = k.shape[1], v.shape[3]
    E, F = per_head(E, h), per_head(F, h)
    r = E.shape[1]
    out = np.zeros((b, l, h, p))
    mp = lambda x: mpmath.mpf(float(x))  # noqa: E731
    with mpmath.workdps(DPS):
        sc = mp(scale)
        for bi in range(b):
            for hi in range(h):
                # K_bar_t = sum_j E_tj k_j,  V_bar_t = sum_j F_tj v_j   (exact sums)
                Kb = [[mpmath.fsum(mp(E[hi, t, j]) * mp(k[bi, j, hi, c]) for j in range(s)) for c in range(n)]
                      for t in range(r)]
                Vb = [[mpmath.fsum(mp(F[hi, t, j]) * mp(v[bi, j, hi, c]) for j in range(s)) for c in range(p)]
                      for t in range(r)]
                for i in range(l):
                    if r == 0:
                        continue
                    sc_i = [sc * mpmath.fsum(mp(q[bi, i, hi, c]) * Kb[t][c] for c in range(n)) for t in range(r)]
                    w = [mpmath.exp(x) for x in sc_i]
                    Z = mpmath.fsum(w)
                    for c in range(p):
                        out[bi, i, hi, c] = float(mpmath.fsum(w[t] * Vb[t][c] for t in range(r)) / Z)
    return out


def _fsum_projection(E, x) -> np.ndarray:
    """``(b r h c)``: ``sum_j E[h, t, j] x[b, j, h, c]`` correctly rounded (``math.fsum``)."""
    b, s, h, c = x.shape
    r = E.shape[1]
    out = np.zeros((b, r, h, c))
    for bi in range(b):
        for hi in range(h):
            for t in range(r):
                for cc in range(c):
                    out[bi, t, hi, cc] = math.fsum(E[hi, t, :] * x[bi, :, hi, cc]) if s else 0.0
    return out


def linformer_weights(q, k, E, scale) -> np.ndarray:
    """The float64 attention weights ``p (b h l r)`` over the projected keys (scipy logsumexp; ``r = 0``: empty)."""
    q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    E = per_head(E, q.shape[2])
    Kb = _fsum_projection(E, k)
    S = scale * np.einsum("bihn,bthn->bhit", q, Kb)
    if S.shape[-1] == 0:
        return S
    return np.exp(S - scipy.special.logsumexp(S, axis=-1, keepdims=True))


def linformer_float64(q, k, v, E, F, scale) -> np.ndarray:
    """Float64 oracle for larger cases: correctly rounded projections, ``p = exp(s - logsumexp(s))``."""
    v = np.asarray(v, dtype=np.float64)
    h = v.shape[2]
    p = linformer_weights(q, k, E, scale)
    Vb = _fsum_projection(per_head(F, h), v)
    return np.einsum("bhit,bthp->bihp", p, Vb)


def linformer_bound(q, k, v, E, F, scale, dtype=np.float64, *, oracle_dtype=None,
                    exp_rel_err: Optional[float] = None, key_tiles: int = 0) -> Bound:
    """The derived bound of the module docstring, elementwise ``(b l h p)``.

    ``exp_rel_err``: the candidate's relative error of one ``exp`` (default ``TRANSCENDENTAL_U * u(dtype)``).
    ``key_tiles``: a candidate that runs an online softmax over that many tiles of projected keys adds
    :func:`online_softmax_term` (with ``W_t = (|F||v|)_t >= |V_bar_t|``).
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, h, n = q.shape
    s = k.shape[1]
    E, F = per_head(E, h), per_head(F, h)
    r = E.shape[1]
    # |E||k| and W = |F||v|   (b r h .)
    Ek = np.einsum("htj,bjhn->bthn", np.abs(E), np.abs(k))
    W = np.einsum("htj,bjhp->bthp", np.abs(F), np.abs(v))
    Kb = np.einsum("htj,bjhn->bthn", E, k)
    sc = scale * np.einsum("bihn,bthn->bhit", q, Kb)
    S = abs(scale) * np.einsum("bihn,bthn->bhit", np.abs(q), Ek)
    if r:
        m = np.max(sc, axis=-1, keepdims=True)
        w = np.exp(sc - m)
        p = w / np.sum(w, axis=-1, keepdims=True)
        spread = np.max(np.abs(sc - m), axis=-1)  # (b h l)
        factor = 2.0 * (2.0 * np.max(S, axis=-1) + spread) + 3.0
    else:
        p = np.zeros((b, h, l, 0))
        spread = factor = np.zeros((b, h, l))
    pW = np.einsum("bhit,bthp->bihp", p, W)
    magnitude = np.einsum("bhi,bihp->bihp", factor, pW)
    depth = n + s + r + 5
    e = TRANSCENDENTAL_U * unit_roundoff(dtype) if exp_rel_err is None else float(exp_rel_err)
    e_oracle = 0.0 if oracle_dtype is None else TRANSCENDENTAL_U * unit_roundoff(oracle_dtype)
    bound = componentwise_bound(magnitude, depth, dtype, oracle_dtype=oracle_dtype,
                                what="Linformer: projections gamma_s |E||k|, |F||v|, then softmax attention over r "
                                     "projected keys (oracles/linformer.py)")
    bound = bound + Bound(2.0 * (e + e_oracle) * pW, f"exp relative error {e:.3g} (+ the oracle's), twice, on "
                                                     "sum_t p_it (|F||v|)_t")
    if key_tiles:
        bound = bound + online_softmax_term(pW, spread, key_tiles, dtype, exp_rel_err=exp_rel_err)
    return bound


def online_softmax_term(weighted_abs_v, spread_max, tiles: int, dtype=np.float64, *,
                        exp_rel_err: Optional[float] = None) -> Bound:
    """The per-tile rescaling error of an online (tiled) softmax over ``tiles`` key tiles (module docstring).

    ``weighted_abs_v (b l h p)``: ``sum_t p_it |V_t|``; ``spread_max (b h l)``: ``max_t |s_it - m_i|`` over the kept
    keys.  ``T_c (7 u + 3 e + 4 u spread_i) sum_t p_it |V_t|``.
    """
    u = unit_roundoff(dtype)
    e = TRANSCENDENTAL_U * u if exp_rel_err is None else float(exp_rel_err)
    spread = np.transpose(np.asarray(spread_max, dtype=np.float64), (0, 2, 1))[..., None]  # (b l h 1)
    per_tile = 7.0 * u + 3.0 * e + 4.0 * u * spread
    return Bound(int(tiles) * per_tile * np.asarray(weighted_abs_v, dtype=np.float64),
                 f"online softmax over {int(tiles)} key tiles: (7u + 3e + 4u spread) per tile (oracles/linformer.py)")
