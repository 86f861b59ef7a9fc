"""Bad-input contracts of FlashAttention's tiling written literally (``refimpl.attention.softmax.reference.tiled``)
and the entry point's ``("tiled", "numpy")`` pair (the ``("tiled", "numba")`` pair is in
``tests/test_bad_input_corpus.py`` ``_softmax()``)."""
from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_SM = "refimpl.attention.softmax"
_ALIGN = ("top_left", "bottom_right")


def contracts():
    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2)
    args = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"), scale=Real(None, none_ok=True),
                causal=Flag(True), alignment=Opt("bottom_right", _ALIGN))
    empty = ("b", "l", "s", "h", "n", "p")
    return [
        Contract([(f"{_SM}.reference:tiled", dict(block_q=Int(2, minimum=1), block_k=Int(3, minimum=1))),
                  (f"{_SM}:scaled_dot_product_attention", dict(view=Opt("tiled"), backend=Opt("numpy"),
                                                               block_q=Int(2, minimum=1, none_ok=True),
                                                               block_k=Int(3, minimum=1, none_ok=True)))],
                 args, sizes=sizes, positional=3, empty=empty),
        Contract([(f"{_SM}.reference:tiled", dict(block_q=Int(1, minimum=1), block_k=Int(1, minimum=1)))],
                 dict(args, causal=Flag(False), alignment=Opt(None, _ALIGN, none_ok=True)), sizes=sizes,
                 positional=3, empty=empty),
    ]
