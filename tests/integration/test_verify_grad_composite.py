"""The gradient harness (``verify(..., grad=True)``) on the composite ops, through torch autograd.

* PyTorch's ``torch.nn.functional.multi_head_attention_forward`` (real upstream code, the op's
  ``torch.multi_head_attention_forward`` adapter: ``nn.MultiheadAttention``'s shapes) conforms: its autograd
  gradients of the inputs and all four projection weights match the Richardson differences of our float64 forward.
* performer-pytorch's ``FastAttention`` (the op's ``performer_pytorch.fast_attention`` adapters, the projection
  ``W`` passed as the module's tensor so that autograd reaches it): the gradient of ``v`` conforms, those of ``q``,
  ``k`` and ``W`` do not.  The op's gradient convention is the features op's default, the stabilizers' max
  differentiated *through*; ``softmax_kernel`` subtracts its max under ``.detach()``, and with its ``eps = 1e-4``
  inside the features the offsets no longer cancel in ``o``.  A literal torch replica of the same forward shows it
  is exactly that: with the ``.detach()`` it fails the same way, without it it conforms.  (Causal ``FastAttention``
  also raises on L = 0: ``torch.amax`` over an empty axis.)
* literal torch forwards of the three ops (multi-head with bottom-right causal cross attention, Performer with the
  query max, the HiPPO LegS projection with ``c0``) conform with their autograd gradients.

Skips when torch or performer-pytorch is absent.
"""
import functools
import math

import numpy as np
import pytest

from oracles.verify import verify

FEW = dict(max_examples=1, seed=5, probes=False)


def _torch():
    return pytest.importorskip("torch")


def _grad_msg(rep):
    return rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


def test_torch_multi_head_attention_forward_gradient_conforms():
    torch = _torch()
    rep = verify("attention.multi_head", torch.nn.functional.multi_head_attention_forward,
                 adapter="torch.multi_head_attention_forward", framework="torch", grad=True, dtype="float64",
                 forward=False, **FEW)
    assert rep.passed, _grad_msg(rep)


def _fast_attention(q, k, v, W, causal=False):
    pp = pytest.importorskip("performer_pytorch.performer_pytorch")
    fa = pp.FastAttention(dim_heads=q.shape[-1], nb_features=W.shape[0], causal=causal).to(q.dtype)
    fa.projection_matrix = W      # the tensor itself (not a copy under no_grad): autograd reaches W
    return fa(q, k, v)


def _replica(q, k, v, W, detach=True):
    """performer-pytorch's non-causal FastAttention written out (head-first ``(b h n d)``): ``softmax_kernel``'s
    features (``x d^-1/4``, eps 1e-4, queries minus the row max of ``W x``, keys minus the head max), then
    normalized linear attention; ``detach`` its stop-gradient on the max."""
    torch = _torch()
    d = q.shape[-1]
    m = W.shape[0]

    def feats(x, is_query):
        xs = x * d ** -0.25
        wx = torch.einsum("bhnd,fd->bhnf", xs, W)
        diag = (xs ** 2).sum(-1, keepdim=True) / 2
        c = wx.amax(dim=-1, keepdim=True) if is_query else wx.amax(dim=(-1, -2), keepdim=True)
        if detach:
            c = c.detach()
        return (torch.exp(wx - diag - c) + 1e-4) / math.sqrt(m)

    pq, pk = feats(q, True), feats(k, False)
    den = torch.einsum("bhnf,bhf->bhn", pq, pk.sum(-2))
    return torch.einsum("bhnf,bhfe->bhne", pq, torch.einsum("bhnf,bhne->bhfe", pk, v)) / den[..., None]


def test_performer_pytorch_fast_attention_gradient_misses_the_detached_max():
    _torch()
    pytest.importorskip("performer_pytorch.performer_pytorch")
    rep = verify("attention.performer", _fast_attention, adapter="performer_pytorch.fast_attention",
                 framework="torch", grad=True, dtype="float64", **FEW)
    assert not rep.passed
    line = rep.grad_line()
    assert "grad v: conforms" in line and "grad q: DOES NOT CONFORM" in line and "grad W: DOES NOT CONFORM" in line, \
        line
    # the replica with the .detach() fails the same way; without it, it conforms: the deviation is the convention
    same = verify("attention.performer", _replica, adapter="performer_pytorch.fast_attention", framework="torch",
                  grad=True, dtype="float64", **FEW)
    assert not same.passed and "grad v: conforms" in same.grad_line(), same.grad_line()
    through = verify("attention.performer", functools.partial(_replica, detach=False),
                     adapter="performer_pytorch.fast_attention", framework="torch", grad=True, dtype="float64", **FEW)
    assert through.passed, _grad_msg(through)


def _torch_multi_head(x_q, x_kv, W_Q, W_K, W_V, W_O):
    """Bottom-right causal multi-head attention, literal torch (canonical layout)."""
    torch = _torch()
    q = torch.einsum("bld,hdn->bhln", x_q, W_Q)
    k = torch.einsum("bsd,hdn->bhsn", x_kv, W_K)
    v = torch.einsum("bsd,hdp->bhsp", x_kv, W_V)
    l, s = q.shape[2], k.shape[2]
    S = torch.einsum("bhln,bhsn->bhls", q, k) / math.sqrt(q.shape[-1])
    keep = torch.arange(s)[None, :] <= torch.arange(l)[:, None] + (s - l)
    S = S.masked_fill(~keep, float("-inf"))
    P = torch.nan_to_num(torch.softmax(S, dim=-1))   # a row with no key: 0
    z = torch.einsum("bhls,bhsp->blhp", P, v)
    return z.reshape(z.shape[0], l, -1) @ W_O


def test_literal_torch_multi_head_gradient_conforms():
    _torch()
    rep = verify("attention.multi_head", _torch_multi_head, conventions={"causal": "bottom_right"},
                 framework="torch", grad=True, dtype="float64", kinds=("golden", "edge"), forward=False, probes=False)
    assert rep.passed, _grad_msg(rep)


def _torch_performer(q, k, v, W):
    """Non-causal normalized Performer attention with positive features and the query row max (through)."""
    torch = _torch()
    r = q.shape[-1] ** -0.25
    m = W.shape[0]

    def feats(x, stab):
        xs = x * r
        z = torch.einsum("blhd,fd->blhf", xs, W) - (xs ** 2).sum(-1, keepdim=True) / 2
        c = z.amax(dim=-1, keepdim=True) if stab and z.numel() else 0.0
        return torch.exp(z - c) / math.sqrt(m)

    pq, pk = feats(q, True), feats(k, False)
    A = torch.einsum("blhf,bshf->bhls", pq, pk)
    return torch.einsum("bhls,bshe->blhe", A, v) / A.sum(-1).transpose(1, 2)[..., None]


def test_literal_torch_performer_gradient_conforms():
    _torch()
    rep = verify("attention.performer", _torch_performer, conventions={"query_stabilizer": "row_max"},
                 framework="torch", grad=True, dtype="float64", kinds=("golden", "edge"), forward=False, probes=False,
                 domain={"min_length": 1})
    assert rep.passed, _grad_msg(rep)


def _torch_hippo(f, N, dt, c0=None):
    """The LegS bilinear trapezoid recurrence, literal torch (dt drops out: t_k = (k + 1) dt)."""
    torch = _torch()
    from oracles.composite_grad_forward import hippo_matrices

    N = int(N)
    A, B = (torch.as_tensor(a, dtype=f.dtype) for a in hippo_matrices("legs", N))
    I = torch.eye(N, dtype=f.dtype)
    L = f.shape[0]
    c = c0 if c0 is not None else torch.cat([f[:1], torch.zeros(N - 1, dtype=f.dtype)])
    rows = [c] if L else []
    for k in range(L - 1):
        h0, h1 = 1.0 / (k + 1), 1.0 / (k + 2)
        rhs = (I + 0.5 * h0 * A) @ c + B * (0.5 * h1 * f[k + 1] + 0.5 * h0 * f[k])
        c = torch.linalg.solve(I - 0.5 * h1 * A, rhs)
        rows.append(c)
    return torch.stack(rows) if rows else torch.zeros((0, N), dtype=f.dtype) + 0 * dt


def test_literal_torch_hippo_gradient_conforms():
    _torch()
    rep = verify("ssm.hippo_projection", _torch_hippo, framework="torch", grad=True, dtype="float64",
                 kinds=("golden", "edge"), forward=False, probes=False)
    assert rep.passed, _grad_msg(rep)
