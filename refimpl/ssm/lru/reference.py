r"""LRU, the Linear Recurrent Unit (Orvieto et al. 2023).

Diagonal complex recurrence with the exponential parameterization
``lambda = exp(-exp(nu_log) + i exp(theta_log))`` (so ``|lambda| = exp(-exp(nu_log)) < 1`` for
any real ``nu_log``: stable by construction), gamma normalization
``gamma = exp(gamma_log)``, initialized to ``sqrt(1 - |lambda|^2)``:

``x_t = lambda * x_{t-1} + gamma * (B u_t)``,   ``y_t = Re(C x_t) + D u_t``   (``output="re"``: LRU
keeps the full complex state; no conjugate-pair halving).

Ring initialization: ``|lambda|`` uniform in area on the ring ``r_min <= |lambda| <= r_max``
(``u1 ~ U[0, 1]``, ``nu_log = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2))``), phase uniform on
``[0, max_phase]`` (``theta_log = log(max_phase u2)``); ``B = (N(0,1) + i N(0,1))/sqrt(2 H)``,
``C = (N(0,1) + i N(0,1))/sqrt(N)``, ``D ~ N(0, 1)``.

Shapes: ``nu_log, theta_log, gamma_log (n)`` real, ``B (n h)``, ``C (h n)`` complex, ``D (h)``,
``u (b l h)`` real -> ``y (b l h)`` real.  Views: ``recurrent`` (the literal loop), ``scan`` (the
S5 associative scan with ``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)``), ``numba``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, result_dtype

__all__ = ["lambda_from_params", "gamma_from_lambda", "ring_init", "apply"]


def lambda_from_params(nu_log, theta_log) -> np.ndarray:
    r"""``lambda = exp(-exp(nu_log) + i exp(theta_log))``."""
    nu_log = as_float_array(nu_log, "nu_log", ndim=1, allow_complex=False)
    theta_log = as_float_array(theta_log, "theta_log", ndim=1, allow_complex=False)
    if theta_log.shape != nu_log.shape:
        raise ValueError(f"theta_log: expected shape {nu_log.shape} (same as nu_log), got {theta_log.shape}")
    # lambda = exp(-nu + i theta),  nu = exp(nu_log), theta = exp(theta_log)
    return np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))


def gamma_from_lambda(lam) -> np.ndarray:
    r"""``gamma = sqrt(1 - |lambda|^2)``, evaluated as ``sqrt(-expm1(2 log|lambda|))`` (no cancellation near ``|lambda| = 1``)."""
    lam = np.asarray(lam)
    # 1 - |lambda|^2 = -expm1(2 log|lambda|)
    return np.sqrt(-np.expm1(2.0 * np.log(np.abs(lam))))


def ring_init(N: int, H: int, *, r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * np.pi,
              rng: Optional[np.random.Generator] = None):
    """``(nu_log, theta_log, gamma_log, B, C, D)`` by the ring initialization (see module docstring)."""
    N = check_int(N, "N", minimum=1)
    H = check_int(H, "H", minimum=1)
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
    B = (rng.standard_normal((N, H)) + 1j * rng.standard_normal((N, H))) / np.sqrt(2 * H)
    C = (rng.standard_normal((H, N)) + 1j * rng.standard_normal((H, N))) / np.sqrt(N)
    D = rng.standard_normal(H)
    return nu_log, theta_log, gamma_log, B, C, D


def apply(nu_log, theta_log, gamma_log, B, C, D, u, *, view: str = "recurrent") -> np.ndarray:
    r"""``y_t = Re(C x_t) + D u_t`` with ``x_t = lambda x_{t-1} + gamma (B u_t)``; ``view`` recurrent/scan/numba."""
    check_choice(view, "view", ("recurrent", "scan", "numba"))
    lam = lambda_from_params(nu_log, theta_log)
    n = lam.shape[0]
    gamma_log = as_float_array(gamma_log, "gamma_log", ndim=1, allow_complex=False)
    if gamma_log.shape != (n,):
        raise ValueError(f"gamma_log: expected shape ({n},), got {gamma_log.shape}")
    u = as_float_array(u, "u", ndim=3, allow_complex=False)
    bsz, L, h = u.shape
    B = as_float_array(B, "B", ndim=2)
    if B.shape != (n, h):
        raise ValueError(f"B: expected shape ({n}, {h}), got {B.shape}")
    C = as_float_array(C, "C", ndim=2)
    if C.shape != (h, n):
        raise ValueError(f"C: expected shape ({h}, {n}), got {C.shape}")
    D = as_float_array(D, "D", ndim=1, allow_complex=False)
    if D.shape != (h,):
        raise ValueError(f"D: expected shape ({h},), got {D.shape}")
    cdt = np.result_type(result_dtype(nu_log, theta_log, gamma_log, B, C, D, u), np.complex64)
    lam = lam.astype(cdt)
    gamma = np.exp(gamma_log).astype(cdt)
    # gamma * (B u_t) for all t: (b l n)
    Bu = gamma * np.einsum("nh,blh->bln", B.astype(cdt), u.astype(cdt))
    if view == "recurrent":
        X = np.zeros_like(Bu)
        x = np.zeros((bsz, n), dtype=cdt)
        for t in range(L):
            # x_t = lambda x_{t-1} + gamma (B u_t)
            x = lam * x + Bu[:, t]
            X[:, t] = x
    elif view == "scan":
        from refimpl.ssm.s5.reference import associative_scan, binary_op

        _, xs = associative_scan(binary_op, np.broadcast_to(lam, (L, bsz, n)).copy(), np.moveaxis(Bu, 1, 0))
        X = np.moveaxis(xs, 0, 1)
    else:
        from refimpl.ssm import structured_numba

        X = structured_numba.diag_scan(np.broadcast_to(lam, (L, n)), Bu)
    # y_t = Re(C x_t) + D u_t
    y = np.einsum("hn,bln->blh", C.astype(cdt), X).real + D * u
    return y.astype(np.finfo(cdt).dtype, copy=False)
