"""Mutants of the attention family: plausible kernel bugs, each a candidate in its op's canonical signature
(or an adapter's), each of which ``refimpl mutants --op attention`` / ``--op features`` must kill at default
settings.

Every mutant is a small NumPy kernel: a correct computation with one deliberate slip (an off-by-one mask, a
scale applied twice, a max taken before the mask, a gate applied in the wrong place, a transposed state, an
unsigned QR, ...).  The ones reached only through an argument (a scale passed as ``softmax_scale=``, a scale on
the delta rule's ``q``) are killed by the ``argument_paths`` probe, which runs every argument the adapter passes
with a value other than the default.
"""
from __future__ import annotations

import math

import numpy as np

from oracles.mutants import mutant

# ----------------------------------------------------------------------------------------------------------
# attention.softmax: a small kernel with the slips as switches
# ----------------------------------------------------------------------------------------------------------

SM = "attention.softmax"


def _softmax_kernel(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None, *, scale=None, causal=None,
                    window=(-1, -1), softcap=0.0, diag_shift=0, left_shift=0, max_over_all=False, kv_map="block",
                    alibi_from_top_left=False, invert_padding=False, scale_power=1, ignore_bias=False):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    b, lq, h, d = q.shape
    lk, g = k.shape[1], k.shape[2]
    heads = np.arange(h) // (h // g) if kv_map == "block" else np.arange(h) % g
    k, v = k[:, :, heads], v[:, :, heads]
    sc = (1.0 / math.sqrt(d) if scale is None else scale) ** scale_power
    s = sc * np.einsum("bihd,bjhd->bhij", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if bias is not None and not ignore_bias:
        s = s + np.asarray(bias)
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    off = lk - lq
    if alibi_slopes is not None:
        sl = np.asarray(alibi_slopes, dtype=np.float64)
        sl = sl[None] if sl.ndim == 1 else sl
        dist = np.abs(i - j) if alibi_from_top_left else np.abs(i + off - j)
        s = s - sl[:, :, None, None] * dist
    keep = np.ones((lq, lk), dtype=bool)
    if causal is not None:
        keep &= j <= i + (0 if causal == "top_left" else off) + diag_shift
    left, right = window
    if left >= 0:
        keep &= j >= i + off - left - left_shift
    if right >= 0:
        keep &= j <= i + off + right
    keep = np.broadcast_to(keep, s.shape)
    if key_padding_mask is not None:
        kp = np.asarray(key_padding_mask, dtype=bool)
        keep = keep & (~kp if invert_padding else kp)[:, None, None, :]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if max_over_all:  # the row max taken over every key, the masked ones too, then the mask applied
            m = np.max(s, axis=-1, keepdims=True) if lk else np.zeros(s.shape[:-1] + (1,))
            w = np.where(keep, np.exp(s - m), 0.0)
            p = w / np.sum(w, axis=-1, keepdims=True)
        else:
            sm = np.where(keep, s, -np.inf)
            m = np.max(sm, axis=-1, keepdims=True) if lk else np.zeros(s.shape[:-1] + (1,))
            w = np.where(keep, np.exp(sm - np.where(np.isfinite(m), m, 0.0)), 0.0)
            Z = np.sum(w, axis=-1, keepdims=True)
            p = np.where(Z > 0, w / np.where(Z > 0, Z, 1.0), 0.0)
    return np.einsum("bhij,bjhe->bihe", p, v)


@mutant(SM, "off-by-one-causal", conventions={"causal": "top_left"},
        doc="the causal mask keeps j <= i + 1: one future key leaks in")
def _sm_off_by_one(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, causal="top_left", diag_shift=1)


@mutant(SM, "wrong-window-edge", conventions={"causal": "bottom_right", "window_left": 2},
        doc="the sliding window keeps left + 1 keys left of the diagonal (j >= i - left - 1)")
def _sm_window(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, causal="bottom_right", window=(2, -1), left_shift=1)


@mutant(SM, "scale-applied-twice", doc="scores multiplied by (1/sqrt(d))^2 = 1/d")
def _sm_scale_twice(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, scale_power=2)


@mutant(SM, "scale-missing", doc="no 1/sqrt(d) at all: softmax(q.k)")
def _sm_scale_missing(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, scale=1.0)


@mutant(SM, "flash-softmax-scale-twice", adapter="flash_attn.flash_attn_func",
        doc="a FlashAttention-interface kernel right with its default scale but squaring a given softmax_scale "
            "(only the argument path scale=0.37 shows it)")
def _sm_flash_scale(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=None,
                    alibi_slopes=None):
    sc = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale * softmax_scale
    return _softmax_kernel(q, k, v, None, alibi_slopes, scale=sc, causal="bottom_right" if causal else None,
                           window=tuple(window_size), softcap=softcap or 0.0)


@mutant(SM, "stabilizer-over-all-keys", conventions={"causal": "top_left"},
        doc="the softmax row max taken over every key before the causal mask: a masked future key with a large "
            "score underflows every earlier row to 0/0")
def _sm_max_all(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, causal="top_left", max_over_all=True)


@mutant(SM, "softcap-missing", conventions={"softcap": 1.5}, doc="claims softcap = 1.5 and never applies it")
def _sm_softcap(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest)


@mutant(SM, "gqa-head-mapping-cyclic", conventions={"grouped_kv": True},
        doc="query head i reads key/value head i % g (einops '(r g)' / a tiled repeat) instead of i // (h/g)")
def _sm_gqa(q, k, v, *rest):
    return _softmax_kernel(q, k, v, *rest, kv_map="cyclic")


@mutant(SM, "alibi-top-left-distance", conventions={"use_alibi": True},
        doc="ALiBi distance |i - j| (top-left) instead of FlashAttention's |i + lk - lq - j|")
def _sm_alibi(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None):
    return _softmax_kernel(q, k, v, bias, alibi_slopes, key_padding_mask, alibi_from_top_left=True)


@mutant(SM, "key-padding-mask-inverted", conventions={"use_key_padding_mask": True},
        doc="the key padding mask read as True = padding (torch.nn.MultiheadAttention's sense) while claiming "
            "True = keep")
def _sm_kpm(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None):
    return _softmax_kernel(q, k, v, bias, alibi_slopes, key_padding_mask, invert_padding=True)


@mutant(SM, "bias-ignored", conventions={"use_bias": True}, doc="takes the bias argument and never adds it")
def _sm_bias(q, k, v, bias=None, alibi_slopes=None, key_padding_mask=None):
    return _softmax_kernel(q, k, v, bias, alibi_slopes, key_padding_mask, ignore_bias=True)


# ----------------------------------------------------------------------------------------------------------
# attention.linear
# ----------------------------------------------------------------------------------------------------------

LIN = "attention.linear"


def _linear_kernel(phi_q, phi_k, v, S0=None, u0=None, *, eps=0.0, eps_mode="add", eps_in_num=False,
                   exclusive=False, drop_state_in_final=False, scale=1.0, normalize=True):
    """Causal linear attention by the recurrence, state V x K."""
    pq, pk, v = (np.asarray(a, dtype=np.float64) for a in (phi_q, phi_k, v))
    pq = pq * scale
    b, l, h, n = pq.shape
    e = v.shape[3]
    S = np.zeros((b, h, e, n)) if S0 is None else np.asarray(S0, dtype=np.float64).copy()
    z = np.zeros((b, h, n)) if u0 is None else np.asarray(u0, dtype=np.float64).copy()
    o = np.zeros((b, l, h, e))
    for t in range(l):
        upd_S = v[:, t, :, :, None] * pk[:, t, :, None, :]
        if not exclusive:
            S, z = S + upd_S, z + pk[:, t]
        num = np.einsum("bhen,bhn->bhe", S, pq[:, t])
        if normalize:
            if eps_mode == "key_sum":
                den = np.einsum("bhn,bhn->bh", z + eps, pq[:, t])
            else:
                den = np.einsum("bhn,bhn->bh", z, pq[:, t]) + eps
            num = ((num + eps) if eps_in_num else num) / den[..., None]
        o[:, t] = num
        if exclusive:
            S, z = S + upd_S, z + pk[:, t]
    if drop_state_in_final:
        S = S - (0.0 if S0 is None else np.asarray(S0))
    return o, S, z


@mutant(LIN, "eps-in-numerator", conventions={"eps": 0.1},
        doc="o = (num + eps) / (den + eps): the epsilon added to the numerator too")
def _lin_eps_num(phi_q, phi_k, v, S0=None, u0=None):
    return _linear_kernel(phi_q, phi_k, v, S0, u0, eps=0.1, eps_in_num=True)


@mutant(LIN, "eps-added-not-on-key-sum", conventions={"eps": 0.1, "eps_mode": "key_sum"},
        doc="claims performer-pytorch's eps on the key sum, q.(z + eps), and adds eps to the denominator once")
def _lin_eps_mode(phi_q, phi_k, v, S0=None, u0=None):
    return _linear_kernel(phi_q, phi_k, v, S0, u0, eps=0.1, eps_mode="add")


@mutant(LIN, "state-layout-ignored", conventions={"state_layout": "kv"},
        doc="claims a K x V state (b h n e) and reads and returns it as V x K")
def _lin_state_layout(phi_q, phi_k, v, S0=None, u0=None):
    return _linear_kernel(phi_q, phi_k, v, S0, u0)


@mutant(LIN, "exclusive-prefix", doc="o_t reads the state before step t's write (keys j < t: an exclusive cumsum)")
def _lin_exclusive(phi_q, phi_k, v, S0=None, u0=None):
    return _linear_kernel(phi_q, phi_k, v, S0, u0, exclusive=True)


@mutant(LIN, "final-state-without-initial", doc="S_last = sum_j v_j phi(k_j)^T: the initial state left out")
def _lin_final(phi_q, phi_k, v, S0=None, u0=None):
    return _linear_kernel(phi_q, phi_k, v, S0, u0, drop_state_in_final=True)


@mutant(LIN, "fla-scale-twice", adapter="fla.linear_attn",
        doc="an FLA-interface kernel squaring the scale it is given (only the argument path scale=0.37 shows it)")
def _lin_fla_scale(q, k, v, scale=None, initial_state=None, output_final_state=False):
    sc = q.shape[-1] ** -0.5 if scale is None else scale * scale
    S0 = None if initial_state is None else np.swapaxes(initial_state, -1, -2)
    o, S, _ = _linear_kernel(q, k, v, S0, None, scale=sc, normalize=False)
    return o, (np.swapaxes(S, -1, -2) if output_final_state else None)


# ----------------------------------------------------------------------------------------------------------
# attention.delta_rule
# ----------------------------------------------------------------------------------------------------------

DR = "attention.delta_rule"


def _delta_kernel(q, k, v, beta, alpha=None, S0=None, *, slip=None, scale=1.0, key_norm=None):
    q, k, v, beta = (np.asarray(a, dtype=np.float64) for a in (q, k, v, beta))
    if key_norm == "l2":
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    q = q * scale
    b, l, h, n = k.shape
    e = v.shape[3]
    S = np.zeros((b, h, e, n)) if (S0 is None or slip == "ignore-state") else np.asarray(S0, dtype=np.float64).copy()
    o = np.zeros((b, l, h, e))
    for t in range(l):
        kt, vt, qt, bt = k[:, t], v[:, t], q[:, t], beta[:, t, :, None, None]
        at = np.ones((b, h, 1, 1)) if alpha is None else np.asarray(alpha, dtype=np.float64)[:, t, :, None, None]
        kk = kt[..., :, None] * kt[..., None, :]
        vk = vt[..., :, None] * kt[..., None, :]
        I = np.eye(n)
        prev = S
        if slip == "beta-gate-swapped":
            S = bt * S @ (I - at * kk) + at * vk
        elif slip == "decay-after-update":
            S = at * (S @ (I - bt * kk) + bt * vk)
        else:
            S = at * S @ (I - bt * kk) + bt * vk
        o[:, t] = np.einsum("bhen,bhn->bhe", prev if slip == "read-before-update" else S, qt)
    return o, S


@mutant(DR, "beta-and-gate-swapped", doc="S = beta S (I - alpha k k^T) + alpha v k^T: the write strength and the "
        "decay exchanged")
def _dr_swap(q, k, v, beta, alpha=None, S0=None):
    return _delta_kernel(q, k, v, beta, alpha, S0, slip="beta-gate-swapped")


@mutant(DR, "decay-after-update", doc="S = alpha (S (I - beta k k^T) + beta v k^T): the gate also decays the new write")
def _dr_decay_after(q, k, v, beta, alpha=None, S0=None):
    return _delta_kernel(q, k, v, beta, alpha, S0, slip="decay-after-update")


@mutant(DR, "key-norm-missing", conventions={"key_norm": "l2"}, doc="claims l2-normalized keys and uses them raw")
def _dr_key_norm(q, k, v, beta, alpha=None, S0=None):
    return _delta_kernel(q, k, v, beta, alpha, S0)


@mutant(DR, "read-before-update", doc="o_t = S_{t-1} q_t: the output read before the step's update")
def _dr_read_before(q, k, v, beta, alpha=None, S0=None):
    return _delta_kernel(q, k, v, beta, alpha, S0, slip="read-before-update")


@mutant(DR, "initial-state-ignored", doc="takes S0 and starts from zero")
def _dr_ignore_state(q, k, v, beta, alpha=None, S0=None):
    return _delta_kernel(q, k, v, beta, alpha, S0, slip="ignore-state")


@mutant(DR, "refimpl-scale-twice", adapter="refimpl",
        doc="a refimpl-interface kernel multiplying q by the scale it is given twice (only the argument path "
            "scale=0.37 shows it)")
def _dr_scale_twice(q, k, v, beta, decay=None, initial_state=None, key_norm=None, query_norm=None, scale=1.0,
                    return_final_state=False):
    from refimpl.attention.delta import normalize_vectors

    kn = normalize_vectors(np.asarray(k, dtype=np.float64), key_norm)
    qn = normalize_vectors(np.asarray(q, dtype=np.float64), query_norm, "query_norm", "q")
    o, S = _delta_kernel(qn, kn, v, beta, decay, initial_state, scale=scale * scale)
    return (o, S) if return_final_state else o


# ----------------------------------------------------------------------------------------------------------
# features.performer, features.orthogonal_projection, features.dpfp, features.elu_plus_one
# ----------------------------------------------------------------------------------------------------------

FP = "features.performer"


def _wx(x, W):
    return np.asarray(x, dtype=np.float64) @ np.asarray(W, dtype=np.float64).T


@mutant(FP, "positive-without-half-norm", doc="positive features exp(W x) / sqrt(m): the -|x|^2/2 term missing")
def _fp_no_half(x, W):
    return np.exp(_wx(x, W)) / math.sqrt(np.shape(W)[0])


@mutant(FP, "hyperbolic-without-h", conventions={"kind": "hyperbolic"},
        doc="the text's hyperbolic features without h(x) = exp(-|x|^2/2) / sqrt(2)")
def _fp_hyp_no_h(x, W):
    wx = _wx(x, W)
    return np.concatenate([np.exp(wx), np.exp(-wx)], axis=-1) / math.sqrt(np.shape(W)[0])


@mutant(FP, "trig-cos-sin-order", conventions={"kind": "trig"}, doc="[cos(W x), sin(W x)] instead of [sin, cos]")
def _fp_trig_order(x, W):
    x = np.asarray(x, dtype=np.float64)
    wx = _wx(x, W)
    hh = np.exp(0.5 * np.sum(x * x, axis=-1, keepdims=True)) / math.sqrt(np.shape(W)[0])
    return hh * np.concatenate([np.cos(wx), np.sin(wx)], axis=-1)


@mutant(FP, "data-scale-d^-1/2", conventions={"data_scale": "d^-1/4"},
        doc="claims Performer's x d^-1/4 and scales x by d^-1/2 (the whole softmax scale on one side)")
def _fp_data_scale(x, W):
    x = np.asarray(x, dtype=np.float64) * np.shape(x)[-1] ** -0.5
    return np.exp(_wx(x, W) - 0.5 * np.sum(x * x, axis=-1, keepdims=True)) / math.sqrt(np.shape(W)[0])


@mutant(FP, "eps-after-ratio", conventions={"eps": 1e-3},
        doc="exp(.) / sqrt(m) + eps instead of (exp(.) + eps) / sqrt(m)")
def _fp_eps(x, W):
    x = np.asarray(x, dtype=np.float64)
    return np.exp(_wx(x, W) - 0.5 * np.sum(x * x, axis=-1, keepdims=True)) / math.sqrt(np.shape(W)[0]) + 1e-3


@mutant(FP, "row-max-over-all-positions", conventions={"stabilizer": "row_max"},
        doc="claims a per-position stabilizer and subtracts the max over every position (a causal leak)")
def _fp_global(x, W):
    x = np.asarray(x, dtype=np.float64)
    z = _wx(x, W) - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    c = np.max(z) if z.size else 0.0
    return np.exp(z - c) / math.sqrt(np.shape(W)[0])


OP_DRAW = "features.orthogonal_projection"


def _orthogonal_directions(m, d, rng, *, signed=True):
    nb = -(-m // d)
    Q, R = np.linalg.qr(rng.standard_normal((nb, d, d)))
    if signed:
        sgn = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
        sgn[sgn == 0] = 1.0
        Q = Q * sgn[:, None, :]
    return np.swapaxes(Q, -1, -2).reshape(nb * d, d)[:m]


@mutant(OP_DRAW, "unsigned-qr", doc="blocks from LAPACK's raw Q (signs of diag R not fixed): orthogonal, not Haar")
def _draw_unsigned(m, d, seed):
    rng = np.random.default_rng(seed)
    U = _orthogonal_directions(m, d, rng, signed=False)
    return U * np.linalg.norm(rng.standard_normal((m, d)), axis=1)[:, None]


@mutant(OP_DRAW, "chi-norms-replaced-by-sqrt-d", doc="every row scaled to sqrt(d) while claiming chi norms")
def _draw_fixed(m, d, seed):
    return _orthogonal_directions(m, d, np.random.default_rng(seed)) * math.sqrt(d)


@mutant(OP_DRAW, "iid-rows", doc="iid Gaussian rows: the right marginals, no orthogonal blocks")
def _draw_iid(m, d, seed):
    return np.random.default_rng(seed).standard_normal((m, d))


@mutant("features.dpfp", "roll-wrong-direction", conventions={"nu": 2},
        doc="phi = r_i r_(i + j) instead of r_i r_(i - j) (the roll the other way)")
def _dpfp_roll(x):
    x = np.asarray(x, dtype=np.float64)
    r = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)
    return np.concatenate([r * np.roll(r, -j, axis=-1) for j in (1, 2)], axis=-1)


@mutant("features.elu_plus_one", "relu-plus-one", doc="relu(x) + 1: the exp branch for x < 0 missing")
def _elu_relu(x):
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0) + 1.0


# ----------------------------------------------------------------------------------------------------------
# attention.multi_head, attention.sinusoidal, attention.fast_weights, attention.performer
# ----------------------------------------------------------------------------------------------------------

MH = "attention.multi_head"


def _mha(x_q, x_kv, W_Q, W_K, W_V, W_O, *, slip=None):
    q = np.einsum("bld,hdn->blhn", x_q, W_Q)
    k = np.einsum("bsd,hdn->bshn", x_kv, W_K)
    v = np.einsum("bsd,hdp->bshp", x_kv, W_V)
    n = q.shape[-1]
    sc = 1.0 / math.sqrt(np.shape(x_q)[-1] if slip == "model-width-scale" else n)
    z = _softmax_kernel(q, k, v, scale=sc)
    b, l, h, p = z.shape
    if slip == "p-major-concat":
        flat = np.swapaxes(z, 2, 3).reshape(b, l, h * p)
    else:
        flat = z.reshape(b, l, h * p)
    return flat if slip == "no-W_O" else flat @ np.asarray(W_O)


@mutant(MH, "W_O-omitted", doc="returns the concatenated heads without the output projection")
def _mh_no_wo(x_q, x_kv, W_Q, W_K, W_V, W_O):
    return _mha(x_q, x_kv, W_Q, W_K, W_V, W_O, slip="no-W_O")


@mutant(MH, "concat-p-major", doc="heads concatenated (p h) instead of head-major (h p)")
def _mh_concat(x_q, x_kv, W_Q, W_K, W_V, W_O):
    return _mha(x_q, x_kv, W_Q, W_K, W_V, W_O, slip="p-major-concat")


@mutant(MH, "scale-by-model-width", doc="1/sqrt(d_model) instead of 1/sqrt(n), the per-head width")
def _mh_scale(x_q, x_kv, W_Q, W_K, W_V, W_O):
    return _mha(x_q, x_kv, W_Q, W_K, W_V, W_O, slip="model-width-scale")


PE = "attention.sinusoidal"


def _pe(length, d, *, swap=False, column_exponent=False):
    pos = np.arange(length, dtype=np.float64)[:, None]
    c = np.arange(d)
    e = (c / d) if column_exponent else (2 * (c // 2) / d)
    ang = pos / np.power(10000.0, e)[None, :]
    even = (c % 2 == 0)[None, :]
    if swap:
        even = ~even
    return np.where(even, np.sin(ang), np.cos(ang))


@mutant(PE, "sin-cos-swapped", doc="cos at even columns, sin at odd")
def _pe_swap(length, d):
    return _pe(length, d, swap=True)


@mutant(PE, "exponent-column-over-d", doc="pos / base^(c/d) with the column index c instead of 2i = 2 floor(c/2)")
def _pe_exponent(length, d):
    return _pe(length, d, column_exponent=True)


FW = "attention.fast_weights"


@mutant(FW, "read-before-write", doc="y_i = W_{i-1} x_i: the memory read before the step's write")
def _fw_read_first(a, b_vec, x_read, W0=None):
    a, bv, xr = (np.asarray(t, dtype=np.float64) for t in (a, b_vec, x_read))
    B, l, h, p = a.shape
    W = np.zeros((B, h, p, bv.shape[3])) if W0 is None else np.asarray(W0, dtype=np.float64).copy()
    y = np.zeros((B, l, h, p))
    for i in range(l):
        y[:, i] = np.einsum("bhpn,bhn->bhp", W, xr[:, i])
        W = W + a[:, i, :, :, None] * bv[:, i, :, None, :]
    return y, W


PA = "attention.performer"


@mutant(PA, "scale-on-queries-only", doc="q scaled by d^-1/2 and k unscaled instead of d^-1/4 on each")
def _pa_scale(q, k, v, W):
    from refimpl.attention.features import positive_features
    from refimpl.attention.linear import linear_attention

    d = np.shape(q)[-1]
    pq = positive_features(np.asarray(q) * d ** -0.5, W)
    pk = positive_features(np.asarray(k), W)
    return linear_attention(pq, pk, v, causal=False)


@mutant(PA, "key-stabilizer-over-all-keys", conventions={"causal": True, "feature_eps": 1e-3},
        doc="with a feature eps, the key offset taken as the max over every key (a causal leak) while claiming none")
def _pa_key_max(q, k, v, W):
    from refimpl.attention.linear import linear_attention

    d = np.shape(q)[-1]
    m = np.shape(W)[0]
    qs, ks = (np.asarray(a, dtype=np.float64) * d ** -0.25 for a in (q, k))
    zq = _wx(qs, W) - 0.5 * np.sum(qs * qs, axis=-1, keepdims=True)
    zk = _wx(ks, W) - 0.5 * np.sum(ks * ks, axis=-1, keepdims=True)
    pq = (np.exp(zq) + 1e-3) / math.sqrt(m)
    pk = (np.exp(zk - (np.max(zk) if zk.size else 0.0)) + 1e-3) / math.sqrt(m)
    return linear_attention(pq, pk, v, causal=True, view="recurrent")
