"""The verify harness on code nobody here wrote: scipy, mambapy, performer-pytorch, PyTorch.

Each test skips cleanly when its package is absent (``.ci/optional-requirements.txt`` installs them
in CI).  Where the third-party code deviates from the math, the harness must say so with a clear
reason -- and these tests assert that it does.
"""
import functools

import numpy as np
import pytest

from oracles.verify import verify

FEW = dict(max_examples=3, seed=3)


# -- scipy.signal.cont2discrete ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_scipy_cont2discrete_conforms_under_its_output_convention(method):
    scipy_signal = pytest.importorskip("scipy.signal")
    rep = verify("ssm.discretize", scipy_signal.cont2discrete, adapter="scipy.cont2discrete",
                 conventions={"method": method, "output": "shifted"}, dtype="float64", **FEW)
    assert rep.passed, rep.to_text()
    # every case compared all four matrices
    assert all({o.output for o in c.outputs} == {"A_bar", "B_bar", "C_d", "D_d"} for c in rep.cases)


def test_scipy_bilinear_deviates_from_s4s_output_convention_and_the_harness_says_why():
    scipy_signal = pytest.importorskip("scipy.signal")
    rep = verify("ssm.discretize", scipy_signal.cont2discrete, adapter="scipy.cont2discrete",
                 conventions={"method": "bilinear"}, dtype="float64", **FEW)  # output='s4' (the default)
    assert not rep.passed
    for c in rep.failures:
        ok = {o.output for o in c.outputs if o.passed}
        assert {"A_bar", "B_bar"} <= ok  # the transition and input matrices are right...
        assert "output='shifted' instead of 's4'" in c.diagnosis  # ...C_d, D_d follow the shifted state
    # zoh keeps C and D: no deviation there
    zoh = verify("ssm.discretize", scipy_signal.cont2discrete, adapter="scipy.cont2discrete",
                 conventions={"method": "zoh"}, dtype="float64", **FEW)
    assert zoh.passed, zoh.to_text()


# -- mambapy's selective scan ------------------------------------------------------------------------------

def _mambapy_scan(method="selective_scan"):
    pytest.importorskip("torch")
    mamba = pytest.importorskip("mambapy.mamba")
    import types

    def fn(x, delta, A, B, C, D):
        # selective_scan never reads self; selective_scan_seq reads self.config.d_inner and d_state
        cfg = types.SimpleNamespace(d_inner=A.shape[0], d_state=A.shape[1])
        return getattr(mamba.MambaBlock, method)(types.SimpleNamespace(config=cfg), x, delta, A, B, C, D)

    fn.__module__, fn.__qualname__ = "mambapy.mamba", f"MambaBlock.{method}"
    return fn


MAMBAPY = {"complex_A": False}  # what mambapy's code does: real A (its Delta is taken as given: the default)


@pytest.mark.parametrize("method, algorithm", [("selective_scan", "scan"), ("selective_scan_seq", "recurrent")])
def test_mambapy_selective_scan_conforms_except_at_L0(method, algorithm):
    fn = _mambapy_scan(method)
    # the parallel (pscan) and the sequential version each declare their own evaluation order: the adapter fixes
    # only the layout
    rep = verify("ssm.selective_scan", fn, adapter="mambapy.selective_scan", framework="torch",
                 conventions=dict(MAMBAPY, algorithm=algorithm), dtype=["float64", "float32"], **FEW)
    ran = [c for c in rep.cases if not c.skipped]
    empty = [c for c in ran if c.shapes["u"][2] == 0]
    nonempty = [c for c in ran if c.shapes["u"][2] > 0]
    assert empty and nonempty
    # every non-empty sequence (L = 1, 5, 40, 65 = 2^6 + 1 padded, 2048, ...) is within the derived bound
    assert all(c.passed for c in nonempty), rep.to_text()
    # the known deviation: an empty sequence (pscan's power-of-two padding takes log2(0); the loop stacks nothing)
    for c in empty:
        assert not c.passed and ("math domain error" in c.error or "non-empty TensorList" in c.error)
    assert all(p.passed for p in rep.probes), rep.to_text()  # causal; runs without D (zeros passed for it)
    # declared, the empty sequence is outside the domain and the rest conforms
    rep = verify("ssm.selective_scan", fn, adapter="mambapy.selective_scan", framework="torch",
                 conventions=dict(MAMBAPY, algorithm=algorithm), domain={"min_length": 1}, dtype="float32", **FEW)
    assert rep.passed and rep.outside_domain, rep.to_text()


def test_mambapy_complex_A_is_the_candidates_to_declare():
    fn = _mambapy_scan()
    rep = verify("ssm.selective_scan", fn, adapter="mambapy.selective_scan", framework="torch",
                 conventions={"algorithm": "scan"}, domain={"min_length": 1}, dtype="float64", **FEW)
    # complex A is not fixed by the layout: undeclared, the complex cases fail (mambapy returns a complex y)
    assert not rep.passed
    assert any(c.case_id == "edge-complex" for c in rep.failures)
    assert all(c.passed for c in rep.cases if c.case_id in ("golden-small", "edge-groups"))


# -- performer-pytorch -------------------------------------------------------------------------------------

def _softmax_kernel():
    pytest.importorskip("torch")
    return pytest.importorskip("performer_pytorch.performer_pytorch").softmax_kernel


def test_performer_pytorch_key_features_depend_on_future_keys_and_the_harness_says_why():
    softmax_kernel = _softmax_kernel()
    rep = verify("features.performer", softmax_kernel, adapter="performer_pytorch.softmax_kernel",
                 framework="torch", dtype="float64", **FEW)  # against the math: no stabilizer
    assert not rep.passed
    probe = {p.name: p for p in rep.probes}["row_locality"]
    assert not probe.passed
    assert "depend on future keys" in probe.message and "not applied per position" in probe.message
    # the value mismatch is diagnosed as the per-head max over all key positions
    assert any("stabilizer='head_max_wx'" in d for d in rep.deviations()), rep.deviations()
    # under that (named) convention the values are right
    named = verify("features.performer", softmax_kernel, adapter="performer_pytorch.softmax_kernel",
                   framework="torch", conventions={"stabilizer": "head_max_wx"}, dtype=["float64", "float32"], **FEW)
    assert named.passed, named.to_text()


def test_performer_pytorch_query_features_are_row_local():
    softmax_kernel = _softmax_kernel()
    rep = verify("features.performer", softmax_kernel, adapter="performer_pytorch.softmax_kernel.query",
                 framework="torch", conventions={"stabilizer": "row_max_wx"}, dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    # the probe runs in each requested dtype, under that dtype's bound
    assert [(p.name, p.dtype) for p in rep.probes if p.name == "row_locality"] == [("row_locality", "float64"),
                                                                                   ("row_locality", "float32")]
    assert all(p.passed for p in rep.probes)


def test_performer_pytorch_orthogonal_draw_is_not_haar():
    torch = pytest.importorskip("torch")
    pp = pytest.importorskip("performer_pytorch.performer_pytorch")

    def draw(m, d, seed):
        torch.manual_seed(seed)
        return pp.gaussian_orthogonal_random_matrix(m, d, scaling=0)

    rep = verify("features.orthogonal_projection", draw, dtype="float32", kinds=("golden",))
    assert all(c.passed for c in rep.cases), rep.to_text()  # the blocks are orthogonal (float32 rounding)...
    probe = rep.probes[0]
    assert not probe.passed and "unsigned QR" in probe.message  # ...but the directions are not Haar


# -- PyTorch's scaled_dot_product_attention --------------------------------------------------------------

def test_torch_sdpa_conforms_in_every_dtype():
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", torch.nn.functional.scaled_dot_product_attention, adapter="torch.sdpa",
                 framework="torch", conventions={"causal": "top_left"},
                 dtype=["float64", "float32", "float16", "bfloat16"], **FEW)
    assert rep.passed, rep.to_text()
    lowp = [o for c in rep.cases if c.dtype in ("float16", "bfloat16") for o in c.outputs]
    assert lowp and all(o.baseline_multiple is not None for o in lowp)
    with pytest.raises(ValueError, match="top-left"):
        verify("attention.softmax", torch.nn.functional.scaled_dot_product_attention, adapter="torch.sdpa",
               framework="torch", conventions={"causal": "bottom_right"}, kinds=("golden",))


# -- the Mamba selective_scan_fn interface, end to end ---------------------------------------------------------

def _scan_in_mamba_interface(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """A PyTorch selective scan written to mamba_ssm's selective_scan_fn interface (our own code): complex
    variable B/C arrive as real tensors with (re, im) interleaved along L; output 2 Re(C h) for complex A."""
    import torch

    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    cplx = A.is_complex()

    def per_step(X):  # -> (b or 1, d or 1, n, l) complex/real
        if X.dim() == 2:  # fixed (d n)
            return X[None, :, :, None]
        if cplx:
            X = torch.view_as_complex(X.reshape(*X.shape[:-1], X.shape[-1] // 2, 2).contiguous())
        if X.dim() == 3:  # variable (b n l)
            return X[:, None]
        g = X.shape[1]  # grouped (b g n l): channel c reads group c // (d / g)
        return X.repeat_interleave(u.shape[1] // g, dim=1)

    Bs, Cs = per_step(B), per_step(C)
    b, d, l = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=A.dtype if cplx else u.dtype)
    ys = []
    for t in range(l):
        Bt = Bs[..., t if Bs.shape[-1] > 1 else 0]
        Ct = Cs[..., t if Cs.shape[-1] > 1 else 0]
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t, None] * Bt) * u[:, :, t, None]
        y = (h * Ct).sum(-1)
        ys.append(2 * y.real if cplx else y)
    out = torch.stack(ys, dim=-1) if ys else torch.zeros(b, d, 0, dtype=u.dtype)
    if D is not None:
        out = out + D[:, None] * u
    if z is not None:
        out = out * torch.nn.functional.silu(z)
    return (out, h) if return_last_state else out


def test_mamba_selective_scan_fn_interface_with_complex_interleaved_B_C():
    pytest.importorskip("torch")
    for complex_A in (False, True):
        rep = verify("ssm.selective_scan", _scan_in_mamba_interface, adapter="mamba.selective_scan_fn",
                     framework="torch", conventions={"delta_softplus": True, "complex_A": complex_A},
                     dtype=["float64", "float32"], **FEW)
        assert rep.passed, rep.to_text()
    # cases did include complex A with variable and grouped B/C (the interleaved path)
    interleaved = [c for c in rep.cases if len(c.shapes["B"]) >= 3]
    assert interleaved


# -- a JAX candidate (arrays reach it as jax.Array) ---------------------------------------------------------

def test_jax_candidate_receives_jax_arrays():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    seen = []

    def jax_attention(q, k, v, scale=None, causal=False, alignment=None):
        seen.append(type(q).__module__)
        s = jnp.einsum("bihd,bjhd->bhij", q, k) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if causal:  # top_left keeps j <= i; bottom_right keeps j <= i + lk - lq (the argument-path probe passes both)
            lq, lk = s.shape[-2:]
            off = 0 if alignment == "top_left" else lk - lq
            s = jnp.where(jnp.tril(jnp.ones((lq, lk), bool), k=off), s, -jnp.inf)
        p = jnp.nan_to_num(jax.nn.softmax(s, axis=-1))  # fully masked (empty) rows -> 0
        return jnp.einsum("bhij,bjhe->bihe", p, v)

    rep = verify("attention.softmax", jax_attention, adapter="refimpl", framework="jax",
                 conventions={"causal": "top_left"}, dtype="float32", **FEW)
    assert rep.passed, rep.to_text()
    assert seen and all(m.startswith("jax") for m in seen)
