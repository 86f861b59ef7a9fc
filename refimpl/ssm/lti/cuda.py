r"""numba.cuda kernels for the discrete LTI SSM (the GPU twins of :mod:`refimpl.ssm.lti.reference`).

``h_t = A_bar h_{t-1} + B_bar x_t``, ``y_t = C h_t + D x_t``; shapes as the reference: ``A_bar (d n)`` (diagonal)
or ``(d n n)``, ``B_bar (d n m)``, ``C (d p n)``, ``D (d p m)`` or None, ``x (b l d m)``, states ``(b d n)``.

Kernels and their thread mapping (``threads_per_block`` is a keyword everywhere, so the simulator tests use small
blocks):

* :func:`recurrent_diag` / :func:`recurrent_dense` (view ``recurrent``) -- one thread per ``(batch, channel)``;
  the ``n <= 64`` states live in a per-thread local array (registers / local memory), time runs serially.
* :func:`kernel` -- ``K_k = C A_bar^k B_bar``: one thread per ``(channel, k)`` (all ``p x m`` entries of ``K_k``);
  diagonal: ``A_bar^k`` by binary powering (``<= 2 log2 k`` products, within the reference's ``k``-product depth);
  dense: ``k`` matrix-vector products ``v <- A_bar v`` per column of ``B_bar`` in local arrays.
* :func:`causal_conv` (view ``convolution``) -- ``y_t = sum_{k<=t} K_k x_{t-k} + D x_t``: one thread per
  ``(batch, t, channel)`` output row (all ``p`` outputs).
* :func:`fft_conv` (view ``fft``) -- the FFTs are ``cupy.fft`` on a device; **under the simulator they are
  ``numpy.fft`` on the host** and only the pointwise spectrum product ``Y_f = sum_m K_f[p, m] X_f[m]`` is a CUDA
  kernel (one thread per ``(batch, frequency, channel)``).
* :func:`scan` (view ``scan``, diagonal, time-varying allowed) -- three kernels: ``b_t = B_bar_t x_t`` (one thread
  per ``(batch, t, channel)``), the chunked Kogge-Stone scan of :mod:`refimpl.ssm.s5.cuda` over the ``d n``
  independent recurrences (each recurrence ``(batch, channel, state)`` one lane of a block: a block holds up to 32
  consecutive ``(channel, state)`` lanes of one batch row -- coalesced loads -- and its ``y`` threads span a chunk
  of time; pairs ``(a, b)`` in shared memory, the carry passed between chunks), and the readout
  ``y_t = C h_t + D x_t`` (one thread per ``(batch, t, channel)``).

Arrays: NumPy in -> the reference's validation, copied to the device once, NumPy out; CuPy in (anything with
``__cuda_array_interface__`` that is not NumPy) -> shape/dtype/finiteness checked on the device, CuPy out.  The
convolution views' initial/final-state terms use the same :func:`kernel` (as the Numba backend does) plus array
expressions of the array module (``cupy`` on a device).  In CI every kernel runs under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, root ``conftest.py``) on small shapes.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import cuda

from refimpl import _cuda
from refimpl._validate import check_bool, check_int

__all__ = ["recurrent", "recurrent_diag", "recurrent_dense", "kernel", "causal_conv", "fft_conv", "convolution",
           "convolution_fft", "scan", "MAX_N"]

MAX_N = 64  # states per thread kept in a local array (recurrent views, dense kernel)
DEFAULT_THREADS = 128


# ============================================================================================ kernels

def _make_recurrent(dtype_name: str, diagonal: bool):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    # (A_bar h)_i: chosen here, in Python, so each compiled kernel indexes A_bar with its own rank
    if diagonal:
        @cuda.jit(device=True)
        def _A_row(A_bar, c, i, s, n):
            return A_bar[c, i] * s[i]
    else:
        @cuda.jit(device=True)
        def _A_row(A_bar, c, i, s, n):
            acc = nbt(0)
            for r in range(n):
                acc += A_bar[c, i, r] * s[r]
            return acc

    @cuda.jit
    def _recurrence(A_bar, B_bar, C, D, x, s0, y, hL):
        # thread -> (batch bi, channel c); its state h (n) in a local array; time serial
        b, l, nd, m = x.shape
        n = B_bar.shape[1]
        p = C.shape[1]
        tid = cuda.grid(1)
        if tid >= b * nd:
            return
        bi = tid // nd
        c = tid % nd
        s = cuda.local.array(MAX_N, nbt)
        sn = cuda.local.array(MAX_N, nbt)
        for i in range(n):
            s[i] = s0[bi, c, i]
        for t in range(l):
            # h_t = A_bar h_{t-1} + B_bar x_t   (diagonal: A_bar[c, i] s_i; dense: sum_r A_bar[c, i, r] s_r)
            for i in range(n):
                acc = _A_row(A_bar, c, i, s, n)
                for j in range(m):
                    acc += B_bar[c, i, j] * x[bi, t, c, j]
                sn[i] = acc
            for i in range(n):
                s[i] = sn[i]
            # y_t = C h_t + D x_t
            for q in range(p):
                acc = nbt(0)
                for i in range(n):
                    acc += C[c, q, i] * s[i]
                for j in range(m):
                    acc += D[c, q, j] * x[bi, t, c, j]
                y[bi, t, c, q] = acc
        for i in range(n):
            hL[bi, c, i] = s[i]

    return _recurrence


def _make_kernel(dtype_name: str, diagonal: bool):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _lti_kernel_diag(A_bar, B_bar, C, K):
        # thread -> (channel c, lag k); computes K_k[c] (p m) = C[c] diag(A_bar[c])^k B_bar[c]
        L, d, p, m = K.shape
        n = B_bar.shape[1]
        tid = cuda.grid(1)
        if tid >= d * L:
            return
        c = tid // L
        k = tid % L
        v = cuda.local.array(MAX_N, nbt)  # A_bar_i^k, in local memory
        # A_bar_i^k by binary powering: <= 2 floor(log2 k) products
        for i in range(n):
            base = A_bar[c, i]
            pw = nbt(1)
            e = k
            while e > 0:
                if e & 1:
                    pw = pw * base
                e >>= 1
                if e > 0:
                    base = base * base
            v[i] = pw
        for q in range(p):
            for j in range(m):
                # K_k[q, j] = sum_i C[q, i] (A_bar_i^k B_bar[i, j])
                acc = nbt(0)
                for i in range(n):
                    acc += C[c, q, i] * (v[i] * B_bar[c, i, j])
                K[k, c, q, j] = acc

    @cuda.jit
    def _lti_kernel_dense(A_bar, B_bar, C, K):
        # thread -> (channel c, lag k); per column j of B_bar: v = A_bar^k B_bar[:, j] by k matrix-vector products
        L, d, p, m = K.shape
        n = B_bar.shape[1]
        tid = cuda.grid(1)
        if tid >= d * L:
            return
        c = tid // L
        k = tid % L
        v = cuda.local.array(MAX_N, nbt)  # A_bar^r B_bar[:, j]
        w = cuda.local.array(MAX_N, nbt)  # the next product
        for j in range(m):
            for i in range(n):
                v[i] = B_bar[c, i, j]
            # v <- A_bar v, k times: v = A_bar^k B_bar[:, j]
            for r in range(k):
                for i in range(n):
                    acc = nbt(0)
                    for s in range(n):
                        acc += A_bar[c, i, s] * v[s]
                    w[i] = acc
                for i in range(n):
                    v[i] = w[i]
            for q in range(p):
                # K_k[q, j] = C[q, :] . (A_bar^k B_bar[:, j])
                acc = nbt(0)
                for i in range(n):
                    acc += C[c, q, i] * v[i]
                K[k, c, q, j] = acc

    return _lti_kernel_diag if diagonal else _lti_kernel_dense


def _make_conv(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _causal_conv(K, x, D, y):
        # thread -> (batch bi, time t, channel c): y_t[c, :] = sum_{k<=t} K_k[c] x_{t-k}[c] + D[c] x_t[c]
        b, l, d, m = x.shape
        p = K.shape[2]
        tid = cuda.grid(1)
        if tid >= b * l * d:
            return
        bi = tid // (l * d)
        t = (tid // d) % l
        c = tid % d
        for q in range(p):
            acc = nbt(0)
            for k in range(t + 1):
                for j in range(m):
                    acc += K[k, c, q, j] * x[bi, t - k, c, j]
            for j in range(m):
                acc += D[c, q, j] * x[bi, t, c, j]
            y[bi, t, c, q] = acc

    return _causal_conv


def _make_spectrum(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _spectrum_product(Kf, Xf, Yf):
        # thread -> (batch bi, frequency f, channel c): Y_f[c, q] = sum_j K_f[c, q, j] X_f[c, j]
        b, nf, d, m = Xf.shape
        p = Kf.shape[2]
        tid = cuda.grid(1)
        if tid >= b * nf * d:
            return
        bi = tid // (nf * d)
        f = (tid // d) % nf
        c = tid % d
        for q in range(p):
            acc = nbt(0)
            for j in range(m):
                acc += Kf[f, c, q, j] * Xf[bi, f, c, j]
            Yf[bi, f, c, q] = acc

    return _spectrum_product


def _make_input_term(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _input_term(B_bar, x, bb, tvb):
        # thread -> (batch bi, time t, channel c): b_t[c, i] = sum_j B_bar_t[c, i, j] x_t[c, j]
        # B_bar (lb d n m) with lb = l (tvb = 1) or 1 (tvb = 0); bb (b l d n)
        b, l, d, m = x.shape
        n = B_bar.shape[2]
        tid = cuda.grid(1)
        if tid >= b * l * d:
            return
        bi = tid // (l * d)
        t = (tid // d) % l
        c = tid % d
        for i in range(n):
            acc = nbt(0)
            for j in range(m):
                acc += B_bar[t * tvb, c, i, j] * x[bi, t, c, j]
            bb[bi, t, c, i] = acc

    return _input_term


def _make_readout(dtype_name: str):
    nbt = numba.from_dtype(np.dtype(dtype_name))

    @cuda.jit
    def _readout(C, D, h, x, y):
        # thread -> (batch bi, time t, channel c): y_t[c, q] = sum_i C[c, q, i] h_t[c, i] + sum_j D[c, q, j] x_t[c, j]
        b, l, d, m = x.shape
        n = h.shape[3]
        p = C.shape[1]
        tid = cuda.grid(1)
        if tid >= b * l * d:
            return
        bi = tid // (l * d)
        t = (tid // d) % l
        c = tid % d
        for q in range(p):
            acc = nbt(0)
            for i in range(n):
                acc += C[c, q, i] * h[bi, t, c, i]
            for j in range(m):
                acc += D[c, q, j] * x[bi, t, c, j]
            y[bi, t, c, q] = acc

    return _readout


_RECURRENT = _cuda.lazy_kernel(_make_recurrent)
_KERNEL = _cuda.lazy_kernel(_make_kernel)
_CONV = _cuda.lazy_kernel(_make_conv)
_SPECTRUM = _cuda.lazy_kernel(_make_spectrum)
_INPUT_TERM = _cuda.lazy_kernel(_make_input_term)
_READOUT = _cuda.lazy_kernel(_make_readout)


# ============================================================================================ validation

def _system(A_bar, B_bar, C, D, x, initial_state, *, diagonal, time_varying_ok, view):
    """``(device, xp, A_bar, B_bar, C, D, x, s0, dims)``: validated, in the working dtype, contiguous, in ``xp``."""
    device = _cuda.placement(x=x, A_bar=A_bar, B_bar=B_bar, C=C, D=D, initial_state=initial_state)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(x, "x", (None,) * 4)
        b, l, d, m = x.shape
        tv = A_bar.ndim == (3 if diagonal else 4)
        if tv and not time_varying_ok:
            raise ValueError(f"A_bar: the {view} view needs a time-invariant system, got a time-varying A_bar of "
                             f"shape {tuple(A_bar.shape)}")
        n = A_bar.shape[-1]
        core = (n,) if diagonal else (n, n)
        _cuda.check_device_array(A_bar, "A_bar", ((l, d) if tv else (d,)) + core)
        _cuda.check_device_array(B_bar, "B_bar", (l, d, n, m) if B_bar.ndim == 4 else (d, n, m))
        if B_bar.ndim == 4 and not tv:
            raise ValueError(f"B_bar: a time-varying B_bar {tuple(B_bar.shape)} needs a time-varying A_bar")
        _cuda.check_device_array(C, "C", (d, None, n))
        p = C.shape[1]
        if D is not None:
            _cuda.check_device_array(D, "D", (d, p, m))
        if initial_state is not None:
            _cuda.check_device_array(initial_state, "initial_state", (b, d, n))
        dtype = _cuda.working_dtype(A_bar, B_bar, C, D, x, initial_state)
        for name, a in (("x", x), ("A_bar", A_bar), ("B_bar", B_bar), ("C", C), ("D", D),
                        ("initial_state", initial_state)):
            if a is not None:
                _cuda.check_device_finite(a, name)
        dims = dict(b=b, l=l, d=d, n=n, m=m, p=p, tv=tv)
    else:
        from refimpl.ssm.lti.reference import validate_system

        A_bar, B_bar, C, D, x, initial_state, dims = validate_system(
            A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal, time_varying_ok=time_varying_ok,
            view=f"cuda {view}")
        xp = np
        dtype = _cuda.working_dtype(x)
    prep = lambda a: None if a is None else _cuda.prepare(xp, a, dtype)  # noqa: E731
    return device, xp, prep(A_bar), prep(B_bar), prep(C), prep(D), prep(x), prep(initial_state), dims


def _check_n(n: int) -> None:
    if n > MAX_N:
        raise ValueError(f"A_bar: the CUDA kernel keeps the state in registers, expected n <= {MAX_N}, got {n}")


def _zeros_or(xp, a, shape, dtype):
    return xp.zeros(shape, dtype=dtype) if a is None else a


# ============================================================================================ recurrent

def _recurrent(A_bar, B_bar, C, D, x, initial_state, return_final_state, threads_per_block, diagonal):
    return_final_state = check_bool(return_final_state, "return_final_state")
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device, xp, A_bar, B_bar, C, D, x, s0, dims = _system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                          time_varying_ok=False, view="recurrent")
    b, l, d, m, n, p = (dims[k] for k in "bldmnp")
    _check_n(n)
    dtype = x.dtype
    D = _zeros_or(xp, D, (d, p, m), dtype)
    s0 = _zeros_or(xp, s0, (b, d, n), dtype)
    y = _cuda.zeros((b, l, d, p), dtype, device)
    hL = _cuda.to_device(s0.copy())
    if b * d:
        kern = _RECURRENT(np.dtype(dtype).name, diagonal)
        dev = _cuda.to_device
        kern[_cuda.grid_1d(b * d, tpb)](dev(A_bar), dev(B_bar), dev(C), dev(D), dev(x), dev(s0), y, hL)
    y, hL = _cuda.from_device(y, device), _cuda.from_device(hL, device)
    return (y, hL) if return_final_state else y


def recurrent_diag(A_bar, B_bar, C, D, x, *, initial_state=None, return_final_state: bool = False,
                   threads_per_block: int = DEFAULT_THREADS):
    """Diagonal LTI recurrence on the GPU; same shapes and result as
    :func:`refimpl.ssm.lti.reference.recurrent` with ``diagonal=True`` (time-invariant systems).

    ``A_bar (d n)``, ``B_bar (d n m)``, ``C (d p n)``, ``D (d p m)`` or None, ``x (b l d m)``,
    ``initial_state (b d n)`` or None; returns ``y (b l d p)`` (and the final state ``(b d n)``).
    One thread per ``(batch, channel)``, ``n <= 64`` states in a local array.
    """
    return _recurrent(A_bar, B_bar, C, D, x, initial_state, return_final_state, threads_per_block, True)


def recurrent_dense(A_bar, B_bar, C, D, x, *, initial_state=None, return_final_state: bool = False,
                    threads_per_block: int = DEFAULT_THREADS):
    """Dense LTI recurrence (``A_bar (d n n)``) on the GPU; as :func:`recurrent_diag` otherwise."""
    return _recurrent(A_bar, B_bar, C, D, x, initial_state, return_final_state, threads_per_block, False)


def recurrent(A_bar, B_bar, C, D, x, *, diagonal: bool = False, initial_state=None, return_final_state: bool = False,
              threads_per_block: int = DEFAULT_THREADS):
    """The ``recurrent`` view (backend ``cuda``): :func:`recurrent_diag` or :func:`recurrent_dense`."""
    diagonal = check_bool(diagonal, "diagonal")
    return _recurrent(A_bar, B_bar, C, D, x, initial_state, return_final_state, threads_per_block, diagonal)


# ============================================================================================ convolution

def _kernel_prepared(device, A_bar, B_bar, C, L, diagonal, tpb):
    """``K (L d p m)`` from validated arrays (``B_bar (d n m)``, ``C (d p n)``) in one dtype."""
    d, n, m = B_bar.shape
    p = C.shape[1]
    _check_n(n)
    K = _cuda.zeros((L, d, p, m), B_bar.dtype, device)
    if L * d * p * m:
        kern = _KERNEL(np.dtype(B_bar.dtype).name, diagonal)
        dev = _cuda.to_device
        kern[_cuda.grid_1d(d * L, tpb)](dev(A_bar), dev(B_bar), dev(C), K)
    return _cuda.from_device(K, device)


def kernel(A_bar, B_bar, C, L: int, *, diagonal: bool = False, threads_per_block: int = DEFAULT_THREADS):
    """``K_k = C A_bar^k B_bar`` (``k < L``): ``(l d p m)``; same as :func:`refimpl.ssm.lti.reference.kernel`.
    One thread per ``(channel, k)``."""
    diagonal = check_bool(diagonal, "diagonal")
    tpb = _cuda.check_threads_per_block(threads_per_block)
    L = check_int(L, "L", minimum=0)
    if _cuda.on_device(A_bar) or _cuda.on_device(B_bar) or _cuda.on_device(C):
        # a zero-length input carries d and m for the shared validation
        xp = _cuda.array_module(True)
        x0 = xp.zeros((1, 0, B_bar.shape[0], B_bar.shape[-1]), dtype=np.float32)
        device, xp, A_bar, B_bar, C, _, _, _, _ = _system(A_bar, B_bar, C, None, x0, None, diagonal=diagonal,
                                                          time_varying_ok=False, view="kernel")
    else:
        from refimpl.ssm.lti.reference import validate_kernel_args

        A_bar, B_bar, C, L, _ = validate_kernel_args(A_bar, B_bar, C, L, diagonal)
        device = False
        dt = _cuda.working_dtype(A_bar, B_bar, C)
        A_bar, B_bar, C = (np.ascontiguousarray(a.astype(dt, copy=False)) for a in (A_bar, B_bar, C))
    return _kernel_prepared(device, A_bar, B_bar, C, L, diagonal, tpb)


def _conv_args(K, x, D):
    device = _cuda.placement(x=x, K=K, D=D)
    if device:
        xp = _cuda.array_module(True)
        _cuda.check_device_array(x, "x", (None,) * 4)
        b, l, d, m = x.shape
        _cuda.check_device_array(K, "K", (None, d, None, m))
        if K.shape[0] < l:
            raise ValueError(f"K: expected shape (>= {l}, {d}, p, {m}) (l, d, p, m) for x of shape {tuple(x.shape)}, "
                             f"got {tuple(K.shape)}")
        if D is not None:
            _cuda.check_device_array(D, "D", (d, K.shape[2], m))
        dtype = _cuda.working_dtype(K, x, D)
        for name, a in (("K", K), ("x", x), ("D", D)):
            if a is not None:
                _cuda.check_device_finite(a, name)
    else:
        from refimpl.ssm.lti.reference import validate_conv

        K, x, D, dtype = validate_conv(K, x, D)
        xp = np
        dtype = _cuda.working_dtype(K, x, D)
    prep = lambda a: None if a is None else _cuda.prepare(xp, a, dtype)  # noqa: E731
    return device, xp, prep(K), prep(x), prep(D), dtype


def causal_conv(K, x, D=None, *, threads_per_block: int = DEFAULT_THREADS):
    """Direct causal convolution ``y_t = sum_{k<=t} K_k x_{t-k} + D x_t``; as :func:`refimpl.ssm.lti.reference.causal_conv`.
    One thread per ``(batch, t, channel)``."""
    tpb = _cuda.check_threads_per_block(threads_per_block)
    device, xp, K, x, D, dtype = _conv_args(K, x, D)
    b, l, d, m = x.shape
    p = K.shape[2]
    D = _zeros_or(xp, D, (d, p, m), dtype)
    y = _cuda.zeros((b, l, d, p), dtype, device)
    if b * l * d * p:
        dev = _cuda.to_device
        _CONV(np.dtype(dtype).name)[_cuda.grid_1d(b * l * d, tpb)](dev(K[:l]), dev(x), dev(D), y)
    return _cuda.from_device(y, device)


def fft_conv(K, x, D=None, *, threads_per_block: int = DEFAULT_THREADS):
    """Causal convolution by FFT of length :func:`refimpl.ssm.lti.reference.fft_length` ``(l)``; as
    :func:`refimpl.ssm.lti.reference.fft_conv`.  FFTs: ``cupy.fft`` on a device, ``numpy.fft`` on the host under the
    simulator; the spectrum product ``Y_f = sum_m K_f X_f`` is a CUDA kernel (one thread per (batch, f, channel))."""
    from refimpl.ssm.lti.reference import fft_length

    tpb = _cuda.check_threads_per_block(threads_per_block)
    device, xp, K, x, D, dtype = _conv_args(K, x, D)
    b, l, d, m = x.shape
    p = K.shape[2]
    if l == 0:
        return xp.zeros((b, 0, d, p), dtype=dtype)
    n_fft = fft_length(l)
    is_complex = np.dtype(dtype).kind == "c"
    fwd, inv = (xp.fft.fft, xp.fft.ifft) if is_complex else (xp.fft.rfft, xp.fft.irfft)
    cdt = np.result_type(dtype, np.complex64)
    Kf = xp.ascontiguousarray(fwd(K[:l], n=n_fft, axis=0).astype(cdt, copy=False))  # (f d p m)
    Xf = xp.ascontiguousarray(fwd(x, n=n_fft, axis=1).astype(cdt, copy=False))  # (b f d m)
    nf = Xf.shape[1]
    Yf = _cuda.zeros((b, nf, d, p), cdt, device)
    if b * nf * d * p:
        dev = _cuda.to_device
        _SPECTRUM(np.dtype(cdt).name)[_cuda.grid_1d(b * nf * d, tpb)](dev(Kf), dev(Xf), Yf)
    Yf = _cuda.from_device(Yf, device)
    # y = ifft(Y)[:l]  (+ D x_t)
    y = inv(Yf, n=n_fft, axis=1)[:, :l].astype(dtype, copy=False)
    if D is not None:
        y = y + xp.einsum("dpm,bldm->bldp", D, x)
    return xp.ascontiguousarray(y)


def _convolution_view(conv, view, A_bar, B_bar, C, D, x, initial_state, diagonal, return_final_state, tpb):
    r"""``y = K * x + D x + C A_bar^{t+1} h_{-1}`` (and ``h_{l-1}``), every kernel by :func:`kernel` (module doc)."""
    diagonal = check_bool(diagonal, "diagonal")
    return_final_state = check_bool(return_final_state, "return_final_state")
    tpb = _cuda.check_threads_per_block(tpb)
    device, xp, A_bar, B_bar, C, D, x, s0, dims = _system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                          time_varying_ok=False, view=view)
    b, l, d, n = dims["b"], dims["l"], dims["d"], dims["n"]
    _check_n(n)
    Kfn = lambda Bm, Cm, L: _kernel_prepared(device, A_bar, xp.ascontiguousarray(Bm), xp.ascontiguousarray(Cm), L,  # noqa: E731
                                             diagonal, tpb)
    # y_t = sum_{k<=t} K_k x_{t-k} + D x_t,  K_k = C A_bar^k B_bar
    y = conv(Kfn(B_bar, C, l), x, D, threads_per_block=tpb)
    As0 = None
    if s0 is not None:
        As0 = A_bar[None] * s0 if diagonal else xp.einsum("dij,bdj->bdi", A_bar, s0)
        As0 = xp.transpose(As0, (1, 2, 0))  # (d n b)
        # + C A_bar^{t+1} h_{-1}: the kernel of (A_bar, A_bar h_{-1}, C), (l d p b) -> (b l d p)
        y = y + xp.transpose(Kfn(As0, C, l), (3, 0, 1, 2))
    if not return_final_state:
        return y
    eye = xp.ascontiguousarray(xp.broadcast_to(xp.eye(n, dtype=x.dtype), (d, n, n)))
    # h_{l-1} = sum_k A_bar^k B_bar x_{l-1-k}:  A_bar^k B_bar is the kernel of (A_bar, B_bar, I)
    P = Kfn(B_bar, eye, l)
    h = xp.einsum("kdnm,bkdm->bdn", P, x[:, ::-1]).astype(x.dtype, copy=False)
    if As0 is not None:
        # + A_bar^l h_{-1}: the last entry of the kernel of (A_bar, A_bar h_{-1}, I)
        h = h + (xp.transpose(Kfn(As0, eye, l)[l - 1], (2, 0, 1)) if l else s0)
    return y, h


def convolution(A_bar, B_bar, C, D, x, *, diagonal: bool = False, initial_state=None,
                return_final_state: bool = False, threads_per_block: int = DEFAULT_THREADS):
    """The ``convolution`` view (backend ``cuda``): :func:`kernel` then :func:`causal_conv`."""
    return _convolution_view(causal_conv, "convolution", A_bar, B_bar, C, D, x, initial_state, diagonal,
                             return_final_state, threads_per_block)


def convolution_fft(A_bar, B_bar, C, D, x, *, diagonal: bool = False, initial_state=None,
                    return_final_state: bool = False, threads_per_block: int = DEFAULT_THREADS):
    """The ``fft`` view (backend ``cuda``): :func:`kernel` then :func:`fft_conv`; the final state as :func:`convolution`."""
    return _convolution_view(fft_conv, "fft", A_bar, B_bar, C, D, x, initial_state, diagonal, return_final_state,
                             threads_per_block)


# ============================================================================================ scan

def scan(A_bar, B_bar, C, D, x, *, diagonal: bool = True, initial_state=None, return_final_state: bool = False,
         threads_per_block: int = DEFAULT_THREADS):
    """The ``scan`` view (backend ``cuda``, diagonal ``A_bar``; time-varying ``A_bar (l d n)``/``B_bar (l d n m)``
    allowed): ``b_t = B_bar_t x_t``, the chunked parallel scan of :mod:`refimpl.ssm.s5.cuda` over the ``(batch,
    channel, state)`` recurrences, ``y_t = C h_t + D x_t`` (module doc)."""
    from refimpl.ssm.s5.cuda import _scan_states

    diagonal = check_bool(diagonal, "diagonal")
    return_final_state = check_bool(return_final_state, "return_final_state")
    tpb = _cuda.check_threads_per_block(threads_per_block)
    if not diagonal:
        raise ValueError("diagonal: the 'cuda' backend of view 'scan' needs a diagonal A_bar (diagonal=True), got "
                         "diagonal=False; the numpy backend scans dense systems")
    device, xp, A_bar, B_bar, C, D, x, s0, dims = _system(A_bar, B_bar, C, D, x, initial_state, diagonal=True,
                                                          time_varying_ok=True, view="scan")
    b, l, d, m, n, p, tv = (dims[k] for k in ("b", "l", "d", "m", "n", "p", "tv"))
    dtype = x.dtype
    name = np.dtype(dtype).name
    D = _zeros_or(xp, D, (d, p, m), dtype)
    s0 = _zeros_or(xp, s0, (b, d, n), dtype)
    dev = _cuda.to_device
    grid = _cuda.grid_1d(b * l * d, tpb)
    # b_t = B_bar_t x_t  -> bb (b l d n)
    tvb = B_bar.ndim == 4
    Bd = dev(B_bar if tvb else B_bar[None])
    xd = dev(x)
    bb = _cuda.zeros((b, l, d, n), dtype, device)
    if b * l * d * n:
        _INPUT_TERM(name)[grid](Bd, xd, bb, 1 if tvb else 0)
    # h_t = a_t h_{t-1} + b_t over the d n independent recurrences: (b l (d n))
    hs = _cuda.zeros((b, l, d, n), dtype, device)
    a2 = A_bar.reshape((l if tv else 1, d * n))
    _scan_states(dev(a2), bb.reshape((b, l, d * n)), dev(s0.reshape((b, d * n))), hs.reshape((b, l, d * n)),
                time_varying=tv, threads_per_block=tpb)
    # y_t = C h_t + D x_t
    y = _cuda.zeros((b, l, d, p), dtype, device)
    if b * l * d * p:
        _READOUT(name)[grid](dev(C), dev(D), hs, xd, y)
    y = _cuda.from_device(y, device)
    if not return_final_state:
        return y
    hL = _cuda.from_device(hs, device)[:, -1].copy() if l else s0.copy()
    return y, hL
