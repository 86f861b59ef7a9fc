"""Report rows ``cuda/<view>`` for the attention GPU twins
(``refimpl/attention/{linear,delta,softmax,sparse}/cuda.py``).

Each row runs one kernel on small embedded inputs -- on a CUDA device when one is present, else under the CUDA
simulator (in a subprocess when the report imported numba without it), else listed as skipped with the reason
(:func:`oracles.checks._cuda.cuda_check`) -- against the mpmath oracle, under the reference view's derived bound:

* ``attention.linear.causal.{normalized,unnormalized}`` ``cuda/chunked``:
  :func:`oracles.attention.linear_attention_bound`;
* ``attention.delta.{plain,gated}`` ``cuda/chunked``: :func:`oracles.attention.delta_rule_bound` (``view="chunked"``);
* ``attention.flash.tiled.{noncausal,top_left,bottom_right}`` ``cuda/tiled``: the softmax attention bound plus the
  online-softmax rescaling over the key tiles (as the ``numpy/tiled`` rows);
* ``attention.sparse.{sliding_window,longformer,bigbird}`` ``cuda/block_sparse``:
  :func:`oracles.sparse_attention.sparse_attention_bound` (as the ``numba/block_sparse`` rows).

Small shapes and ``threads_per_block = 8`` (several chunks / tiles / blocks; each row well under 3 s simulated).
"""
from __future__ import annotations

import time

import numpy as np

from oracles import attention as O
from oracles import sparse_attention as SA
from oracles.checks import row
from oracles.checks._cuda import cuda_check
from oracles.linformer import online_softmax_term
from oracles.tolerance import compare

SEED = 20261215
TPB = 8

_ROWS = ([(f"attention.linear.causal.{v}", "cuda/chunked") for v in ("normalized", "unnormalized")]
         + [(f"attention.delta.{v}", "cuda/chunked") for v in ("plain", "gated")]
         + [(f"attention.flash.tiled.{v}", "cuda/tiled") for v in ("noncausal", "top_left", "bottom_right")]
         + [(f"attention.sparse.{v}", "cuda/block_sparse") for v in ("sliding_window", "longformer", "bigbird")])


def _timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


@cuda_check(rows=_ROWS)
def cuda_attention():
    from oracles.verify.ops_sparse import build_pattern
    from refimpl.attention.delta.cuda import delta_chunked
    from refimpl.attention.linear.cuda import causal_chunked
    from refimpl.attention.softmax.cuda import flash_attention
    from refimpl.attention.sparse.cuda import block_sparse_attention

    rng = np.random.default_rng(SEED)
    rows = []
    # chunked linear attention: l = 11, chunk 4 (the last chunk short), initial state given
    b, l, h, n, p = 1, 11, 2, 3, 2
    pq, pk = rng.uniform(0.05, 1, (b, l, h, n)), rng.uniform(0.05, 1, (b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    S0, z0 = rng.standard_normal((b, h, p, n)), rng.uniform(0.1, 1, (b, h, n))
    for normalize in (True, False):
        eps = 0.1 if normalize else 0.0
        exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
        bound = O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
        o, t = _timed(causal_chunked, pq, pk, v, normalize=normalize, eps=eps,
                      initial_state=(S0, z0) if normalize else S0, chunk=4, threads_per_block=TPB)
        rows.append(row(f"attention.linear.causal.{'normalized' if normalize else 'unnormalized'}", "cuda/chunked",
                        compare(o, exact, bound), t,
                        note=f"L={l}, chunk 4, {TPB} threads per (batch, head) block; initial state given"))
    # chunked (gated) delta rule: l = 11, chunk 4, unit keys
    q = rng.standard_normal((b, l, h, n))
    k = rng.standard_normal((b, l, h, n))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    beta = rng.uniform(0, 1, (b, l, h))
    for variant, decay in (("plain", None), ("gated", rng.uniform(0.7, 1.0, (b, l, h)))):
        o_ex, _ = O.delta_rule_mpmath(q, k, v, beta, decay, S0)
        o, t = _timed(delta_chunked, q, k, v, beta, decay=decay, initial_state=S0, chunk=4, threads_per_block=TPB)
        rows.append(row(f"attention.delta.{variant}", "cuda/chunked",
                        compare(o, o_ex, O.delta_rule_bound(q, k, v, beta, decay, S0, view="chunked", chunk=4)), t,
                        note=f"WY form, column-parallel forward substitution; L={l}, chunk 4; oracle: mpmath"))
    # tiled softmax: l = 7, s = 10, tiles 3 x 4
    qs = rng.standard_normal((1, 7, 2, 4)) * 1.5
    ks, vs = rng.standard_normal((1, 10, 2, 4)) * 1.5, rng.standard_normal((1, 10, 2, 3))
    for variant, alignment in (("noncausal", None), ("top_left", "top_left"), ("bottom_right", "bottom_right")):
        keep = O.keep_mask(7, 10, alignment)[None, None]
        exact = O.sdpa_mpmath(qs, ks, vs, 0.5, keep)
        _, P = O.sdpa_float64(qs, ks, vs, 0.5, keep)
        sc = np.where(keep, 0.5 * np.einsum("bihd,bjhd->bhij", qs, ks), -np.inf)
        m = np.max(sc, axis=-1, keepdims=True)
        spread = np.max(np.where(keep, np.abs(sc - np.where(np.isfinite(m), m, 0.0)), 0.0), axis=-1)
        bound = (O.softmax_attention_bound(qs, ks, vs, 0.5, keep, oracle_dtype=None)
                 + online_softmax_term(np.einsum("bhij,bjhe->bihe", P, np.abs(vs)), spread, 3))
        o, t = _timed(flash_attention, qs, ks, vs, scale=0.5, causal=alignment is not None, alignment=alignment,
                      block_q=3, block_k=4, threads_per_block=TPB)
        rows.append(row(f"attention.flash.tiled.{variant}", "cuda/tiled", compare(o, exact, bound), t,
                        note="l=7, s=10, block_q=3, block_k=4; one block per (batch, head, query tile); "
                             "oracle: mpmath 50 digits"))
    # block-sparse: l = 13, block 4 (bigbird: its own block 3)
    ls = 13
    cases = (("sliding_window", dict(window=(3, 2)), 1), ("longformer", dict(window=(1, 1), dilation=(1, 2),
                                                                           global_tokens=(0, 7)), 2),
             ("bigbird", dict(block=3, seed=2, heads=1), 1))
    for kind, params, hh in cases:
        qq, kk = rng.standard_normal((1, ls, hh, 4)) * 1.5, rng.standard_normal((1, ls, hh, 4)) * 1.5
        vv = rng.standard_normal((1, ls, hh, 3))
        sets = SA.pattern_sets(kind, ls, **params)
        exact = SA.sparse_attention_mpmath(qq, kk, vv, sets)
        bound = SA.sparse_attention_bound(qq, kk, vv, sets, oracle_dtype=None)
        block = None if kind == "bigbird" else 4
        o, t = _timed(block_sparse_attention, qq, kk, vv, build_pattern(kind, ls, params), block=block,
                      threads_per_block=TPB)
        rows.append(row(f"attention.sparse.{kind}", "cuda/block_sparse", compare(o, exact, bound), t,
                        note=f"L={ls}, block {block or 3}; online softmax over the layout's kept tiles; "
                             f"oracle: mpmath 50 digits"))
    return rows
