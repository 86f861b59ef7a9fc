"""The verify harness on the ops that exist: our own references conform, mutated copies are caught and
diagnosed, low precision uses the same-dtype baseline, reports render, failures reproduce."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from oracles.verify import assert_conforms, get_op, list_ops, load_case, rerun_case, verify
from refimpl.ssm.discretization import discretize
from refimpl.ssm.discretization import reference as disc
from refimpl.ssm.lti import lti_ssm
from refimpl.ssm.lti import reference as lti
from refimpl.ssm.selective import reference as selective

FEW = dict(max_examples=3, seed=1)


# -- our references conform ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zoh", "bilinear", "gbt", "forward_euler", "backward_euler", "mamba"])
@pytest.mark.parametrize("diagonal", [False, True])
def test_refimpl_discretize_conforms(method, diagonal):
    rep = verify("ssm.discretize", discretize, adapter="refimpl",
                 conventions={"method": method, "diagonal": diagonal, "alpha": 0.3}, dtype=["float64", "float32"],
                 **FEW)
    assert rep.passed, rep.to_text()
    assert len([c for c in rep.cases if not c.skipped]) >= 8


@pytest.mark.parametrize("view", [lti.recurrent, lti.scan])
def test_refimpl_lti_views_conform(view):
    rep = verify("ssm.lti", view, adapter="refimpl", dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()
    assert rep.probes and rep.probes[0].passed and "unchanged" in rep.probes[0].message


def test_refimpl_selective_scan_conforms_with_every_feature():
    rep = verify("ssm.selective_scan", selective.recurrent, adapter="refimpl",
                 conventions={"delta_softplus": True}, dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()


# -- mutants are caught --------------------------------------------------------------------------------------

def euler_A_zoh(A, B, dt, method, alpha=None, diagonal=False):
    """Mutant: ZOH with A_bar = I + dt A (Euler) instead of exp(dt A)."""
    A_bar, B_bar = disc.zoh(A, B, dt, diagonal=diagonal)
    A_bar = (1.0 + dt * A) if diagonal else np.eye(A.shape[-1]) + dt * A
    return A_bar, B_bar


def test_mutant_euler_instead_of_zoh_for_A_is_caught():
    rep = verify("ssm.discretize", euler_A_zoh, adapter="refimpl", conventions={"method": "zoh"}, **FEW)
    assert not rep.passed
    bad = {o.output for c in rep.failures for o in c.outputs if not o.passed}
    assert bad == {"A_bar"}  # B_bar is still ZOH: only A_bar is flagged
    # A = 0 is the one case where Euler and ZOH agree for A
    assert all(c.passed for c in rep.cases if c.case_id == "edge-A-zero")


def selective_no_D(u, delta, A, B, C, D=None, z=None, **kw):
    """Mutant: the D skip connection dropped."""
    return selective.recurrent(u, delta, A, B, C, None, z, **kw)


def test_mutant_dropped_D_skip_is_caught_and_diagnosed():
    rep = verify("ssm.selective_scan", selective_no_D, adapter="refimpl", **FEW)
    assert not rep.passed
    # every non-empty case fails, and the diagnosis names the convention that explains it
    assert any("use_D=False" in d for d in rep.deviations()), rep.deviations()
    assert all(c.passed for c in rep.cases if c.case_id == "edge-L0")


def lti_no_D(A_bar, B_bar, C, D, x, **kw):
    return lti.recurrent(A_bar, B_bar, C, None, x, **kw)


def test_mutant_dropped_D_in_lti_is_caught():
    rep = verify("ssm.lti", lti_no_D, adapter="refimpl", **FEW)
    assert not rep.passed and rep.failures


def peeking_lti(A_bar, B_bar, C, D, x, **kw):
    """Mutant: uses the next input (an acausal bug) -- caught by values and by the causality probe."""
    y, h = lti.recurrent(A_bar, B_bar, C, D, x, **kw)
    y = y.copy()
    if x.shape[1] > 1:
        y[:, :-1] += 1e-3 * np.einsum("hpm,blhm->blhp", D, x[:, 1:])
    return y, h


def test_acausal_candidate_fails_the_causality_probe():
    rep = verify("ssm.lti", peeking_lti, adapter="refimpl", **FEW)
    assert not rep.passed
    probe = rep.probes[0]
    assert not probe.passed and "depends on future inputs" in probe.message


# -- errors, non-finite values, layouts ------------------------------------------------------------------

def test_candidate_exception_is_an_error_row_with_location():
    def broken(A, B, dt, method, alpha=None, diagonal=False):
        raise RuntimeError("kernel launch failed")

    rep = verify("ssm.discretize", broken, adapter="refimpl", kinds=("golden",))
    assert not rep.passed
    assert all(c.error and "RuntimeError: kernel launch failed" in c.error and "in broken" in c.error
               for c in rep.cases)


def test_nan_where_the_oracle_is_finite_is_reported():
    def nan_out(A, B, dt, method, alpha=None, diagonal=False):
        Ab, Bb = discretize(A, B, dt, method=method, diagonal=diagonal)
        Bb = Bb.copy()
        Bb.flat[0] = np.nan
        return Ab, Bb

    rep = verify("ssm.discretize", nan_out, adapter="refimpl", kinds=("golden",))
    c = rep.failures[0]
    assert [o.comparison.nonfinite for o in c.outputs] == [0, 1]
    assert "NaN/Inf in B_bar" in c.diagnosis


def test_wrong_layout_is_reported_as_a_shape_mismatch():
    def transposed(A, B, dt, method, alpha=None, diagonal=False):
        Ab, Bb = discretize(A, B, dt, method=method, diagonal=diagonal)
        return Ab, np.swapaxes(Bb, -1, -2)

    rep = verify("ssm.discretize", transposed, adapter="refimpl", cases=[
        c for c in get_op("ssm.discretize").cases(get_op("ssm.discretize").resolve_conventions({"method": "zoh"}))
        if c.case_id == "edge-n1"])  # n = 1, m = 2: B_bar (1, 1, 2)
    assert "shape mismatch" in rep.cases[0].diagnosis


def test_bad_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="op: expected one of"):
        verify("ssm.nope", discretize)
    with pytest.raises(ValueError, match="unknown convention"):
        verify("ssm.discretize", discretize, conventions={"methd": "zoh"})
    with pytest.raises(ValueError, match="convention method: expected one of"):
        verify("ssm.discretize", discretize, conventions={"method": "rk4"})
    with pytest.raises(ValueError, match="implies"):
        verify("ssm.selective_scan", selective.recurrent, adapter="mambapy.selective_scan",
               conventions={"use_z": True})
    with pytest.raises(ValueError, match="dtype: expected one of"):
        verify("ssm.discretize", discretize, dtype="float8")
    with pytest.raises(ValueError, match="adapter: expected one of"):
        verify("ssm.discretize", discretize, adapter="cuda")


# -- low precision: the same-dtype baseline --------------------------------------------------------------

def lowp_discretize(A, B, dt, method, alpha=None, diagonal=False):
    """A float16/bfloat16 'kernel': computes in float32, stores in the input dtype."""
    f32 = lambda a: np.asarray(a).astype(np.float32)  # noqa: E731
    Ab, Bb = discretize(f32(A), f32(B), f32(dt), method=method, alpha=alpha, diagonal=diagonal)
    return Ab.astype(A.dtype), Bb.astype(A.dtype)


def lowp_discretize_sloppy(A, B, dt, method, alpha=None, diagonal=False):
    """Adds 8 units in the last place of the storage dtype: beyond 2x the baseline."""
    Ab, Bb = lowp_discretize(A, B, dt, method, alpha, diagonal)
    up = lambda a: (a.astype(np.float32) * (1 + 8 * 2.0 ** -8)).astype(A.dtype)  # noqa: E731
    return up(Ab), up(Bb)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_uses_the_same_dtype_baseline(dtype):
    rep = verify("ssm.discretize", lowp_discretize, adapter="refimpl", conventions={"diagonal": True},
                 dtype=dtype, **FEW)
    ran = [c for c in rep.cases if not c.skipped]
    assert ran and rep.passed, rep.to_text()
    # complex inputs have no float16/bfloat16 form: skipped with the reason
    assert any("no complex form" in (c.skipped or "") for c in rep.cases)
    for c in ran:
        for o in c.outputs:
            # the candidate is our reference's float32 computation rounded to the same dtype: bit-identical to
            # the baseline, so the ratio of the two (identically computed) errors is exactly 1 (0 when both are 0)
            assert o.baseline_multiple is not None and o.baseline_multiple <= 1.0
            assert "baseline" in o.comparison.bound_source
    sloppy = verify("ssm.discretize", lowp_discretize_sloppy, adapter="refimpl", conventions={"diagonal": True},
                    dtype="bfloat16", kinds=("golden",))
    assert not sloppy.passed
    assert any(o.baseline_multiple > 2 for c in sloppy.failures for o in c.outputs)


# -- reports and reproductions ---------------------------------------------------------------------------

def test_report_formats_and_reproduction(tmp_path):
    rep = verify("ssm.discretize", euler_A_zoh, adapter="refimpl", kinds=("golden", "edge"),
                 save_failures=str(tmp_path))
    text = rep.to_text()
    assert "DOES NOT CONFORM" in text and "max abs" in text and "reproduce: python" in text
    d = json.loads(rep.to_json())
    assert d["passed"] is False and d["cases"][0]["outputs"][0]["output"] == "A_bar"
    assert {"max_abs_err", "max_abs_index", "max_rel_err", "normwise_rel_err", "bound_source", "nonfinite"} <= set(
        d["cases"][0]["outputs"][0])
    root = ET.fromstring(rep.to_junit())
    suite = root.find("testsuite")
    assert int(suite.get("failures")) == len(rep.failures) and int(suite.get("tests")) == len(rep.cases)
    assert suite.find("testcase/failure") is not None
    fail = rep.failures[0]
    saved = load_case(fail.repro)
    assert saved["meta"]["conventions"]["method"] == "zoh"
    np.testing.assert_array_equal(saved["candidate"]["A_bar"], euler_A_zoh(
        saved["inputs"]["A"], saved["inputs"]["B"], saved["inputs"]["dt"], "zoh")[0])
    again = rerun_case(saved, candidate=euler_A_zoh)
    assert not again.passed and again.cases[0].case_id == fail.case_id
    script = (tmp_path / (fail.repro[:-4].split("/")[-1] + ".py")).read_text()
    assert "load_case" in script and "rerun_case" in script


def test_assert_conforms_raises_with_the_report():
    with pytest.raises(AssertionError, match="DOES NOT CONFORM"):
        assert_conforms("ssm.discretize", euler_A_zoh, adapter="refimpl", kinds=("golden",))
    rep = assert_conforms("ssm.discretize", discretize, adapter="refimpl", kinds=("golden",))
    assert rep.passed


def test_every_op_describes_itself_and_has_cases():
    for spec in list_ops():
        assert spec.describe().startswith(spec.name)
        conv = spec.resolve_conventions({})
        assert spec.cases(conv), spec.name
        json.dumps(spec.to_dict(), default=str)


def test_numpy_candidates_never_import_a_framework():
    code = ("import sys\nfrom oracles.verify import verify\nfrom refimpl.ssm.discretization import discretize\n"
            "verify('ssm.discretize', discretize, adapter='refimpl', kinds=('golden',))\n"
            "print([m for m in ('torch', 'jax', 'cupy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("view, alg", [("recurrent", "recurrent"), ("quadratic", "quadratic"), ("chunked", "chunked")])
def test_refimpl_ssd_views_conform(view, alg):
    import functools

    from refimpl.ssm.ssd import reference as ssd

    fn = functools.partial(getattr(ssd, view), chunk=16) if view == "chunked" else getattr(ssd, view)
    rep = verify("ssm.ssd", fn, adapter="refimpl", conventions={"algorithm": alg, "chunk": 16, "dt_softplus": True},
                 dtype=["float64", "float32"], candidate_name=f"refimpl.ssm.ssd.reference:{view}", **FEW)
    assert rep.passed, rep.to_text()
    assert any(c.case_id == "edge-packed" for c in rep.cases)


@pytest.mark.parametrize("key_norm", ["none", "sum", "l2"])
def test_refimpl_delta_rule_conforms(key_norm):
    from refimpl.attention.delta import delta_rule

    rep = verify("attention.delta_rule", delta_rule, adapter="refimpl", conventions={"key_norm": key_norm},
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()


def test_ungated_candidate_is_diagnosed():
    from refimpl.attention.delta import delta_rule

    def ignores_alpha(q, k, v, beta, decay=None, **kw):
        return delta_rule(q, k, v, beta, **kw)

    rep = verify("attention.delta_rule", ignores_alpha, adapter="refimpl", kinds=("golden",))
    assert not rep.passed and any("use_alpha=False" in d for d in rep.deviations()), rep.deviations()


def test_canonical_signature_and_dict_outputs():
    def canonical(A, B, dt, C=None, D=None):  # the op's canonical signature; outputs by name
        A_bar, B_bar = disc.bilinear(A, B, dt)
        return {"A_bar": A_bar, "B_bar": B_bar}

    rep = verify("ssm.discretize", canonical, conventions={"method": "bilinear"}, kinds=("golden", "edge"))
    assert rep.passed, rep.to_text()
    assert rep.adapter == "canonical" and all({o.output for o in c.outputs} == {"A_bar", "B_bar"} for c in rep.cases)
    assert "float64: worst err/bound" in rep.to_text()


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_refimpl_s4d_kernel_conforms(method):
    from refimpl.ssm.s4d import reference as s4d

    rep = verify("ssm.s4d_kernel", s4d.kernel, adapter="refimpl", conventions={"method": method},
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()


def test_real_output_convention_is_diagnosed():
    from refimpl.ssm.s4d import reference as s4d

    def re_only(Lambda, B, C, dt, L, method="zoh", output="2re"):  # ignores the 2 Re convention
        return s4d.kernel(Lambda, B, C, dt, L, method=method, output="re")

    rep = verify("ssm.s4d_kernel", re_only, adapter="refimpl", kinds=("golden",))
    assert not rep.passed
    assert any("output='re' instead of '2re'" in d for d in rep.deviations()), rep.deviations()


def test_refimpl_lru_conforms_and_a_missing_gamma_is_caught():
    import functools

    from refimpl.ssm.lru import lru_ssm

    for view in ("recurrent", "scan"):
        rep = verify("ssm.lru", functools.partial(lru_ssm, view=view), adapter="refimpl",
                     dtype=["float64", "float32"], candidate_name=f"lru_ssm[{view}]", **FEW)
        assert rep.passed, rep.to_text()

    def no_gamma(nu_log, theta_log, gamma_log, B, C, D, u):  # mutant: the gamma normalization dropped
        return lru_ssm(nu_log, theta_log, np.zeros_like(gamma_log), B, C, D, u)

    rep = verify("ssm.lru", no_gamma, adapter="refimpl", kinds=("golden", "edge"))
    assert not rep.passed
    assert all(not c.passed for c in rep.cases if c.shapes["u"][1] > 0)


def test_mamba2_chunk_scan_interface_end_to_end():
    from refimpl.ssm.ssd import reference as ssd

    def chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                            seq_idx=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
        """Mamba-2's mamba_chunk_scan_combined interface on top of our chunked view."""
        return ssd.chunked(x, dt, A, B, C, D, z, chunk=chunk_size, dt_bias=dt_bias, dt_softplus=dt_softplus,
                           dt_limit=dt_limit, initial_state=initial_states, seq_idx=seq_idx,
                           return_final_state=return_final_states)

    rep = verify("ssm.ssd", chunk_scan_combined, adapter="mamba2.chunk_scan",
                 conventions={"chunk": 8, "dt_softplus": True, "dt_limit": (0.01, 2.0)}, dtype=["float64", "float32"],
                 **FEW)
    assert rep.passed, rep.to_text()
    assert any(c.case_id == "edge-packed" for c in rep.cases) and any(c.case_id == "edge-chunk+1" for c in rep.cases)


def test_fft_convolution_view_conforms_under_the_fft_bound():
    import functools

    fft = functools.partial(lti_ssm, view="fft")
    rep = verify("ssm.lti", fft, adapter="refimpl", conventions={"algorithm": "fft"}, dtype=["float64", "float32"],
                 candidate_name="refimpl.ssm.lti:lti_ssm[fft]", **FEW)
    assert rep.passed, rep.to_text()
    assert rep.probes[0].passed  # the FFT mixes positions only at rounding level


@pytest.mark.parametrize("op, target, conv", [
    ("attention.softmax", "refimpl.attention.softmax.numba:flash_attention", {"causal": "bottom_right"}),
    ("ssm.selective_scan", "refimpl.ssm.selective.numba:selective_scan_numba",
     {"delta_softplus": True, "algorithm": "chunked"}),
    ("ssm.ssd", "refimpl.ssm.ssd.numba:ssd_chunked_numba", {"algorithm": "chunked", "chunk": 64}),
    ("attention.linear", "refimpl.attention.linear.numba:causal_chunked", {}),
    ("attention.delta_rule", "refimpl.attention.delta.numba:delta_chunked", {"algorithm": "chunked", "chunk": 64}),
])
def test_our_fast_kernels_conform_through_the_harness(op, target, conv):
    from oracles.verify import resolve_candidate

    rep = verify(op, resolve_candidate(target), adapter="refimpl", conventions=conv, dtype=["float64", "float32"],
                 candidate_name=target, **FEW)
    assert rep.passed, rep.to_text()


# -- low precision: the baseline is checked first, and a normwise fallback is said ------------------------------

def test_low_precision_baseline_must_pass_its_own_float32_bound():
    import dataclasses

    spec = get_op("ssm.discretize")

    def off_reference(inp, conv):  # our reference, off by 1e-3 relative: beyond its own float32 bound
        return {k: np.asarray(v) * (1 + 1e-3) for k, v in spec.reference(inp, conv).items()}

    bad = dataclasses.replace(spec, reference=off_reference)
    rep = verify(bad, lowp_discretize, adapter="refimpl", conventions={"diagonal": True}, dtype="float16",
                 kinds=("golden",))
    real = [c for c in rep.cases if not (c.skipped or "").startswith("input")]
    assert real and all("exceeds its own float32 bound" in (c.skipped or "") for c in real), rep.to_text()
    # the same cases with the true reference run (none is skipped for that reason)
    ok = verify("ssm.discretize", lowp_discretize, adapter="refimpl", conventions={"diagonal": True},
                dtype="float16", kinds=("golden",))
    assert ok.passed and not any("its own float32 bound" in (c.skipped or "") for c in ok.cases), ok.to_text()


def test_low_precision_normwise_fallback_is_reported():
    import dataclasses

    from oracles.tolerance import Bound

    spec = get_op("ssm.discretize")

    def scalar_bounds(inp, out, conv, dtype):  # the op's bound as one number per output: no magnitude
        return {k: Bound(float(np.max(np.asarray(b.values))), "max of the op's bound")
                for k, b in spec.bounds(inp, out, conv, dtype).items()}

    rep = verify(dataclasses.replace(spec, bounds=scalar_bounds), lowp_discretize, adapter="refimpl",
                 conventions={"diagonal": True}, dtype="float16", kinds=("golden",))
    ran = [c for c in rep.cases if not c.skipped]
    assert ran
    for c in ran:
        for o in c.outputs:
            assert "fell back to the normwise baseline" in o.comparison.message, o.line()
            assert "fell back to the normwise baseline" in c.text()
    # with the op's componentwise bound no fallback is reported
    rep = verify("ssm.discretize", lowp_discretize, adapter="refimpl", conventions={"diagonal": True},
                 dtype="float16", kinds=("golden",))
    assert not any("fell back" in (o.comparison.message or "") for c in rep.cases for o in c.outputs)
