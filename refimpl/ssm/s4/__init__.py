"""refimpl.ssm.s4: S4's NPLR/DPLR form and its convolution kernel (see README.md in this folder).

Entry points: :func:`s4_kernel` (views ``generating_function`` and ``dense``) and :func:`cauchy`
(the Cauchy kernel); public helpers :func:`nplr`, :class:`NPLR`, :func:`eigenvector_condition`,
:func:`unit_circle_half_angle`, :func:`generating_function`, :func:`real_output`.
"""
from __future__ import annotations

import numpy as np

from refimpl._dispatch import register
from refimpl.ssm.s4.reference import (NPLR, NPLR_MEASURES, OUTPUTS, eigenvector_condition, generating_function,
                                      nplr, real_output, unit_circle_half_angle)

__all__ = ["s4_kernel", "s4_kernel_vjp", "cauchy", "NPLR", "NPLR_MEASURES", "OUTPUTS", "nplr", "eigenvector_condition",
           "unit_circle_half_angle", "generating_function", "real_output", "S4_KERNEL", "S4_KERNEL_VJP", "CAUCHY"]

S4_KERNEL = register("refimpl.ssm.s4_kernel", {
    ("generating_function", "numpy"): "refimpl.ssm.s4.reference:kernel",
    ("generating_function", "numba"): "refimpl.ssm.s4.numba:kernel",
    ("generating_function", "cuda"): "refimpl.ssm.s4.cuda:kernel",
    ("dense", "numpy"): "refimpl.ssm.s4.reference:kernel_dense",
})

S4_KERNEL_VJP = register("refimpl.ssm.s4_kernel_vjp", {
    ("dense", "numpy"): "refimpl.ssm.s4.backward:dense_vjp",
})

CAUCHY = register("refimpl.ssm.cauchy", {
    ("direct", "numpy"): "refimpl.ssm.s4.reference:cauchy",
    ("direct", "numba"): "refimpl.ssm.s4.numba:cauchy",
    ("direct", "cuda"): "refimpl.ssm.s4.cuda:cauchy",
})


def s4_kernel(Lambda, P, Q, B, C, dt, L: int, *, view: str = "generating_function", backend: str = "numpy",
              output: str = "complex", method: str = "bilinear") -> np.ndarray:
    r"""The S4 convolution kernel ``K_k = C A_bar^k B_bar`` (``k < L``) of ``A = diag(Lambda) - P Q^*``: ``K (d l)``.

    Shapes: ``Lambda (d n)``, ``P, Q (d n r)``, ``B, C (d n)`` (complex), ``dt`` a positive scalar or ``(d,)``
    (one step per channel), ``L`` an integer >= 0.

    ``view``: ``"generating_function"`` (Cauchy kernel + Woodbury at the roots of unity, then an inverse
    FFT; backends ``numpy``, ``numba``, ``cuda`` -- the Cauchy products on the GPU) or ``"dense"`` (the dense ``A`` discretized and powered; ``numpy``).
    ``method``: ``"bilinear"`` (any rank, both views) or ``"zoh"`` (the generating function with ``P = 0``).  ``output``: ``"complex"``, ``"re"`` (full spectrum) or ``"2re"`` (one eigenvalue
    of each conjugate pair).
    """
    return S4_KERNEL.get(view, backend)(Lambda, P, Q, B, C, dt, L, output=output, method=method)


def s4_kernel_vjp(Lambda, P, Q, B, C, dt, L: int, *, dK, output: str = "complex", method: str = "bilinear",
                  view: str = "dense", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`s4_kernel`: ``{"Lambda", "P", "Q", "B", "C", "dt"}`` gradients from
    ``dK (d l)`` (real unless ``output="complex"``).

    ``view``: ``"dense"`` (``numpy``): the adjoint of the dense view, a reverse scan over the powers
    ``G_k = A_bar^H G_{k+1} + conj(C) dKc_k`` then the bilinear discretization's VJP and ``A = diag(Lambda) - P Q^*``
    (:mod:`refimpl.ssm.s4.backward`); the same map as the generating-function view.  ``method``: ``"bilinear"``.
    Complex convention: the gradient of ``z = a + i b`` is ``dL/da + i dL/db`` (PyTorch's).
    """
    return S4_KERNEL_VJP.get(view, backend)(Lambda, P, Q, B, C, dt, L, dK=dK, output=output, method=method)


def cauchy(v, g, lam, *, backend: str = "numpy") -> np.ndarray:
    r"""The Cauchy kernel ``k_{c,j} = sum_n v_{c,n} / (g_{c,j} - lam_{c,n})``: ``v, lam (d n)``, ``g (d l)`` -> ``(d l)``.

    Exact shapes, floating inputs (float32/float64/complex; no integers, no float16), finite values;
    complex64 only when every input is float32/complex64.  ``backend``: ``"numpy"``, ``"numba"`` or ``"cuda"`` (NumPy
    or CuPy arrays).
    """
    return CAUCHY.get("direct", backend)(v, g, lam)
