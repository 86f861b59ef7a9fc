"""refimpl._fastmath: the vectorizable float32 exp against float64 libm exp, within its proven bound."""
import numpy as np

from refimpl._fastmath import EXP_REL_ERR, exp_f32

TINY = np.finfo(np.float32).tiny  # 2^-126


def _exp(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    exp_f32(x, out, np.empty(x.shape, dtype=np.int32))
    return out


def _floats_between(lo, hi, stride):
    """Every ``stride``-th float32 in [lo, hi] (by bit pattern), both signs handled, endpoints included."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    parts = []
    if lo32 < 0:
        a = np.array([min(hi32, np.float32(-0.0))], np.float32).view(np.int32)[0]
        b = np.array([lo32], np.float32).view(np.int32)[0]
        parts.append(np.arange(a, b + 1, stride, dtype=np.int32).view(np.float32))
    if hi32 > 0:
        a = np.array([max(lo32, np.float32(0.0))], np.float32).view(np.int32)[0]
        b = np.array([hi32], np.float32).view(np.int32)[0]
        parts.append(np.arange(a, b + 1, stride, dtype=np.int32).view(np.float32))
    return np.concatenate(parts + [np.array([lo32, hi32], np.float32)])


def test_relative_error_within_proven_bound_on_a_dense_sweep():
    # every 101st float32 of the normal-result range (~2e7 inputs, every binade, both signs)
    x = _floats_between(-87.33, 88.37, 101)
    got = _exp(x).astype(np.float64)
    exact = np.exp(x.astype(np.float64))  # libm double exp: relative error ~1e-16, negligible here
    rel = np.abs(got - exact) / exact
    assert rel.max() <= EXP_REL_ERR, (rel.max(), x[np.argmax(rel)])


def test_relative_error_on_the_reduced_range_densely():
    # every 67th float32 in [-0.35, 0.35] (n = 0: the polynomial alone; ~3e7 inputs by bit pattern)
    x = _floats_between(-0.35, 0.35, 67)
    rel = np.abs(_exp(x) - np.exp(x.astype(np.float64))) / np.exp(x.astype(np.float64))
    assert rel.max() <= EXP_REL_ERR


def test_underflow_overflow_and_special_values():
    # x < -87.68: results below 2^-126.5 flush to 0 (absolute error < 2^-126)
    x = np.array([-np.inf, -1e30, -1e4, -103.0, -88.0, -87.7], np.float32)
    np.testing.assert_array_equal(_exp(x), 0.0)
    # subnormal results (-87.68 < x < -87.33): absolute error <= 2^-126 EXP_REL_ERR + half a subnormal ulp
    x = _floats_between(-87.68, -87.33, 3)
    err = np.abs(_exp(x) - np.exp(x.astype(np.float64)))
    assert err.max() <= TINY * EXP_REL_ERR + 2.0 ** -150
    # x > 88.38 (n = 128): +inf
    assert np.all(np.isinf(_exp(np.array([88.4, 89.0, 1e4, np.inf], np.float32))))
    assert _exp(np.array([0.0], np.float32))[0] == 1.0


def test_bound_is_the_documented_derivation():
    """Re-evaluate the first-order error sum of refimpl._fastmath's docstring; it must stay below EXP_REL_ERR."""
    import math

    u = 2.0 ** -24
    R = 0.3467  # >= |r| = |x - n ln2| <= ln2/2 plus the reduction's rounding
    c = [1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040]
    s, E = c[7], c[7]  # magnitude and running error (units of u) of the Horner partial value
    for k in range(6, -1, -1):
        prod = R * s
        s = c[k] + prod
        E = R * E + prod + s + (c[k] if k >= 3 else 0.0)  # product and sum roundings, rounded coefficient
    p_min = math.exp(-R)
    horner = E / p_min
    trunc = R ** 8 / math.factorial(8) * math.exp(R) / p_min / u
    reduction = R + 128 * abs(math.log(2.0) - 0.693359375) + 128 * 2.0 ** -37 / u
    total = horner + trunc + reduction
    assert total < 3.98
    assert total * u < EXP_REL_ERR == 4 * u / (1 - 4 * u)
    from oracles.selective import TRANSCENDENTAL_U
    assert EXP_REL_ERR <= TRANSCENDENTAL_U * u  # within what the selective-scan bounds allow an exp
