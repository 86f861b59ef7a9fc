"""Mutants of ``attention.gau``: plausible slips in a GAU / FLASH kernel, each a candidate in the op's canonical
signature ``fn(x, W_u, W_v, W_z, gamma, beta, W_o, bias=None) -> o``, each killed by ``refimpl mutants --op
attention.gau`` at default settings.

One small NumPy kernel (the ``(l l)`` weights formed per query from the chunk structure) with the slips as
switches: relu for relu^2, the U gate dropped, one scale/offset pair shared by Q and K, the causal cross-chunk
sum taking the current chunk in, ``1/L`` where the paper says ``1/c`` and the reverse, the short last chunk
scaled by its own length, the relative bias read at ``i - j``, the causal diagonal dropped, FLASH-pytorch's row
order read canonically, a non-causal linear part restricted to earlier chunks.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

OP = "attention.gau"


def _silu(y):
    return y / (1.0 + np.exp(-np.clip(y, -700, None)))


def _kernel(x, W_u, W_v, W_z, gamma, beta, W_o, bias=None, *, chunk=None, causal=False, square=True, gate=True,
            shared=False, cross_inclusive=False, quad_scale="paper", lin_scale="paper", last_own=False,
            bias_flip=False, strict_diag=False, rows=(0, 1, 2, 3), noncausal_previous=False):
    x, W_u, W_v, W_z, gamma, beta, W_o = (np.asarray(a, dtype=np.float64) for a in (x, W_u, W_v, W_z, gamma, beta,
                                                                                    W_o))
    b, l, d = x.shape
    n = W_z.shape[1]
    U, V, Z = _silu(x @ W_u), _silu(x @ W_v), _silu(x @ W_z)
    R = [gamma[r] * Z + beta[r] for r in rows[:gamma.shape[0]]]
    if shared:
        R[1] = R[0]
    Qq, Kq = R[0], R[1]
    c = l if chunk is None else chunk
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    gi, gj = i // max(c, 1), j // max(c, 1)
    own = np.minimum((gi + 1) * c, l) - gi * c  # the length of i's chunk
    cq = own if last_own else np.full_like(own, c)
    sq = {"paper": 1.0 / cq, "length": np.full_like(cq, 1.0 / max(l, 1), dtype=float),
          "rsqrt": np.full_like(cq, 1.0 / math.sqrt(max(n, 1)), dtype=float)}[quad_scale]
    s = np.einsum("bin,bjn->bij", Qq, Kq) * sq
    if bias is not None:
        off = (i - j) if bias_flip else (j - i)
        w = c
        idx = np.clip(off + w - 1, 0, max(len(bias) - 1, 0))
        s = s + np.where(gi == gj, np.asarray(bias, dtype=np.float64)[idx] if len(bias) else 0.0, 0.0)
    r = np.maximum(s, 0.0)
    A = r * r if square else r
    keep = gi == gj
    if causal:
        keep = keep & ((j < i) if strict_diag else (j <= i))
    A = np.where(keep, A, 0.0)
    if chunk is not None:
        Ql, Kl = R[2], R[3]
        if causal:
            cross = (gj <= gi) if cross_inclusive else (gj < gi)
            sl = 1.0 / cq if lin_scale == "paper" else 1.0 / max(l, 1)
        else:
            cross = (gj < gi) if noncausal_previous else np.ones((l, l), dtype=bool)
            sl = 1.0 / max(l, 1) if lin_scale == "paper" else 1.0 / cq
        A = A + np.where(cross, np.einsum("bin,bjn->bij", Ql, Kl) * sl, 0.0)
    AV = np.einsum("bij,bjp->bip", A, V)
    return ((U * AV) if gate else AV) @ W_o


@mutant(OP, "relu-not-squared", doc="A = relu(Q K^T / L + b) instead of relu^2")
def _relu(*a):
    return _kernel(*a, square=False)


@mutant(OP, "missing-u-gate", doc="O = (A V) W_o: the U gate dropped")
def _no_gate(*a):
    return _kernel(*a, gate=False)


@mutant(OP, "shared-gamma-beta", doc="Q and K formed with the same scale/offset pair (gamma_q, beta_q)")
def _shared(*a):
    return _kernel(*a, shared=True)


@mutant(OP, "gau-rsqrt-scale", doc="GAU's scores scaled by n^-1/2 (softmax attention's habit) instead of 1/L")
def _rsqrt(*a):
    return _kernel(*a, quad_scale="rsqrt")


@mutant(OP, "bias-offset-reversed", doc="the relative position bias read at i - j instead of j - i")
def _bias_flip(*a):
    return _kernel(*a, bias_flip=True)


@mutant(OP, "causal-diagonal-excluded", conventions={"causal": True},
        doc="the causal mask keeps j < i: a query never sees its own key")
def _strict(*a):
    return _kernel(*a, causal=True, strict_diag=True)


@mutant(OP, "causal-cross-chunk-includes-current", conventions={"chunk": 3, "causal": True},
        doc="the causal linear part sums the chunks h <= g (an inclusive cumsum) instead of h < g")
def _inclusive(*a):
    return _kernel(*a, chunk=3, causal=True, cross_inclusive=True)


@mutant(OP, "flash-quadratic-over-L", conventions={"chunk": 3, "causal": True},
        doc="FLASH's quadratic scores scaled by 1/L where the paper says 1/c")
def _quad_L(*a):
    return _kernel(*a, chunk=3, causal=True, quad_scale="length")


@mutant(OP, "flash-noncausal-linear-over-c", conventions={"chunk": 3},
        doc="the non-causal linear part scaled by 1/c where the paper says 1/L")
def _lin_c(*a):
    return _kernel(*a, chunk=3, lin_scale="swapped")


@mutant(OP, "flash-causal-linear-over-L", conventions={"chunk": 3, "causal": True},
        doc="the causal linear part scaled by 1/L where the paper says 1/c")
def _lin_L(*a):
    return _kernel(*a, chunk=3, causal=True, lin_scale="swapped")


@mutant(OP, "last-chunk-own-length", conventions={"chunk": 3, "causal": True},
        doc="the short last chunk scaled by its own length instead of 1/c (the paper pads to a multiple of c)")
def _own(*a):
    return _kernel(*a, chunk=3, causal=True, last_own=True)


@mutant(OP, "noncausal-linear-previous-chunks", conventions={"chunk": 3},
        doc="the non-causal linear part restricted to the earlier chunks (the causal sum used both ways)")
def _prev(*a):
    return _kernel(*a, chunk=3, noncausal_previous=True)


@mutant(OP, "flash-pytorch-row-order", conventions={"chunk": 3},
        doc="FLASH-pytorch's scale/offset row order (quad_q, lin_q, quad_k, lin_k) read as the canonical "
            "(quad_q, quad_k, lin_q, lin_k): right through the flash_pytorch adapter, wrong canonically")
def _rows(*a):
    return _kernel(*a, chunk=3, rows=(0, 2, 1, 3))
