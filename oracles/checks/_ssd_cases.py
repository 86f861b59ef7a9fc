"""The SSD report rows' inputs (shared by ``checks/selective.py`` and ``checks/cuda_selective_ssd.py``; a private module:
not discovered as a check module)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def ssd_inputs(seed: int, dtype=np.float32, *, b: int, l: int, h: int, p: int, g: int, n: int,
               boundaries: Sequence[int]):
    """``(args, kw)`` of ``ssd_scan``: x, dt, A, B, C, D (h p), z; dt_bias, softplus, the clamp (0.01, 2.0), an
    initial state, and ``seq_idx`` starting a new sequence of batch 0 at each of ``boundaries``."""
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal((b, l, h, p)), rng.standard_normal((b, l, h)) - 1.0, -np.exp(rng.standard_normal(h)),
            rng.standard_normal((b, l, g, n)), rng.standard_normal((b, l, g, n)), rng.standard_normal((h, p)),
            rng.standard_normal((b, l, h, p))]
    args = [a.astype(dtype) for a in args]
    seq = np.zeros((b, l), dtype=np.int64)
    for i, start in enumerate(boundaries):
        seq[0, start:] = i + 1
    kw = dict(dt_bias=rng.standard_normal(h).astype(dtype), dt_softplus=True, dt_limit=(0.01, 2.0),
              initial_state=rng.standard_normal((b, h, p, n)).astype(dtype), seq_idx=seq)
    return args, kw
