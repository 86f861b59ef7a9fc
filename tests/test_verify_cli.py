"""The CLI: `refimpl verify`, `refimpl ops`, `refimpl vectors export/check` (run in-process through oracles.cli.main)."""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from oracles.cli import main

# module-level candidates so that `refimpl verify tests.test_verify_cli:NAME` can import them
from refimpl.ssm.discretization import discretize
from refimpl.ssm.discretization.reference import zoh


def euler_for_A(A, B, dt, method, alpha=None, diagonal=False):
    """Mutant: forward Euler A_bar with ZOH B_bar."""
    A_bar, B_bar = zoh(A, B, dt, diagonal=diagonal)
    return np.eye(A.shape[-1]) + dt * A, B_bar


CAND = "refimpl.ssm.discretization:discretize"
MUTANT = "test_verify_cli:euler_for_A"


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))


def test_verify_exit_status_is_zero_only_when_everything_conforms(capsys):
    rc = main(["verify", CAND, "--op", "ssm.discretize", "--adapter", "refimpl", "--conv", "method=bilinear",
               "--dtype", "float64,float32", "--max-examples", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "CONFORMS" in out
    rc = main(["verify", MUTANT, "--op", "ssm.discretize", "--adapter", "refimpl", "--max-examples", "2"])
    out = capsys.readouterr().out
    assert rc == 1 and "DOES NOT CONFORM" in out and "A_bar: FAIL" in out


def test_verify_usage_errors_exit_2(capsys):
    assert main(["verify", "nomodule_xyz:f", "--op", "ssm.discretize"]) == 2
    assert main(["verify", CAND, "--op", "ssm.nope"]) == 2
    assert main(["verify", CAND, "--op", "ssm.discretize", "--conv", "method=rk4"]) == 2
    assert main(["verify", "refimpl.ssm.discretization.reference", "--op", "ssm.discretize"]) == 2  # no :FUNCTION
    assert main(["verify", CAND, "--op", "ssm.discretize", "--cases", "golden,fuzz"]) == 2
    err = capsys.readouterr().err
    assert "MODULE:FUNCTION" in err and "op: expected one of" in err


def test_verify_json_junit_and_saved_failures(tmp_path, capsys):
    rc = main(["verify", MUTANT, "--op", "ssm.discretize", "--adapter", "refimpl", "--max-examples", "1",
               "--report", "json", "--save-failures", str(tmp_path / "fails"), "--seed", "5"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 1 and d["passed"] is False and d["seed"] == 5 and d["candidate"] == MUTANT
    saved = sorted(os.listdir(tmp_path / "fails"))
    assert any(f.endswith(".npz") for f in saved) and any(f.endswith(".py") for f in saved)
    junit = tmp_path / "verify.xml"
    rc = main(["verify", MUTANT, "--op", "ssm.discretize", "--adapter", "refimpl", "--cases", "golden",
               "--report", "junit", "-o", str(junit)])
    assert rc == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and int(root.get("failures")) >= 1


def test_ops_lists_conventions_and_adapters(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for op in ("ssm.discretize", "ssm.lti", "ssm.selective_scan", "attention.softmax", "attention.linear",
               "features.performer"):
        assert op + ":" in out
    assert "convention method = 'zoh'" in out and "adapter scipy.cont2discrete" in out
    assert "adapter mamba.selective_scan_fn" in out and "adapter flash_attn.flash_attn_func" in out
    assert main(["ops", "attention.softmax", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d[0]["op"] == "attention.softmax"
    assert {c["name"] for c in d[0]["conventions"]} >= {"scale", "causal", "window_left", "window_right"}


def test_vectors_export_and_check(tmp_path, capsys):
    out = tmp_path / "vec"
    assert main(["vectors", "export", "--op", "ssm.discretize", "--out", str(out), "--conv", "method=bilinear",
                 "--max-examples", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["op"] == "ssm.discretize" and manifest["conventions"]["method"] == "bilinear"
    assert manifest["generator"].startswith("refimpl") and "rule" in manifest["tolerance"]
    ids = [c["id"] for c in manifest["cases"]]
    assert len(ids) == len(set(ids)) >= 5 and {"golden", "edge"} <= {c["kind"] for c in manifest["cases"]}
    with np.load(out / manifest["cases"][0]["file"]) as z:
        assert {"in__A", "in__B", "in__dt", "out__A_bar", "out__B_bar", "bound_float32__A_bar"} <= set(z.files)
        # a port checks itself with the stored bound (its inputs are in__* exactly): our float64 reference passes
        Ab, Bb = discretize(z["in__A"], z["in__B"], z["in__dt"], method="bilinear")
        assert np.all(np.abs(Ab - z["out__A_bar"]) <= z["bound_float64__A_bar"])
        assert np.all(np.abs(Bb - z["out__B_bar"]) <= z["bound_float64__B_bar"])
    capsys.readouterr()
    assert main(["vectors", "check", str(out)]) == 0
    assert "all vectors check" in capsys.readouterr().out
    assert main(["vectors", "check", str(out), "--candidate", CAND, "--adapter", "refimpl"]) == 0
    capsys.readouterr()
    # a corrupted vector is detected
    f = out / manifest["cases"][0]["file"]
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["out__A_bar"] = arrays["out__A_bar"] + 1e-9
    np.savez(f, **arrays)
    assert main(["vectors", "check", str(out)]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("op", ["ssm.lti", "ssm.selective_scan", "ssm.ssd", "attention.softmax", "attention.linear",
                                "attention.delta_rule", "features.performer"])
def test_vectors_roundtrip_for_every_op(op, tmp_path):
    from oracles.verify.vectors import check, export, load

    m = export(op, str(tmp_path), max_examples=0, kinds=("golden", "edge"))
    json.dumps(m)  # the manifest is plain JSON (non-finite conventions as strings)
    data = load(str(tmp_path))
    assert [c.case_id for c in data["cases"]] == [c["id"] for c in m["cases"]]
    res = check(str(tmp_path))
    assert res["passed"], res["lines"]
