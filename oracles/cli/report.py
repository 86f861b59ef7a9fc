"""``refimpl report``: every algorithm, every view and backend, against its oracle."""
from __future__ import annotations

import json
import math
import sys


def register(sub) -> None:
    p = sub.add_parser("report", help="run the conformance report on embedded default inputs")
    p.add_argument("--json", metavar="FILE", help="also write the rows as a JSON list to FILE")
    p.add_argument("--select", metavar="PREFIX", help="only rows whose op starts with PREFIX (e.g. ssm.discretize)")
    p.add_argument("--verbose", "-v", action="store_true", help="print where each bound comes from")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="also write the figures (HiPPO reconstruction, FAVOR+ error vs m, err/bound vs L, S4/S4D "
                        "kernels) as PNG files into DIR (needs matplotlib: pip install 'refimpl[plot]')")
    p.set_defaults(func=run)


def _fmt(x: float) -> str:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.2e}"


def _result(r) -> str:
    if getattr(r, "skipped", ""):
        return "SKIP"
    return "pass" if r.passed else "FAIL"


def _failed(r) -> bool:
    """A failing row: not passed and not skipped (a skipped row is listed with its reason instead)."""
    return not r.passed and not getattr(r, "skipped", "")


def format_table(rows, verbose: bool = False) -> str:
    headers = ["op", "impl", "dtype", "max_abs_err", "max_rel_err", "bound", "result", "time_s"]
    body = []
    for r in rows:
        body.append([r.op, r.impl, r.dtype, _fmt(r.max_abs_err), _fmt(r.max_rel_err), _fmt(r.bound),
                     _result(r), f"{r.time_s:.4f}"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    for r, b in zip(rows, body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths)))
        if getattr(r, "skipped", ""):
            lines.append(f"    skipped: {r.skipped}")
        elif verbose or not r.passed:
            if r.bound_source:
                lines.append(f"    bound: {r.bound_source}")
            if r.note:
                lines.append(f"    note: {r.note}")
    return "\n".join(lines)


def run(args) -> int:
    from oracles.checks import run_all

    if getattr(args, "plots", None):
        from oracles.cli._plots import require_matplotlib

        try:  # before the rows run: a missing extra is a usage error, said at once
            require_matplotlib()
        except ImportError as exc:
            print(f"refimpl report: {exc}", file=sys.stderr)
            return 2
    rows = run_all(select=args.select)
    print(format_table(rows, verbose=args.verbose))
    n_fail = sum(_failed(r) for r in rows)
    n_skip = sum(bool(getattr(r, "skipped", "")) for r in rows)
    print(f"\n{len(rows)} rows, {len(rows) - n_fail - n_skip} passed, {n_fail} failed, {n_skip} skipped")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in rows], fh, indent=1, default=str)
    if getattr(args, "plots", None):
        from oracles.cli._plots import write_plots

        for path in write_plots(args.plots):
            print(f"plot: {path}")
    if not rows:
        print("no rows: nothing was checked", file=sys.stderr)
        return 1
    return 1 if n_fail else 0
