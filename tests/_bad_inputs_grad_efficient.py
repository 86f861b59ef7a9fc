"""Bad-input contracts of the efficient-attention backward passes: ``linformer_attention_vjp``, ``aft_attention_vjp``,
``gated_attention_unit_vjp``, ``mixed_chunk_attention_vjp``, ``lsh_attention_vjp``, ``mega_layer_vjp`` -- every view function and every
registered (view, backend) pair; the cotangents ``do`` / ``dy`` are checked like inputs."""
from __future__ import annotations

from typing import List

from _bad_inputs import Arr, Contract, Fixed, Flag, Int, Opt, Real

_VARIANTS = ("full", "simple", "local")


def _pairs(table: str, entry: str, **extra):
    import refimpl.attention  # noqa: F401  (registers the tables)
    from refimpl._dispatch import registered

    return [(entry, dict(extra, view=Opt(view), backend=Opt(backend))) for view, backend in registered()[table].pairs()]


def _buckets(rng, shape):
    return rng.integers(0, 3, shape)


def contracts() -> List[Contract]:
    import refimpl.attention.aft  # noqa: F401
    import refimpl.attention.gau  # noqa: F401
    import refimpl.attention.linformer  # noqa: F401
    import refimpl.attention.lsh  # noqa: F401
    import refimpl.attention.mega  # noqa: F401

    out = []
    # Linformer
    lin = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"), E=Arr("h r s", alt=("r s",)),
               F=Arr("r s", alt=("h r s",)), do=Arr("b l h p"), scale=Real(None, none_ok=True))
    lin_t = ["refimpl.attention.linformer.backward:materialized_vjp"] + _pairs(
        "refimpl.attention.linformer_attention_vjp", "refimpl.attention.linformer:linformer_attention_vjp")
    out.append(Contract(lin_t, lin, sizes=dict(b=2, l=3, s=4, h=2, n=3, p=2, r=3), positional=5,
                        empty=("b", "l", "s", "h", "n", "p", "r")))
    # AFT
    aft_t = ["refimpl.attention.aft.backward:materialized_vjp"] + _pairs(
        "refimpl.attention.aft_attention_vjp", "refimpl.attention.aft:aft_attention_vjp")
    qkv = dict(q=Arr("b l d"), k=Arr("b l d"), v=Arr("b l d"))
    E = ("b", "l", "d")
    sizes = dict(b=2, l=5, d=3)
    out += [
        Contract(aft_t, dict(qkv, w=Arr("l l"), dy=Arr("b l d"), variant=Opt("full", _VARIANTS), causal=Flag(True),
                             window=Fixed(None)), sizes=sizes, positional=4, empty=E),
        Contract(aft_t, dict(qkv, w=Fixed(None), dy=Arr("b l d"), variant=Opt("simple", _VARIANTS),
                             causal=Flag(False), window=Fixed(None)), sizes=sizes, positional=4, empty=E),
        Contract(aft_t, dict(qkv, w=Arr("l l"), dy=Arr("b l d"), variant=Opt("local", _VARIANTS), causal=Flag(False),
                             window=Int(1, minimum=0)), sizes=sizes, positional=4, empty=E),
    ]
    # GAU and FLASH
    weights = dict(x=Arr("b l d"), W_u=Arr("d p"), W_v=Arr("d p"), W_z=Arr("d n"))
    gau = dict(weights, gamma=Arr("2 n"), beta=Arr("2 n"), W_o=Arr("p d"), do=Arr("b l d"), causal=Flag(True),
               scale=Real(None, none_ok=True))
    flash = dict(weights, gamma=Arr("4 n"), beta=Arr("4 n"), W_o=Arr("p d"), do=Arr("b l d"), causal=Flag(True))
    gau_t = ["refimpl.attention.gau.backward:quadratic_vjp"] + _pairs(
        "refimpl.attention.gated_attention_unit_vjp", "refimpl.attention.gau:gated_attention_unit_vjp")
    flash_t = [(f"refimpl.attention.gau.backward:{f}", dict(chunk=Int(2, minimum=1)))
               for f in ("chunked_vjp", "materialized_vjp")] + _pairs(
        "refimpl.attention.mixed_chunk_attention_vjp", "refimpl.attention.gau:mixed_chunk_attention_vjp",
        chunk=Int(2, minimum=1))
    Eg = ("b", "l", "d", "p", "n")
    out += [
        Contract(gau_t, dict(gau, bias=Arr("w", optional=True)), sizes=dict(b=2, l=3, d=3, p=2, n=2, w=5),
                 positional=7, empty=("b", "d", "p", "n")),
        Contract(gau_t, dict(gau, causal=Flag(False)), sizes=dict(b=2, l=3, d=3, p=2, n=2), positional=7, empty=Eg),
        Contract(flash_t, dict(flash, bias=Arr("w", optional=True)), sizes=dict(b=2, l=5, d=3, p=2, n=2, w=3),
                 positional=7, empty=Eg),
        Contract(flash_t, dict(flash, causal=Flag(False)), sizes=dict(b=2, l=5, d=3, p=2, n=2), positional=7,
                 empty=Eg),
    ]
    # LSH (buckets fixed; also the rotations and seed paths)
    lsh_t = [f"refimpl.attention.lsh.backward:{f}" for f in ("sorted_vjp", "materialized_vjp")] + _pairs(
        "refimpl.attention.lsh_attention_vjp", "refimpl.attention.lsh:lsh_attention_vjp")
    qk = dict(qk=Arr("b l h n"), v=Arr("b l h p"), do=Arr("b l h p"))
    opts = dict(chunk=Int(2, minimum=1), causal=Flag(True), scale=Real(None, none_ok=True), wrap=Flag(True))
    lsizes = dict(b=2, l=5, h=2, n=3, p=2, r=2, u=2)
    El = ("b", "l", "h", "n", "p")
    out += [
        Contract(lsh_t, dict(qk, buckets=Arr("b l h r", dtype="int", gen=_buckets), **opts), sizes=lsizes,
                 positional=2, empty=El),
        Contract(lsh_t[:1], dict(qk, rotations=Arr("r n u"), **opts), sizes=lsizes, positional=2, empty=El),
        Contract(lsh_t[1:2], dict(qk, seed=Int(3, minimum=0), n_buckets=Int(4, minimum=2), n_rounds=Int(2, minimum=1),
                                  **opts), sizes=lsizes, positional=2, empty=El),
    ]
    # Mega (the full view's VJP), with and without the relative bias and the backward EMA
    from refimpl.attention.mega import ATTENTION_FUNCTIONS

    mparams = dict(x=Arr("b l d"), alpha=Arr("d e", gen="unit"), delta=Arr("d e", gen="unit"), beta=Arr("d e"),
                   eta=Arr("d e"), W_z=Arr("d n"), b_z=Arr("n"), kappa_q=Arr("n"), mu_q=Arr("n"), kappa_k=Arr("n"),
                   mu_k=Arr("n"), W_v=Arr("d p"), b_v=Arr("p"), W_gamma=Arr("d p"), b_gamma=Arr("p"),
                   W_phi=Arr("d d"), b_phi=Arr("d"), W_h=Arr("d d"), U_h=Arr("p d"), b_h=Arr("d"))
    mopts = dict(dy=Arr("b l d"), chunk=Int(2, minimum=1, none_ok=True), attention=Opt("softmax", ATTENTION_FUNCTIONS),
                 scale=Real(None, none_ok=True))
    mbwd = dict(alpha_bwd=Arr("d e", gen="unit"), delta_bwd=Arr("d e", gen="unit"), beta_bwd=Arr("d e"),
                eta_bwd=Arr("d e"))
    msizes = dict(b=2, l=3, d=3, e=2, n=2, p=2, r=5)
    mega_t = ["refimpl.attention.mega.backward:full_vjp"] + _pairs("refimpl.attention.mega_layer_vjp",
                                                                    "refimpl.attention.mega:mega_layer_vjp")
    out += [
        Contract(mega_t, dict(mparams, rel_bias=Arr("r", optional=True), causal=Flag(True), **mopts), sizes=msizes,
                 positional=20, empty=("b", "l")),
        Contract(mega_t, dict(mparams, rel_bias=Arr("r", optional=True), **mbwd, causal=Flag(False), **mopts),
                 sizes=msizes, positional=20, empty=("b", "l")),
    ]
    return out
