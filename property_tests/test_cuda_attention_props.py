"""Property tests of the attention CUDA kernels, run under the CUDA simulator in CI (``sim`` in every test id; on a
real device with ``REFIMPL_REAL_GPU=1``): random small shapes, lengths that are 0, 1, odd or not a multiple of the
chunk/tile, random block sizes and thread counts; each kernel within the reference view's derived bound of the
mpmath oracle.  Few examples (every simulated thread is a Python thread)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracles import attention as O
from oracles import sparse_attention as SA
from oracles.linformer import online_softmax_term
from oracles.tolerance import assert_within
from oracles.verify.ops_sparse import build_pattern

pytest.importorskip("numba.cuda")

from refimpl import _cuda  # noqa: E402
from refimpl.attention.delta.cuda import delta_chunked  # noqa: E402
from refimpl.attention.linear.cuda import causal_chunked  # noqa: E402
from refimpl.attention.softmax.cuda import flash_attention  # noqa: E402
from refimpl.attention.sparse.cuda import block_sparse_attention  # noqa: E402

WHERE = "sim" if _cuda.simulator() else "gpu"
FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
lengths = st.sampled_from([0, 1, 2, 5, 7, 9])
threads = st.sampled_from([4, 8, 16])


@pytest.mark.parametrize("where", [WHERE])
@FEW
@given(l=lengths, chunk=st.integers(1, 5), n=st.integers(1, 3), p=st.integers(1, 3), normalize=st.booleans(),
       layout=st.sampled_from(["vk", "kv"]), tpb=threads, seed=st.integers(0, 2 ** 16))
def test_cuda_linear_chunked_within_bound(where, l, chunk, n, p, normalize, layout, tpb, seed):
    rng = np.random.default_rng(seed)
    pq, pk = rng.uniform(0.05, 1, (1, l, 2, n)), rng.uniform(0.05, 1, (1, l, 2, n))
    v = rng.standard_normal((1, l, 2, p))
    S0, z0 = rng.standard_normal((1, 2, p, n)), rng.uniform(0.1, 1, (1, 2, n))
    eps = 0.1 if normalize else 0.0
    Sg = S0 if layout == "vk" else np.swapaxes(S0, -1, -2)
    o = causal_chunked(pq, pk, v, normalize=normalize, eps=eps, state_layout=layout,
                       initial_state=(Sg, z0) if normalize else Sg, chunk=chunk, threads_per_block=tpb)
    exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
    assert_within(o, exact, O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps,
                                                     S0=S0, u0=z0), context=f"cuda linear ({where})")


@pytest.mark.parametrize("where", [WHERE])
@FEW
@given(l=lengths, chunk=st.integers(1, 5), gated=st.booleans(), tpb=threads, seed=st.integers(0, 2 ** 16))
def test_cuda_delta_chunked_within_bound(where, l, chunk, gated, tpb, seed):
    rng = np.random.default_rng(seed)
    n, p = 3, 2
    q, k = rng.standard_normal((1, l, 2, n)), rng.standard_normal((1, l, 2, n))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v, beta = rng.standard_normal((1, l, 2, p)), rng.uniform(0, 1, (1, l, 2))
    S0 = rng.standard_normal((1, 2, p, n))
    decay = rng.uniform(0.5, 1.0, (1, l, 2)) if gated else None
    o = delta_chunked(q, k, v, beta, decay=decay, initial_state=S0, chunk=chunk, threads_per_block=tpb)
    o_ex, _ = O.delta_rule_mpmath(q, k, v, beta, decay, S0)
    assert_within(o, o_ex, O.delta_rule_bound(q, k, v, beta, decay, S0, view="chunked", chunk=chunk),
                  context=f"cuda delta ({where})")


@pytest.mark.parametrize("where", [WHERE])
@FEW
@given(l=lengths, s=lengths, alignment=st.sampled_from([None, "top_left", "bottom_right"]),
       block_q=st.integers(1, 4), block_k=st.integers(1, 5), tpb=threads, seed=st.integers(0, 2 ** 16))
def test_cuda_tiled_softmax_within_bound(where, l, s, alignment, block_q, block_k, tpb, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, l, 1, 3)) * 1.5, rng.standard_normal((1, s, 1, 3)) * 1.5
    v = rng.standard_normal((1, s, 1, 2))
    keep = O.keep_mask(l, s, alignment)[None, None]
    o = flash_attention(q, k, v, scale=0.7, causal=alignment is not None, alignment=alignment, block_q=block_q,
                        block_k=block_k, threads_per_block=tpb)
    exact = O.sdpa_mpmath(q, k, v, 0.7, keep)
    _, P = O.sdpa_float64(q, k, v, 0.7, keep)
    sc = np.where(keep, 0.7 * np.einsum("bihd,bjhd->bhij", q, k), -np.inf)
    m = np.max(sc, axis=-1, keepdims=True, initial=-np.inf)
    spread = np.max(np.where(keep, np.abs(sc - np.where(np.isfinite(m), m, 0.0)), 0.0), axis=-1, initial=0.0)
    bound = (O.softmax_attention_bound(q, k, v, 0.7, keep, oracle_dtype=None)
             + online_softmax_term(np.einsum("bhij,bjhe->bihe", P, np.abs(v)), spread, max(1, -(-s // block_k))))
    assert_within(o, exact, bound, context=f"cuda tiled softmax ({where})")


@pytest.mark.parametrize("where", [WHERE])
@FEW
@given(l=st.sampled_from([1, 5, 9]), kind=st.sampled_from(["sliding_window", "longformer", "strided", "fixed"]),
       block=st.integers(1, 4), tile_q=st.integers(1, 4), tile_k=st.integers(1, 4), tpb=threads,
       seed=st.integers(0, 2 ** 16))
def test_cuda_block_sparse_within_bound(where, l, kind, block, tile_q, tile_k, tpb, seed):
    params = {"sliding_window": dict(window=(2, 1)), "longformer": dict(window=1, global_tokens=(0,)),
              "strided": dict(stride=2, causal=True), "fixed": dict(stride=3, causal=False)}[kind]
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, l, 1, 3)) for _ in range(3))
    sets = SA.pattern_sets(kind, l, **params)
    o = block_sparse_attention(q, k, v, build_pattern(kind, l, params), block=block, tile_q=tile_q,
                               tile_k=tile_k, threads_per_block=tpb)
    assert_within(o, SA.sparse_attention_mpmath(q, k, v, sets),
                  SA.sparse_attention_bound(q, k, v, sets, oracle_dtype=None), context=f"cuda block-sparse ({where})")
