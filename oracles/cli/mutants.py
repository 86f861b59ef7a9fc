"""``refimpl mutants``: run the mutant corpus through ``verify`` at default settings; print the kill rate."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("mutants", help="verify every mutant in the corpus; print the kill rate per op")
    p.add_argument("--op", default=None, help="only this op (or op prefix, e.g. ssm)")
    p.add_argument("--name", action="append", default=None, help="only this mutant (repeatable)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--json", metavar="FILE", help="also write every result as JSON to FILE")
    p.add_argument("--verbose", "-v", action="store_true", help="print the verdict of every mutant, killed too")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grad", action="store_true", help="only the backward mutants (explicit backwards judged by "
                   "verify --grad); by default both kinds run, counted apart")
    g.add_argument("--no-grad", action="store_true", help="only the forward mutants")
    p.set_defaults(func=run)


def run(args) -> int:
    from oracles.mutants import all_mutants, import_errors, kill_table, run_mutants

    kinds = ("backward",) if args.grad else (("forward",) if args.no_grad else ("forward", "backward"))
    if args.list:
        for m in all_mutants(args.op):
            if m.kind in kinds:
                print(f"{m.key:60s} [{m.kind}] {m.doc}")
        for mod, err in import_errors().items():
            print(f"(mutant module {mod} unavailable: {err})")
        return 0
    results = run_mutants(args.op, names=args.name, kinds=kinds)
    for r in results:
        if args.verbose or not r.killed:
            mark = "killed  " if r.killed else "SURVIVED"
            print(f"{mark} {r.mutant.key} [{r.mutant.kind}]: {r.mutant.doc}")
            print(f"         {r.error or r.verdict}")
    table = kill_table(results)
    print()
    print(f"{'op':34s} {'mutants':>7s} {'killed':>7s} {'rate':>7s} {'forward':>9s} {'backward':>9s}")
    for t in table:
        print(f"{t['op']:34s} {t['mutants']:7d} {t['killed']:7d} {t['rate']:7.1%} "
              f"{t['forward_killed']:>4d}/{t['forward']:<4d} {t['backward_killed']:>4d}/{t['backward']:<4d}")
    n, k = len(results), sum(r.killed for r in results)
    nf = sum(r.mutant.kind == "forward" for r in results)
    kf = sum(r.killed for r in results if r.mutant.kind == "forward")
    print(f"\n{n} mutants, {k} killed, {n - k} survived ({(k / n if n else 0):.1%} killed): "
          f"forward {kf}/{nf}, backward {k - kf}/{n - nf}")
    errs = import_errors()
    for mod, err in errs.items():
        print(f"(mutant module {mod} unavailable: {err})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": [r.to_dict() for r in results], "per_op": table}, fh, indent=1, default=str)
    return 0 if (n and k == n and not errs) else 1
