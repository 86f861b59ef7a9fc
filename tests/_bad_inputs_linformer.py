"""Bad-input contracts of Linformer attention (``refimpl.attention.linformer``): the entry point's two
view/backend pairs, the reference and kernel functions, the layer under each parameter-sharing level, the stack."""
from _bad_inputs import Arr, Contract, Int, Opt, Real

_LF = "refimpl.attention.linformer"
_SHARINGS = ("none", "headwise", "key_value", "layerwise")


def contracts():
    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2, r=3, d=5, e=3, u=2)
    attn = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"), E=Arr("h r s", alt=("r s",)),
                F=Arr("r s", alt=("h r s",)), scale=Real(None, none_ok=True))
    tiles = dict(block_q=Int(2, minimum=1), block_k=Int(2, minimum=1))
    targets = [f"{_LF}.reference:materialized", (f"{_LF}.numba:tiled", tiles),
               (f"{_LF}:linformer_attention", dict(view=Opt("materialized"), backend=Opt("numpy"))),
               (f"{_LF}:linformer_attention", dict(view=Opt("tiled"), backend=Opt("numba"),
                                                   block_q=Int(2, minimum=1, none_ok=True),
                                                   block_k=Int(2, minimum=1, none_ok=True)))]
    weights = dict(x=Arr("b l d"), W_Q=Arr("h d n"), W_K=Arr("h d n"), W_V=Arr("h d p"), W_O=Arr("h*p e"))
    E_layer = ("b", "l", "h", "n", "p", "d", "e", "r")
    layer_none = dict(weights, E=Arr("h r l"), F=Arr("h r l"), sharing=Opt("none", _SHARINGS),
                      scale=Real(None, none_ok=True))
    layer_head = dict(weights, E=Arr("r l"), F=Arr("r l"), sharing=Opt("headwise", _SHARINGS),
                      scale=Real(0.5, none_ok=True))
    layer_kv = dict(weights, E=Arr("r l"), sharing=Opt("key_value", _SHARINGS), scale=Real(None, none_ok=True))
    stack = dict(x=Arr("b l d"), W_Q=Arr("u h d n"), W_K=Arr("u h d n"), W_V=Arr("u h d p"), W_O=Arr("u h*p d"),
                 E=Arr("r l"), scale=Real(None, none_ok=True))
    return [
        Contract(targets, attn, sizes=sizes, positional=5, empty=("b", "l", "s", "h", "n", "p", "r")),
        Contract([f"{_LF}.reference:linformer_layer", f"{_LF}:linformer_layer"], layer_none, sizes=sizes,
                 positional=7, empty=E_layer),
        Contract([f"{_LF}.reference:linformer_layer"], layer_head, sizes=sizes, positional=7, empty=E_layer),
        Contract([f"{_LF}.reference:linformer_layer"], layer_kv, sizes=sizes, positional=6, empty=E_layer),
        Contract([f"{_LF}.reference:linformer_stack", f"{_LF}:linformer_stack"], stack, sizes=sizes, positional=6,
                 empty=("b", "l", "h", "n", "p", "d", "r", "u")),
    ]
