"""refimpl.ssm.s4d: the diagonal S4 (S4D) and DSS kernels (see README.md in this folder).

Entry points: :func:`s4d_kernel`, :func:`dss_kernel`, :func:`vandermonde` (the Vandermonde product);
public helpers :func:`init`, :func:`discretize_diag`.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._dispatch import register
from refimpl.ssm.s4d.reference import INITS, METHODS, OUTPUTS, VARIANTS, discretize_diag, init

__all__ = ["s4d_kernel", "s4d_kernel_vjp", "dss_kernel", "dss_kernel_vjp", "vandermonde", "init", "discretize_diag", "INITS", "METHODS", "OUTPUTS",
           "VARIANTS", "S4D_KERNEL", "DSS_KERNEL", "DSS_KERNEL_VJP", "VANDERMONDE"]

S4D_KERNEL = register("refimpl.ssm.s4d_kernel", {
    ("vandermonde", "numpy"): "refimpl.ssm.s4d.reference:kernel",
    ("vandermonde", "numba"): "refimpl.ssm.s4d.numba:kernel",
    ("vandermonde", "cuda"): "refimpl.ssm.s4d.cuda:kernel",
})

S4D_KERNEL_VJP = register("refimpl.ssm.s4d_kernel_vjp", {
    ("vandermonde", "numpy"): "refimpl.ssm.s4d.backward:kernel_vjp",
})

DSS_KERNEL = register("refimpl.ssm.dss_kernel", {
    ("closed_form", "numpy"): "refimpl.ssm.s4d.reference:dss_kernel",
})

DSS_KERNEL_VJP = register("refimpl.ssm.dss_kernel_vjp", {
    ("closed_form", "numpy"): "refimpl.ssm.s4d.backward_dss:closed_form_vjp",
})

VANDERMONDE = register("refimpl.ssm.vandermonde", {
    ("repeated_products", "numpy"): "refimpl.ssm.s4d.reference:vandermonde",
    ("repeated_products", "numba"): "refimpl.ssm.s4d.numba:vandermonde",
    ("repeated_products", "cuda"): "refimpl.ssm.s4d.cuda:vandermonde",
})


def s4d_kernel(Lambda, B, C, dt, L: int, *, method: str = "zoh", output: str, backend: str = "numpy") -> np.ndarray:
    r"""The S4D kernel ``K_k = sum_n C_n B_bar_n A_bar_n^k`` (``k < L``) by a Vandermonde product: ``K (d l)``.

    Shapes: ``Lambda, B, C (d n)`` (complex), ``dt`` a positive scalar or ``(d,)`` (one step per channel).
    ``method``: ``"zoh"`` or ``"bilinear"``.  ``output`` (required): ``"2re"`` (one eigenvalue of each conjugate
    pair, ``K = 2 Re``), ``"re"`` (full spectrum) or ``"complex"``.  ``backend``: ``"numpy"``, ``"numba"`` or ``"cuda"``
    (the Vandermonde product on the GPU; NumPy parameters).
    """
    return S4D_KERNEL.get("vandermonde", backend)(Lambda, B, C, dt, L, method=method, output=output)


def dss_kernel(Lambda, W, dt, L: int, *, variant: str = "softmax", backend: str = "numpy") -> np.ndarray:
    r"""The DSS kernel (real, ``K (d l)``) of ``Lambda, W (d n)``, ``dt`` a scalar or ``(d,)``.

    ``variant="exp"``: ``K_k = Re sum_n w_n (e^{dt lambda_n} - 1)/lambda_n e^{k dt lambda_n}``;
    ``variant="softmax"``: ``K_k = Re sum_n w_n/lambda_n softmax_k(k dt lambda_n)``.  ``backend``: ``"numpy"``.
    """
    return DSS_KERNEL.get("closed_form", backend)(Lambda, W, dt, L, variant=variant)


def dss_kernel_vjp(Lambda, W, dt, L: int, *, dK, variant: str = "softmax", view: str = "closed_form",
                   backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`dss_kernel`: ``{"Lambda", "W", "dt"}`` gradients from ``dK (d l)``
    (real), by the closed forms of :mod:`refimpl.ssm.s4d.backward_dss` (``dK``-weighted sums over ``k``, then the
    chain rule; softmax: ``dS_k/dp = S_k (k - m)``).  Complex convention: the gradient of ``z = a + i b`` is
    ``dL/da + i dL/db`` (PyTorch's).  ``view``: ``"closed_form"`` (``numpy``).
    """
    return DSS_KERNEL_VJP.get(view, backend)(Lambda, W, dt, L, dK=dK, variant=variant)


def vandermonde(v, z, L: int, *, backend: str = "numpy") -> np.ndarray:
    r"""``K_{c,k} = sum_n v_{c,n} z_{c,n}^k`` for ``k < L``: ``v, z (d n)`` -> ``(d l)``, powers by repeated products.

    Exact shapes, floating inputs, finite values; complex64 only when both inputs are float32/complex64.
    ``backend``: ``"numpy"``, ``"numba"`` (flushes powers below the smallest normal number to zero) or ``"cuda"``
    (one GPU thread per ``(channel, k)``; NumPy or CuPy arrays).
    """
    return VANDERMONDE.get("repeated_products", backend)(v, z, L)


def s4d_kernel_vjp(Lambda, B, C, dt, L: int, *, dK, method: str = "zoh", output: str, view: str = "vandermonde",
                   backend: str = "numpy") -> Dict[str, np.ndarray]:
    r"""The vector-Jacobian product of :func:`s4d_kernel`: ``{"Lambda", "B", "C", "dt"}`` gradients (each with its
    input's shape and dtype) from ``dK`` ``(d l)``, the cotangent of ``K`` (real unless ``output="complex"``).

    The adjoint of the Vandermonde power scan is a reverse scan over ``k``, then the diagonal discretization's
    VJP (ZOH through ``phi1'``) (:mod:`refimpl.ssm.s4d.backward`).  Complex convention: the gradient of
    ``z = a + i b`` is ``dL/da + i dL/db`` (PyTorch's); ``K = 2 Re Kc`` passes ``2 dK`` to ``Kc``.
    """
    return S4D_KERNEL_VJP.get(view, backend)(Lambda, B, C, dt, L, dK=dK, method=method, output=output)
