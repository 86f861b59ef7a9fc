r"""Gradient check (``refimpl verify ssm.ssd --grad``) of Mamba-2's SSD.

Ground truth: central differences with Richardson extrapolation (:mod:`oracles.gradients`) of the op's float64
oracle forward, :func:`oracles.selective.ssd_solve` (one banded solve per head; never refimpl's, never a
backward).  ``wrt``: ``x, dt, A, B, C, D, z, dt_bias, initial_states`` (``seq_idx`` is integer: no gradient);
outputs ``y`` and ``final_states`` both carry cotangents.

Bound (the rounding of a backward computed in the candidate's dtype; the harness adds the differences' own
error): componentwise, ``gamma_depth x M`` with ``M`` the sum of the absolute values of every term of each
gradient (:func:`oracles.ssd_grad_forward.ssd_vjp_magnitude`: the recurrence and its reverse scan on ``|x|, |B|,
|C|, |D|, |S_{-1}|, |dy|, |d_final|`` with the decays as they are, in ``(0, 1]``; softplus' derivative and the clamp
mask are factors <= 1) and ``depth = 4 l + b l + n + p + h + 4 TRANSCENDENTAL_U + 8``
(:func:`oracles.ssd_grad_forward.ssd_vjp_depth`: the reverse scan or the masked matrix's sums and the segment
sums' cumulative sums, the contractions, the sums over ``b l`` of ``dA``/``dD``/``dt_bias``, four transcendental
functions).  Where the harness gives no cotangents, ``|J|^T |w|`` stands in for ``M``.

Kinks: the clamp (``dt_limit``) and the softplus threshold (20) are not differentiable at their corners; the
cases keep the pre-activations away from them (the samplers draw continuous values), and a difference across a
corner shows as a large Richardson estimate (the bound grows there, it is never silently wrong).  Convention:
where the clamp is active the gradient is 0; at ``v = lo`` or ``v = hi`` exactly it passes (torch.clamp's).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from oracles.ssd_grad_forward import ssd_vjp_depth, ssd_vjp_magnitude
from oracles.tolerance import Bound, componentwise_bound
from oracles.verify.registry import Case, GradSpec, register_grad

OP = "ssm.ssd"
WRT = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def _eff(inp, conv):
    from oracles.verify.ops_ssd import _eff as eff

    return eff(inp, conv)


KINK_MARGIN = 0.02  # >> the differences' largest step on the effective dt (2^-10 max(|dt|, rms) x softplus' slope)


def away_from_kinks(inp, conv):
    """Move pre-activations that fall within ``KINK_MARGIN`` of a corner (the clamp's ``lo``/``hi`` on the
    effective step, softplus' threshold 20 on ``dt + dt_bias``) to ``3 KINK_MARGIN`` from it, on the same side
    where that stays a valid step: the differences then never straddle a corner."""
    if inp.get("dt") is None or np.size(inp["dt"]) == 0:
        return inp
    out = dict(inp)
    dt = np.array(inp["dt"], dtype=np.float64)
    bias = 0.0 if inp.get("dt_bias") is None else np.asarray(inp["dt_bias"], dtype=np.float64)
    u = dt + bias
    sp = bool(conv["dt_softplus"])
    if sp:
        u = np.where(np.abs(u - 20.0) < KINK_MARGIN, np.where(u >= 20.0, 20.0 + 3 * KINK_MARGIN,
                                                             20.0 - 3 * KINK_MARGIN), u)
    lo, hi = conv["dt_limit"]
    if not (lo == 0.0 and hi == float("inf")):
        v = np.where(u <= 20.0, np.log1p(np.exp(np.minimum(u, 20.0))), u) if sp else u
        for c in (lo, hi):
            if not np.isfinite(c):
                continue
            near = np.abs(v - c) < KINK_MARGIN
            below = (v < c) & (c - 3 * KINK_MARGIN > 0)
            v = np.where(near, np.where(below, c - 3 * KINK_MARGIN, c + 3 * KINK_MARGIN), v)
        u = np.where(v <= 20.0, np.log(np.expm1(np.maximum(v, 1e-300))), v) if sp else v
    out["dt"] = u - bias
    return out


def grad_sample(rng, conv, **kw):
    """Small random cases: the op's sampler with one batch row and at most 2 heads (elementwise differences cost ~6
    forwards per input element), pre-activations kept off the corners (:func:`away_from_kinks`)."""
    from oracles.verify.ops_ssd import sample

    kw.setdefault("b", 1)
    kw.setdefault("h", int(rng.choice([1, 2])))
    return away_from_kinks(sample(rng, conv, **kw), conv)


def forward(inp, conv) -> Dict[str, Any]:
    """The op's float64 oracle (:func:`oracles.verify.ops_ssd.oracle`: ``ssd_solve`` on the claimed inputs)."""
    from oracles.verify.ops_ssd import oracle

    return oracle(inp, conv)


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents=None) -> Dict[str, Bound]:
    x = _eff(inp, conv)
    depth = ssd_vjp_depth(x)
    if cotangents is not None and "y" in cotangents:
        M = ssd_vjp_magnitude(x, cotangents, conv)
        what = f"SSD VJP: every term in absolute value (ssd_vjp_magnitude), depth {depth:g}"
    else:
        M = magnitudes
        what = f"SSD VJP: |J|^T|w| (no cotangents given), depth {depth:g}"
    return {k: componentwise_bound(np.asarray(M[k]), depth, dtype, oracle_dtype=None, what=what)
            for k in WRT if k in oracle_grads and k in M}


def grad_cases(conv) -> List[Case]:
    """Small golden/edge cases (each well under 1500 input elements): L = 0, 1, odd, chunk -+ 1, groups, packed
    sequences (a boundary on the chunk boundary), the clamp active on both sides, softplus past its threshold,
    every optional input absent."""
    from oracles.verify.ops_ssd import sample

    T = int(conv["chunk"])
    out: List[Case] = []

    def add(cid, kind, note, seed, drop=(), **kw):
        inp = away_from_kinks(sample(np.random.default_rng([7401, seed]), conv, **kw), conv)
        for k in drop:
            inp[k] = None
        out.append(Case(OP, cid, kind, inp, dict(conv), seed=seed, note=note))

    add("golden-small", "golden", "b=1, l=6, h=2, p=2, n=3, one group, D per head", 1, L=6, b=1, h=2, p=2, n=3, g=1,
        packed=False, D_shape="h")
    add("edge-L0", "edge", "L = 0: the initial state's gradient is the final state's cotangent", 2, L=0, b=1, h=2,
        p=2, n=2)
    add("edge-L1", "edge", "L = 1", 3, L=1, b=2, h=2, p=2, n=2, g=1)
    add("edge-groups", "edge", "h = 4 heads in g = 2 groups, D per channel, L = 7 (odd)", 4, L=7, b=1, h=4, p=2,
        n=2, g=2, D_shape="hp", packed=False)
    add("edge-chunk-1", "edge", f"L = chunk - 1 = {T - 1}", 5, L=max(T - 1, 0), b=1, h=1, p=1, n=2, packed=False)
    add("edge-chunk+1", "edge", f"L = chunk + 1 = {T + 1}: a short last chunk (the inter-chunk state gradient)", 6,
        L=T + 1, b=1, h=1, p=1, n=2, packed=False)
    if conv["use_seq_idx"]:
        add("edge-packed", "edge", "three packed sequences (seq_idx): no gradient across a boundary", 7, L=9, b=1,
            h=2, p=1, n=2, cuts=(3, 6))
        add("edge-packed-chunk", "edge", f"a sequence starting on the chunk boundary t = {T}", 8, L=T + 3, b=1, h=1,
            p=1, n=1, cuts=(T,))
    lo, hi = conv["dt_limit"]
    if not (lo == 0.0 and hi == float("inf")):
        add("edge-dt-limit", "edge", f"steps on both sides of dt_limit = ({lo:g}, {hi:g}): zero gradient where the "
            "clamp is active", 9, L=8, b=1, h=2, p=2, n=2, straddle=True, packed=False)
    if conv["dt_softplus"]:
        add("edge-softplus-threshold", "edge", "pre-activations past 20, where softplus' derivative is 1", 10, L=7,
            b=1, h=2, p=1, n=2, big_dt=True, packed=False)
    add("edge-optional-absent", "edge", "D, z, dt_bias and the initial state absent", 11, L=5, b=1, h=2, p=2, n=2,
        packed=False, drop=("D", "z", "dt_bias", "initial_states"))
    return out


def storing_vjp(inp, conv, cot, lowp) -> Dict[str, np.ndarray]:
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`): the recurrent view step by step,
    the state ``S_t`` stored in ``lowp`` after every step of the forward scan and its adjoint ``dS_t`` after every
    step of the reverse scan (a loop in the dtype rounds its state every step); each step is refimpl's
    :func:`ssd_scan` / :func:`ssd_scan_vjp` (recurrent) on a one-step sequence (``initial_state = S_t``,
    ``d_final_state = dS_{t+1}``), in float32.  The effective step ``dt_eff = clamp(softplus(dt + dt_bias))`` is
    computed once for the sequence and stored in ``lowp`` too, from the stored pre-activation ``u = dt + dt_bias``
    (as a loop in the dtype stores both; the steps then run with ``dt_eff`` and no softplus/bias/limit); its
    cotangent (stored) is chained back to ``du`` (stored before the bias' reduction ``d dt_bias = sum_{b,l} du``)
    by refimpl's own ``_dt_adjoint``.  A ``seq_idx`` boundary before step ``t`` starts it from a zero state (and sends
    no adjoint across); the time-shared ``A``, ``D``, ``dt_bias`` gradients are summed over the steps in float32."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan, sum_steps
    from refimpl.ssm.ssd import ssd_scan, ssd_scan_vjp
    from refimpl.ssm.ssd.backward import _dt_adjoint, _prepare_vjp

    rnd = storer(lowp)
    x = _eff(inp, conv)
    f = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
    X, dt, A, B, C, D, z, dtb = (f(x[k]) for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias"))
    b, l, h, p = X.shape
    n = B.shape[3]
    S0 = f(x["initial_states"])
    seq = x["seq_idx"]
    h0 = np.zeros((b, h, p, n), np.float32) if S0 is None else S0
    dy = rnd(cot["y"])
    dl = cot.get("final_states")
    sl = lambda a, t: None if a is None else a[:, t:t + 1]  # noqa: E731
    # the pre-activation u = dt + dt_bias, stored (the softplus reads it back); the effective step from it, stored
    u = rnd(dt if dtb is None else dt + dtb)
    v = _prepare_vjp(X, u, A, B, C, D, z, dy, f(dl), None, bool(conv["dt_softplus"]), tuple(conv["dt_limit"]), h0,
                     None, False)
    dt_eff = rnd(np.asarray(v.p.dt, np.float32))
    kw = {}

    def reset(t):  # (b 1 1 1): 0 where a new packed sequence starts at step t
        if seq is None or t == 0:
            return np.ones((b, 1, 1, 1), np.float32)
        return (np.asarray(seq)[:, t] == np.asarray(seq)[:, t - 1]).astype(np.float32)[:, None, None, None]

    def fwd(t, S):
        return ssd_scan(sl(X, t), sl(dt_eff, t), A, sl(B, t), sl(C, t), D, sl(z, t), view="recurrent",
                        initial_state=S * reset(t), return_final_state=True, **kw)[1]

    def vjp(t, S, dS):
        g = ssd_scan_vjp(sl(X, t), sl(dt_eff, t), A, sl(B, t), sl(C, t), D, sl(z, t), dy=sl(dy, t), d_final_state=dS,
                         initial_state=S * reset(t), view="recurrent", **kw)
        return g, g["initial_state"] * reset(t)

    steps, dS0 = storing_reverse_scan(l, h0, f(dl), fwd, vjp, lowp)
    # d dt_eff (stored) back through the clamp and the softplus to d u (stored); d dt = d u, d dt_bias = sum d u
    du = rnd(_dt_adjoint(v, rnd(concat_steps(steps, "dt", 1, dt.shape)))[0])
    ddt, ddtb = du, du.sum(axis=(0, 1))
    out = {"x": concat_steps(steps, "x", 1, X.shape), "dt": np.asarray(ddt, np.float32),
           "B": concat_steps(steps, "B", 1, B.shape), "C": concat_steps(steps, "C", 1, C.shape),
           "A": sum_steps(steps, "A", A.shape, lowp)}
    if z is not None:
        out["z"] = concat_steps(steps, "z", 1, z.shape)
    if D is not None:
        out["D"] = sum_steps(steps, "D", D.shape, lowp)
    if dtb is not None:
        out["dt_bias"] = np.asarray(ddtb, np.float32)
    if S0 is not None:
        out["initial_states"] = dS0
    return out


def reference_vjp(inp, conv, cot, lowp: Optional[str] = None) -> Dict[str, np.ndarray]:
    """refimpl's :func:`refimpl.ssm.ssd.ssd_scan_vjp` (the view ``conv["algorithm"]``) in the op's layout; ``lowp``
    (the harness's low-precision baseline): :func:`storing_vjp`."""
    from refimpl.ssm.ssd import ssd_scan_vjp

    if lowp is not None:
        return storing_vjp(inp, conv, cot, lowp)
    x = _eff(inp, conv)
    g = ssd_scan_vjp(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], dy=cot["y"],
                     d_final_state=cot.get("final_states"), dt_bias=x["dt_bias"],
                     dt_softplus=bool(conv["dt_softplus"]), dt_limit=tuple(conv["dt_limit"]),
                     initial_state=x["initial_states"], seq_idx=x["seq_idx"], chunk=int(conv["chunk"]),
                     view=str(conv["algorithm"]))
    if "initial_state" in g:
        g["initial_states"] = g.pop("initial_state")
    return g


register_grad(GradSpec(
    op=OP, wrt=WRT, forward=forward, bounds=grad_bounds, cases=grad_cases, reference_vjp=reference_vjp,
    outputs=("y", "final_states"), sample=grad_sample, module=__name__,
    notes="oracle: differences of the banded-solve forward (oracles.selective.ssd_solve); bound: every term of the "
          "VJP in absolute value x gamma_depth (oracles.ssd_grad_forward)",
))
