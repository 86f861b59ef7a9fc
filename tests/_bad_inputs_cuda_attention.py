"""Bad-input contracts of the attention GPU twins (``refimpl/attention/{linear,delta,softmax,sparse}/cuda.py``), run
under the CUDA simulator (NumPy arrays): every public function of those modules with its ``threads_per_block``
keyword, and the ``(view, "cuda")`` pairs the core corpus does not enumerate itself (the softmax and sparse entry
points list their pairs by hand; the linear and delta entry points' cuda pairs come from ``_pairs`` there).
"""
from _bad_inputs import Arr, Contract, Fixed, Flag, Int, Opt, Real, Seq

_TPB = dict(threads_per_block=Int(4, minimum=1))
_ALIGN = ("top_left", "bottom_right")


def _linear():
    sizes = dict(b=2, l=5, h=2, n=3, p=2)
    opts = dict(causal=Flag(True), normalize=Flag(True), eps=Real(0.0, nonneg=True),
                eps_mode=Opt("add", ("add", "clamp")), state_layout=Opt("vk", ("vk", "kv")))
    norm = dict(phi_q=Arr("b l h n", gen="pos"), phi_k=Arr("b l h n", gen="pos"), v=Arr("b l h p"), **opts,
                initial_state=Seq((Arr("b h p n", gen="pos"), Arr("b h n", gen="pos")), optional=True),
                return_final_state=Flag(True))
    unnorm = dict(norm, initial_state=Arr("b h p n", optional=True, listable=False))
    unnorm["normalize"] = Flag(False)
    views = [("refimpl.attention.linear.cuda:causal_chunked", dict(_TPB, chunk=Int(2, minimum=1)))]
    E = ("b", "l", "h", "p", "n")
    return [Contract(views, norm, sizes=sizes, positional=3, empty=E),
            Contract(views, unnorm, sizes=sizes, positional=3, empty=E)]


def _delta():
    sizes = dict(b=2, l=4, h=2, n=3, p=2)
    delta = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"), beta=Arr("b l h", gen="unit"),
                 decay=Arr("b l h", gen="unit", positive=True, optional=True),
                 initial_state=Arr("b h p n", optional=True),
                 return_final_state=Flag(True), key_norm=Opt("l2", ("sum", "l2"), none_ok=True),
                 query_norm=Opt(None, ("sum", "l2"), none_ok=True), scale=Real(0.5))
    return [Contract([("refimpl.attention.delta.cuda:delta_chunked", dict(_TPB, chunk=Int(2, minimum=1)))], delta,
                     sizes=sizes, positional=4, empty=("b", "l", "h", "p"))]


def _softmax():
    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2)
    qkv = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"))
    causal = dict(scale=Real(None, none_ok=True), causal=Flag(True), alignment=Opt("bottom_right", _ALIGN))
    E = ("b", "l", "s", "h", "n", "p")
    tiles = dict(block_q=Int(2, minimum=1), block_k=Int(3, minimum=1))
    return [Contract([("refimpl.attention.softmax.cuda:flash_attention", dict(_TPB, **tiles, return_lse=Flag(True))),
                      ("refimpl.attention.softmax:scaled_dot_product_attention",
                       dict(view=Opt("tiled"), backend=Opt("cuda"), return_lse=Flag(True),
                            block_q=Int(2, minimum=1, none_ok=True), block_k=Int(3, minimum=1, none_ok=True)))],
                     dict(qkv, **causal), sizes=sizes, positional=3, empty=E)]


def _sparse():
    from refimpl.attention.sparse import bigbird_pattern, longformer_pattern

    sizes = dict(b=2, l=5, h=2, n=3, p=2)
    pattern = longformer_pattern(5, (1, 0), dilation=(1, 2), global_tokens=(3,))
    qkv = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"), pattern=Fixed(pattern),
               scale=Real(None, none_ok=True))
    bb = dict(qkv, pattern=Fixed(bigbird_pattern(5, 2, seed=3, heads=2)))
    block = dict(block=Int(2, minimum=1, none_ok=True))
    tiles = dict(tile_q=Int(3, minimum=1, none_ok=True), tile_k=Int(2, minimum=1, none_ok=True))
    targets = [("refimpl.attention.sparse.cuda:block_sparse_attention", dict(block, **tiles, **_TPB)),
               ("refimpl.attention.sparse:sparse_attention", dict(block, view=Opt("block_sparse"),
                                                                  backend=Opt("cuda")))]
    E = ("b", "n", "p")
    return [Contract(targets, qkv, sizes=sizes, positional=4, empty=E),
            Contract(targets, bb, sizes=sizes, positional=4, empty=E)]


def contracts():
    return [*_linear(), *_delta(), *_softmax(), *_sparse()]
