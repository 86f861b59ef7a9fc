r"""Discretization of the continuous LTI system  h'(t) = A h(t) + B x(t).

Each method is its own small function with its formula written above the
lines that compute it.  All return ``(A_bar, B_bar)``; ``C`` and ``D`` are
never changed (the S4 convention: the discrete output is ``y_k = C h_k + D x_k``
with the *same* ``C``, ``D`` as the continuous system).  Note that
``scipy.signal.cont2discrete`` returns a different ``(C_d, D_d)`` for the
bilinear/gbt methods: its state is shifted by half a step.  Only
``A_bar``/``B_bar`` are comparable between the two conventions.

Shapes (einops style)
---------------------
* ``A``: ``(... n n)`` dense, or ``(... n)`` diagonal when ``diagonal=True``
  (real or complex).  ``...`` are batch axes, typically one channel axis ``d``.
* ``B``: ``(... n m)``, the same batch axes as ``A`` exactly (no broadcasting).
* ``dt``: a positive scalar; or shape ``(...)`` equal to the batch axes (one
  step per channel); or ``(l ...)`` with one extra leading axis (one step per
  time step: a longer step bridges missing samples).
* Returns ``A_bar``: ``dt.shape[:1 if per-step] + (... n n)`` (or ``(... n)``)
  and ``B_bar``: ``(... n m)`` with the same leading axes.

The public entry point is :func:`refimpl.ssm.discretization.discretize` (``method=`` names one of
the functions below); the per-method functions stay public here.

Conventions
-----------
* ``zoh`` -- zero-order hold, exact for piecewise-constant input:
  ``A_bar = exp(dt A)``, ``B_bar = (int_0^dt exp(A s) ds) B = dt phi1(dt A) B``
  with ``phi1(z) = (exp(z) - 1)/z``.  The text writes ``A^{-1}(exp(dt A) - I) B``;
  we evaluate ``phi1`` without inverting ``A`` (stable as ``A -> 0``, exact at 0).
* ``bilinear`` -- Tustin / S4: ``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``,
  ``B_bar = (I - dt/2 A)^{-1} dt B``.
* ``gbt`` -- generalized bilinear with ``alpha`` in [0, 1]:
  ``A_bar = (I - alpha dt A)^{-1}(I + (1 - alpha) dt A)``, ``B_bar = (I - alpha dt A)^{-1} dt B``
  (alpha = 0 forward Euler, 1/2 bilinear, 1 backward Euler).
* ``forward_euler`` -- ``A_bar = I + dt A``, ``B_bar = dt B``.
* ``backward_euler`` -- ``A_bar = (I - dt A)^{-1}``, ``B_bar = (I - dt A)^{-1} dt B``.
* ``mamba`` -- Mamba's mix (Gu & Dao 2023, Sec. 3 and their reference code):
  ``A_bar = exp(dt A)`` by ZOH, ``B_bar = dt B`` by Euler.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import scipy.linalg

from refimpl._validate import as_float_array, check_bool, check_positive, result_dtype

__all__ = [
    "METHODS",
    "zoh",
    "bilinear",
    "gbt",
    "forward_euler",
    "backward_euler",
    "mamba",
    "phi1",
    "phi1_dense",
]

METHODS = ("zoh", "bilinear", "gbt", "forward_euler", "backward_euler", "mamba")


def _prepare(A, B, dt, diagonal: bool):
    """Validate and return ``(A, B, dt, n)`` cast to the working dtype (``dt`` to its real dtype)."""
    diagonal = check_bool(diagonal, "diagonal")
    A = as_float_array(A, "A", ndim=None)
    B = as_float_array(B, "B")
    dt = as_float_array(dt, "dt", allow_complex=False)
    if diagonal:
        if A.ndim < 1:
            raise ValueError(f"A: expected a diagonal of shape (..., n), got shape {A.shape}")
        batch, n = A.shape[:-1], A.shape[-1]
    else:
        if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
            raise ValueError(f"A: expected a square matrix of shape (..., n, n), got shape {A.shape}")
        batch, n = A.shape[:-2], A.shape[-1]
    if B.ndim != len(batch) + 2 or B.shape[:-2] != batch or B.shape[-2] != n:
        raise ValueError(
            f"B: expected shape ({', '.join(str(k) for k in batch + (n,))}, m) to match A of shape {A.shape}, got {B.shape}"
        )
    check_positive(dt, "dt")
    if dt.ndim == 0:
        pass
    elif dt.shape == batch:
        pass
    elif dt.ndim == len(batch) + 1 and dt.shape[1:] == batch:
        pass
    else:
        raise ValueError(
            f"dt: expected a scalar, shape {batch} (per channel) or (l,)+{batch} (per time step), got {dt.shape}"
        )
    dtype = result_dtype(A, B, dt)
    A = A.astype(dtype, copy=False)
    B = B.astype(dtype, copy=False)
    dt = dt.astype(np.finfo(dtype).dtype, copy=False)
    return A, B, dt, n


def _expand(dt: np.ndarray, core_ndim: int) -> np.ndarray:
    """dt with ``core_ndim`` trailing singleton axes so that it multiplies ``A``."""
    return dt.reshape(dt.shape + (1,) * core_ndim)


def _lead(A: np.ndarray, dt: np.ndarray, core_ndim: int) -> np.ndarray:
    """Broadcast ``A`` to the leading (time) axis of ``dt`` if it has one."""
    extra = dt.ndim - (A.ndim - core_ndim)
    if extra > 0:
        return np.broadcast_to(A, dt.shape[:extra] + A.shape)
    return A


def phi1(z) -> np.ndarray:
    r"""``phi1(z) = (exp(z) - 1)/z`` elementwise, ``phi1(0) = 1``, via ``expm1`` (no cancellation).

    ``z``: any shape, float32/float64/complex64/complex128 (a Python scalar or list of numbers
    becomes float64/complex128); the result has ``z``'s shape and dtype.  Integer and bool
    arrays are a ``TypeError`` (``phi1`` of an integer array would otherwise be computed, then
    truncated back to integers), NaN/Inf a ``ValueError``.

    ``np.expm1`` is accurate for complex arguments too (checked against mpmath in the
    tests).  For ``|z| < 1e-5`` the series ``1 + z/2 + z^2/6`` is used instead: its
    truncation error ``|z|^3/24 < 5e-17`` is below float64's unit roundoff, and it avoids
    complex division by tiny or subnormal numbers (which overflows to ``inf + nan j``).
    This is the one ``phi1`` of the package (the selective scan's ZOH uses it too).
    """
    z = as_float_array(z, "z")
    out = np.ones_like(z)
    small = np.abs(z) < 1e-5
    zs = z[small]
    # phi1(z) = 1 + z/2 + z^2/6 + O(z^3)
    out[small] = 1 + zs / 2 + zs * zs / 6
    zb = z[~small]
    # phi1(z) = expm1(z) / z
    out[~small] = np.expm1(zb) / zb
    return out


def _check_square(X, name: str) -> np.ndarray:
    """``X`` as a floating array of square matrices ``(... n n)``, or raise."""
    X = as_float_array(X, name)
    if X.ndim < 2 or X.shape[-1] != X.shape[-2]:
        raise ValueError(f"{name}: expected square matrices of shape (..., n, n), got shape {X.shape}")
    return X


def _scaling_exponent(X: np.ndarray) -> int:
    """The smallest ``s >= 0`` with ``||X / 2^s||_1 <= 1/2``."""
    norm1 = float(np.max(np.sum(np.abs(X), axis=-2))) if X.size else 0.0
    return max(0, int(math.ceil(math.log2(norm1 / 0.5)))) if norm1 > 0.5 else 0


def phi1_dense(X) -> np.ndarray:
    r"""``phi1(X) = sum_{k>=0} X^k/(k+1)!`` for square ``X`` (batched ``(... n n)``), without inverting ``X``.

    ``X``: float32/float64/complex64/complex128 ``(... n n)``; integer or bool arrays are a
    ``TypeError``.  Returns the same shape and dtype.

    Scaling and squaring on the identity ``phi1(2Y) = 1/2 (exp(Y) + I) phi1(Y)``:
    take ``Y = X / 2^s`` with ``||Y||_1 <= 1/2``, sum the Taylor series of
    ``phi1(Y)`` to degree 18 (truncation ``< 0.5^18/19! ~ 3e-23``, below float64's
    unit roundoff), form ``exp(Y) = I + Y phi1(Y)``, then undo the scaling
    ``s`` times.  Independent of ``scipy.linalg.expm``.
    """
    X = _check_square(X, "X")
    if X.ndim > 2:
        # one scaling per matrix, so a batched call equals the per-matrix calls bit for bit
        out = np.empty_like(X)
        for idx in np.ndindex(X.shape[:-2]):
            out[idx] = phi1_dense(X[idx])
        return out
    eye = np.eye(X.shape[-1], dtype=X.dtype)
    s = _scaling_exponent(X)
    Y = X / (2.0 ** s)
    # phi1(Y) = I + Y/2! + Y^2/3! + ... + Y^18/19!   (term_k = term_{k-1} Y / (k+1))
    term = eye.copy()
    P = eye.copy()
    for k in range(1, 19):
        term = term @ Y / (k + 1)
        P = P + term
    # exp(Y) = I + Y phi1(Y)
    E = eye + Y @ P
    for _ in range(s):
        # phi1(2Y) = 1/2 (exp(Y) + I) phi1(Y);  exp(2Y) = exp(Y)^2
        P = 0.5 * (E + eye) @ P
        E = E @ E
    return P


def _expm(X: np.ndarray) -> np.ndarray:
    """``exp(X)`` of a batch of square matrices by scipy's Pade scaling and squaring, in ``X``'s dtype (empty batches too)."""
    if X.size == 0:
        return X.copy()
    return scipy.linalg.expm(X).astype(X.dtype, copy=False)


def zoh(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Zero-order hold.  ``A_bar = exp(dt A)``, ``B_bar = dt phi1(dt A) B``."""
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        dtA = _expand(dt, 1) * A
        # A_bar = exp(dt A)
        A_bar = np.exp(dtA)
        # B_bar = (exp(dt A) - 1)/A * B = dt * expm1(dt A)/(dt A) * B   (exact 'dt B' at A = 0)
        B_bar = (_expand(dt, 1) * phi1(dtA))[..., None] * _lead(B, dt, 2)
        return A_bar, B_bar
    dtA = _expand(dt, 2) * A
    # A_bar = expm(dt A)
    A_bar = _expm(dtA)
    # B_bar = A^{-1}(exp(dt A) - I) B = dt phi1(dt A) B
    B_bar = _expand(dt, 2) * (phi1_dense(dtA) @ _lead(B, dt, 2))
    return A_bar, B_bar


def _solve(M: np.ndarray, R: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.solve(M, R)
    except np.linalg.LinAlgError:
        raise ValueError(f"{what}: the matrix is singular for this A and dt (an eigenvalue of alpha*dt*A equals 1)") from None


def gbt(A, B, dt, alpha: float, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Generalized bilinear transform (Zhang et al.; scipy's ``gbt``), ``alpha`` in [0, 1]."""
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha: expected a real number in [0, 1], got {type(alpha).__name__}")
    if not (0.0 <= float(alpha) <= 1.0) or not math.isfinite(float(alpha)):
        raise ValueError(f"alpha: expected a real number in [0, 1], got {alpha}")
    alpha = float(alpha)
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        dtA = _expand(dt, 1) * A
        den = 1.0 - alpha * dtA
        if np.any(den == 0):
            raise ValueError("gbt: 1 - alpha*dt*A is zero for some diagonal entry of A (singular transform)")
        # A_bar = (1 - alpha dt A)^{-1} (1 + (1 - alpha) dt A)
        A_bar = (1.0 + (1.0 - alpha) * dtA) / den
        # B_bar = (1 - alpha dt A)^{-1} dt B
        B_bar = (_expand(dt, 1) / den)[..., None] * _lead(B, dt, 2)
        return A_bar, B_bar
    eye = np.eye(n, dtype=A.dtype)
    dtA = _expand(dt, 2) * A
    lhs = eye - alpha * dtA
    # A_bar = (I - alpha dt A)^{-1} (I + (1 - alpha) dt A)   -- solve, never inv
    A_bar = _solve(lhs, eye + (1.0 - alpha) * dtA, "gbt")
    # B_bar = (I - alpha dt A)^{-1} dt B
    B_bar = _solve(lhs, _expand(dt, 2) * _lead(B, dt, 2), "gbt")
    return A_bar, B_bar


def bilinear(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Bilinear (Tustin), S4's convention:
    ``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``, ``B_bar = (I - dt/2 A)^{-1} dt B``; C unchanged."""
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        half = _expand(dt, 1) / 2 * A
        # A_bar = (1 - dt/2 A)^{-1} (1 + dt/2 A)
        A_bar = (1.0 + half) / (1.0 - half)
        # B_bar = (1 - dt/2 A)^{-1} dt B
        B_bar = (_expand(dt, 1) / (1.0 - half))[..., None] * _lead(B, dt, 2)
        return A_bar, B_bar
    eye = np.eye(n, dtype=A.dtype)
    half = _expand(dt, 2) / 2 * A
    # A_bar = (I - dt/2 A)^{-1} (I + dt/2 A)
    A_bar = _solve(eye - half, eye + half, "bilinear")
    # B_bar = (I - dt/2 A)^{-1} dt B
    B_bar = _solve(eye - half, _expand(dt, 2) * _lead(B, dt, 2), "bilinear")
    return A_bar, B_bar


def forward_euler(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Forward Euler: ``A_bar = I + dt A``, ``B_bar = dt B``."""
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        # A_bar = 1 + dt A
        A_bar = 1.0 + _expand(dt, 1) * A
    else:
        # A_bar = I + dt A
        A_bar = np.eye(n, dtype=A.dtype) + _expand(dt, 2) * A
    # B_bar = dt B
    B_bar = _expand(dt, 2) * _lead(B, dt, 2)
    return A_bar, B_bar


def backward_euler(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Backward Euler: ``A_bar = (I - dt A)^{-1}``, ``B_bar = (I - dt A)^{-1} dt B``."""
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        den = 1.0 - _expand(dt, 1) * A
        if np.any(den == 0):
            raise ValueError("backward_euler: 1 - dt*A is zero for some diagonal entry of A")
        # A_bar = 1 / (1 - dt A)
        A_bar = 1.0 / den
        # B_bar = dt B / (1 - dt A)
        B_bar = (_expand(dt, 1) / den)[..., None] * _lead(B, dt, 2)
        return A_bar, B_bar
    eye = np.eye(n, dtype=A.dtype)
    lhs = eye - _expand(dt, 2) * A
    # A_bar = (I - dt A)^{-1}
    A_bar = _solve(lhs, np.broadcast_to(eye, lhs.shape), "backward_euler")
    # B_bar = (I - dt A)^{-1} dt B
    B_bar = _solve(lhs, _expand(dt, 2) * _lead(B, dt, 2), "backward_euler")
    return A_bar, B_bar


def mamba(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""Mamba's mix: ``A_bar = exp(dt A)`` (ZOH), ``B_bar = dt B`` (Euler)."""
    A, B, dt, n = _prepare(A, B, dt, diagonal)
    if diagonal:
        # A_bar = exp(dt A)
        A_bar = np.exp(_expand(dt, 1) * A)
    else:
        # A_bar = expm(dt A)
        A_bar = _expm(_expand(dt, 2) * A)
    # B_bar = dt B
    B_bar = _expand(dt, 2) * _lead(B, dt, 2)
    return A_bar, B_bar
