r"""Mamba's selective scan (S6): the literal NumPy reference, one function per view.

The system (Gu & Dao 2023, Alg. 2; per batch ``b`` and channel ``d``, a diagonal state of size ``n``)::

    Delta_t   = softplus(delta_t + delta_bias)        (softplus and bias optional)
    A_bar_t   = exp(Delta_t A)                         (ZOH for A, always)
    B_bar_t   = Delta_t B_t                            (discretization="mamba": Euler for B, the default)
              = Delta_t phi1(Delta_t A) B_t            (discretization="zoh": exact ZOH, phi1(z) = (e^z - 1)/z)
    h_t       = A_bar_t * h_{t-1} + B_bar_t u_t        (elementwise over n; h_{-1} = initial_state, default 0)
    y_t       = sum_n C_t[n] h_t[n]                    (real A)
              = 2 Re(sum_n C_t[n] h_t[n])              (complex A: the state holds one of each conjugate pair)
    out_t     = (y_t + D u_t) * silu(z_t)              (D skip and z gate optional; silu(z) = z sigmoid(z))

Shapes (sequence-first, the letters of ``docs/glossary.md``)
------------------------------------------------------------
* ``u``, ``delta``, ``z``: ``(b l d)``;  ``A``: ``(d n)`` real or complex;  ``D``, ``delta_bias``: ``(d,)``.
* ``B``, ``C``, each independently one of: fixed ``(d n)``; variable ``(b l n)`` (shared by every
  channel); grouped ``(b l g n)`` with ``g`` dividing ``d``, channel ``d`` reading group
  ``d // (d_model / g)`` (contiguous blocks of channels share a group).  ``B``/``C`` may be complex
  only when ``A`` is.
* ``initial_state`` (optional): ``(b d n)``, the state before step 0.  Returns ``out``: ``(b l d)``
  (real), and with ``return_final_state=True`` ``(out, final_state)`` with ``final_state = h_{l-1}``:
  ``(b d n)`` (complex for complex ``A``; equal to ``initial_state``, or zeros, when ``l = 0``).
  Feeding it back as ``initial_state`` continues the sequence.

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

Views (the entry point :func:`refimpl.ssm.selective.selective_scan` dispatches on ``view``)
-------------------------------------------------------------------------------------------
* :func:`recurrent` -- the literal loop over ``t``.
* :func:`scan` -- Hillis--Steele parallel prefix over pairs ``(log A_bar_t, B_bar_t u_t)`` with the
  operator ``(la_i, b_i) . (la_j, b_j) = (la_i + la_j, exp(la_j) b_i + b_j)``: decay products are
  kept as sums of logs (``log A_bar_t = Delta_t A`` exactly), exponentiated once per combination.
* :func:`chunked` -- within a chunk the states from a stable segment sum of ``Delta A``, across
  chunks the state is passed on (any ``l``, the last chunk may be short).
* :func:`step` -- one decode step ``(state, u_t, ...) -> (out_t, state_t)``, the single-step formula.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import scipy.special

from refimpl._validate import (as_float_array, check_bool, check_choice, check_int, check_shape, real_dtype,
                               result_dtype)
from refimpl.ssm.discretization import phi1

__all__ = [
    "SOFTPLUS_THRESHOLD",
    "DISCRETIZATIONS",
    "softplus",
    "silu",
    "effective_delta",
    "prepare",
    "recurrent",
    "scan",
    "chunked",
    "step",
    "segsum",
]

SOFTPLUS_THRESHOLD = 20.0
DISCRETIZATIONS = ("mamba", "zoh")


def softplus(x: np.ndarray) -> np.ndarray:
    r"""``softplus(x) = log(1 + e^x)`` for ``x <= 20``, ``x`` above (the threshold of PyTorch/Mamba).

    ``x``: real floats of any shape; NaN and +-inf follow IEEE arithmetic (``softplus(-inf) = 0``)."""
    x = as_float_array(x, "x", allow_complex=False, finite=False)
    # exp is evaluated only where it is used, so no overflow warning above the threshold
    safe = np.where(x <= SOFTPLUS_THRESHOLD, x, 0)
    return np.where(x <= SOFTPLUS_THRESHOLD, np.log1p(np.exp(safe)), x)


def silu(z: np.ndarray) -> np.ndarray:
    r"""``silu(z) = z sigmoid(z)`` (``scipy.special.expit``: no overflow for large ``|z|``).

    ``z``: real floats of any shape; NaN and +-inf follow IEEE arithmetic."""
    z = as_float_array(z, "z", allow_complex=False, finite=False)
    return z * scipy.special.expit(z)


def _delta_formula(delta: np.ndarray, delta_bias: Optional[np.ndarray], delta_softplus: bool) -> np.ndarray:
    out = delta
    if delta_bias is not None:
        # delta + delta_bias (one bias per channel, the last axis)
        out = out + delta_bias
    if delta_softplus:
        # Delta = softplus(delta + delta_bias)
        with np.errstate(over="ignore"):
            out = softplus(out)
    return out


def effective_delta(delta, delta_bias=None, delta_softplus: bool = False) -> np.ndarray:
    r"""``Delta = softplus(delta + delta_bias)`` (each part optional).

    ``delta``: ``(... d)`` (channels last, e.g. ``(b l d)``); ``delta_bias``: ``(d,)``.  Validated like
    the scan's own arguments (real floats, finite, the bias exactly ``(d,)``: no broadcasting of a
    ``()`` or ``(1, d)`` bias).
    """
    delta_softplus = check_bool(delta_softplus, "delta_softplus")
    delta = as_float_array(delta, "delta", allow_complex=False)
    if delta.ndim < 1:
        raise ValueError(f"delta: expected an array with channels on the last axis, got shape {delta.shape}")
    d = delta.shape[-1]
    if delta_bias is not None:
        delta_bias = as_float_array(delta_bias, "delta_bias", ndim=1, allow_complex=False)
        check_shape(delta_bias, "delta_bias", (d,), "(d,): one bias per channel (delta's last axis)")
    dtype = result_dtype(delta, delta_bias)
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    return _delta_formula(cast(delta), cast(delta_bias), delta_softplus)


@dataclasses.dataclass
class Prepared:
    """Validated inputs of a selective scan, cast to the working dtype."""

    u: np.ndarray  # (b l d)
    Delta: np.ndarray  # effective step softplus(delta + bias), (b l d), real
    A: np.ndarray  # (d n)
    B: np.ndarray
    C: np.ndarray
    D: Optional[np.ndarray]
    z: Optional[np.ndarray]
    initial_state: Optional[np.ndarray]  # (b d n)
    B_mode: str  # "fixed" | "variable" | "grouped"
    C_mode: str
    discretization: str
    dtype: np.dtype  # working dtype (complex when A is)
    out_dtype: np.dtype  # real
    b: int
    l: int
    d: int
    n: int


# -- validation helpers (shared by the views and step) ---------------------------------------------------------

def _check_A(A, allow_unstable: bool) -> np.ndarray:
    A = as_float_array(A, "A", ndim=2)
    if not allow_unstable and A.size and np.any(A.real > 0):
        idx = tuple(int(i) for i in np.argwhere(A.real > 0)[0])
        raise ValueError(f"A: expected Re(A) <= 0 (a stable selective SSM), got {A[idx]} at index {idx}; "
                         "pass allow_unstable=True to allow growth")
    return A


def _check_bc(X, name: str, A: np.ndarray, layouts, src: str = "") -> tuple:
    """``B``/``C`` (or ``B_t``/``C_t``) in one of its layouts; complex only with a complex ``A``.

    ``layouts``: ``{ndim: (mode, shape, description)}``; a ``"g"`` in a shape is the number of groups,
    which must divide ``d``.  Returns ``(X, mode)``.
    """
    X = as_float_array(X, name, ndim=tuple(layouts))
    if np.iscomplexobj(X) and not np.iscomplexobj(A):
        raise TypeError(f"{name}: complex {name} ({X.dtype}) needs a complex A, got A of dtype {A.dtype}")
    mode, shape, what = layouts[X.ndim]
    if "g" in shape:
        d = A.shape[0]
        g = X.shape[shape.index("g")]
        if g < 1 or d % g != 0:
            raise ValueError(f"{name}: grouped layout {what} needs g dividing d = {d}, got g = {g} (shape {X.shape})")
        shape = tuple(g if e == "g" else e for e in shape)
    check_shape(X, name, shape, what, src=src)
    return X, mode


def _check_state(state, name: str, A: np.ndarray, expected, what: str) -> np.ndarray:
    state = as_float_array(state, name, ndim=len(expected))
    check_shape(state, name, expected, what)
    if np.iscomplexobj(state) and not np.iscomplexobj(A):
        raise TypeError(f"{name}: a complex state ({state.dtype}) needs a complex A, got A of dtype {A.dtype}")
    return state


def _check_Delta(Delta: np.ndarray, delta_softplus: bool, allow_unstable: bool, name: str = "delta") -> None:
    if not np.all(np.isfinite(Delta)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(Delta))[0])
        raise ValueError(f"{name}: {name} + delta_bias is not finite at index {idx} (got {Delta[idx]})")
    if not allow_unstable and Delta.size and np.any(Delta < 0):
        idx = tuple(int(i) for i in np.argwhere(Delta < 0)[0])
        raise ValueError(f"{name}: expected the step Delta = {'softplus(' if delta_softplus else '('}{name} + "
                         f"delta_bias) >= 0, got {Delta[idx]} at index {idx}; use delta_softplus=True or pass "
                         "allow_unstable=True")


def _checked_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
                      allow_unstable, finite_u_delta: bool = True) -> dict:
    """Every check and cast of :func:`prepare` but ``Delta``'s: shapes, dtypes, stability, finiteness (of ``u`` and
    ``delta`` only when ``finite_u_delta``: the fast kernel checks those two itself, in its one pass over them)."""
    delta_softplus = check_bool(delta_softplus, "delta_softplus")
    allow_unstable = check_bool(allow_unstable, "allow_unstable")
    check_choice(discretization, "discretization", DISCRETIZATIONS)
    u = as_float_array(u, "u", ndim=3, allow_complex=False, finite=finite_u_delta)
    b, l, d = u.shape
    delta = as_float_array(delta, "delta", ndim=3, allow_complex=False, finite=finite_u_delta)
    check_shape(delta, "delta", (b, l, d), "(b, l, d) like u")
    A = _check_A(A, allow_unstable)
    n = A.shape[1]
    check_shape(A, "A", (d, n), "(d, n) with d from u")
    layouts = {2: ("fixed", (d, n), "(d, n): a fixed per-channel matrix"),
               3: ("variable", (b, l, n), "(b, l, n): variable, shared by every channel"),
               4: ("grouped", (b, l, "g", n), "(b, l, g, n)")}
    B, B_mode = _check_bc(B, "B", A, layouts, src="d, n from A, b, l from u")
    C, C_mode = _check_bc(C, "C", A, layouts, src="d, n from A, b, l from u")
    if D is not None:
        D = as_float_array(D, "D", ndim=1, allow_complex=False)
        check_shape(D, "D", (d,), "(d,)")
    if z is not None:
        z = as_float_array(z, "z", ndim=3, allow_complex=False)
        check_shape(z, "z", (b, l, d), "(b, l, d) like u")
    if delta_bias is not None:
        delta_bias = as_float_array(delta_bias, "delta_bias", ndim=1, allow_complex=False)
        check_shape(delta_bias, "delta_bias", (d,), "(d,)")
    if initial_state is not None:
        initial_state = _check_state(initial_state, "initial_state", A, (b, d, n), "(b, d, n)")
    dtype = result_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    rdt = real_dtype(dtype)
    cast = lambda a, dt=dtype: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    u, delta, z, D, delta_bias = (cast(a, rdt) for a in (u, delta, z, D, delta_bias))
    A, B, C, initial_state = (cast(a) for a in (A, B, C, initial_state))
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, B_mode=B_mode, C_mode=C_mode, allow_unstable=allow_unstable,
                dtype=dtype, rdt=rdt, b=b, l=l, d=d, n=n)


def prepare(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False, initial_state=None,
            discretization: str = "mamba", allow_unstable: bool = False) -> Prepared:
    """Validate every argument (shapes, dtypes, finiteness, stability) and compute ``Delta``."""
    a = _checked_arguments(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, discretization,
                           allow_unstable)
    u, delta, A, B, C, D, z, delta_bias, initial_state = (a[k] for k in (
        "u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"))
    delta_softplus, allow_unstable, B_mode, C_mode, dtype, rdt, b, l, d, n = (a[k] for k in (
        "delta_softplus", "allow_unstable", "B_mode", "C_mode", "dtype", "rdt", "b", "l", "d", "n"))
    Delta = _delta_formula(delta, delta_bias, delta_softplus)
    _check_Delta(Delta, delta_softplus, allow_unstable)
    return Prepared(u=u, Delta=Delta, A=A, B=B, C=C, D=D, z=z, initial_state=initial_state, B_mode=B_mode,
                    C_mode=C_mode, discretization=discretization, dtype=dtype, out_dtype=rdt, b=b, l=l, d=d, n=n)


# -- the formula's pieces --------------------------------------------------------------------------------------

def _per_channel(X: np.ndarray, mode: str, d: int) -> np.ndarray:
    """``B``/``C`` broadcastable to ``(b l d n)``: fixed ``(1 1 d n)``, variable ``(b l 1 n)``, grouped ``(b l d n)``.

    Grouped: channel ``d`` reads group ``d // (d_model / g)`` (``repeat b l g n -> b l (g r) n``).
    """
    if mode == "fixed":
        return X[None, None]
    if mode == "variable":
        return X[:, :, None, :]
    return np.repeat(X, d // X.shape[2], axis=2)


def _at(Xc: np.ndarray, t: int) -> np.ndarray:
    """Time ``t`` of a per-channel ``(b l d n)`` array (``l`` is 1 for a fixed matrix)."""
    return Xc[:, t if Xc.shape[1] > 1 else 0]


def _B_bar(p: Prepared, Delta: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``B_bar`` for steps ``Delta`` ``(... d)`` and ``B`` broadcastable to ``(... d n)``."""
    if p.discretization == "mamba":
        # B_bar = Delta B   (Euler for B, Mamba's mix)
        return Delta[..., None] * B
    # B_bar = (exp(Delta A) - 1) A^{-1} B = Delta phi1(Delta A) B   (exact ZOH, no division by A)
    return Delta[..., None] * phi1(Delta[..., None] * p.A) * B


def _readout(p: Prepared, C: np.ndarray, h: np.ndarray) -> np.ndarray:
    # y = sum_n C h  (2 Re(...) for complex A)
    y = np.sum(C * h, axis=-1)
    return 2.0 * y.real if np.iscomplexobj(p.A) else y


def _output(p: Prepared, y: np.ndarray) -> np.ndarray:
    """``out = (y + D u) * silu(z)`` with ``y`` ``(b l d)`` already real (2 Re for complex A)."""
    out = y.astype(p.out_dtype, copy=False)
    if p.D is not None:
        # out = y + D u
        out = out + p.D * p.u
    if p.z is not None:
        # out = out * silu(z)
        out = out * silu(p.z)
    return out


def _initial(p: Prepared) -> np.ndarray:
    return np.zeros((p.b, p.d, p.n), dtype=p.dtype) if p.initial_state is None else p.initial_state.copy()


def _finish(out, final_state, return_final_state: bool):
    return (out, final_state) if return_final_state else out


# -- the views ---------------------------------------------------------------------------------------------------

def recurrent(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False,
              initial_state=None, return_final_state: bool = False, discretization: str = "mamba",
              allow_unstable: bool = False):
    r"""The literal sequential loop (the spec).  See the module docstring for shapes and conventions."""
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, discretization=discretization, allow_unstable=allow_unstable)
    Bc, Cc = _per_channel(p.B, p.B_mode, p.d), _per_channel(p.C, p.C_mode, p.d)
    h_t = _initial(p)
    y = np.zeros((p.b, p.l, p.d), dtype=p.out_dtype)
    for t in range(p.l):
        Delta_t = p.Delta[:, t]  # (b d)
        # A_bar_t = exp(Delta_t A)
        A_bar_t = np.exp(Delta_t[..., None] * p.A)
        # B_bar_t = Delta_t B_t (mamba) or Delta_t phi1(Delta_t A) B_t (zoh)
        B_bar_t = _B_bar(p, Delta_t, _at(Bc, t))
        # h_t = A_bar_t h_{t-1} + B_bar_t u_t
        h_t = A_bar_t * h_t + B_bar_t * p.u[:, t, :, None]
        # y_t = sum_n C_t h_t  (2 Re for complex A)
        y[:, t] = _readout(p, _at(Cc, t), h_t)
    return _finish(_output(p, y), h_t, return_final_state)


def _all_steps(p: Prepared):
    """``log A_bar = Delta A`` and ``B_bar u`` for every step, both ``(b l d n)``."""
    # log A_bar_t = Delta_t A
    logA_bar = p.Delta[..., None] * p.A
    # B_bar_t u_t
    Bu = _B_bar(p, p.Delta, _per_channel(p.B, p.B_mode, p.d)) * p.u[..., None]
    return logA_bar.astype(p.dtype, copy=False), Bu.astype(p.dtype, copy=False)


def scan(u, delta, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus: bool = False, initial_state=None,
         return_final_state: bool = False, discretization: str = "mamba", allow_unstable: bool = False):
    r"""Parallel associative scan over ``(log A_bar_t, B_bar_t u_t)`` (Hillis--Steele, ``ceil(log2 l)`` rounds).

    ``(la_i, b_i) . (la_j, b_j) = (la_i + la_j, exp(la_j) b_i + b_j)`` (``i`` first, then ``j``); after
    the last round element ``t`` holds ``(sum_{k<=t} Delta_k A, h_t)``.  The initial state is folded
    into ``b_0 <- b_0 + A_bar_0 h_{-1}``.  Materializes ``(b l d n)`` (it is the reference, not a kernel).
    """
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, discretization=discretization, allow_unstable=allow_unstable)
    if p.l == 0:
        return _finish(_output(p, np.zeros((p.b, 0, p.d), dtype=p.out_dtype)), _initial(p), return_final_state)
    la, bb = _all_steps(p)
    la, bb = la.copy(), bb.copy()
    if p.initial_state is not None:
        # b_0 = A_bar_0 h_{-1} + B_bar_0 u_0
        bb[:, 0] += np.exp(la[:, 0]) * p.initial_state
    offset = 1
    while offset < p.l:
        # e_t <- e_{t-offset} . e_t for every t >= offset (one parallel round):
        # b_t = exp(la_t) b_{t-offset} + b_t ;  la_t = la_{t-offset} + la_t
        new_b = np.exp(la[:, offset:]) * bb[:, :-offset] + bb[:, offset:]
        new_la = la[:, :-offset] + la[:, offset:]
        bb[:, offset:], la[:, offset:] = new_b, new_la
        offset *= 2
    # y_t = sum_n C_t h_t  (2 Re for complex A)
    y = _readout(p, _per_channel(p.C, p.C_mode, p.d), bb)
    return _finish(_output(p, y), bb[:, -1].copy(), return_final_state)


def segsum(x: np.ndarray) -> np.ndarray:
    r"""Stable segment sums along the last axis: ``S[..., i, j] = sum_{k=j+1}^{i} x_k`` for ``i >= j``, ``-inf`` above.

    Each entry is its own cumulative sum of the masked terms (no difference of two prefix
    sums, so no cancellation and no ``exp(+big) exp(-big)``).  ``x``: ``(... T)`` -> ``(... T T)``, real or complex
    floats (NaN propagates).
    """
    x = as_float_array(x, "x", finite=False)
    if x.ndim == 0:
        raise ValueError("x: expected an array (..., T) with the sequence on the last axis, got a scalar")
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
            initial_state=None, return_final_state: bool = False, discretization: str = "mamba",
            allow_unstable: bool = False):
    r"""Chunked view: states within a chunk from a stable segment sum, the state passed across chunks.

    For a chunk of length ``T`` (``<= chunk``) entered with state ``h_in``, prepend a virtual step with
    ``log A_bar = 0`` so that ``P = segsum([0, Delta_0 A, ..., Delta_{T-1} A])`` has
    ``P[i+1, j+1] = sum_{k=j+1}^{i} Delta_k A`` and ``P[i+1, 0] = sum_{k=0}^{i} Delta_k A``:

    ``h_i = exp(P[i+1, 0]) h_in + sum_{j<=i} exp(P[i+1, j+1]) B_bar_j u_j``;  the last ``h`` enters the next chunk.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    return_final_state = check_bool(return_final_state, "return_final_state")
    p = prepare(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                initial_state=initial_state, discretization=discretization, allow_unstable=allow_unstable)
    h_in = _initial(p)
    y = np.zeros((p.b, p.l, p.d), dtype=p.out_dtype)
    if p.l == 0:
        return _finish(_output(p, y), h_in, return_final_state)
    la, bu = _all_steps(p)  # (b l d n)
    Cc = _per_channel(p.C, p.C_mode, p.d)
    for s in range(0, p.l, chunk):
        la_c, bu_c = la[:, s:s + chunk], bu[:, s:s + chunk]
        T = la_c.shape[1]
        # x = [0, Delta_s A, ..., Delta_{s+T-1} A] along a last axis: (b d n T+1)
        x = np.concatenate([np.zeros_like(la_c[:, :1]), la_c], axis=1)
        P = segsum(np.moveaxis(x, 1, -1))  # (b d n T+1 T+1)
        E = _exp_masked(P)
        # h_i = exp(P[i+1, 0]) h_in + sum_j exp(P[i+1, j+1]) B_bar_j u_j
        h_c = np.einsum("bdnij,bjdn->bidn", E[..., 1:, 1:], bu_c) + np.moveaxis(E[..., 1:, 0], -1, 1) * h_in[:, None]
        C_c = Cc[:, s:s + T] if Cc.shape[1] > 1 else Cc
        # y_i = sum_n C_i h_i  (2 Re for complex A)
        y[:, s:s + T] = _readout(p, C_c, h_c)
        h_in = h_c[:, -1]
    return _finish(_output(p, y), h_in.copy(), return_final_state)


# -- one decode step ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Step:
    state: np.ndarray  # (b d n)
    u: np.ndarray  # (b d)
    Delta: np.ndarray  # (b d)
    A: np.ndarray  # (d n)
    B: np.ndarray  # (b d n) or (b 1 n)
    C: np.ndarray
    D: Optional[np.ndarray]
    z: Optional[np.ndarray]
    out_dtype: np.dtype


def _prepare_step(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias, delta_softplus, discretization,
                  allow_unstable) -> _Step:
    """Validate one decode step: ``d, n`` come from ``A``, the batch from ``state``; each argument is
    checked against them, so a mismatch is blamed on the argument that has it."""
    delta_softplus = check_bool(delta_softplus, "delta_softplus")
    allow_unstable = check_bool(allow_unstable, "allow_unstable")
    check_choice(discretization, "discretization", DISCRETIZATIONS)
    A = _check_A(A, allow_unstable)
    d, n = A.shape
    state = as_float_array(state, "state", ndim=3)
    b = state.shape[0]
    state = _check_state(state, "state", A, (b, d, n), "(b, d, n) with d, n from A")
    u_t = as_float_array(u_t, "u_t", ndim=2, allow_complex=False)
    check_shape(u_t, "u_t", (b, d), "(b, d): b from state, d from A")
    delta_t = as_float_array(delta_t, "delta_t", ndim=2, allow_complex=False)
    check_shape(delta_t, "delta_t", (b, d), "(b, d): b from state, d from A")
    layouts = {2: ("variable", (b, n), "(b, n): variable, shared by every channel"),
               3: ("grouped", (b, "g", n), "(b, g, n): grouped (a fixed (d, n) matrix is grouped with g = d)")}
    B_t, _ = _check_bc(B_t, "B_t", A, layouts, src="b from state, d, n from A")
    C_t, _ = _check_bc(C_t, "C_t", A, layouts, src="b from state, d, n from A")
    if D is not None:
        D = as_float_array(D, "D", ndim=1, allow_complex=False)
        check_shape(D, "D", (d,), "(d,)")
    if z_t is not None:
        z_t = as_float_array(z_t, "z_t", ndim=2, allow_complex=False)
        check_shape(z_t, "z_t", (b, d), "(b, d) like u_t")
    if delta_bias is not None:
        delta_bias = as_float_array(delta_bias, "delta_bias", ndim=1, allow_complex=False)
        check_shape(delta_bias, "delta_bias", (d,), "(d,)")
    dtype = result_dtype(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias)
    rdt = real_dtype(dtype)
    cast = lambda a, dt=dtype: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    u_t, delta_t, z_t, D, delta_bias = (cast(a, rdt) for a in (u_t, delta_t, z_t, D, delta_bias))
    state, A, B_t, C_t = (cast(a) for a in (state, A, B_t, C_t))
    Delta = _delta_formula(delta_t, delta_bias, delta_softplus)
    _check_Delta(Delta, delta_softplus, allow_unstable, name="delta_t")

    def per_channel(X):  # (b n) -> (b 1 n); grouped (b g n) -> (b d n), channel d reading group d // (d_model / g)
        return X[:, None, :] if X.ndim == 2 else np.repeat(X, d // X.shape[1], axis=1)

    return _Step(state=state, u=u_t, Delta=Delta, A=A, B=per_channel(B_t), C=per_channel(C_t), D=D, z=z_t,
                 out_dtype=rdt)


def step(state, u_t, delta_t, A, B_t, C_t, D=None, z_t=None, *, delta_bias=None, delta_softplus: bool = False,
         discretization: str = "mamba", allow_unstable: bool = False):
    r"""One decode step: ``(h_{t-1}, u_t, delta_t, B_t, C_t, z_t) -> (out_t, h_t)``; nothing is modified in place.

    Shapes: ``state`` ``(b d n)``; ``u_t``, ``delta_t``, ``z_t`` ``(b d)``; ``B_t``/``C_t`` variable ``(b n)``
    or grouped ``(b g n)`` (as in Mamba's decode; a fixed ``(d n)`` matrix is passed as grouped
    with ``g = d``, i.e. ``np.broadcast_to(B, (b, d, n))``).  Returns ``(out_t, state_t)`` with shapes
    ``(b d)`` and ``(b d n)``.  The same arithmetic, in the same order, as one iteration of
    :func:`recurrent`.
    """
    s = _prepare_step(state, u_t, delta_t, A, B_t, C_t, D, z_t, delta_bias, delta_softplus, discretization,
                      allow_unstable)
    w = s.Delta[..., None] * s.A  # Delta_t A: (b d n)
    # A_bar_t = exp(Delta_t A)
    A_bar = np.exp(w)
    if discretization == "mamba":
        # B_bar_t = Delta_t B_t
        B_bar = s.Delta[..., None] * s.B
    else:
        # B_bar_t = Delta_t phi1(Delta_t A) B_t
        B_bar = s.Delta[..., None] * phi1(w) * s.B
    # h_t = A_bar_t h_{t-1} + B_bar_t u_t
    h = A_bar * s.state + B_bar * s.u[..., None]
    # y_t = sum_n C_t h_t   (2 Re(...) for complex A)
    y = np.sum(s.C * h, axis=-1)
    y = (2.0 * y.real if np.iscomplexobj(s.A) else y).astype(s.out_dtype, copy=False)
    if s.D is not None:
        # out_t = y_t + D u_t
        y = y + s.D * s.u
    if s.z is not None:
        # out_t = out_t * silu(z_t)
        y = y * silu(s.z)
    return y, h
