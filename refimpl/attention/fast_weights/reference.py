r"""Fast weight programmers (Schmidhuber 1991/92; the text's formulation).

``a_i = W_a x_i``,  ``b_i = W_b x_i``,  ``W_i = sigma(W_{i-1} + a_i b_i^T)``,  ``y_i = W_i x_i``.

With ``sigma = identity``, ``a_i = v_i``, ``b_i = phi(k_i)`` and the readout vector ``phi(q_i)``
instead of ``x_i``, this is exactly unnormalized causal linear attention
(``S_t = S_{t-1} + v_t phi(k_t)^T``, ``o_t = S_t phi(q_t)``; state in the VxK layout).

Shapes: ``a (b l h p)``, ``b (b l h r)``, ``x_read (b l h r)``; fast weights ``W_i (b h p r)``;
output ``(b l h p)``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from refimpl._validate import as_float_array, check_shape, result_dtype

__all__ = ["fast_weights", "fast_weight_programmer"]


def fast_weights(a, b_vec, x_read, *, sigma: Optional[Callable[[np.ndarray], np.ndarray]] = None, W0=None,
                 return_state: bool = False):
    r"""``W_i = sigma(W_{i-1} + a_i b_i^T)``, ``y_i = W_i x_read_i``.  ``sigma=None`` is the identity.

    ``sigma`` is applied elementwise-or-not to the whole ``(b h p r)`` fast-weight array and must
    return an array of the same shape.
    """
    a = as_float_array(a, "a", ndim=4, allow_complex=False)
    B, l, h, p = a.shape
    b_vec = as_float_array(b_vec, "b", ndim=4, allow_complex=False)
    check_shape(b_vec, "b", (B, l, h, None), "(b, l, h, r) with b, l, h from a")
    r = b_vec.shape[3]
    x_read = as_float_array(x_read, "x_read", ndim=4, allow_complex=False)
    check_shape(x_read, "x_read", (B, l, h, r), "(b, l, h, r) like b")
    if sigma is not None and not callable(sigma):
        raise TypeError(f"sigma: expected a callable or None, got {type(sigma).__name__}")
    if W0 is not None:
        W0 = as_float_array(W0, "W0", ndim=4, allow_complex=False)
        check_shape(W0, "W0", (B, h, p, r), "(b, h, p, r)")
    dt = result_dtype(a, b_vec, x_read, W0)
    W_i = np.zeros((B, h, p, r), dtype=dt) if W0 is None else W0.astype(dt)
    y = np.zeros((B, l, h, p), dtype=dt)
    for i in range(l):
        # W_i = sigma(W_{i-1} + a_i b_i^T)
        W_i = W_i + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
        if sigma is not None:
            W_new = np.asarray(sigma(W_i))
            if W_new.shape != W_i.shape:
                raise ValueError(f"sigma: expected it to return shape {W_i.shape}, got {W_new.shape}")
            W_i = W_new.astype(dt, copy=False)
        # y_i = W_i x_i
        y[:, i] = np.einsum("bhpr,bhr->bhp", W_i, x_read[:, i])
    return (y, W_i) if return_state else y


def fast_weight_programmer(x, W_a, W_b, *, sigma=None, W0=None, return_state: bool = False):
    r"""The full FWP with slow weights: ``a_i = W_a x_i``, ``b_i = W_b x_i``, read with ``x_i`` itself.

    ``x (b l h r)``, ``W_a (h p r)``, ``W_b (h r r)``; returns ``y (b l h p)``.
    """
    x = as_float_array(x, "x", ndim=4, allow_complex=False)
    B, l, h, r = x.shape
    W_a = as_float_array(W_a, "W_a", ndim=3, allow_complex=False)
    check_shape(W_a, "W_a", (h, None, r), "(h, p, r)")
    W_b = as_float_array(W_b, "W_b", ndim=3, allow_complex=False)
    check_shape(W_b, "W_b", (h, r, r), "(h, r, r)")
    # a_i = W_a x_i ;  b_i = W_b x_i
    a = np.einsum("hpr,blhr->blhp", W_a, x)
    b_vec = np.einsum("hsr,blhr->blhs", W_b, x)
    return fast_weights(a, b_vec, x, sigma=sigma, W0=W0, return_state=return_state)
