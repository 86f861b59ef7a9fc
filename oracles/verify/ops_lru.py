r"""Op spec ``ssm.lru``: the Linear Recurrent Unit (Orvieto et al. 2023).

Canonical (the arguments of :func:`refimpl.ssm.lru.lru_ssm`, whose ``d`` is this op's ``h``)::

    fn(nu_log, theta_log, gamma_log, B, C, D, u) -> y

``lambda = exp(-exp(nu_log) + i exp(theta_log))``, ``x_t = lambda x_{t-1} + exp(gamma_log) (B u_t)``,
``y_t = Re(C x_t) + D u_t``; ``nu_log``, ``theta_log``, ``gamma_log`` (n,), ``B`` (n h) and ``C`` (h n)
complex, ``D`` (h,), ``u`` (b l h) -> ``y`` (b l h).  Convention ``real_output``: ``re`` (LRU keeps
the full complex state) or ``2re`` (one state per conjugate pair).

Oracle: the dense Toeplitz operator :func:`oracles.structured.diag_ssm_dense` with ``lambda`` and
``gamma`` from their definitions in float64.  Bound: :func:`oracles.structured.diag_ssm_bound`'s
analysis (written there for float64) evaluated for the candidate's dtype plus the float64
oracle's share, with the parameterization's relative error per step
``e_lambda <= k_fn u (1 + exp(nu_log) + exp(theta_log))`` (two exponentials of arguments that carry
their own rounding; ``k_fn = 8``, :data:`oracles.selective.TRANSCENDENTAL_U`) growing as ``j e`` in
``lambda^j``, and ``exp(gamma_log)``'s ``k_fn u`` on every input term.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.selective import TRANSCENDENTAL_U
from oracles.structured import diag_ssm_dense
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "ssm.lru"


def _params(inp):
    nu, th, gl = (np.asarray(inp[k], dtype=np.float64) for k in ("nu_log", "theta_log", "gamma_log"))
    lam = np.exp(-np.exp(nu) + 1j * np.exp(th))
    return lam, np.exp(gl), nu, th


def oracle(inp, conv):
    lam, g, _, _ = _params(inp)
    B_bar = g[:, None] * np.asarray(inp["B"], dtype=np.complex128)
    y = diag_ssm_dense(lam, B_bar, np.asarray(inp["C"], dtype=np.complex128), np.asarray(inp["D"], dtype=np.float64),
                       np.asarray(inp["u"], dtype=np.float64), factor=2.0 if conv["real_output"] == "2re" else 1.0)
    return {"y": y}


def bounds(inp, out, conv, dtype):
    lam, g, nu, th = _params(inp)
    u = np.asarray(inp["u"], dtype=np.float64)
    B_bar = g[:, None] * np.asarray(inp["B"], dtype=np.complex128)
    C = np.asarray(inp["C"], dtype=np.complex128)
    D = np.asarray(inp["D"], dtype=np.float64)
    L, h, p = u.shape[1], u.shape[2], lam.shape[0]
    logmax = float(np.max(np.abs(np.log(lam)))) if p else 0.0
    e_lam = TRANSCENDENTAL_U * float(np.max(1.0 + np.exp(nu) + np.exp(th))) if p else 0.0
    # depth of diag_ssm_bound: 3L + 2(h + p) + 8 + L (max|log lam| + e_lam/u), plus exp(gamma_log)'s k_fn
    depth = 3 * L + 2 * (h + p) + 8 + TRANSCENDENTAL_U + L * (logmax + e_lam)
    factor = 2.0 if conv["real_output"] == "2re" else 1.0
    mag = diag_ssm_dense(lam, B_bar, C, D, u, factor=factor, absolute=True)
    # the oracle (float64, closed-form powers) has the same structure without the parameterization error
    depth64 = 3 * L + 2 * (h + p) + 8 + L * logmax + 2 * TRANSCENDENTAL_U
    vals = (gamma(depth, dtype, complex_ops=True) + gamma(depth64, np.float64, complex_ops=True)) * mag + 1e-300
    return {"y": Bound(vals, f"diagonal SSM (oracles.structured.diag_ssm_bound's analysis) in {np.dtype(dtype).name}: "
                             f"gamma^c_{depth:.0f} x dense operator on |inputs|, with the parameterization's "
                             f"per-step error {e_lam:.3g} u; + the float64 oracle's gamma^c_{depth64:.0f}")}


def reference(inp, conv):
    from refimpl.ssm.lru import lru_ssm

    C = np.asarray(inp["C"])
    if conv["real_output"] == "2re":
        C = C * 2
    # the op's canonical layout is refimpl's: u (b l h) = (b l d), B (n h) = (n d), C (h n) = (d n)
    return {"y": lru_ssm(inp["nu_log"], inp["theta_log"], inp["gamma_log"], inp["B"], C, inp["D"], inp["u"])}


def sample(rng, conv, *, L=None, b=None, h=None, n=None, r_min=0.4):
    b, h, n = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 4), n=(n, 1, 6))
    L = int(rng.choice([0, 1, 2, 7, 16, 33])) if L is None else L
    # the ring initialization's distribution on r_min <= |lambda| <= 1, phase in [0, 2 pi]
    r2 = rng.uniform(r_min**2, 1.0, n)
    nu_log = np.log(-0.5 * np.log(r2))
    theta_log = np.log(2 * np.pi * rng.uniform(1e-3, 1.0, n))
    lam_abs2 = r2
    gamma_log = 0.5 * np.log1p(-lam_abs2)
    B = (rng.standard_normal((n, h)) + 1j * rng.standard_normal((n, h))) / np.sqrt(2 * h)
    C = (rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n))) / np.sqrt(n)
    return {"nu_log": nu_log, "theta_log": theta_log, "gamma_log": gamma_log, "B": B, "C": C,
            "D": rng.standard_normal(h), "u": rng.standard_normal((b, L, h))}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 67, conv)
    add.rows((("golden-small", "golden", dict(L=12, b=1, h=2, n=3), "b=1, l=12, h=2, n=3, ring init r_min = 0.4"),
              ("edge-L0", "edge", dict(L=0), "L = 0"),
              ("edge-L1", "edge", dict(L=1), "L = 1"),
              ("edge-near-unit", "edge", dict(L=200, b=1, h=1, n=2, r_min=0.999),
               "|lambda| -> 1 (long memory; gamma = sqrt(1 - |lambda|^2) small), L = 200")))
    return add.cases


register_op(OpSpec(
    name=OP,
    summary="the Linear Recurrent Unit: exp-parameterized complex diagonal recurrence with gamma normalization",
    inputs=(Arg("nu_log", "n"), Arg("theta_log", "n"), Arg("gamma_log", "n"), Arg("B", "n h"), Arg("C", "h n"),
            Arg("D", "h"), Arg("u", "b l h")),
    outputs=(Arg("y", "b l h"),),
    conventions=(Convention("real_output", "re", "y = Re(C x) (LRU's full complex state) or 2 Re(C x) "
                            "(one state per conjugate pair)", ("re", "2re")),),
    **op_functions(globals()),
    probes=(causality_probe({"u": "l"}, {"y": "l"}, sampler=lambda rng, conv: sample(rng, conv, L=10)),),
    lowp=False,  # complex parameters
    complex_inputs=("B", "C"),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n"), channels=("h", "h")),
    module=__name__,
    notes="oracle: oracles.structured.diag_ssm_dense (closed-form powers); bound: diag_ssm_bound's analysis per dtype",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.lru.lru_ssm(nu_log, theta_log, gamma_log, B, C, D, u, view=, backend=) (it computes "
        "real_output 're'; the adapter fixes no convention: verified under 2re it fails and is diagnosed)",
    args=(In("nu_log"), In("theta_log"), In("gamma_log"), In("B"), In("C"), In("D"), In("u")),
    outputs=(Out("y", None),),
))
