r"""numba.cuda kernels of Mamba-2's chunked SSD: ``ssd_scan(..., view="chunked", backend="cuda")``.

Same arguments, conventions and results as :func:`refimpl.ssm.ssd.reference.chunked`: ``dt`` through
``dt_bias``, softplus (threshold 20) and the ``dt_limit`` clamp (fused in the first kernel), ``A`` one decay
per head, ``B``/``C`` ``(b l g n)`` (head ``h`` reads group ``h // (H / g)``), ``D`` ``(h,)`` or ``(h, p)``, the
``z`` gate, ``initial_state``, ``return_final_state``, ``seq_idx`` boundaries (the state restarts where
``seq_idx`` changes); any ``L``, the last chunk short.  Chunks of ``T = chunk`` steps, ``nc = ceil(L / T)``.

The four steps (Dao & Gu 2024, Sec. 6), one kernel each:

Kernels 1, 2 and 4 run one block per ``(batch, chunk, group of heads)``: ``threadIdx.y`` is the head within the
group (as many heads as keep the block within 256 threads), ``threadIdx.x`` as below; each head's data in shared
memory is its own row.

1. :func:`_decay` -- one block per ``(batch, chunk, head)``, thread ``i`` owns position ``s + i`` of the chunk:
   ``dt_i = clamp(softplus(dt_i + dt_bias))`` and ``dA_i = dt_i A_h`` staged in shared memory (``syncthreads``),
   then the decays of position ``i`` from stable segment sums (each its own sum of the chunk's terms, no
   difference of prefix sums): ``din_i = exp(sum_{k=s}^{i} dA_k)`` (from the entering state; 0 if ``i`` is not
   in its sequence) and ``dout_i = exp(sum_{k=i+1}^{e-1} dA_k)`` (to the chunk's last position; 0 across a
   boundary).  ``G_c = din_{e-1}`` is the chunk's total decay.
2. :func:`_chunk_state` -- one block per ``(batch, chunk, head)``, threads over the ``p * n`` state entries
   (strided): ``U_c[q, m] = sum_j dout_j (dt_j x_j[q]) B_j[m]`` (the chunk's own contribution to its last
   state, zero entering state).
3. :func:`_state_passing` -- one thread per ``(batch, head, q, m)`` state entry, sequential over chunks:
   ``S_{c+1} = G_c S_c + U_c`` from ``S_0 = initial_state``; writes ``S_c`` (the state entering chunk ``c``)
   and the final state.
4. :func:`_chunk_scan` -- one block per ``(batch, chunk, head)``, thread ``i`` owns position ``s + i``: its
   row of the masked quadratic form in a local array, ``W_ij = L_ij (C_i . B_j) dt_j`` with
   ``L_ij = exp(sum_{k=j+1}^{i} dA_k)`` (a running segment sum from ``j = i`` down, 0 across a boundary), then
   for each channel ``q``: ``Y_diag = sum_j W_ij x_j[q]`` (1), ``Y_off = din_i (S_c[q] . C_i)`` (4),
   ``y = (Y_diag + Y_off + D x) silu(z)``.  ``dt``/``dA``/``din`` of the chunk staged in shared memory first.

Rounding: the order of operations is the reference chunked view's (segment sums of ``<= T + 1`` terms, one
exp each, the ``n``-term dot products ``C . B`` and ``S C``, sums over ``<= T`` positions, one multiply-add per
chunk in the state recurrence), so the tests compare against :func:`oracles.selective.ssd_bound` with
``view="chunked"`` and the same ``chunk``.

Arrays: NumPy in -> the reference's validation, NumPy out; CuPy in -> checked on the device, CuPy out.  Real
dtypes only (float32/float64), as the reference.  Under the CUDA simulator (CI): small shapes only.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool, check_int
from refimpl.ssm.ssd import reference as ref
from refimpl.ssm.selective.reference import SOFTPLUS_THRESHOLD

__all__ = ["ssd_chunked_cuda", "DEFAULT_STATE_THREADS"]

DEFAULT_STATE_THREADS = 128
_HEAD_GROUP_THREADS = 256  # heads share a block while the block stays within this many threads


def _make_decay(T: int, HB: int, rname: str, softplus: bool, clamp: bool):
    rt = numba.from_dtype(np.dtype(rname))
    THR = SOFTPLUS_THRESHOLD
    HBT = HB * T  # shared-memory size as a compile-time constant

    @cuda.jit
    def _decay(dt, bias, A, seq, lo, hi, dte, din, dout):
        # dt, dte, din, dout: (b l h); bias, A: (h,); seq: (b l) int64 (zeros without seq_idx)
        b, l, h = dt.shape
        nc = (l + T - 1) // T
        nhg = (h + HB - 1) // HB
        blk = cuda.blockIdx.x  # this block's (batch bi, chunk ci, group of HB heads hg)
        bi = blk // (nc * nhg)
        ci = (blk // nhg) % nc
        jh = cuda.threadIdx.y  # this thread's head in the group
        hh = (blk % nhg) * HB + jh
        i = cuda.threadIdx.x  # this thread's position in the chunk
        s = ci * T
        e = s + T if s + T < l else l  # (plain comparisons: no min/max builtins in the kernels)
        t = s + i
        o = jh * T  # this head's row of the shared dA
        sdA = cuda.shared.array(HBT, rt)  # dA_k = dt_k A_h of the chunk, one row per head of the group
        ok = t < e and hh < h
        if ok:
            # dt = clamp(softplus(dt + dt_bias), lo, hi)
            x = dt[bi, t, hh] + bias[hh]
            if softplus:
                x = x if x > THR else math.log1p(math.exp(x))
            if clamp:
                if x < lo:
                    x = lo
                if x > hi:
                    x = hi
            dte[bi, t, hh] = x
            sdA[o + i] = x * A[hh]
        # the chunk's dA staged before the segment sums read it
        cuda.syncthreads()
        if ok:
            prev = seq[bi, s - 1 if s > 0 else 0]  # the entering state's sequence
            # din_i = exp(sum_{k=s}^{i} dA_k), summed from k = i down (0 outside the entering sequence)
            acc = rt(0)
            for k in range(i, -1, -1):
                acc += sdA[o + k]
            din[bi, t, hh] = math.exp(acc) if seq[bi, t] == prev else rt(0)
            # dout_i = exp(sum_{k=i+1}^{e-1} dA_k), summed from k = e-1 down (0 across a boundary)
            acc = rt(0)
            for k in range(e - 1 - s, i, -1):
                acc += sdA[o + k]
            dout[bi, t, hh] = math.exp(acc) if seq[bi, t] == seq[bi, e - 1] else rt(0)

    return _decay


def _make_chunk_state(T: int, TPB: int, HB: int):
    @cuda.jit
    def _chunk_state(x, dte, Bm, dout, U):
        # x: (b l h p); dte, dout: (b l h); Bm: (b l g n); U: (b nc h p n)
        b, l, h, p = x.shape
        n = Bm.shape[3]
        nc = (l + T - 1) // T
        nhg = (h + HB - 1) // HB
        blk = cuda.blockIdx.x  # this block's (batch bi, chunk ci, group of HB heads hg)
        bi = blk // (nc * nhg)
        ci = (blk // nhg) % nc
        hh = (blk % nhg) * HB + cuda.threadIdx.y  # this thread's head
        if hh >= h:
            return
        g = hh // (h // Bm.shape[2])  # head hh reads group hh // (H / g)
        s = ci * T
        e = s + T if s + T < l else l  # (plain comparisons: no min/max builtins in the kernels)
        # thread (r, y) owns the state entries (q, m) = divmod(r + TPB j, n) of its head
        for idx in range(cuda.threadIdx.x, p * n, TPB):
            q = idx // n
            m = idx % n
            # U_c[q, m] = sum_j dout_j (dt_j x_j[q]) B_j[m]
            acc = U[bi, ci, hh, q, m] * 0
            for j in range(s, e):
                acc += dout[bi, j, hh] * (dte[bi, j, hh] * x[bi, j, hh, q]) * Bm[bi, j, g, m]
            U[bi, ci, hh, q, m] = acc

    return _chunk_state


def _make_state_passing():
    @cuda.jit
    def _state_passing(U, din, S0, Sin, final, T):
        # U, Sin: (b nc h p n); din: (b l h); S0, final: (b h p n)
        b, nc, h, p, n = U.shape
        l = din.shape[1]
        tid = cuda.grid(1)  # this thread's state entry (bi, hh, q, m)
        if tid >= b * h * p * n:
            return
        m = tid % n
        q = (tid // n) % p
        hh = (tid // (n * p)) % h
        bi = tid // (n * p * h)
        S = S0[bi, hh, q, m]
        for c in range(nc):
            Sin[bi, c, hh, q, m] = S
            # S_{c+1} = G_c S_c + U_c,  G_c = din at the chunk's last position
            e = c * T + T if c * T + T < l else l
            S = din[bi, e - 1, hh] * S + U[bi, c, hh, q, m]
        final[bi, hh, q, m] = S

    return _state_passing


def _make_chunk_scan(T: int, HB: int, rname: str, has_z: bool):
    rt = numba.from_dtype(np.dtype(rname))
    HBT = HB * T  # shared-memory size as a compile-time constant

    @cuda.jit
    def _chunk_scan(x, dte, A, Bm, Cm, D, z, seq, din, Sin, y):
        # x, z, y: (b l h p); dte, din: (b l h); A: (h,); Bm, Cm: (b l g n); D: (h p); seq: (b l); Sin: (b nc h p n)
        b, l, h, p = x.shape
        n = Bm.shape[3]
        nc = (l + T - 1) // T
        nhg = (h + HB - 1) // HB
        blk = cuda.blockIdx.x  # this block's (batch bi, chunk ci, group of HB heads hg)
        bi = blk // (nc * nhg)
        ci = (blk // nhg) % nc
        jh = cuda.threadIdx.y  # this thread's head in the group
        hh = (blk % nhg) * HB + jh
        i = cuda.threadIdx.x  # this thread's position in the chunk
        s = ci * T
        e = s + T if s + T < l else l  # (plain comparisons: no min/max builtins in the kernels)
        t = s + i
        o = jh * T  # this head's row of the shared dA
        sdA = cuda.shared.array(HBT, rt)  # dA_k = dt_k A_h of the chunk, one row per head of the group
        if t < e and hh < h:
            sdA[o + i] = dte[bi, t, hh] * A[hh]
        # the chunk's dA staged before the segment sums read it
        cuda.syncthreads()
        if t >= e or hh >= h:
            return
        g = hh // (h // Bm.shape[2])
        W = cuda.local.array(T, rt)  # row i of the masked quadratic form
        # W_ij = L_ij (C_i . B_j) dt_j,  L_ij = exp(sum_{k=j+1}^{i} dA_k) (running sum from j = i down)
        seg = rt(0)
        for jj in range(i, -1, -1):
            j = s + jj
            cb = rt(0)
            for m in range(n):
                cb += Cm[bi, t, g, m] * Bm[bi, j, g, m]
            W[jj] = math.exp(seg) * cb * dte[bi, j, hh] if seq[bi, j] == seq[bi, t] else rt(0)
            seg += sdA[o + jj]
        dI = din[bi, t, hh]
        for q in range(p):
            # 1. Y_diag = sum_j W_ij x_j[q]
            yd = rt(0)
            for jj in range(i + 1):
                yd += W[jj] * x[bi, s + jj, hh, q]
            # 4. Y_off = din_i (S_c[q] . C_i)
            so = rt(0)
            for m in range(n):
                so += Sin[bi, ci, hh, q, m] * Cm[bi, t, g, m]
            o = yd + dI * so
            # y = (y + D x) silu(z),  silu(z) = z / (1 + exp(-z))
            o = o + D[hh, q] * x[bi, t, hh, q]
            if has_z:
                zz = z[bi, t, hh, q]
                o = o * (zz / (rt(1.0) + math.exp(-zz)))
            y[bi, t, hh, q] = o

    return _chunk_scan


_DECAY = _cuda.lazy_kernel(_make_decay)
_STATE = _cuda.lazy_kernel(_make_chunk_state)
_PASS = _cuda.lazy_kernel(_make_state_passing)
_SCAN = _cuda.lazy_kernel(_make_chunk_scan)


def _device_arguments(x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, allow_unstable):
    """The reference's checks for device (CuPy) arrays: shapes, dtypes, finiteness, ``A <= 0``, ``seq_idx``."""
    xp = _cuda.array_module(True)
    _cuda.check_device_array(x, "x", (None,) * 4, allow_complex=False)
    b, l, h, p = x.shape
    _cuda.check_device_array(dt, "dt", (b, l, h), allow_complex=False)
    _cuda.check_device_array(A, "A", (h,), allow_complex=False)
    _cuda.check_device_array(B, "B", (b, l, None, None), allow_complex=False)
    g, n = B.shape[2], B.shape[3]
    if g < 1 or h % g:
        raise ValueError(f"B: the number of groups g = {g} (shape {tuple(B.shape)}, layout (b, l, g, n)) must "
                         f"divide the number of heads h = {h}")
    _cuda.check_device_array(C, "C", (b, l, g, n), allow_complex=False)
    if D is not None:
        _cuda.check_device_array(D, "D", (h,) if D.ndim == 1 else (h, p), allow_complex=False)
    if z is not None:
        _cuda.check_device_array(z, "z", (b, l, h, p), allow_complex=False)
    if dt_bias is not None:
        _cuda.check_device_array(dt_bias, "dt_bias", (h,), allow_complex=False)
    if initial_state is not None:
        _cuda.check_device_array(initial_state, "initial_state", (b, h, p, n), allow_complex=False)
    for name, X in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("dt_bias", dt_bias),
                    ("initial_state", initial_state)):
        if X is not None:
            _cuda.check_device_finite(X, name)
    if not allow_unstable and A.size and bool((A > 0).any()):
        raise ValueError("A: expected A <= 0 (decaying heads); pass allow_unstable=True")
    if seq_idx is not None:
        if np.dtype(seq_idx.dtype).kind not in "iu":
            raise TypeError(f"seq_idx: expected an integer array, got dtype {seq_idx.dtype}")
        if tuple(seq_idx.shape) != (b, l):
            raise ValueError(f"seq_idx: expected shape {(b, l)}, got {tuple(seq_idx.shape)}")
        if l > 1 and bool((xp.diff(seq_idx, axis=1) < 0).any()):
            raise ValueError("seq_idx: expected non-decreasing sequence indices along l")
    dtype = _cuda.working_dtype(x, dt, A, B, C, D, z, dt_bias, initial_state, allow_complex=False)
    return dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_state=initial_state,
                seq_idx=seq_idx, dtype=dtype, b=b, l=l, h=h, p=p, n=n, g=g)


def ssd_chunked_cuda(x, dt, A, B, C, D=None, z=None, *, chunk: int = 64, dt_bias=None, dt_softplus: bool = False,
                     dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, return_final_state: bool = False,
                     allow_unstable: bool = False, state_threads: int = DEFAULT_STATE_THREADS,
                     heads_per_block=None):
    """Mamba-2's four kernels (module doc); arguments and results as :func:`refimpl.ssm.ssd.reference.chunked`.

    ``chunk``: the chunk length ``T`` (also the threads per block of kernels 1 and 4, ``<= 1024``);
    ``state_threads``: the threads per block of the chunk-state kernel (2) and the state-passing kernel (3);
    ``heads_per_block``: the heads sharing a block in kernels 1, 2, 4 (``None``: as many as keep the block
    within 256 threads).  The launch sizes change the schedule only, never the result.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    T = _cuda.check_threads_per_block(chunk, "chunk")
    TPB = _cuda.check_threads_per_block(state_threads, "state_threads")
    if heads_per_block is not None:
        heads_per_block = check_int(heads_per_block, "heads_per_block", minimum=1)
    return_final_state = check_bool(return_final_state, "return_final_state")
    dt_softplus = check_bool(dt_softplus, "dt_softplus")
    allow_unstable = check_bool(allow_unstable, "allow_unstable")
    lo, hi = ref._check_limit(dt_limit)
    device = _cuda.placement(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_state=initial_state,
                             seq_idx=seq_idx)
    if device:
        a = _device_arguments(x, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, allow_unstable)
        xp = _cuda.array_module(True)
        eff = a["dt"] + (0 if dt_bias is None else dt_bias)
        if dt_softplus:
            eff = xp.where(eff > SOFTPLUS_THRESHOLD, eff, xp.log1p(xp.exp(xp.minimum(eff, SOFTPLUS_THRESHOLD))))
        eff = xp.clip(eff, lo, hi)
        if eff.size and not bool(xp.isfinite(eff).all()):
            raise ValueError("dt: the effective step is not finite")
        if not allow_unstable and eff.size and bool((eff < 0).any()):
            raise ValueError("dt: expected the effective step (dt + dt_bias, softplus, clamp) >= 0; use "
                             "dt_softplus=True or pass allow_unstable=True")
    else:
        xp = np
        # the reference's validation (it also computes and checks the effective dt; the kernel recomputes it)
        pr = ref.prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                         initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
        a = dict(x=pr.x, dt=np.asarray(dt), A=pr.A, B=np.asarray(B), C=np.asarray(C), D=pr.D, z=pr.z,
                 dt_bias=None if dt_bias is None else np.asarray(dt_bias), initial_state=pr.initial_state, seq_idx=pr.seq_idx, dtype=pr.dtype, b=pr.b,
                 l=pr.l, h=pr.h, p=pr.p, n=pr.n, g=pr.g)
    dtype = np.dtype(a["dtype"])
    b, l, h, p, n = a["b"], a["l"], a["h"], a["p"], a["n"]
    prep = lambda v: _cuda.prepare(xp, v, dtype)  # noqa: E731
    S0 = xp.zeros((b, h, p, n), dtype=dtype) if a["initial_state"] is None else prep(a["initial_state"])
    if l == 0 or b * h == 0:
        yv = xp.zeros((b, l, h, p), dtype=dtype)
        return (yv, S0.copy()) if return_final_state else yv
    Dm = a["D"]
    Dhp = xp.zeros((h, p), dtype=dtype) if Dm is None else (
        xp.broadcast_to(prep(Dm)[:, None], (h, p)) if Dm.ndim == 1 else prep(Dm))
    bias = xp.zeros(h, dtype=dtype) if a["dt_bias"] is None else prep(a["dt_bias"])
    zz = xp.zeros((1, 1, 1, 1), dtype=dtype) if a["z"] is None else prep(a["z"])
    seq = xp.zeros((b, l), dtype=np.int64) if a["seq_idx"] is None else xp.ascontiguousarray(
        a["seq_idx"].astype(np.int64))
    dv = _cuda.to_device
    xd, dtd, Ad, Bd, Cd = (dv(prep(a[k])) for k in ("x", "dt", "A", "B", "C"))
    biasd, Dd, zd, seqd, S0d = dv(bias), dv(xp.ascontiguousarray(Dhp)), dv(zz), dv(seq), dv(S0)
    nc = -(-l // T)
    dte = _cuda.zeros((b, l, h), dtype, device)
    din = _cuda.zeros((b, l, h), dtype, device)
    dout = _cuda.zeros((b, l, h), dtype, device)
    U = _cuda.zeros((b, nc, h, p, n), dtype, device)
    Sin = _cuda.zeros((b, nc, h, p, n), dtype, device)
    final = _cuda.zeros((b, h, p, n), dtype, device)
    y = _cuda.zeros((b, l, h, p), dtype, device)
    clamp = not (lo == 0.0 and hi == math.inf)
    # kernels 1, 2, 4: one block per (batch, chunk, group of HB heads), the heads on threadIdx.y; at most
    # _HEAD_GROUP_THREADS threads per block from the grouping (kernel 4 keeps a row of T weights per thread)
    HB = max(1, min(h, _HEAD_GROUP_THREADS // T)) if heads_per_block is None else min(h, heads_per_block)
    if T * HB > _cuda.MAX_THREADS_PER_BLOCK:
        raise ValueError(f"heads_per_block: the block has chunk * heads_per_block threads, expected <= "
                         f"{_cuda.MAX_THREADS_PER_BLOCK}, got {T} * {HB} = {T * HB}")
    blocks = b * nc * (-(-h // HB))
    _DECAY(T, HB, dtype.name, dt_softplus, clamp)[blocks, (T, HB)](dtd, biasd, Ad, seqd, dtype.type(lo),
                                                       dtype.type(hi if hi != math.inf else np.finfo(dtype).max),
                                                       dte, din, dout)
    if p * n:
        # no idle threads: at most one per state entry (per block), one per (batch, head, entry) in all
        tpb2 = min(TPB, p * n)
        HB2 = max(1, min(h, _HEAD_GROUP_THREADS // tpb2)) if heads_per_block is None else HB
        if tpb2 * HB2 > _cuda.MAX_THREADS_PER_BLOCK:
            HB2 = max(1, _cuda.MAX_THREADS_PER_BLOCK // tpb2)
        _STATE(T, tpb2, HB2)[b * nc * (-(-h // HB2)), (tpb2, HB2)](xd, dte, Bd, dout, U)
        tpb3 = min(TPB, b * h * p * n)
        _PASS()[_cuda.blocks_for(b * h * p * n, tpb3), tpb3](U, din, S0d, Sin, final, T)
    if p:
        _SCAN(T, HB, dtype.name, a["z"] is not None)[blocks, (T, HB)](xd, dte, Ad, Bd, Cd, Dd, zd, seqd, din, Sin, y)
    y, final = _cuda.from_device(y, device), _cuda.from_device(final, device)
    return (y, final) if return_final_state else y
