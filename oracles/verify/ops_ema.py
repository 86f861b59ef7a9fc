r"""Op spec ``ssm.ema``: MEGA's multi-dimensional damped exponential moving average (Ma et al. 2023).

Canonical (the paper's symbols, sequence-first and batch-first as the glossary's ``x (b l d)``)::

    fn(x, alpha, delta, beta, eta, h0=None) -> (y, h_last)

``x (b l d)`` real; ``alpha, delta (d n)`` in (0, 1), ``beta, eta (d n)``; ``h0``/``h_last (b d n)``.
Per feature ``j`` and EMA dimension ``i``: ``u_t = beta x_t``, ``h_t = alpha u_t + (1 - alpha delta) h_{t-1}``,
``y_t = sum_i eta_i h_{t,i}``.  The official code (MEGA's ``MultiHeadEMA``) is time-major, ``x (L, B, D)``,
stores ``alpha``/``delta`` as logits (``sigmoid`` applied inside; its parameter named ``delta`` is the
paper's ``alpha``, the damping), ``beta (D, N, 1)``, and ``gamma (D, N)`` scaled by ``N^{-1/2}`` for
``eta``, and adds a residual ``omega x`` outside the EMA: a candidate wrapping it passes the probabilities
and ``eta`` itself.  Conventions: ``use_h0`` (the candidate takes an initial state: cases pass one, and
some none) and ``algorithm`` (``direct``: recurrence or direct convolution; ``fft``: the FFT convolution
with the closed-form kernel ``K_k = sum_i eta alpha beta q^k``, ``q = 1 - alpha delta``; the bound only).

Oracle: the dense Toeplitz operator with powers by Python's ``float.__pow__``
(:func:`oracles.structured.ema_dense`), the initial state's and final state's terms in the same closed
form.  Bound: :func:`oracles.structured.ema_bound`'s analysis for the candidate's dtype (its depth
``6L + n + 10 + L (2 + 2 max(alpha delta / q) + max |log q|)``) plus the float64 oracle's share; ``fft``
adds :func:`oracles.tolerance.fft_convolution_bound`.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.structured import ema_dense
from oracles.tolerance import Bound, fft_convolution_bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, claimed_inputs, draw_sizes,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "ssm.ema"


def _eff(inp, conv):
    return claimed_inputs(inp, conv, use_h0="h0")


def _params(inp):
    return tuple(np.asarray(inp[k], dtype=np.float64) for k in ("alpha", "delta", "beta", "eta"))


def _q_powers(q, j):
    """``q^j`` (``(len(j), d, n)``) by Python's ``float.__pow__``, entry by entry (closed form)."""
    out = np.zeros((len(j),) + q.shape)
    for a, jj in enumerate(j):
        for idx in np.ndindex(q.shape):
            out[(a,) + idx] = float(q[idx]) ** int(jj)
    return out


def oracle(inp, conv):
    x_ = _eff(inp, conv)
    x = np.asarray(x_["x"], dtype=np.float64)
    a, dl, be, et = _params(x_)
    b, L, d = x.shape
    q = 1.0 - a * dl
    y = ema_dense(x, a, dl, be, et)
    pw = _q_powers(q, np.arange(L + 1))  # (L+1 d n)
    # h_{L-1} = sum_s alpha beta q^{L-1-s} x_s (+ q^L h0)
    hL = np.einsum("ldn,bld->bdn", pw[:L][::-1] * (a * be)[None], x) if L else np.zeros((b, d) + a.shape[1:])
    if x_.get("h0") is not None:
        h0 = np.asarray(x_["h0"], dtype=np.float64)
        # y_t += sum_i eta_i q_i^{t+1} h0_i
        y = y + np.einsum("dn,ldn,bdn->bld", et, pw[1:], h0)
        hL = hL + pw[L][None] * h0
    return {"y": y, "h_last": hL}


def bounds(inp, out, conv, dtype):
    x_ = _eff(inp, conv)
    x = np.asarray(x_["x"], dtype=np.float64)
    a, dl, be, et = _params(x_)
    b, L, d = x.shape
    e = a.shape[1]
    q = 1.0 - a * dl
    depth = 6 * L + e + 10 + L * (2 + 2 * float(np.max(a * dl / q)) + float(np.max(np.abs(np.log(q)))))
    g = gamma(depth, dtype) + gamma(depth, np.float64)
    mag = ema_dense(x, a, dl, np.abs(be), np.abs(et), absolute=True)
    apw = np.abs(q)[None] ** np.arange(L + 1)[:, None, None]
    magh = np.einsum("ldn,bld->bdn", apw[:L][::-1] * np.abs(a * be)[None], np.abs(x)) if L else np.zeros((b, d, e))
    if x_.get("h0") is not None:
        ah0 = np.abs(np.asarray(x_["h0"]))
        mag = mag + np.einsum("dn,ldn,bdn->bld", np.abs(et), apw[1:], ah0)
        magh = magh + apw[L][None] * ah0
    vals = g * mag
    src = f"EMA (oracles.structured.ema_bound's analysis) in {np.dtype(dtype).name}: gamma_{depth:.0f} x the dense operator on |inputs| + the float64 oracle's share"
    if conv["algorithm"] == "fft" and L:
        K = np.sum((et * a * be)[None] * q[None] ** np.arange(L)[:, None, None], axis=-1)  # (l d)
        n_fft = 1 << max(1, int(2 * L - 1).bit_length())
        fb = fft_convolution_bound(K.T[None], np.moveaxis(x, 1, 2), n_fft, dtype, axis=-1)  # (b d 1)
        vals = vals + np.moveaxis(np.broadcast_to(np.asarray(fb.values), (b, d, 1)), 1, 2)
        src += " + " + fb.source
    return {"y": Bound(vals + 1e-300, src), "h_last": Bound(g * magh + 1e-300, src)}


def reference(inp, conv):
    from refimpl.ssm.ema import mega_ema

    x_ = _eff(inp, conv)
    y, hL = mega_ema(x_["x"], x_["alpha"], x_["delta"], x_["beta"], x_["eta"], initial_state=x_.get("h0"),
                     return_final_state=True)
    return {"y": y, "h_last": hL}


def sample(rng, conv, *, L=None, b=None, d=None, n=None, h0=None, q_min=None):
    b, d, n = draw_sizes(rng, b=(b, 1, 3), d=(d, 1, 4), n=(n, 1, 5))
    L = int(rng.choice([0, 1, 2, 7, 16, 33])) if L is None else L
    alpha = rng.uniform(0.05, 0.95, (d, n))
    delta = rng.uniform(0.05, 0.95, (d, n))
    if q_min is not None:  # damping alpha delta -> 1 - q_min: the memory q = 1 - alpha delta -> q_min
        alpha = np.full((d, n), 1.0 - q_min / 2)
        delta = (1.0 - q_min) / alpha
    with_h0 = (bool(conv["use_h0"]) and bool(rng.integers(0, 4))) if h0 is None else (h0 and bool(conv["use_h0"]))
    return {"x": rng.standard_normal((b, L, d)), "alpha": alpha, "delta": delta,
            "beta": rng.standard_normal((d, n)), "eta": rng.standard_normal((d, n)) / np.sqrt(n),
            "h0": rng.standard_normal((b, d, n)) if with_h0 else None}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    rows = [("golden-small", "golden", dict(L=12, b=1, d=2, n=3), "b = 1, l = 12, d = 2, n = 3"),
            ("edge-L0", "edge", dict(L=0), "L = 0"), ("edge-L1", "edge", dict(L=1), "L = 1"),
            ("edge-L-odd", "edge", dict(L=17), "L = 17"),
            ("edge-strong-damping", "edge", dict(L=20, d=1, n=2, q_min=1e-3), "alpha delta -> 1: q = 1e-3"),
            ("edge-long", "edge", dict(L=200, b=1, d=1, n=2), "L = 200")]
    if conv["use_h0"]:
        rows = [(cid, kind, dict(kw, h0=True), note + ", with h0") for cid, kind, kw, note in rows]
        rows.append(("edge-no-h0", "edge", dict(L=9, h0=False), "L = 9 without h0 (the state starts at zero)"))
    add = case_builder(OP, sample, 101, conv)
    return add.rows(rows)


register_op(OpSpec(
    name=OP,
    summary="MEGA's damped EMA: h_t = alpha (beta x_t) + (1 - alpha delta) h_{t-1}, y_t = eta^T h_t per feature",
    inputs=(Arg("x", "b l d"), Arg("alpha", "d n", "in (0, 1)"), Arg("delta", "d n", "damping, in (0, 1)"),
            Arg("beta", "d n", "input expansion"), Arg("eta", "d n", "output projection"),
            Arg("h0", "b d n", "the state before step 0", optional=True)),
    outputs=(Arg("y", "b l d"), Arg("h_last", "b d n", "h_{L-1} (h0, or zero, when L = 0)", optional=True)),
    conventions=(
        Convention("use_h0", True, "the candidate takes an initial state h0: cases pass one (and some none)",
                   (True, False)),
        Convention("algorithm", "direct", "the candidate's evaluation (the bound only): direct (recurrence, direct "
                   "convolution) or fft", ("direct", "fft")),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x": "l"}, {"y": "l"}, sampler=lambda rng, conv: sample(rng, conv, L=10)),),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n"), channels=("d", "d")),
    module=__name__,
    notes="oracle: oracles.structured.ema_dense (closed-form powers); bound: ema_bound's analysis per dtype",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.ema.mega_ema(x, alpha, delta, beta, eta, view=, backend=, initial_state=, return_final_state=True)",
    args=(In("x"), In("alpha"), In("delta"), In("beta"), In("eta")),
    kwargs={"initial_state": In("h0"), "return_final_state": Const(True)},
    outputs=(Out("y", 0), Out("h_last", 1)),
))

register_adapter(Adapter(
    name="time_major",
    op=OP,
    doc="fn(x, alpha, delta, beta, eta, h0=None) -> (y, h_last) with MEGA's time-major activations x, y (l b d)",
    args=(In("x", "b l d -> l b d"), In("alpha"), In("delta"), In("beta"), In("eta"), In("h0")),
    outputs=(Out("y", 0, "l b d -> b l d"), Out("h_last", 1)),
))
