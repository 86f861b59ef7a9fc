r"""Exact (softmax) attention: scaled dot-product and multi-head attention.

Literal NumPy reference, float64 unless every input is float32.

Shapes (einops style; the head axis ``h`` is always present, one head is h=1)
----------------------------------------------------------------------------
* ``q``: ``(b lq h d)``, ``k``: ``(b lk h d)``, ``v``: ``(b lk h e)``; output ``(b lq h e)``.
* ``mask`` (boolean, **True = attend / keep**): broadcastable to ``(b h lq lk)``; given as
  ``(lq lk)``, ``(b lq lk)`` or ``(b h lq lk)``.
* ``bias`` (additive, added to the scaled scores; ``-inf`` entries mask): same shapes as ``mask``.

Conventions
-----------
* ``scale`` is explicit: ``scores = scale * q.k``; ``scale=None`` means ``1/sqrt(d)``
  (the text's ``1/sqrt(d_k)``).  The scale is rounded to the working dtype (float32 for all-float32
  inputs) and multiplies the float dot product.  The bias is added *after* scaling.
* Causal alignment when ``lq != lk`` (position ``i`` of the query, ``j`` of the key):

  - ``"top_left"`` (PyTorch ``is_causal=True``, ``torch.tril(ones(lq, lk))``): keep ``j <= i``.
  - ``"bottom_right"`` (FlashAttention >= 2.1, the queries are the *last* ``lq`` positions of
    the key sequence, as in decoding with a KV cache): keep ``j <= i + (lk - lq)``.

  Both coincide when ``lq == lk``.
* A **fully masked row** (no key allowed for a query; e.g. top-left causal with ``lk = 0``,
  a boolean mask row of all False, or a bias row of all ``-inf``) yields an output row of
  **zeros** and attention weights of zeros, never NaN.  (The softmax of an empty set is
  undefined; zeros is the convention of e.g. FlashAttention's kernels and xformers.)
* Numerical stability: ``softmax(s)_j = exp(s_j - max s) / sum_l exp(s_l - max s)`` (max
  subtraction), the log-sum-exp is ``max s + log sum exp(s - max s)``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape, result_dtype

__all__ = [
    "CAUSAL_ALIGNMENTS",
    "causal_mask",
    "logsumexp",
    "softmax",
    "scaled_dot_product_attention",
    "multi_head_attention",
]

CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


def causal_mask(lq: int, lk: int, alignment: str = "top_left") -> np.ndarray:
    r"""Boolean ``(lq, lk)`` mask, True where query ``i`` may attend to key ``j``.

    ``top_left``: ``j <= i``;  ``bottom_right``: ``j <= i + (lk - lq)``.
    """
    lq = check_int(lq, "lq", minimum=0)
    lk = check_int(lk, "lk", minimum=0)
    check_choice(alignment, "alignment", CAUSAL_ALIGNMENTS)
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    offset = 0 if alignment == "top_left" else lk - lq
    # keep j <= i + offset
    return j <= i + offset


def logsumexp(s: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""``log sum_j exp(s_j)`` along ``axis``, stably: ``m + log sum_j exp(s_j - m)``, ``m = max s``.

    Rows that are all ``-inf`` (or empty) give ``-inf``.
    """
    s = np.asarray(s)
    if s.shape[axis] == 0:
        return np.full(np.delete(np.array(s.shape), axis if axis >= 0 else s.ndim + axis), -np.inf, dtype=s.dtype)
    m = np.max(s, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        # lse = m + log sum exp(s - m)
        out = np.log(np.sum(np.exp(s - m_safe), axis=axis, keepdims=True)) + m_safe
    out = np.where(np.isneginf(m), -np.inf, out)
    return np.squeeze(out, axis=axis)


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""``exp(s_j - max s) / sum_l exp(s_l - max s)``; a row that is all ``-inf`` gives zeros."""
    s = np.asarray(s)
    if s.shape[axis] == 0:
        return np.zeros_like(s)
    m = np.max(s, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    # w_j = exp(s_j - max s)
    w = np.exp(s - m_safe)
    Z = np.sum(w, axis=axis, keepdims=True)
    # p_j = w_j / sum_l w_l   (0 / 0 -> 0 for fully masked rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    return p


def _as_bhqk(m, name, b, h, lq, lk):
    a = np.asarray(m)
    if a.ndim == 2:
        check_shape(a, name, (lq, lk), "(lq, lk)")
        return a[None, None]
    if a.ndim == 3:
        check_shape(a, name, (b, lq, lk), "(b, lq, lk)")
        return a[:, None]
    if a.ndim == 4:
        check_shape(a, name, (b, h, lq, lk), "(b, h, lq, lk)")
        return a
    raise ValueError(f"{name}: expected shape (lq, lk), (b, lq, lk) or (b, h, lq, lk) = ({b}, {h}, {lq}, {lk}), got {a.shape}")


def scaled_dot_product_attention(
    q,
    k,
    v,
    *,
    scale: Optional[float] = None,
    causal: Optional[str] = None,
    mask=None,
    bias=None,
    return_weights: bool = False,
    return_lse: bool = False,
):
    r"""``softmax(scale * Q K^T + bias, masked) V``, per batch and head.

    Parameters
    ----------
    q, k, v : ``(b lq h d)``, ``(b lk h d)``, ``(b lk h e)``.
    scale : float or None
        Multiplies ``q.k``; ``None`` -> ``1/sqrt(d)``.
    causal : None, ``"top_left"`` or ``"bottom_right"``
        The causal alignment (see module docstring).  ``True`` is refused: name it.
    mask : bool array, True = keep; ``(lq lk)``, ``(b lq lk)`` or ``(b h lq lk)``.
    bias : float array (may hold ``-inf``), same shapes; added after scaling.
    return_weights : also return the attention weights ``(b h lq lk)``.
    return_lse : also return the log-sum-exp of the masked scaled scores ``(b h lq)``
        (``-inf`` on fully masked rows).

    Returns
    -------
    ``o`` of shape ``(b lq h e)`` (fully masked rows are zero), then weights / lse if asked.
    """
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    b, lq, h, d = q.shape
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    lk = k.shape[1]
    check_shape(k, "k", (b, None, h, d), "(b, lk, h, d) with b, h, d from q")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, lk, h, None), "(b, lk, h, e) with b, lk, h from k")
    e = v.shape[3]
    if causal is not None and not isinstance(causal, str):
        raise TypeError(f"causal: expected None, 'top_left' or 'bottom_right' (the alignment must be named), got {causal!r}")
    if causal is not None:
        check_choice(causal, "causal", CAUSAL_ALIGNMENTS)
    if scale is None:
        scale = 1.0 / np.sqrt(d) if d > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not np.isscalar(scale) or not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number or None, got {scale!r}")
    keep = np.ones((1, 1, lq, lk), dtype=bool)
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.dtype != np.bool_:
            raise TypeError(f"mask: expected a boolean array (True = keep; use bias= for additive masks), got dtype {mask_arr.dtype}")
        keep = keep & _as_bhqk(mask_arr, "mask", b, h, lq, lk)
    if causal is not None:
        keep = keep & causal_mask(lq, lk, causal)[None, None]
    dtype = result_dtype(q, k, v)
    bias_arr = None
    if bias is not None:
        bias_arr = as_float_array(bias, "bias", allow_complex=False, finite=False)
        if np.any(np.isnan(bias_arr)) or np.any(np.isposinf(bias_arr)):
            raise ValueError("bias: expected finite values or -inf (masking), got NaN or +inf")
        bias_arr = _as_bhqk(bias_arr, "bias", b, h, lq, lk)
        dtype = np.result_type(dtype, bias_arr.dtype)
    q, k, v = q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False)
    scale = dtype.type(scale)

    # s_ij = scale * q_i . k_j   (+ bias_ij)
    s = scale * np.einsum("bihd,bjhd->bhij", q, k)
    if bias_arr is not None:
        s = s + bias_arr.astype(dtype, copy=False)
    s = np.where(np.broadcast_to(keep, s.shape), s, -np.inf)
    # p_ij = exp(s_ij - max_l s_il) / sum_l exp(s_il - max_l s_il); rows of all -inf -> 0
    p = softmax(s, axis=-1).astype(dtype, copy=False)
    # o_i = sum_j p_ij v_j
    o = np.einsum("bhij,bjhe->bihe", p, v)
    out = [o]
    if return_weights:
        out.append(p)
    if return_lse:
        out.append(logsumexp(s, axis=-1))
    return out[0] if len(out) == 1 else tuple(out)


def multi_head_attention(
    x_q,
    x_kv,
    W_Q,
    W_K,
    W_V,
    W_O,
    *,
    scale: Optional[float] = None,
    causal: Optional[str] = None,
    mask=None,
    bias=None,
):
    r"""Multi-head attention with separate per-head projections.

    ``q_i^{(h)} = W_Q[h]^T x_i``, ``k_j^{(h)} = W_K[h]^T x_j``, ``v_j^{(h)} = W_V[h]^T x_j``;
    ``Z_h = softmax(scale Q_h K_h^T) V_h``;  ``Z = concat(Z_1, ..., Z_H) W_O``.

    Shapes: ``x_q (b lq m)``, ``x_kv (b lk m)``, ``W_Q, W_K (h m d)``, ``W_V (h m e)``,
    ``W_O (h*e m_out)`` (the concatenation order is head-major: columns ``[h*e:(h+1)*e]`` of
    ``Z_concat`` are head ``h``).  Returns ``(b lq m_out)``.
    """
    x_q = as_float_array(x_q, "x_q", ndim=3, allow_complex=False)
    x_kv = as_float_array(x_kv, "x_kv", ndim=3, allow_complex=False)
    b, lq, m = x_q.shape
    check_shape(x_kv, "x_kv", (b, None, m), "(b, lk, m) with b, m from x_q")
    W_Q = as_float_array(W_Q, "W_Q", ndim=3, allow_complex=False)
    H, _, d = W_Q.shape
    check_shape(W_Q, "W_Q", (None, m, None), "(h, m, d)")
    W_K = as_float_array(W_K, "W_K", ndim=3, allow_complex=False)
    check_shape(W_K, "W_K", (H, m, d), "(h, m, d) like W_Q")
    W_V = as_float_array(W_V, "W_V", ndim=3, allow_complex=False)
    check_shape(W_V, "W_V", (H, m, None), "(h, m, e)")
    e = W_V.shape[2]
    W_O = as_float_array(W_O, "W_O", ndim=2, allow_complex=False)
    check_shape(W_O, "W_O", (H * e, None), "(h*e, m_out)")
    # Q_h = X W_Q[h],  K_h = X W_K[h],  V_h = X W_V[h]
    q = np.einsum("blm,hmd->blhd", x_q, W_Q)
    k = np.einsum("blm,hmd->blhd", x_kv, W_K)
    v = np.einsum("blm,hme->blhe", x_kv, W_V)
    z = scaled_dot_product_attention(q, k, v, scale=scale, causal=causal, mask=mask, bias=bias)
    # Z = concat_h(Z_h) W_O
    z_concat = z.reshape(b, lq, H * e)
    return z_concat @ W_O
