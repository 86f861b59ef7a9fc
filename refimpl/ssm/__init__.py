"""State space models.

SSM core (LTI):
* :mod:`refimpl.ssm.discretization.reference` -- continuous (A, B) -> discrete (A_bar, B_bar): zoh, bilinear, gbt,
  forward/backward Euler, Mamba's mix.
* :mod:`refimpl.ssm.lti.reference` -- the NumPy reference views of a discrete linear SSM: recurrent, kernel + direct/FFT
  convolution, parallel scan, chunked.
* :mod:`refimpl.ssm.lti.numba` -- Numba recurrence and convolution kernel / causal convolution.
* :mod:`refimpl.ssm.lti.cuda` -- numba.cuda diagonal recurrence (CuPy arrays on a GPU; the simulator in CI).

Structured SSMs:
* :mod:`refimpl.ssm.hippo.reference` -- HiPPO matrices (LegS/LegT/LMU/LagT/FouT), online projection, reconstruction.
* :mod:`refimpl.ssm.s4.reference` -- NPLR/DPLR and the generating-function (Cauchy + Woodbury) kernel.
* :mod:`refimpl.ssm.s4d.reference` -- S4D inits and Vandermonde kernels, DSS.
* :mod:`refimpl.ssm.s5.reference`, :mod:`refimpl.ssm.lru.reference`, :mod:`refimpl.ssm.ema.reference` -- S5, LRU, MEGA's damped EMA.
* :mod:`refimpl.ssm.structured_numba` -- Numba Cauchy, Vandermonde and diagonal complex scan.

Selective:
* :mod:`refimpl.ssm.selective.reference`, :mod:`refimpl.ssm.selective.numba` -- Mamba's selective scan (S6).
* :mod:`refimpl.ssm.ssd.reference`, :mod:`refimpl.ssm.ssd.numba` -- Mamba-2's state space duality (SSD).
"""
