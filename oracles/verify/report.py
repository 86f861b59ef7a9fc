"""The verification report: per case and output, in text, JSON and JUnit XML; failing cases saved to ``.npz``."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Tuple
from xml.sax.saxutils import escape, quoteattr

import numpy as np

__all__ = ["OutputResult", "CaseResult", "ProbeResult", "Report", "save_case", "load_case"]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@dataclasses.dataclass
class OutputResult:
    output: str
    comparison: Any  # oracles.tolerance.Comparison
    baseline_err: Optional[float] = None  # low precision: max |our reference in dtype - oracle|
    baseline_multiple: Optional[float] = None  # candidate / baseline error in the rule's metric max_i |err_i| / M_i
    returned_dtype: Optional[str] = None  # the dtype the output came back in
    precision: Optional[str] = None  # set when it came back in lower precision than the dtype asked for

    @property
    def passed(self) -> bool:
        return bool(self.comparison.passed)

    def to_dict(self) -> dict:
        d = {"output": self.output, **self.comparison.to_dict(), "returned_dtype": self.returned_dtype}
        if self.precision:
            d["precision"] = self.precision
        if self.baseline_err is not None:
            d["baseline_err"] = self.baseline_err
            d["baseline_multiple"] = self.baseline_multiple
        return _clean(d)

    def line(self) -> str:
        c = self.comparison
        came = f" (came back {self.returned_dtype})" if self.returned_dtype else ""
        s = (f"{self.output}: {'pass' if c.passed else 'FAIL'}{came}  max abs {c.max_abs_err:.3e} at {c.max_abs_index}, "
             f"max rel {c.max_rel_err:.3e} at {c.max_rel_index}, normwise {c.normwise_rel_err:.3e}, "
             f"err/bound {c.worst_ratio:.3g} at {c.worst_index} (bound there {c.bound:.3e})")
        if self.baseline_multiple is not None:
            s += (f", {self.baseline_multiple:.3g}x our same-dtype baseline's error (max abs of our reference "
                  f"in this dtype: {self.baseline_err:.3e})")
        if self.precision:
            s += f"; LOWER PRECISION: {self.output} {self.precision}"
        if c.nonfinite:
            s += f", {c.nonfinite} NaN/Inf where the oracle is finite"
        if c.message:
            s += f" [{c.message}]"
        return s


@dataclasses.dataclass
class CaseResult:
    case_id: str
    kind: str
    dtype: str
    conventions: Dict[str, Any]
    shapes: Dict[str, list]
    seed: Optional[int]
    outputs: List[OutputResult] = dataclasses.field(default_factory=list)
    error: Optional[str] = None  # the candidate raised / returned something unusable
    skipped: Optional[str] = None
    diagnosis: str = ""
    repro: Optional[str] = None  # path of the saved .npz
    note: str = ""
    warnings: List[str] = dataclasses.field(default_factory=list)  # raised while the case ran
    error_maps: List[Any] = dataclasses.field(default_factory=list)  # diagnosis.ErrorMap per failing output
    plot: Optional[str] = None  # the PNG heatmap of err/bound (verify(..., plots=DIR))
    sizes: Dict[str, int] = dataclasses.field(default_factory=dict)  # the case's named sizes (l, d, ..., L)
    raised: Optional[str] = None  # the candidate raised: "IndexError (at kernel.py:12 in scan)"

    @property
    def passed(self) -> bool:
        if self.skipped:
            return True
        return self.error is None and bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def name(self) -> str:
        return f"{self.case_id}[{self.dtype}]"

    def to_dict(self) -> dict:
        return _clean({
            "case_id": self.case_id, "kind": self.kind, "dtype": self.dtype, "passed": self.passed,
            "conventions": self.conventions, "shapes": self.shapes, "seed": self.seed,
            "outputs": [o.to_dict() for o in self.outputs], "error": self.error, "skipped": self.skipped,
            "diagnosis": self.diagnosis, "repro": self.repro, "note": self.note, "warnings": self.warnings,
            "error_maps": [m.to_dict() for m in self.error_maps], "plot": self.plot,
            "sizes": self.sizes, "raised": self.raised,
        })

    def text(self) -> str:
        status = "skip" if self.skipped else ("pass" if self.passed else "FAIL")
        head = f"[{status}] {self.name} ({self.kind}; shapes {self.shapes}; seed {self.seed})"
        lines = [head]
        if self.note:
            lines.append(f"    note: {self.note}")
        if self.skipped:
            lines.append(f"    skipped: {self.skipped}")
        if self.error:
            lines.append(f"    error: {self.error}")
        for o in self.outputs:
            lines.append("    " + o.line())
            if not o.passed:
                lines.append(f"      bound from: {o.comparison.bound_source}")
        for w in self.warnings:
            lines.append(f"    warning: {w}")
        if self.diagnosis:
            lines.append(f"    diagnosis: {self.diagnosis}")
        lines.extend(self.error_map_lines())
        if self.repro:
            lines.append(f"    reproduce: python {self.repro[:-4]}.py   (inputs in {self.repro})")
        return "\n".join(lines)

    # -- the error map: where a failing case's error lies ------------------------------------------------------
    def error_map_lines(self) -> List[str]:
        """The largest err/bound of each failing output along each axis (coarse bins), and the heatmap's path."""
        if not self.error_maps:
            return [f"    plot: {self.plot}"] if self.plot else []
        from oracles.verify.diagnosis import LEGEND

        lines = [f"    error map ({LEGEND}):"]
        for m in self.error_maps:
            lines.extend("      " + ln for ln in m.lines())
        if self.plot:
            lines.append(f"    plot: {self.plot}")
        return lines


@dataclasses.dataclass
class ProbeResult:
    name: str
    passed: bool
    message: str
    doc: str = ""
    dtype: Optional[str] = None  # the dtype it ran in (None: a probe that is not dtype-aware, run on float64)
    skipped: Optional[str] = None
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name}[{self.dtype}]" if self.dtype else self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        status = "skip" if self.skipped else ("pass" if self.passed else "FAIL")
        return "\n".join([f"[{status}] probe {self.label}: {self.message}"]
                         + [f"    warning: {w}" for w in self.warnings])


@dataclasses.dataclass
class Report:
    op: str
    candidate: str
    adapter: str
    framework: str
    conventions: Dict[str, Any]
    dtypes: List[str]
    cases: List[CaseResult] = dataclasses.field(default_factory=list)
    probes: List[ProbeResult] = dataclasses.field(default_factory=list)
    seed: Optional[int] = None
    profile: str = "ci"
    notes: List[str] = dataclasses.field(default_factory=list)  # what the harness changed or noticed (x64, timeouts)
    domain: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the domain the candidate declared (non-defaults)
    domain_entries: Tuple[Any, ...] = ()  # the op's registry.Domain entries (for the headline's hint)
    outside_domain: List[Dict[str, str]] = dataclasses.field(default_factory=list)  # not run: case_id, kind, reason
    # the gradient check (verify(..., grad=True)): its cases hold one OutputResult "grad <input>" per input
    grad: bool = False
    grad_cases: List[CaseResult] = dataclasses.field(default_factory=list)
    grad_wrt: Tuple[str, ...] = ()
    grad_route: str = ""  # how the candidate's gradient was obtained (torch.autograd.grad, jax.grad, grad_fn)
    forward_checked: bool = True  # False: verify(..., forward=False) judged the gradient only

    def add_notes(self, notes) -> None:
        for n in notes:
            if n not in self.notes:
                self.notes.append(n)

    @property
    def forward_passed(self) -> bool:
        ran = [c for c in self.cases if not c.skipped]
        return bool(ran) and all(c.passed for c in ran) and all(p.passed for p in self.probes)

    @property
    def grad_passed(self) -> bool:
        ran = [c for c in self.grad_cases if not c.skipped]
        return bool(ran) and all(c.passed for c in ran)

    @property
    def passed(self) -> bool:
        ok = self.forward_passed if self.forward_checked else True
        return ok and (self.grad_passed if self.grad else True)

    @property
    def failures(self) -> List[CaseResult]:
        return [c for c in self.cases if not c.passed] + [c for c in self.grad_cases if not c.passed]

    def grad_inputs(self) -> List[Dict[str, Any]]:
        """Per differentiable input: its verdict over the gradient cases (worst err/bound, the err and bound there)."""
        rows: Dict[str, Dict[str, Any]] = {}
        for c in self.grad_cases:
            if c.skipped:
                continue
            for o in c.outputs:
                name = o.output[len("grad "):] if o.output.startswith("grad ") else o.output
                r = rows.setdefault(name, {"input": name, "cases": 0, "failing": 0, "worst_ratio": 0.0,
                                           "err": 0.0, "bound": 0.0, "worst_case": None, "no_gradient": False})
                r["cases"] += 1
                cmp = o.comparison
                r["failing"] += int(not o.passed)
                if "no gradient flows" in (cmp.message or "") and not o.passed:
                    r["no_gradient"] = True
                ratio = cmp.worst_ratio
                if ratio > r["worst_ratio"] or r["worst_case"] is None:
                    r["worst_ratio"], r["bound"], r["worst_case"] = ratio, cmp.bound, c.name
                    r["err"] = ratio * cmp.bound if np.isfinite(ratio) else cmp.max_abs_err
        order = [n for n in self.grad_wrt if n in rows] + [n for n in rows if n not in self.grad_wrt]
        return [rows[n] for n in order]

    def grad_line(self) -> str:
        """``grad u: conforms (worst err 3.1e-07 <= bound 2.0e-06) | grad D: DOES NOT CONFORM (...)``."""
        parts = []
        for r in self.grad_inputs():
            if r["failing"] == 0:
                parts.append(f"grad {r['input']}: conforms (worst err {r['err']:.2g} <= bound {r['bound']:.2g})")
            else:
                why = "no gradient flows; " if r["no_gradient"] else ""
                parts.append(f"grad {r['input']}: DOES NOT CONFORM ({why}{r['failing']}/{r['cases']} cases fail; "
                             f"worst err/bound {r['worst_ratio']:.3g} in {r['worst_case']})")
        return " | ".join(parts)

    def grad_headline(self) -> str:
        ran = [c for c in self.grad_cases if not c.skipped]
        errs = [c for c in ran if c.error]
        nok = sum(c.passed for c in ran)
        head = f"{nok}/{len(ran)} gradient cases pass" if ran else "no gradient case ran"
        if errs:
            head += f"; the backward raised on {len(errs)}"
        skipped = len(self.grad_cases) - len(ran)
        if skipped:
            head += f"; {skipped} skipped"
        return head

    def deviations(self) -> List[str]:
        """One sentence per distinct reason the candidate does not conform (probes, diagnoses, errors)."""
        out: List[str] = []
        for p in self.probes:
            if not p.passed:
                out.append(f"probe {p.label}: {p.message}")
        seen = set()
        for c in [c for c in self.cases if not c.passed]:
            for why in ([c.diagnosis] if c.diagnosis else []) + ([f"error: {c.error.splitlines()[0]}"] if c.error else []):
                if why not in seen:
                    seen.add(why)
                    out.append(f"{c.name}: {why}")
        for c in self.grad_cases:
            if c.passed:
                continue
            for why in ([c.diagnosis] if c.diagnosis else []) + ([c.error.splitlines()[0]] if c.error else []):
                if why not in seen:
                    seen.add(why)
                    out.append(f"gradient {c.name}: {why}")
        return out

    def summary(self) -> str:
        """The headline: the verdict, then the two kinds of failure apart -- cases that ran and missed their bound,
        cases on which the candidate raised (grouped by exception and place, with what they share: ``L = 0``,
        ``L`` not a multiple of ``k``, two unequal sizes, and the ``--domain`` that would declare it)."""
        verdict = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        head = f"{self.op} <- {self.candidate} (adapter {self.adapter}, {self.framework}): {verdict}"
        if not self.grad:
            return f"{head}: {self.headline()}"
        fwd = (f"forward: {'conforms' if self.forward_passed else 'DOES NOT CONFORM'} ({self.headline()})"
               if self.forward_checked else "forward: not checked")
        grad = (f"gradient ({self.grad_route}): {'conforms' if self.grad_passed else 'DOES NOT CONFORM'} "
                f"({self.grad_headline()})")
        return f"{head}: {fwd} || {grad}"

    def headline(self) -> str:
        from oracles.verify.registry import domain_hint

        ran = [c for c in self.cases if not c.skipped]
        hung = [c for c in ran if c.error is not None and c.error.startswith("timed out")]
        raised: Dict[str, List[CaseResult]] = {}
        for c in ran:
            if c.raised:
                raised.setdefault(c.raised, []).append(c)
        done = [c for c in ran if not c.raised and c not in hung]
        nok = sum(c.passed for c in done)
        if not done:
            parts = ["no case ran to completion"]
        elif nok == len(done):
            parts = [f"conforms on all {len(done)} cases that ran"]
        else:
            parts = [f"{nok}/{len(done)} cases that ran pass"]
        for where, group in sorted(raised.items(), key=lambda kv: -len(kv[1])):
            text = f"raised {where} on {len(group)} case{'s' if len(group) != 1 else ''}"
            others = [c.sizes for c in ran if c.raised != where and c.sizes]
            hint = domain_hint(self.domain_entries, [c.sizes for c in group if c.sizes], others) \
                if all(c.sizes for c in group) else None
            parts.append(text + (f", {hint[0]}: {hint[1]}" if hint else ""))
        if hung:
            parts.append(f"timed out on {len(hung)} case{'s' if len(hung) != 1 else ''}")
        if self.probes:
            npf = sum(not p.passed for p in self.probes)
            parts.append(f"{len(self.probes) - npf}/{len(self.probes)} probes pass")
        if len(self.cases) != len(ran):
            parts.append(f"{len(self.cases) - len(ran)} skipped")
        if self.outside_domain:
            declared = ", ".join(f"{k}={v}" for k, v in self.domain.items())
            parts.append(f"{len(self.outside_domain)} golden/edge case{'s' if len(self.outside_domain) != 1 else ''} "
                         f"outside the declared domain ({declared}) not run")
        return "; ".join(parts)

    def worst(self) -> str:
        """The largest error/bound ratio per dtype (and the largest low-precision baseline multiple)."""
        parts = []
        for d in self.dtypes:
            outs = [(c, o) for c in self.cases if c.dtype == d for o in c.outputs]
            if not outs:
                continue
            c, o = max(outs, key=lambda co: co[1].comparison.worst_ratio)
            s = f"{d}: worst err/bound {o.comparison.worst_ratio:.3g} ({c.case_id}, {o.output})"
            bm = [x.baseline_multiple for _, x in outs if x.baseline_multiple is not None]
            if bm:
                s += f", max {max(bm):.3g}x the same-dtype baseline"
            parts.append(s)
        return "; ".join(parts)

    def returned_dtypes(self) -> List[str]:
        """Per requested dtype, the dtypes each output came back in (``float64: y float64, h_last float32``)."""
        parts = []
        for d in self.dtypes:
            seen: Dict[str, List[str]] = {}
            for c in self.cases:
                if c.dtype != d:
                    continue
                for o in c.outputs:
                    if o.returned_dtype and o.returned_dtype not in seen.setdefault(o.output, []):
                        seen[o.output].append(o.returned_dtype)
            if seen:
                parts.append(f"{d} asked: " + ", ".join(f"{k} {'/'.join(v)}" for k, v in seen.items()))
        return parts

    def to_text(self, verbose: bool = False) -> str:
        lines = [self.summary(), f"conventions: {self.conventions}",
                 f"dtypes: {', '.join(self.dtypes)}; seed {self.seed}; profile {self.profile}"]
        if self.domain or self.outside_domain:
            lines.append("declared domain: " + (", ".join(f"{k}={v}" for k, v in self.domain.items()) or "none")
                         + ("; outside it, not run: " + ", ".join(f"{o['case_id']} ({o['reason']})"
                                                                 for o in self.outside_domain)
                            if self.outside_domain else ""))
        w = self.worst()
        if w:
            lines.append(w)
        returned = self.returned_dtypes()
        if returned:
            lines.append("outputs came back in: " + "; ".join(returned))
        for n in self.notes:
            lines.append(f"note: {n}")
        for p in self.probes:
            lines.append(p.text())
        for c in self.cases:
            if verbose or not c.passed or c.skipped:
                lines.append(c.text())
        if self.grad:
            gl = self.grad_line()
            lines.append(f"gradient, wrt {', '.join(self.grad_wrt)} (via {self.grad_route}): {gl or 'no case ran'}")
            for c in self.grad_cases:
                if verbose or not c.passed or c.skipped:
                    lines.append("[gradient] " + c.text())
        if not verbose:
            npass = sum(c.passed and not c.skipped for c in self.cases + self.grad_cases)
            lines.append(f"({npass} passing cases not shown; --verbose shows them)")
        dev = self.deviations()
        if dev:
            lines.append("deviations:")
            lines.extend("  - " + d for d in dev[:10])
            if len(dev) > 10:
                lines.append(f"  ... and {len(dev) - 10} more (--report json lists them all)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _clean({
            "op": self.op, "candidate": self.candidate, "adapter": self.adapter, "framework": self.framework,
            "conventions": self.conventions, "dtypes": self.dtypes, "seed": self.seed, "profile": self.profile,
            "passed": self.passed, "summary": self.summary(), "worst": self.worst(), "deviations": self.deviations(),
            "returned_dtypes": self.returned_dtypes(), "notes": self.notes, "domain": self.domain,
            "outside_domain": self.outside_domain,
            "probes": [p.to_dict() for p in self.probes], "cases": [c.to_dict() for c in self.cases],
            "forward_checked": self.forward_checked, "forward_passed": self.forward_passed,
            "grad": ({"passed": self.grad_passed, "wrt": list(self.grad_wrt), "route": self.grad_route,
                      "inputs": self.grad_inputs(), "summary": self.grad_line(),
                      "cases": [c.to_dict() for c in self.grad_cases]} if self.grad else None),
        })

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def to_junit(self) -> str:
        """JUnit XML: one testsuite for the op, one testcase per case x dtype and per probe."""
        allc = self.cases + self.grad_cases
        tests = len(allc) + len(self.probes)
        failures = sum(not c.passed for c in allc if c.error is None) + sum(not p.passed for p in self.probes)
        errors = sum(c.error is not None for c in allc)
        skipped = sum(bool(c.skipped) for c in allc) + sum(bool(p.skipped) for p in self.probes)
        suite = f"refimpl.verify.{self.op}"
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               f'<testsuites name="refimpl verify" tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}">',
               f'  <testsuite name={quoteattr(suite)} tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}">',
               '    <properties>',
               f'      <property name="candidate" value={quoteattr(self.candidate)}/>',
               f'      <property name="adapter" value={quoteattr(self.adapter)}/>',
               f'      <property name="conventions" value={quoteattr(json.dumps(_clean(self.conventions), default=str))}/>',
               f'      <property name="seed" value={quoteattr(str(self.seed))}/>']
        out += [f'      <property name="note" value={quoteattr(n)}/>' for n in self.notes]
        out += ['    </properties>']
        for p in self.probes:
            out.append(f'    <testcase classname={quoteattr(suite + ".probe")} name={quoteattr(p.label)}>')
            if p.skipped:
                out.append(f'      <skipped message={quoteattr(p.skipped[:500])}/>')
            elif not p.passed:
                out.append(f'      <failure message={quoteattr(p.message[:500])}>{escape(p.text())}</failure>')
            out.append('    </testcase>')
        for c, cls in [(c, suite) for c in self.cases] + [(c, suite + ".grad") for c in self.grad_cases]:
            out.append(f'    <testcase classname={quoteattr(cls)} name={quoteattr(c.name)}>')
            if c.skipped:
                out.append(f'      <skipped message={quoteattr(c.skipped)}/>')
            elif c.error is not None:
                out.append(f'      <error message={quoteattr(c.error.splitlines()[0][:500])}>{escape(c.text())}</error>')
            elif not c.passed:
                first = next((o for o in c.outputs if not o.passed), None)
                msg = first.line() if first else "no outputs"
                out.append(f'      <failure message={quoteattr(msg[:500])}>{escape(c.text())}</failure>')
            out.append(f'      <system-out>{escape(c.text())}</system-out>')
            out.append('    </testcase>')
        out += ['  </testsuite>', '</testsuites>']
        return "\n".join(out) + "\n"

    def render(self, fmt: str = "text", verbose: bool = False) -> str:
        if fmt == "text":
            return self.to_text(verbose=verbose)
        if fmt == "json":
            return self.to_json()
        if fmt == "junit":
            return self.to_junit()
        raise ValueError(f"report format: expected text, json or junit, got {fmt!r}")


# ---------------------------------------------------------------------------------------------------------
# Reproductions: a failing case's inputs, conventions and outputs in an .npz, plus a script that reruns it.

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _store(arrays: Dict[str, Any], prefix: str, a: Any, key: str) -> None:
    if a is None:
        return
    a = np.asarray(a)
    if a.dtype.name == "bfloat16":  # npz cannot hold ml_dtypes: keep the bits, record the dtype
        arrays[f"{prefix}{key}__bfloat16_bits"] = a.view(np.uint16)
    else:
        arrays[f"{prefix}{key}"] = a


def _restore(z, prefix: str) -> Dict[str, Any]:
    out = {}
    for k in z.files:
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name.endswith("__bfloat16_bits"):
            import ml_dtypes

            out[name[: -len("__bfloat16_bits")]] = z[k].view(ml_dtypes.bfloat16)
        else:
            out[name] = z[k]
    return out


def save_case(directory: str, report_meta: dict, case_id: str, dtype: str, inputs: Dict[str, Any],
              conventions: Dict[str, Any], oracle: Dict[str, Any], candidate_out: Dict[str, Any]) -> str:
    """Write ``<dir>/<op>-<case>-<dtype>.npz`` and a ``.py`` that reloads and reruns it; return the .npz path."""
    os.makedirs(directory, exist_ok=True)
    stem = _safe(f"{report_meta['op']}-{case_id}-{dtype}")
    path = os.path.join(directory, stem + ".npz")
    arrays: Dict[str, Any] = {}
    for k, v in inputs.items():
        _store(arrays, "in__", v, k)
    for k, v in oracle.items():
        _store(arrays, "oracle__", v, k)
    for k, v in candidate_out.items():
        _store(arrays, "candidate__", v, k)
    meta = dict(report_meta, case_id=case_id, dtype=dtype, conventions=_clean(conventions))
    arrays["meta_json"] = np.array(json.dumps(meta, default=str))
    np.savez(path, **arrays)
    script = f'''"""Rerun failing case {case_id} ({dtype}) of {report_meta['op']} against {report_meta['candidate']}."""
from oracles.verify import load_case, rerun_case

case = load_case({path!r})
print(case["meta"])                       # op, candidate, adapter, conventions, dtype, seed
report = rerun_case(case)                 # imports the candidate by its MODULE:FUNCTION name
print(report.to_text(verbose=True))
'''
    with open(os.path.join(directory, stem + ".py"), "w") as fh:
        fh.write(script)
    return path


def load_case(path: str) -> Dict[str, Any]:
    """``{"meta", "inputs", "oracle", "candidate"}`` from a saved ``.npz``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"]))
        return {"meta": meta, "inputs": _restore(z, "in__"), "oracle": _restore(z, "oracle__"),
                "candidate": _restore(z, "candidate__")}
