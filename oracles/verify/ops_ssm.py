r"""Op specs for the SSM core: ``ssm.discretize`` and ``ssm.lti``.

ssm.discretize
--------------
Canonical: ``fn(A, B, dt, C=None, D=None) -> (A_bar, B_bar[, C_d, D_d])`` with ``A``
``(h n n)`` (or ``(h n)`` when ``diagonal=True``), ``B`` ``(h n m)``, ``C`` ``(h p n)``,
``D`` ``(h p m)``, ``dt`` a positive scalar.  Conventions: ``method`` (zoh, bilinear,
gbt with ``alpha``, forward/backward Euler, Mamba's mix), ``diagonal``, and the
``output`` convention for ``C_d, D_d``: ``"s4"`` keeps ``C, D`` (the discrete
output is ``y_k = C h_k + D x_k``), ``"shifted"`` is scipy's
``cont2discrete``: for the gbt family ``C_d = C (I - alpha dt A)^{-1}``,
``D_d = D + alpha C B_bar`` (a half-step-shifted state); zoh keeps ``C, D``.

Oracles (independent of ``refimpl``, and of scipy's ``expm`` that ``refimpl``'s dense ZOH calls):
ZOH and Mamba's ``A_bar`` by the Van Loan block exponential evaluated in mpmath at 50 digits
(:func:`zoh_mpmath`); the gbt family (bilinear, gbt, forward and backward Euler) from its closed
form evaluated in mpmath at 40 digits (:func:`gbt_mpmath`).  Both are exact to float64: the
bounds then have no oracle share beyond the final rounding.

ssm.lti
-------
Canonical: ``fn(A_bar, B_bar, C, D, x, h0=None) -> (y, h_last)`` with ``x`` ``(b l h m)``, ``y``
``(b l h p)``, ``h0``/``h_last`` ``(b h n)`` (``h`` the channel axis; ``h0`` is the state *before*
step 0).  This is refimpl's layout too (``x (b l d m)``, ``initial_state``/final state ``(b d n)``):
the ``refimpl`` adapter renames the arguments only.  A time-varying system carries a leading ``l``
axis: ``A_bar (l h n n)``, ``B_bar (l h n m)`` (dense only: a diagonal ``(l h n)`` would read as a
dense ``(h n n)``).  Conventions: ``diagonal``; ``real_output`` for a complex system (``complex``:
``y = C h + D x`` as is; ``re``: ``Re(C h + D x)``, S5 without conjugate symmetry; ``2re``:
``2 Re(C h) + D x``); ``use_h0`` (the candidate takes an initial state: cases pass one, and some none;
``False`` for a convolution view, which has none); ``time_varying`` (the candidate takes one system
per step); ``algorithm`` (``direct``/``fft``: the bound only).  Every default run covers L = 0, 1, 2,
odd, a chunk of 64 +- 1 and 300; real and complex ``A``; ``h0`` given and not.  Oracle: the dense
time-varying operator (:func:`oracles.ssm.apply_dense`); bound: :func:`oracles.ssm.lti_bound`.  Probe:
causality.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np

import scipy.linalg

from oracles.ssm import apply_dense, fft_bound_lti, lti_bound, random_stable_system, van_loan_zoh
from oracles.tolerance import Bound, componentwise_bound, conditioned_bound, gamma, underflow_floor
from oracles.verify.adapters import Adapter, Const, Conv, Group, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, feature_convention, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP_DISCRETIZE = "ssm.discretize"
OP_LTI = "ssm.lti"

_GBT_ALPHA = {"bilinear": 0.5, "forward_euler": 0.0, "backward_euler": 1.0}
METHODS = ("zoh", "bilinear", "gbt", "forward_euler", "backward_euler", "mamba")


def _alpha(conv) -> float:
    return float(conv["alpha"]) if conv["method"] == "gbt" else _GBT_ALPHA[conv["method"]]


def _dense(A, diagonal):
    A = np.asarray(A)
    if not diagonal:
        return A
    out = np.zeros(A.shape + (A.shape[-1],), dtype=A.dtype)
    i = np.arange(A.shape[-1])
    out[..., i, i] = A
    return out


# ----------------------------------------------------------------------------------------------------------
# ssm.discretize: oracle
# ----------------------------------------------------------------------------------------------------------

def gbt_mpmath(A, B, C, D, dt, alpha):
    """``(A_bar, B_bar, C_d, D_d)`` of the gbt transform of one system, in mpmath (40 digits), as complex128."""
    import mpmath

    with mpmath.workdps(40):
        n, m = B.shape
        mA = mpmath.matrix(A.tolist())
        I = mpmath.eye(n)
        a = mpmath.mpf(alpha)
        h = mpmath.mpf(float(dt))
        M = I - a * h * mA  # I - alpha dt A
        R = I + (1 - a) * h * mA  # I + (1 - alpha) dt A
        Minv = mpmath.inverse(M)  # exact enough at 40 digits (not a floating-point algorithm under test)
        # A_bar = (I - alpha dt A)^{-1} (I + (1 - alpha) dt A);  B_bar = (I - alpha dt A)^{-1} dt B
        Ab = Minv * R
        Bb = Minv * (h * mpmath.matrix(B.tolist()))
        out = [np.array(Ab.tolist(), dtype=np.complex128), np.array(Bb.tolist(), dtype=np.complex128)]
        if C is not None:
            # scipy's shifted state:  C_d = C (I - alpha dt A)^{-1};  D_d = D + alpha C B_bar
            mC = mpmath.matrix(C.tolist())
            out.append(np.array((mC * Minv).tolist(), dtype=np.complex128))
            if D is not None:
                out.append(np.array((mpmath.matrix(D.tolist()) + a * mC * Bb).tolist(), dtype=np.complex128))
        return out


def _van_loan_block(A, B, diagonal):
    """``[[A, B], [0, 0]]`` ``(n+m, n+m)`` for one system (``A`` dense or its diagonal)."""
    A = _dense(np.asarray(A), diagonal)
    B = np.asarray(B)
    n, m = B.shape
    M = np.zeros((n + m, n + m), dtype=np.result_type(A.dtype, B.dtype, np.float64))
    M[:n, :n] = A
    M[:n, n:] = B
    return M


_ZOH_MEMO: Dict[Any, np.ndarray] = {}  # (block bytes, dt, dps) -> exp(dt M): the same system under several
#                                          conventions (the diagnosis, the bounds) is exponentiated once


def zoh_mpmath(A, B, dt, *, diagonal=False, dps: int = 50):
    r"""ZOH of one system (``A`` (n n) or (n,), ``B`` (n m)) by the Van Loan block exponential in mpmath.

    ``exp(dt [[A, B], [0, 0]]) = [[e^{dt A}, int_0^dt e^{A s} ds B], [0, I]]`` evaluated by mpmath's
    own ``expm`` (Taylor series with scaling and squaring) at ``dps`` digits: an algorithm and a
    precision independent of scipy's Pade ``expm`` (which refimpl's dense ZOH calls) and of
    refimpl's ``phi1``.  The float64 inputs convert to mpmath exactly; ``dt M`` is formed in mpmath.
    Returns ``(A_bar, B_bar)`` rounded once to complex128 (float64 when ``A``, ``B`` are real).
    """
    import mpmath

    M = _van_loan_block(A, B, diagonal)
    n, m = np.shape(B)
    key = (M.tobytes(), M.shape, M.dtype.str, float(dt), int(dps))
    E = _ZOH_MEMO.get(key)
    if E is None:
        with mpmath.workdps(dps):
            E = mpmath.expm(mpmath.mpf(float(dt)) * mpmath.matrix(M.tolist()))
            E = np.array([[complex(E[i, j]) for j in range(n + m)] for i in range(n + m)], dtype=np.complex128)
        if len(_ZOH_MEMO) > 4096:
            _ZOH_MEMO.clear()
        _ZOH_MEMO[key] = E
    E = _real_if(E.copy(), A, B)
    return E[:n, :n], E[:n, n:]


def expm_rounding_depth(X) -> int:
    r"""The longest chain of roundings of a scaling-and-squaring exponential (or ``phi1``) of ``X`` ``(N N)``.

    Scale by ``2^-s`` to ``||X||_1 <= 1/2`` (the most halvings any of the evaluations considered makes:
    scipy's Pade 13 stops at 5.37, refimpl's ``phi1`` Taylor at 1/2), sum a series of at most 19
    products (refimpl's degree-18 Taylor and ``exp = I + Y phi1(Y)``; Pade 13 is 6 products and a
    solve), then undo the scaling with ``s`` squaring steps of at most 2 products each (``phi1``'s
    ``P <- 1/2 (E + I) P`` and ``E <- E E``).  A product of inner dimension ``N`` adds ``N + 1``
    roundings to the chain: ``depth = (N + 1)(19 + 2 s)``.
    """
    X = np.asarray(X)
    N = X.shape[-1]
    norm1 = float(np.max(np.sum(np.abs(X), axis=0))) if X.size else 0.0
    s = max(0, math.ceil(math.log2(norm1 / 0.5))) if norm1 > 0.5 else 0
    return (N + 1) * (19 + 2 * s)


_COND_MEMO: Dict[Any, float] = {}


def _expm_cond(X) -> float:
    """``max(1, expm_cond(X))`` (a complex ``X`` by its real embedding), memoized on ``X``: the Kronecker-form
    condition number costs ``N^2`` Frechet derivatives, and the diagnosis asks for the same block many times."""
    key = (X.tobytes(), X.shape, X.dtype.str)
    if key not in _COND_MEMO:
        R = np.block([[X.real, -X.imag], [X.imag, X.real]]) if np.iscomplexobj(X) else X
        if len(_COND_MEMO) > 4096:
            _COND_MEMO.clear()
        _COND_MEMO[key] = max(float(scipy.linalg.expm_cond(R)), 1.0)
    return _COND_MEMO[key]


def zoh_mpmath_bounds(A, B, dt, dtype, *, diagonal=False, exact=None) -> Tuple[Bound, Bound]:
    r"""Bounds on ``|A_bar - oracle|``, ``|B_bar - oracle|`` of a ZOH candidate against :func:`zoh_mpmath`.

    Forward error <= condition x backward error (Higham, *Functions of Matrices*, ch. 10): ``kappa``, the
    relative condition number of the exponential at ``X = dt M`` (``scipy.linalg.expm_cond``, Frobenius
    norm; a complex ``X`` by its real embedding ``[[Re, -Im], [Im, Re]]``), times a backward error
    ``gamma_k`` with ``k`` the rounding chain of a scaling-and-squaring evaluation
    (:func:`expm_rounding_depth`), times ``||exp(X)||_F``: a normwise bound for every entry.  No
    rounding error analysis of scaling and squaring gives a rigorous enclosure (the squaring phase
    is the gap); this counts every rounding of the longest chain, where ``gamma_{n+m}`` (the per-side
    backward error a backward stable ``expm`` is often credited with) is exceeded by scipy's Pade
    ``expm`` itself on stable 4 x 4 blocks.  The oracle's share is its final rounding,
    ``gamma_1(float64) |E|``.  ``exact``: the oracle's ``(A_bar, B_bar)`` if already computed.  The
    ``A_bar`` bound has shape ``(n, n)``, or ``(n,)`` (the diagonal) when ``diagonal=True``.
    """
    Mdt = float(dt) * _van_loan_block(A, B, diagonal)
    n, m = np.shape(B)
    if exact is None:
        exact = zoh_mpmath(A, B, dt, diagonal=diagonal)
    E = np.concatenate([np.asarray(exact[0]), np.asarray(exact[1])], axis=1)  # [A_bar, B_bar], A_bar dense
    cplx = not np.isrealobj(Mdt)
    kappa = _expm_cond(Mdt)
    # ||exp(dt M)||_F: the top block rows [A_bar, B_bar] and the identity block [0, I_m]
    scale = math.sqrt(float(np.sum(np.abs(E) ** 2)) + m)
    depth = expm_rounding_depth(Mdt)
    g = gamma(depth, dtype, complex_ops=cplx)
    cond = Bound(kappa * g * scale + underflow_floor(depth, dtype), f"conditioned: cond={kappa:.3g} x gamma_{depth}({np.dtype(dtype).name}"
                                    f"{', complex ops' if cplx else ''}) x ||exp(dt M)||_F (scaling and squaring "
                                    f"of the Van Loan block; oracle: mpmath expm)")
    what = "oracle's final rounding to float64"
    magA = np.abs(np.diagonal(exact[0]) if diagonal else exact[0])
    bA = cond + componentwise_bound(magA, 1, np.float64, oracle_dtype=None, what=what)
    bB = cond + componentwise_bound(np.abs(exact[1]), 1, np.float64, oracle_dtype=None, what=what)
    return bA, bB


def _real_if(x, *like):
    return x if any(np.iscomplexobj(a) for a in like if a is not None) else x.real.astype(np.float64)


def discretize_oracle(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    A, B, dt = np.asarray(inp["A"]), np.asarray(inp["B"]), float(np.asarray(inp["dt"]))
    C, D = inp.get("C"), inp.get("D")
    method, diag = conv["method"], bool(conv["diagonal"])
    h, n, m = B.shape
    Ab = np.zeros(A.shape, dtype=np.complex128)
    Bb = np.zeros(B.shape, dtype=np.complex128)
    Cd = None if C is None else np.zeros(np.shape(C), dtype=np.complex128)
    Dd = None if D is None else np.zeros(np.shape(D), dtype=np.complex128)
    for c in range(h):
        if method in ("zoh", "mamba"):
            a_c, b_c = zoh_mpmath(A[c], B[c], dt, diagonal=diag)
            Ab[c] = np.diagonal(a_c) if diag else a_c
            # mamba: B_bar = dt B (Euler for B), exact up to one rounding
            Bb[c] = b_c if method == "zoh" else dt * B[c]
            if Cd is not None:
                Cd[c] = C[c]
            if Dd is not None:
                Dd[c] = D[c]
        else:
            res = gbt_mpmath(_dense(A[c], diag), B[c], None if C is None else np.asarray(C)[c],
                              None if D is None else np.asarray(D)[c], dt, _alpha(conv))
            Ab[c] = np.diagonal(res[0]) if diag else res[0]
            Bb[c] = res[1]
            if Cd is not None:
                Cd[c] = res[2] if conv["output"] == "shifted" else C[c]
            if Dd is not None:
                Dd[c] = res[3] if conv["output"] == "shifted" else D[c]
    out = {"A_bar": _real_if(Ab, A, B), "B_bar": _real_if(Bb, A, B)}
    if Cd is not None:
        out["C_d"] = _real_if(Cd, A, B, C)
    if Dd is not None:
        out["D_d"] = _real_if(Dd, A, B, C, D)
    return out


def discretize_bounds(inp, out, conv, dtype) -> Dict[str, Bound]:
    r"""Bounds per output.

    * zoh / mamba's ``A_bar``: :func:`zoh_mpmath_bounds` (condition number of the Van Loan
      exponential times the candidate's backward error ``gamma_{n+m}``, plus the mpmath oracle's final
      rounding; mamba's with ``B = 0`` in the block, as only ``e^{dt A}`` is compared).  Mamba's
      ``B_bar = dt B``: one rounding, ``gamma_1 |dt B|`` per side.
    * gbt family: a candidate solves ``M X = R`` with ``M = I - alpha dt A``; LU with partial
      pivoting is backward stable with ``|dM| <= gamma_{3n} |L||U|`` (Higham Thm 9.4, small growth
      for these well-conditioned ``M``) and forming ``M``, ``R`` rounds each entry (``<= 2u``), so
      ``||dX||_F <= cond_2(M) gamma_{3n+2} ||X||_F`` (Higham 7.1); the oracle is mpmath (its share is
      the final rounding to float64, ``gamma_1(float64) |X|``).  ``C_d = C M^{-1}`` likewise; ``D_d =
      D + alpha C B_bar`` adds ``alpha ||C||_F`` times ``B_bar``'s bound and ``gamma_{n+2}`` of the sum.
    * ``C_d, D_d`` under ``s4`` (and zoh/mamba): copies, one rounding allowed.
    """
    A, B, dt = np.asarray(inp["A"]), np.asarray(inp["B"]), float(np.asarray(inp["dt"]))
    C, D = inp.get("C"), inp.get("D")
    method, diag = conv["method"], bool(conv["diagonal"])
    h, n, m = B.shape
    bA = np.zeros(np.shape(out["A_bar"]))
    bB = np.zeros(np.shape(out["B_bar"]))
    bC = None if C is None else np.zeros(np.shape(C))
    bD = None if D is None else np.zeros(np.shape(D))
    src = ""
    for c in range(h):
        if method in ("zoh", "mamba"):
            ea, eb = zoh_mpmath_bounds(A[c], B[c] if method == "zoh" else np.zeros_like(B[c]), dt, dtype,
                                       diagonal=diag)
            bA[c] = ea.values
            if method == "zoh":
                bB[c] = eb.values
                src = ea.source
            else:
                bB[c] = componentwise_bound(np.abs(dt * B[c]), 1, dtype, what="B_bar = dt B, one rounding").values
                src = ea.source + "; B_bar = dt B: gamma_1 |dt B|"
            if bC is not None:
                bC[c] = gamma(1, dtype) * np.abs(C[c])
            if bD is not None:
                bD[c] = gamma(1, dtype) * np.abs(D[c])
        else:
            a = _alpha(conv)
            M = np.eye(n) - a * dt * _dense(A[c], diag)
            kappa = float(np.linalg.cond(M))
            k = 3 * n + 2
            g = gamma(k, dtype)
            nA = np.linalg.norm(np.asarray(out["A_bar"][c]))
            nB = np.linalg.norm(np.asarray(out["B_bar"][c]))
            bA[c] = kappa * g * nA + gamma(1, np.float64) * np.abs(out["A_bar"][c])
            bB[c] = kappa * g * nB + gamma(1, np.float64) * np.abs(out["B_bar"][c])
            src = (f"conditioned solve: cond_2(I - alpha dt A) x gamma_{{3n+2}}({np.dtype(dtype).name}) x ||X||_F "
                   "(Higham Thm 9.4 and 7.1) + the mpmath oracle's final rounding")
            if bC is not None:
                if conv["output"] == "shifted":
                    nC = np.linalg.norm(np.asarray(out["C_d"][c]))
                    bC[c] = kappa * g * nC + gamma(1, np.float64) * np.abs(out["C_d"][c])
                else:
                    bC[c] = gamma(1, dtype) * np.abs(C[c])
            if bD is not None:
                if conv["output"] == "shifted":
                    mag = np.abs(D[c]) + a * np.abs(C[c]) @ np.abs(out["B_bar"][c])
                    bD[c] = (a * np.linalg.norm(C[c]) * kappa * g * nB + gamma(n + 2, dtype) * mag
                             + gamma(1, np.float64) * np.abs(out["D_d"][c]))
                else:
                    bD[c] = gamma(1, dtype) * np.abs(D[c])
    res = {"A_bar": Bound(bA, src), "B_bar": Bound(bB, src)}
    shifted = conv["output"] == "shifted" and method not in ("zoh", "mamba")
    if bC is not None:
        res["C_d"] = Bound(bC, ("C_d = C (I - alpha dt A)^-1: " + src) if shifted else "C_d = C (a copy): gamma_1 |C|")
    if bD is not None:
        res["D_d"] = Bound(bD, ("D_d = D + alpha C B_bar: alpha ||C||_F x bound(B_bar) + gamma_{n+2} |D + alpha C B_bar| ["
                                + src + "]") if shifted else "D_d = D (a copy): gamma_1 |D|")
    return res


def discretize_reference(inp, conv):
    """Our literal reference (``refimpl.ssm.discretization.discretize``), for the low-precision baseline only."""
    from refimpl.ssm.discretization import discretize

    A, B = inp["A"], inp["B"]
    dt = np.asarray(inp["dt"]).astype(np.result_type(np.asarray(A).real.dtype, np.float32))
    Ab, Bb = discretize(A, B, dt, method=conv["method"], alpha=conv["alpha"] if conv["method"] == "gbt" else None,
                        diagonal=bool(conv["diagonal"]))
    out = {"A_bar": Ab, "B_bar": Bb}
    C, D = inp.get("C"), inp.get("D")
    if C is not None and conv["output"] == "shifted" and conv["method"] not in ("zoh", "mamba"):
        a = _alpha(conv)
        h, n, _ = np.shape(B)
        M = np.eye(n, dtype=Ab.dtype) - a * dt * _dense(A, conv["diagonal"])
        out["C_d"] = np.swapaxes(np.linalg.solve(np.swapaxes(M, -1, -2), np.swapaxes(C, -1, -2)), -1, -2)
        if D is not None:
            out["D_d"] = D + a * np.einsum("hpn,hnm->hpm", C, Bb)
    else:
        if C is not None:
            out["C_d"] = C
        if D is not None:
            out["D_d"] = D
    return out


# ----------------------------------------------------------------------------------------------------------
# ssm.discretize: cases
# ----------------------------------------------------------------------------------------------------------

def _system(rng, conv, h, n, m, p, complex_=False, scale=1.0):
    diag = bool(conv["diagonal"])
    A, B, C, D = random_stable_system(rng, h, n, m, p, diagonal=diag, complex_=complex_, scale=scale)
    if not complex_:
        B, C = B.real, C.real
    return A, B, C, D


def discretize_sample(rng: np.random.Generator, conv) -> Dict[str, Any]:
    h, n, m, p = (int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    cplx = bool(rng.integers(0, 2)) if conv["diagonal"] else not bool(rng.integers(0, 3))  # dense: complex 1 in 3
    cplx = cplx and bool(conv["complex_A"])
    A, B, C, D = _system(rng, conv, h, n, m, p, complex_=cplx)
    dt = float(10.0 ** rng.uniform(-3, 0.3))
    return {"A": A, "B": B, "dt": np.asarray(dt), "C": C, "D": D}


def discretize_strategy(conv):
    from hypothesis import strategies as st

    @st.composite
    def inputs(draw):
        seed = draw(st.integers(0, 2**32 - 1))
        return discretize_sample(np.random.default_rng(seed), conv)

    return inputs()


def discretize_cases(conv) -> List[Case]:
    diag = bool(conv["diagonal"])
    cases = []

    def add(cid, kind, A, B, dt, C, D, note):
        cases.append(Case(OP_DISCRETIZE, cid, kind, {"A": np.asarray(A), "B": np.asarray(B), "dt": np.asarray(float(dt)),
                                                     "C": np.asarray(C), "D": np.asarray(D)}, dict(conv), note=note))

    if diag:
        add("golden-diag", "golden", [[-1.0, -0.5, -2.0]], [[[1.0], [0.5], [2.0]]], 0.1, [[[1.0, -1.0, 0.5]]], [[[0.25]]],
            "three real decay rates, dt 0.1")
        if conv["complex_A"]:
            add("golden-diag-complex", "golden", [[-0.5 + 2j, -0.5 - 2j]], [[[1.0 + 0j], [1.0 + 0j]]], 0.05,
                [[[0.5 - 0.25j, 0.5 + 0.25j]]], [[[0.0]]], "a conjugate pair (S4D-style complex diagonal)")
        add("edge-A-zero", "edge", [[0.0, -1e-12]], [[[1.0], [1.0]]], 0.5, [[[1.0, 1.0]]], [[[1.0]]],
            "A -> 0: ZOH's B_bar -> dt B exactly (the accumulator); the A^{-1}(e^{dtA} - I) formula breaks here")
        add("edge-stiff", "edge", [[-50.0, -0.01]], [[[1.0], [1.0]]], 1.0, [[[1.0, 1.0]]], [[[0.0]]],
            "stiff: dt |A| = 50 (A_bar ~ e^-50) next to dt |A| = 0.01")
    else:
        add("golden-oscillator", "golden", [[[0.0, 1.0], [-2.0, -0.5]]], [[[0.0], [1.0]]], 0.1, [[[1.0, 0.0]]], [[[0.0]]],
            "damped oscillator x'' + 0.5 x' + 2 x = u, dt 0.1")
        add("golden-two-channels", "golden", [[[-1.0, 0.5], [0.0, -2.0]], [[-0.3, 1.0], [-1.0, -0.3]]],
            [[[1.0, 0.0], [0.5, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], 0.25, [[[1.0, 2.0]], [[0.0, 1.0]]],
            [[[0.5, 0.0]], [[0.0, 0.0]]], "two channels, m = 2 inputs")
        add("edge-A-zero", "edge", [[[0.0, 0.0], [0.0, 0.0]]], [[[1.0], [2.0]]], 0.5, [[[1.0, 1.0]]], [[[1.0]]],
            "A = 0: ZOH's B_bar = dt B exactly; an A^{-1} formula divides by zero")
        add("edge-A-tiny", "edge", [[[-1e-9, 1e-9], [0.0, -2e-9]]], [[[1.0], [1.0]]], 1.0, [[[1.0, 0.0]]], [[[0.0]]],
            "A -> 0: cancellation in e^{dtA} - I unless phi1 is evaluated stably")
        add("edge-n1", "edge", [[[-3.0]]], [[[2.0, -1.0]]], 2.0, [[[1.0]]], [[[0.0, 0.0]]], "n = 1, m = 2, dt |A| = 6")
        if conv["complex_A"]:
            A, B, C, D = _system(np.random.default_rng(2025), conv, 2, 3, 2, 1, complex_=True)
            add("golden-dense-complex", "golden", A, B, 0.3, C, D, "a complex dense system (2 channels, n = 3, m = 2)")
    # small dt |A| (a series branch of phi1 or of the exponential, if the candidate has one) next to O(1)
    A, B, C, D = _system(np.random.default_rng(2026), conv, 1, 3, 1, 1)
    add("edge-small-dtA", "edge", A, B, 0.02, C, D, "dt |A| ~ 0.01 to 0.05: where a series for phi1 is used")
    return cases


# ----------------------------------------------------------------------------------------------------------
# ssm.lti
# ----------------------------------------------------------------------------------------------------------

LTI_LENGTHS = (0, 1, 2, 3, 7, 16, 17, 63, 65)  # 63, 65: a chunk (64, refimpl's default) +- 1
REAL_OUTPUTS = ("complex", "re", "2re")


def _lti_eff(inp, conv):
    """The inputs the candidate claims to use: without ``use_h0`` no initial state is passed (a convolution
    view has none), so the oracle starts from zero too."""
    x = dict(inp)
    if not conv["use_h0"]:
        x["h0"] = None
    return x


def lti_oracle(inp, conv):
    inp = _lti_eff(inp, conv)
    diag = bool(conv["diagonal"])
    cplx = any(np.iscomplexobj(inp[k]) for k in inp if inp[k] is not None and np.asarray(inp[k]).dtype.kind in "fc")
    ro = conv["real_output"]
    if ro == "2re":
        # 2 Re(C h) + D x: the state part doubled, the skip once (D x from the operator with C = 0, h0 = 0)
        y_h, hL = apply_dense(inp["A_bar"], inp["B_bar"], inp["C"], None, inp["x"], h0=inp.get("h0"), diagonal=diag)
        y = 2.0 * y_h.real
        if inp.get("D") is not None:
            y = y + np.einsum("hpm,blhm->blhp", np.asarray(inp["D"]), np.asarray(inp["x"])).real
    else:
        y, hL = apply_dense(inp["A_bar"], inp["B_bar"], inp["C"], inp.get("D"), inp["x"], h0=inp.get("h0"),
                            diagonal=diag)
        if ro == "re" or not cplx:
            y = y.real
    if not cplx:
        hL = hL.real
    return {"y": y, "h_last": hL}


def _kernel_powers(A_bar, B_bar, C, L, diagonal):
    """``K_k = C A_bar^k B_bar`` (l h p m) in float64 by repeated multiplication (a bound's magnitude only)."""
    A_bar, B_bar, C = (np.asarray(a) for a in (A_bar, B_bar, C))
    h, n, m = B_bar.shape
    K = np.zeros((L, h, C.shape[1], m), dtype=np.result_type(A_bar, B_bar, C, np.float64))
    P = B_bar.astype(K.dtype)
    for k in range(L):
        K[k] = np.einsum("hpn,hnm->hpm", C, P)
        P = A_bar[..., None] * P if diagonal else np.einsum("hij,hjm->him", A_bar, P)
    return K


def _time_varying(inp, conv) -> bool:
    return np.ndim(inp["A_bar"]) == (2 if conv["diagonal"] else 3) + 1


def lti_bounds(inp, out, conv, dtype):
    inp = _lti_eff(inp, conv)
    by, bh = lti_bound(inp["A_bar"], inp["B_bar"], inp["C"], inp.get("D"), inp["x"], dtype, h0=inp.get("h0"),
                       diagonal=bool(conv["diagonal"]))
    if conv["algorithm"] == "fft" and not _time_varying(inp, conv):
        # an FFT convolution's rounding is normwise (oracles.ssm.fft_bound_lti), on top of the direct sum's
        L = np.shape(inp["x"])[1]
        K = _kernel_powers(inp["A_bar"], inp["B_bar"], inp["C"], L, bool(conv["diagonal"]))
        by = by + fft_bound_lti(np.abs(K), np.abs(np.asarray(inp["x"])), dtype)
    if conv["real_output"] == "2re":
        # |2 Re(e)| <= 2 |e|: the doubled state part (the skip's share doubled too: an upper bound)
        by = Bound(2.0 * np.asarray(by.values), by.source + " x 2 (2 Re)")
    return {"y": by, "h_last": bh}


def lti_reference(inp, conv):
    """Our literal reference (``refimpl.ssm.lti.lti_ssm``, recurrent view); the op's ``h0`` is its ``initial_state``."""
    from refimpl.ssm.lti import lti_ssm

    inp = _lti_eff(inp, conv)
    C = inp["C"]
    if conv["real_output"] == "2re":
        C = np.asarray(C) * 2  # exact: a power-of-two scaling (D x then enters once)
    y, hL = lti_ssm(inp["A_bar"], inp["B_bar"], C, inp.get("D"), inp["x"], view="recurrent",
                    initial_state=inp.get("h0"), diagonal=bool(conv["diagonal"]), return_final_state=True)
    if conv["real_output"] != "complex":
        y = y.real
    return {"y": y, "h_last": hL}


def _zoh_diag(A, B, dt):
    """Discrete diagonal system for test inputs (Van Loan per channel; inputs only, not an oracle)."""
    Ab = np.exp(dt * A)
    Bb = np.stack([van_loan_zoh(A[c], B[c], dt, diagonal=True)[1] for c in range(A.shape[0])])
    return Ab, Bb


def _zoh_dense(A, B, dt):
    """Discrete dense system for test inputs, one ``dt`` per channel (Van Loan; inputs only, not an oracle)."""
    pairs = [van_loan_zoh(A[c], B[c], dt[c]) for c in range(A.shape[0])]
    return np.stack([p_[0] for p_ in pairs]), np.stack([p_[1] for p_ in pairs])


def lti_sample(rng, conv, L=None, *, complex_=None, h0=None, tv=None, n=None):
    r"""One seeded input set under ``conv``.

    ``complex_``: complex ``A`` (dense or diagonal; default: a coin).  ``h0``: pass an initial state (default:
    three times in four when the candidate claims ``use_h0``; never otherwise).  ``tv``: a time-varying system
    (default: a coin when the candidate claims ``time_varying``): a per-step ``dt (l h)`` of one dense ``A``
    per channel *and* per-step ``B``, so that the transitions of different steps do not commute.
    """
    diag = bool(conv["diagonal"])
    h, m, p, b = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    n = int(rng.integers(1, 5)) if n is None else n
    L = int(rng.choice(LTI_LENGTHS)) if L is None else L
    cplx = (bool(rng.integers(0, 2)) if complex_ is None else complex_) and bool(conv["complex_A"])
    with_h0 = (bool(conv["use_h0"]) and bool(rng.integers(0, 4))) if h0 is None else (h0 and bool(conv["use_h0"]))
    tv = (bool(conv["time_varying"]) and not diag and bool(rng.integers(0, 2))) if tv is None else tv
    A, B, C, D = random_stable_system(rng, h, n, m, p, diagonal=diag, complex_=cplx)
    if tv:
        # one system per step: A_t = expm(dt_t A^{(t)}) from a per-step dt and a per-step continuous A, B
        steps = [random_stable_system(rng, h, n, m, p, complex_=cplx) for _ in range(L)]
        dts = 10.0 ** rng.uniform(-2, 0, size=(L, h))
        pairs = [_zoh_dense(steps[t][0], steps[t][1], dts[t]) for t in range(L)]
        dtype = np.result_type(A, B, np.float64)
        Ab = np.stack([q[0] for q in pairs]) if L else np.zeros((0, h, n, n), dtype)
        Bb = np.stack([q[1] for q in pairs]) if L else np.zeros((0, h, n, m), dtype)
    else:
        dt = float(10.0 ** rng.uniform(-2, 0))
        if diag:
            Ab, Bb = _zoh_diag(A, B, dt)
        else:
            Ab, Bb = _zoh_dense(A, B, np.full(h, dt))
    x = rng.standard_normal((b, L, h, m))
    s0 = rng.standard_normal((b, h, n)) + (1j * rng.standard_normal((b, h, n)) if cplx else 0)
    return {"A_bar": Ab, "B_bar": Bb, "C": C, "D": D, "x": x, "h0": s0 if with_h0 else None}


def lti_strategy(conv):
    from hypothesis import strategies as st

    seeds = seeded_strategy(lti_sample, conv)
    try:
        from oracles.strategies.ssm import lti_cases
    except ImportError:
        return seeds
    diag = bool(conv["diagonal"])

    def to_inputs(c):
        # the family's strategy draws a continuous system; discretize it by Van Loan (test input only)
        h = c.B.shape[0]
        if c.diagonal:
            Ab = np.exp(c.dt[:, None] * c.A)
            Bb = np.stack([van_loan_zoh(c.A[k], c.B[k], c.dt[k], diagonal=True)[1] for k in range(h)])
        else:
            Ab, Bb = _zoh_dense(c.A, c.B, c.dt)
        return _lti_eff({"A_bar": Ab, "B_bar": Bb, "C": c.C, "D": c.D, "x": c.x, "h0": c.initial_state}, conv)

    family = lti_cases(complex_ok=bool(conv["complex_A"])).filter(lambda c: c.diagonal == diag).map(to_inputs)
    # a time-varying candidate also gets this op's sampler (per-step systems, the h0 coin)
    return st.one_of(family, seeds) if conv["time_varying"] else family


def lti_cases_fn(conv) -> List[Case]:
    """Every argument path by default: L = 0, 1, 2, odd, a chunk +- 1, long; real and complex A; an initial state
    given and not (when the candidate claims ``use_h0``); time-varying systems when it claims ``time_varying``."""
    out = []
    if conv["time_varying"] and conv["diagonal"]:
        raise ValueError("convention time_varying: a time-varying diagonal A_bar (l h n) cannot be told apart from a "
                         "dense (h n n) in this op's signature; verify time-varying systems with diagonal=False")
    rows = [("edge-L0", "edge", 0, "L = 0: empty output, final state = h0", {}),
            ("edge-L1", "edge", 1, "L = 1", {}),
            ("edge-L2-complex", "edge", 2, "L = 2, complex A", {"complex_": True}),
            ("golden-L17", "golden", 17, "seeded real system, L = 17 (odd, not a power of two)", {"complex_": False}),
            ("golden-L17-complex", "golden", 17, "seeded complex system, L = 17", {"complex_": True}),
            ("edge-chunk-1", "edge", 63, "L = 63 (a chunk of 64 minus one), complex", {"complex_": True}),
            ("edge-chunk+1", "edge", 65, "L = 65 (a chunk of 64 plus one), real", {"complex_": False}),
            ("edge-long", "edge", 300, "long sequence, L = 300", {"n": 2})]
    if conv["use_h0"]:
        rows = [(cid, kind, L, note + ", with h0", dict(kw, h0=True)) for cid, kind, L, note, kw in rows]
        rows += [("edge-no-h0", "edge", 17, "L = 17 without h0 (the state starts at zero)", {"h0": False}),
                 ("edge-L0-no-h0", "edge", 0, "L = 0 without h0: the final state is zero", {"h0": False})]
    if conv["time_varying"]:
        rows += [("tv-L1", "edge", 1, "time-varying, L = 1", {"tv": True}),
                 ("tv-L17", "golden", 17, "time-varying (per-step dt, A, B; non-commuting), L = 17",
                  {"tv": True, "complex_": False}),
                 ("tv-L65-complex", "edge", 65, "time-varying complex system, L = 65", {"tv": True, "complex_": True})]
    for cid, kind, L, note, kw in rows:
        rng = np.random.default_rng([2024, L, len(out)])
        kw.setdefault("tv", False)
        inp = lti_sample(rng, conv, L=L, **kw)
        out.append(Case(OP_LTI, cid, kind, inp, dict(conv), seed=2024, note=note))
    return out


register_op(OpSpec(
    name=OP_DISCRETIZE,
    summary="continuous (A, B[, C, D]) -> discrete (A_bar, B_bar[, C_d, D_d]) with the method named",
    inputs=(Arg("A", "h n n | h n", "continuous state matrix (dense, or its diagonal when diagonal=True)"),
            Arg("B", "h n m", "input matrix"),
            Arg("dt", "", "step (a positive scalar)"),
            Arg("C", "h p n", "output matrix (only needed to check C_d)", optional=True),
            Arg("D", "h p m", "feedthrough (only needed to check D_d)", optional=True)),
    outputs=(Arg("A_bar", "h n n | h n"), Arg("B_bar", "h n m"),
             Arg("C_d", "h p n", optional=True), Arg("D_d", "h p m", optional=True)),
    conventions=(
        Convention("method", "zoh", "discretization: zoh (exact for held input), bilinear (Tustin), gbt(alpha), "
                   "forward/backward Euler, mamba (A by ZOH, B by Euler: B_bar = dt B)", METHODS),
        Convention("alpha", 0.5, "the gbt parameter in [0, 1] (only for method='gbt')"),
        Convention("diagonal", False, "A given as its diagonal (h n) instead of dense (h n n)", (False, True)),
        Convention("complex_A", True, "the candidate takes complex systems: cases are real and complex (dense and "
                   "diagonal); False: every case is real", (True, False)),
        Convention("output", "s4", "C_d, D_d: 's4' keeps C and D (S4's convention); 'shifted' is scipy's "
                   "half-step-shifted state for the gbt family (C_d = C (I - alpha dt A)^-1, D_d = D + alpha C B_bar)",
                   ("s4", "shifted")),
    ),
    **op_functions(globals(), "discretize_"),
    complex_inputs=("A", "B", "C"),
    module=__name__,
    notes="oracles: Van Loan block exponential (zoh, mamba) and the closed form in mpmath (gbt family)",
))

register_op(OpSpec(
    name=OP_LTI,
    summary="the discrete linear SSM h_t = A_bar h_{t-1} + B_bar x_t, y_t = C h_t + D x_t (any view)",
    inputs=(Arg("A_bar", "h n n | h n | l h n n", "dense, diagonal (diagonal=True), or one dense matrix per step "
                "(time_varying=True)"),
            Arg("B_bar", "h n m | l h n m", "time-invariant, or one per step (time_varying=True)"),
            Arg("C", "h p n"), Arg("D", "h p m", optional=True),
            Arg("x", "b l h m"), Arg("h0", "b h n", "the state before step 0", optional=True)),
    outputs=(Arg("y", "b l h p"), Arg("h_last", "b h n", "h_{L-1} (h0, or zero, when L = 0)", optional=True)),
    conventions=(Convention("diagonal", False, "A_bar given as its diagonal (h n)", (False, True)),
                 Convention("real_output", "complex", "y of a complex system: 'complex' (C h + D x as is), 're' "
                            "(Re(C h + D x): the full spectrum, e.g. S5 without conjugate symmetry), '2re' "
                            "(2 Re(C h) + D x: one eigenvalue per conjugate pair)", REAL_OUTPUTS),
                 Convention("complex_A", True, "the candidate takes complex systems (A_bar, B_bar, C, h0): cases are "
                            "real and complex; False: every case is real", (True, False)),
                 feature_convention("use_h0", "the candidate takes an initial state h0: cases pass one (and some "
                            "none); False: no case passes one (a convolution view has none)"),
                 Convention("time_varying", False, "the candidate takes one system per step (A_bar (l h n n), "
                            "B_bar (l h n m), e.g. from a per-step dt): half of the random cases and three edge "
                            "cases are time-varying, with non-commuting transitions (dense only)", (False, True)),
                 Convention("algorithm", "direct", "the candidate's evaluation (sets the bound only): 'direct' "
                            "(recurrence, scan, direct convolution, chunked) or 'fft' (an FFT convolution: adds the "
                            "normwise FFT rounding bound)", ("direct", "fft"))),
    **op_functions(globals(), "lti_"),
    cases=lti_cases_fn,
    probes=(causality_probe({"x": "l"}, {"y": "l"}),),
    complex_inputs=("A_bar", "B_bar", "C", "h0"),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n")),
    module=__name__,
    notes="oracle: the dense time-varying operator (oracles.ssm.apply_dense); bound: oracles.ssm.lti_bound",
))


# ----------------------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------------------

_SCIPY_NAMES = {"zoh": "zoh", "bilinear": "bilinear", "gbt": "gbt", "forward_euler": "euler",
                "backward_euler": "backward_diff"}


def _scipy_method(conv):
    if conv["method"] == "mamba":
        raise ValueError("scipy.signal.cont2discrete has no Mamba mix (A by ZOH, B by Euler)")
    return _SCIPY_NAMES[conv["method"]]


register_adapter(Adapter(
    name="scipy.cont2discrete",
    op=OP_DISCRETIZE,
    doc="scipy.signal.cont2discrete((A, B, C, D), dt, method, alpha) -> (Ad, Bd, Cd, Dd, dt): one unbatched dense "
        "system per call (looped over h), method names zoh/bilinear/gbt/euler/backward_diff.  Its C_d, D_d follow "
        "output='shifted' (verify with --conv output=shifted); under S4's output='s4' they are reported as a deviation",
    args=(Group(In("A"), In("B"), In("C"), In("D")), In("dt", scalar=True)),
    kwargs={"method": Conv(_scipy_method), "alpha": Conv(lambda c: c["alpha"] if c["method"] == "gbt" else None)},
    outputs=(Out("A_bar", 0), Out("B_bar", 1), Out("C_d", 2), Out("D_d", 3)),
    implies={"diagonal": False},
    vectorize="h",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_DISCRETIZE,
    doc="refimpl.ssm.discretization.discretize(A, B, dt, method=..., alpha=..., diagonal=...) -> (A_bar, B_bar)",
    args=(In("A"), In("B"), In("dt")),
    kwargs={"method": Conv(lambda c: c["method"]),
            "alpha": Conv(lambda c: c["alpha"] if c["method"] == "gbt" else None),
            "diagonal": Conv(lambda c: bool(c["diagonal"]))},
    outputs=(Out("A_bar", 0), Out("B_bar", 1)),
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_LTI,
    doc="refimpl.ssm.lti.lti_ssm and its views: fn(A_bar, B_bar, C, D, x, initial_state=h0, diagonal=..., "
        "return_final_state=True) -> (y, h_last); the layouts are the op's (x (b l d m), states (b d n))",
    args=(In("A_bar"), In("B_bar"), In("C"), In("D"), In("x")),
    kwargs={"initial_state": In("h0"), "diagonal": Conv(lambda c: bool(c["diagonal"])),
            "return_final_state": Const(True)},
    outputs=(Out("y", 0), Out("h_last", 1)),
))
