r"""Numba chunked SSD (Mamba-2) kernel.

Parallel over ``batch x heads``: the rows are split into one contiguous group per thread, which walks the
chunks in order and does its rows chunk by chunk, each row's ``(p n)`` state in a local array (heads that read
the same ``B``/``C`` group share one ``C B^T`` per chunk).  Per chunk ``[s, e)`` (the chunk's rows copied to contiguous
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

from refimpl._blas import gemm_scalars, gemm_unchecked
from refimpl._fastmath import exp_parts
from refimpl._numba import warmup
from refimpl._validate import check_bool, check_finite, check_int
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
def _ssd_kernel(x, dt, A, B, C, D, z, S0, seq, chunk, has_z, has_seq, zero, one, y, final, threads, finite):
    b, l, h, p = x.shape
    g = B.shape[2]
    n = B.shape[3]
    per = h // g
    typ = x.dtype
    sc = gemm_scalars(y)  # alpha, beta for every GEMM (read only: shared by the threads)
    rows = b * h
    # The (batch, head) rows are split into one contiguous group per thread; each thread walks the chunks in
    # order and does its rows chunk by chunk: adjacent heads' rows of one time step are adjacent in memory, and
    # heads that read the same B/C group (h // (H/g)) share one C B^T per chunk (with one group, ngroups = 1,
    # every head of the thread shares it).
    groups = min(threads, rows)  # numba.get_num_threads() from the caller (inside, the kernel is not cacheable)
    for grp in prange(groups):
        first = rows * grp // groups
        count = rows * (grp + 1) // groups - first
        S_all = np.empty((count, p, n), dtype=typ)  # the (p n) state of each of the group's rows
        for r in range(count):
            S_all[r] = S0[(first + r) // h, (first + r) % h]
        # chunk buffers (flat, viewed as C-contiguous (T .) blocks): the chunk's rows are copied (rows of one
        # head are h*p apart: multiplied in place they thrash the L1 cache's sets)
        xf, Bf, Cf = np.empty(chunk * p, typ), np.empty(chunk * n, typ), np.empty(chunk * n, typ)
        Mf, CBf, CBMf, Yf, CSf = np.empty(chunk * chunk, typ), np.empty(chunk * chunk, typ), \
            np.empty(chunk * chunk, typ), np.empty(chunk * p, typ), np.empty(chunk * p, typ)
        bits = np.empty(chunk * chunk, dtype=np.int32)
        a = np.empty(chunk, dtype=typ)
        cum = np.empty(chunk, dtype=typ)
        dtc = np.empty(chunk, dtype=typ)
        bad = False
        for s in range(0, l, chunk):
            e = min(s + chunk, l)
            T = e - s
            xc, Bc, Cc = xf[:T * p].reshape((T, p)), Bf[:T * n].reshape((T, n)), Cf[:T * n].reshape((T, n))
            M, CB, CBM = Mf[:T * T].reshape((T, T)), CBf[:T * T].reshape((T, T)), CBMf[:T * T].reshape((T, T))
            Y, CS = Yf[:T * p].reshape((T, p)), CSf[:T * p].reshape((T, p))
            have_b, have_g = -1, -1  # whose C B^T the buffers hold
            for r in range(count):
                bi = (first + r) // h
                hi = (first + r) % h
                gi = hi // per  # head h reads group h // (H/g)
                S = S_all[r]
                Ah = A[hi]
                if bi != have_b or gi != have_g:
                    for i in range(T):
                        Bc[i, :] = B[bi, s + i, gi, :]
                        Cc[i, :] = C[bi, s + i, gi, :]
                    # C B^T, shared by the heads of the group
                    gemm_unchecked(Cc, False, Bc, True, CB, 0.0, sc)
                    have_b, have_g = bi, gi
                # the chunk's rows of x, checked on the way (x - x is NaN exactly when x is NaN or +-inf; the
                # flags OR-ed as integers vectorize): finite[grp] = False makes the caller raise the reference's error
                for i in range(T):
                    xi, xsrc = xc[i], x[bi, s + i, hi]
                    for q in range(p):
                        xi[q] = xsrc[q]
                        tx = xsrc[q] - xsrc[q]
                        bad |= tx != tx
                run = zero
                for j in range(T):
                    # a_j = dt_j A ;  cum_j = sum_{k=s}^{j} a_k
                    dtc[j] = dt[bi, s + j, hi]
                    a[j] = dtc[j] * Ah
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
                # M[i, j] = exp(seg(i, j)) dt_j (0 above the diagonal: exp(-inf) dt_j), then 0 across a sequence
                # boundary; CBM = M o C B^T.  Loops on 1-D row views (unit stride: they vectorize)
                _exp_block(Mf[:T * T], bits[:T * T])
                for i in range(T):
                    Mi, CBi, CBMi = M[i], CB[i], CBM[i]
                    for j in range(T):
                        Mi[j] *= dtc[j]
                    if has_seq:
                        sid_i = seq[bi, s + i]
                        for j in range(i + 1):
                            if seq[bi, s + j] != sid_i:
                                Mi[j] = zero
                    for j in range(T):
                        CBMi[j] = CBi[j] * Mi[j]
                # intra-chunk: Y = (M o C B^T) x
                gemm_unchecked(CBM, False, xc, False, Y, 0.0, sc)
                # entering state: + exp(cum_i) S C_i  (for positions in the entering state's sequence)
                gemm_unchecked(Cc, False, S, True, CS, 0.0, sc)
                for i in range(T):
                    if seq[bi, s + i] == seg_prev:
                        dec = math.exp(cum[i])
                        Yi, CSi = Y[i], CS[i]
                        for q in range(p):
                            Yi[q] += dec * CSi[q]
                # y = (Y + D x) * silu(z)
                Dh = D[hi]
                for i in range(T):
                    yi, Yi, xi = y[bi, s + i, hi], Y[i], xc[i]
                    for q in range(p):
                        yi[q] = Yi[q] + Dh[q] * xi[q]
                    if has_z:
                        zi = z[bi, s + i, hi]
                        for q in range(p):
                            yi[q] = yi[q] * (zi[q] / (one + math.exp(-zi[q])))
                # state passed on: S <- exp(cum_{T-1}) S + sum_j M[T-1, j] x_j B_j^T  (0 across a boundary)
                G = math.exp(cum[T - 1]) if sid_e == seg_prev else zero
                for i in range(T):
                    w, xi = M[T - 1, i], xc[i]
                    for q in range(p):
                        xi[q] *= w
                for q in range(p):
                    Sq = S[q]
                    for k in range(n):
                        Sq[k] *= G
                gemm_unchecked(xc, True, Bc, False, S, 1.0, sc)
        for r in range(count):
            bi = (first + r) // h
            hi = (first + r) % h
            for q in range(p):
                for k in range(n):
                    final[bi, hi, q, k] = S_all[r, q, k]
        if bad:
            finite[grp] = False


def ssd_chunked_numba(x, dt, A, B, C, D=None, z=None, *, chunk: int = 64, dt_bias=None, dt_softplus: bool = False,
                      dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, return_final_state: bool = False,
                      allow_unstable: bool = False):
    """The chunked SSD kernel; arguments and results as :func:`refimpl.ssm.ssd.reference.chunked`
    (it is ``ssd_scan(..., view="chunked", backend="numba")``)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable, expand_groups=False,
                finite_x=False)
    dtp = p.dtype
    # the kernel reads B/C in their grouped layout (b l g n)
    Bg, Cg = np.ascontiguousarray(p.B), np.ascontiguousarray(p.C)
    S0 = (np.zeros((p.b, p.h, p.p, p.n), dtype=dtp) if p.initial_state is None
          else np.ascontiguousarray(p.initial_state))
    seq = (np.zeros((p.b, max(p.l, 1)), dtype=np.int64) if p.seq_idx is None
           else np.ascontiguousarray(p.seq_idx, dtype=np.int64))
    y = np.empty((p.b, p.l, p.h, p.p), dtype=dtp)
    threads = numba.get_num_threads()
    finite = np.ones(threads, dtype=np.bool_)
    final = np.empty((p.b, p.h, p.p, p.n), dtype=dtp)
    Dhp = np.zeros((p.h, p.p), dtype=dtp) if p.D is None else np.ascontiguousarray(p.D)
    zz = np.zeros((1, 1, 1, 1), dtype=dtp) if p.z is None else np.ascontiguousarray(p.z)
    _ssd_kernel(np.ascontiguousarray(p.x), np.ascontiguousarray(p.dt), np.ascontiguousarray(p.A), Bg, Cg, Dhp, zz, S0,
                seq, min(chunk, max(p.l, 1)), p.z is not None, p.seq_idx is not None, dtp.type(0), dtp.type(1), y, final,
                threads, finite)
    if not finite.all():
        check_finite(p.x, "x")  # the reference's error for a non-finite x (checked inside the kernel)
    return (y, final) if return_final_state else y


@warmup
def _warm():
    rng = np.random.default_rng(0)
    for dt in (np.float64, np.float32):
        x = rng.standard_normal((1, 3, 2, 2)).astype(dt)
        B = rng.standard_normal((1, 3, 1, 2)).astype(dt)
        ssd_chunked_numba(x, np.ones((1, 3, 2), dtype=dt), -np.ones(2, dtype=dt), B, B, np.ones(2, dtype=dt), x,
                          chunk=2, seq_idx=np.zeros((1, 3), dtype=np.int64))
