"""``python -m bench``: run the named workloads, print the table, write JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _fmt_s(s: float) -> str:
    if s != s:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def format_results(results) -> str:
    lines = []
    for res in results:
        lines.append("")
        lines.append(f"== {res['name']}: {res['title']}")
        lines.append(f"   shapes: {res['shapes']}; dtype {res['dtype']}")
        ours = res["ours"]
        lines.append(f"   {'impl':38s} {'median':>10s}  {'ours/impl':>9s}  {'speedup':>8s}  check")
        t_ours = next((t["median_s"] for t in res["timings"] if t["impl"] == ours), float("nan"))
        for t in res["timings"]:
            ratio = t_ours / t["median_s"] if t["median_s"] else float("nan")
            speed = t["median_s"] / t_ours if t_ours else float("nan")
            ok = "ok" if t["passed"] else "WRONG"
            lines.append(f"   {t['impl']:38s} {_fmt_s(t['median_s']):>10s}  {ratio:9.3f}  {speed:7.1f}x  {ok}")
        for k, v in res.get("roofline", {}).items():
            lines.append(f"   roofline: {k} = {v:.3g}" if isinstance(v, float) else f"   roofline: {k} = {v}")
        for tgt in res.get("targets", []):
            lines.append(f"   target: {tgt['what']}: measured {tgt['measured']:.3g} (need {tgt['need']}) -> "
                         f"{'MET' if tgt['met'] else 'NOT MET'}")
        for note in res.get("notes", []):
            lines.append(f"   note: {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from bench import harness, roofline, workloads

    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--workloads", default="all", help="comma-separated names (" + ",".join(workloads.WORKLOADS) + ")")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run; ratios not comparable)")
    p.add_argument("--json", default="bench/results/bench.json", help="where to write the JSON results")
    args = p.parse_args(argv)
    names = list(workloads.WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    unknown = [n for n in names if n not in workloads.WORKLOADS]
    if unknown:
        p.error(f"unknown workloads {unknown}; known: {list(workloads.WORKLOADS)}")
    from refimpl._numba import warm_all

    warm_all()
    info = harness.machine_info()
    print("machine:", json.dumps(info))
    limits = roofline.measure()
    print("limits:", json.dumps({k: round(v, 3) for k, v in limits.items()}))
    results = []
    for n in names:
        before = roofline.canary()
        t0 = time.perf_counter()
        res = workloads.WORKLOADS[n](limits=limits, repeats=args.repeats, quick=args.quick)
        res["wall_s"] = time.perf_counter() - t0
        after = roofline.canary()
        # the machine is shared: an sgemm canary before and after each workload says whether it stayed the same
        res["canary_gflops"] = {"before": before, "after": after}
        res.setdefault("notes", []).append(
            f"canary (512^3 float32 sgemm): {before:.1f} GFLOP/s before, {after:.1f} after"
            + ("" if min(before, after) >= 0.8 * max(before, after) else
               " -- the machine's speed changed by more than 20% during this workload: ratios are suspect"))
        results.append(res)
        print(format_results([res]), flush=True)
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"machine": info, "limits": limits, "results": results}, fh, indent=1, default=str)
    print(f"\nwrote {args.json}")
    bad = [t["impl"] for r in results for t in r["timings"] if not t["passed"]]
    if bad:
        print(f"results that failed their check (times not meaningful): {bad}", file=sys.stderr)
    return 0
