"""Property tests: Numba Cauchy / Vandermonde / diagonal-scan kernels match the NumPy reference for every
size they accept; the S4 generating-function kernel and the S4D kernels match direct powers; the S5 and
LRU views agree with the dense operator."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles import structured as OS
from oracles.strategies.structured import cauchy_inputs, diag_cases, dplr_cases, scan_inputs, vandermonde_inputs
from oracles.tolerance import Bound, assert_within
from refimpl.ssm import lru, s4, s4d, s5
from refimpl.ssm.lru import lru_ssm
from refimpl.ssm.s4 import cauchy, s4_kernel
from refimpl.ssm.s4d import s4d_kernel, vandermonde
from refimpl.ssm.s5 import diag_scan, s5_ssm

DTYPES = st.sampled_from([np.complex128, np.complex64])


def _flush_floor(v, dtype):
    """The Numba Vandermonde flushes powers below tiny to zero (refimpl.ssm.s4d.numba): each dropped
    term is below 2 tiny |v_n|, and a product near underflow rounds with absolute error <= tiny: over the
    n terms, 2 tiny (sum_n |v_n| + n) per output (the reference's own gradual-underflow roundings included)."""
    tiny = np.finfo(np.dtype(dtype)).tiny
    v = np.abs(np.asarray(v))
    return Bound(2 * tiny * (np.sum(v, axis=-1, keepdims=True) + v.shape[-1]), "flush of powers below tiny")


@given(data=st.data(), dtype=DTYPES)
def test_numba_cauchy_matches_reference(data, dtype):
    v, g, lam = data.draw(cauchy_inputs(dtype=dtype))
    got = cauchy(v, g, lam, backend="numba")
    assert got.dtype == dtype and got.shape == g.shape
    ref = cauchy(v, g, lam)
    assert ref.dtype == dtype
    up = lambda a: a.astype(np.complex128)  # noqa: E731
    assert_within(got, ref, OS.cauchy_bound(up(v), up(g), up(lam), dtype), dtype=dtype)


@given(data=st.data(), dtype=DTYPES)
def test_numba_vandermonde_matches_reference(data, dtype):
    v, z, L = data.draw(vandermonde_inputs(dtype=dtype))
    got = vandermonde(v, z, L, backend="numba")
    assert got.dtype == dtype and got.shape == (v.shape[0], L)
    ref = vandermonde(v, z, L)
    assert ref.dtype == dtype
    assert_within(got, ref, OS.vandermonde_bound(v, z, L, dtype) + _flush_floor(v, dtype), dtype=dtype)


@given(data=st.data(), dtype=DTYPES)
def test_numba_diag_scan_matches_reference_recurrence(data, dtype):
    a, b, s0 = data.draw(scan_inputs(dtype=dtype))
    got = diag_scan(a, b, initial_state=s0, backend="numba")
    assert got.dtype == dtype and got.shape == b.shape
    # reference: the literal recurrence s_t = a_t s_{t-1} + b_t
    ref = diag_scan(a, b, initial_state=s0)
    assert ref.dtype == dtype
    assert_within(got, ref, OS.diag_scan_bound(a, b, s0, dtype), dtype=dtype)
    # and the S5 associative scan (reference parallel view) gives the same states
    if s0 is None and b.shape[1]:
        _, xs = s5.associative_scan(s5.binary_op, np.broadcast_to(a[:, None, :], (a.shape[0],) + b.shape[::2]).copy(),
                                    np.moveaxis(b, 1, 0))
        assert_within(np.moveaxis(xs, 0, 1), ref, OS.diag_scan_bound(a, b, s0, dtype), dtype=dtype)


@given(case=dplr_cases(max_n=10))
def test_s4_generating_function_kernel_matches_direct_powers(case):
    d = s4.nplr(case.measure, case.N)
    C = case.C @ d.V
    args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], case.dt, case.L)
    K_or = OS.kernel_powers(*OS.bilinear_dense(OS.dplr_dense(d.Lambda, d.Pt, d.Qt), d.Bt, case.dt), C, case.L)
    bound = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, case.dt, case.L)
    assert_within(s4_kernel(*args)[0], K_or, bound, context="numpy Cauchy")
    assert_within(s4_kernel(*args, backend="numba")[0], K_or, bound, context="numba Cauchy")
    # the dense view (bilinear by a solve, direct powers) is what the bound's float64 oracle computes
    assert_within(s4_kernel(*args)[0], s4_kernel(*args, view="dense")[0], bound, context="dense view")


@given(case=diag_cases(), method=st.sampled_from(["zoh", "bilinear"]))
def test_s4d_kernel_matches_direct_powers(case, method):
    K = s4d_kernel(case.Lambda, case.B, case.C, case.dt, case.L, method=method, output="complex")
    disc = OS.zoh_diag_vanloan if method == "zoh" else OS.bilinear_diag
    for i in range(case.Lambda.shape[0]):
        Ab, Bb = disc(case.Lambda[i], case.B[i], case.dt[i])
        K_or = OS.kernel_powers(Ab, Bb, case.C[i], case.L)
        b = OS.diag_kernel_bound(case.Lambda[i], case.B[i], case.C[i], case.dt[i], case.L, method)
        assert_within(K[i], K_or, b)
        # the Numba Vandermonde on the same discretized inputs
        A_bar, B_bar = s4d.discretize_diag(case.Lambda[i:i + 1], case.B[i:i + 1], case.dt[i:i + 1], method)
        v = case.C[i:i + 1] * B_bar
        assert_within(vandermonde(v, A_bar, case.L, backend="numba")[0], K_or, b + _flush_floor(v[0], v.dtype))


VIEW_BACKENDS = (("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba"))


@given(seed=st.integers(0, 2**32 - 1), N=st.sampled_from([2, 4, 6]), d=st.integers(1, 3),
       L=st.sampled_from([0, 1, 2, 7, 16, 33]), method=st.sampled_from(["zoh", "bilinear"]),
       bidir=st.booleans())
def test_s5_views_match_dense_operator(seed, N, d, L, method, bidir):
    rng = np.random.default_rng(seed)
    Lambda, Bt, Ct, D, dt = s5.init(N, d, rng=rng)
    u = rng.standard_normal((2, L, d))
    Cb = (rng.standard_normal((d, N // 2)) + 1j * rng.standard_normal((d, N // 2))) if bidir else None
    disc = OS.zoh_diag_vanloan if method == "zoh" else OS.bilinear_diag
    Ab, Bb = disc(Lambda[:, None], Bt, dt[:, None])
    Ab = Ab[:, 0]
    extra = 4 + float(np.max(np.abs(dt * Lambda)))
    y_or = OS.diag_ssm_dense(Ab, Bb, Ct, D, u, factor=2.0)
    b = OS.diag_ssm_bound(Ab, Bb, Ct, D, u, factor=2.0, extra_rel_per_step=extra)
    if bidir:
        y_or = y_or + OS.diag_ssm_dense(Ab, Bb, Cb, None, u[:, ::-1], factor=2.0)[:, ::-1]
        bb = OS.diag_ssm_bound(Ab, Bb, Cb, None, u[:, ::-1], factor=2.0, extra_rel_per_step=extra)
        b = b + type(b)(bb.values[:, ::-1], bb.source)
    for view, backend in VIEW_BACKENDS:
        y = s5_ssm(Lambda, Bt, Ct, D, dt, u, method=method, output="2re", view=view, backend=backend, C_back=Cb)
        assert_within(y, y_or, b, context=f"{view}/{backend}")


@given(seed=st.integers(0, 2**32 - 1), N=st.integers(1, 6), L=st.sampled_from([0, 1, 2, 7, 33, 100]),
       r_min=st.floats(0.0, 0.9))
def test_lru_views_match_dense_operator(seed, N, L, r_min):
    params = lru.ring_init(N, 2, r_min=r_min, r_max=min(1.0, r_min + 0.1 + 0.5 * (1 - r_min)),
                           rng=np.random.default_rng(seed))
    nu_log, theta_log, gamma_log, B, C, D = params
    u = np.random.default_rng(seed + 1).standard_normal((1, L, 2))
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * B
    y_or = OS.diag_ssm_dense(lam, Bg, C, D, u)
    b = OS.diag_ssm_bound(lam, Bg, C, D, u, extra_rel_per_step=4 + float(np.max(np.exp(nu_log) + np.exp(theta_log))))
    for view, backend in VIEW_BACKENDS:
        assert_within(lru_ssm(*params, u, view=view, backend=backend), y_or, b, context=f"{view}/{backend}")
