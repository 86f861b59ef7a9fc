r"""A pytest plugin: conformance checks of your own kernels inside your own test suite.

Installed with refimpl as the ``pytest11`` entry point ``refimpl`` (``pyproject.toml``:
``[project.entry-points.pytest11] refimpl = "oracles.verify.pytest_plugin"``); without the entry point, load
it with ``pytest -p oracles.verify.pytest_plugin`` or ``pytest_plugins = ["oracles.verify.pytest_plugin"]``
in a ``conftest.py``.  It gives two spellings of one check, :func:`oracles.verify.verify` run on a candidate
and turned into a test outcome.

The fixture
-----------
>>> def test_my_scan(refimpl_verify):
...     refimpl_verify("ssm.selective_scan", my_fn, adapter="mamba.selective_scan_fn", dtype=["float32"])

``refimpl_verify(op, candidate, **options)`` (any option of :func:`oracles.verify.verify`, ``grad=True`` and
``grad_fn=`` included: the backward pass is then judged beside the forward) runs the verification and returns the
:class:`~oracles.verify.report.Report` when the candidate conforms; otherwise the test fails with the
report's text (the verdict, each failing case with its error, bound, diagnosis and error map) and a
*rerun* block: the pytest node to rerun, the ``refimpl verify`` command line that draws the same cases,
and a Python snippet that reruns the first saved failing case (the harness's ``.npz`` reproductions, written
under ``--refimpl-failures DIR``, by default a folder of pytest's ``basetemp``).  ``candidate`` is a callable
or a ``"module:function"`` string.  ``options`` are :func:`~oracles.verify.verify`'s keywords
(``adapter``, ``conventions``, ``dtype``, ``framework``, ``domain``, ``kinds``, ``max_examples``, ``seed``,
``profile``, ``probes``, ``diagnose``, ``timeout``, ``cases``, ``candidate_name``), and ``check=False``
returns the report without failing.

The marker
----------
>>> @pytest.mark.refimpl_verify("attention.softmax", adapter="torch.sdpa", dtype=["float32"])
... def test_my_attention():
...     return my_attention          # the candidate: the test *returns* it

A test carrying ``@pytest.mark.refimpl_verify(op, **options)`` returns its candidate (a callable or a
``"module:function"`` string; parametrize the test to verify several); the plugin verifies it under each
such marker (stacked markers: several convention sets) and fails the test as the fixture does.  A marked
test may instead *receive* the fixture and call it with the candidate alone, ``refimpl_verify(my_fn)``:
the op and options come from the closest marker (keywords given in the call override the marker's).
A marked test that returns nothing and never calls the fixture is an error (nothing was verified).

How many cases (Hypothesis settings follow the user's profile)
-------------------------------------------------------------
The harness draws its random cases from each op's Hypothesis strategy, ``PROFILES["ci"]`` (10) of them
with ``@seed(seed)``.  Inside pytest the user's Hypothesis settings decide instead, when the user set any:
if a Hypothesis profile other than ``"default"`` is loaded (``settings.load_profile`` in a conftest, or
``--hypothesis-profile``), the number of random cases is that profile's ``max_examples``; the seed is
``--hypothesis-seed`` when given, else 0 under ``derandomize=True`` (the cases ``refimpl verify`` draws
by default), else a fresh random seed (printed in the report and in the rerun command, so a failure
reproduces).  ``max_examples=``, ``profile=`` or ``seed=`` given to the fixture or the marker win over the
profile.  Without Hypothesis, or with the default profile, the harness's own ``ci`` profile applies.
The report says which rule chose the count (a ``note:`` line).

Command-line options: ``--refimpl-failures DIR`` (where failing cases' ``.npz`` and rerun scripts go).
A short ``refimpl verify`` section at the end of the terminal report lists every verification the session
ran, and each test's verification summaries are attached to it as ``user_properties`` (JUnit XML).
"""
from __future__ import annotations

import inspect
import os
import random
import re
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

__all__ = ["Verifier", "sampling_from_hypothesis", "VERIFY_OPTIONS", "MARKER"]

MARKER = "refimpl_verify"
# the keywords of oracles.verify.verify a test may pass (everything but the op and the candidate)
VERIFY_OPTIONS = ("adapter", "conventions", "dtype", "framework", "profile", "max_examples", "seed", "kinds",
                  "cases", "save_failures", "probes", "diagnose", "candidate_name", "timeout", "domain")
_SUMMARIES = pytest.StashKey[List[Tuple[str, bool, str]]]()


# -- pytest hooks -----------------------------------------------------------------------------------------

def pytest_addoption(parser) -> None:
    group = parser.getgroup("refimpl", "refimpl conformance checks (the refimpl_verify fixture and marker)")
    group.addoption("--refimpl-failures", metavar="DIR", default=None,
                    help="write each failing case's .npz and rerun script into DIR (default: a refimpl-failures "
                         "folder in pytest's basetemp)")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(op, **options): verify the candidate the test returns (or passes to the refimpl_verify "
        "fixture) against the oracle of op; options are oracles.verify.verify's keywords (adapter=, "
        "conventions=, dtype=, domain=, max_examples=, ...)")
    config.stash[_SUMMARIES] = []


def pytest_collection_modifyitems(session, config, items) -> None:
    """A test marked ``refimpl_verify`` gets the fixture even when it does not ask for it (the marker form)."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and item.get_closest_marker(MARKER) is not None and "refimpl_verify" not in names:
            names.append("refimpl_verify")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem) -> Optional[bool]:
    """Run a test marked ``refimpl_verify`` and verify the candidate it returns (other tests: pytest's own call)."""
    markers = list(pyfuncitem.iter_markers(MARKER))
    if not markers:
        return None
    fn = pyfuncitem.obj
    if inspect.iscoroutinefunction(fn):
        return None  # pytest's own call reports async tests it cannot run
    params = inspect.signature(fn).parameters
    funcargs = pyfuncitem.funcargs
    result = fn(**{name: funcargs[name] for name in params if name in funcargs})
    verifier = funcargs["refimpl_verify"]
    if result is None:
        if not verifier.calls:
            pytest.fail(f"{pyfuncitem.nodeid}: a test marked @pytest.mark.{MARKER} must return the candidate (a "
                        "callable or 'module:function') or call the refimpl_verify fixture with it; it did neither",
                        pytrace=False)
        return True
    code = getattr(fn, "__code__", None)
    where = f"{code.co_filename}:{code.co_firstlineno} (the candidate {pyfuncitem.name} returned)" if code else "?"
    for mark in markers:
        op, options = _marker_arguments(mark, pyfuncitem.nodeid)
        verifier(op, result, _where=where, **options)
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    done = config.stash.get(_SUMMARIES, [])
    if not done:
        return
    terminalreporter.section("refimpl verify")
    for nodeid, ok, summary in done:
        terminalreporter.write_line(f"{'PASS' if ok else 'FAIL'} {nodeid}: {summary}")


@pytest.fixture
def refimpl_verify(request, tmp_path_factory) -> "Verifier":
    """``refimpl_verify(op, candidate, **options) -> Report``: fail the test unless ``candidate`` conforms to ``op``.

    Under ``@pytest.mark.refimpl_verify(op, **options)`` call it with the candidate alone.  See
    :mod:`oracles.verify.pytest_plugin`.
    """
    return Verifier(request.node, str(tmp_path_factory.getbasetemp()))


# -- the verifier -----------------------------------------------------------------------------------------

def _marker_arguments(mark, nodeid: str) -> Tuple[str, Dict[str, Any]]:
    if len(mark.args) != 1 or not isinstance(mark.args[0], str):
        raise TypeError(f"{nodeid}: @pytest.mark.{MARKER}: expected one positional argument, the op name "
                        f"(e.g. 'attention.softmax'), got {mark.args!r}")
    return mark.args[0], dict(mark.kwargs)


def sampling_from_hypothesis(config=None) -> Optional[Dict[str, Any]]:
    """``{"max_examples", "seed", "why"}`` from the user's Hypothesis settings, or ``None`` when the user set none.

    Set means: a loaded profile other than ``"default"``.  ``seed``: ``--hypothesis-seed`` when given, else 0
    under ``derandomize=True``, else a fresh random seed.
    """
    try:
        from hypothesis import settings
    except ImportError:
        return None
    name = settings.get_current_profile_name() if hasattr(settings, "get_current_profile_name") \
        else getattr(settings, "_current_profile", "default")
    if name == "default":
        return None
    current = settings()
    given = config.getoption("hypothesis_seed", None) if config is not None else None
    if given is not None:
        seed, how = _int_seed(given), f"--hypothesis-seed={given}"
    elif current.derandomize:
        seed, how = 0, "derandomize=True: seed 0"
    else:
        seed, how = random.SystemRandom().randrange(2 ** 32), "derandomize=False: a fresh random seed"
    why = (f"random cases from the Hypothesis profile {name!r} (max_examples={current.max_examples}; {how}), "
           "not the harness's own profile")
    return {"max_examples": int(current.max_examples), "seed": seed, "why": why}


def _int_seed(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        import zlib

        return zlib.crc32(str(value).encode())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "test"


class Verifier:
    """The ``refimpl_verify`` fixture's value: call it to verify a candidate inside the test of ``node``."""

    def __init__(self, node, basetemp: Optional[str] = None):
        self.node = node
        self.config = node.config
        self.basetemp = basetemp
        self.calls = 0
        self.reports: List[Any] = []
        self._candidate: Optional[Callable] = None

    def __call__(self, op: Any = None, candidate: Any = None, *, check: bool = True, _where: Optional[str] = None,
                 **options: Any):
        from oracles.verify import resolve_candidate, verify

        self.calls += 1
        where = _where or self._caller()
        op, candidate, options = self._arguments(op, candidate, options)
        unknown = sorted(set(options) - set(VERIFY_OPTIONS))
        if unknown:
            raise TypeError(f"refimpl_verify: unknown option(s) {unknown}; expected keywords of "
                            f"oracles.verify.verify: {', '.join(VERIFY_OPTIONS)} (and check=)")
        if isinstance(candidate, str):
            options.setdefault("candidate_name", candidate)
            candidate = resolve_candidate(candidate)
        if not callable(candidate):
            raise TypeError(f"refimpl_verify: candidate: expected a callable or 'module:function', "
                            f"got {type(candidate).__name__}")
        note = None
        if not any(k in options for k in ("max_examples", "profile", "cases")):
            chosen = sampling_from_hypothesis(self.config)
            if chosen is not None:
                options["max_examples"] = chosen["max_examples"]
                options.setdefault("seed", chosen["seed"])
                note = chosen["why"]
        options.setdefault("save_failures", self._failure_dir())
        report = verify(op, candidate, **options)
        if note:
            report.add_notes([note])
        self.reports.append(report)
        self.node.user_properties.append((MARKER, report.summary()))
        self.config.stash.setdefault(_SUMMARIES, []).append((self.node.nodeid, report.passed, report.summary()))
        if check and not report.passed:
            pytest.fail(self.failure_text(report, candidate, op, options, where), pytrace=False)
        return report

    # -- arguments ---------------------------------------------------------------------------------------
    def _arguments(self, op, candidate, options) -> Tuple[str, Any, Dict[str, Any]]:
        """``(op, candidate)`` given, or ``(candidate,)`` under the closest ``refimpl_verify`` marker."""
        if candidate is None and not (isinstance(op, str) and ":" not in op and op):
            mark = self.node.get_closest_marker(MARKER)
            if mark is None:
                raise TypeError("refimpl_verify: expected (op, candidate, **options); a candidate alone needs "
                                f"@pytest.mark.{MARKER}(op, ...) on the test, got {op!r} only")
            mop, moptions = _marker_arguments(mark, self.node.nodeid)
            return mop, op, {**moptions, **options}
        if candidate is None:
            raise TypeError(f"refimpl_verify: expected (op, candidate, **options), got the op {op!r} and no candidate")
        if not isinstance(op, str):
            raise TypeError(f"refimpl_verify: op: expected an op name (`refimpl ops` lists them), "
                            f"got {type(op).__name__}")
        return op, candidate, dict(options)

    def _failure_dir(self) -> str:
        base = self.config.getoption("refimpl_failures", None)
        if not base:
            base = os.path.join(self.basetemp or os.path.join(os.getcwd(), ".refimpl"), "refimpl-failures")
        return os.path.join(os.path.abspath(base), _safe(self.node.nodeid))

    @staticmethod
    def _caller() -> str:
        """``file:line`` of the test's call (the plugin's own frames skipped)."""
        here = os.path.abspath(__file__)
        for fr in inspect.stack(0)[1:]:
            if os.path.abspath(fr.filename) != here:
                return f"{fr.filename}:{fr.lineno}"
        return "?"

    # -- the failure message -----------------------------------------------------------------------------
    def failure_text(self, report, candidate: Callable, op: str, options: Dict[str, Any], where: str) -> str:
        self._candidate = candidate
        lines = [f"refimpl_verify: {report.summary()}", f"  (called at {where})", "", report.to_text(), "",
                 "rerun:", f"  pytest {shlex.quote(self.node.nodeid)}"]
        cli = self._cli_command(report, op, options)
        if cli:
            lines.append(f"  {cli}")
        saved = [c.repro for c in report.cases if c.repro]
        if saved:
            lines.append(f"  the first failing case alone ({len(saved)} saved in {os.path.dirname(saved[0])}):")
            lines.extend("    " + ln for ln in self._python_snippet(candidate, saved[0]))
        return "\n".join(lines)

    @staticmethod
    def _importable(candidate: Callable) -> Optional[Tuple[str, str]]:
        mod = getattr(candidate, "__module__", None)
        qn = getattr(candidate, "__qualname__", None)
        if not mod or not qn or "<" in qn or mod == "__main__":
            return None
        return mod, qn

    @staticmethod
    def _module_root(candidate: Callable) -> Optional[str]:
        """The folder a fresh interpreter needs on ``sys.path`` (or as its working directory) to import the
        candidate's module -- a test module pytest imported from the test's folder -- or ``None`` for a module
        of an installed package (site-packages) or one without a file."""
        name = getattr(candidate, "__module__", None) or ""
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path:
            return None
        root = os.path.dirname(os.path.abspath(path))
        for _ in range(name.count(".") + (os.path.basename(path) == "__init__.py")):
            root = os.path.dirname(root)
        import sysconfig

        installed = {os.path.abspath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
        return None if root in installed else root

    def _cli_command(self, report, op: str, options: Dict[str, Any]) -> Optional[str]:
        """The ``refimpl verify`` line that draws the same cases (when the candidate has an importable name)."""
        name = report.candidate
        if ":" not in name or "<" in name or options.get("cases") is not None:
            return None
        parts = ["refimpl", "verify", name, "--op", op]
        if options.get("adapter"):
            parts += ["--adapter", str(options["adapter"])]
        for k, v in (options.get("conventions") or {}).items():
            parts += ["--conv", f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"]
        for k, v in (options.get("domain") or {}).items():
            parts += ["--domain", f"{k}={v}"]
        parts += ["--dtype", ",".join(report.dtypes)]
        if options.get("framework"):
            parts += ["--framework", str(options["framework"])]
        if options.get("profile"):
            parts += ["--profile", str(options["profile"])]
        if options.get("max_examples") is not None:
            parts += ["--max-examples", str(options["max_examples"])]
        parts += ["--seed", str(report.seed)]
        if options.get("kinds"):
            parts += ["--cases", ",".join(options["kinds"])]
        if options.get("grad") or options.get("grad_fn") is not None:
            parts += ["--grad"]
            gfn = self._importable(options["grad_fn"]) if options.get("grad_fn") is not None else None
            if options.get("grad_fn") is not None:
                if gfn is None:
                    return None  # an explicit backward without an importable name: no command line reruns it
                parts += ["--grad-fn", f"{gfn[0]}:{gfn[1]}"]
        cmd = " ".join(shlex.quote(p) for p in parts)
        root = self._module_root(self._candidate) if self._candidate is not None else None
        return f"cd {shlex.quote(root)} && {cmd}" if root else cmd

    def _python_snippet(self, candidate: Callable, npz: str) -> List[str]:
        found = self._importable(candidate)
        head = ["from oracles.verify import load_case, rerun_case"]
        if found is None:
            return head + [f"case = load_case({npz!r})",
                           "report = rerun_case(case, my_candidate)   # the candidate is local to the test: pass it",
                           "print(report.to_text(verbose=True))"]
        mod, qn = found
        top = qn.split(".")[0]
        root = self._module_root(candidate)
        imp = [f"import sys; sys.path.insert(0, {root!r})"] if root else []
        attr = qn if "." in qn else top
        return imp + head + [f"from {mod} import {top}",
                             f"report = rerun_case(load_case({npz!r}), {attr})",
                             "print(report.to_text(verbose=True))"]
