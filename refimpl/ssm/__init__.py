"""State space models.

One entry point per algorithm, each ``fn(..., view=..., backend=...)`` (vocabulary: ``docs/glossary.md``):

SSM core
* :func:`discretize` (``refimpl.ssm.discretization``) -- continuous ``(A, B)`` -> ``(A_bar, B_bar)``: zoh, bilinear,
  gbt, forward/backward Euler, Mamba's mix; :func:`phi1` (the one ``(e^z - 1)/z`` of the package), :func:`phi1_dense`.
* :func:`lti_ssm` (``refimpl.ssm.lti``) -- a discrete linear SSM; views ``recurrent`` (numpy, numba, cuda),
  ``convolution`` (numpy, numba), ``fft``, ``scan``, ``chunked``; :func:`lti_kernel` (numpy, numba).

Structured SSMs
* :func:`hippo_transition`, :func:`hippo_projection` (``refimpl.ssm.hippo``) -- LegS/LegT/LMU/LagT/FouT.
* :func:`s4_kernel`, :func:`cauchy` (``refimpl.ssm.s4``) -- NPLR/DPLR, the generating function (Cauchy + Woodbury).
* :func:`s4d_kernel`, :func:`dss_kernel`, :func:`vandermonde` (``refimpl.ssm.s4d``).
* :func:`s5_ssm`, :func:`diag_scan` (``refimpl.ssm.s5``); :func:`lru_ssm` (``refimpl.ssm.lru``);
  :func:`mega_ema` (``refimpl.ssm.ema``).

Selective
* :func:`selective_scan`, :func:`selective_step` (``refimpl.ssm.selective``) -- Mamba's S6; views ``recurrent``
  (numpy, numba), ``scan``, ``chunked``.
* :func:`ssd_scan`, :func:`ssd_step` (``refimpl.ssm.ssd``) -- Mamba-2's SSD; views ``recurrent``, ``quadratic``,
  ``chunked`` (numpy, numba).

Each folder holds ``reference.py`` (the literal NumPy views), ``numba.py`` / ``cuda.py`` (the kernels) and a
``README.md`` deriving the math.
"""
from refimpl.ssm.discretization import discretize, discretize_vjp, phi1, phi1_dense
from refimpl.ssm.ema import mega_ema, mega_ema_vjp
from refimpl.ssm.hippo import hippo_projection, hippo_projection_vjp, hippo_transition
from refimpl.ssm.lru import lru_ssm, lru_ssm_vjp
from refimpl.ssm.lti import lti_kernel, lti_ssm, lti_ssm_vjp
from refimpl.ssm.s4 import cauchy, nplr, s4_kernel, s4_kernel_vjp
from refimpl.ssm.s4d import dss_kernel, dss_kernel_vjp, s4d_kernel, s4d_kernel_vjp, vandermonde
from refimpl.ssm.s5 import diag_scan, s5_ssm, s5_ssm_vjp
from refimpl.ssm.selective import selective_scan, selective_scan_vjp, selective_step
from refimpl.ssm.ssd import ssd_scan, ssd_scan_vjp, ssd_step

__all__ = [
    "discretize", "phi1", "phi1_dense", "lti_ssm", "lti_kernel",
    "hippo_transition", "hippo_projection", "s4_kernel", "cauchy", "nplr", "s4d_kernel", "dss_kernel", "vandermonde",
    "s5_ssm", "diag_scan", "lru_ssm", "mega_ema",
    "selective_scan", "selective_step", "ssd_scan", "ssd_step",
    # the backward passes (vector-Jacobian products): one per differentiable entry point
    "discretize_vjp", "lti_ssm_vjp", "s4_kernel_vjp", "s4d_kernel_vjp", "dss_kernel_vjp", "s5_ssm_vjp", "lru_ssm_vjp",
    "mega_ema_vjp", "hippo_projection_vjp", "selective_scan_vjp", "ssd_scan_vjp",
]
