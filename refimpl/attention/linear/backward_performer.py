r"""The backward pass (vector-Jacobian product) of Performer attention, literal NumPy adjoints.

The forward (:func:`refimpl.attention.linear.reference.performer_attention`)::

    q' = r q,  k' = r k,  r = sqrt(scale)                       (scale = None -> n^{-1/2})
    phi_q = phi(q'; W),  phi_k = phi(k'; W)                     (random features, kind positive/trig/hyperbolic)
    o = linear_attention(phi_q, phi_k, v)                       (normalized or not, causal or not)

The adjoint equations, in reverse order (no scan of its own: the causal views' adjoint is
:func:`refimpl.attention.linear.linear_attention_vjp`'s, itself a reverse scan over the state gradient
``dS_t = dS_{t+1} + dnum_t phi(q_t)^T`` in the recurrent and chunked views):

* ``(dphi_q, dphi_k, dv)`` = linear attention's VJP of ``do``
* ``(dq', dW_q)`` = the features' VJP of ``dphi_q`` at ``q'``;  ``(dk', dW_k)`` likewise at ``k'``
  (:func:`refimpl.attention.features.feature_map_vjp`; positive features: ``dz = dphi o phi``,
  ``dx = W^T dz - x sum dz``, ``dW = sum dz x^T``)
* ``dq = r dq'``,  ``dk = r dk'``,  ``dW = dW_q + dW_k``

The stabilizers (``stabilizer=``) and how their offset is differentiated (``offset_grad=``):

* ``"query_max"`` -- each query's features offset by its row max (``row_max``); ``"key_global_max"`` -- every key's
  by one global max (``global_max``).  ``offset_grad="through"`` (default, as the features op's): the max is
  differentiated through (its adjoint ``-sum dz`` at the argmax) -- the derivative of the function the forward
  computes, what finite differences see.  ``offset_grad="stop"``: the offset a constant (FAVOR+'s and
  performer-pytorch's ``.detach()``).  When the offset cancels (normalized attention with ``eps = 0``) both
  conventions give the same gradient of ``o`` (the offset's adjoint is ``sum dz = dphi . phi = 0``).
* ``"key_prefix_max"`` (the running-max recurrence) has no VJP here (refused with an error).

All real.  dtype: ``result_dtype`` of ``q, k, v, W, do`` (float32 only when all are float32).

Shapes: ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``, ``W (f n)``, ``do (b l h p)``.  Returns
``{"q", "k", "v", "W"}`` with the inputs' shapes.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_choice, check_int, check_shape, result_dtype

__all__ = ["quadratic_vjp", "recurrent_vjp", "chunked_vjp", "chunked_numba_vjp"]


def _vjp(q, k, v, W, do, kind, causal, normalize, eps, scale, stabilizer, offset_grad, view, backend, chunk):
    from refimpl.attention.features import feature_map_vjp
    from refimpl.attention.features.backward import OFFSET_GRADS
    from refimpl.attention.features.reference import FEATURE_KINDS, random_features
    from refimpl.attention.linear import linear_attention_vjp
    from refimpl.attention.linear.reference import PERFORMER_STABILIZERS, _performer_scale

    causal = check_bool(causal, "causal")
    check_choice(kind, "kind", FEATURE_KINDS)
    check_choice(stabilizer, "stabilizer", PERFORMER_STABILIZERS)
    check_choice(offset_grad, "offset_grad", OFFSET_GRADS)
    chunk = check_int(chunk, "chunk", minimum=1)
    if stabilizer == "key_prefix_max":
        raise ValueError("stabilizer: 'key_prefix_max' (the running-max recurrence) has no VJP here; differentiate "
                         "'none', 'query_max' or 'key_global_max'")
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    b, l, h, n = q.shape
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    if causal:
        check_shape(k, "k", (b, l, h, n), "(b, l, h, n) like q (causal)")
    else:
        check_shape(k, "k", (b, None, h, n), "(b, s, h, n) with b, h, n from q")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, k.shape[1], h, None), "(b, s, h, p) with b, s, h from k")
    W = as_float_array(W, "W", ndim=2, allow_complex=False)
    check_shape(W, "W", (None, n), "(f, n) with n from q")
    do = as_float_array(do, "do", ndim=4, allow_complex=False)
    check_shape(do, "do", (b, l, h, v.shape[3]), "(b, l, h, p), the shape of o", src="b, l, h from q, p from v")
    if not causal and view != "quadratic":
        raise ValueError(f"view: non-causal attention (causal=False) is the 'quadratic' view, got {view!r}")
    if kind == "trig" and stabilizer != "none":
        raise ValueError(f"stabilizer: only 'none' applies to trigonometric features, got {stabilizer!r}")
    dtype = result_dtype(q, k, v, W, do)
    q, k, v, W, do = (a.astype(dtype, copy=False) for a in (q, k, v, W, do))
    r = math.sqrt(_performer_scale(scale, n))
    stab_q = "row_max" if stabilizer == "query_max" else "none"
    stab_k = "global_max" if stabilizer == "key_global_max" else "none"
    # the forward again: q' = r q,  k' = r k,  phi_q = phi(q'; W),  phi_k = phi(k'; W)
    qs, ks = q * dtype.type(r), k * dtype.type(r)
    phi_q = random_features(qs, W, kind, **({"stabilizer": stab_q} if stab_q != "none" else {}))
    phi_k = random_features(ks, W, kind, **({"stabilizer": stab_k} if stab_k != "none" else {}))
    # (dphi_q, dphi_k, dv) = linear attention's VJP of do
    kw = dict(causal=causal, normalize=normalize, eps=eps, view=view, backend=backend)
    if view == "chunked":
        kw["chunk"] = chunk
    g = linear_attention_vjp(phi_q, phi_k, v, do=do, **kw)
    # (dq', dW_q), (dk', dW_k) = the features' VJPs (the offset through or stopped: offset_grad)
    # a normalized output with an empty denominator (s = 0: 0/0) is NaN, and so is its gradient (propagated)
    bad_q = ~np.all(np.isfinite(g["phi_q"]), axis=-1, keepdims=True)
    bad_k = ~np.all(np.isfinite(g["phi_k"]), axis=-1, keepdims=True)
    dphi_q = np.where(bad_q, dtype.type(0), g["phi_q"])
    dphi_k = np.where(bad_k, dtype.type(0), g["phi_k"])
    fq = feature_map_vjp(qs, kind, dphi=dphi_q, W=W, stabilizer=stab_q, offset_grad=offset_grad)
    fk = feature_map_vjp(ks, kind, dphi=dphi_k, W=W, stabilizer=stab_k, offset_grad=offset_grad)
    nan = dtype.type(np.nan)
    fq["x"], fk["x"] = np.where(bad_q, nan, fq["x"]), np.where(bad_k, nan, fk["x"])
    if bad_q.any() or bad_k.any():
        fq["W"] = np.full_like(fq["W"], nan)
    # dq = r dq',  dk = r dk',  dW = dW_q + dW_k
    out = {"q": fq["x"] * dtype.type(r), "k": fk["x"] * dtype.type(r), "v": g["v"], "W": fq["W"] + fk["W"]}
    return {nm: np.asarray(a, dtype=dtype) for nm, a in out.items()}


def _doc(view, backend):
    return (f"The VJP of :func:`~refimpl.attention.linear.reference.performer_attention` with linear attention's "
            f"adjoint in its ``{view}`` view (backend ``{backend}``); the module docstring has the adjoint equations.")


def quadratic_vjp(q, k, v, W, *, do, kind: str = "positive", causal: bool = False, normalize: bool = True,
                  eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                  offset_grad: str = "through", chunk: int = 64) -> dict:
    return _vjp(q, k, v, W, do, kind, causal, normalize, eps, scale, stabilizer, offset_grad, "quadratic", "numpy",
                chunk)


def recurrent_vjp(q, k, v, W, *, do, kind: str = "positive", causal: bool = False, normalize: bool = True,
                  eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                  offset_grad: str = "through", chunk: int = 64) -> dict:
    return _vjp(q, k, v, W, do, kind, causal, normalize, eps, scale, stabilizer, offset_grad, "recurrent", "numpy",
                chunk)


def chunked_vjp(q, k, v, W, *, do, kind: str = "positive", causal: bool = False, normalize: bool = True,
                eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                offset_grad: str = "through", chunk: int = 64) -> dict:
    return _vjp(q, k, v, W, do, kind, causal, normalize, eps, scale, stabilizer, offset_grad, "chunked", "numpy",
                chunk)


def chunked_numba_vjp(q, k, v, W, *, do, kind: str = "positive", causal: bool = False, normalize: bool = True,
                      eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                      offset_grad: str = "through", chunk: int = 64) -> dict:
    return _vjp(q, k, v, W, do, kind, causal, normalize, eps, scale, stabilizer, offset_grad, "chunked", "numba",
                chunk)


for _fn, _v, _b in ((quadratic_vjp, "quadratic", "numpy"), (recurrent_vjp, "recurrent", "numpy"),
                    (chunked_vjp, "chunked", "numpy"), (chunked_numba_vjp, "chunked", "numba")):
    _fn.__doc__ = _doc(_v, _b)
