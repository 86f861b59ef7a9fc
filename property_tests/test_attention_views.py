"""Property tests: every view and backend of the attention family against independent oracles."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.attention import (delta_rule_bound, delta_rule_mpmath, fast_weights_mpmath, feature_bound, features_mpmath,
                               keep_mask, linear_attention_bound, linear_attention_mpmath, sdpa_mpmath,
                               softmax_attention_bound)
from oracles.strategies.attention import delta_cases, linear_cases, softmax_cases
from oracles.tolerance import assert_within, componentwise_bound
from refimpl.attention.delta import IMPLEMENTATIONS as DELTA_IMPLEMENTATIONS
from refimpl.attention.delta import delta_rule
from refimpl.attention.fast_weights import fast_weight_memory
from refimpl.attention.features import IMPLEMENTATIONS as FEATURE_IMPLEMENTATIONS
from refimpl.attention.features import feature_map, random_projection
from refimpl.attention.linear import IMPLEMENTATIONS as LINEAR_IMPLEMENTATIONS
from refimpl.attention.linear import linear_attention
from refimpl.attention.softmax import IMPLEMENTATIONS as SOFTMAX_IMPLEMENTATIONS
from refimpl.attention.softmax import scaled_dot_product_attention


def _causal_views(case):
    """Every (view, backend) of linear_attention on the case, keyed ``backend/view`` (the case's chunk)."""
    return {f"{backend}/{view}": (lambda _v=view, _b=backend, **kw: linear_attention(
        case.phi_q, case.phi_k, case.v, view=_v, backend=_b, chunk=case.chunk, **kw))
        for view, backend in LINEAR_IMPLEMENTATIONS.pairs()}


@given(linear_cases(), st.sampled_from([0.0, 0.25]))
def test_linear_causal_views_normalized(case, eps):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True, eps=eps,
                                    S0=case.S0, u0=case.z0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True, eps=eps,
                                   S0=case.S0, u0=case.z0)
    for name, fn in _causal_views(case).items():
        assert_within(fn(normalize=True, eps=eps, initial_state=case.initial_state()), exact, bound, context=name)


@given(linear_cases(positive=False))
def test_linear_causal_views_unnormalized_signed(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=False, S0=case.S0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=False, S0=case.S0)
    for name, fn in _causal_views(case).items():
        o, S = fn(normalize=False, initial_state=case.initial_state(normalize=False), return_final_state=True)
        assert_within(o, exact, bound, context=name)
        b, l, h, n = case.phi_k.shape
        assert S.shape == (b, h, case.v.shape[3], n), name  # S alone (b h p n): no normalizer without normalize


@given(linear_cases(dtype=np.float32))
def test_linear_causal_views_float32(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True, S0=case.S0, u0=case.z0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True, S0=case.S0,
                                   u0=case.z0, dtype=np.float32)
    for name, fn in _causal_views(case).items():
        o = fn(normalize=True, initial_state=case.initial_state())
        assert o.dtype == np.float32, name
        assert_within(o, exact, bound, context=name)


@given(linear_cases(with_state=False), st.integers(0, 17))
def test_linear_state_continuation_and_final_state(case, split):
    split = min(split, case.phi_k.shape[1])
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=True, normalize=True)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=True, normalize=True)
    # final state = sum_j v_j phi(k_j)^T: the non-causal view's state on the whole sequence is the oracle
    # up to its own rounding (both sums of L products): gamma_{L+1} each
    _, (S_all, u_all) = linear_attention(case.phi_q, case.phi_k, case.v, causal=False, return_final_state=True)
    mag = np.einsum("blhp,blhn->bhpn", np.abs(case.v), np.abs(case.phi_k))
    for view, backend in LINEAR_IMPLEMENTATIONS.pairs():
        kw = dict(view=view, backend=backend, chunk=case.chunk, return_final_state=True)
        s = slice(0, split)
        r = slice(split, None)
        o1, st1 = linear_attention(case.phi_q[:, s], case.phi_k[:, s], case.v[:, s], **kw)
        o2, (S2, u2) = linear_attention(case.phi_q[:, r], case.phi_k[:, r], case.v[:, r], initial_state=st1, **kw)
        assert_within(np.concatenate([o1, o2], axis=1), exact, bound, context=(view, backend))
        assert_within(S2, S_all, componentwise_bound(mag, case.phi_k.shape[1] + 1, np.float64), context=(view, backend))


@given(linear_cases())
def test_noncausal_view(case):
    exact = linear_attention_mpmath(case.phi_q, case.phi_k, case.v, causal=False, normalize=True, S0=case.S0, u0=case.z0)
    bound = linear_attention_bound(case.phi_q, case.phi_k, case.v, exact, causal=False, normalize=True, S0=case.S0, u0=case.z0)
    assert_within(linear_attention(case.phi_q, case.phi_k, case.v, causal=False, initial_state=case.initial_state()),
                  exact, bound)


@given(linear_cases(positive=False, with_state=False))
def test_fast_weights_identity_sigma_is_unnormalized_linear_attention(case):
    # W_i = W_{i-1} + a_i b_i^T with a = v, b = phi(k), read with phi(q): S_t phi(q_t)
    y = fast_weight_memory(case.v, case.phi_k, case.phi_q)
    o = linear_attention(case.phi_q, case.phi_k, case.v, view="recurrent", normalize=False)
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
    o_ex, S_ex = delta_rule_mpmath(case.q, case.k, case.v, case.beta, case.decay, case.S0)
    for view, backend in DELTA_IMPLEMENTATIONS.pairs():
        o, S = delta_rule(case.q, case.k, case.v, case.beta, decay=case.decay, initial_state=case.S0, view=view,
                          backend=backend, chunk=case.chunk, return_final_state=True)
        bo, bS = delta_rule_bound(case.q, case.k, case.v, case.beta, case.decay, case.S0, view=view, chunk=case.chunk,
                                  state=True)
        assert_within(o, o_ex, bo, context=(view, backend))
        assert_within(S, S_ex, bS, context=(view, backend, "final state"))


@given(delta_cases(dtype=np.float32))
def test_delta_views_float32(case):
    o_ex, _ = delta_rule_mpmath(case.q, case.k, case.v, case.beta, case.decay, case.S0)
    for view, backend in DELTA_IMPLEMENTATIONS.pairs():
        o = delta_rule(case.q, case.k, case.v, case.beta, decay=case.decay, initial_state=case.S0, view=view,
                       backend=backend, chunk=case.chunk)
        assert o.dtype == np.float32
        bo = delta_rule_bound(case.q, case.k, case.v, case.beta, case.decay, case.S0, view=view, chunk=case.chunk,
                              dtype=np.float32)
        assert_within(o, o_ex, bo, context=(view, backend))


def _softmax_views(case):
    """Every (view, backend) of scaled_dot_product_attention that can run the case (the tiled view has no mask)."""
    return [(view, backend) for view, backend in SOFTMAX_IMPLEMENTATIONS.pairs()
            if case.mask is None or view == "materialized"]


@given(softmax_cases())
def test_softmax_attention(case):
    l, s = case.q.shape[1], case.k.shape[1]
    keep = keep_mask(l, s, case.diagonal)[None, None]
    if case.mask is not None:
        keep = keep & case.mask
    exact = sdpa_mpmath(case.q, case.k, case.v, case.scale, keep)
    bound = softmax_attention_bound(case.q, case.k, case.v, case.scale, keep, oracle_dtype=None)
    for view, backend in _softmax_views(case):
        o = scaled_dot_product_attention(case.q, case.k, case.v, scale=case.scale, causal=case.causal,
                                         alignment=case.alignment, mask=case.mask, view=view, backend=backend)
        assert_within(o, exact, bound, context=(view, backend))


@given(softmax_cases(dtype=np.float32))
def test_softmax_attention_float32(case):
    o = scaled_dot_product_attention(case.q, case.k, case.v, scale=case.scale, causal=case.causal,
                                     alignment=case.alignment, mask=case.mask)
    assert o.dtype == np.float32
    l, s = case.q.shape[1], case.k.shape[1]
    keep = keep_mask(l, s, case.diagonal)[None, None]
    if case.mask is not None:
        keep = keep & case.mask
    sc = np.float32(case.scale)
    exact = sdpa_mpmath(case.q, case.k, case.v, sc, keep)
    assert_within(o, exact, softmax_attention_bound(case.q, case.k, case.v, sc, keep, np.float32, oracle_dtype=None))


@settings(max_examples=15)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 4), st.integers(0, 5), st.integers(1, 6),
       st.sampled_from(["trig", "positive", "hyperbolic", "elu_plus_one", "dpfp"]),
       st.sampled_from([np.float64, np.float32]))
def test_feature_maps_every_backend(seed, n, rows, f, kind, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(dtype)
    W = random_projection(f, n, seed=seed, kind="iid" if seed % 2 else "orthogonal").astype(dtype)
    oracle_kind = "elu1" if kind == "elu_plus_one" else kind
    if kind == "elu_plus_one":
        kw, exact = {}, features_mpmath(x, "elu1")
    elif kind == "dpfp":
        nu = 1 + seed % (2 * n - 1) if n > 1 else 1
        kw, exact = {"nu": nu}, features_mpmath(x, "dpfp", nu=nu)
    else:
        kw, exact = {"W": W}, features_mpmath(x, kind, W)
    bound = feature_bound(x, oracle_kind, exact, dtype, W)
    for backend in FEATURE_IMPLEMENTATIONS.backends_for(kind):
        phi = feature_map(x, kind, backend=backend, **kw)
        assert phi.dtype == dtype, backend
        assert_within(phi, exact, bound, context=backend)
