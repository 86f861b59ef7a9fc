"""refimpl.ssm.lti: the discrete linear SSM and its views (see README.md in this folder).

Entry points: :func:`lti_ssm` (``view=`` recurrent, convolution, fft, scan, chunked; ``backend=``
numpy, numba, cuda) and :func:`lti_kernel` (``K_k = C A_bar^k B_bar``).  Public helpers:
:func:`causal_conv`, :func:`fft_conv`, :func:`fft_length`.  The per-view functions are public in
:mod:`refimpl.ssm.lti.reference` (NumPy), the kernels in :mod:`refimpl.ssm.lti.numba` and
:mod:`refimpl.ssm.lti.cuda`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._dispatch import register
from refimpl._validate import check_bool, check_int
from refimpl.ssm.lti.reference import causal_conv, fft_conv, fft_length

__all__ = ["lti_ssm", "lti_ssm_vjp", "lti_kernel", "causal_conv", "fft_conv", "fft_length", "VIEWS"]

_REF = "refimpl.ssm.lti.reference"
_NUMBA = "refimpl.ssm.lti.numba"
_CUDA = "refimpl.ssm.lti.cuda"
VIEWS = ("recurrent", "convolution", "fft", "scan", "chunked")
DEFAULT_CHUNK = 64

IMPLEMENTATIONS = register("refimpl.ssm.lti_ssm", {
    ("recurrent", "numpy"): f"{_REF}:recurrent",
    ("recurrent", "numba"): f"{_NUMBA}:recurrent",
    ("recurrent", "cuda"): f"{_CUDA}:recurrent",
    ("convolution", "numpy"): f"{_REF}:convolution",
    ("convolution", "numba"): f"{_NUMBA}:convolution",
    ("convolution", "cuda"): f"{_CUDA}:convolution",
    ("fft", "numpy"): f"{_REF}:convolution_fft",
    ("fft", "cuda"): f"{_CUDA}:convolution_fft",
    ("scan", "numpy"): f"{_REF}:scan",
    ("scan", "cuda"): f"{_CUDA}:scan",
    ("chunked", "numpy"): f"{_REF}:chunked",
})

_BWD = "refimpl.ssm.lti.backward"
VJP_IMPLEMENTATIONS = register("refimpl.ssm.lti_ssm_vjp", {
    ("recurrent", "numpy"): f"{_BWD}:recurrent_vjp",
    ("convolution", "numpy"): f"{_BWD}:convolution_vjp",
    ("chunked", "numpy"): f"{_BWD}:chunked_vjp",
})

KERNEL_IMPLEMENTATIONS = register("refimpl.ssm.lti_kernel", {
    ("kernel", "numpy"): f"{_REF}:kernel",
    ("kernel", "numba"): f"{_NUMBA}:kernel",
    ("kernel", "cuda"): f"{_CUDA}:kernel",
})


def lti_ssm(A_bar, B_bar, C, D, x, *, diagonal: bool = False, view: str = "recurrent", backend: str = "numpy",
            initial_state=None, return_final_state: bool = False, chunk: Optional[int] = None):
    r"""The discrete linear SSM ``h_t = A_bar_t h_{t-1} + B_bar_t x_t``, ``y_t = C h_t + D x_t``.

    Shapes: ``A_bar`` ``(d n n)``, or ``(d n)`` with ``diagonal=True``; ``B_bar`` ``(d n m)``; ``C``
    ``(d p n)``; ``D`` ``(d p m)`` or None; ``x`` ``(b l d m)``; returns ``y`` ``(b l d p)``.
    ``initial_state`` ``(b d n)`` is the state before step 0 (default zero); with
    ``return_final_state=True`` the result is ``(y, final_state)``, ``final_state`` ``(b d n)`` the
    state after step ``l - 1`` (``initial_state``, or zero, when ``l = 0``).

    Time-varying systems (``A_bar`` ``(l d n n)``/``(l d n)``, optionally ``B_bar`` ``(l d n m)``: one
    system per step, e.g. from a per-step ``dt``) are taken by the ``recurrent`` (numpy, numba) and
    ``scan`` views; the convolution views and ``chunked`` need a time-invariant system.

    ``view``/``backend``: recurrent (numpy, numba, cuda; time-invariant on cuda), convolution (numpy, numba, cuda;
    direct summation), fft (numpy, cuda), scan (numpy, cuda -- the CUDA scan needs ``diagonal=True``), chunked (numpy;
    ``chunk`` = the chunk length ``c``, default 64, taken by this view only).
    """
    diagonal = check_bool(diagonal, "diagonal")
    return_final_state = check_bool(return_final_state, "return_final_state")
    fn = IMPLEMENTATIONS.get(view, backend)
    kw = dict(initial_state=initial_state, return_final_state=return_final_state)
    if view == "chunked":
        kw["chunk"] = DEFAULT_CHUNK if chunk is None else check_int(chunk, "chunk", minimum=1)
    elif chunk is not None:
        raise ValueError(f"chunk: only the 'chunked' view takes a chunk length, got chunk={chunk!r} with view={view!r}")
    return fn(A_bar, B_bar, C, D, x, diagonal=diagonal, **kw)


def lti_kernel(A_bar, B_bar, C, L, *, diagonal: bool = False, backend: str = "numpy") -> np.ndarray:
    r"""The convolution kernel ``K_k = C A_bar^k B_bar``, ``k = 0..L-1``: shape ``(l d p m)`` with ``l = L``.

    ``A_bar`` ``(d n n)`` or ``(d n)`` (``diagonal=True``), ``B_bar`` ``(d n m)``, ``C`` ``(d p n)``, a
    time-invariant system; ``L >= 0`` an integer.  ``backend``: numpy, numba or cuda.
    """
    diagonal = check_bool(diagonal, "diagonal")
    return KERNEL_IMPLEMENTATIONS.get("kernel", backend)(A_bar, B_bar, C, L, diagonal=diagonal)


def lti_ssm_vjp(A_bar, B_bar, C, D, x, *, dy, d_final_state=None, diagonal: bool = False, initial_state=None,
                chunk: Optional[int] = None, view: str = "recurrent", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`lti_ssm`: ``{name: gradient}`` for ``A_bar, B_bar, C, x`` and for
    ``D``, ``initial_state`` when given (each with its input's shape and dtype).

    ``dy`` ``(b l d p)``: the cotangent of ``y`` (required); ``d_final_state`` ``(b d n)``: the cotangent of the
    final state (passing it means the forward is taken to return it).  The adjoint is a reverse scan
    ``g_t = A_bar_{t+1}^H g_{t+1} + C^H dy_t`` (:mod:`refimpl.ssm.lti.backward`).  Complex convention: the gradient
    of ``z = a + i b`` is ``dL/da + i dL/db`` (PyTorch's), the cotangent of a complex ``y`` likewise.
    ``view``: ``recurrent`` (time-varying too), ``convolution`` or ``chunked`` (time-invariant; the reverse scan over
    the chunks, ``chunk`` = the chunk length, default 64, taken by this view only); ``backend``: ``numpy``.
    """
    fn = VJP_IMPLEMENTATIONS.get(view, backend)
    kw = dict(dy=dy, d_final_state=d_final_state, initial_state=initial_state, diagonal=check_bool(diagonal, "diagonal"))
    if view == "chunked":
        kw["chunk"] = DEFAULT_CHUNK if chunk is None else check_int(chunk, "chunk", minimum=1)
    elif chunk is not None:
        raise ValueError(f"chunk: only the 'chunked' view takes a chunk length, got chunk={chunk!r} with view={view!r}")
    return fn(A_bar, B_bar, C, D, x, **kw)
