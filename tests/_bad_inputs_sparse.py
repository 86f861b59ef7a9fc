"""Bad-input contracts of refimpl.attention.sparse: the pattern builders, both views and the kernel."""
from __future__ import annotations

from _bad_inputs import Arr, Contract, Fixed, Flag, Int, Opt, Real

_SP = "refimpl.attention.sparse"
_SPR = "refimpl.attention.sparse.reference"
_SPN = "refimpl.attention.sparse.numba"
_COMBINE = ("union", "heads")


def contracts():
    from refimpl.attention.sparse import bigbird_pattern, longformer_pattern

    sizes = dict(b=2, l=5, h=2, n=3, p=2)
    # a pattern over l = 5 with one head per query head (h = 2): per-head dilations and a global token
    pattern = longformer_pattern(5, (1, 0), dilation=(1, 2), global_tokens=(3,))
    qkv = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"), pattern=Fixed(pattern),
               scale=Real(None, none_ok=True))
    E = ("b", "n", "p")
    shared = dict(qkv)
    bb = dict(qkv, pattern=Fixed(bigbird_pattern(5, 2, seed=3, heads=2)))
    block = dict(block=Int(2, minimum=1, none_ok=True))
    return [
        Contract([f"{_SPR}:materialized",
                  (f"{_SP}:sparse_attention", dict(view=Opt("materialized"), backend=Opt("numpy")))],
                 shared, sizes=sizes, positional=4, empty=E),
        Contract([(f"{_SPR}:block_sparse", block), (f"{_SPN}:block_sparse_attention", block),
                  (f"{_SP}:sparse_attention", dict(block, view=Opt("block_sparse"), backend=Opt("numpy"))),
                  (f"{_SP}:sparse_attention", dict(block, view=Opt("block_sparse"), backend=Opt("numba")))],
                 shared, sizes=sizes, positional=4, empty=E),
        Contract([(f"{_SPN}:block_sparse_attention", block),
                  (f"{_SP}:sparse_attention", dict(block, view=Opt("block_sparse"), backend=Opt("numba")))],
                 bb, sizes=sizes, positional=4, empty=E),
        Contract([f"{_SPR}:sliding_window_pattern", f"{_SP}:sliding_window_pattern"],
                 dict(l=Int(6, minimum=0), window=Int(2, minimum=0), dilation=Int(2, minimum=1),
                      causal=Flag(True)), positional=2),
        Contract([f"{_SPR}:longformer_pattern", f"{_SP}:longformer_pattern"],
                 dict(l=Int(6, minimum=0), window=Int(1, minimum=0), dilation=Int(1, minimum=1),
                      global_tokens=Fixed((0, 4)), causal=Flag(False)), positional=2),
        Contract([f"{_SPR}:strided_pattern", f"{_SP}:strided_pattern"],
                 dict(l=Int(9, minimum=0), stride=Int(3, minimum=1), causal=Flag(True),
                      combine=Opt("union", _COMBINE)), positional=2),
        Contract([f"{_SPR}:fixed_pattern", f"{_SP}:fixed_pattern"],
                 dict(l=Int(9, minimum=0), stride=Int(3, minimum=1), summary=Int(1, minimum=1, maximum=3),
                      causal=Flag(True), combine=Opt("heads", _COMBINE)), positional=2),
        Contract([f"{_SPR}:bigbird_pattern", f"{_SP}:bigbird_pattern"],
                 dict(l=Int(12, minimum=0), block=Int(2, minimum=1), window_blocks=Int(3, minimum=1),
                      global_blocks=Int(1, minimum=0), random_blocks=Int(1, minimum=0), seed=Int(5, minimum=0),
                      heads=Int(2, minimum=1)), positional=2),
    ]
