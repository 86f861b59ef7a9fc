"""``refimpl verify --grad``: the torch route, the JAX route (complex gradients conjugated), the explicit-backward
route, broken backwards reported per case, the diagnosis naming the input, the CLI and ``refimpl ops``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from oracles.tolerance import componentwise_bound
from oracles.verify import verify
from oracles.verify.registry import (Arg, Case, GradSpec, OpSpec, _GRADS, get_grad, list_ops)

torch = pytest.importorskip("torch")

OP = "attention.fast_weights"



def _cases(ids=("grad-golden", "grad-L0", "grad-L1", "grad-L9")):
    conv = {"state_layout": "vk", "use_state": True}
    return [c for c in get_grad(OP).cases(conv) if c.case_id in ids]


FAST = dict(forward=False, probes=False, cases=_cases())  # the gradient verdict only, four listed cases


def torch_fast_weights(a, b_vec, x_read, W0=None):
    """A literal torch forward (the recurrence): its autograd graph is the candidate's backward."""
    b, l, h, p = a.shape
    W = torch.zeros(b, h, p, b_vec.shape[3], dtype=a.dtype) if W0 is None else W0
    ys = []
    for i in range(l):
        W = W + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", W, x_read[:, i]))
    y = torch.stack(ys, 1) if ys else torch.zeros(b, 0, h, p, dtype=a.dtype)
    return y, W


class _HalfDb(torch.autograd.Function):
    """The right forward, a backward whose gradient of b_vec is halved (a planted bug)."""

    @staticmethod
    def forward(ctx, a, b_vec, x_read, W0):
        ctx.save_for_backward(a, b_vec, x_read, W0)
        with torch.no_grad():
            return torch_fast_weights(a, b_vec, x_read, W0)

    @staticmethod
    def backward(ctx, gy, gW):
        leaves = [t.detach().requires_grad_(True) for t in ctx.saved_tensors]
        with torch.enable_grad():
            y, W = torch_fast_weights(*leaves)
            g = torch.autograd.grad((y * gy).sum() + (W * gW).sum(), leaves)
        return g[0], 0.5 * g[1], g[2], g[3]


def half_db_candidate(a, b_vec, x_read, W0=None):
    return _HalfDb.apply(a, b_vec, x_read, W0)


def test_torch_autograd_conforms_in_float64_and_float32():
    rep = verify(OP, torch_fast_weights, framework="torch", grad=True, dtype=["float64", "float32"], **FAST)
    assert rep.passed, rep.to_text()
    line = rep.grad_line()
    for name in ("a", "b_vec", "x_read", "W0"):
        assert f"grad {name}: conforms" in line
    d = rep.to_dict()
    assert d["grad"]["passed"] and d["forward_checked"] is False
    assert "torch.autograd.grad" in rep.summary()


def test_planted_backward_bug_is_caught_and_named():
    rep = verify(OP, half_db_candidate, framework="torch", grad=True, **FAST)
    assert not rep.passed and not rep.grad_passed
    assert "grad b_vec: DOES NOT CONFORM" in rep.grad_line() and "grad a: conforms" in rep.grad_line()
    diag = " ".join(c.diagnosis for c in rep.grad_cases if not c.passed)
    assert "grad b_vec is scaled by 0.5" in diag


def test_kv_state_layout_is_pulled_back():
    """The op's canonical adapter swaps W0/W_last under state_layout='kv': gradients come back canonical."""
    def kv(a, b_vec, x_read, W0=None):
        y, W = torch_fast_weights(a, b_vec, x_read, None if W0 is None else W0.transpose(-1, -2))
        return y, W.transpose(-1, -2)

    rep = verify(OP, kv, framework="torch", grad=True, conventions={"state_layout": "kv"}, forward=False,
                 probes=False, cases=[dataclasses.replace(c, conventions={"state_layout": "kv", "use_state": True})
                                      for c in _cases()])
    assert rep.passed, rep.to_text()


def test_no_gradient_flows_is_reported():
    def detached(a, b_vec, x_read, W0=None):
        return torch_fast_weights(a, b_vec, x_read.detach(), W0)

    rep = verify(OP, detached, framework="torch", grad=True, **FAST)
    assert not rep.passed
    assert "no gradient flows to x_read" in " ".join(c.diagnosis for c in rep.grad_cases)


@pytest.mark.slow
def test_jax_route():
    jnp = pytest.importorskip("jax.numpy")

    def jax_fw(a, b_vec, x_read, W0=None):
        b, l, h, p = a.shape
        W = jnp.zeros((b, h, p, b_vec.shape[3]), a.dtype) if W0 is None else W0
        ys = []
        for i in range(l):
            W = W + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
            ys.append(jnp.einsum("bhpn,bhn->bhp", W, x_read[:, i]))
        return (jnp.stack(ys, 1) if ys else jnp.zeros((b, 0, h, p), a.dtype)), W

    rep = verify(OP, jax_fw, framework="jax", grad=True, dtype=["float64"], forward=False, probes=False,
                 cases=_cases(("grad-L1",)))
    assert rep.passed, rep.to_text()


# -- a complex op (test-local: passed as an OpSpec, its GradSpec patched in for the test only) ----------------

def _cplx_spec():
    def oracle(inp, conv):
        return {"y": np.asarray(inp["A"]) * np.asarray(inp["x"])}

    def bounds(inp, out, conv, dtype):
        return {"y": componentwise_bound(np.abs(inp["A"]) * np.abs(inp["x"]), 1, dtype, complex_ops=True)}

    def sample(rng, conv):
        return {k: rng.standard_normal(4) + 1j * rng.standard_normal(4) for k in ("A", "x")}

    def cases(conv):
        return [Case("test.cscale", f"c{i}", "golden", sample(np.random.default_rng(i), conv), dict(conv), seed=i)
                for i in range(2)]

    spec = OpSpec("test.cscale", "y = A x elementwise (complex)", (Arg("A", "n"), Arg("x", "n")), (Arg("y", "n"),),
                  (), oracle, bounds, cases, sample, complex_inputs=("A", "x"), lowp=False)
    gspec = GradSpec("test.cscale", ("A", "x"), oracle,
                     bounds=lambda inp, g, conv, dtype, mags: {k: componentwise_bound(mags[k], 2, dtype,
                                                                                      complex_ops=True) for k in g},
                     cases=cases)
    return spec, gspec


def test_complex_gradients_torch_jax_and_the_conjugate(monkeypatch):
    spec, gspec = _cplx_spec()
    monkeypatch.setitem(_GRADS, spec.name, gspec)
    rep = verify(spec, lambda A, x: A * x, framework="torch", grad=True, probes=False, kinds=("golden",))
    assert rep.passed, rep.to_text()
    jnp = pytest.importorskip("jax.numpy")
    rep = verify(spec, lambda A, x: A * x, framework="jax", grad=True, probes=False, kinds=("golden",))
    assert rep.passed, rep.to_text()  # JAX's dL/da - i dL/db conjugated to ours

    class Conj(torch.autograd.Function):
        @staticmethod
        def forward(ctx, A, x):
            ctx.save_for_backward(A, x)
            return A * x

        @staticmethod
        def backward(ctx, g):
            A, x = ctx.saved_tensors
            return torch.conj(g * torch.conj(x)), g * torch.conj(A)  # the first one conjugated: a planted bug

    rep = verify(spec, Conj.apply, framework="torch", grad=True, probes=False, kinds=("golden",))
    assert not rep.passed
    diag = " ".join(c.diagnosis for c in rep.grad_cases)
    assert "grad A is the complex conjugate" in diag and "grad x" in rep.grad_line() and "grad x: conforms" in \
        rep.grad_line()


# -- the explicit-backward route ---------------------------------------------------------------------------

def _ref_grad_fn(a, b_vec, x_read, W0, dy, dW_last):
    g = get_grad(OP).reference_vjp({"a": a, "b_vec": b_vec, "x_read": x_read, "W0": W0},
                                   {"use_state": W0 is not None}, {"y": dy, "W_last": dW_last})
    return g


def test_grad_fn_route_and_broken_backwards():
    from oracles.mutants import reference_candidate

    fwd = reference_candidate(OP)
    rep = verify(OP, fwd, grad_fn=_ref_grad_fn, **FAST)
    assert rep.passed, rep.to_text()

    def raises(*args):
        raise RuntimeError("backward exploded")

    def wrong_shape(*args):
        g = _ref_grad_fn(*args)
        g["a"] = g["a"][:, :1]
        return g

    def nan(*args):
        g = _ref_grad_fn(*args)
        g["x_read"] = np.full_like(g["x_read"], np.nan)
        return g

    for bad, text in ((raises, "backward exploded"), (wrong_shape, "shape"), (nan, "NaN")):
        rep = verify(OP, fwd, grad_fn=bad, **FAST)
        assert not rep.passed
        assert text in rep.to_text(), rep.to_text()
    with pytest.raises(ValueError, match="no autograd"):
        verify(OP, fwd, grad=True)


def test_backward_mutants_are_killed():
    from oracles.mutants import run_mutants

    res = run_mutants(OP, kinds=("backward",))
    assert len(res) >= 4 and all(r.killed for r in res), [(r.mutant.name, r.verdict) for r in res]


def test_ops_lists_the_gradient(capsys):
    from oracles.cli import ops

    ops.run(argparse.Namespace(op=OP, json=False))
    assert "gradient: wrt (a, b_vec, x_read, W0)" in capsys.readouterr().out
    without = next(s.name for s in list_ops() if get_grad(s.name) is None)
    ops.run(argparse.Namespace(op=without, json=False))
    assert "gradient: no gradient oracle" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_grad(tmp_path):
    (tmp_path / "fwmod.py").write_text(textwrap.dedent('''
        import torch

        def fw(a, b_vec, x_read, W0=None):
            b, l, h, p = a.shape
            W = torch.zeros(b, h, p, b_vec.shape[3], dtype=a.dtype) if W0 is None else W0
            ys = []
            for i in range(a.shape[1]):
                W = W + a[:, i, :, :, None] * b_vec[:, i, :, None, :]
                ys.append(torch.einsum("bhpn,bhn->bhp", W, x_read[:, i]))
            return torch.stack(ys, 1) if ys else a[:, :0] * 0, W
    '''))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, str(tmp_path)]))
    cmd = [sys.executable, "-m", "oracles", "verify", OP, "fwmod:fw", "--grad", "--framework", "torch",
           "--cases", "golden"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "grad a: conforms" in out.stdout and "gradient (torch.autograd.grad): conforms" in out.stdout
    bad = subprocess.run(cmd[:-4] + ["--framework", "numpy"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "no autograd" in bad.stderr


def test_failing_gradient_case_is_saved_and_reruns(tmp_path):
    from oracles.verify import load_case, rerun_case

    rep = verify(OP, half_db_candidate, framework="torch", grad=True, forward=False, probes=False,
                 cases=_cases(("grad-golden",)), save_failures=str(tmp_path))
    repro = [c.repro for c in rep.grad_cases if c.repro]
    assert len(repro) == 1 and repro[0].endswith("-grad-float64.npz")
    again = rerun_case(load_case(repro[0]), candidate=half_db_candidate)
    assert again.grad and not again.passed and "grad b_vec is scaled by 0.5" in again.to_text()
