"""The numba.cuda LTI recurrences, under the CUDA simulator in CI (small shapes) or on a real GPU
(``REFIMPL_REAL_GPU=1``; the CuPy test needs a device).  More kernels: ``tests/test_cuda_ssm.py``."""
import numpy as np
import pytest

from oracles import ssm as O
from oracles.tolerance import assert_within
from refimpl.ssm.discretization import discretize
from refimpl.ssm.lti import lti_ssm

cuda = pytest.importorskip("numba.cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("L", [0, 1, 7])
@pytest.mark.parametrize("complex_", [False, True])
def test_cuda_diag_recurrence_matches_dense_operator(L, complex_):
    from refimpl.ssm.lti.cuda import recurrent_diag

    rng = np.random.default_rng(L)
    A, B, C, Dm = O.random_stable_system(rng, 3, 4, 2, 2, diagonal=True, complex_=complex_)
    Ab, Bb = discretize(A, B, 0.1, method="zoh", diagonal=True)
    x = rng.standard_normal((2, L, 3, 2))
    s0 = rng.standard_normal((2, 3, 4)) + 0j * complex_
    y_or, s_or = O.apply_dense(Ab, Bb, C, Dm, x, h0=s0, diagonal=True)
    by, bs = O.lti_bound(Ab, Bb, C, Dm, x, np.float64, h0=s0, diagonal=True)
    # the kernel's own name and the entry point
    for y, s in (recurrent_diag(Ab, Bb, C, Dm, x, initial_state=s0, return_final_state=True),
                 lti_ssm(Ab, Bb, C, Dm, x, diagonal=True, backend="cuda", initial_state=s0, return_final_state=True)):
        assert_within(y, y_or, by, context="cuda recurrence")
        assert_within(s, s_or, bs, context="cuda final state")
    # without an initial state, and without D
    y_or0, s_or0 = O.apply_dense(Ab, Bb, C, None, x, diagonal=True)
    by0, bs0 = O.lti_bound(Ab, Bb, C, None, x, np.float64, diagonal=True)
    y, s = lti_ssm(Ab, Bb, C, None, x, diagonal=True, backend="cuda", return_final_state=True)
    assert_within(y, y_or0, by0, context="cuda recurrence, no initial state")
    assert_within(s, s_or0, bs0, context="cuda final state, no initial state")


def test_cuda_kernel_rejects_large_state():
    from refimpl.ssm.lti.cuda import recurrent_diag

    with pytest.raises(ValueError, match="A_bar: the CUDA kernel keeps the state in registers, expected n <= 64, got 65"):
        recurrent_diag(np.full((1, 65), 0.5), np.ones((1, 65, 1)), np.ones((1, 1, 65)), None, np.ones((1, 2, 1, 1)))


def test_cuda_backend_refuses_what_it_does_not_take():
    """Under the simulator (CI) or on a device: what the cuda views refuse, by name."""
    A, B, C = np.full((1, 2), 0.5), np.ones((1, 2, 1)), np.ones((1, 1, 2))
    x = np.ones((1, 3, 1, 1))
    with pytest.raises(ValueError, match="diagonal: the 'cuda' backend of view 'scan' needs a diagonal A_bar"):
        lti_ssm(np.eye(2)[None] * 0.5, B, C, None, x, view="scan", backend="cuda")
    with pytest.raises(ValueError, match="A_bar: the cuda recurrent view needs a time-invariant system"):
        lti_ssm(np.broadcast_to(A, (3, 1, 2)), B, C, None, x, diagonal=True, backend="cuda")
    with pytest.raises(ValueError, match="A_bar: the cuda convolution view needs a time-invariant system"):
        lti_ssm(np.broadcast_to(A, (3, 1, 2)), B, C, None, x, diagonal=True, view="convolution", backend="cuda")
    with pytest.raises(ValueError, match="backend: refimpl.ssm.lti_ssm has no 'cuda' backend for view 'chunked'"):
        lti_ssm(A, B, C, None, x, diagonal=True, view="chunked", backend="cuda")
    with pytest.raises(TypeError, match="return_final_state: expected True or False"):
        lti_ssm(A, B, C, None, x, diagonal=True, backend="cuda", return_final_state="yes")


def _real_gpu():
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        import cupy  # noqa: F401

        return cuda.is_available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs CuPy and a real CUDA device (REFIMPL_REAL_GPU=1)")
def test_cuda_diag_recurrence_on_cupy_arrays_stays_on_device():
    import cupy as cp

    from refimpl.ssm.lti.cuda import recurrent_diag

    rng = np.random.default_rng(9)
    A, B, C, Dm = O.random_stable_system(rng, 64, 16, 1, 1, diagonal=True, complex_=True)
    Ab, Bb = discretize(A, B, 0.05, method="zoh", diagonal=True)
    x = rng.standard_normal((4, 257, 64, 1))
    y = recurrent_diag(*(cp.asarray(a) for a in (Ab, Bb, C, Dm, x)))
    assert isinstance(y, cp.ndarray)
    y2, s2 = lti_ssm(*(cp.asarray(a) for a in (Ab, Bb, C, Dm, x)), diagonal=True, backend="cuda",
                     initial_state=cp.zeros((4, 64, 16), dtype=cp.complex128), return_final_state=True)
    assert isinstance(y2, cp.ndarray) and isinstance(s2, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(y2), cp.asnumpy(y))
    y_or, _ = O.apply_dense(Ab[:2], Bb[:2], C[:2], Dm[:2], x[:, :, :2], diagonal=True)
    by, _ = O.lti_bound(Ab[:2], Bb[:2], C[:2], Dm[:2], x[:, :, :2], np.float64, diagonal=True)
    assert_within(cp.asnumpy(y)[:, :, :2], y_or, by, context="cuda recurrence on CuPy")
