"""The verify harness never rejects its own samples (issue 10, point 6).

For every registered op, the cases the harness draws -- ``generate_cases``, exactly what ``refimpl verify
--cases random --max-examples 200`` runs -- must fit the op's own signature (``infer_dims``), be callable through
its canonical adapter, lie inside the op's whole domain, repeat no case, have at most one in ten empty
sequences, and our own reference (the op's ``reference``) must conform on them: a harness whose own sample trips
its shape check, or on which our reference "does not conform", reports a false alarm against every candidate.

The same holds for the golden and edge cases, for the raw strategy users get from ``strategy_for(op)`` (a
Hypothesis test under the active profile: derandomized in ``ci``), and for every other value of each convention
(fewer cases each).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracles.verify import generate_cases, get_op, list_ops, strategy_for, verify
from oracles.verify.adapters import get_adapter
from oracles.verify.registry import case_key, case_sizes, infer_dims

OPS = [s.name for s in list_ops()]
N = 200  # cases per op at its default conventions
N_CONVENTION = 20  # cases per other convention value
# ops whose float64 bound is slow to evaluate: our reference is checked on the first cases only (every case is
# still checked against the signature).  ssm.discretize's bound evaluates an mpmath Van Loan exponential and
# scipy's expm_cond per channel, about 0.4 s a case.
REFERENCE_CASES = {"ssm.discretize": 12}


def _reference_candidate(spec, conv):
    """The op's ``reference`` as a candidate in the canonical signature (inputs positionally, outputs by name)."""
    if spec.reference is None:
        if spec.name == "features.orthogonal_projection":
            from refimpl.attention.features import random_projection

            norms = "chi" if conv["norms"] == "any" else conv["norms"]  # "any": only the directions are checked
            return lambda m, d, seed: random_projection(int(m), int(d), int(seed), norms=norms)
        pytest.fail(f"op {spec.name} has no reference: add one (the low-precision baseline needs it too)")
    names = [a.name for a in spec.inputs]

    def candidate(*args):
        inputs = {n: (args[i] if i < len(args) else None) for i, n in enumerate(names)}
        return spec.reference(inputs, conv)

    return candidate


def _check_signature(spec, conv, cases):
    """Each case fits the op's signature and the canonical adapter can build its call."""
    ad = get_adapter(spec.name, None)
    for c in cases:
        try:
            dims = infer_dims(spec.inputs, c.inputs)
            ad.build_call(spec, c.inputs, conv, dims)
        except ValueError as exc:  # the harness's own shape check refuses the harness's own case
            pytest.fail(f"{spec.name} {c.case_id} ({c.note}): {exc}; shapes {c.shapes()}")


def _check_reference(spec, conv, cases):
    rep = verify(spec, _reference_candidate(spec, conv), conventions=conv, cases=cases, probes=False,
                 diagnose=False, timeout=None)
    bad = [c for c in rep.cases if not c.passed]
    declined = [c for c in bad if c.raised and " (at ops_" in c.raised]
    if bad and len(declined) == len(rep.cases):
        # the op spec's reference wrapper itself declines these conventions (refimpl does not implement them):
        # no sample was rejected, there is no reference to check
        pytest.skip(f"our reference does not implement {conv}: {declined[0].error}")
    assert not bad, f"our reference does not conform on the harness's own cases:\n{rep.to_text()}"
    return rep


@pytest.mark.parametrize("op", OPS)
def test_harness_cases_fit_the_signature_and_our_reference_conforms(op):
    spec = get_op(op)
    conv = spec.resolve_conventions({})
    cases = generate_cases(spec, conv, max_examples=N, kinds=("random",))
    assert len(cases) == N, f"{op}: {len(cases)} random cases of {N} asked for"
    _check_signature(spec, conv, cases)
    dom = spec.resolve_domain({})
    assert all(dom.violation(c.inputs) is None for c in cases)
    keys = [case_key(c.inputs) for c in cases]
    assert len(set(keys)) == len(keys), f"{op}: {len(keys) - len(set(keys))} duplicate random cases"
    empty = [c.case_id for c in cases if dom.length(case_sizes(spec, c.inputs)) == 0]
    assert len(empty) <= N // 10, f"{op}: {len(empty)} of {N} random cases have an empty sequence"
    rep = _check_reference(spec, conv, cases[:REFERENCE_CASES.get(op, N)])
    assert rep.passed, rep.to_text()


@pytest.mark.parametrize("op", OPS)
def test_golden_and_edge_cases_fit_the_signature(op):
    spec = get_op(op)
    conv = spec.resolve_conventions({})
    cases = generate_cases(spec, conv, max_examples=0)
    _check_signature(spec, conv, cases)
    _check_reference(spec, conv, cases)


def _other_convention_values():
    out = []
    for spec in list_ops():
        for c in spec.conventions:
            for alt in (c.choices or ()):
                if alt != c.default:
                    out.append(pytest.param(spec.name, c.name, alt, id=f"{spec.name}-{c.name}={alt!r}"))
    return out


@pytest.mark.parametrize("op,name,value", _other_convention_values())
def test_every_convention_value_draws_cases_our_reference_conforms_on(op, name, value):
    spec = get_op(op)
    conv = spec.resolve_conventions({name: value})
    cases = generate_cases(spec, conv, max_examples=N_CONVENTION, kinds=("random",))
    _check_signature(spec, conv, cases)
    if spec.convention(name).layout:  # only how the candidate's arrays are laid out: our reference takes the op's
        conv = dict(conv, **{name: spec.convention(name).default})
    _check_reference(spec, conv, cases[:REFERENCE_CASES[op] // 4] if op in REFERENCE_CASES else cases)


@pytest.mark.parametrize("op", OPS)
@settings(suppress_health_check=list(HealthCheck))  # the active profile's example count (ci: derandomized)
@given(data=st.data())
def test_strategy_for_draws_fit_the_signature(op, data):
    spec = get_op(op)
    conv = spec.resolve_conventions({})
    inputs = data.draw(strategy_for(spec, conv), label="inputs")
    dims = infer_dims(spec.inputs, inputs)
    get_adapter(spec.name, None).build_call(spec, inputs, conv, dims)
    assert spec.resolve_domain({}).violation(inputs) is None


def _declarations(spec):
    """Domains a candidate may declare for ``spec``: lengths, each size fixed, neighbouring sizes tied."""
    sizes = [d.name for d in spec.domain if d.kind == "size"]
    out = []
    if any(d.name == "min_length" for d in spec.domain):
        out += [{"min_length": 1}, {"length_multiple": 4}, {"min_length": 3, "length_multiple": 2}]
    out += [{s: 2} for s in sizes] + [{b: a} for a, b in zip(sizes, sizes[1:])]
    return out


@pytest.mark.parametrize("op", [s.name for s in list_ops() if s.domain])
def test_random_cases_are_drawn_inside_every_declarable_domain(op):
    """Each op's sampler honours the size keywords its domain names: the random cases of a declared domain are
    all drawn inside it (none filtered away), and they still fit the signature."""
    spec = get_op(op)
    conv = spec.resolve_conventions({})
    for decl in _declarations(spec):
        dom = spec.resolve_domain(decl)
        cases = generate_cases(spec, conv, max_examples=N_CONVENTION, seed=1, domain=decl, kinds=("random",))
        assert len(cases) == N_CONVENTION, (decl, len(cases))
        outside = [(c.case_id, dom.violation(c.inputs)) for c in cases if dom.violation(c.inputs)]
        assert not outside, (decl, outside)
        _check_signature(spec, conv, cases)
