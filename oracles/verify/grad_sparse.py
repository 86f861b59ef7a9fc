r"""The gradient check of op ``attention.sparse`` (``refimpl verify attention.sparse CANDIDATE --grad``).

Differentiable canonical inputs: ``q``, ``k``, ``v`` (the pattern is named by conventions and is not differentiable).

* forward: the pattern's key sets built from the papers' definitions (:func:`oracles.sparse_attention.pattern_sets`
  through :func:`oracles.verify.ops_sparse.pattern_key_sets`), their keep mask
  (:func:`oracles.sparse_attention.keep_from_sets`) and the float64 softmax attention
  :func:`oracles.softmax_grad_forward.sdpa_forward` (``p = exp(s - logsumexp(s))`` over the kept keys).
* bounds: :func:`oracles.softmax_grad_forward.softmax_vjp_bound` on that keep mask (the rounding of a backward pass:
  P, ``dS = P o (dP - D)``, the products), which needs the cotangent ``do``; without it ``componentwise_bound(|J|^T|w|)``
  stands in (stated).
* cases: L = 0, L = 1, odd L, L = 3 blocks + 1 (a short last block), L where the window covers every key; each
  under ~1500 input elements.
* reference_vjp: :func:`refimpl.attention.sparse.sparse_attention_vjp` (materialized) with refimpl's pattern of the
  claimed kind (:func:`oracles.verify.ops_sparse.refimpl_pattern`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from oracles.softmax_grad_forward import sdpa_forward, softmax_vjp_bound
from oracles.sparse_attention import default_scale, keep_from_sets
from oracles.tolerance import componentwise_bound
from oracles.verify.ops_sparse import OP, pattern_key_sets, refimpl_pattern, sample
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

WRT = ("q", "k", "v")


_KEEP: Dict[str, np.ndarray] = {}


def keep_of(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> np.ndarray:
    """The keep mask ``(1, heads, l, l)`` of the claimed pattern (1 or h heads; kept per (l, h, conventions): the
    differences call the forward thousands of times on one case)."""
    b, l, h, _ = np.shape(inp["q"])
    key = repr((l, h, sorted(conv.items())))
    if key not in _KEEP:
        sets = pattern_key_sets(conv, l, h)
        if len(sets) not in (1, h):
            raise ValueError(f"q: the claimed pattern has {len(sets)} heads; expected h = {len(sets)} (or 1), "
                             f"got h = {h}")
        if len(_KEEP) > 256:
            _KEEP.clear()
        _KEEP[key] = keep_from_sets(sets, l)[None]
        _KEEP[key].setflags(write=False)
    return _KEEP[key]


def grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"o": o}`` in float64 over the pattern's key sets."""
    n = np.shape(inp["q"])[3]
    return {"o": sdpa_forward(inp["q"], inp["k"], inp["v"], default_scale(n, conv["scale"]), keep_of(inp, conv))}


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents: Optional[Mapping[str, Any]] = None):
    """Each gradient's derived bound in ``dtype`` (module docstring)."""
    b, l, h, n = np.shape(inp["q"])
    p = np.shape(inp["v"])[3]
    if cotangents is None or cotangents.get("o") is None:
        return {nm: componentwise_bound(magnitudes[nm], n + p + 2 * l + 20, dtype, oracle_dtype=None,
                                        what="|J|^T|w| stand-in: the harness passed no cotangent")
                for nm in magnitudes}
    out = softmax_vjp_bound(inp["q"], inp["k"], inp["v"], cotangents["o"], default_scale(n, conv["scale"]), dtype,
                            keep_of(inp, conv))
    return {nm: out[nm] for nm in WRT}


def grad_cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 1071, conv)
    blk = int(conv["block"])
    add("golden-small", "golden", "b = 1, l = 7, n = 3, p = 2", 1, l=7, b=1, n=3, p=2)
    add("edge-L0", "edge", "L = 0: empty gradients", 2, l=0)
    add("edge-L1", "edge", "L = 1: one key", 3, l=1, b=1)
    add("edge-odd", "edge", "L = 5 (odd), two batch entries", 4, l=5, b=2, n=2, p=2)
    add("edge-block+1", "edge", f"L = 3 blocks of {blk} plus one: a short last block", 5, l=3 * blk + 1, b=1, n=2,
        p=2)
    add("edge-long", "edge", "L = 16: the window well inside the sequence", 6, l=16, b=1, n=2, p=2)
    c = add("edge-large-scores", "edge", "scores of size ~25: the softmax saturates", 7, l=6, b=1, n=2, p=2)
    c.inputs["q"] = c.inputs["q"] * 3.5
    c.inputs["k"] = c.inputs["k"] * 3.5
    return add.cases


def reference_vjp(inp, conv, cotangents, lowp=None) -> Dict[str, np.ndarray]:
    """refimpl's VJP (materialized view) with refimpl's pattern of the claimed kind; ``lowp`` (the harness's
    low-precision baseline): :func:`oracles.verify.grad_softmax.storing_sdpa_vjp` on refimpl's pattern's dense keep
    mask (``Pattern.mask()``), the recomputed ``P``, ``dS`` and the saved ``O`` stored in that dtype."""
    from refimpl.attention.sparse import sparse_attention_vjp

    q = np.asarray(inp["q"])
    b, l, h, n = q.shape
    if lowp is not None:
        from oracles.verify.grad_softmax import storing_sdpa_vjp

        keep = refimpl_pattern(conv, l, h).mask()[None]          # (1 h|1 l l)
        scale = n ** -0.5 if conv["scale"] is None else float(conv["scale"])
        r = storing_sdpa_vjp(q, inp["k"], inp["v"], None, keep, scale, cotangents["o"], lowp)
        return {"q": r["q"], "k": r["k"], "v": r["v"]}
    return sparse_attention_vjp(q, inp["k"], inp["v"], refimpl_pattern(conv, l, h), do=cotangents["o"],
                                scale=conv["scale"])


GRAD = register_grad(GradSpec(
    op=OP,
    wrt=WRT,
    forward=grad_forward,
    bounds=grad_bounds,
    cases=grad_cases,
    reference_vjp=reference_vjp,
    outputs=("o",),
    notes="forward: the pattern's key sets (oracles.sparse_attention) and the float64 softmax "
          "(oracles.softmax_grad_forward.sdpa_forward); bounds: softmax_vjp_bound on the keep mask; the pattern is "
          "not differentiable; a query row with no kept key contributes nothing",
    module=__name__,
))


def refimpl_grad_fn(q, k, v, do=None):
    """refimpl's VJP as an explicit backward in the canonical protocol (--grad-fn) under the op's default pattern
    conventions (a sliding window (3, 3), not causal, scale None)."""
    from oracles.verify import get_op

    return reference_vjp({"q": q, "k": k, "v": v}, get_op(OP).resolve_conventions({}), {"o": do})
