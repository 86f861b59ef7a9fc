"""The pytest plugin (oracles.verify.pytest_plugin) in users' test files, run with pytester.

Each test writes a user's test file into a fresh folder and runs pytest on it in-process with the plugin
loaded by ``-p`` (and the ``refimpl`` entry point blocked, so the same module is never registered twice
whether or not the entry point is installed).  The candidates are refimpl's own softmax attention (it
conforms) and a copy off by a relative 1e-3 (it does not: far above the float64/float32 bounds).
"""
import importlib.metadata
import re
import sys

import pytest

pytest_plugins = ["pytester"]

PLUGIN = ["-p", "no:refimpl", "-p", "oracles.verify.pytest_plugin", "-p", "no:cacheprovider"]

CANDIDATES = '''
import numpy as np
import pytest
from refimpl.attention import scaled_dot_product_attention


def good(q, k, v, **kw):
    return scaled_dot_product_attention(q, k, v, **kw)


def sloppy(q, k, v, **kw):
    return scaled_dot_product_attention(q, k, v, **kw) * (1 + 1e-3)
'''

# a user's conftest: a small derandomized profile (what the plugin must follow instead of the harness's ci)
PROFILE = '''
from hypothesis import settings
settings.register_profile("user_small", max_examples=2, derandomize=True, deadline=None)
settings.register_profile("user_random", max_examples=2, derandomize=False, deadline=None)
settings.load_profile("{name}")
'''


@pytest.fixture(autouse=True)
def _keep_hypothesis_profile():
    """The user's conftest loads a Hypothesis profile in this process: put the suite's own back afterwards."""
    from hypothesis import settings

    before = settings.get_current_profile_name()
    yield
    settings.load_profile(before)


def _random_cases(rep):
    return sum(c.kind in ("random", "hypothesis") for c in rep.cases) // len(rep.dtypes)


def test_passing_user_test_file_follows_the_users_hypothesis_profile(pytester):
    pytester.makeconftest(PROFILE.format(name="user_small"))
    pytester.makepyfile(test_user=CANDIDATES + '''

def test_my_attention(refimpl_verify):
    rep = refimpl_verify("attention.softmax", good, adapter="refimpl", dtype=["float32"])
    assert rep.passed and rep.dtypes == ["float32"]
    # the profile's max_examples=2 random cases (not the harness's 10), seed 0 under derandomize=True
    assert sum(c.kind in ("random", "hypothesis") for c in rep.cases) == 2
    assert rep.seed == 0
    assert any("user_small" in n for n in rep.notes)


def test_explicit_max_examples_wins(refimpl_verify):
    rep = refimpl_verify("attention.softmax", "test_user:good", adapter="refimpl", max_examples=1, probes=False)
    assert sum(c.kind in ("random", "hypothesis") for c in rep.cases) == 1
    assert rep.candidate == "test_user:good"
''')
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*refimpl verify*", "PASS test_user.py::test_my_attention: attention.softmax <- *CONFORMS*"])


def test_failing_user_test_prints_the_failing_cases_and_the_rerun_snippet(pytester, capsys):
    pytester.makeconftest(PROFILE.format(name="user_small"))
    pytester.makepyfile(test_bad=CANDIDATES + '''

def test_sloppy_attention(refimpl_verify):
    refimpl_verify("attention.softmax", sloppy, adapter="refimpl", kinds=["golden", "random"], probes=False)
''')
    result = pytester.runpytest(*PLUGIN, f"--refimpl-failures={pytester.path / 'failures'}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # the report's verdict and its failing cases, with error and bound
    assert "refimpl_verify: attention.softmax <- test_bad:sloppy (adapter refimpl, numpy): DOES NOT CONFORM" in out
    assert "[FAIL] golden-square[float64]" in out and "err/bound" in out and "bound from:" in out
    assert "test_bad.py:" in out  # where the test called the fixture
    # the rerun block: the node, the CLI line drawing the same cases, the saved case in Python
    assert "pytest test_bad.py::test_sloppy_attention" in out
    assert re.search(r"refimpl verify test_bad:sloppy --op attention\.softmax --adapter refimpl --dtype float64 "
                     r"--max-examples 2 --seed 0 --cases golden,random", out), out
    assert "reproduce: python " in out  # the harness's own script per saved case
    snippet = out[out.index("the first failing case alone"):].splitlines()[1:6]
    snippet = [ln.strip() for ln in snippet if ln.startswith("    ")]
    assert snippet[-2].startswith("report = rerun_case(load_case(") and snippet[-2].endswith(", sloppy)")
    npz = re.search(r"load_case\('([^']+\.npz)'\)", snippet[-2]).group(1)
    assert npz.startswith(str(pytester.path / "failures" / "test_bad.py_test_sloppy_attention"))
    # the snippet reruns the saved case against the same function, and it still fails
    saved_path = list(sys.path)
    try:
        exec("\n".join(snippet), {})
    finally:
        sys.path[:] = saved_path
    rerun = capsys.readouterr().out
    assert "DOES NOT CONFORM" in rerun and "[FAIL] golden-square[float64] (saved" in rerun
    result.stdout.fnmatch_lines(["FAIL test_bad.py::test_sloppy_attention: *DOES NOT CONFORM*"])


def test_marker_form_returns_or_receives_the_candidate(pytester):
    pytester.makeconftest(PROFILE.format(name="user_small"))
    pytester.makepyfile(test_marked=CANDIDATES + '''

@pytest.mark.refimpl_verify("attention.softmax", adapter="refimpl", dtype=["float64", "float32"], probes=False)
@pytest.mark.parametrize("fn", [good, sloppy], ids=["good", "sloppy"])
def test_returned(fn):
    return fn


@pytest.mark.refimpl_verify("attention.softmax", adapter="refimpl", probes=False)
@pytest.mark.refimpl_verify("attention.softmax", adapter="refimpl", conventions={"causal": "top_left"}, probes=False)
def test_stacked():
    return "test_marked:good"


@pytest.mark.refimpl_verify("attention.softmax", adapter="refimpl", probes=False)
def test_received(refimpl_verify):
    rep = refimpl_verify(good, dtype="float32")
    assert rep.passed and rep.dtypes == ["float32"]


@pytest.mark.refimpl_verify("attention.softmax")
def test_nothing():
    pass
''')
    result = pytester.runpytest(*PLUGIN, "-W", "error::pytest.PytestReturnNotNoneWarning")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert "attention.softmax <- test_marked:sloppy (adapter refimpl, numpy): DOES NOT CONFORM" in out
    assert "the candidate test_returned[sloppy] returned" in out
    assert "must return the candidate" in out and "test_nothing" in out
    # both stacked markers ran: the summary lists two verifications of test_stacked, one causal
    assert out.count("PASS test_marked.py::test_stacked:") == 2


def test_random_profile_draws_a_fresh_seed_and_hypothesis_seed_fixes_it(pytester):
    pytester.makeconftest(PROFILE.format(name="user_random"))
    pytester.makepyfile(test_seed='''
from refimpl.attention import scaled_dot_product_attention as good

SEEDS = []


def test_a(refimpl_verify):
    rep = refimpl_verify("attention.softmax", good, adapter="refimpl", kinds=["random"], probes=False)
    SEEDS.append(rep.seed)
    assert any("user_random" in n for n in rep.notes)


def test_b(refimpl_verify):
    rep = refimpl_verify("attention.softmax", good, adapter="refimpl", kinds=["random"], probes=False)
    SEEDS.append(rep.seed)
    print("SEEDS", SEEDS)
''')
    result = pytester.runpytest(*PLUGIN, "-s")
    result.assert_outcomes(passed=2)
    a, b = map(int, re.search(r"SEEDS \[(\d+), (\d+)\]", result.stdout.str()).groups())
    assert a != b  # two fresh draws (a 2^-32 chance of a false alarm)
    result = pytester.runpytest(*PLUGIN, "-s", "--hypothesis-seed=1234")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*SEEDS [[]1234, 1234[]]*"])


def test_bad_usage_is_a_clear_error(pytester):
    pytester.makepyfile(test_usage='''
import pytest
from refimpl.attention import scaled_dot_product_attention as good


def test_unknown_option(refimpl_verify):
    with pytest.raises(TypeError, match=r"unknown option\\(s\\) \\['dtypes'\\]"):
        refimpl_verify("attention.softmax", good, dtypes=["float32"])


def test_candidate_alone_needs_the_marker(refimpl_verify):
    with pytest.raises(TypeError, match="a candidate alone needs @pytest.mark.refimpl_verify"):
        refimpl_verify(good)


def test_not_callable(refimpl_verify):
    with pytest.raises(TypeError, match="candidate: expected a callable"):
        refimpl_verify("attention.softmax", 3)


def test_unknown_op(refimpl_verify):
    with pytest.raises(ValueError, match="attention.nope"):
        refimpl_verify("attention.nope", good)
''')
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=4)


def test_the_pytest11_entry_point_loads_the_plugin_in_a_plain_pytest_run(pytester, monkeypatch, tmp_path):
    """What ``pip install refimpl`` does with ``[project.entry-points.pytest11] refimpl =
    "oracles.verify.pytest_plugin"``: a distribution on the path declaring that entry point.  A plain
    ``pytest`` (a fresh process, no ``-p``) then finds the fixture and the marker."""
    site = tmp_path / "site"
    dist = site / "refimpl_entry_point_probe-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: refimpl-entry-point-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nrefimpl = oracles.verify.pytest_plugin\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    pytester.makepyfile(test_plain='''
import pytest
from refimpl.attention import scaled_dot_product_attention as good


def test_fixture(refimpl_verify):
    assert refimpl_verify("attention.softmax", good, adapter="refimpl", kinds=["golden"], probes=False).passed


@pytest.mark.refimpl_verify("attention.softmax", adapter="refimpl", kinds=["golden"], probes=False)
def test_marker():
    return good
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*refimpl verify*", "PASS test_plain.py::test_marker: *CONFORMS*"])


def test_the_entry_point_names_this_module_when_installed():
    """Once pyproject.toml declares it and the package is reinstalled, the installed entry point is this module."""
    eps = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "refimpl"]
    if not eps:
        pytest.skip("the pytest11 entry point is not installed in this environment (pip install -e .)")
    assert eps[0].value == "oracles.verify.pytest_plugin"
