r"""The backward pass of the fast weight memory: the vector-Jacobian product, written literally (no autodiff).

The forward (:mod:`refimpl.attention.fast_weights.reference`, ``sigma`` = identity)::

    W_i = W_{i-1} + a_i b_i^T          (W_{-1} = initial_state, default 0; W (b h p n))
    y_i = W_i x_i                       (x_i = x_read_i)

Given the cotangents ``dy`` of ``y`` and ``dW_last`` of the final state ``W_{l-1}`` (``d_final_state``; zero when
not given), for the real loss ``L = sum_i dy_i . y_i + <dW_last, W_{l-1}>``, the adjoint equations are::

    dW_i  = dW_{i+1} + dy_i x_i^T      (dW_l = dW_last: the total cotangent of W_i, carried backwards)
    da_i  = dW_i b_i                    (W_i = W_{i-1} + a_i b_i^T)
    db_i  = dW_i^T a_i
    dx_i  = W_i^T dy_i                  (y_i = W_i x_i)
    dW_{-1} = dW_0                      (the gradient of initial_state)

**The adjoint of the forward scan is itself a scan, run in reverse** (``i = l-1, ..., 0``), carrying ``dW``: the
view ``recurrent`` (:func:`recurrent_vjp`).  The closed form of the forward, ``y_i = W_{-1} x_i + sum_{j <= i} a_j
(b_j . x_i)``, has the adjoint of a masked product, the view ``quadratic`` (:func:`quadratic_vjp`)::

    M_ij  = b_j . x_i   (j <= i),         dM_ij = dy_i . a_j   (j <= i)
    da_j  = sum_{i >= j} M_ij dy_i + dW_last b_j
    db_j  = sum_{i >= j} dM_ij x_i + dW_last^T a_j
    dx_i  = sum_{j <= i} dM_ij b_j + W_{-1}^T dy_i
    dW_{-1} = sum_i dy_i x_i^T + dW_last

Conventions: as the forward (fast weights ``(b h p n)``, read after the write); real inputs only; ``sigma`` must be
``None`` (the identity: the gradient through a callable ``sigma`` is not defined here, a ``ValueError``).
The computation runs in ``result_dtype`` of the inputs and the cotangents (float32 only when every one of them is
float32; no silent downcast), and every gradient is returned in it, with its input's shape.  ``L = 0``: empty gradients (and ``dW_{-1} = dW_last``).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, result_dtype
from refimpl.attention.fast_weights.reference import validate_fast_weights

__all__ = ["recurrent_vjp", "quadratic_vjp", "validate_fast_weights_vjp"]


def _check_cotangent(d, name: str, shape, letters: str, src: str):
    """A cotangent checked like an input: real floats of the output's shape (``dy: expected shape (b l h p) = ...``)."""
    d = as_float_array(d, name, allow_complex=False)
    if d.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape ({letters}) = {tuple(shape)} ({src}), got {d.shape}")
    return d


def validate_fast_weights_vjp(a, b_vec, x_read, *, dy, d_final_state=None, sigma=None, initial_state=None):
    """Validated ``(a, b_vec, x_read, W0, dy, dW_last)`` in the working dtype (``dW_last`` zeros if None)."""
    if sigma is not None:
        raise ValueError(f"sigma: expected None (the identity; the VJP is defined for sigma = identity only), "
                         f"got {getattr(sigma, '__name__', type(sigma).__name__)!s}")
    a, b_vec, x_read, W0, _ = validate_fast_weights(a, b_vec, x_read, initial_state=initial_state)
    b, l, h, p = a.shape
    n = b_vec.shape[3]
    dy = _check_cotangent(dy, "dy", (b, l, h, p), "b l h p", "the shape of y: b, l, h, p from a")
    if d_final_state is not None:
        d_final_state = _check_cotangent(d_final_state, "d_final_state", (b, h, p, n), "b h p n",
                                         "the shape of the final state: b, h, p from a, n from b_vec")
    dt = result_dtype(a, b_vec, x_read, W0 if initial_state is not None else None, dy, d_final_state)
    c = lambda z: z.astype(dt, copy=False)  # noqa: E731
    dW_last = np.zeros((b, h, p, n), dtype=dt) if d_final_state is None else c(d_final_state)
    return c(a), c(b_vec), c(x_read), c(W0), c(dy), dW_last


def _grads(da, db, dx, dW0, given_state: bool) -> Dict[str, np.ndarray]:
    out = {"a": da, "b_vec": db, "x_read": dx}
    if given_state:
        out["initial_state"] = dW0
    return out


def recurrent_vjp(a, b_vec, x_read, *, dy, d_final_state=None, sigma=None, initial_state=None) -> Dict[str, np.ndarray]:
    r"""The VJP by the reverse scan (module docstring): the forward states ``W_i`` recomputed and kept, then
    ``dW`` carried from ``i = l-1`` down to ``0``.  **The adjoint of the scan is a reverse scan.**

    ``a (b l h p)``, ``b_vec (b l h n)``, ``x_read (b l h n)``, ``initial_state (b h p n)`` or None, ``dy (b l h p)``,
    ``d_final_state (b h p n)`` or None -> ``{"a": da, "b_vec": db, "x_read": dx[, "initial_state": dW0]}``.
    """
    a, b_vec, x_read, W0, dy, dW_last = validate_fast_weights_vjp(
        a, b_vec, x_read, dy=dy, d_final_state=d_final_state, sigma=sigma, initial_state=initial_state)
    b, l, h, p = a.shape
    n = b_vec.shape[3]
    # forward recomputation: W_i for every i (W_states[i] = W_i)
    W_states = np.empty((l, b, h, p, n), dtype=W0.dtype)
    W_i = W0
    for i in range(l):
        # W_i = W_{i-1} + a_i b_i^T
        W_i = W_i + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
        W_states[i] = W_i
    da = np.zeros_like(a)
    db = np.zeros_like(b_vec)
    dx = np.zeros_like(x_read)
    # the reverse scan: dW holds dW_{i+1} on entry to step i (dW_l = dW_last)
    dW = dW_last.copy()
    for i in range(l - 1, -1, -1):
        # dW_i = dW_{i+1} + dy_i x_i^T
        dW = dW + dy[:, i, :, :, None] * x_read[:, i, :, None, :]
        # dx_i = W_i^T dy_i
        dx[:, i] = np.einsum("bhpn,bhp->bhn", W_states[i], dy[:, i])
        # da_i = dW_i b_i
        da[:, i] = np.einsum("bhpn,bhn->bhp", dW, b_vec[:, i])
        # db_i = dW_i^T a_i
        db[:, i] = np.einsum("bhpn,bhp->bhn", dW, a[:, i])
    # dW_{-1} = dW_0
    return _grads(da, db, dx, dW, initial_state is not None)


def quadratic_vjp(a, b_vec, x_read, *, dy, d_final_state=None, sigma=None, initial_state=None) -> Dict[str, np.ndarray]:
    r"""The VJP of the closed form ``y_i = W_{-1} x_i + sum_{j <= i} a_j (b_j . x_i)`` (module docstring): the causal
    ``(b h l l)`` matrices ``M_ij = b_j . x_i`` and ``dM_ij = dy_i . a_j`` materialized; no scan.

    Arguments and result as :func:`recurrent_vjp`.
    """
    a, b_vec, x_read, W0, dy, dW_last = validate_fast_weights_vjp(
        a, b_vec, x_read, dy=dy, d_final_state=d_final_state, sigma=sigma, initial_state=initial_state)
    l = a.shape[1]
    causal = np.tril(np.ones((l, l), dtype=bool))  # [i, j]: j <= i
    # M_ij = b_j . x_i  (j <= i)
    M = np.where(causal, np.einsum("bjhn,bihn->bhij", b_vec, x_read), 0.0).astype(a.dtype, copy=False)
    # dM_ij = dy_i . a_j  (j <= i)
    dM = np.where(causal, np.einsum("bihp,bjhp->bhij", dy, a), 0.0).astype(a.dtype, copy=False)
    # da_j = sum_{i >= j} M_ij dy_i + dW_last b_j
    da = np.einsum("bhij,bihp->bjhp", M, dy) + np.einsum("bhpn,bjhn->bjhp", dW_last, b_vec)
    # db_j = sum_{i >= j} dM_ij x_i + dW_last^T a_j
    db = np.einsum("bhij,bihn->bjhn", dM, x_read) + np.einsum("bhpn,bjhp->bjhn", dW_last, a)
    # dx_i = sum_{j <= i} dM_ij b_j + W_{-1}^T dy_i
    dx = np.einsum("bhij,bjhn->bihn", dM, b_vec) + np.einsum("bhpn,bihp->bihn", W0, dy)
    # dW_{-1} = sum_i dy_i x_i^T + dW_last
    dW0 = np.einsum("bihp,bihn->bhpn", dy, x_read) + dW_last
    return _grads(da, db, dx, dW0, initial_state is not None)
