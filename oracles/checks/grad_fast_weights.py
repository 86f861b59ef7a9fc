"""Report rows ``attention.fast_weights.grad``: every backward (view, backend) of the fast weight memory against
finite differences of the float64 closed-sum forward (:mod:`oracles.fast_weights_grad_forward`), bound = the
differences' error + ``gamma_(L + max(n, p) + 2)`` on the adjoints run on absolute values."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, timed
from oracles.checks._grad import grad_rows
from oracles.fast_weights_grad_forward import fast_weights_forward, fast_weights_vjp_magnitude, forward_error
from oracles.gradients import fd_vjp
from oracles.tolerance import componentwise_bound

SEED = 20261214


@check
def fast_weights_grad():
    from refimpl.attention.fast_weights import VJP_IMPLEMENTATIONS, fast_weight_memory_vjp

    rng = np.random.default_rng(SEED)
    b, l, h, n, p = 1, 9, 2, 3, 2
    inp = {"a": rng.standard_normal((b, l, h, p)), "b_vec": rng.standard_normal((b, l, h, n)),
           "x_read": rng.standard_normal((b, l, h, n)), "W0": rng.standard_normal((b, h, p, n))}
    w = {"y": rng.standard_normal((b, l, h, p)), "W_last": rng.standard_normal((b, h, p, n))}
    fwd = lambda d: fast_weights_forward(d["a"], d["b_vec"], d["x_read"], d["W0"])  # noqa: E731
    fd = fd_vjp(fwd, inp, w, list(inp),
                forward_error=lambda y: forward_error(inp["a"], inp["b_vec"], inp["x_read"], inp["W0"]))
    M = fast_weights_vjp_magnitude(inp["a"], inp["b_vec"], inp["x_read"], inp["W0"], w["y"], w["W_last"])
    depth = l + max(n, p) + 2
    bounds = {k: componentwise_bound(M[k], depth, np.float64, oracle_dtype=None,
                                     what="the adjoints on absolute values") for k in inp}
    rows = []
    for view, backend in VJP_IMPLEMENTATIONS.pairs():
        kw = dict(dy=w["y"], d_final_state=w["W_last"], initial_state=inp["W0"], view=view, backend=backend)
        fast_weight_memory_vjp(inp["a"], inp["b_vec"], inp["x_read"], **kw)
        g, t = timed(fast_weight_memory_vjp, inp["a"], inp["b_vec"], inp["x_read"], **kw)
        g = {"a": g["a"], "b_vec": g["b_vec"], "x_read": g["x_read"], "W0": g["initial_state"]}
        rows += grad_rows("attention.fast_weights", f"{backend}/{view}", g, fd, bounds, t,
                          note=f"l={l}, h={h}, n={n}, p={p}, W0 and dW_last given; oracle: fd_vjp of the float64 "
                               "closed sum")
    return rows
