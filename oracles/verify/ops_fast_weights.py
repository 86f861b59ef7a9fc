r"""Op spec ``attention.fast_weights``: the fast weight programmer's memory (Schmidhuber 1991/92).

Canonical (sequence-first; the glossary's fast-weights layout)::

    fn(a, b_vec, x_read, W0=None) -> (y, W_last)
    a (b l h p), b_vec (b l h n), x_read (b l h n), W0 / W_last (b h p n), y (b l h p)

    W_i = W_{i-1} + a_i b_i^T   (sigma = identity),    y_i = W_i x_read_i   (read after the write)

Conventions: ``state_layout`` (``vk``: ``W (b h p n)``; ``kv``: ``(b h n p)``, passed and read transposed by
every adapter, the canonical one included), ``use_state`` (an initial ``W0``).  Oracle:
:func:`oracles.attention.fast_weights_mpmath` (the closed sum ``y_i = W0 x_i + sum_{j <= i} a_j (b_j . x_i)`` in
mpmath, not the recurrence) and :func:`oracles.attention.fast_weights_state_mpmath`.  Bound: the recurrence is
unnormalized causal linear attention with ``v = a``, ``phi(k) = b_vec``, ``phi(q) = x_read``
(:func:`oracles.attention.linear_attention_bound`, every association order); the final state is a sum of
``L`` products and ``W0``: ``gamma_(L+1)`` times the same sum on absolute values.
"""
from __future__ import annotations

from typing import List

import numpy as np

from oracles.attention import fast_weights_mpmath, fast_weights_state_mpmath, linear_attention_bound
from oracles.tolerance import componentwise_bound
from oracles.verify.adapters import Adapter, Const, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe, canonical_with_state
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, feature_convention,
                                     op_domain, op_functions, register_op, seeded_strategy)

OP = "attention.fast_weights"


def _W0(inp, conv):
    return inp.get("W0") if conv["use_state"] else None


def oracle(inp, conv):
    W0 = _W0(inp, conv)
    return {"y": fast_weights_mpmath(inp["a"], inp["b_vec"], inp["x_read"], W0),
            "W_last": fast_weights_state_mpmath(inp["a"], inp["b_vec"], W0)}


def bounds(inp, out, conv, dtype):
    W0 = _W0(inp, conv)
    a, bv, xr = (np.asarray(inp[k], dtype=np.float64) for k in ("a", "b_vec", "x_read"))
    by = linear_attention_bound(xr, bv, a, out["y"], causal=True, normalize=False, S0=W0, layout="vk", dtype=dtype,
                                oracle_dtype=None)
    l = a.shape[1]
    M = np.einsum("blhp,blhn->bhpn", np.abs(a), np.abs(bv)) + (0.0 if W0 is None else np.abs(W0))
    bW = componentwise_bound(M, l + 1, dtype, oracle_dtype=None, what="W_L: L outer products and W0 summed")
    return {"y": by, "W_last": bW}


def reference(inp, conv, lowp=None):
    """refimpl's fast weight memory; ``lowp`` (the harness's low-precision baseline): step by step, the fast weight
    ``W_t`` stored in that dtype after every step (a loop in the dtype rounds its state every step), each step
    refimpl's own recurrence on a one-step sequence from the stored state (float32 arithmetic), and the read
    ``y_t = W_t x_read_t`` from the stored ``W_t``."""
    from refimpl.attention.fast_weights import fast_weight_memory

    if lowp is None:
        y, W = fast_weight_memory(inp["a"], inp["b_vec"], inp["x_read"], initial_state=_W0(inp, conv),
                                  return_final_state=True)
        return {"y": y, "W_last": W}
    from oracles.verify._lowp_storage import storer

    rnd = storer(lowp)
    a, bv, xr = (np.asarray(inp[k], np.float32) for k in ("a", "b_vec", "x_read"))
    b, l, h, p = a.shape
    W0 = _W0(inp, conv)
    W = rnd(np.zeros((b, h, p, bv.shape[3]), np.float32) if W0 is None else np.asarray(W0, np.float32))
    ys = []
    for t in range(l):
        _, W = fast_weight_memory(a[:, t:t + 1], bv[:, t:t + 1], xr[:, t:t + 1], initial_state=W,
                                  return_final_state=True)
        W = rnd(W)
        # the read y_t = W_t x_read_t from the stored W_t (as the loop reads it back)
        ys.append(np.einsum("bhpn,bhn->bhp", W, xr[:, t])[:, None])
    y = np.concatenate(ys, axis=1) if ys else np.zeros((b, 0, h, p), np.float32)
    return {"y": y, "W_last": W}


def sample(rng, conv, *, l=None, b=None, h=None, n=None, p=None):
    b, h, n, p = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), n=(n, 1, 5), p=(p, 1, 4))
    l = int(rng.choice([0, 1, 2, 3, 5, 8, 13])) if l is None else l
    inp = {"a": rng.standard_normal((b, l, h, p)), "b_vec": rng.standard_normal((b, l, h, n)),
           "x_read": rng.standard_normal((b, l, h, n)), "W0": None}
    if conv["use_state"]:
        inp["W0"] = rng.standard_normal((b, h, p, n))
    return inp


def strategy(conv):
    return seeded_strategy(sample, conv)


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 61, conv)
    out = add.cases

    add("golden-small", "golden", "b=1, l=5, h=2, n=3, p=2", 1, l=5, b=1, h=2, n=3, p=2)
    add("edge-L0", "edge", "L = 0: the final state is W0", 2, l=0)
    add("edge-L1", "edge", "L = 1", 3, l=1)
    add("edge-square", "edge", "p = n = 3: a transposed outer product has the right shape", 4, l=6, p=3, n=3)
    add("edge-long", "edge", "L = 33", 5, l=33, b=1, h=1, n=2, p=2)
    return out


register_op(OpSpec(
    name=OP,
    summary="fast weight memory W_i = W_{i-1} + a_i b_i^T, y_i = W_i x_read_i (the fast weight programmer, "
            "sigma = identity)",
    inputs=(Arg("a", "b l h p"), Arg("b_vec", "b l h n"), Arg("x_read", "b l h n"),
            Arg("W0", "b h p n", "initial fast weights (p x n in canonical arrays)", optional=True)),
    outputs=(Arg("y", "b l h p"), Arg("W_last", "b h p n", optional=True)),
    conventions=(
        Convention("state_layout", "vk", "the candidate's fast-weight orientation: vk W (b h p n), kv (b h n p)",
                   ("vk", "kv"), layout=True),
        feature_convention("use_state", "an initial W0"),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"a": "l", "b_vec": "l", "x_read": "l"}, {"y": "l"},
                            sampler=lambda rng, conv: sample(rng, conv, l=8)),
            argument_paths_probe(optional={"use_state": ("W0",)},
                                 sampler=lambda rng, conv: sample(rng, conv, l=6, b=1, h=2))),
    domain=op_domain(length=("l", "l"), key_dim=("n", "n", "the key/read dimension n"),
                     value_dim=("p", "p", "the written dimension p (value_dim=key_dim: the candidate needs p = n)")),
    module=__name__,
    notes="oracle: oracles.attention.fast_weights_mpmath (closed sum); bound: linear_attention_bound (unnormalized, "
          "causal); the canonical adapter passes W0 and reads W_last as (b h n p) under state_layout='kv'",
))

canonical_with_state(OP, "W0", "W_last")

register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.fast_weights.fast_weight_memory(a, b_vec, x_read, initial_state=, return_final_state=True) "
        "-> (y, W_last)",
    args=(In("a"), In("b_vec"), In("x_read")),
    kwargs={"initial_state": In("W0"), "return_final_state": Const(True)},
    outputs=(Out("y", 0), Out("W_last", 1)),
    implies={"state_layout": "vk"},
))
