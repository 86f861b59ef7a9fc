r"""Op spec ``ssm.s4_kernel``: the S4 convolution kernel of a diagonal-plus-low-rank (DPLR) state matrix.

Canonical (the arrays of :func:`refimpl.ssm.s4.s4_kernel`; ``h`` channels, ``n`` states, rank ``r``)::

    fn(Lambda, P, Q, B, C, dt, L) -> K        Lambda, B, C (h n); P, Q (h n r); dt (h,); L an int; K (h l)

``A = diag(Lambda) - P Q^*`` per channel, ``K_k = C A_bar^k B_bar`` for ``k < L``.  The official S4 code
(state-spaces/s4, ``SSMKernelDPLR``) keeps the rank axis first, ``P (r h n)``: the ``rank_first`` adapter
passes ``P``, ``Q`` that way; everything else is the same layout.  Conventions: ``method`` (``bilinear``:
``A_bar = (I - dt/2 A)^{-1}(I + dt/2 A)``, ``B_bar = (I - dt/2 A)^{-1} dt B``, any rank; ``zoh`` for a
diagonal system, ``P = Q = 0``: every case then has a zero low-rank part) and the real ``output``
(``2re``: one eigenvalue of each conjugate pair stored, S4's convention; ``re``; ``complex``).

Oracle: the dense DPLR matrix discretized and powered in mpmath at 40 digits
(:func:`oracles.structured.dplr_kernel_mpmath`; ZOH: :func:`oracles.structured.diag_kernel_mpmath`), then
the named real part -- no Cauchy kernel, no Woodbury identity, no FFT.

Bound: the derived float64 analysis of both algorithms a candidate may use, added: the generating-function
route (:func:`oracles.structured.s4_gf_bound`: the solve, ``A_bar^L``, the Cauchy sums, Woodbury and the
inverse FFT) plus direct powers (its ``oracle="float64"`` share; ZOH: :func:`oracles.structured.zoh_gf_bound`,
which carries both).  Every term is first order in the unit roundoff, so for a float32 candidate the bound
is scaled by ``u(float32)/u(float64)``; ``2re`` doubles it.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.structured import diag_kernel_mpmath, dplr_kernel_mpmath, s4_gf_bound, zoh_gf_bound
from oracles.tolerance import Bound, gamma, unit_roundoff
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "ssm.s4_kernel"
OUTPUTS = ("2re", "re", "complex")


def _real(K, output):
    if output == "complex":
        return K
    return K.real.copy() if output == "re" else 2.0 * K.real


def _arrays(inp):
    lam, P, Q, B, C = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "P", "Q", "B", "C"))
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])
    return lam, P, Q, B, C, dt, int(inp["L"])


def oracle(inp, conv):
    lam, P, Q, B, C, dt, L = _arrays(inp)
    h = lam.shape[0]
    K = np.zeros((h, L), dtype=np.complex128)
    for c in range(h):
        if conv["method"] == "zoh":
            if np.any(P[c] != 0) or np.any(Q[c] != 0):
                raise ValueError("method zoh: the ZOH kernel is defined here for a diagonal A (P = Q = 0)")
            K[c] = diag_kernel_mpmath(lam[c], B[c], C[c], dt[c], L, "zoh")
        else:
            K[c] = dplr_kernel_mpmath(lam[c], P[c], Q[c], B[c], C[c], dt[c], L)
    return {"K": _real(K, conv["output"])}


def bounds(inp, out, conv, dtype):
    lam, P, Q, B, C, dt, L = _arrays(inp)
    h = lam.shape[0]
    vals = np.zeros((h, L))
    src = ""
    for c in range(h):
        if conv["method"] == "zoh":
            b = zoh_gf_bound(lam[c], B[c], C[c], dt[c], L) if L else Bound(np.zeros(0), "empty")
        else:
            b = s4_gf_bound(lam[c], P[c], Q[c], B[c], C[c], dt[c], L, oracle="float64")
        vals[c] = np.asarray(b.values)
        src = b.source
    scale = unit_roundoff(dtype) / unit_roundoff(np.float64)
    factor = 2.0 if conv["output"] == "2re" else 1.0
    vals = factor * scale * vals + gamma(1, np.float64) * np.abs(np.asarray(out["K"])) + 1e-300
    return {"K": Bound(vals, f"{src} (both algorithms: generating function and direct powers), x {scale:.3g} "
                             f"(u({np.dtype(dtype).name})/u(float64), first order){' x 2 (2 Re)' if factor == 2 else ''}"
                             " + the mpmath oracle's final rounding")}


def reference(inp, conv):
    from refimpl.ssm.s4 import s4_kernel

    return {"K": s4_kernel(inp["Lambda"], inp["P"], inp["Q"], inp["B"], inp["C"], inp["dt"], int(inp["L"]),
                           method=conv["method"], output=conv["output"])}


def sample(rng, conv, *, h=None, n=None, r=None, L=None):
    h, n, r = draw_sizes(rng, h=(h, 1, 3), n=(n, 1, 5), r=(r, 1, 3))
    L = int(rng.choice([0, 1, 2, 5, 16, 17, 33])) if L is None else L
    lam = -rng.uniform(0.2, 1.0, (h, n)) + 1j * np.pi * rng.uniform(0, 4, (h, n))
    if conv["method"] == "zoh":
        P = np.zeros((h, n, r), complex)
        Q = np.zeros((h, n, r), complex)
    else:
        # a small low-rank part keeps A = diag(Lambda) - P Q^* stable (Re of every eigenvalue < 0)
        P = 0.3 * (rng.standard_normal((h, n, r)) + 1j * rng.standard_normal((h, n, r))) / np.sqrt(n * r)
        Q = 0.3 * (rng.standard_normal((h, n, r)) + 1j * rng.standard_normal((h, n, r))) / np.sqrt(n * r)
    return {"Lambda": lam, "P": P, "Q": Q,
            "B": rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n)),
            "C": rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n)),
            "dt": np.exp(rng.uniform(np.log(1e-3), np.log(2e-1), h)), "L": np.asarray(L)}


def strategy(conv):
    return seeded_strategy(sample, conv)


def legs_dplr(N: int):
    r"""HiPPO-LegS in S4's DPLR form (test input, built here from the formulas): ``A = S - P P^T`` with
    ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` (n > k), ``-(n+1)`` (n = k); ``P_n = sqrt(n + 1/2)``, ``B_n = sqrt(2n+1)``;
    ``S = A + P P^T = -I/2 + (skew-symmetric)`` is normal: ``S = V diag(Lambda) V^*``; returns the half of the
    spectrum with ``Im Lambda > 0`` (one per conjugate pair) and ``V^* P``, ``V^* B`` there."""
    q = np.sqrt(2 * np.arange(N) + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(N) + 1.0)
    P = np.sqrt(np.arange(N) + 0.5)
    S = A + np.outer(P, P)
    w, V = np.linalg.eigh(-1j * (S + 0.5 * np.eye(N)))  # S + I/2 is skew-symmetric: i w its eigenvalues
    lam = -0.5 + 1j * w
    keep = w > 0
    Vk = V[:, keep]
    return lam[keep], Vk.conj().T @ P, Vk.conj().T @ q


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 73, conv)
    out = add.cases
    if conv["method"] == "bilinear":
        lam, Pt, Bt = legs_dplr(8)
        n = lam.shape[0]
        C = (np.random.default_rng(71).standard_normal((1, n)) + 1j * np.random.default_rng(72).standard_normal((1, n)))
        out.append(Case(OP, "golden-legs", "golden", {
            "Lambda": lam[None], "P": Pt[None, :, None], "Q": Pt[None, :, None], "B": Bt[None], "C": C,
            "dt": np.array([0.05]), "L": np.asarray(32)}, dict(conv),
            note="HiPPO-LegS N = 8 in DPLR form (4 conjugate pairs, rank 1), dt 0.05, L = 32 (a Nyquist node)"))
    add.rows((("edge-L0", "edge", dict(L=0), "L = 0: an empty kernel"),
              ("edge-L1", "edge", dict(L=1), "L = 1: K_0 = C B_bar"),
              ("edge-L-odd", "edge", dict(L=17, h=2, n=3), "L = 17: odd (no Nyquist node)"),
              ("edge-rank2", "edge", dict(L=16, h=1, n=4, r=2), "rank 2, L = 16 (even: a Nyquist node)"),
              ("edge-long", "edge", dict(L=128, h=1, n=2), "L = 128")))
    return out


register_op(OpSpec(
    name=OP,
    summary="the S4 kernel K_k = C A_bar^k B_bar of a DPLR state matrix A = diag(Lambda) - P Q^* (real output named)",
    inputs=(Arg("Lambda", "h n", "the diagonal part (complex)"), Arg("P", "h n r", "low-rank factor"),
            Arg("Q", "h n r", "low-rank factor (A = diag(Lambda) - P Q^*)"), Arg("B", "h n"), Arg("C", "h n"),
            Arg("dt", "h", "step per channel"), Arg("L", "", "kernel length", kind="int")),
    outputs=(Arg("K", "h l"),),
    conventions=(
        Convention("method", "bilinear", "discretization: bilinear (S4's; any rank) or zoh (a diagonal A: every case "
                   "has P = Q = 0)", ("bilinear", "zoh")),
        Convention("output", "2re", "real output: 2re (one eigenvalue per conjugate pair, S4's), re, complex", OUTPUTS),
    ),
    **op_functions(globals()),
    lowp=False,  # complex data: float16/bfloat16 have no complex form
    complex_inputs=("Lambda", "P", "Q", "B", "C"),
    domain=op_domain(length=("L", "L"), state_dim=("n", "n"), rank=("r", "r")),
    module=__name__,
    notes="oracle: the dense DPLR system in mpmath (oracles.structured.dplr_kernel_mpmath); bound: "
          "oracles.structured.s4_gf_bound (generating function + direct powers)",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.s4.s4_kernel(Lambda, P, Q, B, C, dt, L, view=, backend=, output=, method=)",
    args=(In("Lambda"), In("P"), In("Q"), In("B"), In("C"), In("dt"), In("L", scalar=True)),
    kwargs={"method": Conv(lambda c: c["method"]), "output": Conv(lambda c: c["output"])},
    outputs=(Out("K", None),),
))

register_adapter(Adapter(
    name="rank_first",
    op=OP,
    doc="fn(Lambda, P, Q, B, C, dt, L) with the low-rank factors rank-first, P, Q (r h n), as the official S4 "
        "code stores them (SSMKernelDPLR); everything else as the canonical signature",
    args=(In("Lambda"), In("P", "h n r -> r h n"), In("Q", "h n r -> r h n"), In("B"), In("C"), In("dt"),
          In("L", scalar=True)),
    outputs=(Out("K", None),),
))
