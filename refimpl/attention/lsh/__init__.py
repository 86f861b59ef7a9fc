"""refimpl.attention.lsh: Reformer LSH attention (Kitaev et al. 2020; see README.md in this folder).

One entry point, :func:`lsh_attention`, with two views:

* ``"sorted"`` -- the paper's algorithm: hash, sort by (bucket, position), chunks attending to themselves and the
  previous chunk, unsort, rounds combined by their log-sum-exp (``backend="numpy"``:
  :func:`refimpl.attention.lsh.reference.sorted_chunks`; ``backend="numba"``:
  :func:`refimpl.attention.lsh.numba.lsh_attention_kernel`);
* ``"materialized"`` -- every round's ``(l l)`` mask built from the buckets and chunks, then one dense softmax over
  all rounds' entries with the counts (``backend="numpy"``: :func:`refimpl.attention.lsh.reference.materialized`).

The backward, with the buckets fixed (hashing is piecewise constant: its derivative is zero almost everywhere):
:func:`lsh_attention_vjp`, views ``"sorted"`` and ``"materialized"`` (:mod:`refimpl.attention.lsh.backward`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import register
from refimpl.attention.lsh.reference import SELF_RULE, hash_buckets, normalize_keys, random_rotations

__all__ = ["lsh_attention", "lsh_attention_vjp", "VJP_IMPLEMENTATIONS",
           "hash_buckets", "random_rotations", "normalize_keys", "SELF_RULE", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.lsh_attention", {
    ("sorted", "numpy"): "refimpl.attention.lsh.reference:sorted_chunks",
    ("materialized", "numpy"): "refimpl.attention.lsh.reference:materialized",
    ("sorted", "numba"): "refimpl.attention.lsh.numba:lsh_attention_kernel",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.lsh_attention_vjp", {
    ("sorted", "numpy"): "refimpl.attention.lsh.backward:sorted_vjp",
    ("materialized", "numpy"): "refimpl.attention.lsh.backward:materialized_vjp",
})


def lsh_attention(qk, v, *, buckets=None, rotations=None, seed: Optional[int] = None,
                  n_buckets: Optional[int] = None, n_rounds: Optional[int] = None, chunk: int = 64,
                  causal: bool = False, scale: Optional[float] = None, wrap: bool = False, view: str = "sorted",
                  backend: str = "numpy"):
    r"""Reformer LSH attention with shared QK: ``o (b l h p)`` from ``qk (b l h n)`` and ``v (b l h p)``.

    Queries are ``qk``, keys ``qk_j / ||qk_j||``; scores ``scale q_i . k_j`` (``scale=None`` -> ``n^{-1/2}``, the paper).
    Exactly one of:

    * ``buckets`` ``(b l h z)`` integers >= 0 (hashing skipped: a deterministic verification);
    * ``rotations`` ``(z n u)``: ``bucket = argmax([x R_r ; -x R_r])``, ``n_buckets = 2u``;
    * ``seed`` with ``n_buckets`` (even) and ``n_rounds``: rotations drawn by ``random_rotations``.

    ``chunk`` = ``c`` sorted positions per chunk (any ``l``; the last chunk may be short); each chunk attends to
    itself and the previous chunk (``wrap=True``: chunk 0 also to the last, as trax; the paper has no wrap),
    only to keys of the query's bucket, ``j <= i`` when ``causal``; never to itself unless nothing else is there;
    a key seen in ``N`` rounds has its score lowered by ``log N`` and the rounds combine by their log-sum-exp.
    ``view``/``backend``: ``("sorted", "numpy")`` (default), ``("materialized", "numpy")``, ``("sorted", "numba")``.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    return impl(qk, v, buckets=buckets, rotations=rotations, seed=seed, n_buckets=n_buckets, n_rounds=n_rounds,
                chunk=chunk, causal=causal, scale=scale, wrap=wrap)


def lsh_attention_vjp(qk, v, *, do, buckets=None, rotations=None, seed: Optional[int] = None,
                      n_buckets: Optional[int] = None, n_rounds: Optional[int] = None, chunk: int = 64,
                      causal: bool = False, scale: Optional[float] = None, wrap: bool = False, view: str = "sorted",
                      backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`lsh_attention` with the buckets fixed
    (:mod:`refimpl.attention.lsh.backward`).

    Hashing is piecewise constant, so its derivative is zero almost everywhere: the gradient is the attention's
    with the sort, chunks, masks and counts held fixed, through the key normalization ``k_j = qk_j / ||qk_j||``
    (shared QK).  ``do (b l h p)``: the cotangent of ``o``.  Returns ``{"qk": dqk, "v": dv}`` (the buckets, seed and
    rotations get no entry).  ``view, backend``: ``("sorted", "numpy")`` (default) or ``("materialized", "numpy")``.
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    return impl(qk, v, do=do, buckets=buckets, rotations=rotations, seed=seed, n_buckets=n_buckets,
                n_rounds=n_rounds, chunk=chunk, causal=causal, scale=scale, wrap=wrap)
