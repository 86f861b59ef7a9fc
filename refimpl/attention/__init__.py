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

Efficient attention ("Lost in Context": sparse patterns, low rank, chunking, LSH, attention-free):

* :func:`sparse_attention` (``refimpl.attention.sparse``) -- softmax attention over a fixed pattern built by
  :func:`sliding_window_pattern`, :func:`longformer_pattern`, :func:`strided_pattern`, :func:`fixed_pattern`,
  :func:`bigbird_pattern`; views ``materialized`` (numpy), ``block_sparse`` (numpy, numba: one block-sparse kernel).
* :func:`linformer_attention` (``refimpl.attention.linformer``) -- views ``materialized`` (numpy), ``tiled``
  (numba: BLAS projections, then the flash kernel); :func:`linformer_layer` (the paper's parameter sharing),
  :func:`linformer_stack` (layerwise sharing).
* :func:`lsh_attention` (``refimpl.attention.lsh``) -- Reformer's shared-QK LSH attention; views ``sorted``
  (numpy, numba), ``materialized`` (numpy); :func:`hash_buckets`, :func:`random_rotations`.
* :func:`gated_attention_unit`, :func:`mixed_chunk_attention` (``refimpl.attention.gau``) -- GAU and FLASH's
  mixed-chunk attention (Hua et al. 2022).
* :func:`aft_attention` (``refimpl.attention.aft``) -- AFT-full/simple/local (Zhai et al. 2021); views
  ``materialized`` (numpy) and ``windowed`` (numpy, numba: linear in L for AFT-local and AFT-simple).
* :func:`mega_layer` (``refimpl.attention.mega``) -- the Mega layer (Ma et al.): the damped EMA of
  ``refimpl.ssm.mega_ema`` feeding single-head gated attention, and its chunked form.

Each folder holds ``reference.py`` (the literal NumPy views), ``numba.py`` (the CPU kernels) and a ``README.md``
deriving the math.  The softmax function itself is ``refimpl.attention.softmax.softmax`` (not re-exported here:
the name belongs to the folder).
"""
from refimpl.attention.delta import beta_from_inputs, delta_rule, delta_rule_vjp
from refimpl.attention.fast_weights import fast_weight_memory, fast_weight_memory_vjp, fast_weight_programmer
from refimpl.attention.features import feature_map, feature_map_vjp, random_features, random_projection
from refimpl.attention.linear import (causal_recurrent_offsets, linear_attention, linear_attention_vjp, performer_attention,
                                     performer_attention_vjp)
from refimpl.attention.memory import retrieve, store
from refimpl.attention.positional import sinusoidal_positions
from refimpl.attention.softmax import (causal_mask, logsumexp, multi_head_attention, multi_head_attention_vjp,
                                      scaled_dot_product_attention, scaled_dot_product_attention_vjp)
from refimpl.attention.sparse import (bigbird_pattern, fixed_pattern, longformer_pattern, sliding_window_pattern,
                                      sparse_attention, sparse_attention_vjp, strided_pattern)
from refimpl.attention.linformer import linformer_attention, linformer_attention_vjp, linformer_layer, linformer_stack
from refimpl.attention.lsh import hash_buckets, lsh_attention, lsh_attention_vjp, normalize_keys, random_rotations
from refimpl.attention.gau import (gated_attention_unit, gated_attention_unit_vjp, mixed_chunk_attention,
                                  mixed_chunk_attention_vjp)
from refimpl.attention.aft import aft_attention, aft_attention_vjp
from refimpl.attention.mega import mega_layer, mega_layer_vjp

__all__ = [
    "scaled_dot_product_attention", "multi_head_attention", "causal_mask", "logsumexp",
    "linear_attention", "performer_attention", "causal_recurrent_offsets",
    "feature_map", "random_features", "random_projection",
    "fast_weight_memory", "fast_weight_programmer",
    "delta_rule", "beta_from_inputs",
    "store", "retrieve",
    "sinusoidal_positions",
    "sparse_attention", "sliding_window_pattern", "longformer_pattern", "strided_pattern", "fixed_pattern",
    "bigbird_pattern",
    "linformer_attention", "linformer_layer", "linformer_stack",
    "lsh_attention", "hash_buckets", "random_rotations", "normalize_keys",
    "gated_attention_unit", "mixed_chunk_attention",
    "aft_attention",
    "mega_layer",
    # the backward passes (vector-Jacobian products): one per differentiable entry point
    "scaled_dot_product_attention_vjp", "linear_attention_vjp", "feature_map_vjp", "fast_weight_memory_vjp",
    "delta_rule_vjp", "sparse_attention_vjp", "linformer_attention_vjp", "lsh_attention_vjp",
    "gated_attention_unit_vjp", "mixed_chunk_attention_vjp", "aft_attention_vjp", "mega_layer_vjp",
    "multi_head_attention_vjp", "performer_attention_vjp",
]
