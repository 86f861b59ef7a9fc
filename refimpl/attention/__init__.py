"""Attention: exact softmax attention, kernelized (linear) attention, fast weights, the delta rule,
associative memory.

* :mod:`refimpl.attention.softmax.reference` -- scaled dot-product / multi-head attention, causal alignments, masks.
* :mod:`refimpl.attention.positional.reference` -- sinusoidal positional encodings.
* :mod:`refimpl.attention.features.reference` -- feature maps (identity, elu+1, DPFP, Performer trig/positive/hyperbolic),
  random projections (iid / sign-fixed orthogonal, chi / fixed norms), stabilizers.
* :mod:`refimpl.attention.linear.reference` -- linear attention views (non-causal, causal quadratic, recurrent, chunked,
  offset-carrying recurrent) and ``performer_attention``.
* :mod:`refimpl.attention.fast_weights.reference` -- fast weight programmers.
* :mod:`refimpl.attention.delta.reference` -- the (gated) delta rule: recurrence and chunked WY form.
* :mod:`refimpl.attention.memory.reference` -- associative memory, sparse keys, Hamming bound.
* :mod:`refimpl.attention.kernels_numba` -- Numba kernels.
"""
