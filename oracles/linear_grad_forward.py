r"""Ground truth for the gradients of linear attention and the feature maps: float64 forwards and derived bounds.

Nothing here is a backward pass that is checked.  The forwards are dense float64 materializations written here
(no refimpl), for :mod:`oracles.gradients` to differentiate by central differences; the bounds are the rounding
error of a backward pass run in a given dtype, derived from the adjoint equations below (the equations are
restated to count roundings and magnitudes; nothing here returns a gradient).

Linear attention (op ``attention.linear``'s canonical layout: ``phi_q, phi_k (b l h n)``, ``v (b l h e)``,
``S0 (b h e n)``, ``u0 (b h n)``), per batch entry and head, with ``Q = scale phi_q`` and the mask ``M``
(``j <= i`` when causal)::

    A = M * (Q phi_k^T),  num = A V + Q S0^T,  a = A 1 + Q u0,
    den = a + eps ('add') | max(a, eps) ('clamp') | a + eps sum_n Q ('key_sum'),   o = num / den
    S_last = S0 + V^T phi_k,   u_last = u0 + phi_k^T 1

The adjoint (any correct backward computes these sums, in some grouping)::

    dnum = do / den,  da = -(do . o) / den,  dA = M * (dnum V^T + da 1^T)
    dQ = dA phi_k + dnum S0 + da u0^T (+ eps da 1^T for key_sum),  dphi_k = dA^T Q + V dS_L + 1 du_L^T
    dV = A^T dnum + phi_k dS_L^T,  dS0 = dnum^T Q + dS_L,  du0 = Q^T da + du_L

**The bound** (:func:`linear_vjp_bound`).  Every gradient entry is a sum of products of the inputs, ``1/den`` and
``o``; grouped any way (recurrent, chunked, quadratic; the state ``S_t = S0 + sum v k^T`` or its adjoint summed
first), its absolute value is at most the same sums on absolute values (the triangle inequality), ``Mag`` below,
and each term carries at most ``D`` roundings, so ``|error| <= gamma_D Mag`` (Higham's componentwise model).
With ``Aabs = M * (|Q| |phi_k|^T)``, ``Dabs = Aabs 1 + |Q| |u0| + eps_term`` (the denominator on absolute values;
``>= |den|``), ``Nabs = Aabs |V| + |Q| |S0|^T``::

    Mo    = (Nabs + |o| Dabs) / |den|          (the output's magnitude: the numerator and the denominator's error)
    Mdnum = |do| Dabs / den^2                  (do / den, with den's relative error Dabs / |den|)
    Mda   = (|do| . Mo) / |den| + |do . o| Dabs / den^2
    MdA   = M * (Mdnum |V|^T + Mda 1^T)
    Mag(dphi_q) = scale (MdA |phi_k| + Mdnum |S0| + Mda |u0|^T (+ eps Mda))
    Mag(dphi_k) = MdA^T |Q| + |V| |dS_L| + |du_L|,    Mag(dv) = Aabs^T Mdnum + |phi_k| |dS_L|^T
    Mag(dS0) = Mdnum^T |Q| + |dS_L|,    Mag(du0) = |Q|^T Mda + |du_L|

(unnormalized: ``Mdnum = |do|``, ``Mda = 0``).  The depth ``D``: the denominator ``n + l + 2`` roundings (a dot of
``n``, a sum of ``l``, ``eps``), the division ``1``, ``do . o`` ``p + 1``, ``da`` ``1``, ``dA`` ``2`` (a product
and the added ``da``), then the adjoint's sums: ``l`` (over keys or queries, or the reverse scan's accumulation),
``n`` or ``p`` (a state row), ``3`` (the terms added): ``D = 2 (n + l + p) + 10``, plus ``scale``'s roundings
(``3`` for ``None``: sqrt, reciprocal, product; ``1`` for a given factor) on ``phi_q``.

Feature maps (``x (... d)`` -> ``phi``): :func:`feature_forward` (elu+1, dpfp, Performer's positive / trig /
hyperbolic with the op ``features.performer``'s ``data_scale``, ``eps`` and stabilizers, the offset differentiated
through, as the function is defined) and :func:`feature_vjp_bound` (derived in its docstring).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from oracles.tolerance import Bound, gamma

__all__ = ["linear_forward", "linear_forward_mp", "positive_features_mp", "linear_vjp_bound", "feature_forward", "feature_vjp_bound", "performer_offset",
           "linear_depth"]


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _scale_of(scale, n):
    """``(factor, roundings)`` of the scale on ``phi_q`` (``None`` = ``n^{-1/2}``)."""
    if scale is None:
        return (1.0 / math.sqrt(n) if n > 0 else 1.0), 3
    return float(scale), (0 if float(scale) == 1.0 else 1)


def _mask(l, s, causal):
    return np.tril(np.ones((l, s))) if causal else np.ones((l, s))


def linear_forward(phi_q, phi_k, v, S0=None, u0=None, *, causal=True, normalize=True, eps=0.0, eps_mode="add",
                   scale=1.0) -> Dict[str, np.ndarray]:
    """The dense float64 forward of op ``attention.linear`` (module docstring): ``{"o", "S_last", "u_last"}``.

    ``phi_q (b l h n)``, ``phi_k (b s h n)``, ``v (b s h e)``, ``S0 (b h e n)``, ``u0 (b h n)`` (``None`` = 0)."""
    pq, pk, V = _f64(phi_q), _f64(phi_k), _f64(v)
    b, l, h, n = pq.shape
    s, e = pk.shape[1], V.shape[3]
    sc, _ = _scale_of(scale, n)
    Q = pq * sc
    S0 = np.zeros((b, h, e, n)) if S0 is None else _f64(S0)
    u0 = np.zeros((b, h, n)) if u0 is None else _f64(u0)
    # A_ij = M_ij Q_i . phi_k_j
    A = np.einsum("bihn,bjhn->bhij", Q, pk) * _mask(l, s, causal)
    # num = A V + Q S0^T
    num = np.einsum("bhij,bjhe->bihe", A, V) + np.einsum("bhen,bihn->bihe", S0, Q)
    if normalize:
        # a = A 1 + Q u0 ; den by eps_mode
        a = np.einsum("bhij->bih", A) + np.einsum("bhn,bihn->bih", u0, Q)
        if eps_mode == "add":
            den = a + eps
        elif eps_mode == "clamp":
            den = np.maximum(a, eps)
        else:  # key_sum: Q . (u0 + sum_j phi_k_j + eps 1)
            den = a + eps * np.sum(Q, axis=-1)
        o = num / den[..., None]
    else:
        o = num
    # S_last = S0 + V^T phi_k ;  u_last = u0 + phi_k^T 1
    return {"o": o, "S_last": S0 + np.einsum("bjhe,bjhn->bhen", V, pk), "u_last": u0 + np.sum(pk, axis=1)}


def linear_depth(n: int, l: int, p: int, scale_roundings: int = 0) -> int:
    """``D = 2 (n + l + p) + 10`` (+ the scale's roundings): module docstring."""
    return 2 * (n + l + p) + 10 + scale_roundings


def linear_vjp_bound(phi_q, phi_k, v, S0, u0, do, dS_L, du_L, *, causal, normalize, eps, eps_mode, dtype,
                     scale=1.0) -> Dict[str, Bound]:
    """The rounding bound of a linear-attention backward run in ``dtype`` (module docstring), for each of
    ``phi_q``, ``phi_k``, ``v``, ``S0``, ``u0``; ``None`` cotangents and states are 0."""
    pq, pk, V = _f64(phi_q), _f64(phi_k), _f64(v)
    b, l, h, n = pq.shape
    s, p = pk.shape[1], V.shape[3]
    sc, rq = _scale_of(scale, n)
    Q = np.abs(pq * sc)
    K, Va = np.abs(pk), np.abs(V)
    S0a = np.zeros((b, h, p, n)) if S0 is None else np.abs(_f64(S0))
    u0a = np.zeros((b, h, n)) if u0 is None else np.abs(_f64(u0))
    dOa = np.zeros((b, l, h, p)) if do is None else np.abs(_f64(do))
    dSa = np.zeros((b, h, p, n)) if dS_L is None else np.abs(_f64(dS_L))
    dua = np.zeros((b, h, n)) if du_L is None else np.abs(_f64(du_L))
    M = _mask(l, s, causal)
    Aabs = np.einsum("bihn,bjhn->bhij", Q, K) * M
    if normalize:
        fw = linear_forward(pq, pk, V, S0, u0, causal=causal, normalize=True, eps=eps, eps_mode=eps_mode, scale=sc)
        o = fw["o"]
        Qs = pq * sc
        a = np.einsum("bhij->bih", np.einsum("bihn,bjhn->bhij", Qs, pk) * M) + np.einsum(
            "bhn,bihn->bih", np.zeros((b, h, n)) if u0 is None else _f64(u0), Qs)
        den = a + eps if eps_mode == "add" else (np.maximum(a, eps) if eps_mode == "clamp"
                                                 else a + eps * np.sum(Qs, axis=-1))
        eps_term = eps * np.sum(Q, axis=-1) if eps_mode == "key_sum" else eps
        Dabs = np.einsum("bhij->bih", Aabs) + np.einsum("bhn,bihn->bih", u0a, Q) + eps_term
        if eps_mode == "clamp":
            Dabs = np.maximum(Dabs, eps)
        aden = np.abs(den)
        Nabs = np.einsum("bhij,bjhp->bihp", Aabs, Va) + np.einsum("bhpn,bihn->bihp", S0a, Q)
        with np.errstate(divide="ignore", invalid="ignore"):
            Mo = (Nabs + np.abs(o) * Dabs[..., None]) / aden[..., None]
            Mdnum = dOa * (Dabs / aden ** 2)[..., None]
            dot = np.abs(np.sum(_f64(do) * o, axis=-1)) if do is not None else np.zeros((b, l, h))
            Mda = np.sum(dOa * Mo, axis=-1) / aden + dot * Dabs / aden ** 2
    else:
        Mdnum = dOa
        Mda = np.zeros((b, l, h))
    # MdA = M * (Mdnum |V|^T + Mda 1^T)
    MdA = (np.einsum("bihp,bjhp->bhij", Mdnum, Va) + np.transpose(Mda, (0, 2, 1))[..., None]) * M
    mq = np.einsum("bhij,bjhn->bihn", MdA, K) + np.einsum("bhpn,bihp->bihn", S0a, Mdnum) + Mda[..., None] * u0a[:, None]
    if normalize and eps_mode == "key_sum":
        mq = mq + eps * Mda[..., None]
    mq = sc * mq
    mk = np.einsum("bhij,bihn->bjhn", MdA, Q) + np.einsum("bhpn,bjhp->bjhn", dSa, Va) + (dua[:, None] if normalize else 0)
    mv = np.einsum("bhij,bihp->bjhp", Aabs, Mdnum) + np.einsum("bhpn,bjhn->bjhp", dSa, K)
    mS = np.einsum("bihp,bihn->bhpn", Mdnum, Q) + dSa
    mu = np.einsum("bih,bihn->bhn", Mda, Q) + dua
    D = linear_depth(n, max(l, s), p, rq)
    g = gamma(D, dtype)
    src = (f"gamma_{D} ({np.dtype(dtype).name}) x the adjoint's sums on absolute values "
           f"(D = 2 (n + l + p) + 10{' + ' + str(rq) + ' (scale)' if rq else ''}; oracles.linear_grad_forward)")
    return {nm: Bound(g * m, src) for nm, m in (("phi_q", mq), ("phi_k", mk), ("v", mv), ("S0", mS), ("u0", mu))}


# ------------------------------------------------------------------ feature maps

def performer_offset(xs, W, kind, stabilizer):
    """The op ``features.performer``'s offset ``c (... 1)`` over the exponents (float64), and the exponents ``z``
    it is a max of (``None`` for ``"none"``): ``row_max``/``global_max`` over ``z = [W x] - |x|^2/2``,
    ``row_max_wx``/``head_max_wx`` over ``W x`` alone (per row; per batch entry and head over positions)."""
    wx = xs @ W.T
    if kind == "hyperbolic":
        wx = np.concatenate([wx, -wx], axis=-1)
    z = wx - 0.5 * np.sum(xs * xs, axis=-1, keepdims=True)
    if stabilizer == "none" or z.size == 0:
        return np.zeros(z.shape[:-1] + (1,)), z
    if stabilizer == "row_max":
        return np.max(z, axis=-1, keepdims=True), z
    if stabilizer == "global_max":
        return np.full(z.shape[:-1] + (1,), np.max(z)), z
    if stabilizer == "row_max_wx":
        return np.max(wx, axis=-1, keepdims=True), z
    return np.broadcast_to(np.max(wx, axis=(1, 3), keepdims=True), z.shape[:-1] + (1,)).copy(), z


def feature_forward(x, kind, *, W=None, nu=1, data_scale="none", eps=0.0, stabilizer="none") -> np.ndarray:
    r"""float64 features, the definitions written out (as the verify ops ``features.*`` define them):

    * ``elu_plus_one``: ``x + 1`` (``x >= 0``), ``exp(x)`` (``x < 0``);
    * ``dpfp``: ``r = [relu(x), relu(-x)]``, ``phi_{(j-1) 2d + i} = r_i r_{(i-j) mod 2d}``;
    * ``positive``: ``(exp(W x - |x|^2/2 - c) + eps) / sqrt(m)``; ``trig``: ``exp(|x|^2/2)/sqrt(m) [sin, cos](W x)``;
      ``hyperbolic``: ``(exp([W x, -W x] - |x|^2/2 - c) + eps) / sqrt(2m)``; ``x`` first times ``d^{-1/4}`` when
      ``data_scale="d^-1/4"``; ``c`` from :func:`performer_offset` (a function of ``x``: differentiated through).
    """
    x = np.asarray(x, dtype=np.float64)
    if kind == "elu_plus_one":
        return np.where(x >= 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
    if kind == "dpfp":
        d = x.shape[-1]
        r = np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1)
        return np.concatenate([r * r[..., (np.arange(2 * d) - j) % (2 * d)] for j in range(1, nu + 1)], axis=-1)
    W = np.asarray(W, dtype=np.float64)
    xs = x * x.shape[-1] ** -0.25 if data_scale == "d^-1/4" else x
    m = W.shape[0]
    if kind == "trig":
        wx = xs @ W.T
        return np.exp(0.5 * np.sum(xs * xs, axis=-1, keepdims=True)) / math.sqrt(m) * np.concatenate(
            [np.sin(wx), np.cos(wx)], axis=-1)
    c, z = performer_offset(xs, W, kind, stabilizer)
    width = m if kind == "positive" else 2 * m
    return (np.exp(z - c) + eps) / math.sqrt(width)


def feature_vjp_bound(x, kind, dphi, dtype, *, W=None, nu=1, data_scale="none", eps=0.0,
                      stabilizer="none") -> Dict[str, Bound]:
    r"""The rounding bound of a feature map's backward in ``dtype`` (``{"x": Bound}`` and ``"W"`` for random features).

    * ``elu_plus_one``: ``dx = dphi phi'(x)``, ``phi' = exp(x)`` (one ulp: 2u) or 1, then the product:
      ``gamma_3 |dphi| |phi'|``.
    * ``dpfp``: ``dr_i`` sums ``2 nu`` products of ``|dphi|`` and ``r >= 0`` (exact), then a sign: ``gamma_{2 nu + 1}``
      times the same sums on absolute values.
    * exponential features (``positive``, ``hyperbolic``): the exponent ``z`` (a dot of ``d``, ``|x|^2/2``, the
      offset subtracted; ``+2`` for ``data_scale``) is within ``E_z = gamma_{d+5} (|W| |x| + |x|^2)`` (twice that
      with an offset, itself such an exponent), ``exp`` and ``/sqrt`` add ``gamma_3``, so ``phi`` and
      ``dz = dphi phi`` are within relative ``R = 2 E_z + gamma_5`` (the first-order expansion of ``exp``); then
      ``dx = W^T g - x sum dz`` (``g = dz`` or ``dz+ - dz-``; the offset's adjoint adds ``sum dz`` at the argmax)
      sums ``2m + 2`` terms: ``|error| <= (R + gamma_{2m+3}) (|W|^T |g|' + |x| sum |dz|')`` with ``|g|'``,
      ``|dz|'`` the magnitudes including the offset term; ``dW = sum_positions g x^T`` over ``P`` positions:
      ``(R + gamma_{P+2}) sum |g|' |x|``.  ``data_scale``: ``dx`` is multiplied by ``d^{-1/4}`` (one more rounding).
    * ``trig``: ``sin``/``cos`` of ``W x`` (within ``gamma_{d+1} |W||x|`` absolute, plus one ulp), ``h = exp(|x|^2/2)``
      relative ``gamma_{d+4} (1 + |x|^2)``: ``|phi|``'s error ``E_phi = h (gamma_{d+2} |W||x| + gamma_{d+5} (1 + |x|^2))``
      elementwise; ``dx = x (dphi . phi) + W^T g`` with ``g = dphi_s phi_c - dphi_c phi_s``:
      ``|x| (|dphi| . E_phi) + |W|^T (|dphi_s| E_c + |dphi_c| E_s) + gamma_{2m+4} (|x| |dphi|.|phi| + |W|^T |g|)``.
    """
    x = np.asarray(x, dtype=np.float64)
    dphi = np.asarray(dphi, dtype=np.float64)
    adp = np.abs(dphi)
    g_ = lambda k: gamma(k, dtype)  # noqa: E731
    if kind == "elu_plus_one":
        slope = np.where(x >= 0, 1.0, np.exp(np.minimum(x, 0.0)))
        return {"x": Bound(g_(3) * adp * slope, "gamma_3 |dphi| |phi'(x)| (exp: one ulp, then the product)")}
    if kind == "dpfp":
        d = x.shape[-1]
        r = np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1)
        idx = np.arange(2 * d)
        mdr = np.zeros_like(r)
        for j in range(1, nu + 1):
            dj = adp[..., (j - 1) * 2 * d: j * 2 * d]
            mdr = mdr + dj * r[..., (idx - j) % (2 * d)]
            mdr = mdr + (dj * r)[..., (idx + j) % (2 * d)]
        mx = mdr[..., :d] * (x > 0) + mdr[..., d:] * (x < 0)
        return {"x": Bound(g_(2 * nu + 1) * mx, f"gamma_{2 * nu + 1} x dr's {2 * nu} products on absolute values")}
    W = np.asarray(W, dtype=np.float64)
    d = x.shape[-1]
    r4 = d ** -0.25 if data_scale == "d^-1/4" else 1.0
    xs = x * r4
    extra = 2 if data_scale == "d^-1/4" else 0
    m = W.shape[0]
    Wa, xa = np.abs(W), np.abs(xs)
    A = xa @ Wa.T
    sq = np.sum(xs * xs, axis=-1, keepdims=True)
    P = int(np.prod(x.shape[:-1]))
    if kind == "trig":
        wx = xs @ W.T
        h = np.exp(0.5 * sq) / math.sqrt(m)
        phi = h * np.concatenate([np.sin(wx), np.cos(wx)], axis=-1)
        E = h * (g_(d + 2 + extra) * np.concatenate([A, A], axis=-1) + g_(d + 5 + extra) * (1.0 + sq))
        ds, dc = adp[..., :m], adp[..., m:]
        Eg = ds * E[..., m:] + dc * E[..., :m]
        ga = ds * np.abs(phi[..., m:]) + dc * np.abs(phi[..., :m])
        dotm = np.sum(adp * np.abs(phi), axis=-1, keepdims=True)
        bx = xa * np.sum(adp * E, axis=-1, keepdims=True) + Eg @ Wa + g_(2 * m + 4) * (xa * dotm + ga @ Wa)
        bW = np.einsum("pf,pn->fn", (Eg + g_(P + 3) * ga).reshape(-1, m), xa.reshape(-1, d))
        src = "trig: sin/cos and h's errors through dx = x (dphi.phi) + W^T g (oracles.linear_grad_forward)"
        return {"x": Bound(r4 * bx * (1 + g_(1)), src), "W": Bound(bW, src)}
    c, z = performer_offset(xs, W, kind, stabilizer)
    width = m if kind == "positive" else 2 * m
    core = np.exp(z - c) / math.sqrt(width)
    Ez = g_(d + 5 + extra) * (np.concatenate([A, A], axis=-1) if kind == "hyperbolic" else A) + g_(d + 5 + extra) * sq
    if stabilizer != "none":
        Ez = 2.0 * Ez
    R = Ez + g_(5)
    mdz = adp * core
    if stabilizer != "none" and z.size:
        # the offset's adjoint: sum |dz| over the features (rows) the offset covers, at the argmax
        if stabilizer in ("row_max", "row_max_wx"):
            mdz = mdz + np.sum(mdz, axis=-1, keepdims=True)
        else:
            mdz = mdz + np.sum(mdz)
    Emdz = R * mdz
    mg = mdz[..., :m] + mdz[..., m:] if kind == "hyperbolic" else mdz
    Eg = Emdz[..., :m] + Emdz[..., m:] if kind == "hyperbolic" else Emdz
    bx = Eg @ Wa + xa * np.sum(Emdz, axis=-1, keepdims=True) + g_(2 * width + 3) * (
        mg @ Wa + xa * np.sum(mdz, axis=-1, keepdims=True))
    bW = np.einsum("pf,pn->fn", (Eg + g_(P + 2) * mg).reshape(-1, m), xa.reshape(-1, d))
    if extra:
        bW = bW + g_(2) * np.einsum("pf,pn->fn", mg.reshape(-1, m), xa.reshape(-1, d))
    src = (f"{kind}: the exponent's error (gamma_(d+5) (|W||x| + |x|^2){', twice: the offset' if stabilizer != 'none' else ''})"
           f" through dz = dphi phi and dx = W^T g - x sum dz (oracles.linear_grad_forward)")
    return {"x": Bound(r4 * bx * (1 + g_(2)), src), "W": Bound(bW, src)}




# ------------------------------------------------------------------ mpmath forwards (tiny cases, oracles.gradients.mp_vjp)

def linear_forward_mp(inp, *, causal=True, normalize=True, eps=0.0):
    """Op ``attention.linear``'s forward in mpmath, plain loops (``inp``: object arrays of mpf, ``S0``/``u0`` optional):
    ``{"o", "S_last", "u_last"}`` as object arrays; ``eps`` added (``eps_mode="add"``), scale 1."""
    import mpmath

    Q, K, V = inp["phi_q"], inp["phi_k"], inp["v"]
    b, l, h, n = Q.shape
    e = V.shape[3]
    S0, u0 = inp.get("S0"), inp.get("u0")
    zero = mpmath.mpf(0)
    o = np.empty((b, l, h, e), dtype=object)
    S_last = np.empty((b, h, e, n), dtype=object)
    u_last = np.empty((b, h, n), dtype=object)
    for bi in range(b):
        for hi in range(h):
            for i in range(l):
                js = range(i + 1) if causal else range(l)
                # A_ij = phi(q_i) . phi(k_j)
                A = {j: mpmath.fsum(Q[bi, i, hi, c] * K[bi, j, hi, c] for c in range(n)) for j in js}
                den = mpmath.fsum(A.values()) + (zero if u0 is None else mpmath.fsum(
                    u0[bi, hi, c] * Q[bi, i, hi, c] for c in range(n))) + eps
                for r in range(e):
                    num = mpmath.fsum(A[j] * V[bi, j, hi, r] for j in js) + (zero if S0 is None else mpmath.fsum(
                        S0[bi, hi, r, c] * Q[bi, i, hi, c] for c in range(n)))
                    o[bi, i, hi, r] = num / den if normalize else num
            for r in range(e):
                for c in range(n):
                    S_last[bi, hi, r, c] = (zero if S0 is None else S0[bi, hi, r, c]) + mpmath.fsum(
                        V[bi, j, hi, r] * K[bi, j, hi, c] for j in range(l))
            for c in range(n):
                u_last[bi, hi, c] = (zero if u0 is None else u0[bi, hi, c]) + mpmath.fsum(K[bi, j, hi, c] for j in range(l))
    return {"o": o, "S_last": S_last, "u_last": u_last}


def positive_features_mp(inp):
    """``phi = exp(W x - |x|^2/2) / sqrt(m)`` in mpmath (``inp["x"] (... d)``, ``inp["W"] (m d)`` object arrays)."""
    import mpmath

    x, W = inp["x"], inp["W"]
    m, d = W.shape
    lead = x.shape[:-1]
    phi = np.empty(lead + (m,), dtype=object)
    for pos in np.ndindex(*lead):
        sq = mpmath.fsum(x[pos + (c,)] ** 2 for c in range(d)) / 2
        for i in range(m):
            phi[pos + (i,)] = mpmath.exp(mpmath.fsum(W[i, c] * x[pos + (c,)] for c in range(d)) - sq) / mpmath.sqrt(m)
    return {"phi": phi}
