"""Report rows for gradients (``<op>.grad``), shared by the families' ``oracles/checks/grad_<family>.py``.

* :func:`grad_rows` -- one backward (view, backend) of refimpl against :func:`oracles.gradients.fd_vjp` on a small
  case: each input's gradient compared under ``Bound(fd error) + the derived rounding bound``; one row, the input
  with the worst err/bound shown, every input's ratio in the note; the row passes only when every input does.
* :func:`grad_agreement_row` -- a kernel's gradients against our NumPy reference's on a longer case (no
  differences: the two backwards), under a bound the caller derives for both.

Usage (a family's check module)::

    fd = fd_vjp(oracle_forward, inputs, cotangents, wrt)
    bounds = {name: componentwise_bound(M[name], depth, np.float64, oracle_dtype=None) for name in wrt}
    g, t = timed(my_vjp, ..., dy=..., view=view, backend=backend)
    rows += grad_rows("attention.fast_weights", f"{backend}/{view}", g, fd, bounds, t, note="L=9")
"""
from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np

from oracles.checks import Row, row
from oracles.tolerance import Bound, compare

__all__ = ["grad_rows", "grad_agreement_row", "fd_bound"]


def fd_bound(fd, name: str) -> Bound:
    """The differences' own error bound of input ``name`` as a :class:`Bound`."""
    return Bound(fd.error[name], "finite differences (Richardson truncation estimate + rounding, oracles.gradients)")


def grad_rows(op: str, impl: str, grads: Mapping[str, np.ndarray], fd, bounds: Mapping[str, Bound], time_s: float,
              note: str = "", *, names=None) -> List[Row]:
    """``[Row]`` named ``<op>.grad``: ``grads[name]`` vs ``fd.grad[name]`` under ``fd error + bounds[name]``."""
    names = list(fd.grad) if names is None else list(names)
    cmps = {}
    for n in names:
        if n not in grads:
            cmps[n] = compare(np.full(np.shape(fd.grad[n]), np.nan), fd.grad[n], fd_bound(fd, n) + bounds[n])
            cmps[n].message = f"no gradient returned for {n}"
            continue
        cmps[n] = compare(grads[n], fd.grad[n], fd_bound(fd, n) + bounds[n])
    if not cmps:
        raise ValueError("grad_rows: no input to compare")
    worst = max(cmps, key=lambda n: cmps[n].worst_ratio)
    ratios = ", ".join(f"{n} {c.worst_ratio:.2g}" for n, c in cmps.items())
    r = row(f"{op}.grad", impl, cmps[worst], time_s,
            note=f"worst grad {worst}; err/bound per input: {ratios}" + (f"; {note}" if note else ""))
    r.passed = all(c.passed for c in cmps.values())
    return [r]


def grad_agreement_row(op: str, impl: str, grads: Mapping[str, np.ndarray], ref_grads: Mapping[str, np.ndarray],
                       bounds: Mapping[str, Bound], time_s: float, note: str = "") -> Row:
    """A kernel's gradients against our reference's (``<op>.grad``, e.g. ``numba/chunked vs numpy``)."""
    cmps: Dict[str, object] = {n: compare(grads[n], ref_grads[n], bounds[n]) for n in ref_grads}
    worst = max(cmps, key=lambda n: cmps[n].worst_ratio)
    ratios = ", ".join(f"{n} {c.worst_ratio:.2g}" for n, c in cmps.items())
    r = row(f"{op}.grad", impl, cmps[worst], time_s,
            note=f"against our NumPy backward; worst grad {worst}; err/bound per input: {ratios}"
                 + (f"; {note}" if note else ""))
    r.passed = all(c.passed for c in cmps.values())
    return r
