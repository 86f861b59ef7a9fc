"""S4: NPLR/DPLR forms (asserted reconstruction, eigenvector conditioning), exact roots of unity,
the generating-function kernel against direct powers and mpmath, the Nyquist node, bad inputs."""
import math

import numpy as np
import pytest

from oracles import structured as OS
from oracles.tolerance import Bound, assert_within, compare, gamma
from refimpl.ssm import hippo, s4
from refimpl.ssm.s4 import s4_kernel

MEASURES = ["legs", "legt", "lagt", "fout"]


def _n(measure, N):
    return N + 1 if measure == "fout" and N % 2 == 0 else N


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 2, 8, 33, 64])
def test_nplr_reconstruction_and_structure(measure, N):
    N = _n(measure, N)
    d = s4.nplr(measure, N)
    # asserted inside nplr; re-check it here independently of the stored numbers
    A_rec = d.dense()
    assert d.reconstruction_error <= d.reconstruction_bound
    assert compare(A_rec.real, d.A, Bound(d.reconstruction_bound, "nplr's derived bound")).passed
    u = np.finfo(np.float64).eps / 2
    # V unitary to rounding: ||V^*V - I|| <= gamma_{N^2} (eigh's orthogonality, same derivation)
    assert np.max(np.abs(d.V.conj().T @ d.V - np.eye(N))) <= gamma(N * N, np.float64)
    # Re Lambda = -1/2 (legs, lagt) or 0 (legt, fout): the normal part is c I + skew
    c = {"legs": -0.5, "lagt": -0.5, "legt": 0.0, "fout": 0.0}[measure]
    assert np.max(np.abs(d.Lambda.real - c)) <= 4 * N * u * max(1.0, np.max(np.abs(d.Lambda)))
    # conjugate-pair spectrum of a real matrix
    w = np.sort(d.Lambda.imag)
    assert np.max(np.abs(w + w[::-1])) <= gamma(N * N, np.float64) * max(1.0, np.max(np.abs(w)))
    assert d.cond_V <= 1 + gamma(N * N, np.float64) * 4


def test_nplr_matches_original_hippo_matrices():
    for measure in MEASURES:
        N = _n(measure, 9)
        A, _ = hippo.transition(measure, N, sign="s4")
        d = s4.nplr(measure, N, theta=2.0)
        scale = 0.5 if measure in ("legt", "fout") else 1.0
        np.testing.assert_array_equal(d.A, A * scale)


def test_diagonalizing_legs_directly_is_ill_conditioned():
    conds = [s4.eigenvector_condition(hippo.legs(N, sign="s4")[0]) for N in (4, 8, 16)]
    assert conds[0] < conds[1] < conds[2]
    assert conds[2] > 1e8  # exponential growth; the NPLR's V has cond 1
    # cond(V) <= sqrt((1 + d)/(1 - d)) with d = ||V^*V - I||_2 <= N max|V^*V - I| <= N gamma_{N^2} = 4.5e-13 at
    # N = 16 (the entrywise bound of test_nplr_reconstruction_and_structure), plus np.linalg.cond's own SVD rounding
    # (backward stable: O(N u) ~ 4e-15 times LAPACK's modest constant): 1e-12 is that sum rounded up
    assert s4.nplr("legs", 16).cond_V < 1 + 1e-12


def test_half_angle_nodes_are_exact():
    import mpmath as mp

    for L in (1, 2, 3, 4, 7, 8, 12, 64, 100):
        c, s = s4.unit_circle_half_angle(L)
        j = np.arange(L)
        # exact at multiples of pi/4 relative to the period: j = 0 -> (1, 0); j = L/2 -> (0, 1) exactly
        assert c[0] == 1.0 and s[0] == 0.0
        if L % 2 == 0:
            assert c[L // 2] == 0.0 and s[L // 2] == 1.0
        # vs mpmath: the reduced angle x in [0, pi/4] carries gamma_3 relative error (pi, *, /),
        # |d cos| <= |sin x| |dx| + 2u (faithful np.cos); same for sin
        with mp.workdps(30):
            ce = np.array([float(mp.cos(mp.pi * k / L)) for k in j])
            se = np.array([float(mp.sin(mp.pi * k / L)) for k in j])
        b = Bound(gamma(3, np.float64) * math.pi / 4 + 2 * np.finfo(float).eps, "reduced angle + faithful cos/sin")
        assert_within(c, ce, b)
        assert_within(s, se, b)


def _system(measure, N, seed=0):
    d = s4.nplr(measure, N)
    C = np.random.default_rng(seed).standard_normal(N) @ d.V
    return d, C


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N,L,dt", [(1, 1, 0.5), (3, 2, 0.1), (5, 7, 0.1), (9, 16, 0.05), (17, 63, 0.01),
                                    (33, 256, 0.01)])
def test_s4_kernel_vs_direct_powers(measure, N, L, dt):
    d, C = _system(measure, N)
    args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], dt, L)
    A = OS.dplr_dense(d.Lambda, d.Pt, d.Qt)
    K_or = OS.kernel_powers(*OS.bilinear_dense(A, d.Bt, dt), C, L)
    bound = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L)
    assert_within(s4_kernel(*args)[0], K_or, bound, context=f"{measure} N={N} L={L}")
    assert_within(s4_kernel(*args, backend="numba")[0], K_or, bound, context="numba Cauchy")


def test_s4_kernel_long_sequence():
    # one long case: N = 64, L = 1024 (the Nyquist node present), dt = 1e-3
    d, C = _system("legs", 64, seed=5)
    L, dt = 1024, 1e-3
    args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], dt, L)
    K_or = OS.kernel_powers(*OS.bilinear_dense(OS.dplr_dense(d.Lambda, d.Pt, d.Qt), d.Bt, dt), C, L)
    bound = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L)
    assert_within(s4_kernel(*args)[0], K_or, bound)
    assert_within(s4_kernel(*args, backend="numba")[0], K_or, bound)


@pytest.mark.parametrize("measure", MEASURES)
def test_s4_kernel_vs_mpmath(measure):
    N, L, dt = 5, 8, 0.2
    d, C = _system(measure, N, seed=1)
    K = s4_kernel(d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], dt, L)[0]
    K_mp = OS.dplr_kernel_mpmath(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L)
    assert_within(K, K_mp, OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L, oracle="mpmath"))


def test_generating_function_nodes_including_nyquist_and_dc():
    # K^_j = sum_k K_k z_j^k computed directly from the oracle's kernel (an exact-node DFT in float64)
    d, C = _system("legs", 8, seed=2)
    dt = 0.05
    for L in (8, 9, 16):
        Khat = s4.generating_function(d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], dt, L)[0]
        K_or = OS.kernel_powers(*OS.bilinear_dense(OS.dplr_dense(d.Lambda, d.Pt, d.Qt), d.Bt, dt), C, L)
        b = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, dt, L)
        # a DFT of the oracle kernel: |dK^_j| <= sum_k |dK_k| + gamma^c_L sum |K_k|
        direct = np.array([np.sum(K_or * np.exp(-2j * np.pi * j * np.arange(L) / L)) for j in range(L)])
        tol = L * b.max() + gamma(L + 4, np.float64, complex_ops=True) * np.sum(np.abs(K_or))
        assert np.max(np.abs(Khat - direct)) <= tol
        if L % 2 == 0:
            # Nyquist node z = -1: K^ = sum_k (-1)^k K_k, handled by the explicit limit dt/2 C_t B
            nyq = np.sum(K_or * (-1.0) ** np.arange(L))
            assert abs(Khat[L // 2] - nyq) <= tol


def test_real_output_from_real_system():
    # A real system (original coordinates) has a real kernel; the full-spectrum DPLR kernel's
    # imaginary part is rounding, and output='re' equals the dense real kernel.
    N, L, dt = 9, 40, 0.03
    d = s4.nplr("legs", N)
    C = np.random.default_rng(4).standard_normal(N)
    K = s4_kernel(d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], (C @ d.V)[None], dt, L, output="re")[0]
    A_bar, B_bar = OS.bilinear_dense(d.A, d.B, dt)
    K_real = OS.kernel_powers(A_bar, B_bar, C, L)
    bound = OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C @ d.V, dt, L)
    # + the rotation into the eigenbasis (C V, V^* B: gamma^c_N of |C||V|, |V||B|) and nplr's A error
    extra = (gamma(N, np.float64, complex_ops=True) * 2 + d.reconstruction_bound * dt * L) \
        * np.linalg.norm(C) * np.linalg.norm(d.B) * dt * L
    assert_within(K, K_real, bound + Bound(extra, "basis change"))
    assert K.dtype == np.float64
    K2 = s4_kernel(d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], (C @ d.V)[None], dt, L, output="2re")[0]
    np.testing.assert_array_equal(K2, 2 * K)


def test_kernel_dense_cross_check_and_L0():
    d, C = _system("lagt", 6)
    args = (d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], 0.1)
    assert s4_kernel(*args, 0).shape == (1, 0)
    assert s4_kernel(*args, 0, view="dense").shape == (1, 0)
    K = s4_kernel(*args, 20)[0]
    Kd = s4_kernel(*args, 20, view="dense")[0]
    # the dense view computes what the bound's float64 oracle computes (bilinear by a solve, direct powers)
    assert_within(K, Kd, OS.s4_gf_bound(d.Lambda, d.Pt, d.Qt, d.Bt, C, 0.1, 20))


def test_bad_inputs():
    d, C = _system("legs", 4)
    ok = dict(Lambda=d.Lambda[None], P=d.Pt[None], Q=d.Qt[None], B=d.Bt[None], C=C[None], dt=0.1, L=8)
    with pytest.raises(ValueError, match="^P: "):
        s4_kernel(**{**ok, "P": d.Pt[None, :3]})
    with pytest.raises(ValueError, match="^Q: "):
        s4_kernel(**{**ok, "Q": np.zeros((1, 4, 2))})
    with pytest.raises(ValueError, match="^dt: "):
        s4_kernel(**{**ok, "dt": 0.0})
    with pytest.raises(ValueError, match="^dt: expected shape \\(1,\\)"):
        s4_kernel(**{**ok, "dt": np.array([0.1, 0.1])})
    with pytest.raises(ValueError, match="^dt: expected 0 or 1 dimensions"):
        s4_kernel(**{**ok, "dt": np.array([[0.1]])})
    with pytest.raises(ValueError, match="^method: "):
        s4_kernel(**ok, view="dense", method="zoh")
    with pytest.raises(ValueError, match="^C: "):
        s4_kernel(**{**ok, "C": C[None, :2]})
    with pytest.raises(ValueError, match="^B: "):
        s4_kernel(**{**ok, "B": np.full((1, 4), np.inf)})
    with pytest.raises(ValueError, match="^output: "):
        s4_kernel(**ok, output="real")
    with pytest.raises(ValueError, match="^L: "):
        s4_kernel(**{**ok, "L": -1})
    with pytest.raises(ValueError, match="^view: "):
        s4_kernel(**ok, view="vandermonde")
    with pytest.raises(ValueError, match="^backend: .*no 'numba' backend for view 'dense'"):
        s4_kernel(**ok, view="dense", backend="numba")
    with pytest.raises(ValueError, match="measure"):
        s4.nplr("lmu", 4)
    with pytest.raises(ValueError, match="A"):
        s4.eigenvector_condition(np.zeros((2, 3)))
    # a system whose A_bar has an eigenvalue on a root of unity (A singular, g_0 = 0): clear error
    lam = np.array([[0.0 + 0j, -1.0 + 0j]])
    with pytest.raises(ValueError, match="removable pole"):
        s4_kernel(lam, np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), np.ones((1, 2)), np.ones((1, 2)), 0.1, 4)


@pytest.mark.parametrize("L", [1, 2, 7, 8, 64, 1000])
def test_s4_zoh_generating_function_for_diagonal_systems(L):
    # ZOH applies to P = 0: a Cauchy sum in z; oracle: Van Loan + direct powers
    rng = np.random.default_rng(L)
    lam = -rng.uniform(0.05, 1, (2, 5)) + 1j * rng.uniform(-10, 10, (2, 5))
    B = rng.standard_normal((2, 5)) + 1j * rng.standard_normal((2, 5))
    C = rng.standard_normal((2, 5)) + 1j * rng.standard_normal((2, 5))
    z = np.zeros((2, 5, 0))
    dt = np.array([0.05, 0.4])
    for backend in ("numpy", "numba"):
        K = s4_kernel(lam, z, z, B, C, dt, L, method="zoh", backend=backend)
        for i in range(2):
            K_or = OS.kernel_powers(*OS.zoh_diag_vanloan(lam[i], B[i], dt[i]), C[i], L)
            assert_within(K[i], K_or, OS.zoh_gf_bound(lam[i], B[i], C[i], dt[i], L), context=backend)


def test_s4_zoh_refused_for_low_rank():
    d, C = _system("legs", 4)
    with pytest.raises(ValueError, match="^method: 'zoh'"):
        s4_kernel(d.Lambda[None], d.Pt[None], d.Qt[None], d.Bt[None], C[None], 0.1, 8, method="zoh")
