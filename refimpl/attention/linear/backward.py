r"""The backward pass of linear attention: the vector-Jacobian product, written literally (no autodiff).

The forward (:mod:`refimpl.attention.linear.reference`), per batch entry and head, steps ``t = 1..L``::

    S_t = S_{t-1} + v_t phi(k_t)^T        (p n)      z_t = z_{t-1} + phi(k_t)      (n)
    num_t = S_t phi(q_t)                  (p)        a_t = z_t . phi(q_t)
    den_t = a_t + eps  ('add')  or  max(a_t, eps)  ('clamp')
    o_t = num_t / den_t  (normalize=True)   or   o_t = num_t  (normalize=False)

with ``S_0``, ``z_0`` the initial state.  Given the cotangent ``do`` of ``o`` (a real loss
``L = sum do * o + <d_final_state, (S_L, z_L)>``), the adjoint equations are, per step::

    dnum_t = do_t / den_t                                   (do_t when normalize=False)
    da_t   = -(do_t . o_t) / den_t   [times 1{a_t >= eps} for 'clamp']
    dphi(q_t) = S_t^T dnum_t + da_t z_t

and the state's adjoint is a **reverse scan** (the adjoint of a forward scan runs backward in time)::

    dS_t = dS_{t+1} + dnum_t phi(q_t)^T,     dS_{L+1} = d_final_state's S  (0 when not given)
    dz_t = dz_{t+1} + da_t phi(q_t),         dz_{L+1} = d_final_state's z
    dv_t = dS_t phi(k_t),      dphi(k_t) = dS_t^T v_t + dz_t
    dS_0 = dS_1,               dz_0 = dz_1                  (the initial state's gradient)

(``dS_t`` is the gradient of the loss with respect to ``S_t``: ``S_t`` feeds ``o_t`` and ``S_{t+1}``.)

Views (one function each; the same keywords)
---------------------------------------------
* :func:`quadratic_vjp` -- the masked matrix form and its transpose: with ``A = phi(Q) phi(K)^T`` masked
  (``M_ij = 1{j <= i}`` when causal, all ones when not), ``dA = M * (dnum V^T + da 1^T)``,
  ``dphi(Q) = dA phi(K) + dnum S_0 + da z_0^T``, ``dphi(K) = dA^T phi(Q) + V dS_L + 1 dz_L^T``,
  ``dV = A^T dnum + phi(K) dS_L^T``, ``dS_0 = dnum^T phi(Q) + dS_L``, ``dz_0 = phi(Q)^T da + dz_L``.
  The only non-causal view (any query length ``l``; then the final state is still ``S_0 + V^T phi(K)``).
* :func:`recurrent_vjp` -- the forward recurrence (storing ``S_t``, ``z_t``), then the reverse scan above.
* :func:`chunked_vjp` -- the forward over chunks storing each chunk's entry state, then a reverse scan over chunks:
  inside a chunk the quadratic adjoint (with ``S_0``/``z_0`` replaced by the chunk's entry state and ``dS_L``/
  ``dz_L`` by the gradient of the state after the chunk), across chunks ``dS_c = dS_{c+1} + dnum_c^T phi(Q_c)``,
  ``dz_c = dz_{c+1} + phi(Q_c)^T da_c``.  Any ``L``; the last chunk may be short.

Conventions
-----------
* The arguments, layouts and keywords are the forward's (``docs/glossary.md``); the cotangent ``do (b l h p)`` is
  keyword-only and required; ``d_final_state`` is the cotangent of the final state in the form the forward returns
  it (the pair ``(dS, dz)`` when normalized, ``dS`` alone when not; ``dS`` in ``state_layout``).
* Returns ``{"phi_q", "phi_k", "v"}`` and, when ``initial_state`` is given, ``"initial_state"``: ``(dS_0, dz_0)``
  (normalized) or ``dS_0``, in the form and layout of ``initial_state``.  ``eps`` is a constant (no gradient).
* ``eps_mode="clamp"``: the derivative of ``max(a, eps)`` with respect to ``a`` is taken as ``1{a >= eps}``
  (PyTorch's ``clamp(min=eps)``: the gradient passes at the tie ``a = eps``).
* All real (no complex inputs).  The computation runs in ``result_dtype`` of the inputs and the cotangents
  (float32 only when all are float32); every gradient is returned in that dtype (so in its input's dtype when the
  inputs share one; nothing is downcast).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from refimpl._validate import as_float_array, check_int, result_dtype
from refimpl.attention.linear.reference import validate_linear

__all__ = ["quadratic_vjp", "recurrent_vjp", "chunked_vjp"]


def check_cotangent(dy, name: str, shape, letters: str, src: str = "") -> np.ndarray:
    """A cotangent checked like an input: a real, finite float array of the output's shape
    (``do: expected shape (b l h p) = (2, 5, 2, 3), got (2, 5)``)."""
    dy = as_float_array(dy, name, allow_complex=False)
    if dy.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape ({letters}) = {tuple(shape)}"
                         f"{' (' + src + ')' if src else ''}, got {dy.shape}")
    return dy


def _float_dtype(x, working):
    """The dtype a gradient is returned in: the working dtype (its input's dtype when every input shares one;
    a float32 input among float64 ones gets a float64 gradient: nothing is downcast)."""
    return working


def prepare_vjp(phi_q, phi_k, v, do, d_final_state, *, causal, normalize, eps, eps_mode, state_layout,
                initial_state):
    """Validate the forward's arguments (the forward's own checks) and the cotangents.

    Returns ``(phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, dims, out_dtypes)`` in the working dtype:
    ``S0``/``dS_L`` ``(b h p n)`` (VxK), ``z0``/``dz_L`` ``(b h n)`` (``None`` when not normalized; zeros when
    not given), ``out_dtypes`` the dtype of each returned gradient.
    """
    originals = {"phi_q": phi_q, "phi_k": phi_k, "v": v}
    phi_q, phi_k, v, S0, z0, opts, dims = validate_linear(
        phi_q, phi_k, v, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
        state_layout=state_layout, initial_state=initial_state, return_final_state=False)
    b, l, s, h, n, p = dims
    do = check_cotangent(do, "do", (b, l, h, p), "b l h p", "b, l, h from phi_q, p from v")
    kv = state_layout == "kv"
    S_letters, S_shape = ("b h n p", (b, h, n, p)) if kv else ("b h p n", (b, h, p, n))
    dS_L = dz_L = None
    if d_final_state is not None:
        if normalize:
            if not isinstance(d_final_state, (tuple, list)) or len(d_final_state) != 2:
                raise TypeError(f"d_final_state: expected the pair (dS, dz) for normalize=True (the final state is "
                                f"(S, z)), got {type(d_final_state).__name__}")
            dS_L = check_cotangent(d_final_state[0], "d_final_state[0] (dS)", S_shape, S_letters,
                                   f"state_layout {state_layout!r}")
            dz_L = check_cotangent(d_final_state[1], "d_final_state[1] (dz)", (b, h, n), "b h n")
        else:
            if isinstance(d_final_state, (tuple, list)):
                raise TypeError(f"d_final_state: expected the array dS alone for normalize=False (the final state "
                                f"is S), got a {type(d_final_state).__name__} of length {len(d_final_state)}")
            dS_L = check_cotangent(d_final_state, "d_final_state", S_shape, S_letters,
                                   f"state_layout {state_layout!r}")
        if kv:
            dS_L = np.swapaxes(dS_L, -1, -2)
    dtype = result_dtype(phi_q, do, dS_L, dz_L)
    c = lambda a: None if a is None else np.asarray(a).astype(dtype, copy=False)  # noqa: E731
    phi_q, phi_k, v, S0, z0, do = c(phi_q), c(phi_k), c(v), c(S0), c(z0), c(do)
    dS_L = np.zeros((b, h, p, n), dtype=dtype) if dS_L is None else c(dS_L)
    if normalize:
        dz_L = np.zeros((b, h, n), dtype=dtype) if dz_L is None else c(dz_L)
    out_dtypes = {k: _float_dtype(x, dtype) for k, x in originals.items()}
    if initial_state is not None:
        if normalize:
            out_dtypes["initial_state"] = (_float_dtype(initial_state[0], dtype), _float_dtype(initial_state[1], dtype))
        else:
            out_dtypes["initial_state"] = _float_dtype(initial_state, dtype)
    opts = dict(opts, eps=dtype.type(opts["eps"]))
    return phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, dims, out_dtypes


def finish_vjp(dphi_q, dphi_k, dv, dS0, dz0, opts, out_dtypes) -> Dict[str, object]:
    """The result dict: every gradient in its input's dtype; the initial state's in its form and layout."""
    grads = {"phi_q": dphi_q.astype(out_dtypes["phi_q"], copy=False),
             "phi_k": dphi_k.astype(out_dtypes["phi_k"], copy=False),
             "v": dv.astype(out_dtypes["v"], copy=False)}
    if "initial_state" in out_dtypes:
        dS = dS0 if opts["state_layout"] == "vk" else np.ascontiguousarray(np.swapaxes(dS0, -1, -2))
        if opts["normalize"]:
            tS, tz = out_dtypes["initial_state"]
            grads["initial_state"] = (dS.astype(tS, copy=False), dz0.astype(tz, copy=False))
        else:
            grads["initial_state"] = dS.astype(out_dtypes["initial_state"], copy=False)
    return grads


def _denominator(a, eps, eps_mode):
    # den = a + eps ('add')  or  max(a, eps) ('clamp');  dden/da = 1 ('add') or 1{a >= eps} ('clamp')
    if eps_mode == "add":
        return a + eps, np.ones_like(a)
    return np.maximum(a, eps), (a >= eps).astype(a.dtype)


def _output_adjoint(num, a, do, opts):
    r"""``(dnum, da)`` of ``o = num / den(a)``: ``dnum = do / den``, ``da = -(do . o) / den * dden/da``
    (``dnum = do``, ``da = None`` when not normalized).  ``num (... p)``, ``a (...)``, ``do (... p)``."""
    if not opts["normalize"]:
        return do, None
    den, dden = _denominator(a, opts["eps"], opts["eps_mode"])
    # o = num / den
    o = num / den[..., None]
    # dnum = do / den
    dnum = do / den[..., None]
    # da = -(do . o) / den  * dden/da
    da = -np.sum(do * o, axis=-1) / den * dden
    return dnum, da


# ------------------------------------------------------------------ the views

def quadratic_vjp(phi_q, phi_k, v, *, do, d_final_state=None, causal: bool = True, normalize: bool = True,
                  eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk", initial_state=None):
    r"""The VJP in the materialized view: the masked matrix form ``A = M * phi(Q) phi(K)^T`` and its transpose.

    ``phi_q (b l h n)``, ``phi_k (b s h n)``, ``v (b s h p)`` (``s = l`` when causal), ``do (b l h p)`` ->
    ``{"phi_q", "phi_k", "v"[, "initial_state"]}`` (see the module docstring for the equations)::

        dnum_i = do_i / den_i,  da_i = -(do_i . o_i) / den_i     (den_i = sum_j A_ij + z_0 . phi(q_i) + eps)
        dA_ij  = M_ij (dnum_i . v_j + da_i)
        dphi(q_i) = sum_j dA_ij phi(k_j) + S_0^T dnum_i + da_i z_0
        dphi(k_j) = sum_i dA_ij phi(q_i) + dS_L^T v_j + dz_L
        dv_j      = sum_i A_ij dnum_i + dS_L phi(k_j)
        dS_0 = sum_i dnum_i phi(q_i)^T + dS_L,   dz_0 = sum_i da_i phi(q_i) + dz_L
    """
    phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, (b, l, s, h, n, p), dts = prepare_vjp(
        phi_q, phi_k, v, do, d_final_state, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
        state_layout=state_layout, initial_state=initial_state)
    # forward recomputation: A_ij = phi(q_i) . phi(k_j) M_ij ;  num = A V + phi(Q) S_0^T ;  a = A 1 + phi(Q) z_0
    M = np.tril(np.ones((l, s), dtype=phi_q.dtype)) if opts["causal"] else np.ones((l, s), dtype=phi_q.dtype)
    A = np.einsum("bihn,bjhn->bhij", phi_q, phi_k) * M
    num = np.einsum("bhij,bjhp->bihp", A, v) + np.einsum("bhpn,bihn->bihp", S0, phi_q)
    a = np.einsum("bhij->bih", A) + np.einsum("bhn,bihn->bih", z0, phi_q) if opts["normalize"] else None
    # dnum_i = do_i / den_i ;  da_i = -(do_i . o_i) / den_i
    dnum, da = _output_adjoint(num, a, do, opts)
    # dA_ij = M_ij (dnum_i . v_j + da_i)
    dA = np.einsum("bihp,bjhp->bhij", dnum, v)
    if opts["normalize"]:
        dA = dA + np.transpose(da, (0, 2, 1))[..., None]
    dA = dA * M
    # dphi(q_i) = sum_j dA_ij phi(k_j) + S_0^T dnum_i (+ da_i z_0)
    dphi_q = np.einsum("bhij,bjhn->bihn", dA, phi_k) + np.einsum("bhpn,bihp->bihn", S0, dnum)
    # dphi(k_j) = sum_i dA_ij phi(q_i) + dS_L^T v_j (+ dz_L)
    dphi_k = np.einsum("bhij,bihn->bjhn", dA, phi_q) + np.einsum("bhpn,bjhp->bjhn", dS_L, v)
    # dv_j = sum_i A_ij dnum_i + dS_L phi(k_j)
    dv = np.einsum("bhij,bihp->bjhp", A, dnum) + np.einsum("bhpn,bjhn->bjhp", dS_L, phi_k)
    # dS_0 = sum_i dnum_i phi(q_i)^T + dS_L
    dS0 = np.einsum("bihp,bihn->bhpn", dnum, phi_q) + dS_L
    dz0 = None
    if opts["normalize"]:
        dphi_q = dphi_q + da[..., None] * z0[:, None, :, :]
        dphi_k = dphi_k + dz_L[:, None, :, :]
        # dz_0 = sum_i da_i phi(q_i) + dz_L
        dz0 = np.einsum("bih,bihn->bhn", da, phi_q) + dz_L
    return finish_vjp(dphi_q, dphi_k, dv, dS0, dz0, opts, dts)


def _require_causal(opts, view):
    if not opts["causal"]:
        raise ValueError(f"causal: the {view!r} view is causal; non-causal attention (causal=False) is the "
                         f"'quadratic' view")


def recurrent_vjp(phi_q, phi_k, v, *, do, d_final_state=None, causal: bool = True, normalize: bool = True,
                  eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk", initial_state=None):
    r"""The VJP as the forward recurrence followed by its adjoint, a **reverse scan** over ``t = L..1``.

    Shapes as :func:`quadratic_vjp` (``s = l``, causal).  The forward pass stores ``S_t (b l h p n)``, ``z_t``;
    the reverse scan carries ``dS_t = dS_{t+1} + dnum_t phi(q_t)^T`` and ``dz_t = dz_{t+1} + da_t phi(q_t)``
    from ``dS_{L+1} = dS_L`` (the final state's cotangent) down to ``dS_0`` (the initial state's gradient).
    """
    phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, (b, l, s, h, n, p), dts = prepare_vjp(
        phi_q, phi_k, v, do, d_final_state, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
        state_layout=state_layout, initial_state=initial_state)
    _require_causal(opts, "recurrent")
    norm = opts["normalize"]
    dt = phi_q.dtype
    # forward: S_t = S_{t-1} + v_t phi(k_t)^T,  z_t = z_{t-1} + phi(k_t)  (stored for every t)
    S = np.zeros((b, l, h, p, n), dtype=dt)
    z = np.zeros((b, l, h, n), dtype=dt)
    S_t, z_t = S0, z0
    for t in range(l):
        S_t = S_t + v[:, t, :, :, None] * phi_k[:, t, :, None, :]
        S[:, t] = S_t
        if norm:
            z_t = z_t + phi_k[:, t]
            z[:, t] = z_t
    dphi_q = np.zeros_like(phi_q)
    dphi_k = np.zeros_like(phi_k)
    dv = np.zeros_like(v)
    # the reverse scan, from dS_{L+1} = dS_L, dz_{L+1} = dz_L
    dS_t, dz_t = dS_L, dz_L
    for t in range(l - 1, -1, -1):
        q_t = phi_q[:, t]
        # num_t = S_t phi(q_t) ;  a_t = z_t . phi(q_t)
        num_t = np.einsum("bhpn,bhn->bhp", S[:, t], q_t)
        a_t = np.einsum("bhn,bhn->bh", z[:, t], q_t) if norm else None
        # dnum_t = do_t / den_t ;  da_t = -(do_t . o_t) / den_t
        dnum_t, da_t = _output_adjoint(num_t, a_t, do[:, t], opts)
        # dphi(q_t) = S_t^T dnum_t + da_t z_t
        dq = np.einsum("bhpn,bhp->bhn", S[:, t], dnum_t)
        # dS_t = dS_{t+1} + dnum_t phi(q_t)^T
        dS_t = dS_t + dnum_t[..., :, None] * q_t[..., None, :]
        # dv_t = dS_t phi(k_t) ;  dphi(k_t) = dS_t^T v_t + dz_t
        dv[:, t] = np.einsum("bhpn,bhn->bhp", dS_t, phi_k[:, t])
        dk = np.einsum("bhpn,bhp->bhn", dS_t, v[:, t])
        if norm:
            dq = dq + da_t[..., None] * z[:, t]
            # dz_t = dz_{t+1} + da_t phi(q_t)
            dz_t = dz_t + da_t[..., None] * q_t
            dk = dk + dz_t
        dphi_q[:, t] = dq
        dphi_k[:, t] = dk
    # dS_0 = dS_1, dz_0 = dz_1
    return finish_vjp(dphi_q, dphi_k, dv, dS_t, dz_t, opts, dts)


def chunked_vjp(phi_q, phi_k, v, *, do, d_final_state=None, causal: bool = True, normalize: bool = True,
                eps: float = 0.0, eps_mode: str = "add", state_layout: str = "vk", initial_state=None,
                chunk: int = 64):
    r"""The chunked VJP: the intra-chunk quadratic adjoint plus a **reverse scan over chunks** of the state gradient.

    Shapes as :func:`quadratic_vjp` (``s = l``, causal); any ``chunk >= 1`` and ``l`` (the last chunk may be short).
    The forward pass stores each chunk's entry state ``(S_c, z_c)``.  Then for ``c = C..1``, with ``(dS, dz)`` the
    gradient of the state after chunk ``c`` (initially the final state's cotangent)::

        A = M * phi(Q_c) phi(K_c)^T (M lower triangular),  num = phi(Q_c) S_c^T + A V_c,  a = phi(Q_c) z_c + A 1
        dnum = do_c / den,  da = -(do_c . o_c) / den,  dA = M * (dnum V_c^T + da 1^T)
        dphi(Q_c) = dA phi(K_c) + dnum S_c + da z_c^T
        dphi(K_c) = dA^T phi(Q_c) + V_c dS + 1 dz^T,      dV_c = A^T dnum + phi(K_c) dS^T
        dS <- dS + dnum^T phi(Q_c),   dz <- dz + phi(Q_c)^T da     (the inter-chunk state gradient)

    ending with ``(dS, dz) = (dS_0, dz_0)``.
    """
    chunk = check_int(chunk, "chunk", minimum=1)
    phi_q, phi_k, v, S0, z0, do, dS_L, dz_L, opts, (b, l, s, h, n, p), dts = prepare_vjp(
        phi_q, phi_k, v, do, d_final_state, causal=causal, normalize=normalize, eps=eps, eps_mode=eps_mode,
        state_layout=state_layout, initial_state=initial_state)
    _require_causal(opts, "chunked")
    norm = opts["normalize"]
    dt = phi_q.dtype
    starts = list(range(0, l, chunk))
    # forward over chunks: the entry state of each chunk, S_{c+1} = S_c + V_c^T phi(K_c), z_{c+1} = z_c + phi(K_c)^T 1
    S_in, z_in = [], []
    S_c, z_c = S0, z0
    for t0 in starts:
        S_in.append(S_c)
        z_in.append(z_c)
        S_c = S_c + np.einsum("bjhp,bjhn->bhpn", v[:, t0:t0 + chunk], phi_k[:, t0:t0 + chunk])
        if norm:
            z_c = z_c + np.sum(phi_k[:, t0:t0 + chunk], axis=1)
    dphi_q = np.zeros_like(phi_q)
    dphi_k = np.zeros_like(phi_k)
    dv = np.zeros_like(v)
    dS, dz = dS_L, dz_L
    for ci in range(len(starts) - 1, -1, -1):
        t0 = starts[ci]
        Qc, Kc, Vc, dOc = (x[:, t0:t0 + chunk] for x in (phi_q, phi_k, v, do))
        c = Qc.shape[1]
        M = np.tril(np.ones((c, c), dtype=dt))
        S_c, z_c = S_in[ci], z_in[ci]
        # A = M * phi(Q_c) phi(K_c)^T ;  num = phi(Q_c) S_c^T + A V_c ;  a = phi(Q_c) z_c + A 1
        A = np.einsum("bihn,bjhn->bhij", Qc, Kc) * M
        num = np.einsum("bhpn,bihn->bihp", S_c, Qc) + np.einsum("bhij,bjhp->bihp", A, Vc)
        a = np.einsum("bhn,bihn->bih", z_c, Qc) + np.einsum("bhij->bih", A) if norm else None
        # dnum = do / den ;  da = -(do . o) / den
        dnum, da = _output_adjoint(num, a, dOc, opts)
        # dA = M * (dnum V_c^T + da 1^T)
        dA = np.einsum("bihp,bjhp->bhij", dnum, Vc)
        if norm:
            dA = dA + np.transpose(da, (0, 2, 1))[..., None]
        dA = dA * M
        # dphi(Q_c) = dA phi(K_c) + dnum S_c (+ da z_c^T)
        dq = np.einsum("bhij,bjhn->bihn", dA, Kc) + np.einsum("bhpn,bihp->bihn", S_c, dnum)
        # dphi(K_c) = dA^T phi(Q_c) + V_c dS (+ 1 dz^T)    (dS: the gradient of the state after the chunk)
        dk = np.einsum("bhij,bihn->bjhn", dA, Qc) + np.einsum("bhpn,bjhp->bjhn", dS, Vc)
        # dV_c = A^T dnum + phi(K_c) dS^T
        dv[:, t0:t0 + c] = np.einsum("bhij,bihp->bjhp", A, dnum) + np.einsum("bhpn,bjhn->bjhp", dS, Kc)
        if norm:
            dq = dq + da[..., None] * z_c[:, None, :, :]
            dk = dk + dz[:, None, :, :]
            # dz <- dz + phi(Q_c)^T da
            dz = dz + np.einsum("bih,bihn->bhn", da, Qc)
        # dS <- dS + dnum^T phi(Q_c)
        dS = dS + np.einsum("bihp,bihn->bhpn", dnum, Qc)
        dphi_q[:, t0:t0 + c] = dq
        dphi_k[:, t0:t0 + c] = dk
    return finish_vjp(dphi_q, dphi_k, dv, dS, dz, opts, dts)
