r"""Gradient checks (``refimpl verify --grad``) of the SSM core: ``ssm.lti``, ``ssm.discretize``, ``ssm.s4d_kernel``,
``ssm.lru``.

Ground truth: central differences with Richardson extrapolation (:mod:`oracles.gradients`) of the float64
forwards of :mod:`oracles.ssm_grad_forward` (a plain loop for the LTI system, the Van Loan block exponential
and closed-form solves for the discretizations, ``exp(k dt lambda)`` for the S4D kernel) -- none of them
refimpl's, none a backward.

Bounds (the rounding of a backward computed in the candidate's dtype; the harness adds the differences' own
error bound):

* ``ssm.lti``: componentwise, ``gamma_depth x M`` with ``M`` the adjoint recurrence on absolute values
  (:func:`oracles.ssm_grad_forward.lti_adjoint_magnitude`: every term of every gradient in absolute value; the
  LTI system is a polynomial in its inputs) and ``depth = (L+2)(n+m+1) + (L+2)(n+p+2) + b(L+1)``: the forward's
  states recomputed (the forward's depth, :func:`oracles.ssm.lti_bound`), the reverse scan's products of inner
  dimension ``n`` and sums over ``p``, and the outer products summed over ``b`` and ``t``.  Complex data: the
  complex multiply factor (4u).  Where the harness gives no cotangents, ``|J|^T |w|`` at the point stands in for
  ``M`` (exact for the entries without cancellation).
* ``ssm.discretize``: diagonal ``A``: componentwise over the elementwise adjoint (``phi1'`` by its series,
  depth 45, or its quotient ``(e^z - phi1(z))/z`` with magnitude ``(|e^z| + |phi1(z)|)/|z|``); dense ZOH and
  Mamba: normwise, the block exponential ``Z = [[X^H, W], [0, X^H]]`` of size ``2(n+m)`` within
  ``e^{||Z||_2} gamma_k ||Z||_F`` (a backward error ``gamma_k ||Z||`` times the Frechet derivative's norm
  ``<= e^{||Z||}``; ``k`` the scaling-and-squaring chain of :func:`oracles.verify.ops_ssm.expm_rounding_depth`),
  then ``dt`` and the ``<M, dX>`` sum; dense gbt:
  normwise through the solves with ``M^H`` (``cond_2(M) gamma_{3n+2}``, Higham Thm 9.4 and 7.1).
* ``ssm.s4d_kernel``: componentwise over the Vandermonde adjoint on absolute values
  (``sum_k k |A_bar|^{k-1} |v| |dKc_k|`` etc.), depth ``2L + n + 50`` plus ``L u |dt lambda|`` per power
  (the recomputed ``A_bar``'s relative error, raised to the ``k``-th power), complex ops.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

from oracles.ssm_grad_forward import (GBT_ALPHA, discretize_forward, lru_forward, lti_adjoint_magnitude, lti_forward,
                                     s4d_forward)
from oracles.tolerance import Bound, componentwise_bound, gamma, unit_roundoff
from oracles.verify.registry import Case, GradSpec, register_grad

LTI_WRT = ("A_bar", "B_bar", "C", "D", "x", "h0")
DISC_WRT = ("A", "B", "dt", "C", "D")
S4D_WRT = ("Lambda", "B", "C", "dt")


def _cplx(*arrs) -> bool:
    return any(a is not None and np.iscomplexobj(a) for a in arrs)


# ----------------------------------------------------------------------------------------------------------
# ssm.lti
# ----------------------------------------------------------------------------------------------------------

def lti_depth(inp, conv) -> int:
    """``(L+2)(n+m+1) + (L+2)(n+p+2) + b(L+1)`` (module docstring)."""
    b, l, h, m = np.shape(inp["x"])
    n = np.shape(inp["A_bar"])[-1]
    p = np.shape(inp["C"])[1]
    return (l + 2) * (n + m + 1) + (l + 2) * (n + p + 2) + b * (l + 1)


def lti_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    depth = lti_depth(inp, conv)
    cplx = _cplx(*(inp.get(k) for k in LTI_WRT))
    if cotangents is not None:
        M = lti_adjoint_magnitude(inp, conv, cotangents)
        what = f"the adjoint recurrence on |inputs|, depth {depth}"
    else:
        M = magnitudes
        what = f"|J|^T|w| (no cotangents given), depth {depth}"
    out = {}
    for k in LTI_WRT:
        if k in oracle_grads and k in M:
            out[k] = componentwise_bound(np.asarray(M[k]), depth, dtype, oracle_dtype=None, complex_ops=cplx,
                                         what=what)
    return out


def lti_grad_cases(conv) -> List[Case]:
    """L = 0, 1, 2, 7, 17 (odd), real and complex, with and without h0; time-varying systems when claimed."""
    from oracles.verify.ops_ssm import OP_LTI, lti_sample

    rows = [("edge-L0", "edge", 0, {}), ("edge-L1", "edge", 1, {"complex_": False}),
            ("edge-L2-complex", "edge", 2, {"complex_": True}), ("golden-L7", "golden", 7, {"complex_": False}),
            ("golden-L17-complex", "golden", 17, {"complex_": True})]
    if conv["use_h0"]:
        rows = [(cid + "-h0", kind, L, dict(kw, h0=True)) for cid, kind, L, kw in rows]
        rows += [("edge-L7-no-h0", "edge", 7, {"h0": False, "complex_": False}),
                 ("edge-L0-no-h0", "edge", 0, {"h0": False})]
    if conv["time_varying"] and not conv["diagonal"]:
        rows += [("tv-L1", "edge", 1, {"tv": True}), ("tv-L7", "golden", 7, {"tv": True, "complex_": False}),
                 ("tv-L5-complex", "edge", 5, {"tv": True, "complex_": True})]
    out = []
    for i, (cid, kind, L, kw) in enumerate(rows):
        kw.setdefault("tv", False)
        rng = np.random.default_rng([4041, L, i])
        inp = lti_sample(rng, conv, L=L, n=2, **kw)
        out.append(Case(OP_LTI, cid, kind, inp, dict(conv), seed=4041, note=f"L = {L}, n = 2 ({kind})"))
    # D absent
    inp = lti_sample(np.random.default_rng([4042]), conv, L=5, n=2, complex_=False, tv=False)
    inp["D"] = None
    out.append(Case(OP_LTI, "edge-no-D", "edge", inp, dict(conv), seed=4042, note="L = 5 without D"))
    return out


def lti_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.lti.lti_ssm_vjp` (recurrent view) in the op's layout (``h0`` = ``initial_state``)."""
    from refimpl.ssm.lti import lti_ssm_vjp

    h0 = inp.get("h0") if conv["use_h0"] else None
    C = np.asarray(inp["C"])
    two = conv["real_output"] == "2re"
    if two:
        C = C * 2  # y = 2 Re(C h) + D x = Re((2C) h + D x): exact scaling
    g = lti_ssm_vjp(inp["A_bar"], inp["B_bar"], C, inp.get("D"), inp["x"], dy=cot["y"],
                    d_final_state=cot.get("h_last"), initial_state=h0, diagonal=bool(conv["diagonal"]))
    if two:
        # C enters as 2C: dL/dC = 2 dL/d(2C)
        g["C"] = g["C"] * 2
    if "initial_state" in g:
        g["h0"] = g.pop("initial_state")
    return g


def lti_storing_vjp(inp, conv, cot, lowp) -> Dict[str, np.ndarray]:
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`): the recurrent view step by step,
    the state ``h_t`` stored in ``lowp`` after every step of the forward scan and its adjoint ``dh_t`` after every
    step of the reverse scan (a loop in the dtype rounds its state every step); each step is refimpl's recurrent
    ``lti_ssm`` (the op's ``reference``) / :func:`lti_reference_vjp` on a one-step sequence (``h0 = h_t``, the
    cotangent of ``h_last`` = ``dh_{t+1}``), in float32 arithmetic.  The time-shared ``C``, ``D`` (and ``A_bar``,
    ``B_bar`` of a time-invariant system) accumulate their per-step gradients in a buffer stored in ``lowp``."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan, sum_steps
    from oracles.verify.registry import get_op

    rnd = storer(lowp)
    f = lambda a: None if a is None else (np.asarray(a, np.complex64) if np.iscomplexobj(a)  # noqa: E731
                                          else np.asarray(a, np.float32))
    fwd_ref = get_op("ssm.lti").reference
    cs = dict(conv, use_h0=True)
    X = {k: f(inp.get(k)) for k in ("A_bar", "B_bar", "C", "D", "x")}
    h0 = f(inp.get("h0")) if conv["use_h0"] else None
    b, l, hh = X["x"].shape[:3]
    n = X["C"].shape[2]
    cplx = any(np.iscomplexobj(v) for v in X.values() if v is not None)
    state0 = np.zeros((b, hh, n), np.complex64 if cplx else np.float32) if h0 is None else h0
    tv = {"A_bar": np.ndim(X["A_bar"]) == 4, "B_bar": np.ndim(X["B_bar"]) == 4}
    dy = rnd(f(cot["y"]))
    dl = f(cot.get("h_last"))

    def step(t, h):
        st = {"C": X["C"], "D": X["D"], "x": X["x"][:, t:t + 1], "h0": h}
        for k in ("A_bar", "B_bar"):
            st[k] = X[k][t:t + 1] if tv[k] else X[k]
        return st

    def fwd(t, h):
        return fwd_ref(step(t, h), cs)["h_last"]

    def vjp(t, h, dh):
        g = lti_reference_vjp(step(t, h), cs, {"y": dy[:, t:t + 1], "h_last": dh})
        return g, g["h0"]

    steps, dh0 = storing_reverse_scan(l, state0, dl, fwd, vjp, lowp)
    out = {"x": concat_steps(steps, "x", 1, X["x"].shape), "C": sum_steps(steps, "C", X["C"].shape, lowp)}
    for k in ("A_bar", "B_bar"):
        out[k] = concat_steps(steps, k, 0, X[k].shape) if tv[k] else sum_steps(steps, k, X[k].shape, lowp)
    if X["D"] is not None:
        out["D"] = sum_steps(steps, "D", X["D"].shape, lowp)
    if h0 is not None:
        out["h0"] = dh0
    return out


def lti_reference_vjp_lowp(inp, conv, cot, lowp: Optional[str] = None) -> Dict[str, np.ndarray]:
    """:func:`lti_reference_vjp`; ``lowp`` (the harness's low-precision baseline): :func:`lti_storing_vjp`."""
    if lowp is not None:
        return lti_storing_vjp(inp, conv, cot, lowp)
    return lti_reference_vjp(inp, conv, cot)


register_grad(GradSpec(
    op="ssm.lti", wrt=LTI_WRT, forward=lti_forward, bounds=lti_grad_bounds, cases=lti_grad_cases,
    reference_vjp=lti_reference_vjp_lowp, outputs=("y", "h_last"), module=__name__,
    notes="oracle: differences of a plain float64 loop (oracles.ssm_grad_forward.lti_forward); bound: the adjoint "
          "recurrence on |inputs| x gamma_depth",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.discretize
# ----------------------------------------------------------------------------------------------------------

def _alpha(conv) -> float:
    return float(conv["alpha"]) if conv["method"] == "gbt" else GBT_ALPHA.get(conv["method"], 0.0)


def _dphi1_mag(z: np.ndarray) -> np.ndarray:
    """The magnitude of an evaluation of ``phi1'(z)``: the series' terms for ``|z| < 1``, ``(|e^z| + |phi1|)/|z|``."""
    az = np.abs(z)
    series = sum((k + 1) * az ** k / math.factorial(k + 2) for k in range(20))
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(az > 0, np.abs(np.expm1(z) / np.where(az > 0, z, 1)), 1.0)
        quot = (np.abs(np.exp(z)) + phi) / np.where(az > 0, az, 1)
    return np.where(az < 1, series, quot)


def _diag_magnitudes(A, B, dt, wA, wB, method, alpha):
    """``{"A", "B", "dt"}``: the elementwise adjoint of a diagonal discretization on absolute values."""
    z = dt * A
    az = np.abs(z)
    aA, aB = np.abs(A), np.abs(B)
    wA, wB = np.abs(wA), np.abs(wB)
    mg = np.sum(wB * aB, axis=-1)  # |dg|
    if method in ("zoh", "mamba"):
        eA = np.abs(np.exp(z))
        if method == "zoh":
            phi = np.where(az > 1e-5, np.abs(np.expm1(z) / np.where(az > 1e-5, z, 1)), 1.0)
            dz = eA * wA + dt * _dphi1_mag(z) * mg
            return {"A": dt * dz, "B": (dt * phi)[..., None] * wB, "dt": np.sum(aA * dz + phi * mg, axis=-1)}
        dz = eA * wA
        return {"A": dt * dz, "B": dt * wB, "dt": np.sum(aA * dz, axis=-1) + np.sum(aB * wB, axis=(-2, -1))}
    if method == "forward_euler":
        return {"A": dt * wA, "B": dt * wB, "dt": np.sum(aA * wA, axis=-1) + np.sum(aB * wB, axis=(-2, -1))}
    den = np.abs(1.0 - alpha * z)
    dz = wA / den ** 2 + alpha * dt * mg / den ** 2
    return {"A": dt * dz, "B": (dt / den)[..., None] * wB, "dt": np.sum(aA * dz + mg / den, axis=-1)}


def _expm_block_error(X, W, dtype):
    r"""Normwise error bound of ``exp(Z)``, ``Z = [[X^H, W], [0, X^H]]``, by scaling and squaring in ``dtype``.

    A backward error ``||dZ|| <= gamma_k ||Z||_F`` (``k``: :func:`oracles.verify.ops_ssm.expm_rounding_depth`)
    moves ``exp(Z)`` by at most ``||L_exp(Z)|| ||dZ|| <= e^{||Z||_2} gamma_k ||Z||_F`` (the Frechet derivative's
    norm is at most ``e^{||Z||}``, Higham, *Functions of Matrices*, Thm 10.9 / eq. 10.15).
    Returns ``(bound, L_exp(X^H, W))``.
    """
    from oracles.verify.ops_ssm import expm_rounding_depth
    import scipy.linalg

    N = X.shape[0]
    blk = np.zeros((2 * N, 2 * N), dtype=np.result_type(X, W, np.float64))
    blk[:N, :N] = np.conj(X).T
    blk[N:, N:] = np.conj(X).T
    blk[:N, N:] = W
    depth = expm_rounding_depth(blk)
    E = scipy.linalg.expm(blk)
    bound = math.exp(float(np.linalg.norm(blk, 2))) * gamma(depth, dtype, complex_ops=np.iscomplexobj(blk)) * float(
        np.linalg.norm(blk))
    return bound, E[:N, N:]


def discretize_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    A, B = np.asarray(inp["A"]), np.asarray(inp["B"])
    dt = float(np.asarray(inp["dt"]).real)
    method, diag = conv["method"], bool(conv["diagonal"])
    alpha = _alpha(conv)
    h, n, m = B.shape
    cplx = _cplx(A, B)
    out: Dict[str, Bound] = {}
    if cotangents is None:
        # without the cotangents: |J|^T |w| at the point as the magnitude, the deepest chain of any method
        for k in ("A", "B", "dt"):
            if k in magnitudes:
                out[k] = componentwise_bound(magnitudes[k], 60 + 4 * (n + m), dtype, oracle_dtype=None,
                                             complex_ops=cplx, what="|J|^T|w| (no cotangents given)")
    else:
        wA = np.asarray(cotangents["A_bar"])
        wB = np.asarray(cotangents["B_bar"])
        if diag:
            Mg = _diag_magnitudes(A, B, dt, wA, wB, method, alpha)
            depth = 45 + m + n
            for k in ("A", "B"):
                out[k] = componentwise_bound(Mg[k], depth, dtype, oracle_dtype=None, complex_ops=cplx,
                                             what=f"the elementwise adjoint on |inputs| (phi1' series), depth {depth}")
            out["dt"] = componentwise_bound(np.sum(Mg["dt"]), depth + h * n, dtype, oracle_dtype=None,
                                            complex_ops=cplx, what="the elementwise adjoint on |inputs|, summed")
        else:
            bA = np.zeros(A.shape)
            bB = np.zeros(B.shape)
            bdt = 0.0
            for c in range(h):
                if method in ("zoh", "mamba"):
                    Mb = np.zeros((n + m, n + m), dtype=np.result_type(A, B, np.float64))
                    Mb[:n, :n] = A[c]
                    if method == "zoh":
                        Mb[:n, n:] = B[c]
                    W = np.zeros_like(Mb)
                    W[:n, :n] = wA[c]
                    if method == "zoh":
                        W[:n, n:] = wB[c]
                    eX, dX = _expm_block_error(dt * Mb, W, dtype)
                    bA[c] = dt * eX + gamma(1, dtype) * dt * np.abs(dX[:n, :n])
                    if method == "zoh":
                        bB[c] = dt * eX + gamma(1, dtype) * dt * np.abs(dX[:n, n:])
                        bdt += float(np.linalg.norm(Mb)) * eX + gamma((n + m) ** 2, dtype) * float(
                            np.sum(np.abs(Mb) * np.abs(dX)))
                    else:
                        bB[c] = gamma(1, dtype) * dt * np.abs(wB[c])
                        bdt += float(np.linalg.norm(A[c])) * eX + gamma(n * n + n * m, dtype) * float(
                            np.sum(np.abs(A[c]) * np.abs(dX[:n, :n])) + np.sum(np.abs(B[c]) * np.abs(wB[c])))
                else:
                    Mm = np.eye(n) - alpha * dt * A[c]
                    Ab = np.linalg.solve(Mm, np.eye(n) + (1 - alpha) * dt * A[c])
                    Bb = np.linalg.solve(Mm, dt * B[c])
                    kappa = float(np.linalg.cond(Mm))
                    g = gamma(3 * n + 2, dtype, complex_ops=cplx)
                    SA = np.linalg.solve(np.conj(Mm).T, wA[c])
                    SB = np.linalg.solve(np.conj(Mm).T, wB[c])
                    nSA, nSB = float(np.linalg.norm(SA)), float(np.linalg.norm(SB))
                    nAb, nBb = float(np.linalg.norm(Ab)), float(np.linalg.norm(Bb))
                    # S = M^{-H} W: cond x gamma x ||S||; A_bar, B_bar recomputed likewise
                    eS = kappa * g * (nSA + nSB)
                    eF = kappa * g * (nAb + nBb)
                    # dM = -(S_A A_bar^H + S_B B_bar^H)
                    edM = eS * (nAb + nBb) + (nSA + nSB) * eF + gamma(n + m + 1, dtype, complex_ops=cplx) * (
                        nSA * nAb + nSB * nBb)
                    eT = eS + alpha * edM
                    bA[c] = dt * eT + gamma(2, dtype) * np.abs(np.asarray(oracle_grads["A"])[c])
                    bB[c] = dt * eS + gamma(1, dtype) * np.abs(np.asarray(oracle_grads["B"])[c])
                    bdt += float(np.linalg.norm(A[c])) * eT + float(np.linalg.norm(B[c])) * eS + gamma(
                        n * n + n * m, dtype, complex_ops=cplx) * (float(np.linalg.norm(A[c])) * (nSA + alpha * (
                            nSA * nAb + nSB * nBb)) + float(np.linalg.norm(B[c])) * nSB)
            src = ("normwise: the block exponential's e^||Z|| gamma_k ||Z||_F (zoh/mamba) or cond_2(I - alpha dt A) "
                   "x gamma_{3n+2} through the solves with M^H (gbt family), then dt and the <M, dX> sum")
            out["A"] = Bound(bA, src)
            out["B"] = Bound(bB, src)
            out["dt"] = Bound(np.asarray(bdt), src)
    # C, D pass through unchanged (output "s4"): the gradient is the cotangent itself, one rounding at most
    for k, o in (("C", "C_d"), ("D", "D_d")):
        if k in oracle_grads:
            out[k] = Bound(gamma(1, dtype) * np.abs(np.asarray(oracle_grads[k])),
                           f"{k} passes through to {o}: gamma_1 |d{o}|")
    return out


def discretize_grad_cases(conv) -> List[Case]:
    from oracles.verify.ops_ssm import discretize_cases

    if conv["output"] != "s4":
        return []
    return discretize_cases(conv)


def discretize_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.discretization.discretize_vjp`; ``C``, ``D`` pass through (output ``s4``)."""
    from refimpl.ssm.discretization import discretize_vjp

    if conv["output"] != "s4":
        raise ValueError("output: refimpl's discretize_vjp covers the 's4' convention (C, D unchanged), got "
                         f"{conv['output']!r}")
    g = discretize_vjp(inp["A"], inp["B"], inp["dt"], dA_bar=cot["A_bar"], dB_bar=cot["B_bar"], method=conv["method"],
                       diagonal=bool(conv["diagonal"]), alpha=conv["alpha"] if conv["method"] == "gbt" else None)
    for k, o in (("C", "C_d"), ("D", "D_d")):
        if inp.get(k) is not None:
            w = cot.get(o)
            g[k] = np.zeros(np.shape(inp[k]), dtype=np.result_type(inp[k])) if w is None else (
                np.asarray(w) if np.iscomplexobj(inp[k]) else np.asarray(w).real)
    return g


register_grad(GradSpec(
    op="ssm.discretize", wrt=DISC_WRT, forward=discretize_forward, bounds=discretize_grad_bounds,
    cases=discretize_grad_cases, reference_vjp=discretize_reference_vjp, module=__name__,
    notes="oracle: differences of the Van Loan block exponential (zoh, mamba) and the closed-form solves (gbt family) "
          "in float64 (oracles.ssm_grad_forward.discretize_forward); the 'shifted' output convention has no cases",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.s4d_kernel
# ----------------------------------------------------------------------------------------------------------

def s4d_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    lam, B, C = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "B", "C"))
    d, n = lam.shape
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), (d,))[:, None]
    L = int(np.asarray(inp["L"]))
    if cotangents is None:
        depth = 2 * L + n + 50
        return {k: componentwise_bound(magnitudes[k], depth, dtype, oracle_dtype=None, complex_ops=True,
                                       what="|J|^T|w| (no cotangents given)") for k in S4D_WRT if k in magnitudes}
    w = np.abs(np.asarray(cotangents["K"])) * (2.0 if conv["output"] == "2re" else 1.0)
    z = dt * lam
    if conv["method"] == "zoh":
        Ab = np.exp(z)
        phi = np.where(np.abs(z) > 1e-5, np.expm1(z) / np.where(np.abs(z) > 1e-5, z, 1), 1.0)
        Bb = dt * phi * B
    else:
        den = 1.0 - 0.5 * z
        Ab = (1.0 + 0.5 * z) / den
        Bb = dt * B / den
    aAb = np.abs(Ab)
    k = np.arange(L)
    pw = aAb[..., None] ** k  # |A_bar|^k (d n l)
    dv = np.einsum("dnk,dk->dn", pw, w)
    kpw = np.where(k > 0, k * aAb[..., None] ** np.maximum(k - 1, 0), 0.0)
    dA = np.abs(C * Bb) * np.einsum("dnk,dk->dn", kpw, w)
    dC = np.abs(Bb) * dv
    dBb = np.abs(C) * dv
    Mg = _diag_magnitudes(lam, B[..., None], dt, dA, dBb[..., None], conv["method"], 0.5)
    depth = 2 * L + n + 50
    # the recomputed A_bar's relative error (u |dt lambda| + gamma_4) raised to the k-th power: L times it
    extra = L * (unit_roundoff(dtype) * np.abs(z) + gamma(4, dtype))
    out = {}
    for key, M in (("Lambda", Mg["A"]), ("B", Mg["B"][..., 0]), ("C", dC)):
        b = componentwise_bound(M, depth, dtype, oracle_dtype=None, complex_ops=True,
                                what=f"the Vandermonde adjoint on |inputs|, depth {depth}")
        out[key] = Bound(np.asarray(b.values) + extra * M, b.source + " + L (u|dt lambda| + gamma_4) x M")
    Mdt = Mg["dt"] if np.ndim(inp["dt"]) else np.sum(Mg["dt"])
    bdt = componentwise_bound(Mdt, depth + d * n, dtype, oracle_dtype=None, complex_ops=True,
                              what="the Vandermonde adjoint on |inputs|, summed over the states")
    out["dt"] = Bound(np.asarray(bdt.values) + float(np.max(extra, initial=0)) * np.asarray(Mdt),
                      bdt.source + " + L (u|dt lambda| + gamma_4) x M")
    return out


def s4d_grad_cases(conv) -> List[Case]:
    from oracles.verify import ops_s4d

    out = []
    for cid, kind, L, kw in (("edge-L0", "edge", 0, {}), ("edge-L1", "edge", 1, {}), ("golden-L7", "golden", 7, {}),
                             ("golden-L16-two-channels", "golden", 16, {"h": 2})):
        inp = ops_s4d.sample(np.random.default_rng([4043, L]), conv, L=L, h=kw.get("h", 1), n=3)
        out.append(Case(ops_s4d.OP, cid, kind, inp, dict(conv), seed=4043, note=f"L = {L}"))
    inp = ops_s4d.sample(np.random.default_rng(4044), conv, L=6, h=1, n=2)
    inp["Lambda"] = inp["Lambda"] * 1e-6
    out.append(Case(ops_s4d.OP, "edge-Lambda-small", "edge", inp, dict(conv),
                    note="dt Lambda ~ 1e-8: phi1' by its series"))
    inp = ops_s4d.sample(np.random.default_rng(4045), conv, L=5, h=2, n=2)
    inp["dt"] = np.asarray(0.05)
    out.append(Case(ops_s4d.OP, "edge-scalar-dt", "edge", inp, dict(conv), note="one dt shared by the channels"))
    return out


def s4d_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    from refimpl.ssm.s4d import s4d_kernel_vjp

    return s4d_kernel_vjp(inp["Lambda"], inp["B"], inp["C"], inp["dt"], int(np.asarray(inp["L"])), dK=cot["K"],
                          method=conv["method"], output=conv["output"])


register_grad(GradSpec(
    op="ssm.s4d_kernel", wrt=S4D_WRT, forward=s4d_forward, bounds=s4d_grad_bounds, cases=s4d_grad_cases,
    reference_vjp=s4d_reference_vjp, outputs=("K",), module=__name__,
    notes="oracle: differences of K_k = sum_n C_n B_bar_n exp(k dt lambda_n) in float64 (B_bar by the 2 x 2 Van Loan "
          "block; oracles.ssm_grad_forward.s4d_forward)",
))


# ----------------------------------------------------------------------------------------------------------
# ssm.lru
# ----------------------------------------------------------------------------------------------------------

LRU_WRT = ("nu_log", "theta_log", "gamma_log", "B", "C", "D", "u")


def _lru_as_lti(inp, conv):
    """The LRU as one diagonal LTI channel: ``A_bar = lambda (1 n)``, ``B_bar = gamma B (1 n h)``, ``C (1 h n)``
    (x2 under ``2re``), ``D = diag(D) (1 h h)``, ``x = u (b l 1 h)``."""
    nu, th, gl = (np.asarray(inp[k], dtype=np.float64) for k in ("nu_log", "theta_log", "gamma_log"))
    lam = np.exp(-np.exp(nu) + 1j * np.exp(th))
    f = 2.0 if conv["real_output"] == "2re" else 1.0
    u = np.asarray(inp["u"], dtype=np.float64)
    return {"A_bar": lam[None], "B_bar": (np.exp(gl)[:, None] * np.asarray(inp["B"]))[None],
            "C": f * np.asarray(inp["C"])[None], "D": np.diag(np.asarray(inp["D"], dtype=np.float64))[None],
            "x": u[:, :, None, :], "h0": None}, lam, np.exp(gl), nu, th


def lru_grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    r"""The LTI bound of the equivalent diagonal channel, carried through the parameterization: ``dlambda``'s
    magnitude ``M_A`` gives ``nu_log``'s ``exp(nu)|lambda| M_A`` and ``theta_log``'s ``exp(theta)|lambda| M_A``;
    ``gamma_log``'s is ``sum |B| M_{B_bar}``; depth ``lti_depth + 16`` (the exponentials of the parameterization,
    ``(1 + e^nu + e^theta)`` ulps relative in ``lambda`` per step, L times over the powers)."""
    lt, lam, g, nu, th = _lru_as_lti(inp, conv)
    b, l, h = np.shape(inp["u"])
    cl = dict(diagonal=True, real_output="complex", use_h0=True)
    if cotangents is None:
        depth = lti_depth(lt, cl) + 16 + int(l * float(np.max(1 + np.exp(nu) + np.exp(th), initial=0)))
        return {k: componentwise_bound(magnitudes[k], depth, dtype, oracle_dtype=None, complex_ops=True,
                                       what="|J|^T|w| (no cotangents given)") for k in LRU_WRT if k in magnitudes}
    w = {"y": np.asarray(cotangents["y"])[:, :, None, :]}
    M = lti_adjoint_magnitude(lt, cl, w)
    depth = lti_depth(lt, cl) + 16 + int(l * float(np.max(1 + np.exp(nu) + np.exp(th), initial=0)))
    mags = {"nu_log": np.exp(nu) * np.abs(lam) * M["A_bar"][0], "theta_log": np.exp(th) * np.abs(lam) * M["A_bar"][0],
            "gamma_log": np.sum(np.abs(np.asarray(inp["B"])) * g[:, None] * M["B_bar"][0], axis=1),
            "B": g[:, None] * M["B_bar"][0], "C": M["C"][0],
            "D": np.diagonal(M["D"][0]).copy(), "u": M["x"][:, :, 0, :]}
    return {k: componentwise_bound(mags[k], depth, dtype, oracle_dtype=None, complex_ops=True,
                                   what=f"the LRU's adjoint on |inputs| (a diagonal LTI channel), depth {depth}")
            for k in LRU_WRT}


def lru_grad_cases(conv) -> List[Case]:
    from oracles.verify import ops_lru

    out = []
    for cid, kind, kw in (("edge-L0", "edge", dict(L=0, b=1, h=2, n=2)), ("edge-L1", "edge", dict(L=1, b=1, h=2, n=2)),
                          ("golden-L7", "golden", dict(L=7, b=2, h=2, n=3)),
                          ("edge-near-unit", "edge", dict(L=17, b=1, h=1, n=2, r_min=0.99))):
        inp = ops_lru.sample(np.random.default_rng([4046, kw["L"]]), conv, **kw)
        out.append(Case(ops_lru.OP, cid, kind, inp, dict(conv), seed=4046, note=f"{kw}"))
    return out


def lru_reference_vjp(inp, conv, cot) -> Dict[str, np.ndarray]:
    from refimpl.ssm.lru import lru_ssm_vjp

    two = conv["real_output"] == "2re"
    C = np.asarray(inp["C"]) * (2 if two else 1)
    g = lru_ssm_vjp(inp["nu_log"], inp["theta_log"], inp["gamma_log"], inp["B"], C, inp["D"], inp["u"], dy=cot["y"])
    if two:
        g["C"] = g["C"] * 2
    return g


register_grad(GradSpec(
    op="ssm.lru", wrt=LRU_WRT, forward=lru_forward,
    bounds=lru_grad_bounds, cases=lru_grad_cases, reference_vjp=lru_reference_vjp, outputs=("y",), module=__name__,
    notes="oracle: differences of a plain float64 loop (oracles.ssm_grad_forward.lru_forward); bound: the diagonal "
          "LTI channel's adjoint on |inputs| through the exp parameterization",
))
