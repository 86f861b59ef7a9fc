"""The tiled online-softmax Numba kernel against the literal softmax reference (float64) and mpmath-free
derived bounds: float64 within the componentwise softmax bound, float32 by the same-dtype baseline rule."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles.tolerance import Bound, assert_within, baseline_bound, componentwise_bound
from refimpl._fastmath import EXP_REL_ERR
from refimpl.attention.softmax import scaled_dot_product_attention
from refimpl.attention.softmax.numba import flash_attention


def _inputs(seed, b, lq, lk, h, d, e, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, lq, h, d)).astype(dtype), rng.standard_normal((b, lk, h, d)).astype(dtype),
            rng.standard_normal((b, lk, h, e)).astype(dtype))


@given(seed=st.integers(0, 2**31), lq=st.sampled_from([0, 1, 2, 5, 17, 64, 65, 130]),
       lk=st.sampled_from([0, 1, 3, 17, 64, 65, 130]), d=st.sampled_from([1, 4, 16]),
       alignment=st.sampled_from([None, "top_left", "bottom_right"]), block=st.sampled_from([1, 7, 16, 64]))
def test_flash_matches_reference(seed, lq, lk, d, alignment, block):
    q, k, v = _inputs(seed, 2, lq, lk, 2, d, 3)
    causal = dict(causal=alignment is not None, alignment=alignment)
    ref = scaled_dot_product_attention(q, k, v, **causal)
    out = flash_attention(q, k, v, block_q=block, block_k=block, **causal)
    # Each output is sum_j p_j v_j with p = softmax(scores): the scores (depth d + 1 with the scale), the
    # exp (<= 1 ulp + the max subtraction), the running rescaling (one multiply per key block, <= lk),
    # the sums over lk keys and the final division: depth d + 2 lk + 4 relative to sum_j p_j |v_j|,
    # for both the kernel and the float64 reference; an error in a score shifts p by |d score| * p.
    # The scores' own error (gamma_{d+1} |q||k| scale) enters through exp as a relative error of p.
    scale = 1.0 / np.sqrt(d)
    score_err = componentwise_bound(np.einsum("bihd,bjhd->bhij", np.abs(q), np.abs(k)) * scale, d + 1, np.float64)
    w = scaled_dot_product_attention(q, k, v, return_weights=True, **causal)[1] if lq and lk else None
    if w is None:
        np.testing.assert_array_equal(out, ref)
        return
    mag = np.einsum("bhij,bjhe->bihe", w, np.abs(v))
    # first order: |d p_j| <= p_j (2 max|d s| + gamma_{2lk+4}), so |d y| <= (2 max|ds| + gamma) sum p_j|v_j|
    ds = np.max(np.asarray(score_err.values), axis=-1)  # (b h i)
    rel = 2 * np.transpose(ds, (0, 2, 1))[..., None]
    b_out = componentwise_bound(mag, d + 2 * lk + 4, np.float64)
    from oracles.tolerance import Bound
    assert_within(out, ref, b_out + Bound(rel * mag * 2, "score rounding through exp, both sides"))


def test_flash_float32_within_baseline():
    q, k, v = _inputs(1, 1, 300, 300, 2, 32, 32)
    ref64 = scaled_dot_product_attention(q, k, v, causal=True)
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    ref32 = scaled_dot_product_attention(q32, k32, v32, causal=True)
    out = scaled_dot_product_attention(q32, k32, v32, causal=True, view="tiled", backend="numba")
    assert out.dtype == np.float32
    # the kernel's float32 exp (refimpl._fastmath) has relative error <= EXP_REL_ERR where the reference's
    # np.exp has <= 1 ulp: each weight p_j = e_j / sum_i e_i then carries at most 2 EXP_REL_ERR more
    # (numerator and normalizer), so y = sum_j p_j v_j moves by <= 2 EXP_REL_ERR sum_j p_j |v_j| more
    w = scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)[1]
    mag = np.einsum("bhij,bjhe->bihe", w, np.abs(v))
    exp_term = Bound(2 * EXP_REL_ERR * mag, "float32 polynomial exp: 2 EXP_REL_ERR sum_j p_j |v_j|")
    assert_within(out, ref64, baseline_bound(ref32, ref64, np.float32) + exp_term)


def test_flash_fully_masked_rows_are_zero():
    q, k, v = _inputs(2, 1, 5, 2, 1, 4, 3)
    out = flash_attention(q, k, v, causal=True, alignment="bottom_right", block_q=2, block_k=1)
    ref = scaled_dot_product_attention(q, k, v, causal=True, alignment="bottom_right")
    np.testing.assert_array_equal(out[:, :3], 0.0)
    # the other rows: kernel and reference each within the softmax bound of oracles.attention (module doc)
    from oracles.attention import keep_mask, softmax_attention_bound

    b = softmax_attention_bound(q, k, v, 1.0 / np.sqrt(q.shape[-1]), keep_mask(5, 2, "bottom_right"))
    assert_within(out, ref, b + b)


def test_flash_bad_inputs():
    q, k, v = _inputs(3, 1, 4, 4, 1, 2, 2)
    with pytest.raises(TypeError, match="^causal: expected True or False, got str 'top_left'"):
        flash_attention(q, k, v, causal="top_left")
    with pytest.raises(ValueError, match="^alignment: required when causal=True"):
        flash_attention(q, k[:, :3], v[:, :3], causal=True)
    with pytest.raises(ValueError, match=r"^k: expected shape \(1, \*, 1, 2\)"):
        flash_attention(q, k[..., :1], v)
    with pytest.raises(ValueError, match="block_q: expected an integer >= 1, got 0"):
        flash_attention(q, k, v, block_q=0)
