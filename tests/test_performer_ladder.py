"""The FAVOR+-vs-exact-softmax report rows (oracles/checks/attention.py): their closed forms, and that they fail for
broken estimators (an all-zero output, a wrong temperature, a wrongly scaled projection, a wrongly scaled sum)
while refimpl's estimator passes."""
import math

import mpmath
import numpy as np
import pytest

from oracles.checks.attention import FAVOR_M_IID, FAVOR_M_ORTH, favor_ladder_rows, favor_rate_row
from oracles.performer import (median_exceedance, median_of_means_interval, positive_denominator_second_moment,
                               positive_pair_covariance, positive_sum_covariance, positive_sum_fourth_moments,
                               slope_band, unit_central_moments)
from refimpl.attention.linear import linear_attention, performer_attention

# ------------------------------------------------------------------ closed forms against independent routes


def _gauss_expect(f):
    """``E f(w)`` for ``w ~ N(0, 1)`` by mpmath quadrature (n = 1: an independent route to the closed forms)."""
    with mpmath.workdps(30):
        return float(mpmath.quad(lambda w: f(w) * mpmath.exp(-w * w / 2), [-mpmath.inf, 0, mpmath.inf])
                     / mpmath.sqrt(2 * mpmath.pi))


def _units(xq, xk):
    """``Y_ij(w) = exp(w s_ij - (x_i^2 + y_j^2)/2)`` as mpmath functions of a scalar ``w`` (n = 1)."""
    return [[(lambda w, a=float(x), b=float(y): mpmath.exp(w * (a + b) - (a * a + b * b) / 2)) for y in xk] for x in xq]


def test_pair_covariance_and_fourth_moment_equal_quadrature():
    xq, xk = np.array([[0.3], [-0.2]]), np.array([[0.25], [-0.1], [0.4]])
    c = np.array([[[1.0], [-0.5], [0.3]], [[0.2], [0.7], [-1.1]]])  # (l s p)
    Y = _units(xq[:, 0], xk[:, 0])
    K = np.exp(xq @ xk.T)
    C = positive_pair_covariance(xq, xk)
    for i, j, a, b in [(0, 0, 0, 0), (0, 1, 1, 2), (1, 2, 0, 1)]:
        q = _gauss_expect(lambda w: Y[i][j](w) * Y[a][b](w)) - K[i, j] * K[a, b]
        assert C[i, j, a, b] == pytest.approx(q, rel=1e-10)
    for i in range(2):
        def u(w, i=i):
            return sum(c[i, j, 0] * (Y[i][j](w) - K[i, j]) for j in range(3))
        assert positive_sum_fourth_moments(xq, xk, c)[i, 0] == pytest.approx(_gauss_expect(lambda w: u(w) ** 4),
                                                                             rel=1e-9)
        assert positive_sum_covariance(xq, xk, c)[i, i] == pytest.approx(_gauss_expect(lambda w: u(w) ** 2), rel=1e-10)
        U2 = _gauss_expect(lambda w, i=i: sum(Y[i][j](w) for j in range(3)) ** 2)
        assert positive_denominator_second_moment(xq, xk)[i] == pytest.approx(U2, rel=1e-10)


def test_one_key_fourth_moment_equals_the_mgf_route():
    x, y = np.array([0.3, -0.2, 0.4]), np.array([0.1, 0.5, -0.3])
    exact = float(unit_central_moments("positive", x, y, 4)[4])  # 50-digit route through E Y^k
    assert positive_sum_fourth_moments(x[None], y[None], np.ones((1, 1, 1)))[0, 0] == pytest.approx(exact, rel=1e-12)


def test_slope_band_and_median_tools():
    ms = (16, 64, 256, 1024)
    exact = [3.0 / m for m in ms]
    lo, hi = slope_band(ms, exact, exact)
    assert lo == pytest.approx(-1.0, abs=1e-12) and hi == pytest.approx(-1.0, abs=1e-12)
    lo, hi = slope_band(ms, [e * 0.8 for e in exact], [e * 1.2 for e in exact])
    assert lo < -1.0 < hi
    # P(Bin(4, 1/2) >= 2) = 11/16
    assert median_exceedance(4, 0.5) == pytest.approx(11 / 16, rel=1e-12)
    a, b, G = median_of_means_interval(1.0, 2.0, 1024, 1e-4)
    assert a < 1.0 < b and 1024 % G == 0


# ------------------------------------------------------------------ the rows: refimpl passes, broken estimators fail


def zeros(q, k, v, W, normalize):
    return np.zeros(q.shape[:3] + v.shape[-1:])


def wrong_temperature(q, k, v, W, normalize):
    # exp(q.k) instead of exp(q.k / sqrt(n))
    return performer_attention(q, k, v, W, normalize=normalize, scale=1.0)


def unit_norm_projection(q, k, v, W, normalize):
    # the rows of W normalized to 1 (directions only): E exp(w.s) is no longer exp(|s|^2/2)
    return performer_attention(q, k, v, W / np.linalg.norm(W, axis=1, keepdims=True), normalize=normalize)


def no_sqrt_m(q, k, v, W, normalize):
    # features exp(Wx - |x|^2/2) without the 1/sqrt(m): the normalized output is unchanged, the sums are m times too large
    s = q.shape[-1] ** -0.25

    def phi(x):
        x = x * s
        return np.exp(x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True))

    return linear_attention(phi(q), phi(k), v, causal=False, normalize=normalize)


@pytest.fixture(scope="module")
def ladder():
    return {None: favor_ladder_rows(), "zeros": favor_ladder_rows(zeros),
            "wrong_temperature": favor_ladder_rows(wrong_temperature),
            "unit_norm_projection": favor_ladder_rows(unit_norm_projection)}


def _by_name(rows):
    return {r.op.split("favor+.")[1]: r for r in rows}


def test_refimpl_passes_every_row(ladder):
    rows = ladder[None] + [favor_rate_row()]
    assert len(rows) == len(FAVOR_M_IID) + len(FAVOR_M_ORTH) + 1
    assert all(r.passed for r in rows), [(r.op, r.max_abs_err, r.bound) for r in rows if not r.passed]
    # the bound is below the error of an all-zero output (||o*||_F) at every m: the rows can fail
    assert all(r.bound < r.max_abs_err / r.max_rel_err for r in ladder[None])


def test_all_zero_output_fails_every_row(ladder):
    rows = ladder["zeros"] + [favor_rate_row(zeros)]
    assert not any(r.passed for r in rows), [r.op for r in rows if r.passed]


def test_wrong_temperature_fails_every_normalized_row(ladder):
    assert not any(r.passed for r in ladder["wrong_temperature"])


def test_wrongly_scaled_projection_fails(ladder):
    rows = _by_name(ladder["unit_norm_projection"])
    # a bias of about 0.39 in ||o - o*||_F: above the bound from m = 1024 (iid) and m = 4096 (orthogonal) on
    failing = {f"iid.m{m}" for m in FAVOR_M_IID if m >= 1024} | {f"orthogonal.m{m}" for m in FAVOR_M_ORTH if m >= 4096}
    assert failing and not any(rows[name].passed for name in failing)
    assert not favor_rate_row(unit_norm_projection).passed


def test_wrongly_scaled_sums_fail_the_rate_row():
    # invisible to normalized attention (the factor cancels), caught by the rate row on the unbiased sums
    assert all(r.passed for r in favor_ladder_rows(no_sqrt_m))
    rate = favor_rate_row(no_sqrt_m)
    assert not rate.passed and math.isfinite(rate.max_abs_err)
