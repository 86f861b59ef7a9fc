r"""Op spec ``attention.linformer``: Linformer attention (Wang et al. 2020, eq. 7), its conventions and adapters.

Canonical (sequence-first, refimpl's layout)::

    fn(q, k, v, E, F) -> o
    q (b l h n), k (b s h n), v (b s h p), o (b l h p);
    E, F (h r s) with projection_sharing="per_head" (the paper's E_i, F_i), (r s) with "shared" (headwise sharing)

    K_bar = E k (r n),  V_bar = F v (r p),  o_i = sum_t softmax_t(scale q_i . K_bar_t) V_bar_t

Not causal (``K_bar`` mixes every position); ``r = 0`` gives ``o = 0``.  Conventions:

* ``scale``: multiplies ``q . K_bar``; ``None`` = ``n^{-1/2}`` (the paper's ``1/sqrt(d_k)``, ``d_k`` the head dim).
* ``projection_sharing``: ``"per_head"`` (one ``E_i, F_i`` per head, ``(h r s)``) or ``"shared"`` (the paper's
  headwise sharing, one ``(r s)`` pair for every head).
* ``projection_layout`` (a layout convention): ``"rs"``: the candidate takes ``E`` as applied, ``(r s)``
  (``K_bar = E k``; a PyTorch ``nn.Linear(s, r)`` stores its weight so, ``(out, in)``); ``"sr"``: it takes the
  transpose ``(s r)`` (the lucidrains ``linformer`` package's ``proj_k = nn.Parameter(seq_len, k)`` applied as
  ``einsum('b n d, n k -> b k d')``).  Every adapter, the canonical one included, passes ``E`` and ``F`` in the
  candidate's layout.

Oracle: :func:`oracles.linformer.linformer_mpmath` (small) / :func:`oracles.linformer.linformer_float64` (large);
bound :func:`oracles.linformer.linformer_bound`.  Probe: argument paths (a scale other than the default).
"""
from __future__ import annotations

import dataclasses
import math
from typing import List

import numpy as np

from oracles.linformer import linformer_bound, linformer_float64, linformer_mpmath
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.linformer"
MPMATH_WORK = 6000  # multiply-adds up to which the mpmath oracle is used


def _scale(conv, n):
    return (1.0 / math.sqrt(n) if n > 0 else 1.0) if conv["scale"] is None else float(conv["scale"])


def _exact(inp) -> bool:
    b, l, h, n = np.shape(inp["q"])
    s, p = np.shape(inp["k"])[1], np.shape(inp["v"])[3]
    r = np.shape(inp["E"])[-2]
    return b * h * (r * s * (n + p) + l * r * (n + p)) <= MPMATH_WORK


def oracle(inp, conv):
    q, k, v, E, F = (np.asarray(inp[x], dtype=np.float64) for x in ("q", "k", "v", "E", "F"))
    sc = _scale(conv, q.shape[3])
    fn = linformer_mpmath if _exact(inp) else linformer_float64
    return {"o": fn(q, k, v, E, F, sc)}


def bounds(inp, out, conv, dtype):
    q, k, v, E, F = (np.asarray(inp[x], dtype=np.float64) for x in ("q", "k", "v", "E", "F"))
    return {"o": linformer_bound(q, k, v, E, F, _scale(conv, q.shape[3]), dtype,
                                 oracle_dtype=None if _exact(inp) else np.float64)}


def reference(inp, conv):
    """The low-precision baseline: the literal computation in the inputs' dtype with refimpl's softmax."""
    from refimpl.attention.softmax import softmax

    q = np.asarray(inp["q"])
    dt = q.dtype
    k, v = np.asarray(inp["k"]).astype(dt), np.asarray(inp["v"]).astype(dt)
    h = q.shape[2]
    E, F = (np.broadcast_to(np.asarray(inp[x]).astype(dt), (h,) + np.shape(inp[x])[-2:]) for x in ("E", "F"))
    Kb = np.einsum("htj,bjhn->bthn", E, k)
    Vb = np.einsum("htj,bjhp->bthp", F, v)
    S = dt.type(_scale(conv, q.shape[3])) * np.einsum("bihn,bthn->bhit", q, Kb)
    return {"o": np.einsum("bhit,bthp->bihp", softmax(S, axis=-1), Vb)}


def sample(rng, conv, *, l=None, s=None, r=None, b=None, h=None, n=None, p=None):
    b, h, n, p = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5), p=(p, 1, 4))
    l = int(rng.choice([1, 2, 3, 5, 8, 13])) if l is None else l
    s = (l if rng.random() < 0.7 else int(rng.choice([1, 4, 7]))) if s is None else s  # mostly self-attention
    r = int(rng.choice([1, 2, 3, 5])) if r is None else r
    shape = (h, r, s) if conv["projection_sharing"] == "per_head" else (r, s)
    # the paper's random projections, entries N(0, 1/r) (its Theorem 2); any real matrix is valid
    return {"q": rng.standard_normal((b, l, h, n)), "k": rng.standard_normal((b, s, h, n)),
            "v": rng.standard_normal((b, s, h, p)),
            "E": rng.standard_normal(shape) / math.sqrt(max(r, 1)),
            "F": rng.standard_normal(shape) / math.sqrt(max(r, 1))}


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 71, conv)
    out = add.cases
    add("golden-small", "golden", "b=1, l=s=5, h=2, n=3, p=2, r=3", 1, l=5, s=5, r=3, b=1, h=2, n=3, p=2)
    add("edge-L1", "edge", "one query, one key, r = 1", 2, l=1, s=1, r=1)
    add("edge-L0", "edge", "l = s = 0: E is (r 0), K_bar = 0; no output rows", 3, l=0, s=0, r=2)
    add("edge-r0", "edge", "r = 0: nothing to attend to, o = 0", 4, l=4, s=4, r=0)
    add("edge-r-gt-l", "edge", "r = 6 > l = s = 3 (a projection up: still valid)", 5, l=3, s=3, r=6)
    add("edge-l-ne-s", "edge", "l = 4 queries, s = 7 keys projected to r = 3", 6, l=4, s=7, r=3)
    add("edge-r-ne-n", "edge", "r = 5 != n = 2: the scale is 1/sqrt(n), not 1/sqrt(r)", 7, l=6, s=6, r=5, n=2)
    add("edge-large-scores", "edge", "scores of size ~40: needs max subtraction", 8, l=4, s=4, r=3, n=2)
    out[-1].inputs["q"] = out[-1].inputs["q"] * 6.0
    out[-1].inputs["k"] = out[-1].inputs["k"] * 6.0
    c = add("edge-identity", "edge", "E = F = I (r = l): exact softmax attention", 9, l=5, s=5, r=5, b=1, h=2)
    eye = np.eye(5) if conv["projection_sharing"] == "shared" else np.broadcast_to(np.eye(5), (2, 5, 5)).copy()
    c.inputs["E"], c.inputs["F"] = eye, eye.copy()
    add("edge-long", "edge", "l = s = 70, r = 65: one past a 64-wide tile of projected keys", 10, l=70, s=70, r=65,
        b=1, h=1, n=4, p=2)
    return out


def _transposed(conv):
    """``E``'s pattern for the candidate under ``projection_layout`` (None: as stored, (r s))."""
    if conv["projection_layout"] != "sr":
        return None
    return "r s -> s r" if conv["projection_sharing"] == "shared" else "h r s -> h s r"


@dataclasses.dataclass(frozen=True)
class ProjectionLayoutCanonical(Adapter):
    """The canonical signature that honours ``projection_layout``: under ``"sr"`` ``E`` and ``F`` reach the candidate
    with their last two axes swapped, ``(s r)`` / ``(h s r)``."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        if conv.get("projection_layout") == "sr":
            inputs = dict(inputs)
            for x in ("E", "F"):
                if inputs.get(x) is not None:
                    inputs[x] = np.swapaxes(np.asarray(inputs[x]), -1, -2)
        return super().build_call(spec, inputs, conv, dims, convert)


register_op(OpSpec(
    name=OP,
    summary="Linformer attention softmax(scale q (E k)^T) (F v): keys and values projected along the sequence "
            "from s to r positions (not causal)",
    inputs=(Arg("q", "b l h n"), Arg("k", "b s h n"), Arg("v", "b s h p"),
            Arg("E", "h r s | r s", "the key projection: per head (h r s) or shared (r s), in the canonical arrays "
                "as applied (K_bar = E k)"),
            Arg("F", "h r s | r s", "the value projection (V_bar = F v), like E")),
    outputs=(Arg("o", "b l h p", "r = 0: zeros"),),
    conventions=(
        Convention("scale", None, "multiplies q . K_bar before the softmax; None = 1/sqrt(n) (the paper's "
                   "1/sqrt(d_k), d_k the per-head dimension, not r)"),
        Convention("projection_sharing", "per_head", "per_head: E_i, F_i for every head (h r s); shared: the "
                   "paper's headwise sharing, one (r s) pair for every head", ("per_head", "shared")),
        Convention("projection_layout", "rs", "how the candidate stores E and F: rs as applied (r s) (nn.Linear(s, r)"
                   ".weight); sr transposed (s r) (lucidrains linformer's proj_k (seq_len, k))", ("rs", "sr"),
                   layout=True),
    ),
    **op_functions(globals()),
    probes=(argument_paths_probe(alternatives={"scale": (0.37,)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=5, s=5, r=3, b=1)),),
    domain=op_domain(length=(("l", "l"), ("s", "s")), query_length=("l", "l"), key_length=("s", "s"),
                     rank=("r", "r", "the projected length r"), key_dim=("n", "n"), value_dim=("p", "p"),
                     heads=("h", "h")),
    module=__name__,
    notes="oracle: oracles.linformer (mpmath small / float64 fsum large); bound: linformer_bound (projection gamma_s, "
          "then softmax attention over r projected keys); every adapter passes E, F in the projection_layout",
))

register_adapter(ProjectionLayoutCanonical(
    name="canonical", op=OP,
    doc="the op's canonical signature fn(q, k, v, E, F) -> o; with projection_layout='sr' E and F are passed "
        "transposed, (s r) / (h s r)"))

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.linformer_attention(q, k, v, E, F, scale=) -> o (E, F applied as stored, (r s))",
    args=(In("q"), In("k"), In("v"), In("E"), In("F")),
    kwargs={"scale": Conv(lambda conv: conv["scale"], "the scale convention (None: the default)")},
    implies={"projection_layout": "rs"},
))

register_adapter(Adapter(
    name="lucidrains.linformer",
    op=OP,
    doc="the lucidrains linformer spelling: head-first q, k, v (b h l n), projections stored (s r) as its "
        "proj_k = nn.Parameter(seq_len, k) and applied einsum('b h n d, n k -> b h k d'); fn(q, k, v, proj_k, "
        "proj_v) -> o (b h l p)",
    args=(In("q", "b l h n -> b h l n"), In("k", "b s h n -> b h s n"), In("v", "b s h p -> b h s p"),
          In("E", _transposed), In("F", _transposed)),
    outputs=(Out("o", None, "b h l p -> b l h p"),),
    implies={"projection_layout": "sr"},
))
