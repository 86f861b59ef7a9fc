"""Report rows for the Mega layer (``attention.mega``): every view and backend against the independent oracle
(:mod:`oracles.mega`: mpmath on small cases, vectorized float64 dense operators on a long one), under the derived
first-order bound :func:`oracles.mega.mega_layer_bound`."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.mega import mega_layer_bound, mega_layer_dense, mega_layer_mpmath
from oracles.tolerance import compare

SEED = 20261201

_IMPLS = (("numpy/full", dict(view="full", backend="numpy")),
          ("numpy/chunked", dict(view="chunked", backend="numpy")),
          ("numba/chunked", dict(view="chunked", backend="numba")))


def _case(seed, b, L, d, e, n, p, *, rel=True, bidir=False):
    from oracles.verify.ops_mega import sample

    conv = {"use_rel_bias": rel, "bidirectional": bidir}
    inp = sample(np.random.default_rng([SEED, seed]), conv, l=L, b=b, d=d, e=e, n=n, p=p)
    return inp["x"], {k: v for k, v in inp.items() if k != "x"}


def _rows(op, x, P, opts, exact, oracle_dtype, note, dtypes=("float64",)):
    from refimpl.attention.mega import mega_layer

    rows = []
    for dt in dtypes:
        xd = x.astype(dt)
        Pd = {k: (None if v is None else v.astype(dt)) for k, v in P.items()}
        if dt == "float64":
            ex, bd = exact, mega_layer_bound(x, P, dtype=np.float64, oracle_dtype=oracle_dtype, **opts)
        else:  # the oracle of the float32 inputs exactly (cast up losslessly)
            up = {k: (None if v is None else v.astype(np.float64)) for k, v in Pd.items()}
            ex = mega_layer_mpmath(xd.astype(np.float64), up, **opts)
            bd = mega_layer_bound(xd.astype(np.float64), up, dtype=np.float32, oracle_dtype=None, **opts)
        for impl, kw in _IMPLS:
            mega_layer(xd, **Pd, **opts, **kw)
            y, t = timed(mega_layer, xd, **Pd, **opts, **kw)
            rows.append(row(op, impl, compare(y, ex, bd, dtype=np.dtype(dt)), t, note=note))
    return rows


@check
def mega_layer_rows():
    rows = []
    # the whole sequence, softmax with Mega's relative bias, float64 and float32
    x, P = _case(1, 2, 9, 3, 2, 3, 3)
    opts = dict(chunk=None, causal=False, attention="softmax", scale=None)
    rows += _rows("attention.mega", x, P, opts, mega_layer_mpmath(x, P, **opts), None,
                  "oracle: mpmath 30 digits, EMA by its closed form", dtypes=("float64", "float32"))
    # chunked, causal (L = 11 = 3 chunks of 4, the last short)
    x, P = _case(2, 1, 11, 3, 2, 3, 2)
    opts = dict(chunk=4, causal=True, attention="softmax", scale=None)
    rows += _rows("attention.mega.chunked", x, P, opts, mega_layer_mpmath(x, P, **opts), None,
                  "chunk 4, causal, L 11; oracle: mpmath")
    # chunked, non-causal, bidirectional EMA
    x, P = _case(3, 1, 10, 2, 2, 2, 2, bidir=True)
    opts = dict(chunk=3, causal=False, attention="softmax", scale=None)
    rows += _rows("attention.mega.chunked.bidirectional", x, P, opts, mega_layer_mpmath(x, P, **opts), None,
                  "chunk 3, bidirectional EMA; oracle: mpmath")
    # Mega's other attention functions, with the length normalization
    for attn in ("laplace", "relu2"):
        x, P = _case(4, 1, 8, 3, 2, 3, 2)
        opts = dict(chunk=3, causal=True, attention=attn, scale=None)
        rows += _rows(f"attention.mega.chunked.{attn}", x, P, opts, mega_layer_mpmath(x, P, **opts), None,
                      f"chunk 3, causal, {attn}; oracle: mpmath")
    # long, no relative bias (the numba backend's flash-kernel path): the float64 dense oracle
    x, P = _case(5, 1, 300, 16, 4, 16, 16, rel=False)
    opts = dict(chunk=64, causal=True, attention="softmax", scale=None)
    rows += _rows("attention.mega.chunked.L300", x, P, opts, mega_layer_dense(x, P, **opts), np.float64,
                  "chunk 64, causal, L 300, d 16; oracle: float64 dense operators")
    return rows
