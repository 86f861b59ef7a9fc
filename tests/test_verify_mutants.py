"""Mutated copies of our attention references must each be caught by the verify harness (the SSM mutants --
Euler instead of ZOH for A, a dropped D skip -- are in test_verify_harness.py)."""
import math

import numpy as np
import pytest

from oracles.verify import verify
from refimpl.attention.features import feature_map
from refimpl.attention.features import reference as features
from refimpl.attention.linear import linear_attention
from refimpl.attention.linear import reference as linear
from refimpl.attention.softmax import scaled_dot_product_attention as sdpa

FEW = dict(max_examples=3, seed=2)


def test_reference_attention_and_features_conform():
    for causal in (None, "top_left", "bottom_right"):
        rep = verify("attention.softmax", sdpa, adapter="refimpl", conventions={"causal": causal},
                     dtype=["float64", "float32"], **FEW)
        assert rep.passed, rep.to_text()
    for kind in ("positive", "trig", "hyperbolic"):
        rep = verify("features.performer", feature_map, adapter="refimpl", conventions={"kind": kind},
                     dtype=["float64", "float32"], **FEW)
        assert rep.passed, rep.to_text()
    rep = verify("attention.linear", linear_attention, adapter="refimpl", conventions={"state_layout": "kv"},
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()


def off_by_one_causal(q, k, v, scale=None, causal=False, alignment=None):
    """Mutant: the causal mask keeps j <= i + 1 (one future key leaks in)."""
    lq, lk = q.shape[1], k.shape[1]
    mask = np.tril(np.ones((lq, lk), dtype=bool), k=1)
    return sdpa(q, k, v, scale=scale, mask=mask)


def test_mutant_off_by_one_causal_mask_is_caught():
    rep = verify("attention.softmax", off_by_one_causal, adapter="refimpl", conventions={"causal": "top_left"}, **FEW)
    assert not rep.passed
    assert rep.probes[0].name == "causality" and not rep.probes[0].passed
    assert "depends on future inputs" in rep.probes[0].message
    # a single key (or an empty sequence) cannot show the leak; every case with two or more of each does
    longer = [c for c in rep.cases if min(c.shapes["q"][1], c.shapes["k"][1]) >= 2]
    assert len(longer) >= 4 and all(not c.passed for c in longer), rep.to_text()


def bottom_right_as_top_left(q, k, v, scale=None, causal=False, alignment=None):
    """A kernel that aligns its causal mask bottom-right (FlashAttention) verified as top-left."""
    return sdpa(q, k, v, scale=scale, causal=causal, alignment="bottom_right" if causal else None)


def test_wrong_causal_alignment_is_diagnosed():
    rep = verify("attention.softmax", bottom_right_as_top_left, adapter="refimpl", conventions={"causal": "top_left"},
                 kinds=("golden", "edge"))
    assert not rep.passed
    assert any("causal='bottom_right' instead of 'top_left'" in d for d in rep.deviations()), rep.deviations()
    # square cases (lq == lk) cannot tell the alignments apart
    assert all(c.passed for c in rep.cases if c.shapes["q"][1] == c.shapes["k"][1])


def hyperbolic_without_h(x, kind, W=None, stabilizer="none"):
    """Mutant: the text's hyperbolic features without the h(x) = exp(-|x|^2/2)/sqrt(2) factor."""
    m = W.shape[0]
    wx = x @ W.T
    return np.concatenate([np.exp(wx), np.exp(-wx)], axis=-1) / math.sqrt(m)


def test_mutant_missing_h_factor_is_caught():
    rep = verify("features.performer", hyperbolic_without_h, adapter="refimpl", conventions={"kind": "hyperbolic"},
                 **FEW)
    assert not rep.passed
    # x = 0 is the one input where h(0) = 1/sqrt(2) is the only difference: still caught
    assert all(not c.passed for c in rep.cases), rep.to_text()


def unsigned_qr_draw(m, d, seed):
    """Mutant: random_projection with LAPACK's raw Q (signs of diag R not fixed)."""
    rng = np.random.default_rng(seed)
    nb = -(-m // d)
    Q = np.linalg.qr(rng.standard_normal((nb, d, d)))[0]
    directions = np.swapaxes(Q, -1, -2).reshape(nb * d, d)[:m]
    return directions * np.linalg.norm(rng.standard_normal((m, d)), axis=1)[:, None]


def test_mutant_unsigned_qr_draw_is_caught_and_sign_fixed_passes():
    rep = verify("features.orthogonal_projection", unsigned_qr_draw, kinds=("golden",))
    assert all(c.passed for c in rep.cases)  # still exactly orthogonal blocks: a value check cannot see it
    assert not rep.passed and "not Haar" in rep.probes[0].message
    good = verify("features.orthogonal_projection", lambda m, d, seed: features.random_projection(m, d, seed),
                  kinds=("golden",))
    assert good.passed, good.to_text()


def linear_always_vk(phi_q, phi_k, v, *, state_layout="vk", **kw):
    """A kernel whose state is V x K whatever layout it is told (verified claiming K x V)."""
    return linear.recurrent(phi_q, phi_k, v, state_layout="vk", **kw)


def test_state_orientation_is_diagnosed():
    rep = verify("attention.linear", linear_always_vk, adapter="refimpl", conventions={"state_layout": "kv"},
                 kinds=("golden", "edge"))
    assert not rep.passed
    assert any("state_layout='vk' instead of 'kv'" in d for d in rep.deviations()), rep.deviations()


def flash_interface(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), _shift=0):
    """A kernel with flash_attn_func's interface (our own code on top of the reference, mask by index arithmetic):
    (B, S, H, D), causal bottom-right, window (left, right) around the bottom-right diagonal."""
    assert dropout_p == 0.0
    lq, lk = q.shape[1], k.shape[1]
    rel = np.arange(lk)[None, :] - (np.arange(lq)[:, None] + lk - lq)  # key offset from the diagonal
    left, right = window_size
    right = 0 if causal else right
    keep = np.ones((lq, lk), dtype=bool)
    if left >= 0:
        keep &= rel >= -(left + _shift)
    if right >= 0:
        keep &= rel <= right
    return sdpa(q, k, v, scale=softmax_scale, mask=keep)


@pytest.mark.parametrize("causal, window", [(None, (2, 1)), ("bottom_right", (3, -1)), (None, (-1, 0)),
                                            ("bottom_right", (-1, -1))])
def test_flash_attention_interface_with_windows(causal, window):
    conv = {"causal": causal, "window_left": window[0], "window_right": window[1], "scale": 0.7}
    rep = verify("attention.softmax", flash_interface, adapter="flash_attn.flash_attn_func", conventions=conv,
                 dtype=["float64", "float32"], **FEW)
    assert rep.passed, rep.to_text()


def test_flash_window_off_by_one_is_caught():
    import functools

    wide = functools.partial(flash_interface, _shift=1)  # one key too many on the left
    rep = verify("attention.softmax", wide, adapter="flash_attn.flash_attn_func",
                 conventions={"causal": "bottom_right", "window_left": 2}, kinds=("golden", "edge"),
                 candidate_name="wide_window")
    assert not rep.passed
    assert all(not c.passed for c in rep.cases if c.shapes["k"][1] >= 4), rep.to_text()
