r"""Fast weight programmers (Schmidhuber 1991/92; the text's formulation), the recurrent view.

``a_i = W_a x_i``,  ``b_i = W_b x_i``,  ``W_i = sigma(W_{i-1} + a_i b_i^T)``,  ``y_i = W_i x_i``.

With ``sigma = identity``, ``a_i = v_i``, ``b_i = phi(k_i)`` and the readout vector ``phi(q_i)``
instead of ``x_i``, this is exactly unnormalized causal linear attention
(``S_t = S_{t-1} + v_t phi(k_t)^T``, ``o_t = S_t phi(q_t)``; state in the VxK layout).

Shapes: ``a (b l h p)``, ``b_vec (b l h n)``, ``x_read (b l h n)``; fast weights ``W_i (b h p n)``;
output ``y (b l h p)``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_shape, result_dtype

__all__ = ["recurrent", "fast_weight_programmer", "validate_fast_weights"]


def validate_fast_weights(a, b_vec, x_read, *, sigma=None, initial_state=None, return_final_state=False):
    """Validated ``(a, b_vec, x_read, W0, return_final_state)`` in the working dtype; ``W0`` a copy (zeros if None)."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    a = as_float_array(a, "a", ndim=4, allow_complex=False)
    b, l, h, p = a.shape
    b_vec = as_float_array(b_vec, "b_vec", ndim=4, allow_complex=False)
    check_shape(b_vec, "b_vec", (b, l, h, None), "(b, l, h, n) with b, l, h from a")
    n = b_vec.shape[3]
    x_read = as_float_array(x_read, "x_read", ndim=4, allow_complex=False)
    check_shape(x_read, "x_read", (b, l, h, n), "(b, l, h, n) like b_vec")
    if sigma is not None and not callable(sigma):
        raise TypeError(f"sigma: expected a callable or None, got {type(sigma).__name__}")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=4, allow_complex=False)
        check_shape(initial_state, "initial_state", (b, h, p, n), "(b, h, p, n)",
                    src="b, h, p from a, n from b_vec")
    dt = result_dtype(a, b_vec, x_read, initial_state)
    W0 = np.zeros((b, h, p, n), dtype=dt) if initial_state is None else initial_state.astype(dt)
    c = lambda z: z.astype(dt, copy=False)  # noqa: E731
    return c(a), c(b_vec), c(x_read), W0, return_final_state


def _apply_sigma(sigma, W: np.ndarray) -> np.ndarray:
    """``sigma(W)``, which must keep the shape ``(b h p n)`` (and is cast back to the working dtype)."""
    if sigma is None:
        return W
    W_new = np.asarray(sigma(W))
    if W_new.shape != W.shape:
        raise ValueError(f"sigma: expected it to return shape {W.shape}, got {W_new.shape}")
    return W_new.astype(W.dtype, copy=False)


def recurrent(a, b_vec, x_read, *, sigma: Optional[Callable[[np.ndarray], np.ndarray]] = None, initial_state=None,
              return_final_state: bool = False):
    r"""``W_i = sigma(W_{i-1} + a_i b_i^T)``, ``y_i = W_i x_read_i``.  ``sigma=None`` is the identity.

    ``sigma`` is applied to the whole ``(b h p n)`` fast-weight array and must return an array of the same
    shape.  ``initial_state`` is ``W_{-1} (b h p n)`` (default zero); ``return_final_state=True`` returns
    ``(y, W_{l-1})``.
    """
    a, b_vec, x_read, W_i, return_final_state = validate_fast_weights(
        a, b_vec, x_read, sigma=sigma, initial_state=initial_state, return_final_state=return_final_state)
    b, l, h, p = a.shape
    y = np.zeros((b, l, h, p), dtype=W_i.dtype)
    for i in range(l):
        # W_i = sigma(W_{i-1} + a_i b_i^T)
        W_i = _apply_sigma(sigma, W_i + a[:, i, :, :, None] * b_vec[:, i, :, None, :])
        # y_i = W_i x_i
        y[:, i] = np.einsum("bhpn,bhn->bhp", W_i, x_read[:, i])
    return (y, W_i) if return_final_state else y


def fast_weight_programmer(x, W_a, W_b, *, sigma=None, initial_state=None, return_final_state: bool = False,
                           view: str = "recurrent", backend: str = "numpy"):
    r"""The full FWP with slow weights: ``a_i = W_a x_i``, ``b_i = W_b x_i``, read with ``x_i`` itself.

    ``x (b l h n)``, ``W_a (h p n)``, ``W_b (h n n)``; returns ``y (b l h p)`` (see
    :func:`refimpl.attention.fast_weights.fast_weight_memory` for the rest).
    """
    from refimpl.attention.fast_weights import fast_weight_memory

    x = as_float_array(x, "x", ndim=4, allow_complex=False)
    b, l, h, n = x.shape
    W_a = as_float_array(W_a, "W_a", ndim=3, allow_complex=False)
    check_shape(W_a, "W_a", (h, None, n), "(h, p, n)", src="h, n from x")
    W_b = as_float_array(W_b, "W_b", ndim=3, allow_complex=False)
    check_shape(W_b, "W_b", (h, n, n), "(h, n, n)", src="h, n from x")
    if initial_state is not None:
        # checked here too, so that a mismatch names this function's arguments (x, W_a), not a and b_vec
        state = as_float_array(initial_state, "initial_state", ndim=4, allow_complex=False)
        check_shape(state, "initial_state", (b, h, W_a.shape[1], n), "(b, h, p, n)",
                    src="b, h, n from x, p from W_a")
    # a_i = W_a x_i ;  b_i = W_b x_i
    a = np.einsum("hpn,blhn->blhp", W_a, x)
    b_vec = np.einsum("hmn,blhn->blhm", W_b, x)
    return fast_weight_memory(a, b_vec, x, sigma=sigma, initial_state=initial_state, return_final_state=return_final_state,
                              view=view, backend=backend)
