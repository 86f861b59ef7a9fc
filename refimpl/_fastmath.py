r"""A vectorizable float32 ``exp`` for Numba kernels, with a proven error bound.

Numba has no vector math library here (it calls the scalar ``expf`` from libm, ~0.1-0.2 G/s per core;
SVML is not used by this Numba build), so a loop over ``math.exp`` does not vectorize.  This ``exp``
is plain arithmetic that LLVM vectorizes (~1.2 G/s per core measured on cache-resident data):

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

Error bound (relative, for results in the normal range ``-87.33 <= x <= 88.37``), first order in
``u = 2^-24``, with ``R = 0.3467 >= |r|``:

* reduced argument: ``x - n ln2_hi`` is exact (``n ln2_hi`` has <= 17 significant bits; for ``n != 0`` the
  difference is a multiple of ``ulp(x) >= 2^-25`` below ``0.5`` in magnitude, so it has <= 24 bits);
  ``n ln2_lo`` rounds (``<= 128 |ln2_lo| u = 0.027u``), the subtraction rounds (``<= R u``), and
  ``ln2_hi + ln2_lo`` differs from ``ln2`` by ``<= 2^-37``, times ``|n| <= 128``: ``0.016u``.  An
  absolute error ``e`` in ``r`` is a relative error ``e`` in ``e^r``: ``<= 0.39u``.
* truncation of the degree-7 Taylor polynomial: ``R^8/8! e^R / e^-R <= 0.18u`` relative.
* Horner evaluation: the running error ``E_k = R E_{k+1} + u R |s_{k+1}| + u |s_k| (+ u c_k for the
  rounded coefficients 1/6 .. 1/5040)`` with ``|s_k|`` bounded by the same recurrence on ``|c_k|`` at
  ``R``, gives ``E_0 <= 2.41u`` absolute, ``<= 3.40u`` relative to ``p >= e^-R``.
* the product with ``2^n`` is exact for normal results.

Total ``<= 3.97u`` (tests/test_fastmath.py re-evaluates this sum); the terms of second order are
``O(u^2)``, so :data:`EXP_REL_ERR` ``= gamma_4 = 4u/(1 - 4u)`` (about 2.4e-7, 2 ulp) bounds it.
It is below the 4-ulp (``8u``) allowance that the selective-scan bounds give a transcendental
function (``oracles.selective.TRANSCENDENTAL_U``).  Observed maximum: ~1.7u.
"""
from __future__ import annotations

import math

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
import numpy as np

__all__ = ["EXP_REL_ERR", "exp_parts", "exp_f32"]

_U32 = 2.0 ** -24
#: proven bound on the relative error of the float32 exp (module docstring), for -87.33 <= x <= 88.37
EXP_REL_ERR = 4 * _U32 / (1 - 4 * _U32)

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


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the int32 ``bits`` (an LLVM bitcast: no conversion, no rounding; it
    vectorizes), for kernels that build ``p * 2^n`` of :func:`exp_parts` in the same pass (not a function of user
    data: callable from Numba code only)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen
