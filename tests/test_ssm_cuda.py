"""The numba.cuda diagonal LTI recurrence, under the CUDA simulator in CI (small shapes) or on a real GPU."""
import numpy as np
import pytest

from oracles import ssm as O
from oracles.tolerance import assert_within
from refimpl.ssm.discretization import reference as D
from refimpl.ssm.lti import reference as lti

cuda = pytest.importorskip("numba.cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("L", [0, 1, 7])
@pytest.mark.parametrize("complex_", [False, True])
def test_cuda_diag_recurrence_matches_dense_operator(L, complex_):
    from refimpl.ssm.lti.cuda import recurrent_diag

    rng = np.random.default_rng(L)
    A, B, C, Dm = O.random_stable_system(rng, 3, 4, 2, 2, diagonal=True, complex_=complex_)
    Ab, Bb = D.zoh(A, B, 0.1, diagonal=True)
    x = rng.standard_normal((2, L, 3, 2))
    h0 = rng.standard_normal((2, 3, 4)) + 0j * complex_
    y, s = recurrent_diag(Ab, Bb, C, Dm, x, h0=h0, return_state=True)
    y_or, s_or = O.apply_dense(Ab, Bb, C, Dm, x, h0=h0, diagonal=True)
    by, bs = O.lti_bound(Ab, Bb, C, Dm, x, np.float64, h0=h0, diagonal=True)
    assert_within(y, y_or, by, context="cuda recurrence")
    assert_within(s, s_or, bs, context="cuda final state")
    np.testing.assert_allclose(y, lti.recurrent(Ab, Bb, C, Dm, x, h0=h0, diagonal=True), rtol=0,
                               atol=2 * by.max())


def test_cuda_kernel_rejects_large_state():
    from refimpl.ssm.lti.cuda import recurrent_diag

    with pytest.raises(ValueError, match="A_bar: the CUDA kernel keeps the state in registers, expected n <= 64, got 65"):
        recurrent_diag(np.full((1, 65), 0.5), np.ones((1, 65, 1)), np.ones((1, 1, 65)), None, np.ones((1, 2, 1, 1)))


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
    Ab, Bb = D.zoh(A, B, 0.05, diagonal=True)
    x = rng.standard_normal((4, 257, 64, 1))
    y = recurrent_diag(*(cp.asarray(a) for a in (Ab, Bb, C, Dm, x)))
    assert isinstance(y, cp.ndarray)
    y_or, _ = O.apply_dense(Ab[:2], Bb[:2], C[:2], Dm[:2], x[:, :, :2], diagonal=True)
    by, _ = O.lti_bound(Ab[:2], Bb[:2], C[:2], Dm[:2], x[:, :, :2], np.float64, diagonal=True)
    assert_within(cp.asnumpy(y)[:, :, :2], y_or, by, context="cuda recurrence on CuPy")
