"""GPU benchmark rows of the attention CUDA twins (imported by ``bench/gpu_bench.py``; run on a device only, via
``bench/device_check.sh``).  Not a test.

* tiled softmax ``scaled_dot_product_attention(view="tiled", backend="cuda")`` vs PyTorch's SDPA on the same card
  (the issue's target: within 2x); FLOPs ``4 b h l s n`` (non-causal; ``QK^T`` and ``PV``).
* chunked linear attention ``linear_attention(view="chunked", backend="cuda")`` vs a chunked PyTorch einsum
  reference; FLOPs of the chunked form (``gpu_bench`` reports the fraction of the fp32 FLOP rate; target 30%).
* chunked delta rule ``delta_rule(view="chunked", backend="cuda")`` vs a chunked PyTorch WY reference
  (``torch.linalg.solve_triangular`` per chunk); FLOPs of the WY form.
* block-sparse ``sparse_attention(view="block_sparse", backend="cuda")`` (a Longformer window) vs PyTorch's SDPA
  with the dense boolean mask; FLOPs of the kept tiles only.

``ctx.dry_run`` (simulator, no CuPy): tiny shapes on NumPy inputs, no alternative.
"""
from __future__ import annotations

import numpy as np


def _has_torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _t(a):
    import torch

    return torch.as_tensor(a, device="cuda")


def _linear_torch(pq, pk, v, chunk):
    """Chunked causal normalized linear attention in PyTorch (l a multiple of chunk): intra-chunk masked
    ``(phi(Q) phi(K)^T) V``, inter-chunk state ``S = sum v k^T`` by a cumulative sum over chunks."""
    import torch

    Q, K, V = (_t(a).permute(0, 2, 1, 3) for a in (pq, pk, v))  # (b h l n)
    b, h, l, n = Q.shape
    c = l // chunk
    Q, K, V = (x.reshape(b, h, c, chunk, x.shape[-1]) for x in (Q, K, V))
    mask = torch.tril(torch.ones(chunk, chunk, device="cuda", dtype=Q.dtype))
    A = torch.einsum("bhcin,bhcjn->bhcij", Q, K) * mask
    KV = torch.einsum("bhcjn,bhcjp->bhcnp", K, V)
    S = torch.cumsum(KV, dim=2) - KV  # the state entering each chunk
    z = torch.cumsum(K.sum(3), dim=2) - K.sum(3)
    num = torch.einsum("bhcij,bhcjp->bhcip", A, V) + torch.einsum("bhcin,bhcnp->bhcip", Q, S)
    den = A.sum(-1) + torch.einsum("bhcin,bhcn->bhci", Q, z)
    return (num / den[..., None]).reshape(b, h, l, -1)


def _delta_torch(q, k, v, beta, chunk):
    """The chunked WY delta rule in PyTorch (plain rule, l a multiple of chunk): per chunk one unit-lower
    triangular solve for ``[W | U]``, then the outputs and the carried state."""
    import torch

    Q, K, V = (_t(a).permute(0, 2, 1, 3) for a in (q, k, v))
    Bt = _t(beta).permute(0, 2, 1)
    b, h, l, n = Q.shape
    p = V.shape[-1]
    S = torch.zeros(b, h, p, n, device="cuda", dtype=Q.dtype)
    I = torch.eye(chunk, device="cuda", dtype=Q.dtype)
    strict = torch.tril(torch.ones(chunk, chunk, device="cuda", dtype=Q.dtype), -1)
    outs = []
    for s in range(0, l, chunk):
        Kc, Vc, Qc, bc = K[:, :, s:s + chunk], V[:, :, s:s + chunk], Q[:, :, s:s + chunk], Bt[:, :, s:s + chunk]
        T = I + bc[..., None] * (Kc @ Kc.transpose(-1, -2)) * strict
        WU = torch.linalg.solve_triangular(T, bc[..., None] * torch.cat([Kc, Vc], -1), upper=False,
                                           unitriangular=True)
        W, U = WU[..., :n], WU[..., n:]
        QK = torch.tril(Qc @ Kc.transpose(-1, -2))
        WS = W @ S.transpose(-1, -2)
        outs.append(Qc @ S.transpose(-1, -2) - QK @ WS + QK @ U)
        S = S - WS.transpose(-1, -2) @ Kc + U.transpose(-1, -2) @ Kc
    return torch.cat(outs, 2)


def bench(ctx):
    from refimpl.attention.delta import delta_rule
    from refimpl.attention.linear import linear_attention
    from refimpl.attention.softmax import scaled_dot_product_attention
    from refimpl.attention.sparse import longformer_pattern, sparse_attention

    dry = ctx.dry_run
    xp = np if dry else __import__("cupy")
    alt = not dry and _has_torch_cuda()
    rng = np.random.default_rng(0)
    f32 = lambda *shape: xp.asarray(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    rows = []

    # tiled softmax vs torch SDPA
    b, l, h, n = (1, 5, 1, 2) if dry else (4, 2048, 16, 64)
    bq, bk = (2, 2) if dry else (16, 32)
    q, k, v = f32(b, l, h, n), f32(b, l, h, n), f32(b, l, h, n)
    t = ctx.time(lambda: scaled_dot_product_attention(q, k, v, view="tiled", backend="cuda", block_q=bq,
                                                      block_k=bk))
    alt_t = None
    if alt:
        import torch.nn.functional as F

        tq, tk, tv = (_t(a).permute(0, 2, 1, 3).contiguous() for a in (q, k, v))
        alt_t = ctx.time(lambda: F.scaled_dot_product_attention(tq, tk, tv))
    rows.append(dict(kernel="softmax cuda/tiled", shape=f"b l h n = {b} {l} {h} {n}, tiles {bq}x{bk}",
                     dtype="float32", time_s=t, bytes=None, flops=4 * b * h * l * l * n,
                     alt="torch SDPA" if alt else None, alt_time_s=alt_t))

    # chunked linear attention vs a torch chunked reference
    b, l, h, n, p = (1, 6, 1, 2, 2) if dry else (4, 4096, 16, 64, 64)
    chunk = 2 if dry else 32
    pq = xp.asarray(rng.uniform(0.05, 1, (b, l, h, n)).astype(np.float32))
    pk = xp.asarray(rng.uniform(0.05, 1, (b, l, h, n)).astype(np.float32))
    v = f32(b, l, h, p)
    t = ctx.time(lambda: linear_attention(pq, pk, v, view="chunked", backend="cuda", chunk=chunk))
    alt_t = ctx.time(lambda: _linear_torch(pq, pk, v, chunk)) if alt else None
    flops = 2 * b * h * l * (chunk * n + chunk * p + 2 * p * n + n)
    rows.append(dict(kernel="linear cuda/chunked", shape=f"b l h n p = {b} {l} {h} {n} {p}, chunk {chunk}",
                     dtype="float32", time_s=t, bytes=None, flops=flops,
                     alt="torch chunked einsum" if alt else None, alt_time_s=alt_t))

    # chunked delta rule vs a torch chunked WY reference
    b, l, h, n, p = (1, 6, 1, 2, 2) if dry else (4, 4096, 16, 64, 64)
    chunk = 2 if dry else 16
    q, v = f32(b, l, h, n), f32(b, l, h, p)
    kn = rng.standard_normal((b, l, h, n))
    k = xp.asarray((kn / np.linalg.norm(kn, axis=-1, keepdims=True)).astype(np.float32))
    beta = xp.asarray(rng.uniform(0, 1, (b, l, h)).astype(np.float32))
    t = ctx.time(lambda: delta_rule(q, k, v, beta, view="chunked", backend="cuda", chunk=chunk))
    alt_t = ctx.time(lambda: _delta_torch(q, k, v, beta, chunk)) if alt else None
    # per token: K K^T and Q K^T rows (2 c n), the solves (c (n + p)), W S^T and Q S^T (2 p n), the outputs
    # (2 c p), the state update (2 p n)
    flops = 2 * b * h * l * (2 * chunk * n + chunk * (n + p) // 2 + 4 * p * n + 2 * chunk * p)
    rows.append(dict(kernel="delta cuda/chunked", shape=f"b l h n p = {b} {l} {h} {n} {p}, chunk {chunk}",
                     dtype="float32", time_s=t, bytes=None, flops=flops,
                     alt="torch chunked WY (solve_triangular)" if alt else None, alt_time_s=alt_t))

    # block-sparse (Longformer window) vs torch SDPA with the dense mask
    b, l, h, n = (1, 6, 1, 2) if dry else (2, 4096, 16, 64)
    block = 2 if dry else 32
    win = 1 if dry else 256
    pat = longformer_pattern(l, win, global_tokens=(0,))
    layout = pat.block_layout(block)
    q, k, v = f32(b, l, h, n), f32(b, l, h, n), f32(b, l, h, n)
    t = ctx.time(lambda: sparse_attention(q, k, v, pat, view="block_sparse", backend="cuda", block=block))
    alt_t = None
    if alt:
        import torch.nn.functional as F

        keep = _t(pat.mask())  # (h l l) or (1 l l): broadcast over the batch
        tq, tk, tv = (_t(a).permute(0, 2, 1, 3).contiguous() for a in (q, k, v))
        alt_t = ctx.time(lambda: F.scaled_dot_product_attention(tq, tk, tv, attn_mask=keep))
    flops = 4 * b * h * layout.n_tiles * block * block * n
    rows.append(dict(kernel="sparse cuda/block_sparse", shape=f"b l h n = {b} {l} {h} {n}, block {block}, "
                     f"longformer window {win}", dtype="float32", time_s=t, bytes=None, flops=flops,
                     alt="torch SDPA + dense mask" if alt else None, alt_time_s=alt_t))
    return rows
