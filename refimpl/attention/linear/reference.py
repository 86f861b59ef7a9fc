r"""Linear (kernelized) attention in every view.

Inputs are the *feature-mapped* queries and keys (apply a map of :mod:`.features` first):

* ``phi_q``: ``(b l h n)``, ``phi_k``: ``(b l h n)``, ``v``: ``(b l h e)``; output ``o``: ``(b l h e)``.
  (Non-causal attention allows ``phi_q`` of a different length ``lq``.)

State (the text's ``S_t = S_{t-1} + v_t phi(k_t)^T``, ``u_t = u_{t-1} + phi(k_t)``)
-----------------------------------------------------------------------------------
* ``layout="vk"`` (default, the text's orientation): ``S`` is ``(b h e n)``, ``S = sum_j v_j phi(k_j)^T``
  and the readout is ``S phi(q)``.
* ``layout="kv"``: ``S`` is ``(b h n e)``, ``S = sum_j phi(k_j) v_j^T`` (the transpose; the
  layout of most GPU kernels), readout ``S^T phi(q)``.
* ``u`` is ``(b h n)``.  ``S0``, ``u0`` (optional) are the state *before* step 0 (default 0);
  ``return_state=True`` also returns ``(S_L, u_L)`` (equal to ``(S0, u0)`` when ``L = 0``);
  feeding them back continues the sequence.

Output and epsilon
------------------
* ``normalize=False``: ``o_t = S_t phi(q_t)`` (``u`` is still tracked and returned).
* ``normalize=True``:  ``o_t = S_t phi(q_t) / (u_t^T phi(q_t) + eps)`` with ``eps_mode="add"``
  (default ``eps = 0``: no epsilon), or ``/ max(u_t^T phi(q_t), eps)`` with ``eps_mode="clamp"``.
  The epsilon goes **in the denominator only, after the dot product**; it is never added to the
  features.  A zero denominator with ``eps = 0`` gives inf/NaN, exactly like the formula.

Views
-----
* :func:`noncausal` -- ``o_i = (S phi(q_i)) / (u^T phi(q_i) + eps)``, ``S = sum_j v_j phi(k_j)^T``.
* :func:`causal_quadratic` -- the masked ``L x L`` form ``A = tril(phi(Q) phi(K)^T)``,
  ``o = A V / (A 1 + eps)``.
* :func:`causal_recurrent` -- the literal recurrence over ``t``.
* :func:`causal_chunked` -- within a chunk the masked quadratic form, across chunks the state.
* :func:`causal_recurrent_offsets` -- the recurrence with per-key log-offsets carried by a running
  (prefix) max, the causal-safe stabilizer for exponential features.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_choice, check_int, check_shape, result_dtype

__all__ = [
    "LAYOUTS",
    "noncausal",
    "causal_quadratic",
    "causal_recurrent",
    "causal_chunked",
    "causal_recurrent_offsets",
    "validate_linear",
    "performer_attention",
]

LAYOUTS = ("vk", "kv")
EPS_MODES = ("add", "clamp")


def validate_linear(phi_q, phi_k, v, S0=None, u0=None, *, layout="vk", eps=0.0, eps_mode="add", causal=True):
    """Validate shapes/dtypes; return ``(phi_q, phi_k, v, S0_vk, u0, eps, dims)`` (S0 in VxK layout)."""
    check_choice(layout, "layout", LAYOUTS)
    check_choice(eps_mode, "eps_mode", EPS_MODES)
    phi_k = as_float_array(phi_k, "phi_k", ndim=4, allow_complex=False)
    b, l, h, n = phi_k.shape
    phi_q = as_float_array(phi_q, "phi_q", ndim=4, allow_complex=False)
    if causal:
        check_shape(phi_q, "phi_q", (b, l, h, n), "(b, l, h, n) like phi_k")
    else:
        check_shape(phi_q, "phi_q", (b, None, h, n), "(b, lq, h, n) with b, h, n from phi_k")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, l, h, None), "(b, l, h, e) with b, l, h from phi_k")
    e = v.shape[3]
    if S0 is not None:
        S0 = as_float_array(S0, "S0", ndim=4, allow_complex=False)
        if layout == "vk":
            check_shape(S0, "S0", (b, h, e, n), "(b, h, e, n) for layout 'vk'")
        else:
            check_shape(S0, "S0", (b, h, n, e), "(b, h, n, e) for layout 'kv'")
            S0 = np.swapaxes(S0, -1, -2)
    if u0 is not None:
        u0 = as_float_array(u0, "u0", ndim=3, allow_complex=False)
        check_shape(u0, "u0", (b, h, n), "(b, h, n)")
    if isinstance(eps, (bool, np.bool_)) or not np.isscalar(eps) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    dtype = result_dtype(phi_q, phi_k, v, S0, u0)
    c = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    return c(phi_q), c(phi_k), c(v), c(S0), c(u0), dtype.type(eps), dict(b=b, l=l, h=h, n=n, e=e, lq=phi_q.shape[1])


def _divide(num, den, eps, eps_mode):
    # o = num / (den + eps)   or   num / max(den, eps)
    if eps_mode == "add":
        return num / (den + eps)[..., None]
    return num / np.maximum(den, eps)[..., None]


def _state_out(S_vk, u, layout):
    return (S_vk if layout == "vk" else np.swapaxes(S_vk, -1, -2)).copy(), u.copy()


def noncausal(phi_q, phi_k, v, *, normalize: bool = True, eps: float = 0.0, eps_mode: str = "add",
              S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    r"""``o_i = S phi(q_i) / (u^T phi(q_i) + eps)`` with ``S = S0 + sum_j v_j phi(k_j)^T``, ``u = u0 + sum_j phi(k_j)``.

    ``phi_q`` may have any length ``lq``.  Computed as ``phi(Q) (phi(K)^T V)``: never forms ``L x L``.
    """
    phi_q, phi_k, v, S0, u0, eps, d = validate_linear(phi_q, phi_k, v, S0, u0, layout=layout, eps=eps,
                                                      eps_mode=eps_mode, causal=False)
    # S = sum_j v_j phi(k_j)^T    (b h e n)
    S = np.einsum("blhe,blhn->bhen", v, phi_k)
    # u = sum_j phi(k_j)          (b h n)
    u = np.sum(phi_k, axis=1)
    if S0 is not None:
        S = S + S0
    if u0 is not None:
        u = u + u0
    # num_i = S phi(q_i)
    o = np.einsum("bhen,bihn->bihe", S, phi_q)
    if normalize:
        # den_i = u^T phi(q_i)
        den = np.einsum("bhn,bihn->bih", u, phi_q)
        o = _divide(o, den, eps, eps_mode)
    return (o, *_state_out(S, u, layout)) if return_state else o


def causal_quadratic(phi_q, phi_k, v, *, normalize: bool = True, eps: float = 0.0, eps_mode: str = "add",
                     S0=None, u0=None, layout: str = "vk"):
    r"""Masked quadratic view: ``A_ij = phi(q_i)^T phi(k_j) [j <= i]``; ``o = (A V + phi(Q) S0^T) / (A 1 + phi(Q) u0 + eps)``."""
    phi_q, phi_k, v, S0, u0, eps, d = validate_linear(phi_q, phi_k, v, S0, u0, layout=layout, eps=eps,
                                                      eps_mode=eps_mode)
    l = d["l"]
    # A_ij = phi(q_i) . phi(k_j), kept for j <= i
    A = np.einsum("bihn,bjhn->bhij", phi_q, phi_k) * np.tril(np.ones((l, l), dtype=phi_q.dtype))
    # num_i = sum_j A_ij v_j  (+ S0 phi(q_i))
    o = np.einsum("bhij,bjhe->bihe", A, v)
    if S0 is not None:
        o = o + np.einsum("bhen,bihn->bihe", S0, phi_q)
    if normalize:
        # den_i = sum_j A_ij  (+ u0 . phi(q_i))
        den = np.einsum("bhij->bih", A)
        if u0 is not None:
            den = den + np.einsum("bhn,bihn->bih", u0, phi_q)
        o = _divide(o, den, eps, eps_mode)
    return o


def causal_recurrent(phi_q, phi_k, v, *, normalize: bool = True, eps: float = 0.0, eps_mode: str = "add",
                     S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    r"""The recurrence ``S_t = S_{t-1} + v_t phi(k_t)^T``, ``u_t = u_{t-1} + phi(k_t)``,
    ``o_t = S_t phi(q_t) / (u_t^T phi(q_t) + eps)``."""
    phi_q, phi_k, v, S0, u0, eps, d = validate_linear(phi_q, phi_k, v, S0, u0, layout=layout, eps=eps,
                                                      eps_mode=eps_mode)
    b, l, h, n, e = d["b"], d["l"], d["h"], d["n"], d["e"]
    dt = phi_q.dtype
    S_t = np.zeros((b, h, e, n), dtype=dt) if S0 is None else S0.copy()
    u_t = np.zeros((b, h, n), dtype=dt) if u0 is None else u0.copy()
    o = np.zeros((b, l, h, e), dtype=dt)
    for t in range(l):
        # S_t = S_{t-1} + v_t phi(k_t)^T
        S_t = S_t + v[:, t, :, :, None] * phi_k[:, t, :, None, :]
        # u_t = u_{t-1} + phi(k_t)
        u_t = u_t + phi_k[:, t]
        # o_t = S_t phi(q_t)  [/ (u_t^T phi(q_t) + eps)]
        num = np.einsum("bhen,bhn->bhe", S_t, phi_q[:, t])
        if normalize:
            den = np.einsum("bhn,bhn->bh", u_t, phi_q[:, t])
            num = _divide(num, den, eps, eps_mode)
        o[:, t] = num
    return (o, *_state_out(S_t, u_t, layout)) if return_state else o


def causal_chunked(phi_q, phi_k, v, *, chunk: int = 64, normalize: bool = True, eps: float = 0.0,
                   eps_mode: str = "add", S0=None, u0=None, layout: str = "vk", return_state: bool = False):
    r"""Chunked view (any ``chunk >= 1``, any ``L``; the last chunk may be short).

    For a chunk ``[s, s+T)`` entered with state ``(S_s, u_s)``:

    * ``num_i = S_s phi(q_i) + sum_{s <= j <= i} (phi(q_i)^T phi(k_j)) v_j``  (inter + intra)
    * ``den_i = u_s^T phi(q_i) + sum_{s <= j <= i} phi(q_i)^T phi(k_j)``
    * ``S_{s+T} = S_s + sum_{j in chunk} v_j phi(k_j)^T``,  ``u_{s+T} = u_s + sum_j phi(k_j)``.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    phi_q, phi_k, v, S0, u0, eps, d = validate_linear(phi_q, phi_k, v, S0, u0, layout=layout, eps=eps,
                                                      eps_mode=eps_mode)
    b, l, h, n, e = d["b"], d["l"], d["h"], d["n"], d["e"]
    dt = phi_q.dtype
    S_s = np.zeros((b, h, e, n), dtype=dt) if S0 is None else S0.copy()
    u_s = np.zeros((b, h, n), dtype=dt) if u0 is None else u0.copy()
    o = np.zeros((b, l, h, e), dtype=dt)
    for s in range(0, l, chunk):
        Qc, Kc, Vc = phi_q[:, s:s + chunk], phi_k[:, s:s + chunk], v[:, s:s + chunk]
        T = Qc.shape[1]
        # intra: A_ij = phi(q_i).phi(k_j) [j <= i] within the chunk
        A = np.einsum("bihn,bjhn->bhij", Qc, Kc) * np.tril(np.ones((T, T), dtype=dt))
        # num_i = S_s phi(q_i) + sum_j A_ij v_j
        num = np.einsum("bhen,bihn->bihe", S_s, Qc) + np.einsum("bhij,bjhe->bihe", A, Vc)
        if normalize:
            # den_i = u_s . phi(q_i) + sum_j A_ij
            den = np.einsum("bhn,bihn->bih", u_s, Qc) + np.einsum("bhij->bih", A)
            num = _divide(num, den, eps, eps_mode)
        o[:, s:s + T] = num
        # S_{s+T} = S_s + sum_j v_j phi(k_j)^T ;  u_{s+T} = u_s + sum_j phi(k_j)
        S_s = S_s + np.einsum("bjhe,bjhn->bhen", Vc, Kc)
        u_s = u_s + np.sum(Kc, axis=1)
    return (o, *_state_out(S_s, u_s, layout)) if return_state else o


def causal_recurrent_offsets(phi_q, phi_k_scaled, k_offset, v, *, normalize: bool = True, eps: float = 0.0,
                             eps_mode: str = "add"):
    r"""Causal linear attention with stabilized key features, exact and causal-safe.

    The true key features are ``phi(k_j) = phi_k_scaled_j exp(c_j)`` (``k_offset = c``, shape
    ``(b l h)``, e.g. from ``positive_features(..., stabilizer="row_max", return_offset=True)``).
    The state is kept scaled by the **running (prefix) max** ``m_t = max_{j <= t} c_j``:

    * ``S~_t = exp(m_{t-1} - m_t) S~_{t-1} + exp(c_t - m_t) v_t phi~(k_t)^T``  (so ``S_t = exp(m_t) S~_t``)
    * ``u~_t`` likewise;  ``o_t = S~_t phi(q_t) / (u~_t^T phi(q_t) + eps exp(-m_t))`` (normalized), or
      ``exp(m_t) S~_t phi(q_t)`` (unnormalized).

    In exact arithmetic this equals :func:`causal_recurrent` on the true features (``eps`` keeps its
    meaning), and ``o_t`` depends only on keys ``j <= t`` -- unlike a max over all positions.
    """
    phi_q, phi_k, v, _, _, eps, d = validate_linear(phi_q, phi_k_scaled, v, eps=eps, eps_mode=eps_mode)
    b, l, h, n, e = d["b"], d["l"], d["h"], d["n"], d["e"]
    c = as_float_array(k_offset, "k_offset", ndim=3, allow_complex=False)
    check_shape(c, "k_offset", (b, l, h), "(b, l, h)")
    dt = phi_q.dtype
    S_t = np.zeros((b, h, e, n), dtype=dt)
    u_t = np.zeros((b, h, n), dtype=dt)
    m_prev = np.full((b, h), -np.inf, dtype=dt)
    o = np.zeros((b, l, h, e), dtype=dt)
    for t in range(l):
        # m_t = max(m_{t-1}, c_t)
        m_t = np.maximum(m_prev, c[:, t])
        decay = np.where(np.isneginf(m_prev), 0.0, np.exp(m_prev - m_t))
        w = np.exp(c[:, t] - m_t)
        # S~_t = exp(m_{t-1} - m_t) S~_{t-1} + exp(c_t - m_t) v_t phi~(k_t)^T
        S_t = decay[..., None, None] * S_t + w[..., None, None] * v[:, t, :, :, None] * phi_k[:, t, :, None, :]
        u_t = decay[..., None] * u_t + w[..., None] * phi_k[:, t]
        num = np.einsum("bhen,bhn->bhe", S_t, phi_q[:, t])
        if normalize:
            den = np.einsum("bhn,bhn->bh", u_t, phi_q[:, t])
            # o_t = num~ / (den~ + eps exp(-m_t))
            with np.errstate(over="ignore"):
                scaled_eps = np.zeros_like(m_t) if eps == 0 else eps * np.exp(-m_t)
            if eps_mode == "add":
                num = num / (den + scaled_eps)[..., None]
            else:
                num = num / np.maximum(den, scaled_eps)[..., None]
        else:
            # o_t = exp(m_t) S~_t phi(q_t)
            num = num * np.exp(m_t)[..., None]
        o[:, t] = num
        m_prev = m_t
    return o


PERFORMER_STABILIZERS = ("none", "query_max", "key_global_max", "key_prefix_max")


def performer_attention(q, k, v, W, *, kind: str = "positive", causal: bool = False, normalize: bool = True,
                        eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                        view: str = "recurrent", chunk: int = 64):
    r"""Approximate softmax attention with Performer random features (FAVOR+ for ``kind="positive"``).

    ``q, k (b l h d)``, ``v (b l h e)``, ``W (m d)``.  Queries and keys are scaled by
    ``scale**0.5`` (``scale=None`` -> ``1/sqrt(d)``) so that ``E[phi(q').phi(k')] = exp(scale q.k)``;
    then linear attention (``causal=False``: :func:`noncausal`; ``causal=True``: ``view`` in
    ``"quadratic"``, ``"recurrent"``, ``"chunked"``).

    ``stabilizer`` (see :mod:`refimpl.attention.features.reference`): ``"none"``; ``"query_max"`` (per-query
    offset, cancels when normalized and ``eps=0``); ``"key_global_max"`` (one offset over all keys:
    cancels when normalized and ``eps=0``, but a causal output then depends on future keys);
    ``"key_prefix_max"`` (causal only: per-key offsets carried by a running max, exact and causal-safe;
    uses :func:`causal_recurrent_offsets`, ignoring ``view``).
    """
    from refimpl.attention.features.reference import random_features

    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    check_choice(stabilizer, "stabilizer", PERFORMER_STABILIZERS)
    check_choice(view, "view", ("quadratic", "recurrent", "chunked"))
    if kind == "trig" and stabilizer != "none":
        raise ValueError(f"stabilizer: only 'none' applies to trigonometric features, got {stabilizer!r}")
    if stabilizer == "key_prefix_max" and not causal:
        raise ValueError("stabilizer: 'key_prefix_max' is the causal-safe form and needs causal=True; "
                         "use 'key_global_max' for non-causal attention")
    d = q.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(d) if d > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not np.isscalar(scale) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a finite number > 0 (it is split as sqrt(scale) on q and k), got {scale!r}")
    r = math.sqrt(float(scale))  # a Python float: float32 inputs stay float32
    # q' = sqrt(scale) q,  k' = sqrt(scale) k  =>  exp(q'.k') = exp(scale q.k)
    qs, ks = q * r, k * r
    fq = {"stabilizer": "row_max"} if stabilizer == "query_max" else {}
    phi_q = random_features(qs, W, kind, **fq)
    if stabilizer == "key_global_max":
        phi_k = random_features(ks, W, kind, stabilizer="global_max")
    elif stabilizer == "key_prefix_max":
        phi_k, c = random_features(ks, W, kind, stabilizer="row_max", return_offset=True)
        return causal_recurrent_offsets(phi_q, phi_k, c, v, normalize=normalize, eps=eps)
    else:
        phi_k = random_features(ks, W, kind)
    kw = dict(normalize=normalize, eps=eps)
    if not causal:
        return noncausal(phi_q, phi_k, v, **kw)
    if view == "quadratic":
        return causal_quadratic(phi_q, phi_k, v, **kw)
    if view == "recurrent":
        return causal_recurrent(phi_q, phi_k, v, **kw)
    return causal_chunked(phi_q, phi_k, v, chunk=chunk, **kw)
