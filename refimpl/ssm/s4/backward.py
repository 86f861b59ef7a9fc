r"""The backward pass of the S4 DPLR kernel's ``dense`` view, written as the adjoint recurrence.

Forward (:func:`refimpl.ssm.s4.reference.kernel_dense`): ``A = diag(Lambda) - P Q^*`` per channel, the bilinear
discretization ``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``, ``B_bar = (I - dt/2 A)^{-1} dt B``, and the powers
``s_k = A_bar^k B_bar`` (``s_0 = B_bar``, ``s_{k+1} = A_bar s_k``), ``Kc_k = C s_k`` (``C`` a row: no conjugate),
``K = Kc``, ``Re Kc`` or ``2 Re Kc`` (``output``).  Shapes: ``Lambda, B, C (d n)``, ``P, Q (d n r)`` complex,
``dt`` a scalar or ``(d,)``, ``K``/``dK (d l)``.

Complex convention (PyTorch's): the gradient of ``z = a + i b`` is ``dL/da + i dL/db``; the cotangent of the
complex kernel is ``dKc = dK`` (``complex``), ``Re dK`` (``re``) or ``2 Re dK`` (``2re``).

**The adjoint of the power recurrence is itself a reverse scan** (``G_k = dL/ds_k``, ``k = L-1 .. 0``)::

    G_{L-1} = conj(C) dKc_{L-1},        G_k = A_bar^H G_{k+1} + conj(C) dKc_k
    dC = sum_k dKc_k conj(s_k)          dA_bar = sum_{k >= 1} G_k s_{k-1}^H        dB_bar = G_0

then the dense bilinear discretization's adjoint (:func:`refimpl.ssm.discretization.discretize_vjp`: the solves
with ``(I - dt/2 A)^H``) gives ``dA``, ``dB``, ``ddt``, and ``A = diag(Lambda) - P Q^*`` gives::

    dLambda = diag(dA)                   dP = -dA Q                   dQ = -dA^H P

This is the VJP of the ``dense`` view (the same map as the generating-function view, whose own adjoint through
the Cauchy kernel and the Woodbury correction is not written here).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape
from refimpl.ssm.discretization import discretize_vjp
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.s4.reference import OUTPUTS, _dplr_dense, _validate_dplr

__all__ = ["dense_vjp"]


def _like(g, original):
    """A real input's gradient is the real part (the complex convention); the input's shape."""
    if np.asarray(original).dtype.kind != "c":
        g = np.real(g)
    return np.ascontiguousarray(np.asarray(g)).reshape(np.shape(original))


def dense_vjp(Lambda, P, Q, B, C, dt, L: int, *, dK, output: str = "complex",
              method: str = "bilinear") -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.s4.reference.kernel_dense`: ``{"Lambda", "P", "Q", "B", "C", "dt"}`` gradients
    (complex128; a real ``dt`` gets a real one) from ``dK (d l)`` (real unless ``output="complex"``) by **the
    reverse scan** of the module docstring and the bilinear discretization's VJP.  ``method``: ``"bilinear"``."""
    L = check_int(L, "L", minimum=0)
    check_choice(output, "output", OUTPUTS)
    check_choice(method, "method", ("bilinear",))
    originals = dict(Lambda=Lambda, P=P, Q=Q, B=B, C=C, dt=dt)
    Lam, Pc, Qc, Bc, Cc, dtw = _validate_dplr(Lambda, P, Q, B, C, dt)
    d, n = Lam.shape
    dK = as_float_array(dK, "dK", ndim=2, allow_complex=(output == "complex"))
    check_shape(dK, "dK", (d, L), "(d l)", src="the shape of K: d from Lambda, l = L")
    # dKc: the cotangent of the complex kernel Kc (K = Kc, Re Kc, 2 Re Kc)
    dKc = dK.astype(np.complex128) * (2.0 if output == "2re" else 1.0)
    A = _dplr_dense(Lam, Pc, Qc)
    # A_bar = (I - dt/2 A)^{-1}(I + dt/2 A),  B_bar = (I - dt/2 A)^{-1} dt B
    A_bar, B_bar = discretize.bilinear(A, Bc[..., None], dtw)
    # forward: S[k] = s_k = A_bar^k B_bar
    S = np.zeros((L, d, n), dtype=np.complex128)
    s = B_bar[..., 0]
    for k in range(L):
        S[k] = s
        # s_{k+1} = A_bar s_k
        s = np.einsum("dnm,dm->dn", A_bar, s)
    AH = np.conj(np.swapaxes(A_bar, -1, -2))
    G = np.zeros((d, n), dtype=np.complex128)
    dA_bar = np.zeros((d, n, n), dtype=np.complex128)
    for k in range(L - 1, -1, -1):
        # G_k = A_bar^H G_{k+1} + conj(C) dKc_k
        G = (np.einsum("dnm,dm->dn", AH, G) if k < L - 1 else G) + np.conj(Cc) * dKc[:, k, None]
        if k >= 1:
            # dA_bar += G_k s_{k-1}^H
            dA_bar += np.einsum("dn,dm->dnm", G, np.conj(S[k - 1]))
    # dB_bar = G_0 (zero when L = 0);  dC = sum_k dKc_k conj(s_k)
    dB_bar = G if L else np.zeros((d, n), dtype=np.complex128)
    dC = np.einsum("dk,kdn->dn", dKc, np.conj(S))
    g = discretize_vjp(A, Bc[..., None], dtw, dA_bar=dA_bar, dB_bar=dB_bar[..., None], method="bilinear")
    dA = g["A"]
    # A = diag(Lambda) - P Q^*:  dLambda = diag(dA),  dP = -dA Q,  dQ = -dA^H P
    dLam = np.diagonal(dA, axis1=-2, axis2=-1).copy()
    dP = -np.einsum("dnm,dmr->dnr", dA, Qc)
    dQ = -np.einsum("dmn,dmr->dnr", np.conj(dA), Pc)
    ddt = np.real(g["dt"])
    if np.ndim(dt) == 0:
        # a scalar dt is shared by every channel
        ddt = np.sum(ddt)
    grads = {"Lambda": dLam, "P": dP, "Q": dQ, "B": g["B"][..., 0], "C": dC, "dt": ddt}
    return {key: _like(grads[key], originals[key]) for key in grads}
