r"""The gradient check of op ``attention.delta_rule`` (``refimpl verify attention.delta_rule CANDIDATE --grad``).

* ``wrt``: ``q``, ``k``, ``v``, ``beta``, ``alpha`` (when ``use_alpha``), ``S0`` (when ``use_state``); both outputs,
  ``o`` and ``S_last``, carry cotangents.  The gradients pass through the key/query normalizations (``sum``, ``l2``)
  and the scale (``None`` = ``n^{-1/2}``, a constant).
* forward: :func:`oracles.delta_grad_forward.delta_rule_float64` (float64, the transition-matrix form, not refimpl's
  retrieve/update spelling; mpmath's :func:`oracles.attention.delta_rule_mpmath` is too slow for elementwise
  differences).
* bounds: a backward in ``dtype`` carries the state's adjoint ``dS_t`` through the reverse scan: per step
  ``dS_t += do_t q_t^T`` (2 roundings), ``dS_t k_t`` (``n``), ``dA_t = dS_t - beta_t (dS_t k_t) k_t^T`` (3),
  ``alpha_t dA_t`` (1): ``n + 6`` per step; the forward states it reads are recomputed (``n + 4`` per step, inside
  the same count); then one gradient entry adds a product over ``n`` or ``p`` and a few scalings (``2 (n + p) + 10``),
  the normalization's Jacobian (``n + 4``), and for ``algorithm="chunked"`` the WY adjoint of a chunk of ``T``
  rows: the triangular solves and their transposes (``2 T``), the products over ``T`` (``3 T``):
  ``D = L (n + 6) + 3 (n + p) + 14 [+ 5 T]``.  Magnitude: the same adjoint recurrence on absolute values,
  :func:`oracles.delta_grad_forward.delta_rule_adjoint_magnitude` (every difference a sum of absolute values; for
  the chunked view the decay's magnitude covers the reverse cumulative sum of ``dg`` within a chunk);
  ``|J|^T |w|`` from the differences stands in when the harness passes no cotangents (stated).
  ``componentwise_bound(M, D, dtype)``; the harness adds the differences' own error.
* cases: golden (b = 1, L = 5, h = 2), L = 0 (``dS0 = dS_last``, the other gradients empty), L = 1, odd L = 7 with
  b = 2, L = chunk - 1 and chunk + 1 (the chunk convention, default 64: the last chunk has one row); the initial
  state and the decay present or absent per ``use_state`` / ``use_alpha``; each case under ~600 input elements.
* reference_vjp: :func:`refimpl.attention.delta.delta_rule_vjp` with ``view = algorithm`` and ``chunk``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from oracles.delta_grad_forward import delta_rule_adjoint_magnitude, delta_rule_float64
from oracles.tolerance import componentwise_bound
from oracles.verify.ops_delta import OP, _norm_name, delta_scale, sample
from oracles.verify.registry import Case, GradSpec, case_builder, register_grad

WRT = ("q", "k", "v", "beta", "alpha", "S0")


def _eff(inp, conv):
    return (inp.get("alpha") if conv["use_alpha"] else None), (inp.get("S0") if conv["use_state"] else None)


def grad_forward(inp: Mapping[str, Any], conv: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """``{"o", "S_last"}`` in float64 (what :mod:`oracles.gradients` differentiates)."""
    alpha, S0 = _eff(inp, conv)
    n = np.shape(inp["k"])[-1]
    return delta_rule_float64(inp["q"], inp["k"], inp["v"], inp["beta"], alpha, S0, _norm_name(conv["key_norm"]),
                              _norm_name(conv["query_norm"]), delta_scale(conv, n)[0])


def grad_depth(l: int, n: int, p: int, algorithm: str, chunk: int) -> int:
    """``D = L (n + 6) + 3 (n + p) + 14``, plus ``5 T`` (``T = min(chunk, L)``) for the chunked WY adjoint."""
    D = l * (n + 6) + 3 * (n + p) + 14
    if algorithm == "chunked":
        D += 5 * min(int(chunk), max(l, 1))
    return D


def grad_bounds(inp, oracle_grads, conv, dtype, magnitudes, cotangents: Optional[Mapping[str, Any]] = None):
    """``componentwise_bound(M, D, dtype)`` per input (module docstring)."""
    b, l, h, n = np.shape(inp["k"])
    p = np.shape(inp["v"])[3]
    D = grad_depth(l, n, p, conv["algorithm"], conv["chunk"])
    if cotangents is not None and "o" in cotangents:
        alpha, S0 = _eff(inp, conv)
        m = delta_rule_adjoint_magnitude(inp["q"], inp["k"], inp["v"], inp["beta"], alpha, S0, cotangents["o"],
                                         cotangents.get("S_last"), _norm_name(conv["key_norm"]),
                                         _norm_name(conv["query_norm"]), delta_scale(conv, n)[0],
                                         chunk=int(conv["chunk"]) if conv["algorithm"] == "chunked" else None)
        what = "the adjoint recurrence on absolute values"
    else:
        m, what = dict(magnitudes), "|J|^T |w| from the differences (no cotangents given)"
    return {nm: componentwise_bound(m[nm], D, dtype, oracle_dtype=None,
                                    what=f"grad {nm}: dS_t carried over L steps (n + 6 each), then products over "
                                         f"n, p{' and the chunk' if conv['algorithm'] == 'chunked' else ''}; {what}")
            for nm in oracle_grads}


def grad_cases(conv) -> List[Case]:
    T = int(conv["chunk"])
    add = case_builder(OP, sample, 6101, conv)
    add("grad-golden", "golden", "b=1, l=5, h=2, n=3, e=2", 1, l=5, b=1, h=2, n=3, e=2)
    add("grad-L0", "edge", "L = 0: dS0 = dS_last, every other gradient empty", 2, l=0, b=1, h=2, n=2, e=2)
    add("grad-L1", "edge", "L = 1", 3, l=1, b=2, h=1, n=3, e=2)
    add("grad-odd", "edge", "L = 7 (odd), b = 2", 4, l=7, b=2, h=1, n=2, e=2)
    add("grad-chunk-1", "edge", f"L = chunk - 1 = {T - 1}", 5, l=max(T - 1, 0), b=1, h=1, n=2, e=2)
    add("grad-chunk+1", "edge", f"L = chunk + 1 = {T + 1} (the last chunk has one row)", 6, l=T + 1, b=1, h=1, n=2,
        e=2)
    return add.cases


def grad_sample(rng, conv, **sizes):
    return sample(rng, conv, l=sizes.get("l", int(rng.integers(0, 8))), b=1, h=int(rng.integers(1, 3)),
                  n=int(rng.integers(1, 4)), e=int(rng.integers(1, 3)))


def storing_vjp(inp, conv, cotangents, lowp) -> Dict[str, np.ndarray]:
    r"""The low-precision baseline's backward (:mod:`oracles.verify._lowp_storage`): the recurrent view step by step,
    the state ``S_t`` stored in ``lowp`` after every step of the forward scan and its adjoint ``dS_t`` after every
    step of the reverse scan (a loop in the dtype rounds its state every step); each step is refimpl's
    :func:`delta_rule` / :func:`delta_rule_vjp` (recurrent) on a one-step sequence (``initial_state = S_t``,
    ``d_final_state = dS_{t+1}``), in float32.  Nothing is shared over time (every input is per position)."""
    from oracles.verify._lowp_storage import concat_steps, storer, storing_reverse_scan
    from refimpl.attention.delta import delta_rule, delta_rule_vjp

    rnd = storer(lowp)
    f = lambda a: None if a is None else np.asarray(a, np.float32)  # noqa: E731
    alpha, S0 = _eff(inp, conv)
    q, k, v, beta, alpha, S0 = (f(a) for a in (inp["q"], inp["k"], inp["v"], inp["beta"], alpha, S0))
    b, l, h, n = q.shape
    e = v.shape[3]
    h0 = np.zeros((b, h, e, n), np.float32) if S0 is None else S0
    do = rnd(cotangents["o"])
    dl = f(cotangents.get("S_last"))
    kw = dict(key_norm=_norm_name(conv["key_norm"]), query_norm=_norm_name(conv["query_norm"]),
              scale=delta_scale(conv, n)[0])
    sl = lambda a, t: None if a is None else a[:, t:t + 1]  # noqa: E731

    def fwd(t, S):
        return delta_rule(sl(q, t), sl(k, t), sl(v, t), sl(beta, t), decay=sl(alpha, t), initial_state=S,
                          return_final_state=True, **kw)[1]

    def vjp(t, S, dS):
        g = delta_rule_vjp(sl(q, t), sl(k, t), sl(v, t), sl(beta, t), do=sl(do, t), d_final_state=dS,
                           decay=sl(alpha, t), initial_state=S, **kw)
        return g, g["initial_state"]

    steps, dS0 = storing_reverse_scan(l, h0, dl, fwd, vjp, lowp)
    out = {nm: concat_steps(steps, nm, 1, np.shape(x)) for nm, x in (("q", q), ("k", k), ("v", v), ("beta", beta))}
    if alpha is not None:
        out["alpha"] = concat_steps(steps, "decay", 1, alpha.shape)
    if S0 is not None:
        out["S0"] = dS0
    return out


def reference_vjp(inp, conv, cotangents, lowp: Optional[str] = None) -> Dict[str, np.ndarray]:
    """refimpl's VJP in the op's canonical layout (``alpha`` is refimpl's ``decay``, ``S0`` its ``initial_state``);
    ``lowp`` (the harness's low-precision baseline): :func:`storing_vjp`."""
    from refimpl.attention.delta import delta_rule_vjp

    if lowp is not None:
        return storing_vjp(inp, conv, cotangents, lowp)
    alpha, S0 = _eff(inp, conv)
    n = np.shape(inp["k"])[-1]
    kw = dict(chunk=int(conv["chunk"])) if conv["algorithm"] == "chunked" else {}
    g = delta_rule_vjp(inp["q"], inp["k"], inp["v"], inp["beta"], do=cotangents["o"],
                       d_final_state=cotangents.get("S_last"), decay=alpha, initial_state=S0,
                       key_norm=_norm_name(conv["key_norm"]), query_norm=_norm_name(conv["query_norm"]),
                       scale=delta_scale(conv, n)[0], view=conv["algorithm"], **kw)
    out = {nm: g[nm] for nm in ("q", "k", "v", "beta")}
    if alpha is not None:
        out["alpha"] = g["decay"]
    if S0 is not None:
        out["S0"] = g["initial_state"]
    return out


GRAD = register_grad(GradSpec(
    op=OP, wrt=WRT, forward=grad_forward, bounds=grad_bounds, cases=grad_cases, reference_vjp=reference_vjp,
    outputs=("o", "S_last"), sample=grad_sample, module=__name__,
    notes="forward: oracles.delta_grad_forward.delta_rule_float64 (float64 transition-matrix loop); bound: "
          "componentwise, depth L (n + 6) + 3 (n + p) + 14 (+ 5 chunk for the chunked view) on the adjoint "
          "recurrence run on absolute values",
))


def _canonical_grad_fn(view: str, backend: str = "numpy"):
    def grad_fn(q, k, v, beta, alpha, S0, do, S_last=None):
        """refimpl's VJP as an explicit backward in the canonical protocol (the op's default conventions)."""
        from refimpl.attention.delta import delta_rule_vjp

        g = delta_rule_vjp(q, k, v, beta, do=do, d_final_state=S_last, decay=alpha, initial_state=S0, view=view,
                           backend=backend)
        out = {nm: g[nm] for nm in ("q", "k", "v", "beta")}
        if alpha is not None:
            out["alpha"] = g["decay"]
        if S0 is not None:
            out["S0"] = g["initial_state"]
        return out

    grad_fn.__name__ = f"refimpl_{view}_{backend}_grad_fn"
    return grad_fn


#: ``refimpl verify --op attention.delta_rule --adapter refimpl refimpl.attention.delta:delta_rule --grad-fn
#: oracles.verify.grad_delta:refimpl_chunked_grad_fn`` (and ``..._recurrent_...``, ``..._numba_...``)
refimpl_recurrent_grad_fn = _canonical_grad_fn("recurrent")
refimpl_chunked_grad_fn = _canonical_grad_fn("chunked")
refimpl_numba_grad_fn = _canonical_grad_fn("chunked", "numba")
