r"""The gradient check of op ``attention.fast_weights`` (``refimpl verify --op attention.fast_weights CAND --grad``).

The pilot of the gradient checks (the pattern every ``grad_<family>.py`` follows):

* ``wrt``: ``a``, ``b_vec``, ``x_read``, ``W0`` (when the case has it: ``use_state``); the loss pairs both outputs,
  ``y`` and ``W_last``, with their cotangents.
* forward: :func:`oracles.fast_weights_grad_forward.fast_weights_forward` (float64, the closed sum, not the
  recurrence), its rounding :func:`~oracles.fast_weights_grad_forward.forward_error` handed to the differences.
* bounds: a backward in ``dtype`` sums, for each gradient entry, the terms of the adjoint equations: the carried
  adjoint ``dW_i`` (``L + 1`` terms) then one product summed over ``n`` or ``p``: depth ``L + max(n, p) + 2``, on the
  magnitudes :func:`~oracles.fast_weights_grad_forward.fast_weights_vjp_magnitude` (the adjoints on absolute
  values, which need the cotangents; ``|J|^T |w|`` from the differences stands in when none are passed, stated):
  ``componentwise_bound(M, L + max(n, p) + 2, dtype)``.  The harness adds the differences' own error.
* cases: L = 0 (only ``W_last`` carries a gradient: ``dW0 = dW_last``), L = 1, odd L, L = 8 and 9, ``p = n``,
  with and without ``W0`` per ``use_state``; all under ~300 input elements.
* reference_vjp: :func:`refimpl.attention.fast_weights.fast_weight_memory_vjp` (the reverse scan).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from oracles.fast_weights_grad_forward import fast_weights_forward, fast_weights_vjp_magnitude, forward_error
from oracles.tolerance import componentwise_bound
from oracles.verify.ops_fast_weights import OP, sample
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

WRT = ("a", "b_vec", "x_read", "W0")


def _W0(inp, conv):
    return inp.get("W0") if conv["use_state"] else None


def grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"y", "W_last"}`` in float64 (what :mod:`oracles.gradients` differentiates)."""
    return fast_weights_forward(inp["a"], inp["b_vec"], inp["x_read"], _W0(inp, conv))


def grad_forward_error(inp, conv):
    return forward_error(inp["a"], inp["b_vec"], inp["x_read"], _W0(inp, conv))


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents: Optional[Mapping[str, Any]] = None):
    """``componentwise_bound(M, L + max(n, p) + 2, dtype)`` per input (module docstring)."""
    a = np.asarray(inp["a"])
    l, p, n = a.shape[1], a.shape[3], np.shape(inp["b_vec"])[3]
    depth = l + max(n, p) + 2
    if cotangents is not None and "y" in cotangents:
        M = fast_weights_vjp_magnitude(inp["a"], inp["b_vec"], inp["x_read"], _W0(inp, conv), cotangents["y"],
                                       cotangents.get("W_last"))
        what = "the adjoint equations on absolute values"
    else:
        M, what = dict(magnitudes), "|J|^T |w| from the differences (no cotangents given)"
    return {k: componentwise_bound(M[k], depth, dtype, oracle_dtype=None,
                                   what=f"grad {k}: dW carried over L steps, then a sum over n or p; {what}")
            for k in oracle_grads}


def grad_cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 8101, conv)
    add("grad-golden", "golden", "b=1, l=5, h=2, n=3, p=2", 1, l=5, b=1, h=2, n=3, p=2)
    add("grad-L0", "edge", "L = 0: only W_last carries a gradient (dW0 = dW_last)", 2, l=0, b=1, h=2, n=2, p=2)
    add("grad-L1", "edge", "L = 1", 3, l=1, b=2, h=1, n=3, p=2)
    add("grad-L8", "edge", "L = 8 (a power of two)", 4, l=8, b=1, h=1, n=2, p=3)
    add("grad-L9", "edge", "L = 9 (odd, one past 8)", 5, l=9, b=1, h=2, n=2, p=2)
    add("grad-square", "edge", "p = n = 3", 6, l=4, b=1, h=1, n=3, p=3)
    return add.cases


def grad_sample(rng, conv, **sizes):
    return sample(rng, conv, l=sizes.get("l", int(rng.integers(2, 7))), b=1, h=int(rng.integers(1, 3)),
                  n=int(rng.integers(1, 4)), p=int(rng.integers(1, 4)))


def storing_vjp(inp, conv, cotangents, lowp):
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`): the recurrent view step by step,
    the fast weight ``W_t`` stored in ``lowp`` after every step of the forward scan and its adjoint ``dW_t`` after
    every step of the reverse scan (a loop in the dtype rounds its state every step); each step is refimpl's
    :func:`fast_weight_memory` / :func:`fast_weight_memory_vjp` on a one-step sequence (``initial_state = W_t``,
    ``d_final_state = dW_{t+1}``), in float32."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan
    from refimpl.attention.fast_weights import fast_weight_memory, fast_weight_memory_vjp

    rnd = storer(lowp)
    a, bv, xr = (np.asarray(inp[k], np.float32) for k in ("a", "b_vec", "x_read"))
    b, l, h, p = a.shape
    n = bv.shape[3]
    W0 = _W0(inp, conv)
    h0 = np.zeros((b, h, p, n), np.float32) if W0 is None else np.asarray(W0, np.float32)
    dy = rnd(cotangents["y"])
    dl = cotangents.get("W_last")
    sl = lambda z, t: z[:, t:t + 1]  # noqa: E731

    def fwd(t, W):
        return fast_weight_memory(sl(a, t), sl(bv, t), sl(xr, t), initial_state=W, return_final_state=True)[1]

    def vjp(t, W, dW):
        g = fast_weight_memory_vjp(sl(a, t), sl(bv, t), sl(xr, t), dy=sl(dy, t), d_final_state=dW, initial_state=W)
        return g, g["initial_state"]

    steps, dW0 = storing_reverse_scan(l, h0, None if dl is None else np.asarray(dl, np.float32), fwd, vjp, lowp)
    out = {"a": concat_steps(steps, "a", 1, a.shape), "b_vec": concat_steps(steps, "b_vec", 1, bv.shape),
           "x_read": concat_steps(steps, "x_read", 1, xr.shape)}
    if W0 is not None:
        out["W0"] = dW0
    return out


def reference_vjp(inp, conv, cotangents, lowp: Optional[str] = None):
    """refimpl's reverse scan; ``lowp`` (the harness's low-precision baseline): :func:`storing_vjp`."""
    from refimpl.attention.fast_weights import fast_weight_memory_vjp

    if lowp is not None:
        return storing_vjp(inp, conv, cotangents, lowp)
    W0 = _W0(inp, conv)
    g = fast_weight_memory_vjp(inp["a"], inp["b_vec"], inp["x_read"], dy=cotangents["y"],
                               d_final_state=cotangents.get("W_last"), initial_state=W0)
    out = {"a": g["a"], "b_vec": g["b_vec"], "x_read": g["x_read"]}
    if W0 is not None:
        out["W0"] = g["initial_state"]
    return out


GRAD = register_grad(GradSpec(
    op=OP, wrt=WRT, forward=grad_forward, bounds=grad_bounds, cases=grad_cases, reference_vjp=reference_vjp,
    outputs=("y", "W_last"), sample=grad_sample, forward_error=grad_forward_error, module=__name__,
    notes="forward: oracles.fast_weights_grad_forward (float64 closed sum); bound: componentwise, depth "
          "L + max(n, p) + 2 on the adjoints run on absolute values",
))
