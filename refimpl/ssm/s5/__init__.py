"""refimpl.ssm.s5: S5, the MIMO diagonal SSM run by a parallel scan (see README.md in this folder).

Entry point: :func:`s5_ssm` (views ``scan``, ``recurrent``); public helpers :func:`discretize_s5`,
:func:`associative_scan`, :func:`binary_op`, :func:`diag_scan`, :func:`hippo_n_init`, :func:`init`.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl.ssm.s5.reference import REAL_OUTPUTS, associative_scan, binary_op, discretize_s5, hippo_n_init, init

__all__ = ["s5_ssm", "s5_ssm_vjp", "diag_scan", "discretize_s5", "associative_scan", "binary_op", "hippo_n_init",
           "init",
           "REAL_OUTPUTS", "S5_SSM", "S5_SSM_VJP", "DIAG_SCAN"]

S5_SSM = register("refimpl.ssm.s5_ssm", {
    ("scan", "numpy"): "refimpl.ssm.s5.reference:scan",
    ("recurrent", "numpy"): "refimpl.ssm.s5.reference:recurrent",
    ("recurrent", "numba"): "refimpl.ssm.s5.numba:recurrent",
    ("scan", "cuda"): "refimpl.ssm.s5.cuda:scan",
})

S5_SSM_VJP = register("refimpl.ssm.s5_ssm_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.s5.backward:recurrent_vjp",
})

DIAG_SCAN = register("refimpl.ssm.diag_scan", {
    ("recurrent", "numpy"): "refimpl.ssm.s5.reference:diag_scan",
    ("recurrent", "numba"): "refimpl.ssm.s5.numba:diag_scan",
    ("recurrent", "cuda"): "refimpl.ssm.s5.cuda:diag_scan",
})


def s5_ssm(Lambda, B_tilde, C_tilde, D, dt, u, *, view: str = "scan", backend: str = "numpy", method: str = "zoh",
           output: str, C_back=None, initial_state=None, return_final_state: bool = False):
    r"""The S5 layer: ``x_t = Lambda_bar * x_{t-1} + B_bar u_t``, ``y_t = Re(C~ x_t) + D u_t`` (2 Re for ``2re``).

    Shapes: ``Lambda (n)`` complex, ``B_tilde (n d)``, ``C_tilde (d n)``, ``D (d)`` or None, ``dt`` a positive
    scalar or ``(n,)`` (one step per state), ``u (b l d)`` real -> ``y (b l d)`` real; state ``(b n)`` complex.

    ``view``: ``"scan"`` (the associative scan; ``numpy``, ``cuda`` -- the chunked Kogge-Stone scan on the GPU) or ``"recurrent"`` (the step-by-step loop; ``numpy``,
    ``numba``).  ``method``: ``"zoh"`` or ``"bilinear"`` (per state).  ``output`` (required): ``"re"`` (full
    spectrum) or ``"2re"`` (one eigenvalue of each conjugate pair).  ``C_back (d n)``: the bidirectional model.
    ``initial_state (b n)``: ``x_{-1}`` (default 0); ``return_final_state=True`` returns ``(y, x_{l-1})``.
    """
    return S5_SSM.get(view, backend)(Lambda, B_tilde, C_tilde, D, dt, u, method=method, output=output, C_back=C_back,
                                     initial_state=initial_state, return_final_state=return_final_state)


def s5_ssm_vjp(Lambda, B_tilde, C_tilde, D, dt, u, *, dy, d_final_state=None, method: str = "zoh", output: str,
               C_back=None, initial_state=None, view: str = "recurrent", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`s5_ssm`: ``{Lambda, B_tilde, C_tilde, D, dt, u}`` gradients (and
    ``C_back``, ``initial_state`` when given; ``D`` when not None) from ``dy (b l d)`` and ``d_final_state (b n)``
    (the final state's cotangent; passing it means the forward returns the final state).

    The adjoint is the reverse scan ``g_t = conj(Lambda_bar) g_{t+1} + f C~^H dy_t`` (:mod:`refimpl.ssm.s5.backward`),
    then the discretization's VJP; complex convention: the gradient of ``z = a + i b`` is ``dL/da + i dL/db``
    (PyTorch's).  ``view``: ``"recurrent"`` (``numpy``).
    """
    return S5_SSM_VJP.get(view, backend)(Lambda, B_tilde, C_tilde, D, dt, u, dy=dy, d_final_state=d_final_state,
                                         method=method, output=output, C_back=C_back, initial_state=initial_state)


def diag_scan(a, b, *, initial_state=None, backend: str = "numpy"):
    r"""All states of ``s_t = a_t * s_{t-1} + b_t``: ``a (l n)`` or ``(n)``, ``b (b l n)``, ``initial_state (b n)``
    -> ``(b l n)`` complex.  ``backend``: ``"numpy"`` (the literal loop), ``"numba"`` or ``"cuda"`` (the parallel scan;
    NumPy or CuPy arrays)."""
    return DIAG_SCAN.get("recurrent", backend)(a, b, initial_state)
