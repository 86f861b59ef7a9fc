r"""S4: the NPLR/DPLR form of the HiPPO matrices and the convolution kernel by the generating function.

NPLR / DPLR (Gu, Goel, Re 2022, Thm 1 and Sec. 3)
-------------------------------------------------
Every HiPPO matrix (S4 sign, ``x' = A x + B u``) is normal plus low rank:
``A = S - P P^T`` with ``S`` normal, in fact ``S = c I + K``, ``K`` skew-symmetric:

* legs: ``P_n = sqrt(n + 1/2)``, ``S = -1/2 I + K`` (rank 1)
* lagt: ``P_n = sqrt(1/2)``, ``S = -1/2 I + K`` (rank 1)
* legt: ``P = [r_even, r_odd] / sqrt(theta)`` with ``r_n = sqrt(2n+1)`` zeroed at odd / even ``n``,
  ``S = K`` (rank 2)
* fout: ``P = B / sqrt(theta)``, ``S = K`` (rank 1)

``K`` is diagonalized by a *unitary* ``V`` (``-i K`` is Hermitian: ``numpy.linalg.eigh``), so
``A = V (Lambda - P~ Q~^*) V^*`` with ``Lambda = c + i w``, ``P~ = Q~ = V^* P``, ``B~ = V^* B``,
all in float64 / complex128.  :func:`nplr` asserts the reconstruction within a derived bound
and reports the eigenvector condition numbers: ``cond(V) = 1`` for the normal part, while the
eigenvectors of ``A`` itself (:func:`eigenvector_condition`) are exponentially ill-conditioned
for LegS -- why diagonalizing LegS directly fails.

Kernel by the generating function (bilinear)
--------------------------------------------
``K_k = C~ A_bar^k B_bar`` (``k < L``), ``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``,
``B_bar = (I - dt/2 A)^{-1} dt B``.  Its truncated generating function at the roots of
unity ``z_j = exp(-2 pi i j / L)`` (where ``z_j^L = 1``) is

``K^(z_j) = sum_k K_k z_j^k = C~ (I - A_bar^L) (I - A_bar z_j)^{-1} B_bar
          = 2/(1 + z_j) * C_t [g_j I - A]^{-1} B,   g_j = (2/dt) (1 - z_j)/(1 + z_j)``

with ``C_t = C~ (I - A_bar^L)``.  We never form ``z_j`` by powering a rounded omega:
with ``phi_j = pi j / L`` (half the angle), ``(1 - z)/(1 + z) = i tan(phi_j)`` and
``2/(1 + z) = exp(i phi_j)/cos(phi_j)``; ``cos(pi j / L)`` and ``sin(pi j / L)`` come from an
exact octant reduction (integer arithmetic), so ``cos = 0`` exactly at the Nyquist node
``j = L/2`` (even ``L``), where ``z = -1`` and the formula has 0/0.  There the limit is taken
explicitly: ``(I + A_bar)^{-1} B_bar = dt/2 B``, so ``K^(-1) = dt/2 C_t B``.

With ``A = Lambda - P Q^*`` and ``R(g) = (g - Lambda)^{-1}`` (diagonal) the Woodbury identity gives
``(g - A)^{-1} = R - R P (I + Q^* R P)^{-1} Q^* R``, so every term is a Cauchy sum
``k_{ab}(g_j) = sum_n a_n b_n / (g_j - lambda_n)``:

``K^(z_j) = 2/(1 + z_j) [k_{C_t,B} - k_{C_t,P} (I + k_{Q^*,P})^{-1} k_{Q^*,B}]``, then ``K = ifft(K^)``.
Where a node coincides with an eigenvalue of the diagonal part (``|g_j - lambda_n| <= sqrt(eps)(1 + |g_j|
+ max|lambda|)``; FouT's ``lambda = 0`` at ``g_0 = 0``), ``R(g_j)`` does not exist while the resolvent does:
that node is computed by a dense solve ``C_t (g_j I - A)^{-1} B`` instead.

ZOH where it applies: ``exp`` of a DPLR matrix is not DPLR, so ZOH has no Cauchy/Woodbury form for
``rank > 0`` (``method="zoh"`` raises there).  For the diagonal case (``P = 0``) the generating function is
again a Cauchy sum, in ``z``: with ``A_bar = exp(dt Lambda)``, ``B_bar = dt expm1(dt Lambda)/(dt Lambda) B``,
``C_t = C (1 - A_bar^L)`` (``A_bar^L = exp(L dt Lambda)``) and ``w_j = 1/z_j = exp(2 pi i j/L)``,
``K^(z_j) = sum_n C_t B_bar / (1 - A_bar_n z_j) = w_j sum_n C_t B_bar / (w_j - A_bar_n)``
(no 0/0 at ``z = -1``; ``w_j`` from the same exact octant reduction).

Real output: ``output="complex"`` returns ``K`` as computed; ``"re"`` takes ``Re K`` (use with
the full spectrum, e.g. :func:`nplr` of a real matrix); ``"2re"`` takes ``2 Re K`` (use with one
eigenvalue of each conjugate pair).
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_positive
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.hippo import reference as hippo

__all__ = ["NPLR", "nplr", "eigenvector_condition", "unit_circle_half_angle", "cauchy", "generating_function", "kernel",
           "kernel_dense", "OUTPUTS", "real_output"]

OUTPUTS = ("complex", "re", "2re")
NPLR_MEASURES = ("legs", "legt", "lagt", "fout")


@dataclasses.dataclass
class NPLR:
    """``A = V (diag(Lambda) - P~ Q~^*) V^*``; ``A = S - P P^T`` in the original coordinates.

    Shapes: ``A (n n)`` real (S4 sign, scaled by ``1/theta`` for legt/fout), ``B (n)``,
    ``P (n r)`` real, ``Lambda (n)``, ``V (n n)`` unitary, ``Pt = Qt = V^* P (n r)``,
    ``Bt = V^* B (n)``.
    """

    measure: str
    A: np.ndarray
    B: np.ndarray
    P: np.ndarray
    Lambda: np.ndarray
    V: np.ndarray
    Pt: np.ndarray
    Qt: np.ndarray
    Bt: np.ndarray
    reconstruction_error: float
    reconstruction_bound: float
    cond_V: float

    def dense(self) -> np.ndarray:
        """``V (Lambda - P~ Q~^*) V^*`` (complex; real part is ``A`` up to rounding)."""
        return self.V @ (np.diag(self.Lambda) - self.Pt @ self.Qt.conj().T) @ self.V.conj().T


def _low_rank(measure: str, N: int, B: np.ndarray, theta: float) -> np.ndarray:
    n = np.arange(N, dtype=np.float64)
    if measure == "legs":
        # P_n = sqrt(n + 1/2)
        return np.sqrt(n + 0.5)[:, None]
    if measure == "lagt":
        # P_n = sqrt(1/2)
        return np.full((N, 1), np.sqrt(0.5))
    if measure == "legt":
        r = np.sqrt(2 * n + 1)
        P = np.zeros((N, 2))
        # P = [r at even n, r at odd n] / sqrt(theta)
        P[0::2, 0] = r[0::2]
        P[1::2, 1] = r[1::2]
        return P / np.sqrt(theta)
    # fout: P = B / sqrt(theta)
    return B[:, None] / np.sqrt(theta)


def nplr(measure: str, N: int, *, theta: float = 1.0) -> NPLR:
    r"""NPLR/DPLR form of the HiPPO matrix (S4 sign), float64; the reconstruction is asserted.

    Reconstruction bound (max-norm): ``eigh`` is backward stable, ``V (i w) V^* = K + E`` with
    ``||E||_2 <= gamma_{N^2} ||K||_2`` (Householder tridiagonalization + implicit QR, the
    classical ``O(N^2) u`` worst case); forming ``V (Lambda - P~Q~^*) V^*`` adds
    ``gamma_{2N+r+2}`` times the same product on absolute values.
    """
    check_choice(measure, "measure", NPLR_MEASURES)
    N = check_int(N, "N", minimum=1)
    theta = float(theta)
    check_positive(theta, "theta")
    A, B = hippo.transition(measure, N, sign="s4")
    if measure in ("legt", "fout"):
        A = A / theta
        B = B / theta
    P = _low_rank(measure, N, B * (theta if measure == "fout" else 1.0), theta)
    # S = A + P P^T  (normal part)
    S = A + P @ P.T
    # S = c I + K with K skew-symmetric
    c = float(np.mean(np.diag(S)))
    K = S - c * np.eye(N)
    skew_err = float(np.max(np.abs(K + K.T)))
    u = np.finfo(np.float64).eps / 2
    if skew_err > 4 * N * u * max(1.0, float(np.max(np.abs(S)))):
        raise AssertionError(f"nplr({measure}): A + P P^T is not c I + skew (|K + K^T| = {skew_err:.3e})")
    # -i K is Hermitian: -i K = V diag(w) V^*  =>  K = V diag(i w) V^*
    w, V = np.linalg.eigh(-1j * K)
    # Lambda = c + i w
    Lambda = c + 1j * w
    Vh = V.conj().T
    # P~ = Q~ = V^* P,  B~ = V^* B
    Pt = Vh @ P
    Bt = Vh @ B
    core = np.diag(Lambda) - Pt @ Pt.conj().T
    A_rec = V @ core @ Vh
    err = float(np.max(np.abs(A_rec - A)))
    r = P.shape[1]
    gam = lambda k: k * u / (1 - k * u)  # noqa: E731
    mag = np.abs(V) @ (np.abs(np.diag(Lambda)) + np.abs(Pt) @ np.abs(Pt).T) @ np.abs(Vh)
    bound = gam(N * N) * float(np.linalg.norm(K, 2)) + gam(2 * N + r + 2) * float(np.max(mag)) \
        + gam(N) * float(np.max(np.abs(P) @ np.abs(P).T))
    if not err <= bound:
        raise AssertionError(f"nplr({measure}, N={N}): reconstruction error {err:.3e} exceeds the derived bound {bound:.3e}")
    cond_V = float(np.linalg.cond(V))
    return NPLR(measure, A, B, P, Lambda, V, Pt, Pt.copy(), Bt, err, bound, cond_V)


def eigenvector_condition(A) -> float:
    r"""``cond_2(V)`` of the eigenvector matrix of ``A`` (columns normalized to unit length).

    For HiPPO-LegS it grows exponentially with ``N`` (``~1e10`` by ``N = 16``), so
    ``A = V Lambda V^{-1}`` cannot be used in floating point; the NPLR form avoids it.
    """
    A = as_float_array(A, "A", ndim=2)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A: expected a square matrix, got shape {A.shape}")
    _, V = np.linalg.eig(A)
    V = V / np.linalg.norm(V, axis=0, keepdims=True)
    return float(np.linalg.cond(V))


def _cos_sin_pi_frac(num: np.ndarray, den: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""``cos(pi num/den)``, ``sin(pi num/den)`` for integers ``0 <= num < 2 den`` by exact octant reduction.

    With ``2 num = m den + rem`` (integer division), ``pi num/den = m pi/2 + pi rem/(2 den)``; the
    remainder angle is reflected into ``[0, pi/4]`` (``pi/2 - x``, integer arithmetic) and the
    quarter turns ``m`` are applied by swapping/negating, so only ``cos``/``sin`` of one rounded
    angle in ``[0, pi/4]`` are evaluated and multiples of ``pi/2`` are exact (0, +-1).
    """
    num = np.asarray(num, dtype=np.int64)
    # angle = pi * num / den = (pi/2) * m + pi * rem2 / (2 den),  m = floor(2 num / den), 0 <= rem2 < den
    m, rem2 = np.divmod(2 * num, den)
    # x = pi rem2 / (2 den) in [0, pi/2); reflect to [0, pi/4]: if 2 rem2 > den use pi/2 - x
    refl = 2 * rem2 > den
    small = np.where(refl, den - rem2, rem2)
    x = np.pi * small / (2.0 * den)
    cx, sx = np.cos(x), np.sin(x)
    # cos/sin of the unreflected angle in [0, pi/2)
    c0 = np.where(refl, sx, cx)
    s0 = np.where(refl, cx, sx)
    # rotate by m quarter turns: (c, s) -> (-s, c)
    mq = m % 4
    c = np.select([mq == 0, mq == 1, mq == 2, mq == 3], [c0, -s0, -c0, s0])
    s = np.select([mq == 0, mq == 1, mq == 2, mq == 3], [s0, c0, -s0, -c0])
    return c, s


def unit_circle_half_angle(L: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""``cos(pi j / L)``, ``sin(pi j / L)``, ``j = 0..L-1`` (half the angle of ``z_j = exp(-2 pi i j/L)``).

    ``z_j = (cos - i sin)^2``; ``cos(pi j/L) = 0`` exactly at ``j = L/2`` (the Nyquist node).
    """
    return _cos_sin_pi_frac(np.arange(L), L)


def cauchy(v, g, lam) -> np.ndarray:
    r"""Cauchy kernel ``k_j = sum_n v_n / (g_j - lambda_n)``.  ``v (... n)``, ``g (l)``, ``lam (... n)`` -> ``(... l)``."""
    v = np.asarray(v)
    lam = np.asarray(lam)
    g = np.asarray(g)
    # k_j = sum_n v_n / (g_j - lambda_n)
    return np.sum(v[..., None, :] / (g[:, None] - lam[..., None, :]), axis=-1)


def real_output(K: np.ndarray, output: str) -> np.ndarray:
    """Apply the named real-output convention: ``complex`` (unchanged), ``re`` (Re K), ``2re`` (2 Re K)."""
    check_choice(output, "output", OUTPUTS)
    if output == "complex":
        return K
    # "re": y = Re(K);  "2re": y = 2 Re(K)  (one eigenvalue per conjugate pair stored)
    return K.real.copy() if output == "re" else 2.0 * K.real


def _validate_dplr(Lambda, P, Q, B, C, dt):
    Lambda = as_float_array(Lambda, "Lambda", ndim=2).astype(np.complex128)
    h, n = Lambda.shape
    P = as_float_array(P, "P", ndim=3).astype(np.complex128)
    if P.shape[:2] != (h, n):
        raise ValueError(f"P: expected shape ({h}, {n}, r) to match Lambda {Lambda.shape}, got {P.shape}")
    Q = as_float_array(Q, "Q", ndim=3).astype(np.complex128)
    if Q.shape != P.shape:
        raise ValueError(f"Q: expected shape {P.shape} (same as P), got {Q.shape}")
    B = as_float_array(B, "B", ndim=2).astype(np.complex128)
    C = as_float_array(C, "C", ndim=2).astype(np.complex128)
    for name, arr in (("B", B), ("C", C)):
        if arr.shape != (h, n):
            raise ValueError(f"{name}: expected shape ({h}, {n}), got {arr.shape}")
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False).astype(np.float64)
    check_positive(dt, "dt")
    if dt.ndim == 1 and dt.shape != (h,):
        raise ValueError(f"dt: expected a scalar or shape ({h},), got {dt.shape}")
    dt = np.broadcast_to(dt, (h,)).copy()
    return Lambda, P, Q, B, C, dt


def _coincide_tol(n: int, g: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``|g - lambda| <= sqrt(eps) (1 + |g| + max|lambda|)``: the Cauchy/Woodbury route would lose half the digits."""
    return np.sqrt(np.finfo(np.float64).eps) * (1.0 + np.abs(g) + (np.max(np.abs(lam)) if lam.size else 0.0))


def _cauchy_backend(v, g, lam, backend):
    """Cauchy sums over the last axis of ``v``/``lam`` (``(... n)``) at the nodes ``g (l)``: ``(... l)``."""
    if backend == "numpy":
        return cauchy(v, g, lam)
    from refimpl.ssm import structured_numba

    lead = v.shape[:-1]
    n = v.shape[-1]
    v2 = np.ascontiguousarray(v.reshape(-1, n))
    lam2 = np.ascontiguousarray(np.broadcast_to(lam, v.shape).reshape(-1, n))
    g2 = np.ascontiguousarray(np.broadcast_to(g, (v2.shape[0], g.shape[0])))
    return structured_numba.cauchy(v2, g2, lam2).reshape(lead + (g.shape[0],))


def _generating_function_zoh_diag(Lambda, B, C, dt, L: int, backend: str) -> np.ndarray:
    """ZOH generating function of a diagonal system (``P = 0``) by a Cauchy sum in ``z`` (module docstring)."""
    h, n = Lambda.shape
    # A_bar = exp(dt Lambda),  B_bar = dt phi1(dt Lambda) B   (refimpl.ssm.discretization.reference.zoh, expm1 form)
    A_bar, B_bar = discretize.zoh(Lambda, B[..., None], dt, diagonal=True)
    # C_t = C (1 - A_bar^L),  A_bar^L = exp(L dt Lambda)
    C_t = -C * np.expm1(L * dt[:, None] * Lambda)
    v = C_t * B_bar[..., 0]
    # w_j = 1/z_j = exp(2 pi i j / L) = cos(pi (2j)/L) + i sin(pi (2j)/L)  (exact octant reduction)
    c_w, s_w = _cos_sin_pi_frac(2 * np.arange(L), L)
    w = c_w + 1j * s_w
    if n and np.any(np.min(np.abs(w[None, :, None] - A_bar[:, None, :]), axis=1) == 0):
        raise ValueError("Lambda: an A_bar = exp(dt lambda) lies on a root of unity (|A_bar| = 1); "
                         "the truncated generating function has a removable pole there")
    # K^(z_j) = w_j sum_n v_n / (w_j - A_bar_n)
    Khat = np.stack([w * _cauchy_backend(v[i], w, A_bar[i], backend) for i in range(h)])
    return Khat


def generating_function(Lambda, P, Q, B, C, dt, L: int, *, method: str = "bilinear",
                        backend: str = "numpy") -> np.ndarray:
    r"""``K^(z_j) = sum_{k<L} K_k z_j^k`` at ``z_j = exp(-2 pi i j/L)`` by Cauchy + Woodbury: ``(h l)`` complex.

    Shapes: ``Lambda (h n)``, ``P, Q (h n r)`` (``A = diag(Lambda) - P Q^*``), ``B, C (h n)``,
    ``dt`` scalar or ``(h)``.  ``K^ = fft(K)``; see the module docstring for the formulas.
    ``backend``: ``numpy`` (the reference :func:`cauchy`) or ``numba`` (:func:`refimpl.ssm.structured_numba.cauchy`).
    ``method``: ``bilinear`` (any rank) or ``zoh`` (rank 0 only: ZOH does not keep the DPLR structure).
    """
    L = check_int(L, "L", minimum=0)
    check_choice(backend, "backend", ("numpy", "numba"))
    check_choice(method, "method", ("bilinear", "zoh"))
    Lambda, P, Q, B, C, dt = _validate_dplr(Lambda, P, Q, B, C, dt)
    h, n = Lambda.shape
    r = P.shape[2]
    Khat = np.zeros((h, L), dtype=np.complex128)
    if method == "zoh" and r > 0 and np.any(P != 0):
        raise ValueError(f"method: 'zoh' applies to diagonal systems only (P = 0); got a rank-{r} P "
                         "(exp of a DPLR matrix is not DPLR) -- use method='bilinear'")
    if L == 0:
        return Khat
    if method == "zoh":
        return _generating_function_zoh_diag(Lambda, B, C, dt, L, backend)
    # A = diag(Lambda) - P Q^*   (dense, only for A_bar^L)
    A = np.einsum("hn,nm->hnm", Lambda, np.eye(n)) - np.einsum("hnr,hmr->hnm", P, Q.conj())
    # A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)  (refimpl.ssm.discretization.reference.bilinear, per channel dt)
    A_bar, _ = discretize.bilinear(A, B[..., None], dt)
    # C_t = C (I - A_bar^L)   (A_bar^L by repeated squaring)
    A_bar_L = np.stack([np.linalg.matrix_power(A_bar[i], L) for i in range(h)])
    C_t = C - np.einsum("hn,hnm->hm", C, A_bar_L)
    # half angles phi_j = pi j / L:  (1 - z_j)/(1 + z_j) = i tan(phi_j),  2/(1 + z_j) = e^{i phi_j}/cos(phi_j)
    cos_h, sin_h = unit_circle_half_angle(L)
    nyq = cos_h == 0.0  # z_j = -1 (j = L/2, even L)
    reg = ~nyq
    idx_reg = np.flatnonzero(reg)
    for i in range(h):
        # g_j = (2/dt) (1 - z_j)/(1 + z_j) = (2/dt) i tan(phi_j)
        g_all = (2.0 / dt[i]) * 1j * (sin_h[reg] / cos_h[reg])
        pref_all = (cos_h[reg] + 1j * sin_h[reg]) / cos_h[reg]
        # a node on an eigenvalue of the diagonal part (g_j = lambda_n up to rounding, e.g. FouT's
        # lambda = 0 at g_0 = 0): R(g) does not exist, the resolvent (g - A)^{-1} does -- dense solve there
        near = np.zeros(g_all.shape, dtype=bool)
        if n:
            near = np.min(np.abs(g_all[:, None] - Lambda[i][None, :]), axis=1) <= _coincide_tol(n, g_all, Lambda[i])
        for jj in np.flatnonzero(near):
            # K^(z_j) = 2/(1 + z_j) C_t (g_j I - A)^{-1} B
            try:
                x_j = np.linalg.solve(g_all[jj] * np.eye(n) - A[i], B[i])
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"Lambda, P, Q: g_{idx_reg[jj]} = {g_all[jj]:.3g} is an eigenvalue of A = diag(Lambda) - P Q^* "
                    f"(channel {i}): A_bar has an eigenvalue on the root of unity z_{idx_reg[jj]}, where the truncated "
                    "generating function has a removable pole; use kernel_dense for this system") from None
            Khat[i, idx_reg[jj]] = pref_all[jj] * (C_t[i] @ x_j)
        g, pref = g_all[~near], pref_all[~near]
        # Cauchy sums k_ab(g) = sum_n a_n b_n / (g - lambda_n)
        k00 = _cauchy_backend(C_t[i] * B[i], g, Lambda[i], backend)                          # (l,)
        if r == 0:
            Khat[i, idx_reg[~near]] = pref * k00
        else:
            k01 = _cauchy_backend(C_t[i][None, :] * P[i].T, g, Lambda[i][None, :], backend)      # (r, l)
            k10 = _cauchy_backend(Q[i].conj().T * B[i][None, :], g, Lambda[i][None, :], backend) # (r, l)
            k11 = _cauchy_backend(Q[i].conj().T[:, None, :] * P[i].T[None, :, :], g,
                                  np.broadcast_to(Lambda[i], (r, r, n)), backend)              # (r, r, l)
            # Woodbury: C_t (g - A)^{-1} B = k00 - k01 (I + k11)^{-1} k10
            M = np.eye(r)[:, :, None] + k11                                                    # (r, r, l)
            sol = np.linalg.solve(np.moveaxis(M, -1, 0), np.moveaxis(k10, -1, 0)[..., None])[..., 0]  # (l, r)
            # K^(z_j) = 2/(1 + z_j) [k00 - k01 (I + k11)^{-1} k10]
            Khat[i, idx_reg[~near]] = pref * (k00 - np.einsum("rl,lr->l", k01, sol))
        # Nyquist node z = -1: (I + A_bar)^{-1} B_bar = dt/2 B  =>  K^(-1) = dt/2 C_t B
        Khat[i, nyq] = 0.5 * dt[i] * np.sum(C_t[i] * B[i])
    return Khat


def kernel(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex", method: str = "bilinear",
           backend: str = "numpy") -> np.ndarray:
    r"""S4 kernel by the generating function, Cauchy kernel and Woodbury (bilinear; ZOH for ``P = 0``): ``(h l)``.

    ``K_k = C A_bar^k B_bar`` for ``k < L``; ``K = ifft(K^)`` with ``K^`` from :func:`generating_function`.
    ``output``: complex / re / 2re (see :func:`real_output`).
    """
    check_choice(output, "output", OUTPUTS)
    Khat = generating_function(Lambda, P, Q, B, C, dt, L, method=method, backend=backend)
    if Khat.shape[1] == 0:
        return real_output(Khat, output)
    # K = ifft(K^)   (K^_j = sum_k K_k z_j^k = fft(K)_j)
    K = np.fft.ifft(Khat, axis=-1)
    return real_output(K, output)


def kernel_dense(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex") -> np.ndarray:
    r"""The same kernel through the LTI core: dense bilinear ``A_bar`` and :func:`refimpl.ssm.lti.reference.kernel`.

    ``K_k = C A_bar^k B_bar`` by repeated multiplication (an O(L N^2) cross-check of :func:`kernel`).
    """
    from refimpl.ssm.lti import reference as lti

    L = check_int(L, "L", minimum=0)
    Lambda, P, Q, B, C, dt = _validate_dplr(Lambda, P, Q, B, C, dt)
    n = Lambda.shape[1]
    A = np.einsum("hn,nm->hnm", Lambda, np.eye(n)) - np.einsum("hnr,hmr->hnm", P, Q.conj())
    A_bar, B_bar = discretize.bilinear(A, B[..., None], dt)
    K = lti.kernel(A_bar, B_bar, C[:, None, :], L)[:, :, 0, 0].T
    return real_output(K, output)
