"""Property tests for SSD (Mamba-2): views, the Numba kernel, the duality, packing, split-and-resume.

Bounds come from :func:`oracles.selective.ssd_bound` (the S6 running-error analysis on the
per-channel form), evaluated for the view under test.
"""
from __future__ import annotations


import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles import selective as O
from oracles.strategies.selective import ssd_problems
from oracles.tolerance import Bound, assert_within
from refimpl.ssm.selective import selective_scan
from refimpl.ssm.ssd import ssd_scan, ssd_step

KEYS = ("dt_bias", "dt_softplus", "dt_limit", "initial_state", "seq_idx")
# name -> (view, backend); the name is also the view of the error bound
IMPLS = {"recurrent": ("recurrent", "numpy"), "quadratic": ("quadratic", "numpy"), "chunked": ("chunked", "numpy"),
         "numba_chunked": ("chunked", "numba")}
VIEWS = tuple(IMPLS)
S6_IMPLS = {"recurrent": ("recurrent", "numpy"), "scan": ("scan", "numpy"), "chunked": ("chunked", "numpy"),
            "numba": ("recurrent", "numba")}


def _args(pr):
    return [pr[k] for k in ("x", "dt", "A", "B", "C", "D", "z")]


def _kw(pr):
    return {k: pr[k] for k in KEYS}


def _run(impl, pr, **over):
    view, backend = IMPLS[impl]
    kw = dict(_kw(pr), return_final_state=True)
    kw.update(over)
    return ssd_scan(*_args(pr), view=view, backend=backend, chunk=pr["chunk"], **kw)


def _check(view, pr, dtype):
    y, fin = _run(view, pr)
    assert y.dtype == np.dtype(dtype) and y.shape == pr["x"].shape
    yo, So = O.ssd_solve(*_args(pr), **_kw(pr))
    bo, bs = O.ssd_bound(*_args(pr), **_kw(pr), dtype=dtype, view=view, chunk=pr["chunk"])
    assert_within(y, yo, bo, context=f"{view} y")
    assert_within(fin, So, bs, context=f"{view} final state")


@given(pr=ssd_problems(), view=st.sampled_from(VIEWS))
def test_views_match_loop_oracle_float64(pr, view):
    _check(view, pr, np.float64)


@given(pr=ssd_problems(dtype=np.float32), view=st.sampled_from(VIEWS))
def test_views_float32_within_derived_bound(pr, view):
    _check(view, pr, np.float32)


@given(pr=ssd_problems(max_len=12))
def test_solve_oracle_equals_dense_operator(pr):
    yo, So = O.ssd_solve(*_args(pr), **_kw(pr))
    yd, Sd = O.ssd_dense(*_args(pr), **_kw(pr))
    bo, bs = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="quadratic")
    assert_within(yd, yo, bo, context="dense vs loop")
    assert_within(Sd, So, bs, context="dense vs loop (state)")


@given(pr=ssd_problems(allow_seq_idx=False), s6_view=st.sampled_from(("recurrent", "scan", "chunked", "numba")),
       ssd_view=st.sampled_from(VIEWS))
def test_duality_ssd_equals_selective_scan_and_linear_attention(pr, s6_view, ssd_view):
    """SSD == the selective scan with A broadcast per head == causal linear attention with decay."""
    y_ssd, fin = _run(ssd_view, pr)
    b, l, h, p = pr["x"].shape
    # the selective scan on channels (h p), A_h on every state entry, grouped B/C, dt already processed
    a = O.ssd_as_s6(*_args(pr), **_kw(pr))
    view, backend = S6_IMPLS[s6_view]
    o, hl = selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], initial_state=a["initial_state"],
                           return_final_state=True, view=view, backend=backend, chunk=pr["chunk"])
    y_s6 = o.reshape(b, l, h, p)
    n = pr["B"].shape[-1]
    fin_s6 = hl.reshape(b, h, p, n)
    # causal linear attention: q = C, k = B (per head), v = dt x, decay a = exp(dt A), S0 = initial state
    dte = O.ssd_effective_dt(pr["dt"], pr["dt_bias"], pr["dt_softplus"], pr["dt_limit"])
    grp = np.arange(h) // (h // pr["B"].shape[2])
    q, k = pr["C"][:, :, grp], pr["B"][:, :, grp]
    v = dte[..., None] * pr["x"]
    o_la = O.decayed_linear_attention(q, k, v, np.exp(dte * pr["A"]), initial_state=pr["initial_state"])
    if pr["D"] is not None:
        Dv = np.asarray(pr["D"], dtype=np.float64)
        o_la = o_la + (Dv[:, None] if Dv.ndim == 1 else Dv) * pr["x"]
    if pr["z"] is not None:
        o_la = o_la * (pr["z"] / (1.0 + np.exp(-pr["z"].astype(np.float64))))
    bo_ssd, bs_ssd = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view=ssd_view, chunk=pr["chunk"])
    bo_s6, bs_s6 = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64,
                               view={"numba": "recurrent"}.get(s6_view, s6_view), chunk=pr["chunk"])
    bo_la, _ = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="quadratic")
    # two candidates agree within the sum of their bounds against the (shared) exact answer
    assert_within(y_s6, y_ssd, bo_ssd + bo_s6, context="SSD vs selective scan")
    assert_within(fin_s6, fin, bs_ssd + bs_s6, context="SSD vs selective scan (state)")
    assert_within(o_la, y_ssd, bo_ssd + bo_la, context="SSD vs decayed linear attention")


@given(pr=ssd_problems(allow_seq_idx=False), view=st.sampled_from(VIEWS), data=st.data())
def test_split_and_resume_equals_whole(pr, view, data):
    L = pr["x"].shape[1]
    k = data.draw(st.integers(0, L), label="split")
    first, second = dict(pr), dict(pr)
    for key in ("x", "dt", "B", "C", "z"):
        if pr[key] is not None:
            first[key], second[key] = pr[key][:, :k], pr[key][:, k:]
    y1, S1 = _run(view, first)
    second["initial_state"] = S1
    y2, S2 = _run(view, second)
    yo, So = O.ssd_solve(*_args(pr), **_kw(pr))
    bo, bs = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view=view, chunk=pr["chunk"])
    assert_within(np.concatenate([y1, y2], axis=1), yo, bo, context="split run")
    assert_within(S2, So, bs, context="split run final state")
    if view == "recurrent":
        np.testing.assert_array_equal(np.concatenate([y1, y2], axis=1), _run(view, pr)[0])


@given(pr=ssd_problems(allow_seq_idx=False, max_batch=1), view=st.sampled_from(VIEWS), data=st.data())
def test_seq_idx_packing_equals_separate_runs(pr, view, data):
    """Two sequences packed in one row with seq_idx give the same outputs as two separate runs."""
    L = pr["x"].shape[1]
    k = data.draw(st.integers(0, L), label="boundary")
    packed = dict(pr, seq_idx=np.concatenate([np.zeros(k, np.int64), np.ones(L - k, np.int64)])[None])
    yp, Sp = _run(view, packed)
    # the initial state belongs to the row's first sequence (the second one only when k == 0)
    first, second = dict(pr), dict(pr, initial_state=None if k > 0 else pr["initial_state"])
    for key in ("x", "dt", "B", "C", "z"):
        if pr[key] is not None:
            first[key], second[key] = pr[key][:, :k], pr[key][:, k:]
    y1, S1 = _run(view, first)
    y2, S2 = _run(view, second)
    yo, So = O.ssd_solve(*_args(packed), **_kw(packed))
    bo, bs = O.ssd_bound(*_args(packed), **_kw(packed), dtype=np.float64, view=view, chunk=pr["chunk"])
    b1, bs1 = O.ssd_bound(*_args(first), **_kw(first), dtype=np.float64, view=view, chunk=pr["chunk"])
    b2, bs2 = O.ssd_bound(*_args(second), **_kw(second), dtype=np.float64, view=view, chunk=pr["chunk"])
    bsep = Bound(np.concatenate([np.asarray(b1.values), np.asarray(b2.values)], axis=1), b1.source)
    assert_within(np.concatenate([y1, y2], axis=1), yp, bo + bsep, context="packed vs separate")
    if L - k > 0:
        assert_within(S2, Sp, bs + bs2, context="packed final state = last sequence's")


@settings(max_examples=8)
@given(pr=ssd_problems(max_batch=1, max_heads=2, max_headdim=2, max_state=2, max_len=5))
def test_solve_oracle_against_mpmath(pr):
    yo, So = O.ssd_solve(*_args(pr), **_kw(pr))
    ym, Sm = O.ssd_mpmath(*_args(pr), **_kw(pr))
    bo, bs = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="recurrent", oracle_dtype=None)
    assert_within(yo, ym, bo, context="float64 SSD banded solve vs mpmath")
    assert_within(So, Sm, bs, context="float64 SSD banded solve vs mpmath (state)")


@given(pr=ssd_problems(allow_seq_idx=False, max_len=10))
def test_step_decode_equals_recurrent_and_the_oracle(pr):
    """Decoding with :func:`ssd_step` (the single-step formula, its own code) does the recurrent view's
    arithmetic in the same order -- bit for bit -- and lands within the recurrent bound of the
    independent banded-solve oracle."""
    b, L, h, p = pr["x"].shape
    n = pr["B"].shape[-1]
    y, fin = _run("recurrent", pr)
    yo, So = O.ssd_solve(*_args(pr), **_kw(pr))
    bo, bs = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view="recurrent")
    state = pr["initial_state"] if pr["initial_state"] is not None else np.zeros((b, h, p, n), dtype=fin.dtype)
    outs = []
    for t in range(L):
        o, state = ssd_step(state, pr["x"][:, t], pr["dt"][:, t], pr["A"], pr["B"][:, t], pr["C"][:, t], pr["D"],
                            None if pr["z"] is None else pr["z"][:, t], dt_bias=pr["dt_bias"],
                            dt_softplus=pr["dt_softplus"], dt_limit=pr["dt_limit"])
        np.testing.assert_array_equal(o, y[:, t])
        outs.append(o)
    np.testing.assert_array_equal(state, fin)
    if L:
        assert_within(np.stack(outs, axis=1), yo, bo, context="decode vs the oracle")
    assert_within(state, So, bs, context="decode state vs the oracle")


@given(pr=ssd_problems(), view=st.sampled_from(VIEWS), data=st.data())
def test_padded_tail_does_not_leak_into_the_prefix(pr, view, data):
    """Appending arbitrary large inputs after position L (a padded tail, possibly inside the last
    chunk) leaves the first L outputs inside their bound."""
    L = pr["x"].shape[1]
    pad = data.draw(st.integers(1, 9), label="pad")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    padded = dict(pr)
    for key in ("x", "dt", "B", "C", "z"):
        if pr[key] is not None:
            shp = (pr[key].shape[0], pad) + pr[key].shape[2:]
            tail = 1e3 * rng.standard_normal(shp)
            if key == "dt" and not pr["dt_softplus"]:
                tail = np.abs(tail)
            padded[key] = np.concatenate([pr[key], tail.astype(pr[key].dtype)], axis=1)
    if pr["seq_idx"] is not None:
        last = pr["seq_idx"][:, -1:] if L else np.zeros((pr["x"].shape[0], 1), np.int64)
        padded["seq_idx"] = np.concatenate([pr["seq_idx"], np.repeat(last, pad, axis=1)], axis=1)
    y_p, _ = _run(view, padded)
    yo, _ = O.ssd_solve(*_args(pr), **_kw(pr))
    bo, _ = O.ssd_bound(*_args(pr), **_kw(pr), dtype=np.float64, view=view, chunk=pr["chunk"])
    assert_within(y_p[:, :L], yo, bo, context="prefix of the padded run")
