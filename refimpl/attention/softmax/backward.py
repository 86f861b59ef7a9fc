r"""The backward pass (vector-Jacobian product) of exact softmax attention, literal NumPy adjoints.

Two backward views, one per forward view of :func:`refimpl.attention.softmax.scaled_dot_product_attention`:

* :func:`materialized_vjp` -- the ``(l s)`` weights formed again, the adjoint equations applied to whole arrays;
* :func:`tiled_vjp` -- FlashAttention's backward pass (Dao et al. 2022, Algorithm 4; FlashAttention-2, Dao 2023,
  Algorithm 2), written literally: the forward pass saves ``O`` and the row log-sum-exp ``L``, the backward pass
  recomputes every tile ``P_ij = exp(S_ij - L_i)`` from ``L`` and never forms an ``(l s)`` array.

The adjoint equations (per batch and head; ``s_ij = scale q_i . k_j + bias_ij``, ``P = softmax_j(s)``, ``O = P V``;
``dX`` is the cotangent ``dL/dX`` of a real loss ``L``):

* ``dV = P^T dO``                                   (``o_i = sum_j P_ij v_j``)
* ``dP = dO V^T``
* ``D_i = rowsum(dO_i o O_i) = sum_j P_ij dP_ij``   (the softmax's Jacobian ``diag(P_i) - P_i P_i^T`` applied to
  ``dP_i`` is ``P_i o (dP_i - P_i . dP_i)``; FlashAttention computes ``P_i . dP_i`` as ``dO_i . O_i``)
* ``dS = P o (dP - D)``                            (``o``: the elementwise product)
* ``dQ = scale dS K``,  ``dK = scale dS^T Q``,  ``dbias = dS`` summed over the axes the bias was broadcast on.

Conventions (the forward's, see README.md in this folder)
-----------------------------------------------------------
* ``scale`` multiplies ``q . k`` (``None`` -> ``n^{-1/2}``); the causal ``alignment`` ``top_left`` (keep
  ``j <= i``) or ``bottom_right`` (keep ``j <= i + s - l``); masked keys (``mask`` False, ``bias = -inf``, off the
  causal diagonal) have ``P_ij = 0`` and so ``dS_ij = 0``: no gradient flows through them, and a ``-inf`` bias
  entry gets the gradient 0.
* A **fully masked row** (no key kept) has the output 0 and contributes nothing: its ``dQ`` row is 0 and it adds
  nothing to ``dK``, ``dV`` or ``dbias``.
* ``mask`` is boolean (not differentiable: no entry in the result).
* dtype: the working dtype is ``result_dtype(q, k, v, bias, do)`` (float32 only when every float input is); each
  gradient is returned in it (its input's dtype when the inputs share one; never a downcast).

Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``do (b l h p)``; ``mask``/``bias`` ``(l s)``,
``(b l s)`` or ``(b h l s)``.  Returns ``{"q": dq (b l h n), "k": dk (b s h n), "v": dv (b s h p)}`` and
``"bias"`` (the bias's shape) when a bias is given.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_int, check_shape, result_dtype
from refimpl.attention.softmax.reference import (_bias, _keep, attention_scale, causal_alignment, causal_mask,
                                                 softmax, validate_qkv)

__all__ = ["materialized_vjp", "tiled_vjp", "tiled_forward"]


def _cotangent_o(do, b, l, h, p) -> np.ndarray:
    """The cotangent ``do (b l h p)`` of the output, checked like an input."""
    do = as_float_array(do, "do", ndim=4, allow_complex=False)
    check_shape(do, "do", (b, l, h, p), "(b, l, h, p), the shape of o", src="b, l, h from q, p from v")
    return do


def _sum_to(dS: np.ndarray, ndim: int) -> np.ndarray:
    """``dS (b h l s)`` summed over the axes a ``(l s)`` / ``(b l s)`` / ``(b h l s)`` bias was broadcast on."""
    if ndim == 2:
        return dS.sum(axis=(0, 1))
    if ndim == 3:
        return dS.sum(axis=1)
    return dS


# ------------------------------------------------------------------ the materialized view

def materialized_vjp(q, k, v, *, do, scale: Optional[float] = None, causal: bool = False,
                     alignment: Optional[str] = None, mask=None, bias=None) -> dict:
    r"""The VJP of :func:`refimpl.attention.softmax.reference.materialized` with the ``(b h l s)`` weights formed.

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``do (b l h p)`` (the cotangent of ``o``); ``scale``,
    ``causal``, ``alignment``, ``mask``, ``bias`` as the forward.  Returns ``{"q", "k", "v"}`` (and ``"bias"`` when
    given) with the inputs' shapes; see the module docstring for the adjoint equations and the conventions.
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    scale = attention_scale(scale, n)
    keep = _keep(mask, alignment, b, h, l, s)
    bias_arr = _bias(bias, b, h, l, s)
    bias_ndim = None if bias is None else np.ndim(bias)   # (checked by _bias: (l s), (b l s) or (b h l s))
    do = _cotangent_o(do, b, l, h, p)
    dtype = result_dtype(q, k, v, bias_arr, do)
    q, k, v, do = (x.astype(dtype, copy=False) for x in (q, k, v, do))
    tau = dtype.type(scale)

    # the forward again: S_ij = scale q_i . k_j + bias_ij (masked -inf),  P = softmax_j(S),  O = P V
    S = tau * np.einsum("bihn,bjhn->bhij", q, k)
    if bias_arr is not None:
        S = S + bias_arr.astype(dtype, copy=False)
    S = np.where(keep, S, dtype.type(-np.inf))
    P = softmax(S, axis=-1)                                   # (b h l s); a fully masked row: 0
    O = np.einsum("bhij,bjhp->bihp", P, v)                     # (b l h p)

    # dV = P^T dO:  dv_j = sum_i P_ij do_i
    dv = np.einsum("bhij,bihp->bjhp", P, do)
    # dP = dO V^T:  dP_ij = do_i . v_j
    dP = np.einsum("bihp,bjhp->bhij", do, v)
    # D_i = rowsum(dO_i o O_i)   (= sum_j P_ij dP_ij)
    D = np.einsum("bihp,bihp->bhi", do, O)
    # dS = P o (dP - D)          (masked entries: P = 0, dS = 0)
    dS = P * (dP - D[..., None])
    # dQ = scale dS K:  dq_i = scale sum_j dS_ij k_j
    dq = tau * np.einsum("bhij,bjhn->bihn", dS, k)
    # dK = scale dS^T Q:  dk_j = scale sum_i dS_ij q_i
    dk = tau * np.einsum("bhij,bihn->bjhn", dS, q)
    out = {"q": dq, "k": dk, "v": dv}
    if bias_arr is not None:
        # dbias = dS, summed over the axes the bias was broadcast on ((l s): b and h; (b l s): h)
        out["bias"] = _sum_to(dS, bias_ndim).astype(dtype, copy=False)
    return out


# ------------------------------------------------------------------ the tiled view (FlashAttention's backward)

def _tiles(length: int, B: int):
    """The tiles ``[t B, min((t + 1) B, length))`` of an axis (the last may be short)."""
    return [slice(t * B, min((t + 1) * B, length)) for t in range(-(-length // B))]


def tiled_forward(q, k, v, *, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
                  block_q: int = 64, block_k: int = 64):
    r"""FlashAttention-2's forward pass (Dao 2023, Algorithm 1) with what the backward pass saves: ``(O, L)``.

    Per query tile ``Q_i`` (``B_r = block_q`` rows), over the key tiles ``K_j, V_j`` (``B_c = block_k`` rows) with
    the running row max ``m_i``, row sum ``l_i`` and *unnormalized* output ``O_i``:

    * ``S_ij = scale Q_i K_j^T`` (masked ``-inf`` off the causal diagonal);  ``m_i^new = max(m_i, rowmax S_ij)``;
    * ``P~_ij = exp(S_ij - m_i^new)``;  ``l_i <- e^{m_i - m_i^new} l_i + rowsum P~_ij``;
      ``O_i <- diag(e^{m_i - m_i^new}) O_i + P~_ij V_j``;
    * at the end ``O_i <- diag(l_i)^{-1} O_i`` and ``L_i = m_i + log l_i`` (the row log-sum-exp; ``-inf`` and
      ``O_i = 0`` on a fully masked row).

    Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)`` -> ``O (b h l p)`` and ``L (b h l)`` (head-first, as
    the backward pass reads them).
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    B_r = check_int(block_q, "block_q", minimum=1)
    B_c = check_int(block_k, "block_k", minimum=1)
    dtype = result_dtype(q, k, v)
    tau = dtype.type(attention_scale(scale, n))
    Q, K, V = (np.moveaxis(x.astype(dtype, copy=False), 2, 1) for x in (q, k, v))
    keep = causal_mask(l, s, alignment) if alignment is not None else None
    zero, neg_inf = dtype.type(0.0), dtype.type(-np.inf)
    O = np.zeros((b, h, l, p), dtype=dtype)
    L = np.full((b, h, l), neg_inf, dtype=dtype)
    for rows in _tiles(l, B_r):
        Q_i = Q[:, :, rows]
        # m_i = -inf,  l_i = 0,  O_i = 0
        m_i = np.full(Q_i.shape[:3], neg_inf, dtype=dtype)
        l_i = np.zeros(Q_i.shape[:3], dtype=dtype)
        O_i = np.zeros(Q_i.shape[:3] + (p,), dtype=dtype)
        for cols in _tiles(s, B_c):
            # S_ij = scale Q_i K_j^T   (masked: -inf)
            S_ij = tau * np.einsum("bhxn,bhyn->bhxy", Q_i, K[:, :, cols])
            if keep is not None:
                S_ij = np.where(keep[rows, cols], S_ij, neg_inf)
            # m_i^new = max(m_i, rowmax S_ij)   (still -inf: nothing kept yet, shift by 0)
            m_new = np.maximum(m_i, np.max(S_ij, axis=-1))
            shift = np.where(m_new > neg_inf, m_new, zero)
            # P~_ij = exp(S_ij - m_i^new);  c = e^{m_i - m_i^new} (0 while nothing was kept)
            P_t = np.exp(S_ij - shift[..., None])
            c = np.exp(m_i - shift)
            # l_i <- c l_i + rowsum P~_ij;  O_i <- diag(c) O_i + P~_ij V_j
            l_i = c * l_i + np.sum(P_t, axis=-1)
            O_i = c[..., None] * O_i + np.einsum("bhxy,bhyp->bhxp", P_t, V[:, :, cols])
            m_i = m_new
        # O_i <- diag(l_i)^{-1} O_i   (l_i = 0: a fully masked row, O_i = 0)
        seen = l_i > 0
        O[:, :, rows] = O_i / np.where(seen, l_i, dtype.type(1))[..., None]
        # L_i = m_i + log l_i   (-inf on a fully masked row)
        with np.errstate(divide="ignore"):
            L[:, :, rows] = np.where(seen, m_i + np.log(np.where(seen, l_i, dtype.type(1))), neg_inf)
    return O, L


def tiled_vjp(q, k, v, *, do, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
              block_q: int = 64, block_k: int = 64) -> dict:
    r"""FlashAttention's backward pass (Dao et al. 2022, Algorithm 4 without dropout; FlashAttention-2, Dao 2023,
    Algorithm 2), written literally in NumPy: the VJP of :func:`refimpl.attention.softmax.reference.tiled`.

    The forward pass (:func:`tiled_forward`) saves ``O`` and the row log-sum-exp ``L``; then

    * ``D = rowsum(dO o O)``  (``(b h l)``, FlashAttention-2 line 4);
    * for each key tile ``j`` (``K_j, V_j``, ``B_c = block_k`` rows; outer loop): ``dK_j = 0``, ``dV_j = 0``; for each
      query tile ``i`` (``Q_i, O_i, dO_i, L_i, D_i``, ``B_r = block_q`` rows; inner loop):

      - ``S_ij = scale Q_i K_j^T`` (masked ``-inf`` off the causal diagonal), ``P_ij = exp(S_ij - L_i)``
        (recomputed from the saved ``L``; a fully masked row, ``L_i = -inf``: ``P_ij = 0``);
      - ``dV_j <- dV_j + P_ij^T dO_i``;  ``dP_ij = dO_i V_j^T``;  ``dS_ij = P_ij o (dP_ij - D_i)``;
      - ``dQ_i <- dQ_i + scale dS_ij K_j`` (accumulated over the key tiles, in memory);
        ``dK_j <- dK_j + scale dS_ij^T Q_i``;

      then ``dK_j``, ``dV_j`` are written out.

    The same conventions as :func:`materialized_vjp` (the tiled forward has no mask and no bias: ``scale``, ``causal``
    and ``alignment`` only).  Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``do (b l h p)``; returns
    ``{"q": dq, "k": dk, "v": dv}``.  ``block_q`` (``B_r``) and ``block_k`` (``B_c``) are positive integers.
    """
    q, k, v, (b, l, s, h, n, p) = validate_qkv(q, k, v)
    alignment = causal_alignment(causal, alignment, l, s)
    B_r = check_int(block_q, "block_q", minimum=1)
    B_c = check_int(block_k, "block_k", minimum=1)
    do = _cotangent_o(do, b, l, h, p)
    dtype = result_dtype(q, k, v, do)
    q, k, v, do = (x.astype(dtype, copy=False) for x in (q, k, v, do))
    tau = dtype.type(attention_scale(scale, n))
    # the forward pass's saved O (b h l p) and L (b h l)
    O, L = tiled_forward(q, k, v, scale=scale, causal=causal, alignment=alignment, block_q=B_r, block_k=B_c)
    Q, K, V, dO = (np.moveaxis(x, 2, 1) for x in (q, k, v, do))   # head-first (b h . .)
    keep = causal_mask(l, s, alignment) if alignment is not None else None
    zero, neg_inf = dtype.type(0.0), dtype.type(-np.inf)
    seen = L > neg_inf
    L_shift = np.where(seen, L, zero)
    # D = rowsum(dO o O)
    D = np.sum(dO * O, axis=-1)
    dQ = np.zeros((b, h, l, n), dtype=dtype)
    dK = np.zeros((b, h, s, n), dtype=dtype)
    dV = np.zeros((b, h, s, p), dtype=dtype)
    # for each key tile j (outer loop)
    for cols in _tiles(s, B_c):
        K_j, V_j = K[:, :, cols], V[:, :, cols]
        # dK_j = 0, dV_j = 0
        dK_j = np.zeros(K_j.shape, dtype=dtype)
        dV_j = np.zeros(V_j.shape, dtype=dtype)
        # for each query tile i (inner loop)
        for rows in _tiles(l, B_r):
            Q_i, dO_i, D_i = Q[:, :, rows], dO[:, :, rows], D[:, :, rows]
            # S_ij = scale Q_i K_j^T   (masked: -inf)
            S_ij = tau * np.einsum("bhxn,bhyn->bhxy", Q_i, K_j)
            if keep is not None:
                S_ij = np.where(keep[rows, cols], S_ij, neg_inf)
            # P_ij = exp(S_ij - L_i)   (L_i = -inf, a fully masked row: P_ij = 0)
            P_ij = np.where(seen[:, :, rows][..., None], np.exp(S_ij - L_shift[:, :, rows][..., None]), zero)
            # dV_j <- dV_j + P_ij^T dO_i
            dV_j += np.einsum("bhxy,bhxp->bhyp", P_ij, dO_i)
            # dP_ij = dO_i V_j^T
            dP_ij = np.einsum("bhxp,bhyp->bhxy", dO_i, V_j)
            # dS_ij = P_ij o (dP_ij - D_i)
            dS_ij = P_ij * (dP_ij - D_i[..., None])
            # dQ_i <- dQ_i + scale dS_ij K_j
            dQ[:, :, rows] += tau * np.einsum("bhxy,bhyn->bhxn", dS_ij, K_j)
            # dK_j <- dK_j + scale dS_ij^T Q_i
            dK_j += tau * np.einsum("bhxy,bhxn->bhyn", dS_ij, Q_i)
        # write dK_j, dV_j
        dK[:, :, cols] = dK_j
        dV[:, :, cols] = dV_j
    # back to sequence-first (b l h .)
    return {"q": np.ascontiguousarray(np.moveaxis(dQ, 1, 2)), "k": np.ascontiguousarray(np.moveaxis(dK, 1, 2)),
            "v": np.ascontiguousarray(np.moveaxis(dV, 1, 2))}
