"""The backward pass of sparse attention (``refimpl.attention.sparse.sparse_attention_vjp``): both views against
central differences (Richardson, :func:`oracles.gradients.fd_vjp`) of the float64 oracle forward over the papers'
key sets (:mod:`oracles.sparse_attention`, never refimpl's pattern code), elementwise within ``Bound(r.error +
softmax_vjp_bound)`` (the differences' error plus the derived rounding bound of a backward pass on that keep mask);
the block-sparse view at L = 0, 1, odd, a block -1 / +0 / +1; every pattern kind; float32; the pattern's empty rows."""
import numpy as np
import pytest

from oracles.gradients import fd_vjp
from oracles.softmax_grad_forward import sdpa_forward, softmax_vjp_bound
from oracles.sparse_attention import keep_from_sets, pattern_sets
from oracles.tolerance import Bound, assert_within
from refimpl.attention.sparse import (VJP_IMPLEMENTATIONS, bigbird_pattern, fixed_pattern, longformer_pattern,
                                      sliding_window_pattern, sparse_attention_vjp, strided_pattern)

PAIRS = VJP_IMPLEMENTATIONS.pairs()
BLOCK = 3


def patterns(l):
    """(refimpl pattern, the oracle's key-set name and parameters) of each kind."""
    return [
        (sliding_window_pattern(l, (2, 1)), "sliding_window", dict(window=(2, 1), dilation=1, causal=False)),
        (longformer_pattern(l, (1, 0), global_tokens=(0,), causal=True), "longformer",
         dict(window=(1, 0), dilation=1, global_tokens=(0,) if l else (), causal=True)),
        (strided_pattern(l, 2, combine="heads"), "strided", dict(stride=2, causal=True, combine="heads")),
        (fixed_pattern(l, 3), "fixed", dict(stride=3, summary=1, causal=True, combine="union")),
        (bigbird_pattern(l, 2, seed=1), "bigbird",
         dict(block=2, window_blocks=3, global_blocks=1, random_blocks=1, seed=1, heads=1)),
    ]


def check(pattern, kind, params, l, seed, dtype=np.float64, h=2):
    rng = np.random.default_rng(seed)
    b, n, p = 1, 2, 2
    q, k = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    v, do = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, p))
    xs = {nm: a.astype(dtype) for nm, a in (("q", q), ("k", k), ("v", v))}
    up = {nm: a.astype(np.float64) for nm, a in xs.items()}
    w = do.astype(dtype)
    keep = keep_from_sets(pattern_sets(kind, l, **params), l)[None]
    sc = 1 / np.sqrt(n)
    r = fd_vjp(lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep)}, up, {"o": w.astype(np.float64)},
               ("q", "k", "v"))
    for view, backend in PAIRS:
        kw = dict(block=BLOCK) if view == "block_sparse" else {}
        g = sparse_attention_vjp(xs["q"], xs["k"], xs["v"], pattern, do=w, view=view, backend=backend, **kw)
        bd = softmax_vjp_bound(up["q"], up["k"], up["v"], w, sc, dtype, keep,
                               key_tiles=-(-l // BLOCK) if kw else 0)
        for nm in up:
            assert g[nm].shape == up[nm].shape and g[nm].dtype == np.dtype(dtype)
            assert_within(g[nm], r.grad[nm], Bound(np.asarray(bd[nm].values) + r.error[nm], bd[nm].source),
                          dtype=dtype, context=f"d{nm} {backend}/{view} {kind} l={l}")
    return g


@pytest.mark.parametrize("index", range(5))
def test_every_kind_matches_the_differences(index):
    pattern, kind, params = patterns(7)[index]
    check(pattern, kind, params, 7, seed=index)


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4, 5])  # L = 0, 1, a block (3) -1 / +0 / +1, odd
def test_block_sparse_across_lengths(l):
    check(sliding_window_pattern(l, (2, 1)), "sliding_window", dict(window=(2, 1), dilation=1, causal=False), l,
          seed=10 + l)


def test_float32_stays_float32():
    pattern, kind, params = patterns(6)[1]
    check(pattern, kind, params, 6, seed=3, dtype=np.float32)


def test_a_row_with_no_kept_key_has_zero_gradient():
    # strided "heads", head 1 keeps A2 = {j <= i, (i - j) mod 2 = 0}: every row keeps itself; use a pattern whose
    # query 0 of head 1 keeps nothing: the fixed pattern with summary keys only (A2) and causal
    pattern = fixed_pattern(5, 3, summary=1, combine="heads")
    g = check(pattern, "fixed", dict(stride=3, summary=1, causal=True, combine="heads"), 5, seed=4)
    empty = ~pattern.mask()[1].any(axis=1)
    assert empty.any()
    assert np.all(g["q"][:, empty, 1] == 0)


def test_the_entry_point_checks_the_cotangent_and_the_view():
    q = np.zeros((1, 4, 1, 2))
    pattern = sliding_window_pattern(4, 1)
    with pytest.raises(ValueError, match=r"do: expected shape \(1, 4, 1, 2\)"):
        sparse_attention_vjp(q, q, q, pattern, do=q[:, :3])
    with pytest.raises(ValueError, match="block"):
        sparse_attention_vjp(q, q, q, pattern, do=q, block=2)
    with pytest.raises(ValueError, match="view"):
        sparse_attention_vjp(q, q, q, pattern, do=q, view="tiled")
