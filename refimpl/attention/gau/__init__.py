"""refimpl.attention.gau: the gated attention unit and FLASH's mixed-chunk attention (see README.md here).

Hua et al. 2022, "Transformer Quality in Linear Time".  Two entry points, one per algorithm:

* :func:`gated_attention_unit` -- GAU, ``O = (U * (relu^2(Q K^T / L + b) V)) W_o``: view ``"quadratic"``
  (``backend="numpy"``: :func:`refimpl.attention.gau.reference.quadratic`; ``backend="numba"``: the tiled
  kernel :func:`refimpl.attention.gau.numba.gau_numba`);
* :func:`mixed_chunk_attention` -- FLASH: quadratic attention inside chunks of ``c`` plus linear attention
  between chunks: views ``"chunked"`` (numpy: the per-chunk loop with the running state; numba:
  :func:`refimpl.attention.gau.numba.mixed_chunk_numba`) and ``"materialized"`` (numpy: the ``(l l)`` matrix).

Their backwards (:mod:`refimpl.attention.gau.backward`): :func:`gated_attention_unit_vjp` (view ``"quadratic"``) and
:func:`mixed_chunk_attention_vjp` (views ``"chunked"``, the reverse scan over chunks, and ``"materialized"``).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.gau.reference import FLASH_ROWS, GAU_ROWS

__all__ = ["gated_attention_unit", "mixed_chunk_attention", "gated_attention_unit_vjp", "mixed_chunk_attention_vjp",
           "GAU_ROWS", "FLASH_ROWS", "GAU_IMPLEMENTATIONS", "FLASH_IMPLEMENTATIONS", "GAU_VJP_IMPLEMENTATIONS",
           "FLASH_VJP_IMPLEMENTATIONS"]

GAU_IMPLEMENTATIONS = register("refimpl.attention.gated_attention_unit", {
    ("quadratic", "numpy"): "refimpl.attention.gau.reference:quadratic",
    ("quadratic", "numba"): "refimpl.attention.gau.numba:gau_numba",
})

FLASH_IMPLEMENTATIONS = register("refimpl.attention.mixed_chunk_attention", {
    ("chunked", "numpy"): "refimpl.attention.gau.reference:chunked",
    ("materialized", "numpy"): "refimpl.attention.gau.reference:materialized",
    ("chunked", "numba"): "refimpl.attention.gau.numba:mixed_chunk_numba",
})

GAU_VJP_IMPLEMENTATIONS = register("refimpl.attention.gated_attention_unit_vjp", {
    ("quadratic", "numpy"): "refimpl.attention.gau.backward:quadratic_vjp",
})

FLASH_VJP_IMPLEMENTATIONS = register("refimpl.attention.mixed_chunk_attention_vjp", {
    ("chunked", "numpy"): "refimpl.attention.gau.backward:chunked_vjp",
    ("materialized", "numpy"): "refimpl.attention.gau.backward:materialized_vjp",
})


def gated_attention_unit(x, W_u, W_v, W_z, gamma, beta, W_o, *, causal: bool = False, scale: Optional[float] = None,
                         bias=None, view: str = "quadratic", backend: str = "numpy"):
    r"""The gated attention unit: ``O = (U * (relu^2(scale Q K^T + b) V)) W_o``.

    ``U = silu(x W_u)``, ``V = silu(x W_v)``, ``Z = silu(x W_z)``, ``Q = gamma[0] Z + beta[0]``,
    ``K = gamma[1] Z + beta[1]``.

    Parameters
    ----------
    x : ``(b l d)``;  W_u, W_v : ``(d p)`` (the paper's expansion ``e = p``);  W_z : ``(d n)`` (the shared
        dimension ``s = n``);  gamma, beta : ``(2 n)``, rows ``q, k``;  W_o : ``(p d)``.
    causal : bool, masks ``j > i``.
    scale : multiplies ``q . k``; ``None`` -> the paper's ``1/L``.
    bias : the relative position bias ``(2l - 1)``, ``b_ij = bias[j - i + l - 1]``, or ``None``.
    view, backend : ``("quadratic", "numpy")`` (default) or ``("quadratic", "numba")``.

    Returns ``o (b l d)``.
    """
    impl = GAU_IMPLEMENTATIONS.get(view, backend)
    return impl(x, W_u, W_v, W_z, gamma, beta, W_o, causal=causal, scale=scale, bias=bias)


def mixed_chunk_attention(x, W_u, W_v, W_z, gamma, beta, W_o, *, chunk: int, causal: bool = False, bias=None,
                          view: str = "chunked", backend: str = "numpy"):
    r"""FLASH's mixed-chunk attention: ``relu^2`` attention inside chunks of ``c``, linear attention between them.

    Parameters
    ----------
    x : ``(b l d)``;  W_u, W_v : ``(d p)``;  W_z : ``(d n)``;  gamma, beta : ``(4 n)``, rows ``quad_q, quad_k,
        lin_q, lin_k``;  W_o : ``(p d)``.
    chunk : the chunk length ``c >= 1`` (any ``L``; the short last chunk is scaled by ``1/c`` like the others).
    causal : bool: the quadratic part masks ``j > i``, the linear part sums the previous chunks only.
    bias : the in-chunk relative position bias ``(2c - 1)``, ``b_ij = bias[j - i + c - 1]``, or ``None``.
    view, backend : ``("chunked", "numpy")`` (default), ``("materialized", "numpy")`` or ``("chunked", "numba")``.

    Scalings (the paper's): quadratic scores ``/ c``; linear part ``/ c`` (causal) or ``/ L`` (non-causal).
    Returns ``o (b l d)``.
    """
    impl = FLASH_IMPLEMENTATIONS.get(view, backend)
    return impl(x, W_u, W_v, W_z, gamma, beta, W_o, chunk=chunk, causal=causal, bias=bias)


def gated_attention_unit_vjp(x, W_u, W_v, W_z, gamma, beta, W_o, *, do, causal: bool = False,
                             scale: Optional[float] = None, bias=None, view: str = "quadratic",
                             backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`gated_attention_unit` (the adjoint equations in
    :mod:`refimpl.attention.gau.backward`, written by hand).

    ``do (b l d)``: the cotangent of ``O``.  Returns the gradients of the real loss ``sum do * O`` for ``x``,
    ``W_u``, ``W_v``, ``W_z``, ``gamma``, ``beta``, ``W_o`` and ``bias`` (when given), each with its input's shape,
    in the working dtype.  ``view, backend``: ``("quadratic", "numpy")``.
    """
    impl = GAU_VJP_IMPLEMENTATIONS.get(view, backend)
    return impl(x, W_u, W_v, W_z, gamma, beta, W_o, do=do, causal=causal, scale=scale, bias=bias)


def mixed_chunk_attention_vjp(x, W_u, W_v, W_z, gamma, beta, W_o, *, do, chunk: int, causal: bool = False,
                              bias=None, view: str = "chunked", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`mixed_chunk_attention` (:mod:`refimpl.attention.gau.backward`).

    ``do (b l d)``: the cotangent of ``O``.  Returns the gradients for ``x``, ``W_u``, ``W_v``, ``W_z``, ``gamma (4 n)``,
    ``beta (4 n)``, ``W_o`` and ``bias (2c - 1)`` (when given).  ``view, backend``: ``("chunked", "numpy")`` (the
    reverse scan over chunks, default) or ``("materialized", "numpy")``.
    """
    impl = FLASH_VJP_IMPLEMENTATIONS.get(view, backend)
    return impl(x, W_u, W_v, W_z, gamma, beta, W_o, do=do, chunk=chunk, causal=causal, bias=bias)
