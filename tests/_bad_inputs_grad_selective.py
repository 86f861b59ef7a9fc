"""Bad-input contracts of the selective scan's backward pass (``refimpl.ssm.selective.backward``,
``numba_backward``, ``selective_scan_vjp``): every view function and every registered (view, backend) pair of the
entry point; the cotangents ``dy`` and ``d_final_state`` are checked like inputs."""
from _bad_inputs import Arr, Contract, Flag, Int, Opt

_SEL = "refimpl.ssm.selective"
_SELB = "refimpl.ssm.selective.backward"
_SELN = "refimpl.ssm.selective.numba_backward"


def _pairs():
    from refimpl._dispatch import registered

    out = []
    for view, backend in registered()["refimpl.ssm.selective_scan_vjp"].pairs():
        extra = dict(view=Opt(view), backend=Opt(backend))
        if view == "chunked":
            extra["chunk"] = Int(2, minimum=1)
        out.append((f"{_SEL}:selective_scan_vjp", extra))
    return out


def contracts():
    sizes = dict(b=2, l=5, d=4, n=3, g=2)
    common = dict(delta_bias=Arr("d", scale=0.1, optional=True), delta_softplus=Flag(False),
                  discretization=Opt("mamba", ("mamba", "zoh")), allow_unstable=Flag(False))
    real = dict(u=Arr("b l d"), delta=Arr("b l d", gen="unit"), A=Arr("d n", gen="neg", dtype="complex"),
                B=Arr("b l n", alt=("d n", "b l g n")), C=Arr("b l g n", alt=("d n", "b l n")),
                D=Arr("d", optional=True), z=Arr("b l d", optional=True), dy=Arr("b l d"),
                d_final_state=Arr("b d n", optional=True), **common, initial_state=Arr("b d n", optional=True))
    cplx = dict(real, A=Arr("d n", dtype="complex", gen="cneg"),
                B=Arr("d n", dtype="complex", alt=("b l n", "b l g n")),
                C=Arr("b l n", dtype="complex", alt=("d n", "b l g n")),
                d_final_state=Arr("b d n", dtype="complex", optional=True),
                initial_state=Arr("b d n", dtype="complex", optional=True))
    targets = [f"{_SELB}:recurrent_vjp", (f"{_SELB}:chunked_vjp", dict(chunk=Int(2, minimum=1))),
               f"{_SELN}:selective_scan_vjp_numba",
               (f"{_SELN}:selective_scan_vjp_numba_chunked", dict(chunk=Int(2, minimum=1)))] + _pairs()
    E = ("b", "l", "d", "n")
    return [Contract(targets, real, sizes=sizes, positional=7, empty=E),
            Contract(targets[:1] + targets[2:3], cplx, sizes=sizes, positional=7, empty=E)]
