"""Attention: exact softmax attention, kernelized (linear) attention, fast weights, the delta rule,
associative memory, positional encodings.

One entry point per algorithm, each ``fn(..., view=..., backend=...)`` (vocabulary: ``docs/glossary.md``):

* :func:`scaled_dot_product_attention` (``refimpl.attention.softmax``) -- views ``materialized`` (numpy),
  ``tiled`` (numba: FlashAttention's online softmax); ``causal`` a bool, ``alignment`` names the diagonal;
  :func:`multi_head_attention` with ``W_Q, W_K, W_V, W_O``.
* :func:`linear_attention` (``refimpl.attention.linear``) -- views ``quadratic`` (numpy), ``recurrent`` and
  ``chunked`` (numpy, numba); :func:`performer_attention` (FAVOR+); :func:`causal_recurrent_offsets`.
* :func:`feature_map` (``refimpl.attention.features``) -- identity, elu+1, DPFP, Performer trig/positive/hyperbolic
  (numpy, numba); :func:`random_projection` (iid / sign-fixed orthogonal, chi / fixed norms).
* :func:`fast_weight_memory`, :func:`fast_weight_programmer` (``refimpl.attention.fast_weights``).
* :func:`delta_rule` (``refimpl.attention.delta``) -- views ``recurrent`` (numpy), ``chunked`` (numpy, numba: WY form).
* ``refimpl.attention.memory`` -- associative memory: :func:`store`, :func:`retrieve`, sparse keys, Hamming bound.
* :func:`sinusoidal_positions` (``refimpl.attention.positional``).

Each folder holds ``reference.py`` (the literal NumPy views), ``numba.py`` (the CPU kernels) and a ``README.md``
deriving the math.  The softmax function itself is ``refimpl.attention.softmax.softmax`` (not re-exported here:
the name belongs to the folder).
"""
from refimpl.attention.delta import beta_from_inputs, delta_rule
from refimpl.attention.fast_weights import fast_weight_memory, fast_weight_programmer
from refimpl.attention.features import feature_map, random_features, random_projection
from refimpl.attention.linear import causal_recurrent_offsets, linear_attention, performer_attention
from refimpl.attention.memory import retrieve, store
from refimpl.attention.positional import sinusoidal_positions
from refimpl.attention.softmax import causal_mask, logsumexp, multi_head_attention, scaled_dot_product_attention

__all__ = [
    "scaled_dot_product_attention", "multi_head_attention", "causal_mask", "logsumexp",
    "linear_attention", "performer_attention", "causal_recurrent_offsets",
    "feature_map", "random_features", "random_projection",
    "fast_weight_memory", "fast_weight_programmer",
    "delta_rule", "beta_from_inputs",
    "store", "retrieve",
    "sinusoidal_positions",
]
