"""Mutants of ``attention.mega``: a small NumPy Mega layer with one deliberate slip each, in the op's canonical
signature (``fn(x, alpha, ..., b_h, rel_bias=None, alpha_bwd=None, ...) -> y``).  Each must be killed by
``refimpl mutants --op attention.mega`` at default settings."""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

OP = "attention.mega"


def _sig(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _silu(a):
    return a * _sig(a)


def _ema(x, al, de, be, et, *, reverse=False, undamped=False, skip_lag0=False):
    # h_t = alpha beta x_t + (1 - alpha delta) h_{t-1},  y_t = eta . h_t  (the recurrence, per feature)
    x = x[:, ::-1] if reverse else x
    b, L, d = x.shape
    q = 1.0 - (al if undamped else al * de)
    h = np.zeros((b, d, al.shape[1]))
    y = np.zeros(x.shape)
    for t in range(L):
        hp = h
        h = al * be * x[:, t, :, None] + q * h
        y[:, t] = np.sum(et * (q * hp if skip_lag0 else h), axis=-1)
    return y[:, ::-1] if reverse else y


def _mega(x, alpha, delta, beta, eta, W_z, b_z, kappa_q, mu_q, kappa_k, mu_k, W_v, b_v, W_gamma, b_gamma, W_phi,
          b_phi, W_h, U_h, b_h, rel_bias=None, alpha_bwd=None, delta_bwd=None, beta_bwd=None, eta_bwd=None, *,
          causal=False, chunk=None, attention="softmax", gate_swapped=False, no_reset=False, z_from_x=False,
          v_from_ema=False, overlap=0, scale_power=0.5, undamped=False, bias_transposed=False, drop_last=False,
          bwd_skip_lag0=False):
    x = np.asarray(x, dtype=np.float64)
    b, L, d = x.shape
    n, p = W_z.shape[1], W_v.shape[1]
    Xp = _ema(x, alpha, delta, beta, eta, undamped=undamped)
    if alpha_bwd is not None:
        Xp = Xp + _ema(x, alpha_bwd, delta_bwd, beta_bwd, eta_bwd, reverse=True, skip_lag0=bwd_skip_lag0)
    Z = _silu((x if z_from_x else Xp) @ W_z + b_z)
    Q, K = kappa_q * Z + mu_q, kappa_k * Z + mu_k
    V = _silu((Xp if v_from_ema else x) @ W_v + b_v)
    G = _silu(Xp @ W_gamma + b_gamma)
    Phi = _sig(Xp @ W_phi + b_phi)
    c = L if not chunk else chunk
    i = np.arange(L)[:, None]
    j = np.arange(L)[None, :]
    start = (i // max(c, 1)) * c
    keep = (j >= start - overlap) & (j < start + c)
    if causal:
        keep &= j <= i
    if drop_last and L % c:
        keep &= (i < (L // c) * c)
    S = np.einsum("bin,bjn->bij", Q, K)
    if attention == "softmax":
        S = S * (n ** -scale_power)
    else:
        S = S / np.maximum(keep.sum(axis=1, keepdims=True), 1)
    if rel_bias is not None and L:
        m = (len(rel_bias) + 1) // 2
        off = (i - j) if bias_transposed else (j - i)
        S = S + np.where(keep, rel_bias[np.clip(m - 1 + off, 0, 2 * m - 2)], 0.0)
    if attention == "softmax":
        Sm = np.where(keep, S, -np.inf)
        mx = np.max(Sm, axis=-1, keepdims=True) if L else np.zeros((b, 0, 1))
        mx = np.where(np.isfinite(mx), mx, 0.0)
        w = np.where(keep, np.exp(Sm - mx), 0.0)
        Z_ = w.sum(-1, keepdims=True)
        P = np.where(Z_ > 0, w / np.where(Z_ > 0, Z_, 1.0), 0.0)
    elif attention == "laplace":
        from scipy.special import erf

        P = np.where(keep, 0.5 * (1 + erf((S - math.sqrt(0.5)) / (math.sqrt(1 / (4 * math.pi)) * math.sqrt(2)))), 0)
    else:
        P = np.where(keep, np.maximum(S, 0.0) ** 2, 0.0)
    O = P @ V
    H = _silu(Xp @ W_h + (O if no_reset else G * O) @ U_h + b_h)
    return Phi * x + (1 - Phi) * H if gate_swapped else Phi * H + (1 - Phi) * x


@mutant(OP, "update-gate-wrong-branch", doc="Y = phi X + (1 - phi) H_hat: the update gate on the residual")
def _gate_swapped(*a):
    return _mega(*a, gate_swapped=True)


@mutant(OP, "reset-gate-missing", doc="H_hat = SiLU(X' W_h + O U_h + b_h): the reset gate gamma never applied")
def _no_reset(*a):
    return _mega(*a, no_reset=True)


@mutant(OP, "z-from-x", doc="Z = SiLU(X W_z + b_z): the shared representation from the input, not the EMA output")
def _z_from_x(*a):
    return _mega(*a, z_from_x=True)


@mutant(OP, "v-from-ema", doc="V = SiLU(X' W_v + b_v): the values from the EMA output, not the input")
def _v_from_ema(*a):
    return _mega(*a, v_from_ema=True)


@mutant(OP, "chunks-overlap-by-one", conventions={"chunk": 3},
        doc="each chunk's queries also see the last key of the previous chunk")
def _overlap(*a):
    return _mega(*a, chunk=3, overlap=1)


@mutant(OP, "softmax-scale-off", doc="softmax scores scaled by 1/n instead of n^{-1/2}")
def _scale_off(*a):
    return _mega(*a, scale_power=1.0)


@mutant(OP, "ema-undamped", doc="the EMA decays by 1 - alpha: the damping delta dropped")
def _undamped(*a):
    return _mega(*a, undamped=True)


@mutant(OP, "rel-bias-transposed", doc="b_rel[i, j] = rel_bias[m - 1 + i - j]: the relative offset's sign flipped")
def _bias_t(*a):
    return _mega(*a, bias_transposed=True)


@mutant(OP, "last-short-chunk-dropped", conventions={"chunk": 3},
        doc="a short last chunk gets no attention (a kernel that only handles whole chunks)")
def _drop_last(*a):
    return _mega(*a, chunk=3, drop_last=True)


@mutant(OP, "causal-chunk-mask-missing", conventions={"chunk": 3, "causal": True},
        doc="causal with chunks: the causal mask forgotten inside the chunk")
def _causal_missing(*a):
    return _mega(*a, chunk=3, causal=False)


@mutant(OP, "backward-ema-without-lag-0", conventions={"bidirectional": True},
        doc="the backward EMA sees only s > t (Mega's two-sided kernel includes lag 0 in both directions)")
def _bwd_lag0(*a):
    return _mega(*a, bwd_skip_lag0=True)
