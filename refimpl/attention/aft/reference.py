r"""The Attention Free Transformer (Zhai et al. 2021, "An Attention Free Transformer", arXiv:2105.14103): the
literal NumPy reference, the materialized view.

Equations (the paper's eq. 2, its AFT-simple and AFT-local; elementwise in the channel ``c``)
---------------------------------------------------------------------------------------------
* AFT-full:   ``Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w_{t,t'}) V_t' / sum_t' exp(K_t' + w_{t,t'})``
* AFT-simple: ``w = 0``:  ``Y_t = sigmoid(Q_t) * sum_t' softmax_t'(K)_t' V_t'``
* AFT-local:  ``w'_{t,t'} = w_{t,t'}`` inside the local window, ``0`` outside (the paper: "w'_{t,t'} = w_{t,t'} if
  |t - t'| < s, else 0"): the bias is zero outside the window, **not** ``-inf``; the sum still runs over every
  ``t'`` (the paper's point: AFT-local keeps global connectivity, unlike local attention).
* causal (the paper's autoregressive models): every sum runs over ``t' <= t``.

Shapes and conventions
----------------------
* ``q``, ``k``, ``v``: ``(b l d)`` (sequence-first; ``d`` channels, each its own softmax over ``t'``);
  ``w``: ``(l l)``, the learned pair-wise position biases ``w[t, t']`` (one for every channel, as the paper's);
  output ``y``: ``(b l d)``.
* ``window=(left, right)`` (refimpl's meaning, FlashAttention's): query ``t`` keeps its bias for keys
  ``t - left <= t' <= t + right``; an int ``w`` means ``(w, w)`` (``(w, 0)`` when causal; ``right > 0`` with
  ``causal=True`` is a ``ValueError``).  The paper's window ``s`` (``|t - t'| < s``) is ``(s - 1, s - 1)``.
* Stability: the softmax over ``t'`` of the logits ``S_{t,t',c} = K_{t',c} + w'_{t,t'}`` is taken after
  subtracting their maximum ``m_{t,c}`` over the kept ``t'`` (the per-column max of the paper's implementation
  note, here of ``K + w`` jointly), so no ``exp`` overflows and the largest term is ``1``: ``|K| ~ 1000`` works.
* float64 unless every float input is float32.  ``L = 0`` returns an empty ``(b 0 d)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_choice, check_shape, check_window, result_dtype

__all__ = ["VARIANTS", "aft_window", "validate_aft", "materialized", "windowed"]

VARIANTS = ("full", "simple", "local")


def aft_window(window, causal: bool, variant: str) -> Optional[Tuple[int, int]]:
    """``window`` as ``(left, right)`` for ``variant="local"`` (``None`` for the others, which take none).

    An int ``w`` is ``(w, w)`` (``(w, 0)`` when causal); with ``causal=True`` a ``right > 0`` is a ``ValueError``.
    """
    causal = check_bool(causal, "causal")
    if not isinstance(variant, str):
        raise TypeError(f"variant: expected one of {', '.join(map(repr, VARIANTS))}, got "
                        f"{type(variant).__name__} {variant!r}")
    check_choice(variant, "variant", VARIANTS)
    if variant != "local":
        if window is not None:
            raise ValueError(f"window: only variant='local' takes a window (AFT-{variant} has none), got "
                             f"window={window!r} with variant={variant!r}")
        return None
    if window is None:
        raise ValueError("window: variant='local' needs a window, an int w or a pair (left, right) of ints >= 0 "
                         "(the paper's s is (s - 1, s - 1)), got None")
    return check_window(window, causal)


def validate_aft(q, k, v, w=None, *, variant="full", causal=False, window=None):
    """Validated ``(Q, K, V, w, variant, causal, window)``: arrays in the working dtype, ``w`` ``None`` for
    AFT-simple, ``window`` ``(left, right)`` for AFT-local (else ``None``)."""
    if not isinstance(variant, str):
        raise TypeError(f"variant: expected one of {', '.join(map(repr, VARIANTS))}, got "
                        f"{type(variant).__name__} {variant!r}")
    check_choice(variant, "variant", VARIANTS)
    causal = check_bool(causal, "causal")
    Q = as_float_array(q, "q", ndim=3, allow_complex=False)
    b, l, d = Q.shape
    K = as_float_array(k, "k", ndim=3, allow_complex=False)
    check_shape(K, "k", (b, l, d), "(b, l, d) like q", src="b, l, d from q")
    V = as_float_array(v, "v", ndim=3, allow_complex=False)
    check_shape(V, "v", (b, l, d), "(b, l, d) like q (AFT is elementwise in d)", src="b, l, d from q")
    if variant == "simple":
        if w is not None:
            raise ValueError("w: AFT-simple has no position biases (w = 0 by definition); pass w=None or use "
                             "variant='full'")
    else:
        if w is None:
            raise ValueError(f"w: variant={variant!r} needs the position biases w of shape ({l}, {l}) (l from q), "
                             "got None")
        w = as_float_array(w, "w", ndim=2, allow_complex=False)
        check_shape(w, "w", (l, l), "(l, l)", src="l from q")
    win = aft_window(window, causal, variant)
    dt = result_dtype(Q, K, V, w)
    c = lambda z: None if z is None else z.astype(dt, copy=False)  # noqa: E731
    return c(Q), c(K), c(V), c(w), variant, causal, win


def _w_prime(w, variant: str, l: int, window, dtype) -> np.ndarray:
    r"""``w' (l l)``: ``w`` (full), ``0`` (simple), or ``w`` inside the window and ``0`` outside (local)."""
    if variant == "simple":
        # AFT-simple: w = 0
        return np.zeros((l, l), dtype=dtype)
    if variant == "full":
        return w
    left, right = window
    t = np.arange(l)[:, None]
    tp = np.arange(l)[None, :]
    # w'_{t,t'} = w_{t,t'} if t - left <= t' <= t + right else 0   (the paper: |t - t'| < s, s = left + 1 = right + 1)
    inside = (tp >= t - left) & (tp <= t + right)
    return np.where(inside, w, dtype.type(0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    r"""``sigmoid(x) = 1 / (1 + exp(-x))``, written with ``z = exp(-|x|) <= 1`` so nothing overflows:
    ``1 / (1 + z)`` for ``x >= 0``, ``z / (1 + z)`` for ``x < 0``."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def materialized(q, k, v, w=None, *, variant: str = "full", causal: bool = False, window=None):
    r"""AFT by materializing the logits ``S (b l l d)`` and their softmax over ``t'`` (any variant).

    ``q, k, v (b l d)``, ``w (l l)`` (``None`` for ``variant="simple"``) -> ``Y (b l d)``.
    """
    Q, K, V, w, variant, causal, window = validate_aft(q, k, v, w, variant=variant, causal=causal, window=window)
    b, l, d = Q.shape
    dt = Q.dtype
    if l == 0:
        return np.zeros((b, 0, d), dtype=dt)
    # w'_{t,t'}: the position bias each query t gives key t' (the variant's)
    w_prime = _w_prime(w, variant, l, window, dt)
    # kept keys: every t' (non-causal) or t' <= t (causal)
    keep = np.tril(np.ones((l, l), dtype=bool)) if causal else np.ones((l, l), dtype=bool)
    # S_{t,t',c} = K_{t',c} + w'_{t,t'}   (-inf where t' is not kept)
    S = K[:, None, :, :] + w_prime[None, :, :, None]
    S = np.where(keep[None, :, :, None], S, dt.type(-np.inf))
    # m_{t,c} = max_{t'} S_{t,t',c}   (finite: t' = t is always kept)
    m = np.max(S, axis=2, keepdims=True)
    # P_{t,t',c} = exp(S_{t,t',c} - m_{t,c})
    P = np.exp(S - m)
    # Y_t = sigmoid(Q_t) * sum_t' P_{t,t'} V_t' / sum_t' P_{t,t'}
    num = np.einsum("btsc,bsc->btc", P, V)
    den = np.sum(P, axis=2)
    return _sigmoid(Q) * (num / den)


def _bounds(variant: str, causal: bool, window, l: int, t: int) -> Tuple[int, int]:
    """``(lo, hi)``: the keys ``lo <= j <= hi`` whose bias is ``w_{t,j}``; the other kept keys have bias 0.
    AFT-full: every kept key; AFT-simple: none (an empty range at ``t``); AFT-local: the window."""
    last = t if causal else l - 1
    if variant == "full":
        return 0, last
    if variant == "simple":
        return t + 1 if causal else t, t if causal else t - 1
    left, right = window
    return max(0, t - left), min(last, t + right)


def _check_windowed_bias(w, dtype) -> None:
    """The windowed algorithm's shift exceeds a row's max by at most ``2 max|w|`` (:func:`windowed`): past the
    dtype's exp range (700 in float64, 80 in float32) its largest term could underflow, so such biases are a
    ``ValueError`` (the materialized view has no such limit), never an inexact answer."""
    if w is None or np.size(w) == 0:
        return
    limit = 700.0 if np.dtype(dtype) == np.float64 else 80.0
    w_max = float(np.max(np.abs(w)))
    if 2.0 * w_max >= limit:
        raise ValueError(f"w: the windowed view needs 2 max|w| < {limit:g} in {np.dtype(dtype).name} (its shifted "
                         f"exponentials would underflow), got max|w| = {w_max:g}; use view='materialized'")


def windowed(q, k, v, w=None, *, variant: str = "full", causal: bool = False, window=None):
    r"""AFT without the ``(l l)`` logits: sums over the keys of bias 0 plus the window (the kernel's algorithm).

    For query ``t`` with window keys ``lo <= j <= hi`` (:func:`_bounds`), shifts ``m_c`` (of ``K``) and
    ``mw_t = max(0, max_window w_{t,j})`` (of ``w``), ``E_j = exp(K_j - m)``:

    ``num_t = exp(-mw_t) (sum_{j < lo} E_j V_j + sum_{hi < j <= last} E_j V_j) + sum_{lo <= j <= hi} exp(w_{t,j} - mw_t)
    E_j V_j``, ``den_t`` the same with ``V = 1``, ``Y_t = sigmoid(Q_t) num_t / den_t``.

    Non-causal: ``m_c = max_j K_{j,c}``; the outside sums are prefix sums (``j < lo``) and suffix sums
    (``j > hi``), never ``total - window``.  Causal: ``m_{t,c} = max_{j <= t} K_{j,c}``, the running max; when it
    grows from ``m`` to ``m'``, the prefix sums are rescaled by ``exp(m - m')`` (the online softmax).
    ``q, k, v (b l d)``, ``w (l l)`` -> ``Y (b l d)``.
    """
    Q, K, V, w, variant, causal, window = validate_aft(q, k, v, w, variant=variant, causal=causal, window=window)
    b, l, d = Q.shape
    dt = Q.dtype
    if variant != "simple":
        _check_windowed_bias(w, dt)
    Y = np.zeros((b, l, d), dtype=dt)
    if l == 0:
        return Y
    zero = dt.type(0)
    if not causal:
        # m_c = max_j K_{j,c};  E_j = exp(K_j - m), EV_j = E_j V_j
        m = np.max(K, axis=1, keepdims=True)
        E = np.exp(K - m)
        EV = E * V
        # prefix sums P_j = sum_{j' < j} (P_0 = 0), suffix sums S_j = sum_{j' >= j} (S_l = 0)
        zeros = np.zeros((b, 1, d), dtype=dt)
        PD, PN = (np.concatenate([zeros, np.cumsum(X, axis=1)], axis=1) for X in (E, EV))
        SD, SN = (np.concatenate([np.cumsum(X[:, ::-1], axis=1)[:, ::-1], zeros], axis=1) for X in (E, EV))
    else:
        m = np.full((b, d), -np.inf, dtype=dt)  # the running max m_{t,c}
        pre = 0  # the prefix sums hold the keys j < pre, shifted by the current m
        PDc = np.zeros((b, d), dtype=dt)
        PNc = np.zeros((b, d), dtype=dt)
    for t in range(l):
        lo, hi = _bounds(variant, causal, window, l, t)
        if causal:
            # m' = max(m, K_t); prefix sums rescaled by exp(m - m')
            m_new = np.maximum(m, K[:, t])
            c = np.exp(m - m_new)
            PDc, PNc, m = PDc * c, PNc * c, m_new
            # the keys pre <= j < lo join the prefix sums (shifted by the current m)
            for j in range(pre, lo):
                E_j = np.exp(K[:, j] - m)
                PDc, PNc = PDc + E_j, PNc + E_j * V[:, j]
            pre = max(pre, lo)
            E_win = np.exp(K[:, lo:hi + 1] - m[:, None])  # (b, window, d)
            outD, outN = PDc, PNc
        else:
            E_win = E[:, lo:hi + 1]
            # outside the window: j < lo and j > hi
            outD, outN = PD[:, lo] + SD[:, hi + 1], PN[:, lo] + SN[:, hi + 1]
        w_win = w[t, lo:hi + 1] if hi >= lo else np.zeros(0, dtype=dt)
        outside = lo > 0 or hi < (t if causal else l - 1)
        # mw_t = max(0 if a key lies outside the window, max_window w_{t,j})
        shifts = list(w_win) + ([zero] if outside else [])
        mw = max(shifts) if shifts else zero
        # e_{t,j} = exp(w_{t,j} - mw_t);  e_0 = exp(-mw_t) for the keys of bias 0
        e = np.exp(w_win - mw)
        e0 = np.exp(-mw)
        # num_t = e_0 outN + sum_j e_{t,j} E_j V_j ;  den_t = e_0 outD + sum_j e_{t,j} E_j
        num = e0 * outN + np.einsum("j,bjc->bc", e, E_win * V[:, lo:hi + 1])
        den = e0 * outD + np.einsum("j,bjc->bc", e, E_win)
        # Y_t = sigmoid(Q_t) num_t / den_t
        Y[:, t] = _sigmoid(Q[:, t]) * (num / den)
    return Y
