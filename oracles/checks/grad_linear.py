"""Report rows ``attention.linear.grad`` and ``features.<kind>.grad``.

* every backward (view, backend) of ``refimpl.attention.linear_attention_vjp`` against central differences
  (Richardson) of the dense float64 forward :func:`oracles.linear_grad_forward.linear_forward`, on a small causal
  normalized case with the initial state and the final state's cotangent (L = 9, chunk 4: two chunk boundaries, the
  last chunk short), elementwise within the differences' error plus the derived rounding bound
  (:func:`oracles.linear_grad_forward.linear_vjp_bound`); the non-causal quadratic view on its own case;
* the Numba chunked backward kernel against the NumPy chunked adjoints on a longer case (L = 300, chunk 64), within
  the two backwards' bounds;
* each feature map's VJP (``features.elu_plus_one``, ``features.dpfp``, ``features.positive``,
  ``features.positive.row_max`` (the max differentiated through), ``features.trig``, ``features.hyperbolic``)
  against the differences of :func:`oracles.linear_grad_forward.feature_forward` within
  :func:`oracles.linear_grad_forward.feature_vjp_bound`.
"""
from __future__ import annotations

import numpy as np

from oracles.checks import check, timed
from oracles.checks._grad import grad_agreement_row, grad_rows
from oracles.gradients import fd_vjp
from oracles.linear_grad_forward import feature_forward, feature_vjp_bound, linear_forward, linear_vjp_bound

SEED = 20261414


def _linear_case(rng, b, l, s, h, n, p, causal=True):
    pos = lambda *sh: rng.uniform(0.1, 1.5, size=sh)  # noqa: E731
    x = {"phi_q": pos(b, l, h, n), "phi_k": pos(b, s, h, n), "v": rng.standard_normal((b, s, h, p)),
         "S0": rng.standard_normal((b, h, p, n)), "u0": pos(b, h, n)}
    w = {"o": rng.standard_normal((b, l, h, p)), "S_last": rng.standard_normal((b, h, p, n)),
         "u_last": rng.standard_normal((b, h, n))}
    return x, w


def _ours(fn, x, w, **kw):
    g, t = timed(fn, x["phi_q"], x["phi_k"], x["v"], do=w["o"], d_final_state=(w["S_last"], w["u_last"]),
                 initial_state=(x["S0"], x["u0"]), **kw)
    S0, u0 = g["initial_state"]
    return {"phi_q": g["phi_q"], "phi_k": g["phi_k"], "v": g["v"], "S0": S0, "u0": u0}, t


@check
def linear_attention_grad():
    from refimpl.attention.linear import VJP_IMPLEMENTATIONS, linear_attention_vjp

    rng = np.random.default_rng(SEED)
    rows = []
    wrt = ("phi_q", "phi_k", "v", "S0", "u0")
    for causal, pairs in ((True, [pr for pr in VJP_IMPLEMENTATIONS.pairs()]), (False, [("quadratic", "numpy")])):
        b, l, s, h, n, p = (1, 9, 9, 2, 3, 2) if causal else (1, 4, 6, 2, 3, 2)
        x, w = _linear_case(rng, b, l, s, h, n, p, causal)
        f = lambda a, c=causal: linear_forward(a["phi_q"], a["phi_k"], a["v"], a["S0"], a["u0"], causal=c)  # noqa: E731
        fd = fd_vjp(f, x, w, wrt)
        bounds = linear_vjp_bound(x["phi_q"], x["phi_k"], x["v"], x["S0"], x["u0"], w["o"], w["S_last"],
                                  w["u_last"], causal=causal, normalize=True, eps=0.0, eps_mode="add",
                                  dtype=np.float64)
        for view, backend in pairs:
            kw = dict(view=view, backend=backend, causal=causal, **(dict(chunk=4) if view == "chunked" else {}))
            _ours(linear_attention_vjp, x, w, **kw)  # warm
            g, t = _ours(linear_attention_vjp, x, w, **kw)
            rows += grad_rows("attention.linear", f"{backend}/{view}", g, fd, bounds, t,
                              note=f"l={l}, {'causal' if causal else f'non-causal, s={s}'}, normalized, with S0/u0 "
                                   f"and the final state's cotangent{', chunk 4' if view == 'chunked' else ''}; "
                                   f"oracle: Richardson differences of the dense float64 forward")
    # the Numba kernel against the NumPy chunked adjoints, longer
    b, l, h, n, p = 1, 300, 2, 16, 16
    x, w = _linear_case(rng, b, l, l, h, n, p)
    ref, _ = _ours(linear_attention_vjp, x, w, view="chunked", chunk=64)
    got, t = _ours(linear_attention_vjp, x, w, view="chunked", backend="numba", chunk=64)
    bd = linear_vjp_bound(x["phi_q"], x["phi_k"], x["v"], x["S0"], x["u0"], w["o"], w["S_last"], w["u_last"],
                          causal=True, normalize=True, eps=0.0, eps_mode="add", dtype=np.float64)
    bounds = {k: bd[k].scaled(2.0, "two float64 backward passes") for k in ref}
    rows.append(grad_agreement_row("attention.linear", "numba/chunked vs numpy/chunked", got, ref, bounds, t,
                                   note=f"l={l}, h={h}, n={n}, p={p}, chunk 64 (the last chunk short)"))
    return rows


_MAPS = [("elu_plus_one", "features.elu_plus_one", {}), ("dpfp", "features.dpfp", {"nu": 2}),
         ("positive", "features.positive", {}), ("positive", "features.positive.row_max", {"stabilizer": "row_max"}),
         ("trig", "features.trig", {}), ("hyperbolic", "features.hyperbolic", {})]


@check
def feature_maps_grad():
    from refimpl.attention.features import feature_map_vjp

    rng = np.random.default_rng(SEED + 1)
    rows = []
    x = 0.7 * rng.standard_normal((2, 3, 3))
    x = np.where(x >= 0, np.maximum(x, 0.1), np.minimum(x, -0.1))  # relu/elu kinks farther than the step
    W = rng.standard_normal((4, 3))
    for kind, op, kw in _MAPS:
        st = kw.get("stabilizer", "none")
        nu = kw.get("nu", 1)
        rand = kind in ("trig", "positive", "hyperbolic")
        inp = {"x": x, "W": W} if rand else {"x": x}
        f = lambda a, k=kind: {"phi": feature_forward(a["x"], k, W=a.get("W"), nu=nu, stabilizer=st)}  # noqa: E731
        dphi = rng.standard_normal(f(inp)["phi"].shape)
        fd = fd_vjp(f, inp, {"phi": dphi}, list(inp))
        call = dict(dphi=dphi, **({"W": W} if rand else {}), **({"nu": nu} if kind == "dpfp" else {}),
                    **({"stabilizer": st} if st != "none" else {}))
        feature_map_vjp(x, kind, **call)
        g, t = timed(feature_map_vjp, x, kind, **call)
        bounds = feature_vjp_bound(x, kind, dphi, np.float64, W=W if rand else None, nu=nu, stabilizer=st)
        rows += grad_rows(op, "numpy", g, fd, bounds, t,
                          note=f"x (2 3 3){', W (4 3)' if rand else ''}{', the max differentiated through' if st != 'none' else ''}; "
                               f"oracle: Richardson differences of the float64 definition")
    return rows
