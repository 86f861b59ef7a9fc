"""Exact softmax attention, multi-head attention and sinusoidal positions against mpmath / float64 oracles."""
import math

import mpmath
import numpy as np
import pytest

from oracles.attention import keep_mask, sdpa_float64, sdpa_mpmath, sinusoidal_mpmath, softmax_attention_bound
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.positional import sinusoidal_positions
from refimpl.attention.softmax import (causal_mask, logsumexp, multi_head_attention, scaled_dot_product_attention,
                                       softmax)


def _inputs(seed, b=2, lq=5, lk=7, h=2, d=3, e=4, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, lq, h, d)) * scale).astype(dtype), \
        (rng.standard_normal((b, lk, h, d)) * scale).astype(dtype), rng.standard_normal((b, lk, h, e)).astype(dtype)


def test_alignment_masks_are_the_named_conventions():
    # top-left (torch is_causal): keep j <= i ; bottom-right (FlashAttention): keep j <= i + s - l
    tl = causal_mask(2, 4, "top_left")
    br = causal_mask(2, 4, "bottom_right")
    assert tl.tolist() == [[True, False, False, False], [True, True, False, False]]
    assert br.tolist() == [[True, True, True, False], [True, True, True, True]]
    # l > s: bottom-right leaves the first rows with no key at all
    assert causal_mask(3, 1, "bottom_right").tolist() == [[False], [False], [True]]
    assert np.array_equal(causal_mask(4, 4, "top_left"), causal_mask(4, 4, "bottom_right"))


@pytest.mark.parametrize("alignment", [None, "top_left", "bottom_right"])
@pytest.mark.parametrize("lq,lk", [(5, 7), (7, 5), (4, 4), (1, 6)])
def test_sdpa_matches_mpmath(alignment, lq, lk):
    q, k, v = _inputs(lq * 10 + lk, lq=lq, lk=lk)
    rng = np.random.default_rng(3)
    mask = rng.random((2, 2, lq, lk)) < 0.7
    keep = mask & keep_mask(lq, lk, alignment)[None, None]
    scale = 0.7
    o = scaled_dot_product_attention(q, k, v, scale=scale, causal=alignment is not None, alignment=alignment, mask=mask)
    exact = sdpa_mpmath(q, k, v, scale, keep)
    # bound: module doc of oracles.attention (first-order softmax error); mpmath oracle has no share
    assert_within(o, exact, softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None))


def test_sdpa_float32_matches_mpmath():
    q, k, v = _inputs(5, dtype=np.float32)
    o = scaled_dot_product_attention(q, k, v, causal=True, alignment="top_left")
    assert o.dtype == np.float32
    scale = 1 / math.sqrt(3)
    keep = keep_mask(5, 7, "top_left")[None, None]
    exact = sdpa_mpmath(q, k, v, np.float32(scale), keep)
    assert_within(o, exact, softmax_attention_bound(q, k, v, np.float32(scale), keep, np.float32, oracle_dtype=None))


def test_sdpa_large_scores_are_stable():
    # scores ~ 1e3: naive exp overflows; max subtraction does not
    q, k, v = _inputs(7, scale=20.0)
    o = scaled_dot_product_attention(q, k, v, scale=1.0)
    assert np.all(np.isfinite(o))
    exact = sdpa_mpmath(q, k, v, 1.0)
    assert_within(o, exact, softmax_attention_bound(q, k, v, 1.0, None, oracle_dtype=None))


def test_sdpa_large_case_against_float64_oracle():
    q, k, v = _inputs(11, b=1, lq=256, lk=256, h=2, d=32, e=16)
    o, p = scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)  # l = s: the alignments agree
    keep = keep_mask(256, 256, "bottom_right")[None, None]
    scale = 1 / math.sqrt(32)
    ref, pref = sdpa_float64(q, k, v, scale, keep)
    # the float64 oracle (logsumexp form) has its own rounding of the same depth: oracle_dtype float64
    assert_within(o, ref, softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=np.float64))
    np.testing.assert_array_equal(p[..., np.triu_indices(256, 1)[0], np.triu_indices(256, 1)[1]], 0.0)


def test_fully_masked_rows_are_zero():
    q, k, v = _inputs(2, lq=3, lk=4)
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    o, p, lse = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True, return_lse=True)
    assert np.all(o[:, 1] == 0) and np.all(p[:, :, 1] == 0) and np.all(np.isneginf(lse[:, :, 1]))
    assert np.all(np.isfinite(o))
    # additive -inf bias row
    bias = np.zeros((3, 4))
    bias[2] = -np.inf
    o2 = scaled_dot_product_attention(q, k, v, bias=bias)
    assert np.all(o2[:, 2] == 0) and np.all(np.isfinite(o2))
    assert_within(o2, sdpa_mpmath(q, k, v, 1 / math.sqrt(3), None, bias),
                  softmax_attention_bound(q, k, v, 1 / math.sqrt(3), None, oracle_dtype=None, bias=bias))
    # bottom-right with lq > lk: the first lq - lk queries see nothing
    q3, k3, v3 = _inputs(4, lq=5, lk=2)
    o3 = scaled_dot_product_attention(q3, k3, v3, causal=True, alignment="bottom_right")
    assert np.all(o3[:, :3] == 0) and np.all(o3[:, 3:] != 0)
    # no keys at all
    o4 = scaled_dot_product_attention(q3, k3[:, :0], v3[:, :0])
    assert o4.shape == (2, 5, 2, 4) and np.all(o4 == 0)


def test_additive_bias_matches_mpmath_and_lse():
    q, k, v = _inputs(8)
    rng = np.random.default_rng(1)
    bias = rng.standard_normal((2, 2, 5, 7))
    o, lse = scaled_dot_product_attention(q, k, v, scale=0.5, bias=bias, return_lse=True)
    exact = sdpa_mpmath(q, k, v, 0.5, None, bias)
    # bias adds one rounding per score: covered by the score term with |bias| folded in the magnitude
    assert_within(o, exact, softmax_attention_bound(q, k, v, 0.5, None, oracle_dtype=None, bias=bias))
    with mpmath.workdps(50):
        s = [mpmath.mpf(0.5) * mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(c)) for a, c in zip(q[0, 0, 0], k[0, j, 0]))
             + mpmath.mpf(float(bias[0, 0, 0, j])) for j in range(7)]
        lse_exact = float(mpmath.log(mpmath.fsum(mpmath.exp(x) for x in s)))
    # lse = m + log(sum exp(s - m)): depth d + 2 + L + 2 roundings relative to the |scores|
    mag = np.max(np.abs([float(x) for x in s])) + 1.0
    assert_within(lse[0, 0, 0], lse_exact, componentwise_bound(mag, 3 + 7 + 6, np.float64, oracle_dtype=None, what="lse"))


def test_multi_head_layout_with_exact_projections():
    # selection (0/1) projections are exact in floating point, so the mpmath oracle sees the same inputs
    rng = np.random.default_rng(0)
    b, l, m, H, d = 2, 6, 4, 2, 2
    x = rng.standard_normal((b, l, m))
    sel = np.zeros((H, m, d))
    sel[0, 0, 0] = sel[0, 1, 1] = 1.0  # head 0 reads features 0, 1
    sel[1, 2, 0] = sel[1, 3, 1] = 1.0  # head 1 reads features 2, 3
    W_O = np.eye(H * d)[:, ::-1].copy()  # reverses the concatenation: exposes the head-major layout
    out = multi_head_attention(x, x, sel, sel, sel, W_O, causal=True)
    qkv = np.stack([x[..., 0:2], x[..., 2:4]], axis=2)  # (b l h d)
    exact = sdpa_mpmath(qkv, qkv, qkv, 1 / math.sqrt(d), keep_mask(l, l, "top_left")[None, None])
    exact_concat = exact.reshape(b, l, H * d)[..., ::-1]
    bound = softmax_attention_bound(qkv, qkv, qkv, 1 / math.sqrt(d), keep_mask(l, l, "top_left")[None, None], oracle_dtype=None)
    assert_within(out, exact_concat, type(bound)(bound.values.reshape(b, l, H * d)[..., ::-1] * 1.0, bound.source + " (W_O is a permutation: exact)"))


def test_sinusoidal_positions_match_mpmath():
    for length, d, off in [(50, 16, 0), (20, 7, 3), (1, 1, 0), (0, 4, 0)]:
        pe = sinusoidal_positions(length, d, offset=off)
        exact = sinusoidal_mpmath(length, d, offset=off)
        pos = np.arange(off, off + length)[:, None]
        ang = pos / 10000.0 ** ((np.arange(d) - np.arange(d) % 2) / d)[None, :]
        # angle relative error: exponent 2i/d (u, amplified by ln(base) = 9.22 through pow), pow 2u, divide u;
        # then sin/cos 2u absolute: |err| <= u (|angle| (ln(base) + 3) + 2)
        assert_within(pe, exact, componentwise_bound(np.abs(ang) * (math.log(10000) + 3) + 2, 1, np.float64,
                                                     oracle_dtype=None, what="sinusoidal positions"))
    pe = sinusoidal_positions(3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(causal=True), ValueError, r"^alignment: required when causal=True and the query and key lengths differ \(l = 5, s = 7\)"),
    (dict(causal="top_left"), TypeError, "^causal: expected True or False, got str 'top_left'"),
    (dict(causal="False"), TypeError, "^causal: expected True or False, got str 'False'"),
    (dict(causal=1), TypeError, "^causal: expected True or False, got int 1"),
    (dict(causal=True, alignment="top-left"), ValueError, "^alignment: expected one of 'top_left', 'bottom_right'"),
    (dict(alignment="top_left"), ValueError, "^alignment: names the diagonal of a causal mask and needs causal=True"),
    (dict(return_weights="False"), TypeError, "^return_weights: expected True or False"),
    (dict(return_lse=1), TypeError, "^return_lse: expected True or False"),
    (dict(mask=np.ones((5, 7))), TypeError, "^mask: expected a boolean array"),
    (dict(mask=np.ones((5, 6), bool)), ValueError, r"^mask: expected shape \(5, 7\)"),
    (dict(mask=np.ones((1, 5, 7), bool)), ValueError, r"^mask: expected shape \(2, 5, 7\)"),  # no broadcasting
    (dict(scale=float("nan")), ValueError, "^scale: expected a finite real number"),
    (dict(scale="0.5"), TypeError, "^scale: expected a real number"),
    (dict(bias=np.full((5, 7), np.nan)), ValueError, "^bias: expected finite values or -inf"),
    (dict(view="materialized", backend="cuda"), ValueError,
     "^backend: .* has no 'cuda' backend for view 'materialized'"),
    (dict(view="tiled", backend="numba", mask=np.ones((5, 7), bool)), ValueError, "^mask: only the 'materialized' view"),
    (dict(view="tiled", backend="numba", return_lse=True), ValueError, "^return_lse: only the 'materialized' view"),
    (dict(view="flash"), ValueError, "^view: .* has views 'materialized', 'tiled'"),
])
def test_sdpa_bad_inputs(kwargs, exc, message):
    q, k, v = _inputs(0)
    with pytest.raises(exc, match=message):
        scaled_dot_product_attention(q, k, v, **kwargs)


def test_square_causal_needs_no_alignment_and_the_views_agree():
    # l = s: both alignments keep j <= i, so alignment may be omitted; the tiled kernel gives the same answer
    q, k, v = _inputs(9, lq=6, lk=6)
    o = scaled_dot_product_attention(q, k, v, causal=True)
    for alignment in ("top_left", "bottom_right"):
        np.testing.assert_array_equal(o, scaled_dot_product_attention(q, k, v, causal=True, alignment=alignment))
    exact = sdpa_mpmath(q, k, v, 1 / math.sqrt(3), keep_mask(6, 6, "top_left")[None, None])
    bound = softmax_attention_bound(q, k, v, 1 / math.sqrt(3), keep_mask(6, 6, "top_left")[None, None],
                                    oracle_dtype=None)
    assert_within(o, exact, bound)
    tiled = scaled_dot_product_attention(q, k, v, causal=True, view="tiled", backend="numba")
    assert_within(tiled, exact, bound)


def test_softmax_nan_row_is_nan_not_masked():
    # a row holding a NaN must not pass for a fully masked row (zeros): NaN propagates; -inf rows are masked
    s = np.array([[1.0, np.nan, 0.5], [-np.inf, -np.inf, -np.inf], [0.0, -np.inf, np.log(3.0)]])
    p = softmax(s)
    assert np.all(np.isnan(p[0]))
    assert np.array_equal(p[1], np.zeros(3))
    # [1, 0, 3] / 4: exp(log 3) rounds once, the sum of two terms and the divisions once each
    assert_within(p[2], [0.25, 0.0, 0.75], componentwise_bound(np.array([0.25, 0.0, 0.75]), 4, np.float64,
                                                               oracle_dtype=None, what="softmax of [0, -inf, log 3]"))
    lse = logsumexp(s)
    assert np.isnan(lse[0]) and np.isneginf(lse[1])
    # log 4 from exp(log 3) + 1: relative rounding of the sum (2u) through log's derivative 1/4, plus log itself
    assert_within(lse[2], math.log(4.0), componentwise_bound(2.0, 4, np.float64, oracle_dtype=None, what="log 4"))
    # +inf is not a finite score either: NaN, never a one-hot guess
    assert np.all(np.isnan(softmax(np.array([np.inf, 1.0]))))
    assert softmax(np.zeros((2, 0))).shape == (2, 0) and np.all(np.isneginf(logsumexp(np.zeros((2, 0)))))


@pytest.mark.parametrize("fn", [softmax, logsumexp])
def test_softmax_bad_axis_and_dtype(fn):
    with pytest.raises(ValueError, match=r"^axis: expected an axis of the 1-dimensional input \(-1 <= axis < 1\), got 5"):
        fn(np.ones(3), axis=5)
    with pytest.raises(TypeError, match="^axis: expected an integer"):
        fn(np.ones(3), axis=0.0)
    with pytest.raises(TypeError, match="^s: expected a floating-point dtype"):
        fn(np.ones(3, dtype=np.int64))


def test_sdpa_bad_arrays():
    q, k, v = _inputs(0)
    with pytest.raises(ValueError, match="k"):
        scaled_dot_product_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="v"):
        scaled_dot_product_attention(q, k, v[:, :3])
    qn = q.copy()
    qn[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="q"):
        scaled_dot_product_attention(qn, k, v)
    with pytest.raises(TypeError, match="q"):
        scaled_dot_product_attention(q.astype(np.int64), k, v)
    with pytest.raises(ValueError, match="d"):
        sinusoidal_positions(4, 0)
