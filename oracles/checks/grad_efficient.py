"""Report rows ``attention.{linformer,aft,gau,lsh}.grad``: every backward (view, backend) of the efficient-attention
ops against finite differences of the dense float64 forwards of :mod:`oracles.efficient_grad_forward`; bound = the
differences' error + ``gamma_D`` on the adjoints run on absolute values (the depths of
:mod:`oracles.verify.grad_efficient`).  One small case per convention shown (the op's ``golden-small`` gradient
case, a seeded cotangent)."""
from __future__ import annotations

import numpy as np

from oracles.checks import check, timed
from oracles.checks._grad import grad_rows
from oracles.gradients import fd_vjp

SEED = 20261208


def _setup(op: str, conv_over: dict, case_id: str = "golden-small"):
    from oracles.verify.registry import get_grad, get_op

    spec, g = get_op(op), get_grad(op)
    conv = {c.name: c.default for c in spec.conventions}
    conv.update(conv_over)
    case = next(c for c in g.cases(conv) if c.case_id == case_id)
    x = dict(case.inputs)
    fwd = lambda inp: g.forward(dict(inp), conv)  # noqa: E731
    out = fwd(x)
    rng = np.random.default_rng(SEED)
    w = {k: rng.standard_normal(np.shape(v)) for k, v in out.items()}
    wrt = [n for n in g.wrt if x.get(n) is not None]
    fd = fd_vjp(fwd, x, w, wrt)
    bounds = g.bounds(x, fd.grad, conv, np.dtype(np.float64), fd.magnitude, cotangents=w)
    return x, conv, w, fd, bounds, case


def _note(case, conv_over, extra=""):
    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in case.shapes().items() if k != "buckets")
    conv = ", ".join(f"{k}={v}" for k, v in conv_over.items())
    return f"{case.case_id}: {shapes}" + (f"; {conv}" if conv else "") + "; oracle: fd_vjp of the dense float64 " \
        "forward" + (f"; {extra}" if extra else "")


@check
def linformer_grad():
    from refimpl.attention.linformer import VJP_IMPLEMENTATIONS, linformer_attention_vjp

    rows = []
    for conv_over in ({}, {"projection_sharing": "shared", "scale": 0.5}):
        x, conv, w, fd, bounds, case = _setup("attention.linformer", conv_over)
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            kw = dict(do=w["o"], scale=conv["scale"], view=view, backend=backend)
            g, t = timed(linformer_attention_vjp, x["q"], x["k"], x["v"], x["E"], x["F"], **kw)
            rows += grad_rows("attention.linformer", f"{backend}/{view}", g, fd, bounds, t,
                              note=_note(case, conv_over))
    return rows


@check
def aft_grad():
    from refimpl.attention.aft import VJP_IMPLEMENTATIONS, aft_attention_vjp

    rows = []
    for conv_over in ({}, {"variant": "local", "causal": True}, {"variant": "simple"}):
        x, conv, w, fd, bounds, case = _setup("attention.aft", conv_over)
        window = (int(conv["window_left"]), 0 if conv["causal"] else int(conv["window_right"])) \
            if conv["variant"] == "local" else None
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            kw = dict(dy=w["y"], variant=conv["variant"], causal=conv["causal"], window=window, view=view,
                      backend=backend)
            g, t = timed(aft_attention_vjp, x["q"], x["k"], x["v"], x["w"], **kw)
            rows += grad_rows("attention.aft", f"{backend}/{view}", g, fd, bounds, t, note=_note(case, conv_over))
    return rows


_GAU_W = ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o")


@check
def gau_grad():
    from refimpl.attention.gau import (FLASH_VJP_IMPLEMENTATIONS, GAU_VJP_IMPLEMENTATIONS, gated_attention_unit_vjp,
                                       mixed_chunk_attention_vjp)

    rows = []
    x, conv, w, fd, bounds, case = _setup("attention.gau", {"causal": True})
    for view, backend in GAU_VJP_IMPLEMENTATIONS.pairs():
        g, t = timed(gated_attention_unit_vjp, *(x[k] for k in _GAU_W), do=w["o"], causal=True, bias=x["bias"],
                     view=view, backend=backend)
        rows += grad_rows("attention.gau", f"{backend}/{view}", g, fd, bounds, t,
                          note=_note(case, {"causal": True}, "GAU"))
    for conv_over, cid in (({"chunk": 2, "causal": True}, "edge-short-last"), ({"chunk": 3}, "edge-chunk+1")):
        x, conv, w, fd, bounds, case = _setup("attention.gau", conv_over, cid)
        for view, backend in FLASH_VJP_IMPLEMENTATIONS.pairs():
            g, t = timed(mixed_chunk_attention_vjp, *(x[k] for k in _GAU_W), do=w["o"], chunk=conv["chunk"],
                         causal=conv["causal"], bias=x["bias"], view=view, backend=backend)
            rows += grad_rows("attention.gau", f"{backend}/{view}", g, fd, bounds, t,
                              note=_note(case, conv_over, "FLASH mixed chunk"))
    return rows


@check
def lsh_grad():
    from refimpl.attention.lsh import VJP_IMPLEMENTATIONS, lsh_attention_vjp

    rows = []
    for conv_over in ({}, {"causal": True, "wrap": True, "n_rounds": 3}):
        x, conv, w, fd, bounds, case = _setup("attention.lsh", conv_over)
        for view, backend in VJP_IMPLEMENTATIONS.pairs():
            kw = dict(do=w["o"], buckets=np.asarray(x["buckets"]).astype(np.int64), chunk=int(conv["chunk"]),
                      causal=conv["causal"], wrap=conv["wrap"], scale=conv["scale"], view=view, backend=backend)
            g, t = timed(lsh_attention_vjp, x["qk"], x["v"], **kw)
            rows += grad_rows("attention.lsh", f"{backend}/{view}", g, fd, bounds, t,
                              note=_note(case, conv_over, "buckets fixed (hashing: zero gradient a.e.)"))
    return rows


@check
def mega_grad():
    from oracles.verify import ops_mega
    from refimpl.attention.mega import MEGA_LAYER_VJP, mega_layer_vjp

    rows = []
    for conv_over in ({}, {"chunk": 2, "causal": True, "attention": "laplace"}):
        x, conv, w, fd, bounds, case = _setup("attention.mega", conv_over)
        c = ops_mega._claimed(x, conv)
        for view, backend in MEGA_LAYER_VJP.pairs():
            g, t = timed(mega_layer_vjp, c["x"], **ops_mega._params(c), dy=w["y"], **ops_mega._options(conv),
                         view=view, backend=backend)
            rows += grad_rows("attention.mega", f"{backend}/{view}", g, fd, bounds, t,
                              note=_note(case, conv_over, "EMA adjoint: a reverse scan"))
    return rows
