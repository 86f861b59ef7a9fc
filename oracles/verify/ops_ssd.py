r"""Op spec ``ssm.ssd`` (Mamba-2's state space duality) and the Mamba-2 chunk-scan adapter.

Canonical layout = Mamba-2's ``(b, l, h, p)`` (the same as :mod:`refimpl.ssm.ssd`, whose argument names are the
glossary's: ``initial_state``, ``return_final_state``)::

    fn(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None) -> (y, final_states)

``x``, ``z`` (b l h p); ``dt`` (b l h); ``A``, ``dt_bias`` (h,); ``B``, ``C`` (b l g n) with ``g``
dividing ``h``; ``D`` (h,) or (h, p); ``initial_states``/``final_states`` (b h p n); ``seq_idx``
(b l) non-decreasing integers (no state crosses a change).  Conventions: ``dt_softplus``,
``dt_limit`` (a clamp after the softplus), the features a candidate supports (``use_D``,
``use_z``, ``use_dt_bias``, ``use_initial_states``, ``use_seq_idx``; every case exercises each claimed
feature), and ``algorithm`` / ``chunk``
(the evaluation order, which sets the bound's depth only).

Oracle: :func:`oracles.selective.ssd_solve` (the states as one banded linear solve, float64); bound
:func:`oracles.selective.ssd_bound`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import zlib

import numpy as np

from oracles.selective import ssd_bound, ssd_solve
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import Arg, Case, Convention, OpSpec, register_op

OP = "ssm.ssd"
LENGTHS = (0, 1, 2, 3, 7, 16, 17)


def _eff(inp, conv):
    x = dict(inp)
    for flag, name in (("use_D", "D"), ("use_z", "z"), ("use_dt_bias", "dt_bias"),
                       ("use_initial_states", "initial_states"), ("use_seq_idx", "seq_idx")):
        if not conv[flag]:
            x[name] = None
    return x


def _kw(x, conv):
    """Keyword arguments of the oracle and refimpl (the glossary's ``initial_state``)."""
    return dict(dt_bias=x["dt_bias"], dt_softplus=bool(conv["dt_softplus"]), dt_limit=tuple(conv["dt_limit"]),
                initial_state=x["initial_states"], seq_idx=x["seq_idx"])


def oracle(inp, conv):
    x = _eff(inp, conv)
    y, S = ssd_solve(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], **_kw(x, conv))
    return {"y": y, "final_states": S}


def bounds(inp, out, conv, dtype):
    x = _eff(inp, conv)
    by, bs = ssd_bound(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], view=conv["algorithm"],
                       chunk=int(conv["chunk"]), dtype=dtype, **_kw(x, conv))
    return {"y": by, "final_states": bs}


def reference(inp, conv):
    from refimpl.ssm.ssd.reference import recurrent

    x = _eff(inp, conv)
    y, S = recurrent(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], return_final_state=True,
                     **_kw(x, conv))
    return {"y": y, "final_states": S}


def sample(rng, conv, *, L=None, b=None, h=None, p=None, n=None, a_scale=None, packed=None):
    b = int(rng.integers(1, 3)) if b is None else b
    h = int(rng.choice([1, 2, 4])) if h is None else h
    p = int(rng.integers(1, 4)) if p is None else p
    n = int(rng.integers(1, 5)) if n is None else n
    L = int(rng.choice(LENGTHS)) if L is None else L
    g = int(rng.choice([k for k in (1, 2, 4) if h % k == 0]))
    A = -np.exp(rng.uniform(-1.0, 1.0, size=h)) * (1.0 if a_scale is None else a_scale)
    dt = rng.normal(-1.5, 1.0, size=(b, L, h)) if conv["dt_softplus"] else rng.uniform(0.01, 0.5, size=(b, L, h))
    inp = {"x": rng.standard_normal((b, L, h, p)), "dt": dt, "A": A,
           "B": rng.standard_normal((b, L, g, n)), "C": rng.standard_normal((b, L, g, n)),
           "D": None, "z": None, "dt_bias": None, "initial_states": None, "seq_idx": None}
    if conv["use_D"]:
        inp["D"] = rng.standard_normal(h) if rng.random() < 0.5 else rng.standard_normal((h, p))
    if conv["use_z"]:
        inp["z"] = rng.standard_normal((b, L, h, p))
    if conv["use_dt_bias"]:
        inp["dt_bias"] = rng.uniform(-0.5, 0.5, size=h) if conv["dt_softplus"] else rng.uniform(0.0, 0.2, size=h)
    if conv["use_initial_states"]:
        inp["initial_states"] = rng.standard_normal((b, h, p, n))
    if conv["use_seq_idx"]:
        inp["seq_idx"] = np.zeros((b, L), dtype=np.int32)
    if conv["use_seq_idx"] and (packed if packed is not None else rng.random() < 0.5) and L > 1:
        cuts = np.sort(rng.integers(1, L, size=2))
        inp["seq_idx"] = np.stack([(np.arange(L) >= cuts[0]).astype(np.int32) + (np.arange(L) >= cuts[1])
                                   for _ in range(b)]).astype(np.int32)
    return inp


def _from_family(p, conv):
    """A problem of oracles.strategies.selective.ssd_problems as canonical inputs under ``conv``."""
    inp = {k: p.get(k) for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states", "seq_idx")}
    if p.get("dt_softplus") and not conv["dt_softplus"]:
        inp["dt"] = np.logaddexp(0.0, inp["dt"])
        if inp["dt_bias"] is not None:
            inp["dt_bias"] = np.abs(inp["dt_bias"])
    # a feature the candidate claims is always exercised: fill what the problem left out (seeded by its data)
    b, l, h, pp = np.shape(inp["x"])
    n = np.shape(inp["B"])[-1]
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(inp["x"]).tobytes()))
    if conv["use_D"] and inp["D"] is None:
        inp["D"] = rng.standard_normal(h)
    if conv["use_z"] and inp["z"] is None:
        inp["z"] = rng.standard_normal((b, l, h, pp))
    if conv["use_dt_bias"] and inp["dt_bias"] is None:
        inp["dt_bias"] = rng.uniform(0.0, 0.5, h)
    if conv["use_initial_states"] and inp["initial_states"] is None:
        inp["initial_states"] = rng.standard_normal((b, h, pp, n))
    if conv["use_seq_idx"] and inp["seq_idx"] is None:
        inp["seq_idx"] = np.zeros((b, l), dtype=np.int32)  # one sequence per row
    return _eff(inp, conv)


def strategy(conv):
    from hypothesis import strategies as st

    try:  # the family's strategy: every option and A regime drawn
        from oracles.strategies.selective import ssd_problems

        return ssd_problems(max_len=40, allow_seq_idx=bool(conv["use_seq_idx"])).map(lambda p: _from_family(p, conv))
    except ImportError:
        return st.integers(0, 2**32 - 1).map(lambda s: sample(np.random.default_rng(s), conv))


def cases(conv) -> List[Case]:
    out = []
    T = int(conv["chunk"])

    def add(cid, kind, note, seed, **kw):
        out.append(Case(OP, cid, kind, sample(np.random.default_rng([53, seed]), conv, **kw), dict(conv),
                        seed=seed, note=note))

    add("golden-small", "golden", "b=1, l=6, h=2, p=2, n=3", 1, L=6, b=1, h=2, p=2, n=3, packed=False)
    add("edge-L0", "edge", "L = 0: empty output; the final state is the initial one", 2, L=0)
    add("edge-L1", "edge", "L = 1", 3, L=1)
    add("edge-chunk-1", "edge", f"L = chunk - 1 = {T - 1}", 4, L=T - 1, b=1, h=2, p=2, n=2)
    add("edge-chunk+1", "edge", f"L = chunk + 1 = {T + 1}: a short last chunk", 5, L=T + 1, b=1, h=2, p=2, n=2)
    add("edge-A-to-0", "edge", "A -> 0 (|A| ~ 1e-8): the state accumulates", 6, L=40, b=1, h=2, a_scale=1e-8)
    if conv["use_seq_idx"]:
        add("edge-packed", "edge", "three packed sequences in each row (seq_idx)", 7, L=20, b=2, h=2, packed=True)
    add("edge-long", "edge", "long sequence, L = 1024", 8, L=1024, b=1, h=1, p=1, n=2, packed=False)
    return out


def _feature(name, doc):
    return Convention(name, True, doc, (True, False))


register_op(OpSpec(
    name=OP,
    summary="Mamba-2's SSD: scalar-times-identity A per head, multi-head x, grouped B/C, dt bias/softplus/limit, "
            "D, z gate, initial and final states, packed sequences",
    inputs=(Arg("x", "b l h p"), Arg("dt", "b l h"), Arg("A", "h"), Arg("B", "b l g n"), Arg("C", "b l g n"),
            Arg("D", "h | h p", optional=True), Arg("z", "b l h p", optional=True), Arg("dt_bias", "h", optional=True),
            Arg("initial_states", "b h p n", optional=True), Arg("seq_idx", "b l", optional=True, kind="int")),
    outputs=(Arg("y", "b l h p"), Arg("final_states", "b h p n", optional=True)),
    conventions=(
        Convention("dt_softplus", False, "dt = softplus(dt + dt_bias) (threshold 20)", (False, True)),
        Convention("dt_limit", (0.0, math.inf), "(lo, hi) clamp of dt after the softplus"),
        _feature("use_D", "the D skip y += D x (D per head or per channel)"),
        _feature("use_z", "the gate y *= silu(z)"),
        _feature("use_dt_bias", "dt_bias added before the softplus"),
        _feature("use_initial_states", "an initial state"),
        _feature("use_seq_idx", "packed sequences (seq_idx): no state across a boundary"),
        Convention("algorithm", "recurrent", "evaluation order, for the bound's depth: recurrent, quadratic, chunked",
                   ("recurrent", "quadratic", "chunked")),
        Convention("chunk", 64, "the chunk length (algorithm='chunked'; also sets the chunk +- 1 edge cases)"),
    ),
    oracle=oracle,
    bounds=bounds,
    cases=cases,
    sample=sample,
    strategy=strategy,
    reference=reference,
    probes=(causality_probe({"x": "l", "dt": "l", "B": "l", "C": "l", "z": "l"}, {"y": "l"},
                            sampler=lambda rng, conv: sample(rng, conv, L=12, packed=False)),),
    module=__name__,
    notes="oracle: oracles.selective.ssd_solve (float64 banded solve); bound: oracles.selective.ssd_bound",
))

register_adapter(Adapter(
    name="mamba2.chunk_scan",
    op=OP,
    doc="Mamba-2's mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, "
        "initial_states=None, seq_idx=None, dt_softplus=False, dt_limit=(0, inf), return_final_states=True): "
        "(b, l, h, p) layout, B/C (b, l, g, n), seq_idx (b, l) int32",
    args=(In("x"), In("dt"), In("A"), In("B"), In("C"), Conv(lambda c: int(c["chunk"]))),
    kwargs={"D": In("D"), "z": In("z"), "dt_bias": In("dt_bias"), "initial_states": In("initial_states"),
            "seq_idx": In("seq_idx"), "dt_softplus": Conv(lambda c: bool(c["dt_softplus"])),
            "dt_limit": Conv(lambda c: tuple(c["dt_limit"])), "return_final_states": Const(True)},
    outputs=(Out("y", 0), Out("final_states", 1)),
    implies={"algorithm": "chunked"},
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.ssd (ssd_scan and its per-view functions): fn(x, dt, A, B, C, D, z, dt_bias=, dt_softplus=, "
        "dt_limit=, initial_state=, seq_idx=, return_final_state=True)",
    args=(In("x"), In("dt"), In("A"), In("B"), In("C"), In("D"), In("z")),
    kwargs={"dt_bias": In("dt_bias"), "dt_softplus": Conv(lambda c: bool(c["dt_softplus"])),
            "dt_limit": Conv(lambda c: tuple(c["dt_limit"])), "initial_state": In("initial_states"),
            "seq_idx": In("seq_idx"), "return_final_state": Const(True)},
    outputs=(Out("y", 0), Out("final_states", 1)),
))
