"""The verify harness's layout machinery: einops-style rearrange and the adapters as pure layout mappings."""
import numpy as np
import pytest

from oracles.verify import get_adapter, get_op
from oracles.verify.adapters import Adapter, Const, Conv, Group, In, Out
from oracles.verify.layout import deinterleave_complex, interleave_complex, inverse, rearrange
from oracles.verify.registry import infer_dims


def test_rearrange_permutes_splits_and_merges():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(rearrange(x, "b l h k -> b h l k"), x.transpose(0, 2, 1, 3))
    merged = rearrange(x, "b l h k -> b l (h k)")
    assert merged.shape == (2, 3, 20)
    np.testing.assert_array_equal(merged[1, 2], x[1, 2].reshape(-1))
    back = rearrange(merged, "b l (h k) -> b l h k", h=4)
    np.testing.assert_array_equal(back, x)
    # the inverse pattern undoes any permutation
    p = "b l h k -> k h b l"
    np.testing.assert_array_equal(rearrange(rearrange(x, p), inverse(p)), x)


@pytest.mark.parametrize("pattern, shape, kw, msg", [
    ("b l -> l b", (2, 3, 4), {}, "left side has 2 axes"),
    ("b (l two) -> b l two", (2, 5), {"two": 2}, "not divisible"),
    ("b l -> b k", (2, 3), {}, "same axes"),
    ("b (l k) -> b l k", (2, 6), {}, "unknown"),
])
def test_rearrange_rejects_bad_patterns(pattern, shape, kw, msg):
    with pytest.raises(ValueError, match=msg):
        rearrange(np.zeros(shape), pattern, **kw)


def test_complex_interleave_roundtrip_and_order():
    z = np.array([[1 + 2j, 3 - 4j]])
    r = interleave_complex(z)
    np.testing.assert_array_equal(r, [[1.0, 2.0, 3.0, -4.0]])  # (re, im) pairs along L, as Mamba's "(L two)"
    np.testing.assert_array_equal(deinterleave_complex(r), z)


def _mamba_inputs(b=2, d=4, n=3, l=5, g=2, cplx=True):
    rng = np.random.default_rng(0)
    A = -rng.uniform(0.5, 1, (d, n)) + (1j * rng.standard_normal((d, n)) if cplx else 0)
    B = rng.standard_normal((b, g, n, l)) + (1j * rng.standard_normal((b, g, n, l)) if cplx else 0)
    C = rng.standard_normal((d, n)) + (1j * rng.standard_normal((d, n)) if cplx else 0)
    return {"u": rng.standard_normal((b, d, l)), "delta": rng.uniform(0, 1, (b, d, l)), "A": A, "B": B, "C": C,
            "D": rng.standard_normal(d), "z": None, "delta_bias": rng.standard_normal(d), "h0": None}


def test_mamba_selective_scan_fn_adapter_layout():
    spec = get_op("ssm.selective_scan")
    ad = get_adapter(spec.name, "mamba.selective_scan_fn")
    inp = _mamba_inputs()
    conv = spec.resolve_conventions(dict(ad.implies, delta_softplus=True))
    args, kwargs = ad.build_call(spec, inp, conv, infer_dims(spec.inputs, inp))
    u, delta, A, B, C, D, z = args
    assert u.shape == (2, 4, 5) and delta.shape == (2, 4, 5)  # (batch, channels, length) kept
    # grouped complex B (b g n l) -> real (b g n 2l) with (re, im) interleaved along L
    assert B.dtype == np.float64 and B.shape == (2, 2, 3, 10)
    np.testing.assert_array_equal(B[..., 0::2], inp["B"].real)
    np.testing.assert_array_equal(B[..., 1::2], inp["B"].imag)
    # a fixed complex C (d n) is passed as complex, not interleaved
    assert np.iscomplexobj(C) and C.shape == (4, 3)
    assert z is None
    assert kwargs == {"delta_bias": inp["delta_bias"], "delta_softplus": True, "return_last_state": True}
    outs = ad.read_outputs(spec, (np.ones((2, 4, 5)), np.zeros((2, 4, 3), complex)), {}, np.asarray)
    assert set(outs) == {"out", "h_last"}
    assert ad.implies == {"use_h0": False}  # Euler B and 2 Re are declared conventions, not fixed by the layout


def test_mambapy_adapter_is_sequence_first():
    spec = get_op("ssm.selective_scan")
    ad = get_adapter(spec.name, "mambapy.selective_scan")
    inp = _mamba_inputs(cplx=False)
    inp["B"] = np.random.default_rng(1).standard_normal((2, 3, 5))  # variable (b n l)
    inp["C"] = np.random.default_rng(2).standard_normal((2, 3, 5))
    dims = infer_dims(spec.inputs, inp)
    args, kwargs = ad.build_call(spec, inp, spec.resolve_conventions(ad.implies), dims)
    x, delta, A, B, C, D = args
    np.testing.assert_array_equal(x, inp["u"].transpose(0, 2, 1))  # (b l d)
    np.testing.assert_array_equal(B, inp["B"].transpose(0, 2, 1))  # (b l n)
    assert kwargs == {}
    y = np.arange(2 * 5 * 4, dtype=float).reshape(2, 5, 4)
    out = ad.read_outputs(spec, y, dims, np.asarray)["out"]
    np.testing.assert_array_equal(out, y.transpose(0, 2, 1))


def test_scipy_adapter_groups_the_system_and_maps_method_names():
    spec = get_op("ssm.discretize")
    ad = get_adapter(spec.name, "scipy.cont2discrete")
    assert ad.vectorize == "h"
    inp = {"A": np.eye(2)[None], "B": np.ones((1, 2, 1)), "dt": np.asarray(0.5), "C": np.ones((1, 1, 2)),
           "D": np.zeros((1, 1, 1))}
    sl = {k: (v[0] if np.ndim(v) else v) for k, v in inp.items()}
    for method, name in [("zoh", "zoh"), ("bilinear", "bilinear"), ("forward_euler", "euler"),
                         ("backward_euler", "backward_diff")]:
        args, kwargs = ad.build_call(spec, sl, spec.resolve_conventions({"method": method}), {})
        (A, B, C, D), dt = args
        assert A.shape == (2, 2) and isinstance(dt, float) and dt == 0.5
        assert kwargs == {"method": name}
    args, kwargs = ad.build_call(spec, sl, spec.resolve_conventions({"method": "gbt", "alpha": 0.25}), {})
    assert kwargs == {"method": "gbt", "alpha": 0.25}
    with pytest.raises(ValueError, match="Mamba mix"):
        ad.build_call(spec, sl, spec.resolve_conventions({"method": "mamba"}), {})


def test_generic_adapter_declaration():
    ad = Adapter(name="t", op="x", doc="", args=(Group(In("a"), Const(3)), In("b", "p q -> q p")),
                 kwargs={"flag": Conv(lambda c: c["k"] * 2), "skip": Conv(lambda c: None)},
                 outputs=(Out("y", "res", "q p -> p q"),))
    a = np.arange(6.0).reshape(2, 3)
    args, kwargs = ad.build_call(None, {"a": a, "b": a}, {"k": 2}, {})
    assert args[0][1] == 3 and args[0][0] is not None
    np.testing.assert_array_equal(args[1], a.T)
    assert kwargs == {"flag": 4}  # None-valued kwargs are not passed
    out = ad.read_outputs(None, {"res": a.T}, {}, np.asarray)
    np.testing.assert_array_equal(out["y"], a)


def test_mamba2_chunk_scan_adapter():
    spec = get_op("ssm.ssd")
    ad = get_adapter(spec.name, "mamba2.chunk_scan")
    rng = np.random.default_rng(0)
    inp = {"x": rng.standard_normal((2, 5, 4, 3)), "dt": rng.uniform(0, 1, (2, 5, 4)), "A": -np.ones(4),
           "B": rng.standard_normal((2, 5, 2, 6)), "C": rng.standard_normal((2, 5, 2, 6)), "D": np.ones(4), "z": None,
           "dt_bias": None, "initial_states": rng.standard_normal((2, 4, 3, 6)),
           "seq_idx": np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=np.int32)}
    conv = spec.resolve_conventions(dict(ad.implies, chunk=16, dt_softplus=True))
    args, kwargs = ad.build_call(spec, inp, conv, infer_dims(spec.inputs, inp))
    assert [a.shape for a in args[:5]] == [(2, 5, 4, 3), (2, 5, 4), (4,), (2, 5, 2, 6), (2, 5, 2, 6)]
    assert args[5] == 16  # chunk_size, positional
    assert kwargs["seq_idx"].dtype == np.int32 and kwargs["initial_states"].shape == (2, 4, 3, 6)
    assert kwargs["dt_softplus"] is True and kwargs["return_final_states"] is True and "z" not in kwargs
    assert ad.implies == {}  # the evaluation order (algorithm) is the candidate's to declare


@pytest.mark.parametrize("name, head_first", [("fla.linear_attn", False), ("fla.linear_attn.head_first", True)])
def test_linear_attention_kernel_library_adapters(name, head_first):
    spec = get_op("attention.linear")
    ad = get_adapter(spec.name, name)
    rng = np.random.default_rng(1)
    b, l, h, n, e = 2, 7, 3, 4, 5
    inp = {"phi_q": rng.random((b, l, h, n)), "phi_k": rng.random((b, l, h, n)), "v": rng.random((b, l, h, e)),
           "S0": rng.random((b, h, e, n)), "u0": None}
    conv = spec.resolve_conventions(dict(ad.implies, scale=0.25, use_state=True))
    dims = infer_dims(spec.inputs, inp)
    args, kwargs = ad.build_call(spec, inp, conv, dims)
    q = args[0]
    if head_first:  # [B, H, T, K]
        np.testing.assert_array_equal(q, inp["phi_q"].transpose(0, 2, 1, 3))
    else:  # [B, T, H, K]
        np.testing.assert_array_equal(q, inp["phi_q"])
    assert kwargs["scale"] == 0.25  # the scale goes to the kernel, which applies it to q
    np.testing.assert_array_equal(kwargs["initial_state"], inp["S0"].transpose(0, 1, 3, 2))  # K x V
    o = rng.random((b, h, l, e) if head_first else (b, l, h, e))
    S_kv = rng.random((b, h, n, e))
    outs = ad.read_outputs(spec, (o, S_kv), dims, np.asarray, conv)
    np.testing.assert_array_equal(outs["S_last"], S_kv.transpose(0, 1, 3, 2))  # back to V x K
    assert outs["o"].shape == (b, l, h, e)
    assert conv["state_layout"] == "kv" and conv["normalize"] is False


def test_flash_attention_adapter_windows_and_alignment():
    spec = get_op("attention.softmax")
    ad = get_adapter(spec.name, "flash_attn.flash_attn_func")
    rng = np.random.default_rng(2)
    inp = {"q": rng.random((1, 3, 2, 4)), "k": rng.random((1, 5, 2, 4)), "v": rng.random((1, 5, 2, 4))}
    conv = spec.resolve_conventions({"causal": "bottom_right", "window_left": 2, "window_right": 0, "scale": 0.5})
    args, kwargs = ad.build_call(spec, inp, conv, {})
    assert args[0].shape == (1, 3, 2, 4)  # (B, S, H, D): no transpose
    assert kwargs == {"dropout_p": 0.0, "softmax_scale": 0.5, "causal": True, "window_size": (2, 0)}
    with pytest.raises(ValueError, match="bottom-right"):
        ad.build_call(spec, inp, spec.resolve_conventions({"causal": "top_left"}), {})
    # torch's SDPA is head-first and top-left aligned
    ts = get_adapter(spec.name, "torch.sdpa")
    args, kwargs = ts.build_call(spec, inp, spec.resolve_conventions({"causal": "top_left"}), {})
    assert args[1].shape == (1, 2, 5, 4) and kwargs == {"is_causal": True}


def test_gated_delta_rule_adapter_passes_log_decays():
    spec = get_op("attention.delta_rule")
    ad = get_adapter(spec.name, "fla.gated_delta_rule")
    rng = np.random.default_rng(3)
    inp = {"q": rng.random((1, 4, 2, 3)), "k": rng.random((1, 4, 2, 3)), "v": rng.random((1, 4, 2, 5)),
           "beta": rng.random((1, 4, 2)), "alpha": rng.uniform(0.5, 1, (1, 4, 2)), "S0": rng.random((1, 2, 5, 3))}
    args, kwargs = ad.build_call(spec, inp, spec.resolve_conventions(ad.implies), {})
    # g = log(alpha): libm log and exp are each within 1 ulp (2u); with |log alpha| <= 0.7 the round trip is
    # within 2u * 0.7 + 2u < 4u relative: gamma_4
    from oracles.tolerance import gamma

    np.testing.assert_allclose(np.exp(args[3]), inp["alpha"], rtol=gamma(4, np.float64))
    assert kwargs["initial_state"].shape == (1, 2, 3, 5)


def test_strategy_for_users_own_suites():
    from hypothesis import given, settings

    from oracles.verify import strategy_for

    seen = []

    @settings(max_examples=5, database=None)
    @given(strategy_for("ssm.selective_scan", {"use_z": False, "delta_softplus": True}))
    def collect(inputs):
        assert inputs["z"] is None and inputs["D"] is not None  # claimed features always present, others never
        seen.append(inputs["u"].shape)

    collect()
    assert len(seen) == 5


def test_frameworks_roundtrip_every_dtype_through_torch():
    torch = pytest.importorskip("torch")
    from oracles.verify.frameworks import lowp_dtype, parse_framework, to_framework, to_numpy

    x = np.linspace(-3, 3, 12).reshape(3, 4)
    for name in ("float64", "float32", "float16", "bfloat16"):
        a = x.astype(lowp_dtype(name))
        t = to_framework(a, "torch")
        assert isinstance(t, torch.Tensor) and str(t.dtype) == f"torch.{name}"
        back = to_numpy(t.requires_grad_(name != "bfloat16" and name != "float16") * 1)
        assert back.dtype == a.dtype and np.array_equal(back.astype(np.float64), a.astype(np.float64))
    z = to_numpy(torch.tensor([1 + 2j]).conj())  # a lazily conjugated tensor is resolved
    np.testing.assert_array_equal(z, [1 - 2j])
    assert to_framework(np.asarray(0.5), "torch").shape == ()  # 0-d stays 0-d
    assert parse_framework("torch:cuda") == ("torch", "cuda") and parse_framework(None) == ("numpy", None)
    with pytest.raises(ValueError, match="framework: expected one of"):
        parse_framework("tensorflow")


def test_random_cases_without_hypothesis(monkeypatch):
    import sys

    from oracles.verify import generate_cases

    monkeypatch.setitem(sys.modules, "hypothesis", None)  # import hypothesis -> ImportError
    spec = get_op("ssm.discretize")
    cases = generate_cases(spec, spec.resolve_conventions({}), max_examples=3, seed=7, kinds=("random",))
    assert [c.kind for c in cases] == ["random"] * 3
    again = generate_cases(spec, spec.resolve_conventions({}), max_examples=3, seed=7, kinds=("random",))
    np.testing.assert_array_equal(cases[2].inputs["A"], again[2].inputs["A"])  # seeded: reproducible


def test_mamba_adapter_promotes_real_variable_B_when_A_is_complex():
    spec = get_op("ssm.selective_scan")
    ad = get_adapter(spec.name, "mamba.selective_scan_fn")
    inp = _mamba_inputs(cplx=True)
    inp["B"] = inp["B"].real.copy()  # a real grouped B next to a complex A
    args, _ = ad.build_call(spec, inp, spec.resolve_conventions(ad.implies), infer_dims(spec.inputs, inp))
    B = args[3]
    assert B.shape == (2, 2, 3, 10)
    np.testing.assert_array_equal(B[..., 0::2], inp["B"])
    np.testing.assert_array_equal(B[..., 1::2], 0.0)
