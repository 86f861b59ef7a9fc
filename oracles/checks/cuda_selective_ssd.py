"""Report rows ``cuda/chunked`` for the GPU twins of the selective scan (``refimpl/ssm/selective/cuda.py``) and
SSD (``refimpl/ssm/ssd/cuda.py``).

Each row runs one kernel through its entry point (``selective_scan`` / ``ssd_scan`` with ``view="chunked"``,
``backend="cuda"``) in float32 on small seeded inputs with every option switched on -- on a CUDA device when one
is present, else under the CUDA simulator (in a subprocess when the report imported numba without it), else
listed as skipped with the reason (:func:`oracles.checks._cuda.cuda_check`).  The oracle is the float64 banded
solve (:func:`oracles.selective.s6_solve` / :func:`~oracles.selective.ssd_solve`); the bound is the derived one of
the view whose order of operations the kernel follows: S6 -- :func:`oracles.selective.s6_bound` with
``view="scan"`` (the in-chunk Kogge-Stone combination is the scan view's log-space operator); SSD --
:func:`oracles.selective.ssd_bound` with ``view="chunked"`` and the kernel's chunk.
"""
from __future__ import annotations

import numpy as np

from oracles import selective as O
from oracles.checks import row, timed
from oracles.checks._cuda import cuda_check
from oracles.checks._ssd_cases import ssd_inputs
from oracles.tolerance import compare

SEED = 20261202
CHUNK = 4  # several chunks (and a short last one) at the report's small shapes
_S6_ROWS = [(f"ssm.selective_scan.{disc}.{kind}", "cuda/chunked")
            for disc, kind in (("mamba", "real"), ("zoh", "complex"))]


def _s6_inputs(cplx: bool, disc: str, dtype=np.float32):
    rng = np.random.default_rng(SEED + 7 * cplx + (disc == "zoh"))
    b, d, l, n = 1, 2, 11, 3
    A = -np.exp(rng.standard_normal((d, n)))
    if cplx:
        A = A + 1j * np.pi * rng.standard_normal((d, n))
    cdt = np.result_type(dtype, np.complex64)
    args = [rng.standard_normal((b, l, d)), rng.standard_normal((b, l, d)) - 1.0, A,
            rng.standard_normal((b, l, 2, n)), rng.standard_normal((b, l, n)), rng.standard_normal(d),
            rng.standard_normal((b, l, d))]
    args = [a.astype(cdt if np.iscomplexobj(a) else dtype) for a in args]
    h0 = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)
    kw = dict(delta_bias=rng.standard_normal(d).astype(dtype), delta_softplus=True,
              initial_state=h0.astype(cdt if cplx else dtype), discretization=disc)
    return args, kw


@cuda_check(rows=_S6_ROWS)
def cuda_selective_scan():
    from refimpl.ssm.selective import selective_scan

    rows = []
    for (op, impl), (disc, cplx) in zip(_S6_ROWS, (("mamba", False), ("zoh", True))):
        args, kw = _s6_inputs(cplx, disc)
        y, h = O.s6_solve(*args, **kw)
        (out, last), t = timed(selective_scan, *args, **kw, view="chunked", backend="cuda", chunk=CHUNK,
                               return_final_state=True)
        bo, _ = O.s6_bound(*args, **kw, dtype=np.float32, view="scan")
        rows.append(row(op, impl, compare(out, y, bo), t,
                        note=f"b l d n = {args[0].shape + (args[2].shape[1],)}, chunk {CHUNK}, grouped B, variable C, "
                             "D, z, bias, softplus, initial state; bound of the scan view"))
    return rows


def _ssd_inputs(dtype=np.float32):
    return ssd_inputs(SEED + 100, dtype, b=1, l=10, h=2, p=2, g=1, n=3, boundaries=(3, 7))


@cuda_check(rows=[("ssm.ssd", "cuda/chunked")])
def cuda_ssd_scan():
    from refimpl.ssm.ssd import ssd_scan

    args, kw = _ssd_inputs()
    y, _ = O.ssd_solve(*args, **kw)
    (out, _), t = timed(ssd_scan, *args, **kw, view="chunked", backend="cuda", chunk=CHUNK, return_final_state=True)
    by, _ = O.ssd_bound(*args, **kw, dtype=np.float32, view="chunked", chunk=CHUNK)
    return [row("ssm.ssd", "cuda/chunked", compare(out, y, by), t,
                note=f"b l h p n = {args[0].shape + (args[3].shape[3],)}, chunk {CHUNK}, seq_idx, clamp, bias, "
                     "softplus, D (h p), z, initial state; bound of the chunked view")]
