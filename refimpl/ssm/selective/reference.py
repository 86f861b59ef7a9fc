r"""Mamba's selective scan (S6): the literal NumPy reference, one function per view.

The system (Gu & Dao 2023, Alg. 2; per batch ``b`` and channel ``d``, diagonal state of size ``N``)::

    Delta_t   = softplus(delta_t + delta_bias)        (softplus and bias optional)
    A_bar_t   = exp(Delta_t A)                         (ZOH for A, always)
    B_bar_t   = Delta_t B_t                            (discretization="mamba": Euler for B, the default)
              = Delta_t phi1(Delta_t A) B_t            (discretization="zoh": exact ZOH, phi1(z) = (e^z - 1)/z)
    h_t       = A_bar_t * h_{t-1} + B_bar_t u_t        (elementwise over n; h_{-1} = h0, default 0)
    y_t       = sum_n C_t[n] h_t[n]                    (real A)
              = 2 Re(sum_n C_t[n] h_t[n])              (complex A: the state holds one of each conjugate pair)
    out_t     = (y_t + D u_t) * silu(z_t)              (D skip and z gate optional; silu(z) = z sigmoid(z))

Shapes (einops style)
---------------------
* ``u``, ``delta``, ``z``: ``(b d l)``;  ``A``: ``(d n)`` real or complex;
  ``D``, ``delta_bias``: ``(d,)``.
* ``B``, ``C``, each independently one of: fixed ``(d n)``; variable ``(b n l)`` (shared by every
  channel); grouped ``(b g n l)`` with ``g`` dividing ``d``, channel ``d`` using group
  ``d // (d_model / g)`` (contiguous blocks of channels share a group).  ``B``/``C`` may be complex
  only when ``A`` is.
* ``h0`` (optional): ``(b d n)``, the state before step 0.  Returns ``out``: ``(b d l)`` (real),
  and with ``return_last_state=True`` also ``h_{L-1}``: ``(b d n)`` (complex for complex ``A``;
  equal to ``h0``, or zeros, when ``L = 0``).  Feeding it back as ``h0`` continues the sequence.

Conventions
-----------
* softplus: ``log1p(exp(x))`` for ``x <= 20`` and ``x`` above (threshold 20, as PyTorch's default
  and Mamba's kernels).  ``delta_bias`` is added before the softplus.
* The effective ``Delta`` must be ``>= 0`` and ``Re(A) <= 0`` (a decaying, or for ``A = 0``
  accumulating, state); ``allow_unstable=True`` lifts both checks.
* Complex ``A`` follows Mamba's ``2 Re`` output convention (S4D's conjugate-pair halving); the
  returned state is the complex state itself.
* Working dtype: ``np.result_type`` of the inputs (float32 stays float32 only when every input is
  float32 / complex64).  ``out`` has the real dtype of the working dtype.

Views
-----
* :func:`recurrent` -- the literal loop over ``t``.
* :func:`scan` -- Hillis--Steele parallel prefix over pairs ``(log A_bar_t, B_bar_t u_t)`` with the
  operator ``(la_i, b_i) . (la_j, b_j) = (la_i + la_j, exp(la_j) b_i + b_j)``: decay products are
  kept as sums of logs (``log A_bar_t = Delta_t A`` exactly), exponentiated once per combination.
* :func:`chunked` -- within a chunk the states from a stable segment sum of ``Delta A``, across
  chunks the state is passed on (any ``L``, the last chunk may be short).
* :func:`step` -- one decode step ``(h_{t-1}, u_t, ...) -> (h_t, out_t)``.
* :func:`selective_scan` -- dispatch by ``view`` name.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import scipy.special

from refimpl._validate import as_float_array, check_choice, check_int, check_shape, real_dtype, result_dtype

__all__ = [
    "SOFTPLUS_THRESHOLD",
    "DISCRETIZATIONS",
    "VIEWS",
    "softplus",
    "silu",
    "phi1",
    "effective_delta",
    "prepare",
    "recurrent",
    "scan",
    "chunked",
    "step",
    "selective_scan",
    "segsum",
]

SOFTPLUS_THRESHOLD = 20.0
DISCRETIZATIONS = ("mamba", "zoh")
VIEWS = ("recurrent", "scan", "chunked")


def softplus(x: np.ndarray) -> np.ndarray:
    r"""``softplus(x) = log(1 + e^x)`` for ``x <= 20``, ``x`` above (the threshold of PyTorch/Mamba)."""
    x = np.asarray(x)
    # exp is evaluated only where it is used, so no overflow warning above the threshold
    safe = np.where(x <= SOFTPLUS_THRESHOLD, x, 0)
    return np.where(x <= SOFTPLUS_THRESHOLD, np.log1p(np.exp(safe)), x)


def silu(z: np.ndarray) -> np.ndarray:
    r"""``silu(z) = z sigmoid(z)`` (``scipy.special.expit``: no overflow for large ``|z|``)."""
    return z * scipy.special.expit(z)


PHI1_TAYLOR = 1e-5


def phi1(x: np.ndarray) -> np.ndarray:
    r"""``phi1(x) = (e^x - 1)/x`` elementwise via ``expm1`` (no cancellation).

    For ``|x| < 1e-5`` the series ``1 + x/2 + x^2/6`` (truncation ``|x|^3/24 < 4.2e-17``, below
    float64's unit roundoff) -- no division by a tiny or subnormal ``x``, exact ``1`` at ``x = 0``.
    """
    x = np.asarray(x)
    small = np.abs(x) < PHI1_TAYLOR
    safe = np.where(small, 1, x)
    # phi1(x) = 1 + x/2 + x^2/6 + O(x^3)   for |x| < 1e-5
    series = 1 + x / 2 + x * x / 6
    return np.where(small, series, np.expm1(safe) / safe)


def effective_delta(delta, delta_bias=None, delta_softplus: bool = False) -> np.ndarray:
    r"""``Delta = softplus(delta + delta_bias)`` (each part optional); ``delta``: ``(... d l)``, bias ``(d,)``."""
    out = delta
    if delta_bias is not None:
        # delta + delta_bias (bias per channel, broadcast over l)
        out = out + delta_bias[:, None]
    if delta_softplus:
        # Delta = softplus(delta + delta_bias)
        out = softplus(out)
    return out


@dataclasses.dataclass
class Prepared:
    """Validated inputs of a selective scan, cast to the working dtype."""

    u: np.ndarray
    delta: np.ndarray  # the raw delta (cast)
    Delta: np.ndarray  # effective step: softplus(delta + bias), (b d l), real
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: Optional[np.ndarray]
    z: Optional[np.ndarray]
    delta_bias: Optional[np.ndarray]
    h0: Optional[np.ndarray]
    B_mode: str  # "fixed" | "variable" | "grouped"
    C_mode: str
    discretization: str
    dtype: np.dtype  # working dtype (complex when A is)
    out_dtype: np.dtype  # real
    b: int
    d: int
    l: int
    n: int


def _bc_mode(X: np.ndarray, name: str, b: int, d: int, l: int, n: int) -> str:
    if X.ndim == 2:
        check_shape(X, name, (d, n), "(d, n): a fixed per-channel matrix")
        return "fixed"
    if X.ndim == 3:
        check_shape(X, name, (b, n, l), "(b, n, l): variable, shared by every channel")
        return "variable"
    g = X.shape[1]
    if g < 1 or d % g != 0:
        raise ValueError(f"{name}: grouped layout (b, g, n, l) needs g dividing d = {d}, got g = {g} (shape {X.shape})")
    check_shape(X, name, (b, g, n, l), "(b, g, n, l): grouped")
    return "grouped"


def _check_bool(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(v).__name__} {v!r}")
    return bool(v)


def prepare(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False, h0=None,
            discretization: str = "mamba", allow_unstable: bool = False) -> Prepared:
    """Validate every argument (shapes, dtypes, finiteness, stability) and compute ``Delta``."""
    delta_softplus = _check_bool(delta_softplus, "delta_softplus")
    allow_unstable = _check_bool(allow_unstable, "allow_unstable")
    check_choice(discretization, "discretization", DISCRETIZATIONS)
    u = as_float_array(u, "u", ndim=3, allow_complex=False)
    b, d, l = u.shape
    delta = as_float_array(delta, "delta", ndim=3, allow_complex=False)
    check_shape(delta, "delta", (b, d, l), "(b, d, l) like u")
    A = as_float_array(A, "A", ndim=2)
    n = A.shape[1]
    check_shape(A, "A", (d, n), "(d, n) with d from u")
    a_complex = np.iscomplexobj(A)
    B = as_float_array(B, "B", ndim=(2, 3, 4))
    C = as_float_array(C, "C", ndim=(2, 3, 4))
    for X, name in ((B, "B"), (C, "C")):
        if np.iscomplexobj(X) and not a_complex:
            raise TypeError(f"{name}: complex {name} ({X.dtype}) needs a complex A, got A of dtype {A.dtype}")
    B_mode = _bc_mode(B, "B", b, d, l, n)
    C_mode = _bc_mode(C, "C", b, d, l, n)
    if D is not None:
        D = as_float_array(D, "D", ndim=1, allow_complex=False)
        check_shape(D, "D", (d,), "(d,)")
    if z is not None:
        z = as_float_array(z, "z", ndim=3, allow_complex=False)
        check_shape(z, "z", (b, d, l), "(b, d, l) like u")
    if delta_bias is not None:
        delta_bias = as_float_array(delta_bias, "delta_bias", ndim=1, allow_complex=False)
        check_shape(delta_bias, "delta_bias", (d,), "(d,)")
    if h0 is not None:
        h0 = as_float_array(h0, "h0", ndim=3)
        check_shape(h0, "h0", (b, d, n), "(b, d, n)")
        if np.iscomplexobj(h0) and not a_complex:
            raise TypeError(f"h0: a complex initial state ({h0.dtype}) needs a complex A, got A of dtype {A.dtype}")
    if not allow_unstable and A.size and np.any(A.real > 0):
        idx = tuple(int(i) for i in np.argwhere(A.real > 0)[0])
        raise ValueError(f"A: expected Re(A) <= 0 (a stable selective SSM), got {A[idx]} at index {idx}; "
                         "pass allow_unstable=True to allow growth")
    dtype = result_dtype(u, delta, A, B, C, D, z, delta_bias, h0)
    rdt = real_dtype(dtype)
    cast = lambda a, dt=dtype: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    u, delta, z, D, delta_bias = (cast(a, rdt) for a in (u, delta, z, D, delta_bias))
    A, B, C, h0 = (cast(a) for a in (A, B, C, h0))
    with np.errstate(over="ignore"):
        Delta = effective_delta(delta, delta_bias, delta_softplus)
    if not np.all(np.isfinite(Delta)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(Delta))[0])
        raise ValueError(f"delta: delta + delta_bias is not finite at index {idx} (got {Delta[idx]})")
    if not allow_unstable and Delta.size and np.any(Delta < 0):
        idx = tuple(int(i) for i in np.argwhere(Delta < 0)[0])
        raise ValueError(f"delta: expected the step Delta = {'softplus(' if delta_softplus else '('}delta + delta_bias) >= 0, "
                         f"got {Delta[idx]} at index {idx}; use delta_softplus=True or pass allow_unstable=True")
    return Prepared(u=u, delta=delta, Delta=Delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0,
                    B_mode=B_mode, C_mode=C_mode, discretization=discretization, dtype=dtype, out_dtype=rdt,
                    b=b, d=d, l=l, n=n)


def _per_channel(X: np.ndarray, mode: str, d: int) -> np.ndarray:
    """``B``/``C`` as ``(b d n l)`` (or ``(1 d n 1)`` for fixed), a broadcastable view or small copy.

    Grouped: channel ``d`` reads group ``d // (d_model / g)`` (``repeat b g n l -> b (g r) n l``).
    """
    if mode == "fixed":
        return X[None, :, :, None]
    if mode == "variable":
        return X[:, None, :, :]
    g = X.shape[1]
    return np.repeat(X, d // g, axis=1)


def _at(Xc: np.ndarray, t: int) -> np.ndarray:
    """Slice time ``t`` of a per-channel ``(b d n l)`` array (``l`` may be 1 for fixed)."""
    return Xc[..., t if Xc.shape[-1] > 1 else 0]


def _B_bar(p: Prepared, Delta: np.ndarray, B_t: np.ndarray, A_b: np.ndarray) -> np.ndarray:
    """``B_bar`` for steps ``Delta`` ``(...)``, ``B_t`` and ``A_b`` ``(... n)`` broadcastable against it."""
    if p.discretization == "mamba":
        # B_bar = Delta B   (Euler for B, Mamba's mix)
        return Delta[..., None] * B_t
    # B_bar = (exp(Delta A) - 1) A^{-1} B = Delta phi1(Delta A) B   (exact ZOH, no division by A)
    return Delta[..., None] * phi1(Delta[..., None] * A_b) * B_t


def _output(p: Prepared, y: np.ndarray) -> np.ndarray:
    """``out = (y + D u) * silu(z)`` with ``y`` ``(b d l)`` already real (2 Re for complex A)."""
    out = y.astype(p.out_dtype, copy=False)
    if p.D is not None:
        # out = y + D u
        out = out + p.D[:, None] * p.u
    if p.z is not None:
        # out = out * silu(z)
        out = out * silu(p.z)
    return out


def _readout(p: Prepared, C_t: np.ndarray, h_t: np.ndarray) -> np.ndarray:
    # y_t = sum_n C_t h_t  (2 Re(...) for complex A)
    y = np.sum(C_t * h_t, axis=-1)
    return 2.0 * y.real if np.iscomplexobj(p.A) else y


def _init_state(p: Prepared) -> np.ndarray:
    return np.zeros((p.b, p.d, p.n), dtype=p.dtype) if p.h0 is None else p.h0.copy()


def _finish(out, state, return_last_state):
    return (out, state) if return_last_state else out


def recurrent(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False, h0=None,
              return_last_state: bool = False, discretization: str = "mamba", allow_unstable: bool = False):
    r"""The literal sequential loop (the spec).  See the module docstring for shapes and conventions."""
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus, h0=h0,
                discretization=discretization, allow_unstable=allow_unstable)
    Bc, Cc = _per_channel(p.B, p.B_mode, p.d), _per_channel(p.C, p.C_mode, p.d)
    h_t = _init_state(p)
    y = np.zeros((p.b, p.d, p.l), dtype=p.out_dtype)
    for t in range(p.l):
        Delta_t = p.Delta[:, :, t]  # (b d)
        # A_bar_t = exp(Delta_t A)
        A_bar_t = np.exp(Delta_t[..., None] * p.A)
        # B_bar_t = Delta_t B_t (mamba) or Delta_t phi1(Delta_t A) B_t (zoh)
        B_bar_t = _B_bar(p, Delta_t, _at(Bc, t), p.A)
        # h_t = A_bar_t h_{t-1} + B_bar_t u_t
        h_t = A_bar_t * h_t + B_bar_t * p.u[:, :, t, None]
        # y_t = sum_n C_t h_t  (2 Re for complex A)
        y[:, :, t] = _readout(p, _at(Cc, t), h_t)
    return _finish(_output(p, y), h_t, return_last_state)


def _all_steps(p: Prepared):
    """``log A_bar = Delta A`` and ``B_bar u`` for every step, both ``(b d l n)``."""
    Bc = _per_channel(p.B, p.B_mode, p.d)
    # log A_bar_t = Delta_t A
    logA_bar = p.Delta[..., None] * p.A[None, :, None, :]
    B_full = np.moveaxis(Bc, -1, -2)  # (b d l n), or (1 d 1 n) for fixed B (broadcasts over b, l)
    # B_bar_t u_t
    Bu = _B_bar(p, p.Delta, B_full, p.A[None, :, None, :]) * p.u[..., None]
    return logA_bar.astype(p.dtype, copy=False), Bu.astype(p.dtype, copy=False)


def _C_full(p: Prepared) -> np.ndarray:
    Cc = _per_channel(p.C, p.C_mode, p.d)  # (b d n l) or (1 d n 1)
    return np.moveaxis(Cc, -1, -2)  # (b d l n) or (1 d 1 n): broadcasts over l


def scan(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False, h0=None,
         return_last_state: bool = False, discretization: str = "mamba", allow_unstable: bool = False):
    r"""Parallel associative scan over ``(log A_bar_t, B_bar_t u_t)`` (Hillis--Steele, ``ceil(log2 L)`` rounds).

    ``(la_i, b_i) . (la_j, b_j) = (la_i + la_j, exp(la_j) b_i + b_j)`` (``i`` first, then ``j``); after
    the last round element ``t`` holds ``(sum_{k<=t} Delta_k A, h_t)``.  The initial state is folded
    into ``b_0 <- b_0 + A_bar_0 h0``.  Materializes ``(b d l n)`` (it is the reference, not a kernel).
    """
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus, h0=h0,
                discretization=discretization, allow_unstable=allow_unstable)
    if p.l == 0:
        return _finish(_output(p, np.zeros((p.b, p.d, 0), dtype=p.out_dtype)), _init_state(p), return_last_state)
    la, bb = _all_steps(p)
    la, bb = la.copy(), bb.copy()
    if p.h0 is not None:
        # b_0 = A_bar_0 h0 + B_bar_0 u_0
        bb[:, :, 0] += np.exp(la[:, :, 0]) * p.h0
    offset = 1
    while offset < p.l:
        # e_t <- e_{t-offset} . e_t for every t >= offset (one parallel round):
        # b_t = exp(la_t) b_{t-offset} + b_t ;  la_t = la_{t-offset} + la_t
        new_b = np.exp(la[:, :, offset:]) * bb[:, :, :-offset] + bb[:, :, offset:]
        new_la = la[:, :, :-offset] + la[:, :, offset:]
        bb[:, :, offset:], la[:, :, offset:] = new_b, new_la
        offset *= 2
    # y_t = sum_n C_t h_t  (2 Re for complex A)
    y = _readout(p, _C_full(p), bb)
    return _finish(_output(p, y), bb[:, :, -1].copy(), return_last_state)


def segsum(x: np.ndarray) -> np.ndarray:
    r"""Stable segment sums along the last axis: ``S[..., i, j] = sum_{k=j+1}^{i} x_k`` for ``i >= j``, ``-inf`` above.

    Each entry is its own cumulative sum of the masked terms (no difference of two prefix
    sums, so no cancellation and no ``exp(+big) exp(-big)``).  ``x``: ``(... T)`` -> ``(... T T)``.
    """
    T = x.shape[-1]
    # X[..., i, j] = x_i for i > j, else 0
    X = np.broadcast_to(x[..., :, None], x.shape + (T,))
    strict = np.tril(np.ones((T, T), dtype=bool), k=-1)
    X = np.where(strict, X, 0)
    # S[..., i, j] = sum_{k <= i} X[..., k, j] = sum_{k=j+1}^{i} x_k
    S = np.cumsum(X, axis=-2)
    lower = np.tril(np.ones((T, T), dtype=bool), k=0)
    return np.where(lower, S, -np.inf)


def _exp_masked(S: np.ndarray) -> np.ndarray:
    """``exp(S)`` with the ``-inf`` (masked) entries exactly 0, real or complex."""
    mask = np.isneginf(S.real)
    return np.where(mask, 0, np.exp(np.where(mask, 0, S)))


def chunked(u, delta, A, B, C, D=None, z=None, *, chunk: int = 64, delta_bias=None, delta_softplus: bool = False,
            h0=None, return_last_state: bool = False, discretization: str = "mamba", allow_unstable: bool = False):
    r"""Chunked view: states within a chunk from a stable segment sum, the state passed across chunks.

    For a chunk of length ``T`` (``<= chunk``) entered with state ``h_in``, prepend a virtual step with
    ``log A_bar = 0`` so that ``P = segsum([0, Delta_0 A, ..., Delta_{T-1} A])`` has
    ``P[i+1, j+1] = sum_{k=j+1}^{i} Delta_k A`` and ``P[i+1, 0] = sum_{k=0}^{i} Delta_k A``:

    ``h_i = exp(P[i+1, 0]) h_in + sum_{j<=i} exp(P[i+1, j+1]) B_bar_j u_j``;  the last ``h`` enters the next chunk.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus, h0=h0,
                discretization=discretization, allow_unstable=allow_unstable)
    h_in = _init_state(p)
    y = np.zeros((p.b, p.d, p.l), dtype=p.out_dtype)
    if p.l == 0:
        return _finish(_output(p, y), h_in, return_last_state)
    la, bu = _all_steps(p)  # (b d l n)
    Cf = _C_full(p)
    for s in range(0, p.l, chunk):
        la_c, bu_c = la[:, :, s:s + chunk], bu[:, :, s:s + chunk]
        T = la_c.shape[2]
        # x = [0, Delta_s A, ..., Delta_{s+T-1} A] along a last axis: (b d n T+1)
        x = np.concatenate([np.zeros_like(la_c[:, :, :1]), la_c], axis=2)
        P = segsum(np.moveaxis(x, 2, -1))  # (b d n T+1 T+1)
        E = _exp_masked(P)
        # h_i = exp(P[i+1, 0]) h_in + sum_j exp(P[i+1, j+1]) B_bar_j u_j
        h_c = np.einsum("bdnij,bdjn->bdin", E[..., 1:, 1:], bu_c) + np.moveaxis(E[..., 1:, 0], -1, 2) * h_in[:, :, None]
        C_c = Cf[:, :, s:s + T] if Cf.shape[2] > 1 else Cf
        # y_i = sum_n C_i h_i  (2 Re for complex A)
        y[:, :, s:s + T] = _readout(p, C_c, h_c)
        h_in = h_c[:, :, -1]
    return _finish(_output(p, y), h_in.copy(), return_last_state)


def step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, *, delta_bias=None, delta_softplus: bool = False,
         discretization: str = "mamba", allow_unstable: bool = False):
    r"""One decode step: ``(h_{t-1}, u_t, delta_t, B_t, C_t, z_t) -> (h_t, out_t)``; nothing is modified in place.

    Shapes: ``state`` ``(b d n)``; ``u_t``, ``delta_t``, ``z_t`` ``(b d)``; ``B_t``/``C_t`` variable ``(b n)``
    or grouped ``(b g n)`` (as in Mamba's decode; a fixed ``(d n)`` matrix is passed as grouped
    with ``g = d``, i.e. ``np.broadcast_to(B, (b, d, n))``).  Returns ``(h_t, out_t)`` with shapes
    ``(b d n)`` and ``(b d)``.  Same equations as :func:`recurrent` for one ``t`` (it is
    :func:`recurrent` on a length-1 sequence with ``h0 = state``).
    """
    u_t = as_float_array(u_t, "u_t", ndim=2, allow_complex=False)
    delta_t = as_float_array(delta_t, "delta_t", ndim=2, allow_complex=False)
    check_shape(delta_t, "delta_t", u_t.shape, "(b, d) like u_t")
    if state is None:
        raise TypeError("state: expected the (b, d, n) state array, got None")
    B_t = as_float_array(B_t, "B_t", ndim=(2, 3))
    C_t = as_float_array(C_t, "C_t", ndim=(2, 3))
    zz = None if z_t is None else as_float_array(z_t, "z_t", ndim=2, allow_complex=False)[..., None]
    out, h = recurrent(u_t[..., None], delta_t[..., None], A, B_t[..., None], C_t[..., None], D, zz,
                       delta_bias=delta_bias, delta_softplus=delta_softplus, h0=state, return_last_state=True,
                       discretization=discretization, allow_unstable=allow_unstable)
    return h, out[..., 0]


def selective_scan(u, delta, A, B, C, D=None, z=None, *, view: str = "recurrent", chunk: int = 64, **kwargs):
    """Dispatch to :func:`recurrent`, :func:`scan` or :func:`chunked` (``chunk`` only for the last)."""
    check_choice(view, "view", VIEWS)
    if view == "chunked":
        return chunked(u, delta, A, B, C, D, z, chunk=chunk, **kwargs)
    return {"recurrent": recurrent, "scan": scan}[view](u, delta, A, B, C, D, z, **kwargs)
