"""refimpl.ssm.s4 (see README.md in this folder)."""
