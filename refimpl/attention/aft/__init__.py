"""refimpl.attention.aft: the Attention Free Transformer (Zhai et al. 2021; see README.md in this folder).

One entry point, :func:`aft_attention`, with two views:

* ``"materialized"`` -- the ``(b l l d)`` logits ``K_t' + w'_{t,t'}`` formed and softmaxed over ``t'``
  (``backend="numpy"``: :func:`refimpl.attention.aft.reference.materialized`);
* ``"windowed"`` -- never forming the logits: totals / prefix / suffix sums for the keys with bias 0, the window
  part added in ``O(L window d)`` (AFT-local and AFT-simple in linear time, AFT-full in ``O(L^2 d)``)
  (``backend="numpy"``: :func:`refimpl.attention.aft.reference.windowed`, the algorithm written literally;
  ``backend="numba"``: :func:`refimpl.attention.aft.numba.aft_windowed`, the kernel).

The backward: :func:`aft_attention_vjp`, view ``"materialized"`` (:mod:`refimpl.attention.aft.backward`).
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl.attention.aft.reference import VARIANTS, aft_window

__all__ = ["aft_attention", "aft_attention_vjp", "VARIANTS", "aft_window", "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS"]

IMPLEMENTATIONS = register("refimpl.attention.aft_attention", {
    ("materialized", "numpy"): "refimpl.attention.aft.reference:materialized",
    ("windowed", "numpy"): "refimpl.attention.aft.reference:windowed",
    ("windowed", "numba"): "refimpl.attention.aft.numba:aft_windowed",
})

VJP_IMPLEMENTATIONS = register("refimpl.attention.aft_attention_vjp", {
    ("materialized", "numpy"): "refimpl.attention.aft.backward:materialized_vjp",
})


def aft_attention(q, k, v, w=None, *, variant: str = "full", causal: bool = False, window=None,
                  view: str = "materialized", backend: str = "numpy"):
    r"""``Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w'_{t,t'}) V_t' / sum_t' exp(K_t' + w'_{t,t'})``.

    Parameters
    ----------
    q, k, v : ``(b l d)``.
    w : ``(l l)`` position biases ``w[t, t']`` (``variant="full"``/``"local"``); ``None`` for ``"simple"``.
    variant : ``"full"`` (``w' = w``), ``"simple"`` (``w' = 0``), ``"local"`` (``w' = w`` inside ``window``,
        ``0`` outside; every key still counts).
    causal : bool; the sums run over ``t' <= t``.
    window : ``(left, right)`` (inclusive key counts: ``t - left <= t' <= t + right``) or an int ``w`` = ``(w, w)``
        (``(w, 0)`` when causal), for ``variant="local"`` only.  The paper's ``s`` is ``(s - 1, s - 1)``.
    view, backend : ``("materialized", "numpy")`` (default), ``("windowed", "numpy")`` or ``("windowed", "numba")``.

    Returns ``Y (b l d)``.
    """
    impl = IMPLEMENTATIONS.get(view, backend)
    return impl(q, k, v, w, variant=variant, causal=causal, window=window)


def aft_attention_vjp(q, k, v, w=None, *, dy, variant: str = "full", causal: bool = False, window=None,
                      view: str = "materialized", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`aft_attention` (the adjoint equations in
    :mod:`refimpl.attention.aft.backward`, written by hand).

    ``dy (b l d)``: the cotangent of ``Y``.  Returns ``{"q", "k", "v"}`` and ``"w"`` (when ``w`` is given) gradients
    of the real loss ``sum dy * Y``, each with its input's shape, in the working dtype (``dw`` is 0 where ``w``
    does not enter:
    outside AFT-local's window, above the diagonal when causal).  ``view, backend``: ``("materialized", "numpy")``.
    """
    return VJP_IMPLEMENTATIONS.get(view, backend)(q, k, v, w, dy=dy, variant=variant, causal=causal, window=window)
