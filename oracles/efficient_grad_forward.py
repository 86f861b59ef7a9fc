r"""Ground truth for the gradients of the efficient-attention ops (Linformer, AFT, GAU / FLASH, LSH with fixed
buckets): fast dense float64 forwards for elementwise finite differences (:mod:`oracles.gradients`), and the
magnitudes of the adjoints on absolute values (for the derived rounding bound of a backward).

Imports numpy, scipy and other ground-truth modules (:mod:`oracles.gau` for the pair sets and scales,
:mod:`oracles.lsh` for the kept keys of fixed buckets) only -- never refimpl.  The forwards are written from the
papers' formulas as dense matrices (every ``(l l)`` or ``(l r)`` weight formed, masks from index conditions or
from the ground-truth sets), with ``scipy.special.logsumexp`` / ``expit`` for the softmaxes and the sigmoids.
The mpmath forwards of :mod:`oracles.linformer`, :mod:`oracles.aft`, ... stay the forward ground truth; these
are the fast float64 twins a difference quotient can afford (a few forward calls per input element).

The magnitudes (``*_adjoint_magnitude``)
---------------------------------------
A backward's computed gradient is a sum of products of the recomputed forward quantities and the cotangent.
Its rounding error is bounded, first order, by ``gamma_D`` times the same adjoint evaluated on absolute values
with every difference replaced by a sum (``|a - b| -> |a| + |b|``): that is the magnitude ``M`` of
:func:`oracles.tolerance.componentwise_bound`.  (``|J|^T |w|`` is smaller where the adjoint cancels -- the
softmax's ``P (dP - D)`` -- so it is not enough.)  The depths ``D`` are counted in :mod:`oracles.verify.grad_efficient`.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import numpy as np
import scipy.special

from oracles.gau import pair_scales, pair_sets
from oracles.lsh import SELF_PENALTY, keep_and_counts

__all__ = ["linformer_dense", "linformer_adjoint_magnitude", "aft_masks", "aft_dense", "aft_adjoint_magnitude",
           "gau_masks", "gau_dense", "gau_adjoint_magnitude", "lsh_keep", "lsh_dense", "lsh_adjoint_magnitude",
           "score_spread", "aft_mp", "mega_adjoint_magnitude"]


def _per_head(E, h):
    E = np.asarray(E, dtype=np.float64)
    return np.broadcast_to(E, (h,) + E.shape) if E.ndim == 2 else E


def _softmax_rows(S: np.ndarray, keep: Optional[np.ndarray] = None, axis: int = -1) -> np.ndarray:
    """``exp(S - logsumexp(S))`` over ``axis`` on the kept entries (0 elsewhere; an empty row: zeros)."""
    if S.shape[axis] == 0:
        return np.zeros(S.shape)
    if keep is not None:
        S = np.where(keep, S, -np.inf)
    lse = scipy.special.logsumexp(S, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        P = np.exp(S - lse)
    return np.where(np.isfinite(lse), P, 0.0) if keep is not None else P


def score_spread(S: np.ndarray, keep: Optional[np.ndarray] = None, axis: int = -1) -> float:
    """``max |S|`` over the kept scores (the exp's argument size a softmax's rounding is amplified by)."""
    A = np.abs(S) if keep is None else np.where(keep, np.abs(S), 0.0)
    return float(A.max()) if A.size else 0.0


# ------------------------------------------------------------------------------------------ Linformer

def linformer_dense(q, k, v, E, F, scale) -> np.ndarray:
    r"""``o_i = sum_t softmax_t(scale q_i . (E k)_t) (F v)_t`` in float64, ``(b l h p)`` (``r = 0``: zeros)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    h = q.shape[2]
    E, F = _per_head(E, h), _per_head(F, h)
    # K_bar_t = sum_j E_tj k_j ;  V_bar_t = sum_j F_tj v_j
    Kb = np.einsum("htj,bjhn->bthn", E, k)
    Vb = np.einsum("htj,bjhp->bthp", F, v)
    S = scale * np.einsum("bihn,bthn->bhit", q, Kb)
    P = _softmax_rows(S)
    return np.einsum("bhit,bthp->bihp", P, Vb)


def linformer_adjoint_magnitude(q, k, v, E, F, scale, do) -> Tuple[Dict[str, np.ndarray], float]:
    r"""The Linformer adjoint on absolute values (``dS = P (|dP| + |D|)``, every product of absolute values) and
    ``max |S|``: ``({"q", "k", "v", "E", "F"}, spread)``."""
    q, k, v, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, do))
    shared = np.ndim(E) == 2
    h = q.shape[2]
    E, F = _per_head(E, h), _per_head(F, h)
    Kb = np.einsum("htj,bjhn->bthn", E, k)
    Vb = np.einsum("htj,bjhp->bthp", F, v)
    S = scale * np.einsum("bihn,bthn->bhit", q, Kb)
    P = _softmax_rows(S)
    aE, aF, ak, av, aq, ado = (np.abs(a) for a in (E, F, k, v, q, do))
    aKb = np.einsum("htj,bjhn->bthn", aE, ak)
    aVb = np.einsum("htj,bjhp->bthp", aF, av)
    sc = abs(scale)
    dVb = np.einsum("bhit,bihp->bthp", P, ado)
    dP = np.einsum("bihp,bthp->bhit", ado, aVb)
    D = np.sum(P * dP, axis=-1, keepdims=True)
    dS = P * (dP + D)
    dq = sc * np.einsum("bhit,bthn->bihn", dS, aKb)
    dKb = sc * np.einsum("bhit,bihn->bthn", dS, aq)
    dk = np.einsum("htj,bthn->bjhn", aE, dKb)
    dv = np.einsum("htj,bthp->bjhp", aF, dVb)
    dE = np.einsum("bjhn,bthn->htj", ak, dKb)
    dF = np.einsum("bjhp,bthp->htj", av, dVb)
    if shared:
        dE, dF = dE.sum(axis=0), dF.sum(axis=0)
    return {"q": dq, "k": dk, "v": dv, "E": dE, "F": dF}, score_spread(S)


# ------------------------------------------------------------------------------------------ AFT

@functools.lru_cache(maxsize=256)
def aft_masks(l: int, variant: str, causal: bool, window: Optional[Tuple[int, int]]):
    """``(kept (l l), biased (l l))``: key ``t'`` counts for query ``t`` (causal: ``t' <= t``), and carries the bias
    ``w_{t,t'}`` (full: every kept key; simple: none; local: ``t - left <= t' <= t + right``), the paper's sets."""
    t, tp = np.arange(l)[:, None], np.arange(l)[None, :]
    kept = (tp <= t) if causal else np.ones((l, l), dtype=bool)
    if variant == "full":
        biased = kept.copy()
    elif variant == "simple":
        biased = np.zeros((l, l), dtype=bool)
    else:
        left, right = window
        biased = kept & (tp >= t - left) & (tp <= t + right)
    kept.setflags(write=False)
    biased.setflags(write=False)
    return kept, biased


def _aft_parts(q, k, v, w, variant, causal, window):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    l = q.shape[1]
    kept, biased = aft_masks(l, variant, bool(causal), None if window is None else tuple(window))
    wp = np.where(biased, np.asarray(w, dtype=np.float64), 0.0) if w is not None else np.zeros((l, l))
    # logits a_{t,t',c} = K_{t',c} + w'_{t,t'} over the kept t'
    S = k[:, None, :, :] + wp[None, :, :, None]
    P = _softmax_rows(S, kept[None, :, :, None], axis=2)
    return q, k, v, kept, biased, S, P


def aft_dense(q, k, v, w=None, *, variant: str, causal: bool, window=None) -> np.ndarray:
    r"""``Y_t = sigmoid(Q_t) sum_t' softmax_t'(K_t' + w'_{t,t'}) V_t'`` (kept ``t'``) in float64, ``(b l d)``."""
    q, k, v, kept, biased, S, P = _aft_parts(q, k, v, w, variant, causal, window)
    return scipy.special.expit(q) * np.einsum("btsc,bsc->btc", P, v)


def aft_adjoint_magnitude(q, k, v, w, dy, *, variant, causal, window=None):
    r"""The AFT adjoint on absolute values and ``max |logit|``: ``({"q", "k", "v"[, "w"]}, spread)``."""
    q, k, v, kept, biased, S, P = _aft_parts(q, k, v, w, variant, causal, window)
    ady = np.abs(np.asarray(dy, dtype=np.float64))
    G = scipy.special.expit(q)
    aA = np.einsum("btsc,bsc->btc", P, np.abs(v))
    dA = ady * G
    out = {"q": ady * aA * G * (1 - G) + ady * aA * G * G, "v": np.einsum("btsc,btc->bsc", P, dA)}
    dS = P * (dA[:, :, None, :] * (np.abs(v)[:, None, :, :] + aA[:, :, None, :]))
    out["k"] = np.sum(dS, axis=1)
    if w is not None:
        out["w"] = np.where(biased, np.einsum("btsc->ts", dS), 0.0)
    return out, score_spread(S, kept[None, :, :, None])


# ------------------------------------------------------------------------------------------ GAU / FLASH

@functools.lru_cache(maxsize=256)
def gau_masks(l: int, n: int, chunk: Optional[int], causal: bool, scaling: str, last_chunk: str):
    """``(local (l l), cross (l l), sq (l), sl (l), offsets (l l))`` from :func:`oracles.gau.pair_sets` and
    :func:`oracles.gau.pair_scales` (the quadratic and linear pairs, each query's two scales)."""
    local, cross = pair_sets(l, chunk, causal)
    sq, sl = pair_scales(l, n, chunk, causal, scaling, last_chunk)
    frac = lambda f: 1.0 / np.sqrt(f[1]) if f[0] == "rsqrt" else f[0] / f[1]  # noqa: E731
    L = np.zeros((l, l), dtype=bool)
    C = np.zeros((l, l), dtype=bool)
    for i in range(l):
        L[i, sorted(local[i])] = True
        C[i, sorted(cross[i])] = True
    arrays = (L, C, np.array([frac(f) for f in sq]), np.array([frac(f) for f in sl]))
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _silu(y):
    return y * scipy.special.expit(y)


def _gau_parts(x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk):
    x, W_u, W_v, W_z, gamma_, beta, W_o = (np.asarray(a, dtype=np.float64) for a in (x, W_u, W_v, W_z, gamma_, beta,
                                                                                    W_o))
    b, l, d = x.shape
    n = W_z.shape[1]
    Lm, Cm, sq, sl = gau_masks(l, n, chunk, bool(causal), scaling, last_chunk)
    Hu, Hv, Hz = x @ W_u, x @ W_v, x @ W_z
    U, V, Z = _silu(Hu), _silu(Hv), _silu(Hz)
    R = [gamma_[r] * Z + beta[r] for r in range(gamma_.shape[0])]
    S = sq[None, :, None] * np.einsum("bin,bjn->bij", R[0], R[1])
    if bias is not None:
        w = l if chunk is None else chunk
        i, j = np.arange(l)[:, None], np.arange(l)[None, :]
        idx = np.clip(j - i + w - 1, 0, max(2 * w - 2, 0))
        S = S + np.where(Lm, np.asarray(bias, dtype=np.float64)[idx] if l else 0.0, 0.0)
    Aq = np.where(Lm, np.maximum(S, 0.0) ** 2, 0.0)
    Al = np.where(Cm, sl[None, :, None] * np.einsum("bin,bjn->bij", R[2], R[3]), 0.0) if len(R) == 4 else 0.0
    return (x, W_u, W_v, W_z, gamma_, W_o), (Hu, Hv, Hz, U, V, Z, R), (Lm, Cm, sq, sl), S, Aq + Al


def gau_dense(x, W_u, W_v, W_z, gamma_, beta, W_o, *, chunk: Optional[int] = None, causal: bool = False, bias=None,
              scaling: str = "paper", last_chunk: str = "c") -> np.ndarray:
    r"""GAU (``chunk=None``) or FLASH (``chunk=c``) as one dense ``(l l)`` matrix
    ``A = relu^2(sq Qq Kq^T + b)`` on the quadratic pairs ``+ sl Ql Kl^T`` on the linear pairs, ``O = (U * (A V)) W_o``
    in float64 (the pairs and the scales from :mod:`oracles.gau`)."""
    (x, W_u, W_v, W_z, gamma_, W_o), (Hu, Hv, Hz, U, V, Z, R), _, _, A = _gau_parts(
        x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk)
    return (U * np.einsum("bij,bjp->bip", A, V)) @ W_o


def gau_adjoint_magnitude(x, W_u, W_v, W_z, gamma_, beta, W_o, do, *, chunk=None, causal=False, bias=None,
                          scaling="paper", last_chunk="c"):
    r"""The GAU / FLASH adjoint on absolute values and ``max |S|``: ``({"x", "W_u", ..., "W_o"[, "bias"]}, spread)``."""
    (x, W_u, W_v, W_z, gamma_, W_o), (Hu, Hv, Hz, U, V, Z, R), (Lm, Cm, sq, sl), S, _ = _gau_parts(
        x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk)
    ado = np.abs(np.asarray(do, dtype=np.float64))
    ax, aWu, aWv, aWz, ag, aWo = (np.abs(a) for a in (x, W_u, W_v, W_z, gamma_, W_o))
    aU, aV, aZ = np.abs(U), np.abs(V), np.abs(Z)
    aR = [np.abs(r_) for r_ in R]
    rows = len(R)
    aAq = np.where(Lm, np.maximum(S, 0.0) ** 2, 0.0)
    aAl = np.where(Cm, sl[None, :, None] * np.einsum("bin,bjn->bij", aR[2], aR[3]), 0.0) if rows == 4 else 0.0
    aA = aAq + aAl
    aAV = np.einsum("bij,bjp->bip", aA, aV)
    out = {"W_o": np.einsum("blp,bld->pd", aU * aAV, ado)}
    dY = ado @ aWo.T
    dU, dAV = dY * aAV, dY * aU
    dA = np.einsum("bip,bjp->bij", dAV, aV)
    dV = np.einsum("bij,bip->bjp", aA, dAV)
    dS = np.where(Lm, dA * 2 * np.maximum(S, 0.0), 0.0)
    dR = [sq[None, :, None] * np.einsum("bij,bjn->bin", dS, aR[1]),
          np.einsum("bij,bin->bjn", sq[None, :, None] * dS, aR[0])]
    if rows == 4:
        dAl = np.where(Cm, dA, 0.0) * sl[None, :, None]
        dR += [np.einsum("bij,bjn->bin", dAl, aR[3]), np.einsum("bij,bin->bjn", dAl, aR[2])]
    if bias is not None:
        l = S.shape[1]
        w = l if chunk is None else chunk
        db = np.zeros(np.shape(bias))
        i, j = np.nonzero(Lm)
        np.add.at(db, j - i + w - 1, np.sum(dS, axis=0)[i, j])
        out["bias"] = db
    dZ = sum(ag[r] * dR[r] for r in range(rows))
    out["gamma"] = np.stack([np.einsum("bln,bln->n", dR[r], aZ) for r in range(rows)])
    out["beta"] = np.stack([np.sum(dR[r], axis=(0, 1)) for r in range(rows)])
    dH = {}
    for key, H, dphi in (("u", Hu, dU), ("v", Hv, dV), ("z", Hz, dZ)):
        s = scipy.special.expit(H)
        dH[key] = dphi * s * (1 + np.abs(H) * (1 + s))
    out["W_u"], out["W_v"], out["W_z"] = (np.einsum("bld,blc->dc", ax, dH[key]) for key in ("u", "v", "z"))
    out["x"] = dH["u"] @ aWu.T + dH["v"] @ aWv.T + dH["z"] @ aWz.T
    return out, score_spread(S, Lm[None])


# ------------------------------------------------------------------------------------------ LSH (buckets fixed)

_LSH_CACHE: Dict[tuple, tuple] = {}


def lsh_keep(buckets, chunk: int, *, causal: bool = False, wrap: bool = False, self_rule: str = "exclude"):
    """:func:`oracles.lsh.keep_and_counts`'s ``keep (b h l l)`` for fixed buckets, cached by the buckets' bytes
    (the kept keys do not depend on ``qk`` once the buckets are fixed: a difference quotient reuses them)."""
    bk = np.ascontiguousarray(np.asarray(buckets, dtype=np.int64))
    key = (bk.shape, bk.tobytes(), int(chunk), bool(causal), bool(wrap), self_rule)
    if key not in _LSH_CACHE:
        if len(_LSH_CACHE) > 64:
            _LSH_CACHE.clear()
        _LSH_CACHE[key] = keep_and_counts(bk, int(chunk), causal=bool(causal), wrap=bool(wrap), self_rule=self_rule)
    return _LSH_CACHE[key][0]


def _lsh_parts(qk, v, keep, scale, self_rule):
    qk, v = np.asarray(qk, dtype=np.float64), np.asarray(v, dtype=np.float64)
    # k_j = qk_j / ||qk_j||   (0 for a zero vector)
    norm = np.sqrt(np.sum(qk * qk, axis=-1, keepdims=True))
    k = np.where(norm > 0, qk / np.where(norm > 0, norm, 1.0), 0.0)
    S = scale * np.einsum("bihn,bjhn->bhij", qk, k)
    if self_rule == "penalty" and S.shape[-1]:
        S = S - SELF_PENALTY * np.eye(S.shape[-1])[None, None]
    P = _softmax_rows(S, keep)
    return qk, v, k, norm, S, P


def lsh_dense(qk, v, keep, scale, self_rule: str = "exclude") -> np.ndarray:
    r"""``o_i = sum_{j kept} softmax_j(scale qk_i . qk_j / ||qk_j||) v_j`` (each kept key once) in float64,
    ``keep (b h l l)`` from :func:`lsh_keep`."""
    qk, v, k, norm, S, P = _lsh_parts(qk, v, keep, scale, self_rule)
    return np.einsum("bhij,bjhp->bihp", P, v)


def lsh_adjoint_magnitude(qk, v, keep, scale, do, self_rule: str = "exclude"):
    r"""The LSH adjoint (buckets fixed) on absolute values, the normalization's ``(I - k k^T) / ||qk||`` as
    ``(I + |k| |k|^T) / ||qk||``, and ``max |S|``: ``({"qk", "v"}, spread)``."""
    qk, v, k, norm, S, P = _lsh_parts(qk, v, keep, scale, self_rule)
    ado, av, aq, ak = (np.abs(a) for a in (np.asarray(do, dtype=np.float64), v, qk, k))
    sc = abs(scale)
    aO = np.einsum("bhij,bjhp->bihp", P, av)
    dv = np.einsum("bhij,bihp->bjhp", P, ado)
    D = np.einsum("bihp,bihp->bhi", ado, aO)
    ds = P * (np.einsum("bihp,bjhp->bhij", ado, av) + D[..., None])
    dq = sc * np.einsum("bhij,bjhn->bihn", ds, ak)
    dk = sc * np.einsum("bhij,bihn->bjhn", ds, aq)
    dnorm = np.where(norm > 0, (dk + ak * np.sum(ak * dk, axis=-1, keepdims=True)) / np.where(norm > 0, norm, 1.0),
                     0.0)
    return {"qk": dq + dnorm, "v": dv}, score_spread(S, keep)


# ------------------------------------------------------------------------------------------ mpmath (tiny cases)

def aft_mp(q, k, v, w=None, *, variant: str, causal: bool, window=None) -> np.ndarray:
    r"""AFT in mpmath on object arrays of ``mpf`` (for :func:`oracles.gradients.mp_vjp` on tiny cases): the kept and
    biased keys of :func:`aft_masks`, ``Y_t = sigmoid(Q_t) sum exp(K + w') V / sum exp(K + w')`` at the working
    precision (no shift: mpmath's exponent range is unbounded).  Returns an object array ``(b l d)``."""
    import mpmath

    q, k, v = (np.asarray(a, dtype=object) for a in (q, k, v))
    b, l, d = q.shape
    kept, biased = aft_masks(l, variant, bool(causal), None if window is None else tuple(window))
    out = np.empty((b, l, d), dtype=object)
    for bi in range(b):
        for t in range(l):
            for c in range(d):
                terms = [(mpmath.exp(k[bi, j, c] + (w[t, j] if (w is not None and biased[t, j]) else 0)), j)
                         for j in range(l) if kept[t, j]]
                num = mpmath.fsum(e * v[bi, j, c] for e, j in terms)
                den = mpmath.fsum(e for e, _ in terms)
                out[bi, t, c] = num / den / (1 + mpmath.exp(-q[bi, t, c]))
    return out


# ------------------------------------------------------------------------------------------ Mega (magnitude)

_MEGA_MU, _MEGA_SIGMA = np.sqrt(0.5), np.sqrt(1.0 / (4.0 * np.pi))


def _mega_keep(L, chunk, causal):
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    c = L if chunk is None else chunk
    keep = (i // max(c, 1)) == (j // max(c, 1))
    return keep & (j <= i) if causal else keep


def _ema_states(x, al, de, be):
    b, L, d = x.shape
    hs = np.zeros((L + 1, b, d, al.shape[1]))
    for t in range(L):
        hs[t + 1] = al * be * x[:, t, :, None] + (1 - al * de) * hs[t]
    return hs


def mega_adjoint_magnitude(x, P, dy, *, chunk=None, causal=False, attention="softmax", scale=None):
    r"""The Mega layer's adjoint (the EMA's reverse scan, the gates, the attention) on absolute values, every
    difference a sum; ``P`` the parameters by name (``None`` = absent).  Returns ``({name: M}, spread)``."""
    x = np.asarray(x, dtype=np.float64)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in P.items() if v is not None}
    ady = np.abs(np.asarray(dy, dtype=np.float64))
    b, L, d = x.shape
    n = P["W_z"].shape[1]
    sig, A = scipy.special.expit, np.abs
    silu_abs_grad = lambda a: sig(a) * (1 + A(a) * (1 + sig(a)))  # noqa: E731  |SiLU'| majorant, differences summed
    bidir = "alpha_bwd" in P
    hs = _ema_states(x, P["alpha"], P["delta"], P["beta"])
    Xp = np.einsum("de,lbde->bld", P["eta"], hs[1:])
    aXp = np.einsum("de,lbde->bld", A(P["eta"]), A(hs[1:]))
    if bidir:
        hr = _ema_states(x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"])
        Xp = Xp + np.einsum("de,lbde->bld", P["eta_bwd"], hr[1:])[:, ::-1]
        aXp = aXp + np.einsum("de,lbde->bld", A(P["eta_bwd"]), A(hr[1:]))[:, ::-1]
    A_z = Xp @ P["W_z"] + P["b_z"]
    Z = A_z * sig(A_z)
    Q, K = P["kappa_q"] * Z + P["mu_q"], P["kappa_k"] * Z + P["mu_k"]
    A_v = x @ P["W_v"] + P["b_v"]
    V = A_v * sig(A_v)
    A_g = Xp @ P["W_gamma"] + P["b_gamma"]
    gam = A_g * sig(A_g)
    phi = sig(Xp @ P["W_phi"] + P["b_phi"])
    keep = _mega_keep(L, chunk, causal)
    if attention == "softmax":
        s_i = np.full((L, 1), n ** -0.5 if scale is None else scale)
    else:
        s_i = (1.0 / np.maximum(keep.sum(axis=1), 1))[:, None] if scale is None else np.full((L, 1), scale)
    S = s_i * np.einsum("bin,bjn->bij", Q, K)
    if "rel_bias" in P and L:
        m = (P["rel_bias"].shape[0] + 1) // 2
        i, j = np.arange(L)[:, None], np.arange(L)[None, :]
        S = S + np.where(keep, P["rel_bias"][np.clip(m - 1 + j - i, 0, 2 * m - 2)], 0.0)
    if attention == "softmax":
        Pm = _softmax_rows(S, keep[None])
        fprime = None
    elif attention == "laplace":
        Pm = np.where(keep, 0.5 * (1 + scipy.special.erf((S - _MEGA_MU) / (_MEGA_SIGMA * np.sqrt(2)))), 0.0)
        fprime = np.exp(-((S - _MEGA_MU) ** 2) / (2 * _MEGA_SIGMA ** 2)) / (_MEGA_SIGMA * np.sqrt(2 * np.pi))
    else:
        Pm = np.where(keep, np.maximum(S, 0) ** 2, 0.0)
        fprime = 2 * np.maximum(S, 0)
    aV = A(V)
    aO = np.einsum("bij,bjp->bip", A(Pm), aV)
    aGO = A(gam) * aO
    A_h = Xp @ P["W_h"] + (gam * np.einsum("bij,bjp->bip", Pm, V)) @ P["U_h"] + P["b_h"]
    H = A_h * sig(A_h)
    g = {}
    dphi, dH, dx = ady * (A(H) + A(x)), ady * phi, ady * (1 + phi)
    dA_h = dH * silu_abs_grad(A_h)
    g["W_h"], g["U_h"], g["b_h"] = np.einsum("bld,ble->de", aXp, dA_h), np.einsum("blp,ble->pe", aGO, dA_h), \
        dA_h.sum(axis=(0, 1))
    dXp = dA_h @ A(P["W_h"]).T
    dGO = dA_h @ A(P["U_h"]).T
    dgam, dO = dGO * aO, dGO * A(gam)
    dA_g = dgam * silu_abs_grad(A_g)
    dA_phi = dphi * phi * (1 + phi)
    for name, bname, dA in (("W_gamma", "b_gamma", dA_g), ("W_phi", "b_phi", dA_phi)):
        g[name], g[bname] = np.einsum("bld,ble->de", aXp, dA), dA.sum(axis=(0, 1))
        dXp = dXp + dA @ A(P[name]).T
    dP = np.einsum("bip,bjp->bij", dO, aV)
    dV = np.einsum("bij,bip->bjp", A(Pm), dO)
    if fprime is None:
        dS = Pm * (dP + np.sum(Pm * dP, axis=-1, keepdims=True))
    else:
        dS = np.where(keep, dP * A(fprime), 0.0)
    dQ = np.einsum("bij,bjn->bin", A(s_i) * dS, A(K))
    dK = np.einsum("bij,bin->bjn", A(s_i) * dS, A(Q))
    if "rel_bias" in P:
        m = (P["rel_bias"].shape[0] + 1) // 2
        i, j = np.nonzero(keep)
        drb = np.zeros_like(P["rel_bias"])
        np.add.at(drb, m - 1 + (j - i), dS.sum(axis=0)[i, j])
        g["rel_bias"] = drb
    dZ = A(P["kappa_q"]) * dQ + A(P["kappa_k"]) * dK
    g["kappa_q"], g["mu_q"] = np.einsum("bln,bln->n", A(Z), dQ), dQ.sum(axis=(0, 1))
    g["kappa_k"], g["mu_k"] = np.einsum("bln,bln->n", A(Z), dK), dK.sum(axis=(0, 1))
    dA_z, dA_v = dZ * silu_abs_grad(A_z), dV * silu_abs_grad(A_v)
    g["W_z"], g["b_z"] = np.einsum("bld,ble->de", aXp, dA_z), dA_z.sum(axis=(0, 1))
    dXp = dXp + dA_z @ A(P["W_z"]).T
    g["W_v"], g["b_v"] = np.einsum("bld,ble->de", A(x), dA_v), dA_v.sum(axis=(0, 1))
    dx = dx + dA_v @ A(P["W_v"]).T

    def ema_abs(xx, al, de, be, et, dXq):
        hh = A(_ema_states(xx, al, de, be))
        q = A(1 - al * de)
        lam = np.zeros((xx.shape[0], xx.shape[2], al.shape[1]))
        out = [np.zeros_like(xx)] + [np.zeros_like(al) for _ in range(4)]
        for t in range(xx.shape[1] - 1, -1, -1):
            lam = A(et) * dXq[:, t, :, None] + q * lam
            xt = A(xx[:, t, :, None])
            out[0][:, t] = np.sum(A(al * be) * lam, axis=-1)
            out[1] += np.sum(lam * (A(be) * xt + A(de) * hh[t]), axis=0)
            out[2] += np.sum(A(al) * lam * hh[t], axis=0)
            out[3] += np.sum(A(al) * lam * xt, axis=0)
            out[4] += np.sum(hh[t + 1] * dXq[:, t, :, None], axis=0)
        return out

    dxe, g["alpha"], g["delta"], g["beta"], g["eta"] = ema_abs(x, P["alpha"], P["delta"], P["beta"], P["eta"], dXp)
    dx = dx + dxe
    if bidir:
        dxr, g["alpha_bwd"], g["delta_bwd"], g["beta_bwd"], g["eta_bwd"] = ema_abs(
            x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"], dXp[:, ::-1])
        dx = dx + dxr[:, ::-1]
    g["x"] = dx
    return g, score_spread(S, keep[None])
