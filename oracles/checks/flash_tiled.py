"""Report rows ``attention.flash.tiled``: FlashAttention's tiling -- the literal NumPy Algorithm 1
(``numpy/tiled``) and the Numba kernel (``numba/tiled``) -- against the mpmath oracle, with tile sizes that do not
divide the lengths, ``l != s``, both causal alignments and none."""
from __future__ import annotations

import numpy as np

from oracles import attention as O
from oracles.checks import check, row, timed
from oracles.linformer import online_softmax_term
from oracles.tolerance import compare

SEED = 20261201


@check
def flash_tiled():
    from refimpl.attention.softmax import scaled_dot_product_attention

    rng = np.random.default_rng(SEED)
    q = rng.standard_normal((1, 7, 2, 4)) * 1.5
    k, v = rng.standard_normal((1, 10, 2, 4)) * 1.5, rng.standard_normal((1, 10, 2, 3))
    scale, block_q, block_k = 0.5, 3, 4
    tiles = -(-10 // block_k)
    rows = []
    for variant, alignment in (("noncausal", None), ("top_left", "top_left"), ("bottom_right", "bottom_right")):
        keep = O.keep_mask(7, 10, alignment)[None, None]
        exact = O.sdpa_mpmath(q, k, v, scale, keep)
        _, P = O.sdpa_float64(q, k, v, scale, keep)
        sc = np.where(keep, scale * np.einsum("bihd,bjhd->bhij", q, k), -np.inf)
        m = np.max(sc, axis=-1, keepdims=True)
        spread = np.max(np.where(keep, np.abs(sc - np.where(np.isfinite(m), m, 0.0)), 0.0), axis=-1)
        bound = (O.softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None)
                 + online_softmax_term(np.einsum("bhij,bjhe->bihe", P, np.abs(v)), spread, tiles))
        for backend in ("numpy", "numba"):
            kw = dict(scale=scale, causal=alignment is not None, alignment=alignment, view="tiled", backend=backend,
                      block_q=block_q, block_k=block_k)
            scaled_dot_product_attention(q, k, v, **kw)
            o, t = timed(scaled_dot_product_attention, q, k, v, **kw)
            rows.append(row(f"attention.flash.tiled.{variant}", f"{backend}/tiled", compare(o, exact, bound), t,
                            note=f"l=7, s=10, block_q={block_q}, block_k={block_k}; oracle: mpmath 50 digits; bound: "
                                 f"softmax attention + online-softmax rescaling over {tiles} key tiles"))
    return rows
