"""Bad-input contracts of refimpl.attention.aft: the entry point (every view/backend pair), both views, the
validator and the window helper, for each variant (AFT-simple takes no w, only AFT-local takes a window)."""
from __future__ import annotations

from _bad_inputs import Arr, Contract, Fixed, Flag, Int, Opt

_AFT = "refimpl.attention.aft"
_AFTR = "refimpl.attention.aft.reference"
_AFTN = "refimpl.attention.aft.numba"
_VARIANTS = ("full", "simple", "local")


def _targets(view_fns):
    import refimpl.attention.aft  # noqa: F401  (registers the table)
    from refimpl._dispatch import registered

    out = list(view_fns)
    for view, backend in registered()["refimpl.attention.aft_attention"].pairs():
        out.append((f"{_AFT}:aft_attention", dict(view=Opt(view), backend=Opt(backend))))
    return out


def contracts():
    sizes = dict(b=2, l=5, d=3)
    E = ("b", "l", "d")
    qkv = dict(q=Arr("b l d"), k=Arr("b l d"), v=Arr("b l d"))
    views = _targets([f"{_AFTR}:materialized", f"{_AFTR}:windowed", f"{_AFTN}:aft_windowed", f"{_AFTR}:validate_aft"])
    full = dict(qkv, w=Arr("l l"), variant=Opt("full", _VARIANTS), causal=Flag(True), window=Fixed(None))
    simple = dict(qkv, w=Fixed(None), variant=Opt("simple", _VARIANTS), causal=Flag(False), window=Fixed(None))
    local = dict(qkv, w=Arr("l l"), variant=Opt("local", _VARIANTS), causal=Flag(False), window=Int(1, minimum=0))
    local_causal = dict(local, causal=Flag(True))
    return [
        Contract(views, full, sizes=sizes, positional=4, empty=E),
        Contract(views, simple, sizes=sizes, positional=4, empty=E),
        Contract(views, local, sizes=sizes, positional=4, empty=E),
        Contract(views, local_causal, sizes=sizes, positional=4, empty=E),
        Contract([f"{_AFTR}:aft_window", f"{_AFT}:aft_window"],
                 dict(window=Int(2, minimum=0), causal=Flag(True), variant=Opt("local", _VARIANTS)), positional=3),
    ]
