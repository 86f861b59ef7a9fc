r"""numba.cuda chunked causal linear attention: the ``cuda`` backend of
:func:`refimpl.attention.linear.linear_attention` (view ``chunked``).

:func:`causal_chunked` is the GPU twin of :func:`refimpl.attention.linear.reference.chunked` (same arguments, same
result up to rounding).  For a chunk ``[t0, t0 + c)`` entered with the state ``(S, z)`` (``S (p n)`` in the VxK
orientation, ``z (n)``):

* ``A_ij = phi(q_i) . phi(k_j)`` for ``t0 <= j <= i`` (0 above the diagonal)               -- intra-chunk scores
* ``num_i = S phi(q_i) + sum_j A_ij v_j``,  ``den_i = z . phi(q_i) + sum_j A_ij``             -- inter + intra
* ``o_i = num_i / (den_i + eps)`` (``eps_mode="add"``) or ``num_i / max(den_i, eps)`` (``"clamp"``); ``num_i``
  unnormalized
* ``S <- S + sum_j v_j phi(k_j)^T``,  ``z <- z + sum_j phi(k_j)``                             -- the carried state

Thread mapping: **one block per (batch i, head h)**; its ``T = threads_per_block`` threads walk the chunks in
order.  Shared memory holds the chunk's ``phi(Q)`` and ``phi(K)`` tiles ``(C n)`` and the score tile ``A (C C)``
(``C = chunk``: the kernel is compiled per ``(T, C, n, dtype)``; at most 48 KiB, else a ``ValueError`` naming
``chunk``; ``chunk = 64``, ``n = 64``, float32 fits exactly).  The state ``S`` and ``z``, and the chunk's
denominators, live in the block's own slices of global arrays (each entry read and written by one thread at a
time; the block-wide ``syncthreads`` order the phases and make the global writes visible).  Inside every phase
the threads stride over the phase's entries (``e = r, r + T, ...``): the tile loads (``c n``), the scores
(``C C``), the denominators (``c``), the outputs (``c p``: one ``(i, r)`` each), the state update (``p n`` and
``n``).

Rounding: every output entry is a sum of at most ``n + l`` products (in an order that is not the reference's) plus
the normalization, the ``n + l + 3`` chain the reference view's bound (``oracles.attention.linear_attention_bound``)
already counts.  Under the CUDA simulator (CI) every thread is a Python thread: small shapes only.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool, check_choice, check_int
from refimpl.attention.linear.reference import (EPS_MODES, STATE_LAYOUTS, _check_eps, _final_state,
                                                validate_linear)

__all__ = ["causal_chunked", "DEFAULT_THREADS", "SHARED_BYTES"]

DEFAULT_THREADS = 128
#: the static shared-memory budget of one block
SHARED_BYTES = 48 * 1024


def _shared_bytes(C: int, n: int, itemsize: int) -> int:
    return (2 * C * n + C * C) * itemsize


def _make_chunked(tpb: int, C: int, NS: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _chunked(q, k, v, S, z, o, den_buf, normalize, eps, eps_add):
        # q, k (B L H n); v (B L H p); S (B H p n) and z (B H n): the state, updated in place; o (B L H p);
        # den_buf (B H C): the chunk's denominators, block-owned scratch in global memory
        B, L, H, n = q.shape  # n <= NS, the compiled tile width
        P = v.shape[3]
        blk = cuda.blockIdx.x  # this block's (batch bi, head hi)
        bi = blk // H
        hi = blk % H
        r = cuda.threadIdx.x
        sq = cuda.shared.array((C, NS), nbt)  # phi(Q) of the chunk
        sk = cuda.shared.array((C, NS), nbt)  # phi(K) of the chunk
        sa = cuda.shared.array((C, C), nbt)  # A_ij = phi(q_i) . phi(k_j), j <= i
        for t0 in range(0, L, C):
            c = L - t0  # the chunk's length min(C, L - t0) (no two-argument min inside kernels)
            if c > C:
                c = C
            # load the chunk's tiles: thread r owns entries e = r, r + T, ... of the (c n) tiles
            for e in range(r, c * n, tpb):
                i = e // n
                m = e % n
                sq[i, m] = q[bi, t0 + i, hi, m]
                sk[i, m] = k[bi, t0 + i, hi, m]
            # the tiles complete before any score reads them
            cuda.syncthreads()
            # A_ij = phi(q_i) . phi(k_j) for j <= i, 0 above the diagonal: one (i, j) entry per thread
            for e in range(r, c * c, tpb):
                i = e // c
                j = e % c
                acc = nbt(0)
                if j <= i:
                    for m in range(n):
                        acc += sq[i, m] * sk[j, m]
                sa[i, j] = acc
            # den_i = z . phi(q_i) + sum_{j <= i} A_ij needs the scores: one row i per thread
            cuda.syncthreads()
            if normalize:
                for i in range(r, c, tpb):
                    den = nbt(0)
                    for m in range(n):
                        den += z[bi, hi, m] * sq[i, m]
                    for j in range(i + 1):
                        den += sa[i, j]
                    if eps_add:
                        den = den + eps
                    elif den < eps:  # clamp: max(den, eps)
                        den = eps
                    den_buf[bi, hi, i] = den
            # the denominators visible before the outputs divide by them
            cuda.syncthreads()
            # num_i[pp] = sum_m S[pp, m] phi(q_i)[m] + sum_{j <= i} A_ij v_j[pp]; o_i = num_i / den_i
            for e in range(r, c * P, tpb):
                i = e // P
                pp = e % P
                acc = nbt(0)
                for m in range(n):
                    acc += S[bi, hi, pp, m] * sq[i, m]
                for j in range(i + 1):
                    acc += sa[i, j] * v[bi, t0 + j, hi, pp]
                if normalize:
                    acc = acc / den_buf[bi, hi, i]
                o[bi, t0 + i, hi, pp] = acc
            # every read of the entering state S, z done before the update overwrites it
            cuda.syncthreads()
            # S[pp, m] += sum_j v_j[pp] phi(k_j)[m]: one (pp, m) entry per thread
            for e in range(r, P * n, tpb):
                pp = e // n
                m = e % n
                acc = S[bi, hi, pp, m]
                for j in range(c):
                    acc += v[bi, t0 + j, hi, pp] * sk[j, m]
                S[bi, hi, pp, m] = acc
            # z[m] += sum_j phi(k_j)[m]: one m per thread
            for m in range(r, n, tpb):
                acc = z[bi, hi, m]
                for j in range(c):
                    acc += sk[j, m]
                z[bi, hi, m] = acc
            # the state updated, and the tiles free, before the next chunk loads and reads them
            cuda.syncthreads()

    return _chunked


_CHUNKED = _cuda.lazy_kernel(_make_chunked)


def _device_args(phi_q, phi_k, v, causal, normalize, eps, eps_mode, state_layout, initial_state,
                 return_final_state):
    """The CuPy path's checks (the reference's, on shapes and dtypes) and contiguous working-dtype copies."""
    from refimpl.attention.linear.reference import _split_initial_state

    causal = check_bool(causal, "causal")
    normalize = check_bool(normalize, "normalize")
    return_final_state = check_bool(return_final_state, "return_final_state")
    check_choice(state_layout, "state_layout", STATE_LAYOUTS)
    check_choice(eps_mode, "eps_mode", EPS_MODES)
    eps = _check_eps(eps, normalize)
    xp = _cuda.array_module(True)
    _cuda.check_device_array(phi_q, "phi_q", (None, None, None, None), allow_complex=False)
    b, l, h, n = phi_q.shape
    _cuda.check_device_array(phi_k, "phi_k", (b, l, h, n), allow_complex=False)
    _cuda.check_device_array(v, "v", (b, l, h, None), allow_complex=False)
    p = v.shape[3]
    S0, z0 = _split_initial_state(initial_state, normalize)
    sname = "initial_state" + ("[0] (S)" if normalize else "")
    if S0 is not None:
        _cuda.check_device_array(S0, sname, (b, h, p, n) if state_layout == "vk" else (b, h, n, p),
                                 allow_complex=False)
    if z0 is not None:
        _cuda.check_device_array(z0, "initial_state[1] (z)", (b, h, n), allow_complex=False)
    dt = _cuda.working_dtype(phi_q, phi_k, v, S0, z0, allow_complex=False)
    for name, a in (("phi_q", phi_q), ("phi_k", phi_k), ("v", v), (sname, S0), ("initial_state[1] (z)", z0)):
        if a is not None:
            _cuda.check_device_finite(a, name)
    S = xp.zeros((b, h, p, n), dtype=dt) if S0 is None else xp.array(
        S0 if state_layout == "vk" else xp.swapaxes(S0, -1, -2), dtype=dt, order="C")  # a copy: updated in place
    z = xp.zeros((b, h, n), dtype=dt) if z0 is None else xp.array(z0, dtype=dt, order="C")
    opts = dict(causal=causal, normalize=normalize, eps=dt.type(eps), eps_mode=eps_mode, state_layout=state_layout,
                return_final_state=return_final_state)
    return (_cuda.prepare(xp, phi_q, dt), _cuda.prepare(xp, phi_k, dt), _cuda.prepare(xp, v, dt), S, z, opts)


def causal_chunked(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
                   eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                   return_final_state: bool = False, chunk: int = 64, threads_per_block: int = DEFAULT_THREADS):
    """CUDA version of :func:`refimpl.attention.linear.reference.chunked` (same signature, plus
    ``threads_per_block``).  NumPy in: the reference's validation, NumPy out; CuPy in: checked on the device, CuPy
    out."""
    chunk = check_int(chunk, "chunk", minimum=1)
    tpb = _cuda.check_threads_per_block(threads_per_block)
    S_in, z_in = (initial_state if isinstance(initial_state, (tuple, list)) and len(initial_state) == 2
                  else (initial_state, None))
    device = _cuda.placement(phi_q=phi_q, phi_k=phi_k, v=v, initial_state=S_in, initial_state_z=z_in)
    kw = dict(causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode, state_layout=state_layout,
              initial_state=initial_state, return_final_state=return_final_state)
    if device:
        pq, pk, vv, S, z, opts = _device_args(phi_q, phi_k, v, **kw)
    else:
        pq, pk, vv, S, z, opts, _ = validate_linear(phi_q, phi_k, v, **kw)
        if z is None:
            z = np.zeros(S.shape[:2] + S.shape[3:], dtype=S.dtype)
    if not opts["causal"]:
        raise ValueError("causal: the 'chunked' view is causal; non-causal attention (causal=False) is the "
                         "'quadratic' view (numpy backend)")
    b, l, h, n = pq.shape
    p = vv.shape[3]
    dt = np.dtype(pq.dtype)
    C = max(1, min(chunk, l))  # a chunk longer than the sequence is the whole sequence
    need = _shared_bytes(C, max(n, 1), dt.itemsize)
    if need > SHARED_BYTES:
        raise ValueError(f"chunk: the cuda kernel keeps the (chunk n) query/key tiles and the (chunk chunk) score "
                         f"tile in shared memory, expected at most {SHARED_BYTES} bytes, got {need} for chunk={C}, "
                         f"n={n}, {dt}; use a smaller chunk")
    o = _cuda.zeros((b, l, h, p), dt, device)
    S_d, z_d = _cuda.to_device(S), _cuda.to_device(z)
    if b * h > 0 and l > 0:
        kern = _CHUNKED(tpb, C, max(n, 1), dt.name)
        den_buf = _cuda.zeros((b, h, C), dt, device)
        kern[b * h, tpb](_cuda.to_device(pq), _cuda.to_device(pk), _cuda.to_device(vv), S_d, z_d, o, den_buf,
                         opts["normalize"], opts["eps"], opts["eps_mode"] == "add")
    o = _cuda.from_device(o, device)
    if not opts["return_final_state"]:
        return o
    S_f, z_f = _cuda.from_device(S_d, device), _cuda.from_device(z_d, device)
    if device:
        S_f = S_f if opts["state_layout"] == "vk" else _cuda.array_module(True).ascontiguousarray(
            S_f.swapaxes(-1, -2))
        return o, ((S_f, z_f) if opts["normalize"] else S_f)
    return o, _final_state(S_f, z_f if opts["normalize"] else None, opts)
