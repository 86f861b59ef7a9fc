"""Sparse attention workloads (issue 13): W6 (causal sliding window) and W6-bigbird.

Every candidate that computes the sparse answer is checked first against our float64 block-sparse NumPy reference
(the literal loop; it never forms an ``(l l)`` array, so it runs at L = 8192) with the same-dtype baseline rule
(``bench.harness.check_against``: <= 2x our float32 reference's error + u |y|); then all are timed interleaved.
Our dense flash kernel computes full causal attention (a different answer): it is timed as the dense cost only and
says so (its own check is W3's).  The block layout is built once per pattern, outside the timing, as a model would
(its build time is a note).
"""
from __future__ import annotations

import time

import numpy as np

from bench.harness import check_against, interleaved_medians, median
from bench.workloads import _t, _target, _torch, workload

_OURS = "ours numba block-sparse kernel"
_SDPA = "torch SDPA, dense boolean mask"


def _time_all(name, title, shapes, cands, checks, ours, repeats, budget=90.0):
    times = interleaved_medians(cands, repeats=repeats, budget_s=budget)
    timings = [dict(impl=k, median_s=median(v), runs=v, passed=checks[k][0], max_abs_err=checks[k][1],
                    checked=checks[k][2]) for k, v in times.items()]
    return dict(name=name, title=title, shapes=shapes, dtype="float32", ours=ours, timings=timings)


def _sdpa(torch, q, k, v, keep):
    """torch SDPA on head-first copies with the dense boolean mask ``keep (1|h, l, l)`` (True = attend)."""
    tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3))) for a in (q, k, v))
    tm = torch.from_numpy(np.ascontiguousarray(keep[None]))

    def run():
        return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)

    def to_np(out):
        return out.detach().numpy().transpose(0, 2, 1, 3)

    return run, to_np


def _sparse_workload(name, title, pattern, b, h, L, d, repeats, *, extra=None, seed=6):
    from refimpl.attention.sparse import sparse_attention
    from refimpl.attention.sparse.numba import block_sparse_attention

    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((b, L, h, d)).astype(np.float32) for _ in range(3))
    t0 = time.perf_counter()
    B = 128 if pattern.kind == "sliding_window" else pattern.default_block
    layout = pattern.block_layout(B)
    t_layout = time.perf_counter() - t0
    # the float64 oracle and our float32 reference (the baseline rule): the literal block-sparse loop
    oracle = sparse_attention(*(a.astype(np.float64) for a in (q, k, v)), pattern, view="block_sparse")
    ref32 = sparse_attention(q, k, v, pattern, view="block_sparse")
    cands = {_OURS: lambda: block_sparse_attention(q, k, v, pattern, block=B, block_layout=layout)}
    outs = {}
    cands.update(extra(q, k, v) if extra else {})
    keep = pattern.mask()
    torch = _torch()
    sdpa_np = None
    if torch is not None:
        cands[_SDPA], sdpa_np = _sdpa(torch, q, k, v, keep)
    checks = {}
    for impl, fn in cands.items():
        if impl.startswith("ours numba flash"):
            checks[impl] = (True, float("nan"), "dense cost only: full causal attention, a different answer (see W3)")
            continue
        out = fn()
        outs[impl] = sdpa_np(out) if impl == _SDPA else out
        checks[impl] = check_against(impl, outs[impl], oracle, ref32, np.float32)
    res = _time_all(name, title, dict(batch=b, heads=h, length=L, head_dim=d, block=B, tiles=layout.n_tiles,
                                      pattern=repr(pattern)), cands, checks, _OURS, repeats)
    res["notes"] = [f"block layout: {layout.n_tiles} tiles of {B}x{B} per head group ({layout.masks.shape[0]} distinct "
                    f"in-block masks), built once in {t_layout:.3f} s (not timed)",
                    f"kept pairs: {int(keep.sum())} of {keep.shape[0] * L * L} ({keep.mean():.4f})"]
    return res


@workload("W6")
def w6_sliding_window(limits, repeats=5, quick=False):
    """Causal sliding window (512, 0): b 1, h 8, L 8192, d 64 (quick: h 2 at the same L 8192 -- every candidate's
    time is linear in the heads, so the ratios are those of the full shape at a quarter of the cost)."""
    from refimpl.attention.softmax.numba import flash_attention
    from refimpl.attention.sparse import sliding_window_pattern

    b, h, L, d = (1, 2, 8192, 64) if quick else (1, 8, 8192, 64)
    pattern = sliding_window_pattern(L, 512, causal=True)

    def extra(q, k, v):
        return {"ours numba flash (dense causal, no window)": lambda: flash_attention(q, k, v, causal=True)}

    res = _sparse_workload("W6", "causal sliding-window attention, window (512, 0), float32", pattern, b, h, L, d,
                           repeats, extra=extra)
    t = _t(res, _OURS)
    # the kept pairs (<= 513 keys per query) times 4 d flops (two products)
    flops = b * h * 4 * d * sum(min(i, 512) + 1 for i in range(L))
    res["roofline"] = {"FLOPs (kept pairs)": flops,
                       "fraction of matmul peak": flops / t / 1e9 / limits["matmul_gflops_fp32"]}
    if _SDPA in [x["impl"] for x in res["timings"]]:
        sp = _t(res, _SDPA) / t
        _target(res, f"speedup vs {_SDPA}" + (" (quick: h 2, the full L 8192)" if quick else ""), sp, ">= 10x",
                sp >= 10)
    sp_flash = _t(res, "ours numba flash (dense causal, no window)") / t
    _target(res, "speedup vs our dense causal flash kernel", sp_flash, "> 1 (report)", sp_flash > 1)
    return res


@workload("W6-bigbird")
def w6_bigbird(limits, repeats=3, quick=False):
    """BigBird (block 64, window 3 blocks, 2 global blocks, 3 random blocks, seed 0): b 1, h 8, L 2048, d 64
    (quick: L 1024), against the NumPy materialized reference and the dense masked SDPA."""
    from refimpl.attention.sparse import bigbird_pattern, sparse_attention

    b, h, L, d = (1, 8, 1024, 64) if quick else (1, 8, 2048, 64)
    pattern = bigbird_pattern(L, 64, window_blocks=3, global_blocks=2, random_blocks=3, seed=0, heads=h)

    def extra(q, k, v):
        return {"ours numpy materialized reference": lambda: sparse_attention(q, k, v, pattern)}

    res = _sparse_workload("W6-bigbird", "BigBird block-sparse attention (ITC), float32", pattern, b, h, L, d, repeats,
                           extra=extra)
    t = _t(res, _OURS)
    sp = _t(res, "ours numpy materialized reference") / t
    _target(res, "speedup vs NumPy materialized", sp, "> 1 (report)", sp > 1)
    if _SDPA in [x["impl"] for x in res["timings"]]:
        sp = _t(res, _SDPA) / t
        _target(res, f"speedup vs {_SDPA}", sp, "> 1 (report)", sp > 1)
    return res
