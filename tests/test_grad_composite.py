"""The backward passes of the composite ops: multi-head attention
(``refimpl.attention.softmax.multi_head_attention_vjp``), Performer attention
(``refimpl.attention.linear.performer_attention_vjp``) and the online HiPPO projection
(``refimpl.ssm.hippo.hippo_projection_vjp``).

Ground truth: central differences with Richardson extrapolation (:func:`oracles.gradients.fd_vjp`) of the float64
oracle forwards of :mod:`oracles.composite_grad_forward` (never refimpl's code), and mpmath differences of
:func:`oracles.composite_grad_forward.hippo_forward_mp` on one tiny case.  Every comparison is elementwise within
``Bound(r.error + derived bound)``: the differences' own error plus the derived rounding bound of the backward in
its working dtype (:mod:`oracles.composite_grad_forward`).
"""
import math

import numpy as np
import pytest

from oracles.composite_grad_forward import (hippo_forward, hippo_forward_mp, hippo_vjp_bound, multi_head_forward,
                                            multi_head_vjp_bound, performer_forward, performer_vjp_bound)
from oracles.gradients import fd_jvp, fd_vjp, mp_vjp
from oracles.tolerance import Bound, assert_within
from refimpl.attention.linear import PERFORMER_VJP_IMPLEMENTATIONS, performer_attention_vjp
from refimpl.attention.softmax import MULTI_HEAD_VJP_IMPLEMENTATIONS, multi_head_attention_vjp
from refimpl.ssm.hippo import hippo_projection_vjp

MH = ("x_q", "x_kv", "W_Q", "W_K", "W_V", "W_O")
TILE = dict(block_q=2, block_k=3)


def _keep(l, s, alignment):
    if alignment is None:
        return None
    off = 0 if alignment == "top_left" else s - l
    return (np.arange(s)[None, :] <= np.arange(l)[:, None] + off)[None, None]


def _mh_case(seed, b, l, s, d, h, n, p, dout):
    rng = np.random.default_rng(seed)
    r = 1 / math.sqrt(d)
    x = {"x_q": rng.standard_normal((b, l, d)), "x_kv": rng.standard_normal((b, s, d)),
         "W_Q": 1.5 * r * rng.standard_normal((h, d, n)), "W_K": 1.5 * r * rng.standard_normal((h, d, n)),
         "W_V": r * rng.standard_normal((h, d, p)), "W_O": rng.standard_normal((h * p, dout)) / math.sqrt(h * p)}
    return x, rng.standard_normal((b, l, dout))


def _check(g, r, bounds, names, dtype, context):
    assert set(g) >= set(names), (set(g), names)
    for nm in names:
        assert g[nm].shape == np.shape(r.grad[nm]) and g[nm].dtype == np.dtype(dtype), (nm, g[nm].dtype)
        assert_within(g[nm], r.grad[nm], Bound(np.asarray(bounds[nm].values) + r.error[nm], bounds[nm].source),
                      dtype=dtype, context=f"d{nm}, {context}")


# ------------------------------------------------------------------ multi-head attention

MH_CASES = [(0, 0, None), (1, 1, "top_left"), (5, 5, None), (4, 4, "top_left"), (5, 3, "bottom_right"),
            (2, 6, "top_left")]


@pytest.mark.parametrize("l,s,alignment", MH_CASES)
def test_multi_head_every_view_matches_the_differences(l, s, alignment):
    x, w = _mh_case(l * 13 + s, 1, l, s, 3, 2, 2, 2, 3)
    sc = 1 / math.sqrt(2)
    f = lambda a: {"out": multi_head_forward(*(a[k] for k in MH), sc, _keep(l, s, alignment))}  # noqa: E731
    r = fd_vjp(f, x, {"out": w}, MH)
    bd = multi_head_vjp_bound(x, w, sc, np.float64, _keep(l, s, alignment))
    for view, backend in MULTI_HEAD_VJP_IMPLEMENTATIONS.pairs():
        tiles = TILE if view == "tiled" else {}
        g = multi_head_attention_vjp(*(x[k] for k in MH), dout=w, causal=alignment is not None, alignment=alignment,
                                     view=view, backend=backend, **tiles)
        _check(g, r, bd, MH, np.float64, f"{backend}/{view} l={l} s={s} {alignment}")


def test_multi_head_float32_stays_float32_within_its_bound():
    x, w = _mh_case(3, 2, 4, 5, 4, 2, 3, 2, 3)
    sc = 0.6
    f = lambda a: {"out": multi_head_forward(*(a[k] for k in MH), sc, _keep(4, 5, "bottom_right"))}  # noqa: E731
    x32 = {k: v.astype(np.float32) for k, v in x.items()}
    w32 = w.astype(np.float32)
    r = fd_vjp(f, {k: v.astype(np.float64) for k, v in x32.items()}, {"out": w32.astype(np.float64)}, MH)
    bd = multi_head_vjp_bound(x32, w32, sc, np.float32, _keep(4, 5, "bottom_right"))
    g = multi_head_attention_vjp(*(x32[k] for k in MH), dout=w32, scale=sc, causal=True, alignment="bottom_right")
    _check(g, r, bd, MH, np.float32, "float32")


def test_multi_head_bias_and_mask():
    x, w = _mh_case(5, 1, 3, 4, 3, 2, 2, 2, 2)
    rng = np.random.default_rng(6)
    bias = rng.standard_normal((3, 4))
    mask = np.ones((1, 3, 4), dtype=bool)
    mask[0, 1] = False                    # query 1 sees no key: its output 0, no gradient
    mask[0, 2, 0] = False
    sc = 1 / math.sqrt(2)
    xb = dict(x, bias=bias)

    def f(a):  # the bias and mask folded into the oracle's softmax (sdpa_float64 through the keep mask + bias)
        from oracles.attention import sdpa_float64
        q = np.einsum("bld,hdn->blhn", a["x_q"], a["W_Q"])
        k = np.einsum("bsd,hdn->bshn", a["x_kv"], a["W_K"])
        v = np.einsum("bsd,hdp->bshp", a["x_kv"], a["W_V"])
        z = sdpa_float64(q, k, v, sc, mask[:, None], a["bias"][None, None])[0]
        return {"out": z.reshape(1, 3, 4) @ a["W_O"]}

    r = fd_vjp(f, xb, {"out": w}, list(xb))
    bd = multi_head_vjp_bound(x, w, sc, np.float64, mask[:, None])
    # the bias's gradient is dS: its bound the softmax backward's on absolute values (oracles.softmax_grad_forward)
    from oracles.softmax_grad_forward import softmax_vjp_bound
    q = np.einsum("bld,hdn->blhn", x["x_q"], x["W_Q"])
    k = np.einsum("bsd,hdn->bshn", x["x_kv"], x["W_K"])
    v = np.einsum("bsd,hdp->bshp", x["x_kv"], x["W_V"])
    dz = (w @ x["W_O"].T).reshape(1, 3, 2, 2)
    sb = softmax_vjp_bound(q, k, v, np.abs(dz), sc, np.float64, mask[:, None], bias)["bias"]
    bd["bias"] = sb.scaled(2.0, "dZ = dout W_O^T and the projections' roundings: at most doubled")
    g = multi_head_attention_vjp(*(x[k] for k in MH), dout=w, mask=mask, bias=bias)
    _check(g, r, bd, list(xb), np.float64, "bias + mask")
    assert np.all(g["bias"][1] == 0) and g["bias"][2, 0] == 0


def test_multi_head_adjoint_identity():
    x, w = _mh_case(8, 2, 4, 5, 3, 2, 2, 3, 2)
    rng = np.random.default_rng(9)
    t = {nm: rng.standard_normal(a.shape) for nm, a in x.items()}
    sc = 1 / math.sqrt(2)
    f = lambda a: {"out": multi_head_forward(*(a[k] for k in MH), sc)}  # noqa: E731
    val, err = fd_jvp(f, x, t, {"out": w})
    g = multi_head_attention_vjp(*(x[k] for k in MH), dout=w)
    ours = sum(float(np.sum(t[nm] * g[nm])) for nm in x)
    # |<v, g> - <J v, w>| <= fd error + the rounding of the backward (bounded with the row magnitudes |J|^T|w|
    # replaced by sum |v| |g|: a few ulps per term of the depth)
    from oracles.composite_grad_forward import multi_head_depth
    D, F = multi_head_depth(*(x[k] for k in MH), sc)
    from oracles.tolerance import gamma
    slack = gamma(D * F + 2 * sum(a.size for a in x.values()), np.float64) * sum(
        float(np.sum(np.abs(t[nm] * g[nm]))) for nm in x)
    assert abs(ours - val) <= err + slack + 1e-14 * abs(val), (ours, val, err, slack)


def test_multi_head_refuses_what_a_view_does_not_take():
    x, w = _mh_case(1, 1, 2, 2, 3, 1, 2, 2, 2)
    args = [x[k] for k in MH]
    with pytest.raises(ValueError, match="bias"):
        multi_head_attention_vjp(*args, dout=w, bias=np.zeros((2, 2)), view="tiled")
    with pytest.raises(ValueError, match="block_q"):
        multi_head_attention_vjp(*args, dout=w, block_q=2)
    with pytest.raises(ValueError, match=r"dout: expected shape"):
        multi_head_attention_vjp(*args, dout=w[:, :1])
    with pytest.raises(TypeError):
        multi_head_attention_vjp(*args, w)  # the cotangent is keyword-only


# ------------------------------------------------------------------ Performer attention

def _perf_case(seed, b, l, s, h, d, e, m, amp=0.7):
    rng = np.random.default_rng(seed)
    x = {"q": amp * rng.standard_normal((b, l, h, d)), "k": amp * rng.standard_normal((b, s, h, d)),
         "v": rng.standard_normal((b, s, h, e)), "W": rng.standard_normal((m, d))}
    return x, rng.standard_normal((b, l, h, e))


_STAB = {"none": ("none", "none"), "query_max": ("row_max", "none"), "key_global_max": ("none", "global_max")}


def _perf_fd(x, w, kind, stabilizer, causal, normalize=True, eps=0.0):
    r = math.sqrt(1 / math.sqrt(x["q"].shape[-1]))
    qs, ks = _STAB[stabilizer]
    f = lambda a: {"o": performer_forward(a["q"], a["k"], a["v"], a["W"], kind=kind, r=r, feature_eps=0.0,  # noqa
                                          query_stabilizer=qs, key_stabilizer=ks, causal=causal,
                                          normalize=normalize, eps=eps, eps_mode="add")}
    fd = fd_vjp(f, {k: v.astype(np.float64) for k, v in x.items()}, {"o": w.astype(np.float64)}, list(x))
    kw = dict(kind=kind, r=r, feature_eps=0.0, query_stabilizer=qs, key_stabilizer=ks, causal=causal,
              normalize=normalize, eps=eps)
    return fd, kw


PERF_CASES = [("positive", "none", False, 4, 4), ("positive", "query_max", False, 3, 6),
              ("hyperbolic", "key_global_max", False, 4, 4), ("trig", "none", False, 0, 0),
              ("positive", "none", True, 1, 1), ("positive", "query_max", True, 3, 3),
              ("hyperbolic", "none", True, 4, 4), ("positive", "key_global_max", True, 5, 5),
              ("trig", "none", True, 9, 9)]


@pytest.mark.parametrize("kind,stabilizer,causal,l,s", PERF_CASES)
def test_performer_every_view_matches_the_differences(kind, stabilizer, causal, l, s):
    # chunk 4: L = 3, 4, 5, 9 straddle one and two chunk boundaries
    x, w = _perf_case(l * 7 + s + len(kind), 1, l, s, 2, 2, 2, 3)
    eps = 0.5 if kind == "trig" else 0.0   # trig features can sum to ~0: keep the denominator away from it
    fd, kw = _perf_fd(x, w, kind, stabilizer, causal, eps=eps)
    bd = performer_vjp_bound(x, w, kw, np.float64)
    pairs = [pr for pr in PERFORMER_VJP_IMPLEMENTATIONS.pairs() if causal or pr[0] == "quadratic"]
    for view, backend in pairs:
        g = performer_attention_vjp(x["q"], x["k"], x["v"], x["W"], do=w, kind=kind, causal=causal, eps=eps,
                                    stabilizer=stabilizer, view=view, backend=backend, chunk=4)
        _check(g, fd, bd, list(x), np.float64, f"{backend}/{view} {kind} {stabilizer} causal={causal} l={l}")


def test_performer_float32_stays_float32_within_its_bound():
    x, w = _perf_case(21, 2, 5, 5, 1, 3, 2, 4)
    x32 = {k: v.astype(np.float32) for k, v in x.items()}
    fd, kw = _perf_fd(x32, w.astype(np.float32), "positive", "query_max", True)
    bd = performer_vjp_bound(x32, w, kw, np.float32)
    g = performer_attention_vjp(*(x32[k] for k in "qkvW"), do=w.astype(np.float32), causal=True,
                                stabilizer="query_max", view="chunked", chunk=2)
    _check(g, fd, bd, list(x), np.float32, "float32")


def test_performer_offset_conventions():
    """Normalized with eps = 0 the offsets cancel: 'stop' and 'through' agree; unnormalized they do not, and only
    'through' is the derivative of the forward (the differences)."""
    x, w = _perf_case(31, 1, 4, 4, 1, 2, 2, 3, amp=1.5)
    kw = dict(causal=True, stabilizer="query_max", view="recurrent")
    a = performer_attention_vjp(*(x[k] for k in "qkvW"), do=w, offset_grad="through", **kw)
    b = performer_attention_vjp(*(x[k] for k in "qkvW"), do=w, offset_grad="stop", **kw)
    for nm in a:
        np.testing.assert_allclose(a[nm], b[nm], rtol=1e-10, atol=1e-12 * np.abs(a[nm]).max())
    fd, bkw = _perf_fd(x, w, "positive", "query_max", True, normalize=False)
    bd = performer_vjp_bound(x, w, bkw, np.float64)
    a = performer_attention_vjp(*(x[k] for k in "qkvW"), do=w, normalize=False, offset_grad="through", **kw)
    _check(a, fd, bd, list(x), np.float64, "unnormalized, through")
    b = performer_attention_vjp(*(x[k] for k in "qkvW"), do=w, normalize=False, offset_grad="stop", **kw)
    assert np.abs(b["q"] - fd.grad["q"]).max() > 1e3 * np.abs(a["q"] - fd.grad["q"]).max()


def test_performer_refusals():
    x, w = _perf_case(1, 1, 3, 3, 1, 2, 2, 2)
    args = [x[k] for k in "qkvW"]
    with pytest.raises(ValueError, match="key_prefix_max"):
        performer_attention_vjp(*args, do=w, causal=True, stabilizer="key_prefix_max", view="recurrent")
    with pytest.raises(ValueError, match="view"):
        performer_attention_vjp(*args, do=w, view="chunked")
    with pytest.raises(ValueError, match=r"do: expected shape"):
        performer_attention_vjp(*args, do=w[:, :2])
    with pytest.raises(ValueError, match="offset_grad"):
        performer_attention_vjp(*args, do=w, offset_grad="sideways")


# ------------------------------------------------------------------ HiPPO projection

HIPPO_CASES = [("legs", "bilinear", None, 0, 3, False), ("legs", "bilinear", None, 1, 3, True),
               ("legs", "forward_euler", None, 9, 4, False), ("legs", "gbt", 0.3, 8, 3, True),
               ("legt", "bilinear", None, 9, 4, True), ("lmu", "backward_euler", None, 7, 3, False),
               ("lagt", "gbt", 0.7, 9, 3, True), ("fout", "bilinear", None, 8, 5, True),
               ("legt", "forward_euler", None, 17, 2, False)]
_ALPHA = {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}


@pytest.mark.parametrize("measure,method,alpha,L,N,with_c0", HIPPO_CASES)
def test_hippo_matches_the_differences(measure, method, alpha, L, N, with_c0):
    rng = np.random.default_rng(L * 11 + N)
    dt = 0.03
    x = {"f": rng.standard_normal(L), "dt": np.asarray(dt)}
    if with_c0:
        x["c0"] = rng.standard_normal(N)
    w = rng.standard_normal((L, N))
    a = _ALPHA.get(method, alpha)
    f = lambda z: {"c": hippo_forward(z["f"], measure, N, z["dt"], alpha=a, c0=z.get("c0"))}  # noqa: E731
    r = fd_vjp(f, x, {"c": w}, list(x))
    g = hippo_projection_vjp(x["f"], measure, N, dt, dc=w, method=method, alpha=alpha,
                             initial_state=x.get("c0"))
    g = {"f": g["f"], "dt": g["dt"], **({"c0": g["initial_state"]} if with_c0 else {})}
    bd = hippo_vjp_bound(x["f"], measure, N, dt, w, alpha=a, c0=x.get("c0"))
    _check(g, r, bd, list(x), np.float64, f"{measure} {method} L={L}")
    if measure == "legs":
        assert g["dt"] == 0.0   # dt drops out of LegS on t_k = (k + 1) dt


def test_hippo_dt_gradient_with_a_given_t0():
    """LegS with an explicit t0: h_k = dt / (t0 + k dt) depends on dt (dh_k/ddt = t0 / t_k^2)."""
    from refimpl.ssm.hippo import hippo_projection

    rng = np.random.default_rng(4)
    f, w, dt, t0 = rng.standard_normal(6), rng.standard_normal((6, 3)), 0.1, 0.25
    g = hippo_projection_vjp(f, "legs", 3, dt, dc=w, t0=t0)
    # the oracle: differences of refimpl's forward (no oracle forward has a free t0), Richardson
    r = fd_vjp(lambda z: {"c": hippo_projection(f, "legs", 3, float(z["dt"]), t0=t0)}, {"dt": np.asarray(dt)},
               {"c": w}, ["dt"])
    assert g["dt"] != 0.0
    from oracles.tolerance import componentwise_bound
    bd = componentwise_bound(r.magnitude["dt"], 6 * (3 * 3 + 6) + 10, np.float64, oracle_dtype=None,
                             what="|J|^T|w| x gamma_(L(3N+6)+10)")
    assert_within(g["dt"], r.grad["dt"], Bound(np.asarray(bd.values) + r.error["dt"], bd.source))


def test_hippo_mpmath_differences_on_a_tiny_case():
    rng = np.random.default_rng(12)
    L, N, dt = 4, 2, 0.05
    x = {"f": rng.standard_normal(L), "dt": np.asarray(dt), "c0": rng.standard_normal(N)}
    w = rng.standard_normal((L, N))
    for measure in ("legs", "legt"):
        exact = mp_vjp(lambda z: {"c": hippo_forward_mp(z["f"], z["c0"], z["dt"], measure, N, alpha=0.5)}, x,
                       {"c": w}, ("f", "dt", "c0"), dps=40)
        g = hippo_projection_vjp(x["f"], measure, N, dt, dc=w, initial_state=x["c0"])
        bd = hippo_vjp_bound(x["f"], measure, N, dt, w, alpha=0.5, c0=x["c0"])
        for nm, got in (("f", g["f"]), ("dt", g["dt"]), ("c0", g["initial_state"])):
            assert_within(got, np.asarray(exact[nm], dtype=np.float64), bd[nm], context=f"d{nm} {measure} mpmath")


def test_hippo_refusals():
    with pytest.raises(ValueError, match=r"dc: expected shape"):
        hippo_projection_vjp(np.zeros(4), "legs", 3, 0.1, dc=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="initial_state"):
        hippo_projection_vjp(np.zeros(4), "legs", 3, 0.1, dc=np.zeros((4, 3)), initial_state=np.zeros(2))
    with pytest.raises(TypeError):
        hippo_projection_vjp(np.zeros(4), "legs", 3, 0.1, np.zeros((4, 3)))
