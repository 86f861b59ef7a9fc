r"""Op spec ``attention.sparse``: softmax attention restricted to a fixed sparse pattern (issue 13, methods 1-3),
its conventions, the window spellings of other libraries as adapters, and refimpl's adapter.

Canonical (sequence-first, refimpl's layout; self-attention, ``s = l``)::

    fn(q, k, v) -> o      q, k (b l h n), v (b l h p), o (b l h p)

``o_i = sum_{j in A(i)} softmax_j(scale q_i . k_j) v_j`` over the allowed keys ``A(i)`` of the pattern; a query row
with no kept key is zero.  The pattern is named by conventions (the candidate claims them; the canonical
signature carries no pattern argument):

* ``kind``: ``sliding_window`` | ``longformer`` | ``strided`` | ``fixed`` | ``bigbird``;
* ``window_left``, ``window_right``: the window ``(left, right)`` in refimpl's (FlashAttention's) meaning, inclusive
  key counts: ``i - left <= j <= i + right`` (scaled by the dilation); ``causal`` forces ``right = 0`` (the claimed
  ``window_right`` is then not used: every adapter passes 0);
* ``dilation``: an int, or a tuple with one entry per head (then ``h = len(dilation)``): keys ``j = i + t dil``;
* ``global_tokens``: Longformer's symmetric global positions (positions ``>= l`` are dropped for a case of length
  ``l``, so that one claim serves every length);
* ``causal``: ``j <= i`` everywhere (the Sparse Transformer patterns' default); BigBird has no causal form;
* ``stride`` (``l_s``), ``summary`` (``c``), ``combine`` (``union`` = the merged head, one pattern head;
  ``heads`` = head 0 keeps ``A1``, head 1 ``A2``, ``h = 2``) for ``strided`` / ``fixed``;
* ``block``, ``window_blocks``, ``global_blocks``, ``random_blocks``, ``seed``, ``bigbird_heads`` (``shared``: one
  random draw for every head; ``per_head``: ``heads = h``, one draw per head) for ``bigbird``;
* ``scale`` (``None`` = ``n^{-1/2}``);
* ``window_spelling``: how the candidate *receives* the window (a layout convention: never what is computed), one
  adapter each -- see below.

Oracle: the pattern's key sets built from the papers' definitions as Python sets
(:mod:`oracles.sparse_attention`), then mpmath (:func:`oracles.sparse_attention.sparse_attention_mpmath`, small
cases) or float64 ``math.fsum`` (:func:`oracles.sparse_attention.sparse_attention_fsum`, larger ones); bound
:func:`oracles.sparse_attention.sparse_attention_bound` (:func:`oracles.attention.softmax_attention_bound` on the
keep mask of the sets).  Reference (the low-precision baseline): ``refimpl.attention.sparse_attention``.

Window spellings (``window_spelling``; :data:`WINDOW_SPELLINGS` has each one's conversion from ``(left, right)``
and the keys its own documented meaning selects)
----------------------------------------------------------------------------------------------------------------
* ``left_right`` -- FlashAttention ``window_size=(left, right)``, inclusive: ``i - left <= j <= i + right``;
* ``fla`` -- an FLA-style ``W`` meaning keys ``[i - W + 1, i]`` (causal only): ``W = left + 1``;
* ``xformers`` -- an odd ``W`` counting the token itself, ``|i - j| <= W // 2``: ``W = 2 left + 1`` (``left =
  right``; causal: keys ``[i - W // 2, i]``);
* ``longformer`` -- Longformer's ``w`` per side, ``|i - j| <= w``: ``w = left = right`` (causal: ``[i - w, i]``);
* ``hf_longformer`` -- Hugging Face's Longformer ``attention_window``, an even ``w`` meaning ``w // 2`` per side:
  ``w = 2 left`` (``left = right``; the encoder: not causal).

A spelling that cannot express the claimed window (an FLA ``W`` without causal, xformers with ``left != right``)
is refused by its adapter with a ``ValueError`` naming the convention.

Diagnosis: the conventions with choices the diagnosis tries (it recomputes the oracle under each other value):
``kind``, ``causal``, ``combine``, ``bigbird_heads``; and, as integer conventions one off, ``window_left``,
``window_right``, ``stride``, ``summary``, ``block``, ``window_blocks``, ``global_blocks``, ``random_blocks``,
``seed``.  ``window_spelling`` is implied by every spelling adapter (a candidate written in one spelling).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from oracles import sparse_attention as SA
from oracles.verify.adapters import Adapter, Conv, In, Out, register_adapter
from oracles.verify.ops_attention import argument_paths_probe
from oracles.verify.probes import causality_probe
from oracles.verify.registry import (Arg, Case, Convention, OpSpec, case_builder, draw_sizes, op_domain, op_functions,
                                     register_op, seeded_strategy)

OP = "attention.sparse"
MPMATH_WORK = 6000  # b h l l (n + p) up to which the mpmath oracle is used (as attention.softmax)
KINDS = SA.KINDS
SPELLINGS = ("left_right", "fla", "xformers", "longformer", "hf_longformer")


# ----------------------------------------------------------------------------------------------------------
# window spellings
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class WindowSpelling:
    """One library's window argument: ``value(left, right, causal)`` spells refimpl's window (``ValueError`` when
    it cannot), ``keys(value, i, l, causal)`` is the set of keys query ``i`` keeps under that library's own meaning
    of the value (written from its documentation, not from the conversion)."""

    name: str
    doc: str
    value: Callable[[int, int, bool], Any]
    keys: Callable[[Any, int, int, bool], set]


def _need(cond: bool, msg: str):
    if not cond:
        raise ValueError(f"window_spelling: {msg}")


def _lr_value(left, right, causal):
    return (int(left), int(right))


def _lr_keys(value, i, l, causal):
    left, right = value
    return {j for j in range(l) if i - left <= j <= i + right and (j <= i or not causal)}


def _fla_value(left, right, causal):
    _need(causal and right == 0, f"the FLA spelling W = keys [i - W + 1, i] is causal (right = 0), got "
          f"causal={causal}, (left, right) = ({left}, {right})")
    return int(left) + 1


def _fla_keys(W, i, l, causal):
    return {j for j in range(l) if i - W + 1 <= j <= i}


def _sym_value(left, right, causal, what):
    _need(left == right or (causal and right == 0), f"the {what} spelling is symmetric (left = right, or causal "
          f"with right = 0), got (left, right) = ({left}, {right})")
    return int(left)


def _xf_value(left, right, causal):
    return 2 * _sym_value(left, right, causal, "xformers") + 1


def _xf_keys(W, i, l, causal):
    assert W % 2 == 1, "xformers' window counts the token itself: an odd W"
    return {j for j in range(l) if abs(i - j) <= W // 2 and (j <= i or not causal)}


def _lf_value(left, right, causal):
    return _sym_value(left, right, causal, "Longformer")


def _lf_keys(w, i, l, causal):
    return {j for j in range(l) if abs(i - j) <= w and (j <= i or not causal)}


def _hf_value(left, right, causal):
    _need(not causal, "Hugging Face's Longformer attention_window belongs to the encoder: no causal form")
    return 2 * _sym_value(left, right, causal, "Hugging Face Longformer")


def _hf_keys(w, i, l, causal):
    assert w % 2 == 0, "Hugging Face's attention_window is even"
    return {j for j in range(l) if abs(i - j) <= w // 2}


WINDOW_SPELLINGS: Dict[str, WindowSpelling] = {s.name: s for s in (
    WindowSpelling("left_right", "FlashAttention window_size=(left, right): i - left <= j <= i + right",
                   _lr_value, _lr_keys),
    WindowSpelling("fla", "an FLA-style W: keys [i - W + 1, i] (causal); W = left + 1", _fla_value, _fla_keys),
    WindowSpelling("xformers", "an odd xformers-style W counting the token itself: |i - j| <= W // 2; W = 2 left + 1",
                   _xf_value, _xf_keys),
    WindowSpelling("longformer", "Longformer's w per side: |i - j| <= w; w = left = right", _lf_value, _lf_keys),
    WindowSpelling("hf_longformer", "Hugging Face Longformer attention_window: an even w, w // 2 per side; "
                   "w = 2 left", _hf_value, _hf_keys),
)}


def claimed_window(conv: Mapping[str, Any]) -> Tuple[int, int]:
    """``(left, right)`` of the claim: ``(window_left, window_right)``, with ``right`` forced to 0 under causal."""
    return int(conv["window_left"]), (0 if conv["causal"] else int(conv["window_right"]))


def spelled_window(conv: Mapping[str, Any], spelling: str):
    """The claimed window (:func:`claimed_window`) in ``spelling``."""
    left, right = claimed_window(conv)
    return WINDOW_SPELLINGS[spelling].value(left, right, bool(conv["causal"]))


# ----------------------------------------------------------------------------------------------------------
# the pattern from the conventions
# ----------------------------------------------------------------------------------------------------------

def _dilation(conv):
    d = conv["dilation"]
    return tuple(int(x) for x in d) if isinstance(d, (tuple, list)) else int(d)


def pattern_heads(conv: Mapping[str, Any], h: int) -> int:
    """How many heads the claimed pattern has for a case with ``h`` heads (1: shared by every head)."""
    kind = conv["kind"]
    if kind in ("sliding_window", "longformer"):
        d = _dilation(conv)
        return len(d) if isinstance(d, tuple) else 1
    if kind in ("strided", "fixed"):
        return 2 if conv["combine"] == "heads" else 1
    return h if conv["bigbird_heads"] == "per_head" else 1


def pattern_params(conv: Mapping[str, Any], l: int, h: int) -> Dict[str, Any]:
    """The builder parameters of the claimed pattern for a case of length ``l`` with ``h`` heads."""
    kind = conv["kind"]
    causal = bool(conv["causal"])
    left, right = claimed_window(conv)
    if kind == "sliding_window":
        return dict(window=(left, right), dilation=_dilation(conv), causal=causal)
    if kind == "longformer":
        G = tuple(int(g) for g in conv["global_tokens"] if int(g) < l)
        return dict(window=(left, right), dilation=_dilation(conv), global_tokens=G, causal=causal)
    if kind == "strided":
        return dict(stride=int(conv["stride"]), causal=causal, combine=conv["combine"])
    if kind == "fixed":
        return dict(stride=int(conv["stride"]), summary=int(conv["summary"]), causal=causal, combine=conv["combine"])
    if causal:
        raise ValueError("causal: BigBird is the encoder pattern (no causal form); claim causal=False")
    return dict(block=int(conv["block"]), window_blocks=int(conv["window_blocks"]),
                global_blocks=int(conv["global_blocks"]), random_blocks=int(conv["random_blocks"]),
                seed=int(conv["seed"]), heads=pattern_heads(conv, h))


def pattern_key_sets(conv: Mapping[str, Any], l: int, h: int):
    """The oracle's key sets (:func:`oracles.sparse_attention.pattern_sets`) of the claimed pattern."""
    return SA.pattern_sets(conv["kind"], l, **pattern_params(conv, l, h))


def refimpl_pattern(conv: Mapping[str, Any], l: int, h: int):
    """refimpl's :class:`SparsePattern` of the claimed pattern (the reference and the refimpl adapter)."""
    return build_pattern(conv["kind"], l, pattern_params(conv, l, h))


def build_pattern(kind: str, l: int, params: Mapping[str, Any]):
    """refimpl's pattern builder of ``kind`` called with ``params`` (the builders' keyword names)."""
    from refimpl.attention import sparse as R

    p = dict(params)
    if kind == "sliding_window":
        return R.sliding_window_pattern(l, p.pop("window"), **p)
    if kind == "longformer":
        return R.longformer_pattern(l, p.pop("window"), **p)
    if kind == "strided":
        return R.strided_pattern(l, p.pop("stride"), **p)
    if kind == "fixed":
        return R.fixed_pattern(l, p.pop("stride"), **p)
    return R.bigbird_pattern(l, p.pop("block"), **p)


# ----------------------------------------------------------------------------------------------------------
# op functions
# ----------------------------------------------------------------------------------------------------------

def _parts(inp, conv):
    q, k, v = (np.asarray(inp[x], dtype=np.float64) for x in ("q", "k", "v"))
    b, l, h, n = q.shape
    sets = pattern_key_sets(conv, l, h)
    if len(sets) not in (1, h):
        raise ValueError(f"q: the claimed pattern has {len(sets)} heads; expected h = {len(sets)} (or 1), got h = {h}")
    return q, k, v, sets


def _exact(q, v) -> bool:
    b, l, h, n = q.shape
    return b * h * l * l * (n + v.shape[3]) <= MPMATH_WORK


def oracle(inp, conv):
    q, k, v, sets = _parts(inp, conv)
    f = SA.sparse_attention_mpmath if _exact(q, v) else SA.sparse_attention_fsum
    return {"o": f(q, k, v, sets, conv["scale"])}


def bounds(inp, out, conv, dtype):
    q, k, v, sets = _parts(inp, conv)
    return {"o": SA.sparse_attention_bound(q, k, v, sets, conv["scale"], dtype,
                                           oracle_dtype=None if _exact(q, v) else np.float64)}


def reference(inp, conv):
    """The low-precision baseline: refimpl's materialized sparse attention in the inputs' dtype."""
    from refimpl.attention.sparse import sparse_attention

    q, k, v = (np.asarray(inp[x]) for x in ("q", "k", "v"))
    b, l, h, n = q.shape
    return {"o": sparse_attention(q, k, v, refimpl_pattern(conv, l, h), scale=conv["scale"])}


def sample(rng, conv, *, l=None, b=None, h=None, n=None, p=None):
    """Standard normal ``q, k, v``; ``h`` is fixed by a claimed multi-head pattern (a dilation per head, the
    ``heads`` combination), else drawn in 1..2."""
    hp = pattern_heads(conv, 1)
    b, n, p = draw_sizes(rng, b=(b, 1, 3), n=(n, 1, 5), p=(p, 1, 4))
    if hp > 1:
        h = hp  # the claimed pattern fixes the number of heads
    elif h is None:
        h = int(rng.integers(1, 3))
    if l is None:  # an empty sequence now and then (one case in twenty)
        l = 0 if rng.random() < 0.05 else int(rng.choice([1, 2, 3, 5, 8, 11, 16, 19]))
    return {"q": rng.standard_normal((b, l, h, n)), "k": rng.standard_normal((b, l, h, n)),
            "v": rng.standard_normal((b, l, h, p))}


def strategy(conv):
    return seeded_strategy(sample, conv)


def _prepare(inputs, scale=1.0):
    return {k: v * (scale if k in ("q", "k") else 1.0) for k, v in inputs.items()}


def cases(conv) -> List[Case]:
    add = case_builder(OP, sample, 71, conv, prepare=_prepare)
    out = add.cases
    blk = int(conv["block"])
    add("golden-small", "golden", "b = 1, l = 7, n = 3, p = 2", 1, l=7, b=1, n=3, p=2)
    add("edge-L0", "edge", "L = 0: an empty output", 2, l=0)
    add("edge-L1", "edge", "L = 1: one key (a block larger than L; every token global when position 0 is)", 3, l=1)
    kind = conv["kind"]
    if kind in ("sliding_window", "longformer"):
        left, right = claimed_window(conv)
        reach = left if conv["causal"] else min(left, right)
        lw = min(reach, 30) + 1
        add("edge-window-covers-L", "edge", f"L = {lw}: the window reaches every key (window >= L - 1)", 4, l=lw)
    elif kind in ("strided", "fixed"):
        ls = int(conv["stride"])
        add("edge-L-le-stride", "edge", f"L = {min(ls, 30)} <= the stride: one stride block", 4, l=min(ls, 30))
    else:
        lb = max(1, min(blk - 1, 30))
        add("edge-L-lt-block", "edge", f"L = {lb} < the block {blk} (or 1): one short block", 4, l=lb)
    add("edge-block+1", "edge", f"L = 3 blocks of {blk} plus one: a short last block", 5, l=3 * blk + 1, b=1, n=2, p=2)
    add("edge-large-scores", "edge", "scores of size ~40: needs max subtraction", 6, l=9, b=1, n=2, scale=6.0)
    add("edge-long", "edge", "L = 70 (the float64 fsum oracle)", 7, l=70, b=1, n=4, p=2)
    return out


PATHS = argument_paths_probe(alternatives={"scale": (0.37,), "window_left": (1,), "window_right": (0,)},
                             sampler=lambda rng, conv: sample(rng, conv, l=9, b=1))

register_op(OpSpec(
    name=OP,
    summary="softmax attention over a fixed sparse pattern: sliding window (dilated), Longformer (global tokens), "
            "Sparse Transformer strided / fixed, BigBird (window + global + seeded random blocks)",
    inputs=(Arg("q", "b l h n"), Arg("k", "b l h n"), Arg("v", "b l h p")),
    outputs=(Arg("o", "b l h p", "a query row with no kept key is zero"),),
    conventions=(
        Convention("kind", "sliding_window", "the pattern: " + ", ".join(KINDS), KINDS),
        Convention("window_left", 3, "keys at most this many (dilated) steps to the left: j >= i - left dil "
                   "(FlashAttention's inclusive left; sliding_window, longformer)"),
        Convention("window_right", 3, "keys at most this many (dilated) steps to the right: j <= i + right dil "
                   "(forced to 0 under causal)"),
        Convention("dilation", 1, "Longformer's dilation: an int, or a tuple with one entry per head (h = its length)"),
        Convention("global_tokens", (0,), "Longformer's symmetric global positions (kind longformer; positions >= l "
                   "dropped for a case of length l)"),
        Convention("causal", False, "keep only j <= i (every kind but bigbird)", (False, True)),
        Convention("stride", 3, "the Sparse Transformer stride l_s (strided, fixed)"),
        Convention("summary", 1, "the fixed pattern's c: the last c positions of every stride block are summaries"),
        Convention("combine", "union", "'union': one head keeps A1 | A2 (the merged head); 'heads': head 0 A1, head "
                   "1 A2 (h = 2)", ("union", "heads")),
        Convention("block", 2, "BigBird's block size B"),
        Convention("window_blocks", 3, "BigBird's odd window in blocks (u - wb//2 .. u + wb//2, no wrap-around)"),
        Convention("global_blocks", 1, "BigBird's leading global blocks (symmetric)"),
        Convention("random_blocks", 1, "BigBird's random key blocks per query block"),
        Convention("seed", 0, "BigBird's seed of numpy.random.PCG64 (the raw stream's Fisher-Yates draws)"),
        Convention("bigbird_heads", "shared", "'shared': one BigBird pattern for every head; 'per_head': one random "
                   "draw per head (heads = h)", ("shared", "per_head")),
        Convention("scale", None, "multiplies q . k; None = n^-1/2"),
        Convention("window_spelling", "left_right", "how the candidate receives the window (one adapter each): "
                   + "; ".join(f"{s.name}: {s.doc}" for s in WINDOW_SPELLINGS.values()), SPELLINGS, layout=True),
    ),
    **op_functions(globals()),
    probes=(causality_probe({"q": "l", "k": "l", "v": "l"}, {"o": "l"},
                            applies=lambda c: bool(c["causal"]) and c["kind"] != "bigbird",
                            sampler=lambda rng, conv: sample(rng, conv, l=11)),
            PATHS),
    domain=op_domain(length=("l", "l"), query_dim=("n", "n", "the query/key dimension n"),
                     value_dim=("p", "p", "the value dimension p (value_dim=query_dim: the candidate needs p = n)")),
    module=__name__,
    notes="oracle: oracles.sparse_attention (the pattern's key sets from the papers' definitions; mpmath / float64 "
          "fsum); bound: softmax_attention_bound on their keep mask; diagnosis tries kind, causal, combine, "
          "bigbird_heads and every integer convention one off",
))


# ----------------------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------------------

def _scale_arg(c):
    return None if c["scale"] is None else float(c["scale"])


def _spelled(spelling):
    return Conv(lambda c: spelled_window(c, spelling), doc=f"the window in the {spelling} spelling")


_SW = {"kind": "sliding_window", "dilation": 1}
_CANDIDATE_CALL = "(q, k, v) in refimpl's (b l h n) layout"

register_adapter(Adapter(
    name="flash_attn.window_size", op=OP,
    doc=f"a FlashAttention-style sliding-window candidate fn{_CANDIDATE_CALL}, window_size=(left, right) inclusive, "
        "causal=, softmax_scale= (window_spelling 'left_right')",
    args=(In("q"), In("k"), In("v")),
    kwargs={"window_size": _spelled("left_right"), "causal": Conv(lambda c: bool(c["causal"])),
            "softmax_scale": Conv(_scale_arg)},
    implies={**_SW, "window_spelling": "left_right"},
))

register_adapter(Adapter(
    name="fla.window_size", op=OP,
    doc=f"an FLA-style causal sliding-window candidate fn{_CANDIDATE_CALL}, window_size=W meaning keys "
        "[i - W + 1, i], scale= (window_spelling 'fla'; causal)",
    args=(In("q"), In("k"), In("v")),
    kwargs={"window_size": _spelled("fla"), "scale": Conv(_scale_arg)},
    implies={**_SW, "window_spelling": "fla", "causal": True},
))

register_adapter(Adapter(
    name="xformers.window_size", op=OP,
    doc=f"an xformers-style local-attention candidate fn{_CANDIDATE_CALL}, window_size=W odd, counting the token "
        "itself (|i - j| <= W // 2), causal=, scale= (window_spelling 'xformers')",
    args=(In("q"), In("k"), In("v")),
    kwargs={"window_size": _spelled("xformers"), "causal": Conv(lambda c: bool(c["causal"])),
            "scale": Conv(_scale_arg)},
    implies={**_SW, "window_spelling": "xformers"},
))

register_adapter(Adapter(
    name="longformer.attention_window", op=OP,
    doc=f"a Longformer-style candidate fn{_CANDIDATE_CALL}, attention_window=w per side, attention_dilation= (an int "
        "or one per head), global_tokens= (a tuple of positions < l), causal=, scale= (window_spelling 'longformer', "
        "kind longformer)",
    args=(In("q"), In("k"), In("v")),
    kwargs={"attention_window": _spelled("longformer"), "attention_dilation": Conv(_dilation),
            "global_tokens": Conv(lambda c: tuple(int(g) for g in c["global_tokens"])),
            "causal": Conv(lambda c: bool(c["causal"])), "scale": Conv(_scale_arg)},
    implies={"kind": "longformer", "window_spelling": "longformer"},
))


class _GlobalMaskAdapter(Adapter):
    """Hugging Face's Longformer takes the global positions as ``global_attention_mask (b l)``, 1 = global."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        b, l = dims.get("b", 0), dims.get("l", 0)
        m = np.zeros((b, l), dtype=np.int64)
        for g in conv["global_tokens"]:
            if int(g) < l:
                m[:, int(g)] = 1
        kwargs["global_attention_mask"] = convert(m)
        return args, kwargs


register_adapter(_GlobalMaskAdapter(
    name="hf_longformer.attention_window", op=OP,
    doc=f"a Hugging Face Longformer-style candidate fn{_CANDIDATE_CALL}, attention_window=w even (w // 2 per side), "
        "global_attention_mask (b l) int with 1 at global positions, scale= (window_spelling 'hf_longformer', kind "
        "longformer, non-causal, no dilation)",
    args=(In("q"), In("k"), In("v")),
    kwargs={"attention_window": _spelled("hf_longformer"), "scale": Conv(_scale_arg)},
    implies={"kind": "longformer", "window_spelling": "hf_longformer", "causal": False, "dilation": 1},
))


class _RefimplSparseAdapter(Adapter):
    """refimpl takes the pattern as a :class:`SparsePattern` built from the conventions for the case's ``l``, ``h``."""

    def build_call(self, spec, inputs, conv, dims, convert=lambda a: a):
        args, kwargs = super().build_call(spec, inputs, conv, dims, convert)
        args = list(args) + [refimpl_pattern(conv, int(dims.get("l", 0)), int(dims.get("h", 1)))]
        return args, kwargs


register_adapter(_RefimplSparseAdapter(
    name="refimpl", op=OP,
    doc="refimpl.attention.sparse_attention(q, k, v, pattern, scale=) with the pattern built by refimpl's builder of "
        "the claimed kind (sliding_window_pattern, longformer_pattern, strided_pattern, fixed_pattern, "
        "bigbird_pattern); the views refimpl.attention.sparse.reference:materialized / block_sparse and the kernel "
        "refimpl.attention.sparse.numba:block_sparse_attention take the same arguments",
    args=(In("q"), In("k"), In("v")),
    kwargs={"scale": Conv(_scale_arg)},
    outputs=(Out("o", None),),
    implies={"window_spelling": "left_right"},
))
