"""The backward pass of linear attention and the feature maps against independent ground truth.

* every backward (view, backend) of :func:`refimpl.attention.linear_attention_vjp` == central differences with
  Richardson extrapolation (:func:`oracles.gradients.fd_vjp`) of the dense float64 forward
  :func:`oracles.linear_grad_forward.linear_forward`, elementwise within ``FD error + linear_vjp_bound`` (the
  derived rounding of our float64 backward), at L = 0, 1, odd, chunk - 1, chunk + 1 (chunk 4), normalized and not,
  the initial state given and not, ``eps`` added and clamped, the ``kv`` layout, non-causal (quadratic);
* the adjoint identity ``<J v, w> = <v, J^T w>`` (``fd_jvp`` vs our VJP) as a Hypothesis property;
* mpmath differences (:func:`oracles.gradients.mp_vjp`) of an mpmath forward on one tiny case each;
* every feature map's VJP == ``fd_vjp`` of :func:`oracles.linear_grad_forward.feature_forward` within
  ``feature_vjp_bound`` (every kind; the stabilizers differentiated through; ``offset_grad="stop"`` is the
  gradient of ``exp(z - c)`` with ``c`` frozen);
* dtypes: float32 in, float32 gradients out; each gradient has its input's shape.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.gradients import fd_jvp, fd_vjp, mp_vjp
from oracles.linear_grad_forward import (feature_forward, feature_vjp_bound, linear_forward, linear_forward_mp,
                                         linear_vjp_bound, positive_features_mp)
from oracles.tolerance import Bound, assert_within, gamma
from refimpl.attention.features import feature_map_vjp
from refimpl.attention.linear import VJP_IMPLEMENTATIONS, linear_attention_vjp

CHUNK = 4
CAUSAL_PAIRS = [("quadratic", "numpy"), ("recurrent", "numpy"), ("chunked", "numpy"), ("chunked", "numba")]


def _case(seed, b, l, h, n, p, state=True, normalize=True):
    rng = np.random.default_rng(seed)
    pos = lambda *s: rng.uniform(0.1, 1.5, size=s)  # noqa: E731  (positive features: den away from 0)
    inp = {"phi_q": pos(b, l, h, n), "phi_k": pos(b, l, h, n), "v": rng.standard_normal((b, l, h, p))}
    if state:
        inp["S0"] = rng.standard_normal((b, h, p, n))
        inp["u0"] = pos(b, h, n) if normalize else None
    cot = {"o": rng.standard_normal((b, l, h, p)), "S_last": rng.standard_normal((b, h, p, n)),
           "u_last": rng.standard_normal((b, h, n))}
    return inp, cot


def _oracle(inp, cot, conv):
    f = lambda x: linear_forward(x["phi_q"], x["phi_k"], x["v"], x.get("S0"), x.get("u0"), **conv)  # noqa: E731
    wrt = [k for k in ("phi_q", "phi_k", "v", "S0", "u0") if inp.get(k) is not None]
    if not conv["normalize"]:
        cot = {k: w for k, w in cot.items() if k != "u_last"}  # refimpl has no normalizer to return
    return fd_vjp(f, inp, cot, wrt), cot


def _ours(inp, cot, conv, view, backend, state_layout="vk"):
    norm = conv["normalize"]
    S0 = inp.get("S0")
    kv = state_layout == "kv"
    tr = (lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2))) if kv else (lambda a: a)
    state = None if S0 is None else ((tr(S0), inp["u0"]) if norm else tr(S0))
    dfs = (tr(cot["S_last"]), cot["u_last"]) if norm else tr(cot["S_last"])
    g = linear_attention_vjp(inp["phi_q"], inp["phi_k"], inp["v"], do=cot["o"], d_final_state=dfs,
                             causal=conv["causal"], normalize=norm, eps=conv["eps"], eps_mode=conv["eps_mode"],
                             state_layout=state_layout, initial_state=state, chunk=CHUNK, view=view, backend=backend)
    out = {"phi_q": g["phi_q"], "phi_k": g["phi_k"], "v": g["v"]}
    if S0 is not None:
        if norm:
            out["S0"], out["u0"] = tr(g["initial_state"][0]), g["initial_state"][1]
        else:
            out["S0"] = tr(g["initial_state"])
    return out


def _check(inp, cot, conv, pairs, state_layout="vk"):
    r, cot_used = _oracle(inp, cot, conv)
    bounds = linear_vjp_bound(inp["phi_q"], inp["phi_k"], inp["v"], inp.get("S0"), inp.get("u0"), cot_used["o"],
                              cot_used["S_last"], cot_used.get("u_last"), causal=conv["causal"],
                              normalize=conv["normalize"], eps=conv["eps"], eps_mode=conv["eps_mode"],
                              dtype=np.float64)
    for view, backend in pairs:
        g = _ours(inp, cot, conv, view, backend, state_layout)
        assert set(g) == set(r.grad), (view, backend, set(g), set(r.grad))
        for k in r.grad:
            assert g[k].shape == r.grad[k].shape
            assert_within(g[k], r.grad[k], bounds[k] + Bound(r.error[k], "fd_vjp error"))


def _conv(causal=True, normalize=True, eps=0.0, eps_mode="add"):
    return dict(causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode)


@pytest.mark.parametrize("l", [0, 1, CHUNK - 1, CHUNK + 1, 7])
@pytest.mark.parametrize("normalize", [True, False])
def test_causal_views_against_finite_differences(l, normalize):
    inp, cot = _case(10 + l, 2 if l < 5 else 1, l, 2, 2, 2, state=True, normalize=normalize)
    _check(inp, cot, _conv(normalize=normalize), CAUSAL_PAIRS)


def test_no_initial_state_and_kv_layout():
    inp, cot = _case(3, 1, 5, 1, 3, 2, state=False)
    _check(inp, cot, _conv(), CAUSAL_PAIRS)
    inp, cot = _case(4, 1, 5, 2, 3, 2, state=True)
    _check(inp, cot, _conv(), CAUSAL_PAIRS, state_layout="kv")


@pytest.mark.parametrize("eps_mode,eps", [("add", 0.3), ("clamp", 0.2), ("clamp", 50.0)])
def test_epsilon_modes_against_finite_differences(eps_mode, eps):
    # clamp 50: every denominator is clamped (da = 0); clamp 0.2: none is (a > 0.2 for these features)
    inp, cot = _case(5, 1, 5, 2, 2, 2)
    _check(inp, cot, _conv(eps=eps, eps_mode=eps_mode), CAUSAL_PAIRS)


@pytest.mark.parametrize("normalize", [True, False])
def test_non_causal_quadratic_against_finite_differences(normalize):
    rng = np.random.default_rng(6)
    inp = {"phi_q": rng.uniform(0.1, 1.5, (1, 3, 2, 2)), "phi_k": rng.uniform(0.1, 1.5, (1, 5, 2, 2)),
           "v": rng.standard_normal((1, 5, 2, 3)), "S0": rng.standard_normal((1, 2, 3, 2)),
           "u0": rng.uniform(0.1, 1.0, (1, 2, 2)) if normalize else None}
    cot = {"o": rng.standard_normal((1, 3, 2, 3)), "S_last": rng.standard_normal((1, 2, 3, 2)),
           "u_last": rng.standard_normal((1, 2, 2))}
    _check(inp, cot, _conv(causal=False, normalize=normalize), [("quadratic", "numpy")])


def test_every_registered_pair_is_tested():
    assert set(VJP_IMPLEMENTATIONS.pairs()) == set(CAUSAL_PAIRS)


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), st.integers(0, 6), st.booleans(), st.sampled_from(CAUSAL_PAIRS))
def test_adjoint_identity(seed, l, normalize, pair):
    """``<J v, w>`` by Richardson differences of the oracle forward == ``<v, J^T w>`` of our VJP."""
    inp, cot = _case(seed, 1, l, 2, 2, 2, state=True, normalize=normalize)
    conv = _conv(normalize=normalize)
    if not normalize:
        cot = {k: w for k, w in cot.items() if k != "u_last"}
        cot["u_last"] = np.zeros((1, 2, 2))
    rng = np.random.default_rng(seed + 1)
    tangents = {k: rng.standard_normal(np.shape(a)) for k, a in inp.items() if a is not None}
    f = lambda x: linear_forward(x["phi_q"], x["phi_k"], x["v"], x.get("S0"), x.get("u0"), **conv)  # noqa: E731
    jv, err = fd_jvp(f, inp, tangents, cot)
    g = _ours(inp, cot, conv, *pair)
    vg = sum(float(np.sum(tangents[k] * g[k])) for k in tangents)
    bnd = linear_vjp_bound(inp["phi_q"], inp["phi_k"], inp["v"], inp.get("S0"), inp.get("u0"), cot["o"],
                           cot["S_last"], cot["u_last"] if normalize else None, causal=True, normalize=normalize,
                           eps=0.0, eps_mode="add", dtype=np.float64)
    # <v, g> is a sum of n_v products of our gradients (each within its bound): gamma_(n_v) on the products too
    n_v = sum(np.size(t) for t in tangents.values())
    tol = err + sum(float(np.sum(np.abs(tangents[k]) * bnd[k].values)) for k in tangents) + gamma(
        n_v + 1, np.float64) * sum(float(np.sum(np.abs(tangents[k] * g[k]))) for k in tangents)
    assert abs(jv - vg) <= tol, (jv, vg, tol)


@pytest.mark.parametrize("normalize", [True, False])
def test_mpmath_differences_tiny(normalize):
    inp, cot = _case(7, 1, 3, 1, 2, 2, state=True, normalize=normalize)
    if not normalize:
        cot.pop("u_last")
    wrt = [k for k in ("phi_q", "phi_k", "v", "S0", "u0") if inp.get(k) is not None]
    exact = mp_vjp(lambda x: {k: y for k, y in linear_forward_mp(x, normalize=normalize).items() if k in cot},
                   inp, cot, wrt, dps=30)
    conv = _conv(normalize=normalize)
    bounds = linear_vjp_bound(inp["phi_q"], inp["phi_k"], inp["v"], inp["S0"], inp.get("u0"), cot["o"],
                              cot["S_last"], cot.get("u_last"), causal=True, normalize=normalize, eps=0.0,
                              eps_mode="add", dtype=np.float64)
    for pair in CAUSAL_PAIRS:
        g = _ours(inp, dict(cot, u_last=cot.get("u_last", np.zeros((1, 1, 2)))), conv, *pair)
        for k in wrt:
            assert_within(g[k], exact[k], bounds[k])


def test_float32_stays_float32():
    inp, cot = _case(8, 1, 5, 1, 2, 2)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    for view, backend in CAUSAL_PAIRS:
        g = linear_attention_vjp(f32(inp["phi_q"]), f32(inp["phi_k"]), f32(inp["v"]), do=f32(cot["o"]),
                                 initial_state=(f32(inp["S0"]), f32(inp["u0"])), chunk=CHUNK, view=view,
                                 backend=backend)
        assert all(g[k].dtype == np.float32 for k in ("phi_q", "phi_k", "v"))
        assert all(a.dtype == np.float32 for a in g["initial_state"])


# ------------------------------------------------------------------ feature maps

_FEATURES = [("identity", {}), ("elu_plus_one", {}), ("dpfp", {"nu": 1}), ("dpfp", {"nu": 3}), ("trig", {}),
             ("positive", {}), ("hyperbolic", {}), ("positive", {"stabilizer": "row_max"}),
             ("positive", {"stabilizer": "global_max"}), ("hyperbolic", {"stabilizer": "row_max"}),
             ("hyperbolic", {"stabilizer": "global_max"})]


def _x(seed, shape):
    x = 0.7 * np.random.default_rng(seed).standard_normal(shape)
    return np.where(x >= 0, np.maximum(x, 0.1), np.minimum(x, -0.1))  # relu/elu kinks farther than the step


@pytest.mark.parametrize("kind,kw", _FEATURES)
def test_feature_map_vjp_against_finite_differences(kind, kw):
    rng = np.random.default_rng(9)
    x = _x(11, (2, 3, 3))
    W = rng.standard_normal((4, 3)) if kind in ("trig", "positive", "hyperbolic") else None
    st_ = kw.get("stabilizer", "none")
    nu = kw.get("nu", 1)

    def f(inp):
        if kind == "identity":
            return {"phi": np.asarray(inp["x"], dtype=np.float64)}
        return {"phi": feature_forward(inp["x"], kind, W=inp.get("W"), nu=nu, stabilizer=st_)}

    inp = {"x": x} if W is None else {"x": x, "W": W}
    phi = f(inp)["phi"]
    dphi = rng.standard_normal(phi.shape)
    r = fd_vjp(f, inp, {"phi": dphi}, list(inp))
    g = feature_map_vjp(x, kind, dphi=dphi, W=W, nu=kw.get("nu"), stabilizer=st_)
    assert set(g) == set(inp)
    if kind == "identity":
        bnd = {"x": Bound(0.0, "dx = dphi exactly")}
    else:
        bnd = feature_vjp_bound(x, kind, dphi, np.float64, W=W, nu=nu, stabilizer=st_)
    for k in inp:
        assert_within(g[k], r.grad[k], bnd[k] + Bound(r.error[k], "fd_vjp error"))


@pytest.mark.parametrize("kind", ["positive", "hyperbolic"])
def test_offset_under_stop_gradient(kind):
    """``offset_grad="stop"``: the gradient of ``exp(z - c)`` with ``c`` frozen at its value (FAVOR+'s convention)
    == differences of the stabilized features with the offset held fixed; it differs from ``"through"``."""
    rng = np.random.default_rng(12)
    x, W = _x(13, (2, 3)), rng.standard_normal((3, 3))
    c0 = np.max(feature_forward_exponents(x, W, kind), axis=-1, keepdims=True)

    def f(inp):
        z = feature_forward_exponents(inp["x"], inp["W"], kind)
        return {"phi": np.exp(z - c0) / np.sqrt(z.shape[-1])}

    dphi = rng.standard_normal((2, 3 if kind == "positive" else 6))
    r = fd_vjp(f, {"x": x, "W": W}, {"phi": dphi}, ["x", "W"])
    stop = feature_map_vjp(x, kind, W=W, dphi=dphi, stabilizer="row_max", offset_grad="stop")
    through = feature_map_vjp(x, kind, W=W, dphi=dphi, stabilizer="row_max")
    bnd = feature_vjp_bound(x, kind, dphi, np.float64, W=W, stabilizer="row_max")
    for k in ("x", "W"):
        assert_within(stop[k], r.grad[k], bnd[k] + Bound(r.error[k], "fd_vjp error"))
    assert np.max(np.abs(stop["x"] - through["x"])) > 1e3 * np.max(bnd["x"].values)


def feature_forward_exponents(x, W, kind):
    x, W = np.asarray(x, dtype=np.float64), np.asarray(W, dtype=np.float64)
    wx = x @ W.T
    if kind == "hyperbolic":
        wx = np.concatenate([wx, -wx], axis=-1)
    return wx - 0.5 * np.sum(x * x, axis=-1, keepdims=True)


def test_positive_features_mpmath_tiny():
    rng = np.random.default_rng(14)
    x, W = _x(15, (2, 2)), rng.standard_normal((3, 2))
    dphi = rng.standard_normal((2, 3))
    exact = mp_vjp(positive_features_mp, {"x": x, "W": W}, {"phi": dphi}, ["x", "W"], dps=30)
    g = feature_map_vjp(x, "positive", W=W, dphi=dphi)
    bnd = feature_vjp_bound(x, "positive", dphi, np.float64, W=W)
    for k in ("x", "W"):
        assert_within(g[k], exact[k], bnd[k])


def test_feature_map_vjp_dtypes_and_empty():
    x = _x(16, (0, 3)).astype(np.float32)
    W = np.ones((2, 3), dtype=np.float32)
    for kind in ("identity", "elu_plus_one", "dpfp", "trig", "positive", "hyperbolic"):
        kw = {"W": W} if kind in ("trig", "positive", "hyperbolic") else {}
        width = {"dpfp": 6, "trig": 4, "hyperbolic": 4, "positive": 2}.get(kind, 3)
        g = feature_map_vjp(x, kind, dphi=np.zeros((0, width), dtype=np.float32), **kw)
        assert g["x"].shape == (0, 3) and g["x"].dtype == np.float32
        if "W" in kw:
            assert g["W"].shape == (2, 3) and g["W"].dtype == np.float32 and not np.any(g["W"])


# ------------------------------------------------------------------ verify --grad on torch autograd candidates

def _torch_linear(detach_den=False):
    torch = pytest.importorskip("torch")

    def fn(phi_q, phi_k, v, S0=None, u0=None):
        """Causal normalized linear attention in the canonical layout, a literal torch forward (autograd)."""
        l = phi_q.shape[1]
        M = torch.tril(torch.ones(l, l, dtype=phi_q.dtype))
        A = torch.einsum("bihn,bjhn->bhij", phi_q, phi_k) * M
        num = torch.einsum("bhij,bjhe->bihe", A, v)
        den = A.sum(-1).transpose(1, 2)
        if S0 is not None:
            num = num + torch.einsum("bhen,bihn->bihe", S0, phi_q)
            den = den + torch.einsum("bhn,bihn->bih", u0, phi_q)
        if detach_den:
            den = den.detach()  # the planted bug: no gradient through the normalizer
        o = num / den[..., None]
        S_last = torch.einsum("bjhe,bjhn->bhen", v, phi_k) + (0 if S0 is None else S0)
        u_last = phi_k.sum(1) + (0 if u0 is None else u0)
        return o, S_last, u_last

    return fn


def _default_conv():
    from oracles.verify import get_op

    return {c.name: c.default for c in get_op("attention.linear").conventions}


def test_verify_grad_torch_autograd_candidate_conforms():
    from oracles.verify import verify
    from oracles.verify.registry import get_grad

    # golden and L = 0 / 1 / 7 (the chunk-straddling edge cases run in the report and the mutants)
    cases = [c for c in get_grad("attention.linear").cases(_default_conv()) if c.case_id in
             ("golden-small", "edge-L0", "edge-L1", "edge-odd")]
    rep = verify("attention.linear", _torch_linear(), framework="torch", grad=True, cases=cases, probes=False,
                 max_examples=1)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


def test_verify_grad_catches_a_detached_normalizer():
    from oracles.verify import verify

    rep = verify("attention.linear", _torch_linear(detach_den=True), framework="torch", grad=True,
                 kinds=("golden",), probes=False, forward=False)
    assert not rep.passed
    devs = " ".join(rep.deviations())
    # the normalizer's gradient reaches phi_q, phi_k and u0; v and S0 enter only the numerator
    assert "grad phi_q is wrong" in devs and "grad u0 is wrong" in devs and "grad v, grad S0 conform" in devs, devs
