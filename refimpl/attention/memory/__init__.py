"""refimpl.attention.memory: associative memory, sparse binary keys, the Hamming bound (see README.md here)."""
from refimpl.attention.memory.reference import (build_memory, expected_crosstalk, hamming_bound, hamming_bound_entropy,
                                                retrieval_quality, retrieve, sparse_binary_keys, store)

__all__ = ["store", "retrieve", "build_memory", "sparse_binary_keys", "retrieval_quality", "expected_crosstalk",
           "hamming_bound", "hamming_bound_entropy"]
