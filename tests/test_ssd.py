"""Example tests for SSD (Mamba-2): worked examples, the stable segment sum, options, long sequences, bad input."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from oracles import selective as O
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.ssm.selective import segsum
from refimpl.ssm.ssd import effective_dt, ssd_scan, ssd_step

# name -> (view, backend); the name is also the view of the error bound (oracles.selective.ssd_bound)
IMPLS = {"recurrent": ("recurrent", "numpy"), "quadratic": ("quadratic", "numpy"), "chunked": ("chunked", "numpy"),
         "numba_chunked": ("chunked", "numba")}
VIEWS = tuple(IMPLS)


def run(impl, *args, chunk=3, **kw):
    view, backend = IMPLS[impl]
    return ssd_scan(*args, view=view, backend=backend, chunk=chunk, **kw)


def _problem(rng, b=2, l=10, h=4, p=3, g=2, n=5):
    return (rng.standard_normal((b, l, h, p)), np.exp(rng.standard_normal((b, l, h)) - 1.0),
            -np.exp(rng.standard_normal(h)), rng.standard_normal((b, l, g, n)), rng.standard_normal((b, l, g, n)))


@pytest.mark.parametrize("view", VIEWS)
def test_worked_example_scalar_head(view):
    """h = p = n = 1, dt = ln 2, A = -1, B = C = x = 1: a_t = 1/2, y_t = ln2 (2 - 2^-t)."""
    L = 7
    ones = np.ones((1, L, 1, 1))
    y, fin = run(view, ones, np.full((1, L, 1), math.log(2.0)), -np.ones(1), ones, ones, return_final_state=True)
    expect = math.log(2.0) * (2.0 - 0.5 ** np.arange(L))
    bound = componentwise_bound(2.0 * np.ones(L), 6 * (L + 4), np.float64, what="closed form, O(L) roundings")
    assert_within(y[0, :, 0, 0], expect, bound)
    assert abs(fin[0, 0, 0, 0] - expect[-1]) <= bound.max()


def test_segsum_is_stable_and_exact_on_integers():
    """segsum(x)[i, j] = sum_{k=j+1}^{i} x_k, -inf above the diagonal; no prefix-sum difference."""
    x = np.array([1e16, 1.0, 2.0, 3.0])
    Sx = segsum(x)
    # a difference of prefix sums would give (1e16 + 1 + 2) - (1e16 + 1) = 2 or 4 (rounding), not 2 exactly
    assert Sx[2, 1] == 2.0 and Sx[3, 1] == 5.0 and Sx[3, 2] == 3.0 and Sx[3, 0] == 6.0
    assert np.all(np.diag(Sx) == 0.0)
    assert np.all(np.isneginf(Sx[np.triu_indices(4, 1)]))
    # the 1-semiseparable mask of a decaying system: exp(segsum) in [0, 1], lower triangular
    Lm = np.exp(segsum(-np.abs(np.random.default_rng(0).standard_normal(6))))
    assert np.all(np.triu(Lm, 1) == 0.0) and np.all(np.diag(Lm) == 1.0) and np.all(Lm <= 1.0)


def test_quadratic_mask_is_L_of_the_paper():
    """Y = (L o C B^T)(dt x) with L_ij = exp(sum_{k=j+1}^{i} dt_k A): compare against the matrix built by hand."""
    rng = np.random.default_rng(1)
    x, dt, A, B, C = _problem(rng, b=1, l=6, h=1, p=1, g=1, n=2)
    a = dt[0, :, 0] * A[0]
    Lm = np.zeros((6, 6))
    for i in range(6):
        for j in range(i + 1):
            Lm[i, j] = math.exp(math.fsum(a[j + 1:i + 1]))
    M = Lm * (C[0, :, 0] @ B[0, :, 0].T)
    expect = M @ (dt[0, :, 0] * x[0, :, 0, 0])
    y = run("quadratic", x, dt, A, B, C)
    bo, _ = O.ssd_bound(x, dt, A, B, C, dtype=np.float64, view="quadratic")
    assert_within(y[0, :, 0, 0], expect, type(bo)(np.asarray(bo.values)[0, :, 0, 0] * 2, bo.source))


@pytest.mark.parametrize("view", VIEWS)
def test_D_per_head_equals_D_broadcast_per_channel(view):
    rng = np.random.default_rng(2)
    args = _problem(rng)
    Dh = rng.standard_normal(4)
    y1 = run(view, *args, D=Dh)
    y2 = run(view, *args, D=np.repeat(Dh[:, None], 3, axis=1))
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("view", VIEWS)
def test_dt_processing_bias_softplus_and_clamp(view):
    """dt_bias then softplus (threshold 20) then clamp: equal to passing the processed dt directly."""
    rng = np.random.default_rng(4)
    x, dt, A, B, C = _problem(rng)
    raw = 3.0 * rng.standard_normal(dt.shape)
    raw[0, 0, 0] = 25.0  # above the softplus threshold: taken as is, then clamped to 1.5
    bias = rng.standard_normal(4)
    y1, s1 = run(view, x, raw, A, B, C, dt_bias=bias, dt_softplus=True, dt_limit=(0.01, 1.5), return_final_state=True)
    pre = raw + bias
    eff = np.where(pre <= 20.0, np.log1p(np.exp(np.minimum(pre, 20.0))), pre)
    eff = np.clip(eff, 0.01, 1.5)
    y2, s2 = run(view, x, eff, A, B, C, return_final_state=True)
    bo, bs = O.ssd_bound(x, raw, A, B, C, dt_bias=bias, dt_softplus=True, dt_limit=(0.01, 1.5), dtype=np.float64,
                         view=view if view != "numba_chunked" else "chunked", chunk=3)
    assert_within(y1, y2, bo + bo)
    assert_within(s1, s2, bs + bs)


@pytest.mark.parametrize("view", VIEWS)
def test_seq_idx_blocks_all_state_flow(view):
    """With seq_idx [0 0 0 1 1 ...] the second sequence's outputs do not depend on the first's inputs."""
    rng = np.random.default_rng(6)
    x, dt, A, B, C = _problem(rng, b=1, l=9)
    seq = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1]])
    y1 = run(view, x, dt, A, B, C, seq_idx=seq, initial_state=rng.standard_normal((1, 4, 3, 5)))
    x2 = x.copy()
    x2[:, :4] = 100.0 * rng.standard_normal(x2[:, :4].shape)  # change the first sequence only
    y2 = run(view, x2, dt, A, B, C, seq_idx=seq)  # and drop the initial state (it belongs to sequence 0)
    np.testing.assert_array_equal(y1[:, 4:], y2[:, 4:])


@pytest.mark.parametrize("view", VIEWS)
def test_empty_sequence_returns_the_initial_state(view):
    S0 = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    y, fin = run(view, np.zeros((1, 0, 2, 3)), np.zeros((1, 0, 2)), -np.ones(2), np.zeros((1, 0, 1, 4)),
                 np.zeros((1, 0, 1, 4)), initial_state=S0, return_final_state=True)
    assert y.shape == (1, 0, 2, 3)
    np.testing.assert_array_equal(fin, S0)


def test_step_decode_equals_recurrent_and_the_oracle():
    """ssd_step is the single-step formula (not a call of the recurrent view): its decode loop does the
    recurrent view's arithmetic in the same order (bit for bit) and is within the derived bound of the
    independent banded-solve oracle."""
    rng = np.random.default_rng(8)
    x, dt, A, B, C = _problem(rng, l=6)
    D, z, S0 = rng.standard_normal((4, 3)), rng.standard_normal(x.shape), rng.standard_normal((2, 4, 3, 5))
    kw = dict(dt_bias=rng.standard_normal(4), dt_softplus=True, dt_limit=(0.05, 1.5))
    y, fin = run("recurrent", x, dt, A, B, C, D, z, initial_state=S0, return_final_state=True, **kw)
    yo, So = O.ssd_solve(x, dt, A, B, C, D, z, initial_state=S0, **kw)
    bo, bs = O.ssd_bound(x, dt, A, B, C, D, z, initial_state=S0, **kw, dtype=np.float64)
    state, outs = S0, []
    for t in range(6):
        yt, state = ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D, z[:, t], **kw)
        np.testing.assert_array_equal(yt, y[:, t])
        outs.append(yt)
    np.testing.assert_array_equal(state, fin)
    assert_within(np.stack(outs, axis=1), yo, bo, context="decode vs the oracle")
    assert_within(state, So, bs, context="decode state vs the oracle")


@pytest.mark.slow
@pytest.mark.parametrize("A_value", [0.0, -1e-5])
def test_long_sequence_float32_one_head(A_value):
    """L = 65,536, one head, headdim 1, float32: A = 0 (accumulator) and A -> 0; the chunked views
    (reference and Numba) and the recurrence stay inside the derived bound."""
    rng = np.random.default_rng(7)
    L = 65536
    f = np.float32
    x = rng.standard_normal((1, L, 1, 1)).astype(f)
    dt = rng.standard_normal((1, L, 1)).astype(f)
    A = np.array([A_value], dtype=f)
    B = rng.standard_normal((1, L, 1, 2)).astype(f)
    C = rng.standard_normal((1, L, 1, 2)).astype(f)
    kw = dict(dt_bias=np.full(1, -2.0, dtype=f), dt_softplus=True)
    yo, So = O.ssd_solve(x, dt, A, B, C, **kw)
    views = ("recurrent", "chunked", "numba_chunked")
    bounds = O.ssd_bounds(x, dt, A, B, C, **kw, dtype=f, views=views, chunk=64)
    for view in views:
        y, fin = run(view, x, dt, A, B, C, chunk=64, return_final_state=True, **kw)
        bo, bs = bounds[view]
        assert_within(y, yo, bo, context=f"{view} L=65536")
        assert_within(fin, So, bs, context=f"{view} L=65536 state")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("b,h,g", [(3, 1, 1), (3, 2, 1), (1, 6, 2), (2, 3, 3), (5, 2, 2)])
def test_numba_kernel_head_groups(threads, b, h, g):
    """The Numba kernel splits the (batch, head) rows into one group per thread and shares C B^T between the
    consecutive rows that read the same (batch, group): uneven splits, groups across a batch boundary, g < h."""
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads")
    rng = np.random.default_rng(b * 100 + h * 10 + g)
    x, dt, A, B, C = _problem(rng, b=b, l=11, h=h, p=3, g=g, n=4)
    S0 = rng.standard_normal((b, h, 3, 4))
    seq = np.cumsum(rng.random((b, 11)) < 0.2, axis=1)
    yo, So = O.ssd_solve(x, dt, A, B, C, initial_state=S0, seq_idx=seq)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for chunk in (1, 4, 11):
            bo, bs = O.ssd_bounds(x, dt, A, B, C, initial_state=S0, seq_idx=seq, dtype=np.float64,
                                  views=("numba_chunked",), chunk=chunk)["numba_chunked"]
            y, fin = run("numba_chunked", x, dt, A, B, C, chunk=chunk, initial_state=S0, seq_idx=seq,
                         return_final_state=True)
            ctx = f"b={b}, h={h}, g={g}, threads={threads}, chunk={chunk}"
            assert_within(y, yo, bo, context=ctx)
            assert_within(fin, So, bs, context=ctx + ", final state")
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 9, 3, 2), (0, 5, 2, 1)])
def test_numba_kernel_checks_x_finite_inside(bad, where):
    """The Numba kernel checks x on the chunk rows it copies, then raises the reference's own error."""
    rng = np.random.default_rng(3)
    x, dt, A, B, C = _problem(rng)
    x[where] = bad
    for dtype in (np.float64, np.float32):
        a = [v.astype(dtype) for v in (x, dt, A, B, C)]
        with pytest.raises(ValueError) as want:
            run("chunked", *a, chunk=4)
        with pytest.raises(ValueError) as got:
            run("numba_chunked", *a, chunk=4)
        assert str(got.value) == str(want.value) and str(got.value).startswith("x: expected finite values")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _call(impl, **over):
    rng = np.random.default_rng(0)
    x, dt, A, B, C = _problem(rng, b=1, l=5)
    a = dict(x=x, dt=dt, A=A, B=B, C=C)
    a.update(over)
    return run(impl, a.pop("x"), a.pop("dt"), a.pop("A"), a.pop("B"), a.pop("C"), **a)


@pytest.mark.parametrize("impl", VIEWS)
@pytest.mark.parametrize("over, exc, msg", [
    (dict(B=np.ones((1, 5, 3, 5)), C=np.ones((1, 5, 3, 5))), ValueError, "must divide"),  # 3 groups, 4 heads
    (dict(C=np.ones((1, 5, 1, 5))), ValueError, "C: expected shape"),  # groups differ from B
    (dict(B=np.ones((1, 2, 5, 5))), ValueError, "layout (b, l, g, n)"),  # a (b g l n) array
    (dict(x=np.ones((1, 5, 4))), ValueError, "x: expected 4 dimensions"),
    (dict(dt=np.ones((1, 4, 5))), ValueError, "dt: expected shape"),
    (dict(dt=np.full((1, 5, 4), np.nan)), ValueError, "dt: expected finite"),
    (dict(A=np.ones(4)), ValueError, "A: expected A <= 0"),
    (dict(A=-np.ones((4, 2))), ValueError, "A: expected 1 dimensions"),
    (dict(A=-np.ones(4) + 0j), TypeError, "A: expected a real"),
    (dict(dt=-np.ones((1, 5, 4))), ValueError, "effective step"),
    (dict(D=np.ones(3)), ValueError, "D: expected shape"),
    (dict(D=np.ones((4, 2))), ValueError, "D: expected shape"),
    (dict(z=np.ones((1, 5, 4, 2))), ValueError, "z: expected shape"),
    (dict(dt_bias=np.ones(3)), ValueError, "dt_bias: expected shape"),
    (dict(dt_bias=np.ones((1, 4))), ValueError, "dt_bias: expected 1 dimensions"),
    (dict(dt_bias=np.float64(0.5)), ValueError, "dt_bias: expected 1 dimensions"),
    (dict(initial_state=np.ones((1, 4, 5, 3))), ValueError, "initial_state: expected shape"),
    (dict(initial_state=np.ones((1, 4, 3, 5)) + 1j), TypeError, "initial_state: expected a real"),
    (dict(seq_idx=np.zeros((1, 5))), TypeError, "seq_idx: expected an integer"),
    (dict(seq_idx=np.array([[0, 1, 1, 0, 2]])), ValueError, "non-decreasing"),
    (dict(seq_idx=np.zeros((1, 4), dtype=int)), ValueError, "seq_idx: expected shape"),
    (dict(dt_limit=(1.0, 0.5)), ValueError, "dt_limit: expected 0 <= lo <= hi"),
    (dict(dt_limit=(0.0,)), ValueError, "dt_limit: expected a pair"),
    (dict(dt_limit=(0.0, float("nan"))), TypeError, "dt_limit: expected real numbers"),
    (dict(dt_softplus="yes"), TypeError, "dt_softplus: expected True or False"),
    (dict(return_final_state=1), TypeError, "return_final_state: expected True or False"),
    (dict(allow_unstable="no"), TypeError, "allow_unstable: expected True or False"),
    (dict(x=np.ones((1, 5, 4, 3), dtype=np.int32)), TypeError, "x: expected a floating-point"),
])
def test_bad_inputs(impl, over, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        _call(impl, **over)


def test_allow_unstable_and_bad_chunk_view_backend():
    out = _call("recurrent", A=0.1 * np.ones(4), allow_unstable=True)
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="chunk: expected an integer >= 1"):
        _call("chunked", chunk=0)
    with pytest.raises(ValueError, match="chunk: expected an integer >= 1"):
        _call("numba_chunked", chunk=0)
    x, dt, A, B, C = _problem(np.random.default_rng(0), b=1, l=5)
    with pytest.raises(ValueError, match="view: refimpl.ssm.ssd_scan has views 'recurrent', 'quadratic', 'chunked'"):
        ssd_scan(x, dt, A, B, C, view="scan")
    with pytest.raises(ValueError, match="backend: .* no 'numba' backend for view 'quadratic'.*chunked/numba"):
        ssd_scan(x, dt, A, B, C, view="quadratic", backend="numba")


def _step_args(b=1, h=4, p=3, g=2, n=5):
    return dict(state=np.zeros((b, h, p, n)), x_t=np.ones((b, h, p)), dt_t=np.ones((b, h)), A=-np.ones(h),
                B_t=np.ones((b, g, n)), C_t=np.ones((b, g, n)))


@pytest.mark.parametrize("over, exc, msg", [
    (dict(state=None), TypeError, "state: expected"),
    (dict(state=np.zeros((1, 4, 3))), ValueError, "state: expected 4 dimensions"),
    (dict(state=np.zeros((1, 2, 3, 5))), ValueError, "state: expected shape"),  # h differs from A's
    (dict(x_t=np.ones((1, 4, 2))), ValueError, "x_t: expected shape"),  # x_t is blamed, not dt_t
    (dict(x_t=np.ones((2, 4, 3))), ValueError, "x_t: expected shape"),  # batch differs from state's
    (dict(dt_t=np.ones((1, 3))), ValueError, "dt_t: expected shape"),
    (dict(B_t=np.ones((1, 3, 5))), ValueError, "B_t: the number of groups g = 3"),
    (dict(B_t=np.ones((1, 2, 4))), ValueError, "B_t: expected shape"),  # n differs from state's
    (dict(C_t=np.ones((1, 1, 5))), ValueError, "C_t: expected shape"),
    (dict(z_t=np.ones((1, 4, 2))), ValueError, "z_t: expected shape"),
    (dict(D=np.ones(3)), ValueError, "D: expected shape"),
    (dict(dt_t=-np.ones((1, 4))), ValueError, "dt_t: expected the effective step"),
    (dict(dt_limit=(1.0, 0.5)), ValueError, "dt_limit: expected 0 <= lo <= hi"),
    (dict(dt_softplus=1), TypeError, "dt_softplus: expected True or False"),
    (dict(dt_bias=np.ones((1, 4))), ValueError, "dt_bias: expected 1 dimensions"),
])
def test_step_bad_inputs(over, exc, msg):
    a = _step_args()
    a.update(over)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ssd_step(a.pop("state"), a.pop("x_t"), a.pop("dt_t"), a.pop("A"), a.pop("B_t"), a.pop("C_t"), **a)


@pytest.mark.parametrize("over, exc, msg", [
    (dict(dt_bias=np.ones((1, 4))), ValueError, "dt_bias: expected 1 dimensions"),
    (dict(dt_bias=np.float64(0.3)), ValueError, "dt_bias: expected 1 dimensions"),
    (dict(dt_bias=np.ones(3)), ValueError, "dt_bias: expected shape (4,)"),
    (dict(dt_limit=(1.0, 0.5)), ValueError, "dt_limit: expected 0 <= lo <= hi"),
    (dict(dt_limit=(0.0, 1.0, 2.0)), ValueError, "dt_limit: expected a pair"),
    (dict(dt_softplus="True"), TypeError, "dt_softplus: expected True or False"),
    (dict(dt=np.ones((2, 4), dtype=np.int64)), TypeError, "dt: expected a floating-point"),
    (dict(dt=np.full((2, 4), np.inf)), ValueError, "dt: expected finite"),
])
def test_effective_dt_validates_like_the_scan(over, exc, msg):
    a = dict(dt=np.ones((2, 4)))
    a.update(over)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        effective_dt(a.pop("dt"), **a)


def test_effective_dt_formula():
    dt = np.array([[-1.0, 0.0, 3.0, 25.0]])
    bias = np.array([0.5, -0.5, 0.0, 0.0])
    out = effective_dt(dt, bias, dt_softplus=True, dt_limit=(0.1, 20.0))
    pre = dt + bias
    expect = np.clip(np.where(pre <= 20.0, np.log1p(np.exp(np.minimum(pre, 20.0))), pre), 0.1, 20.0)
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("S0", [False, True])
@pytest.mark.parametrize("limit", [(0.0, math.inf), (0.05, 1.0)])
@pytest.mark.parametrize("sp_bias", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("z", [False, True])
@pytest.mark.parametrize("D", [None, "h", "hp"])
def test_every_option_combination(D, z, sp_bias, limit, S0, seq):
    rng = np.random.default_rng(zlib.crc32(repr((D, z, sp_bias, limit, S0, seq)).encode()))
    b, l, h, p, g, n = 2, 10, 4, 2, 2, 3
    x, dt, A, B, C = _problem(rng, b=b, l=l, h=h, p=p, g=g, n=n)
    sp, bias = sp_bias
    if sp:
        dt = rng.standard_normal(dt.shape) - 1.0
    args = (x, dt, A, B, C, None if D is None else rng.standard_normal((h,) if D == "h" else (h, p)),
            rng.standard_normal(x.shape) if z else None)
    kw = dict(dt_bias=rng.standard_normal(h) if bias else None, dt_softplus=sp, dt_limit=limit,
              initial_state=rng.standard_normal((b, h, p, n)) if S0 else None,
              seq_idx=np.array([[0] * 3 + [1] * 4 + [2] * 3, [0] * 10]) if seq else None)
    yo, So = O.ssd_solve(*args, **kw)
    bounds = O.ssd_bounds(*args, **kw, dtype=np.float64, views=VIEWS, chunk=3)
    for view in VIEWS:
        y, fin = run(view, *args, chunk=3, return_final_state=True, **kw)
        assert_within(y, yo, bounds[view][0], context=view)
        assert_within(fin, So, bounds[view][1], context=view + " final state")
