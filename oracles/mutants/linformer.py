"""Mutants of ``attention.linformer``: plausible slips of a Linformer kernel, each a candidate in the op's canonical
signature ``fn(q, k, v, E, F) -> o`` (or an adapter's), each of which ``refimpl mutants --op attention.linformer``
must kill at default settings.

A small NumPy kernel with the slips as switches: the queries projected in place of the keys, the value projection
skipped (the first ``r`` values taken instead), the scale ``1/sqrt(r)`` (the projected length) instead of
``1/sqrt(n)``, a transposed projection reshaped instead of transposed, ``E`` used for the values, the softmax
taken over the queries, every head given head 0's projection, a given scale squared.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

OP = "attention.linformer"


def _kernel(q, k, v, E, F, *, scale=None, project_queries=False, skip_F=False, scale_by_r=False, E_for_values=False,
            softmax_axis=-1, head0=False):
    q, k, v, E, F = (np.asarray(a, dtype=np.float64) for a in (q, k, v, E, F))
    b, l, h, n = q.shape
    s = k.shape[1]
    E = np.broadcast_to(E, (h,) + E.shape[-2:]) if E.ndim == 2 else E
    F = np.broadcast_to(F, (h,) + F.shape[-2:]) if F.ndim == 2 else F
    if head0:
        E, F = np.broadcast_to(E[:1], E.shape), np.broadcast_to(F[:1], F.shape)
    r = E.shape[1]
    if scale is None:
        scale = (1.0 / math.sqrt(r) if r else 1.0) if scale_by_r else (1.0 / math.sqrt(n) if n else 1.0)
    src = q if project_queries and l == s else k  # a self-attention kernel that projects the wrong tensor
    Kb = np.einsum("htj,bjhn->bthn", E, src)
    if skip_F:  # the values not projected: the first r positions stand in for V_bar (zeros past the end)
        Vb = np.zeros((b, r, h, v.shape[3]))
        Vb[:, :min(r, s)] = v[:, :r]
    else:
        Vb = np.einsum("htj,bjhp->bthp", E if E_for_values else F, v)
    S = scale * np.einsum("bihn,bthn->bhit", q, Kb)
    if S.size == 0:
        return np.zeros((b, l, h, v.shape[3]))
    S = S - np.max(S, axis=softmax_axis, keepdims=True)
    P = np.exp(S)
    P = P / np.sum(P, axis=softmax_axis, keepdims=True)
    return np.einsum("bhit,bthp->bihp", P, Vb)


@mutant(OP, "E-applied-to-queries", doc="the key projection applied to the queries (K_bar = E q, a self-attention "
        "kernel projecting the wrong tensor)")
def _queries(q, k, v, E, F):
    return _kernel(q, k, v, E, F, project_queries=True)


@mutant(OP, "F-skipped", doc="the value projection skipped: the first r values stand in for V_bar = F v")
def _skip_F(q, k, v, E, F):
    return _kernel(q, k, v, E, F, skip_F=True)


@mutant(OP, "scale-sqrt-r", doc="the default scale 1/sqrt(r) (the projected length) instead of 1/sqrt(d_k = n)")
def _scale_r(q, k, v, E, F):
    return _kernel(q, k, v, E, F, scale_by_r=True)


@mutant(OP, "transposed-projection-reshaped", conventions={"projection_layout": "sr"},
        doc="claims E, F stored (s r) and reads them back with reshape(r, s) instead of a transpose")
def _reshaped(q, k, v, E, F):
    E, F = (np.asarray(X) for X in (E, F))
    back = lambda X: X.reshape(X.shape[:-2] + (X.shape[-1], X.shape[-2]))  # noqa: E731  (should be swapaxes)
    return _kernel(q, k, v, back(E), back(F))


@mutant(OP, "transposed-projection-applied-as-stored", conventions={"projection_layout": "sr", "projection_sharing":
        "shared"}, doc="claims E, F stored (s r) and multiplies by them as if (r s): right only where r = s, refused "
                       "(a shape error) elsewhere")
def _as_stored(q, k, v, E, F):
    return _kernel(q, k, v, E, F)


@mutant(OP, "E-used-for-values", doc="V_bar = E v: the key projection used for the values too (key-value sharing "
        "where none is claimed)")
def _E_values(q, k, v, E, F):
    return _kernel(q, k, v, E, F, E_for_values=True)


@mutant(OP, "softmax-over-queries", doc="the softmax normalized over the queries (axis l) instead of the projected "
        "keys (axis r)")
def _softmax_axis(q, k, v, E, F):
    return _kernel(q, k, v, E, F, softmax_axis=-2)


@mutant(OP, "every-head-head0-projection", doc="per-head projections claimed, head 0's E_0, F_0 used for every head")
def _head0(q, k, v, E, F):
    return _kernel(q, k, v, E, F, head0=True)


@mutant(OP, "refimpl-scale-squared", adapter="refimpl",
        doc="right with the default scale, squares a given scale (only the argument path scale=0.37 shows it)")
def _scale_sq(q, k, v, E, F, scale=None):
    return _kernel(q, k, v, E, F, scale=None if scale is None else scale * scale)
