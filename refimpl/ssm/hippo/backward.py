r"""The backward pass (vector-Jacobian product) of the online HiPPO projection, literal NumPy adjoints.

**The adjoint of the forward scan is itself a reverse scan** (from the last sample to the first), carrying
``g_k = dL/dc_k`` (the total derivative of the loss with respect to the state ``c_k``).

The forward (:func:`refimpl.ssm.hippo.reference.online_projection`; ``A = A_s4``, ``c[0] = c0``; ``l`` samples):

* time-invariant measures (``legt``, ``lmu``, ``lagt``, ``fout``; ``M = s A``, ``N = s B``, ``s`` constant)::

      A_bar = (I - alpha dt M)^{-1} (I + (1 - alpha) dt M),   B_bar = (I - alpha dt M)^{-1} dt N
      c_{k+1} = A_bar c_k + B_bar u_k,    u_k = alpha f_{k+1} + (1 - alpha) f_k

* LegS (``h_k = dt / t_k``, ``t_k = t0 + k dt``)::

      (I - alpha h_{k+1} A) c_{k+1} = (I + (1 - alpha) h_k A) c_k + B (alpha h_{k+1} f_{k+1} + (1 - alpha) h_k f_k)

The reverse scan, ``k = l - 2, ..., 0``, from ``g_{l-1} = dc_{l-1}`` (``dc (l n)`` the cotangent of ``c``):

* time-invariant: ``g_k = dc_k + A_bar^T g_{k+1}``;  ``du_k = B_bar . g_{k+1}``;
  ``df_{k+1} += alpha du_k``,  ``df_k += (1 - alpha) du_k``;  and for ``dt``:
  ``G_A = sum_k g_{k+1} c_k^T``, ``G_B = sum_k g_{k+1} u_k``,
  ``ddt = <G_A, dA_bar/ddt> + <G_B, dB_bar/ddt>`` with
  ``dA_bar/ddt = (I - alpha dt M)^{-1} (alpha M A_bar + (1 - alpha) M)``,
  ``dB_bar/ddt = (I - alpha dt M)^{-1} (alpha M B_bar + N)``;
* LegS: ``w_k = (I - alpha h_{k+1} A)^{-T} g_{k+1}`` (a solve, never an inverse);
  ``g_k = dc_k + (I + (1 - alpha) h_k A)^T w_k``;  ``df_{k+1} += alpha h_{k+1} (B . w_k)``,
  ``df_k += (1 - alpha) h_k (B . w_k)``;  ``dh_{k+1} += alpha w_k . (A c_{k+1} + B f_{k+1})``,
  ``dh_k += (1 - alpha) w_k . (A c_k + B f_k)``;  ``ddt = sum_k dh_k dh_k/ddt`` with ``dh_k/ddt = t0 / t_k^2``
  when ``t0`` is given and 0 when it is the default ``t0 = dt`` (then ``h_k = 1 / (k + 1)``: ``dt`` drops out);
* the start: ``dinitial_state = g_0``; without an initial state LegS starts at ``c_0 = f_0 e_0``:
  ``df_0 += g_0[0]`` (the other measures start at zero: nothing).

Conventions (the forward's): ``f (l,)`` a real scalar signal, ``N`` an int (no gradient), ``dt > 0`` a real scalar
(differentiable: ``"dt"`` a 0-d float64 array), ``theta``/``alpha``/``t0`` constants.  float64 throughout (the
forward computes in float64 whatever its input dtype); every gradient is returned in float64.

Shapes: ``f (l,)``, ``dc (l n)``, ``initial_state (n)``.  Returns ``{"f": (l,), "dt": ()}`` and
``"initial_state": (n)`` when one is given.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, check_shape
from refimpl.ssm.hippo.reference import (MEASURES, ONLINE_METHODS, _gbt_weight, _initial_coefficients, _times,
                                         _window, online_projection, scale, transition)

__all__ = ["recurrent_vjp"]


def recurrent_vjp(f, measure: str, N: int, dt: float, *, dc, method: str = "bilinear",
                  alpha: Optional[float] = None, theta: float = 1.0, t0: Optional[float] = None,
                  initial_state=None) -> dict:
    r"""The VJP of :func:`~refimpl.ssm.hippo.reference.online_projection`: the reverse scan of the module docstring.

    ``f (l,)``, ``dc (l n)`` the cotangent of ``c`` (keyword-only, required); the forward's arguments otherwise.
    Returns ``{"f", "dt"}`` and ``"initial_state"`` when one is given, float64.
    """
    check_choice(measure, "measure", MEASURES)
    N = check_int(N, "N", minimum=1)
    check_choice(method, "method", ONLINE_METHODS)
    f = as_float_array(f, "f", ndim=1, allow_complex=False).astype(np.float64, copy=False)
    dt_v = float(as_float_array(dt, "dt", ndim=0, allow_complex=False))
    check_positive(dt_v, "dt")
    theta = _window(theta)
    alpha = _gbt_weight(method, alpha)
    t0_given = t0 is not None
    t0v = float(_times(measure, t0 if t0_given else (dt_v if measure == "legs" else 0.0), ndim=0, name="t0"))
    _initial_coefficients(initial_state, measure, N, f)            # the initial state's checks
    L = f.shape[0]
    dc = as_float_array(dc, "dc", ndim=2, allow_complex=False).astype(np.float64, copy=False)
    check_shape(dc, "dc", (L, N), "(l, n), the shape of c", src="l from f, n = N")
    # the forward again (the states c_k are needed by the dt adjoint)
    c = online_projection(f, measure, N, dt_v, method=method, alpha=None if method != "gbt" else alpha,
                          theta=theta, t0=t0, initial_state=initial_state)
    A, B = transition(measure, N, sign="s4")
    eye = np.eye(N)
    df = np.zeros(L)
    ddt = 0.0
    if L == 0:
        out = {"f": df, "dt": np.asarray(0.0)}
        if initial_state is not None:
            out["initial_state"] = np.zeros(N)
        return out
    # g_{l-1} = dc_{l-1}
    g = dc[L - 1].copy()
    if measure != "legs":
        s = float(scale(measure, t0v, theta))
        M, Nv = s * A, s * B
        lhs = eye - alpha * dt_v * M
        # A_bar = (I - alpha dt M)^{-1} (I + (1 - alpha) dt M),  B_bar = (I - alpha dt M)^{-1} dt N  (solve)
        A_bar = np.linalg.solve(lhs, eye + (1.0 - alpha) * dt_v * M)
        B_bar = np.linalg.solve(lhs, dt_v * Nv)
        G_A = np.zeros((N, N))
        G_B = np.zeros(N)
        for k in range(L - 2, -1, -1):
            u_k = alpha * f[k + 1] + (1.0 - alpha) * f[k]
            # du_k = B_bar . g_{k+1};  df_{k+1} += alpha du_k,  df_k += (1 - alpha) du_k
            du = B_bar @ g
            df[k + 1] += alpha * du
            df[k] += (1.0 - alpha) * du
            # G_A += g_{k+1} c_k^T,  G_B += g_{k+1} u_k
            G_A += np.outer(g, c[k])
            G_B += g * u_k
            # g_k = dc_k + A_bar^T g_{k+1}
            g = dc[k] + A_bar.T @ g
        # ddt = <G_A, dA_bar/ddt> + <G_B, dB_bar/ddt>
        dA_bar = np.linalg.solve(lhs, alpha * M @ A_bar + (1.0 - alpha) * M)
        dB_bar = np.linalg.solve(lhs, alpha * M @ B_bar + Nv)
        ddt = float(np.sum(G_A * dA_bar) + G_B @ dB_bar)
    else:
        t = t0v + dt_v * np.arange(L)
        h = dt_v / t
        dh = np.zeros(L)
        for k in range(L - 2, -1, -1):
            # w_k = (I - alpha h_{k+1} A)^{-T} g_{k+1}
            w = np.linalg.solve((eye - alpha * h[k + 1] * A).T, g)
            Bw = B @ w
            # df_{k+1} += alpha h_{k+1} (B . w_k),  df_k += (1 - alpha) h_k (B . w_k)
            df[k + 1] += alpha * h[k + 1] * Bw
            df[k] += (1.0 - alpha) * h[k] * Bw
            # dh_{k+1} += alpha w_k . (A c_{k+1} + B f_{k+1}),  dh_k += (1 - alpha) w_k . (A c_k + B f_k)
            dh[k + 1] += alpha * (w @ (A @ c[k + 1] + B * f[k + 1]))
            dh[k] += (1.0 - alpha) * (w @ (A @ c[k] + B * f[k]))
            # g_k = dc_k + (I + (1 - alpha) h_k A)^T w_k
            g = dc[k] + (eye + (1.0 - alpha) * h[k] * A).T @ w
        # ddt = sum_k dh_k dh_k/ddt:  t0 / t_k^2 (t0 given), 0 (t0 = dt: h_k = 1/(k+1))
        if t0_given:
            ddt = float(dh @ (t0v / t ** 2))
    out = {"f": df, "dt": np.asarray(ddt)}
    if initial_state is not None:
        # dinitial_state = g_0
        out["initial_state"] = g
    elif measure == "legs":
        # c_0 = f_0 e_0:  df_0 += g_0[0]
        df[0] += g[0]
    return out
