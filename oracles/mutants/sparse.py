"""Mutants of ``attention.sparse``: plausible sparse-pattern bugs, each a candidate that ``refimpl mutants --op
attention.sparse`` must kill at default settings.

Each mutant is a small dense NumPy kernel (the keep mask built from index arithmetic, then a masked softmax) with
one deliberate slip in the pattern: a window edge one off, the dilation on one side only or anchored at the query's
dilated position, a one-directional global token, BigBird's random blocks unseeded / drawn for global blocks too /
with a wrapping window, the strided ``A1`` one key short, the fixed pattern's summaries at the start of the block,
the causal mask forgotten for global tokens, and two library spellings misread (Hugging Face's even ``w`` read as
per side, an FLA ``W`` read as ``W`` keys to the left plus the token).
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

OP = "attention.sparse"


def _attend(q, k, v, keep, scale=None):
    """``softmax(scale q.k)`` over ``keep (hp l l)`` (hp = 1 or h) times ``v``; an empty row is zero."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, h, n = q.shape
    sc = (1.0 / math.sqrt(n) if n else 1.0) if scale is None else float(scale)
    s = sc * np.einsum("bihn,bjhn->bhij", q, k)
    keep = np.broadcast_to(np.asarray(keep, bool)[None], s.shape)
    sm = np.where(keep, s, -np.inf)
    m = np.max(sm, axis=-1, keepdims=True) if l else np.zeros(s.shape[:-1] + (1,))
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.where(keep, np.exp(sm - m), 0.0)
    Z = np.sum(w, axis=-1, keepdims=True)
    p = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    return np.einsum("bhij,bjhp->bihp", p, v)


def _ij(l):
    return np.arange(l)[:, None], np.arange(l)[None, :]


def _window(l, left, right, dil=1, *, left_shift=0, right_dil=None, anchor_query=False):
    """The dilated window ``(l l)``: ``j = i + t dil``, ``-left <= t <= right`` (with the slips as switches)."""
    i, j = _ij(l)
    rd = dil if right_dil is None else right_dil
    base = (i // dil) * dil if anchor_query else i
    off = j - base
    left_ok = (off <= 0) & (off % dil == 0) & (-off <= (left - left_shift) * dil)
    right_ok = (off >= 0) & (off % rd == 0) & (off <= right * rd)
    return left_ok | right_ok


def _longformer(l, left, right, G, causal, *, row=True, col=True, causal_on_global=True):
    i, j = _ij(l)
    keep = _window(l, left, right)
    if causal:
        keep = keep & (j <= i)
    g = np.zeros(l, bool)
    g[[x for x in G if x < l]] = True
    glob = np.zeros((l, l), bool)
    if row:
        glob |= g[:, None]
    if col:
        glob |= g[None, :]
    if causal and causal_on_global:
        glob &= j <= i
    return keep | glob


# ----------------------------------------------------------------------------------------------------------
# sliding window, dilation
# ----------------------------------------------------------------------------------------------------------

@mutant(OP, "window-left-edge-off-by-one", conventions={"kind": "sliding_window", "window_left": 3, "window_right": 3},
        doc="the window keeps i - left < j (exclusive left edge): one key short on the left")
def _window_edge(q, k, v):
    return _attend(q, k, v, _window(np.shape(q)[1], 3, 3, left_shift=1)[None])


@mutant(OP, "dilation-one-side-only", conventions={"kind": "sliding_window", "window_left": 2, "window_right": 2,
                                                   "dilation": 2},
        doc="the dilation applied to the left offsets only: the right side is the plain window j <= i + right")
def _dil_one_side(q, k, v):
    return _attend(q, k, v, _window(np.shape(q)[1], 2, 2, 2, right_dil=1)[None])


@mutant(OP, "dilation-on-query", conventions={"kind": "sliding_window", "window_left": 2, "window_right": 2,
                                              "dilation": 2},
        doc="the dilated offsets taken from the query's dilated position floor(i / dil) dil (the dilation applied to "
            "the query index too): keys on the grid j = 0 mod dil for every query")
def _dil_on_query(q, k, v):
    return _attend(q, k, v, _window(np.shape(q)[1], 2, 2, 2, anchor_query=True)[None])


@mutant(OP, "dilation-per-head-swapped", conventions={"kind": "sliding_window", "window_left": 2, "window_right": 1,
                                                      "dilation": (1, 3)},
        doc="the per-head dilations applied to the heads in reverse order")
def _dil_swapped(q, k, v):
    l = np.shape(q)[1]
    return _attend(q, k, v, np.stack([_window(l, 2, 1, 3), _window(l, 2, 1, 1)]))


# ----------------------------------------------------------------------------------------------------------
# Longformer global tokens
# ----------------------------------------------------------------------------------------------------------

_LF = {"kind": "longformer", "window_left": 1, "window_right": 1, "global_tokens": (0, 5)}


@mutant(OP, "global-row-only", conventions=_LF,
        doc="global tokens attend to every key, but the other queries do not attend to them (one-directional)")
def _global_row(q, k, v):
    return _attend(q, k, v, _longformer(np.shape(q)[1], 1, 1, (0, 5), False, col=False)[None])


@mutant(OP, "global-column-only", conventions=_LF,
        doc="every query attends to the global tokens, but their own rows keep only the window (one-directional)")
def _global_col(q, k, v):
    return _attend(q, k, v, _longformer(np.shape(q)[1], 1, 1, (0, 5), False, row=False)[None])


@mutant(OP, "causal-mask-missing-with-global", conventions={**_LF, "window_right": 0, "causal": True},
        doc="causal Longformer: the causal mask applied to the window only; global rows and columns see the future")
def _global_causal(q, k, v):
    return _attend(q, k, v, _longformer(np.shape(q)[1], 1, 0, (0, 5), True, causal_on_global=False)[None])


# ----------------------------------------------------------------------------------------------------------
# Sparse Transformer
# ----------------------------------------------------------------------------------------------------------

@mutant(OP, "strided-A1-one-short", conventions={"kind": "strided", "stride": 3, "causal": True, "combine": "heads"},
        doc="strided A1 = {max(0, i - l_s + 1), ..., i}: l_s keys instead of Child et al.'s l_s + 1 (in the merged "
            "head A2 holds i - l_s anyway: the slip shows in the separate heads)")
def _strided_short(q, k, v):
    i, j = _ij(np.shape(q)[1])
    A1 = (j <= i) & (j >= i - 3 + 1)
    A2 = (j <= i) & ((i - j) % 3 == 0)
    return _attend(q, k, v, np.stack([A1, A2]))


@mutant(OP, "fixed-summary-at-block-start", conventions={"kind": "fixed", "stride": 3, "summary": 1, "causal": True},
        doc="the fixed pattern's summary positions at the start of every stride block (j mod l_s < c) instead of "
            "its end (j mod l_s >= l_s - c)")
def _fixed_start(q, k, v):
    i, j = _ij(np.shape(q)[1])
    keep = (j <= i) & ((j // 3 == i // 3) | (j % 3 < 1))
    return _attend(q, k, v, keep[None])


@mutant(OP, "strided-heads-swapped", conventions={"kind": "strided", "stride": 3, "causal": True, "combine": "heads"},
        doc="combine='heads': head 0 keeps A2 and head 1 keeps A1")
def _strided_heads(q, k, v):
    i, j = _ij(np.shape(q)[1])
    A1 = (j <= i) & (j >= i - 3)
    A2 = (j <= i) & ((i - j) % 3 == 0)
    return _attend(q, k, v, np.stack([A2, A1]))


# ----------------------------------------------------------------------------------------------------------
# BigBird
# ----------------------------------------------------------------------------------------------------------

def _bigbird_keep(l, B, wb, gb, rb, bits, *, wrap=False, draw_for_global=False):
    nb = -(-l // B)
    half = wb // 2
    blocks = np.zeros((nb, nb), bool)
    for u in range(nb):
        if u < gb:
            if draw_for_global:
                bits.random_raw()
            blocks[u, :] = True
            continue
        window = {(u + t) % nb for t in range(-half, half + 1)} if wrap else \
            {u + t for t in range(-half, half + 1) if 0 <= u + t < nb}
        for x in window:
            blocks[u, x] = True
        blocks[u, :gb] = True
        cand = [x for x in range(nb) if x not in window and x >= gb]
        r = min(rb, len(cand))
        for t in range(r):
            jj = t + int(bits.random_raw()) % (len(cand) - t)
            cand[t], cand[jj] = cand[jj], cand[t]
        for x in cand[:r]:
            blocks[u, x] = True
    pos = np.arange(l) // B
    return blocks[pos[:, None], pos[None, :]]


_BB = {"kind": "bigbird", "block": 2, "window_blocks": 3, "global_blocks": 1, "random_blocks": 1, "seed": 0}


@mutant(OP, "bigbird-unseeded-random-blocks", conventions=_BB,
        doc="BigBird's random blocks drawn from an unseeded generator (numpy.random.PCG64() from OS entropy) instead "
            "of PCG64(seed): a different pattern on every run")
def _bb_unseeded(q, k, v):
    return _attend(q, k, v, _bigbird_keep(np.shape(q)[1], 2, 3, 1, 1, np.random.PCG64())[None])


@mutant(OP, "bigbird-window-wraps-around", conventions={**_BB, "global_blocks": 0},
        doc="BigBird's block window wraps around the sequence ends (u +- 1 mod nb) instead of being clipped (claimed "
            "without global blocks: with block 0 global the wrapped block is kept anyway)")
def _bb_wrap(q, k, v):
    return _attend(q, k, v, _bigbird_keep(np.shape(q)[1], 2, 3, 0, 1, np.random.PCG64(0), wrap=True)[None])


@mutant(OP, "bigbird-draws-for-global-blocks", conventions=_BB,
        doc="a random draw spent on every query block, the global ones too: the raw stream shifts by one")
def _bb_global_draw(q, k, v):
    return _attend(q, k, v, _bigbird_keep(np.shape(q)[1], 2, 3, 1, 1, np.random.PCG64(0), draw_for_global=True)[None])


# ----------------------------------------------------------------------------------------------------------
# library window spellings misread
# ----------------------------------------------------------------------------------------------------------

@mutant(OP, "hf-window-read-per-side", adapter="hf_longformer.attention_window",
        conventions={"kind": "longformer", "window_left": 3, "window_right": 3},
        doc="Hugging Face's even attention_window w read as w keys per side (Longformer's spelling) instead of "
            "w // 2 per side")
def _hf_per_side(q, k, v, attention_window, global_attention_mask, scale=None):
    g = np.flatnonzero(np.asarray(global_attention_mask)[0]) if np.size(global_attention_mask) else ()
    w = int(attention_window)  # the slip: w, not w // 2
    return _attend(q, k, v, _longformer(np.shape(q)[1], w, w, tuple(g), False)[None], scale)


@mutant(OP, "fla-window-one-too-many", adapter="fla.window_size", conventions={"window_left": 3, "window_right": 0},
        doc="an FLA-style W read as keys [i - W, i] (W keys to the left plus the token) instead of [i - W + 1, i]")
def _fla_plus_one(q, k, v, window_size, scale=None):
    l = np.shape(q)[1]
    i, j = _ij(l)
    W = int(window_size)
    return _attend(q, k, v, ((j <= i) & (j >= i - W))[None], scale)
