"""Report rows for the attention family: every view and backend against its independent oracle, plus the
Performer approximation-quality ladder."""
from __future__ import annotations

import math

import numpy as np

from oracles import attention as O
from oracles.checks import check, row, timed
from oracles.tolerance import Bound, compare, componentwise_bound

SEED = 20261126


def _rng(k=0):
    return np.random.default_rng(SEED + k)


@check
def softmax_attention():
    from refimpl.attention.softmax.reference import multi_head_attention, scaled_dot_product_attention

    rng = _rng(1)
    rows = []
    q, k, v = rng.standard_normal((1, 6, 2, 4)) * 1.5, rng.standard_normal((1, 9, 2, 4)) * 1.5, rng.standard_normal((1, 9, 2, 3))
    scale = 0.5
    mask = rng.random((1, 2, 6, 9)) < 0.7
    for variant, causal, m in (("top_left", "top_left", None), ("bottom_right", "bottom_right", None),
                               ("bool_mask", None, mask)):
        keep = O.keep_mask(6, 9, causal)[None, None] & (True if m is None else m)
        scaled_dot_product_attention(q, k, v, scale=scale, causal=causal, mask=m)
        o, t = timed(scaled_dot_product_attention, q, k, v, scale=scale, causal=causal, mask=m)
        exact = O.sdpa_mpmath(q, k, v, scale, keep)
        rows.append(row(f"attention.softmax.sdpa.{variant}", "reference/quadratic",
                        compare(o, exact, O.softmax_attention_bound(q, k, v, scale, keep, oracle_dtype=None)), t,
                        note="oracle: mpmath 50 digits"))
    bias = np.where(rng.random((6, 9)) < 0.2, -np.inf, rng.standard_normal((6, 9)))
    o, t = timed(scaled_dot_product_attention, q, k, v, scale=scale, bias=bias)
    rows.append(row("attention.softmax.sdpa.additive_bias", "reference/quadratic",
                    compare(o, O.sdpa_mpmath(q, k, v, scale, None, bias),
                            O.softmax_attention_bound(q, k, v, scale, None, oracle_dtype=None, bias=bias)), t))
    # large: float64 logsumexp oracle
    ql, kl, vl = rng.standard_normal((1, 256, 2, 32)), rng.standard_normal((1, 256, 2, 32)), rng.standard_normal((1, 256, 2, 16))
    o, t = timed(scaled_dot_product_attention, ql, kl, vl, causal="top_left")
    keep = O.keep_mask(256, 256, "top_left")[None, None]
    ex, _ = O.sdpa_float64(ql, kl, vl, 1 / math.sqrt(32), keep)
    rows.append(row("attention.softmax.sdpa.top_left_L256", "reference/quadratic",
                    compare(o, ex, O.softmax_attention_bound(ql, kl, vl, 1 / math.sqrt(32), keep, oracle_dtype=np.float64)), t,
                    note="oracle: float64 scipy logsumexp"))
    # multi-head with exact (selection) projections: mpmath sees the same per-head inputs
    x = rng.standard_normal((1, 5, 4))
    sel = np.zeros((2, 4, 2))
    sel[0, 0, 0] = sel[0, 1, 1] = sel[1, 2, 0] = sel[1, 3, 1] = 1.0
    W_O = np.eye(4)[:, ::-1].copy()
    o, t = timed(multi_head_attention, x, x, sel, sel, sel, W_O, causal="top_left")
    qkv = np.stack([x[..., 0:2], x[..., 2:4]], axis=2)
    keep = O.keep_mask(5, 5, "top_left")[None, None]
    ex = O.sdpa_mpmath(qkv, qkv, qkv, 1 / math.sqrt(2), keep).reshape(1, 5, 4)[..., ::-1]
    b = O.softmax_attention_bound(qkv, qkv, qkv, 1 / math.sqrt(2), keep, oracle_dtype=None)
    rows.append(row("attention.softmax.multi_head", "reference/projections",
                    compare(o, ex, Bound(b.values.reshape(1, 5, 4)[..., ::-1], b.source)), t))
    return rows


@check
def positional():
    from refimpl.attention.positional.reference import sinusoidal_positions

    pe, t = timed(sinusoidal_positions, 64, 16)
    ang = np.arange(64)[:, None] / 10000.0 ** ((np.arange(16) - np.arange(16) % 2) / 16)[None, :]
    b = componentwise_bound(np.abs(ang) * (math.log(10000) + 3) + 2, 1, np.float64, oracle_dtype=None,
                            what="angle rounding amplified by ln(base) through pow, sin/cos 2u")
    return [row("attention.positional.sinusoidal", "reference/closed_form", compare(pe, O.sinusoidal_mpmath(64, 16), b), t)]


@check
def feature_maps():
    from refimpl.attention.features import reference as F
    from refimpl.attention import kernels_numba as KN

    rng = _rng(2)
    x = rng.standard_normal((8, 4)) * 0.7
    W = F.random_projection(16, 4, seed=SEED)
    rows = []
    cases = [("identity", F.identity, None, {}), ("elu1", F.elu_plus_one, KN.elu_plus_one, {}),
             ("dpfp", lambda a: F.dpfp(a, 3), lambda a: KN.dpfp(a, 3), {"nu": 3}),
             ("trig", lambda a: F.trig_features(a, W), lambda a: KN.trig_features(a, W), {"W": W}),
             ("positive", lambda a: F.positive_features(a, W), lambda a: KN.positive_features(a, W), {"W": W}),
             ("hyperbolic", lambda a: F.hyperbolic_features(a, W), lambda a: KN.hyperbolic_features(a, W), {"W": W})]
    for kind, ref, nb, kw in cases:
        exact = O.features_mpmath(x, kind, **kw)
        bound = O.feature_bound(x, kind, exact, np.float64, kw.get("W"))
        for impl, fn in (("reference/elementwise", ref), ("numba/elementwise", nb)):
            if fn is None:
                continue
            fn(x)
            out, t = timed(fn, x)
            rows.append(row(f"attention.features.{kind}", impl, compare(out, exact, bound), t))
    return rows


@check
def linear_attention():
    from refimpl.attention import kernels_numba as KN
    from refimpl.attention.linear import reference as LA

    rng = _rng(3)
    b, l, h, n, e = 1, 23, 2, 4, 3
    pq, pk = rng.uniform(0.05, 1, (b, l, h, n)), rng.uniform(0.05, 1, (b, l, h, n))
    v = rng.standard_normal((b, l, h, e))
    S0, u0 = rng.standard_normal((b, h, e, n)), rng.uniform(0.1, 1, (b, h, n))
    rows = []
    views = [("reference/quadratic", LA.causal_quadratic, {}), ("reference/recurrent", LA.causal_recurrent, {}),
             ("reference/chunked", LA.causal_chunked, {"chunk": 8}), ("numba/recurrent", KN.causal_recurrent, {}),
             ("numba/chunked", KN.causal_chunked, {"chunk": 8})]
    for normalize in (True, False):
        eps = 0.1 if normalize else 0.0
        exact = O.linear_attention_mpmath(pq, pk, v, causal=True, normalize=normalize, eps=eps, S0=S0, u0=u0)
        bound = O.linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps, S0=S0, u0=u0)
        for impl, fn, kw in views:
            fn(pq, pk, v, normalize=normalize, eps=eps, S0=S0, u0=u0, **kw)
            o, t = timed(fn, pq, pk, v, normalize=normalize, eps=eps, S0=S0, u0=u0, **kw)
            rows.append(row(f"attention.linear.causal.{'normalized' if normalize else 'unnormalized'}", impl,
                            compare(o, exact, bound), t, note="S0, u0 given; eps=0.1 added to the denominator" if normalize else "S0 given"))
    exact = O.linear_attention_mpmath(pq, pk, v, causal=False, normalize=True)
    o, t = timed(LA.noncausal, pq, pk, v)
    rows.append(row("attention.linear.noncausal", "reference/noncausal",
                    compare(o, exact, O.linear_attention_bound(pq, pk, v, exact, causal=False, normalize=True)), t))
    return rows


@check
def performer_stabilizers():
    from refimpl.attention.features import reference as F
    from refimpl.attention.linear import reference as LA

    rng = _rng(4)
    q, k, v = rng.standard_normal((1, 12, 1, 4)) * 1.5, rng.standard_normal((1, 12, 1, 4)) * 1.5, rng.standard_normal((1, 12, 1, 3))
    W = F.random_projection(16, 4, seed=SEED)
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
        o, t = timed(LA.performer_attention, q, k, v, W, causal=True, stabilizer=stab)
        rows.append(row(f"attention.performer.stabilizer.{stab}", "reference/recurrent", compare(o, exact, bound), t,
                        note="normalized causal FAVOR+, eps=0: every stabilizer must leave the output unchanged"))
    return rows


@check
def delta_rule():
    from refimpl.attention.delta import reference as DR
    from refimpl.attention import kernels_numba as KN

    rng = _rng(5)
    b, l, h, n, e = 1, 37, 2, 4, 3
    q = rng.standard_normal((b, l, h, n))
    k = rng.standard_normal((b, l, h, n))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, l, h, e))
    beta = rng.uniform(0, 1, (b, l, h))
    S0 = rng.standard_normal((b, h, e, n))
    rows = []
    for variant, alpha in (("plain", None), ("gated", rng.uniform(0.7, 1.0, (b, l, h)))):
        o_ex, _ = O.delta_rule_mpmath(q, k, v, beta, alpha, S0)
        for impl, fn, view in (("reference/recurrent", DR.delta_recurrent, "recurrent"),
                               ("reference/chunked", lambda *a, **kw: DR.delta_chunked(*a, chunk=8, **kw), "chunked"),
                               ("numba/chunked", lambda *a, **kw: KN.delta_chunked(*a, chunk=8, **kw), "chunked")):
            fn(q, k, v, beta, alpha=alpha, S0=S0)
            o, t = timed(fn, q, k, v, beta, alpha=alpha, S0=S0)
            rows.append(row(f"attention.delta.{variant}", impl,
                            compare(o, o_ex, O.delta_rule_bound(q, k, v, beta, alpha, S0, view=view, chunk=8)), t,
                            note="oracle: mpmath transition-matrix recurrence; chunk=8, L=37"))
    return rows


@check
def fast_weights_and_memory():
    from refimpl.attention.fast_weights.reference import fast_weights
    from refimpl.attention.memory.reference import retrieve, store

    rng = _rng(6)
    a, bv, xr = rng.standard_normal((1, 16, 2, 3)), rng.standard_normal((1, 16, 2, 4)), rng.standard_normal((1, 16, 2, 4))
    y, t = timed(fast_weights, a, bv, xr)
    exact = O.fast_weights_mpmath(a, bv, xr)
    bound = O.linear_attention_bound(xr, bv, a, exact, causal=True, normalize=False)
    rows = [row("attention.fast_weights.identity", "reference/recurrent", compare(y, exact, bound), t,
                note="sigma = identity: the closed sum y_i = sum_j a_j (b_j.x_i) in mpmath")]
    s2, s5, s10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
    k1, k2, k3 = np.array([1.0, 1.0]) / s2, np.array([-1.0, 1.0]) / s2, np.array([2.0, -1.0]) / s5
    A = store(store(store(np.zeros((2, 2)), np.array([2.0, 3.0]), k1), np.array([-2.0, 1.0]), k2), np.array([1.0, 2.0]), k3)
    got, t = timed(retrieve, A, np.stack([k1, k2, k3]))
    text = np.array([[2 + 1 / s10, 3 + 2 / s10], [-2 - 3 / s10, 1 - 6 / s10], [8 / s10 + 1, 2.0]])
    rows.append(row("attention.memory.worked_example", "reference/store_retrieve",
                    compare(got, text, componentwise_bound(np.abs(text) + 6, 8, np.float64, oracle_dtype=None,
                                                           what="2-D products/sums, sqrt")), t,
                    note="the text's corrupted retrievals x'_1, x'_2, x'_3 after storing a third key"))
    return rows


@check
def performer_approximation_ladder():
    """Relative error of FAVOR+ (positive, orthogonal, chi norms) vs exact softmax attention as m grows.

    The bound column is statistical, not a rounding bound: the first-order (delta-method) expected absolute
    error ``E_i = sum_j sd_ij |v_j - o_i| / D_i`` with ``sd_ij = sqrt(Lemma-2 MSE)`` of the iid positive estimator
    (orthogonal features have no larger MSE), divided by ``alpha = 0.01`` (Markov).
    """
    from refimpl.attention.features import reference as F
    from refimpl.attention.linear import reference as LA
    from refimpl.attention.softmax.reference import scaled_dot_product_attention

    rng = _rng(7)
    L, d, e = 32, 8, 4
    q, k, v = rng.standard_normal((1, L, 1, d)) * 0.5, rng.standard_normal((1, L, 1, d)) * 0.5, rng.standard_normal((1, L, 1, e))
    exact = O.sdpa_mpmath(q, k, v, 1 / math.sqrt(d))
    s = d ** -0.25
    xq, xk = q[0, :, 0] * s, k[0, :, 0] * s
    Kx = np.exp(xq @ xk.T)  # SM(q_i, k_j)
    S2 = np.sum((xq[:, None, :] + xk[None, :, :]) ** 2, axis=-1)
    D_i = Kx.sum(1)
    o = exact[0, :, 0]
    rows = []
    for m in (16, 64, 256, 1024):
        W = F.random_projection(m, d, seed=SEED + m, kind="orthogonal")
        approx, t = timed(LA.performer_attention, q, k, v, W, kind="positive")
        sd = np.sqrt(np.exp(S2) * Kx ** 2 * (1 - np.exp(-S2)) / m)  # Lemma 2, positive features
        Ei = np.einsum("ij,ije->ie", sd, np.abs(v[0, :, 0][None, :, :] - o[:, None, :])) / D_i[:, None]
        bound = Bound((Ei / 0.01)[None, :, None, :], "statistical: first-order expected error from Lemma 2 MSE / alpha=0.01 (Markov)")
        cmp = compare(approx, exact, bound)
        rows.append(row(f"attention.performer.favor+.m{m}", "reference/noncausal", cmp, t,
                        note=f"normwise rel err vs exact softmax {cmp.normwise_rel_err:.3e} (m={m}, L={L}, d={d})"))
    return rows
