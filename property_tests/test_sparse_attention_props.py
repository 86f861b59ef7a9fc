"""Sparse attention: the three implementations agree (the Numba kernel == the literal block-sparse loop == the
materialized view) for every pattern kind at L = 0, 1, odd, not a multiple of the block, long; the patterns equal
the papers' sets (oracles.sparse_attention, built independently as Python sets); the Sparse Transformer's
two-step reachability claim; BigBird's seeded reproducibility.

Bound for the view comparisons (derived, oracles/attention.py module doc): the first-order forward error of
max-subtracted masked softmax attention, ``gamma_depth M`` with ``M_i = 2 (2 max_j S_ij + max_j |s_ij - m_i| + 2)
sum_j p_ij |v_j|`` (``S_ij = |scale| |q_i|.|k_j|``, over the kept keys) and depth ``n + L + 5``, for the candidate
(in its dtype) plus the float64 materialized reference.  The online softmax adds, per key block of a row (at most
``nb = ceil(L / B)`` of them), the rescaling ``c = exp(m - m')``: the subtraction (``u |m - m'| <= u max |s - m|``),
``exp`` (``2u``) and the two products ``c l``, ``c O`` (``u`` each), i.e. ``<= (max |s - m| + 3) u`` relative,
which the factor of ``M`` covers (``2 (spread + 2) >= spread + 3``): depth ``n + L + 5 + nb``.  The float32 kernel's
polynomial ``exp`` has relative error ``EXP_REL_ERR`` (refimpl._fastmath, proven) instead of one ulp: each weight
moves by ``<= 2 EXP_REL_ERR`` more (numerator and normalizer), the output by ``2 EXP_REL_ERR sum_j p_j |v_j|``.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles.sparse_attention import keep_from_sets, pattern_sets
from oracles.tolerance import Bound, assert_within, componentwise_bound
from refimpl._fastmath import EXP_REL_ERR
from refimpl.attention.sparse import (bigbird_pattern, fixed_pattern, longformer_pattern, sliding_window_pattern,
                                      sparse_attention, strided_pattern)

LENGTHS = [0, 1, 2, 7, 13, 64, 65, 130, 257]


def _online_bound(q, k, v, scale, keep, dtype, n_blocks):
    """The bound of the module docstring, elementwise ``(b l h p)``; ``keep (1|h, l, l)``."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, h, n = q.shape
    kp = np.broadcast_to(keep[None], (b, h, l, l))
    s = scale * np.einsum("bihn,bjhn->bhij", q, k)
    S = abs(scale) * np.einsum("bihn,bjhn->bhij", np.abs(q), np.abs(k))
    sm = np.where(kp, s, -np.inf)
    m = np.max(sm, axis=-1, keepdims=True) if l else np.zeros((b, h, l, 1))
    m = np.where(np.isfinite(m), m, 0.0)
    spread = np.max(np.where(kp, np.abs(s - m), 0.0), axis=-1) if l else np.zeros((b, h, l))
    Smax = np.max(np.where(kp, S, 0.0), axis=-1) if l else np.zeros((b, h, l))
    w = np.where(kp, np.exp(np.minimum(sm - m, 0.0)), 0.0)
    Z = np.sum(w, axis=-1, keepdims=True)
    p_ij = w / np.where(Z > 0, Z, 1.0)
    pv = np.einsum("bhij,bjhp->bihp", p_ij, np.abs(v))
    M = np.einsum("bhi,bihp->bihp", 2.0 * (2.0 * Smax + spread + 2.0), pv)
    bound = componentwise_bound(M, n + l + 5 + n_blocks, dtype, oracle_dtype=np.float64,
                                what="masked softmax attention + online rescaling per key block (module doc)")
    if np.dtype(dtype) == np.float32:
        bound = bound + Bound(2 * EXP_REL_ERR * pv, "float32 polynomial exp: 2 EXP_REL_ERR sum_j p_j |v_j|")
    return bound


@st.composite
def patterns(draw, l):
    """A pattern of any kind over ``l`` positions, with its parameters (for the oracle's sets)."""
    kind = draw(st.sampled_from(["sliding_window", "longformer", "strided", "fixed", "bigbird"]))
    if kind in ("sliding_window", "longformer"):
        causal = draw(st.booleans())
        left = draw(st.integers(0, 9))
        window = (left, 0) if causal else (left, draw(st.integers(0, 9)))
        dilation = draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)]))
        params = dict(window=window, dilation=dilation, causal=causal)
        if kind == "longformer":
            G = draw(st.lists(st.integers(0, max(l - 1, 0)), max_size=3)) if l else []
            params["global_tokens"] = tuple(G)
            return longformer_pattern(l, **params), kind, params
        return sliding_window_pattern(l, **params), kind, params
    if kind in ("strided", "fixed"):
        stride = draw(st.integers(1, 12))
        params = dict(stride=stride, causal=draw(st.booleans()), combine=draw(st.sampled_from(["union", "heads"])))
        if kind == "fixed":
            params["summary"] = draw(st.integers(1, stride))
            return fixed_pattern(l, **params), kind, params
        return strided_pattern(l, **params), kind, params
    params = dict(block=draw(st.sampled_from([1, 3, 8, 16])), window_blocks=draw(st.sampled_from([1, 3, 5])),
                  global_blocks=draw(st.integers(0, 2)), random_blocks=draw(st.integers(0, 3)),
                  seed=draw(st.integers(0, 2**63)), heads=draw(st.sampled_from([1, 2])))
    return bigbird_pattern(l, **params), kind, params


@given(data=st.data(), l=st.sampled_from(LENGTHS))
def test_pattern_mask_equals_the_papers_sets(data, l):
    """``pattern.mask()`` is exactly the keep mask of the oracle's Python sets (built from the definitions)."""
    pattern, kind, params = data.draw(patterns(l))
    expected = keep_from_sets(pattern_sets(kind, l, **params), l)
    np.testing.assert_array_equal(pattern.mask(), expected)


@given(data=st.data(), l=st.sampled_from(LENGTHS), block=st.sampled_from([None, 1, 5, 16, 64]))
def test_block_layout_covers_the_mask(data, l, block):
    """The tiles of ``block_layout`` reassemble the mask: every kept pair lies in a listed tile, a tile is full
    exactly when all its pairs are kept, and every listed tile holds a kept pair."""
    pattern, _, _ = data.draw(patterns(l))
    B = pattern.default_block if block is None else block
    lay = pattern.block_layout(B)
    M = pattern.mask()
    rebuilt = np.zeros_like(M)
    for hh in range(pattern.h):
        for u in range(lay.n_blocks):
            assert list(lay.key_blocks[hh][u]) == sorted(set(lay.key_blocks[hh][u]))
            for vb, tm in zip(lay.key_blocks[hh][u], lay.tile_masks[hh][u]):
                q0, q1, k0, k1 = u * B, min(u * B + B, l), vb * B, min(vb * B + B, l)
                tile = M[hh, q0:q1, k0:k1]
                assert tile.any()
                if tm is None:
                    assert tile.all()
                else:
                    np.testing.assert_array_equal(tm, tile)
                    assert not tile.all()
                rebuilt[hh, q0:q1, k0:k1] = tile
    np.testing.assert_array_equal(rebuilt, M)


@given(data=st.data(), l=st.sampled_from(LENGTHS), seed=st.integers(0, 2**31), n=st.sampled_from([0, 1, 4, 16]),
       block=st.sampled_from([None, 1, 4, 7, 16, 64]), dtype=st.sampled_from([np.float64, np.float32]))
def test_views_and_kernel_agree(data, l, seed, n, block, dtype):
    """kernel (numba) == block_sparse (numpy) == materialized (numpy), within the derived bound."""
    pattern, _, _ = data.draw(patterns(l))
    if block == 1 and l > 70:
        block = 4  # the literal loop visits every tile in Python: keep it short
    h = pattern.h if pattern.h > 1 else data.draw(st.sampled_from([1, 2]))
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((2, l, h, n)).astype(dtype) for _ in range(2))
    v = rng.standard_normal((2, l, h, 3)).astype(dtype)
    scale = None if n else 0.7
    ref = sparse_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), pattern, scale=scale)
    loop = sparse_attention(q, k, v, pattern, scale=scale, view="block_sparse", block=block)
    kern = sparse_attention(q, k, v, pattern, scale=scale, view="block_sparse", backend="numba", block=block)
    assert loop.dtype == kern.dtype == np.dtype(dtype) and kern.shape == ref.shape == (2, l, h, 3)
    B = pattern.default_block if block is None else block
    nb = -(-l // B)
    sc = (1.0 / math.sqrt(n) if n else 0.7)
    bound = _online_bound(q, k, v, np.float64(np.dtype(dtype).type(sc)), pattern.mask(), dtype, nb)
    assert_within(kern, ref, bound, context="numba block_sparse vs materialized")
    assert_within(loop, ref, bound, context="numpy block_sparse vs materialized")
    if dtype == np.float32:
        mat32 = sparse_attention(q, k, v, pattern, scale=scale)
        assert mat32.dtype == np.float32
        assert_within(mat32, ref, bound, context="materialized float32 vs float64")


# every kind at L = 0, 1, odd, not a multiple of the block, long (deterministic, besides the drawn cases above)
_FIXED_KINDS = {
    "sliding_window": lambda l: sliding_window_pattern(l, (5, 2), dilation=(1, 3)),
    "sliding_window_causal": lambda l: sliding_window_pattern(l, 9, causal=True),
    "longformer": lambda l: longformer_pattern(l, 2, dilation=(2, 1), global_tokens=(0, l - 1) if l else ()),
    "longformer_causal": lambda l: longformer_pattern(l, 3, global_tokens=(l // 2,) if l else (), causal=True),
    "strided": lambda l: strided_pattern(l, max(1, round(math.sqrt(l)))),
    "strided_heads_noncausal": lambda l: strided_pattern(l, 4, causal=False, combine="heads"),
    "fixed": lambda l: fixed_pattern(l, 5, summary=2),
    "fixed_heads": lambda l: fixed_pattern(l, 6, combine="heads"),
    "bigbird": lambda l: bigbird_pattern(l, 7, window_blocks=3, global_blocks=1, random_blocks=2, seed=2024, heads=2),
}


@pytest.mark.parametrize("l", [0, 1, 31, 131, 300])
@pytest.mark.parametrize("name", sorted(_FIXED_KINDS))
def test_every_kind_at_the_edge_lengths(name, l):
    pattern = _FIXED_KINDS[name](l)
    rng = np.random.default_rng(l)
    q, k = (rng.standard_normal((1, l, 2, 8)) for _ in range(2))
    v = rng.standard_normal((1, l, 2, 5))
    ref = sparse_attention(q, k, v, pattern)
    bound = _online_bound(q, k, v, 1 / math.sqrt(8), pattern.mask(), np.float64, -(-l // pattern.default_block))
    assert_within(sparse_attention(q, k, v, pattern, view="block_sparse"), ref, bound, context=name)
    assert_within(sparse_attention(q, k, v, pattern, view="block_sparse", backend="numba"), ref, bound, context=name)
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    ref32 = sparse_attention(q32.astype(np.float64), k32.astype(np.float64), v32.astype(np.float64), pattern)
    kern32 = sparse_attention(q32, k32, v32, pattern, view="block_sparse", backend="numba", block=16)
    assert kern32.dtype == np.float32
    assert_within(kern32, ref32, _online_bound(q32, k32, v32, float(np.float32(1 / math.sqrt(8))), pattern.mask(),
                                               np.float32, -(-l // 16)), context=name)


@given(l=st.integers(2, 400), d_stride=st.integers(-2, 2), kind=st.sampled_from(["strided", "fixed"]),
       summary=st.integers(1, 3))
def test_sparse_transformer_two_step_reachability(l, d_stride, kind, summary):
    """Child et al. 2019 (sec. 4): with the merged causal pattern M and stride ~ sqrt(L), every j <= i is reachable
    from i in p = 2 steps: (M @ M)[i, j] for all j <= i (boolean product)."""
    stride = max(1, round(math.sqrt(l)) + d_stride)
    if kind == "strided":
        M = strided_pattern(l, stride, causal=True).mask()[0]
    else:
        M = fixed_pattern(l, stride, summary=min(summary, stride), causal=True).mask()[0]
    Mi = M.astype(np.int64)
    two = (Mi @ Mi) > 0
    lower = np.tril(np.ones((l, l), dtype=bool))
    assert not np.any(M & ~lower)  # causal: one step never looks ahead
    np.testing.assert_array_equal(two, lower)


@given(seed=st.integers(0, 2**63), l=st.integers(1, 80), block=st.integers(1, 8), random_blocks=st.integers(0, 3),
       heads=st.integers(1, 3))
def test_bigbird_same_seed_same_pattern(seed, l, block, random_blocks, heads):
    a = bigbird_pattern(l, block, random_blocks=random_blocks, seed=seed, heads=heads)
    b = bigbird_pattern(l, block, random_blocks=random_blocks, seed=np.uint64(seed), heads=heads)
    assert a == b
    np.testing.assert_array_equal(a.mask(), b.mask())


@given(s1=st.integers(0, 2**40), s2=st.integers(0, 2**40))
def test_bigbird_different_seeds_differ(s1, s2):
    """16 blocks, 2 random blocks each from about 11 candidates (55 choices per query block, 15 query blocks):
    two seeds give the same pattern with probability about 55^-15."""
    if s1 == s2:
        s2 = s1 + 1
    a = bigbird_pattern(64, 4, random_blocks=2, seed=s1)
    b = bigbird_pattern(64, 4, random_blocks=2, seed=s2)
    assert a != b
    assert not np.array_equal(a.mask(), b.mask())
