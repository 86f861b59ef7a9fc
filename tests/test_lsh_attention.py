"""Reformer LSH attention (refimpl.attention.lsh): worked examples, golden values, the paper's claims, bad input,
and the verify op's adapters."""
import math

import numpy as np
import pytest

from oracles.lsh import allowed_keys, hash_oracle, lsh_attention_bound, lsh_mpmath
from oracles.tolerance import Bound, assert_within, gamma
from refimpl.attention.lsh import IMPLEMENTATIONS, hash_buckets, lsh_attention, normalize_keys, random_rotations

PAIRS = IMPLEMENTATIONS.pairs()


def _all(qk, v, **kw):
    return {f"{b}/{vw}": lsh_attention(qk, v, view=vw, backend=b, **kw) for vw, b in PAIRS}


def _bound(qk, v, bk, chunk, pair, **kw):
    r, l = bk.shape[3], bk.shape[1]
    K = r * l if "materialized" in pair else 2 * chunk
    return lsh_attention_bound(qk, v, bk, chunk, 1 / math.sqrt(qk.shape[3]), np.float64, keys_per_softmax=K,
                               **kw)


# ------------------------------------------------------------------ worked examples

def test_self_rule_pairs_swap_values():
    # n = 1: normalized keys are signs.  Buckets [0, 1, 0, 1], one chunk: each query's bucket holds one other
    # position, so (self excluded) o_0 = v_2, o_1 = v_3, o_2 = v_0, o_3 = v_1 exactly.
    qk = np.array([1.0, 2.0, -1.0, 3.0]).reshape(1, 4, 1, 1)
    v = np.arange(8.0).reshape(1, 4, 1, 2)
    bk = np.array([0, 1, 0, 1]).reshape(1, 4, 1, 1)
    for name, o in _all(qk, v, buckets=bk, chunk=4).items():
        np.testing.assert_array_equal(o, v[:, [2, 3, 0, 1]], err_msg=name)


def test_worked_softmax_one_bucket_one_chunk():
    # one bucket, one chunk of 3: query i attends to the two other positions, scores scale q_i . qk_j/|qk_j|
    qk = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]).reshape(1, 3, 1, 2)
    v = np.array([[1.0], [10.0], [100.0]]).reshape(1, 3, 1, 1)
    bk = np.zeros((1, 3, 1, 1), dtype=np.int64)
    k = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8)]
    sc = 1 / math.sqrt(2)
    want = []
    for i, qi in enumerate([(1.0, 0.0), (0.0, 2.0), (3.0, 4.0)]):
        js = [j for j in range(3) if j != i]
        w = [math.exp(sc * (qi[0] * k[j][0] + qi[1] * k[j][1])) for j in js]
        want.append(sum(wj * [1.0, 10.0, 100.0][j] for wj, j in zip(w, js)) / sum(w))
    for name, o in _all(qk, v, buckets=bk, chunk=3).items():
        # both sides round positive terms only: the key norm and divide, a 2-term dot, the scale, exp (1 ulp), a
        # 2-term weighted sum and a divide -- at most 16 roundings each, so the two differ by <= 2 gamma_16 relative
        np.testing.assert_allclose(o.ravel(), want, rtol=2 * gamma(16, np.float64), err_msg=name)


def test_chunks_attend_to_themselves_and_the_previous_chunk():
    # one bucket, chunk 2, l = 6: sorted order = positions; chunk(t) = t // 2
    _, union, _ = allowed_keys(np.zeros((6, 1), dtype=int), 2)
    assert union[0] == {0, 1} and union[2] == {0, 1, 2, 3} and union[5] == {2, 3, 4, 5}
    _, union_w, _ = allowed_keys(np.zeros((6, 1), dtype=int), 2, wrap=True)
    assert union_w[0] == {0, 1, 4, 5} and union_w[2] == union[2]
    # the reference agrees: o_0 = v_1 (its only other key) without wrap
    rng = np.random.default_rng(1)
    qk, v = rng.standard_normal((1, 6, 1, 3)), rng.standard_normal((1, 6, 1, 2))
    for name, o in _all(qk, v, buckets=np.zeros((1, 6, 1, 1), dtype=np.int64), chunk=2).items():
        np.testing.assert_array_equal(o[0, 0], v[0, 1], err_msg=name)


def test_causal_first_position_attends_to_itself():
    rng = np.random.default_rng(2)
    qk, v = rng.standard_normal((2, 5, 2, 3)), rng.standard_normal((2, 5, 2, 2))
    bk = rng.integers(0, 2, (2, 5, 2, 2))
    for name, o in _all(qk, v, buckets=bk, chunk=2, causal=True).items():
        np.testing.assert_array_equal(o[:, 0], v[:, 0], err_msg=name)


def test_last_chunk_short_against_mpmath():
    rng = np.random.default_rng(3)
    qk, v = rng.standard_normal((1, 7, 2, 3)), rng.standard_normal((1, 7, 2, 2))
    bk = rng.integers(0, 2, (1, 7, 2, 3))
    for kw in (dict(), dict(causal=True), dict(wrap=True)):
        exact = lsh_mpmath(qk, v, bk, 3, 1 / math.sqrt(3), **kw)
        for name, o in _all(qk, v, buckets=bk, chunk=3, **kw).items():
            assert_within(o, exact, _bound(qk, v, bk, 3, name, **kw), context=f"{name} {kw}")


def test_duplicated_rounds_equal_one_round():
    # de-duplication by counting: a round repeated gives every key N = 2, the -log 2 cancels in the softmax
    rng = np.random.default_rng(4)
    qk, v = rng.standard_normal((1, 9, 1, 4)), rng.standard_normal((1, 9, 1, 3))
    bk = rng.integers(0, 3, (1, 9, 1, 1))
    exact = lsh_mpmath(qk, v, bk, 2, 0.5)
    for name, o in _all(qk, v, buckets=np.concatenate([bk, bk], axis=3), chunk=2).items():
        assert_within(o, exact, _bound(qk, v, np.concatenate([bk, bk], axis=3), 2, name), context=name)


def test_float32_stays_float32_and_float64_otherwise():
    rng = np.random.default_rng(5)
    qk, v = rng.standard_normal((1, 5, 1, 2)).astype(np.float32), rng.standard_normal((1, 5, 1, 2))
    bk = np.zeros((1, 5, 1, 1), dtype=np.int64)
    for vw, b in PAIRS:
        assert lsh_attention(qk, v.astype(np.float32), buckets=bk, chunk=2, view=vw, backend=b).dtype == np.float32
        assert lsh_attention(qk, v, buckets=bk, chunk=2, view=vw, backend=b).dtype == np.float64


# ------------------------------------------------------------------ hashing

def test_random_rotations_golden_and_seeded():
    R = random_rotations(3, 4, 2, seed=5)
    assert R.shape == (2, 3, 2)
    golden = [float.fromhex(x) for x in ("-0x1.9a96c17a324a9p-1", "-0x1.530930ee62e3ep+0", "-0x1.fca504a3d846ap-3",
                                         "0x1.ae89324d005b8p-2")]
    assert R.ravel()[:4].tolist() == golden
    np.testing.assert_array_equal(R, random_rotations(3, 4, 2, seed=5))
    assert not np.array_equal(R, random_rotations(3, 4, 2, seed=6))


def test_hash_buckets_match_the_argmax_oracle():
    rng = np.random.default_rng(6)
    qk = rng.standard_normal((2, 20, 2, 5))
    R = random_rotations(5, 6, 3, seed=1)
    bk = hash_buckets(qk, R)
    np.testing.assert_array_equal(bk, hash_oracle(qk, R))
    assert bk.min() >= 0 and bk.max() < 6
    # the normalized keys hash alike (argmax is invariant to a positive factor)
    np.testing.assert_array_equal(hash_buckets(normalize_keys(qk), R), bk)


def test_seed_and_rotations_paths_agree_with_buckets():
    rng = np.random.default_rng(7)
    qk, v = rng.standard_normal((1, 12, 2, 4)), rng.standard_normal((1, 12, 2, 2))
    R = random_rotations(4, 4, 2, seed=3)
    want = lsh_attention(qk, v, buckets=hash_buckets(qk, R), chunk=3)
    np.testing.assert_array_equal(lsh_attention(qk, v, rotations=R, chunk=3), want)
    np.testing.assert_array_equal(lsh_attention(qk, v, seed=3, n_buckets=4, n_rounds=2, chunk=3), want)


def test_zero_key_normalizes_to_zero():
    qk = np.zeros((1, 2, 1, 3))
    np.testing.assert_array_equal(normalize_keys(qk), qk)


# ------------------------------------------------------------------ bad input

_QK, _V, _B = np.ones((1, 4, 1, 2)), np.ones((1, 4, 1, 3)), np.zeros((1, 4, 1, 2), dtype=np.int64)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(), ValueError, "buckets"),
    (dict(buckets=_B, seed=1), ValueError, "buckets"),
    (dict(buckets=_B.astype(float)), TypeError, "buckets"),
    (dict(buckets=-_B - 1), ValueError, "buckets"),
    (dict(buckets=_B[:, :3]), ValueError, "buckets"),
    (dict(buckets=_B + 3, n_buckets=2), ValueError, "buckets"),
    (dict(buckets=_B, n_rounds=3), ValueError, "n_rounds"),
    (dict(seed=1, n_rounds=2), ValueError, "n_buckets"),
    (dict(seed=1, n_buckets=3, n_rounds=2), ValueError, "n_buckets"),
    (dict(rotations=np.ones((2, 3, 2))), ValueError, "rotations"),
    (dict(buckets=_B, chunk=0), ValueError, "chunk"),
    (dict(buckets=_B, causal="True"), TypeError, "causal"),
    (dict(buckets=_B, wrap=1), TypeError, "wrap"),
    (dict(buckets=_B, view="dense"), ValueError, "view"),
    (dict(buckets=_B, view="materialized", backend="numba"), ValueError, "backend"),
])
def test_bad_input_names_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        lsh_attention(_QK, _V, **kwargs)


def test_bad_v_shape():
    with pytest.raises(ValueError, match="v"):
        lsh_attention(_QK, np.ones((1, 5, 1, 3)), buckets=_B)


# ------------------------------------------------------------------ the verify op

def test_verify_reference_and_kernel_conform_and_a_trax_spelling_conforms():
    from oracles.verify.harness import verify
    from refimpl.attention.lsh.numba import lsh_attention_kernel

    for target in (lsh_attention, lsh_attention_kernel):
        rep = verify("attention.lsh", target, adapter="refimpl", max_examples=4)
        assert rep.passed, rep.summary()
    rep = verify("attention.lsh", trax_like, adapter="trax", max_examples=4)
    assert rep.passed, rep.summary()
    rep = verify("attention.lsh", trax_like_no_wrap, adapter="trax", max_examples=4)
    assert not rep.passed


def _trax_like(qk, v, buckets, chunk_len, n_hashes, causal, wrap=True):
    """A candidate in trax's spelling: head-first (b h l n), buckets (b h r l), keys normalized to length sqrt(n)
    and scores divided by sqrt(n) (scale 1), self penalized by -1e5, chunk 0 looking back at the last chunk."""
    qk, v, bk = np.asarray(qk, float), np.asarray(v, float), np.asarray(buckets)
    b, h, l, n = qk.shape
    out = np.zeros(v.shape)
    nc = -(-l // chunk_len)
    for bi in range(b):
        for hi in range(h):
            x = qk[bi, hi]
            kn = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 0.0) if n else x
            kn = np.where(np.isfinite(kn), kn, 0.0)
            s = x @ kn.T / math.sqrt(n) if n else np.zeros((l, l))
            ch = []
            for ri in range(n_hashes):
                rank = np.empty(l, dtype=int)
                rank[np.argsort(bk[bi, hi, ri], kind="stable")] = np.arange(l)
                ch.append(rank // chunk_len)
            M = np.zeros((n_hashes, l, l), bool)
            for ri in range(n_hashes):
                c = ch[ri]
                prev = (c - 1) % nc if (wrap and nc > 1) else c - 1
                M[ri] = (bk[bi, hi, ri][:, None] == bk[bi, hi, ri][None, :]) & (
                    (c[None, :] == c[:, None]) | (c[None, :] == prev[:, None]))
                if causal:
                    M[ri] &= np.tri(l, dtype=bool)
            N = M.sum(0)
            pen = s - 1e5 * np.eye(l) - np.log(np.maximum(N, 1))
            z = [np.where(M[ri], pen, -np.inf) for ri in range(n_hashes)]
            allz = np.concatenate(z, axis=1) if l else np.zeros((0, 0))
            if l:
                m = allz.max(axis=1, keepdims=True)
                w = np.exp(allz - m)
                out[bi, hi] = (w / w.sum(axis=1, keepdims=True)) @ np.tile(v[bi, hi], (n_hashes, 1))
    return out


def trax_like(qk, v, buckets, chunk_len, n_hashes, causal):
    return _trax_like(qk, v, buckets, chunk_len, n_hashes, causal)


def trax_like_no_wrap(qk, v, buckets, chunk_len, n_hashes, causal):
    return _trax_like(qk, v, buckets, chunk_len, n_hashes, causal, wrap=False)


# ------------------------------------------------------------------ the mutant corpus

_LSH_MUTANTS = ("self-always", "self-never", "no-dedup", "dedup-by-bucket", "keys-not-normalized",
                "queries-normalized", "next-chunk", "no-bucket-mask", "causal-off-by-one", "unstable-sort", "no-wrap",
                "rounds-averaged", "scale-sqrt-missing")
_FAST_MUTANTS = ("self-always", "no-dedup", "next-chunk")  # the whole corpus: refimpl mutants --op attention.lsh


def test_the_lsh_mutant_corpus_is_complete():
    from oracles.mutants import all_mutants, import_errors

    assert "lsh" not in import_errors()
    assert {m.name for m in all_mutants("attention.lsh", kind="forward")} == set(_LSH_MUTANTS)


@pytest.mark.parametrize("name", _FAST_MUTANTS)
def test_lsh_mutant_is_killed(name):
    from oracles.mutants import run_mutants

    (res,) = run_mutants("attention.lsh", names=[f"attention.lsh:{name}"])
    assert res.error is None, res.error
    assert res.killed, f"{name} survived: {res.verdict}"


def test_the_correct_mutant_kernel_conforms():
    from oracles.mutants.lsh import lsh_correct
    from oracles.verify.harness import verify

    assert verify("attention.lsh", lsh_correct, max_examples=4).passed


def test_kernel_matches_reference_on_a_long_sequence():
    # L = 301 (not a multiple of the chunk 16), 4 buckets x 2 rounds, causal: both within their bound of the exact
    # answer, so within the sum of the two bounds of each other
    rng = np.random.default_rng(8)
    qk, v = rng.standard_normal((1, 301, 2, 8)), rng.standard_normal((1, 301, 2, 4))
    bk = rng.integers(0, 4, (1, 301, 2, 2))
    for dt in (np.float64, np.float32):
        a, c = qk.astype(dt), v.astype(dt)
        ref = lsh_attention(a, c, buckets=bk, chunk=16, causal=True)
        ker = lsh_attention(a, c, buckets=bk, chunk=16, causal=True, backend="numba")
        b = lsh_attention_bound(a, c, bk, 16, 1 / math.sqrt(8), dt, causal=True)
        assert_within(ker, ref, Bound(2 * np.asarray(b.values), "2 x " + b.source), context=str(dt))
