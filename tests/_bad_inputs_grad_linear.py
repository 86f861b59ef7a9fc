"""Bad-input contracts of the backward passes of linear attention (``linear_attention_vjp``: every registered
(view, backend) pair, the NumPy view functions and the Numba kernel) and of the feature maps (``feature_map_vjp``
for every kind and the per-kind functions); the cotangents ``do``, ``d_final_state`` and ``dphi`` are checked like
inputs."""
from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real, Seq

_LIN = "refimpl.attention.linear"
_BW = "refimpl.attention.linear.backward"
_NB = "refimpl.attention.linear.numba_backward"
_FT = "refimpl.attention.features"
_FB = "refimpl.attention.features.backward"


def _pairs():
    from refimpl._dispatch import registered

    out = []
    for view, backend in registered()["refimpl.attention.linear_attention_vjp"].pairs():
        extra = dict(view=Opt(view), backend=Opt(backend))
        if view == "chunked":
            extra["chunk"] = Int(2, minimum=1)
        out.append((f"{_LIN}:linear_attention_vjp", extra))
    return out


def contracts():
    sizes = dict(b=2, l=5, s=4, h=2, n=3, p=2, f=4)
    causal = [f"{_BW}:recurrent_vjp", f"{_BW}:quadratic_vjp", (f"{_BW}:chunked_vjp", dict(chunk=Int(2, minimum=1))),
              (f"{_NB}:causal_chunked_vjp", dict(chunk=Int(2, minimum=1)))] + _pairs()
    opts = dict(causal=Flag(True), normalize=Flag(True), eps=Real(0.0, nonneg=True),
                eps_mode=Opt("add", ("add", "clamp")), state_layout=Opt("vk", ("vk", "kv")))
    norm = dict(phi_q=Arr("b l h n", gen="pos"), phi_k=Arr("b l h n", gen="pos"), v=Arr("b l h p"),
                do=Arr("b l h p"),
                d_final_state=Seq((Arr("b h p n"), Arr("b h n")), optional=True), **opts,
                initial_state=Seq((Arr("b h p n", gen="pos"), Arr("b h n", gen="pos")), optional=True))
    unnorm = dict(norm, d_final_state=Arr("b h p n", optional=True, listable=False),
                  initial_state=Arr("b h p n", optional=True, listable=False), normalize=Flag(False))
    noncausal = dict(norm, phi_k=Arr("b s h n", gen="pos"), v=Arr("b s h p"), causal=Flag(False))
    E = ("b", "l", "h", "p", "n")
    feature_sizes = dict(b=2, n=3, f=4)
    x, W = Arr("b n"), Arr("f n")
    feats = [
        Contract([(f"{_FT}:feature_map_vjp", dict(kind=Opt("identity"), backend=Opt("numpy"))), f"{_FB}:identity_vjp"],
                 dict(x=x, dphi=Arr("b n")), sizes=feature_sizes, positional=1, empty=("b", "n"), view_arg="kind"),
        Contract([(f"{_FT}:feature_map_vjp", dict(kind=Opt("elu_plus_one"), backend=Opt("numpy"))),
                  f"{_FB}:elu_plus_one_vjp"],
                 dict(x=x, dphi=Arr("b n")), sizes=feature_sizes, positional=1, empty=("b", "n"), view_arg="kind"),
        Contract([(f"{_FT}:feature_map_vjp", dict(kind=Opt("dpfp"), backend=Opt("numpy"),
                                                 nu=Int(2, minimum=1, maximum=5, none_ok=True))),
                  (f"{_FB}:dpfp_vjp", dict(nu=Int(2, minimum=1, maximum=5)))],
                 dict(x=x, dphi=Arr("b 4*n")), sizes=feature_sizes, positional=1, empty=("b",), view_arg="kind"),
        Contract([(f"{_FT}:feature_map_vjp", dict(kind=Opt("trig"), backend=Opt("numpy"))),
                  f"{_FB}:trig_features_vjp"],
                 dict(x=x, W=W, dphi=Arr("b 2*f")), sizes=feature_sizes, empty=("b", "n"), view_arg="kind"),
    ]
    stab = dict(stabilizer=Opt("row_max", ("none", "row_max", "global_max")),
                offset_grad=Opt("through", ("through", "stop")))
    for kind, fn, width in (("positive", "positive_features_vjp", "b f"),
                            ("hyperbolic", "hyperbolic_features_vjp", "b 2*f")):
        feats.append(Contract([(f"{_FT}:feature_map_vjp", dict(stab, kind=Opt(kind), backend=Opt("numpy"))),
                               (f"{_FB}:{fn}", stab)],
                              dict(x=x, W=W, dphi=Arr(width)), sizes=feature_sizes, empty=("b", "n"),
                              view_arg="kind"))
    return [
        Contract(causal, norm, sizes=sizes, positional=3, empty=E),
        Contract(causal, unnorm, sizes=sizes, positional=3, empty=E),
        Contract([f"{_BW}:quadratic_vjp",
                  (f"{_LIN}:linear_attention_vjp", dict(view=Opt("quadratic"), backend=Opt("numpy")))],
                 noncausal, sizes=sizes, positional=3, empty=E + ("s",)),
    ] + feats
