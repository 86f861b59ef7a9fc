"""The Mega layer (refimpl.attention.mega): a worked example by hand, the EMA inside is refimpl.ssm.mega_ema, the
gates' limits, stability at large scores, dtypes, bad inputs, and the verify op (the reference passes, planted bugs
fail)."""
import math

import numpy as np
import pytest

from oracles.mega import SILU_U, mega_layer_bound, mega_layer_mpmath
from oracles.tolerance import assert_within, unit_roundoff
from oracles.verify.ops_mega import sample
from refimpl.attention.mega import MEGA_LAYER, mega_layer
from refimpl.ssm.ema import mega_ema

PAIRS = MEGA_LAYER.pairs()


def _case(seed=0, *, l=6, b=1, d=3, e=2, n=3, p=2, rel=True, bidir=False):
    inp = sample(np.random.default_rng(seed), {"use_rel_bias": rel, "bidirectional": bidir}, l=l, b=b, d=d, e=e, n=n,
                 p=p)
    return inp.pop("x"), inp


def _sig(a):
    return 1.0 / (1.0 + math.exp(-a))


def test_one_step_worked_example_by_hand():
    """L = 1, every size 1: one key, so the softmax weight is 1 and O = V; the rest by the paper's equations."""
    x0 = 0.7
    P = dict(alpha=[[0.3]], delta=[[0.6]], beta=[[1.5]], eta=[[-0.8]], W_z=[[0.9]], b_z=[0.1], kappa_q=[1.2],
             mu_q=[0.1], kappa_k=[0.8], mu_k=[-0.2], W_v=[[1.1]], b_v=[0.05], W_gamma=[[-0.7]], b_gamma=[0.2],
             W_phi=[[0.4]], b_phi=[-0.1], W_h=[[0.6]], U_h=[[1.3]], b_h=[0.3])
    P = {k: np.array(v, dtype=np.float64) for k, v in P.items()}
    Xp = -0.8 * 0.3 * 1.5 * x0                      # X' = eta alpha beta x  (h_{-1} = 0)
    V = (x0 * 1.1 + 0.05) * _sig(x0 * 1.1 + 0.05)   # V = SiLU(X W_v + b_v);  O = V
    g = (Xp * -0.7 + 0.2) * _sig(Xp * -0.7 + 0.2)   # gamma = SiLU(X' W_gamma + b_gamma)
    phi = _sig(Xp * 0.4 - 0.1)                      # phi = sigmoid(X' W_phi + b_phi)
    a = Xp * 0.6 + g * V * 1.3 + 0.3
    H = a * _sig(a)                                 # H_hat = SiLU(X' W_h + (gamma O) U_h + b_h)
    Y = phi * H + (1 - phi) * x0                    # Y = phi H_hat + (1 - phi) X
    x = np.array([[[x0]]])
    bound = mega_layer_bound(x, P, dtype=np.float64, oracle_dtype=np.float64)
    for view, backend in PAIRS:
        assert_within(mega_layer(x, **P, view=view, backend=backend), np.array([[[Y]]]), bound,
                      context=f"{backend}/{view}")


@pytest.mark.parametrize("bidir", [False, True])
def test_the_ema_is_refimpl_ssm_mega_ema(bidir):
    """With W_h = I, U_h = 0, b_h = 0 and an update gate saturated at 1 (b_phi = 40: sigmoid rounds to 1),
    Y = SiLU(X'): X' must be refimpl.ssm.mega_ema (plus the reversed backward EMA)."""
    x, P = _case(3, l=9, d=3, bidir=bidir)
    d = x.shape[2]
    P.update(W_h=np.eye(d), U_h=np.zeros_like(P["U_h"]), b_h=np.zeros(d), W_phi=np.zeros((d, d)),
             b_phi=np.full(d, 40.0))
    Xp = mega_ema(x, P["alpha"], P["delta"], P["beta"], P["eta"])
    if bidir:
        Xp = Xp + mega_ema(x[:, ::-1], P["alpha_bwd"], P["delta_bwd"], P["beta_bwd"], P["eta_bwd"])[:, ::-1]
    expected = Xp / (1.0 + np.exp(-Xp))
    u = unit_roundoff(np.float64)
    for view, backend in PAIRS:
        y = mega_layer(x, **P, view=view, backend=backend)
        # both sides SiLU of the same X' (each within SILU_U u); the numba backend's FFT EMA is within its bound
        tol = 2 * SILU_U * u * np.abs(expected) + (0 if backend == "numpy"
                                                 else mega_layer_bound(x, P, oracle_dtype=np.float64).values)
        assert np.all(np.abs(y - expected) <= tol), f"{backend}/{view}"


def test_update_gate_closed_returns_the_input():
    """phi -> 0 (b_phi = -40): Y = X + phi (H_hat - X) with phi ~ 4e-18: the layer is the identity to rounding."""
    x, P = _case(4, l=7)
    d = x.shape[2]
    P.update(W_phi=np.zeros((d, d)), b_phi=np.full(d, -40.0))
    for view, backend in PAIRS:
        y = mega_layer(x, **P, chunk=3, view=view, backend=backend)
        assert np.max(np.abs(y - x)) <= 1e-16 * (1 + np.max(np.abs(x))) * 8


def test_chunk_one_against_mpmath_and_without_attention_terms():
    """c = 1 (the paper's limit): O_t = V_t; the oracle and every view agree, and so does a layer whose Q, K are
    arbitrary."""
    x, P = _case(5, l=5)
    exact = mega_layer_mpmath(x, P, chunk=1)
    bound = mega_layer_bound(x, P, chunk=1)
    for view, backend in PAIRS:
        assert_within(mega_layer(x, **P, chunk=1, view=view, backend=backend), exact, bound)
        assert_within(mega_layer(x, **dict(P, W_z=-P["W_z"], mu_q=P["mu_q"] + 3.0), chunk=1, view=view,
                                 backend=backend), exact, bound)


def test_large_scores_are_stable():
    """Scores near 100 (kappa x 10, x x 5): max-subtraction keeps the softmax finite and within the bound."""
    x, P = _case(6, l=6, rel=False)
    x = 5 * x
    P = dict(P, kappa_q=10 * P["kappa_q"], kappa_k=10 * P["kappa_k"])
    exact = mega_layer_mpmath(x, P, causal=True, chunk=4)
    bound = mega_layer_bound(x, P, causal=True, chunk=4)
    for view, backend in PAIRS:
        y = mega_layer(x, **P, causal=True, chunk=4, view=view, backend=backend)
        assert np.all(np.isfinite(y))
        assert_within(y, exact, bound, context=f"{backend}/{view}")


def test_dtypes():
    x, P = _case(7, l=4)
    P32 = {k: (None if v is None else v.astype(np.float32)) for k, v in P.items()}
    for view, backend in PAIRS:
        assert mega_layer(x.astype(np.float32), **P32, view=view, backend=backend).dtype == np.float32
        assert mega_layer(x.astype(np.float32), **P, view=view, backend=backend).dtype == np.float64  # no downcast
        assert mega_layer(x, **P32, view=view, backend=backend).dtype == np.float64


def test_bad_inputs_name_the_argument():
    x, P = _case(8, l=4, bidir=True)
    with pytest.raises(ValueError, match="causal"):
        mega_layer(x, **P, causal=True)
    with pytest.raises(ValueError, match="delta_bwd"):
        mega_layer(x, **dict(P, delta_bwd=None))
    with pytest.raises(ValueError, match="rel_bias"):
        mega_layer(x, **dict(P, rel_bias=np.zeros(5)))  # m = 3 < L = 4
    mega_layer(x, **dict(P, rel_bias=np.zeros(5)), chunk=3)  # the span is the chunk: m = 3 suffices
    with pytest.raises(ValueError, match="alpha_bwd"):
        mega_layer(x, **dict(P, alpha_bwd=P["alpha_bwd"] + 1.0))
    with pytest.raises(ValueError, match="attention"):
        mega_layer(x, **P, attention="relu")
    with pytest.raises(ValueError, match="chunk"):
        mega_layer(x, **P, chunk=0)
    with pytest.raises(ValueError, match="U_h"):
        mega_layer(x, **dict(P, U_h=np.zeros((P["U_h"].shape[0] + 1, P["U_h"].shape[1]))))
    with pytest.raises(ValueError, match="backend"):
        mega_layer(x, **P, view="full", backend="numba")


def test_verify_passes_the_reference_and_kills_planted_bugs():
    from oracles.mutants.mega import _overlap, _scale_off
    from oracles.verify import verify

    for conv, dtypes in (({}, ["float64", "float32"]), ({"chunk": 3, "causal": True, "attention": "laplace"}, "float64")):
        rep = verify("attention.mega", mega_layer, adapter="refimpl", conventions=conv, dtype=dtypes)
        assert rep.passed, conv
    # two of the corpus's mutants, at their registered conventions (``refimpl mutants --op attention.mega``: all 11)
    for fn, conv in ((_overlap, {"chunk": 3}), (_scale_off, {})):
        assert not verify("attention.mega", fn, conventions=conv, diagnose=False).passed, fn.__name__


def _time_major_wrapper(x_lbd, *params, chunk_size=-1, causal=False, attention_activation="softmax", scale=None):
    """A candidate in Mega's code's spelling (time-major, chunk_size=-1), built on our reference."""
    y = mega_layer(np.swapaxes(x_lbd, 0, 1), *params, chunk=None if chunk_size < 0 else chunk_size, causal=causal,
                   attention=attention_activation, scale=scale)
    return np.swapaxes(y, 0, 1)


def test_the_mega_code_spelling_adapter():
    from oracles.verify import verify

    rep = verify("attention.mega", _time_major_wrapper, adapter="mega.time_major",
                 conventions={"chunk": 2, "causal": True}, kinds=("golden", "edge"))
    assert rep.passed
    # the same wrapper called through the canonical signature (batch-first x) is caught
    rep = verify("attention.mega", lambda x, *p: _time_major_wrapper(x, *p), kinds=("golden", "edge"), probes=False,
                 diagnose=False)
    assert not rep.passed


def test_the_corpus_holds_the_named_mutants():
    from oracles.mutants import all_mutants

    names = {m.name for m in all_mutants("attention.mega", kind="forward")}
    assert {"update-gate-wrong-branch", "reset-gate-missing", "z-from-x", "v-from-ema", "chunks-overlap-by-one",
            "softmax-scale-off"} <= names
