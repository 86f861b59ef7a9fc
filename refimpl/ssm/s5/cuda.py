r"""numba.cuda parallel scan of the diagonal recurrence ``s_t = a_t * s_{t-1} + b_t`` (S5, LRU, the LTI ``scan`` view).

* :func:`diag_scan` -- the GPU twin of :func:`refimpl.ssm.s5.reference.diag_scan`: ``a (l n)`` or ``(n)``,
  ``b (b l n)``, ``initial_state (b n)`` -> all states ``(b l n)`` in the working complex dtype.
* :func:`scan` -- the ``scan`` view of :func:`refimpl.ssm.s5.s5_ssm` with this kernel (backend ``cuda``);
  :func:`lru_scan` -- the ``scan`` view of :func:`refimpl.ssm.lru.lru_ssm` (backend ``cuda``).  Their
  discretization, ``B_bar u`` and readout are the reference's (NumPy inputs); only the scan runs on the GPU.
* ``_scan_states`` -- the launcher shared with :mod:`refimpl.ssm.lti.cuda` (real or complex, no validation).

Thread mapping: a block owns ``lanes`` consecutive states ``n`` of one batch row ``i`` (grid ``(ceil(N/lanes), B)``);
thread ``(x, y)`` = (lane, step): ``threadIdx.x`` picks the state (so a warp reads consecutive addresses),
``threadIdx.y = r`` the step ``t = start + r`` of the current chunk of ``T = threads_per_block`` steps.  Each
recurrence (one lane) walks the time axis in chunks of ``T`` steps.  Each
chunk is a Kogge-Stone (Hillis-Steele) inclusive scan in shared memory over the pairs ``e_t = (a_t, b_t)``
with the composition ``(a, b) o (a', b') = (a' a, a' b + b')`` (first ``e``, then ``e'``); after
``ceil(log2 T)`` rounds thread ``r`` holds ``E_t = e_start o ... o e_t = (a_t...a_start, s_t - a_t...a_start s_{start-1})``,
so ``s_t = E_t.a * carry + E_t.b`` with ``carry = s_{start-1}`` (``initial_state`` for the first chunk; the
last state of the previous chunk after that), kept in one shared-memory slot per lane.  Any ``l``: the threads past
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

DEFAULT_THREADS = 32  # steps per chunk (block y); DEFAULT_LANES states per block (block x)


def _make_scan(tpb: int, lanes: int, dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _scan(a, b, s0, out, tv):
        # a (la N) with la = l (tv = 1) or 1 (tv = 0); b (B l N); s0 (B N); out (B l N)
        # block (blockIdx.x, blockIdx.y) -> states n0 .. n0 + lanes - 1 of batch i; thread (x, y) = (lane, step r):
        # consecutive lanes read consecutive states (coalesced), the y threads of one lane scan its time axis
        Bsz, L, N = b.shape
        lane = cuda.threadIdx.x
        r = cuda.threadIdx.y
        n = cuda.blockIdx.x * lanes + lane
        i = cuda.blockIdx.y
        active = n < N
        sa = cuda.shared.array((tpb, lanes), nbt)  # the chunk's pairs (a, b): one per (step, lane)
        sb = cuda.shared.array((tpb, lanes), nbt)
        carry = cuda.shared.array(lanes, nbt)  # per lane: s_{start-1}, the state entering the chunk
        if r == 0:
            carry[lane] = s0[i, n] if active else nbt(0)
        # carry written before any thread reads it
        cuda.syncthreads()
        for start in range(0, L, tpb):
            t = start + r
            # load e_t = (a_t, b_t); past the end (or past N): the identity (1, 0)
            av = nbt(1)
            bv = nbt(0)
            if active and t < L:
                av = a[t * tv, n]
                bv = b[i, t, n]
            sa[r, lane] = av
            sb[r, lane] = bv
            # every pair of the chunk stored before round 1 reads its neighbour
            cuda.syncthreads()
            off = 1
            while off < tpb:
                # Kogge-Stone round: e_t <- e_{t-off} o e_t = (a_t a_{t-off}, a_t b_{t-off} + b_t)
                pa = nbt(1)
                pb = nbt(0)
                if r >= off:
                    pa = sa[r - off, lane]
                    pb = sb[r - off, lane]
                # all reads of this round done before any thread overwrites its slot
                cuda.syncthreads()
                if r >= off:
                    bv = av * pb + bv
                    av = av * pa
                    sa[r, lane] = av
                    sb[r, lane] = bv
                # all writes of this round visible to the next round's reads
                cuda.syncthreads()
                off *= 2
            # s_t = (a_t ... a_start) s_{start-1} + (the chunk's own part)
            h = av * carry[lane] + bv
            if active and t < L:
                out[i, t, n] = h
            # every thread has read carry before the chunk's last step replaces it
            cuda.syncthreads()
            last = L - start  # the chunk's last step: min(tpb, L - start) - 1 (no two-argument min in kernels)
            if last > tpb:
                last = tpb
            if r == last - 1:
                carry[lane] = h
            # the new carry visible before the next chunk uses it (and sa/sb are free to reuse)
            cuda.syncthreads()

    return _scan


_SCAN = _cuda.lazy_kernel(_make_scan)
DEFAULT_LANES = 32


def _scan_states(a, b, s0, out, *, time_varying: bool, threads_per_block: int, lanes: int = DEFAULT_LANES) -> None:
    """Launch the scan: ``a (la N)``, ``b (B l N)``, ``s0 (B N)``, ``out (B l N)`` contiguous, one dtype, same place.

    Blocks of ``lanes x T`` threads, ``T = min(threads_per_block, next_pow2(l))`` (at most 1024: ``lanes`` shrinks to
    fit, and to ``N``); grid ``(ceil(N / lanes), B)``.  A smaller ``T`` only lowers the rounding depth."""
    Bsz, L, N = b.shape
    if Bsz * N == 0 or L == 0:
        return
    T = min(threads_per_block, _cuda.next_pow2(L))  # no chunk longer than the sequence (fewer idle threads)
    S = max(1, min(lanes, N, _cuda.MAX_THREADS_PER_BLOCK // T))
    kern = _SCAN(T, S, np.dtype(b.dtype).name)
    kern[(_cuda.blocks_for(N, S), Bsz), (S, T)](a, b, s0, out, 1 if time_varying else 0)


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
