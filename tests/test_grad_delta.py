"""The backward pass of the delta rule and the gated delta rule (``refimpl.attention.delta.delta_rule_vjp``).

Ground truth: central differences with Richardson extrapolation (:func:`oracles.gradients.fd_vjp`) of the float64
transition-matrix forward :func:`oracles.delta_grad_forward.delta_rule_float64` (never refimpl's code), and mpmath
differences of :func:`oracles.delta_grad_forward.delta_rule_mp` on one tiny case.  Every comparison is elementwise
within ``Bound(r.error) + componentwise_bound(M, D, dtype)``: the differences' own error bound plus the derived
rounding bound of a backward in the working dtype (``M`` the adjoint recurrence on absolute values,
:func:`oracles.delta_grad_forward.delta_rule_adjoint_magnitude`; ``D`` the depth of
:func:`oracles.verify.grad_delta.grad_depth`, derived in that module's docstring).
"""
import numpy as np
import pytest

from oracles.delta_grad_forward import delta_rule_adjoint_magnitude, delta_rule_float64, delta_rule_mp
from oracles.gradients import fd_vjp, mp_vjp
from oracles.tolerance import Bound, assert_within, componentwise_bound
from oracles.verify.grad_delta import grad_depth
from refimpl.attention.delta import VJP_IMPLEMENTATIONS, delta_rule_vjp

PAIRS = VJP_IMPLEMENTATIONS.pairs()
CHUNK = 3
REFIMPL_NAME = {"alpha": "decay", "S0": "initial_state"}


def draw(seed, b, l, h, n, p, key_norm=None, query_norm=None, gated=True, state=True, final=True):
    """Inputs in the canonical names (``alpha``, ``S0``) and cotangents; keys inside the contraction region."""
    rng = np.random.default_rng(seed)
    if key_norm == "sum":
        k = rng.uniform(0.1, 1.0, (b, l, h, n))
    else:
        k = rng.standard_normal((b, l, h, n))
        if key_norm is None:
            k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.0, (b, l, h, 1))
    q = rng.uniform(0.1, 1.0, (b, l, h, n)) if query_norm == "sum" else rng.standard_normal((b, l, h, n))
    inp = {"q": q, "k": k, "v": rng.standard_normal((b, l, h, p)), "beta": rng.uniform(0.05, 0.95, (b, l, h))}
    if gated:
        inp["alpha"] = rng.uniform(0.5, 1.0, (b, l, h))
    if state:
        inp["S0"] = rng.standard_normal((b, h, p, n))
    cot = {"o": rng.standard_normal((b, l, h, p))}
    if final:
        cot["S_last"] = rng.standard_normal((b, h, p, n))
    return inp, cot


def forward(opts):
    def f(a):
        return delta_rule_float64(a["q"], a["k"], a["v"], a["beta"], a.get("alpha"), a.get("S0"), **opts)
    return f


def ours(inp, cot, opts, view, backend, dtype=np.float64, chunk=CHUNK):
    x = {nm: a.astype(dtype) for nm, a in inp.items()}
    kw = dict(chunk=chunk) if view == "chunked" else {}
    g = delta_rule_vjp(x["q"], x["k"], x["v"], x["beta"], do=cot["o"].astype(dtype),
                       d_final_state=None if "S_last" not in cot else cot["S_last"].astype(dtype),
                       decay=x.get("alpha"), initial_state=x.get("S0"), view=view, backend=backend, **kw, **opts)
    return {nm: g[REFIMPL_NAME.get(nm, nm)] for nm in inp}


def bounds(inp, cot, opts, view, dtype, chunk=CHUNK):
    b, l, h, n = inp["k"].shape
    p = inp["v"].shape[3]
    M = delta_rule_adjoint_magnitude(inp["q"], inp["k"], inp["v"], inp["beta"], inp.get("alpha"), inp.get("S0"),
                                     cot["o"], cot.get("S_last"), **opts,
                                     chunk=chunk if view == "chunked" else None)
    D = grad_depth(l, n, p, view, chunk)
    return {nm: componentwise_bound(M[nm], D, dtype, oracle_dtype=None, what=f"grad {nm}") for nm in inp}


def check_against_fd(inp, cot, opts, pairs=PAIRS, dtype=np.float64, chunk=CHUNK):
    x = {nm: a.astype(dtype).astype(np.float64) for nm, a in inp.items()}
    w = {nm: a.astype(dtype).astype(np.float64) for nm, a in cot.items()}
    r = fd_vjp(forward(opts), x, w, list(x))
    worst = 0.0
    for view, backend in pairs:
        g = ours(x, w, opts, view, backend, dtype, chunk)
        bd = bounds(x, w, opts, view, dtype, chunk)
        for nm in x:
            assert g[nm].dtype == dtype and g[nm].shape == inp[nm].shape, (view, backend, nm)
            c = assert_within(g[nm], r.grad[nm], Bound(r.error[nm], "fd_vjp's error bound") + bd[nm],
                              context=f"{view}/{backend} d{nm} {opts}")
            worst = max(worst, c.worst_ratio if np.isfinite(c.worst_ratio) else 0.0)
    return r, worst


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4, 7])
def test_every_view_matches_the_differences_gated_with_state(l):
    """L = 0, 1, odd, chunk - 1, chunk, chunk + 1 (chunk 3), the gated rule with an initial state."""
    inp, cot = draw(10 + l, 1, l, 2, 3, 2)
    check_against_fd(inp, cot, {})


@pytest.mark.parametrize("key_norm, query_norm, scale", [("l2", "l2", 0.6), ("sum", "sum", 1.0), ("l2", None, 1.0),
                                                          (None, "sum", 0.5)])
def test_every_view_matches_the_differences_through_the_normalizations(key_norm, query_norm, scale):
    inp, cot = draw(20, 1, 5, 1, 3, 2, key_norm, query_norm)
    check_against_fd(inp, cot, dict(key_norm=key_norm, query_norm=query_norm, scale=scale))


@pytest.mark.parametrize("gated, state, final", [(False, False, False), (False, True, True), (True, False, False)])
def test_optional_inputs_absent(gated, state, final):
    """The plain rule (no decay gradient returned), no initial state (none returned), no final-state cotangent."""
    inp, cot = draw(30, 2, 4, 1, 2, 2, gated=gated, state=state, final=final)
    check_against_fd(inp, cot, {})
    g = delta_rule_vjp(inp["q"], inp["k"], inp["v"], inp["beta"], do=cot["o"], decay=inp.get("alpha"),
                       initial_state=inp.get("S0"))
    assert set(g) == {"q", "k", "v", "beta"} | ({"decay"} if gated else set()) | ({"initial_state"} if state else set())


def test_float32_stays_float32_within_its_bound():
    inp, cot = draw(40, 1, 5, 2, 3, 2, "l2", "l2")
    check_against_fd(inp, cot, dict(key_norm="l2", query_norm="l2"), dtype=np.float32)


def test_a_float64_cotangent_computes_and_returns_float64():
    inp, cot = draw(41, 1, 4, 1, 2, 2)
    x = {nm: a.astype(np.float32) for nm, a in inp.items()}
    g = delta_rule_vjp(x["q"], x["k"], x["v"], x["beta"], do=cot["o"], decay=x["alpha"], initial_state=x["S0"])
    g64 = delta_rule_vjp(*(x[nm].astype(np.float64) for nm in ("q", "k", "v", "beta")), do=cot["o"],
                         decay=x["alpha"].astype(np.float64), initial_state=x["S0"].astype(np.float64))
    for nm in g:
        # float32 inputs cast up exactly: the same float64 computation, bit for bit (no silent downcast)
        assert g[nm].dtype == np.float64 and np.array_equal(g[nm], g64[nm])


def test_L0_initial_state_gradient_is_the_final_cotangent():
    inp, cot = draw(50, 1, 0, 2, 3, 2)
    for view, backend in PAIRS:
        g = ours(inp, cot, {}, view, backend)
        assert np.array_equal(g["S0"], cot["S_last"])
        assert all(g[nm].size == 0 for nm in ("q", "k", "v", "beta", "alpha"))


def test_l2_key_gradient_is_orthogonal_to_the_key():
    """Through ``k / |k|`` the gradient is projected by ``(I - kh kh^T) / |k|``: the exact ``dk . k`` is 0, so the
    computed one is at most ``sum_i |k_i| bound_i`` (each entry within its derived bound of the exact gradient)."""
    inp, cot = draw(60, 1, 6, 1, 4, 3, "l2", "l2")
    opts = dict(key_norm="l2", query_norm="l2")
    for view, backend in PAIRS:
        g = ours(inp, cot, opts, view, backend)
        bd = bounds(inp, cot, opts, view, np.float64)
        for nm in ("k", "q"):
            dot = np.sum(g[nm] * inp[nm], axis=-1)
            lim = np.sum(np.abs(inp[nm]) * np.asarray(bd[nm].values), axis=-1)
            assert np.all(np.abs(dot) <= lim), (view, backend, nm, np.max(np.abs(dot) - lim))


def test_mpmath_differences_on_a_tiny_gated_case():
    """mpmath differences at 40 digits (an exact answer for float64 code) of the mpmath forward, l2 keys."""
    inp, cot = draw(70, 1, 3, 1, 2, 2, "l2", None)
    opts = dict(key_norm="l2", query_norm=None, scale=0.75)
    exact = mp_vjp(lambda a: delta_rule_mp(a, **opts), inp, cot, list(inp), dps=40)
    for view, backend in PAIRS:
        M = delta_rule_adjoint_magnitude(inp["q"], inp["k"], inp["v"], inp["beta"], inp["alpha"], inp["S0"],
                                         cot["o"], cot["S_last"], **opts, chunk=CHUNK if view == "chunked" else None)
        g = ours(inp, cot, opts, view, backend)
        D = grad_depth(3, 2, 2, view, CHUNK)
        for nm in inp:
            assert_within(g[nm], exact[nm], componentwise_bound(M[nm], D, np.float64, oracle_dtype=None),
                          context=f"{view}/{backend} d{nm} vs mpmath")


def test_long_sequence_views_agree_at_several_chunk_sizes():
    """L = 40 across chunk sizes 1, 5, 64: the chunk must not change the gradient beyond rounding."""
    inp, cot = draw(80, 1, 40, 2, 4, 3, "l2", "l2")
    opts = dict(key_norm="l2", query_norm="l2")
    ref = ours(inp, cot, opts, "recurrent", "numpy")
    for view, backend in PAIRS:
        for chunk in (1, 5, 64):
            g = ours(inp, cot, opts, view, backend, chunk=chunk)
            bd = bounds(inp, cot, opts, "chunked", np.float64, chunk)
            bd_r = bounds(inp, cot, opts, "recurrent", np.float64, chunk)
            for nm in inp:
                assert_within(g[nm], ref[nm], bd[nm] + bd_r[nm], context=f"{view}/{backend} chunk {chunk} d{nm}")


@pytest.mark.parametrize("bad, msg", [
    (dict(do=np.zeros((1, 4, 1))), "do: expected"),
    (dict(do=np.zeros((1, 3, 1, 2))), "do"),
    (dict(d_final_state=np.zeros((1, 1, 2))), "d_final_state"),
    (dict(d_final_state=np.zeros((1, 1, 3, 2))), "d_final_state"),
    (dict(do=np.zeros((1, 4, 1, 2), dtype=complex)), "do"),
    (dict(view="quadratic"), "view"),
    (dict(view="chunked", chunk=0), "chunk"),
    (dict(key_norm="max"), "key_norm"),
])
def test_bad_cotangents_and_options_are_refused_by_name(bad, msg):
    inp, cot = draw(90, 1, 4, 1, 2, 2)
    kw = dict(do=cot["o"])
    kw.update(bad)
    with pytest.raises((ValueError, TypeError), match=msg):
        delta_rule_vjp(inp["q"], inp["k"], inp["v"], inp["beta"], **kw)


# -- refimpl verify --grad: a torch autograd candidate (the recurrent rule, literally) and FLA's naive spelling --

def torch_delta_rule(q, k, v, beta, alpha=None, S0=None):
    """The (gated) delta rule as a plain torch loop in the canonical layout (autograd differentiates it)."""
    import torch

    b, l, h, n = k.shape
    S = q.new_zeros((b, h, v.shape[3], n)) if S0 is None else S0
    os = []
    for t in range(l):
        kt = k[:, t]
        if alpha is not None:
            S = alpha[:, t, :, None, None] * S
        v_old = torch.einsum("bhpn,bhn->bhp", S, kt)
        S = S + (beta[:, t, :, None] * (v[:, t] - v_old))[..., None] * kt[:, :, None, :]
        os.append(torch.einsum("bhpn,bhn->bhp", S, q[:, t]))
    o = torch.stack(os, dim=1) if os else q.new_zeros((b, 0, h, v.shape[3]))
    return o, S


def fla_delta_rule_recurrence(q, k, v, beta, initial_state=None, output_final_state=True):
    """FLA's naive reference spelling (``fla/ops/delta_rule/naive.py``, written from the adapter's description):
    head-first ``[B, H, T, K]``, ``q`` scaled by ``K^-1/2`` inside, state ``K x V``."""
    import torch

    b, h, l, n = q.shape
    e = v.shape[-1]
    q = q * n ** -0.5
    S = q.new_zeros((b, h, n, e)) if initial_state is None else initial_state
    o = []
    for i in range(l):
        _k, _q, _v = k[:, :, i], q[:, :, i], v[:, :, i].clone()
        _v = _v - (S * _k[..., None]).sum(-2)
        _v = _v * beta[:, :, i, None]
        S = S + _k.unsqueeze(-1) * _v.unsqueeze(-2)
        o.append(torch.einsum("bhd,bhdm->bhm", _q, S))
    out = torch.stack(o, dim=2) if o else v.new_zeros((b, h, 0, e))
    return out, (S if output_final_state else None)


def _cases(op, conv, ids):
    from oracles.verify.registry import get_grad, get_op

    c = get_op(op).resolve_conventions(conv)
    return [x for x in get_grad(op).cases(c) if x.case_id in ids]


TORCH_CONV = {"chunk": 4}
TORCH_CASES = ("grad-golden", "grad-L0", "grad-chunk+1")


def test_verify_grad_torch_autograd_candidate_conforms():
    pytest.importorskip("torch")
    from oracles.verify import verify

    rep = verify("attention.delta_rule", torch_delta_rule, conventions=TORCH_CONV, framework="torch", grad=True,
                 forward=False, cases=_cases("attention.delta_rule", TORCH_CONV, TORCH_CASES), probes=False)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])


def test_verify_grad_fla_naive_spelling_conforms():
    pytest.importorskip("torch")
    from oracles.verify import verify

    conv = {"chunk": 4, "state_layout": "kv", "use_alpha": False, "scale": None}
    rep = verify("attention.delta_rule", fla_delta_rule_recurrence, adapter="fla.delta_rule.naive", conventions=conv,
                 framework="torch", grad=True, forward=False,
                 cases=_cases("attention.delta_rule", conv, ("grad-golden", "grad-L1", "grad-chunk+1")), probes=False)
    assert rep.passed, rep.grad_line() + " / " + "; ".join(rep.deviations()[:3])
