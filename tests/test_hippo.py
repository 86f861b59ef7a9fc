"""HiPPO: the text's worked matrix, sign spellings, online projection vs the Gauss-quadrature oracle,
reconstruction, bad inputs."""
import math

import numpy as np
import pytest

from oracles import hippo as OH
from oracles.strategies.structured import Polynomial
from oracles.tolerance import Bound, assert_within, gamma
from refimpl.ssm import hippo
from refimpl.ssm.hippo import hippo_projection, hippo_transition


def test_legs_5x5_matches_the_text_exactly():
    # The text: A = [[1,0,0,0,0],[sqrt3,2,0,0,0],[sqrt5,sqrt(3*5),3,0,0],[sqrt7,sqrt(3*7),sqrt(5*7),4,0],
    #                [3, 3 sqrt3, 3 sqrt5, 3 sqrt7, 5]],  B_n = sqrt(2n+1).
    A, B = hippo.legs(5, sign="ode")
    s = np.sqrt
    exact = np.array([
        [1, 0, 0, 0, 0],
        [s(3), 2, 0, 0, 0],
        [s(5), s(3 * 5), 3, 0, 0],
        [s(7), s(3 * 7), s(5 * 7), 4, 0],
        [3, s(9 * 3), s(9 * 5), s(9 * 7), 5],
    ])
    # every entry is one correctly rounded sqrt of an integer (or an integer): bit-exact
    np.testing.assert_array_equal(A, exact)
    # the text prints the last row as 3 sqrt3, 3 sqrt5, 3 sqrt7: equal to sqrt(27), ... within the
    # rounding of that product (one multiplication after one sqrt: gamma_2 relative)
    printed = np.array([3 * s(3), 3 * s(5), 3 * s(7)])
    assert np.all(np.abs(A[4, 1:4] - printed) <= gamma(2, np.float64) * printed)
    np.testing.assert_array_equal(B, s(2 * np.arange(5) + 1.0))


@pytest.mark.parametrize("measure", hippo.MEASURES)
def test_sign_spellings_are_explicit_and_opposite(measure):
    N = 5
    A_ode, B_ode = hippo_transition(measure, N, sign="ode")
    A_s4, B_s4 = hippo_transition(measure, N, sign="s4")
    np.testing.assert_array_equal(A_s4, -A_ode)
    np.testing.assert_array_equal(B_s4, B_ode)
    with pytest.raises(TypeError):
        hippo_transition(measure, N)  # no silent default for the sign
    with pytest.raises(ValueError, match="sign"):
        hippo_transition(measure, N, sign="negative")


def test_lmu_is_legt_in_voelker_coordinates():
    # m_n = (-1)^n sqrt(2n+1) c_n  =>  A_lmu = S A_legt S^{-1}, B_lmu = S B_legt, S = diag((-1)^n sqrt(2n+1))
    N = 6
    n = np.arange(N)
    S = (-1.0) ** n * np.sqrt(2 * n + 1.0)
    A_t, B_t = hippo.legt(N, sign="ode")
    A_l, B_l = hippo.lmu(N, sign="ode")
    # entries are small integers times (2n+1) up to a few roundings: gamma_4 relative
    assert_within(A_l, S[:, None] * A_t / S[None, :], Bound(gamma(4, np.float64) * np.abs(A_l), "4 roundings per entry"))
    assert_within(B_l, S * B_t, Bound(gamma(2, np.float64) * np.abs(B_l), "2 roundings"))


def test_text_recurrence_is_forward_euler_with_t0_equal_dt():
    # the text: c_{k+1} = (1 - A/k) c_k + (1/k) B f_k, k = 1, 2, ...  (text index k = ours + 1)
    N, L = 4, 9
    A, B = hippo.legs(N, sign="ode")
    f = np.cos(np.arange(L) * 0.3)
    c_text = np.zeros((L, N))
    c = np.zeros(N)
    c[0] = f[0]
    c_text[0] = c
    for k in range(1, L):
        c = (np.eye(N) - A / k) @ c + B * f[k - 1] / k
        c_text[k] = c
    got = hippo_projection(f, "legs", N, 0.3, method="forward_euler")
    # identical formula, identical operation order up to association: gamma_{2N} of the magnitude
    mag = np.zeros((L, N))
    m = np.zeros(N)
    m[0] = abs(f[0])
    mag[0] = m
    for k in range(1, L):
        m = np.abs(np.eye(N) - A / k) @ m + np.abs(B * f[k - 1] / k)
        mag[k] = m
    assert_within(got, c_text, Bound(2 * gamma(2 * N * L, np.float64) * mag, "two evaluations of the same recurrence"))


def _signal(x):
    return np.sin(3 * x) + 0.5 * np.cos(7 * x) + x


@pytest.mark.parametrize("method,order", [("forward_euler", 1), ("bilinear", 2), ("backward_euler", 1)])
def test_legs_online_projection_converges_to_quadrature(method, order):
    N, T = 8, 1.0
    exact = OH.coefficients(_signal, "legs", N, T)
    cs = [hippo_projection(_signal(dt * np.arange(1, L + 1)), "legs", N, dt, method=method)[-1]
          for L, dt in ((L, T / L) for L in (200, 400, 800))]
    errs = np.array([np.max(np.abs(c - exact)) for c in cs])
    # Rounding floor (as in property_tests/test_hippo_projection.py): L = 800 steps of an (N+2)-term update on
    # coefficients |c_n| <= sqrt(2N+1) max|f| (max|f| <= 2.5 on [0, 1]) -- gamma_{800 (N+2)} of that, ~4e-12;
    # the quadrature oracle adds gamma_{200}-sized rounding.  The smallest error here (bilinear, L = 800) is
    # ~1e-6, so rounding cannot move any of the ratios below: every check is asserted, none is conditional.
    # The factor 100: rounding moves each error by at most the floor, so above 100 floors the log2 ratio of two
    # errors moves by at most log2(1.01/0.99) < 0.03, inside the 0.1 slack of the order check below.
    floor = gamma(800 * (N + 2), np.float64) * np.sqrt(2 * N + 1) * 2.5
    assert errs[-1] > 100 * floor, (errs, floor)
    # the error at dt = 1/200 is within RICHARDSON_SAFETY (2) times its Richardson estimate from dt = 1/400
    # (oracles.tolerance: valid in the asymptotic regime, which the order check below confirms)
    assert_within(cs[0], exact, OH.richardson_bound(cs[0], cs[1], order))
    orders = np.log2(errs[:-1] / errs[1:])
    # the observed order p + O(dt): at least p - 0.1 at these steps, and not a higher order by accident
    assert np.all(orders > order - 0.1) and np.all(orders < order + 0.5), orders


@pytest.mark.parametrize("measure", ["legt", "lmu", "lagt"])
def test_windowed_measures_bilinear_second_order_on_polynomials(measure):
    # LegT/LMU ODEs are exact for polynomials of degree < N (f(t - theta) = its reconstruction);
    # LagT with f defined on all of (-inf, t] (Gauss--Laguerre oracle).  Start at t0 from the oracle.
    N, t0, T = 8, 1.0, 2.0
    p = Polynomial(np.array([1.0, 1.0, -2.0, 0.3]))
    errs = []
    for L in (100, 200, 400):
        dt = (T - t0) / L
        c0 = OH.coefficients(p, measure, N, t0)
        c = hippo_projection(p(t0 + dt * np.arange(L + 1)), measure, N, dt, t0=t0, initial_state=c0)[-1]
        errs.append(np.max(np.abs(c - OH.coefficients(p, measure, N, T))))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(orders - 2) < 0.1), orders


def test_lagt_from_rest_and_fout_periodic():
    # LagT from f = 0 before 0: oracle by Gauss--Legendre with the weight e^{-(t-x)} on [0, t]
    N, T = 6, 2.0
    errs = []
    for L in (200, 400):
        dt = T / L
        c = hippo_projection(_signal(dt * np.arange(L + 1)), "lagt", N, dt)[-1]
        errs.append(np.max(np.abs(c - OH.coefficients(_signal, "lagt_finite", N, T))))
    assert abs(math.log2(errs[0] / errs[1]) - 2) < 0.1
    # FouT: a theta-periodic trigonometric polynomial in the span (its ODE is then exact)
    g = lambda x: 1 + np.cos(2 * np.pi * x) - 0.5 * np.sin(4 * np.pi * x)  # noqa: E731
    N, t0, T = 7, 1.0, 2.3
    errs = []
    for L in (200, 400):
        dt = (T - t0) / L
        c = hippo_projection(g(t0 + dt * np.arange(L + 1)), "fout", N, dt, t0=t0,
                             initial_state=OH.coefficients(g, "fout", N, t0))[-1]
        errs.append(np.max(np.abs(c - OH.coefficients(g, "fout", N, T))))
    assert abs(math.log2(errs[0] / errs[1]) - 2) < 0.1


@pytest.mark.parametrize("measure", ["legs", "legt", "lmu", "lagt"])
def test_polynomial_reconstructed_to_rounding(measure):
    N, t = 7, 1.6
    rng = np.random.default_rng(3)
    p = Polynomial(rng.standard_normal(N))  # degree N - 1 < N
    lo = {"legs": 0.0, "lagt": t - 3.0}.get(measure, t - 1.0)
    x = np.linspace(lo, t, 13)
    nq = 40 if measure == "lagt" else 200  # Gauss--Laguerre: exact for degree <= 79
    fd = 2 * N + 2  # Horner: 2 roundings per degree
    c = OH.coefficients(p, measure, N, t, n_quad=nq)
    c_err = OH.coefficients_magnitude(p.abs_eval, measure, N, t, n_quad=nq, f_depth=fd)
    bound = OH.reconstruction_bound(c, c_err, measure, x, t, f_mag=p.abs_eval(x), f_depth=fd)
    assert_within(hippo.reconstruct(c, measure, x, t), p(x), bound)


def test_smooth_signal_reconstruction_error_falls_with_N():
    t = 2.0
    x = np.linspace(0, t, 101)
    errs = [np.max(np.abs(hippo.reconstruct(OH.coefficients(_signal, "legs", N, t), "legs", x, t) - _signal(x)))
            for N in (4, 8, 16, 24)]
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < 1e-6 * errs[0]  # geometric (spectral) convergence for an entire signal


def test_bad_inputs():
    with pytest.raises(ValueError, match="measure"):
        hippo_transition("legx", 4, sign="ode")
    with pytest.raises(ValueError, match="N"):
        hippo.legs(0, sign="ode")
    with pytest.raises(ValueError, match="N: FouT needs an odd N"):
        hippo.fout(4, sign="ode")
    with pytest.raises(ValueError, match="^f: "):
        hippo_projection(np.ones((3, 2)), "legs", 4, 0.1)
    with pytest.raises(ValueError, match="^f: "):
        hippo_projection(np.array([1.0, np.nan]), "legs", 4, 0.1)
    with pytest.raises(ValueError, match="^dt: "):
        hippo_projection(np.ones(3), "legs", 4, -0.1)
    with pytest.raises(ValueError, match="^t0: "):
        hippo_projection(np.ones(3), "legs", 4, 0.1, t0=0.0)
    with pytest.raises(ValueError, match="^alpha: "):
        hippo_projection(np.ones(3), "legt", 4, 0.1, method="gbt")
    with pytest.raises(ValueError, match="^initial_state: expected shape \\(4,\\)"):
        hippo_projection(np.ones(3), "legt", 4, 0.1, initial_state=np.zeros(3))
    with pytest.raises(ValueError, match="^initial_state: "):  # validated even when there is no sample
        hippo_projection(np.ones(0), "legt", 4, 0.1, initial_state=np.zeros(3))
    with pytest.raises(TypeError, match="^f: "):
        hippo_projection(np.ones(3, dtype=np.int64), "legt", 4, 0.1)
    with pytest.raises(ValueError, match="^view: "):
        hippo_projection(np.ones(3), "legt", 4, 0.1, view="scan")
    with pytest.raises(ValueError, match="^backend: "):
        hippo_projection(np.ones(3), "legt", 4, 0.1, backend="numba")


def test_scale_and_basis_validate_their_arguments():
    np.testing.assert_array_equal(hippo.scale("legs", np.array([0.5, 2.0])), [2.0, 0.5])
    assert hippo.scale("legt", 0.0, theta=4.0) == 0.25  # the windowed scale does not depend on t
    assert hippo.scale("lagt", 3.0) == 1.0
    with pytest.raises(ValueError, match="^measure: "):
        hippo.scale("legx", 1.0)
    for bad in (0.0, -1.0, np.array([1.0, 0.0])):
        with pytest.raises(ValueError, match="^t: expected values > 0"):
            hippo.scale("legs", bad)
    with pytest.raises(TypeError, match="^t: "):
        hippo.scale("legs", None)
    with pytest.raises(TypeError, match="^t: "):
        hippo.scale("legt", None)
    with pytest.raises(ValueError, match="^t: expected finite"):
        hippo.scale("legt", np.inf)
    for bad in (0.0, -2.0):
        with pytest.raises(ValueError, match="^theta: "):
            hippo.scale("legt", 1.0, theta=bad)
    with pytest.raises(ValueError, match="^t: "):
        hippo.basis("legs", 3, np.linspace(0, 1, 4), 0.0)
    with pytest.raises(ValueError, match="^theta: "):
        hippo.basis("legt", 3, np.linspace(0, 1, 4), 1.0, theta=0.0)
    with pytest.raises(TypeError, match="^t: "):
        hippo.reconstruct(np.ones(3), "lmu", np.linspace(0, 1, 4), None)


def test_empty_and_single_sample():
    assert hippo_projection(np.zeros(0), "legt", 3, 0.1).shape == (0, 3)
    c = hippo_projection(np.array([2.0]), "legs", 3, 0.1)
    np.testing.assert_array_equal(c, [[2.0, 0.0, 0.0]])
