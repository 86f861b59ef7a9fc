"""Report rows ``attention.multi_head.grad``, ``attention.performer.grad`` and ``ssm.hippo_projection.grad``.

* every backward (view, backend) of ``multi_head_attention_vjp`` against central differences (Richardson) of the
  float64 forward :func:`oracles.composite_grad_forward.multi_head_forward` on a small bottom-right causal cross
  attention case (l = 5, s = 4), elementwise within the differences' error plus the derived bound
  (:func:`oracles.composite_grad_forward.multi_head_vjp_bound`: the backward on absolute values);
* every backward of ``performer_attention_vjp`` against the differences of
  :func:`oracles.composite_grad_forward.performer_forward` (causal L = 9 with chunk 4, the query stabilizer's max
  differentiated through; the non-causal quadratic view on its own case), and the Numba chunked linear-attention
  adjoint inside it against the NumPy chunked one at L = 300;
* ``hippo_projection_vjp`` (LegS and LegT, bilinear, with ``c0``) against the differences of
  :func:`oracles.composite_grad_forward.hippo_forward` within :func:`oracles.composite_grad_forward.hippo_vjp_bound`.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.checks import check, timed
from oracles.checks._grad import grad_agreement_row, grad_rows
from oracles.composite_grad_forward import (hippo_forward, hippo_vjp_bound, multi_head_forward, multi_head_vjp_bound,
                                            performer_forward, performer_vjp_bound)
from oracles.gradients import fd_vjp

SEED = 20261416
MH = ("x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O")


@check
def multi_head_grad():
    from refimpl.attention.softmax import MULTI_HEAD_VJP_IMPLEMENTATIONS, multi_head_attention_vjp

    rng = np.random.default_rng(SEED)
    b, l, s, d, h, n, p, dout = 1, 5, 4, 3, 2, 2, 2, 3
    x = {"x_q": rng.standard_normal((b, l, d)), "x_kv": rng.standard_normal((b, s, d)),
         "W_Q": rng.standard_normal((h, d, n)) / math.sqrt(d), "W_K": rng.standard_normal((h, d, n)) / math.sqrt(d),
         "W_V": rng.standard_normal((h, d, p)) / math.sqrt(d), "W_O": rng.standard_normal((h * p, dout)) / 2}
    w = rng.standard_normal((b, l, dout))
    keep = (np.arange(s)[None, :] <= np.arange(l)[:, None] + s - l)[None, None]
    sc = 1 / math.sqrt(n)
    fd = fd_vjp(lambda a: {"out": multi_head_forward(*(a[k] for k in MH), sc, keep)}, x, {"out": w}, MH)
    bounds = multi_head_vjp_bound(x, w, sc, np.float64, keep)
    rows = []
    for view, backend in MULTI_HEAD_VJP_IMPLEMENTATIONS.pairs():
        kw = dict(dout=w, causal=True, alignment="bottom_right", view=view, backend=backend,
                  **(dict(block_q=2, block_k=3) if view == "tiled" else {}))
        multi_head_attention_vjp(*(x[k] for k in MH), **kw)  # warm
        g, t = timed(multi_head_attention_vjp, *(x[k] for k in MH), **kw)
        rows += grad_rows("attention.multi_head", f"{backend}/{view}", g, fd, bounds, t,
                          note=f"b={b}, l={l}, s={s}, d={d}, h={h}, n={n}, p={p}, dout={dout}, bottom-right causal "
                               f"(the first row sees no key){', tiles 2 x 3' if view == 'tiled' else ''}; oracle: "
                               f"Richardson differences of the float64 forward")
    return rows


@check
def performer_grad():
    from refimpl.attention.linear import PERFORMER_VJP_IMPLEMENTATIONS, performer_attention_vjp

    rng = np.random.default_rng(SEED + 1)
    rows = []
    for causal in (True, False):
        b, l, s, h, d, e, m = (1, 9, 9, 2, 2, 2, 3) if causal else (1, 4, 6, 1, 3, 2, 4)
        x = {"q": 0.7 * rng.standard_normal((b, l, h, d)), "k": 0.7 * rng.standard_normal((b, s, h, d)),
             "v": rng.standard_normal((b, s, h, e)), "W": rng.standard_normal((m, d))}
        w = rng.standard_normal((b, l, h, e))
        kw = dict(kind="positive", r=d ** -0.25, feature_eps=0.0, query_stabilizer="row_max", key_stabilizer="none",
                  causal=causal, normalize=True, eps=0.0)
        fd = fd_vjp(lambda a: {"o": performer_forward(a["q"], a["k"], a["v"], a["W"], eps_mode="add", **kw)}, x,
                    {"o": w}, list(x))
        bounds = performer_vjp_bound(x, w, kw, np.float64)
        pairs = [pr for pr in PERFORMER_VJP_IMPLEMENTATIONS.pairs() if causal or pr[0] == "quadratic"]
        for view, backend in pairs:
            call = dict(do=w, causal=causal, stabilizer="query_max", view=view, backend=backend, chunk=4)
            performer_attention_vjp(*(x[k] for k in "qkvW"), **call)  # warm
            g, t = timed(performer_attention_vjp, *(x[k] for k in "qkvW"), **call)
            rows += grad_rows("attention.performer", f"{backend}/{view}", g, fd, bounds, t,
                              note=f"l={l}, s={s}, {'causal, chunk 4' if causal else 'non-causal'}, positive "
                                   f"features m={m}, query_max (the max differentiated through)")
    # the Numba chunked adjoint against the NumPy chunked one, longer
    b, l, h, d, e, m = 1, 300, 2, 8, 8, 16
    x = {"q": 0.5 * rng.standard_normal((b, l, h, d)), "k": 0.5 * rng.standard_normal((b, l, h, d)),
         "v": rng.standard_normal((b, l, h, e)), "W": rng.standard_normal((m, d))}
    w = rng.standard_normal((b, l, h, e))
    call = dict(do=w, causal=True, view="chunked", chunk=64)
    ref = performer_attention_vjp(*(x[k] for k in "qkvW"), **call)
    performer_attention_vjp(*(x[k] for k in "qkvW"), backend="numba", **call)  # warm
    got, t = timed(performer_attention_vjp, *(x[k] for k in "qkvW"), backend="numba", **call)
    kw = dict(kind="positive", r=d ** -0.25, feature_eps=0.0, query_stabilizer="none", key_stabilizer="none",
              causal=True, normalize=True, eps=0.0)
    bd = performer_vjp_bound(x, w, kw, np.float64)
    bounds = {k: bd[k].scaled(2.0, "two float64 backward passes") for k in ref}
    rows.append(grad_agreement_row("attention.performer", "numba/chunked vs numpy/chunked", got, ref, bounds, t,
                                   note=f"l={l}, h={h}, d={d}, e={e}, m={m}, chunk 64 (the last chunk short)"))
    return rows


@check
def hippo_projection_grad():
    from refimpl.ssm.hippo import hippo_projection_vjp

    rng = np.random.default_rng(SEED + 2)
    rows = []
    L, N, dt = 17, 4, 0.02
    for measure in ("legs", "legt"):
        x = {"f": rng.standard_normal(L), "dt": np.asarray(dt), "c0": rng.standard_normal(N)}
        w = rng.standard_normal((L, N))
        fd = fd_vjp(lambda a: {"c": hippo_forward(a["f"], measure, N, a["dt"], alpha=0.5, c0=a["c0"])}, x,
                    {"c": w}, list(x))
        bounds = hippo_vjp_bound(x["f"], measure, N, dt, w, alpha=0.5, c0=x["c0"])
        g, t = timed(hippo_projection_vjp, x["f"], measure, N, dt, dc=w, initial_state=x["c0"])
        g = {"f": g["f"], "dt": g["dt"], "c0": g["initial_state"]}
        rows += grad_rows("ssm.hippo_projection", f"numpy/recurrent {measure}", g, fd, bounds, t,
                          note=f"L={L}, N={N}, dt={dt}, bilinear, with c0 (dt drops out of LegS: 0)")
    return rows
