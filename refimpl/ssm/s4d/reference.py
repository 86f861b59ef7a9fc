r"""S4D and DSS: diagonal SSM kernels by a Vandermonde product (Gu et al. 2022b; Gupta et al. 2022).

System per channel: ``x' = diag(Lambda) x + B u``, ``y = C x`` (``Lambda``, ``B``, ``C`` complex, ``(h n)``).

Discretizations (per channel step ``dt``; reuses :mod:`refimpl.ssm.discretization.reference` with ``diagonal=True``)
* ``zoh``: ``A_bar = exp(dt Lambda)``, ``B_bar = dt * expm1(dt Lambda)/(dt Lambda) * B``
  (the ``expm1`` form: no cancellation as ``dt Lambda -> 0``, exact ``dt B`` at 0).
* ``bilinear``: ``A_bar = (1 + dt/2 Lambda)/(1 - dt/2 Lambda)``, ``B_bar = dt B/(1 - dt/2 Lambda)``.

Kernel: ``K_k = sum_n C_n B_bar_n A_bar_n^k`` for ``k < L`` -- the Vandermonde product
``K = (C * B_bar) @ V`` with ``V[n, k] = A_bar_n^k``, powers by repeated multiplication
``A_bar^{k+1} = A_bar * A_bar^k`` (the NumPy reference; :mod:`refimpl.ssm.structured_numba` has the kernel).

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

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, result_dtype
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.s4.reference import OUTPUTS, real_output

__all__ = ["INITS", "init", "discretize_diag", "vandermonde", "kernel", "dss_kernel", "OUTPUTS"]

INITS = ("lin", "inv", "real", "legs")
METHODS = ("zoh", "bilinear")


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


def _validate(Lambda, B, C, dt):
    Lambda = as_float_array(Lambda, "Lambda", ndim=2)
    h, n = Lambda.shape
    B = as_float_array(B, "B", ndim=2)
    C = as_float_array(C, "C", ndim=2)
    for name, arr in (("B", B), ("C", C)):
        if arr.shape != (h, n):
            raise ValueError(f"{name}: expected shape ({h}, {n}) to match Lambda, got {arr.shape}")
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False)
    check_positive(dt, "dt")
    if dt.ndim == 1 and dt.shape != (h,):
        raise ValueError(f"dt: expected a scalar or shape ({h},), got {dt.shape}")
    dt = np.broadcast_to(dt, (h,)).copy()
    # complex64 only when every input is float32/complex64 (no silent downcast)
    cdt = np.result_type(result_dtype(Lambda, B, C, dt), np.complex64)
    return Lambda.astype(cdt), B.astype(cdt), C.astype(cdt), dt.astype(np.finfo(cdt).dtype)


def discretize_diag(Lambda, B, dt, method: str = "zoh"):
    """``(A_bar, B_bar)`` of the diagonal system, ``(h n)`` each (``refimpl.ssm.discretization.reference``)."""
    check_choice(method, "method", METHODS)
    fn = discretize.zoh if method == "zoh" else discretize.bilinear
    A_bar, B_bar = fn(Lambda, B[..., None], dt, diagonal=True)
    return A_bar, B_bar[..., 0]


def vandermonde(v, z, L: int) -> np.ndarray:
    r"""``K_k = sum_n v_n z_n^k``, ``k < L``: ``v, z (h n)`` -> ``(h l)``; powers by repeated multiplication."""
    L = check_int(L, "L", minimum=0)
    v = np.asarray(v)
    z = np.asarray(z)
    h, n = z.shape
    K = np.zeros((h, L), dtype=np.result_type(v, z))
    zk = np.ones_like(z)  # z^k
    for k in range(L):
        # K_k = sum_n v_n z_n^k
        K[:, k] = np.sum(v * zk, axis=-1)
        # z^{k+1} = z z^k
        zk = zk * z
    return K


def kernel(Lambda, B, C, dt, L: int, *, method: str = "zoh", output: str, backend: str = "numpy") -> np.ndarray:
    r"""S4D kernel ``K_k = sum_n C_n B_bar_n A_bar_n^k`` (``(h l)``); ``output`` in complex/re/2re (required).

    ``backend``: ``numpy`` (:func:`vandermonde`) or ``numba`` (:func:`refimpl.ssm.structured_numba.vandermonde`).
    """
    L = check_int(L, "L", minimum=0)
    check_choice(method, "method", METHODS)
    check_choice(output, "output", OUTPUTS)
    check_choice(backend, "backend", ("numpy", "numba"))
    Lambda, B, C, dt = _validate(Lambda, B, C, dt)
    A_bar, B_bar = discretize_diag(Lambda, B, dt, method)
    # K = (C * B_bar) @ V,  V[n, k] = A_bar_n^k
    if backend == "numba":
        from refimpl.ssm import structured_numba

        K = structured_numba.vandermonde(C * B_bar, A_bar, L)
    else:
        K = vandermonde(C * B_bar, A_bar, L)
    return real_output(K, output)


def dss_kernel(Lambda, W, dt, L: int, *, variant: str = "softmax") -> np.ndarray:
    r"""DSS kernel (real, ``(h l)``): ``variant`` ``exp`` or ``softmax`` (see module docstring)."""
    L = check_int(L, "L", minimum=0)
    check_choice(variant, "variant", ("exp", "softmax"))
    Lambda, W, _, dt = _validate(Lambda, W, W, dt)
    if np.any(Lambda == 0):
        raise ValueError("Lambda: DSS divides by lambda_n; got a zero eigenvalue")
    k = np.arange(L)
    # P[h, n, k] = k dt lambda_n
    Pm = (dt[:, None] * Lambda)[..., None] * k
    if variant == "exp":
        # K_k = Re sum_n w_n (e^{dt lambda} - 1)/lambda e^{k dt lambda}
        coef = W * np.expm1(dt[:, None] * Lambda) / Lambda
        return np.einsum("hn,hnk->hk", coef, np.exp(Pm)).real
    if L == 0:
        return np.zeros((Lambda.shape[0], 0))
    # softmax over k with max-subtraction of the real parts: e^{p_k - max Re p} / sum_r e^{p_r - max Re p}
    Pm = Pm - np.max(Pm.real, axis=-1, keepdims=True)
    E = np.exp(Pm)
    S = E / np.sum(E, axis=-1, keepdims=True)
    # K_k = Re sum_n (w_n / lambda_n) softmax_k(k dt lambda_n)
    return np.einsum("hn,hnk->hk", W / Lambda, S).real
