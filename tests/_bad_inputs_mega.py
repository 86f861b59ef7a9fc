"""Bad-input contracts of refimpl.attention.mega: the Mega layer's views (reference full/chunked, the numba chunked
kernel) and its entry point's every view/backend pair, with and without the relative bias and the backward EMA."""
from __future__ import annotations

from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_M = "refimpl.attention.mega"


def _targets():
    import refimpl.attention.mega  # noqa: F401  (registers the table)
    from refimpl._dispatch import registered

    out = [f"{_M}.reference:full", f"{_M}.reference:chunked", f"{_M}.numba:mega_layer_chunked"]
    for view, backend in registered()["refimpl.attention.mega_layer"].pairs():
        out.append((f"{_M}:mega_layer", dict(view=Opt(view), backend=Opt(backend))))
    return out


def contracts():
    from refimpl.attention.mega import ATTENTION_FUNCTIONS

    params = dict(x=Arr("b l d"), alpha=Arr("d e", gen="unit"), delta=Arr("d e", gen="unit"), beta=Arr("d e"),
                  eta=Arr("d e"), W_z=Arr("d n"), b_z=Arr("n"), kappa_q=Arr("n"), mu_q=Arr("n"), kappa_k=Arr("n"),
                  mu_k=Arr("n"), W_v=Arr("d p"), b_v=Arr("p"), W_gamma=Arr("d p"), b_gamma=Arr("p"),
                  W_phi=Arr("d d"), b_phi=Arr("d"), W_h=Arr("d d"), U_h=Arr("p d"), b_h=Arr("d"))
    opts = dict(chunk=Int(2, minimum=1, none_ok=True), attention=Opt("softmax", ATTENTION_FUNCTIONS),
                scale=Real(None, none_ok=True))
    bwd = dict(alpha_bwd=Arr("d e", gen="unit"), delta_bwd=Arr("d e", gen="unit"), beta_bwd=Arr("d e"),
               eta_bwd=Arr("d e"))
    sizes = dict(b=2, l=3, d=3, e=2, n=2, p=2, r=5)  # rel_bias (2m - 1) with m = 3 >= l
    t = _targets()
    return [
        Contract(t, dict(params, rel_bias=Arr("r", optional=True), causal=Flag(True), **opts), sizes=sizes,
                 positional=20, empty=("b", "l")),
        Contract(t, dict(params, rel_bias=Arr("r", optional=True), **bwd, causal=Flag(False), **opts), sizes=sizes,
                 positional=20, empty=("b", "l")),
    ]
