"""Attention: exact softmax attention, kernelized (linear) attention, fast weights, the delta rule,
associative memory.

* :mod:`refimpl.attention.softmax` -- scaled dot-product / multi-head attention, causal alignments, masks.
* :mod:`refimpl.attention.positional` -- sinusoidal positional encodings.
* :mod:`refimpl.attention.features` -- feature maps (identity, elu+1, DPFP, Performer trig/positive/hyperbolic),
  random projections (iid / sign-fixed orthogonal, chi / fixed norms), stabilizers.
* :mod:`refimpl.attention.linear` -- linear attention views (non-causal, causal quadratic, recurrent, chunked,
  offset-carrying recurrent) and ``performer_attention``.
* :mod:`refimpl.attention.fast_weights` -- fast weight programmers.
* :mod:`refimpl.attention.delta` -- the (gated) delta rule: recurrence and chunked WY form.
* :mod:`refimpl.attention.memory` -- associative memory, sparse keys, Hamming bound.
* :mod:`refimpl.attention.kernels_numba` -- Numba kernels.
"""
from refimpl.attention import delta, fast_weights, features, linear, memory, positional, softmax  # noqa: F401
