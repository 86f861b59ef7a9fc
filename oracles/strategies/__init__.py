"""Hypothesis strategies for each family, exported for users' own test suites.

Importing a submodule needs ``hypothesis`` (the ``test`` extra).
"""
