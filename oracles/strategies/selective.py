"""Hypothesis strategies for selective scan (S6) and SSD (Mamba-2) problems.

Each strategy draws the sizes and every option flag with Hypothesis (so failures shrink to the
smallest shapes and fewest options) and the array contents from a NumPy generator seeded by a
drawn integer.  They return a dict of keyword arguments for
:func:`refimpl.ssm.selective.selective_scan` (``s6_problems``: sequence-first ``u, delta, z (b l d)``,
``B``/``C`` fixed ``(d n)``, variable ``(b l n)`` or grouped ``(b l g n)``) or
:func:`refimpl.ssm.ssd.ssd_scan` (``ssd_problems``), plus ``"chunk"``.

Regimes of ``A`` (``a_regime``): ``"normal"`` (``-exp(N(0,1))``), ``"small"`` (``|A| ~ 1e-6``:
the state is nearly an accumulator), ``"zero"`` (exactly 0: an accumulator), ``"fast"`` (large
decay, ``-exp(N(2,1))``).
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

__all__ = ["s6_problems", "ssd_problems", "lengths_around", "A_REGIMES"]

A_REGIMES = ("normal", "small", "zero", "fast")


def lengths_around(chunk: int, max_len: int = 40):
    """``L`` in {0, 1, 2, odd, chunk - 1, chunk, chunk + 1, 2 chunk + 1, a longer one}."""
    cands = sorted({0, 1, 2, 3, 5, 7, max(chunk - 1, 0), chunk, chunk + 1, 2 * chunk + 1, max_len})
    return st.sampled_from([c for c in cands if c <= max_len])


def _A_real(rng, shape, regime):
    if regime == "zero":
        return np.zeros(shape)
    if regime == "small":
        return -1e-6 * np.exp(rng.standard_normal(shape))
    if regime == "fast":
        return -np.exp(2.0 + rng.standard_normal(shape))
    return -np.exp(rng.standard_normal(shape))


@st.composite
def s6_problems(draw, *, max_batch: int = 2, max_channels: int = 4, max_state: int = 4, max_len: int = 40,
                dtype=np.float64, complex_A=None, chunk=None):
    """A selective-scan problem with every option drawn (B/C layouts, D, z, bias, softplus, initial state, ZOH,
    complex A)."""
    ch = draw(st.sampled_from([1, 2, 3, 4, 8])) if chunk is None else chunk
    b = draw(st.integers(1, max_batch))
    d = draw(st.sampled_from([c for c in (1, 2, 3, 4, 6) if c <= max_channels] or [1]))
    n = draw(st.integers(1, max_state))
    l = draw(lengths_around(ch, max_len))
    cplx = draw(st.booleans()) if complex_A is None else complex_A
    regime = draw(st.sampled_from(A_REGIMES))
    b_mode = draw(st.sampled_from(["fixed", "variable", "grouped"]))
    c_mode = draw(st.sampled_from(["fixed", "variable", "grouped"]))
    groups = [g for g in range(1, d + 1) if d % g == 0]
    gB, gC = draw(st.sampled_from(groups)), draw(st.sampled_from(groups))
    use_D, use_z, use_bias, use_sp, use_h0 = (draw(st.booleans()) for _ in range(5))
    disc = draw(st.sampled_from(["mamba", "zoh"]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    rdt = np.dtype(dtype)
    cdt = np.result_type(rdt, np.complex64)
    A = _A_real(rng, (d, n), regime)
    if cplx:
        A = A + 1j * np.pi * rng.standard_normal((d, n))

    def bc(mode, g):
        shape = {"fixed": (d, n), "variable": (b, l, n), "grouped": (b, l, g, n)}[mode]
        X = rng.standard_normal(shape)
        if cplx and mode == "fixed":
            X = X + 1j * rng.standard_normal(shape)
        return X

    if use_sp:
        delta = rng.standard_normal((b, l, d)) - 1.0  # pre-activation, softplus makes it positive
    else:
        delta = np.exp(rng.standard_normal((b, l, d)) - 1.0)  # already positive
    bias = (rng.uniform(0.0, 1.0, d) if not use_sp else rng.standard_normal(d)) if use_bias else None
    out = dict(
        u=rng.standard_normal((b, l, d)),
        delta=delta,
        A=A,
        B=bc(b_mode, gB),
        C=bc(c_mode, gC),
        D=rng.standard_normal(d) if use_D else None,
        z=rng.standard_normal((b, l, d)) if use_z else None,
        delta_bias=bias,
        delta_softplus=use_sp,
        initial_state=((rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0))
                       if use_h0 else None),
        discretization=disc,
    )
    for k, v in list(out.items()):
        if isinstance(v, np.ndarray):
            out[k] = v.astype(cdt if np.iscomplexobj(v) else rdt)
    out["chunk"] = ch
    return out


@st.composite
def ssd_problems(draw, *, max_batch: int = 2, max_heads: int = 4, max_headdim: int = 3, max_state: int = 4,
                 max_len: int = 40, dtype=np.float64, chunk=None, allow_seq_idx: bool = True):
    """An SSD problem with every option drawn (groups, D (h,)/(h,p), z, dt_bias, softplus, dt_limit,
    initial_state, seq_idx)."""
    ch = draw(st.sampled_from([1, 2, 3, 4, 8])) if chunk is None else chunk
    b = draw(st.integers(1, max_batch))
    h = draw(st.sampled_from([c for c in (1, 2, 4) if c <= max_heads] or [1]))
    g = draw(st.sampled_from([c for c in (1, 2, 4) if c <= h and h % c == 0]))
    p = draw(st.integers(1, max_headdim))
    n = draw(st.integers(1, max_state))
    l = draw(lengths_around(ch, max_len))
    regime = draw(st.sampled_from(A_REGIMES))
    d_mode = draw(st.sampled_from([None, "h", "hp"]))
    use_z, use_bias, use_sp, use_S0 = (draw(st.booleans()) for _ in range(4))
    limit = draw(st.sampled_from([(0.0, math.inf), (0.05, 1.5), (0.0, 0.5)]))
    use_seq = allow_seq_idx and draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if use_sp:
        dt = rng.standard_normal((b, l, h)) - 1.0
    else:
        dt = np.exp(rng.standard_normal((b, l, h)) - 1.0)
    seq = None
    if use_seq:
        seq = np.cumsum(rng.random((b, l)) < 0.2, axis=1).astype(np.int64)
    out = dict(
        x=rng.standard_normal((b, l, h, p)),
        dt=dt,
        A=_A_real(rng, (h,), regime),
        B=rng.standard_normal((b, l, g, n)),
        C=rng.standard_normal((b, l, g, n)),
        D=None if d_mode is None else rng.standard_normal((h,) if d_mode == "h" else (h, p)),
        z=rng.standard_normal((b, l, h, p)) if use_z else None,
        dt_bias=((rng.uniform(0.0, 1.0, h) if not use_sp else rng.standard_normal(h)) if use_bias else None),
        dt_softplus=use_sp,
        dt_limit=limit,
        initial_state=rng.standard_normal((b, h, p, n)) if use_S0 else None,
        seq_idx=seq,
    )
    for k, v in list(out.items()):
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            out[k] = v.astype(dtype)
    out["chunk"] = ch
    return out
