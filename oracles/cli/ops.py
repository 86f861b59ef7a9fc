"""``refimpl ops``: the op specs the verify harness knows, with their conventions, declarable domain and adapters."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("ops", help="list the ops `refimpl verify` knows (conventions, declarable domain, adapters)")
    p.add_argument("op", nargs="?", default=None, help="show one op only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from oracles.verify import get_op, list_ops
    from oracles.verify.registry import import_errors

    specs = [get_op(args.op)] if args.op else list_ops()
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=1, default=str))
        return 0
    for s in specs:
        print(s.describe())
        print()
    errs = import_errors()
    for mod, err in errs.items():
        print(f"(op module {mod} unavailable: {err})")
    return 0
