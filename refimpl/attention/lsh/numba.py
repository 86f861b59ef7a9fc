r"""Reformer LSH attention as a Numba CPU kernel: sorted buckets, chunked (the ``"sorted"`` view, ``backend="numba"``).

Computes what :func:`refimpl.attention.lsh.reference.sorted_chunks` computes (the same definition: see that
module's docstring), in three parallel passes:

1. per batch row and head (``prange`` over ``b h``): the normalized keys ``k_j = qk_j / ||qk_j||`` and, per round, the
   order by ``(bucket, position)`` (a stable merge sort of the buckets) and every position's chunk
   ``floor(rank / c)``;
2. per batch row, head, round and chunk (``prange`` over ``b h r n_chunks``): the queries of the chunk against the
   keys of the previous chunk and the chunk itself -- ``S = (scale Q_c) K_c^T`` by BLAS (:func:`refimpl._blas.gemm`
   on gathered tiles), the mask (same bucket, ``j != i``, ``j <= i`` if causal), the counts
   ``N_ij = |{r' : j in P_i^(r')}|`` from the chunk indices of every round, ``s - log N``, a max-subtracted softmax,
   ``O_c = P V_c`` by BLAS; the chunk's outputs and log-sum-exps are written back to their positions (unsorted);
3. per batch row, head and position (``prange`` over ``b h l``): ``z = logsumexp_r z^(r)``,
   ``o = sum_r exp(z^(r) - z) o^(r)``; a position with nothing but itself available gets ``v_i``.

float32 runs stay float32 (libm ``exp``/``log``, no fastmath); float64 runs float64.
Shapes: ``qk (b l h n)``, ``v (b l h p)``, ``buckets (b l h z)`` -> ``o (b l h p)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl.attention.lsh.reference import _validate

__all__ = ["lsh_attention_kernel"]


@nb.njit(parallel=True, cache=True)
def _prepare(QK, B, c, Kn, order, chunk_of):
    # Kn (b h l n): normalized keys; order (b h z l): positions sorted by (bucket, position); chunk_of (b h z l)
    b, l, h, n = QK.shape
    r = B.shape[3]
    for bh in nb.prange(b * h):
        bi = bh // h
        hi = bh % h
        for t in range(l):
            # ||qk_t|| = sqrt(sum_c qk_tc^2);  k_t = qk_t / ||qk_t||  (0 for a zero vector)
            acc = 0.0
            for e in range(n):
                acc += QK[bi, t, hi, e] * QK[bi, t, hi, e]
            nrm = math.sqrt(acc)
            for e in range(n):
                Kn[bi, hi, t, e] = QK[bi, t, hi, e] / nrm if nrm > 0 else 0.0
        for ri in range(r):
            key = np.empty(l, dtype=np.int64)
            for t in range(l):
                key[t] = B[bi, t, hi, ri]
            o = np.argsort(key, kind="mergesort")  # stable: ties stay in position order
            for place in range(l):
                order[bi, hi, ri, place] = o[place]
                chunk_of[bi, hi, ri, o[place]] = place // c


@nb.njit(parallel=True, cache=True)
def _chunks(QK, Kn, V, B, order, chunk_of, scale, c, causal, wrap, Or, Zr):
    # Or (b h z l p): each round's output at every position; Zr (b h z l): its log-sum-exp (-inf: no key)
    b, l, h, n = QK.shape
    p = V.shape[3]
    r = B.shape[3]
    dt = QK.dtype
    nc = (l + c - 1) // c
    for idx in nb.prange(b * h * r * nc):
        ci = idx % nc
        ri = (idx // nc) % r
        bh = idx // (nc * r)
        bi = bh // h
        hi = bh % h
        q0 = ci * c
        T = min(q0 + c, l) - q0
        prev = ci - 1
        if ci == 0:
            prev = nc - 1 if (wrap and nc > 1) else -1
        nprev = 0
        if prev >= 0:
            nprev = min(prev * c + c, l) - prev * c
        nk = nprev + T
        # the keys: the previous chunk, then the chunk itself (sorted positions)
        kpos = np.empty(nk, dtype=np.int64)
        for jj in range(nprev):
            kpos[jj] = order[bi, hi, ri, prev * c + jj]
        for t in range(T):
            kpos[nprev + t] = order[bi, hi, ri, q0 + t]
        Qc = np.empty((T, n), dtype=dt)
        Kc = np.empty((nk, n), dtype=dt)
        Vc = np.empty((nk, p), dtype=dt)
        for t in range(T):
            i = kpos[nprev + t]
            for e in range(n):
                Qc[t, e] = QK[bi, i, hi, e] * scale
        for jj in range(nk):
            j = kpos[jj]
            for e in range(n):
                Kc[jj, e] = Kn[bi, hi, j, e]
            for e in range(p):
                Vc[jj, e] = V[bi, j, hi, e]
        # every round's bucket and chunk of the keys (gathered once: the mask and the counts read them)
        kb = np.empty((r, nk), dtype=np.int64)
        kc = np.empty((r, nk), dtype=np.int64)
        for r2 in range(r):
            for jj in range(nk):
                kb[r2, jj] = B[bi, kpos[jj], hi, r2]
                kc[r2, jj] = chunk_of[bi, hi, r2, kpos[jj]]
        # S = (scale Q_c) K_c^T:  s_ij = scale q_i . k_j
        S = np.empty((T, nk), dtype=dt)
        gemm(Qc, False, Kc, True, S, 0.0)
        zrow = np.empty(T, dtype=dt)
        # -inf and 0 in the working dtype (float32 runs keep the row max, exp and sums in float32)
        consts = np.empty(2, dtype=dt)
        consts[0] = -np.inf
        consts[1] = 0.0
        for t in range(T):
            i = kpos[nprev + t]
            m = consts[0]
            bq = kb[ri, nprev + t]
            for jj in range(nk):
                j = kpos[jj]
                # j in P_i^(r) (same bucket; the chunk holds it), j != i, j <= i if causal
                if j == i or kb[ri, jj] != bq or (causal and j > i):
                    S[t, jj] = -np.inf
                    continue
                # N_ij = |{r' : j in P_i^(r')}|  (round ri holds j)
                N = 1
                for r2 in range(r):
                    if r2 == ri or kb[r2, jj] != kb[r2, nprev + t]:
                        continue
                    cq = kc[r2, nprev + t]
                    ck = kc[r2, jj]
                    pq = cq - 1
                    if cq == 0 and wrap and nc > 1:
                        pq = nc - 1
                    if ck == cq or ck == pq:
                        N += 1
                # s_ij - log N_ij
                if N > 1:
                    S[t, jj] = S[t, jj] - math.log(N)
                m = max(m, S[t, jj])
            # P = exp(s - m) / sum;  z^(r) = m + log sum exp(s - m)
            if m == -np.inf:
                zrow[t] = -np.inf
                for jj in range(nk):
                    S[t, jj] = 0.0
                continue
            Z = consts[1]
            for jj in range(nk):
                w = math.exp(S[t, jj] - m)
                S[t, jj] = w
                Z += w
            zrow[t] = m + math.log(Z)
            inv = 1.0 / Z
            for jj in range(nk):
                S[t, jj] *= inv
        # O_c = P V_c
        Oc = np.empty((T, p), dtype=dt)
        gemm(S, False, Vc, False, Oc, 0.0)
        # unsort: back to the positions
        for t in range(T):
            i = kpos[nprev + t]
            Zr[bi, hi, ri, i] = zrow[t]
            for e in range(p):
                Or[bi, hi, ri, i, e] = Oc[t, e]


@nb.njit(parallel=True, cache=True)
def _combine(V, Or, Zr, O):
    # o_i = sum_r exp(z_i^(r) - z_i) o_i^(r),  z_i = log sum_r exp(z_i^(r));  z_i = -inf: o_i = v_i (self)
    b, l, h, p = V.shape
    r = Zr.shape[2]
    for idx in nb.prange(b * h * l):
        i = idx % l
        bh = idx // l
        bi = bh // h
        hi = bh % h
        m = -np.inf
        for ri in range(r):
            m = max(m, Zr[bi, hi, ri, i])
        if m == -np.inf:
            for e in range(p):
                O[bi, i, hi, e] = V[bi, i, hi, e]
            continue
        s = 0.0
        for ri in range(r):
            s += math.exp(Zr[bi, hi, ri, i] - m)
        z = m + math.log(s)
        for e in range(p):
            O[bi, i, hi, e] = 0.0
        for ri in range(r):
            w = math.exp(Zr[bi, hi, ri, i] - z)
            if w == 0.0:
                continue
            for e in range(p):
                O[bi, i, hi, e] += w * Or[bi, hi, ri, i, e]


def lsh_attention_kernel(qk, v, *, buckets=None, rotations=None, seed=None, n_buckets: Optional[int] = None,
                         n_rounds: Optional[int] = None, chunk: int = 64, causal: bool = False,
                         scale: Optional[float] = None, wrap: bool = False) -> np.ndarray:
    """LSH attention, sorted and chunked, in Numba: the arguments and result of
    :func:`refimpl.attention.lsh.reference.sorted_chunks` (``qk (b l h n)``, ``v (b l h p)`` -> ``(b l h p)``)."""
    qk, v, bk, c, causal, scale, wrap, dtype = _validate(qk, v, buckets, rotations, seed, n_buckets, n_rounds,
                                                         chunk, causal, scale, wrap)
    b, l, h, n = qk.shape
    p, r = v.shape[3], bk.shape[3]
    if b * l * h == 0:
        return np.zeros((b, l, h, p), dtype=dtype)
    QK = np.ascontiguousarray(qk, dtype=dtype)
    V = np.ascontiguousarray(v, dtype=dtype)
    Kn = np.empty((b, h, l, n), dtype=dtype)
    order = np.empty((b, h, r, l), dtype=np.int64)
    chunk_of = np.empty((b, h, r, l), dtype=np.int64)
    _prepare(QK, bk, c, Kn, order, chunk_of)
    Or = np.zeros((b, h, r, l, p), dtype=dtype)
    Zr = np.full((b, h, r, l), -np.inf, dtype=dtype)
    _chunks(QK, Kn, V, bk, order, chunk_of, dtype.type(scale), c, causal, wrap, Or, Zr)
    O = np.empty((b, l, h, p), dtype=dtype)
    _combine(V, Or, Zr, O)
    return O


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        bk = np.zeros((1, 3, 1, 2), dtype=np.int64)
        lsh_attention_kernel(x, x, buckets=bk, chunk=2, causal=True, wrap=True)
        lsh_attention_kernel(x, x, buckets=bk, chunk=2)
