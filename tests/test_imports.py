"""The import graph runs one way, read from the source.

Every ``.py`` file under ``refimpl/`` and ``oracles/`` is parsed with :mod:`ast`; every import is
collected -- absolute and relative, at module level or inside a function -- together with the
literal module names handed to ``importlib.import_module`` / ``__import__`` and the lazy
``"package.module:function"`` strings of the dispatch tables.  Then:

1. no module under ``refimpl/`` imports ``oracles``;
2. the ground-truth modules (``oracles/__init__.py`` and every top-level ``oracles/*.py`` that is not
   the command line) import nothing from ``refimpl``, and nothing from the conformance layer either
   (which would bring ``refimpl`` in through the back door);
3. so the only modules importing both are the conformance layer's: ``oracles.checks``,
   ``oracles.verify``, ``oracles.strategies``, ``oracles.cli`` (with ``oracles/__main__.py``) and
   ``oracles.mutants``.

The scanner is checked on a small tree written here (it must find each kind of edge), and the
real tree is also imported in subprocesses: ``import refimpl`` loads no ``oracles`` module and
the ground-truth modules load no ``refimpl`` module.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from typing import Dict, List, NamedTuple, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("refimpl", "oracles")
# the conformance layer: the only part of the packages that may import both refimpl and the ground truth
CONFORMANCE = ("oracles.checks", "oracles.verify", "oracles.strategies", "oracles.cli", "oracles.mutants",
               "oracles.sweep", "oracles.__main__")
GROUND_TRUTH_EXPECTED = ("oracles", "oracles.tolerance", "oracles.ssm", "oracles.hippo", "oracles.structured",
                         "oracles.selective", "oracles.attention", "oracles.performer")
_LAZY = re.compile(r"(?:refimpl|oracles)(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*")


class Edge(NamedTuple):
    source: str  # importing module (dotted)
    target: str  # imported module (dotted, resolved)
    where: str  # file:line
    how: str  # "import", "from", "import_module", "lazy"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.how} at {self.where})"


def module_files(root: str) -> Dict[str, str]:
    """``{dotted module name: path}`` for every ``.py`` under the packages in ``root``."""
    out: Dict[str, str] = {}
    for pkg in PACKAGES:
        base = os.path.join(root, pkg)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def _resolve_from(module: str, path: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if _is_package(path) else module.split(".")[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def imports_of(module: str, path: str, known: Set[str]) -> List[Edge]:
    """Every import of one file (see the module docstring for what counts)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    rel = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path
    edges: List[Edge] = []

    def add(target: str, node: ast.AST, how: str) -> None:
        if target:
            edges.append(Edge(module, target, f"{rel}:{getattr(node, 'lineno', '?')}", how))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, "import")
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                add(sub if sub in known else base, node, "from")  # `from oracles import checks` -> oracles.checks
        elif isinstance(node, ast.Call) and _call_name(node.func) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                add(node.args[0].value, node, "import_module")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _LAZY.fullmatch(node.value):
            add(node.value.partition(":")[0], node, "lazy")
    return list(dict.fromkeys(edges))  # `from X import a, b`: one edge


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _in(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def scan(root: str) -> Dict[str, List[Edge]]:
    """The edges that matter, by rule: ``refimpl->oracles``, ``ground->refimpl``, ``ground->conformance``,
    ``both`` (modules importing both packages), plus every cross-package edge (``cross``)."""
    files = module_files(root)
    known = set(files)
    out: Dict[str, List[Edge]] = {k: [] for k in ("refimpl->oracles", "ground->refimpl", "ground->conformance",
                                                  "cross")}
    targets: Dict[str, Set[str]] = {}
    for mod, path in sorted(files.items()):
        for e in imports_of(mod, path, known):
            src, dst = _top(e.source), _top(e.target)
            if dst not in PACKAGES:
                continue
            targets.setdefault(mod, set()).add(dst)
            if src != dst:
                out["cross"].append(e)
            if src == "refimpl" and dst == "oracles":
                out["refimpl->oracles"].append(e)
            if src == "oracles" and not _in(e.source, CONFORMANCE):
                if dst == "refimpl":
                    out["ground->refimpl"].append(e)
                elif _in(e.target, CONFORMANCE):
                    out["ground->conformance"].append(e)
    out["both"] = sorted(m for m, t in targets.items() if t >= set(PACKAGES))  # type: ignore[assignment]
    out["ground"] = sorted(m for m in files if _top(m) == "oracles" and not _in(m, CONFORMANCE))  # type: ignore
    return out


def _fmt(edges) -> str:
    return "\n  ".join(str(e) for e in edges) or "(none)"


@pytest.fixture(scope="module")
def graph():
    return scan(ROOT)


def test_refimpl_imports_nothing_from_oracles(graph):
    bad = graph["refimpl->oracles"]
    assert not bad, "refimpl must not import oracles; found:\n  " + _fmt(bad)


def test_ground_truth_imports_nothing_from_refimpl(graph):
    assert set(GROUND_TRUTH_EXPECTED) <= set(graph["ground"]), graph["ground"]
    bad = graph["ground->refimpl"] + graph["ground->conformance"]
    assert not bad, ("the ground-truth modules " + ", ".join(graph["ground"]) + " must import nothing from refimpl "
                     "or from the conformance layer; found:\n  " + _fmt(bad))


def test_only_the_conformance_layer_imports_both(graph):
    both = graph["both"]
    outside = [m for m in both if not _in(m, CONFORMANCE)]
    # the report: which modules import both, through which edges (pytest shows it with -rP or -s)
    print(f"modules importing both refimpl and oracles ({len(both)}): {', '.join(both)}")
    print("cross-package edges:\n  " + _fmt(graph["cross"]))
    assert not outside, (f"only {', '.join(CONFORMANCE)} may import both refimpl and oracles; also: {outside}\n  "
                         + _fmt([e for e in graph["cross"] if e.source in outside]))
    assert both, "the conformance layer imports both packages; finding none means the scanner is broken"


def test_the_scanner_finds_each_kind_of_edge(tmp_path):
    """A tree with one violation of each kind: the scanner must report every one (so the rules can fail)."""
    files = {
        "refimpl/__init__.py": "",
        "refimpl/ok.py": "from . import _validate\nimport numpy\n",
        "refimpl/_validate.py": "",
        "refimpl/late.py": "def f():\n    from oracles.tolerance import compare\n    return compare\n",
        "refimpl/rel.py": "import importlib\nm = importlib.import_module('oracles.ssm')\n",
        "refimpl/table.py": "T = {('scan', 'numpy'): 'oracles.selective:s6_loop'}\n",
        "oracles/__init__.py": "",
        "oracles/tolerance.py": "",
        "oracles/ssm.py": "from refimpl._validate import x\n",
        "oracles/selective.py": "def g():\n    import refimpl.ssm\n",
        "oracles/attention.py": "from . import checks\n",
        "oracles/checks/__init__.py": "from refimpl import ok\nfrom .. import tolerance\n",
        "oracles/checks/deep.py": "from ..tolerance import compare\nfrom refimpl.ok import y\n",
    }
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    g = scan(str(tmp_path))
    assert {(e.source, e.target, e.how) for e in g["refimpl->oracles"]} == {
        ("refimpl.late", "oracles.tolerance", "from"), ("refimpl.rel", "oracles.ssm", "import_module"),
        ("refimpl.table", "oracles.selective", "lazy")}
    assert {(e.source, e.target) for e in g["ground->refimpl"]} == {("oracles.ssm", "refimpl._validate"),
                                                                     ("oracles.selective", "refimpl.ssm")}
    assert {(e.source, e.target) for e in g["ground->conformance"]} == {("oracles.attention", "oracles.checks")}
    assert g["both"] == ["oracles.checks", "oracles.checks.deep"]
    # relative imports resolve against the package (an __init__ is its own package)
    known = set(module_files(str(tmp_path)))
    deep = imports_of("oracles.checks.deep", str(tmp_path / "oracles/checks/deep.py"), known)
    assert ("oracles.tolerance", "from") in {(e.target, e.how) for e in deep}
    init = imports_of("oracles.checks", str(tmp_path / "oracles/checks/__init__.py"), known)
    assert "oracles.tolerance" in {e.target for e in init}


def _loaded_after(code: str) -> List[str]:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM=os.environ.get("NUMBA_ENABLE_CUDASIM", "1"))
    proc = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_importing_refimpl_loads_no_oracles_module():
    mods = _loaded_after("import refimpl, refimpl.ssm, refimpl.attention")
    assert not [m for m in mods if _top(m) == "oracles"], [m for m in mods if _top(m) == "oracles"]


def test_importing_the_ground_truth_loads_no_refimpl_module(graph):
    mods = _loaded_after("\n".join(f"import {m}" for m in graph["ground"]))
    loaded = [m for m in mods if _top(m) == "refimpl"]
    assert not loaded, f"importing {graph['ground']} loaded {loaded}"
