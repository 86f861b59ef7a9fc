"""The README's algorithm table says what the code has: every entry point, its views and its backends."""
import re
from pathlib import Path

import refimpl

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_rows():
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\| [^|]+ \| `(refimpl\.[a-z0-9_.]+)` \| ([^|]+) \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def _parse_backends(text, views):
    pairs = set()
    for part in text.split(";"):
        part = part.strip()
        m = re.match(r"(numpy|numba|cuda)(?: \(([^)]*)\))?$", part)
        assert m, f"cannot read backends {text!r}"
        vs = [v.strip() for v in m.group(2).split(",")] if m.group(2) else views
        pairs |= {(v, m.group(1)) for v in vs}
    return pairs


def test_every_entry_point_is_in_the_readme_table_with_its_views_and_backends():
    rows = _table_rows()
    registered = refimpl.entry_points()
    assert set(registered) == set(rows), (set(registered) ^ set(rows))
    for name, pairs in registered.items():
        views_text, backends_text = rows[name]
        views = [v.strip() for v in views_text.split(":")[-1].split(",")]
        assert views == list(dict.fromkeys(v for v, _ in pairs)), name
        assert _parse_backends(backends_text, views) == set(pairs), name


def test_the_table_parser_sees_a_wrong_backend():
    assert _parse_backends("numpy; numba (recurrent)", ["recurrent", "scan"]) == {
        ("recurrent", "numpy"), ("scan", "numpy"), ("recurrent", "numba")}
    assert _parse_backends("numpy", ["recurrent"]) != {("recurrent", "numpy"), ("recurrent", "numba")}
