r"""Sinusoidal positional encodings (Vaswani et al. 2017, the text's formula).

``PE(pos, 2i) = sin(pos / base^{2i/d})``,  ``PE(pos, 2i+1) = cos(pos / base^{2i/d})``,
``base = 10000``.  Columns are interleaved (sin at even, cos at odd columns); for odd ``d``
the last column is a sine.  Positions start at ``offset`` (default 0).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from refimpl._validate import check_int

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(length: int, d: int, *, base: float = 10000.0, offset: int = 0, dtype=np.float64) -> np.ndarray:
    r"""``(length, d)`` array ``PE[pos - offset, c]`` for ``pos = offset .. offset+length-1``."""
    length = check_int(length, "length", minimum=0)
    d = check_int(d, "d", minimum=1)
    offset = check_int(offset, "offset", minimum=0)
    if isinstance(base, (bool, np.bool_)) or not isinstance(base, numbers.Real):
        raise TypeError(f"base: expected a real number > 1, got {type(base).__name__} {base!r}")
    if not math.isfinite(base) or base <= 1:
        raise ValueError(f"base: expected a finite number > 1, got {base!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    pos = np.arange(offset, offset + length, dtype=np.float64)[:, None]
    two_i = np.arange(0, d, 2, dtype=np.float64)[None, :]
    # angle = pos / base^{2i/d}
    angle = pos / np.power(float(base), two_i / d)
    pe = np.zeros((length, d), dtype=np.float64)
    # PE(pos, 2i) = sin(angle);  PE(pos, 2i+1) = cos(angle)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d // 2])
    return pe.astype(dtype, copy=False)
