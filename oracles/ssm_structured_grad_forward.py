r"""Fast float64 forwards of the structured SSMs (S5, MEGA's EMA) for finite differences, and the magnitudes
of their adjoints on absolute values (ground truth: numpy only, no refimpl).

:mod:`oracles.gradients` differentiates these by central differences, several forward calls per input
element, so they are plain loops on small cases; each is an evaluation order of its own:

* :func:`s5_forward` -- the loop ``x_t = Lambda_bar x_{t-1} + B_bar u_t`` (and the backward direction's
  ``x^b_t = Lambda_bar x^b_{t+1} + B_bar u_t``) per state, ``y_t = f Re(C~ x_t) + D u_t``; ZOH's
  ``Lambda_bar = exp(dt Lambda)``, ``B_bar = dt expm1(z)/z B~`` (``z = dt Lambda``; the Taylor series below
  ``|z| < 1e-3``), bilinear ``(1 + z/2)/(1 - z/2)``, ``dt B~/(1 - z/2)``.
* :func:`ema_forward` -- the loop ``h_t = alpha beta x_t + (1 - alpha delta) h_{t-1}``, ``y_t = sum eta h_t``.
* :func:`dss_forward` -- the DSS kernel term by term: ``exp``: ``Re sum_n w_n phi_n exp(k p_n)`` with
  ``phi_n = dt phi1(p_n)`` (``p = dt lambda``); ``softmax``: ``Re sum_n (w_n/lambda_n) exp(k p_n - log Z_n)`` with
  the normalizer ``log Z_n = M + log sum_r exp(r p_n - M)`` (``M`` the largest real part) as a log-sum-exp.
* :func:`s4_dense_forward` -- the S4 DPLR kernel from the dense ``A = diag(Lambda) - P Q^*``: bilinear by
  ``numpy.linalg.solve``, the powers ``A_bar^k`` by ``numpy.linalg.matrix_power`` (repeated squaring), no Cauchy
  kernel, no Woodbury identity.
* :func:`s5_adjoint_magnitude`, :func:`ema_adjoint_magnitude`, :func:`dss_adjoint_magnitude`,
  :func:`s4_adjoint_magnitude` -- the adjoint recurrences run on absolute
  values (every term of every gradient summed in absolute value): the scale of a backward's rounding error.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

__all__ = ["s5_discretize", "s5_forward", "s5_adjoint_magnitude", "ema_forward", "ema_adjoint_magnitude",
           "dss_forward", "dss_adjoint_magnitude", "s4_dense_forward", "s4_adjoint_magnitude"]


def _phi1(z: np.ndarray) -> np.ndarray:
    """``(e^z - 1)/z``: ``expm1`` of the real and imaginary parts combined, the series ``sum z^k/(k+1)!`` below 1e-3."""
    z = np.asarray(z, dtype=np.complex128)
    small = np.abs(z) < 1e-3
    zs = np.where(small, 1.0, z)
    # e^z - 1 = e^a (cos b - 1 + i sin b) + (e^a - 1), written without cancellation for small a, b
    a, b = zs.real, zs.imag
    em1 = np.expm1(a) * np.cos(b) - 2.0 * np.sin(b / 2) ** 2 + 1j * np.exp(a) * np.sin(b)
    series = 1 + z / 2 + z ** 2 / 6 + z ** 3 / 24 + z ** 4 / 120
    return np.where(small, series, em1 / zs)


def s5_discretize(Lambda, B_tilde, dt, method):
    """``(Lambda_bar (n), B_bar (n h))`` in complex128, one step per state."""
    lam = np.asarray(Lambda, dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), lam.shape)
    B = np.asarray(B_tilde, dtype=np.complex128)
    z = dt * lam
    if method == "zoh":
        return np.exp(z), (dt * _phi1(z))[:, None] * B
    return (1 + z / 2) / (1 - z / 2), (dt / (1 - z / 2))[:, None] * B


def _s5_eff(inp, conv):
    bid = bool(conv["bidirectional"])
    h0 = None if (bid or not conv["use_h0"]) else inp.get("h0")
    return (inp.get("C_back") if bid else None), h0


def s5_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """``{"y" (b l h)[, "h_last" (b n)]}`` of the op ``ssm.s5`` in float64 (``h_last`` unless bidirectional)."""
    Cb, h0 = _s5_eff(inp, conv)
    Ab, Bb = s5_discretize(inp["Lambda"], inp["B_tilde"], inp["dt"], conv["method"])
    C = np.asarray(inp["C_tilde"], dtype=np.complex128)
    u = np.asarray(inp["u"], dtype=np.float64)
    b, L, h = u.shape
    f = 2.0 if conv["real_output"] == "2re" else 1.0
    y = np.zeros((b, L, h))
    x = np.zeros((b, Ab.shape[0]), dtype=np.complex128) if h0 is None else np.asarray(h0, dtype=np.complex128)
    for t in range(L):
        x = Ab * x + u[:, t] @ Bb.T
        y[:, t] = f * (x @ C.T).real
    if Cb is not None:
        Cb = np.asarray(Cb, dtype=np.complex128)
        xb = np.zeros((b, Ab.shape[0]), dtype=np.complex128)
        for t in range(L - 1, -1, -1):
            xb = Ab * xb + u[:, t] @ Bb.T
            y[:, t] += f * (xb @ Cb.T).real
    if inp.get("D") is not None:
        y = y + np.asarray(inp["D"], dtype=np.float64) * u
    return {"y": y} if Cb is not None else {"y": y, "h_last": x}


def s5_adjoint_magnitude(inp, conv, cot) -> Dict[str, np.ndarray]:
    r"""The S5 adjoint on absolute values, up to ``Lambda_bar``/``B_bar``:
    ``G_t = |Lambda_bar| G_{t+1} + f |C|^T |dy_t|``,
    ``X_t = |Lambda_bar| X_{t-1} + |B_bar| |u_t|``; returns ``{"Lambda_bar", "B_bar", "C_tilde", "D", "u", "C_back",
    "h0", "X", "G"}`` (each the sum of the absolute terms of that gradient)."""
    Cb, h0 = _s5_eff(inp, conv)
    Ab, Bb = s5_discretize(inp["Lambda"], inp["B_tilde"], inp["dt"], conv["method"])
    aA, aB = np.abs(Ab), np.abs(Bb)
    aC = np.abs(np.asarray(inp["C_tilde"]))
    u = np.abs(np.asarray(inp["u"], dtype=np.float64))
    b, L, h = u.shape
    n = Ab.shape[0]
    f = 2.0 if conv["real_output"] == "2re" else 1.0
    w = np.abs(np.asarray(cot["y"]))
    wh = cot.get("h_last")
    X = np.zeros((L + 1, b, n))
    if h0 is not None:
        X[0] = np.abs(np.asarray(h0))
    for t in range(L):
        X[t + 1] = aA * X[t] + u[:, t] @ aB.T
    G = np.zeros((b, n)) if wh is None or Cb is not None else np.abs(np.asarray(wh)).astype(float)
    Gs = np.zeros((b, L, n))
    MA = np.zeros(n)
    for t in range(L - 1, -1, -1):
        G = (aA * G if t < L - 1 else G) + f * w[:, t] @ aC
        Gs[:, t] = G
        MA += np.sum(G * X[t], axis=0)
    out = {"C_tilde": f * np.einsum("bld,lbn->dn", w, X[1:])}
    if Cb is not None:
        aCb = np.abs(np.asarray(Cb))
        Xb = np.zeros((L + 1, b, n))
        for t in range(L - 1, -1, -1):
            Xb[t] = aA * Xb[t + 1] + u[:, t] @ aB.T
        Gb = np.zeros((b, n))
        for t in range(L):
            Gb = aA * Gb + f * w[:, t] @ aCb
            Gs[:, t] += Gb
            MA += np.sum(Gb * Xb[t + 1], axis=0)
        out["C_back"] = f * np.einsum("bld,lbn->dn", w, Xb[:L])
    out["Lambda_bar"] = MA
    out["B_bar"] = np.einsum("bln,bld->nd", Gs, u)
    D = inp.get("D")
    out["u"] = np.einsum("nd,bln->bld", aB, Gs) + (0 if D is None else np.abs(np.asarray(D)) * w)
    out["D"] = np.einsum("bld,bld->d", w, u)
    if h0 is not None:
        out["h0"] = aA * G if L else G
    return out


def ema_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """``{"y" (b l d), "h_last" (b d n)}`` of the op ``ssm.ema`` in float64 (the plain loop)."""
    a, dl, be, et = (np.asarray(inp[k], dtype=np.float64) for k in ("alpha", "delta", "beta", "eta"))
    x = np.asarray(inp["x"], dtype=np.float64)
    b, L, d = x.shape
    h0 = inp.get("h0") if conv["use_h0"] else None
    h = np.zeros((b,) + a.shape) if h0 is None else np.asarray(h0, dtype=np.float64)
    y = np.zeros((b, L, d))
    for t in range(L):
        h = a * be * x[:, t, :, None] + (1.0 - a * dl) * h
        y[:, t] = np.einsum("dn,bdn->bd", et, h)
    return {"y": y, "h_last": h}


def ema_adjoint_magnitude(inp, conv, cot) -> Dict[str, np.ndarray]:
    r"""The EMA adjoint on absolute values: ``G_t = |q| G_{t+1} + |eta| |dy_t|``,
    ``H_t = |alpha beta| |x_t| + |q| H_{t-1}``;
    ``{"x", "alpha", "delta", "beta", "eta", "h0"}``."""
    a, dl, be, et = (np.abs(np.asarray(inp[k], dtype=np.float64)) for k in ("alpha", "delta", "beta", "eta"))
    x = np.abs(np.asarray(inp["x"], dtype=np.float64))
    b, L, d = x.shape
    q = np.abs(1.0 - a * dl) + a * dl  # the rounded q's terms in absolute value
    h0 = inp.get("h0") if conv["use_h0"] else None
    H = np.zeros((L + 1, b) + a.shape)
    if h0 is not None:
        H[0] = np.abs(np.asarray(h0))
    for t in range(L):
        H[t + 1] = a * be * x[:, t, :, None] + q * H[t]
    w = np.abs(np.asarray(cot["y"]))
    wh = cot.get("h_last")
    G = np.zeros((b,) + a.shape) if wh is None else np.abs(np.asarray(wh)).astype(float)
    dx = np.zeros((b, L, d))
    MQ = np.zeros(a.shape)
    GX = np.zeros(a.shape)
    ME = np.zeros(a.shape)
    for t in range(L - 1, -1, -1):
        G = (q * G if t < L - 1 else G) + et * w[:, t, :, None]
        dx[:, t] = np.sum(a * be * G, axis=-1)
        MQ += np.sum(G * H[t], axis=0)
        GX += np.sum(G * x[:, t, :, None], axis=0)
        ME += np.sum(w[:, t, :, None] * H[t + 1], axis=0)
    out = {"x": dx, "alpha": be * GX + dl * MQ, "delta": a * MQ, "beta": a * GX, "eta": ME}
    if h0 is not None:
        out["h0"] = q * G if L else G
    return out


def dss_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """``{"K" (h l)}`` of the op ``ssm.dss_kernel`` in float64 (``conv["variant"]``: ``exp`` or ``softmax``)."""
    lam = np.asarray(inp["Lambda"], dtype=np.complex128)
    W = np.asarray(inp["W"], dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])[:, None]
    L = int(np.asarray(inp["L"]))
    p = dt * lam
    K = np.zeros((lam.shape[0], L))
    for k in range(L):
        if conv["variant"] == "exp":
            K[:, k] = np.sum(W * dt * _phi1(p) * np.exp(k * p), axis=-1).real
        else:
            r = np.arange(L)[None, None, :] * p[..., None]
            M = np.max(r.real, axis=-1)
            logZ = M + np.log(np.sum(np.exp(r - M[..., None]), axis=-1))
            K[:, k] = np.sum(W / lam * np.exp(k * p - logZ), axis=-1).real
    return {"K": K}


def dss_adjoint_magnitude(inp, conv, cot) -> Dict[str, np.ndarray]:
    r"""The DSS kernel's adjoint on absolute values: the ``dK``-weighted sums ``sum_k |dK_k| |e^{k p}|`` (or of
    ``|S_k|``) and every term of ``dw``, ``dlambda``, ``ddt`` in absolute value; ``{"Lambda", "W", "dt"}``."""
    lam = np.asarray(inp["Lambda"], dtype=np.complex128)
    W = np.abs(np.asarray(inp["W"]))
    dt0 = np.asarray(inp["dt"], dtype=np.float64)
    dt = np.broadcast_to(dt0, lam.shape[:1])[:, None]
    L = int(np.asarray(inp["L"]))
    w = np.abs(np.asarray(cot["K"], dtype=np.float64))
    k = np.arange(L)
    p = dt * lam
    al = np.abs(lam)
    if conv["variant"] == "exp":
        E = np.abs(np.exp(p[..., None] * k))
        V = np.einsum("dk,dnk->dn", w, E)
        Vk = np.einsum("dk,dnk->dn", w * k, E)
        phi = np.abs(dt * _phi1(p))
        # |phi1'(p)|'s evaluation: its series' terms on |p| (|p| < 1), else (|e^p| + |phi1(p)|)/|p|
        ap = np.abs(p)
        series = sum((j + 1) * ap ** j / math.factorial(j + 2) for j in range(20))
        dp1 = np.where(ap < 1, series, (np.abs(np.exp(p)) + np.abs(_phi1(p))) / np.maximum(ap, 1e-300))
        out = {"W": phi * V, "Lambda": W * (dt ** 2 * dp1 * V + phi * dt * Vk),
               "dt": np.sum(W * (np.abs(np.exp(p)) * V + phi * al * Vk), axis=-1)}
    else:
        if L:
            r = k[None, None, :] * p[..., None]
            S = np.abs(np.exp(r - np.max(r.real, axis=-1, keepdims=True)))
            S = S / np.abs(np.sum(np.exp(r - np.max(r.real, axis=-1, keepdims=True)), axis=-1, keepdims=True))
        else:
            S = np.zeros(lam.shape + (0,))
        m = np.einsum("dnk,k->dn", S, k)
        U = np.einsum("dk,dnk->dn", w, S)
        Uk = np.einsum("dk,dnk->dn", w * k, S)
        out = {"W": U / al, "Lambda": W * (U / al ** 2 + dt / al * (Uk + m * U)),
               "dt": np.sum(W * (Uk + m * U), axis=-1)}
    if np.ndim(dt0) == 0:
        out["dt"] = np.asarray(np.sum(out["dt"]))
    return out


def _s4_dense(inp):
    lam = np.asarray(inp["Lambda"], dtype=np.complex128)
    P = np.asarray(inp["P"], dtype=np.complex128)
    Q = np.asarray(inp["Q"], dtype=np.complex128)
    h, n = lam.shape
    A = np.zeros((h, n, n), dtype=np.complex128)
    for c in range(h):
        A[c] = np.diag(lam[c]) - P[c] @ np.conj(Q[c]).T
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), (h,))
    return A, dt


def s4_dense_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """``{"K" (h l)}`` of the op ``ssm.s4_kernel`` (``method="bilinear"``) in float64, its ``output``'s part."""
    A, dt = _s4_dense(inp)
    B = np.asarray(inp["B"], dtype=np.complex128)
    C = np.asarray(inp["C"], dtype=np.complex128)
    h, n = B.shape
    L = int(np.asarray(inp["L"]))
    K = np.zeros((h, L), dtype=np.complex128)
    for c in range(h):
        M = np.eye(n) - 0.5 * dt[c] * A[c]
        Ab = np.linalg.solve(M, np.eye(n) + 0.5 * dt[c] * A[c])
        Bb = np.linalg.solve(M, dt[c] * B[c])
        for k in range(L):
            K[c, k] = C[c] @ (np.linalg.matrix_power(Ab, k) @ Bb)
    out = conv["output"]
    return {"K": K if out == "complex" else (K.real if out == "re" else 2.0 * K.real)}


def s4_adjoint_magnitude(inp, conv, cot) -> Dict[str, np.ndarray]:
    r"""The S4 dense view's adjoint on absolute values: the reverse scan ``G_k = |A_bar|^T G_{k+1} + |C| |dKc_k|`` and
    the states ``|A_bar|^k |B_bar|``, then the bilinear discretization's adjoint with ``|M^{-1}|`` for every solve
    (``M = I - dt/2 A``) and ``A = diag(Lambda) - P Q^*``; ``{"Lambda", "P", "Q", "B", "C", "dt"}`` and ``"skeel"``
    (the largest Skeel condition number ``|| |M^{-1}| |M| ||_inf`` over the channels)."""
    A, dt = _s4_dense(inp)
    B = np.asarray(inp["B"], dtype=np.complex128)
    aC = np.abs(np.asarray(inp["C"]))
    aP, aQ = np.abs(np.asarray(inp["P"])), np.abs(np.asarray(inp["Q"]))
    h, n = B.shape
    L = int(np.asarray(inp["L"]))
    w = np.abs(np.asarray(cot["K"])) * (2.0 if conv["output"] == "2re" else 1.0)
    out = {k: np.zeros(np.shape(inp[k])) for k in ("Lambda", "P", "Q", "B", "C")}
    mdt = np.zeros(h)
    skeel = 0.0
    for c in range(h):
        M = np.eye(n) - 0.5 * dt[c] * A[c]
        N = np.eye(n) + 0.5 * dt[c] * A[c]
        X = np.linalg.inv(M)
        aX = np.abs(X)
        skeel = max(skeel, float(np.max(np.sum(aX @ np.abs(M), axis=1))))
        aAb = aX @ np.abs(N)
        aBb = aX @ np.abs(dt[c] * B[c])
        S = np.zeros((L, n))
        s = aBb
        for k in range(L):
            S[k] = s
            s = aAb @ s
        G = np.zeros(n)
        MAb = np.zeros((n, n))
        for k in range(L - 1, -1, -1):
            G = (aAb.T @ G if k < L - 1 else G) + aC[c] * w[c, k]
            if k >= 1:
                MAb += np.outer(G, S[k - 1])
        MBb = G if L else np.zeros(n)
        out["C"][c] = w[c] @ S if L else 0.0
        MN = aX.T @ MAb
        MdtB = aX.T @ MBb
        MX = MAb @ np.abs(N).T + np.outer(MBb, np.abs(dt[c] * B[c]))
        MM = aX.T @ MX @ aX.T
        MA = 0.5 * dt[c] * (MN + MM)
        out["Lambda"][c] = np.diag(MA)
        out["P"][c] = MA @ aQ[c]
        out["Q"][c] = MA.T @ aP[c]
        out["B"][c] = dt[c] * MdtB
        mdt[c] = 0.5 * np.sum((MN + MM) * np.abs(A[c])) + np.sum(MdtB * np.abs(B[c]))
    out["dt"] = mdt if np.ndim(inp["dt"]) else np.asarray(np.sum(mdt))
    out["skeel"] = skeel
    return out
