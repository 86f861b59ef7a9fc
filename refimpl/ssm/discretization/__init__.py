"""refimpl.ssm.discretization: continuous ``(A, B)`` -> discrete ``(A_bar, B_bar)`` (see README.md in this folder).

One entry point, :func:`discretize` (``method=`` one of :data:`METHODS`), and the helpers :func:`phi1`
(elementwise ``(e^z - 1)/z``, the package's only one) and :func:`phi1_dense` (its matrix version).  The
per-method functions (``zoh``, ``bilinear``, ``gbt``, ``forward_euler``, ``backward_euler``, ``mamba``)
are public in :mod:`refimpl.ssm.discretization.reference`.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from refimpl._dispatch import register
from refimpl._validate import check_bool, check_choice
from refimpl.ssm.discretization.reference import METHODS, phi1, phi1_dense

__all__ = ["discretize", "discretize_vjp", "phi1", "phi1_dense", "METHODS"]

_REF = "refimpl.ssm.discretization.reference"
# the "view" of this table is the method
IMPLEMENTATIONS = register("refimpl.ssm.discretize",
                           {(method, "numpy"): f"{_REF}:{method}" for method in METHODS})
_BWD = "refimpl.ssm.discretization.backward"
VJP_IMPLEMENTATIONS = register("refimpl.ssm.discretize_vjp",
                               {(method, "numpy"): f"{_BWD}:{method}_vjp" for method in METHODS})


def discretize(A, B, dt, *, method: str, diagonal: bool = False, alpha: Optional[float] = None,
               backend: str = "numpy") -> Tuple[np.ndarray, np.ndarray]:
    r"""Discretize ``h'(t) = A h(t) + B x(t)`` with step ``dt`` by ``method``; returns ``(A_bar, B_bar)``.

    Shapes: ``A`` ``(d n n)``, or its diagonal ``(d n)`` with ``diagonal=True`` (any leading batch axes
    ``...`` in place of ``d``); ``B`` ``(d n m)`` with the same leading axes exactly; ``dt`` a positive
    scalar, one step per channel ``(d,)``, or one per time step ``(l, d)`` (the results then carry the
    leading ``l`` axis: a time-varying system for :func:`refimpl.ssm.lti.lti_ssm`).

    ``method``: ``"zoh"`` (``A_bar = e^{dt A}``, ``B_bar = dt phi1(dt A) B``), ``"bilinear"``, ``"gbt"``
    (needs ``alpha`` in [0, 1]; no other method takes it), ``"forward_euler"``, ``"backward_euler"``,
    ``"mamba"`` (``A_bar`` by ZOH, ``B_bar = dt B``).  ``C`` and ``D`` are unchanged by every method.
    ``backend``: ``"numpy"`` only.
    """
    check_choice(method, "method", METHODS)
    diagonal = check_bool(diagonal, "diagonal")
    fn = IMPLEMENTATIONS.get(method, backend)
    if method == "gbt":
        if alpha is None:
            raise ValueError("alpha: method 'gbt' needs alpha in [0, 1], got None")
        return fn(A, B, dt, alpha, diagonal=diagonal)
    if alpha is not None:
        raise ValueError(f"alpha: only method 'gbt' takes alpha, got alpha={alpha!r} with method={method!r}")
    return fn(A, B, dt, diagonal=diagonal)


def discretize_vjp(A, B, dt, *, dA_bar, dB_bar, method: str, diagonal: bool = False, alpha: Optional[float] = None,
                   backend: str = "numpy") -> Dict[str, np.ndarray]:
    r"""The vector-Jacobian product of :func:`discretize`: ``{"A": dA, "B": dB, "dt": ddt}`` (each with its input's
    shape and dtype) from the cotangents ``dA_bar``, ``dB_bar`` of ``A_bar``, ``B_bar`` (both required, the
    outputs' shapes).  ``C``, ``D`` are unchanged by every method: their gradients pass through.

    ZOH's adjoint goes through ``phi1'(z) = (z e^z - e^z + 1)/z^2`` (a series for ``|z| < 1``) when ``A`` is
    diagonal and through the Frechet derivative of the Van Loan block exponential (the block-triangular
    identity) when dense; the gbt family's through solves with ``(I - alpha dt A)^H``
    (:mod:`refimpl.ssm.discretization.backward`).  Complex convention: the gradient of ``z = a + i b`` is
    ``dL/da + i dL/db`` (PyTorch's); a real ``dt`` gets a real gradient.
    """
    check_choice(method, "method", METHODS)
    diagonal = check_bool(diagonal, "diagonal")
    fn = VJP_IMPLEMENTATIONS.get(method, backend)
    if method == "gbt":
        if alpha is None:
            raise ValueError("alpha: method 'gbt' needs alpha in [0, 1], got None")
        return fn(A, B, dt, alpha, dA_bar=dA_bar, dB_bar=dB_bar, diagonal=diagonal)
    if alpha is not None:
        raise ValueError(f"alpha: only method 'gbt' takes alpha, got alpha={alpha!r} with method={method!r}")
    return fn(A, B, dt, dA_bar=dA_bar, dB_bar=dB_bar, diagonal=diagonal)
