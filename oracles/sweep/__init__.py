"""``refimpl sweep``: verify a grid of ops x candidates x conventions x dtypes x size classes x seeds on
dask.distributed, resumably, into one merged report (text, JSON, JUnit XML, a self-contained HTML page).

* :mod:`~oracles.sweep.grid` -- the grid file (TOML or JSON) and its expansion into one task per case
  (the harness's own case generation, :func:`oracles.verify.generate_cases`);
* :mod:`~oracles.sweep.run` -- each task is :func:`oracles.verify.verify` on one case in one dtype, run as an
  independent dask task (embedded ``LocalCluster`` by default, ``--scheduler ADDRESS`` for an existing one);
* :mod:`~oracles.sweep.store` -- the results folder: one JSON file per key (op, candidate, conventions, dtype,
  case id, seed, library version), written atomically; a rerun skips what is done;
* :mod:`~oracles.sweep.merge` / :mod:`~oracles.sweep.html` -- the merged report.

>>> from oracles.sweep import load_grid, expand, run_sweep, ResultStore, merge, to_text
>>> grid = load_grid("examples/sweep.toml")
>>> tasks, notes = expand(grid)
>>> run = run_sweep(tasks, ResultStore("sweep-results"))
>>> print(to_text(merge(tasks, run.records), run, notes))

Gradients (``--grad``) are not available yet: the gradient issue is open.
"""
from oracles.sweep.grid import Candidate, Grid, SizeClass, Task, expand, load_grid, parse_grid
from oracles.sweep.html import to_html
from oracles.sweep.merge import Group, merge, summary_rows, to_json, to_junit, to_text
from oracles.sweep.run import SweepRun, open_client, run_sweep, run_task
from oracles.sweep.store import ResultStore

__all__ = ["Candidate", "Grid", "SizeClass", "Task", "expand", "load_grid", "parse_grid", "to_html", "Group",
           "merge", "summary_rows", "to_json", "to_junit", "to_text", "SweepRun", "open_client", "run_sweep",
           "run_task", "ResultStore", "write_reports"]


def write_reports(directory: str, groups, run=None, notes=(), verbose: bool = False) -> dict:
    """``report.txt``, ``report.json``, ``report.xml`` (JUnit) and ``report.html`` in ``directory``; their paths."""
    import os

    os.makedirs(directory, exist_ok=True)
    paths = {}
    for fmt, name, text in (("text", "report.txt", lambda: to_text(groups, run, notes, verbose=verbose)),
                            ("json", "report.json", lambda: to_json(groups, run, notes)),
                            ("junit", "report.xml", lambda: to_junit(groups)),
                            ("html", "report.html", lambda: to_html(groups, run, notes))):
        p = os.path.join(directory, name)
        ResultStore._atomic(p, text().encode())
        paths[fmt] = p
    return paths
