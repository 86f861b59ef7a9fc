r"""Independent ground truths and derived tolerances for the attention family.

Nothing here imports :mod:`refimpl.attention`.  The oracles reach the answer by independent means:

* **mpmath** at 50 significant digits, element by element, on small cases (softmax attention, linear
  attention by dense materialization of the masked kernel matrix, feature maps from their
  definitions, the delta rule and fast weights by their literal recurrences in exact-ish arithmetic);
* **float64 with correctly rounded sums** (``math.fsum``) on large cases (softmax attention through
  ``scipy.special.logsumexp``; linear attention by dense materialization).

Tolerances (each says where it comes from; see ``oracles/tolerance.py``)
-----------------------------------------------------------------------
* :func:`softmax_attention_bound` -- first-order forward error of max-subtracted softmax attention.
  With ``S_ij = |scale| |q_i|.|k_j|`` (the dot product on absolute values), a score is computed with
  absolute error ``<= gamma_{d+1} S_ij``; ``exp(s_ij - m_i)`` then has relative error
  ``<= gamma_{d+1}(S_ij + S_i,max) + u |s_ij - m_i| + 2u`` (the argument's absolute error, the
  subtraction's rounding, ``exp`` within one ulp = ``2u``); the normalizer and the weighted sum each
  add ``gamma_L``; the division ``u``.  The output error is then
  ``<= 2 (delta_i + gamma_{L+2}) sum_j p_ij |v_j|`` with ``delta_i = max_j`` of the relative error above.
  Folding constants into one gamma (``gamma_a x + gamma_b y <= gamma_{a+b} (x + y)``):
  ``magnitude_i = 2 (2 max_j S_ij + max_j |s_ij - m_i| + 2) sum_j p_ij |v_j|``, ``depth = d + L + 5``.
* :func:`linear_attention_bound` -- every view (non-causal, quadratic, recurrent, chunked) computes
  ``num = sum_j (phi(q).phi(k_j)) v_j (+ S0 phi(q))`` and ``den = sum_j phi(q).phi(k_j) (+ u0.phi(q))``
  as sums of products; the longest rounding chain is a length-``n`` dot product, one multiply, and a
  sum of at most ``L + 1`` terms (``L`` keys + the initial state), in any association order:
  ``depth = n + L + 3``.  Magnitudes: ``N_abs``, ``D_abs`` = the same sums on absolute values.
  Unnormalized: ``|err| <= gamma_depth N_abs``.  Normalized ``o = num/(den + eps)``:
  ``|err| <= gamma_{depth+1} (N_abs + |o| D_abs) / |den + eps|`` (first order; a quotient's
  relative error is the sum of its parts' plus one rounding).
* :func:`delta_rule_bound` -- normwise, because the delta-rule transition
  ``M_t = alpha_t (I - beta_t k_t k_t^T)`` is a contraction (``||M_t||_2 <= 1``) whenever
  ``0 <= beta_t |k_t|^2 <= 2`` and ``0 < alpha_t <= 1`` (checked; the bound refuses otherwise).
  A state error therefore never grows, and ``||E_t||_F <= sum_{s<=t} ||local_s||_F``.  Recurrent
  view, step ``s``: ``|local_s| <= gamma_{n+4} (alpha |S| + beta (|v| + alpha |S||k|) |k|^T)``
  (``S k``: ``n``; ``v - .``, ``beta *``, ``* k^T``, ``+``: 4).  Output ``o_t = S_t q_t``: plus
  ``gamma_n |S_t||q_t|``; so ``|err o_t| <= ||E_t||_F |q_t| + gamma_n (|S_t||q_t|)``.
  Chunked view: additionally, per chunk, the two unit-lower-triangular solves (forward
  substitution is componentwise backward stable, ``|dT| <= gamma_T |T|``, Higham Thm 8.5, hence
  ``|dU| <= gamma_T |T^{-1}||T||U|``) and the matrix products of the WY formulas (depth
  ``n + T + 4``) -- :func:`delta_rule_bound` evaluates these magnitudes from the exact chunk
  quantities in float64 (a bound may mirror an algorithm's structure; the *values* compared against
  come from the mpmath recurrence).
"""
from __future__ import annotations

import math
from typing import Optional

import mpmath
import numpy as np
import scipy.special
from scipy.linalg import solve_triangular

from oracles.tolerance import Bound, componentwise_bound, gamma, unit_roundoff

DPS = 50

__all__ = [
    "keep_mask",
    "sdpa_mpmath",
    "sdpa_float64",
    "softmax_attention_bound",
    "features_mpmath",
    "linear_attention_mpmath",
    "linear_attention_fsum",
    "linear_attention_bound",
    "linear_attention_magnitude",
    "fast_weights_mpmath",
    "fast_weights_state_mpmath",
    "multi_head_mpmath",
    "delta_rule_mpmath",
    "delta_rule_bound",
    "sinusoidal_mpmath",
    "sinusoid_columns",
    "sinusoid_exponent",
]


def keep_mask(lq: int, lk: int, causal: Optional[str]) -> np.ndarray:
    """``(lq, lk)`` boolean keep-mask, written from the alignment definitions (independently)."""
    keep = np.ones((lq, lk), dtype=bool)
    if causal is None:
        return keep
    for i in range(lq):
        for j in range(lk):
            if causal == "top_left":
                keep[i, j] = j <= i
            elif causal == "bottom_right":
                keep[i, j] = j - (lk - lq) <= i
            else:
                raise ValueError(f"causal: unknown alignment {causal!r}")
    return keep


def _mp(x):
    return mpmath.mpf(float(x))


def sdpa_mpmath(q, k, v, scale, keep=None, bias=None, softcap: float = 0.0) -> np.ndarray:
    r"""``softmax(cap(scale q.k) + bias)`` over kept keys, times ``v``, in mpmath; empty rows -> 0.

    ``q (b lq h d)``, ``k (b lk h d)``, ``v (b lk h e)``, ``keep`` and ``bias`` broadcastable to ``(b h lq lk)``.
    ``softcap > 0``: the scaled score ``t`` becomes ``softcap tanh(t / softcap)`` (Gemma 2, FlashAttention's
    ``softcap``) before the bias is added; ``0`` leaves it alone.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, lq, h, d = q.shape
    lk, e = k.shape[1], v.shape[3]
    keep = np.broadcast_to(np.ones((1, 1, lq, lk), bool) if keep is None else np.asarray(keep), (b, h, lq, lk))
    bias = None if bias is None else np.broadcast_to(np.asarray(bias, dtype=np.float64), (b, h, lq, lk))
    out = np.zeros((b, lq, h, e))
    with mpmath.workdps(DPS):
        sc = _mp(scale)
        for bi in range(b):
            for hi in range(h):
                for i in range(lq):
                    scores = []
                    for j in range(lk):
                        if not keep[bi, hi, i, j] or (bias is not None and bias[bi, hi, i, j] == -np.inf):
                            continue
                        s = sc * mpmath.fsum(_mp(q[bi, i, hi, c]) * _mp(k[bi, j, hi, c]) for c in range(d))
                        if softcap:
                            s = _mp(softcap) * mpmath.tanh(s / _mp(softcap))
                        if bias is not None:
                            s += _mp(bias[bi, hi, i, j])
                        scores.append((j, s))
                    if not scores:
                        continue
                    w = [(j, mpmath.exp(s)) for j, s in scores]
                    Z = mpmath.fsum(x for _, x in w)
                    for c in range(e):
                        out[bi, i, hi, c] = float(mpmath.fsum(x * _mp(v[bi, j, hi, c]) for j, x in w) / Z)
    return out


def sdpa_float64(q, k, v, scale, keep=None, bias=None, softcap: float = 0.0):
    r"""Float64 oracle for large cases: ``p = exp(s - logsumexp(s))`` (scipy), empty rows -> 0.

    ``bias``/``softcap`` as in :func:`sdpa_mpmath`.  Returns ``(o, p)``; ``p`` is ``(b h lq lk)``.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    s = scale * np.einsum("bihd,bjhd->bhij", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + np.asarray(bias, dtype=np.float64)
    lq, lk = s.shape[-2:]
    keep = np.broadcast_to(np.ones((1, 1, lq, lk), bool) if keep is None else np.asarray(keep), s.shape)
    s = np.where(keep, s, -np.inf)
    lse = scipy.special.logsumexp(s, axis=-1, keepdims=True) if lk else np.full(s.shape[:-1] + (1,), -np.inf)
    with np.errstate(invalid="ignore"):
        p = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
    return np.einsum("bhij,bjhe->bihe", p, v), p


def softmax_attention_bound(q, k, v, scale, keep=None, dtype=np.float64, *, oracle_dtype=None, bias=None,
                            softcap: float = 0.0, bias_roundings: int = 1) -> Bound:
    """The derived bound of the module docstring, elementwise ``(b lq h e)``.

    With an additive ``bias`` the score gets ``bias_roundings`` more roundings (1: ``+ bias``; an ALiBi bias
    formed from its slope in the kernel, ``slope * distance`` possibly pre-divided by the scale and multiplied
    back, costs at most 4): ``S_ij`` then is ``|scale| |q_i|.|k_j| + |bias_ij|`` and the depth grows by that.

    With ``softcap = c > 0`` the score is ``c tanh(t / c)``, ``t = scale q.k``: the error of ``t`` passes through
    ``tanh`` with a factor ``<= 1`` (``tanh' <= 1``); the division by ``c``, ``tanh`` (one ulp, ``2u``) and the
    multiplication by ``c`` add ``4u |c tanh(t/c)|`` (the division's ``u |t/c| tanh'(t/c) <= u |tanh(t/c)|``,
    since ``x sech^2 x <= tanh x``): ``S_ij`` gains ``|s_ij|`` and the depth 4.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, lq, h, d = q.shape
    lk = k.shape[1]
    s = scale * np.einsum("bihd,bjhd->bhij", q, k)
    S = abs(scale) * np.einsum("bihd,bjhd->bhij", np.abs(q), np.abs(k))
    extra_depth = 0
    if softcap:
        s = softcap * np.tanh(s / softcap)
        S = S + np.abs(s)
        extra_depth += 4
    if bias is not None:
        extra_depth += int(bias_roundings)
        bb = np.broadcast_to(np.asarray(bias, dtype=np.float64), S.shape)
        s = s + np.where(np.isfinite(bb), bb, 0.0)
        S = S + np.where(np.isfinite(bb), np.abs(bb), 0.0)
        kp_bias = np.isfinite(bb)
        keep = kp_bias if keep is None else (np.asarray(keep) & kp_bias)
    kp = np.broadcast_to(np.ones((1, 1, lq, lk), bool) if keep is None else np.asarray(keep), s.shape)
    sm = np.where(kp, s, -np.inf)
    m = np.max(sm, axis=-1, keepdims=True) if lk else np.zeros(s.shape[:-1] + (1,))
    spread = np.where(kp, np.abs(sm - np.where(np.isfinite(m), m, 0.0)), 0.0)
    Smax = np.max(np.where(kp, S, 0.0), axis=-1) if lk else np.zeros(s.shape[:-1])
    spread_max = np.max(spread, axis=-1) if lk else np.zeros(s.shape[:-1])
    with np.errstate(invalid="ignore"):
        w = np.where(kp, np.exp(sm - np.where(np.isfinite(m), m, 0.0)), 0.0)
    Z = np.sum(w, axis=-1, keepdims=True)
    p = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    pv = np.einsum("bhij,bjhe->bihe", p, np.abs(v))
    factor = 2.0 * (2.0 * Smax + spread_max + 2.0)  # (b h lq)
    magnitude = np.einsum("bhi,bihe->bihe", factor, pv)
    return componentwise_bound(magnitude, d + lk + 5 + extra_depth, dtype, oracle_dtype=oracle_dtype,
                               what="softmax attention: score error gamma_{d+1}|s|, exp 2u, sums gamma_L (module doc)")


# ----------------------------------------------------------------------------- feature maps


def features_mpmath(x, kind: str, W=None, nu: int = 1) -> np.ndarray:
    r"""Feature maps from their definitions in mpmath: identity, elu1, dpfp, trig, positive, hyperbolic.

    Row-wise on ``x (... d)``; returns float64 of the exact values.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    d = flat.shape[1]
    rows = []
    with mpmath.workdps(DPS):
        for row in flat:
            xm = [_mp(a) for a in row]
            if kind == "identity":
                f = xm
            elif kind == "elu1":
                f = [a + 1 if a >= 0 else mpmath.exp(a) for a in xm]
            elif kind == "dpfp":
                r = [max(a, 0) for a in xm] + [max(-a, 0) for a in xm]
                f = [r[i] * r[(i - j) % (2 * d)] for j in range(1, nu + 1) for i in range(2 * d)]
            else:
                Wm = np.asarray(W, dtype=np.float64)
                mfeat = Wm.shape[0]
                sq = mpmath.fsum(a * a for a in xm)
                wx = [mpmath.fsum(_mp(Wm[i, c]) * xm[c] for c in range(d)) for i in range(mfeat)]
                if kind == "trig":
                    hh = mpmath.exp(sq / 2) / mpmath.sqrt(mfeat)
                    f = [hh * mpmath.sin(z) for z in wx] + [hh * mpmath.cos(z) for z in wx]
                elif kind == "positive":
                    f = [mpmath.exp(z - sq / 2) / mpmath.sqrt(mfeat) for z in wx]
                elif kind == "hyperbolic":
                    hh = mpmath.exp(-sq / 2) / mpmath.sqrt(2 * mfeat)
                    f = [hh * mpmath.exp(z) for z in wx] + [hh * mpmath.exp(-z) for z in wx]
                else:
                    raise ValueError(f"kind: unknown feature map {kind!r}")
            rows.append([float(a) for a in f])
    if not rows:
        m_ = 0 if W is None else np.shape(W)[0]
        width = {"identity": d, "elu1": d, "dpfp": 2 * d * nu, "positive": m_}.get(kind, 2 * m_)
        return np.zeros(x.shape[:-1] + (width,))
    return np.array(rows, dtype=np.float64).reshape(x.shape[:-1] + (-1,))


def feature_bound(x, kind: str, exact, dtype, W=None) -> Bound:
    r"""Bound for a feature map evaluated in ``dtype``.

    Exponential maps: the argument ``w.x - |x|^2/2`` has absolute error ``<= gamma_{d+2}(|w|.|x| + |x|^2/2)``,
    which becomes a relative error of ``exp``; plus ``exp``/``sin``/``cos`` within one ulp (``2u``),
    the scaling by ``1/sqrt(m)`` (sqrt + divide: ``2u``) and for trig the product with the
    ``exp(|x|^2/2)`` prefactor (``u``): ``|err| <= gamma_{d+8} (A + 1) |phi|`` with ``A`` the argument
    magnitude; for trig, sin/cos of an argument with absolute error ``a`` change by at most ``a``, so
    the magnitude is ``h(x) (A_wx + 1) + |phi| (|x|^2/2 + 1)``.  elu+1: ``a+1`` one rounding;
    ``exp`` ``2u`` -> ``gamma_2 |phi|``.  DPFP, identity: one product -> ``u |phi|``.
    """
    x = np.asarray(x, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    d = x.shape[-1]
    if kind in ("identity", "dpfp"):
        return componentwise_bound(np.abs(exact), 1, dtype, oracle_dtype=None, what=f"{kind}: one product")
    if kind == "elu1":
        return componentwise_bound(np.abs(exact), 2, dtype, oracle_dtype=None, what="elu+1: one add or exp (2u)")
    Wm = np.asarray(W, dtype=np.float64)
    m = Wm.shape[0]
    sq = np.sum(x * x, axis=-1, keepdims=True) / 2
    A = np.abs(x) @ np.abs(Wm).T  # (... m)
    if kind == "positive":
        mag = (A + sq + 1.0) * np.abs(exact)
    elif kind == "hyperbolic":
        mag = (np.concatenate([A, A], axis=-1) + sq + 1.0) * np.abs(exact)
    else:
        hh = np.exp(sq) / math.sqrt(m)
        mag = hh * (np.concatenate([A, A], axis=-1) + 1.0) + np.abs(exact) * (sq + 1.0)
    return componentwise_bound(mag, d + 8, dtype, oracle_dtype=None,
                               what=f"{kind} features: argument error -> relative error of exp/sin/cos")


# ----------------------------------------------------------------------------- linear attention


def _layout_S0(S0, layout):
    if S0 is None:
        return None
    S0 = np.asarray(S0, dtype=np.float64)
    return S0 if layout == "vk" else np.swapaxes(S0, -1, -2)


def linear_attention_mpmath(phi_q, phi_k, v, *, causal: bool, normalize: bool, eps: float = 0.0,
                            eps_mode: str = "add", S0=None, u0=None, layout: str = "vk") -> np.ndarray:
    r"""Dense materialization in mpmath: ``num_i = sum_{j kept} (phi_q_i.phi_k_j) v_j + S0 phi_q_i``,
    ``den_i = sum_{j kept} phi_q_i.phi_k_j + u0.phi_q_i``, ``o = num / (den + eps)`` (``eps_mode="add"``),
    ``num / max(den, eps)`` (``"clamp"``) or ``num / (phi_q_i . (u0 + sum_j phi_k_j + eps))`` (``"key_sum"``:
    eps added to every entry of the running key sum, performer-pytorch's causal linear attention)."""
    pq, pk, v = (np.asarray(a, dtype=np.float64) for a in (phi_q, phi_k, v))
    S0 = _layout_S0(S0, layout)
    b, lq, h, n = pq.shape
    lk, e = pk.shape[1], v.shape[3]
    out = np.zeros((b, lq, h, e))
    with mpmath.workdps(DPS):
        for bi in range(b):
            for hi in range(h):
                for i in range(lq):
                    js = range(i + 1) if causal else range(lk)
                    a = {j: mpmath.fsum(_mp(pq[bi, i, hi, c]) * _mp(pk[bi, j, hi, c]) for c in range(n)) for j in js}
                    den = mpmath.fsum(a.values())
                    if u0 is not None:
                        den += mpmath.fsum(_mp(u0[bi, hi, c]) * _mp(pq[bi, i, hi, c]) for c in range(n))
                    if eps_mode == "add":
                        den = den + _mp(eps)
                    elif eps_mode == "key_sum":
                        den = den + _mp(eps) * mpmath.fsum(_mp(pq[bi, i, hi, c]) for c in range(n))
                    elif eps_mode == "clamp":
                        den = max(den, _mp(eps))
                    else:
                        raise ValueError(f"eps_mode: expected 'add', 'clamp' or 'key_sum', got {eps_mode!r}")
                    for p in range(e):
                        num = mpmath.fsum(a[j] * _mp(v[bi, j, hi, p]) for j in js)
                        if S0 is not None:
                            num += mpmath.fsum(_mp(S0[bi, hi, p, c]) * _mp(pq[bi, i, hi, c]) for c in range(n))
                        out[bi, i, hi, p] = float(num / den) if normalize else float(num)
    return out


def linear_attention_fsum(phi_q, phi_k, v, *, causal: bool, normalize: bool, eps: float = 0.0) -> np.ndarray:
    r"""Float64 dense materialization with correctly rounded sums (``math.fsum``) for large cases.

    Each product ``a_ij = phi_q_i.phi_k_j`` is an ``fsum`` of exact float64 products' roundings
    (error ``<= gamma_1`` per term, ``u`` for the sum), then ``num = fsum(a_ij v_j)``: oracle depth 4.
    """
    pq, pk, v = (np.asarray(a, dtype=np.float64) for a in (phi_q, phi_k, v))
    b, l, h, n = pq.shape
    e = v.shape[3]
    out = np.zeros((b, l, h, e))
    for bi in range(b):
        for hi in range(h):
            P = pq[bi, :, hi, :, None] * pk[bi, :, hi].T[None]  # (lq n lk) exact products rounded once
            for i in range(l):
                lk = i + 1 if causal else pk.shape[1]
                a = np.array([math.fsum(P[i, :, j]) for j in range(lk)])
                den = math.fsum(a) + eps
                for p_ in range(e):
                    num = math.fsum(a * v[bi, :lk, hi, p_])
                    out[bi, i, hi, p_] = num / den if normalize else num
    return out


def linear_attention_magnitude(phi_q, phi_k, v, o_exact, *, causal: bool, normalize: bool, eps: float = 0.0,
                               S0=None, u0=None, layout: str = "vk", eps_mode: str = "add") -> np.ndarray:
    """``N_abs`` (unnormalized) or ``(N_abs + |o| D_abs) / |den_eps|`` (normalized), ``(b lq h e)``, with
    ``den_eps = den + eps`` (``eps_mode="add"``), ``max(den, eps)`` (``"clamp"``) or ``den + eps sum_c phi_q_c``
    (``"key_sum"``, where ``D_abs`` also gains ``eps sum_c |phi_q_c|``).

    Also the sensitivity to relative perturbations of the features: if every feature carries a relative
    error ``<= f``, every product ``phi_q.phi_k`` moves by ``<= 2f`` relative, so the output moves by
    ``<= 2 f`` times this magnitude (first order).
    """
    pq, pk, v = (np.abs(np.asarray(a, dtype=np.float64)) for a in (phi_q, phi_k, v))
    S0 = _layout_S0(S0, layout)
    b, lq, h, n = pq.shape
    lk = pk.shape[1]
    A = np.einsum("bihn,bjhn->bhij", pq, pk)
    if causal:
        A = A * np.tril(np.ones((lq, lk)))
    N_abs = np.einsum("bhij,bjhe->bihe", A, v)
    D_abs = np.einsum("bhij->bih", A)
    if S0 is not None:
        N_abs = N_abs + np.einsum("bhen,bihn->bihe", np.abs(S0), pq)
    if u0 is not None:
        D_abs = D_abs + np.einsum("bhn,bihn->bih", np.abs(np.asarray(u0, dtype=np.float64)), pq)
    if not normalize:
        return N_abs
    sq, sk = np.asarray(phi_q, dtype=np.float64), np.asarray(phi_k, dtype=np.float64)
    As = np.einsum("bihn,bjhn->bhij", sq, sk)
    if causal:
        As = As * np.tril(np.ones((lq, lk)))
    den = np.einsum("bhij->bih", As)
    if u0 is not None:
        den = den + np.einsum("bhn,bihn->bih", np.asarray(u0, dtype=np.float64), sq)
    if eps_mode == "key_sum":
        den = den + eps * np.sum(sq, axis=-1)
        D_abs = D_abs + abs(eps) * np.sum(pq, axis=-1)
    elif eps_mode == "clamp":
        den = np.maximum(den, eps)
    else:
        den = den + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        return (N_abs + np.abs(np.asarray(o_exact, dtype=np.float64)) * D_abs[..., None]) / np.abs(den)[..., None]


def linear_attention_bound(phi_q, phi_k, v, o_exact, *, causal: bool, normalize: bool, eps: float = 0.0,
                           S0=None, u0=None, layout: str = "vk", dtype=np.float64, oracle_dtype=None,
                           oracle_depth: Optional[float] = None, eps_mode: str = "add") -> Bound:
    """The derived bound of the module docstring for every linear-attention view (``eps_mode="key_sum"``: one
    more rounding, ``z + eps`` entrywise before the dot product with ``phi_q``)."""
    n, lk = np.shape(phi_q)[-1], np.shape(phi_k)[1]
    mag = linear_attention_magnitude(phi_q, phi_k, v, o_exact, causal=causal, normalize=normalize, eps=eps,
                                     S0=S0, u0=u0, layout=layout, eps_mode=eps_mode)
    depth = n + lk + 3 + (eps_mode == "key_sum")
    if not normalize:
        return componentwise_bound(mag, depth, dtype, oracle_dtype=oracle_dtype, oracle_depth=oracle_depth,
                                   what="linear attention, unnormalized: dot n, multiply, sum over L+1 terms")
    return componentwise_bound(mag, depth + 1, dtype, oracle_dtype=oracle_dtype, oracle_depth=oracle_depth,
                               what="linear attention, normalized: (N_abs + |o| D_abs)/|den + eps|, one more rounding")


# ----------------------------------------------------------------------------- fast weights, delta rule


def fast_weights_mpmath(a, b_vec, x_read, W0=None) -> np.ndarray:
    r"""``W_i = W_{i-1} + a_i b_i^T`` (sigma = identity), ``y_i = W_i x_i``, as the closed sum
    ``y_i = W0 x_i + sum_{j<=i} a_j (b_j.x_i)`` in mpmath (dense materialization, not the recurrence)."""
    a, bv, xr = (np.asarray(t, dtype=np.float64) for t in (a, b_vec, x_read))
    B, l, h, p = a.shape
    r = bv.shape[3]
    out = np.zeros((B, l, h, p))
    with mpmath.workdps(DPS):
        for bi in range(B):
            for hi in range(h):
                for i in range(l):
                    dots = [mpmath.fsum(_mp(bv[bi, j, hi, c]) * _mp(xr[bi, i, hi, c]) for c in range(r)) for j in range(i + 1)]
                    for pp in range(p):
                        y = mpmath.fsum(_mp(a[bi, j, hi, pp]) * dots[j] for j in range(i + 1))
                        if W0 is not None:
                            y += mpmath.fsum(_mp(W0[bi, hi, pp, c]) * _mp(xr[bi, i, hi, c]) for c in range(r))
                        out[bi, i, hi, pp] = float(y)
    return out


def fast_weights_state_mpmath(a, b_vec, W0=None) -> np.ndarray:
    r"""The final fast weights ``W_L = W0 + sum_j a_j b_j^T`` ``(b h p n)``, each entry one ``mpmath.fsum``."""
    a, bv = (np.asarray(t, dtype=np.float64) for t in (a, b_vec))
    B, l, h, p = a.shape
    n = bv.shape[3]
    out = np.zeros((B, h, p, n))
    with mpmath.workdps(DPS):
        for bi in range(B):
            for hi in range(h):
                for i in range(p):
                    for c in range(n):
                        terms = [_mp(a[bi, j, hi, i]) * _mp(bv[bi, j, hi, c]) for j in range(l)]
                        if W0 is not None:
                            terms.append(_mp(W0[bi, hi, i, c]))
                        out[bi, hi, i, c] = float(mpmath.fsum(terms))
    return out


def multi_head_mpmath(x_q, x_kv, W_Q, W_K, W_V, W_O, scale, keep=None) -> np.ndarray:
    r"""Multi-head attention from its definition, every step in mpmath (no intermediate rounding):

    ``q^(h)_i = x_q_i W_Q[h]``, ``k^(h)_j = x_kv_j W_K[h]``, ``v^(h)_j = x_kv_j W_V[h]``,
    ``Z^(h)_i = sum_j softmax_j(scale q^(h)_i . k^(h)_j) v^(h)_j`` over kept keys (an empty row is 0),
    ``out_i = concat_h(Z^(h)_i) W_O`` with the concatenation head-major (columns ``h p + c``).

    ``x_q (b l d)``, ``x_kv (b s d)``, ``W_Q, W_K (h d n)``, ``W_V (h d p)``, ``W_O (h*p, d_out)``, ``keep``
    broadcastable to ``(b h l s)``.  Returns ``(b l d_out)``.
    """
    xq, xkv, WQ, WK, WV, WO = (np.asarray(t, dtype=np.float64) for t in (x_q, x_kv, W_Q, W_K, W_V, W_O))
    b, l, d = xq.shape
    s = xkv.shape[1]
    h, _, n = WQ.shape
    p = WV.shape[2]
    dout = WO.shape[1]
    keep = np.broadcast_to(np.ones((1, 1, l, s), bool) if keep is None else np.asarray(keep), (b, h, l, s))
    out = np.zeros((b, l, dout))
    with mpmath.workdps(DPS):
        sc = _mp(scale)
        mp = lambda A: [[_mp(x) for x in row] for row in A]  # noqa: E731
        WOm = mp(WO)
        for bi in range(b):
            Xq, Xkv = mp(xq[bi]), mp(xkv[bi])
            Z = [[mpmath.mpf(0)] * (h * p) for _ in range(l)]
            for hi in range(h):
                wq, wk, wv = mp(WQ[hi]), mp(WK[hi]), mp(WV[hi])
                proj = lambda X, W, m: [[mpmath.fsum(X[r][c] * W[c][o] for c in range(d)) for o in range(m)]  # noqa: E731
                                        for r in range(len(X))]
                Q, K, V = proj(Xq, wq, n), proj(Xkv, wk, n), proj(Xkv, wv, p)
                for i in range(l):
                    sc_ij = [(j, sc * mpmath.fsum(Q[i][c] * K[j][c] for c in range(n))) for j in range(s)
                             if keep[bi, hi, i, j]]
                    if not sc_ij:
                        continue
                    w = [(j, mpmath.exp(x)) for j, x in sc_ij]
                    tot = mpmath.fsum(x for _, x in w)
                    for c in range(p):
                        Z[i][hi * p + c] = mpmath.fsum(x * V[j][c] for j, x in w) / tot
            for i in range(l):
                for o in range(dout):
                    out[bi, i, o] = float(mpmath.fsum(Z[i][r] * WOm[r][o] for r in range(h * p)))
    return out


def delta_rule_mpmath(q, k, v, beta, alpha=None, S0=None, key_norm=None, *, query_norm=None, scale: float = 1.0):
    r"""The (gated) delta rule ``S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T``,
    ``o_t = S_t (scale q_t)``, in mpmath matrices (the transition-matrix form, not the retrieve/update form).

    Returns ``(o, S_L)`` as float64.  ``key_norm`` / ``query_norm``: None / "sum" / "l2" applied to ``k`` / ``q``
    in mpmath, before the scale.
    """
    q, k, v, beta = (np.asarray(t, dtype=np.float64) for t in (q, k, v, beta))
    b, l, h, n = k.shape
    e = v.shape[3]
    o = np.zeros((b, l, h, e))
    SL = np.zeros((b, h, e, n))
    with mpmath.workdps(DPS):
        for bi in range(b):
            for hi in range(h):
                S = mpmath.matrix(e, n)
                if S0 is not None:
                    for i in range(e):
                        for j in range(n):
                            S[i, j] = _mp(S0[bi, hi, i, j])
                for t in range(l):
                    kt = mpmath.matrix([_mp(c) for c in k[bi, t, hi]])
                    if key_norm == "sum":
                        kt = kt / mpmath.fsum(kt)
                    elif key_norm == "l2":
                        kt = kt / mpmath.norm(kt)
                    qt = mpmath.matrix([_mp(c) for c in q[bi, t, hi]])
                    if query_norm == "sum":
                        qt = qt / mpmath.fsum(qt)
                    elif query_norm == "l2":
                        qt = qt / mpmath.norm(qt)
                    qt = qt * _mp(scale)
                    vt = mpmath.matrix([_mp(c) for c in v[bi, t, hi]])
                    bt = _mp(beta[bi, t, hi])
                    at = _mp(1.0) if alpha is None else _mp(alpha[bi, t, hi])
                    M = at * (mpmath.eye(n) - bt * kt * kt.T)
                    S = S * M + bt * vt * kt.T
                    ot = S * qt
                    for i in range(e):
                        o[bi, t, hi, i] = float(ot[i])
                for i in range(e):
                    for j in range(n):
                        SL[bi, hi, i, j] = float(S[i, j])
    return o, SL


def _norm_keys(k, key_norm):
    if key_norm == "sum":
        return k / np.sum(k, axis=-1, keepdims=True)
    if key_norm == "l2":
        return k / np.linalg.norm(k, axis=-1, keepdims=True)
    return k


def delta_rule_bound(q, k, v, beta, alpha=None, S0=None, *, view: str = "recurrent", chunk: int = 64,
                     key_norm=None, dtype=np.float64, state: bool = False, extra_local: float = 0):
    """Normwise-propagated bound for the (gated) delta rule outputs (module docstring); ``(b l h e)``.

    With ``state=True`` returns ``(bound_o, bound_S)``; ``bound_S`` ``(b h e n)`` holds the Frobenius
    bound ``||E_L||_F`` of the final state's error (which bounds every entry).  ``extra_local``: roundings added
    to every step's local error (a key normalized in the kernel carries a relative error ``gamma_(n+2)``; it
    enters the transition ``beta k k^T`` and the write ``beta v k^T`` at most twice: ``2 (n + 2)``).
    """
    q, k, v, beta = (np.asarray(t, dtype=np.float64) for t in (q, k, v, beta))
    k = _norm_keys(k, key_norm)
    b, l, h, n = k.shape
    e = v.shape[3]
    al = np.ones((b, l, h)) if alpha is None else np.asarray(alpha, dtype=np.float64)
    bk2 = beta * np.sum(k * k, axis=-1)
    if np.any(bk2 < 0) or np.any(bk2 > 2) or np.any(al <= 0) or np.any(al > 1):
        raise ValueError("delta_rule_bound: needs 0 <= beta |k|^2 <= 2 and 0 < alpha <= 1 (contractive transition)")
    g = lambda m: gamma(m, dtype)  # noqa: E731  (the oracle is mpmath: no oracle share)
    bound = np.zeros((b, l, h, e))
    bound_S = np.zeros((b, h, e, n))
    for bi in range(b):
        for hi in range(h):
            S = np.zeros((e, n)) if S0 is None else np.asarray(S0, dtype=np.float64)[bi, hi].copy()
            err = 0.0  # ||E_t||_F upper bound
            Ssnap = []
            for t in range(l):
                kt, vt, bt, at = k[bi, t, hi], v[bi, t, hi], beta[bi, t, hi], al[bi, t, hi]
                aS = np.abs(S)
                local = at * aS + bt * np.outer(np.abs(vt) + at * aS @ np.abs(kt), np.abs(kt))
                err += g(n + 4 + extra_local) * np.linalg.norm(local)
                S = at * S @ (np.eye(n) - bt * np.outer(kt, kt)) + bt * np.outer(vt, kt)
                Ssnap.append(S.copy())
                if view == "recurrent":
                    bound[bi, t, hi] = err * np.linalg.norm(q[bi, t, hi]) + g(n) * np.abs(S) @ np.abs(q[bi, t, hi])
            if view == "chunked":
                # per-chunk WY error magnitudes (forward substitution + products), propagated normwise
                extra_state = 0.0
                Sent = np.zeros((e, n)) if S0 is None else np.asarray(S0, dtype=np.float64)[bi, hi].copy()
                for s in range(0, l, chunk):
                    T = min(chunk, l - s)
                    K, V, Q = k[bi, s:s + T, hi], v[bi, s:s + T, hi], q[bi, s:s + T, hi]
                    bet = beta[bi, s:s + T, hi]
                    gg = np.cumsum(np.log(al[bi, s:s + T, hi]))
                    Gam = np.exp(np.tril(gg[:, None] - gg[None, :])) * np.tril(np.ones((T, T)))
                    strict = np.tril(np.ones((T, T)), -1)
                    Tw = np.eye(T) + bet[:, None] * (K @ K.T) * strict
                    Tu = np.eye(T) + bet[:, None] * Gam * (K @ K.T) * strict
                    W = solve_triangular(Tw, bet[:, None] * K, lower=True, unit_diagonal=True)
                    U = solve_triangular(Tu, bet[:, None] * V, lower=True, unit_diagonal=True)
                    absW = np.abs(W) + np.abs(np.linalg.inv(Tw)) @ np.abs(Tw) @ np.abs(W)
                    absU = np.abs(U) + np.abs(np.linalg.inv(Tu)) @ np.abs(Tu) @ np.abs(U)
                    gam = np.exp(gg)
                    QK = np.abs(Q) @ np.abs(K).T * np.tril(np.ones((T, T)))
                    aS = np.abs(Sent)
                    magO = gam[:, None] * (np.abs(Q) @ aS.T + QK @ (absW @ aS.T)) + (Gam * QK) @ absU
                    depth = n + T + 4 + extra_local
                    bound[bi, s:s + T, hi] += g(depth) * magO + extra_state * np.linalg.norm(Q, axis=1)[:, None]
                    magS = gam[-1] * (aS + (aS @ absW.T) @ np.abs(K)) + (absU * Gam[-1][:, None]).T @ np.abs(K)
                    extra_state += g(depth) * np.linalg.norm(magS)
                    Sent = Ssnap[s + T - 1]
                bound_S[bi, hi] = extra_state
            else:
                bound_S[bi, hi] = err
    src = (f"delta rule ({view}): normwise propagation through contractive transitions, "
           f"local gamma_(n+4) steps{', WY solves |T^-1||T||U| gamma_T per chunk' if view == 'chunked' else ''}")
    if state:
        return Bound(bound, src), Bound(bound_S, src + " (final state, Frobenius)")
    return Bound(bound, f"delta rule ({view}): normwise propagation through contractive transitions, "
                        f"local gamma_(n+4) steps{', WY solves |T^-1||T||U| gamma_T per chunk' if view == 'chunked' else ''}")


def sinusoid_exponent(i: int, d: int, exponent: str = "2i/d"):
    """The exponent ``e_i`` of frequency ``i`` (angle ``pos / base^e_i``), an mpmath number.

    ``"2i/d"``: the text's ``2i/d`` (Vaswani et al.); ``"i/(d/2-1)"``: tensor2tensor's
    ``get_timing_signal_1d`` (and fairseq, diffusion timestep embeddings): ``i / max(d/2 - 1, 1)`` with
    ``d/2 = floor(d/2)`` frequencies, so the last frequency is exactly ``1/base``.
    """
    if exponent == "2i/d":
        return mpmath.mpf(2 * i) / d
    if exponent == "i/(d/2-1)":
        return mpmath.mpf(i) / max(d // 2 - 1, 1)
    raise ValueError(f"exponent: expected '2i/d' or 'i/(d/2-1)', got {exponent!r}")


def sinusoid_columns(d: int, layout: str = "interleaved"):
    """``[(frequency index i, 'sin' | 'cos' | 'zero')]`` per column: interleaved (sin at even, cos at odd columns;
    an odd ``d`` ends with a sine, the text's formula) or concat (``floor(d/2)`` sines of frequencies ``0..``, then
    as many cosines; an odd ``d`` ends with a zero column, as tensor2tensor and fairseq pad)."""
    if layout == "interleaved":
        return [(c // 2, "sin" if c % 2 == 0 else "cos") for c in range(d)]
    if layout == "concat":
        half = d // 2
        return [(c, "sin") for c in range(half)] + [(c, "cos") for c in range(half)] + [(0, "zero")] * (d % 2)
    raise ValueError(f"layout: expected 'interleaved' or 'concat', got {layout!r}")


def sinusoidal_mpmath(length: int, d: int, base: float = 10000.0, offset: int = 0, *, layout: str = "interleaved",
                      exponent: str = "2i/d") -> np.ndarray:
    """``PE(pos, 2i) = sin(pos / base^(2i/d))``, ``PE(pos, 2i+1) = cos(...)`` in mpmath (the default layout and
    exponent; see :func:`sinusoid_columns`, :func:`sinusoid_exponent` for the others)."""
    out = np.zeros((length, d))
    cols = sinusoid_columns(d, layout)
    with mpmath.workdps(DPS):
        for p in range(length):
            pos = mpmath.mpf(p + offset)
            for c, (i, fn) in enumerate(cols):
                ang = pos / mpmath.power(_mp(base), sinusoid_exponent(i, d, exponent))
                out[p, c] = 0.0 if fn == "zero" else float(mpmath.sin(ang) if fn == "sin" else mpmath.cos(ang))
    return out


# ----------------------------------------------------------------------------- associative memory


def overlap_pmf(d: int, ones: int):
    """Exact pmf of the overlap ``c`` of two uniformly random ``ones``-subsets of ``{1..d}`` (hypergeometric),
    as a list of ``Fraction``: ``P(c) = C(ones, c) C(d - ones, ones - c) / C(d, ones)``."""
    from fractions import Fraction

    tot = math.comb(d, ones)
    return [Fraction(math.comb(ones, c) * math.comb(d - ones, ones - c), tot) for c in range(ones + 1)]


def bernstein_threshold(var: float, bound_range: float, n: int, alpha: float) -> float:
    r"""``t`` with ``P(|mean_n - mu| >= t) <= alpha`` for iid ``X`` with ``Var X = var`` and ``|X - mu| <= bound_range``
    (Bernstein: ``2 exp(-n t^2 / (2 var + 2 b t / 3))``), solved for ``t``."""
    L = math.log(2.0 / alpha)
    b = bound_range
    # n t^2 = L (2 var + 2 b t / 3)  ->  n t^2 - (2 b L / 3) t - 2 var L = 0
    return ((2 * b * L / 3) + math.sqrt((2 * b * L / 3) ** 2 + 8 * n * var * L)) / (2 * n)
