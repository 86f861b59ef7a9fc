"""Property tests of the selective scan's backward pass (``refimpl.ssm.selective.selective_scan_vjp``).

* the adjoint identity ``<J v, w> = <v, J^T w>``: the directional derivative of the oracle forward
  (``oracles.selective.s6_solve``) by Richardson central differences (``oracles.gradients.fd_jvp``, with its error
  bound) against our VJP paired with the tangent (``Re sum conj(v) g``), every input moved at once;
* the views and backends agree (numpy recurrent / chunked at any chunk, the Numba kernel's recurrent and chunked
  views) at L = 0, 1, odd, chunk - 1, chunk, chunk + 1 and a long L, every B/C layout, real and complex A, both
  discretizations, float64 and float32, within twice the derived bound of a backward in that dtype
  (``oracles.selective_grad_forward.s6_vjp_bounds``: each is within it of the exact gradient).
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp
from oracles.selective import s6_solve
from oracles.selective_grad_forward import s6_vjp_bounds, s6_vjp_depth, s6_vjp_magnitude
from oracles.tolerance import Bound, compare, gamma
from refimpl.ssm.selective import selective_scan_vjp

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
ARGS = ("u", "delta", "A", "B", "C", "D", "z")


@st.composite
def problems(draw, max_len=24):
    chunk = draw(st.integers(1, 8))
    L = draw(st.sampled_from([0, 1, 3, max(chunk - 1, 0), chunk, chunk + 1, 2 * chunk + 1,
                              draw(st.integers(0, max_len))]))
    b, d, n = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 4])), draw(st.integers(1, 3))
    g = draw(st.sampled_from([k for k in (1, 2, 4) if d % k == 0]))
    cplx = draw(st.booleans())
    lays = (draw(st.sampled_from(["fixed", "variable", "grouped"])), draw(st.sampled_from(["fixed", "variable",
                                                                                             "grouped"])))
    opts = {k: draw(st.booleans()) for k in ("D", "z", "delta_bias", "initial_state", "final", "softplus")}
    disc = draw(st.sampled_from(["mamba", "zoh"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = -np.exp(rng.uniform(-1, 1, (d, n))) + (1j * rng.uniform(-3, 3, (d, n)) if cplx else 0)

    def bc(lay):
        X = {"fixed": lambda: rng.standard_normal((d, n)), "variable": lambda: rng.standard_normal((b, L, n)),
             "grouped": lambda: rng.standard_normal((b, L, g, n))}[lay]()
        return X + 1j * rng.standard_normal(X.shape) if cplx and rng.random() < 0.7 else X

    sp = opts["softplus"]
    inp = {"u": rng.standard_normal((b, L, d)),
           "delta": rng.normal(-1.0, 1.0, (b, L, d)) if sp else rng.uniform(0.02, 0.6, (b, L, d)),
           "A": A, "B": bc(lays[0]), "C": bc(lays[1]),
           "D": rng.standard_normal(d) if opts["D"] else None,
           "z": rng.standard_normal((b, L, d)) if opts["z"] else None,
           "delta_bias": rng.uniform(0.0, 0.3, d) if opts["delta_bias"] else None,
           "initial_state": (rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0))
           if opts["initial_state"] else None}
    cot = {"out": rng.standard_normal((b, L, d)),
           "final": (rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0))
           if opts["final"] else None}
    return inp, dict(softplus=sp, disc=disc), cot, chunk


def _vjp(inp, conv, cot, **kw):
    return selective_scan_vjp(*(inp[k] for k in ARGS), dy=cot["out"], d_final_state=cot["final"],
                              delta_bias=inp["delta_bias"], delta_softplus=conv["softplus"],
                              discretization=conv["disc"], initial_state=inp["initial_state"], **kw)


def _bounds(inp, conv, cot, dtype, view, chunk):
    return s6_vjp_bounds(*(inp[k] for k in ARGS), dy=cot["out"], d_final_state=cot["final"],
                         delta_bias=inp["delta_bias"], delta_softplus=conv["softplus"],
                         initial_state=inp["initial_state"], discretization=conv["disc"], dtype=dtype, view=view,
                         chunk=chunk)


@settings(max_examples=20, deadline=None)
@given(problems(max_len=20), st.integers(0, 2**32 - 1))
def test_adjoint_identity(prob, seed):
    inp, conv, cot, _ = prob
    rng = np.random.default_rng(seed)
    given_ = [k for k in NAMES if inp[k] is not None]
    v = {k: rng.standard_normal(np.shape(inp[k])) + (1j * rng.standard_normal(np.shape(inp[k]))
                                                      if np.iscomplexobj(inp[k]) else 0) for k in given_}

    def f(x):
        out, fin = s6_solve(*(x[k] for k in ARGS), delta_bias=x["delta_bias"], delta_softplus=conv["softplus"],
                            initial_state=x["initial_state"], discretization=conv["disc"])
        return {"out": out, "final": fin}

    w = {"out": cot["out"]}
    if cot["final"] is not None:
        w["final"] = cot["final"]
    jv, err = fd_jvp(f, inp, v, w)
    g = _vjp(inp, conv, cot)
    vjp = sum(float(np.sum((np.conj(v[k]) * g[k]).real)) for k in given_)
    # our side: the pairing's terms within gamma_depth of M (the adjoint on |inputs|), paired with |v|, plus the
    # pairing's own sum (gamma over the number of terms)
    M = s6_vjp_magnitude(*(inp[k] for k in ARGS), dy=cot["out"], d_final_state=cot["final"],
                         delta_bias=inp["delta_bias"], delta_softplus=conv["softplus"],
                         initial_state=inp["initial_state"], discretization=conv["disc"])
    depth = s6_vjp_depth(*(inp[k] for k in ARGS), delta_bias=inp["delta_bias"], delta_softplus=conv["softplus"],
                         discretization=conv["disc"])
    terms = sum(int(np.size(v[k])) for k in given_)
    ours = sum(float(np.sum(np.abs(v[k]) * M[k])) for k in given_) * (
        gamma(depth, np.float64, complex_ops=True) + gamma(terms + 2, np.float64))
    assert abs(jv - vjp) <= err + ours, (jv, vjp, err, ours)


@settings(max_examples=20, deadline=None)
@given(problems(max_len=40), st.sampled_from([np.float64, np.float32]))
def test_views_and_backends_agree(prob, dtype):
    inp, conv, cot, chunk = prob
    cd = np.complex64 if dtype == np.float32 else np.complex128
    cast = lambda a: None if a is None else np.asarray(a).astype(cd if np.iscomplexobj(a) else dtype)  # noqa: E731
    inp = {k: cast(v) for k, v in inp.items()}
    cot = {k: cast(v) for k, v in cot.items()}
    ref = _vjp(inp, conv, cot)
    b = _bounds(inp, conv, cot, dtype, "chunked", chunk)
    for view, backend in (("chunked", "numpy"), ("recurrent", "numba"), ("chunked", "numba")):
        kw = {"chunk": chunk} if view == "chunked" else {}
        g = _vjp(inp, conv, cot, view=view, backend=backend, **kw)
        assert sorted(g) == sorted(ref)
        for k in ref:
            assert g[k].dtype == ref[k].dtype and g[k].shape == ref[k].shape, (view, backend, k)
            # each within the chunked view's bound (the larger depth) of the exact gradient: twice it of each other
            bd = Bound(2 * np.asarray(b[k].values), "both within " + b[k].source)
            c = compare(g[k], ref[k], bd, dtype=dtype)
            assert c.passed, (view, backend, k, c.summary())


def test_long_sequence_views_agree():
    """L = 1000 (chunk 64: 15 full chunks and a short one), real A, the fast path's sizes."""
    rng = np.random.default_rng(5)
    b, L, d, n = 1, 1000, 3, 4
    inp = {"u": rng.standard_normal((b, L, d)), "delta": rng.normal(-1, 1, (b, L, d)),
           "A": -np.exp(rng.uniform(-1, 1, (d, n))), "B": rng.standard_normal((b, L, n)),
           "C": rng.standard_normal((b, L, 3, n)), "D": rng.standard_normal(d), "z": rng.standard_normal((b, L, d)),
           "delta_bias": rng.uniform(0, 0.3, d), "initial_state": rng.standard_normal((b, d, n))}
    conv = dict(softplus=True, disc="mamba")
    cot = {"out": rng.standard_normal((b, L, d)), "final": rng.standard_normal((b, d, n))}
    ref = _vjp(inp, conv, cot)
    bd = _bounds(inp, conv, cot, np.float64, "chunked", 64)
    for view, backend in (("chunked", "numpy"), ("recurrent", "numba"), ("chunked", "numba")):
        g = _vjp(inp, conv, cot, view=view, backend=backend)
        for k in ref:
            assert compare(g[k], ref[k], Bound(2 * np.asarray(bd[k].values), "both within the bound")).passed, \
                (view, backend, k)
