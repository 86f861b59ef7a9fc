"""refimpl: reference implementations of sequence mixers, each twice.

* ``refimpl.ssm`` -- continuous SSMs, discretizations, LTI views (recurrence,
  convolution, scan, chunked), and the fast Numba kernels.

Every algorithm has a literal NumPy reference (float64 by default, the
equations in comments) and a fast kernel that matches it by property test.
The independent oracles live in the sibling package ``oracles``.
"""
__version__ = "0.1.0"
