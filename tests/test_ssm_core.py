"""Worked, hand-derivable cases and bad inputs for the SSM core (discretizations and LTI views)."""
import math

import mpmath as mp
import numpy as np
import pytest

from oracles import ssm as O
from oracles.tolerance import Bound, assert_within, componentwise_bound, gamma, unit_roundoff
from refimpl.ssm.discretization import reference as D
from refimpl.ssm.lti import reference as lti
from refimpl.ssm.lti import numba as lti_numba

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
    Ab, Bb = D.discretize(A, B, dt, method, alpha=alpha, diagonal=diagonal)
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
        # expm (Pade) and phi1 (Taylor scaling-and-squaring) of a 1x1 matrix: a handful of roundings,
        # gamma_8 covers the Pade evaluation (numerator, denominator, division) plus dt*phi1*b.
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
    got = D.phi1(z)
    for zi, gi in zip(z, got):
        ex = complex((mp.expm1(mp.mpc(zi.real, zi.imag))) / mp.mpc(zi.real, zi.imag))
        # expm1 (< a few ulp, checked here) then one complex division: 4u-scaled gamma_4
        assert abs(gi - ex) <= gamma(4, np.float64, complex_ops=True) * abs(ex)


def test_phi1_tiny_and_subnormal_arguments_stay_finite():
    # complex division by a subnormal overflows; the series branch keeps phi1 -> 1 exactly in the limit
    z = np.array([-1e-309 + 0j, 1e-310 + 1e-310j, -4e-6 + 3e-6j, 0j])
    got = D.phi1(z)
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

def _system(rng, diagonal=False, complex_=False, h=2, n=3, m=2, p=2):
    A, B, C, Dm = O.random_stable_system(rng, h, n, m, p, diagonal=diagonal, complex_=complex_)
    Ab, Bb = D.zoh(A, B, 0.2, diagonal=diagonal)
    return Ab, Bb, C, Dm


def test_scalar_system_convolution_kernel_is_geometric():
    # n = m = p = 1: K_k = c a^k b exactly as the text's K = (CB, CAB, CA^2B, ...)
    a, b, c = 0.5, 2.0, 3.0
    K = lti.kernel(np.array([[a]]), np.array([[[b]]]), np.array([[[c]]]), 5, diagonal=True)
    np.testing.assert_array_equal(K[:, 0, 0, 0], [c * b * a ** k for k in range(5)])


def test_empty_sequence_returns_initial_state_for_every_view():
    rng = np.random.default_rng(4)
    Ab, Bb, C, Dm = _system(rng)
    x = np.zeros((2, 0, 2, 2))
    h0 = rng.standard_normal((2, 2, 3))
    for fn in (lti.recurrent, lti.scan, lti_numba.recurrent, lambda *a, **k: lti.chunked(*a, chunk=3, **k),
               lambda *a, **k: lti.convolution(*a, method="fft", **k), lti.convolution):
        y, s = fn(Ab, Bb, C, Dm, x, h0=h0, return_state=True)
        assert y.shape == (2, 0, 2, 2)
        np.testing.assert_array_equal(s, h0)


def test_split_and_resume_equals_whole():
    rng = np.random.default_rng(5)
    Ab, Bb, C, Dm = _system(rng, diagonal=True, complex_=True)
    x = rng.standard_normal((1, 21, 2, 2))
    y, s = lti.recurrent(Ab, Bb, C, Dm, x, diagonal=True, return_state=True)
    y1, s1 = lti.scan(Ab, Bb, C, Dm, x[:, :8], diagonal=True, return_state=True)
    y2, s2 = lti.chunked(Ab, Bb, C, Dm, x[:, 8:], h0=s1, diagonal=True, return_state=True, chunk=5)
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
    y_full = lti.recurrent(Ab, Bb, C, Dm, x_full)
    x_gap = np.delete(x_full, 2, axis=1)
    dts = np.array([[dt], [dt], [2 * dt], [dt]])
    Ab_t, Bb_t = D.zoh(A, B, dts)
    y_gap = lti.recurrent(Ab_t, Bb_t, C, None, x_gap) + np.einsum("hpm,blhm->blhp", Dm, x_gap)
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
    assert lti.recurrent(*f32).dtype == np.float32
    # mixing float32 and float64 promotes, never downcasts
    assert lti.recurrent(*f32[:4], x).dtype == np.float64
    Ab32, Bb32 = D.zoh(np.float32(-1.0) * np.ones((1, 2), np.float32), np.ones((1, 2, 1), np.float32), 0.1,
                       diagonal=True)
    assert Bb32.dtype == np.float64  # dt given as a Python float is float64: promotes
    Ab32, Bb32 = D.zoh(-np.ones((1, 2), np.float32), np.ones((1, 2, 1), np.float32), np.float32(0.1), diagonal=True)
    assert Ab32.dtype == np.float32 and Bb32.dtype == np.float32


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_discretize():
    A = -np.eye(3)[None]
    B = np.ones((1, 3, 2))
    with pytest.raises(ValueError, match=r"A: expected a square matrix .* got shape \(1, 3, 2\)"):
        D.zoh(np.ones((1, 3, 2)), B, 0.1)
    with pytest.raises(ValueError, match=r"B: expected shape .* got \(1, 4, 2\)"):
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
    with pytest.raises(ValueError, match=r"method: expected one of"):
        D.discretize(A, B, 0.1, "tustin")
    with pytest.raises(ValueError, match=r"alpha: method 'gbt' needs alpha"):
        D.discretize(A, B, 0.1, "gbt")
    with pytest.raises(ValueError, match=r"alpha: expected a real number in \[0, 1\], got 1.5"):
        D.gbt(A, B, 0.1, 1.5)
    with pytest.raises(ValueError, match=r"backward_euler: the matrix is singular"):
        D.backward_euler(np.eye(3)[None], B, 1.0)
    with pytest.raises(TypeError, match=r"diagonal: expected a bool"):
        D.zoh(A, B, 0.1, diagonal="yes")


def test_bad_inputs_views():
    rng = np.random.default_rng(8)
    Ab, Bb, C, Dm = _system(rng)
    x = rng.standard_normal((1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"x: expected 4 dimensions, got shape \(5, 2, 2\)"):
        lti.recurrent(Ab, Bb, C, Dm, x[0])
    with pytest.raises(ValueError, match=r"B_bar: expected shape \(2, 3, 2\)"):
        lti.recurrent(Ab, Bb[:, :2], C, Dm, x)
    with pytest.raises(ValueError, match=r"C: expected shape \(2, \*, 3\)"):
        lti.recurrent(Ab, Bb, C[:, :, :2], Dm, x)
    with pytest.raises(ValueError, match=r"D: expected shape \(2, 2, 2\)"):
        lti.scan(Ab, Bb, C, Dm[:, :1], x)
    with pytest.raises(ValueError, match=r"h0: expected shape \(1, 2, 3\)"):
        lti.chunked(Ab, Bb, C, Dm, x, h0=np.zeros((1, 2, 4)))
    bad = x.copy()
    bad[0, 3, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"x: expected finite values, got inf at index \(0, 3, 1, 0\)"):
        lti_numba.recurrent(Ab, Bb, C, Dm, bad)
    with pytest.raises(TypeError, match=r"x: expected a floating-point dtype"):
        lti.recurrent(Ab, Bb, C, Dm, x.astype(np.int32))
    Ab_t = np.broadcast_to(Ab, (5,) + Ab.shape)
    with pytest.raises(ValueError, match=r"A_bar: this view needs a time-invariant system"):
        lti.convolution(Ab_t, Bb, C, Dm, x)
    with pytest.raises(ValueError, match=r"chunk: expected an integer >= 1, got 0"):
        lti.chunked(Ab, Bb, C, Dm, x, chunk=0)
    with pytest.raises(ValueError, match=r"method: expected 'direct' or 'fft'"):
        lti.convolution(Ab, Bb, C, Dm, x, method="circular")
    with pytest.raises(ValueError, match=r"K: expected shape"):
        lti.causal_conv(np.zeros((3, 2, 2, 2)), x)
