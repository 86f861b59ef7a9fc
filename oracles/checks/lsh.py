"""Report rows ``attention.lsh``: Reformer LSH attention, every view and backend against the set-based oracle
(:mod:`oracles.lsh`: allowed keys from the definition as Python sets, dense softmax in mpmath / fsum), with the
derived bound :func:`oracles.lsh.lsh_attention_bound`; and the hashing against ``argmax([xR; -xR])`` by fsum."""
from __future__ import annotations

import math

import numpy as np

from oracles import lsh as O
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare

SEED = 20261201

_IMPLS = (("numpy/sorted", dict(view="sorted", backend="numpy")),
          ("numpy/materialized", dict(view="materialized", backend="numpy")),
          ("numba/sorted", dict(view="sorted", backend="numba")))


def _K(impl, chunk, r, l):
    return r * l if "materialized" in impl else 2 * chunk


@check
def lsh_attention_rows():
    from refimpl.attention.lsh import hash_buckets, lsh_attention, random_rotations

    rng = np.random.default_rng(SEED)
    rows = []
    # small: mpmath oracle (b 1, l 11, h 2, n 4, p 3, 3 buckets x 2 rounds, chunk 3: the last chunk short)
    for variant, causal, wrap in (("bidirectional", False, False), ("causal", True, False), ("wrap", False, True)):
        qk, v = rng.standard_normal((1, 11, 2, 4)), rng.standard_normal((1, 11, 2, 3))
        bk = rng.integers(0, 3, (1, 11, 2, 2))
        sc = 1 / math.sqrt(4)
        exact = O.lsh_mpmath(qk, v, bk, 3, sc, causal=causal, wrap=wrap)
        for impl, kw in _IMPLS:
            call = dict(buckets=bk, chunk=3, causal=causal, wrap=wrap, **kw)
            lsh_attention(qk, v, **call)
            o, t = timed(lsh_attention, qk, v, **call)
            bound = O.lsh_attention_bound(qk, v, bk, 3, sc, np.float64, causal=causal, wrap=wrap,
                                          keys_per_softmax=_K(impl, 3, 2, 11))
            rows.append(row(f"attention.lsh.{variant}", impl, compare(o, exact, bound), t,
                            note="oracle: mpmath 50 digits on the set-built union"))
    # larger: fsum oracle, hashed by seeded rotations (b 1, l 96, h 2, n 8, p 4, 4 buckets x 3 rounds, chunk 8)
    qk, v = rng.standard_normal((1, 96, 2, 8)), rng.standard_normal((1, 96, 2, 4))
    R = random_rotations(8, 4, 3, seed=7)
    bk = O.hash_oracle(qk, R)
    hb, t = timed(hash_buckets, qk, R)
    same = float(np.mean(hb == bk))
    rows.append(row("attention.lsh.hash", "numpy/hash_buckets",
                    compare(hb.astype(np.float64), bk.astype(np.float64), Bound(0.0, "exact: bucket indices")), t,
                    note=f"argmax([xR; -xR]) vs fsum dot products; {same:.0%} equal"))
    sc = 1 / math.sqrt(8)
    ex = O.lsh_fsum(qk, v, bk, 8, sc, causal=True)
    for dt in (np.float64, np.float32):
        for impl, kw in _IMPLS:
            if dt == np.float32 and impl != "numba/sorted":
                continue
            call = dict(rotations=R.astype(dt), chunk=8, causal=True, **kw)
            lsh_attention(qk.astype(dt), v.astype(dt), **call)
            o, t = timed(lsh_attention, qk.astype(dt), v.astype(dt), **call)
            bound = O.lsh_attention_bound(qk.astype(dt), v.astype(dt), bk, 8, sc, dt, causal=True,
                                          keys_per_softmax=_K(impl, 8, 3, 96), oracle_dtype=np.float64)
            rows.append(row("attention.lsh.causal_L96", impl, compare(o, ex, bound), t,
                            note="oracle: float64 fsum on the set-built union; hashed by seeded rotations"))
    return rows
