"""refimpl.ssm.ssd: Mamba-2's state space duality (SSD); the math is derived in README.md in this folder.

Entry points:

* :func:`ssd_scan` -- ``(x, dt, A, B, C, D, z) -> y`` (or ``(y, final_state)``), any view and backend.
* :func:`ssd_step` -- one decode step ``(state, x_t, dt_t, A, B_t, C_t, D, z_t) -> (y_t, state_t)``.
* :func:`ssd_scan_vjp` -- the backward pass: ``(forward's arguments, dy, d_final_state) -> {argument: gradient}``.

Public helper: :func:`effective_dt`.
"""
from __future__ import annotations

import math

from refimpl._dispatch import register
from refimpl._validate import check_int
from refimpl.ssm.ssd.reference import effective_dt

__all__ = ["ssd_scan", "ssd_step", "ssd_scan_vjp", "IMPLEMENTATIONS", "VJP_IMPLEMENTATIONS", "effective_dt"]

IMPLEMENTATIONS = register("refimpl.ssm.ssd_scan", {
    ("recurrent", "numpy"): "refimpl.ssm.ssd.reference:recurrent",
    ("quadratic", "numpy"): "refimpl.ssm.ssd.reference:quadratic",
    ("chunked", "numpy"): "refimpl.ssm.ssd.reference:chunked",
    ("chunked", "numba"): "refimpl.ssm.ssd.numba:ssd_chunked_numba",
    # the GPU twin: Mamba-2's four steps as four kernels (decays, chunk states, state passing, chunk scan)
    ("chunked", "cuda"): "refimpl.ssm.ssd.cuda:ssd_chunked_cuda",
})

VJP_IMPLEMENTATIONS = register("refimpl.ssm.ssd_scan_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.ssd.backward:recurrent_vjp",
    ("quadratic", "numpy"): "refimpl.ssm.ssd.backward:quadratic_vjp",
    ("chunked", "numpy"): "refimpl.ssm.ssd.backward:chunked_vjp",
})

_STEP = register("refimpl.ssm.ssd_step", {("step", "numpy"): "refimpl.ssm.ssd.reference:step"})


def ssd_scan(x, dt, A, B, C, D=None, z=None, *, view: str = "chunked", backend: str = "numpy", dt_bias=None,
             dt_softplus: bool = False, dt_limit=(0.0, math.inf), initial_state=None, return_final_state: bool = False,
             seq_idx=None, chunk: int = 64, allow_unstable: bool = False):
    r"""Mamba-2's SSD: ``S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t + D x_t``, times ``silu(z_t)``.

    ``dt_t = clamp(softplus(dt_t + dt_bias), *dt_limit)`` (each part optional); ``seq_idx`` packs sequences
    in a row (the state restarts where it changes).

    Shapes: ``x``, ``z`` ``(b l h p)``; ``dt`` ``(b l h)``; ``A``, ``dt_bias`` ``(h,)``; ``B``, ``C`` ``(b l g n)``
    with ``g`` dividing ``h``; ``D`` ``(h,)`` or ``(h, p)``; ``initial_state`` ``(b h p n)``; ``seq_idx`` ``(b l)``
    integers.  Returns ``y`` ``(b l h p)``, or ``(y, final_state)`` with ``return_final_state=True``.

    ``view``: ``"chunked"`` (Mamba-2's algorithm, chunks of ``chunk`` steps; the default), ``"recurrent"``
    (the linear recurrence), ``"quadratic"`` (the attention form); ``backend``: ``"numpy"`` or ``"numba"``
    (view ``"chunked"``).  An unsupported pair is a ``ValueError`` listing the pairs that exist.
    """
    fn = IMPLEMENTATIONS.get(view, backend)
    kw = dict(dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit, initial_state=initial_state,
              seq_idx=seq_idx, return_final_state=return_final_state, allow_unstable=allow_unstable)
    chunk = check_int(chunk, "chunk", minimum=1)
    if view == "chunked":
        kw["chunk"] = chunk
    return fn(x, dt, A, B, C, D, z, **kw)


def ssd_step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, *, backend: str = "numpy", dt_bias=None,
             dt_softplus: bool = False, dt_limit=(0.0, math.inf), allow_unstable: bool = False):
    r"""One SSD decode step: ``(state, x_t, ...) -> (y_t, state_t)``.

    ``state`` ``(b h p n)``; ``x_t``, ``z_t`` ``(b h p)``; ``dt_t`` ``(b h)``; ``B_t``, ``C_t`` ``(b g n)``.  Returns
    ``y_t`` ``(b h p)`` and the next state ``(b h p n)``; the same arithmetic as one step of the recurrent view.
    """
    return _STEP.get("step", backend)(state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias=dt_bias, dt_softplus=dt_softplus,
                                      dt_limit=dt_limit, allow_unstable=allow_unstable)


def ssd_scan_vjp(x, dt, A, B, C, D=None, z=None, *, dy, d_final_state=None, dt_bias=None, dt_softplus: bool = False,
                 dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, chunk: int = 64,
                 allow_unstable: bool = False, view: str = "chunked", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`ssd_scan`: the gradient of ``<y, dy> + <final_state, d_final_state>``.

    The forward's arguments (same names, shapes and defaults), then the cotangents: ``dy`` ``(b l h p)`` (required)
    and ``d_final_state`` ``(b h p n)`` (``None``: the final state is not an output).  Returns a dict
    ``{argument name: gradient}`` for ``x``, ``dt``, ``A``, ``B``, ``C`` and each of ``D``, ``z``, ``dt_bias``,
    ``initial_state`` that was given, each in its input's shape and the working dtype (``seq_idx`` is integer:
    no gradient).
    The adjoint of the scan is a reverse scan (see :mod:`refimpl.ssm.ssd.backward`); the clamp passes the
    gradient where ``lo <= v <= hi`` (both ends inclusive), softplus' derivative is the logistic below the
    threshold 20 and 1 above it, and no gradient crosses a ``seq_idx`` boundary.

    ``view``: ``"chunked"`` (Mamba-2's four steps in reverse; the default), ``"recurrent"`` (the reverse loop),
    ``"quadratic"`` (the transpose of the masked matrix); ``backend``: ``"numpy"``.
    """
    fn = VJP_IMPLEMENTATIONS.get(view, backend)
    kw = dict(dy=dy, d_final_state=d_final_state, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
              initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
    chunk = check_int(chunk, "chunk", minimum=1)
    if view == "chunked":
        kw["chunk"] = chunk
    return fn(x, dt, A, B, C, D, z, **kw)
