"""The verify op ``attention.aft``: refimpl's views conform through their adapter, the well-known implementation's
two formulas are rejected, every AFT mutant is killed, and the window spellings (refimpl's (left, right), the
paper's s, labml's local_window_size) select the same keys."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from oracles.mutants import all_mutants, import_errors, run_mutants
from oracles.verify import verify
from refimpl.attention.aft import aft_attention

OP = "attention.aft"


def _sig(x):
    return 1 / (1 + np.exp(-x))


# -- candidates written as fast-transformers (idiap) computes AFT: its aft_attention.py, read from the source


def fast_transformers_causal_simple(q, k, v, w=None):
    """Its causal AFT-simple: ``Kexp / Kexp.cumsum(dim=1)`` (the prefix sum at the key), then the running sum of
    that times V."""
    M = k.max(axis=1, keepdims=True) if k.shape[1] else 0.0
    Kexp = np.exp(k - M)
    return _sig(q) * np.cumsum(Kexp / np.cumsum(Kexp, axis=1) * v, axis=1)


def fast_transformers_full(q, k, v, w=None):
    """Its AFT-full: the keys multiplied by the position bias, ``softmax_s(K_s * w_{t,s})``."""
    S = k[:, None, :, :] * w[None, :, :, None]  # (b t s d)
    if S.shape[1] == 0:
        return np.zeros_like(q)
    P = np.exp(S - S.max(axis=2, keepdims=True))
    return _sig(q) * np.einsum("btsd,bsd->btd", P / P.sum(axis=2, keepdims=True), v)


def test_the_well_known_causal_simple_is_rejected():
    rep = verify(OP, fast_transformers_causal_simple, conventions={"variant": "simple", "causal": True})
    assert not rep.passed
    assert any("exceeds its bound" in d for d in rep.deviations())


def test_the_well_known_full_is_rejected():
    rep = verify(OP, fast_transformers_full, conventions={"variant": "full"})
    assert not rep.passed
    assert any("exceeds its bound" in d for d in rep.deviations())


@pytest.mark.parametrize("conv", [{"variant": "full"}, {"variant": "simple", "causal": True},
                                  {"variant": "local", "window_left": 2, "window_right": 0},
                                  {"variant": "local", "causal": True, "window_left": 3}])
@pytest.mark.parametrize("view,backend", [("materialized", "numpy"), ("windowed", "numba")])
def test_refimpl_conforms(conv, view, backend):
    fn = functools.partial(aft_attention, view=view, backend=backend)
    rep = verify(OP, fn, adapter="refimpl", conventions=conv, dtype=["float64", "float32"])
    assert rep.passed, rep.deviations()[:3]


# the cheap ones that need a dedicated case (the window edges, the large key last); the whole corpus runs with
# ``refimpl mutants --op attention.aft`` (9 of 9 killed)
FAST = ["local-window-off-by-one", "local-minus-inf-outside-window", "causal-stabilizer-over-all-keys"]


def test_the_corpus_covers_the_issue_and_its_fast_subset_is_killed():
    assert "aft" not in import_errors()
    ms = all_mutants(OP, kind="forward")
    names = {m.name for m in ms}
    assert {"fast-transformers-causal-simple-key-side-prefix", "fast-transformers-full-exp-K-times-w",
            "local-window-off-by-one", "local-minus-inf-outside-window", "sigmoid-missing",
            "causal-sum-includes-next"} <= names
    for r in run_mutants(OP, names=FAST):
        assert r.error is None, (r.mutant.name, r.error)
        assert r.killed, f"{r.mutant.name} survived: {r.verdict}"


# -- the window spellings: "two keys on each side" in each adapter's words


def paper_spelling(q, k, v, w=None, *, variant, causal, s=None):
    """A candidate taking the paper's s: w'_{t,t'} = w_{t,t'} iff |t - t'| < s."""
    window = None if s is None else ((s - 1, 0) if causal else (s - 1, s - 1))
    return aft_attention(q, k, v, w, variant=variant, causal=causal, window=window)


def labml_spelling(query, key, value, pos_bias, *, local_window_size):
    """labml's layout (l b d) and local_window_size s, causal AFT-local."""
    y = aft_attention(np.swapaxes(query, 0, 1), np.swapaxes(key, 0, 1), np.swapaxes(value, 0, 1), pos_bias,
                      variant="local", causal=True, window=(local_window_size - 1, 0))
    return np.swapaxes(y, 0, 1)


def test_window_spellings_select_the_same_keys():
    from oracles.verify.adapters import get_adapter
    from oracles.verify.ops_aft import paper_s
    from oracles.verify.registry import get_op, infer_dims

    spec = get_op(OP)
    conv = spec.resolve_conventions({"variant": "local", "window_left": 2, "window_right": 2})
    rng = np.random.default_rng(0)
    x = spec.sample(rng, conv, l=9, b=1, d=2)
    dims = infer_dims(spec.inputs, x)
    assert paper_s(conv) == 3  # two keys on each side: |t - t'| < 3
    _, kw = get_adapter(OP, "refimpl").build_call(spec, x, conv, dims)
    assert kw["window"] == (2, 2)
    _, kw = get_adapter(OP, "paper_s").build_call(spec, x, conv, dims)
    assert kw["s"] == 3
    with pytest.raises(ValueError, match="window_left/window_right"):
        paper_s(dict(conv, window_right=1))  # an asymmetric window has no s
    for name, fn, c in (("paper_s", paper_spelling, {}), ("labml.aft_local", labml_spelling, {"causal": True})):
        rep = verify(OP, fn, adapter=name, conventions={"variant": "local", "window_left": 2, "window_right": 2, **c})
        assert rep.passed, (name, rep.deviations()[:3])
    # a candidate reading s as |t - t'| <= s (one key too many on each side) fails through the paper's spelling
    off = functools.partial(lambda q, k, v, w=None, *, variant, causal, s=None: paper_spelling(
        q, k, v, w, variant=variant, causal=causal, s=None if s is None else s + 1))
    assert not verify(OP, off, adapter="paper_s", conventions={"variant": "local", "window_left": 2,
                                                               "window_right": 2}).passed
