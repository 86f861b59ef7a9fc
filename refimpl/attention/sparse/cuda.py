r"""numba.cuda block-sparse attention: the ``cuda`` backend of :func:`refimpl.attention.sparse.sparse_attention`
(view ``block_sparse``), one kernel for every pattern.

:func:`block_sparse_attention` is the GPU twin of :func:`refimpl.attention.sparse.numba.block_sparse_attention`
(and so of :func:`refimpl.attention.sparse.reference.block_sparse` and the materialized view).  Like the Numba
kernel it reads only the pattern's block layout (:class:`refimpl.attention.sparse.reference.BlockLayout`: the CSR
arrays ``indptr, indices, mask_index, masks``): for each head and query block the sorted list of its kept key
blocks, each tile full (``mask_index = -1``) or carrying its boolean in-block mask.  For a query block ``Q_u`` and
each of its kept key blocks ``K_v`` (FlashAttention's online softmax over the kept tiles only):

* ``S = scale Q_u K_v^T``, entries outside the in-block mask ``-inf``
* ``m' = max(m, rowmax S)``,  ``P = exp(S - m')``,  ``c = exp(m - m')`` (0 while nothing was kept)
* ``l' = c l + rowsum P``,  ``O' = c O + P V_v``;  at the end ``o = O / l`` (``l = 0``: no kept key, ``o = 0``).

Thread mapping: **one block per (batch i, head h, query sub-tile)**: the layout's query block ``u`` (``B`` rows)
is cut into sub-tiles of ``T_q = tile_q`` rows, and each kept key block ``v`` is streamed through shared memory in
sub-tiles of ``T_k = tile_k`` keys (the in-block mask read at the sub-tile's offsets), so the shared footprint
depends on the sub-tiles, not on ``B``.  ``T = threads_per_block`` threads; the pattern head is ``h`` (or 0 for a
pattern shared by every head).  Shared memory: the query sub-tile ``(T_q n)`` (loaded once), the streamed ``K``
``(T_k n)`` and ``V`` ``(T_k p)``, the score/probability tile ``(T_q T_k)`` and per row ``m``, ``l``, ``c``;
compiled per ``(T, T_q, T_k, n, p, dtype)``, at most 48 KiB (else a ``ValueError`` naming ``tile_k``).  The
accumulator ``O (T_q p)`` is in registers: thread ``r`` owns the entries ``e = r + T w`` (``x = e // p``,
``pp = e % p``).  Score entries strided over the threads; row statistics one row per thread; ``syncthreads``
between the phases.  A sub-tile past the end of a short last layout block returns at once (the whole block,
before any barrier).

Rounding: the same as the Numba kernel (the online softmax over the kept tiles); the tests and report rows use the
materialized view's bound plus the online-softmax rescaling term over the tiles of a row
(``oracles.linformer.online_softmax_term``).  Under the CUDA simulator (CI) every thread is a Python thread.
"""
from __future__ import annotations

import math
from typing import Optional

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_int
from refimpl.attention.softmax.reference import attention_scale
from refimpl.attention.sparse.reference import BlockLayout, SparsePattern, _block, validate

__all__ = ["block_sparse_attention", "DEFAULT_THREADS", "DEFAULT_TILE_Q", "DEFAULT_TILE_K", "SHARED_BYTES"]

DEFAULT_THREADS = 128
DEFAULT_TILE_Q = 16
DEFAULT_TILE_K = 32
#: the static shared-memory budget of one block
SHARED_BYTES = 48 * 1024


def _shared_bytes(TQ: int, TK: int, n: int, p: int, itemsize: int) -> int:
    return (TQ * n + TK * n + TK * p + TQ * TK + 3 * TQ) * itemsize


def _make_sparse(tpb: int, TQ: int, TK: int, NS: int, PS: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))
    npt = -(-(TQ * PS) // tpb)  # accumulator entries per thread

    @cuda.jit
    def _sparse(q, k, v, tau, hp, BS, indptr, indices, mask_index, masks, o):
        # q, k (Bt L H n); v (Bt L H p); o (Bt L H p); the layout of block BS: indptr (hp nqb + 1), indices,
        # mask_index (tiles), masks (nm BS BS) uint8 (1 = kept).  This block: TQ query rows of one layout block.
        Bt, L, H, n = q.shape  # n <= NS, p <= PS: the compiled tile widths
        p = v.shape[3]
        nqb = (L + BS - 1) // BS
        nsq = (BS + TQ - 1) // TQ  # query sub-tiles per layout block
        blk = cuda.blockIdx.x  # this block's (batch bi, head hi, layout query block u, sub-tile sq)
        sq_ = blk % nsq
        u = (blk // nsq) % nqb
        hi = (blk // (nsq * nqb)) % H
        bi = blk // (nsq * nqb * H)
        hh = hi if hp == H else 0  # the pattern's head
        xb = sq_ * TQ  # first row of the sub-tile inside the layout block
        x0 = u * BS + xb
        cq = min(TQ, min(BS, L - u * BS) - xb)
        if cq <= 0:
            return  # past the end of a short last layout block: the whole block returns (no barrier reached)
        r = cuda.threadIdx.x
        sq = cuda.shared.array((TQ, NS), nbt)
        sk = cuda.shared.array((TK, NS), nbt)
        sv = cuda.shared.array((TK, PS), nbt)
        sp = cuda.shared.array((TQ, TK), nbt)  # S, then P
        sm = cuda.shared.array(TQ, nbt)  # running max m
        sl = cuda.shared.array(TQ, nbt)  # running sum l
        sc = cuda.shared.array(TQ, nbt)  # c = exp(m - m') of the current tile
        acc = cuda.local.array(npt, nbt)  # this thread's entries of O (TQ p)
        neg_inf = nbt(-math.inf)  # in the working dtype (no float64 promotion on the device)
        for w in range(npt):
            acc[w] = nbt(0)
        # load the query sub-tile (once); m = -inf, l = 0
        for e in range(r, cq * n, tpb):
            sq[e // n, e % n] = q[bi, x0 + e // n, hi, e % n]
        for x in range(r, TQ, tpb):
            sm[x] = neg_inf
            sl[x] = nbt(0)
        # Q, m, l visible before the first tile
        cuda.syncthreads()
        row = hh * nqb + u
        for t in range(indptr[row], indptr[row + 1]):
            kb0 = indices[t] * BS  # the kept key block's first key
            kbl = min(BS, L - kb0)
            mi = mask_index[t]
            for yb in range(0, kbl, TK):  # the key block streamed in sub-tiles of TK keys
                y0 = kb0 + yb
                ck = min(TK, kbl - yb)
                # load K, V sub-tiles: entries strided over the threads
                for e in range(r, ck * n, tpb):
                    sk[e // n, e % n] = k[bi, y0 + e // n, hi, e % n]
                for e in range(r, ck * p, tpb):
                    sv[e // p, e % p] = v[bi, y0 + e // p, hi, e % p]
                # K, V complete before the scores read them
                cuda.syncthreads()
                # S_xy = tau q_x . k_y; -inf outside the in-block mask (or past the sub-tile): one (x, y) per thread
                for e in range(r, cq * TK, tpb):
                    x = e // TK
                    y = e % TK
                    s_ = neg_inf
                    if y < ck and (mi < 0 or masks[mi, xb + x, yb + y] != 0):
                        a = nbt(0)
                        for m in range(n):
                            a += sq[x, m] * sk[y, m]
                        s_ = tau * a
                    sp[x, y] = s_
                # the score tile complete before the row statistics
                cuda.syncthreads()
                # row x (one per thread): m' = max(m, rowmax S), P = exp(S - m'), c = exp(m - m'), l' = c l + sum P
                for x in range(r, cq, tpb):
                    mt = neg_inf
                    for y in range(ck):
                        mt = max(mt, sp[x, y])
                    m_old = sm[x]
                    m_new = max(m_old, mt)
                    rs = nbt(0)
                    if m_new == neg_inf:
                        cc = nbt(0)
                        for y in range(ck):
                            sp[x, y] = nbt(0)
                    else:
                        cc = nbt(0) if m_old == neg_inf else math.exp(m_old - m_new)
                        for y in range(ck):
                            pv = sp[x, y]
                            pv = nbt(0) if pv == neg_inf else math.exp(pv - m_new)
                            sp[x, y] = pv
                            rs += pv
                    sc[x] = cc
                    sm[x] = m_new
                    sl[x] = cc * sl[x] + rs
                # P and c complete before the accumulator
                cuda.syncthreads()
                # O_x[pp] <- c_x O_x[pp] + sum_y P_xy v_y[pp]: this thread's registers
                for w in range(npt):
                    e = r + tpb * w
                    if e < cq * p:
                        x = e // p
                        pp = e % p
                        a = nbt(0)
                        for y in range(ck):
                            a += sp[x, y] * sv[y, pp]
                        acc[w] = sc[x] * acc[w] + a
                # every read of K, V, P done before the next sub-tile overwrites them
                cuda.syncthreads()
        # o = O / l (l = 0: no kept key, o = 0)
        for w in range(npt):
            e = r + tpb * w
            if e < cq * p:
                x = e // p
                pp = e % p
                lx = sl[x]
                o[bi, x0 + x, hi, pp] = acc[w] / lx if lx > 0 else nbt(0)

    return _sparse


_SPARSE = _cuda.lazy_kernel(_make_sparse)


def _layout(pattern, B, block_layout):
    if block_layout is None:
        return pattern.block_layout(B)
    if not isinstance(block_layout, BlockLayout) or block_layout.block != B or not (
            block_layout.pattern is pattern or block_layout.pattern == pattern):
        raise ValueError(f"block_layout: expected pattern.block_layout({B}) (this pattern's, block {B}), got "
                         f"{type(block_layout).__name__} with block {getattr(block_layout, 'block', None)} of "
                         f"{getattr(block_layout, 'pattern', None)!r}")
    return block_layout


def block_sparse_attention(q, k, v, pattern, *, scale: Optional[float] = None, block: Optional[int] = None,
                           block_layout=None, tile_q: Optional[int] = None, tile_k: Optional[int] = None,
                           threads_per_block: int = DEFAULT_THREADS):
    r"""Block-sparse online-softmax attention under ``pattern`` on the GPU (the ``("block_sparse", "cuda")`` pair).

    The Numba kernel's arguments (``block``: the tile size, default BigBird's block, else 64; ``block_layout``:
    ``pattern.block_layout(block)`` computed once by the caller), plus the kernel's sub-tiles ``tile_q`` query
    rows by ``tile_k`` keys (default ``min(block, 16)`` and ``min(block, 32)``; at most ``block``: a layout tile is
    processed in sub-tiles, so a large ``block`` fits in shared memory) and ``threads_per_block``.  NumPy in: the
    reference's validation, NumPy out; CuPy in: checked on the device, CuPy out.
    """
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(q=q, k=k, v=v)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(q, "q", (None, None, None, None), allow_complex=False)
        b, l, h, n = q.shape
        _cuda.check_device_array(k, "k", (b, l, h, n), allow_complex=False)
        _cuda.check_device_array(v, "v", (b, l, h, None), allow_complex=False)
        p = v.shape[3]
        if not isinstance(pattern, SparsePattern):
            raise TypeError(f"pattern: expected a SparsePattern (from sliding_window_pattern, longformer_pattern, "
                            f"strided_pattern, fixed_pattern or bigbird_pattern), got {type(pattern).__name__}")
        if pattern.l != l:
            raise ValueError(f"pattern: expected a pattern over l = {l} positions (l from q), got pattern.l = "
                             f"{pattern.l}")
        if pattern.h not in (1, h):
            raise ValueError(f"pattern: expected pattern.h = 1 (shared by every head) or h = {h} (h from q), "
                             f"got pattern.h = {pattern.h}")
        dtype = _cuda.working_dtype(q, k, v, allow_complex=False)
        for name, a in (("q", q), ("k", k), ("v", v)):
            _cuda.check_device_finite(a, name)
        scale = attention_scale(scale, n)
        q_, k_, v_ = (_cuda.prepare(xp, a, dtype) for a in (q, k, v))
    else:
        q_, k_, v_, scale, dtype, (b, l, h, n, p) = validate(q, k, v, pattern, scale)
        q_, k_, v_ = (np.ascontiguousarray(a, dtype=dtype) for a in (q_, k_, v_))
    B = _block(block, pattern)
    layout = _layout(pattern, B, block_layout)
    BS = max(1, min(B, l))  # a block longer than the sequence: the sequence's one block (same tiles)
    TQ = min(BS, DEFAULT_TILE_Q if tile_q is None else check_int(tile_q, "tile_q", minimum=1))
    TK = min(BS, DEFAULT_TILE_K if tile_k is None else check_int(tile_k, "tile_k", minimum=1))
    need = _shared_bytes(TQ, TK, max(n, 1), max(p, 1), np.dtype(dtype).itemsize)
    if need > SHARED_BYTES:
        raise ValueError(f"tile_k: the cuda kernel keeps the Q (tile_q n), K (tile_k n), V (tile_k p) and score "
                         f"(tile_q tile_k) sub-tiles in shared memory, expected at most {SHARED_BYTES} bytes, got "
                         f"{need} for tile_q={TQ}, tile_k={TK}, n={n}, p={p}, {np.dtype(dtype)}; use smaller tiles")
    o = _cuda.zeros((b, l, h, p), dtype, device)
    if b * l * h * p == 0 or layout.indices.shape[0] == 0:  # nothing to compute, or no kept tile at all: o = 0
        return _cuda.from_device(o, device)
    masks = layout.masks if layout.masks.shape[0] else np.zeros((1, B, B), dtype=bool)
    masks = np.ascontiguousarray(masks[:, :BS, :BS], dtype=np.uint8)  # padded to B; rows/cols past l never read
    lay = [np.ascontiguousarray(a, dtype=np.int64) for a in (layout.indptr, layout.indices, layout.mask_index)]
    if device:
        lay = [xp.asarray(a) for a in lay]
        masks = xp.asarray(masks)
    else:
        lay = [_cuda.to_device(a) for a in lay]
        masks = _cuda.to_device(masks)
    nqb = -(-l // BS)
    nsq = -(-BS // TQ)
    kern = _SPARSE(tpb, TQ, TK, max(n, 1), max(p, 1), np.dtype(dtype).name)
    kern[b * h * nqb * nsq, tpb](_cuda.to_device(q_), _cuda.to_device(k_), _cuda.to_device(v_),
                                 np.dtype(dtype).type(scale), pattern.h, BS, *lay, masks, o)
    return _cuda.from_device(o, device)
