"""The SSM core's backward passes (``lti_ssm_vjp``, ``discretize_vjp``, ``s4d_kernel_vjp``) against the ground truth:
Richardson central differences of the float64 oracle forwards (:mod:`oracles.ssm_grad_forward`) elementwise within
the differences' error plus the derived rounding bound of the backward (:mod:`oracles.verify.grad_ssm`); mpmath
differences on one tiny case; ``phi1'`` against mpmath; the backward mutants caught; dtypes and shapes."""
from __future__ import annotations

import numpy as np
import pytest

from oracles.gradients import fd_vjp, mp_vjp
from oracles.ssm_grad_forward import discretize_forward, lru_forward, lti_forward, s4d_forward
from oracles.tolerance import Bound, assert_within, gamma
from oracles.verify.grad_ssm import discretize_grad_bounds, lti_grad_bounds, s4d_grad_bounds
from refimpl.ssm.discretization import discretize, discretize_vjp
from refimpl.ssm.discretization.backward import dphi1
from refimpl.ssm.lti import lti_ssm, lti_ssm_vjp
from refimpl.ssm.s4d import s4d_kernel, s4d_kernel_vjp
from refimpl.ssm.s4d.backward import vandermonde_vjp

LTI_CONV = dict(real_output="complex", use_h0=True, complex_A=True, time_varying=False, algorithm="direct")


def _c(rng, shape, cplx):
    return rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)


def _lti_inputs(rng, *, diag, cplx, L, tv=False, h0=True, D=True, b=2, d=1, n=2, m=1, p=2):
    lead = (L,) if tv else ()
    A = 0.5 * _c(rng, lead + ((d, n) if diag else (d, n, n)), cplx)
    return {"A_bar": A, "B_bar": _c(rng, lead + (d, n, m), cplx), "C": _c(rng, (d, p, n), cplx),
            "D": _c(rng, (d, p, m), cplx) if D else None, "x": rng.standard_normal((b, L, d, m)),
            "h0": _c(rng, (b, d, n), cplx) if h0 else None}


def _check(grads, fd, bounds, names, dtype=np.float64):
    for nm in names:
        b = Bound(np.asarray(bounds[nm].values) + fd.error[nm], bounds[nm].source + " + the differences' error")
        assert_within(grads[nm], fd.grad[nm], b, dtype=dtype, context=f"gradient of {nm}")


# ---------------------------------------------------------------------------------------------- LTI

LTI_ROWS = [  # (view, diagonal, complex, L, time-varying)
    ("recurrent", True, True, 0, False), ("recurrent", True, False, 1, False), ("recurrent", False, True, 5, False),
    ("recurrent", False, False, 7, True), ("recurrent", True, True, 4, True),
    ("convolution", True, True, 5, False), ("convolution", False, False, 6, False), ("convolution", False, True, 1, False),
    ("chunked", True, True, 7, False), ("chunked", False, False, 5, False), ("chunked", False, True, 0, False),
]


@pytest.mark.parametrize("view,diag,cplx,L,tv", LTI_ROWS)
def test_lti_vjp_matches_differences(view, diag, cplx, L, tv):
    rng = np.random.default_rng([14, L, diag, cplx, tv])
    inp = _lti_inputs(rng, diag=diag, cplx=cplx, L=L, tv=tv)
    conv = dict(LTI_CONV, diagonal=diag)
    out = lti_forward(inp, conv)
    w = {k: _c(rng, v.shape, np.iscomplexobj(v)) for k, v in out.items()}
    names = [k for k in ("A_bar", "B_bar", "C", "D", "x", "h0") if inp[k] is not None]
    fd = fd_vjp(lambda a: lti_forward(a, conv), inp, w, names)
    kw = dict(chunk=3) if view == "chunked" else {}  # L = 5, 7: chunks of 3 with a short last one (chunk +- 1)
    g = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], dy=w["y"], d_final_state=w["h_last"],
                    initial_state=inp["h0"], diagonal=diag, view=view, **kw)
    g["h0"] = g.pop("initial_state")
    assert set(g) == set(names)
    for k in names:
        assert g[k].shape == np.shape(inp[k]) and (np.iscomplexobj(g[k]) == np.iscomplexobj(inp[k]))
    _check(g, fd, lti_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), names)


def test_lti_vjp_without_optional_inputs_and_final_state():
    """No D, no initial state, no final-state cotangent: only A_bar, B_bar, C, x get a gradient."""
    rng = np.random.default_rng(141)
    inp = _lti_inputs(rng, diag=False, cplx=False, L=6, h0=False, D=False)
    conv = dict(LTI_CONV, diagonal=False)
    w = {"y": rng.standard_normal(lti_forward(inp, conv)["y"].shape)}
    fd = fd_vjp(lambda a: lti_forward(a, conv), inp, w, ("A_bar", "B_bar", "C", "x"))
    g = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], None, inp["x"], dy=w["y"])
    assert set(g) == {"A_bar", "B_bar", "C", "x"}
    _check(g, fd, lti_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), list(g))


def test_lti_vjp_float32_stays_float32_and_is_within_its_bound():
    rng = np.random.default_rng(142)
    inp = _lti_inputs(rng, diag=True, cplx=False, L=9)
    inp32 = {k: (None if v is None else v.astype(np.float32)) for k, v in inp.items()}
    up = {k: (None if v is None else v.astype(np.float64)) for k, v in inp32.items()}
    conv = dict(LTI_CONV, diagonal=True)
    out = lti_forward(up, conv)
    w = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in out.items()}
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    names = ("A_bar", "B_bar", "C", "D", "x", "h0")
    fd = fd_vjp(lambda a: lti_forward(a, conv), up, w64, names)
    g = lti_ssm_vjp(inp32["A_bar"], inp32["B_bar"], inp32["C"], inp32["D"], inp32["x"], dy=w["y"],
                    d_final_state=w["h_last"], initial_state=inp32["h0"], diagonal=True)
    g["h0"] = g.pop("initial_state")
    assert all(v.dtype == np.float32 for v in g.values())
    _check(g, fd, lti_grad_bounds(up, fd.grad, conv, np.float32, fd.magnitude, cotangents=w64), names,
           dtype=np.float32)


def test_lti_vjp_mpmath_differences_tiny():
    """mpmath central differences (40 digits) of an mpmath loop on a tiny complex system."""
    import mpmath

    rng = np.random.default_rng(143)
    inp = _lti_inputs(rng, diag=True, cplx=True, L=3, b=1, n=2, m=1, p=1)

    def f_mp(a):
        A, Bm, C, D, x, h = (a[k] for k in ("A_bar", "B_bar", "C", "D", "x", "h0"))
        L = x.shape[1]
        y = np.empty((1, L, 1, 1), dtype=object)
        s = [h[0, 0, i] for i in range(2)]
        for t in range(L):
            s = [A[0, i] * s[i] + Bm[0, i, 0] * x[0, t, 0, 0] for i in range(2)]
            y[0, t, 0, 0] = C[0, 0, 0] * s[0] + C[0, 0, 1] * s[1] + D[0, 0, 0] * x[0, t, 0, 0]
        hl = np.empty((1, 1, 2), dtype=object)
        hl[0, 0, :] = s
        return {"y": y, "h_last": hl}

    conv = dict(LTI_CONV, diagonal=True)
    out = lti_forward(inp, conv)
    w = {k: _c(rng, v.shape, True) for k, v in out.items()}
    names = ("A_bar", "B_bar", "C", "D", "x", "h0")
    with mpmath.workdps(40):
        exact = mp_vjp(f_mp, inp, w, names, dps=40)
    g = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], dy=w["y"], d_final_state=w["h_last"],
                    initial_state=inp["h0"], diagonal=True)
    g["h0"] = g.pop("initial_state")
    fd = fd_vjp(lambda a: lti_forward(a, conv), inp, w, names)  # only its |J|^T|w| magnitudes for the bound
    bounds = lti_grad_bounds(inp, exact, conv, np.float64, fd.magnitude, cotangents=w)
    for k in names:
        b = Bound(np.asarray(bounds[k].values) + gamma(1, np.float64) * np.abs(exact[k]),
                  bounds[k].source + " + mpmath's final rounding")
        assert_within(g[k], exact[k], b, context=f"gradient of {k} vs mpmath")


def test_lti_vjp_views_agree_and_registered():
    from refimpl.ssm.lti import VJP_IMPLEMENTATIONS

    assert set(VJP_IMPLEMENTATIONS.pairs()) == {("recurrent", "numpy"), ("convolution", "numpy"), ("chunked", "numpy")}
    with pytest.raises(ValueError, match="chunk"):
        lti_ssm_vjp(np.ones((1, 2)), np.ones((1, 2, 1)), np.ones((1, 1, 2)), None, np.ones((1, 3, 1, 1)),
                    dy=np.ones((1, 3, 1, 1)), diagonal=True, chunk=2)


def test_lti_vjp_cotangents_checked_like_inputs():
    A, B, C, x = np.ones((1, 2)), np.ones((1, 2, 1)), np.ones((1, 1, 2)), np.ones((2, 5, 1, 1))
    with pytest.raises(ValueError, match=r"dy: expected 4 dimensions"):
        lti_ssm_vjp(A, B, C, None, x, dy=np.ones((2, 5, 1)), diagonal=True)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 5, 1, 1\) \(b l d p\)"):
        lti_ssm_vjp(A, B, C, None, x, dy=np.ones((2, 5, 1, 2)), diagonal=True)
    with pytest.raises(ValueError, match="d_final_state"):
        lti_ssm_vjp(A, B, C, None, x, dy=np.ones((2, 5, 1, 1)), d_final_state=np.ones((2, 1, 3)), diagonal=True)
    with pytest.raises(TypeError, match="dy"):
        lti_ssm_vjp(A, B, C, None, x, dy=np.ones((2, 5, 1, 1), dtype=int), diagonal=True)


# ---------------------------------------------------------------------------------------------- discretizations

DISC_ROWS = [(m, diag) for m in ("zoh", "bilinear", "gbt", "forward_euler", "backward_euler", "mamba")
             for diag in (True, False)]


@pytest.mark.parametrize("method,diag", DISC_ROWS)
def test_discretize_vjp_matches_differences(method, diag):
    rng = np.random.default_rng([15, len(method), diag])
    h, n, m = 2, 2, 2
    cplx = diag or method == "zoh"
    A = (-rng.uniform(0.1, 2, (h, n)) + (1j * rng.uniform(-3, 3, (h, n)) if cplx else 0)) if diag else \
        _c(rng, (h, n, n), cplx) - 1.2 * np.eye(n)
    inp = {"A": A, "B": _c(rng, (h, n, m), cplx), "dt": np.asarray(0.4)}
    conv = dict(method=method, alpha=0.3, diagonal=diag, complex_A=True, output="s4")
    out = discretize_forward(inp, conv)
    w = {k: _c(rng, v.shape, np.iscomplexobj(v)) for k, v in out.items()}
    fd = fd_vjp(lambda a: discretize_forward(a, conv), inp, w, ("A", "B", "dt"))
    g = discretize_vjp(A, inp["B"], inp["dt"], dA_bar=w["A_bar"], dB_bar=w["B_bar"], method=method, diagonal=diag,
                       alpha=0.3 if method == "gbt" else None)
    assert g["dt"].shape == () and g["dt"].dtype == np.float64
    _check(g, fd, discretize_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w),
           ("A", "B", "dt"))


@pytest.mark.parametrize("method", ["zoh", "bilinear", "mamba"])
@pytest.mark.parametrize("diag", [True, False])
def test_discretize_vjp_per_step_dt(method, diag):
    """dt (l d): one system per step; A, B sum the steps' gradients, dt keeps one per step (FD of refimpl's forward)."""
    rng = np.random.default_rng([16, diag])
    d, n, m, l = 2, 2, 1, 3
    A = -rng.uniform(0.2, 1, (d, n)) if diag else rng.standard_normal((d, n, n)) - np.eye(n)
    B = rng.standard_normal((d, n, m))
    dt = rng.uniform(0.1, 0.6, (l, d))

    def f(a):
        Ab, Bb = discretize(a["A"], a["B"], a["dt"], method=method, diagonal=diag)
        return {"A_bar": Ab, "B_bar": Bb}

    out = f({"A": A, "B": B, "dt": dt})
    w = {k: rng.standard_normal(v.shape) for k, v in out.items()}
    fd = fd_vjp(f, {"A": A, "B": B, "dt": dt}, w, ("A", "B", "dt"))
    g = discretize_vjp(A, B, dt, dA_bar=w["A_bar"], dB_bar=w["B_bar"], method=method, diagonal=diag)
    for k in ("A", "B", "dt"):
        assert g[k].shape == np.shape({"A": A, "B": B, "dt": dt}[k])
        # the bound: the deepest chain of the discretization adjoint (a 2(n+m) block exponential: 60 + 4(n+m)
        # roundings) on |J|^T|w|, plus the differences' own error
        bd = Bound(gamma(60 + 4 * (n + m), np.float64) * fd.magnitude[k] + fd.error[k],
                   "gamma_(60+4(n+m)) |J|^T|w| + the differences' error")
        assert_within(g[k], fd.grad[k], bd, context=f"gradient of {k}")


def test_dphi1_against_mpmath():
    import mpmath

    zs = np.array([0, 1e-300, 1e-12, 1e-6, 1e-3, 0.3, -0.999, 0.999, 1.0, -1.0, 1.5, -3, -50, 20,
                   0.5 + 0.8j, -0.2 + 3j, 1e-8j, -0.7 - 0.7j])
    got = dphi1(zs.astype(np.complex128))
    with mpmath.workdps(40):
        for z, v in zip(zs, got):
            zm = mpmath.mpmathify(complex(z))
            # the closed form at 40 digits, its series 1/2 + z/3 + z^2/8 where the closed form would cancel
            ex = mpmath.mpf(1) / 2 + zm / 3 + zm ** 2 / 8 if abs(zm) < 1e-10 else \
                (zm * mpmath.exp(zm) - mpmath.exp(zm) + 1) / zm ** 2
            ex = complex(ex)
            # series: 20 terms of <= 1 each (gamma_22 relative); quotient (|z| >= 1): e^z and phi1 within a few u,
            # over |z| >= 1: (|e^z| + |phi1|) (gamma_4 + 2u) absolute
            lim = gamma(22, np.float64) * abs(ex) if abs(z) < 1 else \
                (abs(np.exp(z)) + abs(np.expm1(z) / z)) * (gamma(4, np.float64) + 2 ** -52) / abs(z)
            assert abs(complex(v) - ex) <= lim, (z, v, ex)
    assert dphi1(np.float32(0.5)).dtype == np.float32


def test_discretize_vjp_gradients_of_C_D_are_not_entries_and_alpha_checked():
    A, B = -np.ones((1, 2)), np.ones((1, 2, 1))
    g = discretize_vjp(A, B, 0.1, dA_bar=np.ones((1, 2)), dB_bar=np.ones((1, 2, 1)), method="zoh", diagonal=True)
    assert set(g) == {"A", "B", "dt"}
    with pytest.raises(ValueError, match="alpha"):
        discretize_vjp(A, B, 0.1, dA_bar=np.ones((1, 2)), dB_bar=np.ones((1, 2, 1)), method="gbt", diagonal=True)
    with pytest.raises(ValueError, match="dB_bar"):
        discretize_vjp(A, B, 0.1, dA_bar=np.ones((1, 2)), dB_bar=np.ones((1, 2, 2)), method="zoh", diagonal=True)


# ---------------------------------------------------------------------------------------------- S4D

S4D_ROWS = [(m, o, L) for m in ("zoh", "bilinear") for o in ("2re", "re", "complex") for L in (0, 7)]


@pytest.mark.parametrize("method,output,L", S4D_ROWS)
def test_s4d_kernel_vjp_matches_differences(method, output, L):
    from oracles.verify import ops_s4d

    conv = dict(method=method, output=output, zoh_B="expm1")
    rng = np.random.default_rng([17, L, len(output)])
    inp = ops_s4d.sample(rng, conv, L=L, h=2, n=3)
    if output == "re":
        inp["dt"] = np.asarray(0.07)  # a scalar step, shared by the channels
    w = {"K": _c(rng, s4d_forward(inp, conv)["K"].shape, output == "complex")}
    names = ("Lambda", "B", "C", "dt")
    fd = fd_vjp(lambda a: s4d_forward(a, conv), inp, w, names)
    g = s4d_kernel_vjp(inp["Lambda"], inp["B"], inp["C"], inp["dt"], L, dK=w["K"], method=method, output=output)
    assert g["dt"].shape == np.shape(inp["dt"])
    _check(g, fd, s4d_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), names)


def test_s4d_kernel_vjp_real_inputs_get_real_gradients():
    """S4D-Real: a real Lambda, real B: their gradients are the real parts; C complex stays complex."""
    rng = np.random.default_rng(171)
    lam, B, C = -rng.uniform(0.5, 2, (1, 3)), rng.standard_normal((1, 3)), _c(rng, (1, 3), True)
    g = s4d_kernel_vjp(lam, B, C, 0.1, 6, dK=rng.standard_normal((1, 6)), output="re")
    assert g["Lambda"].dtype == np.float64 and g["B"].dtype == np.float64 and g["C"].dtype == np.complex128
    conv = dict(method="zoh", output="re")
    inp = {"Lambda": lam, "B": B, "C": C, "dt": np.asarray(0.1), "L": np.asarray(6)}
    w = {"K": rng.standard_normal((1, 6))}
    fd = fd_vjp(lambda a: s4d_forward(a, conv), inp, w, ("Lambda", "B", "C", "dt"))
    g = s4d_kernel_vjp(lam, B, C, 0.1, 6, dK=w["K"], output="re")
    _check(g, fd, s4d_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), ("Lambda", "B", "C"))


def test_vandermonde_vjp_matches_differences():
    rng = np.random.default_rng(172)
    v, z = _c(rng, (2, 3), True), 0.9 * np.exp(1j * rng.uniform(-3, 3, (2, 3)))
    L = 9

    def f(a):
        k = np.arange(L)
        return {"K": np.einsum("dn,dnk->dk", a["v"], a["z"][..., None] ** k)}

    w = {"K": _c(rng, (2, L), True)}
    fd = fd_vjp(f, {"v": v, "z": z}, w, ("v", "z"))
    g = vandermonde_vjp(v, z, L, dK=w["K"])
    for k in ("v", "z"):
        bd = Bound(gamma(4 * (L + 3), np.float64) * fd.magnitude[k] * 4 + fd.error[k],
                   "gamma_(4(L+3)) x 4 (complex products) |J|^T|w| (a sum of L positive-power terms)")
        assert_within(g[k], fd.grad[k], bd, context=k)


# ---------------------------------------------------------------------------------------------- LRU

@pytest.mark.parametrize("L", [0, 1, 7])
def test_lru_vjp_matches_differences(L):
    """Through the exp parameterization, with an initial state and the final state's cotangent (FD of refimpl's
    forward for those two, which the op's oracle forward does not take), and against the op's oracle without them."""
    from oracles.verify import ops_lru
    from oracles.verify.grad_ssm import LRU_WRT, lru_grad_bounds
    from refimpl.ssm.lru import lru_ssm, lru_ssm_vjp

    rng = np.random.default_rng([20, L])
    conv = dict(real_output="re")
    inp = ops_lru.sample(rng, conv, L=L, b=2, h=2, n=3)
    w = {"y": rng.standard_normal((2, L, 2))}
    fd = fd_vjp(lambda a: lru_forward(a, conv), inp, w, LRU_WRT)
    g = lru_ssm_vjp(*(inp[k] for k in LRU_WRT), dy=w["y"])
    assert set(g) == set(LRU_WRT)
    _check(g, fd, lru_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), LRU_WRT)
    # the initial state and the final state's cotangent
    x0 = _c(rng, (2, 3), True)

    def f(a):
        y, hf = lru_ssm(*(a[k] for k in LRU_WRT), initial_state=a["initial_state"], return_final_state=True)
        return {"y": y, "hf": hf}

    w2 = {"y": w["y"], "hf": _c(rng, (2, 3), True)}
    inp2 = dict(inp, initial_state=x0)
    fd2 = fd_vjp(f, inp2, w2, ("initial_state", "nu_log", "u"))
    g2 = lru_ssm_vjp(*(inp[k] for k in LRU_WRT), dy=w["y"], d_final_state=w2["hf"], initial_state=x0)
    for k in ("initial_state", "nu_log", "u"):
        bd = Bound(gamma(3 * L + 40, np.float64, complex_ops=True) * fd2.magnitude[k] + fd2.error[k],
                   "gamma_(3L+40)(complex) |J|^T|w| + the differences' error")
        assert_within(g2[k], fd2.grad[k], bd, context=k)


# ---------------------------------------------------------------------------------------------- mutants

def test_backward_mutants_are_caught():
    """Every planted slip of oracles/mutants/grad_ssm.py fails the elementwise check; the clean loop forms pass."""
    import oracles.mutants.grad_ssm as M
    from oracles.verify import ops_s4d

    rng = np.random.default_rng(18)
    inp = _lti_inputs(rng, diag=True, cplx=True, L=6)
    conv = dict(LTI_CONV, diagonal=True)
    out = lti_forward(inp, conv)
    w = {k: _c(rng, v.shape, True) for k, v in out.items()}
    names = ("A_bar", "B_bar", "C", "D", "x", "h0")
    fd = fd_vjp(lambda a: lti_forward(a, conv), inp, w, names)
    bounds = lti_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)

    def passes(g, fdr, bds, nms):
        return all(np.all(np.abs(np.asarray(g[k]) - fdr.grad[k]) <= np.asarray(bds[k].values) + fdr.error[k])
                   for k in nms)

    args = [inp[k] for k in names] + [w["y"], w["h_last"]]
    assert passes(M._clean_lti(*args), fd, bounds, names)
    for fn in (M.lti_late_start, M.lti_drop_dh0, M.lti_no_conj, M.lti_dD_shift, M.lti_chunk_boundary):
        assert not passes(fn(*args), fd, bounds, names), fn.__name__

    dinp = {"A": -rng.uniform(0.2, 2, (1, 3)) + 1j * rng.uniform(-2, 2, (1, 3)), "B": _c(rng, (1, 3, 1), True),
            "dt": np.asarray(0.3)}
    dconv = dict(method="zoh", alpha=0.5, diagonal=True, complex_A=True, output="s4")
    dw = {k: _c(rng, v.shape, True) for k, v in discretize_forward(dinp, dconv).items()}
    dfd = fd_vjp(lambda a: discretize_forward(a, dconv), dinp, dw, ("A", "B", "dt"))
    db = discretize_grad_bounds(dinp, dfd.grad, dconv, np.float64, dfd.magnitude, cotangents=dw)
    dargs = (dinp["A"], dinp["B"], dinp["dt"], None, None, dw["A_bar"], dw["B_bar"])
    assert passes(M._clean_zoh(*dargs), dfd, db, ("A", "B", "dt"))
    for fn in (M.disc_euler_phi, M.disc_dt_no_B):
        assert not passes(fn(*dargs), dfd, db, ("A", "B", "dt")), fn.__name__

    sconv = dict(method="zoh", output="2re", zoh_B="expm1")
    sinp = ops_s4d.sample(rng, sconv, L=6, h=1, n=2)
    sw = {"K": rng.standard_normal((1, 6))}
    sn = ("Lambda", "B", "C", "dt")
    sfd = fd_vjp(lambda a: s4d_forward(a, sconv), sinp, sw, sn)
    sb = s4d_grad_bounds(sinp, sfd.grad, sconv, np.float64, sfd.magnitude, cotangents=sw)
    sargs = (sinp["Lambda"], sinp["B"], sinp["C"], sinp["dt"], 6, sw["K"])
    assert passes(M._clean_s4d(*sargs), sfd, sb, sn)
    for fn in (M.s4d_no_conj, M.s4d_drop_two):
        assert not passes(fn(*sargs), sfd, sb, sn), fn.__name__


def _torch_lti(A_bar, B_bar, C, D, x, h0=None):
    """A literal torch loop of the LTI system in the op's canonical signature (a torch autograd candidate)."""
    import torch

    diag = A_bar.dim() == 2
    b, l, hh, m = x.shape
    h = h0 if h0 is not None else torch.zeros((b, hh, A_bar.shape[-1]), dtype=torch.result_type(A_bar, x))
    ys = []
    for t in range(l):
        h = (A_bar[None] * h if diag else torch.einsum("hij,bhj->bhi", A_bar, h)) + \
            torch.einsum("hnm,bhm->bhn", B_bar, x[:, t])
        y = torch.einsum("hpn,bhn->bhp", C, h)
        ys.append(y if D is None else y + torch.einsum("hpm,bhm->bhp", D, x[:, t]))
    y = torch.stack(ys, 1) if ys else torch.zeros((b, 0, hh, C.shape[1]), dtype=h.dtype)
    return y, h


def test_verify_grad_torch_autograd_lti_candidate_conforms():
    """``refimpl verify ssm.lti --framework torch --grad``: torch autograd of a literal loop conforms on every
    gradient case (golden and edge: L = 0, 1, 2, 7, 17, with and without h0 and D)."""
    pytest.importorskip("torch")
    from oracles.verify import verify

    rep = verify("ssm.lti", _torch_lti, framework="torch", grad=True, conventions={"diagonal": True, "complex_A": False},
                 kinds=("golden", "edge"))
    assert rep.passed, rep.grad_line()
