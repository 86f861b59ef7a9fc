"""``refimpl sweep``: a tiny grid on a LocalCluster of 2 worker processes (and once on threads), resumability,
``--rerun-failed``, a failing candidate reported per case, the merged reports (HTML parsed, JUnit parsed), and
workers that die: once (the case is retried and gets its result) and always (reported as that case's error).

The candidates live in a module written to a temporary folder that is put on ``sys.path`` before the cluster
starts (spawned worker processes inherit it).  A marker file lets the ``dies_once`` candidate kill its worker
process (``os._exit``) on its first call only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

distributed = pytest.importorskip("distributed")

from oracles.cli import main  # noqa: E402
from oracles.sweep import ResultStore, expand, merge, parse_grid, run_sweep, to_html, to_junit, to_text  # noqa: E402
from oracles.sweep.run import open_client  # noqa: E402

CANDIDATES = '''
import os
import numpy as np
from refimpl.attention.fast_weights import fast_weight_memory

MARKER = {marker!r}


def good(a, b_vec, x_read, initial_state=None, return_final_state=True):
    return fast_weight_memory(a, b_vec, x_read, initial_state=initial_state, return_final_state=return_final_state)


def off_by_eps(a, b_vec, x_read, initial_state=None, return_final_state=True):
    """Wrong on sequences longer than 3: y off by 1e-3 of its scale."""
    y, W = fast_weight_memory(a, b_vec, x_read, initial_state=initial_state, return_final_state=True)
    if y.shape[1] > 3:
        y = y + 1e-3 * (1 + np.abs(y))
    return (y, W) if return_final_state else y


def dies_once(a, b_vec, x_read, initial_state=None, return_final_state=True):
    if not os.path.exists(MARKER):
        open(MARKER, "w").close()
        os._exit(3)  # the worker process dies on the first attempt only
    return good(a, b_vec, x_read, initial_state, return_final_state)


def always_dies(a, b_vec, x_read, initial_state=None, return_final_state=True):
    os._exit(4)
'''

OP = "attention.fast_weights"


def _grid(function, *, sizes=None, probes=False, dtypes=("float64",), conventions=({"use_state": True},)):
    return parse_grid({
        "sweep": {"seeds": [0], "dtypes": list(dtypes), "probes": probes, "timeout": 30},
        "sizes": sizes or {"default": {"kinds": ["golden", "edge"]}},
        "candidates": [{"function": function, "op": OP, "adapter": "refimpl", "conventions": list(conventions)}],
    })


@pytest.fixture(scope="module")
def cand_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep_candidates")
    marker = str(d / "died-once.marker")
    (d / "sweep_cands_j.py").write_text(textwrap.dedent(CANDIDATES.format(marker=marker)))
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    sys.modules.pop("sweep_cands_j", None)


@pytest.fixture(scope="module")
def client(cand_dir):
    """An embedded LocalCluster of 2 single-threaded worker processes (as `refimpl sweep` starts by default)."""
    c, cluster = open_client(workers=2, processes=True)
    yield c
    c.close()
    cluster.close()


def test_tiny_grid_on_two_worker_processes_then_resume(client, tmp_path):
    grid = _grid("sweep_cands_j:good", probes=True, dtypes=("float64", "float32"),
                 sizes={"default": {"kinds": ["golden", "edge"]}, "tiny": {"length": 7, "count": 2}})
    grid.candidates[0].dtypes = ("float32",)  # a candidate's own dtypes replace the grid's
    tasks, notes = expand(grid)
    n_cases = 5 + 2  # golden-small + 4 edge cases, and the length class's two
    assert len(tasks) == n_cases + 1 and not notes and {t.dtype for t in tasks} == {"float32"}
    store = ResultStore(str(tmp_path / "results"))
    run = run_sweep(tasks, store, client=client)
    assert (run.total, run.ran, run.skipped_done) == (8, 8, 0)
    assert run.counts == {"pass": 8}, run.counts
    workers = {r["worker"] for r in run.records.values()}
    assert all(w and w.startswith("tcp://") for w in workers)  # ran in worker processes, not in this one
    assert {r["worker_pid"] for r in run.records.values()}.isdisjoint({os.getpid()})
    files = [f for _, _, fs in os.walk(store.root) for f in fs if f.endswith(".json")]
    assert len(files) == 8
    rec = json.load(open(store.path(OP, tasks[0].hash)))
    assert set(rec["key"]) == {"op", "candidate", "conventions", "dtype", "case", "seed", "version"}
    assert rec["key"]["version"].startswith("refimpl ")
    # the merged report: one group, every case and the probes
    (g,) = merge(tasks, run.records)
    assert g.report.passed and len(g.report.cases) == n_cases and len(g.report.probes) == 2
    assert {c.case_id for c in g.report.cases} >= {"golden-small", "tiny-L7-0", "tiny-L7-1"}
    assert {c.shapes["a"][1] for c in g.report.cases if c.case_id.startswith("tiny")} == {7}
    # resumable: a second run runs nothing
    again = run_sweep(tasks, store, client=client)
    assert (again.ran, again.skipped_done) == (0, 8) and again.counts == {"pass": 8}


def test_failing_candidate_per_case_and_rerun_failed(client, tmp_path):
    grid = _grid("sweep_cands_j:off_by_eps")
    tasks, _ = expand(grid)
    store = ResultStore(str(tmp_path / "results"))
    run = run_sweep(tasks, store, client=client)
    by_case = {r["case_id"]: r["status"] for r in run.records.values()}
    # golden-small (L=5), edge-square (L=6) and edge-long (L=33) fail; L = 0 and L = 1 pass
    assert by_case == {"golden-small": "fail", "edge-L0": "pass", "edge-L1": "pass", "edge-square": "fail",
                       "edge-long": "fail"}
    (g,) = merge(tasks, run.records)
    text = to_text([g], run)
    assert "DOES NOT CONFORM" in text and "[FAIL] golden-small[float64]" in text and "2/5 cases" in text
    junit = ET.fromstring(to_junit([g]).split("?>", 1)[1])
    assert junit.get("tests") == "5" and junit.get("failures") == "3"
    # a rerun skips everything; --rerun-failed redoes exactly the three failures
    assert run_sweep(tasks, store, client=client).ran == 0
    redo = run_sweep(tasks, store, client=client, rerun_failed=True)
    assert (redo.ran, redo.skipped_done) == (3, 2) and redo.counts == {"pass": 2, "fail": 3}


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.tables, self.cells, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append(dict(attrs).get("id"))
        if tag in ("td", "th"):
            self._in = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._in is not None:
            self.cells.append("".join(self._in).strip())
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self._in.append(data)


def test_killed_worker_is_retried_and_always_dying_is_an_error(client, cand_dir, tmp_path):
    marker = cand_dir / "died-once.marker"
    if marker.exists():
        marker.unlink()
    one = {"default": {"kinds": ["golden"]}}
    tasks, _ = expand(_grid("sweep_cands_j:dies_once", sizes=one))
    dying, _ = expand(_grid("sweep_cands_j:always_dies", sizes=one))
    assert len(tasks) == len(dying) == 1
    store = ResultStore(str(tmp_path / "results"))
    run = run_sweep(tasks + dying, store, client=client)
    assert marker.exists()  # the first attempt ran and killed its worker
    once = run.records[tasks[0].hash]
    assert once["status"] == "pass", once  # retried on a fresh worker: a result, not an error
    dead = run.records[dying[0].hash]
    assert dead["status"] == "error" and "died on each of its 2 attempts" in dead["case"]["error"], dead
    # the merged HTML page: parses, holds the summary table with one row per group, names the dead case
    groups = merge(tasks + dying, run.records)
    page = to_html(groups, run)
    p = _Collect()
    p.feed(page)
    p.close()
    assert "summary" in p.tables and "svg" in p.tags
    assert "sweep_cands_j:always_dies" in p.cells and "does not conform" in p.cells and "conforms" in p.cells
    assert "died on each of its 2 attempts" in page
    _check_in_headless_browser(page, tmp_path)


def _check_in_headless_browser(page: str, tmp_path) -> None:
    """Where a Chromium is installed: the page loads and its DOM, as the browser built it, holds the table."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        return  # (CI has no browser; the page was parsed with html.parser above)
    path = tmp_path / "report.html"
    path.write_text(page)
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    assert '<table id="summary">' in dom and "<svg" in dom and "always_dies" in dom


def test_cli_on_threads_writes_all_reports(tmp_path, cand_dir, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent(f"""
        [sweep]
        dtypes = ["float64"]
        probes = false
        [sizes.default]
        kinds = ["golden", "edge"]
        [[candidates]]
        function = "sweep_cands_j:off_by_eps"
        op = "{OP}"
        adapter = "refimpl"
        conventions = {{ use_state = "False" }}
        """))
    res = tmp_path / "res"
    rc = main(["sweep", str(grid), "--results", str(res), "--threads", "--workers", "2", "-q"])
    out = capsys.readouterr()
    assert rc == 1 and "DOES NOT CONFORM" in out.out
    assert {"report.txt", "report.json", "report.xml", "report.html"} <= set(os.listdir(res))
    doc = json.loads((res / "report.json").read_text())
    assert doc["run"]["ran"] == 5 and doc["reports"][0]["conventions"]["use_state"] is False
    assert sorted(r["fail"] for r in doc["table"]) == [3]
    ET.parse(res / "report.xml")
    # resumed from the CLI: nothing runs; --dry-run lists the stored statuses
    assert main(["sweep", str(grid), "--results", str(res), "--threads", "-q", "--report", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["run"]["ran"] == 0
    assert main(["sweep", str(grid), "--results", str(res), "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 5 and sum(line.startswith("fail") for line in listed) == 3


def test_cli_on_an_existing_scheduler_address(client, tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"sweep": {"probes": False}, "sizes": {"default": {"kinds": ["golden"]}},
                                "candidates": [{"function": "sweep_cands_j:good", "op": OP, "adapter": "refimpl"}]}))
    address = client.scheduler.address
    rc = main(["sweep", str(grid), "--results", str(tmp_path / "r"), "--scheduler", address, "-q",
               "--report", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["passed"] and doc["run"]["ran"] == 1
    assert client.status == "running"  # the sweep's own client left the cluster as it found it


@pytest.mark.parametrize("bad, msg", [
    ({"candidates": []}, "at least one"),
    ({"candidates": [{"function": "m:f"}]}, "exactly one of op"),
    ({"candidates": [{"function": "nofunc", "op": OP}]}, "MODULE:FUNCTION"),
    ({"sweep": {"dtypes": ["float8"]}, "candidates": [{"function": "m:f", "op": OP}]}, "float8"),
    ({"sizes": {"x": {"length": -1}}, "candidates": [{"function": "m:f", "op": OP}]}, "length"),
    ({"candidates": [{"function": "m:f", "op": OP, "sizes": ["nope"]}]}, "no size class"),
    ({"sweep": {"grad": True}, "candidates": [{"function": "m:f", "op": OP}]}, "unknown entries"),
])
def test_bad_grid_is_a_clear_error(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_grid(bad)


def test_cli_usage_errors(tmp_path, cand_dir, capsys):
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"candidates": [{"function": "sweep_cands_j:good", "op": "no.such_op"}]}))
    assert main(["sweep", str(grid), "--results", str(tmp_path / "r")]) == 2
    assert "no.such_op" in capsys.readouterr().err
    grid.write_text(json.dumps({"candidates": [{"function": "sweep_no_such_module_j:f", "op": OP}]}))
    assert main(["sweep", str(grid), "--results", str(tmp_path / "r")]) == 2
    assert "sweep_no_such_module_j" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --grad is not available yet (the gradient issue is open)
        main(["sweep", str(grid), "--grad"])
