"""Report rows ``attention.linformer``: Linformer attention (Wang et al. 2020), every view/backend against the
mpmath oracle (small, per-head and shared projections) and the float64-fsum oracle (L = 300, r = 64), and the
layer under each parameter-sharing level."""
from __future__ import annotations

import math

import numpy as np

from oracles.checks import check, row, timed
from oracles.linformer import linformer_bound, linformer_float64, linformer_mpmath
from oracles.tolerance import Bound, compare

SEED = 20261202


@check
def linformer():
    from refimpl.attention.linformer import IMPLEMENTATIONS, SHARINGS, linformer_attention, linformer_layer

    rng = np.random.default_rng(SEED)
    rows = []
    b, l, h, n, p, r = 1, 9, 2, 4, 3, 4
    q = rng.standard_normal((b, l, h, n)) * 1.5
    k, v = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, p))
    for variant, shape in (("per_head", (h, r, l)), ("shared", (r, l))):
        E, F = rng.standard_normal(shape) / math.sqrt(r), rng.standard_normal(shape) / math.sqrt(r)
        exact = linformer_mpmath(q, k, v, E, F, 0.5)
        for view, backend in IMPLEMENTATIONS.pairs():
            tiles = dict(block_q=4, block_k=3) if view == "tiled" else {}
            kw = dict(scale=0.5, view=view, backend=backend, **tiles)
            linformer_attention(q, k, v, E, F, **kw)
            o, t = timed(linformer_attention, q, k, v, E, F, **kw)
            bound = linformer_bound(q, k, v, E, F, 0.5, key_tiles=-(-r // 3) if tiles else 0)
            rows.append(row(f"attention.linformer.{variant}", f"{backend}/{view}", compare(o, exact, bound), t,
                            note=f"l={l}, r={r}, E, F {shape}; oracle: mpmath 50 digits"))
    # long: float64 oracle with correctly rounded projections
    b, l, h, n, p, r = 1, 300, 2, 32, 16, 64
    q, k, v = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, p))
    E, F = rng.standard_normal((h, r, l)) / math.sqrt(r), rng.standard_normal((h, r, l)) / math.sqrt(r)
    exact = linformer_float64(q, k, v, E, F, 1 / math.sqrt(n))
    for view, backend in IMPLEMENTATIONS.pairs():
        linformer_attention(q, k, v, E, F, view=view, backend=backend)
        o, t = timed(linformer_attention, q, k, v, E, F, view=view, backend=backend)
        bound = linformer_bound(q, k, v, E, F, 1 / math.sqrt(n), oracle_dtype=np.float64,
                                key_tiles=1 if view == "tiled" else 0)
        rows.append(row("attention.linformer.L300_r64", f"{backend}/{view}", compare(o, exact, bound), t,
                        note="oracle: float64, math.fsum projections, scipy logsumexp"))
    # the layer, with exact selection projections (head i reads columns [2i, 2i+2)) and a reversing W_O
    l, hh, nn = 6, 2, 2
    x = rng.standard_normal((1, l, hh * nn))
    W = np.zeros((hh, hh * nn, nn))
    for i in range(hh):
        W[i, i * nn:(i + 1) * nn] = np.eye(nn)
    W_O = np.eye(hh * nn)[:, ::-1].copy()
    qkv = x.reshape(1, l, hh, nn)
    for sharing in SHARINGS:
        E = rng.standard_normal((hh, 3, l) if sharing == "none" else (3, l))
        F = None if sharing in ("key_value", "layerwise") else rng.standard_normal(E.shape)
        Fu = E if F is None else F
        out, t = timed(linformer_layer, x, W, W, W, W_O, E, F, sharing=sharing)
        exact = linformer_mpmath(qkv, qkv, qkv, E, Fu, 1 / math.sqrt(nn)).reshape(1, l, hh * nn)[..., ::-1]
        bd = linformer_bound(qkv, qkv, qkv, E, Fu, 1 / math.sqrt(nn))
        rows.append(row(f"attention.linformer.layer.{sharing}", "numpy/materialized",
                        compare(out, exact, Bound(np.asarray(bd.values).reshape(1, l, hh * nn)[..., ::-1], bd.source)),
                        t, note="selection W_Q = W_K = W_V (exact), reversing W_O; oracle: mpmath"))
    return rows
