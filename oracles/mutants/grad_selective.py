r"""Backward mutants of ``ssm.selective_scan`` (``refimpl mutants --op ssm.selective_scan --grad``).

Each is an explicit backward in the op's canonical protocol ``grad_fn(u, delta, A, B, C, D, z, delta_bias, h0,
d_out, d_h_last) -> {input: gradient}`` (channel-first, Mamba's layout); its forward is the op's correct
reference.  The correct adjoint they perturb is the reverse scan of :mod:`refimpl.ssm.selective.backward`,
written out again here in loop form over the sequence-first arrays (so that each slip sits in one line):

* ``softplus-grad-missing``: ``d delta = dDelta`` (the factor ``sigmoid(x)`` dropped);
* ``dA-no-conj``: ``dw_t = A_bar_t h_{t-1} dh_t`` without the conjugate (wrong for complex ``A`` only);
* ``reverse-scan-one-step-late``: ``dh_{l-1}`` never gets ``c conj(C_{l-1}) dy_{l-1}``;
* ``dD-wrong-everywhere``: ``dD = sum dout u`` (the gate's ``silu(z)`` missing from ``dD``'s cotangent);
* ``dz-missing-silu-prime``: ``dz = dout pre sigmoid(z)`` instead of ``dout pre silu'(z)``;
* ``dh0-dropped``: the initial state's gradient zero;
* ``grouped-dB-wrong-axis``: grouped ``B``'s per-channel gradient summed with a ``(r g)`` channel order (channel
  ``c`` attributed to group ``c mod g``) instead of the forward's contiguous blocks;
* ``chunked-drops-state-gradient``: a chunked backward (chunks of 4) that does not carry ``dh`` across a chunk
  boundary (the error starts at the chunk boundary).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from oracles.mutants import grad_mutant
from oracles.verify import ops_selective as ops

OP = ops.OP


def _phi1(w):
    w = np.asarray(w)
    out = np.ones_like(w)
    nz = np.abs(w) > 1e-8
    out[nz] = np.expm1(w[nz]) / w[nz]
    out[~nz] = 1 + w[~nz] / 2
    return out


def _dphi1(w):
    w = np.asarray(w)
    small = np.abs(w) < 1
    ws = np.where(small, w, 0)
    s = sum((k + 1) * ws ** k / float(np.prod(np.arange(1, k + 3))) for k in range(20))
    wb = np.where(small, 1, w)
    q = (wb * np.exp(wb) - np.expm1(wb)) / (wb * wb)
    return np.where(small, s, q)


def _backward(conv, u, delta, A, B, C, D, z, delta_bias, h0, d_out, d_h_last, *, no_softplus_grad=False,
              no_conj=False, late=False, dD_ungated=False, dz_sigmoid=False, drop_dh0=False, grouped_rg=False,
              chunk_drop=None) -> Dict[str, Any]:
    inp = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, h0=h0)
    (u_, delta_, A_, B_, C_, D_, z_), kw = ops._seq_first(inp, conv)
    half = 0.5 if (conv["real_output"] == "re" and np.iscomplexobj(A)) else 1.0
    u_, delta_ = np.asarray(u_, np.float64), np.asarray(delta_, np.float64)
    b, l, d = u_.shape
    A_ = np.asarray(A_)
    n = A_.shape[1]
    cplx = np.iscomplexobj(A_)
    c = 2.0 if cplx else 1.0
    cdt = np.complex128 if cplx else np.float64
    bias = kw["delta_bias"]
    x = delta_ + (0.0 if bias is None else np.asarray(bias, np.float64))
    sp = kw["delta_softplus"]
    Dt = np.where(x > 20, x, np.logaddexp(0.0, np.minimum(x, 20))) if sp else x

    def chan(X):
        X = np.asarray(X)
        if X.ndim == 2:
            return np.broadcast_to(X, (b, l, d, n)).astype(cdt)
        if X.ndim == 3:
            return np.broadcast_to(X[:, :, None, :], (b, l, d, n)).astype(cdt)
        return np.repeat(X, d // X.shape[2], axis=2).astype(cdt)

    Bc, Cc = chan(B_), chan(C_)
    w = Dt[..., None] * A_
    Ab = np.exp(w)
    zoh = kw["discretization"] == "zoh"
    ph = _phi1(w) if zoh else np.ones_like(w)
    Bb = Dt[..., None] * ph * Bc
    H = np.zeros((b, l + 1, d, n), dtype=cdt)
    if kw["initial_state"] is not None:
        H[:, 0] = kw["initial_state"]
    for t in range(l):
        H[:, t + 1] = Ab[:, t] * H[:, t] + Bb[:, t] * u_[:, t, :, None]
    y = c * np.sum(Cc * H[:, 1:], axis=-1).real
    dout = np.transpose(np.asarray(d_out, np.float64), (0, 2, 1))
    pre = y + (0.0 if D_ is None else np.asarray(D_) * u_)
    dpre, dz = dout, None
    if z_ is not None:
        zz = np.asarray(z_, np.float64)
        s = 1 / (1 + np.exp(-zz))
        dpre = dout * zz * s
        dz = dout * pre * (s if dz_sigmoid else s * (1 + zz * (1 - s)))
    dh = np.zeros((b, d, n), dtype=cdt) if d_h_last is None else np.array(d_h_last, dtype=cdt)
    dH = np.zeros((b, l, d, n), dtype=cdt)
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            dh = np.conj(Ab[:, t + 1]) * dh
            if chunk_drop is not None and (t + 1) % chunk_drop == 0:
                dh = np.zeros_like(dh)  # the state gradient not carried into the previous chunk
        if not (late and t == l - 1):
            dh = dh + c * np.conj(Cc[:, t]) * dpre[:, t, :, None]
        dH[:, t] = dh
    dh0 = (np.conj(Ab[:, 0]) * dh) if l else dh
    conj = (lambda a: a) if no_conj else np.conj
    dw = conj(Ab * H[:, :-1]) * dH
    dBb = u_[..., None] * dH
    if zoh:
        dw = dw + np.conj(Dt[..., None] * _dphi1(w) * Bc) * dBb
    gB = Dt[..., None] * np.conj(ph) * dBb
    gC = c * np.conj(H[:, 1:]) * dpre[..., None]
    du = np.sum(np.conj(Bb) * dH, axis=-1).real + (0.0 if D_ is None else np.asarray(D_) * dpre)
    dDelta = np.sum(np.conj(A_) * dw, axis=-1).real + np.sum(np.conj(ph * Bc) * dBb, axis=-1).real
    dA = np.sum(Dt[..., None] * dw, axis=(0, 1))
    dx = dDelta if (no_softplus_grad or not sp) else dDelta * np.where(x > 20, 1.0, 1 / (1 + np.exp(-x)))

    def red(g, X, rg=False):
        X = np.asarray(X)
        if X.ndim == 2:
            return g.sum(axis=(0, 1))
        if X.ndim == 3:
            return g.sum(axis=2)
        gg = X.shape[2]
        if rg:  # channel c -> group c mod g: the "(r g)" order
            return g.reshape(b, l, d // gg, gg, n).sum(axis=2)
        return g.reshape(b, l, gg, d // gg, n).sum(axis=3)

    def real_like(v, ref):
        return v if np.iscomplexobj(ref) else np.asarray(v).real

    g = {"u": np.transpose(du, (0, 2, 1)), "delta": np.transpose(dx, (0, 2, 1)), "A": real_like(dA, A),
         "B": real_like(ops._bc_channel_first(red(gB, B_, grouped_rg)), B),
         "C": real_like(ops._bc_channel_first(red(gC, C_)) * half, C)}
    x_eff = ops._eff(inp, conv)
    if x_eff["D"] is not None:
        g["D"] = np.sum((dout if dD_ungated else dpre) * u_, axis=(0, 1))
    if x_eff["z"] is not None:
        g["z"] = np.transpose(dz, (0, 2, 1))
    if x_eff["delta_bias"] is not None:
        g["delta_bias"] = dx.sum(axis=(0, 1))
    if x_eff["h0"] is not None:
        g["h0"] = real_like(np.zeros_like(dh0) if drop_dh0 else dh0, h0)
    return g


def _conventions(extra=None) -> Dict[str, Any]:
    from oracles.verify.registry import get_op

    conv = {c.name: c.default for c in get_op(OP).conventions}
    conv.update(extra or {})
    return conv


def _make(name, doc, conventions=None, **flags):
    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None, d_out=None, d_h_last=None):
        return _backward(_conventions(conventions), u, delta, A, B, C, D, z, delta_bias, h0, d_out, d_h_last, **flags)

    fn.__name__ = fn.__qualname__ = "grad_" + name.replace("-", "_")
    return grad_mutant(OP, name, doc=doc, conventions=conventions)(fn)


grad_softplus_grad_missing = _make(
    "softplus-grad-missing", "d delta = dDelta: the softplus' derivative sigmoid(x) dropped",
    {"delta_softplus": True}, no_softplus_grad=True)
grad_dA_no_conj = _make(
    "dA-no-conj", "dw = A_bar h_{t-1} dh without the conjugate (complex A only)", None, no_conj=True)
grad_reverse_scan_one_step_late = _make(
    "reverse-scan-one-step-late", "the reverse scan starts one step late: dh_{l-1} misses c conj(C_{l-1}) dy_{l-1}",
    None, late=True)
grad_dD_wrong_everywhere = _make(
    "dD-wrong-everywhere", "dD = sum dout u: the gate silu(z) missing from D's cotangent", None, dD_ungated=True)
grad_dz_missing_silu_prime = _make(
    "dz-missing-silu-prime", "dz = dout pre sigmoid(z) instead of dout pre silu'(z)", None, dz_sigmoid=True)
grad_dh0_dropped = _make("dh0-dropped", "the initial state's gradient is zero", None, drop_dh0=True)
grad_grouped_dB_wrong_axis = _make(
    "grouped-dB-wrong-axis", "grouped B's gradient summed over the (r g) channel order (channel c -> group c mod g)",
    None, grouped_rg=True)
grad_chunked_drops_state_gradient = _make(
    "chunked-drops-state-gradient", "a chunked backward (chunks of 4) that drops the state gradient carried between "
    "chunks: wrong from the chunk boundary back", {"algorithm": "chunked", "chunk": 4}, chunk_drop=4)
