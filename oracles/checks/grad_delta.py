"""Report rows ``attention.delta_rule.grad``: every backward (view, backend) of
``refimpl.attention.delta.delta_rule_vjp`` against central differences (Richardson) of the float64 oracle forward
(:func:`oracles.delta_grad_forward.delta_rule_float64`, the transition-matrix loop), elementwise within the
differences' error plus the derived rounding bound of a backward (``componentwise_bound`` of the adjoint recurrence
on absolute values, :func:`oracles.delta_grad_forward.delta_rule_adjoint_magnitude`, at the depth of
:func:`oracles.verify.grad_delta.grad_depth`); the worst of the inputs' gradients is the row.  Plus the Numba
chunked kernel against the literal NumPy chunked adjoint on a longer case (l = 150, chunk 32), within the sum of
the two backwards' bounds."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.delta_grad_forward import delta_rule_adjoint_magnitude, delta_rule_float64
from oracles.gradients import fd_vjp
from oracles.tolerance import Bound, compare, componentwise_bound
from oracles.verify.grad_delta import grad_depth

SEED = 20261206
NAMES = {"alpha": "decay", "S0": "initial_state"}


def _case(rng, b, l, h, n, p):
    k = rng.standard_normal((b, l, h, n))
    x = {"q": rng.standard_normal((b, l, h, n)), "k": k, "v": rng.standard_normal((b, l, h, p)),
         "beta": rng.uniform(0.05, 0.95, (b, l, h)), "alpha": rng.uniform(0.5, 1.0, (b, l, h)),
         "S0": rng.standard_normal((b, h, p, n))}
    w = {"o": rng.standard_normal((b, l, h, p)), "S_last": rng.standard_normal((b, h, p, n))}
    return x, w


def _worst(grads, exact, bounds, dtype):
    out = None
    for nm in exact:
        c = compare(np.asarray(grads[nm]), exact[nm], bounds[nm], dtype=dtype)
        if out is None or c.worst_ratio > out[1].worst_ratio or (out[1].passed and not c.passed):
            out = (nm, c)
    return out


def _vjp(x, w, dt, view, backend, chunk, opts):
    from refimpl.attention.delta import delta_rule_vjp

    xs = {nm: a.astype(dt) for nm, a in x.items()}
    kw = dict(chunk=chunk) if view == "chunked" else {}
    g = delta_rule_vjp(xs["q"], xs["k"], xs["v"], xs["beta"], do=w["o"].astype(dt),
                       d_final_state=w["S_last"].astype(dt), decay=xs["alpha"], initial_state=xs["S0"], view=view,
                       backend=backend, **kw, **opts)
    return {nm: g[NAMES.get(nm, nm)] for nm in x}


def _bounds(x, w, dt, view, chunk, opts):
    b, l, h, n = x["k"].shape
    M = delta_rule_adjoint_magnitude(x["q"], x["k"], x["v"], x["beta"], x["alpha"], x["S0"], w["o"], w["S_last"],
                                     **opts, chunk=chunk if view == "chunked" else None)
    D = grad_depth(l, n, x["v"].shape[3], view, chunk)
    return {nm: componentwise_bound(M[nm], D, dt, oracle_dtype=None, what=f"grad {nm}") for nm in x}


@check
def delta_rule_grad():
    from refimpl.attention.delta import VJP_IMPLEMENTATIONS

    rng = np.random.default_rng(SEED)
    rows = []
    b, l, h, n, p, chunk = 1, 7, 2, 3, 2, 3
    opts = dict(key_norm="l2", query_norm="l2", scale=0.6)
    x, w = _case(rng, b, l, h, n, p)

    def f(a):
        return delta_rule_float64(a["q"], a["k"], a["v"], a["beta"], a["alpha"], a["S0"], **opts)

    fd = {np.float64: fd_vjp(f, x, w, list(x))}
    for view, backend in VJP_IMPLEMENTATIONS.pairs():
        for dt in (np.float64, np.float32):
            up = {nm: a.astype(dt).astype(np.float64) for nm, a in x.items()}
            wu = {nm: a.astype(dt).astype(np.float64) for nm, a in w.items()}
            if dt not in fd:
                fd[dt] = fd_vjp(f, up, wu, list(up))
            r = fd[dt]
            _vjp(up, wu, dt, view, backend, chunk, opts)
            g, t = timed(_vjp, up, wu, dt, view, backend, chunk, opts)
            bd = _bounds(up, wu, dt, view, chunk, opts)
            bounds = {nm: Bound(np.asarray(bd[nm].values) + r.error[nm], bd[nm].source + " + the differences' error")
                      for nm in x}
            nm, c = _worst(g, r.grad, bounds, dt)
            rows.append(row("attention.delta_rule.grad", f"{backend}/{view}", c, t,
                            note=f"worst of dq, dk, dv, dbeta, dalpha, dS0: {nm}; l={l}, chunk={chunk}, gated, l2 "
                                 f"q/k, scale 0.6; oracle: Richardson differences of the float64 forward"))
    # the Numba kernel against the literal NumPy chunked adjoint, longer
    b, l, h, n, p, chunk = 1, 150, 2, 16, 16, 32
    x, w = _case(rng, b, l, h, n, p)
    opts = dict(key_norm="l2", query_norm="l2", scale=0.25)
    ref = _vjp(x, w, np.float64, "chunked", "numpy", chunk, opts)
    _vjp(x, w, np.float64, "chunked", "numba", chunk, opts)
    g, t = timed(_vjp, x, w, np.float64, "chunked", "numba", chunk, opts)
    bd = _bounds(x, w, np.float64, "chunked", chunk, opts)
    bounds = {nm: bd[nm].scaled(2.0, "both backwards deviate from the exact gradient") for nm in ref}
    nm, c = _worst(g, ref, bounds, np.float64)
    rows.append(row("attention.delta_rule.grad.kernel", "numba/chunked vs numpy/chunked", c, t,
                    note=f"worst of the six gradients: {nm}; l={l}, n=p=16, chunk {chunk}, gated, l2 q/k"))
    return rows
