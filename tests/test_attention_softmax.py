"""Exact softmax attention, multi-head attention and sinusoidal positions against mpmath / float64 oracles."""
import math

import mpmath
import numpy as np
import pytest

from oracles.attention import keep_mask, sdpa_float64, sdpa_mpmath, sinusoidal_mpmath, softmax_attention_bound
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.positional.reference import sinusoidal_positions
from refimpl.attention.softmax.reference import causal_mask, multi_head_attention, scaled_dot_product_attention


def _inputs(seed, b=2, lq=5, lk=7, h=2, d=3, e=4, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, lq, h, d)) * scale).astype(dtype), \
        (rng.standard_normal((b, lk, h, d)) * scale).astype(dtype), rng.standard_normal((b, lk, h, e)).astype(dtype)


def test_alignment_masks_are_the_named_conventions():
    # top-left (torch is_causal): keep j <= i ; bottom-right (FlashAttention): keep j <= i + lk - lq
    tl = causal_mask(2, 4, "top_left")
    br = causal_mask(2, 4, "bottom_right")
    assert tl.tolist() == [[True, False, False, False], [True, True, False, False]]
    assert br.tolist() == [[True, True, True, False], [True, True, True, True]]
    # lq > lk: bottom-right leaves the first rows with no key at all
    assert causal_mask(3, 1, "bottom_right").tolist() == [[False], [False], [True]]
    assert np.array_equal(causal_mask(4, 4, "top_left"), causal_mask(4, 4, "bottom_right"))


@pytest.mark.parametrize("causal", [None, "top_left", "bottom_right"])
@pytest.mark.parametrize("lq,lk", [(5, 7), (7, 5), (4, 4), (1, 6)])
def test_sdpa_matches_mpmath(causal, lq, lk):
    q, k, v = _inputs(lq * 10 + lk, lq=lq, lk=lk)
    rng = np.random.default_rng(3)
    mask = rng.random((2, 2, lq, lk)) < 0.7
    keep = mask & keep_mask(lq, lk, causal)[None, None]
    scale = 0.7
    o = scaled_dot_product_attention(q, k, v, scale=scale, causal=causal, mask=mask)
    exact = sdpa_mpmath(q, k, v, scale, keep)
    # bound: module doc of oracles.attention (first-order softmax error); mpmath oracle has no share
    assert_within(o, exact, softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None))


def test_sdpa_float32_matches_mpmath():
    q, k, v = _inputs(5, dtype=np.float32)
    o = scaled_dot_product_attention(q, k, v, causal="top_left")
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
    o, p = scaled_dot_product_attention(q, k, v, causal="bottom_right", return_weights=True)
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
    o3 = scaled_dot_product_attention(q3, k3, v3, causal="bottom_right")
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
    out = multi_head_attention(x, x, sel, sel, sel, W_O, causal="top_left")
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


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(causal=True), TypeError, "causal"),
    (dict(causal="top-left"), ValueError, "causal"),
    (dict(mask=np.ones((5, 7))), TypeError, "mask"),
    (dict(mask=np.ones((5, 6), bool)), ValueError, "mask"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(bias=np.full((5, 7), np.nan)), ValueError, "bias"),
])
def test_sdpa_bad_inputs(kwargs, exc, word):
    q, k, v = _inputs(0)
    with pytest.raises(exc, match=word):
        scaled_dot_product_attention(q, k, v, **kwargs)


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
