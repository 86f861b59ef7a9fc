r"""Numba chunked SSD (Mamba-2) kernel.

Parallel over ``batch x heads`` (``prange``); for each ``(b, h)`` the chunks are processed in order
with the ``(p n)`` state in a local array.  Per chunk ``[s, e)`` (the chunk's rows copied to contiguous
blocks; the products are BLAS GEMMs through :func:`refimpl._blas.gemm`; the ``T x T`` exponentials of
``M`` in one vectorizable pass, float32 through the polynomial ``exp`` of :mod:`refimpl._fastmath`,
relative error <= ``gamma_4`` = 2 ulp, within the 4-ulp ``TRANSCENDENTAL_U`` of the bound):

* ``seg(i, j) = sum_{k=j+1}^{i} dt_k A`` is accumulated backwards from ``j = i`` (a stable segment
  sum: each entry is its own short sum, never a difference of prefix sums), giving the masked
  ``M[i, j] = exp(seg(i, j)) dt_j`` (0 above the diagonal and across a ``seq_idx`` boundary);
* ``Y = (M o C B^T) X`` (intra-chunk, the quadratic form) ``+ exp(sum_{k=s}^{i} dt_k A) S C_i``
  (the entering state, for positions in its sequence);
* ``y_i <- (y_i + D x_i) silu(z_i)`` (the skip and the gate, fused);
* ``S <- exp(sum_{k in chunk} dt_k A) S + sum_j M[e-1, j] x_j B_j^T`` (the state passed on).

Arguments, conventions and results as :func:`refimpl.ssm.ssd.reference.chunked` (validation and the ``dt``
processing -- bias, softplus, clamp -- are shared with the reference and done before the kernel).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from refimpl._blas import gemm
from refimpl._fastmath import exp_parts
from refimpl._numba import warmup
from refimpl._validate import check_bool, check_int
from refimpl.ssm.ssd.reference import prepare

__all__ = ["ssd_chunked_numba"]


@numba.njit(cache=True)
def _exp_block(w, bits):
    # w <- exp(w) on a flat block: the float32 polynomial exp of refimpl._fastmath (vectorized; relative
    # error <= gamma_4 = 2 ulp, within the 4-ulp TRANSCENDENTAL_U that the bound allows an exp), libm's exp
    # for float64. Not fastmath: the polynomial's rounding steps must stay as written.
    if w.itemsize == 4:
        for i in range(w.shape[0]):
            p, bb = exp_parts(w[i])
            w[i] = p
            bits[i] = bb
        pow2 = bits.view(np.float32)
        for i in range(w.shape[0]):
            w[i] *= pow2[i]
    else:
        for i in range(w.shape[0]):
            w[i] = math.exp(w[i])


@numba.njit(parallel=True, cache=True)
def _ssd_kernel(x, dt, A, B, C, D, z, S0, seq, chunk, has_z, zero, one, y, final):
    b, l, h, p = x.shape
    g = B.shape[2]
    n = B.shape[3]
    per = h // g
    typ = x.dtype
    for idx in prange(b * h):
        bi = idx // h
        hi = idx - bi * h
        gi = hi // per  # head h reads group h // (H/g)
        S = S0[bi, hi].copy()  # (p n)
        Ah = A[hi]
        # chunk buffers (flat, viewed as C-contiguous (T .) blocks): the chunk's rows are copied (rows of one
        # head are h*p apart: multiplied in place they thrash the L1 cache's sets)
        xf, Bf, Cf = np.empty(chunk * p, typ), np.empty(chunk * n, typ), np.empty(chunk * n, typ)
        Mf, CBf, Yf, CSf = np.empty(chunk * chunk, typ), np.empty(chunk * chunk, typ), np.empty(chunk * p, typ), \
            np.empty(chunk * p, typ)
        bits = np.empty(chunk * chunk, dtype=np.int32)
        a = np.empty(chunk, dtype=typ)
        cum = np.empty(chunk, dtype=typ)
        for s in range(0, l, chunk):
            e = min(s + chunk, l)
            T = e - s
            xc, Bc, Cc = xf[:T * p].reshape((T, p)), Bf[:T * n].reshape((T, n)), Cf[:T * n].reshape((T, n))
            M, CB = Mf[:T * T].reshape((T, T)), CBf[:T * T].reshape((T, T))
            Y, CS = Yf[:T * p].reshape((T, p)), CSf[:T * p].reshape((T, p))
            for i in range(T):
                xc[i, :] = x[bi, s + i, hi, :]
                Bc[i, :] = B[bi, s + i, gi, :]
                Cc[i, :] = C[bi, s + i, gi, :]
            run = zero
            for j in range(T):
                # a_j = dt_j A ;  cum_j = sum_{k=s}^{j} a_k
                a[j] = dt[bi, s + j, hi] * Ah
                run += a[j]
                cum[j] = run
            seg_prev = seq[bi, max(s - 1, 0)]  # the sequence of the entering state
            sid_e = seq[bi, e - 1]
            # seg(i, j) = sum_{k=j+1}^{i} a_k accumulated backwards from j = i (a stable segment sum);
            # -inf above the diagonal (exp -> 0)
            for i in range(T):
                sg = zero
                for j in range(i, -1, -1):
                    M[i, j] = sg
                    sg += a[j]
                for j in range(i + 1, T):
                    M[i, j] = -np.inf
            # M[i, j] = exp(seg(i, j)) dt_j, 0 across a sequence boundary
            _exp_block(Mf[:T * T], bits[:T * T])
            for i in range(T):
                sid_i = seq[bi, s + i]
                for j in range(i + 1):
                    M[i, j] = M[i, j] * dt[bi, s + j, hi] if seq[bi, s + j] == sid_i else zero
            # intra-chunk: Y = (M o C B^T) x
            gemm(Cc, False, Bc, True, CB, 0.0)
            for i in range(T):
                for j in range(T):
                    CB[i, j] *= M[i, j]
            gemm(CB, False, xc, False, Y, 0.0)
            # entering state: + exp(cum_i) S C_i  (for positions in the entering state's sequence)
            gemm(Cc, False, S, True, CS, 0.0)
            for i in range(T):
                if seq[bi, s + i] == seg_prev:
                    dec = math.exp(cum[i])
                    for q in range(p):
                        Y[i, q] += dec * CS[i, q]
            # y = (Y + D x) * silu(z)
            for i in range(T):
                ti = s + i
                for q in range(p):
                    y[bi, ti, hi, q] = Y[i, q] + D[hi, q] * xc[i, q]
                if has_z:
                    for q in range(p):
                        zz = z[bi, ti, hi, q]
                        y[bi, ti, hi, q] = y[bi, ti, hi, q] * (zz / (one + math.exp(-zz)))
            # state passed on: S <- exp(cum_{T-1}) S + sum_j M[T-1, j] x_j B_j^T  (0 across a boundary)
            G = math.exp(cum[T - 1]) if sid_e == seg_prev else zero
            for i in range(T):
                for q in range(p):
                    xc[i, q] *= M[T - 1, i]
            for q in range(p):
                for k in range(n):
                    S[q, k] *= G
            gemm(xc, True, Bc, False, S, 1.0)
        for q in range(p):
            for k in range(n):
                final[bi, hi, q, k] = S[q, k]


def ssd_chunked_numba(x, dt, A, B, C, D=None, z=None, *, chunk: int = 64, dt_bias=None, dt_softplus: bool = False,
                      dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, return_final_state: bool = False,
                      allow_unstable: bool = False):
    """The chunked SSD kernel; arguments and results as :func:`refimpl.ssm.ssd.reference.chunked`
    (it is ``ssd_scan(..., view="chunked", backend="numba")``)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
    dtp = p.dtype
    # the kernel reads B/C in their grouped layout (b l g n); prepare() expanded them per head
    Bg = np.ascontiguousarray(np.asarray(B).astype(dtp, copy=False))
    Cg = np.ascontiguousarray(np.asarray(C).astype(dtp, copy=False))
    S0 = (np.zeros((p.b, p.h, p.p, p.n), dtype=dtp) if p.initial_state is None
          else np.ascontiguousarray(p.initial_state))
    seq = (np.zeros((p.b, max(p.l, 1)), dtype=np.int64) if p.seq_idx is None
           else np.ascontiguousarray(p.seq_idx, dtype=np.int64))
    y = np.empty((p.b, p.l, p.h, p.p), dtype=dtp)
    final = np.empty((p.b, p.h, p.p, p.n), dtype=dtp)
    Dhp = np.zeros((p.h, p.p), dtype=dtp) if p.D is None else np.ascontiguousarray(p.D)
    zz = np.zeros((1, 1, 1, 1), dtype=dtp) if p.z is None else np.ascontiguousarray(p.z)
    _ssd_kernel(np.ascontiguousarray(p.x), np.ascontiguousarray(p.dt), np.ascontiguousarray(p.A), Bg, Cg, Dhp, zz, S0,
                seq, min(chunk, max(p.l, 1)), p.z is not None, dtp.type(0), dtp.type(1), y, final)
    return (y, final) if return_final_state else y


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for dt in (np.float64, np.float32):
        x = rng.standard_normal((1, 3, 2, 2)).astype(dt)
        B = rng.standard_normal((1, 3, 1, 2)).astype(dt)
        ssd_chunked_numba(x, np.ones((1, 3, 2), dtype=dt), -np.ones(2, dtype=dt), B, B, np.ones(2, dtype=dt), x,
                          chunk=2, seq_idx=np.zeros((1, 3), dtype=np.int64))
