"""Golden test vectors for porting: inputs, float64 oracle outputs and the bounds, as ``.npz`` + a JSON manifest.

``export(op, out_dir)`` writes one ``<case>.npz`` per case holding ``in__<name>``
(the inputs), ``out__<name>`` (the float64 oracle outputs) and
``bound_<dtype>__<name>`` (the elementwise absolute error allowed for a
candidate computing in ``dtype``, from the op's derived bound), plus
``manifest.json`` (op, signature, conventions, shapes, dtypes, the tolerance
rule in words, the generator version, case ids, kinds and flags).  A port in
Rust, JAX or C++ loads the arrays, runs, and checks
``|out - out__y| <= bound_float32__y`` elementwise -- no Python in the loop.

``check(dir)`` re-verifies a directory: it recomputes the oracle from the stored
inputs and conventions and compares with the stored outputs (a corrupted file,
a changed oracle or a changed convention shows up); with a candidate it also
runs :func:`oracles.verify.verify` on the stored cases.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from oracles.tolerance import compare
from oracles.verify.harness import generate_cases, verify
from oracles.verify.registry import Case, get_op
from oracles.verify.report import _clean, _safe

__all__ = ["FORMAT", "FORMAT_VERSION", "export", "load", "check"]

FORMAT = "refimpl-golden-vectors"
FORMAT_VERSION = 1
BOUND_DTYPES = ("float64", "float32")


def _generator_version() -> str:
    try:
        from importlib.metadata import version

        return f"refimpl {version('refimpl')}; {FORMAT} v{FORMAT_VERSION}"
    except Exception:  # pragma: no cover - not installed
        return f"refimpl (source tree); {FORMAT} v{FORMAT_VERSION}"


def _flags(c: Case) -> List[str]:
    """Default flags: the kind, the rest of the case id (``edge-chunk+1`` -> ``chunk+1``), ``empty`` when an input has a zero-length axis."""
    rest = c.case_id.split("-", 1)[1] if "-" in c.case_id else ""
    out = [c.kind] + ([rest] if rest and not rest.isdigit() else [])
    if any(v is not None and 0 in np.shape(v) for v in c.inputs.values()):
        out.append("empty")
    return out


def _dtype_name(a) -> str:
    return np.asarray(a).dtype.name


def export(op: str, out_dir: str, *, conventions: Optional[Mapping[str, Any]] = None, max_examples: int = 5,
           seed: int = 0, kinds=("golden", "edge", "random")) -> Dict[str, Any]:
    """Write the golden vectors of ``op`` under ``conventions`` to ``out_dir``; return the manifest."""
    spec = get_op(op)
    conv = spec.resolve_conventions(conventions)
    cases = generate_cases(spec, conv, max_examples=max_examples, seed=seed, kinds=kinds)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for c in cases:
        inputs = {k: (None if v is None else np.asarray(v)) for k, v in c.inputs.items()}
        out = spec.oracle(dict(inputs), conv)
        arrays: Dict[str, np.ndarray] = {}
        for k, v in inputs.items():
            if v is not None:
                arrays[f"in__{k}"] = v
        for k, v in out.items():
            arrays[f"out__{k}"] = np.asarray(v)
        for d in BOUND_DTYPES:
            for k, b in spec.bounds(dict(inputs), dict(out), conv, np.dtype(d)).items():
                arrays[f"bound_{d}__{k}"] = np.broadcast_to(np.asarray(b.values, dtype=np.float64), np.shape(out[k])).copy()
        fname = _safe(c.case_id) + ".npz"
        np.savez(os.path.join(out_dir, fname), **arrays)
        entries.append({
            "id": c.case_id, "file": fname, "kind": c.kind, "flags": list(c.flags) or _flags(c), "note": c.note,
            "seed": c.seed,
            "inputs": {k: {"shape": list(np.shape(v)), "dtype": _dtype_name(v)} for k, v in inputs.items() if v is not None},
            "outputs": {k: {"shape": list(np.shape(v)), "dtype": _dtype_name(v)} for k, v in out.items()},
        })
    srcs = {}
    if cases:
        c0 = cases[0]
        out0 = spec.oracle(dict(c0.inputs), conv)
        for d in BOUND_DTYPES:
            srcs[d] = {k: b.source for k, b in spec.bounds(dict(c0.inputs), dict(out0), conv, np.dtype(d)).items()}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "generator": _generator_version(),
        "op": spec.name, "summary": spec.summary, "signature": spec.signature(),
        "inputs": [{"name": a.name, "shape": a.shape, "optional": a.optional, "kind": a.kind, "doc": a.doc} for a in spec.inputs],
        "outputs": [{"name": a.name, "shape": a.shape, "optional": a.optional, "doc": a.doc} for a in spec.outputs],
        "conventions": _clean(conv),  # JSON-safe: non-finite floats as the strings "inf", "-inf", "nan"
        "convention_docs": {c.name: c.doc for c in spec.conventions},
        "tolerance": {
            "rule": "a candidate computing in DTYPE conforms on a case when |candidate - out__NAME| <= bound_DTYPE__NAME "
                    "elementwise for every output NAME it returns, with no NaN/Inf where out__NAME is finite; the "
                    "inputs are exact in float64 -- cast them to the candidate's dtype and, for float32, recompute "
                    "the reference with `refimpl vectors export` from the rounded inputs if the rounding matters "
                    "(the bounds assume the candidate's inputs equal in__*). float16/bfloat16: the same-dtype "
                    "baseline rule needs Python (`refimpl verify`).",
            "bound_dtypes": list(BOUND_DTYPES),
            "bound_sources": srcs,
        },
        "seed": seed,
        "cases": entries,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as fh:
        json.dump(_clean(manifest), fh, indent=1, default=str)
    return manifest


_NONFINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}


def _decode(v):
    """Undo the manifest's JSON-safe encoding: 'inf'/'-inf'/'nan' strings back to floats, lists to tuples."""
    if isinstance(v, str) and v in _NONFINITE:
        return _NONFINITE[v]
    if isinstance(v, list):
        return tuple(_decode(x) for x in v)
    return v


def load(directory: str) -> Dict[str, Any]:
    """``{"manifest", "cases": [Case], "outputs": {id: {name: array}}, "bounds": {id: {dtype: {name: array}}}}``."""
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{directory}: not a {FORMAT} directory (format {manifest.get('format')!r})")
    spec = get_op(manifest["op"])
    conv = spec.resolve_conventions({k: _decode(v) for k, v in manifest["conventions"].items()})
    cases: List[Case] = []
    outputs: Dict[str, Dict[str, np.ndarray]] = {}
    bounds: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {}
    for e in manifest["cases"]:
        with np.load(os.path.join(directory, e["file"]), allow_pickle=False) as z:
            inputs = {k[4:]: z[k] for k in z.files if k.startswith("in__")}
            outputs[e["id"]] = {k[5:]: z[k] for k in z.files if k.startswith("out__")}
            bd: Dict[str, Dict[str, np.ndarray]] = {}
            for k in z.files:
                if k.startswith("bound_"):
                    d, _, name = k[len("bound_"):].partition("__")
                    bd.setdefault(d, {})[name] = z[k]
            bounds[e["id"]] = bd
        for a in spec.inputs:
            inputs.setdefault(a.name, None)
        cases.append(Case(spec.name, e["id"], e["kind"], inputs, dict(conv), seed=e.get("seed"), note=e.get("note", ""),
                          flags=tuple(e.get("flags", ()))))
    return {"manifest": manifest, "spec": spec, "conventions": conv, "cases": cases, "outputs": outputs, "bounds": bounds}


def check(directory: str, candidate: Optional[Callable] = None, **verify_kwargs) -> Dict[str, Any]:
    """Re-verify a vectors directory: stored outputs vs the oracle recomputed now (and a candidate, if given).

    Returns ``{"passed": bool, "lines": [str], "report": Report or None}``.
    """
    data = load(directory)
    spec, conv = data["spec"], data["conventions"]
    lines: List[str] = []
    ok = True
    for c in data["cases"]:
        fresh = spec.oracle(dict(c.inputs), conv)
        bounds64 = spec.bounds(dict(c.inputs), dict(fresh), conv, np.dtype(np.float64))
        stored = data["outputs"][c.case_id]
        for name, v in fresh.items():
            if name not in stored:
                ok = False
                lines.append(f"FAIL {c.case_id}: output {name} missing from the stored vectors")
                continue
            cmp = compare(stored[name], v, bounds64[name], dtype=np.float64)
            ok &= cmp.passed
            lines.append(f"{'ok  ' if cmp.passed else 'FAIL'} {c.case_id}.{name}: stored vs recomputed oracle, "
                         f"max abs {cmp.max_abs_err:.3e}, err/bound {cmp.worst_ratio:.3g}")
        missing = set(stored) - set(fresh)
        if missing:
            ok = False
            lines.append(f"FAIL {c.case_id}: stored outputs {sorted(missing)} no longer produced by the oracle")
    report = None
    if candidate is not None:
        report = verify(spec, candidate, conventions=conv, cases=data["cases"], **verify_kwargs)
        ok &= report.passed
        lines.append(report.summary())
    return {"passed": bool(ok), "lines": lines, "report": report}
