"""The tolerance model: gamma_n, the bounds, and the comparison record."""
import math

import numpy as np
import pytest

from oracles.tolerance import (Bound, baseline_bound, compare, componentwise_bound, fft_convolution_bound, gamma,
                               assert_within, unit_roundoff)


def test_unit_roundoff_and_gamma():
    assert unit_roundoff(np.float64) == 2.0 ** -53
    assert unit_roundoff(np.float32) == 2.0 ** -24
    assert unit_roundoff(np.complex64) == 2.0 ** -24
    u = 2.0 ** -24
    assert gamma(10, np.float32) == pytest.approx(10 * u / (1 - 10 * u), rel=1e-15)
    assert gamma(2 ** 25, np.float32) == math.inf  # n u >= 1: no bound
    assert gamma(3, np.float64, complex_ops=True) == pytest.approx(gamma(12, np.float64), rel=1e-15)


def test_recursive_summation_error_is_inside_gamma_bound():
    # The bound the whole suite relies on: |fl(sum) - sum| <= gamma_{n-1} sum|x_i| (Higham 4.2), checked
    # against an exact (math.fsum) sum on adversarial float32 data.
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = (rng.standard_normal(4096) * 10.0 ** rng.uniform(-3, 3, 4096)).astype(np.float32)
        s = np.float32(0)
        for v in x:  # recursive summation in float32
            s = np.float32(s + v)
        exact = math.fsum(float(v) for v in x)
        b = componentwise_bound(np.sum(np.abs(x.astype(np.float64))), len(x) - 1, np.float32, oracle_dtype=None)
        assert_within(np.float32(s), exact, b)


def test_compare_record_fields():
    o = np.array([[1.0, 2.0], [3.0, 0.0]])
    c = o + np.array([[0.0, 1e-3], [-2e-3, 0.0]])
    cmp = compare(c, o, Bound(1e-2, "test bound"))
    assert cmp.passed
    assert cmp.max_abs_err == pytest.approx(2e-3)
    assert cmp.max_abs_index == (1, 0)
    assert cmp.max_rel_index == (1, 0) and cmp.max_rel_err == pytest.approx(2e-3 / 3)
    assert cmp.worst_ratio == pytest.approx(0.2)
    assert "test bound" in cmp.bound_source
    bad = compare(c, o, Bound(1e-3, "tight"))
    assert not bad.passed and bad.worst_index == (1, 0)
    assert "FAIL" in bad.summary()
    d = bad.to_dict()
    assert d["max_abs_index"] == [1, 0]


def test_compare_flags_nonfinite_and_shape_mismatch():
    o = np.ones(4)
    c = o.copy()
    c[2] = np.nan
    cmp = compare(c, o, Bound(1.0, "loose"))
    assert not cmp.passed and cmp.nonfinite == 1
    assert not compare(np.ones(3), o, Bound(1.0, "x")).passed
    # a matching non-finite oracle entry is accepted, a different one is not
    o2 = np.array([1.0, np.inf])
    assert compare(np.array([1.0, np.inf]), o2, Bound(0.0, "exact")).passed
    assert not compare(np.array([1.0, -np.inf]), o2, Bound(0.0, "exact")).passed


def test_ulps_are_counted_in_candidate_dtype():
    o = np.array([1.0])
    c = np.array([1.0 + 3 * 2.0 ** -23], dtype=np.float32)
    cmp = compare(c, o, Bound(1.0, "x"))
    assert cmp.ulp_max == pytest.approx(3.0)


def test_baseline_bound_rule():
    o = np.array([1.0, -2.0])
    ref_lowp = np.array([1.01, -2.0])
    u = 2.0 ** -11
    tiny16 = 2.0 ** -14  # the underflow floor
    # normwise: 2 x max error (0.01) everywhere, plus storing the answer in float16
    b = baseline_bound(ref_lowp, o, np.float16)
    np.testing.assert_allclose(np.asarray(b.values), [2 * 0.01 + u * 1.0 + tiny16, 2 * 0.01 + u * 2.0 + tiny16],
                               rtol=1e-12)
    # with a magnitude: the worst relative error (0.01 / 1) scales with each entry's magnitude
    b = baseline_bound(ref_lowp, o, np.float16, magnitude=np.array([1.0, 4.0]))
    np.testing.assert_allclose(np.asarray(b.values), [2 * 0.01 + u + tiny16, 2 * 0.04 + 2 * u + tiny16], rtol=1e-12)


def test_fft_convolution_bound_holds_for_float32():
    rng = np.random.default_rng(1)
    for L in (1, 7, 100, 1000):
        k = rng.standard_normal(L).astype(np.float32)
        x = rng.standard_normal(L).astype(np.float32)
        n = 1 << max(1, (2 * L - 1).bit_length())
        k64, x64 = k.astype(np.float64), x.astype(np.float64)
        y = np.fft.irfft(np.fft.rfft(k64, n) * np.fft.rfft(x64, n), n)[:L]
        y32 = np.fft.irfft(np.fft.rfft(k, n) * np.fft.rfft(x, n), n)[:L]  # numpy >= 2 transforms float32 natively
        assert y32.dtype == np.float32
        exact = np.convolve(k.astype(np.float64), x.astype(np.float64))[:L]
        assert_within(y32, exact, fft_convolution_bound(k, x, n, np.float32))
        assert_within(y, exact, fft_convolution_bound(k, x, n, np.float64))


def test_transcendental_allowance_covers_numpys_validated_ulp_errors():
    # TRANSCENDENTAL_ULP is NumPy's own accuracy contract: the maximum ULP error its test suite validates
    # for exp/expm1/log/log1p (numpy/_core/tests/data/umath-validation-set-<ufunc>.csv, 4th column)
    import csv
    import os

    from oracles.tolerance import TRANSCENDENTAL_U, TRANSCENDENTAL_ULP

    assert TRANSCENDENTAL_U == 2 * TRANSCENDENTAL_ULP  # one ULP of y is at most eps |y| = 2u |y|
    data = os.path.join(os.path.dirname(np.__file__), "_core", "tests", "data")
    worst = {}
    for fn in ("exp", "expm1", "log", "log1p"):
        path = os.path.join(data, f"umath-validation-set-{fn}.csv")
        if not os.path.exists(path):
            pytest.skip("this NumPy installation ships without its accuracy data sets")
        with open(path) as fh:
            rows = [r for r in csv.reader(line for line in fh if line.strip() and line[0] not in "#$")][1:]
        for dtype, _, _, ulp in rows:
            worst[fn, dtype.strip()] = max(worst.get((fn, dtype.strip()), 0), int(ulp))
    assert {d for _, d in worst} >= {"np.float32", "np.float64"}
    assert max(worst.values()) <= TRANSCENDENTAL_ULP, worst
