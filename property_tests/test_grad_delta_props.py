"""Properties of the delta rule's backward: the adjoint identity against the float64 oracle forward, the views and
backends agree with each other, the chunk size does not change the gradient, and the Numba chunked backward kernel
matches the NumPy adjoints for every size it accepts.

* adjoint identity ``<J v, w> = <v, J^T w>``: :func:`oracles.gradients.fd_jvp` of the float64 transition-matrix
  forward (:func:`oracles.delta_grad_forward.delta_rule_float64`) along a random tangent of every input, against
  the pairing of refimpl's VJP with the tangent, within the differences' error plus ``sum |v| bound``;
* the Numba ``chunked`` backward (float64 and float32) == the NumPy adjoints (the reverse scan, float64) at L = 0, 1,
  odd, chunk - 1, chunk, chunk + 1 and long (the last chunk short), plain and gated, with and without the initial state,
  the final state's cotangent and the normalizations; within the derived bound of both backwards
  (``componentwise_bound`` of the adjoint on absolute values at :func:`oracles.verify.grad_delta.grad_depth`, in
  the kernel's dtype plus in float64);
* ``recurrent`` == ``chunked`` at any chunk size (1 .. L + 2) within the sum of both views' float64 bounds.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oracles.delta_grad_forward import delta_rule_adjoint_magnitude, delta_rule_float64
from oracles.gradients import fd_jvp
from oracles.tolerance import assert_within, componentwise_bound
from oracles.verify.grad_delta import grad_depth
from refimpl.attention.delta import delta_rule_vjp

CHUNK = 4
LENGTHS = (0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 3, 37)
NAMES = {"alpha": "decay", "S0": "initial_state"}


@st.composite
def cases(draw, lengths=LENGTHS, small=False):
    l = draw(st.sampled_from(lengths))
    b, h = (1, 1) if small else (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    n, p = draw(st.integers(1, 3 if small else 4)), draw(st.integers(1, 3))
    norms = draw(st.sampled_from([(None, None), ("l2", "l2"), ("sum", None), (None, "sum")]))
    gated, state, final = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if norms[0] == "sum":
        k = rng.uniform(0.1, 1.0, (b, l, h, n))
    else:
        k = rng.standard_normal((b, l, h, n))
        if norms[0] is None:
            k = k / np.linalg.norm(k, axis=-1, keepdims=True) * rng.uniform(0.3, 1.0, (b, l, h, 1))
    q = rng.uniform(0.1, 1.0, (b, l, h, n)) if norms[1] == "sum" else rng.standard_normal((b, l, h, n))
    x = {"q": q, "k": k, "v": rng.standard_normal((b, l, h, p)), "beta": rng.uniform(0.05, 0.95, (b, l, h))}
    if gated:
        x["alpha"] = rng.uniform(0.5, 1.0, (b, l, h))
    if state:
        x["S0"] = rng.standard_normal((b, h, p, n))
    w = {"o": rng.standard_normal((b, l, h, p))}
    if final:
        w["S_last"] = rng.standard_normal((b, h, p, n))
    opts = dict(key_norm=norms[0], query_norm=norms[1], scale=draw(st.sampled_from([1.0, 0.5])))
    return x, w, opts, rng


def vjp(x, w, opts, view, backend="numpy", dtype=np.float64, chunk=CHUNK):
    c = {nm: a.astype(dtype) for nm, a in x.items()}
    kw = dict(chunk=chunk) if view == "chunked" else {}
    g = delta_rule_vjp(c["q"], c["k"], c["v"], c["beta"], do=w["o"].astype(dtype),
                       d_final_state=None if "S_last" not in w else w["S_last"].astype(dtype), decay=c.get("alpha"),
                       initial_state=c.get("S0"), view=view, backend=backend, **kw, **opts)
    return {nm: g[NAMES.get(nm, nm)] for nm in x}


def bounds(x, w, opts, view, dtype, chunk=CHUNK):
    b, l, h, n = x["k"].shape
    M = delta_rule_adjoint_magnitude(x["q"], x["k"], x["v"], x["beta"], x.get("alpha"), x.get("S0"), w["o"],
                                     w.get("S_last"), **opts, chunk=chunk if view == "chunked" else None)
    D = grad_depth(l, n, x["v"].shape[3], view, chunk)
    return {nm: componentwise_bound(M[nm], D, dtype, oracle_dtype=None, what=f"grad {nm} ({view})") for nm in x}


@settings(max_examples=15, deadline=None)
@given(cases(lengths=(0, 1, 3, 5), small=True))
def test_adjoint_identity_against_the_oracle_forward(case):
    x, w, opts, rng = case
    tangent = {nm: rng.standard_normal(a.shape) for nm, a in x.items()}

    def f(a):
        return delta_rule_float64(a["q"], a["k"], a["v"], a["beta"], a.get("alpha"), a.get("S0"), **opts)

    jv, err = fd_jvp(f, x, tangent, w)
    for view in ("recurrent", "chunked"):
        g = vjp(x, w, opts, view)
        bd = bounds(x, w, opts, view, np.float64)
        ours = sum(float(np.sum(tangent[nm] * g[nm])) for nm in x)
        # |<v, g> - <v, J^T w>| <= sum |v| |g - J^T w| <= sum |v| bound; plus the differences' own error
        lim = err + sum(float(np.sum(np.abs(tangent[nm]) * bd[nm].values)) for nm in x)
        assert abs(ours - jv) <= lim, (view, ours, jv, lim)


@settings(max_examples=15, deadline=None)
@given(cases())
def test_numba_backward_kernel_matches_the_numpy_adjoints(case):
    """Against the NumPy reverse scan (``recurrent``: no per-chunk LAPACK calls, fast at every L; the chunked NumPy
    view is tied to it by the chunk-size property below), within the kernel's chunked bound plus the reverse scan's."""
    x, w, opts, _ = case
    for dt in (np.float64, np.float32):
        x = {nm: a.astype(dt).astype(np.float64) for nm, a in x.items()}
        w = {nm: a.astype(dt).astype(np.float64) for nm, a in w.items()}
        ref = vjp(x, w, opts, "recurrent")
        b64 = bounds(x, w, opts, "recurrent", np.float64)
        g = vjp(x, w, opts, "chunked", "numba", dt)
        bd = bounds(x, w, opts, "chunked", dt)
        for nm in x:
            assert g[nm].dtype == dt and g[nm].shape == x[nm].shape
            assert_within(g[nm], ref[nm], bd[nm] + b64[nm], dtype=dt, context=f"numba {np.dtype(dt).name} d{nm}")


@settings(max_examples=10, deadline=None)
@given(cases(), st.integers(1, 40))
def test_the_chunk_size_does_not_change_the_gradient(case, chunk):
    x, w, opts, _ = case
    l = x["k"].shape[1]
    chunk = 1 + (chunk - 1) % (l + 2)
    ref = vjp(x, w, opts, "recurrent")
    g = vjp(x, w, opts, "chunked", chunk=chunk)
    br = bounds(x, w, opts, "recurrent", np.float64)
    bc = bounds(x, w, opts, "chunked", np.float64, chunk)
    for nm in x:
        assert_within(g[nm], ref[nm], br[nm] + bc[nm], context=f"chunk {chunk} d{nm}")
