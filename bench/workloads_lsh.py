"""Bench workload of Reformer LSH attention (issue 13): b 1, h 4, L 4096, n = p = 64, 8 buckets x 2 rounds, chunk 64
(``--quick``: L 1024), float32.

Candidates: our Numba kernel (sorted buckets, chunked), our NumPy reference (the sorted view), and the dense
alternative -- the union of the rounds' allowed keys as a dense boolean ``(b h L L)`` mask (built once, not timed)
and masked softmax attention over the full ``(L L)`` scores with the normalized keys: torch
``scaled_dot_product_attention`` with ``attn_mask`` when torch is installed, else the same in plain NumPy.  With
the de-duplication by counting, LSH attention is exactly that masked softmax, so every candidate is checked against
our float64 reference with the same-dtype baseline rule (``bench.harness.check_against``).
"""
from __future__ import annotations

import math

import numpy as np

from bench.workloads import _run, _t, _target, _torch, workload


def _union_mask(bk, chunk):
    """The allowed keys of every query as a dense ``(b h l l)`` mask (self excluded unless alone), per round from the
    stable sort by bucket, the chunks and the previous chunk."""
    b, l, h, r = bk.shape
    keep = np.zeros((b, h, l, l), dtype=bool)
    for bi in range(b):
        for hi in range(h):
            for ri in range(r):
                bb = bk[bi, :, hi, ri]
                rank = np.empty(l, dtype=np.int64)
                rank[np.argsort(bb, kind="stable")] = np.arange(l)
                c = rank // chunk
                keep[bi, hi] |= (bb[:, None] == bb[None, :]) & ((c[None, :] == c[:, None]) | (c[None, :] == c[:, None] - 1))
    eye = np.eye(l, dtype=bool)
    alone = ~np.any(keep & ~eye, axis=-1, keepdims=True)
    return (keep & ~eye) | (alone & eye)


def _dense_numpy(q, k, v, keep, scale):
    # (b h l l) scores, masked, softmax, weighted sum
    s = scale * np.einsum("blhn,bshn->bhls", q, k)
    s = np.where(keep, s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("bhls,bshp->blhp", w / w.sum(axis=-1, keepdims=True), v)


@workload("LSH")
def lsh_workload(limits, repeats=5, quick=False):
    from refimpl.attention.lsh import hash_buckets, lsh_attention, normalize_keys, random_rotations

    b, h, L, n, nb, r, c = (1, 4, 1024, 64, 8, 2, 64) if quick else (1, 4, 4096, 64, 8, 2, 64)
    rng = np.random.default_rng(15)
    qk = rng.standard_normal((b, L, h, n)).astype(np.float32)
    v = rng.standard_normal((b, L, h, n)).astype(np.float32)
    bk = hash_buckets(qk, random_rotations(n, nb, r, seed=15))
    scale = 1 / math.sqrt(n)
    oracle = lsh_attention(qk.astype(np.float64), v.astype(np.float64), buckets=bk, chunk=c)
    ref32 = lsh_attention(qk, v, buckets=bk, chunk=c)
    ours = "ours numba sorted chunks"
    cands = {ours: lambda: lsh_attention(qk, v, buckets=bk, chunk=c, backend="numba"),
             "ours numpy sorted reference": lambda: lsh_attention(qk, v, buckets=bk, chunk=c)}
    keep = _union_mask(bk, c)
    k = normalize_keys(qk)
    torch = _torch()
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3))) for a in (qk, k, v))
        tkeep = torch.from_numpy(keep)
        cands["dense torch SDPA with the union mask"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            tq, tk, tv, attn_mask=tkeep, scale=scale).numpy().transpose(0, 2, 1, 3)
    else:
        cands["dense NumPy masked softmax (union mask)"] = lambda: _dense_numpy(qk, k, v, keep, np.float32(scale))
    res = _run("LSH", "Reformer LSH attention", dict(batch=b, heads=h, length=L, head_dim=n, buckets=nb, rounds=r,
                                                     chunk=c), np.float32, cands, oracle, ref32, ours, repeats,
               budget=60.0)
    res["notes"] = ["the dense alternative's (b h L L) mask is built once outside the timing"]
    t_ours = _t(res, ours)
    for impl in cands:
        if impl != ours:
            ratio = _t(res, impl) / t_ours
            _target(res, f"{impl} / ours", ratio, "report", True)
    return res
