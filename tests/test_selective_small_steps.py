"""ZOH at small ``|Delta A|``: the regime of ``phi1``'s Taylor branch, checked against independent oracles.

``phi1(w) = (e^w - 1)/w`` is evaluated by the series ``1 + w/2 + w^2/6`` below ``|w| = 1e-5`` (the package's
one ``phi1``, :func:`refimpl.ssm.discretization.phi1`, and the Numba kernel's own).  Steps with
``5e-6 <= |Delta A| < 1e-5`` land in that branch while its quadratic term, ``|w|^2/6 >= 4e-12`` relative,
is four orders of magnitude above float64's derived bound: a wrong series coefficient (``w^2/3``, say)
fails here.  The references are 50-digit mpmath and the banded-solve oracle (whose ``phi1`` is its own
degree-4 polynomial below ``|w| = 1e-3``).
"""
from __future__ import annotations

import numpy as np
import pytest

from oracles import selective as O
from oracles.tolerance import assert_within
from refimpl.ssm.selective import selective_scan, selective_step

IMPLS = {"recurrent": ("recurrent", "numpy"), "scan": ("scan", "numpy"), "chunked": ("chunked", "numpy"),
         "numba": ("recurrent", "numba")}
SERIES_BELOW = 1e-5  # phi1's series threshold (refimpl.ssm.discretization.phi1 and the Numba kernel)


def _small_step_problem(rng, cplx, b=1, l=6, d=2, n=2):
    """Delta in [0.5, 0.95], |A| in [1e-5, 1.05e-5): 5e-6 <= |Delta A| < 1e-5."""
    delta = rng.uniform(0.5, 0.95, (b, l, d))
    mag = rng.uniform(1.0e-5, 1.05e-5, (d, n))
    ang = rng.uniform(0.5, 1.0, (d, n)) * np.pi if cplx else np.pi
    A = (mag * np.exp(1j * ang)) if cplx else -mag  # Re(A) < 0
    # one sign everywhere: the B_bar u terms (and a series error in them) accumulate coherently
    B = np.abs(rng.standard_normal((b, l, n))) + 0.5 + (1j * rng.standard_normal((b, l, n)) if cplx else 0)
    C = np.abs(rng.standard_normal((b, l, 1, n))) + 0.5
    u = np.abs(rng.standard_normal((b, l, d))) + 0.5
    return u, delta, A, B, C


def _mutant_effect(u, delta, A, B, C, **kw):
    """The output change if phi1's series read ``w^2/3`` for ``w^2/6``: every ``B_bar`` relatively off by
    ``w^2/6`` (evaluated with the oracle, B made per channel: grouped with g = d)."""
    w = delta[..., None] * A  # (b l d n)
    Bg = np.broadcast_to(B[:, :, None, :], w.shape)
    y0, _ = O.s6_solve(u, delta, A, Bg, C, **kw)
    y1, _ = O.s6_solve(u, delta, A, Bg * (1 + w * w / 6), C, **kw)
    return y1 - y0


@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("impl", list(IMPLS) + ["step"])
def test_zoh_below_the_series_threshold_matches_mpmath(impl, cplx):
    rng = np.random.default_rng(20261127 + cplx)
    u, delta, A, B, C = _small_step_problem(rng, cplx)
    w = delta[..., None] * A
    assert np.all(np.abs(w) < SERIES_BELOW) and np.all(np.abs(w) >= 5e-6)  # the series branch, its w^2 term resolved
    kw = dict(discretization="zoh", initial_state=np.zeros((1, 2, 2)) + (0j if cplx else 0))
    ym, hm = O.s6_mpmath(u, delta, A, B, C, **kw)
    bo, bs = O.s6_bound(u, delta, A, B, C, **kw, dtype=np.float64, oracle_dtype=None,
                        view="recurrent" if impl == "step" else impl, chunk=4)
    # the premise: a 1/6 -> 1/3 change of the series coefficient moves outputs far outside the bound
    assert np.max(np.abs(_mutant_effect(u, delta, A, B, C, **kw)) / bo.values) > 100
    if impl == "step":
        state, outs = kw["initial_state"], []
        for t in range(u.shape[1]):
            o, state = selective_step(state, u[:, t], delta[:, t], A, B[:, t], C[:, t], discretization="zoh")
            outs.append(o)
        y, h = np.stack(outs, axis=1), state
    else:
        view, backend = IMPLS[impl]
        y, h = selective_scan(u, delta, A, B, C, view=view, backend=backend, chunk=4, return_final_state=True, **kw)
    assert_within(y, ym, bo, context=f"{impl} ZOH at |Delta A| < 1e-5 vs mpmath")
    assert_within(h, hm, bs, context=f"{impl} ZOH state at |Delta A| < 1e-5 vs mpmath")


@pytest.mark.parametrize("cplx", [False, True])
def test_zoh_below_the_series_threshold_matches_the_solve_oracle(cplx):
    """A longer case against the banded-solve oracle (its phi1: a degree-4 polynomial, threshold 1e-3)."""
    rng = np.random.default_rng(7 + cplx)
    u, delta, A, B, C = _small_step_problem(rng, cplx, b=2, l=33, d=4, n=3)
    y, h = O.s6_solve(u, delta, A, B, C, discretization="zoh")
    bounds = O.s6_bounds(u, delta, A, B, C, discretization="zoh", dtype=np.float64, views=tuple(IMPLS), chunk=8)
    for impl, (view, backend) in IMPLS.items():
        out, last = selective_scan(u, delta, A, B, C, view=view, backend=backend, chunk=8, discretization="zoh",
                                   return_final_state=True)
        assert_within(out, y, bounds[impl][0], context=f"{impl} vs the solve oracle")
        assert_within(last, h, bounds[impl][1], context=f"{impl} state vs the solve oracle")
