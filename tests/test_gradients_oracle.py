"""The gradient ground truth (oracles.gradients) on closed forms: the estimate is right and its error bound holds."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from oracles.gradients import FDGrad, fd_jvp, fd_vjp, mp_vjp, real_loss

U = np.finfo(np.float64).eps / 2


def _check(r: FDGrad, exact, name, rel_cap=1e-7):
    err = np.abs(r.grad[name] - exact[name])
    assert np.all(err <= r.error[name]), (err.max(), r.error[name].min())
    # tight-ish: the bound is a small multiple of eps/h-sized rounding, never a loose fudge
    scale = np.max(np.abs(exact[name])) if np.size(exact[name]) else 1.0
    assert np.all(r.error[name] <= rel_cap * max(scale, 1.0))


def test_polynomial_and_exp():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(7)
    w = rng.standard_normal(7)
    f = lambda d: {"p": d["x"] ** 3 - 2 * d["x"] ** 2 + 0.5, "e": np.exp(d["x"])}  # noqa: E731
    r = fd_vjp(f, {"x": x}, {"p": w, "e": 2 * w}, ["x"])
    _check(r, {"x": w * (3 * x ** 2 - 4 * x) + 2 * w * np.exp(x)}, "x")
    np.testing.assert_allclose(r.magnitude["x"], np.abs(w) * np.abs(3 * x ** 2 - 4 * x) + 2 * np.abs(w) * np.exp(x),
                               rtol=1e-8)
    assert r.evaluations == 1 + 7 * x.size


def test_matrix_product():
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    W = rng.standard_normal((3, 2))
    r = fd_vjp(lambda d: {"C": d["A"] @ d["B"]}, {"A": A, "B": B}, {"C": W}, ["A", "B"])
    _check(r, {"A": W @ B.T}, "A")
    _check(r, {"B": A.T @ W}, "B")
    np.testing.assert_allclose(r.magnitude["A"], np.abs(W) @ np.abs(B).T, rtol=1e-9)


def test_complex_convention():
    """|z|^2 -> 2 z (dL/da + i dL/db), and a holomorphic y = z^2 paired as Re conj(w) y -> conj(2 z) w."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    r = fd_vjp(lambda d: {"L": np.array(np.sum(np.abs(d["z"]) ** 2))}, {"z": z}, {"L": np.array(1.0)}, ["z"])
    assert r.grad["z"].dtype == np.complex128
    _check(r, {"z": 2 * z}, "z")
    w = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    r = fd_vjp(lambda d: {"y": d["z"] ** 2}, {"z": z}, {"y": w}, ["z"])
    _check(r, {"z": np.conj(2 * z) * w}, "z")


def test_zero_size_and_pass_through():
    r = fd_vjp(lambda d: {"y": 2 * d["x"]}, {"x": np.zeros((0, 3))}, {"y": np.zeros((0, 3))}, ["x"])
    assert r.grad["x"].shape == (0, 3) and r.error["x"].shape == (0, 3)
    # a pass-through: exact differences, yet the table's own rounding is in the bound
    w = np.array([0.5, 0.3, -1.25])
    r = fd_vjp(lambda d: {"y": d["x"] * 1.0}, {"x": np.zeros(3)}, {"y": w}, ["x"])
    assert np.all(np.abs(r.grad["x"] - w) <= r.error["x"]) and np.all(r.error["x"] > 0)


def test_errors_name_the_argument():
    f = lambda d: {"y": d["x"] * 2}  # noqa: E731
    with pytest.raises(ValueError, match="wrt"):
        fd_vjp(f, {"x": np.ones(2)}, {"y": np.ones(2)}, ["q"])
    with pytest.raises(ValueError, match=r"cotangents\['y'\]"):
        fd_vjp(f, {"x": np.ones(2)}, {"y": np.ones(3)}, ["x"])
    with pytest.raises(ValueError, match="levels"):
        fd_vjp(f, {"x": np.ones(2)}, {"y": np.ones(2)}, ["x"], levels=4)


def test_fd_jvp_adjoint_identity():
    rng = np.random.default_rng(4)
    A, x = rng.standard_normal((3, 4)), rng.standard_normal(4)
    w, v = rng.standard_normal(3), rng.standard_normal(4)
    f = lambda d: {"y": np.sin(d["A"] @ d["x"])}  # noqa: E731
    val, err = fd_jvp(f, {"A": A, "x": x}, {"x": v}, {"y": w})
    exact = float((A.T @ (w * np.cos(A @ x))) @ v)
    assert abs(val - exact) <= err <= 1e-7


def test_mp_vjp_matches_closed_form_to_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(3)
    w = rng.standard_normal(3)

    def f_mp(d):
        return {"y": np.array([mpmath.exp(v) * mpmath.sin(v) for v in d["x"]], dtype=object)}

    g = mp_vjp(f_mp, {"x": x}, {"y": w}, ["x"], dps=40)
    with mpmath.workdps(50):  # the closed form in mpmath, rounded once
        exact = np.array([float(mpmath.mpf(wi) * mpmath.exp(xi) * (mpmath.sin(xi) + mpmath.cos(xi)))
                          for wi, xi in zip(w, x)])
    np.testing.assert_allclose(g["x"], exact, rtol=2 * U, atol=0)
    z = x + 1j * rng.standard_normal(3)
    gz = mp_vjp(lambda d: {"L": np.array([sum(abs(v) ** 2 for v in d["z"])], dtype=object)}, {"z": z},
                {"L": np.ones(1)}, ["z"])
    np.testing.assert_allclose(gz["z"], 2 * z, rtol=4 * U, atol=0)


def test_real_loss_is_correctly_summed():
    y = {"a": np.array([1e16, 1.0, -1e16]), "c": np.array([1 + 2j])}
    w = {"a": np.ones(3), "c": np.array([3 - 1j])}
    assert real_loss(y, w) == math.fsum([1e16, 1.0, -1e16]) + (3 * 1 + (-1) * 2)
