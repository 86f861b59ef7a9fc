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
    from oracles.verify.registry import get_grad, import_errors

    specs = [get_op(args.op)] if args.op else list_ops()
    if args.json:
        rows = []
        for s in specs:
            d = s.to_dict()
            g = get_grad(s.name)
            d["gradient"] = ({"wrt": list(g.wrt), "outputs": None if g.outputs is None else list(g.outputs),
                              "notes": g.notes} if g is not None else None)
            rows.append(d)
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for s in specs:
        print(s.describe())
        print("  " + grad_line(s.name, get_grad(s.name)))
        print()
    errs = import_errors()
    for mod, err in errs.items():
        print(f"(op module {mod} unavailable: {err})")
    return 0


def grad_line(op: str, g) -> str:
    """``gradient: wrt (a, b_vec, x_read, W0)`` or ``gradient: no gradient oracle``."""
    if g is None:
        return "gradient: no gradient oracle (refimpl verify --grad refuses this op)"
    outs = f"; the loss pairs outputs {', '.join(g.outputs)}" if g.outputs else ""
    return f"gradient: wrt ({', '.join(g.wrt)}){outs} (refimpl verify --grad)"
