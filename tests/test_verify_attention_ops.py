"""Verify ops of the attention family: our references conform through their adapters; the conventions real code
needs (softcap, ALiBi, key padding, grouped kv heads, eps on the key sum, n^-1/2 scales, chi norms, sinusoid
layouts) change the verdict when they are misnamed; the canonical adapter honours state_layout; the
argument-path probe exercises what an adapter passes."""
import math

import numpy as np
import pytest

from oracles.verify import get_op, verify
from oracles.verify.adapters import get_adapter

FEW = dict(max_examples=3, seed=3)
BOTH = ["float64", "float32"]


# -- our references, every op ------------------------------------------------------------------------------

def _refimpl(op):
    from refimpl.attention.delta import delta_rule
    from refimpl.attention.fast_weights import fast_weight_memory
    from refimpl.attention.features import feature_map, random_projection
    from refimpl.attention.linear import linear_attention, performer_attention
    from refimpl.attention.positional import sinusoidal_positions
    from refimpl.attention.softmax import multi_head_attention, scaled_dot_product_attention

    return {"attention.softmax": scaled_dot_product_attention, "attention.linear": linear_attention,
            "attention.delta_rule": delta_rule, "attention.fast_weights": fast_weight_memory,
            "attention.multi_head": multi_head_attention, "attention.sinusoidal": sinusoidal_positions,
            "attention.performer": performer_attention, "features.performer": feature_map,
            "features.dpfp": feature_map, "features.elu_plus_one": feature_map,
            "features.orthogonal_projection": random_projection}[op]


@pytest.mark.parametrize("op, conv", [
    ("attention.softmax", {"causal": "bottom_right", "use_bias": True, "use_key_padding_mask": True}),
    ("attention.linear", {"causal": False, "eps": 0.05, "state_layout": "kv"}),
    ("attention.delta_rule", {"scale": None, "key_norm": "l2", "query_norm": "l2"}),
    ("attention.fast_weights", {}),
    ("attention.multi_head", {"causal": "top_left"}),
    ("attention.sinusoidal", {"base": 500.0}),
    ("attention.performer", {"causal": True, "kind": "hyperbolic", "query_stabilizer": "row_max"}),
    ("features.dpfp", {"nu": 3}),
    ("features.elu_plus_one", {}),
    ("features.orthogonal_projection", {"norms": "fixed"}),
])
def test_our_references_conform(op, conv):
    rep = verify(op, _refimpl(op), adapter="refimpl", conventions=conv, dtype=BOTH, **FEW)
    assert rep.passed, rep.to_text()
    paths = [p for p in rep.probes if p.name == "argument_paths"]
    if op != "features.orthogonal_projection" and op != "features.elu_plus_one":
        assert paths and all(p.passed for p in paths)


def test_new_ops_are_listed_with_their_conventions():
    for name, convs in {"attention.multi_head": {"scale", "causal", "proj_shape"},
                        "attention.sinusoidal": {"base", "layout", "exponent"},
                        "attention.fast_weights": {"state_layout", "use_state"},
                        "attention.performer": {"kind", "feature_eps", "query_stabilizer", "key_stabilizer"},
                        "features.dpfp": {"nu"}, "features.elu_plus_one": set()}.items():
        spec = get_op(name)
        assert convs <= {c.name for c in spec.conventions}
        assert spec.cases(spec.resolve_conventions({})), name
        assert "refimpl" in spec.describe()


# -- attention.softmax: softcap, ALiBi, key padding, grouped kv heads ---------------------------------------

def _flash_like(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=None,
                alibi_slopes=None, _alibi_sign=1.0):
    """A kernel with flash_attn_func's interface, written here from the definitions (GQA, softcap, ALiBi)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, lq, h, d = q.shape
    lk, g = k.shape[1], k.shape[2]
    k, v = np.repeat(k, h // g, axis=2), np.repeat(v, h // g, axis=2)
    s = (d ** -0.5 if softmax_scale is None else softmax_scale) * np.einsum("bihd,bjhd->bhij", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    rel = np.arange(lk)[None, :] - (np.arange(lq)[:, None] + lk - lq)
    if alibi_slopes is not None:
        sl = np.asarray(alibi_slopes, dtype=np.float64)
        sl = sl[None] if sl.ndim == 1 else sl
        s = s - _alibi_sign * sl[:, :, None, None] * np.abs(rel)
    keep = np.ones((lq, lk), dtype=bool)
    left, right = window_size
    if causal:
        keep &= rel <= 0
    if left >= 0:
        keep &= rel >= -left
    if right >= 0:
        keep &= rel <= right
    s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True) if lk else np.zeros(s.shape[:-1] + (1,))
    w = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    Z = w.sum(-1, keepdims=True)
    p = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    return np.einsum("bhij,bjhe->bihe", p, v)


def test_flash_interface_with_softcap_alibi_and_gqa_conforms():
    conv = {"softcap": 2.0, "use_alibi": True, "grouped_kv": True, "causal": "bottom_right", "window_left": 3,
            "scale": 0.6}
    rep = verify("attention.softmax", _flash_like, adapter="flash_attn.flash_attn_func", conventions=conv,
                 dtype=BOTH, **FEW)
    assert rep.passed, rep.to_text()
    # every query-head group actually had fewer kv heads
    assert all(c.shapes["k"][2] < c.shapes["q"][2] for c in rep.cases if c.case_id != "golden-gqa-equal"
               and c.kind != "golden")


def test_alibi_sign_and_softcap_are_checked():
    import functools

    wrong = functools.partial(_flash_like, _alibi_sign=-1.0)  # +slope |i - j|: a bias towards distant keys
    rep = verify("attention.softmax", wrong, adapter="flash_attn.flash_attn_func", conventions={"use_alibi": True},
                 kinds=("golden", "edge"), candidate_name="alibi_sign")
    assert not rep.passed
    rep = verify("attention.softmax", _flash_like, adapter="flash_attn.flash_attn_func",
                 conventions={"softcap": 0.7}, kinds=("golden",))
    assert rep.passed, rep.to_text()
    rep = verify("attention.softmax", lambda q, k, v, **kw: _flash_like(q, k, v, **dict(kw, softcap=None)),
                 adapter="flash_attn.flash_attn_func", conventions={"softcap": 0.7}, kinds=("golden",),
                 candidate_name="softcap_ignored")
    assert not rep.passed


def test_flash_interface_without_softcap_argument_is_not_exercised_there():
    def old_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None):
        return _flash_like(q, k, v, dropout_p, softmax_scale, causal, window_size, None, alibi_slopes)

    rep = verify("attention.softmax", old_flash, adapter="flash_attn.flash_attn_func", **FEW)
    assert rep.passed, rep.to_text()
    paths = [p for p in rep.probes if p.name == "argument_paths"][0]
    assert "softcap=1.5 (refused: TypeError" in paths.message
    assert "window_left=2" in paths.message and "scale=0.37" in paths.message


def test_masked_future_key_with_a_large_score_needs_the_mask_before_the_max():
    spec = get_op("attention.softmax")
    conv = spec.resolve_conventions({"causal": "top_left"})
    case = [c for c in spec.cases(conv) if c.case_id == "edge-masked-future-large"][0]
    o = spec.oracle(case.inputs, conv)["o"]
    assert np.all(np.isfinite(o))
    assert spec.cases(spec.resolve_conventions({})) and not [c for c in spec.cases(spec.resolve_conventions({}))
                                                             if c.case_id == "edge-masked-future-large"]


# -- attention.linear: eps on the key sum, the n^-1/2 scale, the canonical state layout --------------------------

def _linear_kv(phi_q, phi_k, v, S0=None, u0=None, *, eps=0.0, eps_mode="add", state_kv=True):
    from refimpl.attention.linear import linear_attention

    S0v = None if S0 is None else (np.swapaxes(S0, -1, -2) if state_kv else S0)
    if eps_mode == "key_sum":
        num, S = linear_attention(phi_q, phi_k, v, causal=True, view="recurrent", normalize=False,
                                  initial_state=S0v, return_final_state=True)
        z = np.cumsum(phi_k, axis=1) + (0.0 if u0 is None else u0[:, None])
        den = np.einsum("blhn,blhn->blh", phi_q, z + eps)
        o, zl = num / den[..., None], z[:, -1] if phi_k.shape[1] else (np.zeros(phi_k.shape[::2]) if u0 is None else u0)
    else:
        o, (S, zl) = linear_attention(phi_q, phi_k, v, causal=True, view="recurrent", eps=eps,
                                      initial_state=None if S0v is None else (S0v, u0), return_final_state=True)
    return o, (np.swapaxes(S, -1, -2) if state_kv else S), zl


def test_canonical_adapter_honours_state_layout():
    rep = verify("attention.linear", _linear_kv, conventions={"state_layout": "kv"}, dtype=BOTH, **FEW)
    assert rep.passed, rep.to_text()
    assert get_adapter("attention.linear", None).name == "canonical"
    import functools

    vk = functools.partial(_linear_kv, state_kv=False)
    rep = verify("attention.linear", vk, conventions={"state_layout": "kv"}, kinds=("golden", "edge"),
                 candidate_name="vk_state")
    assert not rep.passed
    assert any("state_layout='vk' instead of 'kv'" in d for d in rep.deviations()), rep.deviations()


def test_eps_on_the_key_sum_is_its_own_convention():
    import functools

    key_sum = functools.partial(_linear_kv, eps=0.05, eps_mode="key_sum", state_kv=False)
    ok = verify("attention.linear", key_sum, conventions={"eps": 0.05, "eps_mode": "key_sum"}, dtype=BOTH, **FEW)
    assert ok.passed, ok.to_text()
    bad = verify("attention.linear", key_sum, conventions={"eps": 0.05}, kinds=("golden", "edge"),
                 candidate_name="key_sum_as_add")
    assert not bad.passed
    assert any("eps_mode='key_sum' instead of 'add'" in d for d in bad.deviations()), bad.deviations()


def test_fla_style_scale_none_means_n_to_the_minus_half():
    def fla_like(q, k, v, scale=None, initial_state=None, output_final_state=False):
        from refimpl.attention.linear import linear_attention

        sc = q.shape[-1] ** -0.5 if scale is None else scale
        S0 = None if initial_state is None else np.swapaxes(initial_state, -1, -2)
        o, S = linear_attention(q * sc, k, v, causal=True, view="recurrent", normalize=False, initial_state=S0,
                                return_final_state=True)
        return o, (np.swapaxes(S, -1, -2) if output_final_state else None)

    for conv in ({"scale": None}, {"scale": 0.8}):
        rep = verify("attention.linear", fla_like, adapter="fla.linear_attn", conventions=conv, dtype=BOTH, **FEW)
        assert rep.passed, rep.to_text()
    paths = [p for p in rep.probes if p.name == "argument_paths"][0]
    assert "output_final_state=False" in paths.message and "scale=0.37" in paths.message


def test_a_causal_only_kernel_refusing_causal_false_is_not_a_deviation():
    from refimpl.attention.linear.numba import causal_chunked

    rep = verify("attention.linear", causal_chunked, adapter="refimpl", **FEW)
    assert rep.passed, rep.to_text()
    assert "causal=False (refused: ValueError: causal:" in [p for p in rep.probes
                                                            if p.name == "argument_paths"][0].message


# -- attention.delta_rule: head-first FLA adapters, the gated kernel without a gate -----------------------------

def _head_first_delta(q, k, v, beta, scale=None, initial_state=None, output_final_state=True,
                      use_qk_l2norm_in_kernel=False):
    """A head-first kernel with FLA's interface, on top of our reference (layouts converted here)."""
    from refimpl.attention.delta import delta_rule

    t = lambda a: np.swapaxes(a, 1, 2)  # noqa: E731  (b h l .) <-> (b l h .)
    n = q.shape[-1]
    norm = "l2" if use_qk_l2norm_in_kernel else None
    S0 = None if initial_state is None else np.swapaxes(initial_state, -1, -2)
    o, S = delta_rule(t(q), t(k), t(v), np.swapaxes(beta, 1, 2), initial_state=S0, key_norm=norm, query_norm=norm,
                      scale=n ** -0.5 if scale is None else scale, return_final_state=True)
    return t(o), (np.swapaxes(S, -1, -2) if output_final_state else None)


@pytest.mark.parametrize("adapter, conv", [("fla.delta_rule.head_first", {"scale": 0.7}),
                                           ("fla.delta_rule.head_first", {"key_norm": "l2", "query_norm": "l2",
                                                                          "scale": None}),
                                           ("fla.delta_rule.naive", {})])
def test_head_first_fla_delta_adapters(adapter, conv):
    cand = _head_first_delta
    if adapter == "fla.delta_rule.naive":
        def cand(q, k, v, beta, initial_state=None, output_final_state=True):
            return _head_first_delta(q, k, v, beta, None, initial_state, output_final_state)
    rep = verify("attention.delta_rule", cand, adapter=adapter, conventions=conv, dtype=BOTH, **FEW)
    assert rep.passed, rep.to_text()
    assert all(c.shapes["S0"] for c in rep.cases if c.kind == "golden")  # the state is exercised...
    paths = [p for p in rep.probes if p.name == "argument_paths"][0]
    assert "without S0" in paths.message  # ...and so is its absence


def test_fla_refuses_mixed_normalizations():
    with pytest.raises(ValueError, match="use_qk_l2norm_in_kernel"):
        verify("attention.delta_rule", _head_first_delta, adapter="fla.delta_rule.head_first",
               conventions={"key_norm": "l2"}, kinds=("golden",))


def test_gated_adapter_passes_log_one_for_an_absent_gate():
    spec = get_op("attention.delta_rule")
    ad = get_adapter(spec.name, "fla.gated_delta_rule")
    conv = spec.resolve_conventions({**ad.implies})
    inp = spec.sample(np.random.default_rng(0), conv, l=3)
    inp["alpha"] = None
    from oracles.verify.registry import infer_dims

    args, _ = ad.build_call(spec, inp, conv, infer_dims(spec.inputs, inp))
    assert np.array_equal(args[3], np.zeros_like(inp["beta"]))


# -- features: chi norms, elu + 1 ------------------------------------------------------------------------------

def test_fixed_norms_fail_the_chi_law_and_pass_when_named():
    from refimpl.attention.features import random_projection

    fixed = lambda m, d, seed: random_projection(m, d, seed, norms="fixed")  # noqa: E731
    rep = verify("features.orthogonal_projection", fixed, kinds=("golden",), candidate_name="fixed")
    chi = {p.name: p for p in rep.probes}["chi_norms"]
    assert not chi.passed and "fixed norms sqrt(d) are not chi norms" in chi.message
    assert verify("features.orthogonal_projection", fixed, conventions={"norms": "fixed"}, kinds=("golden",)).passed
    chi_as_fixed = lambda m, d, seed: random_projection(m, d, seed)  # noqa: E731
    assert not verify("features.orthogonal_projection", chi_as_fixed, conventions={"norms": "fixed"},
                      kinds=("golden",), candidate_name="chi").passed


def test_elu_plus_one_bound_covers_the_expm1_form():
    def elu_expm1(x):
        return np.where(x >= 0, x, np.expm1(np.minimum(x, 0))) + 1.0  # F.elu(x) + 1: cancels for x << 0

    rep = verify("features.elu_plus_one", elu_expm1, dtype=BOTH, **FEW)
    assert rep.passed, rep.to_text()
    assert not verify("features.elu_plus_one", lambda x: np.where(x >= 0, x + 1, 0.0), kinds=("edge",),
                      candidate_name="zero_below").passed


# -- attention.sinusoidal: layouts and exponents -----------------------------------------------------------

def _timing_signal(length, d, base=1.0e4):
    """tensor2tensor-style: [sin | cos] halves, frequencies base^(-i/(d/2 - 1)) (written here, not copied)."""
    half = d // 2
    inc = math.log(base) / max(half - 1, 1)
    inv = np.exp(-inc * np.arange(half))
    ang = np.arange(length)[:, None] * inv[None, :]
    pe = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    return np.pad(pe, ((0, 0), (0, d % 2)))


def test_sinusoid_conventions():
    rep = verify("attention.sinusoidal", _timing_signal, conventions={"layout": "concat", "exponent": "i/(d/2-1)"},
                 kinds=("golden", "edge"))
    assert rep.passed, rep.to_text()  # an odd d padded with a zero column, as the concat convention says
    # one convention misnamed: the diagnosis names it
    text = verify("attention.sinusoidal", _timing_signal, conventions={"layout": "concat"}, kinds=("golden",),
                  candidate_name="t2t").deviations()
    assert any("exponent='i/(d/2-1)' instead of '2i/d'" in t for t in text), text
