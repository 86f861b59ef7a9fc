r"""Backward mutants of the efficient-attention ops (``refimpl mutants --op <op> --grad``): plausible slips in a
hand-written VJP of Linformer, AFT, GAU / FLASH and LSH attention.

Each is an explicit backward in the op's canonical protocol, ``grad_fn(*inputs in op order, *cotangents in output
order) -> {input: gradient}``; its forward is the op's correct reference.  The correct adjoints these perturb are
those of :mod:`refimpl.attention.{linformer,aft,gau,lsh}.backward`, written out again here (dense, small) so that
each slip sits in one line:

* ``attention.linformer``: the softmax's ``- D_i`` term dropped (``dS = P dP``: wrong ``dq``, ``dk``, ``dE``);
  ``dq`` without the scale.
* ``attention.aft``: the normalizer's gradient dropped (``dS = P dA V``, no ``- A``); the gate's derivative taken as
  ``sigmoid`` instead of ``sigmoid (1 - sigmoid)``; AFT-local's ``dw`` not masked to the window (gradient where ``w``
  does not enter).
* ``attention.gau``: ``relu^2``'s derivative taken as ``relu`` (the factor 2 lost); SiLU's derivative taken as the
  sigmoid; FLASH's causal backward without the inter-chunk state gradient (``dKl`` and the ``V`` part from later
  chunks dropped: an error only across chunk boundaries).
* ``attention.lsh``: the key normalization's projection missing (``dqk += dk / ||qk||``); the backward's kept keys
  from the first hash round's buckets only (the gradient through the wrong bucket's keys).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from oracles.mutants import grad_mutant


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(S, axis=-1, keep=None):
    if keep is not None:
        S = np.where(keep, S, -np.inf)
    if S.shape[axis] == 0:
        return np.zeros(S.shape)
    m = np.max(S, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    E = np.exp(S - m)
    Z = np.sum(E, axis=axis, keepdims=True)
    return E / np.where(Z > 0, Z, 1.0)


# ----------------------------------------------------------------------------------------------------------
# attention.linformer
# ----------------------------------------------------------------------------------------------------------

def _linformer_backward(q, k, v, E, F, do, *, drop_D=False, unscaled_dq=False) -> Dict[str, np.ndarray]:
    q, k, v, E, F, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, E, F, do))
    h, n = q.shape[2], q.shape[3]
    shared = E.ndim == 2
    Eh = np.broadcast_to(E, (h,) + E.shape) if shared else E
    Fh = np.broadcast_to(F, (h,) + F.shape) if shared else F
    sc = 1.0 / math.sqrt(n) if n else 1.0
    Kb = np.einsum("htj,bjhn->bthn", Eh, k)
    Vb = np.einsum("htj,bjhp->bthp", Fh, v)
    P = _softmax(sc * np.einsum("bihn,bthn->bhit", q, Kb))
    dVb = np.einsum("bhit,bihp->bthp", P, do)
    dP = np.einsum("bihp,bthp->bhit", do, Vb)
    D = 0.0 if drop_D else np.sum(P * dP, axis=-1, keepdims=True)
    dS = P * (dP - D)
    dq = (1.0 if unscaled_dq else sc) * np.einsum("bhit,bthn->bihn", dS, Kb)
    dKb = sc * np.einsum("bhit,bihn->bthn", dS, q)
    dk = np.einsum("htj,bthn->bjhn", Eh, dKb)
    dv = np.einsum("htj,bthp->bjhp", Fh, dVb)
    dE = np.einsum("bjhn,bthn->htj", k, dKb)
    dF = np.einsum("bjhp,bthp->htj", v, dVb)
    if shared:
        dE, dF = dE.sum(axis=0), dF.sum(axis=0)
    return {"q": dq, "k": dk, "v": dv, "E": dE, "F": dF}


@grad_mutant("attention.linformer", "softmax-D-term-dropped",
             doc="dS = P dP without the - D_i = - do_i . o_i term of the softmax's Jacobian (dq, dk, dE wrong)")
def _lin_drop_D(q, k, v, E, F, do):
    return _linformer_backward(q, k, v, E, F, do, drop_D=True)


@grad_mutant("attention.linformer", "dq-unscaled",
             doc="dq = sum_t dS_it K_bar_t without the scale 1/sqrt(n) (dq wrong everywhere)")
def _lin_unscaled_dq(q, k, v, E, F, do):
    return _linformer_backward(q, k, v, E, F, do, unscaled_dq=True)


# ----------------------------------------------------------------------------------------------------------
# attention.aft
# ----------------------------------------------------------------------------------------------------------

def _aft_backward(q, k, v, w, dy, *, variant="full", causal=False, window=(1, 1), drop_normalizer=False,
                  gate_as_sigmoid=False, unmasked_dw=False):
    q, k, v, dy = (np.asarray(a, dtype=np.float64) for a in (q, k, v, dy))
    b, l, d = q.shape
    t, tp = np.arange(l)[:, None], np.arange(l)[None, :]
    keep = (tp <= t) if causal else np.ones((l, l), dtype=bool)
    if variant == "simple" or w is None:
        biased = np.zeros((l, l), dtype=bool)
    elif variant == "full":
        biased = np.ones((l, l), dtype=bool)
    else:
        left, right = window
        biased = (tp >= t - left) & (tp <= t + (0 if causal else right))
    wp = np.where(biased, np.asarray(w, dtype=np.float64), 0.0) if w is not None else np.zeros((l, l))
    P = _softmax(k[:, None] + wp[None, :, :, None], axis=2, keep=keep[None, :, :, None])
    A = np.einsum("btsc,bsc->btc", P, v)
    G = _sigmoid(q)
    dA = dy * G
    dq = dy * A * (G if gate_as_sigmoid else G * (1 - G))
    dv = np.einsum("btsc,btc->bsc", P, dA)
    dS = P * dA[:, :, None] * (v[:, None] - (0.0 if drop_normalizer else A[:, :, None]))
    out = {"q": dq, "k": dS.sum(axis=1), "v": dv}
    if w is not None:
        dw = np.einsum("btsc->ts", dS)
        out["w"] = dw if unmasked_dw else np.where(biased, dw, 0.0)
    return out


def _aft_conv_window(variant):
    return {"variant": variant}


@grad_mutant("attention.aft", "normalizer-gradient-dropped",
             doc="dS = P dA V without the normalizer's - P dA A term (dk and dw wrong)")
def _aft_drop_normalizer(q, k, v, w, dy):
    return _aft_backward(q, k, v, w, dy, drop_normalizer=True)


@grad_mutant("attention.aft", "gate-derivative-as-sigmoid",
             doc="dQ = dy A sigmoid(Q) instead of dy A sigmoid(Q) (1 - sigmoid(Q)) (dq wrong everywhere)")
def _aft_gate(q, k, v, w, dy):
    return _aft_backward(q, k, v, w, dy, gate_as_sigmoid=True)


@grad_mutant("attention.aft", "local-dw-unmasked", conventions={"variant": "local"},
             doc="AFT-local: dw summed over every pair, not only inside the window where w enters")
def _aft_local_dw(q, k, v, w, dy):
    return _aft_backward(q, k, v, w, dy, variant="local", window=(1, 1), unmasked_dw=True)


# ----------------------------------------------------------------------------------------------------------
# attention.gau (GAU: chunk = 0; FLASH: chunk = c)
# ----------------------------------------------------------------------------------------------------------

def _gau_backward(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do, *, chunk=0, causal=False, relu_as_relu=False,
                  silu_as_sigmoid=False, drop_state_grad=False):
    x, W_u, W_v, W_z, gamma, beta, W_o, do = (np.asarray(a, dtype=np.float64)
                                              for a in (x, W_u, W_v, W_z, gamma, beta, W_o, do))
    b, l, d = x.shape
    c = chunk or None
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    H = {key: x @ W for key, W in (("u", W_u), ("v", W_v), ("z", W_z))}
    sig = {key: _sigmoid(a) for key, a in H.items()}
    U, V, Z = (H[key] * sig[key] for key in ("u", "v", "z"))
    R = [gamma[r] * Z + beta[r] for r in range(gamma.shape[0])]
    if c is None:
        same, sq, w = np.ones((l, l), dtype=bool), 1.0 / l if l else 1.0, l
    else:
        same, sq, w = (i // c) == (j // c), 1.0 / c, c
    keep_q = same & (j <= i) if causal else same
    S = sq * np.einsum("bin,bjn->bij", R[0], R[1])
    if bias is not None and l:
        S = S + np.where(same, np.asarray(bias, dtype=np.float64)[np.clip(j - i + w - 1, 0, 2 * w - 2)], 0.0)
    A = np.where(keep_q, np.maximum(S, 0) ** 2, 0.0)
    lin = None
    if c is not None:
        sl = 1.0 / c if causal else (1.0 / l if l else 1.0)
        keep_l = (j // c) < (i // c) if causal else np.ones((l, l), dtype=bool)
        lin = np.where(keep_l, sl * np.einsum("bin,bjn->bij", R[2], R[3]), 0.0)
        A = A + lin
    AV = np.einsum("bij,bjp->bip", A, V)
    dW_o = np.einsum("blp,bld->pd", U * AV, do)
    dY = do @ W_o.T
    dU, dAV = dY * AV, dY * U
    dA = np.einsum("bip,bjp->bij", dAV, V)
    dV = np.einsum("bij,bip->bjp", A, dAV)
    dS = np.where(keep_q, dA * ((1.0 if relu_as_relu else 2.0) * np.maximum(S, 0)), 0.0)
    dR = [sq * np.einsum("bij,bjn->bin", dS, R[1]), sq * np.einsum("bij,bin->bjn", dS, R[0])]
    if c is not None:
        dAl = np.where(keep_l, dA, 0.0) * sl
        dKl = np.einsum("bij,bin->bjn", dAl, R[2])
        if drop_state_grad and causal:
            # the slip: the keys and values of a chunk get no gradient from the later chunks' linear part
            dKl = np.zeros_like(dKl)
            dV = np.einsum("bij,bip->bjp", np.where(keep_l, 0.0, A), dAV)
        dR += [np.einsum("bij,bjn->bin", dAl, R[3]), dKl]
    out = {"W_o": dW_o}
    if bias is not None:
        db = np.zeros(np.shape(bias))
        ii, jj = np.nonzero(np.broadcast_to(same, (l, l)))
        np.add.at(db, jj - ii + w - 1, dS.sum(axis=0)[ii, jj])
        out["bias"] = db
    dZ = sum(gamma[r] * dR[r] for r in range(len(R)))
    out["gamma"] = np.stack([np.einsum("bln,bln->n", dR[r], Z) for r in range(len(R))])
    out["beta"] = np.stack([dR[r].sum(axis=(0, 1)) for r in range(len(R))])
    dH = {}
    for key, dphi in (("u", dU), ("v", dV), ("z", dZ)):
        s = sig[key]
        dH[key] = dphi * (s if silu_as_sigmoid else s * (1 + H[key] * (1 - s)))
    out["W_u"], out["W_v"], out["W_z"] = (np.einsum("bld,blc->dc", x, dH[key]) for key in ("u", "v", "z"))
    out["x"] = dH["u"] @ W_u.T + dH["v"] @ W_v.T + dH["z"] @ W_z.T
    return out


@grad_mutant("attention.gau", "relu2-derivative-as-relu",
             doc="relu^2's derivative taken as relu(s) instead of 2 relu(s) (every gradient but dW_o wrong)")
def _gau_relu(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do):
    return _gau_backward(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do, relu_as_relu=True)


@grad_mutant("attention.gau", "silu-derivative-as-sigmoid",
             doc="SiLU's derivative taken as sigmoid(y) instead of sigmoid(y) (1 + y (1 - sigmoid(y)))")
def _gau_silu(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do):
    return _gau_backward(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do, silu_as_sigmoid=True)


@grad_mutant("attention.gau", "flash-state-gradient-dropped", conventions={"chunk": 2, "causal": True},
             doc="FLASH causal: the inter-chunk state's gradient dropped (dKl = 0, V gets nothing from later chunks' "
                 "linear part): wrong only across chunk boundaries")
def _gau_state(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do):
    return _gau_backward(x, W_u, W_v, W_z, gamma, beta, W_o, bias, do, chunk=2, causal=True, drop_state_grad=True)


# ----------------------------------------------------------------------------------------------------------
# attention.lsh (buckets fixed)
# ----------------------------------------------------------------------------------------------------------

def _lsh_backward(qk, v, buckets, do, *, chunk=2, no_projection=False, first_round_only=False):
    from refimpl.attention.lsh.reference import _round_masks

    qk, v, do = (np.asarray(a, dtype=np.float64) for a in (qk, v, do))
    bk = np.asarray(buckets).astype(np.int64)
    b, l, h, n = qk.shape
    sc = 1.0 / math.sqrt(n) if n else 1.0
    norm = np.sqrt(np.sum(qk * qk, axis=-1, keepdims=True))
    k = np.where(norm > 0, qk / np.where(norm > 0, norm, 1.0), 0.0)
    dqk, dv, dk = np.zeros_like(qk), np.zeros_like(v), np.zeros_like(qk)
    eye = np.eye(l, dtype=bool)
    for bi in range(b):
        for hi in range(h):
            rounds = bk[bi, :, hi][:, :1] if first_round_only else bk[bi, :, hi]
            keep = _round_masks(rounds, chunk).any(axis=0) if l else np.zeros((0, 0), dtype=bool)
            lonely = ~np.any(keep & ~eye, axis=1)
            keep = (keep & ~eye) | (lonely[:, None] & eye)
            P = _softmax(sc * qk[bi, :, hi] @ k[bi, :, hi].T, keep=keep)
            o = P @ v[bi, :, hi]
            dv[bi, :, hi] = P.T @ do[bi, :, hi]
            ds = P * (do[bi, :, hi] @ v[bi, :, hi].T - np.sum(do[bi, :, hi] * o, axis=-1, keepdims=True))
            dqk[bi, :, hi] = sc * ds @ k[bi, :, hi]
            dk[bi, :, hi] = sc * ds.T @ qk[bi, :, hi]
    proj = dk if no_projection else dk - k * np.sum(k * dk, axis=-1, keepdims=True)
    dqk = dqk + np.where(norm > 0, proj / np.where(norm > 0, norm, 1.0), 0.0)
    return {"qk": dqk, "v": dv}


@grad_mutant("attention.lsh", "key-normalization-projection-missing",
             doc="dqk_j += dk_j / ||qk_j|| without the projection - k_j (k_j . dk_j) of the normalization's Jacobian")
def _lsh_no_projection(qk, v, buckets, do):
    return _lsh_backward(qk, v, buckets, do, no_projection=True)


@grad_mutant("attention.lsh", "first-round-buckets-only",
             doc="the backward recomputes the kept keys from the first hash round's buckets only: the gradient flows "
                 "through the wrong bucket's keys")
def _lsh_first_round(qk, v, buckets, do):
    return _lsh_backward(qk, v, buckets, do, first_round_only=True)


# ----------------------------------------------------------------------------------------------------------
# attention.mega: refimpl's full_vjp with one piece replaced (patched for the call, restored after)
# ----------------------------------------------------------------------------------------------------------

def _mega_with(x_args, dy, **patch):
    import refimpl.attention.mega.backward as mb
    from oracles.verify import ops_mega

    names = [a for a in ops_mega.PARAMS + ("rel_bias",) + ops_mega.BWD]
    args = dict(zip(names, x_args[1:]))
    saved = {k: getattr(mb, k) for k in patch}
    try:
        for k, v in patch.items():
            setattr(mb, k, v)
        return mb.full_vjp(x_args[0], **args, dy=dy)
    finally:
        for k, v in saved.items():
            setattr(mb, k, v)


def _ema_vjp_late(x, alpha, delta, beta, eta, dXp):
    """The EMA's reverse scan started one step late: lambda_{L-1} misses eta dX'_{L-1}."""
    b, L, d = x.shape
    hs = np.zeros((L + 1, b, d, alpha.shape[1]))
    for t in range(L):
        hs[t + 1] = alpha * (beta * x[:, t, :, None]) + (1.0 - alpha * delta) * hs[t]
    q = 1.0 - alpha * delta
    lam = np.zeros((b, d, alpha.shape[1]))
    dx = np.zeros_like(x)
    dalpha, ddelta, dbeta, deta = (np.zeros_like(alpha) for _ in range(4))
    for t in range(L - 1, -1, -1):
        lam = (0.0 if t == L - 1 else eta * dXp[:, t, :, None]) + q * lam  # the slip
        xt = x[:, t, :, None]
        dx[:, t] = np.sum(alpha * beta * lam, axis=-1)
        dalpha += np.sum(lam * (beta * xt - delta * hs[t]), axis=0)
        ddelta += np.sum(-alpha * lam * hs[t], axis=0)
        dbeta += np.sum(alpha * lam * xt, axis=0)
        deta += np.sum(hs[t + 1] * dXp[:, t, :, None], axis=0)
    return dx, dalpha, ddelta, dbeta, deta


def _silu_grad_as_sigmoid(a):
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


@grad_mutant("attention.mega", "ema-reverse-scan-one-step-late",
             doc="the EMA's adjoint started one step late (lambda_{L-1} misses eta dX'_{L-1}): dx and the EMA "
                 "parameters wrong")
def _mega_late(*args):
    return _mega_with(args[:-1], args[-1], _ema_vjp=_ema_vjp_late)


@grad_mutant("attention.mega", "silu-derivative-as-sigmoid",
             doc="SiLU's derivative taken as sigmoid(a) (every gate and projection gradient wrong)")
def _mega_silu(*args):
    return _mega_with(args[:-1], args[-1], _silu_grad=_silu_grad_as_sigmoid)
