r"""S5 (Smith, Warrington, Linderman 2023): a MIMO diagonal SSM run by a parallel scan.

Continuous system (already diagonalized): ``x' = Lambda x + B~ u``, ``y = C~ x + D u`` with
``Lambda (p)`` complex, ``B~ (p h)``, ``C~ (h p)``, ``D (h)`` (feed-through per feature),
and one time step per *state*, ``dt (p)``.

Discretization, per state ``p`` (:mod:`refimpl.ssm.discretization.reference`, as ``p`` one-state systems):
* ``zoh``: ``Lambda_bar = exp(dt Lambda)``, ``B_bar = dt expm1(dt Lambda)/(dt Lambda) B~`` (= ``Lambda^{-1}(Lambda_bar - 1) B~``)
* ``bilinear``: ``Lambda_bar = (1 + dt/2 Lambda)/(1 - dt/2 Lambda)``, ``B_bar = dt B~/(1 - dt/2 Lambda)``

Recurrence ``x_t = Lambda_bar * x_{t-1} + B_bar u_t`` (``x_{-1} = 0``), output
``y_t = Re(C~ x_t) + D u_t`` (``output="re"``, full spectrum) or ``2 Re(C~ x_t) + D u_t``
(``output="2re"``, conjugate symmetry: one eigenvalue of each conjugate pair stored).
The output convention is a required argument.

Parallel scan: elements ``e_t = (a_t, b_t) = (Lambda_bar, B_bar u_t)``, binary operator
``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (``i`` before ``j``); the ``b`` part of the
inclusive prefix is ``x_t``.  :func:`associative_scan` is the work-efficient odd/even recursion
(pairs, recurse on the pair sums, fill in the even positions): ``O(L)`` work, ``O(log L)`` depth.

Bidirectional: a second scan over the reversed sequence gives ``x^b_t`` (the same ``Lambda_bar``,
``B_bar``), and ``y_t = Re(C~ x_t) + Re(C~_b x^b_t) + D u_t`` (times 2 for ``2re``).

HiPPO-N initialization (:func:`hippo_n_init`): the eigendecomposition of the normal part of
HiPPO-LegS, ``S = A_legs + P P^T = V Lambda V^*`` (unitary ``V``, S4 sign), with
``B~ = V^* B``, ``C~ = C V`` for real ``B (p h)``, ``C (h p)``; with ``conj_sym=True`` the eigenvalues
with ``Im > 0`` (and their eigenvectors) are kept.

Shapes: ``u (b l h)`` real; returns ``y (b l h)`` real.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_positive, result_dtype
from refimpl.ssm.discretization import reference as discretize
from refimpl.ssm.s4.reference import OUTPUTS

__all__ = ["discretize_s5", "associative_scan", "binary_op", "recurrent", "scan", "apply", "hippo_n_init", "init"]

VIEWS = ("recurrent", "scan", "numba")


def discretize_s5(Lambda, B_tilde, dt, method: str = "zoh") -> Tuple[np.ndarray, np.ndarray]:
    r"""``(Lambda_bar (p), B_bar (p h))`` with one step ``dt_p`` per state."""
    check_choice(method, "method", ("zoh", "bilinear"))
    Lambda = as_float_array(Lambda, "Lambda", ndim=1)
    p = Lambda.shape[0]
    B_tilde = as_float_array(B_tilde, "B_tilde", ndim=2)
    if B_tilde.shape[0] != p:
        raise ValueError(f"B_tilde: expected shape ({p}, h), got {B_tilde.shape}")
    dt = as_float_array(dt, "dt", ndim=(0, 1), allow_complex=False)
    check_positive(dt, "dt")
    if dt.ndim == 1 and dt.shape != (p,):
        raise ValueError(f"dt: expected a scalar or shape ({p},) (one step per state), got {dt.shape}")
    dt = np.broadcast_to(dt, (p,))
    fn = discretize.zoh if method == "zoh" else discretize.bilinear
    # p one-state systems: A (p 1) diagonal, B (p 1 h), dt (p) -> A_bar (p 1), B_bar (p 1 h)
    A_bar, B_bar = fn(Lambda[:, None], B_tilde[:, None, :], dt, diagonal=True)
    return A_bar[:, 0], B_bar[:, 0, :]


def binary_op(e_i, e_j):
    r"""``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (elementwise; ``i`` precedes ``j``)."""
    a_i, b_i = e_i
    a_j, b_j = e_j
    return a_j * a_i, a_j * b_i + b_j


def associative_scan(op: Callable, a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r"""Inclusive scan of the pairs ``(a_t, b_t)`` along axis 0 under ``op`` (odd/even recursion)."""
    L = a.shape[0]
    if L < 2:
        return a.copy(), b.copy()
    # reduce adjacent pairs: r_k = e_{2k} . e_{2k+1}
    ra, rb = op((a[0:-1:2], b[0:-1:2]), (a[1::2], b[1::2]))
    # prefixes at the odd positions 1, 3, 5, ...
    oa, ob = associative_scan(op, ra, rb)
    # even positions 2, 4, ...: prefix_{2k} = prefix_{2k-1} . e_{2k}
    n_even = (L + 1) // 2 - 1
    ea, eb = op((oa[:n_even], ob[:n_even]), (a[2::2], b[2::2]))
    out_a = np.empty_like(a)
    out_b = np.empty_like(b)
    out_a[0], out_b[0] = a[0], b[0]
    out_a[1::2], out_b[1::2] = oa, ob
    out_a[2::2], out_b[2::2] = ea, eb
    return out_a, out_b


def _validate(Lambda_bar, B_bar, C_tilde, D, u, C_back):
    Lambda_bar = as_float_array(Lambda_bar, "Lambda_bar", ndim=1)
    p = Lambda_bar.shape[0]
    u = as_float_array(u, "u", ndim=3, allow_complex=False)
    bsz, L, h = u.shape
    B_bar = as_float_array(B_bar, "B_bar", ndim=2)
    if B_bar.shape != (p, h):
        raise ValueError(f"B_bar: expected shape ({p}, {h}) from Lambda_bar and u, got {B_bar.shape}")
    C_tilde = as_float_array(C_tilde, "C_tilde", ndim=2)
    if C_tilde.shape != (h, p):
        raise ValueError(f"C_tilde: expected shape ({h}, {p}), got {C_tilde.shape}")
    if C_back is not None:
        C_back = as_float_array(C_back, "C_back", ndim=2)
        if C_back.shape != (h, p):
            raise ValueError(f"C_back: expected shape ({h}, {p}), got {C_back.shape}")
    if D is not None:
        D = as_float_array(D, "D", ndim=1, allow_complex=False)
        if D.shape != (h,):
            raise ValueError(f"D: expected shape ({h},), got {D.shape}")
    cdt = np.result_type(result_dtype(Lambda_bar, B_bar, C_tilde, D, u, C_back), np.complex64)
    cast = lambda x: None if x is None else x.astype(cdt, copy=False)  # noqa: E731
    return cast(Lambda_bar), cast(B_bar), cast(C_tilde), D, u, cast(C_back)


def _readout(X, C_tilde, output):
    # Re(C~ x_t), or 2 Re(C~ x_t) under conjugate symmetry
    y = np.einsum("hp,blp->blh", C_tilde, X).real
    return 2.0 * y if output == "2re" else y


def _states_recurrent(Lambda_bar, Bu):
    X = np.zeros_like(Bu)
    x = np.zeros((Bu.shape[0], Bu.shape[2]), dtype=Bu.dtype)
    for t in range(Bu.shape[1]):
        # x_t = Lambda_bar * x_{t-1} + B_bar u_t
        x = Lambda_bar * x + Bu[:, t]
        X[:, t] = x
    return X


def _states_scan(Lambda_bar, Bu):
    L = Bu.shape[1]
    # e_t = (Lambda_bar, B_bar u_t); scan along time (axis 0 after moving)
    a = np.broadcast_to(Lambda_bar, (L, Bu.shape[0], Bu.shape[2])).copy()
    _, xs = associative_scan(binary_op, a, np.moveaxis(Bu, 1, 0))
    return np.moveaxis(xs, 0, 1)


def _states_numba(Lambda_bar, Bu):
    from refimpl.ssm import structured_numba

    L = Bu.shape[1]
    return structured_numba.diag_scan(np.broadcast_to(Lambda_bar, (L, Lambda_bar.shape[0])), Bu)


def _run(states_fn, Lambda_bar, B_bar, C_tilde, D, u, output, C_back):
    check_choice(output, "output", OUTPUTS[1:])
    Lambda_bar, B_bar, C_tilde, D, u, C_back = _validate(Lambda_bar, B_bar, C_tilde, D, u, C_back)
    # B_bar u_t for every t: (b l p)
    Bu = np.einsum("ph,blh->blp", B_bar, u.astype(B_bar.dtype))
    X = states_fn(Lambda_bar, Bu)
    y = _readout(X, C_tilde, output)
    if C_back is not None:
        # backward direction: the same recurrence over the reversed sequence, reversed back
        Xb = states_fn(Lambda_bar, Bu[:, ::-1].copy())[:, ::-1]
        y = y + _readout(Xb, C_back, output)
    if D is not None:
        # + D u_t
        y = y + D * u
    return y.astype(np.finfo(Lambda_bar.dtype).dtype, copy=False)


def recurrent(Lambda_bar, B_bar, C_tilde, D, u, *, output: str, C_back=None) -> np.ndarray:
    """The literal recurrence (see module docstring); ``C_back`` enables the bidirectional model."""
    return _run(_states_recurrent, Lambda_bar, B_bar, C_tilde, D, u, output, C_back)


def scan(Lambda_bar, B_bar, C_tilde, D, u, *, output: str, C_back=None) -> np.ndarray:
    """The parallel-scan view with the S5 binary operator (:func:`associative_scan`)."""
    return _run(_states_scan, Lambda_bar, B_bar, C_tilde, D, u, output, C_back)


def apply(Lambda, B_tilde, C_tilde, D, dt, u, *, method: str = "zoh", output: str, view: str = "scan",
          C_back=None) -> np.ndarray:
    """Discretize (per-state ``dt``) and run one view: ``recurrent``, ``scan`` or ``numba``."""
    check_choice(view, "view", VIEWS)
    Lambda_bar, B_bar = discretize_s5(Lambda, B_tilde, dt, method)
    fn = {"recurrent": _states_recurrent, "scan": _states_scan, "numba": _states_numba}[view]
    return _run(fn, Lambda_bar, B_bar, C_tilde, D, u, output, C_back)


def hippo_n_init(P: int, *, conj_sym: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    r"""``(Lambda, V)``: HiPPO-N eigenvalues (``p``) and unitary eigenvectors (``P p``), ``p = P/2`` if conj_sym."""
    from refimpl.ssm.s4 import reference as s4

    P = check_int(P, "P", minimum=1)
    if conj_sym and P % 2:
        raise ValueError(f"P: conjugate symmetry keeps one eigenvalue per pair and needs an even P, got {P}")
    d = s4.nplr("legs", P)
    if not conj_sym:
        return d.Lambda.copy(), d.V.copy()
    keep = d.Lambda.imag > 0
    return d.Lambda[keep].copy(), d.V[:, keep].copy()


def init(P: int, H: int, *, conj_sym: bool = True, dt_min: float = 1e-3, dt_max: float = 1e-1,
         rng: Optional[np.random.Generator] = None):
    r"""S5 parameters ``(Lambda, B_tilde, C_tilde, D, dt)`` from HiPPO-N.

    ``B (P h)`` with entries ``N(0, 1/P)``, ``C (h P)`` with ``N(0, 1)`` entries -- both real --
    are projected: ``B~ = V^* B``, ``C~ = C V``; ``D ~ N(0, 1)``; ``log dt`` uniform on
    ``[log dt_min, log dt_max]`` per state.
    """
    H = check_int(H, "H", minimum=1)
    rng = np.random.default_rng(0) if rng is None else rng
    Lambda, V = hippo_n_init(P, conj_sym=conj_sym)
    B = rng.standard_normal((P, H)) / np.sqrt(P)
    C = rng.standard_normal((H, P))
    B_tilde = V.conj().T @ B
    C_tilde = C @ V
    D = rng.standard_normal(H)
    dt = np.exp(rng.uniform(np.log(dt_min), np.log(dt_max), size=Lambda.shape[0]))
    return Lambda, B_tilde, C_tilde, D, dt
