"""GPU benchmark of the numba.cuda twins (run on a device by ``bench/device_check.sh``; not a test).

For each kernel: the median time over a few runs (CUDA events around each call after a warm-up), the
compulsory bytes or FLOPs it must move / do, and from them its fraction of the card's **memory bandwidth**
and **fp32 FLOP rate** -- both measured in the same run (a large device-to-device copy; a large CuPy float32
matmul with TF32 off) -- and the time of a CuPy / PyTorch alternative where one exists.

Rows come from this file (the SSM core and structured kernels) and from every ``bench/gpu_bench_<family>.py``
present (each defines ``bench(ctx) -> list[dict]``; ``ctx`` is :class:`Context`).  A row is a dict:
``kernel, shape, dtype, time_s, bytes (or None), flops (or None), alt (name or None), alt_time_s``.

``--dry-run``: no CuPy, the CUDA simulator, tiny shapes on NumPy arrays -- checks that every row's code runs
(``NUMBA_ENABLE_CUDASIM=1`` is set before numba is imported).  Output: ``gpu_bench.json`` and ``gpu_bench.txt``
under ``--out`` (default ``$OUT`` or ``.``).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import sys
import time
import traceback

import numpy as np


class Context:
    """What a family's ``bench(ctx)`` gets: ``dry_run``, ``time(fn)`` (median seconds), the measured peaks."""

    def __init__(self, dry_run: bool, repeats: int = 5):
        self.dry_run = dry_run
        self.repeats = repeats
        self.bandwidth_GBs = None
        self.fp32_flops = None
        self.device = "CUDA simulator (dry run)" if dry_run else None

    def time(self, fn) -> float:
        """Median wall time of ``fn()`` on the device (CUDA events, one warm-up call first); dry run: one call."""
        if self.dry_run:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        import cupy as cp

        fn()
        cp.cuda.Device().synchronize()
        ts = []
        for _ in range(self.repeats):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            ts.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        return float(np.median(ts))

    def measure_peaks(self) -> None:
        """Memory bandwidth (a 1 GiB device-to-device copy: read + write) and fp32 FLOP rate (8192^3 matmul, TF32 off)."""
        if self.dry_run:
            return
        import cupy as cp

        n = 1 << 28  # 2^28 float32 = 1 GiB
        a = cp.ones(n, dtype=cp.float32)
        b = cp.empty_like(a)
        t = self.time(lambda: b.__setitem__(Ellipsis, a))
        self.bandwidth_GBs = 2 * a.nbytes / t / 1e9
        del a, b
        m = 8192
        x = cp.random.standard_normal((m, m), dtype=cp.float32)
        y = cp.random.standard_normal((m, m), dtype=cp.float32)
        t = self.time(lambda: x @ y)
        self.fp32_flops = 2 * m ** 3 / t
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        self.device = name.decode() if isinstance(name, bytes) else str(name)


def _seq_scan(xp, a, b, s0):
    """The alternative for a diagonal scan: the literal loop, one elementwise CuPy update per step."""
    out = xp.empty_like(b)
    s = s0
    for t in range(b.shape[1]):
        s = a[t] * s + b[:, t]
        out[:, t] = s
    return out


def bench(ctx: Context):
    """Rows of the SSM core and structured kernels (refimpl/ssm/{lti,s4d,s4,s5}/cuda.py)."""
    from refimpl.ssm.lti import cuda as lti
    from refimpl.ssm.s4.cuda import cauchy
    from refimpl.ssm.s4d.cuda import vandermonde
    from refimpl.ssm.s5.cuda import diag_scan

    dry = ctx.dry_run
    xp = np if dry else __import__("cupy")
    rng = np.random.default_rng(0)
    rows = []
    f32, c64 = np.float32, np.complex64
    # LTI diagonal system, real float32, SISO per channel
    b, L, d, n = (1, 6, 2, 2) if dry else (4, 4096, 512, 16)
    tpb = 4 if dry else 128
    A = xp.asarray(np.exp(-rng.uniform(0.001, 0.1, (d, n))).astype(f32))
    Bm = xp.asarray(rng.standard_normal((d, n, 1)).astype(f32))
    C = xp.asarray(rng.standard_normal((d, 1, n)).astype(f32))
    x = xp.asarray(rng.standard_normal((b, L, d, 1)).astype(f32))
    io = 4 * 2 * b * L * d  # x read, y written
    shape = f"b l d n m p = {b} {L} {d} {n} 1 1"
    alt_scan = None
    if not dry:
        Ab = xp.broadcast_to(A, (L, d, n))

        def alt_scan():
            h = _seq_scan(xp, Ab, (Bm[None, None, :, :, 0] * x), xp.zeros((b, d, n), f32))
            return (h * C[None, None, :, 0, :]).sum(-1)
    for view, fn in (("scan", lambda: lti.scan(A, Bm, C, None, x, diagonal=True, threads_per_block=tpb)),
                     ("recurrent", lambda: lti.recurrent(A, Bm, C, None, x, diagonal=True, threads_per_block=tpb))):
        t = ctx.time(fn)
        alt_t = None if dry else ctx.time(alt_scan)
        rows.append(dict(kernel=f"lti cuda/{view}", shape=shape, dtype="float32", time_s=t, bytes=io, flops=None,
                         alt=None if dry else "cupy sequential loop", alt_time_s=alt_t))
    # the FFT convolution view vs torch's FFT convolution
    K = lti.kernel(A, Bm, C, L, diagonal=True, threads_per_block=tpb)
    t = ctx.time(lambda: lti.fft_conv(K, x, threads_per_block=tpb))
    alt_name, alt_t = None, None
    if not dry:
        try:
            import torch

            Kt, xt = torch.as_tensor(K[:, :, 0, 0], device="cuda"), torch.as_tensor(x[..., 0], device="cuda")
            nf = 2 * L

            def torch_fft():
                return torch.fft.irfft(torch.fft.rfft(Kt, n=nf, dim=0)[None] * torch.fft.rfft(xt, n=nf, dim=1),
                                       n=nf, dim=1)[:, :L]
            alt_name, alt_t = "torch.fft rfft conv", ctx.time(torch_fft)
        except Exception:  # noqa: BLE001
            alt_name = None
    rows.append(dict(kernel="lti cuda/fft", shape=shape, dtype="float32", time_s=t, bytes=io + 4 * L * d, flops=None,
                     alt=alt_name, alt_time_s=alt_t))
    t = ctx.time(lambda: lti.kernel(A, Bm, C, L, diagonal=True, threads_per_block=tpb))
    rows.append(dict(kernel="lti cuda/kernel", shape=f"d n L = {d} {n} {L}", dtype="float32", time_s=t,
                     bytes=4 * L * d, flops=2 * d * L * n, alt=None, alt_time_s=None))
    # the diagonal complex scan (S5/LRU)
    bs, Ls, ns = (1, 6, 2) if dry else (8, 2048, 512)
    a = xp.asarray((0.999 * np.exp(1j * rng.uniform(-1, 1, ns))).astype(c64))
    bb = xp.asarray((rng.standard_normal((bs, Ls, ns)) + 1j * rng.standard_normal((bs, Ls, ns))).astype(c64))
    t = ctx.time(lambda: diag_scan(a, bb, threads_per_block=tpb))
    alt_t = None if dry else ctx.time(lambda: _seq_scan(xp, xp.broadcast_to(a, (Ls, ns)), bb, xp.zeros((bs, ns), c64)))
    rows.append(dict(kernel="diag_scan cuda/kogge-stone", shape=f"b l n = {bs} {Ls} {ns}", dtype="complex64", time_s=t,
                     bytes=2 * 8 * bs * Ls * ns, flops=None, alt=None if dry else "cupy sequential loop",
                     alt_time_s=alt_t))
    # Vandermonde and Cauchy (compute bound)
    dv, nv, Lv = (2, 3, 5) if dry else (256, 64, 4096)
    v = xp.asarray((rng.standard_normal((dv, nv)) + 1j * rng.standard_normal((dv, nv))).astype(c64))
    z = xp.asarray((0.999 * np.exp(1j * rng.uniform(-np.pi, np.pi, (dv, nv)))).astype(c64))
    t = ctx.time(lambda: vandermonde(v, z, Lv, threads_per_block=tpb))
    alt_t = None
    if not dry:
        k = xp.arange(Lv, dtype=xp.float32)
        alt_t = ctx.time(lambda: (v[:, :, None] * xp.exp(xp.log(z)[:, :, None] * k)).sum(1))
    log2L = max(1, int(np.ceil(np.log2(Lv))))
    rows.append(dict(kernel="s4d vandermonde cuda", shape=f"d n L = {dv} {nv} {Lv}", dtype="complex64", time_s=t,
                     bytes=None, flops=dv * nv * Lv * (8 + 6 * log2L), alt=None if dry else "cupy exp-log broadcast",
                     alt_time_s=alt_t))
    lam = xp.asarray((-0.5 + 1j * rng.uniform(-10, 10, (dv, nv))).astype(c64))
    g = xp.asarray((1j * rng.uniform(-40, 40, (dv, Lv))).astype(c64))
    t = ctx.time(lambda: cauchy(v, g, lam, threads_per_block=tpb))
    alt_t = None if dry else ctx.time(lambda: (v[:, None, :] / (g[:, :, None] - lam[:, None, :])).sum(-1))
    rows.append(dict(kernel="s4 cauchy cuda", shape=f"d n l = {dv} {nv} {Lv}", dtype="complex64", time_s=t,
                     bytes=None, flops=dv * nv * Lv * 14, alt=None if dry else "cupy broadcast", alt_time_s=alt_t))
    return rows


def _fractions(row, ctx):
    r = dict(row)
    t = r.get("time_s") or float("nan")
    if r.get("bytes") and ctx.bandwidth_GBs:
        r["GB_s"] = r["bytes"] / t / 1e9
        r["frac_bandwidth"] = r["GB_s"] / ctx.bandwidth_GBs
    if r.get("flops") and ctx.fp32_flops:
        r["GFLOP_s"] = r["flops"] / t / 1e9
        r["frac_fp32"] = r["flops"] / t / ctx.fp32_flops
    if r.get("alt_time_s"):
        r["speedup_vs_alt"] = r["alt_time_s"] / t
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CUDA simulator, tiny shapes, NumPy arrays, no CuPy")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for gpu_bench.json / .txt")
    ap.add_argument("--only", default=None, help="run only the bench modules whose name contains this")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        os.environ.setdefault("CUPY_TF32", "0")  # fp32 peak and kernels without TF32
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    ctx = Context(args.dry_run)
    ctx.measure_peaks()
    modules = [("bench.gpu_bench", sys.modules[__name__])]
    for path in sorted(glob.glob(os.path.join(here, "gpu_bench_*.py"))):
        modules.append((f"bench.{os.path.basename(path)[:-3]}", None))
    rows, errors = [], []
    for name, mod in modules:
        if args.only and args.only not in name:
            continue
        try:
            mod = mod or importlib.import_module(name)
            out = mod.bench(ctx)
            rows.extend(dict(r, module=name) for r in out)
        except Exception as exc:  # noqa: BLE001  one family's failure does not hide the others
            errors.append(dict(module=name, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()))
    rows = [_fractions(r, ctx) for r in rows]
    doc = dict(device=ctx.device, dry_run=args.dry_run, bandwidth_GBs=ctx.bandwidth_GBs, fp32_flops=ctx.fp32_flops,
               rows=rows, errors=errors)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_bench.json"), "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    lines = [f"device: {ctx.device}",
             f"measured: memory bandwidth {ctx.bandwidth_GBs or float('nan'):.1f} GB/s (1 GiB d2d copy), "
             f"fp32 {(ctx.fp32_flops or float('nan')) / 1e12:.2f} TFLOP/s (8192^3 cupy matmul, TF32 off)", ""]
    fmt = "{:<30} {:<36} {:<10} {:>10} {:>8} {:>8} {:>10}  {}"
    lines.append(fmt.format("kernel", "shape", "dtype", "time_ms", "%bw", "%fp32", "x vs alt", "alternative"))
    for r in rows:
        pct = lambda k: f"{100 * r[k]:.1f}" if k in r else "-"  # noqa: E731
        lines.append(fmt.format(r["kernel"][:30], str(r["shape"])[:36], r["dtype"], f"{1e3 * r['time_s']:.3f}",
                                pct("frac_bandwidth"), pct("frac_fp32"),
                                f"{r['speedup_vs_alt']:.2f}" if "speedup_vs_alt" in r else "-", r.get("alt") or "-"))
    for e in errors:
        lines.append(f"ERROR {e['module']}: {e['error']}")
    text = "\n".join(lines)
    with open(os.path.join(args.out, "gpu_bench.txt"), "w") as fh:
        fh.write(text + "\n")
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
