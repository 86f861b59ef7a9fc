"""Candidates for ``refimpl verify --framework cupy`` on a device (used by ``bench/device_check.sh``; not a test).

:func:`lti_scan_cuda` -- op ``ssm.lti`` (canonical signature ``A_bar, B_bar, C, D, x, h0 -> (y, h_last)``, convention
``diagonal=True``): the CUDA parallel scan view ``refimpl.ssm.lti.lti_ssm(view="scan", backend="cuda")`` on the
arrays it is given -- CuPy arrays under ``--framework cupy`` stay on the device.
"""
from __future__ import annotations


def lti_scan_cuda(A_bar, B_bar, C, D=None, x=None, h0=None):
    from refimpl.ssm.lti import lti_ssm

    return lti_ssm(A_bar, B_bar, C, D, x, diagonal=True, view="scan", backend="cuda", initial_state=h0,
                   return_final_state=True)
