r"""Ground truth for sparse attention patterns (issue 13, methods 1-3): the allowed keys of every query as Python
sets, straight from the papers' definitions, then dense masked softmax attention over them.

Nothing here imports :mod:`refimpl` (nor the conformance layer); the sets are never built from a block layout.
Positions ``0 .. l-1``, self-attention (``s = l``); ``sets[hh][i]`` is the set of keys query ``i`` of pattern head
``hh`` may attend.  A pattern has one head (shared by every attention head) or ``h`` heads.

Patterns (the shared contract, ``/tmp/tasks/sparse_spec.md``)
-------------------------------------------------------------
* **Sliding window** (Beltagy et al. 2020, "Longformer", sec. 3.1), ``window = (left, right)`` inclusive key
  counts (an int ``w`` is ``(w, w)``), dilation ``dil`` (an int, or one per head):
  ``keep(i, j)  iff  j = i + t dil  for an integer t with  -left <= t <= right,  0 <= j < l``.
  ``causal=True`` forces ``right = 0`` (an int window becomes ``(w, 0)``; an explicit ``right > 0`` is a
  ``ValueError``).
* **Longformer** (Beltagy et al. 2020, sec. 3.1 "global attention"): ``keep = window(i, j) or i in G or j in G``
  -- symmetric global tokens: a global token attends to every key and every query attends to it; with
  ``causal`` additionally ``j <= i`` everywhere.
* **Strided** (Child et al. 2019, "Generating Long Sequences with Sparse Transformers", sec. 4.2), stride
  ``l_s``: ``A1(i) = {j : max(0, i - l_s) <= j <= i}``, ``A2(i) = {j : j <= i, (i - j) mod l_s = 0}``.
  ``causal=False`` is our symmetric extension (the paper's patterns are causal):
  ``A1(i) = {j : |i - j| <= l_s}``, ``A2(i) = {j : (i - j) mod l_s = 0}``.
* **Fixed** (Child et al. 2019, sec. 4.2), stride ``l_s``, summary ``c`` (``1 <= c <= l_s``):
  ``A1(i) = {j : floor(j / l_s) = floor(i / l_s)}``, ``A2(i) = {j : j mod l_s in {l_s - c, ..., l_s - 1}}``;
  causal: ``j <= i`` in both.
* ``combine="union"``: the paper's merged head, every head keeps ``A1 | A2`` (one pattern head);
  ``combine="heads"``: the paper's multi-head option, head 0 keeps ``A1``, head 1 keeps ``A2`` (two heads).
* **BigBird** (Zaheer et al. 2020, ITC construction, sec. 2 and appendix D), block size ``B``,
  ``nb = ceil(l / B)`` blocks, block ``u`` = positions ``[u B, min((u + 1) B, l))``: the first ``global_blocks``
  blocks are global (symmetric); query block ``u`` keeps key blocks ``u - window_blocks // 2 .. u +
  window_blocks // 2`` (clipped, no wrap-around; ``window_blocks`` odd); random key blocks drawn from
  ``numpy.random.PCG64(seed).random_raw()`` (the raw 64-bit stream, stable across platforms and numpy
  versions) by a partial Fisher-Yates over the sorted candidates (:func:`bigbird_random_blocks`).  No causal
  BigBird (the encoder pattern).

Oracles and bound
-----------------
* :func:`sparse_attention_mpmath`: the keep mask from the sets, :func:`oracles.attention.sdpa_mpmath` (50 digits)
  -- small cases.
* :func:`sparse_attention_fsum`: float64, each query's kept keys in sorted order: scores ``scale * fsum(q_i * k_j)``,
  ``m_i`` = their max, ``w_j = exp(s_j - m_i)``, ``Z = fsum(w)``, ``o = fsum(w_j v_j) / Z`` (correctly rounded sums:
  a few roundings per output) -- larger cases.
* :func:`sparse_attention_bound`: :func:`oracles.attention.softmax_attention_bound` on the keep mask built from the
  sets (the first-order forward error of max-subtracted masked softmax attention, depth ``n + l + 5``).

A query row with no kept key gives zeros (refimpl's convention; never happens for these patterns with ``l > 0``
except through no rule -- every pattern keeps ``j = i``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from oracles.attention import sdpa_mpmath, softmax_attention_bound

__all__ = ["KINDS", "window_pair", "sliding_window_sets", "longformer_sets", "strided_sets", "fixed_sets",
           "bigbird_random_blocks", "bigbird_block_sets", "bigbird_sets", "pattern_sets", "keep_from_sets",
           "sparse_attention_mpmath", "sparse_attention_fsum", "sparse_attention_bound", "default_scale"]

KINDS = ("sliding_window", "longformer", "strided", "fixed", "bigbird")

Sets = List[List[Set[int]]]  # sets[head][query] -> allowed keys


def _int(name: str, x, lo: int = 0) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or int(x) < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}, got {x!r}")
    return int(x)


def window_pair(window, causal: bool) -> Tuple[int, int]:
    """``(left, right)`` from ``window`` (an int ``w`` = ``(w, w)``); causal forces ``right = 0`` (an int window
    becomes ``(w, 0)``; an explicit pair with ``right > 0`` under causal is a ``ValueError``)."""
    if isinstance(window, (int, np.integer)) and not isinstance(window, (bool, np.bool_)):
        w = _int("window", window)
        return (w, 0) if causal else (w, w)
    try:
        left, right = window
    except (TypeError, ValueError):
        raise ValueError(f"window: expected an int or a pair (left, right), got {window!r}") from None
    left, right = _int("window left", left), _int("window right", right)
    if causal and right > 0:
        raise ValueError(f"window: causal forces right = 0, got (left, right) = ({left}, {right})")
    return left, right


def _dilations(dilation) -> List[int]:
    if isinstance(dilation, (int, np.integer)) and not isinstance(dilation, (bool, np.bool_)):
        return [_int("dilation", dilation, 1)]
    ds = [_int("dilation", d, 1) for d in dilation]
    if not ds:
        raise ValueError("dilation: expected an int >= 1 or one per head, got an empty sequence")
    return ds


def sliding_window_sets(l: int, window, *, dilation=1, causal: bool = False) -> Sets:
    """``keep(i, j) iff j = i + t dil, -left <= t <= right, 0 <= j < l`` (Longformer's dilated sliding window);
    one head per dilation."""
    l = _int("l", l)
    left, right = window_pair(window, causal)
    out = []
    for dil in _dilations(dilation):
        head = []
        for i in range(l):
            keys = set()
            for t in range(max(-left, -(i // dil)), min(right, (l - 1 - i) // dil) + 1):  # 0 <= j < l
                j = i + t * dil
                keys.add(j)
            head.append(keys)
        out.append(head)
    return out


def longformer_sets(l: int, window, *, dilation=1, global_tokens: Sequence[int] = (), causal: bool = False) -> Sets:
    """``window(i, j) or i in G or j in G`` (symmetric global attention), ``and j <= i`` when causal."""
    l = _int("l", l)
    G = set()
    for g in global_tokens:
        g = _int("global_tokens entry", g)
        if g >= l:
            raise ValueError(f"global_tokens: expected positions in [0, {l}), got {g}")
        G.add(g)
    out = []
    for head in sliding_window_sets(l, window, dilation=dilation, causal=causal):
        new = []
        for i in range(l):
            keys = set(head[i]) | G
            if i in G:
                keys = set(range(l))
            if causal:
                keys = {j for j in keys if j <= i}
            new.append(keys)
        out.append(new)
    return out


def _combine(l: int, A1, A2, combine: str) -> Sets:
    if combine == "union":
        return [[A1(i) | A2(i) for i in range(l)]]
    if combine == "heads":
        return [[A1(i) for i in range(l)], [A2(i) for i in range(l)]]
    raise ValueError(f"combine: expected 'union' or 'heads', got {combine!r}")


def strided_sets(l: int, stride: int, *, causal: bool = True, combine: str = "union") -> Sets:
    """Child et al.'s strided pattern (``causal=False``: our symmetric extension, module doc)."""
    l, ls = _int("l", l), _int("stride", stride, 1)
    if causal:
        A1 = lambda i: set(range(max(0, i - ls), i + 1))  # noqa: E731
        A2 = lambda i: {j for j in range(0, i + 1) if (i - j) % ls == 0}  # noqa: E731
    else:
        A1 = lambda i: {j for j in range(l) if abs(i - j) <= ls}  # noqa: E731
        A2 = lambda i: {j for j in range(l) if (i - j) % ls == 0}  # noqa: E731
    return _combine(l, A1, A2, combine)


def fixed_sets(l: int, stride: int, *, summary: int = 1, causal: bool = True, combine: str = "union") -> Sets:
    """Child et al.'s fixed pattern: the own stride block, and the last ``summary`` positions of every block."""
    l, ls = _int("l", l), _int("stride", stride, 1)
    c = _int("summary", summary, 1)
    if c > ls:
        raise ValueError(f"summary: expected 1 <= summary <= stride = {ls}, got {c}")
    top = (lambda i: i + 1) if causal else (lambda i: l)  # noqa: E731
    A1 = lambda i: {j for j in range(top(i)) if j // ls == i // ls}  # noqa: E731
    A2 = lambda i: {j for j in range(top(i)) if j % ls in range(ls - c, ls)}  # noqa: E731
    return _combine(l, A1, A2, combine)


def _bigbird_args(l, block, window_blocks, global_blocks, random_blocks, seed, heads):
    l, B = _int("l", l), _int("block", block, 1)
    wb = _int("window_blocks", window_blocks, 1)
    if wb % 2 == 0:
        raise ValueError(f"window_blocks: expected an odd integer >= 1, got {wb}")
    gb, rb, hs = _int("global_blocks", global_blocks), _int("random_blocks", random_blocks), _int("heads", heads, 1)
    if seed is None:
        raise ValueError("seed: BigBird's random blocks need a seed (a non-negative int), got None")
    seed = _int("seed", seed)
    return l, B, wb, gb, rb, seed, hs


def bigbird_random_blocks(nb: int, *, window_blocks: int = 3, global_blocks: int = 1, random_blocks: int = 1,
                          seed, heads: int = 1) -> List[List[List[int]]]:
    """``rand[hh][u]``: the sorted random key blocks of query block ``u`` in head ``hh``.

    ``bits = PCG64(seed)``; for ``hh`` in order, for ``u`` in order: a global ``u`` draws nothing; ``cand`` = the
    sorted key blocks outside ``u``'s window and not global; ``r = min(random_blocks, len(cand))``; for ``t < r``:
    ``j = t + random_raw() % (len(cand) - t)``, swap ``cand[t], cand[j]``; the result is ``sorted(cand[:r])``.
    """
    nb = _int("nb", nb)
    _, _, wb, gb, rb, seed, hs = _bigbird_args(0, 1, window_blocks, global_blocks, random_blocks, seed, heads)
    bits = np.random.PCG64(seed)
    half = wb // 2
    out = []
    for _hh in range(hs):
        per = []
        for u in range(nb):
            if u < gb:
                per.append([])
                continue
            cand = [v for v in range(nb) if abs(v - u) > half and v >= gb]
            r = min(rb, len(cand))
            for t in range(r):
                j = t + int(bits.random_raw()) % (len(cand) - t)
                cand[t], cand[j] = cand[j], cand[t]
            per.append(sorted(cand[:r]))
        out.append(per)
    return out


def bigbird_block_sets(l: int, block: int, *, window_blocks: int = 3, global_blocks: int = 1,
                       random_blocks: int = 1, seed=None, heads: int = 1) -> List[List[Set[int]]]:
    """``blocks[hh][u]``: the key blocks query block ``u`` keeps (every block when ``u`` is global)."""
    l, B, wb, gb, rb, seed, hs = _bigbird_args(l, block, window_blocks, global_blocks, random_blocks, seed, heads)
    nb = -(-l // B)
    rand = bigbird_random_blocks(nb, window_blocks=wb, global_blocks=gb, random_blocks=rb, seed=seed, heads=hs)
    half = wb // 2
    out = []
    for hh in range(hs):
        per = []
        for u in range(nb):
            if u < gb:
                per.append(set(range(nb)))
                continue
            window = {v for v in range(u - half, u + half + 1) if 0 <= v < nb}
            per.append(window | set(range(min(gb, nb))) | set(rand[hh][u]))
        out.append(per)
    return out


def bigbird_sets(l: int, block: int, *, window_blocks: int = 3, global_blocks: int = 1, random_blocks: int = 1,
                 seed=None, heads: int = 1, causal: bool = False) -> Sets:
    """BigBird-ITC keys of every query: the key blocks of its query block (:func:`bigbird_block_sets`)."""
    if causal:
        raise ValueError("causal: BigBird is the encoder pattern here (no causal form), got causal=True")
    blocks = bigbird_block_sets(l, block, window_blocks=window_blocks, global_blocks=global_blocks,
                                random_blocks=random_blocks, seed=seed, heads=heads)
    B = int(block)
    out = []
    for per in blocks:
        head = []
        for i in range(int(l)):
            head.append({j for v in per[i // B] for j in range(v * B, min((v + 1) * B, int(l)))})
        out.append(head)
    return out


def pattern_sets(kind: str, l: int, **params) -> Sets:
    """The sets of ``kind`` (one of :data:`KINDS`) with the builder's parameters (``sliding_window``: window,
    dilation, causal; ``longformer``: + global_tokens; ``strided``: stride, causal, combine; ``fixed``: + summary;
    ``bigbird``: block, window_blocks, global_blocks, random_blocks, seed, heads)."""
    fns = {"sliding_window": sliding_window_sets, "longformer": longformer_sets, "strided": strided_sets,
           "fixed": fixed_sets, "bigbird": bigbird_sets}
    if kind not in fns:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if kind == "bigbird":
        params = dict(params)
        return bigbird_sets(l, params.pop("block"), **params)
    if kind in ("strided", "fixed"):
        params = dict(params)
        return fns[kind](l, params.pop("stride"), **params)
    params = dict(params)
    return fns[kind](l, params.pop("window"), **params)


def keep_from_sets(sets: Sets, l: int) -> np.ndarray:
    """The boolean keep mask ``(heads, l, l)`` of the sets: ``keep[hh, i, j] = j in sets[hh][i]``."""
    keep = np.zeros((len(sets), l, l), dtype=bool)
    for hh, head in enumerate(sets):
        for i, keys in enumerate(head):
            for j in keys:
                keep[hh, i, j] = True
    return keep


def default_scale(n: int, scale: Optional[float]) -> float:
    """``scale`` or, when None, ``n^{-1/2}`` (1 for n = 0)."""
    if scale is not None:
        return float(scale)
    return 1.0 / math.sqrt(n) if n > 0 else 1.0


def _heads_ok(sets: Sets, h: int) -> None:
    if len(sets) not in (1, h):
        raise ValueError(f"pattern: expected 1 or h = {h} pattern heads, got {len(sets)}")


def sparse_attention_mpmath(q, k, v, sets: Sets, scale: Optional[float] = None) -> np.ndarray:
    """``o (b l h p)``: softmax over each query's allowed keys of ``scale q.k``, times ``v``, in mpmath (50 digits).

    ``q, k (b l h n)``, ``v (b l h p)``; ``sets`` has 1 or ``h`` heads; empty rows -> 0."""
    q = np.asarray(q, dtype=np.float64)
    b, l, h, n = q.shape
    _heads_ok(sets, h)
    keep = keep_from_sets(sets, l)[None]
    return sdpa_mpmath(q, k, v, default_scale(n, scale), keep)


def sparse_attention_fsum(q, k, v, sets: Sets, scale: Optional[float] = None) -> np.ndarray:
    """Float64 oracle for larger cases, query by query over the sorted allowed keys with correctly rounded sums
    (module doc).  Shapes as :func:`sparse_attention_mpmath`."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, l, h, n = q.shape
    p = v.shape[3]
    _heads_ok(sets, h)
    sc = default_scale(n, scale)
    o = np.zeros((b, l, h, p))
    for bi in range(b):
        for hi in range(h):
            head = sets[hi if len(sets) == h else 0]
            for i in range(l):
                js = sorted(head[i])
                if not js:
                    continue
                qi = q[bi, i, hi]
                s_ij = [sc * math.fsum(qi * k[bi, j, hi]) for j in js]
                m_i = max(s_ij)
                w = [math.exp(s - m_i) for s in s_ij]
                Z = math.fsum(w)
                vs = v[bi, js, hi]  # (|js| p)
                for c in range(p):
                    o[bi, i, hi, c] = math.fsum(wj * vj for wj, vj in zip(w, vs[:, c])) / Z
    return o


def sparse_attention_bound(q, k, v, sets: Sets, scale: Optional[float] = None, dtype=np.float64, *,
                           oracle_dtype=None):
    """:func:`oracles.attention.softmax_attention_bound` on the keep mask of ``sets`` (``oracle_dtype``: None for
    the mpmath oracle, float64 for :func:`sparse_attention_fsum`)."""
    q = np.asarray(q, dtype=np.float64)
    b, l, h, n = q.shape
    _heads_ok(sets, h)
    keep = keep_from_sets(sets, l)[None]
    return softmax_attention_bound(q, k, v, default_scale(n, scale), keep, dtype, oracle_dtype=oracle_dtype)

