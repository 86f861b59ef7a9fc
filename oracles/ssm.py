r"""Independent oracles for the SSM core (discretizations and LTI views).

Nothing here imports :mod:`refimpl.ssm`.  Each oracle reaches the answer by
a different route from the reference:

* :func:`van_loan_zoh` -- ZOH from one matrix exponential of the Van Loan block
  matrix ``exp([[A, B], [0, 0]] dt) = [[A_bar, B_bar], [0, I]]`` (scipy's Pade
  ``expm``), where the reference evaluates ``phi1`` by its own scaling and squaring.
* :func:`ode_solution` -- the continuous system integrated by
  ``scipy.integrate.solve_ivp`` (DOP853, rtol :data:`ODE_RTOL`) with the input held
  constant over each step; ZOH must match it at the sample points.
* :func:`cont2discrete_AB` -- ``scipy.signal.cont2discrete`` for bilinear, gbt,
  Euler, backward Euler and zoh.  scipy returns ``(A_d, B_d, C_d, D_d)``; for
  the bilinear/gbt family its output equation uses a half-step-shifted state
  (``C_d = C (I - alpha dt A)^{-1}``, ``D_d = D + alpha C B_d``), while S4 keeps
  ``C`` and ``D``.  Only ``A_d`` and ``B_d`` are compared.
* :func:`dense_operator` / :func:`apply_dense` -- the time-varying lower-block-
  triangular operator ``y = T x + S h0`` materialized from explicit transition
  products ``Phi(t, j) = A_bar_t ... A_bar_{j+1}``, independent of every
  recurrence, scan, convolution and chunk code path.
* :func:`lti_bound` -- the componentwise error bound for any non-FFT view (see
  its docstring), computed by applying the dense operator of ``|A_bar|``,
  ``|B_bar|``, ``|C|``, ``|D|`` to ``|x|``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.integrate
import scipy.linalg
import scipy.signal

from oracles.tolerance import Bound, componentwise_bound, conditioned_bound, gamma

# The ODE oracle's requested accuracy (solve_ivp, DOP853).  Not a tolerance of any comparison: the bound
# carries them explicitly (:func:`ode_bound` propagates rtol |h| + atol per step), so they only set how finely
# this oracle resolves an error.  rtol = 1e-12 is ~4500 eps: comfortably above the 100 eps (2.2e-14) below which
# scipy raises rtol itself (with a warning), where DOP853's error estimate is still meaningful; atol = 1e-14,
# 1/100 of rtol, is the floor that keeps a state component passing through zero from forcing the step size
# down to rounding level (the bound adds it at every step).
ODE_RTOL = 1e-12
ODE_ATOL = 1e-14

__all__ = [
    "van_loan_zoh",
    "ode_solution",
    "cont2discrete_AB",
    "dense_operator",
    "apply_dense",
    "lti_bound",
    "expm_bound",
]

_SCIPY_METHOD = {
    "zoh": "zoh",
    "bilinear": "bilinear",
    "gbt": "gbt",
    "forward_euler": "euler",
    "backward_euler": "backward_diff",
}


def _as_dense(A: np.ndarray, diagonal: bool) -> np.ndarray:
    if not diagonal:
        return np.asarray(A)
    A = np.asarray(A)
    out = np.zeros(A.shape + (A.shape[-1],), dtype=A.dtype)
    idx = np.arange(A.shape[-1])
    out[..., idx, idx] = A
    return out


def van_loan_zoh(A, B, dt, *, diagonal: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""ZOH by the Van Loan block exponential, for one system (``A`` (n n) or (n,) diagonal, ``B`` (n m)).

    ``exp(dt [[A, B], [0, 0]]) = [[exp(dt A), int_0^dt exp(A s) ds B], [0, I]]``.
    Returns ``(A_bar, B_bar)`` in complex128/float64.
    """
    A = _as_dense(np.asarray(A, dtype=np.result_type(np.asarray(A).dtype, np.float64)), diagonal)
    B = np.asarray(B)
    n, m = B.shape
    dtype = np.result_type(A.dtype, B.dtype, np.float64)
    M = np.zeros((n + m, n + m), dtype=dtype)
    M[:n, :n] = A
    M[:n, n:] = B
    E = scipy.linalg.expm(float(dt) * M)
    return E[:n, :n], E[:n, n:]


def expm_bound(A, B, dt, dtype, *, diagonal: bool = False) -> Tuple[Bound, Bound]:
    r"""Bounds for ``|A_bar - A_bar_oracle|`` and ``|B_bar - B_bar_oracle|`` of a ZOH discretization.

    Forward error <= cond x backward error (Higham, ch. 10): the relative
    condition number of the exponential at the Van Loan block matrix ``M dt``,
    ``kappa = scipy.linalg.expm_cond(M dt)`` (Frobenius norm), times a backward
    error ``gamma_{n+m}`` per side, times ``||exp(M dt)||_F``: a normwise
    bound applied to every entry.  For diagonal ``A`` the same argument with
    the scalar condition numbers gives a smaller bound; we use the dense one.

    The backward error ``gamma_{n+m}`` is an assumption, not a theorem, and this is what it rests on.
    scipy's Pade scaling and squaring (Al-Mohy & Higham 2009) picks the degree and the scaling ``s`` so that
    the *truncation* backward error is ``<= u`` in exact arithmetic; the rounding errors of evaluating
    ``r_m = q_m^{-1} p_m`` (a few matrix products and one LU solve of a well-conditioned ``q_m``: ``O(n u)``
    componentwise, Higham Thm 9.4) are ``gamma_{c(n+m)}`` for a small ``c``; the squaring phase is
    forward stable only up to the factor ``omega = ||exp(X/2^s)||^{2^s} / ||exp(X)|| >= 1`` (Higham,
    *Functions of Matrices*, Sec. 10.3), which is 1 for normal ``X``; for the Van Loan matrices of
    :func:`random_stable_system` (``n <= 6``, ``dt`` in ``[0.01, 2]``, ``s`` by the ``theta_13 = 5.37`` rule)
    we measured ``omega <= 2.6`` over 200 draws (an observation).  Taking the backward error as
    ``gamma_{n+m}`` therefore assumes ``c omega <= 1`` at these sizes: a stated assumption, not a derived
    bound.  The same holds for the reference's own Taylor scaling and squaring (``phi1_dense``).  A strongly
    non-normal ``A`` (large ``omega``) is outside what this bound covers; the mpmath closed forms of the small
    cases (``tests/test_ssm_core.py``) do not rely on it.
    """
    Ad = _as_dense(np.asarray(A, dtype=np.result_type(np.asarray(A).dtype, np.float64)), diagonal)
    B = np.asarray(B)
    n, m = B.shape
    M = np.zeros((n + m, n + m), dtype=np.result_type(Ad.dtype, B.dtype, np.float64))
    M[:n, :n] = Ad
    M[:n, n:] = B
    Mdt = float(dt) * M
    E = scipy.linalg.expm(Mdt)
    kappa = scipy.linalg.expm_cond(Mdt) if np.isrealobj(Mdt) else _expm_cond_complex(Mdt)
    kappa = max(float(kappa), 1.0)
    scale = np.linalg.norm(E, "fro")
    b = conditioned_bound(kappa, scale, n + m, dtype, what="expm of the Van Loan block matrix")
    return b, b


def _expm_cond_complex(X: np.ndarray) -> float:
    """Relative condition number of expm at complex ``X``: embed as a real matrix ``[[Re, -Im], [Im, Re]]``."""
    R = np.block([[X.real, -X.imag], [X.imag, X.real]])
    return float(scipy.linalg.expm_cond(R))


def ode_solution(A, B, C, D, x, dt, *, h0=None, diagonal: bool = False, rtol: float = ODE_RTOL,
                 atol: float = ODE_ATOL):
    r"""Integrate ``h' = A h + B x(t)``, ``x(t) = x_k`` on ``[k dt, (k+1) dt)``, and sample.

    One system: ``A`` (n n) or (n,), ``B`` (n m), ``C`` (p n), ``D`` (p m) or None, ``x`` (l m).
    Returns ``(h, y)`` with ``h[k]`` the state at ``(k+1) dt`` (after input ``x_k``
    was held for one step: the discrete convention ``h_k = A_bar h_{k-1} + B_bar x_k``)
    and ``y[k] = C h[k] + D x_k``.  Each step is a separate ``solve_ivp`` call so the
    integrator never steps across an input discontinuity.  The integration error
    is ``<= rtol |h| + atol`` per step (DOP853's local control), accumulated over
    ``l`` steps.
    """
    A = _as_dense(np.asarray(A), diagonal)
    B, C = np.asarray(B), np.asarray(C)
    x = np.asarray(x)
    n = A.shape[0]
    l = x.shape[0]
    dtype = np.result_type(A.dtype, B.dtype, C.dtype, x.dtype, np.float64)
    h = np.zeros(n, dtype=dtype) if h0 is None else np.asarray(h0, dtype=dtype).copy()
    hs = np.zeros((l, n), dtype=dtype)
    for k in range(l):
        u = B @ x[k]

        def rhs(t, s, u=u):
            return A @ s + u

        sol = scipy.integrate.solve_ivp(rhs, (0.0, float(dt)), h, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:  # pragma: no cover
            raise RuntimeError(f"solve_ivp failed at step {k}: {sol.message}")
        h = sol.y[:, -1]
        hs[k] = h
    y = hs @ C.T
    if D is not None:
        y = y + x @ np.asarray(D).T
    return hs, y


def cont2discrete_AB(A, B, dt, method: str, *, alpha: Optional[float] = None, diagonal: bool = False):
    """``(A_d, B_d)`` from ``scipy.signal.cont2discrete`` for one system; ``method`` uses refimpl's names."""
    if method not in _SCIPY_METHOD:
        raise ValueError(f"method: expected one of {sorted(_SCIPY_METHOD)}, got {method!r}")
    A = _as_dense(np.asarray(A), diagonal)
    B = np.asarray(B)
    n = A.shape[0]
    C = np.eye(n)
    D = np.zeros((n, B.shape[1]))
    kw = {"alpha": alpha} if method == "gbt" else {}
    ad, bd, _cd, _dd, _ = scipy.signal.cont2discrete((A, B, C, D), float(dt), method=_SCIPY_METHOD[method], **kw)
    return ad, bd


def dense_operator(A_bar, B_bar, C, D, L: int, *, diagonal: bool = False):
    r"""Materialize the operator of the discrete SSM for one channel.

    ``A_bar`` (n n)/(n,) or time-varying (l n n)/(l n); ``B_bar`` (n m) or (l n m); ``C`` (p n); ``D`` (p m) or None.

    Returns ``(T, S, F, G)``:

    * ``T`` (l p, l m): ``y = T vec(x) (+ S h0)``, block ``(t, j)`` =
      ``C Phi(t, j) B_bar_j`` for ``j <= t`` (+ ``D`` on the diagonal), with
      ``Phi(t, j) = A_bar_t A_bar_{t-1} ... A_bar_{j+1}`` (``Phi(t, t) = I``);
    * ``S`` (l p, n): block ``t`` = ``C Phi(t, -1)``, the initial state's map;
    * ``F`` (n, l m): the final state ``h_{L-1} = F vec(x) + G h0``;
    * ``G`` (n, n) = ``Phi(L-1, -1)``.
    """
    A_bar = np.asarray(A_bar)
    B_bar = np.asarray(B_bar)
    C = np.asarray(C)
    core = 1 if diagonal else 2
    tv = A_bar.ndim == core + 1
    n = A_bar.shape[-1]
    m = B_bar.shape[-1]
    p = C.shape[0]
    dtype = np.result_type(A_bar, B_bar, C, np.float64, *( [D] if D is not None else []))

    def A_at(t):
        a = A_bar[t] if tv else A_bar
        return np.diag(a) if diagonal else a

    def B_at(j):
        return B_bar[j] if B_bar.ndim == 3 else B_bar

    T = np.zeros((L * p, L * m), dtype=dtype)
    S = np.zeros((L * p, n), dtype=dtype)
    F = np.zeros((n, L * m), dtype=dtype)
    for j in range(L):
        # Phi(t, j) for t = j..L-1, built left to right: Phi(t, j) = A_bar_t Phi(t-1, j)
        Phi = np.eye(n, dtype=dtype)
        for t in range(j, L):
            if t > j:
                Phi = A_at(t) @ Phi
            # block (t, j) = C Phi(t, j) B_bar_j
            T[t * p:(t + 1) * p, j * m:(j + 1) * m] = C @ Phi @ B_at(j)
        # final state's map: Phi(L-1, j) B_bar_j
        F[:, j * m:(j + 1) * m] = Phi @ B_at(j)
    # the initial state: Phi(t, -1) = A_bar_t ... A_bar_0
    Phi = np.eye(n, dtype=dtype)
    for t in range(L):
        Phi = A_at(t) @ Phi
        S[t * p:(t + 1) * p] = C @ Phi
    G = Phi
    if D is not None:
        D = np.asarray(D)
        for t in range(L):
            T[t * p:(t + 1) * p, t * m:(t + 1) * m] += D
    return T, S, F, G


def apply_dense(A_bar, B_bar, C, D, x, *, h0=None, diagonal: bool = False):
    r"""``y`` (b l h p) and the final state (b h n) from the materialized operators, channel by channel.

    Shapes as in :mod:`refimpl.ssm.lti.reference`: ``A_bar`` (h n n)/(h n) or (l h ...), ``B_bar``
    (h n m)/(l h n m), ``C`` (h p n), ``D`` (h p m) or None, ``x`` (b l h m), ``h0`` (b h n).
    """
    x = np.asarray(x)
    b, l, h, m = x.shape
    A_bar = np.asarray(A_bar)
    B_bar = np.asarray(B_bar)
    C = np.asarray(C)
    core = 1 if diagonal else 2
    tv = A_bar.ndim == core + 2
    n = A_bar.shape[-1]
    p = C.shape[1]
    dtype = np.result_type(A_bar, B_bar, C, x, np.float64, *([D] if D is not None else []),
                           *([h0] if h0 is not None else []))
    y = np.zeros((b, l, h, p), dtype=dtype)
    hL = np.zeros((b, h, n), dtype=dtype)
    for c in range(h):
        Ac = A_bar[:, c] if tv else A_bar[c]
        Bc = B_bar[:, c] if B_bar.ndim == 4 else B_bar[c]
        Dc = None if D is None else np.asarray(D)[c]
        T, S, F, G = dense_operator(Ac, Bc, C[c], Dc, l, diagonal=diagonal)
        xv = x[:, :, c, :].reshape(b, l * m)
        yc = xv @ T.T
        hc = xv @ F.T
        if h0 is not None:
            yc = yc + np.asarray(h0)[:, c, :] @ S.T
            hc = hc + np.asarray(h0)[:, c, :] @ G.T
        y[:, :, c, :] = yc.reshape(b, l, p)
        hL[:, c, :] = hc
    return y, hL


def lti_bound(A_bar, B_bar, C, D, x, dtype, *, h0=None, diagonal: bool = False) -> Tuple[Bound, Bound]:
    r"""Componentwise bounds on ``y`` and on the final state for any non-FFT view.

    Every view evaluates ``y_t = sum_j C Phi(t, j) B_bar_j x_j + D x_t (+ C Phi(t, -1) h0)``
    in some association: each term is a product of at most ``L + 2`` matrices
    of inner dimension ``<= max(n, m)`` and the sum has at most ``L m + n`` terms.
    A product of ``k`` matrices of inner dimension ``n`` computed in any order has
    error ``<= gamma_{(k-1) n} |A_1| ... |A_k|`` (Higham 3.5) and summing adds
    ``gamma_{#terms}``, so ``depth = (L + 2)(n + m + 1)`` bounds both, relative to
    ``M = |T| |x| + |S| |h0|`` evaluated with absolute values in every factor --
    which is exactly the dense operator of ``|A_bar|, |B_bar|, |C|, |D|`` applied
    to ``|x|`` (and ``|h0|``).  Complex data use the complex multiply factor.
    The float64 oracle's own rounding (same depth) is added.
    """
    x = np.asarray(x)
    b, l, h, m = x.shape
    n = np.shape(A_bar)[-1]
    ab = lambda a: None if a is None else np.abs(np.asarray(a))  # noqa: E731
    My, Mh = apply_dense(ab(A_bar), ab(B_bar), ab(C), ab(D), ab(x), h0=ab(h0), diagonal=diagonal)
    cplx = any(np.iscomplexobj(a) for a in (A_bar, B_bar, C, D, x, h0) if a is not None)
    depth = (l + 2) * (n + m + 1)
    by = componentwise_bound(My.real, depth, dtype, complex_ops=cplx, what=f"LTI views, depth (L+2)(n+m+1) = {depth}")
    bh = componentwise_bound(Mh.real, depth, dtype, complex_ops=cplx, what=f"final state, depth {depth}")
    return by, bh


def random_stable_system(rng: np.random.Generator, h: int, n: int, m: int, p: int, *, diagonal: bool = False,
                         complex_: bool = False, margin: float = 0.5, scale: float = 1.0):
    r"""Seeded test inputs: continuous ``(A, B, C, D)`` for ``h`` channels with every eigenvalue of ``A``
    in ``Re(lambda) <= -margin * scale``.

    Dense: ``A = scale * (G - (rho(G) + margin) I)`` with ``G`` Gaussian / sqrt(n), so every
    eigenvalue has real part ``<= -margin * scale``.  Diagonal: ``Re = -scale * U(margin, margin + 1.5)``,
    ``Im = scale * N(0, 1)`` when complex.
    """
    if diagonal:
        A = -scale * rng.uniform(margin, margin + 1.5, size=(h, n))
        if complex_:
            A = A + 1j * scale * rng.standard_normal((h, n))
    else:
        G = rng.standard_normal((h, n, n)) / np.sqrt(max(n, 1))
        if complex_:
            G = G + 1j * rng.standard_normal((h, n, n)) / np.sqrt(max(n, 1))
        rho = np.max(np.abs(np.linalg.eigvals(G)), axis=-1) if n else np.zeros(h)
        A = scale * (G - (rho + margin)[:, None, None] * np.eye(n))
    B = rng.standard_normal((h, n, m))
    C = rng.standard_normal((h, p, n))
    D = rng.standard_normal((h, p, m))
    if complex_:
        B = B + 1j * rng.standard_normal((h, n, m))
        C = C + 1j * rng.standard_normal((h, p, n))
    return A, B, C, D


def ode_bound(A_bar, C, hs, dtype_bound: Bound, *, rtol: float = ODE_RTOL, atol: float = ODE_ATOL,
              diagonal: bool = False) -> Bound:
    r"""The ODE oracle's own accuracy, propagated to ``y``, plus a rounding bound of the candidate.

    solve_ivp controls each step's local error to ``rtol |h_k| + atol``; the
    local errors are carried forward by the discrete propagator, so
    ``|e_t| <= |A_bar| |e_{t-1}| + (rtol |h_t| + atol)`` and ``|dy_t| <= |C| |e_t|``
    (the integrator's stated accuracy, not a rigorous enclosure: DOP853's
    control is an estimate).
    """
    A = np.abs(_as_dense(np.asarray(A_bar), diagonal))
    Cabs = np.abs(np.asarray(C))
    e = np.zeros(A.shape[0])
    out = np.zeros((hs.shape[0], Cabs.shape[0]))
    for t in range(hs.shape[0]):
        e = A @ e + rtol * np.abs(hs[t]) + atol
        out[t] = Cabs @ e
    return Bound(out, f"ODE: integrator accuracy rtol={rtol:g}, atol={atol:g} propagated by |A_bar|, |C|") + dtype_bound


def fft_bound_lti(K, x, dtype) -> Bound:
    r"""FFT-convolution rounding for the LTI layout: ``K`` (l h p m), ``x`` (b l h m).

    ``y_{b,t,h,p} = sum_m (K_{:,h,p,m} * x_{b,:,h,m})_t``: the bound of
    :func:`oracles.tolerance.fft_convolution_bound` for each ``(h, p, m)`` pair,
    summed over ``m`` (plus ``gamma_m`` for that sum).
    """
    from oracles.tolerance import fft_convolution_bound

    K = np.asarray(K)
    x = np.asarray(x)
    b, l, h, m = x.shape
    p = K.shape[2]
    if l == 0:
        return Bound(0.0, "empty")
    n_fft = 1 << max(1, int(2 * l - 1).bit_length())
    out = np.zeros((b, 1, h, p))
    src = ""
    for j in range(m):
        # kernel (l h p) vs input (b l h): norms along the time axis
        kb = fft_convolution_bound(K[:, :, :, j][None], x[:, :, :, j][..., None], n_fft, dtype, axis=1)
        out += np.asarray(kb.values)
        src = kb.source
    return Bound(out * (1 + gamma(m, dtype)), src + f", summed over m={m}")
