"""The sparse-attention oracle itself (oracles/sparse_attention.py): its pattern sets against hand-derived ones,
BigBird's PCG64 raw-stream draws worked by hand, the Sparse Transformer's two-step reachability claim on the sets,
and the two attention oracles (mpmath, fsum) against each other and a hand-computed value."""
import math

import numpy as np
import pytest

from oracles import sparse_attention as S
from oracles.tolerance import compare


def _rows(sets):
    return [[sorted(x) for x in head] for head in sets]


# ------------------------------------------------------------------ sliding window / dilation / longformer

def test_sliding_window_hand_sets():
    # l = 6, window (2, 1): i - 2 <= j <= i + 1, clipped to [0, 6)
    assert _rows(S.sliding_window_sets(6, (2, 1))) == [[[0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4],
                                                        [2, 3, 4, 5], [3, 4, 5]]]
    # an int w = (w, w); causal forces right = 0
    assert S.sliding_window_sets(5, 1) == S.sliding_window_sets(5, (1, 1))
    assert _rows(S.sliding_window_sets(4, 1, causal=True)) == [[[0], [0, 1], [1, 2], [2, 3]]]
    with pytest.raises(ValueError, match="right"):
        S.sliding_window_sets(4, (1, 1), causal=True)
    # window 0: the token itself; window >= L: everything
    assert _rows(S.sliding_window_sets(3, 0)) == [[[0], [1], [2]]]
    assert _rows(S.sliding_window_sets(3, 10)) == [[[0, 1, 2]] * 3]
    assert S.sliding_window_sets(0, 3) == [[]]


def test_dilated_window_hand_sets():
    # dil 2, window (1, 1): j in {i - 2, i, i + 2}
    assert _rows(S.sliding_window_sets(7, 1, dilation=2))[0][3] == [1, 3, 5]
    assert _rows(S.sliding_window_sets(7, 1, dilation=2))[0][0] == [0, 2]
    # dilation 3, window (2, 0): j in {i - 6, i - 3, i}
    assert _rows(S.sliding_window_sets(10, (2, 0), dilation=3))[0][9] == [3, 6, 9]
    # one head per dilation
    sets = S.sliding_window_sets(6, (1, 1), dilation=(1, 2))
    assert len(sets) == 2 and sorted(sets[0][2]) == [1, 2, 3] and sorted(sets[1][2]) == [0, 2, 4]


def test_longformer_hand_sets():
    # l = 5, window 1, global token 0: symmetric -- row 0 keeps all, every row keeps key 0
    assert _rows(S.longformer_sets(5, 1, global_tokens=(0,))) == [[[0, 1, 2, 3, 4], [0, 1, 2], [0, 1, 2, 3],
                                                                   [0, 2, 3, 4], [0, 3, 4]]]
    # causal: additionally j <= i, the global token's row included
    assert _rows(S.longformer_sets(5, 1, global_tokens=(3,), causal=True)) == [[[0], [0, 1], [1, 2], [0, 1, 2, 3],
                                                                               [3, 4]]]
    # every token global: dense
    assert _rows(S.longformer_sets(4, 0, global_tokens=range(4))) == [[[0, 1, 2, 3]] * 4]
    with pytest.raises(ValueError, match="global_tokens"):
        S.longformer_sets(4, 1, global_tokens=(4,))


# ------------------------------------------------------------------ Sparse Transformer patterns

def test_strided_hand_sets():
    # causal, l_s = 3, i = 7: A1 = {4..7}, A2 = {7, 4, 1}
    sets = S.strided_sets(8, 3)
    assert sorted(sets[0][7]) == [1, 4, 5, 6, 7]
    assert sorted(sets[0][2]) == [0, 1, 2]
    heads = S.strided_sets(8, 3, combine="heads")
    assert sorted(heads[0][7]) == [4, 5, 6, 7] and sorted(heads[1][7]) == [1, 4, 7]
    # non-causal (our symmetric extension): |i - j| <= 3 or (i - j) mod 3 == 0
    nc = S.strided_sets(9, 3, causal=False, combine="heads")
    assert sorted(nc[0][4]) == [1, 2, 3, 4, 5, 6, 7] and sorted(nc[1][4]) == [1, 4, 7]
    # stride 1: A1 = {i-1, i}, A2 = every earlier key
    assert _rows(S.strided_sets(4, 1, combine="heads"))[1] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]


def test_fixed_hand_sets():
    # l_s = 4, c = 1, causal, i = 6: own block {4, 5, 6}; summary j mod 4 == 3, j <= 6: {3}
    sets = S.fixed_sets(8, 4)
    assert sorted(sets[0][6]) == [3, 4, 5, 6]
    assert sorted(sets[0][3]) == [0, 1, 2, 3]
    # c = 2, non-causal, heads: A2 = j mod 4 in {2, 3}
    h = S.fixed_sets(8, 4, summary=2, causal=False, combine="heads")
    assert sorted(h[0][5]) == [4, 5, 6, 7] and sorted(h[1][5]) == [2, 3, 6, 7]
    with pytest.raises(ValueError, match="summary"):
        S.fixed_sets(8, 4, summary=5)


@pytest.mark.parametrize("kind,l,ls", [("strided", 17, 4), ("strided", 30, 5), ("fixed", 17, 4), ("fixed", 26, 5)])
def test_two_steps_reach_every_earlier_position(kind, l, ls):
    """Child et al. sec. 4.2: with the factorized (p = 2) patterns every position reaches every earlier one in two
    attention steps: the merged (union) head composed with itself reaches exactly j <= i, one step does not; for
    strided also the two separate heads in sequence (A1, then A2 from the position reached)."""
    tril = np.tril(np.ones((l, l), bool))
    P = S.keep_from_sets(S.pattern_sets(kind, l, stride=ls), l)[0].astype(int)
    assert np.array_equal((P @ P) > 0, tril)
    assert not np.array_equal(P > 0, tril)
    if kind == "strided":
        K = S.keep_from_sets(S.pattern_sets(kind, l, stride=ls, combine="heads"), l).astype(int)
        assert np.array_equal((K[0] @ K[1]) > 0, tril)


# ------------------------------------------------------------------ BigBird

def test_pcg64_raw_stream_is_the_recorded_one():
    bits = np.random.PCG64(0)
    assert [int(bits.random_raw()) for _ in range(5)] == [11749869230777074271, 4976686463289251617,
                                                          755828109848996024, 304881062738325533,
                                                          15002187965291974971]


def test_bigbird_random_blocks_by_hand():
    # nb = 6, window 3, 1 global block, 1 random block, seed 0; raw draws r0..r4 as above
    # u=0 global: no draw
    # u=1: window {0,1,2}, cand [3,4,5]: r0 % 3 = 2 -> cand[2] = 5
    # u=2: window {1,2,3}, cand [4,5]:   r1 % 2 = 1 -> 5
    # u=3: window {2,3,4}, cand [1,5]:   r2 % 2 = 0 -> 1
    # u=4: window {3,4,5}, cand [1,2]:   r3 % 2 = 1 -> 2
    # u=5: window {4,5},   cand [1,2,3]: r4 % 3 = 0 -> 1
    assert S.bigbird_random_blocks(6, seed=0) == [[[], [5], [5], [1], [2], [1]]]
    # two random blocks at u=1: t=0: r0 % 3 = 2 -> swap(0,2): [5,4,3]; t=1: 1 + r1 % 2 = 2 -> swap(1,2): [5,3,4]
    assert S.bigbird_random_blocks(6, random_blocks=2, seed=0)[0][1] == [3, 5]
    # fewer candidates than random blocks: all of them
    assert S.bigbird_random_blocks(4, random_blocks=5, seed=0)[0][3] == [1]


def test_bigbird_sets_and_reproducibility():
    blocks = S.bigbird_block_sets(20, 4, seed=0)
    # nb = 5: block 0 global (keeps all); block 3: window {2,3,4} + global {0} + random
    assert blocks[0][0] == {0, 1, 2, 3, 4}
    assert {0, 2, 3, 4} <= blocks[0][3]
    sets = S.bigbird_sets(20, 4, seed=0)
    assert sets[0][0] == set(range(20))
    assert all(0 in sets[0][i] for i in range(20))  # every query keeps the global block
    assert S.bigbird_sets(20, 4, seed=3, heads=2) == S.bigbird_sets(20, 4, seed=3, heads=2)
    # block > L: one block, dense; short last block
    assert S.bigbird_sets(3, 8, seed=0) == [[{0, 1, 2}] * 3]
    assert sorted(S.bigbird_sets(10, 4, global_blocks=0, window_blocks=1, random_blocks=0, seed=0)[0][9]) == [8, 9]
    for bad in (dict(seed=None), dict(seed=-1), dict(seed=0, window_blocks=2), dict(seed=0, causal=True)):
        with pytest.raises(ValueError):
            S.bigbird_sets(8, 2, **bad)


# ------------------------------------------------------------------ the attention oracles

def test_hand_computed_attention_value():
    # l = 2, window (1, 0) causal, n = 1, q = k = 1, v = (0, 1): row 1 keeps keys {0, 1} with equal scores
    q = np.ones((1, 2, 1, 1))
    v = np.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    sets = S.sliding_window_sets(2, 1, causal=True)
    for o in (S.sparse_attention_mpmath(q, q, v, sets), S.sparse_attention_fsum(q, q, v, sets)):
        assert o[0, 0, 0, 0] == 0.0 and o[0, 1, 0, 0] == 0.5
    # scale 2 and k = (0, 1): row 1 weights e^0, e^2 -> v-mean e^2 / (1 + e^2)
    k = np.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    o = S.sparse_attention_mpmath(q, k, v, sets, scale=2.0)
    assert abs(o[0, 1, 0, 0] - math.exp(2) / (1 + math.exp(2))) < 1e-15


@pytest.mark.parametrize("kind,params", [
    ("sliding_window", dict(window=(2, 1), dilation=(1, 2))),
    ("longformer", dict(window=1, global_tokens=(0, 5), causal=True)),
    ("strided", dict(stride=3, combine="heads")),
    ("fixed", dict(stride=3, summary=2, causal=False)),
    ("bigbird", dict(block=2, seed=5, heads=2)),
])
def test_fsum_oracle_agrees_with_mpmath_within_its_bound(kind, params):
    rng = np.random.default_rng(13)
    l, h = 9, 2
    q, k = rng.standard_normal((1, l, h, 3)) * 2, rng.standard_normal((1, l, h, 3)) * 2
    v = rng.standard_normal((1, l, h, 2))
    sets = S.pattern_sets(kind, l, **params)
    exact = S.sparse_attention_mpmath(q, k, v, sets)
    approx = S.sparse_attention_fsum(q, k, v, sets)
    bound = S.sparse_attention_bound(q, k, v, sets, dtype=np.float64, oracle_dtype=None)
    assert compare(approx, exact, bound).passed
    # the masked keys matter: the dense answer differs
    dense = S.sparse_attention_mpmath(q, k, v, [[set(range(l))] * l])
    assert not compare(dense, exact, bound).passed


def test_empty_rows_and_sizes():
    q = np.ones((1, 3, 1, 2))
    sets = [[{0}, set(), {1, 2}]]
    for o in (S.sparse_attention_mpmath(q, q, q, sets), S.sparse_attention_fsum(q, q, q, sets)):
        assert np.all(o[0, 1] == 0.0) and np.allclose(o[0, 0], 1.0)
    assert S.sparse_attention_fsum(np.zeros((1, 0, 2, 2)), np.zeros((1, 0, 2, 2)), np.zeros((1, 0, 2, 1)),
                                   [[]]).shape == (1, 0, 2, 1)
    with pytest.raises(ValueError, match="pattern"):
        S.sparse_attention_fsum(np.ones((1, 3, 2, 1)), np.ones((1, 3, 2, 1)), np.ones((1, 3, 2, 1)), [[]] * 3)
