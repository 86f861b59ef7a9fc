r"""HiPPO: online projection of a signal's history onto orthogonal polynomials (Gu et al. 2020).

The history ``f_{<=t}`` is projected onto an orthonormal basis ``g_n(x; t)``
of ``L2(mu_t)``; the coefficients ``c_n(t) = <f_{<=t}, g_n>_{mu_t}`` obey a
linear ODE whose matrices are given here, for the measures

=======  =============================================  ==========================================  ==========
measure  mu_t (a probability measure unless noted)      basis g_n(x; t)                              scale s(t)
=======  =============================================  ==========================================  ==========
legs     uniform on [0, t]                              sqrt(2n+1) P_n(2x/t - 1)                     1/t
legt     uniform on [t - theta, t]                      sqrt(2n+1) P_n(2(x - t)/theta + 1)           1/theta
lmu      uniform on [t - theta, t]  (LMU coordinates)   P_n(2(t - x)/theta - 1)  (not normalized)    1/theta
lagt     e^{-(t - x)} dx on (-inf, t]                   L_n(t - x)   (Laguerre, orthonormal)         1
fout     uniform on [t - theta, t]                      1, sqrt2 cos(2 pi k u), sqrt2 sin(2 pi k u)  1/theta
=======  =============================================  ==========================================  ==========

(``u = (x - t + theta)/theta`` in [0, 1]; FouT orders the basis
``[1, cos_1, sin_1, cos_2, sin_2, ...]``.  LMU uses Voelker's coordinates
``m_n = (-1)^n sqrt(2n+1) c_n^{legt}``, so that
``f(t - r theta) ~ sum_n m_n P_n(2r - 1)``; its reconstruction basis is
``P_n(2(t - x)/theta - 1)`` without normalization.)

Sign convention (both spellings explicit; ``sign`` is a required argument)
-------------------------------------------------------------------------
* ``sign="ode"`` -- the text's / HiPPO paper's spelling: the minus sign sits in
  the ODE, ``c'(t) = -s(t) A c(t) + s(t) B f(t)``.  For LegS this is the text's
  ``A_nk = sqrt((2n+1)(2k+1))`` (n > k), ``n + 1`` (n = k), ``0`` (n < k),
  ``B_n = sqrt(2n+1)``, ``s(t) = 1/t``.
* ``sign="s4"`` -- S4's code spelling: ``A`` is stored already negated,
  ``c'(t) = s(t) A c(t) + s(t) B f(t)`` (so ``A_s4 = -A_ode``, same ``B``).

The LegT/LMU/FouT ODEs are exact only when the value leaving the window,
``f(t - theta)``, equals the reconstruction at the window's left end (true for
polynomials of degree < N, resp. ``theta``-periodic trigonometric polynomials
in the span); LegS and LagT are exact projections for every signal.

Online projection (discretizations of the time-varying ODE)
-----------------------------------------------------------
``c' = M(t) c + N(t) f`` with ``M(t) = s(t) A_s4``, ``N(t) = s(t) B`` is stepped on the
uniform grid ``t_k = t0 + k dt``; samples ``f_k = f(t_k)``; output ``c_k ~ c(t_k)``.

* ``forward_euler``: ``c_{k+1} = (I + dt M_k) c_k + dt N_k f_k``.  For LegS with
  ``t0 = dt`` (``t_k = (k+1) dt``) this is the text's recurrence
  ``c_{k+1} = (1 - A/k) c_k + (1/k) B f_k`` (text index ``k`` = ours + 1).
* ``gbt`` (alpha in [0, 1]) -- the generalized bilinear transform of the HiPPO paper
  applied to the time-varying ODE, with the same alpha weighting of the input:
  ``(I - alpha dt M_{k+1}) c_{k+1} = (I + (1-alpha) dt M_k) c_k
  + dt (alpha N_{k+1} f_{k+1} + (1-alpha) N_k f_k)``;
  ``bilinear`` = alpha 1/2 (second order), ``backward_euler`` = alpha 1 (first order).

Initial state: ``initial_state`` (the coefficients at ``t0``, the output's first row).  Default: zero for
legt/lmu/lagt/fout (the signal is taken as 0 before ``t0``), and for LegS,
whose ``t0`` must be > 0 (``1/t`` is singular at 0), ``c0 = f_0 e_0`` -- the
limit of the exact coefficients as ``t -> 0`` (``c_0 -> f(0)``, the rest -> 0),
an ``O(t0 |f'|)`` approximation whose effect decays like ``t0/t``.

Entry points (:mod:`refimpl.ssm.hippo`): :func:`refimpl.ssm.hippo.hippo_transition` (:func:`transition`) and
:func:`refimpl.ssm.hippo.hippo_projection` (view ``recurrent``, backend ``numpy``: :func:`online_projection`).
A projection reads a scalar signal ``f (l,)`` (the documented exception to the ``(b l d)`` layouts) and
returns ``c (l n)``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import scipy.special

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, check_shape
from refimpl.ssm.discretization import reference as discretize

__all__ = [
    "MEASURES",
    "SIGNS",
    "transition",
    "legs",
    "legt",
    "lmu",
    "lagt",
    "fout",
    "scale",
    "online_projection",
    "basis",
    "reconstruct",
]

MEASURES = ("legs", "legt", "lmu", "lagt", "fout")
SIGNS = ("ode", "s4")
ONLINE_METHODS = ("forward_euler", "backward_euler", "bilinear", "gbt")


def _apply_sign(A: np.ndarray, sign: str) -> np.ndarray:
    check_choice(sign, "sign", SIGNS)
    # sign="ode": c' = -s A c + s B f  (A as printed);  sign="s4": A_s4 = -A_ode
    return A if sign == "ode" else -A


def legs(N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""HiPPO-LegS ``(A, B)``: ``A_nk = sqrt((2n+1)(2k+1))`` (n > k), ``n+1`` (n = k), 0 (n < k); ``B_n = sqrt(2n+1)``.

    Shapes: ``A (n n)``, ``B (n)``, float64.  ``sign`` see module docstring.
    """
    N = check_int(N, "N", minimum=1)
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2.0 * n + 1.0)
    # A_nk = sqrt((2n+1)(2k+1)) for n > k   (one correctly rounded sqrt of the integer product)
    A = np.tril(np.sqrt(np.outer(2.0 * n + 1.0, 2.0 * n + 1.0)), k=-1)
    # A_nn = n + 1
    A[np.diag_indices(N)] = n + 1.0
    # B_n = sqrt(2n+1)
    B = r.copy()
    return _apply_sign(A, sign), B


def legt(N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""HiPPO-LegT ``(A, B)`` for the window ``[t - theta, t]`` (the ``1/theta`` lives in the ODE's scale).

    ``A_nk = sqrt((2n+1)(2k+1)) * (1 if k <= n else (-1)^(n-k))``, ``B_n = sqrt(2n+1)``
    (from ``d/dt c_n = s [g_n(t) f(t) - g_n(t-theta) f(t-theta)] + <f, d_t g_n>`` with
    ``f(t - theta) ~ sum_k c_k g_k(t - theta)`` and ``P_n' = sum_{k<n, n-k odd} (2k+1) P_k``).
    """
    N = check_int(N, "N", minimum=1)
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2.0 * n + 1.0)
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    # A_nk = r_n r_k (1 if k <= n else (-1)^{n-k})
    A = np.outer(r, r) * np.where(j <= i, 1.0, (-1.0) ** (i - j))
    return _apply_sign(A, sign), r.copy()


def lmu(N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""LMU (Voelker et al. 2019), LegT in the coordinates ``m_n = (-1)^n sqrt(2n+1) c_n``.

    Voelker's form ``theta m' = A m + B f`` has ``A_nk = (2n+1) * (-1 if n < k else (-1)^(n-k+1))``,
    ``B_n = (2n+1)(-1)^n`` -- that is the ``sign="s4"`` spelling; ``sign="ode"`` returns ``-A``.
    """
    N = check_int(N, "N", minimum=1)
    n = np.arange(N, dtype=np.float64)
    R = 2.0 * n + 1.0
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    # A_s4[n, k] = (2n+1) * (-1 if n < k else (-1)^{n-k+1})
    A_s4 = R[:, None] * np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    # B_n = (2n+1) (-1)^n
    B = R * (-1.0) ** n
    check_choice(sign, "sign", SIGNS)
    return (-A_s4 if sign == "ode" else A_s4), B


def lagt(N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""HiPPO-LagT ``(A, B)``: ``A_nk = 1`` for ``k <= n``, else 0; ``B_n = 1`` (measure ``e^{-(t-x)}``).

    From ``c_n = int f(t - s) L_n(s) e^{-s} ds``, ``L_n(0) = 1``, ``L_n' = -sum_{k<n} L_k``.
    """
    N = check_int(N, "N", minimum=1)
    # A_nk = 1 for k <= n
    A = np.tril(np.ones((N, N)))
    B = np.ones(N)
    return _apply_sign(A, sign), B


def fout(N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""HiPPO-FouT ``(A, B)`` on the window ``[t - theta, t]``, basis ``[1, cos_1, sin_1, ..., cos_K, sin_K]`` (``N = 2K + 1``).

    ``A_ode = B B^T - Omega`` with ``Omega[cos_k, sin_k] = 2 pi k``, ``Omega[sin_k, cos_k] = -2 pi k``;
    ``B = (1, sqrt2, 0, sqrt2, 0, ...)`` (the basis at both window ends).  The rank-one term
    ``B B^T`` is ``f(t - theta) ~ B^T c`` leaving the window.
    """
    N = check_int(N, "N", minimum=1)
    if N % 2 == 0:
        raise ValueError(
            f"N: FouT needs an odd N (the constant and (N-1)/2 cos/sin pairs), got {N}; an unpaired cosine "
            "leaves A singular (a conserved combination of states)")
    B = np.zeros(N)
    B[0] = 1.0
    Omega = np.zeros((N, N))
    for idx in range(1, N):
        k = (idx + 1) // 2
        if idx % 2 == 1:  # cos_k
            B[idx] = math.sqrt(2.0)
            if idx + 1 < N:
                # d/dt c_{cos k} gets + (2 pi k) c_{sin k}
                Omega[idx, idx + 1] = 2.0 * math.pi * k
                # d/dt c_{sin k} gets - (2 pi k) c_{cos k}
                Omega[idx + 1, idx] = -2.0 * math.pi * k
    # A_ode = B B^T - Omega   (c' = (1/theta)(-A_ode c + B f))
    A = np.outer(B, B) - Omega
    return _apply_sign(A, sign), B


_BUILDERS = {"legs": legs, "legt": legt, "lmu": lmu, "lagt": lagt, "fout": fout}


def transition(measure: str, N: int, *, sign: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the named measure (see the table); ``A (n n)``, ``B (n)``, float64."""
    check_choice(measure, "measure", MEASURES)
    check_choice(sign, "sign", SIGNS)
    return _BUILDERS[measure](N, sign=sign)


def _window(theta) -> float:
    """``theta``: the window length of legt/lmu/fout, a finite real > 0."""
    theta = float(as_float_array(theta, "theta", ndim=0, allow_complex=False))
    check_positive(theta, "theta")
    return theta


def _times(measure: str, t, ndim=None, name: str = "t") -> np.ndarray:
    """``t``: finite real time(s), never None; ``> 0`` for legs (its measure ``[0, t]`` is empty at ``t = 0``)."""
    if t is None:
        raise TypeError(f"{name}: expected a real time (a number or an array of floats), got None")
    t = as_float_array(t, name, ndim=ndim, allow_complex=False).astype(np.float64, copy=False)
    if measure == "legs":
        check_positive(t, name)
    return t


def scale(measure: str, t, theta: float = 1.0):
    """The ODE's time scale ``s(t)``: ``1/t`` (legs, ``t > 0``), ``1/theta`` (legt, lmu, fout), ``1`` (lagt).

    ``t``: a finite real time or an array of them (any sign for the windowed measures and lagt, whose scale
    does not depend on it); ``theta > 0``.  Returns an array of ``t``'s shape.
    """
    check_choice(measure, "measure", MEASURES)
    t = _times(measure, t)
    theta = _window(theta)
    if measure == "legs":
        # s(t) = 1/t
        return 1.0 / t
    if measure == "lagt":
        # s(t) = 1
        return np.ones_like(t)
    # s(t) = 1/theta
    return np.full_like(t, 1.0 / theta)


def online_projection(f, measure: str, N: int, dt: float, *, method: str = "bilinear", alpha: Optional[float] = None,
                      theta: float = 1.0, t0: Optional[float] = None, initial_state=None) -> np.ndarray:
    r"""Online HiPPO coefficients of the samples ``f`` (shape ``(l,)``): returns ``c`` of shape ``(l n)``.

    ``c[k] ~ c(t0 + k dt)``.  ``t0`` defaults to ``dt`` for legs (must be > 0) and 0 otherwise.
    ``method``: ``forward_euler`` (for LegS with ``t0 = dt``: the text's recurrence),
    ``backward_euler``, ``bilinear``, ``gbt`` (with ``alpha``).  ``initial_state (n)``: ``c(t0)`` (default: see
    the module docstring).  See the module docstring.
    """
    check_choice(measure, "measure", MEASURES)
    N = check_int(N, "N", minimum=1)
    check_choice(method, "method", ONLINE_METHODS)
    f = as_float_array(f, "f", ndim=1, allow_complex=False).astype(np.float64, copy=False)
    dt = float(as_float_array(dt, "dt", ndim=0, allow_complex=False))
    check_positive(dt, "dt")
    theta = _window(theta)
    alpha = _gbt_weight(method, alpha)
    if t0 is None:
        t0 = dt if measure == "legs" else 0.0
    t0 = float(_times(measure, t0, ndim=0, name="t0"))
    c_k = _initial_coefficients(initial_state, measure, N, f)
    L = f.shape[0]
    A, B = transition(measure, N, sign="s4")
    c = np.zeros((L, N))
    if L == 0:
        return c
    c[0] = c_k
    eye = np.eye(N)
    if measure != "legs":
        # time-invariant: M = s A_s4, N = s B.  A_bar = (I - alpha dt M)^{-1}(I + (1-alpha) dt M),
        # B_bar = (I - alpha dt M)^{-1} dt N  (refimpl.ssm.discretization.reference.gbt)
        s = float(scale(measure, t0, theta))
        A_bar, B_bar = discretize.gbt(s * A, (s * B)[:, None], dt, alpha)
        B_bar = B_bar[:, 0]
        for k in range(L - 1):
            # c_{k+1} = A_bar c_k + B_bar (alpha f_{k+1} + (1 - alpha) f_k)
            c_k = A_bar @ c_k + B_bar * (alpha * f[k + 1] + (1.0 - alpha) * f[k])
            c[k + 1] = c_k
        return c
    for k in range(L - 1):
        t_k = t0 + k * dt
        t_k1 = t0 + (k + 1) * dt
        # dt M_k = (dt / t_k) A_s4 ;  dt N_k = (dt / t_k) B
        h_k, h_k1 = dt / t_k, dt / t_k1
        # (I - alpha h_{k+1} A_s4) c_{k+1} = (I + (1-alpha) h_k A_s4) c_k + B (alpha h_{k+1} f_{k+1} + (1-alpha) h_k f_k)
        rhs = (eye + (1.0 - alpha) * h_k * A) @ c_k + B * (alpha * h_k1 * f[k + 1] + (1.0 - alpha) * h_k * f[k])
        c_k = rhs if alpha == 0.0 else np.linalg.solve(eye - alpha * h_k1 * A, rhs)
        c[k + 1] = c_k
    return c


def _gbt_weight(method: str, alpha) -> float:
    """The input/implicit weight ``alpha`` of the named method (only ``gbt`` takes it, and needs it in [0, 1])."""
    if method == "gbt":
        if alpha is None:
            raise ValueError("alpha: method 'gbt' needs alpha in [0, 1], got None")
        alpha = float(as_float_array(alpha, "alpha", ndim=0, allow_complex=False))
        if not (0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha: expected a real number in [0, 1], got {alpha}")
        return alpha
    if alpha is not None:
        raise ValueError(f"alpha: only method 'gbt' takes alpha, got alpha={alpha} with method={method!r}")
    return {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}[method]


def _initial_coefficients(initial_state, measure: str, N: int, f: np.ndarray) -> np.ndarray:
    """``c(t0)``: the given ``initial_state (n)``, else zero -- for LegS the limit ``c(t -> 0) = f(0) e_0``."""
    if initial_state is None:
        c0 = np.zeros(N)
        if measure == "legs" and f.shape[0]:
            # c(t -> 0) = f(0) e_0  (the average of f over [0, t] tends to f(0))
            c0[0] = f[0]
        return c0
    c0 = as_float_array(initial_state, "initial_state", ndim=1, allow_complex=False).astype(np.float64)
    check_shape(c0, "initial_state", (N,), "(n), the coefficients at t0")
    return c0.copy()


def basis(measure: str, N: int, x, t: float, *, theta: float = 1.0) -> np.ndarray:
    r"""The reconstruction basis ``g_n(x; t)`` at points ``x`` (shape ``(m,)``): returns ``(m n)``.

    ``t``: the current time (finite; ``> 0`` for legs); ``theta > 0`` the window of legt/lmu/fout.

    Points outside the measure's support are allowed (the polynomials extrapolate); the
    approximation is only meaningful on the support.
    """
    check_choice(measure, "measure", MEASURES)
    N = check_int(N, "N", minimum=1)
    x = as_float_array(x, "x", ndim=1, allow_complex=False).astype(np.float64, copy=False)
    t = float(_times(measure, t, ndim=0))
    theta = _window(theta)
    n = np.arange(N)
    if measure == "legs":
        z = 2.0 * x / t - 1.0
        # g_n = sqrt(2n+1) P_n(2x/t - 1)
        return np.sqrt(2.0 * n + 1.0) * scipy.special.eval_legendre(n[None, :], z[:, None])
    if measure == "legt":
        z = 2.0 * (x - t) / theta + 1.0
        # g_n = sqrt(2n+1) P_n(2(x - t)/theta + 1)
        return np.sqrt(2.0 * n + 1.0) * scipy.special.eval_legendre(n[None, :], z[:, None])
    if measure == "lmu":
        z = 2.0 * (t - x) / theta - 1.0
        # f(x) ~ sum_n m_n P_n(2(t - x)/theta - 1)  (shifted Legendre in r = (t - x)/theta)
        return scipy.special.eval_legendre(n[None, :], z[:, None])
    if measure == "lagt":
        # g_n = L_n(t - x)
        return scipy.special.eval_laguerre(n[None, :], (t - x)[:, None])
    # fout: u = (x - t + theta)/theta; [1, sqrt2 cos(2 pi k u), sqrt2 sin(2 pi k u), ...]
    u = (x - t + theta) / theta
    G = np.zeros((x.shape[0], N))
    G[:, 0] = 1.0
    for idx in range(1, N):
        k = (idx + 1) // 2
        trig = np.cos if idx % 2 == 1 else np.sin
        G[:, idx] = math.sqrt(2.0) * trig(2.0 * math.pi * k * u)
    return G


def reconstruct(c, measure: str, x, t: float, *, theta: float = 1.0) -> np.ndarray:
    r"""``f(x) ~ sum_n c_n g_n(x; t)`` from coefficients ``c`` (shape ``(n,)``) at points ``x`` (``(m,)``)."""
    c = as_float_array(c, "c", ndim=1, allow_complex=False)
    if c.shape[0] == 0:
        raise ValueError("c: expected at least one coefficient (n >= 1), got shape (0,)")
    G = basis(measure, c.shape[0], x, t, theta=theta)
    # f(x) ~ sum_n c_n g_n(x; t)
    return G @ c
