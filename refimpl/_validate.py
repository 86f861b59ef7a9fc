"""Input validation shared by every public function.

Policy (see README, "Bad input"):

* Every array argument is checked for type, dtype, shape and finiteness
  before any arithmetic.  A problem raises ``TypeError`` (wrong kind of
  object or dtype) or ``ValueError`` (wrong shape, non-finite value,
  invalid parameter), and the message names the argument, what was
  expected and what was received.
* Python ``int``/``float``/``complex`` scalars are accepted and become
  float64/complex128.  NumPy arrays of integer or boolean dtype are refused
  where floats are needed: ``np.int64`` data reaching an SSM is almost
  always a bug upstream.
* No silent downcast: the working dtype is ``np.result_type`` of the
  floating inputs (float32 stays float32 only when every input is float32).
* No silent broadcast: shapes must match exactly what the docstring says.
* Layout never changes an answer: a non-contiguous array is copied to C order,
  so a strided view gives the contiguous array's result bit for bit.
"""
from __future__ import annotations

import numbers
from typing import Iterable, Optional, Sequence

import numpy as np

FLOAT_KINDS = ("f", "c")
_LOWP_NAMES = ("bfloat16", "float8")


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__}"


def _is_lowp_float(dtype: np.dtype) -> bool:
    # ml_dtypes (bfloat16, float8_*) register as kind 'V' with a float-like name.
    return any(dtype.name.startswith(n) for n in _LOWP_NAMES)


def as_float_array(
    x,
    name: str,
    *,
    ndim: Optional[int | Sequence[int]] = None,
    allow_complex: bool = True,
    finite: bool = True,
    allow_lowp: bool = False,
) -> np.ndarray:
    """Return ``x`` as a floating (or complex) ndarray, or raise.

    Parameters
    ----------
    x : array_like
        The argument.
    name : str
        The argument's name, used in error messages.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    allow_complex : bool
        If False, complex input raises ``TypeError``.
    finite : bool
        If True (default), NaN or Inf raises ``ValueError``.
    allow_lowp : bool
        Accept ml_dtypes bfloat16/float8 arrays unchanged (for the
        low-precision paths of the verify harness only).
    """
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a floating-point number or array, got bool")
    if isinstance(x, numbers.Number) and not isinstance(x, np.generic):
        if isinstance(x, complex):
            arr = np.asarray(x, dtype=np.complex128)
        else:
            arr = np.asarray(x, dtype=np.float64)
    elif isinstance(x, (np.ndarray, np.generic)):
        arr = np.asarray(x)
    elif isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged
            raise ValueError(f"{name}: expected a rectangular array, got a ragged sequence ({exc})") from None
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.float64)
    elif hasattr(x, "__array__") or hasattr(x, "__dlpack__"):
        arr = np.asarray(x)
    else:
        raise TypeError(f"{name}: expected an array of floats, got {_describe(x)}")

    kind = arr.dtype.kind
    if allow_lowp and _is_lowp_float(arr.dtype):
        pass
    elif kind not in FLOAT_KINDS:
        raise TypeError(
            f"{name}: expected a floating-point dtype (float32/float64"
            f"{'/complex64/complex128' if allow_complex else ''}), got {arr.dtype}"
        )
    if kind == "c" and not allow_complex:
        raise TypeError(f"{name}: expected a real floating-point dtype, got {arr.dtype}")
    if kind == "f" and arr.dtype.itemsize < 4 and not allow_lowp:
        raise TypeError(
            f"{name}: expected float32 or float64, got {arr.dtype}; "
            "low precision is only for candidates in the verify harness"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            exp = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected {exp} dimensions, got shape {arr.shape} ({arr.ndim} dimensions)")
    if finite:
        check_finite(arr, name)
    if not arr.flags.c_contiguous:
        # the same summation order as for a contiguous array (einsum/BLAS choose paths by layout)
        arr = np.ascontiguousarray(arr)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or Inf, naming the first bad index."""
    a = np.asarray(arr)
    if a.dtype.kind in FLOAT_KINDS or _is_lowp_float(a.dtype):
        a64 = a if a.dtype.kind in FLOAT_KINDS else a.astype(np.float64)
        bad = ~np.isfinite(a64)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: expected finite values, got {a64[idx]} at index {idx} "
                f"({int(bad.sum())} non-finite of {a.size})"
            )


def check_shape(arr: np.ndarray, name: str, expected: Sequence[Optional[int]], what: str = "", src: str = "") -> None:
    """Raise ``ValueError`` unless ``arr.shape`` matches ``expected`` (``None`` = any).

    ``what`` describes the expected shape (``"(b, d, n)"``); ``src`` says which arguments set its sizes
    (``"b, d from x, n from A_bar"``), so that a mismatch caused by either argument names both."""
    shape = np.shape(arr)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        extra = f" {what}" if what else ""
        tail = f" ({src})" if src else ""
        raise ValueError(f"{name}: expected shape {exp}{extra}, got {shape}{tail}")


def check_positive(arr, name: str, *, strict: bool = True) -> None:
    """Raise ``ValueError`` if any entry of a real array is not > 0 (or >= 0 if not strict)."""
    a = np.asarray(arr)
    if a.dtype.kind == "c":
        raise TypeError(f"{name}: expected real values, got {a.dtype}")
    bad = (a <= 0) if strict else (a < 0)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0]) if a.ndim else ()
        val = a[idx] if a.ndim else a
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"{name}: expected values {rel}, got {val} at index {idx}")


def check_int(value, name: str, *, minimum: Optional[int] = None) -> int:
    """Return ``value`` as a Python int, or raise ``TypeError``/``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    return v


def check_bool(value, name: str) -> bool:
    """Return ``value`` as a Python bool; anything but ``bool``/``np.bool_`` is a ``TypeError``.

    Bool options take bools only: ``"False"`` is truthy, so accepting strings or ints would turn
    a typo into the opposite of what was asked.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The working dtype of a computation: ``np.result_type`` of the floating inputs.

    float32 stays float32 only if every input is float32/complex64; nothing is
    ever downcast.
    """
    return np.result_type(*[np.asarray(a).dtype for a in arrays if a is not None])


def real_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for float32/complex64, float64 for float64/complex128."""
    return np.finfo(np.dtype(dtype)).dtype


def check_window(window, causal: bool) -> tuple:
    """``window`` in refimpl's meaning (``docs/glossary.md``) as ``(left, right)``: inclusive key counts on each
    side; an int ``w`` is ``(w, w)``, ``(w, 0)`` when causal; with ``causal=True`` a ``right > 0`` is a ``ValueError``."""
    if isinstance(window, (bool, np.bool_)):
        raise TypeError(f"window: expected an int w or a pair (left, right) of ints >= 0, got bool {window!r}")
    if isinstance(window, numbers.Integral):
        w = check_int(window, "window", minimum=0)
        return (w, 0) if causal else (w, w)
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError(f"window: expected an int w or a pair (left, right) of ints >= 0, got "
                        f"{type(window).__name__} {window!r}")
    left = check_int(window[0], "window[0] (left)", minimum=0)
    right = check_int(window[1], "window[1] (right)", minimum=0)
    if causal and right > 0:
        raise ValueError(f"window: causal=True keeps no key to the right (right must be 0), got "
                         f"window={tuple(window)!r}")
    return left, right
