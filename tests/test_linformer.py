"""Linformer attention (Wang et al. 2020): worked examples, golden values, the paper's parameter sharing, its
claims (the context mapping is ``l x r``, so every head's output has rank <= r; not causal), bad inputs."""
import functools
import math

import numpy as np
import pytest

from oracles.linformer import linformer_bound, linformer_mpmath, per_head
from oracles.tolerance import Bound, assert_within, componentwise_bound, gamma
from refimpl.attention.linformer import IMPLEMENTATIONS, SHARINGS, linformer_attention, linformer_layer, linformer_stack

PAIRS = IMPLEMENTATIONS.pairs()


def _case(seed=0, b=1, l=6, h=2, n=3, p=2, r=3, shared=False):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, p))
    shape = (r, l) if shared else (h, r, l)
    return q, k, v, rng.standard_normal(shape) / math.sqrt(r), rng.standard_normal(shape) / math.sqrt(r)


@pytest.mark.parametrize("view, backend", PAIRS)
def test_golden_two_keys_identity_projection(view, backend):
    """E = F = I, n = 1, scale 1: s = (0, ln 3) -> weights (1/4, 3/4), o = 4/4 + 3*8/4 = 7."""
    q = np.ones((1, 2, 1, 1))
    k = np.array([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    v = np.array([4.0, 8.0]).reshape(1, 2, 1, 1)
    o = linformer_attention(q, k, v, np.eye(2), np.eye(2), scale=1.0, view=view, backend=backend)
    np.testing.assert_allclose(o[0, :, 0, 0], [7.0, 7.0], rtol=4e-16 * 8)


@pytest.mark.parametrize("view, backend", PAIRS)
def test_rank_one_projection_gives_the_projected_value(view, backend):
    """r = 1: the softmax over one projected key is 1, so o_i = V_bar = F v for every query (here the mean)."""
    q, k, v, _, _ = _case(1, l=4, r=1)
    E = np.ones((1, 4))
    F = np.full((1, 4), 0.25)  # exact in binary: V_bar = F v is the mean of the four values
    o = linformer_attention(q, k, v, E, F, view=view, backend=backend)
    mean = np.array([[math.fsum(v[0, :, hh, c]) / 4 for c in range(v.shape[3])] for hh in range(v.shape[2])])
    # the candidate: F v, a length-4 dot product (gamma_4 |F||v|), then the weight exp(0)/exp(0) = 1 exactly;
    # the oracle: fsum correctly rounded, the division by 4 exact (gamma_1 on the same magnitude)
    mag = np.broadcast_to(np.abs(v).mean(axis=1)[:, None], o.shape)
    bound = componentwise_bound(mag, 4, np.float64, oracle_depth=1, what="F v: a length-4 dot product")
    assert_within(o, np.broadcast_to(mean[None, None], o.shape), bound)


@pytest.mark.parametrize("view, backend", PAIRS)
@pytest.mark.parametrize("shared", [True, False])
def test_against_mpmath(view, backend, shared):
    q, k, v, E, F = _case(2, b=2, l=7, h=2, n=3, p=4, r=3, shared=shared)
    exact = linformer_mpmath(q, k, v, E, F, 0.6)
    o = linformer_attention(q, k, v, E, F, scale=0.6, view=view, backend=backend)
    tiles = 1 if view == "tiled" else 0  # r = 3 <= the default block_k = 64: one tile of projected keys
    assert_within(o, exact, linformer_bound(q, k, v, E, F, 0.6, key_tiles=tiles))


def test_scale_default_is_head_dim_not_r():
    """The paper's 1/sqrt(d_k): d_k = n (the per-head query/key dimension), not the projected length r."""
    q, k, v, E, F = _case(3, n=4, r=9)
    np.testing.assert_array_equal(linformer_attention(q, k, v, E, F), linformer_attention(q, k, v, E, F, scale=0.5))
    assert not np.allclose(linformer_attention(q, k, v, E, F), linformer_attention(q, k, v, E, F, scale=1 / 3))


def test_outputs_have_rank_at_most_r():
    """The paper's point: each head's (l x p) output is P_bar (l x r) times V_bar (r x p), rank <= r."""
    q, k, v, E, F = _case(4, l=12, h=2, n=4, p=6, r=2)
    o = linformer_attention(q, k, v, E, F)
    for hh in range(2):
        sv = np.linalg.svd(o[0, :, hh, :], compute_uv=False)
        # o = P_bar V_bar has rank <= r = 2 in exact arithmetic; the computed o is within gamma_(s+r+n) |P_bar||V_bar|
        # of it entrywise (P_bar >= 0), and the SVD's backward error is O(u ||o||): sv[2] is rounding, sv[1] is not
        o_h = o[0, :, hh, :]
        assert sv[2] <= gamma(12 + 2 + 4, np.float64) * np.linalg.norm(o_h) * math.sqrt(o_h.size)
        assert sv[1] > 1e-3 * sv[0]  # the second direction is really there (a rank-1 output would be a weak test)


def test_not_causal_a_future_key_moves_the_first_query():
    q, k, v, E, F = _case(5, l=6)
    k2 = k.copy()
    k2[:, -1] += 1.0
    o, o2 = linformer_attention(q, k, v, E, F), linformer_attention(q, k2, v, E, F)
    assert np.abs(o[:, 0] - o2[:, 0]).max() > 1e-3


@pytest.mark.parametrize("view, backend", PAIRS)
def test_empty_sizes(view, backend):
    q, k, v, E, F = _case(6, l=5, r=0)
    o = linformer_attention(q, k, v, E, F, view=view, backend=backend)
    assert o.shape == (1, 5, 2, 2) and np.all(o == 0)  # r = 0: nothing to attend to
    q, k, v, E, F = _case(6, l=0, r=3)
    assert linformer_attention(q, k, v, E, F, view=view, backend=backend).shape == (1, 0, 2, 2)


def test_float32_in_float32_out_and_mixed_is_float64():
    q, k, v, E, F = (a.astype(np.float32) for a in _case(7))
    for view, backend in PAIRS:
        assert linformer_attention(q, k, v, E, F, view=view, backend=backend).dtype == np.float32
        assert linformer_attention(q, k, v, E.astype(np.float64), F, view=view, backend=backend).dtype == np.float64


# ------------------------------------------------------------------ the layer and the paper's parameter sharing

def _selection_layer(seed=8, l=5, h=2, n=2, r=3):
    """x (1 l h*n) with exact selection projections: head i reads columns [i n, (i+1) n) as q = k = v, and W_O
    reverses the concatenation, so the layer's exact answer is the oracle's heads reversed."""
    rng = np.random.default_rng(seed)
    d = h * n
    x = rng.standard_normal((1, l, d))
    W = np.zeros((h, d, n))
    for i in range(h):
        W[i, i * n:(i + 1) * n, :] = np.eye(n)
    W_O = np.eye(d)[:, ::-1].copy()
    qkv = x.reshape(1, l, h, n)
    return x, W, W_O, qkv, rng


@pytest.mark.parametrize("sharing", SHARINGS)
def test_layer_sharing_against_mpmath(sharing):
    x, W, W_O, qkv, rng = _selection_layer()
    h, l, r = 2, 5, 3
    E = rng.standard_normal((h, r, l) if sharing == "none" else (r, l))
    F = None if sharing in ("key_value", "layerwise") else rng.standard_normal(E.shape)
    out = linformer_layer(x, W, W, W, W_O, E, F, sharing=sharing)
    F_used = E if F is None else F
    scale = 1 / math.sqrt(2)
    exact = linformer_mpmath(qkv, qkv, qkv, E, F_used, scale).reshape(1, l, 4)[..., ::-1]
    b = linformer_bound(qkv, qkv, qkv, E, F_used, scale)
    assert_within(out, exact, Bound(np.asarray(b.values).reshape(1, l, 4)[..., ::-1], b.source))


def test_sharing_levels_are_the_same_function_of_their_projections():
    """headwise (E, F) == none with (E, F) repeated per head; key_value E == headwise (E, E) == layerwise E."""
    x, W, W_O, qkv, rng = _selection_layer(9)
    E, F = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    rep = lambda A: np.ascontiguousarray(np.broadcast_to(A, (2, 3, 5)))  # noqa: E731
    head = linformer_layer(x, W, W, W, W_O, E, F, sharing="headwise")
    none = linformer_layer(x, W, W, W, W_O, rep(E), rep(F), sharing="none")
    b = linformer_bound(qkv, qkv, qkv, E, F, 1 / math.sqrt(2), oracle_dtype=np.float64)
    assert_within(none, head, Bound(np.asarray(b.values).reshape(1, 5, 4)[..., ::-1], b.source))
    kv = linformer_layer(x, W, W, W, W_O, E, sharing="key_value")
    np.testing.assert_array_equal(kv, linformer_layer(x, W, W, W, W_O, E, sharing="layerwise"))
    np.testing.assert_array_equal(kv, linformer_layer(x, W, W, W, W_O, E, E, sharing="headwise"))


def test_stack_shares_one_projection_across_layers():
    rng = np.random.default_rng(10)
    u, h, d, n, p, l, r = 3, 2, 4, 2, 2, 6, 3
    x = rng.standard_normal((2, l, d))
    W_Q, W_K = rng.standard_normal((u, h, d, n)), rng.standard_normal((u, h, d, n))
    W_V, W_O = rng.standard_normal((u, h, d, p)), rng.standard_normal((u, h * p, d)) * 0.3
    E = rng.standard_normal((r, l))
    out = linformer_stack(x, W_Q, W_K, W_V, W_O, E)
    y = x
    for t in range(u):  # x_{t+1} = x_t + layer_t(x_t), E_i = F_i = E in every layer (the definition, in order)
        y = y + linformer_layer(y, W_Q[t], W_K[t], W_V[t], W_O[t], E, sharing="layerwise")
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(linformer_stack(x, W_Q[:0], W_K[:0], W_V[:0], W_O[:0], E), x)  # u = 0


# ------------------------------------------------------------------ bad inputs (beyond the corpus)

def test_bad_inputs_name_the_argument():
    q, k, v, E, F = _case(11)
    with pytest.raises(ValueError, match="^F: "):
        linformer_attention(q, k, v, E, F[:, :2])  # another r
    with pytest.raises(ValueError, match="^E: "):
        linformer_attention(q, k, v, E[..., :-1], F)  # another length
    with pytest.raises(ValueError, match="^E: "):
        linformer_attention(q, k, v, E[None], F)
    with pytest.raises(ValueError, match="^block_q: "):
        linformer_attention(q, k, v, E, F, block_q=4)
    with pytest.raises(TypeError):
        linformer_attention(q, k, v, E, F, causal=True)  # no causal argument: the projection mixes the future
    x, W, W_O, qkv, rng = _selection_layer()
    with pytest.raises(ValueError, match="^E: "):
        linformer_layer(x, W, W, W, W_O, rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), sharing="none")
    with pytest.raises(ValueError, match="^E: "):
        linformer_layer(x, W, W, W, W_O, rng.standard_normal((2, 3, 5)), sharing="key_value")
    with pytest.raises(ValueError, match="^F: "):
        linformer_layer(x, W, W, W, W_O, rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), sharing="key_value")
    with pytest.raises(ValueError, match="^F: "):
        linformer_layer(x, W, W, W, W_O, rng.standard_normal((3, 5)), sharing="headwise")
    with pytest.raises(ValueError, match="^sharing: "):
        linformer_layer(x, W, W, W, W_O, rng.standard_normal((3, 5)), sharing="kv")


# ------------------------------------------------------------------ verify op and mutants

def test_verify_passes_our_views_and_the_mutant_corpus_is_complete():
    from oracles.mutants import all_mutants
    from oracles.verify import verify
    from refimpl.attention.linformer import linformer_attention

    for view, backend in PAIRS:
        fn = functools.partial(linformer_attention, view=view, backend=backend)
        rep = verify("attention.linformer", fn, adapter="refimpl", max_examples=4, candidate_name=f"{backend}/{view}")
        assert rep.passed, rep.deviations()
    names = {m.name for m in all_mutants("attention.linformer", kind="forward")}
    assert {"E-applied-to-queries", "F-skipped", "scale-sqrt-r", "transposed-projection-reshaped",
            "E-used-for-values"} <= names


@pytest.mark.parametrize("name", ["F-skipped", "scale-sqrt-r", "transposed-projection-applied-as-stored"])
def test_mutants_are_killed(name):
    from oracles.mutants import run_mutants

    (r,) = run_mutants("attention.linformer", names=[name])
    assert r.error is None, r.error
    assert r.killed, r.verdict
