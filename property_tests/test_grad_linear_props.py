"""Properties of the linear-attention backward: the views and backends agree with each other, and the Numba chunked
backward kernel matches the NumPy adjoints for every size it accepts.

* the Numba ``chunked`` backward (float64 and float32) == the NumPy ``chunked`` VJP (float64) at L = 0, 1, odd,
  chunk - 1, chunk, chunk + 1 and long (several chunks, the last one short), normalized and not, with and without
  the initial state and the final state's cotangent, ``eps`` added or clamped; within the derived bound of both
  backward passes (:func:`oracles.linear_grad_forward.linear_vjp_bound` in the kernel's dtype plus in float64);
* the NumPy views ``quadratic``, ``recurrent`` and ``chunked`` (any chunk) agree within twice the float64 bound;
* splitting the sequence: the gradient of the second half's initial state is what the first half's final-state
  cotangent must be (the reverse scan resumes across a split).
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.linear_grad_forward import linear_vjp_bound
from oracles.tolerance import assert_within
from refimpl.attention.linear import linear_attention_vjp

CHUNK = 8
LENGTHS = (0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 3, 61)


@st.composite
def vjp_cases(draw, lengths=LENGTHS):
    l = draw(st.sampled_from(lengths))
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n, p = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    normalize = draw(st.booleans())
    state, final = draw(st.booleans()), draw(st.booleans())
    eps_mode = draw(st.sampled_from(["add", "clamp"])) if normalize else "add"
    eps = draw(st.sampled_from([0.0, 0.25])) if normalize else 0.0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pos = lambda *s: rng.uniform(0.1, 1.5, size=s)  # noqa: E731
    inp = dict(phi_q=pos(b, l, h, n), phi_k=pos(b, l, h, n), v=rng.standard_normal((b, l, h, p)),
               do=rng.standard_normal((b, l, h, p)))
    S0 = rng.standard_normal((b, h, p, n)) if state else None
    z0 = pos(b, h, n) if state and normalize else None
    dS = rng.standard_normal((b, h, p, n)) if final else None
    dz = rng.standard_normal((b, h, n)) if final and normalize else None
    return inp, S0, z0, dS, dz, dict(normalize=normalize, eps=eps, eps_mode=eps_mode)


def _call(inp, S0, z0, dS, dz, opts, dtype=np.float64, **kw):
    c = lambda a: None if a is None else np.asarray(a, dtype=dtype)  # noqa: E731
    norm = opts["normalize"]
    state = None if S0 is None else ((c(S0), c(z0)) if norm else c(S0))
    dfs = None if dS is None else ((c(dS), c(dz)) if norm else c(dS))
    g = linear_attention_vjp(c(inp["phi_q"]), c(inp["phi_k"]), c(inp["v"]), do=c(inp["do"]), d_final_state=dfs,
                             initial_state=state, **opts, **kw)
    out = {k: g[k] for k in ("phi_q", "phi_k", "v")}
    if S0 is not None:
        if norm:
            out["S0"], out["u0"] = g["initial_state"]
        else:
            out["S0"] = g["initial_state"]
    return out


def _bounds(inp, S0, z0, dS, dz, opts, dtype):
    return linear_vjp_bound(inp["phi_q"], inp["phi_k"], inp["v"], S0, z0, inp["do"], dS, dz, causal=True,
                            dtype=dtype, **opts)


@settings(max_examples=20)
@given(vjp_cases(), st.sampled_from([np.float64, np.float32]))
def test_numba_chunked_backward_matches_numpy(case, dtype):
    inp, S0, z0, dS, dz, opts = case
    # both read the same values: the inputs rounded to the kernel's dtype (the float64 reference reads them exactly)
    r = lambda a: None if a is None else np.asarray(a, dtype=dtype).astype(np.float64)  # noqa: E731
    inp = {k: r(a) for k, a in inp.items()}
    S0, z0, dS, dz = r(S0), r(z0), r(dS), r(dz)
    ref = _call(inp, S0, z0, dS, dz, opts, view="chunked", chunk=CHUNK)
    got = _call(inp, S0, z0, dS, dz, opts, dtype=dtype, view="chunked", backend="numba", chunk=CHUNK)
    b_k = _bounds(inp, S0, z0, dS, dz, opts, dtype)
    b_64 = _bounds(inp, S0, z0, dS, dz, opts, np.float64)
    for k in ref:
        assert got[k].dtype == dtype
        assert_within(got[k], ref[k], b_k[k] + b_64[k], context=f"{k} numba {np.dtype(dtype).name} vs numpy")


@settings(max_examples=25)
@given(vjp_cases(), st.integers(1, 2 * CHUNK))
def test_numpy_views_agree(case, chunk):
    inp, S0, z0, dS, dz, opts = case
    quad = _call(inp, S0, z0, dS, dz, opts, view="quadratic")
    rec = _call(inp, S0, z0, dS, dz, opts, view="recurrent")
    chk = _call(inp, S0, z0, dS, dz, opts, view="chunked", chunk=chunk)
    b = _bounds(inp, S0, z0, dS, dz, opts, np.float64)
    for k in quad:
        two = b[k].scaled(2.0, "both views rounded in float64")
        assert_within(rec[k], quad[k], two, context=f"{k} recurrent vs quadratic")
        assert_within(chk[k], quad[k], two, context=f"{k} chunked({chunk}) vs quadratic")


@settings(max_examples=15)
@given(st.integers(0, 2**32 - 1), st.integers(0, 9), st.integers(0, 9))
def test_reverse_scan_resumes_across_a_split(seed, l1, l2):
    """Backward over [0, l1) with the final-state cotangent = the initial-state gradient of [l1, l1 + l2) equals
    the backward over the whole sequence."""
    from refimpl.attention.linear import linear_attention

    rng = np.random.default_rng(seed)
    b, h, n, p = 1, 2, 3, 2
    l = l1 + l2
    pq, pk = rng.uniform(0.1, 1.5, (b, l, h, n)), rng.uniform(0.1, 1.5, (b, l, h, n))
    v, do = rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h, p))
    whole = linear_attention_vjp(pq, pk, v, do=do, view="recurrent")
    _, mid = linear_attention(pq[:, :l1], pk[:, :l1], v[:, :l1], view="recurrent", return_final_state=True)
    second = linear_attention_vjp(pq[:, l1:], pk[:, l1:], v[:, l1:], do=do[:, l1:], initial_state=mid,
                                  view="recurrent")
    first = linear_attention_vjp(pq[:, :l1], pk[:, :l1], v[:, :l1], do=do[:, :l1],
                                 d_final_state=second["initial_state"], view="recurrent")
    b64 = linear_vjp_bound(pq, pk, v, None, None, do, None, None, causal=True, normalize=True, eps=0.0,
                           eps_mode="add", dtype=np.float64)
    for k in ("phi_q", "phi_k", "v"):
        joined = np.concatenate([first[k], second[k]], axis=1)
        assert_within(joined, whole[k], b64[k].scaled(3.0, "three backward passes, each within the bound"),
                      context=k)
