"""Report rows for the SSM core: every discretization and every LTI view/backend.

Oracles: the discretizations against their closed forms evaluated in mpmath (ZOH and Mamba's ``A_bar``
by mpmath's own matrix exponential of the Van Loan block matrix, the gbt family by its solve in
mpmath), never against scipy's ``expm``/``cont2discrete`` that compute the same thing the same way;
ZOH also against the ODE solution (``solve_ivp``).  The LTI views against the dense time-varying
operator :func:`oracles.ssm.apply_dense`.
"""
from __future__ import annotations

import numpy as np

from oracles import ssm as O
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare, componentwise_bound, conditioned_bound
from oracles.verify.ops_ssm import gbt_mpmath, zoh_mpmath, zoh_mpmath_bounds

SEED = 20261126
GBT_ALPHA = {"bilinear": 0.5, "forward_euler": 0.0, "backward_euler": 1.0}


def _final_rounding(X) -> Bound:
    """The mpmath oracle's one rounding to float64: ``gamma_1(float64) |X|``."""
    return componentwise_bound(np.abs(X), 1, np.float64, oracle_dtype=None, what="oracle's final rounding")


def _solve_bound(M: np.ndarray, X: np.ndarray, dtype, what: str) -> Bound:
    """Forward error of an LU solve ``M X = R`` (the candidate's): ``cond_inf(M) x gamma_{3n} x n ||X||_max``
    (Higham Thm 9.4, 7.2; growth factor 1), plus the exact oracle's final rounding."""
    n = M.shape[-1]
    cond = float(np.linalg.cond(M, np.inf)) if n else 1.0
    return conditioned_bound(cond, np.max(np.abs(X)) * n, 3 * n, dtype, what=what, oracle_dtype=None) \
        + _final_rounding(X)


def _real_if(X, *like):
    return X if any(np.iscomplexobj(a) for a in like) else X.real


def discretization_oracle(method, A, B, dt, *, alpha=None, diagonal=False, dtype=np.float64):
    """``(A_bar, B_bar)`` of one system (``A`` (n n) or (n,), ``B`` (n m)) by mpmath, plus the bounds of a
    ``dtype`` candidate; ``A_bar`` is returned dense (compare ``np.diag`` of a diagonal candidate)."""
    n = B.shape[0]
    Ad = np.diag(A) if diagonal else A
    if method == "zoh":
        a, b = zoh_mpmath(A, B, dt, diagonal=diagonal)
        ba, bb = zoh_mpmath_bounds(A, B, dt, dtype, exact=(a, b))
        return a, b, ba, bb
    if method == "mamba":
        # A_bar = e^{dt A}: the top-left block of the Van Loan exponential with B = 0; B_bar = dt B, one
        # rounding on the candidate's side and one on the oracle's (float64)
        zero = np.zeros_like(B)
        a, _ = zoh_mpmath(A, zero, dt, diagonal=diagonal)
        ba, _ = zoh_mpmath_bounds(A, zero, dt, dtype, exact=(a, zero))
        return a, dt * B, ba, componentwise_bound(dt * np.abs(B), 1, dtype, what="dt*B")
    al = GBT_ALPHA.get(method, alpha)
    a, b = (_real_if(X, A, B) for X in gbt_mpmath(Ad, B, None, None, dt, al))
    if method == "forward_euler":
        # I + dt A: two roundings per entry; dt B: one (the oracle is exact up to its final rounding)
        return a, b, componentwise_bound(np.eye(n) + dt * np.abs(Ad), 2, dtype, oracle_dtype=None, what="I + dt*A") \
            + _final_rounding(a), componentwise_bound(dt * np.abs(B), 1, dtype, oracle_dtype=None, what="dt*B") \
            + _final_rounding(b)
    M = np.eye(n) - al * dt * Ad
    return a, b, _solve_bound(M, a, dtype, "solve with I - alpha dt A"), _solve_bound(M, b, dtype,
                                                                                     "solve with I - alpha dt A")


@check
def discretizations():
    from refimpl.ssm.discretization import discretize

    rng = np.random.default_rng(SEED)
    rows = []
    dt = 0.3
    for diagonal in (False, True):
        A, B, _, _ = O.random_stable_system(rng, 1, 6, 2, 1, diagonal=diagonal)
        for method, alpha in (("zoh", None), ("bilinear", None), ("gbt", 0.3), ("forward_euler", None),
                              ("backward_euler", None), ("mamba", None)):
            (Ab, Bb), t = timed(discretize, A, B, dt, method=method, alpha=alpha, diagonal=diagonal)
            a, b, ba, bb = discretization_oracle(method, A[0], B[0], dt, alpha=alpha, diagonal=diagonal)
            cand_a = np.diag(Ab[0]) if diagonal else Ab[0]
            ca = compare(cand_a, a, ba)
            cb = compare(Bb[0], b, bb)
            cmp = ca if ca.worst_ratio >= cb.worst_ratio else cb
            oracle = {"zoh": "mpmath expm of the Van Loan block",
                      "mamba": "mpmath expm + closed form"}.get(method, "closed form solved in mpmath")
            rows.append(row(f"ssm.discretize.{method}", f"reference/{'diagonal' if diagonal else 'dense'}", cmp, t,
                            note=f"oracle: {oracle}; worst of A_bar, B_bar"))
    # ZOH against the continuous-time solution at the sample points.
    A, B, C, Dm = O.random_stable_system(rng, 1, 4, 2, 2)
    x = rng.standard_normal((1, 24, 1, 2))
    from refimpl.ssm.lti import lti_ssm

    def run():
        Ab, Bb = discretize(A, B, dt, method="zoh")
        return lti_ssm(Ab, Bb, C, Dm, x, view="recurrent")

    y, t = timed(run)
    hs, y_ode = O.ode_solution(A[0], B[0], C[0], Dm[0], x[0, :, 0], dt)
    Ab, Bb = discretize(A, B, dt, method="zoh")
    by, _ = O.lti_bound(Ab, Bb, C, Dm, x, np.float64)
    bound = O.ode_bound(Ab[0], C[0], hs, Bound(by.values[0, :, 0], by.source))
    rows.append(row("ssm.discretize.zoh.ode", "reference/recurrent", compare(y[0, :, 0], y_ode, bound), t,
                    note="oracle: solve_ivp DOP853 with held input"))
    return rows


# report name -> (view, backend) of refimpl.ssm.lti.lti_ssm
VIEWS = {
    "reference/recurrent": ("recurrent", "numpy"),
    "reference/conv-direct": ("convolution", "numpy"),
    "reference/conv-fft": ("fft", "numpy"),
    "reference/scan": ("scan", "numpy"),
    "reference/chunked": ("chunked", "numpy"),
    "numba/recurrent": ("recurrent", "numba"),
    "numba/conv-direct": ("convolution", "numba"),
}
TIME_VARYING_VIEWS = ("reference/recurrent", "reference/scan", "numba/recurrent")


def _run(impl, *args, **kw):
    from refimpl.ssm.lti import lti_ssm

    view, backend = VIEWS[impl]
    if view == "chunked":
        kw["chunk"] = 16
    return lti_ssm(*args, view=view, backend=backend, return_final_state=True, **kw)


@check
def lti_views():
    from refimpl.ssm.discretization import discretize
    from refimpl.ssm.lti import lti_kernel

    rows = []
    rng = np.random.default_rng(SEED + 1)
    d, n, m, p, b, l = 2, 8, 2, 2, 2, 100
    for diagonal, cplx in ((False, False), (True, True)):
        A, B, C, Dm = O.random_stable_system(rng, d, n, m, p, diagonal=diagonal, complex_=cplx)
        Ab, Bb = discretize(A, B, np.array([0.05, 0.2]), method="zoh", diagonal=diagonal)
        for dtype in ((np.complex128, np.complex64) if cplx else (np.float64, np.float32)):
            cast = (lambda a, dtype=dtype: a.astype(np.result_type(a.dtype, dtype)).astype(dtype))
            x = rng.standard_normal((b, l, d, m))
            s0 = rng.standard_normal((b, d, n))
            args = [cast(a) for a in (Ab, Bb, C, Dm, x)]
            s0c = cast(s0)
            # the oracle sees exactly the candidate's inputs, cast up losslessly
            up = [a.astype(np.complex128 if np.iscomplexobj(a) else np.float64) for a in args]
            s0_up = s0c.astype(np.complex128 if np.iscomplexobj(s0c) else np.float64)
            y_or, s_or = O.apply_dense(*up, h0=s0_up, diagonal=diagonal)
            by, bs = O.lti_bound(*up, dtype, h0=s0_up, diagonal=diagonal)
            kind = "diagonal" if diagonal else "dense"
            for impl in VIEWS:
                _run(impl, *args, initial_state=s0c, diagonal=diagonal)  # warm
                (y, s), t = timed(_run, impl, *args, initial_state=s0c, diagonal=diagonal)
                bound = by
                if impl.endswith("fft"):
                    K = lti_kernel(*up[:3], l, diagonal=diagonal)
                    bound = by + O.fft_bound_lti(K, up[4], dtype)
                cy, cs = compare(y, y_or, bound, dtype=dtype), compare(s, s_or, bs, dtype=dtype)
                rows.append(row(f"ssm.lti.{kind}", impl, cy if cy.worst_ratio >= cs.worst_ratio else cs, t,
                                note="oracle: dense time-varying operator; initial state given; worst of y, "
                                     "final state"))
    # time-varying: one discretized continuous system per step (transitions that do not commute)
    for diagonal in (False, True):
        steps = [O.random_stable_system(rng, d, n, m, p, diagonal=diagonal) for _ in range(l)]
        A_t, B_t = np.stack([s_[0] for s_ in steps]), np.stack([s_[1] for s_ in steps])
        C, Dm = steps[0][2], steps[0][3]
        Ab, Bb = discretize(A_t, B_t, 10.0 ** rng.uniform(-2, 0, (l, d)), method="zoh", diagonal=diagonal)
        x = rng.standard_normal((b, l, d, m))
        s0 = rng.standard_normal((b, d, n))
        y_or, s_or = O.apply_dense(Ab, Bb, C, Dm, x, h0=s0, diagonal=diagonal)
        by, bs = O.lti_bound(Ab, Bb, C, Dm, x, np.float64, h0=s0, diagonal=diagonal)
        for impl in TIME_VARYING_VIEWS:
            _run(impl, Ab, Bb, C, Dm, x, initial_state=s0, diagonal=diagonal)  # warm
            (y, s), t = timed(_run, impl, Ab, Bb, C, Dm, x, initial_state=s0, diagonal=diagonal)
            cy, cs = compare(y, y_or, by), compare(s, s_or, bs)
            rows.append(row(f"ssm.lti.time_varying.{'diagonal' if diagonal else 'dense'}", impl,
                            cy if cy.worst_ratio >= cs.worst_ratio else cs, t,
                            note="oracle: dense time-varying operator; a system per step; worst of y, final state"))
    return rows
