"""refimpl.attention.linformer: Linformer attention (Wang et al. 2020; see README.md in this folder).

One entry point, :func:`linformer_attention`, with two views (its backward: :func:`linformer_attention_vjp`,
view ``"materialized"``, :mod:`refimpl.attention.linformer.backward`):

* ``"materialized"`` -- ``K_bar = E k``, ``V_bar = F v``, the ``(l r)`` scores, the softmax and the output, literally
  (``backend="numpy"``: :func:`refimpl.attention.linformer.reference.materialized`);
* ``"tiled"`` -- the projections by BLAS, then FlashAttention's tiled online softmax over the ``r`` projected keys
  (``backend="numba"``: :func:`refimpl.attention.linformer.numba.tiled`).

The layer with the paper's parameter sharing: :func:`linformer_layer` (``sharing="none" | "headwise" |
"key_value" | "layerwise"``) and :func:`linformer_stack` (layerwise sharing across a stack of layers).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.linformer.reference import SHARINGS, linformer_layer, linformer_stack

__all__ = ["linformer_attention", "linformer_attention_vjp", "linformer_layer", "linformer_stack", "SHARINGS",
           "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.linformer_attention", {
    ("materialized", "numpy"): "refimpl.attention.linformer.reference:materialized",
    ("tiled", "numba"): "refimpl.attention.linformer.numba:tiled",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.linformer_attention_vjp", {
    ("materialized", "numpy"): "refimpl.attention.linformer.backward:materialized_vjp",
})


def linformer_attention(q, k, v, E, F, *, scale: Optional[float] = None, view: str = "materialized",
                        backend: str = "numpy", block_q: Optional[int] = None, block_k: Optional[int] = None):
    r"""``o = softmax(scale q (E k)^T) (F v)`` per batch entry and head (Linformer, Wang et al. 2020, eq. 7).

    Parameters
    ----------
    q, k, v : ``(b l h n)``, ``(b s h n)``, ``(b s h p)`` (sequence-first; the paper's self-attention has ``s = l``).
    E, F : ``(h r s)`` (one projection per head) or ``(r s)`` (shared by every head), the same ``r`` (the
        projected length, the paper's ``k``); applied as stored: ``K_bar = E k``.
    scale : multiplies ``q . K_bar``; ``None`` -> ``n^{-1/2}`` (the paper's ``1/sqrt(d_k)``, ``d_k = n``).
    view, backend : ``("materialized", "numpy")`` (default) or ``("tiled", "numba")``.
    block_q, block_k : the tiled view's tile sizes (``None``: the flash kernel's 64 by 64); tiled view only.

    Not causal (the projection mixes future positions into every ``K_bar_t``): there is no ``causal`` argument.
    Returns ``o (b l h p)``; ``r = 0`` gives zeros.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    tiles = {name: value for name, value in (("block_q", block_q), ("block_k", block_k)) if value is not None}
    if view == "materialized" and tiles:
        name = next(iter(tiles))
        raise ValueError(f"{name}: a tile size of the 'tiled' view; the 'materialized' view has no tiles, "
                         f"got {name}={tiles[name]!r}")
    return impl(q, k, v, E, F, scale=scale, **tiles)


def linformer_attention_vjp(q, k, v, E, F, *, do, scale: Optional[float] = None, view: str = "materialized",
                            backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`linformer_attention` (the adjoint equations in
    :mod:`refimpl.attention.linformer.backward`, written by hand).

    ``do (b l h p)``: the cotangent of ``o``.  Returns ``{"q", "k", "v", "E", "F"}`` gradients of the real loss
    ``sum do * o``, each with its input's shape, in the working dtype (a shared ``(r s)`` projection's gradient
    sums the heads).
    ``view, backend``: ``("materialized", "numpy")``.
    """
    return VJP_IMPLEMENTATIONS.get(view, backend)(q, k, v, E, F, do=do, scale=scale)
