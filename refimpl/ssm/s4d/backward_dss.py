r"""The backward pass of the DSS kernel (Gupta et al. 2022), in closed form.

Forward (:func:`refimpl.ssm.s4d.reference.dss_kernel`): ``p_n = dt lambda_n`` per channel, and

* ``exp``:     ``K_k = Re sum_n w_n phi_n e^{k p_n}``,  ``phi_n = (e^{p_n} - 1)/lambda_n = dt phi1(p_n)``;
* ``softmax``: ``K_k = Re sum_n (w_n/lambda_n) S_{n,k}``,  ``S_{n,k} = e^{k p_n} / sum_{r<L} e^{r p_n}``.

Shapes: ``Lambda, W (d n)`` complex, ``dt`` a scalar or ``(d,)`` real, ``K``/``dK (d l)`` real.  The kernel is a
closed form (no scan): its adjoint is a pair of ``dK``-weighted sums over ``k`` per state, then the chain rule.

Complex convention (PyTorch's): the gradient of ``z = a + i b`` is ``dL/da + i dL/db``; for a holomorphic map
``K_k = Re f_k(a)`` that is ``sum_k conj(df_k/da) dK_k``; a real ``dt`` gets ``sum_k dK_k Re(df_k/d dt)``.

``exp`` (``V_n = sum_k dK_k conj(e^{k p_n})``, ``V'_n = sum_k k dK_k conj(e^{k p_n})``)::

    dw_n      = conj(phi_n) V_n
    dlambda_n = conj(w_n) (conj(dt^2 phi1'(p_n)) V_n + conj(phi_n) dt V'_n)     (dphi/dlambda = dt^2 phi1'(p))
    ddt       = Re sum_n w_n (e^{p_n} conj(V_n) + phi_n lambda_n conj(V'_n))    (dphi/d dt = e^p)

``softmax`` (``U_n = sum_k dK_k conj(S_{n,k})``, ``U'_n = sum_k k dK_k conj(S_{n,k})``,
``m_n = sum_k k S_{n,k}``; ``dS_k/dp = S_k (k - m)``)::

    dw_n      = conj(1/lambda_n) U_n
    dlambda_n = conj(w_n) (-conj(1/lambda_n^2) U_n + conj(dt/lambda_n) (U'_n - conj(m_n) U_n))
    ddt       = Re sum_n w_n (conj(U'_n) - m_n conj(U_n))

A scalar ``dt`` (shared by the channels) gets the sum over the channels.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape
from refimpl.ssm.discretization.backward import dphi1
from refimpl.ssm.s4d.backward import _like
from refimpl.ssm.s4d.reference import VARIANTS, _validate

__all__ = ["closed_form_vjp"]


def closed_form_vjp(Lambda, W, dt, L: int, *, dK, variant: str = "softmax") -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.s4d.reference.dss_kernel`: ``{"Lambda", "W", "dt"}`` gradients (each with its
    input's shape, in the working dtype) from ``dK (d l)`` (real: ``K`` is real), by the closed forms of the module
    docstring."""
    L = check_int(L, "L", minimum=0)
    check_choice(variant, "variant", VARIANTS)
    originals = dict(Lambda=Lambda, W=W, dt=dt)
    Lam, Wc, _, dtw = _validate(Lambda, W, W, dt, names=("Lambda", "W", "W"))
    if np.any(Lam == 0):
        raise ValueError("Lambda: DSS divides by lambda_n; got a zero eigenvalue")
    d, n = Lam.shape
    dK = as_float_array(dK, "dK", ndim=2, allow_complex=False)
    check_shape(dK, "dK", (d, L), "(d l)", src="the shape of K: d from Lambda, l = L")
    cdt = np.result_type(Lam.dtype, dK.dtype)
    Lam, Wc = Lam.astype(cdt, copy=False), Wc.astype(cdt, copy=False)
    dtw = dtw.astype(np.finfo(cdt).dtype, copy=False)
    dK = dK.astype(np.finfo(cdt).dtype, copy=False)
    k = np.arange(L).astype(dtw.dtype)
    dtc = dtw[:, None]
    # p_n = dt lambda_n;  P[c, n, k] = k p_n
    p = dtc * Lam
    Pm = p[..., None] * k
    if variant == "exp" or L == 0:
        E = np.exp(Pm)
        # V_n = sum_k dK_k conj(e^{k p_n});  V'_n = sum_k k dK_k conj(e^{k p_n})
        V = np.einsum("dk,dnk->dn", dK, np.conj(E))
        Vk = np.einsum("dk,dnk->dn", dK * k, np.conj(E))
        if variant == "exp":
            # phi = (e^p - 1)/lambda = dt phi1(p);  dphi/dlambda = dt^2 phi1'(p);  dphi/d dt = e^p
            phi = np.expm1(p) / Lam
            dW = np.conj(phi) * V
            dLam = np.conj(Wc) * (np.conj(dtc ** 2 * dphi1(p)) * V + np.conj(phi) * dtc * Vk)
            ddt = np.real(np.sum(Wc * (np.exp(p) * np.conj(V) + phi * Lam * np.conj(Vk)), axis=-1))
        else:  # softmax with L = 0: an empty kernel, zero gradients
            dW, dLam, ddt = np.zeros_like(Wc), np.zeros_like(Lam), np.zeros(d, dtype=dtw.dtype)
    else:
        # S_{n,k} = e^{k p - max Re} / sum_r e^{r p - max Re}  (max-subtraction of the real parts)
        Ps = Pm - np.max(Pm.real, axis=-1, keepdims=True)
        E = np.exp(Ps)
        S = E / np.sum(E, axis=-1, keepdims=True)
        # m_n = sum_k k S_{n,k}
        m = np.einsum("dnk,k->dn", S, k)
        # U_n = sum_k dK_k conj(S_{n,k});  U'_n = sum_k k dK_k conj(S_{n,k})
        U = np.einsum("dk,dnk->dn", dK, np.conj(S))
        Uk = np.einsum("dk,dnk->dn", dK * k, np.conj(S))
        # dw = conj(1/lambda) U
        dW = np.conj(1.0 / Lam) * U
        # dlambda = conj(w) (-conj(1/lambda^2) U + conj(dt/lambda) (U' - conj(m) U))
        dLam = np.conj(Wc) * (-np.conj(1.0 / Lam ** 2) * U + np.conj(dtc / Lam) * (Uk - np.conj(m) * U))
        # ddt = Re sum_n w (conj(U') - m conj(U))
        ddt = np.real(np.sum(Wc * (np.conj(Uk) - m * np.conj(U)), axis=-1))
    if np.ndim(dt) == 0:
        # a scalar dt is shared by every channel
        ddt = np.sum(ddt)
    grads = {"Lambda": dLam, "W": dW, "dt": ddt}
    return {key: _like(grads[key], originals[key]) for key in grads}
