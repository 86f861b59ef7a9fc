"""Report rows ``ssm.lti.grad``, ``ssm.discretize.grad``, ``ssm.s4d_kernel.grad``, ``ssm.lru.grad``: every backward
(view, backend) of refimpl's SSM-core VJPs against central differences (Richardson) of the float64 oracle forwards
(:mod:`oracles.ssm_grad_forward`), elementwise within the differences' error plus the derived rounding bound of a
backward (:mod:`oracles.verify.grad_ssm`); the worst of the inputs' gradients is the row."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, row, timed
from oracles.gradients import fd_vjp
from oracles.tolerance import Bound, compare

SEED = 20261214


def _cot(rng, out):
    return {k: rng.standard_normal(np.shape(v)) + (1j * rng.standard_normal(np.shape(v)) if np.iscomplexobj(v) else 0)
            for k, v in out.items()}


def _worst(grads, fd, bounds, dtype):
    best = None
    for nm in fd.grad:
        b = Bound(np.asarray(bounds[nm].values) + fd.error[nm], bounds[nm].source + " + the differences' error")
        c = compare(np.asarray(grads[nm]), fd.grad[nm], b, dtype=dtype)
        if best is None or c.worst_ratio > best[1].worst_ratio or (best[1].passed and not c.passed):
            best = (nm, c)
    return best


def _fd(spec, inp, conv, w):
    wrt = [k for k in spec.wrt if inp.get(k) is not None]
    return fd_vjp(lambda a: spec.forward(a, conv), inp, w, wrt)


@check
def ssm_lti_grad():
    from oracles.verify.grad_ssm import lti_grad_bounds
    from oracles.verify.ops_ssm import lti_sample
    from oracles.verify.registry import get_grad
    from refimpl.ssm.lti import VJP_IMPLEMENTATIONS, lti_ssm_vjp

    spec = get_grad("ssm.lti")
    rows = []
    for diag, cplx, L in ((True, True, 9), (False, False, 8)):
        conv = dict(diagonal=diag, real_output="complex", use_h0=True, complex_A=True, time_varying=False,
                    algorithm="direct")
        rng = np.random.default_rng([SEED, L])
        inp = lti_sample(rng, conv, L=L, complex_=cplx, h0=True, tv=False, n=2)
        w = _cot(rng, spec.forward(inp, conv))
        fd = _fd(spec, inp, conv, w)
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            for dt in (np.float64, np.float32):
                cd = np.complex64 if dt == np.float32 else np.complex128
                cast = {k: (None if v is None else np.asarray(v).astype(cd if np.iscomplexobj(v) else dt))
                        for k, v in inp.items()}
                up = {k: (None if v is None else v.astype(np.complex128 if np.iscomplexobj(v) else np.float64))
                      for k, v in cast.items()}
                wc = {k: np.asarray(v).astype(cd if np.iscomplexobj(v) else dt) for k, v in w.items()}
                r = fd if dt == np.float64 else _fd(spec, up, conv, {k: v.astype(np.complex128 if np.iscomplexobj(v)
                                                                                    else np.float64)
                                                                    for k, v in wc.items()})
                kw = dict(dy=wc["y"], d_final_state=wc["h_last"], initial_state=cast["h0"], diagonal=diag, view=view,
                          backend=backend, **(dict(chunk=3) if view == "chunked" else {}))
                g, t = timed(lti_ssm_vjp, cast["A_bar"], cast["B_bar"], cast["C"], cast["D"], cast["x"], **kw)
                g["h0"] = g.pop("initial_state")
                bounds = lti_grad_bounds(up, r.grad, conv, dt, r.magnitude, cotangents=w)
                nm, c = _worst(g, r, bounds, dt)
                rows.append(row("ssm.lti.grad", f"{backend}/{view}", c, t,
                                note=f"worst of A_bar, B_bar, C, D, x, h0: {nm}; {'diagonal' if diag else 'dense'} "
                                     f"{'complex' if cplx else 'real'}, L={L}{', chunks of 3' if view == 'chunked' else ''}, with h0 "
                                     "and d_final_state; oracle: "
                                     "Richardson differences of a float64 loop"))
    return rows


@check
def ssm_discretize_grad():
    from oracles.verify.grad_ssm import discretize_grad_bounds
    from oracles.verify.registry import get_grad
    from refimpl.ssm.discretization import METHODS, discretize_vjp

    spec = get_grad("ssm.discretize")
    rows = []
    rng = np.random.default_rng(SEED)
    for diag in (True, False):
        h, n, m = 2, 2, 2
        cplx = diag
        A = (-rng.uniform(0.2, 2.0, (h, n)) + (1j * rng.uniform(-3, 3, (h, n)) if cplx else 0)) if diag else \
            rng.standard_normal((h, n, n)) - 1.5 * np.eye(n)
        B = rng.standard_normal((h, n, m)) + (1j * rng.standard_normal((h, n, m)) if cplx else 0)
        inp = {"A": A, "B": B, "dt": np.asarray(0.3)}
        for method in METHODS:
            conv = dict(method=method, alpha=0.3, diagonal=diag, complex_A=True, output="s4")
            w = _cot(rng, spec.forward(inp, conv))
            fd = _fd(spec, inp, conv, w)
            kw = dict(dA_bar=w["A_bar"], dB_bar=w["B_bar"], method=method, diagonal=diag,
                      alpha=0.3 if method == "gbt" else None)
            g, t = timed(discretize_vjp, A, B, inp["dt"], **kw)
            bounds = discretize_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
            nm, c = _worst(g, fd, bounds, np.float64)
            rows.append(row("ssm.discretize.grad", f"numpy/{method}", c, t,
                            note=f"worst of A, B, dt: {nm}; {'diagonal complex' if diag else 'dense real'} A, "
                                 f"n={n}, m={m}, dt=0.3; oracle: Richardson differences of the Van Loan block / "
                                 "closed-form solves"))
    return rows


@check
def ssm_s4d_kernel_grad():
    from oracles.verify import ops_s4d
    from oracles.verify.grad_ssm import s4d_grad_bounds
    from oracles.verify.registry import get_grad
    from refimpl.ssm.s4d import S4D_KERNEL_VJP, s4d_kernel_vjp

    spec = get_grad("ssm.s4d_kernel")
    rows = []
    for method in ("zoh", "bilinear"):
        for output in ("2re", "complex"):
            conv = dict(method=method, output=output, zoh_B="expm1")
            rng = np.random.default_rng([SEED, len(rows)])
            inp = ops_s4d.sample(rng, conv, L=12, h=2, n=3)
            w = _cot(rng, spec.forward(inp, conv))
            fd = _fd(spec, inp, conv, w)
            for view, backend in S4D_KERNEL_VJP.pairs():
                g, t = timed(s4d_kernel_vjp, inp["Lambda"], inp["B"], inp["C"], inp["dt"], 12, dK=w["K"],
                             method=method, output=output, view=view, backend=backend)
                bounds = s4d_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
                nm, c = _worst(g, fd, bounds, np.float64)
                rows.append(row("ssm.s4d_kernel.grad", f"{backend}/{view} ({method}, {output})", c, t,
                                note=f"worst of Lambda, B, C, dt: {nm}; d=2, n=3, L=12; oracle: Richardson "
                                     "differences of sum_n C B_bar exp(k dt lambda)"))
    return rows


@check
def ssm_lru_grad():
    from oracles.verify import ops_lru
    from oracles.verify.grad_ssm import lru_grad_bounds
    from oracles.verify.registry import get_grad
    from refimpl.ssm.lru import LRU_SSM_VJP, lru_ssm_vjp

    spec = get_grad("ssm.lru")
    rows = []
    conv = dict(real_output="re")
    rng = np.random.default_rng(SEED)
    inp = ops_lru.sample(rng, conv, L=9, b=2, h=2, n=3)
    w = _cot(rng, spec.forward(inp, conv))
    fd = _fd(spec, inp, conv, w)
    for view, backend in LRU_SSM_VJP.pairs():
        g, t = timed(lru_ssm_vjp, *(inp[k] for k in ("nu_log", "theta_log", "gamma_log", "B", "C", "D", "u")),
                     dy=w["y"], view=view, backend=backend)
        bounds = lru_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
        nm, c = _worst(g, fd, bounds, np.float64)
        rows.append(row("ssm.lru.grad", f"{backend}/{view}", c, t,
                        note=f"worst of nu_log, theta_log, gamma_log, B, C, D, u: {nm}; b=2, l=9, h=2, n=3; oracle: "
                             "Richardson differences of a float64 loop"))
    return rows
