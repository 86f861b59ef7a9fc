"""The issue-16 rewrites of the W2 and W3 kernels: what the speed work must not change.

* causal linear attention, ``backend="numba"``, view ``recurrent``: 4 steps per pass over the state
  (``refimpl.attention.linear.numba._lin_recurrent``).  Against mpmath with the derived bound for every length
  around the 4-step blocking (1 .. 9, 13), every feature path (normalized, both eps modes, an initial state,
  both state layouts, float32); and the blocking is invisible: a sequence split anywhere and continued from
  the final state gives the same outputs and the same state, bit for bit (every entry is the same sum in the
  same order, whatever the block boundaries).
* causal linear attention, ``backend="numba"``, view ``chunked``: four GEMMs per chunk on the strided head views,
  the (batch, head) rows split into one contiguous group per thread (``_lin_chunked``).  Against mpmath with the
  derived bound for row counts that do not split evenly (1, 3, 5, 7 rows over 1 and 2 threads: groups of one to
  seven heads), every chunk around the length, with an initial state and its final state; the inputs'
  finiteness, checked inside the kernel, raises the reference's error for NaN/+-inf anywhere.
* the flash kernel's one-pass float32 exp (``refimpl.attention.softmax.numba._exp_rowsum``): bit for bit the
  two-pass :func:`refimpl._fastmath.exp_f32`, and the row sums in order.
"""
import numpy as np
import pytest

from oracles.attention import linear_attention_bound, linear_attention_mpmath
from oracles.tolerance import Bound, assert_within
from refimpl._fastmath import exp_f32
from refimpl.attention.linear import numba as LN
from refimpl.attention.softmax.numba import _exp_block_rowsum, _exp_rowsum


def _inputs(seed, l, b=1, h=2, n=3, p=5, positive=True):
    rng = np.random.default_rng(seed)
    pq = rng.uniform(0.1, 1, (b, l, h, n)) if positive else rng.standard_normal((b, l, h, n))
    pk = rng.uniform(0.1, 1, (b, l, h, n)) if positive else rng.standard_normal((b, l, h, n))
    return pq, pk, rng.standard_normal((b, l, h, p))


@pytest.mark.parametrize("l", [1, 2, 3, 4, 5, 7, 8, 9, 13])
@pytest.mark.parametrize("normalize,eps_mode,eps", [(True, "add", 0.0), (True, "add", 0.3), (True, "clamp", 0.5),
                                                    (False, "add", 0.0)])
def test_recurrent_kernel_around_the_step_blocking_matches_mpmath(l, normalize, eps_mode, eps):
    pq, pk, v = _inputs(l, l, positive=normalize)
    rng = np.random.default_rng(100 + l)
    S0, z0 = rng.standard_normal((1, 2, 5, 3)), rng.uniform(0.1, 1, (1, 2, 3))
    kw = dict(normalize=normalize, eps=eps, eps_mode=eps_mode)
    exact = linear_attention_mpmath(pq, pk, v, causal=True, S0=S0, u0=z0 if normalize else None, **kw)
    bound = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize,
                                   eps=eps if eps_mode == "add" else 0.0, S0=S0, u0=z0 if normalize else None)
    state = (S0, z0) if normalize else S0
    assert_within(LN.causal_recurrent(pq, pk, v, initial_state=state, **kw), exact, bound, context=f"l={l}")
    # the same in the kv layout (the state given transposed)
    state_kv = (np.swapaxes(S0, -1, -2), z0) if normalize else np.swapaxes(S0, -1, -2)
    assert_within(LN.causal_recurrent(pq, pk, v, initial_state=state_kv, state_layout="kv", **kw), exact, bound,
                  context=f"l={l}, kv")
    # float32 stays float32 and keeps its float32 bound
    o32 = LN.causal_recurrent(*(a.astype(np.float32) for a in (pq, pk, v)), **kw)
    exact0 = linear_attention_mpmath(*(a.astype(np.float32) for a in (pq, pk, v)), causal=True, **kw)
    assert o32.dtype == np.float32
    assert_within(o32, exact0, linear_attention_bound(pq.astype(np.float32), pk.astype(np.float32),
                                                      v.astype(np.float32), exact0, causal=True, normalize=normalize,
                                                      eps=eps if eps_mode == "add" else 0.0, dtype=np.float32),
                  context=f"l={l}, float32")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalize", [True, False])
def test_recurrent_kernel_blocking_is_invisible(dtype, normalize):
    pq, pk, v = (a.astype(dtype) for a in _inputs(7, 23, b=2, h=3, n=16, p=8))
    whole, state = LN.causal_recurrent(pq, pk, v, normalize=normalize, return_final_state=True)
    for cut in (1, 2, 3, 5, 6, 11):
        o1, st1 = LN.causal_recurrent(pq[:, :cut], pk[:, :cut], v[:, :cut], normalize=normalize,
                                      return_final_state=True)
        o2, st2 = LN.causal_recurrent(pq[:, cut:], pk[:, cut:], v[:, cut:], normalize=normalize,
                                      initial_state=st1, return_final_state=True)
        np.testing.assert_array_equal(np.concatenate([o1, o2], axis=1), whole, err_msg=f"cut at {cut}")
        for a, b in zip(st2 if normalize else (st2,), state if normalize else (state,)):
            np.testing.assert_array_equal(a, b, err_msg=f"final state, cut at {cut}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("b,h", [(1, 1), (1, 3), (5, 1), (1, 7)])
@pytest.mark.parametrize("normalize", [True, False])
def test_chunked_kernel_head_groups_match_mpmath(threads, b, h, normalize):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads")
    l = 11
    pq, pk, v = _inputs(b * 10 + h, l + 1, b=b, h=h, positive=normalize)
    rng = np.random.default_rng(b * h)
    S0, z0 = rng.standard_normal((b, h, 5, 3)), rng.uniform(0.1, 1, (b, h, 3))
    u0 = z0 if normalize else None
    # the oracle on l + 1 steps: the first l check the output, the last one the final state (continued from it)
    exact = linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, S0=S0, u0=u0)
    bound = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, S0=S0, u0=u0)
    state = (S0, z0) if normalize else S0
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for chunk in (1, 2, 4, 5, 11, 16):
            o, final = LN.causal_chunked(pq[:, :l], pk[:, :l], v[:, :l], normalize=normalize, initial_state=state,
                                         chunk=chunk, return_final_state=True)
            ctx = f"b={b}, h={h}, threads={threads}, chunk={chunk}"
            assert_within(o, exact[:, :l], Bound(np.asarray(bound.values)[:, :l], bound.source), context=ctx)
            o_next = LN.causal_chunked(pq[:, l:], pk[:, l:], v[:, l:], normalize=normalize, initial_state=final,
                                       chunk=chunk)
            assert_within(o_next, exact[:, l:], Bound(np.asarray(bound.values)[:, l:], bound.source),
                          context=ctx + ", continued from the final state")
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("arg", [0, 1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 36, 2, 3), (0, 17, 1, 0)])  # first row, last (partial) chunk
def test_chunked_kernel_finiteness_checked_in_the_kernel(arg, bad, where):
    # the kernel checks phi_q, phi_k, v on the chunk rows it multiplies, then raises the reference's own error
    from refimpl.attention.linear import reference as LA

    args = list(_inputs(5, 37, b=2, h=3, n=4, p=5))
    args[arg][where] = bad
    for dtype in (np.float64, np.float32):
        a = [x.astype(dtype) for x in args]
        with pytest.raises(ValueError) as want:
            LA.chunked(*a, chunk=5)
        with pytest.raises(ValueError) as got:
            LN.causal_chunked(*a, chunk=5)
        assert str(got.value) == str(want.value)
        assert str(got.value).startswith(("phi_q", "phi_k", "v")[arg] + ": expected finite values")


def test_one_pass_exp_is_the_two_pass_exp_bit_for_bit():
    rng = np.random.default_rng(3)
    nk, T = 37, 29
    X = (rng.standard_normal((nk, T)) * 30).astype(np.float32)
    X[0, :3] = -np.inf  # masked scores: exp(-inf - m) = 0
    X[1, 0] = 100.0  # above the range: inf, as exp_f32
    m = np.max(np.where(np.isfinite(X), X, -np.inf), axis=0).astype(np.float32) - np.float32(5)
    want = np.empty_like(X)
    for j in range(nk):
        exp_f32(X[j] - m, want[j], np.empty(T, dtype=np.int32))
    for fn in (lambda Y, s: _exp_rowsum(Y, m, s), lambda Y, s: _exp_block_rowsum(Y, m, np.empty((nk, T), np.int32), s)):
        Y, lsum = X.copy(), np.zeros(T, dtype=np.float32)
        fn(Y, lsum)
        np.testing.assert_array_equal(Y, want)
        # the row sums, accumulated over j in order in float32
        ref = np.zeros(T, dtype=np.float32)
        for j in range(nk):
            ref += want[j]
        np.testing.assert_array_equal(lsum, ref)
