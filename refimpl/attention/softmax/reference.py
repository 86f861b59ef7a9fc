r"""Exact (softmax) attention, the materialized view, and multi-head attention.

Literal NumPy reference, float64 unless every input is float32.

Shapes (sequence-first; the head axis ``h`` is always present, one head is h=1)
-------------------------------------------------------------------------------
* ``q``: ``(b l h n)``, ``k``: ``(b s h n)``, ``v``: ``(b s h p)``; output ``o``: ``(b l h p)``.
* ``mask`` (boolean, **True = attend / keep**): ``(l s)``, ``(b l s)`` or ``(b h l s)``.
* ``bias`` (additive, added to the scaled scores; ``-inf`` entries mask): the same shapes as ``mask``.
* attention weights ``(b h l s)``, log-sum-exp ``(b h l)``.

Conventions (see README.md in this folder)
------------------------------------------
* ``scale`` multiplies ``q . k`` before anything else: ``s_ij = scale q_i . k_j + bias_ij``;
  ``scale=None`` means ``n^{-1/2}``.  The scale is rounded to the working dtype.
* ``causal`` is a bool.  Where ``l != s`` the diagonal must be named by ``alignment``:
  ``"top_left"`` (PyTorch ``is_causal``): keep ``j <= i``; ``"bottom_right"`` (FlashAttention >= 2.1,
  the queries are the last ``l`` positions of the key sequence): keep ``j <= i + s - l``.
* A **fully masked row** (no key kept) gives an output row of zeros, weights of zeros and a
  log-sum-exp of ``-inf``, never NaN.
* :func:`softmax` and :func:`logsumexp` follow IEEE arithmetic otherwise: a row holding a NaN (or ``+inf``)
  gives NaN, it is never mistaken for a fully masked row.
"""
from __future__ import annotations

import numbers
from typing import Optional

import numpy as np

from refimpl._validate import (as_float_array, check_bool, check_choice, check_int, check_shape, result_dtype)

__all__ = [
    "CAUSAL_ALIGNMENTS",
    "causal_alignment",
    "attention_scale",
    "causal_mask",
    "logsumexp",
    "softmax",
    "materialized",
    "multi_head_attention",
    "tiled",
]

CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


# ------------------------------------------------------------------ option helpers (shared with the tiled kernel)

def causal_alignment(causal, alignment, l: int, s: int) -> Optional[str]:
    """The causal diagonal to use: ``None`` (not causal), ``"top_left"`` or ``"bottom_right"``.

    ``causal`` must be a bool.  ``alignment`` is required when ``causal`` and ``l != s`` (the two
    conventions differ there); when ``l == s`` it may be omitted (both keep ``j <= i``).  An alignment
    without ``causal=True`` is refused: it would be silently ignored.
    """
    causal = check_bool(causal, "causal")
    l = check_int(l, "l", minimum=0)
    s = check_int(s, "s", minimum=0)
    if alignment is not None:
        if not isinstance(alignment, str):
            raise TypeError(f"alignment: expected None, 'top_left' or 'bottom_right', got "
                            f"{type(alignment).__name__} {alignment!r}")
        check_choice(alignment, "alignment", CAUSAL_ALIGNMENTS)
        if not causal:
            raise ValueError(f"alignment: names the diagonal of a causal mask and needs causal=True, "
                             f"got alignment={alignment!r} with causal=False")
    if not causal:
        return None
    if alignment is None:
        if l != s:
            raise ValueError(f"alignment: required when causal=True and the query and key lengths differ "
                             f"(l = {l}, s = {s}): expected 'top_left' (keep j <= i, PyTorch is_causal) or "
                             f"'bottom_right' (keep j <= i + s - l, FlashAttention), got None")
        return "top_left"
    return alignment


def attention_scale(scale, n: int) -> float:
    """``scale`` as a Python float; ``None`` -> ``n^{-1/2}`` (1 when ``n = 0``)."""
    n = check_int(n, "n", minimum=0)
    if scale is None:
        return 1.0 / float(np.sqrt(n)) if n > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__} {scale!r}")
    if not np.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number or None, got {scale!r}")
    return float(scale)


def causal_mask(l: int, s: int, alignment: str) -> np.ndarray:
    r"""Boolean ``(l, s)`` mask, True where query ``i`` may attend to key ``j``.

    ``top_left``: ``j <= i``;  ``bottom_right``: ``j <= i + (s - l)``.
    """
    l = check_int(l, "l", minimum=0)
    s = check_int(s, "s", minimum=0)
    check_choice(alignment, "alignment", CAUSAL_ALIGNMENTS)
    i = np.arange(l)[:, None]
    j = np.arange(s)[None, :]
    offset = 0 if alignment == "top_left" else s - l
    # keep j <= i + offset
    return j <= i + offset


def _axis(x: np.ndarray, axis) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis: expected an integer, got {type(axis).__name__} {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis: expected an axis of the {x.ndim}-dimensional input "
                         f"({-x.ndim} <= axis < {x.ndim}), got {axis} (s has shape {x.shape})")
    return int(axis) % x.ndim


def _row_shift(s: np.ndarray, axis: int):
    """``(m, masked)``: the row max to subtract, and where a row is all ``-inf`` (fully masked).

    A fully masked row is shifted by 0 (its exponentials are exactly 0); a row holding NaN keeps its NaN max,
    so NaN propagates instead of passing for a masked row.
    """
    m = np.max(s, axis=axis, keepdims=True)
    masked = np.isneginf(m)
    return np.where(masked, 0.0, m).astype(s.dtype, copy=False), masked


def logsumexp(s, axis: int = -1) -> np.ndarray:
    r"""``log sum_j exp(s_j)`` along ``axis``, stably: ``m + log sum_j exp(s_j - m)``, ``m = max s``.

    Rows that are all ``-inf`` (or empty) give ``-inf``; a row holding NaN gives NaN.
    """
    s = as_float_array(s, "s", allow_complex=False, finite=False)
    axis = _axis(s, axis)
    if s.shape[axis] == 0:
        return np.full(s.shape[:axis] + s.shape[axis + 1:], -np.inf, dtype=s.dtype)
    m, masked = _row_shift(s, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        # lse = m + log sum_j exp(s_j - m)   (log 0 = -inf on fully masked rows)
        lse = m + np.log(np.sum(np.exp(s - m), axis=axis, keepdims=True))
    return np.squeeze(lse, axis=axis)


def softmax(s, axis: int = -1) -> np.ndarray:
    r"""``p_j = exp(s_j - max s) / sum_l exp(s_l - max s)``.

    A row that is all ``-inf`` (fully masked) gives zeros; a row holding NaN or ``+inf`` gives NaN.
    """
    s = as_float_array(s, "s", allow_complex=False, finite=False)
    axis = _axis(s, axis)
    if s.shape[axis] == 0:
        return np.zeros_like(s)
    m, masked = _row_shift(s, axis)
    with np.errstate(invalid="ignore"):
        # w_j = exp(s_j - max s)
        w = np.exp(s - m)
    # p_j = w_j / sum_l w_l   (a fully masked row: w = 0, divided by 1)
    Z = np.where(masked, 1.0, np.sum(w, axis=axis, keepdims=True))
    with np.errstate(invalid="ignore"):
        return w / Z


# ------------------------------------------------------------------ validation

def validate_qkv(q, k, v):
    """Validated ``(q, k, v)`` and ``(b, l, s, h, n, p)``: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``."""
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    b, l, h, n = q.shape
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    check_shape(k, "k", (b, None, h, n), "(b, s, h, n) with b, h, n from q")
    s = k.shape[1]
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, s, h, None), "(b, s, h, p) with b, s, h from k")
    return q, k, v, (b, l, s, h, n, v.shape[3])


_QK = "b, h, l from q, s from k"


def _as_bhls(m: np.ndarray, name: str, b: int, h: int, l: int, s: int, src: str = _QK) -> np.ndarray:
    """A mask or bias of shape ``(l s)``, ``(b l s)`` or ``(b h l s)`` as ``(b|1, h|1, l, s)`` (no other shape).

    ``src`` says where the letters come from (named in the error)."""
    if m.ndim == 2:
        check_shape(m, name, (l, s), "(l, s)", src=src)
        return m[None, None]
    if m.ndim == 3:
        check_shape(m, name, (b, l, s), "(b, l, s)", src=src)
        return m[:, None]
    if m.ndim == 4:
        check_shape(m, name, (b, h, l, s), "(b, h, l, s)", src=src)
        return m
    raise ValueError(f"{name}: expected shape (l, s), (b, l, s) or (b, h, l, s) with (b, h, l, s) = "
                     f"({b}, {h}, {l}, {s}) ({src}), got {m.shape}")


def _keep(mask, alignment, b, h, l, s, src: str = _QK) -> np.ndarray:
    """The boolean keep-mask ``(b|1, h|1, l, s)``: the given mask and the causal diagonal."""
    keep = np.ones((1, 1, l, s), dtype=bool)
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.dtype != np.bool_:
            raise TypeError(f"mask: expected a boolean array (True = keep; use bias= for additive masks), "
                            f"got dtype {mask_arr.dtype}")
        keep = keep & _as_bhls(mask_arr, "mask", b, h, l, s, src)
    if alignment is not None:
        keep = keep & causal_mask(l, s, alignment)[None, None]
    return keep


def _bias(bias, b, h, l, s, src: str = _QK):
    """The additive bias ``(b|1, h|1, l, s)`` or None; finite or ``-inf`` only."""
    if bias is None:
        return None
    bias_arr = as_float_array(bias, "bias", allow_complex=False, finite=False)
    bad = np.isnan(bias_arr) | np.isposinf(bias_arr)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"bias: expected finite values or -inf (masking), got {bias_arr[idx]} at index {idx}")
    return _as_bhls(bias_arr, "bias", b, h, l, s, src)


# ------------------------------------------------------------------ the materialized view

def materialized(q, k, v, *, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
                 mask=None, bias=None, return_weights: bool = False, return_lse: bool = False):
    r"""``o = softmax(scale Q K^T + bias, masked) V`` per batch and head, with the ``(l s)`` scores materialized.

    Parameters
    ----------
    q, k, v : ``(b l h n)``, ``(b s h n)``, ``(b s h p)``.
    scale : multiplies ``q . k``; ``None`` -> ``n^{-1/2}``.
    causal, alignment : see the module docstring (``alignment`` required when ``causal`` and ``l != s``).
    mask : bool array, True = keep; ``(l s)``, ``(b l s)`` or ``(b h l s)``.
    bias : float array (may hold ``-inf``), same shapes; added after scaling.
    return_weights : also return the attention weights ``p`` ``(b h l s)``.
    return_lse : also return the log-sum-exp of the kept scaled scores ``(b h l)`` (``-inf`` on fully masked rows).

    Returns
    -------
    ``o`` of shape ``(b l h p)`` (fully masked rows are zero), then ``p`` and/or ``lse`` if asked, in that order.
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    return_weights = check_bool(return_weights, "return_weights")
    return_lse = check_bool(return_lse, "return_lse")
    scale = attention_scale(scale, n)
    keep = _keep(mask, alignment, b, h, l, s)
    bias_arr = _bias(bias, b, h, l, s)
    dtype = result_dtype(q, k, v, bias_arr)
    q, k, v = q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False)

    # s_ij = scale q_i . k_j  (+ bias_ij);  masked entries -inf
    scores = dtype.type(scale) * np.einsum("bihn,bjhn->bhij", q, k)
    if bias_arr is not None:
        scores = scores + bias_arr.astype(dtype, copy=False)
    scores = np.where(keep, scores, dtype.type(-np.inf))
    # p_ij = exp(s_ij - max_l s_il) / sum_l exp(s_il - max_l s_il);  rows of all -inf -> 0
    weights = softmax(scores, axis=-1)
    # o_i = sum_j p_ij v_j
    o = np.einsum("bhij,bjhp->bihp", weights, v)
    out = [o]
    if return_weights:
        out.append(weights)
    if return_lse:
        out.append(logsumexp(scores, axis=-1))
    return out[0] if len(out) == 1 else tuple(out)


def multi_head_attention(x_q, x_kv, W_Q, W_K, W_V, W_O, *, scale: Optional[float] = None, causal: bool = False,
                         alignment: Optional[str] = None, mask=None, bias=None):
    r"""Multi-head attention with separate per-head projections (the materialized view).

    ``q_i^{(h)} = W_Q[h]^T x_i``, ``k_j^{(h)} = W_K[h]^T x_j``, ``v_j^{(h)} = W_V[h]^T x_j``;
    ``Z_h = softmax(scale Q_h K_h^T) V_h``;  ``out = concat(Z_1, ..., Z_H) W_O``.

    Shapes: ``x_q (b l d)``, ``x_kv (b s d)``, ``W_Q, W_K (h d n)``, ``W_V (h d p)``, ``W_O (h*p, d_out)``
    (the concatenation is head-major: columns ``[i*p:(i+1)*p]`` of the concatenation are head ``i``).
    Returns ``(b l d_out)``.
    """
    x_q = as_float_array(x_q, "x_q", ndim=3, allow_complex=False)
    b, l, d = x_q.shape
    x_kv = as_float_array(x_kv, "x_kv", ndim=3, allow_complex=False)
    check_shape(x_kv, "x_kv", (b, None, d), "(b, s, d) with b, d from x_q")
    W_Q = as_float_array(W_Q, "W_Q", ndim=3, allow_complex=False)
    check_shape(W_Q, "W_Q", (None, d, None), "(h, d, n) with d from x_q")
    h, _, n = W_Q.shape
    W_K = as_float_array(W_K, "W_K", ndim=3, allow_complex=False)
    check_shape(W_K, "W_K", (h, d, n), "(h, d, n) like W_Q")
    W_V = as_float_array(W_V, "W_V", ndim=3, allow_complex=False)
    check_shape(W_V, "W_V", (h, d, None), "(h, d, p)", src="h from W_Q, d from x_q")
    p = W_V.shape[2]
    W_O = as_float_array(W_O, "W_O", ndim=2, allow_complex=False)
    check_shape(W_O, "W_O", (h * p, None), "(h*p, d_out)", src="h from W_Q, p from W_V")
    # mask and bias are checked here so that their errors name this function's arguments
    src = "b, l from x_q, s from x_kv, h from W_Q"
    _keep(mask, None, b, h, l, x_kv.shape[1], src)
    _bias(bias, b, h, l, x_kv.shape[1], src)
    # Q_h = X W_Q[h],  K_h = X W_K[h],  V_h = X W_V[h]
    q = np.einsum("bld,hdn->blhn", x_q, W_Q)
    k = np.einsum("bsd,hdn->bshn", x_kv, W_K)
    v = np.einsum("bsd,hdp->bshp", x_kv, W_V)
    z = materialized(q, k, v, scale=scale, causal=causal, alignment=alignment, mask=mask, bias=bias)
    # out = concat_h(Z_h) W_O
    return z.reshape(b, l, h * p) @ W_O


# ------------------------------------------------------------------ the tiled view, literal (FlashAttention Alg. 1)

def tiled(q, k, v, *, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
          block_q: int = 64, block_k: int = 64) -> np.ndarray:
    r"""FlashAttention's tiled forward pass, written as Algorithm 1 of Dao et al. 2022 (NeurIPS), in NumPy.

    Computes :func:`materialized` with ``mask=None, bias=None`` without forming the ``(l s)`` scores: the
    queries are cut into ``T_r = ceil(l / B_r)`` tiles ``Q_i`` of ``B_r = block_q`` rows, the keys and values
    into ``T_c = ceil(s / B_c)`` tiles ``K_j, V_j`` of ``B_c = block_k`` rows (the last tile of each may be
    short); the **outer loop runs over the key/value tiles j, the inner over the query tiles i** (the paper's
    order: lines 5 and 7), and every query tile carries its running statistics ``m_i`` (row max), ``l_i``
    (row sum of exponentials) and its *normalized* output ``O_i`` from one key tile to the next.

    Choices where Algorithm 1 is silent (the paper's Algorithm 2 / the text):

    * ``scale`` multiplies ``Q_i K_j^T`` (Algorithm 2's ``tau``; Algorithm 1 has ``tau = 1``);
      ``None`` -> ``n^{-1/2}``.
    * the causal mask is applied per tile (Algorithm 2: ``S_ij^masked = MASK(S_ij)`` after
      ``S_ij = tau Q_i K_j^T``), with this module's ``alignment`` (``top_left``: keep ``j <= i``;
      ``bottom_right``: keep ``j <= i + s - l``).
      Every tile is visited (Algorithm 1 skips none; a kernel may skip the fully masked ones).
    * a row with no kept key in a tile has ``m~ = -inf``: its ``P~`` is taken as 0 and ``l~ = 0``; while a row
      has seen no kept key at all (``m_i^new = -inf``) its ``l_i`` and ``O_i`` stay 0 (``e^{-inf - (-inf)}``
      is read as 0, not NaN).  A row that never sees a kept key ends with ``O_i = 0``: fully masked rows are
      zeros, as in the materialized view.

    Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)`` -> ``o (b l h p)``; float64 unless every input is
    float32.  ``block_q`` (the paper's ``B_r``) and ``block_k`` (``B_c``) are positive integers (default 64,
    the Numba kernel's).
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    B_r = check_int(block_q, "block_q", minimum=1)
    B_c = check_int(block_k, "block_k", minimum=1)
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v)
    tau = dtype.type(scale)
    # head-first per (batch, head): Q (b h l n), K (b h s n), V (b h s p)
    Q = np.moveaxis(q.astype(dtype, copy=False), 2, 1)
    K = np.moveaxis(k.astype(dtype, copy=False), 2, 1)
    V = np.moveaxis(v.astype(dtype, copy=False), 2, 1)
    keep = causal_mask(l, s, alignment) if alignment is not None else None
    zero, neg_inf = dtype.type(0.0), dtype.type(-np.inf)

    # line 2: O = (0)_{l x p},  l = (0)_l,  m = (-inf)_l   (per batch and head)
    O = np.zeros((b, h, l, p), dtype=dtype)
    l_ = np.zeros((b, h, l), dtype=dtype)
    m = np.full((b, h, l), neg_inf, dtype=dtype)
    # line 3: T_r = ceil(l / B_r) query tiles, T_c = ceil(s / B_c) key/value tiles
    T_r = -(-l // B_r)
    T_c = -(-s // B_c)
    # line 5: for 1 <= j <= T_c
    for j in range(T_c):
        # line 6: load K_j, V_j
        cols = slice(j * B_c, min((j + 1) * B_c, s))
        K_j, V_j = K[:, :, cols], V[:, :, cols]
        # line 7: for 1 <= i <= T_r
        for i in range(T_r):
            # line 8: load Q_i, O_i, l_i, m_i
            rows = slice(i * B_r, min((i + 1) * B_r, l))
            Q_i, O_i, l_i, m_i = Q[:, :, rows], O[:, :, rows], l_[:, :, rows], m[:, :, rows]
            # line 9: S_ij = tau Q_i K_j^T   (B_r x B_c)
            S_ij = tau * np.einsum("bhxn,bhyn->bhxy", Q_i, K_j)
            # Algorithm 2 (the forward pass with masking): S_ij^masked = MASK(S_ij)  (-inf where a key is not kept)
            if keep is not None:
                S_ij = np.where(keep[rows, cols], S_ij, neg_inf)
            # line 10: m~_ij = rowmax(S_ij),  P~_ij = exp(S_ij - m~_ij),  l~_ij = rowsum(P~_ij)
            #          (a row of the tile with no kept key: m~ = -inf, P~ = 0, l~ = 0)
            m_t = np.max(S_ij, axis=-1) if S_ij.shape[-1] else np.full(S_ij.shape[:-1], neg_inf, dtype=dtype)
            seen_t = m_t > neg_inf
            P_t = np.exp(S_ij - np.where(seen_t, m_t, zero)[..., None])
            l_t = np.sum(P_t, axis=-1)
            # line 11: m_i^new = max(m_i, m~_ij),
            #          l_i^new = e^{m_i - m_i^new} l_i + e^{m~_ij - m_i^new} l~_ij
            #          (e^{-inf - m^new} = 0; while m_i^new = -inf nothing was kept: both factors 0)
            m_new = np.maximum(m_i, m_t)
            seen = m_new > neg_inf
            shift = np.where(seen, m_new, zero)
            alpha = np.where(seen & (m_i > neg_inf), np.exp(m_i - shift), zero)   # e^{m_i - m_i^new}
            beta = np.where(seen & seen_t, np.exp(m_t - shift), zero)             # e^{m~_ij - m_i^new}
            l_new = alpha * l_i + beta * l_t
            # line 12: O_i <- diag(l_i^new)^{-1} (diag(l_i) e^{m_i - m_i^new} O_i + e^{m~_ij - m_i^new} P~_ij V_j)
            #          (l_i^new = 0: nothing kept yet, O_i stays 0)
            inner = (l_i * alpha)[..., None] * O_i + beta[..., None] * np.einsum("bhxy,bhyp->bhxp", P_t, V_j)
            O[:, :, rows] = np.where((l_new > 0)[..., None], inner / np.where(l_new > 0, l_new, 1)[..., None], zero)
            # line 13: l_i <- l_i^new,  m_i <- m_i^new
            l_[:, :, rows] = l_new
            m[:, :, rows] = m_new
    # line 16: return O   (back to sequence-first (b l h p))
    return np.ascontiguousarray(np.moveaxis(O, 1, 2))
