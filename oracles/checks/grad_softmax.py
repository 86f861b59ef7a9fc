"""Report rows ``attention.softmax.grad``: every backward (view, backend) of
``refimpl.attention.scaled_dot_product_attention_vjp`` against central differences (Richardson) of the float64
oracle forward (:func:`oracles.softmax_grad_forward.sdpa_forward`), elementwise within the differences' error plus
the derived rounding bound of a backward pass (:func:`oracles.softmax_grad_forward.softmax_vjp_bound`); the worst
of the inputs' gradients is the row.  Plus the Numba tiled kernel against the literal NumPy tiled adjoints on a
longer case (l = s = 192), within the sum of the two backwards' bounds."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.gradients import fd_vjp
from oracles.softmax_grad_forward import sdpa_forward, softmax_vjp_bound
from oracles.tolerance import Bound, compare

SEED = 20261214


def worst(grads, exact, bounds, dtype):
    """The comparison with the largest error/bound ratio over the inputs (and its input's name)."""
    out = None
    for nm in exact:
        c = compare(np.asarray(grads[nm]), exact[nm], bounds[nm], dtype=dtype)
        if out is None or c.worst_ratio > out[1].worst_ratio or (out[1].passed and not c.passed):
            out = (nm, c)
    return out


@check
def softmax_attention_grad():
    from refimpl.attention.softmax import VJP_IMPLEMENTATIONS, scaled_dot_product_attention_vjp

    rng = np.random.default_rng(SEED)
    rows = []
    b, l, s, h, n, p = 1, 7, 6, 2, 3, 2
    q, k = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, s, h, n))
    v, do = rng.standard_normal((b, s, h, p)), rng.standard_normal((b, l, h, p))
    bias = rng.standard_normal((b, h, l, s))
    keep = np.arange(s)[None, :] <= np.arange(l)[:, None] + (s - l)  # bottom-right causal
    sc = 1 / np.sqrt(n)
    x = {"q": q, "k": k, "v": v}
    fd = fd_vjp(lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep)}, x, {"o": do}, ("q", "k", "v"))
    for view, backend in VJP_IMPLEMENTATIONS.pairs():
        tiles = dict(block_q=3, block_k=2) if view == "tiled" else {}
        for dt in (np.float64, np.float32):
            xs = {nm: a.astype(dt) for nm, a in x.items()}
            kw = dict(do=do.astype(dt), causal=True, alignment="bottom_right", view=view, backend=backend, **tiles)
            scaled_dot_product_attention_vjp(xs["q"], xs["k"], xs["v"], **kw)
            g, t = timed(scaled_dot_product_attention_vjp, xs["q"], xs["k"], xs["v"], **kw)
            up = {nm: a.astype(np.float64) for nm, a in xs.items()}
            r = fd if dt == np.float64 else fd_vjp(
                lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep)}, up,
                {"o": do.astype(dt).astype(np.float64)}, ("q", "k", "v"))
            exact, err = r.grad, r.error
            bd = softmax_vjp_bound(up["q"], up["k"], up["v"], do.astype(dt), sc, dt, keep)
            bounds = {nm: Bound(np.asarray(bd[nm].values) + err[nm], bd[nm].source + " + the differences' error")
                      for nm in x}
            nm, c = worst(g, exact, bounds, dt)
            rows.append(row("attention.softmax.grad", f"{backend}/{view}", c, t,
                            note=f"worst of dq, dk, dv: {nm}; l={l}, s={s}, bottom-right causal"
                                 f"{', tiles 3x2' if tiles else ''}; oracle: Richardson differences of the "
                                 f"float64 forward"))
    # the bias gradient (materialized only)
    xb = dict(x, bias=bias)
    fdb = fd_vjp(lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, None, a["bias"])}, xb, {"o": do},
                 ("q", "k", "v", "bias"))
    g, t = timed(scaled_dot_product_attention_vjp, q, k, v, do=do, bias=bias)
    bd = softmax_vjp_bound(q, k, v, do, sc, np.float64, None, bias)
    bounds = {nm: Bound(np.asarray(bd[nm].values) + fdb.error[nm], bd[nm].source + " + the differences' error")
              for nm in xb}
    nm, c = worst(g, fdb.grad, bounds, np.float64)
    rows.append(row("attention.softmax.grad.bias", "numpy/materialized", c, t,
                    note=f"worst of dq, dk, dv, dbias (b h l s): {nm}; oracle: Richardson differences"))
    # the Numba kernel against the literal NumPy tiled adjoints, longer
    b, l, s, h, n, p = 1, 192, 160, 2, 16, 16
    q, k = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, s, h, n))
    v, do = rng.standard_normal((b, s, h, p)), rng.standard_normal((b, l, h, p))
    for align in ("top_left", "bottom_right"):
        kw = dict(do=do, causal=True, alignment=align, view="tiled", block_q=64, block_k=48)
        ref = scaled_dot_product_attention_vjp(q, k, v, **kw)
        scaled_dot_product_attention_vjp(q, k, v, backend="numba", **kw)
        g, t = timed(scaled_dot_product_attention_vjp, q, k, v, backend="numba", **kw)
        keep = np.arange(s)[None, :] <= np.arange(l)[:, None] + (s - l if align == "bottom_right" else 0)
        bd = softmax_vjp_bound(q, k, v, do, 1 / np.sqrt(n), np.float64, keep)
        bounds = {nm: bd[nm].scaled(2.0, "both backwards deviate from the exact gradient") for nm in ref}
        nm, c = worst(g, ref, bounds, np.float64)
        rows.append(row("attention.softmax.grad.kernel", f"numba/tiled vs numpy/tiled ({align})", c, t,
                        note=f"worst of dq, dk, dv: {nm}; l={l}, s={s}, n=p=16, tiles 64x48"))
    return rows
