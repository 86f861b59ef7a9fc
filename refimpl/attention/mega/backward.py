r"""The backward pass of the Mega layer: the vector-Jacobian product, written literally (no autodiff).

The forward (:mod:`refimpl.attention.mega.reference`)::

    X' = EMA(X) [+ rev(EMA_bwd(rev X))],   Z = SiLU(A_z),  A_z = X' W_z + b_z,   Q = kappa_q Z + mu_q,  K = kappa_k Z + mu_k
    V = SiLU(A_v), A_v = X W_v + b_v,   gamma = SiLU(A_g), A_g = X' W_gamma + b_gamma,   phi = sigmoid(A_phi)
    O = f(S) V  (S = s Q K^T + b_rel on the keep sets),   H = SiLU(A_h), A_h = X' W_h + (gamma O) U_h + b_h
    Y = phi H + (1 - phi) X

Given the cotangent ``dy`` of ``Y`` (a real loss ``L = sum dy * Y``), the adjoint equations, in reverse order::

    dphi = dy (H - X),  dH = dy phi,  dX += dy (1 - phi)
    dA_h = dH SiLU'(A_h);  dW_h = X'^T dA_h,  dU_h = (gamma O)^T dA_h,  db_h = sum dA_h,  dX' += dA_h W_h^T
    d(gamma O) = dA_h U_h^T:  dgamma = d(gamma O) O,  dO = d(gamma O) gamma
    dA_g = dgamma SiLU'(A_g),  dA_phi = dphi phi (1 - phi)   (their W, b, and dX' += dA W^T)
    attention: dP = dO V^T, dV = P^T dO;  softmax dS = P (dP - sum_j P dP);  laplace dS = dP f'(S),
               f'(s) = exp(-(s - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi));  relu2 dS = dP 2 relu(S)   (kept pairs)
               dQ = s_i dS K,  dK = (s_i dS)^T Q,  drel_bias[m - 1 + j - i] += dS_ij
    dZ = kappa_q dQ + kappa_k dK,  dkappa_q = sum Z dQ,  dmu_q = sum dQ  (and K alike)
    dA_z = dZ SiLU'(A_z),  dA_v = dV SiLU'(A_v)   (their W, b;  dX' += dA_z W_z^T,  dX += dA_v W_v^T)
    SiLU'(a) = sigmoid(a) (1 + a (1 - sigmoid(a)))

and the EMA's adjoint, **a reverse scan** (``h_t = alpha beta x_t + q h_{t-1}``, ``q = 1 - alpha delta``,
``X'_t = eta^T h_t``)::

    lambda_t = eta dX'_t + q lambda_{t+1}      (lambda_L = 0; carried from the last position back)
    dX_t += sum_e alpha beta lambda_t,   dalpha = sum lambda_t (beta x_t - delta h_{t-1}),
    ddelta = - sum alpha lambda_t h_{t-1},  dbeta = sum alpha lambda_t x_t,  deta = sum h_t dX'_t

The bidirectional EMA runs the same adjoint on the reversed sequence with the backward parameters.  One view,
``"full"`` (the masked ``(l l)`` scores).  Conventions as the forward (``scale=None``: ``n^{-1/2}`` for softmax,
``1/len_i`` for laplace / relu2; the keep sets of ``chunk`` and ``causal``).  Real inputs; the computation runs in
``result_dtype`` of the inputs and ``dy``, every gradient in it.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from refimpl._validate import result_dtype
from refimpl.attention.linformer.backward import check_cotangent
from refimpl.attention.mega.reference import (LAPLACE_MU, LAPLACE_SIGMA, _validate, keep_set_mask, laplace,
                                              relative_bias, relu2, sigmoid)

__all__ = ["full_vjp"]


def _silu_grad(a):
    r"""``SiLU'(a) = sigmoid(a) (1 + a (1 - sigmoid(a)))``."""
    s = sigmoid(a)
    return s * (1.0 + a * (1.0 - s))


def _ema_forward(x, alpha, delta, beta, eta):
    """The states ``h_t (l+1, b, d, e)`` (``h_{-1} = 0`` first) and ``X' (b l d)``."""
    b, L, d = x.shape
    hs = np.zeros((L + 1, b, d, alpha.shape[1]), dtype=x.dtype)
    for t in range(L):
        # h_t = alpha (beta x_t) + (1 - alpha delta) h_{t-1}
        hs[t + 1] = alpha * (beta * x[:, t, :, None]) + (1.0 - alpha * delta) * hs[t]
    return hs, np.einsum("de,lbde->bld", eta, hs[1:])


def _ema_vjp(x, alpha, delta, beta, eta, dXp):
    r"""The EMA's adjoint, a reverse scan (module docstring): ``(dx, dalpha, ddelta, dbeta, deta)``."""
    b, L, d = x.shape
    hs, _ = _ema_forward(x, alpha, delta, beta, eta)
    q = 1.0 - alpha * delta
    lam = np.zeros((b, d, alpha.shape[1]), dtype=x.dtype)
    dx = np.zeros_like(x)
    dalpha, ddelta, dbeta, deta = (np.zeros_like(alpha) for _ in range(4))
    for t in range(L - 1, -1, -1):
        # lambda_t = eta dX'_t + q lambda_{t+1}
        lam = eta * dXp[:, t, :, None] + q * lam
        xt = x[:, t, :, None]
        # dX_t = sum_e alpha beta lambda_t
        dx[:, t] = np.sum(alpha * beta * lam, axis=-1)
        # dalpha += lambda_t (beta x_t - delta h_{t-1});  ddelta += -alpha lambda_t h_{t-1}
        dalpha += np.sum(lam * (beta * xt - delta * hs[t]), axis=0)
        ddelta += np.sum(-alpha * lam * hs[t], axis=0)
        # dbeta += alpha lambda_t x_t ;  deta += h_t dX'_t
        dbeta += np.sum(alpha * lam * xt, axis=0)
        deta += np.sum(hs[t + 1] * dXp[:, t, :, None], axis=0)
    return dx, dalpha, ddelta, dbeta, deta


def full_vjp(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma, W_phi,
             b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None, eta_bwd=None, *,
             dy, chunk: Optional[int] = None, causal: bool = False, attention: str = "softmax",
             scale: Optional[float] = None) -> Dict[str, np.ndarray]:
    r"""The VJP of the Mega layer (the module docstring's adjoint equations), the ``full`` view.

    Arguments as :func:`refimpl.attention.mega.reference.full`; ``dy (b l d)`` the cotangent of ``Y`` -> a dict with
    the gradient of ``x`` and of every parameter given (``rel_bias`` and the backward EMA only when given).
    """
    params = {k: v for k, v in locals().items() if k not in ("x", "dy", "chunk", "causal", "attention", "scale")}
    x, P, chunk, causal, scale = _validate(x, params, chunk, causal, attention, scale)
    b, L, d = x.shape
    dy = check_cotangent(dy, "dy", (b, L, d), "b l d", "b, l, d from x")
    dt = result_dtype(x, dy, *P.values())
    x, dy = x.astype(dt, copy=False), dy.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in P.items()}
    n, p = P["W_z"].shape[1], P["W_v"].shape[1]
    # forward recomputation
    _, Xp = _ema_forward(x, P["alpha"], P["delta"], P["beta"], P["eta"])
    bidir = "alpha_bwd" in P
    if bidir:
        _, Xr = _ema_forward(x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"])
        Xp = Xp + Xr[:, ::-1]
    A_z = Xp @ P["W_z"] + P["b_z"]
    Z = A_z * sigmoid(A_z)
    Q, K = P["kappa_q"] * Z + P["mu_q"], P["kappa_k"] * Z + P["mu_k"]
    A_v = x @ P["W_v"] + P["b_v"]
    V = A_v * sigmoid(A_v)
    A_g = Xp @ P["W_gamma"] + P["b_gamma"]
    gamma = A_g * sigmoid(A_g)
    phi = sigmoid(Xp @ P["W_phi"] + P["b_phi"])
    keep = keep_set_mask(L, chunk, causal)
    if attention == "softmax":
        s_i = np.full((L, 1), (n ** -0.5) if scale is None else scale, dtype=dt)
    else:
        s_i = (1.0 / np.maximum(np.sum(keep, axis=1), 1).astype(dt))[:, None] if scale is None else \
            np.full((L, 1), scale, dtype=dt)
    S = s_i * np.einsum("bin,bjn->bij", Q, K)
    if "rel_bias" in P:
        S = S + relative_bias(P["rel_bias"], L, L, keep)
    if attention == "softmax":
        Sm = np.where(keep, S, -np.inf)
        m = np.max(Sm, axis=-1, keepdims=True) if L else np.zeros((b, L, 1), dtype=dt)
        E = np.where(keep, np.exp(Sm - m), 0.0)
        Pm = E / np.sum(E, axis=-1, keepdims=True)
    else:
        Pm = np.where(keep, (laplace if attention == "laplace" else relu2)(S), 0.0)
    O = np.einsum("bij,bjp->bip", Pm, V)
    GO = gamma * O
    A_h = Xp @ P["W_h"] + GO @ P["U_h"] + P["b_h"]
    H = A_h * sigmoid(A_h)
    g = {}
    # dphi = dy (H - X),  dH = dy phi,  dX = dy (1 - phi)
    dphi, dH, dx = dy * (H - x), dy * phi, dy * (1.0 - phi)
    # dA_h = dH SiLU'(A_h)
    dA_h = dH * _silu_grad(A_h)
    g["W_h"], g["U_h"], g["b_h"] = np.einsum("bld,ble->de", Xp, dA_h), np.einsum("blp,ble->pe", GO, dA_h), \
        dA_h.sum(axis=(0, 1))
    dXp = dA_h @ P["W_h"].T
    # d(gamma O) = dA_h U_h^T:  dgamma = d(gamma O) O,  dO = d(gamma O) gamma
    dGO = dA_h @ P["U_h"].T
    dgamma, dO = dGO * O, dGO * gamma
    # dA_g = dgamma SiLU'(A_g);  dA_phi = dphi phi (1 - phi)
    dA_g = dgamma * _silu_grad(A_g)
    dA_phi = dphi * phi * (1.0 - phi)
    for name, bname, dA in (("W_gamma", "b_gamma", dA_g), ("W_phi", "b_phi", dA_phi)):
        g[name], g[bname] = np.einsum("bld,ble->de", Xp, dA), dA.sum(axis=(0, 1))
        dXp = dXp + dA @ P[name].T
    # attention: dP = dO V^T,  dV = P^T dO
    dP = np.einsum("bip,bjp->bij", dO, V)
    dV = np.einsum("bij,bip->bjp", Pm, dO)
    if attention == "softmax":
        # dS = P (dP - sum_j P dP)
        dS = Pm * (dP - np.sum(Pm * dP, axis=-1, keepdims=True))
    elif attention == "laplace":
        # f'(s) = exp(-(s - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi))
        fp = np.exp(-((S - LAPLACE_MU) ** 2) / (2.0 * LAPLACE_SIGMA ** 2)) / (LAPLACE_SIGMA * math.sqrt(2.0 * math.pi))
        dS = np.where(keep, dP * fp, 0.0)
    else:
        # relu^2' = 2 relu(s)
        dS = np.where(keep, dP * 2.0 * np.maximum(S, 0.0), 0.0)
    # dQ = s_i dS K ;  dK = (s_i dS)^T Q
    dQ = np.einsum("bij,bjn->bin", s_i * dS, K)
    dK = np.einsum("bij,bin->bjn", s_i * dS, Q)
    if "rel_bias" in P:
        mb = (P["rel_bias"].shape[0] + 1) // 2
        i, j = np.nonzero(keep)
        drb = np.zeros_like(P["rel_bias"])
        # drel_bias[m - 1 + j - i] += dS_ij
        np.add.at(drb, mb - 1 + (j - i), dS.sum(axis=0)[i, j])
        g["rel_bias"] = drb
    # dZ = kappa_q dQ + kappa_k dK
    dZ = P["kappa_q"] * dQ + P["kappa_k"] * dK
    g["kappa_q"], g["mu_q"] = np.einsum("bln,bln->n", Z, dQ), dQ.sum(axis=(0, 1))
    g["kappa_k"], g["mu_k"] = np.einsum("bln,bln->n", Z, dK), dK.sum(axis=(0, 1))
    # dA_z = dZ SiLU'(A_z) ;  dA_v = dV SiLU'(A_v)
    dA_z = dZ * _silu_grad(A_z)
    dA_v = dV * _silu_grad(A_v)
    g["W_z"], g["b_z"] = np.einsum("bld,ble->de", Xp, dA_z), dA_z.sum(axis=(0, 1))
    dXp = dXp + dA_z @ P["W_z"].T
    g["W_v"], g["b_v"] = np.einsum("bld,ble->de", x, dA_v), dA_v.sum(axis=(0, 1))
    dx = dx + dA_v @ P["W_v"].T
    # the EMA's adjoint (a reverse scan); the bidirectional part on the reversed sequence
    dxe, g["alpha"], g["delta"], g["beta"], g["eta"] = _ema_vjp(x, P["alpha"], P["delta"], P["beta"], P["eta"], dXp)
    dx = dx + dxe
    if bidir:
        dxr, g["alpha_bwd"], g["delta_bwd"], g["beta_bwd"], g["eta_bwd"] = _ema_vjp(
            x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"], dXp[:, ::-1])
        dx = dx + dxr[:, ::-1]
    g["x"] = dx
    return {k: np.asarray(v, dtype=dt) for k, v in g.items()}
