"""refimpl.attention.mega: the Mega layer (Ma et al. 2022/2023), see README.md in this folder.

Entry point :func:`mega_layer` (views ``full`` and ``chunked``); the parameters are a :class:`MegaParams`.
The EMA inside is :func:`refimpl.ssm.mega_ema`, reused.
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.mega.reference import ATTENTION_FUNCTIONS, MegaParams

__all__ = ["mega_layer", "MegaParams", "ATTENTION_FUNCTIONS", "MEGA_LAYER"]

MEGA_LAYER = register("refimpl.attention.mega_layer", {
    ("full", "numpy"): "refimpl.attention.mega.reference:full",
    ("chunked", "numpy"): "refimpl.attention.mega.reference:chunked",
    ("chunked", "numba"): "refimpl.attention.mega.numba:mega_layer_chunked",
})


def mega_layer(x, params: MegaParams, *, chunk: Optional[int] = None, causal: bool = False,
               attention: str = "softmax", scale: Optional[float] = None, view: str = "full",
               backend: str = "numpy"):
    r"""One Mega layer: ``Y = phi * SiLU(X' W_h + (gamma * O) U_h + b_h) + (1 - phi) * X`` with ``X' = EMA(X)`` and
    ``O = f(scale Q K^T + b_rel) V`` single-head attention inside chunks of ``chunk`` (None: the whole sequence).

    Shapes: ``x (b l d)`` -> ``Y (b l d)``; ``params`` a :class:`MegaParams` (``d`` width, ``e`` EMA expansion,
    ``n`` Z/query/key dim, ``p`` value dim).  ``causal``: keys ``j <= i`` (the EMA is causal unless the backward
    EMA parameters are given, which ``causal=True`` refuses).  ``attention``: ``"softmax"`` (``scale=None``:
    ``n^{-1/2}``), ``"laplace"`` or ``"relu2"`` (``scale=None``: ``1 / len_i``, Mega's length normalization).
    ``view``: ``"full"`` (one masked ``(l l)`` score matrix) or ``"chunked"`` (a loop over ``(c c)`` blocks);
    ``backend``: ``"numpy"``, or ``"numba"`` for ``chunked`` (the tiled flash kernel on the chunks as a batch).
    """
    return MEGA_LAYER.get(view, backend)(x, params, chunk=chunk, causal=causal, attention=attention, scale=scale)
