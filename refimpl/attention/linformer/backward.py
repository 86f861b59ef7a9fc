r"""The backward pass of Linformer attention: the vector-Jacobian product, written literally (no autodiff).

The forward (:mod:`refimpl.attention.linformer.reference`), per batch entry and head::

    K_bar = E k,   V_bar = F v,   S_it = scale q_i . K_bar_t,   P_it = softmax_t(S_it),   o_i = sum_t P_it V_bar_t

Given the cotangent ``do`` of ``o`` (a real loss ``L = sum do * o``), the adjoint equations, in the reverse order
of the forward::

    dV_bar_t = sum_i P_it do_i                          (b r h p)
    dP_it    = do_i . V_bar_t                           (b h l r)
    D_i      = sum_t P_it dP_it  (= do_i . o_i)         (b h l)
    dS_it    = P_it (dP_it - D_i)                       (the softmax's Jacobian, symmetric)
    dq_i     = scale sum_t dS_it K_bar_t
    dK_bar_t = scale sum_i dS_it q_i
    dk_j     = sum_t E_tj dK_bar_t,    dE_tj = sum_b k_j . dK_bar_t      (summed over heads too when E is shared)
    dv_j     = sum_t F_tj dV_bar_t,    dF_tj = sum_b v_j . dV_bar_t

There is no scan (the op is not causal and has no state), so there is no reverse recurrence: one view,
``"materialized"`` (the ``(l r)`` scores and weights recomputed from the inputs, then the equations above).

Conventions: as the forward (``scale`` multiplies ``q . K_bar``, ``None`` -> ``n^{-1/2}``; ``E``, ``F`` applied as
stored ``(r s)``, per head ``(h r s)`` or shared ``(r s)``; a shared projection's gradient sums the heads).
``r = 0``: ``o = 0`` for every input, so every gradient is 0.  All real: no complex inputs.  The computation runs in
``result_dtype`` of the inputs and ``do`` (float32 only when all are float32), and every gradient is returned in
it (no silent downcast: a float32 input among float64 ones gets a float64 gradient).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from refimpl._validate import as_float_array, check_shape, result_dtype
from refimpl.attention.linformer.reference import projected, validate_linformer
from refimpl.attention.softmax.reference import attention_scale, softmax

__all__ = ["materialized_vjp"]


def check_cotangent(dy, name: str, shape, letters: str, src: str = "") -> np.ndarray:
    """A cotangent checked like an input: a real float array of the output's shape (``name: expected shape
    (letters) = shape, got ...``)."""
    dy = as_float_array(dy, name, allow_complex=False)
    if dy.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape ({letters}) = {tuple(shape)}"
                         f"{' (' + src + ')' if src else ''}, got {dy.shape}")
    return dy


def _project_back(E, dX_bar) -> np.ndarray:
    r"""``dx_j = sum_t E_tj dX_bar_t``: the adjoint of :func:`projected` w.r.t. ``x``.  ``(b s h c)``."""
    if E.ndim == 2:
        return np.einsum("tj,bthc->bjhc", E, dX_bar)
    return np.einsum("htj,bthc->bjhc", E, dX_bar)


def _projection_grad(E, x, dX_bar) -> np.ndarray:
    r"""``dE_tj = sum_{b,c} x_jc dX_bar_tc`` (per head, or summed over heads when ``E`` is shared ``(r s)``)."""
    if E.ndim == 2:
        return np.einsum("bjhc,bthc->tj", x, dX_bar)
    return np.einsum("bjhc,bthc->htj", x, dX_bar)


def materialized_vjp(q, k, v, E, F, *, do, scale: Optional[float] = None) -> Dict[str, np.ndarray]:
    r"""The VJP of Linformer attention (the module docstring's adjoint equations), the scores materialized.

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``E, F (h r s) | (r s)``, ``do (b l h p)`` (the cotangent of
    ``o``) -> ``{"q": dq (b l h n), "k": dk (b s h n), "v": dv (b s h p), "E": dE, "F": dF}`` (each its input's
    shape, in the working dtype).
    """
    q, k, v, E, F, (b, l, s, h, n, p, r) = validate_linformer(q, k, v, E, F)
    do = check_cotangent(do, "do", (b, l, h, p), "b l h p", "b, l, h from q, p from v")
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v, E, F, do)
    q, k, v, E, F, do = (a.astype(dtype, copy=False) for a in (q, k, v, E, F, do))
    sc = dtype.type(scale)
    # forward recomputation: K_bar = E k, V_bar = F v, S = scale q K_bar^T, P = softmax_t(S)
    K_bar = projected(E, k)
    V_bar = projected(F, v)
    S = sc * np.einsum("bihn,bthn->bhit", q, K_bar)
    P = softmax(S, axis=-1)
    # dV_bar_t = sum_i P_it do_i
    dV_bar = np.einsum("bhit,bihp->bthp", P, do)
    # dP_it = do_i . V_bar_t
    dP = np.einsum("bihp,bthp->bhit", do, V_bar)
    # D_i = sum_t P_it dP_it
    D = np.sum(P * dP, axis=-1, keepdims=True)
    # dS_it = P_it (dP_it - D_i)
    dS = P * (dP - D)
    # dq_i = scale sum_t dS_it K_bar_t
    dq = sc * np.einsum("bhit,bthn->bihn", dS, K_bar)
    # dK_bar_t = scale sum_i dS_it q_i
    dK_bar = sc * np.einsum("bhit,bihn->bthn", dS, q)
    # dk_j = sum_t E_tj dK_bar_t ;  dE_tj = sum k_j . dK_bar_t
    dk = _project_back(E, dK_bar)
    dE = _projection_grad(E, k, dK_bar)
    # dv_j = sum_t F_tj dV_bar_t ;  dF_tj = sum v_j . dV_bar_t
    dv = _project_back(F, dV_bar)
    dF = _projection_grad(F, v, dV_bar)
    return {"q": dq, "k": dk, "v": dv, "E": dE, "F": dF}
