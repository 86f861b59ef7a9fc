"""The fused S6 Numba kernel's fast path (issue 16): channel blocks, layouts, the in-kernel softplus, gate and checks.

The fast path (real ``A``, Euler ``B``) runs over blocks of 64 adjacent channels with the time staged in chunks
of 16 steps, computes ``Delta = softplus(delta + delta_bias)`` and ``silu(z)`` itself and keeps the reference's
checks as per-lane flags (``refimpl/ssm/selective/numba.py``).  These tests take it where the small property-test
sizes do not: several blocks and a partial last one (``d = 70``, ``d = 128``), every ``B``/``C`` layout, groups
that are shared by a whole block and groups that are not, ``l`` not a multiple of the time chunk; the softplus
and the gate against float64 within the error the module docstring derives; the error of a bad ``Delta``.
"""
from __future__ import annotations

import numpy as np
import pytest

from oracles import selective as O
from oracles.tolerance import assert_within
from refimpl.ssm.selective import reference as R
from refimpl.ssm.selective import selective_scan

U32 = 2.0 ** -24


def _problem(rng, d, B_layout, C_layout, dtype, b=2, l=37, n=5):
    def bc(layout):
        if layout == "fixed":
            return rng.standard_normal((d, n))
        if layout == "variable":
            return rng.standard_normal((b, l, n))
        g = int(layout.split("=")[1])
        return rng.standard_normal((b, l, g, n))

    args = dict(u=rng.standard_normal((b, l, d)), delta=rng.standard_normal((b, l, d)) - 1.0,
                A=-np.exp(rng.standard_normal((d, n))), B=bc(B_layout), C=bc(C_layout), D=rng.standard_normal(d),
                z=rng.standard_normal((b, l, d)))
    kw = dict(delta_bias=rng.standard_normal(d) * 0.1, delta_softplus=True,
              initial_state=rng.standard_normal((b, d, n)))
    return {k: v.astype(dtype) for k, v in args.items()}, {k: (v.astype(dtype) if isinstance(v, np.ndarray) else v)
                                                         for k, v in kw.items()}


# d = 70: one full block and a partial one (6 channels); d = 128: two full blocks. Groups: g = 2 of d = 128 is
# 64 channels per group (each block reads one group: the shared step), g = 2 of d = 70 and g = 5 are not.
@pytest.mark.parametrize("d,B_layout,C_layout", [
    (70, "variable", "variable"), (70, "fixed", "variable"), (70, "variable", "g=5"), (70, "g=2", "fixed"),
    (128, "g=2", "g=2"), (128, "variable", "g=2"), (128, "fixed", "fixed")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_blocks_and_layouts_within_the_derived_bound(d, B_layout, C_layout, dtype):
    rng = np.random.default_rng(d + len(B_layout) + 3 * len(C_layout))
    a, kw = _problem(rng, d, B_layout, C_layout, dtype)
    args = (a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"])
    out, last = selective_scan(*args, backend="numba", return_final_state=True, **kw)
    assert out.dtype == dtype and last.dtype == dtype
    y, h = O.s6_solve(*args, **kw)
    bo, bs = O.s6_bound(*args, view="numba", dtype=dtype, **kw)
    assert_within(out, y, bo, context=f"out d={d} B={B_layout} C={C_layout}")
    assert_within(last, h, bs, context=f"final state d={d} B={B_layout} C={C_layout}")


def test_split_and_resume_is_bit_for_bit_across_blocks_and_chunks():
    rng = np.random.default_rng(7)
    a, kw = _problem(rng, 70, "fixed", "g=5", np.float32, l=41)
    args = (a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"])
    whole, h_whole = selective_scan(*args, backend="numba", return_final_state=True, **kw)
    k = 19  # inside the second time chunk of 16
    first = (a["u"][:, :k], a["delta"][:, :k], a["A"], a["B"], a["C"][:, :k], a["D"], a["z"][:, :k])
    rest = (a["u"][:, k:], a["delta"][:, k:], a["A"], a["B"], a["C"][:, k:], a["D"], a["z"][:, k:])
    kw1 = dict(kw)
    o1, h1 = selective_scan(*first, backend="numba", return_final_state=True, **kw1)
    kw1["initial_state"] = h1
    o2, h2 = selective_scan(*rest, backend="numba", return_final_state=True, **kw1)
    assert np.array_equal(np.concatenate([o1, o2], axis=1), whole)
    assert np.array_equal(h2, h_whole)


def _read_Delta(delta, bias=None, softplus=True, allow_unstable=False):
    """The kernel's own Delta, read off a one-step scan: n = 1, A = 0, B = C = u = 1, no D, h_{-1} = 0 gives
    out_0 = Delta_0 exactly (exp(0) = 1, Delta * 1, 1 * Delta: no rounding)."""
    d = delta.shape[-1]
    dt = delta.dtype
    one = np.ones((1, 1, d), dtype=dt)
    return selective_scan(one, delta.reshape(1, 1, d), np.zeros((d, 1), dt), np.ones((d, 1), dt),
                          np.ones((d, 1), dt), backend="numba", delta_bias=bias, delta_softplus=softplus,
                          allow_unstable=allow_unstable)[0, 0]


def _softplus64(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > R.SOFTPLUS_THRESHOLD, x, np.logaddexp(0.0, np.minimum(x, R.SOFTPLUS_THRESHOLD)))


def test_kernel_softplus_float32_within_its_derived_error():
    """The float32 softplus of the kernel within the 9.4u relative error the module docstring derives (the exp's
    gamma_4, the division, the series, the products and the sum; 9.5u with the second-order terms), over the whole
    range: the x < -64 shift, the subnormal results (a few roundings of 2^-150 each), the threshold 20 (the
    identity above it)."""
    x = np.concatenate([np.linspace(-130.0, 30.0, 4001), [-104.0, -87.5, -64.0, -63.99, -20.0, 0.0, 20.0,
                                                          np.nextafter(np.float32(20), np.float32(30))]])
    x = x.astype(np.float32)
    got = _read_Delta(x).astype(np.float64)
    want = _softplus64(x)
    tiny = 2.0 * 2.0 ** -149  # subnormal results: e, s and the product each round to the spacing 2^-149
    err = np.abs(got - want)
    assert np.all(err <= 9.5 * U32 * want + tiny), float(np.max((err - tiny) / (want * U32)))
    assert np.array_equal(got[x > 20], x[x > 20].astype(np.float64))  # the identity above the threshold
    # no flush to zero while the result is at least 2^-148 (below, s = e/2 may round to 0: an absolute 2^-149)
    assert np.all(got[want >= 2.0 ** -148] > 0)


def test_kernel_softplus_float64_and_bias_as_the_reference():
    rng = np.random.default_rng(2)
    x = rng.uniform(-40, 30, 257)
    bias = rng.uniform(-1, 1, 257)
    got = _read_Delta(x, bias)
    want = R.effective_delta(x, bias, True)
    # the same formula (log1p(exp(delta + bias)), identity above 20) by libm instead of NumPy: 2 k_fn u apart
    assert np.all(np.abs(got - want) <= 2 * O.TRANSCENDENTAL_U * 2.0 ** -53 * np.abs(want))
    assert np.array_equal(_read_Delta(x, None, softplus=False, allow_unstable=True), x)  # no softplus: Delta = delta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_gate_silu_within_its_error(dtype):
    """out = (0 + D u) silu(z) with D = u = 1: silu by exp(-|z|), <= 6u relative (+ the final multiply)."""
    z = np.linspace(-80, 80, 1601).astype(dtype)[None, None, :]
    d = z.shape[-1]
    one = np.ones((1, 1, d), dtype)
    got = selective_scan(one, one, np.zeros((d, 1), dtype), np.zeros((d, 1), dtype), np.zeros((d, 1), dtype),
                         np.ones(d, dtype), z, backend="numba")[0, 0].astype(np.float64)
    z64 = z[0, 0].astype(np.float64)
    want = z64 / (1.0 + np.exp(-z64))
    u = U32 if dtype == np.float32 else 2.0 ** -53
    k = 7 if dtype == np.float32 else O.TRANSCENDENTAL_U + 3  # float64: libm's exp, within k_fn
    assert np.all(np.abs(got - want) <= k * u * np.abs(want) + 2.0 ** -126 * np.abs(z64))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_Delta_from_the_kernel_raises_the_reference_error(dtype):
    rng = np.random.default_rng(4)
    a, _ = _problem(rng, 70, "variable", "variable", dtype, b=1, l=5)
    args = (a["u"], a["delta"], a["A"], a["B"], a["C"])
    # no softplus: a negative Delta is an error unless allow_unstable
    with pytest.raises(ValueError, match=r"delta: expected the step Delta = \(delta \+ delta_bias\) >= 0") as e1:
        selective_scan(*args, backend="numba")
    with pytest.raises(ValueError) as e0:
        selective_scan(*args, backend="numpy")
    assert str(e1.value) == str(e0.value)
    out = selective_scan(*args, backend="numba", allow_unstable=True)
    assert np.all(np.isfinite(out))
    # delta + delta_bias overflows: not finite, with or without softplus and allow_unstable
    big = np.finfo(dtype).max
    delta = np.abs(a["delta"])
    delta[0, 3, 66] = big
    bias = np.zeros(70, dtype)
    bias[66] = big
    for sp in (True, False):
        with pytest.raises(ValueError, match=r"delta: delta \+ delta_bias is not finite at index \(0, 3, 66\)"):
            selective_scan(a["u"], delta, a["A"], a["B"], a["C"], backend="numba", delta_bias=bias,
                           delta_softplus=sp, allow_unstable=True)


@pytest.mark.parametrize("name,value", [("u", np.nan), ("delta", -np.inf), ("delta", np.inf), ("u", np.inf)])
@pytest.mark.parametrize("softplus", [True, False])
def test_non_finite_u_delta_found_by_the_kernel_raise_the_reference_error(name, value, softplus):
    """The fast path checks u and delta for finiteness in the kernel (not in a NumPy pass before it); the error is
    the reference's, naming the argument and the first bad index."""
    rng = np.random.default_rng(6)
    a, _ = _problem(rng, 70, "variable", "variable", np.float32, b=1, l=20)
    a["delta"] = np.abs(a["delta"])
    a[name][0, 17, 68] = value
    args = (a["u"], a["delta"], a["A"], a["B"], a["C"])
    with pytest.raises(ValueError) as e0:
        selective_scan(*args, backend="numpy", delta_softplus=softplus)
    with pytest.raises(ValueError, match=rf"{name}: expected finite values, got .* at index \(0, 17, 68\)") as e1:
        selective_scan(*args, backend="numba", delta_softplus=softplus)
    assert str(e1.value) == str(e0.value)
