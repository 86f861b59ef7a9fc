"""refimpl.attention.sparse: fixed sparse attention patterns (see README.md in this folder).

Patterns (each a frozen :class:`SparsePattern` with ``.mask()`` and ``.block_layout(block)``):
:func:`sliding_window_pattern`, :func:`longformer_pattern` (Beltagy et al. 2020), :func:`strided_pattern`,
:func:`fixed_pattern` (Child et al. 2019), :func:`bigbird_pattern` (Zaheer et al. 2020, ITC).

One entry point, :func:`sparse_attention`, with two views:

* ``"materialized"`` -- the dense keep mask ``(h l l)`` and the masked softmax (``backend="numpy"``:
  :func:`refimpl.attention.sparse.reference.materialized`);
* ``"block_sparse"`` -- FlashAttention's online softmax over the pattern's block layout, never forming an
  ``(l l)`` array (``backend="numpy"``: :func:`refimpl.attention.sparse.reference.block_sparse`, the literal loop;
  ``backend="numba"``: :func:`refimpl.attention.sparse.numba.block_sparse_attention`, the kernel).

Its backward pass, :func:`sparse_attention_vjp`, has the same two views: ``"materialized"``
(:func:`refimpl.attention.sparse.backward.materialized_vjp`) and ``"block_sparse"`` (FlashAttention's backward pass
over the kept tiles: :func:`refimpl.attention.sparse.backward.block_sparse_vjp`; ``backend="numba"``:
:func:`refimpl.attention.sparse.numba_backward.block_sparse_attention_vjp`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.sparse.reference import (DEFAULT_BLOCK, PATTERN_KINDS, BlockLayout, SparsePattern,
                                                bigbird_pattern, fixed_pattern, longformer_pattern,
                                                sliding_window_pattern, strided_pattern)

# SparsePattern and BlockLayout: importable records built by the builders (not functions of data, not in __all__)
__all__ = ["sparse_attention", "sparse_attention_vjp", "PATTERN_KINDS", "DEFAULT_BLOCK",
           "sliding_window_pattern", "longformer_pattern", "strided_pattern", "fixed_pattern", "bigbird_pattern",
           "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.sparse_attention", {
    ("materialized", "numpy"): "refimpl.attention.sparse.reference:materialized",
    ("block_sparse", "numpy"): "refimpl.attention.sparse.reference:block_sparse",
    ("block_sparse", "numba"): "refimpl.attention.sparse.numba:block_sparse_attention",
    ("block_sparse", "cuda"): "refimpl.attention.sparse.cuda:block_sparse_attention",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.sparse_attention_vjp", {
    ("materialized", "numpy"): "refimpl.attention.sparse.backward:materialized_vjp",
    ("block_sparse", "numpy"): "refimpl.attention.sparse.backward:block_sparse_vjp",
    ("block_sparse", "numba"): "refimpl.attention.sparse.numba_backward:block_sparse_attention_vjp",
})


def sparse_attention(q, k, v, pattern: SparsePattern, *, scale: Optional[float] = None, view: str = "materialized",
                     backend: str = "numpy", block: Optional[int] = None):
    r"""``o = softmax(scale Q K^T, masked by pattern) V`` per batch and head (self-attention).

    Parameters
    ----------
    q, k : ``(b l h n)``;  v : ``(b l h p)``.
    pattern : a :class:`SparsePattern` with ``pattern.l = l`` and ``pattern.h`` 1 (shared by every head) or ``h``.
    scale : multiplies ``q . k``; ``None`` -> ``n^{-1/2}``.
    view, backend : ``("materialized", "numpy")`` (default), ``("block_sparse", "numpy")`` or
        ``("block_sparse", "numba")``.
    block : the tile size of the ``"block_sparse"`` view (default: BigBird's block, else 64); not taken by
        ``"materialized"``.

    Returns ``o (b l h p)``; a query row with no kept key is zero.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    if view == "materialized":
        if block is not None:
            raise ValueError(f"block: only the 'block_sparse' view has tiles; the 'materialized' view takes "
                             f"block=None, got {block!r}")
        return impl(q, k, v, pattern, scale=scale)
    return impl(q, k, v, pattern, scale=scale, block=block)


def sparse_attention_vjp(q, k, v, pattern: SparsePattern, *, do, scale: Optional[float] = None,
                         view: str = "materialized", backend: str = "numpy", block: Optional[int] = None) -> dict:
    r"""The backward pass of :func:`sparse_attention`: ``{input: dL/dinput}`` for a cotangent ``do`` of ``o``.

    Parameters
    ----------
    q, k : ``(b l h n)``;  v : ``(b l h p)``;  pattern, scale, block : as the forward.
    do : ``(b l h p)``, required (keyword-only): the cotangent ``dL/do`` of the output.
    view, backend : ``("materialized", "numpy")`` (default; the masked softmax's adjoints on the formed weights) or
        ``("block_sparse", "numpy")`` (FlashAttention's backward pass over the pattern's kept tiles, literal) or
        ``("block_sparse", "numba")`` (the kernel).

    Returns ``{"q": dq, "k": dk, "v": dv}`` with the inputs' shapes (the pattern is not differentiable).  Adjoint
    equations: ``dV = P^T dO``, ``dP = dO V^T``, ``D = rowsum(dO o O)``, ``dS = P o (dP - D)`` (0 outside the
    pattern), ``dQ = scale dS K``, ``dK = scale dS^T Q``; a query row with no kept key contributes nothing.
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    if view == "materialized":
        if block is not None:
            raise ValueError(f"block: only the 'block_sparse' view has tiles; the 'materialized' view takes "
                             f"block=None, got {block!r}")
        return impl(q, k, v, pattern, do=do, scale=scale)
    return impl(q, k, v, pattern, do=do, scale=scale, block=block)
