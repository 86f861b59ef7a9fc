"""Report rows ``cuda/<view>`` for the SSM GPU twins (``refimpl/ssm/{lti,s4d,s4,s5}/cuda.py``).

Each row runs one kernel on small embedded inputs -- on a CUDA device when one is present, else under the CUDA
simulator (in a subprocess when the report imported numba without it), else listed as skipped with the reason
(:func:`oracles.checks._cuda.cuda_check`) -- and compares it with the NumPy reference view under a derived bound:

* recurrences and direct convolutions: :func:`oracles.ssm.lti_bound` (any association of the dense operator's
  terms, depth ``(L+2)(n+m+1)``); the FFT view adds :func:`oracles.ssm.fft_bound_lti`;
* the parallel scans: the depth of the chunked Kogge-Stone scan (:func:`scan_depth`, counted in
  ``refimpl/ssm/s5/cuda.py``'s module doc) on the recurrence of absolute values;
* the kernel ``K_k``: the reference kernel of ``|A_bar|, |B_bar|, |C|`` with the products and sums counted;
* Vandermonde / Cauchy: :func:`oracles.structured.vandermonde_bound` / :func:`~oracles.structured.cauchy_bound`.

The bound helpers here are shared with the tests (``tests/test_cuda_ssm.py``, ``property_tests/test_cuda_ssm_props.py``).
"""
from __future__ import annotations

import math
import time

import numpy as np

from oracles import ssm as O
from oracles import structured as OS
from oracles.checks import row
from oracles.checks._cuda import cuda_check
from oracles.tolerance import Bound, compare, componentwise_bound

SEED = 20261202
TPB = 8  # small blocks: several chunks / blocks even at the report's small shapes


# ============================================================================================ bounds

def scan_depth(L: int, threads_per_block: int) -> int:
    """Rounding depth of ``s_{L-1}`` in the chunked Kogge-Stone scan: ``L + ceil(L/T)(ceil(log2 T) + 2)``.

    A term ``a_t..a_{j+1} b_j`` is a product of ``t - j + 1`` factors (``t - j`` multiplications in any
    association) and passes at most ``ceil(log2 T)`` additions per chunk's tree plus one for the carry.
    """
    if L <= 0:
        return 0
    R = math.ceil(math.log2(threads_per_block)) if threads_per_block > 1 else 0
    return L + ((L - 1) // threads_per_block + 1) * (R + 2)


def abs_recurrence(a, b, s0):
    """``S_t = |a_t| S_{t-1} + |b_t|`` from ``|s0|``: ``a (l n)`` or ``(n)``, ``b (B l n)``, ``s0 (B n)`` or None."""
    b = np.abs(np.asarray(b))
    a = np.abs(np.asarray(a))
    if a.ndim == 1:
        a = np.broadcast_to(a, b.shape[1:])
    s = np.zeros((b.shape[0], b.shape[2])) if s0 is None else np.abs(np.asarray(s0))
    S = np.zeros(b.shape)
    for t in range(b.shape[1]):
        s = a[t] * s + b[:, t]
        S[:, t] = s
    return S


def diag_scan_bound(a, b, s0, dtype, threads_per_block: int) -> Bound:
    """CUDA scan vs the reference's sequential loop (float64 oracle, depth ``2L``)."""
    L = np.shape(b)[1]
    return componentwise_bound(abs_recurrence(a, b, s0), scan_depth(L, threads_per_block), dtype, complex_ops=True,
                               oracle_depth=2 * L, what=f"chunked Kogge-Stone scan, T={threads_per_block}")


def lti_scan_bound(A_bar, B_bar, C, D, x, dtype, threads_per_block: int, h0=None):
    """``(bound on y, bound on the final state)`` of the CUDA LTI scan view: ``B_bar x`` (``m`` products and sums),
    the scan (:func:`scan_depth`), the readout ``C h + D x`` (``n + m`` terms); magnitude = the dense operator of
    absolute values (:func:`oracles.ssm.apply_dense`)."""
    b, L, d, m = np.shape(x)
    n = np.shape(A_bar)[-1]
    ab = lambda a: None if a is None else np.abs(np.asarray(a))  # noqa: E731
    My, Mh = O.apply_dense(ab(A_bar), ab(B_bar), ab(C), ab(D), ab(x), h0=ab(h0), diagonal=True)
    cplx = any(np.iscomplexobj(a) for a in (A_bar, B_bar, C, D, x, h0) if a is not None)
    dh = scan_depth(L, threads_per_block) + m + 1
    dy = dh + n + m + 1
    ref = (L + 2) * (n + m + 1)  # the float64 reference's own depth (oracles.ssm.lti_bound)
    by = componentwise_bound(My.real, dy, dtype, complex_ops=cplx, oracle_depth=ref, what=f"cuda LTI scan, depth {dy}")
    bh = componentwise_bound(Mh.real, dh, dtype, complex_ops=cplx, oracle_depth=ref, what=f"cuda LTI scan state, depth {dh}")
    return by, bh


def lti_kernel_bound(A_bar, B_bar, C, L: int, dtype, *, diagonal: bool) -> Bound:
    """``K_k = C A_bar^k B_bar``: the reference kernel of absolute values; depth ``(L + 2)(n + 1)`` covers the CUDA
    kernel (diagonal: ``<= k`` powering products, 2 more products, ``n`` sums; dense: ``k`` matrix-vector products
    of ``n`` terms each, then ``n`` terms) and the reference's repeated products."""
    from refimpl.ssm.lti.reference import kernel

    n = np.shape(A_bar)[-1]
    M = kernel(np.abs(A_bar), np.abs(B_bar), np.abs(C), L, diagonal=diagonal)
    cplx = any(np.iscomplexobj(a) for a in (A_bar, B_bar, C))
    depth = (L + 2) * (n + 1)
    return componentwise_bound(M.real, depth, dtype, complex_ops=cplx, what=f"K_k = C A^k B, depth (L+2)(n+1) = {depth}")


def causal_conv_bound(K, x, D, dtype) -> Bound:
    """Direct causal convolution: ``L m + m`` products summed in any order (both sides)."""
    from refimpl.ssm.lti.reference import causal_conv

    L, m = np.shape(x)[1], np.shape(x)[3]
    M = causal_conv(np.abs(K), np.abs(x), None if D is None else np.abs(D))
    cplx = any(np.iscomplexobj(a) for a in (K, x, D) if a is not None)
    depth = (L + 1) * m + 1
    return componentwise_bound(M.real, depth, dtype, complex_ops=cplx, what=f"causal sum, depth (L+1)m+1 = {depth}")


def s5_scan_extra(mag, L: int, threads_per_block: int, dtype) -> Bound:
    """What the CUDA scan's depth adds over the sequential ``2L`` counted by :func:`oracles.structured.diag_ssm_bound`."""
    extra = max(0, scan_depth(L, threads_per_block) - 2 * L)
    return componentwise_bound(mag, extra, dtype, complex_ops=True, oracle_dtype=None,
                               what=f"scan depth over the sequential 2L: {extra}")


# ============================================================================================ report rows

_ROWS = [("ssm.lti", f"cuda/{v}") for v in ("recurrent", "recurrent-dense", "convolution", "convolution-dense",
                                             "fft", "scan",
                                             "scan-time-varying", "kernel")] + [
    ("ssm.diag_scan", "cuda/kogge-stone"), ("ssm.s4d.vandermonde", "cuda/vandermonde"),
    ("ssm.s4.cauchy", "cuda/cauchy"), ("ssm.s5", "cuda/scan"), ("ssm.lru", "cuda/scan")]


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


@cuda_check(rows=_ROWS)
def cuda_ssm():
    from refimpl.ssm.discretization import discretize
    from refimpl.ssm.lti import cuda as lti_cuda
    from refimpl.ssm.lti import lti_kernel
    from refimpl.ssm.lru import ring_init
    from refimpl.ssm.s4 import cauchy
    from refimpl.ssm.s4d import vandermonde
    from refimpl.ssm.s5 import cuda as s5_cuda
    from refimpl.ssm.s5 import init as s5_init

    rng = np.random.default_rng(SEED)
    rows = []
    # the kernels themselves (the entry points route to them: lti_ssm(..., backend="cuda")), with small blocks
    _LTI_VIEWS = dict(recurrent=lti_cuda.recurrent, convolution=lti_cuda.convolution,
                      fft=lti_cuda.convolution_fft, scan=lti_cuda.scan)
    b, L, d, n, m, p = 2, 11, 2, 3, 2, 2  # L = 11: odd, not a multiple of the block (8), two chunks
    note = f"b={b} L={L} d={d} n={n} m={m} p={p}, threads_per_block={TPB}; oracle: dense operator (float64)"
    for diagonal in (True, False):
        A, B, C, Dm = O.random_stable_system(rng, d, n, m, p, diagonal=diagonal, complex_=diagonal)
        Ab, Bb = discretize(A, B, 0.1, method="zoh", diagonal=diagonal)
        x = rng.standard_normal((b, L, d, m))
        s0 = rng.standard_normal((b, d, n)) + (0j if diagonal else 0.0)
        y_or, h_or = O.apply_dense(Ab, Bb, C, Dm, x, h0=s0, diagonal=diagonal)
        by, bh = O.lti_bound(Ab, Bb, C, Dm, x, np.float64, h0=s0, diagonal=diagonal)
        views = ["recurrent", "convolution", "fft", "scan"] if diagonal else ["recurrent", "convolution"]
        for view in views:
            (y, h), t = _timed(_LTI_VIEWS[view], Ab, Bb, C, Dm, x, diagonal=diagonal, initial_state=s0,
                               return_final_state=True, threads_per_block=TPB)
            if view == "scan":
                byv, bhv = lti_scan_bound(Ab, Bb, C, Dm, x, np.float64, TPB, h0=s0)
            elif view == "fft":
                byv, bhv = by + O.fft_bound_lti(lti_kernel(Ab, Bb, C, L, diagonal=True), x, np.float64), bh
            else:
                byv, bhv = by, bh
            cy, ch = compare(y, y_or, byv), compare(h, h_or, bhv)
            impl = f"cuda/{view}" + ("" if diagonal else "-dense")
            rows.append(row("ssm.lti", impl, cy if cy.worst_ratio >= ch.worst_ratio else ch, t,
                            note=("diagonal complex; " if diagonal else "dense real; ") + note))
        if diagonal:
            K, t = _timed(lti_kernel, Ab, Bb, C, L, diagonal=True, backend="cuda")
            rows.append(row("ssm.lti", "cuda/kernel", compare(K, _kernel_oracle(Ab, Bb, C, L),
                                                              lti_kernel_bound(Ab, Bb, C, L, np.float64,
                                                                               diagonal=True)), t,
                            note=f"K_k = C A^k B, L={L}; oracle: float64 repeated products"))
    # time-varying diagonal system (per-step dt) through the scan, float32
    A, B, C, Dm = O.random_stable_system(rng, d, n, m, p, diagonal=True, complex_=False)
    dts = rng.uniform(0.05, 0.2, (L, d))
    Ab, Bb = discretize(A, B, dts, method="zoh", diagonal=True)
    x = rng.standard_normal((b, L, d, m))
    y_or, h_or = O.apply_dense(Ab, Bb, C, Dm, x, diagonal=True)
    args32 = [a.astype(np.float32) for a in (Ab, Bb, C, Dm, x)]
    by, bh = lti_scan_bound(*args32[:4], args32[4], np.float32, TPB)
    (y, h), t = _timed(_LTI_VIEWS["scan"], *args32, diagonal=True, return_final_state=True, threads_per_block=TPB)
    cy, ch = compare(y, y_or, by), compare(h, h_or, bh)
    rows.append(row("ssm.lti", "cuda/scan-time-varying", cy if cy.worst_ratio >= ch.worst_ratio else ch, t,
                    note=f"float32, per-step dt (A_bar (l d n), B_bar (l d n m)), L={L}"))
    # the diagonal complex scan itself: time-varying a, threads_per_block 4 (three chunks)
    a = 0.95 * np.exp(1j * rng.uniform(-1, 1, (L, 3)))
    bb = rng.standard_normal((1, L, 3)) + 1j * rng.standard_normal((1, L, 3))
    s0 = rng.standard_normal((1, 3)) + 1j * rng.standard_normal((1, 3))
    from refimpl.ssm.s5.cuda import diag_scan as scan_cuda
    from refimpl.ssm.s5.reference import diag_scan as scan_ref

    out, t = _timed(scan_cuda, a, bb, s0, threads_per_block=4)
    rows.append(row("ssm.diag_scan", "cuda/kogge-stone", compare(out, scan_ref(a, bb, s0),
                                                                  diag_scan_bound(a, bb, s0, np.complex128, 4)), t,
                    note=f"complex128, L={L}, b=1, n=3, T=4 (3 chunks); oracle: the sequential loop"))
    # Vandermonde and Cauchy
    v = rng.standard_normal((3, 6)) + 1j * rng.standard_normal((3, 6))
    z = 0.97 * np.exp(1j * rng.uniform(-np.pi, np.pi, (3, 6)))
    from refimpl.ssm.s4d.reference import vandermonde as vref

    Kv, t = _timed(vandermonde, v, z, 13, backend="cuda")
    rows.append(row("ssm.s4d.vandermonde", "cuda/vandermonde", compare(Kv, vref(v, z, 13), OS.vandermonde_bound(v, z, 13)),
                    t, note="d=3 n=6 L=13; oracle: the reference's repeated products"))
    lam = -rng.uniform(0.1, 1, (3, 6)) + 1j * rng.uniform(-10, 10, (3, 6))
    g = 1j * rng.uniform(-40, 40, (3, 9))
    Kc, t = _timed(cauchy, v, g, lam, backend="cuda")
    rows.append(row("ssm.s4.cauchy", "cuda/cauchy", compare(Kc, OS.cauchy_mpmath(v, g, lam), OS.cauchy_bound(v, g, lam)),
                    t, note="d=3 n=6 l=9; oracle: mpmath"))
    # S5 and LRU layers with the CUDA scan
    Lambda, Bt, Ct, D5, dt = s5_init(8, 3, rng=rng)
    u = rng.standard_normal((2, L, 3))
    Ab5, Bb5 = OS.zoh_diag_vanloan(Lambda[:, None], Bt, dt[:, None])
    Ab5 = Ab5[:, 0]
    y_or = OS.diag_ssm_dense(Ab5, Bb5, Ct, D5, u, factor=2.0)
    bnd = OS.diag_ssm_bound(Ab5, Bb5, Ct, D5, u, factor=2.0, extra_rel_per_step=4 + float(np.max(np.abs(dt * Lambda))))
    bnd = bnd + s5_scan_extra(OS.diag_ssm_dense(Ab5, Bb5, Ct, D5, u, factor=2.0, absolute=True), L, TPB, np.float64)
    y, t = _timed(s5_cuda.scan, Lambda, Bt, Ct, D5, dt, u, output="2re", threads_per_block=TPB)
    rows.append(row("ssm.s5", "cuda/scan", compare(y, y_or, bnd), t, note=f"N=8 (4 pairs, 2 Re), d=3, L={L}, ZOH"))
    params = ring_init(6, 3, r_min=0.9, r_max=0.999, max_phase=np.pi / 10, rng=rng)
    nu_log, theta_log, gamma_log, Bl, Cl, Dl = params
    laml = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * Bl
    y_or = OS.diag_ssm_dense(laml, Bg, Cl, Dl, u)
    bnd = OS.diag_ssm_bound(laml, Bg, Cl, Dl, u, extra_rel_per_step=4 + float(np.max(np.exp(nu_log) + np.exp(theta_log))))
    bnd = bnd + s5_scan_extra(OS.diag_ssm_dense(laml, Bg, Cl, Dl, u, absolute=True), L, TPB, np.float64)
    y, t = _timed(s5_cuda.lru_scan, *params, u, threads_per_block=TPB)
    rows.append(row("ssm.lru", "cuda/scan", compare(y, y_or, bnd), t, note=f"ring init, N=6, d=3, L={L}"))
    return rows


def _kernel_oracle(A_bar, B_bar, C, L):
    """``K_k = C A_bar^k B_bar`` in float64 by the reference's repeated products."""
    from refimpl.ssm.lti.reference import kernel

    return kernel(A_bar, B_bar, C, L, diagonal=True)
