r"""Op spec ``ssm.s4d_kernel``: the diagonal (S4D) SSM convolution kernel.

Canonical (the arrays of :func:`refimpl.ssm.s4d.s4d_kernel`, whose ``(d n)`` is this op's ``(h n)``)::

    fn(Lambda, B, C, dt, L) -> K        Lambda, B, C (h n) complex, dt (h,), L an int; K (h l)

``K_k = sum_n C_n B_bar_n A_bar_n^k`` for ``k < L``.  Conventions: ``method`` (``zoh``:
``A_bar = exp(dt Lambda)``, ``B_bar = dt phi1(dt Lambda) B``; ``bilinear``) and the real
``output`` (``2re``: one eigenvalue per conjugate pair stored, ``K = 2 Re``; ``re``; ``complex``), and
``zoh_B`` -- how the candidate evaluates ZOH's ``B_bar`` (the bound only): ``expm1`` (to working accuracy) or
``difference`` (``(e^{dt l} - 1)/l`` as written, the official S4D code's ``C * (exp(dtA) - 1.) / A``): the
difference's cancellation, ``4u |A_bar| (2 + |dt l|) / |A_bar - 1|`` relative per term, is then allowed.

Oracle: :func:`oracles.structured.diag_kernel_mpmath` (40 digits), then the named real part.
Bound: the componentwise analysis of :func:`oracles.structured.diag_kernel_bound` (there written
for float64 candidates) evaluated in the candidate's dtype: per term ``A_bar`` carries a relative
error ``e_A = gamma_4 + u |dt lambda|`` (zoh; ``gamma_6`` bilinear), ``B_bar`` ``gamma_8``, the
power ``A_bar^k`` ``k (gamma^c_1 + e_A)``, the sum over ``n`` ``gamma^c_{n+1}``:
``bound_k = sum_n |C B_bar| |A_bar|^k (gamma^c_{n+9} + k (gamma^c_1 + e_A))`` (x2 for ``2re``); the
mpmath oracle adds only its final rounding.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.structured import bilinear_diag, diag_kernel_mpmath, zoh_diag_vanloan
from oracles.tolerance import Bound, gamma, unit_roundoff
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, draw_sizes, op_domain, op_functions, register_op,
                                     seeded_strategy)

OP = "ssm.s4d_kernel"


def _real(K, output):
    if output == "complex":
        return K
    return K.real.copy() if output == "re" else 2.0 * K.real


def oracle(inp, conv):
    lam, B, C = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "B", "C"))
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])
    L = int(inp["L"])
    K = np.stack([diag_kernel_mpmath(lam[c], B[c], C[c], dt[c], L, conv["method"]) for c in range(lam.shape[0])]) \
        if lam.shape[0] else np.zeros((0, L), dtype=np.complex128)
    return {"K": _real(K, conv["output"])}


def bounds(inp, out, conv, dtype):
    lam, B, C = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "B", "C"))
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])
    L = int(inp["L"])
    h, n = lam.shape
    cd = np.result_type(dtype, np.complex64)
    vals = np.zeros((h, L))
    k = np.arange(L)[:, None]
    for c in range(h):
        if conv["method"] == "zoh":
            Ab, Bb = zoh_diag_vanloan(lam[c], B[c], dt[c])
            eA = gamma(4, dtype) + unit_roundoff(dtype) * np.abs(dt[c] * lam[c])
        else:
            Ab, Bb = bilinear_diag(lam[c], B[c], dt[c])
            eA = np.full(n, gamma(6, dtype))
        mag = np.abs(C[c] * Bb)[None, :] * np.abs(Ab)[None, :] ** k
        per = gamma(n + 9, dtype, complex_ops=True) + k * (gamma(1, dtype, complex_ops=True) + eA[None, :])
        if conv["method"] == "zoh" and conv.get("zoh_B", "expm1") == "difference":
            # B_bar = (A_bar - 1)/lambda B as written: A_bar's error (u (2 + |dt l|) |A_bar|, complex ops) over
            # |A_bar - 1| ~ |dt l| -- the cancellation of the difference
            with np.errstate(divide="ignore"):
                canc = 4 * unit_roundoff(dtype) * np.abs(Ab) * (2 + np.abs(dt[c] * lam[c])) / np.abs(Ab - 1)
            per = per + np.where(np.isfinite(canc), canc, 1.0)[None, :]
        vals[c] = np.sum(mag * per, axis=1) * (2.0 if conv["output"] == "2re" else 1.0)
    vals = vals + gamma(1, np.float64) * np.abs(np.asarray(out["K"])) + 1e-300
    src = (f"diagonal Vandermonde in {np.dtype(cd).name}: sum_n |C B_bar||A_bar|^k (g^c_(n+9) + k(g^c_1 + e_A))"
           f"{' x 2 (2 Re)' if conv['output'] == '2re' else ''} (oracles.structured.diag_kernel_bound's analysis) "
           "+ the mpmath oracle's final rounding")
    return {"K": Bound(vals, src)}


def reference(inp, conv):
    from refimpl.ssm.s4d import s4d_kernel

    # the op's canonical layout is refimpl's: Lambda, B, C (h n) = (d n), K (h l) = (d l)
    return {"K": s4d_kernel(inp["Lambda"], inp["B"], inp["C"], inp["dt"], int(inp["L"]), method=conv["method"],
                            output=conv["output"])}


def sample(rng, conv, *, h=None, n=None, L=None):
    h, n = draw_sizes(rng, h=(h, 1, 3), n=(n, 1, 5))
    L = int(rng.choice([0, 1, 2, 5, 16, 33])) if L is None else L
    lam = -rng.uniform(0.1, 1.0, (h, n)) + 1j * np.pi * rng.uniform(0, 4, (h, n))
    return {"Lambda": lam, "B": rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n)),
            "C": rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n)),
            "dt": np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), h)), "L": np.asarray(L)}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    out = []
    # S4D-Lin (Gu et al. 2022b): lambda_n = -1/2 + i pi n, B = 1, written out here
    N2 = 4
    lam = np.array([[-0.5 + 1j * np.pi * j for j in range(N2)]] * 2)
    C = np.random.default_rng(61).standard_normal((2, N2)) + 1j * np.random.default_rng(62).standard_normal((2, N2))
    out.append(Case(OP, "golden-s4d-lin", "golden", {"Lambda": lam, "B": np.ones((2, N2), complex), "C": C,
                                                     "dt": np.array([0.01, 0.1]), "L": np.asarray(32)},
                    dict(conv), note="S4D-Lin, N = 8 (4 conjugate pairs), dt 0.01 and 0.1, L = 32"))
    for cid, L, note in (("edge-L0", 0, "L = 0: an empty kernel"), ("edge-L1", 1, "L = 1: K_0 = C B_bar"),
                         ("edge-long", 256, "L = 256: powers A_bar^k by repeated multiplication")):
        inp = sample(np.random.default_rng([63, L]), conv, L=L, h=1, n=2)
        out.append(Case(OP, cid, "edge", inp, dict(conv), note=note))
    inp = sample(np.random.default_rng(64), conv, L=8, h=1, n=3)
    inp["Lambda"] = inp["Lambda"] * 1e-9
    out.append(Case(OP, "edge-Lambda-to-0", "edge", inp, dict(conv),
                    note="dt Lambda -> 0: B_bar -> dt B (the expm1 form; a (e^z - 1)/z formula cancels)"))
    return out


register_op(OpSpec(
    name=OP,
    summary="the diagonal (S4D) convolution kernel K_k = sum_n C_n B_bar_n A_bar_n^k with the real output named",
    inputs=(Arg("Lambda", "h n", "complex eigenvalues"), Arg("B", "h n"), Arg("C", "h n"),
            Arg("dt", "h", "step per channel"), Arg("L", "", "kernel length", kind="int")),
    outputs=(Arg("K", "h l"),),
    conventions=(
        Convention("method", "zoh", "discretization: zoh or bilinear", ("zoh", "bilinear")),
        Convention("output", "2re", "real output: 2re (one eigenvalue per conjugate pair), re, complex",
                   ("2re", "re", "complex")),
        Convention("zoh_B", "expm1", "how the candidate evaluates ZOH's B_bar (the bound only): expm1 (to working "
                   "accuracy) or difference ((e^{dt l} - 1)/l as written, the official S4D code's: its cancellation "
                   "for small dt |l| is allowed)", ("expm1", "difference")),
    ),
    **op_functions(globals()),
    lowp=False,  # complex data: float16/bfloat16 have no complex form
    complex_inputs=("Lambda", "B", "C"),
    domain=op_domain(length=("L", "L"), state_dim=("n", "n")),
    module=__name__,
    notes="oracle: oracles.structured.diag_kernel_mpmath; bound: diag_kernel_bound's analysis in the candidate dtype",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.s4d.s4d_kernel(Lambda, B, C, dt, L, method=, output=, backend=)",
    args=(In("Lambda"), In("B"), In("C"), In("dt"), In("L", scalar=True)),
    kwargs={"method": Conv(lambda c: c["method"]), "output": Conv(lambda c: c["output"])},
    outputs=(Out("K", None),),
))


# ----------------------------------------------------------------------------------------------------------
# ssm.dss_kernel
# ----------------------------------------------------------------------------------------------------------
r"""Op spec ``ssm.dss_kernel``: the diagonal state space (DSS, Gupta et al. 2022) kernel.

Canonical (the arrays of :func:`refimpl.ssm.s4d.dss_kernel`; DSS's own code spells them ``Lambda``, ``W`` and
``log_dt``, one step per channel)::

    fn(Lambda, W, dt, L) -> K        Lambda, W (h n) complex, dt (h,), L an int; K (h l) real

Convention ``variant``: ``exp`` -- ``K_k = Re sum_n w_n (e^{dt l_n} - 1)/l_n e^{k dt l_n}`` (the ZOH kernel
with ``B = 1``, ``C = W``); ``softmax`` -- ``K_k = Re sum_n w_n/l_n softmax_k(k dt l_n)``, the normalizer
``sum_{r<L} e^{r dt l_n}`` over the kernel's own length.  Oracles: ``exp`` the mpmath ZOH kernel
(:func:`oracles.structured.diag_kernel_mpmath`), ``softmax`` :func:`oracles.structured.dss_softmax_mpmath`
(40 digits).  Bounds: ``exp`` the S4D kernel's componentwise analysis above (``B = 1``, real part);
``softmax`` :func:`oracles.structured.dss_softmax_bound` (float64; first order in ``u``, so scaled by
``u(dtype)/u(float64)`` for float32).
"""

from oracles.structured import dss_softmax_bound, dss_softmax_mpmath  # noqa: E402

OP_DSS = "ssm.dss_kernel"


def dss_oracle(inp, conv):
    lam, W = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "W"))
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])
    L = int(inp["L"])
    K = np.zeros((lam.shape[0], L))
    for c in range(lam.shape[0]):
        if conv["variant"] == "exp":
            K[c] = diag_kernel_mpmath(lam[c], np.ones_like(lam[c]), W[c], dt[c], L, "zoh").real
        else:
            K[c] = dss_softmax_mpmath(lam[c], W[c], dt[c], L)
    return {"K": K}


def dss_bounds(inp, out, conv, dtype):
    if conv["variant"] == "exp":
        as_s4d = {"Lambda": inp["Lambda"], "B": np.ones_like(np.asarray(inp["Lambda"])), "C": inp["W"],
                  "dt": inp["dt"], "L": inp["L"]}
        return bounds(as_s4d, out, {"method": "zoh", "output": "re", "zoh_B": "expm1"}, dtype)
    lam, W = (np.asarray(inp[k], dtype=np.complex128) for k in ("Lambda", "W"))
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])
    L = int(inp["L"])
    scale = unit_roundoff(dtype) / unit_roundoff(np.float64)
    vals = np.stack([np.asarray(dss_softmax_bound(lam[c], W[c], dt[c], L).values) for c in range(lam.shape[0])]) \
        if lam.shape[0] and L else np.zeros((lam.shape[0], L))
    vals = scale * vals + gamma(1, np.float64) * np.abs(np.asarray(out["K"])) + 1e-300
    return {"K": Bound(vals, f"DSS softmax (oracles.structured.dss_softmax_bound) x {scale:.3g} (u ratio, first order)"
                             " + the mpmath oracle's final rounding")}


def dss_reference(inp, conv):
    from refimpl.ssm.s4d import dss_kernel

    return {"K": dss_kernel(inp["Lambda"], inp["W"], inp["dt"], int(inp["L"]), variant=conv["variant"])}


def dss_sample(rng, conv, *, h=None, n=None, L=None):
    h, n = draw_sizes(rng, h=(h, 1, 3), n=(n, 1, 5))
    L = int(rng.choice([0, 1, 2, 5, 16, 33])) if L is None else L
    lam = -rng.uniform(0.1, 1.0, (h, n)) + 1j * rng.uniform(-5, 5, (h, n))
    return {"Lambda": lam, "W": rng.standard_normal((h, n)) + 1j * rng.standard_normal((h, n)),
            "dt": np.exp(rng.uniform(np.log(1e-2), np.log(0.5), h)), "L": np.asarray(L)}


def dss_strategy(conv):
    return seeded_strategy(dss_sample, conv)


def dss_cases(conv) -> List[Case]:
    out = []
    lam = np.array([[-0.5 + 1j * np.pi * j for j in range(4)]])
    W = np.random.default_rng(81).standard_normal((1, 4)) + 1j * np.random.default_rng(82).standard_normal((1, 4))
    out.append(Case(OP_DSS, "golden-lin", "golden", {"Lambda": lam, "W": W, "dt": np.array([0.1]), "L": np.asarray(32)},
                    dict(conv), note="lambda_n = -1/2 + i pi n (n < 4), dt 0.1, L = 32"))
    for cid, L, note in (("edge-L0", 0, "L = 0: an empty kernel"), ("edge-L1", 1, "L = 1 (softmax: K_0 = Re w/l)"),
                         ("edge-L-odd", 17, "L = 17"), ("edge-long", 200, "L = 200: the softmax normalizer's "
                                                                           "largest terms")):
        out.append(Case(OP_DSS, cid, "edge", dss_sample(np.random.default_rng([83, L]), conv, L=L, h=1, n=3),
                        dict(conv), note=note))
    return out


register_op(OpSpec(
    name=OP_DSS,
    summary="the DSS kernel (exp or softmax variant) of a diagonal system Lambda, W",
    inputs=(Arg("Lambda", "h n", "complex eigenvalues"), Arg("W", "h n", "complex output weights"),
            Arg("dt", "h", "step per channel"), Arg("L", "", "kernel length", kind="int")),
    outputs=(Arg("K", "h l"),),
    conventions=(Convention("variant", "softmax", "exp: Re sum w (e^{dt l}-1)/l e^{k dt l}; softmax: Re sum w/l "
                            "softmax over k < L of k dt l", ("softmax", "exp")),),
    **op_functions(globals(), "dss_"),
    lowp=False,
    complex_inputs=("Lambda", "W"),
    domain=op_domain(length=("L", "L"), state_dim=("n", "n")),
    module=__name__,
    notes="oracles: mpmath (oracles.structured.diag_kernel_mpmath, dss_softmax_mpmath)",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_DSS,
    doc="refimpl.ssm.s4d.dss_kernel(Lambda, W, dt, L, variant=, backend=)",
    args=(In("Lambda"), In("W"), In("dt"), In("L", scalar=True)),
    kwargs={"variant": Conv(lambda c: c["variant"])},
    outputs=(Out("K", None),),
))
