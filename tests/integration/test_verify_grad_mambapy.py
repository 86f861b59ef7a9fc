"""``verify --grad`` on real upstream code: mambapy's selective scan differentiated by PyTorch autograd.

``MambaBlock.selective_scan`` runs its parallel scan through ``pscan`` -- a ``torch.autograd.Function`` with a
hand-written backward (the reverse scan) -- and ``selective_scan_seq`` is the plain loop that autograd
differentiates step by step.  Both are checked against Richardson central differences of the float64 banded-solve
forward (``oracles.selective.s6_solve``), every input's gradient (u, delta, A, B, C, D) within the differences'
error plus the derived bound of a backward in the candidate's dtype.  Then a planted backward bug: the same
candidate wrapped in a ``torch.autograd.Function`` whose backward drops the ``D u`` skip's term from ``du`` --
caught, and the diagnosis names ``u``.  Skips cleanly without torch or mambapy.
"""
import types

import numpy as np
import pytest

from oracles.verify import verify

MAMBAPY = {"complex_A": False}  # mambapy's A is real; its Delta is taken as given (delta_softplus=False)
FEW = dict(max_examples=2, seed=3)


def _mambapy_scan(method="selective_scan"):
    pytest.importorskip("torch")
    mamba = pytest.importorskip("mambapy.mamba")

    def fn(x, delta, A, B, C, D):
        # selective_scan never reads self; selective_scan_seq reads self.config.d_inner and d_state
        cfg = types.SimpleNamespace(d_inner=A.shape[0], d_state=A.shape[1])
        return getattr(mamba.MambaBlock, method)(types.SimpleNamespace(config=cfg), x, delta, A, B, C, D)

    fn.__module__, fn.__qualname__ = "mambapy.mamba", f"MambaBlock.{method}"
    return fn


@pytest.mark.parametrize("method, algorithm", [("selective_scan", "scan"), ("selective_scan_seq", "recurrent")])
def test_mambapy_autograd_conforms(method, algorithm):
    fn = _mambapy_scan(method)
    # L = 0 is outside mambapy's domain (pscan takes log2(0); the loop stacks nothing): declared, as for the forward
    rep = verify("ssm.selective_scan", fn, adapter="mambapy.selective_scan", framework="torch", grad=True,
                 conventions=dict(MAMBAPY, algorithm=algorithm), domain={"min_length": 1}, dtype="float64", **FEW)
    assert rep.passed, rep.to_text()
    text = rep.to_text()
    assert "gradient" in text


def test_planted_backward_bug_is_caught_and_names_u():
    torch = pytest.importorskip("torch")
    inner = _mambapy_scan("selective_scan")

    class DropSkipTerm(torch.autograd.Function):
        """mambapy's forward; the backward is autograd's through it, minus ``D * dy`` in ``du`` (the skip's term)."""

        @staticmethod
        def forward(ctx, x, delta, A, B, C, D):
            ctx.save_for_backward(x, delta, A, B, C, D)
            with torch.no_grad():
                return inner(x, delta, A, B, C, D)

        @staticmethod
        def backward(ctx, gy):
            x, delta, A, B, C, D = (t.detach().requires_grad_(True) for t in ctx.saved_tensors)
            with torch.enable_grad():
                y = inner(x, delta, A, B, C, D)
                gx, gdelta, gA, gB, gC, gD = torch.autograd.grad(y, (x, delta, A, B, C, D), gy)
            return gx - D * gy, gdelta, gA, gB, gC, gD  # the planted bug: du loses the D u skip's term

    def buggy(x, delta, A, B, C, D):
        return DropSkipTerm.apply(x, delta, A, B, C, D)

    buggy.__module__, buggy.__qualname__ = __name__, "buggy_mambapy_selective_scan"
    rep = verify("ssm.selective_scan", buggy, adapter="mambapy.selective_scan", framework="torch", grad=True,
                 conventions=dict(MAMBAPY, algorithm="scan"), domain={"min_length": 1}, dtype="float64", **FEW)
    assert not rep.passed
    text = rep.to_text()
    assert "grad u is wrong" in text, text
    # the forward is mambapy's own and conforms; only the gradient fails
    assert "forward: conforms" in rep.summary(), rep.summary()


def torch_s6(u, delta, A, B, C, D=None, z=None, delta_bias=None, h0=None):
    """A small literal torch S6 in the op's canonical layout (``u, delta, z (b d l)``, variable ``B, C (b n l)``),
    softplus with threshold 20, complex A (``2 Re``), every optional input: autograd differentiates it."""
    import torch

    x = delta + (0 if delta_bias is None else delta_bias[None, :, None])
    Dt = torch.nn.functional.softplus(x, threshold=20.0)
    b, d, L = u.shape
    n = A.shape[1]
    h = torch.zeros((b, d, n), dtype=A.dtype) if h0 is None else h0.to(A.dtype)
    ys = []
    for t in range(L):
        w = Dt[:, :, t, None] * A
        h = torch.exp(w) * h + (Dt[:, :, t, None] * u[:, :, t, None]) * B[:, None, :, t]
        y = (h * C[:, None, :, t]).sum(-1)
        y = 2 * y.real if A.is_complex() else y
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * torch.nn.functional.silu(z[:, :, t])
        ys.append(y)
    out = torch.stack(ys, dim=-1) if ys else torch.zeros((b, d, 0), dtype=u.dtype)
    return out, h


def test_literal_torch_s6_with_complex_A_conforms():
    pytest.importorskip("torch")
    rep = verify("ssm.selective_scan", torch_s6, framework="torch", grad=True,
                 conventions={"delta_softplus": True, "B_layout": "variable", "C_layout": "variable"},
                 dtype="float64", **FEW)
    assert rep.passed, rep.to_text()
