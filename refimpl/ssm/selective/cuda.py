r"""numba.cuda kernel of Mamba's selective scan (S6): ``selective_scan(..., view="chunked", backend="cuda")``.

Same arguments, conventions and results as :func:`refimpl.ssm.selective.reference.chunked` (chunks of ``chunk``
steps; within a chunk the parallel prefix of the ``scan`` view): ``Delta_t = softplus(delta_t + delta_bias)``, ``h_t = exp(Delta_t A) h_{t-1} + B_bar_t u_t``,
``y_t = C_t . h_t`` (``2 Re`` for complex ``A``), ``out_t = (y_t + D u_t) silu(z_t)``; every ``B``/``C`` layout
(fixed ``(d n)``, variable ``(b l n)``, grouped ``(b l g n)``), real or complex ``A`` (complex64/complex128
states), both discretizations, ``initial_state`` and ``return_final_state``.

Thread mapping
--------------
One **block per (batch bi, channel c)** (``b * d`` blocks).  The block has ``n * T`` threads,
``T = chunk``: thread ``r`` owns **state** ``k = r // T`` and **time slot** ``tt = r % T``; the block walks
the sequence in chunks of ``T`` steps, thread ``(k, tt)`` owning step ``t = start + tt`` of the state ``k``.

Per chunk (shared memory: the pairs, double-buffered ``2 n T``; the readout products ``n T``; the carry ``n``):

1. in registers: ``Delta_t = softplus(delta_t + delta_bias)`` (fused; each state's thread of slot ``tt``
   computes the same value, no staging barrier) and ``u_t``.
2. the pair ``e_t = (la_t, b_t) = (Delta_t A_k, B_bar_t u_t)`` in registers (``B_bar = Delta B`` or
   ``Delta phi1(Delta A) B``, ``phi1`` through ``expm1`` without cancellation); the state entering the chunk
   (``carry[k]``, shared) is folded into the first slot, ``b_start <- exp(la_start) carry + b_start`` (as the
   reference scan folds ``initial_state``); the pairs are stored, ``syncthreads``.
3. Kogge-Stone (Hillis-Steele) inclusive scan over the ``T`` slots of each state with the reference's
   log-space operator ``(la_i, b_i) . (la_j, b_j) = (la_i + la_j, exp(la_j) b_i + b_j)``: decay products stay
   sums of ``Delta A`` (exact logs), exponentiated once per combination.  Round ``j`` reads buffer ``j % 2``
   (the neighbour ``off = 2^j`` slots back) and writes the other, then one ``syncthreads``.  Afterwards slot
   ``tt`` holds ``h_t`` itself (in a register).
4. readout products ``C_t[k] h_t[k]`` into shared memory, and the last valid slot of each state stores its
   ``h`` as the next ``carry`` (and as the final state after the last chunk); ``syncthreads``; then thread
   ``k = 0`` of each slot sums the ``n`` products in order (``2 Re`` for complex ``A``) and writes
   ``out_t = (y_t + D u_t) silu(z_t)``.  No closing barrier is needed: the products are rewritten, and the
   carry read, only after the next chunk's first ``syncthreads``, which the summing threads reach after summing.

Slots past the end of the sequence hold the identity ``(0, 0)`` and never feed an earlier slot.

Rounding (the bound the tests use is :func:`oracles.selective.s6_bound` with ``view="scan"``): a term
``B_bar_j u_j`` of ``h_t`` in the same chunk passes ``ceil(log2(tt + 1)) <= ceil(log2 L)`` combinations (an exp
of a window sum of ``<= 2^r`` exponents, a multiply, an add), exactly the reference scan's path; the state
entering a chunk reaches slot ``tt`` through the fold and ``ceil(log2(tt + 1))`` combinations, at most
``tt + 1`` multiply-adds of the decay, i.e. no more than the ``tt + 1`` recurrence steps the running-error
analysis charges it; the readout sums ``n`` products in order (the view's ``N``).

Arrays: NumPy in -> the reference's validation, copied to the device, NumPy out; CuPy in -> shapes, dtypes,
finiteness and stability checked on the device, CuPy out.  Under the CUDA simulator (CI) every thread is a
Python thread: small shapes only.
"""
from __future__ import annotations

import cmath
import math

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool
from refimpl.ssm.selective.reference import (SOFTPLUS_THRESHOLD, _check_Delta, _checked_arguments,
                                             _delta_formula)

__all__ = ["selective_scan_cuda", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 32


def _make_s6(T: int, N: int, rname: str, sname: str, zoh: bool, softplus: bool, has_z: bool):
    """The kernel for ``T`` time slots, ``N`` states, real dtype ``rname``, state dtype ``sname`` (compile-time)."""
    rt = numba.from_dtype(np.dtype(rname))
    st = numba.from_dtype(np.dtype(sname))
    cplx = np.dtype(sname).kind == "c"
    EXP = cmath.exp if cplx else math.exp
    NT = N * T  # shared-memory sizes as compile-time constants
    NT2 = 2 * N * T
    THR = SOFTPLUS_THRESHOLD

    J = np.dtype(sname).type(1j if cplx else 0)  # the imaginary unit of the state dtype (0 for real states)

    @cuda.jit
    def _s6(u, delta, bias, A, Bk, Ck, D, z, h0, out, hL):
        # u, delta, z, out: (b l d); bias, D: (d,); A: (d n); Bk, Ck: (b|1, l|1, g, n); h0, hL: (b d n)
        b, l, d = u.shape
        blk = cuda.blockIdx.x  # this block's (batch bi, channel c)
        bi = blk // d
        c = blk % d
        r = cuda.threadIdx.x
        k = r // T  # this thread's state
        tt = r % T  # this thread's time slot in the chunk
        # the scan's pairs (la, b) per (state, slot), double-buffered: round j reads buffer j % 2, writes the other
        # (buffer j at offset j * NT)
        sla = cuda.shared.array(NT2, st)
        sb = cuda.shared.array(NT2, st)
        sy = cuda.shared.array(NT, st)  # readout products C_t[k] h_t[k]
        carry = cuda.shared.array(N, st)  # the state entering the chunk, one per state
        bB = bi if Bk.shape[0] > 1 else 0
        bC = bi if Ck.shape[0] > 1 else 0
        gB = c // (d // Bk.shape[2])  # channel c reads group c // (d / g)
        gC = c // (d // Ck.shape[2])
        a_k = A[c, k]
        if tt == 0:
            carry[k] = h0[bi, c, k]
        # carry written before any thread reads it
        cuda.syncthreads()
        for start in range(0, l, T):
            t = start + tt
            # 1. Delta_t = softplus(delta_t + delta_bias), fused (each state's thread computes its slot's own)
            Dv = rt(0)
            uv = rt(0)
            if t < l:
                x = delta[bi, t, c] + bias[c]
                if softplus:
                    Dv = x if x > THR else math.log1p(math.exp(x))
                else:
                    Dv = x
                uv = u[bi, t, c]
            # 2. e_t = (la_t, b_t) = (Delta_t A_k, B_bar_t u_t); past the end: the identity (0, 0)
            la = st(0)
            bt = st(0)
            if t < l:
                la = Dv * a_k
                Bv = Bk[bB, t if Bk.shape[1] > 1 else 0, gB, k]
                if zoh:
                    # phi1(w) = (e^w - 1)/w at w = Delta A; small |w|: 1 + w/2 + w^2/6 (no division by a tiny w);
                    # else expm1(a + ib) = expm1(a) cos b - 2 sin^2(b/2) + i e^a sin b (no cancellation near 0;
                    # for real w, b = 0 and this is expm1(a) exactly)
                    if abs(la) < 1e-5:
                        ph = 1 + la * 0.5 + la * la / 6
                    else:
                        wa = la.real
                        wb = la.imag
                        sh = math.sin(wb * 0.5)
                        em1 = st(math.expm1(wa) * math.cos(wb) - 2.0 * sh * sh) + J * st(math.exp(wa) * math.sin(wb))
                        ph = em1 / la
                    # B_bar u = Delta phi1(Delta A) B u
                    bt = (Dv * uv) * ph * Bv
                else:
                    # B_bar u = Delta B u
                    bt = (Dv * uv) * Bv
            if tt == 0:
                # fold the entering state: b_start = exp(la_start) h_{start-1} + b_start
                bt = EXP(la) * carry[k] + bt
            sla[r] = la
            sb[r] = bt
            # every pair stored before round 1 reads its neighbour (and every thread has read carry)
            cuda.syncthreads()
            # 3. Kogge-Stone over the slots of state k: e_t <- e_{t-off} . e_t
            off = 1
            cur = 0
            while off < T:
                if tt >= off:
                    # b_t = exp(la_t) b_{t-off} + b_t ;  la_t = la_{t-off} + la_t
                    pla = sla[cur * NT + r - off]
                    pb = sb[cur * NT + r - off]
                    bt = EXP(la) * pb + bt
                    la = pla + la
                # into the other buffer: no thread of this round reads it
                sla[(1 - cur) * NT + r] = la
                sb[(1 - cur) * NT + r] = bt
                # this round's writes visible to the next round's reads
                cuda.syncthreads()
                cur = 1 - cur
                off *= 2
            # 4. readout y_t = sum_k C_t[k] h_t[k]  (h_t = bt);  5. the last valid slot passes h on
            if t < l:
                sy[r] = Ck[bC, t if Ck.shape[1] > 1 else 0, gC, k] * bt
            # (no min/max builtins in the kernels: plain comparisons compile on every numba-cuda)
            if tt == (T - 1 if start + T <= l else l - start - 1):
                carry[k] = bt
                if start + T >= l:
                    hL[bi, c, k] = bt
            # every product and the new carry stored before they are read (sy is rewritten, and carry read,
            # only after the next chunk's first syncthreads, which the summing threads reach after summing)
            cuda.syncthreads()
            if k == 0 and t < l:
                acc = sy[tt]
                for kk in range(1, N):
                    acc += sy[kk * T + tt]
                if cplx:
                    y = rt(2.0) * acc.real
                else:
                    y = acc
                # out_t = (y_t + D u_t) silu(z_t),  silu(z) = z / (1 + exp(-z))
                o = y + D[c] * uv
                if has_z:
                    zz = z[bi, t, c]
                    o = o * (zz / (rt(1.0) + math.exp(-zz)))
                out[bi, t, c] = o

    return _s6


_S6 = _cuda.lazy_kernel(_make_s6)


def _as_bl_gn(X, mode: str):
    """``(b|1, l|1, g, n)`` views: fixed ``(d n)`` -> ``(1 1 d n)``, variable ``(b l n)`` -> ``(b l 1 n)``."""
    if mode == "fixed":
        return X[None, None]
    if mode == "variable":
        return X[:, :, None, :]
    return X


def _mode(X, name: str) -> str:
    return {2: "fixed", 3: "variable", 4: "grouped"}.get(X.ndim) or _bad_ndim(X, name)


def _bad_ndim(X, name):
    raise ValueError(f"{name}: expected (d, n) fixed, (b, l, n) variable or (b, l, g, n) grouped, got shape "
                     f"{tuple(X.shape)}")


def _device_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, allow_unstable):
    """The checks of the reference for device (CuPy) arrays: shapes, dtypes, finiteness, stability."""
    xp = _cuda.array_module(True)
    _cuda.check_device_array(u, "u", (None, None, None), allow_complex=False)
    b, l, d = u.shape
    _cuda.check_device_array(delta, "delta", (b, l, d), allow_complex=False)
    _cuda.check_device_array(A, "A", (d, None))
    n = A.shape[1]
    modes = {}
    for name, X in (("B", B), ("C", C)):
        mode = _mode(X, name)
        if mode == "grouped":
            g = X.shape[2]
            if g < 1 or d % g:
                raise ValueError(f"{name}: grouped layout (b, l, g, n) needs g dividing d = {d}, got g = {g}")
        shape = {"fixed": (d, n), "variable": (b, l, n), "grouped": (b, l, None, n)}[mode]
        _cuda.check_device_array(X, name, shape)
        if np.dtype(X.dtype).kind == "c" and np.dtype(A.dtype).kind != "c":
            raise TypeError(f"{name}: complex {name} ({X.dtype}) needs a complex A, got A of dtype {A.dtype}")
        modes[name] = mode
    for name, X, shape in (("D", D, (d,)), ("delta_bias", delta_bias, (d,)), ("z", z, (b, l, d))):
        if X is not None:
            _cuda.check_device_array(X, name, shape, allow_complex=False)
    if initial_state is not None:
        _cuda.check_device_array(initial_state, "initial_state", (b, d, n))
    for name, X in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        if X is not None:
            _cuda.check_device_finite(X, name)
    if not allow_unstable and A.size and bool((A.real > 0).any()):
        raise ValueError("A: expected Re(A) <= 0 (a stable selective SSM); pass allow_unstable=True to allow growth")
    dtype = _cuda.working_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    rdt = np.dtype(np.float32) if dtype in (np.complex64, np.float32) else np.dtype(np.float64)
    x = delta.astype(rdt) + (0 if delta_bias is None else delta_bias.astype(rdt))
    Delta = xp.where(x > SOFTPLUS_THRESHOLD, x, xp.log1p(xp.exp(xp.minimum(x, SOFTPLUS_THRESHOLD)))) \
        if delta_softplus else x
    if Delta.size and not bool(xp.isfinite(Delta).all()):
        raise ValueError("delta: delta + delta_bias is not finite")
    if not allow_unstable and Delta.size and bool((Delta < 0).any()):
        raise ValueError("delta: expected the step Delta >= 0; use delta_softplus=True or pass allow_unstable=True")
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state,
                B_mode=modes["B"], C_mode=modes["C"], dtype=dtype, rdt=rdt, b=b, l=l, d=d, n=n)


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False,
                        initial_state=None, return_final_state: bool = False, discretization: str = "mamba",
                        allow_unstable: bool = False, chunk: int = DEFAULT_CHUNK):
    """The S6 kernel (module doc); arguments and results as :func:`refimpl.ssm.selective.reference.chunked`.

    ``chunk``: the ``T`` time slots per chunk, one thread each per state (the block has ``n * T <= 1024``
    threads); the entry point routes its ``chunk`` here.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    T = _cuda.check_threads_per_block(chunk, "chunk")
    device = _cuda.placement(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                             initial_state=initial_state)
    if device:
        delta_softplus = check_bool(delta_softplus, "delta_softplus")
        allow_unstable = check_bool(allow_unstable, "allow_unstable")
        if discretization not in ("mamba", "zoh"):
            raise ValueError(f"discretization: expected one of ('mamba', 'zoh'), got {discretization!r}")
        p = _device_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, allow_unstable)
        xp = _cuda.array_module(True)
    else:
        p = _checked_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
                               allow_unstable)
        # the reference's checks of the step (the kernel recomputes Delta itself, fused)
        _check_Delta(_delta_formula(p["delta"], p["delta_bias"], p["delta_softplus"]), p["delta_softplus"],
                     p["allow_unstable"])
        delta_softplus = p["delta_softplus"]
        xp = np
    b, l, d, n = p["b"], p["l"], p["d"], p["n"]
    rdt, sdt = np.dtype(p["rdt"]), np.dtype(p["dtype"])
    if n * T > _cuda.MAX_THREADS_PER_BLOCK:
        raise ValueError(f"chunk: the block has n * chunk threads, expected n * chunk <= "
                         f"{_cuda.MAX_THREADS_PER_BLOCK}, got {n} * {T} = {n * T}")
    cplx = sdt.kind == "c"
    bcdt = sdt if cplx else rdt
    prep = lambda a, dt: _cuda.prepare(xp, a, dt)  # noqa: E731
    Bk = prep(_as_bl_gn(p["B"], p["B_mode"]), bcdt)
    Ck = prep(_as_bl_gn(p["C"], p["C_mode"]), bcdt)
    Dv = xp.zeros(d, dtype=rdt) if p["D"] is None else prep(p["D"], rdt)
    bias = xp.zeros(d, dtype=rdt) if p["delta_bias"] is None else prep(p["delta_bias"], rdt)
    zz = xp.zeros((1, 1, 1), dtype=rdt) if p["z"] is None else prep(p["z"], rdt)
    h0 = xp.zeros((b, d, n), dtype=sdt) if p["initial_state"] is None else prep(p["initial_state"], sdt)
    if l == 0 or b * d * n == 0:
        # nothing to launch: no steps, no channels, or no state (then y = 0 and out = (D u) silu(z), elementwise)
        out = xp.zeros((b, l, d), dtype=rdt)
        if n == 0 and out.size:
            u_ = prep(p["u"], rdt)
            out = out + Dv * u_
            if p["z"] is not None:
                out = out * (zz / (1 + xp.exp(-zz)))
        return (out, h0.copy()) if return_final_state else out
    args = [prep(p["u"], rdt), prep(p["delta"], rdt), bias, prep(p["A"], sdt), Bk, Ck, Dv, zz, h0]
    dargs = [_cuda.to_device(a) for a in args]
    out = _cuda.zeros((b, l, d), rdt, device)
    hL = _cuda.zeros((b, d, n), sdt, device)
    kern = _S6(T, n, rdt.name, sdt.name, discretization == "zoh", bool(delta_softplus), p["z"] is not None)
    kern[b * d, n * T](*dargs, out, hL)
    out, hL = _cuda.from_device(out, device), _cuda.from_device(hL, device)
    return (out, hL) if return_final_state else out
