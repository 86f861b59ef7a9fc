"""Bad input never gives a silent answer (issue 18): one corpus over every public function of ``refimpl``.

Each contract below declares one valid call of one or more public functions (the same signature): the
arguments' kinds and shapes in the glossary's letters, and what the documented contract allows (empty
axes, complex data, meaningful non-finite values, alternative shapes).  ``tests/_bad_inputs.py`` derives
the calls from it -- wrong rank, sizes off by one, int/bool/complex/float16 data, NaN/Inf, empty axes,
lists, ``None``, non-positive steps, unknown options, non-bool bools, missing view/backend pairs, and the
valid variants (lists, non-contiguous views, ``np.bool_``, float32, ...) -- and runs them.  A bad call must
raise ``TypeError``/``ValueError`` naming its argument; a valid one must run (lists and non-contiguous views
giving the baseline's answer bit for bit).

Every public function is covered: each name in each ``refimpl`` module's ``__all__`` and each registered
view/backend pair of each entry point must appear among the targets (``test_every_public_function_has_a_contract``).
``python tests/test_bad_input_corpus.py`` prints the findings and the counts.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bad_inputs import (Arr, Contract, DType, Fixed, Flag, Fn, Int, Opt, Pair, Real, Seq,  # noqa: E402
                         calls_for, run_calls)

INF = math.inf


class _resolve_later:
    """A function named ``"module:function"``, imported when called (the corpus is built before any import)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *a, **k):
        from _bad_inputs import _resolve

        return _resolve(self.name)(*a, **k)

    def __repr__(self):
        return self.name


def _entry(name, **extra):
    return (name, extra)


def _pairs(entry: str, public: str, **per_view):
    """The targets ``(entry, {view, backend, ...})`` of every registered pair of the table ``public``."""
    from refimpl._dispatch import registered
    from _bad_inputs import _resolve

    params = inspect.signature(_resolve(entry)).parameters
    out = []
    for view, backend in registered()[public].pairs():
        extra = dict(view=Opt(view), backend=Opt(backend)) if "view" in params else dict(backend=Opt(backend))
        extra.update(per_view.get(view, {}))
        out.append((entry, extra))
    return out


# ============================================================================================== SSM core

_DISC_METHODS = ("zoh", "bilinear", "forward_euler", "backward_euler", "mamba")
_DREF = "refimpl.ssm.discretization.reference"


def _disc(diagonal: bool):
    A = Arr("d n" if diagonal else "d n n", dtype="complex", gen="neg" if diagonal else "normal", scale=0.3)
    args = dict(A=A, B=Arr("d n m", dtype="complex"), dt=Arr("d", positive=True, gen="unit", alt=("", "l d")))
    targets = [f"{_DREF}:{m}" for m in _DISC_METHODS]
    targets += [_entry("refimpl.ssm.discretization:discretize", method=Opt(m), backend=Opt("numpy"))
                for m in _DISC_METHODS]
    targets += [_entry("refimpl.ssm.discretization:discretize", method=Opt("gbt"), alpha=Real(0.3, lo=0.0, hi=1.0),
                       backend=Opt("numpy"))]
    contracts = [Contract(targets, dict(args, diagonal=Flag(diagonal)), sizes=dict(d=3, n=4, m=2), positional=3,
                          empty=("d", "n", "m"), view_arg="method"),
                 Contract([_entry(f"{_DREF}:gbt", alpha=Real(0.3, lo=0.0, hi=1.0))],
                          dict(args, diagonal=Flag(diagonal)),
                          sizes=dict(d=3, n=4, m=2), positional=3, empty=("d", "n", "m"))]
    return contracts


_LTI = "refimpl.ssm.lti"
_LREF = "refimpl.ssm.lti.reference"
_LNB = "refimpl.ssm.lti.numba"
_LTI_SIZES = dict(b=2, l=5, d=3, n=4, m=2, p=3)
_LTI_EMPTY = ("b", "l", "d", "n", "m", "p")  # a linear map: empty sums are 0, every axis may be empty


def _lti_args(diagonal: bool):
    return dict(A_bar=Arr("d n" if diagonal else "d n n", dtype="complex", gen="unit" if diagonal else "normal",
                          scale=0.3),
                B_bar=Arr("d n m", dtype="complex"), C=Arr("d p n", dtype="complex"),
                D=Arr("d p m", dtype="complex", optional=True), x=Arr("b l d m", dtype="complex"),
                initial_state=Arr("b d n", dtype="complex", optional=True),
                diagonal=Flag(diagonal), return_final_state=Flag(True))


def _lti(diagonal: bool):
    views = [f"{_LREF}:{v}" for v in ("recurrent", "convolution", "convolution_fft", "scan")]
    views += [f"{_LNB}:{v}" for v in ("recurrent", "convolution")]
    views += [_entry(f"{_LREF}:chunked", chunk=Int(2, minimum=1))]
    views += _pairs(f"{_LTI}:lti_ssm", "refimpl.ssm.lti_ssm", chunked=dict(chunk=Int(2, minimum=1, none_ok=True)))
    if not diagonal:
        views = [t for t in views if not (isinstance(t, tuple) and t[1].get("backend", Opt("numpy")).value == "cuda")]
    out = [Contract(views, _lti_args(diagonal), sizes=_LTI_SIZES, positional=5, empty=_LTI_EMPTY)]
    vargs = _lti_args(diagonal)
    vargs.pop("return_final_state")
    out.append(Contract([f"{_LREF}:validate_system"], vargs, sizes=_LTI_SIZES, positional=5, empty=_LTI_EMPTY))
    if diagonal:
        args = _lti_args(True)
        args.pop("diagonal")
        out.append(Contract([_entry(f"{_LTI}.cuda:recurrent_diag", threads_per_block=Int(4, minimum=1))], args,
                            sizes=_LTI_SIZES, positional=5, empty=_LTI_EMPTY))
    kargs = dict(A_bar=_lti_args(diagonal)["A_bar"], B_bar=Arr("d n m", dtype="complex"),
                 C=Arr("d p n", dtype="complex"),
                 L=Int(4, minimum=0), diagonal=Flag(diagonal))
    out.append(Contract([f"{_LREF}:kernel", f"{_LNB}:kernel", f"{_LREF}:validate_kernel_args"]
                        + _pairs(f"{_LTI}:lti_kernel", "refimpl.ssm.lti_kernel"),
                        kargs, sizes=_LTI_SIZES, positional=4, empty=_LTI_EMPTY))
    return out


CONTRACTS = [
    *_disc(False), *_disc(True),
    Contract(["refimpl.ssm.discretization.reference:phi1"],
             dict(z=Arr("... n", dtype="complex", alt=("",))), sizes=dict(n=4), positional=1, empty=("n",)),
    Contract(["refimpl.ssm.discretization.reference:phi1_dense"],
             dict(X=Arr("d n n", dtype="complex", scale=0.5, alt=("n n", "... n n"))), sizes=dict(d=2, n=3),
             positional=1, empty=("d", "n")),
    *_lti(False), *_lti(True),
    Contract([f"{_LREF}:causal_conv", f"{_LNB}:causal_conv", f"{_LREF}:fft_conv", f"{_LREF}:validate_conv"],
             dict(K=Arr("k d p m", dtype="complex"), x=Arr("b l d m", dtype="complex"),
                  D=Arr("d p m", dtype="complex", optional=True)),
             sizes=dict(_LTI_SIZES, k=7), positional=3, empty=_LTI_EMPTY),
    Contract([f"{_LREF}:fft_length"], dict(L=Int(5, minimum=1)), positional=1),
]


# ============================================================================================== structured SSMs

_H = "refimpl.ssm.hippo"
_HREF = "refimpl.ssm.hippo.reference"
_MEAS = ("legs", "legt", "lmu", "lagt", "fout")
_S4 = "refimpl.ssm.s4"
_S4R = "refimpl.ssm.s4.reference"
_S4N = "refimpl.ssm.s4.numba"
_S4D = "refimpl.ssm.s4d"
_S4DR = "refimpl.ssm.s4d.reference"
_S4DN = "refimpl.ssm.s4d.numba"
_S5 = "refimpl.ssm.s5"
_S5R = "refimpl.ssm.s5.reference"
_S5N = "refimpl.ssm.s5.numba"
_LRU = "refimpl.ssm.lru"
_LRUR = "refimpl.ssm.lru.reference"
_EMA = "refimpl.ssm.ema"
_EMAR = "refimpl.ssm.ema.reference"


def _hippo():
    out = []
    for m in _MEAS:
        N = 5 if m == "fout" else 4
        out.append(Contract([f"{_HREF}:{m}", f"{_H}:{m}"], dict(N=Int(N, minimum=1), sign=Opt("ode", ("ode", "s4"))),
                            positional=1))
        out.append(Contract([f"{_HREF}:transition", f"{_H}:hippo_transition"],
                            dict(measure=Opt(m), N=Int(N, minimum=1), sign=Opt("s4", ("ode", "s4"))), positional=2))
        t = 1.5
        out.append(Contract([f"{_HREF}:basis", f"{_H}:basis"],
                            dict(measure=Opt(m), N=Int(N, minimum=1), x=Arr("m", gen="unit"),
                                 t=Real(t, positive=(m == "legs")), theta=Real(1.0, positive=True)),
                            sizes=dict(m=3), positional=4, empty=("m",)))
        out.append(Contract([f"{_HREF}:reconstruct", f"{_H}:reconstruct"],
                            dict(c=Arr("n"), measure=Opt(m), x=Arr("m", gen="unit"), t=Real(t, positive=(m == "legs")),
                                 theta=Real(1.0, positive=True)),
                            sizes=dict(n=N, m=3), positional=4, empty=("m",)))
        out.append(Contract([f"{_HREF}:scale", f"{_H}:scale"],
                            dict(measure=Opt(m), t=Arr("m", gen="pos", positive=(m == "legs"), alt=("", "... m")),
                                 theta=Real(1.0, positive=True)),
                            sizes=dict(m=3), positional=2, empty=("m",)))
        proj = dict(f=Arr("l"), measure=Opt(m), N=Int(N, minimum=1), dt=Real(0.1, positive=True),
                    method=Opt("bilinear", ("forward_euler", "backward_euler", "bilinear", "gbt")),
                    theta=Real(1.0, positive=True), t0=Real(0.2, positive=(m == "legs"), none_ok=True),
                    initial_state=Arr("n", optional=True))
        out.append(Contract([f"{_HREF}:online_projection"]
                            + _pairs(f"{_H}:hippo_projection", "refimpl.ssm.hippo_projection"),
                            proj, sizes=dict(l=4, n=N), positional=4, empty=("l",)))
        out.append(Contract([_entry(f"{_HREF}:online_projection", method=Opt("gbt"), alpha=Real(0.3, lo=0.0, hi=1.0))],
                            proj, sizes=dict(l=4, n=N), positional=4, empty=("l",)))
    return out


def _s4():
    dplr = dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), P=Arr("d n r", dtype="complex", scale=0.3),
                Q=Arr("d n r", dtype="complex", scale=0.3), B=Arr("d n", dtype="complex"),
                C=Arr("d n", dtype="complex"),
                dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)), L=Int(6, minimum=0))
    sizes = dict(d=3, n=4, r=2, l=6)
    outs = ("complex", "re", "2re")
    return [
        Contract([f"{_S4R}:generating_function"], dict(dplr, method=Opt("bilinear", ("bilinear", "zoh"))), sizes=sizes,
                 positional=7, empty=("d", "n", "r")),
        Contract([f"{_S4R}:kernel", f"{_S4N}:kernel", f"{_S4R}:kernel_dense"]
                 + _pairs(f"{_S4}:s4_kernel", "refimpl.ssm.s4_kernel"),
                 dict(dplr, output=Opt("re", outs), method=Opt("bilinear", ("bilinear", "zoh"))), sizes=sizes,
                 positional=7, empty=("d", "n", "r")),
        Contract([f"{_S4R}:cauchy", f"{_S4N}:cauchy"] + _pairs(f"{_S4}:cauchy", "refimpl.ssm.cauchy"),
                 dict(v=Arr("d n", dtype="complex"), g=Arr("d l", dtype="complex", gen="cnormal"),
                      lam=Arr("d n", dtype="complex", gen="cneg")),
                 sizes=dict(d=3, n=4, l=5), positional=3, empty=("d", "n", "l")),
        Contract([f"{_S4R}:nplr"], dict(measure=Opt("legs", ("legs", "legt", "lagt", "fout")), N=Int(4, minimum=1),
                                        theta=Real(1.0, positive=True)), positional=2),
        Contract([f"{_S4R}:eigenvector_condition"], dict(A=Arr("n n", dtype="complex")), sizes=dict(n=3), positional=1),
        Contract([f"{_S4R}:unit_circle_half_angle"], dict(L=Int(5, minimum=1)), positional=1),
        Contract([f"{_S4R}:real_output"], dict(K=Arr("d l", dtype="complex", gen="cnormal"),
                                               output=Opt("2re", outs)), sizes=dict(d=3, l=5), positional=2,
                 empty=("d", "l")),
    ]


def _s4d():
    sys3 = dict(Lambda=Arr("d n", dtype="complex", gen="cneg"), B=Arr("d n", dtype="complex"),
                C=Arr("d n", dtype="complex"), dt=Arr("d", positive=True, gen="unit", scale=0.5, alt=("",)),
                L=Int(6, minimum=0))
    sizes = dict(d=3, n=4)
    outs = ("complex", "re", "2re")
    return [
        Contract([f"{_S4DR}:kernel", f"{_S4DN}:kernel"] + _pairs(f"{_S4D}:s4d_kernel", "refimpl.ssm.s4d_kernel"),
                 dict(sys3, method=Opt("zoh", ("zoh", "bilinear")), output=Opt("2re", outs)), sizes=sizes,
                 positional=5, empty=("d", "n")),
        Contract([f"{_S4DR}:dss_kernel"] + _pairs(f"{_S4D}:dss_kernel", "refimpl.ssm.dss_kernel"),
                 dict(Lambda=sys3["Lambda"], W=Arr("d n", dtype="complex"), dt=sys3["dt"], L=Int(6, minimum=0),
                      variant=Opt("softmax", ("exp", "softmax"))), sizes=sizes, positional=4, empty=("d", "n")),
        Contract([_entry(f"{_S4DR}:dss_kernel", variant=Opt("exp", ("exp", "softmax")))],
                 dict(Lambda=sys3["Lambda"], W=Arr("d n", dtype="complex"), dt=sys3["dt"], L=Int(6, minimum=0)),
                 sizes=sizes, positional=4, empty=("d", "n")),
        Contract([f"{_S4DR}:vandermonde", f"{_S4DN}:vandermonde"]
                 + _pairs(f"{_S4D}:vandermonde", "refimpl.ssm.vandermonde"),
                 dict(v=Arr("d n", dtype="complex"), z=Arr("d n", dtype="complex", gen="cdecay"), L=Int(6, minimum=0)),
                 sizes=sizes, positional=3, empty=("d", "n")),
        Contract([f"{_S4DR}:init"], dict(name=Opt("lin", ("lin", "inv", "real", "legs")), N=Int(4, minimum=1)),
                 positional=2),
        Contract([f"{_S4DR}:discretize_diag"], dict(Lambda=sys3["Lambda"], B=sys3["B"], dt=sys3["dt"],
                                                    method=Opt("zoh", ("zoh", "bilinear"))),
                 sizes=sizes, positional=3, empty=("d", "n")),
    ]


def _s5():
    core = dict(Lambda=Arr("n", dtype="complex", gen="cneg"), B_tilde=Arr("n d", dtype="complex"),
                C_tilde=Arr("d n", dtype="complex"), D=Arr("d", optional=True),
                dt=Arr("n", positive=True, gen="unit", scale=0.5, alt=("",)), u=Arr("b l d"))
    sizes = dict(b=2, l=5, d=3, n=4)
    opts = dict(method=Opt("zoh", ("zoh", "bilinear")), output=Opt("2re", ("re", "2re")))
    views = [f"{_S5R}:scan", f"{_S5R}:recurrent", f"{_S5N}:recurrent"] + _pairs(f"{_S5}:s5_ssm", "refimpl.ssm.s5_ssm")
    return [
        Contract(views, dict(core, **opts, initial_state=Arr("b n", dtype="complex", optional=True),
                             return_final_state=Flag(True)), sizes=sizes, positional=6,
                 empty=("b", "l", "d", "n")),
        Contract(views, dict(core, **opts, C_back=Arr("d n", dtype="complex", optional=True)), sizes=sizes,
                 positional=6, empty=("b", "l", "d", "n")),
        Contract([f"{_S5R}:diag_scan", f"{_S5N}:diag_scan"],
                 dict(a=Arr("l n", dtype="complex", gen="cdecay", alt=("n",)), b=Arr("b l n", dtype="complex"),
                      initial_state=Arr("b n", dtype="complex", optional=True)),
                 sizes=sizes, positional=3, empty=("b", "l", "n")),
        Contract(_pairs(f"{_S5}:diag_scan", "refimpl.ssm.diag_scan"),
                 dict(a=Arr("l n", dtype="complex", gen="cdecay", alt=("n",)), b=Arr("b l n", dtype="complex"),
                      initial_state=Arr("b n", dtype="complex", optional=True)),
                 sizes=sizes, positional=2, empty=("b", "l", "n")),
        Contract([f"{_S5R}:discretize_s5"], dict(Lambda=core["Lambda"], B_tilde=core["B_tilde"], dt=core["dt"],
                                                 method=Opt("bilinear", ("zoh", "bilinear"))),
                 sizes=sizes, positional=3, empty=("d", "n")),
        Contract([f"{_S5R}:associative_scan"],
                 dict(op=Fn(_resolve_later(f"{_S5R}:binary_op")), a=Arr("l", dtype="complex", gen="cdecay"),
                      b=Arr("l", dtype="complex")), sizes=dict(l=5), positional=3, empty=("l",)),
        Contract([f"{_S5R}:binary_op"], dict(e_i=Seq((Arr("n", dtype="complex"), Arr("n", dtype="complex"))),
                                             e_j=Seq((Arr("n", dtype="complex"), Arr("n", dtype="complex")))),
                 sizes=dict(n=3), positional=2, empty=("n",)),
        Contract([f"{_S5R}:hippo_n_init"], dict(N=Int(4, minimum=1), conj_sym=Flag(True)), positional=1),
        Contract([f"{_S5R}:init"], dict(N=Int(4, minimum=1), d=Int(3, minimum=1), conj_sym=Flag(True),
                                        dt_min=Real(1e-3, positive=True), dt_max=Real(1e-1, positive=True),
                                        rng=Fixed(None)), positional=2),
    ]


def _lru():
    args = dict(nu_log=Arr("n", scale=0.5), theta_log=Arr("n", scale=0.5), gamma_log=Arr("n", scale=0.5),
                B=Arr("n d", dtype="complex"), C=Arr("d n", dtype="complex"), D=Arr("d"), u=Arr("b l d"),
                initial_state=Arr("b n", dtype="complex", optional=True), return_final_state=Flag(True))
    sizes = dict(b=2, l=5, d=3, n=4)
    return [
        Contract([f"{_LRUR}:recurrent", f"{_LRUR}:scan", f"{_LRU}.numba:recurrent"]
                 + _pairs(f"{_LRU}:lru_ssm", "refimpl.ssm.lru_ssm"), args, sizes=sizes, positional=7,
                 empty=("b", "l", "d", "n")),
        Contract([f"{_LRUR}:lambda_from_params"], dict(nu_log=Arr("n"), theta_log=Arr("n")), sizes=sizes,
                 positional=2, empty=("n",)),
        Contract([f"{_LRUR}:gamma_from_lambda"], dict(lam=Arr("n", dtype="complex", gen="cdecay")), sizes=sizes,
                 positional=1, empty=("n",)),
        Contract([f"{_LRUR}:ring_init"], dict(N=Int(4, minimum=1), d=Int(3, minimum=1), r_min=Real(0.2, lo=0.0),
                                              r_max=Real(0.9, hi=1.0), max_phase=Real(3.0, positive=True),
                                              rng=Fixed(None)), positional=2),
    ]


def _ema():
    params = dict(alpha=Arr("d n", gen="unit"), delta=Arr("d n", gen="unit"), beta=Arr("d n"), eta=Arr("d n"))
    sizes = dict(b=2, l=5, d=3, n=4)
    return [
        Contract([f"{_EMAR}:recurrent", f"{_EMAR}:convolution", f"{_EMAR}:fft_convolution"]
                 + _pairs(f"{_EMA}:mega_ema", "refimpl.ssm.mega_ema"),
                 dict(x=Arr("b l d"), **params, initial_state=Arr("b d n", optional=True),
                      return_final_state=Flag(True)), sizes=sizes, positional=5, empty=("b", "l", "d", "n")),
        Contract([f"{_EMAR}:kernel"], dict(params, L=Int(5, minimum=0)), sizes=sizes, positional=5,
                 empty=("d", "n")),
    ]


CONTRACTS += [*_hippo(), *_s4(), *_s4d(), *_s5(), *_lru(), *_ema()]


# ============================================================================================== selective SSMs

_SEL = "refimpl.ssm.selective"
_SELR = "refimpl.ssm.selective.reference"
_SSD = "refimpl.ssm.ssd"
_SSDR = "refimpl.ssm.ssd.reference"


def _seq_idx(rng, shape):
    idx = rng.integers(0, 2, shape)
    return np.sort(idx, axis=-1) if idx.ndim else idx


def _selective():
    sizes = dict(b=2, l=5, d=4, n=3, g=2)
    common = dict(delta_bias=Arr("d", scale=0.1, optional=True), delta_softplus=Flag(False),
                  discretization=Opt("mamba", ("mamba", "zoh")), allow_unstable=Flag(False))
    real = dict(u=Arr("b l d"), delta=Arr("b l d", gen="unit"), A=Arr("d n", gen="neg", dtype="complex"),
                B=Arr("b l n", alt=("d n", "b l g n")), C=Arr("b l g n", alt=("d n", "b l n")),
                D=Arr("d", optional=True), z=Arr("b l d", optional=True), **common,
                initial_state=Arr("b d n", optional=True))
    cplx = dict(real, A=Arr("d n", dtype="complex", gen="cneg"),
                B=Arr("d n", dtype="complex", alt=("b l n", "b l g n")),
                C=Arr("b l n", dtype="complex", alt=("d n", "b l g n")),
                initial_state=Arr("b d n", dtype="complex", optional=True))
    views = [f"{_SELR}:recurrent", f"{_SELR}:scan", _entry(f"{_SELR}:chunked", chunk=Int(2, minimum=1)),
             f"{_SEL}.numba:selective_scan_numba"]
    views += _pairs(f"{_SEL}:selective_scan", "refimpl.ssm.selective_scan", chunked=dict(chunk=Int(2, minimum=1)))
    E = ("b", "l", "d", "n")
    step = dict(state=Arr("b d n"), u_t=Arr("b d"), delta_t=Arr("b d", gen="unit"),
                A=Arr("d n", gen="neg", dtype="complex"),
                B_t=Arr("b n", alt=("b g n",)), C_t=Arr("b g n", alt=("b n",)), D=Arr("d", optional=True),
                z_t=Arr("b d", optional=True), **common)
    return [
        Contract(views, dict(real, return_final_state=Flag(True)), sizes=sizes, positional=7, empty=E),
        Contract(views[:1] + [t for t in views if isinstance(t, tuple) and t[1].get("view") == Opt("recurrent")
                              and t[1].get("backend") == Opt("numpy")],
                 dict(cplx, return_final_state=Flag(True)), sizes=sizes, positional=7,
                 empty=E),
        Contract([f"{_SELR}:prepare"], real, sizes=sizes, positional=7, empty=E),
        Contract([f"{_SELR}:step"] + _pairs(f"{_SEL}:selective_step", "refimpl.ssm.selective_step"), step,
                 sizes=sizes, positional=8, empty=("b", "d", "n")),
        Contract([f"{_SELR}:effective_delta"],
                 dict(delta=Arr("b l d", alt=("... d",)), delta_bias=Arr("d", optional=True),
                                                    delta_softplus=Flag(True)),
                 sizes=sizes, positional=2, empty=("b", "l", "d")),
        Contract([f"{_SELR}:softplus"], dict(x=Arr("... n", alt=("",), nonfinite="propagate", allow=("-inf",))),
                 sizes=dict(n=4), positional=1, empty=("n",)),
        Contract([f"{_SELR}:silu"], dict(z=Arr("... n", alt=("",), nonfinite="propagate")), sizes=dict(n=4),
                 positional=1, empty=("n",)),
        Contract([f"{_SELR}:segsum"], dict(x=Arr("... n", dtype="complex", nonfinite="propagate")), sizes=dict(n=4),
                 positional=1,
                 empty=("n",)),
    ]


def _ssd():
    sizes = dict(b=2, l=5, h=4, g=2, p=3, n=6)
    common = dict(dt_bias=Arr("h", scale=0.1, optional=True), dt_softplus=Flag(False), dt_limit=Pair((0.0, INF)),
                  allow_unstable=Flag(False))
    scan = dict(x=Arr("b l h p"), dt=Arr("b l h", gen="unit"), A=Arr("h", gen="neg"), B=Arr("b l g n"),
                C=Arr("b l g n"), D=Arr("h", optional=True, alt=("h p",)), z=Arr("b l h p", optional=True), **common,
                initial_state=Arr("b h p n", optional=True),
                seq_idx=Arr("b l", dtype="int", gen=_seq_idx, optional=True))
    views = [f"{_SSDR}:recurrent", f"{_SSDR}:quadratic", _entry(f"{_SSDR}:chunked", chunk=Int(2, minimum=1)),
             _entry(f"{_SSD}.numba:ssd_chunked_numba", chunk=Int(2, minimum=1))]
    views += _pairs(f"{_SSD}:ssd_scan", "refimpl.ssm.ssd_scan", chunked=dict(chunk=Int(2, minimum=1)))
    step = dict(state=Arr("b h p n"), x_t=Arr("b h p"), dt_t=Arr("b h", gen="unit"), A=Arr("h", gen="neg"),
                B_t=Arr("b g n"), C_t=Arr("b g n"), D=Arr("h p", optional=True, alt=("h",)),
                z_t=Arr("b h p", optional=True), **common)
    E = ("b", "l", "h", "p", "n")
    return [
        Contract(views, dict(scan, return_final_state=Flag(True)), sizes=sizes, positional=7, empty=E),
        Contract([f"{_SSDR}:prepare"], scan, sizes=sizes, positional=7, empty=E),
        Contract([f"{_SSDR}:step"] + _pairs(f"{_SSD}:ssd_step", "refimpl.ssm.ssd_step"), step, sizes=sizes,
                 positional=8, empty=("b", "h", "p", "n")),
        Contract([f"{_SSDR}:effective_dt"], dict(dt=Arr("b l h", alt=("... h",)), dt_bias=Arr("h", optional=True),
                                                 dt_softplus=Flag(True), dt_limit=Pair((0.1, 2.0))),
                 sizes=sizes, positional=2, empty=("b", "l", "h")),
    ]


CONTRACTS += [*_selective(), *_ssd()]


# ============================================================================================== attention

_SM = "refimpl.attention.softmax"
_SMR = "refimpl.attention.softmax.reference"
_LIN = "refimpl.attention.linear"
_LINR = "refimpl.attention.linear.reference"
_LINN = "refimpl.attention.linear.numba"
_FT = "refimpl.attention.features"
_FTR = "refimpl.attention.features.reference"
_FTN = "refimpl.attention.features.numba"
_FW = "refimpl.attention.fast_weights"
_DL = "refimpl.attention.delta"
_DLR = "refimpl.attention.delta.reference"
_MEM = "refimpl.attention.memory.reference"
_ALIGN = ("top_left", "bottom_right")


def _softmax():
    sizes = dict(b=2, l=3, s=4, h=2, n=3, p=2, d=5, e=3)
    qkv = dict(q=Arr("b l h n"), k=Arr("b s h n"), v=Arr("b s h p"))
    causal = dict(scale=Real(None, none_ok=True), causal=Flag(True), alignment=Opt("bottom_right", _ALIGN))
    E = ("b", "l", "s", "h", "n", "p")
    mat = dict(qkv, **causal, mask=Arr("b l s", dtype="bool", gen="normal", alt=("l s", "b h l s"), optional=True),
               bias=Arr("b h l s", allow=("-inf",), alt=("l s", "b l s"), optional=True),
               return_weights=Flag(True), return_lse=Flag(True))
    rows = Arr("b l s", nonfinite="propagate", allow=("-inf",), alt=("... s",))
    return [
        Contract([f"{_SMR}:materialized", _entry(f"{_SM}:scaled_dot_product_attention", view=Opt("materialized"),
                                                 backend=Opt("numpy"))], mat, sizes=sizes, positional=3, empty=E),
        Contract([_entry(f"{_SM}.numba:flash_attention", block_q=Int(2, minimum=1), block_k=Int(3, minimum=1)),
                  _entry(f"{_SM}:scaled_dot_product_attention", view=Opt("tiled"), backend=Opt("numba"))],
                 dict(qkv, **causal), sizes=sizes, positional=3, empty=E),
        Contract([f"{_SMR}:multi_head_attention"],
                 dict(x_q=Arr("b l d"), x_kv=Arr("b s d"), W_Q=Arr("h d n"), W_K=Arr("h d n"), W_V=Arr("h d p"),
                      W_O=Arr("h*p e"), scale=Real(0.5, none_ok=True), causal=Flag(False),
                      alignment=Opt(None, _ALIGN, none_ok=True),
                      mask=Arr("l s", dtype="bool", optional=True, alt=("b l s", "b h l s"))),
                 sizes=sizes, positional=6, empty=("b", "l", "s", "h", "n", "p", "d", "e")),
        Contract([f"{_SMR}:causal_alignment"], dict(causal=Flag(True), alignment=Opt("top_left", _ALIGN, none_ok=True),
                                                     l=Int(3, minimum=0), s=Int(4, minimum=0)), positional=4),
        Contract([f"{_SMR}:attention_scale"], dict(scale=Real(0.5, none_ok=True), n=Int(3, minimum=0)), positional=2),
        Contract([f"{_SMR}:causal_mask"],
                 dict(l=Int(3, minimum=0), s=Int(4, minimum=0), alignment=Opt("bottom_right", _ALIGN)),
                 positional=3),
        Contract([f"{_SMR}:softmax", f"{_SMR}:logsumexp"], dict(s=rows, axis=Int(-1, minimum=-3, maximum=2)),
                 sizes=sizes, positional=1, empty=("b", "l", "s")),
    ]


def _linear():
    sizes = dict(b=2, l=5, s=4, h=2, n=3, p=2, f=4)
    causal_views = [f"{_LINR}:recurrent", f"{_LINR}:quadratic", f"{_LINN}:causal_recurrent",
                    _entry(f"{_LINR}:chunked", chunk=Int(2, minimum=1)),
                    _entry(f"{_LINN}:causal_chunked", chunk=Int(2, minimum=1))]
    causal_views += _pairs(f"{_LIN}:linear_attention", "refimpl.attention.linear_attention",
                           chunked=dict(chunk=Int(2, minimum=1)))
    opts = dict(causal=Flag(True), normalize=Flag(True), eps=Real(0.0, nonneg=True),
                eps_mode=Opt("add", ("add", "clamp")),
                state_layout=Opt("vk", ("vk", "kv")))
    norm = dict(phi_q=Arr("b l h n", gen="pos"), phi_k=Arr("b l h n", gen="pos"), v=Arr("b l h p"), **opts,
                initial_state=Seq((Arr("b h p n", gen="pos"), Arr("b h n", gen="pos")), optional=True),
                return_final_state=Flag(True))
    unnorm = dict(norm, normalize=Flag(True), initial_state=Arr("b h p n", optional=True, listable=False))
    unnorm["normalize"] = Flag(False)
    noncausal = dict(norm, phi_k=Arr("b s h n", gen="pos"), v=Arr("b s h p"), causal=Flag(False))
    E = ("b", "l", "h", "p")
    perf = dict(q=Arr("b l h n", scale=0.5), k=Arr("b s h n", scale=0.5), v=Arr("b s h p"), W=Arr("f n"),
                kind=Opt("positive", ("trig", "positive", "hyperbolic")), causal=Flag(False), normalize=Flag(True),
                eps=Real(0.0, nonneg=True), scale=Real(None, none_ok=True, positive=True),
                stabilizer=Opt("query_max", ("none", "query_max", "key_global_max", "key_prefix_max")),
                view=Opt("quadratic", ("quadratic", "recurrent", "chunked")), chunk=Int(2, minimum=1))
    perf_causal = dict(perf, k=Arr("b l h n", scale=0.5), v=Arr("b l h p"), causal=Flag(True),
                       stabilizer=Opt("key_prefix_max", perf["stabilizer"].choices),
                       view=Opt("recurrent", perf["view"].choices))
    return [
        Contract(causal_views + [f"{_LINR}:validate_linear"], norm, sizes=sizes, positional=3, empty=E + ("n",)),
        Contract(causal_views, unnorm, sizes=sizes, positional=3, empty=E + ("n",)),
        Contract([f"{_LINR}:quadratic",
                  _entry(f"{_LIN}:linear_attention", view=Opt("quadratic"), backend=Opt("numpy"))],
                 noncausal, sizes=sizes, positional=3, empty=E + ("s", "n")),
        Contract([f"{_LINR}:performer_attention"], perf, sizes=sizes, positional=4,
                 empty=("b", "l", "s", "h", "p", "n")),
        Contract([f"{_LINR}:performer_attention"], perf_causal, sizes=sizes, positional=4,
                 empty=("b", "l", "h", "p", "n")),
        Contract([f"{_LINR}:causal_recurrent_offsets"],
                 dict(phi_q=Arr("b l h n", gen="pos"), phi_k_scaled=Arr("b l h n", gen="pos"), k_offset=Arr("b l h"),
                      v=Arr("b l h p"), normalize=Flag(True), eps=Real(0.0, nonneg=True),
                      eps_mode=Opt("add", ("add", "clamp"))), sizes=sizes, positional=4, empty=E + ("n",)),
    ]


def _features():
    sizes = dict(b=2, n=3, f=4)
    x = Arr("b n", alt=("... n",))
    W = Arr("f n")
    out = []
    for kind, backends in (("identity", ("numpy",)), ("elu_plus_one", ("numpy", "numba"))):
        out.append(Contract([_entry(f"{_FT}:feature_map", kind=Opt(kind), backend=Opt(be)) for be in backends]
                            + [f"{_FTR}:{kind}"] + ([f"{_FTN}:{kind}"] if "numba" in backends else []),
                            dict(x=x), sizes=sizes, positional=1, empty=("b", "n"), view_arg="kind"))
    out.append(Contract([_entry(f"{_FT}:feature_map", kind=Opt("dpfp"), backend=Opt(be),
                                nu=Int(2, minimum=1, maximum=5, none_ok=True))
                         for be in ("numpy", "numba")]
                        + [_entry(f"{_FTR}:dpfp", nu=Int(2, minimum=1, maximum=5)),
                           _entry(f"{_FTN}:dpfp", nu=Int(2, minimum=1, maximum=5)),
                           _entry(f"{_FTR}:check_dpfp", nu=Int(2, minimum=1, maximum=5))],
                        dict(x=x), sizes=sizes, positional=1, empty=("b",), view_arg="kind"))
    for kind, fn in (("trig", "trig_features"), ("positive", "positive_features"),
                     ("hyperbolic", "hyperbolic_features")):
        out.append(Contract([_entry(f"{_FT}:feature_map", kind=Opt(kind), backend=Opt(be)) for be in ("numpy", "numba")]
                            + [f"{_FTR}:{fn}", f"{_FTN}:{fn}", _entry(f"{_FTR}:random_features", kind=Opt(kind))],
                            dict(x=x, W=W), sizes=sizes, empty=("b", "n"),
                            view_arg="kind"))
        if kind != "trig":
            stab = dict(stabilizer=Opt("row_max", ("none", "row_max", "global_max")), return_offset=Flag(True))
            out.append(Contract([_entry(f"{_FT}:feature_map", kind=Opt(kind), backend=Opt("numpy"), **stab),
                                 _entry(f"{_FTR}:{fn}", **stab),
                                 _entry(f"{_FTR}:random_features", kind=Opt(kind), **stab)],
                                dict(x=x, W=W), sizes=sizes, empty=("b", "n"), view_arg="kind"))
    out += [
        Contract([f"{_FTR}:check_x"], dict(x=x), sizes=sizes, positional=1, empty=("b", "n")),
        Contract([f"{_FTR}:check_W"], dict(x=x, W=W), sizes=sizes, positional=2, empty=("b", "n")),
        Contract([f"{_FTR}:sign_fixed_qr"], dict(G=Arr("d n n", alt=("n n", "... n n", "... m n"))),
                 sizes=dict(d=2, n=3), positional=1, empty=("d", "n")),
        Contract([f"{_FTR}:random_projection"], dict(f=Int(5, minimum=1), n=Int(3, minimum=1), seed=Int(0),
                                                     kind=Opt("orthogonal", ("iid", "orthogonal")),
                                                     norms=Opt("chi", ("chi", "fixed")), dtype=DType()), positional=3),
    ]
    return out


def _fast_weights_delta():
    sizes = dict(b=2, l=4, h=2, n=3, p=2, d=5)
    fw = dict(a=Arr("b l h p"), b_vec=Arr("b l h n"), x_read=Arr("b l h n"), sigma=Fn(None, none_ok=True),
              initial_state=Arr("b h p n", optional=True), return_final_state=Flag(True))
    delta = dict(q=Arr("b l h n"), k=Arr("b l h n"), v=Arr("b l h p"), beta=Arr("b l h", gen="unit"),
                 decay=Arr("b l h", gen="unit", positive=True, optional=True),
                 initial_state=Arr("b h p n", optional=True),
                 return_final_state=Flag(True), key_norm=Opt("l2", ("sum", "l2"), none_ok=True),
                 query_norm=Opt(None, ("sum", "l2"), none_ok=True), scale=Real(0.5))
    dviews = [f"{_DLR}:recurrent", _entry(f"{_DLR}:chunked", chunk=Int(2, minimum=1)),
              _entry(f"{_DL}.numba:delta_chunked", chunk=Int(2, minimum=1)), f"{_DLR}:validate_delta"]
    dviews += _pairs(f"{_DL}:delta_rule", "refimpl.attention.delta_rule", chunked=dict(chunk=Int(2, minimum=1)))
    return [
        Contract([f"{_FW}.reference:recurrent", f"{_FW}.reference:validate_fast_weights"]
                 + _pairs(f"{_FW}:fast_weight_memory", "refimpl.attention.fast_weight_memory"),
                 fw, sizes=sizes, positional=3, empty=("b", "l", "h", "n", "p")),
        Contract([_entry(f"{_FW}:fast_weight_programmer", view=Opt("recurrent"), backend=Opt("numpy"))],
                 dict(x=Arr("b l h n"), W_a=Arr("h p n"), W_b=Arr("h n n"), sigma=Fn(None, none_ok=True),
                      initial_state=Arr("b h p n", optional=True), return_final_state=Flag(True)),
                 sizes=sizes, positional=3, empty=("b", "l", "h", "n", "p")),
        Contract(dviews, delta, sizes=sizes, positional=4, empty=("b", "l", "h", "p")),
        Contract([f"{_DLR}:beta_from_inputs"], dict(x=Arr("b l h d"), W_beta=Arr("h d")), sizes=sizes, positional=2,
                 empty=("b", "l", "h", "d")),
        Contract([f"{_DLR}:normalize_vectors"], dict(x=Arr("b n", gen="pos", alt=("... n",)),
                                                     mode=Opt("l2", ("sum", "l2"), none_ok=True)),
                 sizes=sizes, positional=2, empty=("b",)),
    ]


def _memory_positional():
    sizes = dict(p=3, d=4, n=2)
    return [
        Contract([f"{_MEM}:store"], dict(A=Arr("p d"), x=Arr("p"), k=Arr("d")), sizes=sizes, positional=3,
                 empty=("p", "d")),
        Contract([f"{_MEM}:retrieve"], dict(A=Arr("p d"), k=Arr("n d", alt=("d",))), sizes=sizes, positional=2,
                 empty=("p", "d", "n")),
        Contract([f"{_MEM}:build_memory"], dict(X=Arr("n p"), K=Arr("n d")), sizes=sizes, positional=2,
                 empty=("n", "p", "d")),
        Contract([f"{_MEM}:sparse_binary_keys"], dict(n=Int(3, minimum=0), d=Int(10, minimum=1),
                                                      ones=Int(2, minimum=1, maximum=10), seed=Int(0)), positional=4),
        Contract([f"{_MEM}:retrieval_quality"], dict(n=Int(3, minimum=1), d=Int(10, minimum=1),
                                                     ones=Int(2, minimum=1, maximum=10), p=Int(4, minimum=1),
                                                     seed=Int(0)), positional=1),
        Contract([f"{_MEM}:expected_crosstalk"], dict(n=Int(3, minimum=1), d=Int(10, minimum=2),
                                                      ones=Int(2, minimum=1, maximum=10)), positional=3),
        Contract([f"{_MEM}:hamming_bound", f"{_MEM}:hamming_bound_entropy"],
                 dict(d=Int(10, minimum=1), m=Int(3, minimum=1, maximum=10)), positional=2),
        Contract(["refimpl.attention.positional.reference:sinusoidal_positions"],
                 dict(length=Int(4, minimum=0), d=Int(6, minimum=1), base=Real(10000.0, lo=1.0),
                      offset=Int(2, minimum=0), dtype=DType()), positional=2),
    ]


CONTRACTS += [*_softmax(), *_linear(), *_features(), *_fast_weights_delta(), *_memory_positional(),
              Contract(["refimpl:entry_points"], {})]

# Families added later keep their contracts in their own file, ``tests/_bad_inputs_<family>.py``, each defining
# ``contracts() -> list[Contract]`` (the same helpers as above, imported from ``_bad_inputs``).
for _path in sorted(Path(__file__).resolve().parent.glob("_bad_inputs_*.py")):
    CONTRACTS += importlib.import_module(_path.stem).contracts()

#: public callables that are not functions of data: the record NPLR returns (a dataclass, its fields are the output)
EXEMPT = {"refimpl.ssm.s4.reference:NPLR": "a result record (dataclass) built by nplr(), not a function of user data"}


# ============================================================================================== the tests

def _target_name(t):
    return t if isinstance(t, str) else t[0]


def _all_calls():
    calls = []
    for c in CONTRACTS:
        calls.extend(calls_for(c))
    return calls


_CALLS = _all_calls()
_BY_TARGET = {}
for _c in _CALLS:
    _BY_TARGET.setdefault(_c.target, []).append(_c)


def _public_functions():
    """``"module:name"`` of every callable in a public ``refimpl`` module's ``__all__`` (the CUDA kernels' module:
    its public functions)."""
    import refimpl

    out = {}
    for info in pkgutil.walk_packages(refimpl.__path__, prefix="refimpl."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # refimpl._validate, _dispatch, _numba, _blas, _fastmath: package internals
        mod = importlib.import_module(info.name)
        names = getattr(mod, "__all__", None)
        if names is None:  # refimpl.ssm.lti.cuda: the public (non-underscore) functions defined there
            names = [n for n, v in vars(mod).items() if inspect.isfunction(v) and v.__module__ == mod.__name__
                     and not n.startswith("_")]
        for n in names:
            obj = getattr(mod, n)
            if callable(obj) and not inspect.ismodule(obj):
                out.setdefault(id(obj), []).append(f"{info.name}:{n}")
    for n in refimpl.__all__:
        obj = getattr(refimpl, n)
        if callable(obj) and not inspect.ismodule(obj):
            out.setdefault(id(obj), []).append(f"refimpl:{n}")
    return out


def test_every_public_function_has_a_contract():
    """Each public callable (under any of its names) and each registered view/backend pair is in the corpus."""
    from _bad_inputs import _resolve
    from refimpl._dispatch import registered

    covered = {id(_resolve(t)) for t in _BY_TARGET}
    exempt = {id(_resolve(t)) for t in EXEMPT}
    missing = [names for key, names in _public_functions().items() if key not in covered and key not in exempt]
    assert not missing, f"public functions without a bad-input contract: {missing}"
    targets = {}  # id(fn) -> [(backend, {role: value})] of every target with extras
    for c in CONTRACTS:
        for t in c.targets:
            if not isinstance(t, str):
                roles = {k: t[1][k].value for k in ("view", "kind", "method") if k in t[1]}
                targets.setdefault(id(_resolve(t[0])), []).append((t[1]["backend"].value if "backend" in t[1] else None,
                                                                   roles))
    for public, table in registered().items():
        mod, _, attr = public.rpartition(".")
        fn = getattr(importlib.import_module(mod), attr)
        single = "view" not in inspect.signature(fn).parameters and len(table.views) == 1
        for view, backend in table.pairs():
            ok = any(be == backend and (single or view in roles.values()) for be, roles in targets.get(id(fn), []))
            assert ok, f"{public}: pair ({view}, {backend}) has no target in the corpus"


# -- the corpus has power: a sloppy function, a misnaming one and a layout-dependent one are all caught --------

def _sloppy(x, y, *, causal=False):
    """Validates nothing: every bad call returns an answer."""
    return np.asarray(x) @ np.asarray(y) if causal else np.asarray(x) + 0 * np.sum(y)


def _misnamed(x, y, *, causal=False):
    """Validates everything but names nothing."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind != "f" or y.dtype.kind != "f" or x.shape != (2, 3) or y.shape != (3, 4) \
            or not isinstance(causal, bool) or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("bad input")
    return x @ y


def _layout_dependent(x, y, *, causal=False):
    """A right answer that changes (by one ulp) with the memory layout of x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = x @ y
    return out if x.flags.c_contiguous else np.nextafter(out, np.inf)


@pytest.mark.parametrize("fn, finding", [("_sloppy", "silent"), ("_misnamed", "misnamed"),
                                         ("_layout_dependent", "differs")])
def test_the_corpus_catches_what_it_claims(fn, finding):
    contract = Contract([f"{__name__}:{fn}"], dict(x=Arr("b n"), y=Arr("n p"), causal=Flag(False)),
                        sizes=dict(b=2, n=3, p=4), positional=2)
    findings, ran = run_calls(calls_for(contract))
    assert ran > 30
    assert any(f.what == finding for f in findings), findings


def test_corpus_size(capsys):
    """The corpus is derived, not hand-written: report its size and keep it above a floor."""
    kinds = Counter(c.kind for c in _CALLS)
    bad = kinds["bad"] + kinds["finite"]
    valid = kinds["valid"] + kinds["same"] + kinds["wide"]
    line = (f"bad-input corpus: {len(_CALLS)} calls ({bad} bad, {valid} valid) over "
            f"{len(_BY_TARGET)} targets from {len(CONTRACTS)} contracts")
    with capsys.disabled():  # the summary line shows in every run, -q included
        print("\n" + line)
    assert len(_CALLS) >= 25_000 and bad >= 20_000 and len(_BY_TARGET) >= 160


@pytest.mark.parametrize("target", sorted(_BY_TARGET))
def test_bad_input_is_refused_by_name(target):
    findings, ran = run_calls(_BY_TARGET[target])
    assert ran == len(_BY_TARGET[target])
    assert not findings, f"{len(findings)} findings:\n" + "\n".join(map(str, findings[:40]))


def main():
    findings, ran = run_calls(_CALLS)
    kinds = Counter(c.kind for c in _CALLS)
    what = Counter(f.what for f in findings)
    for f in findings:
        print(f)
    valid = kinds["valid"] + kinds["same"] + kinds["wide"]
    print(f"bad-input corpus: {ran} calls ({kinds['bad'] + kinds['finite']} bad, {valid} valid) over "
          f"{len(_BY_TARGET)} targets; findings: {dict(what)}")


if __name__ == "__main__":
    main()
