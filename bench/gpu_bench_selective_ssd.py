"""GPU benchmark rows of the S6 and SSD CUDA twins (imported by ``bench/gpu_bench.py``; run on a device only, via
``bench/device_check.sh``).  Not a test.

* S6 ``selective_scan(view="chunked", backend="cuda")`` (real A, Mamba discretization, variable B/C, D, z, bias,
  softplus) vs a sequential CuPy reference (one elementwise update of the ``(b d n)`` state per step); the
  bytes are the compulsory traffic (``u, delta, z`` read, ``out`` written, ``B, C`` read), so ``gpu_bench``
  reports the kernel as a fraction of memory bandwidth.
* SSD ``ssd_scan(view="chunked", backend="cuda")`` vs a chunked PyTorch einsum reference (Mamba-2's ``ssd_minimal``
  steps; no alternative without PyTorch); the FLOPs are those of the four chunked steps, so ``gpu_bench`` reports it as a
  fraction of the fp32 FLOP rate.

``ctx.dry_run`` (simulator, no CuPy): tiny shapes on NumPy inputs, no alternative.
"""
from __future__ import annotations

import numpy as np


def _s6_inputs(xp, b, l, d, n, dtype):
    rng = np.random.default_rng(0)
    arrs = dict(u=rng.standard_normal((b, l, d)), delta=rng.standard_normal((b, l, d)) - 1.0,
                A=-np.exp(rng.standard_normal((d, n))), B=rng.standard_normal((b, l, n)),
                C=rng.standard_normal((b, l, n)), D=rng.standard_normal(d), z=rng.standard_normal((b, l, d)),
                delta_bias=rng.standard_normal(d))
    return {k: xp.asarray(v.astype(dtype)) for k, v in arrs.items()}


def _s6_sequential(xp, a):
    """The literal loop on the device: per step ``h = exp(Delta A) h + Delta B u``, ``y = C . h``."""
    Delta = a["delta"] + a["delta_bias"]
    Delta = xp.where(Delta > 20, Delta, xp.log1p(xp.exp(xp.minimum(Delta, 20))))
    b, l, d = a["u"].shape
    h = xp.zeros((b, d, a["A"].shape[1]), dtype=a["u"].dtype)
    out = xp.empty_like(a["u"])
    for t in range(l):
        h = xp.exp(Delta[:, t, :, None] * a["A"]) * h + (Delta[:, t] * a["u"][:, t])[..., None] * a["B"][:, t, None, :]
        out[:, t] = (h * a["C"][:, t, None, :]).sum(-1)
    zt = a["z"]
    return (out + a["D"] * a["u"]) * (zt / (1 + xp.exp(-zt)))


def _ssd_inputs(xp, b, l, h, p, g, n, dtype):
    rng = np.random.default_rng(1)
    arrs = dict(x=rng.standard_normal((b, l, h, p)), dt=rng.standard_normal((b, l, h)) - 1.0,
                A=-np.exp(rng.standard_normal(h)), B=rng.standard_normal((b, l, g, n)),
                C=rng.standard_normal((b, l, g, n)))
    return {k: xp.asarray(v.astype(dtype)) for k, v in arrs.items()}


def _ssd_torch(a, chunk):
    """Mamba-2's chunked steps as PyTorch einsums (``ssd_minimal``; ``dt = softplus(dt)``, ``l`` a multiple of chunk)."""
    import torch

    x, dt, A, B, C = (torch.as_tensor(a[k], device="cuda") for k in ("x", "dt", "A", "B", "C"))
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    dt = torch.nn.functional.softplus(dt)  # threshold 20, as the kernel
    B, C = B.repeat_interleave(h // g, dim=2), C.repeat_interleave(h // g, dim=2)
    c = l // chunk
    X = (x * dt[..., None]).reshape(b, c, chunk, h, p)
    Bc, Cc = B.reshape(b, c, chunk, h, n), C.reshape(b, c, chunk, h, n)
    Acs = (dt * A).reshape(b, c, chunk, h).permute(0, 3, 1, 2).cumsum(-1)  # (b h c T)
    mask = torch.tril(torch.ones(chunk, chunk, dtype=torch.bool, device="cuda"))
    Lm = torch.exp((Acs[..., :, None] - Acs[..., None, :]).masked_fill(~mask, -float("inf")))
    Yd = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lm, X)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, torch.exp(Acs[..., -1:] - Acs), X)
    S = torch.zeros_like(states[:, 0])
    prev = []
    for ci in range(c):
        prev.append(S)
        S = torch.exp(Acs[:, :, ci, -1])[..., None, None] * S + states[:, ci]
    Yo = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, torch.stack(prev, 1), torch.exp(Acs))
    return (Yd + Yo).reshape(b, l, h, p)


def _has_torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def bench(ctx):
    from refimpl.ssm.selective import selective_scan
    from refimpl.ssm.ssd import ssd_scan

    dry = ctx.dry_run
    xp = np if dry else __import__("cupy")
    rows = []
    # S6
    b, l, d, n = (1, 6, 2, 2) if dry else (8, 1024, 1536, 16)
    chunk = 2 if dry else 64
    a = _s6_inputs(xp, b, l, d, n, np.float32)
    fn = lambda: selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],  # noqa: E731
                                delta_bias=a["delta_bias"], delta_softplus=True, view="chunked", backend="cuda",
                                chunk=chunk)
    t = ctx.time(fn)
    alt_t = None if dry else ctx.time(lambda: _s6_sequential(xp, a))
    rows.append(dict(kernel="s6 cuda/chunked", shape=f"b l d n = {b} {l} {d} {n}, chunk {chunk}", dtype="float32",
                     time_s=t, bytes=4 * (4 * b * l * d + 2 * b * l * n + 2 * d + d * n), flops=None,
                     alt=None if dry else "cupy sequential loop", alt_time_s=alt_t))
    # SSD
    b, l, h, p, g, n = (1, 6, 2, 2, 1, 2) if dry else (2, 2048, 32, 64, 1, 128)
    chunk = 2 if dry else 64
    a = _ssd_inputs(xp, b, l, h, p, g, n, np.float32)
    fn = lambda: ssd_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], dt_softplus=True, view="chunked",  # noqa: E731
                          backend="cuda", chunk=chunk)
    t = ctx.time(fn)
    alt = not dry and _has_torch_cuda()
    alt_t = ctx.time(lambda: _ssd_torch(a, chunk)) if alt else None
    flops = b * h * l * (2 * chunk * n + 2 * chunk * p + 4 * p * n)
    rows.append(dict(kernel="ssd cuda/chunked", shape=f"b l h p g n = {b} {l} {h} {p} {g} {n}, chunk {chunk}",
                     dtype="float32", time_s=t, bytes=None, flops=flops,
                     alt="torch chunked einsum" if alt else None, alt_time_s=alt_t))
    return rows
