"""A declared domain (issue 10, point 3): what a candidate legitimately refuses, and the headline that keeps a
candidate that raises apart from one that computes the wrong values.

The candidates are written here: our own reference in the op's canonical signature, refusing some inputs the
way upstream kernels do (``L = 0``, ``L`` not a multiple of their chunk, a value dimension other than the query
dimension).  Random cases: at most one in ten with an empty sequence, none repeated.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from oracles.cli import main
from oracles.verify import generate_cases, get_op, verify
from oracles.verify.registry import case_key, case_sizes, domain_hint, op_domain

FEW = dict(max_examples=10, seed=3)


def refusing(op, refuse, exc=IndexError, conventions=None):
    """Our reference for ``op`` in its canonical signature, raising ``exc`` on the cases ``refuse(sizes)`` picks."""
    spec = get_op(op)
    conv = spec.resolve_conventions(conventions)
    names = [a.name for a in spec.inputs]

    def candidate(*args):
        inputs = {n: (args[i] if i < len(args) else None) for i, n in enumerate(names)}
        sizes = case_sizes(spec, inputs)
        if refuse(sizes):
            raise exc(f"this kernel does not take sizes {sizes}")
        return spec.reference(inputs, conv)

    candidate.__qualname__ = f"refusing_{op.replace('.', '_')}"
    return candidate


def _L(spec, sizes):
    return spec.resolve_domain({}).length(sizes)


# module level, so that `refimpl verify test_verify_domain:NAME` imports them
no_empty_scan = refusing("ssm.selective_scan", lambda s: s["l"] == 0)
chunk8_ssd = refusing("ssm.ssd", lambda s: s["l"] % 8 != 0, exc=ValueError)


# -- refusing L = 0 -------------------------------------------------------------------------------------------

def test_a_candidate_refusing_empty_sequences_does_not_conform_and_the_headline_says_why():
    rep = verify("ssm.selective_scan", no_empty_scan, **FEW)
    assert not rep.passed
    raised = [c for c in rep.cases if c.raised]
    assert raised and all(c.sizes["l"] == 0 for c in raised)
    assert all(c.passed for c in rep.cases if not c.raised)  # the values are right wherever it ran
    head = rep.summary()
    ran = sum(1 for c in rep.cases if not c.raised and not c.skipped)
    assert f"DOES NOT CONFORM: conforms on all {ran} cases that ran; " in head
    assert re.search(rf"raised IndexError \(at test_verify_domain\.py:\d+ in candidate\) on {len(raised)} cases?, "
                     r"all with L = 0: declare --domain min_length=1 if L = 0 is unsupported", head), head


def test_declaring_min_length_drops_the_empty_cases_and_the_candidate_conforms():
    rep = verify("ssm.selective_scan", no_empty_scan, domain={"min_length": 1}, **FEW)
    assert rep.passed, rep.to_text()
    assert rep.domain == {"min_length": 1}
    dropped = {o["case_id"] for o in rep.outside_domain}
    assert "edge-L0" in dropped and all(o["kind"] in ("golden", "edge") for o in rep.outside_domain)
    assert all("L = 0 < min_length 1" in o["reason"] for o in rep.outside_domain)
    # random cases are drawn inside the domain, not filtered away: all ten of them ran
    random = [c for c in rep.cases if c.kind in ("random", "hypothesis")]
    assert len(random) == FEW["max_examples"] and all(c.sizes["l"] >= 1 for c in rep.cases)
    head = rep.summary()
    assert head.startswith("ssm.selective_scan <- ") and ": CONFORMS: conforms on all " in head
    assert f"{len(dropped)} golden/edge case{'s' if len(dropped) > 1 else ''} outside the declared domain " \
           "(min_length=1) not run" in head
    assert "declared domain: min_length=1; outside it, not run: edge-L0 (L = 0 < min_length 1)" in rep.to_text()
    d = rep.to_dict()
    assert d["domain"] == {"min_length": 1} and d["outside_domain"] == rep.outside_domain


def test_raising_inside_the_declared_domain_does_not_conform():
    """A declared domain removes only what it names: refusing L = 1 as well still fails, at L = 1."""
    cand = refusing("ssm.selective_scan", lambda s: s["l"] <= 1)
    rep = verify("ssm.selective_scan", cand, domain={"min_length": 1}, **FEW)
    assert not rep.passed
    assert {c.sizes["l"] for c in rep.cases if c.raised} == {1}
    assert "all with L < 2: declare --domain min_length=2 if L < 2 is unsupported" in rep.summary()


# -- refusing L not a multiple of 8 ---------------------------------------------------------------------------

def test_a_candidate_refusing_partial_chunks_and_the_length_multiple_it_needs():
    rep = verify("ssm.ssd", chunk8_ssd, **FEW)
    assert not rep.passed
    raised = [c for c in rep.cases if c.raised]
    assert raised and all(c.sizes["l"] % 8 for c in raised)
    assert all(c.passed for c in rep.cases if not c.raised)
    assert re.search(r"raised ValueError \(at test_verify_domain\.py:\d+ in candidate\) on \d+ cases, all with L not "
                     r"a multiple of \d+: declare --domain length_multiple=(\d+|K, K the kernel's chunk,) if other "
                     r"lengths are unsupported", rep.summary()), rep.summary()
    assert "8" in rep.summary().split("length_multiple=")[1].split(";")[0]  # the chunk it needs is among those named


def test_the_hint_names_the_smallest_multiple_that_separates_the_raising_cases():
    spec = get_op("ssm.ssd")
    conv = spec.resolve_conventions({})
    add_cases = [generate_cases(spec, conv, max_examples=0)[0]]  # the golden case: L = 6
    from oracles.verify.registry import case_builder

    add = case_builder(spec.name, spec.sample, 991, conv)
    for i, L in enumerate((0, 8, 16, 24, 4, 12, 3, 5)):
        add(f"L{L}", "edge", f"L = {L}", i, L=L, b=1, h=2, p=2, n=2)
    rep = verify(spec, chunk8_ssd, cases=add.cases + add_cases, probes=False)
    assert {c.sizes["l"] for c in rep.cases if c.raised} == {4, 12, 3, 5, 6}
    # 4 and 12 are even and multiples of 4: the smallest k that no raising case is a multiple of is 8
    assert "all with L not a multiple of 8: declare --domain length_multiple=8" in rep.summary(), rep.summary()


def test_declaring_length_multiple_draws_every_random_case_inside_and_the_probes_run_inside():
    rep = verify("ssm.ssd", chunk8_ssd, domain={"length_multiple": 8}, **FEW)
    assert rep.passed, rep.to_text()
    assert all(c.sizes["l"] % 8 == 0 for c in rep.cases)
    assert len([c for c in rep.cases if c.kind in ("random", "hypothesis")]) == FEW["max_examples"]
    assert rep.outside_domain and all("is not a multiple of length_multiple 8" in o["reason"]
                                      for o in rep.outside_domain)
    assert rep.probes and all(p.passed for p in rep.probes)  # the causality probe drew L = 16, not its L = 12


# -- a dimension equality -------------------------------------------------------------------------------------

def test_a_candidate_that_needs_value_dim_equal_to_query_dim():
    cand = refusing("attention.softmax", lambda s: s["e"] != s["d"], exc=AssertionError)
    rep = verify("attention.softmax", cand, **FEW)
    assert not rep.passed
    assert "all with value_dim (e) != query_dim (d): declare --domain value_dim=query_dim" in rep.summary(), \
        rep.summary()
    rep = verify("attention.softmax", cand, domain={"value_dim": "query_dim"}, **FEW)
    assert rep.passed, rep.to_text()
    assert all(c.sizes["e"] == c.sizes["d"] for c in rep.cases)
    assert len([c for c in rep.cases if c.kind in ("random", "hypothesis")]) == FEW["max_examples"]


def test_a_fixed_size():
    rep = verify("ssm.selective_scan", refusing("ssm.selective_scan", lambda s: s["n"] != 4), domain={"state_dim": 4},
                 **FEW)
    assert rep.passed, rep.to_text()
    assert all(c.sizes["n"] == 4 for c in rep.cases)


# -- the two kinds of failure apart ---------------------------------------------------------------------------

def test_wrong_values_and_raising_are_reported_apart():
    spec = get_op("ssm.selective_scan")
    ref = refusing("ssm.selective_scan", lambda s: s["l"] == 0)

    def wrong_and_refusing(*args):
        out = ref(*args)
        return {k: v * 1.001 for k, v in out.items()}

    rep = verify(spec, wrong_and_refusing, probes=False, **FEW)
    ran = [c for c in rep.cases if not c.raised and not c.skipped]
    nbad = sum(not c.passed for c in ran)
    assert nbad > 0
    head = rep.headline()
    assert head.startswith(f"{len(ran) - nbad}/{len(ran)} cases that ran pass; raised IndexError")
    assert "all with L = 0" in head


def test_domain_hint_needs_a_property_that_separates():
    dom = op_domain(length=("l", "L"), query_dim=("d", "d"), value_dim=("e", "e"))
    assert domain_hint(dom, [{"l": 0}], [{"l": 3}, {"l": 5}])[0] == "all with L = 0"
    assert domain_hint(dom, [{"l": 0}, {"l": 3}], [{"l": 3}]) is None  # L = 3 both raised and ran
    # 2, 4 and 8 all divide every length that ran and none that raised: the smallest is named, all are listed
    assert domain_hint(dom, [{"l": 3}, {"l": 5}], [{"l": 8}, {"l": 16}, {"l": 0}]) == (
        "all with L not a multiple of 2", "declare --domain length_multiple=K, K the kernel's chunk, if other lengths "
        "are unsupported (K = 2, 4 or 8 fit these cases)")
    assert domain_hint(dom, [{"l": 3}, {"l": 6}], [{"l": 4}, {"l": 8}])[1] == \
        "declare --domain length_multiple=4 if other lengths are unsupported"
    assert domain_hint(dom, [{"l": 4, "d": 2, "e": 3}], [{"l": 4, "d": 2, "e": 2}])[1].startswith(
        "declare --domain value_dim=query_dim")
    assert domain_hint(dom, [], [{"l": 1}]) is None


# -- the random cases: at most one in ten empty, none repeated ------------------------------------------------

@pytest.mark.parametrize("op", ["ssm.ssd", "attention.softmax", "ssm.lti", "attention.delta_rule"])
def test_random_cases_at_most_one_in_ten_empty_and_no_duplicates(op):
    spec = get_op(op)
    conv = spec.resolve_conventions({})
    dom = spec.resolve_domain({})
    cases = generate_cases(spec, conv, max_examples=60, seed=11)
    random = [c for c in cases if c.kind in ("random", "hypothesis")]
    assert len(random) == 60
    empty = [c for c in random if _L(spec, case_sizes(spec, c.inputs)) == 0]
    assert len(empty) <= 6, [c.note for c in empty]
    keys = [case_key(c.inputs) for c in cases]
    assert len(set(keys)) == len(keys)  # golden, edge and random: no case twice
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == len(ids)
    # the strategies draw empty sequences often (these ops: 25-35%): the rule is doing something
    raw = [c for c in random if "redrawn" in c.note]
    assert raw, "no draw was redrawn: this test no longer exercises the rule"


def test_fewer_than_ten_random_cases_have_no_empty_sequence():
    spec = get_op("ssm.ssd")
    cases = generate_cases(spec, spec.resolve_conventions({}), max_examples=9, kinds=("random",))
    assert len(cases) == 9 and all(_L(spec, case_sizes(spec, c.inputs)) > 0 for c in cases)


def test_generated_cases_are_reproducible():
    spec = get_op("attention.softmax")
    conv = spec.resolve_conventions({})
    a = generate_cases(spec, conv, max_examples=20, seed=5, domain={"min_length": 2})
    b = generate_cases(spec, conv, max_examples=20, seed=5, domain={"min_length": 2})
    assert [case_key(c.inputs) for c in a] == [case_key(c.inputs) for c in b]
    assert all(min(c.inputs["q"].shape[1], c.inputs["k"].shape[1]) >= 2 for c in a)


# -- bad declarations -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("domain,match", [
    ({"min_len": 1}, "domain: op ssm.selective_scan has no domain entry 'min_len'; it has min_length, "),
    ({"min_length": -1}, r"domain min_length: expected an integer >= 0, got -1"),
    ({"min_length": True}, r"domain min_length: expected an integer >= 0, got True"),
    ({"length_multiple": 0}, r"domain length_multiple: expected an integer >= 1, got 0"),
    ({"length_multiple": 2.0}, r"domain length_multiple: expected an integer >= 1, got 2.0"),
    ({"state_dim": "value_dim"}, r"domain state_dim: expected a size \(an integer >= 0\) or the name of another size"),
])
def test_bad_declarations_are_value_errors_naming_the_entry(domain, match):
    with pytest.raises(ValueError, match=match):
        verify("ssm.selective_scan", no_empty_scan, domain=domain, **FEW)


def test_an_op_without_a_sequence_axis_has_no_length_entries():
    with pytest.raises(ValueError, match="has no domain entry 'min_length'; it has none"):
        verify("ssm.discretize", lambda *a: None, domain={"min_length": 1})


# -- the CLI --------------------------------------------------------------------------------------------------

@pytest.fixture
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))


def test_cli_domain(capsys, _importable):
    rc = main(["verify", "test_verify_domain:no_empty_scan", "--op", "ssm.selective_scan", "--max-examples", "4"])
    out = capsys.readouterr().out
    assert rc == 1 and "declare --domain min_length=1 if L = 0 is unsupported" in out.splitlines()[0]
    rc = main(["verify", "test_verify_domain:no_empty_scan", "--op", "ssm.selective_scan", "--max-examples", "4",
               "--domain", "min_length=1"])
    out = capsys.readouterr().out
    assert rc == 0 and "outside the declared domain (min_length=1) not run" in out.splitlines()[0]
    rc = main(["verify", "test_verify_domain:chunk8_ssd", "--op", "ssm.ssd", "--max-examples", "4",
               "--domain", "length_multiple=8", "--domain", "min_length=8", "--report", "json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["domain"] == {"min_length": 8, "length_multiple": 8}
    rc = main(["verify", "test_verify_domain:no_empty_scan", "--op", "ssm.selective_scan", "--domain", "min_length"])
    assert rc == 2 and "--domain: expected NAME=VALUE" in capsys.readouterr().err
    rc = main(["verify", "test_verify_domain:no_empty_scan", "--op", "ssm.selective_scan", "--domain", "chunk=8"])
    assert rc == 2 and "has no domain entry 'chunk'" in capsys.readouterr().err


def test_cli_ops_lists_the_domain(capsys):
    assert main(["ops", "attention.softmax"]) == 0
    out = capsys.readouterr().out
    assert "domain min_length = 0 (axes lq, lk)" in out and "domain value_dim = None (axes e)" in out
    assert "--domain NAME=VALUE" in out
    assert main(["ops", "attention.softmax", "--json"]) == 0
    (d,) = json.loads(capsys.readouterr().out)
    names = {e["name"]: e for e in d["domain"]}
    assert names["min_length"]["default"] == 0 and names["length_multiple"]["default"] == 1
    assert names["value_dim"]["axes"] == ["e"] and names["value_dim"]["kind"] == "size"


def test_every_op_with_a_sequence_axis_declares_min_length_and_length_multiple():
    from oracles.verify import list_ops

    missing = []
    for spec in list_ops():
        axes = {ax for a in spec.inputs for alt in a.alternatives() for ax in alt}
        has_seq = bool(axes & {"l", "lq", "lk"}) or any(a.name == "L" for a in spec.inputs)
        names = {d.name for d in spec.domain}
        if has_seq and not {"min_length", "length_multiple"} <= names:
            missing.append(spec.name)
    assert not missing, f"ops with a sequence axis and no declarable length domain: {missing}"
