r"""numba.cuda FlashAttention-style tiled softmax attention: the ``cuda`` backend of
:func:`refimpl.attention.softmax.scaled_dot_product_attention` (view ``tiled``).

:func:`flash_attention` is the GPU twin of :func:`refimpl.attention.softmax.reference.tiled` (the same arguments:
``q, k, v``, ``scale``, ``causal`` with ``alignment`` ``top_left``/``bottom_right``, ``block_q``, ``block_k``; like the
NumPy tiled view it takes no mask or bias), plus ``return_lse`` (the log-sum-exp ``(b h l)`` of the kept scaled
scores, ``-inf`` on fully masked rows, as the materialized view returns it).  Per query row ``x`` and key tile ``j``
(the online softmax, FlashAttention-2's form with the normalization at the end):

* ``S_xy = scale q_x . k_y`` for the tile's keys ``y``, ``-inf`` where the causal diagonal drops ``y``
  (keep ``y <= x + offset``, ``offset = 0`` top_left, ``s - l`` bottom_right)
* ``m_new = max(m_x, max_y S_xy)``;  ``alpha_x = exp(m_x - m_new)`` (0 while ``m_x = -inf``);
  ``P_xy = exp(S_xy - m_new)`` (0 for a dropped key)
* ``l_x <- alpha_x l_x + sum_y P_xy``;  ``acc_x <- alpha_x acc_x + sum_y P_xy v_y``
* at the end ``o_x = acc_x / l_x`` (0 for a fully masked row, ``l_x = 0``), ``lse_x = m_x + log l_x``.

Thread mapping: **one block per (batch i, head h, query tile of ``B_r = block_q`` rows)**, ``T =
threads_per_block`` threads.  Shared memory: the block's ``Q`` tile ``(B_r n)`` (loaded once), the streamed ``K_j``
``(B_c n)`` and ``V_j`` ``(B_c p)`` tiles, the score/probability tile ``(B_r B_c)``, and per row ``m``, ``l``,
``alpha``; compiled per ``(T, B_r, B_c, n, p, dtype)``, at most 48 KiB (else a ``ValueError`` naming
``block_k``).  The accumulator ``acc (B_r p)`` is in registers: thread ``r`` owns the entries ``e = r + T u``
(``x = e // p``, ``pp = e % p``) in a local array.  Score entries are strided over the threads; the row
statistics are one row per thread.  Key tiles that lie entirely above the causal diagonal of the block's rows
are skipped (the condition is uniform over the block, so every thread skips the same barriers).

Rounding: the materialized view's bound plus the online-softmax rescaling over the key tiles
(``oracles.attention.softmax_attention_bound`` + ``oracles.linformer.online_softmax_term``, as the ``tiled`` rows
of the report use).  Under the CUDA simulator (CI) every thread is a Python thread: small shapes only.
"""
from __future__ import annotations

import math
from typing import Optional

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool, check_int
from refimpl.attention.softmax.reference import attention_scale, causal_alignment, validate_qkv

__all__ = ["flash_attention", "DEFAULT_THREADS", "DEFAULT_BLOCK_Q", "DEFAULT_BLOCK_K", "SHARED_BYTES"]

DEFAULT_THREADS = 128
DEFAULT_BLOCK_Q = 16
DEFAULT_BLOCK_K = 32
#: the static shared-memory budget of one block
SHARED_BYTES = 48 * 1024


def _shared_bytes(BQ: int, BK: int, n: int, p: int, itemsize: int) -> int:
    return (BQ * n + BK * n + BK * p + BQ * BK + 3 * BQ) * itemsize


def _make_flash(tpb: int, BQ: int, BK: int, NS: int, PS: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))
    npt = -(-(BQ * PS) // tpb)  # accumulator entries per thread

    @cuda.jit
    def _flash(q, k, v, tau, causal, offset, o, lse):
        # q (B L H n); k (B S H n); v (B S H p); o (B L H p); lse (B H L)
        B, L, H, n = q.shape  # n <= NS, p <= PS: the compiled tile widths
        Sk = k.shape[1]
        p = v.shape[3]
        tq = (L + BQ - 1) // BQ
        blk = cuda.blockIdx.x  # this block's (batch bi, head hi, query tile qi)
        qi = blk % tq
        hi = (blk // tq) % H
        bi = blk // (tq * H)
        x0 = qi * BQ
        cq = min(BQ, L - x0)
        r = cuda.threadIdx.x
        sq = cuda.shared.array((BQ, NS), nbt)
        sk = cuda.shared.array((BK, NS), nbt)
        sv = cuda.shared.array((BK, PS), nbt)
        sp = cuda.shared.array((BQ, BK), nbt)  # S_xy, then P_xy
        sm = cuda.shared.array(BQ, nbt)  # running max m_x
        sl = cuda.shared.array(BQ, nbt)  # running sum l_x
        sa = cuda.shared.array(BQ, nbt)  # alpha_x = exp(m_x - m_new) of the current tile
        acc = cuda.local.array(npt, nbt)  # this thread's entries of acc (B_r p)
        neg_inf = nbt(-math.inf)  # in the working dtype (no float64 promotion on the device)
        for u in range(npt):
            acc[u] = nbt(0)
        # load the Q tile (once) and initialize m = -inf, l = 0
        for e in range(r, cq * n, tpb):
            sq[e // n, e % n] = q[bi, x0 + e // n, hi, e % n]
        for x in range(r, BQ, tpb):
            sm[x] = neg_inf
            sl[x] = nbt(0)
        # Q, m, l visible before the first scores
        cuda.syncthreads()
        # the last key any row of this tile keeps (causal): x0 + cq - 1 + offset
        last = Sk - 1
        if causal:
            last = min(last, x0 + cq - 1 + offset)
        for y0 in range(0, last + 1, BK):
            ck = min(BK, Sk - y0)
            # load K_j, V_j: entries strided over the threads
            for e in range(r, ck * n, tpb):
                sk[e // n, e % n] = k[bi, y0 + e // n, hi, e % n]
            for e in range(r, ck * p, tpb):
                sv[e // p, e % p] = v[bi, y0 + e // p, hi, e % p]
            # K_j, V_j complete before the scores read them
            cuda.syncthreads()
            # S_xy = tau q_x . k_y, -inf where dropped (causal, or past the tile's end): one (x, y) per thread
            for e in range(r, cq * BK, tpb):
                x = e // BK
                y = e % BK
                sc = neg_inf
                if y < ck and (not causal or y0 + y <= x0 + x + offset):
                    acc_s = nbt(0)
                    for m in range(n):
                        acc_s += sq[x, m] * sk[y, m]
                    sc = tau * acc_s
                sp[x, y] = sc
            # the score tile complete before the row statistics read it
            cuda.syncthreads()
            # row x (one per thread): m_new = max(m_x, max_y S_xy), P_xy = exp(S_xy - m_new),
            # alpha_x = exp(m_x - m_new), l_x <- alpha_x l_x + sum_y P_xy (all 0 while m_new = -inf)
            for x in range(r, cq, tpb):
                mt = neg_inf
                for y in range(ck):
                    mt = max(mt, sp[x, y])
                m_old = sm[x]
                m_new = max(m_old, mt)
                if m_new == neg_inf:
                    al = nbt(0)
                    for y in range(ck):
                        sp[x, y] = nbt(0)
                    rs = nbt(0)
                else:
                    al = nbt(0) if m_old == neg_inf else math.exp(m_old - m_new)
                    rs = nbt(0)
                    for y in range(ck):
                        pv = sp[x, y]
                        pv = nbt(0) if pv == neg_inf else math.exp(pv - m_new)
                        sp[x, y] = pv
                        rs += pv
                sa[x] = al
                sm[x] = m_new
                sl[x] = al * sl[x] + rs
            # P and alpha complete before the accumulator reads them
            cuda.syncthreads()
            # acc_x[pp] <- alpha_x acc_x[pp] + sum_y P_xy v_y[pp]: this thread's registers
            for u in range(npt):
                e = r + tpb * u
                if e < cq * p:
                    x = e // p
                    pp = e % p
                    sacc = nbt(0)
                    for y in range(ck):
                        sacc += sp[x, y] * sv[y, pp]
                    acc[u] = sa[x] * acc[u] + sacc
            # every read of K_j, V_j, P done before the next tile overwrites them
            cuda.syncthreads()
        # o_x = acc_x / l_x (0 for a fully masked row);  lse_x = m_x + log l_x (-inf)
        for u in range(npt):
            e = r + tpb * u
            if e < cq * p:
                x = e // p
                pp = e % p
                lx = sl[x]
                o[bi, x0 + x, hi, pp] = acc[u] / lx if lx > 0 else nbt(0)
        for x in range(r, cq, tpb):
            lx = sl[x]
            lse[bi, hi, x0 + x] = sm[x] + math.log(lx) if lx > 0 else neg_inf

    return _flash


_FLASH = _cuda.lazy_kernel(_make_flash)


def flash_attention(q, k, v, *, scale: Optional[float] = None, causal: bool = False, alignment: Optional[str] = None,
                    block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K, return_lse: bool = False,
                    threads_per_block: int = DEFAULT_THREADS):
    """CUDA version of :func:`refimpl.attention.softmax.reference.tiled` (same arguments, plus ``return_lse`` and
    ``threads_per_block``): ``o (b l h p)``, and ``lse (b h l)`` when ``return_lse``.  NumPy in: the reference's
    validation, NumPy out; CuPy in: checked on the device, CuPy out."""
    return_lse = check_bool(return_lse, "return_lse")
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(q=q, k=k, v=v)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(q, "q", (None, None, None, None), allow_complex=False)
        b, l, h, n = q.shape
        _cuda.check_device_array(k, "k", (b, None, h, n), allow_complex=False)
        s = k.shape[1]
        _cuda.check_device_array(v, "v", (b, s, h, None), allow_complex=False)
        p = v.shape[3]
        dt = _cuda.working_dtype(q, k, v, allow_complex=False)
        for name, a in (("q", q), ("k", k), ("v", v)):
            _cuda.check_device_finite(a, name)
        q_, k_, v_ = (_cuda.prepare(xp, a, dt) for a in (q, k, v))
    else:
        q_, k_, v_, (b, l, s, h, n, p) = validate_qkv(q, k, v)
        dt = np.result_type(q_, k_, v_)
        q_, k_, v_ = (np.ascontiguousarray(a, dtype=dt) for a in (q_, k_, v_))
    alignment = causal_alignment(causal, alignment, l, s)
    BQ = check_int(block_q, "block_q", minimum=1)
    BK = check_int(block_k, "block_k", minimum=1)
    BQ, BK = max(1, min(BQ, l)), max(1, min(BK, s))  # a tile longer than its sequence is the whole sequence
    tau = np.dtype(dt).type(attention_scale(scale, n))
    need = _shared_bytes(BQ, BK, max(n, 1), max(p, 1), np.dtype(dt).itemsize)
    if need > SHARED_BYTES:
        raise ValueError(f"block_k: the cuda kernel keeps the Q (block_q n), K (block_k n), V (block_k p) and score "
                         f"(block_q block_k) tiles in shared memory, expected at most {SHARED_BYTES} bytes, got {need} "
                         f"for block_q={BQ}, block_k={BK}, n={n}, p={p}, {np.dtype(dt)}; use smaller tiles")
    offset = (s - l) if alignment == "bottom_right" else 0
    o = _cuda.zeros((b, l, h, p), dt, device)
    lse = _cuda.zeros((b, h, l), dt, device)
    if b * h * l > 0 and p > 0 or (return_lse and b * h * l > 0):
        tq = -(-l // BQ)
        kern = _FLASH(tpb, BQ, BK, max(n, 1), max(p, 1), np.dtype(dt).name)
        kern[b * h * tq, tpb](_cuda.to_device(q_), _cuda.to_device(k_), _cuda.to_device(v_), tau,
                              alignment is not None, offset, o, lse)
    o = _cuda.from_device(o, device)
    return (o, _cuda.from_device(lse, device)) if return_lse else o
