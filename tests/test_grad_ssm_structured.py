"""The structured SSMs' backward passes (``s5_ssm_vjp``, ``mega_ema_vjp``) against the ground truth: Richardson
central differences of the float64 plain loops (:mod:`oracles.ssm_structured_grad_forward`) elementwise within the
differences' error plus the derived rounding bound of the backward (:mod:`oracles.verify.grad_ssm_structured`);
the backward mutants caught and their clean form passing; dtypes; the GradSpec through ``verify(grad_fn=)``."""
from __future__ import annotations

import numpy as np
import pytest

from oracles.gradients import fd_vjp
from oracles.ssm_structured_grad_forward import ema_forward, s5_forward
from oracles.tolerance import Bound, assert_within
from oracles.verify.grad_ssm_structured import ema_grad_bounds, ema_reference_vjp, s5_grad_bounds, s5_reference_vjp
from refimpl.ssm.ema import mega_ema_vjp
from refimpl.ssm.s5 import s5_ssm_vjp

S5_CONV = dict(method="zoh", real_output="2re", bidirectional=False, use_h0=True, zoh_B="expm1")


def _s5_inputs(rng, *, L, b=1, h=2, n=2, h0=True, D=True, C_back=False):
    c = lambda *s: rng.standard_normal(s) + 1j * rng.standard_normal(s)  # noqa: E731
    return {"Lambda": -rng.uniform(0.1, 1.0, n) + 1j * rng.uniform(-3, 3, n), "B_tilde": c(n, h) / 2,
            "C_tilde": c(h, n) / 2, "D": rng.standard_normal(h) if D else None,
            "dt": np.exp(rng.uniform(np.log(1e-2), np.log(0.5), n)), "u": rng.standard_normal((b, L, h)),
            "C_back": c(h, n) / 2 if C_back else None, "h0": c(b, n) if h0 else None}


def _check(grads, fd, bounds, names, dtype=np.float64):
    for nm in names:
        b = Bound(np.asarray(bounds[nm].values) + fd.error[nm], bounds[nm].source + " + the differences' error")
        assert_within(grads[nm], fd.grad[nm], b, dtype=dtype, context=f"gradient of {nm}")


def _cot(rng, out):
    return {k: rng.standard_normal(v.shape) + (1j * rng.standard_normal(v.shape) if np.iscomplexobj(v) else 0)
            for k, v in out.items()}


S5_ROWS = [("zoh", "2re", False, 0), ("zoh", "re", False, 1), ("bilinear", "2re", False, 5), ("zoh", "2re", True, 4),
           ("bilinear", "re", True, 1)]


@pytest.mark.parametrize("method,output,bid,L", S5_ROWS)
def test_s5_vjp_matches_differences(method, output, bid, L):
    rng = np.random.default_rng([9, L, bid, method == "zoh"])
    inp = _s5_inputs(rng, L=L, h0=not bid, C_back=bid)
    conv = dict(S5_CONV, method=method, real_output=output, bidirectional=bid, use_h0=not bid)
    w = _cot(rng, s5_forward(inp, conv))
    names = [k for k in ("Lambda", "B_tilde", "C_tilde", "D", "dt", "u", "C_back", "h0") if inp[k] is not None]
    fd = fd_vjp(lambda a: s5_forward(a, conv), inp, w, names)
    g = s5_reference_vjp(inp, conv, w)
    assert set(g) == set(names)
    for k in names:
        assert g[k].shape == np.shape(inp[k]) and np.iscomplexobj(g[k]) == np.iscomplexobj(inp[k]), k
    _check(g, fd, s5_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), names)


def test_s5_vjp_scalar_dt_no_D_no_state():
    """A scalar dt gets the sum over the states; no D, no initial state, no final-state cotangent."""
    rng = np.random.default_rng(91)
    inp = _s5_inputs(rng, L=6, h0=False, D=False)
    inp["dt"] = np.asarray(0.1)
    conv = dict(S5_CONV, use_h0=False)
    w = {"y": rng.standard_normal((1, 6, 2))}
    fd = fd_vjp(lambda a: {"y": s5_forward(a, conv)["y"]}, inp, w, ("Lambda", "B_tilde", "C_tilde", "dt", "u"))
    g = s5_ssm_vjp(inp["Lambda"], inp["B_tilde"], inp["C_tilde"], None, inp["dt"], inp["u"], dy=w["y"],
                   output="2re")
    assert set(g) == {"Lambda", "B_tilde", "C_tilde", "dt", "u"} and g["dt"].shape == ()
    sb = dict(inp, dt=np.full(2, 0.1))
    bounds = s5_grad_bounds(sb, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
    bounds["dt"] = Bound(np.sum(bounds["dt"].values), bounds["dt"].source + ", summed over the states")
    _check(g, fd, bounds, list(g))


def test_s5_vjp_float32_stays_float32():
    rng = np.random.default_rng(92)
    inp = _s5_inputs(rng, L=5)
    c32 = {k: (None if v is None else np.asarray(v).astype(np.complex64 if np.iscomplexobj(v) else np.float32))
           for k, v in inp.items()}
    g = s5_ssm_vjp(c32["Lambda"], c32["B_tilde"], c32["C_tilde"], c32["D"], c32["dt"], c32["u"],
                   dy=np.ones((1, 5, 2), np.float32), d_final_state=np.ones((1, 2), np.complex64), output="2re",
                   initial_state=c32["h0"])
    assert all(v.dtype in (np.float32, np.complex64) for v in g.values()), {k: v.dtype for k, v in g.items()}


EMA_CONV = dict(use_h0=True, algorithm="direct")


@pytest.mark.parametrize("L,h0", [(0, True), (1, True), (7, True), (4, False)])
def test_ema_vjp_matches_differences(L, h0):
    from oracles.verify import ops_ema

    rng = np.random.default_rng([93, L])
    conv = dict(EMA_CONV, use_h0=h0)
    inp = ops_ema.sample(rng, conv, L=L, b=2, d=2, n=2, h0=h0)
    w = _cot(rng, ema_forward(inp, conv))
    names = [k for k in ("x", "alpha", "delta", "beta", "eta", "h0") if inp.get(k) is not None]
    fd = fd_vjp(lambda a: ema_forward(a, conv), inp, w, names)
    g = ema_reference_vjp(inp, conv, w)
    assert set(g) == set(names)
    _check(g, fd, ema_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), names)


def test_ema_vjp_float32_stays_float32_and_views_share_it():
    rng = np.random.default_rng(94)
    p = [rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32) for _ in range(2)] + \
        [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2)]
    x = rng.standard_normal((1, 4, 2)).astype(np.float32)
    g = mega_ema_vjp(x, *p, dy=np.ones((1, 4, 2), np.float32))
    assert all(v.dtype == np.float32 for v in g.values())
    g64 = mega_ema_vjp(x.astype(np.float64), *p, dy=np.ones((1, 4, 2)))
    assert all(v.dtype == np.float64 for v in g64.values())


def _passes(g, fd, bds, names):
    return all(np.all(np.abs(np.asarray(g[k]) - fd.grad[k]) <= np.asarray(bds[k].values) + fd.error[k])
               for k in names)


def test_backward_mutants_are_caught_and_their_clean_form_passes():
    import oracles.mutants.grad_ssm_structured as M

    rng = np.random.default_rng(95)
    inp = _s5_inputs(rng, L=5)
    w = _cot(rng, s5_forward(inp, S5_CONV))
    names = ("Lambda", "B_tilde", "C_tilde", "D", "dt", "u", "h0")
    fd = fd_vjp(lambda a: s5_forward(a, S5_CONV), inp, w, names)
    bds = s5_grad_bounds(inp, fd.grad, S5_CONV, np.float64, fd.magnitude, cotangents=w)
    args = [inp[k] for k in ("Lambda", "B_tilde", "C_tilde", "D", "dt", "u", "C_back", "h0")] + [w["y"], w["h_last"]]
    assert _passes(M._s5_backward(*args, method="zoh", output="2re"), fd, bds, names)
    for fn in (M.s5_late_start, M.s5_no_conj, M.s5_drop_two, M.s5_dD_shift):
        assert not _passes(fn(*args), fd, bds, names), fn.__name__

    from oracles.verify import ops_ema
    einp = ops_ema.sample(rng, EMA_CONV, L=6, b=1, d=2, n=2, h0=True)
    ew = _cot(rng, ema_forward(einp, EMA_CONV))
    en = ("x", "alpha", "delta", "beta", "eta", "h0")
    efd = fd_vjp(lambda a: ema_forward(a, EMA_CONV), einp, ew, en)
    eb = ema_grad_bounds(einp, efd.grad, EMA_CONV, np.float64, efd.magnitude, cotangents=ew)
    eargs = [einp[k] for k in en] + [ew["y"], ew["h_last"]]
    assert _passes(M._ema_backward(*eargs), efd, eb, en)
    for fn in (M.ema_late_start, M.ema_drop_delta, M.ema_dh0_no_decay):
        assert not _passes(fn(*eargs), efd, eb, en), fn.__name__


def test_cotangents_checked_like_inputs():
    rng = np.random.default_rng(96)
    inp = _s5_inputs(rng, L=5)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 5, 2\) \(b l d\)"):
        s5_ssm_vjp(inp["Lambda"], inp["B_tilde"], inp["C_tilde"], inp["D"], inp["dt"], inp["u"],
                   dy=np.ones((1, 4, 2)), output="2re")
    with pytest.raises(ValueError, match="d_final_state"):
        s5_ssm_vjp(inp["Lambda"], inp["B_tilde"], inp["C_tilde"], inp["D"], inp["dt"], inp["u"],
                   dy=np.ones((1, 5, 2)), d_final_state=np.ones((1, 3)), output="2re")
    with pytest.raises(ValueError, match="dy"):
        mega_ema_vjp(np.ones((1, 3, 2)), *[np.full((2, 2), 0.5)] * 4, dy=np.ones((1, 2, 2)))


def test_verify_grad_fn_reference_conforms():
    """``verify(op, grad_fn=our VJP in the canonical protocol, forward=False)`` passes on every gradient case."""
    from oracles.verify import verify

    def s5_fn(Lambda, B_tilde, C_tilde, D, dt, u, C_back, h0, dy, dh_last):
        return s5_reference_vjp(dict(Lambda=Lambda, B_tilde=B_tilde, C_tilde=C_tilde, D=D, dt=dt, u=u, C_back=C_back,
                                     h0=h0), S5_CONV, {"y": dy, "h_last": dh_last})

    def ema_fn(x, alpha, delta, beta, eta, h0, dy, dh_last):
        return ema_reference_vjp(dict(x=x, alpha=alpha, delta=delta, beta=beta, eta=eta, h0=h0), EMA_CONV,
                                 {"y": dy, "h_last": dh_last})

    def nothing(*a, **k):  # forward=False: the forward is never called
        raise AssertionError("not called")

    for op, fn in (("ssm.s5", s5_fn), ("ssm.ema", ema_fn)):
        rep = verify(op, nothing, grad_fn=fn, forward=False, kinds=("golden", "edge"))
        assert rep.passed, rep.grad_line()


@pytest.mark.parametrize("variant,L,scalar_dt", [("softmax", 0, False), ("softmax", 1, False), ("softmax", 7, True),
                                                 ("exp", 1, False), ("exp", 9, False), ("exp", 5, True)])
def test_dss_kernel_vjp_matches_differences(variant, L, scalar_dt):
    from oracles.ssm_structured_grad_forward import dss_forward
    from oracles.verify import ops_s4d
    from oracles.verify.grad_ssm_structured import dss_grad_bounds, dss_reference_vjp

    rng = np.random.default_rng([97, L, variant == "exp"])
    conv = {"variant": variant}
    inp = ops_s4d.dss_sample(rng, conv, L=L, h=2, n=2)
    if scalar_dt:
        inp["dt"] = np.asarray(0.2)
    w = {"K": rng.standard_normal((2, L))}
    fd = fd_vjp(lambda a: dss_forward(a, conv), inp, w, ("Lambda", "W", "dt"))
    g = dss_reference_vjp(inp, conv, w)
    assert {k: np.shape(v) for k, v in g.items()} == {k: np.shape(inp[k]) for k in ("Lambda", "W", "dt")}
    _check(g, fd, dss_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), list(g))


def test_dss_mutants_caught_and_clean_form_passes():
    import oracles.mutants.grad_ssm_structured as M
    from oracles.ssm_structured_grad_forward import dss_forward
    from oracles.verify import ops_s4d
    from oracles.verify.grad_ssm_structured import dss_grad_bounds

    rng = np.random.default_rng(98)
    for variant, muts in (("softmax", (M.dss_no_conj, M.dss_drop_mean)), ("exp", (M.dss_exp_no_conj,))):
        conv = {"variant": variant}
        inp = ops_s4d.dss_sample(rng, conv, L=8, h=1, n=3)
        w = {"K": rng.standard_normal((1, 8))}
        fd = fd_vjp(lambda a: dss_forward(a, conv), inp, w, ("Lambda", "W", "dt"))
        bds = dss_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
        args = (inp["Lambda"], inp["W"], inp["dt"], inp["L"], w["K"])
        assert _passes(M._dss_backward(*args, variant=variant), fd, bds, ("Lambda", "W", "dt"))
        for fn in muts:
            assert not _passes(fn(*args), fd, bds, ("Lambda", "W", "dt")), fn.__name__


@pytest.mark.parametrize("output,L,r", [("2re", 0, 1), ("complex", 1, 1), ("re", 6, 2), ("2re", 9, 1)])
def test_s4_kernel_vjp_matches_differences(output, L, r):
    from oracles.ssm_structured_grad_forward import s4_dense_forward
    from oracles.verify import ops_s4
    from oracles.verify.grad_ssm_structured import S4_WRT, s4_grad_bounds, s4_reference_vjp

    rng = np.random.default_rng([99, L, r])
    conv = {"method": "bilinear", "output": output}
    inp = ops_s4.sample(rng, conv, L=L, h=1, n=2, r=r)
    K = s4_dense_forward(inp, conv)["K"]
    w = {"K": rng.standard_normal(K.shape) + (1j * rng.standard_normal(K.shape) if output == "complex" else 0)}
    fd = fd_vjp(lambda a: s4_dense_forward(a, conv), inp, w, S4_WRT)
    g = s4_reference_vjp(inp, conv, w)
    assert {k: np.shape(v) for k, v in g.items()} == {k: np.shape(inp[k]) for k in S4_WRT}
    _check(g, fd, s4_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w), S4_WRT)


def test_s4_mutants_caught_and_clean_form_passes():
    import oracles.mutants.grad_ssm_structured as M
    from oracles.ssm_structured_grad_forward import s4_dense_forward
    from oracles.verify import ops_s4
    from oracles.verify.grad_ssm_structured import S4_WRT, s4_grad_bounds

    rng = np.random.default_rng(100)
    conv = {"method": "bilinear", "output": "2re"}
    inp = ops_s4.sample(rng, conv, L=6, h=1, n=3, r=1)
    w = {"K": rng.standard_normal((1, 6))}
    fd = fd_vjp(lambda a: s4_dense_forward(a, conv), inp, w, S4_WRT)
    bds = s4_grad_bounds(inp, fd.grad, conv, np.float64, fd.magnitude, cotangents=w)
    args = [inp[k] for k in ("Lambda", "P", "Q", "B", "C", "dt", "L")] + [w["K"]]
    assert _passes(M._s4_backward(*args), fd, bds, S4_WRT)
    for fn in (M.s4_late_start, M.s4_dQ_no_adjoint, M.s4_drop_two):
        assert not _passes(fn(*args), fd, bds, S4_WRT), fn.__name__


# ---------------------------------------------------------------- torch autograd candidates (literal loops)

def _torch_ema(x, alpha, delta, beta, eta, h0=None):
    import torch

    b, l, d = x.shape
    h = h0 if h0 is not None else torch.zeros((b,) + tuple(alpha.shape), dtype=x.dtype)
    ys = []
    for t in range(l):
        h = alpha * beta * x[:, t, :, None] + (1 - alpha * delta) * h
        ys.append((eta * h).sum(-1))
    return (torch.stack(ys, 1) if ys else torch.zeros((b, 0, d), dtype=x.dtype)), h


def _torch_s5(Lambda, B_tilde, C_tilde, D, dt, u, C_back=None, h0=None):
    """ZOH as the official code writes it, ``B_bar = (Lambda_bar - 1)/Lambda B~`` (``zoh_B="difference"``)."""
    import torch

    Ab = torch.exp(dt * Lambda)
    Bb = ((Ab - 1) / Lambda)[:, None] * B_tilde
    b, l, h = u.shape
    x = h0 if h0 is not None else torch.zeros((b, Lambda.shape[0]), dtype=Ab.dtype)
    ys = []
    for t in range(l):
        x = Ab * x + u[:, t].to(Ab.dtype) @ Bb.T
        y = 2 * (x @ C_tilde.T).real
        ys.append(y if D is None else y + D * u[:, t])
    return (torch.stack(ys, 1) if ys else torch.zeros((b, 0, h), dtype=u.dtype)), x


def _torch_dss(Lambda, W, dt, L):
    import torch

    P = (dt[:, None] * Lambda)[..., None] * torch.arange(int(L), dtype=torch.float64)
    if int(L) == 0:
        return torch.zeros(Lambda.shape[:1] + (0,), dtype=torch.float64)
    E = torch.exp(P - P.real.max(-1, keepdim=True).values)
    return torch.einsum("dn,dnk->dk", W / Lambda, E / E.sum(-1, keepdim=True)).real


@pytest.mark.parametrize("op,fn,conv", [("ssm.ema", _torch_ema, {}), ("ssm.s5", _torch_s5, {"zoh_B": "difference"}),
                                        ("ssm.dss_kernel", _torch_dss, {})])
def test_verify_grad_torch_autograd_candidates_conform(op, fn, conv):
    """``refimpl verify OP --framework torch --grad``: torch autograd of a literal loop conforms on every gradient case."""
    pytest.importorskip("torch")
    from oracles.verify import verify

    rep = verify(op, fn, framework="torch", grad=True, conventions=conv, kinds=("golden", "edge"))
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])
