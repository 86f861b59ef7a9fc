r"""The backward pass of the Attention Free Transformer: the vector-Jacobian product, written literally (no autodiff).

The forward (:mod:`refimpl.attention.aft.reference`), elementwise in the channel ``c``::

    S_{t,t',c} = K_{t',c} + w'_{t,t'}   (t' kept: every t', or t' <= t when causal)
    P_{t,t',c} = exp(S_{t,t',c} - m_{t,c}) / sum_t'' exp(S_{t,t'',c} - m_{t,c})      (the softmax over t')
    A_{t,c}    = sum_t' P_{t,t',c} V_{t',c}
    G_{t,c}    = sigmoid(Q_{t,c}),      Y = G * A

Given the cotangent ``dy`` of ``Y`` (a real loss ``L = sum dy * Y``), the adjoint equations::

    dA_{t,c}       = dy_{t,c} G_{t,c}
    dQ_{t,c}       = dy_{t,c} A_{t,c} G_{t,c} (1 - G_{t,c})          (sigmoid' = sigmoid (1 - sigmoid))
    dV_{t',c}      = sum_t P_{t,t',c} dA_{t,c}
    dS_{t,t',c}    = P_{t,t',c} dA_{t,c} (V_{t',c} - A_{t,c})      (the softmax's Jacobian: P (dP - sum P dP),
                                                                      dP_{t,t',c} = dA_{t,c} V_{t',c})
    dK_{t',c}      = sum_t dS_{t,t',c}
    dw_{t,t'}      = sum_{b,c} dS_{t,t',c}   where w'_{t,t'} = w_{t,t'} (AFT-full: every kept pair; AFT-local:
                                              inside the window), 0 elsewhere (w does not enter there)

The normalizer's gradient is the ``- A_{t,c}`` term of ``dS`` (``D_{t,c} = sum_t' P dP = dA_{t,c} A_{t,c}``).
There is no scan in the materialized view, so no reverse recurrence: one view, ``"materialized"``, recomputing
``P`` from the inputs.  AFT-simple (``w = 0``) has no ``w``, so no ``"w"`` entry.

Conventions: as the forward (``variant``, ``causal``, ``window=(left, right)`` inclusive, ``w (l l)`` shared by every
channel; ``L = 0``: empty gradients).  Real inputs only.  The computation runs in ``result_dtype`` of the inputs and
``dy``, and every gradient is returned in it (no silent downcast).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl.attention.aft.reference import _sigmoid, _w_prime, validate_aft
from refimpl.attention.linformer.backward import check_cotangent
from refimpl._validate import result_dtype

__all__ = ["materialized_vjp"]


def materialized_vjp(q, k, v, w=None, *, dy, variant: str = "full", causal: bool = False,
                     window=None) -> Dict[str, np.ndarray]:
    r"""The VJP of AFT (the module docstring's adjoint equations), the ``(b l l d)`` logits materialized.

    ``q, k, v (b l d)``, ``w (l l)`` (``None`` for ``variant="simple"``), ``dy (b l d)`` (the cotangent of ``Y``) ->
    ``{"q": dq, "k": dk, "v": dv[, "w": dw]}``, each its input's shape, in the working dtype.
    """
    Q, K, V, w, variant, causal, window = validate_aft(q, k, v, w, variant=variant, causal=causal, window=window)
    b, l, d = Q.shape
    dy = check_cotangent(dy, "dy", (b, l, d), "b l d", "b, l, d from q")
    dt = result_dtype(Q, K, V, w, dy)
    Q, K, V, dy = (a.astype(dt, copy=False) for a in (Q, K, V, dy))
    w = None if w is None else w.astype(dt, copy=False)
    if l == 0:
        grads = {"q": np.zeros_like(Q), "k": np.zeros_like(K), "v": np.zeros_like(V)}
        if w is not None:
            grads["w"] = np.zeros((0, 0), dtype=dt)
        return grads
    # forward recomputation: w', the kept keys, S, P (normalized over t'), A, G
    w_prime = _w_prime(w, variant, l, window, dt)
    keep = np.tril(np.ones((l, l), dtype=bool)) if causal else np.ones((l, l), dtype=bool)
    S = K[:, None, :, :] + w_prime[None, :, :, None]
    S = np.where(keep[None, :, :, None], S, dt.type(-np.inf))
    m = np.max(S, axis=2, keepdims=True)
    E = np.exp(S - m)
    # P_{t,t',c} = E / sum_t' E
    P = E / np.sum(E, axis=2, keepdims=True)
    # A_{t,c} = sum_t' P_{t,t',c} V_{t',c}
    A = np.einsum("btsc,bsc->btc", P, V)
    G = _sigmoid(Q)
    # dA = dy * G
    dA = dy * G
    # dQ = dy * A * G (1 - G)
    dQ = dy * A * (G * (1 - G))
    # dV_{t'} = sum_t P_{t,t'} dA_t
    dV = np.einsum("btsc,btc->bsc", P, dA)
    # dS_{t,t',c} = P_{t,t',c} dA_{t,c} (V_{t',c} - A_{t,c})
    dS = P * (dA[:, :, None, :] * (V[:, None, :, :] - A[:, :, None, :]))
    # dK_{t'} = sum_t dS_{t,t'}
    dK = np.sum(dS, axis=1)
    grads = {"q": dQ, "k": dK, "v": dV}
    if w is not None:
        # dw_{t,t'} = sum_{b,c} dS_{t,t',c} where w' = w (0 where w does not enter)
        dw = np.einsum("btsc->ts", dS)
        if variant == "local":
            left, right = window
            t = np.arange(l)[:, None]
            tp = np.arange(l)[None, :]
            dw = np.where((tp >= t - left) & (tp <= t + right), dw, dt.type(0))
        grads["w"] = dw
    return grads
