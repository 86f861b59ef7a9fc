"""refimpl.attention.mega: the Mega layer (Ma et al. 2022/2023), see README.md in this folder.

Entry point :func:`mega_layer` (views ``full`` and ``chunked``); the parameters are explicit arrays named as the
paper's symbols (:data:`PARAMETERS`).  The EMA inside is :func:`refimpl.ssm.mega_ema`, reused.
The backward: :func:`mega_layer_vjp` (view ``"full"``; the EMA's adjoint a reverse scan,
:mod:`refimpl.attention.mega.backward`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.mega.reference import ATTENTION_FUNCTIONS, PARAMETERS

__all__ = ["mega_layer", "mega_layer_vjp", "PARAMETERS", "ATTENTION_FUNCTIONS", "MEGA_LAYER", "MEGA_LAYER_VJP"]

MEGA_LAYER = register("refimpl.attention.mega_layer", {
    ("full", "numpy"): "refimpl.attention.mega.reference:full",
    ("chunked", "numpy"): "refimpl.attention.mega.reference:chunked",
    ("chunked", "numba"): "refimpl.attention.mega.numba:mega_layer_chunked",
})

MEGA_LAYER_VJP = register("refimpl.attention.mega_layer_vjp", {
    ("full", "numpy"): "refimpl.attention.mega.backward:full_vjp",
})


def mega_layer(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma,
               W_phi, b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None,
               eta_bwd=None, *, chunk: Optional[int] = None, causal: bool = False, attention: str = "softmax",
               scale: Optional[float] = None, view: str = "full", backend: str = "numpy"):
    r"""One Mega layer: ``Y = phi * SiLU(X' W_h + (gamma * O) U_h + b_h) + (1 - phi) * X`` with ``X' = EMA(X)``,
    ``O = f(scale Q K^T + b_rel) V`` single-head attention inside chunks of ``chunk`` (None: the whole sequence),
    ``Q, K = kappa Z + mu``, ``Z = SiLU(X' W_z + b_z)``, ``V = SiLU(X W_v + b_v)``, ``gamma = SiLU(X' W_gamma +
    b_gamma)``, ``phi = sigmoid(X' W_phi + b_phi)``.

    Shapes: ``x (b l d)`` -> ``Y (b l d)``; ``alpha, delta (d e)`` in (0, 1), ``beta, eta (d e)`` (the EMA of
    :func:`refimpl.ssm.mega_ema`); ``W_z (d n)``; ``b_z, kappa_q, mu_q, kappa_k, mu_k (n)``; ``W_v, W_gamma (d p)``;
    ``b_v, b_gamma (p)``; ``W_phi, W_h (d d)``; ``b_phi, b_h (d)``; ``U_h (p d)``.  Optional: ``rel_bias (2m - 1)``
    (``b_rel[i, j] = rel_bias[m - 1 + j - i]``, ``m`` >= the attention span) and the backward EMA ``alpha_bwd,
    delta_bwd, beta_bwd, eta_bwd (d e)`` (the bidirectional EMA ``X' = EMA(X) + rev(EMA_bwd(rev X))``, refused
    with ``causal=True``).  ``causal``: keys ``j <= i``.  ``attention``: ``"softmax"`` (``scale=None``:
    ``n^{-1/2}``), ``"laplace"`` or ``"relu2"`` (``scale=None``: ``1 / len_i``, Mega's length normalization).
    ``view``: ``"full"`` (one masked ``(l l)`` score matrix) or ``"chunked"`` (a loop over ``(c c)`` blocks);
    ``backend``: ``"numpy"``, or ``"numba"`` for ``chunked`` (Numba chunk attention / the tiled flash kernel).
    """
    params = {name: value for name, value in locals().items() if name not in ("view", "backend")}
    return MEGA_LAYER.get(view, backend)(**params)


def mega_layer_vjp(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma,
                   W_phi, b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None,
                   eta_bwd=None, *, dy, chunk: Optional[int] = None, causal: bool = False, attention: str = "softmax",
                   scale: Optional[float] = None, view: str = "full", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`mega_layer` (the adjoint equations in
    :mod:`refimpl.attention.mega.backward`, written by hand; the EMA's adjoint is a reverse scan).

    ``dy (b l d)``: the cotangent of ``Y``.  Returns the gradient of ``x`` and of every parameter given (``rel_bias``
    and the backward EMA only when given), in the working dtype.  ``view, backend``: ``("full", "numpy")``.
    """
    params = {name: value for name, value in locals().items() if name not in ("view", "backend")}
    return MEGA_LAYER_VJP.get(view, backend)(**params)
