"""The S6 / SSD mutant corpus (oracles/mutants/selective.py): a fast subset, each verified at default settings,
must be killed -- and the ones whose bug hides behind an argument must be killed by the argument-paths probe, the
only part of a default run that takes that path (issue 11)."""
import pytest

from oracles.mutants import all_mutants, run_mutants

S6, SSD = "ssm.selective_scan", "ssm.ssd"

# (op, mutant): one per kind of deviation -- a convention behind an argument, a group order, a chunk boundary,
# a series coefficient, packed sequences, a per-head broadcast
FAST = [
    (S6, "softplus-before-bias"),
    (S6, "group-order-hg"),
    (S6, "phi1-series-x2-over-3"),
    (S6, "chunk-boundary-off-by-one"),
    (S6, "softplus-without-threshold"),
    (SSD, "dt-softplus-before-bias"),
    (SSD, "dt-limit-before-softplus"),
    (SSD, "seq-idx-one-step-late"),
    (SSD, "D-per-head-tiled"),
    (SSD, "group-order-hg"),
]


def test_the_corpus_covers_both_ops_with_at_least_twenty_mutants():
    ms = all_mutants(S6, kind="forward") + all_mutants(SSD, kind="forward")
    assert len(ms) >= 20
    assert len(all_mutants(S6, kind="forward")) >= 10 and len(all_mutants(SSD, kind="forward")) >= 10
    assert len({m.key for m in ms}) == len(ms)
    assert all(m.doc for m in ms)
    assert {(op, name) for op, name in FAST} <= {(m.op, m.name) for m in ms}


@pytest.mark.parametrize("op, name", FAST)
def test_mutant_is_killed_at_default_settings(op, name):
    (res,) = run_mutants(op, names=[name])
    assert res.error is None, res.error
    assert res.killed, f"{res.mutant.key} survived: {res.verdict}"


@pytest.mark.parametrize("op, name, path", [
    (S6, "softplus-before-bias", "delta_softplus=True"),
    (SSD, "dt-softplus-before-bias", "dt_softplus=True"),
    (SSD, "dt-limit-before-softplus", "dt_limit=(0.1, 0.3)"),
])
def test_a_bug_behind_an_argument_is_killed_by_the_argument_path(op, name, path):
    from oracles.verify import verify

    (m,) = [m for m in all_mutants(op, kind="forward") if m.name == name]
    rep = verify(op, m.fn, adapter=m.adapter, conventions=dict(m.conventions), candidate_name=m.key)
    assert all(c.passed for c in rep.cases), rep.to_text()  # the default conventions never take the path...
    probe = next(p for p in rep.probes if p.name == "argument_paths")
    assert not probe.passed and f"under {path}" in probe.message, probe.message  # ...the probe does


def test_re_instead_of_2re_through_mambas_interface_is_diagnosed():
    from oracles.verify import verify

    (m,) = [m for m in all_mutants(S6, kind="forward") if m.name == "re-instead-of-2re"]
    rep = verify(S6, m.fn, adapter=m.adapter, kinds=("golden", "edge"), probes=False)
    assert not rep.passed
    # the adapter no longer fixes real_output, so the diagnosis can name the convention the code follows
    complex_case = next(c for c in rep.failures if c.case_id == "edge-complex")
    assert "real_output='re'" in complex_case.diagnosis, complex_case.diagnosis
    assert all(c.passed for c in rep.cases if c.case_id == "golden-small")  # real A: Re and 2 Re agree there
