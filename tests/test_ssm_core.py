"""Worked, hand-derivable cases and bad inputs for the SSM core (discretizations and LTI views)."""
import math

import mpmath as mp
import numpy as np
import pytest

from oracles import ssm as O
from oracles.tolerance import Bound, assert_within, componentwise_bound, gamma, unit_roundoff
from refimpl.ssm.discretization import discretize, phi1, phi1_dense
from refimpl.ssm.discretization import reference as D
from refimpl.ssm.lti import causal_conv, fft_conv, fft_length, lti_kernel, lti_ssm
from refimpl.ssm.lti import reference as lti_reference

METHODS = [("zoh", None), ("bilinear", None), ("gbt", 0.3), ("forward_euler", None), ("backward_euler", None),
           ("mamba", None)]


# ---------------------------------------------------------------- hand-derivable discretizations

@pytest.mark.parametrize("method,alpha", METHODS)
@pytest.mark.parametrize("diagonal", [False, True])
def test_A_zero_gives_identity_and_dt_B(method, alpha, diagonal):
    # With A = 0 every method gives A_bar = I and B_bar = dt B exactly (phi1(0) = 1; (I - 0)^-1 = I).
    B = np.array([[[1.5, -2.0], [0.25, 3.0], [-1.0, 0.5]]])
    A = np.zeros((1, 3)) if diagonal else np.zeros((1, 3, 3))
    dt = 0.37
    Ab, Bb = discretize(A, B, dt, method=method, alpha=alpha, diagonal=diagonal)
    expect_A = np.ones((1, 3)) if diagonal else np.eye(3)[None]
    np.testing.assert_array_equal(Ab, expect_A)
    np.testing.assert_array_equal(Bb, dt * B)


def test_scalar_A_zoh_matches_closed_form_in_mpmath():
    # A_bar = e^{a dt}, B_bar = (e^{a dt} - 1)/a * b, evaluated at 50 digits.
    mp.mp.dps = 50
    for a, dt, b in [(-0.7, 0.1, 2.0), (-3.0, 1.5, -1.0), (1e-9, 0.2, 1.0), (-2.5, 1e-6, 0.5)]:
        Ab, Bb = D.zoh(np.array([[[a]]]), np.array([[[b]]]), dt)
        ea = mp.exp(mp.mpf(a) * mp.mpf(dt))
        exactA = float(ea)
        exactB = float((ea - 1) / mp.mpf(a) * mp.mpf(b))
        # A_bar: scipy's expm of a 1x1 matrix is np.exp of its entry, so the error is the rounding of x = a dt
        # times exp's condition number |x| (<= 4.5 here) plus NumPy's float64 exp (<= 1 ULP = 2u,
        # oracles.tolerance.TRANSCENDENTAL_ULP): <= 6.5u < gamma_8.
        # B_bar = dt phi1_dense(x) b: the 19-term Taylor sum at |y| = |x|/2^s <= 1/2, s = 4 squaring steps at
        # x = -4.5, then two products.  Its first-order worst case (each addition <= min(u|S_j|, |term_j|),
        # term_k <= gamma_2k, each step P <- (E + 1) P / 2 adding rel(E) + 3u, E <- E^2 doubling rel(E)) is
        # 43u at x = -4.5 and <= 11u at the other three points; the 32u (gamma_8 * 4) asserted below is tighter
        # than that worst case at x = -4.5 -- an observed accuracy there, not a derived bound.
        assert abs(Ab[0, 0, 0] - exactA) <= gamma(8, np.float64) * abs(exactA)
        assert abs(Bb[0, 0, 0] - exactB) <= gamma(8, np.float64) * abs(exactB) * 4


def test_A_identity_dense_zoh():
    # A = I: A_bar = e^dt I, B_bar = (e^dt - 1) B.
    dt = 0.5
    B = np.array([[[1.0], [2.0]]])
    Ab, Bb = D.zoh(np.eye(2)[None], B, dt)
    bound = componentwise_bound(np.full((2, 2), math.e ** dt), 8, np.float64, what="expm of dt*I")
    assert_within(Ab[0], math.exp(dt) * np.eye(2), bound)
    assert_within(Bb[0], math.expm1(dt) * B[0], componentwise_bound(math.expm1(dt) * np.abs(B[0]) * 2, 24, np.float64))


def test_bilinear_maps_left_half_plane_into_unit_disk():
    # (1 + dt/2 l)/(1 - dt/2 l) has modulus < 1 iff Re(l) < 0, = 1 on the imaginary axis.
    rng = np.random.default_rng(0)
    lam = -rng.uniform(1e-3, 10, 200) + 1j * rng.normal(0, 20, 200)
    Ab, _ = D.bilinear(lam[None], np.ones((1, 200, 1), dtype=complex), 0.7, diagonal=True)
    assert np.all(np.abs(Ab) < 1)
    Ab_im, _ = D.bilinear(1j * lam.imag[None], np.ones((1, 200, 1), dtype=complex), 0.7, diagonal=True)
    np.testing.assert_allclose(np.abs(Ab_im), 1.0, rtol=gamma(6, np.float64), atol=0)
    # the same for dense: eigenvalues of A_bar inside the disk for a stable A
    A, B, _, _ = O.random_stable_system(rng, 1, 6, 1, 1)
    Ab, _ = D.bilinear(A, B, 2.0)
    assert np.max(np.abs(np.linalg.eigvals(Ab[0]))) < 1


def test_phi1_complex_expm1_matches_mpmath():
    mp.mp.dps = 40
    z = np.array([1e-12 + 1e-12j, -1e-7 + 2e-7j, 0.3 - 0.2j, -2.0 + 5.0j, 1e-300j])
    got = phi1(z)
    for zi, gi in zip(z, got):
        ex = complex((mp.expm1(mp.mpc(zi.real, zi.imag))) / mp.mpc(zi.real, zi.imag))
        # expm1 (< a few ulp, checked here) then one complex division: 4u-scaled gamma_4
        assert abs(gi - ex) <= gamma(4, np.float64, complex_ops=True) * abs(ex)


def test_phi1_tiny_and_subnormal_arguments_stay_finite():
    # complex division by a subnormal overflows; the series branch keeps phi1 -> 1 exactly in the limit
    z = np.array([-1e-309 + 0j, 1e-310 + 1e-310j, -4e-6 + 3e-6j, 0j])
    got = phi1(z)
    assert np.all(np.isfinite(got))
    mp.mp.dps = 40
    for zi, gi in zip(z[:3], got[:3]):
        ex = complex(mp.expm1(mp.mpc(zi.real, zi.imag)) / mp.mpc(zi.real, zi.imag))
        # three roundings in 1 + z/2 + z*z/6 plus the truncation |z|^3/24 < u: gamma_4 (complex)
        assert abs(gi - ex) <= gamma(4, np.float64, complex_ops=True) * abs(ex)
    assert got[3] == 1
    _, Bb = D.zoh(np.array([[-1e-309 + 1e-309j]]), np.ones((1, 1, 1), complex), 1.0, diagonal=True)
    assert np.isfinite(Bb).all() and abs(Bb[0, 0, 0] - 1) <= gamma(4, np.float64)  # exact value 1 - 5e-310


def test_float32_diagonal_zoh_stays_accurate_as_dA_goes_to_zero():
    # B_bar = expm1(dA)/A * B in float32 vs the exact value; the naive (exp(dA) - 1)/A loses everything.
    mp.mp.dps = 40
    A = -np.logspace(-9, -1, 9).astype(np.float32)
    dt = np.float32(0.01)
    B = np.ones((1, 9, 1), dtype=np.float32)
    _, Bb = D.zoh(A[None], B, dt, diagonal=True)
    assert Bb.dtype == np.float32
    exact = np.array([float(mp.expm1(mp.mpf(float(dt)) * mp.mpf(float(a))) / mp.mpf(float(a))) for a in A])
    # expm1 (<= 1 ulp), one division, one multiply by dt, one by B; one rounding of dt*A: gamma_6(float32) relative
    rel_bound = gamma(6, np.float32)
    rel_ours = np.abs(Bb[0, :, 0].astype(np.float64) - exact) / exact
    assert np.all(rel_ours <= rel_bound), rel_ours
    naive = (np.exp(dt * A) - np.float32(1)) / A
    rel_naive = np.abs(naive.astype(np.float64) - exact) / exact
    # The naive form loses digits to cancellation: at dA = 1e-11 it is off by ~100% of the answer.
    assert rel_naive.max() > 1e4 * rel_bound


def test_time_step_per_channel_and_per_step_and_semigroup():
    rng = np.random.default_rng(3)
    A, B, _, _ = O.random_stable_system(rng, 2, 3, 2, 1)
    # per channel: each channel equals its own scalar-dt call
    Ab, Bb = D.zoh(A, B, np.array([0.1, 0.4]))
    for c, dt in enumerate([0.1, 0.4]):
        a1, b1 = D.zoh(A[c:c + 1], B[c:c + 1], dt)
        np.testing.assert_array_equal(Ab[c], a1[0])
        np.testing.assert_array_equal(Bb[c], b1[0])
    # per time step: a leading (l,) axis
    dts = np.array([[0.1, 0.1], [0.2, 0.2], [0.1, 0.1]])
    Ab_t, Bb_t = D.zoh(A, B, dts)
    assert Ab_t.shape == (3, 2, 3, 3) and Bb_t.shape == (3, 2, 3, 2)
    # a step of 2 dt equals two steps of dt with the input held (ZOH semigroup): missing data bridged
    a2, b2 = Ab_t[1], Bb_t[1]
    a1, b1 = Ab_t[0], Bb_t[0]
    np.testing.assert_allclose(a2, a1 @ a1, rtol=0, atol=gamma(40, np.float64) * 4)
    np.testing.assert_allclose(b2, a1 @ b1 + b1, rtol=0, atol=gamma(40, np.float64) * 4)


# ---------------------------------------------------------------- views: small worked cases

IMPLS = [("recurrent", "numpy"), ("recurrent", "numba"), ("convolution", "numpy"), ("convolution", "numba"),
         ("fft", "numpy"), ("scan", "numpy"), ("chunked", "numpy")]


def _system(rng, diagonal=False, complex_=False, d=2, n=3, m=2, p=2):
    A, B, C, Dm = O.random_stable_system(rng, d, n, m, p, diagonal=diagonal, complex_=complex_)
    Ab, Bb = D.zoh(A, B, 0.2, diagonal=diagonal)
    return Ab, Bb, C, Dm


def test_scalar_system_convolution_kernel_is_geometric():
    # n = m = p = 1: K_k = c a^k b exactly as the text's K = (CB, CAB, CA^2B, ...)
    a, b, c = 0.5, 2.0, 3.0
    for backend in ("numpy", "numba"):
        K = lti_kernel(np.array([[a]]), np.array([[[b]]]), np.array([[[c]]]), 5, diagonal=True, backend=backend)
        np.testing.assert_array_equal(K[:, 0, 0, 0], [c * b * a ** k for k in range(5)])


def test_empty_sequence_returns_initial_state_for_every_view():
    rng = np.random.default_rng(4)
    Ab, Bb, C, Dm = _system(rng)
    x = np.zeros((2, 0, 2, 2))
    s0 = rng.standard_normal((2, 2, 3))
    for view, backend in IMPLS:
        y, s = lti_ssm(Ab, Bb, C, Dm, x, view=view, backend=backend, initial_state=s0, return_final_state=True)
        assert y.shape == (2, 0, 2, 2)
        np.testing.assert_array_equal(s, s0)
        # and zero without an initial state
        y, s = lti_ssm(Ab, Bb, C, Dm, x, view=view, backend=backend, return_final_state=True)
        np.testing.assert_array_equal(s, np.zeros((2, 2, 3)))


def test_split_and_resume_equals_whole():
    rng = np.random.default_rng(5)
    Ab, Bb, C, Dm = _system(rng, diagonal=True, complex_=True)
    x = rng.standard_normal((1, 21, 2, 2))
    y, s = lti_ssm(Ab, Bb, C, Dm, x, diagonal=True, return_final_state=True)
    y1, s1 = lti_ssm(Ab, Bb, C, Dm, x[:, :8], view="scan", diagonal=True, return_final_state=True)
    y2, s2 = lti_ssm(Ab, Bb, C, Dm, x[:, 8:], view="chunked", initial_state=s1, diagonal=True,
                     return_final_state=True, chunk=5)
    up = [Ab, Bb, C, Dm, x]
    by, bs = O.lti_bound(*up, np.complex128, diagonal=True)
    assert_within(np.concatenate([y1, y2], axis=1), y, by)
    assert_within(s2, s, bs)


def test_per_step_dt_bridges_missing_data():
    # A sample missing at t=2: one step of 2 dt with x held equals two steps of dt with the same x.
    rng = np.random.default_rng(6)
    A, B, C, Dm = O.random_stable_system(rng, 1, 3, 1, 1)
    dt = 0.1
    x_full = rng.standard_normal((1, 5, 1, 1))
    x_full[:, 3] = x_full[:, 2]  # input held over the gap
    Ab, Bb = D.zoh(A, B, dt)
    y_full = lti_ssm(Ab, Bb, C, Dm, x_full)
    x_gap = np.delete(x_full, 2, axis=1)
    dts = np.array([[dt], [dt], [2 * dt], [dt]])
    Ab_t, Bb_t = D.zoh(A, B, dts)
    y_gap = lti_ssm(Ab_t, Bb_t, C, None, x_gap) + np.einsum("dpm,bldm->bldp", Dm, x_gap)
    ref = np.delete(y_full, 2, axis=1)
    by, _ = O.lti_bound(Ab, Bb, C, Dm, x_full, np.float64)
    # both sides are computed in float64, each within lti_bound of the exact outputs
    by = Bound(np.delete(by.values, 2, axis=1), by.source)
    assert_within(y_gap, ref, by + by)


def test_conversion_dtype_policy():
    rng = np.random.default_rng(7)
    Ab, Bb, C, Dm = _system(rng)
    x = rng.standard_normal((1, 4, 2, 2))
    f32 = [a.astype(np.float32) for a in (Ab, Bb, C, Dm, x)]
    for view, backend in IMPLS:
        assert lti_ssm(*f32, view=view, backend=backend).dtype == np.float32
        # mixing float32 and float64 promotes, never downcasts
        assert lti_ssm(*f32[:4], x, view=view, backend=backend).dtype == np.float64
    Ab32, Bb32 = D.zoh(np.float32(-1.0) * np.ones((1, 2), np.float32), np.ones((1, 2, 1), np.float32), 0.1,
                       diagonal=True)
    assert Bb32.dtype == np.float64  # dt given as a Python float is float64: promotes
    Ab32, Bb32 = D.zoh(-np.ones((1, 2), np.float32), np.ones((1, 2, 1), np.float32), np.float32(0.1), diagonal=True)
    assert Ab32.dtype == np.float32 and Bb32.dtype == np.float32


# ---------------------------------------------------------------- upstream conventions

@pytest.mark.parametrize("method,scipy_name,alpha", [("zoh", "zoh", None), ("bilinear", "bilinear", None),
                                                     ("gbt", "gbt", 0.3), ("forward_euler", "euler", None),
                                                     ("backward_euler", "backward_diff", None)])
def test_A_bar_B_bar_follow_scipy_cont2discrete(method, scipy_name, alpha):
    # scipy's names for our methods (its C_d, D_d differ for the gbt family: a half-step-shifted state).
    # The oracles of the report and the property tests are mpmath; this pins the convention only.
    import scipy.signal

    rng = np.random.default_rng(12)
    A, B, _, _ = O.random_stable_system(rng, 1, 4, 2, 1)
    dt = 0.25
    Ab, Bb = discretize(A, B, dt, method=method, alpha=alpha)
    kw = {"alpha": alpha} if alpha is not None else {}
    ad, bd, _, _, _ = scipy.signal.cont2discrete((A[0], B[0], np.eye(4), np.zeros((4, 2))), dt, method=scipy_name, **kw)
    # both sides are backward stable solves/exponentials of a well-conditioned 6 x 6 problem
    from oracles.checks.ssm_core import discretization_oracle

    _, _, ba, bb = discretization_oracle(method, A[0], B[0], dt, alpha=alpha)
    assert_within(Ab[0], ad, ba + ba)
    assert_within(Bb[0], bd, bb + bb)


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_discretize():
    A = -np.eye(3)[None]
    B = np.ones((1, 3, 2))
    with pytest.raises(ValueError, match=r"A: expected a square matrix .* got shape \(1, 3, 2\)"):
        D.zoh(np.ones((1, 3, 2)), B, 0.1)
    with pytest.raises(ValueError, match=r"B: expected shape \(1, 3, m\) .* got \(1, 4, 2\)"):
        D.zoh(A, np.ones((1, 4, 2)), 0.1)
    with pytest.raises(ValueError, match=r"dt: expected values > 0, got -0.1"):
        D.zoh(A, B, -0.1)
    with pytest.raises(ValueError, match=r"dt: expected values > 0"):
        D.bilinear(A, B, 0.0)
    with pytest.raises(ValueError, match=r"dt: expected finite values, got nan"):
        D.zoh(A, B, float("nan"))
    with pytest.raises(ValueError, match=r"dt: expected finite values, got inf"):
        D.zoh(A, B, np.inf)
    with pytest.raises(ValueError, match=r"A: expected finite values"):
        D.zoh(np.full((1, 3, 3), np.nan), B, 0.1)
    with pytest.raises(TypeError, match=r"A: expected a floating-point dtype .* got int64"):
        D.zoh(np.eye(3, dtype=np.int64)[None], B, 0.1)
    with pytest.raises(TypeError, match=r"dt: expected a real floating-point dtype, got complex128"):
        D.zoh(A, B, 0.1 + 0j)
    with pytest.raises(ValueError, match=r"dt: expected a scalar, shape \(1,\) .* got \(2,\)"):
        D.zoh(A, B, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"method: expected one of .* got 'tustin'"):
        discretize(A, B, 0.1, method="tustin")
    with pytest.raises(TypeError, match=r"positional argument"):
        discretize(A, B, 0.1, "zoh")  # method is keyword-only
    with pytest.raises(ValueError, match=r"alpha: method 'gbt' needs alpha"):
        discretize(A, B, 0.1, method="gbt")
    with pytest.raises(ValueError, match=r"alpha: only method 'gbt' takes alpha, got alpha=0.5 with method='zoh'"):
        discretize(A, B, 0.1, method="zoh", alpha=0.5)
    with pytest.raises(ValueError, match=r"backend: .*discretize has no 'numba' backend for view 'zoh'"):
        discretize(A, B, 0.1, method="zoh", backend="numba")
    with pytest.raises(ValueError, match=r"alpha: expected a real number in \[0, 1\], got 1.5"):
        D.gbt(A, B, 0.1, 1.5)
    with pytest.raises(ValueError, match=r"backward_euler: the matrix is singular"):
        D.backward_euler(np.eye(3)[None], B, 1.0)
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match=r"diagonal: expected True or False, got"):
            D.zoh(A, B, 0.1, diagonal=bad)
        with pytest.raises(TypeError, match=r"diagonal: expected True or False, got"):
            discretize(A, B, 0.1, method="bilinear", diagonal=bad)


def test_phi1_refuses_integer_and_bool_arrays():
    # phi1 of an int array used to be computed and truncated back to ints (phi1_dense: zeros)
    for bad in (np.array([1, 2, -1]), np.array([True, False]), np.int64(3)):
        with pytest.raises(TypeError, match=r"z: expected a floating-point dtype .* got (int64|bool)"):
            phi1(bad)
    with pytest.raises(TypeError, match=r"X: expected a floating-point dtype .* got int64"):
        phi1_dense(np.array([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match=r"X: expected square matrices .* got shape \(2, 3\)"):
        phi1_dense(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"z: expected finite values, got nan"):
        phi1(np.array([0.5, np.nan]))
    # a list of Python numbers is data (the package-wide rule): it becomes float64, not ints
    got = phi1([1, 2, -1])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [math.expm1(1), math.expm1(2) / 2, -math.expm1(-1)], rtol=gamma(4, np.float64))
    # float32 stays float32; phi1 of the 2 x 2 nilpotent N is I + N/2
    assert phi1(np.ones(3, np.float32)).dtype == np.float32
    np.testing.assert_array_equal(phi1_dense(np.array([[0.0, 1.0], [0.0, 0.0]])), [[1.0, 0.5], [0.0, 1.0]])


def test_one_phi1_in_the_package():
    from refimpl.ssm.discretization import reference

    assert reference.phi1 is phi1 and reference.phi1_dense is phi1_dense


def test_fft_length_refuses_meaningless_lengths():
    assert [fft_length(L) for L in (1, 2, 3, 4, 5, 1000)] == [2, 4, 8, 8, 16, 2048]
    assert fft_length(np.int64(3)) == 8
    for L in (-1, 0):
        with pytest.raises(ValueError, match=rf"L: expected an integer >= 1, got {L}"):
            fft_length(L)
    for L in (2.5, 2.0, True, "4", None):
        with pytest.raises(TypeError, match=r"L: expected an integer, got"):
            fft_length(L)


def test_bad_inputs_views():
    rng = np.random.default_rng(8)
    Ab, Bb, C, Dm = _system(rng)
    x = rng.standard_normal((1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"x: expected 4 dimensions, got shape \(5, 2, 2\)"):
        lti_ssm(Ab, Bb, C, Dm, x[0])
    with pytest.raises(ValueError, match=r"B_bar: expected shape \(2, 3, 2\) \(d, n, m\)"):
        lti_ssm(Ab, Bb[:, :2], C, Dm, x)
    with pytest.raises(ValueError, match=r"C: expected shape \(2, \*, 3\) \(d, p, n\)"):
        lti_ssm(Ab, Bb, C[:, :, :2], Dm, x)
    with pytest.raises(ValueError, match=r"D: expected shape \(2, 2, 2\)"):
        lti_ssm(Ab, Bb, C, Dm[:, :1], x, view="scan")
    with pytest.raises(ValueError, match=r"D: expected shape \(2, 2, 2\)"):
        lti_ssm(Ab, Bb, C, Dm[:1], x)  # no broadcasting of one channel's D over two
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(1, 2, 3\) \(b, d, n\), got \(1, 2, 4\)"):
        lti_ssm(Ab, Bb, C, Dm, x, view="chunked", initial_state=np.zeros((1, 2, 4)))
    bad = x.copy()
    bad[0, 3, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"x: expected finite values, got inf at index \(0, 3, 1, 0\)"):
        lti_ssm(Ab, Bb, C, Dm, bad, backend="numba")
    with pytest.raises(TypeError, match=r"x: expected a floating-point dtype"):
        lti_ssm(Ab, Bb, C, Dm, x.astype(np.int32))
    Ab_t = np.broadcast_to(Ab, (5,) + Ab.shape)
    for view, backend in (("convolution", "numpy"), ("convolution", "numba"), ("fft", "numpy"), ("chunked", "numpy")):
        with pytest.raises(ValueError, match=rf"A_bar: the {view} view needs a time-invariant system"):
            lti_ssm(Ab_t, Bb, C, Dm, x, view=view, backend=backend)
    with pytest.raises(ValueError, match=r"A_bar: expected shape \(5, 2, 3, 3\) .*time axis must match"):
        lti_ssm(Ab_t[:4], Bb, C, Dm, x)
    with pytest.raises(ValueError, match=r"B_bar: a time-varying B_bar .* needs a time-varying A_bar"):
        lti_ssm(Ab, np.broadcast_to(Bb, (5,) + Bb.shape), C, Dm, x)
    with pytest.raises(ValueError, match=r"chunk: expected an integer >= 1, got 0"):
        lti_ssm(Ab, Bb, C, Dm, x, view="chunked", chunk=0)
    with pytest.raises(ValueError, match=r"chunk: only the 'chunked' view takes a chunk length"):
        lti_ssm(Ab, Bb, C, Dm, x, view="scan", chunk=4)
    with pytest.raises(ValueError, match=r"view: refimpl.ssm.lti_ssm has views 'recurrent', 'convolution', "
                                         r"'fft', 'scan', 'chunked'; got 'circular'"):
        lti_ssm(Ab, Bb, C, Dm, x, view="circular")
    with pytest.raises(ValueError, match=r"backend: refimpl.ssm.lti_ssm has no 'numba' backend for view 'scan'"):
        lti_ssm(Ab, Bb, C, Dm, x, view="scan", backend="numba")
    with pytest.raises(ValueError, match=r"backend: refimpl.ssm.lti_ssm has no 'cuda' backend for view 'chunked'"):
        lti_ssm(Ab, Bb, C, Dm, x, view="chunked", backend="cuda")
    for name in ("diagonal", "return_final_state"):
        for bad in ("False", 0, None):
            with pytest.raises(TypeError, match=rf"{name}: expected True or False, got"):
                lti_ssm(Ab, Bb, C, Dm, x, **{name: bad})
    with pytest.raises(TypeError, match=r"return_final_state: expected True or False"):
        lti_reference.scan(Ab, Bb, C, Dm, x, return_final_state=1)
    with pytest.raises(ValueError, match=r"K: expected shape"):
        causal_conv(np.zeros((3, 2, 2, 2)), x)
    with pytest.raises(ValueError, match=r"K: expected shape"):
        fft_conv(np.zeros((3, 2, 2, 2)), x)
    with pytest.raises(ValueError, match=r"L: expected an integer >= 0, got -1"):
        lti_kernel(Ab, Bb, C, -1)
    with pytest.raises(ValueError, match=r"backend: expected one of 'numpy', 'numba', 'cuda', got 'cupy'"):
        lti_kernel(Ab, Bb, C, 3, backend="cupy")
