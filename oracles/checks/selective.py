"""Report rows for the selective scan (S6) and SSD (Mamba-2): every view and backend vs the oracles.

Candidates run in float32 on seeded inputs with every option switched on, through the entry points
(``selective_scan`` / ``ssd_scan`` with ``view=``, ``backend=``, and the decode steps); the oracle is the
float64 banded solve of :mod:`oracles.selective` (:func:`~oracles.selective.s6_solve`,
:func:`~oracles.selective.ssd_solve`) on the same inputs cast up, the bound
:func:`oracles.selective.s6_bound` / :func:`~oracles.selective.ssd_bound` for the view.
"""
from __future__ import annotations


import numpy as np

from oracles import selective as O
from oracles.checks import check, row, timed
from oracles.checks._ssd_cases import ssd_inputs
from oracles.tolerance import compare

SEED = 20261126


def _s6_inputs(cplx: bool, disc: str, dtype=np.float32):
    rng = np.random.default_rng(SEED + 7 * cplx + (disc == "zoh"))
    b, d, l, n = 2, 4, 37, 4
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


@check
def selective_scan_views():
    from refimpl.ssm.selective import selective_scan, selective_step

    rows = []
    for cplx, disc in ((False, "mamba"), (True, "mamba"), (False, "zoh"), (True, "zoh")):
        op = f"ssm.selective_scan.{disc}.{'complex' if cplx else 'real'}"
        args, kw = _s6_inputs(cplx, disc)
        y, h = O.s6_solve(*args, **kw)
        chunk = 8
        runs = {  # impl -> (view, backend, the bound's view)
            "reference/recurrent": ("recurrent", "numpy", "recurrent"),
            "reference/scan": ("scan", "numpy", "scan"),
            "reference/chunked": ("chunked", "numpy", "chunked"),
            "numba/fused": ("recurrent", "numba", "numba"),
        }
        for impl, (view, backend, bview) in runs.items():
            def fn(view=view, backend=backend):
                return selective_scan(*args, **kw, view=view, backend=backend, chunk=chunk, return_final_state=True)

            if backend == "numba":
                fn()  # JIT / cache load outside the timing
            (out, last), t = timed(fn)
            bo, _ = O.s6_bound(*args, **kw, dtype=np.float32, view=bview, chunk=chunk)
            rows.append(row(op, impl, compare(out, y, bo), t, note=f"b l d n = {args[0].shape + (args[2].shape[1],)}, "
                                                                      "grouped B, variable C, D, z, bias, softplus, "
                                                                      "initial state"))
        # the decode step, one token at a time
        u, delta, A, B, C, D, z = args
        b, l, d = u.shape
        state = kw["initial_state"]
        outs = []

        def decode():
            st = state
            for t_ in range(l):
                o, st = selective_step(st, u[:, t_], delta[:, t_], A, B[:, t_], C[:, t_], D, z[:, t_],
                                       delta_bias=kw["delta_bias"], delta_softplus=True, discretization=disc)
                outs.append(o)
            return st

        _, t = timed(decode)
        bo, _ = O.s6_bound(*args, **kw, dtype=np.float32, view="recurrent")
        rows.append(row(op, "reference/step", compare(np.stack(outs, axis=1), y, bo), t,
                        note="decode loop of selective_step()"))
    return rows


@check
def selective_scan_oracles():
    """The oracles checked against each other: dense operator vs banded solve (float64), solve vs mpmath (tiny)."""
    rows = []
    args, kw = _s6_inputs(True, "zoh", dtype=np.float64)
    (yd, hd), t = timed(O.s6_dense, *args, **kw)
    y, h = O.s6_solve(*args, **kw)
    bq, _ = O.s6_bound(*args, **kw, dtype=np.float64, view="quadratic")
    rows.append(row("ssm.selective_scan.zoh.complex", "oracle/dense_operator", compare(yd, y, bq), t,
                    note="materialized M vs the float64 banded-solve oracle"))
    u, delta, A, B, C, D, z = args
    small = [u[:1, :6, :2], delta[:1, :6, :2], A[:2, :2], B[:1, :6, :1, :2], C[:1, :6, :2], D[:2], z[:1, :6, :2]]
    skw = dict(kw, delta_bias=kw["delta_bias"][:2], initial_state=kw["initial_state"][:1, :2, :2])
    (ym, hm), t = timed(O.s6_mpmath, *small, **skw)
    yl, hl = O.s6_solve(*small, **skw)
    bl, _ = O.s6_bound(*small, **skw, dtype=np.float64, oracle_dtype=None)
    rows.append(row("ssm.selective_scan.zoh.complex", "oracle/solve_vs_mpmath", compare(yl, ym, bl), t,
                    note="float64 banded-solve oracle vs 50-digit mpmath, b l d n = 1 6 2 2"))
    return rows


def _ssd_inputs(dtype=np.float32):
    return ssd_inputs(SEED + 100, dtype, b=2, l=29, h=4, p=3, g=2, n=5, boundaries=(11, 20))


@check
def ssd_views():
    from refimpl.ssm.ssd import ssd_scan, ssd_step

    rows = []
    args, kw = _ssd_inputs()
    y, fin = O.ssd_solve(*args, **kw)
    chunk = 8
    note = "b l h p g n = 2 29 4 3 2 5, chunk 8, D (h,p), z, dt_bias, softplus, dt_limit, initial_state, seq_idx"
    runs = {  # impl -> (view, backend, the bound's view)
        "reference/recurrent": ("recurrent", "numpy", "recurrent"),
        "reference/quadratic": ("quadratic", "numpy", "quadratic"),
        "reference/chunked": ("chunked", "numpy", "chunked"),
        "numba/chunked": ("chunked", "numba", "numba_chunked"),
    }
    for impl, (view, backend, bview) in runs.items():
        def fn(view=view, backend=backend):
            return ssd_scan(*args, **kw, view=view, backend=backend, chunk=chunk, return_final_state=True)

        if backend == "numba":
            fn()  # JIT / cache load outside the timing
        (out, _), t = timed(fn)
        bo, _ = O.ssd_bound(*args, **kw, dtype=np.float32, view=bview, chunk=chunk)
        rows.append(row("ssm.ssd", impl, compare(out, y, bo), t, note=note))
    # decode: ssd_step() over the second batch row (one sequence, so no seq_idx is needed)
    x, dt, A, B, C, D, z = args
    row1 = [a[1:] if a.ndim > 2 else a for a in args]
    kw1 = dict(kw, initial_state=kw["initial_state"][1:], seq_idx=None)
    y1, _ = O.ssd_solve(*row1, **kw1)

    def decode():
        st = kw["initial_state"][1:]
        outs = []
        for t_ in range(x.shape[1]):
            o, st = ssd_step(st, x[1:, t_], dt[1:, t_], A, B[1:, t_], C[1:, t_], D, z[1:, t_], dt_bias=kw["dt_bias"],
                             dt_softplus=True, dt_limit=kw["dt_limit"])
            outs.append(o)
        return np.stack(outs, axis=1)

    out, t = timed(decode)
    bo, _ = O.ssd_bound(*row1, **kw1, dtype=np.float32)
    rows.append(row("ssm.ssd", "reference/step", compare(out, y1, bo), t,
                    note="decode loop of ssd_step(), batch row 1"))
    return rows


@check
def ssd_oracles():
    """SSD oracles checked against each other: dense operator vs banded solve (float64), solve vs mpmath (tiny)."""
    rows = []
    args, kw = _ssd_inputs(np.float64)
    (yd, _), t = timed(O.ssd_dense, *args, **kw)
    y, _ = O.ssd_solve(*args, **kw)
    bq, _ = O.ssd_bound(*args, **kw, dtype=np.float64, view="quadratic")
    rows.append(row("ssm.ssd", "oracle/dense_operator", compare(yd, y, bq), t,
                    note="materialized M with explicit transition products vs the float64 banded-solve oracle"))
    x, dt, A, B, C, D, z = args
    small = [x[:1, :7, :2, :2], dt[:1, :7, :2], A[:2], B[:1, :7, :1, :2], C[:1, :7, :1, :2], D[:2, :2], z[:1, :7, :2, :2]]
    skw = dict(kw, dt_bias=kw["dt_bias"][:2], initial_state=kw["initial_state"][:1, :2, :2, :2],
               seq_idx=np.array([[0, 0, 0, 1, 1, 1, 1]]))
    (ym, _), t = timed(O.ssd_mpmath, *small, **skw)
    yl, _ = O.ssd_solve(*small, **skw)
    bl, _ = O.ssd_bound(*small, **skw, dtype=np.float64, oracle_dtype=None)
    rows.append(row("ssm.ssd", "oracle/solve_vs_mpmath", compare(yl, ym, bl), t,
                    note="float64 banded-solve oracle vs 50-digit mpmath, b l h p n = 1 7 2 2 2 with seq_idx"))
    return rows


@check
def ssd_duality():
    """SSD == selective scan with A broadcast per head == causal linear attention with decay (float64)."""
    from refimpl.ssm.selective import selective_scan

    rows = []
    args, kw = _ssd_inputs(np.float64)
    kw = dict(kw, seq_idx=None)
    x, dt, A, B, C, D, z = args
    b, l, h, p = x.shape
    y, fin = O.ssd_solve(*args, **kw)
    a = O.ssd_as_s6(*args, **kw)
    for impl, view, backend, bview in (("reference/selective_scan.recurrent", "recurrent", "numpy", "recurrent"),
                                       ("reference/selective_scan.scan", "scan", "numpy", "scan"),
                                       ("numba/selective_scan.fused", "recurrent", "numba", "numba")):
        selective_scan(a["u"][:, :2], a["delta"][:, :2], a["A"], a["B"][:, :2], a["C"][:, :2], view=view,
                       backend=backend)  # warm
        o, t = timed(selective_scan, a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                     initial_state=a["initial_state"], view=view, backend=backend)
        ys = o.reshape(b, l, h, p)
        bo, _ = O.ssd_bound(*args, **kw, dtype=np.float64, view=bview)
        rows.append(row("ssm.ssd.duality", impl, compare(ys, y, bo), t, note="S6 on channels (h p), A_h on every state"))
    dte = O.ssd_effective_dt(dt, kw["dt_bias"], True, kw["dt_limit"])
    grp = np.arange(h) // (h // B.shape[2])
    (o_la), t = timed(O.decayed_linear_attention, C[:, :, grp], B[:, :, grp], dte[..., None] * x, np.exp(dte * A),
                      initial_state=kw["initial_state"])
    o_la = (o_la + D * x) * (z / (1.0 + np.exp(-z)))
    bo, _ = O.ssd_bound(*args, **kw, dtype=np.float64, view="quadratic")
    rows.append(row("ssm.ssd.duality", "oracle/linear_attention", compare(o_la, y, bo), t,
                    note="q = C, k = B, v = dt x, decay exp(dt A), masked attention matrix"))
    return rows
