"""Property tests for AFT: the Numba kernel matches the reference for every L it accepts (0, 1, odd, long) and every
window (0, 1, >= L); AFT-local with a window covering everything is AFT-full; AFT-full with w = 0 is AFT-simple;
a causal output does not depend on later inputs; large |K|.

Every comparison is within the derived bound of :func:`oracles.aft.aft_bound`: two implementations each within
the bound of the exact value agree within twice it.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracles.aft import aft_bound
from oracles.tolerance import Bound, assert_within
from refimpl.attention.aft import IMPLEMENTATIONS, aft_attention

PAIRS = IMPLEMENTATIONS.pairs()

LENGTHS = st.sampled_from([0, 1, 2, 3, 5, 8, 17, 33, 64, 97])
DTYPES = st.sampled_from([np.float64, np.float32])


@st.composite
def problems(draw):
    l = draw(LENGTHS)
    b = draw(st.integers(1, 2))
    d = draw(st.integers(1, 5))
    variant = draw(st.sampled_from(["full", "simple", "local"]))
    causal = draw(st.booleans())
    window = None
    if variant == "local":
        left = draw(st.sampled_from([0, 1, 2, l, l + 3]))
        right = 0 if causal else draw(st.sampled_from([0, 1, 3, l, l + 2]))
        window = (left, right)
    seed = draw(st.integers(0, 2**32 - 1))
    k_scale = draw(st.sampled_from([1.0, 1.0, 30.0, 1000.0]))
    dtype = draw(DTYPES) if k_scale < 1000 else np.float64
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, d)).astype(dtype)
    k = (k_scale * rng.standard_normal((b, l, d))).astype(dtype)
    v = rng.standard_normal((b, l, d)).astype(dtype)
    w = None if variant == "simple" else rng.uniform(-3, 3, (l, l)).astype(dtype)
    return dict(q=q, k=k, v=v, w=w, variant=variant, causal=causal, window=window)


def _bound(pr, **over):
    p = dict(pr, **over)
    return aft_bound(p["q"], p["k"], p["v"], p["w"], variant=p["variant"], causal=p["causal"], window=p["window"],
                     dtype=p["q"].dtype)


def _run(pr, view="materialized", backend="numpy", **over):
    p = dict(pr, **over)
    return aft_attention(p["q"], p["k"], p["v"], p["w"], variant=p["variant"], causal=p["causal"],
                         window=p["window"], view=view, backend=backend)


@given(problems())
def test_views_and_kernel_match_the_reference(pr):
    ref = _run(pr)
    b = _bound(pr)
    for view, backend in PAIRS[1:]:
        out = _run(pr, view, backend)
        assert out.dtype == ref.dtype == pr["q"].dtype and out.shape == ref.shape
        assert np.isfinite(out).all()
        assert_within(out, ref, Bound(2 * np.asarray(b.values), "twice " + b.source),
                      context=f"{view}/{backend} vs materialized")


@given(problems())
def test_local_covering_everything_is_full(pr):
    if pr["w"] is None:
        return
    l = pr["q"].shape[1]
    full = dict(pr, variant="full", window=None)
    local = dict(pr, variant="local", window=(l, 0 if pr["causal"] else l))
    b = _bound(full)
    for view, backend in PAIRS:
        assert_within(_run(local, view, backend), _run(full, view, backend), Bound(2 * np.asarray(b.values), b.source))


@given(problems())
def test_full_with_zero_bias_is_simple(pr):
    simple = dict(pr, variant="simple", w=None, window=None)
    l = pr["q"].shape[1]
    full = dict(simple, variant="full", w=np.zeros((l, l), dtype=pr["q"].dtype))
    b = _bound(simple)
    for view, backend in PAIRS:
        assert_within(_run(full, view, backend), _run(simple, view, backend), Bound(2 * np.asarray(b.values), b.source))


@given(problems(), st.integers(0, 2**32 - 1))
def test_causal_output_ignores_later_inputs(pr, seed):
    pr = dict(pr, causal=True, window=None if pr["window"] is None else (pr["window"][0], 0))
    l = pr["q"].shape[1]
    if l < 2:
        return
    t0 = int(np.random.default_rng(seed).integers(1, l))
    rng = np.random.default_rng(seed)
    later = dict(pr)
    for nm in ("q", "k", "v"):
        x = pr[nm].copy()
        x[:, t0:] = (50.0 if nm == "k" else 1.0) * rng.standard_normal(x[:, t0:].shape)
        later[nm] = x.astype(pr[nm].dtype)
    if pr["w"] is not None:
        w = pr["w"].copy()
        w[t0:, :] = rng.uniform(-3, 3, w[t0:, :].shape)  # the rows of later queries
        later["w"] = w.astype(pr["w"].dtype)
    for view, backend in PAIRS:
        a, c = _run(pr, view, backend), _run(later, view, backend)
        # the same computation on the same earlier inputs: bit-identical, whatever the later keys are
        assert np.array_equal(a[:, :t0], c[:, :t0]), f"{view}: output before t0 = {t0} changed"
