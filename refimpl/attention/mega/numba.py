r"""The Mega layer's ``chunked`` view with Numba attention (backend ``"numba"`` of :func:`refimpl.attention.mega.mega_layer`).

Same function as :func:`refimpl.attention.mega.reference.chunked`: the EMA is :func:`refimpl.ssm.mega_ema`
(the entry point, reused) in its ``fft`` view (``O(L log L)``, the FFT convolution with the closed-form kernel,
as Mega's own code; the reference runs the recurrence), the projections run as in the reference (BLAS matrix
products), and the attention of every chunk runs in a kernel:

* ``attention="softmax"`` without a relative bias: the tiled online-softmax kernel
  :func:`refimpl.attention.softmax.numba.flash_attention` on the chunks reshaped as a batch
  (``(b, l, n) -> (b * l // c, c, 1, n)`` for the whole chunks; the short last chunk as a second call);
* otherwise (a relative bias ``b_rel``, or ``laplace`` / ``relu2``): :func:`_chunk_attention`, parallel over
  ``batch x chunks``, one query row at a time: ``S_j = scale Q_i . K_j + rel_bias[m - 1 + j - i]`` over the
  keys of the chunk (``j <= i`` when causal), then the max-subtracted softmax or the elementwise ``f``, then
  ``O_i = sum_j P_j V_j``.

float32 and float64 signatures (warmed up once per session).
"""
from __future__ import annotations

import math
from typing import Optional

import numba as nb
import numpy as np

from refimpl._numba import warmup
from refimpl._validate import result_dtype
from refimpl.attention.mega.reference import LAPLACE_MU, LAPLACE_SIGMA, _output, _projections, _validate
from refimpl.attention.softmax.numba import flash_attention

__all__ = ["mega_layer_chunked"]

_FN = {"softmax": 0, "laplace": 1, "relu2": 2}


@nb.njit(parallel=True, cache=True)
def _chunk_attention(Q, K, V, rb, has_bias, c, causal, fn, scale, use_len, O):
    # Q, K (b l n), V (b l p), rb (2m - 1) relative bias, O (b l p) written row by row
    b, L, n = Q.shape
    p = V.shape[2]
    nc = (L + c - 1) // c
    m = (rb.shape[0] + 1) // 2
    mu = LAPLACE_MU
    denom = LAPLACE_SIGMA * math.sqrt(2.0)
    for task in nb.prange(b * nc):
        bi = task // nc
        t0 = (task % nc) * c
        t1 = min(t0 + c, L)
        S = np.empty(t1 - t0, dtype=Q.dtype)
        for i in range(t0, t1):
            jmax = i + 1 if causal else t1
            s = 1.0 / (jmax - t0) if use_len else scale
            # S_j = scale Q_i . K_j + b_rel[i, j]
            for j in range(t0, jmax):
                acc = 0.0
                for r in range(n):
                    acc += Q[bi, i, r] * K[bi, j, r]
                S[j - t0] = s * acc + (rb[m - 1 + j - i] if has_bias else 0.0)
            if fn == 0:
                # P_j = exp(S_j - max S) / sum
                mx = -np.inf
                for j in range(jmax - t0):
                    mx = max(mx, S[j])
                tot = 0.0
                for j in range(jmax - t0):
                    S[j] = math.exp(S[j] - mx)
                    tot += S[j]
                for j in range(jmax - t0):
                    S[j] = S[j] / tot
            elif fn == 1:
                # P_j = 0.5 (1 + erf((S_j - mu) / (sigma sqrt 2)))
                for j in range(jmax - t0):
                    S[j] = 0.5 * (1.0 + math.erf((S[j] - mu) / denom))
            else:
                # P_j = relu(S_j)^2
                for j in range(jmax - t0):
                    r0 = max(S[j], 0.0)
                    S[j] = r0 * r0
            # O_i = sum_j P_j V_j
            for r in range(p):
                acc = 0.0
                for j in range(jmax - t0):
                    acc += S[j] * V[bi, t0 + j, r]
                O[bi, i, r] = acc


def _flash_chunks(Q, K, V, c, causal, scale):
    """Softmax attention within chunks by the flash kernel, the chunks as a batch of one head each."""
    b, L, n = Q.shape
    p = V.shape[2]
    O = np.zeros((b, L, p), dtype=Q.dtype)
    whole = (L // c) * c
    if whole:
        def split(A):
            return np.ascontiguousarray(A[:, :whole]).reshape(b * (whole // c), c, 1, A.shape[2])
        O[:, :whole] = flash_attention(split(Q), split(K), split(V), scale=scale,
                                       causal=causal).reshape(b, whole, p)
    if whole < L:
        def tail(A):
            return np.ascontiguousarray(A[:, whole:])[:, :, None, :]
        O[:, whole:] = flash_attention(tail(Q), tail(K), tail(V), scale=scale, causal=causal)[:, :, 0, :]
    return O


def mega_layer_chunked(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma,
                       b_gamma, W_phi, b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None,
                       beta_bwd=None, eta_bwd=None, *, chunk: Optional[int] = None, causal: bool = False,
                       attention: str = "softmax", scale: Optional[float] = None):
    r"""The ``chunked`` view with Numba attention kernels; arguments, shapes and result as
    :func:`refimpl.attention.mega.reference.chunked`."""
    params = dict(locals())
    x, P, chunk, causal, scale = _validate(x, params, chunk, causal, attention, scale)
    b, L, d = x.shape
    dt = result_dtype(x, *P.values())
    x, P, X_prime, Q, K, V, gamma, phi = _projections(x, P, dt, ema_view="fft")
    n, p = Q.shape[-1], V.shape[-1]
    c = max(L, 1) if chunk is None else chunk
    if b * L * p == 0:
        O = np.zeros((b, L, p), dtype=dt)
    elif attention == "softmax" and "rel_bias" not in P and n:
        O = _flash_chunks(Q, K, V, c, causal, n ** -0.5 if scale is None else scale)
    else:
        O = np.empty((b, L, p), dtype=dt)
        rb = P["rel_bias"] if "rel_bias" in P else np.zeros(1, dtype=dt)
        use_len = scale is None and attention != "softmax"
        s = (n ** -0.5 if n else 1.0) if scale is None else scale
        _chunk_attention(np.ascontiguousarray(Q), np.ascontiguousarray(K), np.ascontiguousarray(V),
                         np.ascontiguousarray(rb, dtype=dt), "rel_bias" in P, c, causal, _FN[attention],
                         dt.type(s), use_len, O)
    return _output(x, P, X_prime, O, gamma, phi).astype(dt, copy=False)


@warmup
def _warm():
    for dt in (np.float32, np.float64):
        Q = np.ones((1, 3, 2), dtype=dt)
        for fn in range(3):
            for causal in (False, True):
                for hb in (False, True):
                    _chunk_attention(Q, Q, Q, np.zeros(5, dtype=dt), hb, 2, causal, fn, dt(0.5), fn > 0,
                                     np.empty((1, 3, 2), dtype=dt))
