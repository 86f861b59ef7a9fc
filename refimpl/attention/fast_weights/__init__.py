"""refimpl.attention.fast_weights: fast weight programmers (see README.md in this folder).

One entry point, :func:`fast_weight_memory` (view ``recurrent``, backend ``numpy``), and the full programmer with slow
weights, :func:`fast_weight_programmer`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from refimpl._dispatch import register
from refimpl.attention.fast_weights.reference import fast_weight_programmer

__all__ = ["fast_weight_memory", "fast_weight_programmer", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.fast_weight_memory", {
    ("recurrent", "numpy"): "refimpl.attention.fast_weights.reference:recurrent",
})


def fast_weight_memory(a, b_vec, x_read, *, sigma: Optional[Callable[[np.ndarray], np.ndarray]] = None, initial_state=None,
                 return_final_state: bool = False, view: str = "recurrent", backend: str = "numpy"):
    r"""``W_i = sigma(W_{i-1} + a_i b_i^T)``, ``y_i = W_i x_read_i`` (``sigma=None``: the identity).

    ``a (b l h p)``, ``b_vec (b l h n)``, ``x_read (b l h n)`` -> ``y (b l h p)``; ``initial_state`` the fast
    weights ``W (b h p n)`` before step 0 (default zero); ``return_final_state=True`` returns ``(y, W_last)``.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    return impl(a, b_vec, x_read, sigma=sigma, initial_state=initial_state, return_final_state=return_final_state)
