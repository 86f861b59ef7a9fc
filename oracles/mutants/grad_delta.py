r"""Backward mutants of the delta rule (``refimpl mutants --op attention.delta_rule --grad``): plausible slips in a
hand-written VJP of ``S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T``, ``o_t = S_t q_t``.

Each is an explicit backward in the op's canonical protocol, ``grad_fn(q, k, v, beta, alpha, S0, do, dS_last) ->
{input: gradient}``; its forward is the op's correct reference.  The correct adjoint these perturb is the reverse
scan of :mod:`refimpl.attention.delta.backward`, written out again here (loop form) so that each slip sits in one
line:

* ``chunk-boundary-state-gradient-dropped``: a chunked backward that never carries ``dS`` across a chunk boundary
  (chunk 4: each chunk's entering-state gradient is dropped; only the gradients near a boundary's left are wrong);
* ``beta-gradient-missing-kkT-S-term``: ``dbeta_t = (dS_t k_t) . v_t``, the retrieved ``alpha_t S_{t-1} k_t``
  (the ``k k^T S`` term of the update) missing from the residual;
* ``decay-gradient-missing``: no gradient for ``alpha`` (zeros);
* ``reverse-scan-one-step-late``: the scan starts at ``L - 2``: ``do_{L-1} q_{L-1}^T`` never enters ``dS``;
* ``l2-norm-gradient-missing-projection``: through ``k / |k|`` the gradient is ``dkh / |k|``, without the
  projection ``(I - kh kh^T)``;
* ``initial-state-gradient-missing-decay``: ``dS0 = dA_0`` instead of ``alpha_0 dA_0``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from oracles.mutants import grad_mutant

OP = "attention.delta_rule"


def _norm(x, mode):
    if mode is None:
        return x
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) if mode == "l2" else np.sum(x, axis=-1, keepdims=True))


def _norm_back(x, dxh, mode, projection=True):
    if mode is None:
        return dxh
    xh = _norm(x, mode)
    if mode == "l2":
        den = np.linalg.norm(x, axis=-1, keepdims=True)
        return (dxh - xh * np.sum(xh * dxh, axis=-1, keepdims=True)) / den if projection else dxh / den
    return (dxh - np.sum(xh * dxh, axis=-1, keepdims=True)) / np.sum(x, axis=-1, keepdims=True)


def _backward(q, k, v, beta, alpha, S0, do, dS_last, *, key_norm=None, query_norm=None, chunk_drop=None,
              beta_no_kks=False, no_dalpha=False, late_start=False, no_projection=False,
              dS0_no_decay=False) -> Dict[str, np.ndarray]:
    q0, k0, v, beta = (np.asarray(a, dtype=np.float64) for a in (q, k, v, beta))
    kh, qh = _norm(k0, key_norm), _norm(q0, query_norm)
    b, l, h, n = kh.shape
    p = v.shape[3]
    al = np.ones((b, l, h)) if alpha is None else np.asarray(alpha, dtype=np.float64)
    S = np.zeros((b, h, p, n)) if S0 is None else np.array(S0, dtype=np.float64)
    do = np.asarray(do, dtype=np.float64)
    Sp = []
    for t in range(l):
        Sp.append(S)
        A = al[:, t, :, None, None] * S
        S = A + (beta[:, t, :, None] * (v[:, t] - np.einsum("bhpn,bhn->bhp", A, kh[:, t])))[..., None] \
            * kh[:, t, :, None, :]
    dS = np.zeros((b, h, p, n)) if dS_last is None else np.array(dS_last, dtype=np.float64)
    dq, dk, dv = np.zeros(qh.shape), np.zeros(kh.shape), np.zeros(v.shape)
    dbeta, dal = np.zeros(beta.shape), np.zeros(al.shape)
    for t in range(l - 1, -1, -1):
        kt, bt = kh[:, t], beta[:, t, :, None]
        A = al[:, t, :, None, None] * Sp[t]
        r = v[:, t] - np.einsum("bhpn,bhn->bhp", A, kt)
        St = A + (bt * r)[..., None] * kt[:, :, None, :]
        if not (late_start and t == l - 1):
            dS = dS + do[:, t, :, :, None] * qh[:, t, :, None, :]
        dq[:, t] = np.einsum("bhpn,bhp->bhn", St, do[:, t])
        dSk = np.einsum("bhpn,bhn->bhp", dS, kt)
        dv[:, t] = bt * dSk
        dbeta[:, t] = np.sum(dSk * (v[:, t] if beta_no_kks else r), axis=-1)
        dk[:, t] = bt * (np.einsum("bhpn,bhp->bhn", dS, r) - np.einsum("bhpn,bhp->bhn", A, dSk))
        dA = dS - (bt * dSk)[..., None] * kt[:, :, None, :]
        dal[:, t] = np.einsum("bhpn,bhpn->bh", dA, Sp[t])
        dS = dA if (dS0_no_decay and t == 0) else al[:, t, :, None, None] * dA
        if chunk_drop and t % chunk_drop == 0 and t > 0:
            dS = np.zeros_like(dS)  # the inter-chunk state gradient dropped
    out = {"q": _norm_back(q0, dq, query_norm), "k": _norm_back(k0, dk, key_norm, projection=not no_projection),
           "v": dv, "beta": dbeta}
    if alpha is not None:
        out["alpha"] = np.zeros_like(dal) if no_dalpha else dal
    if S0 is not None:
        out["S0"] = dS
    return out


_CHUNKED = {"algorithm": "chunked", "chunk": 4}


@grad_mutant(OP, "chunk-boundary-state-gradient-dropped", conventions=_CHUNKED,
             doc="a chunked backward that drops the inter-chunk state gradient: dS is not carried into the previous "
                 "chunk (chunk 4), so every gradient before a boundary misses the later chunks' share")
def chunk_boundary(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, chunk_drop=4)


@grad_mutant(OP, "beta-gradient-missing-kkT-S-term", conventions={},
             doc="dbeta_t = (dS_t k_t) . v_t: the retrieved value alpha_t S_{t-1} k_t (the k k^T S term) is missing")
def beta_no_kks(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, beta_no_kks=True)


@grad_mutant(OP, "decay-gradient-missing", conventions={},
             doc="the gated rule's decay alpha gets no gradient (zeros)")
def no_dalpha(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, no_dalpha=True)


@grad_mutant(OP, "reverse-scan-one-step-late", conventions={},
             doc="the reverse scan starts at L-2: do_{L-1} q_{L-1}^T never enters the state's gradient")
def late_start(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, late_start=True)


@grad_mutant(OP, "l2-norm-gradient-missing-projection", conventions={"key_norm": "l2", "query_norm": "l2"},
             doc="through k / |k| the key gradient is dkh / |k|, without the projection (I - kh kh^T)")
def no_projection(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, key_norm="l2", query_norm="l2", no_projection=True)


@grad_mutant(OP, "initial-state-gradient-missing-decay", conventions={},
             doc="dS0 = dA_0 instead of alpha_0 dA_0 (the first step's decay forgotten in the initial state's "
                 "gradient)")
def dS0_no_decay(q, k, v, beta, alpha, S0, do, dS_last):
    return _backward(q, k, v, beta, alpha, S0, do, dS_last, dS0_no_decay=True)
