r"""The delta rule (Schlag et al. 2021) and the gated delta rule, recurrent and chunked (WY form).

Update (state ``S`` in the VxK layout, ``(b h p n)``, as in the text; ``alpha_t`` is the argument ``decay``)::

    v'_t = alpha_t S_{t-1} k_t                          (retrieve what k_t currently reads)
    S_t  = alpha_t S_{t-1} + beta_t (v_t - alpha_t S_{t-1} k_t) k_t^T
         = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T
    o_t  = S_t (scale q_t)

``alpha_t = 1`` (``decay=None``) is the plain delta rule, ``S_t = S_{t-1} + beta_t (v_t - v'_t) k_t^T``;
``alpha_t in (0, 1]`` is the gated delta rule (Yang et al. 2024, Gated DeltaNet).
``beta_t = sigmoid(W_beta x_t)`` (:func:`beta_from_inputs`).  ``k``, ``q`` are the (already
feature-mapped, e.g. ``phi(k_t)``) keys and queries.  Stability of the plain rule needs
``0 <= beta_t |k_t|^2 <= 2``; nothing here enforces it (it is a model property).

Shapes: ``q, k (b l h n)``, ``v (b l h p)``, ``beta, decay (b l h)``, ``initial_state (b h p n)``;
``o (b l h p)``.  ``return_final_state=True`` returns ``(o, S_L)``.

Key normalization (``key_norm=``, applied to ``k`` before anything else; ``query_norm=`` for ``q``):
``None``; ``"sum"`` -- ``k / sum_i k_i`` (Schlag et al.'s sum normalization, for positive features);
``"l2"`` -- ``k / |k|_2``.  ``scale`` (default 1: the text has none) multiplies the (normalized) query before it
reads the state: ``q_t <- scale qnorm(q_t)``.

Chunked WY form (Yang et al. 2024)
----------------------------------
For a chunk entered with state ``S_0``, of length ``c``, positions ``t = 0..c-1``, ``g_t = sum_{i<=t} log alpha_i``,
``gamma_t = exp(g_t)``.  The product ``P_t = prod_{i<=t} (I - beta_i k_i k_i^T) = I - sum_{i<=t} w_i k_i^T``
(the WY representation) with

* ``w_t = beta_t (k_t - sum_{i<t} (k_i^T k_t) w_i)``  -- i.e. ``(I + tril(diag(beta) K K^T, -1)) W = diag(beta) K``,
* ``u_t = beta_t (v_t - sum_{i<t} (gamma_t/gamma_i) (k_i^T k_t) u_i)``  --
  ``(I + tril(diag(beta) (Gamma o K K^T), -1)) U = diag(beta) V``, ``Gamma_ti = exp(g_t - g_i)``,

each solved by **one unit-lower-triangular solve per chunk**.  Then

* ``S_t = gamma_t S_0 (I - sum_{i<=t} w_i k_i^T) + sum_{i<=t} (gamma_t/gamma_i) u_i k_i^T``
* ``O = diag(gamma) (Q S_0^T - tril(Q K^T) (W S_0^T)) + (Gamma o tril(Q K^T)) U``
* ``S_c = gamma_{c-1} S_0 (I - W^T K) + U^T diag(gamma_{c-1}/gamma) K``.

All decay ratios ``gamma_t/gamma_i`` (``i <= t``) are formed as ``exp(g_t - g_i) <= 1`` in log space.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy.linalg import solve_triangular

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype

__all__ = ["beta_from_inputs", "normalize_vectors", "recurrent", "chunked", "validate_delta", "KEY_NORMS"]

KEY_NORMS = (None, "sum", "l2")


def beta_from_inputs(x, W_beta) -> np.ndarray:
    r"""``beta_t = sigmoid(W_beta x_t)``; ``x (b l h d)``, ``W_beta (h d)`` -> ``(b l h)``.

    Stable sigmoid: ``1/(1+exp(-z))`` for ``z >= 0``, ``exp(z)/(1+exp(z))`` for ``z < 0``.
    """
    x = as_float_array(x, "x", ndim=4, allow_complex=False)
    W_beta = as_float_array(W_beta, "W_beta", ndim=2, allow_complex=False)
    check_shape(W_beta, "W_beta", (x.shape[2], x.shape[3]), "(h, d) from x")
    z = np.einsum("hd,blhd->blh", W_beta, x)
    ez = np.exp(-np.abs(z))
    # sigmoid(z) = 1/(1+e^{-z}) (z >= 0), e^{z}/(1+e^{z}) (z < 0)
    return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def normalize_vectors(x, mode, argument: str = "mode", what: str = "x") -> np.ndarray:
    """``x / sum_i x_i`` (``mode="sum"``), ``x / |x|_2`` (``"l2"``) along the last axis, or ``x`` (None).

    ``x``: real floats ``(... n)``, finite.  ``argument`` names the option in errors (the delta rule passes
    ``key_norm``/``query_norm``), ``what`` the vectors (``k``/``q``).
    """
    if mode not in KEY_NORMS:
        raise ValueError(f"{argument}: expected one of None, 'sum', 'l2', got {mode!r}")
    x = as_float_array(x, what, allow_complex=False)
    if x.ndim == 0:
        raise ValueError(f"{what}: expected vectors (..., n) along the last axis, got a scalar")
    if mode is None:
        return x
    den = np.sum(x, axis=-1, keepdims=True) if mode == "sum" else np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(den == 0):
        idx = tuple(int(i) for i in np.argwhere(den[..., 0] == 0)[0])
        raise ValueError(f"{what}: {argument}={mode!r} divides by zero at index {idx} (the {mode} of that vector is 0)")
    return x / den


def _check_scale(scale) -> float:
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a real number (it multiplies q), got {type(scale).__name__} {scale!r}")
    if not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number, got {scale!r}")
    return float(scale)


def validate_delta(q, k, v, beta, *, decay=None, initial_state=None, key_norm=None, query_norm=None, scale=1.0,
                   return_final_state=False):
    """Validate every argument of a delta-rule view.

    Returns ``(q, k, v, beta, decay, S0, return_final_state, dims)`` in the working dtype: ``k`` and ``q``
    normalized (``key_norm``, ``query_norm``) and ``q`` multiplied by ``scale``; ``decay`` or None;
    ``S0 (b h p n)`` a writable copy (zeros when not given); ``dims = (b, l, h, n, p)``.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    scale = _check_scale(scale)
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    b, l, h, n = k.shape
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    check_shape(q, "q", (b, l, h, n), "(b, l, h, n) like k")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, l, h, None), "(b, l, h, p) with b, l, h from k")
    p = v.shape[3]
    beta = as_float_array(beta, "beta", ndim=3, allow_complex=False)
    check_shape(beta, "beta", (b, l, h), "(b, l, h)")
    if decay is not None:
        decay = as_float_array(decay, "decay", ndim=3, allow_complex=False)
        check_shape(decay, "decay", (b, l, h), "(b, l, h)")
        bad = (decay <= 0) | (decay > 1)
        if np.any(bad):
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"decay: expected values in (0, 1], got {decay[idx]} at index {idx}")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=4, allow_complex=False)
        check_shape(initial_state, "initial_state", (b, h, p, n), "(b, h, p, n) (VxK layout)",
                    src="b, h, n from k, p from v")
    dt = result_dtype(q, k, v, beta, decay, initial_state)
    c = lambda a: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    k = normalize_vectors(c(k), key_norm, "key_norm", "k")
    q = normalize_vectors(c(q), query_norm, "query_norm", "q")
    if scale != 1.0:
        # q_t <- scale q_t  (after the query normalization)
        q = q * dt.type(scale)
    S0 = np.zeros((b, h, p, n), dtype=dt) if initial_state is None else initial_state.astype(dt)  # a copy
    return q, k, c(v), c(beta), c(decay), S0, return_final_state, (b, l, h, n, p)


def recurrent(q, k, v, beta, *, decay=None, initial_state=None, key_norm=None, query_norm=None, scale: float = 1.0,
              return_final_state: bool = False):
    r"""The literal (gated) delta rule recurrence; see the module docstring."""
    q, k, v, beta, decay, S_t, return_final_state, (b, l, h, n, p) = validate_delta(
        q, k, v, beta, decay=decay, initial_state=initial_state, key_norm=key_norm, query_norm=query_norm,
        scale=scale, return_final_state=return_final_state)
    o = np.zeros((b, l, h, p), dtype=q.dtype)
    for t in range(l):
        if decay is not None:
            # alpha_t S_{t-1}
            S_t = decay[:, t, :, None, None] * S_t
        # v'_t = alpha_t S_{t-1} k_t
        v_old = np.einsum("bhpn,bhn->bhp", S_t, k[:, t])
        # S_t = alpha_t S_{t-1} + beta_t (v_t - v'_t) k_t^T
        S_t = S_t + (beta[:, t, :, None] * (v[:, t] - v_old))[..., None] * k[:, t, :, None, :]
        # o_t = S_t q_t
        o[:, t] = np.einsum("bhpn,bhn->bhp", S_t, q[:, t])
    return (o, S_t) if return_final_state else o


def chunked(q, k, v, beta, *, decay=None, initial_state=None, key_norm=None, query_norm=None, scale: float = 1.0,
            return_final_state: bool = False, chunk: int = 64):
    r"""Chunked (gated) delta rule in the WY representation, one triangular solve per chunk and head."""
    chunk = check_int(chunk, "chunk", minimum=1)
    q, k, v, beta, decay, S, return_final_state, (b, l, h, n, p) = validate_delta(
        q, k, v, beta, decay=decay, initial_state=initial_state, key_norm=key_norm, query_norm=query_norm,
        scale=scale, return_final_state=return_final_state)
    dt = q.dtype
    o = np.zeros((b, l, h, p), dtype=dt)
    for t0 in range(0, l, chunk):
        T = min(chunk, l - t0)
        for bi in range(b):
            for hi in range(h):
                Q = q[bi, t0:t0 + T, hi]  # (T n)
                K = k[bi, t0:t0 + T, hi]  # (T n)
                V = v[bi, t0:t0 + T, hi]  # (T p)
                bet = beta[bi, t0:t0 + T, hi]  # (T,)
                S0c = S[bi, hi]  # (p n)
                # g_t = sum_{i<=t} log alpha_i ;  Gamma_ti = exp(g_t - g_i) for i <= t
                g = np.zeros(T, dtype=dt) if decay is None else np.cumsum(np.log(decay[bi, t0:t0 + T, hi]))
                Gamma = np.exp(np.tril(g[:, None] - g[None, :]))
                KK = K @ K.T
                strict = np.tril(np.ones((T, T), dtype=dt), -1)
                # (I + tril(diag(beta) K K^T, -1)) W = diag(beta) K
                T_w = np.eye(T, dtype=dt) + bet[:, None] * KK * strict
                W = solve_triangular(T_w, bet[:, None] * K, lower=True, unit_diagonal=True)
                # (I + tril(diag(beta) (Gamma o K K^T), -1)) U = diag(beta) V
                T_u = np.eye(T, dtype=dt) + bet[:, None] * Gamma * KK * strict
                U = solve_triangular(T_u, bet[:, None] * V, lower=True, unit_diagonal=True)
                gamma = np.exp(g)
                QK = np.tril(Q @ K.T)
                # O = diag(gamma) (Q S_0^T - tril(Q K^T) (W S_0^T)) + (Gamma o tril(Q K^T)) U
                o[bi, t0:t0 + T, hi] = gamma[:, None] * (Q @ S0c.T - QK @ (W @ S0c.T)) + (Gamma * QK) @ U
                # S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(gamma_{T-1}/gamma) K
                S[bi, hi] = gamma[-1] * (S0c - (S0c @ W.T) @ K) + (U * Gamma[-1][:, None]).T @ K
    return (o, S) if return_final_state else o
