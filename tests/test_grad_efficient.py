"""The backward passes of the efficient-attention ops (Linformer, AFT, GAU / FLASH, LSH with fixed buckets) against
ground truth that never calls them:

* every backward view against :func:`oracles.gradients.fd_vjp` of the dense float64 forwards
  (:mod:`oracles.efficient_grad_forward`) elementwise, within ``Bound(fd error) + gamma_D |adjoint|`` (the derived
  bounds of :mod:`oracles.verify.grad_efficient`), on small cases (L = 0, 1, odd, chunk +- 1);
* one tiny case against mpmath differences of an mpmath forward (:func:`oracles.gradients.mp_vjp`);
* ``refimpl verify --grad`` (the harness) passes our reference (float64 and float32) and torch autograd
  candidates written here, and fails every backward mutant of :mod:`oracles.mutants.grad_efficient`.

The adjoint identity and the views' agreement are property tests: ``property_tests/test_grad_efficient_props.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from oracles.gradients import fd_vjp, mp_vjp
from oracles.tolerance import Bound, compare
from oracles.verify.registry import get_grad, get_op

OPS = ("attention.linformer", "attention.aft", "attention.gau", "attention.lsh", "attention.mega")


def _conv(op, **over):
    conv = {c.name: c.default for c in get_op(op).conventions}
    conv.update(over)
    return conv


def _check_case(op, conv, case_id, vjp):
    """``vjp(inputs, conv, cotangents) -> grads`` against fd_vjp on the op's gradient case ``case_id``."""
    g = get_grad(op)
    case = next(c for c in g.cases(conv) if c.case_id == case_id)
    x = dict(case.inputs)
    fwd = lambda inp: g.forward(dict(inp), conv)  # noqa: E731
    out = fwd(x)
    rng = np.random.default_rng(7)
    w = {k: rng.standard_normal(np.shape(v)) for k, v in out.items()}
    wrt = [n for n in g.wrt if x.get(n) is not None]
    fd = fd_vjp(fwd, x, w, wrt)
    bounds = g.bounds(x, fd.grad, conv, np.dtype(np.float64), fd.magnitude, cotangents=w)
    grads = vjp(x, conv, w)
    assert set(grads) == set(wrt), (set(grads), wrt)
    for n in wrt:
        assert np.shape(grads[n]) == np.shape(x[n])
        cmp = compare(grads[n], fd.grad[n], Bound(fd.error[n], "fd") + bounds[n])
        assert cmp.passed, f"{op} {case_id} grad {n}: {cmp.message} (worst err/bound {cmp.worst_ratio:.3g})"


# ------------------------------------------------------------------------------------------ Linformer

def _lin_vjp(view):
    def vjp(x, conv, w):
        from refimpl.attention.linformer import linformer_attention_vjp

        return linformer_attention_vjp(x["q"], x["k"], x["v"], x["E"], x["F"], do=w["o"], scale=conv["scale"],
                                       view=view)
    return vjp


@pytest.mark.parametrize("sharing, case_id", [("per_head", "edge-L1"), ("per_head", "edge-L0"),
                                              ("per_head", "edge-r0"), ("shared", "edge-large-scores")])
def test_linformer_vjp_against_differences(sharing, case_id):
    _check_case("attention.linformer", _conv("attention.linformer", projection_sharing=sharing), case_id,
                _lin_vjp("materialized"))


# ------------------------------------------------------------------------------------------ AFT

def _aft_vjp(x, conv, w):
    from refimpl.attention.aft import aft_attention_vjp

    window = (int(conv["window_left"]), 0 if conv["causal"] else int(conv["window_right"])) \
        if conv["variant"] == "local" else None
    return aft_attention_vjp(x["q"], x["k"], x["v"], x["w"] if conv["variant"] != "simple" else None, dy=w["y"],
                             variant=conv["variant"], causal=conv["causal"], window=window)


@pytest.mark.parametrize("over, case_id", [({}, "edge-L1"), ({}, "edge-L0"), ({}, "edge-spread-keys"),
                                           ({"variant": "local", "causal": True}, "golden-small"),
                                           ({"variant": "local", "window_left": 2, "window_right": 0}, "edge-L1"),
                                           ({"variant": "simple", "causal": True}, "edge-spread-keys")])
def test_aft_vjp_against_differences(over, case_id):
    _check_case("attention.aft", _conv("attention.aft", **over), case_id, _aft_vjp)


def test_aft_dw_is_zero_where_w_does_not_enter():
    from refimpl.attention.aft import aft_attention_vjp

    rng = np.random.default_rng(3)
    q, k, v, dy = (rng.standard_normal((2, 6, 3)) for _ in range(4))
    w = rng.standard_normal((6, 6))
    g = aft_attention_vjp(q, k, v, w, dy=dy, variant="local", causal=True, window=1)
    t, tp = np.arange(6)[:, None], np.arange(6)[None, :]
    assert np.all(g["w"][(tp > t) | (tp < t - 1)] == 0)
    # inside the window w enters (query 0 has one kept key: its softmax is constant, dw[0, 0] = 0)
    inside = (tp <= t) & (tp >= t - 1) & (t > 0)
    assert np.all(g["w"][inside] != 0)


# ------------------------------------------------------------------------------------------ GAU / FLASH

_W = ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o")


def _gau_vjp(view):
    def vjp(x, conv, w):
        from refimpl.attention.gau import gated_attention_unit_vjp, mixed_chunk_attention_vjp

        bias = x["bias"] if conv["use_bias"] else None
        if not conv["chunk"]:
            return gated_attention_unit_vjp(*(x[k] for k in _W), do=w["o"], causal=conv["causal"], bias=bias)
        return mixed_chunk_attention_vjp(*(x[k] for k in _W), do=w["o"], chunk=conv["chunk"], causal=conv["causal"],
                                         bias=bias, view=view)
    return vjp


@pytest.mark.parametrize("over, case_id", [({"causal": True}, "edge-L1"), ({}, "edge-odd"),
                                           ({"use_bias": False}, "edge-L0")])
def test_gau_vjp_against_differences(over, case_id):
    _check_case("attention.gau", _conv("attention.gau", **over), case_id, _gau_vjp("quadratic"))


@pytest.mark.parametrize("view", ["chunked", "materialized"])
@pytest.mark.parametrize("over, case_id", [({"chunk": 3, "causal": True}, "edge-chunk-1"),
                                           ({"chunk": 3, "causal": True}, "edge-chunk+1"),
                                           ({"chunk": 2, "causal": True}, "edge-short-last"),
                                           ({"chunk": 2, "use_bias": False}, "edge-chunk+1")])
def test_flash_vjp_against_differences(view, over, case_id):
    _check_case("attention.gau", _conv("attention.gau", **over), case_id, _gau_vjp(view))


# ------------------------------------------------------------------------------------------ LSH

def _lsh_vjp(view):
    def vjp(x, conv, w):
        from refimpl.attention.lsh import lsh_attention_vjp

        return lsh_attention_vjp(x["qk"], x["v"], do=w["o"], buckets=np.asarray(x["buckets"]).astype(np.int64),
                                 chunk=int(conv["chunk"]), causal=conv["causal"], wrap=conv["wrap"],
                                 scale=conv["scale"], view=view)
    return vjp


@pytest.mark.parametrize("view", ["sorted", "materialized"])
@pytest.mark.parametrize("over, case_id", [({}, "edge-odd"), ({}, "edge-L1"), ({"n_rounds": 1}, "edge-one-bucket"),
                                           ({"causal": True, "wrap": True, "n_rounds": 3}, "edge-distinct")])
def test_lsh_vjp_against_differences(view, over, case_id):
    _check_case("attention.lsh", _conv("attention.lsh", **over), case_id, _lsh_vjp(view))


def test_lsh_zero_key_has_no_normalization_gradient():
    """A zero qk vector: its normalized key is 0 by convention and x / ||x|| has no derivative there; the gradient
    through the normalization is 0, the query part remains (documented in refimpl.attention.lsh.backward)."""
    from refimpl.attention.lsh import lsh_attention_vjp

    rng = np.random.default_rng(5)
    qk, v, do = rng.standard_normal((1, 6, 1, 3)), rng.standard_normal((1, 6, 1, 2)), rng.standard_normal((1, 6, 1, 2))
    qk[0, 2] = 0.0
    bk = np.zeros((1, 6, 1, 1), dtype=np.int64)
    g = lsh_attention_vjp(qk, v, do=do, buckets=bk, chunk=3)
    assert np.all(np.isfinite(g["qk"])) and np.all(np.isfinite(g["v"]))


# ------------------------------------------------------------------------------------------ Mega

def _mega_vjp(x, conv, w):
    from oracles.verify import ops_mega
    from refimpl.attention.mega import mega_layer_vjp

    c = ops_mega._claimed(x, conv)
    return mega_layer_vjp(c["x"], **ops_mega._params(c), dy=w["y"], **ops_mega._options(conv))


@pytest.mark.parametrize("over, case_id", [({}, "edge-L1"), ({"chunk": 2, "causal": True, "attention": "relu2"},
                                                             "edge-chunk+1"),
                                           ({"attention": "laplace", "bidirectional": True}, "edge-odd"),
                                           ({"use_rel_bias": False}, "edge-L0")])
def test_mega_vjp_against_differences(over, case_id):
    _check_case("attention.mega", _conv("attention.mega", **over), case_id, _mega_vjp)


# ------------------------------------------------------------------------------------------ mpmath

def test_aft_vjp_against_mpmath_differences():
    """A tiny AFT-local causal case (b 1, l 3, d 2): mpmath central differences at 40 digits of the mpmath forward
    :func:`oracles.efficient_grad_forward.aft_mp` -- exact to float64 -- against our float64 VJP within the derived
    rounding bound alone (no difference error to add)."""
    from oracles.efficient_grad_forward import aft_mp
    from refimpl.attention.aft import aft_attention_vjp

    rng = np.random.default_rng(11)
    x = {"q": rng.standard_normal((1, 3, 2)), "k": rng.standard_normal((1, 3, 2)), "v": rng.standard_normal((1, 3, 2)),
         "w": rng.uniform(-2, 2, (3, 3))}
    kw = dict(variant="local", causal=True, window=(1, 0))
    dy = rng.standard_normal((1, 3, 2))
    exact = mp_vjp(lambda d: {"y": aft_mp(d["q"], d["k"], d["v"], d["w"], **kw)}, x, {"y": dy}, list(x), dps=40)
    ours = aft_attention_vjp(x["q"], x["k"], x["v"], x["w"], dy=dy, **kw)
    conv = _conv("attention.aft", variant="local", causal=True, window_left=1, window_right=0)
    bounds = get_grad("attention.aft").bounds(x, exact, conv, np.dtype(np.float64), None, cotangents={"y": dy})
    for n in x:
        cmp = compare(ours[n], exact[n], bounds[n])
        assert cmp.passed, f"grad {n}: {cmp.message}"


# ------------------------------------------------------------------------------------------ the harness

def _reference_grad_fn(op, conv):
    spec, g = get_op(op), get_grad(op)
    names = [a.name for a in spec.inputs]
    outs = [a.name for a in spec.outputs]

    def grad_fn(*args):
        return g.reference_vjp(dict(zip(names, args[:len(names)])), conv, dict(zip(outs, args[len(names):])))
    return grad_fn


def _reference_forward(op, conv):
    spec = get_op(op)
    names = [a.name for a in spec.inputs]

    def fwd(*args):
        return spec.reference(dict(zip(names, args)), conv)[spec.outputs[0].name]
    return fwd


@pytest.mark.parametrize("op, over, dtypes", [("attention.linformer", {}, ("float64", "float32")),
                                              ("attention.aft", {"variant": "local"}, ("float64",)),
                                              ("attention.gau", {"chunk": 2, "causal": True}, ("float32",)),
                                              ("attention.lsh", {}, ("float64",))])
def test_verify_grad_passes_our_reference(op, over, dtypes):
    from oracles.verify import verify

    conv = _conv(op, **over)
    rep = verify(op, _reference_forward(op, conv), conventions=over, grad_fn=_reference_grad_fn(op, conv),
                 forward=False, kinds=("golden", "edge"), dtype=dtypes)
    assert rep.passed, rep.grad_line()


@pytest.mark.parametrize("op", OPS)
def test_every_backward_mutant_is_killed(op):
    from oracles.mutants import all_mutants, run_mutants

    mutants = [m for m in all_mutants(op) if m.kind == "backward" and m.fn.__module__ == "oracles.mutants.grad_efficient"]
    assert len(mutants) >= 2
    results = run_mutants(op, names=[m.name for m in mutants], kinds=("backward",))
    survivors = [(r.mutant.name, r.verdict, r.error) for r in results if not r.killed]
    assert not survivors, survivors


# ---- torch autograd candidates: small literal torch forwards in the canonical signatures

def _torch_linformer(q, k, v, E, F):
    import torch

    Kb = torch.einsum("htj,bjhn->bthn", E, k)
    Vb = torch.einsum("htj,bjhp->bthp", F, v)
    S = torch.einsum("bihn,bthn->bhit", q, Kb) / (q.shape[3] ** 0.5)
    return torch.einsum("bhit,bthp->bihp", torch.softmax(S, dim=-1), Vb)


def _torch_aft_full(q, k, v, w):
    import torch

    S = k[:, None, :, :] + w[None, :, :, None]
    return torch.sigmoid(q) * torch.einsum("btsc,bsc->btc", torch.softmax(S, dim=2), v)


def _torch_gau(x, W_u, W_v, W_z, gamma, beta, W_o, bias=None):
    import torch

    silu = torch.nn.functional.silu
    U, V, Z = silu(x @ W_u), silu(x @ W_v), silu(x @ W_z)
    Q, K = gamma[0] * Z + beta[0], gamma[1] * Z + beta[1]
    l = x.shape[1]
    S = torch.einsum("bin,bjn->bij", Q, K) / l
    if bias is not None:
        idx = torch.arange(l)[None, :] - torch.arange(l)[:, None] + l - 1
        S = S + bias[idx]
    return (U * torch.einsum("bij,bjp->bip", torch.relu(S) ** 2, V)) @ W_o


def _torch_lsh(qk, v, buckets):
    import torch
    from oracles.efficient_grad_forward import lsh_keep

    keep = torch.as_tensor(lsh_keep(np.asarray(buckets), 2))  # fixed buckets: a constant mask
    norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True)
    k = qk / torch.where(norm > 0, norm, torch.ones_like(norm))  # a zero key stays 0 (the op's convention)
    S = torch.einsum("bihn,bjhn->bhij", qk, k) / (qk.shape[3] ** 0.5)
    P = torch.softmax(S.masked_fill(~keep, float("-inf")), dim=-1)
    return torch.einsum("bhij,bjhp->bihp", P, v)


@pytest.mark.parametrize("op, fn", [("attention.linformer", _torch_linformer), ("attention.aft", _torch_aft_full),
                                    ("attention.gau", _torch_gau), ("attention.lsh", _torch_lsh)])
def test_verify_grad_torch_autograd_candidate(op, fn):
    pytest.importorskip("torch")
    from oracles.verify import verify

    rep = verify(op, fn, framework="torch", grad=True, kinds=("golden",), probes=False)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])
