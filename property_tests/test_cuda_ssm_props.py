"""Property tests of the SSM GPU twins (run under the CUDA simulator in CI: tiny shapes, few examples): for drawn
lengths, block sizes and dtypes the kernels match the NumPy references within the derived bounds of
:mod:`oracles.checks.cuda_ssm`."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import ssm as O
from oracles import structured as OS
from oracles.checks import cuda_ssm as B
from oracles.tolerance import assert_within

pytest.importorskip("numba.cuda")
WHERE = "simulator" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "device"
pytestmark = pytest.mark.gpu


@settings(max_examples=8)
@given(L=st.integers(0, 9), tpb=st.sampled_from([1, 2, 3, 4]), seed=st.integers(0, 2**16),
       time_varying=st.booleans(), dtype=st.sampled_from([np.complex128, np.complex64]))
def test_diag_scan_property(L, tpb, seed, time_varying, dtype):
    """Any L (including 0 and non-multiples of the block), any block size (1: no tree; 3: not a power of two)."""
    from refimpl.ssm.s5 import reference as R
    from refimpl.ssm.s5.cuda import diag_scan

    rng = np.random.default_rng(seed)
    n = 2
    a = 0.99 * np.exp(1j * rng.uniform(-np.pi, np.pi, (L, n) if time_varying else (n,)))
    b = rng.standard_normal((1, L, n)) + 1j * rng.standard_normal((1, L, n))
    s0 = rng.standard_normal((1, n)) + 1j * rng.standard_normal((1, n))
    out = diag_scan(a.astype(dtype), b.astype(dtype), s0.astype(dtype), threads_per_block=tpb)
    assert out.dtype == dtype
    assert_within(out, R.diag_scan(a, b, s0), B.diag_scan_bound(a, b, s0, dtype, tpb),
                  context=f"diag scan L={L} T={tpb} ({WHERE})")


@settings(max_examples=8)
@given(L=st.integers(0, 7), seed=st.integers(0, 2**16), diagonal=st.booleans(), with_D=st.booleans(),
       with_s0=st.booleans(), view=st.sampled_from(["recurrent", "convolution", "fft"]),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_lti_views_property(L, seed, diagonal, with_D, with_s0, view, dtype):
    """recurrent / convolution / fft views (diagonal and dense A_bar, every optional input) vs the dense operator."""
    from refimpl.ssm.discretization import discretize
    from refimpl.ssm.lti import lti_kernel, lti_ssm

    rng = np.random.default_rng(seed)
    A, Bm, C, D = O.random_stable_system(rng, 2, 2, 1, 2, diagonal=diagonal)
    Ab, Bb = discretize(A, Bm, 0.2, method="zoh", diagonal=diagonal)
    D = D if with_D else None
    x = rng.standard_normal((1, L, 2, 1))
    s0 = rng.standard_normal((1, 2, 2)) if with_s0 else None
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    y, h = lti_ssm(*map(cast, (Ab, Bb, C, D, x)), diagonal=diagonal, view=view, backend="cuda",
                   initial_state=cast(s0), return_final_state=True)
    assert y.dtype == dtype and h.dtype == dtype
    y_or, h_or = O.apply_dense(Ab, Bb, C, D, x, h0=s0, diagonal=diagonal)
    by, bh = O.lti_bound(*map(cast, (Ab, Bb, C, D, x)), dtype, h0=cast(s0), diagonal=diagonal)
    if view == "fft":
        by = by + O.fft_bound_lti(lti_kernel(Ab, Bb, C, L, diagonal=diagonal), x, dtype)
    assert_within(y, y_or, by, context=f"cuda {view} ({WHERE})")
    assert_within(h, h_or, bh, context=f"cuda {view} final state ({WHERE})")


@settings(max_examples=8)
@given(L=st.integers(0, 12), n=st.integers(0, 4), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.complex128, np.complex64]))
def test_vandermonde_and_cauchy_property(L, n, seed, dtype):
    from refimpl.ssm.s4 import reference as S4R
    from refimpl.ssm.s4.cuda import cauchy
    from refimpl.ssm.s4d import reference as S4DR
    from refimpl.ssm.s4d.cuda import vandermonde

    rng = np.random.default_rng(seed)
    v = rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))
    z = rng.uniform(0.5, 1.0, (2, n)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (2, n)))
    K = vandermonde(v.astype(dtype), z.astype(dtype), L, threads_per_block=4)
    assert K.dtype == dtype
    assert_within(K, S4DR.vandermonde(v, z, L), OS.vandermonde_bound(v, z, L, dtype), context=f"vandermonde ({WHERE})")
    lam = -rng.uniform(0.1, 1, (2, n)) + 1j * rng.uniform(-5, 5, (2, n))
    g = 1j * rng.uniform(-10, 10, (2, L))
    k = cauchy(v.astype(dtype), g.astype(dtype), lam.astype(dtype), threads_per_block=4)
    assert_within(k, S4R.cauchy(v, g, lam), OS.cauchy_bound(v, g, lam, dtype), context=f"cauchy ({WHERE})")
