"""Hypothesis strategies for the attention family.

Arrays come from a seeded ``numpy`` generator driven by a drawn seed (fast; shrinks on the seed and
sizes).  Lengths cover what every view must accept: L in {0, 1, 2, odd, not a multiple of the chunk,
longer than the chunk}.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from hypothesis import strategies as st

LENGTHS = (0, 1, 2, 3, 5, 7, 8, 13, 17)


def _draw_dims(draw):
    """``(seed, b, l, h, n, p, chunk)``: the sizes every linear-attention-family case draws."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    b = draw(st.integers(1, 2))
    l = draw(st.sampled_from(LENGTHS))
    h = draw(st.integers(1, 2))
    n = draw(st.integers(1, 4))
    p = draw(st.integers(1, 3))
    chunk = draw(st.sampled_from((1, 2, 3, 4, 8)))
    return seed, b, l, h, n, p, chunk


@dataclasses.dataclass
class LinearCase:
    """Feature-mapped inputs for linear attention (positive features unless ``positive=False``).

    ``S0 (b h p n)`` and ``z0 (b h n)``: an optional initial state (VxK), both or neither.
    """

    phi_q: np.ndarray
    phi_k: np.ndarray
    v: np.ndarray
    S0: Optional[np.ndarray]
    z0: Optional[np.ndarray]
    chunk: int
    seed: int

    def initial_state(self, normalize: bool = True):
        """The ``initial_state=`` argument: ``(S0, z0)`` (normalized), ``S0`` (unnormalized) or None."""
        if self.S0 is None:
            return None
        return (self.S0, self.z0) if normalize else self.S0

    def __repr__(self) -> str:
        return (f"LinearCase(seed={self.seed}, b,l,h,n,p={self.phi_k.shape + self.v.shape[-1:]}, "
                f"chunk={self.chunk}, S0={'yes' if self.S0 is not None else 'no'})")


@st.composite
def linear_cases(draw, *, dtype=np.float64, with_state: Optional[bool] = None, positive: bool = True):
    seed, b, l, h, n, p, chunk = _draw_dims(draw)
    state = draw(st.booleans()) if with_state is None else with_state
    rng = np.random.default_rng(seed)
    if positive:
        pq, pk = rng.uniform(0.05, 1.0, (b, l, h, n)), rng.uniform(0.05, 1.0, (b, l, h, n))
    else:
        pq, pk = rng.standard_normal((b, l, h, n)), rng.standard_normal((b, l, h, n))
    v = rng.standard_normal((b, l, h, p))
    S0 = rng.standard_normal((b, h, p, n)) if state else None
    z0 = rng.uniform(0.05, 1.0, (b, h, n)) if state else None
    c = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    return LinearCase(c(pq), c(pk), c(v), c(S0), c(z0), chunk, seed)


@dataclasses.dataclass
class DeltaCase:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    beta: np.ndarray
    decay: Optional[np.ndarray]
    S0: Optional[np.ndarray]
    chunk: int
    seed: int

    def __repr__(self) -> str:
        return (f"DeltaCase(seed={self.seed}, b,l,h,n,p={self.k.shape + self.v.shape[-1:]}, chunk={self.chunk}, "
                f"gated={self.decay is not None}, S0={'yes' if self.S0 is not None else 'no'})")


@st.composite
def delta_cases(draw, *, dtype=np.float64, gated: Optional[bool] = None):
    """Unit-norm keys and beta in (0, 1): a contractive delta rule (``0 <= beta |k|^2 <= 1``)."""
    seed, b, l, h, n, p, chunk = _draw_dims(draw)
    g = draw(st.booleans()) if gated is None else gated
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, h, n))
    k = rng.standard_normal((b, l, h, n)) + 1e-3
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.standard_normal((b, l, h, p))
    beta = rng.uniform(0.0, 1.0, (b, l, h))
    decay = rng.uniform(0.5, 1.0, (b, l, h)) if g else None
    S0 = rng.standard_normal((b, h, p, n)) if draw(st.booleans()) else None
    c = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    return DeltaCase(c(q), c(k), c(v), c(beta), c(decay), c(S0), chunk, seed)


@dataclasses.dataclass
class SoftmaxCase:
    """``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)``; ``causal`` a bool, ``alignment`` named whenever ``l != s``
    (and sometimes left out when ``l == s``, where it is optional)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    causal: bool
    alignment: Optional[str]
    mask: Optional[np.ndarray]
    scale: float
    seed: int

    @property
    def diagonal(self) -> Optional[str]:
        """The causal diagonal as the oracles name it (``oracles.attention.keep_mask``): None or an alignment."""
        if not self.causal:
            return None
        return self.alignment or "top_left"

    def __repr__(self) -> str:
        return (f"SoftmaxCase(seed={self.seed}, q={self.q.shape}, k={self.k.shape}, v={self.v.shape}, "
                f"causal={self.causal}, alignment={self.alignment}, mask={'yes' if self.mask is not None else 'no'}, "
                f"scale={self.scale})")


@st.composite
def softmax_cases(draw, *, dtype=np.float64, max_len: int = 6):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    b = draw(st.integers(1, 2))
    l = draw(st.integers(0, max_len))
    s = draw(st.integers(0, max_len))
    h = draw(st.integers(1, 2))
    n = draw(st.integers(1, 4))
    p = draw(st.integers(1, 3))
    causal = draw(st.booleans())
    alignment = None
    if causal:
        alignment = draw(st.sampled_from(("top_left", "bottom_right") + ((None,) if l == s else ())))
    scale = draw(st.sampled_from((None, 0.5, 1.0, 3.0)))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, l, h, n)) * 2
    k = rng.standard_normal((b, s, h, n)) * 2
    v = rng.standard_normal((b, s, h, p))
    mask = rng.random((b, h, l, s)) < 0.8 if draw(st.booleans()) else None
    sc = 1.0 / np.sqrt(n) if scale is None else scale
    return SoftmaxCase(q.astype(dtype), k.astype(dtype), v.astype(dtype), causal, alignment, mask, sc, seed)
