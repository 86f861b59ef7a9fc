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
``K_k = C A_bar^k B_bar`` (``k < L``), ``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``,
``B_bar = (I - dt/2 A)^{-1} dt B``.  Its truncated generating function at the roots of
unity ``z_j = exp(-2 pi i j / L)`` (where ``z_j^L = 1``) is

``K^(z_j) = sum_k K_k z_j^k = C (I - A_bar^L) (I - A_bar z_j)^{-1} B_bar
          = 2/(1 + z_j) * C~ [g_j I - A]^{-1} B,   g_j = (2/dt) (1 - z_j)/(1 + z_j)``

with ``C~ = C (I - A_bar^L)``.  We never form ``z_j`` by powering a rounded omega:
with ``phi_j = pi j / L`` (half the angle), ``(1 - z)/(1 + z) = i tan(phi_j)`` and
``2/(1 + z) = exp(i phi_j)/cos(phi_j)``; ``cos(pi j / L)`` and ``sin(pi j / L)`` come from an
exact octant reduction (integer arithmetic), so ``cos = 0`` exactly at the Nyquist node
``j = L/2`` (even ``L``), where ``z = -1`` and the formula has 0/0.  There the limit is taken
explicitly: ``(I + A_bar)^{-1} B_bar = dt/2 B``, so ``K^(-1) = dt/2 C~ B``.

With ``A = Lambda - P Q^*`` and ``R(g) = (g - Lambda)^{-1}`` (diagonal) the Woodbury identity gives
``(g - A)^{-1} = R - R P (I + Q^* R P)^{-1} Q^* R``, so every term is a Cauchy sum
``k_{ab}(g_j) = sum_n a_n b_n / (g_j - lambda_n)``:

``K^(z_j) = 2/(1 + z_j) [k_{C~,B} - k_{C~,P} (I + k_{Q^*,P})^{-1} k_{Q^*,B}]``, then ``K = ifft(K^)``.
Where a node coincides with an eigenvalue of the diagonal part (``|g_j - lambda_n| <= sqrt(eps)(1 + |g_j|
+ max|lambda|)``; FouT's ``lambda = 0`` at ``g_0 = 0``), ``R(g_j)`` does not exist while the resolvent does:
that node is computed by a dense solve ``C~ (g_j I - A)^{-1} B`` instead.

ZOH where it applies: ``exp`` of a DPLR matrix is not DPLR, so ZOH has no Cauchy/Woodbury form for
``rank > 0`` (``method="zoh"`` raises there).  For the diagonal case (``P = 0``) the generating function is
again a Cauchy sum, in ``z``: with ``A_bar = exp(dt Lambda)``, ``B_bar = dt expm1(dt Lambda)/(dt Lambda) B``,
``C~ = C (1 - A_bar^L)`` (``A_bar^L = exp(L dt Lambda)``) and ``w_j = 1/z_j = exp(2 pi i j/L)``,
``K^(z_j) = sum_n C~ B_bar / (1 - A_bar_n z_j) = w_j sum_n C~ B_bar / (w_j - A_bar_n)``
(no 0/0 at ``z = -1``; ``w_j`` from the same exact octant reduction).

Real output: ``output="complex"`` returns ``K`` as computed; ``"re"`` takes ``Re K`` (use with
the full spectrum, e.g. :func:`nplr` of a real matrix); ``"2re"`` takes ``2 Re K`` (use with one
eigenvalue of each conjugate pair).

Views (the entry point :func:`refimpl.ssm.s4.s4_kernel`): ``generating_function`` -- :func:`kernel`
(NumPy :func:`cauchy`; the Numba Cauchy kernel in :mod:`refimpl.ssm.s4.numba`); ``dense`` --
:func:`kernel_dense` (the dense ``A`` discretized by the bilinear transform and powered).
Shapes: ``d`` channels, ``n`` states, ``r`` the rank; the kernel ``K (d l)`` is a per-channel filter.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, check_shape, result_dtype
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.hippo import reference as hippo

__all__ = ["NPLR", "nplr", "eigenvector_condition", "unit_circle_half_angle", "cauchy", "generating_function", "kernel",
           "kernel_dense", "OUTPUTS", "real_output", "NPLR_MEASURES"]

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
    theta = float(as_float_array(theta, "theta", ndim=0, allow_complex=False))
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
    if A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"A: expected a non-empty square matrix, got shape {A.shape}")
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

    ``L``: an integer >= 1.  ``z_j = (cos - i sin)^2``; ``cos(pi j/L) = 0`` exactly at ``j = L/2`` (the
    Nyquist node).
    """
    L = check_int(L, "L", minimum=1)
    return _cos_sin_pi_frac(np.arange(L), L)


def _cauchy_args(v, g, lam):
    """Validate the Cauchy kernel's arguments (shared by every backend): ``v, lam (d n)``, ``g (d l)``, exact shapes,
    floating (float32/float64/complex) and finite; returns them in the working complex dtype."""
    v = as_float_array(v, "v", ndim=2)
    d, n = v.shape
    lam = as_float_array(lam, "lam", ndim=2)
    check_shape(lam, "lam", (d, n), "(d n), the shape of v")
    g = as_float_array(g, "g", ndim=2)
    check_shape(g, "g", (d, None), f"(d l) with d = {d} from v")
    # complex64 only when every input is float32/complex64 (no silent downcast)
    cdt = np.result_type(result_dtype(v, g, lam), np.complex64)
    return v.astype(cdt, copy=False), g.astype(cdt, copy=False), lam.astype(cdt, copy=False)


def cauchy(v, g, lam) -> np.ndarray:
    r"""Cauchy kernel ``k_{c,j} = sum_n v_{c,n} / (g_{c,j} - lambda_{c,n})``.

    Shapes: ``v (d n)``, ``g (d l)`` (the nodes of channel ``c``), ``lam (d n)`` -> ``(d l)``, complex in the
    working dtype (complex64 only when every input is float32/complex64).
    """
    v, g, lam = _cauchy_args(v, g, lam)
    # k_{c,j} = sum_n v_{c,n} / (g_{c,j} - lambda_{c,n})
    return np.sum(v[:, None, :] / (g[:, :, None] - lam[:, None, :]), axis=-1)


def real_output(K, output: str) -> np.ndarray:
    """Apply the named real-output convention to a kernel ``K (d l)``: ``complex`` (unchanged), ``re`` (Re K),
    ``2re`` (2 Re K).  ``K``: floating or complex, finite."""
    K = as_float_array(K, "K", ndim=2)
    return _real_output(K, output)


def _real_output(K: np.ndarray, output: str) -> np.ndarray:
    """:func:`real_output` on an already computed kernel (no validation)."""
    check_choice(output, "output", OUTPUTS)
    if output == "complex":
        return K
    # "re": y = Re(K);  "2re": y = 2 Re(K)  (one eigenvalue per conjugate pair stored)
    return K.real.copy() if output == "re" else 2.0 * K.real


def _validate_dplr(Lambda, P, Q, B, C, dt):
    """``Lambda (d n)``, ``P, Q (d n r)``, ``B, C (d n)`` complex128; ``dt`` a scalar or ``(d,)`` -> ``(d,)``."""
    Lambda = as_float_array(Lambda, "Lambda", ndim=2).astype(np.complex128)
    d, n = Lambda.shape
    P = as_float_array(P, "P", ndim=3).astype(np.complex128)
    check_shape(P, "P", (d, n, None), f"(d n r) with (d, n) = {(d, n)} from Lambda")
    Q = as_float_array(Q, "Q", ndim=3).astype(np.complex128)
    check_shape(Q, "Q", P.shape, "(the shape of P)")
    B = as_float_array(B, "B", ndim=2).astype(np.complex128)
    check_shape(B, "B", (d, n), "(d n), as Lambda")
    C = as_float_array(C, "C", ndim=2).astype(np.complex128)
    check_shape(C, "C", (d, n), "(d n), as Lambda")
    return Lambda, P, Q, B, C, _channel_steps(dt, d)


def _channel_steps(dt, d: int) -> np.ndarray:
    """``dt``: a positive scalar or one step per channel, shape ``(d,)`` exactly; returned as ``(d,)`` float64."""
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False).astype(np.float64)
    check_positive(dt, "dt")
    if dt.ndim == 1:
        check_shape(dt, "dt", (d,), "(one step per channel) or a scalar")
    return np.broadcast_to(dt, (d,)).copy()


def _dplr_dense(Lambda, P, Q) -> np.ndarray:
    """``A = diag(Lambda) - P Q^*`` per channel: ``(d n n)``."""
    n = Lambda.shape[-1]
    # A = diag(Lambda) - P Q^*
    return np.einsum("dn,nm->dnm", Lambda, np.eye(n)) - np.einsum("dnr,dmr->dnm", P, Q.conj())


def _cauchy_rows(cauchy_fn, V, g, lam):
    """Cauchy sums of every row of ``V (... n)`` at the shared nodes ``g (l)`` with the poles ``lam (n)``: ``(... l)``."""
    lead, n = V.shape[:-1], V.shape[-1]
    rows = int(np.prod(lead, dtype=np.int64))
    V2 = np.ascontiguousarray(V.reshape(rows, n))
    out = cauchy_fn(V2, np.broadcast_to(g, (rows, g.shape[0])), np.broadcast_to(lam, (rows, n)))
    return out.reshape(lead + (g.shape[0],))


def _nodes_on_spectrum(g: np.ndarray, lam: np.ndarray) -> np.ndarray:
    r"""The nodes where ``R(g) = (g - Lambda)^{-1}`` does not exist to working accuracy:
    ``|g - lambda_n| <= sqrt(eps) (1 + |g| + max|lambda|)`` (the Cauchy/Woodbury route would lose half the digits)."""
    if lam.size == 0:
        return np.zeros(g.shape, dtype=bool)
    tol = np.sqrt(np.finfo(np.float64).eps) * (1.0 + np.abs(g) + np.max(np.abs(lam)))
    return np.min(np.abs(g[:, None] - lam[None, :]), axis=1) <= tol


def _resolvent_dense(c, b, A, g, node_index, channel):
    r"""``c (g_j I - A)^{-1} b`` by dense solves, at nodes that sit on an eigenvalue of the diagonal part
    (FouT's ``lambda = 0`` at ``g_0 = 0``): ``R(g)`` does not exist there, the resolvent does."""
    n = A.shape[0]
    out = np.empty(g.shape, dtype=np.complex128)
    for m, gj in enumerate(g):
        try:
            x = np.linalg.solve(gj * np.eye(n) - A, b)
        except np.linalg.LinAlgError:
            j = node_index[m]
            raise ValueError(
                f"Lambda, P, Q: g_{j} = {gj:.3g} is an eigenvalue of A = diag(Lambda) - P Q^* (channel {channel}): "
                f"A_bar has an eigenvalue on the root of unity z_{j}, where the truncated generating function has "
                "a removable pole; use view='dense' for this system") from None
        # c (g_j I - A)^{-1} b
        out[m] = c @ x
    return out


def _resolvent_woodbury(c, b, lam, P, Q, g, cauchy_fn):
    r"""``c (g I - A)^{-1} b`` for ``A = diag(lam) - P Q^*`` at the nodes ``g (l)`` by Cauchy sums and Woodbury.

    ``(g - A)^{-1} = R - R P (I + Q^* R P)^{-1} Q^* R``, ``R = (g - lam)^{-1}``; every term is a Cauchy sum
    ``k_ab(g) = sum_n a_n b_n / (g - lambda_n)``.
    """
    r = P.shape[1]
    Qh = Q.conj().T                                                                           # (r n)
    # k00 = k_{c,b}
    k00 = _cauchy_rows(cauchy_fn, c * b, g, lam)                                              # (l,)
    if r == 0:
        return k00
    # k01 = k_{c,P}, k10 = k_{Q^*,b}, k11 = k_{Q^*,P}
    k01 = _cauchy_rows(cauchy_fn, c[None, :] * P.T, g, lam)                                   # (r, l)
    k10 = _cauchy_rows(cauchy_fn, Qh * b[None, :], g, lam)                                    # (r, l)
    k11 = _cauchy_rows(cauchy_fn, Qh[:, None, :] * P.T[None, :, :], g, lam)                   # (r, r, l)
    M = np.eye(r)[:, :, None] + k11                                                           # (r, r, l)
    sol = np.linalg.solve(np.moveaxis(M, -1, 0), np.moveaxis(k10, -1, 0)[..., None])[..., 0]  # (l, r)
    # c (g - A)^{-1} b = k00 - k01 (I + k11)^{-1} k10
    return k00 - np.einsum("rl,lr->l", k01, sol)


def _bilinear_nodes(L: int, dt: float):
    r"""The bilinear map of the roots of unity, at the regular nodes (all but the Nyquist node ``z = -1``).

    With ``phi_j = pi j / L``: ``g_j = (2/dt) (1 - z_j)/(1 + z_j) = (2/dt) i tan(phi_j)`` and the prefactor
    ``2/(1 + z_j) = e^{i phi_j}/cos(phi_j)``, from the exact half angles (:func:`unit_circle_half_angle`).
    Returns ``(g, prefactor, regular)`` with ``regular (l)`` the mask of the nodes ``g`` belongs to.
    """
    cos_h, sin_h = unit_circle_half_angle(L)
    regular = cos_h != 0.0  # cos(phi_j) = 0 exactly at z_j = -1 (j = L/2, even L)
    c, s = cos_h[regular], sin_h[regular]
    # g_j = (2/dt) i tan(phi_j)
    g = (2.0 / dt) * 1j * (s / c)
    # 2/(1 + z_j) = e^{i phi_j} / cos(phi_j)
    prefactor = (c + 1j * s) / c
    return g, prefactor, regular


def _nyquist_limit(c_t, b, dt: float):
    r"""``K^(-1)``: at ``z = -1`` the formula is 0/0; the limit is ``(I + A_bar)^{-1} B_bar = dt/2 B``, so
    ``K^(-1) = dt/2 C~ B``."""
    return 0.5 * dt * np.sum(c_t * b)


def _check_no_pole_on_unit_roots(w, A_bar):
    """Refuse an ``A_bar = exp(dt lambda)`` exactly on a root of unity ``w_j`` (a removable pole of the truncated sum)."""
    if A_bar.size and np.any(np.min(np.abs(w[None, :, None] - A_bar[:, None, :]), axis=1) == 0):
        raise ValueError("Lambda: an A_bar = exp(dt lambda) lies on a root of unity (|A_bar| = 1); "
                         "the truncated generating function has a removable pole there")


def _generating_function_zoh_diag(Lambda, B, C, dt, L: int, cauchy_fn) -> np.ndarray:
    """ZOH generating function of a diagonal system (``P = 0``) by a Cauchy sum in ``z`` (module docstring)."""
    d = Lambda.shape[0]
    # A_bar = exp(dt Lambda),  B_bar = dt phi1(dt Lambda) B   (refimpl.ssm.discretization, expm1 form)
    A_bar, B_bar = discretize.zoh(Lambda, B[..., None], dt, diagonal=True)
    # C~ = C (1 - A_bar^L),  A_bar^L = exp(L dt Lambda)
    C_t = -C * np.expm1(L * dt[:, None] * Lambda)
    # w_j = 1/z_j = exp(2 pi i j / L) = cos(pi (2j)/L) + i sin(pi (2j)/L)  (exact octant reduction)
    c_w, s_w = _cos_sin_pi_frac(2 * np.arange(L), L)
    w = c_w + 1j * s_w
    _check_no_pole_on_unit_roots(w, A_bar)
    # K^(z_j) = w_j sum_n C~_n B_bar_n / (w_j - A_bar_n)
    return w * cauchy_fn(C_t * B_bar[..., 0], np.broadcast_to(w, (d, L)), A_bar)


def _generating_function(Lambda, P, Q, B, C, dt, L, method, cauchy_fn) -> np.ndarray:
    L = check_int(L, "L", minimum=0)
    check_choice(method, "method", ("bilinear", "zoh"))
    Lambda, P, Q, B, C, dt = _validate_dplr(Lambda, P, Q, B, C, dt)
    d, r = Lambda.shape[0], P.shape[2]
    if method == "zoh" and r > 0 and np.any(P != 0):
        raise ValueError(f"method: 'zoh' applies to diagonal systems only (P = 0); got a rank-{r} P "
                         "(exp of a DPLR matrix is not DPLR) -- use method='bilinear'")
    if L == 0:
        return np.zeros((d, 0), dtype=np.complex128)
    if method == "zoh":
        return _generating_function_zoh_diag(Lambda, B, C, dt, L, cauchy_fn)
    A = _dplr_dense(Lambda, P, Q)
    # A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)   (refimpl.ssm.discretization, bilinear, one dt per channel)
    A_bar, _ = discretize.bilinear(A, B[..., None], dt)
    # C~ = C (I - A_bar^L)   (A_bar^L by repeated squaring)
    A_bar_L = np.array([np.linalg.matrix_power(A_bar[c], L) for c in range(d)]).reshape(A_bar.shape)
    C_t = C - np.einsum("dn,dnm->dm", C, A_bar_L)
    Khat = np.empty((d, L), dtype=np.complex128)
    for c in range(d):
        g, prefactor, regular = _bilinear_nodes(L, dt[c])
        on = _nodes_on_spectrum(g, Lambda[c])
        resolvent = np.empty(g.shape, dtype=np.complex128)
        # C~ (g_j I - A)^{-1} B: Cauchy + Woodbury, or a dense solve where g_j sits on the diagonal part's spectrum
        resolvent[~on] = _resolvent_woodbury(C_t[c], B[c], Lambda[c], P[c], Q[c], g[~on], cauchy_fn)
        resolvent[on] = _resolvent_dense(C_t[c], B[c], A[c], g[on], np.flatnonzero(regular)[on], c)
        # K^(z_j) = 2/(1 + z_j) C~ (g_j I - A)^{-1} B
        Khat[c, regular] = prefactor * resolvent
        # the Nyquist node z = -1: K^(-1) = dt/2 C~ B
        Khat[c, ~regular] = _nyquist_limit(C_t[c], B[c], dt[c])
    return Khat


def generating_function(Lambda, P, Q, B, C, dt, L: int, *, method: str = "bilinear") -> np.ndarray:
    r"""``K^(z_j) = sum_{k<L} K_k z_j^k`` at ``z_j = exp(-2 pi i j/L)`` by Cauchy + Woodbury: ``(d l)`` complex128.

    Shapes: ``Lambda (d n)``, ``P, Q (d n r)`` (``A = diag(Lambda) - P Q^*``), ``B, C (d n)``,
    ``dt`` a scalar or ``(d,)``.  ``K^ = fft(K)``; see the module docstring for the formulas.
    ``method``: ``bilinear`` (any rank) or ``zoh`` (rank 0 only: ZOH does not keep the DPLR structure).
    """
    return _generating_function(Lambda, P, Q, B, C, dt, L, method, cauchy)


def _kernel_from_generating_function(Khat: np.ndarray, output: str) -> np.ndarray:
    if Khat.shape[1] == 0:
        return _real_output(Khat, output)
    # K = ifft(K^)   (K^_j = sum_k K_k z_j^k = fft(K)_j)
    return _real_output(np.fft.ifft(Khat, axis=-1), output)


def _kernel(Lambda, P, Q, B, C, dt, L, output, method, cauchy_fn) -> np.ndarray:
    check_choice(output, "output", OUTPUTS)
    return _kernel_from_generating_function(_generating_function(Lambda, P, Q, B, C, dt, L, method, cauchy_fn), output)


def kernel(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex", method: str = "bilinear") -> np.ndarray:
    r"""The ``generating_function`` view: ``K_k = C A_bar^k B_bar`` (``k < L``) as ``ifft`` of :func:`generating_function`.

    Shapes as :func:`generating_function`; returns ``K (d l)``.  ``method`` bilinear (any rank) or zoh
    (``P = 0``); ``output``: complex / re / 2re (see :func:`real_output`).
    """
    return _kernel(Lambda, P, Q, B, C, dt, L, output, method, cauchy)


def kernel_dense(Lambda, P, Q, B, C, dt, L: int, *, output: str = "complex", method: str = "bilinear") -> np.ndarray:
    r"""The ``dense`` view: the dense ``A = diag(Lambda) - P Q^*`` discretized by the bilinear transform,
    ``K_k = C A_bar^k B_bar`` by repeated multiplication (an ``O(L n^2)`` cross-check of :func:`kernel`).

    Shapes as :func:`generating_function`; returns ``K (d l)``.  ``method``: ``"bilinear"`` only.
    """
    L = check_int(L, "L", minimum=0)
    check_choice(output, "output", OUTPUTS)
    check_choice(method, "method", ("bilinear",))
    Lambda, P, Q, B, C, dt = _validate_dplr(Lambda, P, Q, B, C, dt)
    A = _dplr_dense(Lambda, P, Q)
    # A_bar = (I - dt/2 A)^{-1}(I + dt/2 A),  B_bar = (I - dt/2 A)^{-1} dt B
    A_bar, B_bar = discretize.bilinear(A, B[..., None], dt)
    K = np.empty((Lambda.shape[0], L), dtype=np.complex128)
    x = B_bar[..., 0]  # A_bar^k B_bar, k = 0
    for k in range(L):
        # K_k = C A_bar^k B_bar
        K[:, k] = np.sum(C * x, axis=-1)
        # A_bar^{k+1} B_bar = A_bar (A_bar^k B_bar)
        x = np.einsum("dnm,dm->dn", A_bar, x)
    return _real_output(K, output)
