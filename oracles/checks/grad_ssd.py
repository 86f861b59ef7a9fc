"""Report rows ``ssm.ssd.grad``: every backward (view, backend) of refimpl's SSD VJP (``ssd_scan_vjp``) against central
differences (Richardson) of the float64 banded-solve oracle (``oracles.selective.ssd_solve``), elementwise within the
differences' error plus the derived rounding bound of a backward (``oracles.verify.grad_ssd``: every term in absolute
value x gamma_depth), float64 and float32; the worst of the inputs' gradients is the row.  The case has every option:
D, z, dt_bias, softplus, an active dt_limit, an initial state, the final state's cotangent, two packed sequences and
L = 9 with chunk 4 (two whole chunks and a short one)."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.gradients import fd_vjp
from oracles.tolerance import Bound, compare

SEED = 20261214


def _worst(grads, fd, bounds, dtype):
    best = None
    for nm in fd.grad:
        b = Bound(np.asarray(bounds[nm].values) + fd.error[nm], bounds[nm].source + " + the differences' error")
        c = compare(np.asarray(grads[nm]), fd.grad[nm], b, dtype=dtype)
        if best is None or c.worst_ratio > best[1].worst_ratio or (best[1].passed and not c.passed):
            best = (nm, c)
    return best


@check
def ssm_ssd_grad():
    from oracles.verify.grad_ssd import WRT, away_from_kinks, forward, grad_bounds
    from oracles.verify.ops_ssd import sample
    from oracles.verify.registry import get_op
    from refimpl.ssm.ssd import VJP_IMPLEMENTATIONS, ssd_scan_vjp

    conv = get_op("ssm.ssd").resolve_conventions({"dt_softplus": True, "dt_limit": (0.1, 0.6), "chunk": 4})
    rng = np.random.default_rng(SEED)
    inp = away_from_kinks(sample(rng, conv, L=9, b=1, h=2, p=2, n=2, g=1, D_shape="hp", cuts=(5,)), conv)
    out = forward(inp, conv)
    w = {k: rng.standard_normal(np.shape(v)) for k, v in out.items()}
    wrt = [k for k in WRT if inp.get(k) is not None]
    rows = []
    for dt in (np.float64, np.float32):
        cast = {k: (v if v is None or k == "seq_idx" else np.asarray(v).astype(dt)) for k, v in inp.items()}
        up = {k: (v if v is None or k == "seq_idx" else v.astype(np.float64)) for k, v in cast.items()}
        wc = {k: v.astype(dt) for k, v in w.items()}
        wu = {k: v.astype(np.float64) for k, v in wc.items()}
        fd = fd_vjp(lambda a: forward(a, conv), up, wu, wrt)
        bounds = grad_bounds(up, fd.grad, conv, dt, fd.magnitude, cotangents=wu)
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            g, t = timed(ssd_scan_vjp, cast["x"], cast["dt"], cast["A"], cast["B"], cast["C"], cast["D"], cast["z"],
                         dy=wc["y"], d_final_state=wc["final_states"], dt_bias=cast["dt_bias"], dt_softplus=True,
                         dt_limit=(0.1, 0.6), initial_state=cast["initial_states"], seq_idx=cast["seq_idx"], chunk=4,
                         view=view, backend=backend)
            g["initial_states"] = g.pop("initial_state")
            nm, c = _worst(g, fd, bounds, dt)
            rows.append(row("ssm.ssd.grad", f"{backend}/{view}", c, t,
                            note=f"worst of {', '.join(wrt)}: {nm}; L=9, chunk 4, two packed sequences, every option; "
                                 "oracle: Richardson differences of the banded-solve forward"))
    return rows
