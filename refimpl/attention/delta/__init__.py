"""refimpl.attention.delta: the delta rule and the gated delta rule (see README.md in this folder).

One entry point, :func:`delta_rule`, with two views: ``recurrent`` (the literal recurrence; numpy) and
``chunked`` (the WY form, one triangular solve per chunk; numpy and numba).  Its backward,
:func:`delta_rule_vjp`: the same two views (:mod:`refimpl.attention.delta.backward`, the reverse scan and the
chunked WY adjoint; the chunked one also in Numba, :mod:`refimpl.attention.delta.numba_backward`).
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl._validate import check_int
from refimpl.attention.delta.reference import KEY_NORMS, beta_from_inputs, normalize_vectors

__all__ = ["delta_rule", "delta_rule_vjp", "beta_from_inputs", "normalize_vectors", "KEY_NORMS", "IMPLEMENTATIONS",
           "VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.delta_rule", {
    ("recurrent", "numpy"): "refimpl.attention.delta.reference:recurrent",
    ("chunked", "numpy"): "refimpl.attention.delta.reference:chunked",
    ("chunked", "numba"): "refimpl.attention.delta.numba:delta_chunked",
    ("chunked", "cuda"): "refimpl.attention.delta.cuda:delta_chunked",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.delta_rule_vjp", {
    ("recurrent", "numpy"): "refimpl.attention.delta.backward:recurrent_vjp",
    ("chunked", "numpy"): "refimpl.attention.delta.backward:chunked_vjp",
    ("chunked", "numba"): "refimpl.attention.delta.numba_backward:delta_chunked_vjp",
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


def delta_rule_vjp(q, k, v, beta, *, do, d_final_state=None, decay=None, initial_state=None, chunk: int = 64,
                   key_norm=None, query_norm=None, scale: float = 1.0, view: str = "recurrent",
                   backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`delta_rule` (the adjoint equations, written by hand, in
    :mod:`refimpl.attention.delta.backward`).

    ``do (b l h p)``: the cotangent of ``o``; ``d_final_state (b h p n)``: the cotangent of the final state (passing
    it means the forward is taken to return it).  The other arguments are :func:`delta_rule`'s.  Returns
    ``{"q", "k", "v", "beta"[, "decay"][, "initial_state"]}``: the gradients of the real loss
    ``sum do * o + sum d_final_state * S_L`` for every differentiable argument given, each with its argument's
    shape, in the working dtype (float32 only when every input and cotangent is float32).  ``view, backend``:
    ``recurrent``/numpy (the reverse scan), ``chunked``/numpy|numba (the
    WY-form adjoint, chunk by chunk, with the inter-chunk reverse state-gradient scan).
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    chunk = check_int(chunk, "chunk", minimum=1)
    kw = dict(do=do, d_final_state=d_final_state, decay=decay, initial_state=initial_state, key_norm=key_norm,
              query_norm=query_norm, scale=scale)
    if view == "chunked":
        kw["chunk"] = chunk
    return impl(q, k, v, beta, **kw)
