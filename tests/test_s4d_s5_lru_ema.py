"""S4D/DSS kernels and inits, S5, LRU and MEGA's EMA against their independent oracles; bad inputs."""
import math

import numpy as np
import pytest

from oracles import structured as OS
from oracles.tolerance import Bound, assert_within, gamma
from refimpl.ssm import lru, s4, s4d, s5
from refimpl.ssm.ema import kernel as ema_kernel
from refimpl.ssm.ema import mega_ema
from refimpl.ssm.lru import lru_ssm
from refimpl.ssm.s4d import dss_kernel, s4d_kernel
from refimpl.ssm.s5 import s5_ssm

U = np.finfo(np.float64).eps / 2


# ----------------------------------------------------------------------------- S4D / DSS

def test_s4d_inits_worked_values():
    lam, B = s4d.init("lin", 6)
    # S4D-Lin: -1/2 + i pi n, n = 0, 1, 2
    assert_within(lam, np.array([-0.5, -0.5 + 1j * math.pi, -0.5 + 2j * math.pi]), Bound(2 * U * 2 * math.pi, "pi n rounding"))
    np.testing.assert_array_equal(B, np.ones(3))
    lam, _ = s4d.init("inv", 4)
    # S4D-Inv: -1/2 + i (N/pi)(N/(2n+1) - 1):  n = 0 -> 12/pi,  n = 1 -> 4/(3 pi)
    assert_within(lam, np.array([-0.5 + 12j / math.pi, -0.5 + 4j / (3 * math.pi)]), Bound(gamma(5, np.float64) * 4, "5 roundings"))
    lam, _ = s4d.init("real", 3)
    np.testing.assert_array_equal(lam, [-1, -2, -3])
    lam, B = s4d.init("legs", 8)
    d = s4.nplr("legs", 8)
    assert lam.shape == (4,) and np.all(lam.imag > 0)
    np.testing.assert_array_equal(np.sort_complex(lam), np.sort_complex(d.Lambda[d.Lambda.imag > 0]))
    assert np.max(np.abs(lam.real + 0.5)) <= 32 * U
    with pytest.raises(ValueError, match="even N"):
        s4d.init("lin", 5)


def _diag_case(seed, h=2, n=4):
    rng = np.random.default_rng(seed)
    lam = -rng.uniform(0.05, 1.0, (h, n)) + 1j * rng.uniform(-10, 10, (h, n))
    B = rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))
    C = rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))
    dt = np.array([0.01, 0.3])[:h]
    return lam, B, C, dt


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [0, 1, 2, 7, 64, 1000])
def test_s4d_kernel_vs_direct_powers(method, L):
    lam, B, C, dt = _diag_case(0)
    for backend in ("numpy", "numba"):
        K = s4d_kernel(lam, B, C, dt, L, method=method, output="complex", backend=backend)
        assert K.shape == (2, L)
        for i in range(2):
            disc = OS.zoh_diag_vanloan if method == "zoh" else OS.bilinear_diag
            Ab, Bb = disc(lam[i], B[i], dt[i])
            K_or = OS.kernel_powers(Ab, Bb, C[i], L)
            assert_within(K[i], K_or, OS.diag_kernel_bound(lam[i], B[i], C[i], dt[i], L, method), context=backend)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_kernel_vs_mpmath(method):
    lam, B, C, dt = _diag_case(1, h=1, n=3)
    K = s4d_kernel(lam, B, C, dt, 12, method=method, output="complex")[0]
    K_mp = OS.diag_kernel_mpmath(lam[0], B[0], C[0], dt[0], 12, method)
    assert_within(K, K_mp, OS.diag_kernel_bound(lam[0], B[0], C[0], dt[0], 12, method, oracle="mpmath"))


def test_s4d_zoh_expm1_form_for_tiny_dt_lambda():
    # dt * lambda ~ 1e-12: (exp(x) - 1)/lambda would lose ~12 digits; the expm1 form keeps them
    lam = np.array([[-1e-9 + 2e-9j]])
    B = np.array([[1.0 + 0j]])
    C = np.array([[1.0 + 0j]])
    K = s4d_kernel(lam, B, C, 1e-3, 5, method="zoh", output="complex")[0]
    K_mp = OS.diag_kernel_mpmath(lam[0], B[0], C[0], 1e-3, 5, "zoh")
    assert_within(K, K_mp, OS.diag_kernel_bound(lam[0], B[0], C[0], 1e-3, 5, "zoh", oracle="mpmath"))


def test_s4d_conjugate_symmetry_2re_equals_full_spectrum_re():
    lam, B = s4d.init("lin", 8)
    C = np.random.default_rng(2).standard_normal(4) + 1j * np.random.default_rng(3).standard_normal(4)
    half = s4d_kernel(lam[None], B[None], C[None], 0.1, 50, output="2re")[0]
    full = s4d_kernel(np.concatenate([lam, lam.conj()])[None], np.concatenate([B, B.conj()])[None],
                      np.concatenate([C, C.conj()])[None], 0.1, 50, output="re")[0]
    b = OS.diag_kernel_bound(lam, B, C, 0.1, 50, "zoh", factor=2.0)
    assert_within(half, full, b)
    assert half.dtype == np.float64
    with pytest.raises(TypeError):
        s4d_kernel(lam[None], B[None], C[None], 0.1, 5)  # the output convention is required


def test_dss_exp_is_s4d_zoh_with_unit_B():
    lam, _, W, dt = _diag_case(4, h=1)
    K = dss_kernel(lam, W, dt, 40, variant="exp")[0]
    Ab, Bb = OS.zoh_diag_vanloan(lam[0], np.ones(4), dt[0])
    K_or = OS.kernel_powers(Ab, Bb, W[0], 40).real
    # DSS evaluates e^{k dt l} directly: relative u(k|dt l| + 4) per term, within the same bound's form
    assert_within(K, K_or, OS.diag_kernel_bound(lam[0], np.ones(4), W[0], dt[0], 40, "zoh"))


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_dss_softmax_vs_mpmath_either_sign(sign):
    # Re(lambda) > 0 is allowed by DSS-softmax: the max-subtracted softmax stays finite
    rng = np.random.default_rng(5)
    lam = sign * rng.uniform(0.1, 0.5, 3) + 1j * rng.uniform(-3, 3, 3)
    w = rng.standard_normal(3) + 1j * rng.standard_normal(3)
    L, dt = 300, 1.0
    K = dss_kernel(lam[None], w[None], dt, L, variant="softmax")[0]
    assert np.all(np.isfinite(K))
    assert_within(K, OS.dss_softmax_mpmath(lam, w, dt, L), OS.dss_softmax_bound(lam, w, dt, L))


def test_s4d_bad_inputs():
    lam, B, C, dt = _diag_case(0)
    with pytest.raises(ValueError, match="^B: "):
        s4d_kernel(lam, B[:, :2], C, dt, 4, output="re")
    with pytest.raises(ValueError, match="^dt: "):
        s4d_kernel(lam, B, C, np.ones(3), 4, output="re")
    with pytest.raises(ValueError, match="^dt: "):
        s4d_kernel(lam, B, C, -1.0, 4, output="re")
    with pytest.raises(ValueError, match="^method: "):
        s4d_kernel(lam, B, C, dt, 4, method="euler", output="re")
    with pytest.raises(ValueError, match="^Lambda: "):
        dss_kernel(np.zeros((1, 2), complex), np.ones((1, 2)), 0.1, 4)
    with pytest.raises(ValueError, match="^Lambda: "):
        s4d_kernel(lam * np.nan, B, C, dt, 4, output="re")
    with pytest.raises(ValueError, match="^backend: "):
        dss_kernel(lam, B, dt, 4, backend="numba")


# ----------------------------------------------------------------------------- S5

def _s5_oracle(Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back=None):
    Ab, Bb = (OS.zoh_diag_vanloan(Lambda[:, None], B_tilde, dt[:, None]) if method == "zoh"
              else OS.bilinear_diag(Lambda[:, None], B_tilde, dt[:, None]))
    Ab = Ab[:, 0]
    f = 2.0 if output == "2re" else 1.0
    y = OS.diag_ssm_dense(Ab, Bb, C_tilde, D, u, factor=f)
    mag_b = OS.diag_ssm_bound(Ab, Bb, C_tilde, D, u, factor=f,
                              extra_rel_per_step=4 + float(np.max(np.abs(dt * Lambda))))
    if C_back is not None:
        y = y + OS.diag_ssm_dense(Ab, Bb, C_back, None, u[:, ::-1], factor=f)[:, ::-1]
        mb = OS.diag_ssm_bound(Ab, Bb, C_back, None, u[:, ::-1], factor=f,
                               extra_rel_per_step=4 + float(np.max(np.abs(dt * Lambda))))
        mag_b = mag_b + Bound(mb.values[:, ::-1], mb.source)
    return y, mag_b


VIEW_BACKENDS = [("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba")]


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("view,backend", VIEW_BACKENDS)
@pytest.mark.parametrize("L", [0, 1, 2, 5, 16, 33])
def test_s5_views_vs_dense_operator(method, view, backend, L):
    rng = np.random.default_rng(L)
    Lambda, Bt, Ct, D, dt = s5.init(8, 3, rng=rng)
    u = rng.standard_normal((2, L, 3))
    y = s5_ssm(Lambda, Bt, Ct, D, dt, u, method=method, output="2re", view=view, backend=backend)
    y_or, b = _s5_oracle(Lambda, Bt, Ct, D, dt, u, method, "2re")
    assert_within(y, y_or, b, context=f"{view}/{backend}/{method}")


def test_s5_bidirectional_and_long_sequence():
    rng = np.random.default_rng(7)
    Lambda, Bt, Ct, D, dt = s5.init(6, 2, rng=rng)
    Cb = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    u = rng.standard_normal((1, 500, 2))
    y_or, b = _s5_oracle(Lambda, Bt, Ct, D, dt, u, "zoh", "2re", C_back=Cb)
    for view, backend in VIEW_BACKENDS:
        y = s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view=view, backend=backend, C_back=Cb)
        assert_within(y, y_or, b, context=f"{view}/{backend}")


def test_s5_conjugate_symmetry_matches_full_spectrum():
    u = np.random.default_rng(8).standard_normal((2, 30, 3))
    Lf, Bf, Cf, Df, _ = s5.init(8, 3, conj_sym=False, rng=np.random.default_rng(9))
    Lh, Bh, Ch, Dh, _ = s5.init(8, 3, conj_sym=True, rng=np.random.default_rng(9))
    dt_f, dt_h = np.full(8, 0.05), np.full(4, 0.05)
    y_full = s5_ssm(Lf, Bf, Cf, Df, dt_f, u, output="re")
    y_half = s5_ssm(Lh, Bh, Ch, Dh, dt_h, u, output="2re")
    y_or, b = _s5_oracle(Lf, Bf, Cf, Df, dt_f, u, "zoh", "re")
    assert_within(y_full, y_or, b)
    assert_within(y_half, y_or, b + b)  # the half system's own error is of the same form as the full one's


def test_s5_hippo_n_init():
    Lambda, V = s5.hippo_n_init(8, conj_sym=False)
    assert np.max(np.abs(Lambda.real + 0.5)) <= 64 * U
    assert np.max(np.abs(V.conj().T @ V - np.eye(8))) <= gamma(64, np.float64)
    Lh, Vh = s5.hippo_n_init(8)
    assert Lh.shape == (4,) and Vh.shape == (8, 4) and np.all(Lh.imag > 0)


def test_associative_scan_order_with_a_noncommutative_operator():
    # integer 2x2 matrices: every product is exact in float64, so the scan must equal the sequential fold exactly
    rng = np.random.default_rng(10)
    for L in (1, 2, 3, 8, 13, 40):
        a = rng.integers(-1, 2, (L, 2, 2)).astype(np.float64)
        b = rng.integers(-2, 3, (L, 2)).astype(np.float64)
        op = lambda ei, ej: (ej[0] @ ei[0], np.einsum("...ij,...j->...i", ej[0], ei[1]) + ej[1])  # noqa: E731
        sa, sb = s5.associative_scan(op, a, b)
        x = np.zeros(2)
        P = np.eye(2)
        for t in range(L):
            x = a[t] @ x + b[t]
            P = a[t] @ P
            np.testing.assert_array_equal(sb[t], x)
            np.testing.assert_array_equal(sa[t], P)


def test_s5_bad_inputs():
    Lambda, Bt, Ct, D, dt = s5.init(4, 2)
    u = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="^dt: "):
        s5_ssm(Lambda, Bt, Ct, D, np.ones(5), u, output="2re")
    with pytest.raises(ValueError, match="^C_tilde: "):
        s5_ssm(Lambda, Bt, Ct[:, :1], D, dt, u, output="2re")
    with pytest.raises(ValueError, match="^u: "):
        s5_ssm(Lambda, Bt, Ct, D, dt, np.zeros((3, 2)), output="2re")
    with pytest.raises(ValueError, match="^output: "):
        s5_ssm(Lambda, Bt, Ct, D, dt, u, output="complex")
    with pytest.raises(TypeError):
        s5_ssm(Lambda, Bt, Ct, D, dt, u)
    with pytest.raises(ValueError, match="^view: "):
        s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view="chunked")
    with pytest.raises(ValueError, match="^view: "):  # the old spelling of the Numba kernel is gone
        s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view="numba")
    with pytest.raises(ValueError, match="^backend: .*no 'numba' backend for view 'scan'"):
        s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", view="scan", backend="numba")
    with pytest.raises(ValueError, match="^N: "):
        s5.hippo_n_init(5)


# ----------------------------------------------------------------------------- LRU

def test_lru_ring_init_and_gamma():
    nu_log, theta_log, gamma_log, B, C, D = lru.ring_init(200, 3, r_min=0.4, r_max=0.9, max_phase=math.pi / 10,
                                                          rng=np.random.default_rng(11))
    lam = lru.lambda_from_params(nu_log, theta_log)
    r = np.abs(lam)
    assert np.all(r >= 0.4 * (1 - 4 * U)) and np.all(r <= 0.9 * (1 + 4 * U))
    assert np.all(np.angle(lam) >= 0) and np.all(np.angle(lam) <= math.pi / 10 * (1 + 4 * U))
    # gamma = sqrt(1 - |lambda|^2): relative error of the expm1/log route gamma_8 vs the direct formula
    g_direct = np.sqrt(1 - r ** 2)
    assert_within(np.exp(gamma_log), g_direct, Bound(gamma(8, np.float64) * g_direct / (1 - r ** 2), "cancellation in 1 - r^2"))


def test_lru_gamma_near_unit_circle_vs_mpmath():
    import mpmath as mp

    nu_log = np.array([-30.0, -20.0])  # |lambda| = exp(-e^-30): 1 - |lambda|^2 ~ 2e-13
    lam = lru.lambda_from_params(nu_log, np.zeros(2))
    g = lru.gamma_from_lambda(lam)
    with mp.workdps(40):
        ex = np.array([float(mp.sqrt(1 - mp.exp(-2 * mp.exp(mp.mpf(v))))) for v in nu_log])
    # |lambda| = exp(-e^nu) loses the tail only at the rounding of |lambda| itself: relative u / (1 - |lambda|^2)
    # from log|lambda| -- the expm1 route keeps it; bound: gamma_6 relative plus that one rounding's share
    rel = gamma(6, np.float64) + U / (2 * np.exp(nu_log))
    assert_within(g, ex, Bound(rel * ex, "expm1 route: rounding of |lambda| propagated"))


@pytest.mark.parametrize("view,backend", VIEW_BACKENDS)
@pytest.mark.parametrize("L", [0, 1, 3, 16, 200])
def test_lru_views_vs_dense_operator(view, backend, L):
    params = lru.ring_init(6, 3, r_min=0.5, r_max=0.99, rng=np.random.default_rng(L))
    nu_log, theta_log, gamma_log, B, C, D = params
    u = np.random.default_rng(100 + L).standard_normal((2, L, 3))
    y = lru_ssm(*params, u, view=view, backend=backend)
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * B
    y_or = OS.diag_ssm_dense(lam, Bg, C, D, u)
    extra = 4 + float(np.max(np.exp(nu_log) + np.exp(theta_log)))  # rounding of the exponent -nu + i theta
    assert_within(y, y_or, OS.diag_ssm_bound(lam, Bg, C, D, u, extra_rel_per_step=extra), context=f"{view}/{backend}")


def test_lru_bad_inputs():
    with pytest.raises(ValueError, match="r_min"):
        lru.ring_init(4, 2, r_min=0.9, r_max=0.5)
    p = lru.ring_init(4, 2)
    with pytest.raises(ValueError, match="^B: "):
        lru_ssm(p[0], p[1], p[2], p[3][:2], p[4], p[5], np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="^theta_log: "):
        lru_ssm(p[0], p[1][:2], p[2], p[3], p[4], p[5], np.zeros((1, 3, 2)))
    with pytest.raises(TypeError, match="^u: "):
        lru_ssm(*p, np.zeros((1, 3, 2), dtype=complex))
    with pytest.raises(ValueError, match="^view: "):
        lru_ssm(*p, np.zeros((1, 3, 2)), view="numba")
    with pytest.raises(ValueError, match="^lam: "):
        lru.gamma_from_lambda(np.array([0.5, 1.0 + 0j]))


# ----------------------------------------------------------------------------- EMA

def _ema_params(seed, d=3, e=4):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.05, 0.95, (d, e)), rng.uniform(0.05, 0.95, (d, e)),
            rng.standard_normal((d, e)), rng.standard_normal((d, e)))


@pytest.mark.parametrize("L", [0, 1, 2, 7, 64, 1000])
def test_ema_views_vs_dense_operator(L):
    a, dl, b, e = _ema_params(L)
    x = np.random.default_rng(50 + L).standard_normal((2, L, 3))
    y_or = OS.ema_dense(x, a, dl, b, e)
    assert_within(mega_ema(x, a, dl, b, e), y_or, OS.ema_bound(x, a, dl, b, e), context="recurrent")
    assert_within(mega_ema(x, a, dl, b, e, view="convolution"), y_or, OS.ema_bound(x, a, dl, b, e), context="direct")
    assert_within(mega_ema(x, a, dl, b, e, view="fft"), y_or, OS.ema_bound(x, a, dl, b, e, fft=True), context="fft")


def test_ema_closed_form_kernel_vs_mpmath():
    import mpmath as mp

    a, dl, b, e = _ema_params(3, d=2, e=3)
    L = 50
    K = ema_kernel(a, dl, b, e, L)
    assert K.shape == (2, L)  # (d l), a per-feature filter
    with mp.workdps(40):
        K_mp = np.array([[float(mp.fsum(mp.mpf(e[j, i]) * mp.mpf(a[j, i]) * mp.mpf(b[j, i])
                                         * (1 - mp.mpf(a[j, i]) * mp.mpf(dl[j, i])) ** k for i in range(3)))
                          for k in range(L)] for j in range(2)])
    q = 1 - a * dl
    k = np.arange(L)[:, None, None]
    # exp(k log1p(-a d)): relative u (k |log q| + 6) per term, plus the sum over e (gamma_e)
    mag = np.sum(np.abs(e * a * b)[None] * q[None] ** k * ((k * np.abs(np.log(q))[None] + 6) * U
                                                          + gamma(3, np.float64)), axis=-1).T
    assert_within(K, K_mp, Bound(mag, "log-space power + sum"))


def test_ema_bad_inputs():
    a, dl, b, e = _ema_params(0)
    x = np.zeros((1, 4, 3))
    with pytest.raises(ValueError, match="^alpha: "):
        mega_ema(x, a * 0 + 1.0, dl, b, e)
    with pytest.raises(ValueError, match="^delta: "):
        mega_ema(x, a, dl * 0, b, e)
    with pytest.raises(ValueError, match="^eta: "):
        mega_ema(x, a, dl, b, e[:, :2])
    with pytest.raises(ValueError, match="^x: "):
        mega_ema(np.zeros((1, 4, 2)), a, dl, b, e, view="convolution")
    with pytest.raises(ValueError, match="^view: "):
        mega_ema(x, a, dl, b, e, view="chunked")


def test_float32_stays_float32_and_mixed_inputs_upcast():
    lam, B = s4d.init("lin", 8)
    c64 = lambda a: a.astype(np.complex64)  # noqa: E731
    for backend in ("numpy", "numba"):
        assert s4d_kernel(c64(lam[None]), c64(B[None]), c64(B[None]), np.float32(0.1), 10, output="2re",
                          backend=backend).dtype == np.float32
        assert s4d_kernel(c64(lam[None]), c64(B[None]), B[None], np.float32(0.1), 10, output="2re",
                          backend=backend).dtype == np.float64
    Lam, Bt, Ct, D, dt = s5.init(4, 2)
    u32 = np.ones((1, 5, 2), np.float32)
    y = s5_ssm(c64(Lam), c64(Bt), c64(Ct), D.astype(np.float32), dt.astype(np.float32), u32, output="2re")
    assert y.dtype == np.float32
    assert s5_ssm(Lam, Bt, Ct, D, dt, u32, output="2re", view="recurrent", backend="numba").dtype == np.float64
    a = np.full((2, 3), 0.5, np.float32)
    x32 = np.ones((1, 4, 2), np.float32)
    for view in ("recurrent", "convolution", "fft"):
        assert mega_ema(x32, a, a, a, a, view=view).dtype == np.float32
