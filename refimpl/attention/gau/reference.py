r"""The gated attention unit (GAU) and FLASH's mixed-chunk attention, literally (see README.md here).

Hua, Dai, Liu, Le, "Transformer Quality in Linear Time" (ICML 2022), sections 2 and 3 and the pseudo-code of
its appendix.  One batch entry ``x (l d)`` at a time (the batch axis ``b`` rides along):

GAU (section 2, ``view="quadratic"``)::

    U = phi(X W_u),  V = phi(X W_v)          (b l p)   the paper's expansion e = p
    Z = phi(X W_z)                           (b l n)   the paper's shared dimension s = n
    Q = gamma_q * Z + beta_q,  K = gamma_k * Z + beta_k      per-dimension scale and offset
    A = relu^2(scale Q K^T + b)              (b l l)   scale = 1/L (the paper's), b a relative position bias
    O = (U * (A V)) W_o                      (b l d)

FLASH (section 3, mixed-chunk attention, ``view="chunked"`` and ``"materialized"``) splits the sequence into
``G = ceil(L / c)`` chunks of ``c`` positions (the last one short) and forms two query/key pairs from the
shared ``Z`` (four scale/offset rows: ``quad_q, quad_k, lin_q, lin_k``)::

    quadratic, within chunk g:   A_g   = relu^2(Qq_g Kq_g^T / c + b)              (causal: j <= i)
    linear, between chunks:      non-causal:  Ql_g (sum_h Kl_h^T V_h) / L        (every chunk h, g's own too)
                                 causal:      Ql_g (sum_{h<g} Kl_h^T V_h) / c    (previous chunks only)
    O = (U * (A_g V_g + linear)) W_o

Conventions and the paper's choices:

* ``phi = SiLU``; no bias in the dense layers; the pre-norm and the residual of the paper's block are left to
  the caller (the unit computes ``O`` only).
* The scalings are those of the paper's pseudo-code (GAU: ``relu(qk / n + bias)^2`` with ``n`` the length) and
  of its public port (lucidrains' FLASH-pytorch): GAU's scores ``/ L`` (``scale=`` overrides it); FLASH's
  quadratic scores ``/ c`` and its linear part ``/ c`` when causal, ``/ L`` when not.
* **The short last chunk** is scaled by ``1/c`` like every other chunk, not by its own length: the paper pads
  the sequence to a multiple of ``c`` (``group_size``) and the padded positions contribute nothing, so its
  constant ``1/c`` is exactly what a short chunk sees.
* The relative position bias ``b`` is the vector ``bias`` indexed by the offset ``j - i``:
  ``b_ij = bias[j - i + w - 1]`` with ``w = L`` for GAU (``bias (2L - 1)``) and ``w = c`` for FLASH
  (``bias (2c - 1)``, used inside a chunk only, as in the paper).  ``None``: no bias.
* ``causal`` masks ``j > i`` in the quadratic part (``A_ij = 0``) and restricts the linear part to previous
  chunks.  There is no ``initial_state``: resuming FLASH would need the keys of a partial last chunk too.

Layouts: ``x (b l d)``, ``W_u, W_v (d p)``, ``W_z (d n)``, ``gamma, beta (2 n)`` (GAU: rows ``q, k``) or
``(4 n)`` (FLASH: rows ``quad_q, quad_k, lin_q, lin_k``, the paper's ``scale_offset(base, 4)``), ``W_o (p d)``;
output ``o (b l d)``.  float64 unless every float input is float32.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_int, check_shape, result_dtype

__all__ = ["quadratic", "chunked", "materialized", "GAU_ROWS", "FLASH_ROWS"]

#: the scale/offset rows of GAU (``Q``, ``K``) and of FLASH (quadratic and linear ``Q``, ``K``)
GAU_ROWS = ("q", "k")
FLASH_ROWS = ("quad_q", "quad_k", "lin_q", "lin_k")


def silu(y: np.ndarray) -> np.ndarray:
    r"""``phi(y) = y sigmoid(y)``, the sigmoid formed from ``e^{-|y|}`` so that nothing overflows."""
    y = np.asarray(y)
    # sigmoid(y) = 1 / (1 + e^{-y}) for y >= 0, e^{y} / (1 + e^{y}) for y < 0
    e = np.exp(-np.abs(y))
    sig = np.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(y.dtype, copy=False)
    return y * sig


def scale_offset(Z: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> Tuple[np.ndarray, ...]:
    r"""``Q_r = gamma_r * Z + beta_r`` for every row ``r`` of ``gamma, beta (r n)``: ``Z (b l n)`` -> ``r`` arrays."""
    return tuple(gamma[r] * Z + beta[r] for r in range(gamma.shape[0]))


def validate_gau(x, W_u, W_v, W_z, gamma, beta, W_o, bias, *, rows: int, bias_len=None, bias_src: str = ""):
    """Checked float arrays (one working dtype) and the sizes ``(b, l, d, p, n)``.

    ``rows``: the scale/offset rows (2 for GAU, 4 for FLASH); ``bias_len(l)``: the length of ``bias``."""
    x = as_float_array(x, "x", ndim=3, allow_complex=False)
    b, l, d = x.shape
    W_u = as_float_array(W_u, "W_u", ndim=2, allow_complex=False)
    p = W_u.shape[1]
    check_shape(W_u, "W_u", (d, None), "(d, p)", "d from x")
    W_v = as_float_array(W_v, "W_v", ndim=2, allow_complex=False)
    check_shape(W_v, "W_v", (d, p), "(d, p)", "d from x, p from W_u")
    W_z = as_float_array(W_z, "W_z", ndim=2, allow_complex=False)
    check_shape(W_z, "W_z", (d, None), "(d, n)", "d from x")
    n = W_z.shape[1]
    gamma = as_float_array(gamma, "gamma", ndim=2, allow_complex=False)
    check_shape(gamma, "gamma", (rows, n), f"({rows}, n): the rows {FLASH_ROWS[:rows] if rows == 4 else GAU_ROWS}",
                "n from W_z")
    beta = as_float_array(beta, "beta", ndim=2, allow_complex=False)
    check_shape(beta, "beta", (rows, n), f"({rows}, n)", "n from W_z")
    W_o = as_float_array(W_o, "W_o", ndim=2, allow_complex=False)
    check_shape(W_o, "W_o", (p, d), "(p, d)", "p from W_u, d from x")
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, allow_complex=False)
        w = bias_len(l)
        check_shape(bias, "bias", (w,), "(2 w - 1,): the relative position bias b[j - i + w - 1]", bias_src)
    dt = result_dtype(x, W_u, W_v, W_z, gamma, beta, W_o, bias)
    cast = lambda a: None if a is None else a.astype(dt, copy=False)  # noqa: E731
    return tuple(cast(a) for a in (x, W_u, W_v, W_z, gamma, beta, W_o, bias)), (b, l, d, p, n), dt


def gau_scale(scale: Optional[float], l: int) -> float:
    """GAU's score scale: ``scale``, or the paper's ``1/L`` (``None``; 1 when ``L = 0``)."""
    if scale is None:
        return 1.0 / l if l else 1.0
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale: expected a real number or None, got {type(scale).__name__} {scale!r}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    return float(scale)


def flash_scales(l: int, chunk: int, causal: bool) -> Tuple[float, float]:
    """FLASH's ``(quadratic, linear)`` scales, the paper's: ``1/c`` and ``1/c`` (causal) or ``1/L`` (non-causal)."""
    return 1.0 / chunk, (1.0 / chunk if causal else (1.0 / l if l else 1.0))


def _relative_bias(bias, i, j, w):
    # b_ij = bias[j - i + w - 1]
    return bias[(j - i) + (w - 1)]


def quadratic(x, W_u, W_v, W_z, gamma, beta, W_o, *, causal: bool = False, scale: Optional[float] = None,
              bias=None) -> np.ndarray:
    r"""The gated attention unit: ``O = (U * (relu^2(scale Q K^T + b) V)) W_o`` (Hua et al. 2022, section 2).

    ``x (b l d)``, ``W_u, W_v (d p)``, ``W_z (d n)``, ``gamma, beta (2 n)`` (rows ``q, k``), ``W_o (p d)``,
    ``bias (2l - 1)`` or ``None`` -> ``o (b l d)``.  ``scale=None`` is the paper's ``1/L``.
    """
    causal = check_bool(causal, "causal")
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt = validate_gau(
        x, W_u, W_v, W_z, gamma, beta, W_o, bias, rows=2, bias_len=lambda l: max(2 * l - 1, 0),
        bias_src="w = l, the length of x")
    sigma = dt.type(gau_scale(scale, l))
    # U = phi(X W_u), V = phi(X W_v), Z = phi(X W_z)
    U = silu(x @ W_u)
    V = silu(x @ W_v)
    Z = silu(x @ W_z)
    # Q = gamma_q * Z + beta_q,  K = gamma_k * Z + beta_k
    Q, K = scale_offset(Z, gamma, beta)
    # S_ij = scale (q_i . k_j) + b_{j - i}
    S_ij = np.einsum("bin,bjn->bij", Q, K) * sigma
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    if bias is not None:
        S_ij = S_ij + _relative_bias(bias, i, j, l)
    # A = relu(S)^2, causal: A_ij = 0 for j > i
    A = np.maximum(S_ij, 0) ** 2
    if causal:
        A = np.where(j <= i, A, dt.type(0))
    # O = (U * (A V)) W_o
    AV = np.einsum("bij,bjp->bip", A, V)
    return (U * AV) @ W_o


def _flash_inputs(x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias):
    causal = check_bool(causal, "causal")
    chunk = check_int(chunk, "chunk", minimum=1)
    arrays, sizes, dt = validate_gau(x, W_u, W_v, W_z, gamma, beta, W_o, bias, rows=4,
                                     bias_len=lambda l: 2 * chunk - 1, bias_src="w = c, the chunk")
    return arrays, sizes, dt, chunk, causal


def chunked(x, W_u, W_v, W_z, gamma, beta, W_o, *, chunk: int, causal: bool = False, bias=None) -> np.ndarray:
    r"""FLASH's mixed-chunk attention, chunk by chunk, the linear part through the running state.

    For chunk ``g`` (positions ``g0 <= t < g1``, ``g1 = min(g0 + c, L)``)::

        quad_g = relu^2(Qq_g Kq_g^T / c + b) V_g                       (causal: masked j > i)
        lin_g  = Ql_g S_prev / c,  S_prev = sum_{h<g} Kl_h^T V_h       (causal: the running state)
        lin_g  = Ql_g S_all / L,   S_all  = sum_h Kl_h^T V_h           (non-causal)
        O_g    = (U_g * (quad_g + lin_g)) W_o

    ``x (b l d)``, ``W_u, W_v (d p)``, ``W_z (d n)``, ``gamma, beta (4 n)`` (rows ``quad_q, quad_k, lin_q,
    lin_k``), ``W_o (p d)``, ``chunk`` = ``c >= 1`` (any ``L``; the short last chunk is scaled by ``1/c`` too),
    ``bias (2c - 1)`` or ``None`` -> ``o (b l d)``.
    """
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt, c, causal = _flash_inputs(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias)
    sq, sl = (dt.type(s) for s in flash_scales(l, c, causal))
    # U = phi(X W_u), V = phi(X W_v), Z = phi(X W_z)
    U = silu(x @ W_u)
    V = silu(x @ W_v)
    Z = silu(x @ W_z)
    # the four scale/offset pairs of the paper: quadratic and linear queries and keys
    Qq, Kq, Ql, Kl = scale_offset(Z, gamma, beta)
    AV = np.zeros((b, l, p), dtype=dt)
    # S_prev = 0 (b n p): sum_{h<g} Kl_h^T V_h, carried from chunk to chunk (causal)
    S_prev = np.zeros((b, n, p), dtype=dt)
    # S_all = sum_h Kl_h^T V_h over every chunk (non-causal)
    S_all = np.einsum("bjn,bjp->bnp", Kl, V) if not causal else None
    for g0 in range(0, l, c):
        g1 = min(g0 + c, l)
        i, j = np.arange(g0, g1)[:, None], np.arange(g0, g1)[None, :]
        # S_ij = (qq_i . kq_j) / c + b_{j - i}, within the chunk
        S_ij = np.einsum("bin,bjn->bij", Qq[:, g0:g1], Kq[:, g0:g1]) * sq
        if bias is not None:
            S_ij = S_ij + _relative_bias(bias, i, j, c)
        # A_g = relu(S)^2, causal: 0 for j > i
        A_g = np.maximum(S_ij, 0) ** 2
        if causal:
            A_g = np.where(j <= i, A_g, dt.type(0))
        quad = np.einsum("bij,bjp->bip", A_g, V[:, g0:g1])
        if causal:
            # lin_g = Ql_g S_prev / c, then S_prev += Kl_g^T V_g
            lin = np.einsum("bin,bnp->bip", Ql[:, g0:g1], S_prev) * sl
            S_prev = S_prev + np.einsum("bjn,bjp->bnp", Kl[:, g0:g1], V[:, g0:g1])
        else:
            # lin_g = Ql_g S_all / L
            lin = np.einsum("bin,bnp->bip", Ql[:, g0:g1], S_all) * sl
        AV[:, g0:g1] = quad + lin
    # O = (U * (quad + lin)) W_o
    return (U * AV) @ W_o


def materialized(x, W_u, W_v, W_z, gamma, beta, W_o, *, chunk: int, causal: bool = False, bias=None) -> np.ndarray:
    r"""FLASH's mixed-chunk attention as the ``(l l)`` matrix the chunked form computes, then ``A_bar V``.

    ``A_bar`` is block-diagonal ``relu^2`` plus a low-rank cross part::

        A_bar_ij = relu^2(qq_i . kq_j / c + b_{j-i}) [chunk(i) = chunk(j), causal: j <= i]
                 + (ql_i . kl_j) / c                  [causal: chunk(j) < chunk(i)]
                 + (ql_i . kl_j) / L                  [non-causal: every j]
        O = (U * (A_bar V)) W_o

    Same arguments and shapes as :func:`chunked`.
    """
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt, c, causal = _flash_inputs(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias)
    sq, sl = (dt.type(s) for s in flash_scales(l, c, causal))
    # U = phi(X W_u), V = phi(X W_v), Z = phi(X W_z)
    U = silu(x @ W_u)
    V = silu(x @ W_v)
    Z = silu(x @ W_z)
    Qq, Kq, Ql, Kl = scale_offset(Z, gamma, beta)
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    same_chunk = (i // c) == (j // c)
    # the quadratic (block-diagonal) part: relu^2(qq_i . kq_j / c + b_{j-i}) inside a chunk
    S_ij = np.einsum("bin,bjn->bij", Qq, Kq) * sq
    if bias is not None:
        off = np.clip(j - i, -(c - 1), c - 1)  # only the in-chunk offsets |j - i| < c are ever used
        S_ij = S_ij + np.where(same_chunk, _relative_bias(bias, 0, off, c), dt.type(0))
    keep_quad = same_chunk & (j <= i) if causal else same_chunk
    A_quad = np.where(keep_quad, np.maximum(S_ij, 0) ** 2, dt.type(0))
    # the low-rank (linear) part: (ql_i . kl_j) scaled, previous chunks (causal) or every key
    keep_lin = (j // c) < (i // c) if causal else np.ones((l, l), dtype=bool)
    A_lin = np.where(keep_lin, np.einsum("bin,bjn->bij", Ql, Kl) * sl, dt.type(0))
    A_bar = A_quad + A_lin
    # O = (U * (A_bar V)) W_o
    return (U * np.einsum("bij,bjp->bip", A_bar, V)) @ W_o
