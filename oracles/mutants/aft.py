"""Mutants of ``attention.aft``: plausible AFT kernel bugs, each a candidate in the op's canonical signature
``fn(q, k, v, w=None) -> y`` (``q, k, v (b l d)``, ``w (l l)``), each of which ``refimpl mutants --op attention.aft``
must kill at default settings.

The first two are the formulas of a well-known implementation, fast-transformers (idiap,
``fast_transformers/attention/aft_attention.py``), read from its source:

* its causal AFT-simple normalizes each key by the prefix sum **at the key** (``Kexp / Kexp.cumsum(dim=1)``) and
  then takes the running sum of ``(that) * V``:  ``Y_t = sigmoid(Q_t) sum_{s <= t} [e^{K_s} / sum_{r <= s} e^{K_r}]
  V_s`` instead of the query-side ``sum_{s <= t} e^{K_s} V_s / sum_{s <= t} e^{K_s}``;
* its AFT-full multiplies the keys by the position bias (``K * w``) before the softmax over ``s``:
  ``softmax_s(K_s w_{t,s})`` instead of ``softmax_s(K_s + w_{t,s})``.
"""
from __future__ import annotations

import numpy as np

from oracles.mutants import mutant

OP = "attention.aft"


def _sig(x):
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _aft(q, k, v, w=None, *, variant="full", causal=False, window=(1, 1), window_shift=0, outside=0.0,
         gate=True, causal_shift=0, global_max=False, den_without_bias=False, combine="add", per_key_w_shift=False):
    """AFT with the slips as switches (the correct computation at the defaults)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, d = q.shape
    if l == 0:
        return np.zeros((b, 0, d))
    t = np.arange(l)[:, None]
    j = np.arange(l)[None, :]
    if variant == "simple":
        wp = np.zeros((l, l))
    else:
        w = np.asarray(w, dtype=np.float64)
        wp = w
        if variant == "local":
            left, right = window
            inside = (j >= t - left - window_shift) & (j <= t + right + window_shift)
            wp = np.where(inside, w, outside)
    keep = (j <= t + causal_shift) if causal else np.ones((l, l), dtype=bool)
    keep = keep & np.isfinite(wp)
    if combine == "mul":
        S = k[:, None, :, :] * wp[None, :, :, None]
    else:
        S = k[:, None, :, :] + wp[None, :, :, None]
    S = np.where(keep[None, :, :, None], S, -np.inf)
    if per_key_w_shift:  # w' minus its max over the queries t (per key column): a shift that does not cancel
        wk = np.where(keep, wp, -np.inf)
        S = S - np.max(wk, axis=0)[None, None, :, None]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if global_max:  # one max per channel over every key (future ones too)
            m = np.max(k, axis=1, keepdims=True)[:, None] + np.max(np.where(keep, wp, -np.inf), axis=1)[None, :, None,
                                                                                                      None]
        else:
            m = np.max(S, axis=2, keepdims=True)
        P = np.exp(S - m)
        num = np.einsum("btsc,bsc->btc", P, v)
        if den_without_bias:
            Pk = np.where(keep[None, :, :, None], np.exp(k[:, None, :, :] - m), 0.0)
            den = np.sum(Pk, axis=2)
        else:
            den = np.sum(P, axis=2)
        y = num / den
    return _sig(q) * y if gate else y


@mutant(OP, "fast-transformers-causal-simple-key-side-prefix", conventions={"variant": "simple", "causal": True},
        doc="fast-transformers' causal AFT-simple: each key divided by the prefix sum at the key, "
            "sum_{s<=t} e^{K_s} V_s / sum_{r<=s} e^{K_r}, instead of the query-side sum_{s<=t} e^{K_s}")
def ft_causal_simple(q, k, v, w=None):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    M = np.max(k, axis=1, keepdims=True) if k.shape[1] else 0.0
    Kexp = np.exp(k - M)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = Kexp / np.cumsum(Kexp, axis=1)
    return _sig(q) * np.cumsum(weights * v, axis=1)


@mutant(OP, "fast-transformers-full-exp-K-times-w", conventions={"variant": "full"},
        doc="fast-transformers' AFT-full: softmax over s of K_s * w_{t,s} (the bias multiplies the keys) instead "
            "of K_s + w_{t,s}")
def ft_full(q, k, v, w=None):
    return _aft(q, k, v, w, variant="full", combine="mul")


@mutant(OP, "local-window-off-by-one", conventions={"variant": "local"},
        doc="AFT-local's bias kept for |t - t'| <= s (one key more on each side) instead of |t - t'| < s")
def local_off_by_one(q, k, v, w=None):
    return _aft(q, k, v, w, variant="local", window=(1, 1), window_shift=1)


@mutant(OP, "local-minus-inf-outside-window", conventions={"variant": "local"},
        doc="AFT-local written as local attention: w' = -inf outside the window (the keys outside are dropped) "
            "instead of 0 (they still count)")
def local_minus_inf(q, k, v, w=None):
    return _aft(q, k, v, w, variant="local", window=(1, 1), outside=-np.inf)


@mutant(OP, "sigmoid-missing", doc="Y_t = the weighted average alone: the sigmoid(Q_t) gate is never applied")
def sigmoid_missing(q, k, v, w=None):
    return _aft(q, k, v, w, variant="full", gate=False)


@mutant(OP, "causal-sum-includes-next", conventions={"variant": "full", "causal": True},
        doc="the causal sums run over t' <= t + 1: the next key leaks in")
def causal_next(q, k, v, w=None):
    return _aft(q, k, v, w, variant="full", causal=True, causal_shift=1)


@mutant(OP, "causal-stabilizer-over-all-keys", conventions={"variant": "full", "causal": True},
        doc="the max subtracted before exp taken over every key, future ones too: a large later key underflows "
            "every earlier row to 0/0")
def causal_global_max(q, k, v, w=None):
    return _aft(q, k, v, w, variant="full", causal=True, global_max=True)


@mutant(OP, "denominator-without-bias", conventions={"variant": "full"},
        doc="the numerator sums exp(K + w) V but the denominator exp(K) alone")
def den_no_bias(q, k, v, w=None):
    return _aft(q, k, v, w, variant="full", den_without_bias=True)


@mutant(OP, "simple-ignores-causal", conventions={"variant": "simple", "causal": True},
        doc="causal AFT-simple computed with the global softmax over every key (the non-causal formula)")
def simple_not_causal(q, k, v, w=None):
    return _aft(q, k, v, None, variant="simple", causal=False)


@mutant(OP, "bias-max-per-key-column", conventions={"variant": "local", "causal": True},
        doc="the stabilizing max of w' taken over the queries (per key column, max_t w'_{t,t'}) instead of over a "
            "row: exp(w'_{t,t'} - c_{t'}) with a per-key c does not cancel between keys (as we read labml.ai's "
            "AFTLocalAutoregressive, pos_bias.max(dim=0))")
def bias_max_per_key(q, k, v, w=None):
    return _aft(q, k, v, w, variant="local", causal=True, window=(1, 0), per_key_w_shift=True)
