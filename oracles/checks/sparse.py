"""Report rows for sparse attention (issue 13, methods 1-3): every registered view/backend of
``refimpl.attention.sparse_attention`` on each pattern kind against the independent oracle of
:mod:`oracles.sparse_attention` -- the pattern's key sets from the papers' definitions, then mpmath (small cases,
50 digits) or float64 ``math.fsum`` (one L = 300 case) -- with the derived bound
:func:`oracles.sparse_attention.sparse_attention_bound`."""
from __future__ import annotations

import numpy as np

from oracles import sparse_attention as SA
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare, unit_roundoff
from oracles.verify.ops_sparse import build_pattern

SEED = 20261313
TILE = 4  # the block_sparse views' tile on the small cases: several tiles, the last one short (l = 13)

# (row name, the oracle's kind, its parameters, heads h of the case, note)
SMALL = (
    ("sliding_window", "sliding_window", dict(window=(3, 2)), 2, "window (3, 2)"),
    ("dilated", "sliding_window", dict(window=(2, 2), dilation=(1, 2)), 2, "window (2, 2), dilation 1 and 2 per head"),
    ("longformer", "longformer", dict(window=(2, 0), dilation=1, global_tokens=(0, 7), causal=True), 2,
     "causal, window (2, 0), global tokens 0 and 7"),
    ("strided", "strided", dict(stride=4, causal=True, combine="heads"), 2, "causal, l_s = 4, heads A1 / A2"),
    ("fixed", "fixed", dict(stride=4, summary=2, causal=True, combine="union"), 2, "causal, l_s = 4, c = 2, union"),
    ("bigbird", "bigbird", dict(block=3, window_blocks=3, global_blocks=1, random_blocks=1, seed=7, heads=2), 2,
     "block 3, window 3 blocks, 1 global, 1 random, seed 7, one draw per head"),
)


def _builder(kind, l, params):
    return build_pattern(kind, l, params)


def _rows(name, kind, params, q, k, v, exact, bound, note):
    from refimpl.attention.sparse import IMPLEMENTATIONS, sparse_attention

    l = q.shape[1]
    pattern = _builder(kind, l, params)
    out = []
    for view, backend in IMPLEMENTATIONS.pairs():
        if backend == "cuda":  # the cuda/... rows: oracles/checks/cuda_attention.py
            continue
        kw = dict(view=view, backend=backend)
        if view == "block_sparse" and kind != "bigbird":
            kw["block"] = TILE
        sparse_attention(q, k, v, pattern, **kw)  # warm (Numba)
        o, t = timed(sparse_attention, q, k, v, pattern, **kw)
        tile = f"; tile {kw.get('block', params.get('block'))}" if view == "block_sparse" else ""
        out.append(row(f"attention.sparse.{name}", f"{backend}/{view}", compare(o, exact, bound), t,
                       note=f"{note}{tile}"))
    return out


@check
def sparse_attention():
    rng = np.random.default_rng(SEED)
    rows = []
    l, n, p = 13, 4, 3
    for name, kind, params, h, note in SMALL:
        q, k = rng.standard_normal((1, l, h, n)) * 1.5, rng.standard_normal((1, l, h, n)) * 1.5
        v = rng.standard_normal((1, l, h, p))
        sets = SA.pattern_sets(kind, l, **params)
        exact = SA.sparse_attention_mpmath(q, k, v, sets)
        bound = SA.sparse_attention_bound(q, k, v, sets, oracle_dtype=None)
        rows += _rows(name, kind, params, q, k, v, exact, bound, f"L = {l}, {note}; oracle: mpmath 50 digits")
    # one long case: the float64 fsum oracle
    l, h, n, p = 300, 2, 8, 4
    params = dict(window=(16, 0), dilation=(1, 3), global_tokens=(0, 150), causal=True)
    q, k = rng.standard_normal((1, l, h, n)), rng.standard_normal((1, l, h, n))
    v = rng.standard_normal((1, l, h, p))
    sets = SA.pattern_sets("longformer", l, **params)
    exact = SA.sparse_attention_fsum(q, k, v, sets)
    bound = SA.sparse_attention_bound(q, k, v, sets, oracle_dtype=np.float64)
    from refimpl.attention.sparse import IMPLEMENTATIONS, sparse_attention

    pattern = _builder("longformer", l, params)
    note = "L = 300, causal, window (16, 0), dilation 1 and 3 per head, global tokens 0 and 150; oracle: float64 fsum"
    for view, backend in IMPLEMENTATIONS.pairs():
        if backend == "cuda":  # the cuda/... rows: oracles/checks/cuda_attention.py
            continue
        kw = dict(view=view, backend=backend)
        sparse_attention(q, k, v, pattern, **kw)
        o, t = timed(sparse_attention, q, k, v, pattern, **kw)
        rows.append(row("attention.sparse.longformer.L300", f"{backend}/{view}", compare(o, exact, bound), t,
                        note=note))
    # float32: the oracle on the float32 inputs (exact in float64); the kernel's polynomial exp
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    qu, ku, vu = (a.astype(np.float64) for a in (q32, k32, v32))
    exact32 = SA.sparse_attention_fsum(qu, ku, vu, sets)
    bound32 = SA.sparse_attention_bound(qu, ku, vu, sets, dtype=np.float32, oracle_dtype=np.float64)
    for view, backend in IMPLEMENTATIONS.pairs():
        if backend == "cuda":  # the cuda/... rows: oracles/checks/cuda_attention.py
            continue
        kw = dict(view=view, backend=backend)
        sparse_attention(q32, k32, v32, pattern, **kw)
        o, t = timed(sparse_attention, q32, k32, v32, pattern, **kw)
        b32, extra = bound32, ""
        if backend == "numba":
            b32, extra = bound32 + _poly_exp_term(qu, ku, vu, sets), "; + the polynomial float32 exp's excess"
        rows.append(row("attention.sparse.longformer.L300", f"{backend}/{view}", compare(o, exact32, b32), t,
                        note=note + extra))
    return rows


def _poly_exp_term(q, k, v, sets):
    r"""The float32 kernel's ``exp`` is refimpl's polynomial one (relative error ``<= EXP_REL_ERR``, proven in
    :mod:`refimpl._fastmath`) where :func:`oracles.attention.softmax_attention_bound` assumes one within one ulp
    (``2u``).  The weights' relative error ``delta_i`` grows by ``EXP_REL_ERR - 2u``, and the output error
    ``<= 2 (delta_i + gamma_{L+2}) sum_j p_ij |v_j|`` (that bound's derivation) by ``2 (EXP_REL_ERR - 2u) sum_j
    p_ij |v_j|``."""
    from refimpl._fastmath import EXP_REL_ERR

    excess = max(0.0, EXP_REL_ERR - 2 * unit_roundoff(np.float32))
    pv = SA.sparse_attention_fsum(q, k, np.abs(v), sets)  # sum_j p_ij |v_j| (the weights p_ij >= 0)
    return Bound(2.0 * excess * pv, "2 (EXP_REL_ERR - 2u) sum_j p_ij |v_j| (polynomial float32 exp)")
