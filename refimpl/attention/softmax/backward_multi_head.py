r"""The backward pass (vector-Jacobian product) of multi-head attention, literal NumPy adjoints.

The forward (:func:`refimpl.attention.softmax.reference.multi_head_attention`), per head ``x``::

    Q_x = X_q W_Q[x],   K_x = X_kv W_K[x],   V_x = X_kv W_V[x]                   (the projections)
    Z_x = softmax(scale Q_x K_x^T + bias, masked) V_x                            (softmax attention)
    out = concat_x(Z_x) W_O        (head-major: columns [x p:(x+1) p] of the concatenation are head x)

The adjoint equations (``dX`` the cotangent ``dL/dX`` of a real loss ``L = sum dout * out``), in reverse order of
the forward (no scan: every step is a matrix product, its adjoint the transposed product):

* ``dW_O = concat(Z)^T dout``          (summed over the batch and the queries)
* ``dconcat(Z) = dout W_O^T``,  split head-major into ``dZ_x``
* ``(dQ_x, dK_x, dV_x, dbias)`` = the softmax attention's VJP of ``dZ_x``
  (:func:`refimpl.attention.softmax.scaled_dot_product_attention_vjp`: ``dV = P^T dZ``, ``dS = P o (dP - D)``,
  ``dQ = scale dS K``, ``dK = scale dS^T Q``; checked on its own)
* ``dW_Q[x] = X_q^T dQ_x``,  ``dW_K[x] = X_kv^T dK_x``,  ``dW_V[x] = X_kv^T dV_x``
* ``dX_q = sum_x dQ_x W_Q[x]^T``,  ``dX_kv = sum_x (dK_x W_K[x]^T + dV_x W_V[x]^T)``

Views: ``materialized`` (the inner VJP's materialized view: mask and bias allowed) and ``tiled`` (FlashAttention's
backward pass for the inner part, backends ``numpy`` and ``numba``; no mask, no bias).

Conventions (the forward's): ``scale`` multiplies ``q . k`` (``None`` -> ``n^{-1/2}``); ``causal`` with
``alignment`` ``top_left`` / ``bottom_right``; ``mask`` boolean (no gradient); a fully masked query row contributes
nothing.  All real.  dtype: ``result_dtype`` of every input and ``dout`` (float32 only when all are float32); each
gradient is returned in it.

Shapes: ``x_q (b l d)``, ``x_kv (b s d)``, ``W_Q, W_K (h d n)``, ``W_V (h d p)``, ``W_O (h*p, d_out)``,
``dout (b l d_out)``.  Returns ``{"x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O"}`` with the inputs' shapes, and
``"bias"`` when a bias is given.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_shape, result_dtype
from refimpl.attention.softmax.reference import _bias, _keep, materialized

__all__ = ["materialized_vjp", "tiled_vjp", "tiled_numba_vjp"]


def _inputs(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, mask, bias):
    """The forward's checks, then the cotangent ``dout (b l d_out)`` checked like an input."""
    x_q = as_float_array(x_q, "x_q", ndim=3, allow_complex=False)
    b, l, d = x_q.shape
    x_kv = as_float_array(x_kv, "x_kv", ndim=3, allow_complex=False)
    check_shape(x_kv, "x_kv", (b, None, d), "(b, s, d) with b, d from x_q")
    W_Q = as_float_array(W_Q, "W_Q", ndim=3, allow_complex=False)
    check_shape(W_Q, "W_Q", (None, d, None), "(h, d, n) with d from x_q")
    h, _, n = W_Q.shape
    W_K = as_float_array(W_K, "W_K", ndim=3, allow_complex=False)
    check_shape(W_K, "W_K", (h, d, n), "(h, d, n) like W_Q")
    W_V = as_float_array(W_V, "W_V", ndim=3, allow_complex=False)
    check_shape(W_V, "W_V", (h, d, None), "(h, d, p)", src="h from W_Q, d from x_q")
    p = W_V.shape[2]
    W_O = as_float_array(W_O, "W_O", ndim=2, allow_complex=False)
    check_shape(W_O, "W_O", (h * p, None), "(h*p, d_out)", src="h from W_Q, p from W_V")
    src = "b, l from x_q, s from x_kv, h from W_Q"
    _keep(mask, None, b, h, l, x_kv.shape[1], src)
    bias_arr = _bias(bias, b, h, l, x_kv.shape[1], src)
    dout = as_float_array(dout, "dout", ndim=3, allow_complex=False)
    check_shape(dout, "dout", (b, l, W_O.shape[1]), "(b, l, d_out), the shape of out", src="b, l from x_q, d_out from W_O")
    dtype = result_dtype(x_q, x_kv, W_Q, W_K, W_V, W_O, bias_arr, dout)
    arrs = tuple(a.astype(dtype, copy=False) for a in (x_q, x_kv, W_Q, W_K, W_V, W_O, dout))
    return arrs, (b, l, h, p), dtype


def _vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, scale, causal, alignment, mask, bias, view, backend, tiles):
    from refimpl.attention.softmax import scaled_dot_product_attention_vjp

    (x_q, x_kv, W_Q, W_K, W_V, W_O, dout), (b, l, h, p), dtype = _inputs(x_q, x_kv, W_Q, W_K, W_V, W_O, dout,
                                                                       mask, bias)
    # the forward again: Q_x = X_q W_Q[x],  K_x = X_kv W_K[x],  V_x = X_kv W_V[x]
    q = np.einsum("bld,hdn->blhn", x_q, W_Q)
    k = np.einsum("bsd,hdn->bshn", x_kv, W_K)
    v = np.einsum("bsd,hdp->bshp", x_kv, W_V)
    z = materialized(q, k, v, scale=scale, causal=causal, alignment=alignment, mask=mask, bias=bias)
    Z = z.reshape(b, l, h * p).astype(dtype, copy=False)          # concat_x(Z_x), head-major
    # dW_O = concat(Z)^T dout   (summed over the batch and the queries)
    dW_O = np.einsum("blc,blo->co", Z, dout)
    # dconcat(Z) = dout W_O^T,  split head-major: dZ_x = columns [x p:(x+1) p]
    dZ = (dout @ W_O.T).reshape(b, l, h, p)
    # (dQ_x, dK_x, dV_x, dbias) = the softmax attention's VJP of dZ_x
    kw = dict(scale=scale, causal=causal, alignment=alignment, view=view, backend=backend, **tiles)
    if view == "materialized":
        kw.update(mask=mask, bias=bias)
    g = scaled_dot_product_attention_vjp(q, k, v, do=dZ, **kw)
    dq, dk, dv = (g[nm].astype(dtype, copy=False) for nm in ("q", "k", "v"))
    # dW_Q[x] = X_q^T dQ_x,  dW_K[x] = X_kv^T dK_x,  dW_V[x] = X_kv^T dV_x
    dW_Q = np.einsum("bld,blhn->hdn", x_q, dq)
    dW_K = np.einsum("bsd,bshn->hdn", x_kv, dk)
    dW_V = np.einsum("bsd,bshp->hdp", x_kv, dv)
    # dX_q = sum_x dQ_x W_Q[x]^T ;  dX_kv = sum_x (dK_x W_K[x]^T + dV_x W_V[x]^T)
    dx_q = np.einsum("blhn,hdn->bld", dq, W_Q)
    dx_kv = np.einsum("bshn,hdn->bsd", dk, W_K) + np.einsum("bshp,hdp->bsd", dv, W_V)
    out = {"x_q": dx_q, "x_kv": dx_kv, "W_Q": dW_Q, "W_K": dW_K, "W_V": dW_V, "W_O": dW_O}
    if bias is not None:
        out["bias"] = g["bias"].astype(dtype, copy=False)
    return {nm: np.asarray(a, dtype=dtype) for nm, a in out.items()}


def materialized_vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, *, dout, scale: Optional[float] = None, causal: bool = False,
                     alignment: Optional[str] = None, mask=None, bias=None) -> dict:
    r"""The VJP of :func:`~refimpl.attention.softmax.reference.multi_head_attention`, the inner softmax attention's
    adjoint in its materialized view (the ``(b h l s)`` weights formed again).  Shapes and the adjoint equations:
    the module docstring.  Returns ``{"x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O"}`` (and ``"bias"``)."""
    return _vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, scale, causal, alignment, mask, bias, "materialized", "numpy",
                {})


def tiled_vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, *, dout, scale: Optional[float] = None, causal: bool = False,
              alignment: Optional[str] = None, block_q: Optional[int] = None, block_k: Optional[int] = None) -> dict:
    r"""The same VJP with the inner part FlashAttention's backward pass in NumPy (``P`` recomputed per tile from the
    saved log-sum-exp; ``block_q``, ``block_k`` its tiles, default 64).  No mask, no bias."""
    tiles = {nm: t for nm, t in (("block_q", block_q), ("block_k", block_k)) if t is not None}
    return _vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, scale, causal, alignment, None, None, "tiled", "numpy", tiles)


def tiled_numba_vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, *, dout, scale: Optional[float] = None, causal: bool = False,
                    alignment: Optional[str] = None, block_q: Optional[int] = None,
                    block_k: Optional[int] = None) -> dict:
    r"""The same VJP with the inner part the Numba FlashAttention backward kernel
    (:func:`refimpl.attention.softmax.numba_backward.flash_attention_vjp`); the projections' adjoints in NumPy."""
    tiles = {nm: t for nm, t in (("block_q", block_q), ("block_k", block_k)) if t is not None}
    return _vjp(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, scale, causal, alignment, None, None, "tiled", "numba", tiles)
