r"""Associative memory (the text's section on fast weights and associative memory).

A memory ``A`` (``(p, d)``: values of size ``p``, keys of size ``d``) stores the pair ``(x, k)`` by
``A <- A + x k^T`` and retrieves with ``x' = A k``.  With orthonormal keys retrieval is exact;
with non-orthogonal keys, ``A k_j = sum_i (k_i^T k_j) x_i`` mixes in cross-talk.

* :func:`store`, :func:`retrieve`, :func:`build_memory`.
* :func:`sparse_binary_keys` -- ``n`` random keys of size ``d`` with ``ones`` entries equal to
  ``1/sqrt(ones)`` (unit norm), the text's ``d = 100, 10 ones`` example.
* :func:`retrieval_quality` -- store ``n`` random pairs, retrieve, report the mean relative error
  ``|x'_j - x_j| / |x_j|`` and mean cosine similarity.
* :func:`expected_crosstalk` -- the closed form of ``E|x'_j - x_j|^2 / E|x|^2`` for random supports:
  ``(n - 1) E[c^2] / ones^2``, ``c ~ Hypergeometric(d, ones, ones)`` the overlap count.
* :func:`hamming_bound`, :func:`hamming_bound_entropy` -- the text's bounds on the number of
  binary codewords of length ``d`` with minimum distance ``m``.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from refimpl._validate import as_float_array, check_int, check_shape

__all__ = ["store", "retrieve", "build_memory", "sparse_binary_keys", "retrieval_quality",
           "expected_crosstalk", "hamming_bound", "hamming_bound_entropy"]


def _check_ones(ones, d: int) -> int:
    """The number of nonzero entries of a key: an integer ``1 <= ones <= d``."""
    ones = check_int(ones, "ones", minimum=1)
    if ones > d:
        raise ValueError(f"ones: expected at most d = {d} (a key has d entries), got {ones}")
    return ones


def store(A, x, k) -> np.ndarray:
    r"""``A + x k^T``; ``A (p d)``, ``x (p,)``, ``k (d,)``."""
    A = as_float_array(A, "A", ndim=2, allow_complex=False)
    p, d = A.shape
    x = as_float_array(x, "x", ndim=1, allow_complex=False)
    check_shape(x, "x", (p,), "(p,) from A")
    k = as_float_array(k, "k", ndim=1, allow_complex=False)
    check_shape(k, "k", (d,), "(d,) from A")
    # A <- A + x k^T
    return A + np.outer(x, k)


def retrieve(A, k) -> np.ndarray:
    r"""``x' = A k``; ``k`` of shape ``(d,)`` or ``(n, d)`` (rows) -> ``(p,)`` or ``(n, p)``."""
    A = as_float_array(A, "A", ndim=2, allow_complex=False)
    k = as_float_array(k, "k", ndim=(1, 2), allow_complex=False)
    if k.shape[-1] != A.shape[1]:
        raise ValueError(f"k: expected last axis {A.shape[1]} (the key size of A), got shape {k.shape}")
    # x' = A k
    return k @ A.T


def build_memory(X, K) -> np.ndarray:
    r"""``A = sum_i x_i k_i^T`` for rows ``X (n p)``, ``K (n d)``, stored one pair at a time."""
    X = as_float_array(X, "X", ndim=2, allow_complex=False)
    K = as_float_array(K, "K", ndim=2, allow_complex=False)
    if K.shape[0] != X.shape[0]:
        raise ValueError(f"K: expected {X.shape[0]} rows (one key per value: X has shape {X.shape}), "
                         f"got shape {K.shape}")
    A = np.zeros((X.shape[1], K.shape[1]))
    for x, k in zip(X, K):
        A = store(A, x, k)
    return A


def sparse_binary_keys(n: int, d: int = 100, ones: int = 10, seed=0) -> np.ndarray:
    r"""``(n, d)`` keys, each with ``ones`` entries ``1/sqrt(ones)`` at a uniformly random support."""
    n = check_int(n, "n", minimum=0)
    d = check_int(d, "d", minimum=1)
    ones = _check_ones(ones, d)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int(seed, "seed"))
    K = np.zeros((n, d))
    for i in range(n):
        K[i, rng.choice(d, size=ones, replace=False)] = 1.0 / math.sqrt(ones)
    return K


def retrieval_quality(n: int, *, d: int = 100, ones: int = 10, p: int = 16, seed=0) -> dict:
    r"""Store ``n`` pairs (Gaussian values ``x_i ~ N(0, I_p)``, sparse binary keys) and retrieve all.

    Returns ``dict(rel_error=mean_j |x'_j - x_j|/|x_j|, rel_sq_error=sum_j |x'_j-x_j|^2 / sum_j |x_j|^2,
    cosine=mean_j cos(x'_j, x_j))``.
    """
    n = check_int(n, "n", minimum=1)
    rng = np.random.default_rng(check_int(seed, "seed"))
    K = sparse_binary_keys(n, d, ones, rng)
    X = rng.standard_normal((n, check_int(p, "p", minimum=1)))
    A = build_memory(X, K)
    Xr = retrieve(A, K)
    err = np.linalg.norm(Xr - X, axis=1)
    nx = np.linalg.norm(X, axis=1)
    cos = np.sum(Xr * X, axis=1) / (np.linalg.norm(Xr, axis=1) * nx)
    return dict(rel_error=float(np.mean(err / nx)), rel_sq_error=float(np.sum(err ** 2) / np.sum(nx ** 2)),
                cosine=float(np.mean(cos)))


def expected_crosstalk(n: int, d: int = 100, ones: int = 10) -> float:
    r"""``E|x'_j - x_j|^2 / E|x_j|^2 = (n - 1) E[c^2] / ones^2`` for iid values and random supports.

    ``x'_j - x_j = sum_{i != j} (k_i^T k_j) x_i`` with ``k_i^T k_j = c_ij / ones``; the overlap ``c``
    of two random ``ones``-subsets of ``d`` is hypergeometric: ``E c = ones^2/d``,
    ``Var c = ones (ones/d) (1 - ones/d) (d - ones)/(d - 1)``.
    """
    n = check_int(n, "n", minimum=1)
    d = check_int(d, "d", minimum=2)
    ones = _check_ones(ones, d)
    mean = ones * ones / d
    var = ones * (ones / d) * (1 - ones / d) * (d - ones) / (d - 1)
    return (n - 1) * (var + mean * mean) / ones ** 2


def hamming_bound(d: int, m: int) -> Fraction:
    r"""``A_2(d, m) <= 2^d / sum_{l=0}^{floor((m-1)/2)} C(d, l)`` (exact rational)."""
    d = check_int(d, "d", minimum=1)
    m = check_int(m, "m", minimum=1)
    if m > d:
        raise ValueError(f"m: expected a minimum distance 1 <= m <= d = {d}, got {m}")
    t = (m - 1) // 2
    return Fraction(2 ** d, sum(math.comb(d, l) for l in range(t + 1)))


def hamming_bound_entropy(d: int, m: int) -> float:
    r"""The text's asymptotic form ``log2 A_2(d, m) <~ d (1 - H(p))``, ``p = m/(2d)``, ``H`` in bits.

    Returns the exponent ``d (1 - H(m/(2d)))`` (the ``o(d)`` term is dropped).
    """
    d = check_int(d, "d", minimum=1)
    m = check_int(m, "m", minimum=1)
    if m > d:
        raise ValueError(f"m: expected 1 <= m <= d = {d}, got {m}")
    p = m / (2 * d)
    # H(p) = -p log2 p - (1-p) log2 (1-p)
    H = -p * math.log2(p) - (1 - p) * math.log2(1 - p)
    return d * (1 - H)
