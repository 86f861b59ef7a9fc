"""Sparse attention patterns: worked examples by hand, golden BigBird blocks, the W6 block layout, bad inputs.

Masks are written out literally (rows = queries i, columns = keys j, 1 = kept); outputs are checked against the
mpmath dense masked softmax of oracles.attention over those literal masks, within
oracles.attention.softmax_attention_bound (the derived first-order bound; the block-sparse views add one rescaling
per key block: depth + nb, see property_tests/test_sparse_attention_props.py)."""
import copy
import math
import pickle

import numpy as np
import pytest

from oracles.attention import sdpa_float64, sdpa_mpmath, softmax_attention_bound
from oracles.tolerance import Bound, assert_within
from refimpl._fastmath import EXP_REL_ERR
from refimpl.attention.sparse import (bigbird_pattern, fixed_pattern, longformer_pattern, sliding_window_pattern,
                                      sparse_attention, strided_pattern)
from refimpl.attention.sparse.numba import block_sparse_attention


def _lit(rows):
    return np.array([[c == "1" for c in r.replace(" ", "")] for r in rows], dtype=bool)


def _check_against_mpmath(pattern, keep_literal, h=None, n=3, p=2, seed=0):
    """All three implementations against sdpa_mpmath over the literal mask ``(heads, l, l)``."""
    l = pattern.l
    h = h or pattern.h
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((1, l, h, n)) for _ in range(2))
    v = rng.standard_normal((1, l, h, p))
    keep = np.broadcast_to(keep_literal[None], (1, h, l, l))
    scale = 1 / math.sqrt(n)
    exact = sdpa_mpmath(q, k, v, scale, keep)
    bound = softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None)
    for view, backend, block in [("materialized", "numpy", None), ("block_sparse", "numpy", 2),
                                 ("block_sparse", "numba", 4), ("block_sparse", "numba", 1)]:
        # the block-sparse views carry one rescaling per key block (<= l blocks): the doubled bound covers
        # depth n + 2 l + 5 >= n + l + 5 + nb to first order (the bound is first order)
        b = bound if view == "materialized" else bound + bound
        o = sparse_attention(q, k, v, pattern, view=view, backend=backend, block=block)
        assert_within(o, exact, b, context=(view, backend, block))


# ------------------------------------------------------------------ worked examples

def test_six_token_window_by_hand():
    """window (2, 1): query i keeps i-2, i-1, i, i+1 (clipped to 0..5)."""
    P = sliding_window_pattern(6, (2, 1))
    M = _lit(["110000",
              "111000",
              "111100",
              "011110",
              "001111",
              "000111"])
    np.testing.assert_array_equal(P.mask()[0], M)
    assert P.h == 1 and P.kind == "sliding_window" and P.params["window"] == (2, 1)
    _check_against_mpmath(P, M[None], h=2)


def test_causal_window_int_means_left_only():
    P = sliding_window_pattern(6, 2, causal=True)
    assert P.params["window"] == (2, 0)
    np.testing.assert_array_equal(P.mask()[0], _lit(["100000", "110000", "111000", "011100", "001110", "000111"]))
    with pytest.raises(ValueError, match=r"^window: causal=True keeps no key to the right"):
        sliding_window_pattern(6, (2, 1), causal=True)


def test_dilation_two_head_by_hand():
    """dilation (1, 2), window (1, 1): head 0 keeps i-1, i, i+1; head 1 keeps i-2, i, i+2."""
    P = sliding_window_pattern(7, 1, dilation=(1, 2))
    assert P.h == 2
    head1 = _lit(["1010000",
                  "0101000",
                  "1010100",
                  "0101010",
                  "0010101",
                  "0001010",
                  "0000101"])
    head0 = _lit(["1100000", "1110000", "0111000", "0011100", "0001110", "0000111", "0000011"])
    np.testing.assert_array_equal(P.mask(), np.stack([head0, head1]))
    _check_against_mpmath(P, np.stack([head0, head1]))


def test_global_token_row_and_column():
    """Longformer, window 0 (self only), global token 2: row 2 and column 2 are all kept."""
    P = longformer_pattern(6, 0, global_tokens=[2])
    M = _lit(["101000",
              "011000",
              "111111",
              "001100",
              "001010",
              "001001"])
    np.testing.assert_array_equal(P.mask()[0], M)
    _check_against_mpmath(P, M[None], h=1)
    # causal: the global row keeps only j <= 2, the global column only queries i >= 2
    Pc = longformer_pattern(6, 0, global_tokens=[2], causal=True)
    np.testing.assert_array_equal(Pc.mask()[0], _lit(["100000", "010000", "111000", "001100", "001010", "001001"]))


def test_global_query_row_output_is_full_attention():
    """A global token's output is dense softmax attention over every key."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 9, 1, 4)) for _ in range(3))
    P = longformer_pattern(9, 1, global_tokens=[4])
    o = sparse_attention(q, k, v, P, view="block_sparse", backend="numba", block=4)
    exact = sdpa_mpmath(q, k, v, 0.5)
    bound = softmax_attention_bound(q, k, v, 0.5, oracle_dtype=None)
    row = np.asarray(bound.values)[:, 4]
    assert_within(o[:, 4], exact[:, 4], Bound(2 * row, "2 x softmax bound (online rescaling), row 4"))


def test_strided_by_hand():
    """Child et al. strided, l_s = 2, causal: A1 = {i-2..i}, A2 = {j <= i, i - j even}; union and heads."""
    A1 = _lit(["100000", "110000", "111000", "011100", "001110", "000111"])
    A2 = _lit(["100000", "010000", "101000", "010100", "101010", "010101"])
    np.testing.assert_array_equal(strided_pattern(6, 2).mask()[0], A1 | A2)
    np.testing.assert_array_equal(strided_pattern(6, 2, combine="heads").mask(), np.stack([A1, A2]))
    _check_against_mpmath(strided_pattern(6, 2), (A1 | A2)[None], h=2)


def test_fixed_by_hand():
    """Child et al. fixed, l_s = 3, c = 1, causal: A1 = own block up to i, A2 = the last column of each block."""
    A1 = _lit(["100000", "110000", "111000", "000100", "000110", "000111"])
    A2 = _lit(["000000", "000000", "001000", "001000", "001000", "001001"])
    np.testing.assert_array_equal(fixed_pattern(6, 3).mask()[0], A1 | A2)
    np.testing.assert_array_equal(fixed_pattern(6, 3, combine="heads").mask(), np.stack([A1, A2]))
    # c = 2 non-causal: columns 1, 2, 4, 5 (j mod 3 in {1, 2}) for every query, plus the own block
    M = fixed_pattern(6, 3, summary=2, causal=False).mask()[0]
    np.testing.assert_array_equal(M, _lit(["111011", "111011", "111011", "011111", "011111", "011111"]))
    _check_against_mpmath(fixed_pattern(6, 3, summary=2, causal=False), M[None])


def test_bigbird_golden_blocks():
    """l = 10, block 2 (nb = 5), window_blocks 1, global_blocks 1, random_blocks 2, seed 7, by hand from the spec.

    PCG64(7).random_raw() gives 11530976094092348043, 16550673365885938325, 14308875409591826786,
    4154339397315733314, 5537090637313560901, 16114216841932056372, 97127725791292528, 15148990459964163805;
    the moduli the procedure takes: 0 (mod 3), 1 (mod 2), 2, 0, 1, 0, 1, 1.
    u = 0: global, draws nothing, keeps 0..4.
    u = 1: cand [2, 3, 4]; t = 0: j = 0, [2, 3, 4]; t = 1: j = 1 + 1 = 2, [2, 4, 3] -> random (2, 4).
    u = 2: cand [1, 3, 4]; j = 2: [4, 3, 1]; j = 1 + 0: [4, 3, 1] -> random (3, 4).
    u = 3: cand [1, 2, 4]; j = 1: [2, 1, 4]; j = 1 + 0: -> random (1, 2).
    u = 4: cand [1, 2, 3]; j = 1: [2, 1, 3]; j = 1 + 1 = 2: [2, 3, 1] -> random (2, 3).
    Key blocks = window {u} | global {0} | random."""
    assert [int(x) for x in (np.random.PCG64(7).random_raw(2))] == [11530976094092348043, 16550673365885938325]
    P = bigbird_pattern(10, 2, window_blocks=1, global_blocks=1, random_blocks=2, seed=7)
    assert P.params["random_key_blocks"] == (((), (2, 4), (3, 4), (1, 2), (2, 3)),)
    assert P.params["key_blocks"] == (((0, 1, 2, 3, 4), (0, 1, 2, 4), (0, 2, 3, 4), (0, 1, 2, 3), (0, 2, 3, 4)),)
    lay = P.block_layout(2)
    assert lay.key_blocks == P.params["key_blocks"]
    # the last block is short (positions 8, 9) but full: every tile of BigBird's own block size is full
    assert all(m is None for row in lay.tile_masks[0] for m in row)
    # the key blocks, expanded to positions (two rows per query block), are the mask
    rows = ["1111111111", "1111110011", "1100111111", "1111111100", "1100111111"]
    np.testing.assert_array_equal(P.mask()[0], _lit([r for r in rows for _ in range(2)]))


def test_bigbird_window_clips_and_random_skips_global_and_window():
    P = bigbird_pattern(40, 4, window_blocks=3, global_blocks=2, random_blocks=3, seed=11, heads=2)
    nb = 10
    for hh in range(2):
        for u in range(nb):
            kb = set(P.params["key_blocks"][hh][u])
            rand = set(P.params["random_key_blocks"][hh][u])
            if u < 2:
                assert kb == set(range(nb)) and not rand
                continue
            window = set(range(max(0, u - 1), min(nb, u + 2)))
            assert len(rand) == 3 and not rand & (window | {0, 1})
            assert kb == window | {0, 1} | rand
    # heads draw from one stream in turn: different heads get different blocks here
    assert P.params["random_key_blocks"][0] != P.params["random_key_blocks"][1]


def test_w6_block_layout():
    """window (512, 0), causal, L 8192, block 64: query block u keeps key blocks u - 8 .. u; the two ends are
    partial (the far one: j >= i - 512 cuts it diagonally; the diagonal one: j <= i), the 7 between are full."""
    P = sliding_window_pattern(8192, 512, causal=True)
    lay = P.block_layout(64)
    assert lay.n_blocks == 128
    for u in (0, 3, 8, 9, 127):
        assert lay.key_blocks[0][u] == tuple(range(max(0, u - 8), u + 1))
        full = [m is None for m in lay.tile_masks[0][u]]
        assert full == [v not in (u - 8, u) for v in lay.key_blocks[0][u]]
    # about (512 / 64 + 1) tiles per query block instead of the dense causal u + 1
    assert lay.n_tiles == sum(min(u, 8) + 1 for u in range(128))
    assert lay.masks.shape[0] == 2  # two distinct in-block masks (the diagonal and the far edge)


def test_views_agree_on_a_long_causal_window():
    """float32 kernel (block 128) against the float64 materialized view: the softmax bound of oracles.attention for
    float32 against a float64 oracle, doubled for the online rescaling (one per key block, nb = 6 < l: depth
    n + l + 5 + nb <= 2 (n + l + 5), to first order), plus the polynomial exp's 2 EXP_REL_ERR sum_j p_j |v_j|."""
    rng = np.random.default_rng(5)
    q, k = (rng.standard_normal((1, 700, 2, 16)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((1, 700, 2, 8)).astype(np.float32)
    P = sliding_window_pattern(700, 100, causal=True)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    ref = sparse_attention(q64, k64, v64, P)
    out = sparse_attention(q, k, v, P, view="block_sparse", backend="numba", block=128)
    assert out.dtype == np.float32
    keep = P.mask()[None]
    b = softmax_attention_bound(q64, k64, v64, float(np.float32(0.25)), keep, np.float32, oracle_dtype=np.float64)
    pv = np.einsum("bhij,bjhp->bihp", sdpa_float64(q64, k64, v64, 0.25, keep)[1], np.abs(v64))
    assert_within(out, ref, b + b + Bound(2 * EXP_REL_ERR * pv, "float32 polynomial exp"))


def test_pattern_is_frozen_copyable_and_picklable():
    P = bigbird_pattern(20, 3, seed=1, heads=2)
    with pytest.raises(Exception):
        P.l = 3
    with pytest.raises(TypeError, match="read-only"):
        P.params["seed"] = 2
    assert copy.deepcopy(P) == P and pickle.loads(pickle.dumps(P)) == P
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(P)).mask(), P.mask())


def test_empty_and_one_token():
    for P in (sliding_window_pattern(0, 3), bigbird_pattern(0, 4, seed=0), fixed_pattern(0, 2)):
        x = np.zeros((2, 0, 1, 3))
        for view, backend in (("materialized", "numpy"), ("block_sparse", "numpy"), ("block_sparse", "numba")):
            assert sparse_attention(x, x, x, P, view=view, backend=backend).shape == (2, 0, 1, 3)
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    for view, backend in (("materialized", "numpy"), ("block_sparse", "numpy"), ("block_sparse", "numba")):
        # one token attends to itself only: o = v
        np.testing.assert_array_equal(sparse_attention(x, x, x, strided_pattern(1, 1), view=view, backend=backend), x)


def test_a_query_row_with_no_kept_key_is_zero():
    """No builder leaves a row empty (every pattern keeps j = i), so a block pattern is written directly: query
    block 1 keeps no key block, query block 0 keeps key block 2 only; their rows are 0 / attention over keys 4, 5."""
    from refimpl.attention.sparse.reference import _pattern

    P = _pattern("bigbird", 6, 1, block=2, window_blocks=1, global_blocks=0, random_blocks=0, seed=0, n_blocks=3,
                 key_blocks=(((2,), (), (0, 1, 2)),), random_key_blocks=(((), (), ()),))
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((1, 6, 1, 3)) for _ in range(3))
    keep = P.mask()[None]
    np.testing.assert_array_equal(keep[0, 0, 2:4], False)
    exact = sdpa_mpmath(q, k, v, 3 ** -0.5, keep)
    bound = softmax_attention_bound(q, k, v, 3 ** -0.5, keep, oracle_dtype=None)
    for view, backend in (("materialized", "numpy"), ("block_sparse", "numpy"), ("block_sparse", "numba")):
        for dt in (np.float64, np.float32):
            o = sparse_attention(q.astype(dt), k.astype(dt), v.astype(dt), P, view=view, backend=backend)
            np.testing.assert_array_equal(o[:, 2:4], 0.0)
            assert np.all(np.isfinite(o))
        o = sparse_attention(q, k, v, P, view=view, backend=backend)
        assert_within(o, exact, bound + bound, context=(view, backend))


# ------------------------------------------------------------------ bad inputs

def test_bad_pattern_arguments():
    with pytest.raises(ValueError, match=r"^summary: expected 1 <= summary <= stride = 3, got 4"):
        fixed_pattern(9, 3, summary=4)
    with pytest.raises(ValueError, match=r"^window_blocks: expected an odd int"):
        bigbird_pattern(9, 3, window_blocks=2, seed=0)
    with pytest.raises(ValueError, match=r"^causal: BigBird's pattern is the \(bidirectional\) encoder's"):
        bigbird_pattern(9, 3, seed=0, causal=True)
    with pytest.raises(TypeError, match=r"^seed: expected a non-negative int"):
        bigbird_pattern(9, 3, seed=None)
    with pytest.raises(TypeError, match="seed"):
        bigbird_pattern(9, 3)  # no unseeded default
    with pytest.raises(ValueError, match=r"^global_tokens\[1\]: expected a position in \[0, 6\)"):
        longformer_pattern(6, 1, global_tokens=[0, 6])
    with pytest.raises(TypeError, match=r"^global_tokens: expected a sequence"):
        longformer_pattern(6, 1, global_tokens=3)
    with pytest.raises(ValueError, match=r"^dilation\[1\]: expected an integer >= 1, got 0"):
        sliding_window_pattern(6, 1, dilation=(1, 0))
    with pytest.raises(TypeError, match=r"^window: expected an int w or a pair"):
        sliding_window_pattern(6, (1, 2, 3))
    with pytest.raises(ValueError, match=r"^combine: expected one of 'union', 'heads', got 'sum'"):
        strided_pattern(6, 2, combine="sum")


def test_bad_attention_arguments():
    x = np.zeros((1, 6, 2, 3))
    with pytest.raises(ValueError, match=r"^pattern: expected a pattern over l = 6 positions"):
        sparse_attention(x, x, x, sliding_window_pattern(5, 1))
    with pytest.raises(ValueError, match=r"^pattern: expected pattern.h = 1 \(shared by every head\) or h = 2"):
        sparse_attention(x, x, x, sliding_window_pattern(6, 1, dilation=(1, 2, 3)))
    with pytest.raises(TypeError, match=r"^pattern: expected a SparsePattern"):
        sparse_attention(x, x, x, np.ones((6, 6), dtype=bool))
    with pytest.raises(ValueError, match=r"^k: expected shape \(1, 6, 2, 3\)"):
        sparse_attention(x, np.zeros((1, 7, 2, 3)), np.zeros((1, 7, 2, 3)), sliding_window_pattern(6, 1))
    with pytest.raises(ValueError, match=r"^block: only the 'block_sparse' view has tiles"):
        sparse_attention(x, x, x, sliding_window_pattern(6, 1), block=2)
    with pytest.raises(ValueError, match=r"^block: expected an integer >= 1, got 0"):
        sparse_attention(x, x, x, sliding_window_pattern(6, 1), view="block_sparse", block=0)
    with pytest.raises(ValueError, match=r"^block_layout: expected pattern.block_layout\(4\)"):
        block_sparse_attention(x, x, x, sliding_window_pattern(6, 1), block=4,
                               block_layout=sliding_window_pattern(6, 2).block_layout(4))
    with pytest.raises(ValueError, match=r"^backend: refimpl.attention.sparse_attention has no 'numba' backend"):
        sparse_attention(x, x, x, sliding_window_pattern(6, 1), backend="numba")
