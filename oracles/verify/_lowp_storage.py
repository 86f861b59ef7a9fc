r"""The storing backward of the low-precision gradient baseline (``GradSpec.reference_vjp(..., lowp=)``).

A float16/bfloat16 kernel computes in float32 (its matmuls and sums accumulate in float32) but **stores** its
intermediates in the dtype: FlashAttention and torch's math path round the recomputed probabilities ``P`` and the
score cotangent ``dS`` before the matmuls that read them, and the saved output ``O`` is a dtype tensor; a scan
written as a loop in the dtype rounds its state ``h_t`` (forward) and its adjoint state ``dh_t`` (the reverse scan)
at every step.  The baseline of :mod:`oracles.verify.grad_harness` is our backward run under that model:

* :func:`storer` ``(lowp) -> rnd``: ``rnd(x)`` rounds a float32 array to the dtype and back to float32 (the value a
  kernel reads back from its store); ``lowp="float32"`` or ``None`` is the identity (the harness's check of the
  storing path: it must then pass the float32 bound like our plain backward);
* :func:`storing_reverse_scan`: the forward scan step by step with the state rounded after every step, then the
  reverse scan (the adjoint of a scan is itself a reverse scan) step by step with the adjoint state rounded after
  every step, each step being **refimpl's own VJP on a one-step sequence** (``initial_state = h_t``,
  ``d_final_state = dh_{t+1}``; it returns the step inputs' gradients and ``dh_t``), so nothing of the adjoint is
  re-derived here.

The arithmetic inside a step is refimpl's float32 arithmetic; only the stores are rounded.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from oracles.verify.frameworks import lowp_dtype

__all__ = ["storer", "storing_reverse_scan", "concat_steps", "sum_steps"]


def storer(lowp: Optional[str]) -> Callable[[Any], Any]:
    """``rnd(x)``: ``x`` (float32, or complex64 kept as is) stored in ``lowp`` and read back as float32."""
    if lowp in (None, "float32"):
        return lambda x: None if x is None else np.asarray(x, dtype=np.float32) if not np.iscomplexobj(x) \
            else np.asarray(x)
    dt = lowp_dtype(lowp)

    def rnd(x):
        if x is None:
            return None
        x = np.asarray(x)
        if np.iscomplexobj(x):  # complex inputs do not reach the low-precision cases (they are skipped)
            return x
        return x.astype(np.float32).astype(dt).astype(np.float32)

    return rnd


def storing_reverse_scan(L: int, h0: Any, d_last: Optional[Any],
                         fwd_step: Callable[[int, np.ndarray], np.ndarray],
                         vjp_step: Callable[[int, np.ndarray, np.ndarray], Tuple[Dict[str, Any], np.ndarray]],
                         lowp: Optional[str]) -> Tuple[List[Dict[str, Any]], np.ndarray]:
    r"""The forward states and the reverse scan, each state stored in ``lowp`` after every step.

    ``fwd_step(t, h_t) -> h_{t+1}`` (refimpl's forward on step ``t`` from the state ``h_t``);
    ``vjp_step(t, h_t, dh_{t+1}) -> ({step input: grad}, dh_t)`` (refimpl's VJP on step ``t``).  Returns the
    per-step gradients (index ``t``) and ``dh_0``, the initial state's gradient::

        h_{t+1} = rnd(step_t(h_t))                        t = 0 .. L-1  (forward scan, stored)
        (g_t, dh_t) = step_t^T(h_t; dh_{t+1}),  dh_t <- rnd(dh_t)   t = L-1 .. 0  (reverse scan, stored)
    """
    r0 = storer(lowp)
    # a state may be one array or a dict of arrays (e.g. linear attention's (S, u)): each is stored
    rnd = (lambda h: {k: r0(v) for k, v in h.items()}) if isinstance(h0, dict) else r0  # noqa: E731
    hs = [rnd(h0)]
    for t in range(L):
        hs.append(rnd(fwd_step(t, hs[t])))
    if d_last is None:
        d_last = ({k: np.zeros_like(v) for k, v in hs[0].items()} if isinstance(h0, dict) else np.zeros_like(hs[0]))
    g = rnd(d_last)
    grads: List[Dict[str, Any]] = [None] * L  # type: ignore[list-item]
    for t in reversed(range(L)):
        gt, dh = vjp_step(t, hs[t], g)
        grads[t] = gt
        g = rnd(dh)
    return grads, g


def concat_steps(grads: List[Dict[str, Any]], name: str, axis: int, empty_shape: tuple) -> np.ndarray:
    """The per-step gradients of a time-indexed input joined along its time axis (``empty_shape`` at L = 0)."""
    if not grads:
        return np.zeros(empty_shape, dtype=np.float32)
    return np.concatenate([np.asarray(g[name], dtype=np.float32) for g in grads], axis=axis)


def sum_steps(grads: List[Dict[str, Any]], name: str, shape: tuple, lowp: Optional[str] = None) -> np.ndarray:
    """The per-step gradients of a time-shared input (``A``, ``D``, a bias) accumulated in float32 arithmetic into
    a gradient buffer stored in ``lowp`` (a framework's gradient of a ``lowp`` parameter used at every step is a
    ``lowp`` tensor that each step's contribution is added to): ``acc <- rnd(acc + rnd(g_t))``."""
    rnd = storer(lowp)
    acc = np.zeros(shape, dtype=np.float32)
    for g in grads:
        acc = rnd(acc + rnd(np.asarray(g[name], dtype=np.float32)))
    return acc
