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
  ``D``: ``(h,)`` or ``(h, p)``;  ``initial_state``: ``(b h p n)``;  ``seq_idx``: ``(b l)`` integers,
  non-decreasing along ``l``.  Returns ``y``: ``(b l h p)``, or with ``return_final_state=True``
  ``(y, final_state)``, the state after the last step ``(b h p n)`` (the initial state, or zeros, when
  ``l = 0``).

Conventions
-----------
* softplus with threshold 20 (``x`` above it), applied after adding ``dt_bias``; ``dt_limit = (lo, hi)``
  clamps afterwards (default ``(0, inf)``: no clamp), as in Mamba-2's kernels.
* ``seq_idx`` packs several sequences into one row: where ``seq_idx[t] != seq_idx[t-1]`` the state
  restarts from zero (no state flows across the boundary, and no attention entry either).  The
  initial state belongs to the first sequence of the row; the final state is the last sequence's.
* The effective ``dt`` must be ``>= 0`` and ``A <= 0`` unless ``allow_unstable=True``.
* Working dtype: ``np.result_type`` of the inputs; no silent downcast.

Views (the entry point :func:`refimpl.ssm.ssd.ssd_scan` dispatches on ``view``)
---------------------------------------------------------------------------------
* :func:`recurrent` -- the linear recurrence, step by step.
* :func:`quadratic` -- the attention form ``Y = (L o C B^T) (dt x)`` over the whole sequence, with
  ``L`` from a stable segment sum (:func:`refimpl.ssm.selective.reference.segsum`).
* :func:`chunked` -- Mamba-2's four steps: intra-chunk quadratic outputs, per-chunk states, the
  recurrence of states across chunks, state-to-output; any ``L`` (the last chunk may be short).
* :func:`step` -- one decode step ``(state, x_t, ...) -> (y_t, state_t)``, the single-step formula.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype
from refimpl.ssm.selective.reference import segsum, silu, softplus

__all__ = ["prepare", "effective_dt", "recurrent", "quadratic", "chunked", "step"]


@dataclasses.dataclass
class Prepared:
    x: np.ndarray
    dt: np.ndarray  # effective step (b l h)
    A: np.ndarray
    B: np.ndarray  # per head (b l h n)
    C: np.ndarray  # per head (b l h n)
    D: Optional[np.ndarray]  # (h p) or None
    z: Optional[np.ndarray]
    initial_state: Optional[np.ndarray]  # (b h p n)
    seq_idx: Optional[np.ndarray]
    dtype: np.dtype
    b: int
    l: int
    h: int
    p: int
    n: int
    g: int


def _check_limit(dt_limit) -> Tuple[float, float]:
    if not isinstance(dt_limit, (tuple, list)) or len(dt_limit) != 2:
        raise ValueError(f"dt_limit: expected a pair (lo, hi), got {dt_limit!r}")
    lo, hi = dt_limit
    for v, nm in ((lo, "lo"), (hi, "hi")):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise TypeError(f"dt_limit: expected real numbers (lo, hi), got {nm} = {v!r}")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"dt_limit: expected 0 <= lo <= hi, got ({lo}, {hi})")
    return float(lo), float(hi)


def _dt_formula(dt: np.ndarray, dt_bias: Optional[np.ndarray], dt_softplus: bool, dt_limit) -> np.ndarray:
    out = dt
    if dt_bias is not None:
        # dt + dt_bias  (one bias per head, the last axis)
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


def effective_dt(dt, dt_bias=None, dt_softplus: bool = False, dt_limit=(0.0, math.inf)) -> np.ndarray:
    r"""``dt = clamp(softplus(dt + dt_bias), lo, hi)`` (each part optional).

    ``dt``: ``(... h)`` (heads last, e.g. ``(b l h)``); ``dt_bias``: ``(h,)``; ``dt_limit = (lo, hi)`` with
    ``0 <= lo <= hi``.  Validated like :func:`ssd_scan`'s own arguments (real floats, finite, the bias
    exactly ``(h,)``: no broadcasting of a ``()`` or ``(1, h)`` bias).
    """
    dt_softplus = check_bool(dt_softplus, "dt_softplus")
    limit = _check_limit(dt_limit)
    dt = as_float_array(dt, "dt", allow_complex=False)
    if dt.ndim < 1:
        raise ValueError(f"dt: expected an array with heads on the last axis, got shape {dt.shape}")
    if dt_bias is not None:
        dt_bias = as_float_array(dt_bias, "dt_bias", ndim=1, allow_complex=False)
        check_shape(dt_bias, "dt_bias", (dt.shape[-1],), "(h,): one bias per head (dt's last axis)")
    dtype = result_dtype(dt, dt_bias)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    return _dt_formula(cast(dt), cast(dt_bias), dt_softplus, limit)


def _check_dt(dte: np.ndarray, allow_unstable: bool, name: str = "dt") -> None:
    if not np.all(np.isfinite(dte)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(dte))[0])
        raise ValueError(f"{name}: the effective step is not finite at index {idx} (got {dte[idx]})")
    if not allow_unstable and dte.size and np.any(dte < 0):
        idx = tuple(int(i) for i in np.argwhere(dte < 0)[0])
        raise ValueError(f"{name}: expected the effective step ({name} + dt_bias, softplus, clamp) >= 0, got "
                         f"{dte[idx]} at index {idx}; use dt_softplus=True or pass allow_unstable=True")


def _check_A(A, allow_unstable: bool) -> np.ndarray:
    A = as_float_array(A, "A", ndim=1, allow_complex=False)
    if not allow_unstable and np.any(A > 0):
        i = int(np.argwhere(A > 0)[0][0])
        raise ValueError(f"A: expected A <= 0 (decaying heads), got {A[i]} at index {i}; pass allow_unstable=True")
    return A


def _check_D(D, h: int, p: int) -> Optional[np.ndarray]:
    if D is None:
        return None
    D = as_float_array(D, "D", ndim=(1, 2), allow_complex=False)
    check_shape(D, "D", (h,) if D.ndim == 1 else (h, p), "(h,) or (h, p)")
    return D


def prepare(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus: bool = False,
            dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, allow_unstable: bool = False,
            expand_groups: bool = True, finite_x: bool = True) -> Prepared:
    """Validate every argument and compute the effective ``dt``; see the module docstring.

    ``expand_groups=False`` keeps ``B`` and ``C`` in their grouped layout ``(b, l, g, n)`` (a kernel that reads
    head h's group h // (H/g) itself); by default they are expanded to one row per head, ``(b, l, h, n)``.
    ``finite_x=False`` leaves out the finiteness of ``x`` (a kernel that checks it in its own pass and then raises
    this function's error through :func:`refimpl._validate.check_finite`)."""
    dt_softplus = check_bool(dt_softplus, "dt_softplus")
    allow_unstable = check_bool(allow_unstable, "allow_unstable")
    limit = _check_limit(dt_limit)
    x = as_float_array(x, "x", ndim=4, allow_complex=False, finite=finite_x)
    b, l, h, p = x.shape
    dt = as_float_array(dt, "dt", ndim=3, allow_complex=False)
    check_shape(dt, "dt", (b, l, h), "(b, l, h) from x")
    A = _check_A(A, allow_unstable)
    check_shape(A, "A", (h,), "(h,): one scalar per head (SSD's A is scalar times identity)")
    B = as_float_array(B, "B", ndim=4, allow_complex=False)
    C = as_float_array(C, "C", ndim=4, allow_complex=False)
    g, n = B.shape[2], B.shape[3]
    if g < 1 or h % g != 0:
        raise ValueError(f"B: the number of groups g = {g} (shape {B.shape}, layout (b, l, g, n)) must divide "
                         f"the number of heads h = {h}")
    check_shape(B, "B", (b, l, g, n), "(b, l, g, n)")
    check_shape(C, "C", (b, l, g, n), "(b, l, g, n) like B (same groups and state size)")
    D = _check_D(D, h, p)
    if z is not None:
        z = as_float_array(z, "z", ndim=4, allow_complex=False)
        check_shape(z, "z", (b, l, h, p), "(b, l, h, p) like x")
    if dt_bias is not None:
        dt_bias = as_float_array(dt_bias, "dt_bias", ndim=1, allow_complex=False)
        check_shape(dt_bias, "dt_bias", (h,), "(h,)")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=4, allow_complex=False)
        check_shape(initial_state, "initial_state", (b, h, p, n), "(b, h, p, n)")
    if seq_idx is not None:
        seq_idx = np.asarray(seq_idx)
        if seq_idx.dtype.kind not in "iu":
            raise TypeError(f"seq_idx: expected an integer array, got dtype {seq_idx.dtype}")
        check_shape(seq_idx, "seq_idx", (b, l), "(b, l)")
        if l > 1 and np.any(np.diff(seq_idx, axis=1) < 0):
            bi, ti = (int(i) for i in np.argwhere(np.diff(seq_idx, axis=1) < 0)[0])
            raise ValueError(f"seq_idx: expected non-decreasing sequence indices along l, got "
                             f"{seq_idx[bi, ti]} then {seq_idx[bi, ti + 1]} at batch {bi}, position {ti + 1}")
    dtype = result_dtype(x, dt, A, B, C, D, z, dt_bias, initial_state)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    x, dt, A, B, C, D, z, dt_bias, initial_state = (cast(a) for a in (x, dt, A, B, C, D, z, dt_bias, initial_state))
    dte = _dt_formula(dt, dt_bias, dt_softplus, limit)
    _check_dt(dte, allow_unstable)
    heads_group = np.arange(h) // (h // g)  # head h reads group h // (H/g)
    Dhp = None if D is None else (np.broadcast_to(D[:, None], (h, p)) if D.ndim == 1 else D)
    if expand_groups:
        B, C = B[:, :, heads_group], C[:, :, heads_group]
    return Prepared(x=x, dt=dte.astype(dtype, copy=False), A=A, B=B, C=C,
                    D=Dhp, z=z, initial_state=initial_state, seq_idx=seq_idx, dtype=dtype, b=b, l=l, h=h, p=p, n=n, g=g)


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
    return np.zeros((p.b, p.h, p.p, p.n), dtype=p.dtype) if p.initial_state is None else p.initial_state.copy()


def _finish(y, S, ret):
    return (y, S) if ret else y


def recurrent(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus: bool = False, dt_limit=(0.0, math.inf),
              initial_state=None, seq_idx=None, return_final_state: bool = False, allow_unstable: bool = False):
    r"""The linear recurrence ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t``, step by step."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
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
    return _finish(_output(p, y), S, return_final_state)


def _mask_exp(P: np.ndarray) -> np.ndarray:
    """``exp(P)`` with the ``-inf`` (upper-triangle) entries exactly 0."""
    m = np.isneginf(P)
    return np.where(m, 0, np.exp(np.where(m, 0, P)))


def _block(p: Prepared, s: int, e: int, seg_prev) -> np.ndarray:
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
              initial_state=None, seq_idx=None, return_final_state: bool = False, allow_unstable: bool = False):
    r"""The attention ("dual") form over the whole sequence.

    ``Y_i = sum_{j<=i} L[i, j] (C_i . B_j) dt_j x_j + L[i, -1] S_{-1} C_i`` with
    ``L[i, j] = exp(sum_{k=j+1}^{i} dt_k A)`` (and the virtual column ``-1`` for the initial state),
    ``final = sum_j L[L-1, j] dt_j x_j B_j^T + L[L-1, -1] S_{-1}``.  O(L^2): a reference, not a kernel.
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
    S0 = _init(p)
    if p.l == 0:
        return _finish(_output(p, np.zeros((p.b, 0, p.h, p.p), dtype=p.dtype)), S0, return_final_state)
    seg0 = None if p.seq_idx is None else p.seq_idx[:, 0]
    Lm = _block(p, 0, p.l, seg0)
    # (C B^T)_{ij} = C_i . B_j, per head
    CB = np.einsum("bihn,bjhn->bhij", p.C, p.B)
    # Y = (L o C B^T) (dt x)
    Xd = p.dt[..., None] * p.x  # (b l h p)
    y = np.einsum("bhij,bjhp->bihp", Lm[..., 1:, 1:] * CB, Xd)
    # + L[i, -1] S_{-1} C_i
    y = y + np.moveaxis(Lm[..., 1:, 0], -1, 1)[..., None] * np.einsum("bhpn,bihn->bihp", S0, p.C)
    # final = sum_j L[L-1, j] dt_j x_j B_j^T + L[L-1, -1] S_{-1}
    final = np.einsum("bhj,bjhp,bjhn->bhpn", Lm[..., -1, 1:], Xd, p.B) + Lm[..., -1, 0][..., None, None] * S0
    return _finish(_output(p, y), final, return_final_state)


def chunked(x, dt, A, B, C, D=None, z=None, *, chunk: int = 64, dt_bias=None, dt_softplus: bool = False,
            dt_limit=(0.0, math.inf), initial_state=None, seq_idx=None, return_final_state: bool = False,
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
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(x, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit,
                initial_state=initial_state, seq_idx=seq_idx, allow_unstable=allow_unstable)
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
    return _finish(_output(p, y), S[-1], return_final_state)


@dataclasses.dataclass
class _Step:
    state: np.ndarray  # (b h p n)
    x: np.ndarray  # (b h p)
    dt: np.ndarray  # effective step (b h)
    A: np.ndarray  # (h,)
    B: np.ndarray  # per head (b h n)
    C: np.ndarray  # per head (b h n)
    D: Optional[np.ndarray]  # (h p) or None
    z: Optional[np.ndarray]


def _prepare_step(state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias, dt_softplus, dt_limit, allow_unstable) -> _Step:
    """Validate one decode step: ``h`` comes from ``A``, ``(b, p, n)`` from ``state``; every other argument is
    checked against them, so a mismatch is blamed on the argument that has it."""
    dt_softplus = check_bool(dt_softplus, "dt_softplus")
    allow_unstable = check_bool(allow_unstable, "allow_unstable")
    limit = _check_limit(dt_limit)
    A = _check_A(A, allow_unstable)
    h = A.shape[0]
    state = as_float_array(state, "state", ndim=4, allow_complex=False)
    b, _, p, n = state.shape
    check_shape(state, "state", (b, h, p, n), "(b, h, p, n) with h from A")
    x_t = as_float_array(x_t, "x_t", ndim=3, allow_complex=False)
    check_shape(x_t, "x_t", (b, h, p), "(b, h, p): b, p from state, h from A")
    dt_t = as_float_array(dt_t, "dt_t", ndim=2, allow_complex=False)
    check_shape(dt_t, "dt_t", (b, h), "(b, h): b from state, h from A")
    B_t = as_float_array(B_t, "B_t", ndim=3, allow_complex=False)
    g = B_t.shape[1]
    if g < 1 or h % g != 0:
        raise ValueError(f"B_t: the number of groups g = {g} (shape {B_t.shape}, layout (b, g, n)) must divide "
                         f"the number of heads h = {h}")
    check_shape(B_t, "B_t", (b, g, n), "(b, g, n): b, n from state")
    C_t = as_float_array(C_t, "C_t", ndim=3, allow_complex=False)
    check_shape(C_t, "C_t", (b, g, n), "(b, g, n) like B_t")
    D = _check_D(D, h, p)
    if z_t is not None:
        z_t = as_float_array(z_t, "z_t", ndim=3, allow_complex=False)
        check_shape(z_t, "z_t", (b, h, p), "(b, h, p) like x_t")
    if dt_bias is not None:
        dt_bias = as_float_array(dt_bias, "dt_bias", ndim=1, allow_complex=False)
        check_shape(dt_bias, "dt_bias", (h,), "(h,)")
    dtype = result_dtype(state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias = (cast(a) for a in (state, x_t, dt_t, A, B_t, C_t, D, z_t,
                                                                        dt_bias))
    dte = _dt_formula(dt_t, dt_bias, dt_softplus, limit)
    _check_dt(dte, allow_unstable, name="dt_t")
    heads_group = np.arange(h) // (h // g)  # head h reads group h // (H/g)
    Dhp = None if D is None else (np.broadcast_to(D[:, None], (h, p)) if D.ndim == 1 else D)
    return _Step(state=state, x=x_t, dt=dte, A=A, B=B_t[:, heads_group], C=C_t[:, heads_group], D=Dhp, z=z_t)


def step(state, x_t, dt_t, A, B_t, C_t, D=None, z_t=None, *, dt_bias=None, dt_softplus: bool = False,
         dt_limit=(0.0, math.inf), allow_unstable: bool = False):
    r"""One decode step ``(S_{t-1}, x_t, dt_t, B_t, C_t, z_t) -> (y_t, S_t)``; nothing is modified in place.

    Shapes: ``state`` ``(b h p n)``; ``x_t``, ``z_t`` ``(b h p)``; ``dt_t`` ``(b h)``; ``B_t``, ``C_t`` ``(b g n)``.
    Returns ``(y_t, state_t)``: ``(b h p)`` and ``(b h p n)``.  The same arithmetic, in the same order, as
    one iteration of :func:`recurrent`.
    """
    s = _prepare_step(state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias, dt_softplus, dt_limit, allow_unstable)
    # a_t = exp(dt_t A)
    a_t = np.exp(s.dt * s.A)  # (b h)
    # S_t = a_t S_{t-1} + dt_t x_t B_t^T
    S = a_t[..., None, None] * s.state + (s.dt[..., None] * s.x)[..., None] * s.B[:, :, None, :]
    # y_t = S_t C_t
    y = np.einsum("bhpn,bhn->bhp", S, s.C)
    if s.D is not None:
        # y_t = y_t + D x_t
        y = y + s.D * s.x
    if s.z is not None:
        # out_t = y_t * silu(z_t)
        y = y * silu(s.z)
    return y, S
