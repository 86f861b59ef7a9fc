"""refimpl: reference implementations of sequence mixers, each twice.

``import refimpl`` gives every family:

* :mod:`refimpl.ssm` -- continuous SSMs and discretizations, the LTI views, HiPPO, S4, S4D/DSS, S5, LRU, MEGA's
  EMA, Mamba's selective scan (S6), Mamba-2's SSD (``refimpl.ssm.selective_scan``, ``refimpl.ssm.ssd_scan``, ...);
* :mod:`refimpl.attention` -- softmax attention, linear attention and feature maps (Performer), fast weights,
  the delta rule, associative memory, positional encodings (``refimpl.attention.linear_attention``, ...).

Every algorithm has one entry point ``fn(..., view=..., backend="numpy" | "numba" | "cuda")``: a literal NumPy
reference (float64 by default, the equations in comments; ``backend="numpy"``) and fast kernels that match it by
property test.  :func:`entry_points` lists them with their ``(view, backend)`` pairs.  The vocabulary (shape
letters, layouts, argument names) is ``docs/glossary.md``.  Package internals: ``refimpl._validate`` (input
checks), ``refimpl._dispatch`` (the view/backend tables), ``refimpl._numba`` (JIT warm-up), ``refimpl._blas`` and
``refimpl._fastmath`` (kernel building blocks).

The independent oracles and the conformance layer (``refimpl report``, ``refimpl verify``) live in the sibling
package ``oracles``; ``refimpl`` imports nothing from it.
"""
from refimpl import attention, ssm

__version__ = "0.1.0"

__all__ = ["ssm", "attention", "entry_points", "__version__"]


def entry_points():
    """``{public name: ((view, backend), ...)}`` for every algorithm's entry point."""
    from refimpl._dispatch import registered

    return {name: impl.pairs() for name, impl in sorted(registered().items())}
