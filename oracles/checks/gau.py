"""Report rows for GAU and FLASH's mixed-chunk attention (Hua et al. 2022): every view and backend against the
dense oracle of :mod:`oracles.gau` (mpmath on small cases, float64 fsum on a longer one) under its derived bound."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.gau import gau_bound, gau_fsum, gau_mpmath
from oracles.tolerance import compare

SEED = 20261201


def _inputs(rng, b, l, d, p, n, rows, dtype=np.float64):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(b, l, d), (f(d, p), f(d, p), f(d, n), f(rows, n), (0.5 * f(rows, n)).astype(dtype), f(p, d))


def _up(*a):
    return [None if t is None else np.asarray(t, dtype=np.float64) for t in a]


@check
def gau():
    from refimpl.attention.gau import GAU_IMPLEMENTATIONS, gated_attention_unit

    rng = np.random.default_rng(SEED)
    rows = []
    for dtype in (np.float64, np.float32):
        x, W = _inputs(rng, 1, 9, 3, 2, 3, 2, dtype)
        bias = rng.standard_normal(17).astype(dtype)
        for causal in (False, True):
            up = _up(x, *W, bias)
            exact = gau_mpmath(*up[:7], causal=causal, bias=up[7])
            bound = gau_bound(*up[:7], causal=causal, bias=up[7], dtype=dtype)
            for backend in GAU_IMPLEMENTATIONS.backends_for("quadratic"):
                gated_attention_unit(x, *W, causal=causal, bias=bias, backend=backend)
                o, t = timed(gated_attention_unit, x, *W, causal=causal, bias=bias, backend=backend)
                rows.append(row("attention.gau" + (".causal" if causal else ""), f"{backend}/quadratic",
                                compare(o, exact, bound), t, note="oracle: mpmath 50 digits, L = 9, 1/L"))
    return rows


@check
def gau_chunked():
    from refimpl.attention.gau import FLASH_IMPLEMENTATIONS, mixed_chunk_attention

    rng = np.random.default_rng(SEED + 1)
    rows = []
    for dtype in (np.float64, np.float32):
        # L = 10 with c = 4: chunks of 4, 4 and a short last one of 2
        x, W = _inputs(rng, 2, 10, 3, 2, 3, 4, dtype)
        bias = rng.standard_normal(7).astype(dtype)
        for causal in (False, True):
            up = _up(x, *W, bias)
            exact = gau_mpmath(*up[:7], chunk=4, causal=causal, bias=up[7])
            bound = gau_bound(*up[:7], chunk=4, causal=causal, bias=up[7], dtype=dtype)
            for view, backend in FLASH_IMPLEMENTATIONS.pairs():
                kw = dict(chunk=4, causal=causal, bias=bias, view=view, backend=backend)
                mixed_chunk_attention(x, *W, **kw)
                o, t = timed(mixed_chunk_attention, x, *W, **kw)
                rows.append(row("attention.gau.chunked" + (".causal" if causal else ""), f"{backend}/{view}",
                                compare(o, exact, bound), t, note="oracle: mpmath 50 digits, L = 10, c = 4"))
    # longer: L = 96, c = 16 against the float64 fsum oracle (its share in the bound)
    x, W = _inputs(rng, 1, 96, 4, 3, 4, 4)
    for causal in (False, True):
        exact = gau_fsum(x, *W, chunk=16, causal=causal)
        bound = gau_bound(x, *W, chunk=16, causal=causal, oracle_dtype=np.float64)
        for view, backend in FLASH_IMPLEMENTATIONS.pairs():
            kw = dict(chunk=16, causal=causal, view=view, backend=backend)
            o, t = timed(mixed_chunk_attention, x, *W, **kw)
            rows.append(row("attention.gau.chunked" + (".causal" if causal else "") + ".L96", f"{backend}/{view}",
                            compare(o, exact, bound), t, note="oracle: float64 math.fsum, L = 96, c = 16"))
    return rows
