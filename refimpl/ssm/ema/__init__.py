"""refimpl.ssm.ema: MEGA's multi-dimensional damped EMA (see README.md in this folder).

Entry point: :func:`mega_ema` (views ``recurrent``, ``convolution``, ``fft``); public helper :func:`kernel`.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl.ssm.ema.reference import kernel

__all__ = ["mega_ema", "mega_ema_vjp", "kernel", "MEGA_EMA", "MEGA_EMA_VJP"]

MEGA_EMA = register("refimpl.ssm.mega_ema", {
    ("recurrent", "numpy"): "refimpl.ssm.ema.reference:recurrent",
    ("convolution", "numpy"): "refimpl.ssm.ema.reference:convolution",
    ("fft", "numpy"): "refimpl.ssm.ema.reference:fft_convolution",
})

MEGA_EMA_VJP = register("refimpl.ssm.mega_ema_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.ema.backward:recurrent_vjp",
})


def mega_ema(x, alpha, delta, beta, eta, *, view: str = "recurrent", backend: str = "numpy", initial_state=None,
             return_final_state: bool = False):
    r"""MEGA's damped EMA: ``h_t = alpha (beta x_t) + (1 - alpha delta) h_{t-1}``, ``y_t = eta^T h_t`` per feature.

    Shapes: ``x (b l d)`` real -> ``y (b l d)``; ``alpha, delta (d n)`` in (0, 1), ``beta, eta (d n)``; state
    ``(b d n)``.  ``view``: ``"recurrent"``, ``"convolution"`` (direct causal sum with the closed-form kernel) or
    ``"fft"`` (the same convolution by FFT); backend ``"numpy"``.  ``initial_state (b d n)``: ``h_{-1}``
    (default 0); ``return_final_state=True`` returns ``(y, h_{l-1})``.
    """
    return MEGA_EMA.get(view, backend)(x, alpha, delta, beta, eta, initial_state=initial_state,
                                       return_final_state=return_final_state)


def mega_ema_vjp(x, alpha, delta, beta, eta, *, dy, d_final_state=None, initial_state=None, view: str = "recurrent",
                 backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`mega_ema`: ``{x, alpha, delta, beta, eta}`` gradients (and
    ``initial_state`` when given) from ``dy (b l d)`` and ``d_final_state (b d n)`` (the final state's cotangent).

    The adjoint is the reverse scan ``g_t = (1 - alpha delta) g_{t+1} + eta dy_t`` (:mod:`refimpl.ssm.ema.backward`);
    every forward view computes the same map, so ``view="recurrent"`` (``numpy``) serves them all.
    """
    return MEGA_EMA_VJP.get(view, backend)(x, alpha, delta, beta, eta, dy=dy, d_final_state=d_final_state,
                                           initial_state=initial_state)
