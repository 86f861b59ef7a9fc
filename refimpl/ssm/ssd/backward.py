r"""The backward pass of Mamba-2's SSD: the literal NumPy adjoints (vector-Jacobian products), one function per view.

Each function takes the forward's arguments and the cotangents ``dy`` (of the output ``y``, ``(b l h p)``) and
``d_final_state`` (of the final state, ``(b h p n)``; ``None``: the final state is not an output) and returns
``{argument name: gradient}`` for every differentiable input that was given (``x``, ``dt``, ``A``, ``B``, ``C``,
and ``D``, ``z``, ``dt_bias``, ``initial_state`` when not ``None``); ``seq_idx`` (integers) gets no entry.
Written by hand as the adjoint recurrences (no automatic differentiation).  **The adjoint of the scan is
itself a reverse scan**: the state's cotangent runs from the last step to the first,

    dS_T     = d_final_state (or 0)
    dS_t     = a_{t+1} dS_{t+1} + dy'_t C_t^T            (dS_{t} = 0 carried across a seq_idx boundary at t+1)
    d S_{-1} = a_0 dS_0                                 (the initial state's gradient)

with ``dy'_t`` the cotangent of the inner output ``S_t C_t`` (after the ``D`` skip and the gate).  From it,
per step (``Xd_t = dt_t x_t``, ``a_t = exp(dt_t A)``, ``S_{t-1}`` the state entering step ``t``, 0 after a
boundary)::

    dC_t   = S_t^T dy'_t                         dXd_t = dS_t B_t          dB_t = dS_t^T Xd_t
    dx_t   = dt_t dXd_t + D dy'_t                da_t  = <dS_t, S_{t-1}>
    ddt_t  = <dXd_t, x_t> + A a_t da_t           dA    = sum_t dt_t a_t da_t
    dy'_t  = dy_t silu(z_t)                      dz_t  = dy_t (y_t + D x_t) silu'(z_t),  silu'(z) = s(z)(1 + z s(-z))
    dD     = sum_t dy'_t x_t                     (summed over p too for D of shape (h,))

and the step's chain back to the raw ``dt`` (``u = dt + dt_bias``, ``v = softplus(u)``, ``dt_eff = clamp(v, lo, hi)``)::

    d v     = d dt_eff  where lo <= v <= hi, else 0   (both ends inclusive, as torch.clamp; only when a limit is set)
    d u     = d v * sigmoid(u)  for u <= 20, d v above (softplus' threshold: softplus(u) = u there)
    d dt    = d u,   d dt_bias = sum_{b, l} d u

``B`` and ``C`` are read per group (head ``h`` reads group ``h // (H/g)``): their gradients are the per-head
ones summed over the heads of each group.

Conventions
-----------
* Every input is real (SSD has no complex parameters); the cotangents ``dy`` and ``d_final_state`` are real,
  checked like inputs (shape ``(b l h p)`` and ``(b h p n)``).
* The working dtype is ``result_dtype`` of every float input and the cotangents (float32 only when all are
  float32; no gradient is ever downcast); each gradient has its input's shape (``D`` ``(h,)`` or ``(h, p)`` as
  given) and the working dtype, which is its input's dtype unless the inputs mix float32 and float64.
* Views: :func:`recurrent_vjp` (the reverse loop above), :func:`quadratic_vjp` (the transpose of the masked
  matrix ``Y = (L o C B^T) Xd``, with the adjoint of the segment sum), :func:`chunked_vjp` (Mamba-2's four steps
  in reverse: state-to-output, the inter-chunk reverse scan, the chunk states, the intra-chunk quadratic adjoint).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import numpy as np
import scipy.special

from refimpl._validate import as_float_array, check_int, check_shape, result_dtype
from refimpl.ssm.selective.reference import SOFTPLUS_THRESHOLD, silu
from refimpl.ssm.ssd.reference import Prepared, _block, _check_limit, _init, _starts, prepare

__all__ = ["recurrent_vjp", "quadratic_vjp", "chunked_vjp"]


@dataclasses.dataclass
class _Vjp:
    p: Prepared
    dy: np.ndarray  # (b l h p)
    dF: Optional[np.ndarray]  # (b h p n) or None
    u: np.ndarray  # pre-activation dt + dt_bias (b l h), working dtype
    softplus: bool
    limit: tuple
    dtypes: Dict[str, np.dtype]  # each given input's own dtype
    D_ndim: int


def _prepare_vjp(x, dt, A, B, C, D, z, dy, d_final_state, dt_bias, dt_softplus, dt_limit, initial_state, seq_idx,
                 allow_unstable) -> _Vjp:
    """Validate the forward's arguments (as the forward does) and the cotangents; one working dtype for all."""
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
    dy = as_float_array(dy, "dy", ndim=4, allow_complex=False)
    check_shape(dy, "dy", (p.b, p.l, p.h, p.p), "(b l h p) like x")
    if d_final_state is not None:
        d_final_state = as_float_array(d_final_state, "d_final_state", ndim=4, allow_complex=False)
        check_shape(d_final_state, "d_final_state", (p.b, p.h, p.p, p.n), "(b h p n) like the final state")
    raw = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_state=initial_state)
    dtypes = {k: as_float_array(v, k).dtype for k, v in raw.items() if v is not None}
    wd = result_dtype(np.empty(0, p.dtype), dy, d_final_state)
    if wd != p.dtype:  # a float64 cotangent on float32 inputs: work in float64 (never downcast)
        p = dataclasses.replace(p, **{f.name: getattr(p, f.name).astype(wd) for f in dataclasses.fields(p)
                                      if isinstance(getattr(p, f.name), np.ndarray) and f.name != "seq_idx"},
                                dtype=wd)
    dy = dy.astype(wd, copy=False)
    dF = None if d_final_state is None else d_final_state.astype(wd, copy=False)
    u = as_float_array(dt, "dt").astype(wd)
    if dt_bias is not None:
        u = u + as_float_array(dt_bias, "dt_bias").astype(wd)
    return _Vjp(p=p, dy=dy, dF=dF, u=u, softplus=bool(dt_softplus), limit=_check_limit(dt_limit), dtypes=dtypes,
                D_ndim=0 if D is None else np.ndim(D))


def _output_adjoint(v: _Vjp, y: np.ndarray):
    """The adjoint of ``out = (y + D x) * silu(z)``: returns ``(dy', dx_skip, dD, dz)`` (``None`` where absent).

    ``y``: the inner output ``S_t C_t`` ``(b l h p)`` recomputed by the view's forward."""
    p, dy = v.p, v.dy
    yD = y if p.D is None else y + p.D * p.x
    dz = None
    g = dy
    if p.z is not None:
        # dz = dy (y + D x) silu'(z),  silu'(z) = sigmoid(z) (1 + z sigmoid(-z))
        dz = dy * yD * scipy.special.expit(p.z) * (1 + p.z * scipy.special.expit(-p.z))
        # dy' = dy silu(z)
        g = dy * silu(p.z)
    dx_skip = dD = None
    if p.D is not None:
        # dD = sum_{b, t} dy'_t x_t ;  dx_t = D dy'_t
        dD = np.einsum("blhp,blhp->hp", g, p.x)
        if v.D_ndim == 1:
            dD = dD.sum(axis=-1)
        dx_skip = p.D * g
    return g, dx_skip, dD, dz


def _dt_adjoint(v: _Vjp, ddt_eff: np.ndarray):
    """Chain ``d dt_eff`` (b l h) back through the clamp, the softplus and the bias: ``(d dt, d dt_bias)``."""
    lo, hi = v.limit
    du = ddt_eff
    pre = v.u
    if v.softplus:
        with np.errstate(over="ignore"):
            sp = np.where(pre <= SOFTPLUS_THRESHOLD, np.log1p(np.exp(np.where(pre <= SOFTPLUS_THRESHOLD, pre, 0))), pre)
    else:
        sp = pre
    if not (lo == 0.0 and hi == math.inf):
        # d v = d dt_eff where lo <= v <= hi (both ends inclusive), 0 where the clamp is active
        du = np.where((sp >= lo) & (sp <= hi), du, 0)
    if v.softplus:
        # d u = d v sigmoid(u) for u <= 20; d v above the threshold (softplus(u) = u)
        du = du * np.where(pre <= SOFTPLUS_THRESHOLD, scipy.special.expit(pre), 1)
    # d dt_bias = sum_{b, l} d u
    return du, du.sum(axis=(0, 1))


def _segsum_adjoint(W: np.ndarray) -> np.ndarray:
    r"""The adjoint of ``Lm = exp(segsum(xpad))`` given ``W = dLm o Lm`` ``(... T+1 T+1)``: ``d xpad`` ``(... T+1)``.

    ``Lm[I, J] = exp(sum_{K=J+1}^{I} xpad_K)`` gives ``d xpad_K = sum_{I >= K} sum_{J < K} W[I, J]``."""
    # Q[I, K] = sum_{J < K} W[I, J]  (exclusive cumulative sum along J)
    Q = np.cumsum(W, axis=-1) - W
    # d xpad_K = sum_{I >= K} Q[I, K]
    return np.tril(Q).sum(axis=-2)


def _group_sum(v: _Vjp, Xh: np.ndarray) -> np.ndarray:
    """Per-head gradients ``(b l h n)`` summed over the heads of each group -> ``(b l g n)``."""
    p = v.p
    return Xh.reshape(p.b, p.l, p.g, p.h // p.g, p.n).sum(axis=3)


def _result(v: _Vjp, dx, ddt_eff, dA, dBh, dCh, dD, dz, dS0) -> Dict[str, np.ndarray]:
    p = v.p
    ddt, dbias = _dt_adjoint(v, ddt_eff)
    out = {"x": dx, "dt": ddt, "A": dA, "B": _group_sum(v, dBh), "C": _group_sum(v, dCh)}
    if p.D is not None:
        out["D"] = dD
    if p.z is not None:
        out["z"] = dz
    if "dt_bias" in v.dtypes:
        out["dt_bias"] = dbias
    if p.initial_state is not None:
        out["initial_state"] = dS0
    # every gradient in the working dtype (float32 only when every float input and cotangent is float32)
    return {k: np.asarray(g).astype(p.dtype, copy=False) for k, g in out.items()}


def recurrent_vjp(x, dt, A, B, C, D=None, z=None, *, dy, d_final_state=None, dt_bias=None, dt_softplus: bool = False,
                  dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, allow_unstable: bool = False):
    r"""The reverse loop: recompute and store the states forward, then run the adjoint scan backward.

    ``dS_t = a_{t+1} dS_{t+1} + dy'_t C_t^T`` from ``dS_{l-1} = d_final_state + dy'_{l-1} C_{l-1}^T`` down to
    ``t = 0``; ``d initial_state = a_0 dS_0`` (``d_final_state`` when ``l = 0``).  Shapes: ``x``, ``z``, ``dy``
    ``(b l h p)``; ``dt`` ``(b l h)``; ``A``, ``dt_bias`` ``(h,)``; ``B``, ``C`` ``(b l g n)``; ``D`` ``(h,)`` or
    ``(h, p)``; ``initial_state``, ``d_final_state`` ``(b h p n)``.  Returns the gradients by argument name.
    """
    v = _prepare_vjp(x, dt, A, B, C, D, z, dy, d_final_state, dt_bias, dt_softplus, dt_limit, initial_state, seq_idx,
                     allow_unstable)
    p = v.p
    starts = _starts(p)
    # forward, storing S_{t-1} (the state entering step t, after a reset) and S_t
    S = _init(p)
    S_in = np.zeros((p.b, p.l, p.h, p.p, p.n), dtype=p.dtype)
    S_out = np.zeros_like(S_in)
    a = np.exp(p.dt * p.A)  # a_t = exp(dt_t A): (b l h)
    Xd = p.dt[..., None] * p.x  # Xd_t = dt_t x_t: (b l h p)
    y = np.zeros((p.b, p.l, p.h, p.p), dtype=p.dtype)
    for t in range(p.l):
        S = np.where(starts[:, t, None, None, None], 0, S)
        S_in[:, t] = S
        S = a[:, t, :, None, None] * S + Xd[:, t, :, :, None] * p.B[:, t, :, None, :]
        S_out[:, t] = S
        y[:, t] = np.einsum("bhpn,bhn->bhp", S, p.C[:, t])
    g, dx_skip, dD, dz = _output_adjoint(v, y)
    dx = np.zeros_like(p.x) if dx_skip is None else dx_skip.copy()
    ddt = np.zeros_like(p.dt)
    dA = np.zeros_like(p.A)
    dBh = np.zeros_like(p.B)
    dCh = np.zeros_like(p.C)
    # dS_{l-1} starts from the final state's cotangent
    dS = np.zeros((p.b, p.h, p.p, p.n), dtype=p.dtype) if v.dF is None else v.dF.copy()
    for t in range(p.l - 1, -1, -1):
        # dS_t = a_{t+1} dS_{t+1} + dy'_t C_t^T
        dS = dS + g[:, t, :, :, None] * p.C[:, t, :, None, :]
        # dC_t = S_t^T dy'_t
        dCh[:, t] = np.einsum("bhpn,bhp->bhn", S_out[:, t], g[:, t])
        # dXd_t = dS_t B_t ;  dB_t = dS_t^T Xd_t
        dXd = np.einsum("bhpn,bhn->bhp", dS, p.B[:, t])
        dBh[:, t] = np.einsum("bhpn,bhp->bhn", dS, Xd[:, t])
        # dx_t += dt_t dXd_t
        dx[:, t] += p.dt[:, t, :, None] * dXd
        # da_t = <dS_t, S_{t-1}>
        da = np.einsum("bhpn,bhpn->bh", dS, S_in[:, t])
        # ddt_t = <dXd_t, x_t> + A a_t da_t ;  dA += dt_t a_t da_t
        ddt[:, t] = np.einsum("bhp,bhp->bh", dXd, p.x[:, t]) + p.A * a[:, t] * da
        dA += np.sum(p.dt[:, t] * a[:, t] * da, axis=0)
        # dS_{t-1} = a_t dS_t  (0 where a sequence starts at t: the reset cuts the flow)
        dS = a[:, t, :, None, None] * dS
        dS = np.where(starts[:, t, None, None, None], 0, dS)
    return _result(v, dx, ddt, dA, dBh, dCh, dD, dz, dS)


def _intra_adjoint(p: Prepared, Lm, s, e, g, Xd, dL, dXd, dBh, dCh):
    r"""Adjoint of ``Y = (L o C B^T) Xd`` on positions ``[s, e)`` (``Lm`` with its virtual leading row/column).

    ``dM = dY Xd^T``, ``dXd = M^T dY``, ``dL = dM o C B^T``, ``dC = (dM o L) B``, ``dB = (dM o L)^T C``;
    accumulates into ``dL`` (the block's ``(b h T+1 T+1)`` cotangent) and the ``[s, e)`` slices of the others."""
    Lc = Lm[..., 1:, 1:]
    CB = np.einsum("bihn,bjhn->bhij", p.C[:, s:e], p.B[:, s:e])
    # dM_ij = dY_i . Xd_j
    dM = np.einsum("bihp,bjhp->bhij", g[:, s:e], Xd[:, s:e])
    # dXd = M^T dY with M = L o C B^T
    dXd[:, s:e] += np.einsum("bhij,bihp->bjhp", Lc * CB, g[:, s:e])
    # dL_ij = dM_ij (C_i . B_j)
    dL[..., 1:, 1:] += dM * CB
    # d(C B^T) = dM o L:  dC_i = sum_j d(CB)_ij B_j,  dB_j = sum_i d(CB)_ij C_i
    dCB = dM * Lc
    dCh[:, s:e] += np.einsum("bhij,bjhn->bihn", dCB, p.B[:, s:e])
    dBh[:, s:e] += np.einsum("bhij,bihn->bjhn", dCB, p.C[:, s:e])


def _state_out_adjoint(p: Prepared, Lm, s, e, g, S_enter, dL, dCh):
    r"""Adjoint of ``Y_i += Lm[i, -1] S_enter C_i`` on ``[s, e)``: returns ``dS_enter`` and accumulates ``dL``, ``dC``.

    ``dLm[i, -1] = dY_i . (S C_i)``, ``dC_i = Lm[i, -1] S^T dY_i``, ``dS = sum_i Lm[i, -1] dY_i C_i^T``."""
    Loff = Lm[..., 1:, 0]  # (b h T)
    SC = np.einsum("bhpn,bihn->bihp", S_enter, p.C[:, s:e])
    dL[..., 1:, 0] += np.einsum("bihp,bihp->bhi", g[:, s:e], SC)
    dCh[:, s:e] += np.moveaxis(Loff, -1, 1)[..., None] * np.einsum("bhpn,bihp->bihn", S_enter, g[:, s:e])
    return np.einsum("bhi,bihp,bihn->bhpn", Loff, g[:, s:e], p.C[:, s:e])


def _state_in_adjoint(p: Prepared, Lm, s, e, dU, Xd, dL, dXd, dBh):
    r"""Adjoint of ``U = sum_j Lm[-1, j] Xd_j B_j^T`` on ``[s, e)`` given ``dU`` ``(b h p n)``.

    ``dLm[-1, j] = <dU, Xd_j B_j^T>``, ``dXd_j = Lm[-1, j] dU B_j``, ``dB_j = Lm[-1, j] dU^T Xd_j``."""
    Llast = np.moveaxis(Lm[..., -1, 1:], -1, 1)[..., None]  # (b T h 1)
    dL[..., -1, 1:] += np.einsum("bhpn,bjhp,bjhn->bhj", dU, Xd[:, s:e], p.B[:, s:e])
    dXd[:, s:e] += Llast * np.einsum("bhpn,bjhn->bjhp", dU, p.B[:, s:e])
    dBh[:, s:e] += Llast * np.einsum("bhpn,bjhp->bjhn", dU, Xd[:, s:e])


def _decay_adjoint(p: Prepared, Lm, dL, s, e, ddA):
    r"""``L = exp(segsum([0, dt_s A, ..., dt_{e-1} A]))``:
    ``d(dt A)_k = sum_{I >= k+1} sum_{J < k+1} (dL o L)[I, J]``."""
    ddA[:, s:e] += np.moveaxis(_segsum_adjoint(dL * Lm)[..., 1:], -1, 1)


def _finish_dA(v: _Vjp, ddA, dXd, dx, dS0):
    """``dA_k = dt_k A``: ``ddt_k += A d(dA)_k + <dXd_k, x_k>``, ``dA = sum dt_k d(dA)_k``; ``dx += dt dXd``."""
    p = v.p
    # Xd = dt x:  dx += dt dXd,  ddt += <dXd, x>
    dx += p.dt[..., None] * dXd
    # (dt A)_k:  ddt_k += A d(dt A)_k,  dA = sum_k dt_k d(dt A)_k
    ddt = p.A * ddA + np.einsum("blhp,blhp->blh", dXd, p.x)
    dA = np.einsum("blh,blh->h", p.dt, ddA)
    return dx, ddt, dA


def quadratic_vjp(x, dt, A, B, C, D=None, z=None, *, dy, d_final_state=None, dt_bias=None, dt_softplus: bool = False,
                  dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, allow_unstable: bool = False):
    r"""The transpose of the attention form ``Y = (L o C B^T) Xd + L[:, -1] S_{-1} C``, ``final = (L[-1] Xd) B + ...``.

    ``dXd = (L o C B^T)^T dY'``, ``dC = ((dY' Xd^T) o L) B``, ``dB = ((dY' Xd^T) o L)^T C``,
    ``dL = (dY' Xd^T) o C B^T``,
    the initial state's column and the final state's row likewise, then the adjoint of the stable segment sum
    (a reverse cumulative sum: ``d(dt A)_k = sum_{i >= k} sum_{j < k} (dL o L)_{ij}``).  O(l^2); shapes as
    :func:`recurrent_vjp`.
    """
    v = _prepare_vjp(x, dt, A, B, C, D, z, dy, d_final_state, dt_bias, dt_softplus, dt_limit, initial_state, seq_idx,
                     allow_unstable)
    p = v.p
    S0 = _init(p)
    zero_state = np.zeros_like(S0)
    Xd = p.dt[..., None] * p.x
    if p.l == 0:
        g, dx_skip, dD, dz = _output_adjoint(v, np.zeros_like(p.x))
        return _result(v, np.zeros_like(p.x), np.zeros_like(p.dt), np.zeros_like(p.A), np.zeros_like(p.B),
                       np.zeros_like(p.C), dD, dz, zero_state if v.dF is None else v.dF.copy())
    Lm = _block(p, 0, p.l, None if p.seq_idx is None else p.seq_idx[:, 0])
    CB = np.einsum("bihn,bjhn->bhij", p.C, p.B)
    # forward: y = (L o C B^T) Xd + L[i, -1] S_{-1} C_i
    y = np.einsum("bhij,bjhp->bihp", Lm[..., 1:, 1:] * CB, Xd)
    y = y + np.moveaxis(Lm[..., 1:, 0], -1, 1)[..., None] * np.einsum("bhpn,bihn->bihp", S0, p.C)
    g, dx_skip, dD, dz = _output_adjoint(v, y)
    dx = np.zeros_like(p.x) if dx_skip is None else dx_skip.copy()
    dXd = np.zeros_like(p.x)
    dBh = np.zeros_like(p.B)
    dCh = np.zeros_like(p.C)
    dL = np.zeros_like(Lm)
    # Y = (L o C B^T) Xd
    _intra_adjoint(p, Lm, 0, p.l, g, Xd, dL, dXd, dBh, dCh)
    # Y_i += L[i, -1] S_{-1} C_i
    dS0 = _state_out_adjoint(p, Lm, 0, p.l, g, S0, dL, dCh)
    if v.dF is not None:
        # final = sum_j L[-1, j] Xd_j B_j^T + L[-1, -1] S_{-1}
        _state_in_adjoint(p, Lm, 0, p.l, v.dF, Xd, dL, dXd, dBh)
        dL[..., -1, 0] += np.einsum("bhpn,bhpn->bh", v.dF, S0)
        dS0 = dS0 + Lm[..., -1, 0][..., None, None] * v.dF
    ddA = np.zeros_like(p.dt)
    _decay_adjoint(p, Lm, dL, 0, p.l, ddA)
    dx, ddt, dA = _finish_dA(v, ddA, dXd, dx, dS0)
    return _result(v, dx, ddt, dA, dBh, dCh, dD, dz, dS0)


def chunked_vjp(x, dt, A, B, C, D=None, z=None, *, dy, d_final_state=None, chunk: int = 64, dt_bias=None,
                dt_softplus: bool = False, dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None,
                allow_unstable: bool = False):
    r"""Mamba-2's four chunked steps in reverse (chunks ``[s, s+T)``, ``T <= chunk``, the last may be short).

    Forward recomputed: ``U_c``, ``G_c`` and the entering states ``S_c`` (``S_{c+1} = G_c S_c + U_c``).  Then the
    **inter-chunk reverse scan**, from ``dS_{C} = d_final_state`` down to ``c = 0``:

    4'. state-to-output: ``dS_c = sum_i L[i, -1] dY'_i C_i^T``, ``dC_i += L[i, -1] S_c^T dY'_i``;
    3'. ``S_{c+1} = G_c S_c + U_c``: ``dS_c += G_c dS_{c+1}``, ``dG_c = <dS_{c+1}, S_c>``, ``dU_c = dS_{c+1}``;
    2'. chunk state: ``dXd_j += L[-1, j] dU_c B_j``, ``dB_j += L[-1, j] dU_c^T Xd_j``,
        ``dL[-1, j] = <dU_c, Xd_j B_j^T>``;
    1'. intra-chunk: the quadratic adjoint of ``(L o C B^T) Xd`` on the chunk's diagonal block;

    then each chunk's segment-sum adjoint gives ``d(dt A)``; ``d initial_state = dS_0``.  Shapes as
    :func:`recurrent_vjp`; ``chunk`` an int >= 1.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    v = _prepare_vjp(x, dt, A, B, C, D, z, dy, d_final_state, dt_bias, dt_softplus, dt_limit, initial_state, seq_idx,
                     allow_unstable)
    p = v.p
    bounds = [(s, min(s + chunk, p.l)) for s in range(0, p.l, chunk)]
    Xd = p.dt[..., None] * p.x
    seg_in = [None if p.seq_idx is None else p.seq_idx[:, max(s - 1, 0)] for s, _ in bounds]
    blocks = [_block(p, s, e, sp) for (s, e), sp in zip(bounds, seg_in)]
    # forward recomputation: y (inner), U_c, G_c, S_c
    y = np.zeros((p.b, p.l, p.h, p.p), dtype=p.dtype)
    S = [_init(p)]
    for (s, e), Lm in zip(bounds, blocks):
        CB = np.einsum("bihn,bjhn->bhij", p.C[:, s:e], p.B[:, s:e])
        y[:, s:e] = np.einsum("bhij,bjhp->bihp", Lm[..., 1:, 1:] * CB, Xd[:, s:e])
        y[:, s:e] += np.moveaxis(Lm[..., 1:, 0], -1, 1)[..., None] * np.einsum("bhpn,bihn->bihp", S[-1], p.C[:, s:e])
        U = np.einsum("bhj,bjhp,bjhn->bhpn", Lm[..., -1, 1:], Xd[:, s:e], p.B[:, s:e])
        S.append(Lm[..., -1, 0][..., None, None] * S[-1] + U)
    g, dx_skip, dD, dz = _output_adjoint(v, y)
    dx = np.zeros_like(p.x) if dx_skip is None else dx_skip.copy()
    dXd = np.zeros_like(p.x)
    dBh = np.zeros_like(p.B)
    dCh = np.zeros_like(p.C)
    ddA = np.zeros_like(p.dt)
    # dS_C = d_final_state (the state after the last chunk)
    dS_next = np.zeros_like(S[0]) if v.dF is None else v.dF.copy()
    for c in range(len(bounds) - 1, -1, -1):
        (s, e), Lm = bounds[c], blocks[c]
        dL = np.zeros_like(Lm)
        # 3'. S_{c+1} = G_c S_c + U_c:  dU_c = dS_{c+1},  dG_c = <dS_{c+1}, S_c>,  dS_c = G_c dS_{c+1}
        dU = dS_next
        dL[..., -1, 0] += np.einsum("bhpn,bhpn->bh", dS_next, S[c])
        dS_c = Lm[..., -1, 0][..., None, None] * dS_next
        # 4'. Y_off_i = L[i, -1] S_c C_i:  dS_c += sum_i L[i, -1] dY'_i C_i^T
        dS_c = dS_c + _state_out_adjoint(p, Lm, s, e, g, S[c], dL, dCh)
        # 2'. U_c = sum_j L[-1, j] Xd_j B_j^T
        _state_in_adjoint(p, Lm, s, e, dU, Xd, dL, dXd, dBh)
        # 1'. Y_diag = (L o C B^T) Xd on the chunk
        _intra_adjoint(p, Lm, s, e, g, Xd, dL, dXd, dBh, dCh)
        # L = exp(segsum([0, dt A])) on the chunk
        _decay_adjoint(p, Lm, dL, s, e, ddA)
        dS_next = dS_c
    dx, ddt, dA = _finish_dA(v, ddA, dXd, dx, dS_next)
    return _result(v, dx, ddt, dA, dBh, dCh, dD, dz, dS_next)
