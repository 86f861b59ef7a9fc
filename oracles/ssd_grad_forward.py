r"""Ground truth for the gradients of Mamba-2's SSD: an mpmath forward for :func:`oracles.gradients.mp_vjp` and the
absolute-value majorant that scales the rounding bound of a backward pass.

Nothing here imports :mod:`refimpl` or knows any backward code.  The float64 forward the finite differences run
is :func:`oracles.selective.ssd_solve` (one banded solve per head: fast enough for elementwise differences on
small cases); this module adds:

* :func:`ssd_forward_mp` -- the SSD recurrence scalar by scalar in mpmath on object arrays of ``mpf`` (the
  input/output protocol of :func:`oracles.gradients.mp_vjp`); tiny cases only.
* :func:`ssd_vjp_magnitude` -- for each differentiable input, the sum of the absolute values of the terms a
  backward pass adds up for that gradient (the recurrence run on ``|x|, |B|, |C|, |D|, |S_{-1}|, |dy|,
  |d_final|`` with the decays ``a_t = exp(dt_t A) in (0, 1]`` as they are).  A rounding-error analysis of any
  evaluation order of the VJP (the reverse scan, the masked matrix, the chunked form) is bounded by
  ``gamma_depth * (this majorant)``; :func:`ssd_vjp_depth` counts the depth.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from oracles.tolerance import TRANSCENDENTAL_U, Bound, componentwise_bound

SOFTPLUS_THRESHOLD = 20.0
GRAD_INPUTS = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")


def _sigmoid(v: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-v))`` without overflow."""
    v = np.asarray(v, dtype=np.float64)
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _heads(X, h: int) -> np.ndarray:
    """``(b l g n)`` -> ``(b l h n)``: head ``j`` reads group ``floor(j g / h)``."""
    X = np.asarray(X, dtype=np.float64)
    return X[:, :, (np.arange(h) * X.shape[2]) // h]


def _resets(seq_idx, b: int, l: int) -> np.ndarray:
    r = np.zeros((b, l), dtype=bool)
    if seq_idx is not None and l > 1:
        s = np.asarray(seq_idx)
        r[:, 1:] = s[:, 1:] != s[:, :-1]
    return r


def ssd_forward_mp(inputs: Dict[str, Any], conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The SSD recurrence in mpmath: ``inputs`` canonical (``x, dt, A, B, C, D, z, dt_bias, initial_states,
    seq_idx``) with the float entries as object arrays of ``mpf``; returns ``{"y", "final_states"}`` object arrays.

    ``dt_eff = clamp(softplus(dt + dt_bias), lo, hi)`` (softplus ``log(1 + e^u)`` for ``u <= 20``, ``u`` above);
    ``S_t = exp(dt_eff A) S_{t-1} + dt_eff x_t B_t^T`` (``S_{t-1} = 0`` where ``seq_idx`` changes);
    ``y_t = (S_t C_t + D x_t) silu(z_t)``."""
    import mpmath

    mp = mpmath.mp
    x = inputs["x"]
    b, l, h, p = x.shape
    Bv, Cv = inputs["B"], inputs["C"]
    g, n = Bv.shape[2], Bv.shape[3]
    D, z, bias, S0 = inputs.get("D"), inputs.get("z"), inputs.get("dt_bias"), inputs.get("initial_states")
    lo, hi = conv["dt_limit"]
    active = not (lo == 0.0 and hi == math.inf)
    reset = _resets(inputs.get("seq_idx"), b, l)
    y = np.empty((b, l, h, p), dtype=object)
    fin = np.empty((b, h, p, n), dtype=object)
    for bi in range(b):
        for hh in range(h):
            gi = (hh * g) // h
            S = [[(S0[bi, hh, i, k] if S0 is not None else mp.mpf(0)) for k in range(n)] for i in range(p)]
            for t in range(l):
                if reset[bi, t]:
                    S = [[mp.mpf(0)] * n for _ in range(p)]
                s = inputs["dt"][bi, t, hh] + (bias[hh] if bias is not None else 0)
                if conv["dt_softplus"] and s <= SOFTPLUS_THRESHOLD:
                    s = mp.log(1 + mp.exp(s))
                if active:
                    s = min(max(s, mp.mpf(lo)), mp.mpf(hi))
                a = mp.exp(s * inputs["A"][hh])
                for i in range(p):
                    acc = mp.mpf(0)
                    for k in range(n):
                        S[i][k] = a * S[i][k] + s * x[bi, t, hh, i] * Bv[bi, t, gi, k]
                        acc += S[i][k] * Cv[bi, t, gi, k]
                    if D is not None:
                        acc += (D[hh] if D.ndim == 1 else D[hh, i]) * x[bi, t, hh, i]
                    if z is not None:
                        zz = z[bi, t, hh, i]
                        acc *= zz / (1 + mp.exp(-zz))
                    y[bi, t, hh, i] = acc
            for i in range(p):
                for k in range(n):
                    fin[bi, hh, i, k] = S[i][k]
    return {"y": y, "final_states": fin}


def ssd_vjp_magnitude(inputs: Dict[str, Any], cotangents: Dict[str, Any],
                      conv: Dict[str, Any]) -> Dict[str, np.ndarray]:
    r"""The absolute-value majorant of every gradient's terms (canonical names; shapes of the inputs).

    With ``|.|`` on every factor: states ``|S|_t = a_t |S|_{t-1} + dt_t |x_t| |B_t|^T`` (from ``|S_{-1}|``), the
    inner cotangent ``|g_t| = |dy_t| |silu(z_t)|``, the reverse scan ``|dS|_t = a_{t+1} |dS|_{t+1} + |g_t| |C_t|^T``
    (from ``|d_final|``); then ``M_x = dt |dS| |B| + |D| |g|``, ``M_B = sum_heads |dS|^T dt |x|``,
    ``M_C = sum_heads |S|^T |g|``, ``M_dt = (|x| . |dS| |B| + |A| a <|dS|, |S|_{t-1}>) |chain|``, ``M_A = sum dt a
    <|dS|, |S|_{t-1}>``, ``M_S0 = a_0 |dS|_0``, ``M_D = sum |g| |x|``,
    ``M_z = |dy| (|S| |C| + |D x|) s(z) (1 + |z| s(-z))`` (silu' by its terms: ``1 + z s(-z)`` can cancel);
    ``|chain|`` is the clamp mask times softplus' derivative (both <= 1)."""
    x = np.asarray(inputs["x"], dtype=np.float64)
    b, l, h, p = x.shape
    dt_raw = np.asarray(inputs["dt"], dtype=np.float64)
    bias = inputs.get("dt_bias")
    u = dt_raw + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    chain = np.ones_like(u)
    sp = u
    if conv["dt_softplus"]:
        sp = np.where(u <= SOFTPLUS_THRESHOLD, np.log1p(np.exp(np.minimum(u, SOFTPLUS_THRESHOLD))), u)
        chain = np.where(u <= SOFTPLUS_THRESHOLD, _sigmoid(u), 1.0)
    lo, hi = conv["dt_limit"]
    s = sp
    if not (lo == 0.0 and hi == math.inf):
        s = np.minimum(np.maximum(sp, lo), hi)
        chain = chain * ((sp >= lo) & (sp <= hi))
    A = np.asarray(inputs["A"], dtype=np.float64)
    a = np.exp(s * A)  # (b l h), in (0, 1] for a stable op
    Bh, Ch = np.abs(_heads(inputs["B"], h)), np.abs(_heads(inputs["C"], h))
    n = Bh.shape[-1]
    ax = np.abs(x)
    D = inputs.get("D")
    Dhp = None if D is None else np.abs(np.asarray(D, dtype=np.float64))
    if Dhp is not None and Dhp.ndim == 1:
        Dhp = np.broadcast_to(Dhp[:, None], (h, p))
    z = inputs.get("z")
    dy = np.abs(np.asarray(cotangents["y"], dtype=np.float64))
    g = dy if z is None else dy * np.abs(np.asarray(z) * _sigmoid(z))
    reset = _resets(inputs.get("seq_idx"), b, l)
    S0 = inputs.get("initial_states")
    S = np.zeros((b, h, p, n)) if S0 is None else np.abs(np.asarray(S0, dtype=np.float64))
    S_in = np.zeros((b, l, h, p, n))
    S_out = np.zeros((b, l, h, p, n))
    for t in range(l):
        S = np.where(reset[:, t, None, None, None], 0.0, S)
        S_in[:, t] = S
        S = a[:, t, :, None, None] * S + (s[:, t, :, None] * ax[:, t])[..., None] * Bh[:, t, :, None, :]
        S_out[:, t] = S
    dF = cotangents.get("final_states")
    dS = np.zeros((b, h, p, n)) if dF is None else np.abs(np.asarray(dF, dtype=np.float64))
    M = {k: np.zeros(np.shape(inputs[k])) for k in GRAD_INPUTS if inputs.get(k) is not None}
    MBh, MCh, Mdt = np.zeros((b, l, h, n)), np.zeros((b, l, h, n)), np.zeros((b, l, h))
    for t in range(l - 1, -1, -1):
        dS = dS + g[:, t, :, :, None] * Ch[:, t, :, None, :]
        dSB = np.einsum("bhpn,bhn->bhp", dS, Bh[:, t])
        M["x"][:, t] = s[:, t, :, None] * dSB
        MBh[:, t] = np.einsum("bhpn,bhp->bhn", dS, s[:, t, :, None] * ax[:, t])
        MCh[:, t] = np.einsum("bhpn,bhp->bhn", S_out[:, t], g[:, t])
        da = np.einsum("bhpn,bhpn->bh", dS, S_in[:, t])
        Mdt[:, t] = np.einsum("bhp,bhp->bh", dSB, ax[:, t]) + np.abs(A) * a[:, t] * da
        M["A"] += np.sum(s[:, t] * a[:, t] * da, axis=0)
        dS = np.where(reset[:, t, None, None, None], 0.0, a[:, t, :, None, None] * dS)
    if Dhp is not None:
        M["x"] = M["x"] + Dhp * g
        MD = np.einsum("blhp,blhp->hp", g, ax)
        M["D"] = MD if np.ndim(D) == 2 else MD.sum(axis=-1)
    if z is not None:
        zz = np.asarray(z, dtype=np.float64)
        # silu'(z) = s(z) (1 + z s(-z)) is evaluated as written: its terms in absolute value, s(z) (1 + |z| s(-z))
        dsilu = _sigmoid(zz) * (1.0 + np.abs(zz) * _sigmoid(-zz))
        inner = np.einsum("blhpn,blhn->blhp", S_out, Ch) + (0.0 if Dhp is None else Dhp * ax)
        M["z"] = dy * inner * dsilu
    gsz = np.asarray(inputs["B"]).shape[2]
    M["B"] = MBh.reshape(b, l, gsz, h // gsz, n).sum(axis=3)
    M["C"] = MCh.reshape(b, l, gsz, h // gsz, n).sum(axis=3)
    M["dt"] = Mdt * chain
    if "dt_bias" in M:
        M["dt_bias"] = M["dt"].sum(axis=(0, 1))
    if "initial_states" in M:
        M["initial_states"] = dS
    return M


def ssd_vjp_depth(inputs: Dict[str, Any]) -> float:
    r"""The longest chain of roundings behind one gradient element, over the three evaluation orders.

    The state cotangent runs a reverse scan of ``l`` steps (a multiply and an add each: ``2 l``), or sums
    ``l`` products per entry of the masked matrix plus the segment sums' cumulative sums (``3 l``); the
    contractions over ``n``, ``p`` and the heads of a group add ``n + p + h``; ``dA``, ``dD`` and ``dt_bias``
    sum over ``b l`` more; the exponentials, the softplus, the logistic and silu cost
    ``TRANSCENDENTAL_U`` each (four of them) and the remaining elementwise products 8 more."""
    b, l, h, p = np.shape(inputs["x"])
    n = np.shape(inputs["B"])[-1]
    return float(4 * l + b * l + n + p + h + 4 * TRANSCENDENTAL_U + 8)


def ssd_grad_bounds(inputs: Dict[str, Any], cotangents: Dict[str, Any], conv: Dict[str, Any], dtype,
                    oracle_dtype=np.float64) -> Dict[str, Bound]:
    """``componentwise_bound(majorant, depth, dtype)`` per gradient (:func:`ssd_vjp_magnitude`,
    :func:`ssd_vjp_depth`)."""
    M = ssd_vjp_magnitude(inputs, cotangents, conv)
    depth = ssd_vjp_depth(inputs)
    return {k: componentwise_bound(m, depth, dtype, oracle_dtype=oracle_dtype,
                                   what=f"SSD VJP d{k}: |terms| majorant, depth {depth:g}") for k, m in M.items()}
