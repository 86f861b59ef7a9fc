r"""Sparse attention patterns (sliding window, Longformer, Sparse Transformer, BigBird) and their two NumPy views.

Literal NumPy reference, float64 unless every input is float32.

Shapes (sequence-first, self-attention: ``s = l``)
--------------------------------------------------
* ``q``: ``(b l h n)``, ``k``: ``(b l h n)``, ``v``: ``(b l h p)``; output ``o``: ``(b l h p)``.
* A pattern is a :class:`SparsePattern` of ``pattern.h`` heads (1: shared by every head, or ``h``) over
  positions ``0 .. l-1``; ``pattern.mask()`` is the keep mask ``M (h l l)``, ``M[hh, i, j]`` = query ``i`` of
  head ``hh`` may attend key ``j``.
* ``pattern.block_layout(B)`` is the same pattern cut into ``B x B`` tiles: for each head and query block the
  sorted key blocks holding at least one kept pair, and for each such tile ``None`` (every pair kept) or its
  boolean in-block mask ``(T, S)`` (``T``, ``S`` the tile's query and key counts; the last block may be short).

Conventions
-----------
* ``window = (left, right)``: inclusive counts of keys; query ``i`` keeps ``j = i + t dil`` for
  ``-left <= t <= right`` and ``0 <= j < l`` (FlashAttention's meaning, times a dilation ``dil``).  An int ``w`` is
  ``(w, w)``; ``causal=True`` forces ``right = 0``: an int ``w`` with ``causal=True`` is ``(w, 0)``, an explicit
  ``(left, right)`` with ``right > 0`` and ``causal=True`` is a ``ValueError``.
* ``dilation``: an int (every head) or a sequence with one entry per head (then ``h = len(dilation)``), each >= 1
  (Longformer, Beltagy et al. 2020, section 3.1: "different dilation configurations per head").
* Longformer (Beltagy et al. 2020, section 3.1): keep = dilated window OR ``i in G`` OR ``j in G``, global
  attention symmetric; with ``causal`` also ``j <= i`` everywhere.
* Sparse Transformer (Child et al. 2019, section 4.3, stride ``l_s``): strided ``A1(i) = {j : max(0, i - l_s) <=
  j <= i}``, ``A2(i) = {j : j <= i, (i - j) mod l_s = 0}``; fixed ``A1(i) = {j : floor(j / l_s) = floor(i / l_s)}``,
  ``A2(i) = {j : j mod l_s in {l_s - c, ..., l_s - 1}}`` (``c`` = ``summary``), causal: also ``j <= i``.
  ``combine="union"`` is the paper's merged head (every head keeps ``A1 | A2``, ``h = 1``), ``"heads"`` its
  multi-head option (head 0 keeps ``A1``, head 1 ``A2``, ``h = 2``).  ``causal=False`` is our symmetric extension
  (the paper's patterns are causal): strided ``A1(i) = {j : |i - j| <= l_s}``, ``A2(i) = {j : (i - j) mod l_s = 0}``;
  fixed drops ``j <= i``.
* BigBird (Zaheer et al. 2020, ITC: the global tokens are existing tokens, the first ``global_blocks`` blocks),
  block size ``B``, ``nb = ceil(l / B)`` blocks, block ``u`` = positions ``[u B, min((u + 1) B, l))``; query block
  ``u`` keeps key blocks: all (``u`` global); else its window ``u - window_blocks // 2 .. u + window_blocks // 2``
  (clipped to ``[0, nb)``, no wrap-around), the global blocks and ``random_blocks`` random blocks drawn by a partial
  Fisher-Yates shuffle from ``numpy.random.PCG64(seed).random_raw()`` (see :func:`bigbird_pattern`; the raw
  stream of a BitGenerator is the same on every platform and numpy version).  No causal BigBird (the encoder).
* A query row with no kept key gives an output row of zeros (as refimpl's softmax attention).
* ``scale`` multiplies ``q . k``; ``None`` means ``n^{-1/2}``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_choice, check_int, check_shape, check_window, result_dtype
from refimpl.attention.softmax.reference import attention_scale

# SparsePattern and BlockLayout (the records the builders return) are importable by name but not in __all__:
# they are built by the builders below, not called on user data.
__all__ = [
    "PATTERN_KINDS",
    "sliding_window_pattern",
    "longformer_pattern",
    "strided_pattern",
    "fixed_pattern",
    "bigbird_pattern",
    "materialized",
    "block_sparse",
    "DEFAULT_BLOCK",
]

PATTERN_KINDS = ("sliding_window", "longformer", "strided", "fixed", "bigbird")
COMBINES = ("union", "heads")
#: the tile size of the block-sparse views when none is given (BigBird: its own block size)
DEFAULT_BLOCK = 64


# ------------------------------------------------------------------ the pattern object

class Params(dict):
    """A pattern's parameters: a read-only dict (its values are ints, bools, strings and tuples of them)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("SparsePattern.params is read-only: build a new pattern with the builder instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return (Params, (dict(self),))

    def __deepcopy__(self, memo):
        return self  # immutable contents

    def __copy__(self):
        return self


@dataclass(frozen=True)
class BlockLayout:
    r"""A pattern cut into ``block x block`` tiles (the last block of each axis may be short).

    ``key_blocks[hh][u]``: the sorted key blocks ``v`` whose tile ``(u, v)`` holds at least one kept pair;
    ``tile_masks[hh][u][t]``: ``None`` when every pair of tile ``(u, key_blocks[hh][u][t])`` is kept, else its
    boolean keep mask ``(T, S)`` (rows: the tile's queries, columns: its keys).

    The flat (CSR) arrays the kernel consumes: tiles of ``(hh, u)`` are ``indptr[hh nb + u] : indptr[hh nb + u + 1]``
    of ``indices`` (key blocks) and ``mask_index`` (``-1``: full; else a row of ``masks (nm, block, block)``, the
    in-block masks padded with False to the full block size).
    """
    block: int
    l: int
    h: int
    n_blocks: int
    key_blocks: tuple
    tile_masks: tuple
    indptr: np.ndarray
    indices: np.ndarray
    mask_index: np.ndarray
    masks: np.ndarray
    #: the pattern this layout was cut from
    pattern: object = None

    @property
    def n_tiles(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True, eq=False)
class SparsePattern:
    r"""A fixed sparse attention pattern over positions ``0 .. l-1`` with ``h`` heads (build it with a builder).

    ``kind``: one of :data:`PATTERN_KINDS`; ``params``: its normalized parameters (read-only mapping);
    :meth:`mask` the dense keep mask ``(h l l)``; :meth:`block_layout` the tiles the block-sparse views walk.
    """
    kind: str
    l: int
    h: int
    params: Params

    def __eq__(self, other):
        if not isinstance(other, SparsePattern):
            return NotImplemented
        return (self.kind, self.l, self.h, dict(self.params)) == (other.kind, other.l, other.h, dict(other.params))

    def __repr__(self):
        shown = {k: v for k, v in self.params.items() if k not in ("key_blocks", "random_key_blocks")}
        return f"SparsePattern(kind={self.kind!r}, l={self.l}, h={self.h}, params={shown})"

    # -------------------------------------------------------------- the definition: keep(hh, i, j)

    def keep(self, hh: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        r"""``keep(i, j)`` of head ``hh`` for broadcastable integer arrays ``i`` (queries) and ``j`` (keys).

        The pattern's definition, written once; :meth:`mask` and :meth:`block_layout` both evaluate it."""
        P = self.params
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        if self.kind in ("sliding_window", "longformer"):
            left, right = P["window"]
            dil = P["dilation"][hh]
            d = j - i
            # j = i + t dil for an integer t with -left <= t <= right
            keep = (d % dil == 0) & (d >= -left * dil) & (d <= right * dil)
            if self.kind == "longformer":
                G = np.asarray(P["global_tokens"], dtype=np.int64)
                # keep = window  OR  i in G  OR  j in G   (symmetric global attention)
                keep = keep | np.isin(i, G) | np.isin(j, G)
            if P["causal"]:
                keep = keep & (j <= i)
            return keep
        if self.kind == "strided":
            ls = P["stride"]
            if P["causal"]:
                # A1(i) = {j : max(0, i - l_s) <= j <= i};  A2(i) = {j : j <= i, (i - j) mod l_s = 0}
                A1 = (j >= i - ls) & (j <= i)
                A2 = (j <= i) & ((i - j) % ls == 0)
            else:
                # symmetric extension: A1(i) = {j : |i - j| <= l_s};  A2(i) = {j : (i - j) mod l_s = 0}
                A1 = np.abs(i - j) <= ls
                A2 = (i - j) % ls == 0
            return self._combine(hh, A1, A2)
        if self.kind == "fixed":
            ls, c = P["stride"], P["summary"]
            # A1(i) = {j : floor(j / l_s) = floor(i / l_s)};  A2(i) = {j : j mod l_s >= l_s - c}
            A1 = (j // ls) == (i // ls)
            A2 = (j % ls) >= ls - c
            if P["causal"]:
                A1 = A1 & (j <= i)
                A2 = A2 & (j <= i)
            return self._combine(hh, A1, A2)
        if self.kind == "bigbird":
            B = P["block"]
            # keep(i, j) iff block(j) is one of the key blocks of (hh, block(i))
            return self._bigbird_block_keep()[hh][i // B, j // B]
        raise AssertionError(self.kind)

    def _combine(self, hh, A1, A2):
        if self.params["combine"] == "union":
            # the merged head: A1 | A2
            return A1 | A2
        # the multi-head option: head 0 keeps A1, head 1 keeps A2
        return np.broadcast_to(A1 if hh == 0 else A2, np.broadcast_shapes(A1.shape, A2.shape))

    def _bigbird_block_keep(self) -> np.ndarray:
        # (h, nb, nb) boolean: key block v kept by query block u of head hh
        cached = self.__dict__.get("_bb_keep")
        if cached is None:
            nb = self.params["n_blocks"]
            cached = np.zeros((self.h, nb, nb), dtype=bool)
            for hh, rows in enumerate(self.params["key_blocks"]):
                for u, blocks in enumerate(rows):
                    cached[hh, u, list(blocks)] = True
            object.__setattr__(self, "_bb_keep", cached)
        return cached

    # -------------------------------------------------------------- dense mask and block layout

    def mask(self) -> np.ndarray:
        r"""The keep mask ``M (h l l)``: ``M[hh, i, j] = keep_hh(i, j)``."""
        i = np.arange(self.l)[:, None]
        j = np.arange(self.l)[None, :]
        M = np.zeros((self.h, self.l, self.l), dtype=bool)
        for hh in range(self.h):
            M[hh] = self.keep(hh, i, j)
        return M

    def _candidate_keys(self, hh: int, q0: int, q1: int) -> np.ndarray:
        # a superset of the keys any query in [q0, q1) keeps (the whole row unless a window bounds it)
        P = self.params
        if self.kind in ("sliding_window", "longformer"):
            left, right = P["window"]
            dil = P["dilation"][hh]
            lo, hi = max(0, q0 - left * dil), min(self.l, q1 - 1 + right * dil + 1)
            cols = np.arange(lo, max(lo, hi))
            if self.kind == "longformer" and P["global_tokens"]:
                G = np.asarray(P["global_tokens"], dtype=np.int64)
                if np.any((G >= q0) & (G < q1)):  # a global query keeps every key
                    return np.arange(self.l)
                cols = np.union1d(cols, G)
            return cols
        if self.kind == "strided" and P["causal"] is True:
            return np.arange(0, q1)
        return np.arange(self.l)

    def block_layout(self, block: int) -> BlockLayout:
        r"""The tiles of the pattern for ``block x block`` tiles (see :class:`BlockLayout`).

        For head ``hh`` and query block ``u`` (queries ``[u B, min((u+1) B, l))``): the key blocks ``v`` whose tile
        holds a kept pair, in increasing order, each with ``None`` (all kept) or its in-block mask."""
        B = check_int(block, "block", minimum=1)
        l = self.l
        nb = -(-l // B)
        key_blocks, tile_masks = [], []
        indptr, indices, mask_index, masks, seen = [0], [], [], [], {}
        for hh in range(self.h):
            kb_h, tm_h = [], []
            for u in range(nb):
                q0, q1 = u * B, min((u + 1) * B, l)
                cols = self._candidate_keys(hh, q0, q1)
                kb_u, tm_u = [], []
                for v in np.unique(cols // B):
                    k0, k1 = int(v) * B, min((int(v) + 1) * B, l)
                    tile = self.keep(hh, np.arange(q0, q1)[:, None], np.arange(k0, k1)[None, :])
                    if not tile.any():
                        continue
                    kb_u.append(int(v))
                    indices.append(int(v))
                    if tile.all():
                        tm_u.append(None)
                        mask_index.append(-1)
                    else:
                        tile = np.array(tile, dtype=bool)
                        tm_u.append(tile)
                        padded = np.zeros((B, B), dtype=bool)
                        padded[:q1 - q0, :k1 - k0] = tile
                        key = padded.tobytes()
                        if key not in seen:
                            seen[key] = len(masks)
                            masks.append(padded)
                        mask_index.append(seen[key])
                kb_h.append(tuple(kb_u))
                tm_h.append(tuple(tm_u))
                indptr.append(len(indices))
            key_blocks.append(tuple(kb_h))
            tile_masks.append(tuple(tm_h))
        return BlockLayout(block=B, l=l, h=self.h, n_blocks=nb, key_blocks=tuple(key_blocks),
                           tile_masks=tuple(tile_masks), indptr=np.asarray(indptr, dtype=np.int64),
                           indices=np.asarray(indices, dtype=np.int64), mask_index=np.asarray(mask_index, dtype=np.int64),
                           masks=np.asarray(masks, dtype=bool).reshape(len(masks), B, B), pattern=self)

    @property
    def default_block(self) -> int:
        """The block-sparse views' tile size when none is given: BigBird's block, else :data:`DEFAULT_BLOCK`."""
        return self.params["block"] if self.kind == "bigbird" else DEFAULT_BLOCK


def _pattern(kind, l, h, **params) -> SparsePattern:
    return SparsePattern(kind=kind, l=l, h=h, params=Params(params))




# ------------------------------------------------------------------ argument checks

def _dilation(dilation) -> Tuple[int, ...]:
    """``dilation`` as one int >= 1 per head (an int: one head)."""
    if isinstance(dilation, (tuple, list, np.ndarray)):
        if len(dilation) == 0:
            raise ValueError("dilation: expected an int >= 1 or a non-empty sequence of them (one per head), got an "
                             "empty sequence")
        return tuple(check_int(d, f"dilation[{t}]", minimum=1) for t, d in enumerate(dilation))
    if isinstance(dilation, (bool, np.bool_)) or not isinstance(dilation, numbers.Integral):
        raise TypeError(f"dilation: expected an int >= 1 or a sequence of them (one per head), got "
                        f"{type(dilation).__name__} {dilation!r}")
    return (check_int(dilation, "dilation", minimum=1),)


def _global_tokens(global_tokens, l: int) -> Tuple[int, ...]:
    if isinstance(global_tokens, (str, bytes)) or not isinstance(global_tokens, (tuple, list, np.ndarray, range)):
        raise TypeError(f"global_tokens: expected a sequence of positions (ints in [0, {l})), got "
                        f"{type(global_tokens).__name__} {global_tokens!r}")
    out = set()
    for t, g in enumerate(global_tokens):
        g = check_int(g, f"global_tokens[{t}]", minimum=0)
        if g >= l:
            raise ValueError(f"global_tokens[{t}]: expected a position in [0, {l}) (l = {l}), got {g}")
        out.add(g)
    return tuple(sorted(out))


# ------------------------------------------------------------------ builders

def sliding_window_pattern(l: int, window, *, dilation=1, causal: bool = False) -> SparsePattern:
    r"""Sliding-window attention: query ``i`` keeps ``j = i + t dil``, ``-left <= t <= right``, ``0 <= j < l``.

    ``window``: ``(left, right)`` or an int ``w`` (``(w, w)``; ``(w, 0)`` when causal); ``dilation``: an int, or one
    per head (``h = len(dilation)``); ``causal``: forces ``right = 0``."""
    l = check_int(l, "l", minimum=0)
    causal = check_bool(causal, "causal")
    window = check_window(window, causal)
    dil = _dilation(dilation)
    return _pattern("sliding_window", l, len(dil), window=window, dilation=dil, causal=causal)


def longformer_pattern(l: int, window, *, dilation=1, global_tokens=(), causal: bool = False) -> SparsePattern:
    r"""Longformer (Beltagy et al. 2020): keep = dilated window OR ``i in G`` OR ``j in G`` (``G = global_tokens``,
    symmetric); with ``causal`` also ``j <= i`` everywhere.  ``window`` and ``dilation`` as
    :func:`sliding_window_pattern`."""
    l = check_int(l, "l", minimum=0)
    causal = check_bool(causal, "causal")
    window = check_window(window, causal)
    dil = _dilation(dilation)
    G = _global_tokens(global_tokens, l)
    return _pattern("longformer", l, len(dil), window=window, dilation=dil, global_tokens=G, causal=causal)


def strided_pattern(l: int, stride: int, *, causal: bool = True, combine: str = "union") -> SparsePattern:
    r"""Sparse Transformer strided pattern (Child et al. 2019), stride ``l_s``:
    ``A1(i) = {j : max(0, i - l_s) <= j <= i}``, ``A2(i) = {j : j <= i, (i - j) mod l_s = 0}``
    (``causal=False``: the symmetric extension ``|i - j| <= l_s``, ``(i - j) mod l_s = 0``).
    ``combine="union"``: one head keeps ``A1 | A2``; ``"heads"``: head 0 ``A1``, head 1 ``A2``."""
    l = check_int(l, "l", minimum=0)
    stride = check_int(stride, "stride", minimum=1)
    causal = check_bool(causal, "causal")
    if not isinstance(combine, str):
        raise TypeError(f"combine: expected 'union' or 'heads', got {type(combine).__name__} {combine!r}")
    check_choice(combine, "combine", COMBINES)
    return _pattern("strided", l, 1 if combine == "union" else 2, stride=stride, causal=causal, combine=combine)


def fixed_pattern(l: int, stride: int, *, summary: int = 1, causal: bool = True, combine: str = "union") -> SparsePattern:
    r"""Sparse Transformer fixed pattern (Child et al. 2019), stride ``l_s``, ``c = summary`` (``1 <= c <= l_s``):
    ``A1(i) = {j : floor(j / l_s) = floor(i / l_s)}``, ``A2(i) = {j : j mod l_s in {l_s - c, ..., l_s - 1}}``;
    causal: also ``j <= i`` in both.  ``combine`` as :func:`strided_pattern`."""
    l = check_int(l, "l", minimum=0)
    stride = check_int(stride, "stride", minimum=1)
    summary = check_int(summary, "summary", minimum=1)
    if summary > stride:
        raise ValueError(f"summary: expected 1 <= summary <= stride = {stride}, got {summary}")
    causal = check_bool(causal, "causal")
    if not isinstance(combine, str):
        raise TypeError(f"combine: expected 'union' or 'heads', got {type(combine).__name__} {combine!r}")
    check_choice(combine, "combine", COMBINES)
    return _pattern("fixed", l, 1 if combine == "union" else 2, stride=stride, summary=summary, causal=causal,
                    combine=combine)


def bigbird_pattern(l: int, block: int, *, window_blocks: int = 3, global_blocks: int = 1, random_blocks: int = 1,
                    seed: int, heads: int = 1, causal: bool = False) -> SparsePattern:
    r"""BigBird-ITC (Zaheer et al. 2020): window + global + random key blocks, block size ``block``.

    ``nb = ceil(l / block)``; global blocks: the first ``global_blocks`` (their queries keep every key, every query
    keeps their keys); window: query block ``u`` keeps ``u - window_blocks // 2 .. u + window_blocks // 2`` (clipped,
    no wrap-around; ``window_blocks`` odd); random: ``bits = numpy.random.PCG64(seed)``; for each head ``hh`` and
    non-global query block ``u`` in order, ``cand`` = the sorted key blocks neither in ``u``'s window nor global,
    ``r' = min(random_blocks, len(cand))``, a partial Fisher-Yates shuffle ``for t < r': j = t + random_raw() mod
    (len(cand) - t); swap cand[t], cand[j]``; the random blocks are ``sorted(cand[:r'])``.  ``seed``: an int >= 0,
    required.  ``causal=True`` is refused (BigBird's pattern is the encoder's)."""
    l = check_int(l, "l", minimum=0)
    B = check_int(block, "block", minimum=1)
    wb = check_int(window_blocks, "window_blocks", minimum=1)
    if wb % 2 == 0:
        raise ValueError(f"window_blocks: expected an odd int >= 1 (the block itself and as many on each side), got {wb}")
    gb = check_int(global_blocks, "global_blocks", minimum=0)
    rb = check_int(random_blocks, "random_blocks", minimum=0)
    if seed is None:
        raise TypeError("seed: expected a non-negative int (BigBird's random blocks are seeded; no default), got None")
    seed = check_int(seed, "seed", minimum=0)
    heads = check_int(heads, "heads", minimum=1)
    if check_bool(causal, "causal"):
        raise ValueError("causal: BigBird's pattern is the (bidirectional) encoder's; causal=True is not supported, "
                         "got causal=True")
    nb = -(-l // B)
    glob = list(range(min(gb, nb)))
    bits = np.random.PCG64(seed)
    key_blocks, random_key_blocks = [], []
    for hh in range(heads):
        rows, rand_rows = [], []
        for u in range(nb):
            if u in glob:
                # a global query block keeps every key block (draws nothing)
                rows.append(tuple(range(nb)))
                rand_rows.append(())
                continue
            window = set(range(max(0, u - wb // 2), min(nb, u + wb // 2 + 1)))
            cand = [v for v in range(nb) if v not in window and v not in glob]
            r = min(rb, len(cand))
            # partial Fisher-Yates: for t < r', j = t + raw mod (len(cand) - t); swap cand[t], cand[j]
            for t in range(r):
                jj = t + int(bits.random_raw()) % (len(cand) - t)
                cand[t], cand[jj] = cand[jj], cand[t]
            rand = tuple(sorted(cand[:r]))
            rows.append(tuple(sorted(window | set(glob) | set(rand))))
            rand_rows.append(rand)
        key_blocks.append(tuple(rows))
        random_key_blocks.append(tuple(rand_rows))
    return _pattern("bigbird", l, heads, block=B, window_blocks=wb, global_blocks=gb, random_blocks=rb, seed=seed,
                    n_blocks=nb, key_blocks=tuple(key_blocks), random_key_blocks=tuple(random_key_blocks))


# ------------------------------------------------------------------ validation of the attention inputs

def validate(q, k, v, pattern, scale):
    """Validated ``(q, k, v, scale, dtype)`` and ``(b, l, h, n, p)`` for self-attention under ``pattern``."""
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    b, l, h, n = q.shape
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    check_shape(k, "k", (b, l, h, n), "(b, l, h, n) like q (sparse attention is self-attention: s = l)")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, l, h, None), "(b, l, h, p) with b, l, h from q")
    if not isinstance(pattern, SparsePattern):
        raise TypeError(f"pattern: expected a SparsePattern (from sliding_window_pattern, longformer_pattern, "
                        f"strided_pattern, fixed_pattern or bigbird_pattern), got {type(pattern).__name__}")
    if pattern.l != l:
        raise ValueError(f"pattern: expected a pattern over l = {l} positions (l from q), got pattern.l = {pattern.l}")
    if pattern.h not in (1, h):
        raise ValueError(f"pattern: expected pattern.h = 1 (shared by every head) or h = {h} (h from q), "
                         f"got pattern.h = {pattern.h}")
    scale = attention_scale(scale, n)
    dtype = result_dtype(q, k, v)
    return (q.astype(dtype, copy=False), k.astype(dtype, copy=False), v.astype(dtype, copy=False), scale, dtype,
            (b, l, h, n, v.shape[3]))


def _block(block, pattern: SparsePattern) -> int:
    if block is None:
        return pattern.default_block
    return check_int(block, "block", minimum=1)


# ------------------------------------------------------------------ the materialized view

def materialized(q, k, v, pattern: SparsePattern, *, scale: Optional[float] = None) -> np.ndarray:
    r"""``o = softmax(scale Q K^T, masked by M) V`` per batch and head, with the ``(l l)`` scores and ``M`` formed.

    ``q, k (b l h n)``, ``v (b l h p)``, ``pattern`` with ``pattern.l = l``, ``pattern.h`` 1 or ``h``;
    returns ``o (b l h p)``; a query row with no kept key is zero."""
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    # M (h|1, l, l): keep_hh(i, j)
    M = pattern.mask()
    # S_ij = scale q_i . k_j
    S = dtype.type(scale) * np.einsum("bihn,bjhn->bhij", q, k)
    # masked entries -inf
    S = np.where(M[None], S, dtype.type(-np.inf))
    # m_i = max_j S_ij  (a row with no kept key: shift by 0, its exponentials are 0)
    m_i = np.max(S, axis=-1, keepdims=True) if l else np.zeros(S.shape[:-1] + (1,), dtype=dtype)
    m_i = np.where(np.isneginf(m_i), dtype.type(0), m_i)
    # P_ij = exp(S_ij - m_i) / sum_j exp(S_ij - m_i)   (an empty row: 0 / 1)
    E = np.exp(S - m_i)
    Z = np.sum(E, axis=-1, keepdims=True)
    P = E / np.where(Z > 0, Z, dtype.type(1))
    # o_i = sum_j P_ij v_j
    return np.einsum("bhij,bjhp->bihp", P, v).astype(dtype, copy=False)


# ------------------------------------------------------------------ the block-sparse view (literal loop)

def block_sparse(q, k, v, pattern: SparsePattern, *, scale: Optional[float] = None, block: Optional[int] = None
                 ) -> np.ndarray:
    r"""The block-sparse view: FlashAttention's online softmax over the tiles of ``pattern.block_layout(block)``.

    For each batch, head and query block ``Q_u`` (``T`` rows), over its key blocks ``v`` in increasing order
    (``S`` keys each), with running max ``m``, sum ``l`` and unnormalized output ``O`` (FlashAttention, Dao et al.
    2022, algorithm 1):

    * ``S = scale Q_u K_v^T``, entries outside the tile's in-block mask ``-inf``
    * ``m' = max(m, rowmax S)``, ``P = exp(S - m')``, ``c = exp(m - m')``
    * ``l' = c l + rowsum P``, ``O' = c O + P V_v``;  at the end ``o = O / l`` (``l = 0``: no kept key, ``o = 0``).

    Never forms an ``(l l)`` array.  ``block``: the tile size (default :attr:`SparsePattern.default_block`).
    Shapes: ``q, k (b l h n)``, ``v (b l h p)`` -> ``o (b l h p)``."""
    q, k, v, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
    B = _block(block, pattern)
    layout = pattern.block_layout(B)
    o = np.zeros((b, l, h, p), dtype=dtype)
    sc = dtype.type(scale)
    for bi in range(b):
        for hi in range(h):
            hh = hi if pattern.h == h else 0
            for u in range(layout.n_blocks):
                q0, q1 = u * B, min((u + 1) * B, l)
                Q_u = q[bi, q0:q1, hi, :]
                m = np.full(q1 - q0, -np.inf, dtype=dtype)
                l_sum = np.zeros(q1 - q0, dtype=dtype)
                O = np.zeros((q1 - q0, p), dtype=dtype)
                for vb, tile_mask in zip(layout.key_blocks[hh][u], layout.tile_masks[hh][u]):
                    k0, k1 = vb * B, min((vb + 1) * B, l)
                    # S = scale Q_u K_v^T, masked entries -inf
                    S = sc * (Q_u @ k[bi, k0:k1, hi, :].T)
                    if tile_mask is not None:
                        S = np.where(tile_mask, S, dtype.type(-np.inf))
                    # m' = max(m, rowmax S)   (still -inf: nothing kept yet, shift by 0)
                    m_new = np.maximum(m, np.max(S, axis=1))
                    shift = np.where(np.isneginf(m_new), dtype.type(0), m_new)
                    # P = exp(S - m');  c = exp(m - m')  (0 while nothing was kept)
                    P = np.exp(S - shift[:, None])
                    c = np.exp(m - shift)
                    # l' = c l + rowsum P;  O' = c O + P V_v
                    l_sum = c * l_sum + np.sum(P, axis=1)
                    O = c[:, None] * O + P @ v[bi, k0:k1, hi, :]
                    m = m_new
                # o = O / l   (l = 0: no kept key, o = 0)
                o[bi, q0:q1, hi, :] = O / np.where(l_sum > 0, l_sum, dtype.type(1))[:, None]
    return o
