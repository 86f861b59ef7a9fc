"""Report rows for the Attention Free Transformer: every variant, causal and not, every view/backend against the
dense oracle of :mod:`oracles.aft` (mpmath on a small case, float64 fsum on a longer one) under
:func:`oracles.aft.aft_bound`."""
from __future__ import annotations

import numpy as np

from oracles.aft import aft_bound, aft_fsum, aft_mpmath
from oracles.checks import check, row, timed
from oracles.tolerance import compare

SEED = 20261201
# (row suffix, variant, window (left, right)); the causal rows use (left, 0)
VARIANTS = (("full", "full", None), ("simple", "simple", None), ("local", "local", (2, 2)))


def _problem(rng, l, d, k_scale=1.5):
    return (rng.standard_normal((1, l, d)), k_scale * rng.standard_normal((1, l, d)), rng.standard_normal((1, l, d)),
            rng.uniform(-2.0, 2.0, (l, l)))


@check
def aft_attention_rows():
    from refimpl.attention.aft import IMPLEMENTATIONS, aft_attention

    rng = np.random.default_rng(SEED)
    small = _problem(rng, 9, 3)
    long_ = _problem(rng, 160, 4)
    rows = []
    for name, variant, window in VARIANTS:
        for causal in (False, True):
            win = None if window is None else ((window[0], 0) if causal else window)
            op = f"attention.aft.{name}" + (".causal" if causal else "")
            for (q, k, v, w), exact_fn, od, what in ((small, aft_mpmath, None, "l=9, d=3; oracle: mpmath 50 digits"),
                                                     (long_, aft_fsum, np.float64,
                                                      "l=160, d=4; oracle: float64 row-max + math.fsum")):
                ww = None if variant == "simple" else w
                exact = exact_fn(q, k, v, ww, variant=variant, causal=causal, window=win)
                bound = aft_bound(q, k, v, ww, variant=variant, causal=causal, window=win, oracle_dtype=od)
                for view, backend in IMPLEMENTATIONS.pairs():
                    kw = dict(variant=variant, causal=causal, window=win, view=view, backend=backend)
                    aft_attention(q, k, v, ww, **kw)
                    y, t = timed(aft_attention, q, k, v, ww, **kw)
                    note = what + (f"; window {win}" if win is not None else "")
                    rows.append(row(op, f"{backend}/{view}", compare(y, exact, bound), t, note=note))
    # float32 (both views, every variant): the float32 bound, the oracle on the float32 inputs cast up exactly
    q, k, v, w = (a.astype(np.float32) for a in small)
    for name, variant, window in VARIANTS:
        for causal in (False, True):
            win = None if window is None else ((window[0], 0) if causal else window)
            ww = None if variant == "simple" else w
            exact = aft_mpmath(q, k, v, ww, variant=variant, causal=causal, window=win)
            bound = aft_bound(q, k, v, ww, variant=variant, causal=causal, window=win, dtype=np.float32)
            for view, backend in IMPLEMENTATIONS.pairs():
                kw = dict(variant=variant, causal=causal, window=win, view=view, backend=backend)
                aft_attention(q, k, v, ww, **kw)
                y, t = timed(aft_attention, q, k, v, ww, **kw)
                rows.append(row(f"attention.aft.{name}" + (".causal" if causal else ""), f"{backend}/{view}",
                                compare(y, exact, bound), t, note="float32, l=9, d=3; oracle: mpmath"))
    # |K| ~ 1000 with the largest key last: the stabilizer must be per kept row
    q, k, v, w = _problem(rng, 8, 2, k_scale=1000.0)
    k[0, -1] = np.abs(k).max() + 1000.0
    for causal in (False, True):
        exact = aft_mpmath(q, k, v, w, variant="full", causal=causal)
        bound = aft_bound(q, k, v, w, variant="full", causal=causal)
        for view, backend in IMPLEMENTATIONS.pairs():
            y, t = timed(aft_attention, q, k, v, w, causal=causal, view=view, backend=backend)
            rows.append(row("attention.aft.full.large_keys" + (".causal" if causal else ""), f"{backend}/{view}",
                            compare(y, exact, bound), t, note="|K| ~ 1000, the largest key last; oracle: mpmath"))
    return rows
