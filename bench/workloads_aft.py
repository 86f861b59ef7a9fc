"""Bench workloads of the Attention Free Transformer (issue 13): AFT-local (b 1, L 8192, d 512, window 64 each side)
and causal AFT-simple, our Numba kernel against our NumPy reference (where its ``L^2 d`` logits fit) and the dense
alternative (the paper's factorized form ``exp(w') @ (exp(K) * V) / exp(w') @ exp(K)`` as ``(L L) x (L d)``
products, in torch when installed, else NumPy).

Every candidate is checked against a float64 evaluation of the same dense formula with the same-dtype baseline rule
(``bench.harness.check_against``; the float32 baseline is that formula in float32).  ``--quick`` shrinks the shapes.
"""
from __future__ import annotations

import numpy as np

from bench.workloads import _run, _t, _torch, workload

MATERIALIZED_MAX = 1 << 26  # b L^2 d elements up to which our materialized NumPy reference is timed


def _dense_numpy(q, k, v, w_prime, keep):
    """The factorized dense form in the inputs' dtype: a per-channel max of K (the bench's K ~ N(0, 1): no row
    underflows), the masked ``exp(w')`` as an ``(L L)`` matrix, two matrix products."""
    E = np.exp(k - k.max(axis=1, keepdims=True))
    Ew = np.where(keep, np.exp(w_prime - w_prime.max(axis=1, keepdims=True)), 0).astype(q.dtype)
    num = np.einsum("ts,bsd->btd", Ew, E * v)
    den = np.einsum("ts,bsd->btd", Ew, E)
    return 1 / (1 + np.exp(-q)) * (num / den)


def _dense_torch(torch, q, k, v, w_prime, keep):
    tq, tk, tv, tw = (torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v, w_prime))
    tkeep = torch.from_numpy(keep)

    def run():
        E = torch.exp(tk - tk.amax(dim=1, keepdim=True))
        Ew = torch.where(tkeep, torch.exp(tw - tw.amax(dim=1, keepdim=True)), torch.zeros((), dtype=tw.dtype))
        num = torch.matmul(Ew, E * tv)
        den = torch.matmul(Ew, E)
        return torch.sigmoid(tq) * (num / den)

    return run


def _aft_workload(name, title, quick_shape, full_shape, variant, causal, window, repeats, quick):
    from refimpl.attention.aft import aft_attention

    b, L, d = quick_shape if quick else full_shape
    rng = np.random.default_rng(13)
    q, k, v = (rng.standard_normal((b, L, d)).astype(np.float32) for _ in range(3))
    w = None if variant == "simple" else rng.uniform(-1, 1, (L, L)).astype(np.float32)
    t = np.arange(L)[:, None]
    j = np.arange(L)[None, :]
    keep = (j <= t) if causal else np.ones((L, L), dtype=bool)
    if variant == "simple":
        w_prime = np.zeros((L, L), dtype=np.float32)
    else:
        left, right = window
        w_prime = np.where((j >= t - left) & (j <= t + right), w, np.float32(0))
    oracle = _dense_numpy(*(a.astype(np.float64) for a in (q, k, v, w_prime)), keep)
    ref32 = _dense_numpy(q, k, v, w_prime, keep)
    kw = dict(variant=variant, causal=causal, window=window)
    ours = "ours numba windowed"
    cands = {ours: lambda: aft_attention(q, k, v, w, view="windowed", backend="numba", **kw),
             "dense NumPy (exp(w') @ (exp(K) V))": lambda: _dense_numpy(q, k, v, w_prime, keep)}
    notes = []
    if b * L * L * d <= MATERIALIZED_MAX:
        cands["ours numpy materialized reference"] = lambda: aft_attention(q, k, v, w, **kw)
    else:
        notes.append(f"our materialized NumPy reference not timed: its logits are b L^2 d = {b * L * L * d:.2e} floats")
    torch = _torch()
    if torch is not None:
        cands["dense torch (exp(w') @ (exp(K) V))"] = _dense_torch(torch, q, k, v, w_prime, keep)
    res = _run(name, title, dict(batch=b, length=L, channels=d, window=window, causal=causal), np.float32, cands,
               oracle, ref32, ours, repeats,
               to_numpy=lambda impl, out: out.numpy() if hasattr(out, "numpy") else np.asarray(out), budget=60.0)
    t_ours = _t(res, ours)
    # no target in the issue for AFT: the ratios are reported, not judged
    notes += [f"{impl}: {_t(res, impl) / t_ours:.3g}x our kernel's time" for impl in cands if impl != ours]
    res["notes"] = notes
    return res


@workload("AFT-local")
def aft_local(limits, repeats=5, quick=False):
    return _aft_workload("AFT-local", "AFT-local, window 64 each side", (1, 1024, 64), (1, 8192, 512), "local",
                         False, (64, 64), repeats, quick)


@workload("AFT-simple-causal")
def aft_simple_causal(limits, repeats=5, quick=False):
    return _aft_workload("AFT-simple-causal", "causal AFT-simple", (1, 1024, 64), (1, 8192, 512), "simple", True,
                         None, repeats, quick)
