r"""Op spec ``attention.aft``: the Attention Free Transformer (Zhai et al. 2021), its conventions and adapters.

Canonical (sequence-first, refimpl's layout)::

    fn(q, k, v, w=None) -> y
    q, k, v, y (b l d); w (l l) the pair-wise position biases w[t, t'] (absent for AFT-simple)

    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w'_{t,t'}) V_t' / sum_t' exp(K_t' + w'_{t,t'})   (elementwise in d)

Conventions (what the candidate computes; a canonical candidate takes no options):

* ``variant``: ``full`` (``w' = w``), ``simple`` (``w' = 0``, no ``w`` input), ``local`` (``w' = w`` inside the
  window, **0** outside: every key still counts -- the paper's AFT-local, not local attention);
* ``causal``: the sums run over ``t' <= t``;
* ``window_left``, ``window_right``: AFT-local's window in refimpl's spelling, inclusive key counts
  ``t - left <= t' <= t + right`` (ignored unless ``variant="local"``; ``right`` is moot when causal).  The paper
  spells it ``s`` with ``|t - t'| < s``: ``s = left + 1 = right + 1`` (the ``paper_s`` and ``labml.aft_local``
  adapters translate; a window they cannot express is refused with an error naming the convention).

Oracle: :func:`oracles.aft.aft_mpmath` (small) / :func:`oracles.aft.aft_fsum` (large), dense materialization with
the kept and biased keys built as Python sets; bound :func:`oracles.aft.aft_bound`.  Probes: causality (when
causal), argument paths (every other variant, causal and window the adapter passes).
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.aft import MPMATH_WORK, aft_bound, aft_oracle
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.aft"
VARIANTS = ("full", "simple", "local")


def _window(conv):
    if conv["variant"] != "local":
        return None
    left, right = int(conv["window_left"]), int(conv["window_right"])
    if left < 0 or right < 0:
        raise ValueError(f"window_left/window_right: expected counts >= 0, got ({left}, {right})")
    return left, right


def _w(inp, conv):
    return None if conv["variant"] == "simple" else inp.get("w")


def _args(inp, conv):
    return (inp["q"], inp["k"], inp["v"], _w(inp, conv)), dict(variant=conv["variant"], causal=bool(conv["causal"]),
                                                               window=_window(conv))


def oracle(inp, conv):
    a, kw = _args(inp, conv)
    return {"y": aft_oracle(*a, **kw)[0]}


def bounds(inp, out, conv, dtype):
    a, kw = _args(inp, conv)
    b, l, d = np.shape(inp["q"])
    od = None if b * l * l * d <= MPMATH_WORK else np.float64  # the oracle aft_oracle used
    return {"y": aft_bound(*a, **kw, dtype=dtype, oracle_dtype=od)}


def reference(inp, conv):
    """The low-precision baseline: refimpl's materialized view in the inputs' dtype."""
    from refimpl.attention.aft import aft_attention

    (q, k, v, w), kw = _args(inp, conv)
    win = kw["window"]
    if win is not None and kw["causal"]:
        win = (win[0], 0)
    return {"y": aft_attention(q, k, v, w, variant=kw["variant"], causal=kw["causal"], window=win)}


def sample(rng, conv, *, l=None, b=None, d=None):
    b, d = draw_sizes(rng, b=(b, 1, 3), d=(d, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 5, 8, 9])) if l is None else l
    inp = {"q": rng.standard_normal((b, l, d)), "k": 1.5 * rng.standard_normal((b, l, d)),
           "v": rng.standard_normal((b, l, d)), "w": None}
    if conv["variant"] != "simple":
        inp["w"] = rng.uniform(-2.0, 2.0, (l, l))
    return inp


def strategy(conv):
    return seeded_strategy(sample, conv)


def _large_keys(inp, key_scale: float = 1.0):
    if key_scale != 1.0 and np.size(inp["k"]):
        k = inp["k"] * key_scale
        k[:, -1] = np.abs(k).max() + 1000.0  # the largest key last (by > 745: exp underflows): a max over every key wipes out causal rows
        inp = dict(inp, k=k)
    return inp


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 71, conv, prepare=_large_keys)
    add("golden-small", "golden", "b=1, l=5, d=2", 1, l=5, b=1, d=2)
    add("edge-L0", "edge", "L = 0: an empty output", 2, l=0)
    add("edge-L1", "edge", "L = 1: y = sigmoid(q) v", 3, l=1)
    add("edge-window-edges", "edge", "l = 9: queries near both ends of the sequence and of the window", 4,
        l=9, b=1, d=3)
    add("edge-large-keys", "edge", "|K| ~ 1000 and the largest key last: needs max subtraction per kept row", 5,
        l=7, b=1, d=2, key_scale=700.0)
    add("edge-long", "edge", "l = 48 (float64 fsum oracle)", 6, l=48, b=1, d=2)
    return add.cases


def _causal(conv):
    return bool(conv["causal"])


register_op(OpSpec(
    name=OP,
    summary="the Attention Free Transformer (Zhai et al. 2021): AFT-full, AFT-simple and AFT-local, causal or not",
    inputs=(Arg("q", "b l d"), Arg("k", "b l d"), Arg("v", "b l d"),
            Arg("w", "l l", "position biases w[t, t'] (variant full/local)", optional=True)),
    outputs=(Arg("y", "b l d"),),
    conventions=(
        Convention("variant", "full", "full: w' = w; simple: w' = 0 (no w); local: w' = w inside the window, 0 "
                   "outside (every key still counts)", VARIANTS),
        Convention("causal", False, "the sums over t' run over t' <= t", (False, True)),
        Convention("window_left", 1, "AFT-local: the bias applies to keys t' >= t - window_left (the paper's "
                   "s = window_left + 1)"),
        Convention("window_right", 1, "AFT-local: the bias applies to keys t' <= t + window_right (moot when causal)"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"q": "l", "k": "l", "v": "l"}, {"y": "l"}, applies=_causal,
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),
            argument_paths_probe(alternatives={"window_left": (0, 3), "window_right": (0, 2)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=7, b=1))),
    domain=op_domain(length=("l", "l"), channels=("d", "d")),
    module=__name__,
    notes="oracle: oracles.aft (mpmath small / float64 fsum large, kept and biased keys as Python sets); bound: "
          "oracles.aft.aft_bound",
))


# ---------------------------------------------------------------------------------------------------- adapters

def _refimpl_window(c):
    if c["variant"] != "local":
        return None
    return (int(c["window_left"]), 0 if c["causal"] else int(c["window_right"]))


register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.aft.aft_attention(q, k, v, w, variant=, causal=, window=(left, right)): the window in "
        "refimpl's inclusive (left, right) (right = 0 when causal); view='windowed', backend='numba' for the kernel",
    args=(In("q"), In("k"), In("v"), In("w")),
    kwargs={"variant": Conv(lambda c: c["variant"]), "causal": Conv(lambda c: bool(c["causal"])),
            "window": Conv(_refimpl_window)},
    outputs=(Out("y", None),),
))


def paper_s(c):
    """The paper's AFT-local window ``s`` (``|t - t'| < s``) from ``(window_left, window_right)``: ``left + 1``,
    which must equal ``right + 1`` unless causal (the paper's window is symmetric)."""
    if c["variant"] != "local":
        return None
    left, right = int(c["window_left"]), int(c["window_right"])
    if not c["causal"] and left != right:
        raise ValueError(f"window_left/window_right: the paper's s (|t - t'| < s) is symmetric, it cannot spell "
                         f"({left}, {right})")
    return left + 1


register_adapter(Adapter(
    name="paper_s",
    op=OP,
    doc="fn(q, k, v, w, variant=, causal=, s=): the paper's spelling of AFT-local's window, w'_{t,t'} = w_{t,t'} "
        "iff |t - t'| < s (s = window_left + 1 = window_right + 1; s omitted unless variant='local')",
    args=(In("q"), In("k"), In("v"), In("w")),
    kwargs={"variant": Conv(lambda c: c["variant"]), "causal": Conv(lambda c: bool(c["causal"])), "s": Conv(paper_s)},
    outputs=(Out("y", None),),
))

register_adapter(Adapter(
    name="labml.aft_local",
    op=OP,
    doc="labml.ai's AFTLocal core without its projections: fn(query, key, value, pos_bias, local_window_size=s) "
        "on sequence-major (l b d) arrays, causal (autoregressive) AFT-local, |t - t'| < s",
    args=(In("q", "b l d -> l b d"), In("k", "b l d -> l b d"), In("v", "b l d -> l b d"), In("w")),
    kwargs={"local_window_size": Conv(paper_s)},
    outputs=(Out("y", None, "l b d -> b l d"),),
    implies={"variant": "local", "causal": True},
))
