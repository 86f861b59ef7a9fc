"""The results folder: one JSON file per result key, written atomically.

``<results>/<op>/<hash>.json`` holds ``{"key": {...}, "status": ..., ...}`` where ``hash`` is the SHA-1 of the
key (op, candidate, conventions, dtype, case id, seed, library version).  A file is written to a temporary
name in the same folder and renamed over the final one (``os.replace``), so a sweep killed mid-write leaves
either the old result or the new one, never half a file; a file that does not parse is treated as missing.
Failing cases' heatmaps go to ``<results>/plots/<hash>.png``.
"""
from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from typing import Any, Dict, Iterator, Optional

__all__ = ["ResultStore", "DONE", "FAILED"]

DONE = ("pass", "fail", "error", "skip")  # a result with one of these is not rerun
FAILED = ("fail", "error")  # what --rerun-failed redoes


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class ResultStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def path(self, op: str, h: str) -> str:
        return os.path.join(self.root, _safe(op), h + ".json")

    def plot_path(self, h: str) -> str:
        return os.path.join(self.root, "plots", h + ".png")

    def attempts_dir(self) -> str:
        """Where the workers of an embedded cluster count each case's started attempts."""
        return os.path.join(self.root, ".attempts")

    def clear_attempts(self, h: str) -> None:
        try:
            os.unlink(os.path.join(self.attempts_dir(), h))
        except OSError:
            pass

    def load(self, op: str, h: str) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path(op, h)) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and rec.get("status") in DONE else None

    def write(self, record: Dict[str, Any]) -> str:
        """Write ``record`` (its heatmap, if any, to ``plots/``) atomically; return the JSON file's path."""
        op, h = record["key"]["op"], record["hash"]
        png = record.pop("heatmap_png", None)
        if png:
            p = os.path.abspath(self.plot_path(h))
            self._atomic(p, base64.b64decode(png))
            if record.get("case"):
                record["case"]["plot"] = p
        path = self.path(op, h)
        self._atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str).encode())
        return path

    @staticmethod
    def _atomic(path: str, data: bytes) -> None:
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the results unreadable to others
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def records(self) -> Iterator[Dict[str, Any]]:
        """Every stored result (any grid, any version)."""
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in sorted(files):
                if f.endswith(".json") and not f.startswith("."):
                    try:
                        with open(os.path.join(dirpath, f)) as fh:
                            rec = json.load(fh)
                    except (OSError, ValueError):
                        continue
                    if isinstance(rec, dict) and "key" in rec:
                        yield rec
