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

Every argument path runs by default (issue 11): the cases cover one and several heads, groups with
``1 < g < h`` (a ``(h g)`` group order cannot pass), ``D`` per head and per channel, ``L = 0, 1``, odd ``L``,
``L = chunk -+ 1``, several packed sequences (one boundary on a chunk boundary, one inside a chunk) when
``seq_idx`` is claimed, an active ``dt_limit`` on both sides when one is declared, and (with ``dt_softplus``)
pre-activations past the softplus threshold; every claimed feature is in every case, and the
``argument_paths`` probe runs the candidate once more under each other value of every convention its adapter
passes as an argument (``dt_softplus``, an active ``dt_limit``, another ``chunk``) and once without each claimed
optional input (an initial state given and not, ``D``, ``z``, ``dt_bias``, ``seq_idx``).

Adapters fix only the layout and the argument names; ``algorithm`` (the bound's depth), a hard-wired
``dt_softplus`` or ``dt_limit`` stay conventions the candidate declares.  Upstream's pure-PyTorch references
have adapters of their own: ``mamba2.chunk_scan_ref`` (``ssd_chunk_scan_combined_ref``: no initial state, no
``seq_idx``, returns ``y`` only) and ``mamba2.ssd_minimal_discrete`` (Listing 1 of the Mamba-2 paper: the
discretized ``X = x dt``, ``A dt`` per step, per-head ``B``/``C``, ``block_len`` = the chunk).

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
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, claimed_inputs, draw_sizes,
                                     feature_convention, op_domain, op_functions, register_op, seeded_strategy)

OP = "ssm.ssd"
LENGTHS = (0, 1, 2, 3, 7, 16, 17)
DT_LIMIT_PATH = (0.1, 0.3)  # the dt_limit the argument-paths probe passes: typical steps fall on both sides


def _eff(inp, conv):
    return claimed_inputs(inp, conv, use_D="D", use_z="z", use_dt_bias="dt_bias", use_initial_states="initial_states",
                          use_seq_idx="seq_idx")


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


def reference(inp, conv, lowp=None):
    """refimpl's recurrent SSD; ``lowp`` (the harness's low-precision baseline): step by step, the state ``S_t``
    stored in that dtype after every step (a loop in the dtype rounds its state every step), each step refimpl's
    recurrence on a one-step sequence from the stored state (float32 arithmetic); a ``seq_idx`` boundary starts a
    step from a zero state."""
    from refimpl.ssm.ssd.reference import recurrent

    x = _eff(inp, conv)
    if lowp is None:
        y, S = recurrent(x["x"], x["dt"], x["A"], x["B"], x["C"], x["D"], x["z"], return_final_state=True,
                         **_kw(x, conv))
        return {"y": y, "final_states": S}
    from oracles.verify._lowp_storage import storer

    rnd = storer(lowp)
    f = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
    X, dt, A, B, C, D, z = (f(x[k]) for k in ("x", "dt", "A", "B", "C", "D", "z"))
    b, l, h, p = X.shape
    seq = x["seq_idx"]
    kw = dict(_kw(x, conv), seq_idx=None, dt_bias=f(x["dt_bias"]))
    S0 = kw.pop("initial_state")
    S = rnd(np.zeros((b, h, p, B.shape[3]), np.float32) if S0 is None else f(S0))
    sl = lambda a, t: None if a is None else a[:, t:t + 1]  # noqa: E731
    ys = []
    for t in range(l):
        if seq is not None and t > 0:
            S = S * (np.asarray(seq)[:, t] == np.asarray(seq)[:, t - 1]).astype(np.float32)[:, None, None, None]
        y_t, S = recurrent(sl(X, t), sl(dt, t), A, sl(B, t), sl(C, t), D, sl(z, t), return_final_state=True,
                           initial_state=S, **kw)
        S = rnd(S)
        ys.append(y_t)
    y = np.concatenate(ys, axis=1) if ys else np.zeros((b, 0, h, p), np.float32)
    return {"y": y, "final_states": S}


def _limit_active(conv) -> bool:
    lo, hi = conv["dt_limit"]
    return not (lo == 0.0 and hi == math.inf)


def sample(rng, conv, *, L=None, b=None, h=None, p=None, n=None, a_scale=None, packed=None, g=None, D_shape=None,
           cuts=None, straddle=False, big_dt=False):
    """One seeded case under ``conv``.  ``g``: groups of ``B``/``C`` (a divisor of ``h``); ``D_shape``: ``"h"`` or
    ``"hp"``; ``packed``/``cuts``: several sequences per row (``cuts``: the positions where a new one starts);
    ``straddle``: steps spread across the declared ``dt_limit`` (some below ``lo``, some above ``hi``);
    ``big_dt``: with ``dt_softplus``, some pre-activations past the softplus threshold (20)."""
    b = int(rng.integers(1, 3)) if b is None else b
    h = int(rng.choice([1, 2, 4])) if h is None else h
    p, n = draw_sizes(rng, p=(p, 1, 4), n=(n, 1, 5))
    L = int(rng.choice(LENGTHS)) if L is None else L
    g = int(rng.choice([k for k in (1, 2, 4) if h % k == 0])) if g is None else g
    A = -np.exp(rng.uniform(-1.0, 1.0, size=h)) * (1.0 if a_scale is None else a_scale)
    dt = rng.normal(-1.5, 1.0, size=(b, L, h)) if conv["dt_softplus"] else rng.uniform(0.01, 0.5, size=(b, L, h))
    if straddle and _limit_active(conv):
        lo, hi = conv["dt_limit"]
        top = min(hi * 2.0, hi + 1.0) if hi < math.inf else lo + 1.0
        eff = rng.uniform(lo / 2.0, top, size=(b, L, h))  # effective steps on both sides of [lo, hi]
        dt = np.log(np.expm1(np.maximum(eff, 1e-3))) if conv["dt_softplus"] else eff
    if big_dt and conv["dt_softplus"]:
        dt[:, ::3] = rng.uniform(20.5, 24.0, size=dt[:, ::3].shape)
    inp = {"x": rng.standard_normal((b, L, h, p)), "dt": dt, "A": A,
           "B": rng.standard_normal((b, L, g, n)), "C": rng.standard_normal((b, L, g, n)),
           "D": None, "z": None, "dt_bias": None, "initial_states": None, "seq_idx": None}
    if conv["use_D"]:
        D_shape = D_shape or ("h" if rng.random() < 0.5 else "hp")
        inp["D"] = rng.standard_normal(h) if D_shape == "h" else rng.standard_normal((h, p))
    if conv["use_z"]:
        inp["z"] = rng.standard_normal((b, L, h, p))
    if conv["use_dt_bias"]:
        inp["dt_bias"] = rng.uniform(-0.5, 0.5, size=h) if conv["dt_softplus"] else rng.uniform(0.0, 0.2, size=h)
        if straddle and _limit_active(conv) and not conv["dt_softplus"]:
            inp["dt_bias"] = np.zeros(h)  # the straddling steps are the effective ones
    if conv["use_initial_states"]:
        inp["initial_states"] = rng.standard_normal((b, h, p, n))
    if conv["use_seq_idx"]:
        inp["seq_idx"] = np.zeros((b, L), dtype=np.int32)
        if cuts is None and (packed if packed is not None else rng.random() < 0.5) and L > 2:
            cuts = sorted(int(c) for c in rng.choice(np.arange(1, L), size=2, replace=False))  # three sequences
        if cuts:
            t = np.arange(L)
            inp["seq_idx"] = np.stack([sum((t >= c).astype(np.int32) for c in cuts) for _ in range(b)]).astype(np.int32)
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
    try:  # the family's strategy: every option and A regime drawn
        from oracles.strategies.selective import ssd_problems

        return ssd_problems(max_len=40, allow_seq_idx=bool(conv["use_seq_idx"])).map(lambda p: _from_family(p, conv))
    except ImportError:
        return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    """Golden and edge cases: together they take every path of the math the candidate claims (see the module
    docstring); the random cases then vary everything at once."""
    T = int(conv["chunk"])
    add = case_builder(OP, sample, 53, conv)
    out = add.cases

    add("golden-small", "golden", "b=1, l=6, h=2, p=2, n=3, one group, D per head", 1, L=6, b=1, h=2, p=2, n=3, g=1,
        packed=False, D_shape="h")
    add("edge-L0", "edge", "L = 0: empty output; the final state is the initial one", 2, L=0)
    add("edge-L1", "edge", "L = 1", 3, L=1)
    add("edge-groups", "edge", "h = 4 heads in g = 2 groups (head j reads group j // 2), D per channel, L = 7", 9, L=7,
        b=2, h=4, p=2, n=3, g=2, D_shape="hp")
    add("edge-chunk-1", "edge", f"L = chunk - 1 = {T - 1}", 4, L=max(T - 1, 0), b=1, h=2, p=2, n=2)
    add("edge-chunk+1", "edge", f"L = chunk + 1 = {T + 1}: a short last chunk", 5, L=T + 1, b=1, h=2, p=2, n=2)
    add("edge-A-to-0", "edge", "A -> 0 (|A| ~ 1e-8): the state accumulates", 6, L=40, b=1, h=2, a_scale=1e-8)
    if conv["use_seq_idx"]:
        add("edge-packed", "edge", "three packed sequences in each row (seq_idx)", 7, L=20, b=2, h=2, cuts=(6, 13))
        add("edge-packed-chunk", "edge", f"sequences starting at t = 3, on the chunk boundary t = {T} and inside the "
            f"second chunk (t = {T + 2}), L = {T + 5}", 10, L=T + 5, b=1, h=2, p=2, n=2, cuts=(3, T, T + 2))
    if _limit_active(conv):
        lo, hi = conv["dt_limit"]
        add("edge-dt-limit", "edge", f"steps on both sides of dt_limit = ({lo:g}, {hi:g}): the clamp active", 11,
            L=12, b=2, h=2, p=2, n=2, straddle=True)
    if conv["dt_softplus"]:
        add("edge-softplus-threshold", "edge", "pre-activations dt + dt_bias past 20, where softplus(x) = x", 12,
            L=9, b=1, h=2, p=2, n=2, big_dt=True)
    add("edge-long", "edge", "long sequence, L = 1024", 8, L=1024, b=1, h=1, p=1, n=2, packed=False)
    return out


def _paths_sample(rng, conv):
    """The argument-paths probe's inputs: L = 19 (two chunks of 8 and a short one), 4 heads in 2 groups, three
    packed sequences where ``seq_idx`` is claimed, steps across the ``dt_limit`` alternative."""
    return sample(rng, conv, L=19, b=2, h=4, p=2, n=3, g=2, cuts=(5, 11), straddle=True)


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
        feature_convention("use_D", "the D skip y += D x (D per head or per channel)"),
        feature_convention("use_z", "the gate y *= silu(z)"),
        feature_convention("use_dt_bias", "dt_bias added before the softplus"),
        feature_convention("use_initial_states", "an initial state"),
        feature_convention("use_seq_idx", "packed sequences (seq_idx): no state across a boundary"),
        Convention("algorithm", "recurrent", "evaluation order, for the bound's depth: recurrent, quadratic, chunked",
                   ("recurrent", "quadratic", "chunked")),
        Convention("chunk", 64, "the chunk length (algorithm='chunked'; also sets the chunk +- 1 edge cases)"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x": "l", "dt": "l", "B": "l", "C": "l", "z": "l"}, {"y": "l"},
                            sampler=lambda rng, conv: sample(rng, conv, L=12, packed=False)),
            argument_paths_probe(alternatives={"dt_limit": (DT_LIMIT_PATH,), "chunk": (8,)},
                                 optional={"use_D": ("D",), "use_z": ("z",), "use_dt_bias": ("dt_bias",),
                                           "use_initial_states": ("initial_states",), "use_seq_idx": ("seq_idx",)},
                                 sampler=_paths_sample)),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n"), head_dim=("p", "p"), heads=("h", "h"),
                     groups=("g", "g", "the B/C groups g (groups=1: one B, C shared by every head)")),
    module=__name__,
    notes="oracle: oracles.selective.ssd_solve (float64 banded solve); bound: oracles.selective.ssd_bound",
))

register_adapter(Adapter(
    name="mamba2.chunk_scan",
    op=OP,
    doc="Mamba-2's mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, "
        "initial_states=None, seq_idx=None, dt_softplus=False, dt_limit=(0, inf), return_final_states=True): "
        "(b, l, h, p) layout, B/C (b, l, g, n), seq_idx (b, l) int32; declare algorithm='chunked' for the chunked "
        "kernels (the bound's depth) and the chunk you run",
    args=(In("x"), In("dt"), In("A"), In("B"), In("C"), Conv(lambda c: int(c["chunk"]))),
    kwargs={"D": In("D"), "z": In("z"), "dt_bias": In("dt_bias"), "initial_states": In("initial_states"),
            "seq_idx": In("seq_idx"), "dt_softplus": Conv(lambda c: bool(c["dt_softplus"])),
            "dt_limit": Conv(lambda c: tuple(c["dt_limit"])), "return_final_states": Const(True)},
    outputs=(Out("y", 0), Out("final_states", 1)),
))

register_adapter(Adapter(
    name="mamba2.chunk_scan_ref",
    op=OP,
    doc="Mamba-2's pure-PyTorch ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk_size, D=None, z=None, "
        "dt_bias=None, dt_softplus=False) -> y: the mamba2.chunk_scan layout without initial states, seq_idx, "
        "dt_limit or the final state (its chunk_scan_ref needs whole chunks: --domain length_multiple=CHUNK)",
    args=(In("x"), In("dt"), In("A"), In("B"), In("C"), Conv(lambda c: int(c["chunk"]))),
    kwargs={"D": In("D"), "z": In("z"), "dt_bias": In("dt_bias"),
            "dt_softplus": Conv(lambda c: bool(c["dt_softplus"]))},
    outputs=(Out("y", None),),
    implies={"use_initial_states": False, "use_seq_idx": False},
))


class _DiscretizedAdapter(Adapter):
    """Listing 1 of the Mamba-2 paper (``ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None)``) takes
    the discretized inputs: ``X = x dt`` (b l h p), ``A dt`` per step (b l h), ``B``/``C`` per head (b l h n), the
    initial state with a chunk axis (b 1 h p n); ``block_len`` is the chunk.  The products are formed here in the
    candidate's dtype (one rounding each, the roundings of ``dt x`` and ``dt A`` the bound already counts)."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        x, dt, A = (np.asarray(inputs[k]) for k in ("x", "dt", "A"))
        h = x.shape[2]
        heads = lambda G: G[:, :, (np.arange(h) * G.shape[2]) // h]  # noqa: E731  head j reads group j g / h
        args = [convert(x * dt[..., None]), convert(dt * A), convert(heads(np.asarray(inputs["B"]))),
                convert(heads(np.asarray(inputs["C"]))), int(conv["chunk"])]
        S0 = inputs.get("initial_states")
        kwargs = {} if S0 is None else {"initial_states": convert(np.asarray(S0)[:, None])}
        return args, kwargs


register_adapter(_DiscretizedAdapter(
    name="mamba2.ssd_minimal_discrete",
    op=OP,
    doc="Mamba-2's ssd_minimal_discrete(X, A, B, C, block_len, initial_states=None) -> (Y, final_state) (the paper's "
        "Listing 1): called with X = x dt, A dt (b l h), B and C per head (b l h n), initial_states (b 1 h p n), "
        "block_len = the chunk; it needs whole blocks (--domain length_multiple=CHUNK) and has no D, z, dt bias, "
        "softplus, dt_limit or seq_idx",
    outputs=(Out("y", 0), Out("final_states", 1)),
    implies={"use_D": False, "use_z": False, "use_dt_bias": False, "dt_softplus": False, "dt_limit": (0.0, math.inf),
             "use_seq_idx": False},
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
