"""The backward pass of softmax attention (``refimpl.attention.softmax.scaled_dot_product_attention_vjp``).

Ground truth: central differences with Richardson extrapolation (:func:`oracles.gradients.fd_vjp`) of the float64
oracle forward :func:`oracles.softmax_grad_forward.sdpa_forward` (never refimpl's code), and mpmath differences of
:func:`oracles.softmax_grad_forward.sdpa_forward_mp` on one tiny case.  Every comparison is elementwise within
``Bound(r.error + softmax_vjp_bound)``: the differences' own error bound plus the derived rounding bound of a
backward pass in the working dtype (derived in :mod:`oracles.softmax_grad_forward`; ``key_tiles`` for the tiled
views' online softmax).
"""
import numpy as np
import pytest

from oracles.gradients import fd_jvp, fd_vjp, mp_vjp
from oracles.softmax_grad_forward import sdpa_forward, sdpa_forward_mp, softmax_vjp_bound
from oracles.tolerance import Bound, assert_within
from refimpl.attention.softmax import VJP_IMPLEMENTATIONS, scaled_dot_product_attention_vjp

PAIRS = VJP_IMPLEMENTATIONS.pairs()
TILE = dict(block_q=4, block_k=3)


def keep_of(l, s, alignment):
    if alignment is None:
        return None
    off = 0 if alignment == "top_left" else s - l
    return np.arange(s)[None, :] <= np.arange(l)[:, None] + off


def draw(seed, b, l, s, h, n, p, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, l, h, n)) * scale, rng.standard_normal((b, s, h, n)) * scale,
            rng.standard_normal((b, s, h, p)), rng.standard_normal((b, l, h, p)))


def check_against_fd(q, k, v, do, alignment, pairs, dtype=np.float64, mask=None, bias=None, scale=None):
    """Every (view, backend) of ``pairs`` against one set of differences; returns the gradients of the last."""
    keep = keep_of(q.shape[1], k.shape[1], alignment)
    if mask is not None:
        m = np.asarray(mask)
        m = m[None, None] if m.ndim == 2 else (m[:, None] if m.ndim == 3 else m)
        keep = m if keep is None else keep & m
    n = q.shape[3]
    sc = (1 / np.sqrt(n) if n else 1.0) if scale is None else scale
    xs = {"q": q, "k": k, "v": v}
    if bias is not None:
        xs["bias"] = bias
    xs = {nm: a.astype(dtype) for nm, a in xs.items()}
    up = {nm: a.astype(np.float64) for nm, a in xs.items()}
    w = do.astype(dtype)

    def f(a):  # the bias (l s) / (b l s) / (b h l s) as (b|1, h|1, l, s)
        bb = a.get("bias")
        if bb is not None:
            bb = bb[None, None] if bb.ndim == 2 else (bb[:, None] if bb.ndim == 3 else bb)
        return {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep, bb)}

    r = fd_vjp(f, up, {"o": w.astype(np.float64)}, list(up))
    for view, backend in pairs:
        tiles = TILE if view == "tiled" else {}
        kw = dict(do=w, scale=scale, causal=alignment is not None, alignment=alignment, view=view, backend=backend,
                  **tiles)
        if mask is not None:
            kw["mask"] = mask
        g = scaled_dot_product_attention_vjp(xs["q"], xs["k"], xs["v"], bias=xs.get("bias"), **kw)
        key_tiles = -(-k.shape[1] // TILE["block_k"]) if tiles else 0
        bd = softmax_vjp_bound(up["q"], up["k"], up["v"], w, sc, dtype, keep, up.get("bias"), key_tiles=key_tiles)
        assert set(g) == set(up)
        for nm in up:
            assert g[nm].shape == up[nm].shape and g[nm].dtype == np.dtype(dtype), nm
            assert_within(g[nm], r.grad[nm], Bound(np.asarray(bd[nm].values) + r.error[nm], bd[nm].source),
                          dtype=dtype, context=f"d{nm}, {backend}/{view}, {alignment}")
    return g


# L = 0, 1, odd, the tiles (4 x 3) -1 / +0 / +1, l != s both ways (bottom-right: rows before every key)
CASES = [(0, 0, None), (1, 1, "top_left"), (5, 5, None), (3, 3, "bottom_right"), (4, 4, "top_left"),
         (5, 3, "bottom_right"), (2, 6, "top_left"), (2, 6, "bottom_right"), (9, 7, "bottom_right"), (9, 7, None)]


@pytest.mark.parametrize("l,s,alignment", CASES)
def test_every_view_matches_the_differences(l, s, alignment):
    q, k, v, do = draw(l * 31 + s, 1, l, s, 1, 2, 2)
    check_against_fd(q, k, v, do, alignment, PAIRS)


def test_float32_stays_float32_within_its_bound():
    q, k, v, do = draw(7, 2, 5, 6, 1, 3, 2)
    check_against_fd(q, k, v, do, "bottom_right", PAIRS, dtype=np.float32)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 2, 3, 4)])
def test_bias_gradient_is_summed_over_its_broadcast_axes(shape):
    q, k, v, do = draw(3, 2, 3, 4, 2, 2, 2)
    bias = np.random.default_rng(4).standard_normal(shape)
    g = check_against_fd(q, k, v, do, None, [("materialized", "numpy")], bias=bias, scale=0.7)
    assert g["bias"].shape == shape


def test_mask_and_fully_masked_rows_get_zero_gradient():
    q, k, v, do = draw(5, 1, 4, 5, 2, 2, 2)
    mask = np.ones((1, 4, 5), dtype=bool)
    mask[0, 1] = False  # query 1 sees no key: output 0, gradient 0
    g = check_against_fd(q, k, v, do, "top_left", [("materialized", "numpy")], mask=mask)
    assert np.all(g["q"][0, 1] == 0) and np.all(g["q"][0, 2] != 0)
    # a -inf bias entry masks its key and gets gradient exactly 0
    bias = np.zeros((4, 5))
    bias[2, 3] = -np.inf
    gb = scaled_dot_product_attention_vjp(q, k, v, do=do, bias=bias)
    assert gb["bias"][2, 3] == 0 and np.all(np.isfinite(gb["bias"]))


def test_bottom_right_rows_before_every_key_are_zero():
    q, k, v, do = draw(6, 1, 6, 3, 1, 2, 2)   # rows 0..2 see no key under bottom-right alignment
    for pair in PAIRS:
        g = check_against_fd(q, k, v, do, "bottom_right", [pair])
        assert np.all(g["q"][0, :3] == 0), pair


def test_adjoint_identity_with_a_bias():
    q, k, v, do = draw(8, 2, 4, 5, 2, 3, 2)
    rng = np.random.default_rng(9)
    bias = rng.standard_normal((2, 2, 4, 5))
    x = {"q": q, "k": k, "v": v, "bias": bias}
    t = {nm: rng.standard_normal(a.shape) for nm, a in x.items()}
    sc = 1 / np.sqrt(3)
    f = lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, None, a["bias"])}  # noqa: E731
    val, err = fd_jvp(f, x, t, {"o": do})
    g = scaled_dot_product_attention_vjp(q, k, v, do=do, bias=bias)
    bd = softmax_vjp_bound(q, k, v, do, sc, np.float64, None, bias)
    ours = sum(float(np.sum(t[nm] * g[nm])) for nm in x)
    # |<v, g> - <v, g_exact>| <= sum |v| bound_g (+ the rounding of the n-term dot, a few ulps of sum |v g|)
    slack = sum(float(np.sum(np.abs(t[nm]) * bd[nm].values)) for nm in x) + \
        1e-15 * sum(x_.size for x_ in x.values()) * sum(float(np.sum(np.abs(t[nm] * g[nm]))) for nm in x)
    assert abs(ours - val) <= err + slack, (ours, val, err, slack)


def test_mpmath_differences_on_a_tiny_causal_case():
    q, k, v, do = draw(11, 1, 3, 3, 1, 2, 2)
    keep = keep_of(3, 3, "top_left")
    sc = 1 / np.sqrt(2)
    exact = mp_vjp(lambda a: {"o": sdpa_forward_mp(a["q"], a["k"], a["v"], sc, keep)}, {"q": q, "k": k, "v": v},
                   {"o": do}, ("q", "k", "v"), dps=40)
    bd = softmax_vjp_bound(q, k, v, do, sc, np.float64, keep, key_tiles=1)
    for view, backend in PAIRS:
        g = scaled_dot_product_attention_vjp(q, k, v, do=do, causal=True, view=view, backend=backend)
        for nm in exact:
            assert_within(g[nm], exact[nm], bd[nm], context=f"d{nm} {backend}/{view} vs mpmath")


def test_the_entry_point_refuses_what_a_view_does_not_take():
    q, k, v, do = draw(1, 1, 2, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="bias"):
        scaled_dot_product_attention_vjp(q, k, v, do=do, bias=np.zeros((2, 2)), view="tiled")
    with pytest.raises(ValueError, match="block_q"):
        scaled_dot_product_attention_vjp(q, k, v, do=do, block_q=2)
    with pytest.raises(ValueError, match="return_weights"):
        scaled_dot_product_attention_vjp(q, k, v, do=do, return_weights=True)
    with pytest.raises(ValueError, match=r"do: expected shape \(1, 2, 1, 2\)"):
        scaled_dot_product_attention_vjp(q, k, v, do=do[:, :1])
    with pytest.raises(TypeError):
        scaled_dot_product_attention_vjp(q, k, v, do)  # the cotangent is keyword-only
