"""SSD's backward pass (``refimpl.ssm.ssd.ssd_scan_vjp``) against independent ground truth.

* every view (recurrent, quadratic, chunked at several chunk sizes) against central differences with Richardson
  extrapolation of the banded-solve oracle ``oracles.selective.ssd_solve`` (``oracles.gradients.fd_vjp``), elementwise
  within ``Bound(fd error) + componentwise_bound(|terms| majorant, depth, float64)``
  (``oracles.ssd_grad_forward.ssd_grad_bounds``), on L = 0, 1, odd, chunk - 1, chunk, chunk + 1, every option on
  and off;
* one tiny case against mpmath differences of an mpmath forward (``mp_vjp`` of ``ssd_forward_mp``): only the
  float64 rounding bound;
* the conventions the docstring states: zero gradient where the clamp is active (both ends inclusive), softplus'
  derivative 1 above the threshold, no gradient across a ``seq_idx`` boundary, float32 stays float32, D (h,) sums
  the (h, p) gradient.
"""
import math

import numpy as np
import pytest

from oracles.gradients import fd_vjp, mp_vjp
from oracles.selective import ssd_solve
from oracles.ssd_grad_forward import ssd_forward_mp, ssd_grad_bounds
from oracles.tolerance import Bound, compare
from refimpl.ssm.ssd import ssd_scan, ssd_scan_vjp

NAMES = {"initial_states": "initial_state"}  # canonical (op) name -> refimpl's argument name


def _case(seed, *, b=1, L=5, h=2, p=2, n=2, g=1, D="h", z=True, bias=True, init=True, seq=None, softplus=True,
          limit=(0.0, math.inf), final=True):
    rng = np.random.default_rng(seed)
    inp = {"x": rng.standard_normal((b, L, h, p)),
           "dt": rng.normal(-1.0, 1.0, (b, L, h)) if softplus else rng.uniform(0.05, 0.6, (b, L, h)),
           "A": -np.exp(rng.uniform(-1.0, 1.0, h)), "B": rng.standard_normal((b, L, g, n)),
           "C": rng.standard_normal((b, L, g, n)),
           "D": None if D is None else rng.standard_normal(h if D == "h" else (h, p)),
           "z": rng.standard_normal((b, L, h, p)) if z else None,
           "dt_bias": rng.uniform(-0.3, 0.3, h) if bias else None,
           "initial_states": rng.standard_normal((b, h, p, n)) if init else None,
           "seq_idx": None if seq is None else np.tile(np.asarray(seq, dtype=np.int32), (b, 1))}
    conv = {"dt_softplus": softplus, "dt_limit": limit}
    cot = {"y": rng.standard_normal((b, L, h, p))}
    if final:
        cot["final_states"] = rng.standard_normal((b, h, p, n))
    return inp, conv, cot


def _forward(conv):
    def f(d):
        y, S = ssd_solve(d["x"], d["dt"], d["A"], d["B"], d["C"], d["D"], d["z"], dt_bias=d["dt_bias"],
                         dt_softplus=conv["dt_softplus"], dt_limit=conv["dt_limit"],
                         initial_state=d["initial_states"], seq_idx=d["seq_idx"])
        return {"y": y, "final_states": S}
    return f


def _ours(inp, conv, cot, view, chunk=64, dtype=None):
    cast = (lambda a: a) if dtype is None else (lambda a: None if a is None else np.asarray(a, dtype=dtype))
    c = {k: (v if k == "seq_idx" else cast(v)) for k, v in inp.items()}
    r = ssd_scan_vjp(c["x"], c["dt"], c["A"], c["B"], c["C"], c["D"], c["z"], dy=cast(cot["y"]),
                     d_final_state=cast(cot.get("final_states")), dt_bias=c["dt_bias"],
                     dt_softplus=conv["dt_softplus"], dt_limit=conv["dt_limit"], initial_state=c["initial_states"],
                     seq_idx=c["seq_idx"], chunk=chunk, view=view)
    return {k: r[NAMES.get(k, k)] for k in _wrt(inp)}


def _wrt(inp):
    return [k for k, v in inp.items() if v is not None and k != "seq_idx"]


CASES = {
    "L0": dict(L=0),
    "L1": dict(L=1, D="hp"),
    "L5-odd-packed-clamp": dict(L=5, seq=[0, 0, 1, 1, 1], limit=(0.2, 0.6)),
    "L3-chunk-1": dict(L=3, h=4, g=2, D="hp"),
    "L4-chunk": dict(L=4, seq=[0, 0, 0, 0]),
    "L5-chunk+1-no-options": dict(L=5, D=None, z=False, bias=False, init=False, softplus=False, final=False),
    "L9-packed-on-boundary": dict(L=9, h=1, p=1, seq=[0, 0, 0, 0, 1, 1, 2, 2, 2], limit=(0.0, 0.5)),
}
VIEWS = [("recurrent", 64), ("quadratic", 64), ("chunked", 4), ("chunked", 2), ("chunked", 64)]
_FD = {}


def _fd(name):
    if name not in _FD:
        inp, conv, cot = _case(sum(map(ord, name)), **CASES[name])
        _FD[name] = (inp, conv, cot, fd_vjp(_forward(conv), inp, cot, _wrt(inp)))
    return _FD[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_view_matches_finite_differences(name):
    inp, conv, cot, r = _fd(name)
    bounds = ssd_grad_bounds(inp, cot, conv, np.float64)
    for view, chunk in VIEWS:
        ours = _ours(inp, conv, cot, view, chunk)
        for k in _wrt(inp):
            assert ours[k].shape == np.shape(inp[k]) and ours[k].dtype == np.float64
            fd_err = Bound(r.error[k], "fd_vjp: Richardson truncation estimate + rounding of the differences")
            bound = fd_err + bounds[k]
            cmp = compare(ours[k], r.grad[k], bound)
            assert cmp.passed, f"{name} {view}/{chunk} d{k}: {cmp.message}"


def test_mpmath_differences_tiny_case():
    """The float64 backward against 30-digit differences: within the float64 rounding bound alone."""
    inp, conv, cot = _case(7, L=3, h=1, p=1, n=2, D="h", seq=[0, 0, 1], limit=(0.1, 0.9))
    exact = mp_vjp(lambda d: ssd_forward_mp(d, conv), inp, cot, _wrt(inp), dps=30)
    bounds = ssd_grad_bounds(inp, cot, conv, np.float64, oracle_dtype=None)
    for view, chunk in VIEWS[:3]:
        ours = _ours(inp, conv, cot, view, chunk)
        for k in _wrt(inp):
            cmp = compare(ours[k], exact[k], bounds[k])
            assert cmp.passed, f"{view} d{k}: {cmp.message}"


def test_float32_matches_within_the_float32_bound():
    """All inputs float32: every gradient float32, within componentwise_bound(majorant, depth, float32) of FD."""
    inp, conv, cot, r = _fd("L5-odd-packed-clamp")
    bounds = ssd_grad_bounds(inp, cot, conv, np.float32)
    up = {k: (v if v is None or k == "seq_idx" else np.asarray(v, np.float32).astype(np.float64))
          for k, v in inp.items()}
    cot_up = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in cot.items()}
    r32 = fd_vjp(_forward(conv), up, cot_up, _wrt(up))  # the oracle at the float32-rounded point
    for view, chunk in VIEWS[:3]:
        ours = _ours(inp, conv, cot, view, chunk, dtype=np.float32)
        for k in _wrt(inp):
            assert ours[k].dtype == np.float32
            cmp = compare(ours[k], r32.grad[k], Bound(r32.error[k], "fd_vjp error") + bounds[k])
            assert cmp.passed, f"{view} d{k}: {cmp.message}"
    del r


def test_mixed_dtypes_never_downcast():
    inp, conv, cot = _case(3, L=3, softplus=False)
    r = ssd_scan_vjp(np.float32(inp["x"]), inp["dt"], inp["A"], inp["B"], inp["C"], dy=np.float32(cot["y"]))
    assert all(v.dtype == np.float64 for v in r.values())
    assert sorted(r) == ["A", "B", "C", "dt", "x"]


def test_clamp_zeroes_the_gradient_where_active_both_ends_inclusive():
    inp, conv, cot = _case(11, L=4, h=1, softplus=False, bias=False, init=False, z=False, D=None)
    lo, hi = 0.2, 0.4
    inp["dt"][0, :, 0] = [0.1, lo, hi, 0.5]  # below, on lo, on hi, above
    for view in ("recurrent", "quadratic", "chunked"):
        r = ssd_scan_vjp(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], dy=cot["y"], dt_limit=(lo, hi),
                         d_final_state=cot["final_states"], view=view, chunk=2)
        free = ssd_scan_vjp(inp["x"], np.clip(inp["dt"], lo, hi), inp["A"], inp["B"], inp["C"], dy=cot["y"],
                            d_final_state=cot["final_states"], view=view, chunk=2)
        assert r["dt"][0, 0, 0] == 0 and r["dt"][0, 3, 0] == 0
        # on the ends the clamp is the identity: the gradient passes (torch.clamp's convention)
        np.testing.assert_array_equal(r["dt"][0, 1:3, 0], free["dt"][0, 1:3, 0])
        assert np.all(r["dt"][0, 1:3, 0] != 0)


def test_softplus_derivative_is_one_above_the_threshold():
    inp, conv, cot = _case(12, L=3, h=1, bias=False, init=False, z=False, D=None)
    inp["dt"][0, 1, 0] = 25.0  # softplus(25) = 25 (threshold 20)
    a = ssd_scan_vjp(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], dy=cot["y"], dt_softplus=True,
                     allow_unstable=False, view="recurrent")
    eff = inp["dt"].copy()
    eff[0, [0, 2], 0] = np.log1p(np.exp(eff[0, [0, 2], 0]))
    b = ssd_scan_vjp(inp["x"], eff, inp["A"], inp["B"], inp["C"], dy=cot["y"], view="recurrent")
    assert a["dt"][0, 1, 0] == b["dt"][0, 1, 0]


def test_no_gradient_crosses_a_seq_idx_boundary():
    """A cotangent only on the second sequence gives zero gradients to the first sequence's inputs and to the
    initial state (which belongs to the first sequence)."""
    inp, conv, cot = _case(13, L=8, seq=[0, 0, 0, 1, 1, 1, 1, 1])
    cot["y"][:, :3] = 0.0
    for view, chunk in VIEWS:
        r = _ours(inp, conv, cot, view, chunk)
        for k in ("x", "dt", "B", "C", "z"):
            assert np.all(r[k][:, :3] == 0), (view, chunk, k)
        assert np.all(r["initial_states"] == 0), (view, chunk)
        assert np.any(r["x"][:, 3:] != 0)


def test_D_per_head_is_the_sum_of_the_per_channel_gradient():
    inp, conv, cot = _case(14, L=5, D="h")
    Dhp = dict(inp, D=np.broadcast_to(inp["D"][:, None], (2, 2)).copy())
    a, b = _ours(inp, conv, cot, "chunked", 2), _ours(Dhp, conv, cot, "chunked", 2)
    np.testing.assert_allclose(a["D"], b["D"].sum(axis=-1), rtol=1e-13, atol=1e-15)


def test_L0_gradient_of_the_initial_state_is_the_final_cotangent():
    inp, conv, cot = _case(15, L=0)
    for view, chunk in VIEWS:
        r = _ours(inp, conv, cot, view, chunk)
        np.testing.assert_array_equal(r["initial_states"], cot["final_states"])
        assert all(r[k].size == 0 for k in ("x", "dt", "B", "C", "z")) and np.all(r["A"] == 0)


def test_forward_and_backward_agree_on_the_loss_derivative_direction():
    """<J v, w> computed by a forward difference of ssd_scan (refimpl's forward) equals <v, J^T w> (a smoke check of
    the registration; the oracle checks are above and in property_tests/test_grad_ssd_props.py)."""
    inp, conv, cot = _case(16, L=6, D=None, z=False, bias=False, init=False, softplus=False, final=False)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(inp["x"].shape)
    h = 1e-6
    yp = ssd_scan(inp["x"] + h * v, inp["dt"], inp["A"], inp["B"], inp["C"])
    ym = ssd_scan(inp["x"] - h * v, inp["dt"], inp["A"], inp["B"], inp["C"])
    jvp = np.sum((yp - ym) / (2 * h) * cot["y"])
    g = ssd_scan_vjp(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], dy=cot["y"])["x"]
    # the forward is linear in x: the central difference is exact up to rounding (~ eps / h relative)
    assert abs(jvp - np.sum(v * g)) <= 1e-8 * (1 + abs(jvp))


@pytest.mark.parametrize("bad, msg", [
    (dict(dy=np.zeros((1, 5, 2))), "dy: expected"),
    (dict(dy=np.zeros((1, 4, 2, 2))), "dy"),
    (dict(d_final_state=np.zeros((1, 2, 2))), "d_final_state"),
    (dict(view="tiled"), "view"),
])
def test_bad_cotangents_and_views_are_refused_by_name(bad, msg):
    inp, conv, cot = _case(17, L=5, D=None, z=False, bias=False, init=False, softplus=False)
    kw = dict(dy=cot["y"])
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=msg):
        ssd_scan_vjp(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], **kw)


# -- refimpl verify --grad on a torch autograd candidate (a small literal torch loop) and a planted backward bug --

def _torch_ssd(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None, *, limit=None,
               truncate_every=None):
    """SSD as a plain torch loop (autograd differentiates it): softplus(dt + dt_bias) with threshold 20, an optional
    clamp, ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T`` reset where ``seq_idx`` changes,
    ``(S_t C_t + D x_t) silu(z_t)``.
    ``truncate_every``: the planted bug -- the state is detached every that many steps (truncated backprop: the
    forward is unchanged, no gradient crosses those boundaries)."""
    import torch

    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = torch.arange(h) * g // h
    u = dt if dt_bias is None else dt + dt_bias
    s = torch.nn.functional.softplus(u, beta=1.0, threshold=20.0)
    if limit is not None:
        s = torch.clamp(s, limit[0], limit[1])
    S = x.new_zeros((b, h, p, n)) if initial_states is None else initial_states
    ys = []
    for t in range(l):
        if seq_idx is not None and t > 0:
            S = torch.where((seq_idx[:, t] != seq_idx[:, t - 1])[:, None, None, None], torch.zeros_like(S), S)
        if truncate_every is not None and t > 0 and t % truncate_every == 0:
            S = S.detach()
        a = torch.exp(s[:, t] * A)
        S = a[..., None, None] * S + (s[:, t, :, None] * x[:, t])[..., None] * B[:, t][:, hg][:, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", S, C[:, t][:, hg])
        if D is not None:
            y = y + (D[:, None] if D.dim() == 1 else D) * x[:, t]
        if z is not None:
            y = y * torch.nn.functional.silu(z[:, t])
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros((b, 0, h, p))
    return y, S


def _torch_good(*a):
    return _torch_ssd(*a, limit=(0.1, 0.6))


def _torch_truncated(*a):
    return _torch_ssd(*a, limit=(0.1, 0.6), truncate_every=4)


TORCH_CONV = {"dt_softplus": True, "dt_limit": (0.1, 0.6), "chunk": 4}
TORCH_CASES = ("golden-small", "edge-chunk+1", "edge-dt-limit")


def _torch_cases():
    """A subset of the op's gradient cases (time budget; ``refimpl verify --grad`` runs them all)."""
    from oracles.verify.registry import get_grad, get_op

    conv = get_op("ssm.ssd").resolve_conventions(TORCH_CONV)
    return [c for c in get_grad("ssm.ssd").cases(conv) if c.case_id in TORCH_CASES]


def test_verify_grad_torch_autograd_candidate_conforms():
    pytest.importorskip("torch")
    from oracles.verify import verify

    rep = verify("ssm.ssd", _torch_good, conventions=TORCH_CONV, framework="torch", grad=True, forward=False,
                 cases=_torch_cases(), probes=False)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


def test_verify_grad_catches_the_planted_backward_bug():
    """Detaching the state every 4 steps leaves the forward exact and the gradient wrong before each boundary."""
    pytest.importorskip("torch")
    from oracles.verify import verify

    import torch

    case = _torch_cases()[0]
    args = [None if case.inputs[k] is None else torch.as_tensor(case.inputs[k]) for k in
            ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states", "seq_idx")]
    for a, b in zip(_torch_good(*args), _torch_truncated(*args)):
        assert torch.equal(a, b)  # the planted bug leaves the forward bit for bit
    rep = verify("ssm.ssd", _torch_truncated, conventions=TORCH_CONV, framework="torch", grad=True, forward=False,
                 cases=_torch_cases(), probes=False)
    assert not rep.grad_passed
    assert "chunk boundary" in " ".join(rep.deviations()), rep.deviations()[:3]
