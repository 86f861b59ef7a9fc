"""Property tests for the SSM core: all views and backends agree with the dense operator (time-invariant
and time-varying systems), ZOH agrees with mpmath's exponential of the Van Loan block and with the ODE
solution, every discretization agrees with its closed form in mpmath, float32 results stay inside the
derived bound, each method converges at its order."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import ssm as O
from oracles.checks.ssm_core import discretization_oracle
from oracles.strategies.ssm import lti_cases
from oracles.tolerance import Bound, assert_within, componentwise_bound
from refimpl.ssm.discretization import discretize
from refimpl.ssm.lti import lti_kernel, lti_ssm

# (view, backend) pairs of lti_ssm; the time-varying ones
IMPLS = [("recurrent", "numpy"), ("recurrent", "numba"), ("convolution", "numpy"), ("convolution", "numba"),
         ("fft", "numpy"), ("scan", "numpy"), ("chunked", "numpy")]
TIME_VARYING_IMPLS = [("recurrent", "numpy"), ("recurrent", "numba"), ("scan", "numpy")]


def _cast(case, Ab, Bb, dtype_lowp):
    """The candidate's inputs in its dtype, and the same values cast up losslessly for the oracle."""
    cplx = np.iscomplexobj(Ab) or np.iscomplexobj(case.initial_state)
    dtype = (np.complex64 if cplx else np.float32) if dtype_lowp else (np.complex128 if cplx else np.float64)
    args = [a.astype(np.result_type(a.dtype, dtype)).astype(dtype) for a in (Ab, Bb, case.C, case.D, case.x)]
    s0 = case.initial_state.astype(np.result_type(case.initial_state.dtype, dtype)).astype(dtype)
    up = [a.astype(np.complex128 if np.iscomplexobj(a) else np.float64) for a in args]
    s0_up = s0.astype(np.complex128 if np.iscomplexobj(s0) else np.float64)
    return dtype, args, s0, up, s0_up


def _run(view, backend, *args, chunk, **kw):
    if view == "chunked":
        kw["chunk"] = chunk
    return lti_ssm(*args, view=view, backend=backend, return_final_state=True, **kw)


@given(case=lti_cases(), dtype_lowp=st.booleans())
def test_all_views_and_backends_match_dense_operator(case, dtype_lowp):
    Ab, Bb = discretize(case.A, case.B, case.dt, method="zoh", diagonal=case.diagonal)
    dtype, args, s0, up, s0_up = _cast(case, Ab, Bb, dtype_lowp)
    y_or, s_or = O.apply_dense(*up, h0=s0_up, diagonal=case.diagonal)
    by, bs = O.lti_bound(*up, dtype, h0=s0_up, diagonal=case.diagonal)
    for view, backend in IMPLS:
        name = f"{backend}/{view}"
        y, s = _run(view, backend, *args, chunk=case.chunk, initial_state=s0, diagonal=case.diagonal)
        assert y.dtype == np.dtype(dtype) and s.dtype == np.dtype(dtype), name
        bound = by
        if view == "fft":
            K = lti_kernel(*up[:3], case.x.shape[1], diagonal=case.diagonal)
            bound = by + O.fft_bound_lti(K, up[4], dtype)
        assert_within(y, y_or, bound, dtype=dtype, context=f"{name} {case}")
        # every view's final state is summed directly (the FFT view's too)
        assert_within(s, s_or, bs, dtype=dtype, context=f"{name} final state {case}")
    # without an initial state
    y0, s0_or = O.apply_dense(*up, diagonal=case.diagonal)
    by0, bs0 = O.lti_bound(*up, dtype, diagonal=case.diagonal)
    for view, backend in (("convolution", "numba"), ("recurrent", "numba"), ("scan", "numpy")):
        y, s = _run(view, backend, *args, chunk=case.chunk, diagonal=case.diagonal)
        assert_within(y, y0, by0, dtype=dtype, context=f"{backend}/{view} no initial state {case}")
        assert_within(s, s0_or, bs0, dtype=dtype, context=f"{backend}/{view} final state, no initial state {case}")
    # the convolution kernel itself: K_k = C A_bar^k B_bar is block (k, 0) of the dense operator
    L = case.x.shape[1]
    n_, m_, p_ = up[0].shape[-1], up[1].shape[-1], up[2].shape[1]
    K_or = np.zeros((L, up[0].shape[0], p_, m_), dtype=y0.dtype)
    K_mag = np.zeros(K_or.shape)
    for c in range(up[0].shape[0]):
        T, _, _, _ = O.dense_operator(up[0][c], up[1][c], up[2][c], None, L, diagonal=case.diagonal)
        Tm, _, _, _ = O.dense_operator(np.abs(up[0][c]), np.abs(up[1][c]), np.abs(up[2][c]), None, L,
                                       diagonal=case.diagonal)
        for k in range(L):
            K_or[k, c] = T[k * p_:(k + 1) * p_, :m_]
            K_mag[k, c] = Tm[k * p_:(k + 1) * p_, :m_]
    # K_k is a product of k + 2 matrices of inner dimension <= n: depth (L + 2) n (Higham 3.5)
    kb = componentwise_bound(K_mag, (L + 2) * (n_ + 1), dtype, complex_ops=bool(np.iscomplexobj(K_or)),
                             what="kernel powers")
    for backend in ("numba", "numpy"):
        assert_within(lti_kernel(*args[:3], L, diagonal=case.diagonal, backend=backend), K_or, kb, dtype=dtype,
                      context=f"{backend} kernel {case}")


@given(case=lti_cases(time_varying=True), dtype_lowp=st.booleans())
def test_time_varying_views_match_dense_operator(case, dtype_lowp):
    # a per-step dt ("dt": transitions that are functions of one A) or one system per step ("system":
    # transitions that do not commute, so an evaluation in the wrong order is caught)
    Ab, Bb = discretize(case.A, case.B, case.dt, method="zoh", diagonal=case.diagonal)
    l = case.x.shape[1]
    assert Ab.shape[0] == l and Bb.shape[0] == l
    dtype, args, s0, up, s0_up = _cast(case, Ab, Bb, dtype_lowp)
    y_or, s_or = O.apply_dense(*up, h0=s0_up, diagonal=case.diagonal)
    by, bs = O.lti_bound(*up, dtype, h0=s0_up, diagonal=case.diagonal)
    for view, backend in TIME_VARYING_IMPLS:
        y, s = _run(view, backend, *args, chunk=case.chunk, initial_state=s0, diagonal=case.diagonal)
        assert y.dtype == np.dtype(dtype), (view, backend)
        assert_within(y, y_or, by, dtype=dtype, context=f"{backend}/{view} {case}")
        assert_within(s, s_or, bs, dtype=dtype, context=f"{backend}/{view} final state {case}")
    # the views that need a time-invariant system say so
    for view, backend in (("convolution", "numpy"), ("convolution", "numba"), ("fft", "numpy"), ("chunked", "numpy")):
        with pytest.raises(ValueError, match=rf"A_bar: the {view} view needs a time-invariant system"):
            _run(view, backend, *args, chunk=case.chunk, initial_state=s0, diagonal=case.diagonal)


@given(case=lti_cases(lengths=(1,)))
def test_zoh_matches_mpmath_van_loan(case):
    # the oracle: mpmath's own expm of the Van Loan block at 50 digits (not scipy's expm, which zoh calls)
    Ab, Bb = discretize(case.A, case.B, case.dt, method="zoh", diagonal=case.diagonal)
    for c in range(case.A.shape[0]):
        a, b, ba, bb = discretization_oracle("zoh", case.A[c], case.B[c], case.dt[c], diagonal=case.diagonal)
        cand = np.diag(Ab[c]) if case.diagonal else Ab[c]
        assert_within(cand, a, ba, context=f"A_bar {case}")
        assert_within(Bb[c], b, bb, context=f"B_bar {case}")


@settings(max_examples=10)
@given(case=lti_cases(lengths=(1, 2, 5), max_n=3, dt_decades=(-2, 0)))
def test_zoh_recurrence_matches_ode_solution(case):
    Ab, Bb = discretize(case.A, case.B, case.dt, method="zoh", diagonal=case.diagonal)
    y = lti_ssm(Ab, Bb, case.C, case.D, case.x, initial_state=case.initial_state, diagonal=case.diagonal)
    by, _ = O.lti_bound(Ab, Bb, case.C, case.D, case.x, np.float64, h0=case.initial_state, diagonal=case.diagonal)
    for bi in range(case.x.shape[0]):
        for c in range(case.A.shape[0]):
            hs, y_ode = O.ode_solution(case.A[c], case.B[c], case.C[c], case.D[c], case.x[bi, :, c], case.dt[c],
                                       h0=case.initial_state[bi, c], diagonal=case.diagonal)
            bound = O.ode_bound(Ab[c], case.C[c], hs, Bound(by.values[bi, :, c], by.source), diagonal=case.diagonal)
            assert_within(y[bi, :, c], y_ode, bound, context=f"ZOH vs solve_ivp {case}")


@given(case=lti_cases(lengths=(1,)), method=st.sampled_from(["bilinear", "gbt", "forward_euler", "backward_euler",
                                                              "mamba"]),
       alpha=st.floats(0.0, 1.0))
def test_discretizations_match_mpmath_closed_form(case, method, alpha):
    a_ = alpha if method == "gbt" else None
    Ab, Bb = discretize(case.A, case.B, case.dt, method=method, alpha=a_, diagonal=case.diagonal)
    for c in range(case.A.shape[0]):
        a, b, ba, bb = discretization_oracle(method, case.A[c], case.B[c], case.dt[c], alpha=a_,
                                             diagonal=case.diagonal)
        cand = np.diag(Ab[c]) if case.diagonal else Ab[c]
        assert_within(cand, a, ba, context=f"{method} A_bar {case}")
        assert_within(Bb[c], b, bb, context=f"{method} B_bar {case}")


@given(st.integers(0, 2**31 - 1), st.floats(-14, -3))
def test_float32_diagonal_zoh_accurate_as_dA_to_zero(seed, log_dA):
    # B_bar = dt * expm1(dt A)/(dt A) * B in float32 against the float64 value of the same float32 inputs:
    # rounding dt*A (1), expm1 (<= 1 ulp, glibc), the division (1), times dt (1), times B (1): gamma_6 relative,
    # plus the float64 evaluation's own gamma_6 -- the naive (exp(dA) - 1)/A would fail by orders of magnitude.
    rng = np.random.default_rng(seed)
    dA = -(10.0 ** log_dA) * rng.uniform(0.5, 1.0, 8)
    dt = np.float32(10.0 ** rng.uniform(-3, 0))
    A = (dA / float(dt)).astype(np.float32)
    B = rng.standard_normal((1, 8, 1)).astype(np.float32)
    Ab, Bb = discretize(A[None], B, dt, method="zoh", diagonal=True)
    dtA64 = np.float64(dt) * A.astype(np.float64)
    exact = float(dt) * (np.expm1(dtA64) / dtA64) * B[0, :, 0].astype(np.float64)
    assert_within(Bb[0, :, 0], exact, componentwise_bound(np.abs(exact), 6, np.float32, what="float32 ZOH B_bar"))


def _step_response_error(method, N, A, B, s0, T=1.0, with_bound=False):
    """max |h_k - h(t_k)| for constant input 1 and initial state s0 over [0, T] with dt = T/N.

    Also returns the rounding bound of that error when the method is exact (ZOH): the recurrence's
    componentwise bound plus the Van Loan oracle's conditioned bound at each sample time.
    """
    dt = T / N
    Ab, Bb = discretize(A[None], B[None], dt, method=method)
    x = np.ones((1, N, 1, 1))
    Cid = np.eye(A.shape[0])[None]
    y = lti_ssm(Ab, Bb, Cid, None, x, initial_state=s0[None, None])
    by, _ = O.lti_bound(Ab, Bb, Cid, None, x, np.float64, h0=s0[None, None])
    err, slack = 0.0, np.inf
    for k in range(N):
        # exact: [h(t); 1] = exp(t [[A, B], [0, 0]]) [s0; 1], by Van Loan at t = (k + 1) dt
        a, b = O.van_loan_zoh(A, B, (k + 1) * dt)
        exact = a @ s0 + b[:, 0]
        e = np.abs(y[0, k, 0] - exact)
        err = max(err, float(np.max(e)))
        if not with_bound:
            continue
        ba, bb = O.expm_bound(A, B, (k + 1) * dt, np.float64)
        bound_k = by.values[0, k, 0] + ba.max() * (np.sum(np.abs(s0)) + 1.0)
        slack = min(slack, float(np.min(bound_k - e)))
    return err, slack


@pytest.mark.parametrize("method,order", [("forward_euler", 1), ("backward_euler", 1), ("bilinear", 2)])
def test_discretizations_converge_at_their_order(method, order):
    # Global error e(dt) = c dt^p (1 + O(dt)): the observed order log2(e(dt)/e(dt/2)) tends to p.
    # At dt = 1/128 -> 1/256 the O(dt) correction to the slope is below 0.1 for this system (|A| ~ 1).
    rng = np.random.default_rng(11)
    A, B, _, _ = O.random_stable_system(rng, 1, 3, 1, 1)
    s0 = rng.standard_normal(3)
    e1, _ = _step_response_error(method, 128, A[0], B[0], s0)
    e2, _ = _step_response_error(method, 256, A[0], B[0], s0)
    observed = math.log2(e1 / e2)
    assert abs(observed - order) < 0.1, (method, observed)


def test_zoh_is_exact_for_piecewise_constant_input():
    # ZOH has no discretization error: what remains is within the rounding bound at every sample.
    rng = np.random.default_rng(11)
    A, B, _, _ = O.random_stable_system(rng, 1, 3, 1, 1)
    s0 = rng.standard_normal(3)
    err, slack = _step_response_error("zoh", 64, A[0], B[0], s0, with_bound=True)
    assert slack >= 0, (err, slack)
