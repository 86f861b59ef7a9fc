"""The gradient harness (``verify(..., grad=True)``) on performer-pytorch, through torch autograd.

* ``linear_attention`` (non-causal, normalized) and ``causal_linear_attention_noncuda`` (causal, the ``key_sum``
  epsilon, ``torch.chunk`` pieces) conform: their autograd gradients of ``phi_q``, ``phi_k``, ``v`` match the
  Richardson differences of our float64 forward within the derived bound.
* ``softmax_kernel`` (the FAVOR+ features) subtracts its max under ``.detach()`` (stop-gradient): its forward
  conforms under the named stabilizer convention, but its gradient of ``x`` (and ``W``) is not the derivative of the
  features it returns -- it misses ``-(sum_i dphi_i phi_i) dc/dx`` -- and the gradient verdict says which inputs are
  wrong.  (In normalized attention a per-query offset cancels exactly, so FAVOR+'s gradient of the *attention
  output* is still right for queries; that is a property of the composition, not of the feature map.)
* Under the named gradient convention ``offset_grad="stop"`` (the offset held constant at the point: the oracle
  forward keeps the max of the unperturbed inputs) the same ``softmax_kernel`` gradient **conforms**.  The
  gradient diagnosis does not re-run alternative conventions itself: the test declares the convention.

Each test skips when torch or performer-pytorch is absent (``.ci/optional-requirements.txt`` installs them in CI).
"""
import pytest

from oracles.verify import verify

FEW = dict(max_examples=2, seed=5, probes=False)


def _pp():
    pytest.importorskip("torch")
    return pytest.importorskip("performer_pytorch.performer_pytorch")


def test_performer_linear_attention_gradient_conforms():
    pp = _pp()
    rep = verify("attention.linear", pp.linear_attention, adapter="performer_pytorch.linear_attention",
                 framework="torch", grad=True, dtype="float64", **FEW)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


def test_performer_causal_linear_attention_noncuda_gradient_conforms():
    pp = _pp()
    rep = verify("attention.linear", pp.causal_linear_attention_noncuda,
                 adapter="performer_pytorch.causal_linear_attention_noncuda", conventions={"eps": 1e-6},
                 framework="torch", grad=True, dtype="float64", **FEW)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


@pytest.mark.parametrize("adapter, stabilizer", [("performer_pytorch.softmax_kernel.query", "row_max_wx"),
                                                 ("performer_pytorch.softmax_kernel", "head_max_wx")])
def test_performer_softmax_kernel_gradient_misses_the_detached_max(adapter, stabilizer):
    pp = _pp()
    rep = verify("features.performer", pp.softmax_kernel, adapter=adapter,
                 conventions={"stabilizer": stabilizer, "offset_grad": "through"},
                 framework="torch", grad=True, dtype="float64", **FEW)
    assert not rep.passed
    devs = " ".join(rep.deviations())
    assert "grad x" in devs, devs
    # the forward values conform under the named convention: only the gradient is wrong
    fwd = verify("features.performer", pp.softmax_kernel, adapter=adapter, conventions={"stabilizer": stabilizer},
                 framework="torch", dtype="float64", **FEW)
    assert fwd.passed, fwd.to_text()


@pytest.mark.parametrize("adapter, stabilizer", [("performer_pytorch.softmax_kernel.query", "row_max_wx"),
                                                 ("performer_pytorch.softmax_kernel", "head_max_wx")])
def test_performer_softmax_kernel_gradient_conforms_under_offset_grad_stop(adapter, stabilizer):
    """``offset_grad="stop"``: the oracle forward holds the max constant at the point of linearization, and
    performer-pytorch's detached max conforms (grad x and grad W)."""
    pp = _pp()
    rep = verify("features.performer", pp.softmax_kernel, adapter=adapter,
                 conventions={"stabilizer": stabilizer, "offset_grad": "stop"},
                 framework="torch", grad=True, dtype="float64", **FEW)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])
    assert "grad x: conforms" in rep.grad_line() and "grad W: conforms" in rep.grad_line(), rep.grad_line()


def test_offset_grad_stop_reference_vjp_matches_the_stop_forward_differences():
    """refimpl's VJP under ``offset_grad="stop"`` (the unstabilized VJP of ``dphi exp(-c)``) against Richardson
    differences of the stop forward, and the two conventions differ by the offset's adjoint (not vacuous)."""
    import numpy as np

    from oracles.gradients import fd_vjp
    from oracles.tolerance import Bound, assert_within
    from oracles.verify.grad_linear import performer_grad_forward, performer_reference_vjp
    from oracles.verify.registry import get_grad

    gs = get_grad("features.performer")
    rng = np.random.default_rng(29)
    inp = {"x": rng.standard_normal((1, 3, 2, 3)), "W": rng.standard_normal((4, 3))}
    for st in ("row_max_wx", "head_max_wx", "row_max"):
        conv = dict(kind="positive", data_scale="d^-1/4", eps=1e-4, stabilizer=st)
        w = {"phi": rng.standard_normal(performer_grad_forward(inp, conv)["phi"].shape)}
        grads = {}
        for og in ("stop", "through"):
            cv = dict(conv, offset_grad=og)
            fd = fd_vjp(lambda a: performer_grad_forward(a, cv), inp, w, ("x", "W"))
            g = performer_reference_vjp(inp, cv, w)
            bnd = gs.bounds(inp, fd.grad, cv, np.float64, fd.magnitude, cotangents=w)
            for k in ("x", "W"):
                assert_within(g[k], fd.grad[k], Bound(np.asarray(bnd[k].values) + fd.error[k],
                                                      bnd[k].source + " + the differences' error"))
            grads[og] = g
        assert np.max(np.abs(grads["stop"]["x"] - grads["through"]["x"])) > 1e-3


def test_performer_softmax_kernel_gradient_is_the_stop_gradient_one():
    """The deviation is exactly the detached max: torch's gradient of the query features equals our VJP of the
    unstabilized positive features with the offset ``c = max_i (W x)_i`` held constant (``offset_grad="stop"``'s
    meaning), through the ``d^{-1/4}`` data scaling; ``eps`` is added after the exponential (no gradient)."""
    torch = pytest.importorskip("torch")
    pp = _pp()
    import numpy as np

    from oracles.linear_grad_forward import feature_vjp_bound
    from oracles.tolerance import assert_within
    from refimpl.attention.features import feature_map_vjp

    rng = np.random.default_rng(17)
    b, h, l, d, m = 1, 2, 4, 3, 5
    x, W = 0.5 * rng.standard_normal((b, h, l, d)), rng.standard_normal((m, d))
    dphi = rng.standard_normal((b, h, l, m))
    xt, Wt = torch.tensor(x, requires_grad=True), torch.tensor(W, requires_grad=True)
    phi = pp.softmax_kernel(xt, projection_matrix=Wt, is_query=True)
    gx, gW = torch.autograd.grad((phi * torch.tensor(dphi)).sum(), (xt, Wt))
    r = d ** -0.25
    xs = x * r
    c = np.max(xs @ W.T, axis=-1, keepdims=True)
    ours = feature_map_vjp(xs, "positive", W=W, dphi=dphi * np.exp(-c))
    bnd = feature_vjp_bound(xs, "positive", dphi * np.exp(-c), np.float64, W=W)
    # torch's own float64 backward and ours: both within the bound of a backward pass (twice: two of them)
    assert_within(gx.numpy(), ours["x"] * r, bnd["x"].scaled(2.0 * r, "two backward passes; x scaled by d^-1/4"))
    assert_within(gW.numpy(), ours["W"], bnd["W"].scaled(2.0, "two backward passes"))
