"""State space models.

* :mod:`refimpl.ssm.discretize` -- continuous (A, B) -> discrete (A_bar, B_bar): zoh, bilinear, gbt,
  forward/backward Euler, Mamba's mix.
* :mod:`refimpl.ssm.lti` -- the NumPy reference views of a discrete linear SSM: recurrent, kernel +
  direct/FFT convolution, parallel scan, chunked.
* :mod:`refimpl.ssm.lti_numba` -- Numba kernels for the recurrence and the convolution kernel/causal conv.
"""
from refimpl.ssm import discretize, lti  # noqa: F401
