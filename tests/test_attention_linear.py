"""Feature maps, linear attention views, Performer stabilizers and fast weights: examples and bad inputs."""
import math

import mpmath
import numpy as np
import pytest

from oracles.attention import (feature_bound, features_mpmath, fast_weights_mpmath, linear_attention_bound,
                               linear_attention_fsum, linear_attention_magnitude, linear_attention_mpmath)
from oracles.tolerance import Bound, assert_within, componentwise_bound, gamma
from refimpl.attention.fast_weights import fast_weight_programmer, fast_weight_memory
from refimpl.attention.features import IMPLEMENTATIONS as FEATURE_IMPLEMENTATIONS
from refimpl.attention.features import feature_map
from refimpl.attention.features import reference as F
from refimpl.attention.features import numba as FN
from refimpl.attention.linear import IMPLEMENTATIONS, causal_recurrent_offsets, linear_attention, performer_attention
from refimpl.attention.linear import numba as LN
from refimpl.attention.linear import reference as LA

# every (view, backend) of the entry point, chunk 3
REF_VIEWS = {f"{backend}/{view}": (lambda *a, _v=view, _b=backend, **kw:
                                   linear_attention(*a, view=_v, backend=_b, chunk=3, **kw))
             for view, backend in IMPLEMENTATIONS.pairs() if backend != "cuda"}  # cuda: test_cuda_attention
# the per-view functions themselves (the causal ones), for the state tests
CAUSAL_FNS = (LA.quadratic, LA.recurrent, LA.chunked, LN.causal_recurrent, LN.causal_chunked)


def test_every_view_and_backend_is_listed():
    assert sorted(REF_VIEWS) == ["numba/chunked", "numba/recurrent", "numpy/chunked", "numpy/quadratic",
                                 "numpy/recurrent"]


def _lin(seed, b=2, l=10, h=2, n=3, e=4, positive=True):
    rng = np.random.default_rng(seed)
    f = (lambda s: rng.uniform(0.05, 1, s)) if positive else rng.standard_normal
    return f((b, l, h, n)), f((b, l, h, n)), rng.standard_normal((b, l, h, e))


# ------------------------------------------------------------------ feature maps

def test_elu_plus_one_and_dpfp_match_definitions():
    x = np.random.default_rng(0).standard_normal((3, 5, 4))
    for kind, oracle_kind in [("elu_plus_one", "elu1"), ("identity", "identity")]:
        exact = features_mpmath(x, oracle_kind)
        for backend in FEATURE_IMPLEMENTATIONS.backends_for(kind):
            assert_within(feature_map(x, kind, backend=backend), exact, feature_bound(x, oracle_kind, exact, np.float64),
                          context=backend)
    for nu in (1, 2, 7):
        exact = features_mpmath(x, "dpfp", nu=nu)
        assert F.dpfp(x, nu).shape == (3, 5, 2 * 4 * nu)
        for backend in ("numpy", "numba"):
            assert_within(feature_map(x, "dpfp", nu=nu, backend=backend), exact,
                          feature_bound(x, "dpfp", exact, np.float64), context=backend)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (2, 0, 3)])
def test_elu_plus_one_accepts_empty_inputs(backend, shape):
    out = feature_map(np.zeros(shape), "elu_plus_one", backend=backend)
    assert out.shape == shape and out.dtype == np.float64


def test_feature_map_bad_arguments():
    x = np.ones((2, 3))
    W = F.random_projection(4, 3, seed=0)
    for kwargs, exc, message in [
        (dict(kind="elu1"), ValueError, "^kind: expected one of 'identity', 'elu_plus_one', 'dpfp'"),
        (dict(kind="identity", backend="numba"), ValueError, "^backend: the 'identity' feature map has backends 'numpy'"),
        (dict(kind="positive"), ValueError, "^W: the 'positive' random features need a projection"),
        (dict(kind="elu_plus_one", W=W), ValueError, "^W: the 'elu_plus_one' map takes no projection"),
        (dict(kind="trig", W=W, nu=2), ValueError, "^nu: only the 'dpfp' map has a degree"),
        (dict(kind="trig", W=W, stabilizer="row_max"), ValueError, "^stabilizer: only the 'positive' and"),
        (dict(kind="positive", W=W, stabilizer="row_max", backend="numba"), ValueError,
         "^stabilizer: the 'numba' backend computes unstabilized features"),
        (dict(kind="positive", W=W, return_offset="True"), TypeError, "^return_offset: expected True or False"),
        (dict(kind="positive", W=W[:, :2]), ValueError, r"^W: expected shape \(f, 3\)"),
        (dict(kind="dpfp", nu=6), ValueError, r"^nu: expected 1 <= nu <= 2n - 1 = 5 for n = 3, got 6"),
    ]:
        with pytest.raises(exc, match=message):
            feature_map(x, **kwargs)
    for backend in ("numpy", "numba"):
        with pytest.raises(TypeError, match="^x: expected a floating-point dtype"):
            feature_map(np.ones((2, 3), dtype=np.int64), "elu_plus_one", backend=backend)
    phi, c = feature_map(x, "positive", W=W, stabilizer="row_max", return_offset=True)
    assert phi.shape == (2, 4) and c.shape == (2,)


def test_dpfp_2d_is_the_texts_orthogonal_map():
    # the text: phi(k) = (r(k1)r(k2), r(-k1)r(k2), r(k1)r(-k2), r(-k1)r(-k2)); DPFP-1 holds the same 4 products
    r = lambda a: max(a, 0.0)  # noqa: E731
    for k1, k2 in [(0.7, -1.3), (-2.0, 0.5), (1.5, 2.5), (-0.3, -0.4)]:
        text = sorted([r(k1) * r(k2), r(-k1) * r(k2), r(k1) * r(-k2), r(-k1) * r(-k2)])
        ours = F.dpfp(np.array([k1, k2]), 1)
        assert sorted(ours.tolist()) == text
        assert np.count_nonzero(ours) == 1  # exactly one active component


@pytest.mark.parametrize("kind", ["trig", "positive", "hyperbolic"])
def test_random_features_match_definitions(kind):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)) * 0.7
    W = F.random_projection(6, 3, seed=2)
    exact = features_mpmath(x, kind, W)
    ref = F.random_features(x, W, kind)
    nb = feature_map(x, kind, W=W, backend="numba")
    assert_within(ref, exact, feature_bound(x, kind, exact, np.float64, W))
    assert_within(nb, exact, feature_bound(x, kind, exact, np.float64, W))
    x32, W32 = x.astype(np.float32), W.astype(np.float32)
    exact32 = features_mpmath(x32, kind, W32)
    assert F.random_features(x32, W32, kind).dtype == np.float32
    assert_within(F.random_features(x32, W32, kind), exact32, feature_bound(x32, kind, exact32, np.float32, W32))
    assert_within({"trig": FN.trig_features, "positive": FN.positive_features,
                   "hyperbolic": FN.hyperbolic_features}[kind](x32, W32), exact32,
                  feature_bound(x32, kind, exact32, np.float32, W32))


def test_random_projection_structure_and_seed():
    d = 5
    for norms in ("chi", "fixed"):
        W = F.random_projection(12, d, seed=7, kind="orthogonal", norms=norms)
        assert W.shape == (12, d)
        np.testing.assert_array_equal(W, F.random_projection(12, d, seed=7, kind="orthogonal", norms=norms))
        for blk in (W[:5], W[5:10]):
            U = blk / np.linalg.norm(blk, axis=1, keepdims=True)
            # orthonormal rows: |U U^T - I| <= gamma_{d+2} per entry (normalization + dot product)
            assert_within(U @ U.T, np.eye(5), componentwise_bound(np.ones((5, 5)), d + 6, np.float64))
    Wf = F.random_projection(12, d, seed=7, norms="fixed")
    assert_within(np.linalg.norm(Wf, axis=1), np.full(12, math.sqrt(d)),
                  componentwise_bound(np.full(12, math.sqrt(d)), d + 6, np.float64, what="row norms"))
    assert not np.array_equal(F.random_projection(12, d, seed=8), F.random_projection(12, d, seed=7))


def test_sign_fixed_qr_has_positive_diag_r():
    G = np.random.default_rng(3).standard_normal((50, 4, 4))
    Q = F.sign_fixed_qr(G)
    R = np.swapaxes(Q, -1, -2) @ G
    assert np.all(np.diagonal(R, axis1=-2, axis2=-1) > 0)
    # below the diagonal Q^T G is zero up to rounding: the 4-term products Q^T G (gamma_4 |Q|^T |G|) plus
    # Householder QR's backward error, |dG| <= gamma_{c n m} |G| columnwise (Higham Thm 19.4, c taken as 1):
    # together gamma_{4 + 4*4} |Q|^T |G|
    mag = np.swapaxes(np.abs(Q), -1, -2) @ np.abs(G)
    lower = np.tril(np.ones((4, 4), dtype=bool), -1)
    assert_within(np.where(lower, R, 0.0), np.zeros_like(R),
                  Bound(np.where(lower, componentwise_bound(mag, 20, np.float64, oracle_dtype=None).values, 0.0),
                        "gamma_20 |Q|^T |G|"))


@pytest.mark.parametrize("kind", ["positive", "hyperbolic"])
def test_stabilizer_offsets_are_exact_rescalings(kind):
    x = np.random.default_rng(4).standard_normal((2, 6, 3)) * 2
    W = F.random_projection(8, 3, seed=1)
    plain = F.random_features(x, W, kind)
    for stab in ("row_max", "global_max"):
        phi, c = F.random_features(x, W, kind, stabilizer=stab, return_offset=True)
        assert phi.max() * math.sqrt(phi.shape[-1] if kind == "positive" else phi.shape[-1]) <= 1.0 + 1e-15 or stab == "global_max"
        # phi exp(c) = plain: relative error of exp(z - c) vs exp(z): argument rounding u |z| + u |c| + exp 2u
        mag = (np.abs(x) @ np.abs(W).T).max() * 2 + (x * x).sum(-1).max() + np.abs(c).max() + 4
        assert_within(phi * np.exp(c)[..., None], plain,
                      componentwise_bound(np.abs(plain) * mag, 3 + 6, np.float64, what="offset rescaling"))
    with pytest.raises(ValueError, match="stabilizer"):
        F.random_features(x, W, "trig", stabilizer="row_max")


# ------------------------------------------------------------------ linear attention views

# eps lives in the denominator: normalize=False takes eps = 0 only (test_linear_bad_inputs)
@pytest.mark.parametrize("normalize,eps_mode,eps", [(True, "add", 0.0), (True, "add", 0.3), (True, "clamp", 0.5),
                                                    (False, "add", 0.0)])
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_views_match_mpmath(normalize, eps_mode, eps, with_state):
    pq, pk, v = _lin(10, positive=normalize)
    rng = np.random.default_rng(5)
    S0 = rng.standard_normal((2, 2, 4, 3)) if with_state else None
    z0 = rng.uniform(0.1, 1, (2, 2, 3)) if with_state else None
    state = None if not with_state else ((S0, z0) if normalize else S0)
    kw = dict(normalize=normalize, eps=eps, eps_mode=eps_mode)
    exact = linear_attention_mpmath(pq, pk, v, causal=True, S0=S0, u0=z0, **kw)
    bound = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=eps if eps_mode == "add" else 0.0,
                                   S0=S0, u0=z0)
    if eps_mode == "clamp":
        bound = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=normalize, eps=0.0, S0=S0, u0=z0)
    for name, fn in REF_VIEWS.items():
        assert_within(fn(pq, pk, v, initial_state=state, **kw), exact, bound, context=name)


def test_noncausal_matches_mpmath_and_allows_other_query_length():
    pq, pk, v = _lin(11)
    pq2 = pq[:, :4]
    for normalize in (True, False):
        eps = 0.1 if normalize else 0.0
        exact = linear_attention_mpmath(pq2, pk, v, causal=False, normalize=normalize, eps=eps)
        o = linear_attention(pq2, pk, v, causal=False, normalize=normalize, eps=eps)
        assert o.shape == (2, 4, 2, 4)
        assert_within(o, exact, linear_attention_bound(pq2, pk, v, exact, causal=False, normalize=normalize, eps=eps))


def test_state_layout_and_continuation():
    pq, pk, v = _lin(12, l=11)
    o, (S, u) = linear_attention(pq, pk, v, view="recurrent", return_final_state=True)
    o_kv, (S_kv, u_kv) = linear_attention(pq, pk, v, view="recurrent", state_layout="kv", return_final_state=True)
    np.testing.assert_array_equal(o, o_kv)
    np.testing.assert_array_equal(S_kv, np.swapaxes(S, -1, -2))
    assert S.shape == (2, 2, 4, 3) and S_kv.shape == (2, 2, 3, 4) and u.shape == (2, 2, 3)
    # final state = sum_j v_j phi(k_j)^T (VxK), against mpmath
    with mpmath.workdps(50):
        S_exact = np.array([[[[float(mpmath.fsum(mpmath.mpf(float(v[b, j, h, i])) * mpmath.mpf(float(pk[b, j, h, c]))
                                                  for j in range(11))) for c in range(3)] for i in range(4)]
                             for h in range(2)] for b in range(2)])
    mag = np.einsum("blhe,blhn->bhen", np.abs(v), np.abs(pk))
    assert_within(S, S_exact, componentwise_bound(mag, 11 + 1, np.float64, oracle_dtype=None, what="state sum"))
    exact = linear_attention_mpmath(pq, pk, v, causal=True, normalize=True)
    bnd = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=True)
    for fn in CAUSAL_FNS:
        o1, st1 = fn(pq[:, :6], pk[:, :6], v[:, :6], state_layout="kv", return_final_state=True)
        o2, st2 = fn(pq[:, 6:], pk[:, 6:], v[:, 6:], initial_state=st1, state_layout="kv", return_final_state=True)
        assert_within(np.concatenate([o1, o2], axis=1), exact, bnd, context=fn.__module__ + "." + fn.__name__)
        # unnormalized: the state is S alone, in and out
        e1, T1 = fn(pq[:, :6], pk[:, :6], v[:, :6], normalize=False, return_final_state=True)
        assert isinstance(T1, np.ndarray) and T1.shape == (2, 2, 4, 3)
    # l = 0 returns the initial state unchanged (a copy)
    for fn in CAUSAL_FNS:
        o0, (S0, u0) = fn(pq[:, :0], pk[:, :0], v[:, :0], initial_state=(S, u), return_final_state=True)
        assert o0.shape == (2, 0, 2, 4) and np.array_equal(S0, S) and np.array_equal(u0, u)
        assert S0 is not S and u0 is not u


def test_long_sequence_against_fsum_oracle():
    rng = np.random.default_rng(13)
    b, l, h, n, e = 1, 600, 1, 8, 4
    pq, pk = rng.uniform(0, 1, (b, l, h, n)), rng.uniform(0, 1, (b, l, h, n))
    v = rng.standard_normal((b, l, h, e))
    exact = linear_attention_fsum(pq, pk, v, causal=True, normalize=True)
    # the fsum oracle: products rounded once, correctly rounded sums, one division -> depth 4
    bound = linear_attention_bound(pq, pk, v, exact, causal=True, normalize=True, oracle_dtype=np.float64, oracle_depth=4)
    for view, backend in IMPLEMENTATIONS.pairs():
        if view == "quadratic":
            continue  # 600 x 600 scores: the quadratic view is covered on shorter sequences
        assert_within(linear_attention(pq, pk, v, view=view, backend=backend), exact, bound, context=(view, backend))


def test_linear_float32_stays_float32():
    pq, pk, v = (a.astype(np.float32) for a in _lin(14))
    for fn in CAUSAL_FNS:
        o = fn(pq, pk, v)
        assert o.dtype == np.float32
        exact = linear_attention_mpmath(pq, pk, v, causal=True, normalize=True)
        assert_within(o, exact, linear_attention_bound(pq, pk, v, exact, causal=True, normalize=True, dtype=np.float32))


@pytest.mark.parametrize("view,backend", IMPLEMENTATIONS.pairs())
def test_linear_bad_inputs(view, backend):
    pq, pk, v = _lin(0)
    S, z = np.zeros((2, 2, 4, 3)), np.zeros((2, 2, 3))

    def call(*a, **kw):
        return linear_attention(*a, view=view, backend=backend, **kw)

    for args, kwargs, exc, message in [
        ((pq, pk[:, :3], v), {}, ValueError, r"^phi_k: expected shape \(2, 10, 2, 3\)"),
        ((pq, pk, v[:, :2]), {}, ValueError, r"^v: expected shape \(2, 10, 2, \*\)"),
        ((pq, pk, v), dict(state_layout="KV"), ValueError, "^state_layout: expected one of 'vk', 'kv'"),
        ((pq, pk, v), dict(eps=-1.0), ValueError, "^eps: expected a finite number >= 0"),
        ((pq, pk, v), dict(normalize=False, eps=0.1), ValueError, "^eps: .* expected 0 with normalize=False"),
        ((pq, pk, v), dict(eps_mode="max"), ValueError, "^eps_mode: expected one of 'add', 'clamp'"),
        ((pq, pk, v), dict(chunk=0), ValueError, "^chunk: expected an integer >= 1, got 0"),
        ((pq, pk, v), dict(normalize="False"), TypeError, "^normalize: expected True or False, got str 'False'"),
        ((pq, pk, v), dict(normalize=0), TypeError, "^normalize: expected True or False, got int 0"),
        ((pq, pk, v), dict(causal="True"), TypeError, "^causal: expected True or False"),
        ((pq, pk, v), dict(return_final_state=1), TypeError, "^return_final_state: expected True or False"),
        ((pq, pk, v), dict(initial_state=S), TypeError, r"^initial_state: expected the pair \(S, z\) for normalize=True"),
        ((pq, pk, v), dict(initial_state=(S, z), normalize=False), TypeError,
         "^initial_state: expected the array S alone for normalize=False"),
        ((pq, pk, v), dict(initial_state=(np.zeros((2, 2, 3, 4)), z)), ValueError,
         r"^initial_state\[0\] \(S\): expected shape \(2, 2, 4, 3\)"),  # (b h n p) is the kv layout
        ((pq, pk, v), dict(initial_state=(S, np.zeros((1, 2, 3)))), ValueError,
         r"^initial_state\[1\] \(z\): expected shape \(2, 2, 3\)"),  # no broadcasting
        ((pq.astype(np.int64), pk, v), {}, TypeError, "^phi_q: expected a floating-point dtype"),
    ]:
        with pytest.raises(exc, match=message):
            call(*args, **kwargs)
    if view != "quadratic":
        with pytest.raises(ValueError, match="^view: non-causal linear attention .* has the one view 'quadratic'"):
            call(pq, pk, v, causal=False)
    with pytest.raises(ValueError, match="^k_offset"):
        causal_recurrent_offsets(pq, pk, np.zeros((2, 9, 2)), v)
    with pytest.raises(TypeError, match="^normalize: expected True or False"):
        causal_recurrent_offsets(pq, pk, np.zeros((2, 10, 2)), v, normalize="False")


def test_linear_dispatch_errors():
    pq, pk, v = _lin(0)
    with pytest.raises(ValueError, match="^backend: refimpl.attention.linear_attention has no 'numba' backend for view "
                                         "'quadratic'"):
        linear_attention(pq, pk, v, backend="numba")
    with pytest.raises(ValueError, match="^view: refimpl.attention.linear_attention has views"):
        linear_attention(pq, pk, v, view="parallel")
    with pytest.raises(ValueError, match="^causal: the 'recurrent' view is causal"):
        LA.recurrent(pq, pk, v, causal=False)
    with pytest.raises(ValueError, match="^causal: the 'chunked' view is causal"):
        LN.causal_chunked(pq, pk, v, causal=False)


# ------------------------------------------------------------------ Performer attention and stabilizers

def _perf(seed=20, l=12, d=4):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((1, l, 1, d)) * 1.5, rng.standard_normal((1, l, 1, d)) * 1.5
    v = rng.standard_normal((1, l, 1, 3))
    W = F.random_projection(16, d, seed=3)
    return q, k, v, W


@pytest.mark.parametrize("kind", ["positive", "hyperbolic"])
def test_stabilizers_leave_normalized_attention_unchanged(kind):
    q, k, v, W = _perf()
    s = 0.5 ** 0.5  # scale = 1/sqrt(d) split on q and k
    phq, phk = features_mpmath(q * s, kind, W), features_mpmath(k * s, kind, W)
    # relative error of every (stabilized) feature: exponent w.x - |x|^2/2 - c rounds with absolute error
    # <= gamma_{d+4}(|w|.|x| + |x|^2/2 + |c|), |c| <= max_i |w_i|.|x| + |x|^2/2, exp 2u, / sqrt(m) 2u, * exp(c) back 0
    # (the offsets cancel exactly in the normalized output): f <= gamma_{d+10} (2 A + |x|^2 + 1)
    A = max((np.abs(q * s) @ np.abs(W).T).max(), (np.abs(k * s) @ np.abs(W).T).max())
    X2 = max(((q * s) ** 2).sum(-1).max(), ((k * s) ** 2).sum(-1).max())
    f = gamma(4 + 10, np.float64) * (2 * A + X2 + 1)
    for causal in (False, True):
        exact = linear_attention_mpmath(phq, phk, v, causal=causal, normalize=True)
        mag = linear_attention_magnitude(phq, phk, v, exact, causal=causal, normalize=True)
        bound = linear_attention_bound(phq, phk, v, exact, causal=causal, normalize=True) + \
            Bound(2 * f * mag, "feature relative error f, doubled per product (linear_attention_magnitude)")
        stabs = ["none", "query_max", "key_global_max"] + (["key_prefix_max"] if causal else [])
        for stab in stabs:
            views = ("recurrent",) if stab == "key_prefix_max" else (
                ("quadratic", "recurrent", "chunked") if causal else ("quadratic",))
            for view in views:
                o = performer_attention(q, k, v, W, kind=kind, causal=causal, stabilizer=stab, view=view, chunk=5)
                assert_within(o, exact, bound, context=f"{stab} causal={causal} view={view}")


def test_performer_bad_inputs():
    q, k, v, W = _perf()
    for kwargs, exc, message in [
        (dict(causal="bottom_right"), TypeError, "^causal: expected True or False, got str 'bottom_right'"),
        (dict(causal="False"), TypeError, "^causal: expected True or False, got str 'False'"),
        (dict(normalize="False"), TypeError, "^normalize: expected True or False"),
        (dict(view="recurrent"), ValueError, "^view: non-causal attention .* is the 'quadratic' view"),
        (dict(causal=True, stabilizer="key_prefix_max"), ValueError,
         "^view: the 'key_prefix_max' stabilizer .* needs view='recurrent'"),
        (dict(kind="trig", stabilizer="query_max"), ValueError, "^stabilizer: only 'none' applies"),
        (dict(scale=-1.0), ValueError, "^scale: expected a finite number > 0"),
    ]:
        with pytest.raises(exc, match=message):
            performer_attention(q, k, v, W, **kwargs)
    # a wrong k is blamed on k (not on the features computed from it)
    with pytest.raises(ValueError, match=r"^k: expected shape \(1, \*, 1, 4\)"):
        performer_attention(q, k[..., :3], v, W)
    with pytest.raises(ValueError, match=r"^k: expected shape \(1, 12, 1, 4\)"):
        performer_attention(q, k[:, :5], v[:, :5], W, causal=True, view="recurrent")
    with pytest.raises(ValueError, match=r"^v: expected shape \(1, 12, 1, \*\)"):
        performer_attention(q, k, v[:, :5], W)
    with pytest.raises(ValueError, match=r"^W: expected shape \(f, 4\)"):
        performer_attention(q, k, v, W[:, :3])
    # non-causal attention takes keys of another length
    assert performer_attention(q[:, :5], k, v, W).shape == (1, 5, 1, 3)


def test_global_key_max_leaks_future_keys_but_prefix_max_does_not():
    q, k, v, W = _perf(l=10)
    k2 = k.copy()
    # change only the future keys (positions >= 7) to the maximizer of w.k' - |k'|^2/2 (k' = k sqrt(scale)),
    # so that the global offset c_K must grow
    i = int(np.argmax(np.linalg.norm(W, axis=1)))
    k2[:, 7:] = W[i] / 0.5 ** 0.5
    c1 = F.positive_features(k * 0.5 ** 0.5, W, stabilizer="global_max", return_offset=True)[1].max()
    c2 = F.positive_features(k2 * 0.5 ** 0.5, W, stabilizer="global_max", return_offset=True)[1].max()
    assert c2 > c1
    for stab, leaks in [("key_prefix_max", False), ("key_global_max", True)]:
        o1 = performer_attention(q, k, v, W, causal=True, stabilizer=stab, eps=1e-3, view="recurrent")
        o2 = performer_attention(q, k2, v, W, causal=True, stabilizer=stab, eps=1e-3, view="recurrent")
        if leaks:
            assert not np.array_equal(o1[:, :7], o2[:, :7])
        else:
            np.testing.assert_array_equal(o1[:, :7], o2[:, :7])
    with pytest.raises(ValueError, match="^stabilizer: 'key_prefix_max' is the causal-safe form"):
        performer_attention(q, k, v, W, causal=False, stabilizer="key_prefix_max")


def test_prefix_max_survives_where_plain_features_underflow():
    # keys with huge |k| make every exp(w.k - |k|^2/2) underflow to 0 (0/0 = NaN) without a stabilizer;
    # the running max keeps the features representable
    q, k, v, W = _perf(l=6)
    k = k * 120.0
    with np.errstate(over="ignore", invalid="ignore"):
        plain = performer_attention(q, k, v, W, causal=True, view="recurrent")
    stab = performer_attention(q, k, v, W, causal=True, stabilizer="key_prefix_max", view="recurrent")
    assert not np.all(np.isfinite(plain)) and np.all(np.isfinite(stab))


# ------------------------------------------------------------------ fast weights

def test_fast_weights_identity_against_closed_form():
    rng = np.random.default_rng(30)
    a, bv, xr = rng.standard_normal((2, 9, 2, 3)), rng.standard_normal((2, 9, 2, 4)), rng.standard_normal((2, 9, 2, 4))
    W0 = rng.standard_normal((2, 2, 3, 4))
    exact = fast_weights_mpmath(a, bv, xr, W0)
    y, W_last = fast_weight_memory(a, bv, xr, initial_state=W0, return_final_state=True)
    # the final state resumes the sequence: the second half from W_last equals the whole run's second half
    y2 = fast_weight_memory(a[:, 5:], bv[:, 5:], xr[:, 5:], initial_state=fast_weight_memory(
        a[:, :5], bv[:, :5], xr[:, :5], initial_state=W0, return_final_state=True)[1])
    assert W_last.shape == (2, 2, 3, 4)
    # y_i = W_i x_i: W_i is a sum of i+2 terms (W0 and i+1 outer products, 1 product each), then a dot of length r
    mag = np.einsum("bhpr,bihr->bihp", np.abs(W0), np.abs(xr)) + np.einsum(
        "bjhp,bjhr,bihr,ij->bihp", np.abs(a), np.abs(bv), np.abs(xr), np.tril(np.ones((9, 9))))
    bound = componentwise_bound(mag, 9 + 1 + 1 + 4, np.float64, oracle_dtype=None, what="FWP sums")
    assert_within(y, exact, bound)
    assert_within(y2, exact[:, 5:], Bound(bound.values[:, 5:], bound.source))


def test_fast_weights_sigma_is_applied_each_step():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((1, 5, 1, 3))
    W_a, W_b = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3, 3))
    y, W_last = fast_weight_programmer(x, W_a, W_b, sigma=np.tanh, return_final_state=True)
    u = 2.0 ** -53
    E = np.zeros((2, 3))  # elementwise bound on the fast-weight error
    # independent loop in mpmath: a = W_a x, b = W_b x, W = tanh(W + a b^T), y = W x
    with mpmath.workdps(50):
        Wm = mpmath.matrix(2, 3)
        for i in range(5):
            xi = mpmath.matrix([mpmath.mpf(float(c)) for c in x[0, i, 0]])
            Wprev = np.array(Wm.tolist(), dtype=float)
            A = mpmath.matrix(W_a[0].tolist()) * xi
            Bv = mpmath.matrix(W_b[0].tolist()) * xi
            Wm = (Wm + A * Bv.T).apply(mpmath.tanh)
            yi = np.array([float(c) for c in (Wm * xi)])
            Wi = np.array(Wm.tolist(), dtype=float)
            # tanh is 1-Lipschitz, so errors carry over elementwise; each step adds the rounding of
            # a, b (dots of length 3: gamma_3 |W_a||x|, |W_b||x|), the outer product and the add (2),
            # and tanh itself (2u |W_i|):  E_i = E_{i-1} + gamma_{3+3}(|W_{i-1}| + Ma Mb^T) + 2u |W_i|
            Ma, Mb = np.abs(W_a[0]) @ np.abs(x[0, i, 0]), np.abs(W_b[0]) @ np.abs(x[0, i, 0])
            E = E + gamma(6, np.float64) * (np.abs(Wprev) + np.outer(Ma, Mb)) + 2 * u * np.abs(Wi)
            # y_i = W_i x_i: E |x| + gamma_3 |W_i||x|
            bound = E @ np.abs(x[0, i, 0]) + gamma(3, np.float64) * np.abs(Wi) @ np.abs(x[0, i, 0])
            assert_within(y[0, i, 0], yi, Bound(bound, "FWP with tanh: 1-Lipschitz error carry-over"))
    with pytest.raises(ValueError, match="^sigma: expected it to return shape"):
        fast_weight_memory(x, x, x, sigma=lambda W: W[..., 0])


def test_fast_weights_bad_inputs():
    rng = np.random.default_rng(32)
    a, bv, xr = rng.standard_normal((1, 4, 1, 3)), rng.standard_normal((1, 4, 1, 2)), rng.standard_normal((1, 4, 1, 2))
    for args, kwargs, exc, message in [
        ((a, bv[:, :3], xr), {}, ValueError, r"^b_vec: expected shape \(1, 4, 1, \*\)"),
        ((a, bv, xr[..., :1]), {}, ValueError, r"^x_read: expected shape \(1, 4, 1, 2\) \(b, l, h, n\) like b_vec"),
        ((a, bv.astype(np.int64), xr), {}, TypeError, "^b_vec: expected a floating-point dtype"),
        ((a, bv, xr), dict(initial_state=np.zeros((1, 1, 2, 3))), ValueError, r"^initial_state: expected shape \(1, 1, 3, 2\)"),
        ((a, bv, xr), dict(return_final_state="yes"), TypeError, "^return_final_state: expected True or False"),
        ((a, bv, xr), dict(sigma="tanh"), TypeError, "^sigma: expected a callable"),
        ((a, bv, xr), dict(backend="numba"), ValueError, "^backend: refimpl.attention.fast_weight_memory has no 'numba'"),
    ]:
        with pytest.raises(exc, match=message):
            fast_weight_memory(*args, **kwargs)
