"""Property tests of the S6 and SSD CUDA twins (run under the CUDA simulator in CI: tiny shapes, 8 examples each).

Any L (0, 1, odd, chunk - 1, chunk, chunk + 1, several chunks), any chunk (powers of two and not), every B/C
layout, real and complex A, both discretizations, float32 and float64, options on or off: the kernel's output and
final state agree with the float64 banded-solve oracles within the derived bounds (S6: the scan view's,
:func:`oracles.selective.s6_bound`; SSD: the chunked view's at the kernel's chunk, :func:`oracles.selective.ssd_bound`).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracles import selective as O
from oracles.tolerance import assert_within
from refimpl.ssm.selective import selective_scan
from refimpl.ssm.ssd import ssd_scan

pytest.importorskip("numba.cuda")

_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _length(draw, chunk):
    return draw(st.sampled_from(sorted({0, 1, 3, max(chunk - 1, 0), chunk, chunk + 1, 2 * chunk + 1})))


@_SETTINGS
@given(data=st.data())
def test_cuda_s6_simulator_matches_the_oracle(data):
    """S6 under the CUDA simulator vs the banded solve, within the scan view's bound."""
    draw = data.draw
    chunk = draw(st.sampled_from([1, 2, 3, 4, 8]))
    L = _length(draw, chunk)
    cplx = draw(st.booleans())
    disc = draw(st.sampled_from(["mamba", "zoh"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    Bl, Cl = draw(st.sampled_from(["fixed", "variable", "grouped"])), draw(st.sampled_from(["fixed", "variable", "grouped"]))
    options = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    b, d, n = 1, 2, 2
    cdt = np.result_type(dtype, np.complex64)
    A = -np.exp(rng.standard_normal((d, n)))
    if cplx:
        A = A + 1j * np.pi * rng.standard_normal((d, n))
    shapes = {"fixed": (d, n), "variable": (b, L, n), "grouped": (b, L, 2, n)}

    def bc(layout):
        X = rng.standard_normal(shapes[layout]) + (1j * rng.standard_normal(shapes[layout]) if cplx else 0)
        return X.astype(cdt if cplx else dtype)

    u = rng.standard_normal((b, L, d)).astype(dtype)
    if options:
        delta = (rng.standard_normal((b, L, d)) - 1).astype(dtype)
        D, z = rng.standard_normal(d).astype(dtype), rng.standard_normal((b, L, d)).astype(dtype)
        h0 = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)
        kw = dict(delta_bias=rng.standard_normal(d).astype(dtype), delta_softplus=True,
                  initial_state=h0.astype(cdt if cplx else dtype))
    else:
        delta, D, z, kw = np.abs(rng.standard_normal((b, L, d))).astype(dtype), None, None, {}
    args = [u, delta, A.astype(cdt if cplx else dtype), bc(Bl), bc(Cl), D, z]
    out, last = selective_scan(*args, **kw, discretization=disc, view="chunked", backend="cuda", chunk=chunk,
                               return_final_state=True)
    y, h = O.s6_solve(*args, **kw, discretization=disc)
    bo, bs = O.s6_bound(*args, **kw, discretization=disc, dtype=dtype, view="scan")
    ctx = f"L={L} chunk={chunk} {'complex' if cplx else 'real'} {disc} B {Bl} C {Cl} {np.dtype(dtype).name}"
    assert_within(out, y, bo, context="cuda S6 out, " + ctx)
    assert_within(last, h, bs, context="cuda S6 final state, " + ctx)


@_SETTINGS
@given(data=st.data())
def test_cuda_ssd_simulator_matches_the_oracle(data):
    """SSD under the CUDA simulator vs the banded solve, within the chunked view's bound at the kernel's chunk."""
    draw = data.draw
    chunk = draw(st.sampled_from([1, 2, 3, 4, 8]))
    L = _length(draw, chunk)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    g = draw(st.sampled_from([1, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    b, h, p, n = 1, 2, 2, 2
    x = rng.standard_normal((b, L, h, p)).astype(dtype)
    dt = (rng.standard_normal((b, L, h)) - 1).astype(dtype)
    A = (-np.exp(rng.standard_normal(h))).astype(dtype)
    B, C = (rng.standard_normal((b, L, g, n)).astype(dtype) for _ in range(2))
    D = rng.standard_normal(draw(st.sampled_from([(h,), (h, p)]))).astype(dtype) if draw(st.booleans()) else None
    z = rng.standard_normal((b, L, h, p)).astype(dtype) if draw(st.booleans()) else None
    kw = dict(dt_bias=rng.standard_normal(h).astype(dtype), dt_softplus=True)
    if draw(st.booleans()):
        kw["dt_limit"] = (0.01, 1.5)
    if draw(st.booleans()):
        kw["initial_state"] = rng.standard_normal((b, h, p, n)).astype(dtype)
    if draw(st.booleans()) and L:
        kw["seq_idx"] = np.sort(rng.integers(0, 3, (b, L)), axis=1)
    y, S = ssd_scan(x, dt, A, B, C, D, z, **kw, view="chunked", backend="cuda", chunk=chunk, return_final_state=True)
    yo, So = O.ssd_solve(x, dt, A, B, C, D, z, **kw)
    by, bs = O.ssd_bound(x, dt, A, B, C, D, z, **kw, dtype=dtype, view="chunked", chunk=chunk)
    ctx = f"L={L} chunk={chunk} g={g} {np.dtype(dtype).name} options={sorted(kw)}"
    assert_within(y, yo, by, context="cuda SSD y, " + ctx)
    assert_within(S, So, bs, context="cuda SSD final state, " + ctx)
