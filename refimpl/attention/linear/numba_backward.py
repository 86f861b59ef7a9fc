r"""The Numba backward kernel of chunked causal linear attention: backend ``"numba"``, view ``"chunked"`` of
:func:`refimpl.attention.linear.linear_attention_vjp`.

It computes :func:`refimpl.attention.linear.backward.chunked_vjp` (the same equations, the same arguments and
errors: the validation is the reference's own :func:`~refimpl.attention.linear.backward.prepare_vjp`) per
(batch entry, head) in parallel (``prange``):

1. the forward over chunks, storing each chunk's entry state ``S_c^T (n p)`` and ``z_c``
   (``S_{c+1}^T = S_c^T + phi(K_c)^T V_c``: one GEMM per chunk);
2. the **reverse scan over chunks** of the state gradient, carrying ``dS^T (n p)`` and ``dz`` (the gradient of
   the state after the chunk); per chunk of ``T`` rows, through :func:`refimpl._blas.gemm`::

       A = phi(Q) phi(K)^T, masked (j <= i)               num = phi(Q) S_c^T + A V
       den_i = z_c . phi(q_i) + sum_j A_ij (+ eps | max(., eps)) (a float64 scalar), o = num / den
       dnum = dO / den,  da_i = -(dO_i . o_i) / den_i [1{a_i >= eps} for 'clamp']
       dA = (dnum V^T + da 1^T), masked
       dphi(Q) = dA phi(K) + dnum S_c + da z_c^T           (S_c = (S_c^T)^T)
       dphi(K) = dA^T phi(Q) + V dS + 1 dz^T,   dV = A^T dnum + phi(K) dS^T
       dS^T <- dS^T + phi(Q)^T dnum,   dz <- dz + phi(Q)^T da

   The GEMMs read the chunk's rows of one head in place (strided row views, unit last stride) and write the
   gradients straight into the outputs.  Accumulation is in the working dtype, in BLAS's order; the derived
   componentwise bound of the tests counts the longest chain of roundings, which holds for any order.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from refimpl._blas import gemm
from refimpl._numba import warmup
from refimpl._validate import check_int
from refimpl.attention.linear.backward import finish_vjp, prepare_vjp

__all__ = ["causal_chunked_vjp"]


@numba.njit(cache=True, parallel=True)
def _lin_chunked_vjp(phi_q, phi_k, v, do, S0, z0, dSL, dzL, chunk, normalize, eps, eps_add):
    b, l, h, n = phi_k.shape
    p = v.shape[3]
    dt = phi_q.dtype
    n_chunks = (l + chunk - 1) // chunk
    dq = np.zeros((b, l, h, n), dtype=dt)
    dk = np.zeros((b, l, h, n), dtype=dt)
    dv = np.zeros((b, l, h, p), dtype=dt)
    dS0 = np.empty((b, h, p, n), dtype=dt)
    dz0 = np.empty((b, h, n), dtype=dt)
    for bh in prange(b * h):
        bi = bh // h
        hi = bh % h
        # 1. forward over chunks: entry states St_in[c] = S_c^T (n p), z_in[c] = z_c
        St_in = np.empty((n_chunks + 1, n, p), dtype=dt)
        z_in = np.empty((n_chunks + 1, n), dtype=dt)
        for c in range(n):
            for r in range(p):
                St_in[0, c, r] = S0[bi, hi, r, c]
            z_in[0, c] = z0[bi, hi, c]
        for ci in range(n_chunks):
            s = ci * chunk
            T = min(chunk, l - s)
            St_in[ci + 1, :, :] = St_in[ci]
            # S_{c+1}^T = S_c^T + phi(K_c)^T V_c
            gemm(phi_k[bi, s:s + T, hi, :], True, v[bi, s:s + T, hi, :], False, St_in[ci + 1], 1.0)
            for c in range(n):
                acc = z_in[ci, c]
                for i in range(T):
                    acc += phi_k[bi, s + i, hi, c]
                z_in[ci + 1, c] = acc
        # 2. the reverse scan over chunks: dSt = dS^T (n p), dz (n), from the final state's cotangent
        dSt = np.empty((n, p), dtype=dt)
        dz = np.empty(n, dtype=dt)
        for c in range(n):
            for r in range(p):
                dSt[c, r] = dSL[bi, hi, r, c]
            dz[c] = dzL[bi, hi, c]
        A = np.empty((chunk, chunk), dtype=dt)
        dA = np.empty((chunk, chunk), dtype=dt)
        num = np.empty((chunk, p), dtype=dt)
        dnum = np.empty((chunk, p), dtype=dt)
        da = np.zeros(chunk, dtype=dt)
        Sc = np.empty((p, n), dtype=dt)
        for ci in range(n_chunks - 1, -1, -1):
            s = ci * chunk
            T = min(chunk, l - s)
            Q = phi_q[bi, s:s + T, hi, :]
            K = phi_k[bi, s:s + T, hi, :]
            V = v[bi, s:s + T, hi, :]
            dO = do[bi, s:s + T, hi, :]
            St = St_in[ci]
            At, dAt, numt, dnumt = A[:T, :T], dA[:T, :T], num[:T], dnum[:T]
            # A = phi(Q) phi(K)^T, masked (j <= i)
            gemm(Q, False, K, True, At, 0.0)
            for i in range(T):
                for j in range(i + 1, T):
                    At[i, j] = 0.0
            # num = phi(Q) S_c^T + A V
            gemm(Q, False, St, False, numt, 0.0)
            gemm(At, False, V, False, numt, 1.0)
            for i in range(T):
                if normalize:
                    # a_i = z_c . phi(q_i) + sum_{j <= i} A_ij ; den_i = a_i + eps or max(a_i, eps)  (float64)
                    a = 0.0
                    for c in range(n):
                        a += z_in[ci, c] * Q[i, c]
                    for j in range(i + 1):
                        a += At[i, j]
                    pas = 1.0
                    if eps_add:
                        den = a + eps
                    else:
                        den = max(a, eps)
                        pas = 1.0 if a >= eps else 0.0
                    # dnum_i = dO_i / den_i ;  da_i = -(dO_i . o_i) / den_i  (o_i = num_i / den_i)
                    dot = 0.0
                    for r in range(p):
                        dnumt[i, r] = dO[i, r] / den
                        dot += dO[i, r] * (numt[i, r] / den)
                    da[i] = -dot / den * pas
                else:
                    for r in range(p):
                        dnumt[i, r] = dO[i, r]
                    da[i] = 0.0
            # dA = (dnum V^T + da 1^T), masked (j <= i)
            gemm(dnumt, False, V, True, dAt, 0.0)
            for i in range(T):
                for j in range(T):
                    if j <= i:
                        dAt[i, j] += da[i]
                    else:
                        dAt[i, j] = 0.0
            # dphi(Q) = dA phi(K) + dnum S_c + da z_c^T
            for r in range(p):
                for c in range(n):
                    Sc[r, c] = St[c, r]
            dQo = dq[bi, s:s + T, hi, :]
            gemm(dAt, False, K, False, dQo, 0.0)
            gemm(dnumt, False, Sc, False, dQo, 1.0)
            # dphi(K) = dA^T phi(Q) + V dS + 1 dz^T   (dS = (dS^T)^T: V dS = V (dSt)^T)
            dKo = dk[bi, s:s + T, hi, :]
            gemm(dAt, True, Q, False, dKo, 0.0)
            gemm(V, False, dSt, True, dKo, 1.0)
            # dV = A^T dnum + phi(K) dS^T
            dVo = dv[bi, s:s + T, hi, :]
            gemm(At, True, dnumt, False, dVo, 0.0)
            gemm(K, False, dSt, False, dVo, 1.0)
            if normalize:
                for i in range(T):
                    for c in range(n):
                        dQo[i, c] += da[i] * z_in[ci, c]
                        dKo[i, c] += dz[c]
                # dz <- dz + phi(Q)^T da
                for c in range(n):
                    acc = dz[c]
                    for i in range(T):
                        acc += Q[i, c] * da[i]
                    dz[c] = acc
            # dS^T <- dS^T + phi(Q)^T dnum
            gemm(Q, True, dnumt, False, dSt, 1.0)
        for r in range(p):
            for c in range(n):
                dS0[bi, hi, r, c] = dSt[c, r]
        for c in range(n):
            dz0[bi, hi, c] = dz[c]
    return dq, dk, dv, dS0, dz0


def causal_chunked_vjp(phi_q, phi_k, v, *, do, d_final_state=None, causal: bool = True, normalize: bool = True,
                       eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                       chunk: int = 64):
    """Numba version of :func:`refimpl.attention.linear.backward.chunked_vjp` (same signature and result)."""
    chunk = check_int(chunk, "chunk", minimum=1)
    phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, (b, l, s, h, n, p), dts = prepare_vjp(
        phi_q, phi_k, v, do, d_final_state, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
        state_layout=state_layout, initial_state=initial_state)
    if not opts["causal"]:
        raise ValueError("causal: the 'chunked' view is causal; non-causal attention (causal=False) is the "
                         "'quadratic' view (numpy backend)")
    dt = phi_q.dtype
    if z0 is None:  # unnormalized: the kernel carries a zero normalizer and its (unused) gradient
        z0 = np.zeros((b, h, n), dtype=dt)
        dz_L = np.zeros((b, h, n), dtype=dt)
    c = np.ascontiguousarray
    dq, dk, dv, dS0, dz0 = _lin_chunked_vjp(c(phi_q), c(phi_k), c(v), c(do), c(S0), c(z0), c(dS_L), c(dz_L),
                                            chunk, opts["normalize"], float(opts["eps"]), eps_mode == "add")
    return finish_vjp(dq, dk, dv, dS0, dz0 if opts["normalize"] else None, opts, dts)


@warmup
def _warm() -> None:
    for dt in (np.float64, np.float32):
        x = np.ones((1, 3, 1, 2), dtype=dt)
        for norm in (True, False):
            for mode in ("add", "clamp"):
                causal_chunked_vjp(x, x, x, do=x, chunk=2, normalize=norm, eps=1.0 if norm else 0.0, eps_mode=mode)
