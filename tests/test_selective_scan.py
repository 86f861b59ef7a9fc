"""Example tests for the selective scan (S6): worked examples, conventions, long sequences, bad input."""
from __future__ import annotations

import math
import zlib
import tracemalloc

import numpy as np
import pytest

from oracles import selective as O
from oracles.tolerance import Bound, assert_within, componentwise_bound
from refimpl.ssm.selective import selective_scan, selective_step, softplus

# name -> (view, backend); the name is also the view of the error bound (oracles.selective.s6_bound)
IMPLS = {"recurrent": ("recurrent", "numpy"), "scan": ("scan", "numpy"), "chunked": ("chunked", "numpy"),
         "numba": ("recurrent", "numba")}
VIEWS = tuple(IMPLS)


def run(impl, *args, chunk=4, **kw):
    view, backend = IMPLS[impl]
    return selective_scan(*args, view=view, backend=backend, chunk=chunk, **kw)


# ---------------------------------------------------------------------------------------------
# worked examples with closed forms
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("view", VIEWS)
def test_worked_example_halving_state(view):
    """Delta = ln 2, A = -1: A_bar = 1/2, B_bar = ln 2 (Euler), u = 1: h_t = ln2 (2 - 2^-t)."""
    L = 6
    u = np.ones((1, L, 1))
    delta = np.full((1, L, 1), math.log(2.0))
    A = -np.ones((1, 1))
    B = np.ones((1, 1))
    C = np.ones((1, 1))
    out, h = run(view, u, delta, A, B, C, return_final_state=True)
    t = np.arange(L)
    expect = math.log(2.0) * (2.0 - 0.5 ** t)
    # A_bar = exp(-fl(ln 2)) is 1/2 up to d_a = ln2 u + 2u (the input's rounding of ln 2 times exp's condition
    # ln 2, NumPy's 1-ULP float64 exp); h_t = sum_m A_bar^m B_bar, h <= 2 ln2.  Errors at any t: from d_a,
    # sum_m m 2^-m d_a ln2 = 2 d_a ln2 (3.7u); the multiply and add per step, damped by 1/2:
    # sum_m 2^-m 2u (2 ln2) = 8u ln2 (5.5u); the float64 closed form, 2u (2 ln2) (2.8u): ~12u in all, inside
    # the componentwise gamma_{4(L+2)} 2 ln2 ~ 44u used here (an undamped count: valid, looser)
    bound = componentwise_bound(math.log(2.0) * 2.0 * np.ones(L), 4 * (L + 2), np.float64, what="closed form")
    assert_within(out[0, :, 0], expect, bound)
    assert_within(h[0, 0], expect[-1:], Bound(np.asarray(bound.values)[-1:], bound.source))


@pytest.mark.parametrize("view", VIEWS)
def test_zoh_matches_exact_ode_solution(view):
    """discretization='zoh' with constant input solves h' = A h + B u exactly at the sample points."""
    L, dt, a, bcoef = 5, 0.3, -0.7, 1.3
    u = np.ones((1, L, 1))
    out, h = run(view, u, np.full((1, L, 1), dt), np.array([[a]]), np.array([[bcoef]]), np.ones((1, 1)),
                 discretization="zoh", return_final_state=True)
    T = dt * (np.arange(L) + 1)
    # h(T) = (e^{aT} - 1)/a * b   (h(0) = 0, u = 1)
    expect = np.expm1(a * T) / a * bcoef
    bound = componentwise_bound(np.abs(expect) + bcoef * T, 12 * (L + 2), np.float64, what="ODE closed form")
    assert_within(out[0, :, 0], expect, bound)


@pytest.mark.parametrize("view", VIEWS)
def test_complex_A_two_re_equals_conjugate_pair_system(view):
    """The 2 Re convention: N complex states == the 2N-state system with each conjugate pair, summed."""
    rng = np.random.default_rng(3)
    b, d, l, n = 1, 2, 9, 2
    u, delta = rng.standard_normal((b, l, d)), np.exp(rng.standard_normal((b, l, d)) - 1)
    A = -np.exp(rng.standard_normal((d, n))) + 1j * rng.standard_normal((d, n))
    B = rng.standard_normal((d, n)) + 1j * rng.standard_normal((d, n))
    C = rng.standard_normal((b, l, n))
    out = run(view, u, delta, A, B, C)
    # the full system (complex arithmetic, no 2 Re): states (A, conj A), inputs (B, conj B), readout (C, C)
    A2 = np.concatenate([A, A.conj()], axis=1)
    B2 = np.concatenate([B, B.conj()], axis=1)
    C2 = np.concatenate([C, C], axis=2).astype(complex)
    y_full = np.zeros((b, l, d), dtype=complex)
    h = np.zeros((b, d, 2 * n), dtype=complex)
    for t in range(l):
        h = np.exp(delta[:, t, :, None] * A2) * h + delta[:, t, :, None] * B2 * u[:, t, :, None]
        y_full[:, t] = h @ C2[0, t]
    bo, _ = O.s6_bound(u, delta, A, B, C, dtype=np.float64, view=view if view != "numba" else "numba", chunk=4)
    # the pair sums to a real number: the imaginary part is rounding of the same sums, within the same bound
    assert_within(y_full.imag, np.zeros_like(y_full.imag), bo + bo, context="imaginary part of the pair sum")
    assert_within(out, y_full.real, bo + bo, context="2 Re vs conjugate-pair system")


def test_softplus_threshold_20():
    x = np.array([19.0, 20.0, 20.5, 40.0, -30.0])
    sp = softplus(x)
    assert sp[2] == 20.5 and sp[3] == 40.0  # above the threshold: the identity
    assert sp[1] == np.log1p(np.exp(20.0)) and sp[0] == np.log1p(np.exp(19.0))
    assert 0.0 < sp[4] <= np.exp(-30.0)


def test_grouped_B_C_use_contiguous_channel_blocks():
    """Grouped B (b l g n): channel d reads group d // (D/g); equal to the fixed B with that row."""
    rng = np.random.default_rng(5)
    b, d, l, n, g = 1, 6, 7, 3, 3
    u, delta = rng.standard_normal((b, l, d)), np.exp(rng.standard_normal((b, l, d)) - 1)
    A = -np.exp(rng.standard_normal((d, n)))
    Bg = rng.standard_normal((b, g, n))  # constant in time
    Cg = rng.standard_normal((b, g, n))
    grouped = np.repeat(Bg[:, None], l, axis=1), np.repeat(Cg[:, None], l, axis=1)
    fixed = Bg[0][np.arange(d) // (d // g)], Cg[0][np.arange(d) // (d // g)]
    for view in VIEWS:
        y1 = run(view, u, delta, A, *grouped)
        y2 = run(view, u, delta, A, *fixed)
        bo, _ = O.s6_bound(u, delta, A, *fixed, dtype=np.float64, view=view, chunk=4)
        assert_within(y1, y2, bo + bo, context=f"grouped vs fixed ({view})")


@pytest.mark.parametrize("view", VIEWS)
def test_empty_sequence_returns_initial_state(view):
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((2, 3, 4))
    out, h = run(view, np.zeros((2, 0, 3)), np.zeros((2, 0, 3)), -np.ones((3, 4)), np.ones((2, 0, 4)),
                 np.ones((3, 4)), initial_state=h0, return_final_state=True)
    assert out.shape == (2, 0, 3)
    np.testing.assert_array_equal(h, h0)


# ---------------------------------------------------------------------------------------------
# oracle self-checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("disc", ["mamba", "zoh"])
def test_solve_oracle_against_mpmath_all_options(cplx, disc):
    rng = np.random.default_rng(11)
    b, d, l, n = 1, 2, 5, 2
    A = -np.exp(rng.standard_normal((d, n))) + (1j * rng.standard_normal((d, n)) if cplx else 0)
    args = (rng.standard_normal((b, l, d)), rng.standard_normal((b, l, d)), A, rng.standard_normal((b, l, 2, n)),
            rng.standard_normal((b, l, n)), rng.standard_normal(d), rng.standard_normal((b, l, d)))
    kw = dict(delta_bias=rng.standard_normal(d), delta_softplus=True, initial_state=rng.standard_normal((b, d, n)),
              discretization=disc)
    y1, h1 = O.s6_solve(*args, **kw)
    y2, h2 = O.s6_mpmath(*args, **kw)
    y3, h3 = O.s6_dense(*args, **kw)
    bo, bs = O.s6_bound(*args, **kw, dtype=np.float64, oracle_dtype=None)
    assert_within(y1, y2, bo, context="banded solve vs mpmath")
    assert_within(h1, h2, bs, context="banded solve vs mpmath (state)")
    bq, bqs = O.s6_bound(*args, **kw, dtype=np.float64, view="quadratic", oracle_dtype=None)
    assert_within(y3, y2, bq, context="dense vs mpmath")
    assert_within(h3, h2, bqs, context="dense vs mpmath (state)")


# ---------------------------------------------------------------------------------------------
# long sequences and the A -> 0 regime (float32, one channel, L = 65,536)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_long_sequence_float32_accumulator_and_slow_decay():
    """L = 65,536 on one channel in float32: A = 0 (an exact accumulator) and A = -1e-5 (nearly one),
    every view within the derived bound (which grows with L through the per-step weights)."""
    rng = np.random.default_rng(2026)
    L, n = 65536, 2
    f = np.float32
    u = rng.standard_normal((1, L, 1)).astype(f)
    delta = rng.standard_normal((1, L, 1)).astype(f)  # pre-activation
    A = np.array([[0.0, -1e-5]], dtype=f)
    B = rng.standard_normal((1, L, n)).astype(f)
    C = rng.standard_normal((1, L, n)).astype(f)
    D = np.ones(1, dtype=f)
    kw = dict(delta_bias=np.full(1, -2.0, dtype=f), delta_softplus=True)
    y, h = O.s6_solve(u, delta, A, B, C, D, **kw)
    bounds = O.s6_bounds(u, delta, A, B, C, D, **kw, dtype=f, views=VIEWS, chunk=64)
    worst = {}
    for view in VIEWS:
        out, last = run(view, u, delta, A, B, C, D, chunk=64, return_final_state=True, **kw)
        bo, bs = bounds[view]
        cmp = assert_within(out, y, bo, context=f"{view} L=65536 float32")
        assert_within(last, h, bs, context=f"{view} L=65536 float32 state")
        worst[view] = cmp.worst_ratio
    # the accumulator has actually accumulated: |h| grew like sqrt(L) (a random walk), not decayed
    assert np.abs(h[0, 0, 0]) > 10.0


def test_numba_kernel_does_not_materialize_b_d_l_n():
    """NumPy allocations of the fused kernel's wrapper stay far below one (b d l n) tensor."""
    rng = np.random.default_rng(0)
    b, d, l, n = 1, 32, 2048, 16
    u = rng.standard_normal((b, l, d))
    delta = rng.standard_normal((b, l, d))
    A = -np.exp(rng.standard_normal((d, n)))
    B = rng.standard_normal((b, l, n))
    C = rng.standard_normal((b, l, n))
    run("numba", u[:, :4], delta[:, :4], A, B[:, :4], C[:, :4], delta_softplus=True)  # compiled
    tracemalloc.start()
    run("numba", u, delta, A, B, C, delta_softplus=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full = b * d * l * n * 8
    assert peak < full / 4, f"peak {peak} bytes vs one (b d l n) float64 tensor {full} bytes"


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _good(rng=np.random.default_rng(0)):
    b, d, l, n = 2, 4, 5, 3
    return dict(u=rng.standard_normal((b, l, d)), delta=np.exp(rng.standard_normal((b, l, d))),
                A=-np.ones((d, n)), B=rng.standard_normal((b, l, n)), C=rng.standard_normal((d, n)))


def _call(impl, **over):
    a = _good()
    a.update(over)
    return run(impl, a.pop("u"), a.pop("delta"), a.pop("A"), a.pop("B"), a.pop("C"), **a)


@pytest.mark.parametrize("impl", VIEWS)
@pytest.mark.parametrize("over, exc, msg", [
    (dict(B=np.ones((2, 5, 3, 3))), ValueError, "g dividing d"),  # 3 groups for 4 channels
    (dict(C=np.ones((2, 3, 5))), ValueError, "C: expected shape"),  # (b n l) instead of (b l n)
    (dict(B=np.ones((4, 2))), ValueError, "B: expected shape"),  # wrong n
    (dict(B=np.ones((1, 5, 3))), ValueError, "B: expected shape"),  # (1, l, n): no broadcasting over b
    (dict(u=np.ones((2, 4))), ValueError, "u: expected 3 dimensions"),
    (dict(delta=np.ones((2, 6, 4))), ValueError, "delta: expected shape"),
    (dict(delta=np.ones((1, 5, 4))), ValueError, "delta: expected shape"),  # no broadcasting over b
    (dict(delta=np.full((2, 5, 4), np.nan)), ValueError, "delta: expected finite"),
    (dict(delta=np.full((2, 5, 4), np.inf)), ValueError, "delta: expected finite"),
    (dict(A=np.ones((4, 3))), ValueError, "Re(A) <= 0"),
    (dict(A=-np.ones((4, 3)) + 1.5 + 1j), ValueError, "Re(A) <= 0"),
    (dict(A=-np.ones((4, 3), dtype=np.int64)), TypeError, "A: expected a floating-point"),
    (dict(B=np.ones((4, 3)) + 1j), TypeError, "needs a complex A"),
    (dict(delta=-np.ones((2, 5, 4))), ValueError, "Delta"),
    (dict(u=np.ones((2, 5, 4), dtype=np.int64)), TypeError, "u: expected a floating-point"),
    (dict(u=np.ones((2, 5, 4)) + 0j), TypeError, "u: expected a real"),
    (dict(D=np.ones(3)), ValueError, "D: expected shape"),
    (dict(z=np.ones((2, 4, 4))), ValueError, "z: expected shape"),
    (dict(delta_bias=np.ones((4, 1))), ValueError, "delta_bias: expected 1 dimensions"),
    (dict(delta_bias=np.ones((1, 4))), ValueError, "delta_bias: expected 1 dimensions"),
    (dict(delta_bias=np.float64(0.5)), ValueError, "delta_bias: expected 1 dimensions"),
    (dict(initial_state=np.ones((2, 4, 2))), ValueError, "initial_state: expected shape"),
    (dict(initial_state=np.ones((2, 4, 3)) * 1j), TypeError, "initial_state: a complex state"),
    (dict(discretization="bilinear"), ValueError, "discretization: expected one of"),
    (dict(delta_softplus=1), TypeError, "delta_softplus: expected True or False"),
    (dict(delta_softplus="False"), TypeError, "delta_softplus: expected True or False"),
    (dict(return_final_state="yes"), TypeError, "return_final_state: expected True or False"),
    (dict(return_final_state=1), TypeError, "return_final_state: expected True or False"),
    (dict(allow_unstable=0), TypeError, "allow_unstable: expected True or False"),
])
def test_bad_inputs(impl, over, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        _call(impl, **over)


def test_allow_unstable_lifts_the_checks():
    out = _call("recurrent", A=0.1 * np.ones((4, 3)), delta=np.full((2, 5, 4), -0.1), allow_unstable=True)
    assert np.all(np.isfinite(out))


def test_bad_chunk_view_and_backend():
    with pytest.raises(ValueError, match="chunk: expected an integer >= 1"):
        _call("chunked", chunk=0)
    with pytest.raises(TypeError, match="chunk: expected an integer"):
        _call("chunked", chunk=2.5)
    a = _good()
    args = [a[k] for k in ("u", "delta", "A", "B", "C")]
    with pytest.raises(ValueError, match="view: refimpl.ssm.selective_scan has views 'recurrent', 'scan', 'chunked'"):
        selective_scan(*args, view="fft")
    # an unsupported pair lists what exists
    with pytest.raises(ValueError, match="backend: .* no 'numba' backend for view 'scan'.*recurrent/numba"):
        selective_scan(*args, view="scan", backend="numba")
    with pytest.raises(ValueError, match="backend: expected one of"):
        selective_scan(*args, backend="torch")
    with pytest.raises(TypeError, match="view: expected a string"):
        selective_scan(*args, view=None)


def _step_args(b=1, d=2, n=3):
    return dict(state=np.zeros((b, d, n)), u_t=np.ones((b, d)), delta_t=np.ones((b, d)), A=-np.ones((d, n)),
                B_t=np.ones((b, n)), C_t=np.ones((b, n)))


@pytest.mark.parametrize("over, exc, msg", [
    (dict(state=None), TypeError, "state: expected"),
    (dict(state=np.zeros((1, 2, 4))), ValueError, "state: expected shape"),  # n differs from A's
    (dict(state=np.zeros((1, 2))), ValueError, "state: expected 3 dimensions"),
    (dict(state=np.zeros((1, 2, 3)) + 1j), TypeError, "state: a complex state"),
    (dict(delta_t=np.ones((1, 3))), ValueError, "delta_t: expected shape"),
    (dict(u_t=np.ones((1, 3))), ValueError, "u_t: expected shape"),  # u_t is blamed, not delta_t
    (dict(u_t=np.ones((2, 2))), ValueError, "u_t: expected shape"),  # batch differs from state's
    (dict(B_t=np.ones((1, 4))), ValueError, "B_t: expected shape"),
    (dict(C_t=np.ones((1, 3, 3))), ValueError, "C_t: grouped layout"),  # 3 groups for 2 channels
    (dict(z_t=np.ones((1, 3))), ValueError, "z_t: expected shape"),
    (dict(delta_t=-np.ones((1, 2))), ValueError, "delta_t: expected the step Delta"),
    (dict(delta_t=np.full((1, 2), np.nan)), ValueError, "delta_t: expected finite"),
    (dict(delta_softplus="yes"), TypeError, "delta_softplus: expected True or False"),
    (dict(delta_bias=np.ones((1, 2))), ValueError, "delta_bias: expected 1 dimensions"),
])
def test_step_bad_inputs(over, exc, msg):
    a = _step_args()
    a.update(over)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        selective_step(a.pop("state"), a.pop("u_t"), a.pop("delta_t"), a.pop("A"), a.pop("B_t"), a.pop("C_t"), **a)
    with pytest.raises(ValueError, match="backend: .* no 'numba' backend"):
        selective_step(**_step_args(), backend="numba")


# ---------------------------------------------------------------------------------------------
# every layout x discretization x real/complex, with all options on and all off
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", ["all", "none"])
@pytest.mark.parametrize("disc", ["mamba", "zoh"])
@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("c_mode", ["fixed", "variable", "grouped"])
@pytest.mark.parametrize("b_mode", ["fixed", "variable", "grouped"])
def test_every_option_combination(b_mode, c_mode, cplx, disc, options):
    rng = np.random.default_rng(zlib.crc32(repr((b_mode, c_mode, cplx, disc, options)).encode()))
    b, d, l, n, g = 2, 4, 11, 3, 2
    A = -np.exp(rng.standard_normal((d, n))) + (1j * rng.standard_normal((d, n)) if cplx else 0)

    def bc(mode):
        shape = {"fixed": (d, n), "variable": (b, l, n), "grouped": (b, l, g, n)}[mode]
        X = rng.standard_normal(shape)
        return X + 1j * rng.standard_normal(shape) if (cplx and mode == "fixed") else X

    on = options == "all"
    args = (rng.standard_normal((b, l, d)),
            (rng.standard_normal((b, l, d)) if on else np.exp(rng.standard_normal((b, l, d)) - 1)),
            A, bc(b_mode), bc(c_mode), rng.standard_normal(d) if on else None,
            rng.standard_normal((b, l, d)) if on else None)
    kw = dict(delta_bias=rng.standard_normal(d) if on else None, delta_softplus=on,
              initial_state=((rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0))
                             if on else None),
              discretization=disc)
    y, h = O.s6_solve(*args, **kw)
    bounds = O.s6_bounds(*args, **kw, dtype=np.float64, views=VIEWS, chunk=4)
    for view in VIEWS:
        out, last = run(view, *args, chunk=4, return_final_state=True, **kw)
        assert_within(out, y, bounds[view][0], context=view)
        assert_within(last, h, bounds[view][1], context=view + " state")


@pytest.mark.parametrize("view", VIEWS)
def test_zoh_with_subnormal_steps_stays_finite(view):
    """phi1 at |Delta A| ~ 1e-310 (subnormal): the series branch, no inf/nan from dividing by a tiny x."""
    u = np.ones((1, 4, 1))
    delta = np.array([[[1e-300], [1e-310], [5e-324], [0.0]]])
    A = np.array([[-1e-6 + 3j, -2.0 + 0j]])
    B = np.ones((1, 2), dtype=complex)
    C = np.ones((1, 2))
    out_zoh = run(view, u, delta, A, B, C, discretization="zoh")
    out_euler = run(view, u, delta, A, B, C)
    assert np.all(np.isfinite(out_zoh))
    # phi1(Delta A) rounds to exactly 1 (|Delta A| / 2 < 1e-290), so ZOH and Euler do the same arithmetic
    np.testing.assert_array_equal(out_zoh, out_euler)


@pytest.mark.parametrize("over, exc, msg", [
    (dict(delta_bias=np.ones((1, 4))), ValueError, "delta_bias: expected 1 dimensions"),
    (dict(delta_bias=np.float64(0.3)), ValueError, "delta_bias: expected 1 dimensions"),
    (dict(delta_bias=np.ones(3)), ValueError, "delta_bias: expected shape (4,)"),
    (dict(delta_softplus="True"), TypeError, "delta_softplus: expected True or False"),
    (dict(delta=np.ones((2, 4), dtype=np.int64)), TypeError, "delta: expected a floating-point"),
    (dict(delta=np.full((2, 4), np.nan)), ValueError, "delta: expected finite"),
    (dict(delta=np.float64(1.0)), ValueError, "delta: expected an array with channels on the last axis"),
])
def test_effective_delta_validates_like_the_scan(over, exc, msg):
    from refimpl.ssm.selective import effective_delta

    a = dict(delta=np.ones((2, 4)))
    a.update(over)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        effective_delta(a.pop("delta"), **a)


def test_effective_delta_formula():
    from refimpl.ssm.selective import effective_delta

    delta = np.array([[-1.0, 0.0, 3.0, 25.0]])
    bias = np.array([0.5, -0.5, 0.0, 0.0])
    pre = delta + bias
    np.testing.assert_array_equal(effective_delta(delta, bias, delta_softplus=True), softplus(pre))
    np.testing.assert_array_equal(effective_delta(delta, bias), pre)
    assert effective_delta(delta.astype(np.float32)).dtype == np.float32  # no silent up- or downcast
