"""refimpl.ssm.selective: Mamba's selective scan (S6); the math is derived in README.md in this folder.

Entry points:

* :func:`selective_scan` -- ``(u, delta, A, B, C, D, z) -> out`` (or ``(out, final_state)``), any view and backend.
* :func:`selective_step` -- one decode step ``(state, u_t, delta_t, A, B_t, C_t, D, z_t) -> (out_t, state_t)``.
* :func:`selective_scan_vjp` -- the backward pass: ``{input name: gradient}`` for the cotangents ``dy`` (of ``out``)
  and ``d_final_state`` (of the final state), any backward view and backend.

Public helpers: :func:`effective_delta`, :func:`softplus`, :func:`silu`, :func:`segsum`.
"""
from __future__ import annotations

from refimpl._dispatch import register
from refimpl._validate import check_int
from refimpl.ssm.selective.reference import (DISCRETIZATIONS, SOFTPLUS_THRESHOLD, effective_delta, segsum, silu,
                                             softplus)

__all__ = ["selective_scan", "selective_step", "selective_scan_vjp", "VJP_IMPLEMENTATIONS", "IMPLEMENTATIONS", "effective_delta", "softplus", "silu", "segsum",
           "SOFTPLUS_THRESHOLD", "DISCRETIZATIONS"]

IMPLEMENTATIONS = register("refimpl.ssm.selective_scan", {
    ("recurrent", "numpy"): "refimpl.ssm.selective.reference:recurrent",
    ("scan", "numpy"): "refimpl.ssm.selective.reference:scan",
    ("chunked", "numpy"): "refimpl.ssm.selective.reference:chunked",
    # the fused kernel evaluates the recurrence in order (exponentials in blocks of time, the state step by step)
    ("recurrent", "numba"): "refimpl.ssm.selective.numba:selective_scan_numba",
    # the GPU twin: one block per (batch, channel), a Kogge-Stone scan over each chunk of `chunk` steps per state
    ("chunked", "cuda"): "refimpl.ssm.selective.cuda:selective_scan_cuda",
})

_STEP = register("refimpl.ssm.selective_step", {("step", "numpy"): "refimpl.ssm.selective.reference:step"})


def selective_scan(u, delta, A, B, C, D=None, z=None, *, view: str = "recurrent", backend: str = "numpy",
                   delta_bias=None, delta_softplus: bool = False, discretization: str = "mamba", initial_state=None,
                   return_final_state: bool = False, chunk: int = 64, allow_unstable: bool = False):
    r"""Mamba's selective scan (S6).

    ``Delta_t = softplus(delta_t + delta_bias)``, ``h_t = exp(Delta_t A) h_{t-1} + B_bar_t u_t`` (``B_bar_t =
    Delta_t B_t``, or ``Delta_t phi1(Delta_t A) B_t`` with ``discretization="zoh"``), ``y_t = C_t . h_t``
    (``2 Re`` for complex ``A``), ``out_t = (y_t + D u_t) silu(z_t)``.

    Shapes: ``u``, ``delta``, ``z`` ``(b l d)``; ``A`` ``(d n)``; ``B``, ``C`` fixed ``(d n)``, variable
    ``(b l n)`` or grouped ``(b l g n)``; ``D``, ``delta_bias`` ``(d,)``; ``initial_state`` ``(b d n)``.
    Returns ``out`` ``(b l d)``, or ``(out, final_state)`` with ``return_final_state=True``.

    ``view``: ``"recurrent"`` (the literal loop), ``"scan"`` (parallel prefix), ``"chunked"`` (segment sums
    within chunks of ``chunk`` steps); ``backend``: ``"numpy"`` (the reference) or ``"numba"`` (the fused
    kernel, view ``"recurrent"``).  An unsupported pair is a ``ValueError`` listing the pairs that exist.
    """
    fn = IMPLEMENTATIONS.get(view, backend)
    kw = dict(delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=initial_state,
              return_final_state=return_final_state, discretization=discretization, allow_unstable=allow_unstable)
    chunk = check_int(chunk, "chunk", minimum=1)
    if view == "chunked":
        kw["chunk"] = chunk
    return fn(u, delta, A, B, C, D, z, **kw)


def selective_step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, *, backend: str = "numpy", delta_bias=None,
                   delta_softplus: bool = False, discretization: str = "mamba", allow_unstable: bool = False):
    r"""One decode step of the selective scan: ``(state, u_t, ...) -> (out_t, state_t)``.

    ``state`` ``(b d n)``; ``u_t``, ``delta_t``, ``z_t`` ``(b d)``; ``B_t``, ``C_t`` variable ``(b n)`` or grouped
    ``(b g n)`` (a fixed ``(d n)`` matrix: ``np.broadcast_to(B, (b, d, n))``).  Returns ``out_t`` ``(b d)`` and
    the next state ``(b d n)``; the same arithmetic as one step of the recurrent view.
    """
    return _STEP.get("step", backend)(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias=delta_bias,
                                      delta_softplus=delta_softplus, discretization=discretization,
                                      allow_unstable=allow_unstable)


VJP_IMPLEMENTATIONS = register("refimpl.ssm.selective_scan_vjp", {
    ("recurrent", "numpy"): "refimpl.ssm.selective.backward:recurrent_vjp",
    ("chunked", "numpy"): "refimpl.ssm.selective.backward:chunked_vjp",
    # the Numba backward kernel: the forward states recomputed and kept per channel, then the reverse scan
    ("recurrent", "numba"): "refimpl.ssm.selective.numba_backward:selective_scan_vjp_numba",
    ("chunked", "numba"): "refimpl.ssm.selective.numba_backward:selective_scan_vjp_numba_chunked",
})


def selective_scan_vjp(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                       delta_softplus: bool = False, discretization: str = "mamba", initial_state=None,
                       chunk: int = 64, allow_unstable: bool = False, view: str = "recurrent",
                       backend: str = "numpy"):
    r"""The vector-Jacobian product (backward pass) of :func:`selective_scan`.

    The forward's arguments, then the cotangents: ``dy`` of ``out`` ``(b l d)`` (required) and ``d_final_state``
    of the final state ``(b d n)`` (optional: passing it means the forward returns the final state).  Returns
    ``{name: gradient}`` for ``u``, ``delta``, ``A``, ``B``, ``C`` and each of ``D``, ``z``, ``delta_bias``,
    ``initial_state`` that was given, each with its input's shape in the working dtype (real for a real input;
    float32 only when every float input is float32).  Complex inputs: the gradient is
    ``dL/dRe + i dL/dIm`` (Mamba's and PyTorch's convention).

    ``view``: ``"recurrent"`` (the reverse loop) or ``"chunked"`` (the chunked adjoint, chunks of ``chunk``
    steps); ``backend``: ``"numpy"`` (the literal adjoints, :mod:`refimpl.ssm.selective.backward`) or ``"numba"``
    (the kernel, :mod:`refimpl.ssm.selective.numba_backward`).  The adjoint equations: README.md, "Backward".
    """
    fn = VJP_IMPLEMENTATIONS.get(view, backend)
    chunk = check_int(chunk, "chunk", minimum=1)
    kw = dict(dy=dy, d_final_state=d_final_state, delta_bias=delta_bias, delta_softplus=delta_softplus,
              discretization=discretization, initial_state=initial_state, allow_unstable=allow_unstable)
    if view == "chunked":
        kw["chunk"] = chunk
    return fn(u, delta, A, B, C, D, z, **kw)
