"""Property tests: every view and backend of the attention family against independent oracles."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.attention import (delta_rule_bound, delta_rule_mpmath, fast_weights_mpmath, feature_bound, features_mpmath,
                               keep_mask, linear_attention_bound, linear_attention_mpmath, sdpa_mpmath,
                               softmax_attention_bound)
from oracles.strategies.attention import delta_cases, linear_cases, softmax_cases
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.delta import reference as DR
from refimpl.attention.features import reference as F
from refimpl.attention import kernels_numba as KN
from refimpl.attention.linear import reference as LA
from refimpl.attention.fast_weights.reference import fast_weights
from refimpl.attention.softmax.reference import scaled_dot_product_attention


def _causal_views(case):
    c = case.chunk
    return {
        "reference/quadratic": lambda **kw: LA.causal_quadratic(case.phi_q, case.phi_k, case.v, **kw),
        "reference/recurrent": lambda **kw: LA.causal_recurrent(case.phi_q, case.phi_k, case.v, **kw),
        "reference/chunked": lambda **kw: LA.causal_chunked(case.phi_q, case.phi_k, case.v, chunk=c, **kw),
        "numba/recurrent": lambda **kw: KN.causal_recurrent(case.phi_q, case.phi_k, case.v, **kw),
        "numba/chunked": lambda **kw: KN.causal_chunked(case.phi_q, case.phi_k, case.v, chunk=c, **kw),
    }


@given(linear_cases(), st.sampled_from([0.0, 0.25]))
def test_linear_causal_views_normalized(case, eps):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True, eps=eps,
                                    S0=case.S0, u0=case.u0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True, eps=eps,
                                   S0=case.S0, u0=case.u0)
    for name, fn in _causal_views(case).items():
        assert_within(fn(normalize=True, eps=eps, S0=case.S0, u0=case.u0), exact, bound, context=name)


@given(linear_cases(positive=False))
def test_linear_causal_views_unnormalized_signed(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=False, S0=case.S0, u0=case.u0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=False, S0=case.S0)
    for name, fn in _causal_views(case).items():
        assert_within(fn(normalize=False, S0=case.S0, u0=case.u0), exact, bound, context=name)


@given(linear_cases(dtype=np.float32))
def test_linear_causal_views_float32(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True, S0=case.S0, u0=case.u0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True, S0=case.S0,
                                   u0=case.u0, dtype=np.float32)
    for name, fn in _causal_views(case).items():
        o = fn(normalize=True, S0=case.S0, u0=case.u0)
        assert o.dtype == np.float32, name
        assert_within(o, exact, bound, context=name)


@given(linear_cases(with_state=False), st.integers(0, 17))
def test_linear_state_continuation_and_final_state(case, split):
    split = min(split, case.phi_k.shape[1])
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True)
    for fn in (LA.causal_recurrent, LA.causal_chunked, KN.causal_recurrent, KN.causal_chunked):
        kw = dict(chunk=case.chunk) if "chunked" in fn.__name__ else {}
        s = slice(0, split)
        r = slice(split, None)
        o1, S1, u1 = fn(case.phi_q[:, s], case.phi_k[:, s], case.v[:, s], return_state=True, **kw)
        o2, S2, u2 = fn(case.phi_q[:, r], case.phi_k[:, r], case.v[:, r], S0=S1, u0=u1, return_state=True, **kw)
        assert_within(np.concatenate([o1, o2], axis=1), exact, bound, context=fn.__module__ + "." + fn.__name__)
        # final state = sum_j v_j phi(k_j)^T: the noncausal view's state on the whole sequence is the oracle
        # up to its own rounding (both sums of L products): gamma_{L+1} each
        _, S_all, u_all = LA.noncausal(case.phi_q, case.phi_k, case.v, return_state=True)
        mag = np.einsum("blhe,blhn->bhen", np.abs(case.v), np.abs(case.phi_k))
        assert_within(S2, S_all, componentwise_bound(mag, case.phi_k.shape[1] + 1, np.float64))


@given(linear_cases())
def test_noncausal_view(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=False, normalize=True, S0=case.S0, u0=case.u0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=False, normalize=True, S0=case.S0, u0=case.u0)
    assert_within(LA.noncausal(case.phi_q, case.phi_k, case.v, S0=case.S0, u0=case.u0), exact, bound)


@given(linear_cases(positive=False, with_state=False))
def test_fast_weights_identity_sigma_is_unnormalized_linear_attention(case):
    # W_i = W_{i-1} + a_i b_i^T with a = v, b = phi(k), read with phi(q): S_t phi(q_t)
    y = fast_weights(case.v, case.phi_k, case.phi_q)
    o = LA.causal_recurrent(case.phi_q, case.phi_k, case.v, normalize=False)
    exact = fast_weights_mpmath(case.v, case.phi_k, case.phi_q)
    exact_la = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=False)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=False)
    assert_within(exact, exact_la, componentwise_bound(np.abs(exact), 1, np.float64, oracle_dtype=None,
                                                       what="two mpmath evaluations, each rounded once to float64"))
    assert_within(y, exact, bound, context="fast weights")
    # equivalence of the two programs: the difference is within the sum of both bounds (triangle inequality)
    assert_within(y, o, bound + bound, context="fast weights vs linear attention")


@given(delta_cases())
def test_delta_views(case):
    o_ex, S_ex = delta_rule_mpmath(case.q, case.k, case.v, case.beta, case.alpha, case.S0)
    for name, fn, view in [
        ("reference/recurrent", lambda: DR.delta_recurrent(case.q, case.k, case.v, case.beta, alpha=case.alpha,
                                                           S0=case.S0, return_state=True), "recurrent"),
        ("reference/chunked", lambda: DR.delta_chunked(case.q, case.k, case.v, case.beta, alpha=case.alpha, S0=case.S0,
                                                       chunk=case.chunk, return_state=True), "chunked"),
        ("numba/chunked", lambda: KN.delta_chunked(case.q, case.k, case.v, case.beta, alpha=case.alpha, S0=case.S0,
                                                   chunk=case.chunk, return_state=True), "chunked"),
    ]:
        o, S = fn()
        bo, bS = delta_rule_bound(case.q, case.k, case.v, case.beta, case.alpha, case.S0, view=view, chunk=case.chunk,
                                  state=True)
        assert_within(o, o_ex, bo, context=name)
        assert_within(S, S_ex, bS, context=name + " final state")


@given(delta_cases(dtype=np.float32))
def test_delta_views_float32(case):
    o_ex, _ = delta_rule_mpmath(case.q, case.k, case.v, case.beta, case.alpha, case.S0)
    for name, fn, view in [
        ("reference/recurrent", DR.delta_recurrent, "recurrent"),
        ("reference/chunked", lambda *a, **k: DR.delta_chunked(*a, chunk=case.chunk, **k), "chunked"),
        ("numba/chunked", lambda *a, **k: KN.delta_chunked(*a, chunk=case.chunk, **k), "chunked"),
    ]:
        o = fn(case.q, case.k, case.v, case.beta, alpha=case.alpha, S0=case.S0)
        assert o.dtype == np.float32
        bo = delta_rule_bound(case.q, case.k, case.v, case.beta, case.alpha, case.S0, view=view, chunk=case.chunk,
                              dtype=np.float32)
        assert_within(o, o_ex, bo, context=name)


@given(softmax_cases())
def test_softmax_attention(case):
    o = scaled_dot_product_attention(case.q, case.k, case.v, scale=case.scale, causal=case.causal, mask=case.mask)
    lq, lk = case.q.shape[1], case.k.shape[1]
    keep = keep_mask(lq, lk, case.causal)[None, None]
    if case.mask is not None:
        keep = keep & case.mask
    exact = sdpa_mpmath(case.q, case.k, case.v, case.scale, keep)
    assert_within(o, exact, softmax_attention_bound(case.q, case.k, case.v, case.scale, keep, oracle_dtype=None))


@given(softmax_cases(dtype=np.float32))
def test_softmax_attention_float32(case):
    o = scaled_dot_product_attention(case.q, case.k, case.v, scale=case.scale, causal=case.causal, mask=case.mask)
    assert o.dtype == np.float32
    lq, lk = case.q.shape[1], case.k.shape[1]
    keep = keep_mask(lq, lk, case.causal)[None, None]
    if case.mask is not None:
        keep = keep & case.mask
    sc = np.float32(case.scale)
    exact = sdpa_mpmath(case.q, case.k, case.v, sc, keep)
    assert_within(o, exact, softmax_attention_bound(case.q, case.k, case.v, sc, keep, np.float32, oracle_dtype=None))


@settings(max_examples=15)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 4), st.integers(0, 5), st.integers(1, 6),
       st.sampled_from(["trig", "positive", "hyperbolic", "elu1", "dpfp"]), st.sampled_from([np.float64, np.float32]))
def test_feature_maps_reference_and_numba(seed, d, rows, m, kind, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, d)).astype(dtype)
    W = F.random_projection(m, d, seed=seed, kind="iid" if seed % 2 else "orthogonal").astype(dtype)
    if kind == "elu1":
        ref, nb, exact = F.elu_plus_one(x), KN.elu_plus_one(x), features_mpmath(x, "elu1")
    elif kind == "dpfp":
        nu = 1 + seed % (2 * d - 1) if d > 1 else 1
        ref, nb, exact = F.dpfp(x, nu), KN.dpfp(x, nu), features_mpmath(x, "dpfp", nu=nu)
    else:
        ref = F.random_features(x, W, kind)
        nb = {"trig": KN.trig_features, "positive": KN.positive_features, "hyperbolic": KN.hyperbolic_features}[kind](x, W)
        exact = features_mpmath(x, kind, W)
    bound = feature_bound(x, kind, exact, dtype, W)
    assert ref.dtype == dtype and nb.dtype == dtype
    assert_within(ref, exact, bound, context="reference")
    assert_within(nb, exact, bound, context="numba")
