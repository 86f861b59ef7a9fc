"""Backward mutants of ``attention.sparse``: plausible bugs in the masked softmax backward over a pattern, each an
explicit backward in the canonical protocol ``fn(q, k, v, do) -> {input: grad}`` under the op's default pattern
(a sliding window ``(3, 3)``, not causal; refimpl's pattern object gives the keep mask)."""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import grad_mutant

OP = "attention.sparse"
TILE = 4  # the tile of the planted block-boundary slip


def _mask(l, h):
    from oracles.verify import get_op
    from oracles.verify.ops_sparse import refimpl_pattern

    pattern = refimpl_pattern(get_op(OP).resolve_conventions({}), l, h)
    return pattern.mask()[None]  # (1, h|1, l, l)


def _backward(q, k, v, do, *, dense_p=False, diagonal_tiles_only=False, dk_unscaled=False, dq_transposed=False):
    q, k, v, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, do))
    b, l, h, n = q.shape
    sc = 1.0 / math.sqrt(n) if n else 1.0
    keep = np.broadcast_to(_mask(l, h), (b, h, l, l))
    S = sc * np.einsum("bihn,bjhn->bhij", q, k)
    Sm = np.where(keep, S, -np.inf)
    m = np.max(Sm, axis=-1, keepdims=True) if l else np.zeros((b, h, 0, 1))
    seen = np.isfinite(m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L = np.where(seen, m + np.log(np.sum(np.exp(Sm - np.where(seen, m, 0.0)), -1, keepdims=True)), 0.0)
        # BUG (dense_p): P recomputed over every key, the pattern forgotten in the backward
        P = np.where(seen, np.exp((S if dense_p else Sm) - L), 0.0)
        P_fwd = np.where(seen, np.exp(Sm - L), 0.0)
    O = np.einsum("bhij,bjhp->bihp", P_fwd, v)
    dP = np.einsum("bihp,bjhp->bhij", do, v)
    dS = P * (dP - np.einsum("bihp,bihp->bhi", do, O)[..., None])
    dq = sc * np.einsum("bhji,bjhn->bihn" if dq_transposed else "bhij,bjhn->bihn", dS, k)
    dS_kv, P_kv = dS, P
    if diagonal_tiles_only:  # BUG: dK, dV only from the tiles on the block diagonal (query block == key block)
        same = (np.arange(l)[:, None] // TILE) == (np.arange(l)[None, :] // TILE)
        dS_kv, P_kv = dS * same, P * same
    dk = (1.0 if dk_unscaled else sc) * np.einsum("bhij,bihn->bjhn", dS_kv, q)
    dv = np.einsum("bhij,bihp->bjhp", P_kv, do)
    return {"q": dq, "k": dk, "v": dv}


@grad_mutant(OP, "pattern-missing-in-recomputed-P",
             doc="the backward recomputes P = exp(S - L) over every key: pairs outside the pattern get weight")
def _dense(q, k, v, do):
    return _backward(q, k, v, do, dense_p=True)


@grad_mutant(OP, "dK-dV-from-diagonal-tiles-only",
             doc=f"a block-sparse backward ({TILE}-wide tiles) accumulates dK, dV only from the diagonal tiles: "
                 "wrong only across block boundaries")
def _diagonal(q, k, v, do):
    return _backward(q, k, v, do, diagonal_tiles_only=True)


@grad_mutant(OP, "dK-scale-missing", doc="dK = dS^T Q: the scale missing in the key gradient")
def _unscaled(q, k, v, do):
    return _backward(q, k, v, do, dk_unscaled=True)


@grad_mutant(OP, "dQ-from-transposed-dS",
             doc="dQ = scale dS^T K (the symmetric window makes the shapes agree): the query/key roles swapped")
def _transposed(q, k, v, do):
    return _backward(q, k, v, do, dq_transposed=True)
