r"""Numba kernels for causal linear attention: the ``"numba"`` backend of
:func:`refimpl.attention.linear.linear_attention` (views ``recurrent`` and ``chunked``).

Each public function validates exactly like its NumPy reference (:func:`refimpl.attention.linear.reference.
validate_linear`: the same arguments, the same errors) and returns the same result up to rounding (property-tested
against the reference and the mpmath oracle for l = 0, 1, odd, not a multiple of the chunk, long).  The output
dtype is the reference's (float32 only when every input is float32).  The recurrent kernel computes every
state and output entry as the same sum, in the same order, as the step-by-step recurrence, in the working
dtype (fused multiply-adds allowed), advancing 4 steps per pass over the state (see :func:`_lin_recurrent`);
its normalizer ``z_t . phi(q_t)`` is a float64 sum.  The chunked kernel does its matrix products through
BLAS (:func:`refimpl._blas.gemm`, four per chunk, on the strided head views themselves, one thread per call) and so
accumulates in the working dtype, in BLAS's order; the derived componentwise bounds of the tests count the longest
chain of roundings (``n + l + 3``), which holds for any summation order, so they apply unchanged; the normalizer is
still a float64 scalar.

* :func:`causal_recurrent` -- :func:`refimpl.attention.linear.reference.recurrent`.
* :func:`causal_chunked` -- :func:`refimpl.attention.linear.reference.chunked`.

The kernels always carry the normalizer ``z`` (it is dropped from the result when ``normalize=False``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from refimpl._blas import gemm_scalars, gemm_unchecked
from refimpl._numba import warmup
from refimpl._validate import check_finite, check_int
from refimpl.attention.linear.reference import _final_state, validate_linear

__all__ = ["causal_recurrent", "causal_chunked"]


#: time steps per pass over the state in :func:`_lin_recurrent` (the loop body below is written out for 4)
STEPS_PER_PASS = 4


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _lin_recurrent(phi_q, phi_k, v, S, z, normalize, eps, eps_add):
    # The literal recurrence, per (batch, head), with the loops ordered for the cache and the vector units:
    # the state is held transposed, St[j, i] = S[i, j] (n p), so that each of its rows is unit-stride along v's
    # axis i, and one pass over St (row j, then i) advances 4 time steps t0..t0+3: for each element
    #     St[j, i] <- St[j, i] + phi(k_t)[j] v_t[i]      (S_t = S_{t-1} + v_t phi(k_t)^T, in order t0, t0+1, ...)
    #     O[t, i]  <- O[t, i] + phi(q_t)[j] St_t[j, i]   (o_t = S_t phi(q_t), summed over j in order)
    # so each state element is loaded and stored once per 4 steps instead of once per step.  Every S_t entry
    # and every o_t entry is the same sum, in the same order, as the step-by-step recurrence; only
    # ``contract`` (fused multiply-add: one rounding instead of two) is allowed, no reassociation.
    b, l, h, n = phi_k.shape
    p = v.shape[3]
    dt = phi_q.dtype
    o = np.empty((b, l, h, p), dtype=dt)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        St = np.ascontiguousarray(S[bi, hi].T)
        zz = z[bi, hi]
        O = np.empty((STEPS_PER_PASS, p), dtype=dt)  # o_t, t = t0 .. t0 + 3, accumulated over j
        den = np.empty(STEPS_PER_PASS)  # z_t . phi(q_t), float64
        o0, o1, o2, o3 = O[0], O[1], O[2], O[3]
        for t0 in range(0, l, STEPS_PER_PASS):
            T = min(STEPS_PER_PASS, l - t0)
            O[:] = 0.0
            den[:] = 0.0
            # v_t for the 4 steps (views made once per pass, not per state row)
            t3 = min(t0 + 3, l - 1)
            v0, v1, v2, v3 = v[bi, t0, hi], v[bi, min(t0 + 1, t3), hi], v[bi, min(t0 + 2, t3), hi], v[bi, t3, hi]
            for j in range(n):
                if normalize:
                    # z_t = z_{t-1} + phi(k_t) ; den_t = z_t . phi(q_t) (summed over j in order)
                    zj = zz[j]
                    for tt in range(T):
                        zj += phi_k[bi, t0 + tt, hi, j]
                        den[tt] += zj * phi_q[bi, t0 + tt, hi, j]
                    zz[j] = zj
                Sj = St[j]
                if T == STEPS_PER_PASS:
                    k0, k1, k2, k3 = (phi_k[bi, t0, hi, j], phi_k[bi, t0 + 1, hi, j], phi_k[bi, t0 + 2, hi, j],
                                      phi_k[bi, t0 + 3, hi, j])
                    q0, q1, q2, q3 = (phi_q[bi, t0, hi, j], phi_q[bi, t0 + 1, hi, j], phi_q[bi, t0 + 2, hi, j],
                                      phi_q[bi, t0 + 3, hi, j])
                    for i in range(p):
                        # S_t[i, j] = S_{t-1}[i, j] + v_t[i] phi(k_t)[j] ; o_t[i] += S_t[i, j] phi(q_t)[j]
                        s = Sj[i] + k0 * v0[i]
                        o0[i] += q0 * s
                        s += k1 * v1[i]
                        o1[i] += q1 * s
                        s += k2 * v2[i]
                        o2[i] += q2 * s
                        s += k3 * v3[i]
                        o3[i] += q3 * s
                        Sj[i] = s
                else:  # the last 1-3 steps: the same recurrence, one step at a time
                    for tt in range(T):
                        kt = phi_k[bi, t0 + tt, hi, j]
                        qt = phi_q[bi, t0 + tt, hi, j]
                        vt = v[bi, t0 + tt, hi]
                        Ot = O[tt]
                        for i in range(p):
                            Sj[i] += kt * vt[i]
                            Ot[i] += qt * Sj[i]
            for tt in range(T):
                if normalize:
                    # o_t = S_t phi(q_t) / (den_t + eps)  or  / max(den_t, eps)
                    d = den[tt] + eps if eps_add else max(den[tt], eps)
                    for i in range(p):
                        o[bi, t0 + tt, hi, i] = O[tt, i] / d
                else:
                    o[bi, t0 + tt, hi, :] = O[tt]
        S[bi, hi] = St.T
    return o


@numba.njit(cache=True, parallel=True)
def _lin_chunked(phi_q, phi_k, v, S, z, chunk, normalize, eps, eps_add, threads, finite):
    # Chunk by chunk, four BLAS GEMMs (refimpl._blas.gemm) per chunk of T rows of one head, straight on the
    # strided head views of the (b l h d) arrays (Q = phi_q[bi, s:s+T, hi, :], row stride h d; no copies):
    #   A = Q K^T, then the causal mask (A_ij = phi(q_i).phi(k_j) for j <= i, 0 above the diagonal)
    #   num = Q S_s^T          (the inter-chunk term: the state before the chunk, kept transposed: St = S^T (n p))
    #   num += A V             (the intra-chunk term), written into o
    #   S_{s+T}^T = S_s^T + K^T V
    # The (batch, head) rows are split into one contiguous group per thread, and each thread walks the chunks
    # in order, doing its group's heads chunk by chunk: the rows of adjacent heads of one time step are
    # adjacent in memory, so the thread streams through q, k, v and o instead of jumping a page per row
    # (measured at b 1, h 8, l 4096, d 64, c 16: 6.6 ms against 8.9 ms for one head at a time).
    # Accumulation is in the working dtype (BLAS); the componentwise bound of the tests (depth n + L + 3)
    # holds for any summation order.  The normalizer den_i is a float64 scalar.
    # The inputs' finiteness is checked here, on the chunk's rows while they are in cache (a separate NumPy pass
    # read 24 MB again: 2.1 ms at W2's shape); finite[g] = False tells the caller to raise the reference's error
    # (refimpl._validate.check_finite).
    b, l, h, n = phi_k.shape
    p = v.shape[3]
    dt = phi_q.dtype
    o = np.empty((b, l, h, p), dtype=dt)
    rows = b * h
    groups = min(threads, rows)  # numba.get_num_threads() from the caller (inside, the kernel is not cacheable)
    sc = gemm_scalars(o)  # alpha, beta for every call (read only: shared by the threads)
    for g in prange(groups):
        first = rows * g // groups
        count = rows * (g + 1) // groups - first
        St = np.empty((count, n, p), dtype=dt)  # St[r] = S^T of row first + r
        for r in range(count):
            bi, hi = (first + r) // h, (first + r) % h
            for c in range(n):
                for i in range(p):
                    St[r, c, i] = S[bi, hi, i, c]
        A_buf = np.empty((chunk, chunk), dtype=dt)
        bad = False
        for s in range(0, l, chunk):
            T = min(chunk, l - s)
            A = A_buf[:T, :T]
            for r in range(count):
                bi, hi = (first + r) // h, (first + r) % h
                Q, K, V = phi_q[bi, s:s + T, hi, :], phi_k[bi, s:s + T, hi, :], v[bi, s:s + T, hi, :]
                O = o[bi, s:s + T, hi, :]
                # A = Q K^T, then the causal mask
                gemm_unchecked(Q, False, K, True, A, 0.0, sc)
                for i in range(T):
                    for j in range(i + 1, T):
                        A[i, j] = 0.0
                # num = Q S_s^T + A V  (num_i = S_s phi(q_i) + sum_{j<=i} A_ij v_j), into o
                gemm_unchecked(Q, False, St[r], False, O, 0.0, sc)
                gemm_unchecked(A, False, V, False, O, 1.0, sc)
                if normalize:
                    for i in range(T):
                        # den_i = z_s . phi(q_i) + sum_{j<=i} A_ij  (+ eps, or max(., eps)); a float64 scalar
                        den = 0.0
                        for c in range(n):
                            den += z[bi, hi, c] * Q[i, c]
                        for j in range(i + 1):
                            den += A[i, j]
                        if eps_add:
                            den += eps
                        else:
                            den = max(den, eps)
                        for i2 in range(p):
                            O[i, i2] = O[i, i2] / den
                    # z_{s+T} = z_s + sum_j phi(k_j)
                    for i in range(T):
                        for c in range(n):
                            z[bi, hi, c] += K[i, c]
                # S_{s+T} = S_s + V^T K (as St += K^T V)
                gemm_unchecked(K, True, V, False, St[r], 1.0, sc)
                # x - x is NaN exactly when x is NaN or +-inf; the flags are OR-ed as integers (a reduction that
                # vectorizes without reassociating floats: 0.14 ns an element, against 0.63 for a float sum)
                for i in range(T):  # on 1-D row views (unit stride)
                    qi, ki, vi = phi_q[bi, s + i, hi], phi_k[bi, s + i, hi], v[bi, s + i, hi]
                    for c in range(n):
                        tq = qi[c] - qi[c]
                        tk = ki[c] - ki[c]
                        bad |= (tq != tq) | (tk != tk)
                    for c in range(p):
                        tv = vi[c] - vi[c]
                        bad |= tv != tv
        if bad:
            finite[g] = False
        for r in range(count):
            bi, hi = (first + r) // h, (first + r) % h
            for i in range(p):
                for c in range(n):
                    S[bi, hi, i, c] = St[r, c, i]
    return o


def _kernel_args(phi_q, phi_k, v, view, **kw):
    """Validated, contiguous kernel inputs; the state ``S (b h p n)`` and normalizer ``z (b h n)`` as writable copies."""
    phi_q, phi_k, v, S, z, opts, (b, l, s, h, n, p) = validate_linear(phi_q, phi_k, v, **kw)
    if not opts["causal"]:
        raise ValueError(f"causal: the {view!r} view is causal; non-causal attention (causal=False) is the "
                         f"'quadratic' view (numpy backend)")
    if z is None:  # unnormalized: the kernel still carries a normalizer, not returned
        z = np.zeros((b, h, n), dtype=phi_q.dtype)
    c = np.ascontiguousarray
    return c(phi_q), c(phi_k), c(v), c(S), c(z), opts


def _result(o, S, z, opts):
    return (o, _final_state(S, z if opts["normalize"] else None, opts)) if opts["return_final_state"] else o


def causal_recurrent(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
                     eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                     return_final_state: bool = False):
    """Numba version of :func:`refimpl.attention.linear.reference.recurrent` (same signature)."""
    pq, pk, vv, S, z, opts = _kernel_args(phi_q, phi_k, v, "recurrent", causal=causal, normalize=normalize, eps=eps,
                                          eps_mode=eps_mode, state_layout=state_layout, initial_state=initial_state,
                                          return_final_state=return_final_state)
    o = _lin_recurrent(pq, pk, vv, S, z, opts["normalize"], opts["eps"], eps_mode == "add")
    return _result(o, S, z, opts)


def causal_chunked(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
                   eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                   return_final_state: bool = False, chunk: int = 64):
    """Numba version of :func:`refimpl.attention.linear.reference.chunked` (same signature)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    pq, pk, vv, S, z, opts = _kernel_args(phi_q, phi_k, v, "chunked", causal=causal, normalize=normalize, eps=eps,
                                          eps_mode=eps_mode, state_layout=state_layout, initial_state=initial_state,
                                          return_final_state=return_final_state, finite_inputs=False)
    threads = numba.get_num_threads()
    finite = np.ones(threads, dtype=np.bool_)
    o = _lin_chunked(pq, pk, vv, S, z, chunk, opts["normalize"], opts["eps"], eps_mode == "add", threads, finite)
    if not finite.all():  # the reference's error, naming the first non-finite entry of the first such argument
        for a, name in ((pq, "phi_q"), (pk, "phi_k"), (vv, "v")):
            check_finite(a, name)
    return _result(o, S, z, opts)


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        x = np.zeros((1, 2, 1, 2), dtype=dt)
        for norm in (True, False):
            for mode in ("add", "clamp"):
                eps = 1.0 if norm else 0.0
                causal_recurrent(x, x, x, normalize=norm, eps=eps, eps_mode=mode)
                causal_chunked(x, x, x, chunk=1, normalize=norm, eps=eps, eps_mode=mode)
