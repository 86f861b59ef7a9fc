r"""MEGA's multi-dimensional damped EMA (Ma et al. 2023), as a recurrence and as a convolution.

For each input feature ``j`` (of ``d``) and each of its ``n`` EMA dimensions ``i``:

* expand:  ``u_t^{(j)} = beta_j x_{t,j}``                                    (``beta (d n)``)
* damped EMA: ``h_t^{(j)} = alpha_j * u_t^{(j)} + (1 - alpha_j * delta_j) * h_{t-1}^{(j)}``
  (``alpha, delta (d n)`` in (0, 1); ``h_{-1}`` = ``initial_state``, default 0)
* project: ``y_{t,j} = eta_j^T h_t^{(j)}``                                   (``eta (d n)``)

Unrolled, ``y_{t,j} = sum_{k<=t} K_{j,k} x_{t-k,j} + sum_i eta_{j,i} q_{j,i}^{t+1} h_{-1,j,i}`` with the
closed-form kernel

``K_{j,k} = sum_i eta_{j,i} alpha_{j,i} beta_{j,i} q_{j,i}^k``,  ``q = 1 - alpha delta``,

evaluated as ``q^k = exp(k log1p(-alpha delta))`` (log-space; no repeated multiplication).  The state after
the last step is ``h_{l-1} = q^l h_{-1} + sum_{k<l} alpha beta q^{l-1-k} x_k``.
Views (:func:`refimpl.ssm.ema.mega_ema`): ``recurrent`` (:func:`recurrent`), ``convolution``
(:func:`convolution`, the direct causal sum) and ``fft`` (:func:`fft_convolution`), the two convolutions
through :func:`kernel`.  (MEGA's learned parameters pass through sigmoids; here ``alpha, delta`` are the
values in (0, 1).)

Shapes: ``x (b l d)`` -> ``y (b l d)``; parameters ``(d n)``; state ``(b d n)``; kernel ``K (d l)``.
"""
from __future__ import annotations

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype

__all__ = ["recurrent", "kernel", "convolution", "fft_convolution"]


def _params(alpha, delta, beta, eta):
    """``alpha, delta, beta, eta (d n)`` real and finite; ``alpha, delta`` in the open interval (0, 1)."""
    alpha = as_float_array(alpha, "alpha", ndim=2, allow_complex=False)
    out = [alpha]
    for name, arr in (("delta", delta), ("beta", beta), ("eta", eta)):
        a = as_float_array(arr, name, ndim=2, allow_complex=False)
        check_shape(a, name, alpha.shape, "(d n), the shape of alpha")
        out.append(a)
    for name, a in (("alpha", out[0]), ("delta", out[1])):
        if np.any(a <= 0) or np.any(a >= 1):
            bad = a[(a <= 0) | (a >= 1)][0]
            raise ValueError(f"{name}: expected values in the open interval (0, 1), got {bad}")
    return out


def _inputs(x, alpha, initial_state, return_final_state):
    """``x (b l d)`` real with ``d`` from ``alpha``; ``initial_state (b d n)`` real or None."""
    check_bool(return_final_state, "return_final_state")
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    d, n = alpha.shape
    check_shape(x, "x", (None, None, d), f"(b l d) with d = {d} features from alpha")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=3, allow_complex=False)
        check_shape(initial_state, "initial_state", (x.shape[0], d, n), "(b d n)",
                    src="b from x, (d, n) from alpha")
    return x, initial_state


def recurrent(x, alpha, delta, beta, eta, *, initial_state=None, return_final_state: bool = False):
    r"""The ``recurrent`` view, the literal damped-EMA recurrence; ``x (b l d)`` -> ``y (b l d)``.

    ``initial_state (b d n)``: ``h_{-1}``; ``return_final_state=True`` returns ``(y, h_{l-1})``.
    """
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    x, h0 = _inputs(x, alpha, initial_state, return_final_state)
    b, L, d = x.shape
    dt = result_dtype(x, alpha, delta, beta, eta, h0)
    y = np.zeros((b, L, d), dtype=dt)
    h = np.zeros((b, d, alpha.shape[1]), dtype=dt) if h0 is None else h0.astype(dt)
    for t in range(L):
        # u_t = beta_j x_{t,j}
        u = beta * x[:, t, :, None]
        # h_t = alpha * u_t + (1 - alpha * delta) * h_{t-1}
        h = alpha * u + (1.0 - alpha * delta) * h
        # y_{t,j} = eta_j^T h_t
        y[:, t] = np.sum(eta * h, axis=-1)
    return (y, h) if return_final_state else y


def _powers(alpha, delta, k) -> np.ndarray:
    """``q^k = exp(k log1p(-alpha delta))`` for the integer exponents ``k (m)``: ``(d n m)``."""
    return np.exp(np.log1p(-alpha * delta)[..., None] * k)


def kernel(alpha, delta, beta, eta, L: int) -> np.ndarray:
    r"""``K_{j,k} = sum_i eta alpha beta (1 - alpha delta)^k``, ``k < L``: ``K (d l)``."""
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    L = check_int(L, "L", minimum=0)
    k = np.arange(L).astype(result_dtype(alpha, delta, beta, eta))
    # K_k = sum_i eta alpha beta q^k,  q^k = exp(k log1p(-alpha delta))
    return np.sum((eta * alpha * beta)[..., None] * _powers(alpha, delta, k), axis=1)


def _causal_direct(K, x):
    """``y_{t,j} = sum_{k<=t} K_{j,k} x_{t-k,j}`` by the direct sum: ``K (d l)``, ``x (b l d)``."""
    y = np.zeros(x.shape, dtype=np.result_type(K, x))
    for t in range(x.shape[1]):
        # y_t = sum_{k <= t} K_k x_{t-k}
        y[:, t] = np.sum(K[None, :, t::-1] * np.moveaxis(x[:, : t + 1], 1, 2), axis=-1)
    return y


def _causal_fft(K, x):
    """The same causal convolution by zero-padded real FFTs of length ``>= 2l - 1`` (no wrap-around)."""
    L = x.shape[1]
    if L == 0:
        return np.zeros(x.shape, dtype=np.result_type(K, x))
    n_fft = 1 << max(1, int(2 * L - 1).bit_length())
    # y = irfft(rfft(K) rfft(x))[:l]
    Yf = np.fft.rfft(K, n_fft, axis=-1)[None] * np.fft.rfft(np.moveaxis(x, 1, 2), n_fft, axis=-1)
    return np.moveaxis(np.fft.irfft(Yf, n_fft, axis=-1)[..., :L], 2, 1)


def _state_terms(x, alpha, delta, beta, eta, h0, return_final_state):
    r"""What the initial state adds to ``y`` and the final state, for the convolution views (closed form):
    ``y_{t,j} += sum_i eta q^{t+1} h_{-1}`` and ``h_{l-1} = q^l h_{-1} + sum_{k<l} alpha beta q^{l-1-k} x_k``."""
    L = x.shape[1]
    dt = result_dtype(x, alpha, delta, beta, eta, h0)
    free = None
    if h0 is not None:
        # y_{t,j} += sum_i eta_{j,i} q_{j,i}^{t+1} h_{-1,j,i}
        free = np.einsum("dn,dnt,bdn->btd", eta, _powers(alpha, delta, np.arange(1, L + 1).astype(dt)), h0)
    final = None
    if return_final_state:
        # h_{l-1} = q^l h_{-1} + sum_{k<l} alpha beta q^{l-1-k} x_k
        G = (alpha * beta)[..., None] * _powers(alpha, delta, np.arange(L - 1, -1, -1).astype(dt))  # (d n l)
        final = np.einsum("dnk,bkd->bdn", G, x).astype(dt)
        if h0 is not None:
            final = final + _powers(alpha, delta, np.array([L], dtype=dt))[..., 0] * h0
    return free, final


def _convolution(conv, x, alpha, delta, beta, eta, initial_state, return_final_state):
    alpha, delta, beta, eta = _params(alpha, delta, beta, eta)
    x, h0 = _inputs(x, alpha, initial_state, return_final_state)
    K = kernel(alpha, delta, beta, eta, x.shape[1])
    # y = K * x  (causal, per feature)
    y = conv(K, x)
    free, final = _state_terms(x, alpha, delta, beta, eta, h0, return_final_state)
    if free is not None:
        # + the initial state's free response
        y = y + free
    y = y.astype(result_dtype(x, alpha, K, h0), copy=False)
    return (y, final) if return_final_state else y


def convolution(x, alpha, delta, beta, eta, *, initial_state=None, return_final_state: bool = False):
    r"""The ``convolution`` view: ``y = K * x`` per feature by the direct causal sum (:func:`kernel`); as :func:`recurrent`."""
    return _convolution(_causal_direct, x, alpha, delta, beta, eta, initial_state, return_final_state)


def fft_convolution(x, alpha, delta, beta, eta, *, initial_state=None, return_final_state: bool = False):
    r"""The ``fft`` view: ``y = K * x`` per feature by zero-padded real FFTs; as :func:`recurrent`."""
    return _convolution(_causal_fft, x, alpha, delta, beta, eta, initial_state, return_final_state)
