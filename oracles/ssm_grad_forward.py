r"""Fast float64 forwards of the SSM core for finite differences (ground truth: numpy/scipy only, no refimpl).

:mod:`oracles.gradients` differentiates these by central differences, several forward calls per input
element, so they must be cheap on the small gradient cases; each is an evaluation order of its own, sharing
no code with :mod:`refimpl`:

* :func:`discretize_forward` -- dense ZOH and Mamba by the Van Loan block exponential
  ``exp(dt [[A, B], [0, 0]]) = [[A_bar, B_bar], [0, I]]`` (scipy's ``expm`` of the whole block: no ``phi1``,
  no separate ``B_bar`` formula); diagonal: that block per state in closed form (``expm1(z)/z``, a series below
  1e-3); the gbt family from its closed form by ``numpy.linalg.solve``.
* :func:`lti_forward` -- the plain loop ``h_t = A_bar_t h_{t-1} + B_bar_t x_t``, ``y_t = C h_t + D x_t`` per
  channel with ``@`` products (and the op's ``real_output``).
* :func:`s4d_forward` -- ``K_k = sum_n C_n B_bar_n exp(k dt lambda_n)`` with the powers as exponentials of
  ``k dt lambda`` (not repeated products) and ``B_bar = dt (e^z - 1)/z B`` (``expm1``; a series below 1e-3).
* :func:`lru_forward` -- the LRU's loop from its parameters (``lambda = exp(-exp(nu_log) + i exp(theta_log))``).
* :func:`lti_adjoint_magnitude` -- ``|J|^T |w|`` of the LTI system on absolute values (every term of the
  adjoint summed in absolute value): the scale of a backward's rounding error, as the forward bounds use the
  recurrence on ``|A|, |B|, ...``.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import scipy.linalg

__all__ = ["discretize_forward", "lti_forward", "s4d_forward", "lru_forward", "lti_adjoint_magnitude", "GBT_ALPHA"]

GBT_ALPHA = {"bilinear": 0.5, "forward_euler": 0.0, "backward_euler": 1.0}


def _dense(A: np.ndarray, diagonal: bool) -> np.ndarray:
    if not diagonal:
        return A
    out = np.zeros(A.shape + (A.shape[-1],), dtype=A.dtype)
    i = np.arange(A.shape[-1])
    out[..., i, i] = A
    return out


def _real_if(x: np.ndarray, *like) -> np.ndarray:
    return x if any(np.iscomplexobj(a) for a in like if a is not None) else x.real.copy()


def discretize_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""``{"A_bar", "B_bar"[, "C_d", "D_d"]}`` of ``A (h n n | h n)``, ``B (h n m)``, ``dt`` (a scalar) in float64.

    ``conv``: ``method``, ``alpha`` (gbt), ``diagonal``, ``output`` (``s4``: ``C_d = C``, ``D_d = D``;
    ``shifted``: scipy's ``C_d = C M^{-1}``, ``D_d = D + alpha C B_bar`` for the gbt family).
    """
    A = np.asarray(inp["A"])
    B = np.asarray(inp["B"])
    dt = float(np.asarray(inp["dt"]).real) if np.ndim(inp["dt"]) == 0 else np.asarray(inp["dt"])
    C, D = inp.get("C"), inp.get("D")
    method, diag = conv["method"], bool(conv["diagonal"])
    h, n, m = B.shape
    Ad = _dense(A, diag)
    dtype = np.result_type(A, B, np.float64)
    Ab = np.zeros((h, n, n), dtype=dtype)
    Bb = np.zeros((h, n, m), dtype=dtype)
    Cd = None if C is None else np.array(C, dtype=np.result_type(C, dtype))
    Dd = None if D is None else np.array(D, dtype=np.result_type(D, C if C is not None else D, dtype))
    dtc = np.broadcast_to(np.asarray(dt, dtype=np.float64), (h,))
    if method in ("zoh", "mamba") and diag:
        # diagonal: the 2 x 2 Van Loan block per state, exp(dt [[a, 1], [0, 0]]) = [[e^z, dt (e^z - 1)/z], [0, 1]]
        # (z = dt a), in closed form: expm1(z)/z, its Taylor series to z^7 for |z| < 1e-3 (scipy's expm of a
        # triangular block takes a slow exact path)
        z = dtc[:, None] * A
        zs = np.where(np.abs(z) < 1e-3, z, 0)
        zb = np.where(np.abs(z) < 1e-3, 1.0, z)
        phi = np.where(np.abs(z) < 1e-3, sum(zs ** j / math.factorial(j + 1) for j in range(8)), np.expm1(zb) / zb)
        out = {"A_bar": np.exp(z).astype(dtype, copy=False),
               "B_bar": ((dtc[:, None] * phi)[..., None] * B if method == "zoh" else dtc[:, None, None] * B).astype(
                   dtype, copy=False)}
        if Cd is not None:
            out["C_d"] = Cd
        if Dd is not None:
            out["D_d"] = Dd
        return out
    for c in range(h):
        if method in ("zoh", "mamba"):
            blk = np.zeros((n + m, n + m), dtype=dtype)
            blk[:n, :n] = Ad[c]
            blk[:n, n:] = B[c]
            # exp(dt [[A, B], [0, 0]]) = [[A_bar, int_0^dt e^{As} ds B], [0, I]]
            E = scipy.linalg.expm(dtc[c] * blk)
            Ab[c] = E[:n, :n]
            # mamba: B_bar = dt B (Euler for B)
            Bb[c] = E[:n, n:] if method == "zoh" else dtc[c] * B[c]
        else:
            a = float(conv["alpha"]) if method == "gbt" else GBT_ALPHA[method]
            M = np.eye(n) - a * dtc[c] * Ad[c]
            # A_bar = M^{-1}(I + (1 - alpha) dt A);  B_bar = M^{-1} dt B
            Ab[c] = np.linalg.solve(M, np.eye(n) + (1 - a) * dtc[c] * Ad[c])
            Bb[c] = np.linalg.solve(M, dtc[c] * B[c])
            if conv.get("output", "s4") == "shifted":
                if Cd is not None:
                    # C_d = C M^{-1}
                    Cd = Cd.astype(np.result_type(Cd, M), copy=False)
                    Cd[c] = np.linalg.solve(M.T, np.asarray(C)[c].T).T
                if Dd is not None:
                    # D_d = D + alpha C B_bar
                    Dd = Dd.astype(np.result_type(Dd, Bb), copy=False)
                    Dd[c] = np.asarray(D)[c] + a * np.asarray(C)[c] @ Bb[c]
    out = {"A_bar": np.diagonal(Ab, axis1=-2, axis2=-1).copy() if diag else Ab, "B_bar": Bb}
    if Cd is not None:
        out["C_d"] = Cd
    if Dd is not None:
        out["D_d"] = Dd
    return out


def lti_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""``{"y" (b l h p), "h_last" (b h n)}`` of the op ``ssm.lti``'s canonical inputs, by the plain loop.

    ``A_bar (h n n | h n | l h n n)``, ``B_bar (h n m | l h n m)``, ``C (h p n)``, ``D (h p m)`` or None,
    ``x (b l h m)``, ``h0 (b h n)`` or None.  ``conv``: ``diagonal``, ``real_output`` (complex, re, 2re) and
    ``use_h0`` (False: start from zero).
    """
    diag = bool(conv.get("diagonal", False))
    A = np.asarray(inp["A_bar"])
    Bm = np.asarray(inp["B_bar"])
    C = np.asarray(inp["C"])
    D = inp.get("D")
    x = np.asarray(inp["x"])
    h0 = inp.get("h0") if conv.get("use_h0", True) else None
    b, l, h, m = x.shape
    tv = A.ndim == (2 if diag else 3) + 1
    tvB = Bm.ndim == 4
    n = A.shape[-1]
    p = C.shape[1]
    dtype = np.result_type(A, Bm, C, x, np.float64, *([] if D is None else [D]), *([] if h0 is None else [h0]))
    y = np.zeros((b, l, h, p), dtype=dtype)
    hs = np.zeros((b, h, n), dtype=dtype) if h0 is None else np.array(h0, dtype=dtype)
    for c in range(h):
        s = hs[:, c, :].copy()  # (b n)
        for t in range(l):
            a = A[t, c] if tv else A[c]
            bm = Bm[t, c] if tvB else Bm[c]
            s = (s * a[None, :] if diag else s @ a.T) + x[:, t, c, :] @ bm.T
            y[:, t, c, :] = s @ C[c].T
        hs[:, c, :] = s
    ro = conv.get("real_output", "complex")
    if ro == "2re":
        y = 2.0 * y.real
    if D is not None:
        y = y + np.einsum("hpm,blhm->blhp", np.asarray(D), x)
    if ro in ("re", "2re") or not np.iscomplexobj(y):
        y = y.real.copy()
    return {"y": y, "h_last": hs}


def lti_adjoint_magnitude(inp: Dict[str, Any], conv: Dict[str, Any], w: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""``|J|^T |w|`` on absolute values for each of ``A_bar, B_bar, C, D, x, h0`` (those given).

    The LTI system is a polynomial in its inputs, so its Jacobian at the absolute values of the inputs,
    applied to ``|w|``, sums every term of every gradient in absolute value: the magnitude ``M`` of a
    componentwise rounding bound of any evaluation order of the adjoint.  Computed by central differences
    would cost ``O(size)`` forwards; here one reverse pass on absolute values (``G_t = |A_{t+1}|^T G_{t+1} +
    |C|^T |w_t|``) gives them all.
    """
    diag = bool(conv.get("diagonal", False))
    A = np.abs(np.asarray(inp["A_bar"]))
    Bm = np.abs(np.asarray(inp["B_bar"]))
    C = np.abs(np.asarray(inp["C"]))
    D = None if inp.get("D") is None else np.abs(np.asarray(inp["D"]))
    x = np.abs(np.asarray(inp["x"]))
    h0 = inp.get("h0") if conv.get("use_h0", True) else None
    h0 = None if h0 is None else np.abs(np.asarray(h0))
    b, l, h, m = x.shape
    tv = A.ndim == (2 if diag else 3) + 1
    tvB = Bm.ndim == 4
    n = A.shape[-1]
    scale = 2.0 if conv.get("real_output", "complex") == "2re" else 1.0
    wy = scale * np.abs(np.asarray(w["y"])) if "y" in w and w["y"] is not None else np.zeros((b, l, h, C.shape[1]))
    wh = np.abs(np.asarray(w["h_last"])) if w.get("h_last") is not None else np.zeros((b, h, n))
    hs = np.zeros((l + 1, b, h, n))
    if h0 is not None:
        hs[0] = h0
    for t in range(l):
        a = A[t] if tv else A
        bm = Bm[t] if tvB else Bm
        hs[t + 1] = (a[None] * hs[t] if diag else np.einsum("hij,bhj->bhi", a, hs[t])) + \
            np.einsum("hnm,bhm->bhn", bm, x[:, t])
    gA = np.zeros(A.shape)
    gB = np.zeros(Bm.shape)
    gC = np.zeros(C.shape)
    gx = np.zeros(x.shape)
    G = wh.copy()
    for t in range(l - 1, -1, -1):
        if t < l - 1:
            a = A[t + 1] if tv else A
            G = a[None] * G if diag else np.einsum("hji,bhj->bhi", a, G)
        G = G + np.einsum("hpn,bhp->bhn", C, wy[:, t])
        gC += np.einsum("bhp,bhn->hpn", wy[:, t], hs[t + 1])
        ga = np.einsum("bhn,bhn->hn", G, hs[t]) if diag else np.einsum("bhi,bhj->hij", G, hs[t])
        gb = np.einsum("bhn,bhm->hnm", G, x[:, t])
        if tv:
            gA[t] = ga
        else:
            gA += ga
        if tvB:
            gB[t] = gb
        else:
            gB += gb
        gx[:, t] = np.einsum("hnm,bhn->bhm", Bm[t] if tvB else Bm, G)
    out = {"A_bar": gA, "B_bar": gB, "C": gC, "x": gx}
    wyD = np.abs(np.asarray(w["y"])) if "y" in w and w["y"] is not None else wy
    if D is not None:
        out["D"] = np.einsum("blhp,blhm->hpm", wyD, x)
        gx += np.einsum("hpm,blhp->blhm", D, wyD)
    if h0 is not None:
        a0 = (A[0] if tv else A) if l else None
        out["h0"] = G if l == 0 else (a0[None] * G if diag else np.einsum("hji,bhj->bhi", a0, G))
    return out


def s4d_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""``{"K" (h l)}``: ``K_k = sum_n C_n B_bar_n exp(k dt lambda_n)`` (zoh; bilinear: ``A_bar_n^k`` as
    ``exp(k log A_bar_n)``), then the named real part (``2re``, ``re``, ``complex``)."""
    lam = np.asarray(inp["Lambda"], dtype=np.complex128)
    B = np.asarray(inp["B"], dtype=np.complex128)
    C = np.asarray(inp["C"], dtype=np.complex128)
    dt = np.broadcast_to(np.asarray(inp["dt"], dtype=np.float64), lam.shape[:1])[:, None]
    L = int(np.asarray(inp["L"]))
    k = np.arange(L)
    if conv["method"] == "zoh":
        # B_bar = (e^z - 1)/z dt B, z = dt lambda: expm1(z)/z, and its Taylor series sum_k z^k/(k+1)! (to z^7,
        # truncation < |z|^8/9! < 3e-30) for |z| < 1e-3
        z = dt * lam
        zs = np.where(np.abs(z) < 1e-3, z, 0)
        series = sum(zs ** j / math.factorial(j + 1) for j in range(8))
        zb = np.where(np.abs(z) < 1e-3, 1.0, z)
        Bb = dt * np.where(np.abs(z) < 1e-3, series, np.expm1(zb) / zb) * B
        logA = dt * lam
    else:
        den = 1.0 - 0.5 * dt * lam
        Bb = dt * B / den
        logA = np.log((1.0 + 0.5 * dt * lam) / den)
    # K_k = sum_n C_n B_bar_n exp(k log A_bar_n)
    K = np.einsum("hn,hnk->hk", C * Bb, np.exp(logA[..., None] * k))
    out = conv["output"]
    if out == "2re":
        K = 2.0 * K.real
    elif out == "re":
        K = K.real.copy()
    return {"K": K}



def lru_forward(inp: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""``{"y" (b l h)}`` of the op ``ssm.lru``: ``lambda = exp(-exp(nu_log) + i exp(theta_log))``,
    ``x_t = lambda x_{t-1} + exp(gamma_log) B u_t`` (a plain loop from zero), ``y_t = Re(C x_t) + D u_t``
    (``2 Re`` under ``real_output="2re"``)."""
    nu, th, gl = (np.asarray(inp[k], dtype=np.float64) for k in ("nu_log", "theta_log", "gamma_log"))
    lam = np.exp(-np.exp(nu) + 1j * np.exp(th))
    B = np.asarray(inp["B"], dtype=np.complex128) * np.exp(gl)[:, None]
    C = np.asarray(inp["C"], dtype=np.complex128)
    D = np.asarray(inp["D"], dtype=np.float64)
    u = np.asarray(inp["u"], dtype=np.float64)
    b, l, h = u.shape
    x = np.zeros((b, lam.shape[0]), dtype=np.complex128)
    y = np.zeros((b, l, h))
    f = 2.0 if conv.get("real_output", "re") == "2re" else 1.0
    for t in range(l):
        x = lam * x + u[:, t] @ B.T
        y[:, t] = f * (x @ C.T).real + D * u[:, t]
    return {"y": y}
