r"""Backward mutants of Mamba-2's SSD (``refimpl mutants --op ssm.ssd --grad``): plausible slips in a hand-written VJP.

Each is an explicit backward in the op's canonical protocol,
``grad_fn(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dy, d_final_states) -> {input: gradient}``; its
forward is the op's correct reference.  The correct adjoint they perturb is that of
:mod:`refimpl.ssm.ssd.backward`, written out again here (the reverse loop, vectorized over batch and heads) so
that each slip sits in one line:

* the inter-chunk state gradient dropped: the state's cotangent is not carried back across a chunk boundary
  (``algorithm='chunked'``, ``chunk=4``): the error starts at the chunk boundary;
* the gradient through softplus missing (``d dt = d dt_eff``, no logistic factor);
* the clamp's gradient not zeroed where ``dt_limit`` is active;
* the gradient flowing across a ``seq_idx`` boundary (the carry not reset);
* ``dD`` wrong everywhere (paired with the ungated cotangent ``dy`` instead of ``dy silu(z)``);
* the decay off by one in the reverse pass (``dS_{t-1} = a_{t-1} dS_t`` instead of ``a_t dS_t``);
* the reverse scan started one step late (``dy_{L-1} C_{L-1}^T`` never enters the state's cotangent);
* the initial state's gradient without the first decay (``dS_0`` instead of ``a_0 dS_0``).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import scipy.special

from oracles.mutants import grad_mutant

OP = "ssm.ssd"
LIMIT = (0.1, 0.3)  # the op's argument-paths dt_limit: typical steps fall on both sides
CHUNK = 4


def _backward(x, dt, A, B, C, D, z, dt_bias, S0, seq_idx, dy, dF, *, softplus, limit, chunk=None,
              no_softplus_grad=False, no_clamp_mask=False, across_seq=False, dD_ungated=False, decay_off_by_one=False,
              late_start=False, dS0_no_decay=False) -> Dict[str, np.ndarray]:
    x, dt, A, B, C, dy = (np.asarray(a, dtype=np.float64) for a in (x, dt, A, B, C, dy))
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = (np.arange(h) * g) // h
    Bh, Ch = B[:, :, hg], C[:, :, hg]
    u = dt + (0.0 if dt_bias is None else np.asarray(dt_bias))
    v = np.where(u <= 20, np.log1p(np.exp(np.minimum(u, 20))), u) if softplus else u
    lo, hi = limit
    active = not (lo == 0.0 and hi == math.inf)
    s = np.clip(v, lo, hi) if active else v
    a = np.exp(s * A)
    reset = np.zeros((b, l), dtype=bool)
    if seq_idx is not None and l > 1:
        si = np.asarray(seq_idx)
        reset[:, 1:] = si[:, 1:] != si[:, :-1]
    Xd = s[..., None] * x
    S = np.zeros((b, h, p, n)) if S0 is None else np.asarray(S0, dtype=np.float64)
    S_in, S_out = np.zeros((b, l, h, p, n)), np.zeros((b, l, h, p, n))
    for t in range(l):
        S = np.where(reset[:, t, None, None, None], 0.0, S)
        S_in[:, t] = S
        S = a[:, t, :, None, None] * S + Xd[:, t, :, :, None] * Bh[:, t, :, None, :]
        S_out[:, t] = S
    y = np.einsum("blhpn,blhn->blhp", S_out, Ch)
    Dhp = None if D is None else (np.broadcast_to(np.asarray(D)[:, None], (h, p)) if np.ndim(D) == 1 else np.asarray(D))
    yD = y if Dhp is None else y + Dhp * x
    out = {}
    gy = dy
    if z is not None:
        zz = np.asarray(z)
        out["z"] = dy * yD * scipy.special.expit(zz) * (1 + zz * scipy.special.expit(-zz))
        gy = dy * zz * scipy.special.expit(zz)
    dx = np.zeros_like(x)
    if Dhp is not None:
        dD = np.einsum("blhp,blhp->hp", dy if dD_ungated else gy, x)
        out["D"] = dD if np.ndim(D) == 2 else dD.sum(-1)
        dx += Dhp * gy
    dS = np.zeros((b, h, p, n)) if dF is None else np.array(dF, dtype=np.float64)
    ds = np.zeros((b, l, h))
    dA = np.zeros(h)
    dBh, dCh = np.zeros_like(Bh), np.zeros_like(Ch)
    for t in range(l - 1, -1, -1):
        if not (late_start and t == l - 1):
            dS = dS + gy[:, t, :, :, None] * Ch[:, t, :, None, :]
        dCh[:, t] = np.einsum("bhpn,bhp->bhn", S_out[:, t], gy[:, t])
        dXd = np.einsum("bhpn,bhn->bhp", dS, Bh[:, t])
        dBh[:, t] = np.einsum("bhpn,bhp->bhn", dS, Xd[:, t])
        dx[:, t] += s[:, t, :, None] * dXd
        da = np.einsum("bhpn,bhpn->bh", dS, S_in[:, t])
        ds[:, t] = np.einsum("bhp,bhp->bh", dXd, x[:, t]) + A * a[:, t] * da
        dA += np.sum(s[:, t] * a[:, t] * da, axis=0)
        if t == 0 and dS0_no_decay:
            break
        decay = a[:, t - 1] if (decay_off_by_one and t > 0) else a[:, t]
        dS = decay[:, :, None, None] * dS
        if not across_seq:
            dS = np.where(reset[:, t, None, None, None], 0.0, dS)
        if chunk is not None and t % chunk == 0:
            dS = np.zeros_like(dS)  # the inter-chunk reverse scan dropped: nothing flows into the previous chunk
    if active and not no_clamp_mask:
        ds = np.where((v >= lo) & (v <= hi), ds, 0.0)
    if softplus and not no_softplus_grad:
        ds = ds * np.where(u <= 20, scipy.special.expit(u), 1.0)
    out.update(x=dx, dt=ds, A=dA, B=dBh.reshape(b, l, g, h // g, n).sum(3), C=dCh.reshape(b, l, g, h // g, n).sum(3))
    if dt_bias is not None:
        out["dt_bias"] = ds.sum(axis=(0, 1))
    if S0 is not None:
        out["initial_states"] = dS
    return out


def _mut(name, doc, conventions, **flags):
    conv = dict(conventions)
    softplus = bool(conv.get("dt_softplus", False))
    limit = tuple(conv.get("dt_limit", (0.0, math.inf)))

    @grad_mutant(OP, name, doc=doc, conventions=conv)
    def fn(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None, dy=None,
           d_final_states=None):
        return _backward(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, dy, d_final_states,
                         softplus=softplus, limit=limit, **flags)

    fn.__name__ = fn.__qualname__ = "ssd_" + name.replace("-", "_")
    return fn


ssd_inter_chunk_dropped = _mut(
    "inter-chunk-state-grad-dropped", "the chunked backward drops the inter-chunk state gradient: nothing flows back "
    "across a chunk boundary (the error starts at the chunk boundary)",
    {"algorithm": "chunked", "chunk": CHUNK}, chunk=CHUNK)
ssd_softplus_missing = _mut(
    "softplus-grad-missing", "d dt = d dt_eff: the logistic factor of softplus' derivative missing",
    {"dt_softplus": True}, no_softplus_grad=True)
ssd_clamp_not_zeroed = _mut(
    "clamp-grad-not-zeroed", "the gradient passes through dt_limit's clamp where it is active",
    {"dt_limit": LIMIT}, no_clamp_mask=True)
ssd_across_seq = _mut(
    "grad-across-seq-boundary", "the state's cotangent is carried across a seq_idx boundary (the reset ignored "
    "in the reverse pass)", {"use_seq_idx": True}, across_seq=True)
ssd_dD_wrong = _mut(
    "dD-wrong-everywhere", "dD = sum dy x with the ungated cotangent (dy instead of dy silu(z))",
    {"use_z": True, "use_D": True}, dD_ungated=True)
ssd_decay_off_by_one = _mut(
    "decay-off-by-one-in-reverse", "the reverse pass carries dS_{t-1} = a_{t-1} dS_t (the decay's cumulative "
    "sum one step off)", {}, decay_off_by_one=True)
ssd_late_start = _mut(
    "reverse-scan-one-step-late", "the reverse scan starts at L-2: dy_{L-1} C_{L-1}^T never enters the state's "
    "cotangent", {}, late_start=True)
ssd_dS0_no_decay = _mut(
    "initial-state-grad-wrong", "d initial_states = dS_0 without the first step's decay a_0",
    {"use_initial_states": True}, dS0_no_decay=True)
