"""The numba.cuda attention kernels (chunked linear attention, chunked (gated) delta rule, tiled softmax,
block-sparse), under the CUDA simulator in CI (``NUMBA_ENABLE_CUDASIM=1``, set by the root conftest; NumPy arrays,
small shapes, every thread a Python thread) or on a real GPU (``REFIMPL_REAL_GPU=1``; the ``gpu`` tests on CuPy
arrays).  Each kernel is matched to the mpmath oracle within the reference view's derived bound."""
import os

import numpy as np
import pytest

from oracles import attention as O
from oracles import sparse_attention as SA
from oracles.linformer import online_softmax_term
from oracles.tolerance import Bound, assert_within, componentwise_bound, gamma
from oracles.verify.ops_sparse import build_pattern

cuda = pytest.importorskip("numba.cuda")

from refimpl import _cuda  # noqa: E402
from refimpl.attention.delta import delta_rule  # noqa: E402
from refimpl.attention.delta.cuda import delta_chunked  # noqa: E402
from refimpl.attention.linear import linear_attention  # noqa: E402
from refimpl.attention.linear.cuda import causal_chunked  # noqa: E402
from refimpl.attention.softmax import scaled_dot_product_attention  # noqa: E402
from refimpl.attention.softmax.cuda import flash_attention  # noqa: E402
from refimpl.attention.sparse import sparse_attention  # noqa: E402
from refimpl.attention.sparse.cuda import block_sparse_attention  # noqa: E402

WHERE = "sim" if _cuda.simulator() else "gpu"  # in every test id: where the kernels ran


def _real_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        import cupy  # noqa: F401

        return cuda.is_available()
    except Exception:
        return False


# ------------------------------------------------------------------ chunked linear attention

def _linear_case(seed, l, b=1, h=2, n=3, p=2):
    rng = np.random.default_rng(seed)
    pq, pk = rng.uniform(0.05, 1, (b, l, h, n)), rng.uniform(0.05, 1, (b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    S0, z0 = rng.standard_normal((b, h, p, n)), rng.uniform(0.1, 1, (b, h, n))
    return pq, pk, v, S0, z0


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("l,chunk", [(0, 3), (1, 3), (7, 3), (8, 4)])
@pytest.mark.parametrize("normalize", [True, False])
def test_cuda_linear_chunked_matches_oracle(where, l, chunk, normalize):
    """L = 0, 1, odd and not a multiple of the chunk, a multiple; initial and final state; both layouts."""
    pq, pk, v, S0, z0 = _linear_case(l, l)
    eps = 0.1 if normalize else 0.0
    exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
    bound = O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
    S_L = S0 + np.einsum("blhp,blhn->bhpn", v, pk)
    for layout in ("vk", "kv"):
        Sg = S0 if layout == "vk" else np.swapaxes(S0, -1, -2)
        state = (Sg, z0) if normalize else Sg
        o, fin = causal_chunked(pq, pk, v, normalize=normalize, eps=eps, state_layout=layout, initial_state=state,
                                return_final_state=True, chunk=chunk, threads_per_block=8)
        assert_within(o, exact, bound, context=f"cuda linear chunked ({where}), layout {layout}")
        S_f = fin[0] if normalize else fin
        assert S_f.shape == Sg.shape  # the final state in the caller's layout
        # the final state: S_0 + sum_j v_j phi(k_j)^T, each entry one product and l additions (depth l + 1)
        Sb = componentwise_bound(np.abs(S0) + np.einsum("blhp,blhn->bhpn", np.abs(v), pk), l + 1, np.float64)
        assert_within(S_f if layout == "vk" else np.swapaxes(S_f, -1, -2), S_L, Sb, context="final S")
        if normalize:
            assert_within(fin[1], z0 + pk.sum(axis=1),
                          componentwise_bound(z0 + pk.sum(axis=1), l + 1, np.float64), context="final z")


@pytest.mark.parametrize("where", [WHERE])
def test_cuda_linear_entry_point_clamp_float32(where):
    """The entry point's (chunked, cuda) pair; eps_mode='clamp'; float32 in, float32 out (its own bound)."""
    pq, pk, v, S0, z0 = (a.astype(np.float32) for a in _linear_case(5, 5, b=1, h=1))
    up = [a.astype(np.float64) for a in (pq, pk, v, S0, z0)]
    exact = O.linear_attention_mpmath(*up[:3], causal=True, normalize=True, eps=0.5, eps_mode="clamp", S0=up[3],
                                      u0=up[4])
    bound = O.linear_attention_bound(*up[:3], exact, causal=True, normalize=True, eps=0.5, eps_mode="clamp",
                                     S0=up[3], u0=up[4], dtype=np.float32)
    o = linear_attention(pq, pk, v, view="chunked", backend="cuda", eps=0.5, eps_mode="clamp",
                         initial_state=(S0, z0), chunk=2)
    assert o.dtype == np.float32
    assert_within(o, exact, bound, context=f"cuda linear entry point ({where}) float32")


def test_cuda_linear_refuses_what_it_cannot_take():
    pq, pk, v, S0, z0 = _linear_case(0, 4)
    with pytest.raises(ValueError, match=r"chunk: the cuda kernel keeps .* expected at most 49152 bytes, got"):
        causal_chunked(np.ones((1, 200, 1, 64)), np.ones((1, 200, 1, 64)), np.ones((1, 200, 1, 1)), chunk=128)
    with pytest.raises(ValueError, match="causal: the 'chunked' view is causal"):
        causal_chunked(pq, pk, v, causal=False)
    with pytest.raises(ValueError, match="threads_per_block"):
        causal_chunked(pq, pk, v, threads_per_block=0)
    with pytest.raises(TypeError, match="initial_state: expected the pair"):
        causal_chunked(pq, pk, v, initial_state=S0)


class _FakeDevice:
    """Something that looks like a device array (``__cuda_array_interface__``) to the placement check."""
    __cuda_array_interface__ = {}
    shape = (1, 2, 1, 2)
    dtype = np.dtype(np.float64)


def test_cuda_kernels_refuse_a_host_device_mix():
    x = np.ones((1, 2, 1, 2))
    with pytest.raises(TypeError, match="phi_k: expected a host \\(NumPy\\) array like phi_q, got a device"):
        causal_chunked(x, _FakeDevice(), x)
    with pytest.raises(TypeError, match="v: expected a host \\(NumPy\\) array like q, got a device"):
        delta_chunked(x, x, _FakeDevice(), np.ones((1, 2, 1)))
    with pytest.raises(TypeError, match="k: expected a host \\(NumPy\\) array like q, got a device"):
        flash_attention(x, _FakeDevice(), x)
    from refimpl.attention.sparse import sliding_window_pattern

    with pytest.raises(TypeError, match="k: expected a host \\(NumPy\\) array like q, got a device"):
        block_sparse_attention(x, _FakeDevice(), x, sliding_window_pattern(2, 1))


# ------------------------------------------------------------------ chunked (gated) delta rule

def _delta_case(seed, l, b=1, h=2, n=3, p=2):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, h, n))
    k = rng.standard_normal((b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    beta = rng.uniform(0, 1, (b, l, h))
    S0 = rng.standard_normal((b, h, p, n))
    decay = rng.uniform(0.6, 1.0, (b, l, h))
    return q, k, v, beta, S0, decay


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("l,chunk", [(0, 3), (1, 3), (7, 3), (6, 2)])
@pytest.mark.parametrize("gated", [False, True])
def test_cuda_delta_chunked_matches_oracle(where, l, chunk, gated):
    """Plain and gated, L = 0, 1, odd / not a multiple of the chunk; l2 key norm in the kernel's input path."""
    q, k, v, beta, S0, decay = _delta_case(10 + l, l)
    dec = decay if gated else None
    o_ex, S_ex = O.delta_rule_mpmath(q, k, v, beta, dec, S0, key_norm="l2", scale=0.5)
    bo, bS = O.delta_rule_bound(0.5 * q, k, v, beta, dec, S0, view="chunked", chunk=chunk, key_norm="l2",
                                state=True, extra_local=2 * (3 + 2))
    o, S = delta_chunked(q, k, v, beta, decay=dec, initial_state=S0, key_norm="l2", scale=0.5,
                         return_final_state=True, chunk=chunk, threads_per_block=8)
    assert_within(o, o_ex, bo, context=f"cuda delta chunked ({where}), gated={gated}")
    assert_within(S, S_ex, bS, context=f"cuda delta final state ({where})")


@pytest.mark.parametrize("where", [WHERE])
def test_cuda_delta_entry_point_float32(where):
    q, k, v, beta, S0, decay = (a.astype(np.float32) for a in _delta_case(3, 5, h=1))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    up = [a.astype(np.float64) for a in (q, k, v, beta, S0, decay)]
    o_ex, _ = O.delta_rule_mpmath(up[0], up[1], up[2], up[3], up[5], up[4])
    bo = O.delta_rule_bound(up[0], up[1], up[2], up[3], up[5], up[4], view="chunked", chunk=2, dtype=np.float32)
    o = delta_rule(q, k, v, beta, decay=decay, initial_state=S0, view="chunked", backend="cuda", chunk=2)
    assert o.dtype == np.float32
    assert_within(o, o_ex, bo, context=f"cuda delta entry point ({where}) float32")


def test_cuda_delta_refuses_what_it_cannot_take():
    q, k, v, beta, S0, decay = _delta_case(0, 3)
    with pytest.raises(ValueError, match="decay: expected values in \\(0, 1\\]"):
        delta_chunked(q, k, v, beta, decay=decay * 2)
    with pytest.raises(ValueError, match=r"chunk: the cuda kernel keeps .* expected at most 49152 bytes"):
        delta_chunked(np.ones((1, 100, 1, 64)), np.ones((1, 100, 1, 64)), np.ones((1, 100, 1, 64)),
                      np.ones((1, 100, 1)), chunk=64)
    with pytest.raises(ValueError, match="key_norm: expected one of None, 'sum', 'l2'"):
        delta_chunked(q, k, v, beta, key_norm="l1")


# ------------------------------------------------------------------ tiled softmax

def _sdpa_bound(q, k, v, scale, keep, block_k, dtype=np.float64):
    _, P = O.sdpa_float64(q, k, v, scale, keep)
    sc = np.where(keep, scale * np.einsum("bihd,bjhd->bhij", q, k), -np.inf)
    m = np.max(sc, axis=-1, keepdims=True) if sc.shape[-1] else np.zeros(sc.shape[:-1] + (1,))
    spread = np.max(np.where(keep, np.abs(sc - np.where(np.isfinite(m), m, 0.0)), 0.0), axis=-1,
                    initial=0.0)
    tiles = max(1, -(-k.shape[1] // block_k))
    return (O.softmax_attention_bound(q, k, v, scale, keep, dtype=dtype, oracle_dtype=None)
            + online_softmax_term(np.einsum("bhij,bjhe->bihe", P, np.abs(v)), spread, tiles, dtype))


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("l,s,alignment", [(7, 10, None), (7, 10, "top_left"), (7, 10, "bottom_right"),
                                           (10, 7, "bottom_right"), (1, 1, "top_left"), (0, 3, None), (3, 0, None)])
def test_cuda_tiled_softmax_matches_oracle(where, l, s, alignment):
    """Tiles that do not divide l or s, l != s, both alignments (bottom_right with l > s: fully masked rows)."""
    rng = np.random.default_rng(l * 31 + s)
    q = rng.standard_normal((1, l, 1, 4)) * 1.5
    k, v = rng.standard_normal((1, s, 1, 4)) * 1.5, rng.standard_normal((1, s, 1, 3))
    keep = O.keep_mask(l, s, alignment)[None, None]
    exact = O.sdpa_mpmath(q, k, v, 0.5, keep)
    o, lse = flash_attention(q, k, v, scale=0.5, causal=alignment is not None, alignment=alignment, block_q=3,
                             block_k=4, return_lse=True, threads_per_block=8)
    assert_within(o, exact, _sdpa_bound(q, k, v, 0.5, keep, 4), context=f"cuda tiled softmax ({where})")
    # the log-sum-exp: the materialized view's (-inf on fully masked rows); lse_i = m_i + log l_i, l_i a sum of
    # at most s exponentials -- relative error of l_i <= gamma(s + 2), so |err lse| <= gamma(s + 2) + u |lse|
    _, lse_ref = scaled_dot_product_attention(q, k, v, scale=0.5, causal=alignment is not None, alignment=alignment,
                                              return_lse=True)
    assert np.array_equal(np.isneginf(lse), np.isneginf(lse_ref))
    fin = np.isfinite(lse_ref)
    tol = 2 * (gamma(s + 4, np.float64) * (1 + np.abs(lse_ref[fin])))
    assert_within(lse[fin], lse_ref[fin], Bound(tol, "lse: gamma(s + 4) (1 + |lse|), both sides"),
                  context="lse")


@pytest.mark.parametrize("where", [WHERE])
def test_cuda_tiled_softmax_entry_point_float32(where):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 6, 1, 3)).astype(np.float32) for _ in range(3))
    up = [a.astype(np.float64) for a in (q, k, v)]
    keep = O.keep_mask(6, 6, "top_left")[None, None]
    exact = O.sdpa_mpmath(*up, 3 ** -0.5, keep)
    o = scaled_dot_product_attention(q, k, v, causal=True, view="tiled", backend="cuda", block_q=4, block_k=4)
    assert o.dtype == np.float32
    assert_within(o, exact, _sdpa_bound(*up, 3 ** -0.5, keep, 4, dtype=np.float32),
                  context=f"cuda tiled entry point ({where}) float32")


def test_cuda_tiled_softmax_refuses_what_it_cannot_take():
    x = np.ones((1, 3, 1, 2))
    with pytest.raises(ValueError, match="alignment"):
        flash_attention(x, np.ones((1, 4, 1, 2)), np.ones((1, 4, 1, 2)), causal=True)
    with pytest.raises(ValueError, match=r"block_k: the cuda kernel keeps .* expected at most 49152 bytes"):
        flash_attention(np.ones((1, 64, 1, 128)), np.ones((1, 64, 1, 128)), np.ones((1, 64, 1, 128)),
                        block_q=64, block_k=64)
    with pytest.raises(ValueError, match="mask: only the 'materialized' view supports it"):
        scaled_dot_product_attention(x, x, x, view="tiled", backend="cuda", mask=np.ones((3, 3), bool))


# ------------------------------------------------------------------ block-sparse

SPARSE_CASES = [("sliding_window", dict(window=(3, 2)), 2), ("longformer",
                dict(window=(1, 1), dilation=(1, 2), global_tokens=(0, 7)), 2),
                ("strided", dict(stride=3, causal=True), 1), ("bigbird", dict(block=3, seed=1, heads=1), 1)]


@pytest.mark.parametrize("where", [WHERE])
@pytest.mark.parametrize("kind,params,h", SPARSE_CASES, ids=[c[0] for c in SPARSE_CASES])
def test_cuda_block_sparse_matches_oracle(where, kind, params, h):
    """Every pattern through its block layout (full tiles and in-block masks), l = 11 (the last block short)."""
    l = 11
    rng = np.random.default_rng(len(kind))
    q, k = rng.standard_normal((1, l, h, 4)) * 1.5, rng.standard_normal((1, l, h, 4)) * 1.5
    v = rng.standard_normal((1, l, h, 3))
    sets = SA.pattern_sets(kind, l, **params)
    exact = SA.sparse_attention_mpmath(q, k, v, sets)
    bound = SA.sparse_attention_bound(q, k, v, sets, oracle_dtype=None)
    pattern = build_pattern(kind, l, params)
    block = None if kind == "bigbird" else 4
    o = block_sparse_attention(q, k, v, pattern, block=block, threads_per_block=8)
    assert_within(o, exact, bound, context=f"cuda block-sparse {kind} ({where})")
    if kind == "longformer":  # sub-tiles that do not divide the layout block (3 query rows by 2 keys of 4)
        o = block_sparse_attention(q, k, v, pattern, block=4, tile_q=3, tile_k=2, threads_per_block=8)
        assert_within(o, exact, bound, context=f"cuda block-sparse {kind}, sub-tiles 3 x 2 ({where})")


@pytest.mark.parametrize("where", [WHERE])
def test_cuda_block_sparse_entry_point_float32_and_empty(where):
    from refimpl.attention.sparse import sliding_window_pattern

    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 5, 1, 2)).astype(np.float32) for _ in range(3))
    pat = sliding_window_pattern(5, (1, 0), causal=True)
    up = [a.astype(np.float64) for a in (q, k, v)]
    sets = SA.pattern_sets("sliding_window", 5, window=(1, 0), causal=True)
    exact = SA.sparse_attention_mpmath(*up, sets)
    o = sparse_attention(q, k, v, pat, view="block_sparse", backend="cuda", block=2)
    assert o.dtype == np.float32
    assert_within(o, exact, SA.sparse_attention_bound(*up, sets, dtype=np.float32, oracle_dtype=None),
                  context=f"cuda sparse entry point ({where}) float32")
    # a pattern with no kept pair at all: o = 0
    empty = sliding_window_pattern(0, 0)
    assert block_sparse_attention(np.ones((1, 0, 1, 2)), np.ones((1, 0, 1, 2)), np.ones((1, 0, 1, 2)),
                                  empty).shape == (1, 0, 1, 2)


def test_cuda_block_sparse_refuses_what_it_cannot_take():
    from refimpl.attention.sparse import sliding_window_pattern

    x = np.ones((1, 4, 1, 2))
    with pytest.raises(ValueError, match="pattern: expected a pattern over l = 4"):
        block_sparse_attention(x, x, x, sliding_window_pattern(5, 1))
    y = np.ones((1, 64, 1, 64))
    with pytest.raises(ValueError, match=r"tile_k: the cuda kernel keeps .* expected at most 49152 bytes"):
        block_sparse_attention(y, y, y, sliding_window_pattern(64, 1), block=64, tile_q=64, tile_k=64)
    with pytest.raises(ValueError, match="tile_q"):
        block_sparse_attention(x, x, x, sliding_window_pattern(4, 1), tile_q=0)
    with pytest.raises(ValueError, match="block_layout: expected pattern.block_layout"):
        block_sparse_attention(x, x, x, sliding_window_pattern(4, 1), block=2,
                               block_layout=sliding_window_pattern(4, 1).block_layout(4))


# ------------------------------------------------------------------ real device: CuPy in, CuPy out

@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs CuPy and a real CUDA device (REFIMPL_REAL_GPU=1)")
def test_cuda_attention_on_cupy_arrays_stays_on_device():
    """CuPy in, CuPy out, on the device; each result within the same derived bound as the simulator tests."""
    import cupy as cp

    d = cp.asarray
    # linear attention, normalized, with the initial state; chunk 4 over l = 13
    pq, pk, v, S0, z0 = _linear_case(1, 13)
    exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=True, eps=0.1, S0=S0, u0=z0)
    o, (S, z) = causal_chunked(d(pq), d(pk), d(v), eps=0.1, initial_state=(d(S0), d(z0)), return_final_state=True,
                               chunk=4)
    assert isinstance(o, cp.ndarray) and isinstance(S, cp.ndarray) and isinstance(z, cp.ndarray)
    assert_within(cp.asnumpy(o), exact, O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=True,
                                                                 eps=0.1, S0=S0, u0=z0), context="gpu linear")
    # gated delta rule, l2 key norm on the device
    q, k, v, beta, S0, decay = _delta_case(2, 9)
    o_ex, _ = O.delta_rule_mpmath(q, k, v, beta, decay, S0, key_norm="l2")
    o = delta_chunked(d(q), d(k), d(v), d(beta), decay=d(decay), initial_state=d(S0), key_norm="l2", chunk=4)
    assert isinstance(o, cp.ndarray)
    assert_within(cp.asnumpy(o), o_ex, O.delta_rule_bound(q, k, v, beta, decay, S0, view="chunked", chunk=4,
                                                          key_norm="l2", extra_local=2 * (3 + 2)),
                  context="gpu delta")
    # tiled softmax, bottom_right with l > s
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((1, 10, 2, 4)), rng.standard_normal((1, 7, 2, 4)), rng.standard_normal((1, 7, 2, 3))
    keep = O.keep_mask(10, 7, "bottom_right")[None, None]
    o, lse = flash_attention(d(q), d(k), d(v), scale=0.5, causal=True, alignment="bottom_right", block_q=4,
                             block_k=4, return_lse=True)
    assert isinstance(o, cp.ndarray) and isinstance(lse, cp.ndarray)
    assert_within(cp.asnumpy(o), O.sdpa_mpmath(q, k, v, 0.5, keep), _sdpa_bound(q, k, v, 0.5, keep, 4),
                  context="gpu tiled softmax")
    # block-sparse, longformer
    kind, params, h = SPARSE_CASES[1]
    q, k, v = (rng.standard_normal((1, 11, h, 4)) for _ in range(3))
    sets = SA.pattern_sets(kind, 11, **params)
    o = block_sparse_attention(d(q), d(k), d(v), build_pattern(kind, 11, params), block=4)
    assert isinstance(o, cp.ndarray)
    assert_within(cp.asnumpy(o), SA.sparse_attention_mpmath(q, k, v, sets),
                  SA.sparse_attention_bound(q, k, v, sets, oracle_dtype=None), context="gpu block-sparse")
