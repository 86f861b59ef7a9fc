"""Property tests of the Mega layer: views and backends agree for every length (L = 0, 1, odd, chunk +- 1, long),
chunk >= L is the unchunked layer, chunk = 1 leaves only each position's attention to itself, the causal layer's
output at t never depends on later inputs, and float32 stays float32 within float32's bound.  Every tolerance is
:func:`oracles.mega.mega_layer_bound` (two evaluations in float64: the bound with a float64 "oracle" share covers
both sides)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.mega import mega_layer_bound, mega_layer_mpmath
from oracles.tolerance import assert_within
from oracles.verify.ops_mega import sample
from refimpl.attention.mega import MEGA_LAYER, mega_layer

ATTN = st.sampled_from(["softmax", "laplace", "relu2"])


@st.composite
def layers(draw, *, long_ok=True, bidirectional=None):
    chunk = draw(st.sampled_from([None, 1, 2, 3, 5]))
    c = chunk or 4
    lengths = [0, 1, 2, 3, 7, max(c - 1, 0), c, c + 1, 2 * c + 1] + ([97] if long_ok else [])
    L = draw(st.sampled_from(lengths))
    causal = draw(st.booleans())
    bidir = (not causal) and draw(st.booleans()) if bidirectional is None else bidirectional
    conv = {"use_rel_bias": draw(st.booleans()), "bidirectional": bidir, "chunk": chunk}  # the bias spans the chunk
    seed = draw(st.integers(0, 2**31 - 1))
    inp = sample(np.random.default_rng(seed), conv, l=L)
    x = inp.pop("x")
    return x, inp, dict(chunk=chunk, causal=causal, attention=draw(ATTN), scale=draw(st.sampled_from([None, 0.6])))


def _both_sides(x, P, opts, dtype=np.float64):
    """Two evaluations, each within the derived bound of the exact layer: their difference within the sum."""
    return mega_layer_bound(x, P, dtype=dtype, oracle_dtype=dtype, **opts)


@given(layers())
def test_views_and_backends_agree(case):
    x, P, opts = case
    ref = mega_layer(x, **P, **opts)
    bound = _both_sides(x, P, opts)
    for view, backend in MEGA_LAYER.pairs():
        y = mega_layer(x, **P, **opts, view=view, backend=backend)
        assert y.shape == x.shape and y.dtype == np.float64
        assert_within(y, ref, bound, context=f"{backend}/{view} {opts} L={x.shape[1]}")


@given(layers(long_ok=False))
def test_small_cases_against_mpmath(case):
    x, P, opts = case
    exact = mega_layer_mpmath(x, P, **opts)
    bound = mega_layer_bound(x, P, **opts)
    for view, backend in MEGA_LAYER.pairs():
        assert_within(mega_layer(x, **P, **opts, view=view, backend=backend), exact, bound,
                      context=f"{backend}/{view} {opts}")


@given(layers(), st.integers(0, 3))
def test_chunk_at_least_L_is_the_unchunked_layer(case, extra):
    x, P, opts = case
    if P["rel_bias"] is not None:  # a bias spanning the whole sequence
        P = dict(P, rel_bias=np.random.default_rng(extra).standard_normal(2 * max(x.shape[1], 1) - 1))
    L = x.shape[1]
    whole = mega_layer(x, **P, **dict(opts, chunk=None))
    for view, backend in MEGA_LAYER.pairs():
        y = mega_layer(x, **P, **dict(opts, chunk=max(L, 1) + extra), view=view, backend=backend)
        assert_within(y, whole, _both_sides(x, P, dict(opts, chunk=None)), context=f"{backend}/{view}")


@given(layers())
def test_chunk_one_leaves_only_the_self_term(case):
    """With c = 1 each query sees only itself: softmax weight 1, so Q, K and the bias cannot matter."""
    x, P, opts = case
    opts = dict(opts, chunk=1, attention="softmax")
    rng = np.random.default_rng(7)
    other = dict(P, W_z=rng.standard_normal(P["W_z"].shape), b_z=rng.standard_normal(P["b_z"].shape),
                 kappa_q=rng.standard_normal(P["kappa_q"].shape), mu_k=rng.standard_normal(P["mu_k"].shape),
                 rel_bias=None)
    for view, backend in MEGA_LAYER.pairs():
        a = mega_layer(x, **P, **opts, view=view, backend=backend)
        b = mega_layer(x, **other, **opts, view=view, backend=backend)
        assert_within(a, b, _both_sides(x, P, opts), context=f"{backend}/{view}")


@given(layers(bidirectional=False), st.integers(0, 2**31 - 1))
def test_causal_output_ignores_later_inputs(case, seed):
    x, P, opts = case
    opts = dict(opts, causal=True)
    L = x.shape[1]
    if L < 2:
        return
    t0 = int(np.random.default_rng(seed).integers(1, L))
    x2 = x.copy()
    x2[:, t0:] = np.random.default_rng(seed).standard_normal(x2[:, t0:].shape) * 3
    for view, backend in MEGA_LAYER.pairs():
        a = mega_layer(x, **P, **opts, view=view, backend=backend)[:, :t0]
        b = mega_layer(x2, **P, **opts, view=view, backend=backend)[:, :t0]
        if backend == "numpy":  # every rounding of position t < t0 reads only positions <= t
            np.testing.assert_array_equal(a, b)
        else:  # the FFT EMA mixes every position's rounding: equal within the bound of both sides
            bd = _both_sides(x[:, :t0], P, opts)
            assert_within(a, b, bd, context=f"{backend}/{view}")


@given(layers(long_ok=False))
def test_float32_stays_float32_within_its_bound(case):
    x, P, opts = case
    x32 = x.astype(np.float32)
    P32 = {k: (None if v is None else v.astype(np.float32)) for k, v in P.items()}
    up = {k: (None if v is None else v.astype(np.float64)) for k, v in P32.items()}
    exact = mega_layer_mpmath(x32.astype(np.float64), up, **opts)
    bound = mega_layer_bound(x32.astype(np.float64), up, dtype=np.float32, **opts)
    for view, backend in MEGA_LAYER.pairs():
        y = mega_layer(x32, **P32, **opts, view=view, backend=backend)
        assert y.dtype == np.float32
        assert_within(y, exact, bound, context=f"{backend}/{view} float32")
