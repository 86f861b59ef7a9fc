"""Linformer attention (Wang et al. 2020): the views/backends against the independent oracles, and the paper's
identities as properties.

* materialized (numpy) and tiled (numba: BLAS projections + the flash kernel) == the mpmath oracle (small cases) /
  the float64-fsum oracle (long ones) within :func:`oracles.linformer.linformer_bound` (the tiled view adds the
  online-softmax term over its ``ceil(r / block_k)`` key tiles), for ``L = 0`` (and ``r = 0``: zeros), 1, odd, long;
  per-head ``(h r l)`` and shared ``(r l)`` projections; float32 stays float32;
* ``E = F = I``, ``r = l``: exact softmax attention (``refimpl.attention.softmax.scaled_dot_product_attention``);
* a shared ``(r l)`` projection == that projection repeated per head ``(h r l)``.
"""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.linformer import linformer_bound, linformer_float64, linformer_mpmath
from oracles.tolerance import assert_within
from refimpl._fastmath import EXP_REL_ERR
from refimpl.attention.linformer import IMPLEMENTATIONS, linformer_attention
from refimpl.attention.softmax import scaled_dot_product_attention


@st.composite
def linformer_cases(draw, lengths=(0, 1, 2, 3, 5, 8), ranks=(0, 1, 2, 3, 5), dtype=np.float64):
    l = draw(st.sampled_from(lengths))
    r = draw(st.sampled_from(ranks))
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n, p = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shared_E, shared_F = draw(st.booleans()), draw(st.booleans())
    block_q, block_k = draw(st.integers(1, l + 1)), draw(st.integers(1, r + 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, k = rng.standard_normal((b, l, h, n)) * 1.5, rng.standard_normal((b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    # the paper's E, F: random projections with entries N(0, 1/r) (its Theorem 2; any real matrix is valid)
    E = rng.standard_normal((r, l) if shared_E else (h, r, l)) / math.sqrt(max(r, 1))
    F = rng.standard_normal((r, l) if shared_F else (h, r, l)) / math.sqrt(max(r, 1))
    return tuple(a.astype(dtype) for a in (q, k, v, E, F)) + (block_q, block_k)


def _views(q, k, v, E, F, block_q, block_k, **kw):
    out = {}
    for view, backend in IMPLEMENTATIONS.pairs():
        tiles = dict(block_q=block_q, block_k=block_k) if view == "tiled" else {}
        out[f"{backend}/{view}"] = (linformer_attention(q, k, v, E, F, view=view, backend=backend, **tiles, **kw),
                                    -(-E.shape[-2] // block_k) if view == "tiled" else 0)
    return out


@given(linformer_cases())
def test_views_match_the_mpmath_oracle(case):
    q, k, v, E, F, block_q, block_k = case
    scale = 0.7
    exact = linformer_mpmath(q, k, v, E, F, scale)
    for name, (o, tiles) in _views(q, k, v, E, F, block_q, block_k, scale=scale).items():
        assert o.shape == q.shape[:3] + (v.shape[3],) and o.dtype == np.float64, name
        assert_within(o, exact, linformer_bound(q, k, v, E, F, scale, key_tiles=tiles), context=name)
        if E.shape[-2] == 0:
            assert np.all(o == 0), name  # r = 0: nothing to attend to, zeros


@settings(max_examples=5)
@given(linformer_cases(lengths=(65, 130, 257), ranks=(16, 33, 64)))
def test_views_match_the_float64_oracle_long(case):
    q, k, v, E, F, block_q, block_k = case
    scale = 1 / math.sqrt(q.shape[3])
    exact = linformer_float64(q, k, v, E, F, scale)
    for name, (o, tiles) in _views(q, k, v, E, F, block_q, block_k).items():
        assert_within(o, exact, linformer_bound(q, k, v, E, F, scale, oracle_dtype=np.float64, key_tiles=tiles),
                      context=name)


@given(linformer_cases(dtype=np.float32))
def test_float32_stays_float32(case):
    q, k, v, E, F, block_q, block_k = case
    scale = 0.5  # exact in float32
    up = [a.astype(np.float64) for a in (q, k, v, E, F)]
    exact = linformer_mpmath(*up, scale)
    for name, (o, tiles) in _views(q, k, v, E, F, block_q, block_k, scale=scale).items():
        assert o.dtype == np.float32, name
        # the numba kernel's float32 exp is refimpl._fastmath's polynomial (relative error <= EXP_REL_ERR)
        e = EXP_REL_ERR if tiles else None
        assert_within(o, exact, linformer_bound(*up, scale, np.float32, exp_rel_err=e, key_tiles=tiles), context=name)


@given(linformer_cases(ranks=(0,)), st.integers(0, 2**32 - 1))
def test_identity_projection_is_exact_attention(case, seed):
    """E = F = I (r = l): K_bar = k, V_bar = v exactly, so Linformer is softmax attention."""
    q, k, v, _, _, block_q, block_k = case
    l = q.shape[1]
    I = np.eye(l)
    ref = scaled_dot_product_attention(q, k, v)
    scale = 1 / math.sqrt(q.shape[3])
    # the reference's own error is within the softmax bound over l keys, inside linformer_bound's float64 share
    # (its depth n + 2l + 5 >= n + l + 5)
    for shared in (True, False):
        E = I if shared else np.broadcast_to(I, (q.shape[2], l, l))
        for name, (o, tiles) in _views(q, k, v, E, E, block_q, max(block_k, 1)).items():
            bound = linformer_bound(q, k, v, E, E, scale, oracle_dtype=np.float64, key_tiles=tiles)
            assert_within(o, ref, bound, context=f"{name} shared={shared}")



@given(linformer_cases(lengths=(1, 3, 8), ranks=(1, 3)))
def test_shared_projection_equals_it_repeated_per_head(case):
    q, k, v, E, F, block_q, block_k = case
    h = q.shape[2]
    E2, F2 = (np.ascontiguousarray(np.broadcast_to(X, (h,) + X.shape[-2:])) if X.ndim == 2 else X for X in (E, F))
    scale = 1 / math.sqrt(q.shape[3])
    bound = linformer_bound(q, k, v, E, F, scale, oracle_dtype=np.float64)
    assert_within(linformer_attention(q, k, v, E2, F2), linformer_attention(q, k, v, E, F), bound)
