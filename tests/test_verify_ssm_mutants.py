"""The SSM mutant corpus (oracles/mutants/ssm.py, structured.py): every mutant of our ops is caught.

A fast subset of the default run: each mutant is verified on the op's golden and edge cases (the cases every
default run includes) plus its probes, without the diagnosis pass; one test runs the real ``run_mutants``
path at default settings on a few mutants.  ``python -m oracles mutants --op ssm.lti`` (etc.) runs the full
default verification of every one.
"""
import pytest

from oracles.mutants import all_mutants, import_errors, run_mutants
from oracles.verify import verify

OPS = ("ssm.discretize", "ssm.lti", "ssm.s4d_kernel", "ssm.lru", "ssm.s4_kernel", "ssm.dss_kernel", "ssm.s5",
       "ssm.ema", "ssm.hippo_projection")
MUTANTS = [m for op in OPS for m in all_mutants(op, kind="forward") if m.op == op]


def test_the_corpus_loads_and_covers_every_op():
    errs = {k: v for k, v in import_errors().items() if k in ("ssm", "structured")}
    assert not errs, errs
    assert len(MUTANTS) >= 20
    assert {m.op for m in MUTANTS} == set(OPS)


@pytest.mark.parametrize("m", MUTANTS, ids=[m.key for m in MUTANTS])
def test_mutant_is_killed_by_the_default_cases(m):
    rep = verify(m.op, m.fn, adapter=m.adapter, conventions=dict(m.conventions), dtype=list(m.dtype),
                 kinds=("golden", "edge"), diagnose=False, candidate_name=m.key)
    assert not rep.passed, f"{m.key} survived: {m.doc}\n{rep.to_text()}"


def test_run_mutants_default_path_kills_a_sample():
    names = ["ssm.lti:initial-state-ignored", "ssm.s4_kernel:woodbury-sign", "ssm.hippo_projection:B-scaled-wrongly"]
    results = run_mutants("ssm", names=names)
    assert {r.mutant.key for r in results} == set(names)
    for r in results:
        assert r.error is None, r.error
        assert r.killed, (r.mutant.key, r.verdict)
