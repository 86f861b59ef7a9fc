"""Backward mutants of ``attention.fast_weights``: plausible bugs in the reverse scan of ``W_i = W_{i-1} + a_i b_i^T``,
``y_i = W_i x_i`` (explicit backwards in the canonical protocol ``fn(a, b_vec, x_read, W0, dy, dW_last)``)."""
from __future__ import annotations

import numpy as np

from oracles.mutants import grad_mutant

OP = "attention.fast_weights"


def _reverse_scan(a, b_vec, x_read, W0, dy, dW_last, *, start_late=False, drop_W0_in_dx=False, dW0_only_last=False):
    """The literal reverse scan (refimpl.attention.fast_weights.backward.recurrent_vjp's equations), with a planted bug."""
    a, b_vec, x_read, dy = (np.asarray(z, dtype=np.float64) for z in (a, b_vec, x_read, dy))
    b, l, h, p = a.shape
    n = b_vec.shape[3]
    W_init = np.zeros((b, h, p, n)) if W0 is None else np.asarray(W0, dtype=np.float64)
    W, Ws = W_init, []
    for i in range(l):
        W = W + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
        Ws.append(W - W_init if drop_W0_in_dx else W)
    dW = np.zeros((b, h, p, n)) if dW_last is None else np.asarray(dW_last, dtype=np.float64).copy()
    da, db, dx = np.zeros_like(a), np.zeros_like(b_vec), np.zeros_like(x_read)
    for i in range(l - 1, -1, -1):
        if start_late and i == l - 1:
            continue  # BUG: the reverse scan starts one step late (the last position never enters)
        dW = dW + dy[:, i, :, :, None] * x_read[:, i, :, None, :]
        dx[:, i] = np.einsum("bhpn,bhp->bhn", Ws[i], dy[:, i])
        da[:, i] = np.einsum("bhpn,bhn->bhp", dW, b_vec[:, i])
        db[:, i] = np.einsum("bhpn,bhp->bhn", dW, a[:, i])
    out = {"a": da, "b_vec": db, "x_read": dx}
    if W0 is not None:
        out["W0"] = (np.zeros((b, h, p, n)) if dW_last is None else np.asarray(dW_last)) if dW0_only_last else dW
    return out


@grad_mutant(OP, "reverse-scan-one-step-late",
             doc="the reverse scan starts at l-2: the last position's dy never enters dW, its da/db/dx stay zero")
def _late(a, b_vec, x_read, W0, dy, dW_last):
    return _reverse_scan(a, b_vec, x_read, W0, dy, dW_last, start_late=True)


@grad_mutant(OP, "dx-drops-initial-state",
             doc="dx_i = (W_i - W0)^T dy_i: the initial state's term dropped from the read's gradient")
def _drop_w0(a, b_vec, x_read, W0, dy, dW_last):
    return _reverse_scan(a, b_vec, x_read, W0, dy, dW_last, drop_W0_in_dx=True)


@grad_mutant(OP, "initial-state-grad-is-final-cotangent",
             doc="dW0 = dW_last: the gradient of the initial state misses every sum_i dy_i x_i^T")
def _dw0(a, b_vec, x_read, W0, dy, dW_last):
    return _reverse_scan(a, b_vec, x_read, W0, dy, dW_last, dW0_only_last=True)


@grad_mutant(OP, "db-scaled-by-half",
             doc="db_i = dW_i^T a_i / 2 (a factor of the symmetric outer-product rule misapplied)")
def _half(a, b_vec, x_read, W0, dy, dW_last):
    g = _reverse_scan(a, b_vec, x_read, W0, dy, dW_last)
    g["b_vec"] = 0.5 * g["b_vec"]
    return g
