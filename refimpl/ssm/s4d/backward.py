r"""The backward pass of the S4D (Vandermonde) and DSS kernels, written as adjoint recurrences.

Forward (:mod:`refimpl.ssm.s4d.reference`): per channel ``c`` and state ``n`` (``Lambda, B, C (d n)``, ``dt``
a scalar or ``(d,)``), ``(A_bar, B_bar) = discretize_diag(Lambda, B, dt, method)``, ``v = C B_bar``,
``Kc_k = sum_n v_n A_bar_n^k`` (``k < L``, powers by repeated products ``P_{k+1} = A_bar P_k``, ``P_0 = 1``),
and ``K`` the named real part: ``2re`` ``K = 2 Re Kc``, ``re`` ``K = Re Kc``, ``complex`` ``K = Kc``.

Complex convention (PyTorch's): for a real loss the gradient of ``z = a + i b`` is ``dL/da + i dL/db``; the
cotangent ``dK`` of a complex ``K`` is given the same way.  A real ``dK`` of ``K = 2 Re Kc`` is the complex
cotangent ``dKc = 2 dK`` of ``Kc`` (``Re sum dK 2 Re Kc = Re sum conj(2 dK) Kc``); of ``Re Kc``, ``dKc = dK``.
Real inputs (an S4D-Real ``Lambda``, a real ``B`` or ``C``) get the real part of their gradient.

Adjoint of the Vandermonde product -- **the adjoint of the power scan is itself a reverse scan** over ``k``::

    dv_n = sum_k conj(P_{n,k}) dKc_k
    gP_{L-1} = conj(v) dKc_{L-1},   gP_k = conj(v) dKc_k + conj(A_bar) gP_{k+1}     (k = L-2 .. 0)
    dA_bar_n = sum_{k<L-1} gP_{k+1} conj(P_k)

then ``dC = conj(B_bar) dv``, ``dB_bar = conj(C) dv`` and the discretization's adjoint
(:func:`refimpl.ssm.discretization.backward.zoh_vjp` / ``bilinear_vjp`` with ``diagonal=True``: through
``phi1'`` for ZOH) gives ``dLambda``, ``dB`` and ``d dt`` (summed over the channels when ``dt`` is a scalar).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape
from refimpl.ssm.discretization import backward as dbwd
from refimpl.ssm.s4.reference import OUTPUTS
from refimpl.ssm.s4d.reference import METHODS, _validate, discretize_diag

__all__ = ["vandermonde_vjp", "kernel_vjp"]  # complex_cotangent: a building block of kernel_vjp


def complex_cotangent(dK, d: int, L: int, output: str, cdt) -> np.ndarray:
    """Check ``dK`` ``(d l)`` like an input; return the cotangent of the complex kernel ``Kc`` (see the docstring)."""
    dK = as_float_array(dK, "dK", ndim=2)
    check_shape(dK, "dK", (d, L), "(d l)", src="the shape of K: d from Lambda, l = L")
    if output != "complex":
        # a real K: a complex cotangent enters Re sum conj(dK) K by its real part only
        dK = dK.real
    dK = dK.astype(np.result_type(dK, cdt), copy=False)
    if output == "2re":
        # K = 2 Re Kc:  dKc = 2 dK
        return 2.0 * dK
    return dK


def vandermonde_vjp(v, z, L: int, *, dK) -> Dict[str, np.ndarray]:
    r"""The VJP of ``K_{c,k} = sum_n v_{c,n} z_{c,n}^k`` (``k < L``): ``{"v": dv, "z": dz}``, ``(d n)`` each.

    ``dv = sum_k conj(z^k) dK_k``; ``dz`` by **the reverse scan** ``gP_k = conj(v) dK_k + conj(z) gP_{k+1}``,
    ``dz = sum_k gP_{k+1} conj(z^k)`` (the adjoint of ``P_{k+1} = z P_k``).  ``dK`` ``(d l)`` complex or real.
    """
    L = check_int(L, "L", minimum=0)
    originals = dict(v=v, z=z)
    v = as_float_array(v, "v", ndim=2)
    z = as_float_array(z, "z", ndim=2)
    check_shape(z, "z", v.shape, "(d n), the shape of v")
    cdt = np.result_type(v, z, np.complex64)
    v, z = v.astype(cdt, copy=False), z.astype(cdt, copy=False)
    dK = as_float_array(dK, "dK", ndim=2)
    check_shape(dK, "dK", (v.shape[0], L), "(d l)", src="the shape of K: d from v, l = L")
    dK = dK.astype(np.result_type(dK, cdt), copy=False)
    dv, dz = _vandermonde_adjoint(v, z, L, dK)
    return {k: _like(g, originals[k]) for k, g in (("v", dv), ("z", dz))}


def _vandermonde_adjoint(v, z, L, dKc):
    d, n = v.shape
    wdt = np.result_type(v, dKc)
    # the forward's powers P_k = z^k, k < L  (P_0 = 1, P_{k+1} = z P_k)
    P = np.ones((L, d, n), dtype=v.dtype)
    for k in range(1, L):
        P[k] = z * P[k - 1]
    # dv_n = sum_k conj(P_k) dKc_k
    dv = np.einsum("kdn,dk->dn", np.conj(P), dKc) if L else np.zeros((d, n), dtype=wdt)
    dz = np.zeros((d, n), dtype=wdt)
    gP = np.zeros((d, n), dtype=wdt)
    for k in range(L - 1, -1, -1):
        if k < L - 1:
            # dz += gP_{k+1} conj(P_k)   (P_{k+1} = z P_k)
            dz += gP * np.conj(P[k])
            # gP_k = conj(z) gP_{k+1} + ...
            gP = np.conj(z) * gP
        # gP_k += conj(v) dKc_k   (Kc_k = sum_n v_n P_k,n)
        gP = gP + np.conj(v) * dKc[:, k:k + 1]
    return dv, dz


def _like(g, original):
    """A real input's gradient is the real part (the complex convention); the working dtype stays (no downcast)."""
    if np.asarray(original).dtype.kind != "c":
        g = np.real(g)
    return np.ascontiguousarray(np.asarray(g)).reshape(np.shape(original))


def kernel_vjp(Lambda, B, C, dt, L: int, *, dK, method: str = "zoh", output: str) -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.s4d.reference.kernel`: ``{"Lambda", "B", "C", "dt"}`` gradients.

    ``dK`` ``(d l)``: the cotangent of ``K`` (real unless ``output="complex"``).  The Vandermonde product's
    reverse scan, then ``dC = conj(B_bar) dv``, ``dB_bar = conj(C) dv`` and the diagonal discretization's VJP
    (the module docstring).
    """
    L = check_int(L, "L", minimum=0)
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    originals = dict(Lambda=Lambda, B=B, C=C, dt=dt)
    Lam, Bw, Cw, dtw = _validate(Lambda, B, C, dt)
    d, n = Lam.shape
    dKc = complex_cotangent(dK, d, L, output, Lam.dtype)
    A_bar, B_bar = discretize_diag(Lam, Bw, dtw, method)
    # v = C B_bar:  Kc = vandermonde(v, A_bar)
    v = Cw * B_bar
    dv, dA_bar = _vandermonde_adjoint(v, A_bar, L, dKc)
    # dC = conj(B_bar) dv;  dB_bar = conj(C) dv
    dC = np.conj(B_bar) * dv
    dB_bar = np.conj(Cw) * dv
    # the diagonal discretization's adjoint (one step per channel: dt (d,))
    disc = dbwd.zoh_vjp if method == "zoh" else dbwd.bilinear_vjp
    g = disc(Lam, Bw[..., None], dtw, dA_bar=dA_bar, dB_bar=dB_bar[..., None], diagonal=True)
    ddt = g["dt"]
    if np.ndim(dt) == 0:
        # a scalar dt is shared by every channel
        ddt = np.sum(ddt)
    grads = {"Lambda": g["A"], "B": g["B"][..., 0], "C": dC, "dt": ddt}
    return {k: _like(grads[k], originals[k]) for k in grads}
