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


@check
def performer_approximation_ladder():
    """Relative error of FAVOR+ (positive, orthogonal, chi norms) vs exact softmax attention as m grows.

    The bound column is statistical, not a rounding bound: the first-order (delta-method) expected absolute
    error ``E_i = sum_j sd_ij |v_j - o_i| / D_i`` with ``sd_ij = sqrt(Lemma-2 MSE)`` of the iid positive estimator
    (orthogonal features have no larger MSE), divided by ``alpha = 0.01`` (Markov).
    """
    from refimpl.attention.features import random_projection
    from refimpl.attention.linear import performer_attention

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
        W = random_projection(m, d, seed=SEED + m, kind="orthogonal")
        approx, t = timed(performer_attention, q, k, v, W, kind="positive")
        sd = np.sqrt(np.exp(S2) * Kx ** 2 * (1 - np.exp(-S2)) / m)  # Lemma 2, positive features
        Ei = np.einsum("ij,ije->ie", sd, np.abs(v[0, :, 0][None, :, :] - o[:, None, :])) / D_i[:, None]
        bound = Bound((Ei / 0.01)[None, :, None, :], "statistical: first-order expected error from Lemma 2 MSE / alpha=0.01 (Markov)")
        cmp = compare(approx, exact, bound)
        rows.append(row(f"attention.performer.favor+.m{m}", "numpy/quadratic", cmp, t,
                        note=f"normwise rel err vs exact softmax {cmp.normwise_rel_err:.3e} (m={m}, L={L}, d={d})"))
    return rows
