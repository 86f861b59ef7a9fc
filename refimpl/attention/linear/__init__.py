"""refimpl.attention.linear: linear (kernelized) attention and Performer (see README.md in this folder).

One entry point, :func:`linear_attention`, with three views: ``quadratic`` (the materialized ``phi(Q) phi(K)^T``,
masked when causal; the only non-causal view), ``recurrent`` and ``chunked`` (causal); backends ``numpy``
(every view) and ``numba`` (``recurrent``, ``chunked``).  :func:`performer_attention` approximates softmax
attention with random features; :func:`causal_recurrent_offsets` is the offset-carrying recurrence its
``key_prefix_max`` stabilizer uses.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl._validate import check_bool, check_int
from refimpl.attention.linear.reference import (EPS_MODES, PERFORMER_STABILIZERS, STATE_LAYOUTS,
                                                causal_recurrent_offsets, performer_attention)

__all__ = ["linear_attention", "linear_attention_vjp", "performer_attention", "performer_attention_vjp",
           "causal_recurrent_offsets", "STATE_LAYOUTS", "EPS_MODES",
           "PERFORMER_STABILIZERS", "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS",
           "PERFORMER_VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.linear_attention", {
    ("quadratic", "numpy"): "refimpl.attention.linear.reference:quadratic",
    ("recurrent", "numpy"): "refimpl.attention.linear.reference:recurrent",
    ("recurrent", "numba"): "refimpl.attention.linear.numba:causal_recurrent",
    ("chunked", "numpy"): "refimpl.attention.linear.reference:chunked",
    ("chunked", "numba"): "refimpl.attention.linear.numba:causal_chunked",
    ("chunked", "cuda"): "refimpl.attention.linear.cuda:causal_chunked",
})


def linear_attention(phi_q, phi_k, v, *, causal: bool = True, view: str = "quadratic", backend: str = "numpy",
                     normalize: bool = True, eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk",
                     initial_state=None, return_final_state: bool = False, chunk: int = 64):
    r"""Linear attention on feature-mapped queries and keys.

    ``o_t = S_t phi(q_t) / (z_t^T phi(q_t) + eps)`` (``normalize=True``; ``eps_mode="clamp"``: ``/ max(., eps)``)
    or ``S_t phi(q_t)``, with ``S_t = S_0 + sum_{j <= t} v_j phi(k_j)^T``, ``z_t = z_0 + sum_{j <= t} phi(k_j)``
    (all ``j`` when ``causal=False``).

    Parameters
    ----------
    phi_q : ``(b l h n)``; phi_k : ``(b s h n)``; v : ``(b s h p)`` (``s = l`` when causal).
    causal : bool.  ``causal=False`` (every query reads every key) is the ``"quadratic"`` view only.
    view, backend : ``quadratic``/numpy, ``recurrent``/numpy|numba, ``chunked``/numpy|numba.
    state_layout : ``"vk"`` -- ``S (b h p n)``; ``"kv"`` -- ``S (b h n p)``.
    initial_state : ``(S, z)`` with ``z (b h n)`` when ``normalize=True``; ``S`` alone when ``normalize=False``.
    return_final_state : return ``(o, final_state)``, the final state in the form of ``initial_state``.
    chunk : the chunk length of the ``chunked`` view.

    Returns ``o (b l h p)`` (and the final state).
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    causal = check_bool(causal, "causal")
    chunk = check_int(chunk, "chunk", minimum=1)
    if not causal and view != "quadratic":
        raise ValueError(f"view: non-causal linear attention (causal=False) has the one view 'quadratic', "
                         f"got {view!r}")
    kw = dict(causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode, state_layout=state_layout,
              initial_state=initial_state, return_final_state=return_final_state)
    if view == "chunked":
        kw["chunk"] = chunk
    return impl(phi_q, phi_k, v, **kw)


VJP_IMPLEMENTATIONS = register("refimpl.attention.linear_attention_vjp", {
    ("quadratic", "numpy"): "refimpl.attention.linear.backward:quadratic_vjp",
    ("recurrent", "numpy"): "refimpl.attention.linear.backward:recurrent_vjp",
    ("chunked", "numpy"): "refimpl.attention.linear.backward:chunked_vjp",
    ("chunked", "numba"): "refimpl.attention.linear.numba_backward:causal_chunked_vjp",
})


def linear_attention_vjp(phi_q, phi_k, v, *, do, d_final_state=None, causal: bool = True, normalize: bool = True,
                         eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                         chunk: int = 64, view: str = "quadratic", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`linear_attention` (README "Backward"; :mod:`.backward`).

    The forward's arguments, then keyword-only: ``do (b l h p)`` the cotangent of ``o`` (required);
    ``d_final_state`` the cotangent of the final state (the pair ``(dS, dz)`` when normalized, ``dS`` alone when
    not, ``dS`` in ``state_layout``; passing it means the forward is taken to return its final state); the
    forward's keywords.  Views: ``quadratic`` (numpy; the masked matrix form and its transpose; the only
    non-causal view), ``recurrent`` (numpy; the reverse scan ``dS_t = dS_{t+1} + dnum_t phi(q_t)^T``),
    ``chunked`` (numpy, numba; intra-chunk quadratic adjoint + inter-chunk reverse state-gradient scan).

    Returns ``{"phi_q", "phi_k", "v"}`` gradients, and ``"initial_state"`` (``(dS_0, dz_0)`` or ``dS_0``, in the
    form and layout of ``initial_state``) when the initial state is given; in the working dtype (``result_dtype``
    of the inputs and cotangents: float32 only when all are float32).
    """
    impl = VJP_IMPLEMENTATIONS.get(view, backend)
    causal = check_bool(causal, "causal")
    chunk = check_int(chunk, "chunk", minimum=1)
    if not causal and view != "quadratic":
        raise ValueError(f"view: non-causal linear attention (causal=False) has the one view 'quadratic', "
                         f"got {view!r}")
    kw = dict(do=do, d_final_state=d_final_state, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
              state_layout=state_layout, initial_state=initial_state)
    if view == "chunked":
        kw["chunk"] = chunk
    return impl(phi_q, phi_k, v, **kw)


PERFORMER_VJP_IMPLEMENTATIONS = register("refimpl.attention.performer_attention_vjp", {
    ("quadratic", "numpy"): "refimpl.attention.linear.backward_performer:quadratic_vjp",
    ("recurrent", "numpy"): "refimpl.attention.linear.backward_performer:recurrent_vjp",
    ("chunked", "numpy"): "refimpl.attention.linear.backward_performer:chunked_vjp",
    ("chunked", "numba"): "refimpl.attention.linear.backward_performer:chunked_numba_vjp",
})


def performer_attention_vjp(q, k, v, W, *, do, kind: str = "positive", causal: bool = False, normalize: bool = True,
                            eps: float = 0.0, scale=None, stabilizer: str = "none", offset_grad: str = "through",
                            view: str = "quadratic", chunk: int = 64, backend: str = "numpy") -> dict:
    r"""The vector-Jacobian product of :func:`performer_attention` (:mod:`.backward_performer`).

    The forward's arguments, then keyword-only ``do (b l h p)`` (the cotangent of ``o``, required) and the
    forward's keywords; ``offset_grad``: how a stabilizer's max offset is differentiated, ``"through"`` (default,
    the forward's derivative, as ``feature_map_vjp``) or ``"stop"`` (a constant, FAVOR+ / performer-pytorch).
    Views: ``quadratic`` (numpy; the only non-causal one), ``recurrent`` (numpy), ``chunked`` (numpy, numba): the
    view of linear attention's adjoint.  ``stabilizer="key_prefix_max"`` is refused.

    Returns ``{"q", "k", "v", "W"}`` with the inputs' shapes, in the working dtype.
    """
    impl = PERFORMER_VJP_IMPLEMENTATIONS.get(view, backend)
    return impl(q, k, v, W, do=do, kind=kind, causal=causal, normalize=normalize, eps=eps, scale=scale,
                stabilizer=stabilizer, offset_grad=offset_grad, chunk=chunk)
