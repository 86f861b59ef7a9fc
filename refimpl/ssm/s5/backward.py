r"""The backward pass of S5 (Smith, Warrington, Linderman 2023), written as the adjoint recurrence.

Forward (:mod:`refimpl.ssm.s5.reference`): ``(Lambda_bar, B_bar) = discretize(Lambda, B_tilde, dt)`` per state,
``x_t = Lambda_bar * x_{t-1} + B_bar u_t`` (``x_{-1}`` = ``initial_state`` or 0), ``y_t = f Re(C~ x_t) + D u_t``
with ``f = 1`` (``output="re"``) or ``f = 2`` (``"2re"``); bidirectional: ``x^b_t = Lambda_bar x^b_{t+1} + B_bar u_t``
(``x^b_l = 0``) adds ``f Re(C_back x^b_t)``.  Shapes: ``Lambda (n)`` complex, ``B_tilde (n d)``, ``C_tilde (d n)``,
``D (d)``, ``dt`` a scalar or ``(n,)``, ``u (b l d)`` real, ``y (b l d)`` real, the state ``(b n)`` complex.

Complex convention (PyTorch's, Mamba's for its complex ``A``): for a real loss the gradient of ``z = a + i b`` is
``dL/da + i dL/db``; the cotangent of the complex final state is given the same way.  ``y`` is real:
``L = sum dy f Re(C~ x) = Re sum conj(f dy) C~ x``, so ``f C~^H dy`` enters the state's cotangent.

**The adjoint of the scan is itself a reverse scan** (``g_t = dL/dx_t``, ``t = l-1 .. 0``)::

    g_{l-1} = d_final_state + f C~^H dy_{l-1},      g_t = conj(Lambda_bar) g_{t+1} + f C~^H dy_t
    dLambda_bar = sum_{b,t} g_t conj(x_{t-1})       d initial_state = conj(Lambda_bar) g_0
    dB_bar = sum_{b,t} g_t u_t^T                    du_t = Re(B_bar^H g_t) + D dy_t
    dC~ = f sum_{b,t} dy_t x_t^H                    dD = sum_{b,t} dy_t u_t

and the backward direction's adjoint is a *forward* scan (``g^b_t = dL/dx^b_t``, ``t = 0 .. l-1``)::

    g^b_t = conj(Lambda_bar) g^b_{t-1} + f C_back^H dy_t,   dLambda_bar += sum g^b_t conj(x^b_{t+1})
    dB_bar += sum g^b_t u_t^T,   du_t += Re(B_bar^H g^b_t),   dC_back = f sum dy_t (x^b_t)^H

Then ``(dLambda_bar, dB_bar)`` go through the discretization's adjoint
(:func:`refimpl.ssm.discretization.discretize_vjp`, diagonal, one state per system: ZOH through
``phi1'``, bilinear through the ``(1 - dt/2 Lambda)^{-H}`` solves) to ``dLambda, dB_tilde, ddt``; a scalar
``dt`` gets the sum over the states.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_shape
from refimpl.ssm.discretization import discretize_vjp
from refimpl.ssm.s5.reference import _s5_args

__all__ = ["recurrent_vjp"]


def recurrent_vjp(Lambda, B_tilde, C_tilde, D, dt, u, *, dy, d_final_state=None, method: str = "zoh",
                  output: str, C_back=None, initial_state=None) -> Dict[str, np.ndarray]:
    r"""The VJP of :func:`refimpl.ssm.s5.reference.recurrent`: the forward loop storing ``x_t``, then **the reverse
    scan** of the module docstring (and the forward scan of the backward direction), then the discretization's VJP.

    ``dy (b l d)`` real (required), ``d_final_state (b n)`` complex (the cotangent of ``x_{l-1}``; refused with
    ``C_back``, as ``return_final_state`` is).  Returns ``{Lambda, B_tilde, C_tilde, D, dt, u}`` gradients (``D``,
    ``C_back``, ``initial_state`` when given), each with its input's shape and working dtype; real inputs get
    real gradients.
    """
    Lambda_bar, B_bar, Cc, Dr, u, Cb, x0 = _s5_args(Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back,
                                                   initial_state, d_final_state is not None)
    b, l, d = u.shape
    n = Lambda_bar.shape[0]
    f = 2.0 if output == "2re" else 1.0
    rdt = np.finfo(Lambda_bar.dtype).dtype
    # y is always real: so is its cotangent
    dy = as_float_array(dy, "dy", ndim=3, allow_complex=False)
    check_shape(dy, "dy", (b, l, d), "(b l d)", src="the shape of y: b, l, d from u")
    cdt = np.result_type(Lambda_bar.dtype, dy.dtype)
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=2)
        check_shape(d_final_state, "d_final_state", (b, n), "(b n)", src="b from u, n from Lambda")
        cdt = np.result_type(cdt, d_final_state)
    rdt = np.finfo(cdt).dtype
    dy = dy.astype(rdt, copy=False)
    uc = u.astype(cdt, copy=False)
    # forward: xs[t + 1] = x_t, xs[0] = x_{-1}
    Bu = np.einsum("nd,bld->bln", B_bar, uc)
    xs = np.zeros((l + 1, b, n), dtype=cdt)
    if x0 is not None:
        xs[0] = x0
    for t in range(l):
        # x_t = Lambda_bar x_{t-1} + B_bar u_t
        xs[t + 1] = Lambda_bar * xs[t] + Bu[:, t]
    CH = np.conj(Cc).T  # (n d)
    g = np.zeros((b, n), dtype=cdt) if d_final_state is None else d_final_state.astype(cdt, copy=True)
    gs = np.zeros((b, l, n), dtype=cdt)
    dLambda_bar = np.zeros(n, dtype=cdt)
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            # g_t = conj(Lambda_bar) g_{t+1} + f C~^H dy_t
            g = np.conj(Lambda_bar) * g
        g = g + f * np.einsum("nd,bd->bn", CH, dy[:, t])
        gs[:, t] = g
        # dLambda_bar += sum_b g_t conj(x_{t-1})
        dLambda_bar += np.sum(g * np.conj(xs[t]), axis=0)
    out = {}
    if Cb is not None:
        # backward direction: xb[t] = x^b_t, xb[l] = 0
        xb = np.zeros((l + 1, b, n), dtype=cdt)
        for t in range(l - 1, -1, -1):
            # x^b_t = Lambda_bar x^b_{t+1} + B_bar u_t
            xb[t] = Lambda_bar * xb[t + 1] + Bu[:, t]
        CbH = np.conj(Cb).T
        gb = np.zeros((b, n), dtype=cdt)
        for t in range(l):
            # g^b_t = conj(Lambda_bar) g^b_{t-1} + f C_back^H dy_t   (the backward direction's adjoint: a forward scan)
            gb = np.conj(Lambda_bar) * gb + f * np.einsum("nd,bd->bn", CbH, dy[:, t])
            gs[:, t] += gb
            # dLambda_bar += sum_b g^b_t conj(x^b_{t+1})
            dLambda_bar += np.sum(gb * np.conj(xb[t + 1]), axis=0)
        # dC_back = f sum dy_t (x^b_t)^H
        out["C_back"] = f * np.einsum("bld,lbn->dn", dy, np.conj(xb[:l]))
    # dB_bar = sum_{b,t} (g_t + g^b_t) u_t^T
    dB_bar = np.einsum("bln,bld->nd", gs, uc)
    # du_t = Re(B_bar^H (g_t + g^b_t)) + D dy_t
    du = np.real(np.einsum("nd,bln->bld", np.conj(B_bar), gs))
    if Dr is not None:
        du = du + Dr * dy
        # dD = sum_{b,t} dy_t u_t
        out["D"] = np.einsum("bld,bld->d", dy, u.astype(rdt, copy=False))
    # dC~ = f sum_{b,t} dy_t x_t^H
    out["C_tilde"] = f * np.einsum("bld,lbn->dn", dy, np.conj(xs[1:]))
    out["u"] = du
    if initial_state is not None:
        # d initial_state = conj(Lambda_bar) g_0  (d_final_state itself when l = 0)
        out["initial_state"] = np.conj(Lambda_bar) * g if l else g
    # through the discretization: n one-state systems, A (n 1), B (n 1 d), dt (n)
    Lam = as_float_array(Lambda, "Lambda", ndim=1).astype(cdt, copy=False)
    Bt = as_float_array(B_tilde, "B_tilde", ndim=2).astype(cdt, copy=False)
    dt_in = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False)
    dtn = np.broadcast_to(dt_in.astype(rdt, copy=False), (n,)).copy()
    gd = discretize_vjp(Lam[:, None], Bt[:, None, :], dtn, dA_bar=dLambda_bar[:, None], dB_bar=dB_bar[:, None, :],
                        method=method, diagonal=True)
    out["Lambda"] = gd["A"][:, 0]
    out["B_tilde"] = gd["B"][:, 0, :]
    ddt = np.real(gd["dt"])
    out["dt"] = np.asarray(np.sum(ddt), dtype=rdt) if dt_in.ndim == 0 else ddt.astype(rdt, copy=False)
    originals = dict(Lambda=Lambda, B_tilde=B_tilde, C_tilde=C_tilde, D=D, dt=dt, u=u, C_back=C_back,
                     initial_state=initial_state)
    # (np.ascontiguousarray makes a 0-d array 1-d: the reshape keeps a scalar dt's gradient a scalar)
    return {k: np.ascontiguousarray(v if np.asarray(originals[k]).dtype.kind == "c" else np.real(v).astype(rdt))
            .reshape(np.shape(v)) for k, v in out.items()}
