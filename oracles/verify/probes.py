"""Structural probes shared by op specs: causality / row locality along a sequence axis.

A causal map's outputs at positions ``< t0`` do not depend on inputs at
positions ``>= t0``.  The probe changes the later inputs (a cyclic shift of the
positions ``>= t0`` among themselves, the same for every sequence input, then a
random shrink by a factor in [0.5, 1), so every input stays in its domain) and requires the
earlier outputs to agree within the sum of the two runs' derived bounds (each
run is within its bound of the same exact value), so a kernel whose rounding
legitimately mixes positions (an FFT convolution) passes and one whose math
does not (a stabilizer taken over all positions) fails with the size of the
dependence.

The probe runs in each dtype the verification asks for (``Probe.per_dtype``): both input sets are
cast to that dtype as the cases are, the oracle sees them cast back up losslessly, and the bounds are
that dtype's (float16/bfloat16: the same-dtype baseline rule), so a float32-only kernel is judged by
float32 rounding, never by float64's.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from oracles.verify.registry import Probe, ProbeDtype

__all__ = ["causality_probe", "float64_probe_dtype"]


def _as_float64(x):
    return {k: (None if v is None else np.asarray(v, dtype=np.result_type(np.asarray(v).dtype, np.float64))
                if np.asarray(v).dtype.kind in "fc" else v) for k, v in x.items()}


def float64_probe_dtype(spec, conv) -> ProbeDtype:
    """The probe's dtype when the caller gives none: float64 inputs, float64 bounds."""
    return ProbeDtype("float64", _as_float64, _as_float64,
                      lambda x_up, out: spec.bounds(dict(x_up), dict(out), conv, np.dtype(np.float64)))


def _c128(a) -> np.ndarray:
    """An output as complex128 for differences (float16/bfloat16 go through float64 first)."""
    a = np.asarray(a)
    return (a if a.dtype.kind in "fciub" else a.astype(np.float64)).astype(np.complex128)


def _seq_len(x, spec, seq_inputs) -> int:
    args = {a.name: a for a in spec.inputs}
    for nm, ax in seq_inputs.items():
        v = x.get(nm)
        if v is not None:
            pat = args[nm].pattern_for(np.ndim(v))
            return int(np.shape(v)[pat.index(ax)])
    return 0


def causality_probe(seq_inputs: Dict[str, str], seq_outputs: Dict[str, str], *, name: str = "causality",
                    doc: str = "", why: str = "", applies=lambda conv: True, local: bool = False,
                    sampler=None) -> Probe:
    """A probe: outputs at positions ``< t0`` must not change when inputs at ``>= t0`` change.

    ``seq_inputs``/``seq_outputs`` map argument names to the name of their sequence axis.
    ``local=True`` checks row locality instead: each output position depends only
    on the same input position, so *any* other position's change must not matter
    (a feature map applied per position).  ``why`` is appended to a failure.
    ``sampler(rng, conv)`` draws the probe's inputs (default: the op's sampler).
    """

    def run(call, spec, conv, rng, dtype: Optional[ProbeDtype] = None) -> Tuple[bool, str]:
        dt = dtype or float64_probe_dtype(spec, conv)
        # a sample long enough to split (samplers draw L from a small ladder; retry a few times)
        for _ in range(50):
            x = spec.fit_domain((sampler or spec.sample)(rng, conv), rng, conv)  # inside a declared --domain
            if _seq_len(x, spec, seq_inputs) >= 4:
                break
        x = _as_float64(x)
        args = {a.name: a for a in spec.inputs}
        # the sequence length: from the first sequence input present
        L = None
        for nm, ax in seq_inputs.items():
            v = x.get(nm)
            if v is not None:
                pat = args[nm].pattern_for(np.ndim(v))
                L = np.shape(v)[pat.index(ax)]
                break
        if L is None or L < 2:
            return True, "not applicable: sequence shorter than 2"
        t0 = L // 2
        x2 = dict(x)
        for nm, ax in seq_inputs.items():
            v = x.get(nm)
            if v is None:
                continue
            pat = args[nm].pattern_for(np.ndim(v))
            axis = pat.index(ax)
            # permute the later positions among themselves (the same permutation for every input):
            # each value stays a valid sample, jointly (steps, decays, key norms keep their domains)
            start = 1 if local else t0
            order = np.arange(v.shape[axis])
            order[start:] = np.roll(order[start:], 1)
            v2 = np.take(np.asarray(v), order, axis=axis)
            # and shrink them by a random factor in [0.5, 1): a permutation alone keeps every symmetric
            # function of the later positions (a max over keys); shrinking keeps positive inputs positive
            # and bounded ones (decays <= 1, beta |k|^2 <= 2) within their bounds
            tail = [slice(None)] * v2.ndim
            tail[axis] = slice(start, None)
            v2 = v2.astype(np.result_type(v2.dtype, np.float64), copy=True)
            v2[tuple(tail)] = v2[tuple(tail)] * rng.uniform(0.5, 1.0, size=v2[tuple(tail)].shape)
            x2[nm] = v2
        # both input sets in the candidate's dtype; the oracle and the bounds on exactly those values
        x, x2 = dt.cast(x), dt.cast(x2)
        y1, y2 = call(x), call(x2)
        x_up, x2_up = dt.upcast(x), dt.upcast(x2)
        o1 = spec.oracle(dict(x_up), conv)
        o2 = spec.oracle(dict(x2_up), conv)
        b1 = dt.bounds(x_up, o1)
        b2 = dt.bounds(x2_up, o2)
        outs = {a.name: a for a in spec.outputs}
        worst = (0.0, None, None)
        for nm, ax in seq_outputs.items():
            if nm not in y1 or nm not in y2:
                continue
            pat = outs[nm].pattern_for(np.ndim(y1[nm]))
            axis = pat.index(ax)
            idx = [slice(None)] * np.ndim(y1[nm])
            idx[axis] = slice(0, 1) if local else slice(0, t0)
            d = np.abs(_c128(y1[nm])[tuple(idx)] - _c128(y2[nm])[tuple(idx)])
            bb = (np.broadcast_to(np.asarray(b1[nm].values, dtype=float), np.shape(y1[nm]))[tuple(idx)]
                  + np.broadcast_to(np.asarray(b2[nm].values, dtype=float), np.shape(y1[nm]))[tuple(idx)])
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(bb > 0, d / bb, np.where(d > 0, np.inf, 0.0))
            if r.size and float(np.max(r)) > worst[0]:
                i = np.unravel_index(int(np.argmax(r)), r.shape)
                worst = (float(r[i]), nm, (tuple(int(j) for j in i), float(d[i]), float(np.max(np.abs(_c128(y1[nm]))))))
        where = "position 0" if local else f"positions < {t0}"
        changed = "every other position" if local else f"positions >= {t0}"
        if worst[0] <= 1.0:
            return True, (f"outputs at {where} unchanged (within {dt.name} bounds) when inputs at {changed} change")
        r, nm, (i, d, scale) = worst
        return False, (f"output {nm} at {where} changed by {d:.3e} (index {i}; {r:.3g}x the {dt.name} rounding bound; output "
                       f"magnitude {scale:.3e}) when only inputs at {changed} changed: "
                       + ("the map is not applied per position" if local else "the output depends on future inputs")
                       + (f" -- {why}" if why else ""))

    return Probe(name=name, doc=doc or ("each output position depends only on its own input position" if local else
                                       "outputs never depend on later inputs"), run=run, applies=applies,
                 per_dtype=True)
