r"""Op spec ``attention.sinusoidal``: sinusoidal positional encodings.

Canonical::

    fn(length, d) -> pe        pe (l d), l = length, positions 0 .. length - 1

The text's encoding (Vaswani et al. 2017) is ``PE(pos, 2i) = sin(pos / base^(2i/d))``, ``PE(pos, 2i+1) =
cos(pos / base^(2i/d))``.  Conventions: ``base`` (10000); ``layout`` -- ``interleaved`` (the text: sin at even,
cos at odd columns; an odd ``d`` ends with a sine) or ``concat`` (``[sin | cos]``: ``floor(d/2)`` sines then as
many cosines, an odd ``d`` padded with a zero column: tensor2tensor / fairseq / most diffusion timestep
embeddings); ``exponent`` -- ``2i/d``
(the text) or ``i/(d/2-1)`` (tensor2tensor's ``get_timing_signal_1d``: the ``floor(d/2)`` frequencies run from
1 to exactly ``1/base``).

Oracle: :func:`oracles.attention.sinusoidal_mpmath` (50 digits).  Bound (derived): the angle
``pos / base^e_i`` is formed either as ``pos / pow(base, e_i)`` (``e_i`` one rounding, which ``pow`` turns into a
relative error ``|ln base| e_i u``; ``pow`` within one ulp, ``2u``; the division ``u``) or as
``pos exp(-e_i ln base)`` (``ln base`` one ulp, the division by ``d`` and the product with ``i``: relative
``3u`` on an argument of size ``e_i |ln base|``, then ``exp`` ``2u`` and the product ``u``); both have relative
error ``<= gamma_4 (1 + |ln base| e_i)`` (first order).  ``sin``/``cos`` move by at most the angle's absolute
error and round within one ulp of a value ``<= 1``: ``|err| <= |angle| gamma_4 (1 + |ln base| e_i) + gamma_2``.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from oracles.attention import sinusoid_columns, sinusoidal_mpmath
from oracles.tolerance import Bound, gamma
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, draw_sizes, op_domain, op_functions, register_op,
                                     seeded_strategy)

OP = "attention.sinusoidal"
LAYOUTS = ("interleaved", "concat")
EXPONENTS = ("2i/d", "i/(d/2-1)")


def _exponents(d: int, conv) -> np.ndarray:
    """``e`` per column (float64; a magnitude for the bound)."""
    cols = sinusoid_columns(d, conv["layout"])
    if conv["exponent"] == "2i/d":
        return np.array([2.0 * i / d for i, _ in cols])
    return np.array([i / max(d // 2 - 1, 1) for i, _ in cols])


def oracle(inp, conv):
    length, d = int(inp["length"]), int(inp["d"])
    return {"pe": sinusoidal_mpmath(length, d, float(conv["base"]), layout=conv["layout"],
                                    exponent=conv["exponent"])}


def bounds(inp, out, conv, dtype):
    length, d = int(inp["length"]), int(inp["d"])
    e = _exponents(d, conv)
    lnb = abs(math.log(float(conv["base"])))
    pos = np.arange(length, dtype=np.float64)[:, None]
    angle = pos / np.power(float(conv["base"]), e)[None, :]
    vals = np.abs(angle) * gamma(4, dtype) * (1.0 + lnb * e)[None, :] + gamma(2, dtype)
    return {"pe": Bound(vals, "angle pos / base^e: relative gamma_4 (1 + |ln base| e) (pow or exp form); sin/cos "
                              "one ulp (gamma_2)")}


def reference(inp, conv):
    from refimpl.attention.positional import sinusoidal_positions

    if conv["layout"] != "interleaved" or conv["exponent"] != "2i/d":
        raise NotImplementedError("refimpl's sinusoidal_positions is the text's interleaved 2i/d encoding")
    return {"pe": sinusoidal_positions(int(inp["length"]), int(inp["d"]), base=float(conv["base"]))}


def sample(rng, conv, *, length=None, d=None):
    length, d = draw_sizes(rng, length=(length, 0, 41), d=(d, 1, 13))
    return {"length": np.asarray(length), "d": np.asarray(d)}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    spec = ((8, 6, "golden", "length 8, d = 6"), (5, 7, "edge", "odd d = 7 (the last column is a sine)"),
            (4, 1, "edge", "d = 1"), (3, 2, "edge", "d = 2: one frequency"), (1, 4, "edge", "length 1: position 0"),
            (0, 4, "edge", "length 0: empty"), (300, 8, "edge", "positions up to 299: large angles"))
    return [Case(OP, f"{kind}-l{length}-d{d}", kind, {"length": np.asarray(length), "d": np.asarray(d)}, dict(conv),
                 seed=None, note=note) for length, d, kind, note in spec]


register_op(OpSpec(
    name=OP,
    summary="sinusoidal positional encodings PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(...)",
    inputs=(Arg("length", "", "number of positions", kind="int"), Arg("d", "", "model width", kind="int")),
    outputs=(Arg("pe", "l d"),),
    conventions=(
        Convention("base", 10000.0, "the wavelength base"),
        Convention("layout", "interleaved", "interleaved: sin at even, cos at odd columns (the text); concat: "
                   "[sin | cos] halves, an odd d padded with a zero column (tensor2tensor, fairseq)", LAYOUTS),
        Convention("exponent", "2i/d", "frequency i has angle pos / base^e_i: e_i = 2i/d (the text) or "
                   "i/(d/2 - 1) (tensor2tensor get_timing_signal_1d)", EXPONENTS),
    ),
    **op_functions(globals()),
    probes=(argument_paths_probe(alternatives={"base": (500.0,)},
                                 sampler=lambda rng, conv: sample(rng, conv, length=12, d=6)),),
    lowp=False,
    domain=op_domain(length=("length", "length"), width=("d", "d")),
    module=__name__,
    notes="oracle: oracles.attention.sinusoidal_mpmath; bound: angle relative error gamma_4 (1 + |ln base| e) plus "
          "gamma_2 for sin/cos",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.positional.sinusoidal_positions(length, d, base=): the text's interleaved 2i/d encoding",
    args=(In("length", scalar=True), In("d", scalar=True)),
    kwargs={"base": Conv(lambda c: float(c["base"]))},
    outputs=(Out("pe", None),),
    implies={"layout": "interleaved", "exponent": "2i/d"},
))
