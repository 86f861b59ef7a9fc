r"""Linear (kernelized) attention in every view, literal NumPy; and Performer attention.

Inputs are the *feature-mapped* queries and keys (apply a map of :mod:`refimpl.attention.features` first):
``phi_q (b l h n)``, ``phi_k (b s h n)``, ``v (b s h p)``; output ``o (b l h p)``.  Causal attention has
``s = l``; non-causal attention (view ``quadratic`` only) allows any query length ``l``.

State (``S_t = S_{t-1} + v_t phi(k_t)^T``, ``z_t = z_{t-1} + phi(k_t)``)
------------------------------------------------------------------------
* ``state_layout="vk"`` (default, the text's orientation): ``S (b h p n)``, ``S = sum_j v_j phi(k_j)^T``,
  read out as ``S phi(q)``; ``state_layout="kv"``: ``S (b h n p)``, the transpose (most GPU kernels' layout).
* the normalizer ``z (b h n)`` (``z = sum_j phi(k_j)``) exists only for ``normalize=True``.
* ``initial_state`` is the state before step 0 (default zero): the pair ``(S, z)`` when ``normalize=True``,
  the array ``S`` alone when ``normalize=False``.  ``return_final_state=True`` returns ``(o, final_state)``,
  the final state in the same form (equal to ``initial_state``, or zero, when there are no keys); feeding it
  back continues the sequence.

Output and epsilon
------------------
* ``normalize=False``: ``o_t = S_t phi(q_t)``.
* ``normalize=True``:  ``o_t = S_t phi(q_t) / (z_t^T phi(q_t) + eps)`` (``eps_mode="add"``, default ``eps = 0``),
  or ``/ max(z_t^T phi(q_t), eps)`` (``eps_mode="clamp"``).  The epsilon goes in the denominator only, after
  the dot product; it is never added to the features.  A zero denominator with ``eps = 0`` gives inf/NaN,
  exactly like the formula.  ``eps`` must be 0 when ``normalize=False`` (there is no denominator).

Views (one function each; every view takes the same keywords)
-------------------------------------------------------------
* :func:`quadratic` -- ``A = phi(Q) phi(K)^T`` materialized (lower-triangular part when causal),
  ``o = (A V + phi(Q) S_0^T) / (A 1 + phi(Q) z_0 + eps)``.  The only non-causal view.
* :func:`recurrent` -- the literal recurrence over ``t`` (causal).
* :func:`chunked` -- the masked quadratic form within a chunk, the state across chunks (causal).
* :func:`causal_recurrent_offsets` -- the recurrence with per-key log-offsets carried by a running
  (prefix) max, the causal-safe stabilizer for exponential features.
* :func:`performer_attention` -- softmax attention approximated with Performer random features.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from refimpl._validate import as_float_array, check_bool, check_choice, check_int, check_shape, result_dtype

__all__ = [
    "STATE_LAYOUTS",
    "EPS_MODES",
    "quadratic",
    "recurrent",
    "chunked",
    "causal_recurrent_offsets",
    "validate_linear",
    "performer_attention",
    "PERFORMER_STABILIZERS",
]

STATE_LAYOUTS = ("vk", "kv")
EPS_MODES = ("add", "clamp")


# ------------------------------------------------------------------ validation and state plumbing

def _check_eps(eps, normalize: bool):
    if isinstance(eps, (bool, np.bool_)) or not np.isscalar(eps) or not np.isreal(eps):
        raise TypeError(f"eps: expected a real number >= 0, got {type(eps).__name__} {eps!r}")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    if eps != 0 and not normalize:
        raise ValueError(f"eps: the epsilon is in the denominator of normalized attention; expected 0 with "
                         f"normalize=False, got {eps!r}")
    return float(eps)


def _split_initial_state(initial_state, normalize: bool):
    """``(S0, z0)`` from ``initial_state``: the pair ``(S, z)`` (normalized) or ``S`` alone (unnormalized)."""
    if initial_state is None:
        return None, None
    if normalize:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise TypeError(f"initial_state: expected the pair (S, z) for normalize=True, got "
                            f"{type(initial_state).__name__}")
        return initial_state
    if isinstance(initial_state, (tuple, list)):
        raise TypeError(f"initial_state: expected the array S alone for normalize=False (there is no normalizer "
                        f"z), got a {type(initial_state).__name__} of length {len(initial_state)}")
    return initial_state, None


def validate_linear(phi_q, phi_k, v, *, causal=True, normalize=True, eps=0.0, eps_mode="add", state_layout="vk",
                    initial_state=None, return_final_state=False, finite_inputs=True):
    """Validate every argument of a linear-attention view.

    ``finite_inputs=False`` leaves out the finiteness of ``phi_q``, ``phi_k`` and ``v`` (a fast kernel that checks
    them in its own pass, then raises this function's error through :func:`refimpl._validate.check_finite`).

    Returns ``(phi_q, phi_k, v, S0, z0, opts, dims)`` in the working dtype: ``S0 (b h p n)`` in the VxK
    orientation (zeros when not given), ``z0 (b h n)`` (zeros; ``None`` when ``normalize=False``), ``opts`` the
    checked options (``causal, normalize, eps, eps_mode, state_layout, return_final_state``) and
    ``dims = (b, l, s, h, n, p)``.
    """
    causal = check_bool(causal, "causal")
    normalize = check_bool(normalize, "normalize")
    return_final_state = check_bool(return_final_state, "return_final_state")
    check_choice(state_layout, "state_layout", STATE_LAYOUTS)
    check_choice(eps_mode, "eps_mode", EPS_MODES)
    eps = _check_eps(eps, normalize)
    phi_q = as_float_array(phi_q, "phi_q", ndim=4, allow_complex=False, finite=finite_inputs)
    b, l, h, n = phi_q.shape
    phi_k = as_float_array(phi_k, "phi_k", ndim=4, allow_complex=False, finite=finite_inputs)
    if causal:
        check_shape(phi_k, "phi_k", (b, l, h, n), "(b, l, h, n) like phi_q (causal)")
    else:
        check_shape(phi_k, "phi_k", (b, None, h, n), "(b, s, h, n) with b, h, n from phi_q")
    s = phi_k.shape[1]
    v = as_float_array(v, "v", ndim=4, allow_complex=False, finite=finite_inputs)
    check_shape(v, "v", (b, s, h, None), "(b, s, h, p) with b, s, h from phi_k")
    p = v.shape[3]
    S0, z0 = _split_initial_state(initial_state, normalize)
    if S0 is not None:
        S0 = as_float_array(S0, "initial_state" + ("[0] (S)" if normalize else ""), ndim=4, allow_complex=False)
        name = "initial_state" + ("[0] (S)" if normalize else "")
        if state_layout == "vk":
            check_shape(S0, name, (b, h, p, n), "(b, h, p, n) for state_layout 'vk'",
                        src="b, h, n from phi_q, p from v")
        else:
            check_shape(S0, name, (b, h, n, p), "(b, h, n, p) for state_layout 'kv'",
                        src="b, h, n from phi_q, p from v")
            S0 = np.swapaxes(S0, -1, -2)
    if z0 is not None:
        z0 = as_float_array(z0, "initial_state[1] (z)", ndim=3, allow_complex=False)
        check_shape(z0, "initial_state[1] (z)", (b, h, n), "(b, h, n)", src="b, h, n from phi_q")
    dtype = result_dtype(phi_q, phi_k, v, S0, z0)
    S0 = np.zeros((b, h, p, n), dtype=dtype) if S0 is None else S0.astype(dtype)  # a copy: the views update it
    if normalize:
        z0 = np.zeros((b, h, n), dtype=dtype) if z0 is None else z0.astype(dtype)
    opts = dict(causal=causal, normalize=normalize, eps=dtype.type(eps), eps_mode=eps_mode,
                state_layout=state_layout, return_final_state=return_final_state)
    c = lambda a: a.astype(dtype, copy=False)  # noqa: E731
    return c(phi_q), c(phi_k), c(v), S0, z0, opts, (b, l, s, h, n, p)


def _final_state(S_vk, z, opts):
    """The final state in the caller's form: ``(S, z)`` (normalized) or ``S``, ``S`` in ``opts["state_layout"]``."""
    S = S_vk if opts["state_layout"] == "vk" else np.ascontiguousarray(np.swapaxes(S_vk, -1, -2))
    return (S, z) if opts["normalize"] else S


def _output(o, S_vk, z, opts):
    return (o, _final_state(S_vk, z, opts)) if opts["return_final_state"] else o


def _require_causal(opts, view):
    if not opts["causal"]:
        raise ValueError(f"causal: the {view!r} view is causal; non-causal attention (causal=False) is the "
                         f"'quadratic' view")


def _normalized(num, den, eps, eps_mode):
    # o = num / (den + eps)  ('add')   or   num / max(den, eps)  ('clamp')
    if eps_mode == "add":
        return num / (den + eps)[..., None]
    return num / np.maximum(den, eps)[..., None]


# ------------------------------------------------------------------ the views

def quadratic(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
              eps_mode: str = "add", state_layout: str = "vk", initial_state=None, return_final_state: bool = False):
    r"""The materialized view: ``A_ij = phi(q_i)^T phi(k_j)`` (kept for ``j <= i`` when causal),
    ``o = (A V + phi(Q) S_0^T) / (A 1 + phi(Q) z_0 + eps)``.

    ``phi_q (b l h n)``, ``phi_k (b s h n)``, ``v (b s h p)`` (``s = l`` when causal) -> ``o (b l h p)``.
    The final state is ``S_L = S_0 + sum_j v_j phi(k_j)^T``, ``z_L = z_0 + sum_j phi(k_j)``.
    """
    phi_q, phi_k, v, S0, z0, opts, (b, l, s, h, n, p) = validate_linear(
        phi_q, phi_k, v, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode, state_layout=state_layout,
        initial_state=initial_state, return_final_state=return_final_state)
    # A_ij = phi(q_i) . phi(k_j)   (j <= i when causal)
    A = np.einsum("bihn,bjhn->bhij", phi_q, phi_k)
    if opts["causal"]:
        A = A * np.tril(np.ones((l, s), dtype=A.dtype))
    # num_i = sum_j A_ij v_j + S_0 phi(q_i)
    o = np.einsum("bhij,bjhp->bihp", A, v) + np.einsum("bhpn,bihn->bihp", S0, phi_q)
    if opts["normalize"]:
        # den_i = sum_j A_ij + z_0 . phi(q_i)
        den = np.einsum("bhij->bih", A) + np.einsum("bhn,bihn->bih", z0, phi_q)
        o = _normalized(o, den, opts["eps"], eps_mode)
    # S_L = S_0 + sum_j v_j phi(k_j)^T ;  z_L = z_0 + sum_j phi(k_j)
    S_L = S0 + np.einsum("bjhp,bjhn->bhpn", v, phi_k)
    z_L = z0 + np.sum(phi_k, axis=1) if opts["normalize"] else None
    return _output(o, S_L, z_L, opts)


def recurrent(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
              eps_mode: str = "add", state_layout: str = "vk", initial_state=None, return_final_state: bool = False):
    r"""The recurrence ``S_t = S_{t-1} + v_t phi(k_t)^T``, ``z_t = z_{t-1} + phi(k_t)``,
    ``o_t = S_t phi(q_t) / (z_t^T phi(q_t) + eps)`` (causal).  Shapes as :func:`quadratic` with ``s = l``."""
    phi_q, phi_k, v, S_t, z_t, opts, (b, l, s, h, n, p) = validate_linear(
        phi_q, phi_k, v, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode, state_layout=state_layout,
        initial_state=initial_state, return_final_state=return_final_state)
    _require_causal(opts, "recurrent")
    o = np.zeros((b, l, h, p), dtype=phi_q.dtype)
    for t in range(l):
        # S_t = S_{t-1} + v_t phi(k_t)^T
        S_t = S_t + v[:, t, :, :, None] * phi_k[:, t, :, None, :]
        # o_t = S_t phi(q_t)
        o_t = np.einsum("bhpn,bhn->bhp", S_t, phi_q[:, t])
        if opts["normalize"]:
            # z_t = z_{t-1} + phi(k_t);  o_t = S_t phi(q_t) / (z_t . phi(q_t) + eps)
            z_t = z_t + phi_k[:, t]
            o_t = _normalized(o_t, np.einsum("bhn,bhn->bh", z_t, phi_q[:, t]), opts["eps"], eps_mode)
        o[:, t] = o_t
    return _output(o, S_t, z_t, opts)


def chunked(phi_q, phi_k, v, *, causal: bool = True, normalize: bool = True, eps: float = 0.0,
            eps_mode: str = "add", state_layout: str = "vk", initial_state=None, return_final_state: bool = False,
            chunk: int = 64):
    r"""The chunked view (any ``chunk >= 1``, any ``l``; the last chunk may be short; causal).

    For a chunk ``[t0, t0+c)`` entered with state ``(S, z)``:

    * ``num_i = S phi(q_i) + sum_{t0 <= j <= i} (phi(q_i)^T phi(k_j)) v_j``  (inter + intra)
    * ``den_i = z^T phi(q_i) + sum_{t0 <= j <= i} phi(q_i)^T phi(k_j)``
    * ``S <- S + sum_{j in chunk} v_j phi(k_j)^T``,  ``z <- z + sum_j phi(k_j)``.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    phi_q, phi_k, v, S, z, opts, (b, l, s, h, n, p) = validate_linear(
        phi_q, phi_k, v, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode, state_layout=state_layout,
        initial_state=initial_state, return_final_state=return_final_state)
    _require_causal(opts, "chunked")
    dt = phi_q.dtype
    o = np.zeros((b, l, h, p), dtype=dt)
    for t0 in range(0, l, chunk):
        Qc, Kc, Vc = phi_q[:, t0:t0 + chunk], phi_k[:, t0:t0 + chunk], v[:, t0:t0 + chunk]
        c = Qc.shape[1]
        # intra: A_ij = phi(q_i) . phi(k_j) [j <= i] within the chunk
        A = np.einsum("bihn,bjhn->bhij", Qc, Kc) * np.tril(np.ones((c, c), dtype=dt))
        # num_i = S phi(q_i) + sum_j A_ij v_j
        num = np.einsum("bhpn,bihn->bihp", S, Qc) + np.einsum("bhij,bjhp->bihp", A, Vc)
        if opts["normalize"]:
            # den_i = z . phi(q_i) + sum_j A_ij
            den = np.einsum("bhn,bihn->bih", z, Qc) + np.einsum("bhij->bih", A)
            num = _normalized(num, den, opts["eps"], eps_mode)
            # z <- z + sum_j phi(k_j)
            z = z + np.sum(Kc, axis=1)
        o[:, t0:t0 + c] = num
        # S <- S + sum_j v_j phi(k_j)^T
        S = S + np.einsum("bjhp,bjhn->bhpn", Vc, Kc)
    return _output(o, S, z, opts)


def _check_scaled_keys(phi_q, phi_k_scaled):
    """``phi_k_scaled (b l h n)`` like ``phi_q``, checked under its own name (the views call it ``phi_k``)."""
    phi_q = as_float_array(phi_q, "phi_q", ndim=4, allow_complex=False)
    phi_k_scaled = as_float_array(phi_k_scaled, "phi_k_scaled", ndim=4, allow_complex=False)
    check_shape(phi_k_scaled, "phi_k_scaled", phi_q.shape, "(b, l, h, n) like phi_q (causal)")
    return phi_k_scaled


def causal_recurrent_offsets(phi_q, phi_k_scaled, k_offset, v, *, normalize: bool = True, eps: float = 0.0,
                             eps_mode: str = "add"):
    r"""Causal linear attention with stabilized key features, exact and causal-safe.

    The true key features are ``phi(k_j) = phi_k_scaled_j exp(c_j)`` (``k_offset = c``, shape
    ``(b l h)``, e.g. from ``positive_features(..., stabilizer="row_max", return_offset=True)``).
    The state is kept scaled by the **running (prefix) max** ``m_t = max_{j <= t} c_j``:

    * ``S~_t = exp(m_{t-1} - m_t) S~_{t-1} + exp(c_t - m_t) v_t phi~(k_t)^T``  (so ``S_t = exp(m_t) S~_t``)
    * ``z~_t`` likewise;  ``o_t = S~_t phi(q_t) / (z~_t^T phi(q_t) + eps exp(-m_t))`` (normalized), or
      ``exp(m_t) S~_t phi(q_t)`` (unnormalized).

    In exact arithmetic this equals :func:`recurrent` on the true features (``eps`` keeps its meaning), and
    ``o_t`` depends only on keys ``j <= t`` -- unlike a max over all positions.  No initial or final state.
    """
    phi_k_scaled = _check_scaled_keys(phi_q, phi_k_scaled)
    phi_q, phi_k, v, _, _, opts, (b, l, s, h, n, p) = validate_linear(phi_q, phi_k_scaled, v, normalize=normalize,
                                                                       eps=eps, eps_mode=eps_mode)
    c = as_float_array(k_offset, "k_offset", ndim=3, allow_complex=False)
    check_shape(c, "k_offset", (b, l, h), "(b, l, h)", src="b, l, h from phi_q")
    dt = phi_q.dtype
    eps = opts["eps"]
    S_t = np.zeros((b, h, p, n), dtype=dt)
    z_t = np.zeros((b, h, n), dtype=dt)
    m_prev = np.full((b, h), -np.inf, dtype=dt)
    o = np.zeros((b, l, h, p), dtype=dt)
    for t in range(l):
        # m_t = max(m_{t-1}, c_t)
        m_t = np.maximum(m_prev, c[:, t])
        decay = np.where(np.isneginf(m_prev), 0.0, np.exp(m_prev - m_t))
        w = np.exp(c[:, t] - m_t)
        # S~_t = exp(m_{t-1} - m_t) S~_{t-1} + exp(c_t - m_t) v_t phi~(k_t)^T
        S_t = decay[..., None, None] * S_t + w[..., None, None] * v[:, t, :, :, None] * phi_k[:, t, :, None, :]
        z_t = decay[..., None] * z_t + w[..., None] * phi_k[:, t]
        num = np.einsum("bhpn,bhn->bhp", S_t, phi_q[:, t])
        if opts["normalize"]:
            den = np.einsum("bhn,bhn->bh", z_t, phi_q[:, t])
            # o_t = num~ / (den~ + eps exp(-m_t))
            with np.errstate(over="ignore"):
                scaled_eps = np.zeros_like(m_t) if eps == 0 else eps * np.exp(-m_t)
            num = _normalized(num, den, scaled_eps, eps_mode)
        else:
            # o_t = exp(m_t) S~_t phi(q_t)
            num = num * np.exp(m_t)[..., None]
        o[:, t] = num
        m_prev = m_t
    return o


# ------------------------------------------------------------------ Performer

PERFORMER_STABILIZERS = ("none", "query_max", "key_global_max", "key_prefix_max")
_VIEWS = {"quadratic": quadratic, "recurrent": recurrent, "chunked": chunked}


def _performer_scale(scale, n):
    if scale is None:
        return 1.0 / math.sqrt(n) if n > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not np.isscalar(scale) or not np.isreal(scale):
        raise TypeError(f"scale: expected a real number > 0 or None, got {type(scale).__name__} {scale!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a finite number > 0 (it is split as sqrt(scale) on q and k), "
                         f"got {scale!r}")
    return float(scale)


def performer_attention(q, k, v, W, *, kind: str = "positive", causal: bool = False, normalize: bool = True,
                        eps: float = 0.0, scale: Optional[float] = None, stabilizer: str = "none",
                        view: str = "quadratic", chunk: int = 64):
    r"""Softmax attention approximated with Performer random features (FAVOR+ for ``kind="positive"``).

    ``q (b l h n)``, ``k (b s h n)``, ``v (b s h p)`` (``s = l`` when causal), ``W (f n)``.  Queries and keys are
    multiplied by ``scale**0.5`` (``scale=None`` -> ``n^{-1/2}``) so that ``E[phi(q').phi(k')] = exp(scale q.k)``;
    then linear attention in ``view`` (``quadratic``, the only non-causal view; ``recurrent`` or ``chunked`` when
    causal).

    ``stabilizer`` (see :mod:`refimpl.attention.features.reference`): ``"none"``; ``"query_max"`` (per-query
    offset, cancels when normalized and ``eps=0``); ``"key_global_max"`` (one offset over all keys:
    cancels when normalized and ``eps=0``, but a causal output then depends on future keys);
    ``"key_prefix_max"`` (causal only, view ``recurrent`` only: per-key offsets carried by a running max, exact
    and causal-safe; :func:`causal_recurrent_offsets`).
    """
    from refimpl.attention.features.reference import FEATURE_KINDS, random_features

    causal = check_bool(causal, "causal")
    check_choice(kind, "kind", FEATURE_KINDS)
    check_choice(stabilizer, "stabilizer", PERFORMER_STABILIZERS)
    check_choice(view, "view", tuple(_VIEWS))
    chunk = check_int(chunk, "chunk", minimum=1)  # every view: a bad chunk is never silently ignored
    q = as_float_array(q, "q", ndim=4, allow_complex=False)
    b, l, h, n = q.shape
    k = as_float_array(k, "k", ndim=4, allow_complex=False)
    if causal:
        check_shape(k, "k", (b, l, h, n), "(b, l, h, n) like q (causal)")
    else:
        check_shape(k, "k", (b, None, h, n), "(b, s, h, n) with b, h, n from q")
    v = as_float_array(v, "v", ndim=4, allow_complex=False)
    check_shape(v, "v", (b, k.shape[1], h, None), "(b, s, h, p) with b, s, h from k")
    if not causal and view != "quadratic":
        raise ValueError(f"view: non-causal attention (causal=False) is the 'quadratic' view, got {view!r}")
    if kind == "trig" and stabilizer != "none":
        raise ValueError(f"stabilizer: only 'none' applies to trigonometric features, got {stabilizer!r}")
    if stabilizer == "key_prefix_max" and not causal:
        raise ValueError("stabilizer: 'key_prefix_max' is the causal-safe form and needs causal=True; "
                         "use 'key_global_max' for non-causal attention")
    if stabilizer == "key_prefix_max" and view != "recurrent":
        raise ValueError(f"view: the 'key_prefix_max' stabilizer carries its offsets through the recurrence and "
                         f"needs view='recurrent', got {view!r}")
    r = math.sqrt(_performer_scale(scale, n))  # a Python float: float32 inputs stay float32
    # q' = sqrt(scale) q,  k' = sqrt(scale) k  =>  exp(q'.k') = exp(scale q.k)
    qs, ks = q * r, k * r
    phi_q = random_features(qs, W, kind, **({"stabilizer": "row_max"} if stabilizer == "query_max" else {}))
    if stabilizer == "key_prefix_max":
        phi_k, c = random_features(ks, W, kind, stabilizer="row_max", return_offset=True)
        return causal_recurrent_offsets(phi_q, phi_k, c, v, normalize=normalize, eps=eps)
    phi_k = random_features(ks, W, kind, **({"stabilizer": "global_max"} if stabilizer == "key_global_max" else {}))
    kw = dict(causal=causal, normalize=normalize, eps=eps)
    if view == "chunked":
        kw["chunk"] = chunk
    return _VIEWS[view](phi_q, phi_k, v, **kw)
