"""Bad-input contracts of the S6 and SSD GPU twins (``refimpl/ssm/selective/cuda.py``, ``refimpl/ssm/ssd/cuda.py``),
run under the CUDA simulator (NumPy arrays): the kernels' own functions with their launch-size keywords.

The registered ``("chunked", "cuda")`` pairs of ``selective_scan`` / ``ssd_scan`` are covered by the core corpus
(``tests/test_bad_input_corpus.py`` enumerates every registered pair with ``_pairs``).  The argument specs mirror
the core corpus's selective/SSD contracts; the sizes are smaller (every valid call is a simulator launch).
"""
import math

from _bad_inputs import Arr, Contract, Flag, Int, Opt, Pair

_S6C = "refimpl.ssm.selective.cuda:selective_scan_cuda"
_SSDC = "refimpl.ssm.ssd.cuda:ssd_chunked_cuda"


def _seq_idx(rng, shape):
    import numpy as np

    idx = rng.integers(0, 2, shape)
    return np.sort(idx, axis=-1) if idx.ndim else idx


def contracts():
    s6_sizes = dict(b=1, l=3, d=2, n=2, g=2)
    common = dict(delta_bias=Arr("d", scale=0.1, optional=True), delta_softplus=Flag(False),
                  discretization=Opt("mamba", ("mamba", "zoh")), allow_unstable=Flag(False))
    real = dict(u=Arr("b l d"), delta=Arr("b l d", gen="unit"), A=Arr("d n", gen="neg", dtype="complex"),
                B=Arr("b l n", alt=("d n", "b l g n")), C=Arr("b l g n", alt=("d n", "b l n")),
                D=Arr("d", optional=True), z=Arr("b l d", optional=True), **common,
                initial_state=Arr("b d n", optional=True), return_final_state=Flag(True))
    cplx = dict(real, A=Arr("d n", dtype="complex", gen="cneg"),
                B=Arr("d n", dtype="complex", alt=("b l n", "b l g n")),
                C=Arr("b l n", dtype="complex", alt=("d n", "b l g n")),
                initial_state=Arr("b d n", dtype="complex", optional=True))
    s6_target = [(_S6C, dict(chunk=Int(2, minimum=1)))]
    ssd_sizes = dict(b=1, l=3, h=2, g=1, p=2, n=2)
    ssd = dict(x=Arr("b l h p"), dt=Arr("b l h", gen="unit"), A=Arr("h", gen="neg"), B=Arr("b l g n"),
               C=Arr("b l g n"), D=Arr("h", optional=True, alt=("h p",)), z=Arr("b l h p", optional=True),
               dt_bias=Arr("h", scale=0.1, optional=True), dt_softplus=Flag(False), dt_limit=Pair((0.0, math.inf)),
               allow_unstable=Flag(False), initial_state=Arr("b h p n", optional=True),
               seq_idx=Arr("b l", dtype="int", gen=_seq_idx, optional=True), return_final_state=Flag(True))
    ssd_target = [(_SSDC, dict(chunk=Int(2, minimum=1), state_threads=Int(4, minimum=1),
                               heads_per_block=Int(2, minimum=1, none_ok=True)))]
    return [
        Contract(s6_target, real, sizes=s6_sizes, positional=7, empty=("b", "l", "d", "n")),
        Contract(s6_target, cplx, sizes=s6_sizes, positional=7, empty=("b", "l", "d", "n")),
        Contract(ssd_target, ssd, sizes=ssd_sizes, positional=7, empty=("b", "l", "h", "p", "n")),
    ]
