"""Real upstream code: PyTorch's ``torch.nn.functional.scaled_dot_product_attention`` backward (its autograd) verified
with ``verify(..., grad=True)`` against Richardson differences of the float64 oracle forward
(:mod:`oracles.verify.grad_softmax`): float64 and float32 under the derived backward bound, float16 / bfloat16 under
the same-dtype baseline rule (refimpl's VJP in float32 arithmetic on the dtype's inputs); causal (top-left, torch's
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


@pytest.mark.xfail(strict=True, reason="observed (torch 2.13, CPU): torch's float16/bfloat16 SDPA backward rounds its "
                   "intermediates (P, dS) to the dtype and comes out 2-3.4x the error of the gradient baseline, which "
                   "is refimpl's VJP in float32 arithmetic rounded to the dtype (the harness's rule); 3 of 16 cases "
                   "(edge-block+1, edge-large-scores) exceed it. Recorded in the softmax README; strict: a change of "
                   "either side shows")
def test_torch_sdpa_backward_in_low_precision_under_the_baseline_rule():
    torch = pytest.importorskip("torch")
    rep = verify("attention.softmax", _sdpa(torch), adapter="torch.sdpa", framework="torch",
                 conventions={"causal": "top_left"}, dtype=["float16", "bfloat16"], kinds=("golden", "edge"),
                 **FEW)
    assert rep.passed, rep.to_text()
