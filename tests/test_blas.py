"""refimpl._blas.gemm: C = op(A) op(B) + beta C on strided row-major views, against NumPy's matmul."""
import numpy as np
import pytest
from numba import njit

from oracles.tolerance import assert_within, componentwise_bound
from refimpl._blas import GEMM_SINGLE_THREAD, gemm, gemm_scalars, gemm_unchecked


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("mnk", [(5, 3, 4), (0, 3, 2), (3, 0, 2), (3, 2, 0), (1, 1, 1), (70, 65, 64), (300, 40, 30)])
# (beta, how): with gemm_scalars, beta 0, 1, -1 are read from the table; 0.5 is allocated; gemm_unchecked takes
# beta in {0, 1, -1} only
@pytest.mark.parametrize("beta,table", [(be, t) for be in (0.5, 0.0, 1.0, -1.0) for t in (False, True, "unchecked")
                                        if not (t == "unchecked" and be == 0.5)])
def test_gemm_strided_views(dtype, ta, tb, mnk, beta, table):
    m, n, k = mnk
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    X = rng.standard_normal((2, max(m, k) + 3, 3, max(m, k) + 5)).astype(dtype)
    A = X[1, :k, 1, :m] if ta else X[1, :m, 1, :k]  # a strided head slice, as the kernels pass it
    Y = rng.standard_normal((max(n, k) + 2, 2 * max(n, k) + 1)).astype(dtype)
    B = Y[:n, :k] if tb else Y[:k, :n]
    Z = rng.standard_normal((m + 1, 2, n + 3)).astype(dtype)
    C = Z[:m, 1, :n]
    Z_before = Z.copy()
    opA, opB = (A.T if ta else A).astype(np.float64), (B.T if tb else B).astype(np.float64)
    exact = opA @ opB + beta * C.astype(np.float64)
    if table == "unchecked":
        _unchecked(A, ta, B, tb, C, beta, gemm_scalars(C))
    elif table:
        gemm(A, ta, B, tb, C, beta, gemm_scalars(C))
    else:
        gemm(A, ta, B, tb, C, beta)
    # each entry: a dot of length k plus one scaled addend -> depth k + 2 (products, sums, the beta term)
    mag = np.abs(opA) @ np.abs(opB) + abs(beta) * np.abs(Z_before[:m, 1, :n].astype(np.float64))
    assert_within(C, exact, componentwise_bound(mag, k + 2, dtype, what="gemm: k products summed, plus beta C"))
    # nothing outside the view is touched
    Z_after = Z.copy()
    Z_after[:m, 1, :n] = Z_before[:m, 1, :n]
    np.testing.assert_array_equal(Z_after, Z_before)


@njit
def _unchecked(A, ta, B, tb, C, beta, sc):  # gemm_unchecked is inline="always": called from a kernel
    gemm_unchecked(A, ta, B, tb, C, beta, sc)


def test_gemm_splits_large_products_into_single_thread_blocks():
    # m n k above the single-thread size: the result is the same as one product
    rng = np.random.default_rng(1)
    m, n, k = 200, 64, 64
    assert m * n * k > GEMM_SINGLE_THREAD
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    C = np.zeros((m, n))
    gemm(A, False, B, False, C, 0.0)
    assert_within(C, A @ B, componentwise_bound(np.abs(A) @ np.abs(B), k + 1, np.float64))
    C2 = np.full((m, n), np.nan)
    _unchecked(A, False, B, False, C2, 0.0, gemm_scalars(C2))  # beta = 0: C is not read
    assert_within(C2, A @ B, componentwise_bound(np.abs(A) @ np.abs(B), k + 1, np.float64))


def test_gemm_bad_inputs():
    A = np.zeros((3, 4))
    with pytest.raises(ValueError, match="shapes"):
        gemm(A, False, np.zeros((5, 2)), False, np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="unit stride"):
        gemm(A[:, ::2], False, np.zeros((2, 2)), False, np.zeros((3, 2)), 0.0)
    with pytest.raises(TypeError, match="dtype"):
        gemm(A.astype(np.float32), False, np.zeros((4, 2)), False, np.zeros((3, 2)), 0.0)


def test_gemm_rejects_a_wrong_scalar_table():
    A = np.ones((2, 2))
    with pytest.raises(ValueError, match="scalars must be gemm_scalars"):
        gemm(A, False, A, False, np.zeros((2, 2)), 1.0, np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="scalars must be gemm_scalars"):
        gemm(A, False, A, False, np.zeros((2, 2)), 1.0, gemm_scalars(np.zeros(1, np.float32)))
