"""Report rows for the attention family: every view and backend against its independent oracle, plus the
Performer approximation-quality ladder."""
from __future__ import annotations

import math
import time

import numpy as np

from oracles import attention as O
from oracles.checks import Row, check, row, timed
from oracles.tolerance import Bound, compare, componentwise_bound

SEED = 20261126


def _rng(k=0):
    return np.random.default_rng(SEED + k)


@check
def softmax_attention():
    from refimpl.attention.softmax import multi_head_attention, scaled_dot_product_attention

    rng = _rng(1)
    rows = []
    q, k, v = rng.standard_normal((1, 6, 2, 4)) * 1.5, rng.standard_normal((1, 9, 2, 4)) * 1.5, rng.standard_normal((1, 9, 2, 3))
    scale = 0.5
    mask = rng.random((1, 2, 6, 9)) < 0.7
    for variant, alignment, m in (("top_left", "top_left", None), ("bottom_right", "bottom_right", None),
                                  ("bool_mask", None, mask)):
        keep = O.keep_mask(6, 9, alignment)[None, None] & (True if m is None else m)
        exact = O.sdpa_mpmath(q, k, v, scale, keep)
        bound = O.softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None)
        views = [("numpy/materialized", dict())] + ([("numba/tiled", dict(view="tiled", backend="numba"))]
                                                   if m is None else [])
        for impl, kw in views:
            call = dict(scale=scale, causal=alignment is not None, alignment=alignment, mask=m, **kw)
            scaled_dot_product_attention(q, k, v, **call)
            o, t = timed(scaled_dot_product_attention, q, k, v, **call)
            rows.append(row(f"attention.softmax.sdpa.{variant}", impl, compare(o, exact, bound), t,
                            note="oracle: mpmath 50 digits"))
    bias = np.where(rng.random((6, 9)) < 0.2, -np.inf, rng.standard_normal((6, 9)))
    o, t = timed(scaled_dot_product_attention, q, k, v, scale=scale, bias=bias)
    rows.append(row("attention.softmax.sdpa.additive_bias", "numpy/materialized",
                    compare(o, O.sdpa_mpmath(q, k, v, scale, None, bias),
                            O.softmax_attention_bound(q, k, v, scale, None, oracle_dtype=None, bias=bias)), t))
    # large: float64 logsumexp oracle
    ql, kl, vl = rng.standard_normal((1, 256, 2, 32)), rng.standard_normal((1, 256, 2, 32)), rng.standard_normal((1, 256, 2, 16))
    keep = O.keep_mask(256, 256, "top_left")[None, None]
    ex, _ = O.sdpa_float64(ql, kl, vl, 1 / math.sqrt(32), keep)
    for impl, kw in (("numpy/materialized", {}), ("numba/tiled", dict(view="tiled", backend="numba"))):
        scaled_dot_product_attention(ql, kl, vl, causal=True, **kw)
        o, t = timed(scaled_dot_product_attention, ql, kl, vl, causal=True, **kw)
        rows.append(row("attention.softmax.sdpa.top_left_L256", impl,
                        compare(o, ex, O.softmax_attention_bound(ql, kl, vl, 1 / math.sqrt(32), keep,
                                                                 oracle_dtype=np.float64)), t,
                        note="oracle: float64 scipy logsumexp"))
    # multi-head with exact (selection) projections: mpmath sees the same per-head inputs
    x = rng.standard_normal((1, 5, 4))
    sel = np.zeros((2, 4, 2))
    sel[0, 0, 0] = sel[0, 1, 1] = sel[1, 2, 0] = sel[1, 3, 1] = 1.0
    W_O = np.eye(4)[:, ::-1].copy()
    o, t = timed(multi_head_attention, x, x, sel, sel, sel, W_O, causal=True)
    qkv = np.stack([x[..., 0:2], x[..., 2:4]], axis=2)
    keep = O.keep_mask(5, 5, "top_left")[None, None]
    ex = O.sdpa_mpmath(qkv, qkv, qkv, 1 / math.sqrt(2), keep).reshape(1, 5, 4)[..., ::-1]
    b = O.softmax_attention_bound(qkv, qkv, qkv, 1 / math.sqrt(2), keep, oracle_dtype=None)
    rows.append(row("attention.softmax.multi_head", "numpy/materialized",
                    compare(o, ex, Bound(b.values.reshape(1, 5, 4)[..., ::-1], b.source)), t))
    return rows


@check
def positional():
    from refimpl.attention.positional import sinusoidal_positions

    pe, t = timed(sinusoidal_positions, 64, 16)
    ang = np.arange(64)[:, None] / 10000.0 ** ((np.arange(16) - np.arange(16) % 2) / 16)[None, :]
    b = componentwise_bound(np.abs(ang) * (math.log(10000) + 3) + 2, 1, np.float64, oracle_dtype=None,
                            what="angle rounding amplified by ln(base) through pow, sin/cos 2u")
    return [row("attention.positional.sinusoidal", "numpy/closed_form", compare(pe, O.sinusoidal_mpmath(64, 16), b), t)]


@check
def feature_maps():
    from refimpl.attention.features import IMPLEMENTATIONS, feature_map, random_projection

    rng = _rng(2)
    x = rng.standard_normal((8, 4)) * 0.7
    W = random_projection(16, 4, seed=SEED)
    rows = []
    # (our kind, the oracle's name for it, the map's arguments)
    cases = [("identity", "identity", {}), ("elu_plus_one", "elu1", {}), ("dpfp", "dpfp", {"nu": 3}),
             ("trig", "trig", {"W": W}), ("positive", "positive", {"W": W}), ("hyperbolic", "hyperbolic", {"W": W})]
    for kind, oracle_kind, kw in cases:
        exact = O.features_mpmath(x, oracle_kind, **kw)
        bound = O.feature_bound(x, oracle_kind, exact, np.float64, kw.get("W"))
        for backend in IMPLEMENTATIONS.backends_for(kind):
            feature_map(x, kind, backend=backend, **kw)
            out, t = timed(feature_map, x, kind, backend=backend, **kw)
            rows.append(row(f"attention.features.{kind}", f"{backend}/elementwise", compare(out, exact, bound), t))
    return rows


@check
def linear_attention():
    from refimpl.attention.linear import IMPLEMENTATIONS, linear_attention

    rng = _rng(3)
    b, l, h, n, p = 1, 23, 2, 4, 3
    pq, pk = rng.uniform(0.05, 1, (b, l, h, n)), rng.uniform(0.05, 1, (b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    S0, z0 = rng.standard_normal((b, h, p, n)), rng.uniform(0.1, 1, (b, h, n))
    rows = []
    for normalize in (True, False):
        eps = 0.1 if normalize else 0.0
        exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
        bound = O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps, S0=S0, u0=z0)
        state = (S0, z0) if normalize else S0
        for view, backend in IMPLEMENTATIONS.pairs():
            if backend == "cuda":  # the cuda/... rows: oracles/checks/cuda_attention.py
                continue
            kw = dict(view=view, backend=backend, normalize=normalize, eps=eps, initial_state=state, chunk=8)
            linear_attention(pq, pk, v, **kw)
            o, t = timed(linear_attention, pq, pk, v, **kw)
            rows.append(row(f"attention.linear.causal.{'normalized' if normalize else 'unnormalized'}",
                            f"{backend}/{view}", compare(o, exact, bound), t,
                            note="initial state (S, z) given; eps=0.1 added to the denominator" if normalize
                            else "initial state S given"))
    exact = O.linear_attention_mpmath(pq, pk, v, causal=False, normalize=True)
    o, t = timed(linear_attention, pq, pk, v, causal=False)
    rows.append(row("attention.linear.noncausal", "numpy/quadratic",
                    compare(o, exact, O.linear_attention_bound(pq, pk, v, exact, causal=False, normalize=True)), t))
    return rows


@check
def performer_stabilizers():
    from refimpl.attention.features import random_projection
    from refimpl.attention.linear import performer_attention

    rng = _rng(4)
    q, k, v = rng.standard_normal((1, 12, 1, 4)) * 1.5, rng.standard_normal((1, 12, 1, 4)) * 1.5, rng.standard_normal((1, 12, 1, 3))
    W = random_projection(16, 4, seed=SEED)
    s = 0.5 ** 0.5
    phq, phk = O.features_mpmath(q * s, "positive", W), O.features_mpmath(k * s, "positive", W)
    A = max((np.abs(q * s) @ np.abs(W).T).max(), (np.abs(k * s) @ np.abs(W).T).max())
    X2 = max(((q * s) ** 2).sum(-1).max(), ((k * s) ** 2).sum(-1).max())
    from oracles.tolerance import gamma

    f = gamma(14, np.float64) * (2 * A + X2 + 1)
    exact = O.linear_attention_mpmath(phq, phk, v, causal=True, normalize=True)
    bound = O.linear_attention_bound(phq, phk, v, exact, causal=True, normalize=True) + Bound(
        2 * f * O.linear_attention_magnitude(phq, phk, v, exact, causal=True, normalize=True),
        "feature relative error (exponent rounding) doubled per product")
    rows = []
    for stab in ("none", "query_max", "key_global_max", "key_prefix_max"):
        o, t = timed(performer_attention, q, k, v, W, causal=True, stabilizer=stab, view="recurrent")
        rows.append(row(f"attention.performer.stabilizer.{stab}", "numpy/recurrent", compare(o, exact, bound), t,
                        note="normalized causal FAVOR+, eps=0: every stabilizer must leave the output unchanged"))
    return rows


@check
def delta_rule():
    from refimpl.attention.delta import IMPLEMENTATIONS, delta_rule

    rng = _rng(5)
    b, l, h, n, p = 1, 37, 2, 4, 3
    q = rng.standard_normal((b, l, h, n))
    k = rng.standard_normal((b, l, h, n))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, l, h, p))
    beta = rng.uniform(0, 1, (b, l, h))
    S0 = rng.standard_normal((b, h, p, n))
    rows = []
    for variant, decay in (("plain", None), ("gated", rng.uniform(0.7, 1.0, (b, l, h)))):
        o_ex, _ = O.delta_rule_mpmath(q, k, v, beta, decay, S0)
        for view, backend in IMPLEMENTATIONS.pairs():
            if backend == "cuda":  # the cuda/... rows: oracles/checks/cuda_attention.py
                continue
            kw = dict(decay=decay, initial_state=S0, view=view, backend=backend, chunk=8)
            delta_rule(q, k, v, beta, **kw)
            o, t = timed(delta_rule, q, k, v, beta, **kw)
            rows.append(row(f"attention.delta.{variant}", f"{backend}/{view}",
                            compare(o, o_ex, O.delta_rule_bound(q, k, v, beta, decay, S0, view=view, chunk=8)), t,
                            note="oracle: mpmath transition-matrix recurrence; chunk=8, L=37"))
    return rows


@check
def fast_weights_and_memory():
    from refimpl.attention.fast_weights import fast_weight_memory
    from refimpl.attention.memory import retrieve, store

    rng = _rng(6)
    a, bv, xr = rng.standard_normal((1, 16, 2, 3)), rng.standard_normal((1, 16, 2, 4)), rng.standard_normal((1, 16, 2, 4))
    y, t = timed(fast_weight_memory, a, bv, xr)
    exact = O.fast_weights_mpmath(a, bv, xr)
    bound = O.linear_attention_bound(xr, bv, a, exact, causal=True, normalize=False)
    rows = [row("attention.fast_weights.identity", "numpy/recurrent", compare(y, exact, bound), t,
                note="sigma = identity: the closed sum y_i = sum_j a_j (b_j.x_i) in mpmath")]
    s2, s5, s10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
    k1, k2, k3 = np.array([1.0, 1.0]) / s2, np.array([-1.0, 1.0]) / s2, np.array([2.0, -1.0]) / s5
    A = store(store(store(np.zeros((2, 2)), np.array([2.0, 3.0]), k1), np.array([-2.0, 1.0]), k2), np.array([1.0, 2.0]), k3)
    got, t = timed(retrieve, A, np.stack([k1, k2, k3]))
    text = np.array([[2 + 1 / s10, 3 + 2 / s10], [-2 - 3 / s10, 1 - 6 / s10], [8 / s10 + 1, 2.0]])
    rows.append(row("attention.memory.worked_example", "numpy/store_retrieve",
                    compare(got, text, componentwise_bound(np.abs(text) + 6, 8, np.float64, oracle_dtype=None,
                                                           what="2-D products/sums, sqrt")), t,
                    note="the text's corrupted retrievals x'_1, x'_2, x'_3 after storing a third key"))
    return rows


# ------------------------------------------------------------------ Performer: FAVOR+ against exact softmax attention
#
# The rows below are statistical: the bound is a level that a correct estimator exceeds with probability at most
# the stated false-failure rate over the draw of the seeds (the seeds are fixed, so a run is deterministic).  Every
# level is derived in oracles/performer.py from the exact moments of positive random features (Lemma 2 and the
# pair covariances); nothing is tuned.  FAVOR_FALSE_FAILURE is shared equally by the rows.  ``m`` is the number of
# random vectors (Lemma 2's m; the glossary's f features for positive features, 2f outputs for the paired kinds).

FAVOR_FALSE_FAILURE = 1e-3
FAVOR_M_IID = (256, 1024, 4096)  # normalized rows, iid Gaussian vectors (exact second moments)
FAVOR_M_ORTH = (1024, 4096)  # normalized rows, orthogonal groups of n with chi norms (Minkowski: block x the variance)
FAVOR_G = 64  # seeds per normalized row: the row checks their median
RATE_M = (16, 64, 256, 1024)  # the rate ladder (unnormalized sums, iid vectors)
RATE_R = 1024  # seeds per rung: the rung's statistic is a median of means
_N_FAVOR_ROWS = len(FAVOR_M_IID) + len(FAVOR_M_ORTH) + 1


def favor_estimator(q, k, v, W, normalize):
    """The estimator under test: refimpl's FAVOR+ (positive features), ``(q, k, v, W, normalize) -> o (b l h p)``."""
    from refimpl.attention.linear import performer_attention

    return performer_attention(q, k, v, W, kind="positive", normalize=normalize)


def _favor_problem(scale_qk, k_rng):
    """``q, k (1 l 1 n)``, ``v (1 l 1 p)`` and the scaled 2-D views the oracle reads (``x = n^{-1/4} q``)."""
    rng = _rng(k_rng)
    l, n, p = 16, 4, 2
    q, k = rng.standard_normal((1, l, 1, n)) * scale_qk, rng.standard_normal((1, l, 1, n)) * scale_qk
    v = rng.standard_normal((1, l, 1, p))
    r = n ** -0.25  # performer_attention's default scale n^{-1/2}, split between q and k
    return q, k, v, q[0, :, 0] * r, k[0, :, 0] * r


def _projections(count, m, n, kind, key):
    """``count`` independent ``(m n)`` projections: one seeded draw of ``count * m`` rows, sliced (rows are iid; orthogonal
    groups of ``n`` never straddle a slice because ``m`` is a multiple of ``n``)."""
    from refimpl.attention.features import random_projection

    W = random_projection(count * m, n, seed=np.random.default_rng((SEED, key, m)), kind=kind)
    return [W[r * m:(r + 1) * m] for r in range(count)]


def _estimates(estimator, q, k, v, Ws, normalize, shape):
    """The estimator's outputs for each projection, as float64 ``(l p)`` arrays; ``None`` for a wrong shape."""
    outs = []
    for W in Ws:
        o = np.asarray(estimator(q, k, v, W, normalize))
        if o.shape != shape:
            return None
        outs.append(o[0, :, 0].astype(np.float64))
    return outs


def _stat_row(op, impl, err, bound, ref_norm, t, source, note, passed=None):
    """A row for a statistical check: ``err`` against ``bound`` (``passed`` overrides ``err <= bound``)."""
    ok = bool(np.isfinite(err) and err <= bound) if passed is None else bool(passed)
    return Row(op=op, impl=impl, dtype="float64", max_abs_err=float(err),
               max_rel_err=float(err / ref_norm) if ref_norm > 0 else math.inf, bound=float(bound), passed=ok,
               time_s=t, bound_source=source, note=note,
               worst_ratio=float(err / bound) if bound > 0 and np.isfinite(err) else math.inf)


def favor_ladder_rows(estimator=favor_estimator):
    """Normalized FAVOR+ vs exact softmax attention at each ``m``: the median over ``FAVOR_G`` seeds of
    ``||o - o*||_F`` against the level of :func:`oracles.performer.favor_output_bound` (Lemma 2 at that ``m``,
    Maurer for the denominators, Markov + a binomial tail for the median)."""
    from oracles.performer import favor_output_bound

    q, k, v, xq, xk = _favor_problem(0.5, 7)
    n = q.shape[-1]
    exact = O.sdpa_mpmath(q, k, v, 1 / math.sqrt(n))[0, :, 0]
    ref = float(np.linalg.norm(exact))
    alpha = FAVOR_FALSE_FAILURE / _N_FAVOR_ROWS
    rows = []
    for kind, ms, block in (("iid", FAVOR_M_IID, 1), ("orthogonal", FAVOR_M_ORTH, n)):
        for m in ms:
            Ws = _projections(FAVOR_G, m, n, kind, key=1 + (kind == "orthogonal"))
            t0 = time.perf_counter()
            outs = _estimates(estimator, q, k, v, Ws, True, (1, q.shape[1], 1, v.shape[-1]))
            t = (time.perf_counter() - t0) / FAVOR_G
            b = favor_output_bound(xq, xk, v[0, :, 0], m, FAVOR_G, alpha, block=block)
            err = math.inf if outs is None else math.sqrt(float(np.median([np.sum((o - exact) ** 2) for o in outs])))
            src = (f"statistical: sqrt(E T'/beta), E T' = sum_i E||E^_i||^2/((1-delta_i) D*_i)^2 from the exact pair "
                   f"covariances{' x n (Minkowski, orthogonal groups)' if block > 1 else ''}; beta={b['beta']:.3f}, "
                   f"max delta={b['delta'].max():.3f} (Maurer); P(median > bound) <= {alpha:.1e}")
            note = (f"median over {FAVOR_G} seeds of ||o - o*||_F (||o*||_F = {ref:.3f}); first-order rms "
                    f"{b['rms']:.3e}; l=16, n=4, p=2, positive {kind} features")
            if not math.isfinite(b["t"]):  # a row that cannot fail must not pass
                note = f"no bound: some delta_i >= 1 at m={m} (too few vectors for Maurer's inequality); {note}"
            rows.append(_stat_row(f"attention.performer.favor+.{kind}.m{m}", "numpy/quadratic", err,
                                  math.sqrt(b["t"]), ref, t, src, note, passed=None if math.isfinite(b["t"]) else False))
    return rows


def favor_rate_row(estimator=favor_estimator):
    """The ``1/sqrt(m)`` rate: least-squares slope of ``log`` (median-of-means over ``RATE_R`` seeds of the squared error
    of the unnormalized FAVOR+ sums) on ``log m``, halved, inside the band derived from each rung's interval.

    The sums ``N^_ip = sum_j phi(q_i).phi(k_j) v_jp`` and ``D^_i = sum_j phi(q_i).phi(k_j)`` (one call with
    ``v~ = [v, 1]``, ``normalize=False``) are unbiased with ``E||[N^, D^] - [N*, D*]||^2 = c/m`` exactly (Lemma 2),
    so the band is centred on -1/2 with no ratio bias; :func:`oracles.performer.median_of_means_interval` gives each
    rung's interval from ``E T`` and ``E T^2`` (:func:`oracles.performer.favor_sum_moments`).
    """
    from oracles.performer import favor_sum_moments, median_of_means_interval, slope_band

    q, k, v, xq, xk = _favor_problem(0.2, 8)
    n, l = q.shape[-1], q.shape[1]
    va = np.concatenate([v, np.ones((1, l, 1, 1))], axis=-1)
    Kx = np.exp(xq @ xk.T)
    exact = Kx @ va[0, :, 0]
    alpha = FAVOR_FALSE_FAILURE / _N_FAVOR_ROWS
    moments = favor_sum_moments(xq, xk, va[0, :, 0], RATE_M)
    stats, lo, hi, t_total = [], [], [], 0.0
    for m, (ET, ET2) in zip(RATE_M, moments):
        a, b, G = median_of_means_interval(ET, ET2, RATE_R, alpha / len(RATE_M))
        lo.append(a)
        hi.append(b)
        t0 = time.perf_counter()
        outs = _estimates(estimator, q, k, va, _projections(RATE_R, m, n, "iid", key=3), False, (1, l, 1, va.shape[-1]))
        t_total += time.perf_counter() - t0
        if outs is None:
            stats.append(math.nan)
            continue
        T = np.array([np.sum((o - exact) ** 2) for o in outs])
        stats.append(float(np.median(T.reshape(G, -1).mean(axis=1))))
    slope = math.nan
    if all(np.isfinite(stats)) and min(stats) > 0:
        x = np.log(np.asarray(RATE_M, dtype=np.float64))
        slope = float(np.polyfit(x, np.log(stats), 1)[0]) / 2
    derivable = min(lo) > 0  # else some rung's interval reaches 0 and the band is unbounded: the row must not pass
    s_lo, s_hi = (z / 2 for z in slope_band(RATE_M, lo, hi)) if derivable else (-math.inf, math.inf)
    dev = abs(slope + 0.5) if np.isfinite(slope) else math.inf
    half = (s_hi + 0.5) if np.isfinite(slope) and slope > -0.5 else (-0.5 - s_lo)
    ok = bool(derivable and np.isfinite(slope) and s_lo <= slope <= s_hi)
    src = (f"statistical: least-squares slope over log m of median-of-means intervals [lo_k, hi_k] around E T = c/m "
           f"(Cantelli + binomial tail, {alpha:.1e} per row)")
    note = (f"slope {slope:+.3f} in [{s_lo:+.3f}, {s_hi:+.3f}] for m = {', '.join(map(str, RATE_M))}; "
            f"{RATE_R} seeds per m; unnormalized sums [N^, D^] (unbiased), l=16, n=4, p=2")
    return _stat_row("attention.performer.favor+.rate", "numpy/quadratic", dev, half, 0.5,
                     t_total / (RATE_R * len(RATE_M)), src, note, passed=ok)


@check
def performer_approximation_ladder():
    """FAVOR+ (positive features) against exact softmax attention: one row per ``m`` and a row for the rate."""
    return favor_ladder_rows() + [favor_rate_row()]
