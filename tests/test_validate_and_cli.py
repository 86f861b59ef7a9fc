"""Input validation helpers and the `refimpl` CLI (report rows, JSON, exit status)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from refimpl._validate import as_float_array, check_int, check_shape, result_dtype


def test_as_float_array_policy():
    assert as_float_array(1, "dt").dtype == np.float64
    assert as_float_array([1, 2], "x").dtype == np.float64
    assert as_float_array(np.float32(1), "x").dtype == np.float32
    with pytest.raises(TypeError, match="x: expected a floating-point dtype .* got int64"):
        as_float_array(np.arange(3), "x")
    with pytest.raises(TypeError, match="x: expected a floating-point number or array, got bool"):
        as_float_array(True, "x")
    with pytest.raises(TypeError, match="x: expected an array of floats, got str"):
        as_float_array("1.0", "x")
    with pytest.raises(TypeError, match="x: expected float32 or float64, got float16"):
        as_float_array(np.ones(2, np.float16), "x")
    with pytest.raises(ValueError, match=r"x: expected 2 dimensions, got shape \(3,\)"):
        as_float_array(np.ones(3), "x", ndim=2)
    with pytest.raises(ValueError, match=r"x: expected finite values, got nan at index \(1,\)"):
        as_float_array(np.array([0.0, np.nan]), "x")
    with pytest.raises(TypeError, match="x: expected a real floating-point dtype, got complex128"):
        as_float_array(np.ones(2, complex), "x", allow_complex=False)


def test_shape_int_and_dtype_helpers():
    with pytest.raises(ValueError, match=r"w: expected shape \(2, \*\), got \(3, 1\)"):
        check_shape(np.ones((3, 1)), "w", (2, None))
    with pytest.raises(TypeError, match="L: expected an integer, got float 2.0"):
        check_int(2.0, "L")
    assert result_dtype(np.ones(1, np.float32), np.ones(1, np.float32)) == np.float32
    assert result_dtype(np.ones(1, np.float32), np.ones(1)) == np.float64
    assert result_dtype(np.ones(1, np.float32), np.ones(1, np.complex64)) == np.complex64


def test_report_cli_writes_json_and_exits_zero(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "oracles", "report", "--select", "ssm.", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    ops = {(r["op"], r["impl"]) for r in rows}
    for view in ("reference/recurrent", "reference/conv-direct", "reference/conv-fft", "reference/scan",
                 "reference/chunked", "numba/recurrent", "numba/conv-direct"):
        assert ("ssm.lti.dense", view) in ops and ("ssm.lti.diagonal", view) in ops
    for m in ("zoh", "bilinear", "gbt", "forward_euler", "backward_euler", "mamba"):
        assert (f"ssm.discretize.{m}", "reference/dense") in ops
    assert all(set(r) >= {"op", "impl", "dtype", "max_abs_err", "bound", "passed"} for r in rows)
    assert all(r["passed"] for r in rows)
    assert "passed" in proc.stdout


def test_report_exits_nonzero_when_a_row_fails(monkeypatch, capsys):
    from oracles import checks
    from oracles.tolerance import Bound, compare
    from oracles.cli import main

    def failing():
        return [checks.row("test.fail", "reference/none", compare(np.ones(2), np.zeros(2), Bound(0.5, "t")), 0.0)]

    monkeypatch.setattr(checks, "_REGISTRY", [failing])
    monkeypatch.setattr(checks, "discover", lambda: [failing])
    assert main(["report"]) == 1
    assert "FAIL" in capsys.readouterr().out
