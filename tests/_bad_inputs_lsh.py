"""Bad-input contracts of Reformer LSH attention (refimpl.attention.lsh): every public function and every
registered view/backend pair, through the buckets, the rotations and the seed paths."""
from __future__ import annotations

from typing import List

from _bad_inputs import Arr, Contract, Flag, Int, Opt, Real

_E = "refimpl.attention.lsh"
_R = "refimpl.attention.lsh.reference"
_N = "refimpl.attention.lsh.numba"


def _buckets(rng, shape):
    return rng.integers(0, 3, shape)


def _views(**extra):
    pairs = [("sorted", "numpy"), ("materialized", "numpy"), ("sorted", "numba")]
    return ([f"{_R}:sorted_chunks", f"{_R}:materialized", f"{_N}:lsh_attention_kernel"]
            + [(f"{_E}:lsh_attention", dict(view=Opt(vw), backend=Opt(be))) for vw, be in pairs])


def contracts() -> List[Contract]:
    sizes = dict(b=2, l=5, h=2, n=3, p=2, r=2, u=2)
    qkv = dict(qk=Arr("b l h n"), v=Arr("b l h p"))
    opts = dict(chunk=Int(2, minimum=1), causal=Flag(True), scale=Real(None, none_ok=True), wrap=Flag(True))
    E = ("b", "l", "h", "n", "p")
    return [
        Contract(_views(), dict(qkv, buckets=Arr("b l h r", dtype="int", gen=_buckets), **opts), sizes=sizes,
                 positional=2, empty=E),
        Contract([f"{_R}:sorted_chunks", (f"{_E}:lsh_attention", dict(view=Opt("sorted"), backend=Opt("numba")))],
                 dict(qkv, rotations=Arr("r n u"), **opts), sizes=sizes, positional=2, empty=E),
        Contract([f"{_R}:materialized", (f"{_E}:lsh_attention", dict(view=Opt("sorted"), backend=Opt("numpy")))],
                 dict(qkv, seed=Int(3, minimum=0), n_buckets=Int(4, minimum=2), n_rounds=Int(2, minimum=1), **opts),
                 sizes=sizes, positional=2, empty=E),
        Contract([f"{_R}:random_rotations", f"{_E}:random_rotations"],
                 dict(n=Int(3, minimum=0), n_buckets=Int(4, minimum=2), n_rounds=Int(2, minimum=1),
                      seed=Int(5, minimum=0)), positional=4),
        Contract([f"{_R}:hash_buckets", f"{_E}:hash_buckets"], dict(qk=Arr("b l h n"), rotations=Arr("r n u")),
                 sizes=sizes, positional=2, empty=("b", "l", "h", "n")),
        Contract([f"{_R}:normalize_keys", f"{_E}:normalize_keys"], dict(qk=Arr("b l h n")), sizes=sizes,
                 positional=1, empty=("b", "l", "h", "n")),
    ]
