"""Property tests of SSD's backward pass (``refimpl.ssm.ssd.ssd_scan_vjp``).

* the adjoint identity ``<J v, w> = <v, J^T w>``: the directional derivative of the oracle forward
  (``oracles.selective.ssd_solve``) by Richardson central differences (``oracles.gradients.fd_jvp``, with its
  error bound) against our VJP paired with the tangent, every input moved at once;
* the views agree (recurrent, quadratic, chunked at any chunk) at L = 0, 1, odd, chunk - 1, chunk, chunk + 1 and a
  long L, within twice the derived float64 bound of a backward (``oracles.ssd_grad_forward.ssd_grad_bounds``: each
  view is within it of the exact gradient).
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp
from oracles.selective import ssd_solve
from oracles.ssd_grad_forward import ssd_grad_bounds, ssd_vjp_depth, ssd_vjp_magnitude
from oracles.tolerance import Bound, compare, gamma
from refimpl.ssm.ssd import ssd_scan_vjp

WRT = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


@st.composite
def problems(draw, max_len=40):
    chunk = draw(st.integers(1, 8))
    L = draw(st.sampled_from([0, 1, 3, max(chunk - 1, 0), chunk, chunk + 1, 2 * chunk + 1,
                              draw(st.integers(0, max_len))]))
    b, h = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 4]))
    g = draw(st.sampled_from([k for k in (1, 2, 4) if h % k == 0]))
    p, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    opts = {k: draw(st.booleans()) for k in ("D", "z", "dt_bias", "initial_states", "seq_idx", "final", "softplus",
                                             "limit")}
    rng = np.random.default_rng(seed)
    sp = opts["softplus"]
    inp = {"x": rng.standard_normal((b, L, h, p)),
           "dt": rng.normal(-1.0, 1.0, (b, L, h)) if sp else rng.uniform(0.02, 0.6, (b, L, h)),
           "A": -np.exp(rng.uniform(-1.0, 1.0, h)), "B": rng.standard_normal((b, L, g, n)),
           "C": rng.standard_normal((b, L, g, n)),
           "D": (rng.standard_normal(h) if rng.random() < 0.5 else rng.standard_normal((h, p))) if opts["D"] else None,
           "z": rng.standard_normal((b, L, h, p)) if opts["z"] else None,
           "dt_bias": rng.uniform(0.0, 0.2, h) if opts["dt_bias"] else None,
           "initial_states": rng.standard_normal((b, h, p, n)) if opts["initial_states"] else None,
           "seq_idx": np.sort(rng.integers(0, 3, (b, L)), axis=1).astype(np.int32) if opts["seq_idx"] else None}
    conv = {"dt_softplus": sp, "dt_limit": (0.1, 0.5) if opts["limit"] else (0.0, math.inf)}
    cot = {"y": rng.standard_normal((b, L, h, p))}
    if opts["final"]:
        cot["final_states"] = rng.standard_normal((b, h, p, n))
    return inp, conv, cot, chunk


def _vjp(inp, conv, cot, view, chunk):
    r = ssd_scan_vjp(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"], dy=cot["y"],
                     d_final_state=cot.get("final_states"), dt_bias=inp["dt_bias"], dt_softplus=conv["dt_softplus"],
                     dt_limit=conv["dt_limit"], initial_state=inp["initial_states"], seq_idx=inp["seq_idx"],
                     chunk=chunk, view=view)
    if "initial_state" in r:
        r["initial_states"] = r.pop("initial_state")
    return r


def _forward(conv):
    def f(d):
        y, S = ssd_solve(d["x"], d["dt"], d["A"], d["B"], d["C"], d["D"], d["z"], dt_bias=d["dt_bias"],
                         dt_softplus=conv["dt_softplus"], dt_limit=conv["dt_limit"],
                         initial_state=d["initial_states"], seq_idx=d["seq_idx"])
        return {"y": y, "final_states": S}
    return f


@settings(max_examples=25, deadline=None)
@given(problems(max_len=24), st.sampled_from(["recurrent", "quadratic", "chunked"]))
def test_adjoint_identity(pr, view):
    """``<J v, w>`` (differences of the oracle) == ``sum v . (J^T w)`` (ours) within the differences' error plus
    ``gamma_depth`` times the pairing of ``|v|`` with the |terms| majorant of our gradients."""
    inp, conv, cot, chunk = pr
    rng = np.random.default_rng(int(np.size(inp["x"])) + 17)
    # with an active clamp dt and dt_bias stay put (its corners are not differentiable; the draws keep
    # dt + dt_bias far below softplus' threshold 20)
    fixed = ("dt", "dt_bias") if conv["dt_limit"][1] < math.inf else ()
    tang = {k: rng.standard_normal(np.shape(inp[k])) for k in WRT if inp.get(k) is not None and k not in fixed}
    val, err = fd_jvp(_forward(conv), inp, tang, cot)
    g = _vjp(inp, conv, cot, view, chunk)
    ours = math.fsum(float(np.sum(tang[k] * g[k])) for k in tang)
    M = ssd_vjp_magnitude(inp, cot, conv)
    depth = ssd_vjp_depth(inp) + max(np.size(inp["x"]), 1)  # + the pairing's sum over every element
    scale = math.fsum(float(np.sum(np.abs(tang[k]) * M[k])) for k in tang)
    assert abs(val - ours) <= err + 2 * gamma(depth, np.float64) * scale, (val, ours, err, view, chunk)


@settings(max_examples=30, deadline=None)
@given(problems(max_len=70))
def test_views_agree(pr):
    inp, conv, cot, chunk = pr
    bounds = ssd_grad_bounds(inp, cot, conv, np.float64)  # each view within it of the exact gradient
    ref = _vjp(inp, conv, cot, "recurrent", chunk)
    for view in ("quadratic", "chunked"):
        other = _vjp(inp, conv, cot, view, chunk)
        assert sorted(other) == sorted(ref)
        for k in ref:
            assert other[k].shape == ref[k].shape
            cmp = compare(other[k], ref[k], Bound(np.asarray(bounds[k].values), bounds[k].source))
            assert cmp.passed, f"{view} (chunk {chunk}) d{k}: {cmp.message}"
