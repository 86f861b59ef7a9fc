"""Bad-input contracts of SSD's backward pass (``refimpl.ssm.ssd.backward``, ``ssd_scan_vjp``): every view function
and every registered (view, backend) pair of the entry point; the cotangents ``dy`` and ``d_final_state`` are
checked like inputs."""
import math

import numpy as np
from _bad_inputs import Arr, Contract, Flag, Int, Opt, Pair

_SSD = "refimpl.ssm.ssd"
_SSDB = "refimpl.ssm.ssd.backward"


def _seq_idx(rng, shape):
    idx = rng.integers(0, 2, shape)
    return np.sort(idx, axis=-1) if idx.ndim else idx


def _pairs():
    from refimpl._dispatch import registered

    out = []
    for view, backend in registered()["refimpl.ssm.ssd_scan_vjp"].pairs():
        extra = dict(view=Opt(view), backend=Opt(backend))
        if view == "chunked":
            extra["chunk"] = Int(2, minimum=1)
        out.append((f"{_SSD}:ssd_scan_vjp", extra))
    return out


def contracts():
    sizes = dict(b=2, l=5, h=4, g=2, p=3, n=6)
    args = dict(x=Arr("b l h p"), dt=Arr("b l h", gen="unit"), A=Arr("h", gen="neg"), B=Arr("b l g n"),
                C=Arr("b l g n"), D=Arr("h", optional=True, alt=("h p",)), z=Arr("b l h p", optional=True),
                dy=Arr("b l h p"), d_final_state=Arr("b h p n", optional=True),
                dt_bias=Arr("h", scale=0.1, optional=True), dt_softplus=Flag(False), dt_limit=Pair((0.0, math.inf)),
                initial_state=Arr("b h p n", optional=True),
                seq_idx=Arr("b l", dtype="int", gen=_seq_idx, optional=True), allow_unstable=Flag(False))
    targets = [f"{_SSDB}:recurrent_vjp", f"{_SSDB}:quadratic_vjp",
               (f"{_SSDB}:chunked_vjp", dict(chunk=Int(2, minimum=1)))] + _pairs()
    return [Contract(targets, args, sizes=sizes, positional=7, empty=("b", "l", "h", "p", "n"))]
