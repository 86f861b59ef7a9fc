r"""The tolerance model: every bound in the test suite and the report comes from here.

Derivation
==========
Floating-point arithmetic in a format with unit roundoff ``u = eps/2``
(``eps = np.finfo(dtype).eps``) satisfies ``fl(a op b) = (a op b)(1 + d)`` with
``|d| <= u`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
section 2.2).  Products of ``n`` such factors are bounded with

.. math::  \gamma_n = \frac{n u}{1 - n u},

(Higham Lemma 3.1).  Two consequences give every bound here.

1. **Sums, dot products, recurrences (componentwise).**  Recursive summation of
   ``x_1..x_n`` in any order has ``|fl(s) - s| <= gamma_{n-1} * sum |x_i|``;
   a dot product ``x.y`` has ``|err| <= gamma_n * |x|.|y|`` (Higham 3.1, 4.2).
   A linear recurrence ``h_t = a_t h_{t-1} + b_t`` unrolled over ``t`` steps is
   a sum of products of at most ``t + 1`` factors, so to first order
   ``|err(h_t)| <= gamma_{k t} * H_t`` where ``H_t`` is *the same recurrence
   run on absolute values* (``H_t = |a_t| H_{t-1} + |b_t|``) and ``k`` is the
   number of roundings per step.  Hence the recipe used throughout:
   **run the computation on absolute values to get a magnitude array ``M``,
   count the depth ``n`` of the longest chain of roundings that feeds one output,
   and bound the error by ``gamma_n(dtype) * M``** (:func:`componentwise_bound`).
   A complex multiplication has relative error at most ``sqrt(2) gamma_2``
   (Higham Lemma 3.5); for complex data callers pass ``complex_ops=True``,
   which scales ``u`` by 4 and so covers a complex multiply-add per step.

2. **Transforms and matrix functions (normwise).**  For the FFT, Higham
   Thm 24.2 gives ``||fl(Fx) - Fx||_2 <= c log2(n) u ||Fx||_2`` with
   ``c ~ 5`` for a radix-2 FFT with accurately computed twiddles;
   :func:`fft_convolution_bound` composes three transforms and a pointwise
   product.  For ``expm`` and solves we use ``forward <= cond * backward``
   with the condition number computed (``scipy.linalg.expm_cond``,
   ``np.linalg.cond``) and a backward error of ``n u`` per factorization /
   scaling-and-squaring step (:func:`conditioned_bound`).

Both sides of a comparison round: the candidate in its dtype and the oracle
in its own (float64, or mpmath).  Every bound adds the oracle's share.

An absolute floor covers underflow: each gradual-underflow rounding costs at
most ``tiny * u`` absolute, so ``depth * tiny`` bounds the total
(:func:`underflow_floor`).

Low-precision candidates
========================
For float16 / bfloat16 candidates the first-order analysis above is too
pessimistic to be useful and too subtle to be trusted, so the rule is the
**same-dtype naive baseline**: the candidate's error against the float64
oracle may be at most ``factor`` (:data:`LOWP_BASELINE_FACTOR` = 2) times the error of *our literal
reference run in the candidate's dtype*, plus a rounding floor of one
unit roundoff of the dtype times ``|oracle|`` (the error of merely storing
the exact answer in that dtype) (:func:`baseline_bound`).

Comparison record
=================
:func:`compare` returns a :class:`Comparison`: max abs error and its index,
max rel error and its index, the norm-wise relative error, ULP statistics in
the candidate's dtype, NaN/Inf where the oracle is finite, the worst ratio
error / bound, and pass/fail.  Inputs are compared elementwise against the
(broadcast) bound array.

Convention: the oracle must be computed *from the candidate's inputs exactly*
(cast up losslessly, e.g. float32 -> float64), so input rounding is not part
of the budget.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional

import numpy as np

__all__ = [
    "TRANSCENDENTAL_ULP",
    "TRANSCENDENTAL_U",
    "RICHARDSON_SAFETY",
    "LOWP_BASELINE_FACTOR",
    "unit_roundoff",
    "gamma",
    "Bound",
    "componentwise_bound",
    "normwise_bound",
    "conditioned_bound",
    "fft_convolution_bound",
    "baseline_bound",
    "underflow_floor",
    "Comparison",
    "compare",
    "assert_within",
]

_LOWP_EPS = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}

# ---------------------------------------------------------------------------------------------- policy constants
# The few numbers the bounds take from outside the rounding-error analysis, each with where it comes from.

#: The largest error, in ULPs of the result, of one NumPy elementwise transcendental (``exp``, ``expm1``,
#: ``log``, ``log1p``) that the bounds assume.  Source: NumPy's own accuracy contract, the maximum ULP error
#: its test suite validates for each ufunc and dtype (``numpy/_core/tests/data/umath-validation-set-*.csv``,
#: read by ``test_umath_accuracy.py``): float64 1 ULP for all four; float32 ``exp``/``expm1`` 3, ``log`` 4,
#: ``log1p`` 2.  The maximum, 4, covers every dtype (``tests/test_tolerance.py`` re-reads those files when the
#: installed NumPy ships them).  Our own float32 polynomial exp (:mod:`refimpl._fastmath`) is within it.
TRANSCENDENTAL_ULP = 4

#: :data:`TRANSCENDENTAL_ULP` as a relative error in units of ``u``: one ULP of a result ``y`` is at most
#: ``eps |y| = 2u |y|`` (the spacing at ``y`` is ``<= eps |y|`` for normal ``y``), so 4 ULP <= ``8u |y|``.
TRANSCENDENTAL_U = 2.0 * TRANSCENDENTAL_ULP

#: Multiplier of a Richardson error estimate (:func:`oracles.hippo.richardson_bound`).  Write the error at
#: step ``h`` as ``e_h = c_h - c = K h^p + R_h``.  The estimate ``E = (c_h - c_{h/2}) 2^p/(2^p - 1)`` is
#: ``e_h + (R_h - 2^p R_{h/2})/(2^p - 1)``, so if the remainder is at most a fraction ``rho`` of the leading
#: term at both steps, ``|E - e_h| <= 2 rho |K h^p|/(2^p - 1)`` while ``|e_h| >= (1 - rho) |K h^p|``; then
#: ``|e_h| <= 2 |E|`` as soon as ``rho <= (2^p - 1)/(2^p + 3)`` (1/5 for p = 1, 3/7 for p = 2).  That is the
#: asymptotic regime; the callers check it by the measured order of convergence (a necessary condition: the
#: error ratio of successive halvings within a quarter of an order of ``2^p``).
RICHARDSON_SAFETY = 2.0

#: The low-precision rule's multiple of our literal reference's error (:func:`baseline_bound`).  A policy, not a
#: rounding bound: a candidate in float16/bfloat16 may evaluate in another order and with another accumulator
#: layout than our reference, and its error is as large as ours up to that order's luck; 2 accepts "as accurate
#: as the naive same-dtype computation" and rejects anything systematically worse (a float16 accumulator where
#: float32 is expected already costs 2^13).
LOWP_BASELINE_FACTOR = 2.0


def _np_dtype(dtype) -> np.dtype:
    return np.dtype(dtype)


def eps(dtype) -> float:
    """Machine epsilon of ``dtype`` (the real part's, for complex; ml_dtypes' bfloat16 too)."""
    d = _np_dtype(dtype)
    if d.name in _LOWP_EPS:
        return _LOWP_EPS[d.name]
    try:
        return float(np.finfo(d).eps)
    except ValueError:
        import ml_dtypes  # noqa: F401  (registers finfo for its types)

        return float(ml_dtypes.finfo(d).eps)


def unit_roundoff(dtype) -> float:
    """``u = eps / 2``: the maximum relative error of one rounding to nearest."""
    return eps(dtype) / 2.0


def tiny(dtype) -> float:
    d = _np_dtype(dtype)
    try:
        return float(np.finfo(d).tiny)
    except ValueError:
        import ml_dtypes

        return float(ml_dtypes.finfo(d).tiny)


def gamma(n: float, dtype, *, complex_ops: bool = False) -> float:
    r"""``gamma_n = n u / (1 - n u)`` (Higham Lemma 3.1); ``inf`` once ``n u >= 1``.

    With ``complex_ops=True`` the unit roundoff is multiplied by 4, which covers
    a complex multiply-add (``sqrt(2) * gamma_2`` per multiply, Higham Lemma 3.5).
    """
    u = unit_roundoff(dtype) * (4.0 if complex_ops else 1.0)
    nu = float(n) * u
    if nu >= 1.0:
        return math.inf
    return nu / (1.0 - nu)


def underflow_floor(depth: float, dtype) -> float:
    """Absolute error that gradual underflow can add along ``depth`` roundings."""
    return float(depth) * tiny(dtype)


@dataclasses.dataclass
class Bound:
    """An elementwise absolute error bound and a sentence saying where it comes from."""

    values: Any  # ndarray or float, broadcastable against the compared arrays
    source: str

    def __add__(self, other: "Bound") -> "Bound":
        return Bound(np.asarray(self.values) + np.asarray(other.values), f"{self.source} + {other.source}")

    def scaled(self, factor: float, why: str) -> "Bound":
        return Bound(np.asarray(self.values) * factor, f"{factor} x ({self.source}) [{why}]")

    def max(self) -> float:
        return float(np.max(self.values)) if np.size(self.values) else 0.0


def componentwise_bound(
    magnitude,
    depth: float,
    dtype,
    *,
    oracle_dtype=np.float64,
    oracle_depth: Optional[float] = None,
    complex_ops: bool = False,
    what: str = "",
) -> Bound:
    """``gamma_depth(dtype) * M + gamma_depth'(oracle) * M + underflow floor``.

    Parameters
    ----------
    magnitude : array
        ``M``: the same computation run on absolute values of its inputs
        (for a sum: ``sum |x_i|``; for a recurrence: the recurrence on ``|a|, |b|``).
    depth : float
        The longest chain of roundings feeding one output, counted from the
        algorithm (e.g. ``L * (N + 2)`` for an ``N``-state recurrence of length ``L``).
    dtype : the candidate's working dtype.
    oracle_dtype : the oracle's working dtype (``None`` for an exact/mpmath oracle).
    oracle_depth : depth of the oracle's own computation (default: ``depth``).
    """
    M = np.abs(np.asarray(magnitude, dtype=np.float64))
    g = gamma(depth, dtype, complex_ops=complex_ops)
    od = depth if oracle_depth is None else oracle_depth
    go = 0.0 if oracle_dtype is None else gamma(od, oracle_dtype, complex_ops=complex_ops)
    floor = underflow_floor(depth, dtype)
    src = (
        f"componentwise: gamma_{depth:g}({_np_dtype(dtype).name})"
        + (f" + gamma_{od:g}({_np_dtype(oracle_dtype).name})" if oracle_dtype is not None else "")
        + " times the computation on |inputs|"
        + (" [complex ops: 4u]" if complex_ops else "")
        + (f" ({what})" if what else "")
    )
    return Bound((g + go) * M + floor, src)


def normwise_bound(value: float, source: str) -> Bound:
    """A scalar absolute bound applying to every element (from a norm argument)."""
    return Bound(float(value), source)


def conditioned_bound(cond: float, scale, n: int, dtype, *, what: str = "", oracle_dtype=np.float64) -> Bound:
    """Forward error <= condition number x backward error, for both sides.

    ``scale`` is the norm (or elementwise magnitude) of the exact result; the
    backward error of a backward-stable algorithm of dimension ``n`` is taken as
    ``gamma_n`` (e.g. LU solve, Pade scaling-and-squaring for expm).
    """
    g = gamma(n, dtype) + (0.0 if oracle_dtype is None else gamma(n, oracle_dtype))
    vals = float(cond) * g * np.abs(np.asarray(scale, dtype=np.float64)) + underflow_floor(n, dtype)
    return Bound(vals, f"conditioned: cond={cond:.3g} x gamma_{n} x |result| ({what})")


def fft_convolution_bound(kernel, x, n_fft: int, dtype, *, axis: int = -1) -> Bound:
    r"""Absolute bound on each output of ``irfft(rfft(k) * rfft(x))``.

    With the unitary DFT ``F`` (norm preserving), ``y = sqrt(n) F^* (F k .* F x)``.
    Each transform adds a 2-norm relative error ``eta = 5 log2(n) u`` (Higham
    Thm 24.2, radix-2 with accurate twiddles; pocketfft's mixed radix is
    within this).  The spectrum of ``k`` is bounded by ``||k||_1 <= sqrt(n)||k||_2``.
    Summing the three transform errors and the pointwise product's rounding,

    ``||dy||_2 <= (3 eta + 2u) sqrt(n) ||k||_2 ||x||_2``,

    which bounds every entry.  Evaluated per slice along ``axis``.  The oracle
    (a direct float64 sum) contributes ``gamma_n(float64) |k|*|x|``, which is
    dominated by this bound and included.
    """
    k = np.abs(np.asarray(kernel))
    xv = np.abs(np.asarray(x))
    n = max(int(n_fft), 2)
    u = unit_roundoff(dtype)
    eta = 5.0 * math.log2(n) * u
    coeff = (3.0 * eta + 2.0 * u + gamma(n, np.float64)) * math.sqrt(n)
    nk = np.sqrt(np.sum(k.astype(np.float64) ** 2, axis=axis, keepdims=True))
    nx = np.sqrt(np.sum(xv.astype(np.float64) ** 2, axis=axis, keepdims=True))
    return Bound(coeff * nk * nx + underflow_floor(n, dtype), f"FFT convolution: (15 log2(n) + 2) u sqrt(n) ||k||_2 ||x||_2 with n={n} (Higham Thm 24.2)")


def baseline_bound(reference_in_dtype, oracle, dtype, *, factor: float = LOWP_BASELINE_FACTOR, magnitude=None) -> Bound:
    """The same-dtype naive baseline rule for low-precision candidates.

    The baseline error is our literal reference run in ``dtype``, measured against the
    float64 oracle *over the whole array* (an elementwise comparison would be meaningless:
    at some entries the reference is exact by luck, and a different but equally good
    evaluation order is not).  With ``e = max_i |ref_i - oracle_i| / M_i``:

    ``bound_i = factor * e * M_i + u(dtype) * |oracle_i| + tiny``

    where ``M`` is ``magnitude`` (the computation on absolute values, when the caller has
    it: errors then scale with each entry's own magnitude) or, by default, the constant
    ``max |oracle|`` (a normwise rule: ``factor`` times the reference's max error).  The
    ``u |oracle|`` term is the error of merely storing the exact answer in ``dtype``.
    """
    is_c = np.iscomplexobj(oracle) or np.iscomplexobj(reference_in_dtype)
    ref = np.asarray(reference_in_dtype).astype(np.complex128 if is_c else np.float64)
    o = np.asarray(oracle).astype(np.complex128 if is_c else np.float64)
    u = unit_roundoff(dtype)
    if o.size == 0:
        return Bound(0.0, "baseline: empty")
    err = np.abs(ref - o)
    if magnitude is None:
        M = np.full(o.shape, float(np.max(np.abs(o))) if np.isfinite(o).all() else 1.0)
        how = "max|ref - oracle|"
    else:
        M = np.broadcast_to(np.abs(np.asarray(magnitude, dtype=np.float64)), o.shape)
        how = "max(|ref - oracle| / M) M"
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(M > 0, err / M, np.where(err > 0, np.inf, 0.0))
    e = float(np.max(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else 0.0
    return Bound(factor * e * M + u * np.abs(o) + tiny(dtype),
                 f"baseline: {factor} x {how} of our reference in {_np_dtype(dtype).name} + u |oracle|")


@dataclasses.dataclass
class Comparison:
    """The comparison record of a candidate against an oracle under a bound."""

    passed: bool
    shape: tuple
    dtype: str
    max_abs_err: float
    max_abs_index: Optional[tuple]
    max_rel_err: float
    max_rel_index: Optional[tuple]
    normwise_rel_err: float
    ulp_max: float
    ulp_median: float
    bound: float  # the bound at the worst (largest err/bound) element
    bound_max: float
    worst_ratio: float  # max err / bound; <= 1 passes
    worst_index: Optional[tuple]
    nonfinite: int  # NaN/Inf in the candidate where the oracle is finite
    bound_source: str
    message: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("max_abs_index", "max_rel_index", "worst_index", "shape"):
            if d[k] is not None:
                d[k] = list(d[k])
        for k, v in list(d.items()):
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = repr(v)
        return d

    def summary(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return (
            f"{status}: max abs err {self.max_abs_err:.3e} at {self.max_abs_index}, "
            f"max rel err {self.max_rel_err:.3e} at {self.max_rel_index}, normwise rel {self.normwise_rel_err:.3e}, "
            f"ulp max {self.ulp_max:.3g} median {self.ulp_median:.3g}, worst err/bound {self.worst_ratio:.3g} "
            f"at {self.worst_index} (bound there {self.bound:.3e}; bound from {self.bound_source})"
            + (f"; {self.nonfinite} non-finite values where the oracle is finite" if self.nonfinite else "")
            + (f"; {self.message}" if self.message else "")
        )

    def __str__(self) -> str:
        return self.summary()

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _as_compare_array(a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind == "c":
        return arr.astype(np.complex128)
    return arr.astype(np.float64)


def compare(candidate, oracle, bound: Bound, *, dtype=None) -> Comparison:
    """Compare ``candidate`` to ``oracle`` elementwise under ``bound``.

    ``dtype`` is the candidate's dtype for the ULP statistics (default: the
    candidate array's dtype).  Shapes must match exactly.
    """
    cand_raw = np.asarray(candidate)
    dt = _np_dtype(dtype) if dtype is not None else cand_raw.dtype
    c = _as_compare_array(cand_raw)
    o = _as_compare_array(oracle)
    if c.shape != o.shape:
        return Comparison(
            passed=False, shape=tuple(c.shape), dtype=str(dt), max_abs_err=math.inf, max_abs_index=None,
            max_rel_err=math.inf, max_rel_index=None, normwise_rel_err=math.inf, ulp_max=math.inf,
            ulp_median=math.inf, bound=0.0, bound_max=bound.max(), worst_ratio=math.inf, worst_index=None,
            nonfinite=0, bound_source=bound.source,
            message=f"shape mismatch: candidate {c.shape} vs oracle {o.shape}",
        )
    b = np.broadcast_to(np.asarray(bound.values, dtype=np.float64), o.shape)
    if o.size == 0:
        return Comparison(True, tuple(o.shape), str(dt), 0.0, None, 0.0, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, 0,
                          bound.source, "empty arrays")
    ofin = np.isfinite(o)
    cfin = np.isfinite(c)
    nonfinite = int(np.sum(ofin & ~cfin))
    # Non-finite oracle entries must be matched exactly (same inf, or both NaN).
    mism_nf = int(np.sum(~ofin & ~((c == o) | (np.isnan(c) & np.isnan(o)))))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(ofin & cfin, np.abs(c - o), np.where(ofin, np.inf, 0.0))
    absmax_i = np.unravel_index(int(np.argmax(err)), err.shape)
    denom = np.abs(o)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, err / denom, np.where(err > 0, np.inf, 0.0))
        ratio = np.where(b > 0, err / b, np.where(err > 0, np.inf, 0.0))
    relmax_i = np.unravel_index(int(np.argmax(rel)), rel.shape)
    worst_i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    on = float(np.linalg.norm(o[ofin])) if ofin.any() else 0.0
    en = float(np.linalg.norm(err[np.isfinite(err)])) if np.isfinite(err).any() else 0.0
    normrel = en / on if on > 0 else (0.0 if en == 0 else math.inf)
    # ULPs in the candidate's dtype, measured at the oracle's magnitude.
    try:
        realdt = np.finfo(dt).dtype if dt.kind in "fc" else None
    except ValueError:
        realdt = None
    if realdt is not None:
        spacing = np.spacing(np.abs(o.real if o.dtype.kind == "c" else o).astype(realdt)).astype(np.float64)
        spacing = np.maximum(spacing, np.finfo(realdt).smallest_subnormal)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            ulps = np.where(ofin & cfin, err / spacing, np.inf)
    else:
        e = eps(dt)
        with np.errstate(invalid="ignore", divide="ignore"):
            ulps = np.where(ofin & cfin, err / np.maximum(np.abs(o) * e, tiny(dt)), np.inf)
    passed = bool(np.all(err <= b)) and nonfinite == 0 and mism_nf == 0
    msg = ""
    if mism_nf:
        msg = f"{mism_nf} entries where the oracle is non-finite and the candidate differs"
    return Comparison(
        passed=passed,
        shape=tuple(int(s) for s in o.shape),
        dtype=str(dt),
        max_abs_err=float(err[absmax_i]),
        max_abs_index=tuple(int(i) for i in absmax_i),
        max_rel_err=float(rel[relmax_i]),
        max_rel_index=tuple(int(i) for i in relmax_i),
        normwise_rel_err=normrel,
        ulp_max=float(np.max(ulps)),
        ulp_median=float(np.median(ulps)),
        bound=float(b[worst_i]),
        bound_max=float(np.max(b)),
        worst_ratio=float(ratio[worst_i]),
        worst_index=tuple(int(i) for i in worst_i),
        nonfinite=nonfinite,
        bound_source=bound.source,
        message=msg,
    )


def assert_within(candidate, oracle, bound: Bound, *, dtype=None, context: str = "") -> Comparison:
    """``compare`` and raise ``AssertionError`` with the full record if it fails."""
    cmp = compare(candidate, oracle, bound, dtype=dtype)
    if not cmp.passed:
        raise AssertionError((context + ": " if context else "") + cmp.summary())
    return cmp
