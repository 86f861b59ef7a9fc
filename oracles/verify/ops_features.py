r"""Op specs ``features.performer`` (random-feature maps) and ``features.orthogonal_projection`` (the draw).

features.performer
------------------
Canonical: ``fn(x, W) -> phi`` with ``x`` (b l h d), ``W`` (m d), ``phi`` (b l h m) (positive) or
(b l h 2m) (trig, hyperbolic)::

    positive    phi(x) = (exp(W x - |x|^2/2 - c) + eps) / sqrt(m)
    trig        phi(x) = exp(|x|^2/2)/sqrt(m) [sin(W x), cos(W x)]
    hyperbolic  phi(x) = (exp(-|x|^2/2 - c)/sqrt(2m) [exp(W x), exp(-W x)]) (+ eps/sqrt(2m))

Conventions: ``kind``; ``data_scale`` (``"d^-1/4"``: ``x`` is first multiplied by ``d^{-1/4}``,
Performer's softmax-kernel convention so that ``phi(q).phi(k) ~ exp(q.k/sqrt(d))``); ``eps`` added
after the exponential; ``stabilizer`` -- the offset ``c`` subtracted in the exponent:
``none``; ``row_max`` (max over the features of one position of the exponent ``W x - |x|^2/2``);
``global_max`` (the same max over *all* positions, batches and heads passed in);
``row_max_wx`` (max over the features of ``W x`` alone, per position: performer-pytorch's queries);
``head_max_wx`` (max of ``W x`` over all positions and features of one batch entry and head:
performer-pytorch's keys).  A global or per-head offset couples positions: a causal output then
depends on future keys -- the row-locality probe reports it.  ``offset_grad`` (read by the gradient check
only; the forward values do not depend on it): ``through`` differentiates the offset ``c(x, W)`` (the
features' own derivative), ``stop`` holds it constant at the point of linearization (FAVOR+'s and
performer-pytorch's ``.detach()`` of the max: exact for normalized attention, where a per-query constant
cancels, but not the derivative of the features themselves).

Oracle: :func:`oracles.attention.features_mpmath` (the definitions in mpmath) times ``exp(-c)``
with ``c`` computed in float64; bound :func:`oracles.attention.feature_bound` plus the scaling of
``x``, the offset's error and ``eps``.

features.orthogonal_projection
------------------------------
Canonical: ``fn(m, d, seed) -> W`` (m d): orthogonal random features, blocks of ``d`` exactly
orthogonal rows whose directions are Haar distributed.  Checked by law, not by value: the rows
of each block are orthonormal (to rounding), and a statistical probe over many seeds tests the
mean of the diagonal direction cosines ``u_ii = W_ii/|W_i|``, which is 0 for a Haar draw; an
*unsigned* QR (LAPACK's raw ``Q``, signs of ``diag R`` left to the algorithm) is not Haar and
biases it (and the Performer estimator).  The threshold is Bernstein's inequality for the R
per-draw means ``X_r = mean_i u_ii`` (independent across seeds, ``|X_r| <= 1``): under Haar
``E u_ii = 0``, ``E u_ii^2 = 1/d`` (a uniform unit vector) and ``E u_ii u_jj = 0`` for ``i != j``
(flipping the sign of row ``i`` preserves Haar measure), so ``Var X_r = 1/d^2`` and
``P(|mean_r X_r| >= t) <= 2 exp(-R t^2 / (2/d^2 + 2t/3))``, solved for a false-failure rate of 1e-6.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from oracles.attention import feature_bound, features_mpmath
from oracles.tolerance import Bound, componentwise_bound, gamma
from oracles.verify.adapters import Adapter, Const, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, Probe, case_builder, draw_sizes, op_domain,
                                     op_functions, register_op, seeded_strategy)

OP = "features.performer"
OP_DRAW = "features.orthogonal_projection"
STABILIZERS = ("none", "row_max", "global_max", "row_max_wx", "head_max_wx")


def _scaled_x(x, conv):
    x = np.asarray(x, dtype=np.float64)
    return x * x.shape[-1] ** -0.25 if conv["data_scale"] == "d^-1/4" else x


def _offset(xs, W, conv):
    """The stabilizer's offset ``c`` (b l h 1), float64."""
    st = conv["stabilizer"]
    wx = xs @ np.asarray(W, dtype=np.float64).T
    if conv["kind"] == "hyperbolic":
        wx = np.concatenate([wx, -wx], axis=-1)
    z = wx - 0.5 * np.sum(xs * xs, axis=-1, keepdims=True)
    if st == "none" or z.size == 0:
        return np.zeros(z.shape[:-1] + (1,))
    if st == "row_max":
        return np.max(z, axis=-1, keepdims=True)
    if st == "global_max":
        return np.full(z.shape[:-1] + (1,), np.max(z))
    if st == "row_max_wx":
        return np.max(wx, axis=-1, keepdims=True)
    # head_max_wx: max over positions (axis 1) and features (axis -1) per batch entry and head
    return np.broadcast_to(np.max(wx, axis=(1, 3), keepdims=True), z.shape[:-1] + (1,)).copy()


def oracle(inp, conv) -> Dict[str, np.ndarray]:
    xs = _scaled_x(inp["x"], conv)
    W = np.asarray(inp["W"], dtype=np.float64)
    kind = conv["kind"]
    if kind == "trig":
        if conv["stabilizer"] != "none" or float(conv["eps"]) != 0.0:
            raise ValueError("trig features take no stabilizer or eps")
        return {"phi": features_mpmath(xs, "trig", W)}
    phi = features_mpmath(xs, kind, W)
    c = _offset(xs, W, conv)
    n_feat = phi.shape[-1]
    return {"phi": phi * np.exp(-c) + float(conv["eps"]) / math.sqrt(n_feat if kind == "positive" else n_feat)}


def bounds(inp, out, conv, dtype):
    return {"phi": scaled_feature_bound(_scaled_x(inp["x"], conv), inp["W"], conv, out["phi"], dtype,
                                        scaled=conv["data_scale"] == "d^-1/4")}


def scaled_feature_bound(xs, W, conv, phi, dtype, *, scaled: bool) -> Bound:
    """The bound of features of ``xs`` (already scaled: ``scaled=True`` counts the two roundings of forming
    ``x * r``, the factor and the product) under the conventions ``kind``, ``eps``, ``stabilizer``."""
    xs = np.asarray(xs, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    kind = conv["kind"]
    d = xs.shape[-1]
    phi = np.asarray(phi)
    eps = float(conv["eps"])
    n_feat = phi.shape[-1]
    core = phi - eps / math.sqrt(n_feat)  # the exponential part
    b = feature_bound(xs, kind, core, dtype, W)
    A = np.abs(xs) @ np.abs(W).T
    if kind != "positive":
        A = np.concatenate([A, A], axis=-1)
    sq = np.sum(xs * xs, axis=-1, keepdims=True)
    extra = []
    if scaled:
        # x * d^(-1/4) (or x * sqrt(scale)): the factor and the product, two roundings per entry of x -> the
        # exponent moves by <= gamma_2 (|W||x| + |x|^2)
        extra.append(Bound(gamma(2, dtype) * (A + sq) * np.abs(core), "x * d^-1/4: the factor and the product"))
    if conv["stabilizer"] != "none":
        # the offset c is an exponent computed like the others (depth d + 2) in the candidate and in float64
        Amax = np.max(A, axis=-1, keepdims=True) if A.size else np.zeros(A.shape[:-1] + (1,))
        if conv["stabilizer"] in ("global_max", "head_max_wx"):
            Amax = np.full_like(Amax, np.max(Amax) if Amax.size else 0.0)
        cmag = Amax + sq + 1.0
        extra.append(Bound((gamma(d + 3, dtype) + gamma(d + 3, np.float64)) * cmag * np.abs(core),
                           "the stabilizer's offset: an exponent of depth d + 2, both sides"))
    if eps:
        extra.append(Bound(gamma(2, dtype) * (np.abs(core) + eps / math.sqrt(n_feat)), "+ eps, / sqrt(m)"))
    for e in extra:
        b = b + e
    return b


def reference(inp, conv):
    from refimpl.attention.features import reference as features

    x = np.asarray(inp["x"])
    if conv["data_scale"] == "d^-1/4":
        x = x * x.dtype.type(x.shape[-1] ** -0.25)
    st = conv["stabilizer"]
    kind = conv["kind"]
    W = np.asarray(inp["W"]).astype(x.dtype)
    ours = st if st in ("none", "row_max", "global_max") else "none"
    if kind == "trig":
        phi = features.trig_features(x, W)
    elif kind == "positive":
        phi = features.positive_features(x, W, stabilizer=ours)
    else:
        phi = features.hyperbolic_features(x, W, stabilizer=ours)
    if st in ("row_max_wx", "head_max_wx"):
        # performer-pytorch's offsets (a max of W x) on top of our unstabilized features, in the same dtype
        wx = x @ W.T
        if kind == "hyperbolic":
            wx = np.concatenate([wx, -wx], axis=-1)
        c = np.max(wx, axis=-1, keepdims=True) if st == "row_max_wx" else np.max(wx, axis=(1, 3), keepdims=True)
        phi = phi * np.exp(-c)
    return {"phi": phi + x.dtype.type(float(conv["eps"]) / math.sqrt(phi.shape[-1]))}


def sample(rng, conv, *, l=None, b=None, h=None, d=None, m=None):
    b, h, d, m = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3), d=(d, 1, 6), m=(m, 1, 9))
    l = int(rng.choice([1, 2, 3, 5, 8])) if l is None else l
    # |x| kept moderate: the features are exponentials of |W x| and |x|^2
    x = 0.5 * rng.standard_normal((b, l, h, d))
    W = rng.standard_normal((m, d))
    return {"x": x, "W": W}


def strategy(conv):
    return seeded_strategy(sample, conv)


def _scaled(inp, scale=None):
    """A case with ``x`` scaled (large exponents, or ``x = 0``)."""
    if scale is not None:
        inp["x"] = inp["x"] * scale
    return inp


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 47, conv, prepare=_scaled)
    out = add.cases

    add("golden-small", "golden", "b=1, l=4, h=2, d=3, m=5", 1, l=4, b=1, h=2, d=3, m=5)
    add("edge-one-feature", "edge", "m = 1, d = 1", 2, m=1, d=1)
    add("edge-large-x", "edge", "|x| ~ 3: large exponents (a stabilizer matters here)", 3, scale=6.0, l=6, d=4, m=8)
    add("edge-x-zero", "edge", "x = 0: phi = 1/sqrt(m) (positive) exactly", 4, scale=0.0, l=2, d=3, m=4)
    return out


def _row_local(conv):
    return conv["stabilizer"] in ("none", "row_max", "row_max_wx")


register_op(OpSpec(
    name=OP,
    summary="Performer random-feature maps (positive, trig, hyperbolic) with named data scaling, eps and stabilizer",
    inputs=(Arg("x", "b l h d"), Arg("W", "m d", "projection rows w_i")),
    outputs=(Arg("phi", "b l h m | b l h M"),),
    conventions=(
        Convention("kind", "positive", "positive: exp(Wx - |x|^2/2)/sqrt(m); trig: exp(|x|^2/2)/sqrt(m) [sin, cos]; "
                   "hyperbolic: exp(-|x|^2/2)/sqrt(2m) [exp(Wx), exp(-Wx)] (the text's h(x))",
                   ("positive", "trig", "hyperbolic")),
        Convention("data_scale", "none", "x multiplied by d^-1/4 first (Performer's softmax kernel) or not",
                   ("none", "d^-1/4")),
        Convention("eps", 0.0, "added to the exponential before the 1/sqrt(m) factor"),
        Convention("stabilizer", "none", "offset c subtracted in the exponent: none, row_max, global_max (exponent), "
                   "row_max_wx, head_max_wx (of W x: performer-pytorch's queries / keys)", STABILIZERS),
        Convention("offset_grad", "through", "the gradient check only (--grad): the stabilizer's offset c "
                   "differentiated through (the features' own derivative) or held constant (stop: FAVOR+ and "
                   "performer-pytorch detach the max; exact in normalized attention, where the constant cancels)",
                   ("through", "stop")),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"x": "l"}, {"phi": "l"}, name="row_locality", local=True, applies=_row_local,
                            why="a stabilizer or normalizer taken over several positions (e.g. a max over all keys) "
                                "makes a causal attention output depend on future keys",
                            sampler=lambda rng, conv: sample(rng, conv, l=6)),
            argument_paths_probe(alternatives={"eps": (1e-3,)}, sampler=lambda rng, conv: sample(rng, conv, l=3))),
    domain=op_domain(length=("l", "l"), input_dim=("d", "d"), num_features=("m", "m")),
    module=__name__,
    notes="oracle: oracles.attention.features_mpmath x exp(-offset); bound: feature_bound + scaling/offset/eps",
))

register_adapter(Adapter(
    name="performer_pytorch.softmax_kernel",
    op=OP,
    doc="performer-pytorch's softmax_kernel(data, projection_matrix=W, is_query=..., normalize_data=True, eps=1e-4): "
        "head-first data (b h n d); x scaled by d^-1/4, positive features with eps=1e-4 inside, a max over W x "
        "subtracted: per position for queries (is_query=True), over all positions of a head for keys",
    args=(In("x", "b l h d -> b h l d"),),
    kwargs={"projection_matrix": In("W"), "is_query": Const(False)},
    outputs=(Out("phi", None, "b h l m -> b l h m"),),
    implies={"kind": "positive", "data_scale": "d^-1/4", "eps": 1e-4},
))

register_adapter(Adapter(
    name="performer_pytorch.softmax_kernel.query",
    op=OP,
    doc="the same with is_query=True (the max over W x is per position)",
    args=(In("x", "b l h d -> b h l d"),),
    kwargs={"projection_matrix": In("W"), "is_query": Const(True)},
    outputs=(Out("phi", None, "b h l m -> b l h m"),),
    implies={"kind": "positive", "data_scale": "d^-1/4", "eps": 1e-4},
))


def _refimpl_stabilizer(c):
    """refimpl's stabilizers are the op's 'none', 'row_max', 'global_max' (positive/hyperbolic); trig takes none."""
    if c["stabilizer"] == "none":
        return None
    if c["kind"] == "trig" or c["stabilizer"] not in ("row_max", "global_max"):
        raise ValueError(f"refimpl's feature_map has no stabilizer {c['stabilizer']!r} for kind {c['kind']!r} "
                         "(it has 'row_max' and 'global_max' for positive and hyperbolic features)")
    return c["stabilizer"]


register_adapter(Adapter(
    name="refimpl",
    op=OP,
    doc="refimpl.attention.feature_map(x, kind, W=, stabilizer=) with kind 'trig'/'positive'/'hyperbolic' "
        "(positive/hyperbolic take a stabilizer; the named maps of refimpl.attention.features.reference and the "
        "Numba kernels of refimpl.attention.features.numba take x, W)",
    args=(In("x"), Conv(lambda c: c["kind"])),
    kwargs={"W": In("W"), "stabilizer": Conv(_refimpl_stabilizer)},
    outputs=(Out("phi", None),),
    implies={"data_scale": "none", "eps": 0.0},
))


# ----------------------------------------------------------------------------------------------------------
# features.orthogonal_projection: a law, checked statistically
# ----------------------------------------------------------------------------------------------------------

FALSE_FAILURE = 1e-6
DRAWS = 400
PROBE_D = 6


def _directions(W):
    W = np.asarray(W, dtype=np.float64)
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def draw_oracle(inp, conv):
    """The deterministic part of the law: each block of d rows is orthonormal after normalising the rows; with
    ``norms="fixed"`` every row has norm ``sqrt(d)``."""
    m, d = int(inp["m"]), int(inp["d"])
    out = {"gram": np.tile(np.eye(d), (-(-m // d), 1, 1))}
    if conv["norms"] == "fixed":
        out["row_norms"] = np.full(m, math.sqrt(d))
    return out


def draw_bounds(inp, out, conv, dtype):
    r"""Householder QR of a d x d matrix: the computed factor is within ``||dQ||_F <= sqrt(d) gamma~_{d^2}`` of an
    exactly orthogonal one (Higham Thm 19.4, with the unspecified small constant of ``gamma~`` taken as 1), so
    every entry of ``Q^T Q - I`` is at most ``2 ||dQ||_2 + ||dQ||^2 <= 2 sqrt(d) gamma_{d^2}`` (first order);
    normalising the rows and forming the Gram dot products adds ``gamma_{d+2}`` in the candidate's dtype
    (scaling) and in float64 (our Gram matrix).  Fixed norms: a unit row (norm within ``2 sqrt(d) gamma_{d^2}``
    of 1, the diagonal Gram entry) times ``sqrt(d)`` (sqrt and product: 2 roundings) and our norm of it
    (``gamma_{d+2}`` in float64) -- ``sqrt(d) (2 sqrt(d) gamma_{d^2} + gamma_{d+4} + gamma_{d+2}(float64))``."""
    d = int(inp["d"])
    b = 2.0 * np.sqrt(d) * gamma(d * d, dtype) + gamma(d + 2, dtype) + gamma(d + 2, np.float64)
    res = {"gram": Bound(b, "orthonormality of a Householder QR factor: 2 sqrt(d) gamma_(d^2) per Gram entry "
                            "(Higham Thm 19.4, constant 1) + gamma_(d+2) for normalising and the Gram products")}
    if conv["norms"] == "fixed":
        bn = math.sqrt(d) * (2.0 * np.sqrt(d) * gamma(d * d, dtype) + gamma(d + 4, dtype) + gamma(d + 2, np.float64))
        res["row_norms"] = Bound(bn, "fixed norms sqrt(d): a QR row's norm (2 sqrt(d) gamma_(d^2)) times sqrt(d) "
                                     "(gamma_(d+4)) and our norm (gamma_(d+2), float64)")
    return res


def _gram_adapter_out(W, m, d):
    U = _directions(W)
    nb = -(-m // d)
    grams = np.zeros((nb, d, d))
    for i in range(nb):
        blk = U[i * d:(i + 1) * d]
        g = blk @ blk.T
        grams[i, :g.shape[0], :g.shape[1]] = g
        if g.shape[0] < d:  # a truncated last block: pad with the identity
            grams[i, g.shape[0]:, g.shape[0]:] = np.eye(d - g.shape[0])
    return grams


def _draws(call, n: int = DRAWS, d: int = PROBE_D):
    for s in range(n):
        yield np.asarray(call({"m": np.asarray(d), "d": np.asarray(d), "seed": np.asarray(1000 + s)})["W"],
                         dtype=np.float64)


def _haar_probe(call, spec, conv, rng) -> tuple:
    """Mean of the diagonal direction cosines over DRAWS seeds vs Bernstein's threshold."""
    d = PROBE_D
    means = [float(np.mean(np.diagonal(_directions(W)))) for W in _draws(call)]
    T = float(np.mean(means))
    # Bernstein: R t^2 = log(2/alpha) (2 sigma^2 + 2 t / 3) with sigma^2 = 1/d^2, |X_r| <= 1
    Lg = math.log(2.0 / FALSE_FAILURE)
    a, b_, c = DRAWS, -Lg * 2.0 / 3.0, -Lg * 2.0 / d**2
    t = (-b_ + math.sqrt(b_ * b_ - 4 * a * c)) / (2 * a)
    if abs(T) <= t:
        return True, (f"mean diagonal direction cosine {T:+.4f} over {DRAWS} draws is within the Bernstein threshold "
                      f"{t:.4f} (false-failure rate {FALSE_FAILURE:g}) of its Haar value 0")
    return False, (f"mean diagonal direction cosine {T:+.4f} over {DRAWS} draws exceeds the Bernstein threshold {t:.4f} "
                   f"(false-failure rate {FALSE_FAILURE:g}): the orthogonal draw is not Haar distributed -- an unsigned "
                   f"QR (signs of diag R not fixed) biases the random-feature estimator")


def _chi_probe(call, spec, conv, rng) -> tuple:
    r"""Chi norms: each row is marginally ``N(0, I_d)``, so ``|w|^2 ~ chi^2_d``.  The squared norm of row 0 of
    DRAWS independent draws (seeds) is an iid sample of that law; the Kolmogorov-Smirnov test against the
    chi-square cdf (its exact null distribution, scipy) refuses it at the false-failure rate 1e-6."""
    from scipy import stats

    d = PROBE_D
    sq = np.array([float(np.sum(W[0] ** 2)) for W in _draws(call)])
    res = stats.kstest(sq, stats.chi2(d).cdf, method="exact")
    if res.pvalue >= FALSE_FAILURE:
        return True, (f"squared row norms over {DRAWS} draws follow chi^2_{d} (Kolmogorov-Smirnov D = "
                      f"{res.statistic:.3f}, p = {res.pvalue:.3g} >= {FALSE_FAILURE:g})")
    spread = float(np.std(sq))
    return False, (f"squared row norms over {DRAWS} draws are not chi^2_{d} distributed (Kolmogorov-Smirnov D = "
                   f"{res.statistic:.3f}, p = {res.pvalue:.3g} < {FALSE_FAILURE:g}; mean {np.mean(sq):.3f} vs {d}, "
                   f"std {spread:.3f} vs {math.sqrt(2 * d):.3f})"
                   + (": every row has the same norm -- fixed norms sqrt(d) are not chi norms (a biased estimator); "
                      "claim norms='fixed' if that is meant" if spread < 1e-6 * d else ""))


def draw_sample(rng, conv):
    d = int(rng.integers(2, 7))
    m = int(rng.integers(1, 3 * d + 1))
    return {"m": np.asarray(m), "d": np.asarray(d), "seed": np.asarray(int(rng.integers(0, 2**31)))}


def draw_cases(conv) -> List[Case]:
    return [Case(OP_DRAW, f"golden-m{m}-d{d}", "golden", {"m": np.asarray(m), "d": np.asarray(d),
                                                        "seed": np.asarray(s)}, dict(conv), seed=s,
                 note=f"m = {m}, d = {d}" + (" (a truncated last block)" if m % d else ""))
            for (m, d, s) in ((8, 4, 0), (10, 4, 1), (3, 5, 2), (16, 16, 3))]


register_op(OpSpec(
    name=OP_DRAW,
    summary="orthogonal random projection for Performer features: blocks of exactly orthogonal rows, Haar directions, "
            "chi (or fixed) row norms",
    inputs=(Arg("m", "", "rows", kind="int"), Arg("d", "", "dimension", kind="int"), Arg("seed", "", kind="int")),
    outputs=(Arg("gram", "blocks d d", "Gram matrices of the normalised rows of each block (identity)"),
             Arg("row_norms", "m", "the row norms (norms='fixed': sqrt(d))", optional=True)),
    conventions=(Convention("norms", "chi", "row norms: chi (each row marginally N(0, I_d): |w|^2 ~ chi^2_d, the "
                            "unbiased estimator; performer-pytorch scaling=0), fixed (every row sqrt(d); scaling=1), "
                            "any (only the directions are checked)", ("chi", "fixed", "any")),),
    **op_functions(globals(), "draw_"),
    probes=(Probe("haar_directions", "the mean diagonal direction cosine is 0 for Haar-distributed blocks "
                  "(Bernstein threshold, false-failure rate 1e-6)", _haar_probe),
            Probe("chi_norms", "squared row norms follow chi^2_d (Kolmogorov-Smirnov, false-failure rate 1e-6)",
                  _chi_probe, applies=lambda conv: conv["norms"] == "chi")),
    lowp=False,
    returns=(Arg("W", "m d"),),
    derive=lambda ret, inputs: draw_derive(ret, inputs),
    module=__name__,
    notes="checked by law: orthonormal blocks (to rounding), Haar directions and chi norms (seeded statistical probes)",
))


def draw_derive(ret: Dict[str, Any], inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The candidate returns W; the compared outputs are the Gram matrix of each block's normalised rows and the
    row norms."""
    W = np.asarray(ret["W"], dtype=np.float64)
    m, d = int(inputs["m"]), int(inputs["d"])
    if W.shape != (m, d):
        return {"W": W}  # reported as a missing output with the shape in the error
    return {"W": W, "gram": _gram_adapter_out(W, m, d), "row_norms": np.linalg.norm(W, axis=1)}


register_adapter(Adapter(
    name="refimpl",
    op=OP_DRAW,
    doc="refimpl.attention.random_projection(f, n, seed, kind='orthogonal', norms=): norms 'chi' or 'fixed'",
    args=(In("m", scalar=True), In("d", scalar=True), In("seed", scalar=True)),
    kwargs={"kind": Const("orthogonal"), "norms": Conv(lambda c: c["norms"] if c["norms"] != "any" else "chi")},
    outputs=(Out("W", None),),
))

register_adapter(Adapter(
    name="performer_pytorch.gaussian_orthogonal_random_matrix",
    op=OP_DRAW,
    doc="performer-pytorch's gaussian_orthogonal_random_matrix(nb_rows, nb_columns, scaling=0|1) after "
        "torch.manual_seed(seed): the adapted callable is fn(nb_rows, nb_columns, seed, scaling=) (it seeds torch "
        "and calls the function); scaling 0 = chi norms, 1 = fixed sqrt(d)",
    args=(In("m", scalar=True), In("d", scalar=True), In("seed", scalar=True)),
    kwargs={"scaling": Conv(lambda c: 1 if c["norms"] == "fixed" else 0)},
    outputs=(Out("W", None),),
))


# ----------------------------------------------------------------------------------------------------------
# features.dpfp, features.elu_plus_one: deterministic maps
# ----------------------------------------------------------------------------------------------------------

OP_DPFP = "features.dpfp"
OP_ELU = "features.elu_plus_one"


def dpfp_oracle(inp, conv):
    return {"phi": features_mpmath(inp["x"], "dpfp", nu=int(conv["nu"]))}


def dpfp_bounds(inp, out, conv, dtype):
    """``r = [relu(x), relu(-x)]`` and the rolls are exact; each feature ``r_i r_(i-j)`` is one product: ``u |phi|``."""
    return {"phi": feature_bound(inp["x"], "dpfp", out["phi"], dtype)}


def dpfp_reference(inp, conv):
    from refimpl.attention.features import dpfp

    return {"phi": dpfp(inp["x"], int(conv["nu"]))}


def map_sample(rng, conv, *, l=None, b=None, h=None, d=None, scale=2.0):
    b, h = draw_sizes(rng, b=(b, 1, 3), h=(h, 1, 3))
    d_min = -(-(int(conv.get("nu", 1)) + 1) // 2)  # DPFP-nu needs nu <= 2d - 1
    d = int(rng.integers(d_min, 6)) if d is None else max(d, d_min)
    l = int(rng.choice([0, 1, 2, 3, 5, 8])) if l is None else l
    return {"x": scale * rng.standard_normal((b, l, h, d))}


def _map_strategy(conv):
    return seeded_strategy(map_sample, conv)


def _map_cases(op, salt):
    def cases(conv) -> List[Case]:
        add = case_builder(op, map_sample, salt, conv)
        out = add.cases

        add("golden-small", "golden", "b=1, l=4, h=2, d=3", 1, l=4, b=1, h=2, d=3)
        add("edge-d1", "edge", "d = 1 (DPFP: the smallest d for nu)", 2, d=1)
        add("edge-L1", "edge", "L = 1", 3, l=1)
        add("edge-L0", "edge", "L = 0: empty output", 4, l=0)
        add("edge-very-negative", "edge", "x in [-40, -10]: elu(x) + 1 = exp(x) is tiny (expm1 + 1 cancels)", 5,
            l=3, d=4)
        out[-1].inputs["x"] = -10.0 - 30.0 * np.abs(out[-1].inputs["x"]) / (1.0 + np.abs(out[-1].inputs["x"]))
        add("edge-zeros", "edge", "x with exact zeros (relu(0) = 0, elu(0) + 1 = 1)", 6, l=3, d=4)
        out[-1].inputs["x"][..., ::2] = 0.0
        return out

    return cases


register_op(OpSpec(
    name=OP_DPFP,
    summary="DPFP-nu (deterministic parameter-free projection): r = [relu(x), relu(-x)], "
            "phi_((j-1) 2d + i) = r_i r_((i - j) mod 2d), j = 1..nu",
    inputs=(Arg("x", "b l h d"),),
    outputs=(Arg("phi", "b l h m", "m = 2 d nu"),),
    conventions=(Convention("nu", 1, "the degree: nu rolled copies (Schlag et al. 2021)", (1, 2, 3)),),
    oracle=dpfp_oracle,
    bounds=dpfp_bounds,
    cases=_map_cases(OP_DPFP, 71),
    sample=map_sample,
    strategy=_map_strategy,
    reference=dpfp_reference,
    probes=(causality_probe({"x": "l"}, {"phi": "l"}, name="row_locality", local=True,
                            sampler=lambda rng, conv: map_sample(rng, conv, l=6)),
            argument_paths_probe(sampler=lambda rng, conv: map_sample(rng, conv, l=3))),
    domain=op_domain(length=("l", "l"), input_dim=("d", "d")),
    module=__name__,
    notes="oracle: oracles.attention.features_mpmath (dpfp); bound: one product per feature",
))


def elu_oracle(inp, conv):
    return {"phi": features_mpmath(inp["x"], "elu1")}


def elu_bounds(inp, out, conv, dtype):
    r"""``elu(a) + 1``: for ``a >= 0`` ``a + 1`` (one rounding, ``u |phi|``); for ``a < 0`` either ``exp(a)`` (one ulp,
    ``2u |phi|``) or ``expm1(a) + 1`` as ``F.elu(x) + 1`` computes it (``expm1`` within one ulp, ``2u |elu(a)|``, then
    the sum, ``u |phi|``): both within ``gamma_3 (|phi| + |elu(a)|)`` -- the computation on absolute values of
    ``elu(a) + 1``.  For very negative ``a`` the second form cancels (``|elu(a)| ~ 1 >> phi``), and the bound says so."""
    phi = np.asarray(out["phi"], dtype=np.float64)
    return {"phi": componentwise_bound(np.abs(phi) + np.abs(phi - 1.0), 3, dtype, oracle_dtype=None,
                                       what="elu(a) + 1: a + 1, exp(a) or expm1(a) + 1")}


def elu_reference(inp, conv):
    from refimpl.attention.features import elu_plus_one

    return {"phi": elu_plus_one(inp["x"])}


register_op(OpSpec(
    name=OP_ELU,
    summary="the elu + 1 feature map (Katharopoulos et al. 2020): phi(a) = a + 1 (a >= 0), exp(a) (a < 0)",
    inputs=(Arg("x", "b l h d"),),
    outputs=(Arg("phi", "b l h d"),),
    conventions=(),
    oracle=elu_oracle,
    bounds=elu_bounds,
    cases=_map_cases(OP_ELU, 73),
    sample=map_sample,
    strategy=_map_strategy,
    reference=elu_reference,
    probes=(causality_probe({"x": "l"}, {"phi": "l"}, name="row_locality", local=True,
                            sampler=lambda rng, conv: map_sample(rng, conv, l=6)),),
    domain=op_domain(length=("l", "l"), input_dim=("d", "d")),
    module=__name__,
    notes="oracle: oracles.attention.features_mpmath (elu1); bound: gamma_3 (|phi| + |elu(x)|)",
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_DPFP,
    doc="refimpl.attention.feature_map(x, 'dpfp', nu=) (refimpl.attention.features.dpfp(x, nu) and the Numba kernel "
        "refimpl.attention.features.numba:dpfp take x, nu)",
    args=(In("x"), Const("dpfp")),
    kwargs={"nu": Conv(lambda c: int(c["nu"]))},
    outputs=(Out("phi", None),),
))

register_adapter(Adapter(
    name="dpfp",
    op=OP_DPFP,
    doc="the paper's interface dpfp(x, nu=1) (Schlag et al. 2021's listing; DPFP-pytorch, labml's DPFP.dpfp): "
        "x (..., d) with the last axis the features, nu as a keyword",
    args=(In("x"),),
    kwargs={"nu": Conv(lambda c: int(c["nu"]))},
    outputs=(Out("phi", None),),
))

register_adapter(Adapter(
    name="refimpl",
    op=OP_ELU,
    doc="refimpl.attention.feature_map(x, 'elu_plus_one') (refimpl.attention.features.elu_plus_one(x) and the Numba "
        "kernel refimpl.attention.features.numba:elu_plus_one take x)",
    args=(In("x"), Const("elu_plus_one")),
    outputs=(Out("phi", None),),
))
