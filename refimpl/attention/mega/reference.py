r"""The Mega layer (Ma et al. 2022/2023, "Mega: Moving Average Equipped Gated Attention", ICLR 2023), literal.

One layer, single head, as the paper's section 3 (equations numbered as in the paper's section 3.2-3.3)::

    X'    = EMA(X)                                            damped multi-dimensional EMA    (b l d)
    Z     = SiLU(X' W_z + b_z)                                shared representation           (b l n)
    Q     = kappa_q * Z + mu_q,   K = kappa_k * Z + mu_k      per-dimension scale and offset   (b l n)
    V     = SiLU(X W_v + b_v)                                 values, from X (not X')          (b l p)
    O     = f(scale Q K^T + b_rel) V                          single-head attention            (b l p)
    gamma = SiLU(X' W_gamma + b_gamma)                        reset gate                       (b l p)
    phi   = sigmoid(X' W_phi + b_phi)                         update gate                      (b l d)
    H_hat = SiLU(X' W_h + (gamma * O) U_h + b_h)              candidate activation             (b l d)
    Y     = phi * H_hat + (1 - phi) * X                       output                           (b l d)

``X'`` is :func:`refimpl.ssm.mega_ema` (reused, never rewritten): per feature ``j``, ``n_ema`` damped EMAs
``h_t = alpha (beta x_t) + (1 - alpha delta) h_{t-1}``, ``X'_{t,j} = eta_j^T h_t``.  With the backward EMA
parameters given (the bidirectional EMA of Mega's encoder, ``bidirectional=True`` in Mega's code, used for its
non-causal tasks) ``X' = EMA_fwd(X) + rev(EMA_bwd(rev(X)))``: the backward filter also sees lag 0, as the code's
two-sided kernel ``pad(k_fwd, (L-1, 0)) + pad(flip(k_bwd), (0, L-1))``.

Attention (the paper's choices)
-------------------------------
* ``f = "softmax"`` (default): ``O_i = sum_j softmax_j(S_ij) V_j``; ``scale=None`` means ``n^{-1/2}``
  (Mega's code: ``scaling = zdim ** -0.5`` for softmax; the paper's ``tau(X)``).
* ``f = "laplace"``: ``f(x) = 0.5 (1 + erf((x - mu) / (sigma sqrt 2)))``, ``mu = sqrt(1/2)``,
  ``sigma = sqrt(1/(4 pi))`` (Mega, section 3.3 / appendix: an approximation of ``relu^2`` that is bounded);
* ``f = "relu2"``: ``f(x) = relu(x)^2`` (Primer / GAU).
  For laplace and relu2, ``scale=None`` is Mega's length normalization: ``S_ij = Q_i.K_j / len_i + b_rel``, with
  ``len_i`` the number of keys query ``i`` may see (its chunk's length; with ``causal``, its position in the chunk
  plus one, as Hugging Face's Mega reads the causal mask).  No normalization over ``j`` for these two.
* ``b_rel``: Mega's simple relative positional bias, a vector ``rel_bias (2m - 1)``,
  ``b_rel[i, j] = rel_bias[m - 1 + (j - i)]`` (``m`` >= the longest attention span: ``L``, or the chunk).
  ``None``: no bias.
* Chunking (Mega-chunk, section 3.5): with ``chunk = c`` query ``i`` sees only keys ``j`` in its own chunk
  (``i // c == j // c``; any ``L``, the last chunk short); the EMA always runs over the whole sequence.
  ``causal``: keys ``j <= i`` only.  The keep set of query ``i`` is therefore
  ``{j : j // c == i // c and (not causal or j <= i)}``.  A softmax row always keeps ``j = i``.

Views: ``full`` (:func:`full`) forms the ``(l l)`` scores with the keep-mask; ``chunked`` (:func:`chunked`)
loops over the chunks, each a ``(c c)`` block.  Both compute the same function of ``x``, the parameters and ``chunk``.

Conventions: ``x (b l d)`` sequence-first; parameters as explicit arrays (:data:`PARAMETERS`); ``W`` matrices multiply from the
right (``X W``, ``W (d_in d_out)``).  Letters: ``d`` model width, ``n_ema`` -> written ``e`` in shapes (the EMA
expansion, the EMA's own ``n``), ``n`` the Z / query / key dimension, ``p`` the value dimension, ``c`` the chunk.
float64 unless every float input is float32.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import scipy.special

from refimpl._validate import as_float_array, check_bool, check_choice, check_int, check_shape, result_dtype
from refimpl.ssm.ema import mega_ema

__all__ = ["PARAMETERS", "ATTENTION_FUNCTIONS", "full", "chunked"]

ATTENTION_FUNCTIONS = ("softmax", "laplace", "relu2")

#: Mega's laplace attention function's constants: mu = sqrt(1/2), sigma = sqrt(1/(4 pi))
LAPLACE_MU = math.sqrt(0.5)
LAPLACE_SIGMA = math.sqrt(1.0 / (4.0 * math.pi))


_EMA = ("alpha", "delta", "beta", "eta")
_EMA_BWD = ("alpha_bwd", "delta_bwd", "beta_bwd", "eta_bwd")

#: the layer's parameters in the order of the functions' signatures (after ``x``), with their shapes: ``d`` the
#: model width, ``e`` the EMA expansion, ``n`` the Z/query/key dimension, ``p`` the value dimension;
#: ``rel_bias (2m - 1)`` and the backward EMA ``(d e)`` (all four or none) are optional
PARAMETERS = (("alpha", "d e"), ("delta", "d e"), ("beta", "d e"), ("eta", "d e"), ("W_z", "d n"), ("b_z", "n"),
              ("kappa_q", "n"), ("mu_q", "n"), ("kappa_k", "n"), ("mu_k", "n"), ("W_v", "d p"), ("b_v", "p"),
              ("W_gamma", "d p"), ("b_gamma", "p"), ("W_phi", "d d"), ("b_phi", "d"), ("W_h", "d d"),
              ("U_h", "p d"), ("b_h", "d"), ("rel_bias", "r"), ("alpha_bwd", "d e"), ("delta_bwd", "d e"),
              ("beta_bwd", "d e"), ("eta_bwd", "d e"))


def _validate(x, params, chunk, causal, attention, scale):
    """Checks every argument; ``params`` maps the names of :data:`PARAMETERS` to the arguments.  Returns
    ``(x, P, chunk, causal, scale)`` with ``P`` a dict of float arrays (the optional ones only when given)."""
    causal = check_bool(causal, "causal")
    check_choice(attention, "attention", ATTENTION_FUNCTIONS)
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    b, L, d = x.shape
    if d < 1:
        raise ValueError(f"x: expected shape (b, l, d) with d >= 1 features, got {x.shape}")
    P = {}

    def arr(name, ndim):
        if params[name] is None:
            raise TypeError(f"{name}: expected an array of floats, got None")
        return as_float_array(params[name], name, ndim=ndim, allow_complex=False)

    P["alpha"] = arr("alpha", 2)
    if P["alpha"].shape[0] != d:
        raise ValueError(f"alpha: expected shape ({d}, e) with d = {d} from x, got {P['alpha'].shape}")
    e = P["alpha"].shape[1]
    if e < 1:
        raise ValueError(f"alpha: expected shape ({d}, e) with e >= 1 EMA dimensions, got {P['alpha'].shape}")
    for name in _EMA[1:]:
        P[name] = arr(name, 2)
        check_shape(P[name], f"{name}", (d, e), "(d e)", src="d from x, e from alpha")
    given = [params[nm] is not None for nm in _EMA_BWD]
    if any(given) and not all(given):
        missing = [nm for nm, g in zip(_EMA_BWD, given) if not g]
        raise ValueError(f"{missing[0]}: expected all four backward-EMA arrays (alpha_bwd, delta_bwd, "
                         f"beta_bwd, eta_bwd) or none, got only {[nm for nm, g in zip(_EMA_BWD, given) if g]}")
    if all(given):
        if causal:
            raise ValueError("causal: expected False with the bidirectional EMA (alpha_bwd ...), got True: "
                             "the backward EMA reads later positions")
        for name in _EMA_BWD:
            P[name] = arr(name, 2)
            check_shape(P[name], f"{name}", (d, e), "(d e)", src="d from x, e from alpha")
    P["W_z"] = arr("W_z", 2)
    if P["W_z"].shape[0] != d:
        raise ValueError(f"W_z: expected shape ({d}, n) with d = {d} from x, got {P['W_z'].shape}")
    n = P["W_z"].shape[1]
    if n < 1:
        raise ValueError(f"W_z: expected shape ({d}, n) with n >= 1, got {P['W_z'].shape}")
    P["W_v"] = arr("W_v", 2)
    if P["W_v"].shape[0] != d:
        raise ValueError(f"W_v: expected shape ({d}, p) with d = {d} from x, got {P['W_v'].shape}")
    p = P["W_v"].shape[1]
    if p < 1:
        raise ValueError(f"W_v: expected shape ({d}, p) with p >= 1, got {P['W_v'].shape}")
    shapes = {"b_z": (n,), "kappa_q": (n,), "mu_q": (n,), "kappa_k": (n,), "mu_k": (n,), "b_v": (p,),
              "W_gamma": (d, p), "b_gamma": (p,), "W_phi": (d, d), "b_phi": (d,), "W_h": (d, d), "U_h": (p, d),
              "b_h": (d,)}
    src = "d from x, n from W_z, p from W_v"
    for name, shp in shapes.items():
        P[name] = arr(name, len(shp))
        check_shape(P[name], f"{name}", shp, "", src=src)
    for name in ("alpha", "delta") + (("alpha_bwd", "delta_bwd") if "alpha_bwd" in P else ()):
        bad = (P[name] <= 0) | (P[name] >= 1)
        if np.any(bad):
            raise ValueError(f"{name}: expected values in the open interval (0, 1), got {P[name][bad][0]}")
    if chunk is not None:
        chunk = check_int(chunk, "chunk", minimum=1)
    span = L if chunk is None else min(chunk, L)
    if params["rel_bias"] is not None:
        rb = arr("rel_bias", 1)
        if rb.shape[0] % 2 != 1 or (rb.shape[0] + 1) // 2 < span:
            raise ValueError(f"rel_bias: expected shape (2m - 1,) with m >= {span} (the longest attention "
                             f"span), got {rb.shape}")
        P["rel_bias"] = rb
    if scale is not None:
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.floating, np.integer)):
            raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__} {scale!r}")
        if not math.isfinite(float(scale)):
            raise ValueError(f"scale: expected a finite number, got {scale!r}")
        scale = float(scale)
    return x, P, chunk, causal, scale


def sigmoid(a):
    r"""``sigmoid(a) = 1 / (1 + exp(-a))``, evaluated as ``1/(1+e)`` or ``e/(1+e)`` with ``e = exp(-|a|)`` (no overflow)."""
    e = np.exp(-np.abs(a))
    # sigmoid(a) = 1/(1 + exp(-a)) for a >= 0;  exp(a)/(1 + exp(a)) for a < 0
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(a), copy=False)


def silu(a):
    r"""``SiLU(a) = a sigmoid(a)``."""
    return a * sigmoid(a)


def laplace(a):
    r"""Mega's laplace attention function ``0.5 (1 + erf((a - mu)/(sigma sqrt 2)))``, ``mu = sqrt(1/2)``,
    ``sigma = sqrt(1/(4 pi))``."""
    dt = np.result_type(a)
    return (0.5 * (1.0 + scipy.special.erf((a - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))))).astype(dt, copy=False)


def relu2(a):
    r"""``relu(a)^2``."""
    r = np.maximum(a, 0.0)
    return r * r


def keep_set_mask(L: int, chunk: Optional[int], causal: bool) -> np.ndarray:
    r"""``keep[i, j] = (j // c == i // c) and (not causal or j <= i)`` (``c = L`` when ``chunk`` is None): ``(l l)``."""
    c = L if chunk is None else chunk
    idx = np.arange(L)
    same = (idx[:, None] // max(c, 1)) == (idx[None, :] // max(c, 1))
    return same & (idx[None, :] <= idx[:, None]) if causal else same


def relative_bias(rel_bias, lq: int, lk: int, keep=None) -> np.ndarray:
    r"""``b_rel[i, j] = rel_bias[m - 1 + (j - i)]`` for ``i < lq``, ``j < lk`` (``rel_bias (2m - 1)``): ``(lq lk)``;
    with ``keep (lq lk)`` only the kept pairs (their offsets lie within the span ``m``), 0 elsewhere."""
    m = (rel_bias.shape[0] + 1) // 2
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    if keep is None:
        return rel_bias[m - 1 + (j - i)]
    # pairs outside the keep sets (other chunks) may lie farther apart than the bias spans: never read
    return np.where(keep, rel_bias[np.clip(m - 1 + (j - i), 0, 2 * m - 2)], 0.0)


def _ema(x, P, view="recurrent"):
    """``X' = EMA(X)`` (+ ``rev(EMA_bwd(rev X))`` when the backward parameters are given), by refimpl.ssm.mega_ema
    in its ``view`` (the reference: the literal recurrence)."""
    # X' = EMA(X)
    Xp = mega_ema(x, P["alpha"], P["delta"], P["beta"], P["eta"], view=view)
    if "alpha_bwd" in P:
        # X' += rev(EMA_bwd(rev(X)))  (the bidirectional EMA)
        Xp = Xp + mega_ema(x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"],
                           view=view)[:, ::-1]
    return Xp


def _projections(x, P, dt, ema_view="recurrent"):
    """The layer's projections: ``X', Q, K, V, gamma, phi``."""
    x = x.astype(dt, copy=False)
    P = {k: v.astype(dt, copy=False) for k, v in P.items()}
    X_prime = _ema(x, P, ema_view).astype(dt, copy=False)
    # Z = SiLU(X' W_z + b_z)
    Z = silu(X_prime @ P["W_z"] + P["b_z"])
    # Q = kappa_q * Z + mu_q ;  K = kappa_k * Z + mu_k
    Q = P["kappa_q"] * Z + P["mu_q"]
    K = P["kappa_k"] * Z + P["mu_k"]
    # V = SiLU(X W_v + b_v)
    V = silu(x @ P["W_v"] + P["b_v"])
    # gamma = SiLU(X' W_gamma + b_gamma)  (reset gate)
    gamma = silu(X_prime @ P["W_gamma"] + P["b_gamma"])
    # phi = sigmoid(X' W_phi + b_phi)  (update gate)
    phi = sigmoid(X_prime @ P["W_phi"] + P["b_phi"])
    return x, P, X_prime, Q, K, V, gamma, phi


def _output(x, P, X_prime, O, gamma, phi):
    # H_hat = SiLU(X' W_h + (gamma * O) U_h + b_h)
    H_hat = silu(X_prime @ P["W_h"] + (gamma * O) @ P["U_h"] + P["b_h"])
    # Y = phi * H_hat + (1 - phi) * X
    return phi * H_hat + (1.0 - phi) * x


def _attend(Q_i, K_j, V_j, keep, bias, attention, scale, n):
    r"""One block: ``O = f(scale Q K^T + b_rel) V`` over the kept keys.  ``Q_i (b lq n)``, ``K_j (b lk n)``,
    ``V_j (b lk p)``, ``keep (lq lk)`` bool, ``bias (lq lk)`` or None -> ``O (b lq p)``."""
    dt = Q_i.dtype
    if attention == "softmax":
        s = (n ** -0.5) if scale is None else scale
        # S_ij = scale Q_i . K_j + b_rel[i, j]
        S_ij = s * np.einsum("bin,bjn->bij", Q_i, K_j)
    else:
        # laplace / relu2: S_ij = Q_i . K_j / len_i + b_rel[i, j],  len_i = |keep set of i|  (scale=None)
        len_i = np.maximum(np.sum(keep, axis=1), 1).astype(dt)
        S_ij = np.einsum("bin,bjn->bij", Q_i, K_j) * ((1.0 / len_i)[:, None] if scale is None else scale)
    if bias is not None:
        S_ij = S_ij + bias
    if attention == "softmax":
        # m_i = max_{j kept} S_ij ;  P_ij = exp(S_ij - m_i) / sum_{j kept} exp(S_ij - m_i)
        S_masked = np.where(keep, S_ij, -np.inf)
        m_i = np.max(S_masked, axis=-1, keepdims=True) if S_ij.shape[-1] else np.zeros(S_ij.shape[:-1] + (1,), dt)
        E = np.where(keep, np.exp(S_masked - m_i), 0.0)
        P_ij = E / np.sum(E, axis=-1, keepdims=True)
    else:
        # P_ij = f(S_ij) on kept keys, 0 elsewhere
        f = laplace if attention == "laplace" else relu2
        P_ij = np.where(keep, f(S_ij), 0.0)
    # O_i = sum_j P_ij V_j
    return np.einsum("bij,bjp->bip", P_ij.astype(dt, copy=False), V_j)


def full(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma, W_phi,
         b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None, eta_bwd=None, *,
         chunk: Optional[int] = None, causal: bool = False, attention: str = "softmax",
         scale: Optional[float] = None):
    r"""The ``full`` view: one ``(l l)`` score matrix under the keep-mask (block-diagonal with ``chunk``).

    ``x (b l d)``; the parameters of :data:`PARAMETERS` (``alpha, delta, beta, eta (d e)``, ``W_z (d n)``,
    ``b_z, kappa_q, mu_q, kappa_k, mu_k (n)``, ``W_v, W_gamma (d p)``, ``b_v, b_gamma (p)``, ``W_phi, W_h (d d)``,
    ``b_phi, b_h (d)``, ``U_h (p d)``; optional ``rel_bias (2m - 1)``, ``alpha_bwd, delta_bwd, beta_bwd,
    eta_bwd (d e)``) -> ``Y (b l d)``.  ``chunk`` None (one chunk) or an int >= 1; ``causal`` bool;
    ``attention`` ``"softmax" | "laplace" | "relu2"``; ``scale`` multiplies ``Q . K`` (None: the paper's, see the
    module docstring).
    """
    params = dict(locals())
    x, P, chunk, causal, scale = _validate(x, params, chunk, causal, attention, scale)
    b, L, d = x.shape
    dt = result_dtype(x, *P.values())
    x, P, X_prime, Q, K, V, gamma, phi = _projections(x, P, dt)
    n = Q.shape[-1]
    keep = keep_set_mask(L, chunk, causal)
    bias = relative_bias(P["rel_bias"], L, L, keep) if "rel_bias" in P else None
    # O = f(scale Q K^T + b_rel) V  (masked to the keep sets)
    O = _attend(Q, K, V, keep, bias, attention, scale, n)
    return _output(x, P, X_prime, O, gamma, phi).astype(dt, copy=False)


def chunked(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma, W_phi,
            b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None, eta_bwd=None, *,
            chunk: Optional[int] = None, causal: bool = False, attention: str = "softmax",
            scale: Optional[float] = None):
    r"""The ``chunked`` view (Mega-chunk): the EMA over the whole sequence, then attention chunk by chunk,
    each chunk ``[t0, t0 + c)`` a ``(c c)`` block (the last one short).  Arguments and shapes as :func:`full`;
    ``chunk=None`` is one chunk of length ``l``.
    """
    params = dict(locals())
    x, P, chunk, causal, scale = _validate(x, params, chunk, causal, attention, scale)
    b, L, d = x.shape
    dt = result_dtype(x, *P.values())
    x, P, X_prime, Q, K, V, gamma, phi = _projections(x, P, dt)
    n, p = Q.shape[-1], V.shape[-1]
    c = L if chunk is None else chunk
    O = np.zeros((b, L, p), dtype=dt)
    for t0 in range(0, L, max(c, 1)):
        t1 = min(t0 + c, L)
        lc = t1 - t0
        # keep_ij within the chunk: all, or j <= i when causal
        keep = np.tril(np.ones((lc, lc), dtype=bool)) if causal else np.ones((lc, lc), dtype=bool)
        bias = relative_bias(P["rel_bias"], lc, lc) if "rel_bias" in P else None
        # O[t0:t1] = f(scale Q_c K_c^T + b_rel) V_c
        O[:, t0:t1] = _attend(Q[:, t0:t1], K[:, t0:t1], V[:, t0:t1], keep, bias, attention, scale, n)
    return _output(x, P, X_prime, O, gamma, phi).astype(dt, copy=False)
