r"""LRU, the Linear Recurrent Unit (Orvieto et al. 2023).

Diagonal complex recurrence with the exponential parameterization
``lambda = exp(-exp(nu_log) + i exp(theta_log))`` (so ``|lambda| = exp(-exp(nu_log)) < 1`` for
any real ``nu_log``: stable by construction), gamma normalization
``gamma = exp(gamma_log)``, initialized to ``sqrt(1 - |lambda|^2)``:

``x_t = lambda * x_{t-1} + gamma * (B u_t)``,   ``y_t = Re(C x_t) + D u_t``   (``output="re"``: LRU
keeps the full complex state; no conjugate-pair halving).

Ring initialization: ``|lambda|`` uniform in area on the ring ``r_min <= |lambda| <= r_max``
(``u1 ~ U[0, 1]``, ``nu_log = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2))``), phase uniform on
``[0, max_phase]`` (``theta_log = log(max_phase u2)``); ``B = (N(0,1) + i N(0,1))/sqrt(2 d)``,
``C = (N(0,1) + i N(0,1))/sqrt(N)``, ``D ~ N(0, 1)``.

Shapes: ``nu_log, theta_log, gamma_log (n)`` real, ``B (n d)``, ``C (d n)`` complex, ``D (d)``,
``u (b l d)`` real -> ``y (b l d)`` real; the state ``x (b n)`` complex (``x_{-1}`` = ``initial_state``,
default 0).  Views (:func:`refimpl.ssm.lru.lru_ssm`): ``recurrent`` (:func:`recurrent`, the literal loop
:func:`refimpl.ssm.s5.reference.diag_scan`; backend ``numba`` runs :func:`refimpl.ssm.s5.numba.diag_scan`) and
``scan`` (:func:`scan`, the S5 associative scan with ``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)``,
the initial state entering the first element ``b_0 = lambda x_{-1} + gamma B u_0``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype
from refimpl.ssm.s5 import reference as s5

__all__ = ["lambda_from_params", "gamma_from_lambda", "ring_init", "recurrent", "scan"]


def lambda_from_params(nu_log, theta_log) -> np.ndarray:
    r"""``lambda = exp(-exp(nu_log) + i exp(theta_log))``."""
    nu_log = as_float_array(nu_log, "nu_log", ndim=1, allow_complex=False)
    theta_log = as_float_array(theta_log, "theta_log", ndim=1, allow_complex=False)
    if theta_log.shape != nu_log.shape:
        raise ValueError(f"theta_log: expected shape {nu_log.shape} (same as nu_log), got {theta_log.shape}")
    # lambda = exp(-nu + i theta),  nu = exp(nu_log), theta = exp(theta_log)
    return np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))


def gamma_from_lambda(lam) -> np.ndarray:
    r"""``gamma = sqrt(1 - |lambda|^2)``, evaluated as ``sqrt(-expm1(2 log|lambda|))`` (no cancellation near ``|lambda| = 1``).

    ``lam (n)`` with ``|lambda| < 1`` -> ``gamma (n)`` real (``gamma = 1`` at ``lambda = 0``).
    """
    lam = as_float_array(lam, "lam", ndim=1)
    r = np.abs(lam)
    if np.any(r >= 1):
        raise ValueError(f"lam: expected |lambda| < 1 (a stable eigenvalue), got {lam[r >= 1][0]}")
    with np.errstate(divide="ignore"):  # log 0 = -inf, expm1(-inf) = -1: gamma = 1 exactly
        # 1 - |lambda|^2 = -expm1(2 log|lambda|)
        return np.sqrt(-np.expm1(2.0 * np.log(r)))


def _real_scalar(value, name: str) -> float:
    """A finite real number (a Python or NumPy scalar), or raise naming ``name``."""
    return float(as_float_array(value, name, ndim=0, allow_complex=False))


def ring_init(N: int, d: int, *, r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * np.pi,
              rng: Optional[np.random.Generator] = None):
    """``(nu_log (n), theta_log (n), gamma_log (n), B (n d), C (d n), D (d))``, ``n = N``, by the ring initialization."""
    N = check_int(N, "N", minimum=1)
    d = check_int(d, "d", minimum=1)
    r_min, r_max, max_phase = (_real_scalar(v, name) for v, name in
                               ((r_min, "r_min"), (r_max, "r_max"), (max_phase, "max_phase")))
    if not (0.0 <= r_min < r_max <= 1.0):
        raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase: expected > 0, got {max_phase}")
    rng = np.random.default_rng(0) if rng is None else rng
    u1 = rng.uniform(size=N)
    u2 = rng.uniform(size=N)
    # |lambda|^2 = u1 (r_max^2 - r_min^2) + r_min^2 ;  nu = -log|lambda| = -1/2 log(|lambda|^2)
    nu_log = np.log(-0.5 * np.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2))
    # theta = max_phase u2
    theta_log = np.log(max_phase * u2)
    gamma_log = np.log(gamma_from_lambda(lambda_from_params(nu_log, theta_log)))
    B = (rng.standard_normal((N, d)) + 1j * rng.standard_normal((N, d))) / np.sqrt(2 * d)
    C = (rng.standard_normal((d, N)) + 1j * rng.standard_normal((d, N))) / np.sqrt(N)
    D = rng.standard_normal(d)
    return nu_log, theta_log, gamma_log, B, C, D


def _lru_args(nu_log, theta_log, gamma_log, B, C, D, u, initial_state, return_final_state):
    """Validate; returns ``lambda (n)``, ``gamma (n)``, ``B (n d)``, ``C (d n)`` in the working complex dtype,
    ``D (d)``, ``u (b l d)``, ``initial_state (b n)`` or None."""
    check_bool(return_final_state, "return_final_state")
    lam = lambda_from_params(nu_log, theta_log)
    n = lam.shape[0]
    gamma_log = as_float_array(gamma_log, "gamma_log", ndim=1, allow_complex=False)
    check_shape(gamma_log, "gamma_log", (n,), "(n), as nu_log")
    u = as_float_array(u, "u", ndim=3, allow_complex=False)
    bsz, L, d = u.shape
    B = as_float_array(B, "B", ndim=2)
    check_shape(B, "B", (n, d), f"(n d) with n = {n} from nu_log and d = {d} from u")
    C = as_float_array(C, "C", ndim=2)
    check_shape(C, "C", (d, n), "(d n)", src="d from u, n from nu_log")
    D = as_float_array(D, "D", ndim=1, allow_complex=False)
    check_shape(D, "D", (d,), "(d)", src="d from u")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=2)
        check_shape(initial_state, "initial_state", (bsz, n), "(b n)", src="b from u, n from nu_log")
    cdt = np.result_type(result_dtype(nu_log, theta_log, gamma_log, B, C, D, u, initial_state), np.complex64)
    x0 = None if initial_state is None else initial_state.astype(cdt)
    return lam.astype(cdt), np.exp(gamma_log).astype(cdt), B.astype(cdt), C.astype(cdt), D, u, x0


def _lru(states, nu_log, theta_log, gamma_log, B, C, D, u, initial_state, return_final_state):
    """The LRU layer around one way of computing the states (``states(lambda, gamma B u, x_{-1})``)."""
    lam, gamma, B, C, D, u, x0 = _lru_args(nu_log, theta_log, gamma_log, B, C, D, u, initial_state,
                                           return_final_state)
    # gamma * (B u_t) for all t: (b l n)
    Bu = gamma * np.einsum("nd,bld->bln", B, u.astype(B.dtype))
    # x_t = lambda x_{t-1} + gamma (B u_t)
    X = states(lam, Bu, x0)
    # y_t = Re(C x_t) + D u_t
    y = (np.einsum("dn,bln->bld", C, X).real + D * u).astype(np.finfo(lam.dtype).dtype, copy=False)
    if return_final_state:
        return y, s5._final_state(X, x0, lam, u.shape[0])
    return y


def recurrent(nu_log, theta_log, gamma_log, B, C, D, u, *, initial_state=None, return_final_state: bool = False):
    r"""The ``recurrent`` view: ``x_t = lambda x_{t-1} + gamma (B u_t)`` step by step, ``y_t = Re(C x_t) + D u_t``.

    Shapes: ``nu_log, theta_log, gamma_log (n)``, ``B (n d)``, ``C (d n)``, ``D (d)``, ``u (b l d)`` -> ``y (b l d)``;
    ``initial_state (b n)``.  ``return_final_state=True`` returns ``(y, x_{l-1})``.
    """
    return _lru(lambda lam, Bu, x0: s5.diag_scan(lam, Bu, x0), nu_log, theta_log, gamma_log, B, C, D, u,
                initial_state, return_final_state)


def scan(nu_log, theta_log, gamma_log, B, C, D, u, *, initial_state=None, return_final_state: bool = False):
    """The ``scan`` view: the same states by the S5 associative scan; arguments as :func:`recurrent`."""
    return _lru(s5._states_scan, nu_log, theta_log, gamma_log, B, C, D, u, initial_state, return_final_state)
