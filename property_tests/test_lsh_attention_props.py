"""Property tests of Reformer LSH attention: every view/backend against the set-built oracle bound, the Numba
kernel against the reference for L = 0, 1, odd, not a multiple of the chunk, long; one bucket and one chunk is full
shared-QK attention with the self rule; outputs depend only on keys of their own buckets (bit for bit); the order
of the rounds does not matter."""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.attention import softmax_attention_bound
from oracles.lsh import lsh_attention_bound, lsh_fsum
from oracles.tolerance import Bound, assert_within
from refimpl.attention.lsh import IMPLEMENTATIONS, lsh_attention
from refimpl.attention.softmax import scaled_dot_product_attention

PAIRS = IMPLEMENTATIONS.pairs()


@st.composite
def lsh_cases(draw, lengths=(0, 1, 2, 5, 7, 13, 24, 61)):
    l = draw(st.sampled_from(lengths))
    chunk = draw(st.sampled_from([1, 2, 3, 4, 8]))
    r = draw(st.integers(1, 3))
    nb = draw(st.integers(1, 4))
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n, p = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    causal, wrap = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    qk = rng.standard_normal((b, l, h, n)) * draw(st.sampled_from([0.5, 1.0, 3.0]))
    v = rng.standard_normal((b, l, h, p))
    bk = rng.integers(0, nb, (b, l, h, r))
    return qk, v, bk, dict(chunk=chunk, causal=causal, wrap=wrap)


def _K(pair, kw, bk):
    return bk.shape[3] * bk.shape[1] if "materialized" in pair else 2 * kw["chunk"]


def _bound(qk, v, bk, kw, pair, dtype=np.float64, oracle_dtype=None):
    return lsh_attention_bound(qk, v, bk, kw["chunk"], 1 / math.sqrt(qk.shape[3]), dtype, causal=kw["causal"],
                               wrap=kw["wrap"], keys_per_softmax=_K(pair, kw, bk), oracle_dtype=oracle_dtype)


@given(lsh_cases())
def test_every_view_within_the_bound_of_the_set_oracle(case):
    qk, v, bk, kw = case
    exact = lsh_fsum(qk, v, bk, kw["chunk"], 1 / math.sqrt(qk.shape[3]), causal=kw["causal"], wrap=kw["wrap"])
    for vw, b in PAIRS:
        o = lsh_attention(qk, v, buckets=bk, view=vw, backend=b, **kw)
        assert_within(o, exact, _bound(qk, v, bk, kw, f"{b}/{vw}", oracle_dtype=np.float64), context=f"{b}/{vw} {kw}")


@given(lsh_cases(lengths=(0, 1, 3, 7, 9, 30, 97)), st.sampled_from([np.float64, np.float32]))
def test_kernel_matches_reference(case, dt):
    # both within their bound of the exact answer: they differ by at most the sum of the two bounds
    qk, v, bk, kw = case
    qk, v = qk.astype(dt), v.astype(dt)
    ref = lsh_attention(qk, v, buckets=bk, **kw)
    ker = lsh_attention(qk, v, buckets=bk, backend="numba", **kw)
    assert ker.dtype == ref.dtype == dt
    b = _bound(qk, v, bk, kw, "sorted", dtype=dt)
    assert_within(ker, ref, Bound(2 * np.asarray(b.values), "2 x " + b.source), context=str(kw))


@given(lsh_cases(lengths=(1, 2, 5, 9)))
def test_one_bucket_one_chunk_is_full_shared_qk_attention_with_the_self_rule(case):
    qk, v, _, kw = case
    b, l, h, n = qk.shape
    bk = np.zeros((b, l, h, 1), dtype=np.int64)
    kw = dict(kw, chunk=l)
    # dense: q = qk, k = qk / ||qk||, keys j != i (j < i when causal); a row with no key attends to itself
    k = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    mask = (j != i) & ((j < i) if kw["causal"] else True)
    mask |= (~mask.any(axis=1))[:, None] & (i == j)
    dense = scaled_dot_product_attention(qk, k, v, mask=mask)
    sc = 1 / math.sqrt(n)
    for vw, be in PAIRS:
        o = lsh_attention(qk, v, buckets=bk, view=vw, backend=be, **kw)
        bl = _bound(qk, v, bk, kw, f"{be}/{vw}")
        bd = softmax_attention_bound(qk, k, v, sc, mask[None, None], oracle_dtype=None)
        assert_within(o, dense, bl + bd, context=f"{be}/{vw}")


@given(lsh_cases(lengths=(2, 5, 13, 24)), st.integers(0, 2**32 - 1))
def test_outputs_depend_only_on_keys_of_their_own_buckets(case, seed):
    qk, v, bk, kw = case
    rng = np.random.default_rng(seed)
    bi, hi, i0 = int(rng.integers(qk.shape[0])), int(rng.integers(qk.shape[2])), int(rng.integers(qk.shape[1]))
    # positions sharing no bucket with i0 in any round
    other = np.all(bk[bi, :, hi, :] != bk[bi, i0, hi, :][None, :], axis=1)
    qk2, v2 = qk.copy(), v.copy()
    qk2[bi, other, hi] = rng.standard_normal(qk2[bi, other, hi].shape) * 5
    v2[bi, other, hi] = rng.standard_normal(v2[bi, other, hi].shape) * 5
    for vw, be in PAIRS:
        o1 = lsh_attention(qk, v, buckets=bk, view=vw, backend=be, **kw)
        o2 = lsh_attention(qk2, v2, buckets=bk, view=vw, backend=be, **kw)
        np.testing.assert_array_equal(o1[bi, i0, hi], o2[bi, i0, hi], err_msg=f"{be}/{vw}")


@given(lsh_cases(lengths=(3, 7, 13, 24)), st.integers(0, 2**32 - 1))
def test_rounds_permuted_give_the_same_output(case, seed):
    qk, v, bk, kw = case
    perm = np.random.default_rng(seed).permutation(bk.shape[3])
    for vw, be in PAIRS:
        o1 = lsh_attention(qk, v, buckets=bk, view=vw, backend=be, **kw)
        o2 = lsh_attention(qk, v, buckets=bk[..., perm], view=vw, backend=be, **kw)
        b = _bound(qk, v, bk, kw, f"{be}/{vw}")
        assert_within(o2, o1, Bound(2 * np.asarray(b.values), "2 x " + b.source), context=f"{be}/{vw}")
