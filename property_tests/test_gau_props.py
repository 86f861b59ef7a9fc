"""Property tests for GAU and FLASH's mixed-chunk attention: views and backends agree, the one-chunk identity,
causality (Hua et al. 2022)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.gau import gau_bound, gau_mpmath
from oracles.tolerance import Bound, assert_within
from refimpl.attention.gau import (FLASH_IMPLEMENTATIONS, GAU_IMPLEMENTATIONS, gated_attention_unit,
                                   mixed_chunk_attention)


@st.composite
def flash_cases(draw, long=False):
    """(x, weights, chunk, causal, bias, dtype): L = 0, 1, odd, chunk - 1, chunk, chunk + 1, a few chunks, long."""
    c = draw(st.integers(1, 6))
    l = draw(st.sampled_from([0, 1, 2, 3, 5, 7, max(c - 1, 0), c, c + 1, 3 * c + 1] + ([150, 257] if long else [])))
    b, d, p, n = (draw(st.integers(1, hi)) for hi in (2, 4, 3, 3))
    if long:
        c = draw(st.sampled_from([16, 31, 64, 129, 130]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    seed = draw(st.integers(0, 2**31 - 1))
    causal = draw(st.booleans())
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    W = (f(d, p), f(d, p), f(d, n), f(4, n), f(4, n), f(p, d))
    bias = f(2 * c - 1) if draw(st.booleans()) else None
    return f(b, l, d), W, c, causal, bias, dtype


def _up(*a):
    return [None if t is None else np.asarray(t, dtype=np.float64) for t in a]


def _pair_bound(x, W, c, causal, bias, dtype, **kw):
    # two implementations, each within the derived bound of the exact value: within twice of each other
    b = gau_bound(*_up(x, *W), chunk=c, causal=causal, bias=_up(bias)[0], dtype=dtype, **kw)
    return Bound(2 * b.values, "twice " + b.source)


@given(flash_cases())
def test_flash_views_and_backends_agree_small(case):
    x, W, c, causal, bias, dtype = case
    ref = mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias)
    bound = _pair_bound(x, W, c, causal, bias, dtype)
    for view, backend in FLASH_IMPLEMENTATIONS.pairs():
        o = mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias, view=view, backend=backend)
        assert o.dtype == dtype and o.shape == x.shape
        assert_within(o, ref, bound, context=f"{backend}/{view} vs numpy/chunked")


@given(flash_cases(long=True))
def test_flash_kernel_matches_reference_long(case):
    x, W, c, causal, bias, dtype = case
    ref = mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias)
    o = mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias, backend="numba")
    assert o.dtype == dtype
    assert_within(o, ref, _pair_bound(x, W, c, causal, bias, dtype), context="numba/chunked")


@given(flash_cases())
def test_flash_small_cases_against_the_oracle(case):
    x, W, c, causal, bias, dtype = case
    up = _up(x, *W, bias)
    exact = gau_mpmath(*up[:7], chunk=c, causal=causal, bias=up[7])
    bound = gau_bound(*up[:7], chunk=c, causal=causal, bias=up[7], dtype=dtype)
    assert_within(mixed_chunk_attention(x, *W, chunk=c, causal=causal, bias=bias, backend="numba"), exact, bound)


@given(flash_cases(long=True))
def test_gau_backends_agree(case):
    x, W, c, causal, bias, dtype = case
    l = x.shape[1]
    W = W[:3] + (W[3][:2], W[4][:2], W[5])
    bias = None if bias is None else np.resize(bias, max(2 * l - 1, 0)).astype(dtype)
    ref = gated_attention_unit(x, *W, causal=causal, bias=bias)
    bb = gau_bound(*_up(x, *W), causal=causal, bias=_up(bias)[0], dtype=dtype)
    for backend in GAU_IMPLEMENTATIONS.backends_for("quadratic"):
        o = gated_attention_unit(x, *W, causal=causal, bias=bias, backend=backend)
        assert o.dtype == dtype
        assert_within(o, ref, Bound(2 * bb.values, bb.source), context=backend)


@given(flash_cases())
def test_one_causal_chunk_is_gau_scaled_by_one_over_c(case):
    x, W, c, causal, bias, dtype = case
    l = x.shape[1]
    c = max(c, l)  # chunk >= L: the cross-chunk part vanishes
    bias = None if bias is None else np.resize(bias, 2 * c - 1).astype(dtype)
    gbias = None if bias is None else bias[c - l:c + l - 1] if l else bias[:0]
    g = gated_attention_unit(x, *W[:3], W[3][:2], W[4][:2], W[5], causal=True, scale=1.0 / c, bias=gbias)
    bound = _pair_bound(x, W, c, True, bias, dtype)
    for view, backend in FLASH_IMPLEMENTATIONS.pairs():
        o = mixed_chunk_attention(x, *W, chunk=c, causal=True, bias=bias, view=view, backend=backend)
        assert_within(o, g, bound, context=f"{backend}/{view}")


@given(flash_cases(), st.data())
def test_causal_output_at_t_ignores_later_inputs(case, data):
    x, W, c, causal, bias, dtype = case
    l = x.shape[1]
    if l < 2:
        return
    t = data.draw(st.integers(0, l - 2))
    x2 = x.copy()
    x2[:, t + 1:] = np.random.default_rng(t).standard_normal(x2[:, t + 1:].shape).astype(dtype) * 3
    for view, backend in FLASH_IMPLEMENTATIONS.pairs():
        a = mixed_chunk_attention(x, *W, chunk=c, causal=True, bias=bias, view=view, backend=backend)
        b = mixed_chunk_attention(x2, *W, chunk=c, causal=True, bias=bias, view=view, backend=backend)
        np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1], err_msg=f"{backend}/{view}")
    Wg = W[:3] + (W[3][:2], W[4][:2], W[5])
    for backend in GAU_IMPLEMENTATIONS.backends_for("quadratic"):
        a = gated_attention_unit(x, *Wg, causal=True, scale=0.5, backend=backend)
        b = gated_attention_unit(x2, *Wg, causal=True, scale=0.5, backend=backend)
        np.testing.assert_array_equal(a[:, :t + 1], b[:, :t + 1], err_msg=backend)
