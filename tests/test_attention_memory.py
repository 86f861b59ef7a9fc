"""Associative memory: the text's 2-D worked example, sparse binary keys, the Hamming bound."""
import math
from fractions import Fraction

import numpy as np
import pytest

from oracles.attention import bernstein_threshold, overlap_pmf
from oracles.tolerance import assert_within, componentwise_bound, gamma
from refimpl.attention.memory import (build_memory, expected_crosstalk, hamming_bound, hamming_bound_entropy,
                                     retrieval_quality, retrieve, sparse_binary_keys, store)

S2, S5, S10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)


def _b(expected, depth=8):
    # Roundings on the longest chain: a key entry 2 (sqrt, division); a stored entry 1 per product and 1 per add
    # (three pairs, the first add to 0 exact: <= 5 with the key's); a retrieval 1 + 1 (product, 2-term sum): 7
    # for the candidate.  The float64 expected values (sqrt, division, add) carry 3 more, relative to |expected|.
    # The computation on absolute values exceeds |expected| by at most 5.0 in these cases (|x| <= 3,
    # |k_j| <= 2/sqrt5), so with M = |expected| + 6 and depth 8: gamma_8 M >= gamma_7 (|expected| + 5) +
    # gamma_3 |expected| whenever |expected| <= 6.5 (here <= 3.8).
    return componentwise_bound(np.abs(np.asarray(expected)) + 6.0, depth, np.float64, oracle_dtype=None,
                               what="2-D worked example: sqrt, division, 2-term sums")


def test_texts_worked_example_exactly():
    x1, x2, x3 = np.array([2.0, 3.0]), np.array([-2.0, 1.0]), np.array([1.0, 2.0])
    # keys aligned with the axes: the memory stores the vectors as columns
    A = store(np.zeros((2, 2)), x1, np.array([1.0, 0.0]))
    assert A.tolist() == [[2, 0], [3, 0]]
    A = store(A, x2, np.array([0.0, 1.0]))
    assert A.tolist() == [[2, -2], [3, 1]]
    # orthonormal keys k1 = (1, 1)/sqrt2, k2 = (-1, 1)/sqrt2
    k1, k2 = np.array([1.0, 1.0]) / S2, np.array([-1.0, 1.0]) / S2
    A1 = store(np.zeros((2, 2)), x1, k1)
    assert_within(A1, np.array([[2, 2], [3, 3]]) / S2, _b(A1))
    A2 = store(A1, x2, k2)
    assert_within(A2, np.array([[4, 0], [2, 4]]) / S2, _b(A2))
    assert_within(retrieve(A2, k1), x1, _b(x1))
    assert_within(retrieve(A2, k2), x2, _b(x2))
    # a third, necessarily non-orthogonal key corrupts every retrieval -- the text's printed values
    k3 = np.array([2.0, -1.0]) / S5
    A3 = store(A2, x3, k3)
    assert_within(A3, np.array([[4, 0], [2, 4]]) / S2 + np.array([[2, -1], [4, -2]]) / S5, _b(A3))
    x1p = [2 + 1 / S10, 3 + 2 / S10]
    x2p = [-2 - 3 / S10, 1 - 6 / S10]
    x3p = [8 / S10 + 1, 2]
    assert_within(retrieve(A3, k1), x1p, _b(x1p))
    assert_within(retrieve(A3, k2), x2p, _b(x2p))
    assert_within(retrieve(A3, k3), x3p, _b(x3p))
    assert_within(retrieve(A3, np.stack([k1, k2, k3])), np.array([x1p, x2p, x3p]), _b([x1p, x2p, x3p]))
    # and the corruption is real: x3 is not retrieved
    assert abs(retrieve(A3, k3)[0] - 1.0) > 2.5


def test_sparse_keys_overlap_statistics():
    d, ones, n = 100, 10, 4000
    K = sparse_binary_keys(n, d, ones, seed=5)
    assert K.shape == (n, d)
    assert np.all((K == 0) | (K == 1 / math.sqrt(ones)))
    assert np.all(np.count_nonzero(K, axis=1) == ones)
    assert_within(np.linalg.norm(K, axis=1), np.ones(n), componentwise_bound(np.ones(n), ones + 2, np.float64))
    # disjoint pairs (0,1), (2,3), ... are independent: (k_i.k_j)^2 = c^2/ones^2 in [0, 1]
    X = np.sum(K[0::2] * K[1::2], axis=1) ** 2
    pmf = overlap_pmf(d, ones)
    m1 = sum(Fraction(c * c, ones * ones) * p for c, p in enumerate(pmf))
    m2 = sum(Fraction(c ** 4, ones ** 4) * p for c, p in enumerate(pmf))
    var = float(m2 - m1 * m1)
    # closed form (hypergeometric) = the exact rational pmf sum; the closed form is a float64 sum of
    # len(pmf) nonnegative products of a few factors each: gamma_{len(pmf)+4} relative
    assert_within(expected_crosstalk(2, d, ones), float(m1),
                  componentwise_bound(float(m1), len(pmf) + 4, np.float64, oracle_dtype=None))
    # Bernstein, alpha = 1e-9 (deterministic seed; the threshold is derived, |X - mu| <= 1)
    t = bernstein_threshold(var, 1.0, X.size, 1e-9)
    assert abs(X.mean() - float(m1)) <= t, (X.mean(), float(m1), t)


def test_retrieval_quality_degrades_with_load_and_matches_crosstalk():
    qs = [retrieval_quality(n, seed=1) for n in (1, 10, 50, 200)]
    # a single pair is retrieved exactly up to rounding: x' = x (k.k) with k = 1/sqrt(10) on 10 entries;
    # rounding 1/sqrt(10) (2 ops), the outer product (1), the retrieval sum over d = 100 entries: gamma_{d+4}
    assert qs[0]["rel_error"] <= gamma(100 + 4, np.float64)
    errs = [q["rel_sq_error"] for q in qs]
    assert errs == sorted(errs) and qs[-1]["cosine"] < qs[1]["cosine"]
    # conditional on the keys, E sum_j |x'_j - x_j|^2 = p sum_j sum_{i != j} (k_i.k_j)^2 exactly; check the
    # memory's algebra on fixed keys with exact (integer-scaled) arithmetic
    K = sparse_binary_keys(30, 100, 10, seed=2)
    G = K @ K.T
    X = np.eye(30)[:, :30]
    Xr = retrieve(build_memory(X, K), K)
    assert_within(Xr, G, componentwise_bound(np.abs(G) + 1, 30 + 2, np.float64, what="A k_j = sum_i (k_i.k_j) x_i"))


def test_hamming_bound():
    assert hamming_bound(7, 3) == 16  # the perfect Hamming [7,4] code
    assert hamming_bound(23, 7) == 4096  # the perfect binary Golay code
    assert hamming_bound(5, 1) == 32 and hamming_bound(5, 2) == 32
    # sum_{l <= t} C(d, l) <= 2^{d H(t/d)} (t/d <= 1/2) and >= C(d, t) >= 2^{d H(t/d)} / (d + 1) give
    # d(1 - H(t/d)) <= log2 A <= d(1 - H(t/d)) + log2(d + 1), and H(t/d) <= H(m/(2d)) = the text's p
    for d, m in [(100, 11), (100, 21), (64, 9), (200, 41)]:
        log2A = math.log2(hamming_bound(d, m))
        t = (m - 1) // 2
        H = lambda p: -p * math.log2(p) - (1 - p) * math.log2(1 - p)  # noqa: E731
        assert d * (1 - H(t / d)) - 1e-9 <= log2A <= d * (1 - H(t / d)) + math.log2(d + 1) + 1e-9
        assert hamming_bound_entropy(d, m) <= log2A + 1e-9
    with pytest.raises(ValueError, match="m"):
        hamming_bound(5, 9)


def test_memory_bad_inputs():
    with pytest.raises(ValueError, match="x"):
        store(np.zeros((2, 3)), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="k"):
        retrieve(np.zeros((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="^ones: expected at most d = 5"):
        sparse_binary_keys(3, 5, 6)
    # a key of d = 10 entries cannot have 11 ones: the closed form must refuse, not return a number
    with pytest.raises(ValueError, match="^ones: expected at most d = 10"):
        expected_crosstalk(4, ones=11, d=10)
    with pytest.raises(ValueError, match="^ones: expected at most d = 10"):
        retrieval_quality(4, d=10, ones=11)
    with pytest.raises(TypeError, match="^A: expected a floating-point dtype"):
        store(np.zeros((2, 3), dtype=np.int64), np.ones(2), np.ones(3))
