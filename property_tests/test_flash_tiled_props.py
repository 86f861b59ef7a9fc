"""FlashAttention's tiling, literal NumPy (``refimpl.attention.softmax.reference.tiled``, Algorithm 1 of Dao et al.
2022): tiled == materialized for every tile size ``1 .. L+1``, any ``L`` (0, 1, odd, not a multiple of the tile),
both causal alignments and none, ``l != s``; and tiled numpy == tiled numba (the kernel).

Bounds (derived, both sides float64): the softmax-attention bound of :func:`oracles.attention.softmax_attention_bound`
(the candidate's share and, with ``oracle_dtype=float64``, the materialized side's), plus, for each side that tiles
its keys, :func:`oracles.linformer.online_softmax_term` over its ``T_c = ceil(s / block_k)`` key tiles (the
rescaling of the running sum and output).
"""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.attention import keep_mask, sdpa_float64, sdpa_mpmath, softmax_attention_bound
from oracles.linformer import online_softmax_term
from oracles.tolerance import Bound, assert_within
from refimpl.attention.softmax import scaled_dot_product_attention
from refimpl.attention.softmax.reference import materialized, tiled


@st.composite
def tiled_cases(draw, dtype=np.float64):
    l = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 13]))
    s = draw(st.sampled_from([0, 1, 3, 4, 7, 12]) | st.just(l))
    alignment = draw(st.sampled_from([None, "top_left", "bottom_right"]))
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n, p = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    block_q, block_k = draw(st.integers(1, l + 1)), draw(st.integers(1, s + 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.standard_normal((b, l, h, n)) * 1.5
    k = rng.standard_normal((b, s, h, n)) * 1.5
    v = rng.standard_normal((b, s, h, p))
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    return q, k, v, alignment, block_q, block_k


def _causal(alignment):
    return dict(causal=alignment is not None, alignment=alignment)


def _tiling_terms(q, k, v, scale, alignment, tiles, dtype=np.float64):
    """``sum_j p_ij |v_j|`` and the spread ``max_j |s_ij - m_i|`` in float64, then the online-softmax term."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    l, s = q.shape[1], k.shape[1]
    keep = keep_mask(l, s, alignment)[None, None]
    _, P = sdpa_float64(q, k, v, scale, keep)
    pv = np.einsum("bhij,bjhe->bihe", P, np.abs(v))
    sc = np.where(keep, scale * np.einsum("bihd,bjhd->bhij", q, k), -np.inf)
    if s:
        m = np.max(sc, axis=-1, keepdims=True)
        spread = np.max(np.where(keep, np.abs(sc - np.where(np.isfinite(m), m, 0.0)), 0.0), axis=-1)
    else:
        spread = np.zeros(sc.shape[:-1])
    return online_softmax_term(pv, spread, tiles, dtype), keep


@given(tiled_cases())
def test_tiled_numpy_equals_materialized_every_tile_size(case):
    q, k, v, alignment, block_q, block_k = case
    out = tiled(q, k, v, block_q=block_q, block_k=block_k, **_causal(alignment))
    ref = materialized(q, k, v, **_causal(alignment))
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = 1 / math.sqrt(q.shape[3])
    T_c = -(-k.shape[1] // block_k)
    term, keep = _tiling_terms(q, k, v, scale, alignment, T_c)
    bound = softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=np.float64) + term
    assert_within(out, ref, bound, context=f"block_q={block_q} block_k={block_k} alignment={alignment}")
    # a row that sees no key (s = 0, bottom-right with l > s) is zeros, exactly, in both
    empty = ~np.any(keep_mask(q.shape[1], k.shape[1], alignment), axis=-1)
    assert np.all(out[:, empty] == 0)


@given(tiled_cases())
def test_tiled_numpy_equals_tiled_numba(case):
    q, k, v, alignment, block_q, block_k = case
    kw = dict(block_q=block_q, block_k=block_k, **_causal(alignment))
    out = scaled_dot_product_attention(q, k, v, view="tiled", backend="numpy", **kw)
    ker = scaled_dot_product_attention(q, k, v, view="tiled", backend="numba", **kw)
    np.testing.assert_array_equal(out, tiled(q, k, v, **kw))  # the entry point passes the tile sizes through
    scale = 1 / math.sqrt(q.shape[3])
    T_c = -(-k.shape[1] // block_k)
    term, keep = _tiling_terms(q, k, v, scale, alignment, T_c)
    # both sides tile the keys the same way: the softmax bound for each side, the tiling term twice
    bound = softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=np.float64) + term + term
    assert_within(ker, out, bound, context=f"block_q={block_q} block_k={block_k} alignment={alignment}")


@given(tiled_cases(dtype=np.float32))
def test_tiled_numpy_float32_stays_float32_within_its_bound(case):
    q, k, v, alignment, block_q, block_k = case
    # the scale given as a float32 number, so that tau = float32(scale) is exact and both sides use the same one
    scale = float(np.float32(1 / math.sqrt(q.shape[3])))
    out = tiled(q, k, v, scale=scale, block_q=block_q, block_k=block_k, **_causal(alignment))
    assert out.dtype == np.float32
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    exact = materialized(q64, k64, v64, scale=scale, **_causal(alignment))
    T_c = -(-k.shape[1] // block_k)
    term, keep = _tiling_terms(q64, k64, v64, scale, alignment, T_c, np.float32)
    bound = softmax_attention_bound(q64, k64, v64, scale, keep, np.float32, oracle_dtype=np.float64) + term
    assert_within(out, exact, bound, context=f"float32 block_q={block_q} block_k={block_k}")


def test_worked_example_one_key_per_tile():
    """s = (0, ln 3) -> weights (1/4, 3/4), o = 7 with the two keys in separate tiles (line 12's rescaling:
    after tile 1, O = 4, l = 1, m = 0; tile 2: m_new = ln 3, l_new = 1/3 + 1, O = (1/3 * 4 + 1 * 8) / (4/3) = 7);
    causal top-left: query 0 sees key 0 only (o = 4)."""
    q = np.ones((1, 2, 1, 1))
    k = np.array([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    v = np.array([4.0, 8.0]).reshape(1, 2, 1, 1)
    for causal, block_q, expected in ((False, 1, [7.0, 7.0]), (True, 2, [4.0, 7.0])):
        alignment = "top_left" if causal else None
        o = tiled(q, k, v, scale=1.0, causal=causal, block_q=block_q, block_k=1)
        keep = keep_mask(2, 2, alignment)[None, None]
        exact = sdpa_mpmath(q, k, v, 1.0, keep)
        # the exact answer for the stored inputs: ln 3 is rounded (|ds| <= u ln 3), which moves o by
        # |v_2 - v_1| p_1 p_2 |ds| = 4 (3/16) u ln 3 < u: within one unit roundoff of the hand values
        assert np.all(np.abs(exact[0, :, 0, 0] - expected) <= np.finfo(float).eps / 2 * 7)
        term, _ = _tiling_terms(q, k, v, 1.0, alignment, 2)
        assert_within(o, exact, softmax_attention_bound(q, k, v, 1.0, keep, oracle_dtype=None) + term)
