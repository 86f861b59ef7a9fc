r"""The figures of ``refimpl report --plots DIR`` (matplotlib: ``pip install 'refimpl[plot]'``).

Four PNG files, each drawn from refimpl's code and, where a claim is made, compared with an oracle:

* ``hippo_reconstruction.png`` -- a test signal on ``[0, 1]`` and its HiPPO-LegS reconstructions from the
  online coefficients at the last step, for ``N = 8, 16, 32`` (:func:`refimpl.ssm.hippo_projection`,
  bilinear steps, then ``f(x) ~ sum_n c_n g_n(x; t)`` with ``g_n = sqrt(2n+1) P_n(2x/t - 1)``:
  :func:`refimpl.ssm.hippo.reconstruct`), and the pointwise error of each on a log scale.
* ``favor_error.png`` -- FAVOR+ (positive random features) against exact softmax attention as the number
  of features ``m`` grows: the relative Frobenius error ``||o_m - o|| / ||o||`` of
  :func:`refimpl.attention.performer_attention` against :func:`refimpl.attention.scaled_dot_product_attention`,
  median and range over seeds, for iid and orthogonal projections, on log-log axes with a ``c / sqrt(m)``
  reference line (``c`` fitted to the iid medians in log space: Monte Carlo's rate, Choromanski et al. 2021).
* ``err_bound_vs_length.png`` -- each family's worst ``err/bound`` against the sequence length ``L``: a few
  ops run through the verify harness (:func:`oracles.verify.verify` with explicit cases drawn by each op's
  sampler at that length) with refimpl's function under the op's ``refimpl`` adapter, in float64 and
  float32; a point below 1 conforms.  The oracles and bounds are the ops' own (``refimpl ops OP``).
* ``s4_kernels.png`` -- S4 (HiPPO-LegS in NPLR form, bilinear, :func:`refimpl.ssm.s4_kernel`) and S4D-Lin
  (ZOH, :func:`refimpl.ssm.s4d_kernel`, ``2 Re``) convolution kernels ``K_k`` of a few channels, one step
  ``dt`` per channel (log-spaced in ``[1e-3, 1e-1]``, S4's range).

Only matplotlib's object-oriented API is used (``Figure`` + the Agg canvas): no pyplot, no global backend.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["require_matplotlib", "write_plots", "PLOTS", "LENGTH_SWEEP", "FAVOR_FEATURES", "FAVOR_SEEDS", "HIPPO_N",
           "HIPPO_STEPS"]

# (figure, op, refimpl function "module:attr", the sampler's length keyword(s), lengths)
LENGTH_SWEEP: List[Tuple[str, str, str, Tuple[str, ...], Tuple[int, ...]]] = [
    ("attention", "attention.softmax", "refimpl.attention:scaled_dot_product_attention", ("lq", "lk"),
     (16, 64, 256, 512)),
    ("attention", "attention.linear", "refimpl.attention:linear_attention", ("l",), (8, 16, 32, 64)),
    ("attention", "attention.sparse", "refimpl.attention:sparse_attention", ("l",), (16, 64, 256)),
    ("ssm", "ssm.selective_scan", "refimpl.ssm:selective_scan", ("L",), (16, 64, 256, 1024)),
    ("ssm", "ssm.ssd", "refimpl.ssm:ssd_scan", ("L",), (16, 64, 256, 1024)),
    ("ssm", "ssm.s4d_kernel", "refimpl.ssm:s4d_kernel", ("L",), (16, 64, 256, 1024)),
    ("ssm", "ssm.lti", "refimpl.ssm:lti_ssm", ("L",), (16, 64, 128)),
]
LENGTH_SEEDS = 2  # cases per (op, L): the figure shows the worst
LENGTH_DTYPES = ("float64", "float32")
FAVOR_FEATURES: Tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
FAVOR_SEEDS = 8
HIPPO_N: Tuple[int, ...] = (8, 16, 32)
HIPPO_STEPS = 2000  # samples of the signal on (0, 1]
PLOTS = ("hippo_reconstruction", "favor_error", "err_bound_vs_length", "s4_kernels")


def require_matplotlib() -> None:
    """``ImportError`` with the install line unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise ImportError("--plots: matplotlib is not installed (pip install 'refimpl[plot]' or "
                          "pip install matplotlib)") from None


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, directory: str, name: str) -> str:
    path = os.path.join(directory, name + ".png")
    fig.savefig(path)
    return path


# -- HiPPO ---------------------------------------------------------------------------------------------------

def hippo_signal(t: np.ndarray) -> np.ndarray:
    """The test signal: two sines (one chirped) under a slow decay, on ``[0, 1]``."""
    return np.exp(-t) * np.sin(2 * np.pi * 2 * t) + 0.5 * np.sin(2 * np.pi * (1.5 * t + 2 * t ** 2))


def plot_hippo(directory: str) -> str:
    from refimpl.ssm import hippo_projection
    from refimpl.ssm.hippo import reconstruct

    L = int(HIPPO_STEPS)
    dt = 1.0 / L
    t = dt * np.arange(1, L + 1)  # legs: t_k = t0 + k dt with t0 = dt
    f = hippo_signal(t)
    T = float(t[-1])
    x = np.linspace(0.0, T, 801)
    fig, (ax, ax_err) = _figure(10.5, 3.8, ncols=2)
    ax.plot(x, hippo_signal(x), color="black", lw=2.2, label="signal f")
    ax_err.set_yscale("log")
    for N, color in zip(HIPPO_N, ("tab:orange", "tab:green", "tab:blue")):
        c = hippo_projection(f, "legs", N, dt, method="bilinear")
        # f(x) ~ sum_n c_n(T) g_n(x; T),  g_n = sqrt(2n+1) P_n(2x/T - 1)
        rec = reconstruct(c[-1], "legs", x, T)
        err = np.abs(rec - hippo_signal(x))
        ax.plot(x, rec, color=color, lw=1.2, ls="--", label=f"LegS, N={N}")
        ax_err.plot(x, np.maximum(err, 1e-17), color=color, lw=1.0,
                    label=f"N={N}: RMS {math.sqrt(np.mean(err ** 2)):.1e}")
    ax.set(title=f"HiPPO-LegS reconstruction of the history at t = {T:g}", xlabel="x (time)", ylabel="f(x)")
    ax.legend(loc="lower left", fontsize=8)
    ax_err.set(title="pointwise error |f_N(x) - f(x)|", xlabel="x (time)")
    ax_err.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"refimpl.ssm.hippo_projection (bilinear, dt = 1/{L}) + Legendre reconstruction", fontsize=9)
    return _save(fig, directory, "hippo_reconstruction")


# -- FAVOR+ ---------------------------------------------------------------------------------------------------

def favor_errors(features: Sequence[int] = None, seeds: int = None, *, L: int = 64, n: int = 16,
                 kind: str = "iid", data_scale: float = 0.35) -> np.ndarray:
    """``(len(features), seeds)`` relative Frobenius errors of FAVOR+ against exact softmax attention.

    ``q, k ~ data_scale N(0, I_n)``.  The positive features' variance grows like ``exp(2 |q' + k'|^2)``
    (Choromanski et al. 2021, Lemma 1), so the ``1/sqrt(m)`` regime starts at small ``m`` only for modest
    ``|q|, |k|``: at ``data_scale = 0.35`` the error times ``sqrt(m)`` is flat from ``m = 16`` on; at 0.6 it
    still grows at ``m = 8192`` (heavy tails).
    """
    from refimpl.attention import performer_attention, random_projection, scaled_dot_product_attention

    features = FAVOR_FEATURES if features is None else tuple(features)
    seeds = FAVOR_SEEDS if seeds is None else int(seeds)
    rng = np.random.default_rng(20210301)
    q = data_scale * rng.standard_normal((1, L, 2, n))
    k = data_scale * rng.standard_normal((1, L, 2, n))
    v = rng.standard_normal((1, L, 2, n))
    exact = scaled_dot_product_attention(q, k, v)
    out = np.empty((len(features), seeds))
    for i, m in enumerate(features):
        for s in range(seeds):
            W = random_projection(m, n, np.random.default_rng([m, s]), kind=kind)
            approx = performer_attention(q, k, v, W, kind="positive")
            out[i, s] = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    return out


def plot_favor(directory: str) -> str:
    fig, (ax,) = _figure(6.4, 4.4)
    m = np.asarray(FAVOR_FEATURES, dtype=float)
    fit = None
    for kind, color in (("iid", "tab:blue"), ("orthogonal", "tab:red")):
        err = favor_errors(kind=kind)
        med = np.median(err, axis=1)
        ax.fill_between(m, err.min(axis=1), err.max(axis=1), color=color, alpha=0.18, lw=0)
        ax.plot(m, med, "o-", color=color, ms=4, label=f"{kind} W (median, range over {err.shape[1]} seeds)")
        if kind == "iid":
            fit = math.exp(float(np.mean(np.log(med) + 0.5 * np.log(m))))  # c in c / sqrt(m), least squares in log
    ax.plot(m, fit / np.sqrt(m), "k:", lw=1.5, label=f"{fit:.2g} / sqrt(m)")
    ax.set(xscale="log", yscale="log", xlabel="number of random features m",
           ylabel="||o_FAVOR+ - o_softmax||_F / ||o_softmax||_F",
           title="FAVOR+ (positive features) vs exact softmax attention\n"
                 f"q, k ~ 0.35 N(0, I), L = 64, n = 16, 2 heads")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return _save(fig, directory, "favor_error")


# -- err/bound against L ---------------------------------------------------------------------------------------

def length_sweep(sweep=None, seeds: int = None, dtypes: Sequence[str] = None) -> Dict[Tuple[str, str], Dict[int, float]]:
    """``{(op, dtype): {L: worst err/bound}}``: each op's refimpl function through the verify harness on cases
    its own sampler draws at each length (``seeds`` per length), probes and diagnosis off."""
    from oracles.verify import get_op, resolve_candidate, verify
    from oracles.verify.registry import Case

    sweep = LENGTH_SWEEP if sweep is None else sweep
    seeds = LENGTH_SEEDS if seeds is None else int(seeds)
    dtypes = tuple(LENGTH_DTYPES if dtypes is None else dtypes)
    out: Dict[Tuple[str, str], Dict[int, float]] = {}
    for _, op, fn_name, keys, lengths in sweep:
        spec = get_op(op)
        conv = spec.resolve_conventions({})
        fn = resolve_candidate(fn_name)
        for L in lengths:
            cases = [Case(op, f"L{L}-seed{s}", "random",
                          spec.sample(np.random.default_rng([L, s]), conv, **{key: L for key in keys}), dict(conv),
                          seed=s, note=f"{op}'s sampler at length {L}, np.random.default_rng([{L}, {s}])")
                     for s in range(seeds)]
            rep = verify(spec, fn, adapter="refimpl", cases=cases, dtype=list(dtypes), probes=False, diagnose=False,
                         candidate_name=fn_name)
            for c in rep.cases:
                if c.skipped or c.error:
                    continue
                ratio = max((o.comparison.worst_ratio for o in c.outputs), default=float("nan"))
                cur = out.setdefault((op, c.dtype), {})
                cur[L] = max(cur.get(L, 0.0), ratio)
    return out


def plot_lengths(directory: str) -> str:
    data = length_sweep()
    families = []
    for fam, *_ in LENGTH_SWEEP:
        if fam not in families:
            families.append(fam)
    fig, axes = _figure(5.2 * len(families), 5.2, ncols=len(families))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    for ax, fam in zip(axes, families):
        ops = [op for f, op, *_ in LENGTH_SWEEP if f == fam]
        for op, color in zip(ops, colors):
            for dtype, style in zip(LENGTH_DTYPES, ("o-", "s--")):
                pts = data.get((op, dtype))
                if not pts:
                    continue
                Ls = sorted(pts)
                ax.plot(Ls, [max(pts[L], 1e-12) for L in Ls], style, color=color, ms=4, lw=1.2,
                        label=f"{op} ({dtype})")
        ax.axhline(1.0, color="black", lw=1.0)
        ax.text(0.02, 0.97, "err/bound = 1: the derived bound", transform=ax.transAxes, va="top", fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="worst err / bound (over outputs, seeds)",
               title=f"{fam}: refimpl vs the op's oracle (verify harness)")
        ax.set_ylim(top=3.0)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.grid(True, which="both", alpha=0.25)
    fig.suptitle(f"refimpl functions under each op's 'refimpl' adapter, {LENGTH_SEEDS} sampled cases per L",
                 fontsize=9)
    return _save(fig, directory, "err_bound_vs_length")


# -- S4 / S4D kernels -----------------------------------------------------------------------------------------

def plot_kernels(directory: str) -> str:
    from refimpl.ssm import nplr, s4_kernel, s4d_kernel
    from refimpl.ssm.s4d import init

    L, N, channels = 512, 32, 3
    rng = np.random.default_rng(4)
    dts = np.geomspace(1e-3, 1e-1, channels)
    d = nplr("legs", N)
    C = (rng.standard_normal((channels, N)) @ d.V).astype(np.complex128)
    K4 = s4_kernel(np.repeat(d.Lambda[None], channels, 0), np.repeat(d.Pt[None], channels, 0),
                   np.repeat(d.Qt[None], channels, 0), np.repeat(d.Bt[None], channels, 0), C, dts, L, output="re")
    lam, B = init("lin", 2 * N)
    Cd = rng.standard_normal((channels, lam.shape[0])) + 1j * rng.standard_normal((channels, lam.shape[0]))
    Kd = s4d_kernel(np.repeat(lam[None], channels, 0), np.repeat(B[None], channels, 0), Cd, dts, L, method="zoh",
                    output="2re")
    fig, axes = _figure(10.5, 3.8, ncols=2)
    k = np.arange(L)
    for ax, K, title in ((axes[0], np.real(K4), f"S4: HiPPO-LegS (NPLR, N={N}), bilinear"),
                         (axes[1], np.real(Kd), f"S4D-Lin (N={lam.shape[0]} pairs, 2 Re), ZOH")):
        for ch in range(channels):
            ax.plot(k, K[ch] / max(np.max(np.abs(K[ch])), 1e-300), lw=1.0, label=f"channel {ch}: dt = {dts[ch]:.0e}")
        ax.set(title=title, xlabel="k (lag)", ylabel="K_k / max |K|")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.25)
    fig.suptitle("convolution kernels K_k = C A_bar^k B_bar: refimpl.ssm.s4_kernel / s4d_kernel", fontsize=9)
    return _save(fig, directory, "s4_kernels")


def write_plots(directory: str, which: Optional[Sequence[str]] = None) -> List[str]:
    """Write the figures (all of :data:`PLOTS` by default) into ``directory``; return their paths."""
    require_matplotlib()
    which = PLOTS if which is None else tuple(which)
    bad = sorted(set(which) - set(PLOTS))
    if bad:
        raise ValueError(f"plots: expected names from {list(PLOTS)}, got {bad}")
    os.makedirs(directory, exist_ok=True)
    draw = {"hippo_reconstruction": plot_hippo, "favor_error": plot_favor, "err_bound_vs_length": plot_lengths,
            "s4_kernels": plot_kernels}
    return [draw[name](directory) for name in which]
