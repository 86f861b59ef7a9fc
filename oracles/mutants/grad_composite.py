"""Backward mutants of ``attention.multi_head``, ``attention.performer`` and ``ssm.hippo_projection``: plausible
bugs in their backward passes, each an explicit backward in the canonical protocol
(``fn(*canonical inputs, *cotangents) -> {input: grad}``; the conventions each claims are fixed in its body).

The correct backwards the slips are planted in (written here, in NumPy, from the adjoint equations):

* multi-head: ``dW_O = Z^T dout``, ``dZ = dout W_O^T``, ``dV = P^T dZ``, ``dS = P o (dP - D)``,
  ``dQ = scale dS K``, ``dK = scale dS^T Q``, ``dW_Q = X_q^T dQ``, ``dX_q = dQ W_Q^T``, ``dX_kv = dK W_K^T + dV W_V^T``;
* Performer (positive features ``phi = exp(W x - |x|^2/2)/sqrt(m)`` of ``x = d^-1/4 q``, linear attention):
  ``dnum = do / den``, ``dden = -(do . o) / den``, ``dphi_q_i = sum_j (dnum_i . v_j + dden_i) phi_k_j``,
  ``dphi_k_j = sum_i (...) phi_q_i``, ``dv_j = sum_i A_ij dnum_i``; ``dz = dphi o phi``,
  ``dx = W^T dz - x sum dz``, ``dW = sum dz x^T`` (queries and keys), the offset's adjoint ``-sum dz`` at the argmax;
* HiPPO LegS, bilinear, trapezoid: the reverse scan ``w_k = (I - h_{k+1} A/2)^{-T} g_{k+1}``,
  ``g_k = dc_k + (I + h_k A/2)^T w_k``, ``df_{k+1} += h_{k+1} (B . w_k)/2``, ``df_k += h_k (B . w_k)/2``, ``dc0 = g_0``.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.composite_grad_forward import hippo_matrices
from oracles.mutants import grad_mutant

MH = "attention.multi_head"
PERF = "attention.performer"
HIPPO = "ssm.hippo_projection"
CHUNK = 64


# ------------------------------------------------------------------ attention.multi_head

def _mh_backward(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, *, causal=None, drop_d=False, no_value_path=False,
                 dq_unscaled=False, unmasked=False):
    xq, xkv, WQ, WK, WV, WO, do = (np.asarray(a, dtype=np.float64) for a in (x_q, x_kv, W_Q, W_K, W_V, W_O, dout))
    b, l, d = xq.shape
    s = xkv.shape[1]
    h, _, n = WQ.shape
    p = WV.shape[2]
    sc = 1.0 / math.sqrt(n) if n else 1.0
    q = np.einsum("bld,hdn->blhn", xq, WQ)
    k = np.einsum("bsd,hdn->bshn", xkv, WK)
    v = np.einsum("bsd,hdp->bshp", xkv, WV)
    S = sc * np.einsum("bihn,bjhn->bhij", q, k)
    i, j = np.arange(l)[:, None], np.arange(s)[None, :]
    keep = np.ones((l, s), dtype=bool)
    if causal is not None:
        keep = j <= i + (0 if causal == "top_left" else s - l)
    Sm = np.where(keep, S, -np.inf) if not unmasked else S
    with np.errstate(invalid="ignore"):
        m = np.max(Sm, axis=-1, keepdims=True) if s else np.zeros(S.shape[:-1] + (1,))
        m = np.where(np.isfinite(m), m, 0.0)
        E = np.exp(Sm - m)
        Z = np.sum(E, axis=-1, keepdims=True)
        P = np.where(Z > 0, E / np.where(Z > 0, Z, 1.0), 0.0)
    Pt = np.where(keep, np.exp(np.where(keep, S, -np.inf) - m), 0.0)
    Pt = np.where(np.sum(Pt, -1, keepdims=True) > 0, Pt / np.maximum(np.sum(Pt, -1, keepdims=True), 1e-300), 0.0)
    O = np.einsum("bhij,bjhp->bihp", Pt, v)
    dW_O = np.einsum("blc,blo->co", O.reshape(b, l, h * p), do)
    dZ = (do @ WO.T).reshape(b, l, h, p)
    dv = np.einsum("bhij,bihp->bjhp", P, dZ)
    dP = np.einsum("bihp,bjhp->bhij", dZ, v)
    D = np.einsum("bihp,bihp->bhi", dZ, O)
    dS = P * dP if drop_d else P * (dP - D[..., None])
    dq = (1.0 if dq_unscaled else sc) * np.einsum("bhij,bjhn->bihn", dS, k)
    dk = sc * np.einsum("bhij,bihn->bjhn", dS, q)
    dx_kv = np.einsum("bshn,hdn->bsd", dk, WK)
    if not no_value_path:
        dx_kv = dx_kv + np.einsum("bshp,hdp->bsd", dv, WV)
    return {"x_q": np.einsum("blhn,hdn->bld", dq, WQ), "x_kv": dx_kv, "W_Q": np.einsum("bld,blhn->hdn", xq, dq),
            "W_K": np.einsum("bsd,bshn->hdn", xkv, dk), "W_V": np.einsum("bsd,bshp->hdp", xkv, dv), "W_O": dW_O}


@grad_mutant(MH, "softmax-D-term-dropped", doc="dS = P o dP: the softmax Jacobian's -P (P . dP) term dropped")
def _mh_drop_d(x_q, x_kv, W_Q, W_K, W_V, W_O, dout):
    return _mh_backward(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, drop_d=True)


@grad_mutant(MH, "x_kv-value-path-dropped", doc="dX_kv = dK W_K^T: the values' term dV W_V^T dropped")
def _mh_no_value_path(x_q, x_kv, W_Q, W_K, W_V, W_O, dout):
    return _mh_backward(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, no_value_path=True)


@grad_mutant(MH, "dQ-scale-missing", doc="dQ = dS K: the softmax scale missing in the queries' gradient (and so "
                                         "in dX_q, dW_Q)")
def _mh_dq_unscaled(x_q, x_kv, W_Q, W_K, W_V, W_O, dout):
    return _mh_backward(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, dq_unscaled=True)


@grad_mutant(MH, "causal-mask-missing-in-the-backward", conventions={"causal": "top_left"},
             doc="the backward recomputes P from the unmasked scores: future keys get weight")
def _mh_unmasked(x_q, x_kv, W_Q, W_K, W_V, W_O, dout):
    return _mh_backward(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, causal="top_left", unmasked=True)


# ------------------------------------------------------------------ attention.performer

def _positive(x, W, row_max):
    m = W.shape[0]
    z = x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    if row_max and z.size:
        c = np.max(z, axis=-1, keepdims=True)
        return np.exp(z - c) / math.sqrt(m), z
    return np.exp(z) / math.sqrt(m), z


def _features_back(x, W, phi, z, dphi, row_max, through, norm_term=True):
    dz = dphi * phi
    dx = dz @ W
    if norm_term:
        dx = dx - x * np.sum(dz, axis=-1, keepdims=True)
    m, d = W.shape
    dW = dz.reshape(-1, m).T @ x.reshape(-1, d)
    if row_max and through and z.size:
        # c = max_f z_f: its adjoint -sum dz lands on the argmax feature (dz_c/dx = w_c - x, dz_c/dW_c = x)
        tot = np.sum(dz, axis=-1, keepdims=True)
        am = np.argmax(z, axis=-1)
        wc = W[am]
        dx = dx - tot * (wc - x if norm_term else wc)
        onehot = np.eye(W.shape[0])[am]
        dW = dW - (onehot * tot).reshape(-1, m).T @ x.reshape(-1, d)
    return dx, dW


def _perf_backward(q, k, v, W, do, *, causal=False, normalize=True, row_max=False, through=True, no_dden=False,
                   norm_term=True, keys_only_dW=False, intra_chunk_only=False):
    q, k, v, W, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, W, do))
    d = q.shape[-1]
    r = d ** -0.25 if d else 1.0
    xq, xk = q * r, k * r
    pq, zq = _positive(xq, W, row_max)
    pk, zk = _positive(xk, W, False)
    l, s = pq.shape[1], pk.shape[1]
    i, j = np.arange(l)[:, None], np.arange(s)[None, :]
    M = (j <= i).astype(np.float64) if causal else np.ones((l, s))
    A = np.einsum("bihn,bjhn->bhij", pq, pk) * M
    num = np.einsum("bhij,bjhe->bihe", A, v)
    if normalize:
        den = np.einsum("bhij->bih", A)
        o = num / den[..., None]
        dnum = do / den[..., None]
        dden = -np.einsum("bihe,bihe->bih", do, o) / den
        if no_dden:
            dden = np.zeros_like(dden)
    else:
        dnum, dden = do, np.zeros(do.shape[:3])
    T = (np.einsum("bihe,bjhe->bhij", dnum, v) + np.einsum("bih->bhi", dden)[..., None]) * M
    Tk = T * ((i // CHUNK) == (j // CHUNK)) if intra_chunk_only else T   # BUG: no state gradient across chunks
    dpq = np.einsum("bhij,bjhn->bihn", T, pk)
    dpk = np.einsum("bhij,bihn->bjhn", Tk, pq)
    Mv = M * ((i // CHUNK) == (j // CHUNK)) if intra_chunk_only else M
    dv = np.einsum("bhij,bihe->bjhe", np.einsum("bihn,bjhn->bhij", pq, pk) * Mv, dnum)
    dxq, dWq = _features_back(xq, W, pq, zq, dpq, row_max, through, norm_term)
    dxk, dWk = _features_back(xk, W, pk, zk, dpk, False, through, norm_term)
    return {"q": r * dxq, "k": r * dxk, "v": dv, "W": dWk if keys_only_dW else dWq + dWk}


@grad_mutant(PERF, "normalizer-gradient-dropped", doc="dden = 0: no gradient through the kernel sum (den detached)")
def _perf_no_dden(q, k, v, W, do):
    return _perf_backward(q, k, v, W, do, no_dden=True)


@grad_mutant(PERF, "feature-norm-term-dropped", doc="dx = W^T dz: the -x sum dz of exp(-|x|^2/2) dropped")
def _perf_no_norm(q, k, v, W, do):
    return _perf_backward(q, k, v, W, do, norm_term=False)


@grad_mutant(PERF, "dW-from-the-keys-only", doc="dW = sum dz_k x_k^T: the queries' share of W's gradient dropped")
def _perf_keys_dw(q, k, v, W, do):
    return _perf_backward(q, k, v, W, do, keys_only_dW=True)


@grad_mutant(PERF, "offset-gradient-stopped", conventions={"normalize": False, "query_stabilizer": "row_max"},
             doc="the query stabilizer's max under stop-gradient (FAVOR+'s .detach()) where it does not cancel "
                 "(unnormalized): the offset's adjoint -sum dz missing")
def _perf_stop(q, k, v, W, do):
    return _perf_backward(q, k, v, W, do, normalize=False, row_max=True, through=False)


@grad_mutant(PERF, "chunked-drops-the-inter-chunk-state-gradient", conventions={"causal": True},
             doc=f"a chunked backward (chunk {CHUNK}) whose keys and values get no gradient from later chunks' "
                 "queries (the reverse state-gradient scan dropped): wrong only past a chunk boundary")
def _perf_chunk(q, k, v, W, do):
    return _perf_backward(q, k, v, W, do, causal=True, intra_chunk_only=True)


# ------------------------------------------------------------------ ssm.hippo_projection

def _hippo_backward(f, N, dt, c0, dc, *, late=False, no_transpose=False, dc0_local=False, alpha=0.5,
                    swap_weights=False):
    f = np.asarray(f, dtype=np.float64)
    dc = np.asarray(dc, dtype=np.float64)
    N = int(np.asarray(N))
    L = f.shape[0]
    A, B = hippo_matrices("legs", N)
    I = np.eye(N)
    h = 1.0 / np.arange(1, L + 1)
    df = np.zeros(L)
    out = {"f": df, "dt": np.asarray(0.0)}
    if L == 0:
        if c0 is not None:
            out["c0"] = np.zeros(N)
        return out
    g = np.zeros(N) if late else dc[L - 1].copy()     # BUG (late): the scan starts one step late (dc_{L-1} lost)
    a1, a0 = (1 - alpha, alpha) if swap_weights else (alpha, 1 - alpha)
    for k in range(L - 2, -1, -1):
        lhs = I - alpha * h[k + 1] * A
        w = np.linalg.solve(lhs if no_transpose else lhs.T, g)
        Bw = B @ w
        df[k + 1] += a1 * h[k + 1] * Bw
        df[k] += a0 * h[k] * Bw
        R = I + (1 - alpha) * h[k] * A
        g = dc[k] + (R if no_transpose else R.T) @ w
    g0 = dc[0] if dc0_local else g
    if c0 is not None:
        out["c0"] = g0
    else:
        df[0] += g0[0]
    return out


@grad_mutant(HIPPO, "reverse-scan-started-one-step-late", doc="the reverse scan starts from g = 0 at step l - 2: "
                                                              "the last row's cotangent dc_{l-1} never enters")
def _hippo_late(f, N, dt, c0, c):
    return _hippo_backward(f, N, dt, c0, c, late=True)


@grad_mutant(HIPPO, "adjoint-without-transposes", doc="the reverse scan applies (I - h A/2)^{-1} and (I + h A/2), "
                                                      "not their transposes (LegS's A is triangular: wrong)")
def _hippo_no_t(f, N, dt, c0, c):
    return _hippo_backward(f, N, dt, c0, c, no_transpose=True)


@grad_mutant(HIPPO, "initial-state-gradient-local", doc="dc0 = dc_0: the initial state's gradient without the "
                                                        "propagated g_0 (only the first row's own cotangent)")
def _hippo_dc0(f, N, dt, c0, c):
    return _hippo_backward(f, N, dt, c0, c, dc0_local=True)


@grad_mutant(HIPPO, "sample-weights-swapped", conventions={"method": "gbt", "alpha": 0.3},
             doc="df_{k+1} += (1 - alpha) h B.w, df_k += alpha h B.w: the two ends' weights swapped (gbt alpha 0.3)")
def _hippo_swap(f, N, dt, c0, c):
    return _hippo_backward(f, N, dt, c0, c, alpha=0.3, swap_weights=True)
