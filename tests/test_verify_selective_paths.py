"""ssm.selective_scan and ssm.ssd: a default verification takes every argument path (issue 11), and the adapters
fix only layouts and argument names (issue 10)."""
import math

import numpy as np
import pytest

from oracles.verify import get_adapter, get_op, verify
from oracles.verify.adapters import adapters_for
from oracles.verify.registry import infer_dims

S6, SSD = "ssm.selective_scan", "ssm.ssd"
FEW = dict(max_examples=3, seed=5)


def _cases(op, conv=None):
    spec = get_op(op)
    return spec.cases(spec.resolve_conventions(conv or {}))


def _length(c, op):
    return np.shape(c.inputs["u"])[2] if op == S6 else np.shape(c.inputs["x"])[1]


# -- the default cases take every path of the math -------------------------------------------------------------

@pytest.mark.parametrize("chunk", [64, 16])
def test_s6_default_cases_cover_groups_complex_and_the_lengths(chunk):
    cs = _cases(S6, {"chunk": chunk})
    lengths = {_length(c, S6) for c in cs}
    assert {0, 1, chunk - 1, chunk + 1} <= lengths and any(L % 2 == 1 and L > 1 for L in lengths)
    grouped = [c for c in cs for X in (c.inputs["B"], c.inputs["C"]) if np.ndim(X) == 4]
    # some case has 1 < g < d: a (h g) group order cannot pass it
    assert any(1 < np.shape(X)[1] < np.shape(c.inputs["u"])[1] for c in grouped for X in (c.inputs["B"],))
    assert any(np.iscomplexobj(c.inputs["A"]) for c in cs) and any(not np.iscomplexobj(c.inputs["A"]) for c in cs)
    assert all(c.inputs[k] is not None for c in cs for k in ("D", "z", "delta_bias", "h0"))  # claimed: always there
    # |Delta A| in the range of a phi1 series (1e-7 .. 1e-3) in some case
    small = next(c for c in cs if c.case_id == "edge-small-dtA")
    w = np.abs(small.inputs["delta"][:, :, None, :] * small.inputs["A"][None, :, :, None])
    assert ((w > 1e-7) & (w < 1e-5)).any() and ((w > 1e-4) & (w < 1e-2)).any()


def test_s6_features_not_claimed_are_never_in_a_case():
    cs = _cases(S6, {"use_h0": False, "use_z": False, "complex_A": False})
    assert all(c.inputs["h0"] is None and c.inputs["z"] is None for c in cs)
    assert not any(np.iscomplexobj(c.inputs["A"]) for c in cs)


def test_s6_softplus_threshold_case_only_under_delta_softplus():
    assert not any(c.case_id == "edge-softplus-threshold" for c in _cases(S6))
    c = next(c for c in _cases(S6, {"delta_softplus": True}) if c.case_id == "edge-softplus-threshold")
    assert (c.inputs["delta"] + c.inputs["delta_bias"][None, :, None] > 20).any()


def test_ssd_default_cases_cover_heads_groups_packed_sequences_and_D():
    T = 64
    cs = _cases(SSD, {"chunk": T})
    lengths = {_length(c, SSD) for c in cs}
    assert {0, 1, T - 1, T + 1} <= lengths
    assert any(1 < np.shape(c.inputs["B"])[2] < np.shape(c.inputs["x"])[2] for c in cs)  # 1 < g < h
    assert any(np.ndim(c.inputs["D"]) == 1 and np.shape(c.inputs["x"])[2] > 1 and np.shape(c.inputs["x"])[3] > 1
               for c in cs)  # D per head with h > 1, p > 1
    assert any(np.ndim(c.inputs["D"]) == 2 for c in cs)
    packed = [c for c in cs if len(np.unique(c.inputs["seq_idx"][0])) >= 3]
    assert packed
    # one sequence starts exactly on a chunk boundary, another inside a chunk
    starts = {int(t) for c in packed for t in np.flatnonzero(np.diff(c.inputs["seq_idx"][0])) + 1}
    assert T in starts and any(t % T for t in starts)


def test_ssd_declared_dt_limit_is_active_on_both_sides():
    lo, hi = 0.05, 0.4
    spec = get_op(SSD)
    for sp in (False, True):
        conv = spec.resolve_conventions({"dt_limit": (lo, hi), "dt_softplus": sp})
        c = next(c for c in spec.cases(conv) if c.case_id == "edge-dt-limit")
        x = c.inputs["dt"] + c.inputs["dt_bias"]
        eff = np.where(x > 20, x, np.logaddexp(0.0, x)) if sp else x
        assert (eff < lo).any() and (eff > hi).any() and ((eff > lo) & (eff < hi)).any()
    assert not any(c.case_id == "edge-dt-limit" for c in _cases(SSD))  # default: no limit, no such case


def test_s6_grouped_B_and_C_from_the_family_strategy_share_one_group_count():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from oracles.verify import strategy_for

    spec = get_op(S6)
    seen = set()

    @settings(max_examples=60, database=None, deadline=None)
    @given(strategy_for(S6), st.data())
    def check(inputs, data):
        infer_dims(spec.inputs, inputs)  # never trips the signature (B and C share g)
        if np.ndim(inputs["B"]) == 4 and np.ndim(inputs["C"]) == 4:
            seen.add(np.shape(inputs["B"])[1])

    check()


def test_common_groups_keeps_every_channels_values():
    from oracles.verify.ops_selective import _common_groups

    rng = np.random.default_rng(0)
    d = 6
    B, C = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 3, 3, 4))  # g_B = 2, g_C = 3 of d = 6
    B2, C2 = _common_groups(B, C)
    assert B2.shape[1] == C2.shape[1] == 6
    for c in range(d):  # channel c reads group c // (d / g) before and after
        np.testing.assert_array_equal(B2[:, c // (d // 6)], B[:, c // (d // 2)])
        np.testing.assert_array_equal(C2[:, c // (d // 6)], C[:, c // (d // 3)])


# -- the argument paths probe ---------------------------------------------------------------------------------

def test_argument_paths_of_our_reference_through_each_interface():
    from refimpl.ssm.selective import reference as s6
    from refimpl.ssm.ssd import reference as ssd

    rep = verify(S6, s6.recurrent, adapter="refimpl", dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    msg = next(p for p in rep.probes if p.name == "argument_paths").message
    for path in ("delta_softplus=True", "discretization='zoh'", "without h0", "without D", "without z",
                 "without delta_bias"):
        assert path in msg, msg

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                   dt_softplus=False, dt_limit=(0.0, math.inf), return_final_states=False):
        return ssd.chunked(x, dt, A, B, C, D, z, chunk=chunk_size, dt_bias=dt_bias, dt_softplus=dt_softplus,
                           dt_limit=dt_limit, initial_state=initial_states, seq_idx=seq_idx,
                           return_final_state=return_final_states)

    rep = verify(SSD, chunk_scan, adapter="mamba2.chunk_scan", conventions={"algorithm": "chunked", "chunk": 16},
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    msg = next(p for p in rep.probes if p.name == "argument_paths").message
    for path in ("dt_softplus=True", "dt_limit=(0.1, 0.3)", "chunk=8", "without initial_states", "without seq_idx",
                 "return_final_states=False"):
        assert path in msg, msg


# -- adapters fix only layouts and argument names --------------------------------------------------------------

DECLARABLE = {"discretization", "real_output", "algorithm", "chunk", "complex_A", "delta_softplus"}


@pytest.mark.parametrize("op", [S6, SSD])
def test_no_adapter_fixes_a_convention_the_candidate_can_declare(op):
    for ad in adapters_for(op):
        fixed = set(ad.implies) & DECLARABLE
        if ad.name == "mamba2.ssd_minimal_discrete":
            fixed -= {"dt_softplus"}  # it is handed x dt and A dt: no raw dt to take the softplus of
        assert not fixed, f"adapter {ad.name} fixes {fixed}"


def test_mambapy_adapter_passes_zeros_for_its_required_D():
    spec = get_op(S6)
    ad = get_adapter(S6, "mambapy.selective_scan")
    rng = np.random.default_rng(1)
    inp = {"u": rng.standard_normal((2, 3, 5)), "delta": rng.uniform(0, 1, (2, 3, 5)), "A": -np.ones((3, 2)),
           "B": rng.standard_normal((2, 2, 5)), "C": rng.standard_normal((2, 2, 5)), "D": None, "z": None,
           "delta_bias": None, "h0": None}
    args, _ = ad.build_call(spec, inp, spec.resolve_conventions(ad.implies), infer_dims(spec.inputs, inp))
    np.testing.assert_array_equal(args[5], np.zeros(3))


def test_a_sequential_candidate_in_mambapys_layout_declares_recurrent():
    from refimpl.ssm.selective import reference as s6

    def seq_first(x, delta, A, B, C, D):  # mambapy's interface on top of our literal loop
        return s6.recurrent(x, delta, A, B, C, D)

    rep = verify(S6, seq_first, adapter="mambapy.selective_scan",
                 conventions={"algorithm": "recurrent", "complex_A": False}, dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert rep.conventions["algorithm"] == "recurrent"


def _listing1(X, A, B, C, block_len, initial_states=None):
    """A NumPy candidate in the interface of Mamba-2's ssd_minimal_discrete (our own loop, not upstream code):
    h_t = exp(A_t) h_{t-1} + X_t B_t^T, y_t = h_t C_t; X (b l h p), A (b l h), B, C (b l h n)."""
    X, A, B, C = (np.asarray(a) for a in (X, A, B, C))
    b, L, h, p = X.shape
    assert L % block_len == 0
    S = np.zeros((b, h, p, B.shape[-1]), X.dtype) if initial_states is None else np.asarray(initial_states)[:, 0]
    Y = np.zeros_like(X)
    for t in range(L):
        S = np.exp(A[:, t])[:, :, None, None] * S + X[:, t, :, :, None] * B[:, t, :, None, :]
        Y[:, t] = np.einsum("bhpn,bhn->bhp", S, C[:, t])
    return Y, S


def test_discretized_adapter_of_ssd_minimal_discrete():
    rep = verify(SSD, _listing1, adapter="mamba2.ssd_minimal_discrete", conventions={"chunk": 8},
                 domain={"length_multiple": 8}, dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert rep.outside_domain  # L = 7, chunk -+ 1, ... are outside its declared domain
    ran = [c for c in rep.cases if not c.skipped]
    assert any(c.shapes["B"][2] < c.shapes["x"][2] for c in ran)  # groups expanded to heads by the adapter
    with pytest.raises(ValueError, match="implies"):
        verify(SSD, _listing1, adapter="mamba2.ssd_minimal_discrete", conventions={"dt_softplus": True})


def test_chunk_scan_ref_adapter_returns_y_only():
    from refimpl.ssm.ssd import reference as ssd

    def combined_ref(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False):
        return ssd.chunked(x, dt, A, B, C, D, z, chunk=chunk_size, dt_bias=dt_bias, dt_softplus=dt_softplus)

    rep = verify(SSD, combined_ref, adapter="mamba2.chunk_scan_ref", conventions={"algorithm": "chunked", "chunk": 8},
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert all({o.output for o in c.outputs} == {"y"} for c in rep.cases if not c.skipped)
    assert rep.conventions["use_initial_states"] is False and rep.conventions["use_seq_idx"] is False
