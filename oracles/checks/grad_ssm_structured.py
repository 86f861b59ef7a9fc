"""Report rows ``ssm.s5.grad``, ``ssm.ema.grad``, ``ssm.dss_kernel.grad``, ``ssm.s4_kernel.grad``: each backward
(view, backend) of refimpl's VJPs (``s5_ssm_vjp``, ``mega_ema_vjp``, ``dss_kernel_vjp``, ``s4_kernel_vjp``) against
central differences (Richardson) of the float64 forwards (:mod:`oracles.ssm_structured_grad_forward`), elementwise
within the differences' error plus the derived rounding bound of a backward (:mod:`oracles.verify.grad_ssm_structured`);
the worst of the inputs' gradients is the row."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, timed
from oracles.checks._grad import grad_rows
from oracles.gradients import fd_vjp

SEED = 20261219


def _cot(rng, out):
    return {k: rng.standard_normal(np.shape(v)) + (1j * rng.standard_normal(np.shape(v)) if np.iscomplexobj(v) else 0)
            for k, v in out.items()}


@check
def ssm_s5_grad():
    from oracles.verify import ops_s5
    from oracles.verify.grad_ssm_structured import S5_WRT, s5_grad_bounds, s5_reference_vjp
    from oracles.verify.registry import get_grad
    from refimpl.ssm.s5 import S5_SSM_VJP

    spec = get_grad("ssm.s5")
    rows = []
    for method, bid, L in (("zoh", False, 7), ("bilinear", True, 6)):
        conv = dict(method=method, real_output="2re", bidirectional=bid, use_h0=not bid, zoh_B="expm1")
        rng = np.random.default_rng([SEED, L])
        inp = ops_s5.sample(rng, conv, L=L, b=1, h=2, n=2, h0=not bid)
        w = _cot(rng, spec.forward(inp, conv))
        names = [k for k in S5_WRT if inp.get(k) is not None]
        fd = fd_vjp(lambda a: spec.forward(a, conv), inp, w, names)
        bounds = s5_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
        for view, backend in S5_SSM_VJP.pairs():
            g, t = timed(s5_reference_vjp, inp, conv, w)
            rows += grad_rows("ssm.s5", f"{backend}/{view}", g, fd, bounds, t,
                              note=f"{method}, 2re, L={L}, "
                                   f"{'bidirectional (C_back)' if bid else 'with h0 and h_last'}; "
                                   "oracle: Richardson differences of a float64 loop")
    return rows


@check
def ssm_ema_grad():
    from oracles.verify import ops_ema
    from oracles.verify.grad_ssm_structured import EMA_WRT, ema_grad_bounds, ema_reference_vjp
    from oracles.verify.registry import get_grad
    from refimpl.ssm.ema import MEGA_EMA_VJP

    spec = get_grad("ssm.ema")
    conv = dict(use_h0=True, algorithm="direct")
    rng = np.random.default_rng([SEED, 9])
    inp = ops_ema.sample(rng, conv, L=9, b=1, d=2, n=2, h0=True)
    w = _cot(rng, spec.forward(inp, conv))
    fd = fd_vjp(lambda a: spec.forward(a, conv), inp, w, EMA_WRT)
    bounds = ema_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
    rows = []
    for view, backend in MEGA_EMA_VJP.pairs():
        g, t = timed(ema_reference_vjp, inp, conv, w)
        rows += grad_rows("ssm.ema", f"{backend}/{view}", g, fd, bounds, t,
                          note="L=9, with h0 and h_last; oracle: Richardson differences of a float64 loop")
    return rows


@check
def ssm_dss_kernel_grad():
    from oracles.verify import ops_s4d
    from oracles.verify.grad_ssm_structured import DSS_WRT, dss_grad_bounds, dss_reference_vjp
    from oracles.verify.registry import get_grad
    from refimpl.ssm.s4d import DSS_KERNEL_VJP

    spec = get_grad("ssm.dss_kernel")
    rows = []
    for variant in ("softmax", "exp"):
        conv = {"variant": variant}
        rng = np.random.default_rng([SEED, variant == "exp"])
        inp = ops_s4d.dss_sample(rng, conv, L=12, h=2, n=3)
        w = {"K": rng.standard_normal((2, 12))}
        fd = fd_vjp(lambda a: spec.forward(a, conv), inp, w, DSS_WRT)
        bounds = dss_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
        for view, backend in DSS_KERNEL_VJP.pairs():
            g, t = timed(dss_reference_vjp, inp, conv, w)
            rows += grad_rows("ssm.dss_kernel", f"{backend}/{view}", g, fd, bounds, t,
                              note=f"{variant}, L=12, h=2, n=3; oracle: Richardson differences of the kernel term by "
                                   "term in float64")
    return rows


@check
def ssm_s4_kernel_grad():
    from oracles.verify import ops_s4
    from oracles.verify.grad_ssm_structured import S4_WRT, s4_grad_bounds, s4_reference_vjp
    from oracles.verify.registry import get_grad
    from refimpl.ssm.s4 import S4_KERNEL_VJP

    spec = get_grad("ssm.s4_kernel")
    conv = {"method": "bilinear", "output": "2re"}
    rng = np.random.default_rng([SEED, 4])
    inp = ops_s4.sample(rng, conv, L=12, h=1, n=3, r=1)
    w = {"K": rng.standard_normal((1, 12))}
    fd = fd_vjp(lambda a: spec.forward(a, conv), inp, w, S4_WRT)
    bounds = s4_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
    rows = []
    for view, backend in S4_KERNEL_VJP.pairs():
        g, t = timed(s4_reference_vjp, inp, conv, w)
        rows += grad_rows("ssm.s4_kernel", f"{backend}/{view}", g, fd, bounds, t,
                          note="bilinear, 2re, L=12, n=3, rank 1; oracle: Richardson differences of the dense DPLR "
                               "matrix's solves and matrix powers in float64")
    return rows
