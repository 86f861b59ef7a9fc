r"""Float64 ground truth for the gradients of the (gated) delta rule: a plain forward loop (fast enough for
elementwise finite differences) and the magnitude of the adjoint recurrence on absolute values (for the
derived rounding bounds of a backward).  Ground truth: numpy only, never refimpl.

Forward, written in the **transition-matrix form** (not refimpl's retrieve/update spelling)::

    k <- knorm(k),  q <- scale qnorm(q)          (none, "sum": x / sum x, "l2": x / |x|)
    M_t = alpha_t (I - beta_t k_t k_t^T)         (n n)
    S_t = S_{t-1} M_t + beta_t v_t k_t^T         (state V x K, (p n); S_{-1} = S0, zero when absent)
    o_t = S_t q_t

Layouts: ``q, k (b l h n)``, ``v (b l h p)``, ``beta, alpha (b l h)``, ``S0 (b h p n)``; returns
``{"o": (b l h p), "S_last": (b h p n)}``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["delta_rule_float64", "delta_rule_mp", "delta_rule_adjoint_magnitude", "normalized"]


def normalized(x, mode):
    """``x / sum(x)`` (``"sum"``), ``x / |x|_2`` (``"l2"``) along the last axis, or ``x`` (None / ``"none"``)."""
    x = np.asarray(x, dtype=np.float64)
    if mode in (None, "none"):
        return x
    if mode == "sum":
        return x / x.sum(axis=-1, keepdims=True)
    if mode == "l2":
        return x / np.sqrt((x * x).sum(axis=-1, keepdims=True))
    raise ValueError(f"mode: expected None, 'sum' or 'l2', got {mode!r}")


def delta_rule_float64(q, k, v, beta, alpha=None, S0=None, key_norm=None, query_norm=None, scale: float = 1.0):
    """The forward of the module docstring in float64, one explicit transition matrix per step."""
    k = normalized(k, key_norm)
    q = normalized(q, query_norm) * float(scale)
    v = np.asarray(v, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    b, l, h, n = k.shape
    p = v.shape[3]
    alpha = np.ones((b, l, h)) if alpha is None else np.asarray(alpha, dtype=np.float64)
    o = np.zeros((b, l, h, p))
    S_last = np.zeros((b, h, p, n))
    eye = np.eye(n)
    for bi in range(b):
        for hi in range(h):
            S = np.zeros((p, n)) if S0 is None else np.array(S0[bi, hi], dtype=np.float64)
            for t in range(l):
                kt = k[bi, t, hi]
                # M_t = alpha_t (I - beta_t k_t k_t^T)
                M = alpha[bi, t, hi] * (eye - beta[bi, t, hi] * np.outer(kt, kt))
                # S_t = S_{t-1} M_t + beta_t v_t k_t^T
                S = S @ M + beta[bi, t, hi] * np.outer(v[bi, t, hi], kt)
                o[bi, t, hi] = S @ q[bi, t, hi]
            S_last[bi, hi] = S
    return {"o": o, "S_last": S_last}


def delta_rule_adjoint_magnitude(q, k, v, beta, alpha=None, S0=None, do=None, dS_last=None, key_norm=None,
                                 query_norm=None, scale: float = 1.0, chunk=None):
    r"""The reverse-mode adjoint recurrence of the delta rule run on absolute values: per input, the magnitude
    ``M`` of every term that a backward sums into that gradient (the recipe of :mod:`oracles.tolerance`: the
    rounding error of a computation is at most ``gamma_depth`` times the same computation on ``|inputs|``).

    With ``|.|`` elementwise, forward ``|S_t| <= alpha_t |S_{t-1}| (I + beta_t |k_t||k_t|^T) + beta_t |v_t||k_t|^T``
    and reverse ``|dS_t| += |do_t||q_t|^T``, ``|dS_{t-1}| = alpha_t |dS_t| (I + beta_t |k_t||k_t|^T)``; each
    gradient's magnitude is its adjoint formula with every difference replaced by a sum of absolute values, then
    carried through the normalization's Jacobian on absolute values (``(|xh| |xh|^T + I) / den`` for l2,
    ``(1 |xh|^T + I) / |den|`` for sum).  Returns ``{"q", "k", "v", "beta", "alpha", "S0"}`` magnitudes.

    ``chunk``: the decay's magnitude of a chunked backward, which forms ``dlog alpha_i = sum_{t>=i} dg_t`` (a
    reverse cumulative sum within the chunk) from per-position terms ``dg_t = dlog alpha_t - dlog alpha_{t+1}``:
    the terms it sums are at most ``|dlog alpha_t| + |dlog alpha_{t+1}|`` each, so
    ``M_alpha_i = (alpha_i M_i + 2 sum_{t>i, same chunk} alpha_t M_t) / alpha_i`` (``M`` the recurrent magnitude,
    ``dlog alpha = alpha dalpha``).
    """
    kh = np.abs(normalized(k, key_norm))
    qn = normalized(q, query_norm)
    qh = np.abs(qn * float(scale))
    v = np.abs(np.asarray(v, dtype=np.float64))
    beta = np.abs(np.asarray(beta, dtype=np.float64))
    b, l, h, n = kh.shape
    p = v.shape[3]
    alpha = np.ones((b, l, h)) if alpha is None else np.abs(np.asarray(alpha, dtype=np.float64))
    do = np.zeros((b, l, h, p)) if do is None else np.abs(np.asarray(do, dtype=np.float64))
    m = {name: np.zeros(shape) for name, shape in (("q", (b, l, h, n)), ("k", (b, l, h, n)), ("v", (b, l, h, p)),
                                                   ("beta", (b, l, h)), ("alpha", (b, l, h)), ("S0", (b, h, p, n)))}
    for bi in range(b):
        for hi in range(h):
            S = np.zeros((p, n)) if S0 is None else np.abs(np.array(S0[bi, hi], dtype=np.float64))
            Sp = []
            for t in range(l):
                Sp.append(S)
                kt = kh[bi, t, hi]
                A = alpha[bi, t, hi] * S
                r = v[bi, t, hi] + A @ kt
                S = A + A @ np.outer(kt, kt) * beta[bi, t, hi] + beta[bi, t, hi] * np.outer(r, kt)
            dS = np.zeros((p, n)) if dS_last is None else np.abs(np.asarray(dS_last[bi, hi], dtype=np.float64))
            for t in range(l - 1, -1, -1):
                kt, qt, bt, at = kh[bi, t, hi], qh[bi, t, hi], beta[bi, t, hi], alpha[bi, t, hi]
                A = at * Sp[t]
                r = v[bi, t, hi] + A @ kt
                St = A + bt * np.outer(r, kt)
                dS = dS + np.outer(do[bi, t, hi], qt)
                m["q"][bi, t, hi] = St.T @ do[bi, t, hi]
                dSk = dS @ kt
                m["v"][bi, t, hi] = bt * dSk
                m["beta"][bi, t, hi] = dSk @ r
                m["k"][bi, t, hi] = bt * (dS.T @ r + A.T @ dSk)
                dA = dS + bt * np.outer(dSk, kt)
                m["alpha"][bi, t, hi] = np.sum(dA * Sp[t])
                dS = at * dA
            m["S0"][bi, hi] = dS
    for name, x, mode, sc in (("q", q, query_norm, float(scale)), ("k", k, key_norm, 1.0)):
        if mode in (None, "none"):
            m[name] = m[name] * abs(sc)
            continue
        x = np.asarray(x, dtype=np.float64)
        xh = np.abs(normalized(x, mode))
        den = np.sqrt((x * x).sum(-1, keepdims=True)) if mode == "l2" else np.abs(x.sum(-1, keepdims=True))
        d = m[name] * abs(sc)
        dot = np.sum(xh * d, axis=-1, keepdims=True)
        m[name] = (d + (xh * dot if mode == "l2" else dot)) / den
    if chunk is not None and l:
        al = alpha * m["alpha"]  # the magnitude of dlog alpha
        out = np.empty_like(al)
        for t0 in range(0, l, int(chunk)):
            blk = al[:, t0:t0 + int(chunk)]
            tail = np.cumsum(blk[:, ::-1], axis=1)[:, ::-1] - blk  # sum_{t>i} within the chunk
            out[:, t0:t0 + int(chunk)] = blk + 2 * tail
        m["alpha"] = out / alpha
    return m


def delta_rule_mp(inputs, key_norm=None, query_norm=None, scale=1):
    """The forward of the module docstring in mpmath, on ``{name: numpy object array of mpf}`` (``alpha``, ``S0``
    optional); returns ``{"o", "S_last"}`` as object arrays (for :func:`oracles.gradients.mp_vjp`)."""
    import mpmath as mp

    def norm(x, mode):
        if mode in (None, "none"):
            return x
        out = np.empty(x.shape, dtype=object)
        for idx in np.ndindex(x.shape[:-1]):
            row = list(x[idx])
            den = mp.fsum(row) if mode == "sum" else mp.sqrt(mp.fsum(r * r for r in row))
            out[idx] = [r / den for r in row]
        return out

    k = norm(inputs["k"], key_norm)
    q = norm(inputs["q"], query_norm)
    v, beta = inputs["v"], inputs["beta"]
    alpha, S0 = inputs.get("alpha"), inputs.get("S0")
    b, l, h, n = k.shape
    p = v.shape[3]
    sc = mp.mpf(scale)
    o = np.empty((b, l, h, p), dtype=object)
    S_last = np.empty((b, h, p, n), dtype=object)
    for bi in range(b):
        for hi in range(h):
            S = mp.matrix(p, n) if S0 is None else mp.matrix([[S0[bi, hi, i, j] for j in range(n)] for i in range(p)])
            for t in range(l):
                kt = mp.matrix([k[bi, t, hi, j] for j in range(n)])
                a = mp.mpf(1) if alpha is None else alpha[bi, t, hi]
                # M_t = alpha_t (I - beta_t k_t k_t^T); S_t = S_{t-1} M_t + beta_t v_t k_t^T
                M = a * (mp.eye(n) - beta[bi, t, hi] * (kt * kt.T))
                vt = mp.matrix([v[bi, t, hi, i] for i in range(p)])
                S = S * M + beta[bi, t, hi] * (vt * kt.T)
                qt = mp.matrix([sc * q[bi, t, hi, j] for j in range(n)])
                ot = S * qt
                for i in range(p):
                    o[bi, t, hi, i] = ot[i]
            for i in range(p):
                for j in range(n):
                    S_last[bi, hi, i, j] = S[i, j]
    return {"o": o, "S_last": S_last}
