"""Bad-input contracts of the backward passes of softmax attention (``scaled_dot_product_attention_vjp``: every
(view, backend) pair and the view functions) and of sparse attention (``sparse_attention_vjp``: both views); the
cotangent ``do`` is checked like an input."""
from _bad_inputs import Arr, Contract, Fixed, Flag, Int, Opt, Real

_SM = "refimpl.attention.softmax"
_SP = "refimpl.attention.sparse"
_ALIGN = ("top_left", "bottom_right")


def contracts():
    from refimpl.attention.sparse import bigbird_pattern, longformer_pattern

    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2)
    qkv = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"), do=Arr("b l h p"),
               scale=Real(None, none_ok=True), causal=Flag(True), alignment=Opt("bottom_right", _ALIGN))
    E = ("b", "l", "s", "h", "n", "p")
    mat = dict(qkv, mask=Arr("b l s", dtype="bool", alt=("l s", "b h l s"), optional=True),
               bias=Arr("b h l s", allow=("-inf",), alt=("l s", "b l s"), optional=True))
    tiles = dict(block_q=Int(2, minimum=1), block_k=Int(3, minimum=1))
    tiles_opt = dict(block_q=Int(2, minimum=1, none_ok=True), block_k=Int(3, minimum=1, none_ok=True))
    sp_sizes = dict(b=2, l=5, h=2, n=3, p=2)
    sp = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"),
              pattern=Fixed(longformer_pattern(5, (1, 0), dilation=(1, 2), global_tokens=(3,))), do=Arr("b l h p"),
              scale=Real(None, none_ok=True))
    block = dict(block=Int(2, minimum=1, none_ok=True))
    return [
        Contract([f"{_SM}.backward:materialized_vjp",
                  (f"{_SM}:scaled_dot_product_attention_vjp", dict(view=Opt("materialized"), backend=Opt("numpy")))],
                 mat, sizes=sizes, positional=3, empty=E),
        Contract([(f"{_SM}.backward:tiled_vjp", tiles), (f"{_SM}.numba_backward:flash_attention_vjp", tiles),
                  (f"{_SM}:scaled_dot_product_attention_vjp", dict(tiles_opt, view=Opt("tiled"),
                                                                   backend=Opt("numpy"))),
                  (f"{_SM}:scaled_dot_product_attention_vjp", dict(tiles_opt, view=Opt("tiled"),
                                                                   backend=Opt("numba")))],
                 qkv, sizes=sizes, positional=3, empty=E),
        Contract([(f"{_SM}.backward:tiled_forward", tiles)],
                 {nm: a for nm, a in qkv.items() if nm != "do"}, sizes=sizes, positional=3, empty=E),
        Contract([f"{_SP}.backward:materialized_vjp",
                  (f"{_SP}:sparse_attention_vjp", dict(view=Opt("materialized"), backend=Opt("numpy")))],
                 sp, sizes=sp_sizes, positional=4, empty=("b", "n", "p")),
        Contract([(f"{_SP}.backward:block_sparse_vjp", block),
                  (f"{_SP}.numba_backward:block_sparse_attention_vjp", block),
                  (f"{_SP}:sparse_attention_vjp", dict(block, view=Opt("block_sparse"), backend=Opt("numpy"))),
                  (f"{_SP}:sparse_attention_vjp", dict(block, view=Opt("block_sparse"), backend=Opt("numba")))],
                 dict(sp, pattern=Fixed(bigbird_pattern(5, 2, seed=3, heads=2))), sizes=sp_sizes, positional=4,
                 empty=("b", "n", "p")),
    ]
