r"""S5 (Smith, Warrington, Linderman 2023): a MIMO diagonal SSM run by a parallel scan.

Continuous system (already diagonalized): ``x' = Lambda x + B~ u``, ``y = C~ x + D u`` with
``Lambda (n)`` complex, ``B~ (n d)``, ``C~ (d n)``, ``D (d)`` (feed-through per feature),
and one time step per *state*, ``dt (n)``.  ``d`` features, ``n`` states (shared by all features).

Discretization, per state (:mod:`refimpl.ssm.discretization`, as ``n`` one-state systems):
* ``zoh``: ``Lambda_bar = exp(dt Lambda)``, ``B_bar = dt expm1(dt Lambda)/(dt Lambda) B~`` (= ``Lambda^{-1}(Lambda_bar - 1) B~``)
* ``bilinear``: ``Lambda_bar = (1 + dt/2 Lambda)/(1 - dt/2 Lambda)``, ``B_bar = dt B~/(1 - dt/2 Lambda)``

Recurrence ``x_t = Lambda_bar * x_{t-1} + B_bar u_t`` (``x_{-1}`` = ``initial_state``, default 0), output
``y_t = Re(C~ x_t) + D u_t`` (``output="re"``, full spectrum) or ``2 Re(C~ x_t) + D u_t``
(``output="2re"``, conjugate symmetry: one eigenvalue of each conjugate pair stored).
The output convention is a required argument.

Parallel scan: elements ``e_t = (a_t, b_t) = (Lambda_bar, B_bar u_t)``, binary operator
``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (``i`` before ``j``); the ``b`` part of the
inclusive prefix is ``x_t``.  An initial state enters the first element: ``b_0 = Lambda_bar x_{-1} + B_bar u_0``.
:func:`associative_scan` is the work-efficient odd/even recursion (pairs, recurse on the pair sums, fill in
the even positions): ``O(L)`` work, ``O(log L)`` depth.

Bidirectional: a second scan over the reversed sequence gives ``x^b_t`` (the same ``Lambda_bar``,
``B_bar``), and ``y_t = Re(C~ x_t) + Re(C~_b x^b_t) + D u_t`` (times 2 for ``2re``); it has no single
state to resume, so ``initial_state`` / ``return_final_state`` are refused with ``C_back``.

HiPPO-N initialization (:func:`hippo_n_init`): the eigendecomposition of the normal part of
HiPPO-LegS, ``S = A_legs + P P^T = V Lambda V^*`` (unitary ``V``, S4 sign), with
``B~ = V^* B``, ``C~ = C V`` for real ``B (N d)``, ``C (d N)``; with ``conj_sym=True`` the eigenvalues
with ``Im > 0`` (and their eigenvectors) are kept.

Views (:func:`refimpl.ssm.s5.s5_ssm`): ``recurrent`` (:func:`recurrent`, the literal loop :func:`diag_scan`;
the Numba kernel :func:`refimpl.ssm.s5.numba.diag_scan` is its ``numba`` backend) and ``scan``
(:func:`scan`, :func:`associative_scan`).

Shapes: ``u (b l d)`` real -> ``y (b l d)`` real; state ``(b n)`` complex.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from refimpl._validate import (as_float_array, check_bool, check_choice, check_int, check_positive, check_shape,
                               result_dtype)
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.s4.reference import OUTPUTS

__all__ = ["discretize_s5", "associative_scan", "binary_op", "diag_scan", "recurrent", "scan", "hippo_n_init", "init",
           "REAL_OUTPUTS"]

REAL_OUTPUTS = OUTPUTS[1:]  # ("re", "2re")


def discretize_s5(Lambda, B_tilde, dt, method: str = "zoh") -> Tuple[np.ndarray, np.ndarray]:
    r"""``(Lambda_bar (n), B_bar (n d))`` with one step per state: ``Lambda (n)``, ``B_tilde (n d)``, ``dt`` scalar or ``(n,)``."""
    check_choice(method, "method", ("zoh", "bilinear"))
    Lambda = as_float_array(Lambda, "Lambda", ndim=1)
    n = Lambda.shape[0]
    B_tilde = as_float_array(B_tilde, "B_tilde", ndim=2)
    check_shape(B_tilde, "B_tilde", (n, None), f"(n d) with n = {n} from Lambda")
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False)
    check_positive(dt, "dt")
    if dt.ndim == 1:
        check_shape(dt, "dt", (n,), "(one step per state) or a scalar")
    dt = np.broadcast_to(dt, (n,))
    fn = discretize.zoh if method == "zoh" else discretize.bilinear
    # n one-state systems: A (n 1) diagonal, B (n 1 d), dt (n) -> A_bar (n 1), B_bar (n 1 d)
    A_bar, B_bar = fn(Lambda[:, None], B_tilde[:, None, :], dt, diagonal=True)
    return A_bar[:, 0], B_bar[:, 0, :]


def binary_op(e_i, e_j):
    r"""``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (elementwise; ``i`` precedes ``j``).

    ``e_i``, ``e_j``: pairs of floating arrays, all four of one shape (no broadcasting), finite."""
    (a_i, b_i), (a_j, b_j) = _element(e_i, "e_i"), _element(e_j, "e_j")
    if a_j.shape != a_i.shape:
        raise ValueError(f"e_j: expected arrays of shape {a_i.shape} (as e_i), got {a_j.shape}")
    return _binary_op((a_i, b_i), (a_j, b_j))


def _element(e, name: str):
    """An element ``(a, b)`` of the scan: two floating arrays of one shape."""
    if not isinstance(e, (tuple, list)) or len(e) != 2:
        what = f"a {type(e).__name__} of length {len(e)}" if isinstance(e, (tuple, list)) else type(e).__name__
        raise TypeError(f"{name}: expected a pair (a, b) of arrays, got {what}")
    a = as_float_array(e[0], f"{name}[0] (a)")
    b = as_float_array(e[1], f"{name}[1] (b)")
    if a.shape != b.shape:
        raise ValueError(f"{name}: expected a and b of one shape (elementwise), got {a.shape} and {b.shape}")
    return a, b


def _binary_op(e_i, e_j):
    """:func:`binary_op` without validation (the scans call it on validated slices)."""
    a_i, b_i = e_i
    a_j, b_j = e_j
    # (a_j a_i, a_j b_i + b_j)
    return a_j * a_i, a_j * b_i + b_j


def _scan_args(op, a, b):
    """``op`` callable; ``a (l ...)``, ``b (l ...)`` floating arrays with the same number of steps ``l`` (axis 0)."""
    if not callable(op):
        raise TypeError(f"op: expected a callable binary operator, got {type(op).__name__}")
    a = as_float_array(a, "a")
    b = as_float_array(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"a, b: expected arrays with a leading time axis, got shapes {a.shape} and {b.shape}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a: expected {b.shape[0]} steps along axis 0 (as b, shape {b.shape}), got shape {a.shape}")
    dtype = result_dtype(a, b)  # one working dtype: a float32 a never narrows a float64 b's products
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)


def associative_scan(op: Callable, a, b) -> Tuple[np.ndarray, np.ndarray]:
    r"""Inclusive scan of the pairs ``(a_t, b_t)`` along axis 0 under ``op`` (odd/even recursion).

    ``a (l ...)`` and ``b (l ...)`` hold one element per step ``t < l`` (the same ``l``; the trailing axes are
    the operator's business, e.g. ``a (l n n)`` matrices acting on ``b (l n)``).
    """
    a, b = _scan_args(op, a, b)
    return _odd_even_scan(op, a, b)


def _odd_even_scan(op, a, b):
    L = a.shape[0]
    if L < 2:
        return a.copy(), b.copy()
    # reduce adjacent pairs: r_k = e_{2k} . e_{2k+1}
    ra, rb = op((a[0:-1:2], b[0:-1:2]), (a[1::2], b[1::2]))
    # prefixes at the odd positions 1, 3, 5, ...
    oa, ob = _odd_even_scan(op, ra, rb)
    # even positions 2, 4, ...: prefix_{2k} = prefix_{2k-1} . e_{2k}
    n_even = (L + 1) // 2 - 1
    ea, eb = op((oa[:n_even], ob[:n_even]), (a[2::2], b[2::2]))
    out_a = np.empty_like(a)
    out_b = np.empty_like(b)
    out_a[0], out_b[0] = a[0], b[0]
    out_a[1::2], out_b[1::2] = oa, ob
    out_a[2::2], out_b[2::2] = ea, eb
    return out_a, out_b


def _diag_scan_args(a, b, initial_state):
    """``a (l n)`` or ``(n)`` (time-invariant), ``b (b l n)``, ``initial_state (b n)`` or None; floating, finite, exact
    shapes.  Returns ``(a (l n), b, s0)`` in the working complex dtype (shared by every backend)."""
    b = as_float_array(b, "b", ndim=3)
    bsz, L, n = b.shape
    a = as_float_array(a, "a", ndim=(1, 2))
    if a.ndim == 1:
        check_shape(a, "a", (n,), f"(n) or (l n) with (l, n) = {(L, n)} from b")
        a = np.broadcast_to(a, (L, n))
    check_shape(a, "a", (L, n), f"(l n) or (n) with (l, n) = {(L, n)} from b")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=2)
        check_shape(initial_state, "initial_state", (bsz, n), "(b n)", src="b, n from b")
    cdt = np.result_type(result_dtype(a, b, initial_state), np.complex64)
    s0 = np.zeros((bsz, n), dtype=cdt) if initial_state is None else initial_state.astype(cdt)
    return a.astype(cdt, copy=False), b.astype(cdt, copy=False), s0


def diag_scan(a, b, initial_state=None) -> np.ndarray:
    r"""All states of ``s_t = a_t * s_{t-1} + b_t`` (elementwise over ``n``; ``s_{-1}`` = ``initial_state``, default 0).

    ``a (l n)`` or ``(n)`` (time-invariant), ``b (b l n)``, ``initial_state (b n)`` -> ``(b l n)`` complex.
    """
    a, b, s = _diag_scan_args(a, b, initial_state)
    out = np.empty_like(b)
    for t in range(b.shape[1]):
        # s_t = a_t s_{t-1} + b_t
        s = a[t] * s + b[:, t]
        out[:, t] = s
    return out


def _s5_args(Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back, initial_state, return_final_state):
    """Validate and discretize: ``Lambda_bar (n)``, ``B_bar (n d)``, ``C~ (d n)``, ``D (d)``/None, ``u (b l d)``,
    ``C_back``, ``initial_state (b n)``/None in the working dtypes."""
    check_choice(output, "output", REAL_OUTPUTS)
    check_bool(return_final_state, "return_final_state")
    Lambda_bar, B_bar = discretize_s5(Lambda, B_tilde, dt, method)
    n = Lambda_bar.shape[0]
    u = as_float_array(u, "u", ndim=3, allow_complex=False)
    bsz, L, d = u.shape
    check_shape(B_bar, "B_tilde", (n, d), f"(n d) with d = {d} features from u")
    C_tilde = as_float_array(C_tilde, "C_tilde", ndim=2)
    check_shape(C_tilde, "C_tilde", (d, n), "(d n)", src="d from u, n from Lambda")
    if C_back is not None:
        C_back = as_float_array(C_back, "C_back", ndim=2)
        check_shape(C_back, "C_back", (d, n), "(d n)", src="d from u, n from Lambda")
        if initial_state is not None or return_final_state:
            raise ValueError("initial_state, return_final_state: the bidirectional model (C_back given) has no "
                             f"single state to resume; got initial_state={'an array' if initial_state is not None else None}, "
                             f"return_final_state={return_final_state}")
    if D is not None:
        D = as_float_array(D, "D", ndim=1, allow_complex=False)
        check_shape(D, "D", (d,), "(d)", src="d from u")
    if initial_state is not None:
        initial_state = as_float_array(initial_state, "initial_state", ndim=2)
        check_shape(initial_state, "initial_state", (bsz, n), "(b n)", src="b from u, n from Lambda")
    cdt = np.result_type(result_dtype(Lambda_bar, B_bar, C_tilde, D, u, C_back, initial_state), np.complex64)
    cast = lambda x: None if x is None else x.astype(cdt, copy=False)  # noqa: E731
    return cast(Lambda_bar), cast(B_bar), cast(C_tilde), D, u, cast(C_back), cast(initial_state)


def _readout(X, C_tilde, output):
    # Re(C~ x_t), or 2 Re(C~ x_t) under conjugate symmetry
    y = np.einsum("dn,bln->bld", C_tilde, X).real
    return 2.0 * y if output == "2re" else y


def _final_state(X, x0, Lambda_bar, bsz):
    """The state after the last step (``x_{l-1}``); ``initial_state`` (or zero) when ``l = 0``."""
    if X.shape[1]:
        return X[:, -1].copy()
    return np.zeros((bsz, Lambda_bar.shape[0]), dtype=X.dtype) if x0 is None else x0.copy()


def _s5(states, Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back, initial_state, return_final_state):
    """The S5 layer around one way of computing the states ``x_t`` (``states(Lambda_bar, B_bar u, x_{-1})``)."""
    Lambda_bar, B_bar, C_tilde, D, u, C_back, x0 = _s5_args(
        Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back, initial_state, return_final_state)
    # B_bar u_t for every t: (b l n)
    Bu = np.einsum("nd,bld->bln", B_bar, u.astype(B_bar.dtype))
    # x_t = Lambda_bar * x_{t-1} + B_bar u_t
    X = states(Lambda_bar, Bu, x0)
    # y_t = Re(C~ x_t)  (2 Re for 2re)
    y = _readout(X, C_tilde, output)
    if C_back is not None:
        # backward direction: the same recurrence over the reversed sequence, reversed back
        y = y + _readout(states(Lambda_bar, Bu[:, ::-1].copy(), None)[:, ::-1], C_back, output)
    if D is not None:
        # + D u_t
        y = y + D * u
    y = y.astype(np.finfo(Lambda_bar.dtype).dtype, copy=False)
    if return_final_state:
        return y, _final_state(X, x0, Lambda_bar, u.shape[0])
    return y


def _states_scan(Lambda_bar, Bu, x0):
    # e_t = (Lambda_bar, B_bar u_t), scanned along time; x_{-1} enters e_0: b_0 = Lambda_bar x_{-1} + B_bar u_0
    b = np.moveaxis(Bu, 1, 0).copy()
    if x0 is not None and b.shape[0]:
        b[0] = Lambda_bar * x0 + b[0]
    a = np.broadcast_to(Lambda_bar, b.shape).copy()
    _, xs = _odd_even_scan(_binary_op, a, b)
    return np.moveaxis(xs, 0, 1)


def recurrent(Lambda, B_tilde, C_tilde, D, dt, u, *, method: str = "zoh", output: str, C_back=None,
              initial_state=None, return_final_state: bool = False):
    r"""The ``recurrent`` view: ``x_t = Lambda_bar * x_{t-1} + B_bar u_t`` step by step, ``y_t = Re(C~ x_t) + D u_t``.

    Shapes: ``Lambda (n)``, ``B_tilde (n d)``, ``C_tilde (d n)``, ``D (d)`` or None, ``dt`` a scalar or ``(n,)``,
    ``u (b l d)`` -> ``y (b l d)``; ``initial_state (b n)``.  ``C_back (d n)`` enables the bidirectional model.
    ``return_final_state=True`` returns ``(y, x_{l-1})``.
    """
    return _s5(lambda a, Bu, x0: diag_scan(a, Bu, x0), Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back,
               initial_state, return_final_state)


def scan(Lambda, B_tilde, C_tilde, D, dt, u, *, method: str = "zoh", output: str, C_back=None,
         initial_state=None, return_final_state: bool = False):
    """The ``scan`` view: the same states by :func:`associative_scan` with the S5 :func:`binary_op`; as :func:`recurrent`."""
    return _s5(_states_scan, Lambda, B_tilde, C_tilde, D, dt, u, method, output, C_back, initial_state,
               return_final_state)


def hippo_n_init(N: int, *, conj_sym: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    r"""``(Lambda, V)``: HiPPO-N eigenvalues ``(n)`` and unitary eigenvectors ``(N n)``; ``n = N/2`` if ``conj_sym``."""
    from refimpl.ssm.s4 import reference as s4

    N = check_int(N, "N", minimum=1)
    conj_sym = check_bool(conj_sym, "conj_sym")
    if conj_sym and N % 2:
        raise ValueError(f"N: conjugate symmetry keeps one eigenvalue per pair and needs an even N, got {N}")
    d = s4.nplr("legs", N)
    if not conj_sym:
        return d.Lambda.copy(), d.V.copy()
    keep = d.Lambda.imag > 0
    return d.Lambda[keep].copy(), d.V[:, keep].copy()


def _step_range(dt_min, dt_max):
    """``0 < dt_min <= dt_max``, finite reals (``log dt`` is drawn uniformly between their logarithms)."""
    dt_min = float(as_float_array(dt_min, "dt_min", ndim=0, allow_complex=False))
    dt_max = float(as_float_array(dt_max, "dt_max", ndim=0, allow_complex=False))
    check_positive(dt_min, "dt_min")
    if not dt_max >= dt_min:
        raise ValueError(f"dt_max: expected a value >= dt_min = {dt_min}, got {dt_max}")
    return dt_min, dt_max


def init(N: int, d: int, *, conj_sym: bool = True, dt_min: float = 1e-3, dt_max: float = 1e-1,
         rng: Optional[np.random.Generator] = None):
    r"""S5 parameters ``(Lambda (n), B_tilde (n d), C_tilde (d n), D (d), dt (n))`` from HiPPO-N of size ``N``.

    ``B (N d)`` with entries ``N(0, 1/N)``, ``C (d N)`` with ``N(0, 1)`` entries -- both real --
    are projected: ``B~ = V^* B``, ``C~ = C V``; ``D ~ N(0, 1)``; ``log dt`` uniform on
    ``[log dt_min, log dt_max]`` per state (``0 < dt_min <= dt_max``).
    """
    d = check_int(d, "d", minimum=1)
    dt_min, dt_max = _step_range(dt_min, dt_max)
    rng = np.random.default_rng(0) if rng is None else rng
    Lambda, V = hippo_n_init(N, conj_sym=conj_sym)
    B = rng.standard_normal((N, d)) / np.sqrt(N)
    C = rng.standard_normal((d, N))
    B_tilde = V.conj().T @ B
    C_tilde = C @ V
    D = rng.standard_normal(d)
    dt = np.exp(rng.uniform(np.log(dt_min), np.log(dt_max), size=Lambda.shape[0]))
    return Lambda, B_tilde, C_tilde, D, dt
