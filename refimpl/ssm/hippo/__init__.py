"""refimpl.ssm.hippo: HiPPO matrices and the online projection (see README.md in this folder).

Entry points: :func:`hippo_transition` and :func:`hippo_projection` (view ``recurrent``, backend ``numpy``);
public helpers :func:`basis`, :func:`reconstruct`, :func:`scale` and the per-measure builders
:func:`legs`, :func:`legt`, :func:`lmu`, :func:`lagt`, :func:`fout`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from refimpl._dispatch import register
from refimpl.ssm.hippo.reference import (MEASURES, ONLINE_METHODS, SIGNS, basis, fout, lagt, legs, legt, lmu,
                                         reconstruct, scale, transition)

__all__ = ["hippo_transition", "hippo_projection", "hippo_projection_vjp", "basis", "reconstruct", "scale", "legs",
           "legt", "lmu", "lagt", "fout", "MEASURES", "SIGNS", "ONLINE_METHODS", "HIPPO_PROJECTION",
           "HIPPO_PROJECTION_VJP"]

HIPPO_PROJECTION = register("refimpl.ssm.hippo_projection", {
    ("recurrent", "numpy"): "refimpl.ssm.hippo.reference:online_projection",
})


def hippo_transition(measure: str, N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""``(A (n n), B (n))`` of the HiPPO measure ``legs``, ``legt``, ``lmu``, ``lagt`` or ``fout``, float64, ``n = N``.

    ``sign`` (required): ``"ode"`` -- the paper's spelling, ``c' = -s(t) A c + s(t) B f``; ``"s4"`` -- S4's code,
    ``A`` stored negated, ``c' = s(t) A c + s(t) B f``.
    """
    return transition(measure, N, sign=sign)


def hippo_projection(f, measure: str, N: int, dt: float, *, method: str = "bilinear", alpha: Optional[float] = None,
                     theta: float = 1.0, t0: Optional[float] = None, initial_state=None, view: str = "recurrent",
                     backend: str = "numpy") -> np.ndarray:
    r"""Online HiPPO coefficients ``c (l n)`` of the samples ``f (l,)`` on ``t_k = t0 + k dt``: ``c[k] ~ c(t_k)``.

    ``f (l,)`` is a scalar signal (the documented exception to the ``(b l d)`` layouts).  ``method``:
    ``"forward_euler"``, ``"backward_euler"``, ``"bilinear"`` or ``"gbt"`` (with ``alpha`` in [0, 1]) -- the
    discretization of the time-varying ODE.  ``theta > 0``: the window of legt/lmu/fout.  ``t0``: the first
    sample time (default ``dt`` for legs, which needs ``t0 > 0``; 0 otherwise).  ``initial_state (n)``: ``c(t0)``
    (default zero; for legs ``f_0 e_0``).  View ``"recurrent"``, backend ``"numpy"``.
    """
    return HIPPO_PROJECTION.get(view, backend)(f, measure, N, dt, method=method, alpha=alpha, theta=theta, t0=t0,
                                               initial_state=initial_state)


HIPPO_PROJECTION_VJP = register("refimpl.ssm.hippo_projection_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.hippo.backward:recurrent_vjp",
})


def hippo_projection_vjp(f, measure: str, N: int, dt: float, *, dc, method: str = "bilinear",
                         alpha: Optional[float] = None, theta: float = 1.0, t0: Optional[float] = None,
                         initial_state=None, view: str = "recurrent", backend: str = "numpy") -> dict:
    r"""The vector-Jacobian product of :func:`hippo_projection` (README "Backward"; :mod:`.backward`).

    The forward's arguments, then keyword-only ``dc (l n)`` the cotangent of ``c`` (required) and the forward's
    keywords.  View ``"recurrent"`` (the reverse scan ``g_k = dc_k + A_bar^T g_{k+1}``; LegS through a transposed
    solve per step), backend ``"numpy"``.  Returns ``{"f": (l,), "dt": ()}`` and ``"initial_state": (n)`` when one
    is given, float64.  ``N`` is an int (no gradient).
    """
    return HIPPO_PROJECTION_VJP.get(view, backend)(f, measure, N, dt, dc=dc, method=method, alpha=alpha,
                                                   theta=theta, t0=t0, initial_state=initial_state)
