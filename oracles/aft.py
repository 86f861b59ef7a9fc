r"""Ground truth for the Attention Free Transformer (Zhai et al. 2021): dense materialization of the formulas.

Nothing here imports refimpl.  The kept keys and the position biases are built from the paper's definitions as
Python sets and conditions, element by element:

* AFT-full ``Y_t = sigmoid(Q_t) sum_t' exp(K_t' + w_{t,t'}) V_t' / sum_t' exp(K_t' + w_{t,t'})``;
* AFT-simple: ``w = 0``;  AFT-local: the bias ``w_{t,t'}`` only for ``t - left <= t' <= t + right``, ``0``
  elsewhere (every key still counts);  causal: only ``t' <= t``.

:func:`aft_mpmath` evaluates it in mpmath at 50 digits (no shift needed: mpmath's exponent range is unbounded);
:func:`aft_fsum` in float64 with the row max subtracted and correctly rounded sums (``math.fsum``) for larger
cases.  :func:`paper_window` translates the paper's ``s`` (``|t - t'| < s``) into ``(left, right)``.

The bound (:func:`aft_bound`), first order, elementwise ``(b l d)``
------------------------------------------------------------------
Per output ``(t, c)`` let ``a_j = K_{j,c} + w'_{t,j}`` over the kept keys ``j``, ``p_j`` their softmax,
``PV = sum_j p_j |V_{j,c}|``, and ``A = max_j |K_{j,c}| + max_j |w'_{t,j}|`` (kept ``j``).

* Weights.  Any stable evaluation forms ``exp(a_j - shift)`` from at most four additions/subtractions of
  logits and shifts (``K + w``, ``- m``, or ``K - m_K`` and ``w - m_w`` separately), each of magnitude
  ``<= 2A`` (a shift is a max of logits, or a sum of a max of ``K`` and a max of ``w``): argument error
  ``<= 8 A u``, a relative error of the weight.  Up to three exponentials (``exp(K - m)``, ``exp(w - mw)``,
  ``exp(-mw)``), each within ``TRANSCENDENTAL_U = 8u`` (4 ulp, ``oracles.tolerance``), and two products: ``26u``.
  A running max (the online softmax of causal kernels) rescales a stored weight at most ``L`` times, each time by
  ``exp(m_old - m_new)``: argument ``<= 2A`` (one rounding), exp ``8u``, the product ``u``: ``L (2A + 9) u``.
  So every weight has relative error ``<= eta u`` with ``eta = 8A + 26 + L (2A + 9)``.
* Perturbed weights move the ratio ``sum p_j V_j`` by ``<= eta u (PV + |y|) <= 2 eta u PV`` (first order).
* The sums: the numerator ``sum e_j V_j`` (``L`` products and ``L - 1`` additions, any order) ``gamma_{L+1}``
  relative to ``sum e_j |V_j|``; the denominator ``gamma_L``; the quotient ``u``:
  ``<= gamma_{2L+2} PV``.
* ``sigmoid(Q) = 1/(1 + exp(-Q))``: exp ``8u`` times ``exp(-Q)/(1 + exp(-Q)) <= 1``, the addition and the division
  ``2u``; the final product ``u``: ``11u`` relative.

Total: ``|err| <= gamma_{2 eta + 2L + 13} sigmoid(Q_t) PV`` (the depth need not be an integer), plus the float64
oracle's own share when the oracle is :func:`aft_fsum` (the same bound in float64: a superset of its roundings).
This assumes no weight is lost to underflow: the kernels' shift exceeds the row max by ``<= 2 max |w|``, so
inputs keep ``2 max |w|`` well inside the exponent range (the cases draw ``|w| <= 4``; ``|K|`` is unrestricted).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Set, Tuple

import mpmath
import numpy as np

from oracles.tolerance import Bound, componentwise_bound

DPS = 50
VARIANTS = ("full", "simple", "local")
TRANSCENDENTAL_U = 8.0  # 4 ulp of one exp (oracles.tolerance.TRANSCENDENTAL_U)

__all__ = ["VARIANTS", "paper_window", "kept_keys", "biased_keys", "aft_mpmath", "aft_fsum", "aft_bound",
           "aft_oracle", "MPMATH_WORK"]

MPMATH_WORK = 4000  # b l^2 d up to which aft_oracle uses mpmath


def paper_window(s: int) -> Tuple[int, int]:
    """The paper's AFT-local window ``s`` (``w'_{t,t'} = w_{t,t'}`` iff ``|t - t'| < s``) as ``(left, right)``."""
    if s < 1:
        raise ValueError(f"s: expected the paper's window size s >= 1 (|t - t'| < s), got {s}")
    return s - 1, s - 1


def kept_keys(t: int, l: int, causal: bool) -> Set[int]:
    """The keys query ``t`` sums over: every ``t'`` (non-causal) or ``t' <= t`` (causal)."""
    return set(range(t + 1)) if causal else set(range(l))


def biased_keys(t: int, l: int, variant: str, window: Optional[Tuple[int, int]]) -> Set[int]:
    """The keys whose position bias ``w_{t,t'}`` applies: all (full), none (simple), ``t-left..t+right`` (local)."""
    if variant == "full":
        return set(range(l))
    if variant == "simple":
        return set()
    if variant == "local":
        left, right = window
        return {tp for tp in range(l) if t - left <= tp <= t + right}
    raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")


def _bias(w, t, tp, biased) -> float:
    return float(w[t, tp]) if tp in biased else 0.0


def aft_mpmath(q, k, v, w=None, *, variant: str, causal: bool, window=None) -> np.ndarray:
    r"""The AFT output ``(b l d)`` by dense materialization in mpmath (50 digits)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, d = q.shape
    out = np.zeros((b, l, d))
    with mpmath.workdps(DPS):
        for t in range(l):
            kept = sorted(kept_keys(t, l, causal))
            biased = biased_keys(t, l, variant, window)
            bias = {tp: mpmath.mpf(_bias(w, t, tp, biased)) for tp in kept}
            for bi in range(b):
                for c in range(d):
                    e = [mpmath.exp(mpmath.mpf(float(k[bi, tp, c])) + bias[tp]) for tp in kept]
                    num = mpmath.fsum(x * mpmath.mpf(float(v[bi, tp, c])) for x, tp in zip(e, kept))
                    den = mpmath.fsum(e)
                    gate = 1 / (1 + mpmath.exp(-mpmath.mpf(float(q[bi, t, c]))))
                    out[bi, t, c] = float(gate * num / den)
    return out


def aft_fsum(q, k, v, w=None, *, variant: str, causal: bool, window=None) -> np.ndarray:
    r"""The AFT output in float64: per ``(t, c)`` the logits minus their max, ``exp``, ``math.fsum`` sums."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, d = q.shape
    out = np.zeros((b, l, d))
    for t in range(l):
        kept = np.array(sorted(kept_keys(t, l, causal)), dtype=np.int64)
        biased = biased_keys(t, l, variant, window)
        bias = np.array([_bias(w, t, int(tp), biased) for tp in kept])
        for bi in range(b):
            a = k[bi, kept, :] + bias[:, None]  # (kept, d)
            e = np.exp(a - a.max(axis=0))
            ev = e * v[bi, kept, :]
            for c in range(d):
                x = -q[bi, t, c]
                gate = 1.0 / (1.0 + math.exp(x)) if x <= 0 else math.exp(-x) / (1.0 + math.exp(-x))
                out[bi, t, c] = gate * (math.fsum(ev[:, c]) / math.fsum(e[:, c]))
    return out


def aft_oracle(q, k, v, w=None, *, variant: str, causal: bool, window=None) -> Tuple[np.ndarray, Optional[type]]:
    """``(Y, oracle_dtype)``: mpmath for ``b l^2 d <= MPMATH_WORK`` (``oracle_dtype=None``), else float64 fsum."""
    b, l, d = np.shape(q)
    if b * l * l * d <= MPMATH_WORK:
        return aft_mpmath(q, k, v, w, variant=variant, causal=causal, window=window), None
    return aft_fsum(q, k, v, w, variant=variant, causal=causal, window=window), np.float64


def aft_bound(q, k, v, w=None, *, variant: str, causal: bool, window=None, dtype=np.float64,
              oracle_dtype=None) -> Bound:
    """The derived bound of the module docstring, elementwise ``(b l d)``."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, d = q.shape
    if l == 0:
        return Bound(np.zeros((b, 0, d)), "empty")
    keep = np.array([[tp in kept_keys(t, l, causal) for tp in range(l)] for t in range(l)])
    wp = np.zeros((l, l))
    for t in range(l):
        for tp in biased_keys(t, l, variant, window):
            wp[t, tp] = float(w[t, tp])
    a = k[:, None, :, :] + wp[None, :, :, None]  # (b t j c)
    a = np.where(keep[None, :, :, None], a, -np.inf)
    e = np.exp(a - a.max(axis=2, keepdims=True))
    p = e / e.sum(axis=2, keepdims=True)
    PV = np.einsum("btjc,bjc->btc", p, np.abs(v))
    Kabs = np.where(keep[None, :, :, None], np.abs(k)[:, None, :, :], 0.0).max(axis=2)  # (b t c)
    Wabs = np.where(keep, np.abs(wp), 0.0).max(axis=1)  # (t)
    A = Kabs + Wabs[None, :, None]
    eta = 8 * A + 26 + l * (2 * A + 9)
    gate = np.where(q >= 0, 1 / (1 + np.exp(-np.abs(q))), np.exp(-np.abs(q)) / (1 + np.exp(-np.abs(q))))
    depth = 2 * eta + 2 * l + 13
    # componentwise_bound takes one depth: fold the elementwise depth into the magnitude (gamma_n ~ n u, first order)
    dmax = float(depth.max())
    M = gate * PV * (depth / dmax)
    return componentwise_bound(M, dmax, dtype, oracle_dtype=oracle_dtype,
                               what="AFT: weights 2 eta u (8A + 26 + L(2A + 9)), sums gamma_{2L+2}, sigmoid 11u "
                                    "(oracles/aft.py)")
