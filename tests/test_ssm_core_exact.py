"""Exact-integer tests of the LTI views on time-varying systems whose transitions do not commute.

Every transition ``A_bar_t`` is a signed permutation matrix (one ``+-1`` per row and column), so any
product of them is again a signed permutation: exact in floating point and bounded.  ``B_bar_t``,
``C``, ``D``, ``x`` and the initial state are small integers, so every state and output is an integer
of magnitude ``<= |s_0| + l m max|B| max|x|`` (about ``10^4`` at ``l = 1000``), far below ``2^53``:
every view, in any evaluation order, computes exactly in float64 (and float32: below ``2^24``), and
the tolerance is zero.  The oracle is a plain integer loop (``int64``), and, for short sequences,
the dense operator of :mod:`oracles.ssm` too.

Signed permutations of 3 states do not commute, so a scan that composes two transitions in the wrong
order (``a_i a_j`` instead of ``a_j a_i``) fails from ``l = 3`` on, and a recurrence that reads
``A_bar_0`` at every step fails from ``l = 2`` on.
"""
import numpy as np
import pytest

from oracles import ssm as O
from refimpl.ssm.lti import lti_ssm

LENGTHS = (0, 1, 2, 3, 5, 1000)
TIME_VARYING_IMPLS = [("recurrent", "numpy"), ("recurrent", "numba"), ("scan", "numpy")]


def _signed_permutations(rng, shape, n):
    """Random signed permutation matrices of shape ``shape + (n, n)``."""
    out = np.zeros(shape + (n, n))
    for idx in np.ndindex(*shape):
        perm = rng.permutation(n)
        out[idx + (np.arange(n), perm)] = rng.choice([-1.0, 1.0], n)
    return out


def _integer_system(seed, l, *, diagonal, b=2, d=2, n=3, m=2, p=2):
    rng = np.random.default_rng(seed)
    ints = lambda lo, hi, shape: rng.integers(lo, hi + 1, shape).astype(np.float64)  # noqa: E731
    if diagonal:
        A_bar = rng.choice([-1.0, 1.0], (l, d, n))
    else:
        A_bar = _signed_permutations(rng, (l, d), n)
    B_bar = ints(-2, 2, (l, d, n, m))
    C = ints(-2, 2, (d, p, n))
    D = ints(-2, 2, (d, p, m))
    x = ints(-3, 3, (b, l, d, m))
    s0 = ints(-3, 3, (b, d, n))
    return A_bar, B_bar, C, D, x, s0


def _integer_loop(A_bar, B_bar, C, D, x, s0, diagonal):
    """``h_t = A_bar_t h_{t-1} + B_bar_t x_t``, ``y_t = C h_t + D x_t`` in int64 (exact)."""
    i64 = lambda a: np.asarray(a).astype(np.int64)  # noqa: E731
    A_bar, B_bar, C, D, x, h = map(i64, (A_bar, B_bar, C, D, x, s0))
    b, l, d, m = x.shape
    y = np.zeros((b, l, d, C.shape[1]), dtype=np.int64)
    for t in range(l):
        for c in range(d):
            for bi in range(b):
                a = A_bar[t, c] * h[bi, c] if diagonal else A_bar[t, c] @ h[bi, c]
                h[bi, c] = a + B_bar[t, c] @ x[bi, t, c]
                y[bi, t, c] = C[c] @ h[bi, c] + D[c] @ x[bi, t, c]
    return y, h


def test_signed_permutations_do_not_commute():
    # the premise: for the seeds used, some pair of consecutive transitions does not commute
    A_bar, *_ = _integer_system(0, 5, diagonal=False)
    assert any(not np.array_equal(A_bar[t + 1, c] @ A_bar[t, c], A_bar[t, c] @ A_bar[t + 1, c])
               for t in range(4) for c in range(2))


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("l", LENGTHS)
@pytest.mark.parametrize("view,backend", TIME_VARYING_IMPLS)
def test_time_varying_views_are_exact_on_integer_systems(view, backend, l, diagonal):
    A_bar, B_bar, C, D, x, s0 = _integer_system(l, l, diagonal=diagonal)
    y_exact, s_exact = _integer_loop(A_bar, B_bar, C, D, x, s0, diagonal)
    assert np.abs(y_exact).max(initial=0) < 2**24  # exact in float32 too
    for dtype in (np.float64, np.float32):
        cast = [a.astype(dtype) for a in (A_bar, B_bar, C, D, x, s0)]
        y, s = lti_ssm(*cast[:5], view=view, backend=backend, diagonal=diagonal, initial_state=cast[5],
                       return_final_state=True)
        assert y.dtype == dtype
        # zero tolerance: every intermediate is an integer below 2^24
        np.testing.assert_array_equal(y, y_exact, err_msg=f"{backend}/{view} l={l} {np.dtype(dtype).name}")
        np.testing.assert_array_equal(s, s_exact, err_msg=f"{backend}/{view} final state l={l}")


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5])
def test_integer_loop_equals_dense_operator(l):
    # the test's own oracle against the independent dense operator (products of transitions written out)
    for diagonal in (False, True):
        A_bar, B_bar, C, D, x, s0 = _integer_system(l, l, diagonal=diagonal)
        y_exact, s_exact = _integer_loop(A_bar, B_bar, C, D, x, s0, diagonal)
        y_dense, s_dense = O.apply_dense(A_bar, B_bar, C, D, x, h0=s0, diagonal=diagonal)
        np.testing.assert_array_equal(y_dense, y_exact)
        np.testing.assert_array_equal(s_dense, s_exact)


@pytest.mark.parametrize("view,backend", TIME_VARYING_IMPLS)
def test_time_varying_with_time_invariant_B_bar(view, backend):
    # a time-varying A_bar with one B_bar for every step
    A_bar, B_bar, C, D, x, s0 = _integer_system(7, 9, diagonal=False)
    B0 = B_bar[0]
    y_exact, s_exact = _integer_loop(A_bar, np.broadcast_to(B0, B_bar.shape), C, D, x, s0, False)
    y, s = lti_ssm(A_bar, B0, C, D, x, view=view, backend=backend, initial_state=s0, return_final_state=True)
    np.testing.assert_array_equal(y, y_exact)
    np.testing.assert_array_equal(s, s_exact)
