"""A small einops-style ``rearrange`` for NumPy arrays (permute, split and merge axes).

``rearrange(x, "b l h m -> b h l m")`` permutes; ``"b (l two) -> b l two"`` splits
(the sizes of all but one member of a group must be known: pass them as
keywords, ``two=2``); ``"b l two -> b (l two)"`` merges.  ``inverse(pattern)``
swaps the two sides.  Every layout adapter is written with these patterns, so
an adapter is a declaration, not code.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Tuple, Union

import numpy as np

__all__ = ["rearrange", "inverse", "parse_side"]

Item = Union[str, Tuple[str, ...]]
_TOKEN = re.compile(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*|\d+|\S")


def parse_side(side: str) -> List[Item]:
    items: List[Item] = []
    group: List[str] | None = None
    for tok in _TOKEN.findall(side):
        if tok == "(":
            if group is not None:
                raise ValueError(f"pattern {side!r}: nested parentheses are not supported")
            group = []
        elif tok == ")":
            if group is None:
                raise ValueError(f"pattern {side!r}: unbalanced ')'")
            items.append(tuple(group))
            group = None
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            (group if group is not None else items).append(tok)
        else:
            raise ValueError(f"pattern {side!r}: unexpected token {tok!r}")
    if group is not None:
        raise ValueError(f"pattern {side!r}: unbalanced '('")
    return items


def _flat(items: List[Item]) -> List[str]:
    out: List[str] = []
    for it in items:
        out.extend(it if isinstance(it, tuple) else [it])
    return out


def inverse(pattern: str) -> str:
    lhs, rhs = pattern.split("->")
    return f"{rhs.strip()} -> {lhs.strip()}"


def rearrange(x, pattern: str, **sizes: int) -> np.ndarray:
    """Rearrange a NumPy array by an einops-style pattern (see the module docstring)."""
    x = np.asarray(x)
    if "->" not in pattern:
        raise ValueError(f"pattern {pattern!r}: expected 'lhs -> rhs'")
    lhs_s, rhs_s = pattern.split("->")
    lhs, rhs = parse_side(lhs_s), parse_side(rhs_s)
    if len(lhs) != x.ndim:
        raise ValueError(f"pattern {pattern!r}: left side has {len(lhs)} axes, the array has shape {x.shape}")
    known: Dict[str, int] = dict(sizes)
    names: List[str] = []
    elem: List[int] = []
    for item, s in zip(lhs, x.shape):
        if isinstance(item, tuple):
            unknown = [n for n in item if n not in known]
            prod = math.prod(known[n] for n in item if n in known)
            if len(unknown) > 1:
                raise ValueError(f"pattern {pattern!r}: cannot split axis of size {s} into {item} (sizes of {unknown} unknown)")
            if unknown:
                if prod == 0 or s % prod:
                    raise ValueError(f"pattern {pattern!r}: axis of size {s} is not divisible into {item} with {known}")
                known[unknown[0]] = s // prod
            elif prod != s:
                raise ValueError(f"pattern {pattern!r}: axis of size {s} does not match {item} = {prod}")
            for n in item:
                names.append(n)
                elem.append(known[n])
        else:
            if item in known and known[item] != s:
                raise ValueError(f"pattern {pattern!r}: axis {item} has size {s}, expected {known[item]}")
            known[item] = s
            names.append(item)
            elem.append(s)
    if len(set(names)) != len(names):
        raise ValueError(f"pattern {pattern!r}: an axis name repeats")
    rnames = _flat(rhs)
    if sorted(rnames) != sorted(names):
        raise ValueError(f"pattern {pattern!r}: both sides must name the same axes ({names} vs {rnames})")
    y = x.reshape(elem).transpose([names.index(n) for n in rnames])
    out_shape = [math.prod(known[n] for n in it) if isinstance(it, tuple) else known[it] for it in rhs]
    return y.reshape(out_shape)


def interleave_complex(z: np.ndarray) -> np.ndarray:
    """Complex ``(..., L)`` to real ``(..., 2L)`` with ``re, im`` interleaved along the last axis."""
    z = np.asarray(z)
    real_dt = np.finfo(z.dtype).dtype
    return np.stack([z.real, z.imag], axis=-1).reshape(z.shape[:-1] + (2 * z.shape[-1],)).astype(real_dt)


def deinterleave_complex(r: np.ndarray) -> np.ndarray:
    """Real ``(..., 2L)`` with ``re, im`` interleaved to complex ``(..., L)``."""
    r = np.asarray(r)
    if r.shape[-1] % 2:
        raise ValueError(f"interleaved complex: last axis must be even, got shape {r.shape}")
    pair = r.reshape(r.shape[:-1] + (r.shape[-1] // 2, 2))
    return pair[..., 0] + 1j * pair[..., 1]
