"""Report rows ``ssm.selective_scan.grad``: every backward (view, backend) of refimpl's selective-scan VJP
(:func:`refimpl.ssm.selective.selective_scan_vjp`) against Richardson central differences of the float64
banded-solve forward (:func:`oracles.selective.s6_solve`), elementwise within the differences' error plus the
derived rounding bound of a backward (:func:`oracles.selective_grad_forward.s6_vjp_bounds`: the adjoint on
|inputs| x gamma_depth); the worst of the inputs' gradients is the row.  Plus the Numba kernel against the NumPy
reverse scan on a longer case (L = 300, complex A)."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.gradients import fd_vjp
from oracles.selective import s6_solve
from oracles.selective_grad_forward import s6_vjp_bounds
from oracles.tolerance import Bound, compare

SEED = 20261403
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _problem(rng, L, b, d, n, cplx, B_layout, C_layout, g=2):
    A = -np.exp(rng.uniform(-1, 1, (d, n))) + (1j * rng.uniform(-3, 3, (d, n)) if cplx else 0)

    def bc(lay):
        X = {"fixed": lambda: rng.standard_normal((d, n)), "variable": lambda: rng.standard_normal((b, L, n)),
             "grouped": lambda: rng.standard_normal((b, L, g, n))}[lay]()
        return X + 1j * rng.standard_normal(X.shape) if cplx else X

    inp = {"u": rng.standard_normal((b, L, d)), "delta": rng.normal(-1.0, 1.0, (b, L, d)), "A": A,
           "B": bc(B_layout), "C": bc(C_layout), "D": rng.standard_normal(d), "z": rng.standard_normal((b, L, d)),
           "delta_bias": rng.uniform(0, 0.3, d),
           "initial_state": rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)}
    cot = {"out": rng.standard_normal((b, L, d)),
           "final": rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)}
    return inp, cot


def _forward(disc):
    def f(x):
        out, fin = s6_solve(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], delta_bias=x["delta_bias"],
                            delta_softplus=True, initial_state=x["initial_state"], discretization=disc)
        return {"out": out, "final": fin}
    return f


def _vjp(inp, cot, disc, **kw):
    from refimpl.ssm.selective import selective_scan_vjp

    return selective_scan_vjp(*(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z")), dy=cot["out"],
                              d_final_state=cot["final"], delta_bias=inp["delta_bias"], delta_softplus=True,
                              initial_state=inp["initial_state"], discretization=disc, **kw)


def _bounds(inp, cot, disc, view, chunk, dtype=np.float64):
    return s6_vjp_bounds(*(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z")), dy=cot["out"],
                         d_final_state=cot["final"], delta_bias=inp["delta_bias"], delta_softplus=True,
                         initial_state=inp["initial_state"], discretization=disc, dtype=dtype, view=view, chunk=chunk)


def _worst(g, ref, err, bounds):
    best = None
    for nm in ref:
        b = Bound(np.asarray(bounds[nm].values) + (0 if err is None else np.asarray(err[nm])),
                  bounds[nm].source + ("" if err is None else " + the differences' error"))
        c = compare(np.asarray(g[nm]), np.asarray(ref[nm]), b)
        if best is None or c.worst_ratio > best[1].worst_ratio or (best[1].passed and not c.passed):
            best = (nm, c)
    return best


@check
def ssm_selective_scan_grad():
    from refimpl.ssm.selective import VJP_IMPLEMENTATIONS

    rows = []
    chunk = 4
    for cplx, disc, L, lay in ((True, "mamba", 9, ("grouped", "variable")), (False, "zoh", 5, ("fixed", "grouped"))):
        rng = np.random.default_rng([SEED, L])
        inp, cot = _problem(rng, L, 1, 4, 2, cplx, *lay)
        fd = fd_vjp(_forward(disc), inp, cot, list(NAMES))
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            kw = {"chunk": chunk} if view == "chunked" else {}
            g, t = timed(_vjp, inp, cot, disc, view=view, backend=backend, **kw)
            nm, c = _worst(g, fd.grad, fd.error, _bounds(inp, cot, disc, view, chunk))
            rows.append(row("ssm.selective_scan.grad", f"{backend}/{view} ({disc}, {'complex' if cplx else 'real'})",
                            c, t, note=f"worst of u, delta, A, B, C, D, z, delta_bias, initial_state: {nm}; "
                                       f"B {lay[0]}, C {lay[1]}, d=4, n=2, L={L}" +
                                       (f", chunk {chunk}" if view == "chunked" else "") +
                                       ", softplus, with d_final_state; oracle: Richardson differences of s6_solve"))
    # the kernel against the NumPy reverse scan on a longer case
    rng = np.random.default_rng([SEED, 300])
    inp, cot = _problem(rng, 300, 2, 8, 4, True, "grouped", "variable")
    ref = _vjp(inp, cot, "mamba")
    for view in ("recurrent", "chunked"):
        g, t = timed(_vjp, inp, cot, "mamba", view=view, backend="numba")
        b = _bounds(inp, cot, "mamba", view, 64)
        nm, c = _worst(g, ref, None, {k: Bound(2 * np.asarray(v.values), "both backwards within " + v.source)
                                      for k, v in b.items()})
        rows.append(row("ssm.selective_scan.grad", f"numba/{view} vs numpy/recurrent", c, t,
                        note=f"worst input: {nm}; complex A, grouped B, b=2, d=8, n=4, L=300 (chunk 64); bound: "
                             "twice the derived backward bound"))
    return rows
