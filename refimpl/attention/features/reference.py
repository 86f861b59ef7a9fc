r"""Feature maps ``phi`` for kernelized (linear) attention, and Performer's random projections.

All maps act on the last axis: ``x (... n) -> phi(x) (... n_phi)``; ``x`` is a query or a key (width ``n``),
``phi(x)`` is what linear attention reads as ``phi_q``/``phi_k``.  float64 unless the input is float32.
The one entry point is :func:`refimpl.attention.features.feature_map` (``kind=``, ``backend=``).

Deterministic maps
------------------
* :func:`identity` -- ``phi(x) = x`` (``n_phi = n``).
* :func:`elu_plus_one` -- ``phi(a) = elu(a) + 1 = a + 1 (a >= 0), exp(a) (a < 0)`` elementwise (``n_phi = n``).
* :func:`dpfp` -- Schlag et al. 2021: with ``r = [relu(x), relu(-x)]`` (length ``2n``),
  ``phi_{(j-1) 2n + i}(x) = r_i r_{(i - j) mod 2n}`` for ``j = 1..nu``, ``i = 0..2n-1``
  (``n_phi = 2 n nu``, ``1 <= nu <= 2n - 1``).

Performer random features (Choromanski et al. 2021); ``W`` is ``(f n)`` with rows ``w_i``
-----------------------------------------------------------------------------------------
* :func:`trig_features` -- ``phi(x) = exp(|x|^2/2)/sqrt(f) [sin(W x), cos(W x)]`` (``n_phi = 2f``),
  ``E[phi(x).phi(y)] = exp(x.y)`` for Gaussian rows.
* :func:`positive_features` -- ``phi(x) = exp(W x - |x|^2/2)/sqrt(f)`` (``n_phi = f``).
* :func:`hyperbolic_features` -- the text's ``h(x) = exp(-|x|^2/2)/sqrt(2)``,
  ``phi(x) = h(x)/sqrt(f) [exp(W x), exp(-W x)]`` (``n_phi = 2f``).

Unbiasedness ``E[phi(x).phi(y)] = exp(x.y)`` holds when each row ``w_i`` is marginally
``N(0, I_n)``: iid Gaussian rows, or orthogonal rows with **chi-distributed norms**
(:func:`random_projection` with ``norms="chi"``).  With ``norms="fixed"`` (every row of norm
``sqrt(n)``, the "regularized" variant) the estimator is *biased*: its mean is
``0F1(; n/2; n |x+y|^2/4) exp(-(|x|^2+|y|^2)/2)`` for positive/hyperbolic features
(``u`` uniform on the sphere) -- documented, and tested against that exact mean.

Stabilizers (``stabilizer=`` of :func:`positive_features` / :func:`hyperbolic_features`)
-----------------------------------------------------------------------------------------
Exponential features overflow for large ``|W x|``.  A stabilizer subtracts an offset ``c``
inside the exponential, ``phi~(x) = phi(x) exp(-c)``, and (with ``return_offset=True``)
returns ``c`` so the caller can account for it.  Effect on the estimator
``phi~(q).phi~(k) = exp(-c_q - c_k) phi(q).phi(k)``:

* ``"none"``: ``c = 0``; unbiased.
* ``"row_max"``: ``c(x) = max_i (W x)_i - |x|^2/2`` (``max_i |W x|_i - |x|^2/2`` for hyperbolic), the
  largest exponent, per row of ``x`` (the largest stabilized feature is ``1/sqrt(f)``).
  On **queries** this scales every estimate of one query by the same ``exp(-c(q))``: normalized
  attention is unchanged for ``eps = 0`` (the factor cancels), an ``eps > 0`` acts as
  ``eps exp(c(q))``, an unnormalized output is scaled by ``exp(-c(q))``.  On **keys** each key
  gets its own factor, which biases normalized attention unless the offsets are carried
  (``refimpl.attention.linear.reference.causal_recurrent_offsets`` carries them with a running max).
* ``"global_max"``: one ``c`` = the largest exponent over **every row passed in** (all positions of all batch
  entries/heads given).  On keys: a common factor, so normalized attention is unchanged for
  ``eps = 0``; but ``c`` depends on *every* key, so in *causal* attention the output at step
  ``t`` depends on future keys (through ``eps exp(c)``, through underflow of early keys when a
  later key is large, and directly for unnormalized outputs).  Use the causal-safe running
  (prefix) max of ``linear.causal_recurrent_offsets`` instead.
"""
from __future__ import annotations

import math

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_choice, check_int

__all__ = [
    "FEATURE_KINDS",
    "STABILIZERS",
    "identity",
    "elu_plus_one",
    "dpfp",
    "random_projection",
    "sign_fixed_qr",
    "trig_features",
    "positive_features",
    "hyperbolic_features",
    "random_features",
    "check_x",
    "check_dpfp",
    "check_W",
]

FEATURE_KINDS = ("trig", "positive", "hyperbolic")
STABILIZERS = ("none", "row_max", "global_max")


# ------------------------------------------------------------------ validation (shared with the Numba kernels)

def check_x(x) -> np.ndarray:
    """The validated input ``x (... n)`` of every map: real floats, finite, at least one axis."""
    x = as_float_array(x, "x", allow_complex=False)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (..., n), got shape {x.shape}")
    return x


def check_dpfp(x, nu):
    """Validated ``(x, nu)`` for DPFP: ``n >= 1`` and ``1 <= nu <= 2n - 1``."""
    x = check_x(x)
    n = x.shape[-1]
    if n < 1:
        raise ValueError(f"x: expected shape (..., n) with n >= 1, got {x.shape}")
    nu = check_int(nu, "nu", minimum=1)
    if nu > 2 * n - 1:
        raise ValueError(f"nu: expected 1 <= nu <= 2n - 1 = {2 * n - 1} for n = {n}, got {nu}")
    return x, nu


def check_W(x, W):
    """Validated ``(x, W)`` for random features: ``x (... n)``, ``W (f n)`` with ``f >= 1``, one working dtype."""
    x = check_x(x)
    W = as_float_array(W, "W", ndim=2, allow_complex=False)
    n = x.shape[-1]
    if W.shape[1] != n:
        raise ValueError(f"W: expected shape (f, {n}) matching x's last axis n = {n}, got {W.shape}")
    if W.shape[0] < 1:
        raise ValueError(f"W: expected at least one row (f >= 1), got shape {W.shape}")
    dtype = np.result_type(x.dtype, W.dtype)
    return x.astype(dtype, copy=False), W.astype(dtype, copy=False)


# ------------------------------------------------------------------ deterministic maps

def identity(x) -> np.ndarray:
    """``phi(x) = x`` (a copy, validated)."""
    return check_x(x).copy()


def elu_plus_one(x) -> np.ndarray:
    r"""``phi(a) = a + 1`` for ``a >= 0``, ``exp(a)`` for ``a < 0`` (elementwise; always > 0)."""
    x = check_x(x)
    # elu(a) + 1 = a + 1 (a >= 0);  exp(a) (a < 0)
    return np.where(x >= 0, x + 1, np.exp(np.minimum(x, 0)))


def dpfp(x, nu: int = 1) -> np.ndarray:
    r"""DPFP-``nu``: ``phi_{(j-1) 2n + i} = r_i r_{(i-j) mod 2n}``, ``r = [relu(x), relu(-x)]``; ``(... n) -> (... 2n nu)``."""
    x, nu = check_dpfp(x, nu)
    # r = [relu(x), relu(-x)]
    r = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)
    # phi_{(j-1)2n + i} = r_i * r_{(i - j) mod 2n}
    parts = [r * np.roll(r, j, axis=-1) for j in range(1, nu + 1)]
    return np.concatenate(parts, axis=-1)


# ------------------------------------------------------------------ random projections

def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int or a numpy Generator (results must be reproducible), got {seed!r}")
    return np.random.default_rng(int(seed))


def _float_dtype(dtype) -> np.dtype:
    """``dtype`` as float32 or float64, or a ``TypeError`` naming it."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def sign_fixed_qr(G: np.ndarray) -> np.ndarray:
    r"""The orthogonal factor of ``G = Q R`` with the signs fixed so that ``diag(R) > 0``.

    ``Q <- Q diag(sign(diag(R)))``.  For Gaussian ``G`` this ``Q`` is Haar distributed
    (Mezzadri 2007); LAPACK's raw ``Q`` is not (Householder QR makes the signs of
    ``diag(R)`` depend on ``G``) and biases the random-feature estimator.
    """
    G = as_float_array(G, "G", allow_complex=False)
    if G.ndim < 2:
        raise ValueError(f"G: expected matrices (..., m, n), got shape {G.shape}")
    Q, R = np.linalg.qr(G)
    s = np.sign(np.diagonal(R, axis1=-2, axis2=-1)).copy()
    s[s == 0] = 1.0
    # Q diag(sign(diag R))
    return Q * s[..., None, :]


def random_projection(f: int, n: int, seed, *, kind: str = "orthogonal", norms: str = "chi",
                      dtype=np.float64) -> np.ndarray:
    r"""A seeded ``(f, n)`` projection matrix ``W`` for Performer features (``f`` features of ``n``-vectors).

    kind : ``"iid"`` -- rows ``w_i ~ N(0, I_n)`` independently;
        ``"orthogonal"`` -- blocks of ``n`` exactly orthogonal rows: each block is the
        transpose of a sign-fixed QR factor (:func:`sign_fixed_qr`) of a fresh ``n x n``
        Gaussian matrix (Haar); the last block is truncated to ``f mod n`` rows.
    norms : ``"chi"`` -- each row rescaled to the norm of an independent ``N(0, I_n)`` vector
        (chi_n distributed), so each row is marginally ``N(0, I_n)`` (unbiased estimator);
        ``"fixed"`` -- every row has norm ``sqrt(n)`` (biased; see module docstring).
        For ``kind="iid", norms="chi"`` the rows are the Gaussian draws themselves.
    """
    f = check_int(f, "f", minimum=1)
    n = check_int(n, "n", minimum=1)
    check_choice(kind, "kind", ("iid", "orthogonal"))
    check_choice(norms, "norms", ("chi", "fixed"))
    dtype = _float_dtype(dtype)
    rng = _rng(seed)
    if kind == "iid":
        W = rng.standard_normal((f, n))
        if norms == "chi":
            return W.astype(dtype)
        directions = W / np.linalg.norm(W, axis=1, keepdims=True)
    else:
        n_blocks = -(-f // n)
        G = rng.standard_normal((n_blocks, n, n))
        Q = sign_fixed_qr(G)  # (blocks n n), Haar
        directions = np.swapaxes(Q, -1, -2).reshape(n_blocks * n, n)[:f]  # rows = columns of Q
    if norms == "chi":
        r = np.linalg.norm(rng.standard_normal((f, n)), axis=1)
    else:
        r = np.full(f, np.sqrt(n))
    return (directions * r[:, None]).astype(dtype)


# ------------------------------------------------------------------ Performer random features

def trig_features(x, W) -> np.ndarray:
    r"""``phi(x) = exp(|x|^2/2)/sqrt(f) [sin(W x), cos(W x)]``; ``(... n) -> (... 2f)``."""
    x, W = check_W(x, W)
    f = W.shape[0]
    wx = x @ W.T
    # h(x) = exp(|x|^2 / 2) / sqrt(f)
    h = np.exp(0.5 * np.sum(x * x, axis=-1, keepdims=True)) / math.sqrt(f)
    return h * np.concatenate([np.sin(wx), np.cos(wx)], axis=-1)


def _offset(z, stabilizer):
    """The stabilizer's offset ``c (... 1)`` over the exponents ``z``: 0, the row max, or the global max."""
    check_choice(stabilizer, "stabilizer", STABILIZERS)
    if stabilizer == "none" or z.size == 0:
        return np.zeros(z.shape[:-1] + (1,), dtype=z.dtype)
    if stabilizer == "row_max":
        return np.max(z, axis=-1, keepdims=True)
    return np.full(z.shape[:-1] + (1,), np.max(z), dtype=z.dtype)


def positive_features(x, W, *, stabilizer: str = "none", return_offset: bool = False):
    r"""``phi(x) = exp(W x - |x|^2/2 - c)/sqrt(f)``; ``(... n) -> (... f)``.

    ``c`` is the stabilizer's offset (0 for ``"none"``); with ``return_offset`` also returns
    ``c`` of shape ``(...)`` so that the unstabilized features are ``phi * exp(c)``.
    """
    x, W = check_W(x, W)
    return_offset = check_bool(return_offset, "return_offset")
    f = W.shape[0]
    # exponent z_i = w_i.x - |x|^2/2 ;  c = stabilizer offset over z
    z = x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    c = _offset(z, stabilizer)
    # phi(x) = exp(w_i.x - |x|^2/2 - c) / sqrt(f)
    phi = np.exp(z - c) / math.sqrt(f)
    return (phi, c[..., 0]) if return_offset else phi


def hyperbolic_features(x, W, *, stabilizer: str = "none", return_offset: bool = False):
    r"""``phi(x) = exp(-|x|^2/2)/sqrt(2f) [exp(W x - c), exp(-W x - c)]``; ``(... n) -> (... 2f)``.

    (The text's ``h(x) = exp(-|x|^2/2)/sqrt(2)`` times ``1/sqrt(f)``.)  ``c`` as in
    :func:`positive_features`, computed over ``[Wx, -Wx]``.
    """
    x, W = check_W(x, W)
    return_offset = check_bool(return_offset, "return_offset")
    f = W.shape[0]
    wx = x @ W.T
    # exponents z = [Wx, -Wx] - |x|^2/2 ;  c = stabilizer offset over z
    z = np.concatenate([wx, -wx], axis=-1) - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    c = _offset(z, stabilizer)
    # phi(x) = exp(-|x|^2/2) / sqrt(2f) * [exp(Wx), exp(-Wx)]  (times exp(-c))
    phi = np.exp(z - c) / math.sqrt(2 * f)
    return (phi, c[..., 0]) if return_offset else phi


def random_features(x, W, kind: str, **kwargs):
    """Dispatch to ``trig_features`` / ``positive_features`` / ``hyperbolic_features`` by ``kind``."""
    check_choice(kind, "kind", FEATURE_KINDS)
    if kind == "trig":
        if kwargs.get("stabilizer", "none") != "none":
            raise ValueError("stabilizer: trigonometric features are bounded by exp(|x|^2/2)/sqrt(f); "
                             f"only 'none' applies, got {kwargs['stabilizer']!r}")
        kwargs.pop("stabilizer", None)
        return trig_features(x, W, **kwargs)
    fn = positive_features if kind == "positive" else hyperbolic_features
    return fn(x, W, **kwargs)
