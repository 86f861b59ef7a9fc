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
    assert ad.implies["discretization"] == "mamba" and ad.implies["real_output"] == "2re"


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
