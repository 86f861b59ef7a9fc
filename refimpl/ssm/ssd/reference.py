r"""Mamba-2's state space duality (SSD): the literal NumPy reference, one function per view.

The system (Dao & Gu 2024, Sec. 3-6; per batch ``b`` and head ``h``, scalar-times-identity ``A``)::

    dt_t   = clamp(softplus(dt_t + dt_bias), dt_min, dt_max)    (bias, softplus, clamp optional)
    a_t    = exp(dt_t A_h)                                     (A_h <= 0: one decay per head and step)
    S_t    = a_t S_{t-1} + dt_t x_t B_t^T                      (state (p n): headdim x dstate, "VxK")
    y_t    = S_t C_t + D x_t                                   (D per head (h,) or per channel (h, p))
    out_t  = y_t * silu(z_t)                                   (z gate optional)

Equivalently (the duality), ``Y = (L o C B^T) (dt x)`` with the 1-semiseparable mask
``L[i, j] = exp(sum_{k=j+1}^{i} dt_k A)`` for ``i >= j`` (0 above): causal linear attention with
queries ``C``, keys ``B``, values ``dt x`` and a decay per step.

Shapes (einops style)
---------------------
* ``x``, ``z``: ``(b l h p)``;  ``dt``: ``(b l h)``;  ``A``, ``dt_bias``: ``(h,)`` real;
  ``B``, ``C``: ``(b l g n)`` with ``g`` dividing ``h``, head ``h`` reading group ``h // (H / g)``;
  ``D``: ``(h,)`` or ``(h, p)``;  ``initial_states``: ``(b h p n)``;  ``seq_idx``: ``(b l)`` integers,
  non-decreasing along ``l``.  Returns ``y``: ``(b l h p)`` and, with ``return_final_states=True``,
  the state after the last step ``(b h p n)``.

Conventions
-----------
* softplus with threshold 20 (``x`` above it), applied after adding ``dt_bias``; ``dt_limit = (lo, hi)``
  clamps afterwards (default ``(0, inf)``: no clamp), as in Mamba-2's kernels.
* ``seq_idx`` packs several sequences into one row: where ``seq_idx[t] != seq_idx[t-1]`` the state
  restarts from zero (no state flows across the boundary, and no attention entry either).  The
  initial state belongs to the first sequence of the row; the final state is the last sequence's.
* The effective ``dt`` must be ``>= 0`` and ``A <= 0`` unless ``allow_unstable=True``.
* Working dtype: ``np.result_type`` of the inputs; no silent downcast.

Views
-----
* :func:`recurrent` -- the linear recurrence, step by step.
* :func:`quadratic` -- the attention form ``Y = (L o C B^T) (dt x)`` over the whole sequence, with
  ``L`` from a stable segment sum (:func:`refimpl.ssm.selective.reference.segsum`).
* :func:`chunked` -- Mamba-2's four steps: intra-chunk quadratic outputs, per-chunk states, the
  recurrence of states across chunks, state-to-output; any ``L`` (the last chunk may be short).
* :func:`step` -- one decode step; :func:`ssd` dispatches by ``view``.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape, result_dtype
from refimpl.ssm.selective.reference import segsum, silu, softplus

__all__ = ["VIEWS", "prepare", "effective_dt", "recurrent", "quadratic", "chunked", "step", "ssd"]

VIEWS = ("recurrent", "quadratic", "chunked")


@dataclasses.dataclass
class Prepared:
    x: np.ndarray
    dt: np.ndarray  # effective step (b l h)
    A: np.ndarray
    B: np.ndarray  # per head (b l h n)
    C: np.ndarray  # per head (b l h n)
    D: Optional[np.ndarray]  # (h p) or None
    z: Optional[np.ndarray]
    S0: Optional[np.ndarray]
    seq_idx: Optional[np.ndarray]
    dtype: np.dtype
    b: int
    l: int
    h: int
    p: int
    n: int
    g: int


def effective_dt(dt, dt_bias=None, dt_softplus: bool = False, dt_limit=(0.0, math.inf)) -> np.ndarray:
    r"""``dt = clamp(softplus(dt + dt_bias), lo, hi)``; ``dt`` ``(b l h)``, ``dt_bias`` ``(h,)``."""
    out = dt
    if dt_bias is not None:
        # dt + dt_bias
        out = out + dt_bias
    if dt_softplus:
        # softplus(dt + dt_bias)  (threshold 20)
        with np.errstate(over="ignore"):
            out = softplus(out)
    lo, hi = dt_limit
    if not (lo == 0.0 and hi == math.inf):
        # clamp to [lo, hi]
        out = np.clip(out, lo, hi)
    return out


def _check_limit(dt_limit):
    if not isinstance(dt_limit, (tuple, list)) or len(dt_limit) != 2:
        raise ValueError(f"dt_limit: expected a pair (lo, hi), got {dt_limit!r}")
    lo, hi = dt_limit
    for v, nm in ((lo, "lo"), (hi, "hi")):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise TypeError(f"dt_limit: expected real numbers (lo, hi), got {nm} = {v!r}")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"dt_limit: expected 0 <= lo <= hi, got ({lo}, {hi})")
    return float(lo), float(hi)


def _check_bool(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__} {v!r}")
    return bool(v)


def prepare(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus: bool = False,
            dt_limit=(0.0, math.inf), initial_states=None, seq_idx=None, allow_unstable: bool = False) -> Prepared:
    """Validate every argument and compute the effective ``dt``; see the module docstring."""
    dt_softplus = _check_bool(dt_softplus, "dt_softplus")
    allow_unstable = _check_bool(allow_unstable, "allow_unstable")
    lo, hi = _check_limit(dt_limit)
    x = as_float_array(x, "x", ndim=4, allow_complex=False)
    b, l, h, p = x.shape
    dt = as_float_array(dt, "dt", ndim=3, allow_complex=False)
    check_shape(dt, "dt", (b, l, h), "(b, l, h) from x")
    A = as_float_array(A, "A", ndim=1, allow_complex=False)
    check_shape(A, "A", (h,), "(h,): one scalar per head (SSD's A is scalar times identity)")
    B = as_float_array(B, "B", ndim=4, allow_complex=False)
    C = as_float_array(C, "C", ndim=4, allow_complex=False)
    g, n = B.shape[2], B.shape[3]
    if g < 1 or h % g != 0:
        raise ValueError(f"B: the number of groups g = {g} (shape {B.shape}, layout (b, l, g, n)) must divide "
                         f"the number of heads h = {h}")
    check_shape(B, "B", (b, l, g, n), "(b, l, g, n)")
    check_shape(C, "C", (b, l, g, n), "(b, l, g, n) like B (same groups and state size)")
    if D is not None:
        D = as_float_array(D, "D", ndim=(1, 2), allow_complex=False)
        check_shape(D, "D", (h,) if D.ndim == 1 else (h, p), "(h,) or (h, p)")
    if z is not None:
        z = as_float_array(z, "z", ndim=4, allow_complex=False)
        check_shape(z, "z", (b, l, h, p), "(b, l, h, p) like x")
    if dt_bias is not None:
        dt_bias = as_float_array(dt_bias, "dt_bias", ndim=1, allow_complex=False)
        check_shape(dt_bias, "dt_bias", (h,), "(h,)")
    if initial_states is not None:
        initial_states = as_float_array(initial_states, "initial_states", ndim=4, allow_complex=False)
        check_shape(initial_states, "initial_states", (b, h, p, n), "(b, h, p, n)")
    if seq_idx is not None:
        seq_idx = np.asarray(seq_idx)
        if seq_idx.dtype.kind not in "iu":
            raise TypeError(f"seq_idx: expected an integer array, got dtype {seq_idx.dtype}")
        check_shape(seq_idx, "seq_idx", (b, l), "(b, l)")
        if l > 1 and np.any(np.diff(seq_idx, axis=1) < 0):
            bi, ti = (int(i) for i in np.argwhere(np.diff(seq_idx, axis=1) < 0)[0])
            raise ValueError(f"seq_idx: expected non-decreasing sequence indices along l, got "
                             f"{seq_idx[bi, ti]} then {seq_idx[bi, ti + 1]} at batch {bi}, position {ti + 1}")
    if not allow_unstable and np.any(A > 0):
        i = int(np.argwhere(A > 0)[0][0])
        raise ValueError(f"A: expected A <= 0 (decaying heads), got {A[i]} at index {i}; pass allow_unstable=True")
    dtype = result_dtype(x, dt, A, B, C, D, z, dt_bias, initial_states)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    x, dt, A, B, C, D, z, dt_bias, initial_states = (cast(a) for a in (x, dt, A, B, C, D, z, dt_bias, initial_states))
    dte = effective_dt(dt, dt_bias, dt_softplus, (lo, hi))
    if not np.all(np.isfinite(dte)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(dte))[0])
        raise ValueError(f"dt: the effective step is not finite at index {idx} (got {dte[idx]})")
    if not allow_unstable and dte.size and np.any(dte < 0):
        idx = tuple(int(i) for i in np.argwhere(dte < 0)[0])
        raise ValueError(f"dt: expected the effective step (dt + dt_bias, softplus, clamp) >= 0, got {dte[idx]} "
                         f"at index {idx}; use dt_softplus=True or pass allow_unstable=True")
    heads_group = np.arange(h) // (h // g)  # head h reads group h // (H/g)
    Dhp = None if D is None else (np.broadcast_to(D[:, None], (h, p)) if D.ndim == 1 else D)
    return Prepared(x=x, dt=dte.astype(dtype, copy=False), A=A, B=B[:, :, heads_group], C=C[:, :, heads_group],
                    D=Dhp, z=z, S0=initial_states, seq_idx=seq_idx, dtype=dtype, b=b, l=l, h=h, p=p, n=n, g=g)


def _output(p: Prepared, y: np.ndarray) -> np.ndarray:
    if p.D is not None:
        # y = y + D x
        y = y + p.D * p.x
    if p.z is not None:
        # out = y * silu(z)
        y = y * silu(p.z)
    return y


def _starts(p: Prepared) -> np.ndarray:
    """Bool ``(b l)``: a new sequence starts at ``t`` (``seq_idx[t] != seq_idx[t-1]``)."""
    r = np.zeros((p.b, p.l), dtype=bool)
    if p.seq_idx is not None and p.l > 1:
        r[:, 1:] = p.seq_idx[:, 1:] != p.seq_idx[:, :-1]
    return r


def _init(p: Prepared) -> np.ndarray:
    return np.zeros((p.b, p.h, p.p, p.n), dtype=p.dtype) if p.S0 is None else p.S0.copy()


def _finish(y, S, ret):
    return (y, S) if ret else y


def recurrent(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus: bool = False, dt_limit=(0.0, math.inf),
              initial_states=None, seq_idx=None, return_final_states: bool = False, allow_unstable: bool = False):
    r"""The linear recurrence ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t``, step by step."""
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_states=initial_states, seq_idx=seq_idx, allow_unstable=allow_unstable)
    starts = _starts(p)
    S = _init(p)
    y = np.zeros((p.b, p.l, p.h, p.p), dtype=p.dtype)
    for t in range(p.l):
        # a new packed sequence starts at t: S_{t-1} = 0
        S = np.where(starts[:, t, None, None, None], 0, S)
        # a_t = exp(dt_t A)
        a_t = np.exp(p.dt[:, t] * p.A)  # (b h)
        # S_t = a_t S_{t-1} + dt_t x_t B_t^T
        S = a_t[..., None, None] * S + (p.dt[:, t, :, None] * p.x[:, t])[..., None] * p.B[:, t, :, None, :]
        # y_t = S_t C_t
        y[:, t] = np.einsum("bhpn,bhn->bhp", S, p.C[:, t])
    return _finish(_output(p, y), S, return_final_states)


def _mask_exp(P: np.ndarray) -> np.ndarray:
    """``exp(P)`` with the ``-inf`` (upper-triangle) entries exactly 0."""
    m = np.isneginf(P)
    return np.where(m, 0, np.exp(np.where(m, 0, P)))


def _block(p: Prepared, s: int, e: int, seg_prev) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The decay matrix of positions ``s..e-1`` with a virtual position in front (the entering state).

    ``Lm[b, h, i+1, j+1] = exp(sum_{k=j+1}^{i} dt_k A)`` (masked to 0 across a sequence boundary) and
    ``Lm[b, h, i+1, 0] = exp(sum_{k=s}^{i} dt_k A)`` (0 if position ``i`` is not in the entering state's
    sequence ``seg_prev``).  Built from a stable segment sum of ``[0, dt_s A, ..., dt_{e-1} A]``.
    """
    dA = np.moveaxis(p.dt[:, s:e] * p.A, 1, -1)  # (b h T)
    xpad = np.concatenate([np.zeros_like(dA[..., :1]), dA], axis=-1)
    # L = exp(segsum(dt A)), the 1-semiseparable mask
    Lm = _mask_exp(segsum(xpad))  # (b h T+1 T+1)
    if p.seq_idx is not None:
        sid = p.seq_idx[:, s:e]  # (b T)
        ids = np.concatenate([np.asarray(seg_prev).reshape(p.b, 1), sid], axis=1)  # (b T+1)
        same = ids[:, :, None] == ids[:, None, :]
        Lm = Lm * same[:, None]
    return Lm


def quadratic(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus: bool = False, dt_limit=(0.0, math.inf),
              initial_states=None, seq_idx=None, return_final_states: bool = False, allow_unstable: bool = False):
    r"""The attention ("dual") form over the whole sequence.

    ``Y_i = sum_{j<=i} L[i, j] (C_i . B_j) dt_j x_j + L[i, -1] S0 C_i`` with
    ``L[i, j] = exp(sum_{k=j+1}^{i} dt_k A)`` (and the virtual column ``-1`` for the initial state),
    ``final = sum_j L[L-1, j] dt_j x_j B_j^T + L[L-1, -1] S0``.  O(L^2): a reference, not a kernel.
    """
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_states=initial_states, seq_idx=seq_idx, allow_unstable=allow_unstable)
    S0 = _init(p)
    if p.l == 0:
        return _finish(_output(p, np.zeros((p.b, 0, p.h, p.p), dtype=p.dtype)), S0, return_final_states)
    seg0 = None if p.seq_idx is None else p.seq_idx[:, 0]
    Lm = _block(p, 0, p.l, seg0)
    # (C B^T)_{ij} = C_i . B_j, per head
    CB = np.einsum("bihn,bjhn->bhij", p.C, p.B)
    # Y = (L o C B^T) (dt x)
    Xd = p.dt[..., None] * p.x  # (b l h p)
    y = np.einsum("bhij,bjhp->bihp", Lm[..., 1:, 1:] * CB, Xd)
    # + L[i, -1] S0 C_i
    y = y + np.moveaxis(Lm[..., 1:, 0], -1, 1)[..., None] * np.einsum("bhpn,bihn->bihp", S0, p.C)
    # final = sum_j L[L-1, j] dt_j x_j B_j^T + L[L-1, -1] S0
    final = np.einsum("bhj,bjhp,bjhn->bhpn", Lm[..., -1, 1:], Xd, p.B) + Lm[..., -1, 0][..., None, None] * S0
    return _finish(_output(p, y), final, return_final_states)


def chunked(x, dt, A, B, C, D=None, z=None, *, chunk: int = 64, dt_bias=None, dt_softplus: bool = False,
            dt_limit=(0.0, math.inf), initial_states=None, seq_idx=None, return_final_states: bool = False,
            allow_unstable: bool = False):
    r"""Mamba-2's chunked algorithm, any length (chunks ``[s, s+T)``, ``T <= chunk``; the last may be short).

    1. intra-chunk (diagonal blocks): ``Y_diag_i = sum_{s<=j<=i} L[i, j] (C_i . B_j) dt_j x_j``;
    2. chunk states (zero entering state): ``U_c = sum_j L[e-1, j] dt_j x_j B_j^T``;
    3. states across chunks: ``S_{c+1} = G_c S_c + U_c`` with ``G_c = exp(sum_{k in c} dt_k A)``
       (0 when a sequence boundary falls inside the chunk), ``S_0`` = the initial state;
    4. state to output: ``Y_off_i = exp(sum_{k=s}^{i} dt_k A) S_c C_i`` (0 for positions not in the
       entering state's sequence).
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_states=initial_states, seq_idx=seq_idx, allow_unstable=allow_unstable)
    bounds = [(s, min(s + chunk, p.l)) for s in range(0, p.l, chunk)]
    Xd = p.dt[..., None] * p.x  # dt_j x_j: (b l h p)
    seg_in = [None if p.seq_idx is None else p.seq_idx[:, max(s - 1, 0)] for s, _ in bounds]
    blocks = [_block(p, s, e, sp) for (s, e), sp in zip(bounds, seg_in)]
    y = np.zeros((p.b, p.l, p.h, p.p), dtype=p.dtype)
    U = []
    G = []
    for (s, e), Lm in zip(bounds, blocks):
        # 1. Y_diag = (L o C B^T) (dt x) within the chunk
        CB = np.einsum("bihn,bjhn->bhij", p.C[:, s:e], p.B[:, s:e])
        y[:, s:e] = np.einsum("bhij,bjhp->bihp", Lm[..., 1:, 1:] * CB, Xd[:, s:e])
        # 2. U_c = sum_j L[e-1, j] dt_j x_j B_j^T  (the chunk's own contribution to its last state)
        U.append(np.einsum("bhj,bjhp,bjhn->bhpn", Lm[..., -1, 1:], Xd[:, s:e], p.B[:, s:e]))
        # G_c = exp(sum_{k in chunk} dt_k A) (0 across a boundary: the virtual column of the last row)
        G.append(Lm[..., -1, 0])
    # 3. S_{c+1} = G_c S_c + U_c
    S = [_init(p)]
    for c in range(len(bounds)):
        S.append(G[c][..., None, None] * S[c] + U[c])
    # 4. Y_off_i = exp(sum_{k=s}^{i} dt_k A) S_c C_i
    for c, ((s, e), Lm) in enumerate(zip(bounds, blocks)):
        y[:, s:e] += np.moveaxis(Lm[..., 1:, 0], -1, 1)[..., None] * np.einsum("bhpn,bihn->bihp", S[c], p.C[:, s:e])
    return _finish(_output(p, y), S[-1], return_final_states)


def step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, *, dt_bias=None, dt_softplus: bool = False,
         dt_limit=(0.0, math.inf), allow_unstable: bool = False):
    r"""One decode step ``(S_{t-1}, x_t, dt_t, B_t, C_t, z_t) -> (S_t, y_t)``; nothing modified in place.

    Shapes: ``state`` ``(b h p n)``; ``x_t``, ``z_t`` ``(b h p)``; ``dt_t`` ``(b h)``; ``B_t``, ``C_t`` ``(b g n)``.
    It is :func:`recurrent` on a length-1 sequence with ``initial_states = state``.
    """
    if state is None:
        raise TypeError("state: expected the (b, h, p, n) state array, got None")
    x_t = as_float_array(x_t, "x_t", ndim=3, allow_complex=False)
    dt_t = as_float_array(dt_t, "dt_t", ndim=2, allow_complex=False)
    B_t = as_float_array(B_t, "B_t", ndim=3, allow_complex=False)
    C_t = as_float_array(C_t, "C_t", ndim=3, allow_complex=False)
    zz = None if z_t is None else as_float_array(z_t, "z_t", ndim=3, allow_complex=False)[:, None]
    y, S = recurrent(x_t[:, None], dt_t[:, None], A, B_t[:, None], C_t[:, None], D, zz, dt_bias=dt_bias,
                     dt_softplus=dt_softplus, dt_limit=dt_limit, initial_states=state, return_final_states=True,
                     allow_unstable=allow_unstable)
    return S, y[:, 0]


def ssd(x, dt, A, B, C, D=None, z=None, *, view: str = "chunked", chunk: int = 64, **kwargs):
    """Dispatch to :func:`recurrent`, :func:`quadratic` or :func:`chunked` (``chunk`` only for the last)."""
    check_choice(view, "view", VIEWS)
    if view == "chunked":
        return chunked(x, dt, A, B, C, D, z, chunk=chunk, **kwargs)
    return {"recurrent": recurrent, "quadratic": quadratic}[view](x, dt, A, B, C, D, z, **kwargs)
