r"""The backward pass of Mamba's selective scan (S6): literal NumPy adjoints, one function per backward view.

Forward (per batch ``b``, channel ``d``, state entry ``n``; see :mod:`refimpl.ssm.selective.reference`)::

    x_t     = delta_t + delta_bias              Delta_t = softplus(x_t)   (each optional)
    w_t     = Delta_t A                         A_bar_t = exp(w_t)
    B_bar_t = Delta_t B_t  (mamba)   or   Delta_t phi1(w_t) B_t  (zoh)
    h_t     = A_bar_t h_{t-1} + B_bar_t u_t     (h_{-1} = initial_state)
    y_t     = c Re sum_n C_t h_t                (c = 1 real A, c = 2 complex A: Mamba's 2 Re)
    pre_t   = y_t + D u_t                       out_t = pre_t silu(z_t)

**The adjoint of the scan is itself a reverse scan** (from ``t = l-1`` down to ``0``)::

    dh_t = conj(A_bar_{t+1}) dh_{t+1} + c conj(C_t) dy_t        (dh_{l-1} also gets d_final_state)

and every parameter's gradient is a sum of per-step terms read off ``dh_t``::

    dC_t        += c conj(h_t) dy_t
    dw_t         = conj(A_bar_t h_{t-1}) dh_t                     (A_bar = exp(w): d/dw = A_bar)
    dB_bar_t     = u_t dh_t
    du_t         = D dpre_t + Re sum_n conj(B_bar_t) dh_t
    dDelta_t     = Re sum_n conj(A) dw_t + Re sum_n conj(B_bar_t / Delta_t) dB_bar_t
                   (zoh also: dw_t += conj(Delta_t phi1'(w_t) B_t) dB_bar_t, before the line above)
    dA          += sum_{b,t} Delta_t dw_t
    dB_t        += conj(Delta_t) dB_bar_t (mamba),  conj(Delta_t phi1(w_t)) dB_bar_t (zoh)
    dx_t         = sigmoid(x_t) dDelta_t   (x_t <= 20; 1 above: softplus(x) = x there)
    d initial_state = conj(A_bar_0) dh_0

with the output adjoint ``dpre_t = dout_t silu(z_t)``, ``dz_t = dout_t pre_t silu'(z_t)``
(``silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))``), ``dD = sum_{b,t} dpre_t u_t``, ``dy_t = dpre_t``.
``phi1'(w) = sum_k (k+1) w^k / (k+2)!`` (its Taylor series for ``|w| < 1``, ``(w e^w - expm1(w)) / w^2`` above).
Fixed, variable and grouped ``B``/``C`` sum the per-channel gradient over the axes the layout shares:
fixed over ``(b, l)``, variable over ``d``, grouped over the channels of each group.

Complex convention (Mamba's for its complex ``A``, PyTorch's): for a real loss ``L`` the gradient of a complex
input ``z = a + i b`` is ``dL/da + i dL/db``; a cotangent of a complex output (the final state) is given in the
same convention (``L = Re sum conj(w) h``).  For a holomorphic ``f`` the chain rule is then ``g_z =
conj(f'(z)) g_f``, hence the ``conj`` above.  A real input (``u``, ``delta``, ``D``, ``z``, ``delta_bias``, a real
``A``/``B``/``C``/``initial_state``) gets a real gradient: the real part of the complex one.

Views (both recompute the forward states, then run the reverse scan):

* :func:`recurrent_vjp` -- the reverse loop over ``t``, the per-step gradients inside it.
* :func:`chunked_vjp` -- the chunked adjoint: within each chunk the adjoint states are the transposed
  segment-sum system ``dh_j = sum_{i >= j} conj(exp(sum_{k=j+1}^{i} w_k)) g_i`` (``g_i`` the local cotangent of
  ``h_i``), the chunk's ``dh_in = sum_i conj(exp(sum_{k=0}^{i} w_k)) g_i`` is carried to the last state of the
  previous chunk (chunks in reverse order; any ``l``, the last chunk may be short); then the per-step terms above,
  all steps at once.

Shapes: as the forward (``u``, ``delta``, ``z``, ``dy`` ``(b l d)``; ``A`` ``(d n)``; ``B``, ``C`` fixed ``(d n)``,
variable ``(b l n)`` or grouped ``(b l g n)``; ``D``, ``delta_bias`` ``(d,)``; ``initial_state``,
``d_final_state`` ``(b d n)``).  Returns ``{argument name: gradient}`` for every differentiable input given, each
with its input's shape, real for a real input, in the working dtype: the forward's (``refimpl._validate.result_dtype``
of the inputs and cotangents; float64 by default, float32 only when every float input is float32).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import scipy.special

from refimpl._validate import as_float_array, check_int, check_shape, real_dtype
from refimpl.ssm.discretization.reference import phi1
from refimpl.ssm.selective.reference import SOFTPLUS_THRESHOLD, Prepared, _exp_masked, _per_channel, prepare, segsum

__all__ = ["recurrent_vjp", "chunked_vjp"]  # dphi1, softplus_grad, silu_grad, prepare_vjp: building blocks of the
# views (and the Numba kernel), called on validated arrays; not public API

# Taylor coefficients of phi1'(w) = sum_k (k+1) w^k / (k+2)!, k = 0..17 (the next term, 19/20! ~ 8e-18, is
# below float64's u relative to phi1'(0) = 1/2 for |w| < 1)
_DPHI1_COEF = tuple((k + 1) / float(np.prod(np.arange(1, k + 3, dtype=np.float64))) for k in range(18))


def dphi1(w: np.ndarray) -> np.ndarray:
    r"""``phi1'(w) = d/dw (e^w - 1)/w = (w e^w - expm1(w)) / w^2 = sum_k (k+1) w^k / (k+2)!``, elementwise.

    ``|w| < 1``: the Taylor polynomial of degree 17 in Horner form (no cancellation, no division by a small
    ``w``); above, the closed form (its cancellation is at most ``e`` at ``|w| = 1``).  Real or complex ``w``,
    the result in ``w``'s dtype."""
    w = np.asarray(w)
    out = np.empty_like(w)
    small = np.abs(w) < 1.0
    s = w[small]
    acc = np.full_like(s, _DPHI1_COEF[-1])
    for c in _DPHI1_COEF[-2::-1]:
        acc = acc * s + c
    out[small] = acc
    wb = w[~small]
    with np.errstate(over="ignore", invalid="ignore"):
        out[~small] = (wb * np.exp(wb) - np.expm1(wb)) / (wb * wb)
    return out


def softplus_grad(x: np.ndarray) -> np.ndarray:
    r"""``d softplus(x)/dx = sigmoid(x) = 1/(1 + e^{-x})`` for ``x <= 20`` (``scipy.special.expit``: stable for
    any ``x``), ``1`` above the threshold, where ``softplus(x) = x``."""
    return np.where(x <= SOFTPLUS_THRESHOLD, scipy.special.expit(x), 1).astype(x.dtype, copy=False)


def silu_grad(z: np.ndarray) -> np.ndarray:
    r"""``silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))`` (``silu(z) = z sigmoid(z)``)."""
    s = scipy.special.expit(z)
    return s * (1 + z * (1 - s))


def _as_input(g: np.ndarray, x) -> np.ndarray:
    """Gradient ``g`` (working dtype) for input ``x``: the real part for a real input (``dL/da``), kept in the
    working dtype (float32 only when every float input is float32: nothing is downcast)."""
    if not np.iscomplexobj(x):
        g = g.real
    return np.ascontiguousarray(g)


def prepare_vjp(u, delta, A, B, C, D, z, dy, d_final_state, *, delta_bias, delta_softplus, initial_state,
                discretization, allow_unstable):
    """Validate the forward's arguments (the forward's own checks) and the cotangents.

    ``dy``: ``(b l d)`` real; ``d_final_state``: ``(b d n)``, complex only with a complex ``A``.  Returns
    ``(p, x, dy, d_final_state)`` with ``x = delta + delta_bias`` (the softplus' argument) in the working dtype."""
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, discretization=discretization, allow_unstable=allow_unstable)
    dy = as_float_array(dy, "dy", ndim=3, allow_complex=False)
    check_shape(dy, "dy", (p.b, p.l, p.d), "(b l d) like the output out", src="b, l, d from u")
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=3)
        check_shape(d_final_state, "d_final_state", (p.b, p.d, p.n), "(b d n) like the final state",
                    src="b, d from u, n from A")
        if np.iscomplexobj(d_final_state) and not np.iscomplexobj(p.A):
            raise TypeError(f"d_final_state: a complex cotangent ({d_final_state.dtype}) of the final state needs a "
                            f"complex A (the final state of a real A is real), got A of dtype {p.A.dtype}")
    wdt = np.result_type(p.dtype, dy.dtype, *(() if d_final_state is None else (d_final_state.dtype,)))
    if wdt != p.dtype:  # a float64 cotangent promotes a float32 problem (nothing is downcast)
        p = prepare(*(np.asarray(a, dtype=wdt if np.iscomplexobj(a) else real_dtype(wdt)) if a is not None else None
                      for a in (u, delta, A, B, C, D, z)),
                    delta_bias=None if delta_bias is None else np.asarray(delta_bias, dtype=real_dtype(wdt)),
                    delta_softplus=delta_softplus,
                    initial_state=None if initial_state is None else np.asarray(
                        initial_state, dtype=wdt if np.iscomplexobj(initial_state) else real_dtype(wdt)),
                    discretization=discretization, allow_unstable=allow_unstable)
    dy = dy.astype(p.out_dtype, copy=False)
    if d_final_state is not None:
        d_final_state = d_final_state.astype(p.dtype, copy=False)
    x = p.Delta
    if delta_softplus:
        x = np.asarray(delta, dtype=p.out_dtype)
        if delta_bias is not None:
            x = x + np.asarray(delta_bias, dtype=p.out_dtype)
    return p, x, dy, d_final_state


def _forward_states(p: Prepared):
    """The forward recurrence with every state kept: ``H[:, t+1] = h_t``, ``H[:, 0] = h_{-1}``: ``(b l+1 d n)``;
    also ``w = Delta A``, ``A_bar``, ``B_bar`` ``(b l d n)``."""
    Bc = _per_channel(p.B, p.B_mode, p.d)
    # w_t = Delta_t A ; A_bar_t = exp(w_t)
    w = (p.Delta[..., None] * p.A).astype(p.dtype, copy=False)
    A_bar = np.exp(w)
    # B_bar_t = Delta_t B_t (mamba) or Delta_t phi1(w_t) B_t (zoh)
    if p.discretization == "mamba":
        B_bar = p.Delta[..., None] * Bc
    else:
        B_bar = p.Delta[..., None] * (phi1(w) if p.l else w) * Bc
    B_bar = np.broadcast_to(B_bar, (p.b, p.l, p.d, p.n)).astype(p.dtype, copy=False)
    H = np.zeros((p.b, p.l + 1, p.d, p.n), dtype=p.dtype)
    if p.initial_state is not None:
        H[:, 0] = p.initial_state
    for t in range(p.l):
        # h_t = A_bar_t h_{t-1} + B_bar_t u_t
        H[:, t + 1] = A_bar[:, t] * H[:, t] + B_bar[:, t] * p.u[:, t, :, None]
    return H, w, A_bar, B_bar


def _output_adjoint(p: Prepared, H: np.ndarray, dout: np.ndarray):
    """``dpre = dout silu(z)``, ``dz = dout pre silu'(z)``, ``dD = sum_{b,t} dpre u``; returns ``(dy, dD, dz)``
    (``dy`` = the cotangent of the readout ``y``, which equals ``dpre``)."""
    c = 2.0 if np.iscomplexobj(p.A) else 1.0
    Cc = _per_channel(p.C, p.C_mode, p.d)
    dpre, dz, dD = dout, None, None
    if p.z is not None:
        # pre_t = c Re sum_n C_t h_t + D u_t
        pre = c * np.sum(Cc * H[:, 1:], axis=-1).real.astype(p.out_dtype, copy=False)
        if p.D is not None:
            pre = pre + p.D * p.u
        # out = pre silu(z):  dpre = dout silu(z),  dz = dout pre silu'(z)
        dpre = dout * (p.z * scipy.special.expit(p.z))
        dz = dout * pre * silu_grad(p.z)
    if p.D is not None:
        # pre = y + D u:  dD = sum_{b,t} dpre u
        dD = np.sum(dpre * p.u, axis=(0, 1))
    return dpre, dD, dz


def _reduce_bc(g: np.ndarray, mode: str, X: np.ndarray) -> np.ndarray:
    """A per-channel gradient ``(b l d n)`` summed to ``X``'s layout: fixed ``(d n)`` over ``(b, l)``, variable
    ``(b l n)`` over ``d``, grouped ``(b l g n)`` over the ``d / g`` contiguous channels of each group."""
    if mode == "fixed":
        return g.sum(axis=(0, 1))
    if mode == "variable":
        return g.sum(axis=2)
    b, l, d, n = g.shape
    gr = X.shape[2]
    return g.reshape(b, l, gr, d // gr, n).sum(axis=3)


def _finish(p: Prepared, x, args: dict, *, du, dDelta, dA, gB, gC, dh0, dD, dz, delta_softplus) -> Dict[str, np.ndarray]:
    """The chain rule through ``softplus(delta + delta_bias)``, the layouts, and each input's dtype."""
    if delta_softplus:
        # Delta = softplus(x):  dx = sigmoid(x) dDelta  (1 above the threshold)
        dx = dDelta * softplus_grad(x)
    else:
        dx = dDelta
    grads = {"u": du, "delta": dx, "A": dA, "B": _reduce_bc(gB, p.B_mode, p.B), "C": _reduce_bc(gC, p.C_mode, p.C)}
    if p.D is not None:
        grads["D"] = dD
    if p.z is not None:
        grads["z"] = dz
    if args["delta_bias"] is not None:
        # x = delta + delta_bias:  d delta_bias = sum_{b,t} dx
        grads["delta_bias"] = dx.sum(axis=(0, 1))
    if p.initial_state is not None:
        grads["initial_state"] = dh0
    return {k: _as_input(v, args[k]) for k, v in grads.items()}


def _args(u, delta, A, B, C, D, z, delta_bias, initial_state) -> dict:
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)


def recurrent_vjp(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                  delta_softplus: bool = False, discretization: str = "mamba", initial_state=None,
                  allow_unstable: bool = False) -> Dict[str, np.ndarray]:
    r"""The vector-Jacobian product of the selective scan by the literal **reverse scan** (``t = l-1 .. 0``).

    ``dy``: the cotangent of ``out`` ``(b l d)``; ``d_final_state``: of the final state ``(b d n)`` (passing it
    means the forward is taken to return the final state).  The adjoint recurrence and the per-step gradients
    are those of the module docstring, evaluated one step at a time.  Returns ``{name: gradient}`` for ``u``,
    ``delta``, ``A``, ``B``, ``C`` and each of ``D``, ``z``, ``delta_bias``, ``initial_state`` that was given.
    """
    args = _args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    p, x, dout, dhL = prepare_vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, initial_state=initial_state,
                                  discretization=discretization, allow_unstable=allow_unstable)
    c = 2.0 if np.iscomplexobj(p.A) else 1.0
    H, w, A_bar, B_bar = _forward_states(p)
    dy_t_all, dD, dz = _output_adjoint(p, H, dout)
    Bc = np.broadcast_to(_per_channel(p.B, p.B_mode, p.d), (p.b, p.l, p.d, p.n))
    Cc = np.broadcast_to(_per_channel(p.C, p.C_mode, p.d), (p.b, p.l, p.d, p.n))
    du = np.zeros((p.b, p.l, p.d), dtype=p.out_dtype) if p.D is None else p.D * dy_t_all  # du = D dpre + ...
    dDelta = np.zeros((p.b, p.l, p.d), dtype=p.out_dtype)
    dA = np.zeros((p.d, p.n), dtype=p.dtype)
    gB = np.zeros((p.b, p.l, p.d, p.n), dtype=p.dtype)
    gC = np.zeros((p.b, p.l, p.d, p.n), dtype=p.dtype)
    dh = np.zeros((p.b, p.d, p.n), dtype=p.dtype) if dhL is None else dhL.copy()  # dh_{l-1} starts at d_final
    for t in range(p.l - 1, -1, -1):
        dy_t = dy_t_all[:, t, :, None]  # (b d 1)
        if t < p.l - 1:
            # dh_t = conj(A_bar_{t+1}) dh_{t+1} + c conj(C_t) dy_t
            dh = np.conj(A_bar[:, t + 1]) * dh
        dh = dh + c * np.conj(Cc[:, t]) * dy_t
        # dC_t = c conj(h_t) dy_t
        gC[:, t] = c * np.conj(H[:, t + 1]) * dy_t
        # dw_t = conj(A_bar_t h_{t-1}) dh_t
        dw = np.conj(A_bar[:, t] * H[:, t]) * dh
        # dB_bar_t = u_t dh_t ;  du_t += Re sum_n conj(B_bar_t) dh_t
        dB_bar = p.u[:, t, :, None] * dh
        du[:, t] += np.sum(np.conj(B_bar[:, t]) * dh, axis=-1).real
        Delta_t = p.Delta[:, t, :, None]
        if p.discretization == "mamba":
            # B_bar_t = Delta_t B_t:  dB_t = Delta_t dB_bar_t ;  dDelta_t += Re sum_n conj(B_t) dB_bar_t
            gB[:, t] = Delta_t * dB_bar
            dDelta[:, t] += np.sum(np.conj(Bc[:, t]) * dB_bar, axis=-1).real
        else:
            # B_bar_t = Delta_t phi1(w_t) B_t:  dB_t = conj(Delta_t phi1(w_t)) dB_bar_t ;
            # dDelta_t += Re sum_n conj(phi1(w_t) B_t) dB_bar_t ;  dw_t += conj(Delta_t phi1'(w_t) B_t) dB_bar_t
            ph = phi1(w[:, t])
            gB[:, t] = Delta_t * np.conj(ph) * dB_bar
            dDelta[:, t] += np.sum(np.conj(ph * Bc[:, t]) * dB_bar, axis=-1).real
            dw = dw + np.conj(Delta_t * dphi1(w[:, t]) * Bc[:, t]) * dB_bar
        # w_t = Delta_t A:  dDelta_t += Re sum_n conj(A) dw_t ;  dA += sum_b Delta_t dw_t
        dDelta[:, t] += np.sum(np.conj(p.A) * dw, axis=-1).real
        dA += np.sum(Delta_t * dw, axis=0)
    if p.l:
        # d initial_state = conj(A_bar_0) dh_0
        dh0 = np.conj(A_bar[:, 0]) * dh
    else:
        dh0 = dh  # l = 0: the final state is the initial state
    return _finish(p, x, args, du=du, dDelta=dDelta, dA=dA, gB=gB, gC=gC, dh0=dh0, dD=dD, dz=dz,
                   delta_softplus=delta_softplus)


def chunked_vjp(u, delta, A, B, C, D=None, z=None, *, dy, d_final_state=None, delta_bias=None,
                delta_softplus: bool = False, discretization: str = "mamba", initial_state=None, chunk: int = 64,
                allow_unstable: bool = False) -> Dict[str, np.ndarray]:
    r"""The vector-Jacobian product by the **chunked adjoint**: a reverse scan over chunks of ``chunk`` steps.

    Within a chunk of ``T`` steps (the last may be short) with local cotangents ``g_i = c conj(C_i) dy_i``
    (plus the carried ``dh`` at ``i = T-1``), the adjoint states are the transposed segment-sum system of the
    forward's chunked view, with ``P = segsum([0, w_0, ..., w_{T-1}])``::

        dh_j  = sum_{i >= j} conj(exp(P[i+1, j+1])) g_i          (the reverse scan inside the chunk)
        dh_in = sum_i conj(exp(P[i+1, 0])) g_i = conj(A_bar_0) dh_0 (carried to the previous chunk's last state)

    The forward states come from the same chunked form (``h_i = exp(P[i+1, 0]) h_in + sum_j exp(P[i+1, j+1])
    B_bar_j u_j``).  Then the per-step terms of the module docstring for all steps at once (``dw_t = conj(A_bar_t
    h_{t-1}) dh_t``, ...).  Arguments and result as :func:`recurrent_vjp`.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    args = _args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    p, x, dout, dhL = prepare_vjp(u, delta, A, B, C, D, z, dy, d_final_state, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, initial_state=initial_state,
                                  discretization=discretization, allow_unstable=allow_unstable)
    c = 2.0 if np.iscomplexobj(p.A) else 1.0
    b, l, d, n = p.b, p.l, p.d, p.n
    Bc = np.broadcast_to(_per_channel(p.B, p.B_mode, d), (b, l, d, n))
    Cc = np.broadcast_to(_per_channel(p.C, p.C_mode, d), (b, l, d, n))
    # w_t = Delta_t A ; A_bar_t = exp(w_t) ; B_bar_t = Delta_t B_t (mamba) or Delta_t phi1(w_t) B_t (zoh)
    w = (p.Delta[..., None] * p.A).astype(p.dtype, copy=False)
    A_bar = np.exp(w)
    ph = phi1(w) if (p.discretization == "zoh" and l) else None
    B_bar = (p.Delta[..., None] * (Bc if ph is None else ph * Bc)).astype(p.dtype, copy=False)
    bu = B_bar * p.u[..., None]
    # forward, chunk by chunk: H[:, t+1] = h_t, H[:, 0] = h_{-1}; E_c = exp(segsum) of each chunk kept
    H = np.zeros((b, l + 1, d, n), dtype=p.dtype)
    if p.initial_state is not None:
        H[:, 0] = p.initial_state
    starts = list(range(0, l, chunk))
    Es = []
    for s in starts:
        T = min(chunk, l - s)
        # x = [0, w_s, ..., w_{s+T-1}] on a last axis: (b d n T+1)
        xs = np.concatenate([np.zeros_like(w[:, :1]), w[:, s:s + T]], axis=1)
        E = _exp_masked(segsum(np.moveaxis(xs, 1, -1)))  # (b d n T+1 T+1)
        Es.append(E)
        # h_i = exp(P[i+1, 0]) h_in + sum_{j <= i} exp(P[i+1, j+1]) B_bar_j u_j
        H[:, s + 1:s + T + 1] = (np.einsum("bdnij,bjdn->bidn", E[..., 1:, 1:], bu[:, s:s + T])
                                 + np.moveaxis(E[..., 1:, 0], -1, 1) * H[:, s][:, None])
    dy_all, dD, dz = _output_adjoint(p, H, dout)
    # the local cotangent of h_t from the readout: g_t = c conj(C_t) dy_t
    g = c * np.conj(Cc) * dy_all[..., None]
    dH = np.zeros((b, l, d, n), dtype=p.dtype)  # dH[:, t] = dh_t, the total adjoint of h_t
    carry = np.zeros((b, d, n), dtype=p.dtype) if dhL is None else dhL.copy()  # dh entering the chunk's last state
    for s, E in zip(starts[::-1], Es[::-1]):
        T = min(chunk, l - s)
        g_c = g[:, s:s + T].copy()
        g_c[:, T - 1] += carry
        # dh_j = sum_{i >= j} conj(E[i+1, j+1]) g_i   (the transposed segment-sum system: the reverse scan)
        dH[:, s:s + T] = np.einsum("bdnij,bidn->bjdn", np.conj(E[..., 1:, 1:]), g_c)
        # dh_in = sum_i conj(E[i+1, 0]) g_i, carried to the previous chunk's last state (h_{s-1})
        carry = np.einsum("bdni,bidn->bdn", np.conj(E[..., 1:, 0]), g_c)
    dh0 = carry
    # dC_t = c conj(h_t) dy_t
    gC = c * np.conj(H[:, 1:]) * dy_all[..., None]
    # dw_t = conj(A_bar_t h_{t-1}) dh_t
    dw = np.conj(A_bar * H[:, :-1]) * dH
    # dB_bar_t = u_t dh_t ;  du_t = D dpre_t + Re sum_n conj(B_bar_t) dh_t
    dB_bar = p.u[..., None] * dH
    du = np.sum(np.conj(B_bar) * dH, axis=-1).real
    if p.D is not None:
        du = du + p.D * dy_all
    Delta = p.Delta[..., None]
    if ph is None:
        # B_bar = Delta B:  dB = Delta dB_bar ;  dDelta = Re sum_n conj(B) dB_bar
        gB = Delta * dB_bar
        dDelta = np.sum(np.conj(Bc) * dB_bar, axis=-1).real
    else:
        # B_bar = Delta phi1(w) B:  dB = conj(Delta phi1(w)) dB_bar ;  dDelta = Re sum_n conj(phi1(w) B) dB_bar ;
        # dw += conj(Delta phi1'(w) B) dB_bar
        gB = Delta * np.conj(ph) * dB_bar
        dDelta = np.sum(np.conj(ph * Bc) * dB_bar, axis=-1).real
        dw = dw + np.conj(Delta * dphi1(w) * Bc) * dB_bar
    # w = Delta A:  dDelta += Re sum_n conj(A) dw ;  dA = sum_{b,t} Delta dw
    dDelta = dDelta + np.sum(np.conj(p.A) * dw, axis=-1).real
    dA = np.sum(Delta * dw, axis=(0, 1))
    return _finish(p, x, args, du=du, dDelta=dDelta.astype(p.out_dtype, copy=False), dA=dA, gB=gB, gC=gC, dh0=dh0,
                   dD=dD, dz=dz, delta_softplus=delta_softplus)
