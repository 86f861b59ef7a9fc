r"""LRU with the Numba diagonal scan (:func:`refimpl.ssm.s5.numba.diag_scan`): the ``recurrent`` view of
:func:`refimpl.ssm.lru.lru_ssm` with backend ``numba`` (validation and parameterization are the reference's)."""
from __future__ import annotations

from refimpl.ssm.lru import reference
from refimpl.ssm.s5.numba import diag_scan

__all__ = ["recurrent"]


def recurrent(nu_log, theta_log, gamma_log, B, C, D, u, *, initial_state=None, return_final_state: bool = False):
    """:func:`refimpl.ssm.lru.reference.recurrent` with the states from the Numba ``diag_scan``."""
    return reference._lru(diag_scan, nu_log, theta_log, gamma_log, B, C, D, u, initial_state, return_final_state)
