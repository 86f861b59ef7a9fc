"""The verify harness: is a third-party kernel computing the math?

>>> from oracles.verify import verify, assert_conforms
>>> report = verify("ssm.discretize", my_fn, conventions={"method": "bilinear"}, dtype=["float64", "float32"])
>>> print(report.to_text())

* :mod:`~oracles.verify.registry` -- op specs (signature, canonical layout, conventions, oracle, bounds, cases).
* :mod:`~oracles.verify.adapters` -- declarative layout adapters (Mamba, Mamba-2, FLA, FlashAttention, scipy, ...).
* :mod:`~oracles.verify.harness` -- ``verify`` / ``assert_conforms``; dtypes and frameworks.
* :mod:`~oracles.verify.report` -- the report (text, JSON, JUnit XML) and ``.npz`` reproductions.
* :mod:`~oracles.verify.vectors` -- golden test vectors for ports (``refimpl vectors export/check``).
* ``ops_<family>.py`` -- the op specs of each family.

The harness never imports the ``refimpl`` code as ground truth: oracles come
from ``oracles/``; ``refimpl`` is used only for the low-precision baseline.

What a run guarantees (see :mod:`~oracles.verify.harness`): probes run in every requested dtype under
that dtype's bound; the report gives the dtype each output came back in and names an output in lower
precision than asked (JAX candidates run float64 with ``jax_enable_x64``); an optional output returned
as ``None`` fails its case; warnings are attached to the case that raised them; every call of the
candidate has a time limit (``timeout=``, 60 s) past which it is reported and abandoned; Hypothesis
writes under :func:`~oracles.verify.harness.cache_dir`, never ``.hypothesis/`` in the working directory.

Adding an op (a family's ``oracles/verify/ops_<family>.py``): ``register_op(OpSpec(name=..., inputs=(Arg(...),),
outputs=..., conventions=(Convention(...),), oracle=fn(inputs, conv) -> {output: float64 array},
bounds=fn(inputs, oracle_out, conv, dtype) -> {output: Bound}, cases=fn(conv) -> [Case], sample=fn(rng, conv),
strategy=..., reference=..., probes=(causality_probe(...),)))`` and ``register_adapter(Adapter(...))`` for the
interfaces people have; ``refimpl ops`` then lists it and ``refimpl verify``/``vectors`` accept it.  Conventions
with ``choices`` are tried by the diagnosis; ``use_<feature>`` conventions make every case exercise a feature
(or never); ``layout=True`` marks a convention that only changes how arrays are laid out for the candidate.
"""
from oracles.verify.adapters import Adapter, Const, Conv, Group, In, Out, adapters_for, get_adapter, register_adapter
from oracles.verify.harness import (DEFAULT_TIMEOUT, DTYPES, PROFILES, CandidateTimeout, assert_conforms, cache_dir,
                                    generate_cases, rerun_case, resolve_candidate, strategy_for, verify)
from oracles.verify.layout import rearrange
from oracles.verify.registry import Arg, Case, Convention, OpSpec, Probe, get_op, list_ops, register_op
from oracles.verify.report import CaseResult, Report, load_case

__all__ = [
    "verify", "assert_conforms", "generate_cases", "strategy_for", "rerun_case", "resolve_candidate", "load_case",
    "Report", "CaseResult", "OpSpec", "Arg", "Convention", "Case", "Probe", "get_op", "list_ops", "register_op",
    "Adapter", "In", "Conv", "Const", "Group", "Out", "register_adapter", "get_adapter", "adapters_for",
    "rearrange", "DTYPES", "PROFILES", "DEFAULT_TIMEOUT", "CandidateTimeout", "cache_dir",
]
