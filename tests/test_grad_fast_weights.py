"""The fast weight memory's backward (refimpl.attention.fast_weights.backward) against the gradient ground truth:
finite differences of the float64 closed sum (elementwise, within the differences' error + the derived rounding
bound), mpmath differences of the mpmath closed sum, the adjoint identity, and the views against each other."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.fast_weights_grad_forward import (fast_weights_forward, fast_weights_forward_mp,
                                               fast_weights_vjp_magnitude, forward_error)
from oracles.gradients import fd_jvp, fd_vjp, mp_vjp
from oracles.tolerance import Bound, assert_within, componentwise_bound
from refimpl.attention.fast_weights import VJP_IMPLEMENTATIONS, fast_weight_memory_vjp

PAIRS = VJP_IMPLEMENTATIONS.pairs()


def _case(seed, b, l, h, n, p, state=True, final=True):
    rng = np.random.default_rng(seed)
    inp = {"a": rng.standard_normal((b, l, h, p)), "b_vec": rng.standard_normal((b, l, h, n)),
           "x_read": rng.standard_normal((b, l, h, n))}
    if state:
        inp["W0"] = rng.standard_normal((b, h, p, n))
    w = {"y": rng.standard_normal((b, l, h, p))}
    if final:
        w["W_last"] = rng.standard_normal((b, h, p, n))
    return inp, w


def _fwd(d):
    return fast_weights_forward(d["a"], d["b_vec"], d["x_read"], d.get("W0"))


def _vjp(inp, w, view, backend, dtype=np.float64):
    c = lambda z: None if z is None else np.asarray(z).astype(dtype)  # noqa: E731
    g = fast_weight_memory_vjp(c(inp["a"]), c(inp["b_vec"]), c(inp["x_read"]), dy=c(w["y"]),
                               d_final_state=c(w.get("W_last")), initial_state=c(inp.get("W0")), view=view,
                               backend=backend)
    if "initial_state" in g:
        g["W0"] = g.pop("initial_state")
    return g


def _bounds(inp, w, dtype):
    l, n, p = inp["a"].shape[1], inp["b_vec"].shape[3], inp["a"].shape[3]
    M = fast_weights_vjp_magnitude(inp["a"], inp["b_vec"], inp["x_read"], inp.get("W0"), w["y"], w.get("W_last"))
    return {k: componentwise_bound(M[k], l + max(n, p) + 2, dtype, oracle_dtype=None, what="fast weights VJP")
            for k in M}


@pytest.mark.parametrize("view,backend", PAIRS)
@pytest.mark.parametrize("l,state,final", [(0, True, True), (1, True, False), (5, False, True), (8, True, True),
                                           (9, True, True)])
def test_against_finite_differences(view, backend, l, state, final):
    inp, w = _case(l, 1, l, 2, 3, 2, state, final)
    fe = lambda y: forward_error(inp["a"], inp["b_vec"], inp["x_read"], inp.get("W0"))  # noqa: E731
    fd = fd_vjp(_fwd, inp, w, list(inp), forward_error=fe)
    g = _vjp(inp, w, view, backend)
    bounds = _bounds(inp, w, np.float64)
    assert set(g) == set(inp)
    for k in inp:
        assert g[k].shape == inp[k].shape and g[k].dtype == np.float64
        assert_within(g[k], fd.grad[k], Bound(fd.error[k], "fd") + bounds[k], context=f"{view} grad {k} L={l}")


def test_float32_stays_float32_and_meets_its_bound():
    inp, w = _case(11, 2, 6, 1, 2, 3)
    fd = fd_vjp(_fwd, inp, w, list(inp))
    for view, backend in PAIRS:
        up = {k: v.astype(np.float32).astype(np.float64) for k, v in inp.items()}
        wu = {k: v.astype(np.float32).astype(np.float64) for k, v in w.items()}
        fd = fd_vjp(_fwd, up, wu, list(up))
        g = _vjp(up, wu, view, backend, np.float32)
        b = _bounds(up, wu, np.float32)
        for k in up:
            assert g[k].dtype == np.float32
            assert_within(g[k], fd.grad[k], Bound(fd.error[k], "fd") + b[k], context=f"{view} float32 {k}")


def test_against_mpmath_differences():
    inp, w = _case(3, 1, 3, 1, 2, 2)

    def f_mp(d):
        return fast_weights_forward_mp(d["a"], d["b_vec"], d["x_read"], d["W0"])

    g_mp = mp_vjp(f_mp, inp, w, list(inp), dps=30)
    g = _vjp(inp, w, "recurrent", "numpy")
    b = _bounds(inp, w, np.float64)
    for k in inp:
        assert_within(g[k], g_mp[k], b[k], context=f"mpmath grad {k}")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 2, 5, 8, 9]), n=st.integers(1, 3),
       p=st.integers(1, 3), state=st.booleans())
def test_adjoint_identity(seed, l, n, p, state):
    """<J v, w> by differences along a random direction == <v, J^T w> from our VJP."""
    inp, w = _case(seed, 1, l, 2, n, p, state)
    rng = np.random.default_rng(seed + 1)
    v = {k: rng.standard_normal(x.shape) for k, x in inp.items()}
    jv, err = fd_jvp(_fwd, inp, v, w)
    for view, backend in PAIRS:
        g = _vjp(inp, w, view, backend)
        vjp = sum(float(np.sum(v[k] * g[k])) for k in inp)
        mag = sum(float(np.sum(np.abs(v[k]) * _bounds(inp, w, np.float64)[k].values)) for k in inp)
        assert abs(jv - vjp) <= err + mag + 1e-300, (view, jv, vjp, err, mag)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 3, 7, 8, 9, 40]), state=st.booleans(),
       final=st.booleans())
def test_views_agree(seed, l, state, final):
    inp, w = _case(seed, 2, l, 2, 3, 2, state, final)
    ref = _vjp(inp, w, "recurrent", "numpy")
    b = _bounds(inp, w, np.float64)
    for view, backend in PAIRS:
        g = _vjp(inp, w, view, backend)
        for k in inp:  # both are float64 backwards: each within its bound of the exact gradient
            assert_within(g[k], ref[k], b[k].scaled(2.0, "two float64 backwards"), context=f"{view} vs recurrent {k}")


def test_sigma_must_be_identity():
    inp, w = _case(0, 1, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="sigma"):
        fast_weight_memory_vjp(inp["a"], inp["b_vec"], inp["x_read"], dy=w["y"], sigma=np.tanh)
    with pytest.raises(ValueError, match=r"dy: expected shape \(b l h p\)"):
        fast_weight_memory_vjp(inp["a"], inp["b_vec"], inp["x_read"], dy=w["y"][:, :1])
