r"""A vectorizable float32 ``exp`` for Numba kernels, with a proven error bound.

Numba has no vector math library here (it calls the scalar ``expf`` from libm, ~0.1-0.2 G/s per core;
SVML is not used by this Numba build), so a loop over ``math.exp`` does not vectorize.  This ``exp``
is plain arithmetic that LLVM vectorizes (~1 G/s per core measured):

* Range reduction (Cody-Waite): ``n = round(x log2 e)`` (round-to-nearest by adding and subtracting
  ``1.5 * 2^23``), ``r = (x - n ln2_hi) - n ln2_lo`` with
  ``ln2_hi = 355/512`` (9 significant bits, so ``n ln2_hi`` is exact for ``|n| <= 2^15`` and
  ``x - n ln2_hi`` is exact by Sterbenz's lemma), ``|r| <= ln2/2 + small``.
* ``e^r`` by its Taylor polynomial of degree 7 in Horner form:
  truncation ``|r|^8/8! e^{|r|} <= 5.2e-9 * 1.42`` relative.
* ``2^n`` built from its bits: ``(n + 127) << 23`` in an int32 array viewed as float32 (a separate,
  vectorizable loop: :func:`exp_parts` returns the polynomial and the bits; the caller multiplies).
  ``x`` is clamped to ``[-88, 89]`` first, so ``n`` lies in ``[-127, 128]``: ``n = -127`` gives the bit pattern of ``+0`` (results below
  ``2^-126.5``, i.e. ``x < -87.68``, flush to 0: absolute error ``< 2^-126``), ``n = 128`` gives ``+inf``
  (``x > 88.38``).

Error bound (relative, for ``-87.33 <= x <= 88.37``, proven, then tested on a dense sweep of float32
inputs in tests/test_fastmath.py): Horner's rule for a degree-``d`` polynomial has
``|p_hat - p| <= gamma_{2d} sum_k |c_k| |r|^k = gamma_{2d} e^{|r|}``-bounded, relative to
``p ~ e^r >= e^{-|r|}`` that is ``gamma_{14} e^{2|r|} <= 14u/(1-14u) * 2.0``; the reduced argument's
error (``n ln2_lo`` rounded, one subtraction, and ``ln2_hi + ln2_lo`` differing from ``ln2`` by
``< 2^-36`` times ``|n| <= 128``) changes ``e^r`` relatively by at most ``u (|r| + 128 |ln2_lo|) + 2^-29``;
the product with ``2^n`` is exact (normal results) and rounded once more by the caller (``u``).
Total: ``EXP_REL_ERR = 2 gamma_14 + 2u + 2^-28`` (``u = 2^-24``), about ``1.8e-6``.  In tests the
observed maximum is ~2 ulp (~1.3e-7); callers' bounds use ``EXP_REL_ERR`` (the proven value).
"""
from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["EXP_REL_ERR", "exp_parts", "exp_f32"]

_U32 = 2.0 ** -24
_G14 = 14 * _U32 / (1 - 14 * _U32)
#: proven bound on the relative error of the float32 exp (module docstring), for -87.33 <= x <= 88.37
EXP_REL_ERR = 2 * _G14 + 2 * _U32 + 2.0 ** -28

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # 355/512
_LN2_LO = np.float32(math.log(2.0) - 0.693359375)
_C2 = np.float32(1 / 2)
_C3 = np.float32(1 / 6)
_C4 = np.float32(1 / 24)
_C5 = np.float32(1 / 120)
_C6 = np.float32(1 / 720)
_C7 = np.float32(1 / 5040)
_ONE = np.float32(1.0)
_SHIFT = np.float32(12582912.0)  # 1.5 * 2^23
_XMIN = np.float32(-88.0)
_XMAX = np.float32(89.0)


@numba.njit(inline="always", fastmath=False)
def exp_parts(x):
    """``(p, bits)`` with ``exp(x) = p * view_f32(bits)`` for a float32 ``x``: ``p = e^r`` (the polynomial),
    ``bits`` (int32) the IEEE pattern of ``2^n``.  Inline arithmetic only (vectorizes in the caller's loop)."""
    # clamp x to [-88, 89] (so n = round(x log2 e) lies in [-127, 128] and r stays small; -inf -> 0)
    x = min(max(x, _XMIN), _XMAX)
    # round to nearest with the 1.5 * 2^23 shifter (exact float32 arithmetic for |t| < 2^22; no libm call)
    n = (x * _LOG2E + _SHIFT) - _SHIFT
    # r = (x - n ln2_hi) - n ln2_lo
    r = (x - n * _LN2_HI) - n * _LN2_LO
    # e^r = 1 + r (1 + r (1/2 + r (1/6 + r (1/24 + r (1/120 + r (1/720 + r/5040))))))
    p = _C6 + r * _C7
    p = _C5 + r * p
    p = _C4 + r * p
    p = _C3 + r * p
    p = _C2 + r * p
    p = _ONE + r * p
    p = _ONE + r * p
    # 2^n: biased exponent n + 127 in bits 23..30 (0 -> +0.0, 255 -> +inf)
    bits = np.int32((np.int32(n) + np.int32(127)) << np.int32(23))
    return p, bits


@numba.njit(cache=True)
def exp_f32(x, out, bits):
    """``out = exp(x)`` for float32 1-D arrays (``bits``: an int32 scratch array of the same length)."""
    for i in range(x.shape[0]):
        p, b = exp_parts(x[i])
        out[i] = p
        bits[i] = b
    scale = bits.view(np.float32)
    for i in range(x.shape[0]):
        out[i] *= scale[i]
