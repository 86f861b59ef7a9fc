"""oracles: independent ground truths for refimpl.

* ``oracles.tolerance`` -- the tolerance model (derived error bounds, comparison records).
* ``oracles.ssm`` -- Van Loan / ODE / cont2discrete / dense-operator oracles for the SSM core.
* ``oracles.checks`` -- the checks behind ``refimpl report``.
* ``oracles.strategies`` -- Hypothesis strategies (need the ``test`` extra).

No module here imports the ``refimpl`` code it checks to compute an answer.
"""
