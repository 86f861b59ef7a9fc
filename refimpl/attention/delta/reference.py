r"""The delta rule (Schlag et al. 2021) and the gated delta rule, recurrent and chunked (WY form).

Update (state ``S`` in the VxK layout, ``(b h e n)``, as in the text)::

    v'_t = S_{t-1} k_t                                  (retrieve what k_t currently reads)
    S_t  = alpha_t S_{t-1} + beta_t (v_t - alpha_t S_{t-1} k_t) k_t^T
         = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T
    o_t  = S_t q_t

``alpha_t = 1`` (``alpha=None``) is the plain delta rule, ``S_t = S_{t-1} + beta_t (v_t - v'_t) k_t^T``;
``alpha_t in (0, 1]`` is the gated delta rule (Yang et al. 2024, Gated DeltaNet).
``beta_t = sigmoid(W_beta x_t)`` (:func:`beta_from_inputs`).  ``k``, ``q`` are the (already
feature-mapped, e.g. ``phi(k_t)``) keys and queries.  Stability of the plain rule needs
``0 <= beta_t |k_t|^2 <= 2``; nothing here enforces it (it is a model property).

Shapes: ``q, k (b l h n)``, ``v (b l h e)``, ``beta, alpha (b l h)``, ``S0 (b h e n)``; ``o (b l h e)``.

Key normalization (``key_norm=``, applied to ``k`` before anything else; ``query_norm=`` for ``q``):
``None``; ``"sum"`` -- ``k / sum_i k_i`` (Schlag et al.'s sum normalization, for positive features);
``"l2"`` -- ``k / |k|_2``.

Chunked WY form (Yang et al. 2024)
----------------------------------
For a chunk entered with state ``S_0``, positions ``t = 0..T-1``, ``g_t = sum_{i<=t} log alpha_i``,
``gamma_t = exp(g_t)``.  The product ``P_t = prod_{i<=t} (I - beta_i k_i k_i^T) = I - sum_{i<=t} w_i k_i^T``
(the WY representation) with

* ``w_t = beta_t (k_t - sum_{i<t} (k_i^T k_t) w_i)``  -- i.e. ``(I + tril(diag(beta) K K^T, -1)) W = diag(beta) K``,
* ``u_t = beta_t (v_t - sum_{i<t} (gamma_t/gamma_i) (k_i^T k_t) u_i)``  --
  ``(I + tril(diag(beta) (Gamma o K K^T), -1)) U = diag(beta) V``, ``Gamma_ti = exp(g_t - g_i)``,

each solved by **one unit-lower-triangular solve per chunk**.  Then

* ``S_t = gamma_t S_0 (I - sum_{i<=t} w_i k_i^T) + sum_{i<=t} (gamma_t/gamma_i) u_i k_i^T``
* ``O = diag(gamma) (Q S_0^T - tril(Q K^T) (W S_0^T)) + (Gamma o tril(Q K^T)) U``
* ``S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(gamma_{T-1}/gamma) K``.

All decay ratios ``gamma_t/gamma_i`` (``i <= t``) are formed as ``exp(g_t - g_i) <= 1`` in log space.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.linalg import solve_triangular

from refimpl._validate import as_float_array, check_choice, check_int, check_shape, result_dtype

__all__ = ["beta_from_inputs", "normalize_vectors", "delta_recurrent", "delta_chunked", "validate_delta"]

KEY_NORMS = (None, "sum", "l2")


def beta_from_inputs(x, W_beta) -> np.ndarray:
    r"""``beta_t = sigmoid(W_beta x_t)``; ``x (b l h r)``, ``W_beta (h r)`` -> ``(b l h)``.

    Stable sigmoid: ``1/(1+exp(-z))`` for ``z >= 0``, ``exp(z)/(1+exp(z))`` for ``z < 0``.
    """
    x = as_float_array(x, "x", ndim=4, allow_complex=False)
    W_beta = as_float_array(W_beta, "W_beta", ndim=2, allow_complex=False)
    check_shape(W_beta, "W_beta", (x.shape[2], x.shape[3]), "(h, r) from x")
    z = np.einsum("hr,blhr->blh", W_beta, x)
    ez = np.exp(-np.abs(z))
    # sigmoid(z) = 1/(1+e^{-z}) (z >= 0), e^{z}/(1+e^{z}) (z < 0)
    return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def normalize_vectors(x, mode, name="k") -> np.ndarray:
    """``x / sum_i x_i`` (``mode="sum"``), ``x / |x|_2`` (``"l2"``) along the last axis, or ``x`` (None)."""
    if mode not in KEY_NORMS:
        raise ValueError(f"{name}_norm: expected one of None, 'sum', 'l2', got {mode!r}")
    if mode is None:
        return x
    den = np.sum(x, axis=-1, keepdims=True) if mode == "sum" else np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(den == 0):
        idx = tuple(int(i) for i in np.argwhere(den[..., 0] == 0)[0])
        raise ValueError(f"{name}: {mode} normalization divides by zero at index {idx} (the {mode} of that vector is 0)")
    return x / den


def validate_delta(q, k, v, beta, alpha=None, S0=None, *, key_norm=None, query_norm=None):
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    b, l, h, n = k.shape
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    check_shape(q, "q", (b, l, h, n), "(b, l, h, n) like k")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, l, h, None), "(b, l, h, e) with b, l, h from k")
    e = v.shape[3]
    beta = as_float_array(beta, "beta", ndim=3, allow_complex=False)
    check_shape(beta, "beta", (b, l, h), "(b, l, h)")
    if alpha is not None:
        alpha = as_float_array(alpha, "alpha", ndim=3, allow_complex=False)
        check_shape(alpha, "alpha", (b, l, h), "(b, l, h)")
        if np.any(alpha <= 0) or np.any(alpha > 1):
            bad = alpha[(alpha <= 0) | (alpha > 1)][0]
            raise ValueError(f"alpha: expected decays in (0, 1], got {bad}")
    if S0 is not None:
        S0 = as_float_array(S0, "S0", ndim=4, allow_complex=False)
        check_shape(S0, "S0", (b, h, e, n), "(b, h, e, n) (VxK layout)")
    dt = result_dtype(q, k, v, beta, alpha, S0)
    c = lambda a: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    k = normalize_vectors(c(k), key_norm, "k")
    q = normalize_vectors(c(q), query_norm, "q")
    return q, k, c(v), c(beta), c(alpha), c(S0), dict(b=b, l=l, h=h, n=n, e=e)


def delta_recurrent(q, k, v, beta, *, alpha=None, S0=None, key_norm=None, query_norm=None,
                    return_state: bool = False):
    r"""The literal (gated) delta rule recurrence; see the module docstring."""
    q, k, v, beta, alpha, S0, d = validate_delta(q, k, v, beta, alpha, S0, key_norm=key_norm, query_norm=query_norm)
    b, l, h, n, e = d["b"], d["l"], d["h"], d["n"], d["e"]
    S_t = np.zeros((b, h, e, n), dtype=q.dtype) if S0 is None else S0.copy()
    o = np.zeros((b, l, h, e), dtype=q.dtype)
    for t in range(l):
        if alpha is not None:
            # alpha_t S_{t-1}
            S_t = alpha[:, t, :, None, None] * S_t
        # v'_t = (alpha_t) S_{t-1} k_t
        v_old = np.einsum("bhen,bhn->bhe", S_t, k[:, t])
        # S_t = alpha_t S_{t-1} + beta_t (v_t - v'_t) k_t^T
        S_t = S_t + (beta[:, t, :, None] * (v[:, t] - v_old))[..., None] * k[:, t, :, None, :]
        # o_t = S_t q_t
        o[:, t] = np.einsum("bhen,bhn->bhe", S_t, q[:, t])
    return (o, S_t) if return_state else o


def delta_chunked(q, k, v, beta, *, alpha=None, S0=None, chunk: int = 64, key_norm=None, query_norm=None,
                  return_state: bool = False):
    r"""Chunked (gated) delta rule in the WY representation, one triangular solve per chunk and head."""
    chunk = check_int(chunk, "chunk", minimum=1)
    q, k, v, beta, alpha, S0, d = validate_delta(q, k, v, beta, alpha, S0, key_norm=key_norm, query_norm=query_norm)
    b, l, h, n, e = d["b"], d["l"], d["h"], d["n"], d["e"]
    dt = q.dtype
    S = np.zeros((b, h, e, n), dtype=dt) if S0 is None else S0.copy()
    o = np.zeros((b, l, h, e), dtype=dt)
    for s in range(0, l, chunk):
        T = min(chunk, l - s)
        for bi in range(b):
            for hi in range(h):
                Q = q[bi, s:s + T, hi]  # (T n)
                K = k[bi, s:s + T, hi]  # (T n)
                V = v[bi, s:s + T, hi]  # (T e)
                bet = beta[bi, s:s + T, hi]  # (T,)
                S0c = S[bi, hi]  # (e n)
                # g_t = sum_{i<=t} log alpha_i ;  Gamma_ti = exp(g_t - g_i) for i <= t
                g = np.zeros(T, dtype=dt) if alpha is None else np.cumsum(np.log(alpha[bi, s:s + T, hi]))
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
                o[bi, s:s + T, hi] = gamma[:, None] * (Q @ S0c.T - QK @ (W @ S0c.T)) + (Gamma * QK) @ U
                # S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(gamma_{T-1}/gamma) K
                S[bi, hi] = gamma[-1] * (S0c - (S0c @ W.T) @ K) + (U * Gamma[-1][:, None]).T @ K
    return (o, S) if return_state else o
