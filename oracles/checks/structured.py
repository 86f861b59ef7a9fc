"""Report rows for HiPPO and the structured SSMs (S4, S4D/DSS, S5, LRU, MEGA EMA) and their Numba kernels.

Every row compares against an independent oracle (:mod:`oracles.hippo` Gauss quadrature,
:mod:`oracles.structured` direct powers / Van Loan / mpmath / dense operators) under a derived bound.
"""
from __future__ import annotations

import numpy as np

from oracles import hippo as OH
from oracles import structured as OS
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare

SEED = 20261126


def _signal(x):
    return np.sin(3 * x) + 0.5 * np.cos(7 * x) + x


@check
def hippo_projection():
    """HiPPO projection accuracy at the default N = 8, L = 1000 steps on [0, 1]: online vs Gauss quadrature."""
    from refimpl.ssm.hippo import hippo_projection

    rows = []
    N, T, L = 8, 1.0, 1000
    for measure, method, order in (("legs", "forward_euler", 1), ("legs", "bilinear", 2), ("lagt", "bilinear", 2)):
        dt = T / L
        if measure == "legs":
            grid = lambda dt_, L_: dt_ * np.arange(1, L_ + 1)  # noqa: E731
            oracle = OH.coefficients(_signal, "legs", N, T)
        else:
            grid = lambda dt_, L_: dt_ * np.arange(L_ + 1)  # noqa: E731
            oracle = OH.coefficients(_signal, "lagt_finite", N, T)
        c, t = timed(hippo_projection, _signal(grid(dt, L)), measure, N, dt, method=method)
        c2 = hippo_projection(_signal(grid(dt / 2, 2 * L)), measure, N, dt / 2, method=method)
        cmp = compare(c[-1], oracle, OH.richardson_bound(c[-1], c2[-1], order))
        e1, e2 = np.max(np.abs(c[-1] - oracle)), np.max(np.abs(c2[-1] - oracle))
        rows.append(row(f"ssm.hippo.{measure}.projection", f"reference/{method}", cmp, t,
                        note=f"oracle: Gauss quadrature; N={N}, L={L}: max err {e1:.2e}, at L={2 * L}: {e2:.2e}, "
                             f"measured order {np.log2(e1 / e2):.2f} (expected {order})"))
    # windowed measures on an exact history (polynomial of degree < N), started at t0 from the oracle
    p = np.polynomial.Polynomial([1.0, 1.0, -2.0, 0.3])
    for measure in ("legt", "lmu"):
        t0, T1 = 1.0, 2.0
        dt = (T1 - t0) / L
        c0 = OH.coefficients(p, measure, N, t0)
        c, t = timed(hippo_projection, p(t0 + dt * np.arange(L + 1)), measure, N, dt, t0=t0, initial_state=c0)
        c2 = hippo_projection(p(t0 + dt / 2 * np.arange(2 * L + 1)), measure, N, dt / 2, t0=t0, initial_state=c0)
        oracle = OH.coefficients(p, measure, N, T1)
        e1, e2 = np.max(np.abs(c[-1] - oracle)), np.max(np.abs(c2[-1] - oracle))
        rows.append(row(f"ssm.hippo.{measure}.projection", "reference/bilinear",
                        compare(c[-1], oracle, OH.richardson_bound(c[-1], c2[-1], 2)), t,
                        note=f"cubic signal; max err {e1:.2e}, at L={2 * L}: {e2:.2e}, order {np.log2(e1 / e2):.2f}"))
    g = lambda x: 1 + np.cos(2 * np.pi * x) - 0.5 * np.sin(4 * np.pi * x)  # noqa: E731
    t0, T1, Nf = 1.0, 2.3, 7
    dt = (T1 - t0) / L
    c0 = OH.coefficients(g, "fout", Nf, t0)
    c, t = timed(hippo_projection, g(t0 + dt * np.arange(L + 1)), "fout", Nf, dt, t0=t0, initial_state=c0)
    c2 = hippo_projection(g(t0 + dt / 2 * np.arange(2 * L + 1)), "fout", Nf, dt / 2, t0=t0, initial_state=c0)
    oracle = OH.coefficients(g, "fout", Nf, T1)
    rows.append(row("ssm.hippo.fout.projection", "reference/bilinear",
                    compare(c[-1], oracle, OH.richardson_bound(c[-1], c2[-1], 2)), t,
                    note=f"periodic trig signal in the span, N={Nf}; max err {np.max(np.abs(c[-1] - oracle)):.2e}"))
    return rows


@check
def hippo_reconstruction():
    from refimpl.ssm import hippo

    rows = []
    N, t = 8, 1.5
    coef = np.random.default_rng(SEED).standard_normal(N)
    f = lambda x: np.polynomial.polynomial.polyval(x, coef)  # noqa: E731
    fa = lambda x: np.polynomial.polynomial.polyval(np.abs(x), np.abs(coef))  # noqa: E731
    fd = 2 * N + 2
    for measure in ("legs", "legt", "lmu", "lagt"):
        lo = {"legs": 0.0, "lagt": t - 3.0}.get(measure, t - 1.0)
        x = np.linspace(lo, t, 33)
        nq = 40 if measure == "lagt" else 200
        c = OH.coefficients(f, measure, N, t, n_quad=nq)
        c_err = OH.coefficients_magnitude(fa, measure, N, t, n_quad=nq, f_depth=fd)
        y, tm = timed(hippo.reconstruct, c, measure, x, t)
        note = "degree-7 polynomial from its quadrature coefficients"
        if measure == "legs":
            xs = np.linspace(0, 2.0, 101)
            errs = [np.max(np.abs(hippo.reconstruct(OH.coefficients(_signal, "legs", n, 2.0), "legs", xs, 2.0)
                                  - _signal(xs))) for n in (8, 16, 32)]
            note += f"; smooth signal sin3x+cos7x/2+x on [0,2]: max err N=8 {errs[0]:.2e}, 16 {errs[1]:.2e}, 32 {errs[2]:.2e}"
        rows.append(row(f"ssm.hippo.{measure}.reconstruction", "reference/basis-sum",
                        compare(y, f(x), OH.reconstruction_bound(c, c_err, measure, x, t, f_mag=fa(x), f_depth=fd)),
                        tm, note=note))
    return rows


@check
def s4_nplr():
    from refimpl.ssm import hippo, s4

    rows = []
    for measure in ("legs", "legt", "lagt", "fout"):
        N = 65 if measure == "fout" else 64
        d, t = timed(s4.nplr, measure, N)
        cmp = compare(d.dense().real, d.A, Bound(d.reconstruction_bound, "NPLR: gamma_{N^2}||K|| (eigh) + gamma_{2N+r+2} |V||core||V^*|"))
        note = f"N={N}; cond(V) = {d.cond_V:.3g}"
        if measure == "legs":
            note += f"; eigenvectors of A itself: cond {s4.eigenvector_condition(hippo.legs(16, sign='s4')[0]):.2e} at N=16"
        rows.append(row(f"ssm.s4.nplr.{measure}", "reference/eigh", cmp, t, note=note))
    return rows


@check
def s4_kernel():
    from refimpl.ssm import s4
    from refimpl.ssm.s4 import s4_kernel as kernel

    rows = []
    rng = np.random.default_rng(SEED)
    for measure in ("legs", "legt", "lagt", "fout"):
        N = 33 if measure == "fout" else 32
        L, dt = 256, 0.01
        d = s4.nplr(measure, N)
        C = rng.standard_normal(N) @ d.V
        args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], dt, L)
        K_or = OS.kernel_powers(*OS.bilinear_dense(OS.dplr_dense(d.Lambda, d.Pt, d.Qt), d.Bt, dt), C, L)
        bound = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L)
        for backend in ("numpy", "numba"):
            kernel(*args, backend=backend)  # warm
            K, t = timed(kernel, *args, backend=backend)
            rows.append(row(f"ssm.s4.kernel.{measure}", f"{'reference' if backend == 'numpy' else 'numba'}/cauchy-woodbury",
                            compare(K[0], K_or, bound), t, note=f"bilinear, N={N}, L={L} (Nyquist node), oracle: direct powers"))
    # ZOH where it applies (P = 0): S4D-LegS eigenvalues, generating function in z
    from refimpl.ssm import s4d

    lam, B = s4d.init("legs", 64)
    C = rng.standard_normal(32) + 1j * rng.standard_normal(32)
    z = np.zeros((1, 32, 0))
    K_or = OS.kernel_powers(*OS.zoh_diag_vanloan(lam, B, 0.01), C, 1024)
    for backend in ("numpy", "numba"):
        K, t = timed(kernel, lam[None], z, z, B[None], C[None], 0.01, 1024, method="zoh", backend=backend)
        rows.append(row("ssm.s4.kernel.diag.zoh", f"{'reference' if backend == 'numpy' else 'numba'}/cauchy-in-z",
                        compare(K[0], K_or, OS.zoh_gf_bound(lam, B, C, 0.01, 1024)), t,
                        note="P = 0 (S4D-LegS spectrum, 32 states), L=1024; oracle: Van Loan + direct powers"))
    d = s4.nplr("legs", 6)
    C = rng.standard_normal(6) @ d.V
    K, t = timed(kernel, d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], 0.1, 16)
    rows.append(row("ssm.s4.kernel.legs.mpmath", "reference/cauchy-woodbury",
                    compare(K[0], OS.dplr_kernel_mpmath(d.Lambda, d.Pt, d.Qt, d.Bt, C, 0.1, 16),
                            OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, 0.1, 16, oracle="mpmath")), t,
                    note="N=6, L=16, oracle: mpmath 40 digits"))
    return rows


@check
def cauchy_kernel():
    from refimpl.ssm.s4 import cauchy

    rng = np.random.default_rng(SEED)
    h, n, L = 2, 16, 24
    v = rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))
    lam = -rng.uniform(0.1, 1, (h, n)) + 1j * rng.uniform(-10, 10, (h, n))
    g = 1j * rng.uniform(-40, 40, (h, L))
    oracle = OS.cauchy_mpmath(v, g, lam)
    b = OS.cauchy_bound(v, g, lam)
    rows = []
    ref, t = timed(cauchy, v, g, lam)
    rows.append(row("ssm.structured.cauchy", "reference/numpy", compare(ref, oracle, b), t, note="oracle: mpmath"))
    cauchy(v, g, lam, backend="numba")  # warm
    got, t = timed(cauchy, v, g, lam, backend="numba")
    rows.append(row("ssm.structured.cauchy", "numba/parallel", compare(got, oracle, b), t, note="oracle: mpmath"))
    return rows


@check
def s4d_kernels():
    from refimpl.ssm import s4d

    rows = []
    rng = np.random.default_rng(SEED)
    L = 1024
    for init in ("lin", "legs"):
        lam, B = s4d.init(init, 64)
        C = rng.standard_normal(32) + 1j * rng.standard_normal(32)
        dt = 0.01
        for method in ("zoh", "bilinear"):
            K, t = timed(s4d.s4d_kernel, lam[None], B[None], C[None], dt, L, method=method, output="2re")
            disc = OS.zoh_diag_vanloan if method == "zoh" else OS.bilinear_diag
            Ab, Bb = disc(lam, B, dt)
            K_or = 2 * OS.kernel_powers(Ab, Bb, C, L).real
            b = OS.diag_kernel_bound(lam, B, C, dt, L, method, factor=2.0, discretized=(Ab, Bb))
            rows.append(row(f"ssm.s4d.kernel.{method}.{init}", "reference/vandermonde", compare(K[0], K_or, b), t,
                            note=f"S4D-{init.capitalize()}, N=64 (32 pairs, 2 Re), L={L}, oracle: Van Loan + direct powers"))
            s4d.s4d_kernel(lam[None], B[None], C[None], dt, L, method=method, output="2re", backend="numba")  # warm
            Kn, t = timed(s4d.s4d_kernel, lam[None], B[None], C[None], dt, L, method=method, output="2re",
                          backend="numba")
            rows.append(row(f"ssm.s4d.kernel.{method}.{init}", "numba/vandermonde", compare(Kn[0], K_or, b), t,
                            note=f"S4D-{init.capitalize()}"))
    lam = -rng.uniform(0.1, 0.5, 4) + 1j * rng.uniform(-5, 5, 4)
    w = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    K, t = timed(s4d.dss_kernel, lam[None], w[None], 0.5, 64, variant="softmax")
    rows.append(row("ssm.s4d.dss.softmax", "reference/log-softmax",
                    compare(K[0], OS.dss_softmax_mpmath(lam, w, 0.5, 64), OS.dss_softmax_bound(lam, w, 0.5, 64)), t,
                    note="N=4, L=64, oracle: mpmath"))
    K, t = timed(s4d.dss_kernel, lam[None], w[None], 0.5, 64, variant="exp")
    Ab, Bb = OS.zoh_diag_vanloan(lam, np.ones(4), 0.5)
    rows.append(row("ssm.s4d.dss.exp", "reference/exp", compare(K[0], OS.kernel_powers(Ab, Bb, w, 64).real,
                                                                  OS.diag_kernel_bound(lam, np.ones(4), w, 0.5, 64, "zoh", discretized=(Ab, Bb))), t,
                    note="N=4, L=64, oracle: Van Loan + direct powers"))
    return rows


@check
def s5_lru_ema():
    from refimpl.ssm.ema import mega_ema
    from refimpl.ssm.lru import lru_ssm, ring_init
    from refimpl.ssm.s5 import init as s5_init
    from refimpl.ssm.s5 import s5_ssm

    rows = []
    rng = np.random.default_rng(SEED)
    Lambda, Bt, Ct, D, dt = s5_init(16, 4, rng=rng)
    u = rng.standard_normal((2, 256, 4))
    Cb = rng.standard_normal((4, 8)) + 1j * rng.standard_normal((4, 8))
    Ab, Bb = OS.zoh_diag_vanloan(Lambda[:, None], Bt, dt[:, None])
    Ab = Ab[:, 0]
    extra = 4 + float(np.max(np.abs(dt * Lambda)))
    y_or = OS.diag_ssm_dense(Ab, Bb, Ct, D, u, factor=2.0)
    b = OS.diag_ssm_bound(Ab, Bb, Ct, D, u, factor=2.0, extra_rel_per_step=extra)
    for view, backend in (("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba")):
        y, t = timed(s5_ssm, Lambda, Bt, Ct, D, dt, u, output="2re", view=view, backend=backend)
        impl = "numba/diag-scan" if backend == "numba" else f"reference/{view}"
        rows.append(row("ssm.s5", impl, compare(y, y_or, b), t,
                        note="HiPPO-N init, N=16 (n=8 pairs, 2 Re), d=4, L=256, per-state dt, ZOH; oracle: Van Loan + dense operator"))
    yb_or = y_or + OS.diag_ssm_dense(Ab, Bb, Cb, None, u[:, ::-1], factor=2.0)[:, ::-1]
    bb = OS.diag_ssm_bound(Ab, Bb, Cb, None, u[:, ::-1], factor=2.0, extra_rel_per_step=extra)
    y, t = timed(s5_ssm, Lambda, Bt, Ct, D, dt, u, output="2re", view="scan", C_back=Cb)
    rows.append(row("ssm.s5.bidirectional", "reference/scan", compare(y, yb_or, b + Bound(bb.values[:, ::-1], bb.source)), t))

    params = ring_init(32, 4, r_min=0.9, r_max=0.999, max_phase=np.pi / 10, rng=rng)
    nu_log, theta_log, gamma_log, B, C, Dl = params
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * B
    y_or = OS.diag_ssm_dense(lam, Bg, C, Dl, u)
    b = OS.diag_ssm_bound(lam, Bg, C, Dl, u, extra_rel_per_step=4 + float(np.max(np.exp(nu_log) + np.exp(theta_log))))
    for view, backend in (("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba")):
        y, t = timed(lru_ssm, *params, u, view=view, backend=backend)
        impl = "numba/diag-scan" if backend == "numba" else f"reference/{view}"
        rows.append(row("ssm.lru", impl, compare(y, y_or, b), t, note="ring init r in [0.9, 0.999], N=32, L=256"))

    a = rng.uniform(0.05, 0.95, (4, 8))
    dl = rng.uniform(0.05, 0.95, (4, 8))
    be = rng.standard_normal((4, 8))
    et = rng.standard_normal((4, 8))
    x = rng.standard_normal((2, 256, 4))
    y_or = OS.ema_dense(x, a, dl, be, et)
    for name, fn, fft in (("reference/recurrent", lambda: mega_ema(x, a, dl, be, et, view="recurrent"), False),
                          ("reference/conv-direct", lambda: mega_ema(x, a, dl, be, et, view="convolution"), False),
                          ("reference/conv-fft", lambda: mega_ema(x, a, dl, be, et, view="fft"), True)):
        y, t = timed(fn)
        rows.append(row("ssm.ema.mega", name, compare(y, y_or, OS.ema_bound(x, a, dl, be, et, fft=fft)), t,
                        note="d=4, n=8, L=256; oracle: dense operator with closed-form powers"))
    return rows
