r"""The backward pass (vector-Jacobian products) of the delta rule and the gated delta rule, written by hand.

Forward (:mod:`refimpl.attention.delta.reference`; after ``k <- knorm(k)``, ``q <- scale qnorm(q)``), state
``S (b h p n)`` (V x K), ``S_{-1} = S_0`` (``initial_state``), ``t = 0..L-1``::

    A_t = alpha_t S_{t-1}                  (the decayed state)
    r_t = v_t - A_t k_t                    (the residual the step writes)
    S_t = A_t + beta_t r_t k_t^T           (= alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T)
    o_t = S_t q_t

Given the cotangents ``do`` of ``o`` and ``d_final_state`` of ``S_{L-1}`` (zero when not given), for a real loss
``L``, ``dX = dL/dX``.  **The adjoint of the scan is itself a reverse scan** (``t = L-1 .. 0``), ``dS_t`` the total
gradient of the state after step ``t`` (``dS_{L-1} = d_final_state`` before step ``L-1``'s output term)::

    dS_t     += do_t q_t^T                             (o_t = S_t q_t)
    dq_t      = S_t^T do_t
    dv_t      = beta_t dS_t k_t
    dbeta_t   = (dS_t k_t) . r_t
    dk_t      = beta_t (dS_t^T r_t - A_t^T dS_t k_t)
    dA_t      = dS_t (I - beta_t k_t k_t^T)
    dalpha_t  = <dA_t, S_{t-1}>                        (Frobenius inner product)
    dS_{t-1}  = alpha_t dA_t                           (dinitial_state = dS_{-1})

Through the normalizations (``x`` the raw vector, ``xh`` the normalized one, ``dxh`` its gradient)::

    l2:   xh = x / |x|       dx = (dxh - xh (xh . dxh)) / |x|      = (I - xh xh^T) dxh / |x|
    sum:  xh = x / sum(x)    dx = (dxh - (xh . dxh) 1) / sum(x)
    and the scale: dqnorm = scale dq.

The chunked view (:func:`chunked_vjp`) differentiates the WY form of the forward's chunked view (the reference's
module docstring) chunk by chunk in reverse order: the inter-chunk **reverse state-gradient scan** carries
``dS`` (the gradient of the state leaving a chunk) backwards, each chunk recomputes its forward quantities from
its entering state ``S_0`` (kept from a forward pass) and returns ``dS_0``.  Within a chunk the unit-lower-
triangular systems ``A_w W = diag(beta) K``, ``A_u U = diag(beta) V`` are differentiated through the transposed
(upper-triangular) solves ``A^T dB = dW`` (``solve_triangular``, never an inverse): ``dB = A^{-T} dW``,
``dA = -dB W^T`` (its strictly lower part: the only entries of ``A`` that depend on the inputs).  The gated
rule's decays enter as the log-space cumulative sums ``g_t = sum_{i<=t} log alpha_i``: every ratio is
``exp(g_t - g_i) <= 1``; ``dlog alpha_i = sum_{t>=i} dg_t`` (a reverse cumulative sum), ``dalpha = dlog alpha / alpha``.

Shapes: ``q, k (b l h n)``, ``v (b l h p)``, ``beta, decay (b l h)``, ``initial_state (b h p n)``;
cotangents ``do (b l h p)``, ``d_final_state (b h p n)``.  Returns a dict ``{argument: gradient}`` for every
differentiable argument given: ``q, k, v, beta`` always, ``decay`` and ``initial_state`` when not None; each
gradient has its argument's shape and the working dtype of every float input and cotangent
(:func:`refimpl._validate.result_dtype`: float32 only when all are float32; so the argument's own dtype whenever
they share one; a float32 argument among float64 ones gets a float64 gradient: never a silent downcast).
Real inputs only: the delta rule has no complex convention.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from refimpl._validate import as_float_array, check_int, check_shape, result_dtype
from refimpl.attention.delta.reference import normalize_vectors, validate_delta

__all__ = ["recurrent_vjp", "chunked_vjp"]  # chunk_vjp, prepare_vjp, finish_vjp, normalization_vjp: building blocks of
# the two views (and the Numba kernel), called on arrays the views have validated; not public API


def prepare_vjp(q, k, v, beta, do, d_final_state, decay, initial_state, key_norm, query_norm, scale):
    """Validate the arguments and the cotangents; returns ``(prep, work)``.

    ``work = (qh, kh, v, beta, decay, S0, do, dSL)`` in the working dtype (``qh = scale qnorm(q)``,
    ``kh = knorm(k)``; ``dSL`` zeros when ``d_final_state`` is None); ``prep`` keeps what
    :func:`finish_vjp` needs (the raw float arrays, the options, the dims).
    """
    qh, kh, v_, beta_, decay_, S0, _, dims = validate_delta(
        q, k, v, beta, decay=decay, initial_state=initial_state, key_norm=key_norm, query_norm=query_norm,
        scale=scale)
    b, l, h, n, p = dims
    do = as_float_array(do, "do", ndim=4, allow_complex=False)
    check_shape(do, "do", (b, l, h, p), "(b, l, h, p) like o", src="b, l, h, n from k, p from v")
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=4, allow_complex=False)
        check_shape(d_final_state, "d_final_state", (b, h, p, n), "(b, h, p, n) like the final state",
                    src="b, h, n from k, p from v")
    raw = {name: as_float_array(x, name, allow_complex=False)
           for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta), ("decay", decay),
                           ("initial_state", initial_state)) if x is not None}
    dt = result_dtype(qh, do, d_final_state)
    if dt != qh.dtype:  # a float64 cotangent with float32 inputs: the whole computation in float64
        cast = {nm: a.astype(dt) for nm, a in raw.items()}
        qh, kh, v_, beta_, decay_, S0, _, _ = validate_delta(
            cast["q"], cast["k"], cast["v"], cast["beta"], decay=cast.get("decay"),
            initial_state=cast.get("initial_state"), key_norm=key_norm, query_norm=query_norm, scale=scale)
    dSL = np.zeros((b, h, p, n), dtype=dt) if d_final_state is None else d_final_state.astype(dt)
    prep = dict(raw=raw, key_norm=key_norm, query_norm=query_norm, scale=float(scale), dims=dims, dt=dt)
    return prep, (qh, kh, v_, beta_, decay_, S0, do.astype(dt), dSL)


def normalization_vjp(x, dxh, mode):
    r"""The gradient through ``xh = norm(x)`` along the last axis (``x``: the raw vectors, working dtype).

    ``l2``: ``dx = (dxh - xh (xh . dxh)) / |x|`` (the projection ``(I - xh xh^T) / |x|``);
    ``sum``: ``dx = (dxh - (xh . dxh)) / sum(x)``; ``None``: ``dx = dxh``.
    """
    if mode is None:
        return dxh
    xh = normalize_vectors(x, mode)
    den = np.linalg.norm(x, axis=-1, keepdims=True) if mode == "l2" else np.sum(x, axis=-1, keepdims=True)
    dot = np.sum(xh * dxh, axis=-1, keepdims=True)
    if mode == "l2":
        # dx = (I - xh xh^T) dxh / |x|
        return (dxh - xh * dot) / den
    # dx = (dxh - (xh . dxh) 1) / sum(x)
    return (dxh - dot) / den


def finish_vjp(prep, dqh, dkh, dv, dbeta, ddecay, dS0):
    """The gradients of the raw arguments: through the scale and the normalizations, in the working dtype."""
    raw, dt = prep["raw"], prep["dt"]
    # qh = scale qnorm(q): dqnorm = scale dqh
    dqn = dqh * dt.type(prep["scale"]) if prep["scale"] != 1.0 else dqh
    out = {"q": normalization_vjp(raw["q"].astype(dt), dqn, prep["query_norm"]),
           "k": normalization_vjp(raw["k"].astype(dt), dkh, prep["key_norm"]),
           "v": dv, "beta": dbeta}
    if "decay" in raw:
        out["decay"] = ddecay
    if "initial_state" in raw:
        out["initial_state"] = dS0
    return {name: np.asarray(g).astype(dt, copy=False) for name, g in out.items()}


def recurrent_vjp(q, k, v, beta, *, do, d_final_state=None, decay=None, initial_state=None, key_norm=None,
                  query_norm=None, scale: float = 1.0):
    r"""VJP of :func:`refimpl.attention.delta.reference.recurrent`: the reverse scan of the module docstring.

    A forward pass keeps every ``S_{t-1}`` (``(l b h p n)``); the reverse scan then runs ``t = L-1 .. 0``.
    """
    prep, (q, k, v, beta, decay, S0, do, dS_t) = prepare_vjp(
        q, k, v, beta, do, d_final_state, decay, initial_state, key_norm, query_norm, scale)
    b, l, h, n, p = prep["dims"]
    dt = prep["dt"]
    alpha = np.ones((b, l, h), dtype=dt) if decay is None else decay
    # forward: S_prev[t] = S_{t-1}
    S_prev = np.empty((l, b, h, p, n), dtype=dt)
    S = S0
    for t in range(l):
        S_prev[t] = S
        A_t = alpha[:, t, :, None, None] * S
        r_t = v[:, t] - np.einsum("bhpn,bhn->bhp", A_t, k[:, t])
        S = A_t + (beta[:, t, :, None] * r_t)[..., None] * k[:, t, :, None, :]
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    dbeta, dalpha = np.zeros_like(beta), np.zeros((b, l, h), dtype=dt)
    for t in range(l - 1, -1, -1):
        k_t, q_t, beta_t = k[:, t], q[:, t], beta[:, t]
        A_t = alpha[:, t, :, None, None] * S_prev[t]
        r_t = v[:, t] - np.einsum("bhpn,bhn->bhp", A_t, k_t)
        S_t = A_t + (beta_t[..., None] * r_t)[..., None] * k_t[:, :, None, :]
        # dS_t += do_t q_t^T ;  dq_t = S_t^T do_t
        dS_t = dS_t + do[:, t, :, :, None] * q_t[:, :, None, :]
        dq[:, t] = np.einsum("bhpn,bhp->bhn", S_t, do[:, t])
        dS_k = np.einsum("bhpn,bhn->bhp", dS_t, k_t)  # dS_t k_t
        # dv_t = beta_t dS_t k_t
        dv[:, t] = beta_t[..., None] * dS_k
        # dbeta_t = (dS_t k_t) . r_t
        dbeta[:, t] = np.sum(dS_k * r_t, axis=-1)
        # dk_t = beta_t (dS_t^T r_t - A_t^T dS_t k_t)
        dk[:, t] = beta_t[..., None] * (np.einsum("bhpn,bhp->bhn", dS_t, r_t) - np.einsum("bhpn,bhp->bhn", A_t, dS_k))
        # dA_t = dS_t (I - beta_t k_t k_t^T) = dS_t - beta_t (dS_t k_t) k_t^T
        dA_t = dS_t - (beta_t[..., None] * dS_k)[..., None] * k_t[:, :, None, :]
        # dalpha_t = <dA_t, S_{t-1}>
        dalpha[:, t] = np.einsum("bhpn,bhpn->bh", dA_t, S_prev[t])
        # dS_{t-1} = alpha_t dA_t
        dS_t = alpha[:, t, :, None, None] * dA_t
    return finish_vjp(prep, dq, dk, dv, dbeta, dalpha, dS_t)


def chunk_vjp(Q, K, V, bet, g, S_0, dO, dS_T):
    r"""The adjoint of one chunk of the WY form (one batch and head); returns ``(dQ, dK, dV, dbeta, dg, dS_0)``.

    ``Q, K (T n)``, ``V (T p)``, ``bet (T,)``, ``g (T,)`` (``g_t = sum_{i<=t} log alpha_i`` within the chunk), ``S_0``
    ``(p n)`` the entering state, ``dO (T p)``, ``dS_T (p n)`` the gradient of the leaving state.  Forward::

        A_w = I + tril(diag(beta) K K^T, -1),          W = A_w^{-1} diag(beta) K
        A_u = I + tril(diag(beta) (Gamma o K K^T), -1), U = A_u^{-1} diag(beta) V,   Gamma_ti = exp(g_t - g_i)
        X   = W S_0^T,  QK = tril(Q K^T),  gamma = exp(g),  rho_i = exp(g_{T-1} - g_i)
        O   = diag(gamma) (Q S_0^T - QK X) + (Gamma o QK) U
        S_T = gamma_{T-1} (S_0 - X^T K) + (diag(rho) U)^T K
    """
    T = K.shape[0]
    dt = K.dtype
    strict = np.tril(np.ones((T, T), dtype=dt), -1)
    lower = np.tril(np.ones((T, T), dtype=dt))
    Gamma = np.exp(np.tril(g[:, None] - g[None, :])) * lower
    gamma = np.exp(g)
    rho = np.exp(g[-1] - g)
    KK = K @ K.T
    A_w = np.eye(T, dtype=dt) + bet[:, None] * KK * strict
    A_u = np.eye(T, dtype=dt) + bet[:, None] * Gamma * KK * strict
    W = solve_triangular(A_w, bet[:, None] * K, lower=True, unit_diagonal=True)
    U = solve_triangular(A_u, bet[:, None] * V, lower=True, unit_diagonal=True)
    X = W @ S_0.T
    QK = np.tril(Q @ K.T)
    Y = Q @ S_0.T - QK @ X  # O = diag(gamma) Y + (Gamma o QK) U
    # --- O = diag(gamma) (Q S_0^T - QK X) + (Gamma o QK) U
    gdO = gamma[:, None] * dO
    dgamma = np.sum(dO * Y, axis=1)                        # dgamma_t = dO_t . Y_t
    dQ = gdO @ S_0                                          # d(Q S_0^T) = diag(gamma) dO
    dS_0 = gdO.T @ Q
    dX = -QK.T @ gdO                                       # dX = -QK^T diag(gamma) dO
    dOU = (dO @ U.T) * lower                               # d(Gamma o QK) = tril(dO U^T)
    dQK = -(gdO @ X.T) * lower + Gamma * dOU               # dQK = tril(-diag(gamma) dO X^T) + Gamma o d(Gamma o QK)
    dGamma = QK * dOU
    dU = (Gamma * QK).T @ dO
    # --- S_T = gamma_{T-1} (S_0 - X^T K) + (diag(rho) U)^T K
    dgamma[-1] += np.sum(dS_T * (S_0 - X.T @ K))
    dS_0 += gamma[-1] * dS_T
    dX += -gamma[-1] * (K @ dS_T.T)                        # d<dS_T, -X^T K>/dX = -K dS_T^T
    dK = -gamma[-1] * (X @ dS_T) + (rho[:, None] * U) @ dS_T
    dUr = K @ dS_T.T                                       # d(diag(rho) U) = K dS_T^T
    dU += rho[:, None] * dUr
    drho = np.sum(dUr * U, axis=1)
    # --- X = W S_0^T
    dW = dX @ S_0
    dS_0 += dX.T @ W
    # --- QK = tril(Q K^T)
    dQ += dQK @ K
    dK += dQK.T @ Q
    # --- U = A_u^{-1} diag(beta) V:  dB_u = A_u^{-T} dU,  dA_u = -tril(dB_u U^T, -1)
    dB_u = solve_triangular(A_u, dU, lower=True, unit_diagonal=True, trans="T")
    dA_u = -(dB_u @ U.T) * strict
    dbeta = np.sum(dB_u * V, axis=1)
    dV = bet[:, None] * dB_u
    # A_u strict = beta_t Gamma_ti (K K^T)_ti
    dbeta += np.sum(dA_u * Gamma * KK, axis=1)
    dGamma += dA_u * bet[:, None] * KK
    dKK = dA_u * bet[:, None] * Gamma
    # --- W = A_w^{-1} diag(beta) K:  dB_w = A_w^{-T} dW,  dA_w = -tril(dB_w W^T, -1)
    dB_w = solve_triangular(A_w, dW, lower=True, unit_diagonal=True, trans="T")
    dA_w = -(dB_w @ W.T) * strict
    dbeta += np.sum(dB_w * K, axis=1)
    dK += bet[:, None] * dB_w
    dbeta += np.sum(dA_w * KK, axis=1)                    # A_w strict = beta_t (K K^T)_ti
    dKK += dA_w * bet[:, None]
    # --- KK = K K^T
    dK += (dKK + dKK.T) @ K
    # --- the decays: Gamma_ti = exp(g_t - g_i), gamma_t = exp(g_t), rho_i = exp(g_{T-1} - g_i)
    dGG = dGamma * Gamma
    dg = np.sum(dGG, axis=1) - np.sum(dGG, axis=0) + dgamma * gamma - drho * rho
    dg[-1] += np.sum(drho * rho)
    return dQ, dK, dV, dbeta, dg, dS_0


def chunked_vjp(q, k, v, beta, *, do, d_final_state=None, decay=None, initial_state=None, key_norm=None,
                query_norm=None, scale: float = 1.0, chunk: int = 64):
    r"""VJP of :func:`refimpl.attention.delta.reference.chunked` (the WY form), chunk size ``chunk`` (any ``L``; the
    last chunk may be short).

    A forward pass over the chunks keeps each chunk's entering state; the reverse scan over the chunks then calls
    :func:`chunk_vjp` with ``dS`` (the gradient of the state leaving the chunk) and carries its ``dS_0`` to the
    previous chunk.  ``dlog alpha`` is the reverse cumulative sum of ``dg`` within each chunk (``g`` restarts at every
    chunk), ``dalpha = dlog alpha / alpha``.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    prep, (q, k, v, beta, decay, S0, do, dSL) = prepare_vjp(
        q, k, v, beta, do, d_final_state, decay, initial_state, key_norm, query_norm, scale)
    b, l, h, n, p = prep["dims"]
    dt = prep["dt"]
    log_alpha = np.zeros((b, l, h), dtype=dt) if decay is None else np.log(decay)
    starts = list(range(0, l, chunk))
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    dbeta, dlog_alpha = np.zeros_like(beta), np.zeros((b, l, h), dtype=dt)
    dS0 = np.empty_like(S0)
    for bi in range(b):
        for hi in range(h):
            # forward over the chunks: S_enter[c] = the state entering chunk c
            S_enter = []
            S = S0[bi, hi]
            for t0 in starts:
                S_enter.append(S)
                sl = slice(t0, t0 + chunk)
                S = _chunk_state(k[bi, sl, hi], v[bi, sl, hi], beta[bi, sl, hi],
                                 np.cumsum(log_alpha[bi, sl, hi]), S)
            # the reverse state-gradient scan over the chunks
            dS = dSL[bi, hi]
            for c in range(len(starts) - 1, -1, -1):
                sl = slice(starts[c], starts[c] + chunk)
                g = np.cumsum(log_alpha[bi, sl, hi])
                dQ, dK, dV, db, dg, dS = chunk_vjp(q[bi, sl, hi], k[bi, sl, hi], v[bi, sl, hi], beta[bi, sl, hi], g,
                                                   S_enter[c], do[bi, sl, hi], dS)
                dq[bi, sl, hi], dk[bi, sl, hi], dv[bi, sl, hi], dbeta[bi, sl, hi] = dQ, dK, dV, db
                # g_t = sum_{i<=t} log alpha_i  =>  dlog alpha_i = sum_{t>=i} dg_t
                dlog_alpha[bi, sl, hi] = np.cumsum(dg[::-1])[::-1]
            dS0[bi, hi] = dS
    # log alpha = log(decay): ddecay = dlog alpha / decay
    ddecay = None if decay is None else dlog_alpha / decay
    return finish_vjp(prep, dq, dk, dv, dbeta, ddecay, dS0)


def _chunk_state(K, V, bet, g, S0):
    """The state leaving a chunk, ``S_T = gamma_{T-1} S_0 (I - W^T K) + U^T diag(rho) K`` (the forward's WY form)."""
    T = K.shape[0]
    dt = K.dtype
    strict = np.tril(np.ones((T, T), dtype=dt), -1)
    Gamma = np.exp(np.tril(g[:, None] - g[None, :]))
    KK = K @ K.T
    W = solve_triangular(np.eye(T, dtype=dt) + bet[:, None] * KK * strict, bet[:, None] * K, lower=True,
                         unit_diagonal=True)
    U = solve_triangular(np.eye(T, dtype=dt) + bet[:, None] * Gamma * KK * strict, bet[:, None] * V, lower=True,
                         unit_diagonal=True)
    return np.exp(g[-1]) * (S0 - (S0 @ W.T) @ K) + (U * np.exp(g[-1] - g)[:, None]).T @ K
