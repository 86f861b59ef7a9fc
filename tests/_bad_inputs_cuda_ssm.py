"""Bad-input contracts of the SSM GPU twins (``refimpl/ssm/{lti,s4d,s4,s5}/cuda.py``), run under the CUDA
simulator (NumPy arrays): every public function of those modules with its ``threads_per_block`` keyword.

The registered ``(view, "cuda")`` pairs of the family entry points are covered by the core corpus
(``tests/test_bad_input_corpus.py`` enumerates every registered pair with ``_pairs``); its dense-``A_bar`` LTI
contract leaves the cuda pairs out (the ``scan`` view needs a diagonal ``A_bar``), so the dense recurrence and
convolution kernels get their own contract here.
"""
from _bad_inputs import Arr, Contract, Flag, Int, Opt

_LC = "refimpl.ssm.lti.cuda"
_S5C = "refimpl.ssm.s5.cuda"
_S4C = "refimpl.ssm.s4.cuda"
_S4DC = "refimpl.ssm.s4d.cuda"
_TPB = dict(threads_per_block=Int(32, minimum=1))
# the scans: one chunk of 8 steps covers l = 5 (few simulator barriers; validation is what is tested here)
_TPB1 = dict(threads_per_block=Int(8, minimum=1))
_LTI_SIZES = dict(b=2, l=5, d=3, n=4, m=2, p=3)
_LTI_EMPTY = ("b", "l", "d", "n", "m", "p")


def _lti_args(diagonal: bool, flag: bool = True):
    args = dict(A_bar=Arr("d n" if diagonal else "d n n", dtype="complex", gen="unit" if diagonal else "normal",
                          scale=0.3),
                B_bar=Arr("d n m", dtype="complex"), C=Arr("d p n", dtype="complex"),
                D=Arr("d p m", dtype="complex", optional=True), x=Arr("b l d m", dtype="complex"),
                initial_state=Arr("b d n", dtype="complex", optional=True), return_final_state=Flag(True))
    if flag:
        args["diagonal"] = Flag(diagonal)
    return args


def contracts():
    out = []
    for diagonal in (False, True):
        views = [(f"{_LC}:{v}", _TPB) for v in ("recurrent", "convolution", "convolution_fft")]
        if diagonal:
            views.append((f"{_LC}:scan", _TPB1))
        out.append(Contract(views, _lti_args(diagonal), sizes=_LTI_SIZES, positional=5, empty=_LTI_EMPTY))
        kargs = dict(A_bar=_lti_args(diagonal)["A_bar"], B_bar=Arr("d n m", dtype="complex"),
                     C=Arr("d p n", dtype="complex"), L=Int(4, minimum=0), diagonal=Flag(diagonal))
        out.append(Contract([(f"{_LC}:kernel", _TPB)], kargs, sizes=_LTI_SIZES, positional=4, empty=_LTI_EMPTY))
    out.append(Contract([(f"{_LC}:recurrent_dense", _TPB)], _lti_args(False, flag=False), sizes=_LTI_SIZES,
                        positional=5, empty=_LTI_EMPTY))
    out.append(Contract([(f"{_LC}:causal_conv", _TPB), (f"{_LC}:fft_conv", _TPB)],
                        dict(K=Arr("k d p m", dtype="complex"), x=Arr("b l d m", dtype="complex"),
                             D=Arr("d p m", dtype="complex", optional=True)),
                        sizes=dict(_LTI_SIZES, k=7), positional=3, empty=_LTI_EMPTY))
    # the diagonal scan and the layers around it
    scan_args = dict(a=Arr("l n", dtype="complex", gen="cdecay", alt=("n",)), b=Arr("b l n", dtype="complex"),
                     initial_state=Arr("b n", dtype="complex", optional=True))
    out.append(Contract([(f"{_S5C}:diag_scan", _TPB1)], scan_args, sizes=dict(b=2, l=5, n=4), positional=3,
                        empty=("b", "l", "n")))
    core = dict(Lambda=Arr("n", dtype="complex", gen="cneg"), B_tilde=Arr("n d", dtype="complex"),
                C_tilde=Arr("d n", dtype="complex"), D=Arr("d", optional=True),
                dt=Arr("n", positive=True, gen="unit", scale=0.5, alt=("",)), u=Arr("b l d"))
    opts = dict(method=Opt("zoh", ("zoh", "bilinear")), output=Opt("2re", ("re", "2re")))
    sizes = dict(b=2, l=5, d=3, n=4)
    out.append(Contract([(f"{_S5C}:scan", _TPB1)],
                        dict(core, **opts, initial_state=Arr("b n", dtype="complex", optional=True),
                             return_final_state=Flag(True)), sizes=sizes, positional=6, empty=("b", "l", "d", "n")))
    out.append(Contract([(f"{_S5C}:scan", _TPB1)], dict(core, **opts, C_back=Arr("d n", dtype="complex", optional=True)),
                        sizes=sizes, positional=6, empty=("b", "l", "d", "n")))
    lru = dict(nu_log=Arr("n", scale=0.5), theta_log=Arr("n", scale=0.5), gamma_log=Arr("n", scale=0.5),
               B=Arr("n d", dtype="complex"), C=Arr("d n", dtype="complex"), D=Arr("d"), u=Arr("b l d"),
               initial_state=Arr("b n", dtype="complex", optional=True), return_final_state=Flag(True))
    out.append(Contract([(f"{_S5C}:lru_scan", _TPB1)], lru, sizes=sizes, positional=7, empty=("b", "l", "d", "n")))
    # S4D Vandermonde, S4 Cauchy and the kernels around them
    sys3 = dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), B=Arr("d n", dtype="complex"),
                C=Arr("d n", dtype="complex"), dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)),
                L=Int(6, minimum=0))
    outs = ("complex", "re", "2re")
    out.append(Contract([(f"{_S4DC}:kernel", _TPB)],
                        dict(sys3, method=Opt("zoh", ("zoh", "bilinear")), output=Opt("2re", outs)),
                        sizes=dict(d=3, n=4), positional=5, empty=("d", "n")))
    out.append(Contract([(f"{_S4DC}:vandermonde", _TPB)],
                        dict(v=Arr("d n", dtype="complex"), z=Arr("d n", dtype="complex", gen="cdecay"),
                             L=Int(6, minimum=0)), sizes=dict(d=3, n=4), positional=3, empty=("d", "n")))
    dplr = dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), P=Arr("d n r", dtype="complex", scale=0.3),
                Q=Arr("d n r", dtype="complex", scale=0.3), B=Arr("d n", dtype="complex"),
                C=Arr("d n", dtype="complex"),
                dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)), L=Int(6, minimum=0))
    out.append(Contract([(f"{_S4C}:kernel", _TPB)],
                        dict(dplr, output=Opt("re", outs), method=Opt("bilinear", ("bilinear", "zoh"))),
                        sizes=dict(d=3, n=4, r=2, l=6), positional=7, empty=("d", "n", "r")))
    out.append(Contract([(f"{_S4C}:cauchy", _TPB)],
                        dict(v=Arr("d n", dtype="complex"), g=Arr("d l", dtype="complex", gen="cnormal"),
                             lam=Arr("d n", dtype="complex", gen="cneg")),
                        sizes=dict(d=3, n=4, l=5), positional=3, empty=("d", "n", "l")))
    return out
