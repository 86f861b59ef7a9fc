r"""Ground truth for the gradients of the composite ops ``attention.multi_head``, ``attention.performer`` and
``ssm.hippo_projection``: the float64 forwards to differentiate and the derived rounding bounds of a backward pass.

Imports numpy, math and other ground-truth modules only (never refimpl, never the conformance layer).

Forwards (independent of every backward pass; :mod:`oracles.gradients` differentiates them)
------------------------------------------------------------------------------------------
* :func:`multi_head_forward` -- the projections by ``einsum``, the attention by
  :func:`oracles.attention.sdpa_float64` (``p = exp(s - logsumexp(s))``), the output projection.
* :func:`performer_forward` -- the features of :func:`oracles.linear_grad_forward.feature_forward` (the
  stabilizer's offset a function of its input: differentiated *through* the max) composed with the dense
  :func:`oracles.linear_grad_forward.linear_forward`.
* :func:`hippo_forward` -- the discretized HiPPO recurrence in float64 plain loops, the matrices from the closed
  forms of :func:`oracles.hippo.transition_mp` (rounded to float64 once), each step by ``numpy.linalg.solve``
  (both ``step`` conventions, ``trapezoid`` and ``held``, as :func:`oracles.hippo.online_mpmath`).
  :func:`hippo_forward_mp` -- the same in mpmath (for :func:`oracles.gradients.mp_vjp`).

The rounding bounds (what a backward pass in ``dtype`` may deviate from the exact gradient)
-----------------------------------------------------------------------------------------
Attention ops (:func:`multi_head_vjp_bound`, :func:`performer_vjp_bound`): ``componentwise_bound(M, D F)`` with
``M`` the backward's sums run on absolute values (:func:`multi_head_vjp_magnitude`,
:func:`performer_vjp_magnitude`: every term of every adjoint sum counted, no cancellation credited -- ``|J|^T |w|``
would credit the softmax's ``P o (dP - D)`` and the normalizer's cancellations), ``D`` the longest chain of roundings
of the backward counted below, and ``F`` the amplification of a relative rounding of the scores / exponents into the
weights (a score error ``gamma S`` enters ``exp``: ``P``, ``phi`` carry a relative error ``gamma S``, so ``F =
1 + 2 Smax`` with ``Smax`` the largest score / exponent magnitude computed on absolute values):

* multi-head: projections ``d`` each, the softmax backward ``n + s + p + 12`` (``oracles.softmax_grad_forward``'s
  count), ``dZ = dout W_O^T`` ``dout``, ``dW_O = Z^T dout`` and ``dW_Q`` etc. a sum over ``b max(l, s)``
  positions, ``dX`` a sum over ``h max(n, p)`` (two projections for ``x_kv``: ``+ 1``); ``Smax = |scale|
  max (|x_q||W_Q|) . (|x_kv||W_K|)``.
* performer: the features (the exponent: ``d + 5``, twice with an offset, ``exp``, ``/sqrt``: ``+ 3``), linear
  attention's backward (``2 (m' + l + s + e) + 10``, :func:`oracles.linear_grad_forward.linear_depth`'s count,
  ``m'`` the feature width), the features' backward ``2 m' + 3``, ``dW`` a sum over every query and key position;
  ``Smax`` the largest ``|W| |x'| + |x'|^2`` (``x' = sqrt(scale) x``).

HiPPO (:func:`hippo_vjp_bound`): the reverse scan ``g_k = dc_k + T_k g_{k+1}`` (``T_k = A_bar^T``, LegS ``R_k^T
M_k^{-T}``) computed in ``dtype`` commits at step ``k`` an error ``delta_k <= gamma_{3N+6} (||T_k||_F ||g_{k+1}||
+ ||dc_k||)`` (a backward stable solve / product, :func:`oracles.hippo.online_bound`'s count) that the exact
adjoint propagator carries: ``E_k <= delta_k + ||T_k||_2 E_{k+1}`` (2-norm bound of every entry of ``g_k``);
``df`` reads ``g_{k+1}`` through ``B_bar`` (``||B_bar|| E_{k+1} + gamma_{N+3} |B_bar| . |g_{k+1}|``, times the
sample weights ``alpha``, ``1 - alpha``); ``dc0 = g_0``: ``E_0``; ``ddt`` the two ``<G, dX_bar/ddt>`` sums:
their terms on absolute values times ``gamma_{L + 4N + 10}`` plus ``sum_k E_{k+1} (||dA_bar|| ||c_k|| +
||dB_bar|| |u_k|)``.  ``g_k`` and the states are evaluated in float64 here (magnitudes).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

from oracles.attention import sdpa_float64
from oracles.linear_grad_forward import feature_forward, linear_forward
from oracles.tolerance import Bound, componentwise_bound, gamma, underflow_floor

__all__ = ["multi_head_forward", "performer_forward", "hippo_forward", "hippo_forward_mp", "hippo_matrices",
           "multi_head_vjp_bound", "performer_vjp_bound", "hippo_vjp_bound",
           "multi_head_vjp_magnitude", "performer_vjp_magnitude"]


# ------------------------------------------------------------------ attention.multi_head

def multi_head_forward(x_q, x_kv, W_Q, W_K, W_V, W_O, scale: float, keep=None) -> np.ndarray:
    r"""``out (b l dout)`` in float64: ``q_x = x_q W_Q[x]``, ``k_x``, ``v_x``; ``Z_x = softmax(scale q k^T) v``
    over the kept keys (``keep`` broadcastable to ``(b h l s)``); ``out = concat_x(Z_x) W_O`` (head-major)."""
    xq, xkv, WQ, WK, WV, WO = (np.asarray(a, dtype=np.float64) for a in (x_q, x_kv, W_Q, W_K, W_V, W_O))
    b, l, _ = xq.shape
    h, p = WV.shape[0], WV.shape[2]
    q = np.einsum("bld,hdn->blhn", xq, WQ)
    k = np.einsum("bsd,hdn->bshn", xkv, WK)
    v = np.einsum("bsd,hdp->bshp", xkv, WV)
    z = sdpa_float64(q, k, v, scale, keep)[0]
    return z.reshape(b, l, h * p) @ WO


def multi_head_depth(x_q, x_kv, W_Q, W_K, W_V, W_O, scale: float):
    """``(D, F)`` of the module docstring for the multi-head backward."""
    xq, xkv, WQ, WK = (np.abs(np.asarray(a, dtype=np.float64)) for a in (x_q, x_kv, W_Q, W_K))
    b, l, d = xq.shape
    s = xkv.shape[1]
    h, _, n = WQ.shape
    p = np.shape(W_V)[2]
    dout = np.shape(W_O)[1]
    D = 2 * d + n + s + p + 12 + dout + b * max(l, s) + h * max(n, p) + 1
    Qa = np.einsum("bld,hdn->blhn", xq, WQ)
    Ka = np.einsum("bsd,hdn->bshn", xkv, WK)
    S = abs(scale) * np.einsum("bihn,bjhn->bhij", Qa, Ka)
    Smax = float(S.max()) if S.size else 0.0
    return D, 1.0 + 2.0 * Smax


def multi_head_vjp_magnitude(x_q, x_kv, W_Q, W_K, W_V, W_O, dout, scale: float, keep=None) -> Dict[str, np.ndarray]:
    r"""The backward's sums on absolute values (the magnitude a rounding is relative to; no cancellation credited):
    ``|dZ| = |dout| |W_O|^T``; ``M_ij = P_ij |dZ_i| . (|v_j| + (P |V|)_i)`` (the terms of ``dS = P o (dP - D)``);
    ``Mq = |scale| M |K|``, ``Mk = |scale| M^T |Q|``, ``Mv = P^T |dZ|``; then the projections' adjoints on
    absolute values (``|x_q|^T Mq``, ``Mq |W_Q|^T``, ...) and ``|Z|^T |dout|`` for ``W_O``."""
    xq, xkv, WQ, WK, WV, WO, do = (np.asarray(a, dtype=np.float64) for a in (x_q, x_kv, W_Q, W_K, W_V, W_O, dout))
    b, l, _ = xq.shape
    h, p = WV.shape[0], WV.shape[2]
    q = np.einsum("bld,hdn->blhn", xq, WQ)
    k = np.einsum("bsd,hdn->bshn", xkv, WK)
    v = np.einsum("bsd,hdp->bshp", xkv, WV)
    z, P = sdpa_float64(q, k, v, scale, keep)
    aq, ak, av = np.abs(q), np.abs(k), np.abs(v)
    dZ = (np.abs(do) @ np.abs(WO).T).reshape(b, l, h, p)
    PV = np.einsum("bhij,bjhp->bihp", P, av)
    M = P * (np.einsum("bihp,bjhp->bhij", dZ, av) + np.einsum("bihp,bihp->bhi", dZ, PV)[..., None])
    Mq = abs(scale) * np.einsum("bhij,bjhn->bihn", M, ak)
    Mk = abs(scale) * np.einsum("bhij,bihn->bjhn", M, aq)
    Mv = np.einsum("bhij,bihp->bjhp", P, dZ)
    axq, axkv = np.abs(xq), np.abs(xkv)
    return {"x_q": np.einsum("blhn,hdn->bld", Mq, np.abs(WQ)),
            "x_kv": np.einsum("bshn,hdn->bsd", Mk, np.abs(WK)) + np.einsum("bshp,hdp->bsd", Mv, np.abs(WV)),
            "W_Q": np.einsum("bld,blhn->hdn", axq, Mq), "W_K": np.einsum("bsd,bshn->hdn", axkv, Mk),
            "W_V": np.einsum("bsd,bshp->hdp", axkv, Mv),
            "W_O": np.einsum("blc,blo->co", np.abs(z).reshape(b, l, h * p), np.abs(do))}


def multi_head_vjp_bound(inputs, dout, scale: float, dtype, keep=None) -> Dict[str, Bound]:
    """``componentwise_bound(M, D F)`` per input, ``M`` the backward on absolute values (module docstring)."""
    names = ("x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O")
    D, F = multi_head_depth(*(inputs[k] for k in names), scale)
    M = multi_head_vjp_magnitude(*(inputs[k] for k in names), dout, scale, keep)
    return {nm: componentwise_bound(M[nm], D * F, dtype, oracle_dtype=None,
                                    what=f"multi-head backward on absolute values: depth {D} (projections, softmax "
                                         f"backward, output projection, position sums) x score amplification {F:.3g}")
            for nm in names}


# ------------------------------------------------------------------ attention.performer

def performer_forward(q, k, v, W, *, kind: str, r: float, feature_eps: float, query_stabilizer: str,
                      key_stabilizer: str, causal: bool, normalize: bool, eps: float, eps_mode: str) -> np.ndarray:
    r"""``o (b l h e)`` in float64: ``phi_q = features(r q; W)``, ``phi_k = features(r k; W)`` (the offsets of the
    stabilizers functions of their inputs), then dense linear attention."""
    q, k, v, W = (np.asarray(a, dtype=np.float64) for a in (q, k, v, W))
    pq = feature_forward(q * r, kind, W=W, eps=feature_eps, stabilizer=query_stabilizer)
    pk = feature_forward(k * r, kind, W=W, eps=feature_eps, stabilizer=key_stabilizer)
    return linear_forward(pq, pk, v, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode)["o"]


def performer_depth(q, k, v, W, r: float, kind: str, stabilized: bool):
    """``(D, F)`` of the module docstring for the Performer backward."""
    q, k, W = (np.abs(np.asarray(a, dtype=np.float64)) * s for a, s in ((q, r), (k, r), (W, 1.0)))
    b, l, h, d = q.shape
    s = k.shape[1]
    e = np.shape(v)[3]
    m = W.shape[0]
    width = 2 * m if kind in ("trig", "hyperbolic") else m
    Dz = (d + 5) * (2 if stabilized else 1) + 3
    D = Dz + 2 * (width + l + s + e) + 10 + 2 * width + 3 + b * h * (l + s) + 2
    zs = [x @ W.T + 0.5 * np.sum(x * x, axis=-1, keepdims=True) for x in (q, k)]
    Smax = max([float(z.max()) for z in zs if z.size] + [0.0])
    return D, 1.0 + 2.0 * Smax


def _features_abs_vjp(x, W, kind, stabilizer, Mphi, phi):
    r"""The features' adjoint on absolute values: ``Mx``, ``MW`` for a cotangent magnitude ``Mphi``.  Positive /
    hyperbolic: ``|dz| = Mphi |phi|``, ``Mx = |W|^T |g| + |x| sum |dz|`` (+ the offset's adjoint ``sum |dz|
    (max_i |w_i| + |x|)``), ``MW = sum |g| |x|^T``; trig: ``|x| (Mphi . |phi|) + |W|^T (Mphi_s |phi_c| +
    Mphi_c |phi_s|)``."""
    ax, aW = np.abs(x), np.abs(W)
    m, d = W.shape
    if kind == "trig":
        g = Mphi[..., :m] * np.abs(phi[..., m:]) + Mphi[..., m:] * np.abs(phi[..., :m])
        Mx = ax * np.sum(Mphi * np.abs(phi), axis=-1, keepdims=True) + g @ aW
    else:
        dz = Mphi * np.abs(phi)
        g = dz[..., :m] + dz[..., m:] if kind == "hyperbolic" else dz
        tot = np.sum(dz, axis=-1, keepdims=True)
        Mx = g @ aW + ax * tot
        if stabilizer in ("row_max", "row_max_wx"):
            Mx = Mx + tot * (np.max(aW, axis=0) + ax)
        elif stabilizer != "none" and dz.size:
            Mx = Mx + np.sum(dz) * (np.max(aW, axis=0) + np.max(ax.reshape(-1, d), axis=0))
    MW = np.einsum("pf,pn->fn", g.reshape(-1, m), ax.reshape(-1, d))
    return Mx, MW


def performer_vjp_magnitude(q, k, v, W, do, *, kind, r, feature_eps, query_stabilizer, key_stabilizer, causal,
                            normalize, eps) -> Dict[str, np.ndarray]:
    r"""Performer's backward on absolute values (no cancellation credited): linear attention's adjoint with
    ``dnum_i = do_i / den_i``, ``|dden_i| = |do_i| . |o_i| / |den_i|``: ``Mphi_q_i = sum_j (|dnum_i| . |v_j| +
    |dden_i|) |phi_k_j|``, ``Mphi_k_j`` the same over ``i``, ``Mv_j = sum_i |A_ij| |dnum_i|``; then the features'
    adjoints on absolute values (:func:`_features_abs_vjp`), times ``r``."""
    q, k, v, W, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, W, do))
    qs, ks = q * r, k * r
    pq = feature_forward(qs, kind, W=W, eps=feature_eps, stabilizer=query_stabilizer)
    pk = feature_forward(ks, kind, W=W, eps=feature_eps, stabilizer=key_stabilizer)
    l, s = pq.shape[1], pk.shape[1]
    mask = np.tril(np.ones((l, s))) if causal else np.ones((l, s))
    A = np.einsum("bihn,bjhn->bhij", pq, pk) * mask
    Aa = np.einsum("bihn,bjhn->bhij", np.abs(pq), np.abs(pk)) * mask
    av = np.abs(v)
    if normalize:
        den = np.einsum("bhij->bih", A) + eps
        with np.errstate(divide="ignore", invalid="ignore"):
            o = np.einsum("bhij,bjhe->bihe", A, v) / den[..., None]
            dnum = np.abs(do) / np.abs(den)[..., None]
            dden = np.einsum("bihe,bihe->bih", np.abs(do), np.abs(o)) / np.abs(den)
        dnum = np.nan_to_num(dnum)
        dden = np.nan_to_num(dden)
    else:
        dnum = np.abs(do)
        dden = np.zeros(do.shape[:3])
    T = (np.einsum("bihe,bjhe->bhij", dnum, av) + np.einsum("bih->bhi", dden)[..., None]) * mask
    Mpq = np.einsum("bhij,bjhn->bihn", T, np.abs(pk))
    Mpk = np.einsum("bhij,bihn->bjhn", T, np.abs(pq))
    Mv = np.einsum("bhij,bihe->bjhe", Aa, dnum)
    Mxq, MWq = _features_abs_vjp(qs, W, kind, query_stabilizer, Mpq, pq)
    Mxk, MWk = _features_abs_vjp(ks, W, kind, key_stabilizer, Mpk, pk)
    return {"q": r * Mxq, "k": r * Mxk, "v": Mv, "W": MWq + MWk}


def performer_vjp_bound(inputs, do, conv_kw, dtype) -> Dict[str, Bound]:
    """``componentwise_bound(M, D F)`` per input, ``M`` the backward on absolute values (module docstring);
    ``conv_kw`` the keywords of :func:`performer_vjp_magnitude`."""
    stabilized = conv_kw["query_stabilizer"] != "none" or conv_kw["key_stabilizer"] != "none"
    D, F = performer_depth(inputs["q"], inputs["k"], inputs["v"], inputs["W"], conv_kw["r"], conv_kw["kind"],
                           stabilized)
    M = performer_vjp_magnitude(inputs["q"], inputs["k"], inputs["v"], inputs["W"], do, **conv_kw)
    return {nm: componentwise_bound(M[nm], D * F, dtype, oracle_dtype=None,
                                    what=f"performer backward on absolute values: depth {D} (features, linear "
                                         f"attention's adjoint, the features' adjoint, position sums) x exponent "
                                         f"amplification {F:.3g}")
            for nm in ("q", "k", "v", "W")}


# ------------------------------------------------------------------ ssm.hippo_projection

def hippo_matrices(measure: str, N: int, theta: float = 1.0):
    """``(A, B)`` of :func:`oracles.hippo.transition_mp` (S4's sign; LegS unscaled) rounded to float64."""
    import mpmath as mp

    from oracles.hippo import transition_mp

    with mp.workdps(30):
        A, B = transition_mp(measure, N, theta)
        return (np.array(A.tolist(), dtype=np.float64), np.array(B.tolist(), dtype=np.float64)[:, 0])


def _steps(measure, N, dt, alpha, theta, L, step):
    """Per step ``k`` the pair ``(lhs_k, rhs_k)`` and the input vectors: LTI measures and LegS alike."""
    A, B = hippo_matrices(measure, N, theta)
    I = np.eye(N)
    if measure == "legs":
        # dt s(t_k) = 1/(k + 1) on t_k = (k + 1) dt
        sc = 1.0 / np.arange(1, L + 1, dtype=np.float64)
    else:
        sc = np.full(L, float(dt))
    return A, B, I, sc


def hippo_forward(f, measure: str, N: int, dt: float, *, alpha: float, theta: float = 1.0, step: str = "trapezoid",
                  c0=None) -> np.ndarray:
    r"""``c (l n)`` in float64, the recurrence of :func:`oracles.hippo.online_mpmath` (module docstring):
    ``trapezoid``: ``c[0] = c0`` (default 0; LegS ``f_0 e_0``), ``(I - alpha h_{k+1} A) c_{k+1} = (I + (1 - alpha)
    h_k A) c_k + B (alpha h_{k+1} f_{k+1} + (1 - alpha) h_k f_k)`` (``h = dt`` for the LTI measures, whose ``A``,
    ``B`` carry ``s``); ``held``: ``(I - alpha h_k A) c_k = (I + (1 - alpha) h_k A) c_{k-1} + h_k B f_k`` from
    ``c_{-1} = c0``.  ``dt`` enters as a float (differentiable)."""
    f = np.asarray(f, dtype=np.float64)
    L = f.shape[0]
    out = np.zeros((L, N))
    if L == 0:
        return out
    A, B, I, sc = _steps(measure, N, float(np.asarray(dt)), alpha, theta, L, step)
    if c0 is not None:
        c = np.asarray(c0, dtype=np.float64).copy()
    else:
        c = np.zeros(N)
        if step == "trapezoid" and measure == "legs":
            c[0] = f[0]
    if step == "trapezoid":
        out[0] = c
        for k in range(L - 1):
            h0, h1 = sc[k], sc[k + 1]
            rhs = (I + (1 - alpha) * h0 * A) @ c + B * (alpha * h1 * f[k + 1] + (1 - alpha) * h0 * f[k])
            c = np.linalg.solve(I - alpha * h1 * A, rhs)
            out[k + 1] = c
    else:
        for k in range(L):
            h1 = sc[k]
            c = np.linalg.solve(I - alpha * h1 * A, (I + (1 - alpha) * h1 * A) @ c + h1 * B * f[k])
            out[k] = c
    return out


def hippo_forward_mp(f, c0, dt, measure: str, N: int, *, alpha, theta=1.0):
    r"""The trapezoid recurrence in mpmath on object arrays (``f (l,)``, ``c0 (n)`` or None, ``dt`` a 0-d object
    array): ``c (l n)`` object array (for :func:`oracles.gradients.mp_vjp`)."""
    import mpmath as mp

    from oracles.hippo import transition_mp

    L = f.shape[0]
    A, B = transition_mp(measure, N, theta)
    I = mp.eye(N)
    a = mp.mpf(alpha)
    h = dt.reshape(()).item() if isinstance(dt, np.ndarray) else dt
    sc = [1 / mp.mpf(k + 1) for k in range(L)] if measure == "legs" else [h] * L
    out = np.empty((L, N), dtype=object)
    if c0 is not None:
        c = mp.matrix([c0[i] for i in range(N)])
    else:
        c = mp.matrix(N, 1)
        if measure == "legs" and L:
            c[0] = f[0]
    if L:
        for i in range(N):
            out[0, i] = c[i]
    for k in range(L - 1):
        rhs = (I + (1 - a) * sc[k] * A) * c + B * (a * sc[k + 1] * f[k + 1] + (1 - a) * sc[k] * f[k])
        c = mp.lu_solve(I - a * sc[k + 1] * A, rhs)
        for i in range(N):
            out[k + 1, i] = c[i]
    return out


def hippo_vjp_bound(f, measure: str, N: int, dt: float, dc, *, alpha: float, theta: float = 1.0, c0=None,
                    dtype=np.float64) -> Dict[str, Bound]:
    r"""The rounding bound of the trapezoid recurrence's reverse scan in ``dtype`` (module docstring):
    ``{"f", "dt", "c0"}``."""
    f = np.asarray(f, dtype=np.float64)
    dc = np.asarray(dc, dtype=np.float64)
    L = f.shape[0]
    dt = float(np.asarray(dt))
    if L == 0:
        return {"f": Bound(np.zeros(0), "L = 0"), "dt": Bound(np.zeros(()), "L = 0"),
                "c0": Bound(np.zeros(N), "L = 0: dc0 = 0")}
    c = hippo_forward(f, measure, N, dt, alpha=alpha, theta=theta, c0=c0)
    A, B, I, sc = _steps(measure, N, dt, alpha, theta, L, "trapezoid")
    gs = gamma(3 * N + 6, dtype)
    g = [None] * L
    E = np.zeros(L)
    g[L - 1] = dc[L - 1]
    E[L - 1] = gamma(1, dtype) * np.linalg.norm(dc[L - 1])
    bf = np.zeros(L)
    Bbars = [None] * L
    for k in range(L - 2, -1, -1):
        lhs = I - alpha * sc[k + 1] * A
        R = I + (1 - alpha) * sc[k] * A
        T = np.linalg.solve(lhs.T, np.eye(N)).T @ R      # c_{k+1} = T^T... : g_k = dc_k + R^T lhs^{-T} g_{k+1}
        T = T.T
        g[k] = dc[k] + T @ g[k + 1]
        delta = gs * (np.linalg.norm(T, "fro") * np.linalg.norm(g[k + 1]) + np.linalg.norm(dc[k]))
        E[k] = delta + np.linalg.norm(T, 2) * E[k + 1]
        # df through B_bar = lhs^{-1} B (the sample weights alpha h_{k+1}, (1 - alpha) h_k)
        Bb = np.linalg.solve(lhs, B)
        Bbars[k] = Bb
        mag = np.abs(Bb) @ np.abs(g[k + 1])
        err = np.linalg.norm(Bb) * E[k + 1] + gamma(N + 3, dtype) * mag
        bf[k + 1] += alpha * sc[k + 1] * err
        bf[k] += (1 - alpha) * sc[k] * err
    out = {"f": Bound(bf + underflow_floor(3 * N + 6, dtype),
                      f"the reverse scan's errors gamma_(3N+6) carried by the adjoint propagator (2-norm), through "
                      f"B_bar (oracles.composite_grad_forward) in {np.dtype(dtype).name}")}
    if c0 is None and measure == "legs":
        out["f"] = Bound(out["f"].values + E[0], out["f"].source + "; + dc_0 through c_0 = f_0 e_0")
    out["c0"] = Bound(np.full(N, E[0]), "dc0 = g_0: the reverse scan's accumulated error E_0 (2-norm)")
    if measure == "legs":
        # dt drops out (h_k = 1/(k+1)): the exact gradient is 0, so is the backward's (no rounding enters)
        out["dt"] = Bound(np.asarray(underflow_floor(1, dtype)), "LegS on t_k = (k+1) dt: dt drops out")
    else:
        M, Nv = A, B   # (s already in A, B)
        lhs = I - alpha * dt * M
        A_bar = np.linalg.solve(lhs, I + (1 - alpha) * dt * M)
        B_bar = np.linalg.solve(lhs, dt * Nv)
        dA = np.linalg.solve(lhs, alpha * M @ A_bar + (1 - alpha) * M)
        dB = np.linalg.solve(lhs, alpha * M @ B_bar + Nv)
        tot = 0.0
        for k in range(L - 1):
            u = alpha * f[k + 1] + (1 - alpha) * f[k]
            mag = np.abs(g[k + 1]) @ (np.abs(dA) @ np.abs(c[k]) + np.abs(dB) * abs(u))
            tot += gamma(L + 4 * N + 10, dtype) * mag + E[k + 1] * (
                np.linalg.norm(dA) * np.linalg.norm(c[k]) + np.linalg.norm(dB) * abs(u))
        out["dt"] = Bound(np.asarray(tot + underflow_floor(L, dtype)),
                          "ddt = <G_A, dA_bar/ddt> + <G_B, dB_bar/ddt>: terms on absolute values x gamma_(L+4N+10) "
                          "+ the scan's error E_(k+1) through them")
    return out
