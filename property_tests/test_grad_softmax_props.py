"""Properties of the softmax-attention backward (``scaled_dot_product_attention_vjp``) and the sparse one.

* the views and backends agree: materialized == tiled (NumPy, FlashAttention's backward written literally) ==
  tiled (Numba kernel) at L = 0, 1, odd, a tile -1 / +0 / +1, not a multiple of the tile, long (up to 130), lq != lk
  with both alignments, float64 and float32 -- within the sum of the two sides' derived bounds
  (:func:`oracles.softmax_grad_forward.softmax_vjp_bound`: each side deviates from the exact gradient by at most
  its own bound; ``key_tiles`` for a tiled side's online softmax);
* the adjoint identity ``<J t, w> = <t, J^T w>``: :func:`oracles.gradients.fd_jvp` of the float64 oracle forward
  against the pairing of our VJP with the tangent, within the differences' error plus ``sum |t| bound``;
* sparse: materialized == block_sparse (NumPy, Numba) for random windows and blocks, L = 0 .. 13.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.gradients import fd_jvp
from oracles.softmax_grad_forward import sdpa_forward, softmax_vjp_bound
from oracles.tolerance import Bound, assert_within
from refimpl.attention.softmax import scaled_dot_product_attention_vjp
from refimpl.attention.sparse import sliding_window_pattern, sparse_attention_vjp


def keep_of(l, s, alignment):
    if alignment is None:
        return None
    return np.arange(s)[None, :] <= np.arange(l)[:, None] + (0 if alignment == "top_left" else s - l)


@st.composite
def cases(draw, long=False):
    block_q, block_k = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    near = st.sampled_from([0, 1, 3, 5]) | st.builds(lambda t, d: max(t + d, 0), st.just(block_q), st.integers(-1, 1))
    l = draw(near | st.integers(60, 130)) if long else draw(near)
    s = draw(st.just(l) | st.sampled_from([0, 1, 4, 7]) | st.builds(lambda d: max(block_k + d, 0), st.integers(-1, 1)))
    alignment = draw(st.sampled_from([None, "top_left", "bottom_right"]))
    if alignment is None and l != s and draw(st.booleans()):
        alignment = "bottom_right"
    b, h, n, p = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrs = [rng.standard_normal(shape).astype(dtype) for shape in ((b, l, h, n), (b, s, h, n), (b, s, h, p),
                                                                   (b, l, h, p))]
    return (*arrs, alignment, block_q, block_k, dtype)


def _bound(q, k, v, do, alignment, dtype, key_tiles):
    n = q.shape[3]
    return softmax_vjp_bound(*(a.astype(np.float64) for a in (q, k, v)), do.astype(np.float64),
                             1 / np.sqrt(n), dtype, keep_of(q.shape[1], k.shape[1], alignment), key_tiles=key_tiles)


@given(cases(long=True))
def test_views_and_backends_agree(case):
    q, k, v, do, alignment, block_q, block_k, dtype = case
    kw = dict(do=do, causal=alignment is not None, alignment=alignment)
    mat = scaled_dot_product_attention_vjp(q, k, v, **kw)
    tiles = dict(view="tiled", block_q=block_q, block_k=block_k)
    T_c = -(-k.shape[1] // block_k)
    b_mat = _bound(q, k, v, do, alignment, dtype, 0)
    b_til = _bound(q, k, v, do, alignment, dtype, T_c)
    for backend in ("numpy", "numba"):
        g = scaled_dot_product_attention_vjp(q, k, v, backend=backend, **tiles, **kw)
        for nm in mat:
            assert g[nm].dtype == np.dtype(dtype) and g[nm].shape == mat[nm].shape
            assert_within(g[nm], mat[nm], b_mat[nm] + b_til[nm], dtype=dtype,
                          context=f"d{nm}: tiled {backend} vs materialized, {alignment}, tiles {block_q}x{block_k}")


@given(cases())
def test_adjoint_identity(case):
    q, k, v, do, alignment, block_q, block_k, dtype = case
    q, k, v, do = (a.astype(np.float64) for a in (q, k, v, do))
    x = {"q": q, "k": k, "v": v}
    rng = np.random.default_rng(q.size + 7 * k.size)
    t = {nm: rng.standard_normal(a.shape) for nm, a in x.items()}
    sc = 1 / np.sqrt(q.shape[3])
    keep = keep_of(q.shape[1], k.shape[1], alignment)
    val, err = fd_jvp(lambda a: {"o": sdpa_forward(a["q"], a["k"], a["v"], sc, keep)}, x, t, {"o": do})
    g = scaled_dot_product_attention_vjp(q, k, v, do=do, causal=alignment is not None, alignment=alignment,
                                         view="tiled", block_q=block_q, block_k=block_k)
    bd = _bound(q, k, v, do, alignment, np.float64, -(-k.shape[1] // block_k))
    ours = sum(float(np.sum(t[nm] * g[nm])) for nm in x)
    # the pairing itself: an m-term dot product, gamma_m sum |t g|
    m = sum(a.size for a in x.values())
    pairing = m * 2.0 ** -53 / (1 - m * 2.0 ** -53) * sum(float(np.sum(np.abs(t[nm] * g[nm]))) for nm in x)
    slack = sum(float(np.sum(np.abs(t[nm]) * bd[nm].values)) for nm in x) + pairing
    assert abs(ours - val) <= err + slack, (ours, val, err, slack)


@given(st.integers(0, 13), st.integers(0, 4), st.integers(0, 3), st.integers(1, 6), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_sparse_views_agree(l, left, right, block, causal, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, l, 2, 3)), rng.standard_normal((1, l, 2, 3))
    v, do = rng.standard_normal((1, l, 2, 2)), rng.standard_normal((1, l, 2, 2))
    window = (left, 0) if causal else (left, right)
    pattern = sliding_window_pattern(l, window, causal=causal)
    mat = sparse_attention_vjp(q, k, v, pattern, do=do)
    keep = pattern.mask()[None]  # the same pattern on both sides: only the arithmetic differs
    b0 = softmax_vjp_bound(q, k, v, do, 1 / np.sqrt(3), np.float64, keep)
    b1 = softmax_vjp_bound(q, k, v, do, 1 / np.sqrt(3), np.float64, keep, key_tiles=-(-l // block))
    for backend in ("numpy", "numba"):
        blk = sparse_attention_vjp(q, k, v, pattern, do=do, view="block_sparse", backend=backend, block=block)
        for nm in mat:
            assert_within(blk[nm], mat[nm], Bound(np.asarray(b0[nm].values) + b1[nm].values, b1[nm].source),
                          context=f"d{nm} block_sparse {backend} vs materialized, l={l}, window={window}, "
                                  f"block={block}")
