r"""The backward pass of the feature maps: the vector-Jacobian product, written literally (no autodiff).

Every map acts on the last axis, ``x (... n) -> phi (... n_phi)``; given the cotangent ``dphi`` of ``phi`` (a real
loss ``L = sum dphi * phi``), each function returns ``dx (... n)`` (and ``dW (f n)`` for the random features,
summed over every leading position).  No scan: the maps are pointwise in the positions.

* :func:`identity_vjp` -- ``dx = dphi``.
* :func:`elu_plus_one_vjp` -- ``phi'(a) = 1 (a >= 0), exp(a) (a < 0)``: ``dx = dphi * (1 if x >= 0 else phi)``.
* :func:`dpfp_vjp` -- with ``r = [relu(x), relu(-x)]`` and ``phi_{(j-1) 2n + i} = r_i r_{(i-j) mod 2n}``::

      dr_i = sum_j dphi_{j, i} r_{(i-j) mod 2n} + sum_j dphi_{j, (i+j) mod 2n} r_{(i+j) mod 2n}
      dx = dr_{:n} 1{x > 0} - dr_{n:} 1{x < 0}          (relu'(0) = 0, PyTorch's convention)

* :func:`trig_features_vjp` -- ``phi = h [sin(Wx), cos(Wx)]``, ``h = exp(|x|^2/2)/sqrt(f)``::

      g = dphi_sin * phi_cos - dphi_cos * phi_sin            (f)
      dx = x (dphi . phi) + W^T g,      dW = sum_positions g x^T

* :func:`positive_features_vjp` -- ``phi_i = exp(z_i - c)/sqrt(f)``, ``z_i = w_i . x - |x|^2/2``; with
  ``dz_i = dphi_i phi_i`` (the adjoint of the exponential)::

      dx = W^T dz - x sum_i dz_i,       dW = sum_positions dz x^T

* :func:`hyperbolic_features_vjp` -- ``z = [Wx, -Wx] - |x|^2/2``, ``phi = exp(z - c)/sqrt(2f)``; with
  ``dz = dphi * phi`` split as ``[dz+, dz-]``: ``dx = W^T (dz+ - dz-) - x sum dz``, ``dW = sum (dz+ - dz-) x^T``.

The stabilizer's offset ``c`` (``offset_grad=``)
-------------------------------------------------
``c`` is a max over exponents (``"row_max"``: of each row; ``"global_max"``: of everything passed in).

* ``offset_grad="through"`` (default): the derivative of the function the forward computes.  ``c`` depends on
  ``x`` (and ``W``) through the exponent it picks: ``dc = -sum dz`` over the features it offsets (one row, or
  every row for the global max), added to ``dz`` at the argmax (the first maximal index, ``np.argmax``; at a tie the
  max is not differentiable and any one subgradient is a valid choice).  This is what central differences of the
  forward see (away from ties), and what the verify op's oracle checks.
* ``offset_grad="stop"``: ``c`` under stop-gradient -- a constant.  This is FAVOR+'s and performer-pytorch's
  convention (``softmax_kernel`` subtracts ``torch.amax(...).detach()``): it is the exact gradient of the
  *attention output* whenever the offset cancels (a per-query offset, or one common key offset, in normalized
  attention with ``eps = 0``), but not the derivative of the features alone.

Conventions: the arguments, names and keywords are the forward's (``docs/glossary.md``); ``dphi`` is keyword-only and
required, with ``phi``'s shape.  All real.  The computation runs in ``result_dtype`` of ``x``, ``W`` and ``dphi``
(float32 only when all are float32); every gradient is returned in that dtype (nothing is downcast).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_choice, result_dtype
from refimpl.attention.features.reference import (STABILIZERS, check_dpfp, check_W, check_x, hyperbolic_features,
                                                  positive_features, trig_features)

__all__ = ["OFFSET_GRADS", "identity_vjp", "elu_plus_one_vjp", "dpfp_vjp", "trig_features_vjp",
           "positive_features_vjp", "hyperbolic_features_vjp"]

#: how the stabilizer's offset is differentiated: "through" the max (the forward's derivative) or "stop" (a constant)
OFFSET_GRADS = ("through", "stop")


def _cotangent(dphi, shape, src="x's leading axes and last axis n"):
    dphi = as_float_array(dphi, "dphi", allow_complex=False)
    if dphi.shape != tuple(shape):
        raise ValueError(f"dphi: expected shape (... n_phi) = {tuple(shape)}, the shape of phi ({src}), "
                         f"got {dphi.shape}")
    return dphi


def _dtype_of(x, working):
    """Every gradient is returned in the working dtype (nothing is downcast)."""
    return working


def identity_vjp(x, *, dphi) -> Dict[str, np.ndarray]:
    """``phi = x``: ``dx = dphi``.  ``x (... n)``, ``dphi (... n)``."""
    xv = check_x(x)
    dphi = _cotangent(dphi, xv.shape)
    dt = result_dtype(xv, dphi)
    # dx = dphi
    return {"x": dphi.astype(dt).astype(_dtype_of(x, dt), copy=False)}


def elu_plus_one_vjp(x, *, dphi) -> Dict[str, np.ndarray]:
    r"""``phi(a) = a + 1 (a >= 0), exp(a) (a < 0)``: ``dx = dphi * phi'(x)``, ``phi'(a) = 1 (a >= 0), exp(a) (a < 0)``
    (continuous at 0, where both pieces have slope 1)."""
    xv = check_x(x)
    dphi = _cotangent(dphi, xv.shape)
    dt = result_dtype(xv, dphi)
    xw, dphi = xv.astype(dt, copy=False), dphi.astype(dt, copy=False)
    # phi'(a) = 1 (a >= 0), exp(a) (a < 0)
    slope = np.where(xw >= 0, dt.type(1.0), np.exp(np.minimum(xw, 0)))
    # dx = dphi * phi'(x)
    return {"x": (dphi * slope).astype(_dtype_of(x, dt), copy=False)}


def dpfp_vjp(x, nu: int = 1, *, dphi) -> Dict[str, np.ndarray]:
    r"""DPFP-``nu``: ``(... n) -> (... 2n nu)``; ``dx (... n)`` by the module docstring's equations."""
    xv = check_x(x)
    n = xv.shape[-1]
    if isinstance(nu, (int, np.integer)) and not isinstance(nu, (bool, np.bool_)) and n >= 1 and nu > 2 * n - 1:
        raise ValueError(f"nu: expected 1 <= nu <= 2n - 1 = {2 * n - 1} for x's last axis n = {n}, got {nu}")
    xv, nu = check_dpfp(xv, nu)
    dphi = _cotangent(dphi, xv.shape[:-1] + (2 * n * nu,), "x's leading axes, n_phi = 2 n nu from x's last axis n")
    dt = result_dtype(xv, dphi)
    xw, dphi = xv.astype(dt, copy=False), dphi.astype(dt, copy=False)
    # r = [relu(x), relu(-x)]
    r = np.concatenate([np.maximum(xw, 0), np.maximum(-xw, 0)], axis=-1)
    dr = np.zeros_like(r)
    for j in range(1, nu + 1):
        d_j = dphi[..., (j - 1) * 2 * n: j * 2 * n]
        # phi_{j,i} = r_i r_{(i-j) mod 2n}:  dr_i += dphi_{j,i} r_{(i-j) mod 2n};  dr_{(i-j) mod 2n} += dphi_{j,i} r_i
        dr = dr + d_j * np.roll(r, j, axis=-1)
        dr = dr + np.roll(d_j * r, -j, axis=-1)
    # dx = dr_{:n} 1{x > 0} - dr_{n:} 1{x < 0}
    dx = dr[..., :n] * (xw > 0) - dr[..., n:] * (xw < 0)
    return {"x": dx.astype(_dtype_of(x, dt), copy=False)}


def _random_inputs(x, W, dphi_width, dphi):
    xv, Wv = check_W(x, W)
    dphi = _cotangent(dphi, xv.shape[:-1] + (dphi_width(Wv.shape[0]),), "x's leading axes, n_phi from W's rows f")
    dt = result_dtype(xv, Wv, dphi)
    return xv.astype(dt, copy=False), Wv.astype(dt, copy=False), dphi.astype(dt, copy=False), dt


def _finish(x, W, dx, dW, dt):
    return {"x": dx.astype(_dtype_of(x, dt), copy=False), "W": dW.astype(_dtype_of(W, dt), copy=False)}


def _dW(g, x):
    """``dW = sum over every leading position of g x^T``: ``g (... f)``, ``x (... n)`` -> ``(f n)``."""
    P = int(np.prod(x.shape[:-1]))
    return np.einsum("pf,pn->fn", g.reshape(P, g.shape[-1]), x.reshape(P, x.shape[-1]))


def trig_features_vjp(x, W, *, dphi) -> Dict[str, np.ndarray]:
    r"""``phi = exp(|x|^2/2)/sqrt(f) [sin(W x), cos(W x)]``: ``dx = x (dphi . phi) + W^T g``, ``dW = sum g x^T`` with
    ``g = dphi_sin phi_cos - dphi_cos phi_sin``.  ``x (... n)``, ``W (f n)``, ``dphi (... 2f)``."""
    xw, Ww, dphi, dt = _random_inputs(x, W, lambda f: 2 * f, dphi)
    f = Ww.shape[0]
    phi = trig_features(xw, Ww)
    ps, pc = phi[..., :f], phi[..., f:]
    ds, dc = dphi[..., :f], dphi[..., f:]
    # g = dphi_sin * phi_cos - dphi_cos * phi_sin   (the adjoint of (sin, cos)(W x), times h)
    g = ds * pc - dc * ps
    # dx = x (dphi . phi) + W^T g   (the first term: the adjoint of h = exp(|x|^2/2)/sqrt(f))
    dx = xw * np.sum(dphi * phi, axis=-1, keepdims=True) + g @ Ww
    return _finish(x, W, dx, _dW(g, xw), dt)


def _offset_adjoint(dz, z, stabilizer, offset_grad):
    r"""``dz`` with the stabilizer's offset ``c = max z`` differentiated (``offset_grad="through"``):
    ``phi = exp(z - c) ...`` gives ``dc = -sum dz`` over the offset features, added to ``dz`` at the argmax."""
    check_choice(stabilizer, "stabilizer", STABILIZERS)
    check_choice(offset_grad, "offset_grad", OFFSET_GRADS)
    if stabilizer == "none" or offset_grad == "stop" or z.size == 0:
        return dz
    dz = dz.copy()
    if stabilizer == "row_max":
        # c = max_i z_i per row:  dc = -sum_i dz_i ;  dz_{argmax} += dc
        dc = -np.sum(dz, axis=-1, keepdims=True)
        idx = np.argmax(z, axis=-1)[..., None]
        np.put_along_axis(dz, idx, np.take_along_axis(dz, idx, axis=-1) + dc, axis=-1)
        return dz
    # global_max: c = max over every entry:  dc = -sum of all dz ;  dz at the global argmax += dc
    dc = -np.sum(dz)
    flat = dz.reshape(-1)
    flat[int(np.argmax(z))] += dc
    return flat.reshape(dz.shape)


def positive_features_vjp(x, W, *, dphi, stabilizer: str = "none", offset_grad: str = "through"):
    r"""``phi = exp(W x - |x|^2/2 - c)/sqrt(f)``: ``dz = dphi * phi`` (then the offset's adjoint), ``dx = W^T dz -
    x sum dz``, ``dW = sum dz x^T``.  ``x (... n)``, ``W (f n)``, ``dphi (... f)``."""
    xw, Ww, dphi, dt = _random_inputs(x, W, lambda f: f, dphi)
    phi = positive_features(xw, Ww, stabilizer=stabilizer)
    # z_i = w_i . x - |x|^2/2 (the exponents; the offset's argmax is taken over them)
    z = xw @ Ww.T - 0.5 * np.sum(xw * xw, axis=-1, keepdims=True)
    # dz_i = dphi_i phi_i   (the adjoint of exp(z_i - c)/sqrt(f))
    dz = _offset_adjoint(dphi * phi, z, stabilizer, offset_grad)
    # dx = W^T dz - x sum_i dz_i ;  dW = sum_positions dz x^T
    dx = dz @ Ww - xw * np.sum(dz, axis=-1, keepdims=True)
    return _finish(x, W, dx, _dW(dz, xw), dt)


def hyperbolic_features_vjp(x, W, *, dphi, stabilizer: str = "none", offset_grad: str = "through"):
    r"""``phi = exp([Wx, -Wx] - |x|^2/2 - c)/sqrt(2f)``: ``dz = dphi * phi`` (then the offset's adjoint),
    ``dx = W^T (dz+ - dz-) - x sum dz``, ``dW = sum (dz+ - dz-) x^T``.  ``dphi (... 2f)``."""
    xw, Ww, dphi, dt = _random_inputs(x, W, lambda f: 2 * f, dphi)
    f = Ww.shape[0]
    phi = hyperbolic_features(xw, Ww, stabilizer=stabilizer)
    wx = xw @ Ww.T
    z = np.concatenate([wx, -wx], axis=-1) - 0.5 * np.sum(xw * xw, axis=-1, keepdims=True)
    # dz = dphi * phi   (the adjoint of exp(z - c)/sqrt(2f))
    dz = _offset_adjoint(dphi * phi, z, stabilizer, offset_grad)
    # g = dz+ - dz-   (the adjoint of [Wx, -Wx])
    g = dz[..., :f] - dz[..., f:]
    # dx = W^T g - x sum dz ;  dW = sum_positions g x^T
    dx = g @ Ww - xw * np.sum(dz, axis=-1, keepdims=True)
    return _finish(x, W, dx, _dW(g, xw), dt)

