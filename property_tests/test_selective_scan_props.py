"""Property tests: every selective-scan view and backend against the independent oracles.

Each comparison uses the derived bound of :func:`oracles.selective.s6_bound` for the view under
test (its running-error weights, see that docstring), never a fixed atol.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import selective as O
from oracles.strategies.selective import s6_problems
from oracles.tolerance import assert_within
from refimpl.ssm.selective import selective_scan, selective_step

ORACLE_KEYS = ("delta_bias", "delta_softplus", "initial_state", "discretization")
# name -> (view, backend); the name is also the view of the error bound
IMPLS = {"recurrent": ("recurrent", "numpy"), "scan": ("scan", "numpy"), "chunked": ("chunked", "numpy"),
         "numba": ("recurrent", "numba")}
VIEWS = tuple(IMPLS)


def _args(pr):
    return [pr[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]


def _kw(pr):
    return {k: pr[k] for k in ORACLE_KEYS}


def _run(impl, pr, **extra):
    view, backend = IMPLS[impl]
    return selective_scan(*_args(pr), **_kw(pr), view=view, backend=backend, chunk=pr["chunk"],
                          return_final_state=True, **extra)


def _time_varying(X):
    """B/C layouts with a time axis (variable (b l n), grouped (b l g n)); a fixed (d n) matrix has none."""
    return X.ndim >= 3


def _check_view(view, pr, dtype):
    out, last = _run(view, pr)
    assert out.dtype == np.dtype(dtype) and out.shape == pr["u"].shape
    y, h = O.s6_solve(*_args(pr), **_kw(pr))
    bo, bs = O.s6_bound(*_args(pr), **_kw(pr), dtype=dtype, view=view, chunk=pr["chunk"])
    assert_within(out, y, bo, context=f"{view} out")
    assert_within(last, h, bs, context=f"{view} last state")


@given(pr=s6_problems(), view=st.sampled_from(VIEWS))
def test_views_match_loop_oracle_float64(pr, view):
    _check_view(view, pr, np.float64)


@given(pr=s6_problems(dtype=np.float32), view=st.sampled_from(VIEWS))
def test_views_float32_within_derived_bound(pr, view):
    # the oracle runs in float64 on the float32 inputs cast up losslessly
    _check_view(view, pr, np.float32)


@given(pr=s6_problems(max_len=12))
def test_solve_oracle_equals_dense_operator(pr):
    """The two oracles (banded solve, materialized operator with explicit products) agree in float64."""
    y1, h1 = O.s6_solve(*_args(pr), **_kw(pr))
    y2, h2 = O.s6_dense(*_args(pr), **_kw(pr))
    # both are float64 computations of the same sums; the dense side multiplies up to L factors
    # per transition and sums L terms: the quadratic view's weights bound both.
    bo, bs = O.s6_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="quadratic")
    assert_within(y2, y1, bo, context="dense vs loop")
    assert_within(h2, h1, bs, context="dense vs loop (state)")


@given(pr=s6_problems(), view=st.sampled_from(VIEWS), data=st.data())
def test_split_and_resume_equals_whole(pr, view, data):
    """Running [0, k) then resuming from the returned state over [k, L) equals the whole run."""
    L = pr["u"].shape[1]
    k = data.draw(st.integers(0, L), label="split")
    first, second = dict(pr), dict(pr)
    for key in ("u", "delta", "z"):
        if pr[key] is not None:
            first[key], second[key] = pr[key][:, :k], pr[key][:, k:]
    for key in ("B", "C"):
        if _time_varying(pr[key]):
            first[key], second[key] = pr[key][:, :k], pr[key][:, k:]
    o1, h1 = _run(view, first)
    second["initial_state"] = h1
    o2, h2 = _run(view, second)
    whole, hw = _run(view, pr)
    if view in ("recurrent", "numba"):
        # the same operations in the same order: bit-for-bit
        np.testing.assert_array_equal(np.concatenate([o1, o2], axis=1), whole)
        np.testing.assert_array_equal(h2, hw)
    else:
        y, h = O.s6_solve(*_args(pr), **_kw(pr))
        bo, bs = O.s6_bound(*_args(pr), **_kw(pr), dtype=np.float64, view=view, chunk=pr["chunk"])
        assert_within(np.concatenate([o1, o2], axis=1), y, bo, context="split run")
        assert_within(h2, h, bs, context="split run state")


@given(pr=s6_problems(max_len=10))
def test_step_decode_equals_recurrent_and_the_oracle(pr):
    """Decoding one step at a time with :func:`selective_step` (the single-step formula, its own code)
    does the recurrent view's arithmetic in the same order -- bit for bit -- and lands within the
    recurrent bound of the independent banded-solve oracle."""
    b, L, d = pr["u"].shape
    n = pr["A"].shape[1]
    out, last = _run("recurrent", pr)
    y, h = O.s6_solve(*_args(pr), **_kw(pr))
    bo, bs = O.s6_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="recurrent")
    state = pr["initial_state"] if pr["initial_state"] is not None else np.zeros((b, d, n), dtype=last.dtype)

    def at(X, t):
        if X.ndim == 2:  # fixed (d n) -> grouped with g = d
            return np.broadcast_to(X, (b,) + X.shape)
        return X[:, t]

    outs = []
    for t in range(L):
        o, state = selective_step(state, pr["u"][:, t], pr["delta"][:, t], pr["A"], at(pr["B"], t), at(pr["C"], t),
                                  pr["D"], None if pr["z"] is None else pr["z"][:, t], delta_bias=pr["delta_bias"],
                                  delta_softplus=pr["delta_softplus"], discretization=pr["discretization"])
        np.testing.assert_array_equal(o, out[:, t])
        outs.append(o)
    np.testing.assert_array_equal(state, last)
    if L:
        assert_within(np.stack(outs, axis=1), y, bo, context="decode vs the oracle")
    assert_within(state, h, bs, context="decode state vs the oracle")


@settings(max_examples=10)
@given(pr=s6_problems(max_batch=1, max_channels=2, max_state=2, max_len=5))
def test_solve_oracle_against_mpmath(pr):
    """The float64 banded-solve oracle itself, checked against 50-digit mpmath on tiny cases."""
    y1, h1 = O.s6_solve(*_args(pr), **_kw(pr))
    y2, h2 = O.s6_mpmath(*_args(pr), **_kw(pr))
    bo, bs = O.s6_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="recurrent", oracle_dtype=None)
    assert_within(y1, y2, bo, context="float64 banded solve vs mpmath")
    assert_within(h1, h2.astype(h1.dtype) if np.iscomplexobj(h1) else h2.real, bs, context="state vs mpmath")


@given(pr=s6_problems(), view=st.sampled_from(VIEWS), data=st.data())
def test_padded_tail_does_not_leak_into_the_prefix(pr, view, data):
    """Causality with garbage tails: appending arbitrary (large) inputs after position L leaves the
    first L outputs unchanged -- the regime of kernels that read past a partial last chunk."""
    L = pr["u"].shape[1]
    pad = data.draw(st.integers(1, 9), label="pad")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    padded = dict(pr)
    for key in ("u", "delta", "z", "B", "C"):
        X = pr[key]
        if X is not None and (key not in ("B", "C") or _time_varying(X)):
            tail = 1e3 * rng.standard_normal((X.shape[0], pad) + X.shape[2:])
            if key == "delta" and not pr["delta_softplus"]:
                tail = np.abs(tail)
            padded[key] = np.concatenate([X, tail.astype(X.dtype)], axis=1)
    out, _ = _run(view, pr)
    out_p, _ = _run(view, padded)
    if view in ("recurrent", "numba"):
        np.testing.assert_array_equal(out_p[:, :L], out)
    else:
        y, _ = O.s6_solve(*_args(pr), **_kw(pr))
        bo, _ = O.s6_bound(*_args(pr), **_kw(pr), dtype=np.float64, view=view, chunk=pr["chunk"])
        assert_within(out_p[:, :L], y, bo, context="prefix of the padded run")
