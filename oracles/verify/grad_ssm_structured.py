r"""Gradient checks (``refimpl verify --grad``) of the structured SSMs: ``ssm.s5``, ``ssm.ema``, ``ssm.dss_kernel``,
``ssm.s4_kernel``.

Ground truth: central differences with Richardson extrapolation (:mod:`oracles.gradients`) of the float64 plain
loops of :mod:`oracles.ssm_structured_grad_forward` (S5 with its own ZOH/bilinear discretization per state,
MEGA's EMA) -- none of them refimpl's, none a backward.

Bounds (the rounding of a backward computed in the candidate's dtype; the harness adds the differences' own
error bound): componentwise, ``gamma_depth x M`` with ``M`` the adjoint recurrence run on absolute values
(:func:`oracles.ssm_structured_grad_forward.s5_adjoint_magnitude` / ``ema_adjoint_magnitude``: every term of
every gradient in absolute value) and the depth counted from the adjoint:

* ``ssm.s5``: ``depth = 2(L+2) + 2h + n + b(L+1) + 50 + L (4 + max|dt Lambda|)``: the forward's states recomputed
  (``L`` products plus the ``B_bar u`` sum over ``h``), the reverse scan (``L`` steps plus the ``C^H dy`` sum
  over ``h``), the outer products summed over ``b`` and ``t``, the discretization's adjoint (``phi1'`` by its
  series, depth 45 + n, as ``ssm.discretize``), and the recomputed ``Lambda_bar``'s relative error
  (``4 + |dt Lambda|`` ulps) raised to up to the ``L``-th power.  ``Lambda_bar``'s and ``B_bar``'s magnitudes go
  through the discretization's adjoint on absolute values (:func:`oracles.verify.grad_ssm._diag_magnitudes`).
  Complex arithmetic throughout (the complex multiply's factor).
* ``ssm.ema``: ``depth = 2(L+2) + n + b(L+1) + 10``: the states recomputed and the reverse scan (``L`` steps
  each), the sum over ``n`` of ``dx``, the sums over ``b`` and ``t``, and ``q = 1 - alpha delta``'s rounding.

* ``ssm.dss_kernel``: ``depth = 2L + n + 50 + L (4 + max|dt lambda|)`` (:func:`dss_depth`) over the closed-form
  adjoint on absolute values (:func:`oracles.ssm_structured_grad_forward.dss_adjoint_magnitude`).

* ``ssm.s4_kernel`` (bilinear): ``(1 + Skeel cond(I - dt/2 A)) gamma_{depth}`` over the dense view's adjoint on
  absolute values (:func:`s4_grad_bounds`, :func:`s4_depth`).

Where the harness gives no cotangents, ``|J|^T |w|`` at the point stands in for ``M`` (exact for the entries
without cancellation).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from oracles.ssm_structured_grad_forward import (dss_forward, ema_adjoint_magnitude, ema_forward,
                                                 s5_adjoint_magnitude, s5_forward)
from oracles.tolerance import Bound, componentwise_bound
from oracles.verify.grad_ssm import _diag_magnitudes
from oracles.verify.registry import Case, GradSpec, register_grad

S5_WRT = ("Lambda", "B_tilde", "C_tilde", "D", "dt", "u", "C_back", "h0")
EMA_WRT = ("x", "alpha", "delta", "beta", "eta", "h0")


# ----------------------------------------------------------------------------------------------------------
# ssm.s5
# ----------------------------------------------------------------------------------------------------------

def s5_depth(inp) -> float:
    """``2(L+2) + 2h + n + b(L+1) + 50 + L (4 + max|dt Lambda|)`` (module docstring)."""
    b, L, h = np.shape(inp["u"])
    lam = np.asarray(inp["Lambda"])
    n = lam.shape[0]
    z = float(np.max(np.abs(np.broadcast_to(np.asarray(inp["dt"], dtype=float), lam.shape) * lam), initial=0))
    return 2 * (L + 2) + 2 * h + n + b * (L + 1) + 50 + L * (4 + z)


def s5_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    depth = int(np.ceil(s5_depth(inp)))
    if cotangents is None:
        return {k: componentwise_bound(np.asarray(magnitudes[k]), depth, dtype, oracle_dtype=None, complex_ops=True,
                                       what=f"|J|^T|w| (no cotangents given), depth {depth}")
                for k in S5_WRT if k in oracle_grads and k in magnitudes}
    M = s5_adjoint_magnitude(inp, conv, cotangents)
    lam = np.asarray(inp["Lambda"], dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape)
    Mg = _diag_magnitudes(lam[:, None], np.asarray(inp["B_tilde"])[:, None, :], dt[:, None], M["Lambda_bar"][:, None],
                          M["B_bar"][:, None, :], conv["method"], 0.5)
    mags = dict(M, Lambda=Mg["A"][:, 0], B_tilde=Mg["B"][:, 0, :], dt=Mg["dt"])
    what = f"the S5 adjoint on |inputs| through the discretization's, depth {depth}"
    return {k: componentwise_bound(np.asarray(mags[k]), depth, dtype, oracle_dtype=None, complex_ops=True, what=what)
            for k in S5_WRT if k in oracle_grads}


def s5_grad_cases(conv) -> List[Case]:
    """L = 0, 1, 2, 7 (odd), with and without h0 (when claimed), D absent, a small-dt case."""
    from oracles.verify import ops_s5

    use_h0 = bool(conv["use_h0"]) and not conv["bidirectional"]
    rows = [("edge-L0", "edge", dict(L=0, b=1, h=2, n=2, h0=use_h0)),
            ("edge-L1", "edge", dict(L=1, b=2, h=2, n=2, h0=use_h0)),
            ("edge-L2", "edge", dict(L=2, b=1, h=1, n=3, h0=use_h0)),
            ("golden-L7", "golden", dict(L=7, b=1, h=2, n=2, h0=use_h0))]
    if use_h0:
        rows.append(("edge-L5-no-h0", "edge", dict(L=5, b=1, h=2, n=2, h0=False)))
    out = []
    for i, (cid, kind, kw) in enumerate(rows):
        inp = ops_s5.sample(np.random.default_rng([4091, i]), conv, **kw)
        out.append(Case(ops_s5.OP, cid, kind, inp, dict(conv), seed=4091, note=f"{kw}"))
    inp = ops_s5.sample(np.random.default_rng(4092), conv, L=4, b=1, h=2, n=2, h0=use_h0)
    inp["D"] = None
    out.append(Case(ops_s5.OP, "edge-no-D", "edge", inp, dict(conv), seed=4092, note="L = 4 without D"))
    inp = ops_s5.sample(np.random.default_rng(4093), conv, L=6, b=1, h=1, n=2, h0=False)
    inp["dt"] = np.full(2, 1e-5)
    out.append(Case(ops_s5.OP, "edge-small-dt", "edge", inp, dict(conv), seed=4093,
                    note="dt = 1e-5: phi1' by its series"))
    return out


def s5_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.s5.s5_ssm_vjp` (recurrent view) in the op's layout (``h0`` = ``initial_state``)."""
    from refimpl.ssm.s5 import s5_ssm_vjp

    bid = bool(conv["bidirectional"])
    h0 = None if (bid or not conv["use_h0"]) else inp.get("h0")
    g = s5_ssm_vjp(inp["Lambda"], inp["B_tilde"], inp["C_tilde"], inp.get("D"), inp["dt"], inp["u"], dy=cot["y"],
                   d_final_state=None if bid else cot.get("h_last"), method=conv["method"],
                   output=conv["real_output"], C_back=inp.get("C_back") if bid else None, initial_state=h0)
    if "initial_state" in g:
        g["h0"] = g.pop("initial_state")
    return g


register_grad(GradSpec(
    op="ssm.s5", wrt=S5_WRT, forward=s5_forward, bounds=s5_grad_bounds, cases=s5_grad_cases,
    reference_vjp=s5_reference_vjp, module=__name__,
    notes="oracle: differences of a plain float64 loop with its own discretization "
          "(oracles.ssm_structured_grad_forward.s5_forward); bound: the adjoint on |inputs| x gamma_depth",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.ema
# ----------------------------------------------------------------------------------------------------------

def ema_depth(inp) -> int:
    """``2(L+2) + n + b(L+1) + 10`` (module docstring)."""
    b, L, d = np.shape(inp["x"])
    n = np.shape(inp["alpha"])[1]
    return 2 * (L + 2) + n + b * (L + 1) + 10


def ema_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    depth = ema_depth(inp)
    if cotangents is None:
        M, what = magnitudes, f"|J|^T|w| (no cotangents given), depth {depth}"
    else:
        M, what = ema_adjoint_magnitude(inp, conv, cotangents), f"the EMA adjoint on |inputs|, depth {depth}"
    return {k: componentwise_bound(np.asarray(M[k]), depth, dtype, oracle_dtype=None, what=what)
            for k in EMA_WRT if k in oracle_grads and k in M}


def ema_grad_cases(conv) -> List[Case]:
    """L = 0, 1, 2, 9 (odd), strong damping, with and without h0 (when claimed)."""
    from oracles.verify import ops_ema

    use_h0 = bool(conv["use_h0"])
    rows = [("edge-L0", "edge", dict(L=0, b=1, d=2, n=2, h0=use_h0)),
            ("edge-L1", "edge", dict(L=1, b=2, d=2, n=2, h0=use_h0)),
            ("edge-L2", "edge", dict(L=2, b=1, d=1, n=3, h0=use_h0)),
            ("golden-L9", "golden", dict(L=9, b=1, d=2, n=2, h0=use_h0)),
            ("edge-strong-damping", "edge", dict(L=8, b=1, d=1, n=2, q_min=1e-2, h0=use_h0))]
    if use_h0:
        rows.append(("edge-L5-no-h0", "edge", dict(L=5, b=1, d=2, n=2, h0=False)))
    out = []
    for i, (cid, kind, kw) in enumerate(rows):
        inp = ops_ema.sample(np.random.default_rng([4094, i]), conv, **kw)
        out.append(Case(ops_ema.OP, cid, kind, inp, dict(conv), seed=4094, note=f"{kw}"))
    return out


def ema_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.ema.mega_ema_vjp` in the op's layout (``h0`` = ``initial_state``)."""
    from refimpl.ssm.ema import mega_ema_vjp

    h0 = inp.get("h0") if conv["use_h0"] else None
    g = mega_ema_vjp(inp["x"], inp["alpha"], inp["delta"], inp["beta"], inp["eta"], dy=cot["y"],
                     d_final_state=cot.get("h_last"), initial_state=h0)
    if "initial_state" in g:
        g["h0"] = g.pop("initial_state")
    return g


register_grad(GradSpec(
    op="ssm.ema", wrt=EMA_WRT, forward=ema_forward, bounds=ema_grad_bounds, cases=ema_grad_cases,
    reference_vjp=ema_reference_vjp, module=__name__,
    notes="oracle: differences of a plain float64 loop (oracles.ssm_structured_grad_forward.ema_forward); bound: "
          "the adjoint on |inputs| x gamma_depth",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.dss_kernel
# ----------------------------------------------------------------------------------------------------------

DSS_WRT = ("Lambda", "W", "dt")


def dss_depth(inp) -> float:
    r"""``2L + n + 50 + L (4 + max|dt lambda|)``: the ``dK``-weighted sums over ``k`` (and the softmax normalizer's),
    the sums over the states, ``phi1'`` by its series (depth 45), and the exponent ``k p``'s relative error
    (``4 + |p|`` ulps) carried up to the ``L``-th power."""
    lam = np.asarray(inp["Lambda"])
    n = lam.shape[1]
    L = int(np.asarray(inp["L"]))
    p = float(np.max(np.abs(np.broadcast_to(np.asarray(inp["dt"], dtype=float), lam.shape[:1])[:, None] * lam),
                     initial=0))
    return 2 * L + n + 50 + L * (4 + p)


def dss_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    from oracles.ssm_structured_grad_forward import dss_adjoint_magnitude

    depth = int(np.ceil(dss_depth(inp)))
    if cotangents is None:
        M, what = magnitudes, f"|J|^T|w| (no cotangents given), depth {depth}"
    else:
        M, what = dss_adjoint_magnitude(inp, conv, cotangents), f"the DSS adjoint on |inputs|, depth {depth}"
    return {k: componentwise_bound(np.asarray(M[k]), depth, dtype, oracle_dtype=None, complex_ops=True, what=what)
            for k in DSS_WRT if k in oracle_grads and k in M}


def dss_grad_cases(conv) -> List[Case]:
    """L = 0, 1, 7 (odd), 16 with two channels, equal steps, a small dt (phi1' by its series)."""
    from oracles.verify import ops_s4d

    out = []
    for cid, kind, L, h in (("edge-L0", "edge", 0, 1), ("edge-L1", "edge", 1, 2), ("golden-L7", "golden", 7, 1),
                            ("golden-L16-two-channels", "golden", 16, 2)):
        inp = ops_s4d.dss_sample(np.random.default_rng([4095, L]), conv, L=L, h=h, n=3)
        out.append(Case(ops_s4d.OP_DSS, cid, kind, inp, dict(conv), seed=4095, note=f"L = {L}, h = {h}"))
    inp = ops_s4d.dss_sample(np.random.default_rng(4096), conv, L=5, h=2, n=2)
    inp["dt"] = np.full(2, 0.05)
    out.append(Case(ops_s4d.OP_DSS, "edge-equal-dt", "edge", inp, dict(conv),
                    note="one dt value in both channels (the op's dt is (h): a scalar is refimpl's alone)"))
    inp = ops_s4d.dss_sample(np.random.default_rng(4097), conv, L=6, h=1, n=2)
    inp["dt"] = np.asarray([1e-4])
    out.append(Case(ops_s4d.OP_DSS, "edge-small-dt", "edge", inp, dict(conv), note="dt = 1e-4: |p| small"))
    return out


def dss_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    from refimpl.ssm.s4d import dss_kernel_vjp

    return dss_kernel_vjp(inp["Lambda"], inp["W"], inp["dt"], int(np.asarray(inp["L"])), dK=cot["K"],
                          variant=conv["variant"])


register_grad(GradSpec(
    op="ssm.dss_kernel", wrt=DSS_WRT, forward=dss_forward, bounds=dss_grad_bounds, cases=dss_grad_cases,
    reference_vjp=dss_reference_vjp, outputs=("K",), module=__name__,
    notes="oracle: differences of the DSS kernel term by term in float64 (phi1 by expm1 of the parts; the softmax "
          "by a log-sum-exp normalizer; oracles.ssm_structured_grad_forward.dss_forward)",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.s4_kernel
# ----------------------------------------------------------------------------------------------------------

S4_WRT = ("Lambda", "P", "Q", "B", "C", "dt")


def s4_depth(inp) -> int:
    r"""``(L+2)(n+2) + 2 n^2 + 3n + 10``: the powers' products (inner dimension ``n``, ``L`` steps, recomputed) and
    the reverse scan's, the outer products summed over ``k``, and the discretization's adjoint (its products with
    ``N^H`` and the ``<M, dX>`` sums of ``n^2`` terms) besides the solves (their own factor, the Skeel condition)."""
    h, n = np.shape(inp["Lambda"])
    L = int(np.asarray(inp["L"]))
    return (L + 2) * (n + 2) + 2 * n * n + 3 * n + 10


def s4_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    r"""Componentwise: ``(1 + skeel) gamma_{depth + 3n}`` times the adjoint on absolute values
    (:func:`oracles.ssm_structured_grad_forward.s4_adjoint_magnitude`); the solves with ``M`` and ``M^H`` have a
    componentwise forward error at most ``cond(M) gamma_{3n}`` relative (Higham, *Accuracy and Stability*, Thm 7.4,
    with the Skeel condition number ``|| |M^{-1}| |M| ||_inf``)."""
    from oracles.ssm_structured_grad_forward import s4_adjoint_magnitude

    n = np.shape(inp["Lambda"])[1]
    depth = s4_depth(inp) + 3 * n
    if cotangents is None:
        return {k: componentwise_bound(np.asarray(magnitudes[k]), depth, dtype, oracle_dtype=None, complex_ops=True,
                                       what=f"|J|^T|w| (no cotangents given), depth {depth}")
                for k in S4_WRT if k in oracle_grads and k in magnitudes}
    M = s4_adjoint_magnitude(inp, conv, cotangents)
    f = 1.0 + M["skeel"]
    out = {}
    for k in S4_WRT:
        if k in oracle_grads:
            b = componentwise_bound(f * np.asarray(M[k]), depth, dtype, oracle_dtype=None, complex_ops=True,
                                    what=f"the S4 dense adjoint on |inputs| (|M^-1| per solve) x (1 + Skeel "
                                         f"cond {M['skeel']:.3g}), depth {depth}")
            out[k] = b
    return out


def s4_grad_cases(conv) -> List[Case]:
    """Bilinear only (refimpl's VJP is the dense view's): L = 0, 1, 7 (odd), 16, rank 1 and 2, equal steps."""
    from oracles.verify import ops_s4

    if conv["method"] != "bilinear":
        return []
    out = []
    for cid, kind, kw in (("edge-L0", "edge", dict(L=0, h=1, n=2, r=1)), ("edge-L1", "edge", dict(L=1, h=2, n=2, r=1)),
                          ("golden-L7", "golden", dict(L=7, h=1, n=3, r=1)),
                          ("golden-L16-rank2", "golden", dict(L=16, h=1, n=3, r=2))):
        inp = ops_s4.sample(np.random.default_rng([4098, kw["L"]]), conv, **kw)
        out.append(Case(ops_s4.OP, cid, kind, inp, dict(conv), seed=4098, note=f"{kw}"))
    inp = ops_s4.sample(np.random.default_rng(4099), conv, L=5, h=2, n=2, r=1)
    inp["dt"] = np.full(2, 0.1)
    out.append(Case(ops_s4.OP, "edge-equal-dt", "edge", inp, dict(conv), note="one dt value in both channels"))
    return out


def s4_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    from refimpl.ssm.s4 import s4_kernel_vjp

    return s4_kernel_vjp(inp["Lambda"], inp["P"], inp["Q"], inp["B"], inp["C"], inp["dt"], int(np.asarray(inp["L"])),
                         dK=cot["K"], output=conv["output"], method=conv["method"])


def _s4_forward(inp, conv):
    from oracles.ssm_structured_grad_forward import s4_dense_forward

    return s4_dense_forward(inp, conv)


register_grad(GradSpec(
    op="ssm.s4_kernel", wrt=S4_WRT, forward=_s4_forward, bounds=s4_grad_bounds, cases=s4_grad_cases,
    reference_vjp=s4_reference_vjp, outputs=("K",), module=__name__,
    notes="oracle: differences of the dense DPLR matrix's bilinear discretization by solves and matrix_power in "
          "float64 (oracles.ssm_structured_grad_forward.s4_dense_forward); the zoh convention has no gradient cases",
))
