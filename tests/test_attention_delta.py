"""The delta rule and the gated delta rule: recurrence, chunked WY form, Numba, against mpmath."""
import math

import mpmath
import numpy as np
import pytest

from oracles.attention import delta_rule_bound, delta_rule_mpmath
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.delta import reference as DR
from refimpl.attention import kernels_numba as KN

VIEWS = {
    "reference/recurrent": (lambda *a, **kw: DR.delta_recurrent(*a, **kw), "recurrent"),
    "reference/chunked": (lambda *a, **kw: DR.delta_chunked(*a, chunk=4, **kw), "chunked"),
    "numba/chunked": (lambda *a, **kw: KN.delta_chunked(*a, chunk=4, **kw), "chunked"),
}


def _case(seed, b=2, l=11, h=2, n=3, e=2, gated=False, positive_keys=False):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, h, n))
    k = rng.uniform(0.1, 1, (b, l, h, n)) if positive_keys else rng.standard_normal((b, l, h, n))
    if not positive_keys:
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, l, h, e))
    beta = rng.uniform(0, 1, (b, l, h))
    alpha = rng.uniform(0.6, 1.0, (b, l, h)) if gated else None
    S0 = rng.standard_normal((b, h, e, n))
    return q, k, v, beta, alpha, S0


@pytest.mark.parametrize("gated", [False, True])
def test_delta_views_match_mpmath(gated):
    q, k, v, beta, alpha, S0 = _case(1, gated=gated)
    o_ex, S_ex = delta_rule_mpmath(q, k, v, beta, alpha, S0)
    for name, (fn, view) in VIEWS.items():
        o, S = fn(q, k, v, beta, alpha=alpha, S0=S0, return_state=True)
        bound, bS = delta_rule_bound(q, k, v, beta, alpha, S0, view=view, chunk=4, state=True)
        assert_within(o, o_ex, bound, context=name)
        # final state: the same normwise argument, ||E_L||_F bounds every entry
        assert_within(S, S_ex, bS, context=name + " final state")


@pytest.mark.parametrize("key_norm", ["sum", "l2"])
def test_key_normalization(key_norm):
    q, k, v, beta, alpha, S0 = _case(2, positive_keys=True, gated=True)
    kn = DR.normalize_vectors(k, key_norm)
    with mpmath.workdps(50):
        for idx in [(0, 0, 0), (1, 5, 1), (0, 10, 1)]:
            km = [mpmath.mpf(float(c)) for c in k[idx]]
            den = mpmath.fsum(km) if key_norm == "sum" else mpmath.sqrt(mpmath.fsum(c * c for c in km))
            ex = np.array([float(c / den) for c in km])
            # sum of n positive terms (gamma_{n-1}) or a 2-norm (gamma_{n+1}), then a division: gamma_{n+2} |k_n|
            assert_within(kn[idx], ex, componentwise_bound(np.abs(ex), k.shape[-1] + 2, np.float64, oracle_dtype=None))
    o_ex, _ = delta_rule_mpmath(q, kn, v, beta, alpha, S0)
    for name, (fn, view) in VIEWS.items():
        o = fn(q, k, v, beta, alpha=alpha, S0=S0, key_norm=key_norm)
        # the option is exactly "normalize the keys first"
        np.testing.assert_array_equal(o, fn(q, kn, v, beta, alpha=alpha, S0=S0))
        assert_within(o, o_ex, delta_rule_bound(q, kn, v, beta, alpha, S0, view=view, chunk=4), context=name)


def test_plain_delta_rule_is_the_texts_retrieve_and_overwrite():
    # S_t = S_{t-1} + beta (v - v') k^T with v' = S_{t-1} k: with beta = 1 and a unit key, reading k right
    # after writing returns exactly v (up to rounding), whatever was stored under k before
    rng = np.random.default_rng(3)
    k = rng.standard_normal(4)
    k /= np.linalg.norm(k)
    K = np.stack([k, k])[None, :, None, :]
    V = np.array([[1.0, 2.0], [-3.0, 0.5]])[None, :, None, :]
    o, S = DR.delta_recurrent(K, K, V, np.ones((1, 2, 1)), return_state=True)
    assert_within(o[0, :, 0], V[0, :, 0], componentwise_bound(np.full((2, 2), 4.0), 3 * 4 + 8, np.float64,
                                                              what="two retrieve/overwrite steps, |v| <= 3, |k| = 1"))


def test_long_sequence_chunked_numba():
    q, k, v, beta, alpha, S0 = _case(4, b=1, l=150, h=1, n=4, e=3, gated=True)
    o_ex, _ = delta_rule_mpmath(q, k, v, beta, alpha, S0)
    for chunk in (16, 64):
        o = KN.delta_chunked(q, k, v, beta, alpha=alpha, S0=S0, chunk=chunk)
        assert_within(o, o_ex, delta_rule_bound(q, k, v, beta, alpha, S0, view="chunked", chunk=chunk))
        o = DR.delta_chunked(q, k, v, beta, alpha=alpha, S0=S0, chunk=chunk)
        assert_within(o, o_ex, delta_rule_bound(q, k, v, beta, alpha, S0, view="chunked", chunk=chunk))


def test_beta_from_inputs_is_a_stable_sigmoid():
    x = np.array([[[[1000.0, 0.0]], [[-1000.0, 0.0]], [[0.3, -0.2]]]])  # (b l h r)
    W = np.array([[1.0, 2.0]])
    beta = DR.beta_from_inputs(x, W)
    assert beta.shape == (1, 3, 1) and np.all(np.isfinite(beta))
    with mpmath.workdps(50):
        ex = [float(1 / (1 + mpmath.exp(-mpmath.mpf(z)))) for z in (1000.0, -1000.0, 0.3 - 0.4)]
    # z: a dot of 2 (gamma_2 |W||x|); sigmoid: exp 2u, add, divide: relative 4u + |z| gamma_2 sensitivity (|s'| <= s)
    mag = np.array(ex) * (1 + np.array([1000.0, 1000.0, 0.7]))
    assert_within(beta[0, :, 0], ex, componentwise_bound(mag, 6, np.float64, oracle_dtype=None, what="sigmoid"))


def test_delta_bad_inputs():
    q, k, v, beta, alpha, S0 = _case(0)
    with pytest.raises(ValueError, match="alpha"):
        DR.delta_recurrent(q, k, v, beta, alpha=np.full(beta.shape, 1.5))
    with pytest.raises(ValueError, match="alpha"):
        KN.delta_chunked(q, k, v, beta, alpha=np.zeros(beta.shape))
    with pytest.raises(ValueError, match="beta"):
        DR.delta_chunked(q, k, v, beta[:, :3])
    with pytest.raises(ValueError, match="k_norm"):
        DR.delta_recurrent(q, k, v, beta, key_norm="max")
    kz = k.copy()
    kz[0, 0, 0] = [1.0, -1.0, 0.0]
    with pytest.raises(ValueError, match="sum"):
        DR.delta_recurrent(q, kz, v, beta, key_norm="sum")
    with pytest.raises(ValueError, match="S0"):
        DR.delta_chunked(q, k, v, beta, S0=np.zeros((2, 2, 3, 2)))
    with pytest.raises(ValueError, match="chunk"):
        KN.delta_chunked(q, k, v, beta, chunk=0)
