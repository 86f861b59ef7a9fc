"""``refimpl vectors export --op OP --out DIR`` and ``refimpl vectors check DIR``: golden vectors for ports."""
from __future__ import annotations

import sys

from oracles.cli.verify import candidate_path, parse_conventions, positive_seconds


def register(sub) -> None:
    p = sub.add_parser("vectors", help="export or re-check golden test vectors (npz + JSON manifest)")
    vs = p.add_subparsers(dest="vectors_command", metavar="ACTION")
    e = vs.add_parser("export", help="write inputs, float64 oracle outputs and bounds for an op")
    e.add_argument("--op", required=True)
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--conv", action="append", default=[], metavar="NAME=VALUE", help="a convention (repeatable)")
    e.add_argument("--max-examples", type=int, default=5, help="random cases besides the golden and edge ones")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_export)
    c = vs.add_parser("check", help="re-verify a vectors directory (and optionally a candidate on it)")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--candidate", default=None, metavar="MODULE:FUNCTION", help="also verify this function on the vectors")
    c.add_argument("--adapter", default=None)
    c.add_argument("--dtype", default="float64")
    c.add_argument("--framework", default=None)
    c.add_argument("--timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
                   help="time limit of each call of the candidate (default 60)")
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_export(args) -> int:
    from oracles.verify.vectors import export

    try:
        conv = parse_conventions(args.conv, args.op)
        m = export(args.op, args.out, conventions=conv, max_examples=args.max_examples, seed=args.seed)
    except (ValueError, TypeError) as exc:
        print(f"refimpl vectors export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(m['cases'])} cases of {m['op']} (conventions {m['conventions']}) to {args.out}")
    return 0


def run_check(args) -> int:
    from oracles.verify import resolve_candidate
    from oracles.verify.vectors import check

    candidate_path()
    try:
        cand = resolve_candidate(args.candidate) if args.candidate else None
        kw = {}
        if cand is not None:
            kw = dict(adapter=args.adapter, dtype=args.dtype.split(","), framework=args.framework,
                      candidate_name=args.candidate, timeout=args.timeout)
        res = check(args.dir, cand, **kw)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        print(f"refimpl vectors check: {exc}", file=sys.stderr)
        return 2
    for line in res["lines"]:
        print(line)
    if res["report"] is not None and not res["report"].passed:
        print(res["report"].to_text())
    print("all vectors check" if res["passed"] else "vectors check FAILED")
    return 0 if res["passed"] else 1
