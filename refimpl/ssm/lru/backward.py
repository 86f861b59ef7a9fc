r"""The backward pass of the LRU (Orvieto et al. 2023), written as the adjoint recurrence.

Forward (:mod:`refimpl.ssm.lru.reference`): ``lambda = exp(w)``, ``w = -exp(nu_log) + i exp(theta_log)``,
``gamma = exp(gamma_log)``, ``x_t = lambda x_{t-1} + gamma (B u_t)``, ``y_t = Re(C x_t) + D u_t``
(``x_{-1}`` = ``initial_state`` or 0).  Shapes: ``nu_log, theta_log, gamma_log (n)`` real, ``B (n d)``,
``C (d n)`` complex, ``D (d)``, ``u (b l d)`` real, ``y (b l d)`` real, the state ``(b n)`` complex.

Complex convention (PyTorch's): for a real loss the gradient of ``z = a + i b`` is ``dL/da + i dL/db``; the
cotangent of the complex final state is given the same way.  ``y`` is real: ``L = sum dy Re(C x) = Re sum conj(dy)
C x``, so ``C^H dy`` enters the state's cotangent.

**The adjoint of the scan is itself a reverse scan** (``g_t = dL/dx_t``, ``t = l-1 .. 0``)::

    g_{l-1} = d_final_state + C^H dy_{l-1},       g_t = conj(lambda) g_{t+1} + C^H dy_t
    dlambda = sum_{b,t} g_t conj(x_{t-1})          d initial_state = conj(lambda) g_0
    dB = gamma sum_{b,t} g_t u_t^T                 dgamma = Re sum_{b,t} conj(B u_t) g_t,  dgamma_log = gamma dgamma
    dC = sum_{b,t} dy_t x_t^H                      dD = sum_{b,t} dy_t u_t
    du_t = Re(B^H (gamma g_t)) + D dy_t
    dw = conj(lambda) dlambda;   dnu_log = -exp(nu_log) Re(dw);   dtheta_log = exp(theta_log) Im(dw)

(``w``'s real part moves with ``nu_log`` by ``-exp(nu_log)``, its imaginary part with ``theta_log`` by
``exp(theta_log)``: the real inputs get ``Re(conj(dw/dp) dw)``.)
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_shape
from refimpl.ssm.lru.reference import _lru_args

__all__ = ["recurrent_vjp"]


def recurrent_vjp(nu_log, theta_log, gamma_log, B, C, D, u, *, dy, d_final_state=None,
                  initial_state=None) -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.lru.reference.recurrent`: the forward loop storing ``x_t``, then **the
    reverse scan** of the module docstring.  Returns ``{nu_log, theta_log, gamma_log, B, C, D, u}`` gradients (and
    ``initial_state`` when given), each with its input's shape; real inputs get real gradients."""
    lam, gamma, Bc, Cc, Dr, u, x0 = _lru_args(nu_log, theta_log, gamma_log, B, C, D, u, initial_state, False)
    b, l, d = u.shape
    n = lam.shape[0]
    rdt = np.finfo(lam.dtype).dtype
    # y is always real: so is its cotangent
    dy = as_float_array(dy, "dy", ndim=3, allow_complex=False)
    check_shape(dy, "dy", (b, l, d), "(b l d)", src="the shape of y: b, l, d from u")
    dy = dy.astype(np.result_type(dy, rdt), copy=False)
    cdt = np.result_type(lam.dtype, dy.dtype)
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=2)
        check_shape(d_final_state, "d_final_state", (b, n), "(b n)", src="b from u, n from nu_log")
        cdt = np.result_type(cdt, d_final_state)
    # forward: xs[t + 1] = x_t, xs[0] = x_{-1}
    Bu = gamma * np.einsum("nd,bld->bln", Bc, u.astype(Bc.dtype))
    xs = np.zeros((l + 1, b, n), dtype=lam.dtype)
    if x0 is not None:
        xs[0] = x0
    for t in range(l):
        # x_t = lambda x_{t-1} + gamma (B u_t)
        xs[t + 1] = lam * xs[t] + Bu[:, t]
    g = np.zeros((b, n), dtype=cdt) if d_final_state is None else d_final_state.astype(cdt, copy=True)
    dlam = np.zeros(n, dtype=cdt)
    gs = np.zeros((b, l, n), dtype=cdt)
    CH = np.conj(Cc).T  # (n d)
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            # g_t = conj(lambda) g_{t+1} + C^H dy_t
            g = np.conj(lam) * g
        g = g + np.einsum("nd,bd->bn", CH, dy[:, t])
        gs[:, t] = g
        # dlambda += sum_b g_t conj(x_{t-1})
        dlam += np.sum(g * np.conj(xs[t]), axis=0)
    # dB = gamma sum g_t u_t^T;  dgamma = Re sum conj(B u_t) g_t
    dB = gamma[:, None] * np.einsum("bln,bld->nd", gs, u)
    BuT = np.einsum("nd,bld->bln", Bc, u.astype(Bc.dtype))
    dgamma = np.real(np.sum(np.conj(BuT) * gs, axis=(0, 1)))
    # dC = sum dy_t x_t^H;  dD = sum dy_t u_t
    dC = np.einsum("bld,lbn->dn", dy, np.conj(xs[1:]))
    dD = np.einsum("bld,bld->d", dy, u)
    # du_t = Re(B^H (gamma g_t)) + D dy_t
    du = np.real(np.einsum("nd,bln->bld", np.conj(Bc), gamma * gs)) + Dr * dy
    # dw = conj(lambda) dlambda;  dnu_log = -exp(nu_log) Re dw;  dtheta_log = exp(theta_log) Im dw
    dw = np.conj(lam) * dlam
    nu_log = np.asarray(nu_log)
    theta_log = np.asarray(theta_log)
    out = {"nu_log": -np.exp(nu_log) * np.real(dw), "theta_log": np.exp(theta_log) * np.imag(dw),
           "gamma_log": np.real(gamma) * dgamma, "B": dB, "C": dC, "D": dD, "u": du}
    if initial_state is not None:
        # d initial_state = conj(lambda) g_0  (d_final_state itself when l = 0)
        out["initial_state"] = np.conj(lam) * g if l else g
    originals = dict(nu_log=nu_log, theta_log=theta_log, gamma_log=gamma_log, B=B, C=C, D=D, u=u,
                     initial_state=initial_state)
    return {k: np.ascontiguousarray(v if np.asarray(originals[k]).dtype.kind == "c" else np.real(v))
            for k, v in out.items()}
