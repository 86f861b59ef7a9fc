"""The sweep's HTML page: one self-contained file (inline CSS, inline SVG, PNG heatmaps as base64 data URIs).

* a summary table: one row per (op, candidate, conventions, dtype) with pass / fail / error / skip counts,
  the probes, the worst err/bound and the verdict;
* per op, the distribution of err/bound: one dot per (case, output) on a log10 axis, the bound at 0
  (dots right of it fail; NaN/Inf and errors drawn at the right edge), one row per candidate group and dtype;
* the failing cases: verify's text for each (error, diagnosis, the error map's sparklines) and, when
  matplotlib was present on the worker, the diagnosis heatmap of err/bound over (channel, time).
"""
from __future__ import annotations

import base64
import datetime
import html
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from oracles.sweep.merge import Group, _header, summary_rows

__all__ = ["to_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc} h3{font-size:1em}
table{border-collapse:collapse;font-size:.85em;width:100%} th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f0f0f0} tr.ok td.v{color:#137333;font-weight:600} tr.bad td.v{color:#b3261e;font-weight:600}
td code{font-size:.95em} td.n{text-align:right;font-variant-numeric:tabular-nums} code,pre{font-size:.8em} pre{background:#f7f7f7;padding:.6em;
overflow-x:auto;border:1px solid #e3e3e3} .muted{color:#666;font-size:.85em} img{max-width:100%;border:1px solid #ddd}
details{margin:.4em 0} summary{cursor:pointer;font-weight:600}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _conv(conv: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(conv.items())) or "defaults"


def _table(groups: Sequence[Group]) -> str:
    head = ("<tr><th>op</th><th>candidate</th><th>adapter</th><th>conventions</th><th>dtype</th><th>pass</th>"
            "<th>fail</th><th>error</th><th>skip</th><th>probes</th><th>worst err/bound</th><th>verdict</th></tr>")
    rows = []
    for r in summary_rows(groups):
        w = r["worst_ratio"]
        ws = "-" if w is None else (f"{w:.3g}" if math.isfinite(w) else _e(w))
        cls = "ok" if r["verdict"] == "conforms" else "bad"
        rows.append(f'<tr class="{cls}"><td><code>{_e(r["op"])}</code></td><td><code>{_e(r["candidate"])}</code></td>'
                    f'<td>{_e(r["adapter"])}</td><td><code>{_e(_conv(r["conventions"]))}</code>'
                    + (f'<br><span class="muted">domain {_e(_conv(r["domain"]))}</span>' if r["domain"] else "")
                    + f'</td><td>{_e(r["dtype"])}</td><td class="n">{r["pass"]}</td><td class="n">{r["fail"]}</td>'
                    f'<td class="n">{r["error"]}</td><td class="n">{r["skip"]}</td>'
                    f'<td class="n">{r["probes_pass"]}/{r["probes"]}</td><td class="n">{ws}</td>'
                    f'<td class="v">{_e(r["verdict"])}</td></tr>')
    return f'<table id="summary">{head}{"".join(rows)}</table>'


LO, HI = -8.0, 3.0  # the log10(err/bound) axis of the distributions


def _svg(op: str, rows: List[Dict[str, Any]]) -> str:
    """One strip per row: a dot per (case, output) at log10(err/bound), clipped to [LO, HI]."""
    lw, pw, rh, top = 420, 560, 22, 24
    width, height = lw + pw + 20, top + rh * len(rows) + 30
    x = lambda v: lw + (min(max(v, LO), HI) - LO) / (HI - LO) * pw  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="err/bound of {_e(op)}" font-family="sans-serif" font-size="11">']
    for t in range(int(LO), int(HI) + 1):
        xt = x(t)
        out.append(f'<line x1="{xt:.1f}" y1="{top - 4}" x2="{xt:.1f}" y2="{top + rh * len(rows)}" '
                   f'stroke="{"#b3261e" if t == 0 else "#e5e5e5"}" stroke-width="{2 if t == 0 else 1}"/>')
        out.append(f'<text x="{xt:.1f}" y="{top + rh * len(rows) + 14}" text-anchor="middle">1e{t}</text>')
    out.append(f'<text x="{lw + pw / 2:.0f}" y="{height - 2}" text-anchor="middle">err/bound (log scale, clipped to '
               f'[1e{int(LO)}, 1e{int(HI)}]; right of the red line fails; NaN/Inf and errors at the right edge)</text>')
    for i, r in enumerate(rows):
        y = top + rh * i + rh / 2
        out.append(f'<text x="{lw - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(r["label"][:72])}</text>')
        for v, failed, what in r["points"]:
            lv = HI if v is None or not math.isfinite(v) else (LO if v <= 0 else math.log10(v))
            color = "#b3261e" if failed else "#1a73e8"
            out.append(f'<circle cx="{x(lv):.1f}" cy="{y:.1f}" r="3" fill="{color}" fill-opacity="0.6">'
                       f'<title>{_e(what)}: err/bound {v if v is not None else "none"}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _differing(groups: Sequence[Group]) -> Dict[str, List[str]]:
    """Per op, the conventions whose values differ between its groups (the rest need not label a row)."""
    out: Dict[str, List[str]] = {}
    for op in dict.fromkeys(g.report.op for g in groups):
        convs = [g.report.conventions for g in groups if g.report.op == op]
        keys = sorted(set().union(*convs))
        out[op] = [k for k in keys if len({repr(c.get(k)) for c in convs}) > 1]
    return out


def _distributions(groups: Sequence[Group]) -> str:
    by_op: Dict[str, List[Dict[str, Any]]] = {}
    differing = _differing(groups)
    for g in groups:
        r = g.report
        shown = ", ".join(f"{k}={r.conventions.get(k)!r}" for k in differing[r.op])
        for dtype in r.dtypes:
            pts = []
            for c in r.cases:
                if c.dtype != dtype or c.skipped:
                    continue
                if c.error is not None:
                    pts.append((None, True, f"{c.name}: error"))
                for o in c.outputs:
                    pts.append((o.comparison.worst_ratio, not o.passed, f"{c.name} {o.output}"))
            if pts:
                by_op.setdefault(r.op, []).append({"label": f"{dtype}  {g.label}" + (f" ({shown})" if shown else ""),
                                                   "points": pts})
    if not by_op:
        return "<p>No case produced an output.</p>"
    return "".join(f'<h3><code>{_e(op)}</code></h3><div class="dist">{_svg(op, rows)}</div>'
                   for op, rows in by_op.items())


def _png(path: Optional[str]) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode()
    return f'<img alt="err/bound heatmap" src="data:image/png;base64,{data}">'


def _failures(groups: Sequence[Group], limit: int) -> str:
    parts, n = [], 0
    for g in groups:
        r = g.report
        bad = [c for c in r.cases if not c.passed]
        badp = [p for p in r.probes if not p.passed]
        if not bad and not badp:
            continue
        parts.append(f"<h3><code>{_e(r.op)}</code> &larr; <code>{_e(g.label)}</code> "
                     f"<span class='muted'>({_e(_conv(r.conventions))})</span></h3>")
        for p in badp:
            parts.append(f"<pre>{_e(p.text())}</pre>")
        for c in bad:
            n += 1
            if n > limit:
                continue
            parts.append(f"<details open><summary>{_e(c.name)}</summary><pre>{_e(c.text())}</pre>{_png(c.plot)}"
                         "</details>")
    if n > limit:
        parts.append(f"<p class='muted'>... and {n - limit} more failing cases (report.txt / report.json list "
                     "them all)</p>")
    return "".join(parts) or "<p>None: every case that ran passed.</p>"


def to_html(groups: Sequence[Group], run: Any = None, notes: Sequence[Mapping[str, Any]] = (),
            title: str = "refimpl sweep", max_failures: int = 200) -> str:
    head = _header(groups, run, notes)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    not_run = ("<h2>Not run</h2><ul>" + "".join(f"<li><code>{_e(n['op'])}</code> &larr; {_e(n['candidate'])}: "
                                                f"{_e(n['note'])}</li>" for n in notes) + "</ul>") if notes else ""
    notes_html = "".join(f"<li>{_e(n)}</li>" for g in groups for n in g.report.notes)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p>{'<br>'.join(_e(h) for h in head[:2])}</p>"
            f"<p class='muted'>generated {when}</p>"
            f"<h2>Summary</h2>{_table(groups)}"
            f"<h2>err/bound distributions</h2>{_distributions(groups)}"
            f"<h2>Failing cases</h2>{_failures(groups, max_failures)}"
            f"{not_run}" + (f"<h2>Notes</h2><ul>{notes_html}</ul>" if notes_html else "")
            + "</body></html>\n")
