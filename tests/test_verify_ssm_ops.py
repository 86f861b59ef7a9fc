"""Verify op specs of the SSM families (issues 10, 11): our references conform under every convention, the
oracles are right (the HiPPO recurrence converges to the quadrature projections), the conventions real code
needs are there (real_output, use_h0, time_varying, step, zoh_B), and the default cases exercise every path."""
import functools

import numpy as np
import pytest

from oracles import hippo as OH
from oracles.verify import get_op, verify

FAST = dict(max_examples=2, seed=3)


def _ok(op, fn, conv, adapter="refimpl", dtype=("float64", "float32"), **kw):
    rep = verify(op, fn, adapter=adapter, conventions=conv, dtype=list(dtype), **{**FAST, **kw})
    assert rep.passed, rep.to_text()
    return rep


# ------------------------------------------------------------------------------------------ ssm.lti

@pytest.mark.parametrize("view, conv", [("recurrent", {}), ("recurrent", {"time_varying": True}),
                                        ("scan", {"time_varying": True}), ("chunked", {"diagonal": True}),
                                        ("convolution", {"use_h0": False}),
                                        ("fft", {"use_h0": False, "algorithm": "fft"})])
def test_lti_reference_conforms(view, conv):
    from refimpl.ssm.lti import lti_ssm

    _ok("ssm.lti", functools.partial(lti_ssm, view=view), conv)


def test_lti_default_cases_cover_every_path():
    spec = get_op("ssm.lti")
    conv = spec.resolve_conventions({"time_varying": True})
    cs = spec.cases(conv)
    Ls = {c.inputs["x"].shape[1] for c in cs}
    assert {0, 1, 2, 17, 63, 65, 300} <= Ls
    assert any(np.iscomplexobj(c.inputs["A_bar"]) for c in cs) and any(np.isrealobj(c.inputs["A_bar"]) for c in cs)
    assert any(c.inputs["h0"] is None for c in cs) and any(c.inputs["h0"] is not None for c in cs)
    assert any(np.ndim(c.inputs["A_bar"]) == 4 for c in cs)
    none = spec.cases(spec.resolve_conventions({"use_h0": False}))
    assert all(c.inputs["h0"] is None for c in none)
    with pytest.raises(ValueError, match="time_varying"):
        spec.cases(spec.resolve_conventions({"time_varying": True, "diagonal": True}))


def _re_lti(A_bar, B_bar, C, D, x, h0=None):
    """S5-style: the real part of y (full spectrum), real output."""
    from refimpl.ssm.lti import lti_ssm

    y, h = lti_ssm(A_bar, B_bar, C, D, x, diagonal=True, initial_state=h0, return_final_state=True)
    return y.real, h


def test_lti_real_output_is_a_declared_convention():
    rep = verify("ssm.lti", _re_lti, conventions={"diagonal": True, "real_output": "re"}, **FAST)
    assert rep.passed, rep.to_text()
    bad = verify("ssm.lti", _re_lti, conventions={"diagonal": True}, kinds=("golden",))
    assert not bad.passed
    assert any("real_output='re'" in d for d in bad.deviations()), bad.deviations()


def test_lti_candidate_without_h0_is_verified_with_use_h0_false():
    from refimpl.ssm.lti import lti_ssm

    def conv_only(A_bar, B_bar, C, D, x):  # no initial-state argument at all
        return lti_ssm(A_bar, B_bar, C, D, x, view="convolution", return_final_state=True)

    _ok("ssm.lti", conv_only, {"use_h0": False}, adapter="canonical")


# ------------------------------------------------------------------------------------------ new ops

@pytest.mark.parametrize("conv, kw", [({}, {}), ({}, {"view": "dense"}), ({"output": "complex"}, {"backend": "numba"}),
                                      ({"method": "zoh", "output": "re"}, {})])
def test_s4_kernel_reference_conforms(conv, kw):
    from refimpl.ssm.s4 import s4_kernel

    _ok("ssm.s4_kernel", functools.partial(s4_kernel, **kw), conv)


def test_s4_kernel_rank_first_adapter():
    from refimpl.ssm.s4 import s4_kernel

    def rank_first(Lambda, P, Q, B, C, dt, L):
        return s4_kernel(Lambda, np.moveaxis(P, 0, -1), np.moveaxis(Q, 0, -1), B, C, dt, L, output="2re")

    _ok("ssm.s4_kernel", rank_first, {}, adapter="rank_first", kinds=("golden", "edge"))


@pytest.mark.parametrize("variant", ["softmax", "exp"])
def test_dss_kernel_reference_conforms(variant):
    from refimpl.ssm.s4d import dss_kernel

    _ok("ssm.dss_kernel", dss_kernel, {"variant": variant})


@pytest.mark.parametrize("conv, kw", [({}, {}), ({}, {"view": "recurrent", "backend": "numba"}),
                                      ({"method": "bilinear", "real_output": "re"}, {}), ({"bidirectional": True}, {})])
def test_s5_reference_conforms(conv, kw):
    from refimpl.ssm.s5 import s5_ssm

    _ok("ssm.s5", functools.partial(s5_ssm, **kw), conv)


@pytest.mark.parametrize("conv, view", [({}, "recurrent"), ({}, "convolution"), ({"algorithm": "fft"}, "fft"),
                                        ({"use_h0": False}, "recurrent")])
def test_ema_reference_conforms(conv, view):
    from refimpl.ssm.ema import mega_ema

    _ok("ssm.ema", functools.partial(mega_ema, view=view), conv)


def test_ema_time_major_adapter():
    from refimpl.ssm.ema import mega_ema

    def time_major(x, alpha, delta, beta, eta, h0=None):
        y, h = mega_ema(np.swapaxes(x, 0, 1), alpha, delta, beta, eta, initial_state=h0, return_final_state=True)
        return np.swapaxes(y, 0, 1), h

    _ok("ssm.ema", time_major, {}, adapter="time_major", kinds=("golden", "edge"))


@pytest.mark.parametrize("conv", [{}, {"measure": "legt"}, {"measure": "lmu", "method": "forward_euler"},
                                  {"measure": "lagt", "method": "backward_euler"}, {"measure": "fout", "theta": 1.5},
                                  {"method": "gbt", "alpha": 0.3}])
def test_hippo_projection_reference_conforms(conv):
    from refimpl.ssm.hippo import hippo_projection

    _ok("ssm.hippo_projection", hippo_projection, conv)


def _legs_held(f, N, dt, c0=None):
    """The official S4 code's HiPPO_LegS recurrence (bilinear, frozen at t = k + 1), written here in NumPy."""
    N = int(N)
    q = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    A = -(np.tril(np.outer(r, r), -1) + np.diag(q + 1))
    c = np.zeros(N) if c0 is None else np.asarray(c0, dtype=np.float64)
    out = np.zeros((len(f), N))
    I = np.eye(N)
    for k, fk in enumerate(np.asarray(f, dtype=np.float64)):
        At = A / (k + 1)
        c = np.linalg.solve(I - At / 2, (I + At / 2) @ c + r / (k + 1) * fk)
        out[k] = c
    return out


def test_hippo_held_step_is_a_declared_convention():
    rep = verify("ssm.hippo_projection", _legs_held, conventions={"step": "held"}, dtype=["float64", "float32"], **FAST)
    assert rep.passed, rep.to_text()
    bad = verify("ssm.hippo_projection", _legs_held, kinds=("golden",))
    assert not bad.passed and any("step='held'" in d for d in bad.deviations()), bad.deviations()


@pytest.mark.parametrize("measure, N", [("legs", 8), ("lagt", 8), ("legt", 8), ("lmu", 8), ("fout", 7)])
def test_hippo_oracle_converges_to_the_quadrature_projection(measure, N):
    """The oracle's recurrence (closed-form matrices, mpmath) against Gauss quadrature of the continuous projection:
    second-order convergence of the bilinear step, independently of refimpl."""
    errs = []
    for L in (100, 200):
        if measure in ("legs", "lagt"):
            sig = lambda x: np.sin(3 * x) + 0.5 * np.cos(7 * x) + x  # noqa: E731
            dt = 1.0 / L
            grid = dt * np.arange(1, L + 1) if measure == "legs" else dt * np.arange(L + 1)
            c = OH.online_mpmath(sig(grid), measure, N, dt, alpha=0.5, dps=20)
            q = OH.coefficients(sig, "legs" if measure == "legs" else "lagt_finite", N, 1.0)
        else:
            if measure == "fout":
                sig = lambda x: 1 + np.cos(2 * np.pi * x) - 0.5 * np.sin(4 * np.pi * x)  # noqa: E731
            else:
                sig = np.polynomial.Polynomial([1.0, 1.0, -2.0, 0.3])
            t0, t1 = 1.0, 2.0
            dt = (t1 - t0) / L
            c0 = OH.coefficients(sig, measure, N, t0)
            c = OH.online_mpmath(sig(t0 + dt * np.arange(L + 1)), measure, N, dt, alpha=0.5, c0=c0, dps=20)
            q = OH.coefficients(sig, measure, N, t1)
        errs.append(np.max(np.abs(c[-1] - q)))
    order = np.log2(errs[0] / errs[1])
    assert errs[1] < 1e-2 and 1.8 < order < 2.2, (errs, order)


def _s4d_difference(Lambda, B, C, dt, L):
    """S4D's kernel with B_bar = (e^{dt l} - 1)/l B as written (the official code's formula)."""
    dtA = np.asarray(dt)[:, None] * Lambda
    v = C * (np.exp(dtA) - 1.0) / Lambda * B
    return 2 * np.einsum("hn,hnl->hl", v, np.exp(dtA[..., None] * np.arange(int(L)))).real


def test_s4d_zoh_B_difference_is_a_named_evaluation():
    rep = verify("ssm.s4d_kernel", _s4d_difference, conventions={"zoh_B": "difference"},
                 dtype=["float64", "float32"], **FAST)
    assert rep.passed, rep.to_text()
    strict = verify("ssm.s4d_kernel", _s4d_difference, kinds=("edge",), dtype=["float32"])
    assert not strict.passed
    assert any("zoh_B='difference'" in d for d in strict.deviations()), strict.deviations()
