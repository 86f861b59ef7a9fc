r"""Statistical oracles for Performer random features (exact moments, Lemma 2, derived thresholds).

Nothing here imports :mod:`refimpl.attention`.  Every number comes from a closed form evaluated in
mpmath (50 digits).

The estimator
-------------
With random vectors ``w_1..w_m`` (``m`` as in the paper; the glossary's ``f``) the kernel estimate ``phi(x).phi(y)`` is the mean of ``m``
*units* ``Y_i`` (one per random vector):

* positive:   ``Y = exp(-(|x|^2+|y|^2)/2) exp(w.s)``,   ``s = x + y``;
* hyperbolic: ``Y = exp(-(|x|^2+|y|^2)/2) cosh(w.s)``  (the ``[exp(Wx), exp(-Wx)]`` pair of one ``w``);
* trig:       ``Y = exp((|x|^2+|y|^2)/2) cos(w.z)``,  ``z = x - y`` (the ``[sin, cos]`` pair of one ``w``).

Each ``w`` is marginally ``N(0, I_d)`` ("chi" norms, iid or orthogonal), or ``sqrt(d) u`` with
``u`` uniform on the sphere ("fixed" norms).  All moments follow from
``M(t) = E[exp(t w.s)] = exp(t^2 |s|^2 / 2)`` (Gaussian) or ``0F1(; d/2; t^2 d |s|^2 / 4)`` (sphere,
Bessel), and ``C(t) = E[cos(t w.z)] = exp(-t^2 |z|^2/2)`` or ``0F1(; d/2; -t^2 d |z|^2/4)``, through
``cosh^k = 2^-k sum_j C(k,j) exp((k-2j).)`` and ``cos^k = 2^-k sum_j C(k,j) cos((k-2j).)``:
:func:`unit_raw_moment`.  In particular ``E[Y] = exp(x.y)`` for every Gaussian variant (unbiased);
the "fixed"-norm mean is ``0F1`` instead (biased).

Lemma 2 (Choromanski et al. 2021), iid Gaussian ``w``, ``SM = exp(x.y)`` -- :func:`lemma2_mse`:

* positive:  ``MSE = (1/m) exp(|x+y|^2) SM^2 (1 - exp(-|x+y|^2))``;
* trig:      ``MSE = (1/(2m)) exp(|x+y|^2) SM^-2 (1 - exp(-|x-y|^2))^2``;
* hyperbolic (derived here): ``Var cosh(w.s) = (1 + exp(2|s|^2))/2 - exp(|s|^2) = (exp(|s|^2) - 1)^2/2``, so
  ``Var Y = exp(-(|x|^2+|y|^2)) (exp(|s|^2)-1)^2/2`` and with ``exp(-(|x|^2+|y|^2)) = SM^2 exp(-|s|^2)``:
  ``MSE = (1/(2m)) exp(|x+y|^2) SM^2 (1 - exp(-|x+y|^2))^2``
  -- the positive MSE times ``(1 - exp(-|x+y|^2))/2 < 1``.

Derived thresholds (:func:`mean_threshold`, :func:`variance_threshold`)
-----------------------------------------------------------------------
The estimator is heavy-tailed (log-normal), so no Gaussian approximation is used.  For ``B``
independent zero-mean *blocks* ``Z_b``, expanding ``E[(sum_b Z_b)^{2r}]`` leaves only the terms in
which every block appears at least twice, so

``E[(sum Z_b)^{2r}] <= sum_{partitions of 2r into parts >= 2} (2r)! / (prod k_j! prod mult!) B^(p) prod E|Z|^{k_j}``

(``B^(p)`` the falling factorial, ``p`` the number of parts), and Markov's inequality gives
``P(|sum Z_b| >= t) <= E[(sum Z_b)^{2r}] / t^{2r}``; we solve for ``t`` at the allotted false-failure
probability ``alpha``, for each ``2r`` in ``{2, 4, 6, 8, 10}``, and take the smallest.  That is
valid: the threshold depends on the inputs only (never on the sampled data), so it is one fixed
number, and Markov's inequality at the minimizing ``r`` bounds its false-failure probability by
``alpha``.

* iid features: a block is one unit, moments exact.
* orthogonal features: a block is one orthogonal group of ``d`` vectors (dependent inside, independent
  across groups); by Minkowski ``||sum_{i in block} (Y_i - mu)||_p <= d ||Y - mu||_p`` (each ``w_i`` is
  marginally Gaussian), valid whatever the dependence.
* odd absolute moments: Lyapunov, ``E|X|^p <= (E X^{p+1})^{p/(p+1)}``.
* sums over keys (:func:`kernel_sum_threshold`, the attention sums ``sum_j c_j phi(x).phi(y_j)``): one random vector
  gives the unit ``U = sum_j c_j Y(x, y_j)``; Minkowski, ``||U - EU||_p <= sum_j |c_j| ||Y_j - mu_j||_p``, bounds its
  central moments by the exact moments of each pair whatever their dependence.

FAVOR+ outputs against exact softmax attention (the report's ladder)
--------------------------------------------------------------------
Positive features have closed-form cross moments (below :func:`positive_kernel`): ``Cov(Y_ij, Y_i'j') =
K_ij K_i'j' (exp(s_ij.s_i'j') - 1)`` (Lemma 2 on the diagonal) and the exact fourth moment of a sum over keys.  From
them, :func:`favor_output_bound` bounds the median over seeds of the normalized output's error (Markov on the exact
first-order error, Maurer's inequality for the denominators, a binomial tail for the median), and
:func:`favor_sum_moments` + :func:`median_of_means_interval` + :func:`slope_band` give the acceptance band of the
``1/sqrt(m)`` rate of the unbiased (unnormalized) sums, whose MSE is exactly ``c/m``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Sequence

import mpmath
import numpy as np

DPS = 50
FALSE_FAILURE_BUDGET = 1e-6  # total, over every statistical test of the attention family
ORDERS = (2, 4, 6, 8, 10)

__all__ = [
    "FALSE_FAILURE_BUDGET",
    "unit_raw_moment",
    "exact_mean",
    "unit_central_moments",
    "lemma2_mse",
    "moment_mse",
    "partition_moment_bound",
    "mean_threshold",
    "kernel_sum_threshold",
    "variance_threshold",
    "unit_values",
    "positive_kernel",
    "positive_pair_covariance",
    "positive_sum_covariance",
    "positive_sum_fourth_moments",
    "positive_denominator_second_moment",
    "median_exceedance",
    "favor_output_bound",
    "favor_sum_moments",
    "median_of_means_interval",
    "slope_band",
]


def _mp(x):
    return mpmath.mpf(float(x))


def _vec(x):
    return [_mp(a) for a in np.asarray(x, dtype=np.float64).ravel()]


def _dot(a, b):
    return mpmath.fsum(p * q for p, q in zip(a, b))


def unit_raw_moment(kind: str, x, y, k: int, norms: str = "chi"):
    r"""``E[Y^k]`` for one random vector (mpmath ``mpf``); see the module docstring."""
    xm, ym = _vec(x), _vec(y)
    d = len(xm)
    with mpmath.workdps(DPS):
        nx, ny = _dot(xm, xm), _dot(ym, ym)
        s = [a + b for a, b in zip(xm, ym)]
        z = [a - b for a, b in zip(xm, ym)]
        s2, z2 = _dot(s, s), _dot(z, z)

        def M(t):  # E exp(t w.s)
            if norms == "chi":
                return mpmath.exp(t * t * s2 / 2)
            return mpmath.hyp0f1(mpmath.mpf(d) / 2, t * t * d * s2 / 4)

        def Cc(t):  # E cos(t w.z)
            if norms == "chi":
                return mpmath.exp(-t * t * z2 / 2)
            return mpmath.hyp0f1(mpmath.mpf(d) / 2, -t * t * d * z2 / 4)

        if kind == "positive":
            return mpmath.exp(-k * (nx + ny) / 2) * M(k)
        if kind == "hyperbolic":
            c = mpmath.exp(-k * (nx + ny) / 2)
            return c * mpmath.fsum(mpmath.binomial(k, j) * M(k - 2 * j) for j in range(k + 1)) / mpmath.mpf(2) ** k
        if kind == "trig":
            c = mpmath.exp(k * (nx + ny) / 2)
            return c * mpmath.fsum(mpmath.binomial(k, j) * Cc(k - 2 * j) for j in range(k + 1)) / mpmath.mpf(2) ** k
        raise ValueError(f"kind: expected 'positive', 'hyperbolic' or 'trig', got {kind!r}")


def exact_mean(kind: str, x, y, norms: str = "chi") -> float:
    """``E[phi(x).phi(y)]``: ``exp(x.y)`` for chi norms; the 0F1 form for fixed norms."""
    with mpmath.workdps(DPS):
        return float(unit_raw_moment(kind, x, y, 1, norms))


def unit_central_moments(kind: str, x, y, K: int, norms: str = "chi") -> List:
    r"""``[E(Y-mu)^p for p = 0..K]`` (mpmath), from raw moments by the binomial expansion at 50 digits."""
    with mpmath.workdps(DPS):
        raw = [unit_raw_moment(kind, x, y, j, norms) for j in range(K + 1)]
        mu = raw[1]
        return [mpmath.fsum(mpmath.binomial(p, j) * raw[j] * (-mu) ** (p - j) for j in range(p + 1))
                for p in range(K + 1)]


def lemma2_mse(kind: str, x, y, m: int) -> float:
    """Closed-form MSE of the m-vector iid estimator (Lemma 2; hyperbolic derived in the module docstring)."""
    xm, ym = _vec(x), _vec(y)
    with mpmath.workdps(DPS):
        s = [a + b for a, b in zip(xm, ym)]
        z = [a - b for a, b in zip(xm, ym)]
        s2, z2 = _dot(s, s), _dot(z, z)
        SM = mpmath.exp(_dot(xm, ym))
        if kind == "positive":
            v = mpmath.exp(s2) * SM ** 2 * (1 - mpmath.exp(-s2)) / m
        elif kind == "trig":
            v = mpmath.exp(s2) * SM ** -2 * (1 - mpmath.exp(-z2)) ** 2 / (2 * m)
        elif kind == "hyperbolic":
            v = mpmath.exp(s2) * SM ** 2 * (1 - mpmath.exp(-s2)) ** 2 / (2 * m)
        else:
            raise ValueError(f"kind: unknown {kind!r}")
        return float(v)


def moment_mse(kind: str, x, y, m: int, norms: str = "chi") -> float:
    """``Var(Y)/m`` from the exact moments (an independent route to Lemma 2 for iid vectors)."""
    with mpmath.workdps(DPS):
        return float(unit_central_moments(kind, x, y, 2, norms)[2] / m)


@lru_cache(maxsize=None)
def _partitions(n: int, min_part: int = 2) -> tuple:
    """Integer partitions of ``n`` into parts ``>= min_part`` (non-increasing tuples)."""
    out = []

    def rec(rem, maxp, cur):
        if rem == 0:
            out.append(tuple(cur))
            return
        for p in range(min(rem, maxp), min_part - 1, -1):
            rec(rem - p, p, cur + [p])

    rec(n, n, [])
    return tuple(out)


def partition_moment_bound(abs_moments: Sequence, B: int, order: int):
    r"""Upper bound on ``E[(sum_{b=1}^B Z_b)^order]`` for iid zero-mean ``Z`` with ``E|Z|^p <= abs_moments[p]``."""
    with mpmath.workdps(DPS):
        total = mpmath.mpf(0)
        for parts in _partitions(order):
            p = len(parts)
            if p > B:
                continue
            coef = mpmath.factorial(order)
            for kp in parts:
                coef /= mpmath.factorial(kp)
            for kp in set(parts):
                coef /= mpmath.factorial(parts.count(kp))
            fall = mpmath.mpf(1)
            for i in range(p):
                fall *= (B - i)
            prod = mpmath.mpf(1)
            for kp in parts:
                prod *= abs_moments[kp]
            total += coef * fall * prod
        return total


def _abs_from_even(central: Sequence, K: int) -> List:
    """``E|X|^p`` bounds for ``p <= K`` from even central moments (Lyapunov for odd ``p``)."""
    out = [mpmath.mpf(1)] + [None] * K
    for p in range(1, K + 1):
        if p % 2 == 0:
            out[p] = abs(central[p])
        else:
            out[p] = abs(central[p + 1]) ** (mpmath.mpf(p) / (p + 1))
    return out


def _markov_threshold(absZ: Sequence, B: int, n_vectors: int, alpha: float, orders=ORDERS):
    r"""``min_r (bound_r / alpha)^(1/2r) / n_vectors`` over ``2r`` in ``orders``, for a sum of ``B`` iid zero-mean blocks
    with ``E|Z|^p <= absZ[p]`` (:func:`partition_moment_bound` + Markov at order ``2r``)."""
    best = mpmath.inf
    for order in orders:
        bnd = partition_moment_bound(absZ, B, order)
        t = (bnd / mpmath.mpf(alpha)) ** (mpmath.mpf(1) / order) / n_vectors
        best = min(best, t)
    return best


@lru_cache(maxsize=4096)
def _unit_abs_norms(kind: str, x: tuple, y: tuple, norms: str) -> tuple:
    """``(||Y - mu||_p for p = 0..K)`` of one unit (``K = max(ORDERS) + 1``), from the exact central moments."""
    K = max(ORDERS) + 1
    with mpmath.workdps(DPS):
        absY = _abs_from_even(unit_central_moments(kind, x, y, K + 1, norms), K)
        return tuple(mpmath.mpf(1) if p == 0 else absY[p] ** (mpmath.mpf(1) / p) for p in range(K + 1))


def kernel_sum_threshold(kind: str, x, ys, weights, n_vectors: int, alpha: float, *, block: int = 1,
                         norms: str = "chi") -> float:
    r"""``t`` with ``P(|sum_j c_j phi(x).phi(y_j) - sum_j c_j E[phi(x).phi(y_j)]| >= t) <= alpha``.

    ``x (n,)``, ``ys (s, n)``, ``weights c (s,)``; an estimator of ``n_vectors`` random vectors.  The sum is the mean
    of ``n_vectors`` units ``U = sum_j c_j Y(x, y_j)`` (one per random vector, all ``j`` sharing it); Minkowski,
    ``||U - EU||_p <= sum_j |c_j| ||Y(x, y_j) - mu_j||_p``, bounds the unit's absolute central moments by the exact
    moments of each pair, whatever the dependence between the ``j``; then blocks and Markov exactly as in
    :func:`mean_threshold` (of which this is the one-term case ``s = 1, c = 1``).
    """
    if n_vectors % block:
        raise ValueError(f"n_vectors: expected a multiple of block={block}, got {n_vectors}")
    ys = np.atleast_2d(np.asarray(ys, dtype=np.float64))
    c = np.asarray(weights, dtype=np.float64).ravel()
    if c.shape[0] != ys.shape[0]:
        raise ValueError(f"weights: expected shape ({ys.shape[0]},) matching ys (s, n), got {c.shape}")
    K = max(ORDERS) + 1
    xt = tuple(float(a) for a in np.asarray(x, dtype=np.float64).ravel())
    with mpmath.workdps(DPS):
        normU = [mpmath.mpf(0)] * (K + 1)
        for y, cj in zip(ys, c):
            if cj == 0:
                continue
            nY = _unit_abs_norms(kind, xt, tuple(float(a) for a in y), norms)
            for p in range(1, K + 1):
                normU[p] += abs(mpmath.mpf(float(cj))) * nY[p]
        if all(u == 0 for u in normU[1:]):
            return 0.0
        # Minkowski within an orthogonal block: ||Z||_p <= block ||U - EU||_p
        absZ = [mpmath.mpf(1)] + [(mpmath.mpf(block) * normU[p]) ** p for p in range(1, K + 1)]
        return float(_markov_threshold(absZ, n_vectors // block, n_vectors, alpha))


def mean_threshold(kind: str, x, y, n_vectors: int, alpha: float, *, block: int = 1, norms: str = "chi") -> float:
    r"""``t`` with ``P(|phi(x).phi(y) - E| >= t) <= alpha`` for an estimator of ``n_vectors`` random vectors.

    ``block = 1``: iid vectors (exact unit moments).  ``block = d``: orthogonal groups of ``block``
    vectors, ``n_vectors`` a multiple of ``block`` (Minkowski bound within a group).
    The rule: for each order ``2r`` in ``ORDERS`` compute ``t_r = (bound_r / alpha)^(1/2r) / n_vectors``;
    return ``min_r t_r``.  The threshold is a function of the inputs only (fixed before any sampling)
    and the Markov inequality at the minimizing ``r`` bounds its false-failure probability by ``alpha``.
    """
    if n_vectors % block:
        raise ValueError(f"n_vectors: expected a multiple of block={block}, got {n_vectors}")
    K = max(ORDERS) + 1
    with mpmath.workdps(DPS):
        cm = unit_central_moments(kind, x, y, K + 1, norms)
        absY = _abs_from_even(cm, K)
        absZ = [a * mpmath.mpf(block) ** p for p, a in enumerate(absY)]  # Minkowski: ||Z||_p <= block ||Y-mu||_p
        return float(_markov_threshold(absZ, n_vectors // block, n_vectors, alpha))


def variance_threshold(kind: str, x, y, m: int, R: int, alpha: float, *, block: int = 1, norms: str = "chi") -> float:
    r"""``t`` with ``P(|V - MSE| >= t) <= alpha`` for ``V = (1/R) sum_r (E_r - mu)^2``, ``E_r`` estimators of ``m`` vectors.

    ``block = 1`` (iid): ``E_r - mu`` has cumulants ``kappa_j(Y) / m^(j-1)``, converted to exact central
    moments; ``W_r = (E_r - mu)^2 - MSE`` has moments from those.  ``block = m`` (one orthogonal group per
    estimator): ``||E_r - mu||_p <= ||Y - mu||_p`` (Minkowski on an average) and ``MSE`` is replaced by its
    upper bound ``Var(Y)`` in the centering of ``|W|`` moments (``||W - EW||_p <= ||(E-mu)^2||_p + EW``).
    """
    ORD = (2, 4, 6)
    K = 2 * (max(ORD) + 2)
    with mpmath.workdps(DPS):
        cmY = unit_central_moments(kind, x, y, K + 2, norms)
        if block == 1:
            # cumulants of Y from its central moments (mean 0 after centering)
            kap = [mpmath.mpf(0)] * (K + 1)
            mom = cmY
            for n_ in range(1, K + 1):
                kap[n_] = mom[n_] - mpmath.fsum(mpmath.binomial(n_ - 1, j - 1) * kap[j] * mom[n_ - j] for j in range(1, n_))
            kapE = [kap[j] / mpmath.mpf(m) ** (j - 1) if j >= 2 else mpmath.mpf(0) for j in range(K + 1)]
            momE = [mpmath.mpf(1)] + [mpmath.mpf(0)] * K
            for n_ in range(1, K + 1):
                momE[n_] = mpmath.fsum(mpmath.binomial(n_ - 1, j - 1) * kapE[j] * momE[n_ - j] for j in range(1, n_ + 1))
            mse = momE[2]
            # raw moments of D = (E - mu)^2: E D^j = momE[2j]; central moments of W = D - mse
            Kw = max(ORD) + 1
            cW = [mpmath.fsum(mpmath.binomial(p, j) * momE[2 * j] * (-mse) ** (p - j) for j in range(p + 1))
                  for p in range(Kw + 2)]
            absW = _abs_from_even(cW, Kw)
        else:
            absY = _abs_from_even(cmY, K)
            mse_ub = cmY[2]
            Kw = max(ORD) + 1
            # ||W||_p <= ||D||_p + E D <= ||E - mu||_{2p}^2 + Var Y
            absW = [mpmath.mpf(1)] + [(absY[2 * p] ** (mpmath.mpf(1) / p) + mse_ub) ** p for p in range(1, Kw + 1)]
        return float(_markov_threshold(absW, R, R, alpha, orders=ORD))


def unit_values(kind: str, phi_x: np.ndarray, phi_y: np.ndarray) -> np.ndarray:
    r"""The per-vector units ``Y_i`` from feature vectors of ``m`` random vectors (``n = m`` or ``2m``).

    positive: ``Y_i = m phi_i(x) phi_i(y)``; hyperbolic/trig: ``Y_i = m (phi_i phi_i + phi_{m+i} phi_{m+i})``.
    ``mean(Y) = phi(x).phi(y)``.
    """
    px, py = np.asarray(phi_x, dtype=np.float64), np.asarray(phi_y, dtype=np.float64)
    if kind == "positive":
        m = px.shape[-1]
        return m * px * py
    m = px.shape[-1] // 2
    return m * (px[..., :m] * py[..., :m] + px[..., m:] * py[..., m:])


# ---------------------------------------------------------------------------------------------------------------
# FAVOR+ attention outputs (the report's approximation ladder): closed forms for positive features
# ---------------------------------------------------------------------------------------------------------------
#
# Queries x_i (l, n) and keys y_j (s, n) are already scaled (x = sqrt(scale) q), K_ij = exp(x_i.y_j), s_ij = x_i + y_j.
# One Gaussian w gives the units Y_ij = exp(w.s_ij - (|x_i|^2 + |y_j|^2)/2) = K_ij Z_ij, Z_ij = exp(w.s_ij - |s_ij|^2/2),
# and from E exp(w.a) = exp(|a|^2/2):  E[prod_{k in S} Z_k] = exp(sum_{k<k' in S} s_k.s_k').  Hence
#
#   Cov(Y_ij, Y_i'j') = K_ij K_i'j' (exp(s_ij.s_i'j') - 1)          (Lemma 2 is the diagonal i=i', j=j')
#
# and for a unit u = sum_j a_j (Z_ij - 1) (one query i, a_j = c_j K_ij, A = sum_j a_j, H = exp(s_ij.s_ij'))
#
#   E u^4 = T4 - 4 A T3 + 6 A^2 T2 - 3 A^4,   T2 = a'Ha,  T3 = sum a a a H H H,  T4 = sum_{j1..j4} prod a prod_{6 pairs} H
#
# (inclusion-exclusion over which of the four factors contribute Z or -1).  These are float64 evaluations of closed
# forms (no sampling); they feed bounds, so their rounding (relative 1e-13 at these sizes) is immaterial.


def positive_kernel(xq, xk):
    """``K (l s) = exp(x_i.y_j)`` and ``s_ij (l s n) = x_i + y_j``."""
    xq, xk = np.asarray(xq, dtype=np.float64), np.asarray(xk, dtype=np.float64)
    return np.exp(xq @ xk.T), xq[:, None, :] + xk[None, :, :]


def positive_pair_covariance(xq, xk):
    """``Cov(Y_ij, Y_i'j') = K_ij K_i'j' (exp(s_ij.s_i'j') - 1)``, shape ``(l, s, l, s)``, for one Gaussian vector."""
    K, S = positive_kernel(xq, xk)
    return K[:, :, None, None] * K[None, None, :, :] * np.expm1(np.einsum("ijd,kld->ijkl", S, S))


def positive_sum_covariance(xq, xk, c):
    r"""Covariance ``(l p, l p)`` of the units ``u_ip = sum_j c_ijp Y_ij`` of one Gaussian vector; ``c (l s p)``."""
    c = np.asarray(c, dtype=np.float64)
    l, _, p = c.shape
    C = positive_pair_covariance(xq, xk)
    return np.einsum("ijp,ijkl,klq->ipkq", c, C, c, optimize=True).reshape(l * p, l * p)


def positive_sum_fourth_moments(xq, xk, c):
    r"""``E (u_ip - E u_ip)^4`` ``(l p)`` for the units ``u_ip = sum_j c_ijp Y_ij`` (see the closed form above)."""
    c = np.asarray(c, dtype=np.float64)
    K, S = positive_kernel(xq, xk)
    l, s, p = c.shape
    out = np.empty((l, p))
    for i in range(l):
        H = np.exp(S[i] @ S[i].T)  # (s s)
        for e in range(p):
            a = c[i, :, e] * K[i]
            A = a.sum()
            T2 = a @ H @ a
            T3 = np.einsum("x,y,xy,xz,yz,z->", a, a, H, H, H, a, optimize=True)
            B = a[None, None, :] * H[:, None, :] * H[None, :, :]  # B_xyj = a_j H_xj H_yj
            T4 = np.einsum("x,y,xy,xyj,jk,xyk->", a, a, H, B, H, B, optimize=True)
            out[i, e] = T4 - 4 * A * T3 + 6 * A ** 2 * T2 - 3 * A ** 4
    return out


def positive_denominator_second_moment(xq, xk):
    """``E[U_i^2]`` ``(l,)`` for the denominator unit ``U_i = sum_j Y_ij`` (raw): ``sum_jj' K_ij K_ij' exp(s_ij.s_ij')``."""
    K, S = positive_kernel(xq, xk)
    return np.einsum("ij,ijk,ik->i", K, np.exp(np.einsum("ijd,ikd->ijk", S, S)), K)


def median_exceedance(G: int, beta: float) -> float:
    """``P(Bin(G, beta) >= ceil(G/2))``: the median of ``G`` iid copies exceeds a level each exceeds w.p. ``<= beta``."""
    from scipy.stats import binom

    return float(binom.sf((G + 1) // 2 - 1, G, beta))


@lru_cache(maxsize=None)
def _largest_beta(G: int, alpha: float, inflate: float) -> float:
    """The largest ``beta`` (bisection to 1e-6, rounded down) with ``median_exceedance(G, inflate * beta) <= alpha``."""
    lo, hi = 0.0, 0.5 / inflate
    if median_exceedance(G, inflate * 1e-6) > alpha:
        raise ValueError(f"G: {G} replicates cannot reach a false-failure probability of {alpha}")
    for _ in range(40):
        mid = (lo + hi) / 2
        if median_exceedance(G, inflate * mid) <= alpha:
            lo = mid
        else:
            hi = mid
    return math.floor(lo * 1e6) / 1e6


def favor_output_bound(xq, xk, v, m: int, G: int, alpha: float, *, block: int = 1) -> dict:
    r"""A level ``t`` for the median over ``G`` seeds of ``||o - o*||_F^2`` (normalized FAVOR+, positive features).

    ``o*_i = sum_j K_ij v_j / D*_i`` (exact softmax attention, ``D*_i = sum_j K_ij``); ``o`` the estimator with ``m``
    random vectors (``block = 1`` iid Gaussian; ``block = n`` orthogonal groups of ``n`` with chi norms, ``m`` a
    multiple of ``n``).  For a correct estimator ``P(median > t) <= alpha``.  Derivation:

    * ``o_i - o*_i = E^_i / D^_i`` with ``E^_i = sum_j K^_ij (v_j - o*_i)``, an average of ``m`` zero-mean units
      ``u_ip = sum_j c_ijp Y_ij``, ``c_ijp = v_jp - o*_ip``; ``E||E^_i||^2 = tr Var(u_i) / m`` for iid vectors
      (exact, from the pair covariances), ``<= block tr Var(u_i) / m`` for orthogonal groups (Minkowski).
    * ``D^_i`` is an average of nonnegative units, so Maurer's inequality (the lower tail of a sum of independent
      nonnegative variables, ``P(ES - S >= t) <= exp(-t^2 / (2 sum E X^2))``) gives
      ``P(D^_i < (1 - delta_i) D*_i) <= exp(-m delta_i^2 D*_i^2 / (2 block E U_i^2))``; ``delta_i`` is set so that the
      union over the ``l`` queries is ``beta / 10``.
    * Off that event ``||o - o*||^2 <= T' = sum_i ||E^_i||^2 / ((1 - delta_i) D*_i)^2``, so by Markov one seed exceeds
      ``t = E T' / beta`` with probability ``<= 1.1 beta``, and the median of ``G`` independent seeds exceeds it with
      probability ``<= P(Bin(G, 1.1 beta) >= G/2)``; ``beta`` is the largest that keeps this ``<= alpha``.

    Returns ``dict(t=..., beta=..., delta=(l,), rms=sqrt(E T'|delta=0))`` (``t = inf`` when some ``delta_i >= 1``:
    ``m`` is too small for the bound).
    """
    if m % block:
        raise ValueError(f"m: expected a multiple of block={block}, got {m}")
    xq, xk, v = (np.asarray(a, dtype=np.float64) for a in (xq, xk, v))
    l = xq.shape[0]
    K, _ = positive_kernel(xq, xk)
    D = K.sum(axis=1)
    o = (K @ v) / D[:, None]
    c = v[None, :, :] - o[:, None, :]  # c_ijp = v_jp - o*_ip
    var_u = np.diag(positive_sum_covariance(xq, xk, c)).reshape(l, -1).sum(axis=1)  # tr Var(u_i)
    beta = _largest_beta(G, alpha, 1.1)
    # Maurer: l exp(-m delta^2 D*^2 / (2 block E U^2)) = beta / 10
    delta = np.sqrt(2 * block * positive_denominator_second_moment(xq, xk) * math.log(10 * l / beta) / m) / D
    rms = math.sqrt(block * float(np.sum(var_u / D ** 2)) / m)
    if np.any(delta >= 1):
        return dict(t=math.inf, beta=beta, delta=delta, rms=rms)
    ET = block * float(np.sum(var_u / ((1 - delta) * D) ** 2)) / m
    return dict(t=ET / beta, beta=beta, delta=delta, rms=rms)


def favor_sum_moments(xq, xk, c, ms: Sequence[int]) -> list:
    r"""``[(E T, E T^2) for m in ms]`` for ``T = ||N^ - N*||_F^2``, ``N^_ip = sum_j K^_ij c_jp``, ``m`` iid Gaussian vectors.

    ``N^ - N*`` is the mean of ``m`` iid zero-mean vectors ``u`` (``u_ip = sum_j c_jp (Y_ij - K_ij)``, covariance
    ``Sigma``), so ``E T = tr Sigma / m`` (Lemma 2 with the pair covariances) and, pairing the four indices of
    ``E||sum_r u_r||^4``, ``E T^2 = (m E||u||^4 + m (m-1) ((tr Sigma)^2 + 2 tr Sigma^2)) / m^4`` with
    ``E||u||^4 <= (sum_a ||u_a||_4^2)^2`` (Minkowski on ``sum_a u_a^2``) and ``||u_a||_4`` exact.  ``c (s p)``.
    """
    c = np.asarray(c, dtype=np.float64)
    l = np.asarray(xq).shape[0]
    cc = np.broadcast_to(c[None], (l,) + c.shape)
    Sig = positive_sum_covariance(xq, xk, cc)
    tr, tr2 = float(np.trace(Sig)), float(np.sum(Sig * Sig))
    Eu4 = float(np.sum(np.sqrt(positive_sum_fourth_moments(xq, xk, cc)))) ** 2
    return [(tr / m, (m * Eu4 + m * (m - 1) * (tr ** 2 + 2 * tr2)) / m ** 4) for m in ms]


def median_of_means_interval(mean: float, second: float, R: int, alpha: float) -> tuple:
    r"""``(lo, hi, G)``: the median of ``G`` group means of ``R`` iid copies of ``T`` lies in ``[lo, hi]`` w.p. ``>= 1 - alpha``.

    ``mean = E T``, ``second >= E T^2``.  Each group mean of ``R/G`` copies has variance ``<= (second - mean^2) G/R``;
    Cantelli bounds each one-sided excursion by ``beta``; the median leaves the interval only if ``G/2`` group means
    do on one side: ``2 P(Bin(G, beta) >= G/2) <= alpha``.  ``G`` (a divisor of ``R``) and ``beta`` minimize the width.
    """
    sd = math.sqrt(max(second - mean ** 2, 0.0))
    best = (math.inf, None)
    for G in range(1, R + 1):
        if R % G:
            continue
        try:
            beta = _largest_beta(G, alpha / 2, 1.0)
        except ValueError:
            continue
        half = sd * math.sqrt((1 - beta) / (beta * (R // G)))  # Cantelli: P(M - EM >= h) <= var / (var + h^2) = beta
        best = min(best, (half, G), key=lambda z: z[0])
    half, G = best
    if G is None:
        raise ValueError(f"R: {R} copies cannot reach a false-failure probability of {alpha}")
    return mean - half, mean + half, G


def slope_band(ms: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> tuple:
    r"""Range of the least-squares slope of ``log y_k`` on ``log m_k`` when each ``y_k`` lies in ``[lo_k, hi_k]``.

    The slope is ``sum_k a_k log y_k`` with ``a_k = (x_k - xbar) / sum (x - xbar)^2``, ``x = log m``: monotone in each
    ``y_k``, so its extremes take ``lo_k`` or ``hi_k`` by the sign of ``a_k``.
    """
    x = np.log(np.asarray(ms, dtype=np.float64))
    a = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    llo, lhi = np.log(np.asarray(lo, dtype=np.float64)), np.log(np.asarray(hi, dtype=np.float64))
    return float(np.sum(np.where(a > 0, a * llo, a * lhi))), float(np.sum(np.where(a > 0, a * lhi, a * llo)))
