"""The structured SSMs' one way in: entry points and their view/backend tables, the vocabulary
(``initial_state=``, ``return_final_state=``, bool options), input validation of the Cauchy /
Vandermonde / diagonal-scan kernels on every backend, and the initial-state identities of S5, LRU and
MEGA's EMA (resume = whole sequence; the free response of an initial state)."""
import numpy as np
import pytest

from oracles import structured as OS
from oracles.tolerance import Bound, assert_within, gamma
from refimpl._dispatch import registered
from refimpl.ssm import hippo, lru, s4, s4d, s5
from refimpl.ssm.ema import mega_ema
from refimpl.ssm.lru import lru_ssm
from refimpl.ssm.s4 import cauchy, s4_kernel
from refimpl.ssm.s4d import discretize_diag, dss_kernel, s4d_kernel, vandermonde
from refimpl.ssm.s5 import associative_scan, binary_op, diag_scan, s5_ssm

BACKENDS = ("numpy", "numba")
S5_LRU_VIEWS = (("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba"))
EMA_VIEWS = ("recurrent", "convolution", "fft")


# ----------------------------------------------------------------------------- entry points and tables

def test_every_entry_point_is_registered_with_its_views_and_backends():
    tables = registered()
    expected = {
        "refimpl.ssm.hippo_projection": {("recurrent", "numpy")},
        "refimpl.ssm.s4_kernel": {("generating_function", "numpy"), ("generating_function", "numba"),
                                  ("generating_function", "cuda"), ("dense", "numpy")},
        "refimpl.ssm.cauchy": {("direct", "numpy"), ("direct", "numba"), ("direct", "cuda")},
        "refimpl.ssm.s4d_kernel": {("vandermonde", "numpy"), ("vandermonde", "numba"), ("vandermonde", "cuda")},
        "refimpl.ssm.dss_kernel": {("closed_form", "numpy")},
        "refimpl.ssm.vandermonde": {("repeated_products", "numpy"), ("repeated_products", "numba"),
                                    ("repeated_products", "cuda")},
        "refimpl.ssm.s5_ssm": {("scan", "numpy"), ("scan", "cuda"), ("recurrent", "numpy"), ("recurrent", "numba")},
        "refimpl.ssm.diag_scan": {("recurrent", "numpy"), ("recurrent", "numba"), ("recurrent", "cuda")},
        "refimpl.ssm.lru_ssm": {("recurrent", "numpy"), ("recurrent", "numba"), ("scan", "numpy"), ("scan", "cuda")},
        "refimpl.ssm.mega_ema": {("recurrent", "numpy"), ("convolution", "numpy"), ("fft", "numpy")},
    }
    for name, pairs in expected.items():
        assert name in tables, name
        assert set(tables[name].pairs()) == pairs, name
        for view, backend in pairs:  # every lazy "module:function" resolves
            assert callable(tables[name].get(view, backend))


def test_old_spellings_are_gone():
    from refimpl.ssm.lru import reference as lru_ref
    from refimpl.ssm.s5 import reference as s5_ref

    assert not hasattr(s5_ref, "apply") and not hasattr(lru_ref, "apply")
    with pytest.raises(TypeError):
        hippo.hippo_projection(np.ones(3), "legt", 2, 0.1, c0=np.zeros(2))
    with pytest.raises(ValueError, match="^view: "):  # the Numba kernel is a backend, not a view
        lru_ssm(*lru.ring_init(2, 1), np.zeros((1, 2, 1)), view="numba")
    with pytest.raises(TypeError):
        diag_scan(np.ones(2, complex), np.ones((1, 3, 2), complex), s0=np.zeros((1, 2)))


def test_bool_options_take_bools_only():
    Lambda, Bt, Ct, D, dt = s5.init(4, 2)
    u = np.zeros((1, 3, 2))
    for bad in ("False", 0, 1, None):
        with pytest.raises(TypeError, match="^return_final_state: expected True or False"):
            s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", return_final_state=bad)
        with pytest.raises(TypeError, match="^return_final_state: "):
            lru_ssm(*lru.ring_init(2, 2), u, return_final_state=bad)
        with pytest.raises(TypeError, match="^return_final_state: "):
            mega_ema(u, *(np.full((2, 3), 0.5),) * 4, return_final_state=bad)
        with pytest.raises(TypeError, match="^conj_sym: "):
            s5.hippo_n_init(4, conj_sym=bad)
    # np.bool_ is a bool
    y, x = s5_ssm(Lambda, Bt, Ct, D, dt, u, output="2re", return_final_state=np.bool_(True))
    assert x.shape == (1, 2)


# ----------------------------------------------------------------------------- kernel validation (every backend)

def _cplx(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cauchy_refuses_broadcasting_bad_dtypes_and_nonfinite(backend):
    v, lam, g = _cplx((2, 3)), _cplx((2, 3), 1) - 3.0, 1j * np.arange(8.0).reshape(2, 4)
    assert cauchy(v, g, lam, backend=backend).shape == (2, 4)
    with pytest.raises(ValueError, match=r"^lam: expected shape \(2, 3\)"):
        cauchy(v, g, lam[:1], backend=backend)  # (1, n) against (2, n): refused, not broadcast
    with pytest.raises(ValueError, match=r"^g: expected shape \(2, \*\)"):
        cauchy(v, g[:1], lam, backend=backend)
    with pytest.raises(ValueError, match="^v: expected 2 dimensions"):
        cauchy(v[0], g, lam, backend=backend)
    for dtype in (np.int64, np.bool_, np.float16):
        with pytest.raises(TypeError, match="^v: "):
            cauchy(np.ones((2, 3), dtype=dtype), g, lam, backend=backend)
        with pytest.raises(TypeError, match="^g: "):
            cauchy(v, np.ones((2, 4), dtype=dtype), lam, backend=backend)
    for name, args in (("v", (v * np.nan, g, lam)), ("g", (v, g + np.inf, lam)), ("lam", (v, g, lam * np.nan))):
        with pytest.raises(ValueError, match=f"^{name}: expected finite"):
            cauchy(*args, backend=backend)
    # real floats are floats: accepted, computed in the matching complex dtype
    assert cauchy(v.real.astype(np.float32), g.imag.astype(np.float32), lam.real.astype(np.float32),
                  backend=backend).dtype == np.complex64
    assert cauchy(np.zeros((2, 0)), np.zeros((2, 4)), np.zeros((2, 0)), backend=backend).shape == (2, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vandermonde_refuses_broadcasting_bad_dtypes_and_nonfinite(backend):
    v, z = _cplx((2, 3)), 0.5 * _cplx((2, 3), 1) / 3
    assert vandermonde(v, z, 5, backend=backend).shape == (2, 5)
    with pytest.raises(ValueError, match=r"^z: expected shape \(2, 3\)"):
        vandermonde(v, z[:1], 5, backend=backend)
    with pytest.raises(ValueError, match=r"^z: expected shape \(1, 3\)"):
        vandermonde(v[:1], z, 5, backend=backend)
    for dtype in (np.int64, np.bool_, np.float16):
        with pytest.raises(TypeError, match="^z: "):
            vandermonde(v, np.ones((2, 3), dtype=dtype), 5, backend=backend)
    with pytest.raises(ValueError, match="^v: expected finite"):
        vandermonde(v * np.inf, z, 5, backend=backend)
    for bad in (-1, 2.5, True):
        with pytest.raises((TypeError, ValueError), match="^L: "):
            vandermonde(v, z, bad, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_diag_scan_refuses_broadcasting_bad_dtypes_and_nonfinite(backend):
    a, b, s0 = 0.5 * _cplx((4, 3)) / 3, _cplx((2, 4, 3), 1), _cplx((2, 3), 2)
    assert diag_scan(a, b, initial_state=s0, backend=backend).shape == (2, 4, 3)
    assert diag_scan(a[0], b, backend=backend).shape == (2, 4, 3)  # a time-invariant a (n)
    with pytest.raises(ValueError, match=r"^a: expected shape \(4, 3\)"):
        diag_scan(a[:1], b, backend=backend)  # (1, n) against l = 4 steps: refused, not broadcast
    with pytest.raises(ValueError, match=r"^initial_state: expected shape \(2, 3\)"):
        diag_scan(a, b, initial_state=s0[:1], backend=backend)
    with pytest.raises(TypeError, match="^b: "):
        diag_scan(a, np.ones((2, 4, 3), dtype=np.int64), backend=backend)
    with pytest.raises(ValueError, match="^initial_state: expected finite"):
        diag_scan(a, b, initial_state=s0 * np.nan, backend=backend)


def test_associative_scan_refuses_mismatched_steps():
    a, b = np.full((5, 3), 0.5), np.ones((5, 3))
    sa, sb = associative_scan(binary_op, a, b)
    assert sb.shape == (5, 3)
    with pytest.raises(ValueError, match="^a: expected 5 steps"):
        associative_scan(binary_op, a[:4], b)  # one step shorter
    with pytest.raises(ValueError, match="^a: expected 5 steps"):
        associative_scan(binary_op, a[None], b)  # an extra leading axis
    with pytest.raises(TypeError, match="^op: "):
        associative_scan("add", a, b)
    with pytest.raises(TypeError, match="^a: "):
        associative_scan(binary_op, a.astype(np.int64), b)


def test_discretize_diag_reads_only_unambiguous_steps():
    lam, B = -0.5 + 1j * np.arange(6.0).reshape(2, 3), np.ones((2, 3), complex)
    A_bar, B_bar = discretize_diag(lam, B, np.array([0.1, 0.2]))
    assert A_bar.shape == B_bar.shape == (2, 3)
    for bad in (np.array([[0.1, 0.2]]), np.array([[0.1], [0.2]])):  # (1, d) / (d, 1): per time step? refused
        with pytest.raises(ValueError, match="^dt: expected 0 or 1 dimensions"):
            discretize_diag(lam, B, bad)
    with pytest.raises(ValueError, match=r"^dt: expected shape \(2,\)"):
        discretize_diag(lam, B, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="^Lambda: expected 2 dimensions"):
        discretize_diag(lam[0], B, 0.1)
    with pytest.raises(ValueError, match="^Lambda: expected finite"):
        discretize_diag(lam * np.nan, B, 0.1)
    with pytest.raises(ValueError, match=r"^B: expected shape \(2, 3\)"):
        discretize_diag(lam, B[:1], 0.1)


def test_dss_kernel_names_W():
    lam = -0.5 + 1j * np.arange(6.0).reshape(2, 3)
    with pytest.raises(ValueError, match=r"^W: expected shape \(2, 3\)"):
        dss_kernel(lam, np.ones((1, 3)), 0.1, 4)
    with pytest.raises(ValueError, match="^W: expected finite"):
        dss_kernel(lam, np.full((2, 3), np.nan), 0.1, 4)
    with pytest.raises(TypeError, match="^W: "):
        dss_kernel(lam, np.ones((2, 3), dtype=np.int64), 0.1, 4)


def test_unit_circle_half_angle_and_s5_init_arguments():
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="^L: expected an integer >= 1"):
            s4.unit_circle_half_angle(bad)
    with pytest.raises(TypeError, match="^L: "):
        s4.unit_circle_half_angle(2.5)
    for dt_min in (0.0, -1e-3):
        with pytest.raises(ValueError, match="^dt_min: expected values > 0"):
            s5.init(4, 2, dt_min=dt_min)
    with pytest.raises(ValueError, match="^dt_max: "):
        s5.init(4, 2, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="^d: "):
        s5.init(4, 0)


# ----------------------------------------------------------------------------- initial states

def _s5_case(seed, L, N=6, d=2, bsz=2):
    rng = np.random.default_rng(seed)
    Lambda, Bt, Ct, D, dt = s5.init(N, d, rng=rng)
    u = rng.standard_normal((bsz, L, d))
    Ab, Bb = OS.zoh_diag_vanloan(Lambda[:, None], Bt, dt[:, None])
    return (Lambda, Bt, Ct, D, dt), u, Ab[:, 0], Bb, 4 + float(np.max(np.abs(dt * Lambda)))


def _state_bound(a_abs, Bu_abs, depth_extra):
    """Two evaluations of ``x_t = a x_{t-1} + Bu_t`` (any association) whose inputs ``Bu`` are sums of
    ``depth_extra`` rounded terms: ``2 gamma^c_(2(t+1) + depth_extra)`` times the recurrence on magnitudes."""
    S = np.zeros(Bu_abs.shape)
    s = np.zeros((Bu_abs.shape[0], Bu_abs.shape[2]))
    for t in range(Bu_abs.shape[1]):
        s = a_abs * s + Bu_abs[:, t]
        S[:, t] = s
    depth = 2 * (Bu_abs.shape[1] + 1) + depth_extra
    return Bound(2 * gamma(depth, np.float64, complex_ops=True) * S[:, -1] + 1e-300,
                 f"two evaluations of the diagonal recurrence: 2 gamma^c_{depth} x |recurrence|")


@pytest.mark.parametrize("view,backend", S5_LRU_VIEWS)
@pytest.mark.parametrize("L,split", [(9, 4), (16, 1), (7, 0), (5, 5)])
def test_s5_resumed_from_its_final_state_equals_the_whole_sequence(view, backend, L, split):
    params, u, Ab, Bb, extra = _s5_case(L + split, L)
    y_or = OS.diag_ssm_dense(Ab, Bb, params[2], params[3], u, factor=2.0)
    bound = OS.diag_ssm_bound(Ab, Bb, params[2], params[3], u, factor=2.0, extra_rel_per_step=extra)
    kw = dict(output="2re", view=view, backend=backend, return_final_state=True)
    y1, x1 = s5_ssm(*params, u[:, :split], **kw)
    y2, x2 = s5_ssm(*params, u[:, split:], initial_state=x1, **kw)
    # the resumed computation performs the whole sequence's operations: the whole sequence's bound applies
    assert_within(np.concatenate([y1, y2], axis=1), y_or, bound, context=f"{view}/{backend} split {split}")
    _, x_whole = s5_ssm(*params, u, **kw)
    mag = np.einsum("nd,bld->bln", np.abs(Bb), np.abs(u))
    assert_within(x2, x_whole, _state_bound(np.abs(Ab), mag, u.shape[2] + 1))
    assert x2.shape == (u.shape[0], Ab.shape[0]) and np.iscomplexobj(x2)


@pytest.mark.parametrize("view,backend", S5_LRU_VIEWS)
def test_s5_free_response_of_an_initial_state(view, backend):
    # u = 0, D = 0: y_t = 2 Re(C~ Lambda_bar^{t+1} x_{-1}); oracle: closed-form powers exp((t+1) log Lambda_bar)
    params, u, Ab, _, extra = _s5_case(3, 12)
    x0 = _cplx((2, Ab.shape[0]), 4)
    y, xf = s5_ssm(*params, np.zeros_like(u), initial_state=x0, output="2re", view=view, backend=backend,
                   return_final_state=True)
    t = np.arange(1, 13)
    pw = np.exp(t[:, None] * np.log(Ab)[None, :])  # (l n)
    y_or = 2 * np.einsum("dn,ln,bn->bld", params[2], pw, x0).real
    # the reference: t+1 products of x0 by Lambda_bar (+ the rounding of Lambda_bar itself, 'extra' u per step), a
    # readout of n terms; the oracle's exp(j log) carries u(2 + j |log|): depth 2(t+1) + n + 4 + (t+1)(extra + |log|)
    mag = 2 * np.einsum("dn,ln,bn->bld", np.abs(params[2]), np.abs(pw), np.abs(x0))
    depth = 2 * (t + 1) + Ab.shape[0] + 4 + (t + 1) * (extra + float(np.max(np.abs(np.log(Ab)))))
    g = np.array([gamma(k, np.float64, complex_ops=True) for k in depth])
    assert_within(y, y_or, Bound(g[None, :, None] * mag + 1e-300, "free response: powers + readout, both sides"))
    assert_within(xf, pw[-1] * x0, Bound(float(g[-1]) * np.abs(pw[-1] * x0) + 1e-300, "12 products"))


def test_s5_state_rules():
    params, u, Ab, _, _ = _s5_case(5, 0)
    x0 = _cplx((2, Ab.shape[0]), 6)
    y, x = s5_ssm(*params, u, output="2re", initial_state=x0, return_final_state=True)
    assert y.shape == (2, 0, 2)
    np.testing.assert_array_equal(x, x0)  # l = 0: the final state is the initial state
    _, x = s5_ssm(*params, u, output="2re", return_final_state=True)
    np.testing.assert_array_equal(x, np.zeros_like(x0))
    u = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match=r"^initial_state: expected shape \(2, 3\)"):
        s5_ssm(*params, u, output="2re", initial_state=x0[:1])
    with pytest.raises(ValueError, match="^initial_state, return_final_state: the bidirectional"):
        s5_ssm(*params, u, output="2re", C_back=params[2], initial_state=x0)
    with pytest.raises(ValueError, match="^initial_state, return_final_state: the bidirectional"):
        s5_ssm(*params, u, output="2re", C_back=params[2], return_final_state=True)


@pytest.mark.parametrize("view,backend", S5_LRU_VIEWS)
@pytest.mark.parametrize("L,split", [(10, 3), (6, 0), (4, 4)])
def test_lru_resumed_from_its_final_state_equals_the_whole_sequence(view, backend, L, split):
    params = lru.ring_init(5, 3, r_min=0.5, r_max=0.99, rng=np.random.default_rng(L))
    nu_log, theta_log, gamma_log, B, C, D = params
    u = np.random.default_rng(L + 1).standard_normal((2, L, 3))
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    Bg = np.exp(gamma_log)[:, None] * B
    y_or = OS.diag_ssm_dense(lam, Bg, C, D, u)
    extra = 4 + float(np.max(np.exp(nu_log) + np.exp(theta_log)))
    bound = OS.diag_ssm_bound(lam, Bg, C, D, u, extra_rel_per_step=extra)
    kw = dict(view=view, backend=backend, return_final_state=True)
    y1, x1 = lru_ssm(*params, u[:, :split], **kw)
    y2, x2 = lru_ssm(*params, u[:, split:], initial_state=x1, **kw)
    assert_within(np.concatenate([y1, y2], axis=1), y_or, bound, context=f"{view}/{backend}")
    _, x_whole = lru_ssm(*params, u, **kw)
    mag = np.einsum("nd,bld->bln", np.abs(Bg), np.abs(u))
    assert_within(x2, x_whole, _state_bound(np.abs(lam), mag, u.shape[2] + 2))


def _ema_params(seed, d=3, n=4):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.05, 0.95, (d, n)), rng.uniform(0.05, 0.95, (d, n)),
            rng.standard_normal((d, n)), rng.standard_normal((d, n)))


@pytest.mark.parametrize("view", EMA_VIEWS)
@pytest.mark.parametrize("L,split", [(12, 5), (7, 0), (3, 3)])
def test_ema_resumed_from_its_final_state_equals_the_whole_sequence(view, L, split):
    a, dl, b, e = _ema_params(L)
    x = np.random.default_rng(L + 7).standard_normal((2, L, 3))
    y1, h1 = mega_ema(x[:, :split], a, dl, b, e, view=view, return_final_state=True)
    y2, h2 = mega_ema(x[:, split:], a, dl, b, e, view=view, initial_state=h1, return_final_state=True)
    # the resumed halves are one evaluation of the whole sequence's operator (the free response of h1 carries
    # what the first half's inputs contribute to the second): ema_bound's analysis of the whole sequence covers
    # it, its depth counting every step's roundings; the FFT view's share is the per-half FFT bound (each half
    # is one FFT convolution of its own length: at most the whole sequence's fft bound)
    assert_within(np.concatenate([y1, y2], axis=1), OS.ema_dense(x, a, dl, b, e),
                  OS.ema_bound(x, a, dl, b, e, fft=view == "fft"), context=view)
    _, h_whole = mega_ema(x, a, dl, b, e, view="recurrent", return_final_state=True)
    # final state: h_{l-1} = sum_k alpha beta q^{l-1-k} x_k by repeated products vs closed-form powers
    q = 1 - a * dl
    mag = np.einsum("dn,kdn,bkd->bdn", np.abs(a * b), q[None] ** np.arange(L - 1, -1, -1)[:, None, None], np.abs(x))
    depth = 6 * L + 10 + L * (2 + 2 * float(np.max(a * dl / q)) + float(np.max(np.abs(np.log(q)))))
    assert_within(h2, h_whole, Bound(2 * gamma(depth, np.float64) * mag + 1e-300, "state: ema_bound's depth"))
    assert h2.shape == (2, 3, 4) and h2.dtype == np.float64


@pytest.mark.parametrize("view", EMA_VIEWS)
def test_ema_free_response_of_an_initial_state(view):
    a, dl, b, e = _ema_params(9)
    L = 20
    h0 = np.random.default_rng(10).standard_normal((2, 3, 4))
    y, hf = mega_ema(np.zeros((2, L, 3)), a, dl, b, e, view=view, initial_state=h0, return_final_state=True)
    q = 1 - a * dl
    t = np.arange(1, L + 1)
    # oracle: y_{t,j} = sum_i eta q^{t+1} h0 with Python float powers of q (closed form)
    pw = np.array([[[float(q[j, i]) ** float(k) for i in range(4)] for j in range(3)] for k in t])  # (l d n)
    y_or = np.einsum("dn,ldn,bdn->bld", e, pw, h0)
    # q carries u(1 + alpha delta/q) twice (both sides form it), q^k k times that; exp(k log1p) u(k|log q| + 4);
    # the projection sums n terms: depth (t+1)(2 + 2 max(ad/q) + max|log q|) + n + 10, both sides
    depth = (t + 1) * (2 + 2 * float(np.max(a * dl / q)) + float(np.max(np.abs(np.log(q))))) + 4 + 10
    g = np.array([gamma(k, np.float64) for k in depth])
    mag = np.einsum("dn,ldn,bdn->bld", np.abs(e), pw, np.abs(h0))
    assert_within(y, y_or, Bound(2 * g[None, :, None] * mag + 1e-300, "free response"))
    assert_within(hf, pw[-1][None] * h0, Bound(2 * g[-1] * np.abs(pw[-1][None] * h0) + 1e-300, "q^L h0"))


def test_ema_state_rules():
    a, dl, b, e = _ema_params(0)
    h0 = np.ones((1, 3, 4))
    for view in EMA_VIEWS:
        y, h = mega_ema(np.zeros((1, 0, 3)), a, dl, b, e, view=view, initial_state=h0, return_final_state=True)
        assert y.shape == (1, 0, 3)
        np.testing.assert_array_equal(h, h0)
        with pytest.raises(ValueError, match=r"^initial_state: expected shape \(1, 3, 4\)"):
            mega_ema(np.zeros((1, 2, 3)), a, dl, b, e, view=view, initial_state=h0[:, :2])
        with pytest.raises(TypeError, match="^initial_state: "):
            mega_ema(np.zeros((1, 2, 3)), a, dl, b, e, view=view, initial_state=h0 + 0j)


# ----------------------------------------------------------------------------- the S4 views agree

@pytest.mark.parametrize("backend", BACKENDS)
def test_s4_views_and_s4d_on_a_diagonal_system(backend):
    # P = 0: the S4 generating function, the S4 dense view and the S4D Vandermonde kernel compute one kernel
    lam, B = s4d.init("lin", 8)
    C = _cplx(4, 3)
    z = np.zeros((1, 4, 0))
    args = (lam[None], z, z, B[None], C[None], 0.1, 33)
    K_gf = s4_kernel(*args, backend=backend)[0]
    K_dense = s4_kernel(*args, view="dense")[0]
    K_s4d = s4d_kernel(lam[None], B[None], C[None], 0.1, 33, method="bilinear", output="complex", backend=backend)[0]
    b = OS.s4_gf_bound(lam, z[0], z[0], B, C, 0.1, 33)
    assert_within(K_gf, K_dense, b)
    assert_within(K_gf, K_s4d, b + OS.diag_kernel_bound(lam, B, C, 0.1, 33, "bilinear"))
