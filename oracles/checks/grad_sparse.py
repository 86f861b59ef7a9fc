"""Report rows ``attention.sparse.grad``: every backward (view, backend) of ``refimpl.attention.sparse_attention_vjp``
against central differences (Richardson) of the float64 oracle forward over the pattern's key sets (the papers'
definitions, :mod:`oracles.sparse_attention`), elementwise within the differences' error plus the derived rounding
bound of a backward pass (:func:`oracles.softmax_grad_forward.softmax_vjp_bound`); the worst input is the row.  Plus
the Numba block-sparse kernel against the literal NumPy adjoints at l = 200, within the sum of both bounds."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.checks.grad_softmax import worst
from oracles.gradients import fd_vjp
from oracles.softmax_grad_forward import sdpa_forward, softmax_vjp_bound
from oracles.sparse_attention import keep_from_sets, pattern_sets
from oracles.tolerance import Bound

SEED = 20261215


@check
def sparse_attention_grad():
    from refimpl.attention.sparse import VJP_IMPLEMENTATIONS, bigbird_pattern, longformer_pattern, sparse_attention_vjp

    rng = np.random.default_rng(SEED)
    rows = []
    b, l, h, n, p = 1, 9, 2, 2, 2
    q, k = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    v, do = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, p))
    sc = 1 / np.sqrt(n)
    x = {"q": q, "k": k, "v": v}
    for name, pattern, params in (
            ("longformer", longformer_pattern(l, (2, 1), global_tokens=(0,)),
             dict(window=(2, 1), dilation=1, global_tokens=(0,), causal=False)),
            ("bigbird", bigbird_pattern(l, 2, seed=3),
             dict(block=2, window_blocks=3, global_blocks=1, random_blocks=1, seed=3, heads=1))):
        keep = keep_from_sets(pattern_sets(name, l, **params), l)[None]
        fd = fd_vjp(lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep)}, x, {"o": do}, ("q", "k", "v"))
        bd = softmax_vjp_bound(q, k, v, do, sc, np.float64, keep)
        bounds = {nm: Bound(np.asarray(bd[nm].values) + fd.error[nm], bd[nm].source + " + the differences' error")
                  for nm in x}
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            kw = dict(do=do, view=view, backend=backend, **({"block": 4} if view == "block_sparse" else {}))
            sparse_attention_vjp(q, k, v, pattern, **kw)  # warm
            g, t = timed(sparse_attention_vjp, q, k, v, pattern, **kw)
            nm, c = worst(g, fd.grad, bounds, np.float64)
            rows.append(row(f"attention.sparse.grad.{name}", f"{backend}/{view}", c, t,
                            note=f"worst of dq, dk, dv: {nm}; l={l}{', tiles of 4' if 'block' in kw else ''}; "
                                 f"oracle: Richardson differences over the papers' key sets"))
    # the Numba kernel against the literal NumPy block-sparse adjoints, longer (l = 200, tiles of 16)
    b, l, h, n, p = 1, 200, 2, 16, 8
    q, k = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    v, do = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, p))
    pattern = longformer_pattern(l, (20, 0), global_tokens=(0, 100), causal=True)
    kw = dict(do=do, view="block_sparse", block=16)
    ref = sparse_attention_vjp(q, k, v, pattern, **kw)
    sparse_attention_vjp(q, k, v, pattern, backend="numba", **kw)
    g, t = timed(sparse_attention_vjp, q, k, v, pattern, backend="numba", **kw)
    bd = softmax_vjp_bound(q, k, v, do, 1 / np.sqrt(n), np.float64, pattern.mask()[None], key_tiles=-(-l // 16))
    nm, c = worst(g, ref, {x: bd[x].scaled(2.0, "both backwards deviate from the exact gradient") for x in ref},
                  np.float64)
    rows.append(row("attention.sparse.grad.kernel", "numba/block_sparse vs numpy/block_sparse", c, t,
                    note=f"worst of dq, dk, dv: {nm}; l={l}, causal Longformer (20, 0) + 2 global, tiles of 16"))
    return rows
