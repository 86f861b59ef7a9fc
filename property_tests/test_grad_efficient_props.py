"""Property tests of the efficient-attention backward passes:

* the **adjoint identity** ``<J v, w> = <v, J^T w>``: :func:`oracles.gradients.fd_jvp` (Richardson differences of the
  dense float64 forward along a random tangent ``v``) against ``sum v * VJP`` of our backward, within the
  differences' error plus ``sum |v| * gamma_D |adjoint|`` (the derived bounds of :mod:`oracles.verify.grad_efficient`);
* the **views agree**: FLASH ``chunked`` (the reverse scan over chunks) vs ``materialized``, LSH ``sorted`` (the
  paper's algorithm in reverse) vs ``materialized``, at L = 0, 1, odd, chunk - 1, chunk, chunk + 1 and long, within
  twice the derived bound (each within ``gamma_D |adjoint|`` of the exact gradient).
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp
from oracles.tolerance import Bound, assert_within
from oracles.verify.registry import get_grad, get_op

_W = ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o")


def _conv(op, **over):
    conv = {c.name: c.default for c in get_op(op).conventions}
    conv.update(over)
    return conv


def _sample(op, conv, seed, **sizes):
    return get_op(op).sample(np.random.default_rng(seed), conv, **sizes)


def _adjoint_identity(op, conv, x, seed):
    g = get_grad(op)
    fwd = lambda inp: g.forward(dict(inp), conv)  # noqa: E731
    out = fwd(x)
    rng = np.random.default_rng(seed + 1)
    w = {k: rng.standard_normal(np.shape(a)) for k, a in out.items()}
    wrt = [n for n in g.wrt if x.get(n) is not None]
    v = {n: rng.standard_normal(np.shape(x[n])) for n in wrt}
    jv, err = fd_jvp(fwd, x, v, w)
    grads = g.reference_vjp(x, conv, w)
    vjp = sum(float(np.sum(v[n] * grads[n])) for n in wrt)
    bounds = g.bounds(x, None, conv, np.dtype(np.float64), None, cotangents=w)
    ours = sum(float(np.sum(np.abs(v[n]) * np.asarray(bounds[n].values))) for n in wrt)
    assert abs(jv - vjp) <= err + ours, (op, conv, jv, vjp, err, ours)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 3, 6]), sharing=st.sampled_from(["per_head", "shared"]))
def test_linformer_adjoint_identity(seed, l, sharing):
    conv = _conv("attention.linformer", projection_sharing=sharing)
    _adjoint_identity("attention.linformer", conv, _sample("attention.linformer", conv, seed, l=l, s=l), seed)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 3, 6]), variant=st.sampled_from(["full", "simple",
                                                                                                  "local"]),
       causal=st.booleans())
def test_aft_adjoint_identity(seed, l, variant, causal):
    conv = _conv("attention.aft", variant=variant, causal=causal)
    _adjoint_identity("attention.aft", conv, _sample("attention.aft", conv, seed, l=l), seed)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 2, 3, 4, 7]), chunk=st.sampled_from([0, 2, 3]),
       causal=st.booleans())
def test_gau_adjoint_identity(seed, l, chunk, causal):
    conv = _conv("attention.gau", chunk=chunk, causal=causal)
    _adjoint_identity("attention.gau", conv, _sample("attention.gau", conv, seed, l=l), seed)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), l=st.sampled_from([0, 1, 3, 5, 8]), causal=st.booleans(), wrap=st.booleans(),
       rounds=st.sampled_from([1, 2, 3]))
def test_lsh_adjoint_identity(seed, l, causal, wrap, rounds):
    conv = _conv("attention.lsh", causal=causal, wrap=wrap, n_rounds=rounds)
    _adjoint_identity("attention.lsh", conv, _sample("attention.lsh", conv, seed, l=l), seed)


# ------------------------------------------------------------------------------------------ views agree

def _twice(b: Bound) -> Bound:
    return Bound(2.0 * np.asarray(b.values), "twice " + b.source + " (two backwards, each within it of the exact)")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), chunk=st.integers(1, 4), which=st.sampled_from(["0", "1", "odd", "c-1", "c",
                                                                                      "c+1", "long"]),
       causal=st.booleans(), use_bias=st.booleans())
def test_flash_chunked_and_materialized_vjps_agree(seed, chunk, which, causal, use_bias):
    from refimpl.attention.gau import mixed_chunk_attention_vjp

    l = {"0": 0, "1": 1, "odd": 7, "c-1": max(chunk - 1, 0), "c": chunk, "c+1": chunk + 1, "long": 37}[which]
    conv = _conv("attention.gau", chunk=chunk, causal=causal, use_bias=use_bias)
    x = _sample("attention.gau", conv, seed, l=l)
    rng = np.random.default_rng(seed + 2)
    do = rng.standard_normal(np.shape(x["x"]))
    bias = x["bias"] if use_bias else None
    a = mixed_chunk_attention_vjp(*(x[k] for k in _W), do=do, chunk=chunk, causal=causal, bias=bias, view="chunked")
    b = mixed_chunk_attention_vjp(*(x[k] for k in _W), do=do, chunk=chunk, causal=causal, bias=bias,
                                  view="materialized")
    bounds = get_grad("attention.gau").bounds(x, None, conv, np.dtype(np.float64), None, cotangents={"o": do})
    assert set(a) == set(b)
    for n in a:
        assert_within(a[n], b[n], _twice(bounds[n]), context=f"grad {n}, l={l}, c={chunk}, causal={causal}")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), which=st.sampled_from(["0", "1", "odd", "c-1", "c", "c+1", "long"]),
       chunk=st.integers(1, 4), causal=st.booleans(), wrap=st.booleans(), rounds=st.sampled_from([1, 2, 3]))
def test_lsh_sorted_and_materialized_vjps_agree(seed, which, chunk, causal, wrap, rounds):
    from refimpl.attention.lsh import lsh_attention_vjp

    l = {"0": 0, "1": 1, "odd": 9, "c-1": max(chunk - 1, 0), "c": chunk, "c+1": chunk + 1, "long": 40}[which]
    conv = _conv("attention.lsh", chunk=chunk, causal=causal, wrap=wrap, n_rounds=rounds)
    x = _sample("attention.lsh", conv, seed, l=l)
    rng = np.random.default_rng(seed + 3)
    do = rng.standard_normal(np.shape(x["v"]))
    kw = dict(do=do, buckets=x["buckets"], chunk=chunk, causal=causal, wrap=wrap)
    a = lsh_attention_vjp(x["qk"], x["v"], view="sorted", **kw)
    b = lsh_attention_vjp(x["qk"], x["v"], view="materialized", **kw)
    bounds = get_grad("attention.lsh").bounds(x, None, conv, np.dtype(np.float64), None, cotangents={"o": do})
    for n in ("qk", "v"):
        assert_within(a[n], b[n], _twice(bounds[n]), context=f"grad {n}, l={l}, c={chunk}")
