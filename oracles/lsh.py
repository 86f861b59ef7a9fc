r"""Ground truth for Reformer LSH attention (Kitaev et al. 2020), from the paper's definition.

Nothing here imports :mod:`refimpl` or the conformance layer; it never uses the sort/chunk code it checks.

* :func:`allowed_keys` -- for one batch row and head, per round and per query, the set of allowed keys built as
  Python sets: the round's order is ``sorted(range(l), key=lambda t: (bucket, t))``, a position's chunk is its place
  in that order divided by the chunk length, ``P_i^(r) = {j : same bucket, chunk_j in {chunk_i - 1, chunk_i},
  j <= i if causal}`` (``wrap``: chunk 0's previous chunk is the last one).  The union over the rounds counts each
  key once; the counts ``N_ij`` (how many rounds hold ``j``) are returned for the bound.  The self rule:
  ``"exclude"`` removes ``i`` unless nothing else is in the union; ``"penalty"`` (the paper's ``m_ii = 10^5``,
  trax's ``-1e5``) keeps ``i`` with its score lowered by ``1e5``.
* :func:`lsh_mpmath` -- the dense softmax over the union (each key once, no counts: the de-duplicated
  multi-round combination equals it exactly), keys normalized ``qk_j / ||qk_j||`` in mpmath at 50 digits.
* :func:`lsh_fsum` -- the same in float64 with correctly rounded sums (``math.fsum``) and ``scipy``'s logsumexp,
  for larger cases.
* :func:`hash_oracle` -- ``argmax([x R; -x R])`` by ``math.fsum`` dot products (first maximum).

Bound (:func:`lsh_attention_bound`), first order, derived for an implementation that computes, per round, a
max-subtracted softmax over at most ``K`` keys of ``s'_ij = scale q_i . k_j - log N_ij`` and combines the rounds by
their log-sum-exp (``K = 2c`` for the sorted chunks; the materialized view's one softmax over ``r l`` entries is
the case of one "round" of ``K = r l``, which the same count covers).  Per query ``i`` over its union ``U_i``:

* the score: ``||k_j||`` (a sum of ``n`` squares, ``sqrt``, a division: ``gamma_{n+2}`` relative, componentwise),
  the dot product (``gamma_n``), the scale (``u``), ``log N`` (``u log N``) and the subtraction (``u``):
  ``|err s'_ij| <= gamma_{2n+5} T_i`` with ``T_i = max_j (|scale| |q_i|.|k_j| + log N_ij)`` (``sigma_i``);
* one round's weights ``exp(s' - m)``: ``rho_i = 2 sigma_i + u spread_i + 2u`` (both scores' errors, the
  subtraction, ``exp`` within ``2u``); its output ``(2 rho_i + gamma_{2K+1})`` times ``sum_j p_ij |v_j|``;
  its log-sum-exp ``z^(r)``: ``sigma_i + rho_i + gamma_K + 2u Lambda_i``;
* the combination ``sum_r exp(z^(r) - z) o^(r)``: ``z`` adds ``u spread_i + 2u + gamma_r + 2u Lambda_i``, each
  weight ``exp(z^(r) - z)`` the errors of both plus ``u spread_i + 2u``, the weighted sum ``gamma_{r+1}``.
  The exact identity ``sum_r exp(z^(r) - z) sum_j p^(r)_ij |v_j| = sum_{j in U_i} p_ij |v_j|`` (``p`` the union
  softmax) turns every per-round magnitude into ``pv_i = sum_{j in U_i} p_ij |v_j|``.

Summed and folded into one gamma (``gamma_a x + gamma_b y <= gamma_max(a,b) (x + y)``, ``u <= gamma_1``):
``|err o_i| <= gamma_D (13 T_i + 7 spread_i + 8 Lambda_i + 15) pv_i``, ``D = 2n + 5K + 2r + 8``, with
``spread_i = max_{U_i} s' - min_{U_i} s' + log(K r)`` (bounds every ``|s' - m|`` and ``|z^(r) - z|``) and
``Lambda_i = max_{U_i} |s'| + log(K r)`` (bounds every ``|m|``, ``|z^(r)|``, ``|z|``).  A row whose union is
``{i}`` is the copy ``v_i`` (error 0, inside the bound).  The ``"penalty"`` self rule changes the exact answer by
a weight ``< exp(-1e5 + spread)``, far below the underflow floor, so it shares the bound.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Set, Tuple

import mpmath
import numpy as np
import scipy.special

from oracles.tolerance import Bound, componentwise_bound

DPS = 50
SELF_PENALTY = 1e5
SELF_RULES = ("exclude", "penalty")

__all__ = ["allowed_keys", "keep_and_counts", "lsh_mpmath", "lsh_fsum", "hash_oracle", "lsh_attention_bound",
           "SELF_RULES", "SELF_PENALTY"]


def allowed_keys(buckets_lr, chunk: int, *, causal: bool = False, wrap: bool = False
                 ) -> Tuple[List[List[Set[int]]], List[Set[int]], List[Dict[int, int]]]:
    """``(per_round, union, counts)`` for one batch row and head's buckets ``(l r)`` (self included everywhere).

    ``per_round[r][i]`` = ``P_i^(r)``; ``union[i]`` = ``U_r P_i^(r)``; ``counts[i][j]`` = ``N_ij``."""
    bk = [[int(x) for x in row] for row in np.asarray(buckets_lr).tolist()]
    l = len(bk)
    r = len(bk[0]) if l else 0
    n_chunks = (l + chunk - 1) // chunk
    per_round = []
    for ri in range(r):
        order = sorted(range(l), key=lambda t: (bk[t][ri], t))
        chunk_of = {t: place // chunk for place, t in enumerate(order)}
        sets = []
        for i in range(l):
            ci = chunk_of[i]
            near = {ci}
            if ci > 0:
                near.add(ci - 1)
            elif wrap and n_chunks > 1:
                near.add(n_chunks - 1)
            sets.append({j for j in range(l) if bk[j][ri] == bk[i][ri] and chunk_of[j] in near
                         and (not causal or j <= i)})
        per_round.append(sets)
    union = [set().union(*(per_round[ri][i] for ri in range(r))) for i in range(l)]
    counts = [{j: sum(j in per_round[ri][i] for ri in range(r)) for j in union[i]} for i in range(l)]
    return per_round, union, counts


def keep_and_counts(buckets, chunk: int, *, causal: bool = False, wrap: bool = False, self_rule: str = "exclude"):
    """``(keep (b h l l) bool, counts (b h l l) int, self_only (b h l) bool)`` from ``buckets (b l h z)``.

    ``keep`` is the union after the self rule (``"penalty"`` keeps the diagonal; its score is lowered later)."""
    if self_rule not in SELF_RULES:
        raise ValueError(f"self_rule: expected one of {SELF_RULES}, got {self_rule!r}")
    bk = np.asarray(buckets)
    b, l, h, r = bk.shape
    keep = np.zeros((b, h, l, l), dtype=bool)
    counts = np.zeros((b, h, l, l), dtype=np.int64)
    alone = np.zeros((b, h, l), dtype=bool)
    for bi in range(b):
        for hi in range(h):
            _, union, cnt = allowed_keys(bk[bi, :, hi], chunk, causal=causal, wrap=wrap)
            for i in range(l):
                others = union[i] - {i}
                alone[bi, hi, i] = not others
                use = union[i] if (self_rule == "penalty" or not others) else others
                for j in use:
                    keep[bi, hi, i, j] = True
                for j, c in cnt[i].items():
                    counts[bi, hi, i, j] = c
    return keep, counts, alone


def _mp(x):
    return mpmath.mpf(float(x))


def lsh_mpmath(qk, v, buckets, chunk: int, scale: float, *, causal: bool = False, wrap: bool = False,
               self_rule: str = "exclude") -> np.ndarray:
    r"""``o_i = sum_{j in U_i} softmax_j(scale q_i . qk_j / ||qk_j||) v_j`` in mpmath (each key once); ``(b l h p)``.

    ``"penalty"``: the self score is lowered by ``1e5`` (kept in the softmax)."""
    qk, v = np.asarray(qk, dtype=np.float64), np.asarray(v, dtype=np.float64)
    b, l, h, n = qk.shape
    p = v.shape[3]
    keep, _, _ = keep_and_counts(buckets, chunk, causal=causal, wrap=wrap, self_rule=self_rule)
    out = np.zeros((b, l, h, p))
    with mpmath.workdps(DPS):
        sc = _mp(scale)
        for bi in range(b):
            for hi in range(h):
                knorm = []
                for j in range(l):
                    nrm = mpmath.sqrt(mpmath.fsum(_mp(x) ** 2 for x in qk[bi, j, hi]))
                    knorm.append([(_mp(x) / nrm) if nrm > 0 else mpmath.mpf(0) for x in qk[bi, j, hi]])
                for i in range(l):
                    scores = []
                    for j in range(l):
                        if not keep[bi, hi, i, j]:
                            continue
                        s = sc * mpmath.fsum(_mp(qk[bi, i, hi, c]) * knorm[j][c] for c in range(n))
                        if j == i and self_rule == "penalty":
                            s -= SELF_PENALTY
                        scores.append((j, s))
                    m = max(s for _, s in scores)
                    w = [(j, mpmath.exp(s - m)) for j, s in scores]
                    Z = mpmath.fsum(x for _, x in w)
                    for c in range(p):
                        out[bi, i, hi, c] = float(mpmath.fsum(x * _mp(v[bi, j, hi, c]) for j, x in w) / Z)
    return out


def _scores_fsum(qk, scale):
    """``s (b h l l)`` = ``scale q_i . k_j`` with ``k_j = qk_j / ||qk_j||``, every sum by ``math.fsum``."""
    qk = np.asarray(qk, dtype=np.float64)
    b, l, h, n = qk.shape
    s = np.zeros((b, h, l, l))
    for bi in range(b):
        for hi in range(h):
            K = []
            for j in range(l):
                nrm = math.sqrt(math.fsum(float(x) * float(x) for x in qk[bi, j, hi]))
                K.append([float(x) / nrm if nrm > 0 else 0.0 for x in qk[bi, j, hi]])
            for i in range(l):
                qi = qk[bi, i, hi].tolist()
                for j in range(l):
                    s[bi, hi, i, j] = scale * math.fsum(a * c for a, c in zip(qi, K[j]))
    return s


def lsh_fsum(qk, v, buckets, chunk: int, scale: float, *, causal: bool = False, wrap: bool = False,
             self_rule: str = "exclude") -> np.ndarray:
    """:func:`lsh_mpmath` in float64: ``math.fsum`` dot products and norms, ``scipy.special.logsumexp`` weights."""
    v = np.asarray(v, dtype=np.float64)
    keep, _, _ = keep_and_counts(buckets, chunk, causal=causal, wrap=wrap, self_rule=self_rule)
    s = _scores_fsum(qk, scale)
    if self_rule == "penalty":
        l = s.shape[-1]
        s = s - SELF_PENALTY * np.eye(l)[None, None]
    s = np.where(keep, s, -np.inf)
    if s.shape[-1] == 0:
        return np.zeros(v.shape)
    lse = scipy.special.logsumexp(s, axis=-1, keepdims=True)
    P = np.exp(s - lse)
    b, l, h, p = v.shape
    out = np.zeros((b, l, h, p))
    for bi in range(b):
        for hi in range(h):
            for i in range(l):
                js = np.nonzero(keep[bi, hi, i])[0]
                for c in range(p):
                    out[bi, i, hi, c] = math.fsum(P[bi, hi, i, j] * v[bi, j, hi, c] for j in js)
    return out


def hash_oracle(qk, rotations) -> np.ndarray:
    """``buckets (b l h z)``: ``argmax([x R_r; -x R_r])`` (the first maximum) with ``math.fsum`` dot products."""
    qk, R = np.asarray(qk, dtype=np.float64), np.asarray(rotations, dtype=np.float64)
    b, l, h, n = qk.shape
    r, _, u = R.shape
    out = np.zeros((b, l, h, r), dtype=np.int64)
    for bi in range(b):
        for t in range(l):
            for hi in range(h):
                x = qk[bi, t, hi].tolist()
                for ri in range(r):
                    proj = [math.fsum(x[c] * R[ri, c, a] for c in range(n)) for a in range(u)]
                    vals = proj + [-y for y in proj]
                    out[bi, t, hi, ri] = max(range(2 * u), key=lambda a: (vals[a], -a))
    return out


def lsh_attention_bound(qk, v, buckets, chunk: int, scale: float, dtype, *, causal: bool = False,
                        wrap: bool = False, self_rule: str = "exclude", keys_per_softmax: Optional[int] = None,
                        oracle_dtype=None) -> Bound:
    """The module docstring's bound, elementwise ``(b l h p)``.

    ``keys_per_softmax`` = ``K``: the most keys one softmax of the candidate sums (default ``2 chunk``, the sorted
    chunks; pass ``r l`` for the materialized view's one softmax over every round's entries)."""
    qk, v = np.asarray(qk, dtype=np.float64), np.asarray(v, dtype=np.float64)
    b, l, h, n = qk.shape
    r = np.asarray(buckets).shape[3]
    K = 2 * chunk if keys_per_softmax is None else int(keys_per_softmax)
    keep, counts, _ = keep_and_counts(buckets, chunk, causal=causal, wrap=wrap, self_rule="exclude")
    norm = np.sqrt(np.sum(qk * qk, axis=-1, keepdims=True))
    kn = qk / np.where(norm > 0, norm, 1.0)
    s = scale * np.einsum("bihn,bjhn->bhij", qk, kn)
    S = abs(scale) * np.einsum("bihn,bjhn->bhij", np.abs(qk), np.abs(kn))
    logN = np.log(np.maximum(counts, 1))
    sp = s - logN
    big = np.where(keep, sp, -np.inf)
    small = np.where(keep, sp, np.inf)
    if l == 0:
        return Bound(np.zeros(v.shape), "empty")
    extra = math.log(max(K * r, 1))
    T = np.max(np.where(keep, S + logN, 0.0), axis=-1)
    spread = np.max(big, axis=-1) - np.min(small, axis=-1) + extra
    Lam = np.max(np.where(keep, np.abs(sp), 0.0), axis=-1) + extra
    w = np.where(keep, np.exp(big - np.max(big, axis=-1, keepdims=True)), 0.0)
    P = w / np.sum(w, axis=-1, keepdims=True)
    pv = np.einsum("bhij,bjhp->bihp", P, np.abs(v))
    factor = 13.0 * T + 7.0 * spread + 8.0 * Lam + 15.0  # (b h l)
    magnitude = np.einsum("bhi,bihp->bihp", factor, pv)
    D = 2 * n + 5 * K + 2 * r + 8
    return componentwise_bound(magnitude, D, dtype, oracle_dtype=oracle_dtype,
                               what=f"LSH attention: scores gamma_(2n+5), per-round softmax over K={K} keys, "
                                    f"{r} rounds combined by log-sum-exp (oracles/lsh.py docstring)")
