"""The selective scan's backward pass (refimpl.ssm.selective.backward / numba_backward) against independent ground
truth: Richardson central differences (oracles.gradients.fd_vjp) of the float64 banded-solve forward
(oracles.selective.s6_solve), mpmath differences of a 30-digit mpmath forward on a tiny case, the views and backends against each other, and the conventions (complex A: dL/dRe + i dL/dIm)."""
from __future__ import annotations

import numpy as np
import pytest

from oracles.gradients import fd_jvp, fd_vjp, mp_vjp
from oracles.selective import s6_solve
from oracles.selective_grad_forward import s6_vjp_bounds
from oracles.tolerance import Bound, compare, gamma
from refimpl.ssm.selective import selective_scan, selective_scan_vjp

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def problem(seed, *, L, b=1, d=2, n=2, cplx=False, B_layout="variable", C_layout="variable", softplus=True,
            options=True, g=2):
    rng = np.random.default_rng(seed)
    A = -np.exp(rng.uniform(-1, 1, (d, n)))
    if cplx:
        A = A + 1j * rng.uniform(-3, 3, (d, n))

    def bc(lay):
        X = {"fixed": lambda: rng.standard_normal((d, n)), "variable": lambda: rng.standard_normal((b, L, n)),
             "grouped": lambda: rng.standard_normal((b, L, g, n))}[lay]()
        return X + 1j * rng.standard_normal(X.shape) if cplx else X

    inp = {"u": rng.standard_normal((b, L, d)),
           "delta": rng.normal(-1.0, 1.0, (b, L, d)) if softplus else rng.uniform(0.05, 0.5, (b, L, d)),
           "A": A, "B": bc(B_layout), "C": bc(C_layout), "D": None, "z": None, "delta_bias": None,
           "initial_state": None}
    if options:
        inp.update(D=rng.standard_normal(d), z=rng.standard_normal((b, L, d)), delta_bias=rng.uniform(0, 0.3, d),
                   initial_state=rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0))
    cot = {"out": rng.standard_normal((b, L, d)),
           "final": rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)}
    return inp, cot


def oracle_forward(softplus, disc):
    def f(x):
        out, final = s6_solve(x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"),
                              delta_bias=x.get("delta_bias"), delta_softplus=softplus,
                              initial_state=x.get("initial_state"), discretization=disc)
        return {"out": out, "final": final}
    return f


def ours(inp, cot, softplus, disc, **kw):
    return selective_scan_vjp(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"],
                              dy=cot["out"], d_final_state=cot["final"], delta_bias=inp["delta_bias"],
                              delta_softplus=softplus, discretization=disc, initial_state=inp["initial_state"], **kw)


CASES = [
    # (id, L, problem kwargs, softplus, discretization)
    ("L0", 0, dict(), True, "mamba"),
    ("L1-fixed", 1, dict(B_layout="fixed", C_layout="fixed"), True, "mamba"),
    ("L5-complex-grouped", 5, dict(cplx=True, B_layout="grouped", C_layout="variable", d=4), True, "mamba"),
    ("L3-zoh-complex", 3, dict(cplx=True, B_layout="fixed", C_layout="grouped", d=4), False, "zoh"),
    ("L4-chunk-1-zoh-real", 4, dict(B_layout="grouped", C_layout="fixed", d=4), True, "zoh"),
    ("L6-chunk+1-no-options", 6, dict(options=False), False, "mamba"),
]
VIEWS = [("recurrent", "numpy", None), ("chunked", "numpy", 5), ("recurrent", "numba", None), ("chunked", "numba", 5)]


@pytest.mark.parametrize("cid,L,kw,softplus,disc", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_richardson_differences(cid, L, kw, softplus, disc):
    """Every view and backend within Bound(fd error + gamma_depth x the adjoint on |inputs|), elementwise."""
    inp, cot = problem(len(cid) + L, L=L, softplus=softplus, **kw)
    wrt = [k for k in NAMES if inp[k] is not None]
    r = fd_vjp(oracle_forward(softplus, disc), inp, cot, wrt)
    for view, backend, chunk in VIEWS:
        extra = {} if chunk is None else {"chunk": chunk}
        g = ours(inp, cot, softplus, disc, view=view, backend=backend, **extra)
        assert sorted(g) == sorted(wrt)
        bd = s6_vjp_bounds(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"], dy=cot["out"],
                           d_final_state=cot["final"], delta_bias=inp["delta_bias"], delta_softplus=softplus,
                           initial_state=inp["initial_state"], discretization=disc, dtype=np.float64,
                           view="chunked" if view == "chunked" else "recurrent", chunk=chunk)
        for k in wrt:
            assert g[k].shape == np.shape(inp[k]) and g[k].dtype == np.asarray(inp[k]).dtype, (k, g[k].dtype)
            # (every input float64/complex128 here: the working dtype is each input's own)
            bound = Bound(np.asarray(r.error[k]) + np.asarray(bd[k].values),
                          "Richardson error estimate + " + bd[k].source)
            res = compare(g[k], r.grad[k], bound)
            assert res.passed, (cid, view, backend, k, res)


def _our_bound(inp, cot, softplus, disc, dtype=np.float64):
    return s6_vjp_bounds(*(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z")), dy=cot["out"],
                         d_final_state=cot["final"], delta_bias=inp["delta_bias"], delta_softplus=softplus,
                         initial_state=inp["initial_state"], discretization=disc, dtype=dtype)


def test_complex_convention_is_dL_dRe_plus_i_dL_dIm():
    """One entry of a complex A moved along its real and its imaginary axis (fd_jvp, Richardson, with its error
    bound): our gradient is dL/dRe + i dL/dIm, within the differences' error plus our derived bound."""
    inp, cot = problem(7, L=3, cplx=True, options=True)
    g = ours(inp, cot, True, "mamba")
    b = _our_bound(inp, cot, True, "mamba")["A"]
    f = oracle_forward(True, "mamba")
    E = np.zeros_like(inp["A"])
    E[0, 1] = 1
    dre, ere = fd_jvp(f, inp, {"A": E}, cot)
    dim, eim = fd_jvp(f, inp, {"A": 1j * E}, cot)
    bound = float(np.asarray(b.values)[0, 1])
    assert abs(g["A"][0, 1].real - dre) <= ere + bound
    assert abs(g["A"][0, 1].imag - dim) <= eim + bound
    # the other convention (JAX's conjugate) is far outside it
    assert abs(g["A"][0, 1].imag + dim) > eim + bound


def test_mpmath_differences_tiny_case():
    """The mpmath forward (30 digits) differenced in mpmath (oracles.gradients.mp_vjp) on a tiny complex ZOH case:
    the float64 backward within its derived bound of the (float64-rounded, half an ulp) mpmath gradient."""
    inp, cot = problem(11, L=2, d=1, n=1, cplx=True, B_layout="fixed", C_layout="variable", softplus=True)
    wrt = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
    g_mp = mp_vjp(_mp_forward, inp, cot, wrt, dps=30)
    g = ours(inp, cot, True, "zoh")
    bd = _our_bound(inp, cot, True, "zoh")
    for k in wrt:
        ref = np.asarray(g_mp[k], dtype=np.asarray(g[k]).dtype)
        half_ulp = np.abs(ref) * np.finfo(np.float64).eps
        res = compare(g[k], ref, Bound(np.asarray(bd[k].values) + half_ulp,
                                       bd[k].source + " + the mpmath gradient's rounding to float64"))
        assert res.passed, (k, res.summary())


def _mp_forward(x):
    """S6 with ZOH and softplus on mpmath object arrays (one channel, one state; tiny cases)."""
    import mpmath

    u, delta, A, B, C, D, z, bias, h0 = (x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias",
                                                        "initial_state"))
    b, L, d = np.shape(u)
    out = np.empty((b, L, d), dtype=object)
    fin = np.empty((b, d, 1), dtype=object)
    for bi in range(b):
        h = mpmath.mpc(h0[bi, 0, 0])
        for t in range(L):
            xx = delta[bi, t, 0] + bias[0]
            Dt = xx if xx > 20 else mpmath.log(1 + mpmath.exp(xx))
            w = Dt * A[0, 0]
            ph = mpmath.expm1(w) / w
            h = mpmath.exp(w) * h + Dt * ph * B[0, 0] * u[bi, t, 0]
            y = 2 * mpmath.re(C[bi, t, 0] * h) + D[0] * u[bi, t, 0]
            zz = z[bi, t, 0]
            out[bi, t, 0] = y * zz / (1 + mpmath.exp(-zz))
        fin[bi, 0, 0] = h
    return {"out": out, "final": fin}


def test_l0_gradients():
    """L = 0: the final state is the initial state, so d initial_state = d_final_state; every other gradient is
    empty or zero."""
    inp, cot = problem(3, L=0, cplx=True, B_layout="fixed", C_layout="fixed")
    g = ours(inp, cot, True, "mamba")
    assert np.array_equal(g["initial_state"], cot["final"])
    assert np.all(g["A"] == 0) and np.all(g["B"] == 0) and np.all(g["D"] == 0) and g["u"].shape == (1, 0, 2)


def test_float32_stays_float32_and_within_float32_bound():
    inp, cot = problem(5, L=7, d=4, B_layout="grouped", C_layout="fixed")
    inp32 = {k: None if v is None else np.asarray(v, np.float32) for k, v in inp.items()}
    cot32 = {k: np.asarray(v, np.float32) for k, v in cot.items()}
    g64 = ours({k: None if v is None else np.asarray(v, np.float64) for k, v in inp32.items()},
               {k: np.asarray(v, np.float64) for k, v in cot32.items()}, True, "mamba")
    for backend in ("numpy", "numba"):
        g = ours(inp32, cot32, True, "mamba", backend=backend)
        bd = s6_vjp_bounds(*(inp32[k] for k in ("u", "delta", "A", "B", "C", "D", "z")), dy=cot32["out"],
                           d_final_state=cot32["final"], delta_bias=inp32["delta_bias"], delta_softplus=True,
                           initial_state=inp32["initial_state"], dtype=np.float32)
        for k, v in g.items():
            assert v.dtype == np.float32, k
            # float64 of the same float32 inputs is within the float64 bound; the float32 one covers both
            assert compare(v, g64[k], bd[k]).passed, (backend, k)


def test_views_and_backends_agree_long():
    """L = 200 (chunk 64: three full chunks and a short one), complex A, grouped B: every pair within the chunked
    bound (the larger depth) of the other."""
    inp, cot = problem(9, L=200, d=4, n=3, cplx=True, B_layout="grouped", C_layout="variable")
    ref = ours(inp, cot, True, "mamba")
    bd = s6_vjp_bounds(*(inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z")), dy=cot["out"],
                       d_final_state=cot["final"], delta_bias=inp["delta_bias"], delta_softplus=True,
                       initial_state=inp["initial_state"], view="chunked", chunk=64)
    for view, backend in (("chunked", "numpy"), ("recurrent", "numba"), ("chunked", "numba")):
        g = ours(inp, cot, True, "mamba", view=view, backend=backend)
        for k in ref:
            assert compare(g[k], ref[k], Bound(2 * np.asarray(bd[k].values), "both within the bound")).passed, (view, k)


def test_adjoint_pairing_through_refimpls_own_forward():
    """<v, J^T w> of our VJP equals the directional derivative of refimpl's own forward (fd_jvp over
    refimpl.ssm.selective.selective_scan, with its error bound), every input moved at once."""
    inp, cot = problem(13, L=5, d=2, B_layout="variable", C_layout="fixed")
    g = ours(inp, cot, True, "mamba")
    rng = np.random.default_rng(0)
    v = {k: rng.standard_normal(np.shape(inp[k])) for k in NAMES}

    def f(x):
        out, fin = selective_scan(*(x[k] for k in ("u", "delta", "A", "B", "C", "D", "z")),
                                  delta_bias=x["delta_bias"], delta_softplus=True,
                                  initial_state=x["initial_state"], return_final_state=True)
        return {"out": out, "final": fin}

    jv, err = fd_jvp(f, inp, v, cot)
    bd = _our_bound(inp, cot, True, "mamba")
    terms = sum(int(np.size(v[k])) for k in NAMES)
    # our gradients' bound paired with |v|, and the pairing's own sum (gamma over its terms)
    ours_err = sum(float(np.sum(np.abs(v[k]) * (np.asarray(bd[k].values) + gamma(terms, np.float64) * np.abs(g[k]))))
                   for k in NAMES)
    assert abs(jv - sum(float(np.sum(v[k] * g[k])) for k in NAMES)) <= err + ours_err


def test_bad_cotangents():
    inp, cot = problem(1, L=5, d=3)
    with pytest.raises(ValueError, match=r"dy: expected shape"):
        ours(inp, dict(cot, out=cot["out"][:, :4]), True, "mamba")
    with pytest.raises(ValueError, match=r"d_final_state: expected 3 dimensions"):
        ours(inp, dict(cot, final=cot["final"][0]), True, "mamba")
    with pytest.raises(ValueError, match=r"d_final_state: expected shape"):
        ours(inp, dict(cot, final=cot["final"][..., :1]), True, "mamba")
    with pytest.raises(TypeError, match=r"d_final_state: a complex cotangent"):
        ours(inp, dict(cot, final=cot["final"] + 1j), True, "mamba")
    with pytest.raises(TypeError, match=r"dy"):
        ours(inp, dict(cot, out=cot["out"] + 1j), True, "mamba")
    with pytest.raises(TypeError):
        selective_scan_vjp(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"])  # dy is required
