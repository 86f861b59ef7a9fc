r"""Reformer LSH attention (Kitaev, Kaiser, Levskaya 2020), literal NumPy reference: two views.

Shapes (sequence-first)
-----------------------
* ``qk`` ``(b l h n)``: the shared query/key projection (shared-QK attention: queries are ``qk``, keys are the
  normalized ``k_j = qk_j / ||qk_j||``);
* ``v`` ``(b l h p)``; output ``o`` ``(b l h p)``;
* ``buckets`` ``(b l h z)`` integers ``>= 0``: the bucket of position ``t`` in hash round ``r`` (``z`` = the number of
  hash rounds, ``n_rounds``); passed in (a deterministic verification) or computed by :func:`hash_buckets`;
* ``rotations`` ``(z n u)`` with ``u = n_buckets / 2``: the random rotations ``R`` of every round, shared by every
  batch row and head.

The definition (the paper's section 2, "LSH attention" and "Multi-round LSH attention")
--------------------------------------------------------------------------------------
* hashing: ``h_r(x) = argmax([x R_r ; -x R_r])`` (``n_buckets`` even; ``argmax`` takes the first maximum);
* round ``r``: sort the positions by ``(bucket, position)`` (a stable sort of the buckets); ``rank_r(t)`` is the
  place of ``t`` in that order and ``chunk_r(t) = floor(rank_r(t) / c)`` (``c = chunk``; the last chunk may be
  short).  Query ``i`` may attend in round ``r`` to

      P_i^(r) = { j : h_r(j) = h_r(i),  chunk_r(j) in {chunk_r(i) - 1, chunk_r(i)},  j <= i if causal }

  -- the paper's ``P~_i`` (each chunk attends to itself and the previous one) intersected with the bucket.
  **Wrap-around** (``wrap``): the paper's ``P~_i`` has none (chunk 0 has no previous chunk; ``wrap=False``, the
  default); the authors' trax code (and the Hugging Face port) look at the adjacent chunk by rolling the chunk
  axis, so chunk 0 also attends to the last chunk (``wrap=True``; with one chunk both are the same).
* **de-duplication by counting**: ``N_ij = |{r : j in P_i^(r)}|``; in round ``r`` the score of key ``j`` is
  ``s_ij - log N_ij`` with ``s_ij = scale q_i . k_j`` (the paper's ``m_ij^(r) = log N_ij``).
* **the self rule**: ``i`` never attends to itself unless nothing else is available.  The paper writes
  ``m_ii = 10^5`` (trax: ``-1e5`` added to the self score), which in exact arithmetic leaves ``exp(-1e5)`` of
  weight; refimpl follows its stated intent exactly ("self_rule = exclude"): ``i`` is removed from every
  ``P_i^(r)``, and where the union ``P_i = U_r P_i^(r)`` holds nothing but ``i`` the output is ``v_i`` (the softmax
  over ``{i}``).  The two agree in floating point whenever the scores of a row spread by less than about
  ``1e5 - 745``.
* per round ``o_i^(r) = sum_{j in P_i^(r)} exp(s_ij - log N_ij - z_i^(r)) v_j`` with ``z_i^(r)`` the log-sum-exp of
  those scores; the rounds combine with their log-sum-exp weights
  ``o_i = sum_r exp(z_i^(r) - z_i) o_i^(r)``, ``z_i = log sum_r exp(z_i^(r))`` -- which equals one softmax over
  ``P_i`` with every key counted once.
* ``scale`` multiplies ``q . k``; ``None`` is the paper's ``n^{-1/2}`` (eq. 1).  trax and Hugging Face (as we read their code) normalize the
  keys to length ``sqrt(n)`` (``x rsqrt(mean(x^2) + 1e-6)``) and divide by ``sqrt(n)``: their effective scale is 1
  (the verify adapter passes ``scale=1``).  A zero key ``qk_j = 0`` normalizes to 0 (a convention; no epsilon).

Views (both ``backend="numpy"``)
--------------------------------
* :func:`sorted_chunks` -- the paper's algorithm: hash, sort, chunk, attend within each chunk and the previous one,
  unsort, combine the rounds by their log-sum-exp;
* :func:`materialized` -- per round the ``(l l)`` mask built from the buckets and chunks, then one dense softmax over
  all rounds' entries (``(l, r l)`` scores, ``-log N_ij`` subtracted).

float64 unless every float input is float32.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype
from refimpl.attention.softmax.reference import attention_scale, logsumexp, softmax

__all__ = ["random_rotations", "hash_buckets", "normalize_keys", "sorted_chunks", "materialized", "SELF_RULE"]

#: the self rule refimpl implements (see the module docstring); trax's ``-1e5`` penalty is the alternative
SELF_RULE = "exclude"


# ------------------------------------------------------------------ hashing

def random_rotations(n: int, n_buckets: int, n_rounds: int, seed: int) -> np.ndarray:
    """``R (z n u)``, ``u = n_buckets / 2``: independent standard normal entries from ``numpy.random.default_rng(seed)``
    (PCG64: the same seed gives the same rotations on every platform)."""
    n = check_int(n, "n", minimum=0)
    n_buckets = check_int(n_buckets, "n_buckets", minimum=2)
    if n_buckets % 2:
        raise ValueError(f"n_buckets: expected an even number (argmax over [xR; -xR]), got {n_buckets}")
    n_rounds = check_int(n_rounds, "n_rounds", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    return np.random.default_rng(seed).standard_normal((n_rounds, n, n_buckets // 2))


def hash_buckets(qk, rotations) -> np.ndarray:
    r"""``buckets (b l h z)``: ``h_r(x) = argmax([x R_r ; -x R_r])`` of every ``qk`` vector, ``R_r = rotations[r]``.

    ``qk (b l h n)``, ``rotations (z n u)``; buckets in ``0 .. 2u - 1`` (int64).  Hashing ``qk`` or the normalized
    key gives the same bucket (argmax is invariant to a positive factor).
    """
    qk = as_float_array(qk, "qk", ndim=4, allow_complex=False)
    b, l, h, n = qk.shape
    R = as_float_array(rotations, "rotations", ndim=3, allow_complex=False)
    check_shape(R, "rotations", (None, n, None), "(r, n, n_buckets / 2) with n from qk")
    if R.shape[0] < 1 or R.shape[2] < 1:
        raise ValueError(f"rotations: expected at least one round and one rotation (r >= 1, n_buckets / 2 >= 1), "
                         f"got shape {R.shape}")
    dtype = result_dtype(qk, R)
    # x R_r  (b l h z u)
    xR = np.einsum("blhn,rnu->blhru", qk.astype(dtype, copy=False), R.astype(dtype, copy=False))
    # h_r(x) = argmax([x R_r ; -x R_r])
    return np.argmax(np.concatenate([xR, -xR], axis=-1), axis=-1).astype(np.int64)


def normalize_keys(qk) -> np.ndarray:
    r"""``k_j = qk_j / ||qk_j||`` along ``n`` (a zero vector stays 0); ``qk (b l h n)`` -> ``(b l h n)``."""
    qk = as_float_array(qk, "qk", ndim=4, allow_complex=False)
    # ||qk_j|| = sqrt(sum_c qk_jc^2)
    norm = np.sqrt(np.sum(qk * qk, axis=-1, keepdims=True))
    # k_j = qk_j / ||qk_j||   (0 where the norm is 0)
    return qk / np.where(norm > 0, norm, 1.0)


def _check_buckets(buckets, b: int, l: int, h: int, n_buckets: Optional[int]) -> np.ndarray:
    if isinstance(buckets, (list, tuple)):
        try:
            buckets = np.asarray(buckets)
        except ValueError as exc:
            raise ValueError(f"buckets: expected a rectangular array of integers, got a ragged sequence ({exc})") \
                from None
    if not isinstance(buckets, np.ndarray) and hasattr(buckets, "__array__"):
        buckets = np.asarray(buckets)
    if not isinstance(buckets, np.ndarray):
        raise TypeError(f"buckets: expected an integer array (b, l, h, r), got {type(buckets).__name__}")
    if buckets.dtype.kind not in "iu":
        raise TypeError(f"buckets: expected an integer dtype (bucket indices), got {buckets.dtype}")
    if buckets.ndim != 4:
        raise ValueError(f"buckets: expected 4 dimensions (b, l, h, r), got shape {buckets.shape}")
    check_shape(buckets, "buckets", (b, l, h, None), "(b, l, h, r) with b, l, h from qk")
    if buckets.shape[3] < 1:
        raise ValueError(f"buckets: expected at least one hash round (z >= 1), got shape {buckets.shape}")
    if buckets.size and buckets.min() < 0:
        raise ValueError(f"buckets: expected bucket indices >= 0, got {int(buckets.min())}")
    if n_buckets is not None and buckets.size and buckets.max() >= n_buckets:
        raise ValueError(f"buckets: expected bucket indices < n_buckets = {n_buckets}, got {int(buckets.max())}")
    return np.ascontiguousarray(buckets, dtype=np.int64)


def _resolve_buckets(qk, *, buckets=None, rotations=None, seed=None, n_buckets=None, n_rounds=None) -> np.ndarray:
    """The buckets ``(b l h z)`` from exactly one of ``buckets=`` (used as given), ``rotations=`` (hashed) or
    ``seed=`` (``random_rotations(n, n_buckets, n_rounds, seed)``, then hashed; needs ``n_buckets`` and
    ``n_rounds``).  ``n_buckets`` / ``n_rounds``, when given with ``buckets`` or ``rotations``, must agree."""
    qk = as_float_array(qk, "qk", ndim=4, allow_complex=False)
    b, l, h, n = qk.shape
    given = [name for name, val in (("buckets", buckets), ("rotations", rotations), ("seed", seed))
             if val is not None]
    if len(given) != 1:
        raise ValueError(f"buckets: expected exactly one of buckets=, rotations= or seed=, got "
                         f"{', '.join(given) if given else 'none of them'}")
    if n_buckets is not None:
        n_buckets = check_int(n_buckets, "n_buckets", minimum=1)
    if n_rounds is not None:
        n_rounds = check_int(n_rounds, "n_rounds", minimum=1)
    if buckets is not None:
        out = _check_buckets(buckets, b, l, h, n_buckets)
        if n_rounds is not None and out.shape[3] != n_rounds:
            raise ValueError(f"n_rounds: expected the rounds of buckets ({out.shape[3]}), got {n_rounds}")
        return out
    if rotations is not None:
        R = as_float_array(rotations, "rotations", ndim=3, allow_complex=False)
        if n_rounds is not None and R.shape[0] != n_rounds:
            raise ValueError(f"n_rounds: expected the rounds of rotations ({R.shape[0]}), got {n_rounds}")
        if n_buckets is not None and 2 * R.shape[2] != n_buckets:
            raise ValueError(f"n_buckets: expected 2 x the rotations' last axis ({2 * R.shape[2]}), got {n_buckets}")
        return hash_buckets(qk, R)
    if n_buckets is None or n_rounds is None:
        missing = "n_buckets" if n_buckets is None else "n_rounds"
        raise ValueError(f"{missing}: required with seed= (the rotations are drawn as (n_rounds, n, n_buckets / 2)), "
                         f"got None")
    return hash_buckets(qk, random_rotations(n, n_buckets, n_rounds, seed))


def _validate(qk, v, buckets, rotations, seed, n_buckets, n_rounds, chunk, causal, scale, wrap):
    """Validated ``(qk, v, buckets, chunk, causal, scale, wrap, dtype)``."""
    qk = as_float_array(qk, "qk", ndim=4, allow_complex=False)
    b, l, h, n = qk.shape
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, l, h, None), "(b, l, h, p) with b, l, h from qk")
    chunk = check_int(chunk, "chunk", minimum=1)
    causal = check_bool(causal, "causal")
    wrap = check_bool(wrap, "wrap")
    scale = attention_scale(scale, n)
    bk = _resolve_buckets(qk, buckets=buckets, rotations=rotations, seed=seed, n_buckets=n_buckets,
                         n_rounds=n_rounds)
    rot = None if rotations is None else np.asarray(rotations)
    dtype = result_dtype(qk, v, rot if rot is not None and rot.dtype.kind == "f" else None)
    return qk.astype(dtype, copy=False), v.astype(dtype, copy=False), bk, chunk, causal, scale, wrap, dtype


# ------------------------------------------------------------------ sort and chunk (shared by the two views)

def _sort_order(bucket_r: np.ndarray) -> np.ndarray:
    """The positions sorted by ``(bucket, position)``: a stable sort of one round's buckets ``(l,)``."""
    return np.argsort(bucket_r, kind="stable")


def _previous_chunk(ci: int, n_chunks: int, wrap: bool) -> Optional[int]:
    """The chunk that chunk ``ci`` also attends to: ``ci - 1``; for chunk 0 none, or the last with ``wrap``
    (none when there is one chunk: it is chunk 0 itself)."""
    if ci > 0:
        return ci - 1
    if wrap and n_chunks > 1:
        return n_chunks - 1
    return None


def _chunk_of(buckets_bh: np.ndarray, c: int) -> np.ndarray:
    """``chunk_r(t) = floor(rank_r(t) / c)`` for every round: ``(r l)``."""
    l, r = buckets_bh.shape
    out = np.empty((r, l), dtype=np.int64)
    for ri in range(r):
        order = _sort_order(buckets_bh[:, ri])
        rank = np.empty(l, dtype=np.int64)
        rank[order] = np.arange(l)
        out[ri] = rank // c
    return out


def _in_round(buckets_bh, chunk_of, ri, i, j, n_chunks, wrap, causal):
    """``j in P_i^(r)`` (self included) for arrays of positions ``i``, ``j`` (broadcast), round ``ri``."""
    ci, cj = chunk_of[ri][i], chunk_of[ri][j]
    prev = ci - 1
    if wrap and n_chunks > 1:
        prev = np.where(ci == 0, n_chunks - 1, prev)
    # h_r(j) = h_r(i)  and  chunk_r(j) in {chunk_r(i) - 1, chunk_r(i)}  (and j <= i if causal)
    keep = (buckets_bh[j, ri] == buckets_bh[i, ri]) & ((cj == ci) | (cj == prev))
    if causal:
        keep &= j <= i
    return keep


def _counts(buckets_bh, chunk_of, i, j, n_chunks, wrap, causal):
    """``N_ij = |{r : j in P_i^(r)}|`` for arrays of positions ``i``, ``j`` (broadcast)."""
    N = np.zeros(np.broadcast(i, j).shape, dtype=np.int64)
    for ri in range(buckets_bh.shape[1]):
        N += _in_round(buckets_bh, chunk_of, ri, i, j, n_chunks, wrap, causal)
    return N


# ------------------------------------------------------------------ the "sorted" view (the paper's algorithm)

def sorted_chunks(qk, v, *, buckets=None, rotations=None, seed=None, n_buckets: Optional[int] = None,
                  n_rounds: Optional[int] = None, chunk: int = 64, causal: bool = False,
                  scale: Optional[float] = None, wrap: bool = False) -> np.ndarray:
    r"""LSH attention by the paper's algorithm: per round hash, sort, chunk, attend, unsort; combine the rounds.

    ``qk (b l h n)``, ``v (b l h p)`` -> ``o (b l h p)``; ``buckets (b l h z)`` or ``rotations (z n u)`` or ``seed``
    (with ``n_buckets``, ``n_rounds``); ``chunk`` = ``c`` sorted positions per chunk; ``causal``, ``scale``
    (``None`` -> ``n^{-1/2}``), ``wrap`` (chunk 0 also attends to the last chunk) -- see the module docstring.
    """
    qk, v, bk, c, causal, scale, wrap, dtype = _validate(qk, v, buckets, rotations, seed, n_buckets, n_rounds,
                                                         chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    p, r = v.shape[3], bk.shape[3]
    o = np.zeros((b, l, h, p), dtype=dtype)
    if l == 0:
        return o
    # k_j = qk_j / ||qk_j||
    k = normalize_keys(qk)
    n_chunks = -(-l // c)
    for bi in range(b):
        for hi in range(h):
            q_bh, k_bh, v_bh, bk_bh = qk[bi, :, hi], k[bi, :, hi], v[bi, :, hi], bk[bi, :, hi]
            chunk_of = _chunk_of(bk_bh, c)
            o_r = np.zeros((r, l, p), dtype=dtype)
            z_r = np.full((r, l), -np.inf, dtype=dtype)
            for ri in range(r):
                # sort by (bucket, position)
                order = _sort_order(bk_bh[:, ri])
                for ci in range(n_chunks):
                    qpos = order[ci * c:(ci + 1) * c]
                    prev = _previous_chunk(ci, n_chunks, wrap)
                    # keys: the previous chunk, then the chunk itself
                    kpos = qpos if prev is None else np.concatenate([order[prev * c:(prev + 1) * c], qpos])
                    i, j = qpos[:, None], kpos[None, :]
                    # s_ij = scale q_i . k_j
                    S_ij = scale * (q_bh[qpos] @ k_bh[kpos].T)
                    # j in P_i^(r), j != i (the self rule: self only when nothing else is available)
                    allowed = _in_round(bk_bh, chunk_of, ri, i, j, n_chunks, wrap, causal) & (j != i)
                    # N_ij = |{r' : j in P_i^(r')}|
                    N_ij = _counts(bk_bh, chunk_of, i, j, n_chunks, wrap, causal)
                    # s_ij - log N_ij on the allowed keys, -inf elsewhere
                    with np.errstate(divide="ignore"):
                        s = np.where(allowed, S_ij - np.log(np.maximum(N_ij, 1)).astype(dtype), -np.inf)
                    # z_i^(r) = log sum_j exp(s_ij - log N_ij);  o_i^(r) = sum_j softmax_j(.) v_j
                    z_r[ri, qpos] = logsumexp(s, axis=-1)
                    o_r[ri, qpos] = softmax(s, axis=-1) @ v_bh[kpos]
            # z_i = log sum_r exp(z_i^(r))
            z = logsumexp(z_r, axis=0)
            lonely = np.isneginf(z)
            # o_i = sum_r exp(z_i^(r) - z_i) o_i^(r)
            with np.errstate(invalid="ignore"):
                w_r = np.where(lonely[None], 0.0, np.exp(z_r - np.where(lonely, 0.0, z)[None]))
            o_bh = np.einsum("rl,rlp->lp", w_r, o_r)
            # nothing but i in P_i: attend to self, o_i = v_i
            o_bh[lonely] = v_bh[lonely]
            o[bi, :, hi] = o_bh
    return o


# ------------------------------------------------------------------ the "materialized" view

def _round_masks(buckets_bh: np.ndarray, chunk: int, *, causal: bool = False, wrap: bool = False) -> np.ndarray:
    r"""``M (r l l)``: ``M[r, i, j] = j in P_i^(r)`` (self included), from one batch row and head's buckets ``(l r)``
    -- each round's sort, its chunks, the bucket equality and the causal mask."""
    l, r = buckets_bh.shape
    c = chunk
    n_chunks = -(-l // c) if l else 0
    M = np.zeros((r, l, l), dtype=bool)
    for ri in range(r):
        order = _sort_order(buckets_bh[:, ri])
        for ci in range(n_chunks):
            qpos = order[ci * c:(ci + 1) * c]
            prev = _previous_chunk(ci, n_chunks, wrap)
            kpos = qpos if prev is None else np.concatenate([order[prev * c:(prev + 1) * c], qpos])
            i, j = qpos[:, None], kpos[None, :]
            # same bucket (and j <= i if causal)
            keep = buckets_bh[kpos, ri][None, :] == buckets_bh[qpos, ri][:, None]
            if causal:
                keep = keep & (j <= i)
            M[ri, i, j] = keep
    return M


def materialized(qk, v, *, buckets=None, rotations=None, seed=None, n_buckets: Optional[int] = None,
                 n_rounds: Optional[int] = None, chunk: int = 64, causal: bool = False,
                 scale: Optional[float] = None, wrap: bool = False) -> np.ndarray:
    r"""LSH attention with every round's ``(l l)`` mask materialized and one dense softmax over all rounds' entries.

    Per batch row and head: ``M_r = _round_masks(...)`` ``(r l l)``; ``N = sum_r M_r`` (the counts); the self rule
    removes the diagonal from every ``M_r`` except in rows where nothing else is left (there it is kept in every
    round); scores ``(l, r l)`` = ``s_ij - log N_ij`` where ``M_r[i, j]``, ``-inf`` elsewhere; one softmax over the
    ``r l`` entries of a row; ``o_i = sum_{r, j} p_{i,(r,j)} v_j``.  Arguments as :func:`sorted_chunks`.
    """
    qk, v, bk, c, causal, scale, wrap, dtype = _validate(qk, v, buckets, rotations, seed, n_buckets, n_rounds,
                                                         chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    p, r = v.shape[3], bk.shape[3]
    o = np.zeros((b, l, h, p), dtype=dtype)
    if l == 0:
        return o
    # k_j = qk_j / ||qk_j||
    k = normalize_keys(qk)
    eye = np.eye(l, dtype=bool)
    for bi in range(b):
        for hi in range(h):
            M = _round_masks(bk[bi, :, hi], c, causal=causal, wrap=wrap)
            # N_ij = sum_r M_r[i, j]
            N = M.sum(axis=0)
            # the self rule: drop j = i, unless row i holds nothing else
            lonely = ~np.any((N > 0) & ~eye, axis=1)
            M = (M & ~eye) | (lonely[:, None] & eye)[None]
            # s_ij = scale q_i . k_j
            S_ij = scale * (qk[bi, :, hi] @ k[bi, :, hi].T)
            with np.errstate(divide="ignore"):
                logN = np.log(np.maximum(N, 1)).astype(dtype)
            # the scores of every round side by side: (l, r l), s_ij - log N_ij where M_r[i, j]
            s = np.concatenate([np.where(M[ri], S_ij - logN, -np.inf) for ri in range(r)], axis=1)
            P = softmax(s, axis=-1)
            # o_i = sum_{r, j} p_{i,(r,j)} v_j
            o[bi, :, hi] = P @ np.tile(v[bi, :, hi], (r, 1))
    return o
