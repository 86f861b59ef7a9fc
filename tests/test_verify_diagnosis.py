"""The diagnosis names the cause (issue 10): each planted bug, in a candidate written here for a real op, gets
its own sentence; the error map shows where a failing case's error lies; ``plots=DIR`` draws it.

The cases are built here (canonical layouts, seeded), small and long enough to show each pattern, so the
tests do not depend on the ops' samplers.  Each planted bug also has a control: the same candidate without the
bug conforms on the same cases (so the bug, not the harness, is what the diagnosis explains).
"""
import json
import os

import numpy as np
import pytest

from oracles.verify import get_op, verify
from oracles.verify import diagnosis as dg
from oracles.verify.registry import Case
from refimpl.attention.delta import delta_rule
from refimpl.ssm.lti import lti_ssm
from refimpl.ssm.selective import selective_scan


def _cases(op, conv, inputs_list):
    spec = get_op(op)
    c = spec.resolve_conventions(conv)
    return [Case(op, f"planted-{i}", "edge", inp, dict(c), seed=i) for i, inp in enumerate(inputs_list)]


def _diagnoses(rep):
    return [c.diagnosis for c in rep.failures]


# -- inputs in the canonical layouts ------------------------------------------------------------------------

def ssd_inputs(seed, *, b=1, l=9, h=2, p=2, n=3, g=1, D=True, S0=True):
    rng = np.random.default_rng([11, seed])
    return {"x": rng.standard_normal((b, l, h, p)), "dt": rng.uniform(0.05, 0.5, (b, l, h)),
            "A": -rng.uniform(0.2, 1.5, h), "B": rng.standard_normal((b, l, g, n)),
            "C": rng.standard_normal((b, l, g, n)), "D": rng.standard_normal(h) if D else None, "z": None,
            "dt_bias": None, "initial_states": rng.standard_normal((b, h, p, n)) if S0 else None, "seq_idx": None}


SSD_PLAIN = {"use_z": False, "use_dt_bias": False, "use_seq_idx": False}


def delta_inputs(seed, *, b=1, l=9, h=2, n=3, e=2):
    rng = np.random.default_rng([13, seed])
    k = rng.standard_normal((b, l, h, n))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.0, (b, l, h, 1))
    return {"q": rng.standard_normal((b, l, h, n)), "k": k, "v": rng.standard_normal((b, l, h, e)),
            "beta": rng.uniform(0.05, 0.95, (b, l, h)), "alpha": rng.uniform(0.5, 1.0, (b, l, h)),
            "S0": rng.standard_normal((b, h, e, n))}


def lti_inputs(seed, *, b=1, l=9, h=2, n=3, m=1, p=2, h0=True):
    rng = np.random.default_rng([17, seed])
    A = rng.standard_normal((h, n, n))
    A = 0.8 * A / np.max(np.abs(np.linalg.eigvals(A)), axis=-1)[:, None, None]  # spectral radius 0.8
    return {"A_bar": A, "B_bar": rng.standard_normal((h, n, m)), "C": rng.standard_normal((h, p, n)),
            "D": rng.standard_normal((h, p, m)), "x": rng.standard_normal((b, l, h, m)),
            "h0": rng.standard_normal((b, h, n)) if h0 else None}


def selective_inputs(seed, *, b=1, d=3, l=9, n=3):
    rng = np.random.default_rng([19, seed])
    return {"u": rng.standard_normal((b, d, l)), "delta": rng.uniform(0.3, 1.0, (b, d, l)),
            "A": -rng.uniform(0.2, 2.0, (d, n)), "B": rng.standard_normal((b, n, l)),
            "C": rng.standard_normal((b, n, l)), "D": rng.standard_normal(d), "z": rng.standard_normal((b, d, l)),
            "delta_bias": rng.uniform(-0.2, 0.2, d), "h0": rng.standard_normal((b, d, n))}


# -- candidates: an SSD loop, written here (its bugs planted by flags) ----------------------------------------

def ssd_loop(x, dt, A, B, C, D, S0, *, early=False, order="g h"):
    b, l, h, p = x.shape
    g = B.shape[2]
    if order == "g h":  # head i reads group i // (h/g)
        Bh, Ch = np.repeat(B, h // g, axis=2), np.repeat(C, h // g, axis=2)
    else:  # the planted bug: head i reads group i mod g
        Bh, Ch = np.tile(B, (1, 1, h // g, 1)), np.tile(C, (1, 1, h // g, 1))
    S = np.zeros((b, h, p, B.shape[-1])) if S0 is None else np.array(S0, dtype=np.float64)
    y = np.zeros_like(x)
    for t in range(l):
        prev = S
        S = np.exp(dt[:, t, :, None, None] * A[None, :, None, None]) * S \
            + (dt[:, t, :, None, None] * x[:, t, :, :, None]) * Bh[:, t, :, None, :]
        y[:, t] = np.einsum("bhpn,bhn->bhp", prev if early else S, Ch[:, t])
    if D is not None:
        y = y + (D[:, None] if D.ndim == 1 else D) * x
    return y, S


def ssd_candidate(**flags):
    def fn(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None):
        return ssd_loop(x, dt, A, B, C, D, initial_states, **flags)
    return fn


def test_the_ssd_loop_conforms():  # the control of every SSD bug below
    cases = _cases("ssm.ssd", SSD_PLAIN, [ssd_inputs(0), ssd_inputs(1, h=4, g=2, b=2)])
    rep = verify("ssm.ssd", ssd_candidate(), conventions=SSD_PLAIN, cases=cases, probes=False)
    assert rep.passed, rep.to_text()


# -- 1. lower precision ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lowp", ["float32", "bfloat16"])
def test_a_kernel_computing_in_lower_precision_is_named(lowp):
    # inputs rounded to lowp, arithmetic in float32 (the scan view: not our recurrent reference's order),
    # outputs widened to float64: every output entry is a float32 value
    def in_lowp(u, delta, A, B, C, D=None, z=None, **kw):
        rnd = (lambda a: None if a is None else np.asarray(a, dtype=np.float32)) if lowp == "float32" else \
            (lambda a: None if a is None else dg._round_bfloat16(np.asarray(a, dtype=np.float32)))
        kw = {k: (rnd(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        out, h = selective_scan(rnd(u), rnd(delta), rnd(A), rnd(B), rnd(C), rnd(D), rnd(z), view="scan", **kw)
        return out.astype(np.float64), h.astype(np.float64)

    cases = _cases("ssm.selective_scan", {}, [selective_inputs(s, l=12) for s in range(3)])
    rep = verify("ssm.selective_scan", in_lowp, adapter="refimpl", cases=cases, probes=False)
    assert len(rep.failures) == 3
    for d in _diagnoses(rep):
        assert d.startswith("computed in lower precision: every entry of out, h_last is exactly a float32 value"), d
        assert ("its error is that of our reference run in bfloat16" in d) == (lowp == "bfloat16"), d
    # the control: the same view in float64 conforms
    ok = verify("ssm.selective_scan", lambda *a, **kw: selective_scan(*a, view="scan", **kw), adapter="refimpl",
                cases=cases, probes=False)
    assert ok.passed, ok.to_text()


def lti_state_in(dtype, A_bar, B_bar, C, D, x, h0=None):
    """The LTI recurrence with its state stored in ``dtype`` between steps (readout in float64)."""
    b, l, h, m = x.shape
    st = np.zeros((b, h, A_bar.shape[-1])) if h0 is None else np.asarray(h0, dtype=np.float64)
    st = st.astype(dtype).astype(np.float64)
    y = np.zeros((b, l, h, C.shape[1]))
    for t in range(l):
        st = np.einsum("hnk,bhk->bhn", A_bar, st) + np.einsum("hnm,bhm->bhn", B_bar, x[:, t])
        st = st.astype(dtype).astype(np.float64)
        y[:, t] = np.einsum("hpn,bhn->bhp", C, st) + np.einsum("hpm,bhm->bhp", D, x[:, t])
    return y, st


def test_a_state_stored_in_lower_precision_is_named_by_its_error():
    # the outputs are float64 values (a float64 readout), so only the size of the error says float32
    cases = _cases("ssm.lti", {}, [lti_inputs(0, l=20), lti_inputs(1, l=12, b=2)])
    rep = verify("ssm.lti", lambda *a, **kw: lti_state_in(np.float32, *a, **kw), cases=cases, probes=False)
    assert len(rep.failures) == 2
    for d in _diagnoses(rep):
        assert d.startswith("computed in lower precision: the error of y, h_last matches our reference run in "
                            "float32 on the same inputs"), d
    ok = verify("ssm.lti", lambda *a, **kw: lti_state_in(np.float64, *a, **kw), cases=cases, probes=False)
    assert ok.passed, ok.to_text()


def test_a_dropped_term_of_rounding_size_is_not_called_lower_precision():
    # an ignored initial state whose effect has decayed to ~1e-3: a normwise error of a low dtype's size, but
    # confined to the first steps (the median entry is exact), so it is not a precision problem
    def no_h0(A_bar, B_bar, C, D, x, h0=None):
        return lti_ssm(A_bar, B_bar, C, D, x, return_final_state=True)

    inp = lti_inputs(3, l=40)
    inp["h0"] = inp["h0"] * 1e-3
    rep = verify("ssm.lti", no_h0, cases=_cases("ssm.lti", {}, [inp]), probes=False)
    assert not rep.passed
    assert "lower precision" not in rep.failures[0].diagnosis
    assert rep.failures[0].diagnosis.startswith("the initial state h0 is ignored"), rep.failures[0].diagnosis


# -- 2. two arguments swapped --------------------------------------------------------------------------------

def test_swapped_beta_and_decay_are_named():
    def swapped(q, k, v, beta, alpha=None, S0=None):
        return delta_rule(q, k, v, alpha, decay=beta, initial_state=S0, return_final_state=True)

    cases = _cases("attention.delta_rule", {}, [delta_inputs(s) for s in range(2)])
    rep = verify("attention.delta_rule", swapped, cases=cases, probes=False)
    assert len(rep.failures) == 2
    assert all("arguments swapped" in d and "beta and alpha exchanged" in d for d in _diagnoses(rep)), _diagnoses(rep)


def test_swapped_log_decay_and_beta_of_a_gated_kernel_are_named():
    # FLA's gated delta rule takes (q, k, v, g, beta) with g = log(alpha); this kernel's signature has them
    # in the other order, so it reads g as beta and beta as g (and raises on the decay exp(beta) > 1 or not)
    def fla_gated_wrong_order(q, k, v, beta, g, scale=None, initial_state=None, output_final_state=True):
        S0 = None if initial_state is None else np.swapaxes(initial_state, -1, -2)
        o, S = delta_rule(q * scale, k, v, beta, decay=np.exp(g), initial_state=S0, return_final_state=True)
        return o, np.swapaxes(S, -1, -2)

    def right_order(q, k, v, g, beta, **kw):
        return fla_gated_wrong_order(q, k, v, beta, g, **kw)

    cases = _cases("attention.delta_rule", {"state_layout": "kv"}, [delta_inputs(s) for s in range(2)])
    rep = verify("attention.delta_rule", fla_gated_wrong_order, adapter="fla.gated_delta_rule", cases=cases,
                 probes=False)
    assert len(rep.failures) == 2
    for d in _diagnoses(rep):
        assert "arguments swapped" in d and "argument 4 (log(alpha))" in d and "argument 5 (beta)" in d, d
    ok = verify("attention.delta_rule", right_order, adapter="fla.gated_delta_rule", cases=cases, probes=False)
    assert ok.passed, ok.to_text()


# -- 3. a shift by one step ----------------------------------------------------------------------------------

def test_the_output_read_before_the_state_update_is_named():
    cases = _cases("ssm.ssd", SSD_PLAIN, [ssd_inputs(0), ssd_inputs(1, l=2), ssd_inputs(2, h=4, g=2, b=2)])
    rep = verify("ssm.ssd", ssd_candidate(early=True), conventions=SSD_PLAIN, cases=cases, probes=False)
    assert len(rep.failures) == 3
    for d in _diagnoses(rep):
        assert d.startswith("the output is read before the state update"), d
        assert "C one step ahead of x, dt, B" in d and "skip term D" in d, d


def test_an_output_one_step_late_is_named():
    def late(A_bar, B_bar, C, D, x, h0=None):
        y, h = lti_ssm(A_bar, B_bar, C, D, x, initial_state=h0, return_final_state=True)
        y2 = np.zeros_like(y)
        y2[:, 1:] = y[:, :-1]
        return y2, h

    rep = verify("ssm.lti", late, cases=_cases("ssm.lti", {}, [lti_inputs(0), lti_inputs(1, l=2)]), probes=False)
    assert len(rep.failures) == 2
    assert all(d.startswith("shifted by one step: y[l] equals the oracle's y[l - 1]") for d in _diagnoses(rep)), \
        _diagnoses(rep)


def test_a_window_edge_off_by_one_is_named():
    def window_3(q, k, v):  # a sliding window of 3 keys left of the (bottom-right) diagonal
        lq, lk = q.shape[1], k.shape[1]
        i = np.arange(lq)[:, None] + (lk - lq)
        j = np.arange(lk)[None, :]
        s = np.einsum("blhd,bshd->bhls", q, k) / np.sqrt(q.shape[-1])
        s = np.where((j <= i) & (j >= i - 3), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        return np.einsum("bhls,bshe->blhe", w / w.sum(-1, keepdims=True), v)

    rng = np.random.default_rng(5)
    inputs = [{"q": rng.standard_normal((1, 8, 2, 3)), "k": rng.standard_normal((1, 8, 2, 3)),
               "v": rng.standard_normal((1, 8, 2, 2))} for _ in range(2)]
    conv = {"causal": "bottom_right", "window_left": 2}
    rep = verify("attention.softmax", window_3, conventions=conv, cases=_cases("attention.softmax", conv, inputs),
                 probes=False)
    assert len(rep.failures) == 2
    assert all(d.startswith("off by one: the candidate conforms under window_left=3 instead of 2")
               for d in _diagnoses(rep)), _diagnoses(rep)
    ok = verify("attention.softmax", window_3, conventions=dict(conv, window_left=3),
                cases=_cases("attention.softmax", conv, inputs), probes=False)
    assert ok.passed, ok.to_text()


# -- 4. patterns along time ------------------------------------------------------------------------------------

CHUNKED4 = {"algorithm": "chunked", "chunk": 4}


def delta_chunks(q, k, v, beta, alpha, S0, *, carry=True, tail_from_zero=False):
    """The delta rule chunk by chunk (4 steps); the planted bugs: no state carried between chunks, or the last,
    partial chunk computed from a zero state."""
    l = q.shape[1]
    outs, S = [], S0
    for s in range(0, l, 4):
        sl = slice(s, s + 4)
        step = lambda start: delta_rule(q[:, sl], k[:, sl], v[:, sl], beta[:, sl], decay=alpha[:, sl],  # noqa: E731
                                        initial_state=start, return_final_state=True)
        o, S_next = step(S if carry or s == 0 else None)
        if tail_from_zero and s + 4 > l:
            o = step(None)[0]  # the output of the partial chunk from a zero state (its final state is right)
        outs.append(o)
        S = S_next
    return np.concatenate(outs, axis=1), S


def test_errors_that_begin_at_a_chunk_boundary_are_named():
    def no_carry(q, k, v, beta, alpha=None, S0=None):
        return delta_chunks(q, k, v, beta, alpha, S0, carry=False)

    cases = _cases("attention.delta_rule", CHUNKED4, [delta_inputs(0, l=12), delta_inputs(1, l=16)])
    rep = verify("attention.delta_rule", no_carry, conventions=CHUNKED4, cases=cases, probes=False)
    assert len(rep.failures) == 2
    for d in _diagnoses(rep):
        assert d.startswith("errors begin at a chunk boundary: o conforms at l < 4 and fails from l = the chunk "
                            "boundary 4 = 1 x chunk (4) on"), d
    ok = verify("attention.delta_rule", lambda *a, **kw: delta_chunks(*a, **kw), conventions=CHUNKED4, cases=cases,
                probes=False)
    assert ok.passed, ok.to_text()


def test_errors_only_in_the_last_partial_chunk_are_named():
    def tail(q, k, v, beta, alpha=None, S0=None):
        return delta_chunks(q, k, v, beta, alpha, S0, tail_from_zero=True)

    cases = _cases("attention.delta_rule", CHUNKED4, [delta_inputs(0, l=11), delta_inputs(1, l=9), delta_inputs(2, l=8)])
    rep = verify("attention.delta_rule", tail, conventions=CHUNKED4, cases=cases, probes=False)
    assert [c.case_id for c in rep.failures] == ["planted-0", "planted-1"]  # l = 8 has no partial chunk
    d0, d1 = _diagnoses(rep)
    assert d0.startswith("errors only in the last, partial chunk: o fails at l = 8..10 (chunk = 4, l = 11)"), d0
    assert d1.startswith("errors only in the last, partial chunk: o fails at l = 8..8 (chunk = 4, l = 9)"), d1


def test_errors_that_repeat_with_a_period_are_named():
    def first_step_of_each_chunk_without_D(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None,
                                           seq_idx=None):
        y, S = ssd_loop(x, dt, A, B, C, D, initial_states)
        y[:, ::4] -= D[:, None] * x[:, ::4]
        return y, S

    conv = dict(SSD_PLAIN, **CHUNKED4)
    cases = _cases("ssm.ssd", conv, [ssd_inputs(0, l=13), ssd_inputs(1, l=6)])
    rep = verify("ssm.ssd", first_step_of_each_chunk_without_D, conventions=conv, cases=cases, probes=False)
    assert len(rep.failures) == 2
    for d in _diagnoses(rep):
        assert d.startswith("errors repeat with period 4 (chunk = 4): y fails at l = 0 (mod 4)"), d


def test_a_smooth_error_is_not_called_a_boundary():
    # the same shape of profile as a boundary, but growing smoothly: no gap, no pattern
    p = np.array([0.01, 0.05, 0.2, 0.9, 3.0, 9.0, 30.0, 90.0])
    assert dg._gap_split(p) is None
    q = np.array([0.01, 0.02, 0.01, 0.03, 1e6, 1e6, 2e6, 1e6])
    assert dg._gap_split(q).tolist() == [4, 5, 6, 7]


# -- 5. one group / head / channel block ---------------------------------------------------------------------------

def test_groups_expanded_in_the_wrong_order_are_named():
    cases = _cases("ssm.ssd", SSD_PLAIN, [ssd_inputs(0, h=4, g=2), ssd_inputs(1, h=6, g=3, b=2)])
    rep = verify("ssm.ssd", ssd_candidate(order="h g"), conventions=SSD_PLAIN, cases=cases, probes=False)
    assert len(rep.failures) == 2
    for d in _diagnoses(rep):
        assert d.startswith("groups expanded in the wrong order: B, C repeated as '(h g)'"), d


def test_one_wrong_group_of_heads_is_located():
    def group1_reads_group0(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None):
        B = B.copy()
        B[:, :, 1] = B[:, :, 0]
        return ssd_loop(x, dt, A, B, C, D, initial_states)

    cases = _cases("ssm.ssd", SSD_PLAIN, [ssd_inputs(0, h=4, g=2), ssd_inputs(1, h=6, g=3)])
    rep = verify("ssm.ssd", group1_reads_group0, conventions=SSD_PLAIN, cases=cases, probes=False)
    d0, d1 = _diagnoses(rep)
    assert d0.startswith("one block wrong: y fails only at the heads of g = 1 (2 heads per group, 2 groups)"), d0
    assert d1.startswith("one block wrong: y fails only at the heads of g = 1 (2 heads per group, 3 groups)"), d1


def test_one_wrong_channel_is_located():
    def channel_1_wrong_sign(u, delta, A, B, C, D=None, z=None, **kw):
        D = D.copy()
        D[1] = -D[1]
        return selective_scan(u, delta, A, B, C, D, z, **kw)

    rep = verify("ssm.selective_scan", channel_1_wrong_sign, adapter="refimpl",
                 cases=_cases("ssm.selective_scan", {}, [selective_inputs(0, d=4)]), probes=False)
    assert rep.failures[0].diagnosis.startswith("one block wrong: out fails only at d = 1 of 4"), \
        rep.failures[0].diagnosis


# -- 6. the state ----------------------------------------------------------------------------------------------------

LTI_CASES = [lti_inputs(0), lti_inputs(1, b=2, l=5)]


def test_an_ignored_initial_state_is_named():
    def no_h0(A_bar, B_bar, C, D, x, h0=None):
        return lti_ssm(A_bar, B_bar, C, D, x, return_final_state=True)

    rep = verify("ssm.lti", no_h0, cases=_cases("ssm.lti", {}, LTI_CASES), probes=False)
    assert len(rep.failures) == 2
    assert all(d == "the initial state h0 is ignored: the candidate equals the oracle with h0 = 0"
               for d in _diagnoses(rep)), _diagnoses(rep)


def test_a_final_state_equal_to_the_initial_state_is_named():
    def stale(A_bar, B_bar, C, D, x, h0=None):
        y, _ = lti_ssm(A_bar, B_bar, C, D, x, initial_state=h0, return_final_state=True)
        return y, h0

    rep = verify("ssm.lti", stale, cases=_cases("ssm.lti", {}, LTI_CASES), probes=False)
    assert len(rep.failures) == 2
    assert all(d.startswith("the final state h_last equals the initial state h0") for d in _diagnoses(rep))


def test_a_final_state_not_returned_is_named():
    def no_final(A_bar, B_bar, C, D, x, h0=None):
        return lti_ssm(A_bar, B_bar, C, D, x, initial_state=h0, return_final_state=True)[0], None

    rep = verify("ssm.lti", no_final, cases=_cases("ssm.lti", {}, LTI_CASES), probes=False)
    assert all(d.startswith("the final state h_last was not returned") for d in _diagnoses(rep)), _diagnoses(rep)


# -- 7. NaN/Inf with the inputs' regime ----------------------------------------------------------------------------

def test_nan_where_a_quotient_cancels_names_the_regime():
    def naive_phi1(A, B, dt, C=None, D=None):  # ZOH B_bar = (e^{A dt} - 1) / A B, evaluated as written
        A_bar = np.exp(A * dt)
        with np.errstate(invalid="ignore", divide="ignore"):
            return A_bar, ((A_bar - 1.0) / A)[..., None] * B

    conv = {"diagonal": True}
    inp = {"A": np.array([[-1.0, 0.0, -0.5]]), "B": np.ones((1, 3, 1)), "dt": np.array(0.5), "C": None, "D": None}
    rep = verify("ssm.discretize", naive_phi1, conventions=conv, cases=_cases("ssm.discretize", conv, [inp]),
                 probes=False)
    d = rep.failures[0].diagnosis
    assert d.startswith("NaN/Inf in B_bar (1 of 3 entries; n = 1 of 3) where the oracle is finite"), d
    assert "|A| reaches 0" in d and "the regime A -> 0" in d, d


# -- 8. a convention flip still comes last and still works ------------------------------------------------------

def test_a_convention_flip_is_still_named():
    def ungated(q, k, v, beta, alpha=None, S0=None):
        return delta_rule(q, k, v, beta, initial_state=S0, return_final_state=True)

    rep = verify("attention.delta_rule", ungated, cases=_cases("attention.delta_rule", {}, [delta_inputs(0)]),
                 probes=False)
    assert "the candidate conforms under convention use_alpha=False instead of True" in rep.failures[0].diagnosis


# -- the error map and the plots --------------------------------------------------------------------------------

def _tail_report():
    def tail(q, k, v, beta, alpha=None, S0=None):
        return delta_chunks(q, k, v, beta, alpha, S0, tail_from_zero=True)

    return verify("attention.delta_rule", tail, conventions=CHUNKED4, probes=False,
                  cases=_cases("attention.delta_rule", CHUNKED4, [delta_inputs(0, l=21, h=3)]))


def test_the_text_report_maps_the_error_along_time_and_heads():
    rep = _tail_report()
    case = rep.failures[0]
    m = next(m for m in case.error_maps if m.output == "o")
    assert m.axes == ("b", "l", "h", "e") and m.profiles["l"].shape == (21,)
    assert np.all(m.profiles["l"][:20] <= 1) and np.all(m.profiles["l"][20:] > 1)  # the partial chunk: step 20
    text = rep.to_text()
    assert "error map (max err/bound per bin" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("l (time, 21 in 11 bins of 2)"))
    spark = line.split(")")[1].split()[0]
    assert spark[:10] == "." * 10 and len(spark) == 11 and spark[10].isdigit(), line
    assert any(ln.strip().startswith("h (heads, 3)") for ln in text.splitlines())
    d = json.loads(rep.to_json())
    maps = next(c for c in d["cases"] if not c["passed"])["error_maps"]
    assert maps[0]["output"] == "o" and len(maps[0]["profiles"]["l"]) == 21


def test_sparkline_bins_and_characters():
    assert dg.sparkline(np.array([0.5, 2.0, 50.0, np.inf, 1e12])) == ".12!9"
    p = np.zeros(40)
    p[39] = 5.0
    s = dg.sparkline(p)
    assert len(s) == 14 and s == "." * 13 + "1"  # 40 steps in 14 bins of 3


def test_bfloat16_rounding_matches_ml_dtypes():
    ml = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 1e3
    x[:3] = [np.inf, -np.inf, 0.0]
    assert np.array_equal(dg._round_bfloat16(x), x.astype(ml.bfloat16).astype(np.float32))


def test_plots_write_one_heatmap_per_failing_case(tmp_path):
    pytest.importorskip("matplotlib")

    def tail(q, k, v, beta, alpha=None, S0=None):
        return delta_chunks(q, k, v, beta, alpha, S0, tail_from_zero=True)

    cases = _cases("attention.delta_rule", CHUNKED4, [delta_inputs(0, l=11), delta_inputs(1, l=8)])
    rep = verify("attention.delta_rule", tail, conventions=CHUNKED4, cases=cases, probes=False, plots=str(tmp_path))
    assert [c.case_id for c in rep.failures] == ["planted-0"]
    files = sorted(os.listdir(tmp_path))
    assert files == ["attention.delta_rule-planted-0-float64.png"]
    with open(tmp_path / files[0], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert rep.failures[0].plot == str(tmp_path / files[0]) and f"plot: {rep.failures[0].plot}" in rep.to_text()


def test_cli_plots_flag(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from oracles.cli import main

    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    rc = main(["verify", "test_verify_diagnosis:_lti_no_h0", "--op", "ssm.lti", "--max-examples", "1",
               "--cases", "golden,random", "--plots", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 1 and "the initial state h0 is ignored" in out
    pngs = [f for f in os.listdir(tmp_path) if f.endswith(".png")]
    assert pngs and all(f.startswith("ssm.lti-") for f in pngs)


def _lti_no_h0(A_bar, B_bar, C, D, x, h0=None):
    return lti_ssm(A_bar, B_bar, C, D, x, return_final_state=True)


def test_plots_without_matplotlib_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(ImportError, match="plots: matplotlib is not installed"):
        verify("ssm.lti", _lti_no_h0, plots="/nonexistent", kinds=("golden",))
