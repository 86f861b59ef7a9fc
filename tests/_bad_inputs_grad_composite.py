"""Bad-input contracts of the composite backward passes: ``multi_head_attention_vjp`` (every (view, backend) pair
and the view functions), ``performer_attention_vjp`` (every pair and the view functions, non-causal and causal) and
``hippo_projection_vjp`` (its one pair and the view function, per measure); the cotangents (``dout``, ``do``,
``dc``) are checked like inputs."""
from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_SM = "refimpl.attention.softmax"
_LIN = "refimpl.attention.linear"
_H = "refimpl.ssm.hippo"
_ALIGN = ("top_left", "bottom_right")
_STAB = ("none", "query_max", "key_global_max")


def contracts():
    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2, d=5, e=3)
    mh = dict(x_q=Arr("b l d"), x_kv=Arr("b s d"), W_Q=Arr("h d n"), W_K=Arr("h d n"), W_V=Arr("h d p"),
              W_O=Arr("h*p e"), dout=Arr("b l e"), scale=Real(0.5, none_ok=True), causal=Flag(True),
              alignment=Opt("bottom_right", _ALIGN))
    mh_mat = dict(mh, mask=Arr("l s", dtype="bool", optional=True, alt=("b l s", "b h l s")),
                  bias=Arr("b h l s", allow=("-inf",), alt=("l s", "b l s"), optional=True))
    tiles = dict(block_q=Int(2, minimum=1, none_ok=True), block_k=Int(3, minimum=1, none_ok=True))
    E_mh = ("b", "l", "s", "h", "n", "p", "d", "e")
    psizes = dict(b=2, l=5, s=4, h=2, n=3, p=2, f=4)
    perf = dict(q=Arr("b l h n", scale=0.5), k=Arr("b s h n", scale=0.5), v=Arr("b s h p"), W=Arr("f n"),
                do=Arr("b l h p"), kind=Opt("positive", ("trig", "positive", "hyperbolic")), causal=Flag(False),
                normalize=Flag(True), eps=Real(0.0, nonneg=True), scale=Real(None, none_ok=True, positive=True),
                stabilizer=Opt("query_max", _STAB), offset_grad=Opt("through", ("through", "stop")),
                chunk=Int(2, minimum=1))
    perf_causal = dict(perf, k=Arr("b l h n", scale=0.5), v=Arr("b l h p"), causal=Flag(True),
                       stabilizer=Opt("key_global_max", _STAB))
    out = [
        Contract([f"{_SM}.backward_multi_head:materialized_vjp",
                  (f"{_SM}:multi_head_attention_vjp", dict(view=Opt("materialized"), backend=Opt("numpy")))],
                 mh_mat, sizes=sizes, positional=6, empty=E_mh),
        Contract([(f"{_SM}.backward_multi_head:tiled_vjp", tiles),
                  (f"{_SM}.backward_multi_head:tiled_numba_vjp", tiles),
                  (f"{_SM}:multi_head_attention_vjp", dict(tiles, view=Opt("tiled"), backend=Opt("numpy"))),
                  (f"{_SM}:multi_head_attention_vjp", dict(tiles, view=Opt("tiled"), backend=Opt("numba")))],
                 mh, sizes=sizes, positional=6, empty=E_mh),
        Contract([f"{_LIN}.backward_performer:quadratic_vjp",
                  (f"{_LIN}:performer_attention_vjp", dict(view=Opt("quadratic"), backend=Opt("numpy")))],
                 perf, sizes=psizes, positional=4, empty=("b", "l", "s", "h", "p", "n")),
        Contract([f"{_LIN}.backward_performer:recurrent_vjp", f"{_LIN}.backward_performer:chunked_vjp",
                  f"{_LIN}.backward_performer:chunked_numba_vjp",
                  (f"{_LIN}:performer_attention_vjp", dict(view=Opt("recurrent"), backend=Opt("numpy"))),
                  (f"{_LIN}:performer_attention_vjp", dict(view=Opt("chunked"), backend=Opt("numpy"))),
                  (f"{_LIN}:performer_attention_vjp", dict(view=Opt("chunked"), backend=Opt("numba")))],
                 perf_causal, sizes=psizes, positional=4, empty=("b", "l", "h", "p", "n")),
    ]
    for m, N in (("legs", 3), ("legt", 3), ("fout", 3), ("lagt", 2)):
        proj = dict(f=Arr("l"), measure=Opt(m), N=Int(N, minimum=1), dt=Real(0.1, positive=True), dc=Arr("l n"),
                    method=Opt("bilinear", ("forward_euler", "backward_euler", "bilinear", "gbt")),
                    theta=Real(1.0, positive=True), t0=Real(0.2, positive=(m == "legs"), none_ok=True),
                    initial_state=Arr("n", optional=True))
        out.append(Contract([f"{_H}.backward:recurrent_vjp",
                             (f"{_H}:hippo_projection_vjp", dict(view=Opt("recurrent"), backend=Opt("numpy")))],
                            proj, sizes=dict(l=4, n=N), positional=4, empty=("l",)))
        out.append(Contract([(f"{_H}.backward:recurrent_vjp",
                              dict(method=Opt("gbt"), alpha=Real(0.3, lo=0.0, hi=1.0)))],
                            proj, sizes=dict(l=4, n=N), positional=4, empty=("l",)))
    return out
