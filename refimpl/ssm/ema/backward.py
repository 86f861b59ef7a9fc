r"""The backward pass of MEGA's damped EMA (Ma et al. 2023), written as the adjoint recurrence.

Forward (:mod:`refimpl.ssm.ema.reference`), per feature ``j`` and EMA dimension ``i``: ``u_t = beta x_t``,
``h_t = alpha u_t + q h_{t-1}`` with ``q = 1 - alpha delta``, ``y_t = sum_i eta_i h_{t,i}``
(``h_{-1}`` = ``initial_state`` or 0).  Shapes: ``x (b l d)``, ``y (b l d)``; ``alpha, delta, beta, eta (d n)``;
the state ``(b d n)``.  Every input is real; every gradient is real.

**The adjoint of the scan is itself a reverse scan** (``g_t = dL/dh_t (b d n)``, ``t = l-1 .. 0``)::

    g_{l-1} = d_final_state + eta dy_{l-1},     g_t = q g_{t+1} + eta dy_t
    deta   = sum_{b,t} dy_t h_t                 dbeta  = alpha sum_{b,t} g_t x_t
    dalpha = sum_{b,t} g_t (beta x_t - delta h_{t-1})
    ddelta = -alpha sum_{b,t} g_t h_{t-1}       dx_t   = sum_i alpha beta g_t
    d initial_state = q g_0

(``dq = sum g_t h_{t-1}``, and ``q = 1 - alpha delta`` moves with ``alpha`` by ``-delta``, with ``delta`` by
``-alpha``.)  The convolution views compute the same map, so they share this adjoint (``view="recurrent"``).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_shape, result_dtype
from refimpl.ssm.ema.reference import _inputs, _params

__all__ = ["recurrent_vjp"]


def recurrent_vjp(x, alpha, delta, beta, eta, *, dy, d_final_state=None, initial_state=None) -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.ema.reference.recurrent`: the forward loop storing ``h_t``, then **the
    reverse scan** ``g_t = q g_{t+1} + eta dy_t`` of the module docstring.

    ``dy (b l d)`` (required), ``d_final_state (b d n)`` (the cotangent of ``h_{l-1}``).  Returns
    ``{x, alpha, delta, beta, eta}`` gradients (and ``initial_state`` when given), each with its input's shape,
    in the working dtype (float32 only when every float input and cotangent is float32).
    """
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    x, h0 = _inputs(x, alpha, initial_state, d_final_state is not None)
    b, L, d = x.shape
    n = alpha.shape[1]
    dy = as_float_array(dy, "dy", ndim=3, allow_complex=False)
    check_shape(dy, "dy", (b, L, d), "(b l d)", src="the shape of y: b, l, d from x")
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=3, allow_complex=False)
        check_shape(d_final_state, "d_final_state", (b, d, n), "(b d n)", src="b from x, (d, n) from alpha")
    dt = result_dtype(x, alpha, delta, beta, eta, h0, dy, d_final_state)
    x, alpha, delta, beta, eta, dy = (a.astype(dt, copy=False) for a in (x, alpha, delta, beta, eta, dy))
    q = 1.0 - alpha * delta
    # forward: hs[t + 1] = h_t, hs[0] = h_{-1}
    hs = np.zeros((L + 1, b, d, n), dtype=dt)
    if h0 is not None:
        hs[0] = h0
    for t in range(L):
        # h_t = alpha (beta x_t) + q h_{t-1}
        hs[t + 1] = alpha * (beta * x[:, t, :, None]) + q * hs[t]
    g = np.zeros((b, d, n), dtype=dt) if d_final_state is None else d_final_state.astype(dt, copy=True)
    dx = np.zeros((b, L, d), dtype=dt)
    dq = np.zeros((d, n), dtype=dt)
    gx = np.zeros((d, n), dtype=dt)
    deta = np.zeros((d, n), dtype=dt)
    for t in range(L - 1, -1, -1):
        if t < L - 1:
            # g_t = q g_{t+1} + eta dy_t
            g = q * g
        g = g + eta * dy[:, t, :, None]
        # dx_t = sum_i alpha beta g_t
        dx[:, t] = np.sum(alpha * beta * g, axis=-1)
        # dq += sum_b g_t h_{t-1};  sum_b g_t x_t (for dbeta, dalpha)
        dq += np.sum(g * hs[t], axis=0)
        gx += np.sum(g * x[:, t, :, None], axis=0)
        # deta += sum_b dy_t h_t
        deta += np.sum(dy[:, t, :, None] * hs[t + 1], axis=0)
    out = {"x": dx,
           # dalpha = sum g_t beta x_t - delta sum g_t h_{t-1}
           "alpha": beta * gx - delta * dq,
           # ddelta = -alpha sum g_t h_{t-1}
           "delta": -alpha * dq,
           # dbeta = alpha sum g_t x_t
           "beta": alpha * gx,
           "eta": deta}
    if initial_state is not None:
        # d initial_state = q g_0  (d_final_state itself when l = 0)
        out["initial_state"] = q * g if L else g
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
