"""oracles: independent ground truths for refimpl, and the conformance layer that checks refimpl against them.

Ground truth (these modules import nothing from ``refimpl``; they reach each answer by
their own route: closed forms, mpmath, dense materialization, scipy):

* ``oracles.tolerance`` -- the tolerance model: derived error bounds and comparison records.
* ``oracles.ssm`` -- the SSM core: Van Loan / ODE / ``cont2discrete`` discretizations, dense LTI operators.
* ``oracles.hippo`` -- HiPPO projections by Gauss quadrature.
* ``oracles.structured`` -- S4, S4D/DSS, S5, LRU and MEGA EMA: direct powers, mpmath, dense operators.
* ``oracles.selective`` -- Mamba's selective scan (S6) and Mamba-2's SSD: literal loops, mpmath, dense operators.
* ``oracles.attention`` -- softmax, linear attention, feature maps, the delta rule, fast weights.
* ``oracles.performer`` -- Performer random features: exact moments and derived statistical thresholds.

The conformance layer (imports both ``refimpl`` and the ground truth, and is the only part that does):

* ``oracles.checks`` -- the checks behind ``refimpl report``: each algorithm's views and backends
  against its oracle.
* ``oracles.strategies`` -- Hypothesis strategies of valid inputs per family (need the ``test`` extra).
* ``oracles.verify`` -- the verify harness: op specs, layout adapters, derived bounds, reports; it
  checks any function (ours or a third party's) against an op's oracle.
* ``oracles.cli`` -- the ``refimpl`` command line (``report``, ``verify``, ``ops``, ``vectors``);
  ``python -m oracles`` runs it.

Imports run one way: ``refimpl`` imports nothing from ``oracles``, the ground-truth modules import
nothing from ``refimpl``, and the conformance layer imports both (``tests/test_imports.py`` checks
this from the source).  ``refimpl`` is never the ground truth: the verify harness uses it only as
the same-dtype baseline of the low-precision rule.
"""
