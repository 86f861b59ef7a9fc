r"""numba.cuda parallel scan of the diagonal recurrence ``s_t = a_t * s_{t-1} + b_t`` (S5, LRU, the LTI ``scan`` view).

* :func:`diag_scan` -- the GPU twin of :func:`refimpl.ssm.s5.reference.diag_scan`: ``a (l n)`` or ``(n)``,
  ``b (b l n)``, ``initial_state (b n)`` -> all states ``(b l n)`` in the working complex dtype.
* :func:`scan` -- the ``scan`` view of :func:`refimpl.ssm.s5.s5_ssm` with this kernel (backend ``cuda``);
  :func:`lru_scan` -- the ``scan`` view of :func:`refimpl.ssm.lru.lru_ssm` (backend ``cuda``).  Their
  discretization, ``B_bar u`` and readout are the reference's (NumPy inputs); only the scan runs on the GPU.
* ``_scan_states`` -- the launcher shared with :mod:`refimpl.ssm.lti.cuda` (real or complex, no validation).

Thread mapping: one **block per (batch i, state n)**; its ``threads_per_block = T`` threads walk the time axis
in chunks of ``T`` steps.  Thread ``r`` of the block owns step ``t = start + r`` of the current chunk.  Each
chunk is a Kogge-Stone (Hillis-Steele) inclusive scan in shared memory over the pairs ``e_t = (a_t, b_t)``
with the composition ``(a, b) o (a', b') = (a' a, a' b + b')`` (first ``e``, then ``e'``); after
``ceil(log2 T)`` rounds thread ``r`` holds ``E_t = e_start o ... o e_t = (a_t...a_start, s_t - a_t...a_start s_{start-1})``,
so ``s_t = E_t.a * carry + E_t.b`` with ``carry = s_{start-1}`` (``initial_state`` for the first chunk; the
last state of the previous chunk after that), kept in one shared-memory slot.  Any ``l``: the threads past
the end of the last chunk hold the identity ``(1, 0)``.

Rounding: a term ``a_t ... a_{j+1} b_j`` of ``s_t`` is a product of ``t - j + 1`` factors (``t - j``
multiplications in whatever association) plus at most ``ceil(log2 T) + 1`` additions per chunk crossed, so the
depth of ``s_t`` is at most ``(t + 1) + (c_t + 1)(ceil(log2 T) + 2)``, ``c_t = t // T`` (the bound the tests use,
``oracles.checks.cuda_ssm.scan_depth``).

Under the CUDA simulator (CI) the arrays are NumPy and every thread is a Python thread: small shapes only.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool
from refimpl.ssm.s5 import reference

__all__ = ["diag_scan", "scan", "lru_scan", "DEFAULT_THREADS"]

DEFAULT_THREADS = 128


def _make_scan(tpb: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _scan(a, b, s0, out, tv):
        # a (la N) with la = l (tv = 1) or 1 (tv = 0); b (B l N); s0 (B N); out (B l N)
        Bsz, L, N = b.shape
        blk = cuda.blockIdx.x  # this block's (batch i, state n)
        i = blk // N
        n = blk % N
        r = cuda.threadIdx.x  # this thread's step within the chunk
        sa = cuda.shared.array(tpb, nbt)  # the chunk's pairs (a, b), one per thread
        sb = cuda.shared.array(tpb, nbt)
        carry = cuda.shared.array(1, nbt)  # s_{start-1}: the state entering the chunk
        if r == 0:
            carry[0] = s0[i, n]
        # carry written before any thread reads it
        cuda.syncthreads()
        for start in range(0, L, tpb):
            t = start + r
            # load e_t = (a_t, b_t); past the end: the identity (1, 0)
            av = nbt(1)
            bv = nbt(0)
            if t < L:
                av = a[t * tv, n]
                bv = b[i, t, n]
            sa[r] = av
            sb[r] = bv
            # every pair of the chunk stored before round 1 reads its neighbour
            cuda.syncthreads()
            off = 1
            while off < tpb:
                # Kogge-Stone round: e_t <- e_{t-off} o e_t = (a_t a_{t-off}, a_t b_{t-off} + b_t)
                pa = nbt(1)
                pb = nbt(0)
                if r >= off:
                    pa = sa[r - off]
                    pb = sb[r - off]
                # all reads of this round done before any thread overwrites its slot
                cuda.syncthreads()
                if r >= off:
                    bv = av * pb + bv
                    av = av * pa
                    sa[r] = av
                    sb[r] = bv
                # all writes of this round visible to the next round's reads
                cuda.syncthreads()
                off *= 2
            # s_t = (a_t ... a_start) s_{start-1} + (the chunk's own part)
            h = av * carry[0] + bv
            if t < L:
                out[i, t, n] = h
            # every thread has read carry before the chunk's last step replaces it
            cuda.syncthreads()
            if r == min(tpb, L - start) - 1:
                carry[0] = h
            # the new carry visible before the next chunk uses it (and sa/sb are free to reuse)
            cuda.syncthreads()

    return _scan


_SCAN = _cuda.lazy_kernel(_make_scan)


def _scan_states(a, b, s0, out, *, time_varying: bool, threads_per_block: int) -> None:
    """Launch the scan: ``a (la N)``, ``b (B l N)``, ``s0 (B N)``, ``out (B l N)`` contiguous, one dtype, same place."""
    Bsz, L, N = b.shape
    if Bsz * N == 0 or L == 0:
        return
    kern = _SCAN(threads_per_block, np.dtype(b.dtype).name)
    kern[Bsz * N, threads_per_block](a, b, s0, out, 1 if time_varying else 0)


def diag_scan(a, b, initial_state=None, *, threads_per_block: int = DEFAULT_THREADS):
    """All states of ``s_t = a_t * s_{t-1} + b_t``: ``a (l n)`` or ``(n)``, ``b (b l n)``, ``initial_state (b n)`` ->
    ``(b l n)``, by the chunked Kogge-Stone scan (module doc).  NumPy in: the reference's validation, NumPy out;
    CuPy in: shape/dtype/finiteness checked on the device, CuPy out."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device = _cuda.placement(b=b, a=a, initial_state=initial_state)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(b, "b", (None, None, None))
        bsz, L, n = b.shape
        if a.ndim not in (1, 2):
            raise ValueError(f"a: expected shape (n) or (l n) with (l, n) = {(L, n)} from b, got {tuple(a.shape)}")
        _cuda.check_device_array(a, "a", (n,) if a.ndim == 1 else (L, n))
        if initial_state is not None:
            _cuda.check_device_array(initial_state, "initial_state", (bsz, n))
        cdt = np.result_type(_cuda.working_dtype(a, b, initial_state), np.complex64)
        for name, arr in (("a", a), ("b", b), ("initial_state", initial_state)):
            if arr is not None:
                _cuda.check_device_finite(arr, name)
        tv = a.ndim == 2
        a_ = _cuda.prepare(xp, a if tv else a[None], cdt)
        s0 = xp.zeros((bsz, n), dtype=cdt) if initial_state is None else _cuda.prepare(xp, initial_state, cdt)
        b_ = _cuda.prepare(xp, b, cdt)
    else:
        xp = np
        a_, b_, s0 = reference._diag_scan_args(a, b, initial_state)
        tv = not (a_.ndim == 2 and a_.shape[0] > 0 and a_.strides[0] == 0)  # (n) was broadcast to (l n)
        a_ = np.ascontiguousarray(a_ if tv else a_[:1])
        b_ = np.ascontiguousarray(b_)
        s0 = np.ascontiguousarray(s0)
        cdt = b_.dtype
    out = _cuda.zeros(b_.shape, cdt, device)
    _scan_states(_cuda.to_device(a_), _cuda.to_device(b_), _cuda.to_device(s0), out, time_varying=tv,
                threads_per_block=tpb)
    return _cuda.from_device(out, device)


def scan(Lambda, B_tilde, C_tilde, D, dt, u, *, method: str = "zoh", output: str, C_back=None, initial_state=None,
         return_final_state: bool = False, threads_per_block: int = DEFAULT_THREADS):
    """:func:`refimpl.ssm.s5.reference.scan`'s result with the states from the CUDA :func:`diag_scan` (NumPy inputs)."""
    check_bool(return_final_state, "return_final_state")
    tpb = _cuda.check_threads_per_block(threads_per_block)
    for name, arr in (("u", u), ("Lambda", Lambda), ("B_tilde", B_tilde), ("C_tilde", C_tilde)):
        if _cuda.on_device(arr):
            raise TypeError(f"{name}: the cuda s5_ssm takes NumPy parameters and inputs (the scan runs on the GPU), "
                            f"got a device array {type(arr).__name__}; call refimpl.ssm.s5.cuda.diag_scan for CuPy data")
    return reference._s5(lambda lam, Bu, x0: diag_scan(lam, Bu, x0, threads_per_block=tpb), Lambda, B_tilde, C_tilde,
                         D, dt, u, method, output, C_back, initial_state, return_final_state)


def lru_scan(nu_log, theta_log, gamma_log, B, C, D, u, *, initial_state=None, return_final_state: bool = False,
             threads_per_block: int = DEFAULT_THREADS):
    """:func:`refimpl.ssm.lru.reference.scan`'s result with the states from the CUDA :func:`diag_scan` (NumPy inputs)."""
    from refimpl.ssm.lru import reference as lru_ref

    tpb = _cuda.check_threads_per_block(threads_per_block)
    for name, arr in (("u", u), ("B", B), ("C", C)):
        if _cuda.on_device(arr):
            raise TypeError(f"{name}: the cuda lru_ssm takes NumPy parameters and inputs (the scan runs on the GPU), "
                            f"got a device array {type(arr).__name__}; call refimpl.ssm.s5.cuda.diag_scan for CuPy data")
    return lru_ref._lru(lambda lam, Bu, x0: diag_scan(lam, Bu, x0, threads_per_block=tpb), nu_log, theta_log,
                        gamma_log, B, C, D, u, initial_state, return_final_state)
