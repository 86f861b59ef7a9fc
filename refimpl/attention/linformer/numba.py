r"""Linformer attention, the ``"tiled"`` view on the ``numba`` backend: project with BLAS, then the tiled
online-softmax kernel.

``K_bar = E k`` and ``V_bar = F v`` (``(r s) x (s n)`` per batch entry and head) are formed with NumPy's
``matmul`` (BLAS GEMMs, the head axis batched); the attention of the ``l`` queries over the ``r`` projected keys
then runs through :func:`refimpl.attention.softmax.numba.flash_attention` (FlashAttention's tiling, never forming
the ``(l r)`` scores; non-causal, since the projection mixes every position).  Computes
:func:`refimpl.attention.linformer.reference.materialized`.

Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``E, F (h r s) | (r s)`` -> ``o (b l h p)``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import check_int, result_dtype
from refimpl.attention.linformer.reference import validate_linformer
from refimpl.attention.softmax.numba import flash_attention
from refimpl.attention.softmax.reference import attention_scale

__all__ = ["tiled"]


def _project(E: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``E x`` along the sequence with one batched GEMM: ``E (h r s) | (r s)``, ``x (b s h c)`` -> ``(b r h c)``."""
    xh = np.moveaxis(x, 2, 1)  # (b h s c)
    Eh = E if E.ndim == 3 else E[None]  # (h|1 r s)
    # X_bar^{(h)} = E^{(h)} X^{(h)}   (b h r c), BLAS per (batch, head)
    return np.moveaxis(np.matmul(Eh[None], xh), 1, 2)


def tiled(q, k, v, E, F, *, scale: Optional[float] = None, block_q: int = 64, block_k: int = 64) -> np.ndarray:
    """Linformer attention: ``K_bar = E k``, ``V_bar = F v`` by BLAS, then ``flash_attention(q, K_bar, V_bar)``.

    ``block_q`` queries by ``block_k`` projected keys per tile (the flash kernel's tile sizes).  Not causal.
    """
    q, k, v, E, F, (b, l, s, h, n, p, r) = validate_linformer(q, k, v, E, F)
    block_q = check_int(block_q, "block_q", minimum=1)
    block_k = check_int(block_k, "block_k", minimum=1)
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v, E, F)
    q, k, v, E, F = (a.astype(dtype, copy=False) for a in (q, k, v, E, F))
    K_bar = np.ascontiguousarray(_project(E, k))  # (b r h n)
    V_bar = np.ascontiguousarray(_project(F, v))  # (b r h p)
    return flash_attention(q, K_bar, V_bar, scale=scale, causal=False, block_q=block_q, block_k=block_k)
