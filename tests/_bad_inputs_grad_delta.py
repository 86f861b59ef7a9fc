"""Bad-input contracts of the delta rule's backward pass (``refimpl.attention.delta.delta_rule_vjp``): every view
function (``backward:recurrent_vjp``, ``backward:chunked_vjp``, ``numba_backward:delta_chunked_vjp``) and every
registered (view, backend) pair of the entry point; the cotangents ``do`` and ``d_final_state`` are checked like
inputs."""
from __future__ import annotations

from typing import List

from _bad_inputs import Arr, Contract, Int, Opt, Real

_DL = "refimpl.attention.delta"


def contracts() -> List[Contract]:
    import refimpl.attention.delta  # noqa: F401  (registers the table)
    from refimpl._dispatch import registered

    args = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"), beta=Arr("b l h", gen="unit"),
                do=Arr("b l h p"), d_final_state=Arr("b h p n", optional=True),
                decay=Arr("b l h", gen="unit", positive=True, optional=True),
                initial_state=Arr("b h p n", optional=True), key_norm=Opt("l2", ("sum", "l2"), none_ok=True),
                query_norm=Opt(None, ("sum", "l2"), none_ok=True), scale=Real(0.5))
    chunk = dict(chunk=Int(2, minimum=1))
    targets = [f"{_DL}.backward:recurrent_vjp", (f"{_DL}.backward:chunked_vjp", chunk),
               (f"{_DL}.numba_backward:delta_chunked_vjp", chunk)]
    for view, backend in registered()["refimpl.attention.delta_rule_vjp"].pairs():
        extra = dict(view=Opt(view), backend=Opt(backend))
        if view == "chunked":
            extra.update(chunk)
        targets.append((f"{_DL}:delta_rule_vjp", extra))
    return [Contract(targets, args, sizes=dict(b=2, l=4, h=2, n=3, p=2), positional=4,
                     empty=("b", "l", "h", "p"))]
