"""Adjoint identity of the structured SSMs' VJPs: ``<J v, w> = <v, J^T w>`` with ``<J v, w>`` from Richardson
differences of the float64 forwards (:func:`oracles.gradients.fd_jvp`, its own error bound) and ``J^T w`` from
refimpl's ``s5_ssm_vjp`` / ``mega_ema_vjp`` / ``dss_kernel_vjp`` / ``s4_kernel_vjp``; L = 0, 1, odd, longer.  The
bound: fd_jvp's error plus the backward's derived bound (:mod:`oracles.verify.grad_ssm_structured`) paired with
``|v|``."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from oracles.gradients import fd_jvp
from oracles.ssm_structured_grad_forward import ema_forward, s5_forward
from oracles.verify.grad_ssm_structured import ema_grad_bounds, ema_reference_vjp, s5_grad_bounds, s5_reference_vjp

LENGTHS = st.sampled_from([0, 1, 3, 7, 16])


def _pair(g, v, names):
    return sum(float(np.real(np.sum(np.conj(np.asarray(g[k])) * np.asarray(v[k])))) for k in names)


def _bound(bounds, v, names):
    return sum(float(np.sum(np.asarray(bounds[k].values) * np.abs(np.asarray(v[k])))) for k in names)


@settings(max_examples=6, deadline=None)
@given(L=LENGTHS, seed=st.integers(0, 2 ** 16), method=st.sampled_from(["zoh", "bilinear"]))
def test_s5_adjoint_identity(L, seed, method):
    from oracles.verify import ops_s5

    conv = dict(method=method, real_output="2re", bidirectional=False, use_h0=True, zoh_B="expm1")
    rng = np.random.default_rng(seed)
    inp = ops_s5.sample(rng, conv, L=L, b=1, h=2, n=2, h0=True)
    out = s5_forward(inp, conv)
    w = {"y": rng.standard_normal(out["y"].shape),
         "h_last": rng.standard_normal(out["h_last"].shape) + 1j * rng.standard_normal(out["h_last"].shape)}
    names = [k for k in ("Lambda", "B_tilde", "C_tilde", "D", "dt", "u", "h0") if inp.get(k) is not None]
    v = {k: rng.standard_normal(np.shape(inp[k])) + (1j * rng.standard_normal(np.shape(inp[k]))
                                                      if np.iscomplexobj(inp[k]) else 0) for k in names}
    val, err = fd_jvp(lambda a: s5_forward(a, conv), inp, v, w)
    g = s5_reference_vjp(inp, conv, w)
    bnd = s5_grad_bounds(inp, g, conv, np.float64, {}, cotangents=w)
    assert abs(val - _pair(g, v, names)) <= err + _bound(bnd, v, names), (val, _pair(g, v, names), err)


@settings(max_examples=6, deadline=None)
@given(L=LENGTHS, seed=st.integers(0, 2 ** 16))
def test_ema_adjoint_identity(L, seed):
    from oracles.verify import ops_ema

    conv = dict(use_h0=True, algorithm="direct")
    rng = np.random.default_rng(seed)
    inp = ops_ema.sample(rng, conv, L=L, b=2, d=2, n=2, h0=True)
    out = ema_forward(inp, conv)
    w = {k: rng.standard_normal(v.shape) for k, v in out.items()}
    names = ("x", "alpha", "delta", "beta", "eta", "h0")
    v = {k: rng.standard_normal(np.shape(inp[k])) for k in names}
    val, err = fd_jvp(lambda a: ema_forward(a, conv), inp, v, w)
    g = ema_reference_vjp(inp, conv, w)
    bnd = ema_grad_bounds(inp, g, conv, np.float64, {}, cotangents=w)
    assert abs(val - _pair(g, v, names)) <= err + _bound(bnd, v, names), (val, _pair(g, v, names), err)


@settings(max_examples=6, deadline=None)
@given(L=LENGTHS, seed=st.integers(0, 2 ** 16), variant=st.sampled_from(["softmax", "exp"]))
def test_dss_adjoint_identity(L, seed, variant):
    from oracles.ssm_structured_grad_forward import dss_forward
    from oracles.verify import ops_s4d
    from oracles.verify.grad_ssm_structured import dss_grad_bounds, dss_reference_vjp

    conv = {"variant": variant}
    rng = np.random.default_rng(seed)
    inp = ops_s4d.dss_sample(rng, conv, L=L, h=2, n=2)
    w = {"K": rng.standard_normal((2, L))}
    names = ("Lambda", "W", "dt")
    v = {k: rng.standard_normal(np.shape(inp[k])) + (1j * rng.standard_normal(np.shape(inp[k]))
                                                      if np.iscomplexobj(inp[k]) else 0) for k in names}
    val, err = fd_jvp(lambda a: dss_forward(a, conv), inp, v, w)
    g = dss_reference_vjp(inp, conv, w)
    bnd = dss_grad_bounds(inp, g, conv, np.float64, {}, cotangents=w)
    assert abs(val - _pair(g, v, names)) <= err + _bound(bnd, v, names), (val, _pair(g, v, names), err)


@settings(max_examples=5, deadline=None)
@given(L=LENGTHS, seed=st.integers(0, 2 ** 16), output=st.sampled_from(["2re", "re", "complex"]))
def test_s4_adjoint_identity(L, seed, output):
    from oracles.ssm_structured_grad_forward import s4_dense_forward
    from oracles.verify import ops_s4
    from oracles.verify.grad_ssm_structured import S4_WRT, s4_grad_bounds, s4_reference_vjp

    conv = {"method": "bilinear", "output": output}
    rng = np.random.default_rng(seed)
    inp = ops_s4.sample(rng, conv, L=L, h=1, n=3, r=1)
    K = s4_dense_forward(inp, conv)["K"]
    w = {"K": rng.standard_normal(K.shape) + (1j * rng.standard_normal(K.shape) if output == "complex" else 0)}
    v = {k: rng.standard_normal(np.shape(inp[k])) + (1j * rng.standard_normal(np.shape(inp[k]))
                                                      if np.iscomplexobj(inp[k]) else 0) for k in S4_WRT}
    val, err = fd_jvp(lambda a: s4_dense_forward(a, conv), inp, v, w)
    g = s4_reference_vjp(inp, conv, w)
    bnd = s4_grad_bounds(inp, g, conv, np.float64, {}, cotangents=w)
    assert abs(val - _pair(g, v, S4_WRT)) <= err + _bound(bnd, v, S4_WRT), (val, _pair(g, v, S4_WRT), err)
