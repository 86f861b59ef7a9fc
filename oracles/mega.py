r"""Ground truth for the Mega layer (Ma et al. 2022/2023): the whole layer by dense materialization, and its bound.

Nothing here imports :mod:`refimpl`.  The oracle reaches the answer by other means than the reference:

* the EMA from its **closed form** (never the recurrence): ``X'_{t,j} = sum_{s<=t} sum_i eta_{j,i} alpha_{j,i}
  beta_{j,i} (1 - alpha_{j,i} delta_{j,i})^{t-s} x_{s,j}`` (and, for the bidirectional EMA, ``+ sum_{s>=t}`` the
  same with the backward parameters and ``q^{s-t}``), the powers by ``**``;
* each query's **keep set as a Python set** from the definition (``{j : j // c == i // c and (not causal or
  j <= i)}``), then the attention as a sum over that set;
* every other step written element by element from the paper's equations.

Three evaluations: :func:`mega_layer_mpmath` (mpmath at ``DPS`` digits, sums by ``mpmath.fsum``; small cases),
:func:`mega_layer_fsum` (float64 element by element, correctly rounded sums ``math.fsum``) and
:func:`mega_layer_dense` (vectorized float64: the EMA's dense Toeplitz operator built from the closed form, the
scores masked by the keep sets; fast, for the many calls of a verification's diagnosis).  Parameters are a
mapping with the field names of ``refimpl.attention.mega.MegaParams`` (``alpha, delta, beta, eta, W_z, b_z,
kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma, W_phi, b_phi, W_h, U_h, b_h`` and optional
``rel_bias``, ``alpha_bwd, delta_bwd, beta_bwd, eta_bwd``).

The bound (:func:`mega_layer_bound`) -- first-order forward error analysis, stage by stage
-------------------------------------------------------------------------------------------
Each stage's absolute error ``dA`` (an array like ``A``) is the error it receives, passed through the stage's
derivative, plus the stage's own roundings (``gamma_k`` of :mod:`oracles.tolerance` on the stage run on
absolute values).  Constants, each derived:

* ``exp``, ``erf``: :data:`oracles.tolerance.TRANSCENDENTAL_U` (``8u`` relative; NumPy's accuracy contract for
  ``exp``; ``erf`` -- SciPy's cephes / libm, the same 4-ulp budget assumed).
* ``sigmoid``: as ``1/(1+e)`` or ``e/(1+e)``, ``e = exp(+-a)``: the exp's ``8u``, the sum's ``u + 8u e/(1+e)``,
  the quotient's ``u``: at most ``2 * 8u + 3u = 19u`` relative (:data:`SIGMOID_U`); ``SiLU = a sigmoid(a)``: one
  more product, ``20u`` (:data:`SILU_U`).  Derivatives: ``|sigmoid'| <= 1/4``, ``|SiLU'| <= 1.0999`` (its
  maximum, at ``a ~ 2.4``): 1.1 (:data:`SILU_LIPSCHITZ`).
* EMA: the analysis of ``oracles.structured.ema_bound`` (per step ``beta x``, ``alpha u``, ``1 - alpha delta``,
  the product and the sum: 6 roundings; ``q^k`` carries ``k`` times ``q``'s relative error or, by
  ``exp(k log1p(-alpha delta))``, ``k |log q| + 4``): depth ``6L + e + 10 + L (2 + 2 max(alpha delta/q) +
  max|log q|)`` times the dense operator on ``|inputs|``; plus the FFT convolution bound
  (:func:`oracles.tolerance.fft_convolution_bound`), since Mega's own code convolves by FFT.
* a linear map ``A = X W + b``: ``dA = dX |W| + gamma_{d+1} (|X| |W| + |b|)``.
* ``Q = kappa Z + mu``: ``dQ = |kappa| dZ + gamma_2 (|kappa Z| + |mu|)``.
* scores ``S_ij = sc Q_i.K_j + b_ij`` (``sc`` the scale, ``n^{-1/2}`` or ``1/len_i``, itself rounded once):
  ``dS_ij = |sc| (dQ_i.|K_j| + |Q_i|.dK_j) + gamma_{n+3} (|sc| |Q_i|.|K_j| + |b_ij|)``.
* softmax: the computed ``exp(S_ij - m_i)`` has relative error ``delta_ij = dS_ij + u (|S_ij - m_i| + 8 + 1)``
  (argument error; the subtraction; the exp), the normalized weight ``delta_ij + max_k delta_ik + gamma_{L+1}``
  (the shift ``m_i`` cancels), so ``dO_i = sum_j p_ij ((delta_ij + max_k delta_ik + gamma_{2L+1}) |V_j| + dV_j)``.
* laplace ``f(S) = (1 + erf(t))/2``, ``t = (S - mu)/(sigma sqrt 2)``: ``dP = f'_max dS + (3u |t| + 8u |erf t|
  sqrt(pi)/2) / sqrt(pi) + u f`` with ``f'_max`` the normal density's maximum over ``[S - dS, S + dS]``
  (unimodal at ``mu``); relu2 ``f = relu(S)^2``: ``dP = 2 relu(|S| + dS) dS + u f``.  Then
  ``dO_i = sum_j (dP_ij |V_j| + |P_ij| dV_j) + gamma_L sum_j |P_ij| |V_j|``.
* ``G = gamma * O``: ``dG = dgamma |O| + |gamma| dO + u |G|``; ``H_hat = SiLU(X' W_h + G U_h + b_h)``:
  the linear-map rule with depth ``d + p + 1``, then SiLU's.
* ``Y = phi H_hat + (1 - phi) X`` (or ``X + phi (H_hat - X)``, Mega's ``addcmul``):
  ``dY = dphi |H_hat - X| + phi dH_hat + gamma_3 * 3 (|H_hat| + |X|)`` (three roundings on terms each at most
  ``|H_hat| + |X|``, covering both orders).

First order, as every bound of :mod:`oracles.attention` (products of two errors are dropped).  The candidate's
share is evaluated in its dtype; a float64 oracle (:func:`mega_layer_fsum`) adds the same analysis in float64
(``oracle_dtype=np.float64``); the mpmath oracle adds nothing.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Set

import mpmath
import numpy as np

from oracles.tolerance import TRANSCENDENTAL_U, Bound, fft_convolution_bound, gamma, underflow_floor, unit_roundoff

__all__ = ["DPS", "SIGMOID_U", "SILU_U", "SILU_LIPSCHITZ", "LAPLACE_MU", "LAPLACE_SIGMA", "keep_sets",
           "mega_layer_mpmath", "mega_layer_fsum", "mega_layer_dense", "mega_layer_bound"]

DPS = 30

#: relative rounding error of a sigmoid, in units of u (module docstring)
SIGMOID_U = 2 * TRANSCENDENTAL_U + 3
#: relative rounding error of a SiLU, in units of u
SILU_U = SIGMOID_U + 1
#: max |SiLU'(a)| = 1.0998... (at a = 2.3994), rounded up
SILU_LIPSCHITZ = 1.1
LAPLACE_MU = math.sqrt(0.5)
LAPLACE_SIGMA = math.sqrt(1.0 / (4.0 * math.pi))

_BWD = ("alpha_bwd", "delta_bwd", "beta_bwd", "eta_bwd")


def keep_sets(L: int, chunk: Optional[int], causal: bool) -> List[Set[int]]:
    """For each query ``i``, the set of keys it attends to: its own chunk of ``chunk`` (``None``: all ``L``),
    and ``j <= i`` when causal -- from the definition, one query at a time."""
    c = L if chunk is None else chunk
    out = []
    for i in range(L):
        out.append({j for j in range(L) if j // c == i // c and (not causal or j <= i)})
    return out


class _Arith:
    """Scalar arithmetic of one oracle precision: mpmath (``exact=True``) or float64 with ``math.fsum``."""

    def __init__(self, exact: bool):
        self.exact = exact
        if exact:
            self.num = lambda v: mpmath.mpf(float(v))
            self.sum = mpmath.fsum
            self.exp, self.erf, self.sqrt = mpmath.exp, mpmath.erf, mpmath.sqrt
        else:
            self.num = float
            self.sum = math.fsum
            self.exp, self.erf, self.sqrt = math.exp, math.erf, math.sqrt

    def sigmoid(self, a):
        # sigmoid(a) = 1 / (1 + exp(-a)), the branch that never overflows
        if a >= 0:
            return 1 / (1 + self.exp(-a))
        e = self.exp(a)
        return e / (1 + e)

    def silu(self, a):
        return a * self.sigmoid(a)


def _layer(x, params: Mapping[str, Any], chunk, causal, attention, scale, A: _Arith) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    b, L, d = x.shape
    P = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    e = P["alpha"].shape[1]
    n = P["W_z"].shape[1]
    p = P["W_v"].shape[1]
    N = A.num
    keep = keep_sets(L, chunk, causal)
    bidir = all(P.get(k) is not None for k in _BWD)

    def taps(al, de, be, et, j, k):
        # sum_i eta alpha beta (1 - alpha delta)^k  (closed form of the EMA's kernel)
        return A.sum(N(et[j, i]) * N(al[j, i]) * N(be[j, i]) * (1 - N(al[j, i]) * N(de[j, i])) ** k
                     for i in range(e))

    T = [[taps(P["alpha"], P["delta"], P["beta"], P["eta"], j, k) for k in range(L)] for j in range(d)]
    Tb = ([[taps(P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"], j, k) for k in range(L)]
           for j in range(d)] if bidir else None)
    rb = P.get("rel_bias")
    Y = np.zeros((b, L, d))
    for bi in range(b):
        X = [[N(x[bi, t, j]) for j in range(d)] for t in range(L)]
        # X'_{t,j} = sum_{s<=t} T_{j,t-s} x_{s,j}  (+ sum_{s>=t} Tb_{j,s-t} x_{s,j})
        Xp = [[A.sum([T[j][t - s] * X[s][j] for s in range(t + 1)]
                     + ([Tb[j][s - t] * X[s][j] for s in range(t, L)] if bidir else []))
               for j in range(d)] for t in range(L)]

        def lin(src, W, bias, t, col):
            return A.sum([src[t][r] * N(W[r, col]) for r in range(len(src[t]))] + [N(bias[col])])

        Z = [[A.silu(lin(Xp, P["W_z"], P["b_z"], t, c)) for c in range(n)] for t in range(L)]
        Q = [[N(P["kappa_q"][c]) * Z[t][c] + N(P["mu_q"][c]) for c in range(n)] for t in range(L)]
        K = [[N(P["kappa_k"][c]) * Z[t][c] + N(P["mu_k"][c]) for c in range(n)] for t in range(L)]
        V = [[A.silu(lin(X, P["W_v"], P["b_v"], t, c)) for c in range(p)] for t in range(L)]
        G = [[A.silu(lin(Xp, P["W_gamma"], P["b_gamma"], t, c)) for c in range(p)] for t in range(L)]
        Phi = [[A.sigmoid(lin(Xp, P["W_phi"], P["b_phi"], t, c)) for c in range(d)] for t in range(L)]
        O = []
        for i in range(L):
            js = sorted(keep[i])
            if scale is not None:
                sc = N(scale)
            elif attention == "softmax":
                sc = 1 / A.sqrt(N(n))
            else:
                sc = 1 / N(len(js))  # Mega's length normalization
            m = (len(rb) + 1) // 2 if rb is not None else 0
            S = {j: sc * A.sum(Q[i][c] * K[j][c] for c in range(n)) + (N(rb[m - 1 + j - i]) if rb is not None else 0)
                 for j in js}
            if attention == "softmax":
                mx = max(S.values())
                w = {j: A.exp(S[j] - mx) for j in js}
                Zs = A.sum(w.values())
                Pw = {j: w[j] / Zs for j in js}
            elif attention == "laplace":
                Pw = {j: (1 + A.erf((S[j] - N(LAPLACE_MU)) / (N(LAPLACE_SIGMA) * A.sqrt(N(2))))) / 2 for j in js}
            else:
                Pw = {j: (S[j] if S[j] > 0 else N(0)) ** 2 for j in js}
            O.append([A.sum(Pw[j] * V[j][c] for j in js) for c in range(p)])
        for t in range(L):
            GO = [G[t][c] * O[t][c] for c in range(p)]
            for col in range(d):
                pre = A.sum([Xp[t][r] * N(P["W_h"][r, col]) for r in range(d)]
                            + [GO[r] * N(P["U_h"][r, col]) for r in range(p)] + [N(P["b_h"][col])])
                H = A.silu(pre)
                Y[bi, t, col] = float(Phi[t][col] * H + (1 - Phi[t][col]) * X[t][col])
    return Y


def mega_layer_mpmath(x, params: Mapping[str, Any], *, chunk: Optional[int] = None, causal: bool = False,
                      attention: str = "softmax", scale: Optional[float] = None, dps: int = DPS) -> np.ndarray:
    """The Mega layer in mpmath at ``dps`` digits (module docstring); ``x (b l d)`` -> ``Y (b l d)`` float64."""
    with mpmath.workdps(dps):
        return _layer(x, params, chunk, causal, attention, scale, _Arith(True))


def mega_layer_fsum(x, params: Mapping[str, Any], *, chunk: Optional[int] = None, causal: bool = False,
                    attention: str = "softmax", scale: Optional[float] = None) -> np.ndarray:
    """The Mega layer in float64, every sum correctly rounded (``math.fsum``); as :func:`mega_layer_mpmath`."""
    return _layer(x, params, chunk, causal, attention, scale, _Arith(False))


# ---------------------------------------------------------------------------------------------------- the bound

def _sig(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _ema_dense(x, al, de, be, et, reverse: bool, absolute: bool):
    """``(b l d)``: the EMA by its dense Toeplitz operator (float64; magnitudes with ``absolute``)."""
    b, L, d = x.shape
    q = 1.0 - al * de
    k = np.arange(L)
    w = et * al * be
    Kt = np.einsum("de,dek->dk", np.abs(w) if absolute else w, q[..., None] ** k)  # (d l)
    xx = np.abs(x) if absolute else x
    t = np.arange(L)
    lag = (t[None, :] - t[:, None]) if reverse else (t[:, None] - t[None, :])  # [t, s]
    Tm = np.where(lag[None] >= 0, Kt[:, np.clip(lag, 0, max(L - 1, 0))], 0.0) if L else np.zeros((d, 0, 0))
    return np.einsum("dts,bsd->btd", Tm, xx)


def _ema_error(x, P, dtype):
    """The EMA stage's error (module docstring): ``gamma_D`` times the dense operator on |inputs| + FFT."""
    b, L, d = x.shape
    sets = [("alpha", "delta", "beta", "eta", False)]
    if all(P.get(k) is not None for k in _BWD):
        sets.append(("alpha_bwd", "delta_bwd", "beta_bwd", "eta_bwd", True))
    err = np.zeros(x.shape)
    e = P["alpha"].shape[1]
    for a_, d_, b_, e_, rev in sets:
        al, de, be, et = P[a_], P[d_], P[b_], P[e_]
        q = 1.0 - al * de
        depth = 6 * L + e + 10 + L * (2 + 2 * float(np.max(al * de / q)) + float(np.max(np.abs(np.log(q)))))
        err += gamma(depth + len(sets), dtype) * _ema_dense(x, al, de, be, et, rev, True)
        if L:
            Kt = np.einsum("de,dek->dk", et * al * be, q[..., None] ** np.arange(L))
            n_fft = 1 << max(1, int(2 * L - 1).bit_length())
            fb = fft_convolution_bound(Kt[None], np.moveaxis(x, 1, 2), n_fft, dtype, axis=-1)  # (b d 1)
            err += np.moveaxis(np.broadcast_to(fb.values, (b, d, 1)), 1, 2)
    return err


def _forward(x, P, chunk, causal, attention, scale) -> Dict[str, Any]:
    """The layer's exact intermediates in vectorized float64 (dense operators, the keep-mask from the keep sets)."""
    b, L, d = x.shape
    n = P["W_z"].shape[1]
    bidir = all(P.get(k) is not None for k in _BWD)
    F: Dict[str, Any] = {}
    # X' = EMA(X) by the dense operator of the closed form  (+ the backward EMA)
    Xp = _ema_dense(x, P["alpha"], P["delta"], P["beta"], P["eta"], False, False)
    if bidir:
        Xp = Xp + _ema_dense(x, P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"], True, False)
    F["Xp"] = Xp
    F["Zpre"] = Xp @ P["W_z"] + P["b_z"]
    F["Z"] = F["Zpre"] * _sig(F["Zpre"])
    F["Q"] = P["kappa_q"] * F["Z"] + P["mu_q"]
    F["K"] = P["kappa_k"] * F["Z"] + P["mu_k"]
    F["Vpre"] = x @ P["W_v"] + P["b_v"]
    F["V"] = F["Vpre"] * _sig(F["Vpre"])
    F["Gpre"] = Xp @ P["W_gamma"] + P["b_gamma"]
    F["G"] = F["Gpre"] * _sig(F["Gpre"])
    F["Phipre"] = Xp @ P["W_phi"] + P["b_phi"]
    F["Phi"] = _sig(F["Phipre"])
    keep = np.zeros((L, L), dtype=bool)
    for i, s_ in enumerate(keep_sets(L, chunk, causal)):
        keep[i, sorted(s_)] = True
    F["keep"] = keep
    cnt = np.maximum(keep.sum(axis=1), 1).astype(np.float64)
    if scale is not None:
        sc = np.full(L, float(scale))
    elif attention == "softmax":
        sc = np.full(L, n ** -0.5)
    else:
        sc = 1.0 / cnt
    F["sc"] = sc
    rb = P.get("rel_bias")
    if rb is not None and L:
        m = (len(rb) + 1) // 2
        idx = np.arange(L)
        # only the kept pairs read the bias (pairs in other chunks may lie farther apart than it spans)
        B = np.where(keep, rb[np.clip(m - 1 + idx[None, :] - idx[:, None], 0, 2 * m - 2)], 0.0)
    else:
        B = np.zeros((L, L))
    F["B"] = B
    S = sc[None, :, None] * np.einsum("bin,bjn->bij", F["Q"], F["K"]) + B
    F["S"] = S
    if attention == "softmax":
        Sm = np.where(keep, S, -np.inf)
        mx = np.max(Sm, axis=-1, keepdims=True) if L else np.zeros((b, 0, 1))
        F["mx"] = mx
        w = np.where(keep, np.exp(Sm - mx), 0.0)
        Pw = w / np.where(w.sum(-1, keepdims=True) > 0, w.sum(-1, keepdims=True), 1.0)
    elif attention == "laplace":
        from scipy.special import erf

        F["t"] = (S - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))
        Pw = np.where(keep, 0.5 * (1.0 + erf(F["t"])), 0.0)
    else:
        Pw = np.where(keep, np.maximum(S, 0.0) ** 2, 0.0)
    F["P"] = Pw
    F["O"] = Pw @ F["V"]
    F["Gt"] = F["G"] * F["O"]
    F["Hpre"] = Xp @ P["W_h"] + F["Gt"] @ P["U_h"] + P["b_h"]
    F["H"] = F["Hpre"] * _sig(F["Hpre"])
    F["Y"] = F["Phi"] * F["H"] + (1.0 - F["Phi"]) * x
    return F


def _stage_errors(x, P, chunk, causal, attention, scale, dtype, F) -> np.ndarray:
    """``dY (b l d)``: the candidate's first-order error in ``dtype`` (module docstring); ``F`` from :func:`_forward`."""
    u = unit_roundoff(dtype)
    b, L, d = x.shape
    n = P["W_z"].shape[1]
    p = P["W_v"].shape[1]
    ab = np.abs
    Xp = F["Xp"]
    dXp = _ema_error(x, P, dtype)

    def lin(src, dsrc, W, bias, k):
        return dsrc @ ab(W) + gamma(k, dtype) * (ab(src) @ ab(W) + ab(bias))

    def silu_err(Fv, dA):
        return SILU_LIPSCHITZ * dA + SILU_U * u * ab(Fv)

    dZ = silu_err(F["Z"], lin(Xp, dXp, P["W_z"], P["b_z"], d + 1))
    Z, Q, K = F["Z"], F["Q"], F["K"]
    dQ = ab(P["kappa_q"]) * dZ + gamma(2, dtype) * (ab(P["kappa_q"] * Z) + ab(P["mu_q"]))
    dK = ab(P["kappa_k"]) * dZ + gamma(2, dtype) * (ab(P["kappa_k"] * Z) + ab(P["mu_k"]))
    V = F["V"]
    dV = silu_err(V, lin(x, np.zeros_like(x), P["W_v"], P["b_v"], d + 1))
    dGm = silu_err(F["G"], lin(Xp, dXp, P["W_gamma"], P["b_gamma"], d + 1))
    Phi = F["Phi"]
    dPhi = 0.25 * lin(Xp, dXp, P["W_phi"], P["b_phi"], d + 1) + SIGMOID_U * u * ab(Phi)
    keep, S, B = F["keep"], F["S"], F["B"]
    sc = ab(F["sc"])
    dS = sc[None, :, None] * (np.einsum("bin,bjn->bij", dQ, ab(K)) + np.einsum("bin,bjn->bij", ab(Q), dK)) \
        + gamma(n + 3, dtype) * (sc[None, :, None] * np.einsum("bin,bjn->bij", ab(Q), ab(K)) + ab(B))
    Pw = F["P"]
    if attention == "softmax":
        mx = F["mx"]
        delta = np.where(keep, dS + u * (ab(np.where(keep, S - mx, 0.0)) + TRANSCENDENTAL_U + 1), 0.0)
        dmax = np.max(delta, axis=-1, keepdims=True) if L else np.zeros((b, 0, 1))
        rel = delta + dmax + gamma(2 * L + 1, dtype)
        dO = (Pw * rel) @ ab(V) + Pw @ dV
    else:
        if attention == "laplace":
            from scipy.special import erf

            den = LAPLACE_SIGMA * math.sqrt(2.0)
            t = F["t"]
            nearest = np.clip(LAPLACE_MU, S - dS, S + dS)
            fmax = np.exp(-((nearest - LAPLACE_MU) / den) ** 2) / (den * math.sqrt(math.pi))
            dP = fmax * dS + (3 * u * ab(t) + TRANSCENDENTAL_U * u * ab(erf(t)) * math.sqrt(math.pi) / 2) \
                / math.sqrt(math.pi) + u * ab(Pw)
        else:
            dP = 2 * np.maximum(ab(S) + dS, 0.0) * dS + u * ab(Pw)
        dP = np.where(keep, dP, 0.0)
        dO = dP @ ab(V) + ab(Pw) @ dV + gamma(L, dtype) * (ab(Pw) @ ab(V))
    O, Gm, Gt = F["O"], F["G"], F["Gt"]
    dG = dGm * ab(O) + ab(Gm) * dO + u * ab(Gt)
    dHpre = dXp @ ab(P["W_h"]) + dG @ ab(P["U_h"]) \
        + gamma(d + p + 1, dtype) * (ab(Xp) @ ab(P["W_h"]) + ab(Gt) @ ab(P["U_h"]) + ab(P["b_h"]))
    H = F["H"]
    dH = silu_err(H, dHpre)
    dY = dPhi * ab(H - x) + Phi * dH + gamma(3, dtype) * 3 * (ab(H) + ab(x))
    return dY + underflow_floor(10 * (L + d + n + p) + 20, dtype)


def _prepare(x, params):
    x = np.asarray(x, dtype=np.float64)
    P = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    return x, P


def mega_layer_dense(x, params: Mapping[str, Any], *, chunk: Optional[int] = None, causal: bool = False,
                     attention: str = "softmax", scale: Optional[float] = None) -> np.ndarray:
    """The Mega layer in vectorized float64: the EMA's dense Toeplitz operator from the closed form, the dense
    masked scores from the keep sets (fast; its rounding is the float64 share of :func:`mega_layer_bound`)."""
    x, P = _prepare(x, params)
    return _forward(x, P, chunk, causal, attention, scale)["Y"]


def mega_layer_bound(x, params: Mapping[str, Any], *, chunk: Optional[int] = None, causal: bool = False,
                     attention: str = "softmax", scale: Optional[float] = None, dtype=np.float64,
                     oracle_dtype=None) -> Bound:
    """The first-order bound of the module docstring on ``|Y_candidate - Y_exact|``, elementwise ``(b l d)``;
    ``oracle_dtype=np.float64`` adds a float64 oracle's share (:func:`mega_layer_fsum`, :func:`mega_layer_dense`)."""
    x, P = _prepare(x, params)
    F = _forward(x, P, chunk, causal, attention, scale)
    vals = _stage_errors(x, P, chunk, causal, attention, scale, dtype, F)
    src = f"Mega layer, first-order stage-by-stage propagation in {np.dtype(dtype).name}"
    if oracle_dtype is not None:
        vals = vals + _stage_errors(x, P, chunk, causal, attention, scale, oracle_dtype, F)
        src += f" + the {np.dtype(oracle_dtype).name} oracle's share"
    return Bound(vals, src + " (oracles/mega.py docstring)")
