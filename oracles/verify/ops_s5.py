r"""Op spec ``ssm.s5``: the S5 layer (Smith, Warrington, Linderman 2023), a MIMO diagonal SSM.

Canonical (the official S5 code's arrays, ``s5/ssm.py``: ``Lambda (P,)``, ``B_tilde (P, H)``, ``C_tilde (H, P)``,
``D (H,)``, a step per state ``(P,)``, an ``(L, H)`` sequence -- batched here over a leading ``b``)::

    fn(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None) -> (y, h_last)

``Lambda (n)`` complex, ``B_tilde (n h)``, ``C_tilde (h n)``, ``D (h)``, ``dt (n)``, ``u (b l h)`` real;
``y (b l h)`` real, ``h0``/``h_last (b n)`` complex.  ``x_t = Lambda_bar x_{t-1} + B_bar u_t``,
``y_t = Re(C~ x_t) + D u_t`` (``2 Re`` under ``real_output="2re"``, S5's ``conj_sym=True``).
Bidirectional (``C_back``): a second state run backwards in time, ``x^b_t = Lambda_bar x^b_{t+1} + B_bar u_t``
(the official code's reverse associative scan over the same elements), adds ``Re(C_back x^b_t)``; the
official code concatenates ``[C~, C_back]`` into one ``(H, 2P)`` matrix -- here they are two inputs.

Conventions: ``method`` (``zoh``: ``Lambda_bar = e^{dt Lambda}``, ``B_bar = (Lambda_bar - 1)/Lambda B~``;
``bilinear``), ``real_output`` (``2re``/``re``), ``bidirectional`` (every case passes ``C_back``, or none),
``use_h0`` (the candidate takes an initial state: cases pass one, and some none; the official code has
none: ``use_h0=False``), and ``zoh_B`` -- how the candidate evaluates ZOH's ``B_bar``, which sets the bound
only: ``expm1`` (to working accuracy) or ``difference`` (``(Lambda_bar - 1)/Lambda`` as written, the
official code's: a cancellation of relative size ``u |Lambda_bar| / |Lambda_bar - 1|`` when ``dt |Lambda|``
is small -- a known loss of accuracy, not a different map).

Oracle: the dense Toeplitz operator with closed-form powers ``Lambda_bar^j = exp(j log Lambda_bar)``
(:func:`oracles.structured.diag_ssm_dense`) on this module's own discretization (Van Loan for ZOH), the
initial state's and the final state's terms in the same closed form.  Bound: the analysis of
:func:`oracles.structured.diag_ssm_bound` evaluated for the candidate's dtype, with the discretization's
per-step relative error and ``B_bar``'s, plus the float64 oracle's share.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.structured import bilinear_diag, diag_ssm_dense, zoh_diag_vanloan
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "ssm.s5"


def _eff(inp, conv):
    x = dict(inp)
    if not conv["bidirectional"]:
        x["C_back"] = None
    if conv["bidirectional"] or not conv["use_h0"]:
        x["h0"] = None
    return x


def discretize(Lambda, B_tilde, dt, method):
    """``(Lambda_bar (n), B_bar (n h))``: ZOH by Van Loan's 2x2 block exponential per state, or bilinear."""
    lam = np.asarray(Lambda, dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape)
    B = np.asarray(B_tilde, dtype=np.complex128)
    if method == "zoh":
        Ab, Bb = zoh_diag_vanloan(lam[:, None], B, dt[:, None])
    else:
        Ab, Bb = bilinear_diag(lam[:, None], B, dt[:, None])
    return np.asarray(Ab)[:, 0], np.asarray(Bb) * np.ones_like(B)


def _powers(Ab, j):
    """``Ab^j`` for an integer array ``j`` in closed form, ``exp(j log Ab)``: ``(len(j), n)``."""
    return np.exp(np.asarray(j, dtype=np.float64)[:, None] * np.log(Ab)[None, :]) if Ab.size else np.zeros((len(j), 0))


def oracle(inp, conv):
    x = _eff(inp, conv)
    Ab, Bb = discretize(x["Lambda"], x["B_tilde"], x["dt"], conv["method"])
    C = np.asarray(x["C_tilde"], dtype=np.complex128)
    D = None if x.get("D") is None else np.asarray(x["D"], dtype=np.float64)
    u = np.asarray(x["u"], dtype=np.float64)
    b, L, h = u.shape
    f = 2.0 if conv["real_output"] == "2re" else 1.0
    y = diag_ssm_dense(Ab, Bb, C, D, u, factor=f)
    j = np.arange(L)
    pw = _powers(Ab, j)
    # the final state: x_{L-1} = sum_s Lambda_bar^{L-1-s} B_bar u_s (+ Lambda_bar^L h0)
    hL = np.einsum("ln,nh,blh->bn", pw[::-1], Bb, u) if L else np.zeros((b, Ab.shape[0]), complex)
    if x.get("h0") is not None:
        h0 = np.asarray(x["h0"], dtype=np.complex128)
        # y_t += f Re(C Lambda_bar^{t+1} h0)
        y = y + f * np.einsum("hn,ln,bn->blh", C, _powers(Ab, j + 1), h0).real
        hL = hL + _powers(Ab, [L])[0] * h0
    if x.get("C_back") is not None:
        Cb = np.asarray(x["C_back"], dtype=np.complex128)
        y = y + diag_ssm_dense(Ab, Bb, Cb, None, u[:, ::-1], factor=f)[:, ::-1]
    return {"y": y, "h_last": hL}


def bounds(inp, out, conv, dtype):
    x = _eff(inp, conv)
    Ab, Bb = discretize(x["Lambda"], x["B_tilde"], x["dt"], conv["method"])
    lam = np.asarray(x["Lambda"], dtype=np.complex128)
    dtn = np.broadcast_to(np.asarray(x["dt"], dtype=np.float64), lam.shape)
    C = np.asarray(x["C_tilde"], dtype=np.complex128)
    D = None if x.get("D") is None else np.asarray(x["D"], dtype=np.float64)
    u = np.asarray(x["u"], dtype=np.float64)
    b, L, h = u.shape
    n = lam.shape[0]
    f = 2.0 if conv["real_output"] == "2re" else 1.0
    logmax = float(np.max(np.abs(np.log(Ab)))) if n else 0.0
    # the discretization's relative error per step in Lambda_bar (exp of a rounded argument: 4 + |dt Lambda|
    # units; bilinear: 6) and B_bar's (expm1 form: 8; the difference (Lambda_bar - 1)/Lambda: its cancellation)
    if conv["method"] == "zoh":
        e_step = 4 + float(np.max(np.abs(dtn * lam))) if n else 0.0
        if conv["zoh_B"] == "difference" and n:
            e_B = 8 + float(np.max(np.abs(Ab) * (2 + np.abs(dtn * lam)) / np.abs(Ab - 1)))
        else:
            e_B = 8.0
    else:
        e_step, e_B = 6.0, 8.0
    depth = 3 * L + 2 * (h + n) + 8 + e_B + L * (logmax + e_step)
    depth64 = 3 * L + 2 * (h + n) + 16 + L * (logmax + 4)
    g = gamma(depth, dtype, complex_ops=True) + gamma(depth64, np.float64, complex_ops=True)
    aAb, aBb, aC = np.abs(Ab), np.abs(Bb), np.abs(C)
    mag = diag_ssm_dense(aAb, aBb, aC, None if D is None else np.abs(D), u, factor=f, absolute=True)
    j = np.arange(L)
    pw = aAb[None, :] ** j[:, None] if n else np.zeros((L, 0))
    magh = np.einsum("ln,nh,blh->bn", pw[::-1], aBb, np.abs(u)) if L else np.zeros((b, n))
    if x.get("h0") is not None:
        ah0 = np.abs(np.asarray(x["h0"]))
        mag = mag + f * np.einsum("hn,ln,bn->blh", aC, aAb[None, :] ** (j[:, None] + 1), ah0)
        magh = magh + aAb ** L * ah0
    if x.get("C_back") is not None:
        mag = mag + diag_ssm_dense(aAb, aBb, np.abs(np.asarray(x["C_back"])), None, u[:, ::-1], factor=f,
                                   absolute=True)[:, ::-1]
    src = (f"diagonal SSM (oracles.structured.diag_ssm_bound's analysis) in {np.dtype(dtype).name}: gamma^c_{depth:.0f} "
           f"x the dense operator on |inputs| (discretization: {e_step:.3g} u per step, B_bar {e_B:.3g} u) + the float64 "
           f"oracle's gamma^c_{depth64:.0f}")
    return {"y": Bound(g * mag + 1e-300, src), "h_last": Bound(g * magh + 1e-300, src)}


def reference(inp, conv):
    from refimpl.ssm.s5 import s5_ssm

    x = _eff(inp, conv)
    if x.get("C_back") is not None:
        return {"y": s5_ssm(x["Lambda"], x["B_tilde"], x["C_tilde"], x.get("D"), x["dt"], x["u"], view="recurrent",
                            method=conv["method"], output=conv["real_output"], C_back=x["C_back"])}
    y, hL = s5_ssm(x["Lambda"], x["B_tilde"], x["C_tilde"], x.get("D"), x["dt"], x["u"], view="recurrent",
                   method=conv["method"], output=conv["real_output"], initial_state=x.get("h0"),
                   return_final_state=True)
    return {"y": y, "h_last": hL}


def sample(rng, conv, *, L=None, b=None, h=None, n=None, h0=None, lam=None):
    b, h = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 4))
    n = (int(rng.integers(1, 5)) if lam is None else len(lam)) if n is None else n
    L = int(rng.choice([0, 1, 2, 7, 16, 33])) if L is None else L
    if lam is None:
        lam = -rng.uniform(0.1, 1.0, n) + 1j * rng.uniform(-3.0, 3.0, n)
    cplx = lambda *s: rng.standard_normal(s) + 1j * rng.standard_normal(s)  # noqa: E731
    with_h0 = (bool(conv["use_h0"]) and bool(rng.integers(0, 4))) if h0 is None else h0
    inp = {"Lambda": np.asarray(lam), "B_tilde": cplx(n, h) / np.sqrt(2 * h), "C_tilde": cplx(h, n) / np.sqrt(n),
           "D": rng.standard_normal(h), "dt": np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), n)),
           "u": rng.standard_normal((b, L, h)), "C_back": cplx(h, n) / np.sqrt(n), "h0": cplx(b, n)}
    if not with_h0:
        inp["h0"] = None
    return _eff(inp, conv)


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    from oracles.verify.ops_s4 import legs_dplr

    lam = legs_dplr(16)[0]  # the HiPPO-N spectrum of S5's initialization (8 conjugate pairs, one of each)
    rows = [("golden-hippo-n", "golden", dict(L=24, b=1, h=3, lam=lam), "HiPPO-N eigenvalues, n = 8, h = 3, L = 24"),
            ("edge-L0", "edge", dict(L=0), "L = 0"), ("edge-L1", "edge", dict(L=1), "L = 1"),
            ("edge-L-odd", "edge", dict(L=17, n=3), "L = 17"),
            ("edge-long", "edge", dict(L=256, b=1, h=1, n=2), "L = 256")]
    if conv["use_h0"] and not conv["bidirectional"]:
        rows = [(cid, kind, dict(kw, h0=True), note + ", with h0") for cid, kind, kw, note in rows]
        rows.append(("edge-no-h0", "edge", dict(L=9, h0=False), "L = 9 without h0 (the state starts at zero)"))
    add = case_builder(OP, sample, 91, conv)
    out = add.cases
    add.rows([(cid, kind, {"h0": False, **kw}, note) for cid, kind, kw, note in rows])
    # small dt |Lambda|: ZOH's B_bar by (Lambda_bar - 1)/Lambda cancels (zoh_B names how the candidate does it)
    inp = sample(np.random.default_rng(92), conv, L=12, n=3, h0=False)
    inp["dt"] = np.full(3, 1e-6)
    inp["D"] = np.zeros_like(inp["D"])  # y is the state's share alone: B_bar's accuracy is what is measured
    out.append(Case(OP, "edge-small-dt", "edge", inp, dict(conv), note="dt = 1e-6, D = 0: B_bar -> dt B~"))
    return out


register_op(OpSpec(
    name=OP,
    summary="the S5 layer: a MIMO diagonal SSM with a step per state, Re or 2 Re output, optionally bidirectional",
    inputs=(Arg("Lambda", "n", "complex eigenvalues"), Arg("B_tilde", "n h"), Arg("C_tilde", "h n"),
            Arg("D", "h", "feedthrough per feature", optional=True), Arg("dt", "n", "step per state"),
            Arg("u", "b l h"), Arg("C_back", "h n", "the backward state's output matrix (bidirectional)",
                                   optional=True),
            Arg("h0", "b n", "the state before step 0", optional=True)),
    outputs=(Arg("y", "b l h"), Arg("h_last", "b n", "x_{L-1} (h0, or zero, when L = 0)", optional=True)),
    conventions=(
        Convention("method", "zoh", "discretization per state: zoh or bilinear", ("zoh", "bilinear")),
        Convention("real_output", "2re", "y = 2 Re(C x) + D u (S5's conj_sym: one eigenvalue per conjugate pair) or "
                   "Re(C x) + D u (the full spectrum)", ("2re", "re")),
        Convention("bidirectional", False, "every case passes C_back (a backward state, Re(C_back x^b) added) and no "
                   "h0; False: none does", (False, True)),
        Convention("use_h0", True, "the candidate takes an initial state h0: cases pass one (and some none)",
                   (True, False)),
        Convention("zoh_B", "expm1", "how the candidate evaluates ZOH's B_bar (the bound only): expm1 (to working "
                   "accuracy) or difference ((Lambda_bar - 1)/Lambda as written: its cancellation is allowed)",
                   ("expm1", "difference")),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"u": "l"}, {"y": "l"}, applies=lambda conv: not conv["bidirectional"],
                            sampler=lambda rng, conv: sample(rng, conv, L=10)),),
    lowp=False,  # complex parameters
    complex_inputs=("Lambda", "B_tilde", "C_tilde", "C_back", "h0"),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n"), channels=("h", "h")),
    module=__name__,
    notes="oracle: oracles.structured.diag_ssm_dense (closed-form powers) on Van Loan / bilinear; bound: "
          "diag_ssm_bound's analysis per dtype",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.s5.s5_ssm(Lambda, B_tilde, C_tilde, D, dt, u, view=, backend=, method=, output=, C_back=, "
        "initial_state=, return_final_state=) (return_final_state is refused with C_back: bidirectional returns y)",
    args=(In("Lambda"), In("B_tilde"), In("C_tilde"), In("D"), In("dt"), In("u")),
    kwargs={"method": Conv(lambda c: c["method"]), "output": Conv(lambda c: c["real_output"]),
            "C_back": In("C_back"), "initial_state": In("h0"),
            "return_final_state": Conv(lambda c: not c["bidirectional"])},
    outputs=(Out("y", 0), Out("h_last", 1)),
))
