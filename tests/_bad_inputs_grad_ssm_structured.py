"""Bad-input contracts of the structured SSMs' backward passes: ``s5_ssm_vjp`` (``refimpl.ssm.s5.backward``; with
the initial state and the final state's cotangent, and bidirectional with ``C_back``) and ``mega_ema_vjp``
(``refimpl.ssm.ema.backward``), ``dss_kernel_vjp`` (``refimpl.ssm.s4d.backward_dss``), ``s4_kernel_vjp``
(``refimpl.ssm.s4.backward``).  The cotangents are checked like inputs."""
from _bad_inputs import Arr, Contract, Int, Opt

_S5 = "refimpl.ssm.s5"
_EMA = "refimpl.ssm.ema"
_S4D = "refimpl.ssm.s4d"
_S4 = "refimpl.ssm.s4"


def _pairs(entry, public):
    from refimpl._dispatch import registered

    return [(entry, {"view": Opt(view), "backend": Opt(backend)}) for view, backend in registered()[public].pairs()]


def contracts():
    s5 = dict(Lambda=Arr("n", dtype="complex", gen="cneg"), B_tilde=Arr("n d", dtype="complex"),
              C_tilde=Arr("d n", dtype="complex"), D=Arr("d", optional=True),
              dt=Arr("n", positive=True, gen="unit", scale=0.5, alt=("",)), u=Arr("b l d"), dy=Arr("b l d"))
    opts = dict(method=Opt("zoh", ("zoh", "bilinear")), output=Opt("2re", ("re", "2re")))
    s5_targets = [f"{_S5}.backward:recurrent_vjp"] + _pairs(f"{_S5}:s5_ssm_vjp", "refimpl.ssm.s5_ssm_vjp")
    sizes = dict(b=2, l=4, d=3, n=4)
    ema = dict(x=Arr("b l d"), alpha=Arr("d n", gen="unit"), delta=Arr("d n", gen="unit"), beta=Arr("d n"),
               eta=Arr("d n"), dy=Arr("b l d"), d_final_state=Arr("b d n", optional=True),
               initial_state=Arr("b d n", optional=True))
    return [
        Contract(s5_targets, dict(s5, d_final_state=Arr("b n", dtype="complex", optional=True), **opts,
                                  initial_state=Arr("b n", dtype="complex", optional=True)),
                 sizes=sizes, positional=6, empty=("b", "l", "d", "n")),
        Contract(s5_targets, dict(s5, **opts, C_back=Arr("d n", dtype="complex", optional=True)), sizes=sizes,
                 positional=6, empty=("b", "l", "d", "n")),
        Contract([f"{_EMA}.backward:recurrent_vjp"] + _pairs(f"{_EMA}:mega_ema_vjp", "refimpl.ssm.mega_ema_vjp"),
                 ema, sizes=sizes, positional=5, empty=("b", "l", "d", "n")),
        Contract([f"{_S4D}.backward_dss:closed_form_vjp"]
                 + _pairs(f"{_S4D}:dss_kernel_vjp", "refimpl.ssm.dss_kernel_vjp"),
                 dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), W=Arr("d n", dtype="complex"),
                      dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)), L=Int(4, minimum=0, letter="l"),
                      dK=Arr("d l"), variant=Opt("softmax", ("softmax", "exp"))),
                 sizes=dict(d=3, n=4, l=4), positional=4, empty=("d", "n", "l")),
        Contract([f"{_S4}.backward:dense_vjp"] + _pairs(f"{_S4}:s4_kernel_vjp", "refimpl.ssm.s4_kernel_vjp"),
                 dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), P=Arr("d n r", dtype="complex", scale=0.1),
                      Q=Arr("d n r", dtype="complex", scale=0.1), B=Arr("d n", dtype="complex"),
                      C=Arr("d n", dtype="complex"), dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)),
                      L=Int(4, minimum=0, letter="l"), dK=Arr("d l"), output=Opt("2re", ("2re", "re")),
                      method=Opt("bilinear", ("bilinear",))),
                 sizes=dict(d=2, n=3, r=1, l=4), positional=7, empty=("d", "n", "l", "r")),
        Contract([f"{_S4}.backward:dense_vjp"],
                 dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), P=Arr("d n r", dtype="complex", scale=0.1),
                      Q=Arr("d n r", dtype="complex", scale=0.1), B=Arr("d n", dtype="complex"),
                      C=Arr("d n", dtype="complex"), dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)),
                      L=Int(4, minimum=0, letter="l"), dK=Arr("d l", dtype="complex"),
                      output=Opt("complex", ("complex",))),
                 sizes=dict(d=2, n=3, r=1, l=4), positional=7, empty=("d", "n", "l", "r")),
    ]
