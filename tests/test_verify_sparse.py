"""verify op ``attention.sparse``: the window spellings (each spelling of "three keys on each side" selects the same
keys through its adapter's own conversion; a candidate written in each spelling conforms; the classic misreadings do
not), refimpl's views conform under every pattern kind and the edge conventions, the CLI, and the mutant corpus."""
import numpy as np
import pytest

from oracles import sparse_attention as SA
from oracles.mutants import all_mutants
from oracles.verify import verify
from oracles.verify.adapters import get_adapter
from oracles.verify.ops_sparse import OP, SPELLINGS, WINDOW_SPELLINGS, spelled_window
from oracles.verify.registry import get_op, infer_dims

L = 12


def _told(adapter, conv):
    """The keyword arguments the adapter passes for the claimed conventions (its own conversion)."""
    spec = get_op(OP)
    full = spec.resolve_conventions({**conv, **get_adapter(OP, adapter).implies})
    x = spec.sample(np.random.default_rng(0), full, l=L, b=1)
    _, kwargs = get_adapter(OP, adapter).build_call(spec, x, full, infer_dims(spec.inputs, x))
    return kwargs


ADAPTERS = {"left_right": ("flash_attn.window_size", "window_size"), "fla": ("fla.window_size", "window_size"),
            "xformers": ("xformers.window_size", "window_size"),
            "longformer": ("longformer.attention_window", "attention_window"),
            "hf_longformer": ("hf_longformer.attention_window", "attention_window")}


@pytest.mark.parametrize("spelling", ["left_right", "xformers", "longformer", "hf_longformer"])
def test_three_keys_on_each_side_in_every_spelling(spelling):
    adapter, kw = ADAPTERS[spelling]
    value = _told(adapter, {"window_left": 3, "window_right": 3, "causal": False})[kw]
    assert value == {"left_right": (3, 3), "xformers": 7, "longformer": 3, "hf_longformer": 6}[spelling]
    want = SA.sliding_window_sets(L, (3, 3))[0]
    got = [WINDOW_SPELLINGS[spelling].keys(value, i, L, False) for i in range(L)]
    assert got == want
    assert len(got[6]) == 7  # three on each side and the token


@pytest.mark.parametrize("spelling", ["left_right", "fla", "xformers", "longformer"])
def test_three_keys_on_the_left_causal(spelling):
    adapter, kw = ADAPTERS[spelling]
    value = _told(adapter, {"window_left": 3, "window_right": 0, "causal": True})[kw]
    assert value == {"left_right": (3, 0), "fla": 4, "xformers": 7, "longformer": 3}[spelling]
    want = SA.sliding_window_sets(L, 3, causal=True)[0]
    assert [WINDOW_SPELLINGS[spelling].keys(value, i, L, True) for i in range(L)] == want


def test_spellings_refuse_what_they_cannot_say():
    conv = {"window_left": 3, "window_right": 2, "causal": False}
    for s in ("fla", "xformers", "longformer", "hf_longformer"):
        with pytest.raises(ValueError, match="window_spelling"):
            spelled_window(conv, s)
    assert spelled_window(conv, "left_right") == (3, 2)
    with pytest.raises(ValueError, match="window_spelling"):
        spelled_window({"window_left": 3, "window_right": 3, "causal": False}, "fla")
    with pytest.raises(ValueError, match="window_spelling"):
        spelled_window({"window_left": 3, "window_right": 0, "causal": True}, "hf_longformer")
    assert set(SPELLINGS) == set(WINDOW_SPELLINGS)


# ---------------------------------------------------------------- candidates written in each library's spelling

def _dense(q, k, v, keep, scale):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    n = q.shape[-1]
    s = (n ** -0.5 if scale is None else scale) * np.einsum("bihn,bjhn->bhij", q, k)
    s = np.where(keep, s, -np.inf)
    if s.shape[-1] == 0:
        return np.zeros(q.shape[:3] + v.shape[3:])
    s = s - np.max(s, axis=-1, keepdims=True)
    w = np.exp(s)
    return np.einsum("bhij,bjhp->bihp", w / w.sum(-1, keepdims=True), v)


def _ij(q):
    l = np.shape(q)[1]
    return np.arange(l)[:, None], np.arange(l)[None, :]


def flash_style(q, k, v, window_size, causal=False, softmax_scale=None):
    i, j = _ij(q)
    left, right = window_size
    keep = (j >= i - left) & (j <= i + right) & ((j <= i) | (not causal))
    return _dense(q, k, v, keep, softmax_scale)


def fla_style(q, k, v, window_size, scale=None):
    i, j = _ij(q)
    return _dense(q, k, v, (j <= i) & (j >= i - window_size + 1), scale)


def xformers_style(q, k, v, window_size, causal=False, scale=None):
    i, j = _ij(q)
    return _dense(q, k, v, (np.abs(i - j) <= window_size // 2) & ((j <= i) | (not causal)), scale)


def xformers_misread(q, k, v, window_size, causal=False, scale=None):
    i, j = _ij(q)  # the slip: W read as keys per side
    return _dense(q, k, v, (np.abs(i - j) <= window_size) & ((j <= i) | (not causal)), scale)


def longformer_style(q, k, v, attention_window, attention_dilation=1, global_tokens=(), causal=False, scale=None):
    i, j = _ij(q)
    h = np.shape(q)[2]
    dils = attention_dilation if isinstance(attention_dilation, tuple) else (attention_dilation,) * h
    g = np.zeros(np.shape(q)[1], bool)
    g[[x for x in global_tokens if x < g.size]] = True
    keep = []
    for d in dils:
        m = (np.abs(i - j) <= attention_window * d) & ((i - j) % d == 0) | g[:, None] | g[None, :]
        keep.append(m & ((j <= i) | (not causal)))
    return _dense(q, k, v, np.stack(keep), scale)


def hf_style(q, k, v, attention_window, global_attention_mask, scale=None):
    i, j = _ij(q)
    g = np.asarray(global_attention_mask)[0].astype(bool) if np.size(global_attention_mask) else \
        np.zeros(np.shape(q)[1], bool)
    keep = (np.abs(i - j) <= attention_window // 2) | g[:, None] | g[None, :]
    return _dense(q, k, v, keep, scale)


@pytest.mark.parametrize("fn,adapter,conv", [
    (flash_style, "flash_attn.window_size", {"window_left": 3, "window_right": 3}),
    (flash_style, "flash_attn.window_size", {"window_left": 2, "window_right": 0, "causal": True}),
    (fla_style, "fla.window_size", {"window_left": 3}),
    (xformers_style, "xformers.window_size", {"window_left": 3, "window_right": 3}),
    (longformer_style, "longformer.attention_window", {"window_left": 3, "window_right": 3, "dilation": (1, 2),
                                                       "global_tokens": (0, 5)}),
    (longformer_style, "longformer.attention_window", {"window_left": 2, "window_right": 0, "causal": True,
                                                       "global_tokens": (4,)}),
    (hf_style, "hf_longformer.attention_window", {"window_left": 3, "window_right": 3, "global_tokens": (0, 5)}),
])
def test_a_candidate_in_each_spelling_conforms(fn, adapter, conv):
    rep = verify(OP, fn, adapter=adapter, conventions=conv, diagnose=False)
    assert rep.passed, [(c.case_id, c.error) for c in rep.cases if not all(o.comparison.passed for o in c.outputs)]


def test_the_classic_misreadings_fail():
    # xformers' W (counting the token) read as keys per side
    rep = verify(OP, xformers_misread, adapter="xformers.window_size", conventions={"window_left": 3,
                                                                                     "window_right": 3},
                 max_examples=2)
    assert not rep.passed
    # Hugging Face's even w read as per side; an FLA W read as W keys left of the token (the mutant corpus)
    ms = {m.name: m for m in all_mutants(OP, kind="forward")}
    for name in ("hf-window-read-per-side", "fla-window-one-too-many"):
        m = ms[name]
        rep = verify(OP, m.fn, adapter=m.adapter, conventions=m.conventions, max_examples=2)
        failing = [c for c in rep.cases if not all(o.comparison.passed for o in c.outputs)]
        assert failing, name
    # and the diagnosis names the window one off for the FLA slip
    assert any("window_left=4" in c.diagnosis for c in failing)


# ---------------------------------------------------------------- refimpl conforms

def _refimpl(view, backend):
    from refimpl.attention.sparse import sparse_attention

    def fn(q, k, v, pattern, scale=None):
        kw = {"block": 3} if view == "block_sparse" and pattern.kind != "bigbird" else {}
        return sparse_attention(q, k, v, pattern, scale=scale, view=view, backend=backend, **kw)
    return fn


CONVS = [
    {},
    {"window_left": 0, "window_right": 0},  # window 0: the token itself
    {"window_left": 50, "window_right": 50},  # window >= L
    {"kind": "sliding_window", "dilation": (1, 3), "causal": True, "window_right": 0},
    {"kind": "longformer", "global_tokens": tuple(range(20)), "window_left": 1, "window_right": 1},  # all global
    {"kind": "strided", "stride": 1, "causal": True},  # stride 1
    {"kind": "strided", "stride": 4, "causal": False, "combine": "heads"},
    {"kind": "fixed", "stride": 4, "summary": 2, "causal": True, "combine": "heads"},
    {"kind": "bigbird", "block": 32},  # block > L
    {"kind": "bigbird", "block": 3, "random_blocks": 2, "seed": 11, "bigbird_heads": "per_head"},
]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_refimpl_materialized_conforms(conv):
    rep = verify(OP, _refimpl("materialized", "numpy"), adapter="refimpl", conventions=conv, diagnose=False)
    assert rep.passed


@pytest.mark.parametrize("view,backend", [("block_sparse", "numpy"), ("block_sparse", "numba")])
@pytest.mark.parametrize("conv", [CONVS[3], CONVS[7], CONVS[9]], ids=["dilated", "fixed", "bigbird"])
def test_refimpl_block_sparse_conforms(view, backend, conv):
    rep = verify(OP, _refimpl(view, backend), adapter="refimpl", conventions=conv, diagnose=False,
                 dtype=["float64", "float32"] if backend == "numpy" else "float64")
    assert rep.passed


def test_a_wrong_claim_fails_and_is_diagnosed():
    # refimpl's window (3, 3) claimed as (3, 2): the diagnosis names window_right one off
    def fn(q, k, v, pattern, scale=None):
        from refimpl.attention.sparse import sliding_window_pattern, sparse_attention

        return sparse_attention(q, k, v, sliding_window_pattern(pattern.l, (3, 3)), scale=scale)
    rep = verify(OP, fn, adapter="refimpl", conventions={"window_left": 3, "window_right": 2})
    assert not rep.passed
    assert any("window_right=3" in c.diagnosis for c in rep.cases)


def test_cli_passes_the_reference_and_fails_a_bug(capsys):
    from oracles.cli import main

    assert main(["verify", "refimpl.attention.sparse:sparse_attention", "--op", OP, "--adapter", "refimpl",
                 "--conv", "kind=strided", "--conv", "causal=True"]) == 0
    assert main(["verify", "oracles.mutants.sparse:_strided_short", "--op", OP, "--conv", "kind=strided",
                 "--conv", "causal=True", "--conv", "combine=heads", "--max-examples", "2"]) == 1
    capsys.readouterr()


def test_every_sparse_mutant_is_killed():
    """As ``refimpl mutants --op attention.sparse`` (run_mutants' verify call: default settings, the mutant's adapter,
    conventions and dtypes), without the diagnosis a failing report adds (killed = does not conform)."""
    ms = all_mutants(OP, kind="forward")
    assert len(ms) >= 15
    names = {m.name for m in ms}
    assert {"window-left-edge-off-by-one", "dilation-one-side-only", "dilation-on-query", "global-row-only",
            "global-column-only", "bigbird-unseeded-random-blocks", "bigbird-window-wraps-around",
            "strided-A1-one-short", "fixed-summary-at-block-start", "causal-mask-missing-with-global"} <= names
    survivors = [m.name for m in ms if verify(m.op, m.fn, adapter=m.adapter, conventions=dict(m.conventions),
                                              dtype=list(m.dtype), diagnose=False, candidate_name=m.key).passed]
    assert not survivors


# ---------------------------------------------------------------- refimpl's masks against the oracle's sets

def _grid():
    for l in (0, 1, 5, 13):
        for causal in (False, True):
            for window in ((0, 0), (2, 1), (3, 3), (20, 20), 2):
                if causal and not isinstance(window, int) and window[1] > 0:
                    continue
                for dil in (1, 2, (1, 3)):
                    yield "sliding_window", l, dict(window=window, dilation=dil, causal=causal)
                    for G in ((), (0,), (l // 2, l - 1), tuple(range(l))):
                        if all(g < l for g in G):
                            yield "longformer", l, dict(window=window, dilation=dil, global_tokens=G, causal=causal)
            for stride in (1, 2, 4, 7):
                for combine in ("union", "heads"):
                    yield "strided", l, dict(stride=stride, causal=causal, combine=combine)
                    for c in range(1, stride + 1):
                        yield "fixed", l, dict(stride=stride, summary=c, causal=causal, combine=combine)
    for l in (0, 1, 7, 16, 31):
        for block in (1, 3, 4, 40):
            for wb, gb, rb in ((1, 0, 0), (3, 1, 1), (3, 2, 2), (5, 0, 3)):
                for seed, heads in ((0, 1), (12345, 3)):
                    yield "bigbird", l, dict(block=block, window_blocks=wb, global_blocks=gb, random_blocks=rb,
                                             seed=seed, heads=heads)


def test_refimpl_masks_equal_the_oracle_sets():
    from refimpl.attention import sparse as R

    build = {"sliding_window": R.sliding_window_pattern, "longformer": R.longformer_pattern,
             "strided": R.strided_pattern, "fixed": R.fixed_pattern, "bigbird": R.bigbird_pattern}
    first = {"sliding_window": "window", "longformer": "window", "strided": "stride", "fixed": "stride",
             "bigbird": "block"}
    n = 0
    for kind, l, params in _grid():
        p = dict(params)
        mask = build[kind](l, p.pop(first[kind]), **p).mask()
        want = SA.keep_from_sets(SA.pattern_sets(kind, l, **params), l)
        assert mask.shape == want.shape and np.array_equal(mask, want), (kind, l, params)
        n += 1
    assert n > 800
