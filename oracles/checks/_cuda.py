"""Where the ``cuda/...`` report rows run, and the subprocess that runs them under the simulator.

:func:`cuda_status` says what this process can do with numba.cuda:

* ``("device", name)``     -- a real CUDA device (numba not in simulator mode, ``cuda.is_available()``);
* ``("simulator", text)``  -- numba was imported with ``NUMBA_ENABLE_CUDASIM=1`` (the test suite's mode);
* ``("unavailable", why)`` -- neither: no device, and numba (already imported by the CPU checks) is not
  in simulator mode, or numba.cuda cannot be imported at all.

:func:`cuda_check` registers a check with ``refimpl report`` (like :func:`oracles.checks.check`) and
declares the ``(op, impl)`` rows it returns.  When the report runs, the check:

1. runs in this process on the device or under the simulator when :func:`cuda_status` allows;
2. otherwise (numba usable but no device, simulator off) every registered cuda check runs **once**, all
   together, in one subprocess ``python -m oracles.checks._cuda MODULE:NAME ...`` with
   ``NUMBA_ENABLE_CUDASIM=1``; its rows come back as JSON on stdout;
3. when that is impossible (numba.cuda does not import; the subprocess cannot start the simulator),
   each declared row comes back as a skipped row with the reason -- listed SKIP, never absent.

A check that raises (in process or in the subprocess) is a failing row, as for every other check.
Each row's note says where it ran (``[device: NAME]``, ``[CUDA simulator]``,
``[CUDA simulator, subprocess]``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from oracles.checks import Row, check, skipped_row

SUBPROCESS_TIMEOUT_S = 600
_CUDA_CHECKS: Dict[str, Callable[[], List[Row]]] = {}  # "module:name" -> the undecorated check
_SUBPROCESS_ROWS: Optional[Dict[str, dict]] = None  # filled by the one subprocess run


def cuda_status() -> Tuple[str, str]:
    """``("device", name)`` | ``("simulator", text)`` | ``("unavailable", reason)`` for this process."""
    try:
        from numba import config
        from numba import cuda
    except Exception as exc:  # noqa: BLE001
        return "unavailable", f"numba.cuda does not import: {type(exc).__name__}: {exc}"
    if config.ENABLE_CUDASIM:
        return "simulator", "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): NumPy arrays, Python threads"
    try:
        if cuda.is_available():
            name = cuda.get_current_device().name
            return "device", name.decode() if isinstance(name, bytes) else str(name)
        return "unavailable", "no CUDA device, and numba was imported without NUMBA_ENABLE_CUDASIM=1"
    except Exception as exc:  # noqa: BLE001
        return "unavailable", f"numba.cuda is not usable: {type(exc).__name__}: {exc}"


def _key(fn) -> str:
    return f"{fn.__module__}:{fn.__name__}"


def _tag(rows: List[Row], where: str) -> List[Row]:
    for r in rows:
        r.note = f"[{where}] {r.note}".rstrip()
    return rows


def _crash_row(name: str, exc_text: str) -> Row:
    nan = float("nan")
    return Row(op=name, impl="check crashed", dtype="-", max_abs_err=nan, max_rel_err=nan, bound=nan,
               passed=False, time_s=0.0, note=exc_text)


def _run_subprocess() -> Dict[str, dict]:
    """Run every registered cuda check in one simulator subprocess; ``{key: {"rows": [...]} | {"error": ...}}``."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("REFIMPL_REAL_GPU", None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "oracles.checks._cuda", *sorted(_CUDA_CHECKS)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        return {"*": {"skip": f"the CUDA-simulator subprocess did not run: {type(exc).__name__}: {exc}"}}
    marker = "@@CUDA_ROWS@@"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(marker)), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"*": {"skip": f"the CUDA-simulator subprocess gave no rows (exit {proc.returncode}): "
                              + " | ".join(tail)}}
    return json.loads(line[len(marker):])


def cuda_check(rows: Sequence[Tuple[str, str]]):
    """Decorator: register a check of numba.cuda kernels; ``rows`` = the ``(op, impl)`` pairs it returns
    (listed as skipped rows with the reason when the kernels cannot run here)."""
    declared = [tuple(r) for r in rows]

    def deco(fn: Callable[[], List[Row]]):
        key = _key(fn)
        _CUDA_CHECKS[key] = fn

        def run() -> List[Row]:
            global _SUBPROCESS_ROWS
            status, text = cuda_status()
            if status in ("device", "simulator"):
                return _tag(fn(), f"device: {text}" if status == "device" else "CUDA simulator")
            if text.startswith("numba.cuda does not import"):
                return [skipped_row(op, impl, text) for op, impl in declared]
            if _SUBPROCESS_ROWS is None:
                _SUBPROCESS_ROWS = _run_subprocess()
            res = _SUBPROCESS_ROWS.get(key) or _SUBPROCESS_ROWS.get("*") or {
                "skip": f"{key} did not run in the CUDA-simulator subprocess"}
            if "skip" in res:
                return [skipped_row(op, impl, f"{text}; {res['skip']}") for op, impl in declared]
            if "error" in res:
                return [_crash_row(key, res["error"])]
            return _tag([Row(**d) for d in res["rows"]], "CUDA simulator, subprocess")

        run.__name__ = fn.__name__
        run.__module__ = fn.__module__
        run.__doc__ = fn.__doc__
        run.cuda_rows = declared
        run.inner = fn
        check(run)
        return run

    return deco


def run_cuda_checks() -> List[Row]:
    """Every ``cuda/...`` row of every ``oracles/checks/cuda_*.py`` module, run in this process (as the report would
    run them here: device, simulator, subprocess or skipped) -- without the rest of the report."""
    import importlib
    import pkgutil

    import oracles.checks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("cuda_"):
            importlib.import_module(f"oracles.checks.{mod.name}")
    rows: List[Row] = []
    for key in sorted(_CUDA_CHECKS):
        mod, name = key.split(":")
        try:
            rows.extend(getattr(importlib.import_module(mod), name)())
        except Exception as exc:  # noqa: BLE001
            rows.append(_crash_row(key, f"{type(exc).__name__}: {exc}"))
    return rows


def _main(keys: List[str]) -> int:
    """Subprocess entry: run the named checks here (simulator mode) and print their rows as one JSON line.

    ``python -m oracles.checks._cuda --all [--json FILE]``: print the table of :func:`run_cuda_checks` instead
    (``bench/device_check.sh``); exit 1 when a row fails."""
    import importlib

    if keys and keys[0] == "--all":
        from oracles.cli.report import _failed, format_table

        rows = run_cuda_checks()
        print(f"cuda_status: {cuda_status()}")
        print(format_table(rows))
        if len(keys) == 3 and keys[1] == "--json":
            with open(keys[2], "w") as fh:
                json.dump([r.to_dict() for r in rows], fh, indent=1, default=str)
        n_fail = sum(_failed(r) for r in rows)
        print(f"\n{len(rows)} cuda rows, {n_fail} failed")
        return 1 if n_fail else 0

    out: Dict[str, dict] = {}
    status, text = cuda_status()
    for key in keys:
        mod, name = key.split(":")
        try:
            fn = getattr(importlib.import_module(mod), name)
            fn = getattr(fn, "inner", fn)
            if status not in ("device", "simulator"):
                out[key] = {"skip": text}
                continue
            out[key] = {"rows": [r.to_dict() for r in fn()]}
        except Exception as exc:  # noqa: BLE001
            out[key] = {"error": f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)}"}
    print("@@CUDA_ROWS@@" + json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    # run as the imported module (the check modules register with ``oracles.checks._cuda``, not ``__main__``)
    from oracles.checks._cuda import _main as _entry

    sys.exit(_entry(sys.argv[1:]))
