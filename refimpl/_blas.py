r"""BLAS matrix products callable from Numba kernels, on strided row-major views, one thread per call.

``gemm(A, ta, B, tb, C, beta)`` computes ``C = op(A) op(B) + beta C`` (``op(X) = X^T`` when the flag
is set) for 2-D float32/float64 arrays whose *last* axis has unit stride; the row stride may be
anything. That lets a kernel multiply a chunk of one head of a ``(b l h d)`` array in place
(``q[bi, s:s + T, hi, :]``, row stride ``h d``) and write into the output the same way, with no
copies; ``np.dot`` inside Numba accepts only contiguous arrays.

It calls Numba's own BLAS bridge (``numba_xxgemm``, the function behind ``np.dot`` in Numba, which
forwards to SciPy's ``cython_blas``), so kernels using it stay cacheable.

Row-major ``C (m n) = op(A) (m k) op(B) (k n)`` is column-major ``C^T = op(B)^T op(A)^T``: a
row-major matrix with row stride ``r`` is, read column-major, its transpose with leading dimension
``r``.  So the Fortran call is ``xgemm(tb, ta, n, m, k, 1, B, ldb, A, lda, beta, C, ldc)``.

One thread per call: OpenBLAS runs a GEMM with ``m n k <= 2^18`` multiply-adds on the calling thread
and starts its own threads above that, which inside a ``prange`` region oversubscribes the cores
(measured 30x slower).  :func:`gemm` therefore splits the rows of ``C`` into blocks under that size.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["gemm", "gemm_unchecked", "gemm_scalars", "GEMM_SINGLE_THREAD"]

GEMM_SINGLE_THREAD = 1 << 18

_char = ir.IntType(8)
_voidp = ir.IntType(8).as_pointer()


@intrinsic
def _xxgemm(typingctx, kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Raw column-major ``xgemm``: kind/ta/tb are byte codes ('s'/'d', 'n'/'t'), pointers are integer addresses."""
    sig = types.int32(kind, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        intp_t = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [_char, _char, _char, intp_t, intp_t, intp_t, _voidp, _voidp, intp_t,
                                                _voidp, intp_t, _voidp, _voidp, intp_t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        kind_, ta_, tb_, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        as_char = lambda x: builder.trunc(x, _char)  # noqa: E731
        as_ptr = lambda x: builder.inttoptr(x, _voidp)  # noqa: E731
        return builder.call(fn, (as_char(kind_), as_char(ta_), as_char(tb_), m_, n_, k_, as_ptr(al), as_ptr(a_), lda_,
                                 as_ptr(b_), ldb_, as_ptr(be), as_ptr(c_), ldc_))

    return sig, codegen


@njit(cache=True)
def _ld(X):
    # leading dimension of the column-major reading: the row stride in elements (>= the row length, >= 1)
    return max(X.strides[0] // X.itemsize, X.shape[1], 1)


@njit(cache=True)
def gemm(A, ta, B, tb, C, beta, scalars=None):
    """``C = op(A) @ op(B) + beta C`` in place; 2-D views with unit stride along the last axis.

    ``scalars``: optionally :func:`gemm_scalars` ``(C)``, allocated once by the caller, so that calls with beta
    0, 1 or -1 allocate nothing."""
    m, n = C.shape
    k = A.shape[0] if ta else A.shape[1]
    if (A.shape[1] if ta else A.shape[0]) != m or (B.shape[1] if tb else B.shape[0]) != k or \
            (B.shape[0] if tb else B.shape[1]) != n:
        raise ValueError("gemm: shapes do not match")
    if A.itemsize != C.itemsize or B.itemsize != C.itemsize:
        raise TypeError("gemm: A, B and C must share one dtype (float32 or float64)")
    if (A.shape[1] > 1 and A.strides[1] != A.itemsize) or (B.shape[1] > 1 and B.strides[1] != B.itemsize) or \
            (C.shape[1] > 1 and C.strides[1] != C.itemsize):
        raise ValueError("gemm: the last axis of every operand must have unit stride")
    # alpha = 1 and beta by address: from the caller's table (gemm_scalars) when beta is 0, 1 or -1, so the call
    # allocates nothing (a heap allocation per call is measurable at 16-row GEMMs); otherwise a new pair [1, beta]
    beta_at = 1 if beta == 0 else (0 if beta == 1 else (2 if beta == -1 else -1))
    if scalars is not None and beta_at >= 0:
        if scalars.shape[0] != 3 or scalars.itemsize != C.itemsize or scalars[0] != 1 or scalars[1] != 0 or \
                scalars[2] != -1:
            raise ValueError("gemm: scalars must be gemm_scalars(C)")
        _calls(A, ta, B, tb, C, scalars, beta_at)
    else:
        sc = np.empty(2, dtype=C.dtype)
        sc[0] = 1.0
        sc[1] = beta
        _calls(A, ta, B, tb, C, sc, 1)


@njit(cache=True)
def gemm_scalars(like):
    """The table ``[1, 0, -1]`` in ``like``'s dtype that :func:`gemm` reads alpha and beta from (one per thread)."""
    sc = np.empty(3, dtype=like.dtype)
    sc[0] = 1.0
    sc[1] = 0.0
    sc[2] = -1.0
    return sc


@njit(inline="always")
def _calls(A, ta, B, tb, C, sc, beta_at):
    # the BLAS calls of gemm and gemm_unchecked: alpha at sc[0], beta at sc[beta_at] (inlined into the caller:
    # no raise here, so a kernel's prange body stays parallel)
    m, n = C.shape
    k = A.shape[0] if ta else A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        # C = beta C (beta = 0: C is not read, as in BLAS)
        beta = sc[beta_at]
        for i in range(m):
            for j in range(n):
                C[i, j] = 0.0 if beta == 0 else beta * C[i, j]
        return
    kind = 115 if C.itemsize == 4 else 100  # 's' / 'd'
    item = C.itemsize
    lda, ldb, ldc = _ld(A), _ld(B), _ld(C)
    # rows of C per call: at most 2^18 multiply-adds each (single-threaded OpenBLAS)
    rows = max(1, GEMM_SINGLE_THREAD // max(1, n * k))
    for r0 in range(0, m, rows):
        mr = min(rows, m - r0)
        # rows r0.. of op(A): rows of A, or columns of A when transposed
        a_off = (r0 if ta else r0 * lda) * item
        _xxgemm(kind, 116 if tb else 110, 116 if ta else 110, n, mr, k,
                sc.ctypes.data, B.ctypes.data, ldb, A.ctypes.data + a_off, lda,
                sc.ctypes.data + beta_at * item, C.ctypes.data + r0 * ldc * item, ldc)


@njit(inline="always")
def gemm_unchecked(A, ta, B, tb, C, beta, scalars):
    """:func:`gemm` without its checks, inlined into the caller, for the many small products of a kernel's inner
    loop (W2 at chunk 16 makes ~8000 16-row products per thread: a fixed cost per call counts).

    The caller guarantees what :func:`gemm` checks: matching shapes, one dtype, unit stride along the last axis,
    ``beta`` in {0, 1, -1} and ``scalars = gemm_scalars(C)`` (no raise here: a raise inside a ``prange`` body
    stops Numba from parallelizing it).  Empty products as in :func:`gemm`; rows split into single-thread calls."""
    _calls(A, ta, B, tb, C, scalars, 1 if beta == 0 else (0 if beta == 1 else 2))
