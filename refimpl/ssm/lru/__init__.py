"""refimpl.ssm.lru: the Linear Recurrent Unit (see README.md in this folder).

Entry point: :func:`lru_ssm` (views ``recurrent``, ``scan``); public helpers :func:`lambda_from_params`,
:func:`gamma_from_lambda`, :func:`ring_init`.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl.ssm.lru.reference import gamma_from_lambda, lambda_from_params, ring_init

__all__ = ["lru_ssm", "lru_ssm_vjp", "lambda_from_params", "gamma_from_lambda", "ring_init", "LRU_SSM"]

LRU_SSM = register("refimpl.ssm.lru_ssm", {
    ("recurrent", "numpy"): "refimpl.ssm.lru.reference:recurrent",
    ("recurrent", "numba"): "refimpl.ssm.lru.numba:recurrent",
    ("scan", "numpy"): "refimpl.ssm.lru.reference:scan",
    ("scan", "cuda"): "refimpl.ssm.s5.cuda:lru_scan",
})

LRU_SSM_VJP = register("refimpl.ssm.lru_ssm_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.lru.backward:recurrent_vjp",
})


def lru_ssm(nu_log, theta_log, gamma_log, B, C, D, u, *, view: str = "recurrent", backend: str = "numpy",
            initial_state=None, return_final_state: bool = False):
    r"""The LRU: ``x_t = lambda x_{t-1} + gamma (B u_t)``, ``y_t = Re(C x_t) + D u_t``, with
    ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` and ``gamma = exp(gamma_log)``.

    Shapes: ``nu_log, theta_log, gamma_log (n)`` real, ``B (n d)``, ``C (d n)`` complex, ``D (d)``,
    ``u (b l d)`` real -> ``y (b l d)`` real; state ``(b n)`` complex.
    ``view``: ``"recurrent"`` (``numpy``, ``numba``) or ``"scan"`` (the associative scan; ``numpy``, ``cuda`` -- the parallel scan on the GPU).
    ``initial_state (b n)``: ``x_{-1}`` (default 0); ``return_final_state=True`` returns ``(y, x_{l-1})``.
    """
    return LRU_SSM.get(view, backend)(nu_log, theta_log, gamma_log, B, C, D, u, initial_state=initial_state,
                                      return_final_state=return_final_state)


def lru_ssm_vjp(nu_log, theta_log, gamma_log, B, C, D, u, *, dy, d_final_state=None, initial_state=None,
                view: str = "recurrent", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`lru_ssm`: ``{nu_log, theta_log, gamma_log, B, C, D, u}`` gradients (and
    ``initial_state`` when given) from ``dy (b l d)`` and ``d_final_state (b n)`` (the final state's cotangent).

    The adjoint is the reverse scan ``g_t = conj(lambda) g_{t+1} + C^H dy_t`` (:mod:`refimpl.ssm.lru.backward`);
    complex convention: the gradient of ``z = a + i b`` is ``dL/da + i dL/db`` (PyTorch's).
    """
    return LRU_SSM_VJP.get(view, backend)(nu_log, theta_log, gamma_log, B, C, D, u, dy=dy,
                                          d_final_state=d_final_state, initial_state=initial_state)
