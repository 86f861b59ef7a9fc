r"""Op spec ``ssm.selective_scan`` (Mamba's S6) and its adapters.

Canonical layout = Mamba's ``selective_scan_fn`` (channel-first, unchanged for users' candidates)::

    fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None) -> (out, h_last)

``u``, ``delta``, ``z`` ``(b d l)``; ``A`` ``(d n)`` real or complex; ``B``, ``C`` fixed
``(d n)``, variable ``(b n l)`` or grouped ``(b g n l)``; ``D``, ``delta_bias`` ``(d,)``;
``h0``/``h_last`` ``(b d n)``.  Conventions: ``discretization`` (Mamba's mix: ``B_bar = Delta B``,
or exact ``zoh``), ``delta_softplus``, the complex ``real_output`` (``2re``: Mamba's
``2 Re``; ``re``), and the features a candidate supports (``B_layout``, ``C_layout``,
``complex_A``, ``use_D``, ``use_z``, ``use_delta_bias``, ``use_h0``): every case exercises each
feature the candidate claims and none it does not, and a failing case that would pass with a feature switched off is
diagnosed as "the candidate ignores it" (e.g. a dropped ``D`` skip).  ``algorithm``
(recurrent / scan / chunked) names the candidate's evaluation order, which sets the depth
of the derived bound (:func:`oracles.selective.s6_bound`), not the math.

The oracle and refimpl speak the glossary's sequence-first layout (``u (b l d)``, ``B`` variable
``(b l n)`` / grouped ``(b l g n)``, ``initial_state``); :func:`_seq_first` converts a canonical case once,
and the ``refimpl`` adapter converts per argument.

Oracle: :func:`oracles.selective.s6_solve`, the states as one banded linear solve in float64
(independently checked against mpmath and the dense operator in the family's tests).
"""
from __future__ import annotations

from typing import Any, Dict, List

import zlib

import numpy as np

from oracles.selective import s6_bound, s6_solve
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.probes import causality_probe
from oracles.verify.registry import Arg, Case, Convention, OpSpec, register_op

OP = "ssm.selective_scan"
LAYOUTS = ("fixed", "variable", "grouped", "any")
LENGTHS = (0, 1, 2, 3, 7, 16, 17, 33)


def _eff(inp, conv):
    """Inputs the candidate claims to use (a feature switched off: the input is absent)."""
    x = dict(inp)
    for flag, name in (("use_D", "D"), ("use_z", "z"), ("use_delta_bias", "delta_bias"), ("use_h0", "h0")):
        if not conv[flag]:
            x[name] = None
    return x


def _bc_seq_first(X):
    """Canonical ``B``/``C`` -> the sequence-first layout: fixed ``(d n)`` as is, variable ``(b n l) -> (b l n)``,
    grouped ``(b g n l) -> (b l g n)``."""
    X = np.asarray(X)
    if X.ndim == 3:
        return np.transpose(X, (0, 2, 1))
    if X.ndim == 4:
        return np.transpose(X, (0, 3, 1, 2))
    return X


def _bc_channel_first(X):
    """The inverse of :func:`_bc_seq_first`: variable ``(b l n) -> (b n l)``, grouped ``(b l g n) -> (b g n l)``."""
    X = np.asarray(X)
    if X.ndim == 3:
        return np.transpose(X, (0, 2, 1))
    if X.ndim == 4:
        return np.transpose(X, (0, 2, 3, 1))
    return X


def _seq_first(inp, conv):
    """A canonical case as sequence-first arguments ``(u, delta, A, B, C, D, z), kwargs`` (features the candidate
    does not claim dropped; ``real_output="re"`` folded into ``C``)."""
    x = _eff(inp, conv)
    C = x["C"]
    if conv["real_output"] == "re" and np.iscomplexobj(x["A"]):
        C = np.asarray(C) / 2.0  # Re(C h) = 2 Re((C/2) h): exact (a power-of-two scaling)
    bld = lambda a: None if a is None else np.transpose(np.asarray(a), (0, 2, 1))  # noqa: E731  (b d l) -> (b l d)
    args = (bld(x["u"]), bld(x["delta"]), x["A"], _bc_seq_first(x["B"]), _bc_seq_first(C), x["D"], bld(x["z"]))
    kw = dict(delta_bias=x["delta_bias"], delta_softplus=bool(conv["delta_softplus"]), initial_state=x["h0"],
              discretization=conv["discretization"])
    return args, kw


def _out_canonical(out):
    return np.transpose(out, (0, 2, 1))  # (b l d) -> (b d l)


def oracle(inp, conv) -> Dict[str, np.ndarray]:
    args, kw = _seq_first(inp, conv)
    out, hL = s6_solve(*args, **kw)
    return {"out": _out_canonical(out), "h_last": hL}


def bounds(inp, out, conv, dtype):
    args, kw = _seq_first(inp, conv)
    bo, bs = s6_bound(*args, **kw, dtype=dtype, view=conv["algorithm"], chunk=int(conv["chunk"]))
    return {"out": type(bo)(_out_canonical(np.asarray(bo.values)), bo.source), "h_last": bs}


def reference(inp, conv):
    """Our literal reference (refimpl.ssm.selective.reference.recurrent): the low-precision baseline only."""
    from refimpl.ssm.selective.reference import recurrent

    args, kw = _seq_first(inp, conv)
    out, hL = recurrent(*args, **kw, return_final_state=True)
    return {"out": _out_canonical(out), "h_last": hL}


def _layout(rng, conv, which):
    lay = conv[which]
    if lay == "any":
        lay = ("fixed", "variable", "grouped")[int(rng.integers(0, 3))]
    return lay


def sample(rng: np.random.Generator, conv, *, L=None, b=None, d=None, n=None, a_scale=None) -> Dict[str, Any]:
    b = int(rng.integers(1, 3)) if b is None else b
    d = int(rng.choice([1, 2, 4])) if d is None else d
    n = int(rng.integers(1, 5)) if n is None else n
    L = int(rng.choice(LENGTHS)) if L is None else L
    cplx = bool(conv["complex_A"]) and bool(rng.integers(0, 2))
    A = -np.exp(rng.uniform(-1.0, 1.0, size=(d, n)))
    if a_scale is not None:
        A = A * a_scale
    if cplx:
        A = A + 1j * rng.uniform(-3, 3, size=(d, n))
    if conv["delta_softplus"]:
        delta = rng.normal(-1.5, 1.0, size=(b, d, L))
    else:
        delta = rng.uniform(0.01, 0.5, size=(b, d, L))

    def bc(which):
        lay = _layout(rng, conv, which)
        if lay == "fixed":
            X = rng.standard_normal((d, n))
        elif lay == "variable":
            X = rng.standard_normal((b, n, L))
        else:
            g = int(rng.choice([k for k in (1, 2, 4) if d % k == 0]))
            X = rng.standard_normal((b, g, n, L))
        if cplx:
            X = X + 1j * rng.standard_normal(X.shape)
        return X

    B, C = bc("B_layout"), bc("C_layout")
    inp = {"u": rng.standard_normal((b, d, L)), "delta": delta, "A": A, "B": B, "C": C,
           "D": rng.standard_normal(d) if conv["use_D"] else None,
           "z": rng.standard_normal((b, d, L)) if conv["use_z"] else None,
           "delta_bias": rng.uniform(-0.5, 0.5, size=d) if conv["use_delta_bias"] and conv["delta_softplus"] else (
               rng.uniform(0.0, 0.2, size=d) if conv["use_delta_bias"] else None),
           "h0": None}
    if conv["use_h0"]:
        inp["h0"] = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)
    return inp


def _from_family(p, conv):
    """A problem of the family's strategy (oracles.strategies.selective.s6_problems) as canonical inputs
    under ``conv``: options the candidate does not claim are dropped; a pre-softplus delta is mapped through
    softplus (and the bias made non-negative) when the candidate takes Delta directly.  The strategy draws
    refimpl's sequence-first layout; the canonical one is channel-first (see :func:`_bc_channel_first`)."""
    inp = {k: p.get(k) for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")}
    inp["h0"] = p.get("initial_state")
    for k in ("u", "delta", "z"):
        if inp[k] is not None:
            inp[k] = np.transpose(inp[k], (0, 2, 1))  # (b l d) -> (b d l)
    inp["B"], inp["C"] = _bc_channel_first(inp["B"]), _bc_channel_first(inp["C"])
    if p.get("delta_softplus") and not conv["delta_softplus"]:
        inp["delta"] = np.logaddexp(0.0, inp["delta"])
        if inp["delta_bias"] is not None:
            inp["delta_bias"] = np.abs(inp["delta_bias"])
    # a feature the candidate claims is always exercised: fill what the problem left out (seeded by its data)
    b, d, l = np.shape(inp["u"])
    n = np.shape(inp["A"])[1]
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(inp["u"]).tobytes()))
    if conv["use_D"] and inp["D"] is None:
        inp["D"] = rng.standard_normal(d)
    if conv["use_z"] and inp["z"] is None:
        inp["z"] = rng.standard_normal((b, d, l))
    if conv["use_delta_bias"] and inp["delta_bias"] is None:
        inp["delta_bias"] = rng.uniform(0.0, 0.5, d)
    if conv["use_h0"] and inp["h0"] is None:
        inp["h0"] = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n))
                                                       if np.iscomplexobj(inp["A"]) else 0)
    return _eff(inp, conv)


def strategy(conv):
    from hypothesis import strategies as st

    if conv["B_layout"] == "any" and conv["C_layout"] == "any" and conv["complex_A"]:
        try:  # the family's strategy: every option and A regime drawn, shrinking on sizes and flags
            from oracles.strategies.selective import s6_problems

            return s6_problems(max_len=40).map(lambda p: _from_family(p, conv))
        except ImportError:
            pass
    return st.integers(0, 2**32 - 1).map(lambda s: sample(np.random.default_rng(s), conv))


def cases(conv) -> List[Case]:
    out = []

    def add(cid, kind, note, seed, **kw):
        rng = np.random.default_rng([31, seed])
        out.append(Case(OP, cid, kind, sample(rng, conv, **kw), dict(conv), seed=seed, note=note))

    add("golden-small", "golden", "b=1, d=2, n=3, L=5 seeded", 1, L=5, b=1, d=2, n=3)
    add("edge-L0", "edge", "L = 0: empty output; the final state is h0 (or zeros)", 2, L=0)
    add("edge-L1", "edge", "L = 1", 3, L=1)
    add("edge-A-to-0", "edge", "A -> 0 (|A| ~ 1e-8): the state becomes an accumulator of Delta B u", 4, L=40, d=2,
        a_scale=1e-8)
    add("edge-pow2+1", "edge", "L = 65 (a power of two plus one: padded scans, chunk boundaries)", 5, L=65, d=2, n=2)
    add("edge-long", "edge", "long sequence, L = 2048, one channel", 6, L=2048, b=1, d=1, n=2)
    return out


def _feature(name, doc):
    return Convention(name, True, doc, (True, False))


register_op(OpSpec(
    name=OP,
    summary="Mamba's selective scan (S6): input-dependent Delta, B, C with fixed A; D skip, z gate, initial state",
    inputs=(Arg("u", "b d l"), Arg("delta", "b d l", "raw step (before bias and softplus)"), Arg("A", "d n"),
            Arg("B", "d n | b n l | b g n l", "fixed, variable or grouped"),
            Arg("C", "d n | b n l | b g n l", "fixed, variable or grouped"),
            Arg("D", "d", optional=True), Arg("z", "b d l", "gate: out * silu(z)", optional=True),
            Arg("delta_bias", "d", optional=True), Arg("h0", "b d n", "the state before step 0", optional=True)),
    outputs=(Arg("out", "b d l"), Arg("h_last", "b d n", "h_{L-1} (complex for complex A)", optional=True)),
    conventions=(
        Convention("discretization", "mamba", "B_bar: 'mamba' = Delta B (Euler, Mamba's kernels), 'zoh' = "
                   "Delta phi1(Delta A) B; A_bar = exp(Delta A) always", ("mamba", "zoh")),
        Convention("delta_softplus", False, "Delta = softplus(delta + delta_bias) (threshold 20) instead of "
                   "delta + delta_bias", (False, True)),
        Convention("real_output", "2re", "complex A: y = 2 Re(C h) (Mamba / S4D conjugate pairs) or Re(C h)",
                   ("2re", "re")),
        Convention("B_layout", "any", "which B layouts the candidate accepts", LAYOUTS),
        Convention("C_layout", "any", "which C layouts the candidate accepts", LAYOUTS),
        Convention("complex_A", True, "the candidate accepts complex A", (True, False)),
        _feature("use_D", "the D skip connection out += D u"),
        _feature("use_z", "the gate out *= silu(z)"),
        _feature("use_delta_bias", "delta_bias added to delta before the softplus"),
        _feature("use_h0", "an initial state h0"),
        Convention("algorithm", "recurrent", "the candidate's evaluation order (sets the depth of the bound only): "
                   "recurrent, scan (parallel prefix), chunked", ("recurrent", "scan", "chunked")),
        Convention("chunk", 64, "chunk length for algorithm='chunked'"),
    ),
    oracle=oracle,
    bounds=bounds,
    cases=cases,
    sample=sample,
    strategy=strategy,
    reference=reference,
    probes=(causality_probe({"u": "l", "delta": "l", "z": "l"}, {"out": "l"}),),
    complex_inputs=("A", "B", "C", "h0"),
    module=__name__,
    notes="oracle: oracles.selective.s6_solve (float64 banded solve); bound: oracles.selective.s6_bound",
))


# -- adapters ------------------------------------------------------------------------------------------------

register_adapter(Adapter(
    name="mamba.selective_scan_fn",
    op=OP,
    doc="mamba_ssm's selective_scan_fn / selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, "
        "delta_softplus=False, return_last_state=False): (batch, channels, length) layout, grouped B/C (b g n l), "
        "complex variable B/C passed as real with (re, im) interleaved along L; Euler B, 2 Re, no initial state",
    args=(In("u"), In("delta"), In("A"), In("B", complex="interleave", min_ndim=3, complex_with="A"),
          In("C", complex="interleave", min_ndim=3, complex_with="A"), In("D"), In("z")),
    kwargs={"delta_bias": In("delta_bias"), "delta_softplus": Conv(lambda c: bool(c["delta_softplus"])),
            "return_last_state": Const(True)},
    outputs=(Out("out", 0), Out("h_last", 1)),
    implies={"discretization": "mamba", "real_output": "2re", "use_h0": False},
))

register_adapter(Adapter(
    name="mambapy.selective_scan",
    op=OP,
    doc="mambapy's MambaBlock.selective_scan(x, delta, A, B, C, D) (pass e.g. functools.partial(MambaBlock."
        "selective_scan, None)): sequence-first x, delta (b l d), A (d n), B, C (b l n), D (d,) -> y (b l d); "
        "Delta already softplus'ed, no bias, gate, initial state or complex A; a parallel (Blelloch) scan",
    args=(In("u", "b d l -> b l d"), In("delta", "b d l -> b l d"), In("A"), In("B", "b n l -> b l n"),
          In("C", "b n l -> b l n"), In("D")),
    outputs=(Out("out", None, "b l d -> b d l"),),
    implies={"discretization": "mamba", "delta_softplus": False, "B_layout": "variable", "C_layout": "variable",
             "complex_A": False, "use_z": False, "use_delta_bias": False, "use_h0": False, "algorithm": "scan"},
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.ssm.selective (selective_scan and its per-view functions): fn(u, delta, A, B, C, D, z, "
        "delta_bias=, delta_softplus=, initial_state=, return_final_state=True, discretization=), sequence-first: "
        "u, delta, z (b l d); B, C fixed (d n), variable (b l n) or grouped (b l g n); out (b l d)",
    args=(In("u", "b d l -> b l d"), In("delta", "b d l -> b l d"), In("A"), In("B", transform=_bc_seq_first),
          In("C", transform=_bc_seq_first), In("D"), In("z", "b d l -> b l d")),
    kwargs={"delta_bias": In("delta_bias"), "delta_softplus": Conv(lambda c: bool(c["delta_softplus"])),
            "initial_state": In("h0"), "return_final_state": Const(True),
            "discretization": Conv(lambda c: c["discretization"])},
    outputs=(Out("out", 0, "b l d -> b d l"), Out("h_last", 1)),
))
