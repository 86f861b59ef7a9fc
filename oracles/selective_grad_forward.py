r"""Ground truth for the gradient of the selective scan (S6): the derived rounding bound of a backward pass.

The gradient itself is never computed here: the ground truth of a gradient is the central differences
(:mod:`oracles.gradients`) of the float64 forward :func:`oracles.selective.s6_solve` (one banded solve, no loop
over time).  This module bounds how far a *computed* backward (a reverse scan run in some dtype) may be from the
exact gradient, componentwise, in the sequence-first layout of :mod:`oracles.selective` (``u, delta, z (b l d)``,
``A (d n)``, ``B``/``C`` fixed ``(d n)`` / variable ``(b l n)`` / grouped ``(b l g n)``, ``initial_state (b d n)``).
Nothing here imports refimpl.

Magnitudes (:func:`s6_vjp_magnitude`): the adjoint equations run on absolute values (every term of every gradient
counted with its absolute value, so a cancellation inside a gradient cannot make the bound small)::

    H_t = |A_bar_t| H_{t-1} + |B_bar_t u_t|                   H_{-1} = |h0|
    G_t = |A_bar_{t+1}| G_{t+1} + c |C_t| |dpre_t|             G_{l-1} also + |d_final_state|
    M_C += c H_t |dpre_t|,   M_w = |A_bar_t| H_{t-1} G_t (+ zoh: Delta |phi1'| |B| |u| G_t)
    M_B += Delta |phi1| |u| G_t,   M_u = |D| |dpre| + sum_n |B_bar| G_t,   M_Delta = sum_n |A| M_w + |phi1 B| |u| G_t
    M_A = sum Delta M_w,   M_delta = |softplus'| M_Delta,   M_bias = sum M_delta,   M_h0 = |A_bar_0| G_0
    M_D = sum |dpre| |u|,  M_z = |dout| (|y| + |D u|) |silu'(z)|     (|dpre| = |dout| |silu(z)|)

with ``c = 2`` for complex ``A`` (``2 Re``) and ``|phi1| = phi1(Re w)`` (``|phi1(w)| <= phi1(Re w)``).

Depth (:func:`s6_vjp_depth`), the longest chain of roundings behind one term, counted from the algorithm
(``k_fn`` = :data:`oracles.tolerance.TRANSCENDENTAL_U` per exp/log1p/expm1/sigmoid):

* the step: ``k_D = 1 + 2 k_fn + 1 + cond`` (the bias add, exp and log1p of softplus, the add's error times the
  condition number ``|x| sigmoid(x) / softplus(x) <= max(1, |x|)``); ``w = Delta A``: one rounding, and an error
  ``e`` in ``w`` is a relative error ``|w| e`` in ``exp(w)``: ``k_a = k_fn + |w|max (k_D + 1)`` per ``A_bar``;
* the recomputed forward states: ``l (k_a + 2) + k_D + 2`` (a multiply-add per step, ``B_bar u``; ZOH adds
  ``phi1``: ``k_fn + 2``); the reverse scan: the same ``l (k_a + 2)`` plus ``c conj(C) dy`` (2) and the gate
  (``k_fn + 4``);
* a parameter term: ``4`` products, ZOH's ``phi1'`` (the degree-17 Horner series: 34, or the quotient:
  ``2 k_fn + 5``), softplus' derivative ``k_fn + 2``, and the sums ``n + b l + d`` (over the state, the batch and
  time, the channels of a variable or grouped ``B``/``C``);
* the chunked view (``chunk = T``) computes each state as ``exp(segment sum of <= T + 1 exponents)`` times a sum
  over ``<= T`` terms: ``2 (T + 1) (1 + |w|max) + 2 T`` more, forward and reverse.

The bound is ``gamma_depth(dtype) M`` (4u for complex data), :func:`oracles.tolerance.componentwise_bound`.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from oracles.tolerance import TRANSCENDENTAL_U, Bound, componentwise_bound

__all__ = ["s6_vjp_magnitude", "s6_vjp_depth", "s6_vjp_bounds"]

_THRESHOLD = 20.0


def _f64(a):
    if a is None:
        return None
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _channels(X, b, l, d):
    """``B``/``C`` as ``(b l d n)`` whatever the layout (grouped: channel ``c`` reads group ``floor(c g / d)``)."""
    X = _f64(X)
    if X.ndim == 2:
        return np.broadcast_to(X, (b, l) + X.shape)
    if X.ndim == 3:
        return np.broadcast_to(X[:, :, None, :], (b, l, d, X.shape[-1]))
    return X[:, :, (np.arange(d) * X.shape[2]) // d, :]


def _to_layout(M, X):
    """A per-channel ``(b l d n)`` magnitude summed to ``X``'s layout."""
    X = np.asarray(X)
    if X.ndim == 2:
        return M.sum(axis=(0, 1))
    if X.ndim == 3:
        return M.sum(axis=2)
    b, l, d, n = M.shape
    g = X.shape[2]
    return M.reshape(b, l, g, d // g, n).sum(axis=3)


def _phi1_abs(x):
    """``phi1(x) = (e^x - 1)/x`` for real ``x`` (1 at 0): an upper bound of ``|phi1(w)|`` at ``x = Re w``."""
    x = np.asarray(x, dtype=np.float64)
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-8
    out[nz] = np.expm1(x[nz]) / x[nz]
    return out


def _dphi1_abs(w):
    """An upper bound of ``|phi1'(w)|``: ``sum_k (k+1) |w|^k / (k+2)!`` (the series' terms in absolute value)."""
    a = np.abs(w)
    return sum((k + 1) * a ** k / math.factorial(k + 2) for k in range(40))


def s6_vjp_magnitude(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                     delta_softplus=False, initial_state=None, discretization="mamba") -> Dict[str, np.ndarray]:
    """The adjoint equations on absolute values (module docstring): ``{input: M}`` for every input given."""
    u = np.asarray(u, dtype=np.float64)
    b, l, d = u.shape
    A = _f64(A)
    n = A.shape[1]
    cplx = np.iscomplexobj(A)
    c = 2.0 if cplx else 1.0
    x = np.asarray(delta, dtype=np.float64) + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    if delta_softplus:
        Dt = np.where(x > _THRESHOLD, x, np.logaddexp(0.0, np.minimum(x, _THRESHOLD)))
        sp_grad = np.where(x > _THRESHOLD, 1.0, 1.0 / (1.0 + np.exp(-np.minimum(x, 700.0))))
    else:
        Dt, sp_grad = x, np.ones_like(x)
    Bm, Cm = np.abs(_channels(B, b, l, d)), np.abs(_channels(C, b, l, d))
    w = Dt[..., None] * A
    aA_bar = np.exp(w.real)
    ph = _phi1_abs(w.real) if discretization == "zoh" else np.ones_like(aA_bar)
    aBbar = Dt[..., None] * ph * Bm
    au = np.abs(u)
    H = np.zeros((b, l + 1, d, n))
    if initial_state is not None:
        H[:, 0] = np.abs(np.asarray(initial_state))
    for t in range(l):
        H[:, t + 1] = aA_bar[:, t] * H[:, t] + aBbar[:, t] * au[:, t, :, None]
    Y = c * np.sum(Cm * H[:, 1:], axis=-1)
    adout = np.abs(np.asarray(dy, dtype=np.float64))
    if z is not None:
        zz = np.asarray(z, dtype=np.float64)
        s = 1.0 / (1.0 + np.exp(-zz))
        adpre = adout * np.abs(zz * s)
        Mz = adout * (Y + (0.0 if D is None else np.abs(np.asarray(D, np.float64)) * au)) * np.abs(s * (1 + zz * (1 - s)))
    else:
        adpre, Mz = adout, None
    G = np.zeros((b, l, d, n))
    g = np.zeros((b, d, n)) if d_final_state is None else np.abs(np.asarray(d_final_state))
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            g = aA_bar[:, t + 1] * g
        g = g + c * Cm[:, t] * adpre[:, t, :, None]
        G[:, t] = g
    Mh0 = aA_bar[:, 0] * G[:, 0] if l else g
    MC = c * H[:, 1:] * adpre[..., None]
    Mw = aA_bar * H[:, :-1] * G
    if discretization == "zoh":
        Mw = Mw + Dt[..., None] * _dphi1_abs(w) * Bm * au[..., None] * G
    MB = Dt[..., None] * ph * au[..., None] * G
    Mu = np.sum(aBbar * G, axis=-1) + (0.0 if D is None else np.abs(np.asarray(D, np.float64)) * adpre)
    MDelta = np.sum(np.abs(A) * Mw, axis=-1) + np.sum(ph * Bm * au[..., None] * G, axis=-1)
    Mdelta = sp_grad * MDelta
    out = {"u": Mu, "delta": Mdelta, "A": np.sum(Dt[..., None] * Mw, axis=(0, 1)), "B": _to_layout(MB, B),
           "C": _to_layout(MC, C)}
    if D is not None:
        out["D"] = np.sum(adpre * au, axis=(0, 1))
    if z is not None:
        out["z"] = Mz
    if delta_bias is not None:
        out["delta_bias"] = Mdelta.sum(axis=(0, 1))
    if initial_state is not None:
        out["initial_state"] = Mh0
    return out


def s6_vjp_depth(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False,
                 discretization="mamba", view="recurrent", chunk: Optional[int] = None, **_ignored) -> float:
    """The longest rounding chain behind one gradient term (module docstring)."""
    u = np.asarray(u)
    b, l, d = u.shape
    A = np.asarray(A)
    n = A.shape[1]
    k_fn = TRANSCENDENTAL_U
    x = np.asarray(delta, dtype=np.float64) + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    if delta_softplus:
        Dt = np.where(x > _THRESHOLD, x, np.logaddexp(0.0, np.minimum(x, _THRESHOLD)))
        cond = max(1.0, float(np.max(np.abs(x), initial=0.0)))
        k_D = 1.0 + 2.0 * k_fn + 1.0 + cond
    else:
        Dt = x
        k_D = 1.0
    wmax = float(np.max(np.abs(Dt[..., None] * A), initial=0.0))
    k_a = k_fn + wmax * (k_D + 1.0)
    zoh = discretization == "zoh"
    fwd = l * (k_a + 2.0) + k_D + 2.0 + ((k_fn + 2.0 + wmax * (k_D + 1.0)) if zoh else 0.0)
    rev = l * (k_a + 2.0) + 2.0 + (k_fn + 4.0 if z is not None else 0.0)
    par = 4.0 + ((34.0 + 2.0 * k_fn + 5.0) if zoh else 0.0) + (k_fn + 2.0 if delta_softplus else 0.0) + n + b * l + d
    depth = fwd + rev + par
    if view in ("chunked", "numba_chunked") and chunk:
        T = min(int(chunk), max(l, 1))
        depth += 2.0 * (2.0 * (T + 1) * (1.0 + wmax) + 2.0 * T)
    return depth


def s6_vjp_bounds(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                  delta_softplus=False, initial_state=None, discretization="mamba", dtype=np.float64,
                  view="recurrent", chunk=None) -> Dict[str, Bound]:
    """``{input: Bound}``: ``gamma_depth(dtype) M`` of a backward run in ``dtype`` (the oracle is differences, whose
    own error the caller adds)."""
    kw = dict(delta_bias=delta_bias, delta_softplus=delta_softplus, discretization=discretization)
    M = s6_vjp_magnitude(u, delta, A, B, C, D, z, dy=dy, d_final_state=d_final_state, initial_state=initial_state,
                         **kw)
    depth = s6_vjp_depth(u, delta, A, B, C, D, z, view=view, chunk=chunk, **kw)
    cplx = any(v is not None and np.iscomplexobj(v) for v in (A, B, C, initial_state, d_final_state))
    what = (f"the S6 adjoint on |inputs| x gamma_depth, depth {depth:.0f} ({view} view; oracles.selective_grad_forward)")
    return {k: componentwise_bound(v, depth, dtype, oracle_dtype=None, complex_ops=cplx, what=what)
            for k, v in M.items()}
