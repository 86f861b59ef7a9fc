"""Bench workload of FLASH's mixed-chunk attention (issue 13, Hua et al. 2022): causal chunked GAU (b 1, L 8192,
d 512, s = n 128, e = p 1024, c 256), our Numba kernel against our NumPy chunked reference and the plain dense
alternative (the ``(L L)`` FLASH matrix -- block-diagonal relu^2 plus the masked low-rank part -- formed and
multiplied by ``V``, in torch when installed, else NumPy).

Every candidate is checked against our float64 chunked reference with the same-dtype baseline rule
(``bench.harness.check_against``; the float32 baseline is the NumPy reference in float32).  ``--quick`` shrinks
the shapes to (b 1, L 1024, d 128, n 64, p 256, c 128).  No target in the issue: the ratios are reported.
"""
from __future__ import annotations

import numpy as np

from bench.workloads import _run, _t, _torch, workload


def _silu(y):
    return y / (1 + np.exp(-y))


def _dense_numpy(x, W_u, W_v, W_z, gamma, beta, W_o, c):
    """The plain dense form (causal): U, V, Z, the four scale/offset rows, the (L L) matrix, one product."""
    L = x.shape[1]
    U, V, Z = _silu(x @ W_u), _silu(x @ W_v), _silu(x @ W_z)
    Qq, Kq, Ql, Kl = (gamma[r] * Z + beta[r] for r in range(4))
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    quad = ((i // c) == (j // c)) & (j <= i)
    lin = (j // c) < (i // c)
    A = np.where(quad, np.maximum(Qq @ Kq.transpose(0, 2, 1) / c, 0) ** 2, 0)
    A = A + np.where(lin, Ql @ Kl.transpose(0, 2, 1) / c, 0)
    return (U * (A.astype(x.dtype) @ V)) @ W_o


def _dense_torch(torch, x, W_u, W_v, W_z, gamma, beta, W_o, c):
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (x, W_u, W_v, W_z, gamma, beta, W_o)]
    L = x.shape[1]
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    quad = ((i // c) == (j // c)) & (j <= i)
    lin = (j // c) < (i // c)

    def run():
        tx, tu, tv, tz, tg, tb, to = t
        U, V, Z = (torch.nn.functional.silu(tx @ w) for w in (tu, tv, tz))
        Qq, Kq, Ql, Kl = (tg[r] * Z + tb[r] for r in range(4))
        zero = torch.zeros((), dtype=tx.dtype)
        A = torch.where(quad, torch.relu(Qq @ Kq.transpose(1, 2) / c) ** 2, zero)
        A = A + torch.where(lin, Ql @ Kl.transpose(1, 2) / c, zero)
        return (U * (A @ V)) @ to

    return run


@workload("GAU-chunked")
def gau_chunked(limits, repeats=5, quick=False):
    from refimpl.attention.gau import mixed_chunk_attention

    b, L, d, n, p, c = (1, 1024, 128, 64, 256, 128) if quick else (1, 8192, 512, 128, 1024, 256)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((b, L, d)).astype(np.float32)
    W_u, W_v = ((rng.standard_normal((d, p)) / np.sqrt(d)).astype(np.float32) for _ in range(2))
    W_z = (rng.standard_normal((d, n)) / np.sqrt(d)).astype(np.float32)
    gamma = (1 + 0.02 * rng.standard_normal((4, n))).astype(np.float32)
    beta = (0.02 * rng.standard_normal((4, n))).astype(np.float32)
    W_o = (rng.standard_normal((p, d)) / np.sqrt(p)).astype(np.float32)
    W = (W_u, W_v, W_z, gamma, beta, W_o)
    oracle = mixed_chunk_attention(x.astype(np.float64), *(w.astype(np.float64) for w in W), chunk=c, causal=True)
    ref32 = mixed_chunk_attention(x, *W, chunk=c, causal=True)
    ours = "ours numba chunked"
    cands = {ours: lambda: mixed_chunk_attention(x, *W, chunk=c, causal=True, backend="numba"),
             "ours numpy chunked reference": lambda: mixed_chunk_attention(x, *W, chunk=c, causal=True)}
    torch = _torch()
    if torch is not None:
        cands["dense torch (L L) FLASH matrix"] = _dense_torch(torch, x, *W, c)
    else:
        cands["dense NumPy (L L) FLASH matrix"] = lambda: _dense_numpy(x, *W, c)
    res = _run("GAU-chunked", "causal FLASH mixed-chunk attention",
               dict(batch=b, length=L, width=d, shared_dim=n, expansion=p, chunk=c), np.float32, cands, oracle,
               ref32, ours, repeats, to_numpy=lambda impl, out: out.numpy() if hasattr(out, "numpy") else out,
               budget=60.0)
    t_ours = _t(res, ours)
    res["notes"] = [f"{impl}: {_t(res, impl) / t_ours:.3g}x our kernel's time" for impl in cands if impl != ours]
    return res
