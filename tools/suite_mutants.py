#!/usr/bin/env python
r"""The power of the project's own test suite, measured: plant a bug in our references, run the tests.

Each entry of :data:`MUTANTS` is a plausible bug in one of *our* reference files (``refimpl/``): a file,
the exact original text (it must occur exactly once), the mutated text, and the test files that should
catch it.  For each mutant this script

1. refuses to start if git reports the file as modified or untracked (the mutant would otherwise be
   applied to, and "restored" over, someone's uncommitted work), or if the original text is not found
   exactly once (a stale table entry: fix the table, never the search);
2. writes the mutated file, clears Numba's on-disk cache of the module and of every ``refimpl`` module that
   imports it (a cached kernel would otherwise run the old code: Numba keys its cache on the source file's
   stamp but not on the files it calls into);
3. runs ``python -m pytest -x -q -p no:cacheprovider <tests>`` with ``HYPOTHESIS_PROFILE=ci`` and
   ``PYTHONDONTWRITEBYTECODE=1`` (no ``.pyc`` of a mutant is ever written; a same-size mutant restored
   within the same second could otherwise be loaded again from a stale ``.pyc``);
4. restores the original bytes (always: ``try/finally``, also on Ctrl-C or SIGTERM), clears the Numba cache
   again, and checks that git reports the file clean.

A mutant is *killed* when pytest exits 1 (a test failed), *survives* when it exits 0, and is an *error*
otherwise (collection error, timeout: the suite did not give a verdict).  The script prints the kill rate
(killed / all) and exits 1 unless every mutant is killed.  Before the mutants it runs the union of their
test files once on the unmutated tree (``--no-baseline`` skips it): a failing baseline would make every
mutant look killed.

Not part of the default test run (it mutates the working tree).  Run it when ``git status --short refimpl``
is clean for the files it mutates::

    python tools/suite_mutants.py            # all mutants
    python tools/suite_mutants.py --list     # the table
    python tools/suite_mutants.py --only lti-scan-combine-order --only features-chi-norms-fixed
    python tools/suite_mutants.py --json suite_mutants.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent

# -- the test files of each family (the suite that should catch a bug in that family's references) ----------------
LTI = ("tests/test_ssm_core.py", "tests/test_ssm_core_exact.py", "property_tests/test_ssm_core_props.py",
       "property_tests/test_cross_family.py")
SELECTIVE = ("tests/test_selective_scan.py", "property_tests/test_selective_scan_props.py",
             "property_tests/test_cross_family.py")
SSD = ("tests/test_ssd.py", "property_tests/test_ssd_props.py")
STRUCTURED = ("tests/test_s4.py", "tests/test_s4d_s5_lru_ema.py", "tests/test_structured_api.py",
              "property_tests/test_structured_kernels.py")
HIPPO = ("tests/test_hippo.py", "property_tests/test_hippo_projection.py")
SOFTMAX = ("tests/test_attention_softmax.py", "tests/test_flash_numba.py", "property_tests/test_attention_views.py")
LINEAR = ("tests/test_attention_linear.py", "property_tests/test_attention_views.py")
DELTA = ("tests/test_attention_delta.py", "property_tests/test_attention_views.py")
PERFORMER = ("property_tests/test_attention_performer.py", "tests/test_attention_linear.py",
             "property_tests/test_attention_views.py")


@dataclasses.dataclass(frozen=True)
class SuiteMutant:
    """One planted bug: ``original`` (exactly once in ``file``) becomes ``mutated``; ``tests`` should fail."""

    name: str
    file: str
    original: str
    mutated: str
    tests: Tuple[str, ...]
    doc: str


MUTANTS: List[SuiteMutant] = []


def _m(name: str, file: str, original: str, mutated: str, tests: Sequence[str], doc: str) -> None:
    MUTANTS.append(SuiteMutant(name, file, original, mutated, tuple(dict.fromkeys(tests)), doc))


# =================================================================================================== SSM core
_m("discretization-phi1-series", "refimpl/ssm/discretization/reference.py",
   "out[small] = 1 + zs / 2 + zs * zs / 6",
   "out[small] = 1 + zs / 2 + zs * zs / 3",
   LTI + ("tests/test_selective_scan.py",),
   "the small-|z| series of phi1 with a wrong z^2 coefficient (1/3 instead of 1/6): wrong by z^2/6 < 2e-11")
_m("discretization-phi1-dense-truncated", "refimpl/ssm/discretization/reference.py",
   "for k in range(1, 19):",
   "for k in range(1, 8):",
   LTI,
   "the Taylor series of phi1(Y) (||Y|| <= 1/2) cut at degree 7: truncation ~0.5^8/9! = 1e-8")
_m("discretization-gbt-alpha-swapped", "refimpl/ssm/discretization/reference.py",
   "A_bar = _solve(lhs, eye + (1.0 - alpha) * dtA, \"gbt\")",
   "A_bar = _solve(lhs, eye + alpha * dtA, \"gbt\")",
   LTI,
   "dense GBT with alpha in place of 1 - alpha on the explicit side (invisible at alpha = 1/2)")
_m("discretization-bilinear-diag-B-half-step", "refimpl/ssm/discretization/reference.py",
   "B_bar = (_expand(dt, 1) / (1.0 - half))[..., None] * _lead(B, dt, 2)",
   "B_bar = (_expand(dt, 1) / 2 / (1.0 - half))[..., None] * _lead(B, dt, 2)",
   LTI + STRUCTURED,
   "diagonal bilinear B_bar with dt/2 B instead of dt B")
_m("lti-numba-tv-dense-ignored", "refimpl/ssm/lti/numba.py",
   "ta = t if lt > 1 else 0\n            tb = t if ltb > 1 else 0\n            # h_t = A_bar h_{t-1} + B_bar x_t\n",
   "ta = 0\n            tb = t if ltb > 1 else 0\n            # h_t = A_bar h_{t-1} + B_bar x_t\n",
   LTI,
   "the Numba dense LTI recurrence reads A_bar_0 at every step (a time-varying A_bar ignored)")
_m("lti-numba-tv-diag-ignored", "refimpl/ssm/lti/numba.py",
   "ta = t if lt > 1 else 0\n            tb = t if ltb > 1 else 0\n            # h_t = A_bar h_{t-1} + B_bar x_t   (diagonal",
   "ta = 0\n            tb = t if ltb > 1 else 0\n            # h_t = A_bar h_{t-1} + B_bar x_t   (diagonal",
   LTI,
   "the Numba diagonal LTI recurrence reads A_bar_0 at every step (a time-varying A_bar ignored)")
_m("lti-scan-combine-order", "refimpl/ssm/lti/reference.py",
   "return a_j @ a_i, np.einsum(",
   "return a_i @ a_j, np.einsum(",
   LTI,
   "lti.scan composes dense transitions as a_i a_j instead of a_j a_i (only visible when A_bar_t differ and "
   "do not commute)")
_m("lti-chunked-state-not-carried", "refimpl/ssm/lti/reference.py",
   "h_s = _final_state(A_bar, B_bar, xc, h_s, diagonal)",
   "h_s = _final_state(A_bar, B_bar, xc, 0 * h_s, diagonal)",
   LTI,
   "the chunked view passes on only the chunk's own contribution (the entering state is dropped)")
_m("lti-kernel-off-by-one", "refimpl/ssm/lti/reference.py",
   "P = B_bar.copy()  # P_k = A_bar^k B_bar, shape (d n m)",
   "P = A_bar[..., None] * B_bar if diagonal else A_bar @ B_bar  # P_k = A_bar^k B_bar, shape (d n m)",
   LTI,
   "the convolution kernel starts at C A_bar B_bar (K_k = C A_bar^(k+1) B_bar)")
_m("lti-causal-conv-correlation", "refimpl/ssm/lti/reference.py",
   "y[:, t] = np.einsum(\"kdpm,bkdm->bdp\", K[: t + 1], x[:, t::-1])",
   "y[:, t] = np.einsum(\"kdpm,bkdm->bdp\", K[: t + 1], x[:, : t + 1])",
   LTI,
   "the direct causal convolution without the flip of x (a correlation)")
_m("lti-fft-length-wraparound", "refimpl/ssm/lti/reference.py",
   "return 1 << max(1, (2 * L - 1).bit_length())",
   "return 1 << max(1, (L - 1).bit_length())",
   LTI,
   "an FFT length >= l instead of >= 2l - 1: the causal convolution wraps around")

# =================================================================================================== selective scan
_m("selective-softplus-before-bias", "refimpl/ssm/selective/reference.py",
   "    if delta_bias is not None:\n"
   "        # delta + delta_bias (one bias per channel, the last axis)\n"
   "        out = out + delta_bias\n"
   "    if delta_softplus:\n"
   "        # Delta = softplus(delta + delta_bias)\n"
   "        with np.errstate(over=\"ignore\"):\n"
   "            out = softplus(out)\n",
   "    if delta_softplus:\n"
   "        # Delta = softplus(delta + delta_bias)\n"
   "        with np.errstate(over=\"ignore\"):\n"
   "            out = softplus(out)\n"
   "    if delta_bias is not None:\n"
   "        # delta + delta_bias (one bias per channel, the last axis)\n"
   "        out = out + delta_bias\n",
   SELECTIVE,
   "Delta = softplus(delta) + bias instead of softplus(delta + bias)")
_m("selective-zoh-as-euler", "refimpl/ssm/selective/reference.py",
   "return Delta[..., None] * phi1(Delta[..., None] * p.A) * B",
   "return Delta[..., None] * B",
   SELECTIVE,
   "discretization='zoh' computes Euler's B_bar = Delta B")
_m("selective-complex-re-not-2re", "refimpl/ssm/selective/reference.py",
   "return 2.0 * y.real if np.iscomplexobj(p.A) else y",
   "return y.real if np.iscomplexobj(p.A) else y",
   SELECTIVE,
   "complex A read out as Re(C h) instead of 2 Re(C h)")
_m("selective-scan-wrong-decay", "refimpl/ssm/selective/reference.py",
   "new_b = np.exp(la[:, offset:]) * bb[:, :-offset] + bb[:, offset:]",
   "new_b = np.exp(la[:, :-offset]) * bb[:, :-offset] + bb[:, offset:]",
   SELECTIVE,
   "the scan's combine decays the earlier element by its own transition instead of the later one's")
_m("selective-chunked-state-not-carried", "refimpl/ssm/selective/reference.py",
   "h_in = h_c[:, -1]",
   "h_in = 0 * h_c[:, -1]",
   SELECTIVE,
   "the chunked view does not carry the state across chunks")
_m("selective-group-order", "refimpl/ssm/selective/reference.py",
   "return np.repeat(X, d // X.shape[2], axis=2)",
   "return np.tile(X, (1, 1, d // X.shape[2], 1))",
   SELECTIVE,
   "grouped B/C expanded as (r g) instead of (g r): channel c reads group c mod g")
_m("selective-numba-fast-path-drops-D", "refimpl/ssm/selective/numba.py",
   "Y[t, c] = Y[t, c] + Dd[c] * us[t, c]",
   "Y[t, c] = Y[t, c]",
   SELECTIVE,
   "the Numba fast path (real A, Euler B) drops the skip D u")

# =================================================================================================== SSD
_m("ssd-chunk-state-not-carried", "refimpl/ssm/ssd/reference.py",
   "S.append(G[c][..., None, None] * S[c] + U[c])",
   "S.append(U[c])",
   SSD,
   "SSD's chunked view: the state entering a chunk is only the previous chunk's own contribution")
_m("ssd-recurrent-input-without-dt", "refimpl/ssm/ssd/reference.py",
   "S = a_t[..., None, None] * S + (p.dt[:, t, :, None] * p.x[:, t])[..., None] * p.B[:, t, :, None, :]",
   "S = a_t[..., None, None] * S + (p.x[:, t])[..., None] * p.B[:, t, :, None, :]",
   SSD,
   "the SSD recurrence adds x_t B_t^T without the step dt_t")
_m("ssd-numba-state-leaks-across-sequences", "refimpl/ssm/ssd/numba.py",
   "G = math.exp(cum[T - 1]) if sid_e == seg_prev else zero",
   "G = math.exp(cum[T - 1])",
   SSD,
   "the Numba SSD kernel carries the state across a packed-sequence boundary (seq_idx) at a chunk boundary")

# =================================================================================================== structured
_m("s4-cauchy-sign", "refimpl/ssm/s4/reference.py",
   "return np.sum(v[:, None, :] / (g[:, :, None] - lam[:, None, :]), axis=-1)",
   "return np.sum(v[:, None, :] / (g[:, :, None] + lam[:, None, :]), axis=-1)",
   STRUCTURED,
   "the Cauchy kernel with g + lambda in the denominator")
_m("s4-real-output-2re-as-re", "refimpl/ssm/s4/reference.py",
   "return K.real.copy() if output == \"re\" else 2.0 * K.real",
   "return K.real.copy() if output == \"re\" else K.real",
   STRUCTURED,
   "output='2re' returns Re K (the conjugate half dropped)")
_m("s4d-vandermonde-power-off-by-one", "refimpl/ssm/s4d/reference.py",
   "zk = np.ones_like(z)  # z^k",
   "zk = z.copy()  # z^k",
   STRUCTURED,
   "the Vandermonde kernel starts at z^1 (K_k = sum v z^(k+1))")
_m("s5-backward-not-reversed", "refimpl/ssm/s5/reference.py",
   "y = y + _readout(states(Lambda_bar, Bu[:, ::-1].copy(), None)[:, ::-1], C_back, output)",
   "y = y + _readout(states(Lambda_bar, Bu, None), C_back, output)",
   STRUCTURED,
   "bidirectional S5: the backward direction runs forward")
_m("lru-gamma-dropped", "refimpl/ssm/lru/reference.py",
   "Bu = gamma * np.einsum(\"nd,bld->bln\", B, u.astype(B.dtype))",
   "Bu = np.einsum(\"nd,bld->bln\", B, u.astype(B.dtype))",
   STRUCTURED,
   "the LRU input without its normalization gamma = sqrt(1 - |lambda|^2)")
_m("ema-damping-dropped", "refimpl/ssm/ema/reference.py",
   "h = alpha * u + (1.0 - alpha * delta) * h",
   "h = alpha * u + (1.0 - alpha) * h",
   STRUCTURED,
   "MEGA's damped EMA recurrence without the damping delta (1 - alpha instead of 1 - alpha delta)")
_m("hippo-legs-diagonal", "refimpl/ssm/hippo/reference.py",
   "A[np.diag_indices(N)] = n + 1.0",
   "A[np.diag_indices(N)] = n",
   HIPPO + ("tests/test_s4.py",),
   "HiPPO-LegS with A_nn = n instead of n + 1")

# =================================================================================================== attention
_m("softmax-causal-strict", "refimpl/attention/softmax/reference.py",
   "return j <= i + offset",
   "return j < i + offset",
   SOFTMAX + LINEAR,
   "the causal mask excludes the diagonal (j < i instead of j <= i)")
_m("softmax-bottom-right-offset-sign", "refimpl/attention/softmax/reference.py",
   "offset = 0 if alignment == \"top_left\" else s - l",
   "offset = 0 if alignment == \"top_left\" else l - s",
   SOFTMAX,
   "the bottom-right causal diagonal shifted the wrong way (l - s instead of s - l)")
_m("softmax-scale-twice", "refimpl/attention/softmax/reference.py",
   "scores = dtype.type(scale) * np.einsum(",
   "scores = dtype.type(scale * scale) * np.einsum(",
   SOFTMAX,
   "the scale applied twice (invisible when scale = 1)")
_m("mha-head-order", "refimpl/attention/softmax/reference.py",
   "return z.reshape(b, l, h * p) @ W_O",
   "return np.swapaxes(z, 2, 3).reshape(b, l, h * p) @ W_O",
   SOFTMAX,
   "multi-head attention concatenates the heads value-major ((p h) instead of (h p))")
_m("flash-numba-normalizer-not-rescaled", "refimpl/attention/softmax/numba.py",
   "lsum[i] = c * lsum[i]",
   "lsum[i] = lsum[i]",
   SOFTMAX,
   "the Numba flash kernel rescales O but not the running normalizer l when the row max grows")
_m("linear-causal-strict", "refimpl/attention/linear/reference.py",
   "A = A * np.tril(np.ones((l, s), dtype=A.dtype))",
   "A = A * np.tril(np.ones((l, s), dtype=A.dtype), -1)",
   LINEAR,
   "quadratic causal linear attention without the diagonal (key j = i not attended)")
_m("linear-chunked-state-reset", "refimpl/attention/linear/reference.py",
   "S = S + np.einsum(\"bjhp,bjhn->bhpn\", Vc, Kc)",
   "S = np.einsum(\"bjhp,bjhn->bhpn\", Vc, Kc)",
   LINEAR,
   "chunked linear attention: the state after a chunk forgets the chunks before it")
_m("delta-beta-on-new-value-only", "refimpl/attention/delta/reference.py",
   "S_t = S_t + (beta[:, t, :, None] * (v[:, t] - v_old))[..., None] * k[:, t, :, None, :]",
   "S_t = S_t + (beta[:, t, :, None] * v[:, t] - v_old)[..., None] * k[:, t, :, None, :]",
   DELTA,
   "the delta rule erases the old value with weight 1 instead of beta (beta v - S k)")
_m("delta-chunked-state-decay-dropped", "refimpl/attention/delta/reference.py",
   "S[bi, hi] = gamma[-1] * (S0c - (S0c @ W.T) @ K) + (U * Gamma[-1][:, None]).T @ K",
   "S[bi, hi] = (S0c - (S0c @ W.T) @ K) + (U * Gamma[-1][:, None]).T @ K",
   DELTA,
   "chunked gated delta rule: the entering state is not decayed over the chunk")
_m("fast-weights-read-before-write", "refimpl/attention/fast_weights/reference.py",
   "        W_i = _apply_sigma(sigma, W_i + a[:, i, :, :, None] * b_vec[:, i, :, None, :])\n"
   "        # y_i = W_i x_i\n"
   "        y[:, i] = np.einsum(\"bhpn,bhn->bhp\", W_i, x_read[:, i])\n",
   "        y[:, i] = np.einsum(\"bhpn,bhn->bhp\", W_i, x_read[:, i])\n"
   "        W_i = _apply_sigma(sigma, W_i + a[:, i, :, :, None] * b_vec[:, i, :, None, :])\n"
   "        # y_i = W_i x_i\n",
   LINEAR,
   "the fast-weight memory is read before the step's write (y_i = W_{i-1} x_i)")
_m("positional-sin-cos-swapped", "refimpl/attention/positional/reference.py",
   "pe[:, 0::2] = np.sin(angle)\n    pe[:, 1::2] = np.cos(angle[:, : d // 2])",
   "pe[:, 0::2] = np.cos(angle)\n    pe[:, 1::2] = np.sin(angle[:, : d // 2])",
   SOFTMAX,
   "sinusoidal positions with cos on the even and sin on the odd channels")
_m("features-chi-norms-fixed", "refimpl/attention/features/reference.py",
   "r = np.linalg.norm(rng.standard_normal((f, n)), axis=1)",
   "r = np.full(f, np.sqrt(n))",
   PERFORMER,
   "orthogonal/iid random features with every row of norm sqrt(n) in place of chi-distributed norms (biased)")
_m("features-unsigned-qr", "refimpl/attention/features/reference.py",
   "return Q * s[..., None, :]",
   "return Q",
   PERFORMER,
   "orthogonal random features from LAPACK's raw Q (signs of diag R not fixed: not Haar, biased)")
_m("features-positive-norm-sign", "refimpl/attention/features/reference.py",
   "z = x @ W.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)",
   "z = x @ W.T + 0.5 * np.sum(x * x, axis=-1, keepdims=True)",
   PERFORMER,
   "positive random features with exp(w.x + |x|^2/2) instead of exp(w.x - |x|^2/2)")


# =================================================================================================== subtler ones
_m("lti-scan-initial-state-not-propagated", "refimpl/ssm/lti/reference.py",
   "bb[:, 0] += _apply_A(a[0, 0], s0, diagonal)",
   "bb[:, 0] += s0",
   LTI,
   "lti.scan folds the initial state in without A_bar_0 (h_0 = initial_state + B_bar x_0)")
_m("lti-numba-tv-B-ignored", "refimpl/ssm/lti/numba.py",
   "ta = t if lt > 1 else 0\n            tb = t if ltb > 1 else 0\n            # h_t = A_bar h_{t-1} + B_bar x_t\n",
   "ta = t if lt > 1 else 0\n            tb = 0\n            # h_t = A_bar h_{t-1} + B_bar x_t\n",
   LTI,
   "the Numba dense LTI recurrence reads B_bar_0 at every step (a time-varying B_bar ignored)")
_m("selective-scan-initial-state-not-decayed", "refimpl/ssm/selective/reference.py",
   "bb[:, 0] += np.exp(la[:, 0]) * p.initial_state",
   "bb[:, 0] += p.initial_state",
   SELECTIVE,
   "the selective scan folds the initial state in without A_bar_0")
_m("ssd-clamp-before-softplus", "refimpl/ssm/ssd/reference.py",
   "    if dt_softplus:\n"
   "        # softplus(dt + dt_bias)  (threshold 20)\n"
   "        with np.errstate(over=\"ignore\"):\n"
   "            out = softplus(out)\n"
   "    lo, hi = dt_limit\n"
   "    if not (lo == 0.0 and hi == math.inf):\n"
   "        # clamp to [lo, hi]\n"
   "        out = np.clip(out, lo, hi)\n",
   "    lo, hi = dt_limit\n"
   "    if not (lo == 0.0 and hi == math.inf):\n"
   "        # clamp to [lo, hi]\n"
   "        out = np.clip(out, lo, hi)\n"
   "    if dt_softplus:\n"
   "        # softplus(dt + dt_bias)  (threshold 20)\n"
   "        with np.errstate(over=\"ignore\"):\n"
   "            out = softplus(out)\n",
   SSD,
   "SSD's dt_limit clamp applied before the softplus instead of after")
_m("s4-woodbury-sign", "refimpl/ssm/s4/reference.py",
   "return k00 - np.einsum(\"rl,lr->l\", k01, sol)",
   "return k00 + np.einsum(\"rl,lr->l\", k01, sol)",
   STRUCTURED,
   "the DPLR resolvent with the Woodbury correction added instead of subtracted")
_m("hippo-legt-sign-pattern", "refimpl/ssm/hippo/reference.py",
   "A = np.outer(r, r) * np.where(j <= i, 1.0, (-1.0) ** (i - j))",
   "A = np.outer(r, r) * np.where(j <= i, 1.0, (-1.0) ** (i - j + 1))",
   HIPPO + ("tests/test_s4.py",),
   "HiPPO-LegT with the upper triangle's signs flipped ((-1)^(n-k+1) instead of (-1)^(n-k))")
_m("hippo-legs-online-step-at-wrong-time", "refimpl/ssm/hippo/reference.py",
   "rhs = (eye + (1.0 - alpha) * h_k * A) @ c_k + B * (alpha * h_k1 * f[k + 1] + (1.0 - alpha) * h_k * f[k])",
   "rhs = (eye + (1.0 - alpha) * h_k1 * A) @ c_k + B * (alpha * h_k1 * f[k + 1] + (1.0 - alpha) * h_k * f[k])",
   HIPPO,
   "the LegS online projection's explicit half uses the new time's step dt/t_(k+1) instead of dt/t_k")
_m("flash-numba-causal-block-end", "refimpl/attention/softmax/numba.py",
   "kend = min(s, q1 - 1 + offset + 1)",
   "kend = min(s, q1 - 1 + offset)",
   SOFTMAX,
   "the Numba flash kernel stops one key early: the last query of a block loses its diagonal key")
_m("performer-scale-not-split", "refimpl/attention/linear/reference.py",
   "r = math.sqrt(_performer_scale(scale, n))  # a Python float: float32 inputs stay float32",
   "r = _performer_scale(scale, n)  # a Python float: float32 inputs stay float32",
   PERFORMER,
   "Performer attention scales q and k by scale each (scale^2 q.k) instead of sqrt(scale) each")
_m("linear-eps-clamp-as-add", "refimpl/attention/linear/reference.py",
   "return num / np.maximum(den, eps)[..., None]",
   "return num / (den + eps)[..., None]",
   LINEAR,
   "linear attention's eps_mode='clamp' adds eps instead (invisible when eps = 0)")
_m("linear-offsets-decay-sign", "refimpl/attention/linear/reference.py",
   "decay = np.where(np.isneginf(m_prev), 0.0, np.exp(m_prev - m_t))",
   "decay = np.where(np.isneginf(m_prev), 0.0, np.exp(m_t - m_prev))",
   LINEAR,
   "the prefix-max stabilized recurrence rescales the state by exp(m_t - m_{t-1}) (the inverse factor)")
_m("features-hyperbolic-normalization", "refimpl/attention/features/reference.py",
   "phi = np.exp(z - c) / math.sqrt(2 * f)",
   "phi = np.exp(z - c) / math.sqrt(f)",
   PERFORMER,
   "hyperbolic random features normalized by 1/sqrt(f) instead of 1/sqrt(2f) (a factor 2 in the kernel)")
_m("ema-kernel-damping-dropped", "refimpl/ssm/ema/reference.py",
   "return np.exp(np.log1p(-alpha * delta)[..., None] * k)",
   "return np.exp(np.log1p(-alpha)[..., None] * k)",
   STRUCTURED,
   "the EMA convolution kernel's powers (1 - alpha)^k instead of (1 - alpha delta)^k")
_m("lru-lambda-uses-log-params", "refimpl/ssm/lru/reference.py",
   "return np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))",
   "return np.exp(-np.exp(nu_log) + 1j * theta_log)",
   STRUCTURED,
   "the LRU eigenvalue with theta_log used as the phase (exp(theta_log) forgotten)")


# =================================================================================================== the kernels
_m("selective-numba-state-reset-per-time-chunk", "refimpl/ssm/selective/numba.py",
   "            T = min(tc, l - s)\n",
   "            T = min(tc, l - s)\n            hs[:] = 0\n",
   SELECTIVE,
   "the Numba fast path restarts every block's state at each staged time chunk of _TC steps (the initial state "
   "is lost too)")
_m("selective-numba-state-not-carried-across-time-chunks", "refimpl/ssm/selective/numba.py",
   "            T = min(tc, l - s)\n",
   "            T = min(tc, l - s)\n            if s > 0:\n                hs[:] = 0\n",
   SELECTIVE,
   "the Numba fast path keeps each block's state within its first time chunk only: from step _TC = 16 on "
   "every chunk starts from zero (visible only for l > 16)")
_m("ssd-numba-shared-CB-ignores-batch", "refimpl/ssm/ssd/numba.py",
   "if bi != have_b or gi != have_g:",
   "if gi != have_g:",
   SSD,
   "the Numba SSD kernel reuses a C B^T across a batch boundary inside a thread's group of rows")
_m("ssd-numba-intra-mask-across-sequences", "refimpl/ssm/ssd/numba.py",
   "                            if seq[bi, s + j] != sid_i:\n                                Mi[j] = zero",
   "                            if seq[bi, s + j] > sid_i:\n                                Mi[j] = zero",
   SSD,
   "the Numba SSD kernel's intra-chunk mask lets an earlier packed sequence reach the next one")
_m("ssd-numba-x-finite-check-dropped", "refimpl/ssm/ssd/numba.py",
   "                        bad |= tx != tx",
   "                        bad |= False",
   SSD,
   "the Numba SSD kernel's in-kernel finiteness check of x is dropped (a NaN/inf x is not refused)")
_m("ssd-numba-entering-state-undecayed", "refimpl/ssm/ssd/numba.py",
   "dec = math.exp(cum[i])",
   "dec = 1.0",
   SSD,
   "the Numba SSD kernel adds the entering state's output C_i S undecayed (no exp(sum dt A))")
_m("lti-cuda-D-dropped", "refimpl/ssm/lti/cuda.py",
   "acc += D[c, q, j] * x[bi, t, c, j]",
   "acc += 0.0 * D[c, q, j] * x[bi, t, c, j]",
   ("tests/test_ssm_cuda.py",),
   "the CUDA diagonal recurrence drops the skip D x_t")
_m("linear-numba-normalizer-not-accumulated", "refimpl/attention/linear/numba.py",
   "z[bi, hi, c] += K[i, c]",
   "z[bi, hi, c] = K[i, c]",
   LINEAR,
   "the Numba chunked linear attention overwrites the normalizer z with the last key instead of summing")
_m("linear-numba-causal-strict", "refimpl/attention/linear/numba.py",
   "for j in range(i + 1, T):\n                        A[i, j] = 0.0",
   "for j in range(i, T):\n                        A[i, j] = 0.0",
   LINEAR,
   "the Numba chunked linear attention masks the diagonal too (key j = i not attended)")
_m("linear-numba-head-reads-first-state", "refimpl/attention/linear/numba.py",
   "gemm_unchecked(Q, False, St[r], False, O, 0.0, sc)",
   "gemm_unchecked(Q, False, St[0], False, O, 0.0, sc)",
   LINEAR,
   "the Numba chunked linear attention reads the first head of its thread's group's state for every head")
_m("linear-numba-finite-check-skips-v", "refimpl/attention/linear/numba.py",
   "                        bad |= tv != tv",
   "                        bad |= False",
   ("tests/test_perf_kernels_w2w3.py",),
   "the Numba chunked linear attention's in-kernel finiteness check leaves v out (a NaN/inf v is not refused)")
_m("delta-numba-state-sign", "refimpl/attention/delta/numba.py",
   "St[c, col] = -gam[T - 1] * St[c, col]",
   "St[c, col] = gam[T - 1] * St[c, col]",
   DELTA,
   "the Numba chunked delta rule passes on the negated decayed state")
_m("s4d-numba-block-power-conjugated", "refimpl/ssm/s4d/numba.py",
   "pr, pi = pr * zBr[n] - pi * zBi[n], pr * zBi[n] + pi * zBr[n]",
   "pr, pi = pr * zBr[n] + pi * zBi[n], pr * zBi[n] + pi * zBr[n]",
   STRUCTURED,
   "the blocked Numba Vandermonde kernel's complex product with a sign error (v z^(mB) chains wrong)")


# =================================================================================================== machinery

class _Interrupted(BaseException):
    """SIGTERM, raised where the script is so that every ``finally`` restores its file."""


def _on_sigterm(signum, frame):  # pragma: no cover - signal path
    raise _Interrupted()


def _git_status(path: str) -> str:
    out = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"git status failed for {path}: {out.stderr.strip()}")
    return out.stdout.strip()


def _tracked(path: str) -> bool:
    return subprocess.run(["git", "ls-files", "--error-unmatch", "--", path], cwd=ROOT,
                          capture_output=True).returncode == 0


def _dotted(path: str) -> str:
    return path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")


def _numba_cache_files(path: str) -> List[Path]:
    """Numba cache files of the module at ``path`` and of every ``refimpl`` module importing it.

    Only a module that compiles code itself (``njit``/``jit``) can leave stale compiled code behind; a plain
    NumPy module (a ``reference.py``) is called from Python, never compiled into its importers' kernels.
    """
    if not re.search(r"\b(njit|jit|vectorize|generated_jit|overload)\b", (ROOT / path).read_text()):
        return []
    mod = _dotted(path)
    targets = {ROOT / path}
    pattern = re.compile(rf"(from\s+{re.escape(mod)}\s+import|import\s+{re.escape(mod)}\b)")
    for f in (ROOT / "refimpl").rglob("*.py"):
        try:
            if pattern.search(f.read_text()):
                targets.add(f)
        except OSError:
            continue
    files: List[Path] = []
    for t in targets:
        cache = t.parent / "__pycache__"
        if cache.is_dir():
            files += [p for p in cache.iterdir() if p.name.startswith(t.stem + ".") and p.suffix in (".nbi", ".nbc")]
    return files


def _clear_numba_cache(path: str) -> int:
    n = 0
    for p in _numba_cache_files(path):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def preflight(mutants: Sequence[SuiteMutant]) -> List[str]:
    """Every reason not to start: a modified/untracked target, a stale original text, a missing test file."""
    problems = []
    for f in sorted({m.file for m in mutants}):
        if not (ROOT / f).is_file():
            problems.append(f"{f}: no such file")
            continue
        if not _tracked(f):
            problems.append(f"{f}: not tracked by git (commit it first)")
        st = _git_status(f)
        if st:
            problems.append(f"{f}: git reports it modified ({st!r}); refusing to mutate uncommitted work")
    for m in mutants:
        p = ROOT / m.file
        if p.is_file():
            k = p.read_text().count(m.original)
            if k != 1:
                problems.append(f"{m.name}: the original text occurs {k} times in {m.file} (expected once: "
                                "the table is stale)")
        if m.original == m.mutated:
            problems.append(f"{m.name}: the mutated text equals the original")
        for t in m.tests:
            if not (ROOT / t).is_file():
                problems.append(f"{m.name}: test file {t} does not exist")
    return problems


def _pytest(tests: Sequence[str], timeout: float) -> Tuple[int, str, float]:
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # -n 0: one process (pyproject's addopts run xdist workers, under which -x ends in "Interrupted", exit 2)
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = -9
        out += f"\n[timed out after {timeout:.0f} s]"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return rc, out, time.perf_counter() - t0


def _killer(out: str) -> str:
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:300]
    return ""


@dataclasses.dataclass
class Outcome:
    mutant: SuiteMutant
    status: str  # killed | survived | error
    rc: int
    time_s: float
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.mutant.name, "file": self.mutant.file, "doc": self.mutant.doc,
                "tests": list(self.mutant.tests), "status": self.status, "rc": self.rc,
                "time_s": round(self.time_s, 2), "detail": self.detail}


def run_one(m: SuiteMutant, timeout: float) -> Outcome:
    path = ROOT / m.file
    original = path.read_bytes()
    text = original.decode()
    if text.count(m.original) != 1:
        return Outcome(m, "error", -1, 0.0, "original text not found exactly once (file changed during the run)")
    mutated = text.replace(m.original, m.mutated, 1).encode()
    if _git_status(m.file):  # someone edited it since the preflight: never mutate uncommitted work
        return Outcome(m, "error", -1, 0.0, f"{m.file} was modified during the run; not mutated")
    try:
        _clear_numba_cache(m.file)
        path.write_bytes(mutated)
        rc, out, dt = _pytest(m.tests, timeout)
    finally:
        if path.read_bytes() != mutated:  # pragma: no cover - someone wrote the file meanwhile: keep a copy
            keep = path.with_name(path.name + ".suite_mutants.conflict")
            keep.write_bytes(path.read_bytes())
            print(f"\nWARNING: {m.file} changed while mutated; its content was saved to {keep}", file=sys.stderr)
        path.write_bytes(original)
        _clear_numba_cache(m.file)
    if path.read_bytes() != original:  # pragma: no cover - would be a bug of this script
        raise SystemExit(f"FATAL: {m.file} was not restored")
    if rc == 1:
        return Outcome(m, "killed", rc, dt, _killer(out))
    if rc == 0:
        return Outcome(m, "survived", rc, dt, out.strip().splitlines()[-1] if out.strip() else "")
    return Outcome(m, "error", rc, dt, "\n".join(out.strip().splitlines()[-15:]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these mutants (repeatable)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default 900)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unmutated tree")
    ap.add_argument("--json", metavar="FILE", help="write the outcomes as JSON")
    args = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"duplicate mutant names: {sorted(dup)}")
    chosen = MUTANTS
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise SystemExit(f"unknown mutant(s): {unknown}; --list shows the table")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.file}\n    {m.doc}\n    tests: {' '.join(m.tests)}")
        print(f"{len(chosen)} mutants")
        return 0

    problems = preflight(chosen)
    if problems:
        print("refusing to start:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)

    if not args.no_baseline:
        union = list(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(union)} test files on the unmutated tree ...", flush=True)
        rc, out, dt = _pytest(union, args.timeout)
        if rc != 0:
            print(f"baseline FAILED (rc {rc}, {dt:.0f} s): the suite must pass before mutants mean anything\n"
                  + "\n".join(out.strip().splitlines()[-20:]), file=sys.stderr)
            return 2
        print(f"baseline passed ({dt:.0f} s)", flush=True)

    outcomes: List[Outcome] = []
    try:
        for i, m in enumerate(chosen, 1):
            print(f"[{i}/{len(chosen)}] {m.name} ... ", end="", flush=True)
            o = run_one(m, args.timeout)
            outcomes.append(o)
            print(f"{o.status.upper()} ({o.time_s:.0f} s)" + (f"  {o.detail}" if o.detail and o.status != "error"
                                                             else ""), flush=True)
            if o.status == "error":
                print("    " + o.detail.replace("\n", "\n    "), flush=True)
    except (KeyboardInterrupt, _Interrupted):
        print("\ninterrupted: every file was restored", file=sys.stderr)
    finally:
        dirty = [f for f in sorted({m.file for m in chosen}) if _git_status(f)]
        if dirty:  # pragma: no cover
            print(f"FATAL: git reports {dirty} modified after the run", file=sys.stderr)

    killed = [o for o in outcomes if o.status == "killed"]
    survived = [o for o in outcomes if o.status == "survived"]
    errors = [o for o in outcomes if o.status == "error"]
    n = len(outcomes)
    rate = 100.0 * len(killed) / n if n else 0.0
    print(f"\nkill rate: {len(killed)}/{n} = {rate:.1f}%"
          + (f"; survived: {', '.join(o.mutant.name for o in survived)}" if survived else "")
          + (f"; errors: {', '.join(o.mutant.name for o in errors)}" if errors else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"killed": len(killed), "total": n, "kill_rate": rate,
                                               "outcomes": [o.to_dict() for o in outcomes]}, indent=2))
    return 0 if n == len(chosen) and len(killed) == n else 1


if __name__ == "__main__":
    sys.exit(main())
