r"""Gradient check (``refimpl verify --grad``) of ``ssm.selective_scan`` (Mamba's S6).

Ground truth: central differences with Richardson extrapolation (:mod:`oracles.gradients`) of the op's float64
oracle forward :func:`oracles.verify.ops_selective.oracle` (:func:`oracles.selective.s6_solve`: every state from
one banded linear solve, no loop over time, nothing of refimpl), with the forward's own derived float64 error
(:func:`oracles.selective.s6_bound`) as the differences' rounding input.

Bounds (the rounding of a backward computed in the candidate's dtype; the harness adds the differences' error):
componentwise ``gamma_depth(dtype) M`` with ``M`` the S6 adjoint equations run on absolute values and ``depth``
counted from the reverse scan (:func:`oracles.selective_grad_forward.s6_vjp_bounds`; a ``chunked`` candidate adds
its segment sums' depth).  Without cotangents, ``|J|^T |w|`` at the point stands in for ``M``.

Canonical names: ``u, delta, A, B, C, D, z, delta_bias, h0 -> out, h_last`` (channel-first, Mamba's
``selective_scan_fn`` layout); the complex gradient convention is ``dL/dRe + i dL/dIm`` (Mamba's for its complex
``A``).  ``real_output="re"`` folds ``C/2`` into the problem (as the op does): ``dL/dC = (dL/dC') / 2``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from oracles.selective_grad_forward import s6_vjp_bounds, s6_vjp_depth
from oracles.tolerance import Bound, componentwise_bound
from oracles.verify import ops_selective as ops
from oracles.verify.registry import Case, GradSpec, register_grad

OP = ops.OP
WRT = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")


def _bld(a):
    return None if a is None else np.transpose(np.asarray(a), (0, 2, 1))  # (b d l) <-> (b l d)


def _to_canonical(g: Dict[str, Any], conv) -> Dict[str, Any]:
    """Sequence-first gradients (refimpl's / the bound's names) -> the op's canonical names and layouts."""
    out = {}
    for k, v in g.items():
        v = None if v is None else np.asarray(v)
        if k in ("u", "delta", "z"):
            out[k] = _bld(v)
        elif k in ("B", "C"):
            out[k] = ops._bc_channel_first(v)
        elif k == "initial_state":
            out["h0"] = v
        else:
            out[k] = v
    return out


def _c_scale(inp, conv) -> float:
    """``real_output="re"`` with complex ``A``: the problem holds ``C' = C / 2``, so ``dC = dC' / 2``."""
    return 0.5 if (conv["real_output"] == "re" and np.iscomplexobj(inp["A"])) else 1.0


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    args, kw = ops._seq_first(inp, conv)
    view = "chunked" if conv["algorithm"] == "chunked" else "recurrent"
    chunk = int(conv["chunk"])
    if cotangents is None:
        depth = s6_vjp_depth(*args, delta_bias=kw["delta_bias"], delta_softplus=kw["delta_softplus"],
                             discretization=kw["discretization"], view=view, chunk=chunk)
        cplx = any(v is not None and np.iscomplexobj(v) for v in (inp["A"], inp["B"], inp["C"], inp.get("h0")))
        return {k: componentwise_bound(np.asarray(magnitudes[k]), depth, dtype, oracle_dtype=None, complex_ops=cplx,
                                       what=f"|J|^T|w| (no cotangents given) x gamma_{depth:.0f}")
                for k in WRT if k in magnitudes}
    b = s6_vjp_bounds(*args, dy=_bld(cotangents["out"]), d_final_state=cotangents.get("h_last"),
                      initial_state=kw["initial_state"], delta_bias=kw["delta_bias"],
                      delta_softplus=kw["delta_softplus"], discretization=kw["discretization"], dtype=dtype,
                      view=view, chunk=chunk)
    out = {}
    for k, v in _to_canonical({k: v.values for k, v in b.items()}, conv).items():
        if k == "C":
            v = v * _c_scale(inp, conv)
        src = b["initial_state" if k == "h0" else k].source
        if k in oracle_grads:
            out[k] = Bound(np.asarray(v), src)
    return out


def forward_error(inp, conv) -> Dict[str, np.ndarray]:
    """The float64 oracle's own derived error bound (:func:`oracles.selective.s6_bound` of the banded solve)."""
    b = ops.bounds(inp, None, conv, np.float64)
    return {k: np.asarray(v.values) for k, v in b.items()}


def grad_cases(conv) -> List[Case]:
    """L = 0, 1, odd, chunk -+ 1 (a small chunk of 8 where the candidate is chunked), real and complex A, each
    B/C layout the candidate accepts, h0 and every optional input present, and a case with them all absent."""
    T = int(conv["chunk"]) if conv["algorithm"] == "chunked" else 8
    out: List[Case] = []

    def add(cid, kind, note, seed, drop=(), **kw):
        rng = np.random.default_rng([4051, seed])
        inp = ops.sample(rng, conv, **kw)
        for k in drop:
            inp[k] = None
        out.append(Case(OP, cid, kind, inp, dict(conv), seed=seed, note=note))

    add("golden-small", "golden", "b=1, d=2, n=2, L=5, real A", 1, L=5, b=1, d=2, n=2, cplx=False)
    add("edge-L0", "edge", "L = 0: d h0 = d h_last", 2, L=0, b=1, d=2, n=2)
    add("edge-L1", "edge", "L = 1", 3, L=1, b=1, d=2, n=2)
    add("edge-groups", "edge", "d = 4 in g = 2 groups of grouped B and C, L = 3", 4, L=3, b=1, d=4, n=2, g=2,
        cplx=False, layouts=("grouped", "grouped"))
    if conv["complex_A"]:
        add("edge-complex", "edge", "complex A (2 Re), L = 5 (odd), d = 2 in 2 groups", 5, L=5, b=1, d=2, n=2,
            g=2, cplx=True, layouts=("grouped", "variable"))
    if conv["delta_softplus"]:
        add("edge-softplus-threshold", "edge", "pre-activations past 20 (softplus' derivative 1 there)", 6, L=4,
            b=1, d=2, n=1, big_delta=True, cplx=False)
    for i, (Lk, cid) in enumerate(((T - 1, "edge-chunk-1"), (T + 1, "edge-chunk+1"))):
        add(cid, "edge", f"L = {Lk} (chunk {T} {'-' if i == 0 else '+'} 1)", 7 + i, L=Lk, b=1, d=1, n=2)
    opt = tuple(k for k, f in (("D", "use_D"), ("z", "use_z"), ("delta_bias", "use_delta_bias"), ("h0", "use_h0"))
                if conv[f])
    if opt:
        add("edge-no-options", "edge", f"{', '.join(opt)} absent", 9, drop=opt, L=4, b=1, d=2, n=2, cplx=False)
    return out


def storing_vjp(inp, conv, cot, lowp) -> Dict[str, np.ndarray]:
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`): the recurrent view step by step,
    the state ``h_t`` stored in ``lowp`` after every step of the forward scan and its adjoint ``dh_t`` after every
    step of the reverse scan (a loop in the dtype rounds its state every step); each step is refimpl's
    :func:`selective_scan` / :func:`selective_scan_vjp` (recurrent) on a one-step sequence (``initial_state = h_t``,
    ``d_final_state = dh_{t+1}``), in float32 arithmetic.  The time-shared ``A``, ``D``, ``delta_bias`` and a fixed
    ``B``/``C`` accumulate their per-step gradients in a buffer stored in ``lowp``."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan, sum_steps
    from refimpl.ssm.selective import selective_scan, selective_scan_vjp

    rnd = storer(lowp)
    f = lambda a: None if a is None else (np.asarray(a, np.complex64) if np.iscomplexobj(a)  # noqa: E731
                                          else np.asarray(a, np.float32))
    (u, delta, A, B, C, D, z), kw = ops._seq_first(inp, conv)
    u, delta, A, B, C, D, z = (f(a) for a in (u, delta, A, B, C, D, z))
    h0 = f(kw.pop("initial_state"))
    kw["delta_bias"] = f(kw["delta_bias"])
    b, l, d = u.shape
    n = A.shape[1]
    state0 = np.zeros((b, d, n), np.complex64 if np.iscomplexobj(A) else np.float32) if h0 is None else h0
    dy = rnd(f(_bld(cot["out"])))
    dl = f(cot.get("h_last"))
    timed = {"B": np.ndim(B) >= 3, "C": np.ndim(C) >= 3}
    sl = lambda a, t: None if a is None else a[:, t:t + 1]  # noqa: E731
    slb = lambda nm, a, t: sl(a, t) if timed[nm] else a  # noqa: E731

    def fwd(t, h):
        return selective_scan(sl(u, t), sl(delta, t), A, slb("B", B, t), slb("C", C, t), D, sl(z, t),
                              initial_state=h, return_final_state=True, **kw)[1]

    def vjp(t, h, dh):
        g = selective_scan_vjp(sl(u, t), sl(delta, t), A, slb("B", B, t), slb("C", C, t), D, sl(z, t),
                               dy=sl(dy, t), d_final_state=dh, initial_state=h, **kw)
        return g, g["initial_state"]

    steps, dh0 = storing_reverse_scan(l, state0, dl, fwd, vjp, lowp)
    g: Dict[str, Any] = {"u": concat_steps(steps, "u", 1, u.shape), "delta": concat_steps(steps, "delta", 1, delta.shape),
                         "A": sum_steps(steps, "A", A.shape, lowp)}
    for nm, X in (("B", B), ("C", C)):
        g[nm] = concat_steps(steps, nm, 1, X.shape) if timed[nm] else sum_steps(steps, nm, X.shape, lowp)
    if z is not None:
        g["z"] = concat_steps(steps, "z", 1, z.shape)
    if D is not None:
        g["D"] = sum_steps(steps, "D", D.shape, lowp)
    if kw["delta_bias"] is not None:
        g["delta_bias"] = sum_steps(steps, "delta_bias", kw["delta_bias"].shape, lowp)
    if h0 is not None:
        g["initial_state"] = dh0
    g = _to_canonical(g, conv)
    if "C" in g:
        g["C"] = g["C"] * _c_scale(inp, conv)
    return g


def reference_vjp(inp, conv, cot, lowp: Optional[str] = None) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.selective.selective_scan_vjp` in the op's layout (the view by ``algorithm``:
    chunked with the op's chunk, else the reverse loop); ``lowp`` (the harness's low-precision baseline):
    :func:`storing_vjp`."""
    from refimpl.ssm.selective import selective_scan_vjp

    if lowp is not None:
        return storing_vjp(inp, conv, cot, lowp)
    args, kw = ops._seq_first(inp, conv)
    view = "chunked" if conv["algorithm"] == "chunked" else "recurrent"
    g = selective_scan_vjp(*args, dy=_bld(cot["out"]), d_final_state=cot.get("h_last"), view=view,
                           chunk=int(conv["chunk"]), **kw)
    g = _to_canonical(g, conv)
    if "C" in g:
        g["C"] = g["C"] * _c_scale(inp, conv)
    return g


register_grad(GradSpec(
    op=OP, wrt=WRT, forward=ops.oracle, bounds=grad_bounds, cases=grad_cases, reference_vjp=reference_vjp,
    # only ``out`` carries a cotangent: the harness draws the cotangents before the candidate runs, and candidates
    # whose interface returns no final state (mambapy) could not take one for h_last (refimpl's own tests and report
    # rows cover d_final_state; /tmp/integrate/requests.md asks for cotangents per the adapter's outputs)
    outputs=("out",), forward_error=forward_error, module=__name__,
    notes="oracle: differences of the banded-solve forward oracles.selective.s6_solve (float64); bound: the S6 "
          "adjoint on |inputs| x gamma_depth (oracles.selective_grad_forward)",
))


def refimpl_vjp(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None, d_out=None, d_h_last=None):
    """refimpl's backward as an explicit ``--grad-fn`` in the op's canonical protocol, under the op's default
    conventions (``discretization="mamba"``, ``delta_softplus=False``, ``2 Re``, the reverse loop):
    ``refimpl verify ssm.selective_scan refimpl.ssm.selective:selective_scan --adapter refimpl
    --grad-fn oracles.verify.grad_selective:refimpl_vjp``."""
    from oracles.verify.registry import get_op

    conv = {c.name: c.default for c in get_op(OP).conventions}
    inp = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
    return reference_vjp(inp, conv, {"out": d_out, "h_last": d_h_last})
