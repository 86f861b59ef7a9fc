r"""Op spec ``attention.gau``: the gated attention unit and FLASH's mixed-chunk attention (Hua et al. 2022).

Canonical (sequence-first, refimpl's layout; the paper's expansion ``e`` is ``p``, its shared dimension ``s``
is ``n``)::

    fn(x, W_u, W_v, W_z, gamma, beta, W_o, bias=None) -> o
    x (b l d), W_u, W_v (d p), W_z (d n), gamma, beta (r n), W_o (p d), bias (w), o (b l d)

    U = silu(x W_u), V = silu(x W_v), Z = silu(x W_z), Q_r = gamma_r Z + beta_r
    chunk = 0 (GAU, r = 2 rows q, k):   A = relu^2(Q K^T / L + b_{j-i}),  b = bias[j - i + L - 1]
    chunk = c (FLASH, r = 4 rows quad_q, quad_k, lin_q, lin_k):
        inside a chunk   relu^2(qq_i . kq_j / c + b_{j-i}),  b = bias[j - i + c - 1]
        linear part      (ql_i . kl_j) / c over earlier chunks (causal), / L over every key (non-causal)
    o = (U * (A V)) W_o

Conventions: ``chunk`` (0 = GAU, ``c >= 1`` = FLASH), ``causal``, ``scaling`` (the named choices a diagnosis
can try: ``paper`` -- the paper's ``1/L`` (GAU) and ``1/c``, ``1/c`` causal / ``1/L`` non-causal (FLASH);
``length`` -- every scale ``1/L``; ``chunk`` -- every scale ``1/c``; ``rsqrt_n`` -- the quadratic scores times
``n^{-1/2}``), ``last_chunk`` (``c``: the short last chunk scaled by ``1/c``, the paper's padding; ``length``: by
its own length), ``use_bias``.  Oracle: :func:`oracles.gau.gau_mpmath` on small cases,
:func:`oracles.gau.gau_fsum` on larger ones; bound :func:`oracles.gau.gau_bound`.  Probes: causality (when
causal), argument paths.

Upstream spelling: lucidrains' FLASH-pytorch names the chunk ``group_size`` and orders the scale/offset rows
``quad_q, lin_q, quad_k, lin_k`` (its ``OffsetScale(heads=4)`` unpacked in that order): the
``flash_pytorch`` adapter passes ``group_size=`` and the rows reordered.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.gau import LAST_CHUNK, SCALINGS, gau_bound, gau_fsum, gau_mpmath
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Convention, OpSpec, case_builder, draw_sizes, feature_convention,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "attention.gau"
MPMATH_WORK = 1500  # b l^2 (n + p) up to which the mpmath oracle is used


def _chunk(conv):
    c = int(conv["chunk"])
    if c < 0:
        raise ValueError(f"convention chunk: expected 0 (GAU) or a chunk length >= 1, got {c}")
    return c or None


def _args(inp, conv):
    bias = inp.get("bias") if conv["use_bias"] else None
    arrays = [np.asarray(inp[k], dtype=np.float64) for k in ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o")]
    kw = dict(chunk=_chunk(conv), causal=bool(conv["causal"]),
              bias=None if bias is None else np.asarray(bias, dtype=np.float64),
              scaling=conv["scaling"], last_chunk=conv["last_chunk"])
    return arrays, kw


def _exact(inp):
    b, l, _ = np.shape(inp["x"])
    return b * l * l * (np.shape(inp["W_z"])[1] + np.shape(inp["W_u"])[1]) <= MPMATH_WORK


def oracle(inp, conv):
    arrays, kw = _args(inp, conv)
    return {"o": (gau_mpmath if _exact(inp) else gau_fsum)(*arrays, **kw)}


def bounds(inp, out, conv, dtype):
    arrays, kw = _args(inp, conv)
    return {"o": gau_bound(*arrays, **kw, dtype=dtype, oracle_dtype=None if _exact(inp) else np.float64)}


def reference(inp, conv):
    from refimpl.attention.gau import gated_attention_unit, mixed_chunk_attention

    arrays, kw = _args(inp, conv)
    if kw["chunk"] is None:
        # GAU has one chunk of length L: 'length', 'chunk' and 'paper' all mean 1/L, last_chunk changes nothing
        n = arrays[3].shape[1]
        scale = (1.0 / np.sqrt(n) if n else 1.0) if kw["scaling"] == "rsqrt_n" else None
        return {"o": gated_attention_unit(*arrays, causal=kw["causal"], bias=kw["bias"], scale=scale)}
    if kw["scaling"] != "paper" or kw["last_chunk"] != "c":
        raise ValueError("reference: refimpl's FLASH computes the paper's scalings (scaling='paper', "
                         "last_chunk='c') only")
    return {"o": mixed_chunk_attention(*arrays, chunk=kw["chunk"], causal=kw["causal"], bias=kw["bias"])}


def sample(rng, conv, *, l=None, b=None, d=None, p=None, n=None):
    b, d, p, n = draw_sizes(rng, b=(b, 1, 3), d=(d, 1, 5), p=(p, 1, 4), n=(n, 1, 4))
    c = _chunk(conv)
    if l is None:
        ladder = [0, 1, 2, 3, 5, 7, 8] if c is None else [0, 1, max(c - 1, 1), c, c + 1, 2 * c + 1, 3 * c]
        l = int(rng.choice(ladder))
    rows = 2 if c is None else 4
    w = l if c is None else c
    inp = {"x": rng.standard_normal((b, l, d)), "W_u": rng.standard_normal((d, p)),
           "W_v": rng.standard_normal((d, p)), "W_z": rng.standard_normal((d, n)),
           "gamma": rng.standard_normal((rows, n)), "beta": 0.5 * rng.standard_normal((rows, n)),
           "W_o": rng.standard_normal((p, d)), "bias": None}
    if conv["use_bias"]:
        inp["bias"] = rng.standard_normal(max(2 * w - 1, 0))
    return inp


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List:
    add = case_builder(OP, sample, 71, conv)
    c = _chunk(conv)
    add("golden-small", "golden", "b = 1, l = 5, d = 3, p = 2, n = 2", 1, l=5, b=1, d=3, p=2, n=2)
    add("edge-L0", "edge", "L = 0: an empty output", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    if c is not None:
        add("edge-chunk-1", "edge", "L = c - 1: one short chunk", 4, l=max(c - 1, 1), b=1)
        add("edge-chunk+1", "edge", "L = c + 1: a chunk and a one-position last chunk", 5, l=c + 1, b=1)
        add("edge-short-last", "edge", "L = 2c + 1: the last chunk is short", 6, l=2 * c + 1, b=1, d=2, p=2, n=2)
    add("edge-odd", "edge", "L = 7", 7, l=7, b=1)
    add("edge-long", "edge", "L = 40 (the float64 fsum oracle)", 8, l=40, b=1, d=3, p=2, n=2)
    return add.cases


GAU_PATHS = argument_paths_probe(optional={"use_bias": ("bias",)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=7, b=1))

register_op(OpSpec(
    name=OP,
    summary="the gated attention unit (relu^2 attention gated by U, shared Z with per-dimension scale/offset) and "
            "FLASH's mixed-chunk attention (quadratic within chunks, linear between them), Hua et al. 2022",
    inputs=(Arg("x", "b l d"), Arg("W_u", "d p", "U = silu(x W_u), the paper's expansion e = p"),
            Arg("W_v", "d p"), Arg("W_z", "d n", "Z = silu(x W_z), the paper's shared dimension s = n"),
            Arg("gamma", "r n", "per-dimension scales: r = 2 (GAU: q, k) or 4 (FLASH: quad_q, quad_k, lin_q, lin_k)"),
            Arg("beta", "r n", "per-dimension offsets, rows as gamma"),
            Arg("W_o", "p d"),
            Arg("bias", "w", "relative position bias b_ij = bias[j - i + w - 1], w = L (GAU) or c (FLASH)",
                optional=True)),
    outputs=(Arg("o", "b l d"),),
    conventions=(
        Convention("chunk", 0, "0: GAU over the whole sequence; c >= 1: FLASH with chunks of c (the last one short)"),
        Convention("causal", False, "the quadratic part keeps j <= i, the linear part the earlier chunks only",
                   (False, True)),
        Convention("scaling", "paper", "paper: 1/L (GAU), 1/c and 1/c causal or 1/L non-causal (FLASH); length: "
                   "every scale 1/L; chunk: every scale 1/c; rsqrt_n: quadratic scores times n^-1/2", SCALINGS),
        Convention("last_chunk", "c", "the short last chunk scaled by 1/c (the paper's padding) or by its own "
                   "length", LAST_CHUNK),
        feature_convention("use_bias", "the relative position bias (2w - 1)"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x": "l"}, {"o": "l"}, applies=lambda conv: bool(conv["causal"]),
                            sampler=lambda rng, conv: sample(rng, conv, l=9, b=1)),
            GAU_PATHS),
    domain=op_domain(length=("l", "l"), width=("d", "d"), expansion=("p", "p"), shared_dim=("n", "n")),
    module=__name__,
    notes="oracle: oracles.gau (mpmath small / float64 fsum large, per-query key sets); bound: gau_bound (stage "
          "propagation); the refimpl adapters compute the paper's scalings",
))


register_adapter(Adapter(
    name="refimpl.gated_attention_unit",
    op=OP,
    doc="refimpl.attention.gau.gated_attention_unit(x, W_u, W_v, W_z, gamma, beta, W_o, causal=, bias=) -> o "
        "(GAU: chunk=0, the paper's 1/L)",
    args=(In("x"), In("W_u"), In("W_v"), In("W_z"), In("gamma"), In("beta"), In("W_o")),
    kwargs={"causal": Conv(lambda c: bool(c["causal"])), "bias": In("bias")},
    outputs=(Out("o", None),),
    implies={"chunk": 0, "scaling": "paper", "last_chunk": "c"},
))

register_adapter(Adapter(
    name="refimpl.mixed_chunk_attention",
    op=OP,
    doc="refimpl.attention.gau.mixed_chunk_attention(x, W_u, W_v, W_z, gamma, beta, W_o, chunk=, causal=, bias=) "
        "-> o (FLASH: chunk >= 1, the paper's scalings)",
    args=(In("x"), In("W_u"), In("W_v"), In("W_z"), In("gamma"), In("beta"), In("W_o")),
    kwargs={"chunk": Conv(lambda c: int(c["chunk"])), "causal": Conv(lambda c: bool(c["causal"])),
            "bias": In("bias")},
    outputs=(Out("o", None),),
    implies={"scaling": "paper", "last_chunk": "c"},
))


def lucidrains_rows(a: np.ndarray) -> np.ndarray:
    """Canonical rows ``quad_q, quad_k, lin_q, lin_k`` -> FLASH-pytorch's ``quad_q, lin_q, quad_k, lin_k``."""
    return a[[0, 2, 1, 3]] if np.shape(a)[0] == 4 else a


register_adapter(Adapter(
    name="flash_pytorch",
    op=OP,
    doc="lucidrains FLASH-pytorch's spelling: fn(x, W_u, W_v, W_z, gamma, beta, W_o, group_size=, causal=) with "
        "the scale/offset rows ordered quad_q, lin_q, quad_k, lin_k (OffsetScale(heads=4) unpacked); no bias input",
    args=(In("x"), In("W_u"), In("W_v"), In("W_z"), In("gamma", transform=lucidrains_rows),
          In("beta", transform=lucidrains_rows), In("W_o")),
    kwargs={"group_size": Conv(lambda c: int(c["chunk"])), "causal": Conv(lambda c: bool(c["causal"]))},
    outputs=(Out("o", None),),
    implies={"use_bias": False},
))
