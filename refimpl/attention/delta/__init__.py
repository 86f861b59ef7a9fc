"""refimpl.attention.delta: the delta rule and the gated delta rule (see README.md in this folder).

One entry point, :func:`delta_rule`, with two views: ``recurrent`` (the literal recurrence; numpy) and
``chunked`` (the WY form, one triangular solve per chunk; numpy and numba).
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl._validate import check_int
from refimpl.attention.delta.reference import KEY_NORMS, beta_from_inputs, normalize_vectors

__all__ = ["delta_rule", "beta_from_inputs", "normalize_vectors", "KEY_NORMS", "IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.delta_rule", {
    ("recurrent", "numpy"): "refimpl.attention.delta.reference:recurrent",
    ("chunked", "numpy"): "refimpl.attention.delta.reference:chunked",
    ("chunked", "numba"): "refimpl.attention.delta.numba:delta_chunked",
})


def delta_rule(q, k, v, beta, *, decay=None, view: str = "recurrent", backend: str = "numpy", initial_state=None,
               return_final_state: bool = False, chunk: int = 64, key_norm=None, query_norm=None,
               scale: float = 1.0):
    r"""The (gated) delta rule: ``S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T``,
    ``o_t = S_t (scale q_t)``.

    Parameters
    ----------
    q, k : ``(b l h n)``; v : ``(b l h p)``; beta : ``(b l h)``, the write strengths.
    decay : ``(b l h)`` in ``(0, 1]``, the gate ``alpha_t`` of the gated rule; ``None`` is the plain rule (``alpha = 1``).
    view, backend : ``recurrent``/numpy, ``chunked``/numpy|numba.
    initial_state : ``S (b h p n)`` before step 0 (default zero).
    return_final_state : return ``(o, S_L)``.
    chunk : the chunk length of the ``chunked`` view.
    key_norm, query_norm : ``None``, ``"sum"`` or ``"l2"``, applied to ``k`` / ``q`` before anything else.
    scale : multiplies the (normalized) query; the text's rule has none (1).

    Returns ``o (b l h p)`` (and the final state).
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    chunk = check_int(chunk, "chunk", minimum=1)
    kw = dict(decay=decay, initial_state=initial_state, return_final_state=return_final_state, key_norm=key_norm,
              query_norm=query_norm, scale=scale)
    if view == "chunked":
        kw["chunk"] = chunk
    return impl(q, k, v, beta, **kw)
