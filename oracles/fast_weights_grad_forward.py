r"""A float64 forward of the fast weight memory for gradient checks (ground truth: numpy only, never refimpl).

The closed sum of the recurrence ``W_i = W_{i-1} + a_i b_i^T``, ``y_i = W_i x_i`` (sigma = identity)::

    y_i    = W0 x_i + sum_{j <= i} a_j (b_j . x_i)        (the causal (l l) matrix b_j . x_i, materialized)
    W_last = W0 + sum_j a_j b_j^T

evaluated densely in float64 (not the recurrence: a different association order from any scan), fast enough for
:func:`oracles.gradients.fd_vjp` to call a few times per input element.  Its rounding: every output is a sum of at
most ``L + 1`` products of ``n + 1`` factors summed over ``n``, i.e. within ``gamma_(L + n + 2)`` of the same
sums on absolute values (:func:`forward_error`), passed to ``fd_vjp`` as ``forward_error``.

Also :func:`fast_weights_vjp_magnitude`: the adjoint equations run on absolute values (the ``M`` of
:func:`oracles.tolerance.componentwise_bound` for any backward that sums the same terms in any order)::

    |da_i|  <= sum_{j >= i} |dy_j| (|x_j| . |b_i|) + |dW_last| |b_i|
    |db_i|  <= sum_{j >= i} (|dy_j| . |a_i|) |x_j| + |dW_last|^T |a_i|
    |dx_i|  <= (|W0| + sum_{j <= i} |a_j| |b_j|^T)^T |dy_i|
    |dW0|   <= sum_i |dy_i| |x_i|^T + |dW_last|
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from oracles.tolerance import gamma

__all__ = ["fast_weights_forward", "forward_error", "fast_weights_vjp_magnitude", "fast_weights_forward_mp"]


def fast_weights_forward(a, b_vec, x_read, W0=None) -> Dict[str, np.ndarray]:
    """``{"y": (b l h p), "W_last": (b h p n)}`` in float64 from ``a (b l h p)``, ``b_vec, x_read (b l h n)``,
    ``W0 (b h p n)`` or None."""
    a, bv, xr = (np.asarray(z, dtype=np.float64) for z in (a, b_vec, x_read))
    b, l, h, p = a.shape
    n = bv.shape[3]
    causal = np.tril(np.ones((l, l)))  # [i, j] = 1 for j <= i
    G = np.einsum("bihn,bjhn->bhij", xr, bv) * causal  # b_j . x_i
    y = np.einsum("bhij,bjhp->bihp", G, a)
    W_last = np.einsum("bjhp,bjhn->bhpn", a, bv)
    if W0 is not None:
        W0 = np.asarray(W0, dtype=np.float64)
        y = y + np.einsum("bhpn,bihn->bihp", W0, xr)
        W_last = W_last + W0
    return {"y": y, "W_last": W_last}


def forward_error(a, b_vec, x_read, W0=None) -> Dict[str, np.ndarray]:
    """``gamma_(L + n + 2)(float64)`` times the forward on absolute values, per output (module docstring)."""
    a, bv, xr = (np.abs(np.asarray(z, dtype=np.float64)) for z in (a, b_vec, x_read))
    l, n = a.shape[1], bv.shape[3]
    M = fast_weights_forward(a, bv, xr, None if W0 is None else np.abs(np.asarray(W0, dtype=np.float64)))
    g = gamma(l + n + 2, np.float64)
    return {k: g * v for k, v in M.items()}


def fast_weights_vjp_magnitude(a, b_vec, x_read, W0, dy, dW_last: Optional[np.ndarray] = None):
    """The adjoint equations on absolute values (module docstring): ``{"a", "b_vec", "x_read"[, "W0"]}``."""
    a, bv, xr, gy = (np.abs(np.asarray(z, dtype=np.float64)) for z in (a, b_vec, x_read, dy))
    b, l, h, p = a.shape
    n = bv.shape[3]
    dWl = np.zeros((b, h, p, n)) if dW_last is None else np.abs(np.asarray(dW_last, dtype=np.float64))
    upper = np.triu(np.ones((l, l)))  # [i, j] = 1 for j >= i
    # sum_{j >= i} |dy_j| |x_j|^T + |dW_last|: the carried adjoint on absolute values, (b l h p n)
    outer = np.einsum("bjhp,bjhn->bjhpn", gy, xr)
    dW = np.einsum("ij,bjhpn->bihpn", upper, outer) + dWl[:, None]
    Wabs = np.einsum("ji,bjhpn->bihpn", upper, np.einsum("bjhp,bjhn->bjhpn", a, bv))  # sum_{j <= i}
    if W0 is not None:
        Wabs = Wabs + np.abs(np.asarray(W0, dtype=np.float64))[:, None]
    out = {"a": np.einsum("bihpn,bihn->bihp", dW, bv), "b_vec": np.einsum("bihpn,bihp->bihn", dW, a),
           "x_read": np.einsum("bihpn,bihp->bihn", Wabs, gy)}
    if W0 is not None:
        out["W0"] = np.einsum("bihp,bihn->bhpn", gy, xr) + dWl
    return out


def fast_weights_forward_mp(a, b_vec, x_read, W0=None) -> Dict[str, np.ndarray]:
    """The closed sum in mpmath on object arrays of ``mpf`` (for :func:`oracles.gradients.mp_vjp`): ``{"y", "W_last"}``
    as object arrays, every sum one ``mpmath.fsum`` at the caller's working precision."""
    import mpmath

    a, bv, xr = (np.asarray(z, dtype=object) for z in (a, b_vec, x_read))
    B, l, h, p = a.shape
    n = bv.shape[3]
    y = np.empty((B, l, h, p), dtype=object)
    W = np.empty((B, h, p, n), dtype=object)
    for bi in range(B):
        for hi in range(h):
            for i in range(l):
                dots = [mpmath.fsum(bv[bi, j, hi, c] * xr[bi, i, hi, c] for c in range(n)) for j in range(i + 1)]
                for q in range(p):
                    terms = [a[bi, j, hi, q] * dots[j] for j in range(i + 1)]
                    if W0 is not None:
                        terms += [W0[bi, hi, q, c] * xr[bi, i, hi, c] for c in range(n)]
                    y[bi, i, hi, q] = mpmath.fsum(terms)
            for q in range(p):
                for c in range(n):
                    terms = [a[bi, j, hi, q] * bv[bi, j, hi, c] for j in range(l)]
                    if W0 is not None:
                        terms.append(W0[bi, hi, q, c])
                    W[bi, hi, q, c] = mpmath.fsum(terms) if terms else mpmath.mpf(0)
    return {"y": y, "W_last": W}
