"""Cross-family equivalences: the special cases where two families compute the same system.

* Mamba's selective scan with fixed B, C and a constant step per channel is an LTI diagonal SSM:
  S6 (`discretization="mamba"` / `"zoh"`) must equal the SSM core's recurrence on
  `discretize.mamba` / `discretize.zoh` of the same (A, B).
* The S4D kernel (complex output) is the SSM core's convolution kernel `K_k = C A_bar^k B_bar` of the
  diagonal system.
Both sides are float64 evaluations of the same sums of products, each within `lti_bound` of the exact
value, so they may differ by twice that bound.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles import ssm as O
from oracles.tolerance import Bound, assert_within
from refimpl.ssm import discretization as discretize
from refimpl.ssm.lti import reference as lti
from refimpl.ssm.s4d import reference as s4d
from refimpl.ssm.selective import reference as selective


@given(seed=st.integers(0, 2**31), d=st.integers(1, 3), n=st.integers(1, 5), l=st.sampled_from([0, 1, 2, 7, 33]),
       method=st.sampled_from(["mamba", "zoh"]), complex_=st.booleans())
def test_selective_scan_with_fixed_B_C_and_constant_step_is_lti(seed, d, n, l, method, complex_):
    rng = np.random.default_rng(seed)
    A = -rng.uniform(0.1, 2.0, (d, n)) + (1j * rng.standard_normal((d, n)) if complex_ else 0)
    B = rng.standard_normal((d, n)) + (1j * rng.standard_normal((d, n)) if complex_ else 0)
    C = rng.standard_normal((d, n)) + (1j * rng.standard_normal((d, n)) if complex_ else 0)
    dt = 10.0 ** rng.uniform(-2, 0, d)
    u = rng.standard_normal((2, d, l))
    delta = np.broadcast_to(dt[None, :, None], (2, d, l)).copy()
    # S6 is sequence-first (b l d): transpose in and out of this test's (b d l) arrays
    y_s6 = selective.recurrent(u.transpose(0, 2, 1), delta.transpose(0, 2, 1), A, B, C,
                               discretization=method).transpose(0, 2, 1)
    # the same system through the SSM core: one channel per d, m = p = 1
    A_bar, B_bar = discretize.discretize(A, B[..., None], dt, method=method, diagonal=True)
    x = np.transpose(u, (0, 2, 1))[..., None]
    # S6's complex-A output convention is 2 Re(C h) (one state per conjugate pair)
    C_core = (2 * C if complex_ else C)[:, None, :]
    y_core = lti.recurrent(A_bar, B_bar, C_core, None, x, diagonal=True)
    y_core = (y_core.real if complex_ else y_core)[..., 0].transpose(0, 2, 1)
    by, _ = O.lti_bound(A_bar, B_bar, C_core, None, x, np.float64, diagonal=True)
    b = np.transpose(np.asarray(by.values)[..., 0], (0, 2, 1))
    assert_within(y_s6, y_core, Bound(2 * b, "2 x lti_bound: both sides round"), context=f"{method} complex={complex_}")


@given(seed=st.integers(0, 2**31), init=st.sampled_from(["lin", "inv", "legs"]), L=st.sampled_from([0, 1, 5, 64]),
       method=st.sampled_from(["zoh", "bilinear"]))
def test_s4d_kernel_is_the_lti_convolution_kernel(seed, init, L, method):
    rng = np.random.default_rng(seed)
    N = 8
    Lam, B = s4d.init(init, N)
    H = 2
    Lam = np.broadcast_to(Lam, (H,) + Lam.shape[-1:]).copy()
    B = np.broadcast_to(B, (H,) + B.shape[-1:]).copy()
    C = rng.standard_normal(Lam.shape) + 1j * rng.standard_normal(Lam.shape)
    dt = 10.0 ** rng.uniform(-3, -1, H)
    K = s4d.kernel(Lam, B, C, dt, L, method=method, output="complex")
    A_bar, B_bar = discretize.discretize(Lam, B[..., None], dt, method=method, diagonal=True)
    K_core = lti.kernel(A_bar, B_bar, C[:, None, :], L, diagonal=True)[:, :, 0, 0].T  # (h l)
    x = np.zeros((1, L, H, 1))
    if L:
        x[0, 0] = 1.0  # the impulse response is the kernel
    by, _ = O.lti_bound(A_bar, B_bar, C[:, None, :], None, x, np.complex128, diagonal=True)
    b = np.asarray(by.values)[0, :, :, 0].T
    assert_within(K, K_core, Bound(2 * b, "2 x lti_bound of the impulse response"), context=f"{init} {method}")
