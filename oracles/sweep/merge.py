"""The merged report: the sweep's results regrouped into :class:`oracles.verify.Report`\\ s, one per (op,
candidate, adapter, framework, conventions, domain), so that verify's own writers (text, JSON, JUnit XML)
render them; :func:`to_text`, :func:`to_json` and :func:`to_junit` put the groups into one document.

Case names in the merged reports: the harness's case id (``golden-small``, ``random-3``), prefixed with its
size class when that is not ``default`` (``medium:random-3``; a length class's cases are named by it already,
``long-L4096-0``) and suffixed ``@seed N`` when the group ran more than one seed and the case is drawn
(random, hypothesis, or a length class).
"""
from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from oracles.sweep.grid import DEFAULT_SIZE, Task

__all__ = ["Group", "merge", "case_from_dict", "to_text", "to_json", "to_junit", "summary_rows"]


def _num(v: Any) -> Any:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def _comparison(d: Mapping[str, Any]):
    from oracles.tolerance import Comparison

    names = {f.name for f in dataclasses.fields(Comparison)}
    kw = {k: _num(v) for k, v in d.items() if k in names}
    for k in ("max_abs_index", "max_rel_index", "worst_index", "shape"):
        if kw.get(k) is not None:
            kw[k] = tuple(kw[k])
    return Comparison(**kw)


def case_from_dict(d: Mapping[str, Any]):
    """A :class:`oracles.verify.CaseResult` from its ``to_dict()`` (the error maps keep their axis profiles)."""
    from oracles.verify.diagnosis import ErrorMap
    from oracles.verify.report import CaseResult, OutputResult

    outs = [OutputResult(o["output"], _comparison(o), baseline_err=_num(o.get("baseline_err")),
                         baseline_multiple=_num(o.get("baseline_multiple")), returned_dtype=o.get("returned_dtype"),
                         precision=o.get("precision")) for o in d.get("outputs", [])]
    maps = [ErrorMap(m["output"], tuple(m["axes"]), tuple(m["shape"]),
                     {k: np.array([float(_num(x)) for x in v]) for k, v in m["profiles"].items()},
                     nonfinite=m.get("nonfinite", 0)) for m in d.get("error_maps", [])]
    return CaseResult(d["case_id"], d["kind"], d["dtype"], dict(d.get("conventions") or {}), dict(d.get("shapes") or {}),
                      d.get("seed"), outputs=outs, error=d.get("error"), skipped=d.get("skipped"),
                      diagnosis=d.get("diagnosis") or "", repro=d.get("repro"), note=d.get("note") or "",
                      warnings=list(d.get("warnings") or []), error_maps=maps, plot=d.get("plot"),
                      sizes=dict(d.get("sizes") or {}), raised=d.get("raised"))


def _probe_from_dict(d: Mapping[str, Any]):
    from oracles.verify.report import ProbeResult

    names = {f.name for f in dataclasses.fields(ProbeResult)}
    return ProbeResult(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class Group:
    """One merged report and the sweep records behind each of its cases (in the same order)."""

    report: Any  # oracles.verify.Report
    label: str
    records: List[Dict[str, Any]]
    missing: int = 0  # tasks of the group without a result (an interrupted sweep)


def _display_id(task: Task, kind: str, multi_seed: bool) -> str:
    cid = task.case_id
    if task.length is None and task.size_class != DEFAULT_SIZE:
        cid = f"{task.size_class}:{cid}"
    if multi_seed and (task.length is not None or kind in ("random", "hypothesis")):
        cid += f"@seed{task.seed}"
    return cid


def merge(tasks: Sequence[Task], records: Mapping[str, Dict[str, Any]]) -> List[Group]:
    """Regroup the records of ``tasks`` (``records``: hash -> record) into one Report per group, in task order."""
    from oracles.verify.harness import DTYPES
    from oracles.verify.report import Report

    order: List[Tuple[str, ...]] = []
    by: Dict[Tuple[str, ...], List[Task]] = {}
    for t in tasks:
        if t.group not in by:
            order.append(t.group)
            by[t.group] = []
        by[t.group].append(t)
    groups: List[Group] = []
    for g in order:
        ts = by[g]
        first = ts[0]
        dtypes = [d for d in DTYPES if any(t.dtype == d for t in ts)]
        seeds = sorted({t.seed for t in ts})
        classes = list(dict.fromkeys(t.size_class for t in ts if not t.is_probes))
        rep = Report(first.op, first.function, first.adapter, first.framework, dict(first.conventions), dtypes,
                     seed=seeds[0] if len(seeds) == 1 else ", ".join(map(str, seeds)),
                     profile="size classes " + ", ".join(classes))
        rep.domain = dict(first.domain)
        grp = Group(rep, first.label, [])
        ts = sorted(ts, key=lambda t: (dtypes.index(t.dtype), t.is_probes))
        for t in ts:
            rec = records.get(t.hash)
            if rec is None:
                grp.missing += 1
                continue
            grp.records.append(rec)
            rep.add_notes(rec.get("notes") or [])
            if t.is_probes:
                rep.probes.extend(_probe_from_dict(p) for p in rec.get("probes", []))
            elif rec.get("case"):
                c = case_from_dict(rec["case"])
                c.case_id = _display_id(t, c.kind, len(seeds) > 1)
                rep.cases.append(c)
        if grp.missing:
            rep.add_notes([f"{grp.missing} task(s) of this group have no result yet (an interrupted sweep: "
                           "run it again to finish them)"])
        groups.append(grp)
    return groups


def _status_counts(grp: Group) -> Dict[str, Dict[str, int]]:
    """Per dtype: pass / fail / error / skip counts of the cases, and the probes passing out of run."""
    out: Dict[str, Dict[str, int]] = {}
    for c in grp.report.cases:
        s = "skip" if c.skipped else ("error" if c.error is not None else ("pass" if c.passed else "fail"))
        d = out.setdefault(c.dtype, {"pass": 0, "fail": 0, "error": 0, "skip": 0, "probes": 0, "probes_pass": 0})
        d[s] += 1
    for p in grp.report.probes:
        d = out.setdefault(p.dtype or "float64", {"pass": 0, "fail": 0, "error": 0, "skip": 0, "probes": 0,
                                                  "probes_pass": 0})
        d["probes"] += 1
        d["probes_pass"] += bool(p.passed)
    return out


def summary_rows(groups: Sequence[Group]) -> List[Dict[str, Any]]:
    """One row per (group, dtype): the counts and the worst err/bound (the summary table's rows)."""
    rows = []
    for g in groups:
        r = g.report
        for dtype, n in _status_counts(g).items():
            ratios = [o.comparison.worst_ratio for c in r.cases if c.dtype == dtype for o in c.outputs]
            worst = max(ratios) if ratios else None
            ok = n["fail"] == 0 and n["error"] == 0 and n["probes_pass"] == n["probes"]
            rows.append({"op": r.op, "candidate": g.label, "adapter": r.adapter, "framework": r.framework,
                         "conventions": r.conventions, "domain": r.domain, "dtype": dtype, **n,
                         "worst_ratio": worst, "verdict": "conforms" if ok else "does not conform"})
    return rows


def _header(groups: Sequence[Group], run: Any = None, notes: Sequence[Mapping[str, Any]] = ()) -> List[str]:
    passed = sum(g.report.passed and not g.missing for g in groups)
    lines = [f"refimpl sweep: {passed}/{len(groups)} (op, candidate, conventions) groups conform"]
    if run is not None:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(run.counts.items()))
        lines.append(f"{run.total} tasks: {run.skipped_done} already done (skipped), {run.ran} run now "
                     f"in {run.seconds:.1f} s; results: {counts or 'none'}")
    for line in dict.fromkeys(f"not run: {n['op']} <- {n['candidate']}: {n['note']}" for n in notes):
        lines.append(line)
    return lines


def to_text(groups: Sequence[Group], run: Any = None, notes: Sequence[Mapping[str, Any]] = (),
            verbose: bool = False) -> str:
    parts = ["\n".join(_header(groups, run, notes))]
    parts += [g.report.to_text(verbose=verbose) for g in groups]
    return "\n\n".join(parts) + "\n"


def to_json(groups: Sequence[Group], run: Any = None, notes: Sequence[Mapping[str, Any]] = ()) -> str:
    from oracles.verify.report import _clean

    doc = {"summary": _header(groups, run, notes)[0], "passed": all(g.report.passed and not g.missing for g in groups),
           "run": None if run is None else {"total": run.total, "skipped_done": run.skipped_done, "ran": run.ran,
                                            "counts": run.counts, "seconds": run.seconds},
           "not_run": list(notes), "table": summary_rows(groups),
           "reports": [dict(g.report.to_dict(), label=g.label, missing=g.missing,
                            keys=[r["key"] for r in g.records]) for g in groups]}
    return json.dumps(_clean(doc), indent=1, default=str) + "\n"


def to_junit(groups: Sequence[Group]) -> str:
    """One ``<testsuites>``: each group's suite from :meth:`Report.to_junit`, named by op and candidate."""
    root = ET.Element("testsuites", name="refimpl sweep")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for i, g in enumerate(groups):
        doc = ET.fromstring(g.report.to_junit().split("?>", 1)[1])
        for suite in doc.findall("testsuite"):
            conv = ",".join(f"{k}={v}" for k, v in sorted(g.report.conventions.items()))
            suite.set("name", f"refimpl.sweep.{g.report.op}[{g.label}; {conv}]")
            for k in totals:
                totals[k] += int(suite.get(k, 0))
            root.append(suite)
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def worst_ratio_finite(v: Optional[float]) -> Optional[float]:
    return v if v is not None and math.isfinite(v) else None
