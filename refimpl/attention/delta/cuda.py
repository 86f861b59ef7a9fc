r"""numba.cuda chunked (gated) delta rule in the WY form: the ``cuda`` backend of
:func:`refimpl.attention.delta.delta_rule` (view ``chunked``).

:func:`delta_chunked` is the GPU twin of :func:`refimpl.attention.delta.reference.chunked`: the same arguments,
the same validation (NumPy inputs go through ``validate_delta``; the key/query norms and ``scale`` are applied
there, on the inputs, exactly as the reference applies them; for CuPy inputs the same formulas run in CuPy on the
device), and the same order of operations per chunk as the reference (module docstring of
:mod:`refimpl.attention.delta.reference`).  For a chunk ``t = 0..c-1`` entered with state ``S_0 (p n)``:

* ``g_t = sum_{i <= t} log alpha_i`` (log space), ``Gamma_ti = exp(g_t - g_i) <= 1`` (``i <= t``),
  ``gamma_t = exp(g_t)``
* ``(I + tril(diag(beta) K K^T, -1)) W = diag(beta) K`` and
  ``(I + tril(diag(beta) (Gamma o K K^T), -1)) U = diag(beta) V`` -- by forward substitution
  ``w_t = beta_t k_t - sum_{i<t} beta_t (k_t . k_i) w_i``,
  ``u_t = beta_t v_t - sum_{i<t} beta_t Gamma_ti (k_t . k_i) u_i``
* ``O = diag(gamma) (Q S_0^T - tril(Q K^T) (W S_0^T)) + (Gamma o tril(Q K^T)) U``
* ``S_c = gamma_{c-1} (S_0 - (S_0 W^T) K) + U^T diag(Gamma_{c-1, .}) K``.

Thread mapping: **one block per (batch i, head h)**; its ``T = threads_per_block`` threads walk the chunks in
order.  Shared memory: ``K (C n)``, the ``(C C)`` tile holding ``K K^T`` (strictly lower) during the solves and then
``tril(Q K^T)``, and ``g (C)``; ``C = chunk`` (compiled per ``(T, C, n, p, dtype)``; at most 48 KiB, else a
``ValueError`` naming ``chunk``; ``chunk = 64``, ``n = 64``, float32 fits).  ``W (C n)``, ``U (C p)`` and
``WS = W S_0^T (C p)`` live in block-owned scratch in global memory, and the state ``S`` in the block's slice of
the final-state output (each entry written by one thread per phase; the ``syncthreads`` make the writes visible).
The forward substitution is **column-parallel**:
thread ``r`` owns whole columns of ``W`` and ``U`` (columns ``e = r, r + T, ...`` of the ``n + p`` columns of
``[W | U]``) and walks ``t = 0..c-1`` down its own columns, so the solve needs no barrier inside; every other
phase strides the threads over its entries.  The ``syncthreads`` separate the phases (each says which data it
publishes).

Rounding: the same products and solves as the reference view per chunk (sums in another order), so the reference
view's derived bound (``oracles.attention.delta_rule_bound(view="chunked", chunk=...)``, depth ``n + c + 4`` per
chunk) holds.  Under the CUDA simulator (CI) every thread is a Python thread: small shapes only.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool, check_int
from refimpl.attention.delta.reference import KEY_NORMS, _check_scale, validate_delta

__all__ = ["delta_chunked", "DEFAULT_THREADS", "SHARED_BYTES"]

DEFAULT_THREADS = 64
#: the static shared-memory budget of one block
SHARED_BYTES = 48 * 1024


def _shared_bytes(C: int, n: int, itemsize: int) -> int:
    return (C * n + C * C + C) * itemsize


def _make_delta(tpb: int, C: int, NS: int, PS: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _delta(q, k, v, beta, decay, gated, S, o, wb, ub, wsb):
        # q, k (B L H n); v (B L H p); beta, decay (B L H) (decay read only when gated);
        # S (B H p n) updated in place; o (B L H p); wb (B H C n), ub, wsb (B H C p): the chunk's W, U and
        # W S_0^T, block-owned scratch in global memory
        B, L, H, n = k.shape  # n <= NS, p <= PS: the compiled tile widths
        p = v.shape[3]
        blk = cuda.blockIdx.x  # this block's (batch bi, head hi)
        bi = blk // H
        hi = blk % H
        r = cuda.threadIdx.x
        sk = cuda.shared.array((C, NS), nbt)  # K of the chunk
        sm = cuda.shared.array((C, C), nbt)  # K K^T (strict lower), then tril(Q K^T)
        sg = cuda.shared.array(C, nbt)  # g_t = sum_{i<=t} log alpha_i
        for t0 in range(0, L, C):
            c = L - t0  # the chunk's length min(C, L - t0) (no two-argument min inside kernels)
            if c > C:
                c = C
            # load K (c n): thread r owns entries e = r, r + T, ...
            for e in range(r, c * n, tpb):
                t = e // n
                m = e % n
                sk[t, m] = k[bi, t0 + t, hi, m]
            # g_t = g_{t-1} + log alpha_t: a c-step running sum, by thread 0 (log space: Gamma_ti = exp(g_t - g_i) <= 1)
            if r == 0:
                acc = nbt(0)
                for t in range(c):
                    if gated:
                        acc += math.log(decay[bi, t0 + t, hi])
                    sg[t] = acc
            # K and g complete before the Gram tile reads them
            cuda.syncthreads()
            # sm_ti = k_t . k_i for i < t (the strictly lower Gram matrix): one (t, i) entry per thread
            for e in range(r, c * c, tpb):
                t = e // c
                i = e % c
                acc = nbt(0)
                if i < t:
                    for m in range(n):
                        acc += sk[t, m] * sk[i, m]
                sm[t, i] = acc
            # the Gram tile complete before the solves read its rows
            cuda.syncthreads()
            # forward substitution, column-parallel: thread r owns columns e of [W | U] and walks t down them
            #   w_t[m]  = beta_t k_t[m] - sum_{i<t} beta_t sm_ti w_i[m]
            #   u_t[pp] = beta_t v_t[pp] - sum_{i<t} beta_t exp(g_t - g_i) sm_ti u_i[pp]
            for e in range(r, n + p, tpb):
                if e < n:
                    for t in range(c):
                        bt = beta[bi, t0 + t, hi]
                        acc = nbt(0)
                        for i in range(t):
                            acc += bt * sm[t, i] * wb[bi, hi, i, e]
                        wb[bi, hi, t, e] = bt * sk[t, e] - acc
                else:
                    pp = e - n
                    for t in range(c):
                        bt = beta[bi, t0 + t, hi]
                        acc = nbt(0)
                        for i in range(t):
                            acc += bt * math.exp(sg[t] - sg[i]) * sm[t, i] * ub[bi, hi, i, pp]
                        ub[bi, hi, t, pp] = bt * v[bi, t0 + t, hi, pp] - acc
            # W, U complete, and the Gram tile free, before WS and tril(Q K^T) are formed
            cuda.syncthreads()
            # WS_t[pp] = sum_m W_t[m] S_0[pp, m]: one (t, pp) entry per thread
            for e in range(r, c * p, tpb):
                t = e // p
                pp = e % p
                acc = nbt(0)
                for m in range(n):
                    acc += wb[bi, hi, t, m] * S[bi, hi, pp, m]
                wsb[bi, hi, t, pp] = acc
            # sm_ti = q_t . k_i for i <= t, 0 above: one (t, i) entry per thread
            for e in range(r, c * c, tpb):
                t = e // c
                i = e % c
                acc = nbt(0)
                if i <= t:
                    for m in range(n):
                        acc += q[bi, t0 + t, hi, m] * sk[i, m]
                sm[t, i] = acc
            # WS and tril(Q K^T) complete before the outputs read them
            cuda.syncthreads()
            # o_t[pp] = gamma_t (q_t . S_0[pp] - sum_{i<=t} QK_ti WS_i[pp]) + sum_{i<=t} Gamma_ti QK_ti U_i[pp]
            for e in range(r, c * p, tpb):
                t = e // p
                pp = e % p
                a1 = nbt(0)
                for m in range(n):
                    a1 += q[bi, t0 + t, hi, m] * S[bi, hi, pp, m]
                a2 = nbt(0)
                a3 = nbt(0)
                for i in range(t + 1):
                    a2 += sm[t, i] * wsb[bi, hi, i, pp]
                    a3 += math.exp(sg[t] - sg[i]) * sm[t, i] * ub[bi, hi, i, pp]
                o[bi, t0 + t, hi, pp] = math.exp(sg[t]) * (a1 - a2) + a3
            # every read of the entering state S_0 done before the update overwrites it
            cuda.syncthreads()
            # S[pp, m] <- gamma_{c-1} (S_0[pp, m] - sum_i WS_i[pp] k_i[m]) + sum_i Gamma_{c-1,i} u_i[pp] k_i[m]
            for e in range(r, p * n, tpb):
                pp = e // n
                m = e % n
                a1 = nbt(0)
                a2 = nbt(0)
                for i in range(c):
                    a1 += wsb[bi, hi, i, pp] * sk[i, m]
                    a2 += math.exp(sg[c - 1] - sg[i]) * ub[bi, hi, i, pp] * sk[i, m]
                S[bi, hi, pp, m] = math.exp(sg[c - 1]) * (S[bi, hi, pp, m] - a1) + a2
            # the state updated, and every tile free, before the next chunk
            cuda.syncthreads()

    return _delta


_DELTA = _cuda.lazy_kernel(_make_delta)


def _device_norm(xp, x, mode, argument, what):
    # the reference's normalize_vectors on the device: x / sum_i x_i ("sum") or x / |x|_2 ("l2")
    if mode not in KEY_NORMS:
        raise ValueError(f"{argument}: expected one of None, 'sum', 'l2', got {mode!r}")
    if mode is None:
        return x
    den = xp.sum(x, axis=-1, keepdims=True) if mode == "sum" else xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True))
    if bool(xp.any(den == 0)):
        raise ValueError(f"{what}: {argument}={mode!r} divides by zero (the {mode} of some vector is 0)")
    return x / den


def _device_args(q, k, v, beta, decay, initial_state, key_norm, query_norm, scale, return_final_state):
    """The CuPy path: the reference's checks on shapes, dtypes and values, the norms and scale in CuPy."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    scale = _check_scale(scale)
    xp = _cuda.array_module(True)
    _cuda.check_device_array(k, "k", (None, None, None, None), allow_complex=False)
    b, l, h, n = k.shape
    _cuda.check_device_array(q, "q", (b, l, h, n), allow_complex=False)
    _cuda.check_device_array(v, "v", (b, l, h, None), allow_complex=False)
    p = v.shape[3]
    _cuda.check_device_array(beta, "beta", (b, l, h), allow_complex=False)
    if decay is not None:
        _cuda.check_device_array(decay, "decay", (b, l, h), allow_complex=False)
    if initial_state is not None:
        _cuda.check_device_array(initial_state, "initial_state", (b, h, p, n), allow_complex=False)
    dt = _cuda.working_dtype(q, k, v, beta, decay, initial_state, allow_complex=False)
    for name, a in (("q", q), ("k", k), ("v", v), ("beta", beta), ("decay", decay), ("initial_state", initial_state)):
        if a is not None:
            _cuda.check_device_finite(a, name)
    if decay is not None and bool(xp.any((decay <= 0) | (decay > 1))):
        raise ValueError("decay: expected values in (0, 1], got a value outside")
    kk = _device_norm(xp, _cuda.prepare(xp, k, dt), key_norm, "key_norm", "k")
    qq = _device_norm(xp, _cuda.prepare(xp, q, dt), query_norm, "query_norm", "q")
    if scale != 1.0:
        qq = qq * dt.type(scale)
    S = xp.zeros((b, h, p, n), dtype=dt) if initial_state is None else xp.array(initial_state, dtype=dt, order="C")
    c = lambda a: None if a is None else _cuda.prepare(xp, a, dt)  # noqa: E731
    return c(qq), c(kk), c(v), c(beta), c(decay), S, return_final_state


def delta_chunked(q, k, v, beta, *, decay=None, initial_state=None, key_norm=None, query_norm=None,
                  scale: float = 1.0, return_final_state: bool = False, chunk: int = 64,
                  threads_per_block: int = DEFAULT_THREADS):
    """CUDA version of :func:`refimpl.attention.delta.reference.chunked` (same signature, plus
    ``threads_per_block``).  NumPy in: the reference's validation, NumPy out; CuPy in: checked on the device, CuPy
    out."""
    chunk = check_int(chunk, "chunk", minimum=1)
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(q=q, k=k, v=v, beta=beta, decay=decay, initial_state=initial_state)
    if device:
        q_, k_, v_, beta_, decay_, S, rfs = _device_args(q, k, v, beta, decay, initial_state, key_norm, query_norm,
                                                         scale, return_final_state)
    else:
        q_, k_, v_, beta_, decay_, S, rfs, _ = validate_delta(
            q, k, v, beta, decay=decay, initial_state=initial_state, key_norm=key_norm, query_norm=query_norm,
            scale=scale, return_final_state=return_final_state)
    b, l, h, n = k_.shape
    p = v_.shape[3]
    dt = np.dtype(q_.dtype)
    C = max(1, min(chunk, l))  # a chunk longer than the sequence is the whole sequence
    need = _shared_bytes(C, max(n, 1), dt.itemsize)
    if need > SHARED_BYTES:
        raise ValueError(f"chunk: the cuda kernel keeps K (chunk n) and a (chunk chunk) tile in shared memory, "
                         f"expected at most {SHARED_BYTES} bytes, got {need} for chunk={C}, n={n}, {dt}; use a "
                         f"smaller chunk")
    o = _cuda.zeros((b, l, h, p), dt, device)
    S_d = _cuda.to_device(S)
    if b * h > 0 and l > 0:
        gated = decay_ is not None
        dec = decay_ if gated else beta_  # never read when not gated
        kern = _DELTA(tpb, C, max(n, 1), max(p, 1), dt.name)
        wb = _cuda.zeros((b, h, C, max(n, 1)), dt, device)
        ub = _cuda.zeros((b, h, C, max(p, 1)), dt, device)
        wsb = _cuda.zeros((b, h, C, max(p, 1)), dt, device)
        kern[b * h, tpb](_cuda.to_device(q_), _cuda.to_device(k_), _cuda.to_device(v_), _cuda.to_device(beta_),
                         _cuda.to_device(dec), gated, S_d, o, wb, ub, wsb)
    o = _cuda.from_device(o, device)
    return (o, _cuda.from_device(S_d, device)) if rfs else o
