"""``refimpl verify MODULE:FUNCTION --op OP``: verify a third-party function against the op's oracle.

Exit status 0 only if every case and probe conforms; 1 if anything does not; 2 on a usage error.
"""
from __future__ import annotations

import json
import sys


def parse_convention(text: str):
    """``name=value`` with ``value`` read as JSON when it parses (``true``, ``0.5``, ``[1, 2]``), else a string."""
    if "=" not in text:
        raise ValueError(f"--conv: expected NAME=VALUE, got {text!r}")
    k, _, v = text.partition("=")
    try:
        val = json.loads(v)
    except json.JSONDecodeError:
        val = v
    if isinstance(val, list):
        val = tuple(val)
    return k.strip(), val


def register(sub) -> None:
    p = sub.add_parser("verify", help="verify a function against an op's oracle (exit 0 only if it conforms)",
                       description="Verify MODULE:FUNCTION against the oracle of --op with derived tolerances.")
    p.add_argument("candidate", metavar="MODULE:FUNCTION", help="the function under test (module:attr[.attr])")
    p.add_argument("--op", required=True, help="the op spec (see `refimpl ops`)")
    p.add_argument("--adapter", default=None, help="a layout adapter of the op (default: its canonical signature)")
    p.add_argument("--conv", action="append", default=[], metavar="NAME=VALUE",
                   help="a convention the function implements (repeatable), e.g. --conv method=bilinear")
    p.add_argument("--dtype", action="append", default=None,
                   help="float64, float32, float16, bfloat16 (repeatable or comma-separated; default float64)")
    p.add_argument("--framework", default=None, help="numpy (default), torch, torch:cuda, jax, cupy")
    p.add_argument("--profile", default="ci", choices=["ci", "thorough"], help="how many random cases (ci 10, thorough 200)")
    p.add_argument("--max-examples", type=int, default=None, help="the number of random cases (overrides --profile)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases")
    p.add_argument("--cases", default="golden,edge,random", metavar="KINDS",
                   help="which cases: a comma-separated subset of golden, edge, random (default: all)")
    p.add_argument("--report", default="text", choices=["text", "json", "junit"], help="report format on stdout")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--save-failures", default=None, metavar="DIR", help="save each failing case (.npz + rerun script)")
    p.add_argument("--verbose", "-v", action="store_true", help="text report: show passing cases too")
    p.set_defaults(func=run)


def run(args) -> int:
    from oracles.verify import resolve_candidate, verify

    try:
        fn = resolve_candidate(args.candidate)
        conv = dict(parse_convention(c) for c in args.conv)
        dtypes = []
        for d in args.dtype or ["float64"]:
            dtypes.extend(x.strip() for x in d.split(",") if x.strip())
        kinds = tuple(k.strip() for k in args.cases.split(",") if k.strip())
        bad = sorted(set(kinds) - {"golden", "edge", "random"})
        if bad or not kinds:
            raise ValueError(f"--cases: expected a subset of golden, edge, random, got {args.cases!r}")
        report = verify(args.op, fn, adapter=args.adapter, conventions=conv, dtype=dtypes, framework=args.framework,
                        profile=args.profile, max_examples=args.max_examples, seed=args.seed, kinds=kinds,
                        save_failures=args.save_failures, candidate_name=args.candidate)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"refimpl verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    text = report.render(args.report, verbose=args.verbose)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        print(report.summary())
    else:
        print(text)
    return 0 if report.passed else 1
