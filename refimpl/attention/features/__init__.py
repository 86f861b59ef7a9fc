"""refimpl.attention.features: feature maps ``phi`` for linear attention (see README.md in this folder).

One entry point, :func:`feature_map` (``kind=`` the map, ``backend=`` the implementation), the named maps of
:mod:`refimpl.attention.features.reference`, and Performer's random projections (:func:`random_projection`).
"""
from __future__ import annotations

from typing import Optional

from refimpl._dispatch import BACKENDS, register
from refimpl._validate import check_bool, check_choice
from refimpl.attention.features.backward import OFFSET_GRADS
from refimpl.attention.features.reference import (FEATURE_KINDS, STABILIZERS, dpfp, elu_plus_one, hyperbolic_features,
                                                  identity, positive_features, random_features, random_projection,
                                                  sign_fixed_qr, trig_features)

__all__ = ["feature_map", "feature_map_vjp", "OFFSET_GRADS", "VJP_IMPLEMENTATIONS", "FEATURE_MAPS", "identity", "elu_plus_one", "dpfp", "trig_features", "positive_features",
           "hyperbolic_features", "random_features", "random_projection", "sign_fixed_qr", "FEATURE_KINDS",
           "STABILIZERS", "IMPLEMENTATIONS"]

#: every map :func:`feature_map` knows; the last three are Performer's random features (they need ``W``)
FEATURE_MAPS = ("identity", "elu_plus_one", "dpfp") + FEATURE_KINDS
_STABILIZED = ("positive", "hyperbolic")

_REF = "refimpl.attention.features.reference"
_NB = "refimpl.attention.features.numba"
# keyed by (kind, backend): a feature map has one formulation, the table names its implementations
IMPLEMENTATIONS = register("refimpl.attention.feature_map", {
    ("identity", "numpy"): f"{_REF}:identity",
    ("elu_plus_one", "numpy"): f"{_REF}:elu_plus_one",
    ("elu_plus_one", "numba"): f"{_NB}:elu_plus_one",
    ("dpfp", "numpy"): f"{_REF}:dpfp",
    ("dpfp", "numba"): f"{_NB}:dpfp",
    ("trig", "numpy"): f"{_REF}:trig_features",
    ("trig", "numba"): f"{_NB}:trig_features",
    ("positive", "numpy"): f"{_REF}:positive_features",
    ("positive", "numba"): f"{_NB}:positive_features",
    ("hyperbolic", "numpy"): f"{_REF}:hyperbolic_features",
    ("hyperbolic", "numba"): f"{_NB}:hyperbolic_features",
})


def _implementation(kind, backend):
    if not isinstance(kind, str):
        raise TypeError(f"kind: expected one of {', '.join(map(repr, FEATURE_MAPS))}, got "
                        f"{type(kind).__name__} {kind!r}")
    check_choice(kind, "kind", FEATURE_MAPS)
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend).__name__} {backend!r}")
    check_choice(backend, "backend", BACKENDS)
    have = IMPLEMENTATIONS.backends_for(kind)
    if backend not in have:
        raise ValueError(f"backend: the {kind!r} feature map has backends {', '.join(map(repr, have))}, "
                         f"got {backend!r}")
    return IMPLEMENTATIONS.get(kind, backend)


def feature_map(x, kind: str, *, W=None, nu: Optional[int] = None, stabilizer: str = "none",
                return_offset: bool = False, backend: str = "numpy"):
    r"""``phi(x)`` along the last axis: ``x (... d) -> (... n)``.

    kind : ``"identity"`` (``n = d``), ``"elu_plus_one"`` (``n = d``), ``"dpfp"`` (``n = 2 d nu``; ``nu`` defaults
        to 1), or Performer's random features ``"trig"`` (``n = 2m``), ``"positive"`` (``n = m``),
        ``"hyperbolic"`` (``n = 2m``) for a projection ``W (m d)`` (required for these, refused for the others).
    stabilizer, return_offset : ``"positive"``/``"hyperbolic"`` with ``backend="numpy"`` only; the offset ``c``
        ``(...)`` is subtracted in the exponent (``phi exp(c)`` are the unstabilized features) and returned
        when ``return_offset=True``, as ``(phi, c)``.
    backend : ``"numpy"`` (every map) or ``"numba"`` (every map but ``identity``).
    """
    fn = _implementation(kind, backend)
    return_offset = check_bool(return_offset, "return_offset")
    if kind in FEATURE_KINDS:
        if W is None:
            raise ValueError(f"W: the {kind!r} random features need a projection W (m, d) "
                             f"(see random_projection), got None")
    elif W is not None:
        raise ValueError(f"W: the {kind!r} map takes no projection, got {type(W).__name__}")
    if nu is not None and kind != "dpfp":
        raise ValueError(f"nu: only the 'dpfp' map has a degree nu, got nu={nu!r} for kind={kind!r}")
    if stabilizer != "none" or return_offset:
        if kind not in _STABILIZED:
            name = "stabilizer" if stabilizer != "none" else "return_offset"
            raise ValueError(f"{name}: only the 'positive' and 'hyperbolic' random features have a stabilizer "
                             f"offset, got kind={kind!r}")
        if backend != "numpy":
            name = "stabilizer" if stabilizer != "none" else "return_offset"
            raise ValueError(f"{name}: the {backend!r} backend computes unstabilized features; stabilizers and "
                             f"offsets are in the 'numpy' backend")
    if kind == "dpfp":
        return fn(x, 1 if nu is None else nu)
    if kind in _STABILIZED and backend == "numpy":
        return fn(x, W, stabilizer=stabilizer, return_offset=return_offset)
    if kind in FEATURE_KINDS:
        return fn(x, W)
    return fn(x)


_BWD = "refimpl.attention.features.backward"
VJP_IMPLEMENTATIONS = register("refimpl.attention.feature_map_vjp", {
    ("identity", "numpy"): f"{_BWD}:identity_vjp",
    ("elu_plus_one", "numpy"): f"{_BWD}:elu_plus_one_vjp",
    ("dpfp", "numpy"): f"{_BWD}:dpfp_vjp",
    ("trig", "numpy"): f"{_BWD}:trig_features_vjp",
    ("positive", "numpy"): f"{_BWD}:positive_features_vjp",
    ("hyperbolic", "numpy"): f"{_BWD}:hyperbolic_features_vjp",
})


def feature_map_vjp(x, kind: str, *, dphi, W=None, nu: Optional[int] = None, stabilizer: str = "none",
                    offset_grad: str = "through", backend: str = "numpy"):
    r"""The vector-Jacobian product of :func:`feature_map` (README "Backward"; :mod:`.backward`).

    ``x (... d)``, ``kind`` and the forward's keywords; ``dphi (... n)`` the cotangent of ``phi`` (keyword-only,
    required).  ``offset_grad`` says how the stabilizer's offset ``c`` (a max of exponents) is differentiated:
    ``"through"`` (default: the derivative of the forward as it is defined, what finite differences see) or
    ``"stop"`` (``c`` a constant: FAVOR+'s and performer-pytorch's ``.detach()``).  ``backend``: ``"numpy"``.

    Returns ``{"x": dx}``, plus ``"W": dW (m d)`` for the random features (``trig``, ``positive``, ``hyperbolic``);
    each in its input's dtype.  (The offset itself, ``return_offset=True`` in the forward, carries no cotangent.)
    """
    if not isinstance(kind, str):
        raise TypeError(f"kind: expected one of {', '.join(map(repr, FEATURE_MAPS))}, got "
                        f"{type(kind).__name__} {kind!r}")
    check_choice(kind, "kind", FEATURE_MAPS)
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a string, got {type(backend).__name__} {backend!r}")
    check_choice(backend, "backend", BACKENDS)
    have = VJP_IMPLEMENTATIONS.backends_for(kind)
    if backend not in have:
        raise ValueError(f"backend: the {kind!r} feature map's VJP has backends {', '.join(map(repr, have))}, "
                         f"got {backend!r}")
    fn = VJP_IMPLEMENTATIONS.get(kind, backend)
    if not isinstance(offset_grad, str):
        raise TypeError(f"offset_grad: expected one of {', '.join(map(repr, OFFSET_GRADS))}, got "
                        f"{type(offset_grad).__name__} {offset_grad!r}")
    check_choice(offset_grad, "offset_grad", OFFSET_GRADS)
    if kind in FEATURE_KINDS:
        if W is None:
            raise ValueError(f"W: the {kind!r} random features need a projection W (m, d) "
                             f"(see random_projection), got None")
    elif W is not None:
        raise ValueError(f"W: the {kind!r} map takes no projection, got {type(W).__name__}")
    if nu is not None and kind != "dpfp":
        raise ValueError(f"nu: only the 'dpfp' map has a degree nu, got nu={nu!r} for kind={kind!r}")
    if stabilizer != "none" and kind not in _STABILIZED:
        raise ValueError(f"stabilizer: only the 'positive' and 'hyperbolic' random features have a stabilizer "
                         f"offset, got kind={kind!r}")
    if kind == "dpfp":
        return fn(x, 1 if nu is None else nu, dphi=dphi)
    if kind in _STABILIZED:
        return fn(x, W, dphi=dphi, stabilizer=stabilizer, offset_grad=offset_grad)
    if kind in FEATURE_KINDS:
        return fn(x, W, dphi=dphi)
    return fn(x, dphi=dphi)
