"""The SSM GPU twins (``refimpl/ssm/{lti,s4d,s4,s5}/cuda.py``) against the NumPy references, under the CUDA
simulator in CI (``NUMBA_ENABLE_CUDASIM=1`` from the root conftest: NumPy arrays, Python threads, small shapes
and blocks); the same tests run on a real device with ``REFIMPL_REAL_GPU=1`` (``bench/device_check.sh``).

Bounds: :mod:`oracles.checks.cuda_ssm` (derived from each kernel's order of operations) or the reference view's.
"""
import os

import numpy as np
import pytest

from oracles import ssm as O
from oracles import structured as OS
from oracles.checks import cuda_ssm as B
from oracles.tolerance import assert_within
from refimpl.ssm.discretization import discretize

cuda = pytest.importorskip("numba.cuda")
from refimpl.ssm.s5.cuda import DEFAULT_THREADS as S5_T  # noqa: E402
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
WHERE = "simulator" if SIM else "device"
pytestmark = pytest.mark.gpu


def _system(rng, diagonal, complex_, d=2, n=3, m=2, p=2, dt=0.1):
    A, Bm, C, D = O.random_stable_system(rng, d, n, m, p, diagonal=diagonal, complex_=complex_)
    Ab, Bb = discretize(A, Bm, dt, method="zoh", diagonal=diagonal)
    return Ab, Bb, C, D


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("L", [0, 1, 6])
@pytest.mark.parametrize("diagonal,complex_", [(True, True), (False, False)])
def test_lti_views_match_dense_operator(where, L, diagonal, complex_):
    """recurrent, convolution, fft (and scan for diagonal systems) vs the dense operator, with and without D and
    an initial state; threads_per_block 4 so L = 6 spans blocks and chunks."""
    from refimpl.ssm.lti import cuda as G
    from refimpl.ssm.lti import lti_kernel, lti_ssm

    rng = np.random.default_rng(L + 10 * diagonal)
    Ab, Bb, C, D = _system(rng, diagonal, complex_)
    x = rng.standard_normal((2, L, 2, 2))
    s0 = rng.standard_normal((2, 2, 3))
    for Dm, h0 in ((D, s0), (None, None)):
        y_or, h_or = O.apply_dense(Ab, Bb, C, Dm, x, h0=h0, diagonal=diagonal)
        by, bh = O.lti_bound(Ab, Bb, C, Dm, x, np.float64, h0=h0, diagonal=diagonal)
        views = dict(recurrent=G.recurrent, convolution=G.convolution, fft=G.convolution_fft)
        if diagonal:
            views["scan"] = G.scan
        for view, fn in views.items():
            y, h = fn(Ab, Bb, C, Dm, x, diagonal=diagonal, initial_state=h0, return_final_state=True,
                      threads_per_block=4)
            byv, bhv = by, bh
            if view == "scan":
                byv, bhv = B.lti_scan_bound(Ab, Bb, C, Dm, x, np.float64, 4, h0=h0)
            if view == "fft":
                byv = by + O.fft_bound_lti(lti_kernel(Ab, Bb, C, L, diagonal=diagonal), x, np.float64)
            assert y.dtype == y_or.dtype if complex_ else y.dtype == np.float64
            assert_within(y, y_or, byv, context=f"cuda {view} ({where})")
            assert_within(h, h_or, bhv, context=f"cuda {view} final state ({where})")
    # the entry point routes backend="cuda" to the same kernels
    y = lti_ssm(Ab, Bb, C, D, x, diagonal=diagonal, view="convolution", backend="cuda", initial_state=s0)
    assert_within(y, O.apply_dense(Ab, Bb, C, D, x, h0=s0, diagonal=diagonal)[0],
                  O.lti_bound(Ab, Bb, C, D, x, np.float64, h0=s0, diagonal=diagonal)[0], context="entry point")


@pytest.mark.parametrize("where", [WHERE])
def test_lti_scan_time_varying_float32(where):
    """Per-step dt: A_bar (l d n) and B_bar (l d n m) through the scan, float32 kept (no silent upcast)."""
    from refimpl.ssm.lti import lti_ssm
    from refimpl.ssm.lti.cuda import scan

    rng = np.random.default_rng(3)
    A, Bm, C, D = O.random_stable_system(rng, 2, 2, 1, 1, diagonal=True)
    L = 7
    Ab, Bb = discretize(A, Bm, rng.uniform(0.05, 0.2, (L, 2)), method="zoh", diagonal=True)
    x = rng.standard_normal((1, L, 2, 1))
    args = [a.astype(np.float32) for a in (Ab, Bb, C, D, x)]
    y, h = scan(*args, return_final_state=True, threads_per_block=2)
    assert y.dtype == np.float32 and h.dtype == np.float32
    y_or, h_or = O.apply_dense(Ab, Bb, C, D, x, diagonal=True)
    by, bh = B.lti_scan_bound(*args, np.float32, 2)
    assert_within(y, y_or, by, context=f"time-varying scan ({where})")
    assert_within(h, h_or, bh, context=f"time-varying scan final state ({where})")
    # the entry point: time-varying scan is accepted; the recurrent cuda view is time-invariant only
    lti_ssm(*args, diagonal=True, view="scan", backend="cuda")
    with pytest.raises(ValueError, match="A_bar: the cuda recurrent view needs a time-invariant system"):
        lti_ssm(*args, diagonal=True, backend="cuda")


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("diagonal", [True, False])
def test_lti_kernel_and_convolutions(where, diagonal):
    """K_k = C A^k B (one thread per (channel, k)), the direct and FFT causal convolutions; L = 5 over blocks of 2."""
    from refimpl.ssm.lti import cuda as G
    from refimpl.ssm.lti import lti_kernel, reference as R

    rng = np.random.default_rng(5)
    Ab, Bb, C, D = _system(rng, diagonal, diagonal)
    for L in (0, 1, 5):
        K = G.kernel(Ab, Bb, C, L, diagonal=diagonal, threads_per_block=2)
        assert_within(K, R.kernel(Ab, Bb, C, L, diagonal=diagonal), B.lti_kernel_bound(Ab, Bb, C, L, np.float64,
                                                                                        diagonal=diagonal),
                      context=f"kernel L={L} ({where})")
        np.testing.assert_array_equal(lti_kernel(Ab, Bb, C, L, diagonal=diagonal, backend="cuda"),
                                      G.kernel(Ab, Bb, C, L, diagonal=diagonal))
    K = R.kernel(Ab, Bb, C, 7, diagonal=diagonal)
    x = rng.standard_normal((2, 5, 2, 2))
    assert_within(G.causal_conv(K, x, D, threads_per_block=4), R.causal_conv(K, x, D),
                  B.causal_conv_bound(K, x, D, np.float64), context=f"causal_conv ({where})")
    assert_within(G.fft_conv(K, x, None, threads_per_block=4), R.causal_conv(K, x, None),
                  B.causal_conv_bound(K, x, None, np.float64) + O.fft_bound_lti(K, x, np.float64),
                  context=f"fft_conv ({where})")
    assert G.fft_conv(K, x[:, :0], D).shape == (2, 0, 2, 2)


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("L", [0, 1, 9])
def test_diag_scan_matches_loop(where, L):
    """The chunked Kogge-Stone scan (T = 4: L = 9 is three chunks, the last short) vs the sequential loop, a (l n)
    and a (n); complex128 and complex64."""
    from refimpl.ssm.s5 import diag_scan
    from refimpl.ssm.s5 import reference as R
    from refimpl.ssm.s5.cuda import diag_scan as scan_cuda

    rng = np.random.default_rng(L)
    b = rng.standard_normal((1, L, 2)) + 1j * rng.standard_normal((1, L, 2))
    s0 = rng.standard_normal((1, 2)) + 0j
    for a, dt in ((0.9 * np.exp(1j * rng.uniform(-1, 1, (L, 2))), np.complex128),
                  (np.array([0.5 + 0.5j, -0.8]), np.complex64)):
        out = scan_cuda(a.astype(dt), b.astype(dt), s0.astype(dt), threads_per_block=4)
        assert out.dtype == dt
        assert_within(out, R.diag_scan(a, b, s0), B.diag_scan_bound(a, b, s0, dt, 4),
                      context=f"diag scan {np.dtype(dt).name} ({where})")
    if L == 1:  # the entry point routes backend="cuda" here (default blocks)
        np.testing.assert_array_equal(diag_scan(a, b, backend="cuda"), scan_cuda(a, b))


@pytest.mark.parametrize("where", [WHERE])
def test_s5_and_lru_layers(where):
    """s5_ssm / lru_ssm view scan, backend cuda: the reference's layer around the CUDA scan, vs the dense operator."""
    from refimpl.ssm.lru import lru_ssm, ring_init
    from refimpl.ssm.lru import reference as LR
    from refimpl.ssm.s5 import init, s5_ssm
    from refimpl.ssm.s5 import reference as SR

    rng = np.random.default_rng(7)
    L = 5
    Lambda, Bt, Ct, D, dt = init(4, 2, rng=rng)
    u = rng.standard_normal((1, L, 2))
    s0 = rng.standard_normal((1, 2)) + 1j * rng.standard_normal((1, 2))
    y, h = s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view="scan", backend="cuda", initial_state=s0,
                  return_final_state=True)
    y_r, h_r = SR.scan(Lambda, Bt, Ct, D, dt, u, output="2re", initial_state=s0, return_final_state=True)
    Ab, Bb = OS.zoh_diag_vanloan(Lambda[:, None], Bt, dt[:, None])
    y_or = OS.diag_ssm_dense(Ab[:, 0], Bb, Ct, D, u, factor=2.0)
    bnd = OS.diag_ssm_bound(Ab[:, 0], Bb, Ct, D, u, factor=2.0, extra_rel_per_step=4 + float(np.max(np.abs(dt * Lambda))))
    bnd = bnd + B.s5_scan_extra(OS.diag_ssm_dense(Ab[:, 0], Bb, Ct, D, u, factor=2.0, absolute=True), L, S5_T,
                                np.float64)
    y0 = s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view="scan", backend="cuda")
    assert_within(y0, y_or, bnd, context=f"s5 cuda scan ({where})")
    # with an initial state: vs the reference layer, the states' bound through the readout
    assert_within(h, h_r, _state_bound(Ab[:, 0], Bb, u, s0), context=f"s5 final state ({where})")
    assert y.shape == y_r.shape
    params = ring_init(3, 2, r_min=0.9, r_max=0.99, rng=rng)
    y, h = lru_ssm(*params, u, view="scan", backend="cuda", return_final_state=True)
    y_r, h_r = LR.scan(*params, u, return_final_state=True)
    nu_log, theta_log, gamma_log, Bl, Cl, Dl = params
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * Bl
    bnd = OS.diag_ssm_bound(lam, Bg, Cl, Dl, u, extra_rel_per_step=4 + float(np.max(np.exp(nu_log) + np.exp(theta_log))))
    bnd = bnd + B.s5_scan_extra(OS.diag_ssm_dense(lam, Bg, Cl, Dl, u, absolute=True), L, S5_T, np.float64)
    assert_within(y, OS.diag_ssm_dense(lam, Bg, Cl, Dl, u), bnd, context=f"lru cuda scan ({where})")
    assert h.shape == h_r.shape == (1, 3)


def _state_bound(lam_bar, B_bar, u, s0):
    """The final state of the S5 scan vs the reference's: both scan ``B_bar u`` (same float64 products), so the
    scan bound on the recurrence of absolute values covers the difference (plus ``B_bar u``'s own rounding)."""
    from oracles.tolerance import Bound

    Bu = np.einsum("nd,bld->bln", np.abs(B_bar), np.abs(u))
    bd = B.diag_scan_bound(lam_bar, Bu, s0, np.complex128, S5_T)
    extra = B.componentwise_bound(B.abs_recurrence(lam_bar, Bu, s0), u.shape[2] + 1, np.float64, complex_ops=True)
    return Bound(bd.values[:, -1] + extra.values[:, -1], bd.source)


@pytest.mark.parametrize("where", [WHERE])
def test_vandermonde_cauchy_and_structured_kernels(where):
    from refimpl.ssm.s4 import cauchy, nplr, s4_kernel
    from refimpl.ssm.s4 import reference as S4R
    from refimpl.ssm.s4d import s4d_kernel, vandermonde
    from refimpl.ssm.s4d import reference as S4DR

    rng = np.random.default_rng(11)
    v = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    z = 0.95 * np.exp(1j * rng.uniform(-3, 3, (2, 3)))
    for L in (0, 1, 9):
        for dt in (np.complex128, np.complex64):
            K = vandermonde(v.astype(dt), z.astype(dt), L, backend="cuda")
            assert K.dtype == dt
            assert_within(K, S4DR.vandermonde(v, z, L), OS.vandermonde_bound(v, z, L, dt),
                          context=f"vandermonde L={L} ({where})")
    lam = -rng.uniform(0.1, 1, (2, 3)) + 1j * rng.uniform(-5, 5, (2, 3))
    g = 1j * rng.uniform(-10, 10, (2, 5))
    assert_within(cauchy(v, g, lam, backend="cuda"), OS.cauchy_mpmath(v, g, lam), OS.cauchy_bound(v, g, lam),
                  context=f"cauchy ({where})")
    # the layer kernels: only the Vandermonde / Cauchy product differs from the reference's
    Lam = -0.5 + 1j * rng.uniform(-3, 3, (2, 3))
    Bs, Cs = rng.standard_normal((2, 3)) + 0j, rng.standard_normal((2, 3)) + 1j
    K = s4d_kernel(Lam, Bs, Cs, 0.1, 7, output="2re", backend="cuda")
    Ab, Bb = S4DR.discretize_diag(Lam, Bs, 0.1, "zoh")
    bnd = OS.vandermonde_bound(Cs * Bb, Ab, 7)
    assert_within(K, S4DR.kernel(Lam, Bs, Cs, 0.1, 7, output="2re"), type(bnd)(2 * bnd.values, bnd.source),
                  context=f"s4d kernel ({where})")
    d = nplr("legs", 4)
    C = rng.standard_normal(4) @ d.V
    args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], 0.05, 8)
    K = s4_kernel(*args, backend="cuda")
    K_or = OS.kernel_powers(*OS.bilinear_dense(OS.dplr_dense(d.Lambda, d.Pt, d.Qt), d.Bt, 0.05), C, 8)
    assert_within(K[0], K_or, OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, 0.05, 8), context=f"s4 kernel ({where})")
    assert S4R.kernel(*args).shape == K.shape


def test_cuda_inputs_are_refused_by_name():
    """Bad launch sizes and bad arrays name the argument, expected and received (simulator or device)."""
    from refimpl.ssm.lti.cuda import causal_conv, scan
    from refimpl.ssm.s5.cuda import diag_scan

    A, Bb, C = np.full((1, 2), 0.5), np.ones((1, 2, 1)), np.ones((1, 1, 2))
    x = np.ones((1, 3, 1, 1))
    with pytest.raises(ValueError, match="threads_per_block: expected 1 <= threads_per_block <= 1024, got 0"):
        scan(A, Bb, C, None, x, diagonal=True, threads_per_block=0)
    with pytest.raises(TypeError, match="threads_per_block: expected an int, got float"):
        diag_scan(np.ones(2), np.ones((1, 3, 2)), threads_per_block=2.0)
    with pytest.raises(ValueError, match="diagonal: the 'cuda' backend of view 'scan' needs a diagonal A_bar"):
        scan(np.eye(2)[None] * 0.5, Bb, C, None, x, diagonal=False)
    with pytest.raises(ValueError, match=r"K: expected shape \(>= 3, 1, p, 1\)"):
        causal_conv(np.ones((2, 1, 1, 1)), x)
    with pytest.raises(TypeError, match="x: expected"):
        causal_conv(np.ones((3, 1, 1, 1)), x.astype(np.float16))
    with pytest.raises(ValueError, match="b: expected finite values"):
        diag_scan(np.ones(2), np.full((1, 3, 2), np.nan))


def test_cuda_rows_are_skipped_with_the_reason_never_absent(monkeypatch):
    """Without numba.cuda every declared cuda/... row comes back SKIP with the reason; SKIP rows do not fail."""
    from oracles.checks import _cuda as C
    from oracles.checks import cuda_ssm
    from oracles.cli.report import _failed, format_table

    monkeypatch.setattr(C, "cuda_status", lambda: ("unavailable", "numba.cuda does not import: test"))
    rows = cuda_ssm.cuda_ssm()
    assert [(r.op, r.impl) for r in rows] == cuda_ssm.cuda_ssm.cuda_rows
    assert all(r.skipped == "numba.cuda does not import: test" and not _failed(r) for r in rows)
    table = format_table(rows)
    assert table.count("SKIP") == len(rows) and "skipped: numba.cuda does not import: test" in table
    # the subprocess answered with an error for this check: one failing row, not a skip
    monkeypatch.setattr(C, "cuda_status", lambda: ("unavailable", "no CUDA device"))
    monkeypatch.setattr(C, "_SUBPROCESS_ROWS", {"oracles.checks.cuda_ssm:cuda_ssm": {"error": "boom"}})
    rows = cuda_ssm.cuda_ssm()
    assert len(rows) == 1 and _failed(rows[0]) and rows[0].note == "boom"


def test_cuda_status_here():
    from oracles.checks._cuda import cuda_status

    status, text = cuda_status()
    assert status == ("simulator" if SIM else "device"), text


def _real_gpu():
    if SIM:
        return False
    try:
        import cupy  # noqa: F401

        return cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _real_gpu(), reason="needs CuPy and a real CUDA device (REFIMPL_REAL_GPU=1)")
def test_cupy_arrays_stay_on_the_device():
    """Device only: CuPy in -> CuPy out for every kernel, equal to the NumPy-in result within the kernel's bound."""
    import cupy as cp

    from refimpl.ssm.lti import cuda as G
    from refimpl.ssm.s4.cuda import cauchy
    from refimpl.ssm.s4d.cuda import vandermonde
    from refimpl.ssm.s5.cuda import diag_scan

    rng = np.random.default_rng(21)
    Ab, Bb, C, D = _system(rng, True, True, d=8, n=16, m=1, p=1)
    x = rng.standard_normal((2, 300, 8, 1))
    s0 = rng.standard_normal((2, 8, 16)) + 0j
    dev = [cp.asarray(a) for a in (Ab, Bb, C, D, x)]
    y_or, h_or = O.apply_dense(Ab, Bb, C, D, x, h0=s0, diagonal=True)
    by, bh = O.lti_bound(Ab, Bb, C, D, x, np.float64, h0=s0, diagonal=True)
    for view, fn in (("recurrent", G.recurrent), ("convolution", G.convolution), ("fft", G.convolution_fft)):
        y, h = fn(*dev, diagonal=True, initial_state=cp.asarray(s0), return_final_state=True)
        assert isinstance(y, cp.ndarray) and isinstance(h, cp.ndarray)
        b2 = by + O.fft_bound_lti(G.kernel(Ab, Bb, C, 300, diagonal=True), x, np.float64) if view == "fft" else by
        assert_within(cp.asnumpy(y), y_or, b2, context=f"{view} on CuPy")
        assert_within(cp.asnumpy(h), h_or, bh, context=f"{view} final state on CuPy")
    y, h = G.scan(*dev, diagonal=True, initial_state=cp.asarray(s0), return_final_state=True)
    bys, bhs = B.lti_scan_bound(Ab, Bb, C, D, x, np.float64, 128, h0=s0)
    assert isinstance(y, cp.ndarray)
    assert_within(cp.asnumpy(y), y_or, bys, context="scan on CuPy")
    assert_within(cp.asnumpy(h), h_or, bhs, context="scan final state on CuPy")
    a = 0.999 * np.exp(1j * rng.uniform(-1, 1, 64))
    bb = rng.standard_normal((3, 1000, 64)) + 1j * rng.standard_normal((3, 1000, 64))
    out = diag_scan(cp.asarray(a), cp.asarray(bb))
    assert isinstance(out, cp.ndarray)
    from refimpl.ssm.s5.reference import diag_scan as ref_scan

    assert_within(cp.asnumpy(out), ref_scan(a, bb), B.diag_scan_bound(a, bb, None, np.complex128, S5_T),
                  context="diag scan on CuPy")
    v = rng.standard_normal((4, 16)) + 1j * rng.standard_normal((4, 16))
    z = 0.99 * np.exp(1j * rng.uniform(-3, 3, (4, 16)))
    K = vandermonde(cp.asarray(v), cp.asarray(z), 500)
    from refimpl.ssm.s4d.reference import vandermonde as vref

    assert_within(cp.asnumpy(K), vref(v, z, 500), OS.vandermonde_bound(v, z, 500), context="vandermonde on CuPy")
    lam = -0.5 + 1j * rng.uniform(-5, 5, (4, 16))
    g = 1j * rng.uniform(-10, 10, (4, 50))
    k = cauchy(cp.asarray(v), cp.asarray(g), cp.asarray(lam))
    assert_within(cp.asnumpy(k), OS.cauchy_mpmath(v, g, lam), OS.cauchy_bound(v, g, lam), context="cauchy on CuPy")
    with pytest.raises(TypeError, match=r"a: expected a host \(NumPy\) array like b, got a device"):
        diag_scan(cp.asarray(a), bb)
