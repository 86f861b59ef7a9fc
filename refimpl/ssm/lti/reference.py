r"""Views of the discrete linear SSM  h_t = A_bar_t h_{t-1} + B_bar_t x_t,  y_t = C h_t + D x_t.

Every view computes the same ``y`` (and final state); they differ only in
evaluation order.  This module is the literal NumPy reference: one function
per view, float64 unless the inputs are all float32.  The public entry point is
:func:`refimpl.ssm.lti.lti_ssm` (``view=``, ``backend=``); the views stay public here.

Shapes (einops style, channel axis ``d`` always present; one system is d=1)
---------------------------------------------------------------------------
* ``A_bar``: ``(d n n)`` dense or ``(d n)`` diagonal (``diagonal=True``);
  time-varying ``(l d n n)`` / ``(l d n)`` for the views that allow it
  (recurrent, scan).  Real or complex.
* ``B_bar``: ``(d n m)``, or ``(l d n m)`` time-varying (then ``A_bar`` must be too).
* ``C``: ``(d p n)``;  ``D``: ``(d p m)`` or ``None`` (no skip).
* ``x``: ``(b l d m)``;  returns ``y``: ``(b l d p)``.
* ``initial_state`` (optional): ``(b d n)``, the state *before* step 0, so
  ``h_0 = A_bar_0 initial_state + B_bar_0 x_0``; default zero.
* ``return_final_state=True`` returns ``(y, h_{l-1})`` with the final state ``(b d n)``
  (equal to ``initial_state``, or zero, when ``l = 0``).  Feeding it back as
  ``initial_state`` continues the sequence.

Output convention: ``y`` is complex when any of ``A_bar, B_bar, C, D, x`` is;
no real part is taken here (that is the structured-SSM layer's convention
to choose, e.g. S4D's ``2 Re``).

Views
-----
* :func:`recurrent` -- the literal loop over ``t``.
* :func:`convolution` -- :func:`kernel` ``K_k = C A_bar^k B_bar`` then :func:`causal_conv`
  ``y_t = sum_{k<=t} K_k x_{t-k} + D x_t`` by direct summation, plus the initial
  state's contribution ``C A_bar^{t+1} initial_state`` and the final state.
* :func:`convolution_fft` -- the same with :func:`fft_conv`: the convolution through
  ``rfft``/``fft`` of length :func:`fft_length` ``>= 2l`` (no circular wrap-around).
* :func:`scan` -- Hillis--Steele parallel prefix over pairs
  ``(a_t, b_t) = (A_bar_t, B_bar_t x_t)`` with the associative operator
  ``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (``j`` after ``i``):
  ``ceil(log2 l)`` rounds, any ``l``.
* :func:`chunked` -- the recurrence across chunks and the kernel within
  each chunk (any ``l``; the last chunk may be short).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype

__all__ = ["recurrent", "convolution", "convolution_fft", "scan", "chunked", "kernel", "causal_conv", "fft_conv",
           "fft_length", "validate_system", "validate_kernel_args", "validate_conv"]


# ---------------------------------------------------------------------------------------------- validation

def validate_system(A_bar, B_bar, C, D, x, initial_state=None, *, diagonal: bool = False,
                    time_varying_ok: bool = True, view: str = "this"):
    """Check every shape and dtype; return the arrays cast to the working dtype and the dims.

    Returns ``(A_bar, B_bar, C, D, x, initial_state, dims)`` with ``dims = dict(b, l, d, n, m, p, tv)``,
    ``tv`` True when ``A_bar`` carries a leading time axis.  ``view`` names the caller in the error a
    time-varying system gets where ``time_varying_ok`` is False.
    """
    diagonal = check_bool(diagonal, "diagonal")
    x = as_float_array(x, "x", ndim=4)
    b, l, d, m = x.shape
    core = 1 if diagonal else 2
    A_bar = as_float_array(A_bar, "A_bar", ndim=(1 + core, 2 + core))
    tv = A_bar.ndim == 2 + core
    core_shape = "(d, n)" if diagonal else "(d, n, n)"
    if tv and not time_varying_ok:
        raise ValueError(
            f"A_bar: the {view} view needs a time-invariant system (shape {core_shape}), got a time-varying "
            f"A_bar of shape {A_bar.shape}; the recurrent and scan views take a leading time axis"
        )
    lead = (l, d) if tv else (d,)
    n = A_bar.shape[-1]
    if not diagonal and A_bar.shape[-2] != n:
        raise ValueError(f"A_bar: expected square (..., n, n) matrices, got shape {A_bar.shape}")
    check_shape(A_bar, "A_bar", lead + (n,) * core,
                f"((l,) + {core_shape}: the time axis must match x's length)" if tv else f"({core_shape}, d from x)")
    B_bar = as_float_array(B_bar, "B_bar", ndim=(3, 4))
    if B_bar.ndim == 4 and not tv:
        raise ValueError(f"B_bar: a time-varying B_bar {B_bar.shape} needs a time-varying A_bar, got A_bar {A_bar.shape}")
    if B_bar.ndim == 3:
        check_shape(B_bar, "B_bar", (d, n, m), "(d, n, m) from A_bar and x")
    else:
        check_shape(B_bar, "B_bar", (l, d, n, m), "(l, d, n, m) from A_bar and x")
    C = as_float_array(C, "C", ndim=3)
    p = C.shape[1]
    check_shape(C, "C", (d, None, n), "(d, p, n)", src="d from x, n from A_bar")
    if D is not None:
        D = as_float_array(D, "D", ndim=3)
        check_shape(D, "D", (d, p, m), "(d, p, m)", src="d, m from x, p from C")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=3)
        check_shape(initial_state, "initial_state", (b, d, n), "(b, d, n)", src="b, d from x, n from A_bar")
    dtype = result_dtype(A_bar, B_bar, C, D, x, initial_state)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    dims = dict(b=b, l=l, d=d, n=n, m=m, p=p, tv=tv)
    return cast(A_bar), cast(B_bar), cast(C), cast(D), cast(x), cast(initial_state), dims


def validate_kernel_args(A_bar, B_bar, C, L, diagonal: bool):
    """Validate the arguments of a convolution-kernel computation; returns ``(A_bar, B_bar, C, L, dims)``."""
    L = check_int(L, "L", minimum=0)
    A_bar = as_float_array(A_bar, "A_bar")
    B_bar = as_float_array(B_bar, "B_bar")
    m = B_bar.shape[-1] if B_bar.ndim >= 1 else 0
    d = A_bar.shape[0] if A_bar.ndim >= 1 else 0
    no_input = np.zeros((1, 0, d, m), dtype=np.float32)  # promotes to the system's dtype, never changes it
    A_bar, B_bar, C, _, _, _, dims = validate_system(A_bar, B_bar, C, None, no_input, diagonal=diagonal,
                                                     time_varying_ok=False, view="kernel")
    return A_bar, B_bar, C, L, dims


def validate_conv(K, x, D):
    """Validate a causal convolution's ``K (>=l d p m)``, ``x (b l d m)``, ``D (d p m)``; returns them cast to the
    working dtype, and the dtype."""
    x = as_float_array(x, "x", ndim=4)
    K = as_float_array(K, "K", ndim=4)
    b, l, d, m = x.shape
    if K.shape[0] < l or K.shape[1] != d or K.shape[3] != m:
        raise ValueError(f"K: expected shape (>= {l}, {d}, p, {m}) (l, d, p, m) for x of shape {x.shape}, got {K.shape}")
    if D is not None:
        D = as_float_array(D, "D", ndim=3)
        check_shape(D, "D", (d, K.shape[2], m), "(d, p, m)", src="d, m from x, p from K")
    dtype = result_dtype(K, x, D)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    return cast(K), cast(x), cast(D), dtype


# ---------------------------------------------------------------------------------------------- helpers

def _apply_A(A_bar: np.ndarray, h: np.ndarray, diagonal: bool) -> np.ndarray:
    """``A_bar h`` for a state ``h`` of shape ``(b d n)``; ``A_bar`` is ``(d n n)`` or ``(d n)``."""
    if diagonal:
        return A_bar[None] * h
    return np.einsum("dij,bdj->bdi", A_bar, h)


def _start_state(initial_state, dims, dtype) -> np.ndarray:
    """The state before step 0: a copy of ``initial_state``, or zeros ``(b d n)``."""
    if initial_state is None:
        return np.zeros((dims["b"], dims["d"], dims["n"]), dtype=dtype)
    return initial_state.copy()


def _finish(y, final_state, return_final_state: bool):
    return (y, final_state) if return_final_state else y


# ---------------------------------------------------------------------------------------------- views

def recurrent(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False,
              return_final_state: bool = False):
    r"""The literal recurrence; time-varying ``A_bar``/``B_bar`` allowed.

    ``h_t = A_bar_t h_{t-1} + B_bar_t x_t``;  ``y_t = C h_t + D x_t``.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal)
    b, l, d, p = dims["b"], dims["l"], dims["d"], dims["p"]
    y = np.zeros((b, l, d, p), dtype=x.dtype)
    h_t = _start_state(s0, dims, x.dtype)
    for t in range(l):
        A_t = A_bar[t] if dims["tv"] else A_bar
        B_t = B_bar[t] if B_bar.ndim == 4 else B_bar
        # h_t = A_bar_t h_{t-1} + B_bar_t x_t
        h_t = _apply_A(A_t, h_t, diagonal) + np.einsum("dnm,bdm->bdn", B_t, x[:, t])
        # y_t = C h_t + D x_t
        y[:, t] = np.einsum("dpn,bdn->bdp", C, h_t)
        if D is not None:
            y[:, t] += np.einsum("dpm,bdm->bdp", D, x[:, t])
    return _finish(y, h_t, return_final_state)


def kernel(A_bar, B_bar, C, L: int, *, diagonal: bool = False) -> np.ndarray:
    r"""The SSM convolution kernel ``K_k = C A_bar^k B_bar``, ``k = 0..L-1``; shape ``(l d p m)`` with ``l = L``.

    ``K = (C B_bar, C A_bar B_bar, C A_bar^2 B_bar, ..., C A_bar^{L-1} B_bar)``,
    by repeated multiplication ``P_{k+1} = A_bar P_k`` with ``P_0 = B_bar``.
    """
    A_bar, B_bar, C, L, dims = validate_kernel_args(A_bar, B_bar, C, L, diagonal)
    K = np.zeros((L, dims["d"], dims["p"], dims["m"]), dtype=np.result_type(A_bar, B_bar, C))
    P = B_bar.copy()  # P_k = A_bar^k B_bar, shape (d n m)
    for k in range(L):
        # K_k = C A_bar^k B_bar
        K[k] = np.einsum("dpn,dnm->dpm", C, P)
        # A_bar^{k+1} B_bar = A_bar (A_bar^k B_bar)
        P = A_bar[..., None] * P if diagonal else np.einsum("dij,djm->dim", A_bar, P)
    return K


def causal_conv(K, x, D=None) -> np.ndarray:
    r"""Direct causal convolution: ``y_t = sum_{k=0}^{t} K_k x_{t-k} + D x_t``.

    ``K``: ``(l' d p m)`` with ``l' >= l``; ``x``: ``(b l d m)``; ``D``: ``(d p m)`` or None; returns ``(b l d p)``.
    """
    K, x, D, dtype = validate_conv(K, x, D)
    b, l, d, m = x.shape
    p = K.shape[2]
    y = np.zeros((b, l, d, p), dtype=dtype)
    for t in range(l):
        # y_t = sum_k K_k x_{t-k}
        y[:, t] = np.einsum("kdpm,bkdm->bdp", K[: t + 1], x[:, t::-1])
    if D is not None:
        # + D x_t
        y += np.einsum("dpm,bldm->bldp", D, x)
    return y


def fft_length(L) -> int:
    """The FFT length of a causal convolution of length ``L >= 1``: the smallest power of two ``>= 2L``.

    A length-``L`` kernel and a length-``L`` input have a linear convolution of ``2L - 1`` samples, so
    any FFT length ``>= 2L - 1`` leaves the first ``L`` outputs free of circular wrap-around.
    """
    L = check_int(L, "L", minimum=1)
    return 1 << max(1, (2 * L - 1).bit_length())


def fft_conv(K, x, D=None) -> np.ndarray:
    r"""Causal convolution by FFT of length :func:`fft_length` ``(l) >= 2l`` (no circular wrap-around).

    ``y = irfft(rfft(K, n_fft) * rfft(x, n_fft))[:l] + D x``; complex data use ``fft``/``ifft``.
    The mixing over ``m`` happens in the frequency domain: ``Y_f = sum_m K_f[p, m] X_f[m]``.
    Shapes as :func:`causal_conv`.
    """
    K, x, D, dtype = validate_conv(K, x, D)
    b, l, d, m = x.shape
    p = K.shape[2]
    if l == 0:
        return np.zeros((b, 0, d, p), dtype=dtype)
    n_fft = fft_length(l)
    is_complex = np.iscomplexobj(K) or np.iscomplexobj(x)
    fwd, inv = (np.fft.fft, np.fft.ifft) if is_complex else (np.fft.rfft, np.fft.irfft)
    Kf = fwd(K[:l], n=n_fft, axis=0)  # (f d p m)
    Xf = fwd(x, n=n_fft, axis=1)  # (b f d m)
    # Y_f = sum_m K_f[p, m] X_f[m]
    Yf = np.einsum("fdpm,bfdm->bfdp", Kf, Xf)
    # y = ifft(Y)[:l]
    y = inv(Yf, n=n_fft, axis=1)[:, :l].astype(dtype, copy=False)
    if D is not None:
        # + D x_t
        y = y + np.einsum("dpm,bldm->bldp", D, x)
    return y


def _state_contributions(A_bar, C, s, L, diagonal):
    """``C A_bar^{t+1} s`` for t = 0..L-1 (shape ``(b l d p)``) and ``A_bar^L s``, for a state ``s`` ``(b d n)``."""
    b, d, n = s.shape
    p = C.shape[1]
    out = np.zeros((b, L, d, p), dtype=np.result_type(A_bar, C, s))
    s = s.copy()
    for t in range(L):
        # A_bar^{t+1} s
        s = _apply_A(A_bar, s, diagonal)
        out[:, t] = np.einsum("dpn,bdn->bdp", C, s)
    return out, s


def _final_state(A_bar, B_bar, x, s, diagonal):
    r"""``h_{l-1} = sum_j A_bar^{l-1-j} B_bar x_j + A_bar^l s`` (the state kernel applied to reversed ``x``)."""
    b, l, d, m = x.shape
    n = A_bar.shape[-1]
    h = np.zeros((b, d, n), dtype=np.result_type(A_bar, B_bar, x, s))
    P = B_bar.copy()  # A_bar^k B_bar
    for k in range(l):
        # += A_bar^k B_bar x_{l-1-k}
        h = h + np.einsum("dnm,bdm->bdn", P, x[:, l - 1 - k])
        P = A_bar[..., None] * P if diagonal else np.einsum("dij,djm->dim", A_bar, P)
    for _ in range(l):
        # A_bar^l s
        s = _apply_A(A_bar, s, diagonal)
    return h + s


def _convolution_view(conv, view, A_bar, B_bar, C, D, x, initial_state, diagonal, return_final_state):
    r"""``y = K * x + D x + C A_bar^{t+1} initial_state`` with ``conv`` the direct or the FFT convolution."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                      time_varying_ok=False, view=view)
    s0 = _start_state(s0, dims, x.dtype)
    # K_k = C A_bar^k B_bar
    K = kernel(A_bar, B_bar, C, dims["l"], diagonal=diagonal)
    # y_t = sum_{k<=t} K_k x_{t-k} + D x_t
    y = conv(K, x, D).astype(x.dtype, copy=False)
    # + C A_bar^{t+1} initial_state
    y = y + _state_contributions(A_bar, C, s0, dims["l"], diagonal)[0]
    if not return_final_state:
        return y
    # h_{l-1} = sum_j A_bar^{l-1-j} B_bar x_j + A_bar^l initial_state
    return y, _final_state(A_bar, B_bar, x, s0, diagonal)


def convolution(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False,
                return_final_state: bool = False):
    r"""The convolution view, direct summation: ``y_t = sum_{k<=t} K_k x_{t-k} + D x_t + C A_bar^{t+1} initial_state``.

    ``K_k = C A_bar^k B_bar`` (:func:`kernel`); needs a time-invariant system.
    """
    return _convolution_view(causal_conv, "convolution", A_bar, B_bar, C, D, x, initial_state, diagonal,
                             return_final_state)


def convolution_fft(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False,
                    return_final_state: bool = False):
    r"""The convolution view through the FFT (:func:`fft_conv`); otherwise as :func:`convolution`.

    The final state is summed directly (:func:`convolution`'s), not by FFT.
    """
    return _convolution_view(fft_conv, "fft", A_bar, B_bar, C, D, x, initial_state, diagonal, return_final_state)


def _combine(a_i, b_i, a_j, b_j, diagonal):
    r"""``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)``: first ``i``, then ``j``."""
    if diagonal:
        return a_j * a_i, a_j * b_i + b_j
    return a_j @ a_i, np.einsum("...ij,...j->...i", a_j, b_i) + b_j


def _transitions(A_bar, dims) -> np.ndarray:
    """``a_t = A_bar_t`` for every ``(batch, t)``: a writable ``(b l d n [n])`` array."""
    per_step = A_bar if dims["tv"] else np.broadcast_to(A_bar[None], (dims["l"],) + A_bar.shape)
    return np.broadcast_to(per_step[None], (dims["b"],) + per_step.shape).copy()


def scan(A_bar, B_bar, C, D, x, *, initial_state=None, diagonal: bool = False, return_final_state: bool = False):
    r"""Parallel associative scan (Hillis--Steele, ``ceil(log2 l)`` rounds, any ``l``); time-varying allowed.

    Elements ``e_t = (a_t, b_t) = (A_bar_t, B_bar_t x_t)``; the initial state is folded
    into ``b_0 <- b_0 + A_bar_0 initial_state``.  After round ``r`` element ``t`` holds the
    composition of ``e_{t-2^r+1} .. e_t``; after the last, ``b_t = h_t``.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal)
    b, l = dims["b"], dims["l"]
    if l == 0 or b == 0:
        y = np.zeros((b, l, dims["d"], dims["p"]), dtype=x.dtype)
        return _finish(y, _start_state(s0, dims, x.dtype), return_final_state)
    a = _transitions(A_bar, dims)
    Bt = B_bar if B_bar.ndim == 4 else np.broadcast_to(B_bar[None], (l,) + B_bar.shape)
    # b_t = B_bar_t x_t
    bb = np.einsum("ldnm,bldm->bldn", Bt, x)
    if s0 is not None:
        # b_0 = A_bar_0 initial_state + B_bar_0 x_0
        bb[:, 0] += _apply_A(a[0, 0], s0, diagonal)
    offset = 1
    while offset < l:
        # e_t <- e_{t-offset} . e_t   for t >= offset  (all t at once: one parallel round)
        a_new, b_new = _combine(a[:, :-offset], bb[:, :-offset], a[:, offset:], bb[:, offset:], diagonal)
        a[:, offset:], bb[:, offset:] = a_new, b_new
        offset *= 2
    hs = bb  # h_t for every t: (b l d n)
    # y_t = C h_t + D x_t
    y = np.einsum("dpn,bldn->bldp", C, hs)
    if D is not None:
        y = y + np.einsum("dpm,bldm->bldp", D, x)
    return _finish(y, hs[:, -1].copy(), return_final_state)


def chunked(A_bar, B_bar, C, D, x, *, chunk: int = 64, initial_state=None, diagonal: bool = False,
            return_final_state: bool = False):
    r"""Chunked view: the kernel within each chunk, the recurrence across chunks (any ``l``; time-invariant only).

    For a chunk starting at ``s`` of length ``T`` (``T <= chunk``; the last may be short), with
    ``h_s`` the state entering the chunk:

    * ``y_{s+t} = sum_{k<=t} K_k x_{s+t-k} + C A_bar^{t+1} h_s + D x_{s+t}``  (kernel within)
    * ``h_{s+T} = A_bar^T h_s + sum_{j<T} A_bar^{T-1-j} B_bar x_{s+j}``  (state passed on)
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    return_final_state = check_bool(return_final_state, "return_final_state")
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                      time_varying_ok=False, view="chunked")
    b, l, d, p = dims["b"], dims["l"], dims["d"], dims["p"]
    K = kernel(A_bar, B_bar, C, min(chunk, l), diagonal=diagonal)
    y = np.zeros((b, l, d, p), dtype=x.dtype)
    h_s = _start_state(s0, dims, x.dtype)
    for s in range(0, l, chunk):
        xc = x[:, s:s + chunk]
        T = xc.shape[1]
        # within the chunk: sum_{k<=t} K_k x_{s+t-k}  (no skip yet)
        yc = causal_conv(K, xc)
        # + C A_bar^{t+1} h_s  (the state entering the chunk)
        contrib, _ = _state_contributions(A_bar, C, h_s, T, diagonal)
        y[:, s:s + T] = yc + contrib
        # h_{s+T} = A_bar^T h_s + sum_j A_bar^{T-1-j} B_bar x_{s+j}
        h_s = _final_state(A_bar, B_bar, xc, h_s, diagonal)
    if D is not None:
        # + D x_t
        y = y + np.einsum("dpm,bldm->bldp", D, x)
    return _finish(y, h_s, return_final_state)
