"""Properties of the gradient ground truth (oracles.gradients): on random smooth functions with closed-form
gradients, fd_vjp's estimate lies within its own error bound, elementwise, and fd_jvp's within its bound of
<J v, w>; complex inputs follow dL/da + i dL/db."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp, fd_vjp


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 4), n=st.integers(1, 4), scale=st.sampled_from([0.1, 1.0, 3.0]))
def test_fd_vjp_within_its_bound(seed, m, n, scale):
    """y = tanh(A x) * exp(c) + x_0^3: every input's gradient against the closed form."""
    rng = np.random.default_rng(seed)
    A, x, c = scale * rng.standard_normal((m, n)), scale * rng.standard_normal(n), rng.standard_normal(m)
    w = rng.standard_normal(m)

    def f(d):
        return {"y": np.tanh(d["A"] @ d["x"]) * np.exp(d["c"]) + d["x"][0] ** 3}

    r = fd_vjp(f, {"A": A, "x": x, "c": c}, {"y": w}, ["A", "x", "c"])
    z = A @ x
    s = w * np.exp(c) * (1 - np.tanh(z) ** 2)
    exact = {"A": np.outer(s, x), "x": A.T @ s + np.eye(n)[0] * 3 * x[0] ** 2 * w.sum(),
             "c": w * np.tanh(z) * np.exp(c)}
    for k, g in exact.items():
        assert np.all(np.abs(r.grad[k] - g) <= r.error[k]), (k, np.abs(r.grad[k] - g).max(), r.error[k].max())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5))
def test_complex_inputs(seed, n):
    """y = z^2 conj(u) (not holomorphic in u): dL/dz = conj(2 z conj(u)) w, dL/du = conj(conj(w) z^2)... in our
    convention: grad_z = conj(dy/dz) w, grad_u = conj(w) z^2 ... checked against the definition d/da + i d/db."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    u = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    w = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    r = fd_vjp(lambda d: {"y": d["z"] ** 2 * np.conj(d["u"])}, {"z": z, "u": u}, {"y": w}, ["z", "u"])
    # L = Re(conj(w) z^2 conj(u)); holomorphic in z: grad_z = conj(2 z conj(u)) w; antiholomorphic in u:
    # L = Re(conj(w z^2 ... )) -> grad_u = conj(w) z^2 conjugated back: w conj(z^2) conj... = conj(conj(w) z^2)?
    grad_z = np.conj(2 * z * np.conj(u)) * w
    grad_u = np.conj(w) * z ** 2  # L = Re(conj(u) * (conj(w) z^2)) = Re(conj(u) q), whose gradient is q
    assert np.all(np.abs(r.grad["z"] - grad_z) <= r.error["z"])
    assert np.all(np.abs(r.grad["u"] - grad_u) <= r.error["u"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6))
def test_fd_jvp_within_its_bound(seed, n):
    rng = np.random.default_rng(seed)
    x, v, w = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    val, err = fd_jvp(lambda d: {"y": np.sin(d["x"]) * np.cumsum(d["x"])}, {"x": x}, {"x": v}, {"y": w})
    J = np.diag(np.cos(x) * np.cumsum(x)) + np.sin(x)[:, None] * np.tril(np.ones((n, n)))
    assert abs(val - w @ J @ v) <= err
