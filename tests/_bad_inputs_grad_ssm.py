"""Bad-input contracts of the SSM core's backward passes: ``lti_ssm_vjp`` (``refimpl.ssm.lti.backward``),
``discretize_vjp`` (``refimpl.ssm.discretization.backward``), ``s4d_kernel_vjp`` (``refimpl.ssm.s4d.backward``),
``lru_ssm_vjp`` (``refimpl.ssm.lru.backward``):
every view function and every registered (view, backend) pair; the cotangents are checked like inputs."""
from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_LTI = "refimpl.ssm.lti"
_LB = "refimpl.ssm.lti.backward"
_DB = "refimpl.ssm.discretization.backward"
_S4D = "refimpl.ssm.s4d"
_SB = "refimpl.ssm.s4d.backward"
_LRU = "refimpl.ssm.lru"
_METHODS = ("zoh", "bilinear", "forward_euler", "backward_euler", "mamba")


def _pairs(entry, public, view_kw="view"):
    from refimpl._dispatch import registered

    out = []
    for view, backend in registered()[public].pairs():
        if view == "gbt":
            continue
        extra = {view_kw: Opt(view), "backend": Opt(backend)}
        if view == "chunked":
            extra["chunk"] = Int(2, minimum=1, none_ok=True)
        out.append((entry, extra))
    return out


def _lti(diagonal: bool):
    sizes = dict(b=2, l=5, d=3, n=4, m=2, p=3)
    args = dict(A_bar=Arr("d n" if diagonal else "d n n", dtype="complex", gen="unit" if diagonal else "normal",
                          scale=0.3),
                B_bar=Arr("d n m", dtype="complex"), C=Arr("d p n", dtype="complex"),
                D=Arr("d p m", dtype="complex", optional=True), x=Arr("b l d m", dtype="complex"),
                dy=Arr("b l d p", dtype="complex"), d_final_state=Arr("b d n", dtype="complex", optional=True),
                initial_state=Arr("b d n", dtype="complex", optional=True), diagonal=Flag(diagonal))
    targets = [f"{_LB}:recurrent_vjp", f"{_LB}:convolution_vjp", (f"{_LB}:chunked_vjp", dict(chunk=Int(2, minimum=1)))]
    targets += _pairs(f"{_LTI}:lti_ssm_vjp",
                                                                          "refimpl.ssm.lti_ssm_vjp")
    return Contract(targets, args, sizes=sizes, positional=5, empty=("b", "l", "d", "n", "m", "p"))


def _disc(diagonal: bool):
    sizes = dict(d=3, n=4, m=2)
    A = Arr("d n" if diagonal else "d n n", dtype="complex", gen="neg" if diagonal else "normal", scale=0.3)
    args = dict(A=A, B=Arr("d n m", dtype="complex"), dt=Arr("d", positive=True, gen="unit", alt=("",)),
                dA_bar=Arr("d n" if diagonal else "d n n", dtype="complex"), dB_bar=Arr("d n m", dtype="complex"),
                diagonal=Flag(diagonal))
    targets = [f"{_DB}:{m}_vjp" for m in _METHODS]
    targets += [("refimpl.ssm.discretization:discretize_vjp", dict(method=Opt(m), backend=Opt("numpy")))
                for m in _METHODS]
    targets += [("refimpl.ssm.discretization:discretize_vjp",
                 dict(method=Opt("gbt"), alpha=Real(0.3, lo=0.0, hi=1.0), backend=Opt("numpy")))]
    gargs = dict(A=A, B=args["B"], dt=args["dt"], alpha=Real(0.3, lo=0.0, hi=1.0), dA_bar=args["dA_bar"],
                 dB_bar=args["dB_bar"], diagonal=Flag(diagonal))
    return [Contract(targets, args, sizes=sizes, positional=3, empty=("d", "n", "m"), view_arg="method"),
            Contract([f"{_DB}:gbt_vjp"], gargs, sizes=sizes, positional=4, empty=("d", "n", "m"))]


def contracts():
    sizes = dict(d=3, n=4, l=6)
    s4d = dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), B=Arr("d n", dtype="complex"),
               C=Arr("d n", dtype="complex"), dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)),
               L=Int(6, minimum=0, letter="l"), dK=Arr("d l", dtype="complex"), method=Opt("zoh", ("zoh", "bilinear")),
               output=Opt("2re", ("complex", "re", "2re")))
    s4d_c = dict(s4d, dK=Arr("d l", dtype="complex"), output=Opt("complex", ("complex", "re", "2re")))
    return [
        _lti(False), _lti(True), *_disc(False), *_disc(True),
        Contract([f"{_SB}:kernel_vjp"] + _pairs(f"{_S4D}:s4d_kernel_vjp", "refimpl.ssm.s4d_kernel_vjp"), s4d,
                 sizes=sizes, positional=5, empty=("d", "n", "l")),
        Contract([f"{_SB}:kernel_vjp"], s4d_c, sizes=sizes, positional=5, empty=("d", "n", "l")),
        Contract([f"{_SB}:vandermonde_vjp"],
                 dict(v=Arr("d n", dtype="complex"), z=Arr("d n", dtype="complex", gen="cdecay"),
                      L=Int(6, minimum=0, letter="l"), dK=Arr("d l", dtype="complex")),
                 sizes=sizes, positional=3, empty=("d", "n", "l")),
        Contract([f"{_LRU}.backward:recurrent_vjp"] + _pairs(f"{_LRU}:lru_ssm_vjp", "refimpl.ssm.lru_ssm_vjp"),
                 dict(nu_log=Arr("n", scale=0.3), theta_log=Arr("n"), gamma_log=Arr("n", gen="neg"),
                      B=Arr("n d", dtype="complex"), C=Arr("d n", dtype="complex"), D=Arr("d"), u=Arr("b l d"),
                      dy=Arr("b l d"), d_final_state=Arr("b n", dtype="complex", optional=True),
                      initial_state=Arr("b n", dtype="complex", optional=True)),
                 sizes=dict(b=2, l=4, d=3, n=4), positional=7, empty=("b", "l", "d", "n")),
        Contract([f"{_DB}:dphi1"], dict(z=Arr("... n", dtype="complex", alt=("",))), sizes=dict(n=4), positional=1,
                 empty=("n",)),
    ]
