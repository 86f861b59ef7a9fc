"""refimpl.ssm.lru: the Linear Recurrent Unit (see README.md in this folder).

Entry point: :func:`lru_ssm` (views ``recurrent``, ``scan``); public helpers :func:`lambda_from_params`,
:func:`gamma_from_lambda`, :func:`ring_init`.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl.ssm.lru.reference import gamma_from_lambda, lambda_from_params, ring_init

__all__ = ["lru_ssm", "lambda_from_params", "gamma_from_lambda", "ring_init", "LRU_SSM"]

LRU_SSM = register("refimpl.ssm.lru_ssm", {
    ("recurrent", "numpy"): "refimpl.ssm.lru.reference:recurrent",
    ("recurrent", "numba"): "refimpl.ssm.lru.numba:recurrent",
    ("scan", "numpy"): "refimpl.ssm.lru.reference:scan",
})


def lru_ssm(nu_log, theta_log, gamma_log, B, C, D, u, *, view: str = "recurrent", backend: str = "numpy",
            initial_state=None, return_final_state: bool = False):
    r"""The LRU: ``x_t = lambda x_{t-1} + gamma (B u_t)``, ``y_t = Re(C x_t) + D u_t``, with
    ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` and ``gamma = exp(gamma_log)``.

    Shapes: ``nu_log, theta_log, gamma_log (n)`` real, ``B (n d)``, ``C (d n)`` complex, ``D (d)``,
    ``u (b l d)`` real -> ``y (b l d)`` real; state ``(b n)`` complex.
    ``view``: ``"recurrent"`` (``numpy``, ``numba``) or ``"scan"`` (the associative scan; ``numpy``).
    ``initial_state (b n)``: ``x_{-1}`` (default 0); ``return_final_state=True`` returns ``(y, x_{l-1})``.
    """
    return LRU_SSM.get(view, backend)(nu_log, theta_log, gamma_log, B, C, D, u, initial_state=initial_state,
                                      return_final_state=return_final_state)
