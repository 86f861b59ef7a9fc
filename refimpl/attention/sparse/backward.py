r"""The backward pass (vector-Jacobian product) of sparse attention: the masked softmax backward over a pattern.

Two backward views, one per forward view of :func:`refimpl.attention.sparse.sparse_attention`:

* :func:`materialized_vjp` -- the dense keep mask ``M (h l l)`` and the ``(l l)`` weights formed again;
* :func:`block_sparse_vjp` -- FlashAttention's backward pass (Dao et al. 2022, Algorithm 4; FlashAttention-2,
  Algorithm 2) over the tiles of ``pattern.block_layout(block)`` only: the forward pass over the layout saves ``O``
  and the row log-sum-exp ``L``, the backward pass recomputes each kept tile's ``P = exp(S - L)`` and never forms an
  ``(l l)`` array.

The adjoint equations (per batch and head; ``s_ij = scale q_i . k_j`` for ``M_ij``, ``-inf`` elsewhere,
``P = softmax_j(s)``, ``O = P V``): ``dV = P^T dO``, ``dP = dO V^T``, ``D_i = rowsum(dO_i o O_i)``,
``dS = P o (dP - D)``, ``dQ = scale dS K``, ``dK = scale dS^T Q``.  A pair outside the pattern has ``P_ij = 0`` and
``dS_ij = 0``: no gradient flows through it; a query row with no kept key (output 0) contributes nothing.  The pattern
is not differentiable (no entry).  dtype: ``result_dtype(q, k, v, do)``, the gradients in it.

Shapes: ``q, k (b l h n)``, ``v (b l h p)``, ``do (b l h p)``; returns ``{"q": dq, "k": dk, "v": dv}``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_shape, result_dtype
from refimpl.attention.sparse.reference import SparsePattern, _block, validate

__all__ = ["materialized_vjp", "block_sparse_vjp"]


def _cotangent_o(do, b, l, h, p) -> np.ndarray:
    """The cotangent ``do (b l h p)`` of the output, checked like an input."""
    do = as_float_array(do, "do", ndim=4, allow_complex=False)
    check_shape(do, "do", (b, l, h, p), "(b, l, h, p), the shape of o", src="b, l, h from q, p from v")
    return do


def materialized_vjp(q, k, v, pattern: SparsePattern, *, do, scale: Optional[float] = None) -> dict:
    r"""The VJP of :func:`refimpl.attention.sparse.reference.materialized`, the ``(b h l l)`` weights formed.

    ``q, k (b l h n)``, ``v (b l h p)``, ``pattern`` (``pattern.l = l``, ``pattern.h`` 1 or ``h``), ``do (b l h p)``
    (the cotangent of ``o``).  Returns ``{"q", "k", "v"}`` (module docstring: the adjoint equations)."""
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    do = _cotangent_o(do, b, l, h, p)
    dtype = result_dtype(q, k, v, do)
    q, k, v, do = (x.astype(dtype, copy=False) for x in (q, k, v, do))
    tau = dtype.type(scale)
    # the forward again: M (h|1 l l);  S_ij = scale q_i . k_j (-inf outside M);  P = softmax_j(S);  O = P V
    M = pattern.mask()
    S = np.where(M[None], tau * np.einsum("bihn,bjhn->bhij", q, k), dtype.type(-np.inf))
    m_i = np.max(S, axis=-1, keepdims=True) if l else np.zeros(S.shape[:-1] + (1,), dtype=dtype)
    m_i = np.where(np.isneginf(m_i), dtype.type(0), m_i)
    E = np.exp(S - m_i)
    Z = np.sum(E, axis=-1, keepdims=True)
    P = E / np.where(Z > 0, Z, dtype.type(1))       # a row with no kept key: 0
    O = np.einsum("bhij,bjhp->bihp", P, v)
    # dV = P^T dO
    dv = np.einsum("bhij,bihp->bjhp", P, do)
    # dP = dO V^T
    dP = np.einsum("bihp,bjhp->bhij", do, v)
    # D_i = rowsum(dO_i o O_i)
    D = np.einsum("bihp,bihp->bhi", do, O)
    # dS = P o (dP - D)   (outside the pattern P = 0: dS = 0)
    dS = P * (dP - D[..., None])
    # dQ = scale dS K;  dK = scale dS^T Q
    dq = tau * np.einsum("bhij,bjhn->bihn", dS, k)
    dk = tau * np.einsum("bhij,bihn->bjhn", dS, q)
    return {"q": dq, "k": dk, "v": dv}


def block_sparse_vjp(q, k, v, pattern: SparsePattern, *, do, scale: Optional[float] = None,
                     block: Optional[int] = None) -> dict:
    r"""The VJP of :func:`refimpl.attention.sparse.reference.block_sparse`: FlashAttention's backward pass over the
    kept tiles of ``pattern.block_layout(block)``, literal.

    Per batch, head and query block ``u`` (``Q_u``, ``T`` rows), over its kept key blocks ``w`` (``K_w, V_w``) in the
    layout's order:

    * forward (saved): ``S = scale Q_u K_w^T`` (``-inf`` outside the tile's in-block mask), the online softmax
      ``m``, ``l``, ``O`` (as the forward view), then ``O_u = O / l`` and ``L_u = m + log l`` (``-inf``, ``O_u = 0``:
      no kept key);
    * ``D_u = rowsum(dO_u o O_u)``;
    * backward, per kept tile ``(u, w)``: ``P = exp(S - L_u)`` (recomputed; ``L_u = -inf``: ``P = 0``),
      ``dV_w <- dV_w + P^T dO_u``, ``dP = dO_u V_w^T``, ``dS = P o (dP - D_u)``,
      ``dQ_u <- dQ_u + scale dS K_w``, ``dK_w <- dK_w + scale dS^T Q_u``.

    ``block``: the tile size (default :attr:`SparsePattern.default_block`).  Shapes: ``q, k (b l h n)``,
    ``v, do (b l h p)`` -> ``{"q", "k", "v"}`` of the inputs' shapes.
    """
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    B = _block(block, pattern)
    do = _cotangent_o(do, b, l, h, p)
    dtype = result_dtype(q, k, v, do)
    q, k, v, do = (x.astype(dtype, copy=False) for x in (q, k, v, do))
    layout = pattern.block_layout(B)
    tau = dtype.type(scale)
    zero, neg_inf = dtype.type(0), dtype.type(-np.inf)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for bi in range(b):
        for hi in range(h):
            hh = hi if pattern.h == h else 0
            for u in range(layout.n_blocks):
                q0, q1 = u * B, min((u + 1) * B, l)
                Q_u, dO_u = q[bi, q0:q1, hi, :], do[bi, q0:q1, hi, :]
                tiles = list(zip(layout.key_blocks[hh][u], layout.tile_masks[hh][u]))

                def scores(w, tile_mask):
                    # S = scale Q_u K_w^T, -inf outside the tile's in-block mask
                    S = tau * (Q_u @ k[bi, w * B:min((w + 1) * B, l), hi, :].T)
                    return S if tile_mask is None else np.where(tile_mask, S, neg_inf)

                # the forward pass over the kept tiles: m, l, O (unnormalized)
                m = np.full(q1 - q0, neg_inf, dtype=dtype)
                l_sum = np.zeros(q1 - q0, dtype=dtype)
                O = np.zeros((q1 - q0, p), dtype=dtype)
                for w, tile_mask in tiles:
                    S = scores(w, tile_mask)
                    # m' = max(m, rowmax S);  P~ = exp(S - m');  c = exp(m - m');  l' = c l + rowsum P~;
                    # O' = c O + P~ V_w   (still -inf: nothing kept yet, shift by 0)
                    m_new = np.maximum(m, np.max(S, axis=1))
                    shift = np.where(np.isneginf(m_new), zero, m_new)
                    P_t = np.exp(S - shift[:, None])
                    c = np.exp(m - shift)
                    l_sum = c * l_sum + np.sum(P_t, axis=1)
                    O = c[:, None] * O + P_t @ v[bi, w * B:min((w + 1) * B, l), hi, :]
                    m = m_new
                # saved: O_u = O / l,  L_u = m + log l   (l = 0: no kept key, O_u = 0, L_u = -inf)
                seen = l_sum > 0
                O_u = O / np.where(seen, l_sum, dtype.type(1))[:, None]
                L_u = np.where(seen, m + np.log(np.where(seen, l_sum, dtype.type(1))), zero)
                # D_u = rowsum(dO_u o O_u)
                D_u = np.sum(dO_u * O_u, axis=1)
                for w, tile_mask in tiles:
                    cols = slice(w * B, min((w + 1) * B, l))
                    K_w, V_w = k[bi, cols, hi, :], v[bi, cols, hi, :]
                    # P = exp(S - L_u)   (L_u = -inf: P = 0)
                    P = np.where(seen[:, None], np.exp(scores(w, tile_mask) - L_u[:, None]), zero)
                    # dV_w <- dV_w + P^T dO_u
                    dv[bi, cols, hi, :] += P.T @ dO_u
                    # dP = dO_u V_w^T;  dS = P o (dP - D_u)
                    dS = P * (dO_u @ V_w.T - D_u[:, None])
                    # dQ_u <- dQ_u + scale dS K_w;  dK_w <- dK_w + scale dS^T Q_u
                    dq[bi, q0:q1, hi, :] += tau * (dS @ K_w)
                    dk[bi, cols, hi, :] += tau * (dS.T @ Q_u)
    return {"q": dq, "k": dk, "v": dv}
