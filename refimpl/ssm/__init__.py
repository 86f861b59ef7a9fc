"""State space models.

SSM core (LTI):
* :mod:`refimpl.ssm.discretize` -- continuous (A, B) -> discrete (A_bar, B_bar): zoh, bilinear, gbt,
  forward/backward Euler, Mamba's mix.
* :mod:`refimpl.ssm.lti` -- the NumPy reference views of a discrete linear SSM: recurrent, kernel + direct/FFT
  convolution, parallel scan, chunked.
* :mod:`refimpl.ssm.lti_numba` -- Numba recurrence and convolution kernel / causal convolution.
* :mod:`refimpl.ssm.lti_cuda` -- numba.cuda diagonal recurrence (CuPy arrays on a GPU; the simulator in CI).

Structured SSMs:
* :mod:`refimpl.ssm.hippo` -- HiPPO matrices (LegS/LegT/LMU/LagT/FouT), online projection, reconstruction.
* :mod:`refimpl.ssm.s4` -- NPLR/DPLR and the generating-function (Cauchy + Woodbury) kernel.
* :mod:`refimpl.ssm.s4d` -- S4D inits and Vandermonde kernels, DSS.
* :mod:`refimpl.ssm.s5`, :mod:`refimpl.ssm.lru`, :mod:`refimpl.ssm.ema` -- S5, LRU, MEGA's damped EMA.
* :mod:`refimpl.ssm.structured_numba` -- Numba Cauchy, Vandermonde and diagonal complex scan.

Selective:
* :mod:`refimpl.ssm.selective`, :mod:`refimpl.ssm.selective_numba` -- Mamba's selective scan (S6).
* :mod:`refimpl.ssm.ssd`, :mod:`refimpl.ssm.ssd_numba` -- Mamba-2's state space duality (SSD).
"""
from refimpl.ssm import discretize, lti  # noqa: F401
