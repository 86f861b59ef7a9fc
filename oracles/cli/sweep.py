"""``refimpl sweep GRID``: verify a grid of candidates on dask.distributed into one merged report.

Exit status 0 only if every group (op, candidate, conventions) conforms; 1 if anything does not (or a task
has no result); 2 on a usage error (a malformed grid, an unknown op/adapter/convention, dask not installed).
"""
from __future__ import annotations

import os
import sys

_EPILOG = """\
The grid file (TOML or JSON) names the candidates (function, op(s), adapter, conventions, domain) and the
dtypes, size classes and seeds; examples/sweep.toml is a complete one.  Each case is one dask task.
Results go to one JSON file per key (op, candidate, conventions, dtype, case id, seed, library version) in
--results: a rerun skips what is done (--rerun-failed redoes failures and errors).  The merged report is
written there as report.txt, report.json, report.xml (JUnit) and report.html (one self-contained page).

A worker that dies loses only its case: the case is retried once on a fresh worker, then reported as that
case's error (attempts are counted in --results, which the workers must share: the embedded cluster's always
do; for a --scheduler whose workers run elsewhere the scheduler's distributed.scheduler.allowed-failures
decides alone).  With --scheduler, workers must be able to import the candidates and refimpl.

--grad is not available yet (the gradient issue is open): the sweep verifies forward outputs only.
Needs dask.distributed: pip install 'refimpl[sweep]'."""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("sweep", help="verify a grid of candidates on dask.distributed (resumable; one merged report)",
                       description="Run `refimpl verify` over a grid (ops x candidates x conventions x dtypes x size "
                                   "classes x seeds), each case an independent dask.distributed task.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", metavar="GRID", help="the grid file (.toml or .json)")
    p.add_argument("--results", default="sweep-results", metavar="DIR",
                   help="the results folder (one JSON per result key; the merged reports; default ./sweep-results)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing dask scheduler (tcp://host:8786); default: an embedded LocalCluster")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="embedded cluster: the number of single-threaded worker processes (default: one per core)")
    p.add_argument("--threads", action="store_true",
                   help="embedded cluster: run the workers as threads of this process (no process isolation: "
                        "a candidate that crashes takes the sweep with it)")
    p.add_argument("--rerun-failed", action="store_true", help="rerun the tasks whose stored result failed or erred")
    p.add_argument("--op", action="append", default=[], metavar="OP", help="run only this op (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the tasks (and which are done) without running them")
    p.add_argument("--report", default="text", choices=["text", "json", "junit", "html"],
                   help="the merged report's format on stdout (all four are written to --results)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--no-plots", action="store_true", help="no heatmaps of failing cases (matplotlib is optional)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line per finished task (on stderr)")
    p.add_argument("--verbose", "-v", action="store_true", help="text report: show passing cases too")
    p.set_defaults(func=run)


def run(args) -> int:
    from oracles.cli.verify import candidate_path

    candidate_path()
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("refimpl sweep: dask.distributed is not installed (pip install 'refimpl[sweep]' or "
              "pip install 'dask[distributed]')", file=sys.stderr)
        return 2
    from oracles.sweep import ResultStore, expand, load_grid, merge, run_sweep, to_html, to_json, to_junit, to_text
    from oracles.sweep import write_reports

    if args.workers is not None and args.workers < 1:
        print(f"refimpl sweep: --workers: expected an integer >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        grid = load_grid(args.grid)
        if not args.scheduler:  # the embedded cluster's workers import what this process can: check it now
            from oracles.verify import resolve_candidate

            for c in grid.candidates:
                resolve_candidate(c.function)
        tasks, notes = expand(grid, ops=args.op or None)
    except (OSError, ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"refimpl sweep: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not tasks:
        print("refimpl sweep: the grid has no task" + (f" for --op {', '.join(args.op)}" if args.op else ""),
              file=sys.stderr)
        return 2
    store = ResultStore(args.results)
    if args.dry_run:
        for t in tasks:
            rec = store.load(t.op, t.hash)
            state = rec["status"] if rec else "todo"
            print(f"{state:5s} {t.op} <- {t.label} {t.dtype} {t.size_class}:{t.case_id} seed {t.seed} "
                  f"[{t.hash}]")
        return 0

    def progress(i, n, rec):
        if not args.quiet:
            print(f"[{i}/{n}] {rec['status']:5s} {rec['op']} <- {rec['label']} {rec['dtype']} "
                  f"{rec['size_class']}:{rec['case_id']} seed {rec['seed']}", file=sys.stderr, flush=True)

    try:
        result = run_sweep(tasks, store, scheduler=args.scheduler, workers=args.workers, processes=not args.threads,
                           rerun_failed=args.rerun_failed, progress=progress, plots=not args.no_plots)
    except OSError as exc:  # the scheduler cannot be reached
        print(f"refimpl sweep: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    groups = merge(tasks, result.records)
    paths = write_reports(args.results, groups, result, notes, verbose=args.verbose)
    render = {"text": lambda: to_text(groups, result, notes, verbose=args.verbose),
              "json": lambda: to_json(groups, result, notes), "junit": lambda: to_junit(groups),
              "html": lambda: to_html(groups, result, notes)}[args.report]
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(render())
        print(to_text(groups, result, notes).splitlines()[0])
    else:
        sys.stdout.write(render())
    print(f"reports: {', '.join(os.path.relpath(p) for p in paths.values())}", file=sys.stderr)
    ok = all(g.report.passed and not g.missing for g in groups)
    return 0 if ok else 1
