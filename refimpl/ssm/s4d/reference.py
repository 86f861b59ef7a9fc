r"""S4D and DSS: diagonal SSM kernels by a Vandermonde product (Gu et al. 2022b; Gupta et al. 2022).

System per channel: ``x' = diag(Lambda) x + B u``, ``y = C x`` (``Lambda``, ``B``, ``C`` complex, ``(d n)``:
``d`` channels, ``n`` states each; the kernel ``K (d l)`` is a per-channel filter).

Discretizations (per channel step ``dt``; reuses :mod:`refimpl.ssm.discretization.reference` with ``diagonal=True``)
* ``zoh``: ``A_bar = exp(dt Lambda)``, ``B_bar = dt * expm1(dt Lambda)/(dt Lambda) * B``
  (the ``expm1`` form: no cancellation as ``dt Lambda -> 0``, exact ``dt B`` at 0).
* ``bilinear``: ``A_bar = (1 + dt/2 Lambda)/(1 - dt/2 Lambda)``, ``B_bar = dt B/(1 - dt/2 Lambda)``.

Kernel: ``K_k = sum_n C_n B_bar_n A_bar_n^k`` for ``k < L`` -- the Vandermonde product
``K = (C * B_bar) @ V`` with ``V[n, k] = A_bar_n^k``, powers by repeated multiplication
``A_bar^{k+1} = A_bar * A_bar^k`` (the NumPy reference; :mod:`refimpl.ssm.s4d.numba` has the kernel).

Real output (a named parameter, never implicit): ``output="2re"`` -- ``K = 2 Re(...)``, for one
eigenvalue per conjugate pair (S4D's ``N/2`` storage); ``"re"`` -- ``Re(...)`` for a full
spectrum; ``"complex"`` -- no real part.

Initializations (``N`` = the real state size; the complex ones return ``N/2`` eigenvalues,
one of each conjugate pair, to be used with ``output="2re"``):

* ``lin``  (S4D-Lin):  ``lambda_n = -1/2 + i pi n``, ``n < N/2``
* ``inv``  (S4D-Inv):  ``lambda_n = -1/2 + i (N/pi) (N/(2n+1) - 1)``, ``n < N/2``
* ``real`` (S4D-Real): ``lambda_n = -(n+1)``, ``n < N`` (real, use ``output="re"``)
* ``legs`` (S4D-LegS): the eigenvalues ``-1/2 + i w`` of the normal part of HiPPO-LegS
  (:func:`refimpl.ssm.s4.reference.nplr`), those with ``w > 0``, and ``B = V^* B_legs`` on them.
* ``B = 1`` for lin/inv/real.

DSS (Gupta et al. 2022), ``w`` complex weights, ``Lambda`` complex:
* ``dss_exp``:     ``K_k = Re sum_n w_n (e^{dt lambda_n} - 1)/lambda_n * e^{k dt lambda_n}``
  (the ZOH S4D kernel with ``B = 1``, ``C = w``);
* ``dss_softmax``: ``K_k = Re sum_n w_n / lambda_n * softmax_k(k dt lambda_n)``,
  ``softmax_k(p_k) = e^{p_k} / sum_{r<L} e^{p_r}``, computed with max-subtraction of the real
  parts (stable for either sign of ``Re lambda``).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, check_shape, result_dtype
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.s4.reference import OUTPUTS, _real_output

__all__ = ["INITS", "METHODS", "VARIANTS", "init", "discretize_diag", "vandermonde", "kernel", "dss_kernel", "OUTPUTS"]

INITS = ("lin", "inv", "real", "legs")
METHODS = ("zoh", "bilinear")
VARIANTS = ("exp", "softmax")


def init(name: str, N: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(Lambda, B)`` of the named S4D initialization (see module docstring); complex128."""
    check_choice(name, "name", INITS)
    N = check_int(N, "N", minimum=1)
    if name == "real":
        n = np.arange(N, dtype=np.float64)
        # lambda_n = -(n + 1)
        return (-(n + 1.0)).astype(np.complex128), np.ones(N, dtype=np.complex128)
    if N % 2:
        raise ValueError(f"N: the complex inits store one eigenvalue per conjugate pair and need an even N, got {N}")
    n = np.arange(N // 2, dtype=np.float64)
    if name == "lin":
        # lambda_n = -1/2 + i pi n
        return -0.5 + 1j * np.pi * n, np.ones(N // 2, dtype=np.complex128)
    if name == "inv":
        # lambda_n = -1/2 + i (N/pi)(N/(2n+1) - 1)
        return -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), np.ones(N // 2, dtype=np.complex128)
    from refimpl.ssm.s4 import reference as s4

    d = s4.nplr("legs", N)
    keep = d.Lambda.imag > 0
    return d.Lambda[keep].copy(), d.Bt[keep].copy()


def _channel_steps(dt, d: int) -> np.ndarray:
    """``dt``: a positive scalar or one step per channel of shape ``(d,)`` exactly (never ``(1, d)``, ``(d, 1)``:
    the discretization would read an extra leading axis as one step per time step)."""
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False)
    check_positive(dt, "dt")
    if dt.ndim == 1:
        check_shape(dt, "dt", (d,), "(one step per channel) or a scalar")
    return np.broadcast_to(dt, (d,))


def _diag_system(Lambda, B, dt, names=("Lambda", "B")):
    """Validate ``Lambda (d n)``, ``B (d n)`` (named ``names``) and ``dt``; the working dtypes are not applied here."""
    Lambda = as_float_array(Lambda, names[0], ndim=2)
    B = as_float_array(B, names[1], ndim=2)
    check_shape(B, names[1], Lambda.shape, f"(d n), the shape of {names[0]}")
    return Lambda, B, _channel_steps(dt, Lambda.shape[0])


def _validate(Lambda, B, C, dt, names=("Lambda", "B", "C")):
    Lambda, B, dt = _diag_system(Lambda, B, dt, names[:2])
    C = as_float_array(C, names[2], ndim=2)
    check_shape(C, names[2], Lambda.shape, f"(d n), the shape of {names[0]}")
    # complex64 only when every input is float32/complex64 (no silent downcast)
    cdt = np.result_type(result_dtype(Lambda, B, C, dt), np.complex64)
    return Lambda.astype(cdt), B.astype(cdt), C.astype(cdt), dt.astype(np.finfo(cdt).dtype)


def discretize_diag(Lambda, B, dt, method: str = "zoh") -> Tuple[np.ndarray, np.ndarray]:
    """``(A_bar, B_bar)``, ``(d n)`` each, of the diagonal systems ``Lambda, B (d n)`` with ``dt`` a scalar or ``(d,)``.

    ``zoh``: ``A_bar = exp(dt Lambda)``, ``B_bar = dt phi1(dt Lambda) B``; ``bilinear``: ``A_bar = (1 + dt/2 Lambda)/
    (1 - dt/2 Lambda)``, ``B_bar = dt B/(1 - dt/2 Lambda)`` (:mod:`refimpl.ssm.discretization`, ``diagonal=True``).
    """
    check_choice(method, "method", METHODS)
    Lambda, B, dt = _diag_system(Lambda, B, dt)
    fn = discretize.zoh if method == "zoh" else discretize.bilinear
    A_bar, B_bar = fn(Lambda, B[..., None], dt, diagonal=True)
    return A_bar, B_bar[..., 0]


def _vandermonde_args(v, z, L):
    """Validate the Vandermonde product's arguments (shared by every backend): ``v, z (d n)`` exact shapes,
    floating and finite, ``L >= 0``; returns them in the working complex dtype."""
    L = check_int(L, "L", minimum=0)
    v = as_float_array(v, "v", ndim=2)
    z = as_float_array(z, "z", ndim=2)
    check_shape(z, "z", v.shape, "(d n), the shape of v")
    cdt = np.result_type(result_dtype(v, z), np.complex64)
    return v.astype(cdt, copy=False), z.astype(cdt, copy=False), L


def vandermonde(v, z, L: int) -> np.ndarray:
    r"""``K_{c,k} = sum_n v_{c,n} z_{c,n}^k``, ``k < L``: ``v, z (d n)`` -> ``(d l)``; powers by repeated multiplication."""
    v, z, L = _vandermonde_args(v, z, L)
    K = np.zeros((v.shape[0], L), dtype=v.dtype)
    zk = np.ones_like(z)  # z^k
    for k in range(L):
        # K_k = sum_n v_n z_n^k
        K[:, k] = np.sum(v * zk, axis=-1)
        # z^{k+1} = z z^k
        zk = zk * z
    return K


def _kernel(Lambda, B, C, dt, L, method, output, vandermonde_fn) -> np.ndarray:
    L = check_int(L, "L", minimum=0)
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    Lambda, B, C, dt = _validate(Lambda, B, C, dt)
    A_bar, B_bar = discretize_diag(Lambda, B, dt, method)
    # K = (C * B_bar) @ V,  V[n, k] = A_bar_n^k
    return _real_output(vandermonde_fn(C * B_bar, A_bar, L), output)


def kernel(Lambda, B, C, dt, L: int, *, method: str = "zoh", output: str) -> np.ndarray:
    r"""S4D kernel ``K_k = sum_n C_n B_bar_n A_bar_n^k`` (the ``vandermonde`` view): ``K (d l)``.

    Shapes: ``Lambda, B, C (d n)``, ``dt`` a scalar or ``(d,)``.  ``output`` in complex/re/2re (required).
    """
    return _kernel(Lambda, B, C, dt, L, method, output, vandermonde)


def dss_kernel(Lambda, W, dt, L: int, *, variant: str = "softmax") -> np.ndarray:
    r"""DSS kernel (real, ``(d l)``): ``Lambda, W (d n)``, ``dt`` a scalar or ``(d,)``; ``variant`` ``exp`` or ``softmax``."""
    L = check_int(L, "L", minimum=0)
    check_choice(variant, "variant", VARIANTS)
    Lambda, W, _, dt = _validate(Lambda, W, W, dt, names=("Lambda", "W", "W"))
    if np.any(Lambda == 0):
        raise ValueError("Lambda: DSS divides by lambda_n; got a zero eigenvalue")
    k = np.arange(L)
    # P[c, n, k] = k dt lambda_n
    Pm = (dt[:, None] * Lambda)[..., None] * k
    if variant == "exp":
        # K_k = Re sum_n w_n (e^{dt lambda} - 1)/lambda e^{k dt lambda}
        coef = W * np.expm1(dt[:, None] * Lambda) / Lambda
        return np.einsum("dn,dnk->dk", coef, np.exp(Pm)).real
    if L == 0:
        return np.zeros((Lambda.shape[0], 0), dtype=np.finfo(Lambda.dtype).dtype)
    # softmax over k with max-subtraction of the real parts: e^{p_k - max Re p} / sum_r e^{p_r - max Re p}
    Pm = Pm - np.max(Pm.real, axis=-1, keepdims=True)
    E = np.exp(Pm)
    S = E / np.sum(E, axis=-1, keepdims=True)
    # K_k = Re sum_n (w_n / lambda_n) softmax_k(k dt lambda_n)
    return np.einsum("dn,dnk->dk", W / Lambda, S).real
