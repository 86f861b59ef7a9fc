r"""Op spec ``ssm.hippo_projection``: the discrete online HiPPO projection (Gu et al. 2020).

Canonical (the official HiPPO code's ``forward(inputs)``: a sequence ``f (L,)`` -> coefficients ``c (L, N)``,
the order ``N`` and the step given)::

    fn(f, N, dt, c0=None) -> c        f (l,) real, N an int, dt a positive scalar, c0 (n); c (l n)

The coefficients obey ``c' = s(t) A c + s(t) B f`` (S4's sign, ``A`` stable; ``s = 1/t`` for LegS on the grid
``t_k = (k + 1) dt`` -- so ``dt`` drops out for LegS --, ``1/theta`` for the windowed measures, 1 for LagT),
stepped by the generalized bilinear transform with weight ``alpha`` (forward Euler 0, bilinear 1/2,
backward Euler 1).  Conventions:

* ``measure``: ``legs``, ``legt``, ``lmu`` (Voelker's coordinates), ``lagt``, ``fout`` (odd ``N``);
* ``method`` (``forward_euler``, ``backward_euler``, ``bilinear``, ``gbt`` with ``alpha``) and ``theta`` (the
  window of legt/lmu/fout);
* ``step``: ``trapezoid`` -- the transform applied to the time-varying ODE with both ends of each step
  weighted, the first row is the state at the first sample (``c0``; default zero, LegS ``f_0 e_0``):
  refimpl's ``hippo_projection``; ``held`` -- the system frozen at the new sample,
  ``c_k = A_bar(t_k) c_{k-1} + B_bar(t_k) f_k`` from ``c_{-1} = c0`` (default zero): the official S4 code's
  ``HiPPO_LegS`` and ``HiPPO_LegT`` (there with scipy's ``cont2discrete`` and measure ``lmu``);
* ``use_c0``: the candidate takes an initial state (cases pass one, and some none).

Oracle: :func:`oracles.hippo.online_mpmath`, the recurrence in mpmath at 40 digits with the matrices from their
closed forms (:func:`oracles.hippo.transition_mp`; the family's tests check that the oracle converges to the
Gauss-quadrature projections of :func:`oracles.hippo.coefficients` at second order).  Bound:
:func:`oracles.hippo.online_bound` (each step's backward error carried by the exact propagator) plus the
oracle's final rounding.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.hippo import online_bound, online_mpmath
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "ssm.hippo_projection"
MEASURES = ("legs", "legt", "lmu", "lagt", "fout")
METHODS = {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}


def _alpha(conv) -> float:
    return float(conv["alpha"]) if conv["method"] == "gbt" else METHODS[conv["method"]]


def _args(inp, conv):
    x = dict(inp)
    if not conv["use_c0"]:
        x["c0"] = None
    return x, int(x["N"]), float(np.asarray(x["dt"]))


def oracle(inp, conv):
    x, N, dt = _args(inp, conv)
    c = online_mpmath(x["f"], conv["measure"], N, dt, alpha=_alpha(conv), theta=float(conv["theta"]),
                      step=conv["step"], c0=x.get("c0"))
    return {"c": c}


def bounds(inp, out, conv, dtype):
    x, N, dt = _args(inp, conv)
    E = online_bound(x["f"], conv["measure"], N, dt, alpha=_alpha(conv), theta=float(conv["theta"]),
                     step=conv["step"], c_exact=out["c"], c0=x.get("c0"), dtype=dtype)
    vals = E + gamma(1, np.float64) * np.abs(np.asarray(out["c"])) + 1e-300
    return {"c": Bound(vals, f"online HiPPO (oracles.hippo.online_bound) in {np.dtype(dtype).name}: each step's backward "
                             "error gamma_(3N+6) carried by the exact propagator, normwise per row; + the mpmath "
                             "oracle's final rounding")}


def reference(inp, conv):
    from refimpl.ssm.hippo import hippo_projection

    if conv["step"] != "trapezoid":  # refimpl's projection is the trapezoid step: no baseline for 'held'
        raise NotImplementedError(f"refimpl's hippo_projection takes the trapezoid step, not step={conv['step']!r}")
    x, N, dt = _args(inp, conv)
    return {"c": hippo_projection(x["f"], conv["measure"], N, dt, method=conv["method"],
                                  alpha=_alpha(conv) if conv["method"] == "gbt" else None, theta=float(conv["theta"]),
                                  initial_state=x.get("c0"))}


def sample(rng, conv, *, L=None, N=None, c0=None, smooth=False):
    N = int(rng.integers(1, 7)) if N is None else N
    if conv["measure"] == "fout" and N % 2 == 0:
        N += 1  # FouT: the constant and complete cos/sin pairs
    L = int(rng.choice([0, 1, 2, 7, 16, 33])) if L is None else L
    dt = float(10.0 ** rng.uniform(-2.5, -1)) * float(conv["theta"])
    if smooth:
        t = dt * np.arange(1, L + 1)
        f = np.sin(3 * t) + 0.5 * np.cos(7 * t) + t
    else:
        f = rng.standard_normal(L)
    with_c0 = (bool(conv["use_c0"]) and bool(rng.integers(0, 4))) if c0 is None else (c0 and bool(conv["use_c0"]))
    return {"f": f, "N": np.asarray(N), "dt": np.asarray(dt), "c0": rng.standard_normal(N) if with_c0 else None}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    if conv["measure"] not in MEASURES:
        raise ValueError(f"convention measure: expected one of {MEASURES}, got {conv['measure']!r}")
    rows = [("golden-smooth", "golden", dict(L=64, N=8, smooth=True), "sin 3t + cos(7t)/2 + t sampled, N = 8, L = 64"),
            ("edge-L0", "edge", dict(L=0), "L = 0: no coefficients"),
            ("edge-L1", "edge", dict(L=1), "L = 1: the first row only"),
            ("edge-N1", "edge", dict(L=9, N=1), "N = 1"),
            ("edge-long", "edge", dict(L=200, N=4), "L = 200 (LegS: 1/t down to 1/200)")]
    if conv["use_c0"]:
        rows = [(cid, kind, dict(kw, c0=True), note + ", with c0") for cid, kind, kw, note in rows]
        rows.append(("edge-no-c0", "edge", dict(L=9, c0=False), "L = 9 without c0 (the default start)"))
    add = case_builder(OP, sample, 111, conv)
    return add.rows([(cid, kind, {"c0": False, **kw}, note) for cid, kind, kw, note in rows])


register_op(OpSpec(
    name=OP,
    summary="the discrete online HiPPO projection c_k of a sampled signal f onto a measure's orthogonal basis",
    inputs=(Arg("f", "l", "the samples"), Arg("N", "", "the order (number of coefficients)", kind="int"),
            Arg("dt", "", "the step (a positive scalar; drops out for legs)"),
            Arg("c0", "n", "the initial state (step 'trapezoid': the first row; 'held': the state before step 0)",
                optional=True)),
    outputs=(Arg("c", "l n"),),
    conventions=(
        Convention("measure", "legs", "the measure: legs, legt, lmu, lagt, fout (odd N)", MEASURES),
        Convention("method", "bilinear", "the discretization: forward_euler, backward_euler, bilinear, gbt (alpha)",
                   ("bilinear", "forward_euler", "backward_euler", "gbt")),
        Convention("alpha", 0.5, "the gbt weight in [0, 1] (method='gbt' only)"),
        Convention("theta", 1.0, "the window of legt, lmu and fout"),
        Convention("step", "trapezoid", "trapezoid (both ends of a step weighted; c[0] = c0: refimpl) or held (the "
                   "system frozen at the new sample, c[k] = A_bar c[k-1] + B_bar f[k] from c[-1] = c0: the official "
                   "S4 code's HiPPO_LegS / HiPPO_LegT)", ("trapezoid", "held")),
        Convention("use_c0", True, "the candidate takes an initial state c0: cases pass one (and some none)",
                   (True, False)),
    ),
    **op_functions(globals()),
    domain=op_domain(length=("l", "L"), order=("N", "N", "the order N (the number of coefficients)")),
    module=__name__,
    notes="oracle: oracles.hippo.online_mpmath (closed-form matrices, mpmath); bound: oracles.hippo.online_bound",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.hippo.hippo_projection(f, measure, N, dt, method=, alpha=, theta=, initial_state=c0) "
        "(step 'trapezoid')",
    args=(In("f"), Conv(lambda c: c["measure"]), In("N", scalar=True), In("dt", scalar=True)),
    kwargs={"method": Conv(lambda c: c["method"]), "alpha": Conv(lambda c: c["alpha"] if c["method"] == "gbt" else None),
            "theta": Conv(lambda c: float(c["theta"])), "initial_state": In("c0")},
    outputs=(Out("c", None),),
))
