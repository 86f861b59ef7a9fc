r"""The backward pass (vector-Jacobian products) of the discretizations ``(A, B, dt) -> (A_bar, B_bar)``.

One function per method, each ``<method>_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal=False)`` (``gbt_vjp`` takes
``alpha`` too), returning ``{"A": dA, "B": dB, "dt": ddt}``, each with its input's shape and dtype.  ``C`` and
``D`` are not arguments of the forward (every method keeps them): their gradients pass through unchanged.

Shapes: as the forward (:mod:`refimpl.ssm.discretization.reference`): ``A`` ``(... n n)`` or ``(... n)``
(``diagonal=True``), ``B`` ``(... n m)``, ``dt`` a scalar, ``(...)`` or ``(l ...)``; the cotangents ``dA_bar``,
``dB_bar`` have the outputs' shapes (a leading ``l`` when ``dt`` is per step: ``A`` and ``B`` then get the sum of
the per-step gradients, ``dt`` one per step).

Complex convention (PyTorch's; Mamba's for its complex ``A``): for a real loss the gradient of ``z = a + i b`` is
``dL/da + i dL/db``, and the cotangent of a complex output is given the same way.  For a holomorphic ``w = f(z)``
the gradient is ``conj(f'(z)) dw``; for a real ``dt`` it is ``Re(conj(df/d dt) dw)`` summed over its uses.

Adjoint equations (``z = dt A`` elementwise for a diagonal ``A``; ``dz`` its cotangent)
-------------------------------------------------------------------------------------
* **zoh, diagonal**: ``A_bar = e^z``, ``B_bar = g B`` with ``g = dt phi1(z)``:
  ``dB = conj(g) dB_bar``, ``dg = sum_m dB_bar conj(B)``, ``dz = conj(e^z) dA_bar + conj(dt phi1'(z)) dg``,
  ``dA = dt dz``, ``d dt = Re sum (conj(A) dz + conj(phi1(z)) dg)``, where
  ``phi1'(z) = (z e^z - e^z + 1)/z^2 = (e^z - phi1(z))/z`` is evaluated as that quotient for ``|z| >= 1`` and by
  its Taylor series ``sum_k (k+1) z^k/(k+2)!`` (20 terms, truncation < 2e-20) for ``|z| < 1``, where the
  quotient cancels (:func:`dphi1`).
* **zoh, dense**: Van Loan: ``[[A_bar, B_bar], [0, I]] = exp(dt M)``, ``M = [[A, B], [0, 0]]``.  The adjoint of
  ``E = exp(X)`` is the Frechet derivative at ``X^H`` in the direction of the cotangent,
  ``dX = L_exp(X^H, dE)``, read off the block-triangular identity (Mathias 1996; Higham, *Functions of
  Matrices*, Thm 3.6) ``exp([[X^H, dE], [0, X^H]]) = [[e^{X^H}, L_exp(X^H, dE)], [0, e^{X^H}]]``, with
  ``dE = [[dA_bar, dB_bar], [0, 0]]`` and ``X = dt M``; then ``dA = dt dX_11``, ``dB = dt dX_12``,
  ``d dt = Re <M, dX>``.  The ``2(n+m)`` block exponential is scipy's Pade ``expm`` (the forward's exponential);
  the oracle side never calls it (finite differences of an independent forward).
* **gbt** (bilinear ``alpha = 1/2``, forward Euler 0, backward Euler 1): ``A_bar = M^{-1} R``,
  ``B_bar = M^{-1} dt B`` with ``M = I - alpha dt A``, ``R = I + (1 - alpha) dt A``.  The adjoint of
  ``X = M^{-1} Y`` is ``dY = M^{-H} dX`` (a solve with ``M^H``, never an inverse), ``dM = -dY X^H``:
  ``S_A = M^{-H} dA_bar``, ``S_B = M^{-H} dB_bar``, ``dM = -(S_A A_bar^H + S_B B_bar^H)``, then
  ``dA = dt ((1 - alpha) S_A - alpha dM)``, ``dB = dt S_B``,
  ``d dt = Re <A, (1 - alpha) S_A - alpha dM> + Re <B, S_B>``.  Diagonal: ``dA_bar/dz = 1/(1 - alpha z)^2``,
  ``g = dt/(1 - alpha z)``: ``dg/dz = alpha dt/(1 - alpha z)^2``, ``dg/d dt = 1/(1 - alpha z)`` (direct).
* **forward_euler**: ``dA = dt dA_bar``, ``dB = dt dB_bar``, ``d dt = Re (<A, dA_bar> + <B, dB_bar>)``.
* **mamba**: ``A_bar`` as zoh's, ``B_bar = dt B``: ``dB = dt dB_bar``, ``d dt`` adds ``Re <B, dB_bar>``.
(``<U, V> = sum conj(U) V``.)
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import scipy.linalg

from refimpl._validate import as_float_array, check_shape
from refimpl.ssm.discretization import reference as fwd

__all__ = ["zoh_vjp", "bilinear_vjp", "gbt_vjp", "forward_euler_vjp", "backward_euler_vjp", "mamba_vjp", "dphi1",
           "VJPS"]


def dphi1(z) -> np.ndarray:
    r"""``phi1'(z) = (z e^z - e^z + 1)/z^2`` elementwise, ``phi1'(0) = 1/2``.

    ``|z| >= 1``: the equal quotient ``(e^z - phi1(z))/z`` (no cancellation worse than a factor ~2 there);
    ``|z| < 1``: the Taylor series ``sum_{k<20} (k+1) z^k/(k+2)!`` (the remainder is below ``21/22! < 2e-20``),
    where the quotient would lose ``log10(1/|z|)`` digits.  Shape and dtype of ``z``.
    """
    z = as_float_array(z, "z")
    out = np.zeros_like(z)
    small = np.abs(z) < 1.0
    zs = z[small]
    # phi1'(z) = sum_k (k+1) z^k / (k+2)!   (Horner from the highest term down)
    acc = np.zeros_like(zs)
    fact = [1.0]
    for k in range(1, 23):
        fact.append(fact[-1] * k)
    for k in range(19, -1, -1):
        acc = acc * zs + (k + 1) / fact[k + 2]
    out[small] = acc
    zb = z[~small]
    # phi1'(z) = (e^z - phi1(z)) / z
    out[~small] = (np.exp(zb) - fwd.phi1(zb)) / zb
    return out


# ---------------------------------------------------------------------------------------------- helpers

def _prepare_vjp(A, B, dt, dA_bar, dB_bar, diagonal, method, alpha=None):
    """Validate the forward's arguments and the cotangents; returns the working arrays and the output shapes."""
    originals = dict(A=A, B=B, dt=dt)
    if method == "gbt":
        A_bar, B_bar = fwd.gbt(A, B, dt, alpha, diagonal=diagonal)
    else:
        A_bar, B_bar = getattr(fwd, method)(A, B, dt, diagonal=diagonal)
    A, B, dt, n = fwd._prepare(A, B, dt, diagonal)
    cplx = A_bar.dtype.kind == "c"
    # a real system's outputs are real: a complex cotangent enters Re sum conj(w) y by its real part only
    dA_bar = as_float_array(dA_bar, "dA_bar")
    check_shape(dA_bar, "dA_bar", A_bar.shape, "the shape of A_bar (from A and dt)")
    dB_bar = as_float_array(dB_bar, "dB_bar")
    check_shape(dB_bar, "dB_bar", B_bar.shape, "the shape of B_bar (from A, B and dt)")
    if not cplx:
        dA_bar, dB_bar = dA_bar.real, dB_bar.real
    wdt = np.result_type(A_bar.dtype, dA_bar.dtype, dB_bar.dtype)
    return originals, A, B, dt, A_bar, B_bar, dA_bar.astype(wdt, copy=False), dB_bar.astype(wdt, copy=False)


def _core(diagonal: bool) -> int:
    return 1 if diagonal else 2


def _full(A, B, dt, diagonal):
    """``A``, ``B`` broadcast to ``dt``'s leading (time) axis if it has one; ``dt`` as ``(lead + batch)``."""
    core = _core(diagonal)
    A_l = fwd._lead(A, dt, core)
    B_l = fwd._lead(B, dt, 2)
    dt_l = np.broadcast_to(dt, A_l.shape[:A_l.ndim - core])
    return A_l, B_l, dt_l


def _finish(originals, dt, dA_l, dB_l, ddt_l, diagonal) -> Dict[str, np.ndarray]:
    """Sum the per-step gradients of ``A``, ``B`` over ``dt``'s time axis, ``dt``'s over its broadcast axes; cast."""
    A0 = np.asarray(originals["A"])
    core = _core(diagonal)
    extra = dA_l.ndim - (A0.ndim if A0.ndim else core)
    if extra > 0:
        dA_l = dA_l.sum(axis=tuple(range(extra)))
        dB_l = dB_l.sum(axis=tuple(range(extra)))
    # dt broadcast over the batch axes when a scalar: its gradient is the sum over them
    ddt = ddt_l.sum() if dt.ndim == 0 else ddt_l.reshape(dt.shape)
    out = {"A": dA_l, "B": dB_l, "dt": np.asarray(ddt)}
    res = {}
    for k, g in out.items():
        # a real input gets the real part (the complex convention); the working dtype stays (never a downcast)
        if np.asarray(originals[k]).dtype.kind != "c":
            g = np.real(g)
        res[k] = np.ascontiguousarray(np.asarray(g)).reshape(np.shape(originals[k]))
    return res


def _expm_vjp(X: np.ndarray, dE: np.ndarray) -> np.ndarray:
    r"""``dX = L_exp(X^H, dE)`` of ``E = exp(X)`` for one square ``X``, by the block-triangular identity
    ``exp([[X^H, dE], [0, X^H]])_{12} = L_exp(X^H, dE)``."""
    N = X.shape[-1]
    XH = np.conj(X).T
    blk = np.zeros((2 * N, 2 * N), dtype=np.result_type(X, dE))
    blk[:N, :N] = XH
    blk[N:, N:] = XH
    blk[:N, N:] = dE
    return scipy.linalg.expm(blk)[:N, N:]


# ---------------------------------------------------------------------------------------------- per method

def zoh_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of ZOH (``A_bar = e^{dt A}``, ``B_bar = dt phi1(dt A) B``); the adjoints in the module docstring."""
    originals, A, B, dt, A_bar, B_bar, dA_bar, dB_bar = _prepare_vjp(A, B, dt, dA_bar, dB_bar, diagonal, "zoh")
    A_l, B_l, dt_l = _full(A, B, dt, diagonal)
    wdt = dA_bar.dtype
    if diagonal:
        dte = dt_l[..., None]
        z = dte * A_l
        # g = dt phi1(z);  B_bar = g B
        g = dte * fwd.phi1(z)
        # dB = conj(g) dB_bar;  dg = sum_m dB_bar conj(B)
        dB = np.conj(g)[..., None] * dB_bar
        dg = np.sum(dB_bar * np.conj(B_l), axis=-1)
        # dz = conj(e^z) dA_bar + conj(dt phi1'(z)) dg
        dz = np.conj(A_bar) * dA_bar + np.conj(dte * dphi1(z)) * dg
        # dA = dt dz;  d dt = Re sum_n (conj(A) dz + conj(phi1(z)) dg)
        dA = dte * dz
        ddt = np.real(np.sum(np.conj(A_l) * dz + np.conj(fwd.phi1(z)) * dg, axis=-1))
        return _finish(originals, dt, dA, dB, ddt, diagonal)
    n, m = B_l.shape[-2], B_l.shape[-1]
    dA = np.zeros(A_l.shape, dtype=wdt)
    dB = np.zeros(B_l.shape, dtype=wdt)
    ddt = np.zeros(dt_l.shape, dtype=np.finfo(wdt).dtype)
    for idx in np.ndindex(dt_l.shape):
        # M = [[A, B], [0, 0]];  [[A_bar, B_bar], [0, I]] = exp(dt M)
        M = np.zeros((n + m, n + m), dtype=wdt)
        M[:n, :n] = A_l[idx]
        M[:n, n:] = B_l[idx]
        # dE = [[dA_bar, dB_bar], [0, 0]]
        dE = np.zeros_like(M)
        dE[:n, :n] = dA_bar[idx]
        dE[:n, n:] = dB_bar[idx]
        # dX = L_exp((dt M)^H, dE)
        dX = _expm_vjp(dt_l[idx] * M, dE)
        # dA = dt dX_11, dB = dt dX_12, d dt = Re <M, dX>
        dA[idx] = dt_l[idx] * dX[:n, :n]
        dB[idx] = dt_l[idx] * dX[:n, n:]
        ddt[idx] = np.real(np.sum(np.conj(M) * dX))
    return _finish(originals, dt, dA, dB, ddt, diagonal)


def gbt_vjp(A, B, dt, alpha: float, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of the generalized bilinear transform (``M = I - alpha dt A``, ``A_bar = M^{-1}(I + (1 - alpha) dt A)``,
    ``B_bar = M^{-1} dt B``); the adjoints (solves with ``M^H``) in the module docstring."""
    originals, A, B, dt, A_bar, B_bar, dA_bar, dB_bar = _prepare_vjp(A, B, dt, dA_bar, dB_bar, diagonal, "gbt",
                                                                     alpha)
    alpha = float(alpha)
    A_l, B_l, dt_l = _full(A, B, dt, diagonal)
    wdt = dA_bar.dtype
    if diagonal:
        dte = dt_l[..., None]
        z = dte * A_l
        den = 1.0 - alpha * z
        # g = dt / (1 - alpha z);  B_bar = g B
        g = dte / den
        dB = np.conj(g)[..., None] * dB_bar
        dg = np.sum(dB_bar * np.conj(B_l), axis=-1)
        # dA_bar/dz = 1/(1 - alpha z)^2;  dg/dz = alpha dt/(1 - alpha z)^2
        dz = np.conj(1.0 / den ** 2) * dA_bar + np.conj(alpha * dte / den ** 2) * dg
        # dA = dt dz;  d dt = Re sum (conj(A) dz + conj(1/(1 - alpha z)) dg)
        dA = dte * dz
        ddt = np.real(np.sum(np.conj(A_l) * dz + np.conj(1.0 / den) * dg, axis=-1))
        return _finish(originals, dt, dA, dB, ddt, diagonal)
    n = A_l.shape[-1]
    eye = np.eye(n, dtype=wdt)
    Ab_l = np.broadcast_to(A_bar, A_l.shape)
    dte = dt_l[..., None, None]
    # M = I - alpha dt A
    M = eye - alpha * dte * A_l
    MH = np.conj(np.swapaxes(M, -1, -2))
    # S_A = M^{-H} dA_bar,  S_B = M^{-H} dB_bar   (solves, never an inverse)
    S_A = fwd._solve(MH, dA_bar, "gbt_vjp")
    S_B = fwd._solve(MH, dB_bar, "gbt_vjp")
    # dM = -(S_A A_bar^H + S_B B_bar^H)
    dM = -(S_A @ np.conj(np.swapaxes(Ab_l, -1, -2)) + S_B @ np.conj(np.swapaxes(B_bar, -1, -2)))
    # the cotangent of dt A:  (1 - alpha) S_A - alpha dM
    dtA_bar = (1.0 - alpha) * S_A - alpha * dM
    # dA = dt ((1 - alpha) S_A - alpha dM);  dB = dt S_B
    dA = dte * dtA_bar
    dB = dte * S_B
    # d dt = Re <A, (1 - alpha) S_A - alpha dM> + Re <B, S_B>
    ddt = np.real(np.sum(np.conj(A_l) * dtA_bar, axis=(-2, -1)) + np.sum(np.conj(B_l) * S_B, axis=(-2, -1)))
    return _finish(originals, dt, dA, dB, ddt, diagonal)


def bilinear_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of the bilinear transform: :func:`gbt_vjp` with ``alpha = 1/2`` (the same forward exactly)."""
    return gbt_vjp(A, B, dt, 0.5, dA_bar=dA_bar, dB_bar=dB_bar, diagonal=diagonal)


def backward_euler_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of backward Euler: :func:`gbt_vjp` with ``alpha = 1`` (``A_bar = (I - dt A)^{-1}``)."""
    return gbt_vjp(A, B, dt, 1.0, dA_bar=dA_bar, dB_bar=dB_bar, diagonal=diagonal)


def forward_euler_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of forward Euler (``A_bar = I + dt A``, ``B_bar = dt B``)."""
    originals, A, B, dt, A_bar, B_bar, dA_bar, dB_bar = _prepare_vjp(A, B, dt, dA_bar, dB_bar, diagonal,
                                                                     "forward_euler")
    A_l, B_l, dt_l = _full(A, B, dt, diagonal)
    core = _core(diagonal)
    dtA = dt_l.reshape(dt_l.shape + (1,) * core)
    # dA = dt dA_bar;  dB = dt dB_bar
    dA = dtA * dA_bar
    dB = dt_l[..., None, None] * dB_bar
    # d dt = Re (<A, dA_bar> + <B, dB_bar>)
    ddt = np.real(np.sum(np.conj(A_l) * dA_bar, axis=tuple(range(-core, 0)))
                  + np.sum(np.conj(B_l) * dB_bar, axis=(-2, -1)))
    return _finish(originals, dt, dA, dB, ddt, diagonal)


def mamba_vjp(A, B, dt, *, dA_bar, dB_bar, diagonal: bool = False) -> Dict[str, np.ndarray]:
    r"""The VJP of Mamba's mix (``A_bar = e^{dt A}`` by ZOH, ``B_bar = dt B`` by Euler)."""
    originals, A, B, dt, A_bar, B_bar, dA_bar, dB_bar = _prepare_vjp(A, B, dt, dA_bar, dB_bar, diagonal, "mamba")
    A_l, B_l, dt_l = _full(A, B, dt, diagonal)
    wdt = dA_bar.dtype
    # B_bar = dt B:  dB = dt dB_bar,  d dt = Re <B, dB_bar>
    dB = dt_l[..., None, None] * dB_bar
    ddt = np.real(np.sum(np.conj(B_l) * dB_bar, axis=(-2, -1)))
    if diagonal:
        dte = dt_l[..., None]
        # A_bar = e^z, z = dt A:  dz = conj(e^z) dA_bar,  dA = dt dz,  d dt += Re <A, dz>
        dz = np.conj(A_bar) * dA_bar
        dA = dte * dz
        ddt = ddt + np.real(np.sum(np.conj(A_l) * dz, axis=-1))
        return _finish(originals, dt, dA, dB, ddt, diagonal)
    dA = np.zeros(A_l.shape, dtype=wdt)
    for idx in np.ndindex(dt_l.shape):
        # A_bar = exp(dt A):  dX = L_exp((dt A)^H, dA_bar),  dA = dt dX,  d dt += Re <A, dX>
        dX = _expm_vjp(dt_l[idx] * A_l[idx].astype(wdt), dA_bar[idx])
        dA[idx] = dt_l[idx] * dX
        ddt[idx] = ddt[idx] + np.real(np.sum(np.conj(A_l[idx]) * dX))
    return _finish(originals, dt, dA, dB, ddt, diagonal)


VJPS = {"zoh": zoh_vjp, "bilinear": bilinear_vjp, "gbt": gbt_vjp, "forward_euler": forward_euler_vjp,
        "backward_euler": backward_euler_vjp, "mamba": mamba_vjp}
