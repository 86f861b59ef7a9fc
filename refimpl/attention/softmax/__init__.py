"""refimpl.attention.softmax: exact softmax attention (see README.md in this folder).

One entry point, :func:`scaled_dot_product_attention`, with two views:

* ``"materialized"`` -- the ``(l s)`` scores formed, masked and normalized (``backend="numpy"``:
  :func:`refimpl.attention.softmax.reference.materialized`);
* ``"tiled"`` -- FlashAttention's online softmax over blocks of queries and keys, never forming the scores
  (``backend="numpy"``: :func:`refimpl.attention.softmax.reference.tiled`, Algorithm 1 of Dao et al. 2022
  written literally; ``backend="numba"``: :func:`refimpl.attention.softmax.numba.flash_attention`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl._validate import check_bool
from refimpl.attention.softmax.reference import (CAUSAL_ALIGNMENTS, attention_scale, causal_alignment, causal_mask,
                                                 logsumexp, multi_head_attention, softmax)

__all__ = ["scaled_dot_product_attention", "multi_head_attention", "causal_mask", "causal_alignment",
           "attention_scale", "softmax", "logsumexp", "CAUSAL_ALIGNMENTS", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.scaled_dot_product_attention", {
    ("materialized", "numpy"): "refimpl.attention.softmax.reference:materialized",
    ("tiled", "numpy"): "refimpl.attention.softmax.reference:tiled",
    ("tiled", "numba"): "refimpl.attention.softmax.numba:flash_attention",
})

# what only the materialized view computes (the tiled kernel has no mask, bias, weights or lse)
_MATERIALIZED_ONLY = ("mask", "bias", "return_weights", "return_lse")
# what only the tiled views take: the tile sizes (None: the view's default, 64 by 64 as the numba kernel)
_TILED_ONLY = ("block_q", "block_k")


def scaled_dot_product_attention(q, k, v, *, scale: Optional[float] = None, causal: bool = False,
                                 alignment: Optional[str] = None, mask=None, bias=None, view: str = "materialized",
                                 backend: str = "numpy", return_weights: bool = False, return_lse: bool = False,
                                 block_q: Optional[int] = None, block_k: Optional[int] = None):
    r"""``o = softmax(scale Q K^T + bias, masked) V`` per batch and head.

    Parameters
    ----------
    q, k, v : ``(b l h n)``, ``(b s h n)``, ``(b s h p)`` (sequence-first).
    scale : multiplies ``q . k`` before anything else; ``None`` -> ``n^{-1/2}``.
    causal : bool.  With ``l != s`` the diagonal must be named by ``alignment``.
    alignment : ``"top_left"`` (keep ``j <= i``, PyTorch ``is_causal``) or ``"bottom_right"``
        (keep ``j <= i + s - l``, FlashAttention); required when ``causal`` and ``l != s``.
    mask, bias : boolean keep-mask / additive bias, ``(l s)``, ``(b l s)`` or ``(b h l s)`` (materialized view only).
    view, backend : ``("materialized", "numpy")`` (default), ``("tiled", "numpy")`` (Algorithm 1 of
        FlashAttention, literal) or ``("tiled", "numba")`` (the kernel).
    return_weights, return_lse : also return the weights ``(b h l s)`` / the log-sum-exp ``(b h l)``
        (materialized view only).
    block_q, block_k : the tiled views' query and key tile sizes (the paper's ``B_r``, ``B_c``); ``None`` (the
        default) is the view's own default, 64 and 64.  Tiled views only.

    Returns ``o (b l h p)`` (a fully masked row is zero), then the weights and/or lse if asked.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    if view == "materialized":
        for name, value in (("block_q", block_q), ("block_k", block_k)):
            if value is not None:
                raise ValueError(f"{name}: a tile size of the 'tiled' views; the 'materialized' view has no tiles, "
                                 f"got {name}={value!r}")
        return impl(q, k, v, scale=scale, causal=causal, alignment=alignment, mask=mask, bias=bias,
                    return_weights=return_weights, return_lse=return_lse)
    given = {"mask": mask is not None, "bias": bias is not None,
             "return_weights": check_bool(return_weights, "return_weights"),
             "return_lse": check_bool(return_lse, "return_lse")}
    for name in _MATERIALIZED_ONLY:
        if given[name]:
            raise ValueError(f"{name}: only the 'materialized' view supports it; the {view!r} view computes "
                             f"o from q, k, v, scale and the causal diagonal only")
    tiles = {name: value for name, value in (("block_q", block_q), ("block_k", block_k)) if value is not None}
    return impl(q, k, v, scale=scale, causal=causal, alignment=alignment, **tiles)
