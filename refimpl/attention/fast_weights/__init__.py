"""refimpl.attention.fast_weights: fast weight programmers (see README.md in this folder).

One entry point, :func:`fast_weight_memory` (view ``recurrent``, backend ``numpy``), and the full programmer with slow
weights, :func:`fast_weight_programmer`.

The backward: :func:`fast_weight_memory_vjp`, views ``"recurrent"`` (the reverse scan) and ``"quadratic"`` (the
closed form's masked products) (:mod:`refimpl.attention.fast_weights.backward`).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from refimpl._dispatch import register
from refimpl.attention.fast_weights.reference import fast_weight_programmer

__all__ = ["fast_weight_memory", "fast_weight_memory_vjp", "fast_weight_programmer", "IMPLEMENTATIONS",
           "VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.fast_weight_memory", {
    ("recurrent", "numpy"): "refimpl.attention.fast_weights.reference:recurrent",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.fast_weight_memory_vjp", {
    ("recurrent", "numpy"): "refimpl.attention.fast_weights.backward:recurrent_vjp",
    ("quadratic", "numpy"): "refimpl.attention.fast_weights.backward:quadratic_vjp",
})


def fast_weight_memory(a, b_vec, x_read, *, sigma: Optional[Callable[[np.ndarray], np.ndarray]] = None, initial_state=None,
                 return_final_state: bool = False, view: str = "recurrent", backend: str = "numpy"):
    r"""``W_i = sigma(W_{i-1} + a_i b_i^T)``, ``y_i = W_i x_read_i`` (``sigma=None``: the identity).

    ``a (b l h p)``, ``b_vec (b l h n)``, ``x_read (b l h n)`` -> ``y (b l h p)``; ``initial_state`` the fast
    weights ``W (b h p n)`` before step 0 (default zero); ``return_final_state=True`` returns ``(y, W_last)``.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    return impl(a, b_vec, x_read, sigma=sigma, initial_state=initial_state, return_final_state=return_final_state)


def fast_weight_memory_vjp(a, b_vec, x_read, *, dy, d_final_state=None,
                           sigma: Optional[Callable[[np.ndarray], np.ndarray]] = None, initial_state=None,
                           view: str = "recurrent", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`fast_weight_memory` (the adjoint equations in
    :mod:`refimpl.attention.fast_weights.backward`, written by hand: the adjoint of the scan is a reverse scan).

    ``dy (b l h p)``: the cotangent of ``y``; ``d_final_state (b h p n)``: the cotangent of the final state
    ``W_last`` (passing it means the forward is taken to return it; ``None``: zero).  ``sigma`` must be ``None``
    (the identity; a callable is a ``ValueError``).  Returns ``{"a", "b_vec", "x_read"}`` and ``"initial_state"``
    (when given) gradients of the real loss ``sum dy * y + <d_final_state, W_last>``, each with its input's shape
    and dtype.  ``view, backend``: ``("recurrent", "numpy")`` (default) or ``("quadratic", "numpy")``.
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    return impl(a, b_vec, x_read, dy=dy, d_final_state=d_final_state, sigma=sigma, initial_state=initial_state)
