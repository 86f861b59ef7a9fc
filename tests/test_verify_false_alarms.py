"""The verify harness's false alarms (issue 10), one test per class, each built from a candidate with that
behaviour written here.

Most tests use a small op defined in this file, ``test.prefix_sum`` (``y_t = sum_{s <= t} x_s`` with an
optional ``total``), so that they depend only on the harness, never on a family's op specs; the float32-only
probe test also runs on the real ``ssm.lti`` op through its canonical signature.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from oracles.tolerance import componentwise_bound
from oracles.verify import Arg, Case, Convention, OpSpec, verify
from oracles.verify import registry
from oracles.verify.probes import causality_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OP = "test.prefix_sum"


# -- the test op ----------------------------------------------------------------------------------------------

def _oracle(inp, conv):
    """Correctly rounded prefix sums (math.fsum), float64."""
    x = np.asarray(inp["x"], dtype=np.float64)
    y = np.zeros_like(x)
    for b in range(x.shape[0]):
        for d in range(x.shape[2]):
            for t in range(x.shape[1]):
                y[b, t, d] = math.fsum(x[b, : t + 1, d])
    total = y[:, -1, :] if x.shape[1] else np.zeros((x.shape[0], x.shape[2]))
    return {"y": y, "total": total}


def _bounds(inp, out, conv, dtype):
    # Any evaluation that forms y_t from partial sums of the sequence with at most 2l roundings in a chain --
    # the running sum, or the total minus the suffix sum (|T^ - T| + |R^ - R| + u |T^ - R^| <= gamma_{2l} S) --
    # is within gamma_{2l} S of the exact value, S = sum over the whole sequence of |x| (per batch, channel).
    # The oracle is correctly rounded: one float64 rounding (depth 1).
    x = np.abs(np.asarray(inp["x"], dtype=np.float64))
    L = x.shape[1]
    S = x.sum(axis=1, keepdims=True)
    by = componentwise_bound(np.broadcast_to(S, x.shape), 2 * max(L, 1), dtype, oracle_depth=1,
                             what="any order of partial sums")
    bt = componentwise_bound(S[:, 0, :], 2 * max(L, 1), dtype, oracle_depth=1, what="the total")
    return {"y": by, "total": bt}


def _sample(rng, conv, L=None):
    L = int(rng.choice([0, 1, 5, 8, 16])) if L is None else L
    return {"x": rng.standard_normal((int(rng.integers(1, 3)), L, int(rng.integers(1, 4))))}


def _cases(conv):
    out = []
    for cid, kind, L in (("edge-L0", "edge", 0), ("edge-L1", "edge", 1), ("golden-L12", "golden", 12)):
        out.append(Case(OP, cid, kind, _sample(np.random.default_rng([7, L]), conv, L=L), dict(conv), seed=7))
    return out


def _reference(inp, conv):
    """The low-precision baseline: a running sum in the inputs' (float32) arithmetic."""
    y = np.cumsum(np.asarray(inp["x"]), axis=1)
    return {"y": y, "total": y[:, -1, :] if y.shape[1] else np.zeros((y.shape[0], y.shape[2]), y.dtype)}


def _strategy(conv):
    from hypothesis import strategies as st

    def record(seed):
        import hypothesis.configuration as hconf

        STORAGE_SEEN.append(str(hconf.storage_directory("probe", intent_to_write=False).path))
        return _sample(np.random.default_rng(seed), conv)

    return st.integers(0, 2**32 - 1).map(record)


STORAGE_SEEN: list = []

SPEC = OpSpec(
    name=OP, summary="prefix sums y_t = sum_{s<=t} x_s (a test op)",
    inputs=(Arg("x", "b l d"),), outputs=(Arg("y", "b l d"), Arg("total", "b d", optional=True)),
    conventions=(Convention("flag", False, "a bool convention (test)", (False, True)),
                 Convention("mode", "none", "a string choice spelled like a word (test)", ("none", "sum"))),
    oracle=_oracle, bounds=_bounds, cases=_cases, sample=_sample, reference=_reference, strategy=_strategy,
    probes=(causality_probe({"x": "l"}, {"y": "l"}),), module=__name__)

FEW = dict(max_examples=3, seed=3)


@pytest.fixture
def test_op(monkeypatch):
    registry._load_all()
    monkeypatch.setitem(registry._OPS, OP, SPEC)
    return SPEC


# -- candidates -----------------------------------------------------------------------------------------------

def running_sum(x):
    return np.cumsum(x, axis=1)


def total_minus_suffix_f32(x):
    """A float32 kernel: y_t = (sum of all x) - (sum of x after t).  Causal in exact arithmetic; its rounding
    depends on later inputs (at float32's level, within float32's bound)."""
    x = np.asarray(x, dtype=np.float32)
    total = x.sum(axis=1, keepdims=True, dtype=np.float32)
    suffix = np.flip(np.cumsum(np.flip(x, axis=1), axis=1, dtype=np.float32), axis=1) - x
    return (total - suffix).astype(np.float32)


def float32_only(x):
    """A kernel that accepts float32 only (as many GPU kernels do)."""
    if np.asarray(x).dtype != np.float32:
        raise TypeError(f"x: this kernel takes float32, got {np.asarray(x).dtype}")
    return np.cumsum(x, axis=1, dtype=np.float32)


def peeking_f32(x):
    """Not causal: y_t sees x_{t+1} (by 1e-2)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.cumsum(x, axis=1, dtype=np.float32)
    y[:, :-1] += np.float32(1e-2) * x[:, 1:]
    return y


def returns_float32(x):
    """Asked for float64, answers in float32 (what JAX does without x64)."""
    return np.cumsum(np.asarray(x, dtype=np.float32), axis=1)


def total_none(x):
    """Returns the optional output's place with None (asked for, not computed)."""
    return np.cumsum(x, axis=1), None


def with_total(x):
    y = np.cumsum(x, axis=1)
    return y, (y[:, -1, :] if y.shape[1] else np.zeros((x.shape[0], x.shape[2]), x.dtype))


def warns(x):
    warnings.warn("prefix sum kernel: this is a candidate's warning", UserWarning)
    with np.errstate(over="warn"):
        np.float32(3e38) * np.float32(10)  # a RuntimeWarning: overflow
    return np.cumsum(x, axis=1)


RELEASE = threading.Event()


def hangs_on_long(x):
    """Never returns on the 12-step golden case (until the test releases it)."""
    if x.shape[1] == 12:
        RELEASE.wait(60)
    return np.cumsum(x, axis=1)


# -- 1. probes run in each requested dtype ---------------------------------------------------------------------

def test_probe_runs_in_the_requested_dtype_a_float32_kernel_is_not_a_false_alarm(test_op):
    for cand in (total_minus_suffix_f32, float32_only):
        rep = verify(SPEC, cand, dtype="float32", **FEW)
        assert rep.passed, rep.to_text()
        assert [(p.name, p.dtype) for p in rep.probes] == [("causality", "float32")]
        assert "within float32 bounds" in rep.probes[0].message
    # the false alarm the old probe raised: float64 inputs judged by float64's bound
    rng = np.random.default_rng([3, 7919])
    from oracles.verify.harness import CandidateCall
    from oracles.verify.adapters import get_adapter

    conv = SPEC.resolve_conventions({})
    ok, msg = SPEC.probes[0].run(CandidateCall(SPEC, total_minus_suffix_f32, get_adapter(OP, None), conv), SPEC,
                                 conv, rng)
    assert not ok and "float64 rounding bound" in msg
    # and a kernel that really peeks at later inputs still fails the probe in float32
    rep = verify(SPEC, peeking_f32, dtype="float32", **FEW)
    assert not rep.probes[0].passed and "depends on future inputs" in rep.probes[0].message


def test_probe_runs_once_per_dtype_including_low_precision(test_op):
    rep = verify(SPEC, running_sum, dtype=["float64", "float32", "float16"], **FEW)
    assert rep.passed, rep.to_text()
    assert [p.dtype for p in rep.probes] == ["float64", "float32", "float16"]
    assert "[pass] probe causality[float16]" in rep.to_text()


def lti_float32_only(A_bar, B_bar, C, D, x, h0=None):
    """ssm.lti (canonical signature, dense A_bar): a recurrence that refuses anything but float32."""
    for name, a in (("A_bar", A_bar), ("B_bar", B_bar), ("C", C), ("x", x)):
        if a.dtype != np.float32:
            raise TypeError(f"{name}: float32 only, got {a.dtype}")
    b, L, h, m = x.shape
    n = A_bar.shape[-1]
    s = np.zeros((b, h, n), np.float32) if h0 is None else h0.astype(np.float32)
    y = np.zeros((b, L, h, C.shape[1]), np.float32)
    for t in range(L):
        s = np.einsum("hij,bhj->bhi", A_bar, s) + np.einsum("hnm,bhm->bhn", B_bar, x[:, t])
        y[:, t] = np.einsum("hpn,bhn->bhp", C, s) + (0 if D is None else np.einsum("hpm,bhm->bhp", D, x[:, t]))
    return y, s


def test_a_float32_only_lti_kernel_passes_the_causality_probe_in_float32():
    rep = verify("ssm.lti", lti_float32_only, dtype="float32", kinds=("golden", "edge"), max_examples=0,
                 conventions={"complex_A": False})  # a real-only kernel declares it
    assert rep.passed, rep.to_text()
    assert rep.probes and all(p.passed and p.dtype == "float32" for p in rep.probes)


# -- 2. precision: the dtype each output came back in; JAX runs float64 with x64 -------------------------------

def test_an_output_in_lower_precision_than_asked_is_named(test_op):
    rep = verify(SPEC, returns_float32, dtype=["float64", "float32"], **FEW)
    text = rep.to_text()
    o64 = [o for c in rep.cases if c.dtype == "float64" for o in c.outputs]
    assert o64 and all(o.returned_dtype == "float32" for o in o64)
    assert all(o.precision == "came back in float32, lower precision than the float64 asked for" for o in o64)
    assert "LOWER PRECISION: y came back in float32" in text and "float64 asked: y float32" in text
    assert not rep.passed  # float32 rounding is outside float64's bound...
    assert any("y came back in float32, lower precision than the float64 asked for" in d
               for d in rep.deviations()), rep.deviations()  # ...and the diagnosis says why
    o32 = [o for c in rep.cases if c.dtype == "float32" for o in c.outputs]
    assert all(o.returned_dtype == "float32" and o.precision is None and o.passed for o in o32)
    ok = verify(SPEC, running_sum, dtype="float64", **FEW)
    assert ok.passed and ok.returned_dtypes() == ["float64 asked: y float64"]
    assert "outputs came back in: float64 asked: y float64" in ok.to_text()


class _FakeJaxConfig:
    def __init__(self):
        self.jax_enable_x64 = False
        self.updates = []

    def update(self, name, value):
        assert name == "jax_enable_x64"
        self.updates.append(value)
        self.jax_enable_x64 = value


def test_jax_float64_runs_with_x64_enabled_and_restored(test_op, monkeypatch):
    """JAX itself is not installed here: a stand-in with JAX's rule (float64 only with jax_enable_x64)."""
    import types

    cfg = _FakeJaxConfig()
    jax = types.ModuleType("jax")
    jax.config = cfg
    jnp = types.ModuleType("jax.numpy")
    jnp.asarray = lambda a: np.asarray(a) if cfg.jax_enable_x64 else np.asarray(a).astype(
        {np.dtype(np.float64): np.float32}.get(np.asarray(a).dtype, np.asarray(a).dtype))
    jax.numpy = jnp
    monkeypatch.setitem(sys.modules, "jax", jax)
    monkeypatch.setitem(sys.modules, "jax.numpy", jnp)
    seen = []

    def cand(x):
        seen.append((x.dtype.name, cfg.jax_enable_x64))
        return np.cumsum(x, axis=1)

    rep = verify(SPEC, cand, framework="jax", dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert {d for d, x64 in seen if x64} == {"float64"} and {d for d, x64 in seen if not x64} == {"float32"}
    assert cfg.jax_enable_x64 is False and cfg.updates[:2] == [True, False]  # restored after the run
    assert any("jax_enable_x64" in n and "restored" in n for n in rep.notes), rep.notes
    assert "note: float64: jax_enable_x64 was off" in rep.to_text()
    cfg.jax_enable_x64 = True  # already on: left alone, nothing to say
    cfg.updates.clear()
    rep = verify(SPEC, cand, framework="jax", dtype="float64", **FEW)
    assert rep.passed and cfg.updates == [] and cfg.jax_enable_x64 is True and not rep.notes


# -- 5. spelling and environment -------------------------------------------------------------------------------

def test_conv_accepts_the_spellings_refimpl_ops_prints_and_json():
    from oracles.cli.verify import parse_convention, parse_conventions, parse_value
    from oracles.verify import list_ops

    assert parse_convention("delta_softplus=True") == ("delta_softplus", True)
    assert parse_convention("delta_softplus=true") == ("delta_softplus", True)
    assert parse_convention("scale=None") == ("scale", None) and parse_convention("scale=null") == ("scale", None)
    assert parse_convention("alpha=0.25") == ("alpha", 0.25) and parse_convention("method='zoh'") == ("method", "zoh")
    assert parse_convention("method=zoh") == ("method", "zoh")
    assert parse_value("(0.0, inf)") == (0.0, math.inf) and parse_value("[0, 1]") == (0, 1)
    assert parse_value("-inf") == -math.inf and math.isnan(parse_value("nan"))
    assert parse_value("none") == "none"  # a string choice, not None
    with pytest.raises(ValueError, match="--conv: expected NAME=VALUE"):
        parse_convention("delta_softplus")
    assert parse_conventions(["delta_softplus=True"], "ssm.selective_scan") == {"delta_softplus": True}
    # every default and choice, written as `refimpl ops` prints it (repr), reads back as itself
    n = 0
    for spec in list_ops():
        for c in spec.conventions:
            for v in (c.default,) + tuple(c.choices or ()):
                got = parse_conventions([f"{c.name}={v!r}"], spec.name)[c.name]
                assert got == v or (isinstance(v, float) and math.isnan(v) and math.isnan(got)), (spec.name, c.name, v)
                assert type(got) is type(v) or (isinstance(v, list) and isinstance(got, tuple)), (c.name, v, got)
                n += 1
    assert n > 20


def test_cli_conv_true_and_a_word_choice(test_op, monkeypatch, capsys):
    from oracles.cli import main

    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    rc = main(["verify", "test_verify_false_alarms:running_sum", "--op", OP, "--conv", "flag=True",
               "--conv", "mode=none", "--max-examples", "1", "--report", "json"])
    out = capsys.readouterr()
    assert rc == 0, out.err + out.out
    import json

    d = json.loads(out.out)
    assert d["conventions"] == {"flag": True, "mode": "none"}


MYMOD = '''
import numpy as np


def cumsum(x):
    return np.cumsum(x, axis=1)
'''


def test_verify_imports_the_candidate_from_the_current_directory(test_op, tmp_path, monkeypatch, capsys):
    """The console script's sys.path has its own folder first, not the current directory (unlike python -m)."""
    from oracles.cli import main

    (tmp_path / "mymod_cwd_probe.py").write_text(MYMOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or os.curdir) != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "mymod_cwd_probe", raising=False)
    try:
        rc = main(["verify", "mymod_cwd_probe:cumsum", "--op", OP, "--max-examples", "1"])
    finally:
        sys.modules.pop("mymod_cwd_probe", None)
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "CONFORMS" in out.out
    rc = main(["verify", "no_such_module_here:f", "--op", OP])
    assert rc == 2 and f"searched the current directory {tmp_path}" in capsys.readouterr().err


def test_hypothesis_files_go_to_the_cache_folder_not_the_working_directory(test_op, tmp_path, monkeypatch):
    import hypothesis.configuration as hconf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("REFIMPL_CACHE_DIR", raising=False)
    monkeypatch.delenv("HYPOTHESIS_STORAGE_DIRECTORY", raising=False)
    before = hconf.storage_directory("probe", intent_to_write=False).path
    STORAGE_SEEN.clear()
    rep = verify(SPEC, running_sum, max_examples=2, kinds=("random",))
    assert rep.passed and [c.kind for c in rep.cases] == ["hypothesis", "hypothesis"]
    want = str(tmp_path / "cache" / "refimpl" / "hypothesis")
    assert STORAGE_SEEN and all(p.startswith(want) for p in STORAGE_SEEN), STORAGE_SEEN
    assert hconf.storage_directory("probe", intent_to_write=False).path == before  # the caller's setting is back


def test_a_fresh_verify_run_leaves_no_hypothesis_folder_in_the_working_directory(tmp_path):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    # ssm.lti's strategy (oracles.strategies.ssm) makes Hypothesis write its constants cache: a fresh process,
    # so nothing is cached in memory yet
    code = ("from oracles.verify import get_op\n"
            "from oracles.verify.harness import generate_cases\n"
            "spec = get_op('ssm.lti')\n"
            "cases = generate_cases(spec, spec.resolve_conventions({}), max_examples=3, kinds=('random',))\n"
            "assert [c.kind for c in cases] == ['hypothesis'] * 3, cases\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_STORAGE_DIRECTORY", "REFIMPL_CACHE_DIR")}
    env.update(XDG_CACHE_HOME=str(cache), PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (work / ".hypothesis").exists(), sorted(os.listdir(work))
    assert (cache / "refimpl" / "hypothesis").is_dir()  # where Hypothesis wrote instead


def test_ops_into_a_closed_pipe_exits_quietly(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nfrom oracles.cli import main\nsys.exit(main(['ops']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # the reader goes away before the first line, as `refimpl ops | head -0` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141


def test_broken_pipe_in_process_returns_quietly(monkeypatch):
    from oracles.cli import main

    class Closed:
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["ops"]) == 141


def test_an_optional_output_returned_as_none_fails_the_case(test_op):
    rep = verify(SPEC, total_none, **FEW)
    assert not rep.passed
    nonempty = [c for c in rep.cases if not c.skipped]
    assert nonempty and all(not c.passed for c in nonempty)
    msgs = {o.comparison.message for c in nonempty for o in c.outputs if not o.passed}
    assert msgs == {"output total was asked for and came back None (its place in the return value held None)"}
    # not returned at all (a single array for the canonical tuple): optional, not checked; returned: checked
    assert verify(SPEC, running_sum, **FEW).passed
    both = verify(SPEC, with_total, **FEW)
    assert both.passed and all({o.output for o in c.outputs} == {"y", "total"} for c in both.cases)


def test_warnings_are_attached_to_their_case_not_printed(test_op, capfd):
    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        rep = verify(SPEC, warns, **FEW)
    assert rep.passed, rep.to_text()
    assert not [w for w in outer if "candidate's warning" in str(w.message)]  # none escaped the case
    err = capfd.readouterr().err
    assert "candidate's warning" not in err and "overflow" not in err
    for c in rep.cases:
        assert any(w.startswith("UserWarning: prefix sum kernel: this is a candidate's warning") for w in c.warnings)
        assert any(w.startswith("RuntimeWarning: overflow") for w in c.warnings), c.warnings
    text = rep.to_text(verbose=True)
    assert "    warning: UserWarning: prefix sum kernel: this is a candidate's warning (at " in text
    assert rep.to_dict()["cases"][0]["warnings"] == rep.cases[0].warnings


# -- 7. a per-case time limit ----------------------------------------------------------------------------------

def test_a_hanging_candidate_is_reported_with_its_case_and_the_run_goes_on(test_op):
    RELEASE.clear()
    t0 = time.perf_counter()
    try:
        rep = verify(SPEC, hangs_on_long, dtype=["float64", "float32"], timeout=0.5, kinds=("golden", "edge"),
                     probes=False)
    finally:
        RELEASE.set()  # let the abandoned threads finish
    assert time.perf_counter() - t0 < 20
    hung = [c for c in rep.cases if c.error]
    assert [(c.case_id, c.dtype) for c in hung] == [("golden-L12", "float64"), ("golden-L12", "float32")]
    assert all(c.error.startswith("timed out: the candidate did not return within 0.5 s; the call was abandoned")
               for c in hung)
    assert all(c.passed for c in rep.cases if not c.error) and len(rep.cases) == 6  # the other cases ran
    assert any("2 call(s) of the candidate did not return within 0.5 s" in n for n in rep.notes), rep.notes
    assert "error: timed out" in rep.to_text() and not rep.passed


def test_timeout_option(test_op, monkeypatch, capsys):
    from oracles.cli import main

    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    RELEASE.clear()
    try:
        rc = main(["verify", "test_verify_false_alarms:hangs_on_long", "--op", OP, "--timeout", "0.5",
                   "--cases", "golden", "--max-examples", "0"])
    finally:
        RELEASE.set()
    out = capsys.readouterr().out
    assert rc == 1 and "timed out" in out and "abandoned" in out
    for bad in ("0", "-1", "abc", "inf"):
        with pytest.raises(SystemExit) as e:
            main(["verify", "test_verify_false_alarms:running_sum", "--op", OP, "--timeout", bad])
        assert e.value.code == 2
    assert "--timeout: expected a positive number of seconds" in capsys.readouterr().err
    with pytest.raises(ValueError, match="timeout: expected a positive number of seconds or None, got 0"):
        verify(SPEC, running_sum, timeout=0)
