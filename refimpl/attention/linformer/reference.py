r"""Linformer attention (Wang, Li, Khabsa, Fang, Ma 2020, "Linformer: Self-Attention with Linear Complexity"),
the literal NumPy reference.

The paper's head (its eq. 7)::

    head_i = softmax( Q W_i^Q (E_i K W_i^K)^T / sqrt(d_k) ) (F_i V W_i^V)

with ``E_i, F_i`` ``(r x s)`` projecting the key/value length ``s`` down to ``r`` (the paper's ``k x n``; ``r`` is
this library's letter for the **projected length**, since ``k`` names the keys and ``n`` the key dimension).
Per batch entry and head, with the per-head projections already applied (``q = X W^Q``, ``k = X W^K``,
``v = X W^V``)::

    K_bar = E k           (r n):  K_bar_t = sum_j E_tj k_j
    V_bar = F v           (r p):  V_bar_t = sum_j F_tj v_j
    S_it  = scale q_i . K_bar_t          (l r)
    P_it  = exp(S_it - m_i) / sum_t' exp(S_it' - m_i),   m_i = max_t S_it
    o_i   = sum_t P_it V_bar_t           (l p)

Shapes (sequence-first): ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``; ``E``, ``F`` either ``(h r s)`` (one
projection per head, the paper's ``E_i``) or ``(r s)`` (one projection shared by every head: the paper's
headwise sharing); ``o (b l h p)``.  The paper is self-attention (``s = l``); ``s != l`` is accepted.

Conventions
-----------
* ``E`` is applied as stored, ``(r s)``: ``K_bar = E k`` (a PyTorch ``nn.Linear(s, r)`` stores its weight as
  ``(r s)`` too and computes ``k^T W^T``, the same product; its transpose ``(s r)`` is a verify convention).
* ``scale`` multiplies ``q . K_bar``; ``None`` -> ``n^{-1/2}`` (the paper's ``1/sqrt(d_k)``, ``d_k`` the per-head
  query/key dimension ``n``, **not** ``r``).
* **Not causal**: ``K_bar_t`` mixes every position ``j`` (future ones included), so no causal mask can be put on
  ``S``; there is no ``causal`` argument.
* ``r = 0`` (nothing to attend to): ``o = 0`` (the softmax of an empty row is taken as zeros, as the fully masked
  rows of :mod:`refimpl.attention.softmax`).  ``s = 0`` with ``r > 0``: ``K_bar = V_bar = 0``, so ``o = 0``.
* float64 unless every float input is float32.

Parameter sharing (the paper's section 4, "Additional Efficiency Techniques"): :func:`linformer_layer` takes
``sharing=``: ``"none"`` (``E_i, F_i`` per head: ``E, F (h r l)``), ``"headwise"`` (``E_i = E``, ``F_i = F`` for
every head of the layer: ``E, F (r l)``), ``"key_value"`` (additionally ``E = F``: one ``E (r l)``), ``"layerwise"``
(one projection for every layer, head, key and value: within one layer the same as ``"key_value"``;
:func:`linformer_stack` applies it across a stack of layers).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_shape, result_dtype
from refimpl.attention.softmax.reference import attention_scale, softmax, validate_qkv

__all__ = ["SHARINGS", "materialized", "linformer_layer", "linformer_stack"]

#: the paper's parameter-sharing levels (section 4), and ``"none"``
SHARINGS = ("none", "headwise", "key_value", "layerwise")


def _projection(E, name: str, h: int, s: int, r: Optional[int] = None, src: str = "h from q, s from k"):
    """``E`` as a float array of shape ``(h r s)`` or ``(r s)`` (``r`` given: must match)."""
    E = as_float_array(E, name, allow_complex=False)
    if E.ndim == 3:
        check_shape(E, name, (h, r, s), "(h, r, s) (one projection per head)" if r is None else
                    "(h, r, s) with r from E", src=src)
    elif E.ndim == 2:
        check_shape(E, name, (r, s), "(r, s) (one projection shared by every head)" if r is None else
                    "(r, s) with r from E", src=src)
    else:
        raise ValueError(f"{name}: expected shape (h, r, s) (per head) or (r, s) (shared by every head) with "
                         f"(h, s) = ({h}, {s}) ({src}), got {E.shape}")
    return E


def validate_linformer(q, k, v, E, F):
    """Validated ``(q, k, v, E, F)`` and ``(b, l, s, h, n, p, r)``; ``E``, ``F`` ``(h r s)`` or ``(r s)``,
    the same ``r`` (the softmax runs over the projected keys and sums the projected values)."""
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    E = _projection(E, "E", h, s)
    r = E.shape[-2]
    F = _projection(F, "F", h, s, r, src="h from q, s from k, r from E")
    return q, k, v, E, F, (b, l, s, h, n, p, r)


def projected(E, x) -> np.ndarray:
    r"""``X_bar = E X`` along the sequence: ``X_bar[b, t, h, :] = sum_j E[h, t, j] x[b, j, h, :]``.

    ``E (h r s)`` or ``(r s)``, ``x (b s h c)`` -> ``(b r h c)``.  (No validation: called on validated arrays;
    the public entry is :func:`materialized`.)
    """
    E = np.asarray(E)
    x = np.asarray(x)
    if E.ndim == 2:
        # X_bar_t = sum_j E_tj x_j   (one E for every head)
        return np.einsum("tj,bjhc->bthc", E, x)
    # X_bar_t^{(h)} = sum_j E^{(h)}_tj x_j^{(h)}   (E_i per head)
    return np.einsum("htj,bjhc->bthc", E, x)


def materialized(q, k, v, E, F, *, scale: Optional[float] = None) -> np.ndarray:
    r"""Linformer attention with the ``(l r)`` scores materialized (the module docstring's equations).

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``E, F (h r s) | (r s)`` -> ``o (b l h p)``.
    ``scale`` multiplies ``q . K_bar``; ``None`` -> ``n^{-1/2}``.  Not causal.
    """
    q, k, v, E, F, (b, l, s, h, n, p, r) = validate_linformer(q, k, v, E, F)
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v, E, F)
    q, k, v, E, F = (a.astype(dtype, copy=False) for a in (q, k, v, E, F))
    # K_bar = E K   (b r h n)
    K_bar = projected(E, k)
    # V_bar = F V   (b r h p)
    V_bar = projected(F, v)
    # S_it = scale q_i . K_bar_t   (b h l r)
    S = dtype.type(scale) * np.einsum("bihn,bthn->bhit", q, K_bar)
    # P_it = exp(S_it - max_t S_it) / sum_t' exp(S_it' - max_t S_it)   (r = 0: an empty row, P empty)
    P = softmax(S, axis=-1)
    # o_i = sum_t P_it V_bar_t   (r = 0: o = 0)
    return np.einsum("bhit,bthp->bihp", P, V_bar)


def _layer_weights(x, W_Q, W_K, W_V, W_O, prefix: str = ""):
    """Validated layer weights: ``W_Q, W_K (h d n)``, ``W_V (h d p)``, ``W_O (h*p d_out)``."""
    d = x.shape[-1]
    W_Q = as_float_array(W_Q, "W_Q", ndim=3, allow_complex=False)
    check_shape(W_Q, "W_Q", (None, d, None), "(h, d, n) with d from x")
    h, _, n = W_Q.shape
    W_K = as_float_array(W_K, "W_K", ndim=3, allow_complex=False)
    check_shape(W_K, "W_K", (h, d, n), "(h, d, n) like W_Q")
    W_V = as_float_array(W_V, "W_V", ndim=3, allow_complex=False)
    check_shape(W_V, "W_V", (h, d, None), "(h, d, p)", src="h from W_Q, d from x")
    p = W_V.shape[2]
    W_O = as_float_array(W_O, "W_O", ndim=2, allow_complex=False)
    check_shape(W_O, "W_O", (h * p, None), "(h*p, d_out)", src="h from W_Q, p from W_V")
    return W_Q, W_K, W_V, W_O, (h, n, p)


def _shared_projections(E, F, sharing: str, h: int, l: int):
    """``(E, F)`` for one layer under ``sharing`` (the paper's section 4), validated."""
    check_choice(sharing, "sharing", SHARINGS)
    src = "h from W_Q, l from x"
    if sharing == "none":
        E = as_float_array(E, "E", allow_complex=False)
        if E.ndim != 3:
            raise ValueError(f"E: sharing='none' takes one projection per head, expected shape (h, r, l) with "
                             f"(h, l) = ({h}, {l}) ({src}), got {E.shape}")
        E = _projection(E, "E", h, l, src=src)
        if F is None:
            raise ValueError("F: sharing='none' takes one F per head, expected an array of shape (h, r, l), got None")
        F = as_float_array(F, "F", allow_complex=False)
        if F.ndim != 3:
            raise ValueError(f"F: sharing='none' takes one projection per head, expected shape (h, r, l), "
                             f"got {F.shape}")
        return E, _projection(F, "F", h, l, E.shape[1], src=src + ", r from E")
    E = as_float_array(E, "E", allow_complex=False)
    if E.ndim != 2:
        raise ValueError(f"E: sharing={sharing!r} shares one projection across heads, expected shape (r, l) with "
                         f"l = {l} ({src}), got {E.shape}")
    E = _projection(E, "E", h, l, src=src)
    if sharing == "headwise":
        if F is None:
            raise ValueError("F: sharing='headwise' takes its own F (E_i = E, F_i = F), expected an array of shape "
                             "(r, l), got None")
        F = as_float_array(F, "F", allow_complex=False)
        if F.ndim != 2:
            raise ValueError(f"F: sharing='headwise' shares one F across heads, expected shape (r, l), got {F.shape}")
        return E, _projection(F, "F", h, l, E.shape[0], src=src + ", r from E")
    # key_value / layerwise: E_i = F_i = E
    if F is not None:
        raise ValueError(f"F: sharing={sharing!r} uses E for the values too (E_i = F_i = E), expected None, got "
                         f"an array of shape {np.shape(F)}")
    return E, E


def linformer_layer(x, W_Q, W_K, W_V, W_O, E, F=None, *, sharing: str = "none",
                    scale: Optional[float] = None) -> np.ndarray:
    r"""Multi-head Linformer self-attention (the paper's eq. 7 and section 4's parameter sharing).

    ``head_i = softmax(scale (x W_Q[i]) (E_i x W_K[i])^T) (F_i x W_V[i])``;  ``out = concat_i(head_i) W_O``.

    Shapes: ``x (b l d)``, ``W_Q, W_K (h d n)``, ``W_V (h d p)``, ``W_O (h*p, d_out)`` (head-major concatenation,
    as :func:`refimpl.attention.softmax.multi_head_attention`) -> ``(b l d_out)``.

    ``sharing`` (the paper's section 4):

    * ``"none"``: ``E, F (h r l)``, one pair per head;
    * ``"headwise"``: ``E, F (r l)``: ``E_i = E``, ``F_i = F`` for every head of the layer;
    * ``"key_value"``: ``E (r l)`` and ``F=None``: ``E_i = F_i = E``;
    * ``"layerwise"``: ``E (r l)`` and ``F=None``: the network's single projection (every layer, head, key and
      value); within one layer this is ``"key_value"``, across layers see :func:`linformer_stack`.

    ``scale`` multiplies ``q . K_bar``; ``None`` -> ``n^{-1/2}`` (``d_k = n``, the per-head dimension).  Not causal.
    """
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    b, l, d = x.shape
    W_Q, W_K, W_V, W_O, (h, n, p) = _layer_weights(x, W_Q, W_K, W_V, W_O)
    E, F = _shared_projections(E, F, sharing, h, l)
    dtype = result_dtype(x, W_Q, W_K, W_V, W_O, E, F)
    x, W_Q, W_K, W_V, W_O, E, F = (a.astype(dtype, copy=False) for a in (x, W_Q, W_K, W_V, W_O, E, F))
    # Q_i = x W_Q[i],  K_i = x W_K[i],  V_i = x W_V[i]   (b l h n), (b l h n), (b l h p)
    q = np.einsum("bld,hdn->blhn", x, W_Q)
    k = np.einsum("bld,hdn->blhn", x, W_K)
    v = np.einsum("bld,hdp->blhp", x, W_V)
    # head_i = softmax(scale Q_i (E_i K_i)^T) (F_i V_i)
    heads = materialized(q, k, v, E, F, scale=scale)
    # out = concat_i(head_i) W_O
    return heads.reshape(b, l, h * p) @ W_O


def linformer_stack(x, W_Q, W_K, W_V, W_O, E, *, scale: Optional[float] = None) -> np.ndarray:
    r"""A stack of ``u`` Linformer attention layers with **layerwise sharing**: one ``E (r l)`` for every layer,
    every head, the keys and the values (the paper's section 4, "Layerwise sharing").

    ``x_0 = x``;  ``x_{t+1} = x_t + linformer_layer(x_t, W_Q[t], W_K[t], W_V[t], W_O[t], E, sharing="layerwise")``
    (each layer with its residual connection; the Transformer's LayerNorm and feed-forward sublayers are outside
    this function, which shows the sharing).

    Shapes: ``x (b l d)``, ``W_Q, W_K (u h d n)``, ``W_V (u h d p)``, ``W_O (u h*p d)`` (``u`` layers; ``d_out = d``
    for the residual), ``E (r l)`` -> ``(b l d)``.  ``u = 0`` returns ``x``.
    """
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    b, l, d = x.shape
    W_Q = as_float_array(W_Q, "W_Q", ndim=4, allow_complex=False)
    check_shape(W_Q, "W_Q", (None, None, d, None), "(u, h, d, n) with d from x")
    u, h, _, n = W_Q.shape
    W_K = as_float_array(W_K, "W_K", ndim=4, allow_complex=False)
    check_shape(W_K, "W_K", (u, h, d, n), "(u, h, d, n) like W_Q")
    W_V = as_float_array(W_V, "W_V", ndim=4, allow_complex=False)
    check_shape(W_V, "W_V", (u, h, d, None), "(u, h, d, p)", src="u, h from W_Q, d from x")
    p = W_V.shape[3]
    W_O = as_float_array(W_O, "W_O", ndim=3, allow_complex=False)
    check_shape(W_O, "W_O", (u, h * p, d), "(u, h*p, d) (the residual needs d_out = d)",
                src="u, h from W_Q, p from W_V, d from x")
    E, _ = _shared_projections(E, None, "layerwise", h, l)
    dtype = result_dtype(x, W_Q, W_K, W_V, W_O, E)
    out = x.astype(dtype, copy=True)
    for t in range(u):
        # x_{t+1} = x_t + MHA_t(x_t)   with E_i = F_i = E in every layer
        out = out + linformer_layer(out, W_Q[t], W_K[t], W_V[t], W_O[t], E, sharing="layerwise", scale=scale)
    return out
