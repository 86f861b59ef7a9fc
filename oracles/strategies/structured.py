"""Hypothesis strategies for the structured SSMs (HiPPO signals, DPLR/diagonal systems, scans).

Arrays come from a seeded ``numpy`` generator (a drawn seed), sizes are drawn small so a
property test stays fast; lengths cover ``L = 0, 1, 2``, odd, powers of two (a Nyquist node)
and a longer one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

LENGTHS = (0, 1, 2, 3, 7, 8, 16, 33, 64)
KERNEL_LENGTHS = (1, 2, 3, 7, 8, 16, 33, 64)


@dataclasses.dataclass
class SmoothSignal:
    """``f(x) = sum_i a_i sin(w_i x + p_i)``: entire, with frequencies ``|w_i| <= w_max``."""

    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        return np.sum(self.amp * np.sin(self.freq * x[..., None] + self.phase), axis=-1)

    def __repr__(self) -> str:
        return f"SmoothSignal(amp={self.amp.round(3).tolist()}, freq={self.freq.round(3).tolist()})"


@st.composite
def smooth_signals(draw, *, max_terms: int = 3, w_max: float = 6.0):
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, max_terms))
    rng = np.random.default_rng(seed)
    return SmoothSignal(rng.uniform(0.5, 1.5, k) * rng.choice([-1, 1], k), rng.uniform(0.5, w_max, k),
                        rng.uniform(0, 2 * np.pi, k))


@dataclasses.dataclass
class Polynomial:
    coef: np.ndarray  # ascending powers

    def __call__(self, x):
        return np.polynomial.polynomial.polyval(np.asarray(x, dtype=np.float64), self.coef)

    def abs_eval(self, x):
        """The same evaluation on absolute values (its rounding magnitude)."""
        return np.polynomial.polynomial.polyval(np.abs(np.asarray(x, dtype=np.float64)), np.abs(self.coef))


@st.composite
def polynomials(draw, *, max_degree: int):
    seed = draw(st.integers(0, 2**32 - 1))
    deg = draw(st.integers(0, max_degree))
    return Polynomial(np.random.default_rng(seed).standard_normal(deg + 1))


@dataclasses.dataclass
class DiagCase:
    Lambda: np.ndarray  # (d n) complex, Re < 0
    B: np.ndarray
    C: np.ndarray
    dt: np.ndarray  # (d,)
    L: int
    seed: int

    def __repr__(self) -> str:
        return f"DiagCase(seed={self.seed}, d,n={self.Lambda.shape}, L={self.L}, dt={self.dt})"


@st.composite
def diag_cases(draw, *, max_n: int = 6, lengths=KERNEL_LENGTHS, max_d: int = 2):
    """Stable complex diagonal systems ``(d n)``, ``Re lambda`` in ``-[0.01, 2]``, ``|Im lambda| <= 20``, ``dt`` over 3 decades."""
    seed = draw(st.integers(0, 2**32 - 1))
    h = draw(st.integers(1, max_d))
    n = draw(st.integers(1, max_n))
    L = draw(st.sampled_from(lengths))
    rng = np.random.default_rng(seed)
    lam = -rng.uniform(0.01, 2.0, (h, n)) + 1j * rng.uniform(-20, 20, (h, n))
    B = rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))
    C = rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))
    dt = 10.0 ** rng.uniform(-3, 0, size=h)
    return DiagCase(lam, B, C, dt, L, seed)


@dataclasses.dataclass
class DPLRCase:
    measure: str
    N: int
    C: np.ndarray  # (n,) real, original coordinates
    dt: float
    L: int

    def __repr__(self) -> str:
        return f"DPLRCase({self.measure}, N={self.N}, dt={self.dt:.3g}, L={self.L})"


@st.composite
def dplr_cases(draw, *, max_n: int = 12, lengths=KERNEL_LENGTHS):
    """A HiPPO measure, ``N`` (odd for fout), a real ``C``, ``dt`` over 3 decades."""
    measure = draw(st.sampled_from(["legs", "legt", "lagt", "fout"]))
    N = draw(st.integers(1, max_n))
    if measure == "fout" and N % 2 == 0:
        N += 1
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dt = float(10.0 ** rng.uniform(-3, 0))
    L = draw(st.sampled_from(lengths))
    return DPLRCase(measure, N, rng.standard_normal(N), dt, L)


@st.composite
def cauchy_inputs(draw, *, dtype=np.complex128):
    """``v, lam (d n)``, nodes ``g (d l)`` on the imaginary axis (as in S4), ``Re lam < 0`` (the arguments of
    :func:`refimpl.ssm.s4.cauchy`)."""
    seed = draw(st.integers(0, 2**32 - 1))
    h = draw(st.integers(1, 3))
    n = draw(st.integers(0, 9))
    L = draw(st.sampled_from(LENGTHS))
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))).astype(dtype)
    lam = (-rng.uniform(0.05, 2, (h, n)) + 1j * rng.uniform(-10, 10, (h, n))).astype(dtype)
    g = (1j * rng.uniform(-50, 50, (h, L))).astype(dtype)
    return v, g, lam


@st.composite
def vandermonde_inputs(draw, *, dtype=np.complex128):
    """``v, z (d n)`` with ``1/2 <= |z| <= 1`` and a length ``L`` (the arguments of :func:`refimpl.ssm.s4d.vandermonde`)."""
    seed = draw(st.integers(0, 2**32 - 1))
    h = draw(st.integers(1, 3))
    n = draw(st.integers(0, 9))
    L = draw(st.sampled_from(LENGTHS + (200,)))
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))).astype(dtype)
    z = (rng.uniform(0.5, 1.0, (h, n)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (h, n)))).astype(dtype)
    return v, z, L


@st.composite
def scan_inputs(draw, *, dtype=np.complex128):
    """``a (l n)`` with ``|a| <= 1``, ``b (b l n)``, ``initial_state (b n)`` (or None): :func:`refimpl.ssm.s5.diag_scan`."""
    seed = draw(st.integers(0, 2**32 - 1))
    bsz = draw(st.integers(1, 2))
    n = draw(st.integers(1, 5))
    L = draw(st.sampled_from(LENGTHS + (300,)))
    with_s0 = draw(st.booleans())
    rng = np.random.default_rng(seed)
    a = (rng.uniform(0.3, 1.0, (L, n)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (L, n)))).astype(dtype)
    b = (rng.standard_normal((bsz, L, n)) + 1j * rng.standard_normal((bsz, L, n))).astype(dtype)
    s0 = (rng.standard_normal((bsz, n)) + 1j * rng.standard_normal((bsz, n))).astype(dtype) if with_s0 else None
    return a, b, s0
