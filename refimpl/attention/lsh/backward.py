r"""The backward pass of Reformer LSH attention with the buckets fixed: the vector-Jacobian product, written
literally (no autodiff).

**Hashing is piecewise constant.**  ``h_r(x) = argmax([x R_r ; -x R_r])`` does not move under a small change of
``qk`` or of the rotations, except on the measure-zero set where two entries tie, so its derivative is zero
almost everywhere: the gradient is that of the attention with the buckets (and hence the sort, the chunks, the
masks ``M_r`` and the counts ``N_ij``) held fixed.  The rotations and the buckets get no gradient entry (the
rotations' gradient is 0 wherever it exists).

The forward (:mod:`refimpl.attention.lsh.reference`), per batch row and head, with ``M_r`` the round masks after
the self rule::

    k_j = qk_j / ||qk_j||                          (shared QK: the keys are the normalized queries)
    s_ij = scale qk_i . k_j
    p_{i,(r,j)} = softmax over (r, j) with M_r[i, j] of (s_ij - log N_ij)     (every round side by side)
    o_i = sum_{r,j} p_{i,(r,j)} v_j

Given the cotangent ``do`` of ``o`` (a real loss ``L = sum do * o``), the adjoint equations::

    dv_j      = sum_i sum_r p_{i,(r,j)} do_i
    D_i       = do_i . o_i
    ds_ij     = sum_r p_{i,(r,j)} (do_i . v_j - D_i)       (the softmax's Jacobian, summed over the rounds;
                                                             log N_ij is constant: the counts are fixed)
    dq_i      = scale sum_j ds_ij k_j                      (qk as the query)
    dk_j      = scale sum_i ds_ij qk_i
    dqk_j    += (dk_j - k_j (k_j . dk_j)) / ||qk_j||       (the key normalization's Jacobian: the projection
                                                            orthogonal to k_j, over the norm)

A zero vector ``qk_j = 0`` normalizes to 0 by convention; ``x / ||x||`` has no derivative there, and the gradient
through its normalization is taken as 0 (its query part ``dq_j`` is still there).  A row whose only key is itself
(the self rule) has ``o_i = v_i``: ``dv_i += do_i`` and no gradient to ``qk``.

Views: ``"materialized"`` (:func:`materialized_vjp`: the ``(l, r l)`` weights of the materialized forward and the
equations above) and ``"sorted"`` (:func:`sorted_vjp`: the adjoint of the paper's algorithm, round by round and
chunk by chunk: the combination by log-sum-exp ``o_i = sum_r w_i^(r) o_i^(r)``, ``w_i^(r) = exp(z_i^(r) - z_i)``
has the adjoint ``do_i^(r) = w_i^(r) do_i``, ``dz_i^(r) = w_i^(r) (do_i . o_i^(r) - D_i)``, and inside a chunk
``ds_ij += p_ij^(r) (do_i^(r) . v_j - do_i^(r) . o_i^(r) + dz_i^(r))``).  No scan, so no reverse recurrence.

Conventions as the forward: ``scale`` (``None`` -> ``n^{-1/2}``), ``chunk``, ``causal``, ``wrap``, the self rule
"exclude", exactly one of ``buckets`` / ``rotations`` / ``seed``.  Real inputs only; the computation runs in
``result_dtype`` of ``qk``, ``v`` and ``do``, and every gradient is returned in it (no silent downcast).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from refimpl._validate import result_dtype
from refimpl.attention.linformer.backward import check_cotangent
from refimpl.attention.lsh.reference import (_chunk_of, _counts, _in_round, _previous_chunk, _round_masks,
                                             _sort_order, _validate, normalize_keys)
from refimpl.attention.softmax.reference import logsumexp, softmax

__all__ = ["materialized_vjp", "sorted_vjp"]


def normalization_vjp(qk: np.ndarray, k: np.ndarray, dk: np.ndarray) -> np.ndarray:
    r"""The adjoint of ``k_j = qk_j / ||qk_j||``: ``dqk_j = (dk_j - k_j (k_j . dk_j)) / ||qk_j||`` (0 at ``qk_j = 0``).

    ``qk, k, dk (.. n)`` -> ``(.. n)``.
    """
    # ||qk_j||
    norm = np.sqrt(np.sum(qk * qk, axis=-1, keepdims=True))
    # dqk_j = (dk_j - k_j (k_j . dk_j)) / ||qk_j||
    proj = dk - k * np.sum(k * dk, axis=-1, keepdims=True)
    return np.where(norm > 0, proj / np.where(norm > 0, norm, 1.0), 0.0).astype(qk.dtype, copy=False)


def _prepare(qk, v, do, buckets, rotations, seed, n_buckets, n_rounds, chunk, causal, scale, wrap):
    qk, v, bk, c, causal, scale, wrap, dtype = _validate(qk, v, buckets, rotations, seed, n_buckets, n_rounds,
                                                         chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    p = v.shape[3]
    do = check_cotangent(do, "do", (b, l, h, p), "b l h p", "b, l, h from qk, p from v")
    dtype = result_dtype(qk, v, do)
    out_dtypes = {"qk": dtype, "v": dtype}  # the working dtype: no silent downcast
    return (qk.astype(dtype, copy=False), v.astype(dtype, copy=False), do.astype(dtype, copy=False), bk, c, causal,
            scale, wrap, dtype, out_dtypes)


def materialized_vjp(qk, v, *, do, buckets=None, rotations=None, seed=None, n_buckets: Optional[int] = None,
                     n_rounds: Optional[int] = None, chunk: int = 64, causal: bool = False,
                     scale: Optional[float] = None, wrap: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of LSH attention (buckets fixed) through the materialized ``(l, r l)`` weights (the module
    docstring's equations).

    ``qk (b l h n)``, ``v (b l h p)``, ``do (b l h p)`` (the cotangent of ``o``), the hashing and chunking arguments
    as :func:`refimpl.attention.lsh.reference.materialized` -> ``{"qk": dqk, "v": dv}``.
    """
    qk, v, do, bk, c, causal, scale, wrap, dtype, out_dtypes = _prepare(
        qk, v, do, buckets, rotations, seed, n_buckets, n_rounds, chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    r = bk.shape[3]
    dqk, dv = np.zeros_like(qk), np.zeros_like(v)
    if l:
        k = normalize_keys(qk)
        dk = np.zeros_like(k)
        sc = dtype.type(scale)
        eye = np.eye(l, dtype=bool)
        for bi in range(b):
            for hi in range(h):
                q_bh, k_bh, v_bh, do_bh = qk[bi, :, hi], k[bi, :, hi], v[bi, :, hi], do[bi, :, hi]
                # forward recomputation: M_r (self rule applied), N, the (l, r l) scores and weights, o
                M = _round_masks(bk[bi, :, hi], c, causal=causal, wrap=wrap)
                N = M.sum(axis=0)
                lonely = ~np.any((N > 0) & ~eye, axis=1)
                M = (M & ~eye) | (lonely[:, None] & eye)[None]
                S_ij = sc * (q_bh @ k_bh.T)
                with np.errstate(divide="ignore"):
                    logN = np.log(np.maximum(N, 1)).astype(dtype)
                s = np.concatenate([np.where(M[ri], S_ij - logN, -np.inf) for ri in range(r)], axis=1)
                P = softmax(s, axis=-1).reshape(l, r, l)
                # the weight of key j summed over the rounds: sum_r p_{i,(r,j)}
                P_sum = np.sum(P, axis=1)
                o_bh = P_sum @ v_bh
                # dv_j = sum_i sum_r p_{i,(r,j)} do_i
                dv[bi, :, hi] = P_sum.T @ do_bh
                # D_i = do_i . o_i
                D = np.sum(do_bh * o_bh, axis=-1, keepdims=True)
                # ds_ij = sum_r p_{i,(r,j)} (do_i . v_j - D_i)
                ds = P_sum * (do_bh @ v_bh.T - D)
                # dq_i = scale sum_j ds_ij k_j ;  dk_j = scale sum_i ds_ij qk_i
                dqk[bi, :, hi] = sc * (ds @ k_bh)
                dk[bi, :, hi] = sc * (ds.T @ q_bh)
        # dqk_j += (dk_j - k_j (k_j . dk_j)) / ||qk_j||
        dqk = dqk + normalization_vjp(qk, k, dk)
    return {"qk": dqk.astype(out_dtypes["qk"], copy=False), "v": dv.astype(out_dtypes["v"], copy=False)}


def sorted_vjp(qk, v, *, do, buckets=None, rotations=None, seed=None, n_buckets: Optional[int] = None,
               n_rounds: Optional[int] = None, chunk: int = 64, causal: bool = False, scale: Optional[float] = None,
               wrap: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of LSH attention (buckets fixed) by the paper's algorithm in reverse: per round the chunks'
    softmaxes, the rounds' log-sum-exp combination (the module docstring's ``do^(r)``, ``dz^(r)``), then the key
    normalization.  Arguments and result as :func:`materialized_vjp`.
    """
    qk, v, do, bk, c, causal, scale, wrap, dtype, out_dtypes = _prepare(
        qk, v, do, buckets, rotations, seed, n_buckets, n_rounds, chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    r = bk.shape[3]
    dqk, dv = np.zeros_like(qk), np.zeros_like(v)
    if l == 0:
        return {"qk": dqk.astype(out_dtypes["qk"], copy=False), "v": dv.astype(out_dtypes["v"], copy=False)}
    k = normalize_keys(qk)
    dk = np.zeros_like(k)
    n_chunks = -(-l // c)
    for bi in range(b):
        for hi in range(h):
            q_bh, k_bh, v_bh, bk_bh, do_bh = qk[bi, :, hi], k[bi, :, hi], v[bi, :, hi], bk[bi, :, hi], do[bi, :, hi]
            chunk_of = _chunk_of(bk_bh, c)
            # forward recomputation, per round and chunk: the chunk's positions, its scores' softmax p^(r), o^(r), z^(r)
            blocks = []
            o_r = np.zeros((r, l, v.shape[3]), dtype=dtype)
            z_r = np.full((r, l), -np.inf, dtype=dtype)
            for ri in range(r):
                order = _sort_order(bk_bh[:, ri])
                for ci in range(n_chunks):
                    qpos = order[ci * c:(ci + 1) * c]
                    prev = _previous_chunk(ci, n_chunks, wrap)
                    kpos = qpos if prev is None else np.concatenate([order[prev * c:(prev + 1) * c], qpos])
                    i, j = qpos[:, None], kpos[None, :]
                    S_ij = scale * (q_bh[qpos] @ k_bh[kpos].T)
                    allowed = _in_round(bk_bh, chunk_of, ri, i, j, n_chunks, wrap, causal) & (j != i)
                    N_ij = _counts(bk_bh, chunk_of, i, j, n_chunks, wrap, causal)
                    with np.errstate(divide="ignore"):
                        s = np.where(allowed, S_ij - np.log(np.maximum(N_ij, 1)).astype(dtype), -np.inf)
                    z_r[ri, qpos] = logsumexp(s, axis=-1)
                    p_r = softmax(s, axis=-1)
                    o_r[ri, qpos] = p_r @ v_bh[kpos]
                    blocks.append((ri, qpos, kpos, p_r))
            z = logsumexp(z_r, axis=0)
            lonely = np.isneginf(z)
            with np.errstate(invalid="ignore"):
                w_r = np.where(lonely[None], 0.0, np.exp(z_r - np.where(lonely, 0.0, z)[None]))
            o_bh = np.einsum("rl,rlp->lp", w_r, o_r)
            # o_i = v_i for a lonely row: dv_i += do_i
            dv_bh = np.where(lonely[:, None], do_bh, 0.0)
            o_bh[lonely] = v_bh[lonely]
            # D_i = do_i . o_i
            D = np.sum(do_bh * o_bh, axis=-1)
            # do_i^(r) = w_i^(r) do_i ;  dz_i^(r) = w_i^(r) (do_i . o_i^(r) - D_i)
            do_r = w_r[:, :, None] * do_bh[None]
            dz_r = w_r * (np.einsum("lp,rlp->rl", do_bh, o_r) - D[None])
            ds = np.zeros((l, l), dtype=dtype)
            for ri, qpos, kpos, p_r in blocks:
                dO = do_r[ri, qpos]
                # dv_j += sum_i p_ij^(r) do_i^(r)
                np.add.at(dv_bh, kpos, p_r.T @ dO)
                # ds_ij += p_ij^(r) (do_i^(r) . v_j - do_i^(r) . o_i^(r) + dz_i^(r))
                g = p_r * (dO @ v_bh[kpos].T - np.sum(dO * o_r[ri, qpos], axis=-1, keepdims=True)
                           + dz_r[ri, qpos][:, None])
                np.add.at(ds, (np.broadcast_to(qpos[:, None], g.shape), np.broadcast_to(kpos[None, :], g.shape)), g)
            dv[bi, :, hi] = dv_bh
            # dq_i = scale sum_j ds_ij k_j ;  dk_j = scale sum_i ds_ij qk_i
            dqk[bi, :, hi] = scale * (ds @ k_bh)
            dk[bi, :, hi] = scale * (ds.T @ q_bh)
    # dqk_j += (dk_j - k_j (k_j . dk_j)) / ||qk_j||
    dqk = dqk + normalization_vjp(qk, k, dk)
    return {"qk": dqk.astype(out_dtypes["qk"], copy=False), "v": dv.astype(out_dtypes["v"], copy=False)}
