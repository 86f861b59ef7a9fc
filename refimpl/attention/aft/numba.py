r"""The AFT kernel (Numba, CPU): the ``"windowed"`` view of :func:`refimpl.attention.aft.aft_attention`.

It computes what :func:`refimpl.attention.aft.reference.materialized` computes, for every variant, without
forming the ``(b l l d)`` logits.  Write ``E_j = exp(K_j - m)`` (``m`` a per-channel shift) and
``e_{t,j} = exp(w'_{t,j} - mw_t)``; the keys outside query ``t``'s window have bias ``w' = 0``, so

    num_t = exp(-mw_t) (sum_{j < t - left} E_j V_j + sum_{j > t + right} E_j V_j) + sum_{window} e_{t,j} E_j V_j
    den_t = the same with V = 1,        Y_t = sigmoid(Q_t) num_t / den_t.

* The outside sums are a running **prefix** sum and a **suffix** sum computed by a backward pass (each a sum of
  positive terms for ``den``: no cancellation, unlike ``total - window``); the window part costs
  ``O(window)`` multiply-adds per query and channel.  AFT-local and AFT-simple (empty window) are linear in
  ``L``; AFT-full is the window covering everything, ``O(L^2 d)``.
* Shifts.  Non-causal: ``m_c = max_j K_{j,c}`` (one pass).  Causal: a **running max** ``m_{t,c} = max_{j <= t}
  K_{j,c}``; when it grows, the prefix sums and the stored window terms are rescaled by ``exp(m_old - m_new)``
  (the online softmax), so a large later key never underflows the earlier rows.  ``mw_t = max(0 if any key lies
  outside the window, max_window w_{t,j})``.  Every exponent is ``<= 0``: nothing overflows.  The shift
  ``m + mw_t`` exceeds the true row max by at most ``2 max |w_t|`` (the key with the largest ``K`` is kept, its
  logit is ``>= m - max |w_t|``), so the largest term is at least ``exp(-2 max |w_t|)``: the kernel is exact
  to rounding while ``2 max |w| < 700`` (float64) / ``< 80`` (float32); ``|K|`` may be anything.
* Parallel over ``batch x channel blocks`` (``prange``); the loops over channels are innermost (contiguous).

float32 stays float32, float64 float64 (``exp`` is libm's).  Shapes ``q, k, v (b l d)``, ``w (l l)``.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from refimpl._numba import warmup
from refimpl.attention.aft.reference import _check_windowed_bias, validate_aft

__all__ = ["aft_windowed", "CHANNEL_BLOCK"]

CHANNEL_BLOCK = 32


@nb.njit(cache=True, inline="always")
def _sig(x):
    # sigmoid(x) with z = exp(-|x|) <= 1
    z = math.exp(-abs(x))
    if x >= 0:
        return 1 / (1 + z)
    return z / (1 + z)


@nb.njit(cache=True)
def _window_weights(W, t, lo, hi, l, has_w, ew):
    # e_{t,j} = exp(w_{t,j} - mw_t) for lo <= j <= hi; returns exp(-mw_t), the weight of the keys outside
    outside = lo > 0 or hi < l - 1
    mw = W.dtype.type(0) if outside else W.dtype.type(-np.inf)
    if has_w:
        for j in range(lo, hi + 1):
            mw = max(mw, W[t, j])
    if mw == -np.inf:  # no key at all (empty window, nothing outside): cannot happen for l >= 1
        mw = W.dtype.type(0)
    for j in range(lo, hi + 1):
        ew[j - lo] = math.exp(W[t, j] - mw)
    return math.exp(-mw)


@nb.njit(parallel=True, cache=True)
def _aft_noncausal(Q, K, V, W, has_w, left, right, cb, Y):
    # window of query t: [max(0, t - left), min(l - 1, t + right)]; right = -1, left = 0: empty (AFT-simple)
    b, l, d = Q.shape
    dt = Q.dtype
    nblk = (d + cb - 1) // cb
    for task in nb.prange(b * nblk):
        bi = task // nblk
        c0 = (task % nblk) * cb
        c1 = min(c0 + cb, d)
        n = c1 - c0
        # m_c = max_j K_{j,c}
        m = np.full(n, -np.inf, dtype=dt)
        for j in range(l):
            for c in range(n):
                m[c] = max(m[c], K[bi, j, c0 + c])
        # E_j = exp(K_j - m), EV_j = E_j V_j
        E = np.empty((l, n), dtype=dt)
        EV = np.empty((l, n), dtype=dt)
        for j in range(l):
            for c in range(n):
                E[j, c] = math.exp(K[bi, j, c0 + c] - m[c])
                EV[j, c] = E[j, c] * V[bi, j, c0 + c]
        # suffix sums SD_j = sum_{j' >= j} E_j', SN_j = sum_{j' >= j} EV_j'  (SD_l = 0)
        SD = np.zeros((l + 1, n), dtype=dt)
        SN = np.zeros((l + 1, n), dtype=dt)
        for j in range(l - 1, -1, -1):
            for c in range(n):
                SD[j, c] = SD[j + 1, c] + E[j, c]
                SN[j, c] = SN[j + 1, c] + EV[j, c]
        # prefix sums over j < lo
        PD = np.zeros(n, dtype=dt)
        PN = np.zeros(n, dtype=dt)
        ew = np.empty(left + right + 2, dtype=dt)
        num = np.empty(n, dtype=dt)
        den = np.empty(n, dtype=dt)
        pre = 0  # keys j < pre are in the prefix sums
        for t in range(l):
            lo = max(0, t - left)
            hi = min(l - 1, t + right)
            while pre < lo:
                for c in range(n):
                    PD[c] += E[pre, c]
                    PN[c] += EV[pre, c]
                pre += 1
            # outside: j < lo (prefix) and j > hi (suffix), bias 0 -> weight exp(-mw_t)
            e0 = _window_weights(W, t, lo, hi, l, has_w, ew)
            for c in range(n):
                num[c] = e0 * (PN[c] + SN[hi + 1, c])
                den[c] = e0 * (PD[c] + SD[hi + 1, c])
            # the window: sum_j e_{t,j} E_j V_j
            for j in range(lo, hi + 1):
                e = ew[j - lo]
                for c in range(n):
                    num[c] += e * EV[j, c]
                    den[c] += e * E[j, c]
            for c in range(n):
                Y[bi, t, c0 + c] = _sig(Q[bi, t, c0 + c]) * (num[c] / den[c])


@nb.njit(parallel=True, cache=True)
def _aft_causal(Q, K, V, W, has_w, left, cb, Y):
    # keys j <= t; window of query t: [max(0, t - left), t] (has_w) or empty (AFT-simple: every key in the prefix)
    b, l, d = Q.shape
    dt = Q.dtype
    nblk = (d + cb - 1) // cb
    for task in nb.prange(b * nblk):
        bi = task // nblk
        c0 = (task % nblk) * cb
        c1 = min(c0 + cb, d)
        n = c1 - c0
        m = np.full(n, -np.inf, dtype=dt)  # running max m_{t,c} = max_{j <= t} K_{j,c}
        scale = np.empty(n, dtype=dt)
        E = np.empty((l, n), dtype=dt)  # E_j = exp(K_j - m) for the keys of the current window
        EV = np.empty((l, n), dtype=dt)
        PD = np.zeros(n, dtype=dt)  # prefix sums over j < lo, shifted by the current m
        PN = np.zeros(n, dtype=dt)
        ew = np.empty(left + 2, dtype=dt)
        num = np.empty(n, dtype=dt)
        den = np.empty(n, dtype=dt)
        pre = 0  # keys j < pre are in the prefix sums; keys pre <= j < t are stored in E, EV
        for t in range(l):
            # m' = max(m, K_t); rescale everything held by exp(m - m').  One exp per entry: with
            # delta = K_t - m, exp(-|delta|) is exp(m - m') when the max grows (then E_t = 1), else E_t = exp(K_t - m)
            grew = False
            for c in range(n):
                x = K[bi, t, c0 + c]
                delta = x - m[c]  # +inf at t = 0 (m = -inf): scale 0, E_t = 1
                e = math.exp(-abs(delta))
                if delta > 0:
                    scale[c] = e
                    E[t, c] = 1
                    m[c] = x
                    grew = True
                else:
                    scale[c] = 1
                    E[t, c] = e
            if grew:
                for c in range(n):
                    PD[c] *= scale[c]
                    PN[c] *= scale[c]
                for j in range(pre, t):
                    for c in range(n):
                        E[j, c] *= scale[c]
                        EV[j, c] *= scale[c]
            for c in range(n):
                EV[t, c] = E[t, c] * V[bi, t, c0 + c]
            if has_w:
                lo = max(0, t - left)
                hi = t
            else:
                lo = t + 1
                hi = t
            while pre < lo:
                for c in range(n):
                    PD[c] += E[pre, c]
                    PN[c] += EV[pre, c]
                pre += 1
            e0 = _window_weights(W, t, lo, hi, hi + 1, has_w, ew)
            for c in range(n):
                num[c] = e0 * PN[c]
                den[c] = e0 * PD[c]
            for j in range(lo, hi + 1):
                e = ew[j - lo]
                for c in range(n):
                    num[c] += e * EV[j, c]
                    den[c] += e * E[j, c]
            for c in range(n):
                Y[bi, t, c0 + c] = _sig(Q[bi, t, c0 + c]) * (num[c] / den[c])


def aft_windowed(q, k, v, w=None, *, variant: str = "full", causal: bool = False, window=None):
    r"""AFT without materializing the logits (module docstring); ``q, k, v (b l d)``, ``w (l l)`` -> ``Y (b l d)``."""
    Q, K, V, w, variant, causal, win = validate_aft(q, k, v, w, variant=variant, causal=causal, window=window)
    b, l, d = Q.shape
    dt = Q.dtype
    Y = np.empty((b, l, d), dtype=dt)
    if l == 0 or d == 0 or b == 0:
        return Y
    if variant == "simple":
        W, has_w, left, right = np.zeros((1, 1), dtype=dt), False, 0, -1
    else:
        W, has_w = np.ascontiguousarray(w), True
        left, right = (l, l) if variant == "full" else win
        left, right = min(left, l), min(right, l)
        _check_windowed_bias(W, dt)  # 2 max|w| within the dtype's exp range (reference._check_windowed_bias)
    if causal:
        _aft_causal(Q, K, V, W, has_w, left, CHANNEL_BLOCK, Y)
    else:
        _aft_noncausal(Q, K, V, W, has_w, left, right, CHANNEL_BLOCK, Y)
    return Y


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.zeros((1, 2, 1), dtype=dt)
        W = np.zeros((2, 2), dtype=dt)
        for causal in (False, True):
            aft_windowed(x, x, x, W, variant="local", causal=causal, window=(1, 0))
            aft_windowed(x, x, x, None, variant="simple", causal=causal)
