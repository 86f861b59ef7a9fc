"""Real upstream code: PyTorch's ``torch.nn.functional.scaled_dot_product_attention`` backward (its autograd) verified
with ``verify(..., grad=True)`` against Richardson differences of the float64 oracle forward
(:mod:`oracles.verify.grad_softmax`): float64 and float32 under the derived backward bound, float16 / bfloat16 under
the same-dtype baseline rule applied to refimpl's backward run in that dtype (P, dS, O stored in it); causal (top-left, torch's
``is_causal``) and not, an additive bias (``attn_mask`` float, its gradient pulled back to the canonical bias) and
grouped-query key/value heads (``enable_gqa``)."""
import pytest

from oracles.verify import verify

FEW = dict(max_examples=1, seed=5, forward=False, grad=True)


def _sdpa(torch):
    return torch.nn.functional.scaled_dot_product_attention


def test_torch_sdpa_backward_conforms_in_float64_and_float32_causal():
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", _sdpa(torch), adapter="torch.sdpa", framework="torch",
                 conventions={"causal": "top_left"}, dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert rep.grad_route == "torch.autograd.grad"


def test_torch_sdpa_backward_with_a_float_bias_gets_the_bias_gradient():
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", _sdpa(torch), adapter="torch.sdpa", framework="torch",
                 conventions={"use_bias": True}, dtype=["float64"], **FEW)
    assert rep.passed, rep.to_text()
    assert "grad bias: conforms" in rep.to_text()


def test_torch_sdpa_backward_with_grouped_kv_heads():
    torch = pytest.importorskip("torch")
    if "enable_gqa" not in (_sdpa(torch).__doc__ or ""):
        pytest.skip("this torch has no enable_gqa (added in torch 2.5)")
    rep = verify("attention.softmax", _sdpa(torch), adapter="torch.sdpa", framework="torch",
                 conventions={"grouped_kv": True, "causal": "top_left"}, dtype=["float64"], **FEW)
    assert rep.passed, rep.to_text()


@pytest.mark.parametrize("conv,dtypes", [({"causal": "top_left"}, ["float16", "bfloat16"]), ({}, ["bfloat16"]),
                                         ({"use_bias": True}, ["float16"])], ids=["causal", "full", "bias"])
def test_torch_sdpa_backward_in_low_precision_under_the_baseline_rule(conv, dtypes):
    """float16/bfloat16 under the baseline rule applied to our backward *run in that dtype* (the recomputed P, dS and
    the saved O stored in the dtype, float32 arithmetic: :func:`oracles.verify.grad_softmax.storing_sdpa_vjp`).
    Before that baseline (only the final gradient rounded) 3 of 16 cases failed at 2.1-3.4x (torch 2.13 CPU)."""
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", _sdpa(torch), adapter="torch.sdpa", framework="torch",
                 conventions=conv, dtype=dtypes, kinds=("golden", "edge"), **FEW)
    assert rep.passed, rep.to_text()
    assert f"{8 * len(dtypes)}/{8 * len(dtypes)} gradient cases pass" in rep.to_text(), rep.to_text()  # none skipped


def _sdpa_dropped_D(torch):
    """The right forward (SDPA's math in the input dtype) with a planted backward bug: ``dS = P o dP``, the
    ``- rowsum(dO o O)`` term dropped."""

    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, scale):
            s = (q @ k.transpose(-1, -2)) * scale
            p = torch.softmax(s.float(), dim=-1).to(q.dtype)
            ctx.save_for_backward(q, k, v, p)
            ctx.scale = scale
            return p @ v

        @staticmethod
        def backward(ctx, do):
            q, k, v, p = ctx.saved_tensors
            dv = p.transpose(-1, -2) @ do
            dp = do @ v.transpose(-1, -2)
            ds = p * dp  # planted: no "- D"
            return (ds @ k) * ctx.scale, (ds.transpose(-1, -2) @ q) * ctx.scale, dv, None

    def fn(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        assert attn_mask is None and not is_causal
        sc = scale if scale is not None else query.shape[-1] ** -0.5
        return F.apply(query, key, value, sc)

    return fn


def test_a_planted_fp16_backward_bug_still_fails_under_the_storing_baseline():
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", _sdpa_dropped_D(torch), adapter="torch.sdpa", framework="torch",
                 dtype=["float16"], kinds=("golden", "edge"), **FEW)
    assert not rep.passed, rep.to_text()
    assert "grad q: DOES NOT CONFORM" in rep.to_text(), rep.to_text()
