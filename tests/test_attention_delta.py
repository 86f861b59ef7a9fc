"""The delta rule and the gated delta rule: recurrence, chunked WY form, Numba, against mpmath."""
import math

import mpmath
import numpy as np
import pytest

from oracles.attention import delta_rule_bound, delta_rule_mpmath
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.delta import IMPLEMENTATIONS, beta_from_inputs, delta_rule, normalize_vectors
from refimpl.attention.delta import reference as DR
from refimpl.attention.delta.numba import delta_chunked

# every (view, backend) of the entry point, chunk 4
VIEWS = {f"{backend}/{view}": (lambda *a, _v=view, _b=backend, **kw: delta_rule(*a, view=_v, backend=_b, chunk=4, **kw),
                               view)
         for view, backend in IMPLEMENTATIONS.pairs() if backend != "cuda"}  # cuda: test_cuda_attention


def test_every_view_and_backend_is_listed():
    assert sorted(VIEWS) == ["numba/chunked", "numpy/chunked", "numpy/recurrent"]


def _case(seed, b=2, l=11, h=2, n=3, e=2, gated=False, positive_keys=False):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, h, n))
    k = rng.uniform(0.1, 1, (b, l, h, n)) if positive_keys else rng.standard_normal((b, l, h, n))
    if not positive_keys:
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, l, h, e))
    beta = rng.uniform(0, 1, (b, l, h))
    decay = rng.uniform(0.6, 1.0, (b, l, h)) if gated else None
    S0 = rng.standard_normal((b, h, e, n))
    return q, k, v, beta, decay, S0


@pytest.mark.parametrize("gated", [False, True])
def test_delta_views_match_mpmath(gated):
    q, k, v, beta, decay, S0 = _case(1, gated=gated)
    o_ex, S_ex = delta_rule_mpmath(q, k, v, beta, decay, S0)
    for name, (fn, view) in VIEWS.items():
        o, S = fn(q, k, v, beta, decay=decay, initial_state=S0, return_final_state=True)
        bound, bS = delta_rule_bound(q, k, v, beta, decay, S0, view=view, chunk=4, state=True)
        assert_within(o, o_ex, bound, context=name)
        # final state: the same normwise argument, ||E_L||_F bounds every entry
        assert_within(S, S_ex, bS, context=name + " final state")


@pytest.mark.parametrize("key_norm", ["sum", "l2"])
def test_key_normalization(key_norm):
    q, k, v, beta, decay, S0 = _case(2, positive_keys=True, gated=True)
    kn = normalize_vectors(k, key_norm)
    with mpmath.workdps(50):
        for idx in [(0, 0, 0), (1, 5, 1), (0, 10, 1)]:
            km = [mpmath.mpf(float(c)) for c in k[idx]]
            den = mpmath.fsum(km) if key_norm == "sum" else mpmath.sqrt(mpmath.fsum(c * c for c in km))
            ex = np.array([float(c / den) for c in km])
            # sum of n positive terms (gamma_{n-1}) or a 2-norm (gamma_{n+1}), then a division: gamma_{n+2} |k_n|
            assert_within(kn[idx], ex, componentwise_bound(np.abs(ex), k.shape[-1] + 2, np.float64, oracle_dtype=None))
    o_ex, _ = delta_rule_mpmath(q, kn, v, beta, decay, S0)
    for name, (fn, view) in VIEWS.items():
        o = fn(q, k, v, beta, decay=decay, initial_state=S0, key_norm=key_norm)
        # the option is exactly "normalize the keys first"
        np.testing.assert_array_equal(o, fn(q, kn, v, beta, decay=decay, initial_state=S0))
        assert_within(o, o_ex, delta_rule_bound(q, kn, v, beta, decay, S0, view=view, chunk=4), context=name)
        # query_norm is the same operation on q; scale multiplies the normalized query (exact: a power of 2)
        qn = normalize_vectors(q, "l2", "query_norm", "q")
        np.testing.assert_array_equal(fn(q, kn, v, beta, decay=decay, initial_state=S0, query_norm="l2", scale=0.5),
                                      fn(qn * 0.5, kn, v, beta, decay=decay, initial_state=S0))


def test_plain_delta_rule_is_the_texts_retrieve_and_overwrite():
    # S_t = S_{t-1} + beta (v - v') k^T with v' = S_{t-1} k: with beta = 1 and a unit key, reading k right
    # after writing returns exactly v (up to rounding), whatever was stored under k before
    rng = np.random.default_rng(3)
    k = rng.standard_normal(4)
    k /= np.linalg.norm(k)
    K = np.stack([k, k])[None, :, None, :]
    V = np.array([[1.0, 2.0], [-3.0, 0.5]])[None, :, None, :]
    o, S = delta_rule(K, K, V, np.ones((1, 2, 1)), return_final_state=True)
    assert_within(o[0, :, 0], V[0, :, 0], componentwise_bound(np.full((2, 2), 4.0), 3 * 4 + 8, np.float64,
                                                              what="two retrieve/overwrite steps, |v| <= 3, |k| = 1"))


def test_long_sequence_chunked_numba():
    q, k, v, beta, decay, S0 = _case(4, b=1, l=150, h=1, n=4, e=3, gated=True)
    o_ex, _ = delta_rule_mpmath(q, k, v, beta, decay, S0)
    for chunk in (16, 64):
        for backend in ("numba", "numpy"):
            o = delta_rule(q, k, v, beta, decay=decay, initial_state=S0, view="chunked", backend=backend, chunk=chunk)
            assert_within(o, o_ex, delta_rule_bound(q, k, v, beta, decay, S0, view="chunked", chunk=chunk),
                          context=backend)


def test_beta_from_inputs_is_a_stable_sigmoid():
    x = np.array([[[[1000.0, 0.0]], [[-1000.0, 0.0]], [[0.3, -0.2]]]])  # (b l h r)
    W = np.array([[1.0, 2.0]])
    beta = beta_from_inputs(x, W)
    assert beta.shape == (1, 3, 1) and np.all(np.isfinite(beta))
    with mpmath.workdps(50):
        ex = [float(1 / (1 + mpmath.exp(-mpmath.mpf(z)))) for z in (1000.0, -1000.0, 0.3 - 0.4)]
    # z: a dot of 2 (gamma_2 |W||x|); sigmoid: exp 2u, add, divide: relative 4u + |z| gamma_2 sensitivity (|s'| <= s)
    mag = np.array(ex) * (1 + np.array([1000.0, 1000.0, 0.7]))
    assert_within(beta[0, :, 0], ex, componentwise_bound(mag, 6, np.float64, oracle_dtype=None, what="sigmoid"))


@pytest.mark.parametrize("fn", [DR.recurrent, DR.chunked, delta_chunked, delta_rule])
def test_delta_bad_inputs(fn):
    q, k, v, beta, decay, S0 = _case(0)
    with pytest.raises(ValueError, match=r"^decay: expected values in \(0, 1\], got 1.5"):
        fn(q, k, v, beta, decay=np.full(beta.shape, 1.5))
    with pytest.raises(ValueError, match=r"^decay: expected values in \(0, 1\], got 0.0"):
        fn(q, k, v, beta, decay=np.zeros(beta.shape))
    with pytest.raises(ValueError, match=r"^beta: expected shape \(2, 11, 2\)"):
        fn(q, k, v, beta[:, :3])
    with pytest.raises(ValueError, match="^key_norm: expected one of None, 'sum', 'l2', got 'max'"):
        fn(q, k, v, beta, key_norm="max")
    with pytest.raises(ValueError, match="^query_norm: expected one of None, 'sum', 'l2', got 'max'"):
        fn(q, k, v, beta, query_norm="max")
    kz = k.copy()
    kz[0, 0, 0] = [1.0, -1.0, 0.0]
    with pytest.raises(ValueError, match="^k: key_norm='sum' divides by zero at index \\(0, 0, 0\\)"):
        fn(q, kz, v, beta, key_norm="sum")
    with pytest.raises(ValueError, match=r"^initial_state: expected shape \(2, 2, 2, 3\)"):
        fn(q, k, v, beta, initial_state=np.zeros((2, 2, 3, 2)))  # (b h n p) is not the VxK layout
    with pytest.raises(TypeError, match="^return_final_state: expected True or False, got str 'True'"):
        fn(q, k, v, beta, return_final_state="True")
    with pytest.raises(TypeError, match="^scale: expected a real number"):
        fn(q, k, v, beta, scale=None)
    with pytest.raises(TypeError, match="^beta: expected a floating-point dtype"):
        fn(q, k, v, beta.astype(np.int64))
    if fn is not DR.recurrent:
        with pytest.raises(ValueError, match="^chunk: expected an integer >= 1, got 0"):
            fn(q, k, v, beta, chunk=0) if fn is not delta_rule else fn(q, k, v, beta, view="chunked", chunk=0)


def test_delta_rule_dispatch_errors():
    q, k, v, beta, decay, S0 = _case(0)
    with pytest.raises(ValueError, match="^backend: refimpl.attention.delta_rule has no 'numba' backend for view "
                                         "'recurrent'"):
        delta_rule(q, k, v, beta, backend="numba")
    with pytest.raises(ValueError, match="^view: refimpl.attention.delta_rule has views 'recurrent', 'chunked'"):
        delta_rule(q, k, v, beta, view="quadratic")


def test_empty_sequence_returns_the_initial_state():
    q, k, v, beta, decay, S0 = _case(5, l=0, gated=True)
    for name, (fn, _) in VIEWS.items():
        o, S = fn(q, k, v, beta, decay=decay, initial_state=S0, return_final_state=True)
        assert o.shape == (2, 0, 2, 2), name
        np.testing.assert_array_equal(S, S0)
        S[...] = 0  # a copy, never the caller's array
        assert np.any(S0 != 0)
