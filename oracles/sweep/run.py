"""Running a sweep's tasks on dask.distributed.

:func:`run_task` runs one task on a worker: :func:`oracles.verify.verify` with ``cases=[that case]`` and
``probes=False`` (or ``cases=[]`` and the probes, for a probes task), in one dtype; it returns a JSON-ready
record.  :func:`run_sweep` submits every task not already done to a ``dask.distributed`` client (an embedded
``LocalCluster`` of worker processes by default: one single-threaded worker per core, so a worker that dies
takes only its own case with it), streams the results back with ``as_completed`` and writes each to the
results folder as it arrives.

Retries: ``submit(..., retries=1)`` reruns a task once when it raises out of :func:`run_task` (the
candidate's own exceptions never do: verify reports them as the case's error).  A worker that *dies* (a
segfault, ``os._exit``, the out-of-memory killer) is the scheduler's business: it reruns the tasks the worker
held.  On the embedded cluster each attempt that actually starts is counted in a file of the results folder
(``.attempts/<hash>``): a case whose worker died on :data:`MAX_ATTEMPTS` (2) attempts is not started a third
time but reported as that case's error.  (The scheduler's own count, ``allowed-failures``, also charges the
tasks merely waiting on the worker that died, which never ran; it is set above ours, and if it is ever
reached the case is reported as an error too (``KilledWorker``), never a hang.)  The embedded scheduler also
runs with ``worker-saturation = 1.0`` so that a single-threaded worker is sent one task at a time where it
can.  With ``--scheduler ADDRESS`` attempts are counted the same way when every worker runs on this machine
(they share the folder); for workers elsewhere the existing scheduler's ``allowed-failures`` (dask's
default: 3) decides alone.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

from oracles.sweep.grid import Task, cpu_count, length_case
from oracles.sweep.store import FAILED, ResultStore

__all__ = ["run_task", "run_sweep", "open_client", "SweepRun", "case_status"]

MAX_ATTEMPTS = 2  # a case whose worker died on this many started attempts is reported, not started again
ALLOWED_FAILURES = MAX_ATTEMPTS + 3  # the embedded scheduler's limit (it also counts attempts that never started)


def case_status(case: Dict[str, Any]) -> str:
    if case.get("skipped"):
        return "skip"
    if case.get("error") is not None:
        return "error"
    return "pass" if case.get("passed") else "fail"


def _base(task: Task) -> Dict[str, Any]:
    return {"key": task.key(), "hash": task.hash, "op": task.op, "function": task.function, "label": task.label,
            "adapter": task.adapter, "framework": task.framework, "conventions": task.conventions,
            "domain": task.domain, "dtype": task.dtype, "size_class": task.size_class, "seed": task.seed,
            "case_id": task.case_id}


def error_record(task: Task, message: str, kind: str = "case") -> Dict[str, Any]:
    """A result for a task that produced none (its worker died, or the harness itself failed)."""
    from oracles.verify.report import CaseResult, ProbeResult

    rec = _base(task)
    rec["status"] = "error"
    rec["sweep_error"] = message
    if task.is_probes:
        rec["probes"] = [ProbeResult("sweep", False, message, dtype=task.dtype).to_dict()]
    else:
        rec["case"] = CaseResult(task.case_id, kind, task.dtype, dict(task.conventions), {}, task.seed,
                                 error=message).to_dict()
    return rec


def _start_attempt(attempts_dir: str, h: str) -> int:
    """Count this attempt in ``attempts_dir/h`` (one line per started attempt); return the earlier ones."""
    os.makedirs(attempts_dir, exist_ok=True)
    path = os.path.join(attempts_dir, h)
    try:
        with open(path) as fh:
            before = sum(1 for _ in fh)
    except OSError:
        before = 0
    if before < MAX_ATTEMPTS:
        with open(path, "a") as fh:
            fh.write(f"pid {os.getpid()} at {time.time():.3f}\n")
            fh.flush()
            os.fsync(fh.fileno())
    return before


def run_task(task: Task, plots: bool = True, attempts_dir: Optional[str] = None) -> Dict[str, Any]:
    """Run one task (on a worker); never raises for anything the candidate does.  ``attempts_dir``: a folder
    this worker shares with the client, where started attempts are counted (see the module's docstring)."""
    from oracles.verify import get_op, resolve_candidate, verify

    t0 = time.perf_counter()
    if attempts_dir is not None:
        before = _start_attempt(attempts_dir, task.hash)
        if before >= MAX_ATTEMPTS:
            return error_record(task, f"the worker running this case died on each of its {before} attempts (the "
                                      "candidate probably crashed its process: a segfault, os._exit, out of "
                                      "memory); not started again")
    try:
        spec = get_op(task.op)
        fn = resolve_candidate(task.function)
        common = dict(adapter=task.adapter, conventions=task.conventions, dtype=task.dtype,
                      framework=None if task.framework == "numpy" else task.framework, seed=task.seed,
                      candidate_name=task.function, timeout=task.timeout, domain=task.domain)
        rec = _base(task)
        if task.is_probes:
            rep = verify(spec, fn, cases=[], probes=True, diagnose=False, **common)
            rec["probes"] = [p.to_dict() for p in rep.probes]
            rec["status"] = "pass" if all(p.passed for p in rep.probes) else "fail"
        else:
            case = task.case
            if case is None:
                conv = spec.resolve_conventions(task.conventions)
                case = length_case(spec, conv, spec.resolve_domain(task.domain), task.size_class, task.length,
                                   task.index, task.seed)
            with tempfile.TemporaryDirectory(prefix="refimpl-sweep-") as tmp:
                rep = verify(spec, fn, cases=[case], probes=False, plots=tmp if plots and _has_matplotlib() else None,
                             **common)
                if not rep.cases:  # outside the declared domain
                    why = rep.outside_domain[0]["reason"] if rep.outside_domain else "not run"
                    rec["status"] = "skip"
                    from oracles.verify.report import CaseResult

                    rec["case"] = CaseResult(case.case_id, case.kind, task.dtype, dict(task.conventions),
                                             case.shapes(), task.seed, skipped=f"outside the declared domain: {why}",
                                             note=case.note).to_dict()
                else:
                    c = rep.cases[0]
                    if c.plot and os.path.exists(c.plot):
                        with open(c.plot, "rb") as fh:
                            rec["heatmap_png"] = base64.b64encode(fh.read()).decode()
                    c.plot = None
                    rec["case"] = c.to_dict()
                    rec["status"] = case_status(rec["case"])
        rec["notes"] = list(rep.notes)
    except MemoryError:
        raise  # a transient failure of the worker: submit(retries=1) runs the task again
    except Exception as exc:  # the harness could not run the task at all: reported as that case's error
        rec = error_record(task, f"the sweep could not run this task: {type(exc).__name__}: {exc}\n"
                                 + traceback.format_exc(limit=6))
    if attempts_dir is not None:
        rec["attempt"] = before + 1
    rec["seconds"] = time.perf_counter() - t0
    rec["worker_pid"] = os.getpid()
    try:
        from distributed import get_worker

        rec["worker"] = get_worker().address
    except Exception:
        rec["worker"] = None
    return rec


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def open_client(scheduler: Optional[str] = None, workers: Optional[int] = None, processes: bool = True):
    """``(client, cluster)``: a client of the scheduler at ``scheduler``, else of an embedded LocalCluster
    (``workers`` single-threaded workers, default one per core; ``processes=False``: threads in this process)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout=30), None
    # worker-saturation 1.0: a single-threaded worker holds only the task it runs (dask's default 1.1 would
    # send it a second one, which a crash of the first would take down with it)
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=workers or cpu_count(), threads_per_worker=1, processes=processes,
                               dashboard_address=":0", worker_dashboard_address=None, silence_logs=logging.ERROR,
                               scheduler_port=0)
    return Client(cluster), cluster


@dataclasses.dataclass
class SweepRun:
    """What one invocation did: tasks in the grid, skipped as already done, run now, and each status' count."""

    total: int = 0
    skipped_done: int = 0
    ran: int = 0
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)
    records: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)  # hash -> record (all grid tasks)
    seconds: float = 0.0


def run_sweep(tasks: Sequence[Task], store: ResultStore, *, client=None, scheduler: Optional[str] = None,
              workers: Optional[int] = None, processes: bool = True, rerun_failed: bool = False,
              progress: Optional[Callable[[int, int, Dict[str, Any]], None]] = None, plots: bool = True) -> SweepRun:
    """Run every task without a stored result (``rerun_failed``: and those whose stored result failed)."""
    t0 = time.perf_counter()
    out = SweepRun(total=len(tasks))
    todo: List[Task] = []
    for t in tasks:
        rec = store.load(t.op, t.hash)
        if rec is not None and not (rerun_failed and rec["status"] in FAILED):
            out.records[t.hash] = rec
            out.skipped_done += 1
        else:
            todo.append(t)
    if todo:
        own = client is None
        cluster = None
        if own:
            client, cluster = open_client(scheduler, workers, processes)
        attempts = store.attempts_dir() if _local(client) else None
        if attempts is not None:
            for t in todo:  # a fresh count for every case run now
                store.clear_attempts(t.hash)
        try:
            _submit_all(client, todo, store, out, progress, plots, attempts)
            if attempts is not None:
                try:
                    os.rmdir(attempts)  # empty unless a case is still running elsewhere
                except OSError:
                    pass
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    for rec in out.records.values():
        out.counts[rec["status"]] = out.counts.get(rec["status"], 0) + 1
    out.seconds = time.perf_counter() - t0
    return out


def _local(client) -> bool:
    """Whether every worker of ``client`` runs on this machine (so that they share the results folder)."""
    try:
        import socket

        hosts = {w.get("host") for w in client.scheduler_info()["workers"].values()}
        mine = {"127.0.0.1", "localhost", socket.gethostname()}
        try:
            mine.add(socket.gethostbyname(socket.gethostname()))
        except OSError:
            pass
        return bool(hosts) and hosts <= mine
    except Exception:
        return False


def _submit_all(client, todo: Sequence[Task], store: ResultStore, out: SweepRun, progress, plots: bool,
                attempts: Optional[str] = None) -> None:
    from distributed import as_completed

    by_future = {}
    for t in todo:
        fut = client.submit(run_task, t, plots, attempts, key=f"refimpl-sweep-{t.hash}-{time.time_ns()}", pure=False,
                            retries=1)
        by_future[fut] = t
    done = 0
    for fut in as_completed(list(by_future)):
        t = by_future[fut]
        try:
            rec = fut.result()
        except Exception as exc:  # KilledWorker: its worker died on every attempt; anything else raised twice
            name = type(exc).__name__
            if name == "KilledWorker":
                msg = (f"the workers holding this case died {exc.allowed_failures + 1} times (KilledWorker: {exc}); "
                       "the candidate probably crashed its process (a segfault, os._exit, out of memory)")
            else:
                msg = f"the task failed on each attempt: {name}: {exc}"
            rec = error_record(t, msg)
        fut.release()
        store.write(rec)
        store.clear_attempts(t.hash)
        out.records[t.hash] = rec
        out.ran += 1
        done += 1
        if progress is not None:
            progress(done, len(todo), rec)
