r"""The backward pass of the gated attention unit and of FLASH's mixed-chunk attention: the vector-Jacobian
products, written literally (no autodiff).

The forward (:mod:`refimpl.attention.gau.reference`): ``H_u = X W_u``, ``U = phi(H_u)`` (and ``V``, ``Z`` alike),
``Q_r = gamma_r * Z + beta_r``, the attention ``AV`` (GAU's ``relu^2`` or FLASH's mixed chunk), ``Y = U * AV``,
``O = Y W_o``.  Given the cotangent ``do`` of ``O`` (a real loss ``L = sum do * O``), the adjoint equations shared
by both::

    dW_o = sum_b Y^T dO,   dY = dO W_o^T
    dU   = dY * AV,        dAV = dY * U
    (the attention's adjoint: dV, dQ_r for every scale/offset row r)
    dZ        = sum_r gamma_r * dQ_r,    dgamma_r = sum_{b,t} dQ_r * Z,    dbeta_r = sum_{b,t} dQ_r
    dH_u      = dU * phi'(H_u)  (and V, Z alike),  phi'(y) = sigmoid(y) (1 + y (1 - sigmoid(y)))   (phi = SiLU)
    dW_u      = sum_b X^T dH_u  (and W_v, W_z),    dX = dH_u W_u^T + dH_v W_v^T + dH_z W_z^T

GAU's attention (``S = scale Q K^T + b``, ``A = relu(S)^2`` masked ``j > i`` when causal, ``AV = A V``)::

    dA   = dAV V^T,          dV += A^T dAV
    dS   = dA * 2 relu(S)    (relu^2's derivative; 0 where causal masks j > i)
    dQ   = scale dS K,       dK = scale dS^T Q
    dbias[j - i + w - 1] += dS_ij     (summed over b and every pair (i, j) of that offset)

FLASH's mixed chunk (rows ``quad_q, quad_k, lin_q, lin_k``), per chunk ``g``: the quadratic part as GAU's inside
the chunk (``scale = 1/c``, in-chunk bias); the linear part::

    causal:      lin_g = (1/c) Ql_g S_prev_g,   S_prev_{g+1} = S_prev_g + Kl_g^T V_g   (a forward scan)
    non-causal:  lin_g = (1/L) Ql_g S_all,      S_all = sum_h Kl_h^T V_h

so its adjoint is **a reverse scan** over the chunks (causal)::

    dQl_g  = (1/c) dlin_g S_prev_g^T
    dS_g   = sum_{g' > g} (1/c) Ql_{g'}^T dlin_{g'}       (the state's cotangent, carried from the last chunk back)
    dKl_g  = V_g dS_g^T,    dV_g += Kl_g dS_g

and, non-causal, ``dS_all = (1/L) sum_g Ql_g^T dlin_g``, ``dKl = V dS_all^T``, ``dV += Kl dS_all``,
``dQl = (1/L) dlin S_all^T``.

Views: GAU ``"quadratic"`` (:func:`quadratic_vjp`); FLASH ``"chunked"`` (:func:`chunked_vjp`, the reverse scan
over chunks) and ``"materialized"`` (:func:`materialized_vjp`, the ``(l l)`` matrix ``A_bar`` and its adjoint
``dA_bar = dAV V^T``).  Conventions as the forward (SiLU gates, GAU's ``scale=None`` = ``1/L``, FLASH's ``1/c`` and
``1/c`` or ``1/L``; the short last chunk scaled by ``1/c``).  Real inputs only; the computation runs in
``result_dtype`` of the inputs and ``do``, and every gradient is returned in it (no silent downcast).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from refimpl._validate import check_bool, result_dtype
from refimpl.attention.gau.reference import _flash_inputs, flash_scales, gau_scale, validate_gau
from refimpl.attention.linformer.backward import check_cotangent

__all__ = ["quadratic_vjp", "chunked_vjp", "materialized_vjp"]

_NAMES = ("x", "W_u", "W_v", "W_z", "gamma", "beta", "W_o", "bias")


def _sigmoid(y: np.ndarray) -> np.ndarray:
    r"""``sigmoid(y) = 1 / (1 + e^{-y})`` from ``e^{-|y|} <= 1`` (nothing overflows)."""
    e = np.exp(-np.abs(y))
    return np.where(y >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(y.dtype, copy=False)


class _Gates:
    """The forward's projections and gates, recomputed: ``H_u, H_v, H_z``, their sigmoids, ``U, V, Z`` and the
    scale/offset rows ``Q_r = gamma_r * Z + beta_r``."""

    def __init__(self, x, W_u, W_v, W_z, gamma, beta):
        # H_u = X W_u, H_v = X W_v, H_z = X W_z
        self.H = {"u": x @ W_u, "v": x @ W_v, "z": x @ W_z}
        # phi(H) = H sigmoid(H)
        self.sig = {key: _sigmoid(H) for key, H in self.H.items()}
        self.U, self.V, self.Z = (self.H[key] * self.sig[key] for key in ("u", "v", "z"))
        # Q_r = gamma_r * Z + beta_r
        self.rows = tuple(gamma[r] * self.Z + beta[r] for r in range(gamma.shape[0]))

    def backward(self, x, W_u, W_v, W_z, gamma, dU, dV, dQ_rows):
        r"""``dx, dW_u, dW_v, dW_z, dgamma, dbeta`` from the cotangents of ``U``, ``V`` and every ``Q_r``."""
        # dZ = sum_r gamma_r * dQ_r ;  dgamma_r = sum_{b,t} dQ_r * Z ;  dbeta_r = sum_{b,t} dQ_r
        dZ = sum(gamma[r] * dQ_rows[r] for r in range(gamma.shape[0]))
        dgamma = np.stack([np.einsum("bln,bln->n", dQ_rows[r], self.Z) for r in range(gamma.shape[0])])
        dbeta = np.stack([np.sum(dQ_rows[r], axis=(0, 1)) for r in range(gamma.shape[0])])
        # dH = dphi * phi'(H),  phi'(y) = sigmoid(y) (1 + y (1 - sigmoid(y)))
        dH = {}
        for key, dphi in (("u", dU), ("v", dV), ("z", dZ)):
            s, H = self.sig[key], self.H[key]
            dH[key] = dphi * (s * (1 + H * (1 - s)))
        # dW = sum_b X^T dH ;  dX = dH_u W_u^T + dH_v W_v^T + dH_z W_z^T
        dW_u, dW_v, dW_z = (np.einsum("bld,blc->dc", x, dH[key]) for key in ("u", "v", "z"))
        dx = dH["u"] @ W_u.T + dH["v"] @ W_v.T + dH["z"] @ W_z.T
        return dx, dW_u, dW_v, dW_z, dgamma.reshape(gamma.shape), dbeta.reshape(gamma.shape)


def _output_backward(do, U, AV, W_o):
    r"""``Y = U * AV``, ``O = Y W_o``: ``dW_o = sum_b Y^T dO``, ``dY = dO W_o^T``, ``dU = dY * AV``, ``dAV = dY * U``."""
    Y = U * AV
    dW_o = np.einsum("blp,bld->pd", Y, do)
    dY = do @ W_o.T
    return dW_o, dY * AV, dY * U


def _bias_grad(dS_offsets: np.ndarray, offsets: np.ndarray, w: int, dtype) -> np.ndarray:
    r"""``dbias[k] = sum_{(i, j): j - i + w - 1 = k} dS_ij`` (``dS_offsets`` summed over ``b`` already)."""
    dbias = np.zeros(2 * w - 1 if w else 0, dtype=dtype)
    np.add.at(dbias, offsets.ravel() + (w - 1), dS_offsets.ravel())
    return dbias


def _finish(grads, in_arrays, dt):
    out = {}
    for name, g, a in zip(_NAMES, grads, in_arrays):
        if a is None:
            continue
        out[name] = np.asarray(g).astype(dt, copy=False)  # the working dtype: no silent downcast
    return out


def quadratic_vjp(x, W_u, W_v, W_z, gamma, beta, W_o, *, do, causal: bool = False, scale: Optional[float] = None,
                  bias=None) -> Dict[str, np.ndarray]:
    r"""The VJP of the gated attention unit (the module docstring's adjoint equations, GAU's attention).

    Arguments as :func:`refimpl.attention.gau.reference.quadratic`; ``do (b l d)`` the cotangent of ``O`` ->
    ``{"x", "W_u", "W_v", "W_z", "gamma" (2 n), "beta" (2 n), "W_o"[, "bias" (2l - 1)]}``.
    """
    originals = (x, W_u, W_v, W_z, gamma, beta, W_o, bias)
    causal = check_bool(causal, "causal")
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt = validate_gau(
        x, W_u, W_v, W_z, gamma, beta, W_o, bias, rows=2, bias_len=lambda l: max(2 * l - 1, 0),
        bias_src="w = l, the length of x")
    do = check_cotangent(do, "do", (b, l, d), "b l d", "b, l, d from x")
    dt = result_dtype(x, do)
    x, W_u, W_v, W_z, gamma, beta, W_o, do = (a.astype(dt, copy=False) for a in (x, W_u, W_v, W_z, gamma, beta,
                                                                                   W_o, do))
    bias = None if bias is None else bias.astype(dt, copy=False)
    sigma = dt.type(gau_scale(scale, l))
    # forward recomputation
    gates = _Gates(x, W_u, W_v, W_z, gamma, beta)
    U, V = gates.U, gates.V
    Q, K = gates.rows
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    S = np.einsum("bin,bjn->bij", Q, K) * sigma
    if bias is not None:
        S = S + bias[(j - i) + (l - 1)]
    keep = (j <= i) if causal else np.ones((l, l), dtype=bool)
    # A = relu(S)^2 (kept pairs)
    A = np.where(keep, np.maximum(S, 0) ** 2, dt.type(0))
    AV = np.einsum("bij,bjp->bip", A, V)
    # dW_o, dU, dAV
    dW_o, dU, dAV = _output_backward(do, U, AV, W_o)
    # dA = dAV V^T ;  dV = A^T dAV
    dA = np.einsum("bip,bjp->bij", dAV, V)
    dV = np.einsum("bij,bip->bjp", A, dAV)
    # dS = dA * 2 relu(S)   (0 where masked)
    dS = np.where(keep, dA * (2 * np.maximum(S, 0)), dt.type(0))
    # dQ = scale dS K ;  dK = scale dS^T Q
    dQ = sigma * np.einsum("bij,bjn->bin", dS, K)
    dK = sigma * np.einsum("bij,bin->bjn", dS, Q)
    dbias = None if bias is None else _bias_grad(np.sum(dS, axis=0), np.broadcast_to(j - i, (l, l)), l, dt)
    dx, dW_u, dW_v, dW_z, dgamma, dbeta = gates.backward(x, W_u, W_v, W_z, gamma, dU, dV, (dQ, dK))
    return _finish((dx, dW_u, dW_v, dW_z, dgamma, dbeta, dW_o, dbias), originals, dt)


def _flash_prepare(x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias, do):
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias), (b, l, d, p, n), dt, c, causal = _flash_inputs(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias)
    do = check_cotangent(do, "do", (b, l, d), "b l d", "b, l, d from x")
    dt = result_dtype(x, do)
    arrays = tuple(None if a is None else a.astype(dt, copy=False) for a in (x, W_u, W_v, W_z, gamma, beta, W_o,
                                                                            bias, do))
    return arrays, (b, l, d, p, n), dt, c, causal


def chunked_vjp(x, W_u, W_v, W_z, gamma, beta, W_o, *, do, chunk: int, causal: bool = False,
                bias=None) -> Dict[str, np.ndarray]:
    r"""The VJP of FLASH's mixed-chunk attention, chunk by chunk: the linear part's adjoint is **a reverse scan**
    over the chunks (the state cotangent ``dS_g = sum_{g' > g} (1/c) Ql_{g'}^T dlin_{g'}``, carried from the last
    chunk back; non-causal: one ``dS_all``).

    Arguments as :func:`refimpl.attention.gau.reference.chunked`; ``do (b l d)`` -> ``{"x", "W_u", "W_v", "W_z",
    "gamma" (4 n), "beta" (4 n), "W_o"[, "bias" (2c - 1)]}``.
    """
    originals = (x, W_u, W_v, W_z, gamma, beta, W_o, bias)
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias, do), (b, l, d, p, n), dt, c, causal = _flash_prepare(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias, do)
    sq, sl = (dt.type(s) for s in flash_scales(l, c, causal))
    gates = _Gates(x, W_u, W_v, W_z, gamma, beta)
    U, V = gates.U, gates.V
    Qq, Kq, Ql, Kl = gates.rows
    starts = list(range(0, l, c))
    # forward recomputation, chunk by chunk: A_g, quad_g + lin_g, the states S_prev_g (causal) or S_all
    AV = np.zeros((b, l, p), dtype=dt)
    S_prev = np.zeros((b, n, p), dtype=dt)
    states, cache = [], []
    S_all = np.einsum("bjn,bjp->bnp", Kl, V) if not causal else None
    for g0 in starts:
        g1 = min(g0 + c, l)
        i, j = np.arange(g0, g1)[:, None], np.arange(g0, g1)[None, :]
        S_ij = np.einsum("bin,bjn->bij", Qq[:, g0:g1], Kq[:, g0:g1]) * sq
        if bias is not None:
            S_ij = S_ij + bias[(j - i) + (c - 1)]
        keep = (j <= i) if causal else np.ones(S_ij.shape[1:], dtype=bool)
        A_g = np.where(keep, np.maximum(S_ij, 0) ** 2, dt.type(0))
        quad = np.einsum("bij,bjp->bip", A_g, V[:, g0:g1])
        if causal:
            states.append(S_prev)
            lin = np.einsum("bin,bnp->bip", Ql[:, g0:g1], S_prev) * sl
            S_prev = S_prev + np.einsum("bjn,bjp->bnp", Kl[:, g0:g1], V[:, g0:g1])
        else:
            lin = np.einsum("bin,bnp->bip", Ql[:, g0:g1], S_all) * sl
        AV[:, g0:g1] = quad + lin
        cache.append((S_ij, keep, A_g))
    dW_o, dU, dAV = _output_backward(do, U, AV, W_o)
    dV = np.zeros_like(V)
    dQq, dKq, dQl, dKl = (np.zeros_like(Z) for Z in (Qq, Kq, Ql, Kl))
    dbias = None if bias is None else np.zeros_like(bias)
    # dS: the cotangent of the linear state (causal: carried backwards; non-causal: dS_all accumulated)
    dS = np.zeros((b, n, p), dtype=dt)
    for g in reversed(range(len(starts))):
        g0 = starts[g]
        g1 = min(g0 + c, l)
        S_ij, keep, A_g = cache[g]
        dAV_g = dAV[:, g0:g1]
        # the quadratic part: dA_g = dAV_g V_g^T, dV_g += A_g^T dAV_g, dS_ij = dA_g * 2 relu(S_ij)
        dA_g = np.einsum("bip,bjp->bij", dAV_g, V[:, g0:g1])
        dV[:, g0:g1] += np.einsum("bij,bip->bjp", A_g, dAV_g)
        dS_ij = np.where(keep, dA_g * (2 * np.maximum(S_ij, 0)), dt.type(0))
        # dQq_g = (1/c) dS_ij Kq_g ;  dKq_g = (1/c) dS_ij^T Qq_g
        dQq[:, g0:g1] = sq * np.einsum("bij,bjn->bin", dS_ij, Kq[:, g0:g1])
        dKq[:, g0:g1] = sq * np.einsum("bij,bin->bjn", dS_ij, Qq[:, g0:g1])
        if bias is not None:
            i, j = np.arange(g0, g1)[:, None], np.arange(g0, g1)[None, :]
            dbias += _bias_grad(np.sum(dS_ij, axis=0), np.broadcast_to(j - i, S_ij.shape[1:]), c, dt)
        if causal:
            # dKl_g = V_g dS_g^T ;  dV_g += Kl_g dS_g   (dS_g = sum_{g' > g} (1/c) Ql_{g'}^T dlin_{g'})
            dKl[:, g0:g1] = np.einsum("bjp,bnp->bjn", V[:, g0:g1], dS)
            dV[:, g0:g1] += np.einsum("bjn,bnp->bjp", Kl[:, g0:g1], dS)
            # dQl_g = (1/c) dlin_g S_prev_g^T ;  dS_{g-1} = dS_g + (1/c) Ql_g^T dlin_g
            dQl[:, g0:g1] = sl * np.einsum("bip,bnp->bin", dAV_g, states[g])
            dS = dS + sl * np.einsum("bin,bip->bnp", Ql[:, g0:g1], dAV_g)
        else:
            # dQl_g = (1/L) dlin_g S_all^T ;  dS_all += (1/L) Ql_g^T dlin_g
            dQl[:, g0:g1] = sl * np.einsum("bip,bnp->bin", dAV_g, S_all)
            dS = dS + sl * np.einsum("bin,bip->bnp", Ql[:, g0:g1], dAV_g)
    if not causal:
        # S_all = Kl^T V:  dKl = V dS_all^T ;  dV += Kl dS_all
        dKl = np.einsum("bjp,bnp->bjn", V, dS)
        dV += np.einsum("bjn,bnp->bjp", Kl, dS)
    dx, dW_u, dW_v, dW_z, dgamma, dbeta = gates.backward(x, W_u, W_v, W_z, gamma, dU, dV, (dQq, dKq, dQl, dKl))
    return _finish((dx, dW_u, dW_v, dW_z, dgamma, dbeta, dW_o, dbias), originals, dt)


def materialized_vjp(x, W_u, W_v, W_z, gamma, beta, W_o, *, do, chunk: int, causal: bool = False,
                     bias=None) -> Dict[str, np.ndarray]:
    r"""The VJP of FLASH's mixed-chunk attention through the ``(l l)`` matrix ``A_bar = A_quad + A_lin``
    (:func:`refimpl.attention.gau.reference.materialized`): ``dA_bar = dAV V^T``, ``dV = A_bar^T dAV``, then
    ``dS = dA_bar * 2 relu(S)`` on the in-chunk pairs and ``dA_lin = dA_bar`` scaled on the linear pairs.

    Same arguments and result as :func:`chunked_vjp`.
    """
    originals = (x, W_u, W_v, W_z, gamma, beta, W_o, bias)
    (x, W_u, W_v, W_z, gamma, beta, W_o, bias, do), (b, l, d, p, n), dt, c, causal = _flash_prepare(
        x, W_u, W_v, W_z, gamma, beta, W_o, chunk, causal, bias, do)
    sq, sl = (dt.type(s) for s in flash_scales(l, c, causal))
    gates = _Gates(x, W_u, W_v, W_z, gamma, beta)
    U, V = gates.U, gates.V
    Qq, Kq, Ql, Kl = gates.rows
    i, j = np.arange(l)[:, None], np.arange(l)[None, :]
    same_chunk = (i // c) == (j // c)
    off = np.clip(j - i, -(c - 1), c - 1)
    S = np.einsum("bin,bjn->bij", Qq, Kq) * sq
    if bias is not None:
        S = S + np.where(same_chunk, bias[off + (c - 1)], dt.type(0))
    keep_quad = same_chunk & (j <= i) if causal else same_chunk
    A_quad = np.where(keep_quad, np.maximum(S, 0) ** 2, dt.type(0))
    keep_lin = (j // c) < (i // c) if causal else np.ones((l, l), dtype=bool)
    A_lin = np.where(keep_lin, np.einsum("bin,bjn->bij", Ql, Kl) * sl, dt.type(0))
    A_bar = A_quad + A_lin
    AV = np.einsum("bij,bjp->bip", A_bar, V)
    dW_o, dU, dAV = _output_backward(do, U, AV, W_o)
    # dA_bar = dAV V^T ;  dV = A_bar^T dAV
    dA_bar = np.einsum("bip,bjp->bij", dAV, V)
    dV = np.einsum("bij,bip->bjp", A_bar, dAV)
    # the quadratic part: dS = dA_bar * 2 relu(S) on the kept in-chunk pairs
    dS = np.where(keep_quad, dA_bar * (2 * np.maximum(S, 0)), dt.type(0))
    dQq = sq * np.einsum("bij,bjn->bin", dS, Kq)
    dKq = sq * np.einsum("bij,bin->bjn", dS, Qq)
    # the linear part: dA_lin = dA_bar on the linear pairs, times its scale
    dA_lin = np.where(keep_lin, dA_bar, dt.type(0)) * sl
    dQl = np.einsum("bij,bjn->bin", dA_lin, Kl)
    dKl = np.einsum("bij,bin->bjn", dA_lin, Ql)
    dbias = None
    if bias is not None:
        dS_sum = np.where(same_chunk, np.sum(dS, axis=0), dt.type(0))
        dbias = _bias_grad(dS_sum, off, c, dt)
    dx, dW_u, dW_v, dW_z, dgamma, dbeta = gates.backward(x, W_u, W_v, W_z, gamma, dU, dV, (dQq, dKq, dQl, dKl))
    return _finish((dx, dW_u, dW_v, dW_z, dgamma, dbeta, dW_o, dbias), originals, dt)
