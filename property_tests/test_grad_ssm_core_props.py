"""Properties of the SSM core's backward passes: the adjoint identity ``<J v, w> = <v, J^T w>`` between the float64
oracle forwards (directional Richardson differences, :func:`oracles.gradients.fd_jvp`) and refimpl's VJPs, and the
agreement of the LTI backward views (recurrent, convolution, chunked with chunks of 64) at L = 0, 1, odd, a chunk of 64 +- 1 and long."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp
from oracles.ssm_grad_forward import discretize_forward, lti_forward, s4d_forward
from oracles.tolerance import Bound, assert_within, gamma
from oracles.verify.grad_ssm import lti_depth
from refimpl.ssm.discretization import discretize_vjp
from refimpl.ssm.lti import lti_ssm_vjp
from refimpl.ssm.s4d import s4d_kernel_vjp

CONV = dict(real_output="complex", use_h0=True, complex_A=True, time_varying=False, algorithm="direct")


def _c(rng, shape, cplx):
    return rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if cplx else 0)


def _pair(v, g):
    """``<v, J^T w> = Re sum conj(v) g`` over the inputs (the complex convention's pairing)."""
    return sum(float(np.sum(np.real(np.conj(v[k]) * g[k]))) for k in v)


def _pair_mag(v, g):
    return sum(float(np.sum(np.abs(v[k]) * np.abs(g[k]))) for k in v)


def _lti_system(rng, diag, cplx, L, b=1, d=1, n=2, m=1, p=1):
    A = 0.6 * _c(rng, (d, n) if diag else (d, n, n), cplx)
    return {"A_bar": A, "B_bar": _c(rng, (d, n, m), cplx), "C": _c(rng, (d, p, n), cplx),
            "D": _c(rng, (d, p, m), cplx), "x": rng.standard_normal((b, L, d, m)), "h0": _c(rng, (b, d, n), cplx)}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), diag=st.booleans(), cplx=st.booleans(), L=st.sampled_from([0, 1, 4, 9]),
       view=st.sampled_from(["recurrent", "convolution", "chunked"]))
def test_lti_adjoint_identity(seed, diag, cplx, L, view):
    rng = np.random.default_rng(seed)
    inp = _lti_system(rng, diag, cplx, L)
    conv = dict(CONV, diagonal=diag)
    out = lti_forward(inp, conv)
    w = {k: _c(rng, o.shape, np.iscomplexobj(o)) for k, o in out.items()}
    v = {k: _c(rng, np.shape(a), np.iscomplexobj(a)) for k, a in inp.items()}
    jv, err = fd_jvp(lambda a: lti_forward(a, conv), inp, v, w)
    g = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], dy=w["y"], d_final_state=w["h_last"],
                    initial_state=inp["h0"], diagonal=diag, view=view, **(dict(chunk=2) if view == "chunked" else {}))
    g["h0"] = g.pop("initial_state")
    depth = lti_depth(inp, conv) + sum(np.size(a) for a in v.values())
    # our VJP's rounding: gamma_depth (complex ops) on the pairing of |v| with the gradients' magnitudes
    # (|g| + its own rounding, bounded by the same gamma on |g|), plus the difference's own error
    bd = gamma(depth, np.float64, complex_ops=True) * 4 * _pair_mag(v, g) + err
    assert_within(_pair(v, g), jv, Bound(bd, "gamma_depth(complex) x 4 |v|.|g| + fd_jvp's error"),
                  context="<J v, w> = <v, J^T w>")


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["zoh", "bilinear", "gbt", "forward_euler",
                                                                "backward_euler", "mamba"]),
       diag=st.booleans())
def test_discretize_adjoint_identity(seed, method, diag):
    rng = np.random.default_rng(seed)
    h, n, m = 1, 2, 1
    cplx = diag
    A = (-rng.uniform(0.1, 2, (h, n)) + (1j * rng.uniform(-3, 3, (h, n)) if cplx else 0)) if diag else \
        rng.standard_normal((h, n, n)) - 1.5 * np.eye(n)
    inp = {"A": A, "B": _c(rng, (h, n, m), cplx), "dt": np.asarray(rng.uniform(0.05, 0.8))}
    conv = dict(method=method, alpha=0.3, diagonal=diag, output="s4")
    out = discretize_forward(inp, conv)
    w = {k: _c(rng, o.shape, np.iscomplexobj(o)) for k, o in out.items()}
    v = {k: _c(rng, np.shape(a), np.iscomplexobj(a)) for k, a in inp.items()}
    v["dt"] = np.asarray(float(rng.uniform(-1, 1)))
    jv, err = fd_jvp(lambda a: discretize_forward(a, conv), inp, v, w)
    g = discretize_vjp(A, inp["B"], inp["dt"], dA_bar=w["A_bar"], dB_bar=w["B_bar"], method=method, diagonal=diag,
                       alpha=0.3 if method == "gbt" else None)
    bd = gamma(60 + 4 * (n + m), np.float64, complex_ops=True) * 4 * _pair_mag(v, g) * 10 + err
    assert_within(_pair(v, g), jv, Bound(bd, "gamma_(60+4(n+m))(complex) x 40 |v|.|g| (the deepest chain: the "
                                             "2(n+m) block exponential, cond <= 10 on these stable systems) + "
                                             "fd_jvp's error"), context="<J v, w> = <v, J^T w>")


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["zoh", "bilinear"]),
       output=st.sampled_from(["2re", "re", "complex"]), L=st.sampled_from([0, 1, 6, 13]))
def test_s4d_adjoint_identity(seed, method, output, L):
    from oracles.verify import ops_s4d

    rng = np.random.default_rng(seed)
    conv = dict(method=method, output=output, zoh_B="expm1")
    inp = ops_s4d.sample(rng, conv, L=L, h=2, n=2)
    w = {"K": _c(rng, (2, L), output == "complex")}
    v = {k: _c(rng, np.shape(inp[k]), np.iscomplexobj(inp[k])) for k in ("Lambda", "B", "C", "dt")}
    jv, err = fd_jvp(lambda a: s4d_forward(a, conv), inp, v, w)
    g = s4d_kernel_vjp(inp["Lambda"], inp["B"], inp["C"], inp["dt"], L, dK=w["K"], method=method, output=output)
    bd = gamma(2 * L + 60, np.float64, complex_ops=True) * 4 * _pair_mag(v, g) + err
    assert_within(_pair(v, g), jv, Bound(bd, "gamma_(2L+60)(complex) x 4 |v|.|g| + fd_jvp's error"),
                  context="<J v, w> = <v, J^T w>")


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), diag=st.booleans(), cplx=st.booleans(),
       L=st.sampled_from([0, 1, 7, 63, 64, 65, 200]))
def test_lti_backward_views_agree(seed, diag, cplx, L):
    """The recurrent and the convolution adjoints agree within the sum of their rounding bounds (each gamma_depth
    times the adjoint on absolute values)."""
    from oracles.ssm_grad_forward import lti_adjoint_magnitude

    rng = np.random.default_rng(seed)
    inp = _lti_system(rng, diag, cplx, L, b=2, n=3, m=2, p=2)
    inp["A_bar"] = inp["A_bar"] * 0.8  # |A_bar| < 1 entrywise-ish: a stable system over L = 200
    conv = dict(CONV, diagonal=diag)
    out = lti_forward(inp, conv)
    w = {k: _c(rng, o.shape, np.iscomplexobj(o)) for k, o in out.items()}
    kw = dict(dy=w["y"], d_final_state=w["h_last"], initial_state=inp["h0"], diagonal=diag)
    a = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], view="recurrent", **kw)
    b = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], view="convolution", **kw)
    c = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], inp["C"], inp["D"], inp["x"], view="chunked", chunk=64, **kw)
    M = lti_adjoint_magnitude(inp, conv, w)
    depth = lti_depth(inp, conv)
    for k, mk in (("A_bar", "A_bar"), ("B_bar", "B_bar"), ("C", "C"), ("D", "D"), ("x", "x"),
                  ("initial_state", "h0")):
        bd = Bound(2 * gamma(depth, np.float64, complex_ops=cplx) * np.asarray(M[mk]),
                   "2 x gamma_depth x the adjoint on |inputs| (both views deviate from the exact gradient)")
        assert_within(a[k], b[k], bd, context=f"recurrent vs convolution, gradient of {k}")
        assert_within(a[k], c[k], bd, context=f"recurrent vs chunked (64), gradient of {k}")
