r"""MEGA's multi-dimensional damped EMA (Ma et al. 2023), as a recurrence and as a convolution.

For each input feature ``j`` (of ``d``) and each of its ``e`` EMA dimensions ``i``:

* expand:  ``u_t^{(j)} = beta_j x_{t,j}``                                    (``beta (d e)``)
* damped EMA: ``h_t^{(j)} = alpha_j * u_t^{(j)} + (1 - alpha_j * delta_j) * h_{t-1}^{(j)}``
  (``alpha, delta (d e)`` in (0, 1); ``h_{-1} = 0``)
* project: ``y_{t,j} = eta_j^T h_t^{(j)}``                                   (``eta (d e)``)

Unrolled, ``y_{t,j} = sum_{k<=t} K_{j,k} x_{t-k,j}`` with the closed-form kernel

``K_{j,k} = sum_i eta_{j,i} alpha_{j,i} beta_{j,i} q_{j,i}^k``,  ``q = 1 - alpha delta``,

evaluated as ``q^k = exp(k log1p(-alpha delta))`` (log-space; no repeated multiplication).
Views: :func:`recurrent`, :func:`kernel` + :func:`convolution` (``method`` ``direct`` or ``fft``,
through :func:`refimpl.ssm.lti.reference.causal_conv` / :func:`refimpl.ssm.lti.reference.fft_conv`).
(MEGA's learned parameters pass through sigmoids; here ``alpha, delta`` are the values in (0, 1).)

Shapes: ``x (b l d)`` -> ``y (b l d)``.
"""
from __future__ import annotations

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, result_dtype
from refimpl.ssm.lti import reference as lti

__all__ = ["recurrent", "kernel", "convolution"]


def _params(alpha, delta, beta, eta):
    alpha = as_float_array(alpha, "alpha", ndim=2, allow_complex=False)
    d, e = alpha.shape
    out = [alpha]
    for name, arr in (("delta", delta), ("beta", beta), ("eta", eta)):
        a = as_float_array(arr, name, ndim=2, allow_complex=False)
        if a.shape != (d, e):
            raise ValueError(f"{name}: expected shape ({d}, {e}) (same as alpha), got {a.shape}")
        out.append(a)
    for name, a in (("alpha", out[0]), ("delta", out[1])):
        if np.any(a <= 0) or np.any(a >= 1):
            bad = a[(a <= 0) | (a >= 1)][0]
            raise ValueError(f"{name}: expected values in the open interval (0, 1), got {bad}")
    return out


def recurrent(x, alpha, delta, beta, eta) -> np.ndarray:
    r"""The literal damped-EMA recurrence; ``x (b l d)`` -> ``y (b l d)``."""
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    b, L, d = x.shape
    if d != alpha.shape[0]:
        raise ValueError(f"x: expected {alpha.shape[0]} features (from alpha), got shape {x.shape}")
    dt = result_dtype(x, alpha, delta, beta, eta)
    y = np.zeros((b, L, d), dtype=dt)
    h = np.zeros((b, d, alpha.shape[1]), dtype=dt)
    for t in range(L):
        # u_t = beta_j x_{t,j}
        u = beta * x[:, t, :, None]
        # h_t = alpha * u_t + (1 - alpha * delta) * h_{t-1}
        h = alpha * u + (1.0 - alpha * delta) * h
        # y_{t,j} = eta_j^T h_t
        y[:, t] = np.sum(eta * h, axis=-1)
    return y


def kernel(alpha, delta, beta, eta, L: int) -> np.ndarray:
    r"""``K_{j,k} = sum_i eta alpha beta (1 - alpha delta)^k``, ``k < L``: shape ``(l d)``."""
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    L = check_int(L, "L", minimum=0)
    dtype = result_dtype(alpha, delta, beta, eta)
    k = np.arange(L).astype(dtype)
    # q^k = exp(k log1p(-alpha delta))
    qk = np.exp(k[:, None, None] * np.log1p(-alpha * delta)[None])
    # K_k = sum_i eta alpha beta q^k
    return np.sum((eta * alpha * beta)[None] * qk, axis=-1)


def convolution(x, alpha, delta, beta, eta, *, method: str = "fft") -> np.ndarray:
    r"""``y = K * x`` per feature (causal), ``method`` ``direct`` or ``fft`` (``lti.causal_conv``/``fft_conv``)."""
    check_choice(method, "method", ("direct", "fft"))
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    alpha = as_float_array(alpha, "alpha", ndim=2, allow_complex=False)
    if x.shape[2] != alpha.shape[0]:
        raise ValueError(f"x: expected {alpha.shape[0]} features (from alpha), got shape {x.shape}")
    K = kernel(alpha, delta, beta, eta, x.shape[1])
    # as an LTI convolution with h = d channels, p = m = 1
    conv = lti.causal_conv if method == "direct" else lti.fft_conv
    y = conv(K[:, :, None, None], x[..., None])
    return y[..., 0].astype(result_dtype(x, alpha, K), copy=False)
