r"""Ground truth for the gated attention unit and FLASH's mixed-chunk attention (Hua et al. 2022).

Dense materialization of the formula, from the paper's definition and nothing else:

* each output row ``i`` is ``o_i = sum_e (u_ie * sum_j A_ij v_je) W_o[e, :]``, with the attention weight
  of every pair ``(i, j)`` decided from two **sets** built per query from the paper's words: the *local* set
  (the keys of ``i``'s own chunk -- GAU: the whole sequence --, ``j <= i`` when causal), weighted
  ``relu(sq_i (qq_i . kq_j) + b_{j-i})^2``, and the *cross* set (causal: the keys of the previous chunks;
  non-causal: every key), weighted ``sl_i (ql_i . kl_j)``;
* :func:`gau_mpmath` evaluates everything (projections, SiLU, scale/offset, every dot product and sum) in
  mpmath at 50 digits (small cases); :func:`gau_fsum` in float64 with every sum a correctly rounded
  :func:`math.fsum` (larger cases).

The scalings are named conventions (``scaling``): ``"paper"`` (GAU ``1/L``; FLASH quadratic ``1/c``, linear
``1/c`` causal and ``1/L`` non-causal), ``"length"`` (every scale ``1/L``), ``"chunk"`` (every scale ``1/c``),
``"rsqrt_n"`` (the quadratic scores times ``n^{-1/2}``, softmax attention's convention; the linear part the
paper's).  ``last_chunk``: ``"c"`` (the paper's padding: the short last chunk scaled by ``1/c``) or
``"length"`` (by its own length).

Bound (:func:`gau_bound`): forward error propagation through the stages, each from Higham's model
(``oracles.tolerance``): a dot product of ``k`` terms ``gamma_k |a|.|b|``; SiLU is 1.1-Lipschitz
(``max |silu'| = 1.0998``) and is computed with at most 6 roundings (an ``exp`` within 2 ulp = 4u, an
addition, a division); ``relu`` is 1-Lipschitz and exact, the square adds ``(2r + e) e`` plus one rounding;
a perturbed product ``a b c`` moves by ``(|a|+e_a)(|b|+e_b)(|c|+e_c) - |a||b||c|``; the linear part, in any
association (``(Ql Kl^T) V`` or ``Ql (Kl^T V)`` through per-chunk states and their prefix sum), is a sum of
``n L`` products of four factors: ``gamma_{L + n + 3}`` times the sum on absolute values.  The oracle's own
error is the same propagation in its dtype (``None``: mpmath, exact at this precision).
"""
from __future__ import annotations

import math
from typing import Optional

import mpmath
import numpy as np

from oracles.tolerance import Bound, gamma, underflow_floor

__all__ = ["SCALINGS", "LAST_CHUNK", "pair_sets", "pair_scales", "gau_mpmath", "gau_fsum", "gau_bound"]

SCALINGS = ("paper", "length", "chunk", "rsqrt_n")
LAST_CHUNK = ("c", "length")


def pair_sets(l: int, chunk: Optional[int], causal: bool):
    """``(local, cross)``: for each query ``i`` the set of keys of the quadratic part and of the linear part.

    ``chunk=None``: GAU, every key (causal: ``j <= i``) is local, nothing is cross.  Else chunks
    ``{g c, ..., g c + c - 1}``: local = ``i``'s chunk (causal: ``j <= i``); cross = the earlier chunks (causal)
    or every key (non-causal)."""
    local, cross = [], []
    for i in range(l):
        if chunk is None:
            local.append({j for j in range(l) if (j <= i or not causal)})
            cross.append(set())
            continue
        start = (i // chunk) * chunk
        own = set(range(start, min(start + chunk, l)))
        local.append({j for j in own if (j <= i or not causal)})
        cross.append(set(range(start)) if causal else set(range(l)))
    return local, cross


def pair_scales(l: int, n: int, chunk: Optional[int], causal: bool, scaling: str = "paper",
                last_chunk: str = "c"):
    """``(sq, sl)``: per query ``i``, the scale of its quadratic scores and of its linear part (as exact
    fractions ``(numerator, denominator)``)."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling: expected one of {SCALINGS}, got {scaling!r}")
    if last_chunk not in LAST_CHUNK:
        raise ValueError(f"last_chunk: expected one of {LAST_CHUNK}, got {last_chunk!r}")
    sq, sl = [], []
    for i in range(l):
        if chunk is None:
            c_i = l
        else:
            start = (i // chunk) * chunk
            c_i = chunk if last_chunk == "c" else min(start + chunk, l) - start
        if scaling == "paper":
            q, s = (1, c_i), ((1, c_i) if causal else (1, l))
        elif scaling == "length":
            q, s = (1, l), (1, l)
        elif scaling == "chunk":
            q, s = (1, c_i), (1, c_i)
        else:  # rsqrt_n
            q, s = ("rsqrt", n), ((1, c_i) if causal else (1, l))
        sq.append(q)
        sl.append(s)
    return sq, sl


def _frac_mp(f):
    if f[0] == "rsqrt":
        return 1 / mpmath.sqrt(f[1])
    return mpmath.mpf(f[0]) / f[1]


def _frac_f(f):
    if f[0] == "rsqrt":
        return 1.0 / math.sqrt(f[1])
    return f[0] / f[1]


def _bias_len(l, chunk):
    return l if chunk is None else chunk


def _evaluate(x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk, *, num, fsum, exp,
              frac):
    x, W_u, W_v, W_z, gamma_, beta, W_o = (np.asarray(a, dtype=np.float64) for a in (x, W_u, W_v, W_z, gamma_, beta,
                                                                                    W_o))
    b, l, d = x.shape
    p, n = W_u.shape[1], W_z.shape[1]
    local, cross = pair_sets(l, chunk, causal)
    sq, sl = pair_scales(l, n, chunk, causal, scaling, last_chunk)
    w = _bias_len(l, chunk)
    bv = None if bias is None else [num(t) for t in np.asarray(bias, dtype=np.float64)]
    rows = gamma_.shape[0]
    G = [[num(gamma_[r, a]) for a in range(n)] for r in range(rows)]
    B = [[num(beta[r, a]) for a in range(n)] for r in range(rows)]
    Wu = [[num(W_u[e, a]) for a in range(p)] for e in range(d)]
    Wv = [[num(W_v[e, a]) for a in range(p)] for e in range(d)]
    Wz = [[num(W_z[e, a]) for a in range(n)] for e in range(d)]
    Wo = [[num(W_o[e, a]) for a in range(d)] for e in range(p)]
    silu = lambda y: y / (1 + exp(-y))  # noqa: E731  phi(y) = y sigmoid(y)
    out = np.zeros((b, l, d))
    for bi in range(b):
        X = [[num(x[bi, t, e]) for e in range(d)] for t in range(l)]
        U = [[silu(fsum(X[t][e] * Wu[e][a] for e in range(d))) for a in range(p)] for t in range(l)]
        V = [[silu(fsum(X[t][e] * Wv[e][a] for e in range(d))) for a in range(p)] for t in range(l)]
        Z = [[silu(fsum(X[t][e] * Wz[e][a] for e in range(d))) for a in range(n)] for t in range(l)]
        # the scale/offset rows: GAU (q, k); FLASH (quad_q, quad_k, lin_q, lin_k)
        R = [[[G[r][a] * Z[t][a] + B[r][a] for a in range(n)] for t in range(l)] for r in range(rows)]
        Qq, Kq = R[0], R[1]
        Ql, Kl = (R[2], R[3]) if rows == 4 else (None, None)
        for i in range(l):
            terms = {}
            for j in local[i]:
                s = frac(sq[i]) * fsum(Qq[i][a] * Kq[j][a] for a in range(n))
                if bv is not None:
                    s = s + bv[j - i + w - 1]
                r = s if s > 0 else num(0)
                terms.setdefault(j, []).append(r * r)
            for j in cross[i]:
                terms.setdefault(j, []).append(frac(sl[i]) * fsum(Ql[i][a] * Kl[j][a] for a in range(n)))
            A = {j: fsum(ts) for j, ts in terms.items()}
            AV = [fsum(A[j] * V[j][a] for j in sorted(A)) for a in range(p)]
            gated = [U[i][a] * AV[a] for a in range(p)]
            for e in range(d):
                out[bi, i, e] = float(fsum(gated[a] * Wo[a][e] for a in range(p)))
    return out


def gau_mpmath(x, W_u, W_v, W_z, gamma_, beta, W_o, *, chunk: Optional[int] = None, causal: bool = False,
               bias=None, scaling: str = "paper", last_chunk: str = "c", dps: int = 50) -> np.ndarray:
    """``o (b l d)`` in mpmath (``dps`` digits), rounded to float64.  ``chunk=None``: GAU (``gamma (2 n)``);
    an int: FLASH (``gamma (4 n)``).  ``bias``: ``(2w - 1)``, ``w = L`` (GAU) or ``c`` (FLASH)."""
    with mpmath.workdps(dps):
        return _evaluate(x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk,
                         num=mpmath.mpf, fsum=lambda it: mpmath.fsum(list(it)), exp=mpmath.exp, frac=_frac_mp)


def gau_fsum(x, W_u, W_v, W_z, gamma_, beta, W_o, *, chunk: Optional[int] = None, causal: bool = False,
             bias=None, scaling: str = "paper", last_chunk: str = "c") -> np.ndarray:
    """The same in float64, every sum a correctly rounded :func:`math.fsum` (for the larger cases)."""
    return _evaluate(x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, scaling, last_chunk,
                     num=float, fsum=math.fsum, exp=lambda y: math.exp(y) if y < 700 else math.inf, frac=_frac_f)


def _masks(l, chunk, causal):
    local, cross = pair_sets(l, chunk, causal)
    Ml, Mc = np.zeros((l, l), dtype=bool), np.zeros((l, l), dtype=bool)
    for i in range(l):
        Ml[i, list(local[i])] = True
        Mc[i, list(cross[i])] = True
    return Ml, Mc


def _silu64(y):
    return y / (1.0 + np.exp(-np.clip(y, -700, None)))


def _error(x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, sq, sl, Ml, Mc, dtype):
    g = lambda k: gamma(k, dtype)  # noqa: E731
    b, l, d = x.shape
    p, n = W_u.shape[1], W_z.shape[1]
    ax = np.abs(x)

    def project(W):
        # Y = x W (d terms), phi(Y): 1.1-Lipschitz, 6 roundings
        Y = x @ W
        eY = g(d) * (ax @ np.abs(W))
        F = _silu64(Y)
        return F, 1.1 * eY + g(6) * (np.abs(F) + 1.1 * eY)

    U, eU = project(W_u)
    V, eV = project(W_v)
    Z, eZ = project(W_z)
    aU, aV = np.abs(U), np.abs(V)
    # Q_r = gamma_r Z + beta_r: a multiply and an add
    R = [gamma_[r] * Z + beta[r] for r in range(gamma_.shape[0])]
    eR = [np.abs(gamma_[r]) * eZ + g(2) * (np.abs(gamma_[r] * Z) + np.abs(beta[r])) for r in range(gamma_.shape[0])]
    aR = [np.abs(a) for a in R]
    # quadratic part: s = sq (qq . kq) + b; A = relu(s)^2
    D = np.einsum("bin,bjn->bij", R[0], R[1])
    MD = np.einsum("bin,bjn->bij", aR[0], aR[1])
    eD = (g(n) * MD + np.einsum("bin,bjn->bij", eR[0], aR[1]) + np.einsum("bin,bjn->bij", aR[0], eR[1])
          + np.einsum("bin,bjn->bij", eR[0], eR[1]))
    SQ = sq[None, :, None]
    if bias is not None:
        w = l if chunk is None else chunk
        i, j = np.arange(l)[:, None], np.arange(l)[None, :]
        off = np.clip(j - i + w - 1, 0, len(bias) - 1) if len(bias) else np.zeros((l, l), dtype=int)
        Bm = np.where(Ml, np.asarray(bias)[off] if len(bias) else 0.0, 0.0)[None]
    else:
        Bm = np.zeros((1, l, l))
    s = SQ * D + Bm
    es = SQ * (eD + g(2) * (MD + eD)) + g(1) * np.abs(Bm)
    r = np.maximum(s, 0.0)
    A = np.where(Ml, r * r, 0.0)
    eA = np.where(Ml, (2 * r + es) * es + g(1) * (r + es) ** 2, 0.0)
    quad_M = np.einsum("bij,bjp->bip", A, aV)
    quad_e = np.einsum("bij,bjp->bip", A + eA, aV + eV) - quad_M + g(l + 1) * quad_M
    # linear part: sl (ql . kl) v over the cross set, any association: gamma_{L + n + 3}
    if len(R) == 4 and Mc.any():
        SL = sl[None, :, None]
        P = np.where(Mc, np.einsum("bin,bjn->bij", aR[2], aR[3]), 0.0) * SL
        Pe = np.where(Mc, np.einsum("bin,bjn->bij", aR[2] + eR[2], aR[3] + eR[3]), 0.0) * SL
        lin_M = np.einsum("bij,bjp->bip", P, aV)
        lin_e = np.einsum("bij,bjp->bip", Pe, aV + eV) - lin_M + g(l + n + 3) * lin_M
    else:
        lin_M = lin_e = np.zeros_like(quad_M)
    M_AV = quad_M + lin_M
    e_AV = quad_e + lin_e + g(1) * M_AV
    # gate: U * AV (one rounding)
    e_G = (aU + eU) * (M_AV + e_AV) - aU * M_AV + g(1) * (aU + eU) * (M_AV + e_AV)
    # O = G W_o (p terms)
    aW = np.abs(W_o)
    return e_G @ aW + g(p) * ((aU * M_AV + e_G) @ aW)


def gau_bound(x, W_u, W_v, W_z, gamma_, beta, W_o, *, chunk: Optional[int] = None, causal: bool = False,
              bias=None, scaling: str = "paper", last_chunk: str = "c", dtype=np.float64,
              oracle_dtype=None) -> Bound:
    """The componentwise bound on ``|candidate - oracle|`` for a candidate in ``dtype`` (see the module doc);
    ``oracle_dtype``: ``None`` (the mpmath oracle) or ``np.float64`` (:func:`gau_fsum`, its share added)."""
    x, W_u, W_v, W_z, gamma_, beta, W_o = (np.asarray(a, dtype=np.float64) for a in (x, W_u, W_v, W_z, gamma_, beta,
                                                                                    W_o))
    b, l, d = x.shape
    n = W_z.shape[1]
    bias = None if bias is None else np.asarray(bias, dtype=np.float64)
    sqf, slf = pair_scales(l, n, chunk, causal, scaling, last_chunk)
    sq = np.array([_frac_f(f) for f in sqf])
    sl = np.array([_frac_f(f) for f in slf])
    Ml, Mc = _masks(l, chunk, causal)
    args = (x, W_u, W_v, W_z, gamma_, beta, W_o, chunk, causal, bias, sq, sl, Ml, Mc)
    E = _error(*args, dtype)
    src = f"GAU/FLASH stage propagation in {np.dtype(dtype).name}"
    if oracle_dtype is not None:
        E = E + _error(*args, oracle_dtype)
        src += f" + the fsum oracle's share in {np.dtype(oracle_dtype).name}"
    depth = l + n + W_u.shape[1] + d + 10
    return Bound(E + underflow_floor(depth, dtype), src + " (oracles.gau.gau_bound)")
