"""Worked examples, oracle comparisons, the paper's claims and bad inputs for GAU and FLASH (Hua et al. 2022)."""
import math

import numpy as np
import pytest

from oracles.gau import gau_bound, gau_fsum, gau_mpmath
from oracles.tolerance import assert_within
from refimpl.attention.gau import (FLASH_IMPLEMENTATIONS, GAU_IMPLEMENTATIONS, gated_attention_unit,
                                   mixed_chunk_attention)


def _weights(rng, d, p, n, rows, dtype=np.float64):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(d, p), f(d, p), f(d, n), f(rows, n), f(rows, n), f(p, d)


def _silu(y):
    return y / (1 + math.exp(-y))


def test_worked_example_by_hand():
    # d = p = n = 1, every weight 1, gamma = 1, beta = 0: u = v = z = q = k = silu(x)
    x = np.array([[[1.0], [2.0], [-0.5]]])
    one = np.ones((1, 1))
    g2, b2 = np.ones((2, 1)), np.zeros((2, 1))
    z = [_silu(t) for t in (1.0, 2.0, -0.5)]
    # GAU, non-causal, 1/L = 1/3: o_i = z_i * sum_j relu(z_i z_j / 3)^2 z_j
    want = [z[i] * sum(max(z[i] * z[j] / 3, 0.0) ** 2 * z[j] for j in range(3)) for i in range(3)]
    for backend in GAU_IMPLEMENTATIONS.backends_for("quadratic"):
        o = gated_attention_unit(x, one, one, one, g2, b2, one, backend=backend)
        np.testing.assert_allclose(o[0, :, 0], want, rtol=1e-14, atol=0)
    # FLASH, causal, c = 2, all four rows alike: chunk {0, 1} then {2};
    # o_2 = z_2 (relu(z_2^2 / 2)^2 z_2 + z_2 (z_0 z_0 + z_1 z_1) / 2)   (the linear part's state over chunk 0)
    g4, b4 = np.ones((4, 1)), np.zeros((4, 1))
    o = mixed_chunk_attention(x, one, one, one, g4, b4, one, chunk=2, causal=True)
    want2 = z[2] * (max(z[2] * z[2] / 2, 0) ** 2 * z[2] + z[2] * (z[0] * z[0] + z[1] * z[1]) / 2)
    want0 = z[0] * (z[0] * z[0] / 2) ** 2 * z[0]
    np.testing.assert_allclose(o[0, [0, 2], 0], [want0, want2], rtol=1e-14)


CASES = [(0, 3, False), (1, 2, True), (5, 2, False), (5, 2, True), (7, 3, True), (6, 4, False), (4, 9, True)]


@pytest.mark.parametrize("l,c,causal", CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_flash_views_against_mpmath(l, c, causal, with_bias):
    rng = np.random.default_rng([l, c, causal, with_bias])
    x = rng.standard_normal((2, l, 3))
    W = _weights(rng, 3, 2, 3, 4)
    bias = rng.standard_normal(2 * c - 1) if with_bias else None
    exact = gau_mpmath(x, *W, chunk=c, causal=causal, bias=bias)
    bound = gau_bound(x, *W, chunk=c, causal=causal, bias=bias)
    for view, backend in FLASH_IMPLEMENTATIONS.pairs():
        o = mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias, view=view, backend=backend)
        assert_within(o, exact, bound, context=f"{backend}/{view}")


@pytest.mark.parametrize("l,causal", [(0, True), (1, False), (6, True), (7, False)])
def test_gau_against_mpmath(l, causal):
    rng = np.random.default_rng([l, causal])
    x = rng.standard_normal((1, l, 3))
    W = _weights(rng, 3, 3, 2, 2)
    bias = rng.standard_normal(max(2 * l - 1, 0))
    for b in (None, bias):
        exact = gau_mpmath(x, *W, causal=causal, bias=b)
        bound = gau_bound(x, *W, causal=causal, bias=b)
        for backend in GAU_IMPLEMENTATIONS.backends_for("quadratic"):
            assert_within(gated_attention_unit(x, *W, causal=causal, bias=b, backend=backend), exact, bound,
                          context=backend)


def test_float32_stays_float32_and_meets_its_bound():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 9, 4)).astype(np.float32)
    W = _weights(rng, 4, 3, 2, 4, np.float32)
    up = [np.asarray(a, dtype=np.float64) for a in (x, *W)]
    for causal in (False, True):
        exact = gau_mpmath(*up, chunk=4, causal=causal)
        bound = gau_bound(*up, chunk=4, causal=causal, dtype=np.float32)
        for view, backend in FLASH_IMPLEMENTATIONS.pairs():
            o = mixed_chunk_attention(x, *W, chunk=4, causal=causal, view=view, backend=backend)
            assert o.dtype == np.float32
            assert_within(o, exact, bound, context=f"{backend}/{view}")
    # one float64 input: the whole computation is float64
    assert mixed_chunk_attention(x, *W[:-1], W[-1].astype(np.float64), chunk=4).dtype == np.float64


def test_long_sequence_fsum_oracle():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 40, 4))
    W = _weights(rng, 4, 3, 3, 4)
    for causal in (False, True):
        exact = gau_fsum(x, *W, chunk=8, causal=causal)
        bound = gau_bound(x, *W, chunk=8, causal=causal, oracle_dtype=np.float64)
        for view, backend in FLASH_IMPLEMENTATIONS.pairs():
            assert_within(mixed_chunk_attention(x, *W, chunk=8, causal=causal, view=view, backend=backend), exact,
                          bound, context=f"{backend}/{view}")


def test_paper_claim_one_chunk_is_gau_with_chunk_scaling():
    # causal, c >= L: no previous chunk, the unit is GAU with its quadratic scores scaled by 1/c
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 3))
    Wu, Wv, Wz, g, b, Wo = _weights(rng, 3, 2, 2, 4)
    for c in (6, 10):
        f = mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=c, causal=True)
        q = gated_attention_unit(x, Wu, Wv, Wz, g[:2], b[:2], Wo, causal=True, scale=1.0 / c)
        np.testing.assert_array_equal(f, q)


def test_paper_claim_linear_rows_unused_when_one_chunk_causal():
    # with one causal chunk the linear pair (rows lin_q, lin_k) has no keys to see
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 5, 3))
    Wu, Wv, Wz, g, b, Wo = _weights(rng, 3, 2, 2, 4)
    g2, b2 = g.copy(), b.copy()
    g2[2:], b2[2:] = 7.0, -3.0
    for backend in ("numpy", "numba"):
        np.testing.assert_array_equal(mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=5, causal=True,
                                                            backend=backend),
                                      mixed_chunk_attention(x, Wu, Wv, Wz, g2, b2, Wo, chunk=5, causal=True,
                                                            backend=backend))


def test_short_last_chunk_scaled_by_c():
    # the paper pads to a multiple of c: a short last chunk sees 1/c, the same as zero-contribution padding
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 5, 3))
    W = _weights(rng, 3, 2, 2, 4)
    own = gau_mpmath(x, *W, chunk=3, causal=True, last_chunk="length")
    o = mixed_chunk_attention(x, *W, chunk=3, causal=True)
    exact = gau_mpmath(x, *W, chunk=3, causal=True)
    assert_within(o, exact, gau_bound(x, *W, chunk=3, causal=True))
    assert np.abs(o[0, 3:] - own[0, 3:]).max() > 1e-6  # the other choice is visibly different


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 4, 3))
    Wu, Wv, Wz, g, b, Wo = _weights(rng, 3, 2, 2, 4)
    with pytest.raises(ValueError, match="gamma"):
        gated_attention_unit(x, Wu, Wv, Wz, g, b[:2], Wo)  # GAU takes 2 rows
    with pytest.raises(ValueError, match="gamma"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g[:2], b, Wo, chunk=2)  # FLASH takes 4
    with pytest.raises(ValueError, match="chunk"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=0)
    with pytest.raises(TypeError, match="chunk"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=2.0)
    with pytest.raises(TypeError, match="causal"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=2, causal="True")
    with pytest.raises(ValueError, match="bias"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=2, bias=np.zeros(4))
    with pytest.raises(ValueError, match="W_o"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo.T, chunk=2)
    xn = x.copy()
    xn[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="x"):
        mixed_chunk_attention(xn, Wu, Wv, Wz, g, b, Wo, chunk=2)
    with pytest.raises(ValueError, match="view"):
        mixed_chunk_attention(x, Wu, Wv, Wz, g, b, Wo, chunk=2, view="quadratic")
    with pytest.raises(ValueError, match="backend"):
        gated_attention_unit(x, Wu, Wv, Wz, g[:2], b[:2], Wo, backend="cuda")


def _lucidrains_order_candidate(x, W_u, W_v, W_z, gamma, beta, W_o, *, group_size, causal):
    # a FLASH written with FLASH-pytorch's row order: quad_q, lin_q, quad_k, lin_k
    order = [0, 2, 1, 3]
    return mixed_chunk_attention(x, W_u, W_v, W_z, gamma[order], beta[order], W_o, chunk=group_size, causal=causal)


def test_verify_flash_pytorch_spelling_and_refimpl_adapters():
    from oracles.verify import verify

    conv = {"chunk": 3, "causal": True, "use_bias": False}
    rep = verify("attention.gau", _lucidrains_order_candidate, adapter="flash_pytorch", conventions=conv,
                 kinds=("edge",), diagnose=False)
    assert rep.passed, rep.deviations()[:3]
    # the same kernel read canonically (rows as the paper orders them) does not conform
    wrong = lambda x, *w: _lucidrains_order_candidate(x, *w[:6], group_size=3, causal=True)  # noqa: E731
    rep = verify("attention.gau", wrong, conventions=conv, kinds=("golden", "edge"), probes=False, diagnose=False)
    assert not rep.passed
    rep = verify("attention.gau", mixed_chunk_attention, adapter="refimpl.mixed_chunk_attention",
                 conventions={"chunk": 4, "causal": False}, kinds=("edge",), dtype="float32", probes=False)
    assert rep.passed, rep.deviations()[:3]


def test_verify_diagnosis_names_the_own_length_last_chunk():
    # a FLASH that scales its short last chunk by its own length conforms under last_chunk='length'
    from oracles.verify import verify

    from oracles.mutants.gau import _own

    rep = verify("attention.gau", _own, conventions={"chunk": 3, "causal": True, "last_chunk": "length"},
                 kinds=("golden", "edge"), probes=False, diagnose=False)
    assert rep.passed, rep.deviations()[:3]
