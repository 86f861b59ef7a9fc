"""AFT (Zhai et al. 2021): worked examples, the oracle at every variant/view, the paper's claims, dtypes and bad input.

Tolerances: :func:`oracles.aft.aft_bound` (derived in oracles/aft.py); golden values are exact fractions.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from oracles.aft import aft_bound, aft_fsum, aft_mpmath, paper_window
from oracles.tolerance import assert_within
from refimpl.attention.aft import IMPLEMENTATIONS, aft_attention

PAIRS = IMPLEMENTATIONS.pairs()
CASES = [("full", None, False), ("full", None, True), ("simple", None, False), ("simple", None, True),
         ("local", (1, 2), False), ("local", (2, 0), True), ("local", 0, False), ("local", (9, 9), False)]


def _problem(rng, b=2, l=6, d=3, k_scale=1.0):
    q, k, v = rng.standard_normal((b, l, d)), k_scale * rng.standard_normal((b, l, d)), rng.standard_normal((b, l, d))
    return q, k, v, rng.uniform(-2, 2, (l, l))


def _win(window, causal):
    if window is None or isinstance(window, tuple):
        return window
    return (window, 0) if causal else (window, window)


# ------------------------------------------------------------------ worked example (exact fractions)

def test_worked_example_simple_and_full():
    # q = 0 -> sigmoid = 1/2; K = (0, log 3): softmax weights (1/4, 3/4); V = (1, 5)
    q = np.zeros((1, 2, 1))
    k = np.array([0.0, math.log(3.0)]).reshape(1, 2, 1)
    v = np.array([1.0, 5.0]).reshape(1, 2, 1)
    for view, backend in PAIRS:
        y = aft_attention(q, k, v, variant="simple", view=view, backend=backend)
        # Y = 1/2 (1/4 * 1 + 3/4 * 5) = 2 at both positions
        np.testing.assert_allclose(y[0, :, 0], [2.0, 2.0], rtol=4e-16 * 8)
        y = aft_attention(q, k, v, variant="simple", causal=True, view=view, backend=backend)
        # causal: t = 0 sees only V_0 = 1
        np.testing.assert_allclose(y[0, :, 0], [0.5, 2.0], rtol=4e-16 * 8)
        # w_{0,1} = -log 3 cancels K_1: equal weights at t = 0 -> 1/2 (1 + 5)/2 = 3/2
        w = np.array([[0.0, -math.log(3.0)], [0.0, 0.0]])
        y = aft_attention(q, k, v, w, variant="full", view=view, backend=backend)
        np.testing.assert_allclose(y[0, :, 0], [1.5, 2.0], rtol=4e-16 * 8)


# ------------------------------------------------------------------ against the mpmath oracle

@pytest.mark.parametrize("variant,window,causal", CASES)
@pytest.mark.parametrize("view,backend", PAIRS)
def test_matches_mpmath_oracle(variant, window, causal, view, backend):
    rng = np.random.default_rng(zlib.crc32(f"{variant} {window} {causal}".encode()))
    q, k, v, w = _problem(rng)
    w = None if variant == "simple" else w
    win = _win(window, causal)
    y = aft_attention(q, k, v, w, variant=variant, causal=causal, window=window, view=view, backend=backend)
    ex = aft_mpmath(q, k, v, w, variant=variant, causal=causal, window=win)
    assert y.dtype == np.float64 and y.shape == q.shape
    assert_within(y, ex, aft_bound(q, k, v, w, variant=variant, causal=causal, window=win),
                  context=f"{variant} {window} causal={causal} {view}/{backend}")


@pytest.mark.parametrize("view,backend", PAIRS)
def test_float32_stays_float32_within_its_bound(view, backend):
    rng = np.random.default_rng(3)
    q, k, v, w = (a.astype(np.float32) for a in _problem(rng, l=9, d=4))
    for variant, window, causal in CASES:
        ww = None if variant == "simple" else w
        y = aft_attention(q, k, v, ww, variant=variant, causal=causal, window=window, view=view, backend=backend)
        assert y.dtype == np.float32
        win = _win(window, causal)
        assert_within(y, aft_mpmath(q, k, v, ww, variant=variant, causal=causal, window=win),
                      aft_bound(q, k, v, ww, variant=variant, causal=causal, window=win, dtype=np.float32))
    # one float64 input: the whole computation is float64 (no silent downcast)
    assert aft_attention(q, k, v.astype(np.float64), w, view=view, backend=backend).dtype == np.float64


@pytest.mark.parametrize("view,backend", PAIRS)
def test_large_keys_do_not_overflow(view, backend):
    # |K| ~ 1000: exp(K) overflows without the max subtraction; causal rows must not be underflowed by later keys
    rng = np.random.default_rng(4)
    q, k, v, w = _problem(rng, b=1, l=7, d=2, k_scale=1000.0)
    k[0, -1, :] = 3000.0  # the largest key comes last: a max over all keys would wipe out the earlier causal rows
    for variant, window, causal in CASES:
        ww = None if variant == "simple" else w
        y = aft_attention(q, k, v, ww, variant=variant, causal=causal, window=window, view=view, backend=backend)
        assert np.isfinite(y).all()
        win = _win(window, causal)
        assert_within(y, aft_mpmath(q, k, v, ww, variant=variant, causal=causal, window=win),
                      aft_bound(q, k, v, ww, variant=variant, causal=causal, window=win))


def test_long_sequence_against_fsum_oracle():
    rng = np.random.default_rng(5)
    q, k, v, w = _problem(rng, b=1, l=130, d=3)
    for variant, window, causal in (("local", (4, 4), False), ("local", (4, 0), True), ("simple", None, True),
                                    ("full", None, True)):
        ww = None if variant == "simple" else w
        ex = aft_fsum(q, k, v, ww, variant=variant, causal=causal, window=window)
        b = aft_bound(q, k, v, ww, variant=variant, causal=causal, window=window, oracle_dtype=np.float64)
        for view, backend in PAIRS:
            y = aft_attention(q, k, v, ww, variant=variant, causal=causal, window=window, view=view, backend=backend)
            assert_within(y, ex, b, context=f"{variant} causal={causal} {view}")


# ------------------------------------------------------------------ the paper's claims and conventions

@pytest.mark.parametrize("view,backend", PAIRS)
def test_local_keeps_global_connectivity(view, backend):
    # outside the window the bias is 0, not -inf: a key far outside still changes the output (unlike local attention)
    rng = np.random.default_rng(6)
    q, k, v, w = _problem(rng, b=1, l=12, d=2)
    y = aft_attention(q, k, v, w, variant="local", window=1, view=view, backend=backend)
    v2 = v.copy()
    v2[0, 11] += 10.0  # 11 positions away from t = 0, window 1
    y2 = aft_attention(q, k, v2, w, variant="local", window=1, view=view, backend=backend)
    assert abs(y2[0, 0, 0] - y[0, 0, 0]) > 1e-3
    # ... and the bias outside the window is ignored: w changed there leaves the output bit-identical
    w2 = w.copy()
    w2[0, 5:] += 3.0
    assert np.array_equal(aft_attention(q, k, v, w2, variant="local", window=1, view=view, backend=backend)[0, 0],
                          y[0, 0])


def test_paper_window_s_is_left_right_s_minus_one():
    rng = np.random.default_rng(7)
    q, k, v, w = _problem(rng, b=1, l=8, d=2)
    s = 3  # |t - t'| < 3 keeps t-2..t+2
    assert paper_window(s) == (2, 2)
    y = aft_attention(q, k, v, w, variant="local", window=(s - 1, s - 1))
    assert_within(y, aft_mpmath(q, k, v, w, variant="local", causal=False, window=paper_window(s)),
                  aft_bound(q, k, v, w, variant="local", causal=False, window=(2, 2)))
    # the int spelling w means (w, w); with causal it means (w, 0)
    assert np.array_equal(aft_attention(q, k, v, w, variant="local", window=2), y)
    assert np.array_equal(aft_attention(q, k, v, w, variant="local", window=2, causal=True),
                          aft_attention(q, k, v, w, variant="local", window=(2, 0), causal=True))


def test_empty_sequence():
    for view, backend in PAIRS:
        x = np.zeros((2, 0, 3))
        assert aft_attention(x, x, x, np.zeros((0, 0)), view=view, backend=backend).shape == (2, 0, 3)
        assert aft_attention(x, x, x, variant="simple", causal=True, view=view, backend=backend).shape == (2, 0, 3)


# ------------------------------------------------------------------ bad input

def test_bad_input_messages():
    x = np.zeros((1, 3, 2))
    w = np.zeros((3, 3))
    with pytest.raises(ValueError, match="^w: AFT-simple"):
        aft_attention(x, x, x, w, variant="simple")
    with pytest.raises(ValueError, match="^w: variant='full' needs"):
        aft_attention(x, x, x)
    with pytest.raises(ValueError, match="^window: variant='local' needs"):
        aft_attention(x, x, x, w, variant="local")
    with pytest.raises(ValueError, match="^window: only variant='local'"):
        aft_attention(x, x, x, w, window=2)
    with pytest.raises(ValueError, match="^window: causal=True"):
        aft_attention(x, x, x, w, variant="local", window=(1, 1), causal=True)
    with pytest.raises(ValueError, match=r"^w: expected shape \(3, 3\)"):
        aft_attention(x, x, x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="^v: expected shape"):
        aft_attention(x, x, np.zeros((1, 3, 4)), w)
    with pytest.raises(ValueError, match="^variant: expected one of"):
        aft_attention(x, x, x, w, variant="conv")
    with pytest.raises(TypeError, match="^causal"):
        aft_attention(x, x, x, w, causal="True")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_windowed_view_refuses_biases_beyond_its_exp_range(backend):
    """2 max|w| past the dtype's exp range would underflow the windowed view's largest term: refused by name,
    while the materialized view (a per-row max of the whole logit) still answers finitely."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 2))
    w = rng.standard_normal((6, 6)) * 400.0
    with pytest.raises(ValueError, match="^w: the windowed view needs 2 max"):
        aft_attention(x, x, x, w, variant="full", view="windowed", backend=backend)
    with pytest.raises(ValueError, match="^w: "):
        aft_attention(x.astype(np.float32), x.astype(np.float32), x.astype(np.float32), (w / 8).astype(np.float32),
                      variant="local", window=1, view="windowed", backend=backend)
    assert np.isfinite(aft_attention(x, x, x, w, variant="full", view="materialized")).all()
