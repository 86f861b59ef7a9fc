r"""Gradient ground truth: finite differences of an independent float64 forward, with their error bounded.

Nothing here knows any backward pass.  Every gradient is obtained from *forward* evaluations of a function
``f(inputs: dict) -> dict of outputs`` (a ground-truth forward from ``oracles/``), so it can check any
backward (refimpl's literal adjoints, a Numba kernel, a framework's autograd) without sharing a line with it.

The quantity differentiated
===========================
For outputs ``y_k`` and cotangents ``w_k`` the real loss is ``L = Re sum_k conj(w_k) y_k``
(:func:`real_loss`; for real arrays simply ``sum w y``).  Its gradient with respect to an input ``x`` is the
vector-Jacobian product ``J^T w``.

**Complex convention.**  For a complex input ``z = a + i b`` the gradient is ``dL/da + i dL/db`` (PyTorch's
convention, and Mamba's for its complex ``A``); e.g. ``L = |z|^2`` gives ``2 z``.  JAX's ``vjp`` returns the
conjugate.  A complex output's cotangent is given in the same convention (``L = Re sum conj(w) y``).

Central differences with Richardson extrapolation (:func:`fd_vjp`, :func:`fd_jvp`)
====================================================================================
For one real coordinate ``x_j`` (a complex element is two coordinates, its real and imaginary parts) and
``g(x_j) = L(x)``, the central difference ``D(h) = (g(x_j + h) - g(x_j - h)) / (2h)`` has the expansion
``D(h) = g' + c_2 h^2 + c_4 h^4 + c_6 h^6 + ...`` (Taylor, ``g`` smooth near ``x_j``).  With the steps
``h, h/2, h/4`` (``levels=3``: six evaluations per coordinate, and one large step below; the default) Richardson's table is

    ``D_1(h) = (4 D(h/2) - D(h)) / 3``            (``O(h^4)``),
    ``D_1(h/2) = (4 D(h/4) - D(h/2)) / 3``,
    ``D_2 = (16 D_1(h/2) - D_1(h)) / 15``         (``O(h^6)``, the value returned),

and the **truncation estimate** is ``|D_2 - D_1(h/2)|``: the standard a-posteriori estimate (it is the size of
the last correction; it estimates the error of ``D_1(h/2)``, which is larger than ``D_2``'s by a factor
``~ 1/h^2``, so it over-states ``D_2``'s truncation for smooth ``g``).  It is an *estimate*, not a proof: a
function with a kink or a pole within ``h`` of ``x_j`` defeats it (and the table then usually shows it by a
large estimate).  ``levels=2`` (four evaluations: ``h, h/2``, value ``D_1``, estimate ``|D_1 - D(h/2)|``) is
offered for large cases.

**Rounding.**  If every output of the float64 forward is within ``E_k`` of the exact value, a loss evaluation
is within ``E_w = sum_k |w_k| E_k`` and the difference ``(g(x+s) - g(x-s)) / (2s)`` within ``E_w / s``.
Propagated through the table's coefficients (taking the worst sign of each evaluation's error):
``D(h)``: ``E_w / h``; ``D(h/2)``: ``2 E_w / h``; ``D(h/4)``: ``4 E_w / h``; ``D_1(h) <= 3 E_w / h``;
``D_1(h/2) <= 6 E_w / h``; ``D_2 <= (16 * 6 + 3) / 15 E_w / h = 6.6 E_w / h``
(``levels=2``: ``D_1 <= 3 E_w / h``).  The perturbed inputs ``x_j +- s`` are formed in float64; the quotient
divides by the step actually taken (``(x_j + s) - (x_j - s)``, exact in float64 by Sterbenz when
``s <= |x_j|``, and exact anyway for the power-of-two steps used below), so forming them adds no error.

``E_k`` (``forward_error``): the caller's bound of its forward (an ``oracles`` bound such as
:func:`oracles.tolerance.componentwise_bound` of the forward's depth and magnitude), or by default the
**assumption** ``E_k = DEFAULT_FORWARD_ULPS * eps * (|y_k| + rms(y))`` with ``DEFAULT_FORWARD_ULPS = 32``:
a forward whose outputs are accurate to 32 ulps of the output's own scale.  That holds for the dense float64
forwards of ``oracles/`` on the small cases differentiated here (depth well under 32 with terms of the outputs'
size); a forward with heavy cancellation (outputs much smaller than the terms summed) must pass its own.
In :func:`fd_vjp`, ``E_w`` of a coordinate sums only over the outputs that ``x_j`` reaches: those whose computed
values differ between ``x_j + s`` and ``x_j - s`` at some step, or between ``x`` and one large step
``x_j + max(1, 2|x_j|, 2 typical)`` (one more forward call per coordinate).  An output computed bit for bit alike
at all of these points is taken not to depend on ``x_j`` at all (a second assumption, stated: it removes the
outputs that ``x_j`` cannot reach, e.g. earlier positions of a causal op, other batch entries), and contributes no
rounding; the large step keeps a weak dependence (a saturated ``tanh``) that rounds away at the small steps.

**The table's own rounding.**  The loss projection ``sum_k w_k D_k`` of each column is summed in float64
(within ``gamma_m sum |w| |D|``, ``m`` the number of output entries) and the table's combinations round
(at most ``4 u`` relative to the largest ``|D(h_k)|`` per combination step); the value is the combination
``(64 D(h/4) - 20 D(h/2) + D(h)) / 45`` whose coefficients sum to ``85/45`` in absolute value, so
``TABLE_NORM * (gamma_m max_k sum |w||D(h_k)| + 4 u max_k |D(h_k)|)`` is added (a pass-through input, whose
differences are exact, still gets this ``~ u |g|``).

**The error bound per element** is ``truncation estimate + rounding bound`` (for a complex input the two
coordinates' bounds are combined with ``hypot``, a bound on ``|error|``), returned as ``FDGrad.error``.

**Step.**  ``h = 2^round(log2(rel_step * max(|x_j|, typical)))`` with ``typical`` the input's root mean square
(``1`` for an all-zero input, since then the input's scale is unknown; ``typical=`` overrides it).  A power of
two keeps ``x_j +- h/4`` exact whenever ``|x_j| <= 2^51 h``.  ``rel_step`` balances the truncation estimate
(``~ h^4 g^(5)`` for ``levels=3``, ``~ h^2 g^(3)`` for ``levels=2``) against rounding ``(~ eps / h)``:
``h ~ eps^(1/5) ~ 2^-10`` and ``h ~ eps^(1/3) ~ 2^-17`` respectively (``DEFAULT_REL_STEP``).  For inputs that
scale their function's argument strongly (a ``typical`` of 1 against derivatives of size ``K``) pass a smaller
``rel_step`` or ``typical``.

**Magnitude.**  From the same columns, the extrapolated Jacobian column ``dy/dx_j`` (every output) gives
``magnitude_j = sum_k |w_k| |dy_k/dx_j|`` = ``(|J|^T |w|)_j``: the scale against which a backward's rounding
is bounded (``componentwise_bound(magnitude, depth, dtype)``).

mpmath differences (:func:`mp_vjp`)
===================================
For tiny cases with a forward written in mpmath: central differences at ``dps`` significant digits with the
step ``h = 10^(-dps/3) max(|x_j|, 1)``: truncation ``~ h^2 g''' / 6 ~ 10^(-2 dps / 3)`` and rounding
``~ 10^(-dps) / h = 10^(-2 dps / 3)``; at ``dps=40`` about ``1e-26`` relative, far below float64's ``1e-16``:
an exact answer for comparing float64 code.  One Richardson step (``h`` and ``h/2``) is applied as well.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["FDGrad", "fd_vjp", "fd_jvp", "mp_vjp", "real_loss", "DEFAULT_FORWARD_ULPS", "DEFAULT_REL_STEP",
           "ROUNDING_FACTOR"]

#: the default forward-error assumption: ``E_k = DEFAULT_FORWARD_ULPS * eps * (|y_k| + rms(y))`` (see module doc)
DEFAULT_FORWARD_ULPS = 32.0
#: ``rel_step`` per number of Richardson levels: ``h ~ eps^(1/5)`` (levels 3) and ``eps^(1/3)`` (levels 2)
DEFAULT_REL_STEP = {2: 2.0 ** -17, 3: 2.0 ** -10}
#: rounding of the extrapolated value, in units of ``E_w / h`` (module doc: 6.6 for three levels, 3 for two)
ROUNDING_FACTOR = {2: 3.0, 3: 6.6}
#: ``sum |c_k|`` of the table's value as a combination of the ``D(h_k)``: ``(64 D(h/4) - 20 D(h/2) + D(h)) / 45``
#: (levels 3), ``(4 D(h/2) - D(h)) / 3`` (levels 2)
TABLE_NORM = {2: 5.0 / 3.0, 3: 85.0 / 45.0}
_EPS = float(np.finfo(np.float64).eps)
_U = _EPS / 2


def _gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)`` in float64 (Higham Lemma 3.1)."""
    return n * _U / (1 - n * _U)


@dataclasses.dataclass
class FDGrad:
    """The result of :func:`fd_vjp`.

    ``grad[name]``: the gradient estimate (float64, complex128 for a complex input; the input's shape);
    ``error[name]``: an elementwise bound of its error (truncation estimate + rounding bound; float64);
    ``magnitude[name]``: ``|J|^T |w|`` (float64); ``evaluations``: the number of forward calls;
    ``step[name]``: the step ``h`` used per element (the largest of the table).
    """

    grad: Dict[str, np.ndarray]
    error: Dict[str, np.ndarray]
    magnitude: Dict[str, np.ndarray]
    evaluations: int
    step: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


# -- helpers ------------------------------------------------------------------------------------------------

def _as64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind == "c":
        return np.array(a, dtype=np.complex128)
    return np.array(a, dtype=np.float64)


def _outputs(f, inputs) -> Dict[str, np.ndarray]:
    out = f(inputs)
    if not isinstance(out, Mapping):
        raise TypeError(f"f: expected it to return a dict of output arrays, got {type(out).__name__}")
    res = {}
    for k, v in out.items():
        if v is None:
            continue
        a = np.asarray(v)
        res[k] = a.astype(np.complex128) if a.dtype.kind == "c" else a.astype(np.float64)
    return res


def _check_cotangents(outputs: Mapping[str, np.ndarray], cotangents: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    w = {}
    for k, v in cotangents.items():
        if v is None:
            continue
        if k not in outputs:
            raise ValueError(f"cotangents: expected names among the outputs {sorted(outputs)}, got {k!r}")
        a = _as64(v)
        if a.shape != outputs[k].shape:
            raise ValueError(f"cotangents[{k!r}]: expected shape {outputs[k].shape} (the output's), got {a.shape}")
        w[k] = a
    return w


def _dot(w: np.ndarray, y: np.ndarray) -> float:
    """``Re sum conj(w) y`` in float64 (NumPy's pairwise summation inside, one product per element)."""
    if w.dtype.kind == "c" or y.dtype.kind == "c":
        return float(np.sum(w.real * y.real) + np.sum(w.imag * y.imag))
    return float(np.sum(w * y))


def real_loss(outputs: Mapping[str, Any], cotangents: Mapping[str, Any]) -> float:
    """``L = Re sum_k conj(w_k) y_k`` over the outputs that have a cotangent, summed with :func:`math.fsum`.

    Every product ``Re(conj(w) y) = w.re y.re + w.im y.im`` is formed in float64 and all of them are summed
    by ``fsum`` (correctly rounded sum of the rounded products).
    """
    terms = []
    for k, w in cotangents.items():
        if w is None:
            continue
        if k not in outputs or outputs[k] is None:
            raise ValueError(f"cotangents: {k!r} names no output (outputs: {sorted(outputs)})")
        y = np.asarray(outputs[k])
        w = np.asarray(w)
        if w.shape != y.shape:
            raise ValueError(f"cotangents[{k!r}]: expected shape {y.shape} (the output's), got {w.shape}")
        if w.dtype.kind == "c" or y.dtype.kind == "c":
            wc, yc = w.astype(np.complex128), y.astype(np.complex128)
            terms.extend((wc.real * yc.real).ravel().tolist())
            terms.extend((wc.imag * yc.imag).ravel().tolist())
        else:
            terms.extend((w.astype(np.float64) * y.astype(np.float64)).ravel().tolist())
    return math.fsum(terms)


def _forward_error(forward_error, y0: Mapping[str, np.ndarray], w: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``|w_k| E_k`` per output at the base point (module doc): summed over the outputs a step changes."""
    if callable(forward_error):
        forward_error = forward_error(y0)
    out = {}
    for k, wk in w.items():
        y = y0[k]
        if forward_error is None:
            rms = float(np.sqrt(np.mean(np.abs(y) ** 2))) if y.size else 0.0
            E = DEFAULT_FORWARD_ULPS * _EPS * (np.abs(y) + rms)
        elif isinstance(forward_error, Mapping):
            E = np.asarray(forward_error.get(k, 0.0), dtype=np.float64)
        else:
            E = float(forward_error)
        out[k] = np.abs(wk) * np.broadcast_to(np.asarray(E, dtype=np.float64), wk.shape)
    return out


def _pow2(x: np.ndarray) -> np.ndarray:
    """The power of two nearest to ``x > 0`` (elementwise)."""
    return np.exp2(np.round(np.log2(x)))


def _richardson(D: Sequence, levels: int):
    """``(value, truncation estimate)`` from ``D = [D(h), D(h/2), (D(h/4))]`` (arrays or floats)."""
    if levels == 2:
        D1 = (4.0 * D[1] - D[0]) / 3.0
        return D1, np.abs(D1 - D[1])
    D1a = (4.0 * D[1] - D[0]) / 3.0
    D1b = (4.0 * D[2] - D[1]) / 3.0
    D2 = (16.0 * D1b - D1a) / 15.0
    return D2, np.abs(D2 - D1b)


def _check_levels(levels) -> int:
    if levels not in (2, 3):
        raise ValueError(f"levels: expected 2 or 3 (steps h, h/2[, h/4]), got {levels!r}")
    return int(levels)


def _typical(x: np.ndarray) -> float:
    if x.size == 0:
        return 1.0
    r = float(np.sqrt(np.mean(np.abs(x) ** 2)))
    return r if r > 0 and math.isfinite(r) else 1.0


# -- the VJP by differences ------------------------------------------------------------------------------

def fd_vjp(f: Callable[[Dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any],
           cotangents: Mapping[str, Any], wrt: Sequence[str], *, rel_step: Optional[float] = None,
           forward_error: Union[None, float, Mapping[str, Any], Callable] = None, levels: int = 3,
           typical: Optional[Mapping[str, float]] = None) -> FDGrad:
    """``J^T w`` of ``f`` at ``inputs`` for each input in ``wrt``, by central differences and Richardson (module doc).

    Parameters
    ----------
    f : ``f(inputs: dict) -> {output: array}`` -- an independent float64 forward (never the backward it checks).
    inputs : the point; the ``wrt`` inputs are used as float64 / complex128 copies, the rest as given.
    cotangents : ``{output: w}`` (outputs without a cotangent do not enter the loss); shapes as the outputs'.
    wrt : the names of the inputs to differentiate (each must be given, not None).
    rel_step : the step relative to ``max(|x_j|, typical)`` (default :data:`DEFAULT_REL_STEP`).
    forward_error : the forward's absolute error bound per output (a float, ``{output: array}``, or a callable
        ``outputs -> that``); default: the :data:`DEFAULT_FORWARD_ULPS` assumption.
    levels : 3 (steps ``h, h/2, h/4``; six forward calls per real coordinate) or 2 (four).
    typical : ``{input: scale}`` overriding the input's rms as the step's floor.

    Returns
    -------
    :class:`FDGrad` with ``grad``, ``error`` (elementwise bound), ``magnitude`` (``|J|^T |w|``).
    """
    levels = _check_levels(levels)
    rel = DEFAULT_REL_STEP[levels] if rel_step is None else float(rel_step)
    if not (rel > 0 and math.isfinite(rel)):
        raise ValueError(f"rel_step: expected a positive finite float, got {rel_step!r}")
    wrt = list(wrt)
    point: Dict[str, Any] = dict(inputs)
    for name in wrt:
        if name not in point or point[name] is None:
            raise ValueError(f"wrt: {name!r} is not among the given inputs {sorted(k for k, v in inputs.items() if v is not None)}")
        point[name] = _as64(point[name])
    y0 = _outputs(f, point)
    w = _check_cotangents(y0, cotangents)
    wE = _forward_error(forward_error, y0, w)
    m_out = sum(int(v.size) * (2 if v.dtype.kind == "c" else 1) for v in w.values())
    evaluations = 1
    fracs = (1.0, 0.5, 0.25)[:levels]

    grad, error, magnitude, steps = {}, {}, {}, {}
    for name in wrt:
        x = point[name]
        is_c = x.dtype.kind == "c"
        flat = x.reshape(-1)  # a view: perturbed in place and restored
        n = flat.size
        scale = float((typical or {}).get(name, _typical(x)))
        parts = ("real", "imag") if is_c else ("real",)
        g = {p: np.zeros(n) for p in parts}
        e = {p: np.zeros(n) for p in parts}
        m = {p: np.zeros(n) for p in parts}
        hs = np.zeros(n)
        for j in range(n):
            x0 = flat[j]
            for part in parts:
                base = float(x0.real if part == "real" else x0.imag) if is_c else float(x0)
                h = float(_pow2(np.array(rel * max(abs(base), scale))))
                hs[j] = h
                Dl, cols, Ew, magk = [], [], 0.0, 0.0
                for fr in fracs:
                    s = h * fr
                    plus, minus = base + s, base - s
                    ys = []
                    for v in (plus, minus):
                        if is_c:
                            flat[j] = complex(v, x0.imag) if part == "real" else complex(x0.real, v)
                        else:
                            flat[j] = v
                        ys.append(_outputs(f, point))
                    flat[j] = x0
                    denom = plus - minus
                    col = {k: (ys[0][k] - ys[1][k]) / denom for k in w}
                    # E_w over the outputs this step changes (unchanged ones are computed bit for bit alike)
                    Ew = max(Ew, sum(float(np.sum(wE[k][ys[0][k] != ys[1][k]])) for k in w))
                    cols.append(col)
                    Dl.append(sum(_dot(w[k], col[k]) for k in w))
                    magk = max(magk, sum(float(np.sum(np.abs(w[k]) * np.abs(col[k]))) for k in w))
                # one large step: outputs that stay bit for bit the same even there are structurally independent
                # of x_j (a weak dependence that rounds away at the small steps is caught here and keeps its share)
                big = base + max(1.0, 2.0 * abs(base), 2.0 * scale)
                if is_c:
                    flat[j] = complex(big, x0.imag) if part == "real" else complex(x0.real, big)
                else:
                    flat[j] = big
                try:
                    with np.errstate(all="ignore"):
                        yb = _outputs(f, point)
                    Ew = max(Ew, sum(float(np.sum(wE[k][~(yb[k] == y0[k])])) for k in w))
                except Exception:  # outside the forward's domain: every output counts
                    Ew = max(Ew, sum(float(np.sum(wE[k])) for k in w))
                flat[j] = x0
                evaluations += 2 * levels + 1
                val, trunc = _richardson(Dl, levels)
                # the extrapolated Jacobian column, for |J|^T |w|
                mag = 0.0
                for k in w:
                    ck, _ = _richardson([c[k] for c in cols], levels)
                    mag += float(np.sum(np.abs(w[k]) * np.abs(ck)))
                g[part][j] = val
                table = TABLE_NORM[levels] * (_gamma(m_out) * magk + 4 * _U * max(abs(d) for d in Dl))
                e[part][j] = float(trunc) + ROUNDING_FACTOR[levels] * Ew / h + table
                m[part][j] = mag
        if is_c:
            grad[name] = (g["real"] + 1j * g["imag"]).reshape(x.shape)
            error[name] = np.hypot(e["real"], e["imag"]).reshape(x.shape)
            magnitude[name] = np.hypot(m["real"], m["imag"]).reshape(x.shape)
        else:
            grad[name] = g["real"].reshape(x.shape)
            error[name] = e["real"].reshape(x.shape)
            magnitude[name] = m["real"].reshape(x.shape)
        steps[name] = hs.reshape(x.shape)
    return FDGrad(grad, error, magnitude, evaluations, steps)


def fd_jvp(f: Callable[[Dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any],
           tangents: Mapping[str, Any], cotangents: Mapping[str, Any], *, rel_step: Optional[float] = None,
           forward_error: Union[None, float, Mapping[str, Any], Callable] = None,
           levels: int = 3) -> Tuple[float, float]:
    """``(<J v, w>, error bound)``: the directional derivative of ``L = Re sum conj(w) y`` along ``v = tangents``.

    One real parameter ``t``: ``x(t) = x + t v`` for every input in ``tangents`` (a complex ``v`` moves both
    parts).  The step is ``h = 2^round(log2(rel_step * max(1, rms(x)) / rms(v)))`` over the tangent inputs, and
    the value and error are those of the module doc (the Richardson table on ``t``).  Compare with
    ``sum Re(conj(v) * (J^T w))`` of a backward (the adjoint identity ``<J v, w> = <v, J^T w>``; in the complex
    convention of the module doc the pairing is ``Re sum conj(v) g``).
    """
    levels = _check_levels(levels)
    rel = DEFAULT_REL_STEP[levels] if rel_step is None else float(rel_step)
    point: Dict[str, Any] = dict(inputs)
    v = {}
    for k, t in tangents.items():
        if t is None:
            continue
        if k not in point or point[k] is None:
            raise ValueError(f"tangents: {k!r} is not among the given inputs")
        point[k] = _as64(point[k])
        tv = _as64(t)
        if tv.shape != point[k].shape:
            raise ValueError(f"tangents[{k!r}]: expected shape {point[k].shape} (the input's), got {tv.shape}")
        if tv.dtype.kind == "c" and point[k].dtype.kind != "c":
            raise TypeError(f"tangents[{k!r}]: expected a real tangent for a real input, got complex")
        v[k] = tv
    y0 = _outputs(f, point)
    w = _check_cotangents(y0, cotangents)
    if not v:
        return 0.0, 0.0
    sx = math.sqrt(sum(float(np.sum(np.abs(point[k]) ** 2)) for k in v) / max(1, sum(point[k].size for k in v)))
    sv = math.sqrt(sum(float(np.sum(np.abs(t) ** 2)) for t in v.values()) / max(1, sum(t.size for t in v.values())))
    if sv == 0.0:
        return 0.0, 0.0
    h = float(_pow2(np.array(rel * max(1.0, sx) / sv)))
    Ew = sum(float(np.sum(e)) for e in _forward_error(forward_error, y0, w).values())
    base = {k: point[k].copy() for k in v}
    Dl, magk = [], 0.0
    m_out = sum(int(a.size) * (2 if a.dtype.kind == "c" else 1) for a in w.values())
    for fr in (1.0, 0.5, 0.25)[:levels]:
        s = h * fr
        ys = []
        for sign in (1.0, -1.0):
            for k in v:
                point[k] = base[k] + (sign * s) * v[k]
            ys.append(_outputs(f, point))
        # the outputs' differences first, then the loss (no cancellation inside the loss sums)
        Dl.append(sum(_dot(w[k], (ys[0][k] - ys[1][k]) / (2.0 * s)) for k in w))
        magk = max(magk, sum(float(np.sum(np.abs(w[k]) * np.abs(ys[0][k] - ys[1][k]))) / (2.0 * s) for k in w))
    for k in v:
        point[k] = base[k]
    val, trunc = _richardson(Dl, levels)
    trunc = float(trunc) + TABLE_NORM[levels] * (_gamma(m_out) * magk + 4 * _U * max(abs(d) for d in Dl))
    # E_w here also covers the perturbed inputs' rounding x + t v: |v| * eps * |x| per input moves the loss by at
    # most |J^T w| eps |x|, which is below the forward's own error for a forward of depth >= 1 (module doc).
    return float(val), float(trunc) + ROUNDING_FACTOR[levels] * Ew / h


# -- mpmath differences ------------------------------------------------------------------------------------

def _to_mp(a, mp):
    arr = np.asarray(a)
    if arr.dtype == object:
        return arr.copy()
    out = np.empty(arr.shape, dtype=object)
    flat, src = out.reshape(-1), arr.reshape(-1)
    for i in range(src.size):
        v = src[i]
        flat[i] = mp.mpc(complex(v).real, complex(v).imag) if arr.dtype.kind == "c" else mp.mpf(float(v))
    return out


def _mp_loss(outs: Mapping[str, Any], w: Mapping[str, np.ndarray], mp):
    total = mp.mpf(0)
    for k, wk in w.items():
        yk = np.asarray(outs[k], dtype=object).reshape(-1)
        wf = wk.reshape(-1)
        if yk.size != wf.size:
            raise ValueError(f"cotangents[{k!r}]: expected {yk.size} elements (the output's), got {wf.size}")
        for i in range(wf.size):
            yi = mp.mpmathify(yk[i])
            wi = complex(wf[i])
            total += mp.mpf(wi.real) * mp.re(yi) + mp.mpf(wi.imag) * mp.im(yi)
    return total


def mp_vjp(f_mp: Callable[[Dict[str, Any]], Mapping[str, Any]], inputs: Mapping[str, Any],
           cotangents: Mapping[str, Any], wrt: Sequence[str], dps: int = 40) -> Dict[str, np.ndarray]:
    """``J^T w`` by central differences in mpmath at ``dps`` digits (module doc), rounded to float64/complex128.

    ``f_mp`` takes ``{name: numpy object array of mpf/mpc}`` (the ``wrt`` inputs and every other float input
    converted exactly from float64; non-float inputs passed as given) and returns ``{output: object array}``.
    Step ``h = 10^(-dps/3) max(|x_j|, 1)``, then one Richardson step with ``h/2``: the result is exact to
    float64 for ``dps >= 30`` on smooth forwards.
    """
    import mpmath

    dps = int(dps)
    if dps < 20:
        raise ValueError(f"dps: expected at least 20 digits (the step is 10^(-dps/3)), got {dps}")
    out: Dict[str, np.ndarray] = {}
    with mpmath.workdps(dps):
        mp = mpmath.mp
        point: Dict[str, Any] = {}
        cplx = {}
        for k, v in inputs.items():
            if v is None:
                point[k] = None
                continue
            arr = np.asarray(v)
            if arr.dtype.kind in "fc" or arr.dtype == object:
                point[k] = _to_mp(arr, mp)
                cplx[k] = arr.dtype.kind == "c" or (arr.dtype == object and arr.size > 0 and
                                                     any(isinstance(z, mpmath.mpc) for z in arr.reshape(-1)))
            else:
                point[k] = v
        w = {k: _as64(v) for k, v in cotangents.items() if v is not None}
        hexp = mp.mpf(10) ** (-(dps // 3))
        for name in wrt:
            if point.get(name) is None:
                raise ValueError(f"wrt: {name!r} is not among the given inputs")
            x = point[name]
            flat = x.reshape(-1)
            res = np.zeros(flat.size, dtype=np.complex128 if cplx[name] else np.float64)
            for j in range(flat.size):
                x0 = flat[j]
                comps = []
                for part in (("real", "imag") if cplx[name] else ("real",)):
                    base = mp.re(x0) if part == "real" else mp.im(x0)
                    h = hexp * max(abs(base), mp.mpf(1))
                    Ds = []
                    for s in (h, h / 2):
                        ls = []
                        for sign in (1, -1):
                            d = sign * s
                            if cplx[name]:
                                flat[j] = mp.mpc(mp.re(x0) + d, mp.im(x0)) if part == "real" else \
                                    mp.mpc(mp.re(x0), mp.im(x0) + d)
                            else:
                                flat[j] = x0 + d
                            ls.append(_mp_loss(f_mp(point), w, mp))
                        flat[j] = x0
                        Ds.append((ls[0] - ls[1]) / (2 * s))
                    comps.append((4 * Ds[1] - Ds[0]) / 3)
                res[j] = complex(float(comps[0]), float(comps[1])) if cplx[name] else float(comps[0])
            out[name] = res.reshape(np.shape(np.asarray(inputs[name])))
    return out
