r"""Backward mutants of linear attention and the feature maps (``refimpl mutants --op <op> --grad``): plausible
slips in a hand-written VJP.

Each is an explicit backward in the op's canonical protocol, ``grad_fn(*inputs in op order, *cotangents in output
order) -> {input: gradient}``; its forward is the op's correct reference.  The correct adjoints these perturb are
those of :mod:`refimpl.attention.linear.backward` and :mod:`refimpl.attention.features.backward`, written out again
here (dense, small; the chunked one with the op's usual chunk of 64) so that each slip sits in one line:

``attention.linear`` (``phi_q, phi_k, v, S0, u0`` then ``do, dS_last, du_last``; default conventions: causal,
normalized, ``eps = 0``, with the state):

* ``normalizer-gradient-dropped``: ``da = 0`` (the gradient through the denominator ``z . phi(q)`` lost);
* ``causal-mask-missing-in-backward``: ``dA = dnum V^T + da 1^T`` unmasked (gradient flows from future queries);
* ``inter-chunk-state-gradient-dropped``: the chunked backward does not carry ``dS``, ``dz`` to earlier chunks
  (every chunk sees only the final state's cotangent: wrong only where L > 64, from the chunk boundary back);
* ``dv-from-unnormalized-output``: ``dv = A^T do`` (the cotangent of the unnormalized ``num``, not ``do / den``);
* ``initial-state-gradient-missing``: ``dS0 = dS_last``, ``du0 = du_last`` (the queries' ``dnum^T phi(Q)`` lost);
* ``reverse-scan-one-step-late``: ``dv_t``, ``dphi(k_t)`` read ``dS_{t+1}`` (the state gradient before step ``t``'s
  own query is added: the diagonal ``j = i`` terms lost).

``features.elu_plus_one``: ``derivative-one`` (``phi' = 1`` everywhere, the ``exp`` branch's slope lost).
``features.dpfp``: ``product-rule-half`` (``dr_i`` only from ``phi_{j,i} = r_i r_(i-j)``'s first factor).
``features.performer``: ``norm-term-dropped`` (``dx = W^T dz``, the ``-x sum dz`` of ``exp(-|x|^2/2)`` lost);
``offset-under-stop-gradient`` (conventions ``stabilizer="row_max"``: the max treated as a constant, FAVOR+ /
performer-pytorch's ``.detach()``, which is not the derivative of the features).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from oracles.mutants import grad_mutant

OP = "attention.linear"
CHUNK = 64


def _f(a, shape=None):
    if a is None:
        return None if shape is None else np.zeros(shape)
    return np.asarray(a, dtype=np.float64)


def _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, *, chunk=CHUNK, no_da=False, no_mask=False,
                     no_carry=False, dv_unnormalized=False, no_dS0=False, late=False) -> Dict[str, np.ndarray]:
    """The chunked VJP of causal normalized linear attention (``eps = 0``, scale 1), canonical layout ``S (b h e n)``,
    with one slip switched on by a flag."""
    Q, K, V = _f(phi_q), _f(phi_k), _f(v)
    b, l, h, n = Q.shape
    e = V.shape[3]
    S_c = _f(S0, (b, h, e, n))
    z_c = _f(u0, (b, h, n))
    do = _f(do, (b, l, h, e))
    dS = _f(dS_last, (b, h, e, n))
    dz = _f(du_last, (b, h, n))
    dS_final, dz_final = dS.copy(), dz.copy()
    starts = list(range(0, l, chunk))
    S_in, z_in = [], []
    for t0 in starts:
        S_in.append(S_c)
        z_in.append(z_c)
        S_c = S_c + np.einsum("bjhe,bjhn->bhen", V[:, t0:t0 + chunk], K[:, t0:t0 + chunk])
        z_c = z_c + np.sum(K[:, t0:t0 + chunk], axis=1)
    dQ, dK, dV = np.zeros_like(Q), np.zeros_like(K), np.zeros_like(V)
    for ci in range(len(starts) - 1, -1, -1):
        t0 = starts[ci]
        Qc, Kc, Vc, dOc = (x[:, t0:t0 + chunk] for x in (Q, K, V, do))
        c = Qc.shape[1]
        M = np.tril(np.ones((c, c)))
        A = np.einsum("bihn,bjhn->bhij", Qc, Kc) * M
        num = np.einsum("bhen,bihn->bihe", S_in[ci], Qc) + np.einsum("bhij,bjhe->bihe", A, Vc)
        den = np.einsum("bhn,bihn->bih", z_in[ci], Qc) + np.einsum("bhij->bih", A)
        o = num / den[..., None]
        dnum = dOc / den[..., None]
        da = np.zeros_like(den) if no_da else -np.sum(dOc * o, axis=-1) / den
        dA = np.einsum("bihe,bjhe->bhij", dnum, Vc) + np.transpose(da, (0, 2, 1))[..., None]
        Mb = np.ones((c, c)) if no_mask else M
        Mk = np.tril(np.ones((c, c)), -1) if late else Mb  # late: the key's own step j = i not yet in dS
        dQ[:, t0:t0 + c] = (np.einsum("bhij,bjhn->bihn", dA * Mb, Kc) + np.einsum("bhen,bihe->bihn", S_in[ci], dnum)
                            + da[..., None] * z_in[ci][:, None])
        # the gradient of the state after this chunk (no_carry: only the final state's cotangent)
        dS_after, dz_after = (dS_final, dz_final) if no_carry else (dS, dz)
        dK[:, t0:t0 + c] = (np.einsum("bhij,bihn->bjhn", dA * Mk, Qc) + np.einsum("bhen,bjhe->bjhn", dS_after, Vc)
                            + dz_after[:, None])
        Av = A * Mk if late else (np.einsum("bihn,bjhn->bhij", Qc, Kc) * Mb)
        dV[:, t0:t0 + c] = (np.einsum("bhij,bihe->bjhe", Av, dOc if dv_unnormalized else dnum)
                            + np.einsum("bhen,bjhn->bjhe", dS_after, Kc))
        dS = dS + np.einsum("bihe,bihn->bhen", dnum, Qc)
        dz = dz + np.einsum("bih,bihn->bhn", da, Qc)
    out = {"phi_q": dQ, "phi_k": dK, "v": dV}
    if S0 is not None:
        out["S0"] = dS_final if no_dS0 else dS
    if u0 is not None:
        out["u0"] = dz_final if no_dS0 else dz
    return out


@grad_mutant(OP, "normalizer-gradient-dropped", doc="da = 0: the gradient through the denominator z . phi(q) lost")
def _no_da(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, no_da=True)


@grad_mutant(OP, "causal-mask-missing-in-backward",
             doc="dA = dnum V^T + da 1^T not masked: dphi_q, dphi_k receive terms from future keys / queries")
def _no_mask(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, no_mask=True)


@grad_mutant(OP, "inter-chunk-state-gradient-dropped",
             doc="the chunked backward does not carry dS, dz to earlier chunks (wrong from the chunk boundary back)")
def _no_carry(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, no_carry=True)


@grad_mutant(OP, "dv-from-unnormalized-output", doc="dv = A^T do: the unnormalized num's cotangent, not do / den")
def _dv_unnormalized(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, dv_unnormalized=True)


@grad_mutant(OP, "initial-state-gradient-missing",
             doc="dS0 = dS_last, du0 = du_last: the queries' contribution dnum^T phi(Q) to the initial state lost")
def _no_dS0(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, no_dS0=True)


@grad_mutant(OP, "reverse-scan-one-step-late",
             doc="dv_t, dphi(k_t) read dS_{t+1}: the state gradient before step t's own query (the j = i terms lost)")
def _late(phi_q, phi_k, v, S0=None, u0=None, do=None, dS_last=None, du_last=None):
    return _linear_backward(phi_q, phi_k, v, S0, u0, do, dS_last, du_last, late=True)


# ------------------------------------------------------------------ feature maps

@grad_mutant("features.elu_plus_one", "derivative-one", doc="phi'(x) = 1 everywhere (the exp branch's slope lost)")
def _elu_one(x, dphi):
    return {"x": np.asarray(dphi, dtype=np.float64) * np.ones_like(np.asarray(x, dtype=np.float64))}


@grad_mutant("features.dpfp", "product-rule-half",
             doc="dr_i only through r_i of phi_(j,i) = r_i r_(i-j) (the second factor's term lost)")
def _dpfp_half(x, dphi):
    x = np.asarray(x, dtype=np.float64)
    dphi = np.asarray(dphi, dtype=np.float64)
    d = x.shape[-1]
    nu = dphi.shape[-1] // (2 * d) if d else 1
    r = np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1)
    idx = np.arange(2 * d)
    dr = np.zeros_like(r)
    for j in range(1, nu + 1):
        dr = dr + dphi[..., (j - 1) * 2 * d: j * 2 * d] * r[..., (idx - j) % (2 * d)]
    return {"x": dr[..., :d] * (x > 0) - dr[..., d:] * (x < 0)}


def _positive_backward(x, W, dphi, *, drop_norm=False, stop_offset=False):
    x, W, dphi = (np.asarray(a, dtype=np.float64) for a in (x, W, dphi))
    m = W.shape[0]
    z = x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    c = np.max(z, axis=-1, keepdims=True) if stop_offset and z.size else 0.0
    phi = np.exp(z - c) / math.sqrt(m)
    dz = dphi * phi
    dx = dz @ W - (0.0 if drop_norm else x * np.sum(dz, axis=-1, keepdims=True))
    dW = np.einsum("pf,pn->fn", dz.reshape(-1, m), x.reshape(-1, x.shape[-1]))
    return {"x": dx, "W": dW}


@grad_mutant("features.performer", "norm-term-dropped",
             doc="dx = W^T dz: the -x sum dz of exp(-|x|^2/2) lost (positive features)")
def _perf_norm(x, W, dphi):
    return _positive_backward(x, W, dphi, drop_norm=True)


@grad_mutant("features.performer", "offset-under-stop-gradient", conventions={"stabilizer": "row_max"},
             doc="the row max treated as a constant (FAVOR+/performer-pytorch's .detach()): not the features' "
                 "derivative")
def _perf_stop(x, W, dphi):
    return _positive_backward(x, W, dphi, stop_offset=True)
