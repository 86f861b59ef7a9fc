"""Mutants of ``attention.lsh`` (Reformer LSH attention given the buckets): plausible kernel bugs, each a candidate
in the op's canonical signature ``fn(qk, v, buckets) -> o`` at the conventions it claims (default: chunk 2,
2 rounds, not causal, self excluded, no wrap, scale n^-1/2).  ``refimpl mutants --op attention.lsh`` must kill
every one at default settings.

The kernel below is a small dense NumPy LSH attention (per round: the sort, the chunks, the masks; the rounds
combined by their log-sum-exp) with the slips as switches.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

OP = "attention.lsh"


def _lsh_kernel(qk, v, buckets, *, chunk=2, causal=False, wrap=False, scale=None, self_rule="exclude",
                dedup="chunks", normalize=True, neighbour=-1, bucket_mask=True, causal_shift=0, stable=True,
                combine="lse", normalize_queries=False):
    qk, v = np.asarray(qk, dtype=np.float64), np.asarray(v, dtype=np.float64)
    bk = np.asarray(buckets).astype(np.int64)
    b, l, h, n = qk.shape
    p, r = v.shape[3], bk.shape[3]
    sc = (1.0 / math.sqrt(n) if n else 1.0) if scale is None else scale
    o = np.zeros((b, l, h, p))
    if l == 0:
        return o
    nrm = np.linalg.norm(qk, axis=-1, keepdims=True)
    k = qk / np.where(nrm > 0, nrm, 1.0) if normalize else qk
    q = k if normalize_queries else qk
    nc = -(-l // chunk)
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    for bi in range(b):
        for hi in range(h):
            masks, same = [], []
            for ri in range(r):
                bb = bk[bi, :, hi, ri]
                order = np.argsort(bb, kind="stable") if stable else np.lexsort((-np.arange(l), bb))
                rank = np.empty(l, dtype=np.int64)
                rank[order] = np.arange(l)
                ch = rank // chunk
                other = ch + neighbour  # the chunk attended besides its own (-1: the previous one)
                if wrap and nc > 1:
                    other = other % nc
                M = (ch[None, :] == ch[:, None]) | (ch[None, :] == other[:, None])
                eq = bb[None, :] == bb[:, None]
                if bucket_mask:
                    M &= eq
                if causal:
                    M &= j <= i + causal_shift
                masks.append(M)
                same.append(eq & ((j <= i) if causal else True))
            N = np.sum(masks, axis=0) if dedup == "chunks" else np.sum(same, axis=0)
            alone = ~np.any(np.any(masks, axis=0) & (i != j), axis=1)
            s = sc * (q[bi, :, hi] @ k[bi, :, hi].T)
            z_r, o_r = [], []
            for M in masks:
                if self_rule == "exclude":
                    M = M & ((i != j) | alone[:, None])
                elif self_rule == "never":
                    M = M & (i != j)
                sr = s - (np.log(np.maximum(N, 1)) if dedup != "none" else 0.0)
                sr = np.where(M, sr, -np.inf)
                m = np.max(sr, axis=1, keepdims=True)
                m = np.where(np.isfinite(m), m, 0.0)
                w = np.exp(sr - m)
                Z = w.sum(axis=1, keepdims=True)
                with np.errstate(divide="ignore"):
                    z_r.append((m + np.log(Z))[:, 0])
                o_r.append(np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0) @ v[bi, :, hi])
            z_r, o_r = np.array(z_r), np.array(o_r)
            if combine == "lse":
                zm = np.max(z_r, axis=0)
                zm = np.where(np.isfinite(zm), zm, 0.0)
                w = np.exp(z_r - zm)
                W = w.sum(axis=0)
                w = np.where(W > 0, w / np.where(W > 0, W, 1.0), 0.0)
            else:  # the rounds averaged
                w = np.full(z_r.shape, 1.0 / r)
            o[bi, :, hi] = np.einsum("rl,rlp->lp", w, o_r)
    return o


@mutant(OP, "self-always", doc="the self rule missing: i always attends to itself")
def _self_always(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, self_rule="always")


@mutant(OP, "self-never", doc="i never attends to itself, even with nothing else available (the row is 0)")
def _self_never(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, self_rule="never")


@mutant(OP, "no-dedup", doc="no de-duplication: a key found in N rounds is counted N times (no -log N)")
def _no_dedup(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, dedup="none")


@mutant(OP, "dedup-by-bucket", doc="N_ij counts the rounds in which j shares i's bucket, ignoring the chunks")
def _dedup_by_bucket(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, dedup="bucket")


@mutant(OP, "keys-not-normalized", doc="keys are qk_j itself, not qk_j / ||qk_j||")
def _keys_not_normalized(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, normalize=False)


@mutant(OP, "queries-normalized", doc="queries normalized too (cosine scores)")
def _queries_normalized(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, normalize_queries=True)


@mutant(OP, "next-chunk", doc="each chunk attends to the next chunk instead of the previous one")
def _next_chunk(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, neighbour=+1)


@mutant(OP, "no-bucket-mask", doc="the bucket mask missing: every key of the two chunks is attended")
def _no_bucket_mask(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, bucket_mask=False)


@mutant(OP, "causal-off-by-one", conventions={"causal": True}, doc="the causal mask keeps j <= i + 1")
def _causal_off_by_one(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, causal=True, causal_shift=1)


@mutant(OP, "unstable-sort", doc="within a bucket, positions sorted in descending order (not a stable sort)")
def _unstable_sort(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, stable=False)


@mutant(OP, "no-wrap", conventions={"wrap": True}, doc="claims trax's wrap-around chunks, does not wrap")
def _no_wrap(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, wrap=False)


@mutant(OP, "rounds-averaged", doc="the rounds' outputs averaged instead of weighted by their log-sum-exp")
def _rounds_averaged(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, combine="mean")


@mutant(OP, "scale-sqrt-missing", doc="scores not scaled by n^-1/2 (trax's effective scale under the paper's "
        "convention)")
def _scale_missing(qk, v, buckets):
    return _lsh_kernel(qk, v, buckets, scale=1.0)


def lsh_correct(qk, v, buckets):
    """The kernel with no slip (a sanity candidate for tests: it must conform)."""
    return _lsh_kernel(qk, v, buckets)
