"""Mutants of ``ssm.selective_scan`` (Mamba's S6) and ``ssm.ssd`` (Mamba-2's SSD).

Each is a plausible kernel bug: the right math (a plain NumPy loop over time, written here) with one deviation,
in the op's canonical signature or, where the bug hides behind an argument, in the interface whose argument
exposes it (``mamba.selective_scan_fn`` for ``delta_softplus``, ``mamba2.chunk_scan`` for ``dt_softplus`` and
``dt_limit``).  Those are verified at the op's default conventions: the bug only shows on the argument path the
default cases never take, so only the ``argument_paths`` probe can kill them -- the point of issue 11.

The S6 loop reads the canonical channel-first layout (``u, delta, z (b d l)``, ``B``/``C`` fixed ``(d n)``,
variable ``(b n l)``, grouped ``(b g n l)``, ``h0 (b d n)``); the SSD loop the canonical ``(b l h p)`` one.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

S6, SSD = "ssm.selective_scan", "ssm.ssd"
MAMBA, MAMBA2 = "mamba.selective_scan_fn", "mamba2.chunk_scan"


# ---------------------------------------------------------------------------------------------- helpers

def _softplus(x, threshold=True):
    x = np.asarray(x, dtype=np.float64)
    sp = np.logaddexp(0.0, x)
    return np.where(x > 20.0, x, sp) if threshold else sp


def _silu(z):
    z = np.asarray(z, dtype=np.float64)
    return z / (1.0 + np.exp(-z))


def _phi1(w, wrong_series=False):
    """``(e^w - 1)/w``; below ``|w| < 1e-5`` the series ``1 + w/2 + w^2/6`` (``w^2/3`` with ``wrong_series``)."""
    w = np.asarray(w)
    small = np.abs(w) < 1e-5
    safe = np.where(small, 1.0, w)
    series = 1 + w / 2 + w * w / (3.0 if wrong_series else 6.0)
    return np.where(small, series, np.expm1(safe) / safe)


def _per_channel(X, b, d, L, group_order="gh"):
    """``B``/``C`` as ``(b d n l)``: fixed ``(d n)``, variable ``(b n l)``, grouped ``(b g n l)`` with channel ``c``
    reading group ``c // (d / g)`` (``"gh"``, Mamba's ``(G H)``) or, as a bug, ``c % g`` (``"hg"``)."""
    X = np.asarray(X)
    if X.ndim == 2:
        return np.broadcast_to(X[None, :, :, None], (b, d, X.shape[1], L))
    if X.ndim == 3:
        return np.broadcast_to(X[:, None], (b, d) + X.shape[1:])
    g = X.shape[1]
    c = np.arange(d)
    return X[:, c // (d // g) if group_order == "gh" else c % g]


def _s6(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None, *, softplus=False, zoh=False, two_re=True,
        bug=frozenset(), chunk=16):
    """The selective scan step by step; ``bug`` names the deviations.  Returns ``(out (b d l), h_last (b d n))``."""
    u, delta = np.asarray(u, dtype=np.float64), np.asarray(delta, dtype=np.float64)
    A = np.asarray(A)
    b, d, L = u.shape
    n = A.shape[1]
    bias = 0.0 if delta_bias is None else np.asarray(delta_bias, dtype=np.float64)[None, :, None]
    if "bias-twice" in bug:
        bias = 2 * bias
    if softplus and "softplus-before-bias" in bug:
        Dt = _softplus(delta) + bias
    elif softplus:
        Dt = _softplus(delta + bias, threshold="no-threshold" not in bug)
    else:
        Dt = delta + bias
    order = "hg" if "group-order" in bug else "gh"
    Bc, Cc = _per_channel(B, b, d, L, order), _per_channel(C, b, d, L, order)
    if "B-C-swapped" in bug:
        Bc, Cc = Cc, Bc
    cplx = np.iscomplexobj(A) or np.iscomplexobj(Bc) or np.iscomplexobj(Cc) or np.iscomplexobj(h0)
    dtype = np.complex128 if cplx else np.float64
    h = np.zeros((b, d, n), dtype) if (h0 is None or "h0-ignored" in bug) else np.asarray(h0).astype(dtype)
    out = np.zeros((b, d, L))
    states = [h]
    for t in range(L):
        w = Dt[:, :, t, None] * A  # Delta A (b d n)
        if "euler-A" in bug:
            a_bar = 1.0 + w
        elif "sign-flip-A" in bug:
            a_bar = np.exp(-w)
        else:
            a_bar = np.exp(w)
        use_zoh = zoh != ("swap-discretization" in bug)
        B_bar = Dt[:, :, t, None] * (_phi1(w, "phi1-series" in bug) if use_zoh else 1.0) * Bc[..., t]
        if t and t % chunk == 0 and "chunk-state-dropped" in bug:
            h = np.zeros_like(h)
        h_prev = h
        if t and t % chunk == 0 and "chunk-boundary-off-by-one" in bug:
            h = h + B_bar * u[:, :, t, None]  # the carried state misses the first step's decay of the new chunk
        else:
            h = a_bar * h + B_bar * u[:, :, t, None]
        if "fp16-state" in bug:
            h = (h.real.astype(np.float16).astype(np.float64)
                 + (1j * h.imag.astype(np.float16).astype(np.float64) if cplx else 0)).astype(dtype)
        states.append(h)
        y = np.sum((h_prev if "read-before-update" in bug else h) * Cc[..., t], axis=-1)
        y = (2.0 if (np.iscomplexobj(A) and two_re and "re-not-2re" not in bug) else 1.0) * y.real
        if D is not None and "D-dropped" not in bug and "D-after-gate" not in bug:
            y = y + np.asarray(D)[None, :] * u[:, :, t]
        if z is not None and "gate-dropped" not in bug:
            zt = np.asarray(z, dtype=np.float64)[:, :, t]
            if "gate-silu-of-u" in bug:
                y = y * _silu(u[:, :, t])
            elif "gate-without-silu" in bug:
                y = y * zt
            else:
                y = y * _silu(zt)
        if D is not None and "D-after-gate" in bug:
            y = y + np.asarray(D)[None, :] * u[:, :, t]
        out[:, :, t] = y
    last = states[-2] if ("final-early" in bug and L) else states[-1]
    return out, last


def _deinterleave(X, A):
    """Mamba's complex variable ``B``/``C``: real with ``(re, im)`` interleaved along ``L`` when ``A`` is complex."""
    X = np.asarray(X)
    if np.iscomplexobj(A) and X.ndim >= 3 and not np.iscomplexobj(X):
        return X[..., 0::2] + 1j * X[..., 1::2]
    return X


def _mamba_interface(bug):
    """A candidate in ``selective_scan_fn``'s interface with the deviations ``bug``."""

    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        out, last = _s6(u, delta, A, _deinterleave(B, A), _deinterleave(C, A), D, z, delta_bias, None,
                        softplus=delta_softplus, bug=frozenset(bug))
        return (out, last) if return_last_state else out

    return fn


def _canonical(bug, **kw):
    """A candidate in the canonical signature with the deviations ``bug`` (and the conventions ``kw``)."""

    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None):
        return _s6(u, delta, A, B, C, D, z, delta_bias, h0, bug=frozenset(bug), **kw)

    return fn


def _s6_mutant(name, doc, bug, conventions=None, adapter=None, **kw):
    fn = _mamba_interface(bug) if adapter == MAMBA else _canonical(bug, **kw)
    fn.__name__ = fn.__qualname__ = "s6_" + name.replace("-", "_")
    mutant(S6, name, doc=doc, conventions=conventions, adapter=adapter)(fn)


# ---------------------------------------------------------------------------------------------- ssm.selective_scan

_s6_mutant("softplus-before-bias", "Delta = softplus(delta) + delta_bias instead of softplus(delta + delta_bias), "
           "through Mamba's interface at the default delta_softplus=False: only the delta_softplus=True path shows it",
           {"softplus-before-bias"}, adapter=MAMBA)
_s6_mutant("softplus-without-threshold", "softplus(x) = log(1 + e^x) everywhere: Mamba's (and PyTorch's) "
           "threshold 20, above which softplus(x) = x, left out", {"no-threshold"}, {"delta_softplus": True},
           softplus=True)
_s6_mutant("delta-bias-twice", "delta_bias added twice (once by the caller's projection, once by the kernel)",
           {"bias-twice"})
_s6_mutant("euler-A-bar", "A_bar = 1 + Delta A (forward Euler) instead of exp(Delta A)", {"euler-A"})
_s6_mutant("sign-flip-A", "A_bar = exp(-Delta A): the stored A read as -A (a log-parametrized A_log sign slip)",
           {"sign-flip-A"})
_s6_mutant("zoh-B-under-mamba", "B_bar = Delta phi1(Delta A) B (exact ZOH) where Mamba's Euler B_bar = Delta B is "
           "declared", {"swap-discretization"})
_s6_mutant("mamba-B-under-zoh", "B_bar = Delta B (Mamba's Euler) where exact ZOH is declared", {"swap-discretization"},
           {"discretization": "zoh"}, zoh=True)
_s6_mutant("phi1-series-x2-over-3", "ZOH's phi1 by its series 1 + x/2 + x^2/3 below |x| < 1e-5 (the coefficient "
           "is 1/6)", {"phi1-series"}, {"discretization": "zoh"}, zoh=True)
_s6_mutant("D-dropped", "the skip connection D u left out", {"D-dropped"})
_s6_mutant("gate-dropped", "the gate silu(z) left out (z accepted and ignored)", {"gate-dropped"})
_s6_mutant("gate-silu-of-u", "the gate silu(u) instead of silu(z)", {"gate-silu-of-u"})
_s6_mutant("gate-without-silu", "the gate z instead of silu(z)", {"gate-without-silu"})
_s6_mutant("D-after-gate", "out = y silu(z) + D u: the skip added after the gate instead of before it",
           {"D-after-gate"})
_s6_mutant("group-order-hg", "grouped B/C expanded in (h g) order (channel c reads group c % g) instead of Mamba's "
           "(g h) (group c // (d / g))", {"group-order"})
_s6_mutant("B-C-swapped", "B and C exchanged (the state driven by C, read by B)", {"B-C-swapped"})
_s6_mutant("read-before-update", "y_t = C_t h_{t-1}: the output read before the state update", {"read-before-update"})
_s6_mutant("re-instead-of-2re", "complex A: y = Re(C h) where Mamba's conjugate pairs need 2 Re(C h), through Mamba's "
           "interface (the diagnosis names real_output='re')", {"re-not-2re"}, adapter=MAMBA)
_s6_mutant("fp16-state", "the state stored in float16 between steps (a half-precision state buffer)",
           {"fp16-state"})
_s6_mutant("chunk-state-dropped", "a chunked kernel (chunk 16) that does not carry the state across chunks",
           {"chunk-state-dropped"}, {"algorithm": "chunked", "chunk": 16})
_s6_mutant("chunk-boundary-off-by-one", "a chunked kernel (chunk 16) whose carried state misses the first step's "
           "decay of each new chunk (the segment product starts one step late)", {"chunk-boundary-off-by-one"},
           {"algorithm": "chunked", "chunk": 16})
_s6_mutant("initial-state-ignored", "h0 accepted and ignored: the scan starts from zero", {"h0-ignored"})
_s6_mutant("final-state-one-step-early", "h_last is the state before the last step (h_{L-2})", {"final-early"})


# ---------------------------------------------------------------------------------------------- ssm.ssd

def _ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, S0=None, seq_idx=None, *, softplus=False,
         limit=(0.0, math.inf), chunk=16, bug=frozenset()):
    """Mamba-2's SSD step by step; ``bug`` names the deviations.  Returns ``(y (b l h p), final (b h p n))``."""
    x, dt = np.asarray(x, dtype=np.float64), np.asarray(dt, dtype=np.float64)
    b, L, h, p = x.shape
    bias = 0.0 if dt_bias is None else np.asarray(dt_bias, dtype=np.float64)
    if "bias-twice" in bug:
        bias = 2 * bias
    lo, hi = limit
    clamp_first = softplus and "limit-before-softplus" in bug and (lo, hi) != (0.0, math.inf)  # as Mamba-2, no
    if softplus and "softplus-before-bias" in bug:  # clamp at all under the default limit
        dte = _softplus(dt) + bias
    elif clamp_first:
        dte = _softplus(np.clip(dt + bias, lo, hi))
    else:
        dte = dt + bias
        if softplus:
            dte = _softplus(dte)
    if not clamp_first:
        dte = np.clip(dte, lo, hi)
    g = np.shape(B)[2]
    j = np.arange(h)
    grp = j % g if "group-order" in bug else (j * g) // h
    Bh, Ch = np.asarray(B)[:, :, grp], np.asarray(C)[:, :, grp]  # (b l h n)
    n = Bh.shape[-1]
    S = np.zeros((b, h, p, n)) if (S0 is None or "S0-ignored" in bug) else np.asarray(S0, dtype=np.float64).copy()
    Sfin_prev = S
    y = np.zeros((b, L, h, p))
    reset = np.zeros((b, L), dtype=bool)  # a new sequence starts at t: no state crosses into it
    if seq_idx is not None and "seq-idx-ignored" not in bug and L > 1:
        seq = np.asarray(seq_idx)
        reset[:, 1:] = seq[:, 1:] != seq[:, :-1]
        if "seq-idx-late" in bug:
            reset = np.concatenate([np.zeros((b, 1), dtype=bool), reset[:, :-1]], axis=1)
    for t in range(L):
        a = np.exp(dte[:, t] * np.asarray(A)) if "euler-decay" not in bug else 1.0 + dte[:, t] * np.asarray(A)
        a = np.where(reset[:, t, None], 0.0, a)
        if t and t % chunk == 0 and "chunk-state-dropped" in bug:
            S = np.zeros_like(S)
        if t and t % chunk == 0 and "chunk-boundary-off-by-one" in bug:
            a = np.ones_like(a) if np.ndim(a) else 1.0
        S_prev = S
        S = np.asarray(a)[:, :, None, None] * S + (dte[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        if "fp16-state" in bug:
            S = S.astype(np.float16).astype(np.float64)
        Sfin_prev = S_prev
        yt = np.einsum("bhpn,bhn->bhp", S_prev if "read-before-update" in bug else S, Ch[:, t])
        if D is not None and "D-dropped" not in bug:
            Dv = np.asarray(D, dtype=np.float64)
            if Dv.ndim == 1:
                Dhp = (np.tile(Dv, p) if "D-tiled" in bug else np.repeat(Dv, p)).reshape(h, p)
            else:
                Dhp = Dv
            yt = yt + Dhp * x[:, t]
        if z is not None and "gate-dropped" not in bug:
            yt = yt * _silu(np.asarray(z)[:, t])
        y[:, t] = yt
    final = Sfin_prev if ("final-early" in bug and L) else S
    return y, final


def _ssd_canonical(bug, **kw):
    def fn(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None):
        return _ssd(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, bug=frozenset(bug), **kw)

    return fn


def _ssd_chunk_scan(bug):
    def fn(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
           dt_softplus=False, dt_limit=(0.0, math.inf), return_final_states=False):
        y, S = _ssd(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, softplus=dt_softplus,
                    limit=tuple(dt_limit), chunk=int(chunk_size), bug=frozenset(bug))
        return (y, S) if return_final_states else y

    return fn


def _ssd_mutant(name, doc, bug, conventions=None, adapter=None, **kw):
    fn = _ssd_chunk_scan(bug) if adapter == MAMBA2 else _ssd_canonical(bug, **kw)
    fn.__name__ = fn.__qualname__ = "ssd_" + name.replace("-", "_")
    mutant(SSD, name, doc=doc, conventions=conventions, adapter=adapter)(fn)


_ssd_mutant("dt-softplus-before-bias", "dt = softplus(dt) + dt_bias instead of softplus(dt + dt_bias), through "
            "mamba_chunk_scan_combined at the default dt_softplus=False: only the dt_softplus=True path shows it",
            {"softplus-before-bias"}, adapter=MAMBA2)
_ssd_mutant("dt-limit-before-softplus", "dt_limit clamps dt + dt_bias before the softplus instead of after it "
            "(declared dt_softplus=True, default dt_limit: only an active dt_limit shows it)",
            {"limit-before-softplus"}, {"dt_softplus": True}, adapter=MAMBA2)
_ssd_mutant("dt-bias-twice", "dt_bias added twice", {"bias-twice"})
_ssd_mutant("euler-decay", "a_t = 1 + dt_t A (forward Euler) instead of exp(dt_t A)", {"euler-decay"})
_ssd_mutant("seq-idx-ignored", "seq_idx accepted and ignored: the state flows across packed sequences",
            {"seq-idx-ignored"})
_ssd_mutant("seq-idx-one-step-late", "the state zeroed one step after a sequence starts (the boundary test reads "
            "seq_idx[t-1] != seq_idx[t-2])", {"seq-idx-late"})
_ssd_mutant("group-order-hg", "B/C groups expanded in (h g) order (head j reads group j % g) instead of (g h) "
            "(group j // (h / g))", {"group-order"})
_ssd_mutant("D-per-head-tiled", "D per head (h,) spread over the (h p) channels by tile instead of repeat: channel "
            "(j, i) gets D[(j p + i) % h] instead of D[j]", {"D-tiled"})
_ssd_mutant("D-dropped", "the skip D x left out", {"D-dropped"})
_ssd_mutant("gate-dropped", "the gate silu(z) left out", {"gate-dropped"})
_ssd_mutant("read-before-update", "y_t = S_{t-1} C_t: the output read before the state update",
            {"read-before-update"})
_ssd_mutant("fp16-state", "the state stored in float16 between steps", {"fp16-state"})
_ssd_mutant("chunk-state-dropped", "a chunked kernel (chunk 16) that does not pass the state between chunks",
            {"chunk-state-dropped"}, {"algorithm": "chunked", "chunk": 16})
_ssd_mutant("chunk-boundary-off-by-one", "a chunked kernel (chunk 16) whose state passing skips the decay of the "
            "first step of each new chunk", {"chunk-boundary-off-by-one"}, {"algorithm": "chunked", "chunk": 16})
_ssd_mutant("initial-state-ignored", "initial_states accepted and ignored", {"S0-ignored"})
_ssd_mutant("final-state-one-step-early", "final_states is the state before the last step", {"final-early"})
