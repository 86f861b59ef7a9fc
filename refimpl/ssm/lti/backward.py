r"""The backward pass (vector-Jacobian products) of the discrete linear SSM, written as adjoint recurrences.

Forward (:mod:`refimpl.ssm.lti.reference`)::

    h_{-1} = initial_state (or 0),   h_t = A_bar_t h_{t-1} + B_bar_t x_t,   y_t = C h_t + D x_t

Given the cotangent ``dy`` ``(b l d p)`` of ``y`` (and ``d_final_state`` ``(b d n)`` of ``h_{l-1}`` when the
forward is taken to return it), each function returns ``{name: gradient}`` for ``A_bar, B_bar, C, x`` and for
``D`` and ``initial_state`` when they are given.  Shapes: as the forward (``A_bar`` ``(d n n)`` / ``(d n)``
diagonal / ``(l d n n)`` / ``(l d n)`` time-varying, ``B_bar`` ``(d n m)`` / ``(l d n m)``, ``C`` ``(d p n)``,
``D`` ``(d p m)``, ``x`` ``(b l d m)``, ``initial_state`` ``(b d n)``); each gradient has its input's shape and dtype.

Complex convention (PyTorch's; Mamba's for its complex ``A``)
---------------------------------------------------------------
For a real loss ``L`` the gradient of a complex input ``z = a + i b`` is ``dL/da + i dL/db``; the cotangent of
a complex output ``y`` is given in the same convention (``L = Re sum conj(dy) y``).  For the holomorphic maps of
this system that makes every adjoint a *conjugate* transpose: the gradient of ``u`` in ``y = M u`` is
``M^H dy``.  A real input gets the real part of its complex gradient (a real ``x`` of a complex system: the
imaginary direction is not an input).

The adjoint (``g_t = dL/dh_t``, the state's cotangent)
--------------------------------------------------------
**The adjoint of a scan is itself a reverse scan**: ``g_t`` runs from ``t = l - 1`` down to 0,

    g_{l-1} = d_final_state + C^H dy_{l-1},       g_t = A_bar_{t+1}^H g_{t+1} + C^H dy_t,

and the parameters' gradients are the outer products of the cotangent with the forward's operands:
``dA_bar_t = sum_b g_t h_{t-1}^H`` (``g_t conj(h_{t-1})`` diagonal), ``dB_bar_t = sum_b g_t x_t^H``,
``dC = sum_{b,t} dy_t h_t^H``, ``dD = sum_{b,t} dy_t x_t^H``, ``dx_t = B_bar_t^H g_t + D^H dy_t``,
``d initial_state = A_bar_0^H g_0`` (``d_final_state`` when ``l = 0``).  A time-invariant system sums its
``dA_bar_t``, ``dB_bar_t`` over ``t``.

Views
-----
* :func:`recurrent_vjp` -- the forward loop storing ``h_t``, then the reverse scan above (time-varying too).
* :func:`convolution_vjp` -- the adjoint of the convolution view ``y_t = sum_k K_k x_{t-k} + D x_t +
  C A_bar^{t+1} h_{-1}``: ``dK_k = sum_{b, t>=k} dy_t x_{t-k}^H`` (the correlation of the cotangent with the
  input), ``dx_j = sum_{t>=j} K_{t-j}^H dy_t`` (the correlation of the cotangent with the kernel), then the
  kernel's own adjoint: with ``P_k = A_bar^k B_bar`` (``K_k = C P_k``) the reverse scan over the lag
  ``gP_k = C^H dK_k + A_bar^H gP_{k+1}`` gives ``dA_bar = sum_k gP_{k+1} P_k^H``, ``dB_bar = gP_0``,
  ``dC = sum_k dK_k P_k^H``; the initial state's powers ``r_t = A_bar^{t+1} h_{-1}`` have their own reverse
  scan, and the final state ``sum_j P_{l-1-j} x_j + A_bar^l h_{-1}`` adds ``d_final_state x_{l-1-k}^H`` to
  ``P_k``'s cotangent.  Time-invariant systems only.
* :func:`chunked_vjp` -- the adjoint of the chunked view, **a reverse scan over the chunks**: the forward passes
  the states ``h_s`` entering each chunk; then, last chunk first, the chunk's convolution adjoint with ``h_s`` as
  its initial state and the carried cotangent ``g`` of the state leaving it as its final-state cotangent gives the
  chunk's shares of ``dA_bar, dB_bar, dC, dD``, its ``dx`` and the cotangent of ``h_s`` -- the ``g`` carried to
  the chunk before (``d initial_state`` after the first chunk).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from refimpl._validate import as_float_array, check_int, check_shape
from refimpl.ssm.lti.reference import validate_system

__all__ = ["recurrent_vjp", "convolution_vjp", "chunked_vjp"]  # validate_cotangents: the views' shared check


# ---------------------------------------------------------------------------------------------- helpers

def validate_cotangents(dy, d_final_state, dims, dtype):
    """Check ``dy`` ``(b l d p)`` and ``d_final_state`` ``(b d n)`` like inputs; return them in the working dtype.

    A real system's outputs are real: a complex cotangent enters the loss ``Re sum conj(dy) y`` by its real part only,
    which is what is kept.
    """
    cplx = np.dtype(dtype).kind == "c"
    dy = as_float_array(dy, "dy", ndim=4)
    if not cplx:
        dy = dy.real
    check_shape(dy, "dy", (dims["b"], dims["l"], dims["d"], dims["p"]), "(b l d p)", src="the shape of y: b, l, d from x, p from C")
    dy = dy.astype(np.result_type(dy, dtype), copy=False)
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=3)
        if not cplx:
            d_final_state = d_final_state.real
        check_shape(d_final_state, "d_final_state", (dims["b"], dims["d"], dims["n"]), "(b d n)",
                    src="the shape of the final state: b, d from x, n from A_bar")
        d_final_state = d_final_state.astype(np.result_type(d_final_state, dtype), copy=False)
    return dy, d_final_state


def _like(grad: np.ndarray, original) -> np.ndarray:
    """The gradient of a real input is the real part (the complex convention); the dtype stays the working one (float32
    only when every input and cotangent is float32: never a downcast)."""
    if np.asarray(original).dtype.kind != "c":
        grad = grad.real
    return np.ascontiguousarray(grad)


def _AH(A: np.ndarray, g: np.ndarray, diagonal: bool) -> np.ndarray:
    """``A^H g`` for a state cotangent ``g`` ``(b d n)`` and ``A`` ``(d n n)`` or its diagonal ``(d n)``."""
    if diagonal:
        return np.conj(A)[None] * g
    return np.einsum("dji,bdj->bdi", np.conj(A), g)


def _apply(A: np.ndarray, h: np.ndarray, diagonal: bool) -> np.ndarray:
    """``A h`` for a state ``h`` ``(b d n)``."""
    if diagonal:
        return A[None] * h
    return np.einsum("dij,bdj->bdi", A, h)


def _outer(g: np.ndarray, h: np.ndarray, diagonal: bool) -> np.ndarray:
    """``sum_b g h^H``: ``(d n n)``, or its diagonal ``sum_b g conj(h)`` ``(d n)``."""
    if diagonal:
        return np.einsum("bdn,bdn->dn", g, np.conj(h))
    return np.einsum("bdi,bdj->dij", g, np.conj(h))


def _outputs(grads: Dict[str, np.ndarray], originals: Dict[str, object]) -> Dict[str, np.ndarray]:
    return {k: _like(v, originals[k]) for k, v in grads.items() if originals.get(k) is not None}


# ---------------------------------------------------------------------------------------------- views

def recurrent_vjp(A_bar, B_bar, C, D, x, *, dy, d_final_state=None, initial_state=None, diagonal: bool = False):
    r"""The VJP of :func:`refimpl.ssm.lti.reference.recurrent`: the forward loop, then **the reverse scan**.

    ``g_{l-1} = d_final_state + C^H dy_{l-1}``, ``g_t = A_bar_{t+1}^H g_{t+1} + C^H dy_t`` (``t = l-1 .. 0``);
    ``dA_bar_t = sum_b g_t h_{t-1}^H``, ``dB_bar_t = sum_b g_t x_t^H``, ``dC = sum dy_t h_t^H``,
    ``dD = sum dy_t x_t^H``, ``dx_t = B_bar_t^H g_t + D^H dy_t``, ``d initial_state = A_bar_0^H g_0``.
    Time-varying ``A_bar`` ``(l d n n)``/``(l d n)`` (and ``B_bar`` ``(l d n m)``) keep one gradient per step.
    Shapes and the complex convention: the module docstring.  Returns a dict keyed by the forward's names.
    """
    originals = dict(A_bar=A_bar, B_bar=B_bar, C=C, D=D, x=x, initial_state=initial_state)
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal)
    dy, dhf = validate_cotangents(dy, d_final_state, dims, x.dtype)
    b, l, d, n = dims["b"], dims["l"], dims["d"], dims["n"]
    tv, tvB = dims["tv"], B_bar.ndim == 4
    wdt = np.result_type(x.dtype, dy.dtype, *([] if dhf is None else [dhf.dtype]))
    # forward, storing every state: hs[t + 1] = h_t, hs[0] = h_{-1}
    hs = np.zeros((l + 1, b, d, n), dtype=x.dtype)
    if s0 is not None:
        hs[0] = s0
    for t in range(l):
        A_t = A_bar[t] if tv else A_bar
        B_t = B_bar[t] if tvB else B_bar
        # h_t = A_bar_t h_{t-1} + B_bar_t x_t
        hs[t + 1] = _apply(A_t, hs[t], diagonal) + np.einsum("dnm,bdm->bdn", B_t, x[:, t])
    dA = np.zeros(A_bar.shape, dtype=wdt)
    dB = np.zeros(B_bar.shape, dtype=wdt)
    dC = np.zeros(C.shape, dtype=wdt)
    dx = np.zeros(x.shape, dtype=wdt)
    # g_{l-1} starts from d_final_state; the reverse scan adds C^H dy_t at each step
    g = np.zeros((b, d, n), dtype=wdt) if dhf is None else dhf.astype(wdt, copy=True)
    for t in range(l - 1, -1, -1):
        A_t = A_bar[t] if tv else A_bar
        B_t = B_bar[t] if tvB else B_bar
        if t < l - 1:
            A_next = A_bar[t + 1] if tv else A_bar
            # g_t = A_bar_{t+1}^H g_{t+1} + C^H dy_t
            g = _AH(A_next, g, diagonal)
        g = g + np.einsum("dpn,bdp->bdn", np.conj(C), dy[:, t])
        # dC += sum_b dy_t h_t^H
        dC += np.einsum("bdp,bdn->dpn", dy[:, t], np.conj(hs[t + 1]))
        # dA_bar_t = sum_b g_t h_{t-1}^H
        if tv:
            dA[t] = _outer(g, hs[t], diagonal)
        else:
            dA += _outer(g, hs[t], diagonal)
        # dB_bar_t = sum_b g_t x_t^H
        gB = np.einsum("bdn,bdm->dnm", g, np.conj(x[:, t]))
        if tvB:
            dB[t] = gB
        else:
            dB += gB
        # dx_t = B_bar_t^H g_t (+ D^H dy_t below)
        dx[:, t] = np.einsum("dnm,bdn->bdm", np.conj(B_t), g)
    grads = dict(A_bar=dA, B_bar=dB, C=dC, x=dx)
    if D is not None:
        # dD = sum_{b,t} dy_t x_t^H;  dx_t += D^H dy_t
        grads["D"] = np.einsum("bldp,bldm->dpm", dy, np.conj(x))
        dx += np.einsum("dpm,bldp->bldm", np.conj(D), dy)
    if s0 is not None:
        if l == 0:
            # no step: the final state is the initial state
            grads["initial_state"] = g
        else:
            # d initial_state = A_bar_0^H g_0
            grads["initial_state"] = _AH(A_bar[0] if tv else A_bar, g, diagonal)
    return _outputs(grads, originals)


def convolution_vjp(A_bar, B_bar, C, D, x, *, dy, d_final_state=None, initial_state=None, diagonal: bool = False):
    r"""The VJP of the convolution view (direct sums; time-invariant systems only).

    ``dK_k = sum_{b, t>=k} dy_t x_{t-k}^H``; ``dx_j = sum_{t>=j} K_{t-j}^H dy_t + D^H dy_j`` (+ the final
    state's ``P_{l-1-j}^H d_final_state``); the kernel's adjoint, a **reverse scan over the lag** ``k``:
    ``gP_k = C^H dK_k + d_final_state x_{l-1-k}^H + A_bar^H gP_{k+1}``, ``dA_bar += gP_{k+1} P_k^H``,
    ``dB_bar = gP_0``, ``dC = sum_k dK_k P_k^H``; the initial state's reverse scan
    ``gr_t = C^H dy_t + A_bar^H gr_{t+1}`` (``gr_{l-1}`` adds ``d_final_state``), ``dA_bar += gr_t r_{t-1}^H``,
    ``d initial_state = A_bar^H gr_0``, ``dC += sum_t dy_t r_t^H`` with ``r_t = A_bar^{t+1} h_{-1}``.
    """
    originals = dict(A_bar=A_bar, B_bar=B_bar, C=C, D=D, x=x, initial_state=initial_state)
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                      time_varying_ok=False, view="convolution")
    dy, dhf = validate_cotangents(dy, d_final_state, dims, x.dtype)
    b, l, d, n = dims["b"], dims["l"], dims["d"], dims["n"]
    wdt = np.result_type(x.dtype, dy.dtype, *([] if dhf is None else [dhf.dtype]))
    # P_k = A_bar^k B_bar (d n m), K_k = C P_k (d p m), k = 0..l-1
    P = np.zeros((l,) + B_bar.shape, dtype=x.dtype)
    if l:
        P[0] = B_bar
    for k in range(1, l):
        # P_k = A_bar P_{k-1}
        P[k] = A_bar[..., None] * P[k - 1] if diagonal else np.einsum("dij,djm->dim", A_bar, P[k - 1])
    K = np.einsum("dpn,kdnm->kdpm", C, P)
    dx = np.zeros(x.shape, dtype=wdt)
    dK = np.zeros(K.shape, dtype=wdt)
    for k in range(l):
        # dK_k = sum_b sum_{t>=k} dy_t x_{t-k}^H   (the correlation of the cotangent with the input)
        dK[k] = np.einsum("btdp,btdm->dpm", dy[:, k:], np.conj(x[:, :l - k]))
        # dx_j += K_k^H dy_{j+k}   (the correlation of the cotangent with the kernel)
        dx[:, :l - k] += np.einsum("dpm,btdp->btdm", np.conj(K[k]), dy[:, k:])
    # P_k's cotangent: C^H dK_k from the outputs, d_final_state x_{l-1-k}^H from the final state
    dP = np.einsum("dpn,kdpm->kdnm", np.conj(C), dK)
    if dhf is not None and l:
        dP += np.einsum("bdn,bkdm->kdnm", dhf, np.conj(x[:, ::-1]))
        # dx_j += P_{l-1-j}^H d_final_state
        dx += np.einsum("kdnm,bdn->bkdm", np.conj(P[::-1]), dhf)
    # dC = sum_k dK_k P_k^H
    dC = np.einsum("kdpm,kdnm->dpn", dK, np.conj(P))
    dA = np.zeros(A_bar.shape, dtype=wdt)
    # the kernel's reverse scan over the lag: gP_k = dP_k + A_bar^H gP_{k+1}
    gP = np.zeros(B_bar.shape, dtype=wdt)
    for k in range(l - 1, -1, -1):
        if k < l - 1:
            # dA_bar += gP_{k+1} P_k^H   (P_{k+1} = A_bar P_k)
            dA += np.einsum("dnm,dnm->dn", gP, np.conj(P[k])) if diagonal else \
                np.einsum("dim,djm->dij", gP, np.conj(P[k]))
            gP = (np.conj(A_bar)[..., None] * gP) if diagonal else np.einsum("dji,djm->dim", np.conj(A_bar), gP)
        gP = gP + dP[k]
    # dB_bar = gP_0
    dB = gP
    grads = dict(A_bar=dA, B_bar=dB, C=dC, x=dx)
    if D is not None:
        # dD = sum dy_t x_t^H;  dx_t += D^H dy_t
        grads["D"] = np.einsum("bldp,bldm->dpm", dy, np.conj(x))
        dx += np.einsum("dpm,bldp->bldm", np.conj(D), dy)
    if s0 is not None:
        # r_t = A_bar^{t+1} h_{-1}, rs[t + 1] = r_t, rs[0] = h_{-1}
        rs = np.zeros((l + 1, b, d, n), dtype=x.dtype)
        rs[0] = s0
        for t in range(l):
            rs[t + 1] = _apply(A_bar, rs[t], diagonal)
        # gr_{l-1} = d_final_state + C^H dy_{l-1};  gr_t = A_bar^H gr_{t+1} + C^H dy_t
        gr = np.zeros((b, d, n), dtype=wdt) if dhf is None else dhf.astype(wdt, copy=True)
        for t in range(l - 1, -1, -1):
            if t < l - 1:
                gr = _AH(A_bar, gr, diagonal)
            gr = gr + np.einsum("dpn,bdp->bdn", np.conj(C), dy[:, t])
            # dC += sum_b dy_t r_t^H;  dA_bar += sum_b gr_t r_{t-1}^H
            dC += np.einsum("bdp,bdn->dpn", dy[:, t], np.conj(rs[t + 1]))
            dA += _outer(gr, rs[t], diagonal)
        # d initial_state = A_bar^H gr_0 (d_final_state itself when l = 0)
        grads["initial_state"] = _AH(A_bar, gr, diagonal) if l else gr
    return _outputs(grads, originals)


def chunked_vjp(A_bar, B_bar, C, D, x, *, dy, d_final_state=None, chunk: int = 64, initial_state=None,
                diagonal: bool = False):
    r"""The VJP of the chunked view: **a reverse scan over the chunks** (time-invariant systems only).

    Forward: ``h_{s+T} = A_bar^T h_s + sum_{j<T} A_bar^{T-1-j} B_bar x_{s+j}`` per chunk ``[s, s+T)``.  Reverse, from
    the last chunk with ``g = d_final_state``: the chunk's :func:`convolution_vjp` with ``initial_state = h_s`` and
    ``d_final_state = g`` gives its ``dx``, its shares of ``dA_bar, dB_bar, dC, dD`` (summed over the chunks) and
    ``g <- dh_s``, the cotangent carried across the chunk boundary; after the first chunk, ``g`` is
    ``d initial_state``.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    originals = dict(A_bar=A_bar, B_bar=B_bar, C=C, D=D, x=x, initial_state=initial_state)
    A_bar, B_bar, C, D, x, s0, dims = validate_system(A_bar, B_bar, C, D, x, initial_state, diagonal=diagonal,
                                                      time_varying_ok=False, view="chunked")
    dy, dhf = validate_cotangents(dy, d_final_state, dims, x.dtype)
    b, l, d, n = dims["b"], dims["l"], dims["d"], dims["n"]
    wdt = np.result_type(x.dtype, dy.dtype, *([] if dhf is None else [dhf.dtype]))
    starts = list(range(0, l, chunk))
    # forward: the state entering each chunk, hs[i] = h_{s_i}  (h_{-1} = initial_state or 0 before the first)
    hs = [np.zeros((b, d, n), dtype=x.dtype) if s0 is None else s0]
    for s in starts[:-1]:
        xc = x[:, s:s + chunk]
        h = hs[-1]
        for t in range(xc.shape[1]):
            # h_t = A_bar h_{t-1} + B_bar x_t
            h = _apply(A_bar, h, diagonal) + np.einsum("dnm,bdm->bdn", B_bar, xc[:, t])
        hs.append(h)
    dA = np.zeros(A_bar.shape, dtype=wdt)
    dB = np.zeros(B_bar.shape, dtype=wdt)
    dC = np.zeros(C.shape, dtype=wdt)
    dD = None if D is None else np.zeros(D.shape, dtype=wdt)
    dx = np.zeros(x.shape, dtype=wdt)
    # the carried cotangent of the state leaving the current chunk
    g = np.zeros((b, d, n), dtype=wdt) if dhf is None else dhf.astype(wdt, copy=True)
    for i in range(len(starts) - 1, -1, -1):
        s = starts[i]
        gc = convolution_vjp(A_bar, B_bar, C, D, x[:, s:s + chunk], dy=dy[:, s:s + chunk], d_final_state=g,
                             initial_state=hs[i].astype(wdt, copy=False), diagonal=diagonal)
        dA += gc["A_bar"]
        dB += gc["B_bar"]
        dC += gc["C"]
        if dD is not None:
            dD += gc["D"]
        dx[:, s:s + chunk] = gc["x"]
        # g <- dh_s: the cotangent crosses the chunk boundary
        g = gc["initial_state"]
    grads = dict(A_bar=dA, B_bar=dB, C=dC, x=dx)
    if dD is not None:
        grads["D"] = dD
    if s0 is not None:
        grads["initial_state"] = g
    return _outputs(grads, originals)
