"""Backward mutants of ``attention.softmax``: plausible bugs in FlashAttention's backward pass, each an explicit
backward in the canonical protocol ``fn(q, k, v, bias, alibi_slopes, key_padding_mask, do) -> {input: grad}``
(canonical layout: ``q (b lq h d)``, ``k, v (b lk g .)``; the conventions each claims are fixed in its body).

The correct backward the slips are planted in: the forward's ``L`` (row log-sum-exp) saved, then per query tile
``P = exp(S - L)``, ``dV = P^T dO``, ``dP = dO V^T``, ``D = rowsum(dO o O)``, ``dS = P o (dP - D)``,
``dQ = scale dS K``, ``dK = scale dS^T Q``, ``dbias = dS``, ``dslope = -sum dist dS``; grouped key/value heads
summed back over the query heads of their group (FlashAttention's ``x // (h / g)`` grouping)."""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import grad_mutant

OP = "attention.softmax"
TILE = 4  # the query tile of the planted tiled slip


def _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, *, causal=None, d_from_dp=False, drop_d=False,
              dk_unscaled=False, unmasked_p=False, lse_first_tile=False, dv_wrong_group=False,
              slope_first_batch=False, dbias_scaled=False):
    q, k, v, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, do))
    b, lq, h, d = q.shape
    lk, g = k.shape[1], k.shape[2]
    heads = np.arange(h) // (h // g)
    K, V = k[:, :, heads], v[:, :, heads]
    sc = 1.0 / math.sqrt(d) if d else 1.0
    S = sc * np.einsum("bihd,bjhd->bhij", q, K)
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    dist = np.abs(i + lk - lq - j).astype(np.float64)
    if bias is not None:
        S = S + np.asarray(bias, dtype=np.float64)
    if alibi_slopes is not None:
        sl = np.asarray(alibi_slopes, dtype=np.float64)
        S = S - (sl[None] if sl.ndim == 1 else sl)[:, :, None, None] * dist
    keep = np.ones((lq, lk), dtype=bool)
    if causal is not None:
        keep = j <= i + (0 if causal == "top_left" else lk - lq)
    keep = np.broadcast_to(keep, S.shape)
    if key_padding_mask is not None:
        keep = keep & np.asarray(key_padding_mask, dtype=bool)[:, None, None, :]
    Sm = np.where(keep, S, -np.inf)
    m = np.max(Sm, axis=-1, keepdims=True) if lk else np.full(S.shape[:-1] + (1,), -np.inf)
    seen = np.isfinite(m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L = np.where(seen, m + np.log(np.sum(np.exp(Sm - np.where(seen, m, 0.0)), axis=-1, keepdims=True)), 0.0)
        if lse_first_tile:  # BUG: every query tile reuses the log-sum-exp of the first tile's rows
            L = np.repeat(L[:, :, :TILE], -(-lq // TILE), axis=2)[:, :, :lq] if lq else L
        P = np.where(seen, np.exp((S if unmasked_p else Sm) - L), 0.0)
    O = np.einsum("bhij,bjhe->bihe", np.where(keep, np.exp(Sm - np.where(seen, m, 0.0)), 0.0)
                  / np.maximum(np.sum(np.where(keep, np.exp(Sm - np.where(seen, m, 0.0)), 0.0), -1, keepdims=True),
                               1e-300), V)
    dP = np.einsum("bihe,bjhe->bhij", do, V)
    D = dP.sum(axis=-1) if d_from_dp else np.einsum("bihe,bihe->bhi", do, O)
    dS = P * dP if drop_d else P * (dP - D[..., None])
    dq = sc * np.einsum("bhij,bjhd->bihd", dS, K)
    dK = (1.0 if dk_unscaled else sc) * np.einsum("bhij,bihd->bjhd", dS, q)
    dV = np.einsum("bhij,bihe->bjhe", P, do)
    fold = lambda x, hd: np.stack([x[:, :, hd == c].sum(axis=2) for c in range(g)], axis=2)  # noqa: E731
    out = {"q": dq, "k": fold(dK, heads), "v": fold(dV, np.arange(h) % g if dv_wrong_group else heads)}
    if bias is not None:
        out["bias"] = sc * dS if dbias_scaled else dS
    if alibi_slopes is not None:
        ds = -(dS * dist).sum(axis=(2, 3))
        if np.ndim(alibi_slopes) == 1:
            ds = ds[0] if slope_first_batch else ds.sum(axis=0)
        out["alibi_slopes"] = ds
    return out


@grad_mutant(OP, "D-from-dP-not-dO-O", doc="D_i = rowsum(dP_i) (unweighted) instead of rowsum(dO_i o O_i)")
def _d_from_dp(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, d_from_dp=True)


@grad_mutant(OP, "D-term-dropped", doc="dS = P o dP: the softmax Jacobian's -P_i (P_i . dP_i) term dropped")
def _drop_d(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, drop_d=True)


@grad_mutant(OP, "dK-scale-missing", doc="dK = dS^T Q: the softmax scale missing in the key gradient")
def _dk_unscaled(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, dk_unscaled=True)


@grad_mutant(OP, "causal-mask-missing-in-recomputed-P", conventions={"causal": "top_left"},
             doc="the backward recomputes P = exp(S - L) from the unmasked scores: future keys get weight")
def _unmasked(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, causal="top_left", unmasked_p=True)


@grad_mutant(OP, "lse-of-the-wrong-tile", conventions={"causal": "bottom_right"},
             doc=f"every query tile ({TILE} rows) recomputes P with the log-sum-exp saved for the first tile")
def _wrong_tile(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, causal="bottom_right", lse_first_tile=True)


@grad_mutant(OP, "gqa-dV-summed-over-the-wrong-heads", conventions={"grouped_kv": True},
             doc="dV of key/value head c sums query heads x with x % g = c instead of x // (h / g) = c")
def _wrong_group(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, dv_wrong_group=True)


@grad_mutant(OP, "alibi-slope-gradient-not-summed-over-the-batch", conventions={"use_alibi": True},
             doc="dslope of (h) slopes taken from batch entry 0 only, not summed over the batch they broadcast on")
def _slope_batch(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, slope_first_batch=True)


@grad_mutant(OP, "bias-gradient-scaled", conventions={"use_bias": True},
             doc="dbias = scale dS: the softmax scale applied to the bias's gradient (the bias is added after it)")
def _dbias_scaled(q, k, v, bias, alibi_slopes, key_padding_mask, do):
    return _backward(q, k, v, bias, alibi_slopes, key_padding_mask, do, dbias_scaled=True)
