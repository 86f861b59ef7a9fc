"""refimpl.attention.softmax: exact softmax attention (see README.md in this folder).

One entry point, :func:`scaled_dot_product_attention`, with two views:

* ``"materialized"`` -- the ``(l s)`` scores formed, masked and normalized (``backend="numpy"``:
  :func:`refimpl.attention.softmax.reference.materialized`);
* ``"tiled"`` -- FlashAttention's online softmax over blocks of queries and keys, never forming the scores
  (``backend="numpy"``: :func:`refimpl.attention.softmax.reference.tiled`, Algorithm 1 of Dao et al. 2022
  written literally; ``backend="numba"``: :func:`refimpl.attention.softmax.numba.flash_attention`).

Its backward pass, :func:`scaled_dot_product_attention_vjp`, has the same two views: ``"materialized"``
(:func:`refimpl.attention.softmax.backward.materialized_vjp`) and ``"tiled"`` (FlashAttention's backward pass:
:func:`refimpl.attention.softmax.backward.tiled_vjp`, literal; ``backend="numba"``:
:func:`refimpl.attention.softmax.numba_backward.flash_attention_vjp`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl._validate import check_bool
from refimpl.attention.softmax.reference import (CAUSAL_ALIGNMENTS, attention_scale, causal_alignment, causal_mask,
                                                 logsumexp, multi_head_attention, softmax)

__all__ = ["scaled_dot_product_attention", "scaled_dot_product_attention_vjp", "multi_head_attention", "multi_head_attention_vjp", "causal_mask", "causal_alignment",
           "attention_scale", "softmax", "logsumexp", "CAUSAL_ALIGNMENTS", "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS",
           "MULTI_HEAD_VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.scaled_dot_product_attention", {
    ("materialized", "numpy"): "refimpl.attention.softmax.reference:materialized",
    ("tiled", "numpy"): "refimpl.attention.softmax.reference:tiled",
    ("tiled", "numba"): "refimpl.attention.softmax.numba:flash_attention",
    ("tiled", "cuda"): "refimpl.attention.softmax.cuda:flash_attention",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.scaled_dot_product_attention_vjp", {
    ("materialized", "numpy"): "refimpl.attention.softmax.backward:materialized_vjp",
    ("tiled", "numpy"): "refimpl.attention.softmax.backward:tiled_vjp",
    ("tiled", "numba"): "refimpl.attention.softmax.numba_backward:flash_attention_vjp",
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
        (materialized view only; ``return_lse`` also ``("tiled", "cuda")``).
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
        if given[name] and not (name == "return_lse" and backend == "cuda"):
            raise ValueError(f"{name}: only the 'materialized' view supports it; the {view!r} view computes "
                             f"o from q, k, v, scale and the causal diagonal only")
    tiles = {name: value for name, value in (("block_q", block_q), ("block_k", block_k)) if value is not None}
    if backend == "cuda":
        # the CUDA tiled kernel also returns the log-sum-exp (its row statistics) when asked
        tiles["return_lse"] = given["return_lse"]
    return impl(q, k, v, scale=scale, causal=causal, alignment=alignment, **tiles)


def scaled_dot_product_attention_vjp(q, k, v, *, do, scale: Optional[float] = None, causal: bool = False,
                                     alignment: Optional[str] = None, mask=None, bias=None, view: str = "materialized",
                                     backend: str = "numpy", return_weights: bool = False, return_lse: bool = False,
                                     block_q: Optional[int] = None, block_k: Optional[int] = None) -> dict:
    r"""The backward pass of :func:`scaled_dot_product_attention`: ``{input: dL/dinput}`` for a cotangent ``do`` of ``o``.

    Parameters
    ----------
    q, k, v : ``(b l h n)``, ``(b s h n)``, ``(b s h p)``; the forward's inputs.
    do : ``(b l h p)``, required (keyword-only): the cotangent ``dL/do`` of the output.
    scale, causal, alignment, mask, bias, block_q, block_k : as the forward (``mask``, ``bias``: the materialized
        view only; ``block_q``, ``block_k``: the tiled views only).
    view, backend : ``("materialized", "numpy")`` (default; the adjoint equations on the formed ``(l s)`` weights),
        ``("tiled", "numpy")`` (FlashAttention's backward pass, literal: ``P`` recomputed per tile from the saved
        log-sum-exp) or ``("tiled", "numba")`` (the kernel).
    return_weights, return_lse : the forward's output selectors; the VJP is that of ``o`` alone, so only ``False``
        is taken (the weights and the log-sum-exp carry no cotangent here).

    Returns ``{"q": dq, "k": dk, "v": dv}`` with the inputs' shapes, and ``"bias": dbias`` (the bias's shape, ``dS``
    summed over its broadcast axes) when a bias is given; ``mask`` is boolean and gets no entry.  A fully masked query
    row contributes nothing (its ``dq`` row is 0).  Adjoint equations: ``dV = P^T dO``, ``dP = dO V^T``,
    ``D = rowsum(dO o O)``, ``dS = P o (dP - D)``, ``dQ = scale dS K``, ``dK = scale dS^T Q``.
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    for name, value in (("return_weights", return_weights), ("return_lse", return_lse)):
        if check_bool(value, name):
            raise ValueError(f"{name}: the VJP is that of the output o alone (do is its cotangent); expected False, "
                             f"got True")
    if view == "materialized":
        for name, value in (("block_q", block_q), ("block_k", block_k)):
            if value is not None:
                raise ValueError(f"{name}: a tile size of the 'tiled' views; the 'materialized' view has no tiles, "
                                 f"got {name}={value!r}")
        return impl(q, k, v, do=do, scale=scale, causal=causal, alignment=alignment, mask=mask, bias=bias)
    for name, value in (("mask", mask), ("bias", bias)):
        if value is not None:
            raise ValueError(f"{name}: only the 'materialized' view supports it; the {view!r} view differentiates "
                             f"o of q, k, v, scale and the causal diagonal only")
    tiles = {name: value for name, value in (("block_q", block_q), ("block_k", block_k)) if value is not None}
    return impl(q, k, v, do=do, scale=scale, causal=causal, alignment=alignment, **tiles)


MULTI_HEAD_VJP_IMPLEMENTATIONS = register("refimpl.attention.multi_head_attention_vjp", {
    ("materialized", "numpy"): "refimpl.attention.softmax.backward_multi_head:materialized_vjp",
    ("tiled", "numpy"): "refimpl.attention.softmax.backward_multi_head:tiled_vjp",
    ("tiled", "numba"): "refimpl.attention.softmax.backward_multi_head:tiled_numba_vjp",
})


def multi_head_attention_vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, *, dout, scale: Optional[float] = None,
                             causal: bool = False, alignment: Optional[str] = None, mask=None, bias=None,
                             view: str = "materialized", backend: str = "numpy", block_q: Optional[int] = None,
                             block_k: Optional[int] = None) -> dict:
    r"""The backward pass of :func:`multi_head_attention`: ``{input: dL/dinput}`` for a cotangent ``dout`` of ``out``.

    The forward's arguments, then keyword-only ``dout (b l d_out)`` (required), the forward's keywords, ``view``:
    ``"materialized"`` (default; mask and bias allowed) or ``"tiled"`` (the inner softmax attention's adjoint is
    FlashAttention's backward pass, ``backend`` ``"numpy"`` or ``"numba"``; ``block_q``/``block_k`` its tiles).
    The projections' adjoints around the softmax backward (:mod:`.backward_multi_head`): ``dW_O = Z^T dout``,
    ``dZ = dout W_O^T``, the attention VJP, ``dW_Q[x] = X_q^T dQ_x``, ``dX_q = sum_x dQ_x W_Q[x]^T``, ...

    Returns ``{"x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O"}`` with the inputs' shapes, and ``"bias"`` when given; in
    the working dtype (float32 only when every input and ``dout`` are float32).
    """
    impl = MULTI_HEAD_VJP_IMPLEMENTATIONS.get(view, backend)
    if view == "materialized":
        for name, value in (("block_q", block_q), ("block_k", block_k)):
            if value is not None:
                raise ValueError(f"{name}: a tile size of the 'tiled' view; the 'materialized' view has no tiles, "
                                 f"got {name}={value!r}")
        return impl(x_q, x_kv, W_Q, W_K, W_V, W_O, dout=dout, scale=scale, causal=causal, alignment=alignment,
                    mask=mask, bias=bias)
    for name, value in (("mask", mask), ("bias", bias)):
        if value is not None:
            raise ValueError(f"{name}: only the 'materialized' view supports it; the {view!r} view differentiates "
                             f"out of x_q, x_kv, the weights, scale and the causal diagonal only")
    return impl(x_q, x_kv, W_Q, W_K, W_V, W_O, dout=dout, scale=scale, causal=causal, alignment=alignment,
                block_q=block_q, block_k=block_k)
