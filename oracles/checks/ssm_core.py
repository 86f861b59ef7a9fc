"""Report rows for the SSM core: every discretization and every LTI view/backend."""
from __future__ import annotations

import numpy as np

from oracles import ssm as O
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare, componentwise_bound, conditioned_bound, gamma

SEED = 20261126


def _solve_bound(M: np.ndarray, X: np.ndarray, dtype, what: str) -> Bound:
    """Forward error of an LU solve M X = R on both sides: cond_inf(M) x gamma_{3n} x ||X||_inf (Higham Thm 9.4, 7.2; growth factor 1)."""
    n = M.shape[-1]
    cond = float(np.linalg.cond(M, np.inf)) if n else 1.0
    return conditioned_bound(cond, np.max(np.abs(X)) * n, 3 * n, dtype, what=what)


def discretization_oracle(method, A, B, dt, *, alpha=None, diagonal=False):
    """(A_bar, B_bar) by the independent route for ``method``, for one system, plus the bounds."""
    dtype = np.float64
    n = B.shape[0]
    Ad = np.diag(A) if diagonal else A
    eye = np.eye(n)
    if method == "zoh":
        a, b = O.van_loan_zoh(A, B, dt, diagonal=diagonal)
        ba, bb = O.expm_bound(A, B, dt, dtype, diagonal=diagonal)
        return a, b, ba, bb
    if method == "mamba":
        # A_bar by Van Loan's top-left block; B_bar = dt B exactly (one rounding of dt*B each side).
        a, _ = O.van_loan_zoh(A, B, dt, diagonal=diagonal)
        ba, _ = O.expm_bound(A, B, dt, dtype, diagonal=diagonal)
        return a, dt * B, ba, componentwise_bound(dt * np.abs(B), 1, dtype, what="dt*B")
    a, b = O.cont2discrete_AB(A, B, dt, method, alpha=alpha, diagonal=diagonal)
    if method == "forward_euler":
        # I + dt A: two roundings per entry; dt B: one.
        return a, b, componentwise_bound(eye + dt * np.abs(Ad), 2, dtype, what="I + dt*A"), \
            componentwise_bound(dt * np.abs(B), 1, dtype, what="dt*B")
    al = {"bilinear": 0.5, "backward_euler": 1.0, "gbt": alpha}[method]
    M = eye - al * dt * Ad
    return a, b, _solve_bound(M, a, dtype, "solve with I - alpha dt A"), _solve_bound(M, b, dtype, "solve with I - alpha dt A")


@check
def discretizations():
    from refimpl.ssm.discretization import reference as D

    rng = np.random.default_rng(SEED)
    rows = []
    dt = 0.3
    for diagonal in (False, True):
        A, B, _, _ = O.random_stable_system(rng, 1, 6, 2, 1, diagonal=diagonal)
        for method, alpha in (("zoh", None), ("bilinear", None), ("gbt", 0.3), ("forward_euler", None),
                              ("backward_euler", None), ("mamba", None)):
            (Ab, Bb), t = timed(D.discretize, A, B, dt, method, alpha=alpha, diagonal=diagonal)
            a, b, ba, bb = discretization_oracle(method, A[0], B[0], dt, alpha=alpha, diagonal=diagonal)
            cand_a = np.diag(Ab[0]) if diagonal else Ab[0]
            ca = compare(cand_a, a, ba)
            cb = compare(Bb[0], b, bb)
            cmp = ca if ca.worst_ratio >= cb.worst_ratio else cb
            oracle = {"zoh": "Van Loan expm", "mamba": "Van Loan expm + closed form"}.get(method, "scipy cont2discrete")
            rows.append(row(f"ssm.discretize.{method}", f"reference/{'diagonal' if diagonal else 'dense'}", cmp, t,
                            note=f"oracle: {oracle}; worst of A_bar, B_bar"))
    # ZOH against the continuous-time solution at the sample points.
    A, B, C, Dm = O.random_stable_system(rng, 1, 4, 2, 2)
    x = rng.standard_normal((1, 24, 1, 2))
    from refimpl.ssm.lti import reference as lti

    def run():
        Ab, Bb = D.zoh(A, B, dt)
        return lti.recurrent(Ab, Bb, C, Dm, x)

    y, t = timed(run)
    hs, y_ode = O.ode_solution(A[0], B[0], C[0], Dm[0], x[0, :, 0], dt)
    Ab, Bb = D.zoh(A, B, dt)
    by, _ = O.lti_bound(Ab, Bb, C, Dm, x, np.float64)
    bound = O.ode_bound(Ab[0], C[0], hs, Bound(by.values[0, :, 0], by.source))
    rows.append(row("ssm.discretize.zoh.ode", "reference/recurrent", compare(y[0, :, 0], y_ode, bound), t,
                    note="oracle: solve_ivp DOP853 with held input"))
    return rows


def _views(diagonal: bool):
    from refimpl.ssm.lti import reference as lti
    from refimpl.ssm.lti import numba as lti_numba

    V = {
        "reference/recurrent": lambda *a, **k: lti.recurrent(*a, **k),
        "reference/conv-direct": lambda *a, **k: lti.convolution(*a, method="direct", **k),
        "reference/conv-fft": lambda *a, **k: lti.convolution(*a, method="fft", **k),
        "reference/scan": lambda *a, **k: lti.scan(*a, **k),
        "reference/chunked": lambda *a, **k: lti.chunked(*a, chunk=16, **k),
        "numba/recurrent": lambda *a, **k: lti_numba.recurrent(*a, **k),
    }
    return V


@check
def lti_views():
    from refimpl.ssm.discretization import reference as D
    from refimpl.ssm.lti import reference as lti
    from refimpl.ssm.lti import numba as lti_numba

    rows = []
    rng = np.random.default_rng(SEED + 1)
    h, n, m, p, b, l = 2, 8, 2, 2, 2, 100
    for diagonal, cplx in ((False, False), (True, True)):
        A, B, C, Dm = O.random_stable_system(rng, h, n, m, p, diagonal=diagonal, complex_=cplx)
        Ab, Bb = D.zoh(A, B, np.array([0.05, 0.2]), diagonal=diagonal)
        for dtype in ((np.complex128, np.complex64) if cplx else (np.float64, np.float32)):
            cast = (lambda a, dtype=dtype: a.astype(np.result_type(a.dtype, dtype)).astype(dtype))
            x = rng.standard_normal((b, l, h, m))
            h0 = rng.standard_normal((b, h, n))
            args = [cast(a) for a in (Ab, Bb, C, Dm, x)]
            h0c = cast(h0)
            # the oracle sees exactly the candidate's inputs, cast up losslessly
            up = [a.astype(np.complex128 if np.iscomplexobj(a) else np.float64) for a in args]
            y_or, s_or = O.apply_dense(*up, h0=h0c.astype(up[0].dtype if np.iscomplexobj(h0c) else np.float64),
                                       diagonal=diagonal)
            by, bs = O.lti_bound(*up, dtype, h0=h0c, diagonal=diagonal)
            kind = "diagonal" if diagonal else "dense"
            for impl, fn in _views(diagonal).items():
                fn(*args, h0=h0c, diagonal=diagonal, return_state=True)  # warm
                (y, s), t = timed(fn, *args, h0=h0c, diagonal=diagonal, return_state=True)
                bound = by
                if impl.endswith("fft"):
                    K = lti.kernel(*up[:3], l, diagonal=diagonal)
                    fb = O.fft_bound_lti(K, up[4], dtype)
                    bound = by + fb
                rows.append(row(f"ssm.lti.{kind}", impl, compare(y, y_or, bound, dtype=dtype), t,
                                note="oracle: dense time-varying operator; h0 given"))
            # Numba convolution view (no h0): kernel + direct causal convolution
            y_or0, _ = O.apply_dense(*up, diagonal=diagonal)
            by0, _ = O.lti_bound(*up, dtype, diagonal=diagonal)
            lti_numba.convolution(*args, diagonal=diagonal)
            y, t = timed(lti_numba.convolution, *args, diagonal=diagonal)
            rows.append(row(f"ssm.lti.{kind}", "numba/conv-direct", compare(y, y_or0, by0, dtype=dtype), t,
                            note="oracle: dense time-varying operator"))
    return rows
