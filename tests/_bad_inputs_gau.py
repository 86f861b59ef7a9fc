"""Bad-input contracts of refimpl.attention.gau: GAU (quadratic: reference and kernel) and FLASH (chunked,
materialized, kernel), each through its entry point's every view/backend pair, with and without the bias."""
from __future__ import annotations

from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_GAU = "refimpl.attention.gau"
_GAUR = "refimpl.attention.gau.reference"
_GAUN = "refimpl.attention.gau.numba"


def _targets(fns, table, entry, **extra):
    import refimpl.attention.gau  # noqa: F401  (registers the tables)
    from refimpl._dispatch import registered

    out = [(f, dict(extra)) for f in fns]
    for view, backend in registered()[table].pairs():
        out.append((f"{_GAU}:{entry}", dict(extra, view=Opt(view), backend=Opt(backend))))
    return out


def contracts():
    E = ("b", "l", "d", "p", "n")
    weights = dict(x=Arr("b l d"), W_u=Arr("d p"), W_v=Arr("d p"), W_z=Arr("d n"))
    gau = dict(weights, gamma=Arr("2 n"), beta=Arr("2 n"), W_o=Arr("p d"), causal=Flag(True),
               scale=Real(None, none_ok=True))
    flash = dict(weights, gamma=Arr("4 n"), beta=Arr("4 n"), W_o=Arr("p d"), causal=Flag(True))
    gau_t = _targets([f"{_GAUR}:quadratic", f"{_GAUN}:gau_numba"], "refimpl.attention.gated_attention_unit",
                     "gated_attention_unit")
    flash_t = _targets([f"{_GAUR}:chunked", f"{_GAUR}:materialized", f"{_GAUN}:mixed_chunk_numba"],
                       "refimpl.attention.mixed_chunk_attention", "mixed_chunk_attention", chunk=Int(2, minimum=1))
    # GAU's bias is (2l - 1): l = 3 -> w = 5; FLASH's (2c - 1): c = 2 -> w = 3 (an empty l leaves it valid)
    return [
        Contract(gau_t, dict(gau, bias=Arr("w", optional=True)), sizes=dict(b=2, l=3, d=3, p=2, n=2, w=5),
                 positional=7, empty=("b", "d", "p", "n")),
        Contract(gau_t, dict(gau, causal=Flag(False)), sizes=dict(b=2, l=3, d=3, p=2, n=2), positional=7, empty=E),
        Contract(flash_t, dict(flash, bias=Arr("w", optional=True)), sizes=dict(b=2, l=5, d=3, p=2, n=2, w=3),
                 positional=7, empty=E),
        Contract(flash_t, dict(flash, causal=Flag(False)), sizes=dict(b=2, l=5, d=3, p=2, n=2), positional=7,
                 empty=E),
    ]
