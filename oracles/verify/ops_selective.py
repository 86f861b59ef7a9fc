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

Every argument path runs by default (issue 11): the cases cover real and complex ``A``, each B/C layout the
candidate accepts, groups with ``1 < g < d`` (so a ``(h g)`` group order cannot pass), ``L = 0, 1``, odd ``L``,
``L = chunk -+ 1``, ``|Delta A|`` in the range where a ``phi1`` series is used, and (with ``delta_softplus``)
pre-activations past the softplus threshold; every claimed feature is in every case, and the
``argument_paths`` probe (:func:`oracles.verify.ops_attention.argument_paths_probe`) runs the candidate once
more under each other value of every convention its adapter passes as an argument (``delta_softplus=True``
through Mamba's interface, ``discretization='zoh'`` through refimpl's) and once without each claimed optional
input (``h0`` given and not, ``D``, ``z``, ``delta_bias``).

Adapters fix only the layout and the argument names: a convention a candidate in that layout could implement
either way (``discretization``, ``real_output``, ``algorithm``, a hard-wired ``delta_softplus``, complex ``A``)
stays a convention the candidate declares; ``implies`` holds only what the interface cannot express (an input
it has no argument for, a layout its argument cannot hold).

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
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, claimed_inputs, feature_convention,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "ssm.selective_scan"
LAYOUTS = ("fixed", "variable", "grouped", "any")
LENGTHS = (0, 1, 2, 3, 7, 16, 17, 33)


def _eff(inp, conv):
    """Inputs the candidate claims to use (a feature switched off: the input is absent)."""
    return claimed_inputs(inp, conv, use_D="D", use_z="z", use_delta_bias="delta_bias", use_h0="h0")


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


def _layout(rng, conv, which, prefer=None):
    """The layout of ``B`` or ``C`` in one case: the candidate's, or (``"any"``) ``prefer`` / a random one."""
    lay = conv[which]
    if lay == "any":
        lay = prefer or ("fixed", "variable", "grouped")[int(rng.integers(0, 3))]
    return lay


def sample(rng: np.random.Generator, conv, *, L=None, b=None, d=None, n=None, a_scale=None, a_range=None, cplx=None,
           g=None, layouts=None, big_delta=False) -> Dict[str, Any]:
    """One seeded case under ``conv``, canonical layout.  ``cplx``: complex ``A`` (only when the candidate claims
    ``complex_A``; ``None``: a coin flip); ``g``: the group count of grouped ``B``/``C`` (one count for both, as
    the canonical signature shares it; default a divisor of ``d``); ``layouts``: the preferred ``(B, C)`` layouts
    where the candidate accepts any; ``big_delta``: with ``delta_softplus``, some pre-activations past the softplus
    threshold (20); ``a_range = (lo, hi)``: ``|Re A|`` log-uniform in ``[lo, hi]``."""
    b = int(rng.integers(1, 3)) if b is None else b
    d = int(rng.choice([1, 2, 4])) if d is None else d
    n = int(rng.integers(1, 5)) if n is None else n
    L = int(rng.choice(LENGTHS)) if L is None else L
    cplx = bool(conv["complex_A"]) and (bool(rng.integers(0, 2)) if cplx is None else bool(cplx))
    A = -np.exp(rng.uniform(-1.0, 1.0, size=(d, n)) if a_range is None else
                rng.uniform(np.log(a_range[0]), np.log(a_range[1]), size=(d, n)))
    if a_scale is not None:
        A = A * a_scale
    if cplx:
        A = A + 1j * rng.uniform(-3, 3, size=(d, n))
    if conv["delta_softplus"]:
        delta = rng.normal(-1.5, 1.0, size=(b, d, L))
        if big_delta:  # every third step past the threshold: softplus(x) = x there (Mamba's and PyTorch's 20)
            delta[..., ::3] = rng.uniform(20.5, 24.0, size=delta[..., ::3].shape)
    else:
        delta = rng.uniform(0.01, 0.5, size=(b, d, L))
    if g is None:
        g = int(rng.choice([k for k in (1, 2, 4) if d % k == 0]))
    prefer = tuple(layouts) if layouts is not None else (None, None)

    def bc(which, pref):
        lay = _layout(rng, conv, which, pref)
        if lay == "fixed":
            X = rng.standard_normal((d, n))
        elif lay == "variable":
            X = rng.standard_normal((b, n, L))
        else:  # grouped B and C share one group count g (the canonical (b g n l) of both)
            X = rng.standard_normal((b, g, n, L))
        if cplx:
            X = X + 1j * rng.standard_normal(X.shape)
        return X

    B, C = bc("B_layout", prefer[0]), bc("C_layout", prefer[1])
    inp = {"u": rng.standard_normal((b, d, L)), "delta": delta, "A": A, "B": B, "C": C,
           "D": rng.standard_normal(d) if conv["use_D"] else None,
           "z": rng.standard_normal((b, d, L)) if conv["use_z"] else None,
           "delta_bias": rng.uniform(-0.5, 0.5, size=d) if conv["use_delta_bias"] and conv["delta_softplus"] else (
               rng.uniform(0.0, 0.2, size=d) if conv["use_delta_bias"] else None),
           "h0": None}
    if conv["use_h0"]:
        inp["h0"] = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)
    return inp


def _common_groups(B, C):
    """Grouped ``B``, ``C`` ``(b g n l)`` drawn with different group counts, as the same per-channel ``B``, ``C``
    with ``lcm(g_B, g_C)`` groups: channel ``c`` reads group ``c // (d / g)``, so repeating each group
    ``lcm / g`` times leaves every channel's values as they were (the canonical signature shares ``g``)."""
    B, C = np.asarray(B), np.asarray(C)
    if B.ndim != 4 or C.ndim != 4 or B.shape[1] == C.shape[1]:
        return B, C
    g = np.lcm(B.shape[1], C.shape[1])
    return np.repeat(B, g // B.shape[1], axis=1), np.repeat(C, g // C.shape[1], axis=1)


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
    inp["B"], inp["C"] = _common_groups(_bc_channel_first(inp["B"]), _bc_channel_first(inp["C"]))
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
    if conv["B_layout"] == "any" and conv["C_layout"] == "any" and conv["complex_A"]:
        try:  # the family's strategy: every option and A regime drawn, shrinking on sizes and flags
            from oracles.strategies.selective import s6_problems

            return s6_problems(max_len=40).map(lambda p: _from_family(p, conv))
        except ImportError:
            pass
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    """Golden and edge cases: together they take every path of the math the candidate claims (see the module
    docstring); the random cases then vary everything at once."""
    T = int(conv["chunk"])
    add = case_builder(OP, sample, 31, conv)
    out = add.cases

    add("golden-small", "golden", "b=1, d=2, n=3, L=5 seeded, real A", 1, L=5, b=1, d=2, n=3, cplx=False)
    add("edge-L0", "edge", "L = 0: empty output; the final state is h0 (or zeros)", 2, L=0)
    add("edge-L1", "edge", "L = 1", 3, L=1)
    add("edge-groups", "edge", "d = 4 channels in g = 2 groups of grouped B and C (channel c reads group c // 2), "
        "L = 7, real A", 9, L=7, b=2, d=4, n=3, g=2, cplx=False, layouts=("grouped", "grouped"))
    if conv["complex_A"]:
        add("edge-complex", "edge", "complex A (2 Re), variable B, grouped C with g = 2 of d = 4, L = 9", 10, L=9,
            b=2, d=4, n=2, g=2, cplx=True, layouts=("variable", "grouped"))
    add("edge-A-to-0", "edge", "A -> 0 (|A| ~ 1e-8): the state becomes an accumulator of Delta B u", 4, L=40, d=2,
        a_scale=1e-8)
    add("edge-small-dtA", "edge", "|A| log-uniform in [1e-6, 1e-1], so |Delta A| spans [1e-8, 5e-2]: where "
        "phi1 = (e^x - 1)/x is evaluated by a series", 11, L=12, d=2, n=8, a_range=(1e-6, 1e-1), cplx=False)
    if conv["delta_softplus"]:
        add("edge-softplus-threshold", "edge", "pre-activations delta + bias past 20, where softplus(x) = x", 12,
            L=9, d=2, n=2, big_delta=True)
    lengths = [(max(T - 1, 0), "edge-chunk-1", f"L = chunk - 1 = {T - 1}"),
               (T + 1, "edge-chunk+1", f"L = chunk + 1 = {T + 1}: a short last chunk")]
    if 65 not in (T - 1, T + 1):
        lengths.append((65, "edge-pow2+1", "L = 65 (a power of two plus one: padded scans)"))
    for i, (Lk, cid, note) in enumerate(lengths):
        add(cid, "edge", note, 5 + 10 * i, L=Lk, b=1, d=2, n=2)
    add("edge-long", "edge", "long sequence, L = 2048, one channel", 6, L=2048, b=1, d=1, n=2)
    return out


def _paths_sample(rng, conv):
    """The argument-paths probe's inputs: L = 9, d = 4 channels in 2 groups where grouped layouts are accepted."""
    return sample(rng, conv, L=9, b=2, d=4, n=3, g=2, layouts=("grouped", "variable"))


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
        feature_convention("use_D", "the D skip connection out += D u"),
        feature_convention("use_z", "the gate out *= silu(z)"),
        feature_convention("use_delta_bias", "delta_bias added to delta before the softplus"),
        feature_convention("use_h0", "an initial state h0"),
        Convention("algorithm", "recurrent", "the candidate's evaluation order (sets the depth of the bound only): "
                   "recurrent, scan (parallel prefix), chunked", ("recurrent", "scan", "chunked")),
        Convention("chunk", 64, "chunk length for algorithm='chunked'"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"u": "l", "delta": "l", "z": "l"}, {"out": "l"}),
            argument_paths_probe(optional={"use_D": ("D",), "use_z": ("z",), "use_delta_bias": ("delta_bias",),
                                           "use_h0": ("h0",)}, sampler=_paths_sample)),
    complex_inputs=("A", "B", "C", "h0"),
    domain=op_domain(length=("l", "L"), state_dim=("n", "n"), channels=("d", "d")),
    module=__name__,
    notes="oracle: oracles.selective.s6_solve (float64 banded solve); bound: oracles.selective.s6_bound",
))


# -- adapters ------------------------------------------------------------------------------------------------

register_adapter(Adapter(
    name="mamba.selective_scan_fn",
    op=OP,
    doc="mamba_ssm's selective_scan_fn / selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, "
        "delta_softplus=False, return_last_state=False): (batch, channels, length) layout, grouped B/C (b g n l), "
        "complex variable B/C passed as real with (re, im) interleaved along L; no initial state (the kernels' "
        "Euler B and 2 Re are the defaults of discretization and real_output, declared like any other convention)",
    args=(In("u"), In("delta"), In("A"), In("B", complex="interleave", min_ndim=3, complex_with="A"),
          In("C", complex="interleave", min_ndim=3, complex_with="A"), In("D"), In("z")),
    kwargs={"delta_bias": In("delta_bias"), "delta_softplus": Conv(lambda c: bool(c["delta_softplus"])),
            "return_last_state": Const(True)},
    outputs=(Out("out", 0), Out("h_last", 1)),
    implies={"use_h0": False},
))

class _RequiredDAdapter(Adapter):
    """An interface whose ``D`` is a required argument (mambapy computes ``y + D * x`` unconditionally): without a
    ``D`` the candidate gets zeros, the one ``D`` that adds nothing (``D = 0`` and no ``D`` are the same math)."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        if inputs.get("D") is None and inputs.get("u") is not None:
            u = np.asarray(inputs["u"])
            inputs = dict(inputs, D=np.zeros(u.shape[1], dtype=u.dtype))
        return super().build_call(spec, inputs, conv, dims, convert)


register_adapter(_RequiredDAdapter(
    name="mambapy.selective_scan",
    op=OP,
    doc="mambapy's MambaBlock.selective_scan(x, delta, A, B, C, D) (pass e.g. functools.partial(MambaBlock."
        "selective_scan, None)), or selective_scan_seq: sequence-first x, delta (b l d), A (d n), B, C (b l n), "
        "D (d,) -> y (b l d); no bias, gate or initial state argument, D required (zeros when a case has none).  "
        "Declare what the code does: mambapy's Delta is already softplus'ed (delta_softplus=False, the default), "
        "its A is real (complex_A=False), and selective_scan is a parallel scan (algorithm='scan'; "
        "selective_scan_seq is 'recurrent')",
    args=(In("u", "b d l -> b l d"), In("delta", "b d l -> b l d"), In("A"), In("B", "b n l -> b l n"),
          In("C", "b n l -> b l n"), In("D")),
    outputs=(Out("out", None, "b l d -> b d l"),),
    implies={"B_layout": "variable", "C_layout": "variable", "use_z": False, "use_delta_bias": False,
             "use_h0": False},
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
