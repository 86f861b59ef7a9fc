r"""Statistical oracles for Performer random features (exact moments, Lemma 2, derived thresholds).

Nothing here imports :mod:`refimpl.attention`.  Every number comes from a closed form evaluated in
mpmath (50 digits).

The estimator
-------------
With random vectors ``w_1..w_m`` the kernel estimate ``phi(x).phi(y)`` is the mean of ``m``
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
    "variance_threshold",
    "unit_values",
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
    B = n_vectors // block
    K = max(ORDERS) + 1
    with mpmath.workdps(DPS):
        cm = unit_central_moments(kind, x, y, K + 1, norms)
        absY = _abs_from_even(cm, K)
        absZ = [a * mpmath.mpf(block) ** p for p, a in enumerate(absY)]  # Minkowski: ||Z||_p <= block ||Y-mu||_p
        best = mpmath.inf
        for order in ORDERS:
            bnd = partition_moment_bound(absZ, B, order)
            t = (bnd / mpmath.mpf(alpha)) ** (mpmath.mpf(1) / order) / n_vectors
            best = min(best, t)
        return float(best)


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
        best = mpmath.inf
        for order in ORD:
            bnd = partition_moment_bound(absW, R, order)
            t = (bnd / mpmath.mpf(alpha)) ** (mpmath.mpf(1) / order) / R
            best = min(best, t)
        return float(best)


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
